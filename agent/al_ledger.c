/* al_ledger: agent-ledger's message handling (see al_ledger.h). */
#include "al_ledger.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "al_db.h"
#include "al_verify.h"
#include "bus_env.h"
#include "bus_log.h"
#include "bus_metrics.h"
#include "bus_plat.h"

#define S_HWM 100000    /* messages queued towards `agent run`, at most */
#define S_LINGER_MS 500 /* a clean stop gives the last acks this long to leave */
/* Ledger rows waiting their turn; more are dropped (the hub re-sends every unacknowledged row). */
#define S_QUEUE_MAX 1024
#define S_RESEND_BATCH 512       /* unreported usage records re-sent per tick, oldest first */
#define S_OUTBOX_MAX (32u << 20) /* bytes of messages waiting for a commit */
#define S_OUTBOX_FLUSH 1024      /* messages after which the turn commits early */
#define S_WAIT_TICK_US 100000    /* a waiting row is re-checked at least this often */
#define S_REASONS AL_R__COUNT    /* al_reason_t values */

/* A ledger row waiting its turn. */
typedef struct {
    ledger_row_t row;    /* as the hub sent it */
    bool in_flight;      /* `agent run` still had the stream open when the row came */
    uint64_t arrived_us; /* monotonic time it arrived */
} s_pending_t;

struct al_ledger {
    bus_loop_t *loop;                       /* borrowed */
    const ag_config_t *cfg;                 /* borrowed */
    char agent_id[LEDGER_AGENT_ID_MAX + 1]; /* this agent */
    long parent;                            /* pid of `agent run` */
    al_db_t *db;                            /* the database */
    void *sock;                             /* DEALER to `agent run` */
    bus_zwatch_t *watch;                    /* its watch */
    bus_buf_t enc;                          /* scratch encoder */
    /* messages waiting for the open transaction's commit: [u32 length][envelope] ... */
    bus_buf_t outbox;     /* their bytes */
    size_t out_n;         /* their count */
    bool sync_due;        /* a ledger.sync must follow the next commit */
    bus_timer_t flush_t;  /* commits and sends after the loop turn */
    bus_timer_t resend_t; /* re-sends unreported usage; checks the parent */
    bus_timer_t wait_t;   /* re-checks a row waiting for its usage record */
    /* the chain, the open transaction's rows included */
    uint64_t last_seq;                  /* newest row */
    uint8_t last_hash[LEDGER_HASH_LEN]; /* its hash (zeros before seq 1) */
    s_pending_t *q;                     /* ring of rows last_seq + 1, last_seq + 2, ... */
    size_t q_head;                      /* index of the first */
    size_t q_len;                       /* rows in the ring */
    /* counts (the open transaction's writes included) */
    al_db_stats_t stats;             /* rows by verdict, unbilled, usage records */
    int64_t new_disputes[S_REASONS]; /* disputes written in the open transaction, by reason */
    bool stopping;                   /* shutting down */
    /* metrics */
    bus_metrics_t *metrics;
    bus_metric_t *m_rows[4];             /* rows by verdict */
    bus_metric_t *m_disputes[S_REASONS]; /* disputes written by this process, by reason */
    bus_metric_t *m_unbilled;            /* sum of unbilled micros */
    bus_metric_t *m_usage;               /* usage records */
    bus_metric_t *m_unreported;          /* usage records not acknowledged by the hub */
    bus_metric_t *m_syncs;               /* ledger.sync sent */
    bus_metric_t *m_nacks;               /* ledger.nack sent */
    bus_metric_t *m_resent;              /* usage reports re-sent */
    bus_metric_t *m_db_errors;           /* failed writes and commits */
    bus_metric_t *m_bad_msgs;            /* malformed or unexpected messages */
};

static void s_flush(al_ledger_t *l);
static void s_pump(al_ledger_t *l);
static void s_on_flush(bus_timer_t *t);
static void s_on_wait(bus_timer_t *t);

/* ---- helpers ----------------------------------------------------------------------------- */

/* Wall clock in Unix ms. */
static int64_t s_now_ms(void)
{
    return (int64_t)(plat_wall_us() / 1000);
}

/* Queues env for sending after the commit (and arms the flush). An envelope that cannot be
 * encoded or does not fit is dropped with a log line: its sender re-sends. */
