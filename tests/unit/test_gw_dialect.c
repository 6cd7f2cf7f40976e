/* Unit tests for gw_dialect: the gateway's request formats (endpoints, query, keys, forwarded
 * headers, error shapes before and in the middle of a stream). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "eventstream.h"
#include "gw_dialect.h"

/* ---- endpoints ------------------------------------------------------------------------ */

typedef struct {
    const char *in;     /* the path as lws hands it (decoded) */
    int rc;             /* gw_endpoint_parse's answer */
    gw_format_t format; /* the format (or the 404's shape) */
    gw_op_t op;         /* the operation */
    bool get;           /* GET endpoint */
    const char *model;  /* the path model, or NULL when in the body */
    const char *path;   /* the req.open path */
} s_path_case_t;

static const s_path_case_t s_paths[] = {
    /* openai, unchanged */
    {"/v1/chat/completions", 0, GW_FORMAT_OPENAI, GW_OP_CHAT, false, NULL, "/v1/chat/completions"},
    {"/v1/completions", 0, GW_FORMAT_OPENAI, GW_OP_COMPLETIONS, false, NULL, "/v1/completions"},
    {"/v1/embeddings", 0, GW_FORMAT_OPENAI, GW_OP_EMBEDDINGS, false, NULL, "/v1/embeddings"},
    {"/v1/responses", 0, GW_FORMAT_OPENAI, GW_OP_RESPONSES, false, NULL, "/v1/responses"},
    {"/v1/models", 0, GW_FORMAT_OPENAI, GW_OP_MODELS, true, NULL, "/v1/models"},
    /* anthropic */
    {"/v1/messages", 0, GW_FORMAT_ANTHROPIC, GW_OP_MESSAGES, false, NULL, "/v1/messages"},
    {"/v1/messages/count_tokens", 0, GW_FORMAT_ANTHROPIC, GW_OP_COUNT_TOKENS, false, NULL,
     "/v1/messages/count_tokens"},
    /* gemini: the model in the path */
    {"/v1beta/models/gemini-2.0-flash:generateContent", 0, GW_FORMAT_GEMINI, GW_OP_GENERATE, false,
     "gemini-2.0-flash", "/v1beta/models/gemini-2.0-flash:generateContent"},
    /* Google's stable version (what @google/genai sends): on to the agent as v1beta. */
    {"/v1/models/gemini-2.0-flash:generateContent", 0, GW_FORMAT_GEMINI, GW_OP_GENERATE, false,
     "gemini-2.0-flash", "/v1beta/models/gemini-2.0-flash:generateContent"},
    {"/v1/models/gpt-4o", -ENOENT, GW_FORMAT_OPENAI, GW_OP_NONE, false, NULL, "/v1/models/gpt-4o"},
    {"/v1beta/models/gemini-1.5-pro-002:streamGenerateContent", 0, GW_FORMAT_GEMINI,
     GW_OP_STREAM_GENERATE, false, "gemini-1.5-pro-002",
     "/v1beta/models/gemini-1.5-pro-002:streamGenerateContent"},
    /* bedrock: %3A arrives decoded; req.open gets it encoded as AWS SDKs send it */
    {"/model/anthropic.claude-3-5-haiku-20241022-v1:0/invoke", 0, GW_FORMAT_BEDROCK, GW_OP_INVOKE,
     false, "anthropic.claude-3-5-haiku-20241022-v1:0",
     "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke"},
    {"/model/anthropic.claude-3-5-haiku-20241022-v1:0/invoke-with-response-stream", 0,
     GW_FORMAT_BEDROCK, GW_OP_INVOKE_STREAM, false, "anthropic.claude-3-5-haiku-20241022-v1:0",
     "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke-with-response-stream"},
    {"/model/amazon.nova-lite-v1:0/converse", 0, GW_FORMAT_BEDROCK, GW_OP_CONVERSE, false,
     "amazon.nova-lite-v1:0", "/model/amazon.nova-lite-v1%3A0/converse"},
    {"/model/us.meta.llama3-2-1b-instruct-v1:0/converse-stream", 0, GW_FORMAT_BEDROCK,
     GW_OP_CONVERSE_STREAM, false, "us.meta.llama3-2-1b-instruct-v1:0",
     "/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse-stream"},
    /* an ARN: '/' (sent as %2F) is allowed there, and encoded again */
    {"/model/arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
     "us.anthropic.claude-3-5-sonnet-20241022-v2:0/converse",
     0, GW_FORMAT_BEDROCK, GW_OP_CONVERSE, false,
     "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
     "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
     "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2F"
     "us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse"},
    /* unknown paths: 404 in the shape the prefix suggests */
    {"/v1/messages/batches", -ENOENT, GW_FORMAT_ANTHROPIC, GW_OP_NONE, false, NULL, NULL},
    {"/v1/messages/count_tokens/x", -ENOENT, GW_FORMAT_ANTHROPIC, GW_OP_NONE, false, NULL, NULL},
    {"/v1beta/models/gemini-2.0-flash:countTokens", -ENOENT, GW_FORMAT_GEMINI, GW_OP_NONE, false,
     NULL, NULL},
    {"/v1beta/models/gemini-2.0-flash", -ENOENT, GW_FORMAT_GEMINI, GW_OP_NONE, false, NULL, NULL},
    {"/v1beta/models/a/b:generateContent", -ENOENT, GW_FORMAT_GEMINI, GW_OP_NONE, false, NULL,
     NULL},
    {"/v1beta", -ENOENT, GW_FORMAT_GEMINI, GW_OP_NONE, false, NULL, NULL},
    {"/model/amazon.nova-lite-v1:0/generate", -ENOENT, GW_FORMAT_BEDROCK, GW_OP_NONE, false, NULL,
     NULL},
    {"/model/converse", -ENOENT, GW_FORMAT_BEDROCK, GW_OP_NONE, false, NULL, NULL},
    {"/v1/chat/completions/", -ENOENT, GW_FORMAT_OPENAI, GW_OP_NONE, false, NULL, NULL},
    {"/v1/nothing", -ENOENT, GW_FORMAT_OPENAI, GW_OP_NONE, false, NULL, NULL},
    {"/modelx/a/converse", -ENOENT, GW_FORMAT_OPENAI, GW_OP_NONE, false, NULL, NULL},
    {"/", -ENOENT, GW_FORMAT_OPENAI, GW_OP_NONE, false, NULL, NULL},
    /* known endpoints whose path model is refused */
    {"/model/a/b/converse", -EINVAL, GW_FORMAT_BEDROCK, GW_OP_CONVERSE, false, NULL, NULL},
    {"/model/bad\x01id/converse", -EINVAL, GW_FORMAT_BEDROCK, GW_OP_CONVERSE, false, NULL, NULL},
    {"/model/bad id/invoke", -EINVAL, GW_FORMAT_BEDROCK, GW_OP_INVOKE, false, NULL, NULL},
    {"/model/caf\xc3\xa9/invoke", -EINVAL, GW_FORMAT_BEDROCK, GW_OP_INVOKE, false, NULL, NULL},
    {"/v1beta/models/:generateContent", -EINVAL, GW_FORMAT_GEMINI, GW_OP_GENERATE, false, NULL,
     NULL},
    {"/v1beta/models/ge\x7fmini:generateContent", -EINVAL, GW_FORMAT_GEMINI, GW_OP_GENERATE, false,
     NULL, NULL},
};

