/* ag_vendor: the instance set, model mapping, the path allow-list of every format and the header
 * filters; everything vendor-specific is dispatched to adapters/<vendor>.c. */
#include "ag_vendor.h"
#include "pct.h"
#include "adapters/adapters.h"
#include "usage.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_SECRET_MAX 4096 /* longest key, secret or session token accepted */

/* Every vendor this build serves, in AG_VENDOR_ order. */
static const ag_vendor_ops_t *const s_vendors[] = {
    &ag_openai_ops, &ag_azure_ops,  &ag_anthropic_ops,
    &ag_gemini_ops, &ag_vertex_ops, &ag_bedrock_ops,
};
#define S_N_VENDORS (sizeof s_vendors / sizeof s_vendors[0])

/* Keys every instance section may hold, whatever its vendor. */
static const char *const s_common_keys[] = {"vendor", "models", "max_concurrency", NULL};

/* Request formats by bit, in bit order. */
static const struct {
    unsigned bit;     /* AG_FMT_ */
    const char *name; /* its name on the wire */
} s_formats[] = {
    {AG_FMT_OPENAI, "openai"}, {AG_FMT_AZURE, "azure"},     {AG_FMT_ANTHROPIC, "anthropic"},
    {AG_FMT_GEMINI, "gemini"}, {AG_FMT_BEDROCK, "bedrock"},
};
#define S_N_FORMATS (sizeof s_formats / sizeof s_formats[0])

/* ---- helpers shared with the vendor files ---- */

const ag_vendor_ops_t *ag_vendor_ops(ag_vendor_kind_t v)
{
    for (size_t i = 0; i < S_N_VENDORS; i++) {
        if (s_vendors[i]->kind == v)
            return s_vendors[i];
    }
    return NULL;
}

const char *ag_kv_get(const ag_instance_kv_t *kv, const char *key)
{
    for (size_t i = 0; kv && i < kv->n; i++) {
        if (strcmp(kv->key[i], key) == 0)
            return kv->value[i];
    }
    return NULL;
}

int ag_kv_secret(const ag_instance_kv_t *kv, const char *key, bool required, char **out,
                 char *err, size_t errlen)
{
    *out = NULL;
    const char *v = ag_kv_get(kv, key);
    if (!v || !v[0]) {
        if (!required)
            return 0;
        snprintf(err, errlen, "%s: required", key);
        return -EINVAL;
    }
    size_t n = strlen(v);
    if (n > S_SECRET_MAX) {
        snprintf(err, errlen, "%s: longer than %d bytes", key, S_SECRET_MAX);
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x21 || c > 0x7e) {
            snprintf(err, errlen, "%s: holds a blank, a control or a non-ASCII character "
                     "(printable ASCII only)", key);
            return -EINVAL;
        }
    }
    return ag_dup(out, v, err, errlen);
}

int ag_build_key_compat(ag_instance_t *in, const ag_instance_kv_t *kv, const char *dir, char *err,
                        size_t errlen)
{
    (void)dir;
    int rc = ag_kv_secret(kv, "api_key", true, &in->api_key, err, errlen);
    return rc ? rc
              : ag_kv_bool(kv, "openai_compatible", false, &in->openai_compatible, err, errlen);
}

int ag_kv_bool(const ag_instance_kv_t *kv, const char *key, bool def, bool *out, char *err,
               size_t errlen)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    const char *v = ag_kv_get(kv, key);
    *out = def;
    if (!v || !v[0])
        return 0;
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    snprintf(err, errlen, "%s: expected true or false", key);
    return -EINVAL;
}

bool ag_is_label(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    }
    return true;
}

/* True for characters allowed in a URL-safe name (an Azure deployment, a Gemini model). */
static bool s_url_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-';
}

/* True for characters allowed in any model name: a URL-safe name's plus ':', '/', '@', '+'. */
static bool s_model_char(char ch)
{
    return s_url_char(ch) || ch == ':' || ch == '/' || ch == '@' || ch == '+';
}

