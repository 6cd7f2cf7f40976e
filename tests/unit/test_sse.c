/* Unit tests for lib/sse: vendor-shaped streams parsed the same at every split point and with
 * every line ending, the spec's field rules, raw offsets that cut events out cleanly, limits,
 * the byte order mark, and no allocation per event once warm. Includes sse.c to look at its
 * buffers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_util.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sse.c"

/* ---- Samples ---- */

/* OpenAI chat.completions with include_usage: a keep-alive comment, chunks, the usage-only
 * chunk, [DONE]. */
static const char OPENAI[] =
    ": keep-alive\n"
    "\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],"
    "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n"
    "\n"
    "data: [DONE]\n"
    "\n";

/* Anthropic Messages: named events, a ping, an id and a retry line. */
static const char ANTHROPIC[] =
    "retry: 3000\n"
    "event: message_start\n"
    "id: 1\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\","
    "\"role\":\"assistant\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
    "\"text\":\"\"}}\n"
    "\n"
    "event: ping\n"
    "data: {\"type\": \"ping\"}\n"
    "\n"
    "event: content_block_delta\n"
    "id: 2\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"Hello\"}}\n"
    "\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},"
    "\"usage\":{\"output_tokens\":15}}\n"
    "\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n"
    "\n";

/* Gemini with alt=sse: events end with "\r\n\r\n". */
static const char GEMINI[] =
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hel\"}],"
    "\"role\": \"model\"}}],"
    "\"usageMetadata\": {\"promptTokenCount\": 4,\"totalTokenCount\": 4}}\r\n"
    "\r\n"
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"lo\"}],\"role\": \"model\"},"
    "\"finishReason\": \"STOP\"}],\"usageMetadata\": {\"promptTokenCount\": 4,"
    "\"candidatesTokenCount\": 2,\"totalTokenCount\": 6}}\r\n"
    "\r\n";

/* The spec's corner cases in one stream. */
static const char TRICKY[] =
    "\n"                          /* a blank line first: nothing */
    ": comment\n"                 /* comments */
    ":\n"
    "data\n"                      /* no colon: field "data", value "" */
    "data\n"
    "\n"                          /* -> "\n" */
    "data:no space\n"             /* no space after the colon */
    "data:  two spaces\n"         /* only one space is removed */
    "unknown: field\n"            /* ignored */
    "dat: typo\n"
    "datadata: long name\n"
    "\n"                          /* -> "no space\n two spaces" */
    "event: only an event\n"      /* a block without data dispatches nothing */
    "\n"
    "event: first\n"
    "event: second\n"             /* the last event line wins */
    "data: x\n"
    "\n"                          /* -> second: "x" */
    "event:\n"                    /* an empty event name means "message" */
    "id: 7\n"
    "data: y:z\n"
    "\n"                          /* -> message: "y:z", id 7 */
    "id\n"                        /* an empty id resets it */
    "data: \n"
    "\n"                          /* -> "" with id "" */
    "data: last, unfinished\n";   /* never dispatched */

/* ---- Helpers ---- */

#define MAX_REC 64

/* One event as recorded. */
typedef struct {
    char *event;     /* copies, NUL-terminated */
    char *data;      /* may hold NULs */
    size_t data_len; /* its length */
    char *id;        /* last event id */
    uint64_t start;  /* raw offsets */
    uint64_t end;
} rec_t;

/* Every event of one run. */
typedef struct {
    rec_t r[MAX_REC]; /* in order */
    size_t n;         /* how many */
    size_t fail_at;   /* the callback fails for the event with this index (SIZE_MAX: never) */
    int emsgsize;     /* feeds that returned -EMSGSIZE (depends on the chunking) */
    uint64_t skipped; /* events skipped for size (does not) */
} log_t;

/* Event callback: checks the event's own invariants and records it. */
static int on_event(void *arg, const sse_event_t *ev)
{
    log_t *l = arg;
    assert_true(l->n < MAX_REC);
    assert_int_equal(strlen(ev->event), ev->event_len);
    assert_int_equal(ev->data[ev->data_len], '\0');
    assert_int_equal(strlen(ev->id), ev->id_len);
    assert_true(ev->start < ev->end);
    if (l->n == l->fail_at)
        return -ECANCELED;
    rec_t *r = &l->r[l->n++];
    r->event = tu_dup_n(ev->event, ev->event_len);
    r->data = tu_dup_n(ev->data, ev->data_len);
    r->data_len = ev->data_len;
    r->id = tu_dup_n(ev->id, ev->id_len);
    r->start = ev->start;
    r->end = ev->end;
    return 0;
}

