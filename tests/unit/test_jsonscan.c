/* Unit tests for lib/jsonscan: JSONTestSuite-style valid and invalid bodies fed at every split
 * point, the captured members and their verdicts, constant memory over a 20 MiB body, and
 * validity agreement with jansson on generated documents.
 *
 * The scanner's source is included (with a counting allocator in place of calloc) so that the
 * memory test can see every allocation it makes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

static size_t t_allocs;      /* allocations made by the scanner */
static size_t t_alloc_bytes; /* bytes they asked for */

/* calloc that counts, for the scanner's source below. */
static void *t_calloc(size_t n, size_t size)
{
    t_allocs++;
    t_alloc_bytes += n * size;
    return calloc(n, size);
}

/* malloc that counts (the scanner should never call it). */
__attribute__((unused)) static void *t_malloc(size_t size)
{
    t_allocs++;
    t_alloc_bytes += size;
    return malloc(size);
}

/* realloc that counts (the scanner should never call it). */
__attribute__((unused)) static void *t_realloc(void *p, size_t size)
{
    t_allocs++;
    t_alloc_bytes += size;
    return realloc(p, size);
}

#define calloc t_calloc
#define malloc t_malloc
#define realloc t_realloc
#include "../../lib/jsonscan.c"
#undef calloc
#undef malloc
#undef realloc

/* ---- helpers ------------------------------------------------------------------------------ */

/* Everything observable about one scan, to compare scans of the same body. */
typedef struct {
    int rc;                        /* jscan_finish's answer (or the first failing feed's) */
    jscan_kind_t kind;             /* error kind */
    uint64_t off;                  /* error offset */
    char msg[192];                 /* error message */
    jscan_result_t res;            /* result (pointers cleared) */
    char model[JSCAN_STR_MAX + 1]; /* model bytes */
} outcome_t;

/* Copies the observable state of s into o. */
static void s_capture(const jscan_t *s, int rc, outcome_t *o)
{
    memset(o, 0, sizeof *o);
    o->rc = rc;
    o->kind = jscan_error(s)->kind;
    o->off = jscan_error(s)->offset;
    memcpy(o->msg, jscan_error(s)->msg, sizeof o->msg);
    o->res = *jscan_result(s);
    if (o->res.model)
        memcpy(o->model, o->res.model, o->res.model_len);
    o->res.model = NULL;
}

/* Feeds len bytes in chunks that end at the offsets in cuts (ascending), then finishes. */
static void s_run_cuts(jscan_t *s, const char *doc, size_t len, const size_t *cuts, size_t ncuts,
                       outcome_t *o)
{
    jscan_reset(s);
    size_t at = 0;
    int rc = 0;
    for (size_t i = 0; i <= ncuts && rc == 0; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        rc = jscan_feed(s, doc + at, end - at);
        at = end;
    }
    if (rc == 0)
        rc = jscan_finish(s);
    else
        assert_int_equal(jscan_finish(s), rc); /* a fatal error sticks */
    s_capture(s, rc, o);
}

/* Feeds the whole body at once. */
static void s_run(jscan_t *s, const char *doc, size_t len, outcome_t *o)
{
    s_run_cuts(s, doc, len, NULL, 0, o);
}

/* Whether two results say the same (the model compared by content). */
static bool s_res_equal(const jscan_result_t *a, const jscan_result_t *b)
{
    return a->complete == b->complete && a->members == b->members && a->has_model == b->has_model &&
           a->model_len == b->model_len && a->has_stream == b->has_stream &&
           a->stream == b->stream && a->has_max_tokens == b->has_max_tokens &&
           a->max_tokens == b->max_tokens && a->max_tokens_key == b->max_tokens_key &&
           a->stream_options_present == b->stream_options_present &&
           a->has_include_usage == b->has_include_usage && a->include_usage == b->include_usage;
}

/* Fails unless two outcomes are the same; name says which body. */
static void s_same(const char *name, const char *how, const outcome_t *a, const outcome_t *b)
{
    if (a->rc != b->rc || a->kind != b->kind || a->off != b->off || strcmp(a->msg, b->msg) != 0 ||
        !s_res_equal(&a->res, &b->res) || memcmp(a->model, b->model, sizeof a->model) != 0)
        fail_msg("%s: %s differs: rc %d/%d kind %d/%d off %" PRIu64 "/%" PRIu64 " msg '%s'/'%s'",
                 name, how, a->rc, b->rc, (int)a->kind, (int)b->kind, a->off, b->off, a->msg,
                 b->msg);
}

/* Scans doc whole, one byte at a time, split at every point and in three pieces; every way
 * must give the same outcome, returned in o. */
static void s_run_all_splits(jscan_t *s, const char *name, const char *doc, size_t len,
                             outcome_t *o)
{
    outcome_t x;
    s_run(s, doc, len, o);
    for (size_t k = 0; k <= len; k++) {
        s_run_cuts(s, doc, len, &k, 1, &x);
        s_same(name, "split", o, &x);
    }
    for (size_t k = 0; k + 7 <= len; k += 3) {
        size_t cuts[2] = {k, k + 7};
        s_run_cuts(s, doc, len, cuts, 2, &x);
        s_same(name, "three pieces", o, &x);
    }
    /* one byte at a time, with empty feeds in between */
    jscan_reset(s);
    int rc = 0;
    for (size_t i = 0; i < len && rc == 0; i++) {
        rc = jscan_feed(s, doc + i, 1);
        if (rc == 0)
            rc = jscan_feed(s, doc + i, 0);
    }
    if (rc == 0)
        rc = jscan_finish(s);
    s_capture(s, rc, &x);
    s_same(name, "byte by byte", o, &x);
}

/* jansson's opinion: 1 valid object, 0 invalid, -1 when jansson cannot tell (numbers it cannot
 * represent, a NUL in a key: valid JSON it refuses for its own reasons; a raw NUL byte, which it
 * sometimes skips). */
static int s_jansson(const char *doc, size_t len)
{
    json_error_t je;
    json_t *j = json_loadb(doc, len, JSON_ALLOW_NUL, &je);
    if (!j) {
        enum json_error_code c = json_error_code(&je);
        return c == json_error_numeric_overflow || c == json_error_null_byte_in_key ? -1 : 0;
    }
    int obj = json_is_object(j);
    json_decref(j);
    /* jansson drops a raw NUL byte after some tokens ({"a":1\0} loads): no opinion then */
    return obj && memchr(doc, 0, len) ? -1 : obj;
}

/* ---- JSONTestSuite-style bodies ----------------------------------------------------------- */

enum { J_SAME, J_SKIP }; /* compare validity with jansson, or not */

typedef struct {
    const char *name;  /* y_ valid, n_ invalid, as in JSONTestSuite */
    const char *doc;   /* the body (may hold NUL bytes) */
    size_t len;        /* its length */
    int want;          /* jscan_finish's answer */
    jscan_kind_t kind; /* expected error kind */
    int jansson;       /* J_SAME or J_SKIP */
} tcase_t;

/* clang-format off */
#define Y(n, d) {n, d, sizeof d - 1, 0, JSCAN_OK, J_SAME}
#define N(n, d) {n, d, sizeof d - 1, -EBADMSG, JSCAN_E_SYNTAX, J_SAME}
#define NOBJ(n, d) {n, d, sizeof d - 1, -EBADMSG, JSCAN_E_NOT_OBJECT, J_SKIP}
/* clang-format on */

