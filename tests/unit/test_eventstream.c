/* Unit tests for lib/eventstream: known-good frames computed independently (Python's
 * zlib.crc32), round trips fed whole, byte by byte and in random pieces, every corrupted byte
 * caught, lengths out of bounds, headers of every type skipped, the header lookup, the idle
 * state and the encoder's limits. */
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
#include <zlib.h>

#include "eventstream.h"

/* ---- Known-good frames ---- */

/* One invoke-with-response-stream chunk: ":event-type" = "chunk", ":content-type" =
 * "application/json", ":message-type" = "event", payload {"bytes":"eyJ0eXBlIjoicGluZyJ9"}
 * (base64 of {"type":"ping"}). Computed with Python: total 123, headers 75, prelude CRC
 * 0x0a2e96af, message CRC 0xa01f56c4 (zlib.crc32). */
static const uint8_t CHUNK_FRAME[] = {
    0x00, 0x00, 0x00, 0x7b, 0x00, 0x00, 0x00, 0x4b, 0x0a, 0x2e, 0x96, 0xaf, 0x0b, 0x3a, 0x65, 0x76,
    0x65, 0x6e, 0x74, 0x2d, 0x74, 0x79, 0x70, 0x65, 0x07, 0x00, 0x05, 0x63, 0x68, 0x75, 0x6e, 0x6b,
    0x0d, 0x3a, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d, 0x74, 0x79, 0x70, 0x65, 0x07, 0x00,
    0x10, 0x61, 0x70, 0x70, 0x6c, 0x69, 0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x2f, 0x6a, 0x73, 0x6f,
    0x6e, 0x0d, 0x3a, 0x6d, 0x65, 0x73, 0x73, 0x61, 0x67, 0x65, 0x2d, 0x74, 0x79, 0x70, 0x65, 0x07,
    0x00, 0x05, 0x65, 0x76, 0x65, 0x6e, 0x74, 0x7b, 0x22, 0x62, 0x79, 0x74, 0x65, 0x73, 0x22, 0x3a,
    0x22, 0x65, 0x79, 0x4a, 0x30, 0x65, 0x58, 0x42, 0x6c, 0x49, 0x6a, 0x6f, 0x69, 0x63, 0x47, 0x6c,
    0x75, 0x5a, 0x79, 0x4a, 0x39, 0x22, 0x7d, 0xa0, 0x1f, 0x56, 0xc4,
};

static const char CHUNK_PAYLOAD[] = "{\"bytes\":\"eyJ0eXBlIjoicGluZyJ9\"}";

/* No headers, no payload: 16 bytes (the same bytes as AWS's "empty_message" vector). */
static const uint8_t EMPTY_FRAME[] = {0, 0, 0, 16, 0, 0, 0, 0, 5, 194, 72, 235, 125, 152, 200, 255};

/* Headers of every type, computed with Python: ":event-type" = "metadata" (string), "flag"
 * (bool true), "off" (bool false), "b" (byte -1), "s" (short -2), "i" (int 40972), "l" (long
 * 42424242), "bytes" (byte array 00 07 ff), ":content-type" = "application/json" (string),
 * "ts" (timestamp 1700000000000), "id" (UUID 00..0f), "" = "" (string); payload {"ok":true}.
 * Total 169, headers 142. */
