/* fv_http: incremental HTTP/1.1 request parsing (head kept, body decoded and passed on). */
#include "fv_http.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { C_SIZE, C_DATA, C_DATA_CR, C_DATA_LF, C_TRAILER };

void fv_req_init(fv_req_t *r)
{
    memset(r, 0, sizeof *r);
    r->state = FV_REQ_HEAD;
}

void fv_req_reset(fv_req_t *r)
{
    char *head = r->head;
    size_t cap = r->head_cap;
    fv_req_init(r);
    r->head = head;
    r->head_cap = cap;
}

void fv_req_free(fv_req_t *r)
{
    free(r->head);
    fv_req_init(r);
}

/* Marks the request malformed; returns 0 so callers can `return s_bad(...)`. */
static int s_bad(fv_req_t *r, int status, const char *why)
{
    r->state = FV_REQ_BAD;
    r->status = status;
    r->error = why;
    return 0;
}

/* True for the characters of an RFC 9110 token. */
static bool s_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* True if the comma-separated list value holds token (case-insensitive). */
static bool s_has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);
    const char *p = value;
    while (p && *p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ' && *e != '\t')
            e++;
        if ((size_t)(e - p) == tl && strncasecmp(p, token, tl) == 0)
            return true;
        p = strchr(e, ',');
    }
    return false;
}

const char *fv_req_header(const fv_req_t *r, const char *name)
{
    for (int i = 0; i < r->n_hdrs; i++)
        if (strcasecmp(r->hdrs[i].name, name) == 0)
            return r->hdrs[i].value;
    return NULL;
}

int fv_req_header_count(const fv_req_t *r, const char *name)
{
    int n = 0;
    for (int i = 0; i < r->n_hdrs; i++)
        if (strcasecmp(r->hdrs[i].name, name) == 0)
            n++;
    return n;
}

/* Parses the request line at p (NUL-terminated); 0 or s_bad(). */
static int s_parse_request_line(fv_req_t *r, char *p)
{
    char *sp1 = strchr(p, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || sp1 == p || sp2 == sp1 + 1 || strchr(sp2 + 1, ' '))
        return s_bad(r, 400, "malformed request line");
    *sp1 = '\0';
    *sp2 = '\0';
    for (const char *m = p; *m; m++)
        if (!s_tchar((unsigned char)*m))
            return s_bad(r, 400, "malformed method");
    for (const char *t = sp1 + 1; *t; t++)
        if ((unsigned char)*t <= 0x20 || *t == 0x7f)
            return s_bad(r, 400, "malformed request target");
    if (strcmp(sp2 + 1, "HTTP/1.1") != 0 && strcmp(sp2 + 1, "HTTP/1.0") != 0)
        return s_bad(r, 505, "only HTTP/1.0 and HTTP/1.1 are spoken here");
    r->method = p;
    r->target = sp1 + 1;
    r->version = sp2 + 1;
    r->http10 = strcmp(r->version, "HTTP/1.0") == 0;
    return 0;
}

/* Parses one header line (NUL-terminated, no CRLF) into r->hdrs; 0 or s_bad(). */
static int s_parse_header_line(fv_req_t *r, char *line)
{
    if (*line == ' ' || *line == '\t')
        return s_bad(r, 400, "obsolete header line folding");
    char *colon = strchr(line, ':');
    if (!colon || colon == line)
        return s_bad(r, 400, "malformed header line");
    for (const char *n = line; n < colon; n++)
        if (!s_tchar((unsigned char)*n))
            return s_bad(r, 400, "malformed header name");
    if (r->n_hdrs >= FV_HEADERS_MAX)
        return s_bad(r, 431, "too many header lines");
    *colon = '\0';
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    char *end = v + strlen(v);
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *end = '\0';
    for (const char *c = v; *c; c++)
        if (((unsigned char)*c < 0x20 && *c != '\t') || *c == 0x7f)
            return s_bad(r, 400, "control character in a header value");
    r->hdrs[r->n_hdrs].name = line;
    r->hdrs[r->n_hdrs].value = v;
    r->n_hdrs++;
    return 0;
}