static const tcase_t s_cases[] = {
    Y("y_object_empty", "{}"),
    Y("y_object_ws", " \t\r\n{ \t\r\n}\r\n \t"),
    Y("y_object_basic", "{\"a\":1}"),
    Y("y_object_spaces", "{ \"a\" : [ 1 , 2 ] , \"b\" : { } }"),
    Y("y_nested", "{\"a\":[[],[{}],[1,[2,[3]]],{\"b\":{\"c\":[]}}]}"),
    Y("y_string_escapes", "{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}"),
    Y("y_unicode_escapes", "{\"s\":\"\\u0041\\u00e9\\u4E2D\\u20ac\"}"),
    Y("y_surrogate_pair", "{\"s\":\"\\uD83D\\uDE00\\ud834\\udd1e\"}"),
    Y("y_surrogate_max", "{\"s\":\"\\uDBFF\\uDFFF\"}"),
    Y("y_utf8_raw", "{\"s\":\"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\"}"),
    Y("y_utf8_edges",
      "{\"s\":\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xf0\x90\x80\x80"
      "\xf4\x8f\xbf\xbf\"}"),
    Y("y_utf8_key", "{\"\xe4\xb8\xad\":\"\xc3\xa9\"}"),
    Y("y_noncharacters", "{\"s\":\"\\uFFFF\xef\xbf\xbf\\uFDD0\"}"),
    Y("y_escaped_nul", "{\"s\":\"a\\u0000b\"}"),
    Y("y_escaped_controls", "{\"s\":\"\\u001f\\u0001\"}"),
    Y("y_del_char", "{\"s\":\"\x7f\"}"),
    Y("y_numbers", "{\"a\":[0,-0,1,-1,0.5,-0.5,1e5,1E+5,1e-5,0e0,-0.0e-0,123.456e-78,1.0E10]}"),
    Y("y_int64_edges", "{\"a\":9223372036854775807,\"b\":-9223372036854775808}"),
    Y("y_literals", "{\"a\":true,\"b\":false,\"c\":null,\"d\":[true,false,null]}"),
    Y("y_empty_key", "{\"\":0}"),
    Y("y_duplicate_uncaptured", "{\"a\":1,\"a\":2}"),
    Y("y_nested_captured_names",
      "{\"messages\":[{\"model\":\"x\",\"stream\":\"no\",\"max_tokens\":-1}],"
      "\"x\":{\"model\":1,\"model\":2}}"),
    Y("y_long_string", "{\"s\":\"0123456789012345678901234567890123456789012345678901234567890"
                       "12345678901234567890123456789012345678901234567890123456789\"}"),
    Y("y_number_then_ws", "{\"a\":1 ,\"b\":[2 ]\n}"),
    {"y_huge_numbers", "{\"a\":1e999999,\"b\":100000000000000000000000000000,\"c\":-1e-999}",
     sizeof "{\"a\":1e999999,\"b\":100000000000000000000000000000,\"c\":-1e-999}" - 1, 0, JSCAN_OK,
     J_SKIP},
    {"y_nul_in_key", "{\"a\\u0000b\":1}", sizeof "{\"a\\u0000b\":1}" - 1, 0, JSCAN_OK, J_SKIP},

    N("n_empty", ""),
    N("n_ws_only", " \n\t "),
    N("n_bom", "\xef\xbb\xbf{}"),
    NOBJ("n_top_array", "[]"),
    NOBJ("n_top_string", "\"a\""),
    NOBJ("n_top_number", "1"),
    NOBJ("n_top_null", "null"),
    N("n_top_close", "}"),
    N("n_trailing_comma_object", "{\"a\":1,}"),
    N("n_trailing_comma_array", "{\"a\":[1,]}"),
    N("n_double_comma", "{\"a\":[1,,2]}"),
    N("n_leading_comma", "{\"a\":[,1]}"),
    N("n_object_leading_comma", "{,\"a\":1}"),
    N("n_missing_colon", "{\"a\" 1}"),
    N("n_double_colon", "{\"a\"::1}"),
    N("n_missing_value", "{\"a\":}"),
    N("n_missing_comma", "{\"a\":1 \"b\":2}"),
    N("n_unquoted_key", "{a:1}"),
    N("n_number_key", "{1:2}"),
    N("n_single_quotes", "{'a':1}"),
    N("n_unclosed_object", "{\"a\":1"),
    N("n_unclosed_array", "{\"a\":[1"),
    N("n_unclosed_string", "{\"a\":\"abc"),
    N("n_unclosed_key", "{\"a"),
    N("n_mismatch_brackets", "{\"a\":[}]}"),
    N("n_mismatch_object", "{\"a\":{]}"),
    N("n_extra_close", "{}}"),
    N("n_trailing_garbage", "{} x"),
    N("n_two_objects", "{}{}"),
    N("n_trailing_nul", "{}\0"),
    {"n_nul_after_number", "{\"a\":1\0}", 8, -EBADMSG, JSCAN_E_SYNTAX, J_SKIP}, /* jansson: ok */
    N("n_comment", "{/* c */}"),
    N("n_vertical_tab_ws", "{\x0b}"),
    N("n_form_feed_ws", "{\x0c}"),
    N("n_leading_zero", "{\"a\":01}"),
    N("n_leading_zero_negative", "{\"a\":-01}"),
    N("n_leading_zeros_frac", "{\"a\":00.5}"),
    N("n_dot_end", "{\"a\":1.}"),
    N("n_dot_exp", "{\"a\":1.e5}"),
    N("n_dot_start", "{\"a\":.1}"),
    N("n_minus_only", "{\"a\":-}"),
    N("n_minus_space", "{\"a\":- 1}"),
    N("n_plus", "{\"a\":+1}"),
    N("n_exp_empty", "{\"a\":1e}"),
    N("n_exp_sign_only", "{\"a\":1e+}"),
    N("n_exp_frac", "{\"a\":1e5.5}"),
    N("n_double_dot", "{\"a\":1.2.3}"),
    N("n_hex", "{\"a\":0x10}"),
    N("n_infinity", "{\"a\":Infinity}"),
    N("n_minus_infinity", "{\"a\":-Infinity}"),
    N("n_nan", "{\"a\":NaN}"),
    N("n_literal_caps", "{\"a\":True}"),
    N("n_literal_truncated", "{\"a\":tru}"),
    N("n_literal_extra", "{\"a\":truex}"),
    N("n_literal_nul", "{\"a\":nul}"),
    N("n_bad_escape", "{\"s\":\"\\x\"}"),
    N("n_escape_upper_u", "{\"s\":\"\\U0041\"}"),
    N("n_escape_short_u", "{\"s\":\"\\u12\"}"),
    N("n_escape_bad_hex", "{\"s\":\"\\u12G4\"}"),
    N("n_escape_at_end", "{\"s\":\"\\"),
    N("n_escaped_apostrophe", "{\"s\":\"\\'\"}"),
    N("n_lone_high_surrogate", "{\"s\":\"\\uD800\"}"),
    N("n_lone_high_then_char", "{\"s\":\"\\uD800x\"}"),
    N("n_high_then_bad_escape", "{\"s\":\"\\uD800\\n\"}"),
    N("n_high_high", "{\"s\":\"\\uD800\\uD800\"}"),
    N("n_lone_low_surrogate", "{\"s\":\"\\uDC00\"}"),
    N("n_low_high", "{\"s\":\"\\uDC00\\uD800\"}"),
    N("n_raw_tab", "{\"s\":\"a\tb\"}"),
    N("n_raw_newline", "{\"s\":\"a\nb\"}"),
    N("n_raw_nul", "{\"s\":\"a\0b\"}"),
    N("n_raw_control_in_key", "{\"a\x01\":1}"),
    N("n_overlong_2", "{\"s\":\"\xc0\xaf\"}"),
    N("n_overlong_2b", "{\"s\":\"\xc1\xbf\"}"),
    N("n_overlong_3", "{\"s\":\"\xe0\x80\xaf\"}"),
    N("n_overlong_4", "{\"s\":\"\xf0\x80\x80\xaf\"}"),
    N("n_utf8_surrogate", "{\"s\":\"\xed\xa0\x80\"}"),
    N("n_utf8_above_max", "{\"s\":\"\xf4\x90\x80\x80\"}"),
    N("n_utf8_f5", "{\"s\":\"\xf5\x80\x80\x80\"}"),
    N("n_utf8_ff", "{\"s\":\"\xff\"}"),
    N("n_utf8_lone_continuation", "{\"s\":\"\x80\"}"),
    N("n_utf8_truncated", "{\"s\":\"\xe4\xb8\"}"),
    N("n_utf8_truncated_at_end", "{\"s\":\"\xe4\xb8"),
    N("n_utf8_outside_string", "{\xc3\xa9:1}"),
    N("n_utf8_latin1", "{\"s\":\"caf\xe9\"}"),
};

