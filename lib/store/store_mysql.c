/* store_mysql: the MySQL/MariaDB backend of store, over libmariadb (see store.h).
 *
 * Every statement with a value in it is a server-side prepared statement with bound
 * parameters; the only SQL text sent as is comes from the compiled-in migrations and from
 * constants in this file. Connections are TCP only (libmariadb takes "localhost" to mean the
 * Unix socket, so the URL parser maps it to 127.0.0.1), utf8mb4, strict SQL mode, and
 * CLIENT_FOUND_ROWS so that an UPDATE reports the rows it matched.
 *
 * Writers of the agents table serialize on a named lock (GET_LOCK, one per database): the
 * "MAX(rev) + 1" of a change must see every earlier change, which InnoDB's consistent reads
 * would not guarantee under REPEATABLE READ. Writers of users and api_keys, which share one rev
 * sequence, do the same on the "keys" lock. store_migrate takes another named lock, so two
 * processes starting together do not run the same DDL twice.
 *
 * Billing writes that belong together are one transaction (START TRANSACTION ... COMMIT, or
 * ROLLBACK on any error). Reads that a write depends on (a user's balance and active holds, an
 * agent's chain head, queued top-ups) are locking reads (FOR UPDATE), so that another
 * connection cannot change them before the transaction commits; a unique key settles the
 * rest (-EALREADY for a request settled meanwhile). Batch functions prepare each statement
 * once per call and re-execute it per item.
 *
 * Statements bound to a key hash run with s->redact set: the server's error text can quote a
 * bound value ("Duplicate entry '...' for key"), and a hash must not reach last_error or a log.
 */
#include "store_impl.h"

#include <errmsg.h>
#include <errno.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_MY(s) ((MYSQL *)(s)->db)

/* Seconds: connecting, one read or write on the socket, waiting for a named lock. */
#define S_CONNECT_TIMEOUT 10
#define S_IO_TIMEOUT 60
#define S_LOCK_TIMEOUT "30"

/* Name of a named lock: one per purpose and database (at most 64 characters). */
#define S_LOCK_NAME "CONCAT('relayhub.', ?, '.', MD5(DATABASE()))"

/* ---- URL parsing ------------------------------------------------------------------------ */

/* Value of one hex digit, or -1. */
static int s_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes len bytes of src into a new string; -EINVAL on a bad or NUL escape. */
static int s_pct_decode(const char *src, size_t len, char **out)
{
    char *dst = malloc(len + 1);
    if (!dst)
        return -ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] != '%') {
            dst[o++] = src[i];
            continue;
        }
        int hi = i + 2 < len ? s_hex(src[i + 1]) : -1;
        int lo = i + 2 < len ? s_hex(src[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(dst);
            return -EINVAL;
        }
        dst[o++] = (char)(hi * 16 + lo);
        i += 2;
    }
    dst[o] = '\0';
    *out = dst;
    return 0;
}

void store_mysql_url_free(store_mysql_url_t *u)
{
    if (!u)
        return;
    if (u->password)
        explicit_bzero(u->password, strlen(u->password));
    free(u->user);
    free(u->password);
    free(u->host);
    free(u->db);
    memset(u, 0, sizeof(*u));
}

/* Parses the port digits of [p, p+len): 1..65535. */
static int s_parse_port(const char *p, size_t len, unsigned *port)
{
    unsigned v = 0;
    if (len == 0 || len > 5)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -EINVAL;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    if (v < 1 || v > 65535)
        return -EINVAL;
    *port = v;
    return 0;
}

/* True if [p, p+len) holds only characters of a host name, IPv4 or (brackets off) IPv6. */
static bool s_host_chars_ok(const char *p, size_t len, bool ipv6)
{
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  c == '.' || c == '-' || c == '_' || (ipv6 && c == ':');
        if (!ok)
            return false;
    }
    return true;
}

int store_mysql_url_parse(const char *url, store_mysql_url_t *out, char *err, size_t errlen)
{
    static const char scheme[] = "mysql://";
    const char *why = NULL;
    int rc = -EINVAL;
    memset(out, 0, sizeof(*out));
    if (!url || strncmp(url, scheme, sizeof(scheme) - 1) != 0) {
        why = "must start with mysql://";
        goto fail;
    }
    /* Split into spans first: [user[:pass]@]host[:port][/db] */
    const char *auth = url + sizeof(scheme) - 1;
    size_t auth_len = strcspn(auth, "/?#");
    const char *path = auth + auth_len;
    if (strpbrk(path, "?#")) {
        why = "has a query or fragment (not supported)";
        goto fail;
    }
    const char *at = NULL; /* the last '@' ends the userinfo (a raw '@' in a password) */
    for (size_t i = 0; i < auth_len; i++)
        if (auth[i] == '@')
            at = auth + i;
    const char *hp = at ? at + 1 : auth;
    size_t hp_len = auth_len - (size_t)(hp - auth);
    size_t ui_len = at ? (size_t)(at - auth) : 0;
    const char *colon = memchr(auth, ':', ui_len);
    size_t user_len = colon ? (size_t)(colon - auth) : ui_len;
    const char *pass = colon ? colon + 1 : "";
    size_t pass_len = colon ? ui_len - user_len - 1 : 0;

    const char *host = hp, *port = NULL;
    size_t host_len = hp_len, port_len = 0;
    bool ipv6 = hp_len > 0 && hp[0] == '[';
    const char *host_end = ipv6 ? memchr(hp, ']', hp_len) : hp;
    if (!host_end) {
        why = "has an unclosed '[' in its host";
        goto fail;
    }
    if (ipv6) {
        host = hp + 1;
        host_len = (size_t)(host_end - host);
        host_end++;
    }
    const char *after = ipv6 ? host_end : memchr(hp, ':', hp_len);
    if (after && after < hp + hp_len) {
        if (*after != ':') {
            why = "has junk after its IPv6 host";
            goto fail;
        }
        if (!ipv6)
            host_len = (size_t)(after - hp);
        port = after + 1;
        port_len = hp_len - (size_t)(port - hp);
    }
    if (host_len == 0) {
        why = "has no host";
        goto fail;
    }
    if (!s_host_chars_ok(host, host_len, ipv6)) {
        why = "has a bad host";
        goto fail;
    }
    out->port = 3306;
    if (port && s_parse_port(port, port_len, &out->port) < 0) {
        why = "has a bad port (want 1..65535)";
        goto fail;
    }
    const char *db = *path == '/' ? path + 1 : path;
    if (strchr(db, '/')) {
        why = "has more than one path segment";
        goto fail;
    }

    /* Then copy and decode. */
    bool local = host_len == 9 && strncasecmp(host, "localhost", 9) == 0;
    out->host = local ? strdup("127.0.0.1") : strndup(host, host_len);
    rc = out->host ? 0 : -ENOMEM;
    if (rc == 0)
        rc = s_pct_decode(auth, user_len, &out->user);
    if (rc == 0)
        rc = s_pct_decode(pass, pass_len, &out->password);
    if (rc == -EINVAL)
        why = "has a bad %-escape in user:pass";
    if (rc == 0)
        rc = s_pct_decode(db, strlen(db), &out->db);
    if (rc == -EINVAL && !why)
        why = "has a bad %-escape in its database";
    if (rc == 0)
        return 0;
    if (rc == -ENOMEM)
        why = "out of memory";
fail:
    store_mysql_url_free(out);
    if (err && errlen)
        snprintf(err, errlen, "store: mysql_url %s", why);
    return rc;
}

/* ---- errors ----------------------------------------------------------------------------- */

/* Maps a MySQL server or client error number to a negative errno. */
static int s_errno(unsigned int code)
{
    switch (code) {
    case ER_DUP_ENTRY:
    case ER_DUP_KEY:
        return -EEXIST;
    case ER_ACCESS_DENIED_ERROR:
    case ER_DBACCESS_DENIED_ERROR:
    case ER_TABLEACCESS_DENIED_ERROR:
        return -EACCES;
    case ER_BAD_DB_ERROR:
    case ER_NO_REFERENCED_ROW:
    case ER_NO_REFERENCED_ROW_2:
        return -ENOENT;
    case ER_LOCK_DEADLOCK:
    case ER_LOCK_WAIT_TIMEOUT:
        return -EBUSY;
    case ER_DATA_OUT_OF_RANGE:      /* BIGINT arithmetic overflow (a balance) */
    case ER_WARN_DATA_OUT_OF_RANGE: /* a value out of its column's range (strict mode) */
        return -ERANGE;
    case ER_CONSTRAINT_FAILED: /* a CHECK constraint */
        return -EINVAL;
    case CR_CONNECTION_ERROR:
    case CR_CONN_HOST_ERROR:
        return -ECONNREFUSED;
    case CR_UNKNOWN_HOST:
        return -EHOSTUNREACH;
    case CR_SERVER_GONE_ERROR:
    case CR_SERVER_LOST:
        return -ENOTCONN;
    case CR_OUT_OF_MEMORY:
        return -ENOMEM;
    default:
        return -EIO;
    }
}

/* Records an error (what: the operation; text: the server's message) and returns it as
 * errno. With s->redact set the message is replaced by one that quotes no value. */
static int s_record(store_t *s, const char *what, const char *text, unsigned int code)
{
    if (!s->redact) {
        store_set_error(s, "%s: %s (%u)", what, text, code);
    } else {
        const char *safe = "database error (message withheld: it may quote a key hash)";
        if (code == ER_DUP_ENTRY || code == ER_DUP_KEY)
            safe = "duplicate key id or hash";
        else if (code == ER_NO_REFERENCED_ROW || code == ER_NO_REFERENCED_ROW_2)
            safe = "no such user";
        store_set_error(s, "%s: %s (%u)", what, safe, code);
    }
    return s_errno(code);
}

/* Records the connection's error (what: the operation) and returns it as errno. */
static int s_fail(store_t *s, const char *what)
{
    return s_record(s, what, mysql_error(S_MY(s)), mysql_errno(S_MY(s)));
}

/* Records a statement's error (what: the operation) and returns it as errno. */
static int s_stmt_fail(store_t *s, MYSQL_STMT *st, const char *what)
{
    return s_record(s, what, mysql_stmt_error(st), mysql_stmt_errno(st));
}

/* ---- statements ------------------------------------------------------------------------- */

/* Runs constant SQL text (migrations, transaction control), discarding any result set;
 * what names the operation in error messages. */
static int s_query(store_t *s, const char *what, const char *sql)
{
    if (mysql_real_query(S_MY(s), sql, strlen(sql)) != 0)
        return s_fail(s, what);
    MYSQL_RES *res = mysql_store_result(S_MY(s));
    if (res)
        mysql_free_result(res);
    else if (mysql_errno(S_MY(s)) != 0)
        return s_fail(s, what);
    return 0;
}

/* Prepares sql, binds params (NULL: none) and executes it; *out is the caller's to close.
 * what names the operation in error messages. */
static int s_exec(store_t *s, const char *what, const char *sql, MYSQL_BIND *params,
                  MYSQL_STMT **out)
{
    MYSQL_STMT *st = mysql_stmt_init(S_MY(s));
    if (!st)
        return s_fail(s, what);
    if (mysql_stmt_prepare(st, sql, strlen(sql)) != 0 ||
        (params && mysql_stmt_bind_param(st, params) != 0) || mysql_stmt_execute(st) != 0) {
        int rc = s_stmt_fail(s, st, what);
        mysql_stmt_close(st);
        return rc;
    }
    *out = st;
    return 0;
}

