/* test_store: lib/store against both backends (agents; users and API keys).
 *
 * Group "store_common" needs no database. Groups "store_sqlite" and "store_mysql" run the same
 * cases against a fresh database each: SQLite in a temporary folder, MySQL in a database
 * named relayhub_test_<pid>_<random>_<n> that a root connection to RELAYHUB_TEST_MYSQL_URL
 * creates before each case and drops after it. Without that variable the MySQL group fails
 * (it does not skip): run this binary as `tests/with-servers PATH/TO/test_store`.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "bus_log.h"
#include "store.h"
#include "store_impl.h"

#include <errno.h>
#include <limits.h>
#include <mysql.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MYSQL_ENV "RELAYHUB_TEST_MYSQL_URL"

/* Per-group state. */
typedef struct {
    store_backend_t backend; /* backend of this group */
    store_mysql_url_t root;  /* MySQL: the parsed RELAYHUB_TEST_MYSQL_URL */
    MYSQL *admin;            /* MySQL: root connection that creates and drops databases */
    char prefix[64];         /* MySQL: relayhub_test_<pid>_<random> */
    unsigned counter;        /* MySQL: databases created so far */
} grp_t;

/* Per-test state: one fresh, empty database and an open store on it. */
typedef struct {
    grp_t *grp;             /* the group */
    char dir[PATH_MAX / 2]; /* SQLite: temporary folder */
    char path[PATH_MAX];    /* SQLite: database file in it */
    char db[80];            /* MySQL: database name */
    char url[1024];         /* MySQL: URL of that database */
    store_params_t params;  /* how to open it */
    store_t *s;             /* open store */
} fx_t;

/* ---- helpers ---------------------------------------------------------------------------- */

/* Percent-encodes everything in `in` but RFC 3986 unreserved characters. */
static void pct_encode(const char *in, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < cap; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
}

/* Builds a mysql:// URL for the group's server with the given user, password and db. */
static void mysql_url(const grp_t *g, const char *user, const char *pass, const char *db, char *out,
                      size_t cap)
{
    char u[256], p[256];
    pct_encode(user, u, sizeof(u));
    pct_encode(pass, p, sizeof(p));
    bool v6 = strchr(g->root.host, ':') != NULL;
    int n = snprintf(out, cap, "mysql://%s:%s@%s%s%s:%u/%s", u, p, v6 ? "[" : "", g->root.host,
                     v6 ? "]" : "", g->root.port, db);
    assert_true(n > 0 && (size_t)n < cap);
}

/* Runs one administrative statement on the root connection (test-made names only). */
static void admin_query(grp_t *g, const char *sql)
{
    if (mysql_query(g->admin, sql) != 0)
        fail_msg("mysql admin: %s: %s", sql, mysql_error(g->admin));
}

/* A deterministic test public key. */
static void make_key(uint8_t key[32], uint8_t seed)
{
    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)(seed * 31 + i * 7);
    key[0] = 0x00; /* a NUL and a 0xff byte must survive */
    key[31] = 0xff;
}

/* Current agents rev. */
static int64_t rev_of(store_t *s)
{
    int64_t rev = -1;
    assert_int_equal(store_agents_rev(s, &rev), 0);
    return rev;
}

/* Current users/keys rev. */
static int64_t keys_rev_of(store_t *s)
{
    int64_t rev = -1;
    assert_int_equal(store_keys_rev(s, &rev), 0);
    return rev;
}

/* A deterministic test key hash (what apikey_hash would give for some secret), distinct for
 * distinct seeds (bytes 2..5 hold the seed). */
static void make_hash(uint8_t h[32], uint32_t seed)
{
    for (int i = 0; i < 32; i++)
        h[i] = (uint8_t)(seed * 131 + (uint32_t)i * 17);
    h[1] = 0x00; /* a NUL and a 0xff byte must survive */
    h[30] = 0xff;
    for (int i = 0; i < 4; i++)
        h[2 + i] = (uint8_t)(seed >> (8 * i));
}

/* Number of compiled-in migrations of the fixture's backend. */
static size_t migration_count(const fx_t *fx)
{
    return fx->grp->backend == STORE_SQLITE ? store_migrations_sqlite_count
                                            : store_migrations_mysql_count;
}

/* Migrates the fixture's store (tests that need the schema). */
static void migrate(fx_t *fx)
{
    int n = store_migrate(fx->s);
    assert_true(n >= 1);
}

/* ---- group and test fixtures ------------------------------------------------------------ */

/* Group: SQLite. */
static int grp_sqlite_setup(void **state)
{
    grp_t *g = calloc(1, sizeof(*g));
    assert_non_null(g);
    g->backend = STORE_SQLITE;
    *state = g;
    return 0;
}

/* Group: MySQL: parses the URL, connects as root. Fails loudly without a server. */
static int grp_mysql_setup(void **state)
{
    const char *env = getenv(MYSQL_ENV);
    if (!env || !*env) {
        print_error("%s is not set: the MySQL tests need a MariaDB server.\n"
                    "Run them under tests/with-servers, e.g. "
                    "`tests/with-servers build/tests/unit/test_store`.\n",
                    MYSQL_ENV);
        return -1;
    }
    grp_t *g = calloc(1, sizeof(*g));
    assert_non_null(g);
    g->backend = STORE_MYSQL;
    char err[256];
    if (store_mysql_url_parse(env, &g->root, err, sizeof(err)) < 0) {
        print_error("%s: %s\n", MYSQL_ENV, err);
        free(g);
        return -1;
    }
    g->admin = mysql_init(NULL);
    unsigned int proto = MYSQL_PROTOCOL_TCP;
    mysql_options(g->admin, MYSQL_OPT_PROTOCOL, &proto);
    if (!mysql_real_connect(g->admin, g->root.host, g->root.user, g->root.password, NULL,
                            g->root.port, NULL, 0)) {
        print_error("cannot connect to %s as root: %s\n", MYSQL_ENV, mysql_error(g->admin));
        mysql_close(g->admin);
        store_mysql_url_free(&g->root);
        free(g);
        return -1;
    }
    uint32_t r = 0;
    assert_int_equal(getrandom(&r, sizeof(r), 0), (ssize_t)sizeof(r));
    snprintf(g->prefix, sizeof(g->prefix), "relayhub_test_%ld_%08x", (long)getpid(), r);
    *state = g;
    return 0;
}

/* Group teardown for both backends. */
static int grp_teardown(void **state)
{
    grp_t *g = *state;
    if (!g)
        return 0;
    if (g->admin)
        mysql_close(g->admin);
    store_mysql_url_free(&g->root);
    free(g);
    return 0;
}