/* Every body: the expected answer, the same at every split point, and jansson agrees. */
static void test_suite_cases(void **state)
{
    (void)state;
    jscan_t *s = jscan_new(NULL);
    assert_non_null(s);
    size_t valid = 0, invalid = 0;
    for (size_t i = 0; i < sizeof s_cases / sizeof s_cases[0]; i++) {
        const tcase_t *c = &s_cases[i];
        outcome_t o;
        s_run_all_splits(s, c->name, c->doc, c->len, &o);
        if (o.rc != c->want || o.kind != c->kind)
            fail_msg("%s: rc %d kind %d (%s), want %d kind %d", c->name, o.rc, (int)o.kind, o.msg,
                     c->want, (int)c->kind);
        if (c->want && (!strstr(o.msg, "byte ") || o.off > c->len))
            fail_msg("%s: message '%s' offset %" PRIu64, c->name, o.msg, o.off);
        if (c->jansson == J_SAME && s_jansson(c->doc, c->len) != (c->want == 0))
            fail_msg("%s: jansson disagrees", c->name);
        if (c->want)
            invalid++;
        else
            valid++;
    }
    print_message("[ info ] %zu valid and %zu invalid bodies, every split point\n", valid, invalid);
    jscan_destroy(&s);
    assert_null(s);
}

/* Error offsets point at the offending byte. */
static void test_error_offsets(void **state)
{
    (void)state;
    static const struct {
        const char *doc;
        uint64_t off;
    } t[] = {
        {"{\"a\":01}", 6},           {"{\"a\":[1,]}", 8}, {"{\"s\":\"\\uD800x\"}", 12},
        {"{\"s\":\"\xc0\xaf\"}", 6}, {"{\"a\":1}  x", 9}, {"{\"a\":1", 6},
        {"{\"s\":\"\\q\"}", 7},      {"{\"a\":1.}", 7},   {"[]", 0},
    };
    jscan_t *s = jscan_new(NULL);
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        outcome_t o;
        s_run_all_splits(s, t[i].doc, t[i].doc, strlen(t[i].doc), &o);
        if (o.off != t[i].off)
            fail_msg("%s: offset %" PRIu64 ", want %" PRIu64 " (%s)", t[i].doc, o.off, t[i].off,
                     o.msg);
    }
    jscan_destroy(&s);
}

/* Builds "{\"a\":" + n '[' + n ']' + "}" into buf; returns its length. */
static size_t s_deep(char *buf, size_t n, char open, char close)
{
    size_t len = 0;
    memcpy(buf, "{\"a\":", 5);
    len = 5;
    memset(buf + len, open, n);
    len += n;
    memset(buf + len, close, n);
    len += n;
    buf[len++] = '}';
    return len;
}

/* The depth limit: 64 levels pass, 65 fail with -ELOOP at the 65th bracket, a million fail
 * early without memory; a custom limit works. */
static void test_depth(void **state)
{
    (void)state;
    static char buf[2100000];
    jscan_t *s = jscan_new(NULL);
    outcome_t o;
    size_t len = s_deep(buf, 63, '[', ']'); /* 1 object + 63 arrays */
    s_run_all_splits(s, "depth 64", buf, len, &o);
    assert_int_equal(o.rc, 0);
    assert_int_equal(s_jansson(buf, len), 1);
    len = s_deep(buf, 64, '[', ']');
    s_run_all_splits(s, "depth 65", buf, len, &o);
    assert_int_equal(o.rc, -ELOOP);
    assert_int_equal(o.kind, JSCAN_E_DEPTH);
    assert_int_equal(o.off, 5 + 63);
    assert_non_null(strstr(o.msg, "64 levels"));
    t_allocs = 0;
    len = s_deep(buf, 1000000, '[', ']');
    s_run(s, buf, len, &o);
    assert_int_equal(o.rc, -ELOOP);
    assert_int_equal(t_allocs, 0);
    jscan_destroy(&s);

    jscan_opts_t opts = {.max_depth = 3};
    s = jscan_new(&opts);
    s_run(s, "{\"a\":{\"b\":{}}}", 14, &o);
    assert_int_equal(o.rc, 0);
    s_run(s, "{\"a\":{\"b\":{\"c\":[]}}}", 20, &o);
    assert_int_equal(o.rc, -ELOOP);
    assert_int_equal(o.off, 15);
    jscan_destroy(&s);

    opts.max_depth = JSCAN_DEPTH_MAX;
    s = jscan_new(&opts);
    len = s_deep(buf, JSCAN_DEPTH_MAX - 1, '[', ']');
    s_run(s, buf, len, &o);
    assert_int_equal(o.rc, 0);
    len = s_deep(buf, JSCAN_DEPTH_MAX, '[', ']');
    s_run(s, buf, len, &o);
    assert_int_equal(o.rc, -ELOOP);
    len = s_deep(buf, JSCAN_DEPTH_MAX - 100, '[', ']');
    buf[5 + 500] = '{'; /* a '{' among the '[' wants a key, not '[' */
    s_run(s, buf, len, &o);
    assert_int_equal(o.rc, -EBADMSG);
    jscan_destroy(&s);

    opts.max_depth = JSCAN_DEPTH_MAX + 1;
    errno = 0;
    assert_null(jscan_new(&opts));
    assert_int_equal(errno, EINVAL);
}

/* ---- captured members --------------------------------------------------------------------- */

/* Scans doc at every split point and returns the outcome; the scanner stays on the last run. */
static outcome_t s_scan_doc(jscan_t *s, const char *doc)
{
    outcome_t o;
    s_run_all_splits(s, doc, doc, strlen(doc), &o);
    return o;
}

/* A typical request: every field the gateway needs. */
static void test_capture_basic(void **state)
{
    (void)state;
    jscan_t *s = jscan_new(NULL);
    outcome_t o =
        s_scan_doc(s, "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":"
                      "\"hi\"}],\"stream\":true,\"max_tokens\":100,"
                      "\"stream_options\":{\"include_usage\":true}}");
    const jscan_result_t *r = jscan_result(s);
    assert_int_equal(o.rc, 0);
    assert_true(r->complete);
    assert_int_equal(r->members, 5);
    assert_true(r->has_model);
    assert_int_equal(r->model_len, 6);
    assert_string_equal(r->model, "gpt-4o");
    assert_true(r->has_stream);
    assert_true(r->stream);
    assert_true(r->has_max_tokens);
    assert_int_equal(r->max_tokens, 100);
    assert_string_equal(r->max_tokens_key, "max_tokens");
    assert_true(r->stream_options_present);
    assert_true(r->has_include_usage);
    assert_true(r->include_usage);
    assert_int_equal(jscan_error(s)->code, 0);
    const jscan_value_t *v = jscan_value(s, JSCAN_K_MODEL);
    assert_int_equal(v->type, JSCAN_T_STRING);
    assert_int_equal(v->key_offset, 1);
    assert_int_equal(v->value_offset, 9);
    assert_int_equal(jscan_value(s, JSCAN_K_STREAM_OPTIONS)->type, JSCAN_T_OBJECT);
    assert_null(jscan_value(s, JSCAN_K_BUILTIN_COUNT));
    assert_string_equal(jscan_key_name(s, JSCAN_K_MAX_OUTPUT_TOKENS), "max_output_tokens");
    assert_null(jscan_key_name(s, 99));
    assert_int_equal(jscan_offset(s), strlen("{\"model\":\"gpt-4o\",\"messages\":[{\"role\":"
                                             "\"user\",\"content\":\"hi\"}],\"stream\":true,"
                                             "\"max_tokens\":100,\"stream_options\":"
                                             "{\"include_usage\":true}}"));

    /* nothing captured: all absent, still complete */
    o = s_scan_doc(s, "{\"input\":\"x\"}");
    assert_int_equal(o.rc, 0);
    assert_true(r->complete);
    assert_false(r->has_model || r->has_stream || r->has_max_tokens);
    assert_false(r->stream_options_present || r->has_include_usage);
    assert_null(r->model);
    assert_int_equal(jscan_value(s, JSCAN_K_MODEL)->type, JSCAN_T_ABSENT);
    jscan_destroy(&s);
}

