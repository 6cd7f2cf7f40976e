/* fv_wire: builds the vendors' JSON bodies and SSE events with jansson. */
#include "fv_wire.h"

#include <jansson.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_FINGERPRINT "fp_fake0001"

/* Next value of a xorshift64* generator (deterministic padding, ids). */
static uint64_t s_rand(uint64_t *st)
{
    uint64_t x = *st ? *st : 0x9e3779b97f4a7c15ULL;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *st = x;
    return x * 0x2545f4914f6cdd1dULL;
}

/* Writes n characters of [A-Za-z0-9] to out (NUL-terminated). */
static void s_alnum(char *out, size_t n, uint64_t *st)
{
    static const char set[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for (size_t i = 0; i < n; i++)
        out[i] = set[s_rand(st) % (sizeof set - 1)];
    out[n] = '\0';
}

void fv_wire_ids(fv_gen_t *g, uint64_t seq)
{
    uint64_t st = seq * 0x9e3779b97f4a7c15ULL + 1;
    char r[40];
    s_alnum(r, 29, &st);
    if (g->ep == FV_EP_RESPONSES) {
        snprintf(g->id, sizeof g->id, "resp_fake%.24s", r);
        s_alnum(r, 24, &st);
        snprintf(g->item_id, sizeof g->item_id, "msg_fake%.24s", r);
    } else if (g->ep == FV_EP_COMPLETIONS) {
        snprintf(g->id, sizeof g->id, "cmpl-%.29s", r);
    } else {
        snprintf(g->id, sizeof g->id, "chatcmpl-%.29s", r);
    }
    g->rng = st;
}

/* Dumps j (stolen) as compact JSON, keys sorted for Azure (it re-serialises); NULL on error. */
static char *s_dump(const fv_gen_t *g, json_t *j, size_t *len)
{
    if (!j)
        return NULL;
    size_t flags = JSON_COMPACT | JSON_REAL_PRECISION(8);
    if (g && g->vendor == FV_AZURE)
        flags |= JSON_SORT_KEYS;
    char *s = json_dumps(j, flags);
    json_decref(j);
    if (s)
        *len = strlen(s);
    return s;
}

/* Wraps a JSON text as one SSE event (frees json). event NULL: data only. */
static char *s_sse(const char *event, char *json, size_t jlen, size_t *len)
{
    if (!json)
        return NULL;
    size_t el = event ? strlen(event) : 0;
    size_t cap = jlen + el + 32;
    char *out = malloc(cap);
    if (out) {
        int n = event ? snprintf(out, cap, "event: %s\ndata: %s\n\n", event, json)
                      : snprintf(out, cap, "data: %s\n\n", json);
        *len = (size_t)n;
    }
    free(json);
    return out;
}

/* Content piece i: "tok<i>", with a leading space after the first. */
static json_t *s_piece(int64_t i)
{
    char w[32];
    snprintf(w, sizeof w, "%stok%lld", i ? " " : "", (long long)i);
    return json_string(w);
}

char *fv_wire_text(const fv_gen_t *g)
{
    size_t cap = (size_t)g->n * 24 + 1, off = 0; /* " tok" + 19 digits + NUL */
    char *t = malloc(cap);
    if (!t)
        return NULL;
    t[0] = '\0';
    for (int64_t i = 0; i < g->n; i++) {
        int n = snprintf(t + off, cap - off, "%stok%lld", i ? " " : "", (long long)i);
        off += (size_t)n;
    }
    return t;
}

/* The text as a JSON string (stolen reference), or NULL. */
static json_t *s_text_json(const fv_gen_t *g)
{
    char *t = fv_wire_text(g);
    json_t *j = t ? json_string(t) : NULL;
    free(t);
    return j;
}

/* Azure's content-filter verdicts: all categories safe. */
static json_t *s_filter(bool prompt)
{
    json_t *f = json_object();
    const char *cats[] = {"hate", "self_harm", "sexual", "violence"};
    for (size_t i = 0; i < 4; i++)
        json_object_set_new(f, cats[i], json_pack("{s:b,s:s}", "filtered", 0, "severity", "safe"));
    if (prompt) {
        json_object_set_new(f, "jailbreak", json_pack("{s:b,s:b}", "filtered", 0, "detected", 0));
    } else {
        json_object_set_new(f, "protected_material_code",
                            json_pack("{s:b,s:b}", "filtered", 0, "detected", 0));
        json_object_set_new(f, "protected_material_text",
                            json_pack("{s:b,s:b}", "filtered", 0, "detected", 0));
    }
    return f;
}

/* Azure's prompt_filter_results array. */
static json_t *s_prompt_filter(void)
{
    return json_pack("[{s:i,s:o}]", "prompt_index", 0, "content_filter_results", s_filter(true));
}

/* The usage object of chat (detailed) or completions (plain). */
static json_t *s_usage(const fv_gen_t *g)
{
    json_int_t p = (json_int_t)g->prompt_tokens, c = (json_int_t)g->n;
    if (g->ep == FV_EP_COMPLETIONS)
        return json_pack("{s:I,s:I,s:I}", "prompt_tokens", p, "completion_tokens", c,
                         "total_tokens", p + c);
    return json_pack("{s:I,s:I,s:I,s:{s:i,s:i},s:{s:i,s:i,s:i,s:i}}", "prompt_tokens", p,
                     "completion_tokens", c, "total_tokens", p + c, "prompt_tokens_details",
                     "cached_tokens", 0, "audio_tokens", 0, "completion_tokens_details",
                     "reasoning_tokens", 0, "audio_tokens", 0, "accepted_prediction_tokens", 0,
                     "rejected_prediction_tokens", 0);
}

/* The Responses API usage object. */
static json_t *s_resp_usage(const fv_gen_t *g)
{
    json_int_t p = (json_int_t)g->prompt_tokens, c = (json_int_t)g->n;
    return json_pack("{s:I,s:{s:i},s:I,s:{s:i},s:I}", "input_tokens", p, "input_tokens_details",
                     "cached_tokens", 0, "output_tokens", c, "output_tokens_details",
                     "reasoning_tokens", 0, "total_tokens", p + c);
}

/* Adds OpenAI's random-length "obfuscation" padding to a stream event when enabled. */
static void s_obfuscate(fv_gen_t *g, json_t *o)
{
    if (!g->obfuscation || g->vendor != FV_OPENAI)
        return;
    char pad[24];
    s_alnum(pad, 1 + s_rand(&g->rng) % 16, &g->rng);
    json_object_set_new(o, "obfuscation", json_string(pad));
}

/* Steps before the content. */
static int64_t s_pre(const fv_gen_t *g)
{
    if (g->ep == FV_EP_RESPONSES)
        return 4;
    int64_t n = g->ep == FV_EP_CHAT ? 1 : 0;
    return n + (g->vendor == FV_AZURE ? 1 : 0);
}

/* Steps after the content. */
static int64_t s_post(const fv_gen_t *g)
{
    if (g->ep == FV_EP_RESPONSES)
        return 4;
    return 2 + (g->include_usage ? 1 : 0);
}

int64_t fv_wire_first_content(const fv_gen_t *g)
{
    return s_pre(g);
}

fv_step_t fv_wire_step_kind(const fv_gen_t *g, int64_t k)
{
    int64_t pre = s_pre(g);
    if (k < pre)
        return FV_STEP_META;
    if (k < pre + g->n)
        return FV_STEP_CONTENT;
    if (k < pre + g->n + s_post(g))
        return FV_STEP_META;
    return FV_STEP_END;
}

/* A chat.completion.chunk / text_completion chunk with one choice (or none: choice NULL). */
static json_t *s_chunk(fv_gen_t *g, json_t *choice, bool with_usage_null)
{
    bool chat = g->ep == FV_EP_CHAT;
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(g->id));
    json_object_set_new(o, "object",
                        json_string(chat ? "chat.completion.chunk" : "text_completion"));
    json_object_set_new(o, "created", json_integer(g->created));
    json_object_set_new(o, "model", json_string(g->model));
    if (chat && g->vendor == FV_OPENAI)
        json_object_set_new(o, "service_tier", json_string("default"));
    if (chat)
        json_object_set_new(o, "system_fingerprint", json_string(S_FINGERPRINT));
    json_t *choices = json_array();
    if (choice)
        json_array_append_new(choices, choice);
    json_object_set_new(o, "choices", choices);
    if (with_usage_null && g->include_usage)
        json_object_set_new(o, "usage", json_null());
    return o;
}

