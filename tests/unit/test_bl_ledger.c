/* Unit tests for bl_ledger: delivery of ledger rows to agents, against a real SQLite store in a
 * temporary directory and a send function that records (or refuses) what goes out: the window
 * of unacknowledged rows, prices before rows, acks, nacks, syncs, re-sends on the timer,
 * presence, refused sends, and acks made durable. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

#include "bl_ledger.h"
#include "bus_metrics.h"

#define S_ROWS 600 /* rows in the test chain: more than two windows */
#define S_AGENT "agent-one"
#define S_RESEND_MS 1000

/* What the fake tunnel got. */
typedef struct {
    bus_type_t type;
    uint64_t seq;       /* ledger.tx */
    int64_t price_from; /* ledger.tx: its price version; price.table: effective_from */
    char agent[65];     /* the target */
} s_sent_t;

typedef struct {
    char dir[256];
    store_t *st;
    int64_t uid;
    bl_prices_t prices;
    bus_metrics_t *metrics;
    bl_ledger_metrics_t m;
    bl_ledger_t *l;
    s_sent_t *sent;
    size_t n_sent, cap_sent;
    int refuse;        /* sends refused from now on (-EAGAIN) while > 0 */
    ledger_row_t last; /* the chain's newest row */
} s_fix_t;

static int s_send(void *arg, const bus_env_t *env)
{
    s_fix_t *f = arg;
    if (f->refuse)
        return -EAGAIN;
    if (f->n_sent == f->cap_sent) {
        f->cap_sent = f->cap_sent ? f->cap_sent * 2 : 256;
        f->sent = realloc(f->sent, f->cap_sent * sizeof *f->sent);
        assert_non_null(f->sent);
    }
    s_sent_t *s = &f->sent[f->n_sent++];
    memset(s, 0, sizeof *s);
    s->type = env->type;
    bus_str_t agent = {NULL, 0};
    if (env->type == BUS_T_LEDGER_TX) {
        s->seq = env->u.ledger_tx.seq;
        s->price_from = env->u.ledger_tx.price_from;
        agent = env->u.ledger_tx.agent_id;
        assert_int_equal(env->u.ledger_tx.prev_hash.len, LEDGER_HASH_LEN);
        assert_true(env->has_req_id);
    } else if (env->type == BUS_T_PRICE_TABLE) {
        s->price_from = env->u.price_table.effective_from;
        agent = env->u.price_table.agent_id;
    }
    assert_true(agent.len < sizeof s->agent);
    memcpy(s->agent, agent.p, agent.len);
    /* every envelope must encode (the schema's limits) */
    bus_buf_t b;
    bus_buf_init(&b, 0);
    assert_int_equal(bus_env_encode(env, &b), 0);
    bus_buf_free(&b);
    return 0;
}

/* Appends n rows to the agent's chain through store_settle, half on each price version. */
static void s_append(s_fix_t *f, uint64_t n)
{
    store_settle_t it;
    for (uint64_t i = 0; i < n; i++) {
        memset(&it, 0, sizeof it);
        uint64_t seq = f->last.seq + 1;
        ledger_row_t *r = &it.row;
        snprintf(r->agent_id, sizeof r->agent_id, "%s", S_AGENT);
        snprintf(r->model, sizeof r->model, "m");
        r->seq = seq;
        memcpy(r->req_id, &seq, sizeof seq);
        r->req_id[15] = 0x5a;
        r->attempt = 1;
        r->user_id = f->uid;
        r->input_tokens = 1;
        r->output_tokens = 1;
        r->cost = r->credit = 3;
        r->price_from = seq % 2 ? 1000 : 2000;
        r->created_ms = 5000 + (int64_t)seq;
        assert_int_equal(ledger_seal(r, seq > 1 ? f->last.hash : NULL), 0);
        memcpy(it.req_id, r->req_id, 16);
        it.outcome = STORE_OUTCOME_BILLED;
        it.user_id = f->uid;
        it.settled_at = r->created_ms;
        assert_int_equal(store_settle(f->st, &it, 1), 0);
        f->last = *r;
    }
}

