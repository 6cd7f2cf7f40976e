/* usage: token usage sniffers for OpenAI, Azure OpenAI, Anthropic, Gemini and Bedrock
 * responses, streamed (SSE, or AWS event stream for Bedrock) or not. */
#include "usage.h"

#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "eventstream.h"
#include "sse.h"

#define S_MAP_KEYS 5 /* most token counts one vendor's usage object is read from */

/* How one vendor's usage object (or set of response headers) maps onto usage_t's figures. */
typedef struct {
    const char *keys[S_MAP_KEYS]; /* token counts read; absent or null ones count 0 */
    unsigned in;                  /* bit i set: keys[i] is part of input_tokens */
    unsigned out;                 /* bit i set: keys[i] is part of output_tokens */
    int cached;                   /* index of the cached-input count, -1 if none */
    unsigned required;            /* bit i set: keys[i] must be present */
} usage_map_t;

/* Reading state of an AWS event stream: the message being received (see s_es_feed). */
typedef struct {
    es_decoder_t dec;                /* checks the frames and hands out messages */
    uint8_t prelude[ES_PRELUDE_LEN]; /* the current message's first bytes, gathered */
    size_t prelude_len;              /* how many of them so far */
    uint64_t start;                  /* stream offset of the current message */
    uint64_t got;                    /* its bytes seen so far, prelude included */
    uint32_t total;                  /* its length, once the prelude is whole */
    bool skip;                       /* over max_bytes (or no memory): stepped over unread */
    bool stopped;                    /* a bad frame was seen: nothing more is read */
} es_reader_t;

struct usage_sniffer {
    usage_format_t fmt;       /* response format */
    bool streaming;           /* a stream (SSE, or event stream for Bedrock), else one body */
    bool finished;            /* usage_finish() was called */
    bool body_over;           /* the body went over max_bytes: it is not read */
    size_t max_bytes;         /* most bytes of one event (stream) or of the body */
    sse_parser_t *sse;        /* SSE stream parser, or NULL */
    es_reader_t *es;          /* event-stream reader (Bedrock streams), or NULL */
    uint8_t *body;            /* body gathered so far */
    uint8_t *tail;            /* over max_bytes: the body's last S_TAIL_MAX bytes */
    size_t tail_len;          /* their count */
    size_t body_len;          /* its length */
    size_t body_cap;          /* its allocation */
    uint64_t fed;             /* bytes fed so far */
    usage_event_fn ev_fn;     /* stream event callback, or NULL */
    void *ev_arg;             /* its argument */
    int64_t part[S_MAP_KEYS]; /* counts gathered across events (Anthropic stream: input from
                                 message_start, output from message_delta) or given as
                                 headers (Bedrock invoke), in the format's map order */
    unsigned part_set;        /* bit i set: part[i] was given */
    bool gemini_finished;     /* Gemini stream: a candidate's finishReason has been seen */
    usage_t u;                /* what has been read */
};

/* Returned by usage_get(NULL): all zero, nothing found. */
/* Of a body over max_bytes, the last bytes kept: its usage object is near its end in every
 * format (OpenAI, Anthropic, converse: "usage"; Gemini: the last "usageMetadata"). */
#define S_TAIL_MAX (64u * 1024)

static const usage_t s_none;

/* Anthropic Messages usage: input_tokens excludes both cache counts. */
static const usage_map_t s_map_anthropic = {
    .keys = {"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
             "output_tokens"},
    .in = 0x7,
    .out = 0x8,
    .cached = 2,
    .required = 0x9,
};

/* Gemini usageMetadata: promptTokenCount includes the cached part; candidatesTokenCount may be
 * absent (nothing generated, e.g. a blocked answer). */
static const usage_map_t s_map_gemini = {
    .keys = {"promptTokenCount", "toolUsePromptTokenCount", "cachedContentTokenCount",
             "candidatesTokenCount", "thoughtsTokenCount"},
    .in = 0x3,
    .out = 0x18,
    .cached = 2,
    .required = 0x1,
};

/* Bedrock converse usage (body and converse-stream metadata). */
static const usage_map_t s_map_converse = {
    .keys = {"inputTokens", "cacheReadInputTokens", "cacheWriteInputTokens", "outputTokens"},
    .in = 0x7,
    .out = 0x8,
    .cached = 1,
    .required = 0x9,
};

/* Bedrock invoke-with-response-stream: amazon-bedrock-invocationMetrics. */
static const usage_map_t s_map_invocation = {
    .keys = {"inputTokenCount", "cacheReadInputTokenCount", "cacheWriteInputTokenCount",
             "outputTokenCount"},
    .in = 0x7,
    .out = 0x8,
    .cached = 1,
    .required = 0x9,
};

/* Bedrock invoke: the response headers (names compared case-insensitively). */
static const usage_map_t s_map_invoke_headers = {
    .keys = {"x-amzn-bedrock-input-token-count", "x-amzn-bedrock-cache-read-input-token-count",
             "x-amzn-bedrock-cache-write-input-token-count", "x-amzn-bedrock-output-token-count"},
    .in = 0x7,
    .out = 0x8,
    .cached = 1,
    .required = 0x9,
};