bool ag_is_url_name(const char *s, size_t n)
{
    if (!s || n == 0 || n > AG_MODEL_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!s_url_char(s[i]))
            return false;
    }
    /* "." and ".." would be path segments of their own. */
    return !(n <= 2 && s[0] == '.' && s[n - 1] == '.');
}

/* Checks a model name of n bytes: URL-safe, or any model name. 0 or -EINVAL. */
static int s_check_name(const char *s, size_t n, bool url_safe)
{
    if (url_safe)
        return ag_is_url_name(s, n) ? 0 : -EINVAL;
    if (n == 0 || n > AG_MODEL_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (!s_model_char(s[i]))
            return -EINVAL;
    }
    return 0;
}

int ag_dup(char **dst, const char *src, char *err, size_t errlen)
{
    *dst = strdup(src);
    if (*dst)
        return 0;
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
}

int ag_fmt(char *out, size_t outlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, outlen, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= outlen) {
        if (outlen)
            sodium_memzero(out, outlen);
        return -ENOSPC;
    }
    return 0;
}

const char *ag_openai_tail(ag_op_t op)
{
    switch (op) {
    case AG_OP_CHAT:
        return "chat/completions";
    case AG_OP_COMPLETIONS:
        return "completions";
    case AG_OP_EMBEDDINGS:
        return "embeddings";
    case AG_OP_RESPONSES:
        return "responses";
    case AG_OP_MODELS:
        return "models";
    default:
        return NULL;
    }
}

/* ---- vendors and formats ---- */

const char *ag_vendor_name(ag_vendor_kind_t v)
{
    const ag_vendor_ops_t *ops = ag_vendor_ops(v);
    return ops ? ops->name : "?";
}

ag_vendor_kind_t ag_vendor_from_name(const char *name)
{
    for (size_t i = 0; name && i < S_N_VENDORS; i++) {
        if (strcmp(name, s_vendors[i]->name) == 0)
            return s_vendors[i]->kind;
    }
    return AG_VENDOR_NONE;
}

unsigned ag_format_from_name(const char *name, size_t len)
{
    for (size_t i = 0; name && i < S_N_FORMATS; i++) {
        if (strlen(s_formats[i].name) == len && memcmp(s_formats[i].name, name, len) == 0)
            return s_formats[i].bit;
    }
    return 0;
}

const char *ag_format_name(unsigned format)
{
    for (size_t i = 0; i < S_N_FORMATS; i++) {
        if (s_formats[i].bit == format)
            return s_formats[i].name;
    }
    return "?";
}

/* True when a serve row applies to inst (its openai_compatible condition holds). */
static bool s_row_on(const ag_instance_t *inst, const ag_serve_t *row)
{
    return !row->openai_compatible || inst->openai_compatible;
}

unsigned ag_instance_formats(const ag_instance_t *inst)
{
    const ag_vendor_ops_t *ops = inst ? ag_vendor_ops(inst->vendor) : NULL;
    unsigned f = 0;
    for (const ag_serve_t *row = ops ? ops->serves : NULL; row && row->format; row++) {
        if (s_row_on(inst, row))
            f |= row->format;
    }
    return f;
}

bool ag_instance_serves(const ag_instance_t *inst, unsigned format, ag_op_t op)
{
    const ag_vendor_ops_t *ops = inst ? ag_vendor_ops(inst->vendor) : NULL;
    if (op <= AG_OP_NONE || op > AG_OP_CONVERSE_STREAM)
        return false;
    for (const ag_serve_t *row = ops ? ops->serves : NULL; row && row->format; row++) {
        if (row->format == format && (row->ops & AG_OP_BIT(op)) && s_row_on(inst, row))
            return true;
    }
    return false;
}

int ag_format_names(unsigned f, char *out, size_t outlen)
{
    size_t used = 0;
    if (outlen == 0)
        return -ENOSPC;
    out[0] = '\0';
    for (size_t i = 0; i < S_N_FORMATS; i++) {
        if (!(f & s_formats[i].bit))
            continue;
        int n = snprintf(out + used, outlen - used, "%s%s", used ? " " : "", s_formats[i].name);
        if (n < 0 || (size_t)n >= outlen - used) {
            out[0] = '\0';
            return -ENOSPC;
        }
        used += (size_t)n;
    }
    return 0;
}