/* The same names deeper down are ignored; only include_usage one level down counts. */
static void test_nested_ignored(void **state)
{
    (void)state;
    jscan_t *s = jscan_new(NULL);
    const jscan_result_t *r = jscan_result(s);
    outcome_t o = s_scan_doc(s, "{\"messages\":[{\"model\":\"x\"}]}");
    assert_int_equal(o.rc, 0);
    assert_false(r->has_model);
    assert_int_equal(r->members, 1);

    o = s_scan_doc(s, "{\"a\":{\"model\":\"x\",\"model\":1,\"stream\":\"s\",\"max_tokens\":-5},"
                      "\"model\":\"real\",\"b\":[{\"model\":\"y\"}],\"c\":{\"d\":{\"model\":2}}}");
    assert_int_equal(o.rc, 0);
    assert_true(r->has_model);
    assert_string_equal(r->model, "real");
    assert_false(r->has_stream);
    assert_false(r->has_max_tokens);
    assert_int_equal(r->members, 4);

    /* include_usage: only directly inside the top-level stream_options object */
    o = s_scan_doc(s, "{\"include_usage\":true,\"x\":{\"include_usage\":true},"
                      "\"stream_options\":{\"y\":{\"include_usage\":true},\"z\":[{\"include_usage\""
                      ":1}]}}");
    assert_int_equal(o.rc, 0);
    assert_true(r->stream_options_present);
    assert_false(r->has_include_usage);
    o = s_scan_doc(s, "{\"stream_options\":{\"y\":{\"a\":[]},\"include_usage\":false},"
                      "\"m\":{\"include_usage\":true}}");
    assert_int_equal(o.rc, 0);
    assert_true(r->has_include_usage);
    assert_false(r->include_usage);
    /* stream_options that is not an object: present, nothing under it */
    o = s_scan_doc(s, "{\"stream_options\":[{\"include_usage\":true}]}");
    assert_int_equal(o.rc, 0);
    assert_true(r->stream_options_present);
    assert_false(r->has_include_usage);
    o = s_scan_doc(s, "{\"stream_options\":null}");
    assert_int_equal(o.rc, 0);
    assert_false(r->stream_options_present);
    jscan_destroy(&s);
}

/* Duplicates among captured keys, compared unescaped; others may repeat. */
static void test_duplicates(void **state)
{
    (void)state;
    jscan_t *s = jscan_new(NULL);
    outcome_t o = s_scan_doc(s, "{\"model\":\"cheap\",\"mod\\u0065l\":\"expensive\"}");
    assert_int_equal(o.rc, -EEXIST);
    assert_int_equal(o.kind, JSCAN_E_DUPLICATE);
    assert_int_equal(o.off, 17);
    assert_string_equal(jscan_error(s)->key, "model");
    assert_non_null(strstr(o.msg, "\"model\""));
    assert_non_null(strstr(o.msg, "byte 17"));
    assert_false(jscan_result(s)->complete);
    assert_string_equal(jscan_result(s)->model, "cheap"); /* the first value is kept */

    static const char *const dups[] = {
        "{\"stream\":true,\"\\u0073tream\":false}",
        "{\"model\":\"a\",\"x\":1,\"model\":\"a\"}",
        "{\"model\":null,\"model\":\"a\"}",
        "{\"max_tokens\":1,\"max_tokens\":1}",
        "{\"max_completion_tokens\":1,\"\\u006dax_completion_tokens\":2}",
        "{\"max_output_tokens\":1,\"max_output_tokens\":null}",
        "{\"stream_options\":{},\"stream_options\":{}}",
        "{\"stream_options\":{\"include_usage\":true,\"include\\u005fusage\":false}}",
        "{\"\\u006d\\u006f\\u0064\\u0065\\u006c\":\"a\",\"model\":\"b\"}",
    };
    for (size_t i = 0; i < sizeof dups / sizeof dups[0]; i++) {
        o = s_scan_doc(s, dups[i]);
        if (o.rc != -EEXIST)
            fail_msg("%s: rc %d", dups[i], o.rc);
        assert_int_equal(s_jansson(dups[i], strlen(dups[i])), 1);
    }
    static const char *const fine[] = {
        "{\"a\":1,\"a\":2}",
        "{\"model\":\"a\",\"models\":\"b\",\"Model\":\"c\",\"model \":\"d\"}",
        "{\"model\":\"a\",\"model\\u0000\":\"b\"}",
        "{\"stream_options\":{\"x\":1,\"x\":2},\"include_usage\":1,\"include_usage\":2}",
        "{\"model\":\"a\",\"m\":{\"model\":\"b\",\"model\":\"c\"}}",
    };
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
        o = s_scan_doc(s, fine[i]);
        if (o.rc != 0)
            fail_msg("%s: rc %d (%s)", fine[i], o.rc, o.msg);
    }

    /* a syntax error after a duplicate wins, but the verdict shows early */
    const char *doc = "{\"model\":\"a\",\"model\":\"b\",]";
    jscan_reset(s);
    assert_int_equal(jscan_feed(s, doc, 25), 0);
    assert_int_equal(jscan_error(s)->code, -EEXIST);
    assert_int_equal(jscan_feed(s, doc + 25, 1), -EBADMSG);
    assert_int_equal(jscan_error(s)->kind, JSCAN_E_SYNTAX);
    assert_int_equal(jscan_finish(s), -EBADMSG);
    jscan_destroy(&s);
}