static void s_out(al_ledger_t *l, const bus_env_t *env)
{
    bus_buf_reset(&l->enc);
    int rc = bus_env_encode(env, &l->enc);
    if (rc != 0) {
        log_err("encode_failed", "cannot encode %s: %s", bus_type_name(env->type), strerror(-rc));
        return;
    }
    uint8_t len[4] = {(uint8_t)(l->enc.len >> 24), (uint8_t)(l->enc.len >> 16),
                      (uint8_t)(l->enc.len >> 8), (uint8_t)l->enc.len};
    size_t before = l->outbox.len;
    if (bus_buf_append(&l->outbox, len, sizeof len) != 0 ||
        bus_buf_append(&l->outbox, l->enc.data, l->enc.len) != 0) {
        l->outbox.len = before;
        log_warn("outbox_full", "%s dropped (it is sent again later)", bus_type_name(env->type));
        return;
    }
    l->out_n++;
    bus_timer_start(l->loop, &l->flush_t, s_on_flush, l, 0);
}

/* Sends one encoded envelope to `agent run`. */
static void s_send_raw(al_ledger_t *l, const uint8_t *p, size_t n)
{
    if (zmq_send(l->sock, p, n, ZMQ_DONTWAIT) < 0)
        log_warn("send_failed", "to agent run: %s (dropped: its sender re-sends)",
                 zmq_strerror(errno));
}

/* Sets the gauges from the counts. */
static void s_metrics_set(al_ledger_t *l)
{
    for (int v = 0; v < 4; v++)
        bus_metric_set(l->m_rows[v], l->stats.rows[v]);
    bus_metric_set(l->m_unbilled, l->stats.unbilled);
    bus_metric_set(l->m_usage, l->stats.usage);
    bus_metric_set(l->m_unreported, l->stats.unreported);
}

/* Re-reads the chain's state and the counts from the file (at start, and after a failed
 * transaction). 0 or a negative errno. */
static int s_reload(al_ledger_t *l)
{
    int rc = al_db_ledger_last(l->db, &l->last_seq, l->last_hash);
    if (rc == 0)
        rc = al_db_stats(l->db, &l->stats);
    memset(l->new_disputes, 0, sizeof l->new_disputes);
    s_metrics_set(l);
    return rc;
}

/* Abandons the open transaction after a failed write or commit: nothing of it happened, so
 * nothing queued for after it is sent; the rows waiting are dropped (the hub re-sends them
 * after the sync that follows). */
static void s_abort(al_ledger_t *l, const char *what, int err)
{
    log_err("db_failed", "%s: %s; the turn's writes are rolled back", what, strerror(-err));
    bus_metric_inc(l->m_db_errors);
    al_db_rollback(l->db);
    bus_buf_reset(&l->outbox);
    l->out_n = 0;
    l->q_head = 0;
    l->q_len = 0;
    if (s_reload(l) != 0)
        log_err("db_failed", "cannot re-read the ledger's state");
    l->sync_due = true;
    bus_timer_start(l->loop, &l->flush_t, s_on_flush, l, 0);
}

/* ---- messages to send -------------------------------------------------------------------- */

/* Queues ledger.sync with the newest row. */
static void s_sync(al_ledger_t *l)
{
    bus_env_t e;
    bus_env_init(&e, BUS_T_LEDGER_SYNC, NULL);
    e.u.ledger_sync.agent_id = bus_str_c(l->agent_id);
    e.u.ledger_sync.last_seq = l->last_seq;
    e.u.ledger_sync.last_hash = (bus_bin_t){l->last_hash, LEDGER_HASH_LEN};
    s_out(l, &e);
    bus_metric_inc(l->m_syncs);
    log_debug("ledger_sync", "last seq %llu", (unsigned long long)l->last_seq);
}

/* Queues a usage record's report to the hub. */
static void s_report(al_ledger_t *l, const al_usage_t *u)
{
    bus_env_t e;
    bus_env_init(&e, BUS_T_USAGE_REPORT, u->req_id);
    bus_usage_report_t *r = &e.u.usage_report;
    r->source = bus_str_c("agent");
    r->attempt = u->attempt;
    r->agent_id = bus_str_c(l->agent_id);
    r->model = bus_str_c(u->model);
    r->status = (uint64_t)(u->status > 0 ? u->status : 0);
    r->delivered = u->delivered;
    r->complete = u->complete;
    r->estimated = u->estimated;
    r->input_tokens = (uint64_t)u->input_tokens;
    r->cached_tokens = (uint64_t)u->cached_tokens;
    r->output_tokens = (uint64_t)u->output_tokens;
    s_out(l, &e);
}

