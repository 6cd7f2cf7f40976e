/* adapters: the interface behind which each vendor's particulars live, and the helpers the
 * vendor files share.
 *
 * One const ag_vendor_ops_t per vendor (adapters/openai.c, azure.c, anthropic.c, gemini.c,
 * vertex.c, bedrock.c); agent/ag_vendor.c holds the parts every vendor shares (the model list,
 * the instance set, the path allow-list of every format, the header filters) and dispatches to
 * the table of an instance's vendor for the rest. A vendor file knows its config keys, its
 * official host, its URLs and its auth; it never sees a path from the hub, only the parsed
 * ag_path_t, so the endpoint lock (DESIGN.md section 3) is decided in one place.
 *
 * Internal to the agent: only ag_vendor.c, the vendor files and their unit test include it.
 */
#ifndef AG_ADAPTERS_H
#define AG_ADAPTERS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "ag_config.h"
#include "ag_vendor.h"
#include "sigv4.h"

/* The bit of one operation in ag_serve_t.ops. */
#define AG_OP_BIT(op) (1u << (unsigned)(op))

/* The operations of the OpenAI API that the "openai" and "azure" formats share. */
#define AG_OPS_OPENAI_ALL                                                                          \
    (AG_OP_BIT(AG_OP_CHAT) | AG_OP_BIT(AG_OP_COMPLETIONS) | AG_OP_BIT(AG_OP_EMBEDDINGS) |          \
     AG_OP_BIT(AG_OP_RESPONSES) | AG_OP_BIT(AG_OP_MODELS))

/* One request format a vendor serves, and which operations in it. */
typedef struct {
    unsigned format;        /* an AG_FMT_ bit; 0 ends the list */
    uint32_t ops;           /* AG_OP_BIT()s served in that format */
    bool openai_compatible; /* served only when the instance sets openai_compatible */
} ag_serve_t;

/* What a vendor file provides. Every function gets an instance of its own vendor. */
typedef struct {
    const char *name;         /* the config's vendor value ("openai") */
    ag_vendor_kind_t kind;    /* AG_VENDOR_ */
    const char *const *keys;  /* its own config keys beyond vendor, models, max_concurrency;
                                 NULL-terminated */
    bool url_models;          /* upstream model names restricted to [A-Za-z0-9._-]: they go in
                                 a URL path segment as they are */
    const ag_serve_t *serves; /* formats and operations served; ends with a zero format */
    /* Fills in's vendor fields from the section's pairs (the keys are known to be allowed);
     * dir is the agent's directory, for relative paths. 0 or -EINVAL / -ENOMEM with one line in
     * err that starts with the key's name and never holds a secret. */
    int (*build)(ag_instance_t *in, const ag_instance_kv_t *kv, const char *dir, char *err,
                 size_t errlen);
    /* Writes the vendor URL of a parsed request that in serves (checked by the caller);
     * upstream is the vendor's model name. 0, -EINVAL (a bad name), -ENOSPC. */
    int (*url)(const ag_instance_t *in, const ag_path_t *p, const char *upstream, char *out,
               size_t outlen);
    /* Writes the static auth header line for op; NULL when the vendor has none (the
     * dispatcher answers 1). 0 or -ENOSPC (out wiped). */
    int (*auth)(const ag_instance_t *in, ag_op_t op, char *out, size_t outlen);
    /* The "Name: value" lines added unless the user sent the name; NULL: none. */
    const char *const *(*default_headers)(const ag_instance_t *in, ag_op_t op);
    /* True when the vendor reads the model from the body for op (op is neither NONE nor
     * MODELS: the dispatcher answers those). */
    bool (*model_in_body)(const ag_instance_t *in, ag_op_t op);
    bool buffers_body; /* the whole body is needed before the call starts (a signature) */
} ag_vendor_ops_t;

extern const ag_vendor_ops_t ag_openai_ops;
extern const ag_vendor_ops_t ag_azure_ops;
extern const ag_vendor_ops_t ag_anthropic_ops;
extern const ag_vendor_ops_t ag_gemini_ops;
extern const ag_vendor_ops_t ag_vertex_ops;
extern const ag_vendor_ops_t ag_bedrock_ops;

/* ---- helpers shared by the vendor files (implemented in ag_vendor.c) ---- */

/* The table of a vendor, or NULL. */
const ag_vendor_ops_t *ag_vendor_ops(ag_vendor_kind_t v);

/* The value of key in a section's pairs, or NULL. */
const char *ag_kv_get(const ag_instance_kv_t *kv, const char *key);

/* Reads a secret (api_key, secret_access_key, ...): printable ASCII without blanks, at most
 * 4096 bytes. A missing or empty value is an error when required, else leaves *out NULL.
 * *out is a malloc'd copy (wipe it when freeing). 0 or -EINVAL / -ENOMEM with err; the
 * message never holds the value. */
int ag_kv_secret(const ag_instance_kv_t *kv, const char *key, bool required, char **out, char *err,
                 size_t errlen);

/* Reads a boolean (true/false, yes/no, on/off, 1/0; def when absent). 0 or -EINVAL with err. */
int ag_kv_bool(const ag_instance_kv_t *kv, const char *key, bool def, bool *out, char *err,
               size_t errlen);

/* Builds an instance whose keys are api_key (required) and openai_compatible (default false):
 * the ops table's build for Anthropic and Gemini. */
int ag_build_key_compat(ag_instance_t *in, const ag_instance_kv_t *kv, const char *dir, char *err,
                        size_t errlen);

/* True when s is a host label of [a-z0-9-], 1 to max bytes, not starting or ending with '-'
 * (an Azure resource, a cloud region). */
bool ag_is_label(const char *s, size_t max);

/* True when s[0..n) is a name that may go in a URL path segment as it is: [A-Za-z0-9._-],
 * 1 to AG_MODEL_MAX bytes, neither "." nor "..". */
bool ag_is_url_name(const char *s, size_t n);

/* strdup into *dst; 0 or -ENOMEM with "out of memory" in err. */
int ag_dup(char **dst, const char *src, char *err, size_t errlen);

/* snprintf into out: 0, or -ENOSPC when it does not fit (out then holds no partial line:
 * it is wiped, since it may hold a key). */
int ag_fmt(char *out, size_t outlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The OpenAI path tail of op ("chat/completions"), or NULL for a non-OpenAI operation. */
const char *ag_openai_tail(ag_op_t op);

/* ---- bedrock.c ---- */

/* Signs like ag_bedrock_sign but hands back lib/sigv4's whole result (canonical request and
 * string to sign included: tests and debugging; never log it, it holds the token). */
int ag_bedrock_sign_result(const ag_instance_t *inst, const char *url, const char *content_type,
                           const void *body, size_t len, time_t now, sigv4_result_t **out);

#endif