static int s_setup(void **state)
{
    s_fix_t *f = calloc(1, sizeof *f);
    if (!f || tu_tmpdir_new(f->dir, sizeof f->dir, "test_bl_ledger") != 0)
        return -1;
    char path[300], err[256];
    snprintf(path, sizeof path, "%s/hub.db", f->dir);
    store_params_t p = {.backend = STORE_SQLITE, .sqlite_path = path};
    if (store_open(&p, &f->st, err, sizeof err) != 0 || store_migrate(f->st) < 0)
        return -1;
    if (store_user_add(f->st, "payer", 1, &f->uid) != 0 ||
        store_topup_add(f->st, f->uid, 1000000000, 1, NULL) != 0 ||
        store_topups_apply(f->st, 2, NULL) != 0)
        return -1;
    store_price_t v1 = {.model = "m",
                        .effective_from = 1000,
                        .input = 1000000,
                        .output = 2000000,
                        .cached_input = 0,
                        .created_at = 1};
    store_price_t v2 = v1;
    v2.effective_from = 2000;
    v2.input = 1500000;
    if (store_price_set(f->st, &v1) != 0 || store_price_set(f->st, &v2) != 0 ||
        store_price_list(f->st, &f->prices.list, &f->prices.n) != 0)
        return -1;
    bl_prices_sort(f->prices.list, f->prices.n);
    f->metrics = bus_metrics_new("test");
    f->m.rows_sent = bus_metrics_add(f->metrics, BUS_COUNTER, "rows", NULL, "h");
    f->m.resync_rows = bus_metrics_add(f->metrics, BUS_COUNTER, "resync", NULL, "h");
    f->m.prices_sent = bus_metrics_add(f->metrics, BUS_COUNTER, "prices", NULL, "h");
    f->m.disputes = bus_metrics_add(f->metrics, BUS_COUNTER, "disputes", NULL, "h");
    f->m.store_errors = bus_metrics_add(f->metrics, BUS_COUNTER, "errors", NULL, "h");
    f->m.connected = bus_metrics_add(f->metrics, BUS_GAUGE, "up", NULL, "h");
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    s_fix_t *f = *state;
    bl_ledger_destroy(&f->l);
    store_destroy(&f->st);
    bus_metrics_destroy(&f->metrics);
    free(f->prices.list);
    free(f->sent);
    tu_rm_rf(f->dir);
    free(f);
    return 0;
}

/* A fresh ledger loaded from the store, nothing recorded yet. */
static void s_new_ledger(s_fix_t *f)
{
    bl_ledger_destroy(&f->l);
    f->l = bl_ledger_new(s_send, f, &f->prices, &f->m, S_RESEND_MS);
    assert_non_null(f->l);
    assert_int_equal(bl_ledger_load(f->l, f->st), 0);
    f->n_sent = 0;
}

static void s_presence(s_fix_t *f, const char *state, uint64_t now_us)
{
    bus_presence_t p;
    memset(&p, 0, sizeof p);
    p.agent_id = bus_str_c(S_AGENT);
    p.state = bus_str_c(state);
    bl_ledger_presence(f->l, f->st, &p, now_us);
}

static void s_ack(s_fix_t *f, uint64_t seq, const char *verdict, uint64_t now_us)
{
    bus_ledger_ack_t a;
    memset(&a, 0, sizeof a);
    a.seq = seq;
    a.verdict = bus_str_c(verdict);
    bl_ledger_on_ack(f->l, f->st, S_AGENT, &a, now_us);
}

static void s_nack(s_fix_t *f, uint64_t seq, uint64_t last_seq, uint64_t now_us)
{
    bus_ledger_nack_t n;
    memset(&n, 0, sizeof n);
    n.seq = seq;
    n.last_seq = last_seq;
    n.reason = bus_str_c("gap");
    bl_ledger_on_nack(f->l, f->st, S_AGENT, &n, now_us);
}

