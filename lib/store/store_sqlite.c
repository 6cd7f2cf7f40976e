/* store_sqlite: the SQLite backend of store (see store.h, store_impl.h).
 *
 * Every statement with a value in it is prepared and bound; the only SQL text run as is
 * comes from the compiled-in migrations. Writers are serialized by SQLite itself: each
 * change is one statement (its own write transaction), and a migration runs inside
 * BEGIN IMMEDIATE, so the "MAX(rev) + 1" of a change is computed under the write lock.
 * The same holds for users and api_keys, whose rows share one rev sequence (S_NEXT_KEYS_REV).
 *
 * Billing writes that belong together run inside BEGIN IMMEDIATE ... COMMIT (s_begin/s_end):
 * the write lock is taken before the first read, so a batch's checks (balances, chain heads,
 * settled requests) cannot be overtaken by another process, and any failure rolls the whole
 * batch back. Batch functions prepare each statement once per call and reuse it per item.
 */
#include "store_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_DB(s) ((sqlite3 *)(s)->db)

/* Maps an (extended) SQLite result code to a negative errno. */
static int s_errno(int code)
{
    switch (code) {
    case SQLITE_CONSTRAINT_PRIMARYKEY:
    case SQLITE_CONSTRAINT_UNIQUE:
        return -EEXIST;
    case SQLITE_CONSTRAINT_CHECK:
    case SQLITE_CONSTRAINT_NOTNULL:
        return -EINVAL;
    case SQLITE_CONSTRAINT_FOREIGNKEY:
        return -ENOENT; /* the row referred to (a key's user) does not exist */
    default:
        break;
    }
    switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_READONLY:
        return -EROFS;
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return -EACCES;
    default:
        return -EIO;
    }
}

/* Records the connection's current error (what: the operation) and returns it as errno. */
static int s_fail(store_t *s, const char *what)
{
    int code = sqlite3_extended_errcode(S_DB(s));
    store_set_error(s, "%s: %s", what, sqlite3_errmsg(S_DB(s)));
    return s_errno(code);
}

/* Prepares exactly one statement; trailing text after it is refused (a missing split). */
static int s_prepare(store_t *s, const char *sql, sqlite3_stmt **st)
{
    const char *tail = NULL;
    if (sqlite3_prepare_v2(S_DB(s), sql, -1, st, &tail) != SQLITE_OK)
        return s_fail(s, "prepare");
    if (!*st) {
        store_set_error(s, "prepare: empty statement");
        return -EINVAL;
    }
    for (; tail && *tail; tail++) {
        if (*tail != ' ' && *tail != '\n' && *tail != '\t' && *tail != '\r') {
            sqlite3_finalize(*st);
            *st = NULL;
            store_set_error(s, "prepare: more than one statement in one string");
            return -EINVAL;
        }
    }
    return 0;
}

/* Steps a statement to its end, ignoring rows; finalizes it. */
static int s_run(store_t *s, sqlite3_stmt *st, const char *what)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    int ret = rc == SQLITE_DONE ? 0 : s_fail(s, what);
    sqlite3_finalize(st);
    return ret;
}

/* Runs one statement without parameters (migrations, transaction control). */
static int s_exec(store_t *s, const char *sql)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s, sql, &st);
    return rc < 0 ? rc : s_run(s, st, "exec");
}

/* Runs a query whose first row's first column is an integer; *found says if a row came. */
static int s_query_int(store_t *s, sqlite3_stmt *st, int64_t *out, bool *found)
{
    int rc = sqlite3_step(st);
    int ret = 0;
    *found = false;
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
        *found = true;
    } else if (rc != SQLITE_DONE) {
        ret = s_fail(s, "query");
    }
    sqlite3_finalize(st);
    return ret;
}

/* Sets *exists to whether the schema_migrations table is there yet. */
static int s_log_exists(store_t *s, bool *exists)
{
    sqlite3_stmt *st;
    int64_t one;
    int rc = s_prepare(s,
                       "SELECT 1 FROM sqlite_master WHERE type = 'table' "
                       "AND name = 'schema_migrations'",
                       &st);
    return rc < 0 ? rc : s_query_int(s, st, &one, exists);
}

/* Closes the connection. */
static void s_close(store_t *s)
{
    sqlite3_close_v2(S_DB(s));
    s->db = NULL;
}

/* Nothing to do: each migration takes the write lock itself (BEGIN IMMEDIATE). */
static int s_migrate_begin(store_t *s)
{
    (void)s;
    return 0;
}

/* Counterpart of s_migrate_begin. */
static void s_migrate_end(store_t *s)
{
    (void)s;
}