/* Test: a fresh empty database and a store open on it. */
static int fx_setup(void **state)
{
    grp_t *g = *state;
    fx_t *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    fx->grp = g;
    fx->params.backend = g->backend;
    if (g->backend == STORE_SQLITE) {
        const char *tmp = getenv("TMPDIR");
        snprintf(fx->dir, sizeof(fx->dir), "%s/relayhub-store-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        assert_non_null(mkdtemp(fx->dir));
        snprintf(fx->path, sizeof(fx->path), "%s/hub.db", fx->dir);
        fx->params.sqlite_path = fx->path;
    } else {
        char sql[160];
        snprintf(fx->db, sizeof(fx->db), "%s_%u", g->prefix, ++g->counter);
        snprintf(sql, sizeof(sql), "CREATE DATABASE `%s` CHARACTER SET utf8mb4", fx->db);
        admin_query(g, sql);
        mysql_url(g, g->root.user, g->root.password, fx->db, fx->url, sizeof(fx->url));
        fx->params.mysql_url = fx->url;
    }
    char err[256];
    int rc = store_open(&fx->params, &fx->s, err, sizeof(err));
    if (rc < 0)
        fail_msg("store_open: %d %s", rc, err);
    *state = fx;
    return 0;
}

/* Test teardown: closes the store and removes the database. */
static int fx_teardown(void **state)
{
    fx_t *fx = *state;
    store_destroy(&fx->s);
    if (fx->grp->backend == STORE_SQLITE) {
        const char *suffixes[] = {"", "-wal", "-shm", "-journal", ".junk"};
        for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
            char p[PATH_MAX + 16];
            snprintf(p, sizeof(p), "%s%s", fx->path, suffixes[i]);
            unlink(p);
        }
        rmdir(fx->dir);
    } else {
        char sql[160];
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS `%s`", fx->db);
        admin_query(fx->grp, sql);
    }
    *state = fx->grp;
    free(fx);
    return 0;
}

/* ---- cases for both backends ------------------------------------------------------------ */

/* Empty database: version 0; migrate applies everything once, then nothing. */
static void t_migrate(void **state)
{
    fx_t *fx = *state;
    size_t count = fx->grp->backend == STORE_SQLITE ? store_migrations_sqlite_count
                                                    : store_migrations_mysql_count;
    int version = -1;
    assert_int_equal(store_schema_version(fx->s, &version), 0);
    assert_int_equal(version, 0);
    assert_int_equal(store_migrate(fx->s), (int)count);
    assert_int_equal(count, 3);
    assert_int_equal(store_schema_version(fx->s, &version), 0);
    assert_int_equal(version, (int)count);
    assert_int_equal(store_migrate(fx->s), 0);
    assert_int_equal(store_schema_version(fx->s, &version), 0);
    assert_int_equal(version, (int)count);
    int64_t rev = -1;
    assert_int_equal(store_agents_rev(fx->s, &rev), 0);
    assert_int_equal(rev, 0);
    rev = -1;
    assert_int_equal(store_keys_rev(fx->s, &rev), 0);
    assert_int_equal(rev, 0);
}

/* add / get / list / set_status, and rev moving on every change. */
static void t_agents(void **state)
{
    fx_t *fx = *state;
    migrate(fx);
    uint8_t ka[32], kb[32];
    make_key(ka, 1);
    make_key(kb, 2);
    int64_t r0 = rev_of(fx->s);
    assert_int_equal(store_agent_add(fx->s, "bbbb", "beta", kb, 1700000000), 0);
    int64_t r1 = rev_of(fx->s);
    assert_true(r1 > r0);
    assert_int_equal(store_agent_add(fx->s, "aaaa", "alpha", ka, 1700000000), 0);
    int64_t r2 = rev_of(fx->s);
    assert_true(r2 > r1);

    store_agent_t a;
    assert_int_equal(store_agent_get(fx->s, "aaaa", &a), 0);
    assert_string_equal(a.id, "aaaa");
    assert_string_equal(a.name, "alpha");
    assert_memory_equal(a.pubkey, ka, 32);
    assert_string_equal(a.status, "active");
    assert_int_equal(a.created_at, 1700000000);

    store_agent_t *list = NULL;
    size_t n = 0;
    assert_int_equal(store_agent_add(fx->s, "cccc", "gamma", ka, 1600000000), 0);
    int64_t r3 = rev_of(fx->s);
    assert_true(r3 > r2);
    assert_int_equal(store_agent_list(fx->s, &list, &n), 0);
    assert_int_equal(n, 3);
    /* ordered by created_at, then id */
    assert_string_equal(list[0].id, "cccc");
    assert_string_equal(list[1].id, "aaaa");
    assert_string_equal(list[2].id, "bbbb");
    assert_string_equal(list[2].name, "beta");
    assert_memory_equal(list[2].pubkey, kb, 32);
    free(list);

    assert_int_equal(store_agent_set_status(fx->s, "aaaa", "disabled"), 0);
    int64_t r4 = rev_of(fx->s);
    assert_true(r4 > r3);
    assert_int_equal(store_agent_get(fx->s, "aaaa", &a), 0);
    assert_string_equal(a.status, "disabled");
    assert_int_equal(store_agent_get(fx->s, "bbbb", &a), 0);
    assert_string_equal(a.status, "active");
    /* setting the same status again is still a change for the cache */
    assert_int_equal(store_agent_set_status(fx->s, "aaaa", "disabled"), 0);
    int64_t r5 = rev_of(fx->s);
    assert_true(r5 > r4);
    assert_int_equal(store_agent_set_status(fx->s, "aaaa", "active"), 0);
    assert_true(rev_of(fx->s) > r5);
    assert_int_equal(store_agent_get(fx->s, "aaaa", &a), 0);
    assert_string_equal(a.status, "active");
}

/* The empty registry lists nothing. */
static void t_list_empty(void **state)
{
    fx_t *fx = *state;
    migrate(fx);
    store_agent_t *list = (store_agent_t *)&list;
    size_t n = 99;
    assert_int_equal(store_agent_list(fx->s, &list, &n), 0);
    assert_int_equal(n, 0);
    free(list);
}

/* A duplicate id or name is -EEXIST and changes nothing; names compare byte for byte. */
static void t_duplicates(void **state)
{
    fx_t *fx = *state;
    migrate(fx);
    uint8_t k[32];
    make_key(k, 3);
    assert_int_equal(store_agent_add(fx->s, "a1", "Bob", k, 1), 0);
    int64_t rev = rev_of(fx->s);
    assert_int_equal(store_agent_add(fx->s, "a1", "other", k, 2), -EEXIST);
    assert_true(store_last_error(fx->s)[0] != '\0');
    assert_int_equal(store_agent_add(fx->s, "a2", "Bob", k, 2), -EEXIST);
    assert_int_equal(rev_of(fx->s), rev);
    /* no case folding, on either backend */
    assert_int_equal(store_agent_add(fx->s, "a2", "bob", k, 2), 0);
    assert_int_equal(store_agent_add(fx->s, "A1", "BOB", k, 3), 0);
    store_agent_t *list = NULL;
    size_t n = 0;
    assert_int_equal(store_agent_list(fx->s, &list, &n), 0);
    assert_int_equal(n, 3);
    free(list);
}

/* Unknown ids: -ENOENT, and no rev change. */
static void t_unknown(void **state)
{
    fx_t *fx = *state;
    migrate(fx);
    store_agent_t a;
    int64_t rev = rev_of(fx->s);
    assert_int_equal(store_agent_get(fx->s, "nope", &a), -ENOENT);
    assert_int_equal(store_agent_set_status(fx->s, "nope", "disabled"), -ENOENT);
    assert_int_equal(store_agent_get(fx->s, "not an id!", &a), -ENOENT);
    assert_int_equal(rev_of(fx->s), rev);
}

