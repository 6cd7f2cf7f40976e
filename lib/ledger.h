/* ledger: one row of an agent's hash-chained ledger, its canonical encoding, and the chain check.
 *
 * hub-billing writes the chain (one per agent, seq 1, 2, ...); every agent keeps a copy and
 * re-verifies it; ledger-diff and `hubctl ledger verify` walk it. All of them use this one
 * definition (DESIGN §4):
 *
 *   hash(row n) = SHA-256(prev_hash || canonical(row n)),   prev_hash(row 1) = 32 zero bytes
 *
 * canonical(row) is a fixed binary layout, every integer big-endian, every string length-
 * prefixed, so that no two different rows encode the same (see ledger.c for the exact order).
 * The hash covers everything in ledger_row_t except prev_hash (chained in front) and hash.
 */
#ifndef LEDGER_H
#define LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LEDGER_AGENT_ID_MAX 64
#define LEDGER_MODEL_MAX 256
#define LEDGER_HASH_LEN 32

/* One ledger row: one settled request. Amounts are micro-units (lib/money). */
typedef struct {
    char agent_id[LEDGER_AGENT_ID_MAX + 1]; /* the chain's agent */
    uint64_t seq;                           /* 1, 2, ... within the agent's chain */
    uint8_t req_id[16];                     /* the request's base id (x-request-id) */
    uint32_t attempt;                       /* the attempt that delivered (1 = first) */
    int64_t user_id;                        /* the paying user (hub user id) */
    char model[LEDGER_MODEL_MAX + 1];       /* the public model name that was priced */
    int64_t input_tokens;                   /* input tokens, cached ones included */
    int64_t cached_tokens;                  /* the cached part of input_tokens */
    int64_t output_tokens;                  /* output tokens */
    bool estimated;                         /* figures from the early-end estimate rule */
    int64_t cost;                           /* what the user paid: fee + credit */
    int64_t fee;                            /* the hub's part */
    int64_t credit;                         /* the provider's part */
    int64_t hold;                           /* the hold the request had (0 = none) */
    int64_t price_from;                     /* effective_from (Unix ms) of the price used */
    int64_t fee_ppm;                        /* fee rate used, parts per million */
    int64_t created_ms;                     /* settlement time, Unix ms */
    uint8_t prev_hash[LEDGER_HASH_LEN];     /* hash of row seq - 1 (zeros for seq 1) */
    uint8_t hash[LEDGER_HASH_LEN];          /* SHA-256(prev_hash || canonical(row)) */
} ledger_row_t;

/* Longest canonical encoding, in bytes. */
#define LEDGER_CANONICAL_MAX 512

/* Writes canonical(row) to out (LEDGER_CANONICAL_MAX bytes). Returns its length, or -EINVAL
 * (agent_id or model not NUL-terminated within their arrays). */
int ledger_canonical(const ledger_row_t *row, uint8_t out[LEDGER_CANONICAL_MAX]);

/* Computes SHA-256(row->prev_hash || canonical(row)) into out. 0 or -EINVAL / -EIO. */
int ledger_hash(const ledger_row_t *row, uint8_t out[LEDGER_HASH_LEN]);

/* Fills row->prev_hash from prev (NULL for the genesis row: zeros) and row->hash. 0 or error. */
int ledger_seal(ledger_row_t *row, const uint8_t prev[LEDGER_HASH_LEN]);

/* Why a chain does not verify. */
typedef enum {
    LEDGER_OK = 0,
    LEDGER_BAD_SEQ,      /* seq is not the one after the previous row (dropped or reordered) */
    LEDGER_BAD_PREV,     /* prev_hash is not the previous row's hash */
    LEDGER_BAD_HASH,     /* hash does not match the row's contents */
    LEDGER_BAD_AMOUNTS,  /* cost != fee + credit, or a negative figure, or cached > input */
    LEDGER_BAD_AGENT,    /* a row of another agent in this chain */
} ledger_fault_t;

/* Short name of a fault ("ok", "bad_seq", ...). */
const char *ledger_fault_name(ledger_fault_t f);

/* Incremental chain check: init with the agent id (and, to resume mid-chain, the last verified
 * seq and hash; 0 and NULL for a chain from seq 1), then feed rows in order. */
typedef struct {
    char agent_id[LEDGER_AGENT_ID_MAX + 1];
    uint64_t seq;                      /* last verified seq */
    uint8_t hash[LEDGER_HASH_LEN];     /* its hash */
} ledger_walk_t;

void ledger_walk_init(ledger_walk_t *w, const char *agent_id, uint64_t seq,
                      const uint8_t hash[LEDGER_HASH_LEN]);
/* Checks the next row; on LEDGER_OK the walk advances to it, otherwise it stays. */
ledger_fault_t ledger_walk_next(ledger_walk_t *w, const ledger_row_t *row);

#endif