/* Sets *applied to whether version is recorded in schema_migrations. */
static int s_is_applied(store_t *s, int version, bool *applied)
{
    bool exists;
    int rc = s_log_exists(s, &exists);
    if (rc < 0 || !exists) {
        *applied = false;
        return rc;
    }
    sqlite3_stmt *st;
    int64_t one;
    rc = s_prepare(s, "SELECT 1 FROM schema_migrations WHERE version = ?1", &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_int(st, 1, version);
    return s_query_int(s, st, &one, applied);
}

/* Applies one migration file in one write transaction, with its schema_migrations row. */
static int s_migrate_one(store_t *s, const store_migration_t *m, int64_t now)
{
    int rc = s_exec(s, "BEGIN IMMEDIATE");
    if (rc < 0)
        return rc;
    bool applied = false;
    rc = s_is_applied(s, m->version, &applied);
    for (size_t i = 0; rc == 0 && !applied && i < m->n_stmts; i++)
        rc = s_exec(s, m->stmts[i]);
    if (rc == 0 && !applied) {
        sqlite3_stmt *st;
        rc = s_prepare(s, "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                       &st);
        if (rc == 0) {
            sqlite3_bind_int(st, 1, m->version);
            sqlite3_bind_int64(st, 2, now);
            rc = s_run(s, st, "record migration");
        }
    }
    if (rc == 0)
        rc = s_exec(s, "COMMIT");
    if (rc < 0) {
        /* Not s_exec: keep the first error as the connection's last error. */
        sqlite3_exec(S_DB(s), "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    return applied ? 0 : 1;
}

/* Highest recorded migration, 0 when there is no schema_migrations table yet. */
static int s_schema_version(store_t *s, int *version)
{
    bool exists;
    int rc = s_log_exists(s, &exists);
    *version = 0;
    if (rc < 0 || !exists)
        return rc;
    sqlite3_stmt *st;
    int64_t v = 0;
    rc = s_prepare(s, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &st);
    if (rc == 0)
        rc = s_query_int(s, st, &v, &exists);
    if (rc == 0)
        *version = (int)v;
    return rc;
}

/* Inserts an agent; its rev is MAX(rev) + 1, computed inside the same write statement. */
static int s_agent_add(store_t *s, const char *id, const char *name, const uint8_t pubkey[32],
                       int64_t created_at)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s,
                       "INSERT INTO agents (id, name, pubkey, status, created_at, rev) "
                       "VALUES (?1, ?2, ?3, 'active', ?4, "
                       "(SELECT COALESCE(MAX(rev), 0) + 1 FROM agents))",
                       &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, pubkey, 32, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, created_at);
    return s_run(s, st, "agent add");
}

/* Copies text column col into dst (cap bytes with the NUL); -EIO if it does not fit. */
static int s_copy_text(store_t *s, sqlite3_stmt *st, int col, char *dst, size_t cap)
{
    const unsigned char *text = sqlite3_column_text(st, col);
    size_t len = (size_t)sqlite3_column_bytes(st, col);
    if (!text || len >= cap) {
        store_set_error(s, "row: column %d is NULL or too long (%zu bytes)", col, len);
        return -EIO;
    }
    memcpy(dst, text, len);
    dst[len] = '\0';
    return 0;
}

/* Reads one row of a query into item (a struct of the caller's type). */
typedef int (*s_row_reader_t)(store_t *s, sqlite3_stmt *st, void *item);

/* Steps a prepared query to its end, reading each row with read into a malloc'd array of
 * size-byte items; finalizes st. 0 with *arr and *n set, or a negative errno (nothing kept). */
static int s_collect(store_t *s, sqlite3_stmt *st, const char *what, size_t size,
                     s_row_reader_t read, void **arr, size_t *n)
{
    void *items = NULL, *item = malloc(size);
    size_t count = 0, cap = 0;
    int rc = item ? 0 : -ENOMEM, step = SQLITE_DONE;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        rc = read(s, st, item);
        if (rc == 0)
            rc = store_array_push(&items, &count, &cap, item, size);
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = s_fail(s, what);
    sqlite3_finalize(st);
    free(item);
    if (rc < 0) {
        free(items);
        return rc;
    }
    *arr = items;
    *n = count;
    return 0;
}

/* Reads the current row of an agent query (id, name, pubkey, status, created_at). */
static int s_read_agent(store_t *s, sqlite3_stmt *st, void *item)
{
    store_agent_t *a = item;
    memset(a, 0, sizeof(*a));
    int rc = s_copy_text(s, st, 0, a->id, sizeof(a->id));
    if (rc == 0)
        rc = s_copy_text(s, st, 1, a->name, sizeof(a->name));
    if (rc == 0)
        rc = s_copy_text(s, st, 3, a->status, sizeof(a->status));
    if (rc < 0)
        return rc;
    const void *key = sqlite3_column_blob(st, 2);
    if (!key || sqlite3_column_bytes(st, 2) != 32) {
        store_set_error(s, "agents: pubkey of %s is not 32 bytes", a->id);
        return -EIO;
    }
    memcpy(a->pubkey, key, 32);
    a->created_at = sqlite3_column_int64(st, 4);
    return 0;
}

#define S_AGENT_COLS "SELECT id, name, pubkey, status, created_at FROM agents"

/* Reads one agent by id. */
static int s_agent_get(store_t *s, const char *id, store_agent_t *out)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s, S_AGENT_COLS " WHERE id = ?1", &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        rc = s_read_agent(s, st, out);
    else if (step == SQLITE_DONE)
        rc = -ENOENT;
    else
        rc = s_fail(s, "agent get");
    sqlite3_finalize(st);
    return rc;
}

/* Reads every agent, ordered by created_at, id. */
static int s_agent_list(store_t *s, store_agent_t **out, size_t *n)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s, S_AGENT_COLS " ORDER BY created_at, id", &st);
    if (rc < 0)
        return rc;
    void *arr;
    rc = s_collect(s, st, "agent list", sizeof(**out), s_read_agent, &arr, n);
    if (rc == 0)
        *out = arr;
    return rc;
}

/* Sets an agent's status and moves its rev to MAX(rev) + 1 in the same statement. */
static int s_agent_set_status(store_t *s, const char *id, const char *status)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s,
                       "UPDATE agents SET status = ?1, "
                       "rev = (SELECT COALESCE(MAX(rev), 0) + 1 FROM agents) WHERE id = ?2",
                       &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_text(st, 1, status, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    rc = s_run(s, st, "agent set status");
    if (rc == 0 && sqlite3_changes(S_DB(s)) == 0)
        rc = -ENOENT;
    return rc;
}

/* MAX(rev) over all agents (0 when there are none). */
static int s_agents_rev(store_t *s, int64_t *rev)
{
    sqlite3_stmt *st;
    bool found;
    int rc = s_prepare(s, "SELECT COALESCE(MAX(rev), 0) FROM agents", &st);
    return rc < 0 ? rc : s_query_int(s, st, rev, &found);
}

/* ---- users and API keys ----------------------------------------------------------------- */

/* The next rev of the users/api_keys sequence: one more than the highest of either table. As
 * a subquery of the write statement itself it runs under SQLite's write lock. */
#define S_NEXT_KEYS_REV                                                                            \
    "(SELECT MAX(r) + 1 FROM (SELECT COALESCE(MAX(rev), 0) AS r FROM users "                       \
    "UNION ALL SELECT COALESCE(MAX(rev), 0) FROM api_keys))"

/* Inserts an active user with the next keys rev; *id gets its rowid. */
static int s_user_add(store_t *s, const char *name, int64_t created_at, int64_t *id)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s,
                       "INSERT INTO users (name, status, created_at, rev) "
                       "VALUES (?1, 'active', ?2, " S_NEXT_KEYS_REV ")",
                       &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, created_at);
    rc = s_run(s, st, "user add");
    /* One connection per thread (store.h): nothing else can insert between the two calls. */
    if (rc == 0)
        *id = sqlite3_last_insert_rowid(S_DB(s));
    return rc;
}

/* Reads the current row of a user query (id, name, status, created_at). */
static int s_read_user(store_t *s, sqlite3_stmt *st, void *item)
{
    store_user_t *u = item;
    memset(u, 0, sizeof(*u));
    u->id = sqlite3_column_int64(st, 0);
    int rc = s_copy_text(s, st, 1, u->name, sizeof(u->name));
    if (rc == 0)
        rc = s_copy_text(s, st, 2, u->status, sizeof(u->status));
    u->created_at = sqlite3_column_int64(st, 3);
    return rc;
}

#define S_USER_COLS "SELECT id, name, status, created_at FROM users"

/* Reads one user by name. */
static int s_user_get_by_name(store_t *s, const char *name, store_user_t *out)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s, S_USER_COLS " WHERE name = ?1", &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        rc = s_read_user(s, st, out);
    else if (step == SQLITE_DONE)
        rc = -ENOENT;
    else
        rc = s_fail(s, "user get");
    sqlite3_finalize(st);
    return rc;
}

/* Reads every user, ordered by id. */
static int s_user_list(store_t *s, store_user_t **out, size_t *n)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s, S_USER_COLS " ORDER BY id", &st);
    if (rc < 0)
        return rc;
    void *arr;
    rc = s_collect(s, st, "user list", sizeof(**out), s_read_user, &arr, n);
    if (rc == 0)
        *out = arr;
    return rc;
}

