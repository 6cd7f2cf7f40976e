/* test_fv_parts: the fake vendor's request parser, body scanner and wire formats. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fv_http.h"
#include "fv_scan.h"
#include "fv_wire.h"

typedef struct {
    char data[4096]; /* body bytes received (first 4 KiB) */
    size_t len;      /* total body bytes */
} s_sink_t;

/* Collects body bytes. */
static void s_sink(void *arg, const uint8_t *d, size_t n)
{
    s_sink_t *s = arg;
    for (size_t i = 0; i < n; i++, s->len++)
        if (s->len < sizeof s->data - 1)
            s->data[s->len] = (char)d[i];
}

/* Feeds text to a fresh parser in pieces of step bytes; returns bytes consumed. */
static size_t s_feed(fv_req_t *r, const char *text, size_t step, s_sink_t *sink)
{
    size_t len = strlen(text), off = 0;
    while (off < len && r->state != FV_REQ_DONE && r->state != FV_REQ_BAD) {
        size_t n = len - off < step ? len - off : step;
        size_t used = fv_req_feed(r, (const uint8_t *)text + off, n, s_sink, sink);
        off += used;
        if (!used && r->state == FV_REQ_HEAD)
            break;
    }
    return off;
}

/* A Content-Length request, then a pipelined second one; any split gives the same result. */
static void test_http_content_length(void **state)
{
    const char *text = "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: api.openai.com\r\n"
                       "X-Fake-Chunks:  7 \r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n";
    for (size_t step = 1; step <= strlen(text); step++) {
        fv_req_t r;
        s_sink_t sink = {{0}, 0};
        fv_req_init(&r);
        size_t used = s_feed(&r, text, step, &sink);
        assert_int_equal(r.state, FV_REQ_DONE);
        assert_string_equal(text + used, "GET / HTTP/1.1\r\n");
        assert_string_equal(r.method, "POST");
        assert_string_equal(r.target, "/v1/chat/completions?x=1");
        assert_string_equal(fv_req_header(&r, "x-fake-chunks"), "7");
        assert_string_equal(r.hdrs[0].name, "Host");
        assert_int_equal(sink.len, 5);
        assert_memory_equal(sink.data, "hello", 5);
        assert_true(r.keep_alive);
        fv_req_free(&r);
    }
}

/* Chunked bodies are decoded, with extensions and trailers, whatever the split. */
static void test_http_chunked(void **state)
{
    const char *text = "POST /v1/embeddings HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                       "Expect: 100-continue\r\n\r\n"
                       "5;name=x\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n"
                       "X-Trailer: 1\r\n\r\n";
    for (size_t step = 1; step <= strlen(text); step++) {
        fv_req_t r;
        s_sink_t sink = {{0}, 0};
        fv_req_init(&r);
        size_t used = s_feed(&r, text, step, &sink);
        assert_int_equal(used, strlen(text));
        assert_int_equal(r.state, FV_REQ_DONE);
        assert_true(r.chunked);
        assert_true(r.expect_continue);
        assert_int_equal(sink.len, 31);
        assert_memory_equal(sink.data, "helloabcdefghijklmnopqrstuvwxyz", 31);
        fv_req_free(&r);
    }
}

