/* bench_formats: what reading every vendor format costs the relay, in figures (no assertions).
 *
 * For each response format, a realistic streamed answer (N content pieces in the vendor's own
 * framing) is fed to lib/usage the way the gateway and the agent feed it (16 KiB reads), many
 * times over: MB/s and ns per event. Also AWS event-stream decoding alone, and a SigV4
 * signature over a 4 KiB Bedrock body (what the Bedrock adapter adds to each request).
 *   ninja -C build && build/tests/bench/bench_formats [SECONDS_PER_CASE]
 */
#include "eventstream.h"
#include "sigv4.h"
#include "usage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PIECES 400 /* content pieces per answer */

typedef struct {
    char *p;
    size_t len, cap;
} s_buf_t;

static void s_add(s_buf_t *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

/* Appends a formatted piece. */
#define S_ADDF(b, ...)                                                                           \
    do {                                                                                         \
        char line_[1024];                                                                        \
        int n_ = snprintf(line_, sizeof line_, __VA_ARGS__);                                     \
        s_add(b, line_, (size_t)n_);                                                             \
    } while (0)

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One answer per format, as the vendor frames it. */
static void s_openai(s_buf_t *b)
{
    for (int i = 0; i < PIECES; i++)
        S_ADDF(b, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
                  "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
                  "\" tok%d\"},\"finish_reason\":null}],\"usage\":null}\n\n", i);
    S_ADDF(b, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],"
              "\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":%d}}\n\n", PIECES);
    s_add(b, "data: [DONE]\n\n", 14);
}