/* Queues ledger.nack for row seq. */
static void s_nack(al_ledger_t *l, uint64_t seq, const char *reason)
{
    bus_env_t e;
    bus_env_init(&e, BUS_T_LEDGER_NACK, NULL);
    e.u.ledger_nack.agent_id = bus_str_c(l->agent_id);
    e.u.ledger_nack.seq = seq;
    e.u.ledger_nack.last_seq = l->last_seq;
    e.u.ledger_nack.reason = bus_str_c(reason);
    s_out(l, &e);
    bus_metric_inc(l->m_nacks);
    log_info("ledger_nack", "row %llu not written: %s (last seq %llu)", (unsigned long long)seq,
             reason, (unsigned long long)l->last_seq);
}

/* Queues ledger.ack for row seq. */
static void s_ack(al_ledger_t *l, uint64_t seq, const char *verdict)
{
    bus_env_t e;
    bus_env_init(&e, BUS_T_LEDGER_ACK, NULL);
    e.u.ledger_ack.agent_id = bus_str_c(l->agent_id);
    e.u.ledger_ack.seq = seq;
    e.u.ledger_ack.verdict = bus_str_c(verdict);
    s_out(l, &e);
}

/* al_usage_fn: re-sends one unreported record. */
static int s_resend_one(void *arg, const al_usage_t *u)
{
    al_ledger_t *l = arg;
    s_report(l, u);
    bus_metric_inc(l->m_resent);
    return 0;
}

/* Queues every unreported usage record (the oldest S_RESEND_BATCH). */
static void s_resend(al_ledger_t *l)
{
    int n = al_db_usage_unreported(l->db, S_RESEND_BATCH, s_resend_one, l);
    if (n < 0)
        log_err("db_failed", "cannot read unreported usage records: %s", strerror(-n));
    else if (n > 0)
        log_debug("usage_resent", "%d unreported usage records re-sent", n);
}

/* ---- commit, then send ------------------------------------------------------------------- */

/* Commits the turn's writes, then sends what waited for them. */
static void s_flush(al_ledger_t *l)
{
    bus_timer_cancel(l->loop, &l->flush_t);
    int rc = al_db_commit(l->db);
    if (rc != 0)
        s_abort(l, "commit", rc); /* nothing of the turn happened; a sync follows */
    for (int r = 0; r < S_REASONS; r++)
        bus_metric_add(l->m_disputes[r], l->new_disputes[r]);
    memset(l->new_disputes, 0, sizeof l->new_disputes);
    s_metrics_set(l);
    if (l->sync_due) {
        l->sync_due = false;
        s_sync(l);
        bus_timer_cancel(l->loop, &l->flush_t);
    }
    const uint8_t *p = l->outbox.data;
    const uint8_t *end = p ? p + l->outbox.len : NULL;
    while (p && p + 4 <= end) {
        size_t n = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        s_send_raw(l, p + 4, n);
        p += 4 + n;
    }
    if (l->out_n)
        bus_zwatch_poke(l->watch);
    bus_buf_reset(&l->outbox);
    l->out_n = 0;
}

/* bus_timer_cb of flush_t: the loop turn is over. */
static void s_on_flush(bus_timer_t *t)
{
    s_flush(t->arg);
}

/* ---- usage ------------------------------------------------------------------------------- */

/* usage.report from `agent run`: stored once, acknowledged locally after the commit, reported
 * to the hub. */
