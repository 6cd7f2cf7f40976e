/* bl_ledger: chain heads in memory, and at-least-once delivery of ledger rows to agents. */
#include "bl_ledger.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus_log.h"
#include "strmap.h"

/* One agent's chain and delivery state. */
typedef struct {
    char id[LEDGER_AGENT_ID_MAX + 1];   /* agent id (map key) */
    uint64_t head_seq;                  /* newest committed row (0: none) */
    uint8_t head_hash[LEDGER_HASH_LEN]; /* its hash (zeros: none) */
    uint64_t acked_seq;                 /* newest row acknowledged (never moves back) */
    uint64_t acked_stored;              /* newest acked_seq written to the store */
    uint64_t base;                      /* newest row the agent said it has (ack, nack, sync):
                                           the window counts from here */
    uint64_t sent_seq;                  /* rows base+1 .. sent_seq are on their way */
    uint64_t max_sent;                  /* highest seq ever sent: rows up to it are re-sends */
    bool up;                            /* connected, by presence or its own messages */
    bool blocked;                       /* a send was refused: wait for the next tick */
    uint64_t seen_us;                   /* last presence or message (monotonic) */
    uint64_t progress_us;               /* base last moved forward, or the last (re)send pass */
    uint64_t rewind_seq;                /* last_seq of the latest nack or sync */
    uint64_t rewind_us;                 /* when it came */
    strmap_t *prices;                   /* "model\n<effective_from>" versions sent since the last
                                           sync (values unused) */
} s_agent_t;

struct bl_ledger {
    strmap_t *agents;          /* id → s_agent_t */
    bl_send_fn send;           /* to the tunnel */
    void *send_arg;            /* its context */
    const bl_prices_t *prices; /* borrowed price table */
    bl_ledger_metrics_t m;     /* counters */
    int64_t resend_us;         /* billing.resend */
    size_t n_up;               /* agents up */
    bool loaded;               /* bl_ledger_load succeeded once */
};

static void s_count_store_error(bl_ledger_t *l)
{
    bus_metric_inc(l->m.store_errors);
}

static void s_agent_free(void *arg, const char *key, void *value)
{
    (void)arg;
    (void)key;
    s_agent_t *a = value;
    strmap_destroy(&a->prices);
    free(a);
}

/* The agent's state, created empty when unknown. NULL on allocation failure or a bad id. */
static s_agent_t *s_agent(bl_ledger_t *l, const char *id)
{
    s_agent_t *a = strmap_get(l->agents, id);
    if (a)
        return a;
    size_t len = strlen(id);
    if (len == 0 || len > LEDGER_AGENT_ID_MAX)
        return NULL;
    a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    memcpy(a->id, id, len + 1);
    a->prices = strmap_new();
    if (!a->prices || strmap_put(l->agents, a->id, a) != 0) {
        strmap_destroy(&a->prices);
        free(a);
        return NULL;
    }
    return a;
}

/* Marks the agent connected or not. */
static void s_set_up(bl_ledger_t *l, s_agent_t *a, bool up, uint64_t now_us)
{
    if (a->up == up)
        return;
    a->up = up;
    a->blocked = false;
    a->sent_seq = a->base; /* what was in flight is either acknowledged later or lost */
    a->progress_us = now_us;
    if (up) {
        l->n_up++;
    } else {
        l->n_up--;
        /* A reconnected agent syncs and gets the price table again; until then, send each
         * version again before its first row. */
        strmap_destroy(&a->prices);
        a->prices = strmap_new();
    }
    bus_metric_set(l->m.connected, (int64_t)l->n_up);
}

/* The agent said it holds every row up to seq. */
static void s_base_forward(s_agent_t *a, uint64_t seq, uint64_t now_us)
{
    if (seq > a->base) {
        a->base = seq;
        a->progress_us = now_us;
    }
    if (a->sent_seq < a->base)
        a->sent_seq = a->base;
    if (seq > a->acked_seq)
        a->acked_seq = seq;
}

/* Sends the price.table of one version to the agent and remembers it. 0 or the send's error. */
static int s_send_price(bl_ledger_t *l, s_agent_t *a, const store_price_t *p, const char *key)
{
    bus_env_t env;
    bus_env_init(&env, BUS_T_PRICE_TABLE, NULL);
    bus_price_table_t *pt = &env.u.price_table;
    pt->agent_id = bus_str_c(a->id);
    pt->model = bus_str_c(p->model);
    pt->effective_from = p->effective_from;
    pt->input = p->input;
    pt->output = p->output;
    pt->cached_input = p->cached_input;
    int rc = l->send(l->send_arg, &env);
    if (rc != 0)
        return rc;
    bus_metric_inc(l->m.prices_sent);
    if (strmap_put(a->prices, key, a) != 0)
        return -ENOMEM;
    return 0;
}

