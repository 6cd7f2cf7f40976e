/* Unit tests for agent/ag_bodyrw (streamed JSON body edits), ag_map and ag_proto. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "ag_bodyrw.h"
#include "ag_map.h"
#include "ag_proto.h"

#define INS AG_INCLUDE_USAGE_TEXT

/* Runs the editor over in, cut into pieces of step bytes; returns the output (static). */
static const char *s_run(const char *insert, const char *rename, const char *in, size_t step,
                         int *rc_out, int64_t *delta)
{
    static char out[4096];
    ag_bodyrw_t rw;
    bus_buf_t b;
    bus_buf_init(&b, sizeof out - 1);
    ag_bodyrw_init(&rw, insert, rename);
    size_t n = strlen(in);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i += step)
        rc = ag_bodyrw_feed(&rw, (const uint8_t *)in + i, i + step > n ? n - i : step, &b);
    *rc_out = rc;
    if (rc == 0 && !ag_bodyrw_complete(&rw))
        *rc_out = -EPIPE;
    if (!ag_bodyrw_final_delta(&rw, true, delta))
        *delta = INT64_MIN;
    memcpy(out, b.data ? (const char *)b.data : "", b.len);
    out[b.len] = '\0';
    bus_buf_free(&b);
    return out;
}

/* Checks one case at every piece size from 1 to the whole input. */
static void s_case(const char *insert, const char *rename, const char *in, const char *want)
{
    for (size_t step = 1; step <= strlen(in); step++) {
        int rc;
        int64_t delta;
        const char *got = s_run(insert, rename, in, step, &rc, &delta);
        if (rc != 0)
            fail_msg("step %zu: rc %d for %s", step, rc, in);
        if (strcmp(got, want) != 0)
            fail_msg("step %zu:\n got  %s\n want %s", step, got, want);
        if (delta != (int64_t)strlen(want) - (int64_t)strlen(in))
            fail_msg("step %zu: delta %lld, lengths %zu -> %zu", step, (long long)delta,
                     strlen(in), strlen(want));
    }
}

static void test_insert(void **state)
{
    (void)state;
    s_case(INS, NULL, "{\"model\":\"m\",\"stream\":true}",
           "{" INS "\"model\":\"m\",\"stream\":true}");
    s_case(INS, NULL, " \n{ \"a\" : 1 } ", " \n{" INS " \"a\" : 1 } ");
    s_case(NULL, NULL, "{\"a\":\"}{\"}", "{\"a\":\"}{\"}");
    /* Before any byte the delta is already known without a rename. */
    ag_bodyrw_t rw;
    int64_t d = 0;
    ag_bodyrw_init(&rw, INS, NULL);
    assert_int_equal(ag_bodyrw_final_delta(&rw, false, &d), 1);
    assert_int_equal(d, (int64_t)strlen(INS));
}

static void test_rename(void **state)
{
    (void)state;
    s_case(NULL, "gpt-4o-mini", "{\"model\":\"alias\",\"x\":1}",
           "{\"model\":\"gpt-4o-mini\",\"x\":1}");
    s_case(INS, "up", "{\"stream\":true, \"model\" : \"al\\\"i\\\\as\" }",
           "{" INS "\"stream\":true, \"model\" : \"up\" }");
    /* Nested "model" keys and "model" as a value are left alone. */
    s_case(NULL, "up",
           "{\"messages\":[{\"model\":\"n\",\"content\":\"model\"}],\"meta\":{\"model\":\"q\"},"
           "\"note\":\"model\",\"model\":\"pub\"}",
           "{\"messages\":[{\"model\":\"n\",\"content\":\"model\"}],\"meta\":{\"model\":\"q\"},"
           "\"note\":\"model\",\"model\":\"up\"}");
    /* A key that merely starts like "model". */
    s_case(NULL, "up", "{\"models\":\"a\",\"mode\":\"b\",\"model\":\"c\"}",
           "{\"models\":\"a\",\"mode\":\"b\",\"model\":\"up\"}");
    /* No model at all: nothing replaced; the delta is known at the end. */
    s_case(NULL, "up", "{\"input\":\"x\"}", "{\"input\":\"x\"}");
    /* The delta is unknown until the model value has passed. */
    ag_bodyrw_t rw;
    bus_buf_t b;
    int64_t d;
    bus_buf_init(&b, 1024);
    ag_bodyrw_init(&rw, NULL, "longer-name");
    assert_int_equal(ag_bodyrw_feed(&rw, (const uint8_t *)"{\"model\":\"ab", 12, &b), 0);
    assert_int_equal(ag_bodyrw_final_delta(&rw, false, &d), 0);
    assert_int_equal(ag_bodyrw_feed(&rw, (const uint8_t *)"c\",", 3, &b), 0);
    assert_int_equal(ag_bodyrw_final_delta(&rw, false, &d), 1);
    assert_int_equal(d, 8);
    bus_buf_free(&b);
}

