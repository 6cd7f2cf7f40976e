/* tun_server: hub-tunnel's connections, admin API, bus sockets and heartbeats. */
#include "tun_server.h"
#include "tun_internal.h"
#include "tun_relay.h"
#include "bus_env.h"
#include "bus_http.h"
#include "bus_log.h"
#include "bus_metrics.h"
#include "bus_plat.h"
#include "bus_tap.h"
#include "bus_wsconn.h"
#include "identity.h"
#include "tlscert.h"
#include "tun_handshake.h"
#include "strmap.h"
#include "tun_registry.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define S_ADMIN_BODY_MAX (64 * 1024)
#define S_SWEEP_US 250000 /* heartbeat sweep period */
#define S_TUNNEL_PATH "/tunnel/connect"

typedef struct s_pending s_pending_t;

typedef struct {
    bus_http_t http;      /* must be first */
    s_pending_t *pending; /* echo awaiting the agent's reply */
} s_admin_pss_t;

/* An admin.echo waiting for its reply: from the admin API or from a bus client. */
struct s_pending {
    tun_server_t *srv;                     /* owner */
    uint8_t req_id[16];                    /* the exchange */
    char req_hex[33];                      /* map key */
    char agent_id[ID_AGENT_ID_LEN + 1];    /* who must answer */
    struct lws *http_wsi;                  /* admin request, or NULL */
    s_admin_pss_t *http_pss;               /* its session */
    uint8_t ident[256];                    /* ROUTER identity of a bus requester */
    size_t ident_len;                      /* 0 when from HTTP */
    uint64_t started_us;                   /* monotonic */
    bus_timer_t timer;                     /* admin_timeout */
};

static const int s_hs_codes[] = {
    TUN_CLOSE_PROTOCOL,        TUN_CLOSE_NOT_AUTHENTICATED, TUN_CLOSE_UNKNOWN_AGENT,
    TUN_CLOSE_AGENT_DISABLED,  TUN_CLOSE_BAD_SIGNATURE,     TUN_CLOSE_NONCE_REPLAY,
    TUN_CLOSE_NONCE_EXPIRED,   TUN_CLOSE_VERSION,           TUN_CLOSE_HANDSHAKE_TIMEOUT,
    TUN_CLOSE_TRY_AGAIN,       TUN_CLOSE_TOO_MANY,          TUN_CLOSE_TOO_BIG,
};
#define S_N_HS_CODES (sizeof s_hs_codes / sizeof s_hs_codes[0])

static void s_pending_finish(s_pending_t *p, int status, const char *text, size_t text_len,
                             const char *error);

/* ---- helpers ---------------------------------------------------------------------------- */

/* Formats a wall-clock time in microseconds as RFC 3339 UTC with milliseconds. */
static void s_iso_time(uint64_t us, char out[64])
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)((us / 1000) % 1000));
}

static void s_count_hs_failure(tun_server_t *srv, int code)
{
    for (size_t i = 0; i < S_N_HS_CODES; i++) {
        if (s_hs_codes[i] == code) {
            bus_metric_inc(srv->m.hs_fail[i]);
            return;
        }
    }
}

/* Encodes env into the scratch buffer. 0 or a negative errno (logged). */
int tun_encode(tun_server_t *srv, const bus_env_t *env)
{
    bus_buf_reset(&srv->enc);
    int rc = bus_env_encode(env, &srv->enc);
    if (rc != 0) {
        bus_metric_inc(srv->m.errors);
        log_err("encode_failed", "cannot encode %s: %s", bus_type_name(env->type),
                strerror(-rc));
    }
    return rc;
}

/* Asks lws to close the connection with code/reason on its next writable callback. */
void tun_conn_close(tun_conn_t *c, int code, const char *reason)
{
    if (c->close_code)
        return;
    c->close_code = code;
    snprintf(c->close_reason, sizeof c->close_reason, "%s", reason);
    lws_callback_on_writable(c->wsi);
    /* A peer that stopped reading never makes us writable: give the close 5 s, then drop. */
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, 5);
}

/* Queues encoded bytes to an agent connection, enforcing the send-queue limit. */
int tun_conn_send_raw(tun_conn_t *c, const uint8_t *buf, size_t len)
{
    tun_server_t *srv = c->srv;
    if (c->close_code)
        return -EPIPE;
    if (c->ws.queued + len > (size_t)srv->cfg->tunnel_send_queue_bytes) {
        log_agent(LOG_LVL_WARN, "agent_too_slow", c->hs.agent_id[0] ? c->hs.agent_id : NULL,
                  "send queue over %lld bytes: dropping the connection",
                  (long long)srv->cfg->tunnel_send_queue_bytes);
        tun_conn_close(c, TUN_CLOSE_TOO_SLOW, "send queue full");
        return -EAGAIN;
    }
    const uint8_t *queued = bus_wsconn_queue(&c->ws, buf, len);
    if (!queued)
        return -ENOMEM;
    char peer[96];
    snprintf(peer, sizeof peer, "agent:%s", c->hs.agent_id[0] ? c->hs.agent_id : c->peer);
    bus_tap_mirror(srv->tap, "out", peer, queued, len);
    lws_callback_on_writable(c->wsi);
    return 0;
}

/* Encodes and queues an envelope to an agent connection. */
int tun_conn_send(tun_conn_t *c, const bus_env_t *env)
{
    if (c->close_code)
        return -EPIPE;
    int rc = tun_encode(c->srv, env);
    if (rc != 0)
        return rc;
    return tun_conn_send_raw(c, c->srv->enc.data, c->srv->enc.len);
}

/* Publishes a presence event for an agent on the PUB socket. */
static void s_publish_presence(tun_server_t *srv, tun_conn_t *c, const char *state,
                               const char *reason)
{
    bus_env_t env;
    bus_env_init(&env, BUS_T_PRESENCE, NULL);
    bus_presence_t *p = &env.u.presence;
    p->agent_id = (bus_str_t){c->hs.agent_id, strlen(c->hs.agent_id)};
    p->state = (bus_str_t){state, strlen(state)};
    p->name = (bus_str_t){c->hs.name, strlen(c->hs.name)};
    p->tunnel = (bus_str_t){srv->cfg->tunnel_name, strlen(srv->cfg->tunnel_name)};
    p->reason = (bus_str_t){reason, strlen(reason)};
    p->models = (bus_list_t){c->models, c->models_len, c->models_count};
    p->model_formats = (bus_list_t){c->formats, c->formats_len, c->formats_count};
    p->capacity = c->capacity;
    p->in_flight = c->nstreams;
    if (tun_encode(srv, &env) != 0)
        return;
    if (zmq_send(srv->pub, srv->enc.data, srv->enc.len, ZMQ_DONTWAIT) < 0)
        bus_metric_inc(srv->m.errors);
    bus_metric_inc(srv->m.msgs_out);
    bus_tap_mirror(srv->tap, "out", "presence", srv->enc.data, srv->enc.len);
    if (strcmp(reason, "refresh") != 0)
        log_agent(LOG_LVL_INFO, "presence", c->hs.agent_id, "agent %s (%s)", state, reason);
}

/* Removes an authenticated connection from the map and announces it gone. */
static void s_conn_unregister(tun_conn_t *c, const char *reason)
{
    tun_server_t *srv = c->srv;
    tun_relay_agent_gone(c, reason);
    if (!c->registered)
        return;
    c->registered = false;
    if (strmap_get(srv->agents, c->hs.agent_id) == c)
        strmap_del(srv->agents, c->hs.agent_id);
    bus_metric_set(srv->m.connected, (int64_t)strmap_count(srv->agents));
    s_publish_presence(srv, c, "down", reason);
}