/* Type checks: model a string, stream a boolean, token limits integers >= 0; null is absent. */
static void test_types(void **state)
{
    (void)state;
    static const struct {
        const char *doc;
        jscan_kind_t kind;
        uint64_t off;
        const char *key;
    } bad[] = {
        {"{\"model\":1}", JSCAN_E_MODEL_TYPE, 9, "model"},
        {"{\"model\":[\"a\"]}", JSCAN_E_MODEL_TYPE, 9, "model"},
        {"{\"model\":{}}", JSCAN_E_MODEL_TYPE, 9, "model"},
        {"{\"model\":true}", JSCAN_E_MODEL_TYPE, 9, "model"},
        {"{\"stream\":\"true\"}", JSCAN_E_STREAM_TYPE, 10, "stream"},
        {"{\"stream\":1}", JSCAN_E_STREAM_TYPE, 10, "stream"},
        {"{\"stream\" : 0}", JSCAN_E_STREAM_TYPE, 12, "stream"},
        {"{\"max_tokens\":-1}", JSCAN_E_MAX_TOKENS_TYPE, 14, "max_tokens"},
        {"{\"max_tokens\":1.5}", JSCAN_E_MAX_TOKENS_TYPE, 14, "max_tokens"},
        {"{\"max_tokens\":10.0}", JSCAN_E_MAX_TOKENS_TYPE, 14, "max_tokens"},
        {"{\"max_tokens\":1e3}", JSCAN_E_MAX_TOKENS_TYPE, 14, "max_tokens"},
        {"{\"max_tokens\":\"10\"}", JSCAN_E_MAX_TOKENS_TYPE, 14, "max_tokens"},
        {"{\"max_tokens\":9223372036854775808}", JSCAN_E_MAX_TOKENS_TYPE, 14, "max_tokens"},
        {"{\"max_tokens\":-9223372036854775809}", JSCAN_E_MAX_TOKENS_TYPE, 14, "max_tokens"},
        {"{\"max_tokens\":99999999999999999999999}", JSCAN_E_MAX_TOKENS_TYPE, 14, "max_tokens"},
        {"{\"max_completion_tokens\":false}", JSCAN_E_MAX_TOKENS_TYPE, 25, "max_completion_tokens"},
        {"{\"max_output_tokens\":[]}", JSCAN_E_MAX_TOKENS_TYPE, 21, "max_output_tokens"},
        {"{\"max_tokens\":5,\"max_output_tokens\":-5}", JSCAN_E_MAX_TOKENS_TYPE, 36,
         "max_output_tokens"},
        /* the first verdict wins */
        {"{\"stream\":1,\"model\":2}", JSCAN_E_STREAM_TYPE, 10, "stream"},
    };
    jscan_t *s = jscan_new(NULL);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        outcome_t o = s_scan_doc(s, bad[i].doc);
        if (o.rc != -EINVAL || o.kind != bad[i].kind || o.off != bad[i].off)
            fail_msg("%s: rc %d kind %d off %" PRIu64 " (%s)", bad[i].doc, o.rc, (int)o.kind, o.off,
                     o.msg);
        assert_string_equal(jscan_error(s)->key, bad[i].key);
        char where[64];
        snprintf(where, sizeof where, "\"%s\" at byte %" PRIu64, bad[i].key, bad[i].off);
        if (!strstr(o.msg, where))
            fail_msg("%s: message '%s' lacks '%s'", bad[i].doc, o.msg, where);
        assert_false(jscan_result(s)->complete);
    }
    /* a verdict never hides a syntax error later on */
    outcome_t o = s_scan_doc(s, "{\"model\":1,}");
    assert_int_equal(o.rc, -EBADMSG);

    /* null is absent */
    o = s_scan_doc(s, "{\"model\":null,\"stream\":null,\"max_tokens\":null,"
                      "\"max_completion_tokens\":7}");
    const jscan_result_t *r = jscan_result(s);
    assert_int_equal(o.rc, 0);
    assert_false(r->has_model);
    assert_false(r->has_stream);
    assert_true(r->has_max_tokens);
    assert_int_equal(r->max_tokens, 7);
    assert_string_equal(r->max_tokens_key, "max_completion_tokens");
    assert_int_equal(jscan_value(s, JSCAN_K_MODEL)->type, JSCAN_T_NULL);

    /* good values, int64 edges, -0 is 0 */
    o = s_scan_doc(s, "{\"max_tokens\":9223372036854775807,\"stream\":false,\"model\":\"\"}");
    assert_int_equal(o.rc, 0);
    assert_int_equal(r->max_tokens, INT64_MAX);
    assert_true(r->has_stream);
    assert_false(r->stream);
    assert_true(r->has_model);
    assert_int_equal(r->model_len, 0);
    o = s_scan_doc(s, "{\"max_tokens\":-0}");
    assert_int_equal(o.rc, 0);
    assert_int_equal(r->max_tokens, 0);
    o = s_scan_doc(s, "{\"max_tokens\":0}");
    assert_int_equal(o.rc, 0);
    assert_true(r->has_max_tokens);

    /* which limit wins: by name, whatever the order in the body */
    o = s_scan_doc(s, "{\"max_output_tokens\":5,\"max_completion_tokens\":7,\"max_tokens\":9}");
    assert_int_equal(o.rc, 0);
    assert_int_equal(r->max_tokens, 9);
    assert_string_equal(r->max_tokens_key, "max_tokens");
    o = s_scan_doc(s, "{\"max_output_tokens\":5,\"max_completion_tokens\":7}");
    assert_int_equal(r->max_tokens, 7);
    o = s_scan_doc(s, "{\"max_output_tokens\":5}");
    assert_int_equal(r->max_tokens, 5);
    assert_string_equal(r->max_tokens_key, "max_output_tokens");
    jscan_destroy(&s);
}

/* The model string is unescaped and bounded. */
static void test_model_string(void **state)
{
    (void)state;
    jscan_t *s = jscan_new(NULL);
    const jscan_result_t *r = jscan_result(s);
    outcome_t o = s_scan_doc(s, "{\"model\":\"gpt\\u002d4o\\/mini\\n\\u00e9\\uD83D\\uDE00\"}");
    assert_int_equal(o.rc, 0);
    assert_string_equal(r->model, "gpt-4o/mini\n\xc3\xa9\xf0\x9f\x98\x80");
    o = s_scan_doc(s, "{\"model\":\"a\\u0000b\"}");
    assert_int_equal(o.rc, 0);
    assert_int_equal(r->model_len, 3);
    assert_memory_equal(r->model, "a\0b", 4);

    char doc[1024];
    char name[400];
    memset(name, 'm', sizeof name);
    for (size_t n = JSCAN_STR_MAX - 2; n <= JSCAN_STR_MAX + 2; n++) {
        snprintf(doc, sizeof doc, "{\"model\":\"%.*s\"}", (int)n, name);
        jscan_reset(s);
        assert_int_equal(jscan_feed(s, doc, strlen(doc)), 0);
        int rc = jscan_finish(s);
        if (n <= JSCAN_STR_MAX) {
            assert_int_equal(rc, 0);
            assert_int_equal(r->model_len, n);
        } else {
            assert_int_equal(rc, -EINVAL);
            assert_int_equal(jscan_error(s)->kind, JSCAN_E_MODEL_LONG);
            assert_false(r->has_model);
            assert_non_null(strstr(jscan_error(s)->msg, "longer than 256 bytes"));
        }
    }
    /* a multi-byte character across the bound is dropped whole */
    memset(doc, 0, sizeof doc);
    memcpy(doc, "{\"x\":\"", 6);
    memset(doc + 6, 'a', JSCAN_STR_MAX - 1);
    memcpy(doc + 6 + JSCAN_STR_MAX - 1, "\xc3\xa9\"}", 4);
    const char *extra[] = {"x"};
    jscan_opts_t opts = {.extra = extra, .n_extra = 1};
    jscan_t *s2 = jscan_new(&opts);
    o = s_scan_doc(s2, doc);
    assert_int_equal(o.rc, 0);
    const jscan_value_t *v = jscan_value(s2, JSCAN_K_BUILTIN_COUNT);
    assert_true(v->str_truncated);
    assert_int_equal(v->str_len, JSCAN_STR_MAX - 1);
    memcpy(doc + 6 + JSCAN_STR_MAX - 1, "\\u00e9\"}", 9);
    o = s_scan_doc(s2, doc);
    assert_true(v->str_truncated);
    assert_int_equal(v->str_len, JSCAN_STR_MAX - 1);
    memcpy(doc + 6 + JSCAN_STR_MAX - 1, "\\u00e9z\"}", 10);
    o = s_scan_doc(s2, doc);
    assert_int_equal(v->str_len, JSCAN_STR_MAX - 1); /* nothing kept after a truncation */
    jscan_destroy(&s2);
    jscan_destroy(&s);
}

