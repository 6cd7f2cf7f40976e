/* test_store_billing: the billing part of lib/store (migration 003) against both backends.
 *
 * Groups "billing_sqlite" and "billing_mysql" run the same cases against a fresh database
 * each (as test_store does): SQLite in a temporary folder, MySQL in a database named
 * relayhub_billing_<pid>_<random>_<n> that a root connection to RELAYHUB_TEST_MYSQL_URL creates
 * before each case and drops after it. Without that variable the MySQL group fails (it does
 * not skip): run this binary as `tests/with-servers PATH/TO/test_store_billing`.
 *
 * Ledger rows carry made-up hashes that chain (each row's prev_hash is the previous row's
 * hash): the store checks only that link, never the SHA-256 itself (lib/ledger does).
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#define MYSQL_ENV "RELAYHUB_TEST_MYSQL_URL"
#define M 1000000LL /* one currency unit in micro-units */

/* Per-group state. */
typedef struct {
    store_backend_t backend; /* backend of this group */
    store_mysql_url_t root;  /* MySQL: the parsed RELAYHUB_TEST_MYSQL_URL */
    MYSQL *admin;            /* MySQL: root connection that creates and drops databases */
    char prefix[64];         /* MySQL: relayhub_billing_<pid>_<random> */
    unsigned counter;        /* MySQL: databases created so far */
} grp_t;

/* Per-test state: one fresh, migrated database with two users and an open store on it. */
typedef struct {
    grp_t *grp;             /* the group */
    char dir[PATH_MAX / 2]; /* SQLite: temporary folder */
    char path[PATH_MAX];    /* SQLite: database file in it */
    char db[80];            /* MySQL: database name */
    char url[1024];         /* MySQL: URL of that database */
    store_params_t params;  /* how to open it */
    store_t *s;             /* open store */
    int64_t alice, bob;     /* two users */
} fx_t;

/* ---- fixtures --------------------------------------------------------------------------- */

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

/* Runs one administrative statement on the root connection (test-made names only). */
static void admin_query(grp_t *g, const char *sql)
{
    if (mysql_query(g->admin, sql) != 0)
        fail_msg("mysql admin: %s: %s", sql, mysql_error(g->admin));
}

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
                    "`tests/with-servers build/tests/unit/test_store_billing`.\n",
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
    snprintf(g->prefix, sizeof(g->prefix), "relayhub_billing_%ld_%08x", (long)getpid(), r);
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

/* Test: a fresh database, migrated, with users alice and bob, and a store open on it. */
static int fx_setup(void **state)
{
    grp_t *g = *state;
    fx_t *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    fx->grp = g;
    fx->params.backend = g->backend;
    if (g->backend == STORE_SQLITE) {
        const char *tmp = getenv("TMPDIR");
        snprintf(fx->dir, sizeof(fx->dir), "%s/relayhub-billing-XXXXXX",
                 tmp && *tmp ? tmp : "/tmp");
        assert_non_null(mkdtemp(fx->dir));
        snprintf(fx->path, sizeof(fx->path), "%s/hub.db", fx->dir);
        fx->params.sqlite_path = fx->path;
    } else {
        char sql[160], u[256], p[256];
        snprintf(fx->db, sizeof(fx->db), "%s_%u", g->prefix, ++g->counter);
        snprintf(sql, sizeof(sql), "CREATE DATABASE `%s` CHARACTER SET utf8mb4", fx->db);
        admin_query(g, sql);
        pct_encode(g->root.user, u, sizeof(u));
        pct_encode(g->root.password, p, sizeof(p));
        bool v6 = strchr(g->root.host, ':') != NULL;
        int n = snprintf(fx->url, sizeof(fx->url), "mysql://%s:%s@%s%s%s:%u/%s", u, p,
                         v6 ? "[" : "", g->root.host, v6 ? "]" : "", g->root.port, fx->db);
        assert_true(n > 0 && (size_t)n < sizeof(fx->url));
        fx->params.mysql_url = fx->url;
    }
    char err[256];
    int rc = store_open(&fx->params, &fx->s, err, sizeof(err));
    if (rc < 0)
        fail_msg("store_open: %d %s", rc, err);
    assert_true(store_migrate(fx->s) >= 3);
    assert_int_equal(store_user_add(fx->s, "alice", 1700000000, &fx->alice), 0);
    assert_int_equal(store_user_add(fx->s, "bob", 1700000000, &fx->bob), 0);
    *state = fx;
    return 0;
}