/* Frees a log's copies and empties it. */
static void log_free(log_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->r[i].event);
        free(l->r[i].data);
        free(l->r[i].id);
    }
    l->n = 0;
}

/* Parses text[0, n) cut at cuts[0..ncuts) (ascending), then finishes. */
static void parse_cuts(const char *text, size_t n, const size_t *cuts, size_t ncuts, size_t max,
                       log_t *l)
{
    memset(l, 0, sizeof *l);
    l->fail_at = SIZE_MAX;
    sse_parser_t *p = sse_new(max, on_event, l);
    assert_non_null(p);
    size_t pos = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t next = i < ncuts ? cuts[i] : n;
        int rc = sse_feed(p, (const uint8_t *)text + pos, next - pos);
        if (rc == -EMSGSIZE)
            l->emsgsize++;
        else
            assert_int_equal(rc, 0);
        assert_int_equal(sse_offset(p), next);
        assert_true(sse_pending_start(p) <= next);
        pos = next;
    }
    assert_int_equal(sse_finish(p), 0);
    l->skipped = sse_skipped(p);
    /* At least one -EMSGSIZE when something was skipped; at most one per skipped event. */
    assert_true((uint64_t)l->emsgsize <= l->skipped);
    assert_true(l->skipped == 0 || l->emsgsize > 0);
    sse_destroy(&p);
    assert_null(p);
}

/* Parses text whole. */
static void parse(const char *text, size_t n, size_t max, log_t *l)
{
    parse_cuts(text, n, NULL, 0, max, l);
}

/* Asserts two runs gave the same events; with offsets too if with_offsets. */
static void assert_same_log(const log_t *a, const log_t *b, bool with_offsets)
{
    assert_int_equal(a->n, b->n);
    assert_int_equal(a->skipped, b->skipped);
    for (size_t i = 0; i < a->n; i++) {
        assert_string_equal(a->r[i].event, b->r[i].event);
        assert_int_equal(a->r[i].data_len, b->r[i].data_len);
        assert_memory_equal(a->r[i].data, b->r[i].data, a->r[i].data_len);
        assert_string_equal(a->r[i].id, b->r[i].id);
        if (with_offsets) {
            assert_int_equal(a->r[i].start, b->r[i].start);
            assert_int_equal(a->r[i].end, b->r[i].end);
        }
    }
}

