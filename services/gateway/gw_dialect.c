/* gw_dialect: the request formats' endpoints, keys, forwarded headers and error shapes. */
#include "gw_dialect.h"
#include "apierror.h"
#include "eventstream.h"
#include "sigv4.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- endpoints ------------------------------------------------------------------------ */

typedef struct {
    const char *path; /* exact path */
    gw_format_t format;
    gw_op_t op;
    bool get; /* GET, else POST */
} s_fixed_t;

static const s_fixed_t s_fixed[] = {
    {"/v1/chat/completions", GW_FORMAT_OPENAI, GW_OP_CHAT, false},
    {"/v1/completions", GW_FORMAT_OPENAI, GW_OP_COMPLETIONS, false},
    {"/v1/embeddings", GW_FORMAT_OPENAI, GW_OP_EMBEDDINGS, false},
    {"/v1/responses", GW_FORMAT_OPENAI, GW_OP_RESPONSES, false},
    {"/v1/models", GW_FORMAT_OPENAI, GW_OP_MODELS, true},
    {"/v1/messages", GW_FORMAT_ANTHROPIC, GW_OP_MESSAGES, false},
    {"/v1/messages/count_tokens", GW_FORMAT_ANTHROPIC, GW_OP_COUNT_TOKENS, false},
};

typedef struct {
    const char *name; /* the method (gemini, after ':') or operation (bedrock, last segment) */
    gw_op_t op;
} s_named_op_t;

static const s_named_op_t s_gemini_ops[] = {
    {"generateContent", GW_OP_GENERATE},
    {"streamGenerateContent", GW_OP_STREAM_GENERATE},
};

static const s_named_op_t s_bedrock_ops[] = {
    {"invoke", GW_OP_INVOKE},
    {"invoke-with-response-stream", GW_OP_INVOKE_STREAM},
    {"converse", GW_OP_CONVERSE},
    {"converse-stream", GW_OP_CONVERSE_STREAM},
};

#define S_GEMINI_PREFIX "/v1beta/models/"
#define S_GEMINI_V1_PREFIX "/v1/models/" /* Gemini's stable version: sent on as v1beta */
#define S_BEDROCK_PREFIX "/model/"
#define S_COUNT(a) (sizeof(a) / sizeof((a)[0]))

static bool s_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* path is prefix, or prefix + "/" + more. */
static bool s_under(const char *path, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(path, prefix, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

gw_format_t gw_dialect_guess(const char *path)
{
    if (s_under(path, "/v1/messages"))
        return GW_FORMAT_ANTHROPIC;
    if (s_under(path, "/v1beta") ||
        (s_prefix(path, S_GEMINI_V1_PREFIX) && strchr(path + strlen(S_GEMINI_V1_PREFIX), ':')))
        return GW_FORMAT_GEMINI;
    if (s_under(path, "/model"))
        return GW_FORMAT_BEDROCK;
    return GW_FORMAT_OPENAI;
}

static gw_op_t s_find_op(const s_named_op_t *ops, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++) {
        if (strlen(ops[i].name) == len && memcmp(ops[i].name, name, len) == 0)
            return ops[i].op;
    }
    return GW_OP_NONE;
}

/* A path model: 1..GW_MODEL_MAX bytes of printable ASCII without spaces. */
static bool s_model_ok(const char *m, size_t len)
{
    if (len == 0 || len > GW_MODEL_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)m[i];
        if (c < 0x21 || c > 0x7e)
            return false;
    }
    return true;
}

/* Percent-encodes s as AWS SDKs encode a path label (all but A-Z a-z 0-9 - _ . ~ as %XX: what
 * SigV4 calls URI encoding) and appends it to out (NUL-terminated, cap bytes in all); false when
 * it does not fit. */
static bool s_pct_append(char *out, size_t cap, const char *s, size_t len)
{
    size_t o = strlen(out);
    return o < cap && sigv4_uri_encode(s, len, 0, out + o, cap - o) >= 0;
}

static bool s_append(char *out, size_t cap, const char *s)
{
    size_t o = strlen(out), n = strlen(s);
    if (o + n >= cap)
        return false;
    memcpy(out + o, s, n + 1);
    return true;
}

static void s_set_model(gw_endpoint_t *ep, const char *m, size_t len)
{
    memcpy(ep->model, m, len);
    ep->model[len] = '\0';
    ep->model_len = len;
    ep->model_in_path = true;
}