/* Test teardown: closes the store and removes the database. */
static int fx_teardown(void **state)
{
    fx_t *fx = *state;
    store_destroy(&fx->s);
    if (fx->grp->backend == STORE_SQLITE) {
        const char *suffixes[] = {"", "-wal", "-shm", "-journal"};
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

/* ---- helpers ---------------------------------------------------------------------------- */

/* A deterministic request id, distinct per seed, with a NUL and a 0xff byte in it. */
static void req_of(uint8_t r[16], uint32_t seed)
{
    for (int i = 0; i < 16; i++)
        r[i] = (uint8_t)(seed * 37 + (uint32_t)i * 11);
    r[0] = 0x00;
    r[15] = 0xff;
    for (int i = 0; i < 4; i++)
        r[1 + i] = (uint8_t)(seed >> (8 * i));
}

/* A made-up row hash, distinct per (agent, seq), with a NUL and a 0xff byte in it. */
static void fake_hash(uint8_t h[32], const char *agent, uint64_t seq)
{
    uint32_t x = 2166136261u;
    for (const char *p = agent; *p; p++)
        x = (x ^ (uint8_t)*p) * 16777619u;
    for (int i = 0; i < 32; i++) {
        x = (x ^ (uint32_t)(seq + (uint64_t)i)) * 16777619u;
        h[i] = (uint8_t)(x >> 13);
    }
    h[3] = 0x00;
    h[30] = 0xff;
}

/* A BILLED settlement of request req for user: the agent's row seq (prev_hash: the made-up
 * hash of seq - 1, zeros for seq 1), costing cost of which fee is the hub's. */
static store_settle_t billed(const char *agent, uint64_t seq, const uint8_t req[16], int64_t user,
                             int64_t cost, int64_t fee)
{
    store_settle_t it;
    memset(&it, 0, sizeof(it));
    memcpy(it.req_id, req, 16);
    it.outcome = STORE_OUTCOME_BILLED;
    it.user_id = user;
    it.settled_at = 1700000000000LL + (int64_t)seq;
    ledger_row_t *r = &it.row;
    snprintf(r->agent_id, sizeof(r->agent_id), "%s", agent);
    r->seq = seq;
    memcpy(r->req_id, req, 16);
    r->attempt = 1;
    r->user_id = user;
    snprintf(r->model, sizeof(r->model), "gpt-4o-mini");
    r->input_tokens = 1200;
    r->cached_tokens = 200;
    r->output_tokens = 300 + (int64_t)seq;
    r->estimated = seq % 2 == 0;
    r->cost = cost;
    r->fee = fee;
    r->credit = cost - fee;
    r->hold = 2 * M;
    r->price_from = 1690000000000LL;
    r->fee_ppm = 100000;
    r->created_ms = it.settled_at;
    if (seq > 1)
        fake_hash(r->prev_hash, agent, seq - 1);
    fake_hash(r->hash, agent, seq);
    return it;
}

/* A NOTHING settlement of request req for user. */
static store_settle_t nothing(const uint8_t req[16], int64_t user)
{
    store_settle_t it;
    memset(&it, 0, sizeof(it));
    memcpy(it.req_id, req, 16);
    it.outcome = STORE_OUTCOME_NOTHING;
    it.user_id = user;
    it.settled_at = 1700000000000LL;
    return it;
}

/* A usage report. */
static store_usage_t report(const uint8_t req[16], const char *source, uint32_t attempt,
                            int64_t user, int64_t received_at)
{
    store_usage_t u;
    memset(&u, 0, sizeof(u));
    memcpy(u.req_id, req, 16);
    snprintf(u.source, sizeof(u.source), "%s", source);
    u.attempt = attempt;
    snprintf(u.agent_id, sizeof(u.agent_id), "agent-%u", attempt);
    u.user_id = user;
    snprintf(u.model, sizeof(u.model), "gpt-4o-mini");
    u.status = 200;
    u.delivered = true;
    u.complete = strcmp(source, "gateway") == 0;
    u.estimated = !u.complete;
    u.input_tokens = 1000 + attempt;
    u.cached_tokens = 100;
    u.output_tokens = 50;
    u.received_at = received_at;
    return u;
}

/* A hold. */
static store_hold_t hold(const uint8_t req[16], int64_t user, int64_t amount, int64_t expires)
{
    store_hold_t h;
    memset(&h, 0, sizeof(h));
    memcpy(h.req_id, req, 16);
    h.user_id = user;
    h.amount = amount;
    h.expires_at = expires;
    h.created_at = 42;            /* ignored */
    h.state = STORE_HOLD_SETTLED; /* ignored */
    return h;
}

/* Queues and applies a top-up. */
static void topup(fx_t *fx, int64_t user, int64_t amount)
{
    size_t applied = 0;
    assert_int_equal(store_topup_add(fx->s, user, amount, 1700000000000LL, NULL), 0);
    assert_int_equal(store_topups_apply(fx->s, 1700000000001LL, &applied), 0);
    assert_int_equal(applied, 1);
}

/* The user's balance. */
static store_balance_t balance_of(fx_t *fx, int64_t user)
{
    store_balance_t b;
    assert_int_equal(store_balance_get(fx->s, user, &b), 0);
    assert_int_equal(b.user_id, user);
    return b;
}

/* The state of a request's hold. */
static int hold_state(fx_t *fx, const uint8_t req[16])
{
    store_hold_t h;
    assert_int_equal(store_hold_get(fx->s, req, &h), 0);
    return h.state;
}

/* Number of stored reports of a request. */
static size_t reports_of(fx_t *fx, const uint8_t req[16])
{
    store_usage_t *u = NULL;
    size_t n = 99;
    assert_int_equal(store_usage_of(fx->s, req, &u, &n), 0);
    free(u);
    return n;
}

/* Everything a failed batch must leave as it was. */
typedef struct {
    store_totals_t t;      /* hub-wide sums */
    store_balance_t a, b;  /* alice's and bob's money */
    int64_t held, holds;   /* active holds: sum and count */
    size_t pending;        /* pending usage reports */
    size_t accounts;       /* agent accounts */
    int64_t credit;        /* sum of the accounts' credit */
    uint64_t head;         /* agent "ag1": last seq */
    uint8_t head_hash[32]; /* and its hash */
} snap_t;

/* Takes a snap_t of the fixture's database. */
static snap_t snap(fx_t *fx)
{
    snap_t x;
    memset(&x, 0, sizeof(x));
    assert_int_equal(store_billing_totals(fx->s, &x.t), 0);
    x.a = balance_of(fx, fx->alice);
    x.b = balance_of(fx, fx->bob);
    assert_int_equal(store_holds_outstanding(fx->s, &x.held, &x.holds), 0);
    store_usage_t *u = NULL;
    assert_int_equal(store_usage_pending(fx->s, 0, &u, &x.pending), 0);
    free(u);
    store_account_t *acc = NULL;
    assert_int_equal(store_account_list(fx->s, &acc, &x.accounts), 0);
    for (size_t i = 0; i < x.accounts; i++)
        x.credit += acc[i].credit;
    free(acc);
    assert_int_equal(store_ledger_head(fx->s, "ag1", &x.head, x.head_hash), 0);
    return x;
}

/* Asserts that two snapshots are equal, field by field. */
static void snap_equal(const snap_t *x, const snap_t *y)
{
    assert_int_equal(x->t.topups, y->t.topups);
    assert_int_equal(x->t.balances, y->t.balances);
    assert_int_equal(x->t.debits, y->t.debits);
    assert_int_equal(x->t.credits, y->t.credits);
    assert_int_equal(x->t.fees, y->t.fees);
    assert_int_equal(x->t.ledger_rows, y->t.ledger_rows);
    assert_int_equal(x->t.settled, y->t.settled);
    assert_int_equal(x->a.balance, y->a.balance);
    assert_int_equal(x->a.held, y->a.held);
    assert_int_equal(x->b.balance, y->b.balance);
    assert_int_equal(x->b.held, y->b.held);
    assert_int_equal(x->held, y->held);
    assert_int_equal(x->holds, y->holds);
    assert_int_equal(x->pending, y->pending);
    assert_int_equal(x->accounts, y->accounts);
    assert_int_equal(x->credit, y->credit);
    assert_int_equal(x->head, y->head);
    assert_memory_equal(x->head_hash, y->head_hash, 32);
}

/* Asserts that the sums agree: debits = credits + fees, balances = top-ups - debits, and
 * the accounts hold every credit. */
static void check_books(fx_t *fx)
{
    store_totals_t t;
    assert_int_equal(store_billing_totals(fx->s, &t), 0);
    assert_int_equal(t.debits, t.credits + t.fees);
    assert_int_equal(t.balances, t.topups - t.debits);
    store_account_t *acc = NULL;
    size_t n = 0;
    int64_t credit = 0;
    assert_int_equal(store_account_list(fx->s, &acc, &n), 0);
    for (size_t i = 0; i < n; i++)
        credit += acc[i].credit;
    free(acc);
    assert_int_equal(credit, t.credits);
}

/* Asserts two ledger rows are equal, field by field. */
static void row_equal(const ledger_row_t *x, const ledger_row_t *y)
{
    assert_string_equal(x->agent_id, y->agent_id);
    assert_int_equal(x->seq, y->seq);
    assert_memory_equal(x->req_id, y->req_id, 16);
    assert_int_equal(x->attempt, y->attempt);
    assert_int_equal(x->user_id, y->user_id);
    assert_string_equal(x->model, y->model);
    assert_int_equal(x->input_tokens, y->input_tokens);
    assert_int_equal(x->cached_tokens, y->cached_tokens);
    assert_int_equal(x->output_tokens, y->output_tokens);
    assert_int_equal(x->estimated, y->estimated);
    assert_int_equal(x->cost, y->cost);
    assert_int_equal(x->fee, y->fee);
    assert_int_equal(x->credit, y->credit);
    assert_int_equal(x->hold, y->hold);
    assert_int_equal(x->price_from, y->price_from);
    assert_int_equal(x->fee_ppm, y->fee_ppm);
    assert_int_equal(x->created_ms, y->created_ms);
    assert_memory_equal(x->prev_hash, y->prev_hash, 32);
    assert_memory_equal(x->hash, y->hash, 32);
}

/* ---- cases ------------------------------------------------------------------------------ */

/* Migration 003 is applied with the others; a fresh billing schema is empty and consistent. */
static void t_schema(void **state)
{
    fx_t *fx = *state;
    int version = 0;
    assert_int_equal(store_schema_version(fx->s, &version), 0);
    assert_true(version >= 3);
    assert_int_equal(store_migrate(fx->s), 0);
    int64_t rev = -1;
    assert_int_equal(store_prices_rev(fx->s, &rev), 0);
    assert_int_equal(rev, 0);
    store_totals_t t;
    memset(&t, 0xff, sizeof(t));
    assert_int_equal(store_billing_totals(fx->s, &t), 0);
    assert_int_equal(t.topups, 0);
    assert_int_equal(t.balances, 0);
    assert_int_equal(t.debits, 0);
    assert_int_equal(t.credits, 0);
    assert_int_equal(t.fees, 0);
    assert_int_equal(t.ledger_rows, 0);
    assert_int_equal(t.settled, 0);
    store_balance_t b = balance_of(fx, fx->alice);
    assert_int_equal(b.balance, 0);
    assert_int_equal(b.held, 0);
    assert_int_equal(b.pending_topups, 0);
    int64_t amount = -1, count = -1;
    assert_int_equal(store_holds_outstanding(fx->s, &amount, &count), 0);
    assert_int_equal(amount, 0);
    assert_int_equal(count, 0);
}

/* A price version with the given figures. */
static store_price_t price(const char *model, int64_t from, int64_t in, int64_t out, int64_t cached)
{
    store_price_t p;
    memset(&p, 0, sizeof(p));
    snprintf(p.model, sizeof(p.model), "%s", model);
    p.effective_from = from;
    p.input = in;
    p.output = out;
    p.cached_input = cached;
    p.created_at = from - 5;
    return p;
}

/* Prices: versions, -EEXIST, list order, the version in force at a time, rev, bad input. */
static void t_prices(void **state)
{
    fx_t *fx = *state;
    int64_t r0 = -1, r = -1;
    assert_int_equal(store_prices_rev(fx->s, &r0), 0);
    store_price_t p = price("gpt-b", 2000, 3 * M, 12 * M, M);
    assert_int_equal(store_price_set(fx->s, &p), 0);
    p = price("gpt-b", 1000, 2 * M, 8 * M, M / 2);
    assert_int_equal(store_price_set(fx->s, &p), 0);
    p = price("gpt-a", 1500, 150000, 600000, 75000);
    assert_int_equal(store_price_set(fx->s, &p), 0);
    assert_int_equal(store_prices_rev(fx->s, &r), 0);
    assert_int_equal(r, r0 + 3);

    /* the same (model, effective_from) again: -EEXIST, rev unchanged */
    p = price("gpt-b", 1000, 9, 9, 9);
    assert_int_equal(store_price_set(fx->s, &p), -EEXIST);
    assert_int_equal(store_prices_rev(fx->s, &r), 0);
    assert_int_equal(r, r0 + 3);

    store_price_t *list = NULL;
    size_t n = 0;
    assert_int_equal(store_price_list(fx->s, &list, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(list[0].model, "gpt-a");
    assert_string_equal(list[1].model, "gpt-b");
    assert_int_equal(list[1].effective_from, 1000);
    assert_int_equal(list[1].input, 2 * M);
    assert_int_equal(list[1].output, 8 * M);
    assert_int_equal(list[1].cached_input, M / 2);
    assert_int_equal(list[1].created_at, 995);
    assert_string_equal(list[2].model, "gpt-b");
    assert_int_equal(list[2].effective_from, 2000);
    free(list);

    store_price_t at;
    assert_int_equal(store_price_at(fx->s, "gpt-b", 999, &at), -ENOENT);
    assert_int_equal(store_price_at(fx->s, "gpt-b", 1000, &at), 0);
    assert_int_equal(at.effective_from, 1000);
    assert_int_equal(at.input, 2 * M);
    assert_int_equal(store_price_at(fx->s, "gpt-b", 1999, &at), 0);
    assert_int_equal(at.effective_from, 1000);
    assert_int_equal(store_price_at(fx->s, "gpt-b", 2000, &at), 0);
    assert_int_equal(at.effective_from, 2000);
    assert_int_equal(at.output, 12 * M);
    assert_string_equal(at.model, "gpt-b");
    assert_int_equal(store_price_at(fx->s, "gpt-b", INT64_MAX, &at), 0);
    assert_int_equal(at.effective_from, 2000);
    assert_int_equal(store_price_at(fx->s, "gpt-c", 5000, &at), -ENOENT);
    assert_int_equal(store_price_at(fx->s, "GPT-B", 5000, &at), -ENOENT); /* byte for byte */
    assert_int_equal(store_price_at(fx->s, "", 5000, &at), -ENOENT);

    /* models compare byte for byte in both backends: a trailing space is another model */
    p = price("gpt-a ", 1500, 1, 1, 1);
    assert_int_equal(store_price_set(fx->s, &p), 0);
    assert_int_equal(store_price_at(fx->s, "gpt-a", 1500, &at), 0);
    assert_int_equal(at.input, 150000);
    assert_int_equal(store_price_at(fx->s, "gpt-a ", 1500, &at), 0);
    assert_int_equal(at.input, 1);
    /* UTF-8 and the longest model */
    p = price("modèle-日本", 1, 0, 0, 0);
    assert_int_equal(store_price_set(fx->s, &p), 0);
    assert_int_equal(store_price_at(fx->s, "modèle-日本", 1, &at), 0);
    assert_string_equal(at.model, "modèle-日本");
    memset(&p, 0, sizeof(p));
    memset(p.model, 'm', STORE_MODEL_MAX);
    assert_int_equal(store_price_set(fx->s, &p), 0);
    assert_int_equal(store_price_at(fx->s, p.model, 0, &at), 0);
    assert_int_equal(strlen(at.model), STORE_MODEL_MAX);
    assert_int_equal(store_prices_rev(fx->s, &r), 0);
    assert_int_equal(r, r0 + 6);

    /* refused input changes nothing */
    p = price("neg", 1, -1, 0, 0);
    assert_int_equal(store_price_set(fx->s, &p), -EINVAL);
    p = price("neg", 1, 0, -1, 0);
    assert_int_equal(store_price_set(fx->s, &p), -EINVAL);
    p = price("neg", 1, 0, 0, -1);
    assert_int_equal(store_price_set(fx->s, &p), -EINVAL);
    p = price("", 1, 0, 0, 0);
    assert_int_equal(store_price_set(fx->s, &p), -EINVAL);
    p = price("tab\there", 1, 0, 0, 0);
    assert_int_equal(store_price_set(fx->s, &p), -EINVAL);
    p = price("bad\xff", 1, 0, 0, 0);
    assert_int_equal(store_price_set(fx->s, &p), -EINVAL);
    memset(p.model, 'm', sizeof(p.model)); /* no NUL inside the array */
    assert_int_equal(store_price_set(fx->s, &p), -EINVAL);
    assert_int_equal(store_price_set(fx->s, NULL), -EINVAL);
    assert_int_equal(store_prices_rev(fx->s, &r), 0);
    assert_int_equal(r, r0 + 6);
    assert_int_equal(store_price_list(fx->s, &list, &n), 0);
    assert_int_equal(n, 6);
    free(list);
}

/* Top-ups: queued, flagged, applied once and atomically, reflected in the balance. */
static void t_topups(void **state)
{
    fx_t *fx = *state;
    int64_t t1 = 0, t2 = 0, t3 = 0;
    assert_int_equal(store_topup_add(fx->s, fx->alice, 10 * M, 1000, &t1), 0);
    assert_int_equal(store_topup_add(fx->s, fx->alice, M / 2, 1001, &t2), 0);
    assert_int_equal(store_topup_add(fx->s, fx->bob, 3, 1002, &t3), 0);
    assert_true(t1 >= 1 && t2 > t1 && t3 > t2);
    assert_int_equal(store_topup_applied(fx->s, t1), 0);
    assert_int_equal(store_topup_applied(fx->s, t3), 0);
    assert_int_equal(store_topup_applied(fx->s, t3 + 100), -ENOENT);
    assert_int_equal(store_topup_applied(fx->s, 0), -ENOENT);

    store_balance_t b = balance_of(fx, fx->alice);
    assert_int_equal(b.balance, 0);
    assert_int_equal(b.pending_topups, 10 * M + M / 2);
    store_totals_t t;
    assert_int_equal(store_billing_totals(fx->s, &t), 0);
    assert_int_equal(t.topups, 0); /* queued, not applied */

    size_t applied = 99;
    assert_int_equal(store_topups_apply(fx->s, 5000, &applied), 0);
    assert_int_equal(applied, 3);
    assert_int_equal(store_topup_applied(fx->s, t1), 1);
    assert_int_equal(store_topup_applied(fx->s, t2), 1);
    assert_int_equal(store_topup_applied(fx->s, t3), 1);
    b = balance_of(fx, fx->alice);
    assert_int_equal(b.balance, 10 * M + M / 2);
    assert_int_equal(b.pending_topups, 0);
    assert_int_equal(balance_of(fx, fx->bob).balance, 3);

    /* applying again applies nothing */
    assert_int_equal(store_topups_apply(fx->s, 6000, &applied), 0);
    assert_int_equal(applied, 0);
    assert_int_equal(balance_of(fx, fx->alice).balance, 10 * M + M / 2);
    assert_int_equal(store_topups_apply(fx->s, 6000, NULL), 0);

    /* one more, on top */
    assert_int_equal(store_topup_add(fx->s, fx->bob, 7, 1003, NULL), 0);
    assert_int_equal(balance_of(fx, fx->bob).pending_topups, 7);
    assert_int_equal(store_topups_apply(fx->s, 7000, &applied), 0);
    assert_int_equal(applied, 1);
    assert_int_equal(balance_of(fx, fx->bob).balance, 10);
    assert_int_equal(store_billing_totals(fx->s, &t), 0);
    assert_int_equal(t.topups, 10 * M + M / 2 + 10);
    assert_int_equal(t.balances, t.topups);

    /* refusals */
    assert_int_equal(store_topup_add(fx->s, fx->alice, 0, 1, NULL), -EINVAL);
    assert_int_equal(store_topup_add(fx->s, fx->alice, -5, 1, NULL), -EINVAL);
    assert_int_equal(store_topup_add(fx->s, fx->bob + 100, 5, 1, NULL), -ENOENT);
    assert_int_equal(store_topup_add(fx->s, 0, 5, 1, NULL), -ENOENT);
    assert_int_equal(store_balance_get(fx->s, fx->bob + 100, &b), -ENOENT);
    assert_int_equal(store_balance_get(fx->s, 0, &b), -ENOENT);
    assert_int_equal(store_topups_apply(fx->s, 8000, &applied), 0);
    assert_int_equal(applied, 0);
    check_books(fx);
}

/* Holds: granted while the balance lasts (counting earlier grants of the same batch), refused
 * beyond it, zero always granted, idempotent on re-send, and summed. */
static void t_holds(void **state)
{
    fx_t *fx = *state;
    topup(fx, fx->alice, 10 * M);
    uint8_t r[8][16];
    for (uint32_t i = 0; i < 8; i++)
        req_of(r[i], i + 1);
    store_hold_t h[7] = {
        hold(r[0], fx->alice, 4 * M, 9000), hold(r[1], fx->alice, 4 * M, 9000),
        hold(r[2], fx->alice, 4 * M, 9000), /* only 2 left: refused */
        hold(r[3], fx->alice, 2 * M, 9000), /* exactly what is left: granted */
        hold(r[4], fx->bob, 1, 9000),       /* bob has nothing: refused */
        hold(r[5], fx->bob, 0, 9000),       /* zero: granted */
        hold(r[6], fx->alice, 0, 9000),     /* zero with nothing left: granted */
    };
    int res[7];
    int64_t avail[7];
    memset(res, 0x55, sizeof(res));
    assert_int_equal(store_holds_place(fx->s, h, 7, res, avail), 0);
    int want_res[7] = {1, 1, 0, 1, 0, 1, 1};
    int64_t want_avail[7] = {6 * M, 2 * M, 2 * M, 0, 0, 0, 0};
    for (int i = 0; i < 7; i++) {
        assert_int_equal(res[i], want_res[i]);
        assert_int_equal(avail[i], want_avail[i]);
    }
    store_hold_t got;
    assert_int_equal(store_hold_get(fx->s, r[0], &got), 0);
    assert_memory_equal(got.req_id, r[0], 16);
    assert_int_equal(got.user_id, fx->alice);
    assert_int_equal(got.amount, 4 * M);
    assert_int_equal(got.expires_at, 9000);
    assert_int_equal(got.state, STORE_HOLD_ACTIVE);
    assert_true(got.created_at > 1600000000000LL); /* set by the store, in ms */
    assert_int_equal(hold_state(fx, r[2]), STORE_HOLD_REFUSED);
    assert_int_equal(hold_state(fx, r[4]), STORE_HOLD_REFUSED);
    assert_int_equal(hold_state(fx, r[5]), STORE_HOLD_ACTIVE);
    assert_int_equal(store_hold_get(fx->s, r[7], &got), -ENOENT);

    store_balance_t b = balance_of(fx, fx->alice);
    assert_int_equal(b.balance, 10 * M);
    assert_int_equal(b.held, 10 * M);
    int64_t amount = 0, count = 0;
    assert_int_equal(store_holds_outstanding(fx->s, &amount, &count), 0);
    assert_int_equal(amount, 10 * M);
    assert_int_equal(count, 5);

    /* the same requests again (even with other amounts) get their earlier answers and change
     * nothing; a new request in the same batch is decided on the current state */
    store_hold_t again[4] = {
        hold(r[2], fx->alice, 0, 9000), /* refused before: still refused */
        hold(r[0], fx->alice, 99 * M, 9000),
        hold(r[7], fx->alice, 1, 9000), /* new: nothing left */
        hold(r[4], fx->bob, 0, 9000),
    };
    assert_int_equal(store_holds_place(fx->s, again, 4, res, NULL), 0);
    assert_int_equal(res[0], 0);
    assert_int_equal(res[1], 1);
    assert_int_equal(res[2], 0);
    assert_int_equal(res[3], 0);
    assert_int_equal(store_hold_get(fx->s, r[0], &got), 0);
    assert_int_equal(got.amount, 4 * M);
    assert_int_equal(store_holds_outstanding(fx->s, &amount, &count), 0);
    assert_int_equal(amount, 10 * M);
    assert_int_equal(count, 5);

    /* a request twice in one batch: the second gets the first's answer */
    uint8_t d[16];
    req_of(d, 100);
    store_hold_t twice[2] = {hold(d, fx->bob, 0, 9000), hold(d, fx->bob, 0, 9000)};
    assert_int_equal(store_holds_place(fx->s, twice, 2, res, avail), 0);
    assert_int_equal(res[0], 1);
    assert_int_equal(res[1], 1);
    assert_int_equal(store_holds_outstanding(fx->s, &amount, &count), 0);
    assert_int_equal(count, 6);

    /* an empty batch is nothing */
    assert_int_equal(store_holds_place(fx->s, NULL, 0, NULL, NULL), 0);
}

/* Expiry releases what a hold reserved; an expired hold's re-send is still "granted". */
static void t_holds_expire(void **state)
{
    fx_t *fx = *state;
    topup(fx, fx->alice, 5 * M);
    uint8_t a[16], b[16], c[16];
    req_of(a, 1);
    req_of(b, 2);
    req_of(c, 3);
    store_hold_t h[2] = {hold(a, fx->alice, 3 * M, 1000), hold(b, fx->alice, 2 * M, 2000)};
    int res[2];
    int64_t avail[2];
    assert_int_equal(store_holds_place(fx->s, h, 2, res, avail), 0);
    assert_int_equal(res[0] + res[1], 2);
    assert_int_equal(avail[1], 0);
    size_t n = 99;
    assert_int_equal(store_holds_expire(fx->s, 999, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(store_holds_expire(fx->s, 1000, &n), 0); /* due at expires_at */
    assert_int_equal(n, 1);
    assert_int_equal(hold_state(fx, a), STORE_HOLD_EXPIRED);
    assert_int_equal(hold_state(fx, b), STORE_HOLD_ACTIVE);
    assert_int_equal(balance_of(fx, fx->alice).held, 2 * M);
    int64_t amount = 0, count = 0;
    assert_int_equal(store_holds_outstanding(fx->s, &amount, &count), 0);
    assert_int_equal(amount, 2 * M);
    assert_int_equal(count, 1);

    /* the released money can be held again; the expired hold's re-send is answered 1 */
    store_hold_t more[2] = {hold(c, fx->alice, 3 * M, 5000), hold(a, fx->alice, 3 * M, 1000)};
    assert_int_equal(store_holds_place(fx->s, more, 2, res, avail), 0);
    assert_int_equal(res[0], 1);
    assert_int_equal(avail[0], 0);
    assert_int_equal(res[1], 1);
    assert_int_equal(hold_state(fx, a), STORE_HOLD_EXPIRED);

    assert_int_equal(store_holds_expire(fx->s, 10000, NULL), 0);
    assert_int_equal(store_holds_expire(fx->s, 10000, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(hold_state(fx, b), STORE_HOLD_EXPIRED);
    assert_int_equal(hold_state(fx, c), STORE_HOLD_EXPIRED);
    assert_int_equal(balance_of(fx, fx->alice).held, 0);
}

/* A bad item fails the whole batch of holds and places nothing. */
static void t_holds_errors(void **state)
{
    fx_t *fx = *state;
    topup(fx, fx->alice, 5 * M);
    uint8_t a[16], b[16];
    req_of(a, 1);
    req_of(b, 2);
    int res[2];
    store_hold_t h[2] = {hold(a, fx->alice, M, 9000), hold(b, fx->bob + 50, 0, 9000)};
    assert_int_equal(store_holds_place(fx->s, h, 2, res, NULL), -ENOENT);
    store_hold_t got;
    assert_int_equal(store_hold_get(fx->s, a, &got), -ENOENT);
    assert_int_equal(balance_of(fx, fx->alice).held, 0);
    h[1] = hold(b, fx->alice, -1, 9000);
    assert_int_equal(store_holds_place(fx->s, h, 2, res, NULL), -EINVAL);
    h[1] = hold(b, 0, 0, 9000);
    assert_int_equal(store_holds_place(fx->s, h, 2, res, NULL), -EINVAL);
    assert_int_equal(store_hold_get(fx->s, a, &got), -ENOENT);
    assert_int_equal(store_holds_place(fx->s, h, 1, NULL, NULL), -EINVAL);
    assert_int_equal(store_holds_place(fx->s, NULL, 1, res, NULL), -EINVAL);
    /* the store still works afterwards (no transaction left open) */
    assert_int_equal(store_holds_place(fx->s, h, 1, res, NULL), 0);
    assert_int_equal(res[0], 1);
    assert_int_equal(balance_of(fx, fx->alice).held, M);
}

/* Usage reports: stored once per (request, source, attempt), listed in order, refused whole
 * on a bad item. */
static void t_usage(void **state)
{
    fx_t *fx = *state;
    uint8_t a[16], b[16];
    req_of(a, 1);
    req_of(b, 2);
    store_usage_t u[4] = {
        report(a, "gateway", 1, fx->alice, 3000),
        report(b, "agent", 2, 0, 1000), /* an agent may not know the user */
        report(a, "agent", 1, fx->alice, 2000),
        report(a, "agent", 2, fx->alice, 2500),
    };
    u[1].model[0] = '\0'; /* and may not have a model */
    u[1].agent_id[0] = '\0';
    assert_int_equal(store_usage_put(fx->s, u, 4), 0);

    /* a re-send with other figures changes nothing */
    store_usage_t again = u[0];
    again.output_tokens = 999999;
    again.received_at = 1;
    assert_int_equal(store_usage_put(fx->s, &again, 1), 0);

    store_usage_t *got = NULL;
    size_t n = 0;
    assert_int_equal(store_usage_of(fx->s, a, &got, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(got[0].source, "agent");
    assert_int_equal(got[0].attempt, 1);
    assert_string_equal(got[1].source, "agent");
    assert_int_equal(got[1].attempt, 2);
    assert_string_equal(got[2].source, "gateway");
    assert_int_equal(got[2].output_tokens, 50);
    assert_int_equal(got[2].received_at, 3000);
    assert_memory_equal(got[2].req_id, a, 16);
    assert_string_equal(got[2].agent_id, "agent-1");
    assert_int_equal(got[2].user_id, fx->alice);
    assert_string_equal(got[2].model, "gpt-4o-mini");
    assert_int_equal(got[2].status, 200);
    assert_true(got[2].delivered);
    assert_true(got[2].complete);
    assert_false(got[2].estimated);
    assert_int_equal(got[2].input_tokens, 1001);
    assert_int_equal(got[2].cached_tokens, 100);
    assert_true(got[1].estimated);
    assert_false(got[1].complete);
    free(got);

    /* pending: oldest first, limited */
    assert_int_equal(store_usage_pending(fx->s, 0, &got, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(got[0].received_at, 1000);
    assert_memory_equal(got[0].req_id, b, 16);
    assert_string_equal(got[0].model, "");
    assert_string_equal(got[0].agent_id, "");
    assert_int_equal(got[0].user_id, 0);
    assert_int_equal(got[1].received_at, 2000);
    assert_int_equal(got[2].received_at, 2500);
    assert_int_equal(got[3].received_at, 3000);
    free(got);
    assert_int_equal(store_usage_pending(fx->s, 2, &got, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(got[1].received_at, 2000);
    free(got);

    /* a bad item refuses the whole batch */
    uint8_t c[16];
    req_of(c, 3);
    store_usage_t bad[2] = {report(c, "gateway", 1, fx->alice, 4000),
                            report(c, "tunnel", 1, fx->alice, 4000)};
    assert_int_equal(store_usage_put(fx->s, bad, 2), -EINVAL);
    bad[1] = report(c, "agent", 0, fx->alice, 4000);
    assert_int_equal(store_usage_put(fx->s, bad, 2), -EINVAL);
    bad[1] = report(c, "agent", 1, -1, 4000);
    assert_int_equal(store_usage_put(fx->s, bad, 2), -EINVAL);
    bad[1] = report(c, "agent", 1, fx->alice, 4000);
    bad[1].output_tokens = -1;
    assert_int_equal(store_usage_put(fx->s, bad, 2), -EINVAL);
    bad[1] = report(c, "agent", 1, fx->alice, 4000);
    snprintf(bad[1].agent_id, sizeof(bad[1].agent_id), "bad id");
    assert_int_equal(store_usage_put(fx->s, bad, 2), -EINVAL);
    bad[1] = report(c, "agent", 1, fx->alice, 4000);
    snprintf(bad[1].model, sizeof(bad[1].model), "bad\nmodel");
    assert_int_equal(store_usage_put(fx->s, bad, 2), -EINVAL);
    assert_int_equal(reports_of(fx, c), 0);
    assert_int_equal(store_usage_put(fx->s, NULL, 0), 0);
}

/* Pending reports leave out settled requests; a late re-send of a settled request's report
 * is dropped. */
static void t_pending_excludes_settled(void **state)
{
    fx_t *fx = *state;
    uint8_t a[16], b[16];
    req_of(a, 1);
    req_of(b, 2);
    store_usage_t u[3] = {report(a, "gateway", 1, fx->alice, 1000),
                          report(a, "agent", 1, fx->alice, 1001),
                          report(b, "gateway", 1, fx->bob, 1002)};
    assert_int_equal(store_usage_put(fx->s, u, 3), 0);
    store_settle_t it = nothing(a, fx->alice);
    assert_int_equal(store_settle(fx->s, &it, 1), 0);
    store_usage_t *got = NULL;
    size_t n = 0;
    assert_int_equal(store_usage_pending(fx->s, 10, &got, &n), 0);
    assert_int_equal(n, 1);
    assert_memory_equal(got[0].req_id, b, 16);
    free(got);
    assert_int_equal(reports_of(fx, a), 0);
    /* the agent re-sends its report after the settlement: nothing comes back */
    assert_int_equal(store_usage_put(fx->s, &u[1], 1), 0);
    assert_int_equal(reports_of(fx, a), 0);
    assert_int_equal(store_usage_pending(fx->s, 10, &got, &n), 0);
    assert_int_equal(n, 1);
    free(got);
}

/* BILLED: the user is debited, the agent credited, the row appended, the head moved, the hold
 * settled and the reports dropped, in one go. */
static void t_settle_billed(void **state)
{
    fx_t *fx = *state;
    topup(fx, fx->alice, 10 * M);
    uint8_t a[16], b[16];
    req_of(a, 1);
    req_of(b, 2);
    store_hold_t h[2] = {hold(a, fx->alice, 2 * M, 9000), hold(b, fx->alice, 2 * M, 9000)};
    int res[2];
    assert_int_equal(store_holds_place(fx->s, h, 2, res, NULL), 0);
    store_usage_t u[2] = {report(a, "gateway", 1, fx->alice, 1000),
                          report(a, "agent", 1, fx->alice, 1001)};
    assert_int_equal(store_usage_put(fx->s, u, 2), 0);

    store_settle_t it = billed("ag1", 1, a, fx->alice, 1500000, 150000);
    assert_int_equal(store_settle(fx->s, &it, 1), 0);
    store_balance_t bal = balance_of(fx, fx->alice);
    assert_int_equal(bal.balance, 10 * M - 1500000);
    assert_int_equal(bal.held, 2 * M); /* b's hold only */
    assert_int_equal(hold_state(fx, a), STORE_HOLD_SETTLED);
    assert_int_equal(hold_state(fx, b), STORE_HOLD_ACTIVE);
    assert_int_equal(reports_of(fx, a), 0);
    int outcome = 0;
    assert_int_equal(store_settled(fx->s, a, &outcome), 1);
    assert_int_equal(outcome, STORE_OUTCOME_BILLED);
    assert_int_equal(store_settled(fx->s, a, NULL), 1);
    assert_int_equal(store_settled(fx->s, b, &outcome), 0);

    uint64_t seq = 0;
    uint8_t hash[32];
    assert_int_equal(store_ledger_head(fx->s, "ag1", &seq, hash), 0);
    assert_int_equal(seq, 1);
    assert_memory_equal(hash, it.row.hash, 32);
    ledger_row_t row;
    assert_int_equal(store_ledger_by_req(fx->s, a, &row), 0);
    row_equal(&row, &it.row);
    assert_int_equal(store_ledger_by_req(fx->s, b, &row), -ENOENT);

    store_account_t *acc = NULL;
    size_t n = 0;
    assert_int_equal(store_account_list(fx->s, &acc, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(acc[0].agent_id, "ag1");
    assert_int_equal(acc[0].credit, 1350000);
    assert_int_equal(acc[0].last_seq, 1);
    assert_int_equal(acc[0].acked_seq, 0);
    free(acc);

    /* the next row chains on */
    store_settle_t it2 = billed("ag1", 2, b, fx->alice, 999, 99);
    assert_int_equal(store_settle(fx->s, &it2, 1), 0);
    assert_int_equal(store_ledger_head(fx->s, "ag1", &seq, hash), 0);
    assert_int_equal(seq, 2);
    assert_memory_equal(hash, it2.row.hash, 32);
    assert_int_equal(balance_of(fx, fx->alice).balance, 10 * M - 1500000 - 999);
    assert_int_equal(balance_of(fx, fx->alice).held, 0);

    store_totals_t t;
    assert_int_equal(store_billing_totals(fx->s, &t), 0);
    assert_int_equal(t.debits, 1500999);
    assert_int_equal(t.fees, 150099);
    assert_int_equal(t.credits, 1350900);
    assert_int_equal(t.ledger_rows, 2);
    assert_int_equal(t.settled, 2);
    check_books(fx);
}

/* NOTHING: the hold is released and the reports dropped; no money moves, no row. A refused
 * hold stays refused. */
static void t_settle_nothing(void **state)
{
    fx_t *fx = *state;
    topup(fx, fx->alice, M);
    uint8_t a[16], b[16], c[16];
    req_of(a, 1);
    req_of(b, 2);
    req_of(c, 3);
    store_hold_t h[2] = {hold(a, fx->alice, M, 9000), hold(b, fx->alice, M, 9000)};
    int res[2];
    assert_int_equal(store_holds_place(fx->s, h, 2, res, NULL), 0);
    assert_int_equal(res[0], 1);
    assert_int_equal(res[1], 0);
    store_usage_t u = report(a, "gateway", 1, fx->alice, 1000);
    assert_int_equal(store_usage_put(fx->s, &u, 1), 0);
    store_settle_t items[3] = {nothing(a, fx->alice), nothing(b, fx->alice), nothing(c, 0)};
    assert_int_equal(store_settle(fx->s, items, 3), 0);
    assert_int_equal(hold_state(fx, a), STORE_HOLD_SETTLED);
    assert_int_equal(hold_state(fx, b), STORE_HOLD_REFUSED);
    assert_int_equal(reports_of(fx, a), 0);
    store_balance_t bal = balance_of(fx, fx->alice);
    assert_int_equal(bal.balance, M);
    assert_int_equal(bal.held, 0);
    int outcome = 0;
    assert_int_equal(store_settled(fx->s, c, &outcome), 1);
    assert_int_equal(outcome, STORE_OUTCOME_NOTHING);
    /* the refused request re-sent: still refused */
    assert_int_equal(store_holds_place(fx->s, &h[1], 1, res, NULL), 0);
    assert_int_equal(res[0], 0);
    store_totals_t t;
    assert_int_equal(store_billing_totals(fx->s, &t), 0);
    assert_int_equal(t.settled, 3);
    assert_int_equal(t.ledger_rows, 0);
    assert_int_equal(t.debits, 0);
    store_account_t *acc = NULL;
    size_t n = 9;
    assert_int_equal(store_account_list(fx->s, &acc, &n), 0);
    assert_int_equal(n, 0);
    free(acc);
}

/* Sets up a database with one settled row for ag1 (request 1) and, for request 2, a hold and
 * a report, so that a failed batch has something to leave alone. */
static void settle_base(fx_t *fx, uint8_t r1[16], uint8_t r2[16])
{
    topup(fx, fx->alice, 10 * M);
    req_of(r1, 1);
    req_of(r2, 2);
    store_hold_t h[2] = {hold(r1, fx->alice, M, 9000), hold(r2, fx->alice, M, 9000)};
    int res[2];
    assert_int_equal(store_holds_place(fx->s, h, 2, res, NULL), 0);
    store_usage_t u = report(r2, "gateway", 1, fx->alice, 1000);
    assert_int_equal(store_usage_put(fx->s, &u, 1), 0);
    store_settle_t it = billed("ag1", 1, r1, fx->alice, 700000, 70000);
    assert_int_equal(store_settle(fx->s, &it, 1), 0);
}

/* A request settled already fails the whole batch with -EALREADY; nothing changes. */
static void t_settle_already(void **state)
{
    fx_t *fx = *state;
    uint8_t r1[16], r2[16];
    settle_base(fx, r1, r2);
    snap_t before = snap(fx);
    store_settle_t items[2] = {billed("ag1", 2, r2, fx->alice, 500000, 50000),
                               nothing(r1, fx->alice)};
    assert_int_equal(store_settle(fx->s, items, 2), -EALREADY);
    assert_non_null(strstr(store_last_error(fx->s), "settled already"));
    snap_t after = snap(fx);
    snap_equal(&before, &after);
    assert_int_equal(store_settled(fx->s, r2, NULL), 0);
    assert_int_equal(hold_state(fx, r2), STORE_HOLD_ACTIVE);
    assert_int_equal(reports_of(fx, r2), 1);

    /* the same request twice in one batch */
    store_settle_t twice[2] = {nothing(r2, fx->alice), nothing(r2, fx->alice)};
    assert_int_equal(store_settle(fx->s, twice, 2), -EALREADY);
    after = snap(fx);
    snap_equal(&before, &after);

    /* without the culprit the batch goes through */
    assert_int_equal(store_settle(fx->s, items, 1), 0);
    assert_int_equal(store_settled(fx->s, r2, NULL), 1);
    check_books(fx);
}

/* A row that does not follow the agent's chain fails the whole batch with -ESTALE; nothing
 * changes. Two rows of one agent in one batch chain on each other. */
static void t_settle_stale(void **state)
{
    fx_t *fx = *state;
    uint8_t r1[16], r2[16], r3[16], r4[16];
    settle_base(fx, r1, r2);
    req_of(r3, 3);
    req_of(r4, 4);
    snap_t before = snap(fx);

    store_settle_t items[2];
    items[0] = nothing(r3, fx->alice);
    items[1] = billed("ag1", 3, r2, fx->alice, 1000, 100); /* seq skips 2 */
    assert_int_equal(store_settle(fx->s, items, 2), -ESTALE);
    snap_t after = snap(fx);
    snap_equal(&before, &after);
    assert_int_equal(store_settled(fx->s, r3, NULL), 0);

    items[1] = billed("ag1", 1, r2, fx->alice, 1000, 100); /* seq goes back */
    assert_int_equal(store_settle(fx->s, items, 2), -ESTALE);
    items[1] = billed("ag1", 2, r2, fx->alice, 1000, 100);
    items[1].row.prev_hash[7] ^= 1; /* not the hash of seq 1 */
    assert_int_equal(store_settle(fx->s, items, 2), -ESTALE);
    items[1] = billed("ag2", 1, r2, fx->alice, 1000, 100);
    items[1].row.prev_hash[0] = 1; /* a first row must follow zeros */
    assert_int_equal(store_settle(fx->s, items, 2), -ESTALE);
    items[1] = billed("ag2", 2, r2, fx->alice, 1000, 100); /* ag2 has no rows yet */
    assert_int_equal(store_settle(fx->s, items, 2), -ESTALE);
    after = snap(fx);
    snap_equal(&before, &after);
    assert_int_equal(hold_state(fx, r2), STORE_HOLD_ACTIVE);
    assert_int_equal(reports_of(fx, r2), 1);
    uint64_t seq = 9;
    uint8_t hash[32];
    assert_int_equal(store_ledger_head(fx->s, "ag2", &seq, hash), 0);
    assert_int_equal(seq, 0);

    /* rows 2 and 3 of ag1 and row 1 of ag2 in one batch */
    store_settle_t chain[3] = {billed("ag1", 2, r2, fx->alice, 1000, 100),
                               billed("ag2", 1, r3, fx->bob, 0, 0),
                               billed("ag1", 3, r4, fx->alice, 2000, 0)};
    assert_int_equal(store_settle(fx->s, chain, 3), 0);
    assert_int_equal(store_ledger_head(fx->s, "ag1", &seq, hash), 0);
    assert_int_equal(seq, 3);
    assert_memory_equal(hash, chain[2].row.hash, 32);
    assert_int_equal(store_ledger_head(fx->s, "ag2", &seq, hash), 0);
    assert_int_equal(seq, 1);
    assert_int_equal(balance_of(fx, fx->bob).balance, 0); /* a free row: a money row of 0 */
    check_books(fx);
}

/* A request that cost more than its hold is charged in full: the balance goes negative;
 * after that only zero holds are granted. */
static void t_settle_negative(void **state)
{
    fx_t *fx = *state;
    topup(fx, fx->alice, M);
    uint8_t a[16], b[16], c[16];
    req_of(a, 1);
    req_of(b, 2);
    req_of(c, 3);
    store_hold_t h = hold(a, fx->alice, M, 9000);
    int res[2];
    int64_t avail[2];
    assert_int_equal(store_holds_place(fx->s, &h, 1, res, avail), 0);
    assert_int_equal(res[0], 1);
    store_settle_t it = billed("ag1", 1, a, fx->alice, 3 * M, 300000);
    assert_int_equal(store_settle(fx->s, &it, 1), 0);
    store_balance_t bal = balance_of(fx, fx->alice);
    assert_int_equal(bal.balance, -2 * M);
    assert_int_equal(bal.held, 0);
    store_hold_t more[2] = {hold(b, fx->alice, 1, 9000), hold(c, fx->alice, 0, 9000)};
    assert_int_equal(store_holds_place(fx->s, more, 2, res, avail), 0);
    assert_int_equal(res[0], 0);
    assert_int_equal(avail[0], -2 * M);
    assert_int_equal(res[1], 1);
    assert_int_equal(avail[1], -2 * M);

    /* bob has no money row at all: the charge creates one below zero */
    uint8_t d[16];
    req_of(d, 4);
    store_settle_t it2 = billed("ag1", 2, d, fx->bob, 5, 1);
    assert_int_equal(store_settle(fx->s, &it2, 1), 0);
    assert_int_equal(balance_of(fx, fx->bob).balance, -5);
    store_totals_t t;
    assert_int_equal(store_billing_totals(fx->s, &t), 0);
    assert_int_equal(t.balances, -2 * M - 5);
    check_books(fx);
}

/* Settlements that do not check are refused whole (-EINVAL; an unknown user -ENOENT). */
static void t_settle_invalid(void **state)
{
    fx_t *fx = *state;
    uint8_t r1[16], r2[16];
    settle_base(fx, r1, r2);
    snap_t before = snap(fx);
    store_settle_t items[2];
    items[0] = nothing(r2, fx->alice);
    struct {
        int field;
        int rc;
    } cases[] = {{0, -EINVAL},  {1, -EINVAL},  {2, -EINVAL},  {3, -EINVAL},  {4, -EINVAL},
                 {5, -EINVAL},  {6, -EINVAL},  {7, -EINVAL},  {8, -EINVAL},  {9, -EINVAL},
                 {10, -EINVAL}, {11, -EINVAL}, {12, -EINVAL}, {13, -ENOENT}, {14, -EINVAL}};
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        uint8_t r3[16];
        req_of(r3, 3);
        items[1] = billed("ag1", 2, r3, fx->alice, 1000, 100);
        store_settle_t *it = &items[1];
        switch (cases[k].field) {
        case 0: /* cost != fee + credit */
            it->row.credit += 1;
            break;
        case 1: /* not the item's request */
            it->row.req_id[5] ^= 1;
            break;
        case 2: /* not the item's user */
            it->row.user_id = fx->bob;
            break;
        case 3: /* no such outcome */
            it->outcome = 7;
            break;
        case 4: /* cached > input */
            it->row.cached_tokens = 5000;
            break;
        case 5: /* fee rate over 100% */
            it->row.fee_ppm = 1000001;
            break;
        case 6: /* malformed agent id */
            snprintf(it->row.agent_id, sizeof(it->row.agent_id), "a/b");
            break;
        case 7: /* no model */
            it->row.model[0] = '\0';
            break;
        case 8: /* seq 0 */
            it->row.seq = 0;
            break;
        case 9: /* attempt 0 */
            it->row.attempt = 0;
            break;
        case 10: /* a negative figure */
            it->row.output_tokens = -1;
            break;
        case 11: /* a negative fee that still adds up */
            it->row.fee = -1;
            it->row.credit = 1001;
            break;
        case 12: /* a negative hold */
            it->row.hold = -1;
            break;
        case 13: /* no such user: the debit fails after earlier writes, all rolled back */
            it->user_id = it->row.user_id = fx->bob + 77;
            break;
        case 14: /* NOTHING for a negative user id */
            it->outcome = STORE_OUTCOME_NOTHING;
            it->user_id = -1;
            break;
        default:
            break;
        }
        int rc = store_settle(fx->s, items, 2);
        if (rc != cases[k].rc)
            fail_msg("case %d: store_settle = %d, want %d (%s)", cases[k].field, rc, cases[k].rc,
                     store_last_error(fx->s));
        snap_t after = snap(fx);
        snap_equal(&before, &after);
    }
    assert_int_equal(store_settle(fx->s, NULL, 1), -EINVAL);
    assert_int_equal(store_settle(fx->s, NULL, 0), 0);
    assert_int_equal(store_settled(fx->s, r2, NULL), 0);
}

/* Ledger reads: ranges, limits, heads and rows by request, per agent. */
static void t_ledger_range(void **state)
{
    fx_t *fx = *state;
    topup(fx, fx->alice, 100 * M);
    store_settle_t items[7];
    uint64_t seq_a = 0, seq_b = 0;
    for (uint32_t i = 0; i < 7; i++) {
        uint8_t r[16];
        req_of(r, 10 + i);
        bool to_b = i == 2 || i == 5;
        items[i] = to_b ? billed("agent-b", ++seq_b, r, fx->alice, 1000 + i, i)
                        : billed("agent-a", ++seq_a, r, fx->alice, 1000 + i, i);
    }
    assert_int_equal(store_settle(fx->s, items, 4), 0);
    assert_int_equal(store_settle(fx->s, items + 4, 3), 0);
    ledger_row_t *rows = NULL;
    size_t n = 0;
    assert_int_equal(store_ledger_range(fx->s, "agent-a", 1, 0, &rows, &n), 0);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(rows[i].seq, i + 1);
        assert_string_equal(rows[i].agent_id, "agent-a");
        if (i > 0)
            assert_memory_equal(rows[i].prev_hash, rows[i - 1].hash, 32);
    }
    row_equal(&rows[2], &items[3].row);
    free(rows);
    assert_int_equal(store_ledger_range(fx->s, "agent-a", 3, 2, &rows, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(rows[0].seq, 3);
    assert_int_equal(rows[1].seq, 4);
    free(rows);
    assert_int_equal(store_ledger_range(fx->s, "agent-a", 0, 1, &rows, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(rows[0].seq, 1);
    free(rows);
    assert_int_equal(store_ledger_range(fx->s, "agent-a", 6, 0, &rows, &n), 0);
    assert_int_equal(n, 0);
    free(rows);
    assert_int_equal(store_ledger_range(fx->s, "agent-b", 2, 0, &rows, &n), 0);
    assert_int_equal(n, 1);
    row_equal(&rows[0], &items[5].row);
    free(rows);
    assert_int_equal(store_ledger_range(fx->s, "agent-c", 1, 0, &rows, &n), 0);
    assert_int_equal(n, 0);
    free(rows);
    assert_int_equal(store_ledger_range(fx->s, "bad id!", 1, 0, &rows, &n), 0);
    assert_int_equal(n, 0);
    free(rows);
    assert_int_equal(store_ledger_range(fx->s, "agent-a", UINT64_MAX, 0, &rows, &n), 0);
    assert_int_equal(n, 0);
    free(rows);

    uint64_t seq = 0;
    uint8_t hash[32];
    assert_int_equal(store_ledger_head(fx->s, "agent-b", &seq, hash), 0);
    assert_int_equal(seq, 2);
    assert_memory_equal(hash, items[5].row.hash, 32);
    assert_int_equal(store_ledger_head(fx->s, "nobody", &seq, hash), 0);
    assert_int_equal(seq, 0);
    uint8_t zeros[32] = {0};
    assert_memory_equal(hash, zeros, 32);
    ledger_row_t row;
    assert_int_equal(store_ledger_by_req(fx->s, items[6].req_id, &row), 0);
    row_equal(&row, &items[6].row);
    assert_int_equal(balance_of(fx, fx->alice).balance, 100 * M - (7 * 1000 + 21));
    check_books(fx);
}

/* Acknowledgements never move back; accounts are listed by agent id. */
static void t_ack_accounts(void **state)
{
    fx_t *fx = *state;
    topup(fx, fx->alice, 10 * M);
    store_settle_t items[3];
    for (uint32_t i = 0; i < 3; i++) {
        uint8_t r[16];
        req_of(r, i + 1);
        items[i] = billed("zed", i + 1, r, fx->alice, 100, 10);
    }
    assert_int_equal(store_settle(fx->s, items, 3), 0);
    assert_int_equal(store_ledger_ack(fx->s, "zed", 2), 0);
    assert_int_equal(store_ledger_ack(fx->s, "zed", 1), 0);   /* never back */
    assert_int_equal(store_ledger_ack(fx->s, "alpha", 4), 0); /* no rows: an account anyway */
    assert_int_equal(store_ledger_ack(fx->s, "alpha", 0), 0);
    assert_int_equal(store_ledger_ack(fx->s, "bad id", 1), -EINVAL);
    assert_int_equal(store_ledger_ack(fx->s, "zed", (uint64_t)INT64_MAX + 1), -EINVAL);
    store_account_t *acc = NULL;
    size_t n = 0;
    assert_int_equal(store_account_list(fx->s, &acc, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(acc[0].agent_id, "alpha");
    assert_int_equal(acc[0].acked_seq, 4);
    assert_int_equal(acc[0].last_seq, 0);
    assert_int_equal(acc[0].credit, 0);
    assert_string_equal(acc[1].agent_id, "zed");
    assert_int_equal(acc[1].acked_seq, 2);
    assert_int_equal(acc[1].last_seq, 3);
    assert_int_equal(acc[1].credit, 270);
    free(acc);
    assert_int_equal(store_ledger_ack(fx->s, "zed", 3), 0);
    assert_int_equal(store_account_list(fx->s, &acc, &n), 0);
    assert_int_equal(acc[1].acked_seq, 3);
    free(acc);
    /* an account made by an ack starts a chain at seq 1 like any other */
    uint8_t r[16];
    req_of(r, 50);
    store_settle_t first = billed("alpha", 1, r, fx->alice, 10, 1);
    assert_int_equal(store_settle(fx->s, &first, 1), 0);
    assert_int_equal(store_account_list(fx->s, &acc, &n), 0);
    assert_int_equal(acc[0].last_seq, 1);
    assert_int_equal(acc[0].acked_seq, 4);
    assert_int_equal(acc[0].credit, 9);
    free(acc);
    check_books(fx);
}

/* The books balance after a mix of everything. */
static void t_totals(void **state)
{
    fx_t *fx = *state;
    topup(fx, fx->alice, 20 * M);
    topup(fx, fx->bob, 3 * M);
    assert_int_equal(store_topup_add(fx->s, fx->bob, M, 1, NULL), 0); /* queued only */
    int64_t seq[3] = {0, 0, 0};
    const char *agents[3] = {"a1", "a2", "a3"};
    int64_t debits = 0, fees = 0;
    for (uint32_t i = 0; i < 30; i++) {
        uint8_t r[16];
        req_of(r, 1000 + i);
        int64_t user = i % 3 == 0 ? fx->bob : fx->alice;
        store_hold_t h = hold(r, user, 500000, 99999);
        int res = 0;
        assert_int_equal(store_holds_place(fx->s, &h, 1, &res, NULL), 0);
        store_settle_t it;
        if (i % 4 == 3) {
            it = nothing(r, user);
        } else {
            int k = (int)(i % 3);
            int64_t cost = 123457 * (i + 1) % 900001, fee = cost / 7;
            it = billed(agents[k], (uint64_t)++seq[k], r, user, cost, fee);
            debits += cost;
            fees += fee;
        }
        assert_int_equal(store_settle(fx->s, &it, 1), 0);
    }
    store_totals_t t;
    assert_int_equal(store_billing_totals(fx->s, &t), 0);
    assert_int_equal(t.topups, 23 * M);
    assert_int_equal(t.debits, debits);
    assert_int_equal(t.fees, fees);
    assert_int_equal(t.credits, debits - fees);
    assert_int_equal(t.balances, 23 * M - debits);
    assert_int_equal(t.settled, 30);
    assert_int_equal(t.ledger_rows, seq[0] + seq[1] + seq[2]);
    assert_int_equal(balance_of(fx, fx->alice).held, 0);
    check_books(fx);
}

#define CONC_PROCS 4
#define CONC_BATCHES 10
#define CONC_BATCH 5

/* Child of t_holds_concurrent: places CONC_BATCHES batches of CONC_BATCH holds of 1 unit each
 * for the user, retrying a batch the database could not take (-EBUSY: a lock wait or
 * deadlock). Exit status: the holds granted, or 200 + the step that failed. */
static void conc_child(const store_params_t *params, int child, int64_t user)
{
    store_t *s = NULL;
    char err[256];
    if (store_open(params, &s, err, sizeof(err)) < 0)
        _exit(200);
    int granted = 0;
    for (int b = 0; b < CONC_BATCHES; b++) {
        store_hold_t h[CONC_BATCH];
        for (int i = 0; i < CONC_BATCH; i++) {
            uint8_t r[16];
            req_of(r, (uint32_t)(10000 + child * 1000 + b * CONC_BATCH + i));
            h[i] = hold(r, user, M, INT64_MAX);
        }
        int res[CONC_BATCH];
        int rc, tries = 0;
        while ((rc = store_holds_place(s, h, CONC_BATCH, res, NULL)) == -EBUSY && tries++ < 50)
            usleep(1000);
        if (rc < 0)
            _exit(201);
        for (int i = 0; i < CONC_BATCH; i++)
            granted += res[i];
    }
    store_destroy(&s);
    _exit(granted);
}

/* Several processes place holds for one user at once: exactly what the balance covers is
 * granted, never more (each batch sees the others' committed holds). */
static void t_holds_concurrent(void **state)
{
    fx_t *fx = *state;
    topup(fx, fx->alice, 37 * M);
    store_destroy(&fx->s); /* children must not inherit an open connection */
    pid_t pids[CONC_PROCS];
    for (int c = 0; c < CONC_PROCS; c++) {
        pids[c] = fork();
        assert_true(pids[c] >= 0);
        if (pids[c] == 0)
            conc_child(&fx->params, c, fx->alice);
    }
    int granted = 0;
    for (int c = 0; c < CONC_PROCS; c++) {
        int status = 0;
        assert_int_equal(waitpid(pids[c], &status, 0), pids[c]);
        assert_true(WIFEXITED(status));
        if (WEXITSTATUS(status) >= 200)
            fail_msg("child %d failed at step %d", c, WEXITSTATUS(status) - 200);
        granted += WEXITSTATUS(status);
    }
    char err[256];
    assert_int_equal(store_open(&fx->params, &fx->s, err, sizeof(err)), 0);
    assert_int_equal(granted, 37);
    store_balance_t b = balance_of(fx, fx->alice);
    assert_int_equal(b.held, 37 * M);
    int64_t amount = 0, count = 0;
    assert_int_equal(store_holds_outstanding(fx->s, &amount, &count), 0);
    assert_int_equal(count, 37);
}

/* What one connection writes, another reads (prices and heads are not cached). */
static void t_two_connections(void **state)
{
    fx_t *fx = *state;
    store_t *other = NULL;
    char err[256];
    assert_int_equal(store_open(&fx->params, &other, err, sizeof(err)), 0);
    int64_t r0 = -1, r1 = -1;
    assert_int_equal(store_prices_rev(other, &r0), 0);
    store_price_t p = price("m", 1, 1, 2, 3);
    assert_int_equal(store_price_set(fx->s, &p), 0);
    assert_int_equal(store_prices_rev(other, &r1), 0);
    assert_true(r1 > r0);
    store_price_t at;
    assert_int_equal(store_price_at(other, "m", 5, &at), 0);
    assert_int_equal(at.cached_input, 3);
    topup(fx, fx->alice, M);
    uint8_t r[16];
    req_of(r, 1);
    store_settle_t it = billed("ag1", 1, r, fx->alice, 10, 1);
    assert_int_equal(store_settle(other, &it, 1), 0);
    uint64_t seq = 0;
    uint8_t hash[32];
    assert_int_equal(store_ledger_head(fx->s, "ag1", &seq, hash), 0);
    assert_int_equal(seq, 1);
    /* the second connection now appends on the head the first sees */
    req_of(r, 2);
    it = billed("ag1", 2, r, fx->alice, 10, 1);
    assert_int_equal(store_settle(fx->s, &it, 1), 0);
    req_of(r, 3);
    it = billed("ag1", 2, r, fx->alice, 10, 1);
    assert_int_equal(store_settle(other, &it, 1), -ESTALE);
    store_destroy(&other);
    check_books(fx);
}

/* NULL arguments are refused, never dereferenced. */
static void t_null_args(void **state)
{
    fx_t *fx = *state;
    store_t *s = fx->s;
    uint8_t r[32] = {0}; /* a request id, or a hash */
    int64_t v = 0;
    uint64_t seq = 0;
    size_t n = 0;
    store_price_t price_out, *prices = NULL;
    store_hold_t hold_out;
    store_usage_t *reports = NULL;
    ledger_row_t *rows = NULL;
    store_account_t *accounts = NULL;
    store_totals_t totals;
    price_out = price("m", 1, 1, 1, 1);
    assert_int_equal(store_price_set(NULL, &price_out), -EINVAL);
    assert_int_equal(store_price_list(NULL, &prices, &n), -EINVAL);
    assert_int_equal(store_price_list(s, NULL, &n), -EINVAL);
    assert_int_equal(store_price_list(s, &prices, NULL), -EINVAL);
    assert_int_equal(store_price_at(s, NULL, 0, &price_out), -EINVAL);
    assert_int_equal(store_price_at(s, "m", 0, NULL), -EINVAL);
    assert_int_equal(store_prices_rev(s, NULL), -EINVAL);
    assert_int_equal(store_topup_add(NULL, 1, 1, 1, NULL), -EINVAL);
    assert_int_equal(store_topup_applied(NULL, 1), -EINVAL);
    assert_int_equal(store_topups_apply(NULL, 1, NULL), -EINVAL);
    assert_int_equal(store_balance_get(s, 1, NULL), -EINVAL);
    assert_int_equal(store_hold_get(s, NULL, &hold_out), -EINVAL);
    assert_int_equal(store_hold_get(s, r, NULL), -EINVAL);
    assert_int_equal(store_holds_expire(NULL, 1, NULL), -EINVAL);
    assert_int_equal(store_holds_outstanding(s, &v, NULL), -EINVAL);
    assert_int_equal(store_holds_outstanding(s, NULL, &v), -EINVAL);
    assert_int_equal(store_usage_put(s, NULL, 1), -EINVAL);
    assert_int_equal(store_usage_pending(s, 1, NULL, &n), -EINVAL);
    assert_int_equal(store_usage_of(s, NULL, &reports, &n), -EINVAL);
    assert_int_equal(store_settled(s, NULL, NULL), -EINVAL);
    assert_int_equal(store_ledger_head(s, NULL, &seq, r), -EINVAL);
    assert_int_equal(store_ledger_head(s, "a", NULL, r), -EINVAL);
    assert_int_equal(store_ledger_range(s, "a", 1, 0, NULL, &n), -EINVAL);
    assert_int_equal(store_ledger_range(s, NULL, 1, 0, &rows, &n), -EINVAL);
    assert_int_equal(store_ledger_by_req(s, r, NULL), -EINVAL);
    assert_int_equal(store_ledger_ack(s, NULL, 1), -EINVAL);
    assert_int_equal(store_ledger_ack(NULL, "a", 1), -EINVAL);
    assert_int_equal(store_account_list(s, NULL, &n), -EINVAL);
    assert_int_equal(store_account_list(NULL, &accounts, &n), -EINVAL);
    assert_int_equal(store_billing_totals(s, NULL), -EINVAL);
    assert_int_equal(store_billing_totals(NULL, &totals), -EINVAL);
    assert_null(prices);
    assert_null(reports);
    assert_null(rows);
    assert_null(accounts);
}

#define BOTH(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
    const char *lvl = getenv("RELAYHUB_TEST_LOG");
    if (lvl)
        bus_log_parse_level(lvl, &bus_log_level);
    bus_log_set_process("test_store_billing");

    const struct CMUnitTest cases[] = {
        BOTH(t_schema),          BOTH(t_prices),
        BOTH(t_topups),          BOTH(t_holds),
        BOTH(t_holds_expire),    BOTH(t_holds_errors),
        BOTH(t_usage),           BOTH(t_pending_excludes_settled),
        BOTH(t_settle_billed),   BOTH(t_settle_nothing),
        BOTH(t_settle_already),  BOTH(t_settle_stale),
        BOTH(t_settle_negative), BOTH(t_settle_invalid),
        BOTH(t_ledger_range),    BOTH(t_ack_accounts),
        BOTH(t_totals),          BOTH(t_holds_concurrent),
        BOTH(t_two_connections), BOTH(t_null_args),
    };
    int failed =
        cmocka_run_group_tests_name("billing_sqlite", cases, grp_sqlite_setup, grp_teardown);
    int my = cmocka_run_group_tests_name("billing_mysql", cases, grp_mysql_setup, grp_teardown);
    if (my == 0 && !getenv(MYSQL_ENV))
        my = 1; /* never let a missing server pass */
    failed += my;
    mysql_library_end();
    return failed ? 1 : 0;
}
