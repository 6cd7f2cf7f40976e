/* Unit tests for al_db, agent-ledger's SQLite layer: the schema is created with the exact
 * ledger columns other tools read, in a 0600 file in WAL mode; usage records are written once
 * per (req_id, attempt) and keep their reported flag; price versions keep their history; ledger
 * rows round-trip field for field and the newest one is found; a rolled-back transaction leaves
 * nothing; closing and reopening keeps everything; another agent's database is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "al_db.h"
#include "test_util.h"

#define AGENT_A "a1b2c3d4e5f60718293a4b5c6d7e8f90"
#define AGENT_B "b1b2c3d4e5f60718293a4b5c6d7e8f90"

typedef struct {
    char dir[PATH_MAX];  /* scratch directory */
    char path[PATH_MAX]; /* the database file in it */
} s_fix_t;

static int s_setup(void **state)
{
    static s_fix_t f;
    if (tu_tmpdir_new(f.dir, sizeof f.dir, "test_al_db") != 0)
        return -1;
    snprintf(f.path, sizeof f.path, "%s/agent-ledger.db", f.dir);
    *state = &f;
    return 0;
}

static int s_teardown(void **state)
{
    s_fix_t *f = *state;
    return tu_rm_rf(f->dir);
}

/* Opens the fixture's database for agent A; fails the test with the error line otherwise. */
static al_db_t *s_open(const s_fix_t *f)
{
    char err[512] = "";
    al_db_t *db = al_db_open(f->path, AGENT_A, err, sizeof err);
    if (!db)
        fail_msg("al_db_open: %s", err);
    return db;
}

/* A usage record of request n, attempt a. */
static void s_usage(al_usage_t *u, int n, uint32_t a)
{
    memset(u, 0, sizeof *u);
    memset(u->req_id, n, sizeof u->req_id);
    u->attempt = a;
    snprintf(u->model, sizeof u->model, "gpt-4o-mini");
    u->status = 200;
    u->delivered = true;
    u->complete = n % 2 == 0;
    u->estimated = n % 3 == 0;
    u->input_tokens = 1000 + n;
    u->cached_tokens = n;
    u->output_tokens = 50 + n;
    u->created_ms = 1795000000000 + n;
}

/* Ledger entry seq (sealed after prev) with a verdict. */
static void s_entry(al_entry_t *e, uint64_t seq, const uint8_t *prev, const char *verdict)
{
    memset(e, 0, sizeof *e);
    ledger_row_t *r = &e->row;
    snprintf(r->agent_id, sizeof r->agent_id, "%s", AGENT_A);
    r->seq = seq;
    memset(r->req_id, (int)seq, sizeof r->req_id);
    r->attempt = 2;
    r->user_id = -5;
    snprintf(r->model, sizeof r->model, "model-%llu", (unsigned long long)seq);
    r->input_tokens = 10;
    r->cached_tokens = 3;
    r->output_tokens = INT64_MAX;
    r->estimated = true;
    r->cost = 1234567;
    r->fee = 123456;
    r->credit = 1111111;
    r->hold = 2000000;
    r->price_from = 1764115200000;
    r->fee_ppm = 100000;
    r->created_ms = 1795000000123;
    assert_int_equal(ledger_seal(r, prev), 0);
    snprintf(e->verdict, sizeof e->verdict, "%s", verdict);
    e->unbilled = seq == 2 ? 77 : 0;
    snprintf(e->reason, sizeof e->reason, "%s", seq == 3 ? "bad_prev: something" : "");
    e->written_ms = 1795000000999;
}