/* /v1beta/models/{model}:{method}, or /v1/models/{model}:{method} (Google's stable version,
 * which @google/genai uses: its requests are a subset of v1beta's, so they go on as v1beta, the
 * one path the agent's allow-list has). */
static int s_parse_gemini(const char *path, gw_endpoint_t *ep)
{
    bool v1 = s_prefix(path, S_GEMINI_V1_PREFIX);
    const char *rest = path + strlen(v1 ? S_GEMINI_V1_PREFIX : S_GEMINI_PREFIX);
    const char *colon = strrchr(rest, ':');
    if (!colon || strchr(rest, '/'))
        return -ENOENT;
    gw_op_t op = s_find_op(s_gemini_ops, S_COUNT(s_gemini_ops), colon + 1, strlen(colon + 1));
    if (op == GW_OP_NONE)
        return -ENOENT;
    ep->op = op;
    size_t ml = (size_t)(colon - rest);
    if (!s_model_ok(rest, ml))
        return -EINVAL;
    s_set_model(ep, rest, ml);
    snprintf(ep->path, sizeof ep->path, "%s%s", S_GEMINI_PREFIX, rest);
    return 0;
}

/* /model/{modelId}/{operation} */
static int s_parse_bedrock(const char *path, gw_endpoint_t *ep)
{
    const char *rest = path + strlen(S_BEDROCK_PREFIX);
    const char *slash = strrchr(rest, '/');
    if (!slash)
        return -ENOENT;
    gw_op_t op = s_find_op(s_bedrock_ops, S_COUNT(s_bedrock_ops), slash + 1, strlen(slash + 1));
    if (op == GW_OP_NONE)
        return -ENOENT;
    ep->op = op;
    size_t ml = (size_t)(slash - rest);
    if (!s_model_ok(rest, ml))
        return -EINVAL;
    /* Only an ARN has a '/' (…:inference-profile/…, …:provisioned-model/…): anything else with
     * one is a path this gateway does not know how to split. */
    if (memchr(rest, '/', ml) && (ml < 4 || memcmp(rest, "arn:", 4) != 0))
        return -EINVAL;
    s_set_model(ep, rest, ml);
    ep->path[0] = '\0';
    if (!s_append(ep->path, sizeof ep->path, S_BEDROCK_PREFIX) ||
        !s_pct_append(ep->path, sizeof ep->path, rest, ml) ||
        !s_append(ep->path, sizeof ep->path, slash))
        return -EINVAL; /* never: 7 + 3 * 256 + 28 bytes fit */
    return 0;
}

int gw_endpoint_parse(const char *path, gw_endpoint_t *ep)
{
    memset(ep, 0, sizeof *ep);
    if (!path)
        path = "/";
    ep->format = gw_dialect_guess(path);
    snprintf(ep->path, sizeof ep->path, "%s", path);
    for (size_t i = 0; i < S_COUNT(s_fixed); i++) {
        if (strcmp(path, s_fixed[i].path) == 0) {
            ep->format = s_fixed[i].format;
            ep->op = s_fixed[i].op;
            ep->get = s_fixed[i].get;
            return 0;
        }
    }
    int rc = -ENOENT;
    if (s_prefix(path, S_GEMINI_PREFIX) || s_prefix(path, S_GEMINI_V1_PREFIX)) {
        rc = s_parse_gemini(path, ep);
        if (rc != -ENOENT)
            ep->format = GW_FORMAT_GEMINI; /* else /v1/models/... stays OpenAI's 404 */
    }
    else if (s_prefix(path, S_BEDROCK_PREFIX))
        rc = s_parse_bedrock(path, ep);
    if (rc != 0) {
        /* Keep what the caller may show: the format, and the path as received. */
        gw_format_t f = ep->format;
        gw_op_t op = rc == -EINVAL ? ep->op : GW_OP_NONE;
        memset(ep, 0, sizeof *ep);
        ep->format = f;
        ep->op = op;
        snprintf(ep->path, sizeof ep->path, "%s", path);
    }
    return rc;
}

bool gw_endpoint_billed(const gw_endpoint_t *ep)
{
    return ep->op != GW_OP_NONE && ep->op != GW_OP_MODELS && ep->op != GW_OP_COUNT_TOKENS;
}

bool gw_endpoint_stream_op(const gw_endpoint_t *ep)
{
    return ep->op == GW_OP_INVOKE_STREAM || ep->op == GW_OP_CONVERSE_STREAM;
}

