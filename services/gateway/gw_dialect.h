/* gw_dialect: the API dialects (request formats) the gateway speaks, as one table.
 *
 * Pure functions, no I/O: what each format's endpoints are, where its model and its user key
 * are, which user headers go on to the agent, and how its errors look — before a response
 * starts (status, headers, JSON body) and in the middle of a stream (the bytes that tell the
 * reader the answer broke). gw_server does the I/O; tests/unit/test_gw_dialect.c checks this
 * table without a server.
 *
 * Endpoints (POST with a JSON object body unless said):
 *   openai     /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses;
 *              GET /v1/models (the models served in this format); key: Authorization: Bearer
 *   anthropic  /v1/messages, /v1/messages/count_tokens (not billed: no hold, no usage report);
 *              key: x-api-key, else Authorization: Bearer (the current SDK sends Bearer);
 *              anthropic-version and anthropic-beta are passed on to the agent
 *   gemini     /v1beta/models/{model}:generateContent, :streamGenerateContent (the model is in
 *              the path; streamed as SSE with ?alt=sse, else as a JSON array); key:
 *              x-goog-api-key, else the key= query parameter (never passed on, never logged)
 *   bedrock    /model/{modelId}/invoke, /invoke-with-response-stream, /converse,
 *              /converse-stream (the model id in the path, percent-encoded as AWS SDKs send it
 *              or raw); key: Authorization: Bearer; the two stream operations answer with AWS
 *              event-stream frames, relayed byte for byte
 * Any other path is a 404 in the shape of the format its prefix suggests (/v1/messages… →
 * anthropic, /v1beta/… → gemini, /model/… → bedrock, anything else → openai). Over HTTP/2
 * (TLS listeners only), libwebsockets 4.1 keeps no header it does not know by name: x-api-key,
 * x-goog-api-key, anthropic-version and anthropic-beta are then not seen, so such clients send
 * the key as Authorization: Bearer (anthropic) or ?key= (gemini).
 *
 * Paths reach the gateway percent-decoded by libwebsockets (which also folds "//", "/./" and
 * "/../"), so a Bedrock model id like "anthropic.claude-3-5-haiku-20241022-v1%3A0" arrives as
 * "…-v1:0" and an ARN's "%2F" as "/". The Bedrock model id is everything between "/model/" and
 * the last "/": it may contain "/" only when it is an ARN ("arn:…"), which is the only kind of
 * Bedrock id that has one. Path models (Gemini, Bedrock) must be 1 to GW_MODEL_MAX bytes of
 * printable ASCII without spaces (0x21..0x7e; Gemini: no "/" either). req.open's path is then
 * rebuilt: for Bedrock with the model id encoded the way AWS SDKs encode it (every byte but
 * A-Z a-z 0-9 - _ . ~ as %XX, so ':' is %3A and '/' is %2F), for the others as received.
 *
 * Errors the gateway itself answers (status → shape):
 *   openai     {"error":{"message","type","param":null,"code"}} (unchanged)
 *   anthropic  {"type":"error","error":{"type","message"},"request_id"} + header request-id
 *              (the x-request-id value); type by status: 400 invalid_request_error,
 *              401 authentication_error, 402 billing_error (our "insufficient balance": the
 *              type Anthropic itself uses for 402, which the SDK surfaces as an APIError with
 *              status 402 and is not retried), 403 permission_error, 404 not_found_error,
 *              413 request_too_large, 429 rate_limit_error, other 4xx (405, 411, ...)
 *              invalid_request_error, 500 and 502 api_error, 503 overloaded_error, 504
 *              timeout_error, other 5xx api_error
 *   gemini     {"error":{"code":N,"message","status"}}; status by code: 400 INVALID_ARGUMENT,
 *              401 UNAUTHENTICATED, 402 FAILED_PRECONDITION (the HTTP status stays 402),
 *              403 PERMISSION_DENIED, 404 NOT_FOUND, 413 INVALID_ARGUMENT,
 *              429 RESOURCE_EXHAUSTED, other 4xx INVALID_ARGUMENT, 500 INTERNAL,
 *              502 and 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED, other 5xx INTERNAL. Keys as
 *              Google answers them: no key → 403 PERMISSION_DENIED; a wrong key → 400
 *              INVALID_ARGUMENT "API key not valid. Please pass a valid API key." with details
 *              [{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID",
 *              "domain":"googleapis.com","metadata":{"service":
 *              "generativelanguage.googleapis.com"}}]
 *   bedrock    {"message"} + headers x-amzn-ErrorType and x-amzn-RequestId (the x-request-id
 *              value); type by status: 400, 405, 411, 413 and other 4xx ValidationException,
 *              401 UnrecognizedClientException, 402 AccessDeniedException (the HTTP status
 *              stays 402: AWS SDKs name the error from the header), 403 AccessDeniedException,
 *              404 ResourceNotFoundException, 429 ThrottlingException,
 *              500 InternalServerException, 502 and 503 ServiceUnavailableException,
 *              504 ModelTimeoutException, other 5xx InternalServerException
 * Every body is one line of compact JSON and a newline, content-type application/json.
 *
 * A stream that breaks after its first byte (resp.end with an error) ends with, by format:
 *   openai SSE     data: {"error":{"message":"stream interrupted: …","type":"server_error",
 *                  "param":null,"code":"stream_interrupted"}}\n\n
 *   anthropic SSE  event: error\ndata: {"type":"error","error":{"type":"api_error",
 *                  "message":"stream interrupted: …"}}\n\n
 *   gemini SSE     data: {"error":{"code":500,"message":"stream interrupted: …",
 *                  "status":"INTERNAL"}}\r\n\r\n
 *   bedrock stream one event-stream message: :message-type exception, :exception-type
 *                  internalServerException, :content-type application/json, payload
 *                  {"message":"stream interrupted: …"}
 * and anything else (a JSON body, a Gemini JSON-array stream) just ends short (the gateway
 * closes the connection without the last chunk). Only a 2xx answer is told so: after a
 * vendor's error status, the vendor's own error body is what the reader gets.
 */
