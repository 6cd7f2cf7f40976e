/* bl_server: hub-billing's sockets, batches, settlement and timers. */
#include "bl_server.h"
#include "bl_ledger.h"
#include "bl_rules.h"
#include "bus_env.h"
#include "bus_log.h"
#include "bus_metrics.h"
#include "bus_plat.h"
#include "bus_tap.h"
#include "money.h"
#include "strmap.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define S_IDENT_MAX 255           /* ZeroMQ routing ids are at most 255 bytes */
#define S_BILLING_IDENT "billing" /* our DEALER's routing id on the tunnel's ROUTER */
#define S_SETTLE_US 50000         /* settlement pass period */
#define S_SLOW_US 1000000         /* hold expiry and gauges */
#define S_STORE_RETRY_US 1000000  /* reconnect attempts while the store is away */
#define S_HWM 50000               /* messages queued per socket, each way */

/* One hold.req read this turn. */
typedef struct {
    uint8_t ident[S_IDENT_MAX]; /* the gateway's ROUTER identity */
    uint8_t ident_len;          /* its length */
    uint8_t req_id[16];         /* the request's base id */
    char hex[33];               /* req_id in hex (logs, dedupe) */
    int64_t user_id;            /* who pays */
    char model[STORE_MODEL_MAX + 1];
    int64_t body_bytes; /* bounds the input tokens */
    int64_t max_tokens; /* 0: not given */
    int64_t amount;     /* the bound, once priced */
    size_t place;       /* index in the batch given to store_holds_place */
    bool answered;      /* answered without the store (unpriced, malformed) */
} s_hold_in_t;

/* One usage.report read this turn. */
typedef struct {
    store_usage_t u;            /* the report as stored */
    bool from_tunnel;           /* an agent's (ack through the tunnel) or a gateway's */
    uint8_t ident[S_IDENT_MAX]; /* the gateway's ROUTER identity */
    uint8_t ident_len;
    int state; /* 0 stored (or dropped as settled already), -1 refused */
} s_usage_in_t;

typedef struct {
    bus_metric_t *holds_granted, *holds_refused, *holds_unpriced, *holds_failed;
    bus_metric_t *held_amount, *held_count;
    bus_metric_t *reports_gateway, *reports_agent, *acks_sent;
    bus_metric_t *settled_billed, *settled_nothing, *revenue, *fee;
    bus_metric_t *rows_sent, *resync_rows, *prices_sent, *disputes, *agents;
    bus_metric_t *topups, *holds_expired, *store_errors, *msgs_in, *msgs_out, *decode_errors,
        *send_errors;
} s_metrics_t;

struct bl_server {
    const hub_config_t *cfg; /* borrowed */
    bus_loop_t *loop;        /* borrowed */
    store_params_t sp;       /* store parameters (strings borrowed from cfg) */
    store_t *st;             /* open and loaded store, or NULL while it is away */
    uint64_t store_retry_us; /* next reconnect attempt (monotonic) */
    uint64_t store_error_us; /* the last store error logged at error level (monotonic) */
    bool store_warned;       /* "store unavailable" was logged */
    bl_unpriced_t unpriced;  /* billing.unpriced */
    bl_prices_t prices;      /* the price table */
    bl_ledger_t *ledger;     /* chain heads and row delivery */
    strmap_t *poisoned;      /* req hex of requests that cannot settle (logged once) */
    void *router;            /* gateways and hubctl */
    void *dealer;            /* to hub-tunnel's ROUTER */
    void *sub;               /* hub-tunnel's presence */
    bus_zwatch_t *router_watch, *dealer_watch, *sub_watch;
    bus_tap_t *tap;         /* envelope mirror */
    bus_metrics_t *metrics; /* registry */
    s_metrics_t m;          /* handles */
    bus_buf_t enc;          /* scratch encoder */
    s_hold_in_t *holds;     /* hold.req read this turn */
    size_t n_holds, cap_holds;
    s_usage_in_t *usage; /* usage.report read this turn */
    size_t n_usage, cap_usage;
    size_t batch;             /* billing.batch */
    bool turn_armed;          /* the end-of-turn flush is scheduled */
    bool settle_due;          /* reports were stored since the last pending read */
    int64_t next_wait_ms;     /* an agent-only request's grace ends then (wall ms) */
    bus_timer_t turn;         /* end-of-turn flush (zero delay) */
    bus_timer_t settle_timer; /* S_SETTLE_US */
    bus_timer_t ledger_timer; /* delivery: presence expiry, re-sends */
    bus_timer_t poll_timer;   /* billing.poll: top-ups, prices */
    bus_timer_t slow_timer;   /* S_SLOW_US: hold expiry, gauges; the stop */
};

/* ---- helpers ---------------------------------------------------------------------------- */

static int64_t s_now_ms(void)
{
    return (int64_t)(plat_wall_us() / 1000);
}

/* Encodes env into the scratch buffer. 0 or a negative errno (logged). */
static int s_encode(bl_server_t *srv, const bus_env_t *env)
{
    bus_buf_reset(&srv->enc);
    int rc = bus_env_encode(env, &srv->enc);
    if (rc != 0) {
        bus_metric_inc(srv->m.send_errors);
        log_err("encode_failed", "cannot encode %s: %s", bus_type_name(env->type), strerror(-rc));
    }
    return rc;
}

/* Answers a ROUTER peer (a gateway, hubctl). A peer that went away is not an error: it asks
 * again (ROUTER_MANDATORY turns that case into EHOSTUNREACH instead of a silent drop). */