static const char MIXED_FRAME[] = "\x00\x00\x00\xa9\x00\x00\x00\x8e\x12\x15\x8c\xa9\x0b\x3a\x65\x76"
                                  "\x65\x6e\x74\x2d\x74\x79\x70\x65\x07\x00\x08\x6d\x65\x74\x61\x64"
                                  "\x61\x74\x61\x04\x66\x6c\x61\x67\x00\x03\x6f\x66\x66\x01\x01\x62"
                                  "\x02\xff\x01\x73\x03\xff\xfe\x01\x69\x04\x00\x00\xa0\x0c\x01\x6c"
                                  "\x05\x00\x00\x00\x00\x02\x87\x57\xb2\x05\x62\x79\x74\x65\x73\x06"
                                  "\x00\x03\x00\x07\xff\x0d\x3a\x63\x6f\x6e\x74\x65\x6e\x74\x2d\x74"
                                  "\x79\x70\x65\x07\x00\x10\x61\x70\x70\x6c\x69\x63\x61\x74\x69\x6f"
                                  "\x6e\x2f\x6a\x73\x6f\x6e\x02\x74\x73\x08\x00\x00\x01\x8b\xcf\xe5"
                                  "\x68\x00\x02\x69\x64\x09\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09"
                                  "\x0a\x0b\x0c\x0d\x0e\x0f\x00\x07\x00\x00\x7b\x22\x6f\x6b\x22\x3a"
                                  "\x74\x72\x75\x65\x7d\xe8\xf9\x4e\xf5";

/* ---- Helpers ---- */

#define MAX_MSGS 64

/* One decoded message, copied out of the callback. */
typedef struct {
    size_t n_headers;            /* string headers */
    char *names[ES_MAX_HEADERS]; /* their names, NUL-terminated copies */
    char *values[ES_MAX_HEADERS];
    uint8_t *payload; /* a copy */
    size_t payload_len;
} msg_t;

/* What a decoder handed out. */
typedef struct {
    msg_t m[MAX_MSGS];
    size_t n;
    const char *event_type; /* es_header_get(":event-type") of the last message, copied */
    char event_type_buf[64];
} log_t;

/* Decoder callback: copies the message into the log. */
static void on_message(void *arg, const es_message_t *m)
{
    log_t *l = arg;
    assert_true(l->n < MAX_MSGS);
    msg_t *c = &l->m[l->n++];
    c->n_headers = m->n_headers;
    for (size_t i = 0; i < m->n_headers; i++) {
        c->names[i] = tu_dup_n(m->headers[i].name, m->headers[i].name_len);
        c->values[i] = tu_dup_n(m->headers[i].value, m->headers[i].value_len);
    }
    c->payload = (uint8_t *)tu_dup_n((const char *)m->payload, m->payload_len);
    c->payload_len = m->payload_len;
    size_t len = 0;
    const char *et = es_header_get(m, ":event-type", &len);
    l->event_type = NULL;
    if (et && len < sizeof l->event_type_buf) {
        memcpy(l->event_type_buf, et, len);
        l->event_type_buf[len] = '\0';
        l->event_type = l->event_type_buf;
    }
}

/* Frees what the log copied. */
static void log_free(log_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        for (size_t j = 0; j < l->m[i].n_headers; j++) {
            free(l->m[i].names[j]);
            free(l->m[i].values[j]);
        }
        free(l->m[i].payload);
    }
    memset(l, 0, sizeof *l);
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

/* Decodes data[0, n) fed in pieces of 1..span bytes (span 0: whole); returns the last feed's
 * result and leaves the decoder's state in *d (the caller frees it). */
static int decode_pieces(es_decoder_t *d, log_t *l, const uint8_t *data, size_t n, size_t span,
                         uint64_t *seed)
{
    es_decoder_init(d, on_message, l);
    int rc = 0;
    size_t pos = 0;
    while (pos < n) {
        size_t k = span ? 1 + (size_t)(rnd(seed) % span) : n;
        if (k > n - pos)
            k = n - pos;
        rc = es_decoder_feed(d, data + pos, k);
        pos += k;
        if (rc < 0)
            break;
    }
    return rc;
}

/* A growable byte string. */
typedef struct {
    uint8_t *p;
    size_t len;
} bytes_t;

/* Appends n bytes. */
static void bytes_add(bytes_t *b, const void *p, size_t n)
{
    b->p = realloc(b->p, b->len + n + 1);
    assert_non_null(b->p);
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

/* Writes a big-endian 32-bit number. */
static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Frames a raw headers block and a payload the test's own way (zlib directly, lengths as
 * given): lets the tests build messages the encoder would refuse to write. */
