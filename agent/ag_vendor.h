/* ag_vendor: the vendor instances an agent serves, and the endpoint lock.
 *
 * Pure functions, no I/O (but one stat of vertex's service_account_file when the set is
 * built, so that a typo fails at start): the supervisor (`agent run`) and every agent-adapter
 * build the same instance set from agent.conf and use it to decide what a request from the hub
 * may do. Each
 * vendor's particulars (its keys, official host, URLs, auth header) live in its own file under
 * agent/adapters/ behind one interface (adapters/adapters.h); this module dispatches to them.
 *
 * The endpoint lock (DESIGN.md section 3): the hub sends a format (the API dialect the user
 * spoke), a method, a path, a query and a user-facing model name; it can name neither a host nor
 * a credential. A path is accepted only when it is one of the vendor API paths in the allow-list
 * below; it is parsed into an operation, and the URL sent to the vendor is built here from the
 * operation and the chosen instance, on one of the official hosts compiled in:
 *   openai    https://api.openai.com/v1/{chat/completions,completions,embeddings,responses,models}
 *   azure     https://RESOURCE.openai.azure.com/openai/deployments/DEPLOYMENT/
 *                 {chat/completions,completions,embeddings}?api-version=VERSION
 *             https://RESOURCE.openai.azure.com/openai/v1/{responses,models}
 *             (by operation, whichever path the user took: ag_model_in_body answers by
 *             operation alone)
 *   anthropic https://api.anthropic.com/v1/messages, /v1/messages/count_tokens
 *             (openai_compatible: https://api.anthropic.com/v1/chat/completions)
 *   gemini    https://generativelanguage.googleapis.com/v1beta/models/MODEL:{generateContent,
 *                 streamGenerateContent[?alt=sse]}
 *             (openai_compatible: .../v1beta/openai/{chat/completions,embeddings})
 *   vertex    https://REGION-aiplatform.googleapis.com/v1/projects/PROJECT/locations/REGION/
 *                 publishers/google/models/MODEL:{generateContent,streamGenerateContent[?alt=sse]}
 *             (REGION "global": https://aiplatform.googleapis.com/...)
 *             ?alt=sse is sent when the user's query held it (ag_path_t.sse); without it Google
 *             answers one JSON array, which is what that user expects.
 *   bedrock   https://bedrock-runtime.REGION.amazonaws.com/model/MODEL/{invoke,
 *                 invoke-with-response-stream,converse,converse-stream}
 *             (MODEL percent-encoded: ':' as %3A, '/' as %2F)
 * The user's query string is never forwarded; only Gemini's alt=sse is read from it. RESOURCE,
 * DEPLOYMENT, PROJECT, REGION and model names come from agent.conf and are checked so they
 * cannot move the host.
 *
 * Accepted paths (method POST unless said), by format:
 *   "openai":    /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses;
 *                GET /v1/models
 *   "azure":     /openai/deployments/{deployment}/{chat/completions,completions,embeddings}
 *                (the deployment is the user-facing model name), /openai/v1/{chat/completions,
 *                completions,embeddings,responses}, GET /openai/v1/models
 *   "anthropic": /v1/messages, /v1/messages/count_tokens
 *   "gemini":    /v1beta/models/{model}:generateContent, /v1beta/models/{model}:
 *                streamGenerateContent (query alt=sse: an SSE stream, else a JSON array)
 *   "bedrock":   /model/{modelId}/{invoke,invoke-with-response-stream,converse,converse-stream}
 *                (modelId percent-encoded or raw, a raw '/' excepted; decoded here to printable
 *                ASCII)
 * Which instances serve a format: openai → openai, azure; azure → azure; anthropic → anthropic;
 * gemini → gemini, vertex; bedrock → bedrock; and "openai" chat (and embeddings for gemini)
 * also → anthropic and gemini instances with openai_compatible = true.
 */
#ifndef AG_VENDOR_H
#define AG_VENDOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "ag_config.h"