/* Deterministic pseudo-random numbers (xorshift64). */
static uint64_t rnd(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

/* Parses text whole, byte by byte, cut at every offset, cut at every pair of offsets (short
 * texts), and in random pieces: all must match the whole run, returned in ref. */
static void check_every_split(const char *text, size_t n, size_t max, log_t *ref)
{
    log_t l;
    parse(text, n, max, ref);

    size_t *cuts = malloc((n + 1) * sizeof *cuts);
    assert_non_null(cuts);
    for (size_t i = 1; i < n; i++)
        cuts[i - 1] = i;
    parse_cuts(text, n, cuts, n ? n - 1 : 0, max, &l);
    assert_same_log(ref, &l, true);
    log_free(&l);

    for (size_t i = 1; i < n; i++) {
        parse_cuts(text, n, &i, 1, max, &l);
        assert_same_log(ref, &l, true);
        log_free(&l);
    }
    if (n <= 400) {
        for (size_t i = 1; i < n; i++) {
            for (size_t j = i + 1; j < n; j++) {
                size_t two[2] = {i, j};
                parse_cuts(text, n, two, 2, max, &l);
                assert_same_log(ref, &l, true);
                log_free(&l);
            }
        }
    }
    uint64_t seed = 0x2545F4914F6CDD1DULL ^ n;
    for (int round = 0; round < 300; round++) {
        size_t nc = 0, pos = 0;
        uint64_t span = round % 3 == 0 ? 3 : round % 3 == 1 ? 17 : 256;
        for (;;) {
            pos += 1 + (size_t)(rnd(&seed) % span);
            if (pos >= n)
                break;
            cuts[nc++] = pos;
        }
        parse_cuts(text, n, cuts, nc, max, &l);
        assert_same_log(ref, &l, true);
        log_free(&l);
    }
    free(cuts);
}

/* Copy of text with every "\n" replaced by eol; its length in *len. */
static char *with_eol(const char *text, const char *eol, size_t *len)
{
    size_t el = strlen(eol), n = 0, cap = strlen(text) * el + 1;
    char *out = malloc(cap);
    assert_non_null(out);
    for (const char *p = text; *p; p++) {
        if (*p == '\n') {
            memcpy(out + n, eol, el);
            n += el;
        } else {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    *len = n;
    return out;
}

/* The raw slices of a run: each event's bytes, parsed alone, give that event alone; removing
 * any one event's bytes leaves the other events, unchanged. */
static void check_slices(const char *text, size_t n, const log_t *ref)
{
    uint64_t prev_end = 0;
    for (size_t i = 0; i < ref->n; i++) {
        const rec_t *r = &ref->r[i];
        assert_true(r->start >= prev_end);
        assert_true(r->end <= n);
        prev_end = r->end;

        log_t one;
        parse(text + r->start, (size_t)(r->end - r->start), 1 << 16, &one);
        assert_int_equal(one.n, 1);
        assert_string_equal(one.r[0].event, r->event);
        assert_int_equal(one.r[0].data_len, r->data_len);
        assert_memory_equal(one.r[0].data, r->data, r->data_len);
        assert_int_equal(one.r[0].start, 0);
        assert_int_equal(one.r[0].end, r->end - r->start);
        log_free(&one);

        size_t cut_len = (size_t)(r->end - r->start);
        char *rest = malloc(n - cut_len + 1);
        assert_non_null(rest);
        memcpy(rest, text, (size_t)r->start);
        memcpy(rest + r->start, text + r->end, n - (size_t)r->end);
        log_t l;
        parse(rest, n - cut_len, 1 << 16, &l);
        assert_int_equal(l.n, ref->n - 1);
        for (size_t k = 0; k < l.n; k++) {
            const rec_t *o = &ref->r[k < i ? k : k + 1];
            uint64_t shift = k < i ? 0 : cut_len;
            assert_string_equal(l.r[k].event, o->event);
            assert_int_equal(l.r[k].data_len, o->data_len);
            assert_memory_equal(l.r[k].data, o->data, o->data_len);
            assert_int_equal(l.r[k].start, o->start - shift);
            assert_int_equal(l.r[k].end, o->end - shift);
        }
        log_free(&l);
        free(rest);
    }
}

/* ---- Tests ---- */

/* Vendor streams: the events, their data and their exact offsets. */
static void test_vendor_streams(void **state)
{
    (void)state;
    log_t l;
    parse(OPENAI, strlen(OPENAI), 4096, &l);
    assert_int_equal(l.n, 4);
    for (size_t i = 0; i < l.n; i++)
        assert_string_equal(l.r[i].event, "message");
    assert_string_equal(l.r[3].data, "[DONE]");
    assert_memory_equal(l.r[2].data, "{\"id\":\"chatcmpl-1\"", 18);
    /* The comment's block is its own; the first event starts after it. */
    assert_int_equal(l.r[0].start, strlen(": keep-alive\n\n"));
    assert_int_equal(l.r[3].end, strlen(OPENAI));
    assert_int_equal(l.r[3].start, strlen(OPENAI) - strlen("data: [DONE]\n\n"));
    for (size_t i = 1; i < l.n; i++)
        assert_int_equal(l.r[i].start, l.r[i - 1].end);
    assert_memory_equal(OPENAI + l.r[2].start, "data: {", 7);
    assert_memory_equal(OPENAI + l.r[2].end - 2, "\n\n", 2);
    log_free(&l);

    parse(ANTHROPIC, strlen(ANTHROPIC), 4096, &l);
    static const char *const names[] = {"message_start", "content_block_start", "ping",
                                        "content_block_delta", "message_delta", "message_stop"};
    static const char *const ids[] = {"1", "1", "1", "2", "2", "2"};
    assert_int_equal(l.n, 6);
    for (size_t i = 0; i < l.n; i++) {
        assert_string_equal(l.r[i].event, names[i]);
        assert_string_equal(l.r[i].id, ids[i]);
    }
    assert_string_equal(l.r[2].data, "{\"type\": \"ping\"}");
    assert_int_equal(l.r[0].start, 0); /* the retry line belongs to the first block */
    log_free(&l);

    parse(GEMINI, strlen(GEMINI), 4096, &l);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.r[1].end, strlen(GEMINI));
    assert_memory_equal(GEMINI + l.r[0].end - 4, "\r\n\r\n", 4);
    assert_int_equal(l.r[1].start, l.r[0].end);
    assert_memory_equal(l.r[0].data, "{\"candidates\"", 13);
    assert_int_equal(l.r[0].data[l.r[0].data_len - 1], '}'); /* no "\r" left in the data */
    log_free(&l);
}

/* The spec's field rules. */
static void test_field_rules(void **state)
{
    (void)state;
    log_t l;
    parse(TRICKY, strlen(TRICKY), 4096, &l);
    assert_int_equal(l.n, 5);
    assert_string_equal(l.r[0].event, "message");
    assert_int_equal(l.r[0].data_len, 1);
    assert_string_equal(l.r[0].data, "\n");
    assert_string_equal(l.r[1].data, "no space\n two spaces");
    assert_string_equal(l.r[2].event, "second");
    assert_string_equal(l.r[2].data, "x");
    assert_string_equal(l.r[3].event, "message");
    assert_string_equal(l.r[3].data, "y:z");
    assert_string_equal(l.r[3].id, "7");
    assert_int_equal(l.r[4].data_len, 0);
    assert_string_equal(l.r[4].id, "");
    /* The first event's block starts after the leading blank line and holds the comments. */
    assert_int_equal(l.r[0].start, 1);
    assert_memory_equal(TRICKY + l.r[0].start, ": comment\n", 10);
    /* The event-only block was skipped over, and the next event starts after it. */
    assert_memory_equal(TRICKY + l.r[2].start, "event: first\n", 13);
    log_free(&l);
}

/* Every stream, with "\n", "\r\n" and "\r" line ends, parses the same at every split point;
 * the data never depends on the line ends, and every event's raw slice is exact. */
static void test_every_split_every_eol(void **state)
{
    (void)state;
    static const char *const texts[] = {OPENAI, ANTHROPIC, TRICKY};
    static const char *const eols[] = {"\n", "\r\n", "\r"};
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
        log_t lf;
        memset(&lf, 0, sizeof lf);
        for (size_t e = 0; e < 3; e++) {
            size_t n;
            char *s = with_eol(texts[t], eols[e], &n);
            log_t l;
            check_every_split(s, n, 4096, &l);
            check_slices(s, n, &l);
            if (e == 0) {
                lf = l;
            } else {
                assert_same_log(&lf, &l, false);
                log_free(&l);
            }
            free(s);
        }
        log_free(&lf);
    }
    log_t l;
    check_every_split(GEMINI, strlen(GEMINI), 4096, &l);
    check_slices(GEMINI, strlen(GEMINI), &l);
    log_free(&l);
}

/* Mixed line ends in one stream, "\r" then "\n" across feeds, and "\r" blank lines that wait
 * for the next byte. */
static void test_cr_across_chunks(void **state)
{
    (void)state;
    log_t l;
    memset(&l, 0, sizeof l);
    l.fail_at = SIZE_MAX;
    sse_parser_t *p = sse_new(64, on_event, &l);
    assert_non_null(p);
    assert_int_equal(sse_feed(p, (const uint8_t *)"data: a\r", 8), 0);
    assert_int_equal(sse_feed(p, (const uint8_t *)"\n\r", 2), 0);
    assert_int_equal(l.n, 0); /* the blank line's "\r" may still get its "\n" */
    assert_int_equal(sse_pending_start(p), 0);
    assert_int_equal(sse_feed(p, (const uint8_t *)"\ndata: b\r\r", 10), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.r[0].data, "a");
    assert_int_equal(l.r[0].start, 0);
    assert_int_equal(l.r[0].end, 11); /* "data: a\r\n\r\n" */
    assert_int_equal(sse_pending_start(p), 11);
    /* "data: b\r\r" waits: the next byte tells whether a "\n" ends the blank line. */
    assert_int_equal(sse_feed(p, (const uint8_t *)"d", 1), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.r[1].data, "b");
    assert_int_equal(l.r[1].start, 11);
    assert_int_equal(l.r[1].end, 20);
    assert_int_equal(sse_pending_start(p), 20);
    /* Mixed: "\n", then "\r\n", then a bare "\r" at the very end, settled by sse_finish. */
    assert_int_equal(sse_feed(p, (const uint8_t *)"ata: c\ndata: d\r\n\r", 17), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(sse_finish(p), 0);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.r[2].data, "c\nd");
    assert_int_equal(l.r[2].start, 20);
    assert_int_equal(l.r[2].end, 38);
    assert_int_equal(sse_feed(p, (const uint8_t *)"x", 1), -EINVAL);
    assert_int_equal(sse_finish(p), 0);

    /* sse_reset: the same parser reads a new stream from offset 0. */
    sse_reset(p);
    assert_int_equal(sse_offset(p), 0);
    assert_int_equal(sse_feed(p, (const uint8_t *)"data: e\n\n", 9), 0);
    assert_int_equal(l.n, 4);
    assert_string_equal(l.r[3].data, "e");
    assert_int_equal(l.r[3].start, 0);
    assert_int_equal(l.r[3].end, 9);
    sse_destroy(&p);
    log_free(&l);

    /* "\n\r" is two line ends, not one: "data: f\n" ends the line, "\r" is the blank line. */
    parse("data: f\n\rdata: g\n\n", 18, 64, &l);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.r[0].end, 9);
    assert_string_equal(l.r[1].data, "g");
    log_free(&l);
}