/* Bad arguments: -EINVAL before any database work. */
static void t_invalid(void **state)
{
    fx_t *fx = *state;
    migrate(fx);
    uint8_t k[32];
    make_key(k, 4);
    assert_int_equal(store_agent_add(fx->s, "x1", "x", k, 1), 0);
    int64_t rev = rev_of(fx->s);
    assert_int_equal(store_agent_set_status(fx->s, "x1", "paused"), -EINVAL);
    assert_non_null(strstr(store_last_error(fx->s), "status"));
    assert_int_equal(store_agent_set_status(fx->s, "x1", "Active"), -EINVAL);
    assert_int_equal(store_agent_set_status(fx->s, "x1", ""), -EINVAL);
    assert_int_equal(store_agent_set_status(fx->s, "x1", NULL), -EINVAL);

    char id65[66], name129[130];
    memset(id65, 'a', 65);
    id65[65] = '\0';
    memset(name129, 'n', 129);
    name129[129] = '\0';
    assert_int_equal(store_agent_add(fx->s, "", "n", k, 1), -EINVAL);
    assert_int_equal(store_agent_add(fx->s, NULL, "n", k, 1), -EINVAL);
    assert_int_equal(store_agent_add(fx->s, id65, "n", k, 1), -EINVAL);
    assert_int_equal(store_agent_add(fx->s, "a b", "n", k, 1), -EINVAL);
    assert_int_equal(store_agent_add(fx->s, "x'y", "n", k, 1), -EINVAL);
    assert_int_equal(store_agent_add(fx->s, "x2", "", k, 1), -EINVAL);
    assert_int_equal(store_agent_add(fx->s, "x2", NULL, k, 1), -EINVAL);
    assert_int_equal(store_agent_add(fx->s, "x2", name129, k, 1), -EINVAL);
    assert_int_equal(store_agent_add(fx->s, "x2", " lead", k, 1), -EINVAL);
    assert_int_equal(store_agent_add(fx->s, "x2", "trail ", k, 1), -EINVAL);
    assert_non_null(strstr(store_last_error(fx->s), "agent name"));
    assert_int_equal(store_agent_add(fx->s, "x2", "tab\there", k, 1), -EINVAL);
    assert_int_equal(store_agent_add(fx->s, "x2", "bad \xc3\x28 utf8", k, 1), -EINVAL);
    assert_int_equal(store_agent_add(fx->s, "x2", "surrogate \xed\xa0\x80", k, 1), -EINVAL);
    assert_int_equal(store_agent_add(fx->s, "x2", "n", NULL, 1), -EINVAL);
    assert_int_equal(store_agent_add(NULL, "x2", "n", k, 1), -EINVAL);
    assert_int_equal(rev_of(fx->s), rev);

    /* the limits themselves are fine: a 64-byte id, a 128-byte name of 4-byte characters */
    char id64[65], name128[129] = "";
    memset(id64, 'f', 64);
    id64[64] = '\0';
    for (int i = 0; i < 32; i++)
        memcpy(name128 + 4 * i, "\xf0\x9f\x9a\x80", 5);
    assert_int_equal(strlen(name128), 128);
    assert_int_equal(store_agent_add(fx->s, id64, name128, k, 1), 0);
    store_agent_t a;
    assert_int_equal(store_agent_get(fx->s, id64, &a), 0);
    assert_string_equal(a.id, id64);
    assert_string_equal(a.name, name128);
}

/* Quotes, SQL-looking text and non-ASCII names round-trip unchanged. */
static void t_quotes_unicode(void **state)
{
    fx_t *fx = *state;
    migrate(fx);
    static const char *names[] = {
        "O'Brien \"Bobby\" \\ `x`; DROP TABLE agents; --",
        "名前 ünïcødé 🚀 Ωμέγα",
        "'); DELETE FROM agents WHERE ('1'='1",
        "100% _wild_ card",
    };
    uint8_t k[32];
    char id[16];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        make_key(k, (uint8_t)i);
        snprintf(id, sizeof(id), "q%zu", i);
        assert_int_equal(store_agent_add(fx->s, id, names[i], k, (int64_t)i), 0);
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        store_agent_t a;
        snprintf(id, sizeof(id), "q%zu", i);
        assert_int_equal(store_agent_get(fx->s, id, &a), 0);
        assert_string_equal(a.name, names[i]);
    }
    store_agent_t *list = NULL;
    size_t n = 0;
    assert_int_equal(store_agent_list(fx->s, &list, &n), 0);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(list[i].name, names[i]);
    free(list);
}

/* A second connection sees the changes (rev polling) and a reopened store keeps them. */
static void t_two_connections(void **state)
{
    fx_t *fx = *state;
    migrate(fx);
    store_t *other = NULL;
    char err[256];
    assert_int_equal(store_open(&fx->params, &other, err, sizeof(err)), 0);
    assert_int_equal(store_migrate(other), 0);
    int64_t seen = rev_of(other);
    uint8_t k[32];
    make_key(k, 9);
    assert_int_equal(store_agent_add(fx->s, "r1", "one", k, 5), 0);
    int64_t now = rev_of(other);
    assert_true(now > seen);
    assert_int_equal(store_agent_set_status(other, "r1", "disabled"), 0);
    assert_true(rev_of(fx->s) > now);
    /* writers on both connections interleave without losing a rev step */
    for (int i = 0; i < 6; i++) {
        char id[16], name[16];
        snprintf(id, sizeof(id), "m%d", i);
        snprintf(name, sizeof(name), "many %d", i);
        int64_t before = rev_of(fx->s);
        assert_int_equal(store_agent_add(i % 2 ? other : fx->s, id, name, k, 6), 0);
        assert_true(rev_of(i % 2 ? fx->s : other) > before);
    }
    store_destroy(&other);
    assert_null(other);

    store_destroy(&fx->s);
    assert_int_equal(store_open(&fx->params, &fx->s, err, sizeof(err)), 0);
    assert_int_equal(store_migrate(fx->s), 0);
    store_agent_t a;
    assert_int_equal(store_agent_get(fx->s, "r1", &a), 0);
    assert_string_equal(a.status, "disabled");
}

#define CONC_PROCS 4
#define CONC_ADDS 15

/* Child of t_concurrent: migrate, then add agents and disable every third one. Exit status:
 * the number of migrations it applied, or 100 + the step that failed. */
static void conc_child(const store_params_t *params, int child)
{
    store_t *s = NULL;
    char err[256];
    if (store_open(params, &s, err, sizeof(err)) < 0)
        _exit(100);
    int applied = store_migrate(s);
    if (applied < 0)
        _exit(101);
    uint8_t k[32];
    make_key(k, (uint8_t)child);
    for (int i = 0; i < CONC_ADDS; i++) {
        char id[32], name[32];
        snprintf(id, sizeof(id), "c%d_%d", child, i);
        snprintf(name, sizeof(name), "concurrent %d %d", child, i);
        if (store_agent_add(s, id, name, k, i) < 0)
            _exit(102);
        if (i % 3 == 0 && store_agent_set_status(s, id, "disabled") < 0)
            _exit(103);
    }
    store_destroy(&s);
    _exit(applied);
}

/* Several processes migrate one fresh database at once (it is applied exactly once) and
 * then write to it at once: MAX(rev) ends at exactly the number of changes, so no two
 * changes shared a rev (a reader polling rev could otherwise miss one). */