/* ---- models ---- */

/* Copies s[0..n) with surrounding blanks trimmed into a new string (NULL on no memory). */
static char *s_trimdup(const char *s, size_t n)
{
    while (n && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    char *r = malloc(n + 1);
    if (r) {
        if (n)
            memcpy(r, s, n);
        r[n] = '\0';
    }
    return r;
}

void ag_models_free(ag_model_t **models, size_t *n)
{
    if (!models || !*models)
        return;
    for (size_t i = 0; i < *n; i++) {
        free((*models)[i].pub);
        free((*models)[i].up);
    }
    free(*models);
    *models = NULL;
    *n = 0;
}

int ag_models_parse(const char *list, bool deployment_names, ag_model_t **models, size_t *n,
                    char *err, size_t errlen)
{
    *models = NULL;
    *n = 0;
    size_t cap = 1;
    for (const char *p = list; p && *p; p++)
        cap += *p == ',';
    ag_model_t *m = calloc(cap, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    size_t count = 0;
    const char *p = list ? list : "";
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char *item = s_trimdup(p, len);
        if (!item)
            goto nomem;
        if (!item[0]) {
            free(item);
            if (!comma)
                break;
            p = comma + 1;
            continue;
        }
        char *eq = strchr(item, '=');
        char *pub = eq ? s_trimdup(item, (size_t)(eq - item)) : s_trimdup(item, strlen(item));
        char *up = eq ? s_trimdup(eq + 1, strlen(eq + 1)) : s_trimdup(item, strlen(item));
        free(item);
        if (!pub || !up) {
            free(pub);
            free(up);
            goto nomem;
        }
        if (s_check_name(pub, strlen(pub), false) != 0 ||
            s_check_name(up, strlen(up), deployment_names) != 0) {
            snprintf(err, errlen, "models: \"%.64s\" is not NAME or PUBLIC=UPSTREAM "
                     "(names of [A-Za-z0-9._-%s], at most %d bytes)", pub[0] ? pub : up,
                     deployment_names ? "" : ":/@+", AG_MODEL_MAX);
            free(pub);
            free(up);
            goto bad;
        }
        for (size_t i = 0; i < count; i++) {
            if (strcmp(m[i].pub, pub) == 0) {
                snprintf(err, errlen, "models: \"%s\" is listed twice", pub);
                free(pub);
                free(up);
                goto bad;
            }
        }
        m[count].pub = pub;
        m[count].up = up;
        count++;
        if (!comma)
            break;
        p = comma + 1;
    }
    if (count == 0) {
        snprintf(err, errlen, "models: empty (list the model names this instance serves)");
        goto bad;
    }
    *models = m;
    *n = count;
    return 0;
nomem:
    snprintf(err, errlen, "out of memory");
    ag_models_free(&m, &count);
    return -ENOMEM;
bad:
    ag_models_free(&m, &count);
    return -EINVAL;
}

const char *ag_instance_upstream(const ag_instance_t *inst, const char *pub, size_t len)
{
    for (size_t i = 0; inst && i < inst->n_models; i++) {
        if (strlen(inst->models[i].pub) == len && memcmp(inst->models[i].pub, pub, len) == 0)
            return inst->models[i].up;
    }
    return NULL;
}

/* ---- the instance set ---- */

/* Wipes and frees a string that may hold a secret. */
static void s_free_secret(char *s)
{
    if (s) {
        sodium_memzero(s, strlen(s));
        free(s);
    }
}

/* Frees one instance's contents (wiping its secrets); copes with a half-built one. */
static void s_instance_free(ag_instance_t *in)
{
    free(in->name);
    s_free_secret(in->api_key);
    free(in->resource);
    free(in->api_version);
    free(in->project);
    free(in->region);
    free(in->service_account_file);
    s_free_secret(in->access_key_id);
    s_free_secret(in->secret_access_key);
    s_free_secret(in->session_token);
    ag_models_free(&in->models, &in->n_models);
    sodium_memzero(in, sizeof *in);
}

/* True when key is one of the NULL-terminated list. */
static bool s_listed(const char *const *list, const char *key)
{
    for (size_t k = 0; list && list[k]; k++) {
        if (strcmp(list[k], key) == 0)
            return true;
    }
    return false;
}

/* Fills one instance from its section; 0 or -EINVAL/-ENOMEM with err (without the section). */
static int s_instance_build(ag_instance_t *in, const char *name, const ag_vendor_ops_t *ops,
                            const ag_instance_kv_t *kv, const char *dir, char *err,
                            size_t errlen)
{
    for (size_t i = 0; kv && i < kv->n; i++) {
        if (!s_listed(s_common_keys, kv->key[i]) && !s_listed(ops->keys, kv->key[i])) {
            snprintf(err, errlen, "%s: not a key of vendor %s", kv->key[i], ops->name);
            return -EINVAL;
        }
    }
    in->vendor = ops->kind;
    int rc = ag_dup(&in->name, name, err, errlen);
    if (rc != 0)
        return rc;
    rc = ops->build(in, kv, dir, err, errlen);
    if (rc != 0)
        return rc;
    const char *mc = ag_kv_get(kv, "max_concurrency");
    in->max_concurrency = AG_DEFAULT_MAX_CONCURRENCY;
    if (mc) {
        char *end = NULL;
        errno = 0;
        long long val = strtoll(mc, &end, 10);
        if (errno || !end || *end || end == mc || val < 1 || val > 100000) {
            snprintf(err, errlen, "max_concurrency: expected a number from 1 to 100000");
            return -EINVAL;
        }
        in->max_concurrency = val;
    }
    return ag_models_parse(ag_kv_get(kv, "models"), ops->url_models, &in->models,
                           &in->n_models, err, errlen);
}

int ag_instances_build(ag_instances_t *out, const ag_config_t *cfg, ag_warn_cb warn, void *arg,
                       char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (cfg->n_instances == 0)
        return 0;
    out->v = calloc(cfg->n_instances, sizeof *out->v);
    if (!out->v) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (size_t i = 0; i < cfg->n_instances; i++) {
        const char *vendor = cfg->instance_vendor[i];
        const ag_vendor_ops_t *ops = ag_vendor_ops(ag_vendor_from_name(vendor));
        if (!ops) {
            char msg[256];
            snprintf(msg, sizeof msg,
                     "[instance.%s]: vendor \"%.32s\" is not supported by this build; skipped",
                     cfg->instances[i], vendor ? vendor : "(none)");
            if (warn)
                warn(arg, msg);
            continue;
        }
        char why[512] = "";
        int rc = 0;
        if (strlen(cfg->instances[i]) > AG_INSTANCE_NAME_MAX) {
            snprintf(why, sizeof why, "name: at most %d characters", AG_INSTANCE_NAME_MAX);
            rc = -EINVAL;
        } else {
            rc = s_instance_build(&out->v[out->n], cfg->instances[i], ops, cfg->instance_kv[i],
                                  cfg->dir, why, sizeof why);
        }
        if (rc != 0) {
            snprintf(err, errlen, "instance.%s.%s", cfg->instances[i], why);
            s_instance_free(&out->v[out->n]);
            ag_instances_free(out);
            return rc;
        }
        out->n++;
    }
    return 0;
}

void ag_instances_free(ag_instances_t *set)
{
    if (!set)
        return;
    for (size_t i = 0; set->v && i < set->n; i++)
        s_instance_free(&set->v[i]);
    free(set->v);
    set->v = NULL;
    set->n = 0;
}

const ag_instance_t *ag_instances_find(const ag_instances_t *set, const char *name, size_t len)
{
    for (size_t i = 0; set && i < set->n; i++) {
        if (strlen(set->v[i].name) == len && memcmp(set->v[i].name, name, len) == 0)
            return &set->v[i];
    }
    return NULL;
}

/* ---- the path allow-list ---- */

/* True when s[0..n) equals the NUL-terminated lit. */
static bool s_eq(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n == l && (l == 0 || memcmp(s, lit, l) == 0);
}

/* True when s[0..n) starts with the NUL-terminated lit. */
static bool s_prefix(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n >= l && memcmp(s, lit, l) == 0;
}

/* The operation an OpenAI path tail names ("chat/completions" → AG_OP_CHAT), or AG_OP_NONE. */
static ag_op_t s_openai_op(const char *s, size_t n, bool v1_only_ok)
{
    static const ag_op_t ops[] = {AG_OP_CHAT, AG_OP_COMPLETIONS, AG_OP_EMBEDDINGS,
                                  AG_OP_RESPONSES, AG_OP_MODELS};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        if (!v1_only_ok && (ops[i] == AG_OP_RESPONSES || ops[i] == AG_OP_MODELS))
            continue;
        if (s_eq(s, n, ag_openai_tail(ops[i])))
            return ops[i];
    }
    return AG_OP_NONE;
}

