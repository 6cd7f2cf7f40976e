/* fv_http: an incremental HTTP/1.1 request parser for the fake vendor.
 *
 * libwebsockets 4.1.6 cannot list the custom headers of a request, nor decode a chunked request
 * body, and the fake must see every header exactly as sent and accept what curl sends (chunked
 * uploads, Expect: 100-continue). So the fake takes raw (TLS-decrypted) bytes from lws and
 * parses them here: the head is kept whole (at most FV_HEAD_MAX bytes), the body is decoded
 * (Content-Length or chunked) and handed to a callback piece by piece, never stored.
 *
 * fv_req_feed() stops consuming at the end of the head, so the caller can act on the headers
 * before the body arrives, and at the end of the request: the bytes after it belong to the
 * next request on the connection.
 */
#ifndef FV_HTTP_H
#define FV_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FV_HEAD_MAX (64 * 1024) /* request line + headers, bytes */
#define FV_HEADERS_MAX 128      /* header lines */

typedef enum {
    FV_REQ_HEAD, /* reading the request line and headers */
    FV_REQ_BODY, /* the head is parsed; reading the body */
    FV_REQ_DONE, /* the whole request was read */
    FV_REQ_BAD,  /* malformed: answer status/error and close */
} fv_req_state_t;

typedef struct {
    const char *name;  /* as sent, NUL-terminated inside the head buffer */
    const char *value; /* trimmed of surrounding blanks, NUL-terminated */
} fv_hdr_t;

/* Receives decoded body bytes. */
typedef void (*fv_body_cb)(void *arg, const uint8_t *data, size_t len);

typedef struct {
    fv_req_state_t state;          /* where the parser is */
    char *head;                    /* the head bytes (malloc'd, grows up to FV_HEAD_MAX + 1) */
    size_t head_len;               /* bytes in head */
    size_t head_cap;               /* its allocation */
    const char *method;            /* "POST", inside head */
    const char *target;            /* request target as sent ("/v1/x?a=b"), inside head */
    const char *version;           /* "HTTP/1.1", inside head */
    fv_hdr_t hdrs[FV_HEADERS_MAX]; /* headers in the order sent */
    int n_hdrs;                    /* how many */
    bool http10;                   /* HTTP/1.0 request */
    bool keep_alive;               /* the connection may carry another request after this one */
    bool expect_continue;          /* "Expect: 100-continue" was sent */
    bool chunked;                  /* the body is chunked */
    bool has_length;               /* a Content-Length was given */
    uint64_t content_length;       /* its value */
    uint64_t body_len;             /* decoded body bytes so far */
    int cstate;                    /* chunked decoder state */
    uint64_t chunk_left;           /* bytes left in the current chunk */
    char line[128];                /* a chunk-size line being read */
    size_t line_len;               /* bytes in line (more are counted, not kept) */
    size_t trailer_len;            /* bytes of trailer lines read (bounded by FV_HEAD_MAX) */
    int status;                    /* FV_REQ_BAD: the status to answer (400, 431, 501) */
    const char *error;             /* FV_REQ_BAD: why, one line */
} fv_req_t;

/* Prepares a parser (no allocation until bytes arrive). */
void fv_req_init(fv_req_t *r);

/* Makes the parser ready for the next request on the same connection (keeps the buffer). */
void fv_req_reset(fv_req_t *r);

/* Frees the head buffer. */
void fv_req_free(fv_req_t *r);

/* Consumes bytes of in: returns how many. Stops after the head (state leaves FV_REQ_HEAD), at
 * the end of the request (FV_REQ_DONE) and on an error (FV_REQ_BAD). Body bytes go to cb. */
size_t fv_req_feed(fv_req_t *r, const uint8_t *in, size_t len, fv_body_cb cb, void *arg);

/* The value of the first header called name (case-insensitive), or NULL. */
const char *fv_req_header(const fv_req_t *r, const char *name);

/* Number of header lines called name (case-insensitive). */
int fv_req_header_count(const fv_req_t *r, const char *name);

#endif