/* Text delta events of the responses API whose "delta" is generated content. */
static const char *const s_text_deltas[] = {
    "response.output_text.delta",
    "response.refusal.delta",
    "response.reasoning_text.delta",
    "response.reasoning_summary_text.delta",
    "response.function_call_arguments.delta",
    "response.custom_tool_call_input.delta",
    "response.mcp_call_arguments.delta",
    "response.code_interpreter_call_code.delta",
    "response.audio.transcript.delta",
};

/* Counts the Unicode code points of n bytes of UTF-8 (jansson has checked the encoding). */
static int64_t s_utf8_chars(const char *p, size_t n)
{
    int64_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)p[i] & 0xC0) != 0x80;
    return c;
}

/* Code points of obj[key] if it is a string, else 0. */
static int64_t s_str_chars(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? s_utf8_chars(json_string_value(v), json_string_length(v)) : 0;
}

/* Reads a token count obj[key]: 1 and *out set, 0 if absent or null, -1 if not a count. */
static int s_tokens(const json_t *obj, const char *key, int64_t *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = (int64_t)json_integer_value(v);
    return 1;
}

/* Reads a usage object in the sniffer's format; a usage it cannot read counts as malformed. */
static void s_read_usage(usage_sniffer_t *s, const json_t *usage)
{
    bool resp = s->fmt == USAGE_OPENAI_RESPONSES;
    int64_t in = 0, out = 0, cached = 0;
    int a = s_tokens(usage, resp ? "input_tokens" : "prompt_tokens", &in);
    int b = s_tokens(usage, resp ? "output_tokens" : "completion_tokens", &out);
    const json_t *det =
        json_object_get(usage, resp ? "input_tokens_details" : "prompt_tokens_details");
    int c = s_tokens(det, "cached_tokens", &cached);
    /* Embeddings have no output count; everything else must have both. */
    bool out_ok = s->fmt == USAGE_OPENAI_EMBEDDINGS ? b >= 0 : b == 1;
    if (a != 1 || !out_ok || c < 0) {
        s->u.malformed++;
        return;
    }
    s->u.input_tokens = in;
    s->u.output_tokens = out;
    s->u.cached_input_tokens = cached;
    s->u.found = true;
}

/* Counts the generated text of chat or completions choices (streamed deltas or messages). */
static void s_choices_chars(usage_sniffer_t *s, const json_t *choices)
{
    for (size_t i = 0; i < json_array_size(choices); i++) {
        const json_t *ch = json_array_get(choices, i);
        s->u.output_chars += s_str_chars(ch, "text"); /* completions */
        const json_t *m = json_object_get(ch, "delta");
        if (!m)
            m = json_object_get(ch, "message");
        if (!json_is_object(m))
            continue;
        s->u.output_chars += s_str_chars(m, "content") + s_str_chars(m, "refusal") +
                             s_str_chars(m, "reasoning_content");
        s->u.output_chars += s_str_chars(json_object_get(m, "function_call"), "arguments");
        const json_t *calls = json_object_get(m, "tool_calls");
        for (size_t j = 0; j < json_array_size(calls); j++) {
            const json_t *fn = json_object_get(json_array_get(calls, j), "function");
            s->u.output_chars += s_str_chars(fn, "arguments");
        }
    }
}

/* Reads a chat/completions/embeddings chunk or body; true if it is a usage-only chunk. */
static bool s_chat_object(usage_sniffer_t *s, const json_t *root)
{
    if (json_is_object(json_object_get(root, "error")))
        s->u.vendor_errors++;
    const json_t *choices = json_object_get(root, "choices");
    if (json_is_array(choices))
        s_choices_chars(s, choices);
    const json_t *usage = json_object_get(root, "usage");
    if (!json_is_object(usage))
        return false; /* "usage": null on ordinary chunks; Azure's filter chunk has none */
    s_read_usage(s, usage);
    return !choices || json_is_null(choices) ||
           (json_is_array(choices) && json_array_size(choices) == 0);
}

/* Counts the generated text of a responses body's output items. */
static void s_output_chars(usage_sniffer_t *s, const json_t *output)
{
    for (size_t i = 0; i < json_array_size(output); i++) {
        const json_t *item = json_array_get(output, i);
        const json_t *content = json_object_get(item, "content");
        const json_t *summary = json_object_get(item, "summary");
        s->u.output_chars += s_str_chars(item, "arguments");
        for (size_t j = 0; j < json_array_size(content); j++) {
            const json_t *part = json_array_get(content, j);
            s->u.output_chars += s_str_chars(part, "text") + s_str_chars(part, "refusal");
        }
        for (size_t j = 0; j < json_array_size(summary); j++)
            s->u.output_chars += s_str_chars(json_array_get(summary, j), "text");
    }
}

/* Reads one event of a responses stream (its type from the JSON, else the SSE event name). */
static void s_responses_event(usage_sniffer_t *s, const json_t *root, const char *ev_name)
{
    const char *type = json_string_value(json_object_get(root, "type"));
    if (!type)
        type = ev_name;
    if (strcmp(type, "response.completed") == 0 || strcmp(type, "response.incomplete") == 0 ||
        strcmp(type, "response.failed") == 0) {
        s->u.done = true;
        if (strcmp(type, "response.failed") == 0)
            s->u.vendor_errors++;
        const json_t *usage = json_object_get(json_object_get(root, "response"), "usage");
        if (json_is_object(usage))
            s_read_usage(s, usage);
        return;
    }
    if (strcmp(type, "error") == 0) {
        s->u.vendor_errors++;
        return;
    }
    for (size_t i = 0; i < sizeof s_text_deltas / sizeof s_text_deltas[0]; i++) {
        if (strcmp(type, s_text_deltas[i]) == 0) {
            s->u.output_chars += s_str_chars(root, "delta");
            return;
        }
    }
}

