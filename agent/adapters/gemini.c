/* adapters/gemini: Google AI Studio (generativelanguage.googleapis.com), x-goog-api-key, the
 * model in the URL; optionally its OpenAI-compatible chat and embeddings. */
#include "adapters.h"

#include <errno.h>
#include <string.h>

#define S_BASE "https://generativelanguage.googleapis.com"

static const char *const s_keys[] = {"api_key", "openai_compatible", NULL};

static const ag_serve_t s_serves[] = {
    {AG_FMT_GEMINI, AG_OP_BIT(AG_OP_GENERATE) | AG_OP_BIT(AG_OP_STREAM_GENERATE), false},
    {AG_FMT_OPENAI, AG_OP_BIT(AG_OP_CHAT) | AG_OP_BIT(AG_OP_EMBEDDINGS), true},
    {0, 0, false},
};

/* /v1beta/models/MODEL:generateContent, :streamGenerateContent (?alt=sse when the user asked
 * for SSE; else Google answers one JSON array, as the user expects); OpenAI-compatible chat
 * and embeddings under /v1beta/openai/. */
static int s_url(const ag_instance_t *in, const ag_path_t *p, const char *upstream, char *out,
                 size_t outlen)
{
    (void)in;
    if (p->op == AG_OP_CHAT || p->op == AG_OP_EMBEDDINGS)
        return ag_fmt(out, outlen, S_BASE "/v1beta/openai/%s", ag_openai_tail(p->op));
    if (!upstream || !ag_is_url_name(upstream, strlen(upstream)))
        return -EINVAL;
    if (p->op == AG_OP_GENERATE)
        return ag_fmt(out, outlen, S_BASE "/v1beta/models/%s:generateContent", upstream);
    if (p->op == AG_OP_STREAM_GENERATE)
        return ag_fmt(out, outlen, S_BASE "/v1beta/models/%s:streamGenerateContent%s", upstream,
                      p->sse ? "?alt=sse" : "");
    return -EINVAL;
}

/* x-goog-api-key: KEY natively (never ?key=: URLs end up in logs); the OpenAI-compatible
 * endpoint takes Authorization: Bearer KEY. */
static int s_auth(const ag_instance_t *in, ag_op_t op, char *out, size_t outlen)
{
    if (op == AG_OP_CHAT || op == AG_OP_EMBEDDINGS)
        return ag_fmt(out, outlen, "Authorization: Bearer %s", in->api_key);
    return ag_fmt(out, outlen, "x-goog-api-key: %s", in->api_key);
}

/* The OpenAI-compatible operations name the model in the body; native ones in the URL. */
static bool s_model_in_body(const ag_instance_t *in, ag_op_t op)
{
    (void)in;
    return op == AG_OP_CHAT || op == AG_OP_EMBEDDINGS;
}

const ag_vendor_ops_t ag_gemini_ops = {
    .name = "gemini",
    .kind = AG_VENDOR_GEMINI,
    .keys = s_keys,
    .url_models = true,
    .serves = s_serves,
    .build = ag_build_key_compat,
    .url = s_url,
    .auth = s_auth,
    .default_headers = NULL,
    .model_in_body = s_model_in_body,
    .buffers_body = false,
};
