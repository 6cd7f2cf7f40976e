/* ag_proto: supervisor ⇄ adapter frames and local error answers. */
#include "ag_proto.h"
#include "apierror.h"
#include "bus_log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

void ag_sid_put(uint8_t b[AG_SID_LEN], uint64_t sid)
{
    for (int i = AG_SID_LEN - 1; i >= 0; i--) {
        b[i] = (uint8_t)(sid & 0xff);
        sid >>= 8;
    }
}

uint64_t ag_sid_get(const uint8_t b[AG_SID_LEN])
{
    uint64_t v = 0;
    for (int i = 0; i < AG_SID_LEN; i++)
        v = (v << 8) | b[i];
    return v;
}

int ag_openai_error(char *out, size_t outlen, const char *message, const char *type,
                    const char *code)
{
    char msg[1024] = "", cd[128] = "";
    bus_json_escape(msg, sizeof msg, message, strlen(message));
    if (code)
        bus_json_escape(cd, sizeof cd, code, strlen(code));
    int n = snprintf(out, outlen,
                     "{\"error\":{\"message\":\"%s\",\"type\":\"%s\",\"param\":null,"
                     "\"code\":%s%s%s}}",
                     msg, type, code ? "\"" : "", code ? cd : "null", code ? "\"" : "");
    if (n < 0 || (size_t)n >= outlen)
        return -ENOSPC;
    return n;
}

static bool s_is(const char *format, const char *name)
{
    return format && strcmp(format, name) == 0;
}

int ag_format_error(char *out, size_t outlen, const char *format, int status, const char *type,
                    const char *code, const char *message, const char **aws_type)
{
    if (aws_type)
        *aws_type = NULL;
    if (!s_is(format, "anthropic") && !s_is(format, "gemini") && !s_is(format, "bedrock"))
        return ag_openai_error(out, outlen, message, type, code);
    char msg[1024] = "";
    bus_json_escape(msg, sizeof msg, message, strlen(message));
    int n;
    if (s_is(format, "anthropic")) {
        n = snprintf(out, outlen, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"%s\"}}",
                     apierror_anthropic_type(status), msg);
    } else if (s_is(format, "gemini")) {
        n = snprintf(out, outlen, "{\"error\":{\"code\":%d,\"message\":\"%s\",\"status\":\"%s\"}}",
                     status, msg, apierror_google_status(status));
    } else {
        n = snprintf(out, outlen, "{\"message\":\"%s\"}", msg);
        if (aws_type)
            *aws_type = apierror_aws_type(status);
    }
    if (n < 0 || (size_t)n >= outlen)
        return -ENOSPC;
    return n;
}

/* An envelope of type t for req_id, zeroed otherwise. */
static bus_env_t s_env(bus_type_t t, const uint8_t req_id[BUS_REQ_ID_LEN])
{
    bus_env_t e;
    memset(&e, 0, sizeof e);
    e.type = t;
    e.version = BUS_PROTO_VERSION;
    e.has_req_id = true;
    memcpy(e.req_id, req_id, BUS_REQ_ID_LEN);
    return e;
}

int ag_reply_error(ag_send_fn send, void *arg, const uint8_t req_id[BUS_REQ_ID_LEN],
                   const char *format, int status, const char *type, const char *code,
                   const char *message, const char *end_error)
{
    char body[1536];
    const char *aws_type = NULL;
    int n = ag_format_error(body, sizeof body, format, status, type, code, message, &aws_type);
    if (n < 0)
        return n;
    bus_buf_t scratch;
    bus_buf_init(&scratch, 4096);
    bus_str_t kv[4] = {bus_str_c("content-type"), bus_str_c("application/json"),
                       bus_str_c("x-amzn-errortype"), bus_str_c(aws_type ? aws_type : "")};
    bus_env_t h = s_env(BUS_T_RESP_HEAD, req_id);
    h.u.resp_head.status = (uint64_t)status;
    int rc = bus_list_encode_kvs(&scratch, kv, aws_type ? 2 : 1, &h.u.resp_head.headers);
    if (rc == 0)
        rc = send(arg, &h);
    bus_env_t c = s_env(BUS_T_RESP_CHUNK, req_id);
    c.u.resp_chunk.data = (bus_bin_t){(const uint8_t *)body, (size_t)n};
    if (rc == 0)
        rc = send(arg, &c);
    bus_buf_free(&scratch);
    int rc2 = ag_reply_end_error(send, arg, req_id, end_error ? end_error : "");
    return rc ? rc : rc2;
}

int ag_reply_end_error(ag_send_fn send, void *arg, const uint8_t req_id[BUS_REQ_ID_LEN],
                       const char *error)
{
    bus_env_t e = s_env(BUS_T_RESP_END, req_id);
    e.u.resp_end.error = bus_str_c(error);
    return send(arg, &e);
}