/* ---- Usage maps: one vendor's counts onto the figures ---- */

/* Adds v to *acc; false if the sum would overflow. */
static bool s_add(int64_t *acc, int64_t v)
{
    if (v > INT64_MAX - *acc)
        return false;
    *acc += v;
    return true;
}

/* Reads the counts of map's keys selected by mask from obj into v (present bits into *set);
 * absent or null ones are left as they are. false if one is not a count. */
static bool s_map_read(const usage_map_t *map, const json_t *obj, unsigned mask, int64_t *v,
                       unsigned *set)
{
    for (int i = 0; i < S_MAP_KEYS && map->keys[i]; i++) {
        if (!(mask & 1u << i))
            continue;
        int r = s_tokens(obj, map->keys[i], &v[i]);
        if (r < 0)
            return false;
        if (r == 1)
            *set |= 1u << i;
    }
    return true;
}

/* Sets the figures from counts v given through map: 1 (found), 0 (a required count is
 * missing: nothing set), -1 (a sum overflows: nothing set). */
static int s_map_apply(usage_sniffer_t *s, const usage_map_t *map, const int64_t *v, unsigned set)
{
    if ((set & map->required) != map->required)
        return 0;
    int64_t in = 0, out = 0;
    for (int i = 0; i < S_MAP_KEYS; i++) {
        int64_t x = set & 1u << i ? v[i] : 0;
        if ((map->in & 1u << i && !s_add(&in, x)) || (map->out & 1u << i && !s_add(&out, x)))
            return -1;
    }
    s->u.input_tokens = in;
    s->u.output_tokens = out;
    s->u.cached_input_tokens = map->cached >= 0 && set & 1u << map->cached ? v[map->cached] : 0;
    s->u.found = true;
    return 1;
}

/* Reads a whole usage object through map: found, or counted malformed. */
static bool s_map_usage(usage_sniffer_t *s, const usage_map_t *map, const json_t *usage)
{
    int64_t v[S_MAP_KEYS] = {0};
    unsigned set = 0;
    if (s_map_read(map, usage, ~0u, v, &set) && s_map_apply(s, map, v, set) == 1)
        return true;
    s->u.malformed++;
    return false;
}

/* Code points of a generated value: a string's own, or those of a structured value (a tool's
 * input object) written as compact JSON. */
static int64_t s_value_chars(const json_t *v)
{
    if (json_is_string(v))
        return s_utf8_chars(json_string_value(v), json_string_length(v));
    if (!json_is_object(v) && !json_is_array(v))
        return 0;
    char *text = json_dumps(v, JSON_COMPACT);
    int64_t n = text ? s_utf8_chars(text, strlen(text)) : 0;
    free(text);
    return n;
}

/* ---- Anthropic Messages ---- */

/* True for an Anthropic error object: {"type":"error","error":{...}}. */
static bool s_anthropic_error(const json_t *root)
{
    const char *type = json_string_value(json_object_get(root, "type"));
    return (type && strcmp(type, "error") == 0) || json_is_object(json_object_get(root, "error"));
}

/* Counts the generated content of a message's blocks: text, thinking, tool inputs. */
static void s_anthropic_content_chars(usage_sniffer_t *s, const json_t *content)
{
    for (size_t i = 0; i < json_array_size(content); i++) {
        const json_t *block = json_array_get(content, i);
        s->u.output_chars += s_str_chars(block, "text") + s_str_chars(block, "thinking") +
                             s_value_chars(json_object_get(block, "input"));
    }
}

/* The type of a stream event: its JSON "type", else the SSE event name. */
static const char *s_event_type(const json_t *root, const char *ev_name)
{
    const char *type = json_string_value(json_object_get(root, "type"));
    return type ? type : ev_name ? ev_name : "";
}

/* Counts a stream event's generated text (content_block_delta) and its errors; returns its
 * type. Shared with Bedrock's invoke stream, whose chunks are these events. */
static const char *s_anthropic_event_chars(usage_sniffer_t *s, const json_t *root,
                                           const char *ev_name)
{
    const char *type = s_event_type(root, ev_name);
    if (strcmp(type, "content_block_delta") == 0) {
        const json_t *d = json_object_get(root, "delta");
        s->u.output_chars +=
            s_str_chars(d, "text") + s_str_chars(d, "partial_json") + s_str_chars(d, "thinking");
    } else if (strcmp(type, "error") == 0) {
        s->u.vendor_errors++;
    }
    return type;
}

/* Gathers the usage of message_start (the input counts only: its output_tokens, 1, is a
 * placeholder) or message_delta (output_tokens, the final total, and on newer answers the input
 * counts again); the figures are set once the output count has come. */
static void s_anthropic_usage(usage_sniffer_t *s, const json_t *usage, bool delta)
{
    unsigned mask = delta ? ~0u : s_map_anthropic.in;
    if (!json_is_object(usage) ||
        !s_map_read(&s_map_anthropic, usage, mask, s->part, &s->part_set)) {
        s->u.malformed++;
        return;
    }
    if (delta && s_map_apply(s, &s_map_anthropic, s->part, s->part_set) != 1)
        s->u.malformed++;
}