/* Decides how the body is framed, from the parsed headers; 0 or s_bad(). */
static int s_framing(fv_req_t *r)
{
    int n_te = fv_req_header_count(r, "transfer-encoding");
    int n_cl = fv_req_header_count(r, "content-length");
    if (n_te && n_cl)
        return s_bad(r, 400, "Content-Length together with Transfer-Encoding");
    if (n_te) {
        if (n_te > 1 || strcasecmp(fv_req_header(r, "transfer-encoding"), "chunked") != 0)
            return s_bad(r, 501, "only the chunked transfer coding is supported");
        r->chunked = true;
        r->cstate = C_SIZE;
    }
    if (n_cl) {
        const char *cl = fv_req_header(r, "content-length");
        size_t digits = strspn(cl, "0123456789");
        if (n_cl > 1 || !*cl || cl[digits] || digits > 18)
            return s_bad(r, 400, "malformed or repeated Content-Length");
        r->has_length = true;
        r->content_length = strtoull(cl, NULL, 10);
    }
    const char *conn = fv_req_header(r, "connection");
    if (r->http10)
        r->keep_alive = false; /* HTTP/1.0: one request per connection */
    else
        r->keep_alive = !(conn && s_has_token(conn, "close"));
    const char *expect = fv_req_header(r, "expect");
    r->expect_continue = expect && strcasecmp(expect, "100-continue") == 0;
    if (r->chunked || r->content_length)
        r->state = FV_REQ_BODY;
    else
        r->state = FV_REQ_DONE;
    return 0;
}

/* Splits the complete head (ending in CRLFCRLF, NUL-terminated) into its parts. */
static int s_parse_head(fv_req_t *r)
{
    char *p = r->head;
    char *eol = strstr(p, "\r\n");
    *eol = '\0';
    if (strlen(p) != (size_t)(eol - p))
        return s_bad(r, 400, "NUL byte in the request line");
    if (s_parse_request_line(r, p) != 0 || r->state == FV_REQ_BAD)
        return 0;
    p = eol + 2;
    for (;;) {
        eol = strstr(p, "\r\n");
        if (!eol || eol == p)
            break;
        *eol = '\0';
        if (memchr(p, '\n', (size_t)(eol - p)) || memchr(p, '\r', (size_t)(eol - p)))
            return s_bad(r, 400, "bare CR or LF in the head");
        s_parse_header_line(r, p);
        if (r->state == FV_REQ_BAD)
            return 0;
        p = eol + 2;
    }
    return s_framing(r);
}

/* Takes head bytes; returns how many of in were consumed. */
static size_t s_feed_head(fv_req_t *r, const uint8_t *in, size_t len)
{
    size_t used = 0;
    /* RFC 9112: a server ignores empty lines before the request line. */
    while (r->head_len == 0 && used < len && (in[used] == '\r' || in[used] == '\n'))
        used++;
    if (used == len)
        return used;
    size_t room = FV_HEAD_MAX + 1 - r->head_len;
    size_t take = len - used < room ? len - used : room;
    if (r->head_len + take + 1 > r->head_cap) {
        size_t cap = r->head_cap ? r->head_cap : 4096;
        while (cap < r->head_len + take + 1)
            cap *= 2;
        char *nh = realloc(r->head, cap);
        if (!nh) {
            s_bad(r, 500, "out of memory");
            return used;
        }
        r->head = nh;
        r->head_cap = cap;
    }
    size_t old = r->head_len;
    memcpy(r->head + old, in + used, take);
    r->head_len += take;
    r->head[r->head_len] = '\0';
    size_t from = old >= 3 ? old - 3 : 0;
    for (size_t i = from; i + 4 <= r->head_len; i++) {
        if (memcmp(r->head + i, "\r\n\r\n", 4) == 0) {
            size_t end = i + 4;
            r->head_len = end;
            r->head[end] = '\0';
            if (memchr(r->head, '\0', end))
                s_bad(r, 400, "NUL byte in the head");
            else
                s_parse_head(r);
            return used + (end - old);
        }
    }
    if (r->head_len > FV_HEAD_MAX)
        s_bad(r, 431, "request head over 64 KiB");
    return used + take;
}

