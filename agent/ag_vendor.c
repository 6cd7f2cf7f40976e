/* ag_vendor: instances, model mapping, the path allow-list, URLs and header filters. */
#include "ag_vendor.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_OPENAI_BASE "https://api.openai.com"
#define S_AZURE_SUFFIX ".openai.azure.com"

/* Keys an instance section may hold, per vendor. */
static const char *const s_openai_keys[] = {"vendor", "models", "api_key", "max_concurrency",
                                            NULL};
static const char *const s_azure_keys[] = {"vendor",          "models",   "api_key",
                                           "max_concurrency", "resource", "api_version",
                                           NULL};

const char *ag_vendor_name(ag_vendor_kind_t v)
{
    switch (v) {
    case AG_VENDOR_OPENAI:
        return "openai";
    case AG_VENDOR_AZURE:
        return "azure";
    default:
        return "?";
    }
}

ag_vendor_kind_t ag_vendor_from_name(const char *name)
{
    if (!name)
        return AG_VENDOR_NONE;
    if (strcmp(name, "openai") == 0)
        return AG_VENDOR_OPENAI;
    if (strcmp(name, "azure") == 0)
        return AG_VENDOR_AZURE;
    return AG_VENDOR_NONE;
}

/* True for characters allowed in a deployment name (and an Azure URL path segment). */
static bool s_deploy_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-';
}

/* True for characters allowed in a model name: a deployment's plus ':', '/', '@' and '+'. */
static bool s_model_char(char ch)
{
    return s_deploy_char(ch) || ch == ':' || ch == '/' || ch == '@' || ch == '+';
}

/* Checks a name of n bytes against a character class; 0 or -EINVAL. */
static int s_check_name(const char *s, size_t n, bool deployment)
{
    if (n == 0 || n > AG_MODEL_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (deployment ? !s_deploy_char(s[i]) : !s_model_char(s[i]))
            return -EINVAL;
    }
    /* "." and ".." would be path segments of their own. */
    if (deployment && (n <= 2 && s[0] == '.' && s[n - 1] == '.'))
        return -EINVAL;
    return 0;
}

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

/* The value of key in a section's pairs, or NULL. */
static const char *s_kv(const ag_instance_kv_t *kv, const char *key)
{
    for (size_t i = 0; kv && i < kv->n; i++) {
        if (strcmp(kv->key[i], key) == 0)
            return kv->value[i];
    }
    return NULL;
}

/* Frees one instance's contents. */
static void s_instance_free(ag_instance_t *in)
{
    free(in->name);
    if (in->api_key) {
        sodium_memzero(in->api_key, strlen(in->api_key));
        free(in->api_key);
    }
    free(in->resource);
    free(in->api_version);
    ag_models_free(&in->models, &in->n_models);
    memset(in, 0, sizeof *in);
}

