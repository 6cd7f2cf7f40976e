/* Unit tests for gw_routes: presence in, least-loaded agent per model out. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "bus_env.h"
#include "gw_routes.h"

/* Applies a presence event built from C values. */
static void s_presence(gw_routes_t *r, const char *id, const char *state, const char **models,
                       size_t n, uint64_t in_flight, uint64_t capacity, uint64_t now)
{
    bus_presence_t p;
    memset(&p, 0, sizeof p);
    p.agent_id = bus_str_c(id);
    p.state = bus_str_c(state);
    p.tunnel = bus_str_c("tunnel-1");
    bus_str_t strs[8];
    for (size_t i = 0; i < n; i++)
        strs[i] = bus_str_c(models[i]);
    bus_buf_t scratch;
    bus_buf_init(&scratch, 4096);
    if (n)
        assert_int_equal(bus_list_encode_strs(&scratch, strs, n, &p.models), 0);
    p.in_flight = in_flight;
    p.capacity = capacity;
    assert_int_equal(gw_routes_apply(r, &p, now), 0);
    bus_buf_free(&scratch);
}

static void test_empty_and_unknown(void **state)
{
    (void)state;
    gw_routes_t *r = gw_routes_new();
    gw_pick_t pick;
    assert_int_equal(gw_routes_pick(r, "m", 1, NULL, 0, &pick), -ENOTCONN);
    const char *m[] = {"a", "b"};
    s_presence(r, "agent1", "up", m, 2, 0, 4, 1);
    assert_int_equal(gw_routes_pick(r, "zzz", 3, NULL, 0, &pick), -ENOENT);
    assert_int_equal(gw_routes_pick(r, "a", 1, NULL, 0, &pick), 0);
    assert_string_equal(pick.agent_id, "agent1");
    assert_string_equal(pick.tunnel, "tunnel-1");
    /* a prefix of a model is not the model */
    assert_int_equal(gw_routes_pick(r, "ab", 2, NULL, 0, &pick), -ENOENT);
    gw_routes_destroy(&r);
    assert_null(r);
}

static void test_least_loaded_relative_to_capacity(void **state)
{
    (void)state;
    gw_routes_t *r = gw_routes_new();
    const char *m[] = {"gpt"};
    s_presence(r, "small", "up", m, 1, 1, 2, 1);   /* 50 % */
    s_presence(r, "big", "up", m, 1, 3, 10, 1);    /* 30 % */
    gw_pick_t pick;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(gw_routes_pick(r, "gpt", 3, NULL, 0, &pick), 0);
        assert_string_equal(pick.agent_id, "big");
    }
    /* our own opens count until the next presence: 3 more on big → 60 % */
    gw_routes_add_load(r, "big", 3);
    assert_int_equal(gw_routes_pick(r, "gpt", 3, NULL, 0, &pick), 0);
    assert_string_equal(pick.agent_id, "small");
    /* a fresh presence replaces our estimate with the tunnel's figure */
    s_presence(r, "big", "up", m, 1, 0, 10, 2);
    assert_int_equal(gw_routes_pick(r, "gpt", 3, NULL, 0, &pick), 0);
    assert_string_equal(pick.agent_id, "big");
    gw_routes_destroy(&r);
}

static void test_ties_are_spread(void **state)
{
    (void)state;
    gw_routes_t *r = gw_routes_new();
    const char *m[] = {"x"};
    s_presence(r, "a1", "up", m, 1, 0, 1, 1);
    s_presence(r, "a2", "up", m, 1, 0, 1, 1);
    s_presence(r, "a3", "up", m, 1, 0, 1, 1);
    int seen[3] = {0, 0, 0};
    gw_pick_t pick;
    for (int i = 0; i < 600; i++) {
        assert_int_equal(gw_routes_pick(r, "x", 1, NULL, 0, &pick), 0);
        seen[pick.agent_id[1] - '1']++;
    }
    for (int i = 0; i < 3; i++)
        assert_true(seen[i] > 100); /* about 200 each */
    gw_routes_destroy(&r);
}

static void test_exclude_down_and_expire(void **state)
{
    (void)state;
    gw_routes_t *r = gw_routes_new();
    const char *m[] = {"x"};
    s_presence(r, "a1", "up", m, 1, 0, 1, 1000);
    s_presence(r, "a2", "up", m, 1, 5, 1, 1000);
    gw_pick_t pick;
    const char *ex[] = {"a1"};
    assert_int_equal(gw_routes_pick(r, "x", 1, ex, 1, &pick), 0);
    assert_string_equal(pick.agent_id, "a2");
    const char *ex2[] = {"a1", "a2"};
    assert_int_equal(gw_routes_pick(r, "x", 1, ex2, 2, &pick), -EAGAIN);
    s_presence(r, "a1", "down", NULL, 0, 0, 0, 1001);
    assert_int_equal(gw_routes_agents(r), 1);
    assert_int_equal(gw_routes_pick(r, "x", 1, NULL, 0, &pick), 0);
    assert_string_equal(pick.agent_id, "a2");
    /* a2 not refreshed for longer than max_age: gone */
    assert_int_equal(gw_routes_expire(r, 5000, 1000), 1);
    assert_int_equal(gw_routes_pick(r, "x", 1, NULL, 0, &pick), -ENOTCONN);
    gw_routes_destroy(&r);
}

static void s_collect(void *arg, const char *model)
{
    char *buf = arg;
    size_t n = strlen(buf);
    snprintf(buf + n, 64 - n, "%s,", model);
}

static void test_models_sorted_distinct_and_replaced(void **state)
{
    (void)state;
    gw_routes_t *r = gw_routes_new();
    const char *m1[] = {"b", "a"};
    const char *m2[] = {"c", "a"};
    s_presence(r, "x1", "up", m1, 2, 0, 1, 1);
    s_presence(r, "x2", "up", m2, 2, 0, 1, 1);
    char buf[64] = "";
    gw_routes_each_model(r, s_collect, buf);
    assert_string_equal(buf, "a,b,c,");
    /* a new presence replaces the agent's list */
    const char *m3[] = {"d"};
    s_presence(r, "x1", "up", m3, 1, 0, 1, 2);
    buf[0] = '\0';
    gw_routes_each_model(r, s_collect, buf);
    assert_string_equal(buf, "a,c,d,");
    gw_routes_destroy(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_and_unknown),
        cmocka_unit_test(test_least_loaded_relative_to_capacity),
        cmocka_unit_test(test_ties_are_spread),
        cmocka_unit_test(test_exclude_down_and_expire),
        cmocka_unit_test(test_models_sorted_distinct_and_replaced),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
