/* bl_rules: hub-billing's decisions, kept free of sockets and of the database so that each one
 * can be tested alone (tests/unit/test_bl_rules.c).
 *
 *  - the price of a model at a time, from an in-memory copy of the price table (prices are
 *    versions that are only ever added, so a copy refreshed when store_prices_rev moves gives
 *    the same answer as store_price_at);
 *  - how much a hold reserves: the request's upper bound (body bytes bound the input tokens,
 *    max_tokens or billing.default_max_tokens the output), priced by lib/money's one rule;
 *  - which usage report settles a request (DESIGN §4): the gateway's delivered attempt, or,
 *    when no gateway report came within billing.agent_grace, the agent's delivered attempt
 *    capped by the request's hold; nothing to charge for zero tokens;
 *  - the sealed ledger row of a billed request.
 */
#ifndef BL_RULES_H
#define BL_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ledger.h"
#include "money.h"
#include "store/store.h"

/* What a hold does for a model that has no price. */
typedef enum {
    BL_UNPRICED_REFUSE = 0, /* answer 503 model_not_priced */
    BL_UNPRICED_FREE = 1,   /* hold nothing; the request is free */
} bl_unpriced_t;

/* Parses billing.unpriced ("refuse" or "free"): 0 or -EINVAL. */
int bl_unpriced_parse(const char *text, bl_unpriced_t *out);

/* The price table as billing keeps it: every version of every model, sorted by model (bytes),
 * then effective_from, as store_price_list returns it. */
typedef struct {
    store_price_t *list; /* malloc'd, or NULL when empty */
    size_t n;            /* versions */
    int64_t rev;         /* store_prices_rev when it was read (-1: never read) */
} bl_prices_t;

/* Sorts a price list by model, then effective_from (store_price_list's order). */
void bl_prices_sort(store_price_t *list, size_t n);

/* The version of model in force at at_ms (the newest with effective_from <= at_ms), or NULL. */
const store_price_t *bl_price_at(const bl_prices_t *p, const char *model, int64_t at_ms);

/* The version of model that took effect exactly at effective_from, or NULL. */
const store_price_t *bl_price_version(const bl_prices_t *p, const char *model,
                                      int64_t effective_from);

/* How much to hold for a request. price is the version in force now, NULL when the model has
 * none. The bound is money_price(price, {input = body_bytes, cached = 0, output = max_tokens,
 * or default_max_tokens when max_tokens is 0}). A bound past int64 holds INT64_MAX (no balance
 * covers it). Returns 0 with *amount set (0 for an unpriced model under BL_UNPRICED_FREE),
 * -ENOENT for an unpriced model under BL_UNPRICED_REFUSE, -EINVAL for negative figures. */
int bl_hold_amount(const store_price_t *price, bl_unpriced_t unpriced, int64_t body_bytes,
                   int64_t max_tokens, int64_t default_max_tokens, int64_t *amount);

/* What to do with a request that has usage reports. */
typedef enum {
    BL_WAIT = 0,    /* not yet: only agent reports, younger than the grace */
    BL_NOTHING = 1, /* settle with nothing to charge (STORE_OUTCOME_NOTHING) */
    BL_BILL = 2,    /* charge: append a ledger row (STORE_OUTCOME_BILLED) */
} bl_verdict_t;

typedef struct {
    bl_verdict_t verdict;        /* what to do */
    const store_usage_t *report; /* BL_BILL: the report whose figures are billed */
    bool capped;                 /* BL_BILL: the agent's figure, capped by the hold */
    const store_usage_t *limit;  /* BL_BILL: the agent's report of the same attempt, which
                                    bounds each figure of an estimated gateway report */
    const char *agent_id;        /* BL_BILL: the chain the row goes to */
    const char *model;           /* BL_BILL: the model priced */
    int64_t user_id;             /* the paying user: the gateway's report, else the hold's;
                                    0 when neither names one */
    const char *why;             /* a few words for the log line */
} bl_decision_t;

/* Decides how a request settles from its stored reports (all of them, any order), its hold
 * (NULL when it has none; a refused hold counts as none), the time and billing.agent_grace:
 *  - a gateway report exists: the gateway's delivered attempt (the highest if several) settles;
 *    none delivered → NOTHING. When its figures are an estimate (the stream ended early at the
 *    hub), each is bounded by the agent's report of the same attempt, so an estimate never
 *    exceeds what the agent itself counted; without that report yet, WAIT up to the grace
 *    (counted from the gateway's report), then the estimate alone settles;
 *  - only agent reports: WAIT until the oldest is grace_ms old; then no hold → NOTHING (no user
 *    to charge), else the agent's delivered attempt (the highest) settles, capped by the hold;
 *    none delivered → NOTHING;
 *  - zero tokens → NOTHING; no agent or no model named by any report → NOTHING; no user → NOTHING.
 * Pointers in *out borrow from reports and hold. */
void bl_settle_decide(const store_usage_t *reports, size_t n, const store_hold_t *hold,
                      int64_t now_ms, int64_t grace_ms, bl_decision_t *out);

/* Builds and seals the ledger row of a BL_BILL decision: figures from d->report (cached tokens
 * clamped to the input), cost by money_price at price (NULL: unpriced, cost 0 and price_from 0),
 * capped at the hold when d->capped, split by fee_ppm; seq and prev are the chain's next
 * position (prev NULL for seq 1). 0, or -EINVAL / -ERANGE from lib/money, or an error of
 * ledger_seal. */
int bl_build_row(const bl_decision_t *d, const uint8_t req_id[16], const store_price_t *price,
                 const store_hold_t *hold, int64_t fee_ppm, int64_t now_ms, uint64_t seq,
                 const uint8_t prev[LEDGER_HASH_LEN], ledger_row_t *row);

#endif
