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
 * rest (-EALREADY for a request settled meanwhile).
 *
 * Batch functions (holds, usage reports, settlements) cost a few statements per batch, not per
 * item: one read of everything the batch needs (IN lists; locking reads where a write depends
 * on them), the decisions in memory, item by item in order (so earlier items of a batch are
 * seen by later ones, and the first item that fails names the error), then multi-row INSERTs,
 * one aggregated upsert per user and per agent, and UPDATE/DELETE ... IN (...). A statement
 * takes at most S_CHUNK rows; a bigger batch runs it again. The billing statements come from
 * one table (s_sql) and stay prepared per connection (s_prepared): hub-billing runs the same
 * few shapes over and over, and a prepare costs a round trip and a parse.
 *
 * Statements bound to a key hash run with s->redact set: the server's error text can quote a
 * bound value ("Duplicate entry '...' for key"), and a hash must not reach last_error or a log.
 */
#include "pct.h"
#include "store_impl.h"

#include <assert.h>
#include <errmsg.h>
#include <errno.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Statements a connection keeps prepared at most (see s_prepared). The server keeps some 35 to
 * 100 KB for each: a few MB per connection. */
#define S_CACHE_MAX 64

/* One statement a connection keeps prepared. */
typedef struct {
    MYSQL_STMT *st; /* the statement; NULL: a free slot */
    int q;          /* which one: its index in s_sql */
    size_t rows;    /* the row count its text was built for (0: a statement without rows) */
    uint64_t used;  /* s_conn_t.clock at its last use: the least recently used makes room */
} s_cached_t;

/* The backend's state behind store_t.db: the connection and its prepared statements. */
typedef struct {
    MYSQL *my;                     /* the connection */
    s_cached_t cache[S_CACHE_MAX]; /* statements kept prepared (s_prepared) */
    uint64_t clock;                /* counts uses of the cache */
} s_conn_t;

#define S_MY(s) (((s_conn_t *)(s)->db)->my)

/* Seconds: connecting, one read or write on the socket, waiting for a named lock. */
#define S_CONNECT_TIMEOUT 10
#define S_IO_TIMEOUT 60
#define S_LOCK_TIMEOUT "30"

/* Name of a named lock: one per purpose and database (at most 64 characters). */
#define S_LOCK_NAME "CONCAT('relayhub.', ?, '.', MD5(DATABASE()))"

/* ---- URL parsing ------------------------------------------------------------------------ */