/* The key of a price version in an agent's sent set. */
static void s_price_key(const char *model, int64_t effective_from, char *out, size_t cap)
{
    snprintf(out, cap, "%s\n%" PRId64, model, effective_from);
}

void bl_ledger_tx_env(const ledger_row_t *row, bus_env_t *env)
{
    bus_env_init(env, BUS_T_LEDGER_TX, row->req_id);
    bus_ledger_tx_t *t = &env->u.ledger_tx;
    t->agent_id = bus_str_c(row->agent_id);
    t->seq = row->seq;
    t->attempt = row->attempt;
    t->user_id = row->user_id;
    t->model = bus_str_c(row->model);
    t->input_tokens = (uint64_t)row->input_tokens;
    t->cached_tokens = (uint64_t)row->cached_tokens;
    t->output_tokens = (uint64_t)row->output_tokens;
    t->estimated = row->estimated;
    t->cost = row->cost;
    t->fee = row->fee;
    t->credit = row->credit;
    t->hold = row->hold;
    t->price_from = row->price_from;
    t->fee_ppm = row->fee_ppm;
    t->created_ms = row->created_ms;
    t->prev_hash = (bus_bin_t){row->prev_hash, LEDGER_HASH_LEN};
    t->hash = (bus_bin_t){row->hash, LEDGER_HASH_LEN};
}

/* Sends one row, preceded by its price version when this agent has not had it since its last
 * sync. 0, or the send's error (the row counts as not sent). */
static int s_send_row(bl_ledger_t *l, s_agent_t *a, const ledger_row_t *row)
{
    if (!a->prices && !(a->prices = strmap_new()))
        return -ENOMEM;
    char key[LEDGER_MODEL_MAX + 32];
    s_price_key(row->model, row->price_from, key, sizeof key);
    if (!strmap_get(a->prices, key)) {
        const store_price_t *p = bl_price_version(l->prices, row->model, row->price_from);
        int rc = p ? s_send_price(l, a, p, key) : 0; /* unpriced rows (cost 0) have none */
        if (rc != 0)
            return rc;
    }
    bus_env_t env;
    bl_ledger_tx_env(row, &env);
    int rc = l->send(l->send_arg, &env);
    if (rc != 0)
        return rc;
    bus_metric_inc(l->m.rows_sent);
    if (row->seq <= a->max_sent)
        bus_metric_inc(l->m.resync_rows);
    else
        a->max_sent = row->seq;
    log_agent(LOG_LVL_DEBUG, "ledger_sent", a->id, "row %" PRIu64 " sent (acked %" PRIu64 ")",
              row->seq, a->acked_seq);
    return 0;
}

/* Whether another row may go out to the agent now. */
static bool s_may_send(const s_agent_t *a)
{
    return a->up && !a->blocked && a->sent_seq < a->head_seq &&
           a->sent_seq - a->base < BL_LEDGER_WINDOW;
}

/* Sends the rows after sent_seq, read from the store, while the window allows. */
static void s_pump(bl_ledger_t *l, store_t *st, s_agent_t *a)
{
    while (st && s_may_send(a)) {
        uint64_t room = BL_LEDGER_WINDOW - (a->sent_seq - a->base);
        uint64_t want = a->head_seq - a->sent_seq;
        if (want > room)
            want = room;
        ledger_row_t *rows = NULL;
        size_t n = 0;
        int rc = store_ledger_range(st, a->id, a->sent_seq + 1, (size_t)want, &rows, &n);
        if (rc != 0) {
            s_count_store_error(l);
            log_agent(LOG_LVL_ERR, "store_error", a->id, "reading ledger rows from %" PRIu64 ": %s",
                      a->sent_seq + 1, store_last_error(st));
            free(rows);
            return;
        }
        bool stop = n == 0;
        for (size_t i = 0; i < n && !stop; i++) {
            if (rows[i].seq != a->sent_seq + 1) {
                log_agent(LOG_LVL_ERR, "ledger_gap", a->id,
                          "the store has row %" PRIu64 " after %" PRIu64, rows[i].seq, a->sent_seq);
                stop = true;
            } else if (s_send_row(l, a, &rows[i]) != 0) {
                a->blocked = true;
                stop = true;
            } else {
                a->sent_seq = rows[i].seq;
            }
        }
        free(rows);
        if (stop)
            return;
    }
}

