/* Unit tests for services/tunnel/tun_registry: the worker's snapshots of the agent registry
 * (SQLite in a temporary folder): -EAGAIN until the first load, lookups, changes seen within a
 * second, an unreachable store that never blocks shutdown, and a registry of 200 agents. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"
#include "test_util.h"
#include "tun_registry.h"

#define POLL_MS 20   /* the worker's re-read interval */
#define SEEN_MS 1000 /* a change must be visible within this */
#define MANY 200     /* agents in the large registry */

static char s_tmpdir[64]; /* this run's scratch directory */

/* Creates the scratch directory. */
static int group_setup(void **state)
{
    (void)state;
    return tu_tmpdir_new(s_tmpdir, sizeof s_tmpdir, "test_tun_registry");
}

/* Removes the scratch directory. */
static int group_teardown(void **state)
{
    (void)state;
    return tu_rm_rf(s_tmpdir);
}

/* Monotonic milliseconds. */
static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps ms milliseconds. */
static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A test database: its path, parameters and the test's own connection. */
typedef struct {
    char path[PATH_MAX];   /* the SQLite file */
    store_params_t params; /* parameters pointing at it */
    store_t *st;           /* the test's connection (the registry opens its own) */
} db_t;

/* Points db at <tmpdir>/<dir>/hub.db, without creating anything. */
static void db_params(db_t *db, const char *dir)
{
    memset(db, 0, sizeof *db);
    int n = snprintf(db->path, sizeof db->path, "%s/%s/hub.db", s_tmpdir, dir);
    assert_true(n > 0 && (size_t)n < sizeof db->path);
    db->params.backend = STORE_SQLITE;
    db->params.sqlite_path = db->path;
}

/* Creates <tmpdir>/<dir>/hub.db with the schema and opens the test's connection to it. */
static void db_create(db_t *db, const char *dir)
{
    db_params(db, dir);
    char d[PATH_MAX];
    snprintf(d, sizeof d, "%s/%s", s_tmpdir, dir);
    assert_int_equal(mkdir(d, 0700), 0);
    char err[256];
    int rc = store_open(&db->params, &db->st, err, sizeof err);
    if (rc != 0)
        fail_msg("store_open %s: %d %s", db->path, rc, err);
    assert_true(store_migrate(db->st) >= 0);
}

/* A deterministic public key for seed. */
static void key_of(int seed, uint8_t key[32])
{
    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)(seed * 37 + i * 11 + 1);
}

/* Adds agent id with name and the key of seed. */
static void add_agent(db_t *db, const char *id, const char *name, int seed, int64_t created)
{
    uint8_t key[32];
    key_of(seed, key);
    int rc = store_agent_add(db->st, id, name, key, created);
    if (rc != 0)
        fail_msg("store_agent_add %s: %d %s", id, rc, store_last_error(db->st));
}

/* Looks id up until the result is no longer -EAGAIN or ms pass. Returns the last result. */
static int lookup_ready(tun_registry_t *r, const char *id, tun_hs_agent_t *out, int ms)
{
    int64_t end = now_ms() + ms;
    for (;;) {
        int rc = tun_registry_lookup(r, id, out);
        if (rc != -EAGAIN || now_ms() >= end)
            return rc;
        sleep_ms(5);
    }
}

/* Looks id up until it is found with the given disabled flag (or ms pass); returns the ms it
 * took, or -1 if it never did. */
static int64_t wait_state(tun_registry_t *r, const char *id, bool disabled, int ms)
{
    int64_t t0 = now_ms();
    for (;;) {
        tun_hs_agent_t a;
        memset(&a, 0xa5, sizeof a);
        if (tun_registry_lookup(r, id, &a) == 0 && a.disabled == disabled)
            return now_ms() - t0;
        if (now_ms() - t0 >= ms)
            return -1;
        sleep_ms(5);
    }
}

/* Checks that a lookup result is agent seed named name, with the given status. */
static void assert_agent(const tun_hs_agent_t *a, const char *name, int seed, bool disabled)
{
    uint8_t key[32];
    key_of(seed, key);
    assert_memory_equal(a->pubkey, key, 32);
    assert_string_equal(a->name, name);
    assert_int_equal(a->disabled, disabled);
}

/* ---- load, lookup, changes ---- */

