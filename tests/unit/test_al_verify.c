/* Unit tests for al_verify: the verdict agent-ledger gives each ledger row. One table holds
 * every verdict and every dispute reason: the row is changed from a base row, sealed with
 * lib/ledger (or tampered with after sealing), and judged against a local usage record and price
 * that each case sets; the table says the verdict, the reason, whether the charge was capped and
 * the unbilled figure. The figures are worked out by hand in the comments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "al_verify.h"

#define AGENT_A "a1b2c3d4e5f60718293a4b5c6d7e8f90"
#define AGENT_B "b1b2c3d4e5f60718293a4b5c6d7e8f90"

/* Prices per 1M tokens: 2.0 input, 0.5 cached input, 8.0 output (2, 0.5 and 8 micros a token).
 * The base row, 1000 input of which 200 cached, 500 output:
 *   800 * 2 + 200 * 0.5 + 500 * 8 = 1600 + 100 + 4000 = 5700 micros; fee 10% = 570. */
static const money_price_t s_price = {.input = 2000000, .cached_input = 500000, .output = 8000000};
static const uint8_t s_prev[LEDGER_HASH_LEN] = {0xab, 0xcd, 0xef, 1, 2, 3};

/* The base row: seq 8 after s_prev, priced right, within its hold. Not sealed. */
static void s_base(ledger_row_t *r)
{
    memset(r, 0, sizeof *r);
    snprintf(r->agent_id, sizeof r->agent_id, "%s", AGENT_A);
    r->seq = 8;
    for (int i = 0; i < 16; i++)
        r->req_id[i] = (uint8_t)(0x40 + i);
    r->attempt = 1;
    r->user_id = 7;
    snprintf(r->model, sizeof r->model, "gpt-4o-mini");
    r->input_tokens = 1000;
    r->cached_tokens = 200;
    r->output_tokens = 500;
    r->cost = 5700;
    r->fee = 570;
    r->credit = 5130;
    r->hold = 10000;
    r->price_from = 1764115200000;
    r->fee_ppm = 100000;
    r->created_ms = 1795000000000;
}

/* The local record matching the base row: a stream the vendor completed. */
static void s_local(al_usage_t *u)
{
    memset(u, 0, sizeof *u);
    for (int i = 0; i < 16; i++)
        u->req_id[i] = (uint8_t)(0x40 + i);
    u->attempt = 1;
    snprintf(u->model, sizeof u->model, "gpt-4o-mini");
    u->status = 200;
    u->delivered = true;
    u->complete = true;
    u->input_tokens = 1000;
    u->cached_tokens = 200;
    u->output_tokens = 500;
}

