/* al_verify: the verdict agent-ledger gives each row of the hub's ledger (DESIGN §4).
 *
 * Pure: no database, no clock, no I/O. agent-ledger (al_ledger) looks up what the verdict needs
 * (the previous row's hash, the price version the row names, the agent's own usage record of the
 * request) and asks al_verify(); the row is written whatever the answer, since the hub's chain
 * is canonical and both copies must stay identical row for row. The checks, in order:
 *
 *   1. the row's hash is SHA-256(prev_hash || canonical(row)) (lib/ledger)      else bad_hash
 *   2. prev_hash is the hash of the agent's last row (zeros before seq 1)        else bad_prev
 *   3. the row is in this agent's chain                                          else agent_id
 *   4. the price version (model, price_from) is in the agent's price table       else
 *      unknown_price
 *   5. amounts: money_price(that price, the row's tokens, the row's fee_ppm) gives exactly
 *      cost/fee/credit, or the charge is capped at the hold: cost == hold, cost below the
 *      priced figure, fee/credit == money_split(cost, fee_ppm)                    else
 *      bad_amounts
 *   6. against the agent's own usage record of (req_id, attempt):
 *      - no record: hub-attested when cost <= hold                               else over_hold
 *      - a record of another model                                               model
 *      - the same tokens: verified (accepted when the cost was capped)
 *      - other tokens on a stream the vendor completed and the agent did not estimate:
 *                                                                                tokens_differ
 *      - other tokens on an interrupted stream (the record is estimated or not complete): the
 *        hub may have seen only a prefix, so its figure may be lower, never higher: accepted
 *        when no priced quantity (uncached input, cached input, output) is above the agent's
 *                                                                                else hub_higher
 *   accepted rows record unbilled = the agent's figure priced by the same rule - the row's cost
 *   (>= 0; > 0 unless the missing tokens have a price of zero).
 */
#ifndef AL_VERIFY_H
#define AL_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ledger.h"
#include "money.h"

#define AL_VERDICT_MAX 16 /* longest verdict name with its NUL */
#define AL_REASON_MAX 256 /* the reason text stored with a disputed row */

/* What the agent makes of a row. */
typedef enum {
    AL_VERIFIED = 0, /* every figure is the agent's own */
    AL_ACCEPTED,     /* billed lower than the agent's figure (interrupted stream, capped cost) */
    AL_HUB_ATTESTED, /* no local record; within the request's hold */
    AL_DISPUTED,     /* anything else: written, counted, surfaced */
} al_verdict_t;

/* Why a row is disputed (AL_R_NONE for the other verdicts). */
typedef enum {
    AL_R_NONE = 0,
    AL_R_BAD_HASH,      /* the hash does not match the row's contents */
    AL_R_BAD_PREV,      /* prev_hash is not the hash of the agent's last row */
    AL_R_AGENT_ID,      /* the row names another agent */
    AL_R_UNKNOWN_PRICE, /* the price version is not in the agent's table */
    AL_R_BAD_AMOUNTS,   /* cost/fee/credit are not what the price gives (nor a capped charge) */
    AL_R_MODEL,         /* the local record is of another model */
    AL_R_HUB_HIGHER,    /* the hub's figures are above the agent's */
    AL_R_TOKENS_DIFFER, /* other figures on a stream the vendor completed */
    AL_R_OVER_HOLD,     /* no local record and a cost above the request's hold */
    AL_R__COUNT         /* how many there are */
} al_reason_t;

/* The agent's own usage record of one attempt (what `agent run` reported; the usage table). */
typedef struct {
    uint8_t req_id[16];               /* the request's base id */
    uint32_t attempt;                 /* 1 = first */
    char model[LEDGER_MODEL_MAX + 1]; /* public model name ("" = not known) */
    int64_t status;                   /* the vendor's HTTP status (0 = none) */
    bool delivered;                   /* the attempt's bytes reached the hub */
    bool complete;                    /* the vendor's answer ended properly */
    bool estimated;                   /* figures from the early-end estimate rule */
    int64_t input_tokens;             /* cached ones included */
    int64_t cached_tokens;            /* the cached part */
    int64_t output_tokens;            /* output tokens */
    int64_t created_ms;               /* when the record was written, Unix ms */
    bool reported;                    /* the hub acknowledged the report */
} al_usage_t;

/* The answer. */
typedef struct {
    al_verdict_t verdict;
    al_reason_t reason;       /* AL_R_NONE unless disputed */
    bool capped;              /* the charge was capped at the hold */
    int64_t unbilled;         /* accepted: the agent's figure minus the row's cost; else 0 */
    char text[AL_REASON_MAX]; /* "" unless disputed: "<reason>: <detail>" */
} al_result_t;

/* Judges row. agent_id: this agent's id. prev: the hash of the agent's last row (NULL or zeros
 * when the row would be the first). price: the version (row->model, row->price_from) from the
 * agent's table, NULL when it has none. local: the agent's usage record of (row->req_id,
 * row->attempt), NULL when it has none. Always fills out; returns its verdict. */
al_verdict_t al_verify(const ledger_row_t *row, const char *agent_id,
                       const uint8_t prev[LEDGER_HASH_LEN], const money_price_t *price,
                       const al_usage_t *local, al_result_t *out);

/* Wire and database name of a verdict: "verified", "accepted", "hub-attested", "disputed". */
const char *al_verdict_name(al_verdict_t v);

/* Parses a verdict name: 0 or -EINVAL. */
int al_verdict_parse(const char *name, al_verdict_t *out);

/* Short name of a dispute reason ("bad_hash", ...; "" for AL_R_NONE). */
const char *al_reason_name(al_reason_t r);

#endif