/* Framing mistakes and malformed heads are refused with the right status. */
static void test_http_bad(void **state)
{
    static const struct {
        const char *text;
        int status;
    } cases[] = {
        {"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
        {"POST / HTTP/1.1\r\nA: b\r\n  folded\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nBad Name: b\r\n\r\n", 400},
        {"POST /\r\n\r\n", 400},
        {"POST / HTTP/2.0\r\n\r\n", 505},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", 400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fv_req_t r;
        s_sink_t sink = {{0}, 0};
        fv_req_init(&r);
        s_feed(&r, cases[i].text, 1000, &sink);
        assert_int_equal(r.state, FV_REQ_BAD);
        assert_int_equal(r.status, cases[i].status);
        fv_req_free(&r);
    }
    /* A head over 64 KiB. */
    fv_req_t r;
    fv_req_init(&r);
    const char *start = "GET / HTTP/1.1\r\nX-Big: ";
    fv_req_feed(&r, (const uint8_t *)start, strlen(start), NULL, NULL);
    char *fill = malloc(70000);
    memset(fill, 'a', 70000);
    fv_req_feed(&r, (const uint8_t *)fill, 70000, NULL, NULL);
    free(fill);
    assert_int_equal(r.state, FV_REQ_BAD);
    assert_int_equal(r.status, 431);
    fv_req_free(&r);
}

/* HTTP/1.0 and Connection: close end the connection after the answer. */
static void test_http_keepalive(void **state)
{
    fv_req_t r;
    fv_req_init(&r);
    s_feed(&r, "GET / HTTP/1.0\r\n\r\n", 100, NULL);
    assert_int_equal(r.state, FV_REQ_DONE);
    assert_false(r.keep_alive);
    fv_req_reset(&r);
    s_feed(&r, "\r\nGET / HTTP/1.1\r\nConnection: Keep-Alive, Close\r\n\r\n", 100, NULL);
    assert_int_equal(r.state, FV_REQ_DONE);
    assert_false(r.keep_alive);
    fv_req_free(&r);
}

/* Scans text byte by byte and whole; both must agree on validity. */
static void s_scan(fv_scan_t *s, const char *text)
{
    fv_scan_t one;
    fv_scan_init(&one);
    for (size_t i = 0; text[i]; i++)
        fv_scan_feed(&one, (const uint8_t *)text + i, 1);
    fv_scan_finish(&one);
    fv_scan_init(s);
    fv_scan_feed(s, (const uint8_t *)text, strlen(text));
    fv_scan_finish(s);
    assert_int_equal(one.valid, s->valid);
    assert_int_equal(one.stream, s->stream);
    assert_int_equal(one.include_usage, s->include_usage);
}

/* The members the fake needs are found at the top level only; the last one wins. */
static void test_scan_members(void **state)
{
    fv_scan_t s;
    s_scan(&s, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi \\\"x\\\" \\u00e9\","
               "\"model\":\"nested\"}],\"model\":\"gpt-4o\",\"stream\":true,"
               "\"stream_options\":{\"include_usage\":true,\"include_obfuscation\":false},"
               "\"max_tokens\":12,\"x\":[1,-2.5e3,null,{\"stream\":false}]}");
    assert_true(s.valid);
    assert_string_equal(s.model, "gpt-4o");
    assert_int_equal(s.stream, 1);
    assert_int_equal(s.include_usage, 1);
    assert_int_equal(s.include_obfuscation, 0);
    assert_int_equal(s.max_tokens, 12);
    s_scan(&s, "{\"model\":\"a\",\"model\":\"b\",\"stream\":\"yes\"}");
    assert_true(s.valid);
    assert_string_equal(s.model, "b");
    assert_int_equal(s.stream, 2);
    s_scan(&s, "{\"model\":\"e\",\"input\":[\"a\",\"b\",\"c\"],\"dimensions\":8,"
               "\"encoding_format\":\"base64\"}");
    assert_true(s.valid);
    assert_int_equal(s.n_inputs, 3);
    assert_int_equal(s.dimensions, 8);
    assert_string_equal(s.encoding_format, "base64");
    s_scan(&s, "{\"model\":\"e\",\"input\":\"one\",\"stream\":null}");
    assert_int_equal(s.n_inputs, 1);
    assert_int_equal(s.stream, -1);
}

/* Malformed bodies are not valid. */
static void test_scan_invalid(void **state)
{
    static const char *const bad[] = {
        "",
        "[]",
        "{",
        "{\"a\":}",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{\"a\":tru}",
        "{\"a\":01}",
        "{} x",
        "{\"a\":\"\x01\"}",
        "{\"a\":[1,2}",
        "{\"a\":\"\\q\"}",
        "{\"a\":1}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fv_scan_t s;
        s_scan(&s, bad[i]);
        assert_false(s.valid);
    }
    fv_scan_t s;
    s_scan(&s, " {\"a\" : [ ] , \"b\" : { } , \"c\" : -0.5E+2 }\n");
    assert_true(s.valid);
}

/* Parses the JSON of an SSE event "data: {...}\n\n" (or with an event: line). */
static json_t *s_event_json(const char *ev, const char **type)
{
    const char *d = strstr(ev, "data: ");
    assert_non_null(d);
    *type = NULL;
    static char t[64];
    if (strncmp(ev, "event: ", 7) == 0) {
        size_t n = strcspn(ev + 7, "\n");
        snprintf(t, sizeof t, "%.*s", (int)n, ev + 7);
        *type = t;
    }
    size_t len = strlen(d);
    assert_true(len >= 8 && strcmp(d + len - 2, "\n\n") == 0);
    if (strncmp(d, "data: [DONE]", 12) == 0)
        return NULL;
    json_error_t je;
    json_t *j = json_loadb(d + 6, len - 8, 0, &je);
    assert_non_null(j);
    return j;
}

/* Collects the whole stream of g: events, text from the deltas, usage chunks. */
static void s_stream(fv_gen_t *g, int *events, char *text, size_t tn, int *usage, int *done)
{
    *events = *usage = *done = 0;
    text[0] = '\0';
    for (int64_t k = 0; fv_wire_step_kind(g, k) != FV_STEP_END; k++) {
        size_t len = 0;
        char *ev = fv_wire_step(g, k, &len);
        assert_non_null(ev);
        assert_int_equal(strlen(ev), len);
        (*events)++;
        const char *type;
        json_t *j = s_event_json(ev, &type);
        free(ev);
        if (!j) {
            (*done)++;
            continue;
        }
        json_t *choices = json_object_get(j, "choices");
        json_t *u = json_object_get(j, "usage");
        if (u && json_is_object(u) && !type)
            (*usage)++;
        const char *piece = NULL;
        json_t *c0 = json_array_get(choices, 0);
        if (c0 && json_object_get(c0, "delta"))
            piece = json_string_value(json_object_get(json_object_get(c0, "delta"), "content"));
        else if (c0)
            piece = json_string_value(json_object_get(c0, "text"));
        else if (type && strcmp(type, "response.output_text.delta") == 0)
            piece = json_string_value(json_object_get(j, "delta"));
        size_t tl = strlen(text), pl = piece ? strlen(piece) : 0;
        if (piece && tl + pl < tn)
            memcpy(text + tl, piece, pl + 1);
        json_decref(j);
    }
}

/* OpenAI chat: role, content, finish, usage only with include_usage, [DONE]. */
static void test_wire_chat(void **state)
{
    fv_gen_t g;
    memset(&g, 0, sizeof g);
    g.vendor = FV_OPENAI;
    g.ep = FV_EP_CHAT;
    snprintf(g.model, sizeof g.model, "gpt-4o");
    fv_wire_ids(&g, 1);
    g.n = 4;
    g.prompt_tokens = 9;
    g.obfuscation = true;
    int events, usage, done;
    char text[256];
    s_stream(&g, &events, text, sizeof text, &usage, &done);
    assert_int_equal(events, 1 + 4 + 1 + 1);
    assert_int_equal(usage, 0);
    assert_int_equal(done, 1);
    assert_string_equal(text, "tok0 tok1 tok2 tok3");
    g.include_usage = true;
    s_stream(&g, &events, text, sizeof text, &usage, &done);
    assert_int_equal(events, 1 + 4 + 1 + 1 + 1);
    assert_int_equal(usage, 1);
    /* The usage chunk has choices: [] and the figures; the others "usage": null. */
    size_t len;
    char *ev = fv_wire_step(&g, 6, &len);
    const char *type;
    json_t *j = s_event_json(ev, &type);
    assert_int_equal(json_array_size(json_object_get(j, "choices")), 0);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")), 4);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens")), 9);
    json_decref(j);
    free(ev);
    ev = fv_wire_step(&g, 0, &len);
    j = s_event_json(ev, &type);
    assert_true(json_is_null(json_object_get(j, "usage")));
    assert_non_null(json_object_get(j, "obfuscation"));
    json_decref(j);
    free(ev);
}