static bytes_t frame_raw(uint32_t total, const void *headers, uint32_t hlen, const void *payload,
                         size_t plen)
{
    bytes_t b = {0};
    uint8_t pre[12];
    put32(pre, total);
    put32(pre + 4, hlen);
    put32(pre + 8, (uint32_t)crc32(0, pre, 8));
    bytes_add(&b, pre, sizeof pre);
    bytes_add(&b, headers, hlen);
    bytes_add(&b, payload, plen);
    uint8_t crc[4];
    put32(crc, (uint32_t)crc32(0, b.p, (uInt)b.len));
    bytes_add(&b, crc, 4);
    return b;
}

/* Frames with the right total length. */
static bytes_t frame(const void *headers, uint32_t hlen, const void *payload, size_t plen)
{
    return frame_raw((uint32_t)(ES_MIN_MESSAGE + hlen + plen), headers, hlen, payload, plen);
}

/* Decodes one whole buffer; returns the feed's result. */
static int decode_all(log_t *l, const uint8_t *p, size_t n)
{
    es_decoder_t d;
    uint64_t seed = 1;
    int rc = decode_pieces(&d, l, p, n, 0, &seed);
    es_decoder_free(&d);
    return rc;
}

/* ---- Known-good frames ---- */

/* The encoder writes exactly the bytes computed with Python; the decoder reads them back. */
static void test_known_chunk_frame(void **state)
{
    (void)state;
    const char *names[] = {":event-type", ":content-type", ":message-type"};
    const char *values[] = {"chunk", "application/json", "event"};
    size_t len = 0;
    uint8_t *m =
        es_encode(names, values, 3, (const uint8_t *)CHUNK_PAYLOAD, strlen(CHUNK_PAYLOAD), &len);
    assert_non_null(m);
    assert_int_equal(len, sizeof CHUNK_FRAME);
    assert_memory_equal(m, CHUNK_FRAME, sizeof CHUNK_FRAME);
    free(m);

    log_t l = {0};
    assert_int_equal(decode_all(&l, CHUNK_FRAME, sizeof CHUNK_FRAME), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.m[0].n_headers, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(l.m[0].names[i], names[i]);
        assert_string_equal(l.m[0].values[i], values[i]);
    }
    assert_int_equal(l.m[0].payload_len, strlen(CHUNK_PAYLOAD));
    assert_memory_equal(l.m[0].payload, CHUNK_PAYLOAD, strlen(CHUNK_PAYLOAD));
    assert_string_equal(l.event_type, "chunk");
    log_free(&l);

    /* The empty message both ways. */
    m = es_encode(NULL, NULL, 0, NULL, 0, &len);
    assert_non_null(m);
    assert_int_equal(len, sizeof EMPTY_FRAME);
    assert_memory_equal(m, EMPTY_FRAME, sizeof EMPTY_FRAME);
    free(m);
    assert_int_equal(decode_all(&l, EMPTY_FRAME, sizeof EMPTY_FRAME), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.m[0].n_headers, 0);
    assert_int_equal(l.m[0].payload_len, 0);
    assert_null(l.event_type);
    log_free(&l);
}

