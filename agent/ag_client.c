/* ag_client: tunnel client with pinning, handshake, heartbeats and backoff. */
#include "ag_client.h"
#include "backoff.h"
#include "bus_env.h"
#include "bus_log.h"
#include "bus_metrics.h"
#include "bus_plat.h"
#include "bus_tap.h"
#include "bus_wsconn.h"
#include "tlscert.h"

#include <errno.h>
#include <openssl/x509.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_AGENT_VERSION "relayhub-agent/" RELAYHUB_VERSION
#define S_TICK_US 250000

typedef enum {
    S_DISCONNECTED = 0,
    S_CONNECTING,
    S_AWAIT_CHALLENGE,
    S_AWAIT_WELCOME,
    S_READY,
} s_state_t;

static const char *const s_state_names[] = {"disconnected", "connecting", "await_challenge",
                                            "await_welcome", "ready"};

struct ag_client {
    const ag_config_t *cfg;     /* borrowed */
    const id_keypair_t *kp;     /* borrowed */
    bus_loop_t *loop;           /* borrowed */
    char agent_id[ID_AGENT_ID_LEN + 1]; /* derived from kp */
    char host[256];             /* hub host */
    char path[256];             /* hub path */
    int port;                   /* hub port */
    s_state_t state;            /* connection state */
    struct lws *wsi;            /* current connection, or NULL */
    backoff_t backoff;          /* reconnect schedule */
    bus_timer_t reconnect;      /* next attempt */
    bus_timer_t tick;           /* silence detection */
    uint64_t seen_mono_us;      /* last message from the hub */
    int64_t dead_after_ms;      /* current silence limit */
    bus_wsconn_t ws;            /* outgoing frames and incoming reassembly */
    int peer_close_code;        /* code the hub closed with */
    char peer_close_reason[128];
    char pin_error[160];        /* why the last certificate was refused */
    bool stopping;              /* shutting down */
    bus_buf_t enc;              /* scratch encoder */
    bus_tap_t *tap;             /* envelope mirror */
    bus_metrics_t *metrics;     /* registry */
    bus_metric_t *m_attempts, *m_connected, *m_in, *m_out, *m_errors, *m_hs_fail, *m_pin_fail;
    bus_metric_t *m_echo;
    ag_client_hooks_t hooks;    /* stream envelopes go to ag_super */
};

static void s_schedule_reconnect(ag_client_t *c);

static void s_set_state(ag_client_t *c, s_state_t s, const char *why)
{
    log_debug("agent_fsm", "%s --%s--> %s", s_state_names[c->state], why, s_state_names[s]);
    c->state = s;
}

/* Encodes and queues an envelope to the hub. */
static int s_send(ag_client_t *c, const bus_env_t *env)
{
    if (!c->wsi)
        return -ENOTCONN;
    bus_buf_reset(&c->enc);
    int rc = bus_env_encode(env, &c->enc);
    if (rc != 0) {
        bus_metric_inc(c->m_errors);
        log_err("encode_failed", "cannot encode %s", bus_type_name(env->type));
        return rc;
    }
    const uint8_t *queued = bus_wsconn_queue(&c->ws, c->enc.data, c->enc.len);
    if (!queued)
        return -ENOMEM;
    bus_tap_mirror(c->tap, "out", "hub", queued, c->enc.len);
    lws_callback_on_writable(c->wsi);
    return 0;
}

static void s_connect(bus_timer_t *t)
{
    ag_client_t *c = t->arg;
    if (c->stopping || c->wsi)
        return;
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof ci);
    ci.context = bus_loop_lws(c->loop);
    ci.vhost = bus_loop_client_vhost(c->loop);
    ci.address = c->host;
    ci.port = c->port;
    ci.path = c->path;
    ci.host = c->host;
    ci.origin = c->host;
    ci.protocol = "relayhub-tunnel";
    ci.local_protocol_name = "relayhub-tunnel";
    /* No LCCSCF_ALLOW_SELFSIGNED: it would accept a self-signed leaf before our pin check. */
    ci.ssl_connection = LCCSCF_USE_SSL | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK;
    ci.pwsi = &c->wsi;
    ci.opaque_user_data = c;
    c->pin_error[0] = '\0';
    c->peer_close_code = 0;
    c->peer_close_reason[0] = '\0';
    bus_metric_inc(c->m_attempts);
    log_agent(LOG_LVL_INFO, "connect_attempt", c->agent_id, "connecting to wss://%s:%d%s",
              c->host, c->port, c->path);
    s_set_state(c, S_CONNECTING, "dial");
    if (!lws_client_connect_via_info(&ci)) {
        c->wsi = NULL;
        s_set_state(c, S_DISCONNECTED, "dial failed");
        log_agent(LOG_LVL_WARN, "connect_failed", c->agent_id, "cannot start a connection");
        s_schedule_reconnect(c);
    }
}

