/* gw_billing: holds and usage reports between the gateway and hub-billing (see gw_billing.h). */
#include "gw_billing.h"

#include "bus_log.h"
#include "bus_plat.h"
#include "strmap.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define S_HOLD_RESEND_US 500000ull /* a hold.req without an answer is asked again this often */
#define S_TICK_US 100000           /* resend and timeout checks */
#define S_MODEL_MAX 256

/* A pending hold; in the map and the list until its callback has run or it is cancelled. */
typedef struct s_hold {
    uint8_t req_id[16];
    char key[33];
    int64_t user_id;
    char model[S_MODEL_MAX + 1];
    size_t model_len;
    int64_t body_bytes, max_tokens;
    gw_hold_cb cb;
    void *arg;
    uint64_t first_us, sent_us; /* monotonic: first asked, last asked */
    struct s_hold *prev, *next;
} s_hold_t;

/* An unacknowledged usage report. */
typedef struct s_report {
    uint8_t req_id[16];
    char key[33];
    gw_report_t rep;
    char agent_id[65];
    char model[S_MODEL_MAX + 1];
    uint64_t sent_us;
    struct s_report *prev, *next;
} s_report_t;

struct gw_billing {
    const hub_config_t *cfg;
    bus_loop_t *loop;
    void *dealer;
    bus_zwatch_t *watch;
    bus_tap_t *tap;       /* borrowed */
    strmap_t *holds;      /* req hex → s_hold_t */
    s_hold_t *hold_list;  /* the same, for the timer's walk */
    strmap_t *reports;    /* req hex → s_report_t */
    s_report_t *rep_list; /* the same */
    bus_timer_t tick;     /* resends and timeouts */
    bus_buf_t enc;
    bus_metric_t *m_holds, *m_refused, *m_timeouts, *m_reports, *m_resent, *m_unacked;
};

/* ---- sending -------------------------------------------------------------------------- */

static int s_send(gw_billing_t *b, const bus_env_t *env)
{
    bus_buf_reset(&b->enc);
    int rc = bus_env_encode(env, &b->enc);
    if (rc != 0)
        return rc;
    if (zmq_send(b->dealer, b->enc.data, b->enc.len, ZMQ_DONTWAIT) < 0)
        return -errno;
    bus_tap_mirror(b->tap, "out", "billing", b->enc.data, b->enc.len);
    bus_zwatch_poke(b->watch);
    return 0;
}

static void s_send_hold(gw_billing_t *b, s_hold_t *h)
{
    bus_env_t e;
    bus_env_init(&e, BUS_T_HOLD_REQ, h->req_id);
    e.u.hold_req.user_id = h->user_id;
    e.u.hold_req.model = (bus_str_t){h->model, h->model_len};
    e.u.hold_req.body_bytes = h->body_bytes;
    e.u.hold_req.max_tokens = h->max_tokens;
    h->sent_us = plat_mono_us();
    int rc = s_send(b, &e);
    if (rc != 0)
        log_req(LOG_LVL_DEBUG, "hold_send_failed", h->key, NULL, "%s", strerror(-rc));
}

static void s_send_report(gw_billing_t *b, s_report_t *r)
{
    bus_env_t e;
    bus_env_init(&e, BUS_T_USAGE_REPORT, r->req_id);
    bus_usage_report_t *u = &e.u.usage_report;
    u->source = bus_str_c("gateway");
    u->attempt = r->rep.attempt;
    u->agent_id = bus_str_c(r->agent_id);
    u->user_id = r->rep.user_id;
    u->model = bus_str_c(r->model);
    u->status = r->rep.status > 0 ? (uint64_t)r->rep.status : 0;
    u->delivered = r->rep.delivered;
    u->complete = r->rep.complete;
    u->estimated = r->rep.estimated;
    u->input_tokens = r->rep.input_tokens > 0 ? (uint64_t)r->rep.input_tokens : 0;
    u->cached_tokens = r->rep.cached_tokens > 0 ? (uint64_t)r->rep.cached_tokens : 0;
    u->output_tokens = r->rep.output_tokens > 0 ? (uint64_t)r->rep.output_tokens : 0;
    r->sent_us = plat_mono_us();
    s_send(b, &e);
}

/* ---- bookkeeping ---------------------------------------------------------------------- */

static void s_hold_unlink(gw_billing_t *b, s_hold_t *h)
{
    strmap_del(b->holds, h->key);
    if (h->prev)
        h->prev->next = h->next;
    else
        b->hold_list = h->next;
    if (h->next)
        h->next->prev = h->prev;
}

static void s_report_unlink(gw_billing_t *b, s_report_t *r)
{
    strmap_del(b->reports, r->key);
    if (r->prev)
        r->prev->next = r->next;
    else
        b->rep_list = r->next;
    if (r->next)
        r->next->prev = r->prev;
    bus_metric_set(b->m_unacked, (int64_t)strmap_count(b->reports));
}

/* ---- input ---------------------------------------------------------------------------- */

