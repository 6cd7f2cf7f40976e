/* bus_loop: libwebsockets + ZeroMQ + timers + signals in one thread. */
#include "bus_loop.h"
#include "bus_log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <zmq.h>

#include "bus_config.h"

#define ZMQ_DRAIN_BUDGET 64 /* messages handled per wake-up before yielding to other work */

struct bus_zwatch {
    bus_loop_t *loop;     /* owner */
    void *zsock;          /* the watched socket (not owned) */
    struct lws *wsi;      /* the adopted dup of ZMQ_FD */
    bus_zmq_cb cb;        /* per-message handler */
    void *arg;            /* handler context */
    bus_timer_t again;    /* zero-delay continuation when the budget ran out or after a send */
    bool closing;         /* destroy requested; the wsi close will free us */
};

struct bus_loop {
    struct lws_context *ctx;          /* the lws context */
    struct lws_vhost *internal;       /* vhost hosting adopted raw fds */
    struct lws_protocols *protocols;  /* caller's protocols + ours, NULL-terminated */
    void *zctx;                       /* ZeroMQ context */
    void *user;                       /* the service */
    bool stop;                        /* leave bus_loop_run */
    bool stop_requested;              /* first signal seen */
    bus_stop_cb on_stop;              /* graceful-stop hook */
    void *on_stop_arg;                /* its context */
    struct lws *sig_wsi;              /* adopted signalfd */
};

enum { S_RAW_ZMQ = 1, S_RAW_SIGNAL = 2, S_RAW_FD = 3 };

struct bus_fdwatch {
    int fd;          /* the caller's descriptor (lws watches a dup) */
    struct lws *wsi; /* the adopted dup, NULL once lws closed it */
    bus_fd_cb cb;    /* readable handler */
    void *arg;       /* its context */
    bool closing;    /* destroy requested */
};

typedef struct {
    int kind;  /* S_RAW_ZMQ or S_RAW_SIGNAL */
    void *obj; /* bus_zwatch_t or bus_loop_t */
} s_raw_tag_t;

static void s_zwatch_drain(bus_zwatch_t *w);

/* Continuation timer: drains what the last wake-up left behind. */
static void s_zwatch_again(bus_timer_t *t)
{
    bus_zwatch_t *w = t->arg;
    if (!w->closing)
        s_zwatch_drain(w);
}

/* Drains the socket while ZMQ_EVENTS says POLLIN, up to the budget. */
static void s_zwatch_drain(bus_zwatch_t *w)
{
    for (int i = 0; i < ZMQ_DRAIN_BUDGET; i++) {
        int events = 0;
        size_t sz = sizeof events;
        if (zmq_getsockopt(w->zsock, ZMQ_EVENTS, &events, &sz) != 0)
            return;
        if (!(events & ZMQ_POLLIN))
            return;
        w->cb(w->arg, w->zsock);
        if (w->closing || w->loop->stop)
            return;
    }
    /* Budget spent with messages possibly left: they will not raise the fd again. */
    bus_timer_start(w->loop, &w->again, s_zwatch_again, w, 0);
}

/* Reads pending signals from the signalfd and acts on them. */
static void s_signal_read(bus_loop_t *loop, int fd)
{
    struct signalfd_siginfo si;
    while (read(fd, &si, sizeof si) == (ssize_t)sizeof si) {
        int signo = (int)si.ssi_signo;
        if (signo == SIGHUP) {
            log_info("signal", "SIGHUP ignored");
            continue;
        }
        if (loop->stop_requested || !loop->on_stop) {
            log_info("shutdown", "signal %d: stopping now", signo);
            bus_loop_stop(loop);
            continue;
        }
        loop->stop_requested = true;
        log_info("shutdown", "signal %d: finishing in-flight work", signo);
        loop->on_stop(loop->on_stop_arg, signo);
    }
}

