/* bus_http: request collection and non-blocking responses for lws HTTP protocols. */
#include "bus_http.h"
#include "bus_log.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int bus_http_begin(bus_http_t *h, struct lws *wsi, const char *uri, size_t body_max)
{
    bus_http_reset(h);
    memset(h, 0, sizeof *h);
    h->body_max = body_max;
    const char *m = "GET";
    if (lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI))
        m = "POST";
    else if (lws_hdr_total_length(wsi, WSI_TOKEN_PUT_URI))
        m = "PUT";
    else if (lws_hdr_total_length(wsi, WSI_TOKEN_DELETE_URI))
        m = "DELETE";
    else if (lws_hdr_total_length(wsi, WSI_TOKEN_PATCH_URI))
        m = "PATCH";
    else if (lws_hdr_total_length(wsi, WSI_TOKEN_OPTIONS_URI))
        m = "OPTIONS";
    else if (lws_hdr_total_length(wsi, WSI_TOKEN_HEAD_URI))
        m = "HEAD";
    snprintf(h->method, sizeof h->method, "%s", m);
    snprintf(h->path, sizeof h->path, "%s", uri ? uri : "/");
    return 0;
}

int bus_http_body(bus_http_t *h, const void *in, size_t len)
{
    if (h->body_too_large || h->body_len + len > h->body_max) {
        h->body_too_large = true;
        return -EFBIG;
    }
    char *nb = realloc(h->body, h->body_len + len + 1);
    if (!nb)
        return -ENOMEM;
    memcpy(nb + h->body_len, in, len);
    h->body = nb;
    h->body_len += len;
    h->body[h->body_len] = '\0';
    return 0;
}

int bus_http_header(struct lws *wsi, enum lws_token_indexes tok, char *out, size_t outlen)
{
    int n = lws_hdr_total_length(wsi, tok);
    if (n <= 0 || (size_t)n >= outlen)
        return -ENOENT;
    if (lws_hdr_copy(wsi, out, (int)outlen, tok) < 0)
        return -ENOENT;
    return 0;
}

int bus_http_respond(bus_http_t *h, struct lws *wsi, int status, const char *ctype,
                     const char *body, size_t len)
{
    free(h->resp);
    h->resp = malloc(len ? len : 1);
    if (!h->resp)
        return -ENOMEM;
    if (len)
        memcpy(h->resp, body, len);
    h->resp_len = len;
    h->resp_off = 0;
    h->status = status;
    h->answered = true;
    snprintf(h->ctype, sizeof h->ctype, "%s", ctype ? ctype : "application/json");
    lws_callback_on_writable(wsi);
    return 0;
}

int bus_http_error(bus_http_t *h, struct lws *wsi, int status, const char *type,
                   const char *message)
{
    char msg[512] = "";
    char body[768];
    bus_json_escape(msg, sizeof msg, message, strlen(message));
    int n = snprintf(body, sizeof body,
                     "{\"error\":{\"message\":\"%s\",\"type\":\"%s\",\"code\":%d}}\n", msg, type,
                     status);
    if (n < 0 || (size_t)n >= sizeof body)
        n = 0;
    return bus_http_respond(h, wsi, status, "application/json", body, (size_t)n);
}

int bus_http_writeable(bus_http_t *h, struct lws *wsi)
{
    if (!h->status)
        return 0;
    if (!h->headers_sent) {
        uint8_t buf[LWS_PRE + 1024];
        uint8_t *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
        if (lws_add_http_common_headers(wsi, (unsigned int)h->status, h->ctype,
                                        (lws_filepos_t)h->resp_len, &p, end))
            return -1;
        if (h->close_after &&
            lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION,
                                         (const unsigned char *)"close", 5, &p, end))
            return -1;
        if (h->extra[0]) {
            size_t el = strlen(h->extra);
            if ((size_t)(end - p) <= el)
                return -1;
            memcpy(p, h->extra, el);
            p += el;
        }
        if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
                                         (const unsigned char *)"no-store", 8, &p, end))
            return -1;
        if (lws_finalize_write_http_header(wsi, start, &p, end))
            return -1;
        h->headers_sent = true;
        if (h->resp_len)
            lws_callback_on_writable(wsi);
        else if (h->close_after || lws_http_transaction_completed(wsi))
            return -1;
        return 0;
    }
    size_t left = h->resp_len - h->resp_off;
    size_t chunk = left > 16384 ? 16384 : left;
    uint8_t *buf = malloc(LWS_PRE + chunk);
    if (!buf)
        return -1;
    memcpy(buf + LWS_PRE, h->resp + h->resp_off, chunk);
    bool last = chunk == left;
    int n = lws_write(wsi, buf + LWS_PRE, chunk, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP);
    free(buf);
    if (n < (int)chunk)
        return -1;
    h->resp_off += chunk;
    if (!last) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    bool close_after = h->close_after;
    bus_http_reset(h);
    /* A request whose body was not read cannot be followed by another on this connection. */
    if (close_after || lws_http_transaction_completed(wsi))
        return -1;
    return 0;
}

void bus_http_reset(bus_http_t *h)
{
    free(h->body);
    free(h->resp);
    size_t max = h->body_max;
    memset(h, 0, sizeof *h);
    h->body_max = max;
}

bool bus_http_bearer_ok(struct lws *wsi, const char *token)
{
    char got[512];
    if (!token || !*token)
        return false;
    if (bus_http_header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, got, sizeof got) != 0)
        return false;
    if (strncmp(got, "Bearer ", 7) != 0)
        return false;
    const char *g = got + 7;
    size_t gl = strlen(g), tl = strlen(token);
    if (gl != tl)
        return false;
    return sodium_memcmp(g, token, tl) == 0;
}
