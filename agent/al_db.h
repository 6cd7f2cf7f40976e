/* al_db: agent-ledger's SQLite database (DIR/agent-ledger.db): the agent's usage records, its
 * copy of the hub's price table with history, and its copy of the hub's hash-chained ledger.
 *
 * agent-ledger is the only writer (DESIGN §1); other tools (ledger-diff, the agent's UI) read
 * the file, so the ledger table's columns are a fixed interface:
 *
 *   ledger(seq INTEGER PRIMARY KEY, agent_id TEXT, req_id BLOB, attempt INTEGER,
 *          user_id INTEGER, model TEXT, input_tokens INTEGER, cached_tokens INTEGER,
 *          output_tokens INTEGER, estimated INTEGER, cost INTEGER, fee INTEGER, credit INTEGER,
 *          hold INTEGER, price_from INTEGER, fee_ppm INTEGER, created_ms INTEGER,
 *          prev_hash BLOB, hash BLOB, verdict TEXT, unbilled INTEGER, reason TEXT,
 *          written_ms INTEGER)
 *   prices(model, effective_from, input, output, cached_input, PRIMARY KEY(model,
 *          effective_from))
 *   usage(req_id BLOB, attempt INTEGER, model, status, delivered, complete, estimated,
 *         input_tokens, cached_tokens, output_tokens, created_ms, reported INTEGER,
 *         PRIMARY KEY(req_id, attempt))
 *   meta(key TEXT PRIMARY KEY, value TEXT): 'schema' (AL_DB_SCHEMA) and 'agent_id'.
 *
 * The file is created mode 0600 (its -wal and -shm files take that mode), in WAL mode with
 * synchronous=NORMAL, which survives kill -9 at any moment; a busy timeout covers readers.
 * A database of another agent is refused: one file holds one agent's chain.
 *
 * Transactions: every write opens one (BEGIN IMMEDIATE) if none is open, and al_db_commit()
 * ends it. agent-ledger groups all the writes of one loop turn this way and sends its
 * acknowledgements only after the commit; reads see the open transaction's writes.
 */
#ifndef AL_DB_H
#define AL_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "al_verify.h"
#include "ledger.h"
#include "money.h"

#define AL_DB_SCHEMA 1 /* the schema version this build writes and reads */

typedef struct al_db al_db_t;

/* One stored ledger row and what the agent made of it. */
typedef struct {
    ledger_row_t row;             /* the row as the hub sent it */
    char verdict[AL_VERDICT_MAX]; /* al_verdict_name() */
    int64_t unbilled;             /* accepted: the agent's figure minus the cost */
    char reason[AL_REASON_MAX];   /* disputed: why ("" otherwise) */
    int64_t written_ms;           /* when the agent wrote it, Unix ms */
} al_entry_t;

/* Counts for the metrics. */
typedef struct {
    int64_t rows[4];    /* ledger rows by al_verdict_t */
    int64_t unbilled;   /* sum of unbilled over the ledger */
    int64_t usage;      /* usage records */
    int64_t unreported; /* usage records the hub has not acknowledged */
} al_db_stats_t;

/* Opens (creating if missing) the database at path for agent_id. NULL on failure, with one
 * line in err (the file of another agent, a newer schema, an I/O error). */
al_db_t *al_db_open(const char *path, const char *agent_id, char *err, size_t errlen);
/* Closes the database; an open transaction is rolled back. Accepts NULL; sets *db to NULL. */
void al_db_close(al_db_t **db);

/* Commits the open transaction (0 when none is open). 0 or a negative errno; on failure the
 * transaction is rolled back: none of its writes happened. */
int al_db_commit(al_db_t *db);
/* Rolls back the open transaction, if any. */
void al_db_rollback(al_db_t *db);
/* A transaction is open (writes not yet committed). */
bool al_db_in_tx(const al_db_t *db);

/* Stores a usage record unless (req_id, attempt) is there already. 1 stored, 0 already there
 * (*u is left as given), or a negative errno. u->reported is stored as given. */
int al_db_usage_put(al_db_t *db, const al_usage_t *u);
/* Reads the record of (req_id, attempt): 1 found, 0 not, or a negative errno. */
int al_db_usage_get(al_db_t *db, const uint8_t req_id[16], uint32_t attempt, al_usage_t *out);
/* Marks a record acknowledged by the hub: 1 changed, 0 unknown or already so, or an errno. */
int al_db_usage_set_reported(al_db_t *db, const uint8_t req_id[16], uint32_t attempt);
/* Calls fn for the oldest unacknowledged records, at most max of them. The number of records
 * visited, or a negative errno (also fn's, which stops the walk). */
typedef int (*al_usage_fn)(void *arg, const al_usage_t *u);
int al_db_usage_unreported(al_db_t *db, size_t max, al_usage_fn fn, void *arg);

/* Stores a price version. 1 new, 0 the same already there, 2 replaced different prices, or a
 * negative errno. */
int al_db_price_put(al_db_t *db, const char *model, int64_t effective_from, const money_price_t *p);
/* Reads a price version: 1 found, 0 not, or a negative errno. */
int al_db_price_get(al_db_t *db, const char *model, int64_t effective_from, money_price_t *out);

/* Appends a ledger row (e->row.seq must be new). 0, -EEXIST (that seq is stored), or errno. */
int al_db_ledger_put(al_db_t *db, const al_entry_t *e);
/* Reads row seq: 1 found, 0 not, or a negative errno. */
int al_db_ledger_get(al_db_t *db, uint64_t seq, al_entry_t *out);
/* The newest row's seq and hash (0 and zeros for an empty ledger). 0 or a negative errno. */
int al_db_ledger_last(al_db_t *db, uint64_t *seq, uint8_t hash[LEDGER_HASH_LEN]);

/* Counts for the metrics. 0 or a negative errno. */
int al_db_stats(al_db_t *db, al_db_stats_t *out);

#endif
