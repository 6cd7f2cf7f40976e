/* store: the hub's database behind one interface, two backends.
 *
 * SQLite (embedded default) and MySQL/MariaDB via libmariadb. Schema migrations live in
 * schemas/sql/{sqlite,mysql}/NNN_name.sql, compiled into the binary, applied in order by
 * store_migrate() and recorded in a schema_migrations table. A store_t is used by one thread
 * at a time; open one per thread. Calls block: hub services call them off their event loop
 * (a worker thread) or only where blocking is acceptable (hubctl, hub-billing).
 * Every function returns 0 or a negative errno; -ENOENT when a row is missing, -EEXIST on a
 * unique-key clash, -EIO for a database error (logged at debug with the server's message,
 * which store_last_error() returns). Credentials in mysql_url are never logged.
 */
#ifndef STORE_H
#define STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct store store_t;

typedef enum { STORE_SQLITE = 0, STORE_MYSQL = 1 } store_backend_t;

typedef struct {
    store_backend_t backend; /* which backend */
    const char *sqlite_path; /* SQLite database file (backend SQLITE) */
    const char *mysql_url;   /* mysql://user:pass@host:port/db (backend MYSQL); user and pass
                                are percent-decoded; host "localhost" is mapped to 127.0.0.1 */
    int busy_timeout_ms;     /* SQLite busy_timeout; 0 means 5000 */
} store_params_t;

/* Agent registry row. */
#define STORE_AGENT_ID_MAX 64
#define STORE_AGENT_NAME_MAX 128
typedef struct {
    char id[STORE_AGENT_ID_MAX + 1];     /* lowercase hex id derived from the public key */
    char name[STORE_AGENT_NAME_MAX + 1]; /* operator-chosen name, unique */
    uint8_t pubkey[32];                  /* Ed25519 public key */
    char status[16];                     /* "active" or "disabled" */
    int64_t created_at;                  /* Unix seconds */
} store_agent_t;

/* Parses "sqlite" / "mysql". 0 or -EINVAL. */
int store_backend_parse(const char *text, store_backend_t *out);

/* Opens a connection. SQLite files are created with mode 0600, WAL journal mode,
 * synchronous=NORMAL and the busy timeout. 0 or a negative errno with err set
 * (one line, no password). */
int store_open(const store_params_t *params, store_t **out, char *err, size_t errlen);
void store_destroy(store_t **s);

/* The last database error message of this connection ("" if none). */
const char *store_last_error(const store_t *s);

/* Applies every migration not yet recorded; returns the number applied (>= 0) or an error. */
int store_migrate(store_t *s);

/* Schema version: the highest migration applied (0 for an empty database). */
int store_schema_version(store_t *s, int *version);

/* Agents. store_agent_add: -EEXIST if the id or name is taken. Status starts "active". */
int store_agent_add(store_t *s, const char *id, const char *name, const uint8_t pubkey[32],
                    int64_t created_at);
int store_agent_get(store_t *s, const char *id, store_agent_t *out);
/* All agents ordered by created_at, id; *out is malloc'd (free()), *n its count. */
int store_agent_list(store_t *s, store_agent_t **out, size_t *n);
/* status is "active" or "disabled" (else -EINVAL); -ENOENT for an unknown id. */
int store_agent_set_status(store_t *s, const char *id, const char *status);
/* A number that changes whenever any agent row is added or changed: readers poll it to know
 * when to reload their cache. */
int store_agents_rev(store_t *s, int64_t *rev);

/* ---- users and API keys (migration 002) --------------------------------------------------
 * A user's API key is a 256-bit random secret shown once at creation (lib/apikey.h); the
 * store holds only its SHA-256 (a plain fast hash is right for 256-bit random secrets: there
 * is nothing to brute-force, unlike passwords), a public key id and a short display prefix.
 * Neither the secret nor its hash is ever logged or put into an error message. */

#define STORE_USER_NAME_MAX 128 /* bytes; the same rules as agent names */
#define STORE_KEY_ID_MAX 32     /* "key_" + 1..28 characters of [a-z0-9] */
#define STORE_KEY_PREFIX_MAX 16 /* display prefix: 1..16 characters of [A-Za-z0-9_-] */
#define STORE_KEY_HASH_LEN 32   /* SHA-256 of the whole secret ("sk-...") */

/* User row. */
typedef struct {
    int64_t id;                         /* assigned by the database, >= 1 */
    char name[STORE_USER_NAME_MAX + 1]; /* unique, compared byte for byte */
    char status[16];                    /* "active" or "disabled" */
    int64_t created_at;                 /* Unix seconds */
} store_user_t;