/* Runs a statement without a result; *affected (if not NULL) gets the matched row count. */
static int s_exec_done(store_t *s, const char *what, const char *sql, MYSQL_BIND *params,
                       uint64_t *affected)
{
    MYSQL_STMT *st;
    int rc = s_exec(s, what, sql, params, &st);
    if (rc < 0)
        return rc;
    if (affected)
        *affected = (uint64_t)mysql_stmt_affected_rows(st);
    mysql_stmt_close(st);
    return 0;
}

/* Runs a query whose first column is an integer: *found says if a non-NULL value came. */
static int s_exec_int(store_t *s, const char *what, const char *sql, MYSQL_BIND *params,
                      int64_t *out, bool *found)
{
    MYSQL_STMT *st;
    int rc = s_exec(s, what, sql, params, &st);
    if (rc < 0)
        return rc;
    long long v = 0;
    my_bool is_null = 0;
    MYSQL_BIND res;
    memset(&res, 0, sizeof(res));
    res.buffer_type = MYSQL_TYPE_LONGLONG;
    res.buffer = &v;
    res.is_null = &is_null;
    *found = false;
    if (mysql_stmt_bind_result(st, &res) != 0) {
        rc = s_stmt_fail(s, st, what);
    } else {
        int f = mysql_stmt_fetch(st);
        if (f == 0) {
            *found = !is_null;
            *out = is_null ? 0 : (int64_t)v;
        } else if (f != MYSQL_NO_DATA) {
            rc = s_stmt_fail(s, st, what);
        }
    }
    mysql_stmt_close(st);
    return rc;
}

/* Binds a string parameter (its length is taken from len, which must outlive the call). */
static void s_bind_str(MYSQL_BIND *b, const char *str, unsigned long *len)
{
    memset(b, 0, sizeof(*b));
    *len = (unsigned long)strlen(str);
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = (void *)str;
    b->buffer_length = *len;
    b->length = len;
}

/* Binds a 64-bit integer parameter. */
static void s_bind_i64(MYSQL_BIND *b, long long *v)
{
    memset(b, 0, sizeof(*b));
    b->buffer_type = MYSQL_TYPE_LONGLONG;
    b->buffer = v;
}

/* ---- named locks and transactions ------------------------------------------------------- */

/* Takes the named lock of this database for purpose ("agents", "migrate"). */
static int s_lock(store_t *s, const char *purpose)
{
    unsigned long len;
    MYSQL_BIND p;
    s_bind_str(&p, purpose, &len);
    int64_t got = 0;
    bool found;
    int rc = s_exec_int(s, "lock", "SELECT GET_LOCK(" S_LOCK_NAME ", " S_LOCK_TIMEOUT ")", &p, &got,
                        &found);
    if (rc < 0)
        return rc;
    if (!found || got != 1) {
        store_set_error(s, "lock %s: not granted within " S_LOCK_TIMEOUT " s", purpose);
        return -EBUSY;
    }
    return 0;
}

/* Releases the named lock taken by s_lock. A failure is ignored and leaves last_error as it
 * was (the error that matters came first; the server drops the lock with the session). */
static void s_unlock(store_t *s, const char *purpose)
{
    char keep[sizeof(s->last_error)];
    memcpy(keep, s->last_error, sizeof(keep));
    unsigned long len;
    MYSQL_BIND p;
    s_bind_str(&p, purpose, &len);
    int64_t got;
    bool found;
    s_exec_int(s, "unlock", "SELECT RELEASE_LOCK(" S_LOCK_NAME ")", &p, &got, &found);
    memcpy(s->last_error, keep, sizeof(keep));
}

/* Ends the open transaction: COMMIT if rc is 0, else (or if COMMIT fails) ROLLBACK, keeping
 * the first error. */
static int s_end_tx(store_t *s, int rc)
{
    if (rc == 0) {
        rc = s_query(s, "commit", "COMMIT");
        if (rc == 0)
            return 0;
    }
    mysql_real_query(S_MY(s), "ROLLBACK", 8);
    return rc;
}

/* ---- backend functions ------------------------------------------------------------------ */

/* Closes the connection. */
static void s_close(store_t *s)
{
    mysql_close(S_MY(s));
    s->db = NULL;
}

/* Serializes migrating processes on a named lock. */
static int s_migrate_begin(store_t *s)
{
    return s_lock(s, "migrate");
}

/* Releases the migration lock. */
static void s_migrate_end(store_t *s)
{
    s_unlock(s, "migrate");
}

/* Sets *exists to whether the schema_migrations table is there yet. */
static int s_log_exists(store_t *s, bool *exists)
{
    int64_t n = 0;
    bool found;
    int rc = s_exec_int(s, "schema_migrations exists",
                        "SELECT COUNT(*) FROM information_schema.tables "
                        "WHERE table_schema = DATABASE() AND table_name = 'schema_migrations'",
                        NULL, &n, &found);
    *exists = rc == 0 && n > 0;
    return rc;
}

/* Applies one migration statement by statement (MySQL DDL commits implicitly), recording its
 * version only after all of them succeeded; each statement is safe to run again. */
static int s_migrate_one(store_t *s, const store_migration_t *m, int64_t now)
{
    bool exists;
    int rc = s_log_exists(s, &exists);
    if (rc < 0)
        return rc;
    long long version = m->version;
    MYSQL_BIND p[2];
    if (exists) {
        int64_t one;
        bool applied;
        s_bind_i64(&p[0], &version);
        rc = s_exec_int(s, "migration recorded",
                        "SELECT 1 FROM schema_migrations WHERE version = ?", p, &one, &applied);
        if (rc < 0 || applied)
            return rc;
    }
    for (size_t i = 0; i < m->n_stmts; i++) {
        rc = s_query(s, m->name, m->stmts[i]);
        if (rc < 0)
            return rc;
    }
    long long at = now;
    s_bind_i64(&p[0], &version);
    s_bind_i64(&p[1], &at);
    rc = s_exec_done(s, "record migration",
                     "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", p, NULL);
    return rc < 0 ? rc : 1;
}