/* One choice of a chunk: delta (chat) or text (completions). */
static json_t *s_choice(const fv_gen_t *g, json_t *delta_or_text, const char *finish, bool filter)
{
    json_t *c = json_object();
    if (g->ep == FV_EP_CHAT) {
        json_object_set_new(c, "index", json_integer(0));
        json_object_set_new(c, "delta", delta_or_text);
    } else {
        json_object_set_new(c, "text", delta_or_text);
        json_object_set_new(c, "index", json_integer(0));
    }
    json_object_set_new(c, "logprobs", json_null());
    json_object_set_new(c, "finish_reason", finish ? json_string(finish) : json_null());
    if (g->vendor == FV_AZURE)
        json_object_set_new(c, "content_filter_results", filter ? s_filter(false) : json_object());
    return c;
}

/* Step k of a chat or completions stream. */
static char *s_chat_step(fv_gen_t *g, int64_t k, size_t *len)
{
    int64_t pre = s_pre(g);
    bool chat = g->ep == FV_EP_CHAT;
    const char *finish = g->truncated ? "length" : "stop";
    json_t *o = NULL;
    size_t jl = 0;
    if (g->vendor == FV_AZURE && k == 0) {
        /* Azure's first chunk: no choices, empty ids, the prompt's filter verdicts. */
        o = json_pack("{s:[],s:i,s:s,s:s,s:s,s:o}", "choices", "created", 0, "id", "", "model", "",
                      "object", "", "prompt_filter_results", s_prompt_filter());
        char *js = s_dump(g, o, &jl);
        return s_sse(NULL, js, jl, len);
    }
    if (chat && k == pre - 1) {
        json_t *d = json_pack("{s:s,s:s,s:n}", "role", "assistant", "content", "", "refusal");
        o = s_chunk(g, s_choice(g, d, NULL, false), true);
    } else if (k < pre + g->n) {
        int64_t i = k - pre;
        json_t *piece = s_piece(i);
        json_t *v = chat ? json_pack("{s:o}", "content", piece) : piece;
        o = s_chunk(g, s_choice(g, v, NULL, true), true);
    } else if (k == pre + g->n) {
        json_t *v = chat ? json_object() : json_string("");
        o = s_chunk(g, s_choice(g, v, finish, false), true);
    } else if (k == pre + g->n + 1 && g->include_usage) {
        o = s_chunk(g, NULL, false);
        json_object_set_new(o, "usage", s_usage(g));
    } else {
        char *done = strdup("data: [DONE]\n\n");
        if (done)
            *len = strlen(done);
        return done;
    }
    s_obfuscate(g, o);
    char *js = s_dump(g, o, &jl);
    return s_sse(NULL, js, jl, len);
}

