/* store_sqlite: the SQLite backend of store (see store.h, store_impl.h).
 *
 * Every statement with a value in it is prepared and bound; the only SQL text run as is
 * comes from the compiled-in migrations. Writers are serialized by SQLite itself: each
 * change is one statement (its own write transaction), and a migration runs inside
 * BEGIN IMMEDIATE, so the "MAX(rev) + 1" of a change is computed under the write lock.
 * The same holds for users and api_keys, whose rows share one rev sequence (S_NEXT_KEYS_REV).
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

/* Reads the current row of an agent query (id, name, pubkey, status, created_at). */
static int s_read_agent(store_t *s, sqlite3_stmt *st, store_agent_t *a)
{
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
    store_agent_t *arr = NULL;
    size_t count = 0, cap = 0;
    int step;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        store_agent_t a;
        rc = s_read_agent(s, st, &a);
        if (rc == 0)
            rc = store_agents_push(&arr, &count, &cap, &a);
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = s_fail(s, "agent list");
    sqlite3_finalize(st);
    if (rc < 0) {
        free(arr);
        return rc;
    }
    *out = arr;
    *n = count;
    return 0;
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
static int s_read_user(store_t *s, sqlite3_stmt *st, store_user_t *u)
{
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
    void *arr = NULL;
    size_t count = 0, cap = 0;
    int step;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        store_user_t u;
        rc = s_read_user(s, st, &u);
        if (rc == 0)
            rc = store_array_push(&arr, &count, &cap, &u, sizeof(u));
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = s_fail(s, "user list");
    sqlite3_finalize(st);
    if (rc < 0) {
        free(arr);
        return rc;
    }
    *out = arr;
    *n = count;
    return 0;
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
static int s_read_key(store_t *s, sqlite3_stmt *st, store_key_t *k)
{
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
    void *arr = NULL;
    size_t count = 0, cap = 0;
    int step;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        store_key_t k;
        rc = s_read_key(s, st, &k);
        if (rc == 0)
            rc = store_array_push(&arr, &count, &cap, &k, sizeof(k));
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = s_fail(s, "key list");
    sqlite3_finalize(st);
    if (rc < 0) {
        free(arr);
        return rc;
    }
    *out = arr;
    *n = count;
    return 0;
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