/* Answers every pending echo addressed to agent_id with status. */
typedef struct {
    const char *agent_id;
    s_pending_t **list;
    size_t n, cap;
} s_collect_t;

static void s_collect_pending(void *arg, const char *key, void *value)
{
    (void)key;
    s_collect_t *col = arg;
    s_pending_t *p = value;
    if (col->agent_id && strcmp(p->agent_id, col->agent_id) != 0)
        return;
    if (col->n == col->cap) {
        size_t ncap = col->cap ? col->cap * 2 : 16;
        s_pending_t **nl = realloc(col->list, ncap * sizeof *nl);
        if (!nl)
            return;
        col->list = nl;
        col->cap = ncap;
    }
    col->list[col->n++] = p;
}

static void s_fail_pending(tun_server_t *srv, const char *agent_id, int status, const char *why)
{
    s_collect_t col = {agent_id, NULL, 0, 0};
    strmap_each(srv->pending, s_collect_pending, &col);
    for (size_t i = 0; i < col.n; i++)
        s_pending_finish(col.list[i], status, NULL, 0, why);
    free(col.list);
}

/* ---- the pending echo --------------------------------------------------------------------- */

static void s_pending_timeout(bus_timer_t *t)
{
    s_pending_t *p = t->arg;
    bus_metric_inc(p->srv->m.admin_timeouts);
    log_req(LOG_LVL_WARN, "admin_timeout", p->req_hex, p->agent_id, "no reply within %lld ms",
            (long long)p->srv->cfg->tunnel_admin_timeout_ms);
    s_pending_finish(p, 504, NULL, 0, "the agent did not reply in time");
}

