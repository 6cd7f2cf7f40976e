/* adapters/bedrock: the AWS Bedrock runtime (bedrock-runtime.REGION.amazonaws.com); the model
 * id percent-encoded in the URL, every request signed with SigV4 over its whole body. */
#include "adapters.h"
#include "ag_proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_SERVICE "bedrock" /* SigV4 signing name of bedrock-runtime */

static const char *const s_keys[] = {"region",        "access_key_id",  "secret_access_key",
                                     "session_token", "max_body_bytes", NULL};

static const ag_serve_t s_serves[] = {
    {AG_FMT_BEDROCK,
     AG_OP_BIT(AG_OP_INVOKE) | AG_OP_BIT(AG_OP_INVOKE_STREAM) | AG_OP_BIT(AG_OP_CONVERSE) |
         AG_OP_BIT(AG_OP_CONVERSE_STREAM),
     false},
    {0, 0, false},
};

/* Parses a byte count: digits, then nothing, K/KiB, M/MiB or G/GiB (binary, any case), as
 * CFG_BYTES does. 0 or -EINVAL. */
static int s_parse_bytes(const char *v, int64_t *out)
{
    static const struct {
        const char *unit;
        int64_t mult;
    } units[] = {{"", 1},          {"k", 1 << 10}, {"kib", 1 << 10}, {"m", 1 << 20},
                 {"mib", 1 << 20}, {"g", 1 << 30}, {"gib", 1 << 30}};
    int64_t n = 0;
    const char *p = v;
    if (!(*p >= '0' && *p <= '9'))
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > (INT64_MAX - 9) / 10)
            return -EINVAL;
        n = n * 10 + (*p - '0');
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(p, units[i].unit) == 0) {
            if (n > INT64_MAX / units[i].mult)
                return -EINVAL;
            *out = n * units[i].mult;
            return 0;
        }
    }
    return -EINVAL;
}

/* region (required), access_key_id and secret_access_key (required; two fields, never one
 * packed string), session_token (temporary credentials only), max_body_bytes (default
 * AG_DEFAULT_BEDROCK_MAX_BODY, at most AG_MAX_BODY_BYTES: the body is held whole for the
 * signature). */
static int s_build(ag_instance_t *in, const ag_instance_kv_t *kv, const char *dir, char *err,
                   size_t errlen)
{
    (void)dir;
    const char *region = ag_kv_get(kv, "region");
    if (!ag_is_label(region, 32)) {
        snprintf(err, errlen, "region: required, an AWS region such as us-east-1 ([a-z0-9-])");
        return -EINVAL;
    }
    int rc = ag_dup(&in->region, region, err, errlen);
    if (rc == 0)
        rc = ag_kv_secret(kv, "access_key_id", true, &in->access_key_id, err, errlen);
    if (rc != 0)
        return rc;
    size_t n = strlen(in->access_key_id);
    bool ok = n <= 128;
    for (size_t i = 0; ok && i < n; i++) {
        char c = in->access_key_id[i];
        ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    }
    if (!ok) {
        snprintf(err, errlen, "access_key_id: expected letters and digits (AKIA..., ASIA...)");
        return -EINVAL;
    }
    rc = ag_kv_secret(kv, "secret_access_key", true, &in->secret_access_key, err, errlen);
    if (rc == 0)
        rc = ag_kv_secret(kv, "session_token", false, &in->session_token, err, errlen);
    if (rc != 0)
        return rc;
    in->max_body_bytes = AG_DEFAULT_BEDROCK_MAX_BODY;
    const char *mb = ag_kv_get(kv, "max_body_bytes");
    if (mb && (s_parse_bytes(mb, &in->max_body_bytes) != 0 || in->max_body_bytes < 1 ||
               in->max_body_bytes > AG_MAX_BODY_BYTES)) {
        snprintf(err, errlen, "max_body_bytes: expected a size from 1 to %lld bytes (e.g. 20MiB)",
                 (long long)AG_MAX_BODY_BYTES);
        return -EINVAL;
    }
    return 0;
}

/* https://bedrock-runtime.REGION.amazonaws.com/model/MODEL/{invoke,invoke-with-response-stream,
 * converse,converse-stream}; MODEL percent-encoded (only unreserved characters stay raw: ':'
 * is %3A, '/' of an ARN %2F). */