bl_ledger_t *bl_ledger_new(bl_send_fn send, void *send_arg, const bl_prices_t *prices,
                           const bl_ledger_metrics_t *m, int64_t resend_ms)
{
    bl_ledger_t *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->agents = strmap_new();
    if (!l->agents) {
        free(l);
        return NULL;
    }
    l->send = send;
    l->send_arg = send_arg;
    l->prices = prices;
    if (m)
        l->m = *m;
    l->resend_us = resend_ms * 1000;
    return l;
}

void bl_ledger_destroy(bl_ledger_t **p)
{
    if (!p || !*p)
        return;
    bl_ledger_t *l = *p;
    if (l->agents)
        strmap_each(l->agents, s_agent_free, NULL);
    strmap_destroy(&l->agents);
    free(l);
    *p = NULL;
}

int bl_ledger_reload_head(bl_ledger_t *l, store_t *st, const char *agent_id)
{
    s_agent_t *a = s_agent(l, agent_id);
    if (!a)
        return -ENOMEM;
    uint64_t seq = 0;
    uint8_t hash[LEDGER_HASH_LEN];
    int rc = store_ledger_head(st, agent_id, &seq, hash);
    if (rc != 0) {
        s_count_store_error(l);
        return rc;
    }
    a->head_seq = seq;
    memcpy(a->head_hash, hash, LEDGER_HASH_LEN);
    if (a->sent_seq > seq)
        a->sent_seq = seq;
    if (a->base > seq)
        a->base = seq;
    return 0;
}

int bl_ledger_load(bl_ledger_t *l, store_t *st)
{
    store_account_t *acc = NULL;
    size_t n = 0;
    int rc = store_account_list(st, &acc, &n);
    if (rc != 0) {
        s_count_store_error(l);
        return rc;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        s_agent_t *a = s_agent(l, acc[i].agent_id);
        if (!a) {
            rc = -ENOMEM;
            break;
        }
        rc = bl_ledger_reload_head(l, st, a->id);
        if (rc != 0)
            break;
        if (acc[i].acked_seq > a->acked_seq)
            a->acked_seq = acc[i].acked_seq;
        if (acc[i].acked_seq > a->acked_stored)
            a->acked_stored = acc[i].acked_seq;
        if (a->acked_seq > a->head_seq)
            a->acked_seq = a->head_seq;
        if (!l->loaded) {
            /* Rows that exist at start were sent by an earlier run (or wait for their agent):
             * sending them again counts as a re-send. */
            a->base = a->sent_seq = a->acked_seq;
            a->max_sent = a->head_seq;
        }
    }
    free(acc);
    if (rc == 0) {
        l->loaded = true;
        log_info("ledger_loaded", "%zu agent chain(s) loaded", n);
    }
    return rc;
}

void bl_ledger_head(const bl_ledger_t *l, const char *agent_id, uint64_t *seq,
                    uint8_t hash[LEDGER_HASH_LEN])
{
    const s_agent_t *a = strmap_get(l->agents, agent_id);
    *seq = a ? a->head_seq : 0;
    if (a)
        memcpy(hash, a->head_hash, LEDGER_HASH_LEN);
    else
        memset(hash, 0, LEDGER_HASH_LEN);
}

int bl_ledger_committed(bl_ledger_t *l, const ledger_row_t *row)
{
    s_agent_t *a = s_agent(l, row->agent_id);
    if (!a)
        return -ENOMEM;
    if (row->seq != a->head_seq + 1)
        return -ESTALE;
    a->head_seq = row->seq;
    memcpy(a->head_hash, row->hash, LEDGER_HASH_LEN);
    /* The fast path: the row is next in line and the window has room, so it goes out from
     * memory; otherwise s_pump reads it from the store when its turn comes. */
    if (s_may_send(a) && a->sent_seq + 1 == row->seq) {
        if (s_send_row(l, a, row) == 0)
            a->sent_seq = row->seq;
        else
            a->blocked = true;
    }
    return 0;
}

/* Copies a bus string into a NUL-terminated agent id; false when empty, too long or with NUL. */
static bool s_agent_id(bus_str_t s, char out[LEDGER_AGENT_ID_MAX + 1])
{
    if (s.len == 0 || s.len > LEDGER_AGENT_ID_MAX || memchr(s.p, '\0', s.len))
        return false;
    memcpy(out, s.p, s.len);
    out[s.len] = '\0';
    return true;
}