/* Stores a URL-safe model of the path in out->model_buf. 0 or -EINVAL. */
static int s_set_url_model(ag_path_t *out, const char *s, size_t n)
{
    if (!ag_is_url_name(s, n))
        return -EINVAL;
    memcpy(out->model_buf, s, n);
    out->model_buf[n] = '\0';
    out->path_model = out->model_buf;
    out->path_model_len = n;
    return 0;
}

/* Decodes a Bedrock model id (%XX escapes; raw ':' and the like kept) into out->model_buf.
 * The id must decode to 1..AG_MODEL_MAX bytes of printable ASCII (0x21-0x7e). 0 or -EINVAL. */
static int s_set_bedrock_model(ag_path_t *out, const char *s, size_t n)
{
    int len = pct_decode(s, n, out->model_buf, sizeof out->model_buf);
    if (len <= 0)
        return -EINVAL;
    for (int i = 0; i < len; i++) {
        unsigned char c = (unsigned char)out->model_buf[i];
        if (c < 0x21 || c > 0x7e)
            return -EINVAL;
    }
    out->path_model = out->model_buf;
    out->path_model_len = (size_t)len;
    return 0;
}

/* True when the query (without '?'; parameters split at '&') holds alt=sse. Nothing else in it
 * is read: the query is never forwarded. */