/* A byte order mark at the very start is skipped, even one byte per feed; elsewhere, or
 * partial, it is data. */
static void test_bom(void **state)
{
    (void)state;
    static const char with_bom[] = "\xEF\xBB\xBF" "data: x\n\n" "\xEF\xBB\xBF" "data: y\n\n";
    log_t l;
    check_every_split(with_bom, strlen(with_bom), 64, &l);
    assert_int_equal(l.n, 1); /* the second BOM makes "\xEF\xBB\xBF" "data" an unknown field */
    assert_string_equal(l.r[0].data, "x");
    assert_int_equal(l.r[0].start, 3);
    assert_int_equal(l.r[0].end, 12);
    log_free(&l);

    /* A partial BOM is part of the first field name. */
    check_every_split("\xEF\xBB" "data: x\n\ndata: z\n\n", 20, 64, &l);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.r[0].data, "z");
    log_free(&l);
    check_every_split("\xEF\n\ndata: z\n\n", 12, 64, &l);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.r[0].start, 3);
    log_free(&l);
    /* Only a partial BOM, then the end. */
    parse("\xEF\xBB", 2, 64, &l);
    assert_int_equal(l.n, 0);
    /* A BOM, then a blank line ended by "\r" at the end of the stream. */
    parse("\xEF\xBB\xBF" "data:q\r\r", 11, 64, &l);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.r[0].end, 11);
    log_free(&l);
}