static void s_schedule_reconnect(ag_client_t *c)
{
    if (c->stopping)
        return;
    int64_t delay = backoff_next_ms(&c->backoff, NULL);
    log_agent(LOG_LVL_INFO, "reconnect_scheduled", c->agent_id,
              "attempt %u in %lld ms (ceiling %lld ms)", c->backoff.attempt, (long long)delay,
              (long long)backoff_ceiling_ms(&c->backoff, c->backoff.attempt - 1));
    bus_timer_start(c->loop, &c->reconnect, s_connect, c, delay * 1000);
}

/* Hub silence: the TCP connection may be half-open; start over. */
static void s_tick(bus_timer_t *t)
{
    ag_client_t *c = t->arg;
    if (c->state == S_READY && c->wsi &&
        plat_mono_us() - c->seen_mono_us > (uint64_t)c->dead_after_ms * 1000) {
        log_agent(LOG_LVL_WARN, "hub_silent", c->agent_id, "no message for %lld ms: reconnecting",
                  (long long)c->dead_after_ms);
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    }
    bus_timer_start(c->loop, &c->tick, s_tick, c, S_TICK_US);
}

/* Checks the hub certificate against the pin; returns 0 to accept (lws convention). */
static int s_verify_cert(ag_client_t *c, X509_STORE_CTX *xctx)
{
    int depth = X509_STORE_CTX_get_error_depth(xctx);
    if (depth > 0) {
        /* Only the leaf's key is trusted: chain errors above it do not matter. */
        X509_STORE_CTX_set_error(xctx, X509_V_OK);
        return 0;
    }
    char pin[TLS_PIN_MAX];
    X509 *leaf = X509_STORE_CTX_get_current_cert(xctx);
    if (tls_pin_of_x509(leaf, pin, sizeof pin) == 0 && strlen(pin) == strlen(c->cfg->hub_pin) &&
        sodium_memcmp(pin, c->cfg->hub_pin, strlen(pin)) == 0) {
        X509_STORE_CTX_set_error(xctx, X509_V_OK);
        return 0;
    }
    snprintf(c->pin_error, sizeof c->pin_error, "hub certificate pin %s does not match hub.pin",
             pin);
    X509_STORE_CTX_set_error(xctx, X509_V_ERR_CERT_REJECTED);
    return 1;
}