/* API key row joined with its user (store_key_lookup, store_key_list). Never the secret. */
typedef struct {
    char id[STORE_KEY_ID_MAX + 1];           /* public key id, e.g. "key_3kq7c2m9xa4t" */
    int64_t user_id;                         /* owner */
    char user_name[STORE_USER_NAME_MAX + 1]; /* owner's name */
    char prefix[STORE_KEY_PREFIX_MAX + 1];   /* first characters after "sk-", for display */
    char status[16];                         /* "active" or "revoked" */
    char user_status[16];                    /* owner's status: "active" or "disabled" */
    int64_t created_at;                      /* Unix seconds */
    int64_t revoked_at;                      /* Unix seconds; 0 while active */
} store_key_t;

/* Adds an active user; *id (may be NULL) gets its id. -EINVAL for a bad name (1..128 bytes of
 * UTF-8, no control characters, no leading or trailing space), -EEXIST if the name is taken. */
int store_user_add(store_t *s, const char *name, int64_t created_at, int64_t *id);
/* Reads a user by name (byte-exact). -ENOENT if there is none. */
int store_user_get_by_name(store_t *s, const char *name, store_user_t *out);
/* All users ordered by id; *out is malloc'd (free()), *n its count. */
int store_user_list(store_t *s, store_user_t **out, size_t *n);
/* status is "active" or "disabled" (else -EINVAL); -ENOENT for an unknown id. Setting the
 * status a user already has still counts as a change (store_keys_rev moves). */
int store_user_set_status(store_t *s, int64_t user_id, const char *status);

/* Adds an active key for user_id. key_id: "key_" + 1..28 of [a-z0-9]; prefix: 1..16 of
 * [A-Za-z0-9_-] (else -EINVAL). -ENOENT if the user does not exist; -EEXIST if the key id or
 * the hash is taken. */
int store_key_add(store_t *s, int64_t user_id, const char *key_id,
                  const uint8_t hash[STORE_KEY_HASH_LEN], const char *prefix, int64_t created_at);
/* Finds the key whose hash this is, with its user. -ENOENT if there is none. A revoked key or
 * a disabled user is still found: the caller decides (out->status, out->user_status). The
 * index lookup by hash needs no constant-time care: its timing reveals at most something about
 * a SHA-256 output, never about a stored secret. */
int store_key_lookup(store_t *s, const uint8_t hash[STORE_KEY_HASH_LEN], store_key_t *out);
/* Revokes a key: status "revoked", revoked_at set. -ENOENT for an unknown id; revoking a key
 * that is already revoked changes nothing (revoked_at and store_keys_rev stay) and returns
 * -EALREADY, so callers can tell the two apart and still treat both as success. */
int store_key_revoke(store_t *s, const char *key_id, int64_t revoked_at);
/* Keys of one user (user_id >= 1) or of every user (user_id 0), ordered by created_at, id;
 * *out is malloc'd (free()), *n its count. An unknown user_id lists nothing. */
int store_key_list(store_t *s, int64_t user_id, store_key_t **out, size_t *n);
/* A number that changes whenever any user or key is added or changed (a revocation, a user
 * disabled): readers (the gateway's key cache) poll it to know when to reload. */
int store_keys_rev(store_t *s, int64_t *rev);

/* ---- billing (migration 003) ---------------------------------------------------------------
 * Money is int64 micro-units (lib/money.h); times are Unix milliseconds. hub-billing is the only
 * writer of balances, holds, settlements and the ledger (DESIGN §1); hubctl only queues
 * top-ups (store_topup_add) and writes prices. Every billing write that belongs together is one
 * transaction; batch functions are one transaction for the whole batch (group commit) and
 * change nothing when any part fails. */

#include "../ledger.h"

#define STORE_MODEL_MAX 256

/* One price version of one model: micro-units per one million tokens. */
typedef struct {
    char model[STORE_MODEL_MAX + 1];
    int64_t effective_from; /* Unix ms; the version applies to requests settled from then on */
    int64_t input;          /* uncached input tokens */
    int64_t output;         /* output tokens */
    int64_t cached_input;   /* cached input tokens */
    int64_t created_at;     /* Unix ms the row was written */
} store_price_t;

/* Adds a price version. model: 1..256 bytes of UTF-8 without control characters; prices >= 0
 * (else -EINVAL). -EEXIST if (model, effective_from) exists. Moves store_prices_rev. */