static void test_load_lookup_and_changes(void **state)
{
    (void)state;
    db_t db;
    db_create(&db, "changes");
    add_agent(&db, "agent-a", "alpha", 1, 1000);
    add_agent(&db, "agent-b", "beta", 2, 1001);

    tun_registry_t *r = tun_registry_new(&db.params, POLL_MS);
    assert_non_null(r);
    tun_hs_agent_t a;
    memset(&a, 0, sizeof a);
    /* Right after the start the worker may or may not have loaded already. */
    int rc = tun_registry_lookup(r, "agent-a", &a);
    assert_true(rc == 0 || rc == -EAGAIN);

    assert_int_equal(lookup_ready(r, "agent-a", &a, 2000), 0);
    assert_agent(&a, "alpha", 1, false);
    assert_true(tun_registry_ready(r));
    assert_int_equal(tun_registry_count(r), 2);
    assert_int_equal(tun_registry_generation(r), 1);
    assert_int_equal(tun_registry_errors(r), 0);
    assert_int_equal(tun_registry_lookup(r, "agent-b", &a), 0);
    assert_agent(&a, "beta", 2, false);

    /* Unknown ids, including a prefix, an extension, "" and one too long for any row. */
    char toolong[STORE_AGENT_ID_MAX + 8];
    memset(toolong, 'a', sizeof toolong - 1);
    toolong[sizeof toolong - 1] = '\0';
    const char *unknown[] = {"agent-c", "agent-", "agent-aa", "", "AGENT-A", toolong};
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
        if (tun_registry_lookup(r, unknown[i], &a) != -ENOENT)
            fail_msg("lookup of \"%s\" did not give -ENOENT", unknown[i]);
    }

    /* Nothing changed: the worker makes no new snapshot, however often it polls. */
    sleep_ms(5 * POLL_MS);
    assert_false(tun_registry_refresh(r));
    assert_int_equal(tun_registry_generation(r), 1);

    /* Disabled in the store: seen within a second, in a new snapshot. */
    uint64_t g0 = tun_registry_generation(r);
    assert_int_equal(store_agent_set_status(db.st, "agent-a", "disabled"), 0);
    int64_t took = wait_state(r, "agent-a", true, SEEN_MS);
    if (took < 0)
        fail_msg("disabling agent-a was not seen within %d ms", SEEN_MS);
    assert_true(tun_registry_generation(r) > g0);
    assert_int_equal(tun_registry_lookup(r, "agent-a", &a), 0);
    assert_agent(&a, "alpha", 1, true);
    assert_int_equal(tun_registry_lookup(r, "agent-b", &a), 0);
    assert_agent(&a, "beta", 2, false);
    assert_int_equal(tun_registry_count(r), 2);

    /* Enabled again. */
    g0 = tun_registry_generation(r);
    assert_int_equal(store_agent_set_status(db.st, "agent-a", "active"), 0);
    if (wait_state(r, "agent-a", false, SEEN_MS) < 0)
        fail_msg("re-enabling agent-a was not seen within %d ms", SEEN_MS);
    assert_true(tun_registry_generation(r) > g0);

    /* A new agent: found within a second. */
    g0 = tun_registry_generation(r);
    add_agent(&db, "agent-c", "gamma", 3, 999); /* created earliest: listed first */
    if (wait_state(r, "agent-c", false, SEEN_MS) < 0)
        fail_msg("agent-c was not found within %d ms", SEEN_MS);
    assert_int_equal(tun_registry_lookup(r, "agent-c", &a), 0);
    assert_agent(&a, "gamma", 3, false);
    assert_true(tun_registry_generation(r) > g0);
    assert_int_equal(tun_registry_count(r), 3);
    assert_int_equal(tun_registry_lookup(r, "agent-a", &a), 0);
    assert_agent(&a, "alpha", 1, false);
    assert_int_equal(tun_registry_errors(r), 0);

    int64_t t0 = now_ms();
    tun_registry_destroy(&r);
    assert_null(r);
    assert_true(now_ms() - t0 < 1000);
    tun_registry_destroy(&r); /* NULL is fine */
    tun_registry_destroy(NULL);
    store_destroy(&db.st);
}

/* ---- an unreachable store ---- */