/* id and retry: an id persists, an id holding NUL is ignored, retry takes digits only. */
static void test_id_and_retry(void **state)
{
    (void)state;
    static const char s[] = "id: a\ndata: 1\n\n"
                            "data: 2\n\n"
                            "id: b\0c\ndata: 3\n\n"
                            "retry: 1500\n\n"
                            "retry: 12x\n\n"
                            "retry:\n\n"
                            "retry: 99999999999999999999999\n\n"
                            "id: d\n\n"
                            "data: 4\n\n";
    size_t n = sizeof s - 1;
    log_t l;
    memset(&l, 0, sizeof l);
    l.fail_at = SIZE_MAX;
    sse_parser_t *p = sse_new(64, on_event, &l);
    assert_non_null(p);
    assert_int_equal(sse_retry_ms(p), -1);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(sse_feed(p, (const uint8_t *)s + i, 1), 0);
    assert_int_equal(sse_finish(p), 0);
    assert_int_equal(l.n, 4);
    assert_string_equal(l.r[0].id, "a");
    assert_string_equal(l.r[1].id, "a");
    assert_string_equal(l.r[2].id, "a"); /* "b\0c" ignored */
    assert_string_equal(l.r[3].id, "d"); /* set by a block without data */
    assert_int_equal(sse_retry_ms(p), 1500);
    sse_destroy(&p);
    log_free(&l);
}