static void test_path_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof s_paths / sizeof s_paths[0]; i++) {
        const s_path_case_t *c = &s_paths[i];
        gw_endpoint_t ep;
        int rc = gw_endpoint_parse(c->in, &ep);
        if (rc != c->rc || ep.format != c->format || ep.op != c->op)
            fail_msg("%s: rc %d format %d op %d", c->in, rc, ep.format, ep.op);
        assert_int_equal(ep.get, c->get);
        assert_int_equal(ep.model_in_path, c->model != NULL);
        if (c->model) {
            assert_string_equal(ep.model, c->model);
            assert_int_equal(ep.model_len, strlen(c->model));
        } else {
            assert_int_equal(ep.model_len, 0);
        }
        /* a path that is no endpoint keeps the path as received, for log lines */
        assert_string_equal(ep.path, c->path ? c->path : c->in);
        /* the prefix guess agrees with the table, endpoint or not */
        assert_int_equal(gw_dialect_guess(c->in), c->format);
    }
}

static void test_path_model_length(void **state)
{
    (void)state;
    char path[600], model[300];
    memset(model, 'm', 256);
    model[256] = '\0';
    gw_endpoint_t ep;
    snprintf(path, sizeof path, "/model/%s/converse", model);
    assert_int_equal(gw_endpoint_parse(path, &ep), 0);
    assert_int_equal(ep.model_len, 256);
    snprintf(path, sizeof path, "/v1beta/models/%s:generateContent", model);
    assert_int_equal(gw_endpoint_parse(path, &ep), 0);
    model[256] = 'm';
    model[257] = '\0';
    snprintf(path, sizeof path, "/model/%s/converse", model);
    assert_int_equal(gw_endpoint_parse(path, &ep), -EINVAL);
    snprintf(path, sizeof path, "/v1beta/models/%s:generateContent", model);
    assert_int_equal(gw_endpoint_parse(path, &ep), -EINVAL);
    /* the longest ARN, every byte encoded, still fits the req.open path */
    char arn[300] = "arn:";
    memset(arn + 4, ':', 252);
    arn[256] = '\0';
    snprintf(path, sizeof path, "/model/%s/invoke-with-response-stream", arn);
    assert_int_equal(gw_endpoint_parse(path, &ep), 0);
    assert_int_equal(strlen(ep.path), 7 + 6 + 3 * 252 + 28); /* "/model/" "arn%3A" … */
}