static bool s_query_alt_sse(const char *q, size_t n)
{
    if (q && n && q[0] == '?') {
        q++;
        n--;
    }
    while (q && n) {
        const char *amp = memchr(q, '&', n);
        size_t l = amp ? (size_t)(amp - q) : n;
        if (s_eq(q, l, "alt=sse"))
            return true;
        if (!amp)
            break;
        n -= l + 1;
        q = amp + 1;
    }
    return false;
}

/* Format "openai": /v1/{chat/completions,completions,embeddings,responses,models}. */
static int s_parse_openai(const char *path, size_t plen, ag_path_t *out)
{
    if (!s_prefix(path, plen, "/v1/"))
        return -ENOENT;
    out->op = s_openai_op(path + 4, plen - 4, true);
    return out->op ? 0 : -ENOENT;
}

/* Format "azure": /openai/deployments/{deployment}/{chat/completions,completions,embeddings},
 * /openai/v1/{chat/completions,completions,embeddings,responses,models}. */
static int s_parse_azure(const char *path, size_t plen, ag_path_t *out)
{
    static const char dep[] = "/openai/deployments/";
    static const char v1[] = "/openai/v1/";
    if (s_prefix(path, plen, v1)) {
        out->op = s_openai_op(path + sizeof v1 - 1, plen - (sizeof v1 - 1), true);
        return out->op ? 0 : -ENOENT;
    }
    if (!s_prefix(path, plen, dep))
        return -ENOENT;
    const char *d = path + sizeof dep - 1;
    size_t rest = plen - (sizeof dep - 1);
    const char *slash = memchr(d, '/', rest);
    if (!slash)
        return -ENOENT;
    out->op = s_openai_op(slash + 1, rest - (size_t)(slash + 1 - d), false);
    if (!out->op)
        return -ENOENT;
    return s_set_url_model(out, d, (size_t)(slash - d));
}