/* Reads one event of an Anthropic Messages stream. */
static void s_anthropic_event(usage_sniffer_t *s, const json_t *root, const char *ev_name)
{
    const char *type = s_anthropic_event_chars(s, root, ev_name);
    if (strcmp(type, "message_start") == 0)
        s_anthropic_usage(s, json_object_get(json_object_get(root, "message"), "usage"), false);
    else if (strcmp(type, "message_delta") == 0)
        s_anthropic_usage(s, json_object_get(root, "usage"), true);
    else if (strcmp(type, "message_stop") == 0)
        s->u.done = true;
}

/* Reads an Anthropic Messages body (a message, or an error). */
static void s_anthropic_body(usage_sniffer_t *s, const json_t *root)
{
    if (s_anthropic_error(root)) {
        s->u.vendor_errors++;
        return;
    }
    s_anthropic_content_chars(s, json_object_get(root, "content"));
    const json_t *usage = json_object_get(root, "usage");
    if (json_is_object(usage))
        (void)s_map_usage(s, &s_map_anthropic, usage);
}

/* ---- Gemini ---- */

/* Counts candidates[].content.parts[].text and errors of one GenerateContentResponse; true if a
 * candidate carries a finishReason (the answer's last chunk). */
static bool s_gemini_content(usage_sniffer_t *s, const json_t *root)
{
    if (json_is_object(json_object_get(root, "error")))
        s->u.vendor_errors++;
    const json_t *cands = json_object_get(root, "candidates");
    bool finished = false;
    for (size_t i = 0; i < json_array_size(cands); i++) {
        const json_t *cand = json_array_get(cands, i);
        const json_t *parts = json_object_get(json_object_get(cand, "content"), "parts");
        for (size_t j = 0; j < json_array_size(parts); j++)
            s->u.output_chars += s_str_chars(json_array_get(parts, j), "text");
        finished = finished || json_is_string(json_object_get(cand, "finishReason"));
    }
    return finished;
}

/* Reads one event of a Gemini SSE stream. usageMetadata is cumulative and on every chunk: only
 * one read at or after a finishReason holds the totals (an earlier one would bill a cut stream
 * on partial figures as if they were final). */
static void s_gemini_event(usage_sniffer_t *s, const json_t *root)
{
    if (s_gemini_content(s, root))
        s->gemini_finished = true;
    const json_t *meta = json_object_get(root, "usageMetadata");
    if (s->gemini_finished && json_is_object(meta) && s_map_usage(s, &s_map_gemini, meta))
        s->u.done = true;
}

/* Reads a Gemini body that is one GenerateContentResponse. */
static void s_gemini_body(usage_sniffer_t *s, const json_t *root)
{
    (void)s_gemini_content(s, root);
    const json_t *meta = json_object_get(root, "usageMetadata");
    if (json_is_object(meta))
        (void)s_map_usage(s, &s_map_gemini, meta);
}

/* Skips JSON whitespace from *i in p[0, n). */
static void s_skip_ws(const uint8_t *p, size_t n, size_t *i)
{
    while (*i < n && (p[*i] == ' ' || p[*i] == '\t' || p[*i] == '\n' || p[*i] == '\r'))
        (*i)++;
}

/* True if only whitespace follows offset i of p[0, n). */
static bool s_only_ws(const uint8_t *p, size_t n, size_t i)
{
    s_skip_ws(p, n, &i);
    return i == n;
}

/* Reads one element of a Gemini array body: its text and errors; keeps its usageMetadata in
 * *meta (replacing an earlier one). */
static void s_gemini_element(usage_sniffer_t *s, const json_t *el, json_t **meta)
{
    (void)s_gemini_content(s, el);
    json_t *m = json_object_get(el, "usageMetadata");
    if (json_is_object(m)) {
        json_decref(*meta);
        *meta = json_incref(m);
    }
}

/* Reads the elements of a Gemini array body from offset i (just past its '['), one at a time,
 * so that an array cut short still counts the text of its whole elements. True if the array
 * is whole. */
static bool s_gemini_elements(usage_sniffer_t *s, size_t i, json_t **meta)
{
    const uint8_t *p = s->body;
    size_t n = s->body_len;
    s_skip_ws(p, n, &i);
    if (i < n && p[i] == ']')
        return s_only_ws(p, n, i + 1);
    for (;;) {
        json_error_t jerr;
        /* DISABLE_EOF_CHECK: decode one object and say where it ended (jerr.position). */
        json_t *el = json_loadb((const char *)p + i, n - i, JSON_DISABLE_EOF_CHECK, &jerr);
        if (!json_is_object(el)) {
            json_decref(el);
            return false;
        }
        i += (size_t)jerr.position;
        s_gemini_element(s, el, meta);
        json_decref(el);
        s_skip_ws(p, n, &i);
        if (i >= n || (p[i] != ',' && p[i] != ']'))
            return false;
        if (p[i++] == ']')
            return s_only_ws(p, n, i);
    }
}

/* Reads a Gemini body that is a JSON array of GenerateContentResponse (streamGenerateContent
 * without alt=sse) starting at offset i. The totals are in the last element with
 * usageMetadata, read only if the array is whole: a cut one holds partial, cumulative figures. */