static void test_errors(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "[1,2]", "\"x\"", "x{", "{\"model\":1}", "{\"model\":{\"a\":1}}",
        "{\"model\":\"a\",\"model\":\"b\"}", "{} x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc;
        int64_t d;
        s_run(INS, "up", bad[i], 1, &rc, &d);
        if (rc != -EBADMSG)
            fail_msg("\"%s\": rc %d", bad[i], rc);
    }
    int rc;
    int64_t d;
    s_run(INS, "up", "{\"a\":1", 3, &rc, &d);
    assert_int_equal(rc, -EPIPE); /* incomplete */
    /* The output buffer's maximum holds. */
    ag_bodyrw_t rw;
    bus_buf_t b;
    bus_buf_init(&b, 4);
    ag_bodyrw_init(&rw, INS, NULL);
    assert_int_equal(ag_bodyrw_feed(&rw, (const uint8_t *)"{}", 2, &b), -ENOSPC);
    bus_buf_free(&b);
}

static void test_map(void **state)
{
    (void)state;
    ag_map_t *m = ag_map_new();
    assert_non_null(m);
    uint8_t k[AG_MAP_KEY];
    static int vals[5000];
    for (int i = 0; i < 5000; i++) {
        ag_map_sid_key((uint64_t)i + 1, k);
        assert_int_equal(ag_map_put(m, k, &vals[i]), 0);
    }
    assert_int_equal(ag_map_count(m), 5000);
    for (int i = 0; i < 5000; i += 7) {
        ag_map_sid_key((uint64_t)i + 1, k);
        assert_ptr_equal(ag_map_get(m, k), &vals[i]);
        ag_map_del(m, k);
        assert_null(ag_map_get(m, k));
    }
    ag_map_sid_key(1u << 31, k);
    assert_null(ag_map_get(m, k));
    ag_map_del(m, k);
    ag_map_destroy(&m);
    assert_null(m);
    ag_map_destroy(&m);
}

static void test_proto(void **state)
{
    (void)state;
    uint8_t b[AG_SID_LEN];
    ag_sid_put(b, 0x0102030405060708ull);
    assert_int_equal(b[0], 1);
    assert_int_equal(b[7], 8);
    assert_true(ag_sid_get(b) == 0x0102030405060708ull);
    char out[512];
    int n = ag_openai_error(out, sizeof out, "bad \"model\"\n", "invalid_request_error",
                            "model_not_found");
    assert_true(n > 0);
    assert_string_equal(out, "{\"error\":{\"message\":\"bad \\\"model\\\"\\n\",\"type\":"
                             "\"invalid_request_error\",\"param\":null,\"code\":"
                             "\"model_not_found\"}}");
    n = ag_openai_error(out, sizeof out, "m", "api_error", NULL);
    assert_string_equal(out, "{\"error\":{\"message\":\"m\",\"type\":\"api_error\",\"param\":null,"
                             "\"code\":null}}");
    assert_int_equal(ag_openai_error(out, 10, "m", "t", NULL), -ENOSPC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert), cmocka_unit_test(test_rename), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_map),    cmocka_unit_test(test_proto),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
