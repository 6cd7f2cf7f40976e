/* adapters/anthropic: api.anthropic.com, x-api-key, anthropic-version; optionally its
 * OpenAI-compatible chat endpoint. */
#include "adapters.h"

#include <errno.h>

#define S_BASE "https://api.anthropic.com"

static const char *const s_keys[] = {"api_key", "openai_compatible", NULL};

static const ag_serve_t s_serves[] = {
    {AG_FMT_ANTHROPIC, AG_OP_BIT(AG_OP_MESSAGES) | AG_OP_BIT(AG_OP_COUNT_TOKENS), false},
    {AG_FMT_OPENAI, AG_OP_BIT(AG_OP_CHAT), true},
    {0, 0, false},
};

/* /v1/messages, /v1/messages/count_tokens; OpenAI chat at /v1/chat/completions. */
static int s_url(const ag_instance_t *in, const ag_path_t *p, const char *upstream, char *out,
                 size_t outlen)
{
    (void)in;
    (void)upstream;
    switch (p->op) {
    case AG_OP_MESSAGES:
        return ag_fmt(out, outlen, S_BASE "/v1/messages");
    case AG_OP_COUNT_TOKENS:
        return ag_fmt(out, outlen, S_BASE "/v1/messages/count_tokens");
    case AG_OP_CHAT:
        return ag_fmt(out, outlen, S_BASE "/v1/chat/completions");
    default:
        return -EINVAL;
    }
}

/* x-api-key: KEY, on the OpenAI-compatible endpoint too. */
static int s_auth(const ag_instance_t *in, ag_op_t op, char *out, size_t outlen)
{
    (void)op;
    return ag_fmt(out, outlen, "x-api-key: %s", in->api_key);
}

/* The native operations need anthropic-version; the OpenAI-compatible one does not. */
static const char *const *s_default_headers(const ag_instance_t *in, ag_op_t op)
{
    static const char *const native[] = {"anthropic-version: " AG_DEFAULT_ANTHROPIC_VERSION, NULL};
    (void)in;
    return op == AG_OP_MESSAGES || op == AG_OP_COUNT_TOKENS ? native : NULL;
}

/* Messages, count_tokens and OpenAI chat all name the model in the body. */
static bool s_model_in_body(const ag_instance_t *in, ag_op_t op)
{
    (void)in;
    (void)op;
    return true;
}

const ag_vendor_ops_t ag_anthropic_ops = {
    .name = "anthropic",
    .kind = AG_VENDOR_ANTHROPIC,
    .keys = s_keys,
    .url_models = false,
    .serves = s_serves,
    .build = ag_build_key_compat,
    .url = s_url,
    .auth = s_auth,
    .default_headers = s_default_headers,
    .model_in_body = s_model_in_body,
    .buffers_body = false,
};