/* Sends encoded bytes to a bus peer by identity, without blocking. */
int tun_bus_send_raw(tun_server_t *srv, const uint8_t *ident, size_t ident_len,
                     const uint8_t *buf, size_t len)
{
    int rc = 0;
    if (zmq_send(srv->router, ident, ident_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(srv->router, buf, len, ZMQ_DONTWAIT) < 0) {
        rc = -errno;
        bus_metric_inc(srv->m.errors);
        log_debug("bus_send_failed", "cannot send on the bus: %s", zmq_strerror(errno));
    } else {
        bus_metric_inc(srv->m.msgs_out);
        bus_tap_mirror(srv->tap, "out", "bus", buf, len);
    }
    bus_zwatch_poke(srv->router_watch);
    return rc;
}

/* Encodes and sends an envelope to a bus peer by identity. */
int tun_bus_send(tun_server_t *srv, const uint8_t *ident, size_t ident_len, const bus_env_t *env)
{
    int rc = tun_encode(srv, env);
    if (rc != 0)
        return rc;
    rc = tun_bus_send_raw(srv, ident, ident_len, srv->enc.data, srv->enc.len);
    if (rc != 0)
        log_warn("bus_reply_failed", "cannot reply on the bus: %s", zmq_strerror(-rc));
    return rc;
}

/* Completes a pending echo: status 200 with the agent's text, or an error. Frees p. */
static void s_pending_finish(s_pending_t *p, int status, const char *text, size_t text_len,
                             const char *error)
{
    tun_server_t *srv = p->srv;
    bus_timer_cancel(srv->loop, &p->timer);
    strmap_del(srv->pending, p->req_hex);
    uint64_t rtt_us = plat_mono_us() - p->started_us;
    if (p->http_wsi && p->http_pss) {
        s_admin_pss_t *pss = p->http_pss;
        pss->pending = NULL;
        if (status == 200) {
            json_t *o = json_pack("{s:s, s:s, s:s%, s:f}", "agent_id", p->agent_id, "req_id",
                                  p->req_hex, "text", text ? text : "", text_len, "rtt_ms",
                                  (double)rtt_us / 1000.0);
            char *body = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
            if (body)
                bus_http_respond(&pss->http, p->http_wsi, 200, "application/json", body,
                                 strlen(body));
            else
                bus_http_error(&pss->http, p->http_wsi, 500, "server_error", "reply not JSON");
            free(body);
            json_decref(o);
        } else {
            bus_http_error(&pss->http, p->http_wsi, status,
                           status == 504 ? "timeout" : "agent_unavailable", error);
        }
    } else if (p->ident_len) {
        bus_env_t env;
        memset(&env, 0, sizeof env);
        env.version = BUS_PROTO_VERSION;
        env.has_req_id = true;
        memcpy(env.req_id, p->req_id, 16);
        if (status == 200) {
            env.type = BUS_T_ADMIN_ECHO;
            env.u.admin_echo.agent_id = (bus_str_t){p->agent_id, strlen(p->agent_id)};
            env.u.admin_echo.text = (bus_str_t){text, text_len};
        } else {
            env.type = BUS_T_ERROR;
            env.u.error.code = status;
            env.u.error.message = (bus_str_t){error, strlen(error)};
        }
        tun_bus_send(srv, p->ident, p->ident_len, &env);
    }
    log_req(status == 200 ? LOG_LVL_DEBUG : LOG_LVL_INFO, "admin_echo_done", p->req_hex,
            p->agent_id, "status %d after %.3f ms", status, (double)rtt_us / 1000.0);
    free(p);
}

/* Starts an echo to a connected agent under req_id (NULL: a fresh one). Returns the pending
 * entry, or NULL with *status 404 (not connected), 409 (req_id in use), 503 (stopping) or 502. */
static s_pending_t *s_pending_start(tun_server_t *srv, const char *agent_id,
                                    const uint8_t *req_id, const char *text, size_t text_len,
                                    int *status)
{
    tun_conn_t *c = srv->stopping ? NULL : strmap_get(srv->agents, agent_id);
    if (!c || c->close_code) {
        *status = srv->stopping ? 503 : 404;
        return NULL;
    }
    s_pending_t *p = calloc(1, sizeof *p);
    if (!p) {
        *status = 502;
        return NULL;
    }
    p->srv = srv;
    if (req_id)
        memcpy(p->req_id, req_id, 16);
    else
        plat_random(p->req_id, sizeof p->req_id);
    bus_req_id_hex(p->req_id, p->req_hex);
    if (strmap_get(srv->pending, p->req_hex)) {
        free(p);
        *status = 409;
        return NULL;
    }
    snprintf(p->agent_id, sizeof p->agent_id, "%s", agent_id);
    p->started_us = plat_mono_us();
    bus_env_t env;
    bus_env_init(&env, BUS_T_ADMIN_ECHO, p->req_id);
    env.u.admin_echo.text = (bus_str_t){text, text_len};
    if (strmap_put(srv->pending, p->req_hex, p) != 0 || tun_conn_send(c, &env) != 0) {
        strmap_del(srv->pending, p->req_hex);
        free(p);
        *status = 502;
        return NULL;
    }
    bus_metric_inc(srv->m.admin_requests);
    bus_timer_start(srv->loop, &p->timer, s_pending_timeout, p,
                    srv->cfg->tunnel_admin_timeout_ms * 1000);
    log_req(LOG_LVL_DEBUG, "admin_echo_sent", p->req_hex, agent_id, "%zu bytes", text_len);
    return p;
}

/* ---- money: agents ⇄ hub-billing ----------------------------------------------------------- */

/* hub-billing's DEALER identity on our ROUTER (services/billing). */
#define S_BILLING_IDENT "billing"

/* An agent's usage.report / ledger.ack / ledger.nack / ledger.sync, forwarded to hub-billing
 * with the agent id stamped from the authenticated connection (what the agent wrote there is
 * replaced: an agent cannot report or acknowledge for another). When billing is not running
 * the message is dropped: its sender re-sends until it is acknowledged. */
static void s_money_to_billing(tun_conn_t *c, const bus_env_t *env)
{
    tun_server_t *srv = c->srv;
    bus_env_t out = *env;
    bus_str_t id = {c->hs.agent_id, strlen(c->hs.agent_id)};
    switch (out.type) {
    case BUS_T_USAGE_REPORT: out.u.usage_report.agent_id = id; break;
    case BUS_T_LEDGER_ACK: out.u.ledger_ack.agent_id = id; break;
    case BUS_T_LEDGER_NACK: out.u.ledger_nack.agent_id = id; break;
    case BUS_T_LEDGER_SYNC: out.u.ledger_sync.agent_id = id; break;
    default: return;
    }
    int rc = tun_bus_send(srv, (const uint8_t *)S_BILLING_IDENT, strlen(S_BILLING_IDENT), &out);
    if (rc != 0) {
        bus_metric_inc(srv->m.billing_dropped);
        log_agent(LOG_LVL_DEBUG, "billing_unreachable", c->hs.agent_id, "%s dropped: %s",
                  bus_type_name(out.type), strerror(-rc));
    }
}

/* hub-billing's ledger.tx / price.table / usage.ack for an agent (agent_id names it), relayed
 * as is; an agent that is not connected here is skipped (billing re-sends after its sync). */
static void s_money_to_agent(tun_server_t *srv, const bus_env_t *env, const uint8_t *raw,
                             size_t len)
{
    bus_str_t id = env->type == BUS_T_LEDGER_TX     ? env->u.ledger_tx.agent_id
                   : env->type == BUS_T_PRICE_TABLE ? env->u.price_table.agent_id
                                                    : env->u.usage_ack.agent_id;
    char agent[ID_AGENT_ID_LEN + 1];
    if (id.len == 0 || id.len >= sizeof agent)
        return;
    memcpy(agent, id.p, id.len);
    agent[id.len] = '\0';
    tun_conn_t *c = strmap_get(srv->agents, agent);
    if (!c || c->close_code) {
        log_agent(LOG_LVL_DEBUG, "money_agent_absent", agent, "%s not delivered",
                  bus_type_name(env->type));
        return;
    }
    tun_conn_send_raw(c, raw, len);
}

/* ---- agent messages ----------------------------------------------------------------------- */

/* Handles a message from an authenticated agent; raw is its encoded form. */
static void s_on_ready_message(tun_conn_t *c, const bus_env_t *env, const uint8_t *raw,
                               size_t len)
{
    tun_server_t *srv = c->srv;
    switch (env->type) {
    case BUS_T_RESP_HEAD:
    case BUS_T_RESP_CHUNK:
    case BUS_T_RESP_END:
    case BUS_T_CREDIT:
        tun_relay_from_agent(c, env, raw, len);
        return;
    case BUS_T_USAGE_REPORT:
    case BUS_T_LEDGER_ACK:
    case BUS_T_LEDGER_NACK:
    case BUS_T_LEDGER_SYNC:
        s_money_to_billing(c, env);
        return;
    case BUS_T_PING: {
        bus_env_t r;
        bus_env_init(&r, BUS_T_PONG, NULL);
        r.u.pong.seq = env->u.ping.seq;
        r.u.pong.t_us = env->u.ping.t_us;
        tun_conn_send(c, &r);
        return;
    }
    case BUS_T_PONG:
        return; /* seen_* already updated */
    case BUS_T_PRESENCE: {
        /* The agent announces what it serves; we add who and where, and publish. */
        const bus_presence_t *p = &env->u.presence;
        if (p->agent_id.len != strlen(c->hs.agent_id) ||
            memcmp(p->agent_id.p, c->hs.agent_id, p->agent_id.len) != 0) {
            log_agent(LOG_LVL_WARN, "bad_presence", c->hs.agent_id,
                      "presence names another agent: ignored");
            return;
        }
        uint8_t *models = p->models.len ? malloc(p->models.len) : NULL;
        uint8_t *formats = p->model_formats.len ? malloc(p->model_formats.len) : NULL;
        if ((p->models.len && !models) || (p->model_formats.len && !formats)) {
            free(models);
            free(formats);
            return;
        }
        if (p->models.len)
            memcpy(models, p->models.p, p->models.len);
        if (p->model_formats.len)
            memcpy(formats, p->model_formats.p, p->model_formats.len);
        free(c->models);
        c->models = models;
        c->models_len = p->models.len;
        c->models_count = p->models.count;
        free(c->formats);
        c->formats = formats;
        c->formats_len = p->model_formats.len;
        c->formats_count = p->model_formats.count;
        c->capacity = p->capacity;
        if (c->registered)
            s_publish_presence(srv, c, "up", "models announced");
        return;
    }
    case BUS_T_ADMIN_ECHO: {
        char hex[33];
        if (!env->has_req_id) {
            log_agent(LOG_LVL_WARN, "unexpected_message", c->hs.agent_id,
                      "admin.echo without req_id ignored");
            return;
        }
        bus_req_id_hex(env->req_id, hex);
        s_pending_t *p = strmap_get(srv->pending, hex);
        if (!p || strcmp(p->agent_id, c->hs.agent_id) != 0) {
            /* Late (timed out) or not ours: an agent cannot answer another's request. */
            log_req(LOG_LVL_INFO, "late_reply", hex, c->hs.agent_id, "no such pending request");
            return;
        }
        s_pending_finish(p, 200, env->u.admin_echo.text.p, env->u.admin_echo.text.len, NULL);
        return;
    }
    case BUS_T_ERROR:
        if (tun_relay_from_agent(c, env, raw, len))
            return;
        log_agent(LOG_LVL_WARN, "agent_error", c->hs.agent_id, "agent reports error %lld: %.*s",
                  (long long)env->u.error.code, (int)env->u.error.message.len,
                  env->u.error.message.len ? env->u.error.message.p : "");
        return;
    default: {
        /* Known to the schema but not handled by this tunnel: an error reply, not a close. */
        bus_env_t r;
        bus_env_init(&r, BUS_T_ERROR, NULL);
        r.has_req_id = env->has_req_id;
        memcpy(r.req_id, env->req_id, 16);
        r.u.error.code = 501;
        const char *msg = "message type not handled by this tunnel";
        r.u.error.message = (bus_str_t){msg, strlen(msg)};
        tun_conn_send(c, &r);
        return;
    }
    }
}

/* Registers a freshly authenticated connection, replacing an older one for the same agent. */
static void s_on_authenticated(tun_conn_t *c)
{
    tun_server_t *srv = c->srv;
    tun_conn_t *old = strmap_get(srv->agents, c->hs.agent_id);
    if (old && old != c) {
        /* The newcomer proved the key: the old connection is stale or a duplicate. */
        old->registered = false;
        bus_metric_inc(srv->m.replaced);
        log_agent(LOG_LVL_WARN, "agent_replaced", c->hs.agent_id,
                  "new connection from %s replaces the one from %s", c->peer, old->peer);
        s_fail_pending(srv, c->hs.agent_id, 502, "the agent reconnected before replying");
        tun_relay_agent_gone(old, "replaced by a newer connection");
        tun_conn_close(old, TUN_CLOSE_REPLACED, "replaced by a newer connection");
    }
    if (strmap_put(srv->agents, c->hs.agent_id, c) != 0) {
        tun_conn_close(c, TUN_CLOSE_TRY_AGAIN, "out of memory");
        return;
    }
    c->registered = true;
    c->ping_mono_us = plat_mono_us();
    bus_metric_inc(srv->m.handshakes_ok);
    bus_metric_set(srv->m.connected, (int64_t)strmap_count(srv->agents));
    bus_env_t w;
    bus_env_init(&w, BUS_T_WELCOME, NULL);
    w.u.welcome.agent_id = (bus_str_t){c->hs.agent_id, strlen(c->hs.agent_id)};
    w.u.welcome.heartbeat_ms = (uint64_t)srv->cfg->tunnel_heartbeat_ms;
    w.u.welcome.dead_after_ms = (uint64_t)srv->cfg->tunnel_dead_after_ms;
    tun_conn_send(c, &w);
    log_agent(LOG_LVL_INFO, "agent_connected", c->hs.agent_id,
              "agent \"%s\" (version %s) authenticated from %s", c->hs.name,
              c->hs.agent_version[0] ? c->hs.agent_version : "?", c->peer);
    s_publish_presence(srv, c, "up", "connected");
}

/* Handles one complete received WebSocket message. */
static void s_on_message(tun_conn_t *c, const uint8_t *buf, size_t len)
{
    tun_server_t *srv = c->srv;
    char err[160] = "";
    bus_env_t env;
    bus_metric_inc(srv->m.msgs_in);
    bus_metric_add(srv->m.bytes_in, (int64_t)len);
    c->seen_wall_us = plat_wall_us();
    c->seen_mono_us = plat_mono_us();
    char peer[96];
    snprintf(peer, sizeof peer, "agent:%s", c->hs.agent_id[0] ? c->hs.agent_id : c->peer);
    bus_tap_mirror(srv->tap, "in", peer, buf, len);
    int rc = bus_env_decode(buf, len, &env, err, sizeof err);
    const char *aid = c->hs.agent_id[0] ? c->hs.agent_id : NULL;
    if (rc != 0) {
        bus_metric_inc(srv->m.decode_errors);
        if (rc == -ENOTSUP && c->hs.state == TUN_HS_READY) {
            bus_env_t r;
            bus_env_init(&r, BUS_T_ERROR, NULL);
            r.has_req_id = env.has_req_id;
            memcpy(r.req_id, env.req_id, 16);
            r.u.error.code = 400;
            r.u.error.message = (bus_str_t){err, strlen(err)};
            log_agent(LOG_LVL_WARN, "unknown_type", aid, "%s", err);
            tun_conn_send(c, &r);
            return;
        }
        int code = rc == -EPROTO ? TUN_CLOSE_VERSION
                   : c->hs.state == TUN_HS_READY ? TUN_CLOSE_PROTOCOL
                   : rc == -ENOTSUP ? TUN_CLOSE_NOT_AUTHENTICATED
                                    : TUN_CLOSE_PROTOCOL;
        log_agent(LOG_LVL_WARN, "bad_message", aid, "from %s: %s", c->peer, err);
        if (c->hs.state != TUN_HS_READY)
            s_count_hs_failure(srv, code);
        tun_conn_close(c, code, code == TUN_CLOSE_VERSION ? "unsupported version" : "bad message");
        return;
    }
    if (c->hs.state == TUN_HS_READY) {
        s_on_ready_message(c, &env, buf, len);
        return;
    }
    tun_hs_ctx_t ctx = {srv->pin, srv->cfg->tunnel_handshake_timeout_ms * 1000,
                        tun_registry_lookup, srv->reg};
    tun_hs_result_t r = tun_hs_on_message(&c->hs, &ctx, &env, plat_mono_us());
    switch (r.action) {
    case TUN_HS_SEND_CHALLENGE: {
        bus_env_t ch;
        bus_env_init(&ch, BUS_T_CHALLENGE, NULL);
        ch.u.challenge.proto_version = BUS_PROTO_VERSION;
        ch.u.challenge.nonce = (bus_bin_t){c->hs.nonce, ID_NONCE_LEN};
        ch.u.challenge.expires_ms = (uint64_t)srv->cfg->tunnel_handshake_timeout_ms;
        tun_conn_send(c, &ch);
        return;
    }
    case TUN_HS_SEND_WELCOME:
        s_on_authenticated(c);
        return;
    case TUN_HS_CLOSE: {
        char claimed[ID_AGENT_ID_LEN + 1] = "";
        if (env.type == BUS_T_AUTH && env.u.auth.agent_id.len &&
            env.u.auth.agent_id.len < sizeof claimed) {
            memcpy(claimed, env.u.auth.agent_id.p, env.u.auth.agent_id.len);
            claimed[env.u.auth.agent_id.len] = '\0';
            if (!id_agent_id_valid(claimed))
                claimed[0] = '\0';
        }
        s_count_hs_failure(srv, r.close_code);
        log_agent(LOG_LVL_WARN, "handshake_refused", claimed[0] ? claimed : NULL,
                  "from %s: %d %s (%s)", c->peer, r.close_code, tun_close_name(r.close_code),
                  r.reason);
        tun_conn_close(c, r.close_code, r.reason);
        return;
    }
    case TUN_HS_NONE:
        return;
    }
}

/* ---- the WebSocket protocol -------------------------------------------------------------- */

static void s_conn_free(tun_conn_t *c)
{
    tun_server_t *srv = c->srv;
    bus_wsconn_free(&c->ws);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nconns--;
    free(c->models);
    free(c->formats);
    free(c);
}

static int s_tunnel_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len)
{
    tun_conn_t **pc = user;
    tun_server_t *srv = lws_vhost_user(lws_get_vhost(wsi));
    tun_conn_t *c = pc ? *pc : NULL;
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        char uri[128];
        if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) <= 0 ||
            strcmp(uri, S_TUNNEL_PATH) != 0) {
            log_info("upgrade_refused", "WebSocket upgrade on a path other than %s",
                     S_TUNNEL_PATH);
            return -1;
        }
        if (srv->stopping)
            return -1;
        return 0;
    }
    case LWS_CALLBACK_ESTABLISHED: {
        c = calloc(1, sizeof *c);
        if (!c)
            return -1;
        *pc = c;
        c->wsi = wsi;
        c->srv = srv;
        tun_hs_init(&c->hs);
        lws_get_peer_simple(wsi, c->peer, sizeof c->peer);
        c->since_wall_us = c->seen_wall_us = plat_wall_us();
        c->since_mono_us = c->seen_mono_us = plat_mono_us();
        c->next = srv->conns;
        if (srv->conns)
            srv->conns->prev = c;
        srv->conns = c;
        srv->nconns++;
        bus_metric_inc(srv->m.connections);
        log_debug("tunnel_open", "connection from %s", c->peer);
        if (srv->nconns > (size_t)srv->cfg->tunnel_max_agents) {
            s_count_hs_failure(srv, TUN_CLOSE_TOO_MANY);
            log_warn("tunnel_full", "refusing %s: %zu connections (max_agents)", c->peer,
                     srv->nconns - 1);
            tun_conn_close(c, TUN_CLOSE_TOO_MANY, "tunnel full");
        }
        return 0;
    }
    case LWS_CALLBACK_RECEIVE: {
        if (!c || c->close_code)
            return 0;
        if (!lws_frame_is_binary(wsi)) {
            tun_conn_close(c, TUN_CLOSE_PROTOCOL, "text frames are not part of the protocol");
            return 0;
        }
        const uint8_t *msg;
        size_t msg_len;
        int rc = bus_wsconn_rx(&c->ws, lws_is_first_fragment(wsi), lws_is_final_fragment(wsi),
                               in, len, BUS_ENV_MAX_BYTES, &msg, &msg_len);
        if (rc == -EMSGSIZE) {
            s_count_hs_failure(srv, TUN_CLOSE_TOO_BIG);
            tun_conn_close(c, TUN_CLOSE_TOO_BIG, "message too big");
        } else if (rc < 0) {
            return -1;
        } else if (rc == 1) {
            s_on_message(c, msg, msg_len);
        }
        return 0;
    }
    case LWS_CALLBACK_SERVER_WRITEABLE: {
        if (!c)
            return -1;
        if (c->close_code) {
            /* Refusals are final: drop anything still queued and send the close now. */
            bus_wsconn_drop(&c->ws);
            lws_close_reason(wsi, (enum lws_close_status)c->close_code,
                             (unsigned char *)c->close_reason, strlen(c->close_reason));
            return -1;
        }
        int n = bus_wsconn_write(&c->ws, wsi);
        if (n < 0) {
            bus_metric_inc(srv->m.errors);
            return -1;
        }
        if (n > 0) {
            bus_metric_inc(srv->m.msgs_out);
            bus_metric_add(srv->m.bytes_out, n);
        }
        return 0;
    }
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (c && len >= 2) {
            const uint8_t *b = in;
            log_agent(LOG_LVL_INFO, "agent_closing", c->hs.agent_id[0] ? c->hs.agent_id : NULL,
                      "peer closed with %d", (b[0] << 8) | b[1]);
        }
        return 0;
    case LWS_CALLBACK_CLOSED:
        if (!c)
            return 0;
        if (c->registered) {
            const char *why = c->close_code == TUN_CLOSE_HEARTBEAT ? "heartbeat timeout"
                              : srv->stopping                        ? "hub shutting down"
                                                                     : "disconnected";
            s_fail_pending(srv, c->hs.agent_id, 502, "the agent disconnected before replying");
            s_conn_unregister(c, why);
            bus_metric_inc(srv->m.gone);
            log_agent(LOG_LVL_INFO, "agent_gone", c->hs.agent_id, "%s (%s)", why, c->peer);
        }
        tun_relay_agent_gone(c, "disconnected");
        s_conn_free(c);
        *pc = NULL;
        return 0;
    default:
        return 0;
    }
}

