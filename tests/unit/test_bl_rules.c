/* Unit tests for bl_rules: hub-billing's pure decisions — prices by time, hold amounts, which
 * usage report settles a request, and the sealed ledger row. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "bl_rules.h"

/* ---- fixtures ------------------------------------------------------------------------------ */

static store_price_t s_price(const char *model, int64_t from, int64_t in, int64_t out,
                             int64_t cached)
{
    store_price_t p;
    memset(&p, 0, sizeof p);
    snprintf(p.model, sizeof p.model, "%s", model);
    p.effective_from = from;
    p.input = in;
    p.output = out;
    p.cached_input = cached;
    return p;
}

/* A report of one attempt. */
static store_usage_t s_report(const char *source, uint32_t attempt, bool delivered, int64_t in,
                              int64_t cached, int64_t out, int64_t received_at)
{
    store_usage_t u;
    memset(&u, 0, sizeof u);
    memset(u.req_id, 0xab, sizeof u.req_id);
    snprintf(u.source, sizeof u.source, "%s", source);
    u.attempt = attempt;
    snprintf(u.agent_id, sizeof u.agent_id, "agent-%u", attempt);
    snprintf(u.model, sizeof u.model, "gpt-test");
    u.status = 200;
    u.delivered = delivered;
    u.complete = true;
    u.input_tokens = in;
    u.cached_tokens = cached;
    u.output_tokens = out;
    u.received_at = received_at;
    if (strcmp(source, "gateway") == 0)
        u.user_id = 7;
    return u;
}

static store_hold_t s_hold(int64_t user, int64_t amount, int state)
{
    store_hold_t h;
    memset(&h, 0, sizeof h);
    memset(h.req_id, 0xab, sizeof h.req_id);
    h.user_id = user;
    h.amount = amount;
    h.created_at = 1000;
    h.expires_at = 1000 + 3600000;
    h.state = state;
    return h;
}

/* ---- prices -------------------------------------------------------------------------------- */

static void test_unpriced_parse(void **state)
{
    (void)state;
    bl_unpriced_t u = BL_UNPRICED_FREE;
    assert_int_equal(bl_unpriced_parse("refuse", &u), 0);
    assert_int_equal(u, BL_UNPRICED_REFUSE);
    assert_int_equal(bl_unpriced_parse("free", &u), 0);
    assert_int_equal(u, BL_UNPRICED_FREE);
    assert_int_equal(bl_unpriced_parse("Free", &u), -EINVAL);
    assert_int_equal(bl_unpriced_parse("", &u), -EINVAL);
    assert_int_equal(bl_unpriced_parse(NULL, &u), -EINVAL);
}

static void test_price_at_picks_the_version_in_force(void **state)
{
    (void)state;
    /* Unsorted on purpose, with a model that is a prefix of another and one that differs only
     * by case (MySQL's collation may sort them differently from bytes). */
    store_price_t list[] = {
        s_price("gpt-4", 2000, 20, 40, 10), s_price("gpt", 1000, 1, 2, 0),
        s_price("gpt-4", 1000, 10, 30, 5),  s_price("GPT-4", 1500, 99, 99, 99),
        s_price("gpt-4", 3000, 30, 50, 15), s_price("gpt-4o", 500, 7, 7, 7),
    };
    bl_prices_t p = {list, sizeof list / sizeof list[0], 1};
    bl_prices_sort(p.list, p.n);
    for (size_t i = 1; i < p.n; i++)
        assert_true(strcmp(p.list[i - 1].model, p.list[i].model) < 0 ||
                    (strcmp(p.list[i - 1].model, p.list[i].model) == 0 &&
                     p.list[i - 1].effective_from < p.list[i].effective_from));
    assert_null(bl_price_at(&p, "gpt-4", 999)); /* before the first version */
    assert_int_equal(bl_price_at(&p, "gpt-4", 1000)->input, 10);
    assert_int_equal(bl_price_at(&p, "gpt-4", 1999)->input, 10);
    assert_int_equal(bl_price_at(&p, "gpt-4", 2000)->input, 20);
    assert_int_equal(bl_price_at(&p, "gpt-4", 2999)->input, 20);
    assert_int_equal(bl_price_at(&p, "gpt-4", INT64_MAX)->input, 30);
    assert_int_equal(bl_price_at(&p, "GPT-4", 2000)->input, 99);
    assert_int_equal(bl_price_at(&p, "gpt", 5000)->input, 1);
    assert_int_equal(bl_price_at(&p, "gpt-4o", 500)->input, 7);
    assert_null(bl_price_at(&p, "gpt-", 5000));
    assert_null(bl_price_at(&p, "gpt-4o-mini", 5000));
    assert_null(bl_price_at(&p, "", 5000));
    assert_int_equal(bl_price_version(&p, "gpt-4", 2000)->output, 40);
    assert_null(bl_price_version(&p, "gpt-4", 2001));
    assert_null(bl_price_version(&p, "gpt-4o", 0));
    bl_prices_t empty = {NULL, 0, -1};
    assert_null(bl_price_at(&empty, "gpt", 1));
}