/* The file's tables, columns and settings, read with SQLite directly. */
static void test_schema(void **state)
{
    s_fix_t *f = *state;
    al_db_t *db = s_open(f);
    assert_int_equal(tu_mode_of(f->path) & 0777, 0600);
    sqlite3 *raw = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &raw, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    static const char *const want[] = {"seq INTEGER",
                                       "agent_id TEXT",
                                       "req_id BLOB",
                                       "attempt INTEGER",
                                       "user_id INTEGER",
                                       "model TEXT",
                                       "input_tokens INTEGER",
                                       "cached_tokens INTEGER",
                                       "output_tokens INTEGER",
                                       "estimated INTEGER",
                                       "cost INTEGER",
                                       "fee INTEGER",
                                       "credit INTEGER",
                                       "hold INTEGER",
                                       "price_from INTEGER",
                                       "fee_ppm INTEGER",
                                       "created_ms INTEGER",
                                       "prev_hash BLOB",
                                       "hash BLOB",
                                       "verdict TEXT",
                                       "unbilled INTEGER",
                                       "reason TEXT",
                                       "written_ms INTEGER"};
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(raw,
                                        "SELECT name, type, pk FROM pragma_table_info('ledger')",
                                        -1, &st, NULL),
                     SQLITE_OK);
    size_t n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        char col[96];
        snprintf(col, sizeof col, "%s %s", sqlite3_column_text(st, 0), sqlite3_column_text(st, 1));
        assert_true(n < sizeof want / sizeof want[0]);
        assert_string_equal(col, want[n]);
        assert_int_equal(sqlite3_column_int(st, 2), n == 0 ? 1 : 0);
        n++;
    }
    sqlite3_finalize(st);
    assert_int_equal(n, sizeof want / sizeof want[0]);
    /* The other tables, meta, and WAL mode. */
    static const char *const checks[][2] = {
        {"SELECT count(*) FROM pragma_table_info('usage')", "12"},
        {"SELECT group_concat(name) FROM pragma_table_info('usage') WHERE pk > 0",
         "req_id,attempt"},
        {"SELECT count(*) FROM pragma_table_info('prices')", "5"},
        {"SELECT group_concat(name) FROM pragma_table_info('prices') WHERE pk > 0",
         "model,effective_from"},
        {"SELECT value FROM meta WHERE key = 'agent_id'", AGENT_A},
        {"SELECT value FROM meta WHERE key = 'schema'", "1"},
        {"PRAGMA journal_mode", "wal"},
    };
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        assert_int_equal(sqlite3_prepare_v2(raw, checks[i][0], -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        const char *got = (const char *)sqlite3_column_text(st, 0);
        if (!got || strcmp(got, checks[i][1]) != 0)
            fail_msg("%s: got %s, want %s", checks[i][0], got ? got : "NULL", checks[i][1]);
        sqlite3_finalize(st);
    }
    sqlite3_close(raw);
    al_db_close(&db);
    assert_null(db);
    al_db_close(&db); /* NULL is fine */
    al_db_close(NULL);
}

/* Usage records: once per (req_id, attempt), the first stands; the reported flag. */
static void test_usage(void **state)
{
    s_fix_t *f = *state;
    al_db_t *db = s_open(f);
    al_usage_t u, got;
    s_usage(&u, 1, 1);
    assert_int_equal(al_db_usage_get(db, u.req_id, 1, &got), 0);
    assert_int_equal(al_db_usage_put(db, &u), 1);
    assert_true(al_db_in_tx(db));
    al_usage_t again = u;
    again.output_tokens = 999; /* a re-send with other figures: the first record stands */
    assert_int_equal(al_db_usage_put(db, &again), 0);
    al_usage_t other;
    s_usage(&other, 1, 2); /* the same request's second attempt is another record */
    assert_int_equal(al_db_usage_put(db, &other), 1);
    s_usage(&other, 2, 1);
    other.created_ms = u.created_ms - 10; /* older: re-sent first */
    assert_int_equal(al_db_usage_put(db, &other), 1);
    assert_int_equal(al_db_commit(db), 0);
    assert_false(al_db_in_tx(db));
    assert_int_equal(al_db_usage_get(db, u.req_id, 1, &got), 1);
    assert_memory_equal(&got, &u, sizeof u);
    al_db_close(&db);
}

/* Collects the records an al_db_usage_unreported walk visits. */
typedef struct {
    int n;           /* visited */
    al_usage_t u[8]; /* the first eight */
} s_walk_t;

static int s_walk_cb(void *arg, const al_usage_t *u)
{
    s_walk_t *w = arg;
    if (w->n < 8)
        w->u[w->n] = *u;
    w->n++;
    return 0;
}

static int s_walk_stop(void *arg, const al_usage_t *u)
{
    (void)arg;
    (void)u;
    return -ECANCELED;
}