/* Sets a user's status and moves its rev to the next keys rev in the same statement. */
static int s_user_set_status(store_t *s, int64_t user_id, const char *status)
{
    sqlite3_stmt *st;
    int rc =
        s_prepare(s, "UPDATE users SET status = ?1, rev = " S_NEXT_KEYS_REV " WHERE id = ?2", &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_text(st, 1, status, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, user_id);
    rc = s_run(s, st, "user set status");
    if (rc == 0 && sqlite3_changes(S_DB(s)) == 0)
        rc = -ENOENT;
    return rc;
}

/* Inserts an active key with the next keys rev. A missing user fails the foreign key
 * (-ENOENT); a taken id or hash the unique keys (-EEXIST). SQLite's messages name the column,
 * never the value, so the hash cannot reach last_error. */
static int s_key_add(store_t *s, int64_t user_id, const char *key_id, const uint8_t hash[32],
                     const char *prefix, int64_t created_at)
{
    sqlite3_stmt *st;
    int rc = s_prepare(
        s,
        "INSERT INTO api_keys (id, user_id, hash, prefix, status, created_at, "
        "revoked_at, rev) VALUES (?1, ?2, ?3, ?4, 'active', ?5, NULL, " S_NEXT_KEYS_REV ")",
        &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, user_id);
    sqlite3_bind_blob(st, 3, hash, 32, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, prefix, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, created_at);
    return s_run(s, st, "key add");
}

/* Reads the current row of a key query (see S_KEY_COLS). */
static int s_read_key(store_t *s, sqlite3_stmt *st, void *item)
{
    store_key_t *k = item;
    memset(k, 0, sizeof(*k));
    int rc = s_copy_text(s, st, 0, k->id, sizeof(k->id));
    if (rc == 0)
        rc = s_copy_text(s, st, 2, k->user_name, sizeof(k->user_name));
    if (rc == 0)
        rc = s_copy_text(s, st, 3, k->prefix, sizeof(k->prefix));
    if (rc == 0)
        rc = s_copy_text(s, st, 4, k->status, sizeof(k->status));
    if (rc == 0)
        rc = s_copy_text(s, st, 5, k->user_status, sizeof(k->user_status));
    k->user_id = sqlite3_column_int64(st, 1);
    k->created_at = sqlite3_column_int64(st, 6);
    k->revoked_at = sqlite3_column_int64(st, 7); /* NULL reads as 0 */
    return rc;
}

#define S_KEY_COLS                                                                                 \
    "SELECT k.id, k.user_id, u.name, k.prefix, k.status, u.status, k.created_at, "                 \
    "k.revoked_at FROM api_keys k JOIN users u ON u.id = k.user_id"

/* Finds a key by its hash (the unique index), with its user. */
static int s_key_lookup(store_t *s, const uint8_t hash[32], store_key_t *out)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s, S_KEY_COLS " WHERE k.hash = ?1", &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_blob(st, 1, hash, 32, SQLITE_STATIC);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        rc = s_read_key(s, st, out);
    else if (step == SQLITE_DONE)
        rc = -ENOENT;
    else
        rc = s_fail(s, "key lookup");
    sqlite3_finalize(st);
    return rc;
}

/* Sets *exists to whether a key with this id exists. */
static int s_key_exists(store_t *s, const char *key_id, bool *exists)
{
    sqlite3_stmt *st;
    int64_t one;
    int rc = s_prepare(s, "SELECT 1 FROM api_keys WHERE id = ?1", &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
    return s_query_int(s, st, &one, exists);
}

/* Revokes an active key in one statement (with the next keys rev); when nothing matched,
 * tells an unknown id (-ENOENT) from a key revoked before (-EALREADY). Keys are never
 * deleted, so the second query cannot be fooled by a concurrent change. */
static int s_key_revoke(store_t *s, const char *key_id, int64_t revoked_at)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s,
                       "UPDATE api_keys SET status = 'revoked', revoked_at = ?1, "
                       "rev = " S_NEXT_KEYS_REV " WHERE id = ?2 AND status = 'active'",
                       &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, revoked_at);
    sqlite3_bind_text(st, 2, key_id, -1, SQLITE_STATIC);
    rc = s_run(s, st, "key revoke");
    if (rc < 0 || sqlite3_changes(S_DB(s)) > 0)
        return rc;
    bool exists = false;
    rc = s_key_exists(s, key_id, &exists);
    if (rc < 0)
        return rc;
    return exists ? -EALREADY : -ENOENT;
}

/* Reads the keys of one user (user_id >= 1) or of all (0), ordered by created_at, id. */
static int s_key_list(store_t *s, int64_t user_id, store_key_t **out, size_t *n)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s,
                       user_id > 0 ? S_KEY_COLS " WHERE k.user_id = ?1 ORDER BY k.created_at, k.id"
                                   : S_KEY_COLS " ORDER BY k.created_at, k.id",
                       &st);
    if (rc < 0)
        return rc;
    if (user_id > 0)
        sqlite3_bind_int64(st, 1, user_id);
    void *arr;
    rc = s_collect(s, st, "key list", sizeof(**out), s_read_key, &arr, n);
    if (rc == 0)
        *out = arr;
    return rc;
}

/* The highest rev of users and api_keys (0 when both are empty). */
static int s_keys_rev(store_t *s, int64_t *rev)
{
    sqlite3_stmt *st;
    bool found;
    int rc = s_prepare(s,
                       "SELECT MAX(r) FROM (SELECT COALESCE(MAX(rev), 0) AS r FROM users "
                       "UNION ALL SELECT COALESCE(MAX(rev), 0) FROM api_keys)",
                       &st);
    return rc < 0 ? rc : s_query_int(s, st, rev, &found);
}

/* ---- billing ---------------------------------------------------------------------------- */

/* Opens a write transaction. BEGIN IMMEDIATE takes the write lock at once (waiting up to the
 * busy timeout), so every read inside sees the latest state and no other process can write
 * between a check and the change it allows. */
static int s_begin(store_t *s)
{
    return s_exec(s, "BEGIN IMMEDIATE");
}

/* Ends the open transaction: COMMIT if rc is 0, else (or if COMMIT fails) ROLLBACK, keeping
 * the first error as the connection's last error. */
static int s_end(store_t *s, int rc)
{
    if (rc == 0) {
        rc = s_exec(s, "COMMIT");
        if (rc == 0)
            return 0;
    }
    sqlite3_exec(S_DB(s), "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* Prepares *st on first use (statements a batch reuses; s_finalize_all frees them). */
static int s_use(store_t *s, sqlite3_stmt **st, const char *sql)
{
    if (*st) {
        sqlite3_reset(*st);
        sqlite3_clear_bindings(*st);
        return 0;
    }
    return s_prepare(s, sql, st);
}

/* Finalizes n statements (NULL ones are skipped). */
static void s_finalize_all(sqlite3_stmt **st, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sqlite3_finalize(st[i]);
}

/* Steps a reusable statement to its end (rows ignored) and resets it. */
static int s_step(store_t *s, sqlite3_stmt *st, const char *what)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    int ret = rc == SQLITE_DONE ? 0 : s_fail(s, what);
    sqlite3_reset(st);
    return ret;
}

/* Steps a reusable query once: 1 a row is there (read it, then reset), 0 none, or an error. */
static int s_step_row(store_t *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        return 1;
    int ret = rc == SQLITE_DONE ? 0 : s_fail(s, what);
    sqlite3_reset(st);
    return ret;
}

/* Copies blob column col of exactly len bytes into dst; -EIO if its length differs. */
static int s_copy_blob(store_t *s, sqlite3_stmt *st, int col, void *dst, size_t len)
{
    const void *blob = sqlite3_column_blob(st, col);
    if (!blob || (size_t)sqlite3_column_bytes(st, col) != len) {
        store_set_error(s, "row: column %d is not %zu bytes", col, len);
        return -EIO;
    }
    memcpy(dst, blob, len);
    return 0;
}

/* Reads the current row of a price query (see S_PRICE_COLS). */
static int s_read_price(store_t *s, sqlite3_stmt *st, void *item)
{
    store_price_t *p = item;
    memset(p, 0, sizeof(*p));
    p->effective_from = sqlite3_column_int64(st, 1);
    p->input = sqlite3_column_int64(st, 2);
    p->output = sqlite3_column_int64(st, 3);
    p->cached_input = sqlite3_column_int64(st, 4);
    p->created_at = sqlite3_column_int64(st, 5);
    return s_copy_text(s, st, 0, p->model, sizeof(p->model));
}

#define S_PRICE_COLS                                                                               \
    "SELECT model, effective_from, input, output, cached_input, created_at FROM prices"

/* Adds a price version and bumps the prices counter in one write transaction. */
static int s_price_set(store_t *s, const store_price_t *p)
{
    sqlite3_stmt *st[2] = {NULL, NULL};
    int rc = s_begin(s);
    if (rc < 0)
        return rc;
    rc = s_use(s, &st[0],
               "INSERT INTO prices (model, effective_from, input, output, cached_input, "
               "created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    if (rc == 0) {
        sqlite3_bind_text(st[0], 1, p->model, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st[0], 2, p->effective_from);
        sqlite3_bind_int64(st[0], 3, p->input);
        sqlite3_bind_int64(st[0], 4, p->output);
        sqlite3_bind_int64(st[0], 5, p->cached_input);
        sqlite3_bind_int64(st[0], 6, p->created_at);
        rc = s_step(s, st[0], "price set");
    }
    if (rc == 0)
        rc = s_use(s, &st[1], "UPDATE billing_revs SET rev = rev + 1 WHERE name = 'prices'");
    if (rc == 0)
        rc = s_step(s, st[1], "prices rev");
    s_finalize_all(st, 2);
    return s_end(s, rc);
}

/* Every price version, ordered by model, effective_from. */
static int s_price_list(store_t *s, store_price_t **out, size_t *n)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s, S_PRICE_COLS " ORDER BY model, effective_from", &st);
    if (rc < 0)
        return rc;
    void *arr;
    rc = s_collect(s, st, "price list", sizeof(**out), s_read_price, &arr, n);
    if (rc == 0)
        *out = arr;
    return rc;
}

