/* ag_fd: a file descriptor watched for readability inside the bus_loop (lws poll loop).
 *
 * The descriptor is adopted by libwebsockets as a raw file (LWS_ADOPT_RAW_FILE_DESC), the same
 * way bus_loop adopts ZMQ_FD, and lws owns it from then on: it is closed when the watch ends.
 * The callback runs on every loop turn in which the descriptor polls readable (level-triggered),
 * so a callback that leaves work behind is simply called again.
 *
 * The loop's vhost must offer the protocol from ag_fd_protocol(): pass it among the protocols
 * given to bus_loop_new (after any protocol that must stay protocols[0]).
 */
#ifndef AG_FD_H
#define AG_FD_H

#include "bus_loop.h"

typedef struct ag_fd ag_fd_t;

/* Runs when the descriptor is readable. */
typedef void (*ag_fd_cb)(void *arg, int fd);

/* The lws protocol entry that hosts watched descriptors. */
struct lws_protocols ag_fd_protocol(void);

/* Watches fd (taking ownership: it is closed with the watch, or at once on failure).
 * NULL on failure. */
ag_fd_t *ag_fd_new(bus_loop_t *loop, int fd, ag_fd_cb cb, void *arg);
/* Stops watching; lws closes the descriptor at the end of this loop turn. Accepts NULL. */
void ag_fd_destroy(ag_fd_t **w);

#endif