static void s_on_usage_report(al_ledger_t *l, const bus_env_t *env)
{
    const bus_usage_report_t *r = &env->u.usage_report;
    char hex[33] = "";
    if (env->has_req_id)
        bus_req_id_hex(env->req_id, hex);
    al_usage_t u;
    memset(&u, 0, sizeof u);
    if (!env->has_req_id || !bus_str_is(r->source, "agent") || r->attempt < 1 ||
        r->attempt > UINT32_MAX || r->input_tokens > INT64_MAX || r->cached_tokens > INT64_MAX ||
        r->output_tokens > INT64_MAX || r->cached_tokens > r->input_tokens ||
        r->status > INT64_MAX || !bus_str_copy(r->model, u.model, sizeof u.model)) {
        bus_metric_inc(l->m_bad_msgs);
        log_req(LOG_LVL_WARN, "bad_usage_report", hex[0] ? hex : NULL, NULL,
                "usage.report refused: needs req_id, source \"agent\", attempt >= 1, tokens in "
                "range with cached <= input, a model without NUL");
        return;
    }
    memcpy(u.req_id, env->req_id, sizeof u.req_id);
    u.attempt = (uint32_t)r->attempt;
    u.status = (int64_t)r->status;
    u.delivered = r->delivered;
    u.complete = r->complete;
    u.estimated = r->estimated;
    u.input_tokens = (int64_t)r->input_tokens;
    u.cached_tokens = (int64_t)r->cached_tokens;
    u.output_tokens = (int64_t)r->output_tokens;
    u.created_ms = s_now_ms();
    int rc = al_db_usage_put(l->db, &u);
    if (rc < 0) {
        s_abort(l, "usage record", rc);
        return;
    }
    if (rc == 1) {
        l->stats.usage++;
        l->stats.unreported++;
    } else {
        /* Known already (a re-send of agent run): the first record stands. */
        int g = al_db_usage_get(l->db, u.req_id, u.attempt, &u);
        if (g < 0) {
            s_abort(l, "usage record", g);
            return;
        }
        log_req(LOG_LVL_DEBUG, "usage_known", hex, NULL, "attempt %u recorded already", u.attempt);
    }
    bus_env_t ack;
    bus_env_init(&ack, BUS_T_USAGE_ACK, u.req_id);
    ack.u.usage_ack.source = bus_str_c("ledger");
    ack.u.usage_ack.attempt = u.attempt;
    s_out(l, &ack);
    if (!u.reported)
        s_report(l, &u);
    log_req(LOG_LVL_DEBUG, "usage_recorded", hex, NULL, "attempt %u %s: %lld/%lld/%lld tokens%s%s",
            u.attempt, u.model, (long long)u.input_tokens, (long long)u.cached_tokens,
            (long long)u.output_tokens, u.complete ? "" : ", interrupted",
            u.estimated ? ", estimated" : "");
    s_pump(l); /* a row may be waiting for this record */
}

/* usage.ack from the hub: the report is durable there. */
static void s_on_usage_ack(al_ledger_t *l, const bus_env_t *env)
{
    const bus_usage_ack_t *a = &env->u.usage_ack;
    if (!env->has_req_id || !bus_str_is(a->source, "agent") || a->attempt < 1 ||
        a->attempt > UINT32_MAX) {
        bus_metric_inc(l->m_bad_msgs);
        log_warn("bad_usage_ack", "usage.ack without req_id, source \"agent\" or attempt: ignored");
        return;
    }
    int rc = al_db_usage_set_reported(l->db, env->req_id, (uint32_t)a->attempt);
    if (rc < 0) {
        s_abort(l, "usage acknowledgement", rc);
        return;
    }
    if (rc == 1 && l->stats.unreported > 0)
        l->stats.unreported--;
}

/* ---- prices ------------------------------------------------------------------------------ */

/* price.table: one price version, stored. */
static void s_on_price(al_ledger_t *l, const bus_env_t *env)
{
    const bus_price_table_t *p = &env->u.price_table;
    char model[LEDGER_MODEL_MAX + 1];
    if (!bus_str_copy(p->model, model, sizeof model) || p->input < 0 || p->output < 0 ||
        p->cached_input < 0) {
        bus_metric_inc(l->m_bad_msgs);
        log_warn("bad_price", "price.table with a bad model name or a negative price: ignored");
        return;
    }
    money_price_t mp = {.input = p->input, .cached_input = p->cached_input, .output = p->output};
    int rc = al_db_price_put(l->db, model, p->effective_from, &mp);
    if (rc < 0) {
        s_abort(l, "price", rc);
        return;
    }
    if (rc == 2)
        log_warn("price_changed", "the hub changed the price of %s effective from %lld", model,
                 (long long)p->effective_from);
    else if (rc == 1)
        log_info("price_added", "%s from %lld: input %lld, cached input %lld, output %lld per 1M",
                 model, (long long)p->effective_from, (long long)mp.input,
                 (long long)mp.cached_input, (long long)mp.output);
}

/* ---- ledger rows ------------------------------------------------------------------------- */