static int s_url(const ag_instance_t *in, const ag_path_t *p, const char *upstream, char *out,
                 size_t outlen)
{
    const char *tail;
    switch (p->op) {
    case AG_OP_INVOKE:
        tail = "invoke";
        break;
    case AG_OP_INVOKE_STREAM:
        tail = "invoke-with-response-stream";
        break;
    case AG_OP_CONVERSE:
        tail = "converse";
        break;
    case AG_OP_CONVERSE_STREAM:
        tail = "converse-stream";
        break;
    default:
        return -EINVAL;
    }
    size_t n = upstream ? strlen(upstream) : 0;
    char enc[3 * AG_MODEL_MAX + 1];
    if (n == 0 || n > AG_MODEL_MAX || sigv4_uri_encode(upstream, n, 0, enc, sizeof enc) < 0)
        return -EINVAL;
    return ag_fmt(out, outlen, "https://bedrock-runtime.%s.amazonaws.com/model/%s/%s", in->region,
                  enc, tail);
}

/* The model is in the URL. */
static bool s_model_in_body(const ag_instance_t *in, ag_op_t op)
{
    (void)in;
    (void)op;
    return false;
}

const ag_vendor_ops_t ag_bedrock_ops = {
    .name = "bedrock",
    .kind = AG_VENDOR_BEDROCK,
    .keys = s_keys,
    .url_models = false,
    .serves = s_serves,
    .build = s_build,
    .url = s_url,
    .auth = NULL, /* a SigV4 signature over the whole request: ag_bedrock_sign */
    .default_headers = NULL,
    .model_in_body = s_model_in_body,
    .buffers_body = true,
};

int ag_bedrock_sign_result(const ag_instance_t *inst, const char *url, const char *content_type,
                           const void *body, size_t len, time_t now, sigv4_result_t **out)
{
    static const char scheme[] = "https://";
    *out = NULL;
    if (!inst || inst->vendor != AG_VENDOR_BEDROCK || !url || !content_type || !content_type[0] ||
        strncmp(url, scheme, sizeof scheme - 1) != 0 || (len && !body))
        return -EINVAL;
    /* https://HOST/PATH[?QUERY]: the host is signed as the URL names it (curl sends that Host,
     * also when upstream.connect_to dials elsewhere). */
    const char *h = url + sizeof scheme - 1;
    const char *path = strchr(h, '/');
    if (!path || path == h || (size_t)(path - h) >= 256)
        return -EINVAL;
    char host[256];
    memcpy(host, h, (size_t)(path - h));
    host[path - h] = '\0';
    const char *q = strchr(path, '?');
    char *path_only = strndup(path, q ? (size_t)(q - path) : strlen(path));
    if (!path_only)
        return -ENOMEM;
    sigv4_header_t hdrs[] = {{"Host", host}, {"Content-Type", content_type}};
    sigv4_request_t req = {
        .method = "POST",
        .path = path_only,
        .query = q ? q + 1 : NULL,
        .headers = hdrs,
        .n_headers = 2,
        .body = body,
        .body_len = len,
        .now = now,
        .normalize = 1, /* every AWS service but S3: the encoded path is encoded again */
        .add_content_sha256 = 0,
    };
    sigv4_credentials_t cred = {
        .access_key_id = inst->access_key_id,
        .secret_access_key = inst->secret_access_key,
        .session_token = inst->session_token,
        .region = inst->region,
        .service = S_SERVICE,
    };
    int rc = sigv4_sign(&req, &cred, out);
    free(path_only);
    return rc == -E2BIG ? -EINVAL : rc;
}

int ag_bedrock_sign(const ag_instance_t *inst, const char *url, const char *content_type,
                    const void *body, size_t len, time_t now, ag_sig_lines_t *out)
{
    memset(out, 0, sizeof *out);
    sigv4_result_t *r = NULL;
    int rc = ag_bedrock_sign_result(inst, url, content_type, body, len, now, &r);
    if (rc != 0)
        return rc;
    /* X-Amz-Security-Token (with a session token), X-Amz-Date, Authorization. */
    for (size_t i = 0; i < r->n_added && out->n < sizeof out->line / sizeof out->line[0]; i++) {
        size_t nl = strlen(r->added[i].name), vl = strlen(r->added[i].value);
        char *line = malloc(nl + vl + 3);
        if (!line) {
            ag_sig_lines_free(out);
            sigv4_result_destroy(&r);
            return -ENOMEM;
        }
        memcpy(line, r->added[i].name, nl);
        memcpy(line + nl, ": ", 2);
        memcpy(line + nl + 2, r->added[i].value, vl + 1);
        out->line[out->n++] = line;
    }
    sigv4_result_destroy(&r);
    return 0;
}
