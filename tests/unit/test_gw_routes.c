/* Unit tests for gw_routes: presence in, least-loaded agent per model (and format) out. */
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

/* Applies a presence event built from C values, with model_formats (n_formats elements; -1:
 * no model_formats at all). */
static void s_presence_f(gw_routes_t *r, const char *id, const char *state, const char **models,
                         size_t n, const char **formats, int n_formats, uint64_t in_flight,
                         uint64_t capacity, uint64_t now)
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
    bus_buf_t fscratch;
    bus_buf_init(&fscratch, 4096);
    if (n_formats >= 0) {
        bus_str_t fs[8];
        for (int i = 0; i < n_formats; i++)
            fs[i] = bus_str_c(formats[i]);
        assert_int_equal(bus_list_encode_strs(&fscratch, fs, (size_t)n_formats, &p.model_formats),
                         0);
    }
    p.in_flight = in_flight;
    p.capacity = capacity;
    assert_int_equal(gw_routes_apply(r, &p, now), 0);
    bus_buf_free(&scratch);
    bus_buf_free(&fscratch);
}

/* The same without model_formats (an agent older than the formats). */
static void s_presence(gw_routes_t *r, const char *id, const char *state, const char **models,
                       size_t n, uint64_t in_flight, uint64_t capacity, uint64_t now)
{
    s_presence_f(r, id, state, models, n, NULL, -1, in_flight, capacity, now);
}

static void test_empty_and_unknown(void **state)
{
    (void)state;
    gw_routes_t *r = gw_routes_new();
    gw_pick_t pick;
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "m", 1, NULL, 0, &pick), -ENOTCONN);
    const char *m[] = {"a", "b"};
    s_presence(r, "agent1", "up", m, 2, 0, 4, 1);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "zzz", 3, NULL, 0, &pick), -ENOENT);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "a", 1, NULL, 0, &pick), 0);
    assert_string_equal(pick.agent_id, "agent1");
    assert_string_equal(pick.tunnel, "tunnel-1");
    /* a prefix of a model is not the model */
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "ab", 2, NULL, 0, &pick), -ENOENT);
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
        assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "gpt", 3, NULL, 0, &pick), 0);
        assert_string_equal(pick.agent_id, "big");
    }
    /* our own opens count until the next presence: 3 more on big → 60 % */
    gw_routes_add_load(r, "big", 3);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "gpt", 3, NULL, 0, &pick), 0);
    assert_string_equal(pick.agent_id, "small");
    /* a fresh presence replaces our estimate with the tunnel's figure */
    s_presence(r, "big", "up", m, 1, 0, 10, 2);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "gpt", 3, NULL, 0, &pick), 0);
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
        assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "x", 1, NULL, 0, &pick), 0);
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
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "x", 1, ex, 1, &pick), 0);
    assert_string_equal(pick.agent_id, "a2");
    const char *ex2[] = {"a1", "a2"};
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "x", 1, ex2, 2, &pick), -EAGAIN);
    s_presence(r, "a1", "down", NULL, 0, 0, 0, 1001);
    assert_int_equal(gw_routes_agents(r), 1);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "x", 1, NULL, 0, &pick), 0);
    assert_string_equal(pick.agent_id, "a2");
    /* a2 not refreshed for longer than max_age: gone */
    assert_int_equal(gw_routes_expire(r, 5000, 1000), 1);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "x", 1, NULL, 0, &pick), -ENOTCONN);
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
    gw_routes_each_model(r, GW_FORMAT_OPENAI, s_collect, buf);
    assert_string_equal(buf, "a,b,c,");
    /* a new presence replaces the agent's list */
    const char *m3[] = {"d"};
    s_presence(r, "x1", "up", m3, 1, 0, 1, 2);
    buf[0] = '\0';
    gw_routes_each_model(r, GW_FORMAT_OPENAI, s_collect, buf);
    assert_string_equal(buf, "a,c,d,");
    gw_routes_destroy(&r);
}

static void test_format_names(void **state)
{
    (void)state;
    assert_string_equal(gw_format_name(GW_FORMAT_OPENAI), "openai");
    assert_string_equal(gw_format_name(GW_FORMAT_ANTHROPIC), "anthropic");
    assert_string_equal(gw_format_name(GW_FORMAT_GEMINI), "gemini");
    assert_string_equal(gw_format_name(GW_FORMAT_BEDROCK), "bedrock");
    assert_string_equal(gw_format_name(GW_FORMAT_COUNT), "?");
    assert_int_equal(gw_format_from_name("gemini", 6), GW_FORMAT_GEMINI);
    assert_int_equal(gw_format_from_name("gemin", 5), -1);
    assert_int_equal(gw_format_from_name("azure", 5), -1);
    const unsigned O = GW_FORMAT_BIT(GW_FORMAT_OPENAI), A = GW_FORMAT_BIT(GW_FORMAT_ANTHROPIC),
                   G = GW_FORMAT_BIT(GW_FORMAT_GEMINI), B = GW_FORMAT_BIT(GW_FORMAT_BEDROCK);
    assert_int_equal(gw_formats_parse("openai", 6), O);
    assert_int_equal(gw_formats_parse("openai anthropic", 16), O | A);
    assert_int_equal(gw_formats_parse("  gemini\tbedrock  ", 18), G | B);
    assert_int_equal(gw_formats_parse("", 0), O); /* empty: as if absent */
    assert_int_equal(gw_formats_parse("   ", 3), O);
    assert_int_equal(gw_formats_parse("azure", 5), 0); /* none the gateway speaks */
    assert_int_equal(gw_formats_parse("openai azure", 12), O);
    assert_int_equal(gw_formats_parse("anthropicx", 10), 0);
}