#define AG_MODEL_MAX 256   /* longest model or deployment name */
#define AG_INSTANCE_NAME_MAX 120 /* longest NAME of [instance.NAME] */
#define AG_URL_MAX 1024    /* longest vendor URL built */
#define AG_DEFAULT_AZURE_API_VERSION "2024-10-21"
#define AG_DEFAULT_MAX_CONCURRENCY 64

#define AG_AZURE_API_V1 "v1"  /* azure api_version selecting the /openai/v1/ routes throughout */
#define AG_DEFAULT_ANTHROPIC_VERSION "2023-06-01" /* sent when the user sends none */
#define AG_DEFAULT_BEDROCK_MAX_BODY ((int64_t)20 * 1024 * 1024) /* bedrock max_body_bytes */

typedef enum {
    AG_VENDOR_NONE = 0,
    AG_VENDOR_OPENAI,
    AG_VENDOR_AZURE,
    AG_VENDOR_ANTHROPIC,
    AG_VENDOR_GEMINI,
    AG_VENDOR_VERTEX,
    AG_VENDOR_BEDROCK,
} ag_vendor_kind_t;

/* Request formats, as bits (an instance serves a set of them). */
enum {
    AG_FMT_OPENAI = 1u << 0,
    AG_FMT_AZURE = 1u << 1,
    AG_FMT_ANTHROPIC = 1u << 2,
    AG_FMT_GEMINI = 1u << 3,
    AG_FMT_BEDROCK = 1u << 4,
};

typedef enum {
    AG_OP_NONE = 0,
    AG_OP_CHAT,           /* chat/completions */
    AG_OP_COMPLETIONS,    /* completions */
    AG_OP_EMBEDDINGS,     /* embeddings */
    AG_OP_RESPONSES,      /* responses */
    AG_OP_MODELS,         /* models (GET, no body, no model) */
    AG_OP_MESSAGES,       /* Anthropic messages */
    AG_OP_COUNT_TOKENS,   /* Anthropic messages/count_tokens (not billed) */
    AG_OP_GENERATE,       /* Gemini generateContent */
    AG_OP_STREAM_GENERATE, /* Gemini streamGenerateContent */
    AG_OP_INVOKE,         /* Bedrock invoke */
    AG_OP_INVOKE_STREAM,  /* Bedrock invoke-with-response-stream */
    AG_OP_CONVERSE,       /* Bedrock converse */
    AG_OP_CONVERSE_STREAM, /* Bedrock converse-stream */
} ag_op_t;

/* One served model: the name users ask for and the vendor's name for it. */
typedef struct {
    char *pub; /* user-facing name */
    char *up;  /* upstream: the vendor's model id, or an Azure deployment */
} ag_model_t;

/* One [instance.NAME] section of a supported vendor. Secrets are wiped when freed. */
typedef struct {
    char *name;              /* NAME */
    ag_vendor_kind_t vendor; /* which official host and auth */
    char *api_key;           /* openai, azure, anthropic, gemini (never logged) */
    char *resource;          /* azure: resource (host label) */
    char *api_version;       /* azure: api-version */
    bool openai_compatible;  /* anthropic, gemini: also serve the "openai" format */
    char *project;           /* vertex: project id */
    char *region;            /* vertex, bedrock: region */
    char *service_account_file; /* vertex: service-account JSON (absolute path) */
    char *access_key_id;     /* bedrock */
    char *secret_access_key; /* bedrock (never logged) */
    char *session_token;     /* bedrock, optional (never logged) */
    int64_t max_body_bytes;  /* bedrock: largest body buffered for signing */
    ag_model_t *models;      /* served models */
    size_t n_models;         /* their count */
    int64_t max_concurrency; /* requests in flight at once, across all adapters */
} ag_instance_t;

typedef struct {
    ag_instance_t *v; /* instances in config order */
    size_t n;         /* their count */
} ag_instances_t;