static void t_concurrent(void **state)
{
    fx_t *fx = *state;
    store_destroy(&fx->s); /* children must not inherit an open connection */
    pid_t pids[CONC_PROCS];
    for (int c = 0; c < CONC_PROCS; c++) {
        pids[c] = fork();
        assert_true(pids[c] >= 0);
        if (pids[c] == 0)
            conc_child(&fx->params, c);
    }
    int applied = 0;
    for (int c = 0; c < CONC_PROCS; c++) {
        int status = 0;
        assert_int_equal(waitpid(pids[c], &status, 0), pids[c]);
        assert_true(WIFEXITED(status));
        if (WEXITSTATUS(status) >= 100)
            fail_msg("child %d failed at step %d", c, WEXITSTATUS(status) - 100);
        applied += WEXITSTATUS(status);
    }
    assert_int_equal(applied, (int)migration_count(fx));
    char err[256];
    assert_int_equal(store_open(&fx->params, &fx->s, err, sizeof(err)), 0);
    int per_child = CONC_ADDS + (CONC_ADDS + 2) / 3;
    assert_int_equal(rev_of(fx->s), CONC_PROCS * per_child);
    store_agent_t *list = NULL;
    size_t n = 0;
    assert_int_equal(store_agent_list(fx->s, &list, &n), 0);
    assert_int_equal(n, CONC_PROCS * CONC_ADDS);
    free(list);
}

/* Asserts that err holds a one-line message without secret. */
static void check_err(const char *err, const char *secret, const char *needle)
{
    assert_true(err[0] != '\0');
    assert_null(strchr(err, '\n'));
    if (secret)
        assert_null(strstr(err, secret));
    if (needle && !strstr(err, needle))
        fail_msg("error \"%s\" does not mention \"%s\"", err, needle);
}