static void test_pick_by_format(void **state)
{
    (void)state;
    gw_routes_t *r = gw_routes_new();
    const char *m[] = {"claude", "gem", "both", "nova"};
    const char *f1[] = {"anthropic", "gemini", "openai anthropic", "bedrock"};
    s_presence_f(r, "multi", "up", m, 4, f1, 4, 0, 4, 1);
    gw_pick_t pick;
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_ANTHROPIC, "claude", 6, NULL, 0, &pick), 0);
    assert_string_equal(pick.agent_id, "multi");
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "claude", 6, NULL, 0, &pick), -ENOENT);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_GEMINI, "gem", 3, NULL, 0, &pick), 0);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_BEDROCK, "gem", 3, NULL, 0, &pick), -ENOENT);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "both", 4, NULL, 0, &pick), 0);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_ANTHROPIC, "both", 4, NULL, 0, &pick), 0);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_GEMINI, "both", 4, NULL, 0, &pick), -ENOENT);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_BEDROCK, "nova", 4, NULL, 0, &pick), 0);
    assert_int_equal(gw_routes_formats(r, "both", 4),
                     GW_FORMAT_BIT(GW_FORMAT_OPENAI) | GW_FORMAT_BIT(GW_FORMAT_ANTHROPIC));
    assert_int_equal(gw_routes_formats(r, "none", 4), 0);
    /* a second agent serves "claude" as OpenAI only: each format finds its own agent */
    const char *m2[] = {"claude"};
    s_presence(r, "plain", "up", m2, 1, 0, 4, 1);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(gw_routes_pick(r, GW_FORMAT_ANTHROPIC, "claude", 6, NULL, 0, &pick), 0);
        assert_string_equal(pick.agent_id, "multi");
        assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "claude", 6, NULL, 0, &pick), 0);
        assert_string_equal(pick.agent_id, "plain");
    }
    /* excluded in the format asked: -EAGAIN, not -ENOENT */
    const char *ex[] = {"multi"};
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_ANTHROPIC, "claude", 6, ex, 1, &pick), -EAGAIN);
    gw_routes_destroy(&r);
}

static void test_absent_and_short_model_formats_mean_openai(void **state)
{
    (void)state;
    gw_routes_t *r = gw_routes_new();
    gw_pick_t pick;
    /* absent: every model is OpenAI */
    const char *m[] = {"a", "b", "c"};
    s_presence(r, "old", "up", m, 3, 0, 1, 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, m[i], 1, NULL, 0, &pick), 0);
        assert_int_equal(gw_routes_pick(r, GW_FORMAT_ANTHROPIC, m[i], 1, NULL, 0, &pick), -ENOENT);
    }
    /* short: the models past its end are OpenAI; an empty element too; "azure" alone is
     * nothing the gateway routes */
    const char *m2[] = {"x", "y", "z", "w"};
    const char *f2[] = {"gemini", ""};
    s_presence_f(r, "short", "up", m2, 4, f2, 2, 0, 1, 1);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_GEMINI, "x", 1, NULL, 0, &pick), 0);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "x", 1, NULL, 0, &pick), -ENOENT);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "y", 1, NULL, 0, &pick), 0);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "z", 1, NULL, 0, &pick), 0);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "w", 1, NULL, 0, &pick), 0);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_GEMINI, "w", 1, NULL, 0, &pick), -ENOENT);
    const char *m3[] = {"v"};
    const char *f3[] = {"azure"};
    s_presence_f(r, "azure-only", "up", m3, 1, f3, 1, 0, 1, 1);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "v", 1, NULL, 0, &pick), -ENOENT);
    /* a skipped (empty) model keeps the lists aligned */
    const char *m4[] = {"", "k"};
    const char *f4[] = {"openai", "bedrock"};
    s_presence_f(r, "aligned", "up", m4, 2, f4, 2, 0, 1, 1);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_BEDROCK, "k", 1, NULL, 0, &pick), 0);
    assert_string_equal(pick.agent_id, "aligned");
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "k", 1, NULL, 0, &pick), -ENOENT);
    /* a model listed twice is served in the union */
    const char *m5[] = {"d", "d"};
    const char *f5[] = {"openai", "anthropic"};
    s_presence_f(r, "twice", "up", m5, 2, f5, 2, 0, 1, 1);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_OPENAI, "d", 1, NULL, 0, &pick), 0);
    assert_int_equal(gw_routes_pick(r, GW_FORMAT_ANTHROPIC, "d", 1, NULL, 0, &pick), 0);
    gw_routes_destroy(&r);
}

static void test_models_listed_per_format(void **state)
{
    (void)state;
    gw_routes_t *r = gw_routes_new();
    const char *m[] = {"o1", "claude", "gem", "both"};
    const char *f[] = {"openai", "anthropic", "gemini", "anthropic openai"};
    s_presence_f(r, "x", "up", m, 4, f, 4, 0, 1, 1);
    const char *m2[] = {"legacy"};
    s_presence(r, "y", "up", m2, 1, 0, 1, 1);
    char buf[64] = "";
    gw_routes_each_model(r, GW_FORMAT_OPENAI, s_collect, buf);
    assert_string_equal(buf, "both,legacy,o1,");
    buf[0] = '\0';
    gw_routes_each_model(r, GW_FORMAT_ANTHROPIC, s_collect, buf);
    assert_string_equal(buf, "both,claude,");
    buf[0] = '\0';
    gw_routes_each_model(r, GW_FORMAT_BEDROCK, s_collect, buf);
    assert_string_equal(buf, "");
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
        cmocka_unit_test(test_format_names),
        cmocka_unit_test(test_pick_by_format),
        cmocka_unit_test(test_absent_and_short_model_formats_mean_openai),
        cmocka_unit_test(test_models_listed_per_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