/* Azure chat: a first chunk with prompt_filter_results and no choices; sorted keys. */
static void test_wire_azure(void **state)
{
    fv_gen_t g;
    memset(&g, 0, sizeof g);
    g.vendor = FV_AZURE;
    g.ep = FV_EP_CHAT;
    snprintf(g.model, sizeof g.model, "my-gpt4o");
    fv_wire_ids(&g, 2);
    g.n = 3;
    int events, usage, done;
    char text[256];
    s_stream(&g, &events, text, sizeof text, &usage, &done);
    assert_int_equal(events, 2 + 3 + 1 + 1);
    assert_string_equal(text, "tok0 tok1 tok2");
    size_t len;
    char *ev = fv_wire_step(&g, 0, &len);
    assert_non_null(strstr(ev, "\"choices\":[]"));
    assert_non_null(strstr(ev, "prompt_filter_results"));
    free(ev);
    ev = fv_wire_step(&g, 2, &len);
    assert_non_null(strstr(ev, "content_filter_results"));
    assert_null(strstr(ev, "obfuscation"));
    free(ev);
    char *body = fv_wire_error(FV_AZURE, 401, "denied", NULL, NULL, NULL, &len);
    assert_string_equal(body, "{\"error\":{\"code\":\"401\",\"message\":\"denied\"}}");
    free(body);
    body = fv_wire_error(FV_OPENAI, 401, "bad key", "invalid_request_error", NULL,
                         "invalid_api_key", &len);
    assert_string_equal(body, "{\"error\":{\"message\":\"bad key\",\"type\":"
                              "\"invalid_request_error\",\"param\":null,\"code\":"
                              "\"invalid_api_key\"}}");
    free(body);
}