/* Keys seen by the callback. */
typedef struct {
    char keys[8][JSCAN_KEY_MAX + 1]; /* keys in order */
    size_t lens[8];                  /* their lengths */
    bool trunc[8];                   /* truncated flags */
    uint64_t offs[8];                /* offsets */
    size_t n;                        /* how many */
} keylog_t;

/* on_key callback that logs into a keylog_t. */
static void s_on_key(void *ctx, const char *key, size_t len, bool truncated, uint64_t offset)
{
    keylog_t *l = ctx;
    if (l->n < 8) {
        memcpy(l->keys[l->n], key, len);
        l->lens[l->n] = len;
        l->trunc[l->n] = truncated;
        l->offs[l->n] = offset;
    }
    l->n++;
}

/* Every top-level key reaches the callback, unescaped; extra keys are captured. */
static void test_keys_and_extras(void **state)
{
    (void)state;
    keylog_t log;
    const char *extra[] = {"user", "n", "temperature"};
    jscan_opts_t opts = {.extra = extra, .n_extra = 3, .on_key = s_on_key, .ctx = &log};
    jscan_t *s = jscan_new(&opts);
    assert_non_null(s);
    char doc[1024];
    char longkey[300];
    memset(longkey, 'k', sizeof longkey);
    int len = snprintf(doc, sizeof doc,
                       "{\"a\\u00e9\":{\"nested\":1},\"user\":\"u\\u0041\",\"n\":-3,"
                       "\"temperature\":0.5,\"%.*s\":0,\"\":[]}",
                       (int)sizeof longkey, longkey);
    memset(&log, 0, sizeof log);
    assert_int_equal(jscan_feed(s, doc, (size_t)len), 0);
    assert_int_equal(jscan_finish(s), 0);
    assert_int_equal(log.n, 6);
    assert_int_equal(jscan_result(s)->members, 6);
    assert_string_equal(log.keys[0], "a\xc3\xa9");
    assert_int_equal(log.offs[0], 1);
    assert_string_equal(log.keys[1], "user");
    assert_int_equal(log.lens[4], JSCAN_KEY_MAX);
    assert_true(log.trunc[4]);
    assert_false(log.trunc[3]);
    assert_int_equal(log.lens[5], 0);
    const jscan_value_t *v = jscan_value(s, JSCAN_K_BUILTIN_COUNT);
    assert_int_equal(v->type, JSCAN_T_STRING);
    assert_string_equal(v->str, "uA");
    v = jscan_value(s, JSCAN_K_BUILTIN_COUNT + 1);
    assert_int_equal(v->type, JSCAN_T_NUMBER);
    assert_true(v->is_int);
    assert_int_equal(v->i64, -3);
    v = jscan_value(s, JSCAN_K_BUILTIN_COUNT + 2);
    assert_int_equal(v->type, JSCAN_T_NUMBER);
    assert_false(v->is_int);
    assert_false(v->int_overflow);
    assert_string_equal(jscan_key_name(s, JSCAN_K_BUILTIN_COUNT + 2), "temperature");
    assert_null(jscan_value(s, JSCAN_K_BUILTIN_COUNT + 3));

    /* extra keys are duplicate-checked too, and big integers flagged */
    jscan_reset(s);
    memset(&log, 0, sizeof log);
    const char *d2 = "{\"n\":1,\"\\u006e\":2}";
    assert_int_equal(jscan_feed(s, d2, strlen(d2)), 0);
    assert_int_equal(jscan_finish(s), -EEXIST);
    assert_string_equal(jscan_error(s)->key, "n");
    jscan_reset(s);
    const char *d3 = "{\"n\":-9223372036854775809}";
    assert_int_equal(jscan_feed(s, d3, strlen(d3)), 0);
    assert_int_equal(jscan_finish(s), 0);
    v = jscan_value(s, JSCAN_K_BUILTIN_COUNT + 1);
    assert_false(v->is_int);
    assert_true(v->int_overflow);
    jscan_reset(s);
    const char *d4 = "{\"n\":-9223372036854775808}";
    assert_int_equal(jscan_feed(s, d4, strlen(d4)), 0);
    assert_int_equal(jscan_finish(s), 0);
    assert_int_equal(v->i64, INT64_MIN);
    jscan_destroy(&s);

    /* bad option sets */
    const char *clash[] = {"model"};
    const char *twice[] = {"x", "x"};
    const char *nul[] = {NULL};
    char big[JSCAN_NAME_MAX + 2];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const char *toolong[] = {big};
    const char *many[JSCAN_EXTRA_MAX + 1] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
    jscan_opts_t b1 = {.extra = clash, .n_extra = 1}, b2 = {.extra = twice, .n_extra = 2},
                 b3 = {.extra = nul, .n_extra = 1}, b4 = {.extra = toolong, .n_extra = 1},
                 b5 = {.extra = many, .n_extra = JSCAN_EXTRA_MAX + 1},
                 b6 = {.extra = NULL, .n_extra = 1};
    const jscan_opts_t *bads[] = {&b1, &b2, &b3, &b4, &b5, &b6};
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        errno = 0;
        assert_null(jscan_new(bads[i]));
        assert_int_equal(errno, EINVAL);
    }
    jscan_opts_t ok = {.extra = many, .n_extra = JSCAN_EXTRA_MAX};
    s = jscan_new(&ok);
    assert_non_null(s);
    jscan_destroy(&s);
    jscan_destroy(&s);
    jscan_destroy(NULL);
}

/* The size limit: the body may have exactly max_bytes; an error inside them wins. */
static void test_size_limit(void **state)
{
    (void)state;
    jscan_opts_t opts = {.max_bytes = 12};
    jscan_t *s = jscan_new(&opts);
    outcome_t o = s_scan_doc(s, "{\"a\":\"1234\"}"); /* 12 bytes */
    assert_int_equal(o.rc, 0);
    o = s_scan_doc(s, "{\"a\":\"12345\"}");
    assert_int_equal(o.rc, -EMSGSIZE);
    assert_int_equal(o.kind, JSCAN_E_SIZE);
    assert_int_equal(o.off, 12);
    assert_non_null(strstr(o.msg, "12 bytes"));
    o = s_scan_doc(s, "{\"a\":\"12345\"}   ");
    assert_int_equal(o.rc, -EMSGSIZE);
    o = s_scan_doc(s, "{\"a\":01234567890}");
    assert_int_equal(o.rc, -EBADMSG);
    /* the error sticks */
    jscan_reset(s);
    assert_int_equal(jscan_feed(s, "{\"a\":\"123456789\"}", 17), -EMSGSIZE);
    assert_int_equal(jscan_feed(s, "}", 1), -EMSGSIZE);
    assert_int_equal(jscan_finish(s), -EMSGSIZE);
    assert_int_equal(jscan_feed(s, "", 0), -EMSGSIZE);
    assert_int_equal(jscan_offset(s), 12);
    jscan_destroy(&s);
}