/* ---- holds --------------------------------------------------------------------------------- */

static void test_hold_amount(void **state)
{
    (void)state;
    /* 2 micro-units per input token, 8 per output token (per 1M: 2,000,000 and 8,000,000). */
    store_price_t p = s_price("m", 0, 2000000, 8000000, 1000000);
    int64_t a = -1;
    assert_int_equal(bl_hold_amount(&p, BL_UNPRICED_REFUSE, 1000, 500, 4096, &a), 0);
    assert_int_equal(a, 1000 * 2 + 500 * 8);
    /* max_tokens 0: the configured default bounds the output */
    assert_int_equal(bl_hold_amount(&p, BL_UNPRICED_REFUSE, 1000, 0, 4096, &a), 0);
    assert_int_equal(a, 1000 * 2 + 4096 * 8);
    /* cached price never lowers a hold: input is counted uncached */
    assert_int_equal(bl_hold_amount(&p, BL_UNPRICED_REFUSE, 10, 1, 1, &a), 0);
    assert_int_equal(a, 10 * 2 + 8);
    /* rounded once, up: one token at 1 micro-unit per million tokens costs 1 */
    store_price_t tiny = s_price("m", 0, 1, 1, 0);
    assert_int_equal(bl_hold_amount(&tiny, BL_UNPRICED_REFUSE, 1, 1, 1, &a), 0);
    assert_int_equal(a, 1);
    assert_int_equal(bl_hold_amount(&tiny, BL_UNPRICED_REFUSE, 1000000, 1000000, 1, &a), 0);
    assert_int_equal(a, 2);
    /* zero price: zero hold */
    store_price_t zero = s_price("m", 0, 0, 0, 0);
    assert_int_equal(bl_hold_amount(&zero, BL_UNPRICED_REFUSE, 5000, 100, 1, &a), 0);
    assert_int_equal(a, 0);
    /* a bound past int64 holds the most there is (refused by any balance) */
    store_price_t dear = s_price("m", 0, INT64_MAX, INT64_MAX, 0);
    assert_int_equal(bl_hold_amount(&dear, BL_UNPRICED_REFUSE, INT64_MAX, INT64_MAX, 1, &a), 0);
    assert_int_equal(a, INT64_MAX);
    /* negative figures from the wire */
    assert_int_equal(bl_hold_amount(&p, BL_UNPRICED_REFUSE, -1, 0, 4096, &a), -EINVAL);
    assert_int_equal(bl_hold_amount(&p, BL_UNPRICED_REFUSE, 1, -5, 4096, &a), -EINVAL);
}

static void test_hold_unpriced(void **state)
{
    (void)state;
    int64_t a = -1;
    assert_int_equal(bl_hold_amount(NULL, BL_UNPRICED_REFUSE, 100, 10, 4096, &a), -ENOENT);
    assert_int_equal(a, -1);
    assert_int_equal(bl_hold_amount(NULL, BL_UNPRICED_FREE, 100, 10, 4096, &a), 0);
    assert_int_equal(a, 0);
}

/* ---- which report settles ------------------------------------------------------------------ */