/* Headers of every type are stepped over; only the string ones are reported, in order. */
static void test_all_header_types(void **state)
{
    (void)state;
    size_t n = sizeof MIXED_FRAME - 1;
    assert_int_equal(n, 169);
    for (size_t span = 0; span <= 7; span += 7) {
        log_t l = {0};
        es_decoder_t d;
        uint64_t seed = 7;
        assert_int_equal(decode_pieces(&d, &l, (const uint8_t *)MIXED_FRAME, n, span, &seed), 0);
        assert_true(es_decoder_idle(&d));
        assert_int_equal(d.messages, 1);
        es_decoder_free(&d);
        assert_int_equal(l.n, 1);
        assert_int_equal(l.m[0].n_headers, 3);
        assert_string_equal(l.m[0].names[0], ":event-type");
        assert_string_equal(l.m[0].values[0], "metadata");
        assert_string_equal(l.m[0].names[1], ":content-type");
        assert_string_equal(l.m[0].values[1], "application/json");
        assert_string_equal(l.m[0].names[2], "");
        assert_string_equal(l.m[0].values[2], "");
        assert_int_equal(l.m[0].payload_len, 11);
        assert_memory_equal(l.m[0].payload, "{\"ok\":true}", 11);
        log_free(&l);
    }
}

/* ---- Round trips ---- */

/* A stream of encoded messages and what they hold. */
typedef struct {
    bytes_t wire;               /* the messages, back to back */
    size_t n;                   /* how many */
    size_t n_headers[MAX_MSGS]; /* headers of each */
    size_t plen[MAX_MSGS];      /* payload length of each */
    uint8_t *payload[MAX_MSGS]; /* payload of each */
    size_t largest;             /* the largest message */
} sample_t;

static const char *const s_names[] = {":event-type", ":content-type", ":message-type",
                                      ":exception-type", "x"};
static const char *const s_values[] = {"contentBlockDelta", "application/json", "event",
                                       "throttlingException", ""};

/* Builds n messages of varied shapes: 0 to 5 headers, payloads from empty to 70 000 bytes. */
static sample_t sample_new(size_t n)
{
    static const size_t sizes[] = {0, 1, 23, 200, 4096, 70000, 11, 0, 1500};
    sample_t s = {0};
    uint64_t seed = 99;
    for (size_t i = 0; i < n; i++) {
        size_t nh = i % 6, pl = sizes[i % (sizeof sizes / sizeof sizes[0])];
        uint8_t *p = malloc(pl + 1);
        assert_non_null(p);
        for (size_t k = 0; k < pl; k++)
            p[k] = (uint8_t)rnd(&seed);
        size_t len = 0;
        uint8_t *m = es_encode(s_names, s_values, nh, p, pl, &len);
        assert_non_null(m);
        bytes_add(&s.wire, m, len);
        free(m);
        s.n_headers[i] = nh;
        s.plen[i] = pl;
        s.payload[i] = p;
        if (len > s.largest)
            s.largest = len;
    }
    s.n = n;
    return s;
}

/* Frees a sample. */
static void sample_free(sample_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->payload[i]);
    free(s->wire.p);
}

/* Checks that the log holds exactly the sample's messages. */
static void check_sample(const sample_t *s, const log_t *l)
{
    assert_int_equal(l->n, s->n);
    for (size_t i = 0; i < s->n; i++) {
        assert_int_equal(l->m[i].n_headers, s->n_headers[i]);
        for (size_t j = 0; j < s->n_headers[i]; j++) {
            assert_string_equal(l->m[i].names[j], s_names[j]);
            assert_string_equal(l->m[i].values[j], s_values[j]);
        }
        assert_int_equal(l->m[i].payload_len, s->plen[i]);
        if (s->plen[i])
            assert_memory_equal(l->m[i].payload, s->payload[i], s->plen[i]);
    }
}

/* Encoded messages decode to the same headers and payloads, whole, byte by byte, and in
 * random pieces; the buffer never grows past the largest message. */