static void s_on_hold_reply(gw_billing_t *b, const bus_env_t *env)
{
    char key[33];
    bus_req_id_hex(env->req_id, key);
    s_hold_t *h = strmap_get(b->holds, key);
    if (!h)
        return; /* a late answer to a re-sent ask, or the request is gone */
    s_hold_unlink(b, h);
    if (!env->u.hold_reply.ok)
        bus_metric_inc(b->m_refused);
    h->cb(h->arg, &env->u.hold_reply);
    free(h);
}

static void s_on_usage_ack(gw_billing_t *b, const bus_env_t *env)
{
    char key[33];
    bus_req_id_hex(env->req_id, key);
    s_report_t *r = strmap_get(b->reports, key);
    if (!r || r->rep.attempt != env->u.usage_ack.attempt)
        return;
    s_report_unlink(b, r);
    free(r);
}

static void s_on_dealer(void *arg, void *zsock)
{
    gw_billing_t *b = arg;
    zmq_msg_t msg;
    if (bus_zrecv_parts(zsock, &msg, 1) == 0)
        return;
    const uint8_t *buf = zmq_msg_data(&msg);
    size_t len = zmq_msg_size(&msg);
    bus_tap_mirror(b->tap, "in", "billing", buf, len);
    bus_env_t env;
    char err[160];
    if (bus_env_decode(buf, len, &env, err, sizeof err) != 0 || !env.has_req_id) {
        log_warn("bad_bus_message", "from hub-billing: %s", env.has_req_id ? err : "no req_id");
    } else if (env.type == BUS_T_HOLD_REPLY) {
        s_on_hold_reply(b, &env);
    } else if (env.type == BUS_T_USAGE_ACK) {
        s_on_usage_ack(b, &env);
    } else if (env.type == BUS_T_ERROR) {
        log_warn("billing_error", "%.*s", (int)env.u.error.message.len,
                 env.u.error.message.len ? env.u.error.message.p : "");
    }
    zmq_msg_close(&msg);
}

/* Re-asks unanswered holds, gives up on those past gateway.hold_timeout, re-sends reports. */
static void s_tick(bus_timer_t *t)
{
    gw_billing_t *b = t->arg;
    uint64_t now = plat_mono_us();
    uint64_t timeout = (uint64_t)b->cfg->gateway_hold_timeout_ms * 1000;
    s_hold_t *h = b->hold_list;
    while (h) {
        s_hold_t *next = h->next;
        if (now - h->first_us >= timeout) {
            s_hold_unlink(b, h);
            bus_metric_inc(b->m_timeouts);
            log_req(LOG_LVL_WARN, "hold_timeout", h->key, NULL,
                    "hub-billing did not answer in %lld ms",
                    (long long)b->cfg->gateway_hold_timeout_ms);
            h->cb(h->arg, NULL);
            free(h);
            /* The callback may have cancelled others: restart the walk. */
            next = b->hold_list;
        } else if (now - h->sent_us >= S_HOLD_RESEND_US) {
            s_send_hold(b, h);
        }
        h = next;
    }
    uint64_t resend = (uint64_t)b->cfg->gateway_report_resend_ms * 1000;
    for (s_report_t *r = b->rep_list; r; r = r->next)
        if (now - r->sent_us >= resend) {
            bus_metric_inc(b->m_resent);
            s_send_report(b, r);
        }
    bus_timer_start(b->loop, &b->tick, s_tick, b, S_TICK_US);
}

/* ---- API ------------------------------------------------------------------------------ */