static void test_billing_and_usage_by_endpoint(void **state)
{
    (void)state;
    struct {
        const char *path;
        bool billed, stream_op;
        int usage; /* -1: none */
        bool content_sse, alt_sse, streaming;
    } cases[] = {
        {"/v1/chat/completions", true, false, USAGE_OPENAI_CHAT, true, false, true},
        {"/v1/chat/completions", true, false, USAGE_OPENAI_CHAT, false, false, false},
        {"/v1/completions", true, false, USAGE_OPENAI_COMPLETIONS, true, false, true},
        {"/v1/embeddings", true, false, USAGE_OPENAI_EMBEDDINGS, false, false, false},
        {"/v1/responses", true, false, USAGE_OPENAI_RESPONSES, true, false, true},
        {"/v1/models", false, false, -1, false, false, false},
        {"/v1/messages", true, false, USAGE_ANTHROPIC_MESSAGES, true, false, true},
        {"/v1/messages", true, false, USAGE_ANTHROPIC_MESSAGES, false, false, false},
        {"/v1/messages/count_tokens", false, false, -1, false, false, false},
        {"/v1beta/models/g:generateContent", true, false, USAGE_GEMINI, false, true, false},
        {"/v1beta/models/g:streamGenerateContent", true, false, USAGE_GEMINI, true, true, true},
        /* without alt=sse a JSON array, read as a body, whatever the content-type says */
        {"/v1beta/models/g:streamGenerateContent", true, false, USAGE_GEMINI, true, false, false},
        {"/model/m/invoke", true, false, USAGE_BEDROCK_INVOKE, false, false, false},
        {"/model/m/invoke-with-response-stream", true, true, USAGE_BEDROCK_INVOKE, false, false,
         true},
        {"/model/m/converse", true, false, USAGE_BEDROCK_CONVERSE, false, false, false},
        {"/model/m/converse-stream", true, true, USAGE_BEDROCK_CONVERSE, false, false, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gw_endpoint_t ep;
        assert_int_equal(gw_endpoint_parse(cases[i].path, &ep), 0);
        assert_int_equal(gw_endpoint_billed(&ep), cases[i].billed);
        assert_int_equal(gw_endpoint_stream_op(&ep), cases[i].stream_op);
        usage_format_t fmt = USAGE_OPENAI_CHAT;
        bool streaming = false;
        int rc = gw_endpoint_usage(&ep, cases[i].content_sse, cases[i].alt_sse, &fmt, &streaming);
        if (cases[i].usage < 0) {
            assert_int_equal(rc, -1);
            continue;
        }
        assert_int_equal(rc, 0);
        assert_int_equal(fmt, cases[i].usage);
        if (streaming != cases[i].streaming)
            fail_msg("%s: streaming %d", cases[i].path, streaming);
    }
}

/* ---- query ------------------------------------------------------------------------------ */

static void test_gemini_query_keeps_only_alt_sse_and_takes_the_key(void **state)
{
    (void)state;
    gw_endpoint_t ep;
    gw_query_t q;
    assert_int_equal(gw_endpoint_parse("/v1beta/models/g:streamGenerateContent", &ep), 0);
    const char *p1[] = {"alt=sse", "key=sk-abc_DEF-1", "$fields=x"};
    assert_int_equal(gw_query_parse(&ep, p1, 3, &q), 0);
    assert_string_equal(q.forward, "alt=sse");
    assert_true(q.alt_sse && q.has_key);
    assert_string_equal(q.key, "sk-abc_DEF-1");
    /* the key first: the same */
    const char *p2[] = {"key=sk-abc", "alt=sse"};
    assert_int_equal(gw_query_parse(&ep, p2, 2, &q), 0);
    assert_string_equal(q.forward, "alt=sse");
    assert_string_equal(q.key, "sk-abc");
    /* no alt=sse: nothing goes on; the first non-empty key counts */
    const char *p3[] = {"key=", "key=sk-1", "key=sk-2", "alt=json"};
    assert_int_equal(gw_query_parse(&ep, p3, 4, &q), 0);
    assert_string_equal(q.forward, "");
    assert_false(q.alt_sse);
    assert_string_equal(q.key, "sk-1");
    /* generateContent never passes alt=sse on */
    assert_int_equal(gw_endpoint_parse("/v1beta/models/g:generateContent", &ep), 0);
    assert_int_equal(gw_query_parse(&ep, p1, 3, &q), 0);
    assert_string_equal(q.forward, "");
    /* no query at all */
    assert_int_equal(gw_query_parse(&ep, NULL, 0, &q), 0);
    assert_false(q.has_key || q.alt_sse);
    /* a key over GW_KEY_MAX is refused */
    char big[GW_KEY_MAX + 10];
    memset(big, 'k', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, "key=", 4);
    const char *p4[] = {big};
    assert_int_equal(gw_query_parse(&ep, p4, 1, &q), -ENOSPC);
}

static void test_other_queries_are_reencoded_without_key(void **state)
{
    (void)state;
    gw_endpoint_t ep;
    gw_query_t q;
    assert_int_equal(gw_endpoint_parse("/v1/messages", &ep), 0);
    const char *p[] = {"beta=true", "key=sk-secret", "a b=c&d", "flag", "=x"};
    assert_int_equal(gw_query_parse(&ep, p, 5, &q), 0);
    assert_string_equal(q.forward, "beta=true&a%20b=c%26d&flag");
    assert_null(strstr(q.forward, "secret"));
    assert_true(q.has_key); /* read, but only gemini uses it */
    /* too long to pass on */
    char big[GW_QUERY_MAX + 1];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const char *p2[] = {big};
    assert_int_equal(gw_query_parse(&ep, p2, 1, &q), -ENOSPC);
}

/* ---- keys and headers --------------------------------------------------------------------- */

static void s_expect_key(gw_format_t f, const gw_creds_t *c, const char *want)
{
    const char *key = NULL;
    size_t len = 0;
    int rc = gw_dialect_key(f, c, &key, &len);
    if (!want) {
        assert_int_equal(rc, -ENOENT);
        return;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(key, want, len);
}

static void test_key_extraction_per_format(void **state)
{
    (void)state;
    gw_creds_t none = {0};
    gw_creds_t bearer = {.authorization = "Bearer sk-b"};
    gw_creds_t xkey = {.x_api_key = "sk-x"};
    gw_creds_t both = {.authorization = "Bearer sk-b", .x_api_key = " sk-x "};
    gw_creds_t goog = {.x_goog_api_key = "sk-g", .query_key = "sk-q"};
    gw_creds_t query = {.query_key = "sk-q"};
    gw_creds_t basic = {.authorization = "Basic abc"};
    gw_creds_t lower = {.authorization = "bearer  sk-l  "};
    gw_creds_t empty = {.authorization = "Bearer ", .x_api_key = "  "};
    /* openai: Bearer only */
    s_expect_key(GW_FORMAT_OPENAI, &bearer, "sk-b");
    s_expect_key(GW_FORMAT_OPENAI, &xkey, NULL);
    s_expect_key(GW_FORMAT_OPENAI, &query, NULL);
    s_expect_key(GW_FORMAT_OPENAI, &basic, NULL);
    s_expect_key(GW_FORMAT_OPENAI, &lower, "sk-l");
    s_expect_key(GW_FORMAT_OPENAI, &none, NULL);
    /* anthropic: x-api-key, else Bearer */
    s_expect_key(GW_FORMAT_ANTHROPIC, &xkey, "sk-x");
    s_expect_key(GW_FORMAT_ANTHROPIC, &bearer, "sk-b");
    s_expect_key(GW_FORMAT_ANTHROPIC, &both, "sk-x");
    s_expect_key(GW_FORMAT_ANTHROPIC, &empty, NULL);
    s_expect_key(GW_FORMAT_ANTHROPIC, &query, NULL);
    /* gemini: x-goog-api-key, else key= */
    s_expect_key(GW_FORMAT_GEMINI, &goog, "sk-g");
    s_expect_key(GW_FORMAT_GEMINI, &query, "sk-q");
    s_expect_key(GW_FORMAT_GEMINI, &bearer, NULL);
    s_expect_key(GW_FORMAT_GEMINI, &none, NULL);
    /* bedrock: Bearer */
    s_expect_key(GW_FORMAT_BEDROCK, &bearer, "sk-b");
    s_expect_key(GW_FORMAT_BEDROCK, &xkey, NULL);
    s_expect_key(GW_FORMAT_BEDROCK, &query, NULL);
}

static void test_forwarded_headers(void **state)
{
    (void)state;
    const char *const *a = gw_dialect_forward_headers(GW_FORMAT_ANTHROPIC);
    assert_string_equal(a[0], "anthropic-version");
    assert_string_equal(a[1], "anthropic-beta");
    assert_null(a[2]);
    for (int f = 0; f < GW_FORMAT_COUNT; f++) {
        if (f != GW_FORMAT_ANTHROPIC)
            assert_null(gw_dialect_forward_headers((gw_format_t)f)[0]);
    }
    assert_true(gw_dialect_header_value_ok("2023-06-01", 10));
    assert_true(gw_dialect_header_value_ok("a,b\tc", 5));
    assert_false(gw_dialect_header_value_ok("", 0));
    assert_false(gw_dialect_header_value_ok("a\r\nb", 4));
    assert_false(gw_dialect_header_value_ok("caf\xc3\xa9", 5));
    char big[GW_FWD_VALUE_MAX + 1];
    memset(big, 'a', sizeof big);
    assert_true(gw_dialect_header_value_ok(big, GW_FWD_VALUE_MAX));
    assert_false(gw_dialect_header_value_ok(big, GW_FWD_VALUE_MAX + 1));
}

/* ---- errors ----------------------------------------------------------------------------- */

#define S_RID "0123456789abcdef0123456789abcdef"

/* Builds an error and parses its body; checks the framing every body shares. */
static json_t *s_error(gw_format_t f, int status, const char *code, const char *msg, gw_error_t *e)
{
    assert_int_equal(gw_dialect_error(f, status,
                                      status >= 500 ? "server_error" : "invalid_request_error",
                                      code, msg, S_RID, e),
                     0);
    assert_true(e->body_len > 2 && e->body[e->body_len - 1] == '\n');
    assert_int_equal(strlen(e->body), e->body_len);
    assert_int_equal(strlen(e->headers), e->headers_len);
    assert_true(strncmp(e->headers, "content-type: application/json", 30) == 0);
    json_error_t je;
    json_t *o = json_loadb(e->body, e->body_len, 0, &je);
    assert_non_null(o);
    return o;
}

static const char *s_str(json_t *o, const char *path1, const char *path2)
{
    json_t *v = json_object_get(o, path1);
    if (path2)
        v = json_object_get(v, path2);
    return json_string_value(v);
}

static void test_openai_errors_unchanged(void **state)
{
    (void)state;
    gw_error_t e;
    json_t *o = s_error(GW_FORMAT_OPENAI, 404, "model_not_found", "nope", &e);
    assert_int_equal(e.status, 404);
    json_t *err = json_object_get(o, "error");
    assert_int_equal(json_object_size(err), 4);
    assert_string_equal(s_str(err, "message", NULL), "nope");
    assert_string_equal(s_str(err, "type", NULL), "invalid_request_error");
    assert_string_equal(s_str(err, "code", NULL), "model_not_found");
    assert_true(json_is_null(json_object_get(err, "param")));
    assert_string_equal(e.headers, "content-type: application/json\r\n");
    json_decref(o);
    gw_error_free(&e);
    /* a missing key says invalid_api_key, as OpenAI does */
    o = s_error(GW_FORMAT_OPENAI, 401, "missing_api_key", "no key", &e);
    assert_string_equal(s_str(o, "error", "code"), "invalid_api_key");
    json_decref(o);
    gw_error_free(&e);
    assert_null(e.body);
    gw_error_free(&e); /* twice is fine */
}

static void test_anthropic_errors(void **state)
{
    (void)state;
    struct {
        int status;
        const char *type;
    } t[] = {{400, "invalid_request_error"},
             {401, "authentication_error"},
             {402, "billing_error"},
             {403, "permission_error"},
             {404, "not_found_error"},
             {405, "invalid_request_error"},
             {411, "invalid_request_error"},
             {413, "request_too_large"},
             {414, "invalid_request_error"},
             {429, "rate_limit_error"},
             {500, "api_error"},
             {502, "api_error"},
             {503, "overloaded_error"},
             {504, "timeout_error"},
             {507, "api_error"}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        gw_error_t e;
        json_t *o = s_error(GW_FORMAT_ANTHROPIC, t[i].status, "x", "why \"quoted\"", &e);
        assert_int_equal(e.status, t[i].status);
        assert_string_equal(s_str(o, "type", NULL), "error");
        if (strcmp(s_str(o, "error", "type"), t[i].type) != 0)
            fail_msg("%d: %s", t[i].status, s_str(o, "error", "type"));
        assert_string_equal(s_str(o, "error", "message"), "why \"quoted\"");
        assert_int_equal(json_object_size(json_object_get(o, "error")), 2);
        assert_string_equal(s_str(o, "request_id", NULL), S_RID);
        assert_string_equal(e.headers,
                            "content-type: application/json\r\nrequest-id: " S_RID "\r\n");
        json_decref(o);
        gw_error_free(&e);
    }
}

static void test_gemini_errors(void **state)
{
    (void)state;
    struct {
        int status;
        const char *st;
    } t[] = {{400, "INVALID_ARGUMENT"},  {401, "UNAUTHENTICATED"},    {402, "FAILED_PRECONDITION"},
             {403, "PERMISSION_DENIED"}, {404, "NOT_FOUND"},          {405, "INVALID_ARGUMENT"},
             {413, "INVALID_ARGUMENT"},  {429, "RESOURCE_EXHAUSTED"}, {500, "INTERNAL"},
             {502, "UNAVAILABLE"},       {503, "UNAVAILABLE"},        {504, "DEADLINE_EXCEEDED"}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        gw_error_t e;
        json_t *o = s_error(GW_FORMAT_GEMINI, t[i].status, "x", "m", &e);
        assert_int_equal(e.status, t[i].status);
        json_t *err = json_object_get(o, "error");
        assert_int_equal(json_integer_value(json_object_get(err, "code")), t[i].status);
        assert_string_equal(s_str(err, "status", NULL), t[i].st);
        assert_string_equal(s_str(err, "message", NULL), "m");
        json_decref(o);
        gw_error_free(&e);
    }
    /* no key: 403 PERMISSION_DENIED, as Google answers */
    gw_error_t e;
    json_t *o = s_error(GW_FORMAT_GEMINI, 401, "missing_api_key", "ignored", &e);
    assert_int_equal(e.status, 403);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "error"), "code")), 403);
    assert_string_equal(s_str(o, "error", "status"), "PERMISSION_DENIED");
    assert_non_null(strstr(s_str(o, "error", "message"), "unregistered callers"));
    json_decref(o);
    gw_error_free(&e);
    /* a wrong key: 400 INVALID_ARGUMENT, ErrorInfo API_KEY_INVALID */
    o = s_error(GW_FORMAT_GEMINI, 401, "invalid_api_key", "Incorrect API key provided.", &e);
    assert_int_equal(e.status, 400);
    json_t *err = json_object_get(o, "error");
    assert_int_equal(json_integer_value(json_object_get(err, "code")), 400);
    assert_string_equal(s_str(err, "status", NULL), "INVALID_ARGUMENT");
    assert_string_equal(s_str(err, "message", NULL),
                        "API key not valid. Please pass a valid API key.");
    json_t *d = json_array_get(json_object_get(err, "details"), 0);
    assert_string_equal(s_str(d, "@type", NULL), "type.googleapis.com/google.rpc.ErrorInfo");
    assert_string_equal(s_str(d, "reason", NULL), "API_KEY_INVALID");
    assert_string_equal(s_str(d, "domain", NULL), "googleapis.com");
    json_decref(o);
    gw_error_free(&e);
}