#ifndef GW_DIALECT_H
#define GW_DIALECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_routes.h"
#include "usage.h"

#define GW_PATH_MAX 1024      /* longest path kept (a Bedrock path with a 256-byte id, encoded) */
#define GW_QUERY_MAX 512      /* longest query passed on */
#define GW_KEY_MAX 255        /* longest user key read from a query */
#define GW_FWD_HEADERS_MAX 2  /* user headers a format passes on, at most */
#define GW_FWD_VALUE_MAX 1024 /* longest value of one */

/* The operations behind the endpoints. */
typedef enum {
    GW_OP_NONE = 0,        /* not an endpoint */
    GW_OP_MODELS,          /* GET /v1/models */
    GW_OP_CHAT,            /* openai chat/completions */
    GW_OP_COMPLETIONS,     /* openai completions */
    GW_OP_EMBEDDINGS,      /* openai embeddings */
    GW_OP_RESPONSES,       /* openai responses */
    GW_OP_MESSAGES,        /* anthropic messages */
    GW_OP_COUNT_TOKENS,    /* anthropic messages/count_tokens */
    GW_OP_GENERATE,        /* gemini generateContent */
    GW_OP_STREAM_GENERATE, /* gemini streamGenerateContent */
    GW_OP_INVOKE,          /* bedrock invoke */
    GW_OP_INVOKE_STREAM,   /* bedrock invoke-with-response-stream */
    GW_OP_CONVERSE,        /* bedrock converse */
    GW_OP_CONVERSE_STREAM, /* bedrock converse-stream */
} gw_op_t;

/* A request path, parsed. */
typedef struct {
    gw_format_t format;           /* its format (for an unknown path: the one its prefix
                                     suggests, for the shape of the 404) */
    gw_op_t op;                   /* GW_OP_NONE for an unknown path */
    bool get;                     /* the endpoint takes GET (else POST) */
    bool model_in_path;           /* gemini, bedrock: the path names the model */
    char model[GW_MODEL_MAX + 1]; /* that model, decoded ("" when in the body) */
    size_t model_len;             /* its length */
    char path[GW_PATH_MAX];       /* the path for req.open (and log lines) */
} gw_endpoint_t;

/* Parses a path as libwebsockets hands it (percent-decoded, without the query). 0 with *ep
 * filled; -ENOENT for a path that is no endpoint (ep->format set for the 404's shape, ep->path
 * the path, cut to fit); -EINVAL for an endpoint whose path model is not acceptable (see the
 * top of this file). */
int gw_endpoint_parse(const char *path, gw_endpoint_t *ep);

/* The format a path's prefix suggests (for paths that are no endpoint). */
gw_format_t gw_dialect_guess(const char *path);

/* True when the endpoint's requests ask for a hold and report usage (every POST endpoint but
 * anthropic count_tokens). */
