/* al_db: agent-ledger's SQLite database (see al_db.h). */
#include "al_db.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bus_log.h"

#define S_BUSY_TIMEOUT_MS 5000 /* readers (ledger-diff, the UI) may hold the file briefly */

/* The schema, created if missing. The ledger table's columns are read by other tools: keep
 * them exactly (al_db.h). */
static const char s_schema[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);"
    "CREATE TABLE IF NOT EXISTS ledger("
    " seq INTEGER PRIMARY KEY, agent_id TEXT NOT NULL, req_id BLOB NOT NULL,"
    " attempt INTEGER NOT NULL, user_id INTEGER NOT NULL, model TEXT NOT NULL,"
    " input_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL,"
    " output_tokens INTEGER NOT NULL, estimated INTEGER NOT NULL, cost INTEGER NOT NULL,"
    " fee INTEGER NOT NULL, credit INTEGER NOT NULL, hold INTEGER NOT NULL,"
    " price_from INTEGER NOT NULL, fee_ppm INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
    " prev_hash BLOB NOT NULL, hash BLOB NOT NULL, verdict TEXT NOT NULL,"
    " unbilled INTEGER NOT NULL, reason TEXT NOT NULL, written_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS prices("
    " model TEXT NOT NULL, effective_from INTEGER NOT NULL, input INTEGER NOT NULL,"
    " output INTEGER NOT NULL, cached_input INTEGER NOT NULL,"
    " PRIMARY KEY(model, effective_from));"
    "CREATE TABLE IF NOT EXISTS usage("
    " req_id BLOB NOT NULL, attempt INTEGER NOT NULL, model TEXT NOT NULL,"
    " status INTEGER NOT NULL, delivered INTEGER NOT NULL, complete INTEGER NOT NULL,"
    " estimated INTEGER NOT NULL, input_tokens INTEGER NOT NULL,"
    " cached_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,"
    " created_ms INTEGER NOT NULL, reported INTEGER NOT NULL,"
    " PRIMARY KEY(req_id, attempt));"
    "CREATE INDEX IF NOT EXISTS usage_unreported ON usage(created_ms) WHERE reported = 0;";

/* Prepared statements, by index. */
enum {
    S_USAGE_PUT,
    S_USAGE_GET,
    S_USAGE_REPORTED,
    S_USAGE_UNREPORTED,
    S_PRICE_GET,
    S_PRICE_PUT,
    S_LEDGER_PUT,
    S_LEDGER_GET,
    S_LEDGER_LAST,
    S_COUNT
};

static const char *const s_sql[S_COUNT] = {
    [S_USAGE_PUT] = "INSERT OR IGNORE INTO usage(req_id, attempt, model, status, delivered,"
                    " complete, estimated, input_tokens, cached_tokens, output_tokens,"
                    " created_ms, reported) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
    [S_USAGE_GET] = "SELECT req_id, attempt, model, status, delivered, complete, estimated,"
                    " input_tokens, cached_tokens, output_tokens, created_ms, reported"
                    " FROM usage WHERE req_id = ? AND attempt = ?",
    [S_USAGE_REPORTED] = "UPDATE usage SET reported = 1 WHERE req_id = ? AND attempt = ?"
                         " AND reported = 0",
    [S_USAGE_UNREPORTED] = "SELECT req_id, attempt, model, status, delivered, complete,"
                           " estimated, input_tokens, cached_tokens, output_tokens,"
                           " created_ms, reported FROM usage WHERE reported = 0"
                           " ORDER BY created_ms, rowid LIMIT ?",
    [S_PRICE_GET] = "SELECT input, output, cached_input FROM prices"
                    " WHERE model = ? AND effective_from = ?",
    [S_PRICE_PUT] = "INSERT OR REPLACE INTO prices(model, effective_from, input, output,"
                    " cached_input) VALUES(?,?,?,?,?)",
    [S_LEDGER_PUT] = "INSERT INTO ledger(seq, agent_id, req_id, attempt, user_id, model,"
                     " input_tokens, cached_tokens, output_tokens, estimated, cost, fee, credit,"
                     " hold, price_from, fee_ppm, created_ms, prev_hash, hash, verdict, unbilled,"
                     " reason, written_ms)"
                     " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    [S_LEDGER_GET] = "SELECT seq, agent_id, req_id, attempt, user_id, model, input_tokens,"
                     " cached_tokens, output_tokens, estimated, cost, fee, credit, hold,"
                     " price_from, fee_ppm, created_ms, prev_hash, hash, verdict, unbilled,"
                     " reason, written_ms FROM ledger WHERE seq = ?",
    [S_LEDGER_LAST] = "SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1",
};