static void test_bedrock_errors(void **state)
{
    (void)state;
    struct {
        int status;
        const char *type;
    } t[] = {{400, "ValidationException"},         {401, "UnrecognizedClientException"},
             {402, "AccessDeniedException"},       {403, "AccessDeniedException"},
             {404, "ResourceNotFoundException"},   {405, "ValidationException"},
             {411, "ValidationException"},         {413, "ValidationException"},
             {429, "ThrottlingException"},         {500, "InternalServerException"},
             {502, "ServiceUnavailableException"}, {503, "ServiceUnavailableException"},
             {504, "ModelTimeoutException"}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        gw_error_t e;
        json_t *o = s_error(GW_FORMAT_BEDROCK, t[i].status, "x", "m", &e);
        assert_int_equal(e.status, t[i].status);
        assert_int_equal(json_object_size(o), 1);
        assert_string_equal(s_str(o, "message", NULL), "m");
        char want[256];
        snprintf(want, sizeof want,
                 "content-type: application/json\r\nx-amzn-ErrorType: %s\r\n"
                 "x-amzn-RequestId: " S_RID "\r\n",
                 t[i].type);
        assert_string_equal(e.headers, want);
        json_decref(o);
        gw_error_free(&e);
    }
}

/* ---- mid-stream errors ---------------------------------------------------------------- */