bool gw_endpoint_billed(const gw_endpoint_t *ep);

/* True for the endpoints whose answer is a stream because of the path (bedrock's two stream
 * operations: AWS event stream), not because of a content-type. */
bool gw_endpoint_stream_op(const gw_endpoint_t *ep);

/* How the gateway's usage sniffer reads a 200 answer of this endpoint: 0 with *fmt and
 * *streaming set, -1 when the endpoint is not billed. content_sse: the answer's content-type
 * is text/event-stream (what decides streaming for openai and anthropic); alt_sse: the query
 * asked for alt=sse (gemini streamGenerateContent: SSE; without it a JSON array, read as a
 * body). Bedrock streams by path. */
int gw_endpoint_usage(const gw_endpoint_t *ep, bool content_sse, bool alt_sse, usage_format_t *fmt,
                      bool *streaming);

/* The query string, as the gateway uses it. */
typedef struct {
    char forward[GW_QUERY_MAX]; /* the query for req.open (without '?'): gemini only "alt=sse"
                                   (streamGenerateContent only); the others every parameter
                                   but key=, each percent-encoded again, joined with '&' */
    bool alt_sse;               /* alt=sse was asked */
    bool has_key;               /* a non-empty key= was given (the first one counts) */
    char key[GW_KEY_MAX + 1];   /* its value (a secret: wipe it after use) */
} gw_query_t;

/* Reads the query from its n decoded "name=value" pieces (how libwebsockets keeps them) for an
 * endpoint. 0; -ENOSPC when the forwarded query would not fit or key= is over GW_KEY_MAX. */
int gw_query_parse(const gw_endpoint_t *ep, const char *const *pieces, size_t n, gw_query_t *out);

/* Where a user key may be, as read from the request (NULL: absent). */
typedef struct {
    const char *authorization;  /* the Authorization header */
    const char *x_api_key;      /* x-api-key */
    const char *x_goog_api_key; /* x-goog-api-key */
    const char *query_key;      /* the key= query parameter */
} gw_creds_t;

/* The user's hub key for a format, from the places that format reads (see the top of this
 * file; surrounding spaces trimmed). 0 with *key and *len set (borrowed from c); -ENOENT when
 * none was presented. */
int gw_dialect_key(gw_format_t f, const gw_creds_t *c, const char **key, size_t *len);

/* The message of a 401 for a request that presented no key, in the format's words. */
const char *gw_dialect_no_key_message(gw_format_t f);

/* The NULL-terminated lowercase names of the user headers a format passes on to the agent in
 * req.open (anthropic: anthropic-version, anthropic-beta; others: none). */
const char *const *gw_dialect_forward_headers(gw_format_t f);

/* True when a forwarded header value may go on: 1 to GW_FWD_VALUE_MAX bytes of printable ASCII
 * (and tabs). */
bool gw_dialect_header_value_ok(const char *v, size_t len);

/* An error answer built for a format. */
typedef struct {
    int status;    /* the HTTP status to send (gemini's key errors change it) */
    char *headers; /* "name: value\r\n" lines, content-type first (malloc'd) */
    size_t headers_len;
    char *body; /* the JSON body and a newline (malloc'd) */
    size_t body_len;
} gw_error_t;

/* Builds the error answer for a format. status, type and code are the gateway's (OpenAI's
 * words: type "invalid_request_error", code "invalid_api_key", ...); code "missing_api_key"
 * (no key presented) and "invalid_api_key" with status 401 (a wrong key) are the key errors
 * that gemini answers Google's way. request_id is the x-request-id value. 0 or -ENOMEM. */
int gw_dialect_error(gw_format_t f, int status, const char *type, const char *code,
                     const char *message, const char *request_id, gw_error_t *out);

/* Frees what gw_dialect_error built (accepts a zeroed or half-built one) and zeroes it. */
void gw_error_free(gw_error_t *e);

/* The bytes that end a stream broken after its first byte (see the top of this file), for an
 * answer of this endpoint with this status whose content-type is SSE or not. why is the
 * reason (cut to 200 bytes). A malloc'd buffer of *out_len bytes, or NULL when the format's
 * reader can only be told by the connection ending short, for a status that is not 2xx, or
 * on ENOMEM. */
uint8_t *gw_dialect_stream_error(const gw_endpoint_t *ep, int status, bool sse, const char *why,
                                 size_t why_len, size_t *out_len);

#endif