/* Opening with bad parameters fails with a clear message and no password in it. */
static void t_open_errors(void **state)
{
    fx_t *fx = *state;
    grp_t *g = fx->grp;
    store_t *s = (store_t *)fx;
    char err[512];
    store_params_t p = {.backend = g->backend};
    if (g->backend == STORE_SQLITE) {
        char path[PATH_MAX + 32];
        snprintf(path, sizeof(path), "%s/missing/dir/hub.db", fx->dir);
        p.sqlite_path = path;
        assert_int_equal(store_open(&p, &s, err, sizeof(err)), -ENOENT);
        assert_null(s);
        check_err(err, NULL, "missing/dir");
        p.sqlite_path = "";
        assert_int_equal(store_open(&p, &s, err, sizeof(err)), -EINVAL);
        check_err(err, NULL, "sqlite_path");
        p.sqlite_path = fx->dir;
        assert_true(store_open(&p, &s, err, sizeof(err)) < 0);
        check_err(err, NULL, NULL);
        snprintf(path, sizeof(path), "%s.junk", fx->path);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs("this is not an SQLite database, not at all, and it is long enough to see\n", f);
        fclose(f);
        p.sqlite_path = path;
        assert_true(store_open(&p, &s, err, sizeof(err)) < 0);
        check_err(err, NULL, "not a database");
        assert_null(s);
        return;
    }

    const char *pw = "Hunter2-secret";
    char url[1024];
    struct {
        const char *url;
        int rc;
        const char *needle;
    } bad[] = {
        {"mysql://root:Hunter2-secret@/db", -EINVAL, "no host"},
        {"mysql://root:Hunter2-secret@:3306/db", -EINVAL, "no host"},
        {"mysql://root:Hunter2-secret@127.0.0.1:0/db", -EINVAL, "bad port"},
        {"mysql://root:Hunter2-secret@127.0.0.1:65536/db", -EINVAL, "bad port"},
        {"mysql://root:Hunter2-secret@127.0.0.1:33a/db", -EINVAL, "bad port"},
        {"mysql://root:Hunter2-secret@127.0.0.1:/db", -EINVAL, "bad port"},
        {"mysql://root:Hunter2-secret@127.0.0.1:3306/", -EINVAL, "no database"},
        {"mysql://root:Hunter2-secret@127.0.0.1:3306", -EINVAL, "no database"},
        {"mysql://root:Hunter2-secret@127.0.0.1/db?ssl=1", -EINVAL, "query"},
        {"mysql://root:Hunter2-secret%zz@127.0.0.1/db", -EINVAL, "escape"},
        {"postgres://root:Hunter2-secret@127.0.0.1/db", -EINVAL, "mysql://"},
        {"mysql://root:Hunter2-secret@127.0.0.1:1/db", -ECONNREFUSED, "127.0.0.1:1"},
        {NULL, -EINVAL, "mysql://"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        p.mysql_url = bad[i].url;
        err[0] = 'x';
        err[1] = '\0';
        int rc = store_open(&p, &s, err, sizeof(err));
        if (rc != bad[i].rc)
            fail_msg("%s: rc %d, want %d (%s)", bad[i].url ? bad[i].url : "NULL", rc, bad[i].rc,
                     err);
        assert_null(s);
        check_err(err, pw, bad[i].needle);
    }

    /* the real server: wrong password, unknown database */
    mysql_url(g, g->root.user, pw, fx->db, url, sizeof(url));
    p.mysql_url = url;
    assert_int_equal(store_open(&p, &s, err, sizeof(err)), -EACCES);
    check_err(err, pw, "Access denied");
    assert_null(strstr(err, g->root.password));
    mysql_url(g, g->root.user, g->root.password, "relayhub_no_such_db", url, sizeof(url));
    assert_int_equal(store_open(&p, &s, err, sizeof(err)), -ENOENT);
    check_err(err, g->root.password, "relayhub_no_such_db");
}

/* ---- users and API keys, both backends -------------------------------------------------- */

/* Adds a user and returns its id. */
static int64_t add_user(store_t *s, const char *name, int64_t at)
{
    int64_t id = -1;
    int rc = store_user_add(s, name, at, &id);
    if (rc != 0)
        fail_msg("store_user_add %s: %d %s", name, rc, store_last_error(s));
    assert_true(id >= 1);
    return id;
}

/* Users: add / get_by_name / list / set_status; ids grow; rev moves on each change; names
 * compare byte for byte. */
static void t_users(void **state)
{
    fx_t *fx = *state;
    migrate(fx);
    int64_t r0 = keys_rev_of(fx->s);
    int64_t bob = add_user(fx->s, "bob", 1700000000);
    int64_t r1 = keys_rev_of(fx->s);
    assert_true(r1 > r0);
    int64_t alice = add_user(fx->s, "alice", 1700000001);
    assert_true(alice > bob);
    int64_t r2 = keys_rev_of(fx->s);
    assert_true(r2 > r1);
    assert_int_equal(rev_of(fx->s), 0); /* the agents counter is another one */

    store_user_t u;
    assert_int_equal(store_user_get_by_name(fx->s, "alice", &u), 0);
    assert_int_equal(u.id, alice);
    assert_string_equal(u.name, "alice");
    assert_string_equal(u.status, "active");
    assert_int_equal(u.created_at, 1700000001);
    assert_int_equal(store_user_get_by_name(fx->s, "Alice", &u), -ENOENT);
    assert_int_equal(store_user_get_by_name(fx->s, "nobody", &u), -ENOENT);
    assert_int_equal(store_user_get_by_name(fx->s, " bad name", &u), -ENOENT);

    /* duplicates: -EEXIST, no rev change; no case folding on either backend */
    int64_t id = 77;
    assert_int_equal(store_user_add(fx->s, "bob", 5, &id), -EEXIST);
    assert_int_equal(id, 77);
    assert_true(store_last_error(fx->s)[0] != '\0');
    assert_int_equal(keys_rev_of(fx->s), r2);
    int64_t bob2 = add_user(fx->s, "Bob", 5);
    int64_t uni = add_user(fx->s, "名前 ünïcødé 🚀 O'Brien \"x\"; --", 6);
    assert_int_equal(store_user_add(fx->s, "nameless", 7, NULL), 0);

    store_user_t *list = NULL;
    size_t n = 0;
    assert_int_equal(store_user_list(fx->s, &list, &n), 0);
    assert_int_equal(n, 5);
    assert_int_equal(list[0].id, bob); /* in id order */
    assert_string_equal(list[0].name, "bob");
    assert_int_equal(list[1].id, alice);
    assert_int_equal(list[2].id, bob2);
    assert_string_equal(list[2].name, "Bob");
    assert_int_equal(list[3].id, uni);
    assert_string_equal(list[3].name, "名前 ünïcødé 🚀 O'Brien \"x\"; --");
    assert_string_equal(list[4].name, "nameless");
    free(list);

    int64_t r3 = keys_rev_of(fx->s);
    assert_int_equal(store_user_set_status(fx->s, bob, "disabled"), 0);
    int64_t r4 = keys_rev_of(fx->s);
    assert_true(r4 > r3);
    assert_int_equal(store_user_get_by_name(fx->s, "bob", &u), 0);
    assert_string_equal(u.status, "disabled");
    assert_int_equal(store_user_get_by_name(fx->s, "Bob", &u), 0);
    assert_string_equal(u.status, "active");
    assert_int_equal(store_user_set_status(fx->s, bob, "disabled"), 0); /* still a change */
    assert_true(keys_rev_of(fx->s) > r4);
    assert_int_equal(store_user_set_status(fx->s, bob, "active"), 0);
    int64_t r5 = keys_rev_of(fx->s);
    assert_int_equal(store_user_set_status(fx->s, 999999, "disabled"), -ENOENT);
    assert_int_equal(store_user_set_status(fx->s, 0, "disabled"), -ENOENT);
    assert_int_equal(store_user_set_status(fx->s, bob, "paused"), -EINVAL);
    assert_int_equal(store_user_set_status(fx->s, bob, NULL), -EINVAL);
    assert_int_equal(keys_rev_of(fx->s), r5);
}

/* User names follow the agent-name rules; bad ones are -EINVAL before any database work. */
static void t_user_names(void **state)
{
    fx_t *fx = *state;
    migrate(fx);
    char name129[130], name128[129] = "";
    memset(name129, 'n', 129);
    name129[129] = '\0';
    static const char *const bad[] = {"",
                                      " lead",
                                      "trail ",
                                      "tab\there",
                                      "nl\n",
                                      "bad \xc3\x28 utf8",
                                      "surrogate \xed\xa0\x80",
                                      "del\x7f"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (store_user_add(fx->s, bad[i], 1, NULL) != -EINVAL)
            fail_msg("accepted user name \"%s\"", bad[i]);
    }
    assert_non_null(strstr(store_last_error(fx->s), "user name"));
    assert_int_equal(store_user_add(fx->s, name129, 1, NULL), -EINVAL);
    assert_int_equal(store_user_add(fx->s, NULL, 1, NULL), -EINVAL);
    assert_int_equal(store_user_add(NULL, "x", 1, NULL), -EINVAL);
    assert_int_equal(keys_rev_of(fx->s), 0);
    for (int i = 0; i < 32; i++)
        memcpy(name128 + 4 * i, "\xf0\x9f\x9a\x80", 5);
    int64_t id = add_user(fx->s, name128, 1);
    store_user_t u;
    assert_int_equal(store_user_get_by_name(fx->s, name128, &u), 0);
    assert_int_equal(u.id, id);
    assert_string_equal(u.name, name128);
    assert_int_equal(store_user_get_by_name(fx->s, name129, &u), -ENOENT);
    assert_int_equal(store_user_get_by_name(fx->s, NULL, &u), -EINVAL);
    store_user_t *list = (store_user_t *)&list;
    size_t n = 99;
    assert_int_equal(store_user_list(NULL, &list, &n), -EINVAL);
}

/* Keys: add, lookup by hash (with the user), list per user and for all, rev on each add. */
static void t_keys(void **state)
{
    fx_t *fx = *state;
    migrate(fx);
    store_key_t *list = (store_key_t *)&list;
    size_t n = 99;
    assert_int_equal(store_key_list(fx->s, 0, &list, &n), 0);
    assert_int_equal(n, 0);
    free(list);

    int64_t bob = add_user(fx->s, "bob", 100);
    int64_t eve = add_user(fx->s, "eve", 100);
    uint8_t h1[32], h2[32], h3[32], h4[32];
    make_hash(h1, 1);
    make_hash(h2, 2);
    make_hash(h3, 3);
    make_hash(h4, 4);
    int64_t r0 = keys_rev_of(fx->s);
    assert_int_equal(store_key_add(fx->s, bob, "key_bbbbbbbbbbbb", h1, "AbC-_9xY", 300), 0);
    int64_t r1 = keys_rev_of(fx->s);
    assert_true(r1 > r0);
    assert_int_equal(store_key_add(fx->s, eve, "key_eeeeeeeeeeee", h2, "eeeeeeee", 200), 0);
    assert_int_equal(store_key_add(fx->s, bob, "key_aaaaaaaaaaaa", h3, "aaaaaaaa", 300), 0);
    int64_t r2 = keys_rev_of(fx->s);
    assert_true(r2 > r1);

    store_key_t k;
    assert_int_equal(store_key_lookup(fx->s, h1, &k), 0);
    assert_string_equal(k.id, "key_bbbbbbbbbbbb");
    assert_int_equal(k.user_id, bob);
    assert_string_equal(k.user_name, "bob");
    assert_string_equal(k.prefix, "AbC-_9xY");
    assert_string_equal(k.status, "active");
    assert_string_equal(k.user_status, "active");
    assert_int_equal(k.created_at, 300);
    assert_int_equal(k.revoked_at, 0);
    assert_int_equal(store_key_lookup(fx->s, h2, &k), 0);
    assert_string_equal(k.id, "key_eeeeeeeeeeee");
    assert_string_equal(k.user_name, "eve");
    assert_int_equal(store_key_lookup(fx->s, h4, &k), -ENOENT);
    uint8_t near[32];
    memcpy(near, h1, 32);
    near[31] ^= 1;
    assert_int_equal(store_key_lookup(fx->s, near, &k), -ENOENT);

    assert_int_equal(store_key_list(fx->s, 0, &list, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(list[0].id, "key_eeeeeeeeeeee"); /* created_at, then id */
    assert_string_equal(list[1].id, "key_aaaaaaaaaaaa");
    assert_string_equal(list[2].id, "key_bbbbbbbbbbbb");
    assert_string_equal(list[2].prefix, "AbC-_9xY");
    assert_string_equal(list[2].user_name, "bob");
    free(list);
    assert_int_equal(store_key_list(fx->s, bob, &list, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].id, "key_aaaaaaaaaaaa");
    assert_string_equal(list[1].id, "key_bbbbbbbbbbbb");
    assert_int_equal(list[1].user_id, bob);
    free(list);
    assert_int_equal(store_key_list(fx->s, 424242, &list, &n), 0);
    assert_int_equal(n, 0);
    free(list);

    /* a disabled user's keys are still found, with the user's status */
    assert_int_equal(store_user_set_status(fx->s, bob, "disabled"), 0);
    assert_int_equal(store_key_lookup(fx->s, h3, &k), 0);
    assert_string_equal(k.status, "active");
    assert_string_equal(k.user_status, "disabled");
}

/* Duplicate ids or hashes, unknown users and malformed arguments change nothing. */
static void t_keys_refused(void **state)
{
    fx_t *fx = *state;
    migrate(fx);
    int64_t bob = add_user(fx->s, "bob", 1);
    uint8_t h1[32], h2[32];
    make_hash(h1, 11);
    make_hash(h2, 12);
    assert_int_equal(store_key_add(fx->s, bob, "key_aaaaaaaaaaaa", h1, "prefix00", 1), 0);
    int64_t rev = keys_rev_of(fx->s);
    assert_int_equal(store_key_add(fx->s, bob, "key_aaaaaaaaaaaa", h2, "prefix00", 1), -EEXIST);
    assert_int_equal(store_key_add(fx->s, bob, "key_bbbbbbbbbbbb", h1, "prefix00", 1), -EEXIST);
    assert_int_equal(store_key_add(fx->s, 999999, "key_cccccccccccc", h2, "prefix00", 1), -ENOENT);
    assert_int_equal(store_key_add(fx->s, 0, "key_cccccccccccc", h2, "prefix00", 1), -ENOENT);
    assert_int_equal(store_key_add(fx->s, -3, "key_cccccccccccc", h2, "prefix00", 1), -ENOENT);
    assert_int_equal(keys_rev_of(fx->s), rev);

    char id33[40] = "key_";
    memset(id33 + 4, 'a', 29);
    id33[33] = '\0';
    static const char *const bad_ids[] = {"",        "key_",    "kex_aaaa",   "key_AAAA",
                                          "key_a-b", "key_a b", "aaaaaaaaaa", "key_aa'"};
    for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++)
        if (store_key_add(fx->s, bob, bad_ids[i], h2, "prefix00", 1) != -EINVAL)
            fail_msg("accepted key id \"%s\"", bad_ids[i]);
    assert_non_null(strstr(store_last_error(fx->s), "key id"));
    assert_int_equal(store_key_add(fx->s, bob, id33, h2, "prefix00", 1), -EINVAL);
    assert_int_equal(store_key_add(fx->s, bob, NULL, h2, "prefix00", 1), -EINVAL);
    static const char *const bad_prefixes[] = {"", "a b", "a=b", "abcdefghijklmnopq", "sk+x"};
    for (size_t i = 0; i < sizeof(bad_prefixes) / sizeof(bad_prefixes[0]); i++)
        if (store_key_add(fx->s, bob, "key_dddddddddddd", h2, bad_prefixes[i], 1) != -EINVAL)
            fail_msg("accepted prefix \"%s\"", bad_prefixes[i]);
    assert_non_null(strstr(store_last_error(fx->s), "prefix"));
    assert_int_equal(store_key_add(fx->s, bob, "key_dddddddddddd", h2, NULL, 1), -EINVAL);
    assert_int_equal(store_key_add(fx->s, bob, "key_dddddddddddd", NULL, "p", 1), -EINVAL);
    assert_int_equal(store_key_add(NULL, bob, "key_dddddddddddd", h2, "p", 1), -EINVAL);
    assert_int_equal(keys_rev_of(fx->s), rev);

    /* the limits themselves are fine */
    char id32[40] = "key_";
    memset(id32 + 4, '7', 28);
    id32[32] = '\0';
    assert_int_equal(store_key_add(fx->s, bob, id32, h2, "abcdefghijklmnop", 1), 0);
    store_key_t k;
    assert_int_equal(store_key_lookup(fx->s, h2, &k), 0);
    assert_string_equal(k.id, id32);
    assert_string_equal(k.prefix, "abcdefghijklmnop");

    assert_int_equal(store_key_lookup(fx->s, NULL, &k), -EINVAL);
    assert_int_equal(store_key_lookup(fx->s, h2, NULL), -EINVAL);
    store_key_t *list = NULL;
    size_t n = 0;
    assert_int_equal(store_key_list(fx->s, -1, &list, &n), -EINVAL);
    assert_int_equal(store_keys_rev(fx->s, NULL), -EINVAL);
    assert_int_equal(store_keys_rev(NULL, &rev), -EINVAL);
}

/* Revoke: the key is found as revoked with its time; a second revoke is -EALREADY and
 * changes nothing; unknown and malformed ids are -ENOENT. */
static void t_key_revoke(void **state)
{
    fx_t *fx = *state;
    migrate(fx);
    int64_t bob = add_user(fx->s, "bob", 1);
    uint8_t h1[32], h2[32];
    make_hash(h1, 21);
    make_hash(h2, 22);
    assert_int_equal(store_key_add(fx->s, bob, "key_aaaaaaaaaaaa", h1, "aaaaaaaa", 10), 0);
    assert_int_equal(store_key_add(fx->s, bob, "key_bbbbbbbbbbbb", h2, "bbbbbbbb", 11), 0);
    int64_t r0 = keys_rev_of(fx->s);
    assert_int_equal(store_key_revoke(fx->s, "key_aaaaaaaaaaaa", 1700000123), 0);
    int64_t r1 = keys_rev_of(fx->s);
    assert_true(r1 > r0);
    store_key_t k;
    assert_int_equal(store_key_lookup(fx->s, h1, &k), 0);
    assert_string_equal(k.status, "revoked");
    assert_int_equal(k.revoked_at, 1700000123);
    assert_string_equal(k.user_status, "active");
    assert_int_equal(store_key_lookup(fx->s, h2, &k), 0);
    assert_string_equal(k.status, "active");
    assert_int_equal(k.revoked_at, 0);

    assert_int_equal(store_key_revoke(fx->s, "key_aaaaaaaaaaaa", 1800000000), -EALREADY);
    assert_int_equal(keys_rev_of(fx->s), r1);
    assert_int_equal(store_key_lookup(fx->s, h1, &k), 0);
    assert_int_equal(k.revoked_at, 1700000123);
    assert_int_equal(store_key_revoke(fx->s, "key_zzzzzzzzzzzz", 1), -ENOENT);
    assert_int_equal(store_key_revoke(fx->s, "sk-not-an-id", 1), -ENOENT);
    assert_int_equal(store_key_revoke(fx->s, "", 1), -ENOENT);
    assert_int_equal(store_key_revoke(fx->s, NULL, 1), -EINVAL);
    assert_int_equal(keys_rev_of(fx->s), r1);

    store_key_t *list = NULL;
    size_t n = 0;
    assert_int_equal(store_key_list(fx->s, bob, &list, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].status, "revoked");
    assert_int_equal(list[0].revoked_at, 1700000123);
    assert_string_equal(list[1].status, "active");
    free(list);
}

/* A reader on another connection learns of a new key, a revocation and a disabled user from
 * store_keys_rev, and a reopened store keeps them. */
static void t_keys_two_connections(void **state)
{
    fx_t *fx = *state;
    migrate(fx);
    store_t *reader = NULL;
    char err[256];
    assert_int_equal(store_open(&fx->params, &reader, err, sizeof(err)), 0);
    int64_t seen = keys_rev_of(reader);
    int64_t bob = add_user(fx->s, "bob", 1);
    assert_true(keys_rev_of(reader) > seen);
    seen = keys_rev_of(reader);
    uint8_t h[32];
    make_hash(h, 31);
    assert_int_equal(store_key_add(fx->s, bob, "key_rrrrrrrrrrrr", h, "rrrrrrrr", 1), 0);
    store_key_t k;
    assert_true(keys_rev_of(reader) > seen);
    seen = keys_rev_of(reader);
    assert_int_equal(store_key_lookup(reader, h, &k), 0);
    assert_string_equal(k.status, "active");
    assert_int_equal(store_key_revoke(fx->s, "key_rrrrrrrrrrrr", 2), 0);
    assert_true(keys_rev_of(reader) > seen);
    seen = keys_rev_of(reader);
    assert_int_equal(store_key_lookup(reader, h, &k), 0);
    assert_string_equal(k.status, "revoked");
    assert_int_equal(store_user_set_status(reader, bob, "disabled"), 0);
    assert_true(keys_rev_of(fx->s) > seen);
    store_destroy(&reader);

    store_destroy(&fx->s);
    assert_int_equal(store_open(&fx->params, &fx->s, err, sizeof(err)), 0);
    assert_int_equal(store_migrate(fx->s), 0);
    assert_int_equal(store_key_lookup(fx->s, h, &k), 0);
    assert_string_equal(k.status, "revoked");
    assert_string_equal(k.user_status, "disabled");
    assert_int_equal(k.revoked_at, 2);
}

/* A key hash never shows up in an error message (MySQL quotes values in "Duplicate entry"). */
static void t_keys_errors_hide_hash(void **state)
{
    fx_t *fx = *state;
    migrate(fx);
    int64_t bob = add_user(fx->s, "bob", 1);
    uint8_t h[32];
    memcpy(h, "SECRETHASHSECRETHASHSECRETHASH!!", 32);
    assert_int_equal(store_key_add(fx->s, bob, "key_aaaaaaaaaaaa", h, "aaaaaaaa", 1), 0);
    assert_int_equal(store_key_add(fx->s, bob, "key_bbbbbbbbbbbb", h, "bbbbbbbb", 1), -EEXIST);
    const char *e = store_last_error(fx->s);
    assert_true(e[0] != '\0');
    if (strstr(e, "SECRETHASH") || strstr(e, "534543524554"))
        fail_msg("error quotes the hash: %s", e);
    /* and after a hash-bound statement, other errors are not redacted */
    assert_int_equal(store_key_add(fx->s, bob, "key_aaaaaaaaaaaa", h, "cccccccc", 1), -EEXIST);
    assert_int_equal(store_user_add(fx->s, "bob", 1, NULL), -EEXIST);
    if (fx->grp->backend == STORE_MYSQL)
        assert_non_null(strstr(store_last_error(fx->s), "bob"));
}

#define KCONC_PROCS 4
#define KCONC_USERS 3
#define KCONC_KEYS 4

/* Child of t_keys_concurrent: adds users, keys for each, revokes every other key. Exit
 * status: 0, or 100 + the step that failed. */
static void kconc_child(const store_params_t *params, int child)
{
    store_t *s = NULL;
    char err[256];
    if (store_open(params, &s, err, sizeof(err)) < 0)
        _exit(100);
    for (int u = 0; u < KCONC_USERS; u++) {
        char name[32];
        snprintf(name, sizeof(name), "user %d %d", child, u);
        int64_t id = 0;
        if (store_user_add(s, name, u, &id) < 0)
            _exit(101);
        for (int k = 0; k < KCONC_KEYS; k++) {
            char kid[32];
            uint8_t h[32];
            snprintf(kid, sizeof(kid), "key_c%du%dk%d", child, u, k);
            make_hash(h, (uint32_t)(child * 1000 + u * 10 + k));
            if (store_key_add(s, id, kid, h, "conc", k) < 0)
                _exit(102);
            if (k % 2 == 0 && store_key_revoke(s, kid, 9) < 0)
                _exit(103);
        }
    }
    store_destroy(&s);
    _exit(0);
}

/* Several processes change users and keys at once: the rev ends at exactly the number of
 * changes, so no two changes shared a rev (a polling reader could otherwise miss one). */
static void t_keys_concurrent(void **state)
{
    fx_t *fx = *state;
    migrate(fx);
    store_destroy(&fx->s); /* children must not inherit an open connection */
    pid_t pids[KCONC_PROCS];
    for (int c = 0; c < KCONC_PROCS; c++) {
        pids[c] = fork();
        assert_true(pids[c] >= 0);
        if (pids[c] == 0)
            kconc_child(&fx->params, c);
    }
    for (int c = 0; c < KCONC_PROCS; c++) {
        int status = 0;
        assert_int_equal(waitpid(pids[c], &status, 0), pids[c]);
        assert_true(WIFEXITED(status));
        if (WEXITSTATUS(status) >= 100)
            fail_msg("child %d failed at step %d", c, WEXITSTATUS(status) - 100);
    }
    char err[256];
    assert_int_equal(store_open(&fx->params, &fx->s, err, sizeof(err)), 0);
    int per_user = 1 + KCONC_KEYS + (KCONC_KEYS + 1) / 2;
    assert_int_equal(keys_rev_of(fx->s), KCONC_PROCS * KCONC_USERS * per_user);
    store_key_t *list = NULL;
    size_t n = 0, revoked = 0;
    assert_int_equal(store_key_list(fx->s, 0, &list, &n), 0);
    assert_int_equal(n, KCONC_PROCS * KCONC_USERS * KCONC_KEYS);
    for (size_t i = 0; i < n; i++)
        revoked += strcmp(list[i].status, "revoked") == 0;
    assert_int_equal(revoked, KCONC_PROCS * KCONC_USERS * ((KCONC_KEYS + 1) / 2));
    free(list);
}

/* ---- cases for one backend -------------------------------------------------------------- */

/* SQLite: the database and its WAL files are 0600; WAL mode is on. */
static void t_sqlite_files(void **state)
{
    fx_t *fx = *state;
    migrate(fx);
    uint8_t k[32];
    make_key(k, 5);
    assert_int_equal(store_agent_add(fx->s, "f1", "file", k, 1), 0);
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char p[PATH_MAX + 8];
        struct stat st;
        snprintf(p, sizeof(p), "%s%s", fx->path, suffixes[i]);
        assert_int_equal(stat(p, &st), 0);
        if ((st.st_mode & 07777) != 0600)
            fail_msg("%s has mode %o, want 600", p, (unsigned)(st.st_mode & 07777));
    }
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* MySQL: a user and password full of URL syntax work once percent-encoded. */
static void t_mysql_escaped_credentials(void **state)
{
    fx_t *fx = *state;
    grp_t *g = fx->grp;
    const char *user = "rh@user:x";
    const char *pass = "p@ss:w/rd%?#'\"";
    char sql[512], url[1024], err[512];
    snprintf(sql, sizeof(sql), "CREATE USER 'rh@user:x'@'%%' IDENTIFIED BY 'p@ss:w/rd%%?#\\'\"'");
    admin_query(g, sql);
    snprintf(sql, sizeof(sql), "GRANT ALL ON `%s`.* TO 'rh@user:x'@'%%'", fx->db);
    admin_query(g, sql);
    mysql_url(g, user, pass, fx->db, url, sizeof(url));
    store_params_t p = {.backend = STORE_MYSQL, .mysql_url = url};
    store_t *s = NULL;
    int rc = store_open(&p, &s, err, sizeof(err));
    admin_query(g, "DROP USER 'rh@user:x'@'%'");
    if (rc < 0)
        fail_msg("store_open as %s: %d %s", user, rc, err);
    assert_int_equal(store_migrate(s), (int)migration_count(fx));
    store_destroy(&s);
}

/* ---- no database ------------------------------------------------------------------------ */

/* store_backend_parse accepts exactly the two names. */
static void t_backend_parse(void **state)
{
    (void)state;
    store_backend_t b = STORE_MYSQL;
    assert_int_equal(store_backend_parse("sqlite", &b), 0);
    assert_int_equal(b, STORE_SQLITE);
    assert_int_equal(store_backend_parse("mysql", &b), 0);
    assert_int_equal(b, STORE_MYSQL);
    assert_int_equal(store_backend_parse("MySQL", &b), -EINVAL);
    assert_int_equal(store_backend_parse("", &b), -EINVAL);
    assert_int_equal(store_backend_parse("postgres", &b), -EINVAL);
    assert_int_equal(store_backend_parse(NULL, &b), -EINVAL);
}

/* URL parsing: defaults, percent-decoding, localhost, IPv6, and refusals. */
static void t_url_parse(void **state)
{
    (void)state;
    store_mysql_url_t u;
    char err[256];
    assert_int_equal(
        store_mysql_url_parse("mysql://bob:s%40cr%3At@db.example:3307/hub", &u, err, sizeof(err)),
        0);
    assert_string_equal(u.user, "bob");
    assert_string_equal(u.password, "s@cr:t");
    assert_string_equal(u.host, "db.example");
    assert_int_equal(u.port, 3307);
    assert_string_equal(u.db, "hub");
    store_mysql_url_free(&u);
    assert_null(u.password);
    store_mysql_url_free(&u); /* twice is fine */

    assert_int_equal(store_mysql_url_parse("mysql://localhost/x", &u, err, sizeof(err)), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 3306);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "");
    store_mysql_url_free(&u);

    assert_int_equal(store_mysql_url_parse("mysql://u:p@w@[::1]:4000/", &u, err, sizeof(err)), 0);
    assert_string_equal(u.user, "u");
    assert_string_equal(u.password, "p@w"); /* the last '@' ends the userinfo */
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 4000);
    assert_string_equal(u.db, "");
    store_mysql_url_free(&u);

    assert_int_equal(store_mysql_url_parse("mysql://u:@h", &u, err, sizeof(err)), 0);
    assert_string_equal(u.password, "");
    store_mysql_url_free(&u);

    const char *bad[] = {
        "mysql://",          "mysql://u:p@",
        "mysql://h:99999/d", "mysql://h:-1/d",
        "mysql://h:1x/d",    "mysql://[::1/d",
        "mysql://[::1]x/d",  "mysql://h/a/b",
        "mysql://u:%4@h/d",  "mysql://u:%00@h/d",
        "mysql://h/d#frag",  "mysql://h o/d",
        "http://h/d",        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        if (store_mysql_url_parse(bad[i], &u, err, sizeof(err)) != -EINVAL)
            fail_msg("accepted %s", bad[i]);
        assert_true(err[0] != '\0');
        assert_null(u.host);
    }
}

