/* usage: token usage sniffers for OpenAI and Azure OpenAI responses, streamed or not. */
#include "usage.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"

struct usage_sniffer {
    usage_format_t fmt;   /* response format */
    bool streaming;       /* SSE stream (else one JSON body) */
    bool finished;        /* usage_finish() was called */
    bool body_over;       /* the body went over max_bytes: it is not read */
    size_t max_bytes;     /* most bytes of one event (stream) or of the body */
    sse_parser_t *sse;    /* stream parser, NULL for a body */
    uint8_t *body;        /* body gathered so far */
    size_t body_len;      /* its length */
    size_t body_cap;      /* its allocation */
    uint64_t fed;         /* bytes fed so far */
    usage_event_fn ev_fn; /* stream event callback, or NULL */
    void *ev_arg;         /* its argument */
    usage_t u;            /* what has been read */
};

/* Returned by usage_get(NULL): all zero, nothing found. */
static const usage_t s_none;

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

/* SSE callback: reads one stream event and tells the relay what it was. */
static int s_on_event(void *arg, const sse_event_t *ev)
{
    usage_sniffer_t *s = arg;
    bool usage_only = false;
    s->u.events++;
    if (ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0) {
        s->u.done = true;
    } else {
        json_error_t jerr;
        json_t *root = json_loadb(ev->data, ev->data_len, 0, &jerr);
        if (!json_is_object(root))
            s->u.malformed++;
        else if (s->fmt == USAGE_OPENAI_RESPONSES)
            s_responses_event(s, root, ev->event);
        else
            usage_only = s_chat_object(s, root);
        json_decref(root);
    }
    if (s->ev_fn) {
        usage_event_t ue = {.start = ev->start, .end = ev->end, .usage_only = usage_only};
        s->ev_fn(s->ev_arg, &ue);
    }
    return 0;
}

/* Reads a whole non-streamed body. */
static void s_read_body(usage_sniffer_t *s)
{
    json_error_t jerr;
    json_t *root = json_loadb((const char *)s->body, s->body_len, 0, &jerr);
    if (!json_is_object(root)) {
        s->u.malformed++;
        json_decref(root);
        return;
    }
    s->u.done = true;
    if (s->fmt == USAGE_OPENAI_RESPONSES) {
        if (json_is_object(json_object_get(root, "error")))
            s->u.vendor_errors++;
        s_output_chars(s, json_object_get(root, "output"));
        const json_t *usage = json_object_get(root, "usage");
        if (json_is_object(usage))
            s_read_usage(s, usage);
    } else {
        (void)s_chat_object(s, root);
    }
    json_decref(root);
}

/* Gives up on the body (too long, or no memory): it will not be read. */
static int s_body_drop(usage_sniffer_t *s, int rc)
{
    s->body_over = true;
    if (rc == -EMSGSIZE)
        s->u.oversize++;
    free(s->body);
    s->body = NULL;
    s->body_len = s->body_cap = 0;
    return rc;
}

/* Appends body bytes, up to max_bytes; past it the body is dropped and never read. */
static int s_body_add(usage_sniffer_t *s, const uint8_t *buf, size_t len)
{
    if (s->body_over)
        return 0;
    if (len > s->max_bytes - s->body_len)
        return s_body_drop(s, -EMSGSIZE);
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

usage_sniffer_t *usage_new(usage_format_t fmt, bool streaming, size_t max_bytes)
{
    if ((unsigned)fmt > (unsigned)USAGE_OPENAI_RESPONSES || max_bytes == 0)
        return NULL;
    usage_sniffer_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->fmt = fmt;
    s->streaming = streaming;
    s->max_bytes = max_bytes;
    if (streaming) {
        s->sse = sse_new(max_bytes, s_on_event, s);
        if (!s->sse) {
            usage_destroy(&s);
            return NULL;
        }
    }
    return s;
}

void usage_destroy(usage_sniffer_t **sp)
{
    if (!sp || !*sp)
        return;
    usage_sniffer_t *s = *sp;
    sse_destroy(&s->sse);
    free(s->body);
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
    int rc = sse_feed(s->sse, buf, len);
    s->u.oversize = (uint32_t)sse_skipped(s->sse);
    return rc;
}

void usage_finish(usage_sniffer_t *s)
{
    if (!s || s->finished)
        return;
    s->finished = true;
    if (s->streaming) {
        (void)sse_finish(s->sse);
        s->u.oversize = (uint32_t)sse_skipped(s->sse);
        return;
    }
    if (!s->body_over && s->body_len > 0)
        s_read_body(s);
    free(s->body);
    s->body = NULL;
    s->body_len = s->body_cap = 0;
}

const usage_t *usage_get(const usage_sniffer_t *s)
{
    return s ? &s->u : &s_none;
}

uint64_t usage_hold_from(const usage_sniffer_t *s)
{
    if (!s)
        return 0;
    return s->streaming ? sse_pending_start(s->sse) : s->fed;
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