struct al_db {
    sqlite3 *db;               /* the connection */
    sqlite3_stmt *st[S_COUNT]; /* prepared statements */
    bool in_tx;                /* BEGIN IMMEDIATE issued, not yet committed */
    char path[512];            /* for log lines */
};

/* Maps an SQLite result code to a negative errno. */
static int s_errno(int code)
{
    switch (code & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return 0;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return -EACCES;
    case SQLITE_CONSTRAINT:
        return -EEXIST;
    case SQLITE_CANTOPEN:
        return -ENOENT;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return -EBADMSG;
    default:
        return -EIO;
    }
}

/* Logs a failed statement (debug: the caller logs what failed) and returns its errno. */
static int s_fail(al_db_t *d, const char *what, int code)
{
    log_debug("db_failed", "%s: %s: %s", d->path, what, sqlite3_errmsg(d->db));
    /* Some errors (I/O, full disk, out of memory) roll the transaction back by themselves. */
    if (d->in_tx && sqlite3_get_autocommit(d->db))
        d->in_tx = false;
    int rc = s_errno(code);
    return rc ? rc : -EIO; /* a row or done where neither was expected */
}

/* Resets a statement for its next use and returns it. */
static sqlite3_stmt *s_st(al_db_t *d, int which)
{
    sqlite3_stmt *st = d->st[which];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

/* Opens a write transaction unless one is open. 0 or a negative errno. */
static int s_begin(al_db_t *d)
{
    if (d->in_tx)
        return 0;
    int code = sqlite3_exec(d->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (code != SQLITE_OK)
        return s_fail(d, "BEGIN", code);
    d->in_tx = true;
    return 0;
}

/* Runs one PRAGMA that answers a text value; want (may be NULL) is the answer required. */
static int s_pragma(al_db_t *d, const char *sql, const char *want, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int code = sqlite3_prepare_v2(d->db, sql, -1, &st, NULL);
    if (code == SQLITE_OK)
        code = sqlite3_step(st);
    const char *got = code == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    int rc = 0;
    if (code != SQLITE_ROW && code != SQLITE_DONE) {
        snprintf(err, errlen, "%s: %s: %s", d->path, sql, sqlite3_errmsg(d->db));
        rc = s_errno(code);
    } else if (want && (!got || strcmp(got, want) != 0)) {
        snprintf(err, errlen, "%s: %s answered %s, not %s", d->path, sql, got ? got : "nothing",
                 want);
        rc = -EIO;
    }
    sqlite3_finalize(st);
    return rc;
}

/* Reads meta.key into out (n bytes): 1 found, 0 not, or a negative errno. */
static int s_meta_get(al_db_t *d, const char *key, char *out, size_t n)
{
    sqlite3_stmt *st = NULL;
    int code = sqlite3_prepare_v2(d->db, "SELECT value FROM meta WHERE key = ?", -1, &st, NULL);
    if (code != SQLITE_OK)
        return s_fail(d, "meta", code);
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    code = sqlite3_step(st);
    int rc = 0;
    if (code == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        snprintf(out, n, "%s", v ? v : "");
        rc = 1;
    } else if (code != SQLITE_DONE) {
        rc = s_fail(d, "meta", code);
    }
    sqlite3_finalize(st);
    return rc;
}

/* Writes meta.key. 0 or a negative errno. */
static int s_meta_put(al_db_t *d, const char *key, const char *value)
{
    sqlite3_stmt *st = NULL;
    int code = sqlite3_prepare_v2(d->db, "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", -1,
                                  &st, NULL);
    if (code == SQLITE_OK) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
        code = sqlite3_step(st);
    }
    int rc = code == SQLITE_DONE ? 0 : s_fail(d, "meta", code);
    sqlite3_finalize(st);
    return rc;
}

/* Creates the tables and checks (or records) the schema version and the agent id, in one
 * transaction. 0 or a negative errno with err set. */
static int s_init_schema(al_db_t *d, const char *agent_id, char *err, size_t errlen)
{
    int rc = s_begin(d);
    if (rc != 0) {
        snprintf(err, errlen, "%s: cannot start a transaction: %s", d->path, sqlite3_errmsg(d->db));
        return rc;
    }
    int code = sqlite3_exec(d->db, s_schema, NULL, NULL, NULL);
    if (code != SQLITE_OK) {
        snprintf(err, errlen, "%s: cannot create the tables: %s", d->path, sqlite3_errmsg(d->db));
        rc = s_errno(code);
        goto fail;
    }
    char v[128];
    rc = s_meta_get(d, "schema", v, sizeof v);
    if (rc == 1) {
        char *end = NULL;
        long ver = strtol(v, &end, 10);
        if (*end || ver < 1 || ver > AL_DB_SCHEMA) {
            snprintf(err, errlen, "%s: schema version %s, this build knows %d", d->path, v,
                     AL_DB_SCHEMA);
            rc = -EPROTO;
            goto fail;
        }
    } else if (rc == 0) {
        char num[16];
        snprintf(num, sizeof num, "%d", AL_DB_SCHEMA);
        rc = s_meta_put(d, "schema", num);
    }
    if (rc < 0) {
        snprintf(err, errlen, "%s: cannot read or write meta: %s", d->path, sqlite3_errmsg(d->db));
        goto fail;
    }
    rc = s_meta_get(d, "agent_id", v, sizeof v);
    if (rc == 1 && strcmp(v, agent_id) != 0) {
        snprintf(err, errlen, "%s holds the ledger of agent %s, not of this agent (%s)", d->path, v,
                 agent_id);
        rc = -EEXIST;
        goto fail;
    }
    if (rc == 0)
        rc = s_meta_put(d, "agent_id", agent_id);
    if (rc < 0) {
        snprintf(err, errlen, "%s: cannot read or write meta: %s", d->path, sqlite3_errmsg(d->db));
        goto fail;
    }
    rc = al_db_commit(d);
    if (rc != 0)
        snprintf(err, errlen, "%s: cannot commit the schema: %s", d->path, strerror(-rc));
    return rc;
fail:
    al_db_rollback(d);
    return rc;
}

al_db_t *al_db_open(const char *path, const char *agent_id, char *err, size_t errlen)
{
    if (!path || !*path || !agent_id || !*agent_id) {
        snprintf(err, errlen, "agent-ledger database: no path or no agent id");
        return NULL;
    }
    /* Create the file ourselves so that it starts as 0600 (SQLite gives its -wal and -shm
     * files the database file's mode); an existing file readable by others is tightened. */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) == 0 && (sb.st_mode & 077) && fchmod(fd, 0600) != 0) {
        snprintf(err, errlen, "cannot make %s private (mode 0600): %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    close(fd);
    al_db_t *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(d->path, sizeof d->path, "%s", path);
    int code = sqlite3_open_v2(
        path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (code != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", path,
                 d->db ? sqlite3_errmsg(d->db) : sqlite3_errstr(code));
        goto fail;
    }
    sqlite3_extended_result_codes(d->db, 1);
    sqlite3_busy_timeout(d->db, S_BUSY_TIMEOUT_MS);
    if (s_pragma(d, "PRAGMA journal_mode = WAL", "wal", err, errlen) != 0 ||
        s_pragma(d, "PRAGMA synchronous = NORMAL", NULL, err, errlen) != 0 ||
        s_init_schema(d, agent_id, err, errlen) != 0)
        goto fail;
    for (int i = 0; i < S_COUNT; i++) {
        code = sqlite3_prepare_v3(d->db, s_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &d->st[i], NULL);
        if (code != SQLITE_OK) {
            snprintf(err, errlen, "%s: cannot prepare a statement: %s", path,
                     sqlite3_errmsg(d->db));
            goto fail;
        }
    }
    return d;
fail:
    al_db_close(&d);
    return NULL;
}

void al_db_close(al_db_t **p)
{
    if (!p || !*p)
        return;
    al_db_t *d = *p;
    if (d->in_tx)
        al_db_rollback(d);
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(d->st[i]);
    sqlite3_close_v2(d->db);
    free(d);
    *p = NULL;
}

int al_db_commit(al_db_t *d)
{
    if (!d->in_tx)
        return 0;
    int code = sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL);
    if (code != SQLITE_OK) {
        int rc = s_fail(d, "COMMIT", code);
        al_db_rollback(d);
        return rc ? rc : -EIO;
    }
    d->in_tx = false;
    return 0;
}