/* ---- admin API ---------------------------------------------------------------------------- */

/* GET /admin/agents: the connected agents as JSON. */
typedef struct {
    json_t *arr;
} s_list_t;

static void s_list_agent(void *arg, const char *key, void *value)
{
    (void)key;
    s_list_t *l = arg;
    tun_conn_t *c = value;
    char since[64], seen[64];
    s_iso_time(c->since_wall_us, since);
    s_iso_time(c->seen_wall_us, seen);
    json_array_append_new(
        l->arr, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "id", c->hs.agent_id, "name",
                          c->hs.name, "remote_addr", c->peer, "connected_since", since,
                          "last_seen", seen, "agent_version", c->hs.agent_version));
}

static int s_admin_list(tun_server_t *srv, s_admin_pss_t *pss, struct lws *wsi)
{
    s_list_t l = {json_array()};
    strmap_each(srv->agents, s_list_agent, &l);
    json_t *o = json_pack("{s:o, s:i}", "agents", l.arr, "count", (json_int_t)json_array_size(l.arr));
    char *body = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    if (!body)
        return bus_http_error(&pss->http, wsi, 500, "server_error", "out of memory");
    size_t n = strlen(body);
    int rc = bus_http_respond(&pss->http, wsi, 200, "application/json", body, n);
    free(body);
    return rc;
}

