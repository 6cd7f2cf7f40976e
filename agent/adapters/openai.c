/* adapters/openai: api.openai.com, Bearer key, model in the body. */
#include "adapters.h"

#include <errno.h>

#define S_BASE "https://api.openai.com"

static const char *const s_keys[] = {"api_key", NULL};

static const ag_serve_t s_serves[] = {
    {AG_FMT_OPENAI, AG_OPS_OPENAI_ALL, false},
    {0, 0, false},
};

/* api_key (required). */
static int s_build(ag_instance_t *in, const ag_instance_kv_t *kv, const char *dir, char *err,
                   size_t errlen)
{
    (void)dir;
    return ag_kv_secret(kv, "api_key", true, &in->api_key, err, errlen);
}

/* https://api.openai.com/v1/{chat/completions,completions,embeddings,responses,models}. */
static int s_url(const ag_instance_t *in, const ag_path_t *p, const char *upstream, char *out,
                 size_t outlen)
{
    (void)in;
    (void)upstream;
    const char *tail = ag_openai_tail(p->op);
    if (!tail)
        return -EINVAL;
    return ag_fmt(out, outlen, S_BASE "/v1/%s", tail);
}

/* Authorization: Bearer KEY. */
static int s_auth(const ag_instance_t *in, ag_op_t op, char *out, size_t outlen)
{
    (void)op;
    return ag_fmt(out, outlen, "Authorization: Bearer %s", in->api_key);
}

/* Every OpenAI operation with a model names it in the body. */
static bool s_model_in_body(const ag_instance_t *in, ag_op_t op)
{
    (void)in;
    (void)op;
    return true;
}

const ag_vendor_ops_t ag_openai_ops = {
    .name = "openai",
    .kind = AG_VENDOR_OPENAI,
    .keys = s_keys,
    .url_models = false,
    .serves = s_serves,
    .build = s_build,
    .url = s_url,
    .auth = s_auth,
    .default_headers = NULL,
    .model_in_body = s_model_in_body,
    .buffers_body = false,
};
