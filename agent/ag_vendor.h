/* ag_vendor: the vendor instances an agent serves, and the endpoint lock.
 *
 * Pure functions, no I/O: the supervisor (`agent run`) and every agent-adapter build the same
 * instance set from agent.conf and use it to decide what a request from the hub may do.
 *
 * The endpoint lock (DESIGN.md section 3): the hub sends a format (the API dialect the user
 * spoke), a method, a path and a user-facing model name; it can name neither a host nor a
 * credential. A path is accepted only when it is one of the vendor API paths in the allow-list
 * below; it is parsed into an operation (chat, completions, ...), and the URL sent to the
 * vendor is built here from the operation and the chosen instance, on one of the official hosts
 * compiled in:
 *   openai  https://api.openai.com/v1/{chat/completions,completions,embeddings,responses,models}
 *   azure   https://RESOURCE.openai.azure.com/openai/deployments/DEPLOYMENT/
 *               {chat/completions,completions,embeddings}?api-version=VERSION
 *           https://RESOURCE.openai.azure.com/openai/v1/{responses,models}
 * The user's query string is never forwarded. RESOURCE and DEPLOYMENT come from agent.conf and
 * are checked to hold only [A-Za-z0-9._-] (resource: [a-z0-9-]), so they cannot move the host.
 *
 * Accepted paths (method, format "openai"): POST /v1/chat/completions, /v1/completions,
 * /v1/embeddings, /v1/responses; GET /v1/models. Format "azure": POST
 * /openai/deployments/{deployment}/{chat/completions,completions,embeddings} (the deployment is
 * the user-facing model name), POST /openai/v1/{chat/completions,completions,embeddings,
 * responses}, GET /openai/v1/models.
 */
#ifndef AG_VENDOR_H
#define AG_VENDOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ag_config.h"

#define AG_MODEL_MAX 256   /* longest model or deployment name */
#define AG_URL_MAX 1024    /* longest vendor URL built */
#define AG_DEFAULT_AZURE_API_VERSION "2024-10-21"
#define AG_DEFAULT_MAX_CONCURRENCY 64

typedef enum { AG_VENDOR_NONE = 0, AG_VENDOR_OPENAI, AG_VENDOR_AZURE } ag_vendor_kind_t;

typedef enum {
    AG_OP_NONE = 0,
    AG_OP_CHAT,        /* chat/completions */
    AG_OP_COMPLETIONS, /* completions */
    AG_OP_EMBEDDINGS,  /* embeddings */
    AG_OP_RESPONSES,   /* responses */
    AG_OP_MODELS,      /* models (GET, no body, no model) */
} ag_op_t;

/* One served model: the name users ask for and the vendor's name for it. */
typedef struct {
    char *pub; /* user-facing name */
    char *up;  /* upstream: OpenAI model id or Azure deployment */
} ag_model_t;

/* One [instance.NAME] section of a supported vendor. */
typedef struct {
    char *name;              /* NAME */
    ag_vendor_kind_t vendor; /* which official host and auth header */
    char *api_key;           /* the credential (never logged) */
    char *resource;          /* Azure resource (host label); NULL for OpenAI */
    char *api_version;       /* Azure api-version; NULL for OpenAI */
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
    const char *path_model; /* deployment named in an Azure path (borrowed), or NULL */
    size_t path_model_len;  /* its length */
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

/* Vendor name ("openai", "azure") of a kind, and the kind of a name (AG_VENDOR_NONE if this
 * build does not serve it). */
const char *ag_vendor_name(ag_vendor_kind_t v);
ag_vendor_kind_t ag_vendor_from_name(const char *name);

/* Checks format, method and path against the allow-list. 0 with *out set; -ENOTSUP for a format
 * this agent does not speak; -ENOENT for a path not in the list; -EINVAL for a known path with
 * the wrong method. */
int ag_path_parse(const char *format, size_t flen, const char *method, size_t mlen,
                  const char *path, size_t plen, ag_path_t *out);

/* The model a request is for: the req.open model, or the deployment named in the path when that
 * is empty. Returns its length (0: none) and points *model at it; -EINVAL when both are given
 * and differ. */
int ag_request_model(const ag_path_t *p, const char *model, size_t len, const char **out);

/* Writes the vendor URL for op on inst, with upstream the vendor's model name (unused for
 * OpenAI, whose model travels in the body). 0, -EINVAL (bad name), -ENOSPC. */
int ag_url_build(const ag_instance_t *inst, ag_op_t op, const char *upstream, char *out,
                 size_t outlen);

/* True when the vendor reads the model from the body for op (so a renamed model must be
 * rewritten there); false when the URL names it (Azure deployments) or op has no model. */
bool ag_model_in_body(const ag_instance_t *inst, ag_op_t op);

/* True for the operations whose streams can carry stream_options.include_usage. */
bool ag_op_takes_include_usage(ag_op_t op);

/* The HTTP method op uses ("POST" or "GET"). */
const char *ag_op_method(ag_op_t op);

/* Writes the vendor's auth header line ("Authorization: Bearer KEY" or "api-key: KEY").
 * 0 or -ENOSPC. The result holds the secret: wipe it after use. */
int ag_auth_header(const ag_instance_t *inst, char *out, size_t outlen);

/* 1 when a header from the user may be forwarded to the vendor, 0 when it is dropped:
 * credentials (authorization, api-key, x-api-key, x-goog-api-key, cookie, proxy-*), hop-by-hop
 * (connection, keep-alive, te, trailer, transfer-encoding, upgrade, http2-settings), host,
 * content-length, expect and accept-encoding (set by the agent), the user's OpenAI
 * organization/project (they name the user's account, not the provider's), forwarding headers
 * and x-relayhub-* (between hub and agent only); also any name that is not an HTTP token and
 * any value with a control character. */
int ag_hdr_to_vendor(const char *name, size_t nlen, const char *value, size_t vlen);

/* 1 when a header from the vendor may go back in resp.head, 0 when dropped: set-cookie,
 * set-cookie2, hop-by-hop, content-length (the gateway frames the body), alt-svc,
 * strict-transport-security, and openai-organization/openai-project (the provider's account
 * ids). */
int ag_hdr_from_vendor(const char *name, size_t nlen);

#endif