static void s_gemini_array(usage_sniffer_t *s, size_t i)
{
    json_t *meta = NULL;
    if (!s_gemini_elements(s, i + 1, &meta)) {
        s->u.malformed++;
    } else {
        s->u.done = true;
        if (meta)
            (void)s_map_usage(s, &s_map_gemini, meta);
    }
    json_decref(meta);
}

/* ---- Bedrock ---- */

/* True for an AWS error body: {"message": "..."} (a model's or converse's answer never has a
 * top-level string "message"). */
static bool s_aws_error(const json_t *root)
{
    return json_is_string(json_object_get(root, "message"));
}

/* Counts the generated content of converse content blocks (or stream deltas): text, reasoning
 * text, tool input (a string in deltas, an object in a body). */
static void s_converse_chars(usage_sniffer_t *s, const json_t *block)
{
    const json_t *reasoning = json_object_get(block, "reasoningContent");
    const json_t *reasoning_text = json_object_get(reasoning, "reasoningText");
    s->u.output_chars += s_str_chars(block, "text") + s_str_chars(reasoning, "text") +
                         s_str_chars(reasoning_text, "text") +
                         s_value_chars(json_object_get(json_object_get(block, "toolUse"), "input"));
}

/* Reads a Bedrock converse body. */
static void s_converse_body(usage_sniffer_t *s, const json_t *root)
{
    if (s_aws_error(root))
        s->u.vendor_errors++;
    const json_t *content =
        json_object_get(json_object_get(json_object_get(root, "output"), "message"), "content");
    for (size_t i = 0; i < json_array_size(content); i++)
        s_converse_chars(s, json_array_get(content, i));
    const json_t *usage = json_object_get(root, "usage");
    if (json_is_object(usage))
        (void)s_map_usage(s, &s_map_converse, usage);
}

/* Reads a Bedrock invoke body: the model's own JSON (Anthropic Messages for Claude) for output
 * characters and errors; the figures come from the headers (usage_header). */
static void s_invoke_body(usage_sniffer_t *s, const json_t *root)
{
    if (s_aws_error(root) || s_anthropic_error(root))
        s->u.vendor_errors++;
    else
        s_anthropic_content_chars(s, json_object_get(root, "content"));
}

/* Reads one converse-stream event: text deltas, and the usage in "metadata" (the last event). */
static void s_converse_event(usage_sniffer_t *s, const char *type, const json_t *root)
{
    if (strcmp(type, "contentBlockDelta") == 0) {
        s_converse_chars(s, json_object_get(root, "delta"));
    } else if (strcmp(type, "metadata") == 0) {
        if (s_map_usage(s, &s_map_converse, json_object_get(root, "usage")))
            s->u.done = true;
    }
}

/* Decodes a base64 string into a new JSON document, or NULL. */
static json_t *s_base64_json(const json_t *b64)
{
    if (!json_is_string(b64))
        return NULL;
    size_t n = json_string_length(b64), bin_len = 0;
    uint8_t *bin = malloc(n / 4 * 3 + 3);
    json_t *doc = NULL;
    if (bin && sodium_base642bin(bin, n / 4 * 3 + 3, json_string_value(b64), n, NULL, &bin_len,
                                 NULL, sodium_base64_VARIANT_ORIGINAL) == 0) {
        json_error_t jerr;
        doc = json_loadb((const char *)bin, bin_len, 0, &jerr);
    }
    free(bin);
    return doc;
}

/* Reads one invoke-with-response-stream "chunk": {"bytes": base64 of one model event}. For
 * Claude the event is an Anthropic Messages stream event (output characters); the last one
 * carries amazon-bedrock-invocationMetrics, Bedrock's own figures. */
static void s_invoke_chunk(usage_sniffer_t *s, const char *type, const json_t *root)
{
    if (strcmp(type, "chunk") != 0)
        return;
    json_t *ev = s_base64_json(json_object_get(root, "bytes"));
    if (!json_is_object(ev)) {
        s->u.malformed++;
        json_decref(ev);
        return;
    }
    (void)s_anthropic_event_chars(s, ev, NULL);
    const json_t *metrics = json_object_get(ev, "amazon-bedrock-invocationMetrics");
    if (json_is_object(metrics) && s_map_usage(s, &s_map_invocation, metrics))
        s->u.done = true;
    json_decref(ev);
}

/* Reads one event-stream message of a Bedrock stream. Non-event messages ("exception" with
 * :exception-type, or the protocol's "error") are the vendor's errors. */
static void s_bedrock_message(usage_sniffer_t *s, const es_message_t *m)
{
    size_t len = 0;
    const char *mtype = es_header_get(m, ":message-type", &len);
    if (mtype && !(len == 5 && memcmp(mtype, "event", 5) == 0)) {
        s->u.vendor_errors++;
        return;
    }
    const char *etype = es_header_get(m, ":event-type", &len);
    char type[64];
    json_error_t jerr;
    json_t *root = json_loadb((const char *)m->payload, m->payload_len, 0, &jerr);
    if (!etype || len >= sizeof type || !json_is_object(root)) {
        s->u.malformed++;
        json_decref(root);
        return;
    }
    memcpy(type, etype, len);
    type[len] = '\0';
    if (s->fmt == USAGE_BEDROCK_CONVERSE)
        s_converse_event(s, type, root);
    else
        s_invoke_chunk(s, type, root);
    json_decref(root);
}

/* ---- AWS event streams ---- */