void bl_ledger_presence(bl_ledger_t *l, store_t *st, const bus_presence_t *p, uint64_t now_us)
{
    char id[LEDGER_AGENT_ID_MAX + 1];
    if (!s_agent_id(p->agent_id, id))
        return;
    bool up = p->state.len == 2 && memcmp(p->state.p, "up", 2) == 0;
    s_agent_t *a = up ? s_agent(l, id) : strmap_get(l->agents, id);
    if (!a)
        return;
    if (up)
        a->seen_us = now_us;
    if (a->up != up)
        log_agent(LOG_LVL_INFO, up ? "agent_up" : "agent_down", a->id,
                  "agent %s: %" PRIu64 " row(s), %" PRIu64 " acknowledged", up ? "up" : "down",
                  a->head_seq, a->acked_seq);
    s_set_up(l, a, up, now_us);
    if (up)
        s_pump(l, st, a);
}

/* The agent spoke through the tunnel: it is connected, whatever presence said so far. */
static s_agent_t *s_heard(bl_ledger_t *l, const char *agent_id, uint64_t now_us)
{
    s_agent_t *a = s_agent(l, agent_id);
    if (!a)
        return NULL;
    a->seen_us = now_us;
    s_set_up(l, a, true, now_us);
    return a;
}

void bl_ledger_on_ack(bl_ledger_t *l, store_t *st, const char *agent_id,
                      const bus_ledger_ack_t *ack, uint64_t now_us)
{
    s_agent_t *a = s_heard(l, agent_id, now_us);
    if (!a)
        return;
    if (ack->seq > a->head_seq) {
        log_agent(LOG_LVL_WARN, "ledger_ack_ahead", a->id,
                  "ack of row %" PRIu64 " past the chain's head %" PRIu64 ": ignored", ack->seq,
                  a->head_seq);
        return;
    }
    bus_str_t v = ack->verdict;
    if (ack->seq > a->acked_seq && v.len == 8 && memcmp(v.p, "disputed", 8) == 0) {
        bus_metric_inc(l->m.disputes);
        log_agent(LOG_LVL_WARN, "ledger_disputed", a->id, "the agent disputes row %" PRIu64,
                  ack->seq);
    }
    s_base_forward(a, ack->seq, now_us);
    s_pump(l, st, a);
}

/* Sends again from last_seq + 1: the agent's word on what it has. Nacks of the rows that were
 * in flight behind the same gap name the same last_seq: one rewind serves them all. */
static void s_rewind(bl_ledger_t *l, store_t *st, s_agent_t *a, uint64_t last_seq, uint64_t now_us,
                     bool force)
{
    if (last_seq > a->head_seq) {
        log_agent(LOG_LVL_WARN, "ledger_agent_ahead", a->id,
                  "the agent has row %" PRIu64 " but the chain ends at %" PRIu64
                  ": sending from the head",
                  last_seq, a->head_seq);
        last_seq = a->head_seq;
    }
    if (!force && a->rewind_seq == last_seq && now_us - a->rewind_us < (uint64_t)l->resend_us &&
        a->sent_seq >= last_seq)
        return;
    a->rewind_seq = last_seq;
    a->rewind_us = now_us;
    if (last_seq > a->acked_seq)
        a->acked_seq = last_seq;
    a->base = last_seq;
    a->sent_seq = last_seq;
    a->blocked = false;
    a->progress_us = now_us;
    s_pump(l, st, a);
}

void bl_ledger_on_nack(bl_ledger_t *l, store_t *st, const char *agent_id,
                       const bus_ledger_nack_t *nk, uint64_t now_us)
{
    s_agent_t *a = s_heard(l, agent_id, now_us);
    if (!a)
        return;
    log_agent(LOG_LVL_INFO, "ledger_nack", a->id,
              "row %" PRIu64 " refused (%.*s): again from %" PRIu64, nk->seq,
              (int)(nk->reason.len > 200 ? 200 : nk->reason.len), nk->reason.p ? nk->reason.p : "",
              nk->last_seq + 1);
    s_rewind(l, st, a, nk->last_seq, now_us, false);
}

