/* Unit tests for lib/strmap: the string-keyed hash map. The module's source is
 * included to check its growth from the inside. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strmap.c"

#define MANY 10000

static void test_put_get_del_count(void **state)
{
    (void)state;
    strmap_t *m = strmap_new();
    assert_non_null(m);
    assert_int_equal(strmap_count(m), 0);
    assert_null(strmap_get(m, "a"));

    int va = 1, vb = 2, vc = 3;
    assert_int_equal(strmap_put(m, "a", &va), 0);
    assert_int_equal(strmap_put(m, "b", &vb), 0);
    assert_int_equal(strmap_put(m, "", &vc), 0); /* the empty key is a key */
    assert_int_equal(strmap_count(m), 3);
    assert_ptr_equal(strmap_get(m, "a"), &va);
    assert_ptr_equal(strmap_get(m, "b"), &vb);
    assert_ptr_equal(strmap_get(m, ""), &vc);
    assert_null(strmap_get(m, "c"));
    assert_null(strmap_get(m, "A"));
    assert_null(strmap_get(m, "a "));

    assert_ptr_equal(strmap_del(m, "a"), &va);
    assert_int_equal(strmap_count(m), 2);
    assert_null(strmap_get(m, "a"));
    assert_ptr_equal(strmap_get(m, "b"), &vb);
    assert_null(strmap_del(m, "a")); /* already gone */
    assert_int_equal(strmap_count(m), 2);

    /* A key can come back after deletion. */
    assert_int_equal(strmap_put(m, "a", &vc), 0);
    assert_ptr_equal(strmap_get(m, "a"), &vc);
    assert_int_equal(strmap_count(m), 3);

    /* A NULL value is stored (and reads back as NULL). */
    assert_int_equal(strmap_put(m, "null", NULL), 0);
    assert_int_equal(strmap_count(m), 4);
    assert_null(strmap_del(m, "null"));
    assert_int_equal(strmap_count(m), 3);

    strmap_destroy(&m);
    assert_null(m);
    strmap_destroy(&m); /* NULL is accepted */
    strmap_destroy(NULL);
}

static void test_replace(void **state)
{
    (void)state;
    strmap_t *m = strmap_new();
    assert_non_null(m);
    int v1 = 1, v2 = 2;
    assert_int_equal(strmap_put(m, "agent", &v1), 0);
    assert_int_equal(strmap_put(m, "agent", &v2), 0);
    assert_int_equal(strmap_count(m), 1);
    assert_ptr_equal(strmap_get(m, "agent"), &v2);
    assert_ptr_equal(strmap_del(m, "agent"), &v2);
    assert_int_equal(strmap_count(m), 0);
    assert_null(strmap_get(m, "agent")); /* no stale first value underneath */
    strmap_destroy(&m);
}

static void test_key_is_copied(void **state)
{
    (void)state;
    strmap_t *m = strmap_new();
    assert_non_null(m);
    int v = 7;
    char key[32];
    snprintf(key, sizeof key, "%s", "req-0001");
    assert_int_equal(strmap_put(m, key, &v), 0);
    snprintf(key, sizeof key, "%s", "req-0002"); /* the caller reuses its buffer */
    assert_ptr_equal(strmap_get(m, "req-0001"), &v);
    assert_null(strmap_get(m, "req-0002"));
    strmap_destroy(&m);
}