static int s_reply(bl_server_t *srv, const uint8_t *ident, size_t ident_len, const bus_env_t *env)
{
    int rc = s_encode(srv, env);
    if (rc != 0)
        return rc;
    if (zmq_send(srv->router, ident, ident_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(srv->router, srv->enc.data, srv->enc.len, ZMQ_DONTWAIT) < 0) {
        rc = -errno;
        bus_metric_inc(srv->m.send_errors);
        log_debug("reply_failed", "%s to a gateway: %s", bus_type_name(env->type),
                  zmq_strerror(-rc));
    } else {
        bus_metric_inc(srv->m.msgs_out);
        bus_tap_mirror(srv->tap, "out", "gateway", srv->enc.data, srv->enc.len);
    }
    bus_zwatch_poke(srv->router_watch);
    return rc;
}

/* Sends to hub-tunnel (for the agent env names). ZMQ_IMMEDIATE: nothing is queued while the
 * tunnel is away; the caller keeps what was not sent. */
static int s_to_tunnel(void *arg, const bus_env_t *env)
{
    bl_server_t *srv = arg;
    int rc = s_encode(srv, env);
    if (rc != 0)
        return rc;
    if (zmq_send(srv->dealer, srv->enc.data, srv->enc.len, ZMQ_DONTWAIT) < 0) {
        rc = -errno;
        bus_metric_inc(srv->m.send_errors);
        log_debug("tunnel_send_failed", "%s: %s", bus_type_name(env->type), zmq_strerror(-rc));
    } else {
        bus_metric_inc(srv->m.msgs_out);
        bus_tap_mirror(srv->tap, "out", "tunnel", srv->enc.data, srv->enc.len);
    }
    bus_zwatch_poke(srv->dealer_watch);
    return rc;
}

/* ---- the store ---------------------------------------------------------------------------- */

/* Re-reads the price table when it changed (or always, with force). */
static int s_prices_refresh(bl_server_t *srv, store_t *st, bool force)
{
    int64_t rev = 0;
    int rc = store_prices_rev(st, &rev);
    if (rc != 0)
        return rc;
    if (!force && rev == srv->prices.rev)
        return 0;
    store_price_t *list = NULL;
    size_t n = 0;
    rc = store_price_list(st, &list, &n);
    if (rc != 0)
        return rc;
    bl_prices_sort(list, n);
    free(srv->prices.list);
    srv->prices.list = list;
    srv->prices.n = n;
    srv->prices.rev = rev;
    log_info("prices_loaded", "%zu price version(s)", n);
    return 0;
}

/* Counts and logs a failed store call; a failure that may have lost the connection closes it,
 * so that the next use reconnects and reloads (billing is the only writer: the chain heads in
 * memory stay right, but a reload costs little and proves it). */
static void s_store_error(bl_server_t *srv, int rc, const char *what, const char *req_hex)
{
    bus_metric_inc(srv->m.store_errors);
    const char *detail = srv->st ? store_last_error(srv->st) : "";
    uint64_t now = plat_mono_us();
    /* While the store keeps failing, one error line a second (the metric counts them all). */
    bool quiet = now - srv->store_error_us < S_STORE_RETRY_US;
    log_req(quiet ? LOG_LVL_DEBUG : LOG_LVL_ERR, "store_error", req_hex, NULL, "%s: %s%s%s", what,
            strerror(-rc), detail[0] ? ": " : "", detail);
    if (!quiet)
        srv->store_error_us = now;
    switch (rc) {
    case -ENOENT:
    case -EEXIST:
    case -EINVAL:
    case -EALREADY:
    case -ESTALE:
    case -ENOMEM:
        return; /* a refusal, not a lost connection */
    default:
        /* One immediate reconnect after a quiet spell, otherwise one a second. */
        store_destroy(&srv->st);
        srv->store_retry_us = quiet ? now + S_STORE_RETRY_US : now;
    }
}

/* The store, opened and loaded (chain heads, acks, prices), or NULL while it cannot be. */
static store_t *s_store(bl_server_t *srv)
{
    if (srv->st)
        return srv->st;
    uint64_t now = plat_mono_us();
    if (now < srv->store_retry_us)
        return NULL;
    srv->store_retry_us = now + S_STORE_RETRY_US;
    char err[256];
    store_t *st = NULL;
    int rc = store_open(&srv->sp, &st, err, sizeof err);
    if (rc == 0) {
        int version = 0;
        rc = store_schema_version(st, &version);
        if (rc == 0 && version < 3) {
            snprintf(err, sizeof err, "schema version %d: run hubctl migrate", version);
            rc = -EPROTO;
        } else if (rc != 0) {
            snprintf(err, sizeof err, "%s", store_last_error(st));
        }
    }
    if (rc == 0 && (rc = bl_ledger_load(srv->ledger, st)) != 0)
        snprintf(err, sizeof err, "loading chain heads: %s", store_last_error(st));
    if (rc == 0 && (rc = s_prices_refresh(srv, st, true)) != 0)
        snprintf(err, sizeof err, "loading prices: %s", store_last_error(st));
    if (rc != 0) {
        bus_metric_inc(srv->m.store_errors);
        if (!srv->store_warned)
            log_err("store_unavailable", "%s (retrying every second)", err);
        srv->store_warned = true;
        store_destroy(&st);
        return NULL;
    }
    if (srv->store_warned)
        log_info("store_available", "the store is reachable again");
    srv->store_warned = false;
    srv->st = st;
    srv->settle_due = true;
    return st;
}

/* ---- holds ------------------------------------------------------------------------------- */

/* hold.reply {ok false} with status, code and message. */
static void s_hold_refuse(bl_server_t *srv, const s_hold_in_t *h, int status, const char *code,
                          const char *message)
{
    bus_env_t env;
    bus_env_init(&env, BUS_T_HOLD_REPLY, h->req_id);
    env.u.hold_reply.ok = false;
    env.u.hold_reply.status = (uint64_t)status;
    env.u.hold_reply.code = bus_str_c(code);
    env.u.hold_reply.message = bus_str_c(message);
    s_reply(srv, h->ident, h->ident_len, &env);
}

static void s_hold_grant(bl_server_t *srv, const s_hold_in_t *h)
{
    bus_env_t env;
    bus_env_init(&env, BUS_T_HOLD_REPLY, h->req_id);
    env.u.hold_reply.ok = true;
    env.u.hold_reply.amount = h->amount;
    s_reply(srv, h->ident, h->ident_len, &env);
}

/* Prices one hold; answers it at once when no store write is needed (unpriced, malformed). */
static void s_hold_price(bl_server_t *srv, s_hold_in_t *h)
{
    const store_price_t *p = bl_price_at(&srv->prices, h->model, s_now_ms());
    int rc = bl_hold_amount(p, srv->unpriced, h->body_bytes, h->max_tokens,
                            srv->cfg->billing_default_max_tokens, &h->amount);
    if (rc == 0)
        return;
    char msg[STORE_MODEL_MAX + 96];
    h->answered = true;
    if (rc == -ENOENT) {
        bus_metric_inc(srv->m.holds_unpriced);
        snprintf(msg, sizeof msg, "model \"%s\" has no price on this hub", h->model);
        log_req(LOG_LVL_INFO, "hold_refused", h->hex, NULL, "user %" PRId64 ": %s", h->user_id,
                msg);
        s_hold_refuse(srv, h, 503, "model_not_priced", msg);
    } else {
        bus_metric_inc(srv->m.holds_failed);
        snprintf(msg, sizeof msg, "bad hold request: negative body_bytes or max_tokens");
        log_req(LOG_LVL_WARN, "hold_refused", h->hex, NULL, "user %" PRId64 ": %s", h->user_id,
                msg);
        s_hold_refuse(srv, h, 400, "invalid_request", msg);
    }
}

/* Answers one placed hold from the store's verdict. */
static void s_hold_answer(bl_server_t *srv, const s_hold_in_t *h, int granted, int64_t available)
{
    if (granted) {
        bus_metric_inc(srv->m.holds_granted);
        log_req(LOG_LVL_DEBUG, "hold_granted", h->hex, NULL,
                "user %" PRId64 ": %" PRId64 " micro-units held", h->user_id, h->amount);
        s_hold_grant(srv, h);
        return;
    }
    char cost[MONEY_TEXT_MAX], avail[MONEY_TEXT_MAX], msg[160];
    money_format(h->amount, cost);
    money_format(available, avail);
    snprintf(msg, sizeof msg, "insufficient balance: this request may cost up to %s, available %s",
             cost, avail);
    bus_metric_inc(srv->m.holds_refused);
    log_req(LOG_LVL_INFO, "hold_refused", h->hex, NULL, "user %" PRId64 ": %s", h->user_id, msg);
    s_hold_refuse(srv, h, 402, "insufficient_quota", msg);
}

/* Writes and answers every hold.req read this turn: one store_holds_place for the batch. A
 * request asked twice in the batch (a gateway re-asking) is placed once and answered twice. */
static void s_flush_holds(bl_server_t *srv)
{
    size_t n = srv->n_holds;
    if (n == 0)
        return;
    srv->n_holds = 0;
    s_hold_in_t *in = srv->holds;
    store_t *st = s_store(srv);
    if (!st) {
        /* Nothing can be made durable, so nothing is granted (the gateway asks again). */
        for (size_t i = 0; i < n; i++) {
            bus_metric_inc(srv->m.holds_failed);
            log_req(LOG_LVL_WARN, "hold_refused", in[i].hex, NULL,
                    "user %" PRId64 ": billing store unavailable", in[i].user_id);
            s_hold_refuse(srv, &in[i], 503, "billing_unavailable",
                          "billing is temporarily unavailable, retry later");
        }
        return;
    }
    /* A model unknown to the copy of the price table: look for a newer table first. */
    bool refreshed = false;
    for (size_t i = 0; i < n && st && !refreshed; i++) {
        if (!bl_price_at(&srv->prices, in[i].model, s_now_ms())) {
            int rc = s_prices_refresh(srv, st, false);
            if (rc != 0) {
                s_store_error(srv, rc, "reading prices", NULL);
                st = srv->st;
            }
            refreshed = true;
        }
    }
    for (size_t i = 0; i < n; i++)
        s_hold_price(srv, &in[i]);
    store_hold_t *place = calloc(n, sizeof *place);
    int *res = calloc(n, sizeof *res);
    int64_t *avail = calloc(n, sizeof *avail);
    strmap_t *seen = strmap_new();
    size_t m = 0;
    int64_t now = s_now_ms();
    bool ok = place && res && avail && seen;
    for (size_t i = 0; ok && i < n; i++) {
        if (in[i].answered)
            continue;
        s_hold_in_t *first = strmap_get(seen, in[i].hex);
        if (first) {
            in[i].place = first->place;
            in[i].amount = first->amount;
            continue;
        }
        if (strmap_put(seen, in[i].hex, &in[i]) != 0) {
            ok = false;
            break;
        }
        memcpy(place[m].req_id, in[i].req_id, 16);
        place[m].user_id = in[i].user_id;
        place[m].amount = in[i].amount;
        place[m].expires_at = now + srv->cfg->billing_hold_ttl_ms;
        in[i].place = m++;
    }
    int rc = !ok ? -ENOMEM : !st ? -ENOTCONN : 0;
    if (rc == 0 && m > 0) {
        rc = store_holds_place(st, place, m, res, avail);
        if (rc == 0)
            log_debug("holds_placed", "%zu hold(s) in one transaction", m);
        if (rc != 0 && m > 1) {
            /* One bad hold must not refuse the others: place them one by one. */
            s_store_error(srv, rc, "placing a batch of holds (retrying one by one)", NULL);
            for (size_t j = 0; j < m; j++) {
                st = s_store(srv);
                int r1 = st ? store_holds_place(st, &place[j], 1, &res[j], &avail[j]) : -ENOTCONN;
                if (r1 != 0) {
                    res[j] = -1;
                    if (st)
                        s_store_error(srv, r1, "placing a hold", NULL);
                }
            }
            rc = 0;
        } else if (rc != 0) {
            s_store_error(srv, rc, "placing a hold", in[0].hex);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (in[i].answered)
            continue;
        if (rc != 0 || res[in[i].place] < 0) {
            bus_metric_inc(srv->m.holds_failed);
            log_req(LOG_LVL_WARN, "hold_refused", in[i].hex, NULL,
                    "user %" PRId64 ": billing store unavailable", in[i].user_id);
            s_hold_refuse(srv, &in[i], 503, "billing_unavailable",
                          "billing is temporarily unavailable, retry later");
        } else {
            s_hold_answer(srv, &in[i], res[in[i].place], avail[in[i].place]);
        }
    }
    strmap_destroy(&seen);
    free(place);
    free(res);
    free(avail);
}

/* Grows a queue array to hold one more element, up to the batch size. */
static void *s_grow(void *arr, size_t *cap, size_t n, size_t elem, size_t max)
{
    if (n < *cap)
        return arr;
    size_t ncap = *cap ? *cap * 2 : 16;
    if (ncap > max)
        ncap = max;
    if (ncap <= n)
        return NULL;
    void *p = realloc(arr, ncap * elem);
    if (p)
        *cap = ncap;
    return p;
}

static void s_turn(bus_timer_t *t);

/* Schedules the end-of-turn flush: everything read until then goes into one batch. */
static void s_arm_turn(bl_server_t *srv)
{
    if (srv->turn_armed)
        return;
    srv->turn_armed = true;
    bus_timer_start(srv->loop, &srv->turn, s_turn, srv, 0);
}

static void s_flush_usage(bl_server_t *srv);

/* Queues a hold.req for this turn's batch. */
static void s_on_hold_req(bl_server_t *srv, const uint8_t *ident, size_t ident_len,
                          const bus_env_t *env)
{
    const bus_hold_req_t *q = &env->u.hold_req;
    s_hold_in_t tmp;
    memset(&tmp, 0, sizeof tmp);
    memcpy(tmp.ident, ident, ident_len);
    tmp.ident_len = (uint8_t)ident_len;
    if (!env->has_req_id) {
        log_warn("bad_hold_req", "hold.req without req_id: ignored");
        return;
    }
    memcpy(tmp.req_id, env->req_id, 16);
    bus_req_id_hex(env->req_id, tmp.hex);
    tmp.user_id = q->user_id;
    tmp.body_bytes = q->body_bytes;
    tmp.max_tokens = q->max_tokens;
    if (!bus_str_copy(q->model, tmp.model, sizeof tmp.model) || q->user_id <= 0) {
        tmp.answered = true;
        bus_metric_inc(srv->m.holds_failed);
        log_req(LOG_LVL_WARN, "hold_refused", tmp.hex, NULL, "bad hold request (user %" PRId64 ")",
                q->user_id);
        s_hold_refuse(srv, &tmp, 400, "invalid_request", "bad hold request");
        return;
    }
    if (srv->n_holds >= srv->batch)
        s_flush_holds(srv);
    s_hold_in_t *arr = s_grow(srv->holds, &srv->cap_holds, srv->n_holds, sizeof *arr, srv->batch);
    if (!arr) {
        s_hold_refuse(srv, &tmp, 503, "billing_unavailable", "billing is out of memory");
        return;
    }
    srv->holds = arr;
    arr[srv->n_holds++] = tmp;
    if (srv->n_holds >= srv->batch)
        s_flush_holds(srv);
    else
        s_arm_turn(srv);
}

/* ---- usage reports ----------------------------------------------------------------------- */

/* usage.ack to the report's sender, after its commit. */
static void s_usage_ack(bl_server_t *srv, const s_usage_in_t *r)
{
    bus_env_t env;
    bus_env_init(&env, BUS_T_USAGE_ACK, r->u.req_id);
    env.u.usage_ack.source = bus_str_c(r->u.source);
    env.u.usage_ack.attempt = r->u.attempt;
    if (r->from_tunnel) {
        env.u.usage_ack.agent_id = bus_str_c(r->u.agent_id);
        s_to_tunnel(srv, &env);
    } else {
        s_reply(srv, r->ident, r->ident_len, &env);
    }
    bus_metric_inc(srv->m.acks_sent);
}

/* Queues a usage.report for this turn's batch. from_tunnel: an agent's, through hub-tunnel
 * (which stamped agent_id); otherwise a gateway's. Each path may carry only its own source, so
 * that an agent can never speak for a gateway. */
static void s_on_usage_report(bl_server_t *srv, const uint8_t *ident, size_t ident_len,
                              bool from_tunnel, const bus_env_t *env)
{
    const bus_usage_report_t *r = &env->u.usage_report;
    s_usage_in_t tmp;
    memset(&tmp, 0, sizeof tmp);
    const char *want = from_tunnel ? "agent" : "gateway";
    const char *bad = NULL;
    if (!env->has_req_id)
        bad = "no req_id";
    else if (!bus_str_is(r->source, want))
        bad = from_tunnel ? "source must be \"agent\" through the tunnel"
                          : "source must be \"gateway\" on billing_router";
    else if (r->attempt < 1 || r->attempt > UINT32_MAX)
        bad = "attempt out of range";
    else if (!bus_str_copy(r->agent_id, tmp.u.agent_id, sizeof tmp.u.agent_id) ||
             (from_tunnel && !tmp.u.agent_id[0]))
        bad = "bad agent_id";
    else if (!bus_str_copy(r->model, tmp.u.model, sizeof tmp.u.model))
        bad = "bad model";
    else if (r->input_tokens > INT64_MAX || r->cached_tokens > INT64_MAX ||
             r->output_tokens > INT64_MAX || r->status > INT_MAX || r->user_id < 0)
        bad = "figures out of range";
    char hex[33] = "";
    if (env->has_req_id)
        bus_req_id_hex(env->req_id, hex);
    if (bad) {
        bus_metric_inc(srv->m.decode_errors);
        log_req(LOG_LVL_WARN, "bad_usage_report", hex[0] ? hex : NULL, NULL, "%s: not stored", bad);
        return;
    }
    memcpy(tmp.u.req_id, env->req_id, 16);
    snprintf(tmp.u.source, sizeof tmp.u.source, "%s", want);
    tmp.u.attempt = (uint32_t)r->attempt;
    tmp.u.user_id = r->user_id;
    tmp.u.status = (int)r->status;
    tmp.u.delivered = r->delivered;
    tmp.u.complete = r->complete;
    tmp.u.estimated = r->estimated;
    tmp.u.input_tokens = (int64_t)r->input_tokens;
    tmp.u.cached_tokens = (int64_t)r->cached_tokens;
    tmp.u.output_tokens = (int64_t)r->output_tokens;
    tmp.from_tunnel = from_tunnel;
    if (!from_tunnel) {
        memcpy(tmp.ident, ident, ident_len);
        tmp.ident_len = (uint8_t)ident_len;
    }
    if (srv->n_usage >= srv->batch)
        s_flush_usage(srv);
    s_usage_in_t *arr = s_grow(srv->usage, &srv->cap_usage, srv->n_usage, sizeof *arr, srv->batch);
    if (!arr)
        return; /* not acknowledged: the sender sends it again */
    srv->usage = arr;
    arr[srv->n_usage++] = tmp;
    if (srv->n_usage >= srv->batch)
        s_flush_usage(srv);
    else
        s_arm_turn(srv);
}

/* Stores every report read this turn (one store_usage_put), then acknowledges them. The store
 * drops a report of a request settled already (a late re-send): it is acknowledged all the
 * same, since it changes nothing. Nothing is acknowledged that did not commit. */
static void s_flush_usage(bl_server_t *srv)
{
    size_t n = srv->n_usage;
    if (n == 0)
        return;
    srv->n_usage = 0;
    s_usage_in_t *in = srv->usage;
    store_t *st = s_store(srv);
    if (!st)
        return; /* nothing acknowledged: the senders send again */
    store_usage_t *put = calloc(n, sizeof *put);
    if (!put)
        return;
    int64_t now = s_now_ms();
    for (size_t i = 0; i < n; i++) {
        in[i].u.received_at = now;
        in[i].state = 0;
        put[i] = in[i].u;
    }
    int rc = store_usage_put(st, put, n);
    if (rc == 0)
        log_debug("reports_stored", "%zu usage report(s) in one transaction", n);
    if (rc != 0 && n > 1) {
        /* One report the store refuses must not hold back the others. */
        s_store_error(srv, rc, "storing a batch of usage reports (retrying one by one)", NULL);
        rc = 0;
        for (size_t i = 0; i < n; i++) {
            st = s_store(srv);
            int r1 = st ? store_usage_put(st, &in[i].u, 1) : -ENOTCONN;
            if (r1 != 0) {
                in[i].state = -1;
                char hex[33];
                bus_req_id_hex(in[i].u.req_id, hex);
                if (st)
                    s_store_error(srv, r1, "storing a usage report", hex);
            }
        }
    } else if (rc != 0) {
        char hex[33];
        bus_req_id_hex(in[0].u.req_id, hex);
        s_store_error(srv, rc, "storing a usage report", hex);
    }
    for (size_t i = 0; i < n; i++) {
        if (rc != 0 || in[i].state < 0)
            continue; /* not durable: not acknowledged */
        bus_metric_inc(in[i].from_tunnel ? srv->m.reports_agent : srv->m.reports_gateway);
        s_usage_ack(srv, &in[i]);
    }
    srv->settle_due = true;
    free(put);
}

/* ---- settlement -------------------------------------------------------------------------- */

/* Orders reports by req_id, so that each request's reports are adjacent. */
static int s_cmp_usage(const void *a, const void *b)
{
    return memcmp(((const store_usage_t *)a)->req_id, ((const store_usage_t *)b)->req_id, 16);
}

/* One settlement being prepared, with what its log line needs. */
typedef struct {
    const char *why; /* bl_decision_t.why (static text) */
} s_note_t;

/* A settlement is committed: count it, log it and hand its row to delivery. */
static void s_settled(bl_server_t *srv, const store_settle_t *it, const s_note_t *note)
{
    char hex[33];
    bus_req_id_hex(it->req_id, hex);
    if (it->outcome != STORE_OUTCOME_BILLED) {
        bus_metric_inc(srv->m.settled_nothing);
        log_req(LOG_LVL_INFO, "settled", hex, NULL, "nothing to charge: %s", note->why);
        return;
    }
    const ledger_row_t *row = &it->row;
    bus_metric_inc(srv->m.settled_billed);
    bus_metric_add(srv->m.revenue, row->cost);
    bus_metric_add(srv->m.fee, row->fee);
    char cost[MONEY_TEXT_MAX];
    money_format(row->cost, cost);
    log_req(LOG_LVL_INFO, "settled", hex, row->agent_id,
            "user %" PRId64 " charged %s for %s (attempt %u, %" PRId64 " in / %" PRId64
            " cached / %" PRId64 " out%s): ledger row %" PRIu64 ", %s",
            row->user_id, cost, row->model, row->attempt, row->input_tokens, row->cached_tokens,
            row->output_tokens, row->estimated ? ", estimated" : "", row->seq, note->why);
    int rc = bl_ledger_committed(srv->ledger, row);
    if (rc != 0) {
        log_req(LOG_LVL_ERR, "ledger_head_mismatch", hex, row->agent_id,
                "row %" PRIu64 " does not follow the head in memory: reloading", row->seq);
        if (srv->st)
            bl_ledger_reload_head(srv->ledger, srv->st, row->agent_id);
    }
}

/* Sets a billed item's chain position from the committed head and seals its row again. */
static int s_reseal(bl_server_t *srv, store_settle_t *it)
{
    uint64_t seq = 0;
    uint8_t prev[LEDGER_HASH_LEN];
    bl_ledger_head(srv->ledger, it->row.agent_id, &seq, prev);
    it->row.seq = seq + 1;
    return ledger_seal(&it->row, seq ? prev : NULL);
}

/* Marks a request that cannot settle, so that later passes skip it (logged once). */
static void s_poison(bl_server_t *srv, const uint8_t req_id[16], const char *why)
{
    char hex[33];
    bus_req_id_hex(req_id, hex);
    if (strmap_get(srv->poisoned, hex))
        return;
    strmap_put(srv->poisoned, hex, srv);
    log_req(LOG_LVL_ERR, "settle_failed", hex, NULL, "%s: left unsettled", why);
}

/* Commits a batch of settlements with one store_settle. When the store refuses it because of
 * one item (settled already, or a chain position that does not follow), the heads are read
 * again and the items go one by one, the culprit left out. false when the store is away. */
static bool s_commit(bl_server_t *srv, store_settle_t *items, const s_note_t *notes, size_t n)
{
    if (n == 0)
        return true;
    store_t *st = srv->st;
    int rc = st ? store_settle(st, items, n) : -ENOTCONN;
    if (rc == 0) {
        log_debug("settled_batch", "%zu settlement(s) in one transaction", n);
        for (size_t i = 0; i < n; i++)
            s_settled(srv, &items[i], &notes[i]);
        return true;
    }
    if (!st)
        return false;
    s_store_error(srv, rc, "settling a batch", NULL);
    if (rc != -EALREADY && rc != -ESTALE && rc != -EINVAL && rc != -EEXIST && rc != -ENOENT)
        return false; /* the connection: retried on the next pass */
    for (size_t i = 0; i < n; i++) {
        if (items[i].outcome == STORE_OUTCOME_BILLED &&
            bl_ledger_reload_head(srv->ledger, st, items[i].row.agent_id) != 0) {
            s_store_error(srv, -EIO, "reading a chain head", NULL);
            return false;
        }
    }
    for (size_t i = 0; i < n; i++) {
        store_settle_t *it = &items[i];
        int r1 = -ESTALE;
        for (int tries = 0; tries < 2 && r1 == -ESTALE; tries++) {
            if (tries && it->outcome == STORE_OUTCOME_BILLED &&
                bl_ledger_reload_head(srv->ledger, st, it->row.agent_id) != 0)
                return false;
            if (it->outcome == STORE_OUTCOME_BILLED && s_reseal(srv, it) != 0) {
                r1 = -EINVAL;
                break;
            }
            r1 = store_settle(st, it, 1);
        }
        if (r1 == 0) {
            s_settled(srv, it, &notes[i]);
        } else if (r1 == -EALREADY || r1 == -ESTALE || r1 == -EINVAL || r1 == -EEXIST ||
                   r1 == -ENOENT) {
            char why[96];
            snprintf(why, sizeof why, "the store refused its settlement (%s)", strerror(-r1));
            s_poison(srv, it->req_id, why);
        } else {
            s_store_error(srv, r1, "settling a request", NULL);
            return false;
        }
    }
    return true;
}

/* The next ledger position of an agent within the batch being built: the head in memory,
 * moved by the rows of the batch so far (tent maps agent id → its latest row in the batch). */
static void s_batch_head(bl_server_t *srv, strmap_t *tent, const char *agent_id, uint64_t *seq,
                         uint8_t prev[LEDGER_HASH_LEN])
{
    const ledger_row_t *last = strmap_get(tent, agent_id);
    if (last) {
        *seq = last->seq;
        memcpy(prev, last->hash, LEDGER_HASH_LEN);
    } else {
        bl_ledger_head(srv->ledger, agent_id, seq, prev);
    }
}

/* Judges one request from its reports and prepares its settlement into *it. 1 prepared, 0 not
 * yet (or skipped), -1 the store failed. */
static int s_prepare(bl_server_t *srv, store_t *st, const store_usage_t *reports, size_t n,
                     int64_t now, strmap_t *tent, store_settle_t *it, s_note_t *note)
{
    char hex[33];
    bus_req_id_hex(reports[0].req_id, hex);
    store_hold_t hold;
    int rc = store_hold_get(st, reports[0].req_id, &hold);
    if (rc != 0 && rc != -ENOENT) {
        s_store_error(srv, rc, "reading a hold", hex);
        return -1;
    }
    const store_hold_t *h = rc == 0 ? &hold : NULL;
    bl_decision_t d;
    bl_settle_decide(reports, n, h, now, srv->cfg->billing_agent_grace_ms, &d);
    if (d.verdict == BL_WAIT) {
        int64_t oldest = INT64_MAX;
        for (size_t i = 0; i < n; i++)
            if (reports[i].received_at < oldest)
                oldest = reports[i].received_at;
        int64_t due = oldest + srv->cfg->billing_agent_grace_ms;
        if (due < srv->next_wait_ms)
            srv->next_wait_ms = due;
        return 0;
    }
    memset(it, 0, sizeof *it);
    memcpy(it->req_id, reports[0].req_id, 16);
    it->user_id = d.user_id;
    it->settled_at = now;
    note->why = d.why;
    if (d.verdict == BL_NOTHING) {
        it->outcome = STORE_OUTCOME_NOTHING;
        return 1;
    }
    it->outcome = STORE_OUTCOME_BILLED;
    /* The price in force when the request started (its hold), else now. */
    int64_t at = (h && h->state != STORE_HOLD_REFUSED) ? h->created_at : now;
    const store_price_t *price = bl_price_at(&srv->prices, d.model, at);
    if (!price)
        log_req(LOG_LVL_WARN, "unpriced_settlement", hex, d.agent_id,
                "model \"%s\" had no price at %" PRId64 ": charged 0", d.model, at);
    uint64_t seq = 0;
    uint8_t prev[LEDGER_HASH_LEN];
    s_batch_head(srv, tent, d.agent_id, &seq, prev);
    rc = bl_build_row(&d, it->req_id, price, h, srv->cfg->billing_fee_ppm, now, seq + 1,
                      seq ? prev : NULL, &it->row);
    if (rc != 0) {
        char why[96];
        snprintf(why, sizeof why, "its ledger row cannot be built (%s)", strerror(-rc));
        s_poison(srv, it->req_id, why);
        return 0;
    }
    if (strmap_put(tent, it->row.agent_id, &it->row) != 0)
        return 0;
    return 1;
}

/* One settlement pass: reads pending reports, settles what can be settled, in batches. */
static void s_settle(bl_server_t *srv)
{
    store_t *st = s_store(srv);
    int64_t now = s_now_ms();
    if (!st || (!srv->settle_due && now < srv->next_wait_ms))
        return;
    size_t limit = srv->batch * 4;
    if (limit < 64)
        limit = 64;
    if (limit > 16384)
        limit = 16384; /* bounds the memory of one pass; the rest comes on the next */
    store_usage_t *u = NULL;
    size_t n = 0;
    int rc = store_usage_pending(st, limit, &u, &n);
    if (rc != 0) {
        s_store_error(srv, rc, "reading pending usage reports", NULL);
        free(u);
        return;
    }
    srv->settle_due = false;
    srv->next_wait_ms = INT64_MAX;
    if (n == 0) {
        free(u);
        return;
    }
    bool truncated = n >= limit;
    qsort(u, n, sizeof *u, s_cmp_usage);
    size_t cap = n < srv->batch ? n : srv->batch; /* settlements per transaction */
    store_settle_t *items = calloc(cap, sizeof *items);
    s_note_t *notes = calloc(cap, sizeof *notes);
    strmap_t *tent = strmap_new();
    size_t k = 0, settled = 0;
    bool ok = items && notes && tent;
    for (size_t i = 0; ok && i < n;) {
        size_t j = i + 1;
        while (j < n && memcmp(u[j].req_id, u[i].req_id, 16) == 0)
            j++;
        char hex[33];
        bus_req_id_hex(u[i].req_id, hex);
        if (strmap_get(srv->poisoned, hex)) {
            i = j;
            continue;
        }
        /* A read cut short may have left some of this request's reports out: take them all. */
        store_usage_t *all = NULL;
        size_t n_all = 0;
        const store_usage_t *reports = &u[i];
        size_t n_rep = j - i;
        if (truncated) {
            rc = store_usage_of(st, u[i].req_id, &all, &n_all);
            if (rc != 0) {
                s_store_error(srv, rc, "reading a request's reports", hex);
                free(all);
                ok = false;
                break;
            }
            reports = all;
            n_rep = n_all;
        }
        int p = n_rep ? s_prepare(srv, st, reports, n_rep, now, tent, &items[k], &notes[k]) : 0;
        free(all);
        if (p < 0) {
            ok = false;
            break;
        }
        if (p > 0 && ++k == cap) {
            ok = s_commit(srv, items, notes, k);
            settled += k;
            k = 0;
            strmap_destroy(&tent);
            tent = strmap_new();
            ok = ok && tent;
            st = srv->st;
            ok = ok && st;
        }
        i = j;
    }
    if (ok && k > 0) {
        ok = s_commit(srv, items, notes, k);
        settled += k;
    }
    if (!ok)
        srv->settle_due = true; /* try again on the next pass */
    else if (truncated && settled > 0)
        srv->settle_due = true; /* more are waiting */
    strmap_destroy(&tent);
    free(items);
    free(notes);
    free(u);
}

/* ---- the end of a loop turn, and timers -------------------------------------------------- */

/* Writes and answers what this turn read, then records acks and settles new reports. */
static void s_end_of_turn(bl_server_t *srv)
{
    srv->turn_armed = false;
    s_flush_holds(srv);
    s_flush_usage(srv);
    store_t *st = s_store(srv);
    if (st) {
        int rc = bl_ledger_flush_acks(srv->ledger, st);
        if (rc != 0)
            s_store_error(srv, rc, "recording ledger acks", NULL);
    }
    if (srv->settle_due)
        s_settle(srv);
}

static void s_turn(bus_timer_t *t)
{
    s_end_of_turn(t->arg);
}

static void s_settle_tick(bus_timer_t *t)
{
    bl_server_t *srv = t->arg;
    s_settle(srv);
    bus_timer_start(srv->loop, &srv->settle_timer, s_settle_tick, srv, S_SETTLE_US);
}

static void s_ledger_tick(bus_timer_t *t)
{
    bl_server_t *srv = t->arg;
    bl_ledger_tick(srv->ledger, s_store(srv), plat_mono_us());
    int64_t period = srv->cfg->billing_resend_ms * 1000 / 4;
    if (period < 50000)
        period = 50000;
    if (period > 500000)
        period = 500000;
    bus_timer_start(srv->loop, &srv->ledger_timer, s_ledger_tick, srv, period);
}

/* Applies queued top-ups now. */
static void s_apply_topups(bl_server_t *srv)
{
    store_t *st = s_store(srv);
    if (!st)
        return;
    size_t applied = 0;
    int rc = store_topups_apply(st, s_now_ms(), &applied);
    if (rc != 0) {
        s_store_error(srv, rc, "applying top-ups", NULL);
        return;
    }
    if (applied) {
        bus_metric_add(srv->m.topups, (int64_t)applied);
        log_info("topups_applied", "%zu top-up(s) applied", applied);
    }
}

/* Re-reads the price table if it changed. */
static void s_check_prices(bl_server_t *srv, bool force)
{
    store_t *st = s_store(srv);
    if (!st)
        return;
    int rc = s_prices_refresh(srv, st, force);
    if (rc != 0)
        s_store_error(srv, rc, "reading prices", NULL);
}

static void s_poll_tick(bus_timer_t *t)
{
    bl_server_t *srv = t->arg;
    s_apply_topups(srv);
    s_check_prices(srv, false);
    bus_timer_start(srv->loop, &srv->poll_timer, s_poll_tick, srv,
                    srv->cfg->billing_poll_ms * 1000);
}

static void s_slow_tick(bus_timer_t *t)
{
    bl_server_t *srv = t->arg;
    store_t *st = s_store(srv);
    if (st) {
        size_t expired = 0;
        int rc = store_holds_expire(st, s_now_ms(), &expired);
        if (rc != 0) {
            s_store_error(srv, rc, "expiring holds", NULL);
        } else if (expired) {
            bus_metric_add(srv->m.holds_expired, (int64_t)expired);
            log_info("holds_expired", "%zu hold(s) expired unsettled", expired);
        }
    }
    st = s_store(srv);
    if (st) {
        int64_t amount = 0, count = 0;
        int rc = store_holds_outstanding(st, &amount, &count);
        if (rc != 0) {
            s_store_error(srv, rc, "reading outstanding holds", NULL);
        } else {
            bus_metric_set(srv->m.held_amount, amount);
            bus_metric_set(srv->m.held_count, count);
        }
    }
    bus_timer_start(srv->loop, &srv->slow_timer, s_slow_tick, srv, S_SLOW_US);
}

/* ---- sockets ----------------------------------------------------------------------------- */

/* An error envelope back to a ROUTER peer (a malformed or unexpected message). */
static void s_reply_error(bl_server_t *srv, const uint8_t *ident, size_t ident_len,
                          const bus_env_t *req, int code, const char *message)
{
    bus_env_t r;
    bus_env_init(&r, BUS_T_ERROR, req && req->has_req_id ? req->req_id : NULL);
    r.u.error.code = code;
    r.u.error.message = bus_str_c(message);
    s_reply(srv, ident, ident_len, &r);
}

/* hubctl: apply top-ups / re-read prices now. */
static void s_on_poke(bl_server_t *srv, const bus_billing_poke_t *p)
{
    if (bus_str_is(p->what, "topups")) {
        s_apply_topups(srv);
    } else if (bus_str_is(p->what, "prices")) {
        s_check_prices(srv, true);
    } else {
        log_warn("bad_poke", "billing.poke for \"%.*s\": ignored", (int)p->what.len, p->what.p);
        return;
    }
    log_debug("poke", "%.*s", (int)p->what.len, p->what.p);
}

/* One message on the ROUTER: [identity][envelope]. */
static void s_on_router(void *arg, void *zsock)
{
    bl_server_t *srv = arg;
    zmq_msg_t parts[2];
    int n = bus_zrecv_parts(zsock, parts, 2);
    if (n < 2) {
        for (int i = 0; i < n; i++)
            zmq_msg_close(&parts[i]);
        return;
    }
    const uint8_t *ident = zmq_msg_data(&parts[0]);
    size_t il = zmq_msg_size(&parts[0]);
    if (il > S_IDENT_MAX)
        il = S_IDENT_MAX;
    const uint8_t *buf = zmq_msg_data(&parts[1]);
    size_t len = zmq_msg_size(&parts[1]);
    bus_metric_inc(srv->m.msgs_in);
    bus_tap_mirror(srv->tap, "in", "gateway", buf, len);
    bus_env_t env;
    char err[160] = "";
    int rc = bus_env_decode(buf, len, &env, err, sizeof err);
    if (rc != 0) {
        bus_metric_inc(srv->m.decode_errors);
        log_warn("bad_bus_message", "%s", err);
        s_reply_error(srv, ident, il, &env, 400, err);
    } else if (env.type == BUS_T_HOLD_REQ) {
        s_on_hold_req(srv, ident, il, &env);
    } else if (env.type == BUS_T_USAGE_REPORT) {
        s_on_usage_report(srv, ident, il, false, &env);
    } else if (env.type == BUS_T_BILLING_POKE) {
        s_on_poke(srv, &env.u.billing_poke);
    } else {
        log_warn("unexpected_message", "%s on billing_router: not handled",
                 bus_type_name(env.type));
        s_reply_error(srv, ident, il, &env, 501, "message type not handled by hub-billing");
    }
    zmq_msg_close(&parts[0]);
    zmq_msg_close(&parts[1]);
}

/* The agent id hub-tunnel stamped on a forwarded message, or false. */
static bool s_stamped_agent(bus_str_t s, char out[LEDGER_AGENT_ID_MAX + 1])
{
    return s.len > 0 && bus_str_copy(s, out, LEDGER_AGENT_ID_MAX + 1);
}

/* One message from hub-tunnel: an agent's report, ack, nack or sync. */
static void s_on_dealer(void *arg, void *zsock)
{
    bl_server_t *srv = arg;
    zmq_msg_t msg;
    if (bus_zrecv_parts(zsock, &msg, 1) == 0)
        return;
    const uint8_t *buf = zmq_msg_data(&msg);
    size_t len = zmq_msg_size(&msg);
    bus_metric_inc(srv->m.msgs_in);
    bus_tap_mirror(srv->tap, "in", "tunnel", buf, len);
    bus_env_t env;
    char err[160] = "";
    char agent[LEDGER_AGENT_ID_MAX + 1];
    uint64_t now = plat_mono_us();
    if (bus_env_decode(buf, len, &env, err, sizeof err) != 0) {
        bus_metric_inc(srv->m.decode_errors);
        log_warn("bad_bus_message", "from the tunnel: %s", err);
    } else if (env.type == BUS_T_USAGE_REPORT) {
        s_on_usage_report(srv, NULL, 0, true, &env);
    } else if (env.type == BUS_T_LEDGER_ACK) {
        if (s_stamped_agent(env.u.ledger_ack.agent_id, agent)) {
            bl_ledger_on_ack(srv->ledger, s_store(srv), agent, &env.u.ledger_ack, now);
            s_arm_turn(srv); /* record the ack at the end of the turn */
        }
    } else if (env.type == BUS_T_LEDGER_NACK) {
        if (s_stamped_agent(env.u.ledger_nack.agent_id, agent)) {
            bl_ledger_on_nack(srv->ledger, s_store(srv), agent, &env.u.ledger_nack, now);
            s_arm_turn(srv);
        }
    } else if (env.type == BUS_T_LEDGER_SYNC) {
        if (s_stamped_agent(env.u.ledger_sync.agent_id, agent)) {
            bl_ledger_on_sync(srv->ledger, s_store(srv), agent, &env.u.ledger_sync, now);
            s_arm_turn(srv);
        }
    } else if (env.type == BUS_T_ERROR) {
        log_debug("tunnel_error", "hub-tunnel answered %" PRId64 ": %.*s", env.u.error.code,
                  (int)env.u.error.message.len, env.u.error.message.p);
    } else {
        log_warn("unexpected_message", "%s from the tunnel: not handled", bus_type_name(env.type));
    }
    zmq_msg_close(&msg);
}

/* One presence event. */
static void s_on_presence(void *arg, void *zsock)
{
    bl_server_t *srv = arg;
    zmq_msg_t msg;
    if (bus_zrecv_parts(zsock, &msg, 1) == 0)
        return;
    bus_tap_mirror(srv->tap, "in", "presence", zmq_msg_data(&msg), zmq_msg_size(&msg));
    bus_env_t env;
    char err[160];
    if (bus_env_decode(zmq_msg_data(&msg), zmq_msg_size(&msg), &env, err, sizeof err) == 0 &&
        env.type == BUS_T_PRESENCE)
        bl_ledger_presence(srv->ledger, s_store(srv), &env.u.presence, plat_mono_us());
    zmq_msg_close(&msg);
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static void s_register_metrics(bl_server_t *srv)
{
    bus_metrics_t *m = srv->metrics;
    s_metrics_t *x = &srv->m;
    const char *hf = "relayhub_billing_holds_total";
    const char *hh = "hold requests answered, by result";
    x->holds_granted = bus_metrics_add(m, BUS_COUNTER, hf, "result=\"granted\"", hh);
    x->holds_refused = bus_metrics_add(m, BUS_COUNTER, hf, "result=\"insufficient\"", hh);
    x->holds_unpriced = bus_metrics_add(m, BUS_COUNTER, hf, "result=\"unpriced\"", hh);
    x->holds_failed = bus_metrics_add(m, BUS_COUNTER, hf, "result=\"error\"", hh);
    x->held_amount = bus_metrics_add(m, BUS_GAUGE, "relayhub_billing_holds_outstanding_micros",
                                     NULL, "sum of active holds, micro-units");
    x->held_count =
        bus_metrics_add(m, BUS_GAUGE, "relayhub_billing_holds_outstanding", NULL, "active holds");
    x->holds_expired = bus_metrics_add(m, BUS_COUNTER, "relayhub_billing_holds_expired_total", NULL,
                                       "holds released by their expiry");
    const char *uf = "relayhub_billing_usage_reports_total";
    const char *uh = "usage reports stored and acknowledged, by source";
    x->reports_gateway = bus_metrics_add(m, BUS_COUNTER, uf, "source=\"gateway\"", uh);
    x->reports_agent = bus_metrics_add(m, BUS_COUNTER, uf, "source=\"agent\"", uh);
    x->acks_sent = bus_metrics_add(m, BUS_COUNTER, "relayhub_billing_usage_acks_total", NULL,
                                   "usage.ack sent");
    const char *sf = "relayhub_billing_settled_total";
    const char *sh = "requests settled, by outcome";
    x->settled_billed = bus_metrics_add(m, BUS_COUNTER, sf, "outcome=\"billed\"", sh);
    x->settled_nothing = bus_metrics_add(m, BUS_COUNTER, sf, "outcome=\"nothing\"", sh);
    x->revenue = bus_metrics_add(m, BUS_COUNTER, "relayhub_billing_revenue_micros_total", NULL,
                                 "sum of the cost of billed requests, micro-units");
    x->fee = bus_metrics_add(m, BUS_COUNTER, "relayhub_billing_fee_micros_total", NULL,
                             "the hub's fee on billed requests, micro-units");
    x->rows_sent = bus_metrics_add(m, BUS_COUNTER, "relayhub_billing_ledger_rows_sent_total", NULL,
                                   "ledger.tx sent to agents");
    x->resync_rows = bus_metrics_add(m, BUS_COUNTER, "relayhub_billing_resync_rows_total", NULL,
                                     "ledger rows sent again (after a sync, a nack or a resend)");
    x->prices_sent = bus_metrics_add(m, BUS_COUNTER, "relayhub_billing_price_rows_sent_total", NULL,
                                     "price.table sent to agents");
    x->disputes = bus_metrics_add(m, BUS_COUNTER, "relayhub_billing_disputes_total", NULL,
                                  "ledger rows an agent acknowledged as disputed");
    x->agents = bus_metrics_add(m, BUS_GAUGE, "relayhub_billing_agents_connected", NULL,
                                "agents presence says are connected");
    x->topups = bus_metrics_add(m, BUS_COUNTER, "relayhub_billing_topups_applied_total", NULL,
                                "top-ups applied to balances");
    x->store_errors = bus_metrics_add(m, BUS_COUNTER, "relayhub_billing_store_errors_total", NULL,
                                      "store calls that failed");
    x->msgs_in =
        bus_metrics_add(m, BUS_COUNTER, "relayhub_messages_in_total", NULL, "envelopes received");
    x->msgs_out =
        bus_metrics_add(m, BUS_COUNTER, "relayhub_messages_out_total", NULL, "envelopes sent");
    x->decode_errors = bus_metrics_add(m, BUS_COUNTER, "relayhub_decode_errors_total", NULL,
                                       "malformed envelopes or reports received");
    x->send_errors = bus_metrics_add(m, BUS_COUNTER, "relayhub_billing_send_errors_total", NULL,
                                     "envelopes that could not be sent (peer away, queue full)");
}

/* Socket options every billing socket gets: no linger (nothing relies on queued messages),
 * bounded queues and envelope size. */
static void s_sockopts(void *s)
{
    int zero = 0, hwm = S_HWM;
    int64_t maxmsg = (int64_t)BUS_ENV_MAX_BYTES;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
}

bl_server_t *bl_server_new(bus_loop_t *loop, const hub_config_t *cfg)
{
    bl_server_t *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    srv->cfg = cfg;
    srv->loop = loop;
    srv->batch = (size_t)cfg->billing_batch;
    srv->prices.rev = -1;
    srv->next_wait_ms = INT64_MAX;
    bus_buf_init(&srv->enc, BUS_ENV_MAX_BYTES);
    char err[256];
    if (bl_unpriced_parse(cfg->billing_unpriced, &srv->unpriced) != 0) {
        log_err("config", "billing.unpriced: must be refuse or free");
        goto fail;
    }
    if (hub_config_store_params(cfg, &srv->sp, err, sizeof err) != 0) {
        log_err("config", "%s", err);
        goto fail;
    }
    srv->metrics = bus_metrics_new("hub-billing");
    srv->poisoned = strmap_new();
    if (!srv->metrics || !srv->poisoned)
        goto fail;
    s_register_metrics(srv);
    bl_ledger_metrics_t lm = {srv->m.rows_sent, srv->m.resync_rows,  srv->m.prices_sent,
                              srv->m.disputes,  srv->m.store_errors, srv->m.agents};
    srv->ledger = bl_ledger_new(s_to_tunnel, srv, &srv->prices, &lm, cfg->billing_resend_ms);
    if (!srv->ledger)
        goto fail;
    void *z = bus_loop_zctx(loop);
    srv->router = zmq_socket(z, ZMQ_ROUTER);
    srv->dealer = zmq_socket(z, ZMQ_DEALER);
    srv->sub = zmq_socket(z, ZMQ_SUB);
    if (!srv->router || !srv->dealer || !srv->sub)
        goto fail;
    int one = 1;
    s_sockopts(srv->router);
    s_sockopts(srv->dealer);
    s_sockopts(srv->sub);
    zmq_setsockopt(srv->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    /* A restarted gateway that reuses its identity takes over its old connection. */
    zmq_setsockopt(srv->router, ZMQ_ROUTER_HANDOVER, &one, sizeof one);
    zmq_setsockopt(srv->dealer, ZMQ_ROUTING_ID, S_BILLING_IDENT, strlen(S_BILLING_IDENT));
    /* Queue nothing for a tunnel that is not connected: rows are re-sent from the store. */
    zmq_setsockopt(srv->dealer, ZMQ_IMMEDIATE, &one, sizeof one);
    zmq_setsockopt(srv->sub, ZMQ_SUBSCRIBE, "", 0);
    if (zmq_bind(srv->router, cfg->billing_router) != 0) {
        log_err("bus_bind_failed", "cannot bind %s: %s", cfg->billing_router, zmq_strerror(errno));
        goto fail;
    }
    /* connect, not bind: a tunnel that is not up yet is waited for. */
    if (zmq_connect(srv->dealer, cfg->tunnel_router) != 0 ||
        zmq_connect(srv->sub, cfg->tunnel_presence) != 0) {
        log_err("bus_connect_failed", "cannot connect to the tunnel: %s", zmq_strerror(errno));
        goto fail;
    }
    srv->router_watch = bus_zwatch_new(loop, srv->router, s_on_router, srv);
    srv->dealer_watch = bus_zwatch_new(loop, srv->dealer, s_on_dealer, srv);
    srv->sub_watch = bus_zwatch_new(loop, srv->sub, s_on_presence, srv);
    if (!srv->router_watch || !srv->dealer_watch || !srv->sub_watch)
        goto fail;
    int terr = 0;
    srv->tap = bus_tap_new(loop, cfg->billing_tap, "hub-billing", &terr);
    if (terr)
        goto fail;
    if (bus_metrics_serve(srv->metrics, loop, cfg->billing_metrics_listen) != 0)
        goto fail;
    s_store(srv); /* a store that is away is retried by every use */
    bus_timer_start(loop, &srv->settle_timer, s_settle_tick, srv, S_SETTLE_US);
    bus_timer_start(loop, &srv->ledger_timer, s_ledger_tick, srv, S_SETTLE_US);
    bus_timer_start(loop, &srv->poll_timer, s_poll_tick, srv, 0);
    bus_timer_start(loop, &srv->slow_timer, s_slow_tick, srv, S_SLOW_US);
    log_info("started", "hub-billing on %s (tunnel %s, presence %s), store %s", cfg->billing_router,
             cfg->tunnel_router, cfg->tunnel_presence, cfg->store_backend);
    return srv;
fail:
    bl_server_destroy(&srv);
    return NULL;
}

void bl_server_destroy(bl_server_t **p)
{
    if (!p || !*p)
        return;
    bl_server_t *srv = *p;
    bus_timer_cancel(srv->loop, &srv->turn);
    bus_timer_cancel(srv->loop, &srv->settle_timer);
    bus_timer_cancel(srv->loop, &srv->ledger_timer);
    bus_timer_cancel(srv->loop, &srv->poll_timer);
    bus_timer_cancel(srv->loop, &srv->slow_timer);
    bus_tap_destroy(&srv->tap);
    bus_zwatch_destroy(&srv->router_watch);
    bus_zwatch_destroy(&srv->dealer_watch);
    bus_zwatch_destroy(&srv->sub_watch);
    if (srv->router)
        zmq_close(srv->router);
    if (srv->dealer)
        zmq_close(srv->dealer);
    if (srv->sub)
        zmq_close(srv->sub);
    bl_ledger_destroy(&srv->ledger);
    store_destroy(&srv->st);
    strmap_destroy(&srv->poisoned);
    bus_metrics_destroy(&srv->metrics);
    free(srv->prices.list);
    free(srv->holds);
    free(srv->usage);
    bus_buf_free(&srv->enc);
    free(srv);
    *p = NULL;
}

/* Stop timer: writes and answers what was read (what cannot be written is not acknowledged,
 * and its senders send it again to the next run), then stops the loop. */
static void s_stop_tick(bus_timer_t *t)
{
    bl_server_t *srv = t->arg;
    bus_timer_cancel(srv->loop, &srv->turn);
    s_end_of_turn(srv);
    log_info("stopped", "hub-billing stopping");
    bus_loop_stop(srv->loop);
}

void bl_server_shutdown(void *arg, int signo)
{
    bl_server_t *srv = arg;
    (void)signo;
    log_info("shutdown", "answering what was read, then stopping");
    bus_timer_cancel(srv->loop, &srv->slow_timer);
    bus_timer_start(srv->loop, &srv->slow_timer, s_stop_tick, srv, 0);
}