/* Highest recorded migration, 0 when there is no schema_migrations table yet. */
static int s_schema_version(store_t *s, int *version)
{
    bool exists;
    int rc = s_log_exists(s, &exists);
    *version = 0;
    if (rc < 0 || !exists)
        return rc;
    int64_t v = 0;
    rc = s_exec_int(s, "schema version", "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                    NULL, &v, &exists);
    if (rc == 0)
        *version = (int)v;
    return rc;
}

/* MAX(rev) + 1 inside the open transaction (the agents lock is held). */
static int s_next_rev(store_t *s, long long *rev)
{
    int64_t v = 0;
    bool found;
    int rc =
        s_exec_int(s, "next rev", "SELECT COALESCE(MAX(rev), 0) + 1 FROM agents", NULL, &v, &found);
    *rev = (long long)v;
    return rc;
}

/* Inserts an agent with rev MAX(rev) + 1, under the agents lock, in one transaction. */
static int s_agent_add(store_t *s, const char *id, const char *name, const uint8_t pubkey[32],
                       int64_t created_at)
{
    int rc = s_lock(s, "agents");
    if (rc < 0)
        return rc;
    rc = s_query(s, "begin", "START TRANSACTION");
    if (rc == 0) {
        long long rev = 0, at = created_at;
        rc = s_next_rev(s, &rev);
        if (rc == 0) {
            MYSQL_BIND p[5];
            unsigned long len[3];
            s_bind_str(&p[0], id, &len[0]);
            s_bind_str(&p[1], name, &len[1]);
            memset(&p[2], 0, sizeof(p[2]));
            len[2] = 32;
            p[2].buffer_type = MYSQL_TYPE_BLOB;
            p[2].buffer = (void *)pubkey;
            p[2].buffer_length = 32;
            p[2].length = &len[2];
            s_bind_i64(&p[3], &at);
            s_bind_i64(&p[4], &rev);
            rc = s_exec_done(s, "agent add",
                             "INSERT INTO agents (id, name, pubkey, status, created_at, rev) "
                             "VALUES (?, ?, ?, 'active', ?, ?)",
                             p, NULL);
        }
        rc = s_end_tx(s, rc);
    }
    s_unlock(s, "agents");
    return rc;
}

/* Result buffers for one agent row. */
typedef struct {
    store_agent_t a;      /* the row */
    MYSQL_BIND res[5];    /* id, name, pubkey, status, created_at */
    unsigned long len[5]; /* lengths the server reported */
    my_bool is_null[5];   /* NULL flags */
    long long created_at; /* created_at before it is copied into a */
} s_row_t;

/* Binds the columns of an agent query to r. */
static int s_bind_row(store_t *s, MYSQL_STMT *st, s_row_t *r)
{
    memset(r, 0, sizeof(*r));
    void *bufs[5] = {r->a.id, r->a.name, r->a.pubkey, r->a.status, &r->created_at};
    unsigned long caps[5] = {sizeof(r->a.id), sizeof(r->a.name), sizeof(r->a.pubkey),
                             sizeof(r->a.status), sizeof(r->created_at)};
    enum enum_field_types types[5] = {MYSQL_TYPE_STRING, MYSQL_TYPE_STRING, MYSQL_TYPE_BLOB,
                                      MYSQL_TYPE_STRING, MYSQL_TYPE_LONGLONG};
    for (int i = 0; i < 5; i++) {
        r->res[i].buffer_type = types[i];
        r->res[i].buffer = bufs[i];
        r->res[i].buffer_length = caps[i];
        r->res[i].length = &r->len[i];
        r->res[i].is_null = &r->is_null[i];
    }
    if (mysql_stmt_bind_result(st, r->res) != 0)
        return s_stmt_fail(s, st, "agent columns");
    return 0;
}

/* Fetches the next agent row into r->a: 0, 1 at the end, or an error. */
static int s_fetch_row(store_t *s, MYSQL_STMT *st, s_row_t *r)
{
    int f = mysql_stmt_fetch(st);
    if (f == MYSQL_NO_DATA)
        return 1;
    if (f == 1)
        return s_stmt_fail(s, st, "agent fetch");
    /* MYSQL_DATA_TRUNCATED or 0: check every length against its buffer ourselves. */
    for (int i = 0; i < 5; i++) {
        if (r->is_null[i]) {
            store_set_error(s, "agents: column %d is NULL", i);
            return -EIO;
        }
    }
    if (r->len[0] >= sizeof(r->a.id) || r->len[1] >= sizeof(r->a.name) || r->len[2] != 32 ||
        r->len[3] >= sizeof(r->a.status)) {
        store_set_error(s, "agents: a column is longer than the store allows");
        return -EIO;
    }
    r->a.id[r->len[0]] = '\0';
    r->a.name[r->len[1]] = '\0';
    r->a.status[r->len[3]] = '\0';
    r->a.created_at = (int64_t)r->created_at;
    return 0;
}

#define S_AGENT_COLS "SELECT id, name, pubkey, status, created_at FROM agents"

/* Reads one agent by id. */
static int s_agent_get(store_t *s, const char *id, store_agent_t *out)
{
    MYSQL_BIND p;
    unsigned long len;
    s_bind_str(&p, id, &len);
    MYSQL_STMT *st;
    int rc = s_exec(s, "agent get", S_AGENT_COLS " WHERE id = ?", &p, &st);
    if (rc < 0)
        return rc;
    s_row_t *r = malloc(sizeof(*r));
    rc = r ? s_bind_row(s, st, r) : -ENOMEM;
    if (rc == 0)
        rc = s_fetch_row(s, st, r);
    if (rc == 0)
        *out = r->a;
    else if (rc == 1)
        rc = -ENOENT;
    free(r);
    mysql_stmt_close(st);
    return rc;
}

/* Reads every agent, ordered by created_at, id. */
static int s_agent_list(store_t *s, store_agent_t **out, size_t *n)
{
    MYSQL_STMT *st;
    int rc = s_exec(s, "agent list", S_AGENT_COLS " ORDER BY created_at, id", NULL, &st);
    if (rc < 0)
        return rc;
    store_agent_t *arr = NULL;
    size_t count = 0, cap = 0;
    s_row_t *r = malloc(sizeof(*r));
    rc = r ? s_bind_row(s, st, r) : -ENOMEM;
    while (rc == 0 && (rc = s_fetch_row(s, st, r)) == 0)
        rc = store_agents_push(&arr, &count, &cap, &r->a);
    free(r);
    mysql_stmt_close(st);
    if (rc < 0) {
        free(arr);
        return rc;
    }
    *out = arr;
    *n = count;
    return 0;
}

/* Sets an agent's status and moves its rev to MAX(rev) + 1, under the agents lock. */
static int s_agent_set_status(store_t *s, const char *id, const char *status)
{
    int rc = s_lock(s, "agents");
    if (rc < 0)
        return rc;
    rc = s_query(s, "begin", "START TRANSACTION");
    if (rc == 0) {
        long long rev = 0;
        uint64_t matched = 0;
        rc = s_next_rev(s, &rev);
        if (rc == 0) {
            MYSQL_BIND p[3];
            unsigned long len[2];
            s_bind_str(&p[0], status, &len[0]);
            s_bind_i64(&p[1], &rev);
            s_bind_str(&p[2], id, &len[1]);
            rc = s_exec_done(s, "agent set status",
                             "UPDATE agents SET status = ?, rev = ? WHERE id = ?", p, &matched);
        }
        if (rc == 0 && matched == 0)
            rc = -ENOENT;
        rc = s_end_tx(s, rc);
    }
    s_unlock(s, "agents");
    return rc;
}

/* MAX(rev) over all agents (0 when there are none). */
static int s_agents_rev(store_t *s, int64_t *rev)
{
    bool found;
    return s_exec_int(s, "agents rev", "SELECT COALESCE(MAX(rev), 0) FROM agents", NULL, rev,
                      &found);
}

/* ---- users and API keys ----------------------------------------------------------------- */

/* The next rev of the users/api_keys sequence inside the open transaction (the keys lock is
 * held): one more than the highest rev of either table. */
static int s_next_keys_rev(store_t *s, long long *rev)
{
    int64_t v = 0;
    bool found;
    int rc = s_exec_int(s, "next keys rev",
                        "SELECT GREATEST((SELECT COALESCE(MAX(rev), 0) FROM users), "
                        "(SELECT COALESCE(MAX(rev), 0) FROM api_keys)) + 1",
                        NULL, &v, &found);
    *rev = (long long)v;
    return rc;
}

/* Binds a BINARY/BLOB parameter of len bytes (*lenp must outlive the call). */
static void s_bind_blob(MYSQL_BIND *b, const void *data, unsigned long len, unsigned long *lenp)
{
    memset(b, 0, sizeof(*b));
    *lenp = len;
    b->buffer_type = MYSQL_TYPE_BLOB;
    b->buffer = (void *)data;
    b->buffer_length = len;
    b->length = lenp;
}

/* One change of the users/api_keys tables: takes the keys lock, opens a transaction, gets the
 * next rev, runs fn(s, rev, arg), commits (or rolls back on an error) and unlocks. */
static int s_keys_change(store_t *s, int (*fn)(store_t *s, long long rev, void *arg), void *arg)
{
    int rc = s_lock(s, "keys");
    if (rc < 0)
        return rc;
    rc = s_query(s, "begin", "START TRANSACTION");
    if (rc == 0) {
        long long rev = 0;
        rc = s_next_keys_rev(s, &rev);
        if (rc == 0)
            rc = fn(s, rev, arg);
        rc = s_end_tx(s, rc);
    }
    s_unlock(s, "keys");
    return rc;
}

/* Arguments of s_user_add_tx. */
typedef struct {
    const char *name;   /* user name */
    int64_t created_at; /* Unix seconds */
    int64_t *id;        /* out: the new id */
} s_user_add_t;

/* Inserts the user inside s_keys_change and reads back its AUTO_INCREMENT id. */
static int s_user_add_tx(store_t *s, long long rev, void *arg)
{
    s_user_add_t *a = arg;
    long long at = a->created_at;
    MYSQL_BIND p[3];
    unsigned long len;
    s_bind_str(&p[0], a->name, &len);
    s_bind_i64(&p[1], &at);
    s_bind_i64(&p[2], &rev);
    MYSQL_STMT *st;
    int rc = s_exec(s, "user add",
                    "INSERT INTO users (name, status, created_at, rev) VALUES (?, 'active', ?, ?)",
                    p, &st);
    if (rc < 0)
        return rc;
    *a->id = (int64_t)mysql_stmt_insert_id(st);
    mysql_stmt_close(st);
    return 0;
}

/* Inserts an active user with the next keys rev. */
static int s_user_add(store_t *s, const char *name, int64_t created_at, int64_t *id)
{
    s_user_add_t a = {name, created_at, id};
    return s_keys_change(s, s_user_add_tx, &a);
}

#define S_COLS_MAX 24

/* Result columns of one query, bound to the caller's buffers. */
typedef struct {
    MYSQL_BIND res[S_COLS_MAX];      /* the bindings */
    unsigned long len[S_COLS_MAX];   /* lengths the server reported */
    my_bool is_null[S_COLS_MAX];     /* NULL flags */
    bool nullable[S_COLS_MAX];       /* a NULL is allowed (it reads as 0) */
    long long *ints[S_COLS_MAX];     /* integer columns: where the value goes, else NULL */
    unsigned long exact[S_COLS_MAX]; /* binary columns: the length they must have, else 0 */
    size_t n;                        /* columns bound so far */
} s_cols_t;

/* Adds a text column that s_cols_fetch NUL-terminates into buf (cap bytes with the NUL). */
static void s_col_text(s_cols_t *c, char *buf, size_t cap)
{
    MYSQL_BIND *b = &c->res[c->n];
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = buf;
    b->buffer_length = (unsigned long)cap;
    b->length = &c->len[c->n];
    b->is_null = &c->is_null[c->n];
    c->n++;
}

/* Adds a binary column of exactly len bytes (ids, hashes) read into buf. */
static void s_col_blob(s_cols_t *c, void *buf, unsigned long len)
{
    MYSQL_BIND *b = &c->res[c->n];
    b->buffer_type = MYSQL_TYPE_BLOB;
    b->buffer = buf;
    b->buffer_length = len;
    b->length = &c->len[c->n];
    b->is_null = &c->is_null[c->n];
    c->exact[c->n] = len;
    c->n++;
}

/* Adds an integer column; nullable: a NULL reads as 0 instead of failing the row. */
static void s_col_i64(s_cols_t *c, long long *v, bool nullable)
{
    MYSQL_BIND *b = &c->res[c->n];
    b->buffer_type = MYSQL_TYPE_LONGLONG;
    b->buffer = v;
    b->length = &c->len[c->n];
    b->is_null = &c->is_null[c->n];
    c->nullable[c->n] = nullable;
    c->ints[c->n] = v;
    c->n++;
}

/* Fetches the next row into the bound buffers: 0, 1 at the end, or an error. Checks every
 * text length against its buffer (a truncated value is an error, not a shorter string). */
static int s_cols_fetch(store_t *s, MYSQL_STMT *st, s_cols_t *c, const char *what)
{
    int f = mysql_stmt_fetch(st);
    if (f == MYSQL_NO_DATA)
        return 1;
    if (f == 1)
        return s_stmt_fail(s, st, what);
    for (size_t i = 0; i < c->n; i++) {
        if (c->is_null[i] && !c->nullable[i]) {
            store_set_error(s, "%s: column %zu is NULL", what, i);
            return -EIO;
        }
        if (c->ints[i]) {
            if (c->is_null[i])
                *c->ints[i] = 0;
            continue;
        }
        if (c->exact[i]) {
            if (c->len[i] != c->exact[i]) {
                store_set_error(s, "%s: column %zu is %lu bytes, not %lu", what, i, c->len[i],
                                c->exact[i]);
                return -EIO;
            }
            continue;
        }
        if (c->len[i] >= c->res[i].buffer_length) {
            store_set_error(s, "%s: column %zu is longer than the store allows", what, i);
            return -EIO;
        }
        ((char *)c->res[i].buffer)[c->len[i]] = '\0';
    }
    return 0;
}

/* A user row and its column bindings. */
typedef struct {
    store_user_t u;       /* the row */
    long long id;         /* id before it is copied into u */
    long long created_at; /* created_at before it is copied into u */
    s_cols_t cols;        /* id, name, status, created_at */
} s_user_row_t;

/* Binds the columns of a user query (S_USER_COLS) to r. */
static int s_user_bind(store_t *s, MYSQL_STMT *st, s_user_row_t *r)
{
    memset(r, 0, sizeof(*r));
    s_col_i64(&r->cols, &r->id, false);
    s_col_text(&r->cols, r->u.name, sizeof(r->u.name));
    s_col_text(&r->cols, r->u.status, sizeof(r->u.status));
    s_col_i64(&r->cols, &r->created_at, false);
    if (mysql_stmt_bind_result(st, r->cols.res) != 0)
        return s_stmt_fail(s, st, "user columns");
    return 0;
}

/* Fetches the next user row into r->u: 0, 1 at the end, or an error. */
static int s_user_fetch(store_t *s, MYSQL_STMT *st, s_user_row_t *r)
{
    int rc = s_cols_fetch(s, st, &r->cols, "users");
    if (rc == 0) {
        r->u.id = (int64_t)r->id;
        r->u.created_at = (int64_t)r->created_at;
    }
    return rc;
}

#define S_USER_COLS "SELECT id, name, status, created_at FROM users"

/* Reads one user by name. */
static int s_user_get_by_name(store_t *s, const char *name, store_user_t *out)
{
    MYSQL_BIND p;
    unsigned long len;
    s_bind_str(&p, name, &len);
    MYSQL_STMT *st;
    int rc = s_exec(s, "user get", S_USER_COLS " WHERE name = ?", &p, &st);
    if (rc < 0)
        return rc;
    s_user_row_t r;
    rc = s_user_bind(s, st, &r);
    if (rc == 0)
        rc = s_user_fetch(s, st, &r);
    if (rc == 0)
        *out = r.u;
    else if (rc == 1)
        rc = -ENOENT;
    mysql_stmt_close(st);
    return rc;
}

/* Reads every user, ordered by id. */
static int s_user_list(store_t *s, store_user_t **out, size_t *n)
{
    MYSQL_STMT *st;
    int rc = s_exec(s, "user list", S_USER_COLS " ORDER BY id", NULL, &st);
    if (rc < 0)
        return rc;
    void *arr = NULL;
    size_t count = 0, cap = 0;
    s_user_row_t r;
    rc = s_user_bind(s, st, &r);
    while (rc == 0 && (rc = s_user_fetch(s, st, &r)) == 0)
        rc = store_array_push(&arr, &count, &cap, &r.u, sizeof(r.u));
    mysql_stmt_close(st);
    if (rc < 0) {
        free(arr);
        return rc;
    }
    *out = arr;
    *n = count;
    return 0;
}

/* Arguments of s_user_set_status_tx. */
typedef struct {
    long long id;       /* user id */
    const char *status; /* new status */
} s_user_status_t;

/* Updates the user's status and rev inside s_keys_change; -ENOENT if no row matched. */
static int s_user_set_status_tx(store_t *s, long long rev, void *arg)
{
    s_user_status_t *a = arg;
    MYSQL_BIND p[3];
    unsigned long len;
    s_bind_str(&p[0], a->status, &len);
    s_bind_i64(&p[1], &rev);
    s_bind_i64(&p[2], &a->id);
    uint64_t matched = 0;
    int rc = s_exec_done(s, "user set status", "UPDATE users SET status = ?, rev = ? WHERE id = ?",
                         p, &matched);
    return rc == 0 && matched == 0 ? -ENOENT : rc;
}

/* Sets a user's status with the next keys rev. */
static int s_user_set_status(store_t *s, int64_t user_id, const char *status)
{
    s_user_status_t a = {user_id, status};
    return s_keys_change(s, s_user_set_status_tx, &a);
}

/* Arguments of s_key_add_tx. */
typedef struct {
    long long user_id;    /* owner */
    const char *key_id;   /* public id */
    const uint8_t *hash;  /* 32 bytes */
    const char *prefix;   /* display prefix */
    long long created_at; /* Unix seconds */
} s_key_add_t;

/* Inserts the key inside s_keys_change, with errors redacted (the hash is bound). */
static int s_key_add_tx(store_t *s, long long rev, void *arg)
{
    s_key_add_t *a = arg;
    MYSQL_BIND p[6];
    unsigned long len[3];
    s_bind_str(&p[0], a->key_id, &len[0]);
    s_bind_i64(&p[1], &a->user_id);
    s_bind_blob(&p[2], a->hash, 32, &len[1]);
    s_bind_str(&p[3], a->prefix, &len[2]);
    s_bind_i64(&p[4], &a->created_at);
    s_bind_i64(&p[5], &rev);
    s->redact = true;
    int rc = s_exec_done(s, "key add",
                         "INSERT INTO api_keys (id, user_id, hash, prefix, status, created_at, "
                         "revoked_at, rev) VALUES (?, ?, ?, ?, 'active', ?, NULL, ?)",
                         p, NULL);
    s->redact = false;
    return rc;
}

/* Inserts an active key with the next keys rev. */
static int s_key_add(store_t *s, int64_t user_id, const char *key_id, const uint8_t hash[32],
                     const char *prefix, int64_t created_at)
{
    s_key_add_t a = {user_id, key_id, hash, prefix, created_at};
    return s_keys_change(s, s_key_add_tx, &a);
}

/* A key row and its column bindings. */
typedef struct {
    store_key_t k;        /* the row */
    long long user_id;    /* user_id before it is copied into k */
    long long created_at; /* created_at before it is copied into k */
    long long revoked_at; /* revoked_at (NULL: 0) before it is copied into k */
    s_cols_t cols;        /* see S_KEY_COLS */
} s_key_row_t;

/* Binds the columns of a key query (S_KEY_COLS) to r. */
static int s_key_bind(store_t *s, MYSQL_STMT *st, s_key_row_t *r)
{
    memset(r, 0, sizeof(*r));
    s_col_text(&r->cols, r->k.id, sizeof(r->k.id));
    s_col_i64(&r->cols, &r->user_id, false);
    s_col_text(&r->cols, r->k.user_name, sizeof(r->k.user_name));
    s_col_text(&r->cols, r->k.prefix, sizeof(r->k.prefix));
    s_col_text(&r->cols, r->k.status, sizeof(r->k.status));
    s_col_text(&r->cols, r->k.user_status, sizeof(r->k.user_status));
    s_col_i64(&r->cols, &r->created_at, false);
    s_col_i64(&r->cols, &r->revoked_at, true);
    if (mysql_stmt_bind_result(st, r->cols.res) != 0)
        return s_stmt_fail(s, st, "key columns");
    return 0;
}

/* Fetches the next key row into r->k: 0, 1 at the end, or an error. */
static int s_key_fetch(store_t *s, MYSQL_STMT *st, s_key_row_t *r)
{
    int rc = s_cols_fetch(s, st, &r->cols, "api_keys");
    if (rc == 0) {
        r->k.user_id = (int64_t)r->user_id;
        r->k.created_at = (int64_t)r->created_at;
        r->k.revoked_at = (int64_t)r->revoked_at;
    }
    return rc;
}

#define S_KEY_COLS                                                                                 \
    "SELECT k.id, k.user_id, u.name, k.prefix, k.status, u.status, k.created_at, "                 \
    "k.revoked_at FROM api_keys k JOIN users u ON u.id = k.user_id"

/* Finds a key by its hash (the unique index), with its user; errors redacted. */
static int s_key_lookup(store_t *s, const uint8_t hash[32], store_key_t *out)
{
    MYSQL_BIND p;
    unsigned long len;
    s_bind_blob(&p, hash, 32, &len);
    MYSQL_STMT *st;
    s->redact = true;
    int rc = s_exec(s, "key lookup", S_KEY_COLS " WHERE k.hash = ?", &p, &st);
    if (rc == 0) {
        s_key_row_t r;
        rc = s_key_bind(s, st, &r);
        if (rc == 0)
            rc = s_key_fetch(s, st, &r);
        if (rc == 0)
            *out = r.k;
        else if (rc == 1)
            rc = -ENOENT;
        mysql_stmt_close(st);
    }
    s->redact = false;
    return rc;
}

/* Arguments of s_key_revoke_tx. */
typedef struct {
    const char *key_id;   /* key to revoke */
    long long revoked_at; /* Unix seconds */
} s_key_revoke_t;

/* Revokes an active key inside s_keys_change; when nothing matched, tells an unknown id
 * (-ENOENT) from a key revoked before (-EALREADY); either way the transaction rolls back,
 * so rev does not move. */
static int s_key_revoke_tx(store_t *s, long long rev, void *arg)
{
    s_key_revoke_t *a = arg;
    MYSQL_BIND p[3];
    unsigned long len;
    s_bind_i64(&p[0], &a->revoked_at);
    s_bind_i64(&p[1], &rev);
    s_bind_str(&p[2], a->key_id, &len);
    uint64_t matched = 0;
    int rc = s_exec_done(s, "key revoke",
                         "UPDATE api_keys SET status = 'revoked', revoked_at = ?, rev = ? "
                         "WHERE id = ? AND status = 'active'",
                         p, &matched);
    if (rc < 0 || matched > 0)
        return rc;
    int64_t one = 0;
    bool exists = false;
    rc = s_exec_int(s, "key exists", "SELECT 1 FROM api_keys WHERE id = ?", &p[2], &one, &exists);
    if (rc < 0)
        return rc;
    return exists ? -EALREADY : -ENOENT;
}

/* Revokes a key with the next keys rev. */
static int s_key_revoke(store_t *s, const char *key_id, int64_t revoked_at)
{
    s_key_revoke_t a = {key_id, revoked_at};
    return s_keys_change(s, s_key_revoke_tx, &a);
}

/* Reads the keys of one user (user_id >= 1) or of all (0), ordered by created_at, id. */
static int s_key_list(store_t *s, int64_t user_id, store_key_t **out, size_t *n)
{
    MYSQL_BIND p;
    long long uid = user_id;
    s_bind_i64(&p, &uid);
    MYSQL_STMT *st;
    int rc = user_id > 0
                 ? s_exec(s, "key list",
                          S_KEY_COLS " WHERE k.user_id = ? ORDER BY k.created_at, k.id", &p, &st)
                 : s_exec(s, "key list", S_KEY_COLS " ORDER BY k.created_at, k.id", NULL, &st);
    if (rc < 0)
        return rc;
    void *arr = NULL;
    size_t count = 0, cap = 0;
    s_key_row_t r;
    rc = s_key_bind(s, st, &r);
    while (rc == 0 && (rc = s_key_fetch(s, st, &r)) == 0)
        rc = store_array_push(&arr, &count, &cap, &r.k, sizeof(r.k));
    mysql_stmt_close(st);
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
    bool found;
    return s_exec_int(s, "keys rev",
                      "SELECT GREATEST((SELECT COALESCE(MAX(rev), 0) FROM users), "
                      "(SELECT COALESCE(MAX(rev), 0) FROM api_keys))",
                      NULL, rev, &found);
}

/* ---- billing ---------------------------------------------------------------------------- */

/* Prepares *st on first use (statements a batch reuses; s_close_all frees them) and binds
 * params (NULL: none). Binding is client-side only: the bound buffers are read when the
 * statement executes, so they must stay valid until then. */
static int s_use(store_t *s, MYSQL_STMT **st, const char *what, const char *sql, MYSQL_BIND *params)
{
    if (!*st) {
        MYSQL_STMT *t = mysql_stmt_init(S_MY(s));
        if (!t)
            return s_fail(s, what);
        if (mysql_stmt_prepare(t, sql, strlen(sql)) != 0) {
            int rc = s_stmt_fail(s, t, what);
            mysql_stmt_close(t);
            return rc;
        }
        *st = t;
    }
    if (params && mysql_stmt_bind_param(*st, params) != 0)
        return s_stmt_fail(s, *st, what);
    return 0;
}

/* Closes n statements (NULL ones are skipped). */
static void s_close_all(MYSQL_STMT **st, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (st[i])
            mysql_stmt_close(st[i]);
    }
}