static void s_on_message(ag_client_t *c, const uint8_t *buf, size_t len)
{
    bus_env_t env;
    char err[160] = "";
    bus_metric_inc(c->m_in);
    c->seen_mono_us = plat_mono_us();
    bus_tap_mirror(c->tap, "in", "hub", buf, len);
    int rc = bus_env_decode(buf, len, &env, err, sizeof err);
    if (rc != 0) {
        bus_metric_inc(c->m_errors);
        log_agent(LOG_LVL_WARN, "bad_message", c->agent_id, "from the hub: %s", err);
        if (rc == -ENOTSUP && c->state == S_READY) {
            bus_env_t r;
            bus_env_init(&r, BUS_T_ERROR, NULL);
            r.has_req_id = env.has_req_id;
            memcpy(r.req_id, env.req_id, 16);
            r.u.error.code = 400;
            r.u.error.message = (bus_str_t){err, strlen(err)};
            s_send(c, &r);
        }
        return;
    }
    switch (c->state) {
    case S_AWAIT_CHALLENGE: {
        if (env.type != BUS_T_CHALLENGE || env.u.challenge.nonce.len != ID_NONCE_LEN) {
            log_agent(LOG_LVL_WARN, "handshake_error", c->agent_id, "expected a challenge, got %s",
                      bus_type_name(env.type));
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
            return;
        }
        uint8_t sig[ID_SIG_LEN];
        if (id_auth_sign(c->kp, (uint32_t)env.u.challenge.proto_version,
                         env.u.challenge.nonce.p, c->agent_id, c->cfg->hub_pin, sig) != 0) {
            bus_metric_inc(c->m_errors);
            return;
        }
        bus_env_t a;
        bus_env_init(&a, BUS_T_AUTH, NULL);
        a.u.auth.agent_id = (bus_str_t){c->agent_id, strlen(c->agent_id)};
        a.u.auth.nonce = env.u.challenge.nonce;
        a.u.auth.signature = (bus_bin_t){sig, sizeof sig};
        a.u.auth.agent_version = (bus_str_t){S_AGENT_VERSION, strlen(S_AGENT_VERSION)};
        s_send(c, &a);
        s_set_state(c, S_AWAIT_WELCOME, "challenge");
        return;
    }
    case S_AWAIT_WELCOME:
        if (env.type != BUS_T_WELCOME) {
            log_agent(LOG_LVL_WARN, "handshake_error", c->agent_id, "expected welcome, got %s",
                      bus_type_name(env.type));
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
            return;
        }
        if (env.u.welcome.dead_after_ms && (int64_t)env.u.welcome.dead_after_ms < c->dead_after_ms)
            c->dead_after_ms = (int64_t)env.u.welcome.dead_after_ms;
        s_set_state(c, S_READY, "welcome");
        backoff_connected(&c->backoff, plat_mono_us());
        bus_metric_set(c->m_connected, 1);
        log_agent(LOG_LVL_INFO, "connected", c->agent_id,
                  "tunnel up to %s:%d (heartbeat %llu ms)", c->host, c->port,
                  (unsigned long long)env.u.welcome.heartbeat_ms);
        if (c->hooks.on_up)
            c->hooks.on_up(c->hooks.arg, c->agent_id);
        return;
    case S_READY:
        break;
    default:
        return;
    }
    switch (env.type) {
    case BUS_T_PING: {
        bus_env_t r;
        bus_env_init(&r, BUS_T_PONG, NULL);
        r.u.pong.seq = env.u.ping.seq;
        r.u.pong.t_us = env.u.ping.t_us;
        s_send(c, &r);
        return;
    }
    case BUS_T_PONG:
        return;
    case BUS_T_ADMIN_ECHO: {
        char hex[33] = "";
        if (env.has_req_id)
            bus_req_id_hex(env.req_id, hex);
        bus_metric_inc(c->m_echo);
        log_req(LOG_LVL_INFO, "admin_echo", hex[0] ? hex : NULL, c->agent_id,
                "received %zu bytes: %.*s", env.u.admin_echo.text.len,
                (int)(env.u.admin_echo.text.len > 200 ? 200 : env.u.admin_echo.text.len),
                env.u.admin_echo.text.len ? env.u.admin_echo.text.p : "");
        bus_env_t r;
        bus_env_init(&r, BUS_T_ADMIN_ECHO, NULL);
        r.has_req_id = env.has_req_id;
        memcpy(r.req_id, env.req_id, 16);
        r.u.admin_echo.text = env.u.admin_echo.text;
        s_send(c, &r);
        return;
    }
    case BUS_T_REQ_OPEN:
    case BUS_T_REQ_BODY:
    case BUS_T_REQ_CANCEL:
    case BUS_T_CREDIT:
    case BUS_T_LEDGER_TX:
    case BUS_T_PRICE_TABLE:
    case BUS_T_USAGE_ACK:
        if (c->hooks.on_stream) {
            c->hooks.on_stream(c->hooks.arg, &env, buf, len);
            return;
        }
        break;
    case BUS_T_ERROR:
        log_agent(LOG_LVL_WARN, "hub_error", c->agent_id, "hub reports %lld: %.*s",
                  (long long)env.u.error.code, (int)env.u.error.message.len,
                  env.u.error.message.len ? env.u.error.message.p : "");
        return;
    default:
        break;
    }
    bus_env_t r;
    bus_env_init(&r, BUS_T_ERROR, NULL);
    r.has_req_id = env.has_req_id;
    memcpy(r.req_id, env.req_id, 16);
    r.u.error.code = 501;
    const char *m = "message type not handled by this agent";
    r.u.error.message = (bus_str_t){m, strlen(m)};
    s_send(c, &r);
}