/* Lifecycle: errors stick, finish is idempotent, feeding after finish is refused, reset. */
static void test_lifecycle(void **state)
{
    (void)state;
    jscan_t *s = jscan_new(NULL);
    assert_int_equal(jscan_feed(s, "{\"a\":", 5), 0);
    assert_int_equal(jscan_feed(s, "x", 1), -EBADMSG);
    assert_int_equal(jscan_feed(s, "1}", 2), -EBADMSG);
    assert_int_equal(jscan_error(s)->offset, 5);
    assert_int_equal(jscan_finish(s), -EBADMSG);
    assert_int_equal(jscan_finish(s), -EBADMSG);
    assert_int_equal(jscan_feed(s, "1}", 2), -EBADMSG);

    jscan_reset(s);
    assert_int_equal(jscan_error(s)->code, 0);
    assert_int_equal(jscan_feed(s, "{}", 2), 0);
    assert_false(jscan_result(s)->complete);
    assert_int_equal(jscan_finish(s), 0);
    assert_true(jscan_result(s)->complete);
    assert_int_equal(jscan_finish(s), 0);
    assert_int_equal(jscan_feed(s, " ", 1), -EALREADY);

    jscan_reset(s);
    assert_int_equal(jscan_feed(s, "{\"model\":1}", 11), 0);
    assert_int_equal(jscan_finish(s), -EINVAL);
    assert_int_equal(jscan_feed(s, " ", 1), -EINVAL);

    /* an unfinished body */
    jscan_reset(s);
    assert_int_equal(jscan_feed(s, "{\"model\":\"gpt", 13), 0);
    assert_int_equal(jscan_finish(s), -EBADMSG);
    assert_non_null(strstr(jscan_error(s)->msg, "unterminated string"));
    assert_non_null(strstr(jscan_error(s)->msg, "byte 13"));
    jscan_reset(s);
    assert_int_equal(jscan_finish(s), -EBADMSG);
    assert_non_null(strstr(jscan_error(s)->msg, "empty body"));
    jscan_destroy(&s);
}

/* ---- 20 MiB with constant memory ---------------------------------------------------------- */

/* A 20 MiB chat body streamed in odd-sized chunks: one allocation (jscan_new), none while
 * scanning, and the members around the huge messages array are found. */