static void test_gateway_figure_settles(void **state)
{
    (void)state;
    store_hold_t h = s_hold(9, 100000, STORE_HOLD_ACTIVE);
    /* the agent saw more (the gateway saw a prefix): the gateway's figure wins at once */
    store_usage_t r[] = {s_report("agent", 1, true, 100, 0, 900, 5000),
                         s_report("gateway", 1, true, 100, 0, 400, 5001)};
    bl_decision_t d;
    bl_settle_decide(r, 2, &h, 5002, 30000, &d);
    assert_int_equal(d.verdict, BL_BILL);
    assert_ptr_equal(d.report, &r[1]);
    assert_false(d.capped);
    assert_int_equal(d.user_id, 7); /* the gateway's user, not the hold's */
    assert_string_equal(d.agent_id, "agent-1");
    assert_string_equal(d.model, "gpt-test");
    /* without a hold the gateway's report still charges its user */
    bl_settle_decide(&r[1], 1, NULL, 5002, 30000, &d);
    assert_int_equal(d.verdict, BL_BILL);
    assert_int_equal(d.user_id, 7);
}

static void test_gateway_delivered_attempt(void **state)
{
    (void)state;
    /* attempt 1 failed before its first byte; attempt 2 delivered */
    store_usage_t r[] = {s_report("gateway", 1, false, 0, 0, 0, 10),
                         s_report("gateway", 2, true, 50, 10, 60, 11),
                         s_report("agent", 2, true, 50, 10, 70, 12)};
    bl_decision_t d;
    bl_settle_decide(r, 3, NULL, 20, 30000, &d);
    assert_int_equal(d.verdict, BL_BILL);
    assert_int_equal(d.report->attempt, 2);
    assert_string_equal(d.agent_id, "agent-2");
    /* no attempt delivered: nothing to charge, even though the agent reported tokens */
    store_usage_t none[] = {s_report("gateway", 1, false, 10, 0, 5, 10),
                            s_report("agent", 1, true, 10, 0, 5, 10)};
    bl_settle_decide(none, 2, NULL, 20, 30000, &d);
    assert_int_equal(d.verdict, BL_NOTHING);
    assert_null(d.report);
}

static void test_gateway_report_without_agent_id(void **state)
{
    (void)state;
    store_usage_t r[] = {s_report("gateway", 2, true, 5, 0, 5, 10),
                         s_report("agent", 2, true, 5, 0, 5, 10)};
    r[0].agent_id[0] = '\0';
    snprintf(r[1].agent_id, sizeof r[1].agent_id, "served-it");
    bl_decision_t d;
    bl_settle_decide(r, 2, NULL, 20, 30000, &d);
    assert_int_equal(d.verdict, BL_BILL);
    assert_string_equal(d.agent_id, "served-it");
    /* nobody names the agent: no chain to append to */
    bl_settle_decide(r, 1, NULL, 20, 30000, &d);
    assert_int_equal(d.verdict, BL_NOTHING);
    /* nobody names the model */
    r[0].model[0] = '\0';
    r[1].model[0] = '\0';
    bl_settle_decide(r, 2, NULL, 20, 30000, &d);
    assert_int_equal(d.verdict, BL_NOTHING);
}