/* The output_text content part (text NULL: empty). */
static json_t *s_part(const fv_gen_t *g, bool full)
{
    return json_pack("{s:s,s:[],s:[],s:o}", "type", "output_text", "annotations", "logprobs",
                     "text", full ? s_text_json(g) : json_string(""));
}

/* The message output item. */
static json_t *s_item(const fv_gen_t *g, bool done)
{
    json_t *content = done ? json_pack("[o]", s_part(g, true)) : json_array();
    return json_pack("{s:s,s:s,s:s,s:o,s:s}", "id", g->item_id, "type", "message", "status",
                     done ? "completed" : "in_progress", "content", content, "role", "assistant");
}

/* The Responses API response object in a given status. */
static json_t *s_response(const fv_gen_t *g, const char *status, bool final)
{
    json_t *r = json_object();
    json_object_set_new(r, "id", json_string(g->id));
    json_object_set_new(r, "object", json_string("response"));
    json_object_set_new(r, "created_at", json_integer(g->created));
    json_object_set_new(r, "status", json_string(status));
    json_object_set_new(r, "background", json_false());
    json_object_set_new(r, "error", json_null());
    json_object_set_new(r, "incomplete_details",
                        g->truncated && final ? json_pack("{s:s}", "reason", "max_output_tokens")
                                              : json_null());
    json_object_set_new(r, "instructions", json_null());
    json_object_set_new(r, "max_output_tokens", json_null());
    json_object_set_new(r, "model", json_string(g->model));
    json_object_set_new(r, "output", final ? json_pack("[o]", s_item(g, true)) : json_array());
    json_object_set_new(r, "parallel_tool_calls", json_true());
    json_object_set_new(r, "previous_response_id", json_null());
    json_object_set_new(r, "reasoning", json_pack("{s:n,s:n}", "effort", "summary"));
    json_object_set_new(r, "service_tier", json_string("default"));
    json_object_set_new(r, "store", json_true());
    json_object_set_new(r, "temperature", json_real(1.0));
    json_object_set_new(r, "text", json_pack("{s:{s:s}}", "format", "type", "text"));
    json_object_set_new(r, "tool_choice", json_string("auto"));
    json_object_set_new(r, "tools", json_array());
    json_object_set_new(r, "top_p", json_real(1.0));
    json_object_set_new(r, "truncation", json_string("disabled"));
    json_object_set_new(r, "usage", final ? s_resp_usage(g) : json_null());
    json_object_set_new(r, "user", json_null());
    json_object_set_new(r, "metadata", json_object());
    return r;
}