static void test_big_body_constant_memory(void **state)
{
    (void)state;
    t_allocs = 0;
    t_alloc_bytes = 0;
    jscan_opts_t opts = {.max_bytes = 32u << 20};
    jscan_t *s = jscan_new(&opts);
    assert_int_equal(t_allocs, 1);
    assert_int_equal(t_alloc_bytes, sizeof(jscan_t));
    assert_true(sizeof(jscan_t) < 8192);

    static const char head[] = "{\"model\":\"gpt-4o\",\"messages\":[";
    static const char tail[] = "{\"role\":\"user\",\"content\":\"end\"}],\"stream\":true,"
                               "\"max_tokens\":50,\"stream_options\":{\"include_usage\":true}}";
    char msg[1100];
    int mlen = snprintf(msg, sizeof msg,
                        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"%s"
                        "\\\"quoted\\\" caf\xc3\xa9 \\u4e2d\\uD83D\\uDE00 \\n\"},{\"type\":"
                        "\"image_url\",\"image_url\":{\"url\":\"data:,\",\"detail\":null}}],"
                        "\"model\":\"nested\",\"n\":[1.5e3,-0,true,false]},",
                        "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod "
                        "tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim "
                        "veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea "
                        "commodo consequat. Duis aute irure dolor in reprehenderit in voluptate "
                        "velit esse cillum dolore eu fugiat nulla pariatur. Excepteur sint "
                        "occaecat cupidatat non proident, sunt in culpa qui officia deserunt "
                        "mollit anim id est laborum. Lorem ipsum dolor sit amet, consectetur "
                        "adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore "
                        "magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco");
    assert_true(mlen > 0 && (size_t)mlen < sizeof msg);

    /* Stream head, messages until 20 MiB, tail, through a 4093-byte chunk buffer. */
    const uint64_t target = 20u << 20;
    char chunk[4093];
    size_t fill = 0;
    uint64_t total = 0, msgs = 0;
    const char *src = head;
    size_t src_len = sizeof head - 1, src_at = 0;
    int phase = 0; /* 0 head, 1 messages, 2 tail, 3 done */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (phase < 3) {
        size_t take = src_len - src_at;
        if (take > sizeof chunk - fill)
            take = sizeof chunk - fill;
        memcpy(chunk + fill, src + src_at, take);
        fill += take;
        src_at += take;
        if (src_at == src_len) {
            if (phase == 0 || (phase == 1 && total + fill < target)) {
                phase = 1;
                src = msg;
                src_len = (size_t)mlen;
                msgs++;
            } else if (phase == 1) {
                phase = 2;
                src = tail;
                src_len = sizeof tail - 1;
            } else {
                phase = 3;
            }
            src_at = 0;
        }
        if (fill == sizeof chunk || phase == 3) {
            assert_int_equal(jscan_feed(s, chunk, fill), 0);
            total += fill;
            fill = 0;
        }
    }
    assert_int_equal(jscan_finish(s), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(total >= target);
    assert_int_equal(jscan_offset(s), total);
    assert_int_equal(t_allocs, 1); /* nothing allocated while scanning */
    const jscan_result_t *r = jscan_result(s);
    assert_true(r->complete);
    assert_string_equal(r->model, "gpt-4o");
    assert_true(r->stream);
    assert_int_equal(r->max_tokens, 50);
    assert_true(r->include_usage);
    assert_int_equal(r->members, 5);
    print_message("[ info ] %" PRIu64 " bytes (%" PRIu64 " messages) in %.3f s (%.0f MB/s), "
                  "scanner %zu bytes, %zu allocation\n",
                  total, msgs, secs, (double)total / 1e6 / secs, sizeof(jscan_t), t_allocs);

    /* the same body over the limit: refused at the limit, still no allocation */
    jscan_destroy(&s);
    opts.max_bytes = 1u << 20;
    s = jscan_new(&opts);
    t_allocs = 0;
    int rc = 0;
    assert_int_equal(jscan_feed(s, head, sizeof head - 1), 0);
    for (uint64_t i = 0; i < 2000 && rc == 0; i++)
        rc = jscan_feed(s, msg, (size_t)mlen);
    assert_int_equal(rc, -EMSGSIZE);
    assert_int_equal(jscan_offset(s), 1u << 20);
    assert_int_equal(t_allocs, 0);
    jscan_destroy(&s);
}

/* ---- generated documents against jansson ------------------------------------------------- */

/* xorshift64* for reproducible documents. */
static uint64_t s_rng = 0x9E3779B97F4A7C15u;

/* A pseudo-random number below n (n > 0). */
static uint32_t s_rand(uint32_t n)
{
    s_rng ^= s_rng >> 12;
    s_rng ^= s_rng << 25;
    s_rng ^= s_rng >> 27;
    return (uint32_t)((s_rng * 0x2545F4914F6CDD1Du) >> 32) % n;
}

/* A growing document buffer (bounded). */
typedef struct {
    char b[8192]; /* bytes */
    size_t n;     /* used */
} gbuf_t;

/* Appends a string to the buffer (silently bounded: the document then is merely cut). */
static void s_add(gbuf_t *g, const char *str, size_t len)
{
    if (len > sizeof g->b - g->n)
        len = sizeof g->b - g->n;
    memcpy(g->b + g->n, str, len);
    g->n += len;
}

/* Appends a NUL-terminated string. */
static void s_adds(gbuf_t *g, const char *str)
{
    s_add(g, str, strlen(str));
}

/* Appends a random JSON string with quotes: plain text, escapes, UTF-8, surrogates; \u0000
 * only in values (jansson refuses it in keys). */
static void s_gen_string(gbuf_t *g, bool key)
{
    /* clang-format off */
    static const char *const parts[] = {
        "a",       "model",   "stream",   " ",      "\\\"",      "\\\\",     "\\/",
        "\\n",     "\\u0041", "\\u00e9",  "\\uD83D\\uDE00", "\xc3\xa9", "\xe4\xb8\xad",
        "\xf0\x9f\x98\x80", "\\t", "max_tokens", "x", "\\u006d", "\x7f", "\\u0000",
    };
    /* clang-format on */
    s_adds(g, "\"");
    uint32_t n = s_rand(5);
    for (uint32_t i = 0; i < n; i++)
        s_adds(g, parts[s_rand(sizeof parts / sizeof parts[0] - (key ? 1 : 0))]);
    s_adds(g, "\"");
}

/* Appends a random JSON value, nested at most depth more levels. */
static void s_gen_value(gbuf_t *g, int depth)
{
    /* clang-format off */
    static const char *const scalars[] = {
        "0", "-0", "1", "-1", "42", "1.5", "-0.25e-3", "1E+2", "9223372036854775807",
        "-9223372036854775808", "true", "false", "null", "0.0",
    };
    /* clang-format on */
    uint32_t pick = s_rand(depth > 0 ? 10 : 6);
    if (s_rand(200) == 0) {
        s_adds(g, "12345678901234567890"); /* jansson refuses it: such documents are skipped */
    } else if (pick < 3) {
        s_adds(g, scalars[s_rand(sizeof scalars / sizeof scalars[0])]);
    } else if (pick < 6) {
        s_gen_string(g, false);
    } else if (pick < 8) {
        s_adds(g, "[");
        uint32_t n = s_rand(4);
        for (uint32_t i = 0; i < n; i++) {
            if (i)
                s_adds(g, s_rand(4) ? "," : " , ");
            s_gen_value(g, depth - 1);
        }
        s_adds(g, "]");
    } else {
        static const char *const keys[] = {
            "\"model\"",
            "\"stream\"",
            "\"max_tokens\"",
            "\"stream_options\"",
            "\"include_usage\"",
            "\"mod\\u0065l\"",
            "\"a\"",
            "\"b\"",
            "\"messages\"",
            "\"max_output_tokens\"",
        };
        s_adds(g, "{");
        uint32_t n = s_rand(5);
        for (uint32_t i = 0; i < n; i++) {
            if (i)
                s_adds(g, ",");
            if (s_rand(3))
                s_adds(g, keys[s_rand(sizeof keys / sizeof keys[0])]);
            else
                s_gen_string(g, true);
            s_adds(g, s_rand(4) ? ":" : " : ");
            s_gen_value(g, depth - 1);
        }
        s_adds(g, "}");
    }
}

/* Damages the document in a random place: replace, insert, delete or cut. */
static void s_mutate(gbuf_t *g)
{
    static const char bytes[] = "{}[],:\"\\0123456789-+.eEu tfnrx\x80\xc3\xed\xf4\xff\x01\n";
    if (g->n == 0)
        return;
    size_t at = s_rand((uint32_t)g->n);
    char c = bytes[s_rand(sizeof bytes - 1)];
    if (s_rand(10) == 0)
        c = (char)s_rand(256);
    switch (s_rand(4)) {
    case 0:
        g->b[at] = c;
        break;
    case 1:
        if (g->n < sizeof g->b) {
            memmove(g->b + at + 1, g->b + at, g->n - at);
            g->b[at] = c;
            g->n++;
        }
        break;
    case 2:
        memmove(g->b + at, g->b + at + 1, g->n - at - 1);
        g->n--;
        break;
    default:
        g->n = at;
        break;
    }
}

/* Builds a random top-level object, valid or damaged. */
static void s_gen_doc(gbuf_t *g)
{
    g->n = 0;
    if (s_rand(20) == 0)
        s_gen_value(g, 3); /* sometimes not an object at the top */
    else {
        s_adds(g, "{");
        uint32_t n = s_rand(6);
        static const char *const top[] = {
            "\"model\":\"gpt-4o\"",         "\"stream\":true",
            "\"max_tokens\":100",           "\"stream_options\":{\"include_usage\":true}",
            "\"messages\":[{\"model\":1}]",
        };
        for (uint32_t i = 0; i < n; i++) {
            if (i)
                s_adds(g, ",");
            if (s_rand(2)) {
                s_adds(g, top[s_rand(sizeof top / sizeof top[0])]);
            } else {
                s_gen_string(g, true);
                s_adds(g, ":");
                s_gen_value(g, 4);
            }
        }
        s_adds(g, "}");
    }
    if (s_rand(8) == 0)
        s_adds(g, " \n");
    uint32_t muts = s_rand(3) ? s_rand(3) : 0;
    for (uint32_t i = 0; i < muts; i++)
        s_mutate(g);
}

/* Validity agrees with jansson on generated documents; captured members agree with jansson's
 * view of the same object; a random split gives the same outcome as one feed. */
static void test_random_vs_jansson(void **state)
{
    (void)state;
    static gbuf_t g;
    jscan_t *s = jscan_new(NULL);
    size_t valid = 0, invalid = 0, skipped = 0, verdicts = 0;
    for (int iter = 0; iter < 30000; iter++) {
        s_gen_doc(&g);
        outcome_t o, x;
        s_run(s, g.b, g.n, &o);
        size_t cut = s_rand((uint32_t)g.n + 1);
        s_run_cuts(s, g.b, g.n, &cut, 1, &x);
        s_same("random", "split", &o, &x);
        s_run(s, g.b, g.n, &o);

        int j = s_jansson(g.b, g.n);
        if (j < 0 || o.rc == -ELOOP) {
            skipped++;
            continue;
        }
        bool ours = o.rc == 0 || o.rc == -EEXIST || o.rc == -EINVAL;
        if (ours != (j == 1))
            fail_msg("validity differs (ours %d '%s', jansson %d) on: %.*s", o.rc, o.msg, j,
                     (int)g.n, g.b);
        if (!ours) {
            invalid++;
            continue;
        }
        valid++;
        if (o.rc)
            verdicts++;
        if (o.rc != 0)
            continue; /* a verdict (the first one wins) may hide a later duplicate */
        /* no duplicate: jansson's object holds the only occurrence of each captured key */
        json_t *root = json_loadb(g.b, g.n, JSON_ALLOW_NUL, NULL);
        assert_non_null(root);
        const jscan_result_t *r = jscan_result(s);
        json_t *m = json_object_get(root, "model");
        if (m && json_is_string(m)) {
            assert_true(r->has_model);
            assert_int_equal(r->model_len, json_string_length(m));
            assert_memory_equal(r->model, json_string_value(m), r->model_len);
        } else {
            assert_false(r->has_model);
        }
        json_t *st = json_object_get(root, "stream");
        assert_int_equal(r->has_stream, st && json_is_boolean(st));
        if (r->has_stream)
            assert_int_equal(r->stream, json_is_true(st));
        json_t *mt = json_object_get(root, "max_tokens");
        if (mt && json_is_integer(mt) && json_integer_value(mt) >= 0) {
            if (!r->has_max_tokens)
                fail_msg("max_tokens missed (%d) in: %.*s", o.rc, (int)g.n, g.b);
            assert_int_equal(r->max_tokens, json_integer_value(mt));
        } else {
            assert_true(!mt || json_is_null(mt)); /* anything else is a verdict */
        }
        json_t *so = json_object_get(root, "stream_options");
        assert_int_equal(r->stream_options_present, so && !json_is_null(so));
        json_t *iu = so ? json_object_get(so, "include_usage") : NULL;
        assert_int_equal(r->has_include_usage, iu && json_is_boolean(iu));
        assert_true(r->members >= json_object_size(root)); /* uncaptured keys may repeat */
        json_decref(root);
    }
    print_message("[ info ] random: %zu valid (%zu with a verdict), %zu invalid, %zu skipped\n",
                  valid, verdicts, invalid, skipped);
    assert_true(valid > 3000 && invalid > 3000);
    jscan_destroy(&s);
}

/* Runs every test. */
int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_suite_cases),
        cmocka_unit_test(test_error_offsets),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_capture_basic),
        cmocka_unit_test(test_nested_ignored),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_model_string),
        cmocka_unit_test(test_keys_and_extras),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_big_body_constant_memory),
        cmocka_unit_test(test_random_vs_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