/* Decoder callback: reads one message and tells the relay where it lies. */
static void s_on_message(void *arg, const es_message_t *m)
{
    usage_sniffer_t *s = arg;
    s->u.events++;
    s_bedrock_message(s, m);
    if (s->ev_fn) {
        usage_event_t ue = {.start = s->es->start, .end = s->es->start + s->es->total};
        s->ev_fn(s->ev_arg, &ue);
    }
}

/* A bad frame: counted once, and nothing more of the stream is read (the relay goes on). */
static void s_es_stop(usage_sniffer_t *s)
{
    s->es->stopped = true;
    s->u.malformed++;
    es_decoder_free(&s->es->dec);
}

/* Steps over the rest of the current message unread; the decoder starts afresh at the next. */
static int s_es_skip(usage_sniffer_t *s, int rc)
{
    es_decoder_free(&s->es->dec);
    es_decoder_init(&s->es->dec, s_on_message, s);
    s->es->skip = true;
    if (rc == -EMSGSIZE)
        s->u.oversize++;
    return rc;
}

/* The prelude is whole: the decoder checks it; a message over max_bytes (or AWS's limit) is
 * stepped over. */
static int s_es_prelude(usage_sniffer_t *s)
{
    es_reader_t *r = s->es;
    const uint8_t *p = r->prelude;
    r->total = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    int rc = es_decoder_feed(&r->dec, p, ES_PRELUDE_LEN);
    if (rc == -EBADMSG) {
        s_es_stop(s);
        return 0;
    }
    if (rc < 0 || r->total > s->max_bytes)
        return s_es_skip(s, rc == -ENOMEM ? -ENOMEM : -EMSGSIZE);
    return 0;
}

/* Feeds the decoder n more bytes of the current message. */
static int s_es_body(usage_sniffer_t *s, const uint8_t *buf, size_t n)
{
    int rc = es_decoder_feed(&s->es->dec, buf, n);
    if (rc == -EBADMSG)
        s_es_stop(s);
    else if (rc < 0)
        return s_es_skip(s, rc);
    return 0;
}

/* Feeds event-stream bytes to the decoder one message at a time: the reader follows the message
 * boundaries itself, so that when the decoder hands a message out its stream offsets are known
 * (es_message_t does not carry them), and so that a message over max_bytes is stepped over
 * without being gathered. Returns 0, or -EMSGSIZE/-ENOMEM for a message stepped over. */
static int s_es_feed(usage_sniffer_t *s, const uint8_t *buf, size_t len)
{
    es_reader_t *r = s->es;
    int rc = 0;
    while (len > 0 && !r->stopped) {
        size_t n;
        int step = 0;
        if (r->prelude_len < ES_PRELUDE_LEN) {
            n = ES_PRELUDE_LEN - r->prelude_len < len ? ES_PRELUDE_LEN - r->prelude_len : len;
            memcpy(r->prelude + r->prelude_len, buf, n);
            r->prelude_len += n;
            if (r->prelude_len == ES_PRELUDE_LEN)
                step = s_es_prelude(s);
        } else {
            n = r->total - r->got < len ? (size_t)(r->total - r->got) : len;
            if (!r->skip)
                step = s_es_body(s, buf, n);
        }
        rc = step < 0 ? step : rc;
        r->got += n;
        buf += n;
        len -= n;
        if (r->prelude_len == ES_PRELUDE_LEN && r->got == r->total) {
            r->start += r->total; /* the next message starts here */
            r->got = r->total = 0;
            r->prelude_len = 0;
            r->skip = false;
        }
    }
    return rc;
}

/* ---- SSE streams and bodies ---- */

/* True for the OpenAI formats (OpenAI and Azure OpenAI), whose streams end with [DONE]. */
static bool s_openai(usage_format_t fmt)
{
    return fmt <= USAGE_OPENAI_RESPONSES;
}

/* Reads one SSE event's JSON in the sniffer's format; true for an OpenAI usage-only chunk. */
static bool s_stream_object(usage_sniffer_t *s, const json_t *root, const char *ev_name)
{
    switch (s->fmt) {
    case USAGE_OPENAI_RESPONSES:
        s_responses_event(s, root, ev_name);
        return false;
    case USAGE_ANTHROPIC_MESSAGES:
        s_anthropic_event(s, root, ev_name);
        return false;
    case USAGE_GEMINI:
        s_gemini_event(s, root);
        return false;
    default:
        return s_chat_object(s, root);
    }
}

/* SSE callback: reads one stream event and tells the relay what it was. */
static int s_on_event(void *arg, const sse_event_t *ev)
{
    usage_sniffer_t *s = arg;
    bool usage_only = false;
    s->u.events++;
    if (s_openai(s->fmt) && ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0) {
        s->u.done = true;
    } else {
        json_error_t jerr;
        json_t *root = json_loadb(ev->data, ev->data_len, 0, &jerr);
        if (!json_is_object(root))
            s->u.malformed++;
        else
            usage_only = s_stream_object(s, root, ev->event);
        json_decref(root);
    }
    if (s->ev_fn) {
        usage_event_t ue = {.start = ev->start, .end = ev->end, .usage_only = usage_only};
        s->ev_fn(s->ev_arg, &ue);
    }
    return 0;
}

/* Reads a responses body: its output items and its usage. */
static void s_responses_body(usage_sniffer_t *s, const json_t *root)
{
    if (json_is_object(json_object_get(root, "error")))
        s->u.vendor_errors++;
    s_output_chars(s, json_object_get(root, "output"));
    const json_t *usage = json_object_get(root, "usage");
    if (json_is_object(usage))
        s_read_usage(s, usage);
}