static char *s_stream_error(const char *path, int status, bool sse, const char *why, size_t *len)
{
    gw_endpoint_t ep;
    assert_int_equal(gw_endpoint_parse(path, &ep), 0);
    return (char *)gw_dialect_stream_error(&ep, status, sse, why, why ? strlen(why) : 0, len);
}

static void test_stream_errors_sse(void **state)
{
    (void)state;
    size_t n;
    char *b = s_stream_error("/v1/chat/completions", 200, true, "agent gone", &n);
    assert_string_equal(b, "data: {\"error\":{\"message\":\"stream interrupted: agent gone\","
                           "\"type\":\"server_error\",\"param\":null,\"code\":"
                           "\"stream_interrupted\"}}\n\n");
    assert_int_equal(n, strlen(b));
    free(b);
    b = s_stream_error("/v1/messages", 200, true, "agent gone", &n);
    assert_string_equal(b, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":"
                           "\"api_error\",\"message\":\"stream interrupted: agent gone\"}}\n\n");
    free(b);
    b = s_stream_error("/v1beta/models/g:streamGenerateContent", 200, true, "agent gone", &n);
    assert_string_equal(b, "data: {\"error\":{\"code\":500,\"message\":\"stream interrupted: "
                           "agent gone\",\"status\":\"INTERNAL\"}}\r\n\r\n");
    free(b);
    /* a quote in the reason stays JSON */
    b = s_stream_error("/v1/messages", 200, true, "say \"hi\"\n", &n);
    assert_non_null(strstr(b, "say \\\"hi\\\"\\n"));
    free(b);
    /* a long reason is cut to 200 bytes, never inside a UTF-8 character */
    char why[400] = "";
    for (int i = 0; i < 150; i++)
        strcat(why, "\xc3\xa9"); /* é, 2 bytes: byte 200 starts a character, 201 does not */
    b = s_stream_error("/v1/chat/completions", 200, true, why + 1, &n);
    assert_non_null(b); /* starting mid-character: jansson would refuse invalid UTF-8 */
    free(b);
    b = s_stream_error("/v1/chat/completions", 200, true, why, &n);
    json_error_t je;
    json_t *o = json_loadb(b + 6, n - 8, 0, &je);
    assert_non_null(o);
    const char *m = json_string_value(json_object_get(json_object_get(o, "error"), "message"));
    assert_int_equal(strlen(m), strlen("stream interrupted: ") + 200);
    json_decref(o);
    free(b);
}