/* Extracts the agent id from /admin/agents/{id}/messages; 0 or -ENOENT. */
static int s_parse_messages_path(const char *path, char id[ID_AGENT_ID_LEN + 1])
{
    const char *prefix = "/admin/agents/";
    size_t pl = strlen(prefix);
    if (strncmp(path, prefix, pl) != 0)
        return -ENOENT;
    const char *rest = path + pl;
    const char *slash = strchr(rest, '/');
    if (!slash || strcmp(slash, "/messages") != 0)
        return -ENOENT;
    size_t il = (size_t)(slash - rest);
    if (il == 0 || il > ID_AGENT_ID_LEN)
        return -EINVAL;
    memcpy(id, rest, il);
    id[il] = '\0';
    return 0;
}

/* POST /admin/agents/{id}/messages once the body is complete. */
static int s_admin_message(tun_server_t *srv, s_admin_pss_t *pss, struct lws *wsi)
{
    char id[ID_AGENT_ID_LEN + 1];
    if (s_parse_messages_path(pss->http.path, id) != 0 || !id_agent_id_valid(id))
        return bus_http_error(&pss->http, wsi, 404, "not_found",
                              "no such agent (ids are 32 lowercase hex characters)");
    if (pss->http.body_too_large)
        return bus_http_error(&pss->http, wsi, 413, "payload_too_large",
                              "message body over 64 KiB");
    json_error_t jerr;
    json_t *o = pss->http.body_len
                    ? json_loadb(pss->http.body, pss->http.body_len,
                                 JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr)
                    : NULL;
    json_t *text = o && json_is_object(o) ? json_object_get(o, "text") : NULL;
    if (!o || !json_is_object(o) || !json_is_string(text)) {
        char msg[256];
        snprintf(msg, sizeof msg, "body must be a JSON object {\"text\": \"...\"}%s%s",
                 o ? "" : ": ", o ? "" : (pss->http.body_len ? jerr.text : "empty body"));
        json_decref(o);
        return bus_http_error(&pss->http, wsi, 400, "invalid_request", msg);
    }
    int status = 0;
    s_pending_t *p = s_pending_start(srv, id, NULL, json_string_value(text),
                                     json_string_length(text), &status);
    json_decref(o);
    if (!p) {
        const char *why = status == 404   ? "agent not connected"
                          : status == 503 ? "tunnel shutting down"
                                          : "could not reach the agent";
        return bus_http_error(&pss->http, wsi, status,
                              status == 404 ? "not_found" : "agent_unavailable", why);
    }
    p->http_wsi = wsi;
    p->http_pss = pss;
    pss->pending = p;
    return 0;
}