/* The newest version of model with effective_from <= at_ms. */
static int s_price_at(store_t *s, const char *model, int64_t at_ms, store_price_t *out)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s,
                       S_PRICE_COLS " WHERE model = ?1 AND effective_from <= ?2 "
                                    "ORDER BY effective_from DESC LIMIT 1",
                       &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_text(st, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, at_ms);
    rc = s_step_row(s, st, "price at");
    if (rc == 1)
        rc = s_read_price(s, st, out);
    else if (rc == 0)
        rc = -ENOENT;
    sqlite3_finalize(st);
    return rc;
}

/* The prices counter. */
static int s_prices_rev(store_t *s, int64_t *rev)
{
    sqlite3_stmt *st;
    bool found;
    int rc = s_prepare(s, "SELECT rev FROM billing_revs WHERE name = 'prices'", &st);
    if (rc == 0)
        rc = s_query_int(s, st, rev, &found);
    if (rc == 0 && !found) {
        store_set_error(s, "prices rev: counter row missing");
        rc = -EIO;
    }
    return rc;
}

/* Queues a top-up; a missing user fails the foreign key (-ENOENT). */
static int s_topup_add(store_t *s, int64_t user_id, int64_t amount, int64_t created_at, int64_t *id)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s,
                       "INSERT INTO topups (user_id, amount, created_at, applied_at) "
                       "VALUES (?1, ?2, ?3, NULL)",
                       &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, user_id);
    sqlite3_bind_int64(st, 2, amount);
    sqlite3_bind_int64(st, 3, created_at);
    rc = s_run(s, st, "top-up add");
    if (rc == 0)
        *id = sqlite3_last_insert_rowid(S_DB(s));
    return rc;
}

/* 1 if the top-up is applied, 0 if queued, -ENOENT if unknown. */
static int s_topup_applied(store_t *s, int64_t id)
{
    sqlite3_stmt *st;
    int64_t applied = 0;
    bool found = false;
    int rc = s_prepare(s, "SELECT applied_at IS NOT NULL FROM topups WHERE id = ?1", &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    rc = s_query_int(s, st, &applied, &found);
    if (rc < 0)
        return rc;
    return !found ? -ENOENT : applied ? 1 : 0;
}

/* Applies every queued top-up in one write transaction: the balances first (per user, the sum
 * of the queued amounts), then the marks. The write lock keeps anyone from queueing one
 * between the two statements. */
static int s_topups_apply(store_t *s, int64_t now, size_t *applied)
{
    sqlite3_stmt *st[2] = {NULL, NULL};
    int rc = s_begin(s);
    if (rc < 0)
        return rc;
    /* WHERE is needed before ON CONFLICT in an INSERT ... SELECT (SQLite's parser). */
    rc = s_use(s, &st[0],
               "INSERT INTO balances (user_id, balance) SELECT user_id, SUM(amount) FROM topups "
               "WHERE applied_at IS NULL GROUP BY user_id "
               "ON CONFLICT (user_id) DO UPDATE SET balance = balance + excluded.balance");
    if (rc == 0)
        rc = s_step(s, st[0], "top-ups apply");
    if (rc == 0)
        rc = s_use(s, &st[1], "UPDATE topups SET applied_at = ?1 WHERE applied_at IS NULL");
    if (rc == 0) {
        sqlite3_bind_int64(st[1], 1, now);
        rc = s_step(s, st[1], "top-ups mark");
    }
    if (rc == 0)
        *applied = (size_t)sqlite3_changes(S_DB(s));
    s_finalize_all(st, 2);
    rc = s_end(s, rc);
    if (rc < 0)
        *applied = 0;
    return rc;
}

/* A user's balance, active holds and queued top-ups, read by one statement (one snapshot). */
static int s_balance_get(store_t *s, int64_t user_id, store_balance_t *out)
{
    sqlite3_stmt *st;
    int rc = s_prepare(
        s,
        "SELECT COALESCE((SELECT balance FROM balances WHERE user_id = u.id), 0), "
        "(SELECT COALESCE(SUM(amount), 0) FROM holds WHERE user_id = u.id AND state = 0), "
        "(SELECT COALESCE(SUM(amount), 0) FROM topups WHERE user_id = u.id "
        "AND applied_at IS NULL) FROM users u WHERE u.id = ?1",
        &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, user_id);
    rc = s_step_row(s, st, "balance get");
    if (rc == 1) {
        out->user_id = user_id;
        out->balance = sqlite3_column_int64(st, 0);
        out->held = sqlite3_column_int64(st, 1);
        out->pending_topups = sqlite3_column_int64(st, 2);
        rc = 0;
    } else if (rc == 0) {
        rc = -ENOENT;
    }
    sqlite3_finalize(st);
    return rc;
}

/* Finds or loads the purse of user_id into (*purses, *n, *cap) with its balance and active
 * holds; -ENOENT for no such user. */
static int s_purse(store_t *s, sqlite3_stmt **st, int64_t user_id, store_purse_t **purses,
                   size_t *n, size_t *cap, store_purse_t **out)
{
    *out = store_purse_find(*purses, *n, user_id);
    if (*out)
        return 0;
    int rc = s_use(s, st,
                   "SELECT COALESCE((SELECT balance FROM balances WHERE user_id = u.id), 0), "
                   "(SELECT COALESCE(SUM(amount), 0) FROM holds WHERE user_id = u.id "
                   "AND state = 0) FROM users u WHERE u.id = ?1");
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(*st, 1, user_id);
    rc = s_step_row(s, *st, "hold purse");
    if (rc == 0) {
        store_set_error(s, "hold: no user with id %lld", (long long)user_id);
        return -ENOENT;
    }
    if (rc < 0)
        return rc;
    store_purse_t p = {user_id, sqlite3_column_int64(*st, 0), sqlite3_column_int64(*st, 1)};
    sqlite3_reset(*st);
    void *arr = *purses;
    rc = store_array_push(&arr, n, cap, &p, sizeof(p));
    *purses = arr;
    if (rc < 0)
        return rc;
    *out = &(*purses)[*n - 1];
    return 0;
}

/* Places a batch of holds in one write transaction (see store.h). */
static int s_holds_place(store_t *s, const store_hold_t *holds, size_t n, int *results,
                         int64_t *available)
{
    enum { FIND, PURSE, INSERT, N_ST };
    sqlite3_stmt *st[N_ST] = {NULL};
    store_purse_t *purses = NULL;
    size_t n_purses = 0, cap = 0;
    int64_t now = store_now_ms();
    int rc = s_begin(s);
    if (rc < 0)
        return rc;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const store_hold_t *h = &holds[i];
        rc = s_use(s, &st[FIND], "SELECT user_id, state FROM holds WHERE req_id = ?1");
        if (rc < 0)
            break;
        sqlite3_bind_blob(st[FIND], 1, h->req_id, 16, SQLITE_STATIC);
        rc = s_step_row(s, st[FIND], "hold find");
        if (rc < 0)
            break;
        store_purse_t *p = NULL;
        if (rc == 1) { /* placed before: its earlier outcome */
            int64_t owner = sqlite3_column_int64(st[FIND], 0);
            int state = sqlite3_column_int(st[FIND], 1);
            sqlite3_reset(st[FIND]);
            rc = s_purse(s, &st[PURSE], owner, &purses, &n_purses, &cap, &p);
            if (rc < 0)
                break;
            results[i] = state != STORE_HOLD_REFUSED;
        } else {
            rc = s_purse(s, &st[PURSE], h->user_id, &purses, &n_purses, &cap, &p);
            if (rc < 0)
                break;
            int grant = store_purse_hold(p, h->amount);
            rc = s_use(s, &st[INSERT],
                       "INSERT INTO holds (req_id, user_id, amount, created_at, expires_at, "
                       "state) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
            if (rc < 0)
                break;
            sqlite3_bind_blob(st[INSERT], 1, h->req_id, 16, SQLITE_STATIC);
            sqlite3_bind_int64(st[INSERT], 2, h->user_id);
            sqlite3_bind_int64(st[INSERT], 3, h->amount);
            sqlite3_bind_int64(st[INSERT], 4, now);
            sqlite3_bind_int64(st[INSERT], 5, h->expires_at);
            sqlite3_bind_int(st[INSERT], 6, grant ? STORE_HOLD_ACTIVE : STORE_HOLD_REFUSED);
            rc = s_step(s, st[INSERT], "hold place");
            if (rc < 0)
                break;
            results[i] = grant;
        }
        if (available)
            available[i] = store_purse_left(p);
    }
    s_finalize_all(st, N_ST);
    free(purses);
    return s_end(s, rc);
}

/* Reads one hold. */
static int s_hold_get(store_t *s, const uint8_t req_id[16], store_hold_t *out)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s,
                       "SELECT user_id, amount, created_at, expires_at, state FROM holds "
                       "WHERE req_id = ?1",
                       &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_blob(st, 1, req_id, 16, SQLITE_STATIC);
    rc = s_step_row(s, st, "hold get");
    if (rc == 1) {
        memcpy(out->req_id, req_id, 16);
        out->user_id = sqlite3_column_int64(st, 0);
        out->amount = sqlite3_column_int64(st, 1);
        out->created_at = sqlite3_column_int64(st, 2);
        out->expires_at = sqlite3_column_int64(st, 3);
        out->state = sqlite3_column_int(st, 4);
        rc = 0;
    } else if (rc == 0) {
        rc = -ENOENT;
    }
    sqlite3_finalize(st);
    return rc;
}