static void test_round_trip_any_split(void **state)
{
    (void)state;
    sample_t s = sample_new(18);
    static const size_t spans[] = {0, 1, 3, 13, 64, 1000, 100000};
    uint64_t seed = 0x9E3779B97F4A7C15ULL;
    for (size_t k = 0; k < sizeof spans / sizeof spans[0]; k++) {
        for (int round = 0; round < (spans[k] > 1 ? 20 : 1); round++) {
            log_t l = {0};
            es_decoder_t d;
            assert_int_equal(decode_pieces(&d, &l, s.wire.p, s.wire.len, spans[k], &seed), 0);
            check_sample(&s, &l);
            assert_true(es_decoder_idle(&d));
            assert_int_equal(d.messages, s.n);
            assert_int_equal(d.error, 0);
            assert_true(d.cap <= s.largest);
            es_decoder_free(&d);
            assert_null(d.buf);
            log_free(&l);
        }
    }
    /* Cut once at every offset of the first messages. */
    size_t upto = 3000 < s.wire.len ? 3000 : s.wire.len;
    for (size_t cut = 1; cut < upto; cut++) {
        log_t l = {0};
        es_decoder_t d;
        es_decoder_init(&d, on_message, &l);
        assert_int_equal(es_decoder_feed(&d, s.wire.p, cut), 0);
        assert_int_equal(es_decoder_feed(&d, s.wire.p + cut, s.wire.len - cut), 0);
        check_sample(&s, &l);
        es_decoder_free(&d);
        log_free(&l);
    }
    sample_free(&s);
}

/* A feed of nothing, or of NULL with nothing, changes nothing; NULL with bytes is refused. */
static void test_feed_edges(void **state)
{
    (void)state;
    log_t l = {0};
    es_decoder_t d;
    es_decoder_init(&d, on_message, &l);
    assert_int_equal(es_decoder_feed(&d, NULL, 0), 0);
    assert_int_equal(es_decoder_feed(&d, CHUNK_FRAME, 0), 0);
    assert_int_equal(es_decoder_feed(&d, NULL, 5), -EINVAL);
    assert_int_equal(d.error, 0); /* a caller's mistake is not the stream's */
    assert_int_equal(es_decoder_feed(&d, CHUNK_FRAME, sizeof CHUNK_FRAME), 0);
    assert_int_equal(l.n, 1);
    es_decoder_free(&d);
    es_decoder_free(&d); /* twice is fine */
    es_decoder_free(NULL);
    log_free(&l);

    /* No callback: messages are still counted. */
    es_decoder_init(&d, NULL, NULL);
    assert_int_equal(es_decoder_feed(&d, CHUNK_FRAME, sizeof CHUNK_FRAME), 0);
    assert_int_equal(es_decoder_feed(&d, EMPTY_FRAME, sizeof EMPTY_FRAME), 0);
    assert_int_equal(d.messages, 2);
    es_decoder_free(&d);
}

/* ---- Corruption ---- */

/* Any one byte changed, in the prelude, the headers, the payload or either CRC, stops the
 * decoder with -EBADMSG; the message before it is read, nothing after it is. */
static void test_flipped_byte_any_position(void **state)
{
    (void)state;
    bytes_t w = {0};
    bytes_add(&w, EMPTY_FRAME, sizeof EMPTY_FRAME);
    size_t at = w.len;
    bytes_add(&w, CHUNK_FRAME, sizeof CHUNK_FRAME);
    bytes_add(&w, EMPTY_FRAME, sizeof EMPTY_FRAME);
    bytes_add(&w, CHUNK_FRAME, sizeof CHUNK_FRAME);
    uint64_t seed = 5;
    for (size_t i = 0; i < sizeof CHUNK_FRAME; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            w.p[at + i] ^= (uint8_t)(1u << bit);
            for (size_t span = 0; span <= 9; span += 9) {
                log_t l = {0};
                es_decoder_t d;
                int rc = decode_pieces(&d, &l, w.p, w.len, span, &seed);
                assert_int_equal(rc, -EBADMSG);
                assert_int_equal(d.error, -EBADMSG);
                assert_int_equal(l.n, 1);
                assert_int_equal(d.messages, 1);
                assert_false(es_decoder_idle(&d));
                /* Sticky: a good message after it is not read. */
                assert_int_equal(es_decoder_feed(&d, EMPTY_FRAME, sizeof EMPTY_FRAME), -EBADMSG);
                assert_int_equal(l.n, 1);
                es_decoder_free(&d);
                log_free(&l);
            }
            w.p[at + i] ^= (uint8_t)(1u << bit);
        }
    }
    log_t l = {0};
    assert_int_equal(decode_all(&l, w.p, w.len), 0); /* restored: all four */
    assert_int_equal(l.n, 4);
    log_free(&l);
    free(w.p);
}

