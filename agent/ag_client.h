/* ag_client: the agent's end of the tunnel.
 *
 * Dials the hub over TLS, checks the certificate against the configured pin before anything of
 * the protocol is sent, runs the handshake (hello → challenge → auth → welcome), answers pings
 * and admin.echo, and reconnects forever with exponential backoff and full jitter.
 *
 *   DISCONNECTED --timer--> CONNECTING --established/hello--> AWAIT_CHALLENGE
 *   AWAIT_CHALLENGE --challenge/auth--> AWAIT_WELCOME --welcome--> READY
 *   any --close/error/silence--> DISCONNECTED (backoff)
 */
#ifndef AG_CLIENT_H
#define AG_CLIENT_H

#include "ag_config.h"
#include "bus_loop.h"
#include "identity.h"

typedef struct ag_client ag_client_t;

/* The lws protocols the client needs in its loop (protocols[0] checks the hub's pin). */
const struct lws_protocols *ag_client_protocols(void);

/* Creates the client and starts the first connection attempt. NULL on failure (logged). */
ag_client_t *ag_client_new(bus_loop_t *loop, const ag_config_t *cfg, const id_keypair_t *kp);
void ag_client_destroy(ag_client_t **c);

/* Graceful stop (SIGTERM/SIGINT): close the tunnel with 1000 and end the loop. */
void ag_client_shutdown(void *c, int signo);

#endif