/* Expires the active holds due at now (one statement: its own transaction). */
static int s_holds_expire(store_t *s, int64_t now, size_t *n)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s, "UPDATE holds SET state = 2 WHERE state = 0 AND expires_at <= ?1", &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, now);
    rc = s_run(s, st, "holds expire");
    if (rc == 0)
        *n = (size_t)sqlite3_changes(S_DB(s));
    return rc;
}

/* Sum and count of the active holds. */
static int s_holds_outstanding(store_t *s, int64_t *amount, int64_t *count)
{
    sqlite3_stmt *st;
    int rc =
        s_prepare(s, "SELECT COALESCE(SUM(amount), 0), COUNT(*) FROM holds WHERE state = 0", &st);
    if (rc < 0)
        return rc;
    rc = s_step_row(s, st, "holds outstanding");
    if (rc == 1) {
        *amount = sqlite3_column_int64(st, 0);
        *count = sqlite3_column_int64(st, 1);
        rc = 0;
    } else if (rc == 0) {
        rc = -EIO; /* an aggregate always has a row */
    }
    sqlite3_finalize(st);
    return rc;
}

/* Stores a batch of usage reports in one write transaction; a re-sent report (same key) and a
 * report of a settled request are skipped. */
static int s_usage_put(store_t *s, const store_usage_t *u, size_t n)
{
    sqlite3_stmt *st = NULL;
    int rc = s_begin(s);
    if (rc < 0)
        return rc;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = s_use(s, &st,
                   "INSERT INTO usage_reports (req_id, source, attempt, agent_id, user_id, model, "
                   "status, delivered, complete, estimated, input_tokens, cached_tokens, "
                   "output_tokens, received_at) "
                   "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14 "
                   "WHERE NOT EXISTS (SELECT 1 FROM settlements WHERE req_id = ?1) "
                   "ON CONFLICT (req_id, source, attempt) DO NOTHING");
        if (rc < 0)
            break;
        const store_usage_t *r = &u[i];
        sqlite3_bind_blob(st, 1, r->req_id, 16, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, r->source, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, r->attempt);
        sqlite3_bind_text(st, 4, r->agent_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, r->user_id);
        sqlite3_bind_text(st, 6, r->model, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 7, r->status);
        sqlite3_bind_int(st, 8, r->delivered);
        sqlite3_bind_int(st, 9, r->complete);
        sqlite3_bind_int(st, 10, r->estimated);
        sqlite3_bind_int64(st, 11, r->input_tokens);
        sqlite3_bind_int64(st, 12, r->cached_tokens);
        sqlite3_bind_int64(st, 13, r->output_tokens);
        sqlite3_bind_int64(st, 14, r->received_at);
        rc = s_step(s, st, "usage put");
    }
    sqlite3_finalize(st);
    return s_end(s, rc);
}

#define S_USAGE_COLS                                                                               \
    "SELECT r.req_id, r.source, r.attempt, r.agent_id, r.user_id, r.model, r.status, "             \
    "r.delivered, r.complete, r.estimated, r.input_tokens, r.cached_tokens, r.output_tokens, "     \
    "r.received_at FROM usage_reports r"