/* What a case changes. */
typedef enum {
    C_NONE,
    C_LOCAL_SAME_ESTIMATED, /* same tokens, but the record is estimated */
    C_LOCAL_OUT_700_CUT,    /* local output 700 on an interrupted stream */
    C_LOCAL_OUT_700_EST,    /* local output 700, complete but estimated */
    C_LOCAL_OUT_700_FULL,   /* local output 700 on a completed stream */
    C_HUB_EST_LOCAL_FULL,   /* the hub's row is an estimate (the user left); ours complete */
    C_LOCAL_OUT_400_CUT,    /* local output 400 (below the row's 500), interrupted */
    C_LOCAL_CACHED_300_CUT, /* local cached 300 (row's 200 means more uncached), interrupted */
    C_LOCAL_MODEL,          /* the local record is of another model */
    C_NO_LOCAL,             /* no local record */
    C_CAP_3000,             /* charge capped at a hold of 3000: fee 300, credit 2700 */
    C_CAP_3000_NO_LOCAL,    /* the same without a local record */
    C_CAP_BAD_SPLIT,        /* capped at 3000 with fee 301 */
    C_CAP_ABOVE_PRICE,      /* "capped" at a hold of 6000 above the priced 5700 */
    C_CAP_ZERO_HOLD,        /* cost 0 at a hold of 0 (a request that reserved nothing) */
    C_HOLD_5000_NO_LOCAL,   /* no local record and cost 5700 above a hold of 5000 */
    C_HOLD_0_NO_LOCAL,      /* no local record and no hold */
    C_TAMPER_COST,          /* cost changed after sealing */
    C_TAMPER_TOKENS,        /* output tokens changed after sealing */
    C_WRONG_PREV,           /* sealed after another hash than the agent's last */
    C_OTHER_AGENT,          /* a row of agent B */
    C_NO_PRICE,             /* the agent has no such price version */
    C_COST_PLUS_1,          /* cost 5701 (fee 570, credit 5131): consistent but mispriced */
    C_COST_BELOW,           /* cost 5000 (fee 500, credit 4500) below the price, not the hold */
    C_FEE_SHIFTED,          /* fee 571, credit 5129: the split is not the fee rule's */
    C_NEGATIVE_TOKENS,      /* output -1 */
    C_FEE_PPM_RANGE,        /* fee_ppm over 1,000,000 */
    C_ROUND_UP,             /* 1 output token: 8 micros; 3 input tokens: 6; cost 14, fee 1 */
    C_FREE_OUTPUT_CUT,      /* output price 0, local output 700 interrupted: unbilled 0 */
} s_change_t;

typedef struct {
    const char *name;
    s_change_t change;
    al_verdict_t verdict;
    al_reason_t reason;
    bool capped;
    int64_t unbilled;
} s_case_t;

static const s_case_t s_cases[] = {
    {"verified", C_NONE, AL_VERIFIED, AL_R_NONE, false, 0},
    {"verified: same tokens, estimated record", C_LOCAL_SAME_ESTIMATED, AL_VERIFIED, AL_R_NONE,
     false, 0},
    {"verified: cost rounded up", C_ROUND_UP, AL_VERIFIED, AL_R_NONE, false, 0},
    /* local 1000/200/700: 1600 + 100 + 5600 = 7300; unbilled 7300 - 5700 = 1600 */
    {"accepted: interrupted stream, lower output", C_LOCAL_OUT_700_CUT, AL_ACCEPTED, AL_R_NONE,
     false, 1600},
    {"accepted: estimated record, lower output", C_LOCAL_OUT_700_EST, AL_ACCEPTED, AL_R_NONE, false,
     1600},
    /* capped at 3000 with the agent's own 5700 figure: unbilled 2700 */
    {"accepted: capped at the hold", C_CAP_3000, AL_ACCEPTED, AL_R_NONE, true, 2700},
    {"accepted: lower tokens at a zero price", C_FREE_OUTPUT_CUT, AL_ACCEPTED, AL_R_NONE, false, 0},
    {"hub-attested: no record, within the hold", C_NO_LOCAL, AL_HUB_ATTESTED, AL_R_NONE, false, 0},
    {"hub-attested: no record, capped", C_CAP_3000_NO_LOCAL, AL_HUB_ATTESTED, AL_R_NONE, true, 0},
    {"disputed: cost changed after sealing", C_TAMPER_COST, AL_DISPUTED, AL_R_BAD_HASH, false, 0},
    {"disputed: tokens changed after sealing", C_TAMPER_TOKENS, AL_DISPUTED, AL_R_BAD_HASH, false,
     0},
    {"disputed: wrong prev_hash", C_WRONG_PREV, AL_DISPUTED, AL_R_BAD_PREV, false, 0},
    {"disputed: another agent's row", C_OTHER_AGENT, AL_DISPUTED, AL_R_AGENT_ID, false, 0},
    {"disputed: unknown price version", C_NO_PRICE, AL_DISPUTED, AL_R_UNKNOWN_PRICE, false, 0},
    {"disputed: cost above the price", C_COST_PLUS_1, AL_DISPUTED, AL_R_BAD_AMOUNTS, false, 0},
    {"disputed: cost below the price, not at the hold", C_COST_BELOW, AL_DISPUTED, AL_R_BAD_AMOUNTS,
     false, 0},
    {"disputed: fee not the fee rule's", C_FEE_SHIFTED, AL_DISPUTED, AL_R_BAD_AMOUNTS, false, 0},
    {"disputed: capped with a wrong split", C_CAP_BAD_SPLIT, AL_DISPUTED, AL_R_BAD_AMOUNTS, false,
     0},
    {"disputed: cost at a hold above the price", C_CAP_ABOVE_PRICE, AL_DISPUTED, AL_R_BAD_AMOUNTS,
     false, 0},
    /* capped at a hold of 0: the whole 5700 unbilled */
    {"accepted: capped at a hold of 0", C_CAP_ZERO_HOLD, AL_ACCEPTED, AL_R_NONE, true, 5700},
    {"disputed: negative tokens", C_NEGATIVE_TOKENS, AL_DISPUTED, AL_R_BAD_AMOUNTS, false, 0},
    {"disputed: fee_ppm out of range", C_FEE_PPM_RANGE, AL_DISPUTED, AL_R_BAD_AMOUNTS, false, 0},
    {"disputed: another model", C_LOCAL_MODEL, AL_DISPUTED, AL_R_MODEL, false, 0},
    {"disputed: hub output above the agent's", C_LOCAL_OUT_400_CUT, AL_DISPUTED, AL_R_HUB_HIGHER,
     false, 0},
    {"disputed: hub uncached input above the agent's", C_LOCAL_CACHED_300_CUT, AL_DISPUTED,
     AL_R_HUB_HIGHER, false, 0},
    {"accepted: the hub estimated a stream the user left", C_HUB_EST_LOCAL_FULL, AL_ACCEPTED,
     AL_R_NONE, false, 1600},
    {"disputed: other tokens on a completed stream", C_LOCAL_OUT_700_FULL, AL_DISPUTED,
     AL_R_TOKENS_DIFFER, false, 0},
    {"disputed: no record, cost over the hold", C_HOLD_5000_NO_LOCAL, AL_DISPUTED, AL_R_OVER_HOLD,
     false, 0},
    {"disputed: no record, no hold", C_HOLD_0_NO_LOCAL, AL_DISPUTED, AL_R_OVER_HOLD, false, 0},
};