/* Connection ended (error or close): log why and schedule the next attempt. */
static void s_on_down(ag_client_t *c, const char *why)
{
    bool was_ready = c->state == S_READY;
    c->wsi = NULL;
    bus_wsconn_drop(&c->ws);
    bus_metric_set(c->m_connected, 0);
    if (!was_ready && c->state != S_DISCONNECTED)
        bus_metric_inc(c->m_hs_fail);
    s_set_state(c, S_DISCONNECTED, "down");
    backoff_disconnected(&c->backoff, plat_mono_us());
    if (was_ready && c->hooks.on_down)
        c->hooks.on_down(c->hooks.arg);
    if (c->stopping) {
        bus_loop_stop(c->loop);
        return;
    }
    if (c->peer_close_code)
        log_agent(was_ready ? LOG_LVL_INFO : LOG_LVL_WARN, "disconnected", c->agent_id,
                  "hub closed the tunnel: %d %s", c->peer_close_code, c->peer_close_reason);
    else
        log_agent(LOG_LVL_WARN, "disconnected", c->agent_id, "%s", why);
    s_schedule_reconnect(c);
}

static int s_client_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len)
{
    if (reason == LWS_CALLBACK_OPENSSL_PERFORM_SERVER_CERT_VERIFICATION) {
        /* Delivered to protocols[0] of the context; user is the X509_STORE_CTX here. */
        bus_loop_t *loop = lws_context_user(lws_get_context(wsi));
        ag_client_t *c = loop ? bus_loop_user(loop) : NULL;
        if (!c)
            return 1;
        return s_verify_cert(c, (X509_STORE_CTX *)user);
    }
    ag_client_t *c = lws_get_opaque_user_data(wsi);
    if (!c)
        return 0;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
        char why[320];
        if (c->pin_error[0]) {
            bus_metric_inc(c->m_pin_fail);
            snprintf(why, sizeof why, "refused the hub: %s", c->pin_error);
        } else {
            snprintf(why, sizeof why, "connection failed: %s",
                     in ? (const char *)in : "unknown error");
        }
        s_on_down(c, why);
        return 0;
    }
    case LWS_CALLBACK_CLIENT_ESTABLISHED: {
        c->seen_mono_us = plat_mono_us();
        c->dead_after_ms = c->cfg->dead_after_ms;
        s_set_state(c, S_AWAIT_CHALLENGE, "established");
        bus_env_t h;
        bus_env_init(&h, BUS_T_HELLO, NULL);
        h.u.hello.proto_version = BUS_PROTO_VERSION;
        h.u.hello.agent_version = (bus_str_t){S_AGENT_VERSION, strlen(S_AGENT_VERSION)};
        s_send(c, &h);
        return 0;
    }
    case LWS_CALLBACK_CLIENT_RECEIVE: {
        const uint8_t *msg;
        size_t msg_len;
        int rc = bus_wsconn_rx(&c->ws, lws_is_first_fragment(wsi), lws_is_final_fragment(wsi),
                               in, len, BUS_ENV_MAX_BYTES, &msg, &msg_len);
        if (rc < 0)
            return -1;
        if (rc == 1)
            s_on_message(c, msg, msg_len);
        return 0;
    }
    case LWS_CALLBACK_CLIENT_WRITEABLE: {
        if (c->stopping && !c->ws.head) {
            static const char bye[] = "agent shutting down";
            lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, (unsigned char *)bye, sizeof bye - 1);
            return -1;
        }
        int n = bus_wsconn_write(&c->ws, wsi);
        if (n < 0)
            return -1;
        if (n > 0)
            bus_metric_inc(c->m_out);
        if (c->stopping)
            lws_callback_on_writable(wsi);
        return 0;
    }
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (len >= 2) {
            const uint8_t *b = in;
            c->peer_close_code = (b[0] << 8) | b[1];
            size_t rl = len - 2 < sizeof c->peer_close_reason - 1 ? len - 2
                                                                  : sizeof c->peer_close_reason - 1;
            memcpy(c->peer_close_reason, b + 2, rl);
            c->peer_close_reason[rl] = '\0';
        }
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
        s_on_down(c, "connection closed");
        return 0;
    default:
        return 0;
    }
}

static const struct lws_protocols s_protocols[] = {
    {"relayhub-tunnel", s_client_cb, 0, 64 * 1024, 0, NULL, 0}, {NULL, NULL, 0, 0, 0, NULL, 0}};

const struct lws_protocols *ag_client_protocols(void)
{
    return s_protocols;
}