/* Builds a ledger row from ledger.tx. false (with why) when it cannot be one. */
static bool s_row_from_tx(al_ledger_t *l, const bus_env_t *env, ledger_row_t *row, const char **why)
{
    const bus_ledger_tx_t *t = &env->u.ledger_tx;
    memset(row, 0, sizeof *row);
    if (!env->has_req_id) {
        *why = "no req_id";
        return false;
    }
    if (t->seq == 0 || t->seq > INT64_MAX) {
        *why = "seq out of range";
        return false;
    }
    if (t->attempt > UINT32_MAX) {
        *why = "attempt out of range";
        return false;
    }
    if (t->agent_id.len == 0)
        snprintf(row->agent_id, sizeof row->agent_id, "%s", l->agent_id);
    else if (!bus_str_copy(t->agent_id, row->agent_id, sizeof row->agent_id)) {
        *why = "bad agent_id";
        return false;
    }
    if (!bus_str_copy(t->model, row->model, sizeof row->model)) {
        *why = "bad model";
        return false;
    }
    row->seq = t->seq;
    memcpy(row->req_id, env->req_id, sizeof row->req_id);
    row->attempt = (uint32_t)t->attempt;
    row->user_id = t->user_id;
    /* Token counts travel unsigned; the row holds them as int64 (the hash encodes the same 64
     * bits either way, and a count past INT64_MAX becomes negative: bad_amounts). */
    row->input_tokens = (int64_t)t->input_tokens;
    row->cached_tokens = (int64_t)t->cached_tokens;
    row->output_tokens = (int64_t)t->output_tokens;
    row->estimated = t->estimated;
    row->cost = t->cost;
    row->fee = t->fee;
    row->credit = t->credit;
    row->hold = t->hold;
    row->price_from = t->price_from;
    row->fee_ppm = t->fee_ppm;
    row->created_ms = t->created_ms;
    memcpy(row->prev_hash, t->prev_hash.p, LEDGER_HASH_LEN);
    memcpy(row->hash, t->hash.p, LEDGER_HASH_LEN);
    return true;
}

/* A re-sent row the agent has stored: the same ack again, or a nack if it differs. */
static void s_resent_row(al_ledger_t *l, const ledger_row_t *row)
{
    al_entry_t e;
    int rc = al_db_ledger_get(l->db, row->seq, &e);
    if (rc < 0) {
        log_err("db_failed", "cannot read row %llu: %s", (unsigned long long)row->seq,
                strerror(-rc));
        return; /* the hub re-sends */
    }
    if (rc == 1 && memcmp(e.row.hash, row->hash, LEDGER_HASH_LEN) == 0) {
        s_ack(l, row->seq, e.verdict);
        return;
    }
    char why[96];
    snprintf(why, sizeof why, "row %llu is stored with another hash", (unsigned long long)row->seq);
    s_nack(l, row->seq, why);
}

/* ledger.tx: a re-send, a gap, or the next row (queued, then processed in order). */
static void s_on_ledger_tx(al_ledger_t *l, const bus_env_t *env)
{
    ledger_row_t row;
    const char *why = NULL;
    if (!s_row_from_tx(l, env, &row, &why)) {
        bus_metric_inc(l->m_bad_msgs);
        log_warn("bad_ledger_tx", "ledger.tx seq %llu refused: %s",
                 (unsigned long long)env->u.ledger_tx.seq, why);
        if (env->u.ledger_tx.seq > l->last_seq)
            s_nack(l, env->u.ledger_tx.seq, why);
        return;
    }
    if (row.seq <= l->last_seq) {
        s_resent_row(l, &row);
        return;
    }
    uint64_t next = l->last_seq + 1 + l->q_len;
    if (row.seq < next) {
        /* Already waiting its turn: its ack comes when it is written. */
        log_debug("ledger_tx_queued", "row %llu is queued already", (unsigned long long)row.seq);
        return;
    }
    if (row.seq > next) {
        char msg[96];
        snprintf(msg, sizeof msg, "gap: expected seq %llu", (unsigned long long)next);
        s_nack(l, row.seq, msg);
        return;
    }
    if (l->q_len == S_QUEUE_MAX) {
        log_debug("ledger_queue_full", "row %llu dropped: %d rows wait already",
                  (unsigned long long)row.seq, S_QUEUE_MAX);
        return;
    }
    s_pending_t *p = &l->q[(l->q_head + l->q_len) % S_QUEUE_MAX];
    p->row = row;
    p->in_flight = env->u.ledger_tx.in_flight;
    p->arrived_us = plat_mono_us();
    l->q_len++;
    s_pump(l);
}

