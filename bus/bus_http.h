/* bus_http: small HTTP/1.1 server helpers on top of libwebsockets.
 *
 * Each HTTP protocol of a process keeps a bus_http_t as the first member of its per-session
 * data. A handler collects the request (method, path, headers, a body up to a hard maximum),
 * then answers with bus_http_respond(), possibly later (after a reply from elsewhere): the
 * answer is written when the socket is writable, in pieces, never blocking the loop.
 */
#ifndef BUS_HTTP_H
#define BUS_HTTP_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>

#define BUS_HTTP_PATH_MAX 512

typedef struct {
    char method[8];                /* GET, POST, ... */
    char path[BUS_HTTP_PATH_MAX];  /* decoded path without the query */
    char *body;                    /* request body (NUL-terminated), malloc'd */
    size_t body_len;               /* bytes in body */
    size_t body_max;               /* refuse bodies larger than this (413) */
    bool body_too_large;           /* set while reading when the limit was passed */
    char *resp;                    /* pending response body, malloc'd */
    size_t resp_len;               /* its length */
    size_t resp_off;               /* bytes of it already written */
    int status;                    /* response status, 0 while none is ready */
    char ctype[64];                /* response content type */
    char extra[256];               /* extra response header lines ("Name: value\r\n") */
    bool headers_sent;             /* status line and headers are out */
    bool answered;                 /* a response was queued (stop handling this request) */
    bool close_after;              /* close the connection after the response (body unread) */
} bus_http_t;

/* Fills method/path from the request headers of wsi (on LWS_CALLBACK_HTTP). Returns 0. */
int bus_http_begin(bus_http_t *h, struct lws *wsi, const char *uri, size_t body_max);

/* Appends body bytes (LWS_CALLBACK_HTTP_BODY). Returns 0, or -EFBIG past body_max. */
int bus_http_body(bus_http_t *h, const void *in, size_t len);

/* Gets the value of a request header, e.g. WSI_TOKEN_HTTP_AUTHORIZATION; 0 or -ENOENT. */
int bus_http_header(struct lws *wsi, enum lws_token_indexes tok, char *out, size_t outlen);

/* Queues a response (takes a copy of body) and asks for a writable callback. */
int bus_http_respond(bus_http_t *h, struct lws *wsi, int status, const char *ctype,
                     const char *body, size_t len);

/* Queues a JSON error body {"error":{"message":..,"type":..,"code":..}}. */
int bus_http_error(bus_http_t *h, struct lws *wsi, int status, const char *type,
                   const char *message);

/* Writes the pending response (LWS_CALLBACK_HTTP_WRITEABLE). Returns the value the lws
 * callback should return: 0 to continue, -1 to close after a complete response. */
int bus_http_writeable(bus_http_t *h, struct lws *wsi);

/* Frees the request and response buffers (LWS_CALLBACK_CLOSED_HTTP / HTTP_DROP_PROTOCOL). */
void bus_http_reset(bus_http_t *h);

/* Constant-time check that the Authorization header is exactly "Bearer <token>".
 * Returns true only for a match; an empty token never matches. */
bool bus_http_bearer_ok(struct lws *wsi, const char *token);

#endif
