/* tun_handshake: the hub side of the tunnel handshake, as an explicit state table.
 *
 *   AWAIT_HELLO --hello(version ok)--> CHALLENGED   action: send challenge(nonce)
 *   CHALLENGED  --auth(valid)-------> READY        action: send welcome
 *   any state   --anything else-----> CLOSED       action: close with a distinct code
 *   READY       --ping/pong/...-----> READY        (handled by the server, not here)
 *
 * The nonce is 32 fresh random bytes per connection, valid for nonce_ttl and consumed by the
 * first auth: an auth carrying any other nonce (a replay from an earlier connection) is
 * refused as a replay, and a late one as expired. Checks run in this order so that only the
 * key holder learns that its agent is disabled: nonce, agent known, signature, disabled.
 * Pure logic (no sockets), so every branch is unit-tested.
 */
#ifndef TUN_HANDSHAKE_H
#define TUN_HANDSHAKE_H

#include <stdbool.h>
#include <stdint.h>

#include "bus_env.h"
#include "identity.h"

/* WebSocket close codes the hub uses; each refusal has its own so operators and agents can
 * tell them apart. Documented in the README. */
enum {
    TUN_CLOSE_GOING_AWAY = 1001,        /* hub shutting down */
    TUN_CLOSE_TOO_BIG = 1009,           /* message over the envelope limit */
    TUN_CLOSE_TRY_AGAIN = 4013,         /* agent registry not loaded yet: retry */
    TUN_CLOSE_PROTOCOL = 4000,          /* malformed envelope or unexpected message */
    TUN_CLOSE_NOT_AUTHENTICATED = 4001, /* a message other than the handshake before it */
    TUN_CLOSE_UNKNOWN_AGENT = 4002,     /* agent id not in the registry */
    TUN_CLOSE_AGENT_DISABLED = 4003,    /* registered but disabled */
    TUN_CLOSE_BAD_SIGNATURE = 4004,     /* signature does not verify with the registered key */
    TUN_CLOSE_NONCE_REPLAY = 4005,      /* nonce not the one issued on this connection */
    TUN_CLOSE_NONCE_EXPIRED = 4006,     /* auth arrived after the nonce expired */
    TUN_CLOSE_HEARTBEAT = 4007,         /* silent for longer than dead_after */
    TUN_CLOSE_VERSION = 4008,           /* unsupported protocol version */
    TUN_CLOSE_HANDSHAKE_TIMEOUT = 4009, /* no auth within handshake_timeout */
    TUN_CLOSE_REPLACED = 4010,          /* a newer authenticated connection for this agent */
    TUN_CLOSE_TOO_SLOW = 4011,          /* outgoing queue over its limit */
    TUN_CLOSE_TOO_MANY = 4012,          /* tunnel at max_agents */
};

/* Short machine name of a close code, used in logs and metric labels. */
const char *tun_close_name(int code);

typedef enum {
    TUN_HS_AWAIT_HELLO = 0,
    TUN_HS_CHALLENGED,
    TUN_HS_READY,
    TUN_HS_CLOSED,
} tun_hs_state_t;

typedef enum {
    TUN_HS_NONE = 0,       /* nothing to do */
    TUN_HS_SEND_CHALLENGE, /* encode and send a challenge with hs->nonce */
    TUN_HS_SEND_WELCOME,   /* authenticated: send welcome, register the connection */
    TUN_HS_CLOSE,          /* close with code/reason */
} tun_hs_action_t;

typedef struct {
    tun_hs_action_t action; /* what the caller must do */
    int close_code;         /* for TUN_HS_CLOSE */
    const char *reason;     /* short human text (static) */
} tun_hs_result_t;

/* What the registry knows of an agent. */
typedef struct {
    uint8_t pubkey[ID_PUBKEY_LEN]; /* registered Ed25519 key */
    bool disabled;                 /* status = disabled */
    char name[129];                /* operator-given name */
} tun_hs_agent_t;

/* Registry lookup: 0 found, -ENOENT unknown, -EAGAIN registry not available yet. */
typedef int (*tun_hs_lookup_fn)(void *arg, const char *agent_id, tun_hs_agent_t *out);

typedef struct {
    tun_hs_state_t state;           /* where the connection is */
    uint8_t nonce[ID_NONCE_LEN];    /* issued with the challenge */
    uint64_t nonce_at_us;           /* monotonic time it was issued */
    uint32_t proto_version;         /* agreed version */
    char agent_id[ID_AGENT_ID_LEN + 1]; /* set once authenticated */
    char agent_version[65];         /* from hello/auth: up to 64 bytes (envelopes.def) + NUL */
    char name[129];                 /* from the registry */
} tun_hs_t;

typedef struct {
    const char *pin;        /* pin of the hub's own certificate */
    int64_t nonce_ttl_us;   /* nonce lifetime */
    tun_hs_lookup_fn lookup; /* registry */
    void *lookup_arg;       /* its context */
} tun_hs_ctx_t;

void tun_hs_init(tun_hs_t *hs);

/* Feeds one decoded envelope received before READY. now_us is monotonic. */
tun_hs_result_t tun_hs_on_message(tun_hs_t *hs, const tun_hs_ctx_t *ctx, const bus_env_t *env,
                                  uint64_t now_us);

const char *tun_hs_state_name(tun_hs_state_t s);

#endif