/* Data, event names and ids over the limit: -EMSGSIZE once, the event skipped, the next read. */
static void test_limits(void **state)
{
    (void)state;
    log_t l;
    /* Exactly at the limit (10 bytes as dispatched, "\n" joins included). */
    static const char at[] = "data: 0123456789\n\n"
                             "data: 01234\ndata: 0123\n\n"
                             "event: 0123456789\ndata: e\n\n"
                             "id: 0123456789\ndata: i\n\n";
    check_every_split(at, strlen(at), 10, &l);
    assert_int_equal(l.n, 4);
    assert_int_equal(l.emsgsize, 0);
    assert_string_equal(l.r[0].data, "0123456789");
    assert_string_equal(l.r[1].data, "01234\n0123");
    assert_string_equal(l.r[2].event, "0123456789");
    assert_string_equal(l.r[3].id, "0123456789");
    log_free(&l);

    /* One over, each way, each followed by a good event. */
    static const char over[] = "data: 0123456789A\n\ndata: ok1\n\n"
                               "data: 01234\ndata: 01234\n\ndata: ok2\n\n"
                               "data: 0123456789\ndata:\n\ndata: ok3\n\n"
                               "event: 0123456789A\ndata: e\n\ndata: ok4\n\n"
                               "id: 0123456789A\ndata: i\n\ndata: ok5\n\n"
                               "data: x\r\ndata: 0123456789\r\n\r\ndata: ok6\r\n\r\n";
    check_every_split(over, strlen(over), 10, &l);
    assert_int_equal(l.n, 6);
    for (size_t i = 0; i < l.n; i++) {
        char want[8];
        snprintf(want, sizeof want, "ok%zu", i + 1);
        assert_string_equal(l.r[i].data, want);
    }
    log_free(&l);
    /* One -EMSGSIZE per over-long event, whichever feed crossed the limit. */
    parse(over, strlen(over), 10, &l);
    assert_int_equal(l.emsgsize, 1); /* one feed, one return */
    assert_int_equal(l.skipped, 6);
    log_free(&l);
    size_t n = strlen(over);
    size_t *cuts = malloc(n * sizeof *cuts);
    assert_non_null(cuts);
    for (size_t i = 1; i < n; i++)
        cuts[i - 1] = i;
    parse_cuts(over, n, cuts, n - 1, 10, &l);
    assert_int_equal(l.emsgsize, 6);
    log_free(&l);
    free(cuts);

    /* A huge event against a small limit: memory stays at the limit. */
    size_t big = 1 << 20;
    char *s = malloc(big + 32);
    assert_non_null(s);
    memcpy(s, "data: ", 6);
    memset(s + 6, 'z', big);
    memcpy(s + 6 + big, "\n\ndata: after\n\n", 15);
    memset(&l, 0, sizeof l);
    l.fail_at = SIZE_MAX;
    sse_parser_t *p = sse_new(1000, on_event, &l);
    assert_non_null(p);
    assert_int_equal(sse_feed(p, (const uint8_t *)s, big + 21), -EMSGSIZE);
    assert_true(p->data.cap <= 1000 + 2);
    assert_int_equal(sse_skipped(p), 1);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.r[0].data, "after");
    assert_int_equal(l.r[0].start, big + 8);
    sse_destroy(&p);
    log_free(&l);
    free(s);

    assert_null(sse_new(0, on_event, NULL));
    assert_null(sse_new(SIZE_MAX, on_event, NULL));
}