static void test_agent_figure_after_grace(void **state)
{
    (void)state;
    store_hold_t h = s_hold(9, 1234, STORE_HOLD_ACTIVE);
    store_usage_t r[] = {s_report("agent", 1, true, 100, 0, 200, 10000)};
    bl_decision_t d;
    bl_settle_decide(r, 1, &h, 10000 + 29999, 30000, &d);
    assert_int_equal(d.verdict, BL_WAIT); /* the gateway may still report */
    bl_settle_decide(r, 1, &h, 10000 + 30000, 30000, &d);
    assert_int_equal(d.verdict, BL_BILL);
    assert_true(d.capped);
    assert_int_equal(d.user_id, 9); /* the hold's user */
    assert_ptr_equal(d.report, &r[0]);
    /* no hold: nobody to charge */
    bl_settle_decide(r, 1, NULL, 10000 + 30000, 30000, &d);
    assert_int_equal(d.verdict, BL_NOTHING);
    /* a refused hold reserved nothing: the same */
    store_hold_t refused = s_hold(9, 1234, STORE_HOLD_REFUSED);
    bl_settle_decide(r, 1, &refused, 10000 + 30000, 30000, &d);
    assert_int_equal(d.verdict, BL_NOTHING);
    /* an expired hold still names the user and caps the charge */
    store_hold_t expired = s_hold(9, 1234, STORE_HOLD_EXPIRED);
    bl_settle_decide(r, 1, &expired, 10000 + 30000, 30000, &d);
    assert_int_equal(d.verdict, BL_BILL);
    /* the grace counts from the oldest report */
    store_usage_t two[] = {s_report("agent", 1, false, 0, 0, 0, 5000),
                           s_report("agent", 2, true, 10, 0, 10, 9000)};
    bl_settle_decide(two, 2, &h, 35000, 30000, &d);
    assert_int_equal(d.verdict, BL_BILL);
    assert_int_equal(d.report->attempt, 2);
    bl_settle_decide(two, 2, &h, 34999, 30000, &d);
    assert_int_equal(d.verdict, BL_WAIT);
    /* no agent attempt delivered */
    two[1].delivered = false;
    bl_settle_decide(two, 2, &h, 35000, 30000, &d);
    assert_int_equal(d.verdict, BL_NOTHING);
}

static void test_zero_tokens_is_nothing(void **state)
{
    (void)state;
    store_hold_t h = s_hold(9, 1234, STORE_HOLD_ACTIVE);
    store_usage_t g[] = {s_report("gateway", 1, true, 0, 0, 0, 10)};
    g[0].status = 500;
    bl_decision_t d;
    bl_settle_decide(g, 1, &h, 11, 30000, &d);
    assert_int_equal(d.verdict, BL_NOTHING);
    store_usage_t a[] = {s_report("agent", 1, true, 0, 0, 0, 10)};
    bl_settle_decide(a, 1, &h, 100000, 30000, &d);
    assert_int_equal(d.verdict, BL_NOTHING);
    /* cached tokens alone are tokens */
    g[0].cached_tokens = 3;
    bl_settle_decide(g, 1, &h, 11, 30000, &d);
    assert_int_equal(d.verdict, BL_BILL);
    /* nothing reported at all */
    bl_settle_decide(NULL, 0, &h, 11, 30000, &d);
    assert_int_equal(d.verdict, BL_WAIT);
}

static void test_no_user_is_nothing(void **state)
{
    (void)state;
    store_usage_t g[] = {s_report("gateway", 1, true, 5, 0, 5, 10)};
    g[0].user_id = 0;
    bl_decision_t d;
    bl_settle_decide(g, 1, NULL, 11, 30000, &d);
    assert_int_equal(d.verdict, BL_NOTHING);
    store_hold_t h = s_hold(4, 10, STORE_HOLD_ACTIVE);
    bl_settle_decide(g, 1, &h, 11, 30000, &d);
    assert_int_equal(d.verdict, BL_BILL);
    assert_int_equal(d.user_id, 4);
}

/* ---- the row ------------------------------------------------------------------------------- */

static void test_row_from_gateway_figure(void **state)
{
    (void)state;
    store_price_t p = s_price("gpt-test", 900, 3000000, 9000000, 1000000);
    store_hold_t h = s_hold(7, 50, STORE_HOLD_ACTIVE);
    store_usage_t r[] = {s_report("gateway", 1, true, 100, 40, 30, 10)};
    bl_decision_t d;
    bl_settle_decide(r, 1, &h, 11, 30000, &d);
    assert_int_equal(d.verdict, BL_BILL);
    ledger_row_t row;
    assert_int_equal(bl_build_row(&d, r[0].req_id, &p, &h, 100000, 4242, 1, NULL, &row), 0);
    /* 60 uncached × 3 + 40 cached × 1 + 30 out × 9 = 490: above the hold, charged in full */
    assert_int_equal(row.cost, 490);
    assert_int_equal(row.fee, 49);
    assert_int_equal(row.credit, 441);
    assert_int_equal(row.hold, 50);
    assert_int_equal(row.price_from, 900);
    assert_int_equal(row.fee_ppm, 100000);
    assert_int_equal(row.created_ms, 4242);
    assert_int_equal(row.seq, 1);
    assert_int_equal(row.attempt, 1);
    assert_int_equal(row.user_id, 7);
    assert_string_equal(row.agent_id, "agent-1");
    assert_string_equal(row.model, "gpt-test");
    assert_memory_equal(row.req_id, r[0].req_id, 16);
    uint8_t zeros[LEDGER_HASH_LEN] = {0};
    assert_memory_equal(row.prev_hash, zeros, LEDGER_HASH_LEN);
    uint8_t h2[LEDGER_HASH_LEN];
    assert_int_equal(ledger_hash(&row, h2), 0);
    assert_memory_equal(row.hash, h2, LEDGER_HASH_LEN);
}