static int s_admin_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                      size_t len)
{
    s_admin_pss_t *pss = user;
    tun_server_t *srv = lws_vhost_user(lws_get_vhost(wsi));
    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        bus_http_begin(&pss->http, wsi, in, S_ADMIN_BODY_MAX);
        pss->pending = NULL;
        if (!bus_http_bearer_ok(wsi, srv->cfg->tunnel_admin_token)) {
            char peer[64] = "";
            lws_get_peer_simple(wsi, peer, sizeof peer);
            log_warn("admin_unauthorized", "%s %s from %s: missing or wrong admin token",
                     pss->http.method, pss->http.path, peer);
            snprintf(pss->http.extra, sizeof pss->http.extra,
                     "WWW-Authenticate: Bearer realm=\"relayhub-admin\"\r\n");
            return bus_http_error(&pss->http, wsi, 401, "unauthorized",
                                  "missing or wrong admin token");
        }
        if (strcmp(pss->http.path, "/admin/agents") == 0) {
            if (strcmp(pss->http.method, "GET") != 0)
                return bus_http_error(&pss->http, wsi, 405, "method_not_allowed", "use GET");
            return s_admin_list(srv, pss, wsi);
        }
        char id[ID_AGENT_ID_LEN + 1];
        int prc = s_parse_messages_path(pss->http.path, id);
        if (prc == -ENOENT)
            return bus_http_error(&pss->http, wsi, 404, "not_found", "no such endpoint");
        if (strcmp(pss->http.method, "POST") != 0)
            return bus_http_error(&pss->http, wsi, 405, "method_not_allowed", "use POST");
        /* lws 4.1 does not decode chunked request bodies: ask for a Content-Length. */
        if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) {
            pss->http.close_after = true;
            return bus_http_error(&pss->http, wsi, 411, "length_required",
                                  "send the body with Content-Length, not chunked");
        }
        /* The body arrives in HTTP_BODY callbacks; a bodiless POST completes now. */
        char cl[32] = "";
        if (bus_http_header(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, cl, sizeof cl) != 0 ||
            strcmp(cl, "0") == 0)
            return s_admin_message(srv, pss, wsi);
        /* Duplicate Content-Length headers arrive joined by a comma: refuse, never guess. */
        if (strspn(cl, "0123456789") != strlen(cl)) {
            pss->http.close_after = true;
            return bus_http_error(&pss->http, wsi, 400, "invalid_request",
                                  "malformed or repeated Content-Length");
        }
        return 0;
    }
    case LWS_CALLBACK_HTTP_BODY:
        if (!pss->http.answered)
            bus_http_body(&pss->http, in, len);
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (pss->http.answered)
            return 0;
        return s_admin_message(srv, pss, wsi);
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return bus_http_writeable(&pss->http, wsi);
    case LWS_CALLBACK_CLOSED_HTTP:
        if (pss->pending) {
            /* The caller left: forget the request; a late reply is logged and dropped. */
            s_pending_t *p = pss->pending;
            pss->pending = NULL;
            p->http_wsi = NULL;
            p->http_pss = NULL;
            bus_timer_cancel(srv->loop, &p->timer);
            strmap_del(srv->pending, p->req_hex);
            free(p);
        }
        bus_http_reset(&pss->http);
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

/* ---- bus side ----------------------------------------------------------------------------- */

/* One message on the ROUTER: [identity][envelope]. */
static void s_on_router(void *arg, void *zsock)
{
    tun_server_t *srv = arg;
    /* [identity][envelope]; further frames are read and dropped. */
    zmq_msg_t parts[2];
    int n = bus_zrecv_parts(zsock, parts, 2);
    if (n < 2) {
        for (int i = 0; i < n; i++)
            zmq_msg_close(&parts[i]);
        return;
    }
    const uint8_t *ident = zmq_msg_data(&parts[0]);
    size_t isz = zmq_msg_size(&parts[0]);
    int il = isz > 256 ? 256 : (int)isz; /* ROUTER identities are at most 255 bytes */
    const uint8_t *buf = zmq_msg_data(&parts[1]);
    size_t len = zmq_msg_size(&parts[1]);
    bus_metric_inc(srv->m.msgs_in);
    bus_tap_mirror(srv->tap, "in", "bus", buf, len);
    bus_env_t env;
    char err[160] = "";
    int rc = bus_env_decode(buf, len, &env, err, sizeof err);
    bus_env_t r;
    bus_env_init(&r, BUS_T_ERROR, NULL);
    if (rc != 0) {
        bus_metric_inc(srv->m.decode_errors);
        log_warn("bad_bus_message", "%s", err);
        r.has_req_id = rc == -ENOTSUP && env.has_req_id;
        memcpy(r.req_id, env.req_id, 16);
        r.u.error.code = 400;
        r.u.error.message = (bus_str_t){err, strlen(err)};
        tun_bus_send(srv, ident, (size_t)il, &r);
    } else if (env.type == BUS_T_REGISTRY_CHANGED) {
        /* From hubctl: read the registry now, and tell the gateways (their key caches). */
        bus_str_t w = env.u.registry_changed.what;
        if (w.len == 6 && memcmp(w.p, "agents", 6) == 0)
            tun_registry_poke(srv->reg);
        if (zmq_send(srv->pub, buf, len, ZMQ_DONTWAIT) >= 0)
            bus_metric_inc(srv->m.msgs_out);
        log_debug("registry_changed", "%.*s", (int)w.len, w.p);
    } else if (tun_relay_is_gateway_type(env.type)) {
        tun_relay_from_gateway(srv, ident, (size_t)il, &env, buf, len);
    } else if (env.type == BUS_T_LEDGER_TX || env.type == BUS_T_PRICE_TABLE ||
               env.type == BUS_T_USAGE_ACK) {
        s_money_to_agent(srv, &env, buf, len);
    } else if (env.type == BUS_T_ADMIN_ECHO) {
        char id[ID_AGENT_ID_LEN + 1] = "";
        if (env.u.admin_echo.agent_id.len && env.u.admin_echo.agent_id.len < sizeof id) {
            memcpy(id, env.u.admin_echo.agent_id.p, env.u.admin_echo.agent_id.len);
            id[env.u.admin_echo.agent_id.len] = '\0';
        }
        int status = 404;
        s_pending_t *p = NULL;
        if (id_agent_id_valid(id))
            p = s_pending_start(srv, id, env.has_req_id ? env.req_id : NULL,
                                env.u.admin_echo.text.p, env.u.admin_echo.text.len, &status);
        if (p) {
            memcpy(p->ident, ident, (size_t)il);
            p->ident_len = (size_t)il;
        } else {
            const char *m = status == 404   ? "agent not connected"
                            : status == 409 ? "req_id already in use"
                                            : "agent unavailable";
            r.has_req_id = env.has_req_id;
            memcpy(r.req_id, env.req_id, 16);
            r.u.error.code = status;
            r.u.error.message = (bus_str_t){m, strlen(m)};
            tun_bus_send(srv, ident, (size_t)il, &r);
        }
    } else {
        const char *m = "message type not handled by hub-tunnel";
        r.has_req_id = env.has_req_id;
        memcpy(r.req_id, env.req_id, 16);
        r.u.error.code = 501;
        r.u.error.message = (bus_str_t){m, strlen(m)};
        tun_bus_send(srv, ident, (size_t)il, &r);
    }
    zmq_msg_close(&parts[0]);
    zmq_msg_close(&parts[1]);
}

/* ---- timers -------------------------------------------------------------------------------- */

/* Closes connections whose agent the registry no longer accepts (disabled, removed, re-keyed). */
static void s_enforce_registry(tun_server_t *srv)
{
    for (tun_conn_t *c = srv->conns; c; c = c->next) {
        if (!c->registered || c->close_code)
            continue;
        tun_hs_agent_t a;
        int rc = tun_registry_lookup(srv->reg, c->hs.agent_id, &a);
        if (rc == -ENOENT || (rc == 0 && a.disabled)) {
            int code = rc == 0 ? TUN_CLOSE_AGENT_DISABLED : TUN_CLOSE_UNKNOWN_AGENT;
            log_agent(LOG_LVL_WARN, "agent_revoked", c->hs.agent_id, "closing: %s",
                      tun_close_name(code));
            tun_conn_close(c, code, rc == 0 ? "agent disabled" : "agent removed");
        }
    }
}

