/* tun_handshake: hub-side handshake state machine. */
#include "tun_handshake.h"
#include "bus_log.h"
#include "bus_plat.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

const char *tun_close_name(int code)
{
    switch (code) {
    case TUN_CLOSE_GOING_AWAY: return "going_away";
    case TUN_CLOSE_TOO_BIG: return "message_too_big";
    case TUN_CLOSE_TRY_AGAIN: return "try_again";
    case TUN_CLOSE_PROTOCOL: return "protocol_error";
    case TUN_CLOSE_NOT_AUTHENTICATED: return "not_authenticated";
    case TUN_CLOSE_UNKNOWN_AGENT: return "unknown_agent";
    case TUN_CLOSE_AGENT_DISABLED: return "agent_disabled";
    case TUN_CLOSE_BAD_SIGNATURE: return "bad_signature";
    case TUN_CLOSE_NONCE_REPLAY: return "nonce_replay";
    case TUN_CLOSE_NONCE_EXPIRED: return "nonce_expired";
    case TUN_CLOSE_HEARTBEAT: return "heartbeat_timeout";
    case TUN_CLOSE_VERSION: return "unsupported_version";
    case TUN_CLOSE_HANDSHAKE_TIMEOUT: return "handshake_timeout";
    case TUN_CLOSE_REPLACED: return "replaced";
    case TUN_CLOSE_TOO_SLOW: return "too_slow";
    case TUN_CLOSE_TOO_MANY: return "too_many_agents";
    default: return "other";
    }
}

const char *tun_hs_state_name(tun_hs_state_t s)
{
    static const char *const names[] = {"await_hello", "challenged", "ready", "closed"};
    return (unsigned)s < 4 ? names[s] : "?";
}

void tun_hs_init(tun_hs_t *hs)
{
    memset(hs, 0, sizeof *hs);
    hs->state = TUN_HS_AWAIT_HELLO;
}

/* Copies a decoded string slice into a bounded C string; -EINVAL if it does not fit. */
static int s_copy(char *dst, size_t cap, bus_str_t s)
{
    if (s.len >= cap)
        return -EINVAL;
    if (s.len) /* an absent field is {NULL, 0}: memcpy must not see the NULL */
        memcpy(dst, s.p, s.len);
    dst[s.len] = '\0';
    return 0;
}

static tun_hs_result_t s_close(tun_hs_t *hs, int code, const char *reason)
{
    hs->state = TUN_HS_CLOSED;
    return (tun_hs_result_t){TUN_HS_CLOSE, code, reason};
}

/* AWAIT_HELLO + hello: check the version, issue a nonce. */
static tun_hs_result_t s_on_hello(tun_hs_t *hs, const tun_hs_ctx_t *ctx, const bus_env_t *env,
                                  uint64_t now_us)
{
    (void)ctx;
    const bus_hello_t *h = &env->u.hello;
    if (h->proto_version != BUS_PROTO_VERSION)
        return s_close(hs, TUN_CLOSE_VERSION, "unsupported protocol version");
    if (s_copy(hs->agent_version, sizeof hs->agent_version, h->agent_version) != 0)
        return s_close(hs, TUN_CLOSE_PROTOCOL, "agent_version too long");
    if (plat_random(hs->nonce, sizeof hs->nonce) != 0)
        return s_close(hs, TUN_CLOSE_TRY_AGAIN, "no randomness");
    hs->nonce_at_us = now_us;
    hs->proto_version = (uint32_t)h->proto_version;
    hs->state = TUN_HS_CHALLENGED;
    return (tun_hs_result_t){TUN_HS_SEND_CHALLENGE, 0, "challenge sent"};
}

