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
#include "bus_env.h"
#include "bus_loop.h"
#include "identity.h"

typedef struct ag_client ag_client_t;

/* The lws protocols the client needs in its loop (protocols[0] checks the hub's pin). */
const struct lws_protocols *ag_client_protocols(void);

/* Creates the client and starts the first connection attempt. NULL on failure (logged). */
ag_client_t *ag_client_new(bus_loop_t *loop, const ag_config_t *cfg, const id_keypair_t *kp);
void ag_client_destroy(ag_client_t **c);

/* What the client hands to the rest of `agent run` (ag_super). */
typedef struct {
    /* A stream envelope from the hub (req.open, req.body, req.cancel, credit); raw is its
     * encoding, valid during the call. */
    void (*on_stream)(void *arg, const bus_env_t *env, const uint8_t *raw, size_t len);
    /* The authenticated tunnel went down (the hub ends every stream on its side). */
    void (*on_down)(void *arg);
    /* The tunnel is up and authenticated (welcome received): announce presence now. */
    void (*on_up)(void *arg, const char *agent_id);
    void *arg; /* their context */
} ag_client_hooks_t;

/* Sets the hooks (without them stream envelopes are answered with an error). */
void ag_client_set_hooks(ag_client_t *c, const ag_client_hooks_t *hooks);

/* Encodes and queues an envelope to the hub. 0, -ENOTCONN (tunnel not up), or an error. */
int ag_client_send(ag_client_t *c, const bus_env_t *env);
/* Queues an already encoded envelope to the hub. 0, -ENOTCONN, -ENOMEM. */
int ag_client_send_raw(ag_client_t *c, const uint8_t *raw, size_t len);

/* Graceful stop (SIGTERM/SIGINT): close the tunnel with 1000 and end the loop. */
void ag_client_shutdown(void *c, int signo);

#endif