/* Step k of a Responses API stream. */
static char *s_resp_step(fv_gen_t *g, int64_t k, size_t *len)
{
    int64_t n = g->n;
    const char *type;
    json_t *o = json_object();
    int64_t seq = g->seq++;
    if (k == 0 || k == 1) {
        type = k == 0 ? "response.created" : "response.in_progress";
        json_object_set_new(o, "type", json_string(type));
        json_object_set_new(o, "sequence_number", json_integer(seq));
        json_object_set_new(o, "response", s_response(g, "in_progress", false));
    } else if (k == 2 || k == 4 + n + 2) {
        type = k == 2 ? "response.output_item.added" : "response.output_item.done";
        json_object_set_new(o, "type", json_string(type));
        json_object_set_new(o, "sequence_number", json_integer(seq));
        json_object_set_new(o, "output_index", json_integer(0));
        json_object_set_new(o, "item", s_item(g, k != 2));
    } else if (k == 3 || k == 4 + n + 1) {
        type = k == 3 ? "response.content_part.added" : "response.content_part.done";
        json_object_set_new(o, "type", json_string(type));
        json_object_set_new(o, "sequence_number", json_integer(seq));
        json_object_set_new(o, "item_id", json_string(g->item_id));
        json_object_set_new(o, "output_index", json_integer(0));
        json_object_set_new(o, "content_index", json_integer(0));
        json_object_set_new(o, "part", s_part(g, k != 3));
    } else if (k < 4 + n) {
        type = "response.output_text.delta";
        json_object_set_new(o, "type", json_string(type));
        json_object_set_new(o, "sequence_number", json_integer(seq));
        json_object_set_new(o, "item_id", json_string(g->item_id));
        json_object_set_new(o, "output_index", json_integer(0));
        json_object_set_new(o, "content_index", json_integer(0));
        json_object_set_new(o, "delta", s_piece(k - 4));
        json_object_set_new(o, "logprobs", json_array());
        s_obfuscate(g, o);
    } else if (k == 4 + n) {
        type = "response.output_text.done";
        json_object_set_new(o, "type", json_string(type));
        json_object_set_new(o, "sequence_number", json_integer(seq));
        json_object_set_new(o, "item_id", json_string(g->item_id));
        json_object_set_new(o, "output_index", json_integer(0));
        json_object_set_new(o, "content_index", json_integer(0));
        json_object_set_new(o, "text", s_text_json(g));
        json_object_set_new(o, "logprobs", json_array());
    } else {
        type = g->truncated ? "response.incomplete" : "response.completed";
        json_object_set_new(o, "type", json_string(type));
        json_object_set_new(o, "sequence_number", json_integer(seq));
        json_object_set_new(o, "response",
                            s_response(g, g->truncated ? "incomplete" : "completed", true));
    }
    size_t jl = 0;
    char *j = s_dump(NULL, o, &jl);
    return s_sse(type, j, jl, len);
}

