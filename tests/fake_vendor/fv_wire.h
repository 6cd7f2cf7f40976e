/* fv_wire: OpenAI's and Azure OpenAI's response bodies and stream events, as they send them.
 *
 * A stream is a numbered list of steps, each one SSE event (one HTTP chunk on the wire):
 *   chat, OpenAI:   role chunk, N content chunks, finish chunk, [usage chunk], data: [DONE]
 *   chat, Azure:    prompt_filter_results chunk (choices: []), role chunk, N content chunks
 *                   (with content_filter_results), finish chunk, [usage chunk], [DONE]
 *   completions:    (Azure: prompt_filter_results chunk), N text chunks, finish chunk,
 *                   [usage chunk], [DONE]
 *   responses:      response.created, response.in_progress, response.output_item.added,
 *                   response.content_part.added, N response.output_text.delta,
 *                   response.output_text.done, response.content_part.done,
 *                   response.output_item.done, response.completed (or .incomplete)
 * The usage chunk (choices: []) comes only with stream_options.include_usage, and then every
 * other chunk carries "usage": null. Content piece i is "tok<i>", with a space before it when
 * i > 0: the whole text is "tok0 tok1 ... tok<N-1>".
 */
#ifndef FV_WIRE_H
#define FV_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { FV_OPENAI, FV_AZURE } fv_vendor_t;

typedef enum {
    FV_EP_CHAT,        /* chat/completions */
    FV_EP_COMPLETIONS, /* completions (legacy) */
    FV_EP_EMBEDDINGS,  /* embeddings */
    FV_EP_RESPONSES,   /* responses */
    FV_EP_MODELS,      /* GET models */
    FV_EP_MODEL,       /* GET models/{id} */
} fv_ep_t;

typedef enum {
    FV_STEP_META,    /* an event around the content (role, finish, usage, lifecycle) */
    FV_STEP_CONTENT, /* a content event (paced by the delay, counted for faults) */
    FV_STEP_END,     /* past the last event */
} fv_step_t;

typedef struct {
    fv_vendor_t vendor;    /* whose format */
    fv_ep_t ep;            /* which endpoint */
    char model[256];       /* model (or deployment) named in the answer */
    char id[48];           /* chatcmpl-..., cmpl-..., resp_... */
    char item_id[48];      /* msg_... (responses) */
    int64_t created;       /* Unix seconds */
    int64_t n;             /* content pieces */
    bool truncated;        /* n was cut by a max-tokens limit: "length" / incomplete */
    bool include_usage;    /* stream_options.include_usage */
    bool obfuscation;      /* add OpenAI's "obfuscation" padding to stream events */
    int64_t prompt_tokens; /* usage figures */
    int64_t n_inputs;      /* embeddings: vectors to return */
    int64_t dims;          /* embeddings: their size */
    bool base64;           /* embeddings: encoding_format base64 */
    uint64_t rng;          /* padding generator state */
    int64_t seq;           /* responses: next sequence_number */
} fv_gen_t;

/* Fills the ids from seq (deterministic per request number). */
void fv_wire_ids(fv_gen_t *g, uint64_t seq);

/* What step k of g's stream is. */
fv_step_t fv_wire_step_kind(const fv_gen_t *g, int64_t k);

/* The index of the first content step (the steps before it are lifecycle events). */
int64_t fv_wire_first_content(const fv_gen_t *g);

/* Step k as one SSE event (malloc'd, *len bytes), or NULL past the end or without memory. */
char *fv_wire_step(fv_gen_t *g, int64_t k, size_t *len);

/* The event a vendor sends when it fails mid-stream (malloc'd). */
char *fv_wire_stream_error(fv_gen_t *g, size_t *len);

/* The non-streamed answer (malloc'd JSON). */
char *fv_wire_body(const fv_gen_t *g, size_t *len);

/* The models list (ids given, n of them) or one model (FV_EP_MODEL: ids[0]). */
char *fv_wire_models(fv_vendor_t v, fv_ep_t ep, const char *const *ids, size_t n, size_t *len);

/* An error body in the vendor's shape. OpenAI: {"error":{message,type,param,code}} (param and
 * code NULL give null); Azure: {"error":{"code":"<code or status>","message"}}. */
char *fv_wire_error(fv_vendor_t v, int status, const char *message, const char *type,
                    const char *param, const char *code, size_t *len);

/* The full text of g's answer, "tok0 tok1 ..." (malloc'd). */
char *fv_wire_text(const fv_gen_t *g);

#endif