int gw_endpoint_usage(const gw_endpoint_t *ep, bool content_sse, bool alt_sse, usage_format_t *fmt,
                      bool *streaming)
{
    switch (ep->op) {
    case GW_OP_CHAT:
        *fmt = USAGE_OPENAI_CHAT;
        *streaming = content_sse;
        return 0;
    case GW_OP_COMPLETIONS:
        *fmt = USAGE_OPENAI_COMPLETIONS;
        *streaming = content_sse;
        return 0;
    case GW_OP_EMBEDDINGS:
        *fmt = USAGE_OPENAI_EMBEDDINGS;
        *streaming = content_sse;
        return 0;
    case GW_OP_RESPONSES:
        *fmt = USAGE_OPENAI_RESPONSES;
        *streaming = content_sse;
        return 0;
    case GW_OP_MESSAGES:
        *fmt = USAGE_ANTHROPIC_MESSAGES;
        *streaming = content_sse;
        return 0;
    case GW_OP_GENERATE:
        *fmt = USAGE_GEMINI;
        *streaming = false;
        return 0;
    case GW_OP_STREAM_GENERATE:
        *fmt = USAGE_GEMINI;
        *streaming = alt_sse; /* without alt=sse: a JSON array, read as a body */
        return 0;
    case GW_OP_INVOKE:
    case GW_OP_INVOKE_STREAM:
        *fmt = USAGE_BEDROCK_INVOKE;
        *streaming = ep->op == GW_OP_INVOKE_STREAM;
        return 0;
    case GW_OP_CONVERSE:
    case GW_OP_CONVERSE_STREAM:
        *fmt = USAGE_BEDROCK_CONVERSE;
        *streaming = ep->op == GW_OP_CONVERSE_STREAM;
        return 0;
    default:
        return -1;
    }
}

/* ---- the query ------------------------------------------------------------------------- */

int gw_query_parse(const gw_endpoint_t *ep, const char *const *pieces, size_t n, gw_query_t *out)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        const char *p = pieces[i];
        const char *eq = strchr(p, '=');
        size_t nl = eq ? (size_t)(eq - p) : strlen(p);
        const char *v = eq ? eq + 1 : "";
        if (nl == 3 && memcmp(p, "key", 3) == 0) {
            /* The user's key: read (the first one), never passed on. */
            if (!out->has_key && *v) {
                size_t vl = strlen(v);
                if (vl > GW_KEY_MAX)
                    return -ENOSPC;
                memcpy(out->key, v, vl + 1);
                out->has_key = true;
            }
            continue;
        }
        if (nl == 3 && memcmp(p, "alt", 3) == 0 && strcmp(v, "sse") == 0)
            out->alt_sse = true;
        if (ep->format == GW_FORMAT_GEMINI || nl == 0)
            continue;
        if ((out->forward[0] && !s_append(out->forward, sizeof out->forward, "&")) ||
            !s_pct_append(out->forward, sizeof out->forward, p, nl) ||
            (eq && (!s_append(out->forward, sizeof out->forward, "=") ||
                    !s_pct_append(out->forward, sizeof out->forward, v, strlen(v)))))
            return -ENOSPC;
    }
    if (ep->format == GW_FORMAT_GEMINI && out->alt_sse && ep->op == GW_OP_STREAM_GENERATE)
        snprintf(out->forward, sizeof out->forward, "alt=sse");
    return 0;
}

/* ---- keys and headers ------------------------------------------------------------------- */

/* v without surrounding spaces and tabs, in *out / *len; false when nothing is left. */
static bool s_trim(const char *v, const char **out, size_t *len)
{
    if (!v)
        return false;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    *out = v;
    *len = n;
    return n > 0;
}

static bool s_bearer(const char *auth, const char **key, size_t *len)
{
    const char *v;
    size_t n;
    if (!s_trim(auth, &v, &n) || n < 7 || strncasecmp(v, "Bearer ", 7) != 0)
        return false;
    const char *t = v + 7;
    size_t tl = n - 7;
    while (tl && (*t == ' ' || *t == '\t')) {
        t++;
        tl--;
    }
    *key = t;
    *len = tl;
    return tl > 0;
}