/* Parses a complete chunk-size line (without CRLF); 0 or s_bad(). */
static int s_chunk_size(fv_req_t *r)
{
    const char *p = r->line;
    uint64_t v = 0;
    size_t digits = 0;
    for (; *p; p++, digits++) {
        int d;
        if (*p >= '0' && *p <= '9')
            d = *p - '0';
        else if (*p >= 'a' && *p <= 'f')
            d = *p - 'a' + 10;
        else if (*p >= 'A' && *p <= 'F')
            d = *p - 'A' + 10;
        else
            break;
        if (digits >= 15)
            return s_bad(r, 400, "chunk size too large");
        v = v * 16 + (uint64_t)d;
    }
    while (*p == ' ' || *p == '\t')
        p++;
    if (!digits || (*p && *p != ';'))
        return s_bad(r, 400, "malformed chunk size");
    r->chunk_left = v;
    r->cstate = v ? C_DATA : C_TRAILER;
    r->line_len = 0;
    r->trailer_len = 0;
    return 0;
}

/* Decodes chunked body bytes; returns how many of in were consumed. */
static size_t s_feed_chunked(fv_req_t *r, const uint8_t *in, size_t len, fv_body_cb cb, void *arg)
{
    size_t used = 0;
    while (used < len && r->state == FV_REQ_BODY) {
        uint8_t c = in[used];
        switch (r->cstate) {
        case C_SIZE:
            used++;
            if (c == '\n') {
                if (r->line_len && r->line[r->line_len - 1] == '\r')
                    r->line_len--;
                r->line[r->line_len] = '\0';
                s_chunk_size(r);
            } else if (r->line_len + 1 < sizeof r->line) {
                r->line[r->line_len++] = (char)c;
            } else {
                s_bad(r, 400, "chunk-size line too long");
            }
            break;
        case C_DATA: {
            size_t n = len - used;
            if (n > r->chunk_left)
                n = (size_t)r->chunk_left;
            if (cb)
                cb(arg, in + used, n);
            used += n;
            r->body_len += n;
            r->chunk_left -= n;
            if (!r->chunk_left)
                r->cstate = C_DATA_CR;
            break;
        }
        case C_DATA_CR:
            used++;
            if (c == '\r')
                r->cstate = C_DATA_LF;
            else if (c == '\n')
                r->cstate = C_SIZE;
            else
                s_bad(r, 400, "chunk data longer than its size");
            r->line_len = 0;
            break;
        case C_DATA_LF:
            used++;
            if (c != '\n')
                s_bad(r, 400, "chunk data longer than its size");
            r->cstate = C_SIZE;
            break;
        case C_TRAILER:
            used++;
            if (++r->trailer_len > FV_HEAD_MAX) {
                s_bad(r, 431, "chunked trailer over 64 KiB");
            } else if (c == '\n') {
                if (r->line_len == 0)
                    r->state = FV_REQ_DONE; /* the empty line after the last chunk */
                r->line_len = 0;
            } else if (c != '\r') {
                r->line_len++;
            }
            break;
        default:
            s_bad(r, 500, "parser state");
        }
    }
    return used;
}

size_t fv_req_feed(fv_req_t *r, const uint8_t *in, size_t len, fv_body_cb cb, void *arg)
{
    if (r->state == FV_REQ_HEAD)
        return s_feed_head(r, in, len);
    if (r->state != FV_REQ_BODY)
        return 0;
    if (r->chunked)
        return s_feed_chunked(r, in, len, cb, arg);
    uint64_t left = r->content_length - r->body_len;
    size_t n = len < left ? len : (size_t)left;
    if (n && cb)
        cb(arg, in, n);
    r->body_len += n;
    if (r->body_len == r->content_length)
        r->state = FV_REQ_DONE;
    return n;
}