/* A request path from the hub, parsed. */
typedef struct {
    ag_op_t op;             /* the operation */
    unsigned format;        /* the AG_FMT_ bit of the request's format */
    const char *path_model; /* the model named in the path (Azure deployment, Gemini model,
                               Bedrock model id decoded), or NULL; always model_buf, so it does
                               not borrow from the request; after a copy by assignment it still
                               points at the original's: read model_buf (the functions here
                               do) */
    size_t path_model_len;  /* its length */
    bool sse;               /* Gemini streamGenerateContent with alt=sse */
    char model_buf[AG_MODEL_MAX + 1]; /* storage of a decoded path model */
} ag_path_t;

/* Receives one warning line (an instance skipped). */
typedef void (*ag_warn_cb)(void *arg, const char *msg);

/* Builds the served instances from cfg's [instance.NAME] sections. A section whose vendor this
 * build does not serve is skipped with a warning naming it; a served vendor's section with a
 * missing or bad key is an error. 0, or -EINVAL / -ENOMEM with one line in err. */
int ag_instances_build(ag_instances_t *out, const ag_config_t *cfg, ag_warn_cb warn, void *arg,
                       char *err, size_t errlen);
/* Frees the set (wiping keys); safe on a zeroed or freed set. */
void ag_instances_free(ag_instances_t *set);
/* The instance with this name, or NULL. */
const ag_instance_t *ag_instances_find(const ag_instances_t *set, const char *name, size_t len);

/* Parses a models list ("a, b=c"): fills *models and *n (the caller frees with
 * ag_models_free). deployment_names restricts upstream names to [A-Za-z0-9._-]. 0 or -EINVAL
 * with err. */
int ag_models_parse(const char *list, bool deployment_names, ag_model_t **models, size_t *n,
                    char *err, size_t errlen);
void ag_models_free(ag_model_t **models, size_t *n);

/* The upstream name of a user-facing model served by inst, or NULL. */
const char *ag_instance_upstream(const ag_instance_t *inst, const char *pub, size_t len);

/* Vendor name ("openai", "azure", "anthropic", "gemini", "vertex", "bedrock") of a kind, and
 * the kind of a name (AG_VENDOR_NONE if this build does not serve it). */
const char *ag_vendor_name(ag_vendor_kind_t v);
ag_vendor_kind_t ag_vendor_from_name(const char *name);

/* The AG_FMT_ bit of a format name, 0 if unknown; and the name of one bit. */
unsigned ag_format_from_name(const char *name, size_t len);
const char *ag_format_name(unsigned format);

/* The formats inst serves (AG_FMT_ bits; see the top of this file). */
unsigned ag_instance_formats(const ag_instance_t *inst);

/* True when inst can serve op in format (e.g. an openai_compatible anthropic instance serves
 * "openai" chat, not embeddings). */
bool ag_instance_serves(const ag_instance_t *inst, unsigned format, ag_op_t op);

/* Writes the space-separated names of a set of formats (AG_FMT_ bits) for presence ("openai
 * azure"). 0 or -ENOSPC. */
int ag_format_names(unsigned formats, char *out, size_t outlen);

/* Checks format, method, path (and the query, for alt=sse) against the allow-list. 0 with *out
 * set; -ENOTSUP for a format this agent does not speak; -ENOENT for a path not in the list;
 * -EINVAL for a known path with the wrong method or a bad model in the path. */
int ag_path_parse(const char *format, size_t flen, const char *method, size_t mlen,
                  const char *path, size_t plen, const char *query, size_t qlen, ag_path_t *out);

/* The model a request is for: the req.open model, or the model named in the path when that
 * is empty. Returns its length (0: none) and points *model at it; -EINVAL when both are given
 * and differ. */
int ag_request_model(const ag_path_t *p, const char *model, size_t len, const char **out);

/* Writes the vendor URL for the parsed request on inst, with upstream the vendor's model name
 * (unused where the model travels in the body). 0, -EINVAL (bad name, op not served by inst),
 * -ENOSPC. */
int ag_url_build(const ag_instance_t *inst, const ag_path_t *p, const char *upstream, char *out,
                 size_t outlen);

/* True when the vendor reads the model from the body for op (so a renamed model must be
 * rewritten there); false when the URL names it (Azure deployments, Gemini, Vertex, Bedrock)
 * or op has no model. */