ag_client_t *ag_client_new(bus_loop_t *loop, const ag_config_t *cfg, const id_keypair_t *kp)
{
    ag_client_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->cfg = cfg;
    c->kp = kp;
    c->loop = loop;
    id_agent_id(kp->pk, c->agent_id);
    bus_buf_init(&c->enc, BUS_ENV_MAX_BYTES);
    if (ag_parse_hub_url(cfg->hub_url, c->host, sizeof c->host, &c->port, c->path,
                         sizeof c->path) != 0)
        goto fail;
    backoff_init(&c->backoff, cfg->reconnect_base_ms, cfg->reconnect_cap_ms,
                 cfg->reconnect_reset_ms);
    c->dead_after_ms = cfg->dead_after_ms;
    c->metrics = bus_metrics_new("agent");
    if (!c->metrics)
        goto fail;
    bus_metrics_t *m = c->metrics;
    c->m_attempts = bus_metrics_add(m, BUS_COUNTER, "relayhub_agent_connect_attempts_total",
                                    NULL, "tunnel connection attempts");
    c->m_connected = bus_metrics_add(m, BUS_GAUGE, "relayhub_agent_connected", NULL,
                                     "1 while the tunnel is up and authenticated");
    c->m_in = bus_metrics_add(m, BUS_COUNTER, "relayhub_messages_in_total", NULL,
                              "envelopes received");
    c->m_out = bus_metrics_add(m, BUS_COUNTER, "relayhub_messages_out_total", NULL,
                               "envelopes sent");
    c->m_errors = bus_metrics_add(m, BUS_COUNTER, "relayhub_errors_total", NULL,
                                  "malformed messages and internal errors");
    c->m_hs_fail = bus_metrics_add(m, BUS_COUNTER, "relayhub_agent_handshake_failures_total",
                                   NULL, "connections that ended before the handshake completed");
    c->m_pin_fail = bus_metrics_add(m, BUS_COUNTER, "relayhub_agent_pin_failures_total", NULL,
                                    "hub certificates refused by the pin check");
    c->m_echo = bus_metrics_add(m, BUS_COUNTER, "relayhub_agent_admin_echo_total", NULL,
                                "admin.echo messages answered");
    if (bus_metrics_serve(m, loop, cfg->metrics_listen) != 0)
        goto fail;
    int terr = 0;
    c->tap = bus_tap_new(loop, cfg->tap, "agent", &terr);
    if (terr)
        goto fail;
    log_agent(LOG_LVL_INFO, "started", c->agent_id, "agent %s, hub %s", S_AGENT_VERSION,
              cfg->hub_url);
    bus_timer_start(loop, &c->reconnect, s_connect, c, 0);
    bus_timer_start(loop, &c->tick, s_tick, c, S_TICK_US);
    return c;
fail:
    ag_client_destroy(&c);
    return NULL;
}

void ag_client_destroy(ag_client_t **p)
{
    if (!p || !*p)
        return;
    ag_client_t *c = *p;
    bus_timer_cancel(c->loop, &c->reconnect);
    bus_timer_cancel(c->loop, &c->tick);
    bus_wsconn_free(&c->ws);
    bus_tap_destroy(&c->tap);
    bus_metrics_destroy(&c->metrics);
    bus_buf_free(&c->enc);
    free(c);
    *p = NULL;
}

void ag_client_set_hooks(ag_client_t *c, const ag_client_hooks_t *hooks)
{
    c->hooks = *hooks;
}

int ag_client_send(ag_client_t *c, const bus_env_t *env)
{
    if (c->state != S_READY)
        return -ENOTCONN;
    return s_send(c, env);
}

int ag_client_send_raw(ag_client_t *c, const uint8_t *raw, size_t len)
{
    if (c->state != S_READY || !c->wsi)
        return -ENOTCONN;
    const uint8_t *queued = bus_wsconn_queue(&c->ws, raw, len);
    if (!queued)
        return -ENOMEM;
    bus_tap_mirror(c->tap, "out", "hub", queued, len);
    lws_callback_on_writable(c->wsi);
    return 0;
}

void ag_client_shutdown(void *arg, int signo)
{
    ag_client_t *c = arg;
    (void)signo;
    c->stopping = true;
    bus_timer_cancel(c->loop, &c->reconnect);
    if (c->wsi) {
        lws_callback_on_writable(c->wsi);
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, 3);
    } else {
        bus_loop_stop(c->loop);
    }
}