/* Percent-decodes len bytes of src into a new string; -EINVAL on a bad or NUL escape. */
static int s_pct_decode(const char *src, size_t len, char **out)
{
    char *dst = malloc(len + 1);
    if (!dst)
        return -ENOMEM;
    if (pct_decode(src, len, dst, len + 1) < 0) {
        free(dst);
        return -EINVAL;
    }
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

/* Closes the prepared statements and the connection. */
static void s_close(store_t *s)
{
    s_conn_t *c = s->db;
    for (size_t i = 0; i < S_CACHE_MAX; i++) {
        if (c->cache[i].st)
            mysql_stmt_close(c->cache[i].st);
    }
    mysql_close(c->my);
    free(c);
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

/* ---- billing statements and batches ------------------------------------------------------ */

/* Rows (or IN-list items) per statement: a batch of n items runs each of its statements
 * ceil(n / S_CHUNK) times. 128 rows of the widest row (the ledger's 19 columns) are 2,432
 * placeholders, far below the protocol's 65,535, and about 40 KB. A power of two (IN lists are
 * padded to one, see s_sql_t). */
#define S_CHUNK 128

/* Rows of a multi-row INSERT up to which it stays prepared (see s_for_rows). */
#define S_KEEP_ROWS 8

/* The billing statements a connection keeps prepared: their index in s_sql. */
typedef enum {
    S_Q_HOLD_GET,       /* one hold */
    S_Q_HOLD_FIND,      /* the holds of a batch's requests */
    S_Q_USER_IDS,       /* which of a batch's users exist */
    S_Q_BALANCES,       /* users' balances (locking read) */
    S_Q_HELD,           /* users' active holds (locking read) */
    S_Q_HOLD_INSERT,    /* new holds */
    S_Q_REPORT_SETTLED, /* which reported requests are settled (shared locks) */
    S_Q_REPORT_INSERT,  /* new usage reports */
    S_Q_USAGE_PENDING,  /* reports of unsettled requests */
    S_Q_SETTLED,        /* which of a batch's requests are settled */
    S_Q_HEADS,          /* agents' chain heads (locking read) */
    S_Q_LEDGER_INSERT,  /* new ledger rows */
    S_Q_DEBIT,          /* balance changes, one row per user */
    S_Q_CREDIT,         /* agent credits and chain heads, one row per agent */
    S_Q_HOLD_RELEASE,   /* settled requests' holds */
    S_Q_REPORT_DROP,    /* settled requests' reports */
    S_Q_SETTLE_INSERT,  /* settlements */
    S_Q_LEDGER_RANGE,   /* an agent's rows from a seq on */
    S_Q_LEDGER_ACK,     /* an agent's acknowledged seq */
    S_Q_N
} s_q_t;

/* The text of a statement: head, then (for a batch statement) its row repeated for the count
 * it runs with and joined by ", ", then tail. An IN list (run by s_for_keys) is padded to a
 * power of two by repeating its last item (the same set), so that a few prepared shapes serve
 * every size; the rows of an INSERT (s_for_rows) cannot be padded. */
typedef struct {
    const char *what; /* the operation, in error messages */
    const char *head; /* the whole text, or what comes before the rows */
    const char *row;  /* one row ("(?, ?)") or IN-list item ("?"), or NULL */
    const char *tail; /* what comes after the rows */
} s_sql_t;

#define S_USAGE_COLS                                                                               \
    "SELECT r.req_id, r.source, r.attempt, r.agent_id, r.user_id, r.model, r.status, "             \
    "r.delivered, r.complete, r.estimated, r.input_tokens, r.cached_tokens, r.output_tokens, "     \
    "r.received_at FROM usage_reports r"

#define S_LEDGER_COLS                                                                              \
    "SELECT agent_id, seq, req_id, attempt, user_id, model, input_tokens, cached_tokens, "         \
    "output_tokens, estimated, cost, fee, credit, hold_amount, price_from, fee_ppm, created_ms, "  \
    "prev_hash, hash FROM ledger"

static const s_sql_t s_sql[S_Q_N] = {
    [S_Q_HOLD_GET] = {"hold get",
                      "SELECT user_id, amount, created_at, expires_at, state FROM holds "
                      "WHERE req_id = ?",
                      NULL, ""},
    [S_Q_HOLD_FIND] = {"hold find", "SELECT req_id, user_id, state FROM holds WHERE req_id IN (",
                       "?", ")"},
    [S_Q_USER_IDS] = {"user check", "SELECT id FROM users WHERE id IN (", "?", ")"},
    [S_Q_BALANCES] = {"hold balance", "SELECT user_id, balance FROM balances WHERE user_id IN (",
                      "?", ") FOR UPDATE"},
    [S_Q_HELD] = {"hold held",
                  "SELECT user_id, SUM(amount) FROM holds WHERE state = 0 AND user_id IN (", "?",
                  ") GROUP BY user_id FOR UPDATE"},
    [S_Q_HOLD_INSERT] = {"hold place",
                         "INSERT INTO holds (req_id, user_id, amount, created_at, expires_at, "
                         "state) VALUES ",
                         "(?, ?, ?, ?, ?, ?)", ""},
    [S_Q_REPORT_SETTLED] = {"usage settled", "SELECT req_id FROM settlements WHERE req_id IN (",
                            "?", ") LOCK IN SHARE MODE"},
    [S_Q_REPORT_INSERT] = {"usage put",
                           "INSERT INTO usage_reports (req_id, source, attempt, agent_id, user_id, "
                           "model, status, delivered, complete, estimated, input_tokens, "
                           "cached_tokens, output_tokens, received_at) VALUES ",
                           "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           " ON DUPLICATE KEY UPDATE req_id = usage_reports.req_id"},
    [S_Q_USAGE_PENDING] = {"usage pending",
                           S_USAGE_COLS " WHERE NOT EXISTS (SELECT 1 FROM settlements t "
                                        "WHERE t.req_id = r.req_id) "
                                        "ORDER BY r.received_at, r.req_id, r.source, r.attempt "
                                        "LIMIT ?",
                           NULL, ""},
    [S_Q_SETTLED] = {"settled", "SELECT req_id FROM settlements WHERE req_id IN (", "?", ")"},
    [S_Q_HEADS] = {"ledger head",
                   "SELECT agent_id, last_seq, last_hash FROM agent_accounts WHERE agent_id IN (",
                   "?", ") FOR UPDATE"},
    [S_Q_LEDGER_INSERT] = {"ledger append",
                           "INSERT INTO ledger (agent_id, seq, req_id, attempt, user_id, model, "
                           "input_tokens, cached_tokens, output_tokens, estimated, cost, fee, "
                           "credit, hold_amount, price_from, fee_ppm, created_ms, prev_hash, "
                           "hash) VALUES ",
                           "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", ""},
    [S_Q_DEBIT] = {"balance debit", "INSERT INTO balances (user_id, balance) VALUES ", "(?, ?)",
                   " ON DUPLICATE KEY UPDATE balance = balance + VALUES(balance)"},
    [S_Q_CREDIT] = {"account credit",
                    "INSERT INTO agent_accounts (agent_id, credit, last_seq, last_hash, "
                    "acked_seq) VALUES ",
                    "(?, ?, ?, ?, 0)",
                    " ON DUPLICATE KEY UPDATE credit = credit + VALUES(credit), "
                    "last_seq = VALUES(last_seq), last_hash = VALUES(last_hash)"},
    /* A refused hold stays refused: a re-sent hold.req must get the same answer. */
    [S_Q_HOLD_RELEASE] = {"hold settle", "UPDATE holds SET state = 1 WHERE req_id IN (", "?",
                          ") AND state IN (0, 2)"},
    [S_Q_REPORT_DROP] = {"usage drop", "DELETE FROM usage_reports WHERE req_id IN (", "?", ")"},
    [S_Q_SETTLE_INSERT] = {"settlement insert",
                           "INSERT INTO settlements (req_id, outcome, user_id, agent_id, seq, "
                           "settled_at) VALUES ",
                           "(?, ?, ?, ?, ?, ?)", ""},
    [S_Q_LEDGER_RANGE] = {"ledger range",
                          S_LEDGER_COLS " WHERE agent_id = ? AND seq >= ? ORDER BY seq LIMIT ?",
                          NULL, ""},
    [S_Q_LEDGER_ACK] = {"ledger ack",
                        "INSERT INTO agent_accounts (agent_id, credit, last_seq, last_hash, "
                        "acked_seq) VALUES (?, 0, 0, ?, ?) ON DUPLICATE KEY UPDATE "
                        "acked_seq = GREATEST(acked_seq, VALUES(acked_seq))",
                        NULL, ""},
};

/* The text of statement q for rows rows (malloc'd): constants only, never a value. */
static char *s_sql_text(const s_sql_t *q, size_t rows)
{
    size_t head = strlen(q->head), row = q->row ? strlen(q->row) : 0, tail = strlen(q->tail);
    char *sql = malloc(head + rows * (row + 2) + tail + 1);
    if (!sql)
        return NULL;
    char *p = sql;
    memcpy(p, q->head, head);
    p += head;
    for (size_t i = 0; i < rows; i++) {
        if (i > 0) {
            memcpy(p, ", ", 2);
            p += 2;
        }
        memcpy(p, q->row, row);
        p += row;
    }
    memcpy(p, q->tail, tail);
    p[tail] = '\0';
    return sql;
}

/* The slot a new statement takes: a free one, else the least recently used (closed here). */
static s_cached_t *s_cache_slot(s_conn_t *c)
{
    s_cached_t *victim = &c->cache[0];
    for (size_t i = 0; i < S_CACHE_MAX; i++) {
        if (!c->cache[i].st)
            return &c->cache[i];
        if (c->cache[i].used < victim->used)
            victim = &c->cache[i];
    }
    mysql_stmt_close(victim->st);
    victim->st = NULL;
    return victim;
}

/* Prepares statement q for rows rows (0 for one without rows); *out is the caller's. */
static int s_prepare_q(store_t *s, s_q_t q, size_t rows, MYSQL_STMT **out)
{
    char *sql = s_sql_text(&s_sql[q], rows);
    MYSQL_STMT *st = sql ? mysql_stmt_init(S_MY(s)) : NULL;
    if (!st) {
        free(sql);
        store_set_error(s, "%s: out of memory", s_sql[q].what);
        return -ENOMEM;
    }
    int rc = 0;
    if (mysql_stmt_prepare(st, sql, strlen(sql)) != 0) {
        rc = s_stmt_fail(s, st, s_sql[q].what);
        mysql_stmt_close(st);
    } else {
        *out = st;
    }
    free(sql);
    return rc;
}

/* Statement q for rows rows (0 for one without rows), prepared on its first use on this
 * connection and kept: the caller binds, executes and frees its result, never closes it. */
static int s_prepared(store_t *s, s_q_t q, size_t rows, MYSQL_STMT **out)
{
    s_conn_t *c = s->db;
    c->clock++;
    for (size_t i = 0; i < S_CACHE_MAX; i++) {
        s_cached_t *e = &c->cache[i];
        if (e->st && e->q == (int)q && e->rows == rows) {
            e->used = c->clock;
            *out = e->st;
            return 0;
        }
    }
    MYSQL_STMT *st;
    int rc = s_prepare_q(s, q, rows, &st);
    if (rc < 0)
        return rc;
    s_cached_t *slot = s_cache_slot(c);
    *slot = (s_cached_t){st, (int)q, rows, c->clock};
    *out = st;
    return 0;
}

/* The parameters of one execution, added in placeholder order. Each binding keeps its own copy
 * of an integer value and of a length, so callers may add expressions. The arrays are sized
 * once (the bindings point into them) and refilled from chunk to chunk. */
typedef struct {
    MYSQL_BIND *b;      /* the bindings */
    long long *v;       /* integer values, one per binding */
    unsigned long *len; /* lengths of strings and blobs, one per binding */
    size_t n, cap;      /* bindings added, room */
} s_params_t;

/* Makes room for cap bindings. */
static int s_params_init(s_params_t *p, size_t cap)
{
    p->b = calloc(cap, sizeof(*p->b));
    p->v = calloc(cap, sizeof(*p->v));
    p->len = calloc(cap, sizeof(*p->len));
    p->n = 0;
    p->cap = cap;
    return p->b && p->v && p->len ? 0 : -ENOMEM;
}

/* Room for a batch of n items whose widest row has cols columns: one chunk of rows, and at
 * least a full IN list. */
static size_t s_params_room(size_t n, size_t cols)
{
    size_t rows = n < S_CHUNK ? n : S_CHUNK;
    return rows * cols > S_CHUNK ? rows * cols : S_CHUNK;
}

/* Frees the arrays (NULL ones too). */
static void s_params_free(s_params_t *p)
{
    free(p->b);
    free(p->v);
    free(p->len);
    memset(p, 0, sizeof(*p));
}

/* Adds a 64-bit integer. */
static void s_add_i64(s_params_t *p, long long v)
{
    assert(p->n < p->cap);
    p->v[p->n] = v;
    s_bind_i64(&p->b[p->n], &p->v[p->n]);
    p->n++;
}

/* Adds a string (it must outlive the execution). */
static void s_add_str(s_params_t *p, const char *str)
{
    assert(p->n < p->cap);
    s_bind_str(&p->b[p->n], str, &p->len[p->n]);
    p->n++;
}

/* Adds len bytes of binary data (they must outlive the execution). */
static void s_add_blob(s_params_t *p, const void *data, unsigned long len)
{
    assert(p->n < p->cap);
    s_bind_blob(&p->b[p->n], data, len, &p->len[p->n]);
    p->n++;
}

/* Adds a NULL. */
static void s_add_null(s_params_t *p)
{
    assert(p->n < p->cap);
    memset(&p->b[p->n], 0, sizeof(p->b[p->n]));
    p->b[p->n].buffer_type = MYSQL_TYPE_NULL;
    p->n++;
}

/* Binds the parameters p (exactly st's placeholders) and executes st. */
static int s_bind_exec(store_t *s, MYSQL_STMT *st, s_params_t *p, const char *what)
{
    assert(p->n == mysql_stmt_param_count(st));
    if ((p->n > 0 && mysql_stmt_bind_param(st, p->b) != 0) || mysql_stmt_execute(st) != 0)
        return s_stmt_fail(s, st, what);
    return 0;
}

/* Executes the kept statement q for rows rows with the parameters p; *out (may be NULL) gets
 * the statement, to read its result. */
static int s_exec_q(store_t *s, s_q_t q, size_t rows, s_params_t *p, MYSQL_STMT **out)
{
    MYSQL_STMT *st;
    int rc = s_prepared(s, q, rows, &st);
    if (rc == 0)
        rc = s_bind_exec(s, st, p, s_sql[q].what);
    if (rc == 0 && out)
        *out = st;
    return rc;
}

/* Buffers the result of an executed query and binds its columns to c; the caller frees the
 * result (mysql_stmt_free_result), whatever this returns, before the statement runs again. */
static int s_result(store_t *s, MYSQL_STMT *st, s_cols_t *c, const char *what)
{
    if (mysql_stmt_store_result(st) != 0 || mysql_stmt_bind_result(st, c->res) != 0)
        return s_stmt_fail(s, st, what);
    return 0;
}

/* A key of a batch: a request id, a user id or an agent id, zero-padded to one size so that
 * one comparison orders them all. */
typedef struct {
    unsigned char b[STORE_AGENT_ID_MAX + 1]; /* the largest: an agent id and its NUL */
} s_key_t;

/* What the keys of an s_keys_t are. */
typedef enum { S_KEY_REQ, S_KEY_USER, S_KEY_AGENT } s_key_kind_t;

/* The distinct keys of one kind in a batch, sorted: items find theirs by binary search, and
 * statements take them as IN lists. What a batch learns about a key lives in an array
 * parallel to this one (the key's index). */
typedef struct {
    s_key_kind_t kind; /* what the keys are */
    s_key_t *k;        /* the keys; sorted and distinct once s_keys_sort ran */
    size_t n;          /* how many */
} s_keys_t;

/* The key of a request id. */
static s_key_t s_key_req(const uint8_t id[16])
{
    s_key_t k;
    memset(&k, 0, sizeof(k));
    memcpy(k.b, id, 16);
    return k;
}

/* The key of a user id. */
static s_key_t s_key_user(long long id)
{
    s_key_t k;
    memset(&k, 0, sizeof(k));
    memcpy(k.b, &id, sizeof(id));
    return k;
}

/* The key of an agent id (NUL-terminated, at most STORE_AGENT_ID_MAX bytes). */
static s_key_t s_key_agent(const char *id)
{
    s_key_t k;
    memset(&k, 0, sizeof(k));
    memcpy(k.b, id, strnlen(id, STORE_AGENT_ID_MAX));
    return k;
}

/* The user id of a S_KEY_USER key. */
static long long s_key_user_id(const s_key_t *k)
{
    long long id;
    memcpy(&id, k->b, sizeof(id));
    return id;
}

/* Makes room for cap keys of one kind. */
static int s_keys_init(s_keys_t *ks, s_key_kind_t kind, size_t cap)
{
    ks->kind = kind;
    ks->n = 0;
    ks->k = malloc((cap ? cap : 1) * sizeof(*ks->k));
    return ks->k ? 0 : -ENOMEM;
}

/* Adds a key (duplicates go at s_keys_sort). */
static void s_keys_add(s_keys_t *ks, s_key_t k)
{
    ks->k[ks->n++] = k;
}

/* Orders two keys. */
static int s_key_cmp(const void *a, const void *b)
{
    return memcmp(a, b, sizeof(s_key_t));
}

/* Sorts the keys and drops duplicates. */
static void s_keys_sort(s_keys_t *ks)
{
    if (ks->n == 0)
        return;
    qsort(ks->k, ks->n, sizeof(*ks->k), s_key_cmp);
    size_t m = 1;
    for (size_t i = 1; i < ks->n; i++) {
        if (s_key_cmp(&ks->k[i], &ks->k[m - 1]) != 0)
            ks->k[m++] = ks->k[i];
    }
    ks->n = m;
}

/* The index of key k, or SIZE_MAX if it is not there. */
static size_t s_keys_find(const s_keys_t *ks, s_key_t k)
{
    const s_key_t *hit = bsearch(&k, ks->k, ks->n, sizeof(*ks->k), s_key_cmp);
    return hit ? (size_t)(hit - ks->k) : SIZE_MAX;
}

/* Adds key i of ks as a parameter. */
static void s_add_key(s_params_t *p, const s_keys_t *ks, size_t i)
{
    const s_key_t *k = &ks->k[i];
    switch (ks->kind) {
    case S_KEY_REQ:
        s_add_blob(p, k->b, 16);
        break;
    case S_KEY_USER:
        s_add_i64(p, s_key_user_id(k));
        break;
    case S_KEY_AGENT:
        s_add_str(p, (const char *)k->b);
        break;
    }
}

/* The smallest power of two >= n (n <= S_CHUNK). */
static size_t s_pow2(size_t n)
{
    size_t r = 1;
    while (r < n)
        r *= 2;
    return r;
}

/* Runs IN-list statement q over every key of ks, S_CHUNK keys at a time. For a query, each
 * result row is read into c and each(arg) is called; for a change, c and each are NULL. */
static int s_for_keys(store_t *s, s_q_t q, const s_keys_t *ks, s_params_t *p, s_cols_t *c,
                      int (*each)(void *arg), void *arg)
{
    const char *what = s_sql[q].what;
    int rc = 0;
    for (size_t off = 0; rc == 0 && off < ks->n; off += S_CHUNK) {
        size_t k = ks->n - off < S_CHUNK ? ks->n - off : S_CHUNK;
        size_t rows = s_pow2(k);
        p->n = 0;
        for (size_t i = 0; i < rows; i++) /* the padding repeats the last key */
            s_add_key(p, ks, off + (i < k ? i : k - 1));
        MYSQL_STMT *st;
        rc = s_exec_q(s, q, rows, p, &st);
        if (rc < 0 || !c)
            continue;
        rc = s_result(s, st, c, what);
        while (rc == 0 && (rc = s_cols_fetch(s, st, c, what)) == 0)
            rc = each(arg);
        if (rc == 1)
            rc = 0;
        mysql_stmt_free_result(st);
    }
    return rc;
}

/* Runs row statement q for count rows, S_CHUNK at a time: add(arg, p, i) adds row i. A
 * statement of up to S_KEEP_ROWS rows is kept prepared; a longer one is prepared for this call
 * only (its full chunks share it): the server keeps some 3 to 9 KB per row of one, 1.2 MB for
 * 128 ledger rows, too much to keep every length a batch may have. */
static int s_for_rows(store_t *s, s_q_t q, size_t count, s_params_t *p,
                      void (*add)(void *arg, s_params_t *p, size_t i), void *arg)
{
    MYSQL_STMT *own = NULL; /* prepared for own_rows > S_KEEP_ROWS rows, closed here */
    size_t own_rows = 0;
    int rc = 0;
    for (size_t off = 0; rc == 0 && off < count; off += S_CHUNK) {
        size_t k = count - off < S_CHUNK ? count - off : S_CHUNK;
        p->n = 0;
        for (size_t i = 0; i < k; i++)
            add(arg, p, off + i);
        if (k <= S_KEEP_ROWS) {
            rc = s_exec_q(s, q, k, p, NULL);
            continue;
        }
        if (own_rows != k) {
            if (own)
                mysql_stmt_close(own);
            own = NULL;
            rc = s_prepare_q(s, q, k, &own);
            own_rows = rc == 0 ? k : 0;
        }
        if (rc == 0)
            rc = s_bind_exec(s, own, p, s_sql[q].what);
    }
    if (own)
        mysql_stmt_close(own);
    return rc;
}

/* Running totals of a batch per key (a user's debits, an agent's credits), as the rows of one
 * upsert that adds them. A total that would overflow starts another row for the same key: the
 * rows apply in order, so the database sees the same sums, and the same out-of-range errors,
 * as it would item by item (the amounts of one kind all have one sign). */
typedef struct {
    size_t *key;  /* row -> the key's index */
    long long *v; /* row -> its total */
    size_t n;     /* rows */
    size_t *cur;  /* key -> its row being added to, or SIZE_MAX */
} s_sums_t;

/* Makes room for up to rows rows over n_keys keys. */
static int s_sums_init(s_sums_t *t, size_t rows, size_t n_keys)
{
    t->key = malloc((rows ? rows : 1) * sizeof(*t->key));
    t->v = malloc((rows ? rows : 1) * sizeof(*t->v));
    t->cur = malloc((n_keys ? n_keys : 1) * sizeof(*t->cur));
    t->n = 0;
    if (!t->key || !t->v || !t->cur)
        return -ENOMEM;
    for (size_t i = 0; i < n_keys; i++)
        t->cur[i] = SIZE_MAX;
    return 0;
}

/* Frees the arrays. */
static void s_sums_free(s_sums_t *t)
{
    free(t->key);
    free(t->v);
    free(t->cur);
    memset(t, 0, sizeof(*t));
}

/* Adds v to the total of key (one row per call at most: room for one row per item). */
static void s_sums_add(s_sums_t *t, size_t key, long long v)
{
    size_t r = t->cur[key];
    long long sum;
    if (r != SIZE_MAX && !__builtin_add_overflow(t->v[r], v, &sum)) {
        t->v[r] = sum;
        return;
    }
    r = t->n++;
    t->key[r] = key;
    t->v[r] = v;
    t->cur[key] = r;
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

/* What a batch of holds knows about one of its requests. */
typedef struct {
    bool found;      /* its hold was in the table before the batch */
    bool placed;     /* it has a hold: found, or placed by an earlier item of the batch */
    int state;       /* that hold's state (STORE_HOLD_*) */
    long long owner; /* that hold's user; for a new request, its first item's */
} s_hold_req_t;

/* What a batch of holds knows about one of its users. */
typedef struct {
    bool exists;         /* the users table has it */
    store_purse_t purse; /* balance and active holds, read with locks, then kept in memory */
} s_hold_user_t;

/* One store_holds_place call. */
typedef struct {
    const store_hold_t *h; /* the batch */
    size_t n;              /* its size */
    s_keys_t reqs;         /* its distinct requests */
    s_hold_req_t *req;     /* per request */
    s_keys_t users;        /* the users whose purses it reads */
    s_hold_user_t *user;   /* per user */
    size_t *fresh;         /* the items that place a new hold, in order */
    size_t n_fresh;        /* how many */
    long long now;         /* created_at of the new holds */
    s_params_t p;          /* statement parameters */
    s_cols_t cols;         /* result columns of the query running */
    uint8_t col_req[16];   /* ... a request id column */
    long long col_v[2];    /* ... integer columns */
} s_hb_t;

/* Collects the batch's requests, each with its first item's user as owner until the table
 * says otherwise. */
static int s_hb_init(s_hb_t *b, const store_hold_t *h, size_t n)
{
    memset(b, 0, sizeof(*b));
    b->h = h;
    b->n = n;
    b->now = store_now_ms();
    int rc = s_keys_init(&b->reqs, S_KEY_REQ, n);
    if (rc == 0)
        rc = s_params_init(&b->p, s_params_room(n, 6));
    b->fresh = malloc(n * sizeof(*b->fresh));
    if (rc < 0 || !b->fresh)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        s_keys_add(&b->reqs, s_key_req(h[i].req_id));
    s_keys_sort(&b->reqs);
    b->req = calloc(b->reqs.n, sizeof(*b->req));
    if (!b->req)
        return -ENOMEM;
    for (size_t i = n; i-- > 0;) /* backwards: the first item's user is written last */
        b->req[s_keys_find(&b->reqs, s_key_req(h[i].req_id))].owner = h[i].user_id;
    return 0;
}

/* Frees what s_hb_init and the steps allocated. */
static void s_hb_free(s_hb_t *b)
{
    free(b->reqs.k);
    free(b->req);
    free(b->users.k);
    free(b->user);
    free(b->fresh);
    s_params_free(&b->p);
}

/* A row of S_Q_HOLD_FIND: a request of the batch that has a hold already. */
static int s_hb_found(void *arg)
{
    s_hb_t *b = arg;
    size_t r = s_keys_find(&b->reqs, s_key_req(b->col_req));
    if (r != SIZE_MAX)
        b->req[r] = (s_hold_req_t){true, true, (int)b->col_v[1], b->col_v[0]};
    return 0;
}

/* Reads the holds the batch's requests have already (a plain read: were the same request
 * placed by two connections at once, the primary key fails the later batch, -EEXIST, instead
 * of granting twice). */
static int s_hb_find(store_t *s, s_hb_t *b)
{
    memset(&b->cols, 0, sizeof(b->cols));
    s_col_blob(&b->cols, b->col_req, 16);
    s_col_i64(&b->cols, &b->col_v[0], false);
    s_col_i64(&b->cols, &b->col_v[1], false);
    return s_for_keys(s, S_Q_HOLD_FIND, &b->reqs, &b->p, &b->cols, s_hb_found, b);
}

/* Collects the owners of the batch's requests: the users whose purses it reads. */
static int s_hb_users(s_hb_t *b)
{
    int rc = s_keys_init(&b->users, S_KEY_USER, b->reqs.n);
    if (rc < 0)
        return rc;
    for (size_t r = 0; r < b->reqs.n; r++)
        s_keys_add(&b->users, s_key_user(b->req[r].owner));
    s_keys_sort(&b->users);
    b->user = calloc(b->users.n, sizeof(*b->user));
    if (!b->user)
        return -ENOMEM;
    for (size_t u = 0; u < b->users.n; u++)
        b->user[u].purse.user_id = s_key_user_id(&b->users.k[u]);
    return 0;
}

/* A row of S_Q_BALANCES: a user's balance (its foreign key says the user exists). */
static int s_hb_balance(void *arg)
{
    s_hb_t *b = arg;
    size_t u = s_keys_find(&b->users, s_key_user(b->col_v[0]));
    if (u != SIZE_MAX) {
        b->user[u].purse.balance = b->col_v[1];
        b->user[u].exists = true;
    }
    return 0;
}

/* A row of S_Q_USER_IDS: a user that exists. */
static int s_hb_user_exists(void *arg)
{
    s_hb_t *b = arg;
    size_t u = s_keys_find(&b->users, s_key_user(b->col_v[0]));
    if (u != SIZE_MAX)
        b->user[u].exists = true;
    return 0;
}

/* A row of S_Q_HELD: a user's active holds. */
static int s_hb_held(void *arg)
{
    s_hb_t *b = arg;
    size_t u = s_keys_find(&b->users, s_key_user(b->col_v[0]));
    if (u != SIZE_MAX)
        b->user[u].purse.held = b->col_v[1];
    return 0;
}

/* Checks that the users of new holds exist: -ENOENT, for the first item that names one that
 * does not. Only users without a money row are looked up (the others exist: the row's
 * foreign key), so a batch of users with money costs no statement here. */
static int s_hb_exist(store_t *s, s_hb_t *b)
{
    s_keys_t unknown = {S_KEY_USER, NULL, 0};
    int rc = s_keys_init(&unknown, S_KEY_USER, b->users.n);
    for (size_t u = 0; rc == 0 && u < b->users.n; u++) {
        if (!b->user[u].exists)
            s_keys_add(&unknown, b->users.k[u]); /* stays sorted */
    }
    memset(&b->cols, 0, sizeof(b->cols));
    s_col_i64(&b->cols, &b->col_v[0], false);
    if (rc == 0)
        rc = s_for_keys(s, S_Q_USER_IDS, &unknown, &b->p, &b->cols, s_hb_user_exists, b);
    free(unknown.k);
    for (size_t i = 0; rc == 0 && i < b->n; i++) {
        const s_hold_req_t *q = &b->req[s_keys_find(&b->reqs, s_key_req(b->h[i].req_id))];
        if (!q->found && !b->user[s_keys_find(&b->users, s_key_user(q->owner))].exists) {
            store_set_error(s, "hold: no user with id %lld", q->owner);
            rc = -ENOENT;
        }
    }
    return rc;
}

/* Reads the users' purses with locking reads, so that a settlement on another connection
 * cannot change them before this batch commits (a user without a money row has 0, and the
 * gap is locked all the same), and checks on the way that the users exist. */
static int s_hb_purses(store_t *s, s_hb_t *b)
{
    memset(&b->cols, 0, sizeof(b->cols));
    s_col_i64(&b->cols, &b->col_v[0], false);
    s_col_i64(&b->cols, &b->col_v[1], false);
    int rc = s_for_keys(s, S_Q_BALANCES, &b->users, &b->p, &b->cols, s_hb_balance, b);
    if (rc == 0)
        rc = s_hb_exist(s, b);
    memset(&b->cols, 0, sizeof(b->cols));
    s_col_i64(&b->cols, &b->col_v[0], false);
    s_col_i64(&b->cols, &b->col_v[1], false);
    if (rc == 0)
        rc = s_for_keys(s, S_Q_HELD, &b->users, &b->p, &b->cols, s_hb_held, b);
    return rc;
}

/* Decides every item in order, in memory: a request with a hold (found, or placed by an earlier
 * item) gets that hold's outcome; a new one is granted by the purse rule and goes to the list
 * of holds to write. */
static void s_hb_decide(s_hb_t *b, int *results, int64_t *available)
{
    for (size_t i = 0; i < b->n; i++) {
        const store_hold_t *h = &b->h[i];
        s_hold_req_t *q = &b->req[s_keys_find(&b->reqs, s_key_req(h->req_id))];
        store_purse_t *p = &b->user[s_keys_find(&b->users, s_key_user(q->owner))].purse;
        if (q->placed) {
            results[i] = q->state != STORE_HOLD_REFUSED;
        } else {
            results[i] = store_purse_hold(p, h->amount);
            q->placed = true;
            q->state = results[i] ? STORE_HOLD_ACTIVE : STORE_HOLD_REFUSED;
            b->fresh[b->n_fresh++] = i;
        }
        if (available)
            available[i] = store_purse_left(p);
    }
}

/* Adds the parameters of new hold j (s_for_rows). */
static void s_hb_row(void *arg, s_params_t *p, size_t j)
{
    s_hb_t *b = arg;
    const store_hold_t *h = &b->h[b->fresh[j]];
    s_add_blob(p, h->req_id, 16);
    s_add_i64(p, h->user_id);
    s_add_i64(p, h->amount);
    s_add_i64(p, b->now);
    s_add_i64(p, h->expires_at);
    s_add_i64(p, b->req[s_keys_find(&b->reqs, s_key_req(h->req_id))].state);
}

/* Places a batch of holds in one transaction (see store.h): reads the requests' holds, the
 * users and their purses for the whole batch, decides item by item in memory, and writes the
 * new holds with multi-row INSERTs. */
static int s_holds_place(store_t *s, const store_hold_t *holds, size_t n, int *results,
                         int64_t *available)
{
    s_hb_t b;
    int rc = s_hb_init(&b, holds, n);
    if (rc == 0)
        rc = s_begin(s);
    if (rc < 0) {
        s_hb_free(&b);
        return rc;
    }
    rc = s_hb_find(s, &b);
    if (rc == 0)
        rc = s_hb_users(&b);
    if (rc == 0)
        rc = s_hb_purses(s, &b);
    if (rc == 0) {
        s_hb_decide(&b, results, available);
        rc = s_for_rows(s, S_Q_HOLD_INSERT, b.n_fresh, &b.p, s_hb_row, &b);
    }
    s_hb_free(&b);
    return s_end_tx(s, rc);
}

/* Reads one hold. */
static int s_hold_get(store_t *s, const uint8_t req_id[16], store_hold_t *out)
{
    MYSQL_BIND key;
    unsigned long key_len;
    s_bind_blob(&key, req_id, 16, &key_len);
    long long v[5] = {0};
    s_cols_t cols;
    memset(&cols, 0, sizeof(cols));
    for (int i = 0; i < 5; i++)
        s_col_i64(&cols, &v[i], false);
    MYSQL_STMT *st;
    int rc = s_prepared(s, S_Q_HOLD_GET, 0, &st);
    if (rc == 0 && mysql_stmt_bind_param(st, &key) != 0)
        rc = s_stmt_fail(s, st, "hold get");
    if (rc == 0)
        rc = s_run_row(s, st, &cols, "hold get");
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

/* One store_usage_put call. */
typedef struct {
    const store_usage_t *u; /* the batch */
    size_t n;               /* its size */
    s_keys_t reqs;          /* its distinct requests */
    bool *settled;          /* per request: settled already */
    size_t *keep;           /* the reports to store (of unsettled requests), in order */
    size_t n_keep;          /* how many */
    s_params_t p;           /* statement parameters */
    s_cols_t cols;          /* result columns */
    uint8_t col_req[16];    /* ... a request id */
} s_ub_t;

/* A row of S_Q_REPORT_SETTLED: a reported request that is settled. */
static int s_ub_settled(void *arg)
{
    s_ub_t *b = arg;
    size_t r = s_keys_find(&b->reqs, s_key_req(b->col_req));
    if (r != SIZE_MAX)
        b->settled[r] = true;
    return 0;
}

/* Adds the parameters of report j to keep (s_for_rows). */
static void s_ub_row(void *arg, s_params_t *p, size_t j)
{
    s_ub_t *b = arg;
    const store_usage_t *r = &b->u[b->keep[j]];
    s_add_blob(p, r->req_id, 16);
    s_add_str(p, r->source);
    s_add_i64(p, r->attempt);
    s_add_str(p, r->agent_id);
    s_add_i64(p, r->user_id);
    s_add_str(p, r->model);
    s_add_i64(p, r->status);
    s_add_i64(p, r->delivered);
    s_add_i64(p, r->complete);
    s_add_i64(p, r->estimated);
    s_add_i64(p, r->input_tokens);
    s_add_i64(p, r->cached_tokens);
    s_add_i64(p, r->output_tokens);
    s_add_i64(p, r->received_at);
}

/* Reads which of the batch's requests are settled (shared locks, as INSERT ... SELECT would
 * take: a settlement committing meanwhile is waited for, then seen) and lists the reports to
 * store. */
static int s_ub_filter(store_t *s, s_ub_t *b)
{
    memset(&b->cols, 0, sizeof(b->cols));
    s_col_blob(&b->cols, b->col_req, 16);
    int rc = s_for_keys(s, S_Q_REPORT_SETTLED, &b->reqs, &b->p, &b->cols, s_ub_settled, b);
    for (size_t i = 0; rc == 0 && i < b->n; i++) {
        if (!b->settled[s_keys_find(&b->reqs, s_key_req(b->u[i].req_id))])
            b->keep[b->n_keep++] = i;
    }
    return rc;
}

/* Stores a batch of usage reports in one transaction: a report of a settled request is
 * dropped, a re-sent one (same key, even within the batch) left as it was by the no-op
 * ON DUPLICATE KEY UPDATE. Not INSERT IGNORE, which would also turn other errors into
 * warnings. */
static int s_usage_put(store_t *s, const store_usage_t *u, size_t n)
{
    s_ub_t b;
    memset(&b, 0, sizeof(b));
    b.u = u;
    b.n = n;
    int rc = s_keys_init(&b.reqs, S_KEY_REQ, n);
    b.keep = malloc(n * sizeof(*b.keep));
    if (rc == 0 && b.keep) {
        for (size_t i = 0; i < n; i++)
            s_keys_add(&b.reqs, s_key_req(u[i].req_id));
        s_keys_sort(&b.reqs);
        b.settled = calloc(b.reqs.n, sizeof(*b.settled));
        rc = b.settled ? s_params_init(&b.p, s_params_room(n, 14)) : -ENOMEM;
    } else {
        rc = -ENOMEM;
    }
    if (rc == 0 && (rc = s_begin(s)) == 0) {
        rc = s_ub_filter(s, &b);
        if (rc == 0)
            rc = s_for_rows(s, S_Q_REPORT_INSERT, b.n_keep, &b.p, s_ub_row, &b);
        rc = s_end_tx(s, rc);
    }
    free(b.reqs.k);
    free(b.settled);
    free(b.keep);
    s_params_free(&b.p);
    return rc;
}

/* A usage row and its column bindings. */
typedef struct {
    store_usage_t u; /* the row */
    long long v[11]; /* attempt, user_id, status, delivered, complete, estimated, input, cached,
                        output, received_at */
    s_cols_t cols;   /* see S_USAGE_COLS */
} s_usage_row_t;

/* Reads the rows of an executed usage query (S_USAGE_COLS) into a malloc'd array. */
static int s_usage_rows(store_t *s, MYSQL_STMT *st, const char *what, store_usage_t **out,
                        size_t *n)
{
    void *arr = NULL;
    size_t count = 0, cap = 0;
    s_usage_row_t *r = malloc(sizeof(*r));
    int rc = r ? 0 : -ENOMEM;
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
    s_params_t p;
    int rc = s_params_init(&p, 1);
    if (rc == 0) {
        s_add_i64(&p, (long long)limit);
        MYSQL_STMT *st;
        rc = s_exec_q(s, S_Q_USAGE_PENDING, 0, &p, &st);
        if (rc == 0) {
            if (mysql_stmt_store_result(st) != 0)
                rc = s_stmt_fail(s, st, "usage pending");
            if (rc == 0)
                rc = s_usage_rows(s, st, "usage pending", out, n);
            mysql_stmt_free_result(st);
        }
    }
    s_params_free(&p);
    return rc;
}

/* Every stored report of one request, ordered by source, attempt. */
static int s_usage_of(store_t *s, const uint8_t req_id[16], store_usage_t **out, size_t *n)
{
    MYSQL_BIND b;
    unsigned long len;
    s_bind_blob(&b, req_id, 16, &len);
    MYSQL_STMT *st = NULL;
    int rc = s_exec(s, "usage of", S_USAGE_COLS " WHERE r.req_id = ? ORDER BY r.source, r.attempt",
                    &b, &st);
    if (rc < 0)
        return rc;
    rc = s_usage_rows(s, st, "usage of", out, n);
    mysql_stmt_close(st);
    return rc;
}

/* An agent's chain head as a batch of settlements moves it. */
typedef struct {
    long long seq;                 /* last_seq: 0 before the first row */
    uint8_t hash[LEDGER_HASH_LEN]; /* last_hash: zeros before the first row */
} s_head_t;

/* One store_settle call. */
typedef struct {
    const store_settle_t *it;               /* the batch */
    size_t n;                               /* its size */
    s_keys_t reqs;                          /* its distinct requests */
    bool *settled;                          /* per request: in the table, or by an earlier item */
    s_keys_t users;                         /* the users of its BILLED items */
    bool *exists;                           /* per user: the users table has it */
    s_keys_t agents;                        /* the agents of its BILLED items */
    s_head_t *head;                         /* per agent: its chain head, moved by each row */
    size_t *billed;                         /* the BILLED items in order: the rows to append */
    size_t n_billed;                        /* how many */
    s_sums_t debits;                        /* per user: what its balance gains (<= 0) */
    s_sums_t credits;                       /* per agent: what its account gains (>= 0) */
    s_params_t p;                           /* statement parameters */
    s_cols_t cols;                          /* result columns */
    uint8_t col_req[16];                    /* ... a request id */
    char col_agent[STORE_AGENT_ID_MAX + 1]; /* ... an agent id */
    long long col_v;                        /* ... an integer */
    uint8_t col_hash[LEDGER_HASH_LEN];      /* ... a hash */
} s_sb_t;

/* Collects the batch's requests, and the users and agents of its BILLED items. */
static int s_sb_init(s_sb_t *b, const store_settle_t *it, size_t n)
{
    memset(b, 0, sizeof(*b));
    b->it = it;
    b->n = n;
    if (s_keys_init(&b->reqs, S_KEY_REQ, n) < 0 || s_keys_init(&b->users, S_KEY_USER, n) < 0 ||
        s_keys_init(&b->agents, S_KEY_AGENT, n) < 0)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        s_keys_add(&b->reqs, s_key_req(it[i].req_id));
        if (it[i].outcome == STORE_OUTCOME_BILLED) {
            s_keys_add(&b->users, s_key_user(it[i].user_id));
            s_keys_add(&b->agents, s_key_agent(it[i].row.agent_id));
        }
    }
    s_keys_sort(&b->reqs);
    s_keys_sort(&b->users);
    s_keys_sort(&b->agents);
    b->settled = calloc(b->reqs.n, sizeof(*b->settled));
    b->exists = calloc(b->users.n ? b->users.n : 1, sizeof(*b->exists));
    b->head = calloc(b->agents.n ? b->agents.n : 1, sizeof(*b->head));
    b->billed = malloc(n * sizeof(*b->billed));
    if (!b->settled || !b->exists || !b->head || !b->billed ||
        s_sums_init(&b->debits, n, b->users.n) < 0 || s_sums_init(&b->credits, n, b->agents.n) < 0)
        return -ENOMEM;
    return s_params_init(&b->p, s_params_room(n, 19));
}

/* Frees what s_sb_init allocated. */
static void s_sb_free(s_sb_t *b)
{
    free(b->reqs.k);
    free(b->users.k);
    free(b->agents.k);
    free(b->settled);
    free(b->exists);
    free(b->head);
    free(b->billed);
    s_sums_free(&b->debits);
    s_sums_free(&b->credits);
    s_params_free(&b->p);
}

/* A row of S_Q_SETTLED: a request of the batch that is settled already. */
static int s_sb_settled(void *arg)
{
    s_sb_t *b = arg;
    size_t r = s_keys_find(&b->reqs, s_key_req(b->col_req));
    if (r != SIZE_MAX)
        b->settled[r] = true;
    return 0;
}

/* A row of S_Q_USER_IDS: a user that exists. */
static int s_sb_user_exists(void *arg)
{
    s_sb_t *b = arg;
    size_t u = s_keys_find(&b->users, s_key_user(b->col_v));
    if (u != SIZE_MAX)
        b->exists[u] = true;
    return 0;
}

/* A row of S_Q_HEADS: an agent's chain head. */
static int s_sb_head(void *arg)
{
    s_sb_t *b = arg;
    size_t a = s_keys_find(&b->agents, s_key_agent(b->col_agent));
    if (a != SIZE_MAX) {
        b->head[a].seq = b->col_v;
        memcpy(b->head[a].hash, b->col_hash, LEDGER_HASH_LEN);
    }
    return 0;
}

/* Reads what the batch depends on: which requests are settled (a plain read: one settled
 * meanwhile fails the settlement insert, -EALREADY), which users exist, and the agents' chain
 * heads (a locking read, so that no other writer moves a head before this commits; an agent
 * without an account is at seq 0, its gap locked all the same). */
static int s_sb_read(store_t *s, s_sb_t *b)
{
    memset(&b->cols, 0, sizeof(b->cols));
    s_col_blob(&b->cols, b->col_req, 16);
    int rc = s_for_keys(s, S_Q_SETTLED, &b->reqs, &b->p, &b->cols, s_sb_settled, b);
    memset(&b->cols, 0, sizeof(b->cols));
    s_col_i64(&b->cols, &b->col_v, false);
    if (rc == 0)
        rc = s_for_keys(s, S_Q_USER_IDS, &b->users, &b->p, &b->cols, s_sb_user_exists, b);
    memset(&b->cols, 0, sizeof(b->cols));
    s_col_text(&b->cols, b->col_agent, sizeof(b->col_agent));
    s_col_i64(&b->cols, &b->col_v, false);
    s_col_blob(&b->cols, b->col_hash, LEDGER_HASH_LEN);
    if (rc == 0)
        rc = s_for_keys(s, S_Q_HEADS, &b->agents, &b->p, &b->cols, s_sb_head, b);
    return rc;
}

/* Checks item i against what the batch has read and what its earlier items did, as the items
 * would meet the database one by one: settled already (-EALREADY), then a row that does not
 * follow its agent's head (-ESTALE), then an unknown user (-ENOENT). A BILLED item moves the
 * head and adds to its user's debit and its agent's credit. */
static int s_sb_check(store_t *s, s_sb_t *b, size_t i)
{
    const store_settle_t *it = &b->it[i];
    bool *settled = &b->settled[s_keys_find(&b->reqs, s_key_req(it->req_id))];
    if (*settled) {
        store_set_error(s, "settlement %zu: the request is settled already", i);
        return -EALREADY;
    }
    *settled = true; /* a second item of the request finds it settled */
    if (it->outcome != STORE_OUTCOME_BILLED)
        return 0;
    const ledger_row_t *r = &it->row;
    size_t a = s_keys_find(&b->agents, s_key_agent(r->agent_id));
    s_head_t *h = &b->head[a];
    if (r->seq != (uint64_t)h->seq + 1) {
        store_set_error(s, "settlement %zu: seq %llu of agent %s does not follow %lld", i,
                        (unsigned long long)r->seq, r->agent_id, h->seq);
        return -ESTALE;
    }
    if (memcmp(r->prev_hash, h->hash, LEDGER_HASH_LEN) != 0) {
        store_set_error(s,
                        "settlement %zu: prev_hash of agent %s seq %llu is not the hash of its "
                        "last row",
                        i, r->agent_id, (unsigned long long)r->seq);
        return -ESTALE;
    }
    size_t u = s_keys_find(&b->users, s_key_user(it->user_id));
    if (!b->exists[u]) {
        store_set_error(s, "settlement %zu: no user with id %lld", i, (long long)it->user_id);
        return -ENOENT;
    }
    h->seq = (long long)r->seq;
    memcpy(h->hash, r->hash, LEDGER_HASH_LEN);
    s_sums_add(&b->debits, u, -r->cost);
    s_sums_add(&b->credits, a, r->credit);
    b->billed[b->n_billed++] = i;
    return 0;
}

/* Adds the parameters of ledger row j (s_for_rows). */
static void s_sb_ledger_row(void *arg, s_params_t *p, size_t j)
{
    s_sb_t *b = arg;
    const ledger_row_t *r = &b->it[b->billed[j]].row;
    s_add_str(p, r->agent_id);
    s_add_i64(p, (long long)r->seq);
    s_add_blob(p, r->req_id, 16);
    s_add_i64(p, r->attempt);
    s_add_i64(p, r->user_id);
    s_add_str(p, r->model);
    s_add_i64(p, r->input_tokens);
    s_add_i64(p, r->cached_tokens);
    s_add_i64(p, r->output_tokens);
    s_add_i64(p, r->estimated);
    s_add_i64(p, r->cost);
    s_add_i64(p, r->fee);
    s_add_i64(p, r->credit);
    s_add_i64(p, r->hold);
    s_add_i64(p, r->price_from);
    s_add_i64(p, r->fee_ppm);
    s_add_i64(p, r->created_ms);
    s_add_blob(p, r->prev_hash, LEDGER_HASH_LEN);
    s_add_blob(p, r->hash, LEDGER_HASH_LEN);
}

/* Adds the parameters of debit row j: a user and what its balance gains (s_for_rows). The
 * balance may go below zero: what a request cost beyond its hold is still charged. A user
 * without a money row gets one. */
static void s_sb_debit_row(void *arg, s_params_t *p, size_t j)
{
    s_sb_t *b = arg;
    s_add_i64(p, s_key_user_id(&b->users.k[b->debits.key[j]]));
    s_add_i64(p, b->debits.v[j]);
}

/* Adds the parameters of credit row j: an agent, its credit and its new head (s_for_rows). */
static void s_sb_credit_row(void *arg, s_params_t *p, size_t j)
{
    s_sb_t *b = arg;
    size_t a = b->credits.key[j];
    s_add_str(p, (const char *)b->agents.k[a].b);
    s_add_i64(p, b->credits.v[j]);
    s_add_i64(p, b->head[a].seq);
    s_add_blob(p, b->head[a].hash, LEDGER_HASH_LEN);
}

/* Adds the parameters of settlement j (s_for_rows): a BILLED one names its ledger row. */
static void s_sb_settle_row(void *arg, s_params_t *p, size_t j)
{
    s_sb_t *b = arg;
    const store_settle_t *it = &b->it[j];
    s_add_blob(p, it->req_id, 16);
    s_add_i64(p, it->outcome);
    s_add_i64(p, it->user_id);
    if (it->outcome == STORE_OUTCOME_BILLED) {
        s_add_str(p, it->row.agent_id);
        s_add_i64(p, (long long)it->row.seq);
    } else {
        s_add_null(p);
        s_add_null(p);
    }
    s_add_i64(p, it->settled_at);
}

/* Writes a checked batch: the ledger rows, one debit per user and one credit per agent, the
 * holds released, the reports dropped, the settlements recorded. */
static int s_sb_write(store_t *s, s_sb_t *b)
{
    int rc = s_for_rows(s, S_Q_LEDGER_INSERT, b->n_billed, &b->p, s_sb_ledger_row, b);
    if (rc == -EEXIST) { /* another writer appended meanwhile */
        store_set_error(s, "settlement: a row of this batch exists already in its agent's chain");
        return -ESTALE;
    }
    if (rc == 0)
        rc = s_for_rows(s, S_Q_DEBIT, b->debits.n, &b->p, s_sb_debit_row, b);
    if (rc == 0)
        rc = s_for_rows(s, S_Q_CREDIT, b->credits.n, &b->p, s_sb_credit_row, b);
    if (rc == 0)
        rc = s_for_keys(s, S_Q_HOLD_RELEASE, &b->reqs, &b->p, NULL, NULL, NULL);
    if (rc == 0)
        rc = s_for_keys(s, S_Q_REPORT_DROP, &b->reqs, &b->p, NULL, NULL, NULL);
    if (rc < 0)
        return rc;
    rc = s_for_rows(s, S_Q_SETTLE_INSERT, b->n, &b->p, s_sb_settle_row, b);
    if (rc == -EEXIST) { /* settled by another writer after this transaction's snapshot */
        store_set_error(s, "settlement: a request of this batch is settled already");
        rc = -EALREADY;
    }
    return rc;
}

/* Settles a batch in one transaction (see store.h): reads what it depends on for the whole
 * batch, checks the items in order in memory, then writes them with a few statements. Any
 * failure rolls all of it back. */
static int s_settle(store_t *s, const store_settle_t *items, size_t n)
{
    s_sb_t b;
    int rc = s_sb_init(&b, items, n);
    if (rc == 0 && (rc = s_begin(s)) == 0) {
        rc = s_sb_read(s, &b);
        for (size_t i = 0; rc == 0 && i < n; i++)
            rc = s_sb_check(s, &b, i);
        if (rc == 0)
            rc = s_sb_write(s, &b);
        rc = s_end_tx(s, rc);
    }
    s_sb_free(&b);
    return rc;
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
    s_params_t p;
    int rc = s_params_init(&p, 3);
    MYSQL_STMT *st = NULL;
    if (rc == 0) {
        s_add_str(&p, agent_id);
        s_add_i64(&p, (long long)from_seq);
        s_add_i64(&p, (long long)limit);
        rc = s_exec_q(s, S_Q_LEDGER_RANGE, 0, &p, &st);
    }
    if (rc == 0 && mysql_stmt_store_result(st) != 0)
        rc = s_stmt_fail(s, st, "ledger range");
    void *arr = NULL;
    size_t count = 0, cap = 0;
    s_ledger_row_t *x = rc == 0 ? malloc(sizeof(*x)) : NULL;
    if (rc == 0)
        rc = x ? s_ledger_bind(s, st, x) : -ENOMEM;
    while (rc == 0 && (rc = s_ledger_fetch(s, st, x)) == 0)
        rc = store_array_push(&arr, &count, &cap, &x->r, sizeof(x->r));
    free(x);
    if (st)
        mysql_stmt_free_result(st);
    s_params_free(&p);
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
    s_params_t p;
    int rc = s_params_init(&p, 3);
    if (rc == 0) {
        s_add_str(&p, agent_id);
        s_add_blob(&p, zeros, LEDGER_HASH_LEN);
        s_add_i64(&p, (long long)seq);
        rc = s_exec_q(s, S_Q_LEDGER_ACK, 0, &p, NULL);
    }
    s_params_free(&p);
    return rc;
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
    s_conn_t *c = calloc(1, sizeof(*c));
    MYSQL *my = c ? mysql_init(NULL) : NULL;
    if (!my) {
        free(c);
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
        free(c);
        store_mysql_url_free(&u);
        return s_errno(code);
    }
    store_mysql_url_free(&u);
    c->my = my;
    s->db = c;
    s->ops = &s_ops;
    return 0;
}