int gw_dialect_key(gw_format_t f, const gw_creds_t *c, const char **key, size_t *len)
{
    switch (f) {
    case GW_FORMAT_ANTHROPIC:
        if (s_trim(c->x_api_key, key, len) || s_bearer(c->authorization, key, len))
            return 0;
        return -ENOENT;
    case GW_FORMAT_GEMINI:
        if (s_trim(c->x_goog_api_key, key, len) || s_trim(c->query_key, key, len))
            return 0;
        return -ENOENT;
    case GW_FORMAT_OPENAI:
    case GW_FORMAT_BEDROCK:
    default:
        return s_bearer(c->authorization, key, len) ? 0 : -ENOENT;
    }
}

const char *gw_dialect_no_key_message(gw_format_t f)
{
    switch (f) {
    case GW_FORMAT_ANTHROPIC:
        return "x-api-key header is required (or Authorization: Bearer sk-...)";
    case GW_FORMAT_GEMINI:
        return "Method doesn't allow unregistered callers (callers without established "
               "identity). Please use API Key or other form of API consumer identity to call "
               "this API.";
    case GW_FORMAT_BEDROCK:
        return "Missing Authentication Token: send the hub key as Authorization: Bearer sk-...";
    case GW_FORMAT_OPENAI:
    default:
        return "You didn't provide an API key. Use Authorization: Bearer sk-...";
    }
}

const char *const *gw_dialect_forward_headers(gw_format_t f)
{
    static const char *const anthropic[] = {"anthropic-version", "anthropic-beta", NULL};
    static const char *const none[] = {NULL};
    return f == GW_FORMAT_ANTHROPIC ? anthropic : none;
}

bool gw_dialect_header_value_ok(const char *v, size_t len)
{
    if (len == 0 || len > GW_FWD_VALUE_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        if ((c < 0x20 && c != '\t') || c > 0x7e)
            return false;
    }
    return true;
}

/* ---- errors ----------------------------------------------------------------------------- */

/* Sets out's body from a JSON value (taken) and its header lines (copied). */
static int s_finish(gw_error_t *out, json_t *o, const char *headers)
{
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!body)
        return -ENOMEM;
    size_t n = strlen(body);
    out->body = malloc(n + 2);
    if (!out->body) {
        free(body);
        return -ENOMEM;
    }
    memcpy(out->body, body, n);
    out->body[n] = '\n';
    out->body[n + 1] = '\0';
    out->body_len = n + 1;
    free(body);
    out->headers = strdup(headers);
    if (!out->headers)
        return -ENOMEM;
    out->headers_len = strlen(headers);
    return 0;
}

int gw_dialect_error(gw_format_t f, int status, const char *type, const char *code,
                     const char *message, const char *request_id, gw_error_t *out)
{
    memset(out, 0, sizeof *out);
    out->status = status;
    if (!message)
        message = "";
    if (!request_id)
        request_id = "";
    bool no_key = code && strcmp(code, "missing_api_key") == 0;
    bool bad_key = status == 401 && code && strcmp(code, "invalid_api_key") == 0;
    json_t *o = NULL;
    char h[512];
    int rc;
    switch (f) {
    case GW_FORMAT_ANTHROPIC:
        o = json_pack("{s:s, s:{s:s, s:s}, s:s}", "type", "error", "error", "type",
                      apierror_anthropic_type(status), "message", message, "request_id", request_id);
        snprintf(h, sizeof h, "content-type: application/json\r\nrequest-id: %.64s\r\n",
                 request_id);
        rc = s_finish(out, o, h);
        break;
    case GW_FORMAT_GEMINI:
        if (no_key) {
            out->status = 403;
            o = json_pack("{s:{s:i, s:s, s:s}}", "error", "code", 403, "message",
                          gw_dialect_no_key_message(GW_FORMAT_GEMINI), "status",
                          "PERMISSION_DENIED");
        } else if (bad_key) {
            out->status = 400;
            o = json_pack("{s:{s:i, s:s, s:s, s:[{s:s, s:s, s:s, s:{s:s}}]}}", "error", "code", 400,
                          "message", "API key not valid. Please pass a valid API key.", "status",
                          "INVALID_ARGUMENT", "details", "@type",
                          "type.googleapis.com/google.rpc.ErrorInfo", "reason", "API_KEY_INVALID",
                          "domain", "googleapis.com", "metadata", "service",
                          "generativelanguage.googleapis.com");
        } else {
            o = json_pack("{s:{s:i, s:s, s:s}}", "error", "code", status, "message", message,
                          "status", apierror_google_status(status));
        }
        rc = s_finish(out, o, "content-type: application/json; charset=UTF-8\r\n");
        break;
    case GW_FORMAT_BEDROCK:
        o = json_pack("{s:s}", "message", message);
        snprintf(h, sizeof h,
                 "content-type: application/json\r\nx-amzn-ErrorType: %s\r\n"
                 "x-amzn-RequestId: %.64s\r\n",
                 apierror_aws_type(status), request_id);
        rc = s_finish(out, o, h);
        break;
    case GW_FORMAT_OPENAI:
    default:
        if (!type)
            type = status < 500 ? "invalid_request_error" : "server_error";
        /* OpenAI says invalid_api_key whether the key is missing or wrong. */
        if (no_key)
            code = "invalid_api_key";
        o = json_pack("{s:{s:s, s:s, s:n, s:o}}", "error", "message", message, "type", type,
                      "param", "code", code ? json_string(code) : json_null());
        rc = s_finish(out, o, "content-type: application/json\r\n");
        break;
    }
    if (rc != 0)
        gw_error_free(out);
    return rc;
}