static void s_sweep(bus_timer_t *t)
{
    tun_server_t *srv = t->arg;
    uint64_t now = plat_mono_us();
    tun_registry_refresh(srv->reg);
    if (tun_registry_generation(srv->reg) != srv->reg_generation) {
        srv->reg_generation = tun_registry_generation(srv->reg);
        s_enforce_registry(srv);
    }
    bus_metric_set(srv->m.registry_agents, (int64_t)tun_registry_count(srv->reg));
    bus_metric_set(srv->m.registry_errors, (int64_t)tun_registry_errors(srv->reg));
    bus_metric_set(srv->m.tap_dropped, (int64_t)bus_tap_dropped(srv->tap));
    uint64_t hb = (uint64_t)srv->cfg->tunnel_heartbeat_ms * 1000;
    uint64_t dead = (uint64_t)srv->cfg->tunnel_dead_after_ms * 1000;
    uint64_t hs_to = (uint64_t)srv->cfg->tunnel_handshake_timeout_ms * 1000;
    uint64_t period = hb / 4 < S_SWEEP_US ? hb / 4 : S_SWEEP_US;
    uint64_t stall = dead / 2 > 2 * period ? dead / 2 : 2 * period;
    if (srv->last_sweep_us && now - srv->last_sweep_us > stall) {
        /* We, not the agents, were stopped (SIGSTOP, a frozen VM, a stalled disk): their
         * messages may be waiting unread. Give every agent a fresh dead_after. */
        log_warn("loop_stalled", "no sweep for %llu ms: restarting heartbeat clocks",
                 (unsigned long long)((now - srv->last_sweep_us) / 1000));
        for (tun_conn_t *c = srv->conns; c; c = c->next) {
            c->seen_mono_us = now;
            c->since_mono_us = now;
        }
    }
    srv->last_sweep_us = now;
    /* Presence in full, now and then: a gateway that started late, or missed an event,
     * converges; and one that stops hearing about an agent lets it expire. */
    bool refresh = now - srv->presence_us >= (uint64_t)srv->cfg->tunnel_presence_interval_ms * 1000;
    if (refresh)
        srv->presence_us = now;
    for (tun_conn_t *c = srv->conns; c; c = c->next) {
        if (refresh && c->registered && !c->close_code)
            s_publish_presence(srv, c, "up", "refresh");
        if (c->close_code)
            continue;
        if (c->hs.state != TUN_HS_READY) {
            if (now - c->since_mono_us > hs_to) {
                s_count_hs_failure(srv, TUN_CLOSE_HANDSHAKE_TIMEOUT);
                log_warn("handshake_timeout", "%s did not authenticate in time", c->peer);
                tun_conn_close(c, TUN_CLOSE_HANDSHAKE_TIMEOUT, "handshake timeout");
            }
            continue;
        }
        if (now - c->seen_mono_us >= dead) {
            log_agent(LOG_LVL_WARN, "heartbeat_timeout", c->hs.agent_id,
                      "silent for %llu ms: marking gone",
                      (unsigned long long)((now - c->seen_mono_us) / 1000));
            /* Gone now, whether or not the close frame ever gets out. */
            s_fail_pending(srv, c->hs.agent_id, 502, "the agent stopped answering");
            s_conn_unregister(c, "heartbeat timeout");
            bus_metric_inc(srv->m.gone);
            tun_conn_close(c, TUN_CLOSE_HEARTBEAT, "heartbeat timeout");
            continue;
        }
        if (now - c->ping_mono_us >= hb) {
            bus_env_t p;
            bus_env_init(&p, BUS_T_PING, NULL);
            p.u.ping.seq = ++c->ping_seq;
            p.u.ping.t_us = plat_wall_us();
            c->ping_mono_us = now;
            tun_conn_send(c, &p);
        }
    }
    bus_timer_start(srv->loop, &srv->sweep, s_sweep, srv, (int64_t)(period ? period : 1000));
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static const struct lws_protocols s_tunnel_protocols[] = {
    {"relayhub-tunnel", s_tunnel_cb, sizeof(tun_conn_t *), 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}};

static const struct lws_protocols s_admin_protocols[] = {
    {"tunnel-admin", s_admin_cb, sizeof(s_admin_pss_t), 0, 0, NULL, 0}, {NULL, NULL, 0, 0, 0, NULL, 0}};

const struct lws_protocols *tun_server_protocols(void)
{
    return s_tunnel_protocols;
}

/* Binds a zmq socket, removing a stale ipc file a killed process may have left. */
static int s_bind(void *sock, const char *endpoint)
{
    if (strncmp(endpoint, "ipc://", 6) == 0)
        remove(endpoint + 6);
    if (zmq_bind(sock, endpoint) != 0) {
        log_err("bind_failed", "cannot bind %s: %s", endpoint, zmq_strerror(errno));
        return -errno;
    }
    return 0;
}

static void s_register_metrics(tun_server_t *srv)
{
    bus_metrics_t *m = srv->metrics;
    tun_metrics_t *x = &srv->m;
    x->connections = bus_metrics_add(m, BUS_COUNTER, "relayhub_tunnel_connections_total", NULL,
                                     "WebSocket connections accepted");
    x->connected = bus_metrics_add(m, BUS_GAUGE, "relayhub_tunnel_agents_connected", NULL,
                                   "authenticated agents connected now");
    x->msgs_in = bus_metrics_add(m, BUS_COUNTER, "relayhub_messages_in_total", NULL,
                                 "envelopes received");
    x->msgs_out = bus_metrics_add(m, BUS_COUNTER, "relayhub_messages_out_total", NULL,
                                  "envelopes sent");
    x->bytes_in = bus_metrics_add(m, BUS_COUNTER, "relayhub_tunnel_bytes_in_total", NULL,
                                  "tunnel payload bytes received");
    x->bytes_out = bus_metrics_add(m, BUS_COUNTER, "relayhub_tunnel_bytes_out_total", NULL,
                                   "tunnel payload bytes sent");
    x->errors = bus_metrics_add(m, BUS_COUNTER, "relayhub_errors_total", NULL,
                                "internal errors (encode, send)");
    x->decode_errors = bus_metrics_add(m, BUS_COUNTER, "relayhub_decode_errors_total", NULL,
                                       "malformed or unknown envelopes received");
    x->handshakes_ok = bus_metrics_add(m, BUS_COUNTER, "relayhub_tunnel_handshakes_total", NULL,
                                       "successful agent handshakes");
    for (size_t i = 0; i < S_N_HS_CODES; i++) {
        char labels[64];
        snprintf(labels, sizeof labels, "reason=\"%s\"", tun_close_name(s_hs_codes[i]));
        x->hs_fail[i] = bus_metrics_add(m, BUS_COUNTER, "relayhub_tunnel_handshake_failures_total",
                                        labels, "refused handshakes by reason");
    }
    x->replaced = bus_metrics_add(m, BUS_COUNTER, "relayhub_tunnel_replaced_total", NULL,
                                  "connections replaced by a newer one for the same agent");
    x->gone = bus_metrics_add(m, BUS_COUNTER, "relayhub_tunnel_agents_gone_total", NULL,
                              "authenticated agents that disconnected or went silent");
    x->admin_requests = bus_metrics_add(m, BUS_COUNTER, "relayhub_tunnel_admin_messages_total",
                                        NULL, "admin messages sent to agents");
    x->admin_timeouts = bus_metrics_add(m, BUS_COUNTER, "relayhub_tunnel_admin_timeouts_total",
                                        NULL, "admin messages without a reply in time");
    x->registry_agents = bus_metrics_add(m, BUS_GAUGE, "relayhub_tunnel_registry_agents", NULL,
                                         "agents in the cached registry");
    x->registry_errors = bus_metrics_add(m, BUS_COUNTER, "relayhub_tunnel_registry_errors_total",
                                         NULL, "database errors while reading the registry");
    x->billing_dropped = bus_metrics_add(m, BUS_COUNTER, "relayhub_tunnel_billing_dropped_total",
                                         NULL, "agents' money messages dropped while hub-billing "
                                               "was unreachable (their senders re-send)");
    x->streams_open = bus_metrics_add(m, BUS_GAUGE, "relayhub_tunnel_streams_open", NULL,
                                      "streams relayed between gateways and agents now");
    x->streams_total = bus_metrics_add(m, BUS_COUNTER, "relayhub_tunnel_streams_total", NULL,
                                       "streams opened");
    x->streams_orphaned = bus_metrics_add(m, BUS_COUNTER,
                                          "relayhub_tunnel_orphaned_envelopes_total", NULL,
                                          "agent envelopes for streams that had ended");
    x->tap_dropped = bus_metrics_add(m, BUS_COUNTER, "relayhub_tap_dropped_total", NULL,
                                     "tap messages dropped for a slow subscriber");
}

tun_server_t *tun_server_new(bus_loop_t *loop, const hub_config_t *cfg)
{
    tun_server_t *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    srv->cfg = cfg;
    srv->loop = loop;
    bus_buf_init(&srv->enc, BUS_ENV_MAX_BYTES);
    if (!cfg->tunnel_admin_token[0]) {
        log_err("config", "tunnel.admin_token is empty: set it (hubctl init writes one)");
        goto fail;
    }
    int rc = tls_pin_of_file(cfg->tunnel_cert, srv->pin, sizeof srv->pin);
    if (rc != 0) {
        log_err("config", "tunnel.cert: cannot read a certificate from %s", cfg->tunnel_cert);
        goto fail;
    }
    store_params_t sp;
    char err[256];
    if (hub_config_store_params(cfg, &sp, err, sizeof err) != 0) {
        log_err("config", "%s", err);
        goto fail;
    }
    srv->agents = strmap_new();
    srv->pending = strmap_new();
    srv->streams = strmap_new();
    srv->metrics = bus_metrics_new("hub-tunnel");
    srv->reg = tun_registry_new(&sp, cfg->tunnel_registry_poll_ms);
    if (!srv->agents || !srv->pending || !srv->streams || !srv->metrics || !srv->reg)
        goto fail;
    s_register_metrics(srv);

    srv->router = zmq_socket(bus_loop_zctx(loop), ZMQ_ROUTER);
    srv->pub = zmq_socket(bus_loop_zctx(loop), ZMQ_PUB);
    if (!srv->router || !srv->pub)
        goto fail;
    int zero = 0, one = 1;
    zmq_setsockopt(srv->router, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(srv->pub, ZMQ_LINGER, &zero, sizeof zero);
    /* A reply to a gateway that has gone must fail loudly, not vanish. */
    zmq_setsockopt(srv->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    /* A restarted hub-billing reconnects under the same identity ("billing") before the dead
     * one's pipe may be gone: the newcomer takes it over. */
    zmq_setsockopt(srv->router, ZMQ_ROUTER_HANDOVER, &one, sizeof one);
    /* Credit windows bound what streams can have in flight; these bound a misbehaving peer. */
    int64_t maxmsg = (int64_t)BUS_ENV_MAX_BYTES;
    int hwm = 100000;
    zmq_setsockopt(srv->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(srv->router, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(srv->router, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (s_bind(srv->router, cfg->tunnel_router) || s_bind(srv->pub, cfg->tunnel_presence))
        goto fail;
    srv->router_watch = bus_zwatch_new(loop, srv->router, s_on_router, srv);
    if (!srv->router_watch)
        goto fail;
    int terr = 0;
    srv->tap = bus_tap_new(loop, cfg->tunnel_tap, "hub-tunnel", &terr);
    if (terr)
        goto fail;

    srv->vh_tunnel = bus_loop_listen(loop, "tunnel", cfg->tunnel_listen, s_tunnel_protocols,
                                     cfg->tunnel_cert, cfg->tunnel_key, NULL, srv);
    if (!srv->vh_tunnel)
        goto fail;
    char admin_host[256];
    int admin_port;
    if (cfg_split_listen(cfg->tunnel_admin_listen, admin_host, sizeof admin_host, &admin_port) ==
            0 &&
        strncmp(admin_host, "127.", 4) != 0 && strcmp(admin_host, "::1") != 0 &&
        strcmp(admin_host, "localhost") != 0)
        log_warn("admin_exposed", "tunnel.admin_listen %s is not a loopback address: the admin "
                 "API speaks plain HTTP; put it behind TLS or keep it on 127.0.0.1",
                 cfg->tunnel_admin_listen);
    srv->vh_admin = bus_loop_listen(loop, "admin", cfg->tunnel_admin_listen, s_admin_protocols,
                                    NULL, NULL, NULL, srv);
    if (!srv->vh_admin)
        goto fail;
    if (bus_metrics_serve(srv->metrics, loop, cfg->tunnel_metrics_listen) != 0)
        goto fail;
    bus_timer_start(loop, &srv->sweep, s_sweep, srv, 1000);
    log_info("started", "hub-tunnel %s: agents on wss://%s/tunnel/connect, pin %s",
             cfg->tunnel_name, cfg->tunnel_listen, srv->pin);
    return srv;
fail:
    tun_server_destroy(&srv);
    return NULL;
}

static void s_free_pending(void *arg, const char *key, void *value)
{
    (void)arg;
    (void)key;
    free(value);
}

void tun_server_destroy(tun_server_t **p)
{
    if (!p || !*p)
        return;
    tun_server_t *srv = *p;
    bus_timer_cancel(srv->loop, &srv->sweep);
    bus_timer_cancel(srv->loop, &srv->stop_timer);
    if (srv->pending) {
        strmap_each(srv->pending, s_free_pending, NULL);
        strmap_destroy(&srv->pending);
    }
    if (srv->streams) {
        /* Streams end with their connections, which lws closed before this runs. */
        strmap_each(srv->streams, s_free_pending, NULL);
        strmap_destroy(&srv->streams);
    }
    strmap_destroy(&srv->agents);
    bus_tap_destroy(&srv->tap);
    bus_zwatch_destroy(&srv->router_watch);
    if (srv->router)
        zmq_close(srv->router);
    if (srv->pub)
        zmq_close(srv->pub);
    tun_registry_destroy(&srv->reg);
    bus_metrics_destroy(&srv->metrics);
    bus_buf_free(&srv->enc);
    free(srv);
    *p = NULL;
}

/* Waits for connections to drain after a stop request, then ends the loop. */
static void s_stop_progress(bus_timer_t *t)
{
    tun_server_t *srv = t->arg;
    if (srv->nconns == 0 || plat_mono_us() > srv->stop_deadline_us) {
        log_info("stopped", "hub-tunnel stopped (%zu connection(s) left)", srv->nconns);
        bus_loop_stop(srv->loop);
        return;
    }
    bus_timer_start(srv->loop, &srv->stop_timer, s_stop_progress, srv, 20000);
}

void tun_server_shutdown(void *arg, int signo)
{
    tun_server_t *srv = arg;
    (void)signo;
    srv->stopping = true;
    s_fail_pending(srv, NULL, 503, "hub-tunnel is shutting down");
    tun_relay_shutdown(srv);
    for (tun_conn_t *c = srv->conns; c; c = c->next)
        tun_conn_close(c, TUN_CLOSE_GOING_AWAY, "hub shutting down");
    srv->stop_deadline_us = plat_mono_us() + 3000000;
    bus_timer_start(srv->loop, &srv->stop_timer, s_stop_progress, srv, 0);
}