void al_db_rollback(al_db_t *d)
{
    if (!sqlite3_get_autocommit(d->db))
        sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
    d->in_tx = false;
}

bool al_db_in_tx(const al_db_t *d)
{
    return d->in_tx;
}

/* ---- usage ------------------------------------------------------------------------------- */

/* Fills u from a row of S_USAGE_GET / S_USAGE_UNREPORTED. */
static void s_usage_row(sqlite3_stmt *st, al_usage_t *u)
{
    memset(u, 0, sizeof *u);
    const void *id = sqlite3_column_blob(st, 0);
    if (id && sqlite3_column_bytes(st, 0) == (int)sizeof u->req_id)
        memcpy(u->req_id, id, sizeof u->req_id);
    u->attempt = (uint32_t)sqlite3_column_int64(st, 1);
    const char *m = (const char *)sqlite3_column_text(st, 2);
    snprintf(u->model, sizeof u->model, "%s", m ? m : "");
    u->status = sqlite3_column_int64(st, 3);
    u->delivered = sqlite3_column_int64(st, 4) != 0;
    u->complete = sqlite3_column_int64(st, 5) != 0;
    u->estimated = sqlite3_column_int64(st, 6) != 0;
    u->input_tokens = sqlite3_column_int64(st, 7);
    u->cached_tokens = sqlite3_column_int64(st, 8);
    u->output_tokens = sqlite3_column_int64(st, 9);
    u->created_ms = sqlite3_column_int64(st, 10);
    u->reported = sqlite3_column_int64(st, 11) != 0;
}