static void s_anthropic(s_buf_t *b)
{
    S_ADDF(b, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\","
              "\"usage\":{\"input_tokens\":%d,\"output_tokens\":1}}}\n\n", 20);
    for (int i = 0; i < PIECES; i++)
        S_ADDF(b, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
                  "\"delta\":{\"type\":\"text_delta\",\"text\":\" tok%d\"}}\n\n", i);
    S_ADDF(b, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
              "\"end_turn\"},\"usage\":{\"output_tokens\":%d}}\n\n", PIECES);
    s_add(b, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n", 49);
}

static void s_gemini(s_buf_t *b)
{
    for (int i = 0; i < PIECES; i++)
        S_ADDF(b, "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" tok%d\"}],\"role\":"
                  "\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":20,"
                  "\"candidatesTokenCount\":%d,\"totalTokenCount\":99}}\r\n\r\n", i, i + 1);
    S_ADDF(b, "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"\"}],\"role\":\"model\"},"
              "\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":20,"
              "\"candidatesTokenCount\":%d,\"totalTokenCount\":%d}}\r\n\r\n", PIECES,
           PIECES + 20);
}

static void s_frame(s_buf_t *b, const char *type, const char *payload)
{
    const char *names[] = {":event-type", ":content-type", ":message-type"};
    const char *values[] = {type, "application/json", "event"};
    size_t n = 0;
    uint8_t *m = es_encode(names, values, 3, (const uint8_t *)payload, strlen(payload), &n);
    if (!m)
        abort();
    s_add(b, m, n);
    free(m);
}

static void s_converse(s_buf_t *b)
{
    char p[512];
    s_frame(b, "messageStart", "{\"role\":\"assistant\",\"p\":\"abcdefgh\"}");
    for (int i = 0; i < PIECES; i++) {
        snprintf(p, sizeof p, "{\"contentBlockIndex\":0,\"delta\":{\"text\":\" tok%d\"},"
                 "\"p\":\"abcdefghijklmnop\"}", i);
        s_frame(b, "contentBlockDelta", p);
    }
    s_frame(b, "contentBlockStop", "{\"contentBlockIndex\":0}");
    s_frame(b, "messageStop", "{\"stopReason\":\"end_turn\"}");
    snprintf(p, sizeof p, "{\"usage\":{\"inputTokens\":20,\"outputTokens\":%d,\"totalTokens\":99},"
             "\"metrics\":{\"latencyMs\":100}}", PIECES);
    s_frame(b, "metadata", p);
}

typedef struct {
    const char *name;
    usage_format_t fmt;
    void (*build)(s_buf_t *b);
} s_case_t;

static void s_run_usage(const s_case_t *c, double seconds)
{
    s_buf_t b = {0};
    c->build(&b);
    double t0 = s_now(), t = t0;
    uint64_t rounds = 0, events = 0;
    int64_t out = 0;
    while (t - t0 < seconds) {
        usage_sniffer_t *s = usage_new(c->fmt, true, 1u << 20);
        for (size_t off = 0; off < b.len; off += 16384) {
            size_t n = b.len - off < 16384 ? b.len - off : 16384;
            usage_feed(s, (const uint8_t *)b.p + off, n);
        }
        usage_finish(s);
        const usage_t *u = usage_get(s);
        events += u->events;
        out = u->output_tokens;
        usage_destroy(&s);
        rounds++;
        t = s_now();
    }
    double mb = (double)b.len * (double)rounds / 1e6 / (t - t0);
    printf("%-28s %8.1f MB/s  %7.0f ns/event  (%zu bytes, %d pieces, output read %lld)\n",
           c->name, mb, (t - t0) * 1e9 / (double)(events ? events : 1), b.len, PIECES,
           (long long)out);
    free(b.p);
}

static void s_count(void *arg, const es_message_t *m)
{
    (void)m;
    (*(uint64_t *)arg)++;
}

static void s_run_eventstream(double seconds)
{
    s_buf_t b = {0};
    s_converse(&b);
    double t0 = s_now(), t = t0;
    uint64_t rounds = 0, msgs = 0;
    while (t - t0 < seconds) {
        es_decoder_t d;
        es_decoder_init(&d, s_count, &msgs);
        es_decoder_feed(&d, (const uint8_t *)b.p, b.len);
        es_decoder_free(&d);
        rounds++;
        t = s_now();
    }
    printf("%-28s %8.1f MB/s  %7.0f ns/message (both CRCs checked)\n", "event-stream decode only",
           (double)b.len * (double)rounds / 1e6 / (t - t0), (t - t0) * 1e9 / (double)msgs);
    free(b.p);
}

static void s_run_sigv4(double seconds)
{
    static char body[4096];
    memset(body, 'x', sizeof body);
    sigv4_header_t h[] = {{"Host", "bedrock-runtime.us-east-1.amazonaws.com"},
                          {"Content-Type", "application/json"}};
    sigv4_request_t rq = {.method = "POST",
                          .path = "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse",
                          .headers = h, .n_headers = 2, .body = body, .body_len = sizeof body,
                          .now = 1700000000, .normalize = 1};
    sigv4_credentials_t cr = {.access_key_id = "AKIDEXAMPLE",
                              .secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                              .region = "us-east-1", .service = "bedrock"};
    double t0 = s_now(), t = t0;
    uint64_t n = 0;
    while (t - t0 < seconds) {
        sigv4_result_t *r = NULL;
        if (sigv4_sign(&rq, &cr, &r) != 0)
            abort();
        sigv4_result_destroy(&r);
        n++;
        t = s_now();
    }
    printf("%-28s %8.0f signatures/s  %5.1f us each (4 KiB body hashed)\n", "SigV4 (Bedrock)",
           (double)n / (t - t0), (t - t0) * 1e6 / (double)n);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    static const s_case_t cases[] = {
        {"usage: OpenAI chat SSE", USAGE_OPENAI_CHAT, s_openai},
        {"usage: Anthropic messages SSE", USAGE_ANTHROPIC_MESSAGES, s_anthropic},
        {"usage: Gemini SSE (CRLF)", USAGE_GEMINI, s_gemini},
        {"usage: Bedrock converse-stream", USAGE_BEDROCK_CONVERSE, s_converse},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        s_run_usage(&cases[i], seconds);
    s_run_eventstream(seconds);
    s_run_sigv4(seconds);
    return 0;
}