/* Reads a whole body (a JSON object) in the sniffer's format. */
static void s_body_object(usage_sniffer_t *s, const json_t *root)
{
    switch (s->fmt) {
    case USAGE_OPENAI_RESPONSES:
        s_responses_body(s, root);
        break;
    case USAGE_ANTHROPIC_MESSAGES:
        s_anthropic_body(s, root);
        break;
    case USAGE_GEMINI:
        s_gemini_body(s, root);
        break;
    case USAGE_BEDROCK_CONVERSE:
        s_converse_body(s, root);
        break;
    case USAGE_BEDROCK_INVOKE:
        s_invoke_body(s, root);
        break;
    default:
        (void)s_chat_object(s, root);
    }
}

/* Reads a whole non-streamed body: a JSON object, or for Gemini also an array of them. */
static void s_read_body(usage_sniffer_t *s)
{
    size_t i = 0;
    s_skip_ws(s->body, s->body_len, &i);
    if (s->fmt == USAGE_GEMINI && i < s->body_len && s->body[i] == '[') {
        s_gemini_array(s, i);
        return;
    }
    json_error_t jerr;
    json_t *root = json_loadb((const char *)s->body, s->body_len, 0, &jerr);
    if (!json_is_object(root)) {
        s->u.malformed++;
        json_decref(root);
        return;
    }
    s->u.done = true;
    s_body_object(s, root);
    json_decref(root);
}

/* Gives up on the body (too long, or no memory): it will not be read. */
/* Appends to the tail window of a body over max_bytes, keeping its last S_TAIL_MAX bytes. */
static void s_tail_add(usage_sniffer_t *s, const uint8_t *buf, size_t len)
{
    if (!s->tail && !(s->tail = malloc(S_TAIL_MAX)))
        return;
    if (len >= S_TAIL_MAX) {
        memcpy(s->tail, buf + len - S_TAIL_MAX, S_TAIL_MAX);
        s->tail_len = S_TAIL_MAX;
        return;
    }
    if (s->tail_len + len > S_TAIL_MAX) {
        size_t drop = s->tail_len + len - S_TAIL_MAX;
        memmove(s->tail, s->tail + drop, s->tail_len - drop);
        s->tail_len -= drop;
    }
    memcpy(s->tail + s->tail_len, buf, len);
    s->tail_len += len;
}

/* A body over max_bytes is not parsed; its usage is read from the last occurrence of its key
 * in the tail window (a key of a JSON object: inside a string a quote is always escaped, so
 * '"usage":' cannot be string content), parsed as one JSON value and handed to the format's
 * body reader as {key: value}. The figures are the vendor's (found); done stays unknown. */
static void s_read_tail(usage_sniffer_t *s)
{
    const char *key = s->fmt == USAGE_GEMINI ? "usageMetadata" : "usage";
    char needle[32];
    int nl = snprintf(needle, sizeof needle, "\"%s\":", key);
    const uint8_t *last = NULL;
    for (const uint8_t *p = s->tail;
         (p = memmem(p, s->tail_len - (size_t)(p - s->tail), needle, (size_t)nl)) != NULL; p++)
        last = p;
    if (!last || (last > s->tail && last[-1] == '\\'))
        return;
    const uint8_t *v = last + nl;
    json_error_t jerr;
    json_t *value = json_loadb((const char *)v, s->tail_len - (size_t)(v - s->tail),
                               JSON_DISABLE_EOF_CHECK, &jerr);
    if (!json_is_object(value)) {
        json_decref(value);
        return;
    }
    json_t *root = json_object();
    if (root && json_object_set_new(root, key, value) == 0)
        s_body_object(s, root);
    else
        json_decref(value);
    json_decref(root);
}

static int s_body_drop(usage_sniffer_t *s, int rc)
{
    s->body_over = true;
    if (rc == -EMSGSIZE)
        s->u.oversize++;
    if (rc == -EMSGSIZE && s->body_len)
        s_tail_add(s, s->body, s->body_len); /* the tail window starts with what was gathered */
    free(s->body);
    s->body = NULL;
    s->body_len = s->body_cap = 0;
    return rc;
}

/* Appends body bytes, up to max_bytes; past it the body is dropped and never read. */
static int s_body_add(usage_sniffer_t *s, const uint8_t *buf, size_t len)
{
    if (s->body_over) {
        if (s->u.oversize)
            s_tail_add(s, buf, len);
        return 0;
    }
    if (len > s->max_bytes - s->body_len) {
        int rc = s_body_drop(s, -EMSGSIZE);
        s_tail_add(s, buf, len);
        return rc;
    }
    if (s->body_len + len > s->body_cap) {
        size_t cap = s->body_cap ? s->body_cap : 4096;
        while (cap < s->body_len + len)
            cap = cap > s->max_bytes / 2 ? s->max_bytes : cap * 2;
        uint8_t *q = realloc(s->body, cap);
        if (!q)
            return s_body_drop(s, -ENOMEM);
        s->body = q;
        s->body_cap = cap;
    }
    if (len)
        memcpy(s->body + s->body_len, buf, len);
    s->body_len += len;
    return 0;
}