/* The ledger.tx seqs recorded from index from on must be exactly first..last in order. */
static void s_expect_rows(const s_fix_t *f, size_t from, uint64_t first, uint64_t last)
{
    uint64_t want = first;
    for (size_t i = from; i < f->n_sent; i++) {
        if (f->sent[i].type != BUS_T_LEDGER_TX)
            continue;
        if (f->sent[i].seq != want)
            fail_msg("sent row %llu where %llu was due", (unsigned long long)f->sent[i].seq,
                     (unsigned long long)want);
        want++;
    }
    if (want != last + 1)
        fail_msg("rows %llu..%llu sent, %llu..%llu expected", (unsigned long long)first,
                 (unsigned long long)want - 1, (unsigned long long)first, (unsigned long long)last);
}

/* Every ledger.tx from index from on comes after a price.table of its version. */
static void s_expect_prices_first(const s_fix_t *f, size_t from)
{
    for (size_t i = from; i < f->n_sent; i++) {
        if (f->sent[i].type != BUS_T_LEDGER_TX)
            continue;
        bool seen = false;
        for (size_t j = from; j < i && !seen; j++)
            seen = f->sent[j].type == BUS_T_PRICE_TABLE &&
                   f->sent[j].price_from == f->sent[i].price_from;
        if (!seen)
            fail_msg("row %llu sent before its price version %lld",
                     (unsigned long long)f->sent[i].seq, (long long)f->sent[i].price_from);
    }
}