/* The loop's own lws protocol: adopted raw descriptors (ZMQ_FD dups, the signalfd). */
static int s_raw_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                          size_t len)
{
    s_raw_tag_t *tag = lws_get_opaque_user_data(wsi);
    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        if (!tag)
            return 0;
        if (tag->kind == S_RAW_ZMQ) {
            bus_zwatch_t *w = tag->obj;
            if (!w->closing)
                s_zwatch_drain(w);
        } else if (tag->kind == S_RAW_FD) {
            bus_fdwatch_t *w = tag->obj;
            if (!w->closing)
                w->cb(w->arg, w->fd);
        } else {
            s_signal_read(tag->obj, lws_get_socket_fd(wsi));
        }
        return 0;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        if (tag) {
            if (tag->kind == S_RAW_ZMQ) {
                /* Whoever comes second frees: the owner's destroy or this close. */
                bus_zwatch_t *w = tag->obj;
                bus_timer_cancel(w->loop, &w->again);
                w->wsi = NULL;
                if (w->closing)
                    free(w);
            } else if (tag->kind == S_RAW_FD) {
                bus_fdwatch_t *w = tag->obj;
                w->wsi = NULL;
                if (w->closing)
                    free(w);
            } else {
                ((bus_loop_t *)tag->obj)->sig_wsi = NULL;
            }
            free(tag);
            lws_set_opaque_user_data(wsi, NULL);
        }
        return 0;
    default:
        return 0;
    }
}

/* Emits an lws log line as one of ours. */
static void s_lws_log(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    log_debug("lws", "%s%.*s", level == LLL_ERR ? "E: " : "W: ", (int)n, line);
}

/* The signals the loop turns into events. */
static void s_stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
}

bus_loop_t *bus_loop_new(const struct lws_protocols *protocols, void *user)
{
    /* Block the stop signals before any thread exists (zmq's I/O threads, service workers):
     * threads inherit the mask, so only the signalfd ever sees them. */
    sigset_t set;
    s_stop_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    bus_loop_t *loop = calloc(1, sizeof *loop);
    if (!loop)
        return NULL;
    loop->user = user;
    size_t n = 0;
    while (protocols && protocols[n].name)
        n++;
    loop->protocols = calloc(n + 2, sizeof *loop->protocols);
    if (!loop->protocols)
        goto fail;
    if (n)
        memcpy(loop->protocols, protocols, n * sizeof *protocols);
    loop->protocols[n].name = "bus-raw";
    loop->protocols[n].callback = s_raw_callback;

    /* lws's own lines join ours as JSON at debug level: every failure that matters is also
     * logged by our code, with context lws does not have. */
    lws_set_log_level(LLL_ERR | LLL_WARN, s_lws_log);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.user = loop;
    info.pt_serv_buf_size = 64 * 1024;
    info.fd_limit_per_thread = 0;
    loop->ctx = lws_create_context(&info);
    if (!loop->ctx)
        goto fail;

    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = loop->protocols;
    info.vhost_name = "bus-internal";
    /* Also the vhost of outgoing client connections (the agent's tunnel): give it a TLS
     * client context. Trust is decided by the caller's pin check, not by a CA bundle. */
    info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    loop->internal = lws_create_vhost(loop->ctx, &info);
    if (!loop->internal)
        goto fail;

    loop->zctx = zmq_ctx_new();
    if (!loop->zctx)
        goto fail;
    return loop;
fail:
    bus_loop_destroy(&loop);
    return NULL;
}

void bus_loop_close_lws(bus_loop_t *loop)
{
    if (loop && loop->ctx) {
        lws_context_destroy(loop->ctx);
        loop->ctx = NULL;
    }
}

void bus_loop_destroy(bus_loop_t **p)
{
    if (!p || !*p)
        return;
    bus_loop_t *loop = *p;
    /* Tear down lws before zmq: lws closes the adopted dups of the zmq fds. */
    bus_loop_close_lws(loop);
    if (loop->zctx)
        zmq_ctx_term(loop->zctx);
    free(loop->protocols);
    free(loop);
    *p = NULL;
}