/* Runs one case; fails the test with its name on any difference. */
static void s_run(const s_case_t *c)
{
    ledger_row_t row;
    al_usage_t local;
    s_base(&row);
    s_local(&local);
    money_price_t price = s_price;
    const money_price_t *pp = &price;
    const al_usage_t *lp = &local;
    const uint8_t *seal_prev = s_prev;
    switch (c->change) {
    case C_LOCAL_SAME_ESTIMATED:
        local.estimated = true;
        local.complete = false;
        break;
    case C_LOCAL_OUT_700_CUT:
        local.output_tokens = 700;
        local.complete = false;
        break;
    case C_LOCAL_OUT_700_EST:
        local.output_tokens = 700;
        local.estimated = true;
        break;
    case C_LOCAL_OUT_700_FULL:
        local.output_tokens = 700;
        break;
    case C_HUB_EST_LOCAL_FULL:
        local.output_tokens = 700;
        row.estimated = true;
        break;
    case C_LOCAL_OUT_400_CUT:
        local.output_tokens = 400;
        local.complete = false;
        break;
    case C_LOCAL_CACHED_300_CUT:
        local.cached_tokens = 300;
        local.complete = false;
        break;
    case C_LOCAL_MODEL:
        snprintf(local.model, sizeof local.model, "gpt-4o");
        break;
    case C_NO_LOCAL:
        lp = NULL;
        break;
    case C_CAP_3000_NO_LOCAL:
        lp = NULL;
        /* fall through */
    case C_CAP_3000:
        row.hold = 3000;
        row.cost = 3000;
        row.fee = 300;
        row.credit = 2700;
        break;
    case C_CAP_BAD_SPLIT:
        row.hold = 3000;
        row.cost = 3000;
        row.fee = 301;
        row.credit = 2699;
        break;
    case C_CAP_ABOVE_PRICE:
        row.hold = 6000;
        row.cost = 6000;
        row.fee = 600;
        row.credit = 5400;
        break;
    case C_CAP_ZERO_HOLD:
        row.hold = 0;
        row.cost = 0;
        row.fee = 0;
        row.credit = 0;
        break;
    case C_HOLD_5000_NO_LOCAL:
        lp = NULL;
        row.hold = 5000;
        break;
    case C_HOLD_0_NO_LOCAL:
        lp = NULL;
        row.hold = 0;
        break;
    case C_WRONG_PREV:
        seal_prev = NULL; /* sealed as a genesis row, but the agent has rows before it */
        break;
    case C_OTHER_AGENT:
        snprintf(row.agent_id, sizeof row.agent_id, "%s", AGENT_B);
        break;
    case C_NO_PRICE:
        pp = NULL;
        break;
    case C_COST_PLUS_1:
        row.cost = 5701;
        row.credit = 5131;
        break;
    case C_COST_BELOW:
        row.cost = 5000;
        row.fee = 500;
        row.credit = 4500;
        break;
    case C_FEE_SHIFTED:
        row.fee = 571;
        row.credit = 5129;
        break;
    case C_NEGATIVE_TOKENS:
        row.output_tokens = -1;
        break;
    case C_FEE_PPM_RANGE:
        row.fee_ppm = 1000001;
        break;
    case C_ROUND_UP:
        /* 3 * 2 + 1 * 8 = 14 micros, exactly; with price 2.000001 per 1M input: 3 * 2.000001 =
         * 6.000003, so 14.000003 rounds up to 15; fee floor(15 * 10%) = 1. */
        price.input = 2000001;
        row.input_tokens = 3;
        row.cached_tokens = 0;
        row.output_tokens = 1;
        row.cost = 15;
        row.fee = 1;
        row.credit = 14;
        local.input_tokens = 3;
        local.cached_tokens = 0;
        local.output_tokens = 1;
        break;
    case C_FREE_OUTPUT_CUT:
        /* output free: 1600 + 100 = 1700 both ways */
        price.output = 0;
        row.cost = 1700;
        row.fee = 170;
        row.credit = 1530;
        local.output_tokens = 700;
        local.complete = false;
        break;
    default:
        break;
    }
    assert_int_equal(ledger_seal(&row, seal_prev), 0);
    if (c->change == C_TAMPER_COST) {
        row.cost = 5000;
        row.credit = 4430;
    } else if (c->change == C_TAMPER_TOKENS) {
        row.output_tokens = 400;
    }
    al_result_t res;
    memset(&res, 0x5a, sizeof res);
    al_verdict_t v = al_verify(&row, AGENT_A, s_prev, pp, lp, &res);
    if (v != c->verdict || res.verdict != c->verdict || res.reason != c->reason ||
        res.capped != c->capped || res.unbilled != c->unbilled)
        fail_msg("%s: got %s/%s capped %d unbilled %lld (%s); want %s/%s capped %d unbilled "
                 "%lld",
                 c->name, al_verdict_name(res.verdict), al_reason_name(res.reason), res.capped,
                 (long long)res.unbilled, res.text, al_verdict_name(c->verdict),
                 al_reason_name(c->reason), c->capped, (long long)c->unbilled);
    if (c->verdict == AL_DISPUTED) {
        /* The stored reason starts with the reason's name and says more. */
        const char *name = al_reason_name(c->reason);
        if (strncmp(res.text, name, strlen(name)) != 0 || strlen(res.text) <= strlen(name) + 2)
            fail_msg("%s: reason text \"%s\"", c->name, res.text);
    } else if (res.text[0]) {
        fail_msg("%s: reason text \"%s\" on a %s row", c->name, res.text,
                 al_verdict_name(res.verdict));
    }
}

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof s_cases / sizeof s_cases[0]; i++)
        s_run(&s_cases[i]);
}