int al_db_usage_put(al_db_t *d, const al_usage_t *u)
{
    int rc = s_begin(d);
    if (rc != 0)
        return rc;
    sqlite3_stmt *st = s_st(d, S_USAGE_PUT);
    sqlite3_bind_blob(st, 1, u->req_id, sizeof u->req_id, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, u->attempt);
    sqlite3_bind_text(st, 3, u->model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, u->status);
    sqlite3_bind_int(st, 5, u->delivered);
    sqlite3_bind_int(st, 6, u->complete);
    sqlite3_bind_int(st, 7, u->estimated);
    sqlite3_bind_int64(st, 8, u->input_tokens);
    sqlite3_bind_int64(st, 9, u->cached_tokens);
    sqlite3_bind_int64(st, 10, u->output_tokens);
    sqlite3_bind_int64(st, 11, u->created_ms);
    sqlite3_bind_int(st, 12, u->reported);
    int code = sqlite3_step(st);
    if (code != SQLITE_DONE)
        return s_fail(d, "usage insert", code);
    return sqlite3_changes(d->db) > 0 ? 1 : 0;
}

int al_db_usage_get(al_db_t *d, const uint8_t req_id[16], uint32_t attempt, al_usage_t *out)
{
    sqlite3_stmt *st = s_st(d, S_USAGE_GET);
    sqlite3_bind_blob(st, 1, req_id, 16, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, attempt);
    int code = sqlite3_step(st);
    if (code == SQLITE_ROW) {
        s_usage_row(st, out);
        sqlite3_reset(st);
        return 1;
    }
    sqlite3_reset(st);
    return code == SQLITE_DONE ? 0 : s_fail(d, "usage read", code);
}

int al_db_usage_set_reported(al_db_t *d, const uint8_t req_id[16], uint32_t attempt)
{
    int rc = s_begin(d);
    if (rc != 0)
        return rc;
    sqlite3_stmt *st = s_st(d, S_USAGE_REPORTED);
    sqlite3_bind_blob(st, 1, req_id, 16, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, attempt);
    int code = sqlite3_step(st);
    if (code != SQLITE_DONE)
        return s_fail(d, "usage update", code);
    return sqlite3_changes(d->db) > 0 ? 1 : 0;
}

int al_db_usage_unreported(al_db_t *d, size_t max, al_usage_fn fn, void *arg)
{
    sqlite3_stmt *st = s_st(d, S_USAGE_UNREPORTED);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)(max > INT32_MAX ? INT32_MAX : max));
    int n = 0;
    for (;;) {
        int code = sqlite3_step(st);
        if (code == SQLITE_DONE)
            break;
        if (code != SQLITE_ROW) {
            sqlite3_reset(st);
            return s_fail(d, "usage scan", code);
        }
        al_usage_t u;
        s_usage_row(st, &u);
        n++;
        int rc = fn(arg, &u);
        if (rc < 0) {
            sqlite3_reset(st);
            return rc;
        }
    }
    sqlite3_reset(st);
    return n;
}