/* An estimated gateway figure (the user left mid-stream) waits for the agent's report of the
 * same attempt, and each figure is then bounded by the agent's own count. */
static void test_estimate_bounded_by_the_agent(void **state)
{
    (void)state;
    store_price_t p = s_price("gpt-test", 900, 3000000, 9000000, 1000000);
    store_hold_t h = s_hold(7, 5000, STORE_HOLD_ACTIVE);
    store_usage_t g[] = {s_report("gateway", 1, true, 29, 0, 40, 100)};
    g[0].estimated = true;
    g[0].complete = false;
    bl_decision_t d;
    bl_settle_decide(g, 1, &h, 200, 30000, &d);
    assert_int_equal(d.verdict, BL_WAIT); /* the agent's report may still come */
    bl_settle_decide(g, 1, &h, 100 + 30000, 30000, &d);
    assert_int_equal(d.verdict, BL_BILL); /* it did not: the estimate alone */
    assert_null(d.limit);

    /* The agent counted 39 in (30 cached) and 30 out: the estimate's 29 in and 40 out become
     * 29 in (20 cached, so that uncached stays within the agent's 9) and 30 out. */
    store_usage_t r[] = {g[0], s_report("agent", 1, true, 39, 30, 30, 150)};
    bl_settle_decide(r, 2, &h, 200, 30000, &d);
    assert_int_equal(d.verdict, BL_BILL);
    assert_ptr_equal(d.report, &r[0]);
    assert_ptr_equal(d.limit, &r[1]);
    ledger_row_t row;
    assert_int_equal(bl_build_row(&d, r[0].req_id, &p, &h, 0, 4242, 1, NULL, &row), 0);
    assert_int_equal(row.input_tokens, 29);
    assert_int_equal(row.cached_tokens, 20);
    assert_int_equal(row.output_tokens, 30);
    assert_true(row.estimated);
    /* 9 uncached × 3 + 20 cached × 1 + 30 out × 9 = 317 */
    assert_int_equal(row.cost, 317);

    /* A complete gateway figure is never bounded. */
    r[0].estimated = false;
    r[0].complete = true;
    bl_settle_decide(r, 2, &h, 200, 30000, &d);
    assert_null(d.limit);
}

static void test_row_capped_by_hold(void **state)
{
    (void)state;
    store_price_t p = s_price("gpt-test", 0, 1000000, 1000000, 0);
    store_hold_t h = s_hold(9, 150, STORE_HOLD_ACTIVE);
    store_usage_t r[] = {s_report("agent", 3, true, 100, 0, 200, 0)};
    bl_decision_t d;
    bl_settle_decide(r, 1, &h, 30000, 30000, &d);
    assert_int_equal(d.verdict, BL_BILL);
    ledger_row_t row;
    assert_int_equal(bl_build_row(&d, r[0].req_id, &p, &h, 333333, 1, 1, NULL, &row), 0);
    assert_int_equal(row.cost, 150); /* 300 by the agent's figure, capped at the hold */
    assert_int_equal(row.fee, 49);   /* floor(150 × 0.333333) */
    assert_int_equal(row.credit, 101);
    assert_int_equal(row.fee + row.credit, row.cost);
    assert_int_equal(row.attempt, 3);
    assert_int_equal(row.user_id, 9);
    /* under the hold: the figure as it is */
    r[0].output_tokens = 20;
    bl_settle_decide(r, 1, &h, 30000, 30000, &d);
    assert_int_equal(bl_build_row(&d, r[0].req_id, &p, &h, 0, 1, 1, NULL, &row), 0);
    assert_int_equal(row.cost, 120);
    assert_int_equal(row.fee, 0);
    assert_int_equal(row.credit, 120);
}

