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
 * would not guarantee under REPEATABLE READ. store_migrate takes another named lock, so two
 * processes starting together do not run the same DDL twice.
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
        return -ENOENT;
    case ER_LOCK_DEADLOCK:
    case ER_LOCK_WAIT_TIMEOUT:
        return -EBUSY;
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

/* Records the connection's error (what: the operation) and returns it as errno. */
static int s_fail(store_t *s, const char *what)
{
    unsigned int code = mysql_errno(S_MY(s));
    store_set_error(s, "%s: %s (%u)", what, mysql_error(S_MY(s)), code);
    return s_errno(code);
}

/* Records a statement's error (what: the operation) and returns it as errno. */
static int s_stmt_fail(store_t *s, MYSQL_STMT *st, const char *what)
{
    unsigned int code = mysql_stmt_errno(st);
    store_set_error(s, "%s: %s (%u)", what, mysql_stmt_error(st), code);
    return s_errno(code);
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

/* Ends the open transaction: COMMIT if rc is 0, else ROLLBACK (keeping the first error). */
static int s_end_tx(store_t *s, int rc)
{
    if (rc == 0)
        return s_query(s, "commit", "COMMIT");
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