/* Every dispute reason appears in the table at least once. */
static void test_table_covers_every_reason(void **state)
{
    (void)state;
    for (int r = AL_R_BAD_HASH; r < AL_R__COUNT; r++) {
        bool seen = false;
        for (size_t i = 0; i < sizeof s_cases / sizeof s_cases[0]; i++)
            seen |= s_cases[i].reason == (al_reason_t)r;
        if (!seen)
            fail_msg("no case for %s", al_reason_name((al_reason_t)r));
    }
}

/* The first row chains from zeros: NULL and a zero hash mean the same; a non-zero prev does
 * not. Row 2 chains from row 1's hash. */
static void test_genesis_and_chain(void **state)
{
    (void)state;
    static const uint8_t zeros[LEDGER_HASH_LEN];
    ledger_row_t r1, r2;
    s_base(&r1);
    r1.seq = 1;
    assert_int_equal(ledger_seal(&r1, NULL), 0);
    al_result_t res;
    assert_int_equal(al_verify(&r1, AGENT_A, NULL, &s_price, NULL, &res), AL_HUB_ATTESTED);
    assert_int_equal(al_verify(&r1, AGENT_A, zeros, &s_price, NULL, &res), AL_HUB_ATTESTED);
    assert_int_equal(al_verify(&r1, AGENT_A, s_prev, &s_price, NULL, &res), AL_DISPUTED);
    assert_int_equal(res.reason, AL_R_BAD_PREV);
    s_base(&r2);
    r2.seq = 2;
    assert_int_equal(ledger_seal(&r2, r1.hash), 0);
    al_usage_t local;
    s_local(&local);
    assert_int_equal(al_verify(&r2, AGENT_A, r1.hash, &s_price, &local, &res), AL_VERIFIED);
    assert_int_equal(al_verify(&r2, AGENT_A, NULL, &s_price, &local, &res), AL_DISPUTED);
    assert_int_equal(res.reason, AL_R_BAD_PREV);
}