/* Format "anthropic": /v1/messages, /v1/messages/count_tokens. */
static int s_parse_anthropic(const char *path, size_t plen, ag_path_t *out)
{
    if (s_eq(path, plen, "/v1/messages"))
        out->op = AG_OP_MESSAGES;
    else if (s_eq(path, plen, "/v1/messages/count_tokens"))
        out->op = AG_OP_COUNT_TOKENS;
    return out->op ? 0 : -ENOENT;
}

/* Format "gemini": /v1beta/models/{model}:{generateContent,streamGenerateContent}; the query
 * is read for alt=sse only. */
static int s_parse_gemini(const char *path, size_t plen, const char *query, size_t qlen,
                          ag_path_t *out)
{
    static const char pre[] = "/v1beta/models/";
    if (!s_prefix(path, plen, pre))
        return -ENOENT;
    const char *m = path + sizeof pre - 1;
    size_t rest = plen - (sizeof pre - 1);
    if (memchr(m, '/', rest))
        return -ENOENT;
    /* The method follows the last ':'; a model name holds none. */
    const char *colon = NULL;
    for (size_t i = rest; i > 0; i--) {
        if (m[i - 1] == ':') {
            colon = m + i - 1;
            break;
        }
    }
    if (!colon)
        return -ENOENT;
    size_t ml = (size_t)(colon - m), tl = rest - ml - 1;
    if (s_eq(colon + 1, tl, "generateContent"))
        out->op = AG_OP_GENERATE;
    else if (s_eq(colon + 1, tl, "streamGenerateContent"))
        out->op = AG_OP_STREAM_GENERATE;
    else
        return -ENOENT;
    out->sse = out->op == AG_OP_STREAM_GENERATE && s_query_alt_sse(query, qlen);
    return s_set_url_model(out, m, ml);
}

/* Format "bedrock": /model/{modelId}/{invoke,invoke-with-response-stream,converse,
 * converse-stream}; modelId percent-encoded or raw (but a raw '/' splits segments). */
static int s_parse_bedrock(const char *path, size_t plen, ag_path_t *out)
{
    static const char pre[] = "/model/";
    static const struct {
        const char *tail;
        ag_op_t op;
    } ops[] = {{"invoke", AG_OP_INVOKE},
               {"invoke-with-response-stream", AG_OP_INVOKE_STREAM},
               {"converse", AG_OP_CONVERSE},
               {"converse-stream", AG_OP_CONVERSE_STREAM}};
    if (!s_prefix(path, plen, pre))
        return -ENOENT;
    const char *m = path + sizeof pre - 1;
    size_t rest = plen - (sizeof pre - 1);
    const char *slash = memchr(m, '/', rest);
    if (!slash || memchr(slash + 1, '/', rest - (size_t)(slash + 1 - m)))
        return -ENOENT;
    const char *t = slash + 1;
    size_t tl = rest - (size_t)(t - m);
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        if (s_eq(t, tl, ops[i].tail))
            out->op = ops[i].op;
    }
    if (!out->op)
        return -ENOENT;
    return s_set_bedrock_model(out, m, (size_t)(slash - m));
}

const char *ag_op_method(ag_op_t op)
{
    return op == AG_OP_MODELS ? "GET" : "POST";
}

int ag_path_parse(const char *format, size_t flen, const char *method, size_t mlen,
                  const char *path, size_t plen, const char *query, size_t qlen, ag_path_t *out)
{
    memset(out, 0, sizeof *out);
    if (!path)
        plen = 0;
    if (!query)
        qlen = 0;
    unsigned f = format ? ag_format_from_name(format, flen) : 0;
    int rc;
    switch (f) {
    case AG_FMT_OPENAI:
        rc = s_parse_openai(path, plen, out);
        break;
    case AG_FMT_AZURE:
        rc = s_parse_azure(path, plen, out);
        break;
    case AG_FMT_ANTHROPIC:
        rc = s_parse_anthropic(path, plen, out);
        break;
    case AG_FMT_GEMINI:
        rc = s_parse_gemini(path, plen, query, qlen, out);
        break;
    case AG_FMT_BEDROCK:
        rc = s_parse_bedrock(path, plen, out);
        break;
    default:
        return -ENOTSUP;
    }
    if (rc == 0 && !(method && s_eq(method, mlen, ag_op_method(out->op))))
        rc = -EINVAL;
    if (rc != 0) {
        ag_op_t op = rc == -EINVAL ? out->op : AG_OP_NONE;
        memset(out, 0, sizeof *out);
        out->op = op; /* kept for a wrong method or model: the caller may name it */
        out->format = f;
        return rc;
    }
    out->format = f;
    return 0;
}