/* destroy is NULL-safe; store_last_error copes with NULL; open checks its arguments. */
static void t_null_safety(void **state)
{
    (void)state;
    store_destroy(NULL);
    store_t *s = NULL;
    store_destroy(&s);
    assert_string_equal(store_last_error(NULL), "");
    char err[128];
    assert_int_equal(store_open(NULL, &s, err, sizeof(err)), -EINVAL);
    assert_true(err[0] != '\0');
    store_params_t p = {.backend = (store_backend_t)7};
    assert_int_equal(store_open(&p, &s, err, sizeof(err)), -EINVAL);
    assert_null(s);
    assert_int_equal(store_migrate(NULL), -EINVAL);
    int v;
    assert_int_equal(store_schema_version(NULL, &v), -EINVAL);
}

#define BOTH(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
    const char *lvl = getenv("RELAYHUB_TEST_LOG");
    if (lvl)
        bus_log_parse_level(lvl, &bus_log_level);
    bus_log_set_process("test_store");

    const struct CMUnitTest common[] = {
        cmocka_unit_test(t_backend_parse),
        cmocka_unit_test(t_url_parse),
        cmocka_unit_test(t_null_safety),
    };
    const struct CMUnitTest sqlite[] = {
        BOTH(t_migrate),
        BOTH(t_agents),
        BOTH(t_list_empty),
        BOTH(t_duplicates),
        BOTH(t_unknown),
        BOTH(t_invalid),
        BOTH(t_quotes_unicode),
        BOTH(t_two_connections),
        BOTH(t_open_errors),
        BOTH(t_concurrent),
        BOTH(t_sqlite_files),
        BOTH(t_users),
        BOTH(t_user_names),
        BOTH(t_keys),
        BOTH(t_keys_refused),
        BOTH(t_key_revoke),
        BOTH(t_keys_two_connections),
        BOTH(t_keys_errors_hide_hash),
        BOTH(t_keys_concurrent),
    };
    const struct CMUnitTest mysql[] = {
        BOTH(t_migrate),
        BOTH(t_agents),
        BOTH(t_list_empty),
        BOTH(t_duplicates),
        BOTH(t_unknown),
        BOTH(t_invalid),
        BOTH(t_quotes_unicode),
        BOTH(t_two_connections),
        BOTH(t_open_errors),
        BOTH(t_concurrent),
        BOTH(t_mysql_escaped_credentials),
        BOTH(t_users),
        BOTH(t_user_names),
        BOTH(t_keys),
        BOTH(t_keys_refused),
        BOTH(t_key_revoke),
        BOTH(t_keys_two_connections),
        BOTH(t_keys_errors_hide_hash),
        BOTH(t_keys_concurrent),
    };
    int failed = cmocka_run_group_tests_name("store_common", common, NULL, NULL);
    failed += cmocka_run_group_tests_name("store_sqlite", sqlite, grp_sqlite_setup, grp_teardown);
    int my = cmocka_run_group_tests_name("store_mysql", mysql, grp_mysql_setup, grp_teardown);
    if (my == 0 && !getenv(MYSQL_ENV))
        my = 1; /* never let a missing server pass */
    failed += my;
    mysql_library_end();
    return failed ? 1 : 0;
}