/* Executes a prepared statement without a result; *affected (may be NULL): matched rows. */
static int s_run(store_t *s, MYSQL_STMT *st, const char *what, uint64_t *affected)
{
    if (mysql_stmt_execute(st) != 0)
        return s_stmt_fail(s, st, what);
    if (affected)
        *affected = (uint64_t)mysql_stmt_affected_rows(st);
    return 0;
}

/* Executes a prepared query and reads its first row into c: 1 a row, 0 none, or an error.
 * The result is buffered and freed here, so st can run again at once. */
static int s_run_row(store_t *s, MYSQL_STMT *st, s_cols_t *c, const char *what)
{
    if (mysql_stmt_execute(st) != 0)
        return s_stmt_fail(s, st, what);
    int rc = 0;
    if (mysql_stmt_store_result(st) != 0 || mysql_stmt_bind_result(st, c->res) != 0)
        rc = s_stmt_fail(s, st, what);
    if (rc == 0) {
        rc = s_cols_fetch(s, st, c, what);
        rc = rc == 0 ? 1 : rc == 1 ? 0 : rc;
    }
    mysql_stmt_free_result(st);
    return rc;
}

/* Opens a transaction. */
static int s_begin(store_t *s)
{
    return s_query(s, "begin", "START TRANSACTION");
}