static void test_unreachable_store(void **state)
{
    (void)state;
    db_t db;
    db_params(&db, "not-yet/deeper"); /* the worker cannot create the file there */
    tun_registry_t *r = tun_registry_new(&db.params, POLL_MS);
    assert_non_null(r);

    /* Lookups stay -EAGAIN (not -ENOENT: the registry does not know yet). */
    tun_hs_agent_t a;
    int64_t t0 = now_ms();
    while (now_ms() - t0 < 200) {
        assert_int_equal(tun_registry_lookup(r, "agent-a", &a), -EAGAIN);
        assert_false(tun_registry_refresh(r));
        sleep_ms(10);
    }
    assert_false(tun_registry_ready(r));
    assert_int_equal(tun_registry_count(r), 0);
    assert_int_equal(tun_registry_generation(r), 0);
    uint64_t e1 = tun_registry_errors(r);
    assert_true(e1 >= 1);

    /* The worker keeps retrying: the error count grows. */
    t0 = now_ms();
    while (tun_registry_errors(r) <= e1 && now_ms() - t0 < 2500)
        sleep_ms(10);
    assert_true(tun_registry_errors(r) > e1);
    assert_int_equal(tun_registry_lookup(r, "agent-a", &a), -EAGAIN);
    /* Nothing was created on the way. */
    assert_int_not_equal(access(db.path, F_OK), 0);

    /* The worker is in its retry pause now: destroy does not wait for it to end. */
    t0 = now_ms();
    tun_registry_destroy(&r);
    int64_t took = now_ms() - t0;
    assert_null(r);
    if (took >= 1000)
        fail_msg("destroy took %lld ms", (long long)took);
}

/* ---- -EAGAIN until the first load, then recovery ---- */

static void test_eagain_until_first_load(void **state)
{
    (void)state;
    /* The registry points at a folder that appears only later, already complete: it is built
     * under another name and renamed into place, so the worker never sees half of it. */
    db_t target, build;
    db_params(&target, "late");
    db_create(&build, "late.build");
    add_agent(&build, "late-agent", "latecomer", 7, 1);
    store_destroy(&build.st);

    tun_registry_t *r = tun_registry_new(&target.params, POLL_MS);
    assert_non_null(r);
    tun_hs_agent_t a;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(tun_registry_lookup(r, "late-agent", &a), -EAGAIN);
        assert_int_equal(tun_registry_lookup(r, "other", &a), -EAGAIN);
        sleep_ms(10);
    }
    assert_false(tun_registry_ready(r));
    assert_true(tun_registry_errors(r) >= 1);

    char from[PATH_MAX], to[PATH_MAX];
    snprintf(from, sizeof from, "%s/late.build", s_tmpdir);
    snprintf(to, sizeof to, "%s/late", s_tmpdir);
    assert_int_equal(rename(from, to), 0);

    /* The worker retries once a second: found within its pause plus a poll. */
    assert_int_equal(lookup_ready(r, "late-agent", &a, 2500), 0);
    assert_agent(&a, "latecomer", 7, false);
    assert_true(tun_registry_ready(r));
    assert_int_equal(tun_registry_count(r), 1);
    assert_int_equal(tun_registry_generation(r), 1);
    assert_int_equal(tun_registry_lookup(r, "other", &a), -ENOENT);
    tun_registry_destroy(&r);
}

/* ---- a large registry ---- */

static void test_many_agents(void **state)
{
    (void)state;
    db_t db;
    db_create(&db, "many");
    /* created_at runs against the id order, so the store lists them in the reverse of the
     * order the lookup's search needs. */
    char id[32], name[32];
    for (int i = 0; i < MANY; i++) {
        snprintf(id, sizeof id, "agent-%03d", i);
        snprintf(name, sizeof name, "name %d", i);
        add_agent(&db, id, name, i, 100000 - i);
    }
    tun_registry_t *r = tun_registry_new(&db.params, POLL_MS);
    assert_non_null(r);
    tun_hs_agent_t a;
    assert_int_equal(lookup_ready(r, "agent-000", &a, 2000), 0);
    assert_int_equal(tun_registry_count(r), MANY);
    for (int i = 0; i < MANY; i++) {
        snprintf(id, sizeof id, "agent-%03d", i);
        snprintf(name, sizeof name, "name %d", i);
        memset(&a, 0, sizeof a);
        if (tun_registry_lookup(r, id, &a) != 0)
            fail_msg("%s not found", id);
        assert_agent(&a, name, i, false);
    }
    const char *unknown[] = {"agent-200", "agent-0000", "agent-00", "agent", "agent-19"};
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
        if (tun_registry_lookup(r, unknown[i], &a) != -ENOENT)
            fail_msg("lookup of \"%s\" did not give -ENOENT", unknown[i]);
    }
    tun_registry_destroy(&r);
    store_destroy(&db.st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_lookup_and_changes),
        cmocka_unit_test(test_unreachable_store),
        cmocka_unit_test(test_eagain_until_first_load),
        cmocka_unit_test(test_many_agents),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
