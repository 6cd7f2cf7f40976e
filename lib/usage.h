/* usage: reads the vendor's own token figures from the response bytes relayed to the user.
 *
 * The same sniffer runs in the gateway (on what the user got) and in the agent (on what it
 * sent), so both sides read the same figures from the same bytes. It never changes the bytes
 * and never stops the relay: whatever goes wrong (bad JSON, an event or body over the limit,
 * no usage at all) is counted in usage_t and the figures stay "not found".
 *
 * Formats (OpenAI and Azure OpenAI share them):
 * - chat.completions, completions: a stream is SSE "data: {chunk}" events ending with
 *   "data: [DONE]". With stream_options.include_usage every chunk carries "usage": null and
 *   one last chunk, before [DONE], has "choices": [] and the usage (prompt_tokens,
 *   completion_tokens, prompt_tokens_details.cached_tokens). A body has the same usage.
 *   Azure's prompt_filter_results chunk also has "choices": [] but no usage: it is content.
 * - embeddings: a body with usage.prompt_tokens.
 * - responses: a stream of typed events; response.completed (or response.incomplete or
 *   response.failed) carries response.usage (input_tokens, output_tokens,
 *   input_tokens_details.cached_tokens); a body has the same usage at its top level.
 *
 * Anthropic Messages (api.anthropic.com /v1/messages):
 * - stream: SSE "event: NAME" + "data: {...}" in the order message_start (message.usage:
 *   input_tokens, cache_creation_input_tokens, cache_read_input_tokens, and output_tokens: 1,
 *   which is not a count to add), content_block_start, ping, content_block_delta (text_delta
 *   .text, input_json_delta.partial_json, thinking_delta.thinking count as output characters),
 *   content_block_stop, message_delta (usage.output_tokens: cumulative, the final total; newer
 *   answers repeat the input figures there too), message_stop (done). An "error" event after
 *   the 200 counts as a vendor error.
 * - body: the message object with the same usage at its top level.
 * - input_tokens = input_tokens + cache_creation_input_tokens + cache_read_input_tokens;
 *   cached_input_tokens = cache_read_input_tokens (Anthropic's input_tokens excludes both).
 *
 * Gemini (AI Studio generateContent / streamGenerateContent, and Vertex AI's same methods):
 * - streamed with alt=sse: SSE "data: {GenerateContentResponse}" events ended by "\r\n\r\n";
 *   usageMetadata is on every chunk and cumulative: the last one holds the totals. There is no
 *   end marker: done once an event with a candidate's finishReason (and usageMetadata) has been
 *   read.
 * - body: one GenerateContentResponse, or (streamGenerateContent without alt=sse) a JSON array
 *   of them, whose last element with usageMetadata holds the totals (read only when the array
 *   is whole; an array cut short still counts the text of its whole elements).
 * - input_tokens = promptTokenCount + toolUsePromptTokenCount; cached_input_tokens =
 *   cachedContentTokenCount; output_tokens = candidatesTokenCount + thoughtsTokenCount.
 *   Output characters: candidates[].content.parts[].text.
 *
 * AWS Bedrock runtime (lib/eventstream frames when streamed):
 * - converse, body: usage {inputTokens, outputTokens, cacheReadInputTokens,
 *   cacheWriteInputTokens}; input_tokens = inputTokens + cacheRead + cacheWrite, cached =
 *   cacheReadInputTokens.
 * - converse-stream: events messageStart, contentBlockStart, contentBlockDelta (delta.text,
 *   delta.toolUse.input, delta.reasoningContent.text count as output characters),
 *   contentBlockStop, messageStop, metadata (usage as for converse; done).
 * - invoke, body: the model's own JSON; the figures come from the response headers
 *   x-amzn-bedrock-input-token-count and x-amzn-bedrock-output-token-count (and
 *   x-amzn-bedrock-cache-read-input-token-count, -cache-write-input-token-count), given with
 *   usage_header(); done when the body is whole JSON.
 * - invoke-with-response-stream: "chunk" events whose JSON payload is {"bytes": base64 of one
 *   model event}; for Anthropic models that event is a Messages stream event (read as above for
 *   output characters); the last one carries "amazon-bedrock-invocationMetrics" {inputTokenCount,
 *   outputTokenCount, cacheReadInputTokenCount, cacheWriteInputTokenCount}: found and done.
 * - a message with :message-type "exception" counts as a vendor error; a frame whose CRC fails
 *   counts as malformed and stops the reading (the relay goes on).
 *
 * Streams are parsed with lib/sse (or lib/eventstream), one JSON document per event (max_bytes
 * bounds one event). Bodies are gathered (up to max_bytes) and parsed at usage_finish(); of a
 * body over max_bytes only the last 64 KiB are kept, and the usage object is read from there
 * (the last "usage", or for Gemini "usageMetadata", key: every format puts it near the end):
 * the figures are the vendor's, without the output characters of the body.
 */
#ifndef USAGE_H
#define USAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Response formats the sniffer reads. */
typedef enum {
    USAGE_OPENAI_CHAT,        /* /v1/chat/completions (and Azure's deployments/.../chat) */
    USAGE_OPENAI_COMPLETIONS, /* /v1/completions */
    USAGE_OPENAI_EMBEDDINGS,  /* /v1/embeddings */
    USAGE_OPENAI_RESPONSES,   /* /v1/responses */
    USAGE_ANTHROPIC_MESSAGES, /* Anthropic /v1/messages */
    USAGE_GEMINI,             /* Gemini / Vertex generateContent, streamGenerateContent */
    USAGE_BEDROCK_CONVERSE,   /* Bedrock converse (streaming: converse-stream, event stream) */
    USAGE_BEDROCK_INVOKE,     /* Bedrock invoke (streaming: invoke-with-response-stream) */
} usage_format_t;