static void test_many_keys(void **state)
{
    (void)state;
    strmap_t *m = strmap_new();
    assert_non_null(m);
    size_t initial = m->nbuckets;
    static int vals[MANY];
    char key[32];
    for (int i = 0; i < MANY; i++) {
        vals[i] = i;
        snprintf(key, sizeof key, "agent-%05d", i);
        assert_int_equal(strmap_put(m, key, &vals[i]), 0);
        assert_int_equal(strmap_count(m), (size_t)i + 1);
    }
    /* It grew to keep the load factor at most 1, and stays a power of two. */
    assert_true(m->nbuckets > initial);
    assert_true(m->nbuckets >= MANY);
    assert_int_equal(m->nbuckets & (m->nbuckets - 1), 0);
    size_t chained = 0;
    for (size_t b = 0; b < m->nbuckets; b++)
        for (s_entry_t *e = m->buckets[b]; e; e = e->next)
            chained++;
    assert_int_equal(chained, MANY); /* nothing lost or duplicated while rehashing */

    for (int i = 0; i < MANY; i++) {
        snprintf(key, sizeof key, "agent-%05d", i);
        int *v = strmap_get(m, key);
        assert_non_null(v);
        assert_int_equal(*v, i);
    }
    snprintf(key, sizeof key, "agent-%05d", MANY);
    assert_null(strmap_get(m, key));

    /* Delete the even ones; the odd ones stay reachable. */
    for (int i = 0; i < MANY; i += 2) {
        snprintf(key, sizeof key, "agent-%05d", i);
        assert_ptr_equal(strmap_del(m, key), &vals[i]);
    }
    assert_int_equal(strmap_count(m), MANY / 2);
    for (int i = 0; i < MANY; i++) {
        snprintf(key, sizeof key, "agent-%05d", i);
        if (i % 2)
            assert_ptr_equal(strmap_get(m, key), &vals[i]);
        else
            assert_null(strmap_get(m, key));
    }
    for (int i = 1; i < MANY; i += 2) {
        snprintf(key, sizeof key, "agent-%05d", i);
        assert_ptr_equal(strmap_del(m, key), &vals[i]);
    }
    assert_int_equal(strmap_count(m), 0);
    strmap_destroy(&m);
}

/* What strmap_each saw. */
typedef struct {
    unsigned char *seen; /* per index: visits */
    size_t visits;       /* total calls */
    long sum;            /* sum of values */
    int bad;             /* a key/value pair that does not belong together */
} visit_t;

/* strmap_each callback: the value is an index whose key is "k<index>". */
static void visit(void *arg, const char *key, void *value)
{
    visit_t *v = arg;
    int idx = *(int *)value;
    char want[32];
    snprintf(want, sizeof want, "k%d", idx);
    if (strcmp(key, want) != 0)
        v->bad++;
    v->seen[idx]++;
    v->visits++;
    v->sum += idx;
}

static void test_each_visits_all(void **state)
{
    (void)state;
    strmap_t *m = strmap_new();
    assert_non_null(m);
    visit_t v = {0};
    v.seen = calloc(MANY, 1);
    assert_non_null(v.seen);

    strmap_each(m, visit, &v); /* empty map: no calls */
    assert_int_equal(v.visits, 0);

    static int vals[MANY];
    char key[32];
    const int n = 3000;
    long want = 0;
    for (int i = 0; i < n; i++) {
        vals[i] = i;
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(strmap_put(m, key, &vals[i]), 0);
        want += i;
    }
    for (int i = 0; i < n; i += 3) {
        snprintf(key, sizeof key, "k%d", i);
        assert_non_null(strmap_del(m, key));
        want -= i;
    }
    strmap_each(m, visit, &v);
    assert_int_equal(v.visits, strmap_count(m));
    assert_int_equal(v.bad, 0);
    assert_int_equal(v.sum, want);
    for (int i = 0; i < n; i++)
        assert_int_equal(v.seen[i], i % 3 ? 1 : 0);
    free(v.seen);
    strmap_destroy(&m);
}

static void test_del_missing(void **state)
{
    (void)state;
    strmap_t *m = strmap_new();
    assert_non_null(m);
    assert_null(strmap_del(m, "nothing")); /* empty map */
    assert_int_equal(strmap_count(m), 0);
    int v = 1;
    /* Keys that share a bucket: deleting a missing key in a non-empty chain. */
    char key[32];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "x%d", i);
        assert_int_equal(strmap_put(m, key, &v), 0);
    }
    assert_null(strmap_del(m, "missing"));
    assert_null(strmap_del(m, "x200"));
    assert_null(strmap_del(m, "x"));
    assert_int_equal(strmap_count(m), 200);
    strmap_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_del_count), cmocka_unit_test(test_replace),
        cmocka_unit_test(test_key_is_copied),     cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_each_visits_all),   cmocka_unit_test(test_del_missing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