/* Lengths out of bounds: over AWS's 16 MiB is -EMSGSIZE; shorter than a message, or headers
 * longer than the message has room for, is -EBADMSG (with correct CRCs in every case). */
static void test_lengths(void **state)
{
    (void)state;
    static const struct {
        uint32_t total, hlen;
        int want;
    } c[] = {
        {ES_MAX_MESSAGE + 1, 0, -EMSGSIZE},
        {0xffffffffu, 0, -EMSGSIZE},
        {15, 0, -EBADMSG},
        {0, 0, -EBADMSG},
        {ES_PRELUDE_LEN, 0, -EBADMSG},
        {16, 1, -EBADMSG},
        {100, 85, -EBADMSG},
        {100, 0xffffffffu, -EBADMSG},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        uint8_t pre[12];
        put32(pre, c[i].total);
        put32(pre + 4, c[i].hlen);
        put32(pre + 8, (uint32_t)crc32(0, pre, 8));
        for (size_t piece = 1; piece <= 12; piece += 11) {
            log_t l = {0};
            es_decoder_t d;
            es_decoder_init(&d, on_message, &l);
            int rc = 0;
            for (size_t pos = 0; pos < 12 && rc == 0; pos += piece)
                rc = es_decoder_feed(&d, pre + pos, piece);
            assert_int_equal(rc, c[i].want);
            assert_int_equal(es_decoder_feed(&d, EMPTY_FRAME, sizeof EMPTY_FRAME), c[i].want);
            assert_int_equal(l.n, 0);
            assert_true(d.cap <= ES_PRELUDE_LEN); /* nothing allocated for the claimed size */
            es_decoder_free(&d);
        }
    }

    /* Exactly 16 MiB is allowed, one byte more is not written. */
    size_t plen = ES_MAX_MESSAGE - ES_MIN_MESSAGE;
    uint8_t *big = calloc(1, plen + 1);
    assert_non_null(big);
    size_t len = 0;
    uint8_t *m = es_encode(NULL, NULL, 0, big, plen, &len);
    assert_non_null(m);
    assert_int_equal(len, ES_MAX_MESSAGE);
    log_t l = {0};
    assert_int_equal(decode_all(&l, m, len), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.m[0].payload_len, plen);
    log_free(&l);
    free(m);
    errno = 0;
    assert_null(es_encode(NULL, NULL, 0, big, plen + 1, &len));
    assert_int_equal(errno, EINVAL);
    const char *n1[] = {"a"}, *v1[] = {""};
    assert_null(es_encode(n1, v1, 1, big, plen, &len)); /* the header tips it over */
    assert_int_equal(errno, EINVAL);
    free(big);
}