/* What the sniffer has read so far. */
typedef struct {
    int64_t input_tokens;        /* prompt/input tokens, cached ones included (vendor's count) */
    int64_t output_tokens;       /* completion/output tokens, reasoning included */
    int64_t cached_input_tokens; /* the part of input_tokens served from the prompt cache */
    int64_t output_chars;        /* Unicode code points of generated content seen (text,
                                    refusals, reasoning, tool-call arguments), for the
                                    early-end estimate */
    bool found;                  /* the vendor's final usage figures were seen */
    bool done;                   /* the response ended properly: [DONE] or a terminal
                                    responses event in a stream; a whole JSON body */
    uint32_t events;             /* stream events read */
    uint32_t malformed;          /* events or bodies whose JSON (or usage) could not be read */
    uint32_t oversize;           /* events or bodies over max_bytes, not read */
    uint32_t vendor_errors;      /* error objects from the vendor (in-stream or as the body) */
} usage_t;

/* One stream event, as classified for the relay. */
typedef struct {
    uint64_t start;  /* stream offset of its first raw byte */
    uint64_t end;    /* stream offset just past its blank line (event stream: its last byte) */
    bool usage_only; /* a chunk with usage and no choices: the one include_usage adds
                        (OpenAI formats only; always false for the others) */
} usage_event_t;

/* Called for every complete stream event, in order. A gateway whose user did not ask for
 * usage drops the bytes [start, end) of the usage_only events from what it forwards. For the
 * Bedrock event streams it is called once per message whose CRCs check (exceptions included),
 * with the message's exact bytes and usage_only false; never for a message skipped for size
 * nor after a bad frame. */
typedef void (*usage_event_fn)(void *arg, const usage_event_t *ev);

typedef struct usage_sniffer usage_sniffer_t;

/* New sniffer for one response: its format, whether it is a stream (SSE; for the Bedrock
 * formats an AWS event stream; a Gemini JSON-array stream counts as a body), and the most bytes
 * of one event (streamed) or of the whole body (not streamed) it will read. NULL on failure
 * (also for an unknown format or max_bytes 0). */
usage_sniffer_t *usage_new(usage_format_t fmt, bool streaming, size_t max_bytes);

/* Frees the sniffer (NULL and *s == NULL are fine) and sets *s to NULL. */
void usage_destroy(usage_sniffer_t **s);

/* Sets the callback for stream events (NULL to remove it). */
void usage_set_event_cb(usage_sniffer_t *s, usage_event_fn fn, void *arg);

/* Reads len more response bytes. Returns 0, or an informational negative errno that never
 * requires stopping the relay: -EMSGSIZE (an event or the body went over max_bytes and is not
 * read), -ENOMEM; -EINVAL after usage_finish() or for bad arguments. */
int usage_feed(usage_sniffer_t *s, const uint8_t *buf, size_t len);

/* Gives one response header (before any body byte; names case-insensitive). Only Bedrock's
 * invoke, not streamed, reads any (x-amzn-bedrock-*-token-count): found as soon as the input
 * and output counts are both given as decimal integers (blanks around allowed); a count that is
 * not one counts as malformed and is dropped (the last copy of a header wins). Others, and the
 * invoke stream (whose figures are in the stream), ignore them. */
void usage_header(usage_sniffer_t *s, const char *name, size_t nlen, const char *value,
                  size_t vlen);

/* The response is over (complete or cut short): reads a gathered body, settles a stream. */
void usage_finish(usage_sniffer_t *s);

/* The figures read so far (final after usage_finish()); valid while the sniffer lives. */
const usage_t *usage_get(const usage_sniffer_t *s);

/* Stream offset from which bytes belong to an event not complete yet: every byte before it
 * has been classified (usage_event_fn called). For an event stream, the start of the message
 * not complete yet (a relay that forwards up to it forwards whole messages only); once a bad
 * frame stopped the reading, or after usage_finish(), the bytes fed so far. For a body, the
 * bytes fed so far. */
uint64_t usage_hold_from(const usage_sniffer_t *s);

/* The figures a request is billed on: the one rule the gateway (on what the user got) and the
 * agent (on what it sent) share (DESIGN §4), so the same bytes give the same figures.
 *  - the vendor's own figures were seen (u->found): those, as they are;
 *  - otherwise, a vendor status that is not 2xx (or none: no answer at all): nothing, since
 *    vendors do not charge failed requests;
 *  - otherwise the answer ended early (user cancel, vendor drop, usage missing): estimated,
 *      input  = ceil(body_bytes / 4)        the request body as the user sent it (req.open's
 *                                           body_size): prompt tokens are counted, not waived
 *      cached = 0
 *      output = ceil(u->output_chars / 4)   what was produced before the end
 *    (4 bytes or characters per token: the usual figure for English text with the vendors'
 *    tokenizers; a documented rule, not a tokenizer). */
typedef struct {
    int64_t input_tokens;  /* cached ones included */
    int64_t cached_tokens;
    int64_t output_tokens;
    bool estimated;        /* the estimate rule was used */
} usage_bill_t;

/* Applies the rule above. u may be NULL (nothing seen). status: the vendor's HTTP status. */
void usage_bill(const usage_t *u, int status, int64_t body_bytes, usage_bill_t *out);

#endif