/* Judges and writes the first waiting row. 0, or a negative errno after s_abort. */
static int s_write_head(al_ledger_t *l, const s_pending_t *p, const al_usage_t *local)
{
    const ledger_row_t *row = &p->row;
    money_price_t price;
    int pr = al_db_price_get(l->db, row->model, row->price_from, &price);
    if (pr < 0) {
        s_abort(l, "price lookup", pr);
        return pr;
    }
    if (pr == 0 && row->price_from == 0) {
        /* Version 0 is no price at all: a model the hub serves free (billing.unpriced). */
        memset(&price, 0, sizeof price);
        pr = 1;
    }
    al_result_t res;
    al_verify(row, l->agent_id, l->last_hash, pr ? &price : NULL, local, &res);
    al_entry_t e;
    memset(&e, 0, sizeof e);
    e.row = *row;
    snprintf(e.verdict, sizeof e.verdict, "%s", al_verdict_name(res.verdict));
    e.unbilled = res.unbilled;
    snprintf(e.reason, sizeof e.reason, "%s", res.text);
    e.written_ms = s_now_ms();
    int rc = al_db_ledger_put(l->db, &e);
    if (rc != 0) {
        s_abort(l, "ledger row", rc);
        return rc;
    }
    l->last_seq = row->seq;
    memcpy(l->last_hash, row->hash, LEDGER_HASH_LEN);
    l->stats.rows[res.verdict]++;
    l->stats.unbilled += res.unbilled;
    char hex[33];
    bus_req_id_hex(row->req_id, hex);
    if (res.verdict == AL_DISPUTED) {
        l->new_disputes[res.reason]++;
        log_req(LOG_LVL_WARN, "ledger_disputed", hex, l->agent_id, "row %llu attempt %u: %s",
                (unsigned long long)row->seq, row->attempt, res.text);
    } else {
        log_req(LOG_LVL_DEBUG, "ledger_row", hex, l->agent_id,
                "row %llu attempt %u: %s, cost %lld, unbilled %lld%s", (unsigned long long)row->seq,
                row->attempt, e.verdict, (long long)row->cost, (long long)res.unbilled,
                local ? "" : " (no local record)");
    }
    s_ack(l, row->seq, e.verdict);
    return 0;
}

/* Processes waiting rows in order, as far as their usage records allow. */
static void s_pump(al_ledger_t *l)
{
    while (l->q_len) {
        s_pending_t *p = &l->q[l->q_head];
        al_usage_t local;
        int got = al_db_usage_get(l->db, p->row.req_id, p->row.attempt, &local);
        if (got < 0) {
            s_abort(l, "usage lookup", got);
            return;
        }
        if (!got && p->in_flight && !l->stopping) {
            /* The stream is still open in `agent run`: its record is on its way. */
            uint64_t waited = plat_mono_us() - p->arrived_us;
            uint64_t limit = (uint64_t)l->cfg->ledger_wait_ms * 1000;
            if (waited < limit) {
                uint64_t left = limit - waited;
                bus_timer_start(l->loop, &l->wait_t, s_on_wait, l,
                                (int64_t)(left < S_WAIT_TICK_US ? left : S_WAIT_TICK_US));
                return;
            }
            char hex[33];
            bus_req_id_hex(p->row.req_id, hex);
            log_req(LOG_LVL_INFO, "usage_wait_over", hex, NULL,
                    "row %llu: no usage record after %lld ms; judged without it",
                    (unsigned long long)p->row.seq, (long long)l->cfg->ledger_wait_ms);
        }
        if (s_write_head(l, p, got ? &local : NULL) != 0)
            return;
        l->q_head = (l->q_head + 1) % S_QUEUE_MAX;
        l->q_len--;
    }
    bus_timer_cancel(l->loop, &l->wait_t);
    if (l->out_n >= S_OUTBOX_FLUSH)
        s_flush(l);
}

/* bus_timer_cb of wait_t. */
static void s_on_wait(bus_timer_t *t)
{
    al_ledger_t *l = t->arg;
    s_pump(l);
}

/* ---- the socket and the timers ----------------------------------------------------------- */

