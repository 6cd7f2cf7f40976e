/* adapters/azure: RESOURCE.openai.azure.com, api-key header, deployments in the URL. */
#include "adapters.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define S_SUFFIX ".openai.azure.com"

static const char *const s_keys[] = {"api_key", "resource", "api_version", NULL};

/* Both the "openai" and "azure" formats: the same operations. */
static const ag_serve_t s_serves[] = {
    {AG_FMT_OPENAI, AG_OPS_OPENAI_ALL, false},
    {AG_FMT_AZURE, AG_OPS_OPENAI_ALL, false},
    {0, 0, false},
};

/* api_key, resource (required; the first label of the host), api_version (default
 * AG_DEFAULT_AZURE_API_VERSION; it goes in the query, so [A-Za-z0-9._-] only; "v1": the newer
 * v1 API for every operation). */
static int s_build(ag_instance_t *in, const ag_instance_kv_t *kv, const char *dir, char *err,
                   size_t errlen)
{
    (void)dir;
    int rc = ag_kv_secret(kv, "api_key", true, &in->api_key, err, errlen);
    if (rc != 0)
        return rc;
    const char *res = ag_kv_get(kv, "resource");
    if (!ag_is_label(res, 63) || strlen(res) < 2) {
        snprintf(err, errlen,
                 "resource: required, the Azure resource name ([a-z0-9-], the "
                 "first label of RESOURCE.openai.azure.com)");
        return -EINVAL;
    }
    const char *ver = ag_kv_get(kv, "api_version");
    if (!ver || !ver[0])
        ver = AG_DEFAULT_AZURE_API_VERSION;
    if (strlen(ver) > 32 || !ag_is_url_name(ver, strlen(ver))) {
        snprintf(err, errlen, "api_version: expected e.g. %s", AG_DEFAULT_AZURE_API_VERSION);
        return -EINVAL;
    }
    rc = ag_dup(&in->resource, res, err, errlen);
    return rc ? rc : ag_dup(&in->api_version, ver, err, errlen);
}

/* True for an instance on Azure's newer v1 API (api_version = v1): every operation under
 * /openai/v1/, no api-version, the deployment named in the body's "model". */
static bool s_v1(const ag_instance_t *in)
{
    return in->api_version && strcmp(in->api_version, AG_AZURE_API_V1) == 0;
}

/* Chat, completions and embeddings go to the deployment (the upstream name) with the
 * api-version; responses and models to the v1 routes, which take no api-version and read the
 * deployment from the body; with api_version = v1, everything goes to the v1 routes. Chosen by
 * operation alone (not by the user's path), so that ag_model_in_body can answer from the
 * operation. */
static int s_url(const ag_instance_t *in, const ag_path_t *p, const char *upstream, char *out,
                 size_t outlen)
{
    const char *tail = ag_openai_tail(p->op);
    if (!tail)
        return -EINVAL;
    if (p->op == AG_OP_RESPONSES || p->op == AG_OP_MODELS || s_v1(in))
        return ag_fmt(out, outlen, "https://%s" S_SUFFIX "/openai/v1/%s", in->resource, tail);
    if (!upstream || !ag_is_url_name(upstream, strlen(upstream)))
        return -EINVAL;
    return ag_fmt(out, outlen, "https://%s" S_SUFFIX "/openai/deployments/%s/%s?api-version=%s",
                  in->resource, upstream, tail, in->api_version);
}

/* api-key: KEY. */
static int s_auth(const ag_instance_t *in, ag_op_t op, char *out, size_t outlen)
{
    (void)op;
    return ag_fmt(out, outlen, "api-key: %s", in->api_key);
}

/* The v1 routes read the deployment from the body (models has none). */
static bool s_model_in_body(const ag_instance_t *in, ag_op_t op)
{
    return op == AG_OP_RESPONSES || (s_v1(in) && op != AG_OP_MODELS);
}

const ag_vendor_ops_t ag_azure_ops = {
    .name = "azure",
    .kind = AG_VENDOR_AZURE,
    .keys = s_keys,
    .url_models = true,
    .serves = s_serves,
    .build = s_build,
    .url = s_url,
    .auth = s_auth,
    .default_headers = NULL,
    .model_in_body = s_model_in_body,
    .buffers_body = false,
};