/* A price row and its column bindings. */
typedef struct {
    store_price_t p; /* the row */
    long long v[5];  /* effective_from, input, output, cached_input, created_at */
    s_cols_t cols;   /* see S_PRICE_COLS */
} s_price_row_t;

/* Sets up the columns of a price query (S_PRICE_COLS) on r. */
static void s_price_cols(s_price_row_t *r)
{
    memset(r, 0, sizeof(*r));
    s_col_text(&r->cols, r->p.model, sizeof(r->p.model));
    for (int i = 0; i < 5; i++)
        s_col_i64(&r->cols, &r->v[i], false);
}

/* Copies the integer columns of a fetched price row into r->p. */
static void s_price_done(s_price_row_t *r)
{
    r->p.effective_from = r->v[0];
    r->p.input = r->v[1];
    r->p.output = r->v[2];
    r->p.cached_input = r->v[3];
    r->p.created_at = r->v[4];
}

#define S_PRICE_COLS                                                                               \
    "SELECT model, effective_from, input, output, cached_input, created_at FROM prices"

/* Adds a price version and bumps the prices counter in one transaction. The counter is
 * updated first: its row lock orders concurrent price writers, so the counter moves in commit
 * order and a reader that sees it moved also sees the row. */
static int s_price_set(store_t *s, const store_price_t *p)
{
    int rc = s_begin(s);
    if (rc < 0)
        return rc;
    rc = s_exec_done(s, "prices rev", "UPDATE billing_revs SET rev = rev + 1 WHERE name = 'prices'",
                     NULL, NULL);
    if (rc == 0) {
        MYSQL_BIND b[6];
        unsigned long len;
        long long v[5] = {p->effective_from, p->input, p->output, p->cached_input, p->created_at};
        s_bind_str(&b[0], p->model, &len);
        for (int i = 0; i < 5; i++)
            s_bind_i64(&b[1 + i], &v[i]);
        rc = s_exec_done(s, "price set",
                         "INSERT INTO prices (model, effective_from, input, output, cached_input, "
                         "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                         b, NULL);
    }
    return s_end_tx(s, rc);
}

/* Every price version, ordered by model, effective_from. */
static int s_price_list(store_t *s, store_price_t **out, size_t *n)
{
    MYSQL_STMT *st;
    int rc = s_exec(s, "price list", S_PRICE_COLS " ORDER BY model, effective_from", NULL, &st);
    if (rc < 0)
        return rc;
    void *arr = NULL;
    size_t count = 0, cap = 0;
    s_price_row_t *r = malloc(sizeof(*r));
    rc = r ? 0 : -ENOMEM;
    if (rc == 0) {
        s_price_cols(r);
        if (mysql_stmt_bind_result(st, r->cols.res) != 0)
            rc = s_stmt_fail(s, st, "price list");
    }
    while (rc == 0 && (rc = s_cols_fetch(s, st, &r->cols, "price list")) == 0) {
        s_price_done(r);
        rc = store_array_push(&arr, &count, &cap, &r->p, sizeof(r->p));
    }
    free(r);
    mysql_stmt_close(st);
    if (rc < 0) {
        free(arr);
        return rc;
    }
    *out = arr;
    *n = count;
    return 0;
}

/* The newest version of model with effective_from <= at_ms. */
static int s_price_at(store_t *s, const char *model, int64_t at_ms, store_price_t *out)
{
    MYSQL_BIND b[2];
    unsigned long len;
    long long at = at_ms;
    s_bind_str(&b[0], model, &len);
    s_bind_i64(&b[1], &at);
    MYSQL_STMT *st = NULL;
    int rc = s_use(s, &st, "price at",
                   S_PRICE_COLS " WHERE model = ? AND effective_from <= ? "
                                "ORDER BY effective_from DESC LIMIT 1",
                   b);
    s_price_row_t *r = rc == 0 ? malloc(sizeof(*r)) : NULL;
    if (rc == 0 && !r)
        rc = -ENOMEM;
    if (rc == 0) {
        s_price_cols(r);
        rc = s_run_row(s, st, &r->cols, "price at");
    }
    if (rc == 1) {
        s_price_done(r);
        *out = r->p;
        rc = 0;
    } else if (rc == 0) {
        rc = -ENOENT;
    }
    free(r);
    s_close_all(&st, 1);
    return rc;
}

/* The prices counter. */
static int s_prices_rev(store_t *s, int64_t *rev)
{
    bool found = false;
    int rc = s_exec_int(s, "prices rev", "SELECT rev FROM billing_revs WHERE name = 'prices'", NULL,
                        rev, &found);
    if (rc == 0 && !found) {
        store_set_error(s, "prices rev: counter row missing");
        rc = -EIO;
    }
    return rc;
}

/* Queues a top-up; a missing user fails the foreign key (-ENOENT). */
static int s_topup_add(store_t *s, int64_t user_id, int64_t amount, int64_t created_at, int64_t *id)
{
    MYSQL_BIND b[3];
    long long v[3] = {user_id, amount, created_at};
    for (int i = 0; i < 3; i++)
        s_bind_i64(&b[i], &v[i]);
    MYSQL_STMT *st;
    int rc = s_exec(s, "top-up add",
                    "INSERT INTO topups (user_id, amount, created_at, applied_at) "
                    "VALUES (?, ?, ?, NULL)",
                    b, &st);
    if (rc < 0)
        return rc;
    *id = (int64_t)mysql_stmt_insert_id(st);
    mysql_stmt_close(st);
    return 0;
}

/* 1 if the top-up is applied, 0 if queued, -ENOENT if unknown. */
static int s_topup_applied(store_t *s, int64_t id)
{
    MYSQL_BIND b;
    long long v = id;
    s_bind_i64(&b, &v);
    int64_t applied = 0;
    bool found = false;
    int rc =
        s_exec_int(s, "top-up applied", "SELECT applied_at IS NOT NULL FROM topups WHERE id = ?",
                   &b, &applied, &found);
    if (rc < 0)
        return rc;
    return !found ? -ENOENT : applied ? 1 : 0;
}

/* One queued top-up. */
typedef struct {
    long long id;      /* top-up id */
    long long user_id; /* whose */
    long long amount;  /* how much */
} s_topup_t;

/* Applies every queued top-up in one transaction. The queued rows are read with a locking
 * read, then each is credited and marked by its id: only what was credited is marked, under
 * any isolation level, even when hubctl queues another one meanwhile. */
static int s_topups_apply(store_t *s, int64_t now, size_t *applied)
{
    enum { CREDIT, MARK, N_ST };
    MYSQL_STMT *st[N_ST] = {NULL};
    s_topup_t *rows = NULL;
    size_t count = 0, cap = 0;
    int rc = s_begin(s);
    if (rc < 0)
        return rc;
    MYSQL_STMT *q = NULL;
    rc = s_exec(s, "top-ups pending",
                "SELECT id, user_id, amount FROM topups WHERE applied_at IS NULL ORDER BY id "
                "FOR UPDATE",
                NULL, &q);
    if (rc == 0) {
        s_topup_t t;
        s_cols_t cols;
        memset(&cols, 0, sizeof(cols));
        s_col_i64(&cols, &t.id, false);
        s_col_i64(&cols, &t.user_id, false);
        s_col_i64(&cols, &t.amount, false);
        if (mysql_stmt_bind_result(q, cols.res) != 0)
            rc = s_stmt_fail(s, q, "top-ups pending");
        while (rc == 0 && (rc = s_cols_fetch(s, q, &cols, "top-ups pending")) == 0) {
            void *arr = rows;
            rc = store_array_push(&arr, &count, &cap, &t, sizeof(t));
            rows = arr;
        }
        if (rc == 1)
            rc = 0;
        mysql_stmt_close(q);
    }
    s_topup_t cur;
    long long at = now;
    MYSQL_BIND credit[2], mark[2];
    s_bind_i64(&credit[0], &cur.user_id);
    s_bind_i64(&credit[1], &cur.amount);
    s_bind_i64(&mark[0], &at);
    s_bind_i64(&mark[1], &cur.id);
    for (size_t i = 0; rc == 0 && i < count; i++) {
        cur = rows[i];
        rc = s_use(s, &st[CREDIT], "top-up credit",
                   "INSERT INTO balances (user_id, balance) VALUES (?, ?) "
                   "ON DUPLICATE KEY UPDATE balance = balance + VALUES(balance)",
                   credit);
        if (rc == 0)
            rc = s_run(s, st[CREDIT], "top-up credit", NULL);
        if (rc == 0)
            rc = s_use(s, &st[MARK], "top-up mark", "UPDATE topups SET applied_at = ? WHERE id = ?",
                       mark);
        if (rc == 0)
            rc = s_run(s, st[MARK], "top-up mark", NULL);
    }
    s_close_all(st, N_ST);
    free(rows);
    rc = s_end_tx(s, rc);
    *applied = rc == 0 ? count : 0;
    return rc;
}

/* A user's balance, active holds and queued top-ups, read by one statement (one snapshot). */
static int s_balance_get(store_t *s, int64_t user_id, store_balance_t *out)
{
    MYSQL_BIND b;
    long long uid = user_id;
    s_bind_i64(&b, &uid);
    MYSQL_STMT *st = NULL;
    int rc = s_use(s, &st, "balance get",
                   "SELECT COALESCE((SELECT balance FROM balances WHERE user_id = u.id), 0), "
                   "(SELECT COALESCE(SUM(amount), 0) FROM holds WHERE user_id = u.id "
                   "AND state = 0), "
                   "(SELECT COALESCE(SUM(amount), 0) FROM topups WHERE user_id = u.id "
                   "AND applied_at IS NULL) FROM users u WHERE u.id = ?",
                   &b);
    long long v[3] = {0, 0, 0};
    s_cols_t cols;
    memset(&cols, 0, sizeof(cols));
    for (int i = 0; i < 3; i++)
        s_col_i64(&cols, &v[i], false);
    if (rc == 0)
        rc = s_run_row(s, st, &cols, "balance get");
    s_close_all(&st, 1);
    if (rc == 0)
        return -ENOENT;
    if (rc < 0)
        return rc;
    out->user_id = user_id;
    out->balance = v[0];
    out->held = v[1];
    out->pending_topups = v[2];
    return 0;
}

/* Statements of one store_holds_place call, prepared on first use. */
enum { S_HP_FIND, S_HP_USER, S_HP_BALANCE, S_HP_HELD, S_HP_INSERT, S_HP_N };

/* Finds or loads the purse of user_id into (*purses, *n, *cap): its balance and active holds,
 * read with locking reads so that a settlement on another connection cannot change them
 * before this batch commits; -ENOENT for no such user. */
static int s_purse(store_t *s, MYSQL_STMT **st, int64_t user_id, store_purse_t **purses, size_t *n,
                   size_t *cap, store_purse_t **out)
{
    *out = store_purse_find(*purses, *n, user_id);
    if (*out)
        return 0;
    long long uid = user_id, v = 0;
    MYSQL_BIND b;
    s_bind_i64(&b, &uid);
    s_cols_t cols;
    memset(&cols, 0, sizeof(cols));
    s_col_i64(&cols, &v, true);
    int rc = s_use(s, &st[S_HP_USER], "hold user", "SELECT 1 FROM users WHERE id = ?", &b);
    if (rc == 0)
        rc = s_run_row(s, st[S_HP_USER], &cols, "hold user");
    if (rc == 0) {
        store_set_error(s, "hold: no user with id %lld", (long long)user_id);
        return -ENOENT;
    }
    if (rc < 0)
        return rc;
    store_purse_t p = {user_id, 0, 0};
    v = 0;
    rc = s_use(s, &st[S_HP_BALANCE], "hold balance",
               "SELECT balance FROM balances WHERE user_id = ? FOR UPDATE", &b);
    if (rc == 0)
        rc = s_run_row(s, st[S_HP_BALANCE], &cols, "hold balance");
    if (rc < 0)
        return rc;
    p.balance = rc == 1 ? v : 0;
    v = 0;
    rc = s_use(s, &st[S_HP_HELD], "hold held",
               "SELECT COALESCE(SUM(amount), 0) FROM holds WHERE user_id = ? AND state = 0 "
               "FOR UPDATE",
               &b);
    if (rc == 0)
        rc = s_run_row(s, st[S_HP_HELD], &cols, "hold held");
    if (rc < 0)
        return rc;
    p.held = v;
    void *arr = *purses;
    rc = store_array_push(&arr, n, cap, &p, sizeof(p));
    *purses = arr;
    if (rc < 0)
        return rc;
    *out = &(*purses)[*n - 1];
    return 0;
}

/* Places a batch of holds in one transaction (see store.h). The lookup of an earlier hold is
 * a plain read: were the same request placed by two connections at once, the primary key
 * fails the later batch (-EEXIST) instead of granting twice; the purse reads are what must
 * be current, and they are locking reads. */
static int s_holds_place(store_t *s, const store_hold_t *holds, size_t n, int *results,
                         int64_t *available)
{
    MYSQL_STMT *st[S_HP_N] = {NULL};
    store_purse_t *purses = NULL;
    size_t n_purses = 0, cap = 0;
    long long now = store_now_ms();
    int rc = s_begin(s);
    if (rc < 0)
        return rc;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const store_hold_t *h = &holds[i];
        MYSQL_BIND key;
        unsigned long key_len;
        s_bind_blob(&key, h->req_id, 16, &key_len);
        long long owner = 0, state = 0;
        s_cols_t cols;
        memset(&cols, 0, sizeof(cols));
        s_col_i64(&cols, &owner, false);
        s_col_i64(&cols, &state, false);
        rc = s_use(s, &st[S_HP_FIND], "hold find",
                   "SELECT user_id, state FROM holds WHERE req_id = ?", &key);
        if (rc == 0)
            rc = s_run_row(s, st[S_HP_FIND], &cols, "hold find");
        if (rc < 0)
            break;
        store_purse_t *p = NULL;
        if (rc == 1) { /* placed before: its earlier outcome */
            rc = s_purse(s, st, owner, &purses, &n_purses, &cap, &p);
            if (rc < 0)
                break;
            results[i] = state != STORE_HOLD_REFUSED;
        } else {
            rc = s_purse(s, st, h->user_id, &purses, &n_purses, &cap, &p);
            if (rc < 0)
                break;
            int grant = store_purse_hold(p, h->amount);
            long long v[5] = {h->user_id, h->amount, now, h->expires_at,
                              grant ? STORE_HOLD_ACTIVE : STORE_HOLD_REFUSED};
            MYSQL_BIND b[6];
            b[0] = key;
            for (int k = 0; k < 5; k++)
                s_bind_i64(&b[1 + k], &v[k]);
            rc = s_use(s, &st[S_HP_INSERT], "hold place",
                       "INSERT INTO holds (req_id, user_id, amount, created_at, expires_at, "
                       "state) VALUES (?, ?, ?, ?, ?, ?)",
                       b);
            if (rc == 0)
                rc = s_run(s, st[S_HP_INSERT], "hold place", NULL);
            if (rc < 0)
                break;
            results[i] = grant;
        }
        if (available)
            available[i] = store_purse_left(p);
    }
    s_close_all(st, S_HP_N);
    free(purses);
    return s_end_tx(s, rc);
}