int store_price_set(store_t *s, const store_price_t *p);
/* Every version of every model, ordered by model, effective_from; *out malloc'd (free()). */
int store_price_list(store_t *s, store_price_t **out, size_t *n);
/* The version in force at at_ms: the newest with effective_from <= at_ms. -ENOENT if none. */
int store_price_at(store_t *s, const char *model, int64_t at_ms, store_price_t *out);
/* A number that changes whenever a price row is added. */
int store_prices_rev(store_t *s, int64_t *rev);

/* A user's money. */
typedef struct {
    int64_t user_id;
    int64_t balance;        /* after every applied top-up and every settled charge */
    int64_t held;           /* sum of the user's active holds */
    int64_t pending_topups; /* queued top-ups not applied yet */
} store_balance_t;

/* Queues a top-up (amount > 0, else -EINVAL; -ENOENT for an unknown user). *id (may be NULL)
 * gets its id. hub-billing applies it (store_topups_apply). */
int store_topup_add(store_t *s, int64_t user_id, int64_t amount, int64_t created_at,
                    int64_t *id);
/* Whether top-up id has been applied: 1 yes, 0 not yet, -ENOENT unknown. */
int store_topup_applied(store_t *s, int64_t id);
/* Billing: applies every queued top-up in one transaction (balance += amount, marked applied
 * at now). *applied (may be NULL) gets how many. */
int store_topups_apply(store_t *s, int64_t now, size_t *applied);
/* The user's balance, active holds and queued top-ups (a user with no money row: all 0).
 * -ENOENT for an unknown user. */
int store_balance_get(store_t *s, int64_t user_id, store_balance_t *out);

/* Hold states. */
#define STORE_HOLD_ACTIVE 0   /* reserves amount from the user's balance */
#define STORE_HOLD_SETTLED 1  /* released by the request's settlement */
#define STORE_HOLD_EXPIRED 2  /* released by its expiry */
#define STORE_HOLD_REFUSED 3  /* never granted (insufficient balance); kept for idempotency */

typedef struct {
    uint8_t req_id[16]; /* the request's base id; unique */
    int64_t user_id;
    int64_t amount;     /* >= 0 */
    int64_t created_at; /* ms */
    int64_t expires_at; /* ms */
    int state;          /* STORE_HOLD_* */
} store_hold_t;

/* Billing: places a batch of holds in one transaction, in order. For each: a req_id that has a
 * hold already gets its earlier outcome (idempotent re-send); otherwise it is granted iff
 * amount <= balance - (the user's active holds, including those granted earlier in this
 * batch), and written ACTIVE, or written REFUSED. A hold of amount 0 is always granted.
 * results[i]: 1 granted, 0 refused; available[i] (may be NULL): what the user had left after
 * it (balance - active holds; negative when the balance is). created_at/state are ignored on
 * input. -EINVAL for a user id < 1 or an amount < 0, -ENOENT for a user that does not exist:
 * either fails the whole batch. */
int store_holds_place(store_t *s, const store_hold_t *holds, size_t n, int *results,
                      int64_t *available);
/* The hold of a request; -ENOENT if none. */
int store_hold_get(store_t *s, const uint8_t req_id[16], store_hold_t *out);
/* Billing: marks ACTIVE holds with expires_at <= now EXPIRED. *n (may be NULL) gets how many. */
int store_holds_expire(store_t *s, int64_t now, size_t *n);
/* Sum and count of ACTIVE holds (metrics). */
int store_holds_outstanding(store_t *s, int64_t *amount, int64_t *count);

/* One usage report as billing keeps it until its request is settled (envelope usage.report). */
#define STORE_SOURCE_MAX 15
typedef struct {
    uint8_t req_id[16];
    char source[STORE_SOURCE_MAX + 1]; /* "gateway" or "agent" */
    uint32_t attempt;                  /* >= 1 */
    char agent_id[STORE_AGENT_ID_MAX + 1];
    int64_t user_id;
    char model[STORE_MODEL_MAX + 1];
    int status;                        /* vendor HTTP status, 0 = none */
    bool delivered, complete, estimated;
    int64_t input_tokens, cached_tokens, output_tokens;
    int64_t received_at;               /* ms */
} store_usage_t;

/* Billing: stores a batch of reports in one transaction. A report whose (req_id, source,
 * attempt) is stored already is left as it was (a re-send); a report of a request settled
 * already is dropped (a late re-send: settled requests keep no reports). -EINVAL for a source
 * other than "gateway"/"agent", attempt 0, a malformed agent id (empty is fine) or model (empty
 * is fine), a negative user id, status or figure. */