static void test_stream_errors_end_short(void **state)
{
    (void)state;
    size_t n = 99;
    /* not SSE: a JSON body, a Gemini JSON-array stream */
    assert_null(s_stream_error("/v1/chat/completions", 200, false, "x", &n));
    assert_int_equal(n, 0);
    assert_null(s_stream_error("/v1/messages", 200, false, "x", &n));
    assert_null(s_stream_error("/v1beta/models/g:streamGenerateContent", 200, false, "x", &n));
    assert_null(s_stream_error("/v1beta/models/g:generateContent", 200, false, "x", &n));
    /* bedrock: only the stream operations, only after a 2xx head */
    assert_null(s_stream_error("/model/m/converse", 200, false, "x", &n));
    assert_null(s_stream_error("/model/m/invoke", 200, true, "x", &n));
    assert_null(s_stream_error("/model/m/converse-stream", 400, false, "x", &n));
    /* after an error status the vendor's error body stands as it is */
    assert_null(s_stream_error("/v1/chat/completions", 500, true, "x", &n));
    assert_null(s_stream_error("/v1/messages", 429, true, "x", &n));
    assert_null(s_stream_error("/v1beta/models/g:streamGenerateContent", 503, true, "x", &n));
}

typedef struct {
    int count;
    char mtype[32], etype[64], ctype[64];
    char payload[512];
} s_frames_t;