/* Reads one hold. */
static int s_hold_get(store_t *s, const uint8_t req_id[16], store_hold_t *out)
{
    MYSQL_BIND key;
    unsigned long key_len;
    s_bind_blob(&key, req_id, 16, &key_len);
    MYSQL_STMT *st = NULL;
    long long v[5] = {0};
    s_cols_t cols;
    memset(&cols, 0, sizeof(cols));
    for (int i = 0; i < 5; i++)
        s_col_i64(&cols, &v[i], false);
    int rc = s_use(s, &st, "hold get",
                   "SELECT user_id, amount, created_at, expires_at, state FROM holds "
                   "WHERE req_id = ?",
                   &key);
    if (rc == 0)
        rc = s_run_row(s, st, &cols, "hold get");
    s_close_all(&st, 1);
    if (rc == 0)
        return -ENOENT;
    if (rc < 0)
        return rc;
    memcpy(out->req_id, req_id, 16);
    out->user_id = v[0];
    out->amount = v[1];
    out->created_at = v[2];
    out->expires_at = v[3];
    out->state = (int)v[4];
    return 0;
}

/* Expires the active holds due at now (one statement, its own transaction). */
static int s_holds_expire(store_t *s, int64_t now, size_t *n)
{
    MYSQL_BIND b;
    long long at = now;
    s_bind_i64(&b, &at);
    uint64_t changed = 0;
    int rc =
        s_exec_done(s, "holds expire",
                    "UPDATE holds SET state = 2 WHERE state = 0 AND expires_at <= ?", &b, &changed);
    if (rc == 0)
        *n = (size_t)changed;
    return rc;
}

/* Sum and count of the active holds. */
static int s_holds_outstanding(store_t *s, int64_t *amount, int64_t *count)
{
    MYSQL_STMT *st = NULL;
    long long v[2] = {0, 0};
    s_cols_t cols;
    memset(&cols, 0, sizeof(cols));
    s_col_i64(&cols, &v[0], false);
    s_col_i64(&cols, &v[1], false);
    int rc = s_use(s, &st, "holds outstanding",
                   "SELECT COALESCE(SUM(amount), 0), COUNT(*) FROM holds WHERE state = 0", NULL);
    if (rc == 0)
        rc = s_run_row(s, st, &cols, "holds outstanding");
    s_close_all(&st, 1);
    if (rc == 0) {
        store_set_error(s, "holds outstanding: no row");
        return -EIO;
    }
    if (rc < 0)
        return rc;
    *amount = v[0];
    *count = v[1];
    return 0;
}

/* Stores a batch of usage reports in one transaction; a re-sent report (same key: the no-op
 * ON DUPLICATE KEY UPDATE) and a report of a settled request are skipped. Not INSERT IGNORE,
 * which would also turn other errors into warnings. */
static int s_usage_put(store_t *s, const store_usage_t *u, size_t n)
{
    MYSQL_STMT *st = NULL;
    int rc = s_begin(s);
    if (rc < 0)
        return rc;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const store_usage_t *r = &u[i];
        MYSQL_BIND b[15];
        unsigned long len[5];
        long long v[11] = {r->attempt,
                           r->user_id,
                           r->status,
                           r->delivered,
                           r->complete,
                           r->estimated,
                           r->input_tokens,
                           r->cached_tokens,
                           r->output_tokens,
                           r->received_at,
                           0};
        s_bind_blob(&b[0], r->req_id, 16, &len[0]);
        s_bind_str(&b[1], r->source, &len[1]);
        s_bind_i64(&b[2], &v[0]);
        s_bind_str(&b[3], r->agent_id, &len[2]);
        s_bind_i64(&b[4], &v[1]);
        s_bind_str(&b[5], r->model, &len[3]);
        for (int k = 2; k < 10; k++)
            s_bind_i64(&b[4 + k], &v[k]);
        s_bind_blob(&b[14], r->req_id, 16, &len[4]);
        rc = s_use(s, &st, "usage put",
                   "INSERT INTO usage_reports (req_id, source, attempt, agent_id, user_id, model, "
                   "status, delivered, complete, estimated, input_tokens, cached_tokens, "
                   "output_tokens, received_at) "
                   "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM DUAL "
                   "WHERE NOT EXISTS (SELECT 1 FROM settlements WHERE req_id = ?) "
                   "ON DUPLICATE KEY UPDATE req_id = usage_reports.req_id",
                   b);
        if (rc == 0)
            rc = s_run(s, st, "usage put", NULL);
    }
    s_close_all(&st, 1);
    return s_end_tx(s, rc);
}

/* A usage row and its column bindings. */
typedef struct {
    store_usage_t u; /* the row */
    long long v[11]; /* attempt, user_id, status, delivered, complete, estimated, input, cached,
                        output, received_at */
    s_cols_t cols;   /* see S_USAGE_COLS */
} s_usage_row_t;

#define S_USAGE_COLS                                                                               \
    "SELECT r.req_id, r.source, r.attempt, r.agent_id, r.user_id, r.model, r.status, "             \
    "r.delivered, r.complete, r.estimated, r.input_tokens, r.cached_tokens, r.output_tokens, "     \
    "r.received_at FROM usage_reports r"

/* Runs a usage query (S_USAGE_COLS) with params to its end into a malloc'd array. */
static int s_usage_rows(store_t *s, const char *what, const char *sql, MYSQL_BIND *params,
                        store_usage_t **out, size_t *n)
{
    MYSQL_STMT *st;
    int rc = s_exec(s, what, sql, params, &st);
    if (rc < 0)
        return rc;
    void *arr = NULL;
    size_t count = 0, cap = 0;
    s_usage_row_t *r = malloc(sizeof(*r));
    rc = r ? 0 : -ENOMEM;
    if (rc == 0) {
        memset(r, 0, sizeof(*r));
        s_cols_t *c = &r->cols;
        s_col_blob(c, r->u.req_id, 16);
        s_col_text(c, r->u.source, sizeof(r->u.source));
        s_col_i64(c, &r->v[0], false);
        s_col_text(c, r->u.agent_id, sizeof(r->u.agent_id));
        s_col_i64(c, &r->v[1], false);
        s_col_text(c, r->u.model, sizeof(r->u.model));
        for (int k = 2; k < 10; k++)
            s_col_i64(c, &r->v[k], false);
        if (mysql_stmt_bind_result(st, c->res) != 0)
            rc = s_stmt_fail(s, st, what);
    }
    while (rc == 0 && (rc = s_cols_fetch(s, st, &r->cols, what)) == 0) {
        store_usage_t *u = &r->u;
        u->attempt = (uint32_t)r->v[0];
        u->user_id = r->v[1];
        u->status = (int)r->v[2];
        u->delivered = r->v[3] != 0;
        u->complete = r->v[4] != 0;
        u->estimated = r->v[5] != 0;
        u->input_tokens = r->v[6];
        u->cached_tokens = r->v[7];
        u->output_tokens = r->v[8];
        u->received_at = r->v[9];
        rc = store_array_push(&arr, &count, &cap, u, sizeof(*u));
    }
    free(r);
    mysql_stmt_close(st);
    if (rc < 0) {
        free(arr);
        return rc;
    }
    *out = arr;
    *n = count;
    return 0;
}

