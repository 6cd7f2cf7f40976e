/* store_impl: what store.c shares with its backends (store_sqlite.c, store_mysql.c), the
 * generated migration tables (migrations.c, from schemas/gen_migrations.py) and the store's
 * own unit test. Not for other callers: they use store.h.
 *
 * store.c checks every argument before it calls a backend, so backend functions may assume
 * non-NULL pointers, ids of 1..STORE_AGENT_ID_MAX bytes, valid names and statuses, user ids
 * >= 1 (0 in key_list: every user), key ids and prefixes of the shapes store.h describes.
 * Billing: NUL-terminated models and agent ids of valid shape, amounts and figures in range,
 * ledger rows whose seq and amounts fit the schema (seq <= INT64_MAX, cost = fee + credit),
 * limits that fit an int64, and batches of n >= 1 items.
 */
#ifndef STORE_IMPL_H
#define STORE_IMPL_H

#include "store.h"

#include <stdbool.h>

/* One migration file, NNN_name.sql, split into statements at a ';' that ends a line. */
typedef struct {
    int version;              /* NNN, >= 1; versions strictly increase through a table */
    const char *name;         /* file name without ".sql", e.g. "001_agents" */
    const char *const *stmts; /* the statements, without their final ';' */
    size_t n_stmts;           /* number of statements, >= 1 */
} store_migration_t;

/* Generated into migrations.c: the same versions for both backends, in ascending order. */
extern const store_migration_t store_migrations_sqlite[];
extern const size_t store_migrations_sqlite_count;
extern const store_migration_t store_migrations_mysql[];
extern const size_t store_migrations_mysql_count;

/* The functions each backend provides; store.c dispatches through them. */
typedef struct {
    const char *name; /* "sqlite" or "mysql" */
    /* Frees the backend's connection state (s->db); s itself is store.c's. */
    void (*close)(store_t *s);
    /* Called once before and once after a store_migrate run (cross-process lock). */
    int (*migrate_begin)(store_t *s);
    void (*migrate_end)(store_t *s);
    /* Applies m unless its version is recorded: 1 applied, 0 already there, or an error. */
    int (*migrate_one)(store_t *s, const store_migration_t *m, int64_t now);
    int (*schema_version)(store_t *s, int *version);
    int (*agent_add)(store_t *s, const char *id, const char *name, const uint8_t pubkey[32],
                     int64_t created_at);
    int (*agent_get)(store_t *s, const char *id, store_agent_t *out);
    int (*agent_list)(store_t *s, store_agent_t **out, size_t *n);
    int (*agent_set_status)(store_t *s, const char *id, const char *status);
    int (*agents_rev)(store_t *s, int64_t *rev);
    int (*user_add)(store_t *s, const char *name, int64_t created_at, int64_t *id);
    int (*user_get_by_name)(store_t *s, const char *name, store_user_t *out);
    int (*user_list)(store_t *s, store_user_t **out, size_t *n);
    int (*user_set_status)(store_t *s, int64_t user_id, const char *status);
    int (*key_add)(store_t *s, int64_t user_id, const char *key_id, const uint8_t hash[32],
                   const char *prefix, int64_t created_at);
    int (*key_lookup)(store_t *s, const uint8_t hash[32], store_key_t *out);
    int (*key_revoke)(store_t *s, const char *key_id, int64_t revoked_at);
    int (*key_list)(store_t *s, int64_t user_id, store_key_t **out, size_t *n);
    int (*keys_rev)(store_t *s, int64_t *rev);
    /* billing (migration 003): store.c has checked every item of a batch before the call */
    int (*price_set)(store_t *s, const store_price_t *p);
    int (*price_list)(store_t *s, store_price_t **out, size_t *n);
    int (*price_at)(store_t *s, const char *model, int64_t at_ms, store_price_t *out);
    int (*prices_rev)(store_t *s, int64_t *rev);
    int (*topup_add)(store_t *s, int64_t user_id, int64_t amount, int64_t created_at, int64_t *id);
    int (*topup_applied)(store_t *s, int64_t id);
    int (*topups_apply)(store_t *s, int64_t now, size_t *applied);
    int (*balance_get)(store_t *s, int64_t user_id, store_balance_t *out);
    int (*holds_place)(store_t *s, const store_hold_t *holds, size_t n, int *results,
                       int64_t *available);
    int (*hold_get)(store_t *s, const uint8_t req_id[16], store_hold_t *out);
    int (*holds_expire)(store_t *s, int64_t now, size_t *n);
    int (*holds_outstanding)(store_t *s, int64_t *amount, int64_t *count);
    int (*usage_put)(store_t *s, const store_usage_t *u, size_t n);
    int (*usage_pending)(store_t *s, size_t limit, store_usage_t **out, size_t *n);
    int (*usage_of)(store_t *s, const uint8_t req_id[16], store_usage_t **out, size_t *n);
    int (*settle)(store_t *s, const store_settle_t *items, size_t n);
    int (*settled)(store_t *s, const uint8_t req_id[16], int *outcome);
    int (*ledger_head)(store_t *s, const char *agent_id, uint64_t *seq, uint8_t hash[32]);
    int (*ledger_range)(store_t *s, const char *agent_id, uint64_t from_seq, size_t limit,
                        ledger_row_t **out, size_t *n);
    int (*ledger_by_req)(store_t *s, const uint8_t req_id[16], ledger_row_t *out);
    int (*ledger_ack)(store_t *s, const char *agent_id, uint64_t seq);
    int (*account_list)(store_t *s, store_account_t **out, size_t *n);
    int (*billing_totals)(store_t *s, store_totals_t *out);
} store_ops_t;