/* Reads the current row of a usage query (see S_USAGE_COLS). */
static int s_read_usage(store_t *s, sqlite3_stmt *st, void *item)
{
    store_usage_t *u = item;
    memset(u, 0, sizeof(*u));
    int rc = s_copy_blob(s, st, 0, u->req_id, 16);
    if (rc == 0)
        rc = s_copy_text(s, st, 1, u->source, sizeof(u->source));
    if (rc == 0)
        rc = s_copy_text(s, st, 3, u->agent_id, sizeof(u->agent_id));
    if (rc == 0)
        rc = s_copy_text(s, st, 5, u->model, sizeof(u->model));
    u->attempt = (uint32_t)sqlite3_column_int64(st, 2);
    u->user_id = sqlite3_column_int64(st, 4);
    u->status = sqlite3_column_int(st, 6);
    u->delivered = sqlite3_column_int(st, 7) != 0;
    u->complete = sqlite3_column_int(st, 8) != 0;
    u->estimated = sqlite3_column_int(st, 9) != 0;
    u->input_tokens = sqlite3_column_int64(st, 10);
    u->cached_tokens = sqlite3_column_int64(st, 11);
    u->output_tokens = sqlite3_column_int64(st, 12);
    u->received_at = sqlite3_column_int64(st, 13);
    return rc;
}

/* Runs a prepared usage query to its end; finalizes st. */
static int s_usage_rows(store_t *s, sqlite3_stmt *st, const char *what, store_usage_t **out,
                        size_t *n)
{
    void *arr;
    int rc = s_collect(s, st, what, sizeof(**out), s_read_usage, &arr, n);
    if (rc == 0)
        *out = arr;
    return rc;
}

/* Reports of unsettled requests, oldest first, at most limit. */
static int s_usage_pending(store_t *s, size_t limit, store_usage_t **out, size_t *n)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s,
                       S_USAGE_COLS " WHERE NOT EXISTS (SELECT 1 FROM settlements t "
                                    "WHERE t.req_id = r.req_id) "
                                    "ORDER BY r.received_at, r.req_id, r.source, r.attempt "
                                    "LIMIT ?1",
                       &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, (int64_t)limit);
    return s_usage_rows(s, st, "usage pending", out, n);
}

/* Every stored report of one request, ordered by source, attempt. */
static int s_usage_of(store_t *s, const uint8_t req_id[16], store_usage_t **out, size_t *n)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s, S_USAGE_COLS " WHERE r.req_id = ?1 ORDER BY r.source, r.attempt", &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_blob(st, 1, req_id, 16, SQLITE_STATIC);
    return s_usage_rows(s, st, "usage of", out, n);
}

/* Statements of one store_settle call, prepared on first use. */
enum {
    S_SET_DONE,    /* is the request settled already? */
    S_SET_HEAD,    /* the agent's chain head */
    S_SET_LEDGER,  /* append the row */
    S_SET_BALANCE, /* debit the user */
    S_SET_ACCOUNT, /* credit the agent, move its head */
    S_SET_HOLD,    /* release the hold */
    S_SET_REPORTS, /* drop the reports */
    S_SET_INSERT,  /* record the settlement */
    S_SET_N
};

/* Appends one BILLED item's row: checks it follows the agent's chain, inserts it, debits the
 * user, credits the agent and moves the chain's head. */