/* Headers blocks that do not parse: -EBADMSG even though both CRCs are right. */
static void test_bad_headers(void **state)
{
    (void)state;
    static const struct {
        const char *why;
        const char *h;
        uint32_t len;
    } c[] = {
        {"unknown type 10", "\001a\012", 3},
        {"unknown type 255", "\001a\377", 3},
        {"name past the block", "\005ab", 3},
        {"no type byte", "\002ab", 3},
        {"string length past the block", "\001a\007\000\005abcd", 9},
        {"string length cut", "\001a\007\000", 4},
        {"byte array past the block", "\001a\006\001\000", 5},
        {"int cut", "\001a\004\000\000\000", 6},
        {"long cut", "\001a\005\000\000\000\000\000\000\000", 10},
        {"uuid cut", "\001a\0110123456789abcde", 18},
        {"timestamp cut", "\001a\0101234567", 10},
        {"second header cut", "\001a\000\001", 4},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        print_message("  %s\n", c[i].why);
        bytes_t b = frame(c[i].h, c[i].len, "{}", 2);
        log_t l = {0};
        assert_int_equal(decode_all(&l, b.p, b.len), -EBADMSG);
        assert_int_equal(l.n, 0);
        free(b.p);
    }
    /* The same shapes, complete, are fine. */
    static const struct {
        const char *h;
        uint32_t len;
        size_t strings;
    } ok[] = {
        {"\001a\007\000\004abcd", 9, 1},
        {"\001a\006\000\000", 5, 0},
        {"\001a\0110123456789abcdef", 19, 0},
        {"\001a\000\001b\001", 6, 0},
        {"", 0, 0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        bytes_t b = frame(ok[i].h, ok[i].len, "{}", 2);
        log_t l = {0};
        assert_int_equal(decode_all(&l, b.p, b.len), 0);
        assert_int_equal(l.n, 1);
        assert_int_equal(l.m[0].n_headers, ok[i].strings);
        assert_int_equal(l.m[0].payload_len, 2);
        log_free(&l);
        free(b.p);
    }
}

/* More string headers than ES_MAX_HEADERS: the first ones are kept, the rest still checked. */
static void test_many_headers(void **state)
{
    (void)state;
    enum { N = ES_MAX_HEADERS + 8 };
    char names[N][8];
    const char *np[N], *vp[N];
    for (size_t i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "h%zu", i);
        np[i] = names[i];
        vp[i] = names[i];
    }
    size_t len = 0;
    uint8_t *m = es_encode(np, vp, N, (const uint8_t *)"x", 1, &len);
    assert_non_null(m);
    log_t l = {0};
    assert_int_equal(decode_all(&l, m, len), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.m[0].n_headers, ES_MAX_HEADERS);
    assert_string_equal(l.m[0].names[ES_MAX_HEADERS - 1], names[ES_MAX_HEADERS - 1]);
    log_free(&l);
    free(m);
}

/* ---- Lookup, idle state, encoder limits ---- */

/* Values captured by the lookup callback. */
typedef struct {
    int calls;
} lookup_t;

/* Decoder callback: checks es_header_get on the chunk frame. */
static void on_lookup(void *arg, const es_message_t *m)
{
    lookup_t *t = arg;
    t->calls++;
    size_t len = 99;
    const char *v = es_header_get(m, ":message-type", &len);
    assert_non_null(v);
    assert_int_equal(len, 5);
    assert_memory_equal(v, "event", 5);
    assert_non_null(es_header_get(m, ":content-type", NULL)); /* len may be NULL */
    len = 99;
    assert_null(es_header_get(m, ":event", &len)); /* a prefix is not the name */
    assert_int_equal(len, 99);                     /* untouched */
    assert_null(es_header_get(m, ":event-type-x", &len));
    assert_null(es_header_get(m, ":Event-Type", &len)); /* exact bytes */
    assert_null(es_header_get(m, "", &len));
}

/* es_header_get finds the first header of a name, and nothing else. */
static void test_header_get(void **state)
{
    (void)state;
    lookup_t t = {0};
    es_decoder_t d;
    es_decoder_init(&d, on_lookup, &t);
    assert_int_equal(es_decoder_feed(&d, CHUNK_FRAME, sizeof CHUNK_FRAME), 0);
    assert_int_equal(t.calls, 1);
    es_decoder_free(&d);

    /* The first of two headers with the same name wins. */
    const char *names[] = {":event-type", ":event-type"};
    const char *values[] = {"first", "second"};
    size_t len = 0;
    uint8_t *m = es_encode(names, values, 2, NULL, 0, &len);
    assert_non_null(m);
    log_t l = {0};
    assert_int_equal(decode_all(&l, m, len), 0);
    assert_string_equal(l.event_type, "first");
    log_free(&l);
    free(m);
}