/* Sets up the stream parser of the sniffer's format: 0 or -ENOMEM. */
static int s_stream_new(usage_sniffer_t *s)
{
    if (s->fmt == USAGE_BEDROCK_CONVERSE || s->fmt == USAGE_BEDROCK_INVOKE) {
        s->es = calloc(1, sizeof *s->es);
        if (!s->es)
            return -ENOMEM;
        es_decoder_init(&s->es->dec, s_on_message, s);
        return 0;
    }
    s->sse = sse_new(s->max_bytes, s_on_event, s);
    return s->sse ? 0 : -ENOMEM;
}

usage_sniffer_t *usage_new(usage_format_t fmt, bool streaming, size_t max_bytes)
{
    if ((unsigned)fmt > (unsigned)USAGE_BEDROCK_INVOKE || max_bytes == 0)
        return NULL;
    usage_sniffer_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->fmt = fmt;
    s->streaming = streaming;
    s->max_bytes = max_bytes;
    if (streaming && s_stream_new(s) < 0)
        usage_destroy(&s);
    return s;
}

void usage_destroy(usage_sniffer_t **sp)
{
    if (!sp || !*sp)
        return;
    usage_sniffer_t *s = *sp;
    sse_destroy(&s->sse);
    if (s->es)
        es_decoder_free(&s->es->dec);
    free(s->es);
    free(s->body);
    free(s->tail);
    free(s);
    *sp = NULL;
}

void usage_set_event_cb(usage_sniffer_t *s, usage_event_fn fn, void *arg)
{
    if (!s)
        return;
    s->ev_fn = fn;
    s->ev_arg = arg;
}

int usage_feed(usage_sniffer_t *s, const uint8_t *buf, size_t len)
{
    if (!s || (!buf && len) || s->finished)
        return -EINVAL;
    s->fed += len;
    if (!s->streaming)
        return s_body_add(s, buf, len);
    if (s->es)
        return s_es_feed(s, buf, len);
    int rc = sse_feed(s->sse, buf, len);
    s->u.oversize = (uint32_t)sse_skipped(s->sse);
    return rc;
}

/* Parses a header value as a token count: decimal digits with optional blanks around; -1 if it
 * is not one (18 digits at most, so it cannot overflow). */
static int64_t s_header_count(const char *v, size_t n)
{
    while (n > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (n == 0 || n > 18)
        return -1;
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

void usage_header(usage_sniffer_t *s, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (!s || !name || !value || s->fmt != USAGE_BEDROCK_INVOKE || s->streaming || s->finished)
        return;
    const usage_map_t *map = &s_map_invoke_headers;
    for (int i = 0; i < S_MAP_KEYS && map->keys[i]; i++) {
        if (strlen(map->keys[i]) != nlen || strncasecmp(map->keys[i], name, nlen) != 0)
            continue;
        /* The last one given counts, valid or not. */
        int64_t v = s_header_count(value, vlen);
        if (v < 0) {
            s->u.malformed++;
            s->part_set &= ~(1u << i);
        } else {
            s->part[i] = v;
            s->part_set |= 1u << i;
        }
        /* Found as soon as both counts are given: the headers come before the body. */
        s->u.found = false;
        s->u.input_tokens = s->u.output_tokens = s->u.cached_input_tokens = 0;
        if (s_map_apply(s, map, s->part, s->part_set) < 0)
            s->u.malformed++;
        return;
    }
}

void usage_finish(usage_sniffer_t *s)
{
    if (!s || s->finished)
        return;
    s->finished = true;
    if (s->es) {
        es_decoder_free(&s->es->dec); /* a message cut short is never read */
        return;
    }
    if (s->streaming) {
        (void)sse_finish(s->sse);
        s->u.oversize = (uint32_t)sse_skipped(s->sse);
        return;
    }
    if (!s->body_over && s->body_len > 0)
        s_read_body(s);
    else if (s->body_over && s->tail_len && s->fmt != USAGE_BEDROCK_INVOKE)
        s_read_tail(s); /* Bedrock's invoke has its figures in the headers */
    free(s->body);
    s->body = NULL;
    s->body_len = s->body_cap = 0;
    free(s->tail);
    s->tail = NULL;
    s->tail_len = 0;
}

const usage_t *usage_get(const usage_sniffer_t *s)
{
    return s ? &s->u : &s_none;
}

uint64_t usage_hold_from(const usage_sniffer_t *s)
{
    if (!s)
        return 0;
    if (!s->streaming)
        return s->fed;
    if (s->es) /* once stopped or finished, nothing is waiting to be classified */
        return s->es->stopped || s->finished ? s->fed : s->es->start;
    return sse_pending_start(s->sse);
}

/* ceil(n / 4) without overflow for any n >= 0; a negative n (no body size known) counts 0. */
static int64_t s_quarter_up(int64_t n)
{
    return n <= 0 ? 0 : n / 4 + (n % 4 != 0);
}

void usage_bill(const usage_t *u, int status, int64_t body_bytes, usage_bill_t *out)
{
    memset(out, 0, sizeof *out);
    if (u && u->found) {
        out->input_tokens = u->input_tokens;
        out->cached_tokens = u->cached_input_tokens;
        out->output_tokens = u->output_tokens;
        return;
    }
    if (status < 200 || status > 299)
        return;
    out->input_tokens = s_quarter_up(body_bytes);
    out->output_tokens = s_quarter_up(u ? u->output_chars : 0);
    out->estimated = true;
}