/* A hash check comes first: a tampered row of another agent is a bad hash, not a bad agent. */
static void test_order_of_checks(void **state)
{
    (void)state;
    ledger_row_t r;
    s_base(&r);
    snprintf(r.agent_id, sizeof r.agent_id, "%s", AGENT_B);
    assert_int_equal(ledger_seal(&r, s_prev), 0);
    r.cost = 1;
    al_result_t res;
    assert_int_equal(al_verify(&r, AGENT_A, s_prev, NULL, NULL, &res), AL_DISPUTED);
    assert_int_equal(res.reason, AL_R_BAD_HASH);
}

static void test_names(void **state)
{
    (void)state;
    static const al_verdict_t all[] = {AL_VERIFIED, AL_ACCEPTED, AL_HUB_ATTESTED, AL_DISPUTED};
    static const char *const names[] = {"verified", "accepted", "hub-attested", "disputed"};
    for (int i = 0; i < 4; i++) {
        assert_string_equal(al_verdict_name(all[i]), names[i]);
        al_verdict_t v;
        assert_int_equal(al_verdict_parse(names[i], &v), 0);
        assert_int_equal(v, all[i]);
        assert_true(strlen(names[i]) < AL_VERDICT_MAX);
    }
    al_verdict_t v;
    assert_int_equal(al_verdict_parse("hub_attested", &v), -EINVAL);
    assert_int_equal(al_verdict_parse(NULL, &v), -EINVAL);
    assert_string_equal(al_reason_name(AL_R_NONE), "");
    assert_string_equal(al_reason_name(AL_R_TOKENS_DIFFER), "tokens_differ");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_table_covers_every_reason),
        cmocka_unit_test(test_genesis_and_chain),
        cmocka_unit_test(test_order_of_checks),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