struct lws_context *bus_loop_lws(bus_loop_t *loop)
{
    return loop->ctx;
}

void *bus_loop_zctx(bus_loop_t *loop)
{
    return loop->zctx;
}

struct lws_vhost *bus_loop_client_vhost(bus_loop_t *loop)
{
    return loop->internal;
}

void bus_loop_set_user(bus_loop_t *loop, void *user)
{
    loop->user = user;
}

void *bus_loop_user(bus_loop_t *loop)
{
    return loop->user;
}

struct lws_vhost *bus_loop_listen(bus_loop_t *loop, const char *name, const char *listen,
                                  const struct lws_protocols *protocols, const char *cert,
                                  const char *key, const char *alpn, void *vh_user)
{
    char host[256];
    int port;
    if (cfg_split_listen(listen, host, sizeof host, &port) != 0) {
        log_err("listen_failed", "%s: bad listen address \"%s\"", name, listen);
        return NULL;
    }
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.vhost_name = name;
    info.port = port;
    info.iface = host;
    info.protocols = protocols;
    info.user = vh_user;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    if (strchr(host, ':'))
        info.options = LWS_SERVER_OPTION_IPV6_V6ONLY_MODIFY | LWS_SERVER_OPTION_IPV6_V6ONLY_VALUE;
    info.keepalive_timeout = 30;
    info.timeout_secs = 30;
    if (cert && key) {
        info.ssl_cert_filepath = cert;
        info.ssl_private_key_filepath = key;
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.alpn = alpn ? alpn : "http/1.1";
    }
    struct lws_vhost *vh = lws_create_vhost(loop->ctx, &info);
    if (!vh)
        log_err("listen_failed", "%s: cannot listen on %s (address in use or not local?)",
                name, listen);
    else
        log_info("listening", "%s on %s%s", name, listen, cert ? " (TLS)" : "");
    return vh;
}

int bus_loop_run(bus_loop_t *loop)
{
    while (!loop->stop) {
        if (lws_service(loop->ctx, 0) < 0)
            break;
    }
    return 0;
}

void bus_loop_stop(bus_loop_t *loop)
{
    loop->stop = true;
    lws_cancel_service(loop->ctx);
}

bool bus_loop_stopping(bus_loop_t *loop)
{
    return loop->stop || loop->stop_requested;
}

/* Adopts fd as a raw file descriptor on the internal vhost with the given tag. */
static struct lws *s_adopt(bus_loop_t *loop, int fd, int kind, void *obj)
{
    s_raw_tag_t *tag = calloc(1, sizeof *tag);
    if (!tag)
        return NULL;
    tag->kind = kind;
    tag->obj = obj;
    lws_sock_file_fd_type u;
    memset(&u, 0, sizeof u);
    u.filefd = (lws_filefd_type)fd;
    struct lws *wsi = lws_adopt_descriptor_vhost(loop->internal, LWS_ADOPT_RAW_FILE_DESC, u,
                                                 "bus-raw", NULL);
    if (!wsi) {
        free(tag);
        return NULL;
    }
    lws_set_opaque_user_data(wsi, tag);
    return wsi;
}

int bus_loop_handle_signals(bus_loop_t *loop, bus_stop_cb on_stop, void *arg)
{
    sigset_t set;
    s_stop_signals(&set);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        return -EINVAL;
    signal(SIGPIPE, SIG_IGN);
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    loop->on_stop = on_stop;
    loop->on_stop_arg = arg;
    loop->sig_wsi = s_adopt(loop, fd, S_RAW_SIGNAL, loop);
    if (!loop->sig_wsi) {
        close(fd);
        return -ENOMEM;
    }
    return 0;
}