static int s_settle_row(store_t *s, sqlite3_stmt **st, size_t i, const ledger_row_t *r)
{
    int rc = s_use(s, &st[S_SET_HEAD],
                   "SELECT last_seq, last_hash FROM agent_accounts WHERE agent_id = ?1");
    if (rc < 0)
        return rc;
    sqlite3_bind_text(st[S_SET_HEAD], 1, r->agent_id, -1, SQLITE_STATIC);
    rc = s_step_row(s, st[S_SET_HEAD], "ledger head");
    if (rc < 0)
        return rc;
    uint64_t last = 0;
    uint8_t last_hash[LEDGER_HASH_LEN] = {0};
    if (rc == 1) {
        last = (uint64_t)sqlite3_column_int64(st[S_SET_HEAD], 0);
        rc = s_copy_blob(s, st[S_SET_HEAD], 1, last_hash, LEDGER_HASH_LEN);
        sqlite3_reset(st[S_SET_HEAD]);
        if (rc < 0)
            return rc;
    }
    if (r->seq != last + 1) {
        store_set_error(s, "settlement %zu: seq %llu of agent %s does not follow %llu", i,
                        (unsigned long long)r->seq, r->agent_id, (unsigned long long)last);
        return -ESTALE;
    }
    if (memcmp(r->prev_hash, last_hash, LEDGER_HASH_LEN) != 0) {
        store_set_error(s,
                        "settlement %zu: prev_hash of agent %s seq %llu is not the hash of "
                        "its last row",
                        i, r->agent_id, (unsigned long long)r->seq);
        return -ESTALE;
    }
    rc = s_use(s, &st[S_SET_LEDGER],
               "INSERT INTO ledger (agent_id, seq, req_id, attempt, user_id, model, input_tokens, "
               "cached_tokens, output_tokens, estimated, cost, fee, credit, hold_amount, "
               "price_from, fee_ppm, created_ms, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, "
               "?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)");
    if (rc < 0)
        return rc;
    sqlite3_stmt *l = st[S_SET_LEDGER];
    sqlite3_bind_text(l, 1, r->agent_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(l, 2, (int64_t)r->seq);
    sqlite3_bind_blob(l, 3, r->req_id, 16, SQLITE_STATIC);
    sqlite3_bind_int64(l, 4, r->attempt);
    sqlite3_bind_int64(l, 5, r->user_id);
    sqlite3_bind_text(l, 6, r->model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(l, 7, r->input_tokens);
    sqlite3_bind_int64(l, 8, r->cached_tokens);
    sqlite3_bind_int64(l, 9, r->output_tokens);
    sqlite3_bind_int(l, 10, r->estimated);
    sqlite3_bind_int64(l, 11, r->cost);
    sqlite3_bind_int64(l, 12, r->fee);
    sqlite3_bind_int64(l, 13, r->credit);
    sqlite3_bind_int64(l, 14, r->hold);
    sqlite3_bind_int64(l, 15, r->price_from);
    sqlite3_bind_int64(l, 16, r->fee_ppm);
    sqlite3_bind_int64(l, 17, r->created_ms);
    sqlite3_bind_blob(l, 18, r->prev_hash, LEDGER_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(l, 19, r->hash, LEDGER_HASH_LEN, SQLITE_STATIC);
    rc = s_step(s, l, "ledger append");
    if (rc < 0)
        return rc;
    /* The balance may go below zero: what a request cost beyond its hold is still charged. A
     * user without a money row gets one (a missing user fails the foreign key: -ENOENT). */
    rc = s_use(s, &st[S_SET_BALANCE],
               "INSERT INTO balances (user_id, balance) VALUES (?1, ?2) ON CONFLICT (user_id) "
               "DO UPDATE SET balance = balance + excluded.balance");
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st[S_SET_BALANCE], 1, r->user_id);
    sqlite3_bind_int64(st[S_SET_BALANCE], 2, -r->cost);
    rc = s_step(s, st[S_SET_BALANCE], "balance debit");
    if (rc < 0)
        return rc;
    rc = s_use(s, &st[S_SET_ACCOUNT],
               "INSERT INTO agent_accounts (agent_id, credit, last_seq, last_hash, acked_seq) "
               "VALUES (?1, ?2, ?3, ?4, 0) ON CONFLICT (agent_id) DO UPDATE SET "
               "credit = credit + excluded.credit, last_seq = excluded.last_seq, "
               "last_hash = excluded.last_hash");
    if (rc < 0)
        return rc;
    sqlite3_bind_text(st[S_SET_ACCOUNT], 1, r->agent_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st[S_SET_ACCOUNT], 2, r->credit);
    sqlite3_bind_int64(st[S_SET_ACCOUNT], 3, (int64_t)r->seq);
    sqlite3_bind_blob(st[S_SET_ACCOUNT], 4, r->hash, LEDGER_HASH_LEN, SQLITE_STATIC);
    return s_step(s, st[S_SET_ACCOUNT], "account credit");
}

/* Settles one item inside the batch's transaction. */
static int s_settle_one(store_t *s, sqlite3_stmt **st, size_t i, const store_settle_t *it)
{
    int rc = s_use(s, &st[S_SET_DONE], "SELECT 1 FROM settlements WHERE req_id = ?1");
    if (rc < 0)
        return rc;
    sqlite3_bind_blob(st[S_SET_DONE], 1, it->req_id, 16, SQLITE_STATIC);
    rc = s_step_row(s, st[S_SET_DONE], "settled");
    if (rc < 0)
        return rc;
    if (rc == 1) {
        sqlite3_reset(st[S_SET_DONE]);
        store_set_error(s, "settlement %zu: the request is settled already", i);
        return -EALREADY;
    }
    bool billed = it->outcome == STORE_OUTCOME_BILLED;
    if (billed && (rc = s_settle_row(s, st, i, &it->row)) < 0)
        return rc;
    /* A refused hold stays refused: a re-sent hold.req must get the same answer. */
    rc = s_use(s, &st[S_SET_HOLD],
               "UPDATE holds SET state = 1 WHERE req_id = ?1 AND state IN (0, 2)");
    if (rc < 0)
        return rc;
    sqlite3_bind_blob(st[S_SET_HOLD], 1, it->req_id, 16, SQLITE_STATIC);
    rc = s_step(s, st[S_SET_HOLD], "hold settle");
    if (rc < 0)
        return rc;
    rc = s_use(s, &st[S_SET_REPORTS], "DELETE FROM usage_reports WHERE req_id = ?1");
    if (rc < 0)
        return rc;
    sqlite3_bind_blob(st[S_SET_REPORTS], 1, it->req_id, 16, SQLITE_STATIC);
    rc = s_step(s, st[S_SET_REPORTS], "usage drop");
    if (rc < 0)
        return rc;
    rc = s_use(s, &st[S_SET_INSERT],
               "INSERT INTO settlements (req_id, outcome, user_id, agent_id, seq, settled_at) "
               "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    if (rc < 0)
        return rc;
    sqlite3_stmt *t = st[S_SET_INSERT];
    sqlite3_bind_blob(t, 1, it->req_id, 16, SQLITE_STATIC);
    sqlite3_bind_int(t, 2, it->outcome);
    sqlite3_bind_int64(t, 3, it->user_id);
    if (billed) {
        sqlite3_bind_text(t, 4, it->row.agent_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(t, 5, (int64_t)it->row.seq);
    } /* else both stay NULL (cleared bindings) */
    sqlite3_bind_int64(t, 6, it->settled_at);
    return s_step(s, t, "settlement insert");
}

/* Settles a batch in one write transaction; any failure rolls all of it back. */
static int s_settle(store_t *s, const store_settle_t *items, size_t n)
{
    sqlite3_stmt *st[S_SET_N] = {NULL};
    int rc = s_begin(s);
    if (rc < 0)
        return rc;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = s_settle_one(s, st, i, &items[i]);
    s_finalize_all(st, S_SET_N);
    return s_end(s, rc);
}

/* 1 and the outcome if the request is settled, else 0. */
static int s_settled(store_t *s, const uint8_t req_id[16], int *outcome)
{
    sqlite3_stmt *st;
    int64_t v = 0;
    bool found = false;
    int rc = s_prepare(s, "SELECT outcome FROM settlements WHERE req_id = ?1", &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_blob(st, 1, req_id, 16, SQLITE_STATIC);
    rc = s_query_int(s, st, &v, &found);
    if (rc < 0)
        return rc;
    if (found)
        *outcome = (int)v;
    return found ? 1 : 0;
}

/* The agent's chain head from its account (seq 0 and zeros without one). */
static int s_ledger_head(store_t *s, const char *agent_id, uint64_t *seq, uint8_t hash[32])
{
    sqlite3_stmt *st;
    int rc =
        s_prepare(s, "SELECT last_seq, last_hash FROM agent_accounts WHERE agent_id = ?1", &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_text(st, 1, agent_id, -1, SQLITE_STATIC);
    rc = s_step_row(s, st, "ledger head");
    if (rc == 1) {
        *seq = (uint64_t)sqlite3_column_int64(st, 0);
        rc = s_copy_blob(s, st, 1, hash, LEDGER_HASH_LEN);
    }
    sqlite3_finalize(st);
    return rc < 0 ? rc : 0;
}

#define S_LEDGER_COLS                                                                              \
    "SELECT agent_id, seq, req_id, attempt, user_id, model, input_tokens, cached_tokens, "         \
    "output_tokens, estimated, cost, fee, credit, hold_amount, price_from, fee_ppm, created_ms, "  \
    "prev_hash, hash FROM ledger"

/* Reads the current row of a ledger query (see S_LEDGER_COLS). */
static int s_read_ledger(store_t *s, sqlite3_stmt *st, void *item)
{
    ledger_row_t *r = item;
    memset(r, 0, sizeof(*r));
    int rc = s_copy_text(s, st, 0, r->agent_id, sizeof(r->agent_id));
    if (rc == 0)
        rc = s_copy_blob(s, st, 2, r->req_id, 16);
    if (rc == 0)
        rc = s_copy_text(s, st, 5, r->model, sizeof(r->model));
    if (rc == 0)
        rc = s_copy_blob(s, st, 17, r->prev_hash, LEDGER_HASH_LEN);
    if (rc == 0)
        rc = s_copy_blob(s, st, 18, r->hash, LEDGER_HASH_LEN);
    r->seq = (uint64_t)sqlite3_column_int64(st, 1);
    r->attempt = (uint32_t)sqlite3_column_int64(st, 3);
    r->user_id = sqlite3_column_int64(st, 4);
    r->input_tokens = sqlite3_column_int64(st, 6);
    r->cached_tokens = sqlite3_column_int64(st, 7);
    r->output_tokens = sqlite3_column_int64(st, 8);
    r->estimated = sqlite3_column_int(st, 9) != 0;
    r->cost = sqlite3_column_int64(st, 10);
    r->fee = sqlite3_column_int64(st, 11);
    r->credit = sqlite3_column_int64(st, 12);
    r->hold = sqlite3_column_int64(st, 13);
    r->price_from = sqlite3_column_int64(st, 14);
    r->fee_ppm = sqlite3_column_int64(st, 15);
    r->created_ms = sqlite3_column_int64(st, 16);
    return rc;
}

/* Rows of an agent from from_seq on, in seq order, at most limit. */
static int s_ledger_range(store_t *s, const char *agent_id, uint64_t from_seq, size_t limit,
                          ledger_row_t **out, size_t *n)
{
    sqlite3_stmt *st;
    int rc =
        s_prepare(s, S_LEDGER_COLS " WHERE agent_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3", &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_text(st, 1, agent_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (int64_t)from_seq);
    sqlite3_bind_int64(st, 3, (int64_t)limit);
    void *arr;
    rc = s_collect(s, st, "ledger range", sizeof(**out), s_read_ledger, &arr, n);
    if (rc == 0)
        *out = arr;
    return rc;
}

/* The ledger row of one request. */
static int s_ledger_by_req(store_t *s, const uint8_t req_id[16], ledger_row_t *out)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s, S_LEDGER_COLS " WHERE req_id = ?1", &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_blob(st, 1, req_id, 16, SQLITE_STATIC);
    rc = s_step_row(s, st, "ledger by req");
    if (rc == 1)
        rc = s_read_ledger(s, st, out);
    else if (rc == 0)
        rc = -ENOENT;
    sqlite3_finalize(st);
    return rc;
}

/* Raises the agent's acknowledged seq to seq (never lowers it), creating its account. */
static int s_ledger_ack(store_t *s, const char *agent_id, uint64_t seq)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s,
                       "INSERT INTO agent_accounts (agent_id, credit, last_seq, last_hash, "
                       "acked_seq) VALUES (?1, 0, 0, zeroblob(32), ?2) ON CONFLICT (agent_id) "
                       "DO UPDATE SET acked_seq = MAX(acked_seq, excluded.acked_seq)",
                       &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_text(st, 1, agent_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (int64_t)seq);
    return s_run(s, st, "ledger ack");
}

/* Reads the current row of an account query (agent_id, credit, last_seq, acked_seq). */
static int s_read_account(store_t *s, sqlite3_stmt *st, void *item)
{
    store_account_t *a = item;
    memset(a, 0, sizeof(*a));
    a->credit = sqlite3_column_int64(st, 1);
    a->last_seq = (uint64_t)sqlite3_column_int64(st, 2);
    a->acked_seq = (uint64_t)sqlite3_column_int64(st, 3);
    return s_copy_text(s, st, 0, a->agent_id, sizeof(a->agent_id));
}

/* Every agent account, ordered by agent_id. */
static int s_account_list(store_t *s, store_account_t **out, size_t *n)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s,
                       "SELECT agent_id, credit, last_seq, acked_seq FROM agent_accounts "
                       "ORDER BY agent_id",
                       &st);
    if (rc < 0)
        return rc;
    void *arr;
    rc = s_collect(s, st, "account list", sizeof(**out), s_read_account, &arr, n);
    if (rc == 0)
        *out = arr;
    return rc;
}

/* Hub-wide sums, read by one statement (one snapshot). */
static int s_billing_totals(store_t *s, store_totals_t *out)
{
    sqlite3_stmt *st;
    int rc = s_prepare(
        s,
        "SELECT t.v, b.v, l.cost, l.credit, l.fee, l.n, x.n FROM "
        "(SELECT COALESCE(SUM(amount), 0) AS v FROM topups WHERE applied_at IS NOT NULL) t, "
        "(SELECT COALESCE(SUM(balance), 0) AS v FROM balances) b, "
        "(SELECT COALESCE(SUM(cost), 0) AS cost, COALESCE(SUM(credit), 0) AS credit, "
        "COALESCE(SUM(fee), 0) AS fee, COUNT(*) AS n FROM ledger) l, "
        "(SELECT COUNT(*) AS n FROM settlements) x",
        &st);
    if (rc < 0)
        return rc;
    rc = s_step_row(s, st, "billing totals");
    if (rc == 1) {
        out->topups = sqlite3_column_int64(st, 0);
        out->balances = sqlite3_column_int64(st, 1);
        out->debits = sqlite3_column_int64(st, 2);
        out->credits = sqlite3_column_int64(st, 3);
        out->fees = sqlite3_column_int64(st, 4);
        out->ledger_rows = sqlite3_column_int64(st, 5);
        out->settled = sqlite3_column_int64(st, 6);
        rc = 0;
    } else if (rc == 0) {
        rc = -EIO;
    }
    sqlite3_finalize(st);
    return rc;
}

static const store_ops_t s_ops = {
    .name = "sqlite",
    .close = s_close,
    .migrate_begin = s_migrate_begin,
    .migrate_end = s_migrate_end,
    .migrate_one = s_migrate_one,
    .schema_version = s_schema_version,
    .agent_add = s_agent_add,
    .agent_get = s_agent_get,
    .agent_list = s_agent_list,
    .agent_set_status = s_agent_set_status,
    .agents_rev = s_agents_rev,
    .user_add = s_user_add,
    .user_get_by_name = s_user_get_by_name,
    .user_list = s_user_list,
    .user_set_status = s_user_set_status,
    .key_add = s_key_add,
    .key_lookup = s_key_lookup,
    .key_revoke = s_key_revoke,
    .key_list = s_key_list,
    .keys_rev = s_keys_rev,
    .price_set = s_price_set,
    .price_list = s_price_list,
    .price_at = s_price_at,
    .prices_rev = s_prices_rev,
    .topup_add = s_topup_add,
    .topup_applied = s_topup_applied,
    .topups_apply = s_topups_apply,
    .balance_get = s_balance_get,
    .holds_place = s_holds_place,
    .hold_get = s_hold_get,
    .holds_expire = s_holds_expire,
    .holds_outstanding = s_holds_outstanding,
    .usage_put = s_usage_put,
    .usage_pending = s_usage_pending,
    .usage_of = s_usage_of,
    .settle = s_settle,
    .settled = s_settled,
    .ledger_head = s_ledger_head,
    .ledger_range = s_ledger_range,
    .ledger_by_req = s_ledger_by_req,
    .ledger_ack = s_ledger_ack,
    .account_list = s_account_list,
    .billing_totals = s_billing_totals,
};

/* Runs a PRAGMA that answers one text value and checks it (want NULL: any answer). */
static int s_pragma(store_t *s, const char *sql, const char *want, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    int rc = s_prepare(s, sql, &st);
    if (rc < 0) {
        snprintf(err, errlen, "store: %s: %s", sql, s->last_error);
        return rc;
    }
    int step = sqlite3_step(st);
    const char *got = step == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    if (step != SQLITE_ROW && step != SQLITE_DONE) {
        rc = s_fail(s, sql);
        snprintf(err, errlen, "store: %s", s->last_error);
    } else if (want && (!got || strcmp(got, want) != 0)) {
        snprintf(err, errlen, "store: %s answered %s, not %s", sql, got ? got : "nothing", want);
        rc = -EIO;
    }
    sqlite3_finalize(st);
    return rc;
}

int store_sqlite_open(store_t *s, const store_params_t *params, char *err, size_t errlen)
{
    const char *path = params->sqlite_path;
    if (!path || !*path) {
        snprintf(err, errlen, "store: sqlite_path is empty");
        return -EINVAL;
    }
    bool memory = strcmp(path, ":memory:") == 0;
    if (!memory) {
        /* Create the file ourselves so that it starts as 0600; SQLite gives its -wal and
         * -shm files the mode of the database file. An existing file keeps its mode. */
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) {
            int e = errno;
            snprintf(err, errlen, "store: cannot open %s: %s", path, strerror(e));
            return -e;
        }
        close(fd);
    }
    sqlite3 *db = NULL;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int code = sqlite3_open_v2(path, &db, flags, NULL);
    if (code != SQLITE_OK) {
        snprintf(err, errlen, "store: cannot open %s: %s", path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(code));
        sqlite3_close_v2(db);
        return s_errno(code);
    }
    s->db = db;
    s->ops = &s_ops;
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, params->busy_timeout_ms > 0 ? params->busy_timeout_ms : 5000);
    int rc = s_pragma(s, "PRAGMA journal_mode = WAL", memory ? NULL : "wal", err, errlen);
    if (rc == 0)
        rc = s_pragma(s, "PRAGMA synchronous = NORMAL", NULL, err, errlen);
    if (rc == 0)
        rc = s_pragma(s, "PRAGMA foreign_keys = ON", NULL, err, errlen);
    if (rc < 0) {
        s_close(s);
        return rc;
    }
    return 0;
}