/* The reported flag and the walk over unreported records. */
static void test_reported(void **state)
{
    s_fix_t *f = *state;
    al_db_t *db = s_open(f);
    s_walk_t w = {0};
    assert_int_equal(al_db_usage_unreported(db, 100, s_walk_cb, &w), 3);
    assert_int_equal(w.n, 3);
    assert_int_equal(w.u[0].req_id[0], 2); /* the oldest first */
    assert_int_equal(w.u[1].req_id[0], 1);
    memset(&w, 0, sizeof w);
    assert_int_equal(al_db_usage_unreported(db, 1, s_walk_cb, &w), 1);
    assert_int_equal(al_db_usage_unreported(db, 100, s_walk_stop, NULL), -ECANCELED);
    uint8_t id1[16], id9[16];
    memset(id1, 1, sizeof id1);
    memset(id9, 9, sizeof id9);
    assert_int_equal(al_db_usage_set_reported(db, id1, 1), 1);
    assert_int_equal(al_db_usage_set_reported(db, id1, 1), 0); /* already */
    assert_int_equal(al_db_usage_set_reported(db, id9, 1), 0); /* unknown */
    assert_int_equal(al_db_commit(db), 0);
    al_usage_t got;
    assert_int_equal(al_db_usage_get(db, id1, 1, &got), 1);
    assert_true(got.reported);
    assert_int_equal(al_db_usage_get(db, id1, 2, &got), 1);
    assert_false(got.reported);
    memset(&w, 0, sizeof w);
    assert_int_equal(al_db_usage_unreported(db, 100, s_walk_cb, &w), 2);
    al_db_stats_t st;
    assert_int_equal(al_db_stats(db, &st), 0);
    assert_int_equal(st.usage, 3);
    assert_int_equal(st.unreported, 2);
    al_db_close(&db);
}

/* Price versions: new, the same again, changed; history by effective_from. */
static void test_prices(void **state)
{
    s_fix_t *f = *state;
    al_db_t *db = s_open(f);
    money_price_t p1 = {.input = 2000000, .cached_input = 500000, .output = 8000000};
    money_price_t p2 = {.input = 1000000, .cached_input = 0, .output = 4000000};
    money_price_t got;
    assert_int_equal(al_db_price_get(db, "gpt-4o-mini", 1000, &got), 0);
    assert_int_equal(al_db_price_put(db, "gpt-4o-mini", 1000, &p1), 1);
    assert_int_equal(al_db_price_put(db, "gpt-4o-mini", 1000, &p1), 0);
    assert_int_equal(al_db_price_put(db, "gpt-4o-mini", 2000, &p2), 1);
    assert_int_equal(al_db_commit(db), 0);
    assert_int_equal(al_db_price_get(db, "gpt-4o-mini", 1000, &got), 1);
    assert_memory_equal(&got, &p1, sizeof got);
    assert_int_equal(al_db_price_get(db, "gpt-4o-mini", 2000, &got), 1);
    assert_memory_equal(&got, &p2, sizeof got);
    assert_int_equal(al_db_price_get(db, "gpt-4o-mini", 1500, &got), 0);
    assert_int_equal(al_db_price_get(db, "gpt-4o", 1000, &got), 0);
    money_price_t p3 = p2;
    p3.output = 4000001;
    assert_int_equal(al_db_price_put(db, "gpt-4o-mini", 2000, &p3), 2);
    assert_int_equal(al_db_commit(db), 0);
    assert_int_equal(al_db_price_get(db, "gpt-4o-mini", 2000, &got), 1);
    assert_int_equal(got.output, 4000001);
    al_db_close(&db);
}

/* Ledger rows: round trip, the newest, a duplicate seq refused, a rollback leaves nothing. */
static void test_ledger(void **state)
{
    s_fix_t *f = *state;
    al_db_t *db = s_open(f);
    uint64_t seq = 99;
    uint8_t hash[LEDGER_HASH_LEN];
    memset(hash, 0xee, sizeof hash);
    static const uint8_t zeros[LEDGER_HASH_LEN];
    assert_int_equal(al_db_ledger_last(db, &seq, hash), 0);
    assert_int_equal(seq, 0);
    assert_memory_equal(hash, zeros, sizeof hash);
    al_entry_t e1, e2, e3, got;
    s_entry(&e1, 1, NULL, "verified");
    s_entry(&e2, 2, e1.row.hash, "accepted");
    s_entry(&e3, 3, e2.row.hash, "disputed");
    assert_int_equal(al_db_ledger_put(db, &e1), 0);
    assert_int_equal(al_db_ledger_put(db, &e2), 0);
    assert_int_equal(al_db_ledger_put(db, &e1), -EEXIST);
    assert_int_equal(al_db_commit(db), 0);
    assert_int_equal(al_db_ledger_get(db, 2, &got), 1);
    assert_memory_equal(&got, &e2, sizeof got);
    assert_int_equal(al_db_ledger_get(db, 1, &got), 1);
    assert_memory_equal(&got, &e1, sizeof got);
    assert_int_equal(al_db_ledger_get(db, 3, &got), 0);
    assert_int_equal(al_db_ledger_last(db, &seq, hash), 0);
    assert_int_equal(seq, 2);
    assert_memory_equal(hash, e2.row.hash, sizeof hash);
    /* Rolled back: row 3 never happened. */
    assert_int_equal(al_db_ledger_put(db, &e3), 0);
    assert_int_equal(al_db_ledger_last(db, &seq, hash), 0);
    assert_int_equal(seq, 3); /* the open transaction's row is seen by its writer */
    al_db_rollback(db);
    assert_false(al_db_in_tx(db));
    assert_int_equal(al_db_ledger_last(db, &seq, hash), 0);
    assert_int_equal(seq, 2);
    assert_int_equal(al_db_ledger_put(db, &e3), 0);
    assert_int_equal(al_db_commit(db), 0);
    e1.row.seq = 0;
    assert_int_equal(al_db_ledger_put(db, &e1), -EINVAL);
    al_db_stats_t st;
    assert_int_equal(al_db_stats(db, &st), 0);
    assert_int_equal(st.rows[AL_VERIFIED], 1);
    assert_int_equal(st.rows[AL_ACCEPTED], 1);
    assert_int_equal(st.rows[AL_DISPUTED], 1);
    assert_int_equal(st.rows[AL_HUB_ATTESTED], 0);
    assert_int_equal(st.unbilled, 77);
    al_db_close(&db);
}