static void test_rows_chain(void **state)
{
    (void)state;
    store_price_t p = s_price("gpt-test", 0, 1000000, 2000000, 0);
    store_usage_t r[] = {s_report("gateway", 1, true, 10, 0, 10, 0)};
    bl_decision_t d;
    bl_settle_decide(r, 1, NULL, 1, 30000, &d);
    ledger_row_t rows[3];
    const uint8_t *prev = NULL;
    for (int i = 0; i < 3; i++) {
        r[0].req_id[0] = (uint8_t)i;
        assert_int_equal(
            bl_build_row(&d, r[0].req_id, &p, NULL, 0, 100 + i, (uint64_t)i + 1, prev, &rows[i]),
            0);
        prev = rows[i].hash;
    }
    ledger_walk_t w;
    ledger_walk_init(&w, "agent-1", 0, NULL);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ledger_walk_next(&w, &rows[i]), LEDGER_OK);
    assert_memory_equal(rows[2].prev_hash, rows[1].hash, LEDGER_HASH_LEN);
    assert_int_equal(rows[1].hold, 0);
}

static void test_row_edge_cases(void **state)
{
    (void)state;
    store_usage_t r[] = {s_report("gateway", 1, true, 10, 25, 10, 0)};
    bl_decision_t d;
    bl_settle_decide(r, 1, NULL, 1, 30000, &d);
    ledger_row_t row;
    /* unpriced (free): a row of cost 0 without a price version */
    assert_int_equal(bl_build_row(&d, r[0].req_id, NULL, NULL, 50000, 1, 1, NULL, &row), 0);
    assert_int_equal(row.cost, 0);
    assert_int_equal(row.fee, 0);
    assert_int_equal(row.credit, 0);
    assert_int_equal(row.price_from, 0);
    /* cached beyond the input is clamped, so that the row stays consistent */
    assert_int_equal(row.cached_tokens, 10);
    ledger_walk_t w;
    ledger_walk_init(&w, "agent-1", 0, NULL);
    assert_int_equal(ledger_walk_next(&w, &row), LEDGER_OK);
    /* not a BL_BILL decision */
    bl_decision_t nothing;
    memset(&nothing, 0, sizeof nothing);
    nothing.verdict = BL_NOTHING;
    assert_int_equal(bl_build_row(&nothing, r[0].req_id, NULL, NULL, 0, 1, 1, NULL, &row), -EINVAL);
    /* a cost past int64 cannot be a row */
    store_price_t dear = s_price("gpt-test", 0, INT64_MAX, INT64_MAX, 0);
    r[0].input_tokens = INT64_MAX;
    r[0].cached_tokens = 0;
    r[0].output_tokens = INT64_MAX;
    assert_int_equal(bl_build_row(&d, r[0].req_id, &dear, NULL, 0, 1, 1, NULL, &row), -ERANGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unpriced_parse),
        cmocka_unit_test(test_price_at_picks_the_version_in_force),
        cmocka_unit_test(test_hold_amount),
        cmocka_unit_test(test_hold_unpriced),
        cmocka_unit_test(test_gateway_figure_settles),
        cmocka_unit_test(test_gateway_delivered_attempt),
        cmocka_unit_test(test_gateway_report_without_agent_id),
        cmocka_unit_test(test_agent_figure_after_grace),
        cmocka_unit_test(test_zero_tokens_is_nothing),
        cmocka_unit_test(test_no_user_is_nothing),
        cmocka_unit_test(test_row_from_gateway_figure),
        cmocka_unit_test(test_estimate_bounded_by_the_agent),
        cmocka_unit_test(test_row_capped_by_hold),
        cmocka_unit_test(test_rows_chain),
        cmocka_unit_test(test_row_edge_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