/* Fills one instance from its section; 0 or -EINVAL/-ENOMEM with err (without the section). */
static int s_instance_build(ag_instance_t *in, const char *name, ag_vendor_kind_t v,
                            const ag_instance_kv_t *kv, char *err, size_t errlen)
{
    const char *const *allowed = v == AG_VENDOR_AZURE ? s_azure_keys : s_openai_keys;
    for (size_t i = 0; kv && i < kv->n; i++) {
        size_t k;
        for (k = 0; allowed[k] && strcmp(allowed[k], kv->key[i]) != 0; k++)
            ;
        if (!allowed[k]) {
            snprintf(err, errlen, "%s: not a key of vendor %s", kv->key[i], ag_vendor_name(v));
            return -EINVAL;
        }
    }
    in->vendor = v;
    in->name = strdup(name);
    const char *key = s_kv(kv, "api_key");
    if (!key || !key[0]) {
        snprintf(err, errlen, "api_key: required");
        return -EINVAL;
    }
    for (const char *p = key; *p; p++) {
        if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) {
            snprintf(err, errlen, "api_key: holds a blank or a control character");
            return -EINVAL;
        }
    }
    in->api_key = strdup(key);
    if (!in->name || !in->api_key) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    const char *mc = s_kv(kv, "max_concurrency");
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
    if (v == AG_VENDOR_AZURE) {
        const char *res = s_kv(kv, "resource");
        size_t rl = res ? strlen(res) : 0;
        bool ok = rl >= 2 && rl <= 64 && res[0] != '-' && res[rl - 1] != '-';
        for (size_t i = 0; ok && i < rl; i++)
            ok = (res[i] >= 'a' && res[i] <= 'z') || (res[i] >= '0' && res[i] <= '9') ||
                 res[i] == '-';
        if (!ok) {
            snprintf(err, errlen, "resource: required, the Azure resource name ([a-z0-9-], the "
                     "first label of RESOURCE.openai.azure.com)");
            return -EINVAL;
        }
        const char *ver = s_kv(kv, "api_version");
        if (!ver || !ver[0])
            ver = AG_DEFAULT_AZURE_API_VERSION;
        size_t vl = strlen(ver);
        ok = vl <= 32;
        for (size_t i = 0; ok && i < vl; i++)
            ok = s_deploy_char(ver[i]);
        if (!ok) {
            snprintf(err, errlen, "api_version: expected e.g. %s", AG_DEFAULT_AZURE_API_VERSION);
            return -EINVAL;
        }
        in->resource = strdup(res);
        in->api_version = strdup(ver);
        if (!in->resource || !in->api_version) {
            snprintf(err, errlen, "out of memory");
            return -ENOMEM;
        }
    }
    return ag_models_parse(s_kv(kv, "models"), v == AG_VENDOR_AZURE, &in->models,
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
        ag_vendor_kind_t v = ag_vendor_from_name(vendor);
        if (v == AG_VENDOR_NONE) {
            char msg[256];
            snprintf(msg, sizeof msg,
                     "[instance.%s]: vendor \"%s\" is not supported by this build yet; skipped",
                     cfg->instances[i], vendor ? vendor : "(none)");
            if (warn)
                warn(arg, msg);
            continue;
        }
        char why[384] = "";
        int rc = s_instance_build(&out->v[out->n], cfg->instances[i], v, cfg->instance_kv[i],
                                  why, sizeof why);
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
    for (size_t i = 0; i < set->n; i++) {
        if (strlen(set->v[i].name) == len && memcmp(set->v[i].name, name, len) == 0)
            return &set->v[i];
    }
    return NULL;
}

const char *ag_instance_upstream(const ag_instance_t *inst, const char *pub, size_t len)
{
    for (size_t i = 0; i < inst->n_models; i++) {
        if (strlen(inst->models[i].pub) == len && memcmp(inst->models[i].pub, pub, len) == 0)
            return inst->models[i].up;
    }
    return NULL;
}

/* True when s[0..n) equals the NUL-terminated lit. */
static bool s_eq(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n == l && (l == 0 || memcmp(s, lit, l) == 0);
}

/* The operation a path tail names ("chat/completions" → AG_OP_CHAT), or AG_OP_NONE. */
static ag_op_t s_op_of(const char *s, size_t n, bool models_ok, bool responses_ok)
{
    if (s_eq(s, n, "chat/completions"))
        return AG_OP_CHAT;
    if (s_eq(s, n, "completions"))
        return AG_OP_COMPLETIONS;
    if (s_eq(s, n, "embeddings"))
        return AG_OP_EMBEDDINGS;
    if (responses_ok && s_eq(s, n, "responses"))
        return AG_OP_RESPONSES;
    if (models_ok && s_eq(s, n, "models"))
        return AG_OP_MODELS;
    return AG_OP_NONE;
}

const char *ag_op_method(ag_op_t op)
{
    return op == AG_OP_MODELS ? "GET" : "POST";
}