int ag_request_model(const ag_path_t *p, const char *model, size_t len, const char **out)
{
    /* model_buf, not path_model: a copy of the struct (by assignment) is read the same. */
    size_t pl = p->path_model_len;
    *out = NULL;
    if (len && pl && (len != pl || memcmp(model, p->model_buf, len) != 0))
        return -EINVAL;
    if (len) {
        *out = model;
        return (int)len;
    }
    *out = pl ? p->model_buf : NULL;
    return (int)pl;
}

/* ---- what the vendor gets ---- */

int ag_url_build(const ag_instance_t *inst, const ag_path_t *p, const char *upstream, char *out,
                 size_t outlen)
{
    const ag_vendor_ops_t *ops = inst ? ag_vendor_ops(inst->vendor) : NULL;
    if (!ops || !p || !ag_instance_serves(inst, p->format, p->op))
        return -EINVAL;
    return ops->url(inst, p, upstream, out, outlen);
}

bool ag_model_in_body(const ag_instance_t *inst, ag_op_t op)
{
    const ag_vendor_ops_t *ops = inst ? ag_vendor_ops(inst->vendor) : NULL;
    if (!ops || op == AG_OP_MODELS || op == AG_OP_NONE)
        return false;
    return ops->model_in_body(inst, op);
}

bool ag_op_takes_include_usage(ag_op_t op)
{
    return op == AG_OP_CHAT || op == AG_OP_COMPLETIONS;
}

int ag_op_usage(const ag_path_t *p, bool *stream)
{
    *stream = false;
    switch (p->op) {
    case AG_OP_CHAT:
        return USAGE_OPENAI_CHAT;
    case AG_OP_COMPLETIONS:
        return USAGE_OPENAI_COMPLETIONS;
    case AG_OP_EMBEDDINGS:
        return USAGE_OPENAI_EMBEDDINGS;
    case AG_OP_RESPONSES:
        return USAGE_OPENAI_RESPONSES;
    case AG_OP_MESSAGES:
        return USAGE_ANTHROPIC_MESSAGES;
    case AG_OP_GENERATE:
        return USAGE_GEMINI;
    case AG_OP_STREAM_GENERATE:
        /* Without alt=sse the answer is one JSON array: a body to the sniffer. */
        *stream = p->sse;
        return USAGE_GEMINI;
    case AG_OP_CONVERSE:
        return USAGE_BEDROCK_CONVERSE;
    case AG_OP_CONVERSE_STREAM:
        *stream = true;
        return USAGE_BEDROCK_CONVERSE;
    case AG_OP_INVOKE:
        return USAGE_BEDROCK_INVOKE;
    case AG_OP_INVOKE_STREAM:
        *stream = true;
        return USAGE_BEDROCK_INVOKE;
    default: /* models, count_tokens: not billed */
        return -1;
    }
}

int ag_auth_header(const ag_instance_t *inst, ag_op_t op, char *out, size_t outlen)
{
    const ag_vendor_ops_t *ops = inst ? ag_vendor_ops(inst->vendor) : NULL;
    if (!ops || !ops->auth)
        return 1;
    return ops->auth(inst, op, out, outlen);
}

const char *const *ag_default_headers(const ag_instance_t *inst, ag_op_t op)
{
    static const char *const none[] = {NULL};
    const ag_vendor_ops_t *ops = inst ? ag_vendor_ops(inst->vendor) : NULL;
    const char *const *h = ops && ops->default_headers ? ops->default_headers(inst, op) : NULL;
    return h ? h : none;
}