#define STORE_ERR_MAX 512

/* One open connection. */
struct store {
    const store_ops_t *ops;         /* backend functions */
    store_backend_t backend;        /* which backend */
    void *db;                       /* sqlite3 * or MYSQL *, owned */
    char last_error[STORE_ERR_MAX]; /* last database error of this connection, "" if none */
    bool redact;                    /* set around statements bound to a key hash: errors keep
                                       the code but not the server's text, which may quote a
                                       bound value (MySQL's "Duplicate entry '...'") */
};

/* Backend constructors: fill s->ops and s->db, or return an error with err set (one line,
 * no password). On failure they leave s->db NULL. */
int store_sqlite_open(store_t *s, const store_params_t *params, char *err, size_t errlen);
int store_mysql_open(store_t *s, const store_params_t *params, char *err, size_t errlen);

/* The current time in Unix milliseconds (holds' created_at). */
int64_t store_now_ms(void);

/* Records the last database error of s (printf format) and logs it at debug. */
void store_set_error(store_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One user's money as a batch of holds sees it (store_holds_place): read once per batch under
 * the batch's write lock, then kept up to date in memory as holds are granted. */
typedef struct {
    int64_t user_id; /* the user */
    int64_t balance; /* balance (0 without a money row) */
    int64_t held;    /* active holds, including those this batch granted */
} store_purse_t;

/* What a purse has left: balance - held (saturated at INT64_MIN; negative when the balance
 * is). */
int64_t store_purse_left(const store_purse_t *p);
/* The grant rule, one place for both backends: amount 0 is always granted; otherwise amount
 * must be <= what is left. A grant adds amount to held. 1 granted, 0 refused. */
int store_purse_hold(store_purse_t *p, int64_t amount);
/* The purse of user_id in (arr, n), or NULL when it is not loaded yet. */
store_purse_t *store_purse_find(store_purse_t *arr, size_t n, int64_t user_id);

/* Growable agent array for store_agent_list: appends *a to (*arr, *n, *cap). 0 or -ENOMEM. */
int store_agents_push(store_agent_t **arr, size_t *n, size_t *cap, const store_agent_t *a);

/* Growable array of items of size bytes (store_user_list, store_key_list): appends *item to
 * (*arr, *n, *cap). 0 or -ENOMEM (the array is left as it was). */
int store_array_push(void **arr, size_t *n, size_t *cap, const void *item, size_t size);

/* A parsed mysql://user:pass@host:port/db URL; strings are malloc'd and percent-decoded. */
typedef struct {
    char *user;     /* "" when the URL names none */
    char *password; /* "" when the URL names none; wiped by store_mysql_url_free */
    char *host;     /* never empty; "localhost" becomes "127.0.0.1"; IPv6 without brackets */
    unsigned port;  /* 3306 unless the URL names one (1..65535) */
    char *db;       /* "" when the URL names none */
} store_mysql_url_t;

/* Parses url into out. 0, -ENOMEM, or -EINVAL with err set (one line, never the password). */
int store_mysql_url_parse(const char *url, store_mysql_url_t *out, char *err, size_t errlen);
/* Frees the strings of u (wiping the password) and zeroes it; NULL-safe. */
void store_mysql_url_free(store_mysql_url_t *u);

#endif