bool ag_model_in_body(const ag_instance_t *inst, ag_op_t op);

/* True for the operations whose streams can carry stream_options.include_usage. */
bool ag_op_takes_include_usage(ag_op_t op);

/* The HTTP method op uses ("POST" or "GET"). */
const char *ag_op_method(ag_op_t op);

/* The usage format (lib/usage's usage_format_t) of op's answers, or -1 for an operation that
 * is not billed (models, count_tokens). *stream is set when the answer to this parsed request
 * is a stream by its path (Gemini with alt=sse: SSE; Bedrock's two stream operations: event
 * stream); the OpenAI and Anthropic formats say it with their content-type instead. */
int ag_op_usage(const ag_path_t *p, bool *stream);

/* Writes the vendor's static auth header line ("Authorization: Bearer KEY", "api-key: KEY",
 * "x-api-key: KEY", "x-goog-api-key: KEY") for op on inst: 0; 1 when inst has no static header
 * (vertex: an OAuth token from adapters/vertex's refresher; bedrock: a SigV4 signature over
 * the whole request); -ENOSPC. The result holds the secret: wipe it after use. */
int ag_auth_header(const ag_instance_t *inst, ag_op_t op, char *out, size_t outlen);

/* Header lines the vendor needs that the user may have sent already: each "Name: value" line of
 * the NULL-terminated result is added unless the user's headers carry that name (anthropic:
 * "anthropic-version: 2023-06-01"). Never NULL. */
const char *const *ag_default_headers(const ag_instance_t *inst, ag_op_t op);

/* True when inst needs the whole body before the call starts (bedrock: the signature covers the
 * payload hash); such a body over inst->max_body_bytes is refused with 413. */
bool ag_instance_buffers_body(const ag_instance_t *inst);

/* Bedrock's signature headers: malloc'd "Name: value" lines, wiped when freed. */
typedef struct {
    char *line[4]; /* X-Amz-Security-Token (session credentials only), X-Amz-Date,
                      Authorization */
    size_t n;      /* lines used */
} ag_sig_lines_t;

/* Signs a Bedrock request with SigV4 (lib/sigv4; service "bedrock", inst's region and
 * credentials, signed headers host, content-type, x-amz-date and x-amz-security-token): url is
 * what ag_url_build wrote (its path is encoded once; the canonical URI encodes it again), body
 * the whole payload, content_type the Content-Type sent (required: it is signed, so the request
 * must carry exactly this value). 0 with *out filled, -EINVAL, -ENOMEM, -EIO (OpenSSL). */
int ag_bedrock_sign(const ag_instance_t *inst, const char *url, const char *content_type,
                    const void *body, size_t len, time_t now, ag_sig_lines_t *out);
void ag_sig_lines_free(ag_sig_lines_t *s);

/* 1 when a header from the user may be forwarded to the vendor, 0 when it is dropped:
 * credentials (authorization, api-key, x-api-key, x-goog-api-key, cookie, proxy-*), hop-by-hop
 * (connection, keep-alive, te, trailer, transfer-encoding, upgrade, http2-settings), host,
 * content-length, expect and accept-encoding (set by the agent), the user's OpenAI
 * organization/project and x-goog-user-project (they name an account, not the provider's),
 * x-amz-* and x-amzn-* (the agent signs Bedrock requests itself), forwarding headers and
 * x-relayhub-* (between hub and agent only); also any name that is not an HTTP token and any
 * value with a control character. x-goog-api-client (SDK telemetry) is kept. */
int ag_hdr_to_vendor(const char *name, size_t nlen, const char *value, size_t vlen);

/* 1 when a header from the vendor may go back in resp.head, 0 when dropped: set-cookie,
 * set-cookie2, hop-by-hop, content-length (the gateway frames the body), alt-svc,
 * strict-transport-security, and openai-organization/openai-project (the provider's account
 * ids). */
int ag_hdr_from_vendor(const char *name, size_t nlen);

#endif