/* ---- prices ------------------------------------------------------------------------------ */

int al_db_price_get(al_db_t *d, const char *model, int64_t effective_from, money_price_t *out)
{
    sqlite3_stmt *st = s_st(d, S_PRICE_GET);
    sqlite3_bind_text(st, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, effective_from);
    int code = sqlite3_step(st);
    if (code == SQLITE_ROW) {
        out->input = sqlite3_column_int64(st, 0);
        out->output = sqlite3_column_int64(st, 1);
        out->cached_input = sqlite3_column_int64(st, 2);
        sqlite3_reset(st);
        return 1;
    }
    sqlite3_reset(st);
    return code == SQLITE_DONE ? 0 : s_fail(d, "price read", code);
}

int al_db_price_put(al_db_t *d, const char *model, int64_t effective_from, const money_price_t *p)
{
    money_price_t old;
    int found = al_db_price_get(d, model, effective_from, &old);
    if (found < 0)
        return found;
    if (found && old.input == p->input && old.output == p->output &&
        old.cached_input == p->cached_input)
        return 0;
    int rc = s_begin(d);
    if (rc != 0)
        return rc;
    sqlite3_stmt *st = s_st(d, S_PRICE_PUT);
    sqlite3_bind_text(st, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, effective_from);
    sqlite3_bind_int64(st, 3, p->input);
    sqlite3_bind_int64(st, 4, p->output);
    sqlite3_bind_int64(st, 5, p->cached_input);
    int code = sqlite3_step(st);
    if (code != SQLITE_DONE)
        return s_fail(d, "price write", code);
    return found ? 2 : 1;
}

/* ---- ledger ------------------------------------------------------------------------------ */

int al_db_ledger_put(al_db_t *d, const al_entry_t *e)
{
    const ledger_row_t *r = &e->row;
    if (r->seq == 0 || r->seq > INT64_MAX)
        return -EINVAL;
    int rc = s_begin(d);
    if (rc != 0)
        return rc;
    sqlite3_stmt *st = s_st(d, S_LEDGER_PUT);
    int i = 1;
    sqlite3_bind_int64(st, i++, (sqlite3_int64)r->seq);
    sqlite3_bind_text(st, i++, r->agent_id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, i++, r->req_id, sizeof r->req_id, SQLITE_STATIC);
    sqlite3_bind_int64(st, i++, r->attempt);
    sqlite3_bind_int64(st, i++, r->user_id);
    sqlite3_bind_text(st, i++, r->model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, i++, r->input_tokens);
    sqlite3_bind_int64(st, i++, r->cached_tokens);
    sqlite3_bind_int64(st, i++, r->output_tokens);
    sqlite3_bind_int(st, i++, r->estimated ? 1 : 0);
    sqlite3_bind_int64(st, i++, r->cost);
    sqlite3_bind_int64(st, i++, r->fee);
    sqlite3_bind_int64(st, i++, r->credit);
    sqlite3_bind_int64(st, i++, r->hold);
    sqlite3_bind_int64(st, i++, r->price_from);
    sqlite3_bind_int64(st, i++, r->fee_ppm);
    sqlite3_bind_int64(st, i++, r->created_ms);
    sqlite3_bind_blob(st, i++, r->prev_hash, LEDGER_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(st, i++, r->hash, LEDGER_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, e->verdict, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, i++, e->unbilled);
    sqlite3_bind_text(st, i++, e->reason, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, i++, e->written_ms);
    int code = sqlite3_step(st);
    if (code != SQLITE_DONE)
        return s_fail(d, "ledger insert", code);
    return 0;
}

/* Copies a blob column of exactly n bytes into out (zeros when it has another length). */
static void s_blob(sqlite3_stmt *st, int col, uint8_t *out, size_t n)
{
    const void *p = sqlite3_column_blob(st, col);
    if (p && sqlite3_column_bytes(st, col) == (int)n)
        memcpy(out, p, n);
    else
        memset(out, 0, n);
}

int al_db_ledger_get(al_db_t *d, uint64_t seq, al_entry_t *out)
{
    if (seq > INT64_MAX)
        return 0;
    sqlite3_stmt *st = s_st(d, S_LEDGER_GET);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)seq);
    int code = sqlite3_step(st);
    if (code != SQLITE_ROW) {
        sqlite3_reset(st);
        return code == SQLITE_DONE ? 0 : s_fail(d, "ledger read", code);
    }
    memset(out, 0, sizeof *out);
    ledger_row_t *r = &out->row;
    int i = 0;
    r->seq = (uint64_t)sqlite3_column_int64(st, i++);
    const char *t = (const char *)sqlite3_column_text(st, i++);
    snprintf(r->agent_id, sizeof r->agent_id, "%s", t ? t : "");
    s_blob(st, i++, r->req_id, sizeof r->req_id);
    r->attempt = (uint32_t)sqlite3_column_int64(st, i++);
    r->user_id = sqlite3_column_int64(st, i++);
    t = (const char *)sqlite3_column_text(st, i++);
    snprintf(r->model, sizeof r->model, "%s", t ? t : "");
    r->input_tokens = sqlite3_column_int64(st, i++);
    r->cached_tokens = sqlite3_column_int64(st, i++);
    r->output_tokens = sqlite3_column_int64(st, i++);
    r->estimated = sqlite3_column_int64(st, i++) != 0;
    r->cost = sqlite3_column_int64(st, i++);
    r->fee = sqlite3_column_int64(st, i++);
    r->credit = sqlite3_column_int64(st, i++);
    r->hold = sqlite3_column_int64(st, i++);
    r->price_from = sqlite3_column_int64(st, i++);
    r->fee_ppm = sqlite3_column_int64(st, i++);
    r->created_ms = sqlite3_column_int64(st, i++);
    s_blob(st, i++, r->prev_hash, LEDGER_HASH_LEN);
    s_blob(st, i++, r->hash, LEDGER_HASH_LEN);
    t = (const char *)sqlite3_column_text(st, i++);
    snprintf(out->verdict, sizeof out->verdict, "%s", t ? t : "");
    out->unbilled = sqlite3_column_int64(st, i++);
    t = (const char *)sqlite3_column_text(st, i++);
    snprintf(out->reason, sizeof out->reason, "%s", t ? t : "");
    out->written_ms = sqlite3_column_int64(st, i++);
    sqlite3_reset(st);
    return 1;
}