char *fv_wire_step(fv_gen_t *g, int64_t k, size_t *len)
{
    if (fv_wire_step_kind(g, k) == FV_STEP_END)
        return NULL;
    if (g->ep == FV_EP_RESPONSES)
        return s_resp_step(g, k, len);
    return s_chat_step(g, k, len);
}

char *fv_wire_stream_error(fv_gen_t *g, size_t *len)
{
    size_t jl = 0;
    const char *msg = "The server had an error while processing your request. Sorry about that!";
    if (g->ep == FV_EP_RESPONSES) {
        json_t *o = json_pack("{s:s,s:s,s:s,s:n,s:I}", "type", "error", "code", "server_error",
                              "message", msg, "param", "sequence_number", (json_int_t)g->seq++);
        char *js = s_dump(NULL, o, &jl);
        return s_sse("error", js, jl, len);
    }
    json_t *o = json_pack("{s:{s:s,s:s,s:n,s:n}}", "error", "message", msg, "type", "server_error",
                          "param", "code");
    char *js = s_dump(g, o, &jl);
    return s_sse(NULL, js, jl, len);
}

/* Embedding vector i: deterministic, unit length. */
static void s_vector(float *v, int64_t dims, int64_t i)
{
    double norm = 0;
    for (int64_t j = 0; j < dims; j++) {
        v[j] = (float)sin((double)(i + 1) * 0.7 + (double)(j + 1) * 0.13);
        norm += (double)v[j] * (double)v[j];
    }
    norm = sqrt(norm);
    for (int64_t j = 0; j < dims && norm > 0; j++)
        v[j] = (float)(v[j] / norm);
}

/* The embeddings answer. */
static json_t *s_embeddings(const fv_gen_t *g)
{
    float *v = malloc((size_t)g->dims * sizeof *v);
    size_t b64cap = sodium_base64_encoded_len((size_t)g->dims * 4, sodium_base64_VARIANT_ORIGINAL);
    char *b64 = g->base64 ? malloc(b64cap) : NULL;
    if (!v || (g->base64 && !b64)) {
        free(v);
        free(b64);
        return NULL;
    }
    json_t *data = json_array();
    for (int64_t i = 0; i < g->n_inputs; i++) {
        s_vector(v, g->dims, i);
        json_t *emb;
        if (g->base64) {
            uint8_t *raw = (uint8_t *)v; /* little-endian float32, as OpenAI sends */
            sodium_bin2base64(b64, b64cap, raw, (size_t)g->dims * 4,
                              sodium_base64_VARIANT_ORIGINAL);
            emb = json_string(b64);
        } else {
            emb = json_array();
            for (int64_t j = 0; j < g->dims; j++)
                json_array_append_new(emb, json_real(v[j]));
        }
        json_array_append_new(data, json_pack("{s:s,s:I,s:o}", "object", "embedding", "index",
                                              (json_int_t)i, "embedding", emb));
    }
    free(v);
    free(b64);
    json_int_t p = (json_int_t)g->prompt_tokens;
    return json_pack("{s:s,s:o,s:s,s:{s:I,s:I}}", "object", "list", "data", data, "model", g->model,
                     "usage", "prompt_tokens", p, "total_tokens", p);
}