/* CHALLENGED + auth: nonce, registry, signature, status — in that order. */
static tun_hs_result_t s_on_auth(tun_hs_t *hs, const tun_hs_ctx_t *ctx, const bus_env_t *env,
                                 uint64_t now_us)
{
    const bus_auth_t *a = &env->u.auth;
    char agent_id[ID_AGENT_ID_LEN + 1];
    if (a->nonce.len != ID_NONCE_LEN || a->signature.len != ID_SIG_LEN)
        return s_close(hs, TUN_CLOSE_PROTOCOL, "malformed auth");
    /* The nonce is consumed by this one attempt, whatever its outcome. */
    bool same = memcmp(a->nonce.p, hs->nonce, ID_NONCE_LEN) == 0;
    memset(hs->nonce, 0, sizeof hs->nonce);
    if (!same)
        return s_close(hs, TUN_CLOSE_NONCE_REPLAY, "nonce was not issued on this connection");
    if (now_us - hs->nonce_at_us > (uint64_t)ctx->nonce_ttl_us)
        return s_close(hs, TUN_CLOSE_NONCE_EXPIRED, "nonce expired");
    if (s_copy(agent_id, sizeof agent_id, a->agent_id) != 0 || !id_agent_id_valid(agent_id))
        return s_close(hs, TUN_CLOSE_UNKNOWN_AGENT, "malformed agent id");
    tun_hs_agent_t reg;
    int rc = ctx->lookup(ctx->lookup_arg, agent_id, &reg);
    if (rc == -EAGAIN)
        return s_close(hs, TUN_CLOSE_TRY_AGAIN, "agent registry not available yet");
    if (rc != 0)
        return s_close(hs, TUN_CLOSE_UNKNOWN_AGENT, "unknown agent");
    if (id_auth_verify(reg.pubkey, hs->proto_version, a->nonce.p, agent_id, ctx->pin,
                       a->signature.p) != 0)
        return s_close(hs, TUN_CLOSE_BAD_SIGNATURE, "bad signature");
    if (reg.disabled)
        return s_close(hs, TUN_CLOSE_AGENT_DISABLED, "agent disabled");
    memcpy(hs->agent_id, agent_id, sizeof agent_id);
    snprintf(hs->name, sizeof hs->name, "%s", reg.name);
    if (a->agent_version.len && a->agent_version.len < sizeof hs->agent_version)
        s_copy(hs->agent_version, sizeof hs->agent_version, a->agent_version);
    hs->state = TUN_HS_READY;
    return (tun_hs_result_t){TUN_HS_SEND_WELCOME, 0, "authenticated"};
}

typedef tun_hs_result_t (*s_action_fn)(tun_hs_t *, const tun_hs_ctx_t *, const bus_env_t *,
                                       uint64_t);

/* The state table: (state, message type) → action. Anything absent closes the connection. */
static const struct {
    tun_hs_state_t state;
    bus_type_t type;
    s_action_fn action;
} s_table[] = {
    {TUN_HS_AWAIT_HELLO, BUS_T_HELLO, s_on_hello},
    {TUN_HS_CHALLENGED, BUS_T_AUTH, s_on_auth},
};

tun_hs_result_t tun_hs_on_message(tun_hs_t *hs, const tun_hs_ctx_t *ctx, const bus_env_t *env,
                                  uint64_t now_us)
{
    tun_hs_state_t from = hs->state;
    tun_hs_result_t r;
    s_action_fn fn = NULL;
    for (size_t i = 0; i < sizeof s_table / sizeof s_table[0]; i++) {
        if (s_table[i].state == hs->state && s_table[i].type == env->type) {
            fn = s_table[i].action;
            break;
        }
    }
    if (fn)
        r = fn(hs, ctx, env, now_us);
    else if (hs->state == TUN_HS_CLOSED)
        r = (tun_hs_result_t){TUN_HS_NONE, 0, "already closed"};
    else
        r = s_close(hs, TUN_CLOSE_NOT_AUTHENTICATED, "message before the handshake completed");
    log_debug("tun_fsm", "%s --%s--> %s (%s)", tun_hs_state_name(from), bus_type_name(env->type),
              tun_hs_state_name(hs->state), r.reason);
    return r;
}