/* Closing with an open transaction rolls it back; reopening keeps every committed thing. */
static void test_reopen(void **state)
{
    s_fix_t *f = *state;
    al_db_t *db = s_open(f);
    al_usage_t u;
    s_usage(&u, 5, 1);
    assert_int_equal(al_db_usage_put(db, &u), 1);
    al_db_close(&db); /* not committed */
    db = s_open(f);
    al_usage_t got;
    assert_int_equal(al_db_usage_get(db, u.req_id, 1, &got), 0);
    uint64_t seq;
    uint8_t hash[LEDGER_HASH_LEN];
    assert_int_equal(al_db_ledger_last(db, &seq, hash), 0);
    assert_int_equal(seq, 3);
    al_entry_t e3;
    assert_int_equal(al_db_ledger_get(db, 3, &e3), 1);
    assert_memory_equal(hash, e3.row.hash, sizeof hash);
    assert_string_equal(e3.verdict, "disputed");
    assert_string_equal(e3.reason, "bad_prev: something");
    /* The chain read back still verifies with lib/ledger. */
    ledger_walk_t w;
    ledger_walk_init(&w, AGENT_A, 0, NULL);
    for (uint64_t s = 1; s <= 3; s++) {
        al_entry_t e;
        assert_int_equal(al_db_ledger_get(db, s, &e), 1);
        assert_int_equal(ledger_walk_next(&w, &e.row), LEDGER_OK);
    }
    money_price_t p;
    assert_int_equal(al_db_price_get(db, "gpt-4o-mini", 2000, &p), 1);
    al_db_stats_t st;
    assert_int_equal(al_db_stats(db, &st), 0);
    assert_int_equal(st.usage, 3);
    assert_int_equal(st.unreported, 2);
    al_db_close(&db);
}

/* One file, one agent: another agent id is refused, and the file stays the first agent's. */
static void test_other_agent(void **state)
{
    s_fix_t *f = *state;
    char err[512] = "";
    assert_null(al_db_open(f->path, AGENT_B, err, sizeof err));
    assert_non_null(strstr(err, AGENT_A));
    assert_null(al_db_open(f->path, "", err, sizeof err));
    char bad[PATH_MAX + 16];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.db", f->dir);
    assert_null(al_db_open(bad, AGENT_A, err, sizeof err));
    al_db_t *db = s_open(f);
    al_db_close(&db);
}

/* A file left readable by others is made private again. */
static void test_mode_tightened(void **state)
{
    s_fix_t *f = *state;
    assert_int_equal(chmod(f->path, 0644), 0);
    al_db_t *db = s_open(f);
    assert_int_equal(tu_mode_of(f->path) & 0777, 0600);
    al_db_close(&db);
}

int main(void)
{
    /* The tests share one database file and run in order: each builds on the one before. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema),      cmocka_unit_test(test_usage),
        cmocka_unit_test(test_reported),    cmocka_unit_test(test_prices),
        cmocka_unit_test(test_ledger),      cmocka_unit_test(test_reopen),
        cmocka_unit_test(test_other_agent), cmocka_unit_test(test_mode_tightened),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