char *fv_wire_body(const fv_gen_t *g, size_t *len)
{
    const char *finish = g->truncated ? "length" : "stop";
    json_t *o = NULL;
    if (g->ep == FV_EP_EMBEDDINGS) {
        o = s_embeddings(g);
    } else if (g->ep == FV_EP_RESPONSES) {
        o = s_response(g, g->truncated ? "incomplete" : "completed", true);
    } else if (g->ep == FV_EP_CHAT || g->ep == FV_EP_COMPLETIONS) {
        bool chat = g->ep == FV_EP_CHAT;
        json_t *choice = json_object();
        json_object_set_new(choice, "index", json_integer(0));
        if (chat)
            json_object_set_new(choice, "message",
                                json_pack("{s:s,s:o,s:n,s:[]}", "role", "assistant", "content",
                                          s_text_json(g), "refusal", "annotations"));
        else
            json_object_set_new(choice, "text", s_text_json(g));
        json_object_set_new(choice, "logprobs", json_null());
        json_object_set_new(choice, "finish_reason", json_string(finish));
        if (g->vendor == FV_AZURE)
            json_object_set_new(choice, "content_filter_results", s_filter(false));
        o = json_object();
        json_object_set_new(o, "id", json_string(g->id));
        json_object_set_new(o, "object", json_string(chat ? "chat.completion" : "text_completion"));
        json_object_set_new(o, "created", json_integer(g->created));
        json_object_set_new(o, "model", json_string(g->model));
        json_object_set_new(o, "choices", json_pack("[o]", choice));
        json_object_set_new(o, "usage", s_usage(g));
        if (chat && g->vendor == FV_OPENAI)
            json_object_set_new(o, "service_tier", json_string("default"));
        if (chat)
            json_object_set_new(o, "system_fingerprint", json_string(S_FINGERPRINT));
        if (g->vendor == FV_AZURE)
            json_object_set_new(o, "prompt_filter_results", s_prompt_filter());
    }
    size_t jl = 0;
    char *s = s_dump(g, o, &jl);
    if (s)
        *len = jl;
    return s;
}

char *fv_wire_models(fv_vendor_t v, fv_ep_t ep, const char *const *ids, size_t n, size_t *len)
{
    fv_gen_t g;
    memset(&g, 0, sizeof g);
    g.vendor = v;
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_pack("{s:s,s:s,s:i,s:s}", "id", ids[i], "object", "model", "created",
                              1715367049, "owned_by", "system");
        if (ep == FV_EP_MODEL) {
            json_decref(data);
            return s_dump(&g, m, len);
        }
        json_array_append_new(data, m);
    }
    return s_dump(&g, json_pack("{s:s,s:o}", "object", "list", "data", data), len);
}

char *fv_wire_error(fv_vendor_t v, int status, const char *message, const char *type,
                    const char *param, const char *code, size_t *len)
{
    json_t *o;
    if (v == FV_AZURE) {
        char st[16];
        snprintf(st, sizeof st, "%d", status);
        o = json_pack("{s:{s:s,s:s}}", "error", "code", code ? code : st, "message", message);
    } else {
        o = json_pack("{s:{s:s,s:s,s:o,s:o}}", "error", "message", message, "type", type, "param",
                      param ? json_string(param) : json_null(), "code",
                      code ? json_string(code) : json_null());
    }
    fv_gen_t g;
    memset(&g, 0, sizeof g);
    g.vendor = v;
    return s_dump(&g, o, len);
}