static void s_copy_header(const es_message_t *m, const char *name, char *out, size_t cap)
{
    size_t len = 0;
    const char *v = es_header_get(m, name, &len);
    assert_non_null(v);
    assert_true(len < cap);
    memcpy(out, v, len);
    out[len] = '\0';
}

static void s_on_frame(void *arg, const es_message_t *m)
{
    s_frames_t *f = arg;
    f->count++;
    assert_int_equal(m->n_headers, 3);
    s_copy_header(m, ":message-type", f->mtype, sizeof f->mtype);
    s_copy_header(m, ":exception-type", f->etype, sizeof f->etype);
    s_copy_header(m, ":content-type", f->ctype, sizeof f->ctype);
    assert_true(m->payload_len < sizeof f->payload);
    memcpy(f->payload, m->payload, m->payload_len);
    f->payload[m->payload_len] = '\0';
}

static void test_stream_error_bedrock_frame(void **state)
{
    (void)state;
    const char *paths[] = {"/model/anthropic.claude-3-5-haiku-20241022-v1:0/converse-stream",
                           "/model/m/invoke-with-response-stream"};
    for (int i = 0; i < 2; i++) {
        size_t n = 0;
        uint8_t *b = (uint8_t *)s_stream_error(paths[i], 200, false, "agent \"gone\"", &n);
        assert_non_null(b);
        /* total length in the prelude is the frame's length */
        assert_true(n >= ES_MIN_MESSAGE);
        uint32_t total = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
        assert_int_equal(total, n);
        /* decoded (CRCs checked) in one piece and byte by byte */
        for (int split = 0; split < 2; split++) {
            s_frames_t f;
            memset(&f, 0, sizeof f);
            es_decoder_t d;
            es_decoder_init(&d, s_on_frame, &f);
            if (split) {
                for (size_t k = 0; k < n; k++)
                    assert_int_equal(es_decoder_feed(&d, b + k, 1), 0);
            } else {
                assert_int_equal(es_decoder_feed(&d, b, n), 0);
            }
            assert_true(es_decoder_idle(&d));
            es_decoder_free(&d);
            assert_int_equal(f.count, 1);
            assert_string_equal(f.mtype, "exception");
            assert_string_equal(f.etype, "internalServerException");
            assert_string_equal(f.ctype, "application/json");
            assert_string_equal(f.payload,
                                "{\"message\":\"stream interrupted: agent \\\"gone\\\"\"}");
        }
        /* a flipped payload byte breaks the message CRC; a flipped length the prelude CRC */
        for (size_t at = 0; at < n; at += n - 6) {
            s_frames_t f;
            memset(&f, 0, sizeof f);
            b[at] ^= 0x01;
            es_decoder_t d;
            es_decoder_init(&d, s_on_frame, &f);
            es_decoder_feed(&d, b, n);
            assert_int_equal(f.count, 0);
            assert_int_not_equal(d.error, 0);
            es_decoder_free(&d);
            b[at] ^= 0x01;
        }
        free(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_table),
        cmocka_unit_test(test_path_model_length),
        cmocka_unit_test(test_billing_and_usage_by_endpoint),
        cmocka_unit_test(test_gemini_query_keeps_only_alt_sse_and_takes_the_key),
        cmocka_unit_test(test_other_queries_are_reencoded_without_key),
        cmocka_unit_test(test_key_extraction_per_format),
        cmocka_unit_test(test_forwarded_headers),
        cmocka_unit_test(test_openai_errors_unchanged),
        cmocka_unit_test(test_anthropic_errors),
        cmocka_unit_test(test_gemini_errors),
        cmocka_unit_test(test_bedrock_errors),
        cmocka_unit_test(test_stream_errors_sse),
        cmocka_unit_test(test_stream_errors_end_short),
        cmocka_unit_test(test_stream_error_bedrock_frame),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