/* Sends every price version to the agent (a sync starts its price table afresh). */
static void s_send_all_prices(bl_ledger_t *l, s_agent_t *a)
{
    strmap_destroy(&a->prices);
    a->prices = strmap_new();
    if (!a->prices || !l->prices)
        return;
    char key[LEDGER_MODEL_MAX + 32];
    for (size_t i = 0; i < l->prices->n; i++) {
        const store_price_t *p = &l->prices->list[i];
        s_price_key(p->model, p->effective_from, key, sizeof key);
        if (s_send_price(l, a, p, key) != 0)
            return; /* the rest go before the first row that needs them */
    }
}

void bl_ledger_on_sync(bl_ledger_t *l, store_t *st, const char *agent_id,
                       const bus_ledger_sync_t *sy, uint64_t now_us)
{
    s_agent_t *a = s_heard(l, agent_id, now_us);
    if (!a)
        return;
    uint64_t last = sy->last_seq < a->head_seq ? sy->last_seq : a->head_seq;
    if (st && last > 0 && sy->last_hash.len == LEDGER_HASH_LEN) {
        ledger_row_t *rows = NULL;
        size_t n = 0;
        if (store_ledger_range(st, a->id, last, 1, &rows, &n) == 0 && n == 1 &&
            rows[0].seq == last && memcmp(rows[0].hash, sy->last_hash.p, LEDGER_HASH_LEN) != 0)
            log_agent(LOG_LVL_WARN, "ledger_diverged", a->id,
                      "the agent's row %" PRIu64 " has another hash than the hub's", last);
        free(rows);
    }
    log_agent(LOG_LVL_INFO, "ledger_sync", a->id,
              "agent has %" PRIu64 " row(s), the chain %" PRIu64
              ": sending prices and the rows after",
              sy->last_seq, a->head_seq);
    a->blocked = false;
    s_send_all_prices(l, a);
    s_rewind(l, st, a, last, now_us, true);
}

/* strmap_each context of the timer. */
typedef struct {
    bl_ledger_t *l;
    store_t *st;
    uint64_t now_us;
} s_tick_t;

static void s_tick_one(void *arg, const char *key, void *value)
{
    (void)key;
    s_tick_t *t = arg;
    bl_ledger_t *l = t->l;
    s_agent_t *a = value;
    if (a->up && t->now_us - a->seen_us > BL_PRESENCE_MAX_AGE_US) {
        log_agent(LOG_LVL_INFO, "agent_gone", a->id, "no presence for %llu s: counted down",
                  (unsigned long long)(BL_PRESENCE_MAX_AGE_US / 1000000));
        s_set_up(l, a, false, t->now_us);
    }
    if (!a->up)
        return;
    a->blocked = false;
    if (a->base < a->head_seq && a->sent_seq > a->base &&
        t->now_us - a->progress_us >= (uint64_t)l->resend_us) {
        /* Nothing acknowledged for a whole period: whatever was in flight is sent again. */
        log_agent(LOG_LVL_DEBUG, "ledger_resend", a->id,
                  "rows %" PRIu64 "..%" PRIu64 " unacknowledged: sending again", a->base + 1,
                  a->sent_seq);
        a->sent_seq = a->base;
        a->progress_us = t->now_us;
    }
    s_pump(l, t->st, a);
}

void bl_ledger_tick(bl_ledger_t *l, store_t *st, uint64_t now_us)
{
    s_tick_t t = {l, st, now_us};
    strmap_each(l->agents, s_tick_one, &t);
}

/* strmap_each context of bl_ledger_flush_acks. */
typedef struct {
    bl_ledger_t *l;
    store_t *st;
    int rc;
} s_flush_t;

static void s_flush_one(void *arg, const char *key, void *value)
{
    (void)key;
    s_flush_t *f = arg;
    s_agent_t *a = value;
    if (f->rc != 0 || a->acked_seq <= a->acked_stored)
        return;
    int rc = store_ledger_ack(f->st, a->id, a->acked_seq);
    if (rc != 0) {
        s_count_store_error(f->l);
        log_agent(LOG_LVL_ERR, "store_error", a->id, "recording ack of row %" PRIu64 ": %s",
                  a->acked_seq, store_last_error(f->st));
        f->rc = rc;
        return;
    }
    a->acked_stored = a->acked_seq;
}

int bl_ledger_flush_acks(bl_ledger_t *l, store_t *st)
{
    s_flush_t f = {l, st, 0};
    strmap_each(l->agents, s_flush_one, &f);
    return f.rc;
}

size_t bl_ledger_connected(const bl_ledger_t *l)
{
    return l->n_up;
}