/* Idle at the start and on every message boundary, not inside a message nor after an error. */
static void test_idle(void **state)
{
    (void)state;
    log_t l = {0};
    es_decoder_t d;
    es_decoder_init(&d, on_message, &l);
    assert_true(es_decoder_idle(&d));
    for (size_t i = 0; i < sizeof CHUNK_FRAME; i++) {
        assert_int_equal(es_decoder_feed(&d, CHUNK_FRAME + i, 1), 0);
        assert_int_equal(es_decoder_idle(&d), i + 1 == sizeof CHUNK_FRAME);
    }
    assert_int_equal(es_decoder_feed(&d, CHUNK_FRAME, 11), 0);
    assert_false(es_decoder_idle(&d)); /* inside the prelude */
    assert_int_equal(es_decoder_feed(&d, CHUNK_FRAME + 11, 5), 0);
    assert_false(es_decoder_idle(&d));
    assert_int_equal(es_decoder_feed(&d, CHUNK_FRAME + 16, sizeof CHUNK_FRAME - 16), 0);
    assert_true(es_decoder_idle(&d));
    assert_int_equal(l.n, 2);
    uint8_t bad[sizeof EMPTY_FRAME];
    memcpy(bad, EMPTY_FRAME, sizeof bad);
    bad[15] ^= 1;
    assert_int_equal(es_decoder_feed(&d, bad, sizeof bad), -EBADMSG);
    assert_false(es_decoder_idle(&d));
    es_decoder_free(&d);
    log_free(&l);
}

/* The encoder's limits: 255-byte names and 65535-byte values are fine, one more is not. */
static void test_encode_limits(void **state)
{
    (void)state;
    char *name = malloc(257), *value = malloc(65537);
    assert_non_null(name);
    assert_non_null(value);
    memset(name, 'n', 256);
    memset(value, 'v', 65536);
    size_t len = 0;

    name[255] = '\0';
    value[65535] = '\0';
    const char *np[] = {name}, *vp[] = {value};
    uint8_t *m = es_encode(np, vp, 1, NULL, 0, &len);
    assert_non_null(m);
    assert_int_equal(len, ES_MIN_MESSAGE + 1 + 255 + 1 + 2 + 65535);
    log_t l = {0};
    assert_int_equal(decode_all(&l, m, len), 0);
    assert_int_equal(strlen(l.m[0].names[0]), 255);
    assert_int_equal(strlen(l.m[0].values[0]), 65535);
    log_free(&l);
    free(m);

    name[255] = 'n';
    name[256] = '\0';
    errno = 0;
    assert_null(es_encode(np, vp, 1, NULL, 0, &len));
    assert_int_equal(errno, EINVAL);
    name[255] = '\0';
    value[65535] = 'v';
    value[65536] = '\0';
    errno = 0;
    assert_null(es_encode(np, vp, 1, NULL, 0, &len));
    assert_int_equal(errno, EINVAL);

    const char *nul[] = {NULL};
    errno = 0;
    assert_null(es_encode(nul, vp, 1, NULL, 0, &len));
    assert_int_equal(errno, EINVAL);
    assert_null(es_encode(NULL, NULL, 1, NULL, 0, &len));
    assert_null(es_encode(NULL, NULL, 0, NULL, 3, &len)); /* payload NULL with a length */
    assert_null(es_encode(NULL, NULL, 0, NULL, 0, NULL));
    free(name);
    free(value);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_chunk_frame),
        cmocka_unit_test(test_all_header_types),
        cmocka_unit_test(test_round_trip_any_split),
        cmocka_unit_test(test_feed_edges),
        cmocka_unit_test(test_flipped_byte_any_position),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_many_headers),
        cmocka_unit_test(test_header_get),
        cmocka_unit_test(test_idle),
        cmocka_unit_test(test_encode_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