/* After the first events the buffers stop growing: no allocation per event. */
static void test_no_allocation_when_warm(void **state)
{
    (void)state;
    log_t l;
    memset(&l, 0, sizeof l);
    l.fail_at = SIZE_MAX;
    sse_parser_t *p = sse_new(4096, NULL, NULL);
    assert_non_null(p);
    /* Warm up with the largest event, event name and ids of the streams. */
    assert_int_equal(sse_feed(p, (const uint8_t *)OPENAI, strlen(OPENAI)), 0);
    assert_int_equal(sse_feed(p, (const uint8_t *)ANTHROPIC, strlen(ANTHROPIC)), 0);
    assert_int_equal(sse_feed(p, (const uint8_t *)"id: 1\nid: 2\n\n", 13), 0);
    char *data = p->data.p, *event = p->event.p, *id = p->id.p, *id_new = p->id_new.p;
    size_t cap = p->data.cap;
    assert_non_null(data);
    assert_non_null(event);
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(sse_feed(p, (const uint8_t *)OPENAI, strlen(OPENAI)), 0);
        assert_int_equal(sse_feed(p, (const uint8_t *)ANTHROPIC, strlen(ANTHROPIC)), 0);
        assert_int_equal(sse_feed(p, (const uint8_t *)"id: 3\n\n", 7), 0);
    }
    assert_ptr_equal(p->data.p, data);
    assert_int_equal(p->data.cap, cap);
    assert_ptr_equal(p->event.p, event);
    assert_true((p->id.p == id && p->id_new.p == id_new) ||
                (p->id.p == id_new && p->id_new.p == id));
    sse_destroy(&p);
    log_free(&l);
}

/* A failing callback stops the feed; the error sticks. */
static void test_callback_error(void **state)
{
    (void)state;
    log_t l;
    memset(&l, 0, sizeof l);
    l.fail_at = 1;
    sse_parser_t *p = sse_new(4096, on_event, &l);
    assert_non_null(p);
    assert_int_equal(sse_feed(p, (const uint8_t *)OPENAI, strlen(OPENAI)), -ECANCELED);
    assert_int_equal(l.n, 1);
    assert_int_equal(sse_feed(p, (const uint8_t *)"data: x\n\n", 9), -ECANCELED);
    assert_int_equal(sse_finish(p), -ECANCELED);
    assert_int_equal(l.n, 1);
    sse_destroy(&p);
    log_free(&l);

    /* A failure on the event sse_finish() dispatches. */
    memset(&l, 0, sizeof l);
    l.fail_at = 0;
    p = sse_new(64, on_event, &l);
    assert_non_null(p);
    assert_int_equal(sse_feed(p, (const uint8_t *)"data: x\r\r", 9), 0);
    assert_int_equal(sse_finish(p), -ECANCELED);
    sse_destroy(&p);
}

/* NULL arguments, destroy twice, feeding nothing. */
static void test_api_edges(void **state)
{
    (void)state;
    sse_destroy(NULL);
    sse_parser_t *p = NULL;
    sse_destroy(&p);
    assert_int_equal(sse_feed(NULL, (const uint8_t *)"x", 1), -EINVAL);
    assert_int_equal(sse_finish(NULL), -EINVAL);
    sse_reset(NULL);
    assert_int_equal(sse_offset(NULL), 0);
    assert_int_equal(sse_pending_start(NULL), 0);
    assert_int_equal(sse_retry_ms(NULL), -1);
    assert_int_equal(sse_skipped(NULL), 0);
    p = sse_new(16, NULL, NULL);
    assert_non_null(p);
    assert_int_equal(sse_feed(p, NULL, 0), 0);
    assert_int_equal(sse_feed(p, NULL, 1), -EINVAL);
    static const char long_one[] = "data: longer than sixteen\n\n";
    assert_int_equal(sse_feed(p, (const uint8_t *)long_one, strlen(long_one)), -EMSGSIZE);
    assert_int_equal(sse_feed(p, (const uint8_t *)"data: short\n\n", 13), 0);
    assert_int_equal(sse_finish(p), 0);
    sse_destroy(&p);
    assert_null(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vendor_streams),
        cmocka_unit_test(test_field_rules),
        cmocka_unit_test(test_every_split_every_eol),
        cmocka_unit_test(test_cr_across_chunks),
        cmocka_unit_test(test_bom),
        cmocka_unit_test(test_id_and_retry),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_no_allocation_when_warm),
        cmocka_unit_test(test_callback_error),
        cmocka_unit_test(test_api_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
