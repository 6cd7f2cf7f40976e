/* bus_loop: one single-threaded event loop per process.
 *
 * libwebsockets owns the poll loop (lws 4.1.6 as packaged has no external-poll hooks), and
 * everything else joins it: ZeroMQ sockets by adopting a dup() of their ZMQ_FD as a raw file
 * descriptor, timers as lws sorted-usec-list entries, and SIGTERM/SIGINT/SIGHUP through a
 * signalfd adopted the same way. ZMQ_FD is edge-triggered: after it fires, the socket is
 * drained while ZMQ_EVENTS reports POLLIN, up to a budget per turn; when the budget runs out a
 * zero-delay timer continues, because messages left queued never raise the fd again.
 * After sending on a socket call bus_zwatch_poke(): a send can consume the edge too.
 */
#ifndef BUS_LOOP_H
#define BUS_LOOP_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stdint.h>
#include <zmq.h>

typedef struct bus_loop bus_loop_t;
typedef struct bus_zwatch bus_zwatch_t;

/* Called when a watched ZeroMQ socket has a message: read exactly one whole message
 * (all parts) with ZMQ_DONTWAIT. */
typedef void (*bus_zmq_cb)(void *arg, void *zsock);

/* Called once on the first SIGTERM/SIGINT: stop accepting, finish or cancel in-flight work,
 * then call bus_loop_stop(). A second signal stops the loop at once. */
typedef void (*bus_stop_cb)(void *arg, int signo);

/* Creates the loop with its lws context (explicit vhosts, TLS initialised) and the zmq
 * context. protocols are the lws protocols of the process's vhosts, NULL-terminated; the loop
 * adds its own internal raw protocol. NULL on failure. */
bus_loop_t *bus_loop_new(const struct lws_protocols *protocols, void *user);
/* Destroys the lws context: every connection's close callback runs now, while the caller's
 * state and the zmq sockets still exist. Timers become no-ops afterwards. */
void bus_loop_close_lws(bus_loop_t *loop);
/* Destroys what is left (lws if still there, then the zmq context: close sockets first). */
void bus_loop_destroy(bus_loop_t **loop);

struct lws_context *bus_loop_lws(bus_loop_t *loop);
void *bus_loop_zctx(bus_loop_t *loop);
void *bus_loop_user(bus_loop_t *loop);
/* Sets the user pointer, for a service created after its loop. */
void bus_loop_set_user(bus_loop_t *loop, void *user);
/* The vhost for outgoing client connections (TLS-capable; its protocols are those given to
 * bus_loop_new, and protocols[0] receives lws's certificate-verification callback). */
struct lws_vhost *bus_loop_client_vhost(bus_loop_t *loop);

/* Creates a listening vhost. listen is "HOST:PORT"; cert/key NULL for plain; alpn the TLS
 * protocols offered ("h2,http/1.1"; NULL: "http/1.1"). protocols are those the vhost serves;
 * vh_user is returned by lws_vhost_user(). NULL on failure, logged. */
struct lws_vhost *bus_loop_listen(bus_loop_t *loop, const char *name, const char *listen,
                                  const struct lws_protocols *protocols, const char *cert,
                                  const char *key, const char *alpn, void *vh_user);

/* Runs until bus_loop_stop(). Returns 0. */
int bus_loop_run(bus_loop_t *loop);
void bus_loop_stop(bus_loop_t *loop);
bool bus_loop_stopping(bus_loop_t *loop);

/* Signal handling: on_stop is called once on the first SIGTERM/SIGINT. bus_loop_new blocks
 * SIGTERM/SIGINT/SIGHUP for every thread, so a process with a loop must call this. */
int bus_loop_handle_signals(bus_loop_t *loop, bus_stop_cb on_stop, void *arg);

/* Watches a zmq socket; cb runs for each queued message. NULL on failure. */
bus_zwatch_t *bus_zwatch_new(bus_loop_t *loop, void *zsock, bus_zmq_cb cb, void *arg);
/* Re-checks the socket soon (after a send, or when the caller could not consume). */
void bus_zwatch_poke(bus_zwatch_t *w);
/* Stops watching (the zmq socket itself stays the caller's). */
void bus_zwatch_destroy(bus_zwatch_t **w);

/* Receives one whole multipart message without blocking: its first max parts into parts
 * (initialised here; the caller closes the first n), any further parts read and dropped.
 * Returns n, 0 when nothing was waiting. */
int bus_zrecv_parts(void *zsock, zmq_msg_t *parts, int max);

/* Watches any readable file descriptor (an eventfd a worker thread signals, a pipe). cb runs
 * when fd is readable; it must consume what it wants. The fd stays the caller's: it is dup'd
 * for lws, which closes its copy. NULL on failure. */
typedef struct bus_fdwatch bus_fdwatch_t;
typedef void (*bus_fd_cb)(void *arg, int fd);
bus_fdwatch_t *bus_fdwatch_new(bus_loop_t *loop, int fd, bus_fd_cb cb, void *arg);
void bus_fdwatch_destroy(bus_fdwatch_t **w);

/* Timers: a bus_timer_t lives inside the caller's struct. */
typedef struct bus_timer bus_timer_t;
typedef void (*bus_timer_cb)(bus_timer_t *t);
struct bus_timer {
    lws_sorted_usec_list_t sul; /* must be first: lws hands us back this pointer */
    bus_timer_cb cb;            /* what to run */
    void *arg;                  /* the caller's context */
};
/* Arms t to run cb after delay_us (re-arming replaces the previous deadline). */
void bus_timer_start(bus_loop_t *loop, bus_timer_t *t, bus_timer_cb cb, void *arg,
                     int64_t delay_us);
void bus_timer_cancel(bus_loop_t *loop, bus_timer_t *t);

#endif