/* Reads one message from `agent run`. */
static void s_on_msg(void *arg, void *zsock)
{
    al_ledger_t *l = arg;
    zmq_msg_t parts[2];
    int n = bus_zrecv_parts(zsock, parts, 2);
    if (n <= 0)
        return;
    bus_env_t env;
    char err[160];
    if (n != 1) {
        bus_metric_inc(l->m_bad_msgs);
        log_warn("bad_message", "from agent run: %d frames, expected one envelope", n);
        goto out;
    }
    if (bus_env_decode(zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0]), &env, err, sizeof err) !=
        0) {
        bus_metric_inc(l->m_bad_msgs);
        log_warn("bad_message", "from agent run: %s", err);
        goto out;
    }
    switch (env.type) {
    case BUS_T_USAGE_REPORT:
        s_on_usage_report(l, &env);
        break;
    case BUS_T_USAGE_ACK:
        s_on_usage_ack(l, &env);
        break;
    case BUS_T_PRICE_TABLE:
        s_on_price(l, &env);
        break;
    case BUS_T_LEDGER_TX:
        s_on_ledger_tx(l, &env);
        break;
    case BUS_T_BILLING_POKE:
        if (bus_str_is(env.u.billing_poke.what, "online")) {
            log_debug("hub_online", "tunnel up: sync and re-send");
            s_sync(l);
            s_resend(l);
        }
        break;
    default:
        bus_metric_inc(l->m_bad_msgs);
        log_warn("unexpected_message", "%s from agent run: ignored", bus_type_name(env.type));
        break;
    }
    if (al_db_in_tx(l->db) || l->out_n)
        bus_timer_start(l->loop, &l->flush_t, s_on_flush, l, 0);
out:
    for (int i = 0; i < n; i++)
        zmq_msg_close(&parts[i]);
}

/* bus_timer_cb of resend_t: re-sends unreported usage; stops when `agent run` is gone. */
static void s_on_resend(bus_timer_t *t)
{
    al_ledger_t *l = t->arg;
    if (l->parent > 0 && (long)getppid() != l->parent) {
        log_info("parent_gone", "agent run (pid %ld) is gone: stopping", l->parent);
        al_ledger_shutdown(l, 0);
        return;
    }
    s_resend(l);
    s_flush(l);
    bus_timer_start(l->loop, &l->resend_t, s_on_resend, l, l->cfg->ledger_resend_ms * 1000);
}

/* Registers the metrics and serves them on agent.ledger_metrics_listen. 0 or an errno. */
static int s_metrics_new(al_ledger_t *l)
{
    l->metrics = bus_metrics_new("agent-ledger");
    if (!l->metrics)
        return -ENOMEM;
    bus_metrics_t *m = l->metrics;
    for (int v = 0; v < 4; v++) {
        char lab[48];
        snprintf(lab, sizeof lab, "verdict=\"%s\"", al_verdict_name((al_verdict_t)v));
        l->m_rows[v] = bus_metrics_add(m, BUS_GAUGE, "relayhub_agent_ledger_rows", lab,
                                       "rows of the agent's ledger copy, by verdict");
    }
    for (int r = 1; r < S_REASONS; r++) {
        char lab[48];
        snprintf(lab, sizeof lab, "reason=\"%s\"", al_reason_name((al_reason_t)r));
        l->m_disputes[r] =
            bus_metrics_add(m, BUS_COUNTER, "relayhub_agent_ledger_disputes_total", lab,
                            "ledger rows written disputed by this process, by reason");
    }
    l->m_unbilled = bus_metrics_add(m, BUS_GAUGE, "relayhub_agent_ledger_unbilled_micros", NULL,
                                    "sum of what accepted rows billed below the agent's figure");
    l->m_usage = bus_metrics_add(m, BUS_GAUGE, "relayhub_agent_ledger_usage_records", NULL,
                                 "usage records in the agent's database");
    l->m_unreported = bus_metrics_add(m, BUS_GAUGE, "relayhub_agent_ledger_usage_unreported", NULL,
                                      "usage records the hub has not acknowledged");
    l->m_syncs = bus_metrics_add(m, BUS_COUNTER, "relayhub_agent_ledger_syncs_total", NULL,
                                 "ledger.sync resync requests sent");
    l->m_nacks = bus_metrics_add(m, BUS_COUNTER, "relayhub_agent_ledger_nacks_total", NULL,
                                 "ledger.nack sent (gaps, conflicting re-sends)");
    l->m_resent = bus_metrics_add(m, BUS_COUNTER, "relayhub_agent_ledger_usage_resent_total", NULL,
                                  "usage reports re-sent to the hub");
    l->m_db_errors = bus_metrics_add(m, BUS_COUNTER, "relayhub_agent_ledger_db_errors_total", NULL,
                                     "database writes or commits that failed");
    l->m_bad_msgs = bus_metrics_add(m, BUS_COUNTER, "relayhub_agent_ledger_bad_messages_total",
                                    NULL, "malformed or unexpected messages from agent run");
    int rc = bus_metrics_serve(m, l->loop, l->cfg->ledger_metrics_listen);
    if (rc != 0)
        log_err("listen_failed", "agent.ledger_metrics_listen %s: %s",
                l->cfg->ledger_metrics_listen, strerror(-rc));
    return rc;
}