bus_zwatch_t *bus_zwatch_new(bus_loop_t *loop, void *zsock, bus_zmq_cb cb, void *arg)
{
    int zfd;
    size_t sz = sizeof zfd;
    if (zmq_getsockopt(zsock, ZMQ_FD, &zfd, &sz) != 0)
        return NULL;
    /* lws closes what it adopted; zmq must keep its own fd, hence the dup. */
    int fd = fcntl(zfd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    bus_zwatch_t *w = calloc(1, sizeof *w);
    if (!w) {
        close(fd);
        return NULL;
    }
    w->loop = loop;
    w->zsock = zsock;
    w->cb = cb;
    w->arg = arg;
    w->wsi = s_adopt(loop, fd, S_RAW_ZMQ, w);
    if (!w->wsi) {
        close(fd);
        free(w);
        return NULL;
    }
    /* Messages may already be queued: their edge has passed. */
    bus_timer_start(loop, &w->again, s_zwatch_again, w, 0);
    return w;
}

bus_fdwatch_t *bus_fdwatch_new(bus_loop_t *loop, int fd, bus_fd_cb cb, void *arg)
{
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0)
        return NULL;
    bus_fdwatch_t *w = calloc(1, sizeof *w);
    if (!w) {
        close(dup_fd);
        return NULL;
    }
    w->fd = fd;
    w->cb = cb;
    w->arg = arg;
    w->wsi = s_adopt(loop, dup_fd, S_RAW_FD, w);
    if (!w->wsi) {
        close(dup_fd);
        free(w);
        return NULL;
    }
    return w;
}

void bus_fdwatch_destroy(bus_fdwatch_t **p)
{
    if (!p || !*p)
        return;
    bus_fdwatch_t *w = *p;
    *p = NULL;
    w->closing = true;
    if (!w->wsi) {
        free(w);
        return;
    }
    lws_set_timeout(w->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
}

int bus_zrecv_parts(void *zsock, zmq_msg_t *parts, int max)
{
    int n = 0;
    for (;;) {
        zmq_msg_t extra;
        zmq_msg_t *m = n < max ? &parts[n] : &extra;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, zsock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(m);
            break;
        }
        bool more = zmq_msg_more(m);
        if (n < max)
            n++;
        else
            zmq_msg_close(m);
        if (!more)
            break;
    }
    return n;
}

void bus_zwatch_poke(bus_zwatch_t *w)
{
    if (!w || w->closing)
        return;
    /* Reading ZMQ_EVENTS processes the socket's pending commands and re-arms ZMQ_FD; only if
     * messages are already waiting (their edge may be gone) is another turn needed. This
     * spares a loop turn and a poll() after every send. */
    int events = 0;
    size_t sz = sizeof events;
    if (zmq_getsockopt(w->zsock, ZMQ_EVENTS, &events, &sz) != 0 || (events & ZMQ_POLLIN))
        bus_timer_start(w->loop, &w->again, s_zwatch_again, w, 0);
}

void bus_zwatch_destroy(bus_zwatch_t **p)
{
    if (!p || !*p)
        return;
    bus_zwatch_t *w = *p;
    *p = NULL;
    w->closing = true;
    bus_timer_cancel(w->loop, &w->again);
    if (!w->wsi) {
        free(w); /* lws already closed the descriptor */
        return;
    }
    /* The wsi close callback frees w at the end of this loop turn. */
    lws_set_timeout(w->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
}

/* Trampoline from lws's sorted-usec-list callback to ours. */
static void s_timer_fire(lws_sorted_usec_list_t *sul)
{
    bus_timer_t *t = (bus_timer_t *)sul;
    t->cb(t);
}

void bus_timer_start(bus_loop_t *loop, bus_timer_t *t, bus_timer_cb cb, void *arg,
                     int64_t delay_us)
{
    if (!loop->ctx)
        return;
    t->cb = cb;
    t->arg = arg;
    lws_sul_schedule(loop->ctx, 0, &t->sul, s_timer_fire, delay_us);
}

void bus_timer_cancel(bus_loop_t *loop, bus_timer_t *t)
{
    /* After the lws context is gone its timer lists are too: nothing left to cancel. */
    if (loop->ctx)
        lws_sul_cancel(&t->sul);
}