/* Responses API: the lifecycle events around the deltas, usage in response.completed. */
static void test_wire_responses(void **state)
{
    fv_gen_t g;
    memset(&g, 0, sizeof g);
    g.vendor = FV_OPENAI;
    g.ep = FV_EP_RESPONSES;
    snprintf(g.model, sizeof g.model, "gpt-4o-mini");
    fv_wire_ids(&g, 3);
    g.n = 2;
    g.prompt_tokens = 5;
    static const char *const want[] = {
        "response.created",           "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done",  "response.content_part.done",
        "response.output_item.done",  "response.completed",
    };
    int64_t k = 0;
    for (; fv_wire_step_kind(&g, k) != FV_STEP_END; k++) {
        size_t len;
        char *ev = fv_wire_step(&g, k, &len);
        const char *type;
        json_t *j = s_event_json(ev, &type);
        free(ev);
        assert_string_equal(type, want[k]);
        assert_string_equal(json_string_value(json_object_get(j, "type")), want[k]);
        assert_int_equal(json_integer_value(json_object_get(j, "sequence_number")), k);
        if (k == 9) {
            json_t *u = json_object_get(json_object_get(j, "response"), "usage");
            assert_int_equal(json_integer_value(json_object_get(u, "input_tokens")), 5);
            assert_int_equal(json_integer_value(json_object_get(u, "output_tokens")), 2);
        }
        json_decref(j);
    }
    assert_int_equal(k, 10);
}

/* Embeddings: n vectors of the asked size, as floats or base64 float32. */
static void test_wire_embeddings(void **state)
{
    fv_gen_t g;
    memset(&g, 0, sizeof g);
    g.vendor = FV_OPENAI;
    g.ep = FV_EP_EMBEDDINGS;
    snprintf(g.model, sizeof g.model, "text-embedding-3-small");
    g.n_inputs = 2;
    g.dims = 8;
    g.prompt_tokens = 3;
    size_t len;
    char *body = fv_wire_body(&g, &len);
    json_error_t je;
    json_t *j = json_loadb(body, len, 0, &je);
    free(body);
    json_t *data = json_object_get(j, "data");
    assert_int_equal(json_array_size(data), 2);
    assert_int_equal(json_array_size(json_object_get(json_array_get(data, 1), "embedding")), 8);
    json_decref(j);
    g.base64 = true;
    body = fv_wire_body(&g, &len);
    j = json_loadb(body, len, 0, &je);
    free(body);
    const char *b64 = json_string_value(
        json_object_get(json_array_get(json_object_get(j, "data"), 0), "embedding"));
    assert_int_equal(strlen(b64), 44); /* 32 bytes */
    json_decref(j);
}

/* Runs the tests. */
int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_content_length),
        cmocka_unit_test(test_http_chunked),
        cmocka_unit_test(test_http_bad),
        cmocka_unit_test(test_http_keepalive),
        cmocka_unit_test(test_scan_members),
        cmocka_unit_test(test_scan_invalid),
        cmocka_unit_test(test_wire_chat),
        cmocka_unit_test(test_wire_azure),
        cmocka_unit_test(test_wire_responses),
        cmocka_unit_test(test_wire_embeddings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