int store_usage_put(store_t *s, const store_usage_t *u, size_t n);
/* Billing: the stored reports of requests not settled yet, oldest (received_at) first, at
 * most limit (0 = all); *out malloc'd (free()). */
int store_usage_pending(store_t *s, size_t limit, store_usage_t **out, size_t *n);
/* Every stored report of one request (any state), ordered by source, attempt. */
int store_usage_of(store_t *s, const uint8_t req_id[16], store_usage_t **out, size_t *n);

/* A settlement: how one request ended for billing. */
#define STORE_OUTCOME_BILLED 1  /* charged: a ledger row was appended */
#define STORE_OUTCOME_NOTHING 2 /* nothing to charge (no tokens: vendor failure, refused hold) */
typedef struct {
    uint8_t req_id[16];
    int outcome;          /* STORE_OUTCOME_* */
    int64_t user_id;
    int64_t settled_at;   /* ms */
    ledger_row_t row;     /* outcome BILLED: the sealed row to append (row.req_id == req_id,
                             row.seq == the agent's last seq + 1, row.prev_hash its hash) */
} store_settle_t;

/* Billing: settles a batch in one transaction. For each: inserts the settlement (req_id
 * unique), marks the request's hold SETTLED (if it has one), deletes its pending reports, and
 * for BILLED also debits the user's balance by row.cost, credits the agent's account by
 * row.credit, adds row.fee to the hub's revenue and appends the row (unique (agent_id, seq),
 * unique req_id). A req_id settled already fails the whole batch with -EALREADY and a seq or
 * prev_hash that does not follow the agent's chain with -ESTALE: callers check first (billing
 * is the only writer) and retry the batch without the culprit. A REFUSED hold stays REFUSED
 * (a re-sent hold.req must still be refused). The balance may go below zero (a request that
 * cost more than its hold is charged in full). -EINVAL (nothing written) for an item that
 * does not check: outcome not BILLED/NOTHING; BILLED with user_id < 1, row.user_id or
 * row.req_id not the item's, a malformed agent id or model, seq 0, attempt 0, a negative
 * figure, cached > input, cost != fee + credit, fee_ppm outside [0, 1e6]; NOTHING with
 * user_id < 0. -ENOENT when a BILLED item's user does not exist. */
int store_settle(store_t *s, const store_settle_t *items, size_t n);
/* Whether a request is settled: 1 yes (*outcome set, may be NULL), 0 no. */
int store_settled(store_t *s, const uint8_t req_id[16], int *outcome);

/* The newest row of an agent's chain: *seq 0 and a zero hash when it has none (or the id is
 * malformed). */
int store_ledger_head(store_t *s, const char *agent_id, uint64_t *seq,
                      uint8_t hash[LEDGER_HASH_LEN]);
/* Rows of an agent with seq >= from_seq, in seq order, at most limit (0 = all); *out
 * malloc'd (free()). */
int store_ledger_range(store_t *s, const char *agent_id, uint64_t from_seq, size_t limit,
                       ledger_row_t **out, size_t *n);
/* The agent's row for a request; -ENOENT if none. */
int store_ledger_by_req(store_t *s, const uint8_t req_id[16], ledger_row_t *out);
/* Records that the agent has written every row up to seq (never moves back). Unknown agents
 * are fine (the account row is created). */
int store_ledger_ack(store_t *s, const char *agent_id, uint64_t seq);

/* An agent's account. */
typedef struct {
    char agent_id[STORE_AGENT_ID_MAX + 1];
    int64_t credit;     /* sum of its ledger rows' credit */
    uint64_t last_seq;  /* its chain's newest row */
    uint64_t acked_seq; /* the newest row it acknowledged */
} store_account_t;

/* Every agent with an account (a ledger row or an ack), ordered by agent_id. */
int store_account_list(store_t *s, store_account_t **out, size_t *n);

/* Totals over the whole hub (metrics, tests, ledger-diff). */
typedef struct {
    int64_t topups;        /* sum of applied top-ups */
    int64_t balances;      /* sum of user balances */
    int64_t debits;        /* sum of ledger cost */
    int64_t credits;       /* sum of ledger credit (= sum of agent accounts) */
    int64_t fees;          /* sum of ledger fee (the hub's revenue) */
    int64_t ledger_rows;   /* rows over all chains */
    int64_t settled;       /* settlements of any outcome */
} store_totals_t;
int store_billing_totals(store_t *s, store_totals_t *out);

#endif