int al_db_ledger_last(al_db_t *d, uint64_t *seq, uint8_t hash[LEDGER_HASH_LEN])
{
    sqlite3_stmt *st = s_st(d, S_LEDGER_LAST);
    int code = sqlite3_step(st);
    *seq = 0;
    memset(hash, 0, LEDGER_HASH_LEN);
    if (code == SQLITE_ROW) {
        *seq = (uint64_t)sqlite3_column_int64(st, 0);
        s_blob(st, 1, hash, LEDGER_HASH_LEN);
        sqlite3_reset(st);
        return 0;
    }
    sqlite3_reset(st);
    return code == SQLITE_DONE ? 0 : s_fail(d, "ledger last", code);
}

int al_db_stats(al_db_t *d, al_db_stats_t *out)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st = NULL;
    int code = sqlite3_prepare_v2(d->db,
                                  "SELECT verdict, count(*), coalesce(sum(unbilled), 0) FROM ledger"
                                  " GROUP BY verdict",
                                  -1, &st, NULL);
    if (code == SQLITE_OK) {
        while ((code = sqlite3_step(st)) == SQLITE_ROW) {
            al_verdict_t v;
            if (al_verdict_parse((const char *)sqlite3_column_text(st, 0), &v) == 0)
                out->rows[v] += sqlite3_column_int64(st, 1);
            out->unbilled += sqlite3_column_int64(st, 2);
        }
    }
    sqlite3_finalize(st);
    if (code != SQLITE_DONE)
        return s_fail(d, "ledger stats", code);
    st = NULL;
    code = sqlite3_prepare_v2(d->db, "SELECT count(*), coalesce(sum(reported = 0), 0) FROM usage",
                              -1, &st, NULL);
    if (code == SQLITE_OK && (code = sqlite3_step(st)) == SQLITE_ROW) {
        out->usage = sqlite3_column_int64(st, 0);
        out->unreported = sqlite3_column_int64(st, 1);
        code = SQLITE_DONE;
    }
    sqlite3_finalize(st);
    return code == SQLITE_DONE ? 0 : s_fail(d, "usage stats", code);
}