int ag_path_parse(const char *format, size_t flen, const char *method, size_t mlen,
                  const char *path, size_t plen, ag_path_t *out)
{
    memset(out, 0, sizeof *out);
    if (!path)
        plen = 0;
    ag_op_t op = AG_OP_NONE;
    if (s_eq(format, flen, "openai")) {
        if (plen > 4 && memcmp(path, "/v1/", 4) == 0)
            op = s_op_of(path + 4, plen - 4, true, true);
    } else if (s_eq(format, flen, "azure")) {
        static const char dep[] = "/openai/deployments/";
        static const char v1[] = "/openai/v1/";
        if (plen > sizeof v1 - 1 && memcmp(path, v1, sizeof v1 - 1) == 0) {
            op = s_op_of(path + sizeof v1 - 1, plen - (sizeof v1 - 1), true, true);
        } else if (plen > sizeof dep - 1 && memcmp(path, dep, sizeof dep - 1) == 0) {
            const char *d = path + sizeof dep - 1;
            const char *slash = memchr(d, '/', plen - (size_t)(d - path));
            if (slash && s_check_name(d, (size_t)(slash - d), true) == 0) {
                op = s_op_of(slash + 1, plen - (size_t)(slash + 1 - path), false, false);
                out->path_model = d;
                out->path_model_len = (size_t)(slash - d);
            }
        }
    } else {
        return -ENOTSUP;
    }
    if (op == AG_OP_NONE) {
        out->path_model = NULL;
        out->path_model_len = 0;
        return -ENOENT;
    }
    out->op = op;
    if (!s_eq(method, mlen, ag_op_method(op)))
        return -EINVAL;
    return 0;
}

int ag_request_model(const ag_path_t *p, const char *model, size_t len, const char **out)
{
    *out = NULL;
    if (len && p->path_model_len &&
        (len != p->path_model_len || memcmp(model, p->path_model, len) != 0))
        return -EINVAL;
    if (len) {
        *out = model;
        return (int)len;
    }
    *out = p->path_model;
    return (int)p->path_model_len;
}

/* The path tail of op on the vendor ("chat/completions"). */
static const char *s_op_tail(ag_op_t op)
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

bool ag_model_in_body(const ag_instance_t *inst, ag_op_t op)
{
    if (op == AG_OP_MODELS || op == AG_OP_NONE)
        return false;
    if (inst->vendor == AG_VENDOR_AZURE)
        return op == AG_OP_RESPONSES; /* the v1 route; deployments are in the URL */
    return true;
}

bool ag_op_takes_include_usage(ag_op_t op)
{
    return op == AG_OP_CHAT || op == AG_OP_COMPLETIONS;
}

int ag_url_build(const ag_instance_t *inst, ag_op_t op, const char *upstream, char *out,
                 size_t outlen)
{
    const char *tail = s_op_tail(op);
    if (!tail)
        return -EINVAL;
    int n;
    if (inst->vendor == AG_VENDOR_OPENAI) {
        n = snprintf(out, outlen, S_OPENAI_BASE "/v1/%s", tail);
    } else if (inst->vendor == AG_VENDOR_AZURE) {
        if (op == AG_OP_RESPONSES || op == AG_OP_MODELS) {
            n = snprintf(out, outlen, "https://%s" S_AZURE_SUFFIX "/openai/v1/%s", inst->resource,
                         tail);
        } else {
            if (!upstream || s_check_name(upstream, strlen(upstream), true) != 0)
                return -EINVAL;
            n = snprintf(out, outlen,
                         "https://%s" S_AZURE_SUFFIX "/openai/deployments/%s/%s?api-version=%s",
                         inst->resource, upstream, tail, inst->api_version);
        }
    } else {
        return -EINVAL;
    }
    if (n < 0 || (size_t)n >= outlen)
        return -ENOSPC;
    return 0;
}

int ag_auth_header(const ag_instance_t *inst, char *out, size_t outlen)
{
    int n = inst->vendor == AG_VENDOR_AZURE
                ? snprintf(out, outlen, "api-key: %s", inst->api_key)
                : snprintf(out, outlen, "Authorization: Bearer %s", inst->api_key);
    if (n < 0 || (size_t)n >= outlen) {
        sodium_memzero(out, outlen);
        return -ENOSPC;
    }
    return 0;
}

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
    static const char *const drop[] = {
        "authorization", "api-key", "x-api-key", "x-goog-api-key", "cookie", "host",
        "content-length", "expect", "accept-encoding", "openai-organization", "openai-project",
        "forwarded", "x-real-ip", NULL};
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
    if (s_hop_by_hop(name, nlen) || s_iprefix(name, nlen, "x-relayhub-") ||
        s_iprefix(name, nlen, "x-forwarded-"))
        return 0;
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