bool ag_instance_buffers_body(const ag_instance_t *inst)
{
    const ag_vendor_ops_t *ops = inst ? ag_vendor_ops(inst->vendor) : NULL;
    return ops && ops->buffers_body;
}

void ag_sig_lines_free(ag_sig_lines_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < sizeof s->line / sizeof s->line[0]; i++)
        s_free_secret(s->line[i]);
    memset(s, 0, sizeof *s);
}

/* ---- header filters ---- */

/* True when name[0..n) equals lit ignoring ASCII case. */
static bool s_ieq(const char *name, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(name, lit, n) == 0;
}

/* True when name[0..n) starts with prefix ignoring ASCII case. */
static bool s_iprefix(const char *name, size_t n, const char *prefix)
{
    size_t l = strlen(prefix);
    return n >= l && strncasecmp(name, prefix, l) == 0;
}

/* True when c is an RFC 9110 token character. */
static bool s_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Hop-by-hop headers (RFC 9110 7.6.1 and the usual extras), dropped in both directions. */
static bool s_hop_by_hop(const char *name, size_t n)
{
    static const char *const hop[] = {"connection", "keep-alive", "te",      "trailer",
                                      "trailers",   "transfer-encoding",     "upgrade",
                                      "http2-settings", NULL};
    for (size_t i = 0; hop[i]; i++) {
        if (s_ieq(name, n, hop[i]))
            return true;
    }
    return s_iprefix(name, n, "proxy-");
}

int ag_hdr_to_vendor(const char *name, size_t nlen, const char *value, size_t vlen)
{
    /* x-goog-user-project names the Google Cloud project billed for quota: like OpenAI's
     * organization/project, an account choice that is the provider's, not the user's. The
     * x-goog-api-client telemetry ("gl-python/3.12 genai/1.2") is harmless and kept, like
     * x-stainless-*. */
    static const char *const drop[] = {
        "authorization", "api-key", "x-api-key", "x-goog-api-key", "cookie", "host",
        "content-length", "expect", "accept-encoding", "openai-organization", "openai-project",
        "x-goog-user-project", "forwarded", "x-real-ip", NULL};
    /* x-amz-* and x-amzn-*: the agent signs Bedrock requests itself (a user's x-amz-date,
     * x-amz-security-token or x-amz-content-sha256 would clash with the signature), and the
     * x-amzn-bedrock-* options (guardrails, trace) name the provider's AWS resources. */
    static const char *const drop_prefix[] = {"x-relayhub-", "x-forwarded-", "x-amz-", "x-amzn-",
                                              NULL};
    if (nlen == 0 || !name)
        return 0;
    for (size_t i = 0; i < nlen; i++) {
        if (!s_tchar((unsigned char)name[i]))
            return 0;
    }
    for (size_t i = 0; i < vlen; i++) {
        unsigned char c = (unsigned char)value[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return 0;
    }
    if (s_hop_by_hop(name, nlen))
        return 0;
    for (size_t i = 0; drop_prefix[i]; i++) {
        if (s_iprefix(name, nlen, drop_prefix[i]))
            return 0;
    }
    for (size_t i = 0; drop[i]; i++) {
        if (s_ieq(name, nlen, drop[i]))
            return 0;
    }
    return 1;
}

int ag_hdr_from_vendor(const char *name, size_t nlen)
{
    static const char *const drop[] = {"set-cookie",     "set-cookie2",
                                       "content-length", "alt-svc",
                                       "strict-transport-security",
                                       "openai-organization", "openai-project", NULL};
    if (nlen == 0 || !name)
        return 0;
    for (size_t i = 0; i < nlen; i++) {
        if (!s_tchar((unsigned char)name[i]))
            return 0;
    }
    if (s_hop_by_hop(name, nlen))
        return 0;
    for (size_t i = 0; drop[i]; i++) {
        if (s_ieq(name, nlen, drop[i]))
            return 0;
    }
    return 1;
}