static void test_window_and_acks(void **state)
{
    s_fix_t *f = *state;
    s_append(f, S_ROWS);
    s_new_ledger(f);
    uint64_t seq;
    uint8_t hash[LEDGER_HASH_LEN];
    bl_ledger_head(f->l, S_AGENT, &seq, hash);
    assert_int_equal(seq, S_ROWS);
    assert_memory_equal(hash, f->last.hash, LEDGER_HASH_LEN);
    assert_int_equal(f->n_sent, 0); /* nothing before presence */
    s_presence(f, "up", 1000);
    assert_int_equal(bl_ledger_connected(f->l), 1);
    assert_int_equal(bus_metric_get(f->m.connected), 1);
    /* one window: rows 1..256, each version's price before its first row */
    s_expect_rows(f, 0, 1, BL_LEDGER_WINDOW);
    s_expect_prices_first(f, 0);
    assert_int_equal(bus_metric_get(f->m.prices_sent), 2);
    /* presence republished: nothing new */
    size_t mark = f->n_sent;
    s_presence(f, "up", 2000);
    assert_int_equal(f->n_sent, mark);
    /* an ack opens the window by as much */
    s_ack(f, 100, "verified", 3000);
    s_expect_rows(f, mark, 257, 356);
    /* acks are cumulative; a late one changes nothing */
    mark = f->n_sent;
    s_ack(f, 50, "verified", 3100);
    assert_int_equal(f->n_sent, mark);
    /* an ack past the head is ignored */
    s_ack(f, S_ROWS + 5, "verified", 3200);
    assert_int_equal(f->n_sent, mark);
    /* recorded in the store only when flushed */
    store_account_t *acc = NULL;
    size_t n = 0;
    assert_int_equal(store_account_list(f->st, &acc, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(acc[0].acked_seq, 0);
    free(acc);
    assert_int_equal(bl_ledger_flush_acks(f->l, f->st), 0);
    assert_int_equal(store_account_list(f->st, &acc, &n), 0);
    assert_int_equal(acc[0].acked_seq, 100);
    assert_int_equal(acc[0].last_seq, S_ROWS);
    free(acc);
    /* a disputed verdict is counted once */
    s_ack(f, 120, "disputed", 3300);
    s_ack(f, 120, "disputed", 3400);
    assert_int_equal(bus_metric_get(f->m.disputes), 1);
    /* 256 + 100 + 20: the window followed the acks; rows that were in the store at start
     * count as re-sends (an earlier run may have sent them) */
    assert_int_equal(bus_metric_get(f->m.rows_sent), 376);
    assert_int_equal(bus_metric_get(f->m.resync_rows), 376);
    /* an agent that says it has everything (from an earlier run) is sent nothing more */
    mark = f->n_sent;
    s_ack(f, S_ROWS, "verified", 3500);
    assert_int_equal(f->n_sent, mark);
}

static void test_nack_rewinds_once(void **state)
{
    s_fix_t *f = *state;
    s_new_ledger(f);
    s_presence(f, "up", 1000);
    /* the store has the acks flushed so far (100): the rest was in memory only */
    size_t mark = 0;
    s_expect_rows(f, mark, 101, 100 + BL_LEDGER_WINDOW);
    s_ack(f, 140, "verified", 2000);
    mark = f->n_sent;
    /* row 142 was lost: the agent refuses 143, 144, ... each naming 141 */
    s_nack(f, 143, 141, 3000);
    s_expect_rows(f, mark, 142, 141 + BL_LEDGER_WINDOW);
    assert_true(bus_metric_get(f->m.resync_rows) > 0);
    mark = f->n_sent;
    s_nack(f, 144, 141, 3100);
    s_nack(f, 145, 141, 3200);
    assert_int_equal(f->n_sent, mark); /* one rewind serves them all */
    /* a nack naming more than the chain has: from the head, nothing to send */
    s_nack(f, 1, 10 * S_ROWS, 3300);
    assert_int_equal(f->n_sent, mark);
}

static void test_sync_sends_prices_then_rows(void **state)
{
    s_fix_t *f = *state;
    s_new_ledger(f);
    s_presence(f, "up", 1000);
    size_t mark = f->n_sent;
    bus_ledger_sync_t sy;
    memset(&sy, 0, sizeof sy);
    sy.last_seq = 590;
    sy.last_hash = (bus_bin_t){f->last.hash, LEDGER_HASH_LEN}; /* not row 590's: logged only */
    bl_ledger_on_sync(f->l, f->st, S_AGENT, &sy, 2000);
    /* the whole price history first, then rows 591..600 */
    assert_int_equal(f->sent[mark].type, BUS_T_PRICE_TABLE);
    assert_int_equal(f->sent[mark + 1].type, BUS_T_PRICE_TABLE);
    assert_int_equal(f->sent[mark].price_from, 1000);
    assert_int_equal(f->sent[mark + 1].price_from, 2000);
    s_expect_rows(f, mark, 591, S_ROWS);
    assert_string_equal(f->sent[mark].agent, S_AGENT);
    /* the sync counts as the agent's word: acked up to 590 */
    assert_int_equal(bl_ledger_flush_acks(f->l, f->st), 0);
    store_account_t *acc = NULL;
    size_t n = 0;
    assert_int_equal(store_account_list(f->st, &acc, &n), 0);
    assert_int_equal(acc[0].acked_seq, 590);
    free(acc);
    /* a sync from 0: everything again, in windows */
    mark = f->n_sent;
    sy.last_seq = 0;
    sy.last_hash = (bus_bin_t){NULL, 0};
    bl_ledger_on_sync(f->l, f->st, S_AGENT, &sy, 3000);
    s_expect_rows(f, mark, 1, BL_LEDGER_WINDOW);
    s_expect_prices_first(f, mark);
}

static void test_resend_on_timer(void **state)
{
    s_fix_t *f = *state;
    s_new_ledger(f); /* acked 590 in the store */
    int64_t resync = bus_metric_get(f->m.resync_rows);
    s_presence(f, "up", 1000000);
    s_expect_rows(f, 0, 591, S_ROWS);
    assert_int_equal(bus_metric_get(f->m.resync_rows) - resync, S_ROWS - 590);
    /* within the period nothing is sent again */
    size_t mark = f->n_sent;
    bl_ledger_tick(f->l, f->st, 1000000 + S_RESEND_MS * 1000 - 1);
    assert_int_equal(f->n_sent, mark);
    /* a whole period without an ack: again */
    bl_ledger_tick(f->l, f->st, 1000000 + S_RESEND_MS * 1000);
    s_expect_rows(f, mark, 591, S_ROWS);
    /* acked: nothing more */
    s_ack(f, S_ROWS, "verified", 3000000);
    mark = f->n_sent;
    bl_ledger_tick(f->l, f->st, 9000000);
    assert_int_equal(f->n_sent, mark);
}

static void test_refused_sends_and_presence(void **state)
{
    s_fix_t *f = *state;
    s_new_ledger(f);
    /* the agent is away: a new row waits */
    s_append(f, 1);
    assert_int_equal(bl_ledger_committed(f->l, &f->last), 0);
    assert_int_equal(f->n_sent, 0);
    /* a row that does not follow the head is refused, the head stays */
    ledger_row_t bad = f->last;
    bad.seq += 5;
    assert_int_equal(bl_ledger_committed(f->l, &bad), -ESTALE);
    uint64_t seq;
    uint8_t hash[LEDGER_HASH_LEN];
    bl_ledger_head(f->l, S_AGENT, &seq, hash);
    assert_int_equal(seq, S_ROWS + 1);
    /* up while the tunnel refuses: nothing sent, then the timer tries again */
    f->refuse = 1;
    s_presence(f, "up", 1000000);
    assert_int_equal(f->n_sent, 0);
    f->refuse = 0;
    bl_ledger_tick(f->l, f->st, 1100000);
    s_expect_rows(f, 0, 591, S_ROWS + 1);
    s_ack(f, S_ROWS + 1, "verified", 1200000);
    /* connected and up to date: a new row goes out at once, from memory */
    size_t mark = f->n_sent;
    s_append(f, 1);
    assert_int_equal(bl_ledger_committed(f->l, &f->last), 0);
    s_expect_rows(f, mark, S_ROWS + 2, S_ROWS + 2);
    /* down: the next row waits; up again: it goes */
    s_presence(f, "down", 1300000);
    assert_int_equal(bl_ledger_connected(f->l), 0);
    mark = f->n_sent;
    s_append(f, 1);
    assert_int_equal(bl_ledger_committed(f->l, &f->last), 0);
    assert_int_equal(f->n_sent, mark);
    s_presence(f, "up", 1400000);
    /* prices are sent again after a down (the agent syncs its table anew) */
    s_expect_prices_first(f, mark);
    s_expect_rows(f, mark, S_ROWS + 2, S_ROWS + 3);
    /* no presence for too long: counted down */
    bl_ledger_tick(f->l, f->st, 1400000 + BL_PRESENCE_MAX_AGE_US + 1);
    assert_int_equal(bl_ledger_connected(f->l), 0);
    /* an agent message means it is connected */
    s_ack(f, S_ROWS + 3, "verified", 20000000);
    assert_int_equal(bl_ledger_connected(f->l), 1);
    /* an agent the store has never heard of */
    bus_presence_t p;
    memset(&p, 0, sizeof p);
    p.agent_id = bus_str_c("newcomer");
    p.state = bus_str_c("up");
    mark = f->n_sent;
    bl_ledger_presence(f->l, f->st, &p, 20000001);
    assert_int_equal(bl_ledger_connected(f->l), 2);
    assert_int_equal(f->n_sent, mark);
    bl_ledger_head(f->l, "newcomer", &seq, hash);
    assert_int_equal(seq, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_and_acks),
        cmocka_unit_test(test_nack_rewinds_once),
        cmocka_unit_test(test_sync_sends_prices_then_rows),
        cmocka_unit_test(test_resend_on_timer),
        cmocka_unit_test(test_refused_sends_and_presence),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