/* Reports of unsettled requests, oldest first, at most limit. */
static int s_usage_pending(store_t *s, size_t limit, store_usage_t **out, size_t *n)
{
    MYSQL_BIND b;
    long long lim = (long long)limit;
    s_bind_i64(&b, &lim);
    return s_usage_rows(s, "usage pending",
                        S_USAGE_COLS " WHERE NOT EXISTS (SELECT 1 FROM settlements t "
                                     "WHERE t.req_id = r.req_id) "
                                     "ORDER BY r.received_at, r.req_id, r.source, r.attempt "
                                     "LIMIT ?",
                        &b, out, n);
}

/* Every stored report of one request, ordered by source, attempt. */
static int s_usage_of(store_t *s, const uint8_t req_id[16], store_usage_t **out, size_t *n)
{
    MYSQL_BIND b;
    unsigned long len;
    s_bind_blob(&b, req_id, 16, &len);
    return s_usage_rows(
        s, "usage of", S_USAGE_COLS " WHERE r.req_id = ? ORDER BY r.source, r.attempt", &b, out, n);
}

/* Statements of one store_settle call, prepared on first use. */
enum {
    S_SET_DONE,    /* is the request settled already? */
    S_SET_HEAD,    /* the agent's chain head (locking read) */
    S_SET_LEDGER,  /* append the row */
    S_SET_BALANCE, /* debit the user */
    S_SET_ACCOUNT, /* credit the agent, move its head */
    S_SET_HOLD,    /* release the hold */
    S_SET_REPORTS, /* drop the reports */
    S_SET_INSERT,  /* record the settlement */
    S_SET_N
};

/* Appends one BILLED item's row: checks it follows the agent's chain (read with a lock, so
 * that no other writer moves the head before this commits), inserts it, debits the user,
 * credits the agent and moves the chain's head. */
static int s_settle_row(store_t *s, MYSQL_STMT **st, size_t i, const ledger_row_t *r)
{
    MYSQL_BIND agent;
    unsigned long agent_len;
    s_bind_str(&agent, r->agent_id, &agent_len);
    long long last = 0;
    uint8_t last_hash[LEDGER_HASH_LEN] = {0};
    s_cols_t cols;
    memset(&cols, 0, sizeof(cols));
    s_col_i64(&cols, &last, false);
    s_col_blob(&cols, last_hash, LEDGER_HASH_LEN);
    int rc = s_use(s, &st[S_SET_HEAD], "ledger head",
                   "SELECT last_seq, last_hash FROM agent_accounts WHERE agent_id = ? FOR UPDATE",
                   &agent);
    if (rc == 0)
        rc = s_run_row(s, st[S_SET_HEAD], &cols, "ledger head");
    if (rc < 0)
        return rc;
    if (rc == 0) {
        last = 0;
        memset(last_hash, 0, sizeof(last_hash));
    }
    if (r->seq != (uint64_t)last + 1) {
        store_set_error(s, "settlement %zu: seq %llu of agent %s does not follow %lld", i,
                        (unsigned long long)r->seq, r->agent_id, last);
        return -ESTALE;
    }
    if (memcmp(r->prev_hash, last_hash, LEDGER_HASH_LEN) != 0) {
        store_set_error(s,
                        "settlement %zu: prev_hash of agent %s seq %llu is not the hash of its "
                        "last row",
                        i, r->agent_id, (unsigned long long)r->seq);
        return -ESTALE;
    }
    long long v[15] = {
        (long long)r->seq, r->attempt,    r->user_id, r->input_tokens, r->cached_tokens,
        r->output_tokens,  r->estimated,  r->cost,    r->fee,          r->credit,
        r->hold,           r->price_from, r->fee_ppm, r->created_ms,   -r->cost};
    MYSQL_BIND b[19];
    unsigned long len[5];
    s_bind_str(&b[0], r->agent_id, &len[0]);
    s_bind_i64(&b[1], &v[0]);
    s_bind_blob(&b[2], r->req_id, 16, &len[1]);
    s_bind_i64(&b[3], &v[1]);
    s_bind_i64(&b[4], &v[2]);
    s_bind_str(&b[5], r->model, &len[2]);
    for (int k = 3; k < 14; k++)
        s_bind_i64(&b[3 + k], &v[k]);
    s_bind_blob(&b[17], r->prev_hash, LEDGER_HASH_LEN, &len[3]);
    s_bind_blob(&b[18], r->hash, LEDGER_HASH_LEN, &len[4]);
    rc = s_use(s, &st[S_SET_LEDGER], "ledger append",
               "INSERT INTO ledger (agent_id, seq, req_id, attempt, user_id, model, input_tokens, "
               "cached_tokens, output_tokens, estimated, cost, fee, credit, hold_amount, "
               "price_from, fee_ppm, created_ms, prev_hash, hash) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
               b);
    if (rc == 0)
        rc = s_run(s, st[S_SET_LEDGER], "ledger append", NULL);
    if (rc == -EEXIST) { /* another writer appended meanwhile */
        store_set_error(s, "settlement %zu: agent %s seq %llu exists already", i, r->agent_id,
                        (unsigned long long)r->seq);
        rc = -ESTALE;
    }
    if (rc < 0)
        return rc;
    /* The balance may go below zero: what a request cost beyond its hold is still charged. A
     * user without a money row gets one (a missing user fails the foreign key: -ENOENT). */
    MYSQL_BIND bal[2];
    s_bind_i64(&bal[0], &v[2]);
    s_bind_i64(&bal[1], &v[14]);
    rc = s_use(s, &st[S_SET_BALANCE], "balance debit",
               "INSERT INTO balances (user_id, balance) VALUES (?, ?) "
               "ON DUPLICATE KEY UPDATE balance = balance + VALUES(balance)",
               bal);
    if (rc == 0)
        rc = s_run(s, st[S_SET_BALANCE], "balance debit", NULL);
    if (rc < 0)
        return rc;
    MYSQL_BIND acc[4];
    acc[0] = agent;
    s_bind_i64(&acc[1], &v[9]);
    s_bind_i64(&acc[2], &v[0]);
    s_bind_blob(&acc[3], r->hash, LEDGER_HASH_LEN, &len[4]);
    rc = s_use(s, &st[S_SET_ACCOUNT], "account credit",
               "INSERT INTO agent_accounts (agent_id, credit, last_seq, last_hash, acked_seq) "
               "VALUES (?, ?, ?, ?, 0) ON DUPLICATE KEY UPDATE "
               "credit = credit + VALUES(credit), last_seq = VALUES(last_seq), "
               "last_hash = VALUES(last_hash)",
               acc);
    if (rc == 0)
        rc = s_run(s, st[S_SET_ACCOUNT], "account credit", NULL);
    return rc;
}

/* Settles one item inside the batch's transaction. */
static int s_settle_one(store_t *s, MYSQL_STMT **st, size_t i, const store_settle_t *it)
{
    MYSQL_BIND key;
    unsigned long key_len;
    s_bind_blob(&key, it->req_id, 16, &key_len);
    long long one = 0;
    s_cols_t cols;
    memset(&cols, 0, sizeof(cols));
    s_col_i64(&cols, &one, false);
    int rc =
        s_use(s, &st[S_SET_DONE], "settled", "SELECT 1 FROM settlements WHERE req_id = ?", &key);
    if (rc == 0)
        rc = s_run_row(s, st[S_SET_DONE], &cols, "settled");
    if (rc < 0)
        return rc;
    if (rc == 1) {
        store_set_error(s, "settlement %zu: the request is settled already", i);
        return -EALREADY;
    }
    bool billed = it->outcome == STORE_OUTCOME_BILLED;
    if (billed && (rc = s_settle_row(s, st, i, &it->row)) < 0)
        return rc;
    /* A refused hold stays refused: a re-sent hold.req must get the same answer. */
    rc = s_use(s, &st[S_SET_HOLD], "hold settle",
               "UPDATE holds SET state = 1 WHERE req_id = ? AND state IN (0, 2)", &key);
    if (rc == 0)
        rc = s_run(s, st[S_SET_HOLD], "hold settle", NULL);
    if (rc == 0)
        rc = s_use(s, &st[S_SET_REPORTS], "usage drop",
                   "DELETE FROM usage_reports WHERE req_id = ?", &key);
    if (rc == 0)
        rc = s_run(s, st[S_SET_REPORTS], "usage drop", NULL);
    if (rc < 0)
        return rc;
    long long v[4] = {it->outcome, it->user_id, (long long)it->row.seq, it->settled_at};
    my_bool no_row = !billed;
    MYSQL_BIND b[6];
    unsigned long agent_len;
    b[0] = key;
    s_bind_i64(&b[1], &v[0]);
    s_bind_i64(&b[2], &v[1]);
    s_bind_str(&b[3], billed ? it->row.agent_id : "", &agent_len);
    b[3].is_null = &no_row;
    s_bind_i64(&b[4], &v[2]);
    b[4].is_null = &no_row;
    s_bind_i64(&b[5], &v[3]);
    rc = s_use(s, &st[S_SET_INSERT], "settlement insert",
               "INSERT INTO settlements (req_id, outcome, user_id, agent_id, seq, settled_at) "
               "VALUES (?, ?, ?, ?, ?, ?)",
               b);
    if (rc == 0)
        rc = s_run(s, st[S_SET_INSERT], "settlement insert", NULL);
    if (rc == -EEXIST) { /* settled by another writer after this transaction's snapshot */
        store_set_error(s, "settlement %zu: the request is settled already", i);
        rc = -EALREADY;
    }
    return rc;
}

/* Settles a batch in one transaction; any failure rolls all of it back. */
static int s_settle(store_t *s, const store_settle_t *items, size_t n)
{
    MYSQL_STMT *st[S_SET_N] = {NULL};
    int rc = s_begin(s);
    if (rc < 0)
        return rc;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = s_settle_one(s, st, i, &items[i]);
    s_close_all(st, S_SET_N);
    return s_end_tx(s, rc);
}

/* 1 and the outcome if the request is settled, else 0. */
static int s_settled(store_t *s, const uint8_t req_id[16], int *outcome)
{
    MYSQL_BIND b;
    unsigned long len;
    s_bind_blob(&b, req_id, 16, &len);
    int64_t v = 0;
    bool found = false;
    int rc = s_exec_int(s, "settled", "SELECT outcome FROM settlements WHERE req_id = ?", &b, &v,
                        &found);
    if (rc < 0)
        return rc;
    if (found)
        *outcome = (int)v;
    return found ? 1 : 0;
}

/* The agent's chain head from its account (seq 0 and zeros without one). */
static int s_ledger_head(store_t *s, const char *agent_id, uint64_t *seq, uint8_t hash[32])
{
    MYSQL_BIND b;
    unsigned long len;
    s_bind_str(&b, agent_id, &len);
    long long last = 0;
    uint8_t h[LEDGER_HASH_LEN];
    s_cols_t cols;
    memset(&cols, 0, sizeof(cols));
    s_col_i64(&cols, &last, false);
    s_col_blob(&cols, h, LEDGER_HASH_LEN);
    MYSQL_STMT *st = NULL;
    int rc = s_use(s, &st, "ledger head",
                   "SELECT last_seq, last_hash FROM agent_accounts WHERE agent_id = ?", &b);
    if (rc == 0)
        rc = s_run_row(s, st, &cols, "ledger head");
    s_close_all(&st, 1);
    if (rc == 1) {
        *seq = (uint64_t)last;
        memcpy(hash, h, LEDGER_HASH_LEN);
    }
    return rc < 0 ? rc : 0;
}