void gw_error_free(gw_error_t *e)
{
    if (!e)
        return;
    free(e->headers);
    free(e->body);
    memset(e, 0, sizeof *e);
}

/* ---- mid-stream errors ------------------------------------------------------------------- */

/* Appends json's compact text between pre and post into a malloc'd buffer. */
static uint8_t *s_wrap(const char *pre, json_t *o, const char *post, size_t *out_len)
{
    char *j = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!j)
        return NULL;
    size_t a = strlen(pre), b = strlen(j), c = strlen(post);
    uint8_t *buf = malloc(a + b + c + 1);
    if (buf) {
        memcpy(buf, pre, a);
        memcpy(buf + a, j, b);
        memcpy(buf + a + b, post, c);
        buf[a + b + c] = '\0';
        *out_len = a + b + c;
    }
    free(j);
    return buf;
}

uint8_t *gw_dialect_stream_error(const gw_endpoint_t *ep, int status, bool sse, const char *why,
                                 size_t why_len, size_t *out_len)
{
    *out_len = 0;
    if (status < 200 || status > 299)
        return NULL; /* an error answer is relayed whole, as the vendor sent it */
    /* "stream interrupted: " + at most 200 bytes of the reason, cut on a UTF-8 boundary. */
    char msg[256];
    size_t n = why ? why_len : 0;
    if (n > 200) {
        n = 200;
        while (n > 0 && ((unsigned char)why[n] & 0xC0) == 0x80)
            n--;
    }
    snprintf(msg, sizeof msg, "stream interrupted: %.*s", (int)n, why ? why : "");
    json_t *m = json_string(msg);
    if (!m)
        m = json_string("stream interrupted");
    switch (ep->format) {
    case GW_FORMAT_OPENAI:
        if (!sse)
            break;
        return s_wrap("data: ",
                      json_pack("{s:{s:o, s:s, s:n, s:s}}", "error", "message", m, "type",
                                "server_error", "param", "code", "stream_interrupted"),
                      "\n\n", out_len);
    case GW_FORMAT_ANTHROPIC:
        if (!sse)
            break;
        return s_wrap("event: error\ndata: ",
                      json_pack("{s:s, s:{s:s, s:o}}", "type", "error", "error", "type",
                                "api_error", "message", m),
                      "\n\n", out_len);
    case GW_FORMAT_GEMINI:
        if (!sse)
            break; /* a JSON-array stream can only end short */
        return s_wrap("data: ",
                      json_pack("{s:{s:i, s:o, s:s}}", "error", "code", 500, "message", m, "status",
                                "INTERNAL"),
                      "\r\n\r\n", out_len);
    case GW_FORMAT_BEDROCK: {
        if (!gw_endpoint_stream_op(ep))
            break;
        size_t pl = 0;
        uint8_t *payload = s_wrap("", json_pack("{s:o}", "message", m), "", &pl);
        if (!payload)
            return NULL;
        static const char *const names[] = {":message-type", ":exception-type", ":content-type"};
        static const char *const values[] = {"exception", "internalServerException",
                                             "application/json"};
        uint8_t *frame = es_encode(names, values, 3, payload, pl, out_len);
        free(payload);
        if (!frame)
            *out_len = 0;
        return frame;
    }
    default:
        break;
    }
    json_decref(m);
    return NULL;
}