gw_billing_t *gw_billing_new(bus_loop_t *loop, const hub_config_t *cfg, const char *ident,
                             bus_tap_t *tap, bus_metrics_t *metrics)
{
    gw_billing_t *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->cfg = cfg;
    b->loop = loop;
    b->tap = tap;
    bus_buf_init(&b->enc, 4096);
    b->holds = strmap_new();
    b->reports = strmap_new();
    b->dealer = zmq_socket(bus_loop_zctx(loop), ZMQ_DEALER);
    if (!b->holds || !b->reports || !b->dealer)
        goto fail;
    int zero = 0, hwm = 100000;
    zmq_setsockopt(b->dealer, ZMQ_ROUTING_ID, ident, strlen(ident));
    zmq_setsockopt(b->dealer, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(b->dealer, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(b->dealer, ZMQ_RCVHWM, &hwm, sizeof hwm);
    /* connect, not bind: hub-billing that is not up yet is waited for (holds re-ask). */
    if (zmq_connect(b->dealer, cfg->billing_router) != 0) {
        log_err("bus_connect_failed", "cannot connect to hub-billing at %s: %s",
                cfg->billing_router, zmq_strerror(errno));
        goto fail;
    }
    b->watch = bus_zwatch_new(loop, b->dealer, s_on_dealer, b);
    if (!b->watch)
        goto fail;
    if (metrics) {
        b->m_holds = bus_metrics_add(metrics, BUS_COUNTER, "relayhub_gateway_holds_total", NULL,
                                     "holds asked of hub-billing");
        b->m_refused = bus_metrics_add(metrics, BUS_COUNTER,
                                       "relayhub_gateway_holds_refused_total", NULL,
                                       "holds refused (insufficient balance, unpriced model)");
        b->m_timeouts = bus_metrics_add(metrics, BUS_COUNTER,
                                        "relayhub_gateway_hold_timeouts_total", NULL,
                                        "holds hub-billing did not answer in time (503)");
        b->m_reports = bus_metrics_add(metrics, BUS_COUNTER,
                                       "relayhub_gateway_usage_reports_total", NULL,
                                       "usage reports sent to hub-billing");
        b->m_resent = bus_metrics_add(metrics, BUS_COUNTER,
                                      "relayhub_gateway_usage_reports_resent_total", NULL,
                                      "usage reports sent again for lack of an acknowledgement");
        b->m_unacked = bus_metrics_add(metrics, BUS_GAUGE,
                                       "relayhub_gateway_usage_reports_unacked", NULL,
                                       "usage reports waiting for hub-billing's acknowledgement");
    }
    bus_timer_start(loop, &b->tick, s_tick, b, S_TICK_US);
    return b;
fail:
    gw_billing_destroy(&b);
    return NULL;
}

void gw_billing_destroy(gw_billing_t **p)
{
    if (!p || !*p)
        return;
    gw_billing_t *b = *p;
    bus_timer_cancel(b->loop, &b->tick);
    while (b->hold_list) {
        s_hold_t *h = b->hold_list;
        s_hold_unlink(b, h);
        free(h);
    }
    if (b->rep_list)
        log_warn("usage_reports_unacked", "%zu usage reports were never acknowledged: hub-billing "
                 "settles those requests from their agents' reports",
                 strmap_count(b->reports));
    while (b->rep_list) {
        s_report_t *r = b->rep_list;
        s_report_unlink(b, r);
        free(r);
    }
    bus_zwatch_destroy(&b->watch);
    if (b->dealer)
        zmq_close(b->dealer);
    strmap_destroy(&b->holds);
    strmap_destroy(&b->reports);
    bus_buf_free(&b->enc);
    free(b);
    *p = NULL;
}

int gw_billing_hold(gw_billing_t *b, const uint8_t req_id[16], int64_t user_id,
                    const char *model, size_t model_len, int64_t body_bytes, int64_t max_tokens,
                    gw_hold_cb cb, void *arg)
{
    if (!b || !cb || model_len > S_MODEL_MAX)
        return -EINVAL;
    char key[33];
    bus_req_id_hex(req_id, key);
    if (strmap_get(b->holds, key))
        return -EEXIST;
    s_hold_t *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    memcpy(h->req_id, req_id, 16);
    memcpy(h->key, key, sizeof key);
    h->user_id = user_id;
    memcpy(h->model, model, model_len);
    h->model_len = model_len;
    h->body_bytes = body_bytes;
    h->max_tokens = max_tokens;
    h->cb = cb;
    h->arg = arg;
    if (strmap_put(b->holds, key, h) != 0) {
        free(h);
        return -ENOMEM;
    }
    h->next = b->hold_list;
    if (h->next)
        h->next->prev = h;
    b->hold_list = h;
    h->first_us = plat_mono_us();
    bus_metric_inc(b->m_holds);
    s_send_hold(b, h);
    return 0;
}

void gw_billing_hold_cancel(gw_billing_t *b, const uint8_t req_id[16])
{
    if (!b)
        return;
    char key[33];
    bus_req_id_hex(req_id, key);
    s_hold_t *h = strmap_get(b->holds, key);
    if (!h)
        return;
    s_hold_unlink(b, h);
    free(h);
}

int gw_billing_report(gw_billing_t *b, const uint8_t req_id[16], const gw_report_t *rep)
{
    if (!b || !rep || rep->attempt < 1)
        return -EINVAL;
    char key[33];
    bus_req_id_hex(req_id, key);
    s_report_t *r = strmap_get(b->reports, key);
    if (r) {
        s_report_unlink(b, r); /* a request reports once; a second report replaces the first */
        free(r);
    }
    r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    memcpy(r->req_id, req_id, 16);
    memcpy(r->key, key, sizeof key);
    r->rep = *rep;
    snprintf(r->agent_id, sizeof r->agent_id, "%s", rep->agent_id ? rep->agent_id : "");
    size_t ml = rep->model_len > S_MODEL_MAX ? S_MODEL_MAX : rep->model_len;
    if (ml)
        memcpy(r->model, rep->model, ml);
    r->model[ml] = '\0';
    r->rep.agent_id = NULL;
    r->rep.model = NULL;
    if (strmap_put(b->reports, key, r) != 0) {
        free(r);
        return -ENOMEM;
    }
    r->next = b->rep_list;
    if (r->next)
        r->next->prev = r;
    b->rep_list = r;
    bus_metric_inc(b->m_reports);
    bus_metric_set(b->m_unacked, (int64_t)strmap_count(b->reports));
    s_send_report(b, r);
    return 0;
}

size_t gw_billing_unacked(const gw_billing_t *b)
{
    return b ? strmap_count(b->reports) : 0;
}