/* A ledger row and its column bindings. */
typedef struct {
    ledger_row_t r;  /* the row */
    long long v[14]; /* seq, attempt, user_id, input, cached, output, estimated, cost, fee,
                        credit, hold, price_from, fee_ppm, created_ms */
    s_cols_t cols;   /* see S_LEDGER_COLS */
} s_ledger_row_t;

#define S_LEDGER_COLS                                                                              \
    "SELECT agent_id, seq, req_id, attempt, user_id, model, input_tokens, cached_tokens, "         \
    "output_tokens, estimated, cost, fee, credit, hold_amount, price_from, fee_ppm, created_ms, "  \
    "prev_hash, hash FROM ledger"

/* Binds the columns of a ledger query (S_LEDGER_COLS) to x. */
static int s_ledger_bind(store_t *s, MYSQL_STMT *st, s_ledger_row_t *x)
{
    memset(x, 0, sizeof(*x));
    s_cols_t *c = &x->cols;
    s_col_text(c, x->r.agent_id, sizeof(x->r.agent_id));
    s_col_i64(c, &x->v[0], false);
    s_col_blob(c, x->r.req_id, 16);
    s_col_i64(c, &x->v[1], false);
    s_col_i64(c, &x->v[2], false);
    s_col_text(c, x->r.model, sizeof(x->r.model));
    for (int k = 3; k < 14; k++)
        s_col_i64(c, &x->v[k], false);
    s_col_blob(c, x->r.prev_hash, LEDGER_HASH_LEN);
    s_col_blob(c, x->r.hash, LEDGER_HASH_LEN);
    if (mysql_stmt_bind_result(st, c->res) != 0)
        return s_stmt_fail(s, st, "ledger columns");
    return 0;
}

/* Fetches the next ledger row into x->r: 0, 1 at the end, or an error. */
static int s_ledger_fetch(store_t *s, MYSQL_STMT *st, s_ledger_row_t *x)
{
    int rc = s_cols_fetch(s, st, &x->cols, "ledger");
    if (rc != 0)
        return rc;
    ledger_row_t *r = &x->r;
    r->seq = (uint64_t)x->v[0];
    r->attempt = (uint32_t)x->v[1];
    r->user_id = x->v[2];
    r->input_tokens = x->v[3];
    r->cached_tokens = x->v[4];
    r->output_tokens = x->v[5];
    r->estimated = x->v[6] != 0;
    r->cost = x->v[7];
    r->fee = x->v[8];
    r->credit = x->v[9];
    r->hold = x->v[10];
    r->price_from = x->v[11];
    r->fee_ppm = x->v[12];
    r->created_ms = x->v[13];
    return 0;
}

/* Rows of an agent from from_seq on, in seq order, at most limit. */
static int s_ledger_range(store_t *s, const char *agent_id, uint64_t from_seq, size_t limit,
                          ledger_row_t **out, size_t *n)
{
    MYSQL_BIND b[3];
    unsigned long len;
    long long from = (long long)from_seq, lim = (long long)limit;
    s_bind_str(&b[0], agent_id, &len);
    s_bind_i64(&b[1], &from);
    s_bind_i64(&b[2], &lim);
    MYSQL_STMT *st;
    int rc = s_exec(s, "ledger range",
                    S_LEDGER_COLS " WHERE agent_id = ? AND seq >= ? ORDER BY seq LIMIT ?", b, &st);
    if (rc < 0)
        return rc;
    void *arr = NULL;
    size_t count = 0, cap = 0;
    s_ledger_row_t *x = malloc(sizeof(*x));
    rc = x ? s_ledger_bind(s, st, x) : -ENOMEM;
    while (rc == 0 && (rc = s_ledger_fetch(s, st, x)) == 0)
        rc = store_array_push(&arr, &count, &cap, &x->r, sizeof(x->r));
    free(x);
    mysql_stmt_close(st);
    if (rc < 0) {
        free(arr);
        return rc;
    }
    *out = arr;
    *n = count;
    return 0;
}

/* The ledger row of one request. */
static int s_ledger_by_req(store_t *s, const uint8_t req_id[16], ledger_row_t *out)
{
    MYSQL_BIND b;
    unsigned long len;
    s_bind_blob(&b, req_id, 16, &len);
    MYSQL_STMT *st;
    int rc = s_exec(s, "ledger by req", S_LEDGER_COLS " WHERE req_id = ?", &b, &st);
    if (rc < 0)
        return rc;
    s_ledger_row_t *x = malloc(sizeof(*x));
    rc = x ? s_ledger_bind(s, st, x) : -ENOMEM;
    if (rc == 0)
        rc = s_ledger_fetch(s, st, x);
    if (rc == 0)
        *out = x->r;
    else if (rc == 1)
        rc = -ENOENT;
    free(x);
    mysql_stmt_close(st);
    return rc;
}

/* Raises the agent's acknowledged seq to seq (never lowers it), creating its account. */
static int s_ledger_ack(store_t *s, const char *agent_id, uint64_t seq)
{
    static const uint8_t zeros[LEDGER_HASH_LEN];
    MYSQL_BIND b[3];
    unsigned long len[2];
    long long v = (long long)seq;
    s_bind_str(&b[0], agent_id, &len[0]);
    s_bind_blob(&b[1], zeros, LEDGER_HASH_LEN, &len[1]);
    s_bind_i64(&b[2], &v);
    return s_exec_done(s, "ledger ack",
                       "INSERT INTO agent_accounts (agent_id, credit, last_seq, last_hash, "
                       "acked_seq) VALUES (?, 0, 0, ?, ?) ON DUPLICATE KEY UPDATE "
                       "acked_seq = GREATEST(acked_seq, VALUES(acked_seq))",
                       b, NULL);
}

/* Every agent account, ordered by agent_id. */
static int s_account_list(store_t *s, store_account_t **out, size_t *n)
{
    MYSQL_STMT *st;
    int rc = s_exec(s, "account list",
                    "SELECT agent_id, credit, last_seq, acked_seq FROM agent_accounts "
                    "ORDER BY agent_id",
                    NULL, &st);
    if (rc < 0)
        return rc;
    void *arr = NULL;
    size_t count = 0, cap = 0;
    store_account_t a;
    long long v[3];
    s_cols_t cols;
    memset(&a, 0, sizeof(a));
    memset(&cols, 0, sizeof(cols));
    s_col_text(&cols, a.agent_id, sizeof(a.agent_id));
    for (int k = 0; k < 3; k++)
        s_col_i64(&cols, &v[k], false);
    if (mysql_stmt_bind_result(st, cols.res) != 0)
        rc = s_stmt_fail(s, st, "account list");
    while (rc == 0 && (rc = s_cols_fetch(s, st, &cols, "account list")) == 0) {
        a.credit = v[0];
        a.last_seq = (uint64_t)v[1];
        a.acked_seq = (uint64_t)v[2];
        rc = store_array_push(&arr, &count, &cap, &a, sizeof(a));
    }
    mysql_stmt_close(st);
    if (rc < 0) {
        free(arr);
        return rc;
    }
    *out = arr;
    *n = count;
    return 0;
}

/* Hub-wide sums, read by one statement (one snapshot). */
static int s_billing_totals(store_t *s, store_totals_t *out)
{
    MYSQL_STMT *st = NULL;
    long long v[7] = {0};
    s_cols_t cols;
    memset(&cols, 0, sizeof(cols));
    for (int k = 0; k < 7; k++)
        s_col_i64(&cols, &v[k], false);
    int rc = s_use(s, &st, "billing totals",
                   "SELECT t.v, b.v, l.cost, l.credit, l.fee, l.n, x.n FROM "
                   "(SELECT COALESCE(SUM(amount), 0) AS v FROM topups "
                   "WHERE applied_at IS NOT NULL) t, "
                   "(SELECT COALESCE(SUM(balance), 0) AS v FROM balances) b, "
                   "(SELECT COALESCE(SUM(cost), 0) AS cost, COALESCE(SUM(credit), 0) AS credit, "
                   "COALESCE(SUM(fee), 0) AS fee, COUNT(*) AS n FROM ledger) l, "
                   "(SELECT COUNT(*) AS n FROM settlements) x",
                   NULL);
    if (rc == 0)
        rc = s_run_row(s, st, &cols, "billing totals");
    s_close_all(&st, 1);
    if (rc == 0) {
        store_set_error(s, "billing totals: no row");
        return -EIO;
    }
    if (rc < 0)
        return rc;
    out->topups = v[0];
    out->balances = v[1];
    out->debits = v[2];
    out->credits = v[3];
    out->fees = v[4];
    out->ledger_rows = v[5];
    out->settled = v[6];
    return 0;
}

static const store_ops_t s_ops = {
    .name = "mysql",
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

/* ---- open ------------------------------------------------------------------------------- */

/* Overwrites every occurrence of secret in text with '*' (belt and braces: the server's
 * messages name the user, never the password). */
static void s_scrub(char *text, const char *secret)
{
    size_t n = strlen(secret);
    if (n < 3)
        return;
    for (char *p = strstr(text, secret); p; p = strstr(p + n, secret))
        memset(p, '*', n);
}

int store_mysql_open(store_t *s, const store_params_t *params, char *err, size_t errlen)
{
    store_mysql_url_t u;
    int rc = store_mysql_url_parse(params->mysql_url, &u, err, errlen);
    if (rc < 0)
        return rc;
    if (!u.db[0]) {
        store_mysql_url_free(&u);
        snprintf(err, errlen, "store: mysql_url names no database (mysql://user:pass@host/db)");
        return -EINVAL;
    }
    MYSQL *my = mysql_init(NULL);
    if (!my) {
        store_mysql_url_free(&u);
        snprintf(err, errlen, "store: out of memory");
        return -ENOMEM;
    }
    unsigned int proto = MYSQL_PROTOCOL_TCP;
    unsigned int connect_timeout = S_CONNECT_TIMEOUT, io_timeout = S_IO_TIMEOUT;
    mysql_options(my, MYSQL_OPT_PROTOCOL, &proto);
    mysql_options(my, MYSQL_OPT_CONNECT_TIMEOUT, &connect_timeout);
    mysql_options(my, MYSQL_OPT_READ_TIMEOUT, &io_timeout);
    mysql_options(my, MYSQL_OPT_WRITE_TIMEOUT, &io_timeout);
    mysql_options(my, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_options(my, MYSQL_INIT_COMMAND,
                  "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', "
                  "SESSION time_zone = '+00:00'");
    if (!mysql_real_connect(my, u.host, u.user, u.password, u.db, u.port, NULL,
                            CLIENT_FOUND_ROWS)) {
        unsigned int code = mysql_errno(my);
        snprintf(err, errlen, "store: cannot connect to mysql at %s:%u as '%s': %s", u.host, u.port,
                 u.user, mysql_error(my));
        s_scrub(err, u.password);
        mysql_close(my);
        store_mysql_url_free(&u);
        return s_errno(code);
    }
    store_mysql_url_free(&u);
    s->db = my;
    s->ops = &s_ops;
    return 0;
}