/* ---- lifecycle --------------------------------------------------------------------------- */

al_ledger_t *al_ledger_new(bus_loop_t *loop, const ag_config_t *cfg, const char *agent_id,
                           long parent)
{
    al_ledger_t *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->loop = loop;
    l->cfg = cfg;
    l->parent = parent;
    snprintf(l->agent_id, sizeof l->agent_id, "%s", agent_id);
    bus_buf_init(&l->enc, BUS_ENV_MAX_BYTES);
    bus_buf_init(&l->outbox, S_OUTBOX_MAX);
    l->q = calloc(S_QUEUE_MAX, sizeof *l->q);
    if (!l->q || s_metrics_new(l) != 0)
        goto fail;
    char err[512];
    l->db = al_db_open(cfg->ledger_db, agent_id, err, sizeof err);
    if (!l->db) {
        log_err("db_open_failed", "%s", err);
        goto fail;
    }
    if (s_reload(l) != 0) {
        log_err("db_failed", "cannot read the ledger's state from %s", cfg->ledger_db);
        goto fail;
    }
    l->sock = zmq_socket(bus_loop_zctx(loop), ZMQ_DEALER);
    if (!l->sock)
        goto fail;
    int linger = S_LINGER_MS, hwm = S_HWM;
    zmq_setsockopt(l->sock, ZMQ_ROUTING_ID, AL_IDENTITY, strlen(AL_IDENTITY));
    zmq_setsockopt(l->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(l->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(l->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (zmq_connect(l->sock, cfg->ledger_ipc) != 0) {
        log_err("connect_failed", "%s: %s", cfg->ledger_ipc, zmq_strerror(errno));
        goto fail;
    }
    l->watch = bus_zwatch_new(loop, l->sock, s_on_msg, l);
    if (!l->watch)
        goto fail;
    /* After a restart: ask the hub for what came since, and re-send what it has not confirmed. */
    s_sync(l);
    s_resend(l);
    s_flush(l);
    bus_timer_start(loop, &l->resend_t, s_on_resend, l, cfg->ledger_resend_ms * 1000);
    log_info("started",
             "agent-ledger ready: %s, last seq %llu, %lld usage records (%lld "
             "unreported)",
             cfg->ledger_db, (unsigned long long)l->last_seq, (long long)l->stats.usage,
             (long long)l->stats.unreported);
    return l;
fail:
    al_ledger_destroy(&l);
    return NULL;
}

void al_ledger_destroy(al_ledger_t **p)
{
    if (!p || !*p)
        return;
    al_ledger_t *l = *p;
    if (l->db && l->sock && (al_db_in_tx(l->db) || l->out_n))
        s_flush(l);
    if (l->loop) {
        bus_timer_cancel(l->loop, &l->flush_t);
        bus_timer_cancel(l->loop, &l->resend_t);
        bus_timer_cancel(l->loop, &l->wait_t);
    }
    bus_zwatch_destroy(&l->watch);
    if (l->sock)
        zmq_close(l->sock);
    al_db_close(&l->db);
    bus_metrics_destroy(&l->metrics);
    bus_buf_free(&l->enc);
    bus_buf_free(&l->outbox);
    free(l->q);
    free(l);
    *p = NULL;
}

void al_ledger_shutdown(void *arg, int signo)
{
    al_ledger_t *l = arg;
    (void)signo;
    if (l->stopping)
        return;
    l->stopping = true;
    s_flush(l);
    bus_timer_cancel(l->loop, &l->resend_t);
    bus_timer_cancel(l->loop, &l->wait_t);
    bus_loop_stop(l->loop);
}
