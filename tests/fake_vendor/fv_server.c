/* fv_server: connections, routing, fault switches, counters and the control API. */
#include "fv_server.h"
#include "fv_http.h"
#include "fv_scan.h"
#include "fv_wire.h"

#include "bus_config.h"
#include "bus_log.h"
#include "bus_plat.h"

#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#define FV_KEEP_BODY (64 * 1024)      /* request body bytes kept per record */
#define FV_RING 16                    /* records kept for /_fake/requests */
#define FV_WRITE_MAX 16384            /* bytes handed to lws per writable callback */
#define FV_Q_MAX (256u * 1024 * 1024) /* hard cap of one connection's output queue */
#define FV_STASH_MAX (1024 * 1024)    /* pipelined bytes kept while a response is going out */
#define FV_STASH_PAUSE (64 * 1024)    /* ... past this, stop reading the socket */
#define FV_PATHS_MAX 1000             /* distinct paths counted in by_path */
#define FV_DEFAULT_CHUNKS 5           /* content pieces when nothing says otherwise */
#define FV_MAX_INPUTS 2048            /* embeddings: inputs per request (OpenAI's limit) */
#define FV_MAX_DIMS 8192              /* embeddings: largest vector */
#define FV_DEFAULT_DIMS 1536          /* embeddings: text-embedding-3-small's size */

/* ---- fault switches ---------------------------------------------------------------------- */

enum {
    F_STATUS,
    F_RETRY_AFTER,
    F_CHUNKS,
    F_DELAY_MS,
    F_DROP_AFTER,
    F_EMPTY,
    F_STALL_MS,
    F_STALL_AFTER,
    F_ERROR_AFTER,
    F_PROMPT_TOKENS,
    F_OBFUSCATION,
    F_COUNT
};

typedef struct {
    const char *name; /* header "x-fake-<name>", control key "<name>" ('_' for '-' also) */
    int64_t min, max; /* accepted range */
    int64_t def;      /* value when nothing sets it */
} s_switch_t;

static const s_switch_t s_switches[F_COUNT] = {
    [F_STATUS] = {"status", 0, 599, 0},                       /* >= 400: answer this error */
    [F_RETRY_AFTER] = {"retry-after", -1, 86400, -2},         /* -2: 1 s on 429; -1: none */
    [F_CHUNKS] = {"chunks", 0, 1000000, -1},                  /* -1: 5, cut by max_tokens */
    [F_DELAY_MS] = {"delay-ms", 0, 600000, 0},                /* before each content event */
    [F_DROP_AFTER] = {"drop-after", 0, 1000000000, -1},       /* close after N content events */
    [F_EMPTY] = {"empty", 0, 1, 0},                           /* 200 with an empty body */
    [F_STALL_MS] = {"stall-ms", 0, 600000, 0},                /* pause this long ... */
    [F_STALL_AFTER] = {"stall-after", 0, 1000000, -1},        /* ... after N events (-1: first) */
    [F_ERROR_AFTER] = {"error-after", 0, 1000000, -1},        /* error event after N events */
    [F_PROMPT_TOKENS] = {"prompt-tokens", 0, 1000000000, -1}, /* -1: ceil(body bytes / 4) */
    [F_OBFUSCATION] = {"obfuscation", 0, 1, 1},               /* OpenAI's stream padding */
};

typedef struct {
    int64_t v[F_COUNT]; /* one value per switch */
} fv_faults_t;

/* ---- records ------------------------------------------------------------------------------ */

typedef struct {
    int refs;            /* the ring and the connection serving it */
    uint64_t seq;        /* request number since start (or reset) */
    json_t *head;        /* method, path, query, headers... */
    uint8_t *body;       /* the first FV_KEEP_BODY bytes */
    size_t kept;         /* bytes in body */
    uint64_t body_len;   /* total body bytes */
    bool complete;       /* the whole request was read */
    int status;          /* answered status, 0 while none */
    bool stream;         /* answered as a stream */
    int64_t events;      /* content events sent */
    const char *outcome; /* completed, cancelled, dropped, ... (static) */
    const char *auth;    /* ok, missing, wrong, or NULL when not checked */
} fv_rec_t;

/* ---- connections -------------------------------------------------------------------------- */

enum {
    P_READ,   /* reading a request (or idle between requests) */
    P_WAIT,   /* stalling before the response head */
    P_FIXED,  /* head and body queued; done when they are out */
    P_STREAM, /* streaming events */
    P_END,    /* the stream's end is queued; done when it is out */
};

enum { T_HEAD, T_DELAY, T_STALL }; /* what the connection's timer is for */

typedef struct fv_conn {
    struct fv_server *srv; /* owner */
    struct lws *wsi;       /* the socket */
    bool control;          /* control port (else API port) */
    bool tls;              /* TLS connection */
    fv_req_t req;          /* request parser */
    fv_scan_t scan;        /* API: body members */
    fv_rec_t *rec;         /* API: the request's record */
    uint8_t *cbody;        /* control: the body (at most FV_KEEP_BODY) */
    size_t cbody_len;      /* its length */
    bool cbody_big;        /* control: the body was longer */
    uint8_t *stash;        /* bytes that arrived for the next request */
    size_t stash_len;      /* how many */
    bool rx_off;           /* reading paused (lws_rx_flow_control) */
    uint8_t *q;            /* output queue */
    size_t q_len;          /* bytes queued */
    size_t q_off;          /* bytes of them written */
    size_t q_cap;          /* allocation */
    int phase;             /* P_* */
    bool closing;          /* close at the next writable callback */
    bool close_after;      /* close once the response is out */
    bool chunked_out;      /* frame body pieces as HTTP chunks */
    bool stream_started;   /* counted in streams_started */
    bool stalled;          /* the mid-stream stall happened */
    bool due;              /* the delay before the next content event has passed */
    const char *outcome;   /* set when the response ends (or is deliberately cut) */
    int status;            /* response status */
    fv_gen_t gen;          /* what to send */
    int64_t step;          /* next stream step */
    int64_t content_sent;  /* content events sent */
    fv_faults_t f;         /* effective switches */
    int timer_kind;        /* T_* */
    bus_timer_t timer;     /* delays and stalls */
    uint64_t t0_us;        /* request start (monotonic) */
    uint64_t out_bytes;    /* response bytes written */
    fv_vendor_t vendor;    /* whose API the request was for */
    char deployment[128];  /* Azure deployment from the path, else "" */
    int err_status;        /* an error answer (sent after any head stall), else 0 */
    char err_msg[512];     /* its message */
    const char *err_type;  /* its OpenAI type */
    const char *err_code;  /* its OpenAI code, or NULL */
    const char *err_param; /* the request member an OpenAI error names, or NULL */
} fv_conn_t;

/* ---- server ------------------------------------------------------------------------------- */

typedef struct {
    uint64_t requests;           /* API requests (heads received) */
    uint64_t streams_started;    /* streamed responses begun */
    uint64_t streams_completed;  /* ... sent to the end */
    uint64_t streams_cancelled;  /* ... whose client went away first */
    uint64_t streams_dropped;    /* ... cut by drop-after */
    uint64_t requests_cancelled; /* requests whose client left before the answer ended */
    uint64_t bytes_in;           /* request body bytes */
    uint64_t bytes_out;          /* response bytes written */
    uint64_t auth_failures;      /* 401s */
    uint64_t connections;        /* API connections accepted */
    uint64_t continues;          /* 100 Continue answers */
    uint64_t stream_queue_max;   /* most bytes queued at once for a stream */
    uint64_t last_cancel_ms;     /* Unix ms of the latest cancelled request, 0 if none */
} fv_stats_t;

struct fv_server {
    bus_loop_t *loop;         /* the process's loop */
    fv_opts_t opts;           /* command line (borrowed strings) */
    struct lws_vhost *vh_api; /* API port */
    struct lws_vhost *vh_ctl; /* control port */
    uint8_t *wbuf;            /* LWS_PRE + FV_WRITE_MAX scratch for lws_write */
    fv_stats_t st;            /* counters */
    int64_t open_connections; /* API connections open now */
    int64_t active_streams;   /* streams in progress now */
    json_t *by_path;          /* path -> requests */
    json_t *by_status;        /* status -> responses */
    fv_faults_t cfg;          /* switches set through the control port */
    bool cfg_set[F_COUNT];    /* which of them are set */
    int64_t cfg_count;        /* requests they still apply to; -1: all */
    json_t *models;           /* model ids for GET /models (array of strings) */
    fv_rec_t *ring[FV_RING];  /* the latest records, oldest first from ring_next */
    size_t ring_next;         /* slot of the next record */
    uint64_t seq;             /* requests numbered so far */
};

static const char *const s_default_models[] = {
    "gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "gpt-3.5-turbo-instruct", "text-embedding-3-small",
};

/* ---- small helpers ------------------------------------------------------------------------ */

/* Drops one reference to a record. */
static void s_rec_unref(fv_rec_t *r)
{
    if (!r || --r->refs > 0)
        return;
    json_decref(r->head);
    free(r->body);
    free(r);
}

/* Appends len bytes to c's output queue; -ENOMEM/-E2BIG when it cannot. */
static int s_qadd(fv_conn_t *c, const void *data, size_t len)
{
    if (c->q_len + len > FV_Q_MAX)
        return -E2BIG;
    if (c->q_len + len > c->q_cap) {
        size_t cap = c->q_cap ? c->q_cap : 4096;
        while (cap < c->q_len + len)
            cap *= 2;
        uint8_t *nq = realloc(c->q, cap);
        if (!nq)
            return -ENOMEM;
        c->q = nq;
        c->q_cap = cap;
    }
    if (len)
        memcpy(c->q + c->q_len, data, len);
    c->q_len += len;
    return 0;
}

/* Appends formatted text to c's output queue. */
__attribute__((format(printf, 2, 3))) static int s_qprintf(fv_conn_t *c, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n < sizeof small)
        return s_qadd(c, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big)
        return -ENOMEM;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = s_qadd(c, big, (size_t)n);
    free(big);
    return rc;
}

/* Queues body bytes, framed as one HTTP chunk when the response is chunked. */
static int s_qbody(fv_conn_t *c, const void *data, size_t len)
{
    if (!c->chunked_out)
        return s_qadd(c, data, len);
    if (!len)
        return 0;
    if (s_qprintf(c, "%zx\r\n", len) || s_qadd(c, data, len) || s_qadd(c, "\r\n", 2))
        return -ENOMEM;
    return 0;
}

/* The reason phrase of a status. */
static const char *s_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Payload Too Large";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Status";
    }
}

/* An HTTP date for offset_s seconds from now. */
static void s_http_date(char *out, size_t n, int64_t offset_s)
{
    time_t t = time(NULL) + (time_t)offset_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* Constant-time equality of a presented secret and the expected one. */
static bool s_secret_eq(const char *got, const char *want)
{
    if (!got || !want || !*want)
        return false;
    size_t gl = strlen(got), wl = strlen(want);
    if (gl != wl)
        return false;
    return sodium_memcmp(got, want, wl) == 0;
}

/* Deterministic lowercase hex of a request number (n digits into out, NUL-terminated). */
static void s_hex_id(char *out, size_t n, uint64_t seq, uint64_t salt)
{
    uint64_t x = seq * 0x9e3779b97f4a7c15ULL ^ salt;
    for (size_t i = 0; i < n; i++) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out[i] = "0123456789abcdef"[(x * 0x2545f4914f6cdd1dULL) >> 60];
    }
    out[n] = '\0';
}

/* Replaces invalid UTF-8 in s[0..len) with U+FFFD; malloc'd, *out_len bytes. */
static char *s_utf8_clean(const uint8_t *s, size_t len, size_t *out_len)
{
    char *o = malloc(len * 3 + 1);
    if (!o)
        return NULL;
    size_t w = 0;
    for (size_t i = 0; i < len;) {
        uint8_t c = s[i];
        size_t n = c < 0x80                   ? 1
                   : (c >= 0xc2 && c <= 0xdf) ? 2
                   : (c >= 0xe0 && c <= 0xef) ? 3
                   : (c >= 0xf0 && c <= 0xf4) ? 4
                                              : 0;
        bool ok = n && i + n <= len;
        for (size_t k = 1; ok && k < n; k++)
            ok = (s[i + k] & 0xc0) == 0x80;
        if (ok && n == 3) {
            unsigned cp = ((c & 0x0fu) << 12) | ((s[i + 1] & 0x3fu) << 6);
            ok = cp >= 0x800 && (cp < 0xd800 || cp > 0xdfff);
        } else if (ok && n == 4) {
            unsigned cp = ((c & 0x07u) << 18) | ((s[i + 1] & 0x3fu) << 12);
            ok = cp >= 0x10000 && cp <= 0x10ffff;
        }
        if (ok) {
            memcpy(o + w, s + i, n);
            w += n;
            i += n;
        } else {
            memcpy(o + w, "\xef\xbf\xbd", 3);
            w += 3;
            i++;
        }
    }
    o[w] = '\0';
    *out_len = w;
    return o;
}

/* A JSON string of arbitrary bytes (invalid UTF-8 replaced). */
static json_t *s_jstr(const void *p, size_t n)
{
    size_t cl = 0;
    char *clean = s_utf8_clean(p, n, &cl);
    json_t *j = clean ? json_stringn(clean, cl) : NULL;
    free(clean);
    return j ? j : json_string("");
}

/* Increments counter key in a JSON object of counts. */
static void s_count(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    json_int_t n = v ? json_integer_value(v) : 0;
    json_object_set_new(obj, key, json_integer(n + 1));
}

/* Parses a decimal int64 (optional '-'); 0 or -EINVAL. */
static int s_parse_i64(const char *s, int64_t *out)
{
    const char *p = s;
    if (*p == '-')
        p++;
    size_t n = strspn(p, "0123456789");
    if (!n || p[n] || n > 18)
        return -EINVAL;
    *out = strtoll(s, NULL, 10);
    return 0;
}

/* ---- writing ------------------------------------------------------------------------------ */

/* Asks lws for a writable callback. */
static void s_want_write(fv_conn_t *c)
{
    lws_callback_on_writable(c->wsi);
}

/* Closes the connection at the next writable callback. */
static void s_close_soon(fv_conn_t *c)
{
    c->closing = true;
    s_want_write(c);
}

/* Queues the status line and the common headers; the caller adds its own and the blank line. */
static int s_head(fv_conn_t *c, int status, const char *ctype)
{
    char date[64];
    s_http_date(date, sizeof date, 0);
    c->status = status;
    return s_qprintf(c, "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\nConnection: %s\r\n",
                     status, s_reason(status), date, ctype,
                     c->close_after ? "close" : "keep-alive");
}

/* Queues a complete fixed response (extra: header lines, each ending in CRLF, or NULL). */
static int s_respond(fv_conn_t *c, int status, const char *ctype, const char *extra,
                     const char *body, size_t len)
{
    if (!c->req.keep_alive)
        c->close_after = true;
    if (s_head(c, status, ctype) ||
        s_qprintf(c, "Content-Length: %zu\r\n%s\r\n", len, extra ? extra : ""))
        return -ENOMEM;
    if (len && s_qadd(c, body, len))
        return -ENOMEM;
    c->phase = P_FIXED;
    s_want_write(c);
    return 0;
}

/* Queues a JSON response from a jansson value (stolen). */
static int s_respond_json(fv_conn_t *c, int status, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    int rc = s ? s_respond(c, status, "application/json", NULL, s, strlen(s))
               : s_respond(c, 500, "application/json", NULL, "{}", 2);
    free(s);
    return rc;
}

/* ---- records and logging ------------------------------------------------------------------ */

/* The vendor name for logs and records. */
static const char *s_vendor_name(fv_vendor_t v)
{
    return v == FV_AZURE ? "azure" : "openai";
}

/* Writes the request's log line (one JSON object). */
static void s_log_request(fv_conn_t *c)
{
    if (LOG_LVL_INFO > bus_log_level || !c->rec)
        return;
    fv_rec_t *r = c->rec;
    const char *method = json_string_value(json_object_get(r->head, "method"));
    const char *path = json_string_value(json_object_get(r->head, "path"));
    const char *vendor = json_string_value(json_object_get(r->head, "vendor"));
    char epath[512] = "";
    bus_json_escape(epath, sizeof epath, path ? path : "", path ? strlen(path) : 0);
    char extra[1024];
    uint64_t ms = (plat_mono_us() - c->t0_us) / 1000;
    snprintf(extra, sizeof extra,
             "\"method\":\"%s\",\"path\":\"%s\",\"vendor\":\"%s\",\"status\":%d,\"stream\":%s,"
             "\"events\":%lld,"
             "\"bytes_in\":%llu,\"bytes_out\":%llu,\"ms\":%llu,\"outcome\":\"%s\",\"seq\":%llu",
             method ? method : "?", epath, vendor ? vendor : "", r->status,
             r->stream ? "true" : "false", (long long)r->events, (unsigned long long)r->body_len,
             (unsigned long long)c->out_bytes, (unsigned long long)ms,
             r->outcome ? r->outcome : "?", (unsigned long long)r->seq);
    bus_log_write(LOG_LVL_INFO, "request", NULL, NULL, extra, "%s %s -> %d (%s)",
                  method ? method : "?", epath, r->status, r->outcome ? r->outcome : "?");
}

/* Creates the record of the request whose head was just parsed, and puts it in the ring. */
static fv_rec_t *s_rec_new(fv_server_t *srv, fv_conn_t *c, const char *path, const char *query)
{
    fv_rec_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->refs = 2; /* ring + connection */
    r->seq = ++srv->seq;
    json_t *hdrs = json_array(), *map = json_object();
    for (int i = 0; i < c->req.n_hdrs; i++) {
        const fv_hdr_t *h = &c->req.hdrs[i];
        json_array_append_new(hdrs, json_pack("[o,o]", s_jstr(h->name, strlen(h->name)),
                                              s_jstr(h->value, strlen(h->value))));
        char lc[256];
        size_t n = strlen(h->name) < sizeof lc - 1 ? strlen(h->name) : sizeof lc - 1;
        for (size_t k = 0; k < n; k++)
            lc[k] = (char)((h->name[k] >= 'A' && h->name[k] <= 'Z') ? h->name[k] + 32 : h->name[k]);
        lc[n] = '\0';
        json_t *old = json_object_get(map, lc);
        if (old) {
            size_t ol = json_string_length(old), vl = strlen(h->value);
            char *joined = malloc(ol + vl + 3);
            if (joined) {
                memcpy(joined, json_string_value(old), ol);
                memcpy(joined + ol, ", ", 2);
                memcpy(joined + ol + 2, h->value, vl + 1);
                json_object_set_new(map, lc, s_jstr(joined, ol + vl + 2));
                free(joined);
            }
        } else {
            json_object_set_new(map, lc, s_jstr(h->value, strlen(h->value)));
        }
    }
    r->head = json_pack("{s:o,s:o,s:o,s:o,s:s,s:b,s:o,s:o}", "method",
                        s_jstr(c->req.method, strlen(c->req.method)), "path",
                        s_jstr(path, strlen(path)), "query", s_jstr(query, strlen(query)), "target",
                        s_jstr(c->req.target, strlen(c->req.target)), "http_version",
                        c->req.version, "tls", c->tls, "headers", hdrs, "header_map", map);
    if (!r->head) {
        free(r);
        return NULL;
    }
    size_t slot = srv->ring_next;
    s_rec_unref(srv->ring[slot]);
    srv->ring[slot] = r;
    srv->ring_next = (slot + 1) % FV_RING;
    return r;
}

/* The JSON view of a record. */
static json_t *s_rec_json(const fv_rec_t *r)
{
    json_t *o = json_deep_copy(r->head);
    json_object_set_new(o, "seq", json_integer((json_int_t)r->seq));
    json_object_set_new(o, "body", s_jstr(r->body ? r->body : (const uint8_t *)"", r->kept));
    json_object_set_new(o, "body_len", json_integer((json_int_t)r->body_len));
    json_object_set_new(o, "body_kept", json_integer((json_int_t)r->kept));
    json_object_set_new(o, "body_truncated", json_boolean(r->body_len > r->kept));
    json_object_set_new(o, "complete", json_boolean(r->complete));
    json_object_set_new(o, "status", json_integer(r->status));
    json_object_set_new(o, "stream", json_boolean(r->stream));
    json_object_set_new(o, "events", json_integer((json_int_t)r->events));
    json_object_set_new(o, "outcome", r->outcome ? json_string(r->outcome) : json_null());
    json_object_set_new(o, "auth", r->auth ? json_string(r->auth) : json_null());
    return o;
}

/* ---- the end of a response ---------------------------------------------------------------- */

static void s_rx(fv_conn_t *c, const uint8_t *in, size_t len);

/* Forgets the finished request and its response, keeping the connection. */
static void s_clear_request(fv_conn_t *c)
{
    fv_req_reset(&c->req);
    fv_scan_init(&c->scan);
    free(c->cbody);
    c->cbody = NULL;
    c->cbody_len = 0;
    c->cbody_big = false;
    c->phase = P_READ;
    c->chunked_out = false;
    c->stream_started = false;
    c->stalled = false;
    c->due = false;
    c->outcome = NULL;
    c->status = 0;
    c->step = 0;
    c->content_sent = 0;
    c->out_bytes = 0;
    c->err_status = 0;
    c->err_param = NULL;
    c->deployment[0] = '\0';
}

/* Records how the request ended, logs it and updates the counters. */
static void s_request_ended(fv_conn_t *c, const char *outcome)
{
    fv_server_t *srv = c->srv;
    if (c->rec) {
        fv_rec_t *r = c->rec;
        r->outcome = outcome;
        r->status = c->status;
        r->events = c->content_sent;
        char st[16];
        snprintf(st, sizeof st, "%d", c->status);
        if (c->status)
            s_count(srv->by_status, st);
        s_log_request(c);
        s_rec_unref(r);
        c->rec = NULL;
    }
    if (c->stream_started) {
        srv->active_streams--;
        if (strcmp(outcome, "completed") == 0)
            srv->st.streams_completed++;
        else if (strcmp(outcome, "cancelled") == 0)
            srv->st.streams_cancelled++;
        else if (strcmp(outcome, "dropped") == 0)
            srv->st.streams_dropped++;
    }
    if (strcmp(outcome, "cancelled") == 0 && !c->control) {
        srv->st.requests_cancelled++;
        srv->st.last_cancel_ms = plat_wall_us() / 1000;
    }
}

/* The response is out: end the request, then serve what already arrived or close. */
static void s_finish(fv_conn_t *c)
{
    s_request_ended(c, c->outcome ? c->outcome : "completed");
    bool close_after = c->close_after;
    s_clear_request(c);
    if (close_after) {
        s_close_soon(c);
        return;
    }
    if (c->rx_off) {
        lws_rx_flow_control(c->wsi, 1);
        c->rx_off = false;
    }
    if (c->stash_len) {
        uint8_t *data = c->stash;
        size_t len = c->stash_len;
        c->stash = NULL;
        c->stash_len = 0;
        s_rx(c, data, len);
        free(data);
    }
}

/* ---- streaming ---------------------------------------------------------------------------- */

static void s_stream_next(fv_conn_t *c);
static void s_begin_response(fv_conn_t *c);

/* The connection's timer went off. */
static void s_on_timer(bus_timer_t *t)
{
    fv_conn_t *c = t->arg;
    if (c->timer_kind == T_HEAD) {
        s_begin_response(c);
        return;
    }
    c->due = true; /* a mid-stream stall stands in for the delay too */
    s_stream_next(c);
}

/* Arms the connection's timer. */
static void s_timer(fv_conn_t *c, int kind, int64_t ms)
{
    c->timer_kind = kind;
    bus_timer_start(c->srv->loop, &c->timer, s_on_timer, c, ms * 1000);
}

/* Queues the stream's terminator: the last chunk (HTTP/1.1) or nothing and a close (1.0). */
static void s_stream_end(fv_conn_t *c, const char *outcome)
{
    if (c->chunked_out)
        s_qadd(c, "0\r\n\r\n", 5);
    else
        c->close_after = true;
    c->outcome = outcome;
    c->phase = P_END;
    s_want_write(c);
}

/* Produces the stream's next event when its time has come (the queue is empty here). */
static void s_stream_next(fv_conn_t *c)
{
    fv_gen_t *g = &c->gen;
    fv_step_t kind = fv_wire_step_kind(g, c->step);
    bool past_pre = c->step >= fv_wire_first_content(g);
    int64_t *f = c->f.v;
    if (past_pre && f[F_DROP_AFTER] >= 0 && c->content_sent >= f[F_DROP_AFTER]) {
        c->outcome = "dropped"; /* cut the connection mid-stream, no terminator */
        s_close_soon(c);
        return;
    }
    if (past_pre && f[F_ERROR_AFTER] >= 0 && c->content_sent >= f[F_ERROR_AFTER]) {
        size_t len = 0;
        char *ev = fv_wire_stream_error(g, &len);
        if (ev)
            s_qbody(c, ev, len);
        free(ev);
        s_stream_end(c, "error_event");
        return;
    }
    if (past_pre && !c->stalled && f[F_STALL_AFTER] >= 0 && f[F_STALL_MS] > 0 &&
        c->content_sent >= f[F_STALL_AFTER]) {
        c->stalled = true;
        s_timer(c, T_STALL, f[F_STALL_MS]);
        return;
    }
    if (kind == FV_STEP_END) {
        s_stream_end(c, "completed");
        return;
    }
    if (kind == FV_STEP_CONTENT && f[F_DELAY_MS] > 0 && !c->due) {
        s_timer(c, T_DELAY, f[F_DELAY_MS]);
        return;
    }
    size_t len = 0;
    char *ev = fv_wire_step(g, c->step, &len);
    if (!ev || s_qbody(c, ev, len) != 0) {
        free(ev);
        c->outcome = "error";
        s_close_soon(c);
        return;
    }
    free(ev);
    if (c->q_len > c->srv->st.stream_queue_max)
        c->srv->st.stream_queue_max = c->q_len;
    c->step++;
    if (kind == FV_STEP_CONTENT) {
        c->content_sent++;
        c->due = false;
    }
    s_want_write(c);
}

/* Called when the queue has been written out; returns -1 to close the connection. */
static int s_after_flush(fv_conn_t *c)
{
    switch (c->phase) {
    case P_FIXED:
        if (c->outcome && strcmp(c->outcome, "dropped") == 0)
            return -1;
        s_finish(c);
        return c->closing ? -1 : 0;
    case P_END:
        s_finish(c);
        return c->closing ? -1 : 0;
    case P_STREAM:
        s_stream_next(c);
        return 0;
    default:
        return 0;
    }
}

/* LWS_CALLBACK_RAW_WRITEABLE: writes the next piece of the queue. */
static int s_writeable(fv_conn_t *c)
{
    if (c->closing)
        return -1;
    if (c->q_off < c->q_len) {
        size_t n = c->q_len - c->q_off;
        if (n > FV_WRITE_MAX)
            n = FV_WRITE_MAX;
        uint8_t *p = c->srv->wbuf + LWS_PRE;
        memcpy(p, c->q + c->q_off, n);
        /* lws keeps whatever the socket did not take and sends it before the next writable
         * callback, so one piece at a time is all that is ever buffered. */
        if (lws_write(c->wsi, p, n, LWS_WRITE_RAW) < (int)n)
            return -1;
        c->q_off += n;
        c->out_bytes += n;
        if (!c->control)
            c->srv->st.bytes_out += n;
        if (c->q_off < c->q_len) {
            s_want_write(c);
            return 0;
        }
        c->q_off = c->q_len = 0;
    }
    return s_after_flush(c);
}

/* ---- API requests ------------------------------------------------------------------------- */

typedef struct {
    fv_vendor_t vendor;   /* whose API */
    fv_ep_t ep;           /* which endpoint */
    bool azure_v1;        /* Azure's /openai/v1/ form */
    char deployment[128]; /* Azure deployment, from the path */
    char model_id[256];   /* GET models/{id} */
} s_route_t;

/* The endpoint of a path after "/v1/" (OpenAI) or "/openai/v1/"; -ENOENT if none. */
static int s_ep(const char *rest, s_route_t *rt)
{
    static const struct {
        const char *suffix;
        fv_ep_t ep;
    } eps[] = {{"chat/completions", FV_EP_CHAT},
               {"completions", FV_EP_COMPLETIONS},
               {"embeddings", FV_EP_EMBEDDINGS},
               {"responses", FV_EP_RESPONSES},
               {"models", FV_EP_MODELS}};
    for (size_t i = 0; i < sizeof eps / sizeof eps[0]; i++) {
        if (strcmp(rest, eps[i].suffix) == 0) {
            rt->ep = eps[i].ep;
            return 0;
        }
    }
    if (strncmp(rest, "models/", 7) == 0 && rest[7] && !strchr(rest + 7, '/')) {
        rt->ep = FV_EP_MODEL;
        snprintf(rt->model_id, sizeof rt->model_id, "%s", rest + 7);
        return 0;
    }
    return -ENOENT;
}

/* Maps a path to a vendor endpoint; 0 or -ENOENT. */
static int s_route(const char *path, s_route_t *rt)
{
    memset(rt, 0, sizeof *rt);
    if (strncmp(path, "/v1/", 4) == 0) {
        rt->vendor = FV_OPENAI;
        return s_ep(path + 4, rt);
    }
    rt->vendor = FV_AZURE;
    if (strncmp(path, "/openai/v1/", 11) == 0) {
        rt->azure_v1 = true;
        return s_ep(path + 11, rt);
    }
    if (strncmp(path, "/openai/deployments/", 20) != 0)
        return -ENOENT;
    const char *dep = path + 20;
    size_t dl = strspn(dep, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-");
    if (!dl || dl >= sizeof rt->deployment || dep[dl] != '/')
        return -ENOENT;
    memcpy(rt->deployment, dep, dl);
    rt->deployment[dl] = '\0';
    const char *rest = dep + dl + 1;
    if (strcmp(rest, "chat/completions") == 0)
        rt->ep = FV_EP_CHAT;
    else if (strcmp(rest, "completions") == 0)
        rt->ep = FV_EP_COMPLETIONS;
    else if (strcmp(rest, "embeddings") == 0)
        rt->ep = FV_EP_EMBEDDINGS;
    else
        return -ENOENT;
    return 0;
}

/* True if query has a non-empty parameter name. */
static bool s_query_has(const char *query, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = query; p && *p;) {
        if (strncmp(p, name, nl) == 0 && p[nl] == '=' && p[nl + 1] && p[nl + 1] != '&')
            return true;
        p = strchr(p, '&');
        if (p)
            p++;
    }
    return false;
}

/* Queues the vendor's usual response headers (x-request-id, rate limits, cookies...). */
static void s_vendor_headers(fv_conn_t *c, fv_vendor_t v, const char *deployment)
{
    char id[40], ray[20];
    uint64_t seq = c->rec ? c->rec->seq : 0;
    s_hex_id(id, 32, seq, 0x5eed);
    s_hex_id(ray, 16, seq, 0xc0ffee);
    bool limited = c->status == 429;
    if (v == FV_AZURE) {
        char uuid[40];
        snprintf(uuid, sizeof uuid, "%.8s-%.4s-%.4s-%.4s-%.12s", id, id + 8, id + 12, id + 16,
                 id + 20);
        s_qprintf(c,
                  "x-request-id: %s\r\napim-request-id: %s\r\nx-ms-region: East US\r\n"
                  "x-ms-rai-invoked: true\r\nazureml-model-session: d-fake-0001\r\n"
                  "x-ratelimit-limit-requests: 100\r\nx-ratelimit-remaining-requests: %d\r\n"
                  "x-ratelimit-limit-tokens: 100000\r\nx-ratelimit-remaining-tokens: %d\r\n"
                  "x-content-type-options: nosniff\r\n"
                  "Strict-Transport-Security: max-age=31536000; includeSubDomains; preload\r\n",
                  uuid, uuid, limited ? 0 : 99, limited ? 0 : 99000);
        if (deployment && *deployment)
            s_qprintf(c, "x-ms-deployment-name: %s\r\n", deployment);
        const char *cid = fv_req_header(&c->req, "x-ms-client-request-id");
        if (cid && strlen(cid) < 128)
            s_qprintf(c, "x-ms-client-request-id: %s\r\n", cid);
        return;
    }
    char exp[64];
    s_http_date(exp, sizeof exp, 1800);
    s_qprintf(c,
              "x-request-id: req_%s\r\nopenai-organization: user-fakeorg\r\n"
              "openai-processing-ms: %llu\r\nopenai-project: proj_fake\r\n"
              "openai-version: 2020-10-01\r\naccess-control-expose-headers: X-Request-ID\r\n"
              "x-ratelimit-limit-requests: 10000\r\nx-ratelimit-limit-tokens: 30000000\r\n"
              "x-ratelimit-remaining-requests: %d\r\nx-ratelimit-remaining-tokens: %d\r\n"
              "x-ratelimit-reset-requests: %s\r\nx-ratelimit-reset-tokens: %s\r\n"
              "strict-transport-security: max-age=31536000; includeSubDomains; preload\r\n"
              "cf-cache-status: DYNAMIC\r\n"
              "set-cookie: __cf_bm=fake%.16s-%lld-1.0.1.1; path=/; expires=%s; "
              "domain=.api.openai.com; HttpOnly; Secure; SameSite=None\r\n"
              "set-cookie: _cfuvid=fake%.16s-%lld; path=/; domain=.api.openai.com; HttpOnly; "
              "Secure; SameSite=None\r\n"
              "x-content-type-options: nosniff\r\nserver: cloudflare\r\ncf-ray: %s-SJC\r\n"
              "alt-svc: h3=\":443\"; ma=86400\r\n",
              id, (unsigned long long)((plat_mono_us() - c->t0_us) / 1000), limited ? 0 : 9999,
              limited ? 0 : 29999000, limited ? "20s" : "6ms", limited ? "1s" : "0s", id + 16,
              (long long)time(NULL), exp, id, (long long)time(NULL), ray);
}

/* Queues an error answer in the vendor's shape, with Retry-After when asked for. */
static void s_vendor_error(fv_conn_t *c, fv_vendor_t v, int status, const char *message,
                           const char *type, const char *code, const char *deployment)
{
    size_t len = 0;
    char *body = fv_wire_error(v, status, message, type, c->err_param, code, &len);
    if (!c->req.keep_alive)
        c->close_after = true;
    s_head(c, status, "application/json");
    s_vendor_headers(c, v, deployment);
    int64_t ra = c->f.v[F_RETRY_AFTER];
    if (ra == -2 && status == 429)
        ra = 1;
    if (ra >= 0) {
        s_qprintf(c, "retry-after: %lld\r\n", (long long)ra);
        if (v == FV_AZURE)
            s_qprintf(c, "retry-after-ms: %lld\r\n", (long long)ra * 1000);
    }
    if (status == 401 && v == FV_OPENAI)
        s_qprintf(c, "www-authenticate: Bearer realm=\"OpenAI API\"\r\n");
    s_qprintf(c, "Content-Length: %zu\r\n\r\n", body ? len : 0);
    if (body)
        s_qadd(c, body, len);
    free(body);
    c->phase = P_FIXED;
    c->outcome = "completed";
    s_want_write(c);
}

/* The message, type and code OpenAI sends with a given error status. */
static void s_fault_texts(int status, const char *model, char *msg, size_t n, const char **type,
                          const char **code)
{
    *code = NULL;
    *type = status >= 500 ? "server_error" : "invalid_request_error";
    switch (status) {
    case 401:
        snprintf(msg, n,
                 "Incorrect API key provided: sk-fake****. You can find your API key "
                 "at https://platform.openai.com/account/api-keys.");
        *code = "invalid_api_key";
        break;
    case 404:
        snprintf(msg, n, "The model `%s` does not exist or you do not have access to it.", model);
        *code = "model_not_found";
        break;
    case 429:
        snprintf(msg, n,
                 "Rate limit reached for %s in organization org-fake on requests per min (RPM): "
                 "Limit 3, Used 3, Requested 1. Please try again in 20s. Visit "
                 "https://platform.openai.com/account/rate-limits to learn more.",
                 model);
        *type = "requests";
        *code = "rate_limit_exceeded";
        break;
    case 500:
        snprintf(msg, n,
                 "The server had an error while processing your request. Sorry about "
                 "that!");
        break;
    case 503:
        snprintf(msg, n, "The engine is currently overloaded, please try again later");
        break;
    default:
        snprintf(msg, n, "Fake vendor error (status %d, set by x-fake-status)", status);
    }
}

/* Reads the x-fake-* switches over the control defaults; 0, or -EINVAL with why set. */
static int s_faults(fv_conn_t *c, char *why, size_t n)
{
    fv_server_t *srv = c->srv;
    bool use_cfg = srv->cfg_count != 0;
    for (int i = 0; i < F_COUNT; i++) {
        c->f.v[i] = use_cfg && srv->cfg_set[i] ? srv->cfg.v[i] : s_switches[i].def;
        char name[48];
        snprintf(name, sizeof name, "x-fake-%s", s_switches[i].name);
        const char *val = fv_req_header(&c->req, name);
        if (!val)
            continue;
        int64_t x;
        if (s_parse_i64(val, &x) != 0 || x < s_switches[i].min || x > s_switches[i].max) {
            snprintf(why, n, "%s: \"%s\" is not an integer in [%lld, %lld]", name, val,
                     (long long)s_switches[i].min, (long long)s_switches[i].max);
            return -EINVAL;
        }
        c->f.v[i] = x;
    }
    if (use_cfg && srv->cfg_count > 0 && --srv->cfg_count == 0)
        memset(srv->cfg_set, 0, sizeof srv->cfg_set); /* used up */
    return 0;
}

/* Checks the request's credentials for the route; NULL when accepted, else what was wrong. */
static const char *s_auth(fv_conn_t *c, const s_route_t *rt)
{
    const fv_opts_t *o = &c->srv->opts;
    const char *authz = fv_req_header(&c->req, "authorization");
    int n_authz = fv_req_header_count(&c->req, "authorization");
    if (rt->vendor == FV_OPENAI) {
        if (!authz)
            return "missing";
        if (n_authz != 1 || strncmp(authz, "Bearer ", 7) != 0)
            return "wrong";
        return s_secret_eq(authz + 7, o->openai_key) ? NULL : "wrong";
    }
    const char *key = fv_req_header(&c->req, "api-key");
    if (key && fv_req_header_count(&c->req, "api-key") == 1 && s_secret_eq(key, o->azure_key))
        return NULL;
    if (rt->azure_v1 && authz && n_authz == 1 && strncmp(authz, "Bearer ", 7) == 0 &&
        s_secret_eq(authz + 7, o->azure_key))
        return NULL;
    return key || authz ? "wrong" : "missing";
}

/* The host of the Host header (without port), lowercased, or "". */
static void s_host(const fv_conn_t *c, char *out, size_t n)
{
    const char *h = fv_req_header(&c->req, "host");
    size_t i = 0;
    for (; h && h[i] && h[i] != ':' && i + 1 < n; i++)
        out[i] = (char)((h[i] >= 'A' && h[i] <= 'Z') ? h[i] + 32 : h[i]);
    out[i] = '\0';
}

/* True if the Host names the other vendor than the route's. */
static bool s_wrong_host(const fv_conn_t *c, const s_route_t *rt)
{
    char host[256];
    s_host(c, host, sizeof host);
    size_t hl = strlen(host);
    bool azure_host = hl > 17 && strcmp(host + hl - 17, ".openai.azure.com") == 0;
    bool openai_host = strcmp(host, "api.openai.com") == 0;
    return (rt->vendor == FV_OPENAI && azure_host) || (rt->vendor == FV_AZURE && openai_host);
}

/* Starts the answer once any head stall is over: head, then the body or the first event. */
static void s_begin_response(fv_conn_t *c)
{
    fv_gen_t *g = &c->gen;
    bool stream = c->rec && c->rec->stream;
    const char *dep = c->deployment;
    int64_t *f = c->f.v;
    if (c->err_status) {
        s_vendor_error(c, c->vendor, c->err_status, c->err_msg, c->err_type, c->err_code, dep);
        return;
    }
    if (!c->req.keep_alive)
        c->close_after = true;
    if (f[F_EMPTY]) {
        s_head(c, 200, stream ? "text/event-stream; charset=utf-8" : "application/json");
        s_vendor_headers(c, g->vendor, dep);
        s_qprintf(c, "Content-Length: 0\r\n\r\n");
        c->phase = P_FIXED;
        c->outcome = "empty";
        s_want_write(c);
        return;
    }
    if (stream) {
        c->chunked_out = !c->req.http10;
        if (!c->chunked_out)
            c->close_after = true;
        s_head(c, 200, "text/event-stream; charset=utf-8");
        s_vendor_headers(c, g->vendor, dep);
        s_qprintf(c, "%sCache-Control: no-cache\r\n\r\n",
                  c->chunked_out ? "Transfer-Encoding: chunked\r\n" : "");
        c->phase = P_STREAM;
        c->stream_started = true;
        c->srv->st.streams_started++;
        c->srv->active_streams++;
        s_want_write(c);
        return;
    }
    size_t len = 0;
    char *body = NULL;
    if (g->ep == FV_EP_MODELS || g->ep == FV_EP_MODEL) {
        size_t n = json_array_size(c->srv->models);
        const char **ids = calloc(n ? n : 1, sizeof *ids);
        for (size_t i = 0; ids && i < n; i++)
            ids[i] = json_string_value(json_array_get(c->srv->models, i));
        if (ids && g->ep == FV_EP_MODEL) {
            ids[0] = g->model;
            n = 1;
        }
        body = ids ? fv_wire_models(g->vendor, g->ep, ids, n, &len) : NULL;
        free(ids);
    } else {
        body = fv_wire_body(g, &len);
    }
    if (!body) {
        s_vendor_error(c, g->vendor, 500, "fake vendor: out of memory", "server_error", NULL, dep);
        return;
    }
    s_head(c, 200, "application/json");
    s_vendor_headers(c, g->vendor, dep);
    s_qprintf(c, "Content-Length: %zu\r\n\r\n", len);
    size_t send = len;
    if (f[F_DROP_AFTER] >= 0 && (uint64_t)f[F_DROP_AFTER] < len) {
        send = (size_t)f[F_DROP_AFTER]; /* a truncated body, then the connection goes */
        c->outcome = "dropped";
    }
    s_qadd(c, body, send);
    free(body);
    c->phase = P_FIXED;
    s_want_write(c);
}

/* True if id is in the server's model list. */
static bool s_model_listed(const fv_server_t *srv, const char *id)
{
    size_t i;
    json_t *m;
    json_array_foreach(srv->models, i, m) if (strcmp(json_string_value(m), id) == 0) return true;
    return false;
}

/* Answers a complete API request. */
static void s_api_request(fv_conn_t *c)
{
    fv_server_t *srv = c->srv;
    fv_rec_t *r = c->rec;
    fv_scan_finish(&c->scan);
    if (r)
        r->complete = true;
    const char *target = c->req.target;
    const char *qm = strchr(target, '?');
    char path[1024];
    snprintf(path, sizeof path, "%.*s", (int)(qm ? (size_t)(qm - target) : strlen(target)), target);
    const char *query = qm ? qm + 1 : "";
    const char *method = c->req.method;
    s_route_t rt;
    int rc = s_route(path, &rt);
    char msg[512];
    if (r)
        json_object_set_new(r->head, "vendor", json_string(s_vendor_name(rt.vendor)));
    if (rc == 0 && s_wrong_host(c, &rt))
        rc = -ENOENT;
    bool want_post = rt.ep != FV_EP_MODELS && rt.ep != FV_EP_MODEL;
    if (rc == 0 && strcmp(method, want_post ? "POST" : "GET") != 0)
        rc = -EINVAL;
    if (rc == 0 && rt.vendor == FV_AZURE && !rt.azure_v1 && !s_query_has(query, "api-version"))
        rc = -ENOENT; /* Azure answers 404 without an api-version */
    if (rc != 0) {
        c->f.v[F_RETRY_AFTER] = -1;
        snprintf(msg, sizeof msg, "Invalid URL (%s %s)", method, path);
        if (rt.vendor == FV_AZURE)
            s_vendor_error(c, FV_AZURE, 404, "Resource not found", NULL, NULL, NULL);
        else
            s_vendor_error(c, FV_OPENAI, rc == -EINVAL ? 405 : 404, msg, "invalid_request_error",
                           NULL, NULL);
        return;
    }
    const char *auth = s_auth(c, &rt);
    if (r)
        r->auth = auth ? auth : "ok";
    if (auth) {
        srv->st.auth_failures++;
        c->f.v[F_RETRY_AFTER] = -1;
        if (rt.vendor == FV_AZURE)
            s_vendor_error(c, FV_AZURE, 401,
                           "Access denied due to invalid subscription key or wrong API "
                           "endpoint. Make sure to provide a valid key for an active "
                           "subscription and use a correct regional API endpoint for your "
                           "resource.",
                           NULL, NULL, rt.deployment);
        else if (strcmp(auth, "missing") == 0)
            s_vendor_error(c, FV_OPENAI, 401,
                           "You didn't provide an API key. You need to provide your API key "
                           "in an Authorization header using Bearer auth (i.e. Authorization: "
                           "Bearer YOUR_KEY), or as the password field (with blank username) "
                           "if you're accessing the API from your browser and are prompted "
                           "for a username and password. You can obtain an API key from "
                           "https://platform.openai.com/account/api-keys.",
                           "invalid_request_error", NULL, NULL);
        else
            s_vendor_error(c, FV_OPENAI, 401,
                           "Incorrect API key provided. You can find your API key at "
                           "https://platform.openai.com/account/api-keys.",
                           "invalid_request_error", "invalid_api_key", NULL);
        return;
    }
    if (s_faults(c, msg, sizeof msg) != 0) {
        c->f.v[F_RETRY_AFTER] = -1;
        s_vendor_error(c, rt.vendor, 400, msg, "invalid_request_error", NULL, rt.deployment);
        return;
    }
    fv_gen_t *g = &c->gen;
    memset(g, 0, sizeof *g);
    g->vendor = rt.vendor;
    g->ep = rt.ep;
    c->vendor = rt.vendor;
    snprintf(c->deployment, sizeof c->deployment, "%s", rt.deployment);
    const char *model = rt.deployment[0]       ? rt.deployment
                        : rt.ep == FV_EP_MODEL ? rt.model_id
                                               : c->scan.model;
    snprintf(g->model, sizeof g->model, "%s", model);
    if (want_post && !c->scan.valid) {
        s_vendor_error(c, rt.vendor, 400,
                       "We could not parse the JSON body of your request. (HINT: This likely "
                       "means you aren't using your HTTP library correctly. The OpenAI API "
                       "expects a JSON payload, but what was sent was not valid JSON.)",
                       "invalid_request_error", NULL, rt.deployment);
        return;
    }
    if (want_post && !rt.deployment[0] && !c->scan.has_model) {
        s_vendor_error(c, rt.vendor, 400, "you must provide a model parameter",
                       "invalid_request_error", NULL, NULL);
        return;
    }
    bool streamable = rt.ep == FV_EP_CHAT || rt.ep == FV_EP_COMPLETIONS || rt.ep == FV_EP_RESPONSES;
    if (streamable && c->scan.stream == 2) {
        c->err_param = "stream";
        s_vendor_error(c, rt.vendor, 400,
                       "Invalid type for 'stream': expected a boolean, but got another type "
                       "instead.",
                       "invalid_request_error", "invalid_type", rt.deployment);
        return;
    }
    int64_t *f = c->f.v;
    if (rt.ep == FV_EP_MODEL && !s_model_listed(srv, g->model))
        f[F_STATUS] = 404; /* OpenAI: model_not_found */
    if (f[F_STATUS] >= 400) {
        const char *type, *code;
        s_fault_texts((int)f[F_STATUS], g->model, c->err_msg, sizeof c->err_msg, &type, &code);
        if (rt.vendor == FV_AZURE && f[F_STATUS] == 429)
            snprintf(c->err_msg, sizeof c->err_msg,
                     "Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
                     "version 2024-10-21 have exceeded call rate limit of your current OpenAI "
                     "S0 pricing tier. Please retry after %lld second%s.",
                     (long long)(f[F_RETRY_AFTER] >= 0 ? f[F_RETRY_AFTER] : 1),
                     f[F_RETRY_AFTER] == 1 || f[F_RETRY_AFTER] < 0 ? "" : "s");
        c->err_status = (int)f[F_STATUS];
        c->err_type = type;
        c->err_code = rt.vendor == FV_AZURE ? NULL : code;
    } else if (r) {
        r->stream = streamable && c->scan.stream == 1;
    }
    fv_wire_ids(g, r ? r->seq : 0);
    g->created = (int64_t)time(NULL);
    g->n = f[F_CHUNKS] >= 0 ? f[F_CHUNKS] : FV_DEFAULT_CHUNKS;
    if (f[F_CHUNKS] < 0 && c->scan.max_tokens >= 0 && c->scan.max_tokens < g->n) {
        g->n = c->scan.max_tokens;
        g->truncated = true;
    }
    g->include_usage = c->scan.include_usage == 1;
    g->obfuscation = f[F_OBFUSCATION] && c->scan.include_obfuscation != 0;
    uint64_t body_len = c->req.body_len;
    g->prompt_tokens = f[F_PROMPT_TOKENS] >= 0 ? f[F_PROMPT_TOKENS] : (int64_t)((body_len + 3) / 4);
    if (g->prompt_tokens < 1 && f[F_PROMPT_TOKENS] < 0)
        g->prompt_tokens = 1;
    if (rt.ep == FV_EP_EMBEDDINGS) {
        g->n = 0;
        g->n_inputs = c->scan.n_inputs > 0 ? c->scan.n_inputs : 1;
        if (g->n_inputs > FV_MAX_INPUTS)
            g->n_inputs = FV_MAX_INPUTS;
        g->dims = c->scan.dimensions > 0 ? c->scan.dimensions : FV_DEFAULT_DIMS;
        if (g->dims > FV_MAX_DIMS)
            g->dims = FV_MAX_DIMS;
        g->base64 = strcmp(c->scan.encoding_format, "base64") == 0;
    }
    if (f[F_STALL_MS] > 0 && f[F_STALL_AFTER] < 0) {
        c->phase = P_WAIT;
        s_timer(c, T_HEAD, f[F_STALL_MS]);
        return;
    }
    s_begin_response(c);
}

/* ---- control requests --------------------------------------------------------------------- */

/* GET /_fake/stats. */
static json_t *s_stats_json(fv_server_t *srv)
{
    const fv_stats_t *s = &srv->st;
    json_t *o = json_object();
#define S_SET(name) json_object_set_new(o, #name, json_integer((json_int_t)s->name))
    S_SET(requests);
    json_object_set(o, "by_path", srv->by_path);
    json_object_set(o, "by_status", srv->by_status);
    S_SET(streams_started);
    S_SET(streams_completed);
    S_SET(streams_cancelled);
    S_SET(streams_dropped);
    S_SET(requests_cancelled);
    S_SET(bytes_in);
    S_SET(bytes_out);
    S_SET(auth_failures);
    S_SET(connections);
    S_SET(continues);
    S_SET(stream_queue_max);
    S_SET(last_cancel_ms);
#undef S_SET
    json_object_set_new(o, "open_connections", json_integer(srv->open_connections));
    json_object_set_new(o, "active_streams", json_integer(srv->active_streams));
    return o;
}

/* GET /_fake/config. */
static json_t *s_config_json(fv_server_t *srv)
{
    json_t *sw = json_object();
    for (int i = 0; i < F_COUNT; i++)
        if (srv->cfg_set[i])
            json_object_set_new(sw, s_switches[i].name, json_integer(srv->cfg.v[i]));
    return json_pack("{s:o,s:o,s:O}", "switches", sw, "count",
                     srv->cfg_count < 0 ? json_null() : json_integer(srv->cfg_count), "models",
                     srv->models);
}

/* The switch called name ('-' or '_' between words), or -1. */
static int s_switch_index(const char *name)
{
    for (int i = 0; i < F_COUNT; i++) {
        const char *a = s_switches[i].name, *b = name;
        while (*a && *b && (*a == *b || (*a == '-' && *b == '_')))
            a++, b++;
        if (!*a && !*b)
            return i;
    }
    return -1;
}

/* True if v is a non-empty array of strings. */
static bool s_models_ok(json_t *v)
{
    size_t i;
    json_t *m;
    if (!json_is_array(v) || !json_array_size(v))
        return false;
    json_array_foreach(v, i, m) if (!json_is_string(m)) return false;
    return true;
}

/* POST /_fake/config: replaces the server-wide switches; NULL or an error message. */
static const char *s_config_set(fv_server_t *srv, const uint8_t *body, size_t len, char *err,
                                size_t n)
{
    json_error_t je;
    json_t *o = json_loadb((const char *)body, len, 0, &je);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return "body must be a JSON object";
    }
    fv_faults_t cfg;
    memset(&cfg, 0, sizeof cfg);
    bool set[F_COUNT] = {false};
    int64_t count = -1;
    json_t *models = NULL;
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        if (strcmp(key, "count") == 0) {
            if (!json_is_null(v) && (!json_is_integer(v) || json_integer_value(v) < 1)) {
                snprintf(err, n, "count: a positive integer or null");
                goto bad;
            }
            count = json_is_null(v) ? -1 : json_integer_value(v);
            continue;
        }
        if (strcmp(key, "models") == 0) {
            if (!s_models_ok(v)) {
                snprintf(err, n, "models: a non-empty array of strings");
                goto bad;
            }
            models = v;
            continue;
        }
        int idx = s_switch_index(key);
        if (idx < 0) {
            snprintf(err, n, "unknown switch \"%s\"", key);
            goto bad;
        }
        int64_t x = json_is_boolean(v) ? json_is_true(v) : json_integer_value(v);
        if ((!json_is_integer(v) && !json_is_boolean(v)) || x < s_switches[idx].min ||
            x > s_switches[idx].max) {
            snprintf(err, n, "%s: an integer in [%lld, %lld]", key, (long long)s_switches[idx].min,
                     (long long)s_switches[idx].max);
            goto bad;
        }
        cfg.v[idx] = x;
        set[idx] = true;
    }
    for (int i = 0; i < F_COUNT; i++) {
        srv->cfg_set[i] = set[i];
        if (set[i])
            srv->cfg.v[i] = cfg.v[i];
    }
    srv->cfg_count = count;
    if (models) {
        json_decref(srv->models);
        srv->models = json_incref(models);
    }
    json_decref(o);
    return NULL;
bad:
    json_decref(o);
    return err;
}

/* Resets the default model list. */
static void s_default_model_list(fv_server_t *srv)
{
    json_decref(srv->models);
    srv->models = json_array();
    for (size_t i = 0; i < sizeof s_default_models / sizeof s_default_models[0]; i++)
        json_array_append_new(srv->models, json_string(s_default_models[i]));
}

/* POST /_fake/reset: counters, records and switches back to the start. */
static void s_reset(fv_server_t *srv)
{
    memset(&srv->st, 0, sizeof srv->st);
    json_object_clear(srv->by_path);
    json_object_clear(srv->by_status);
    for (size_t i = 0; i < FV_RING; i++) {
        s_rec_unref(srv->ring[i]);
        srv->ring[i] = NULL;
    }
    srv->ring_next = 0;
    memset(srv->cfg_set, 0, sizeof srv->cfg_set);
    srv->cfg_count = -1;
    s_default_model_list(srv);
}

/* Answers a complete control request. */
static void s_control_request(fv_conn_t *c)
{
    fv_server_t *srv = c->srv;
    const char *m = c->req.method;
    const char *t = c->req.target;
    bool get = strcmp(m, "GET") == 0, post = strcmp(m, "POST") == 0;
    c->outcome = "completed";
    if (get && strcmp(t, "/_fake/health") == 0) {
        s_respond_json(c, 200, json_pack("{s:b}", "ok", 1));
    } else if (get && strcmp(t, "/_fake/stats") == 0) {
        s_respond_json(c, 200, s_stats_json(srv));
    } else if (get && strcmp(t, "/_fake/last") == 0) {
        fv_rec_t *r = srv->ring[(srv->ring_next + FV_RING - 1) % FV_RING];
        if (r)
            s_respond_json(c, 200, s_rec_json(r));
        else
            s_respond_json(c, 404, json_pack("{s:s}", "error", "no request yet"));
    } else if (get && strcmp(t, "/_fake/requests") == 0) {
        json_t *arr = json_array();
        for (size_t i = 0; i < FV_RING; i++) {
            fv_rec_t *r = srv->ring[(srv->ring_next + i) % FV_RING];
            if (r)
                json_array_append_new(arr, s_rec_json(r));
        }
        s_respond_json(c, 200, json_pack("{s:o}", "requests", arr));
    } else if (post && strcmp(t, "/_fake/reset") == 0) {
        s_reset(srv);
        s_respond_json(c, 200, json_pack("{s:b}", "ok", 1));
    } else if (get && strcmp(t, "/_fake/config") == 0) {
        s_respond_json(c, 200, s_config_json(srv));
    } else if (post && strcmp(t, "/_fake/config") == 0) {
        char err[256];
        const char *e = c->cbody_big ? "body over 64 KiB"
                                     : s_config_set(srv, c->cbody ? c->cbody : (uint8_t *)"{}",
                                                    c->cbody ? c->cbody_len : 2, err, sizeof err);
        if (e)
            s_respond_json(c, 400, json_pack("{s:s}", "error", e));
        else
            s_respond_json(c, 200, s_config_json(srv));
    } else {
        s_respond_json(c, 404, json_pack("{s:s}", "error", "no such control endpoint"));
    }
}

/* ---- reading ------------------------------------------------------------------------------ */

/* Takes decoded body bytes: counted, the first 64 KiB kept, scanned. */
static void s_on_body(void *arg, const uint8_t *data, size_t len)
{
    fv_conn_t *c = arg;
    if (c->control) {
        if (c->cbody_len + len > FV_KEEP_BODY) {
            c->cbody_big = true;
            return;
        }
        uint8_t *nb = realloc(c->cbody, c->cbody_len + len + 1);
        if (!nb)
            return;
        memcpy(nb + c->cbody_len, data, len);
        c->cbody = nb;
        c->cbody_len += len;
        return;
    }
    c->srv->st.bytes_in += len;
    fv_scan_feed(&c->scan, data, len);
    fv_rec_t *r = c->rec;
    if (!r)
        return;
    r->body_len += len;
    if (r->kept < FV_KEEP_BODY) {
        size_t n = FV_KEEP_BODY - r->kept < len ? FV_KEEP_BODY - r->kept : len;
        uint8_t *nb = realloc(r->body, r->kept + n); /* small bodies stay small */
        if (!nb)
            return;
        memcpy(nb + r->kept, data, n);
        r->body = nb;
        r->kept += n;
    }
}

/* The head of a request is in: count it, make its record, say 100 Continue if asked. */
static void s_on_head(fv_conn_t *c)
{
    c->t0_us = plat_mono_us();
    if (!c->control) {
        fv_server_t *srv = c->srv;
        const char *t = c->req.target;
        const char *qm = strchr(t, '?');
        char path[1024];
        snprintf(path, sizeof path, "%.*s", (int)(qm ? (size_t)(qm - t) : strlen(t)), t);
        srv->st.requests++;
        /* Bounded like every other table here: paths past the first 1000 share one entry. */
        bool known = json_object_get(srv->by_path, path) != NULL;
        s_count(srv->by_path,
                known || json_object_size(srv->by_path) < FV_PATHS_MAX ? path : "(other)");
        c->rec = s_rec_new(srv, c, path, qm ? qm + 1 : "");
    }
    if (c->req.expect_continue && c->req.state == FV_REQ_BODY) {
        s_qprintf(c, "HTTP/1.1 100 Continue\r\n\r\n");
        if (!c->control)
            c->srv->st.continues++;
        s_want_write(c);
    }
}

/* Answers a malformed request and closes. */
static void s_bad_request(fv_conn_t *c)
{
    c->close_after = true;
    c->outcome = "bad_request";
    json_t *j = json_pack("{s:{s:s,s:s,s:n,s:n}}", "error", "message", c->req.error, "type",
                          "invalid_request_error", "param", "code");
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    s_respond(c, c->req.status, "application/json", NULL, s ? s : "{}", s ? strlen(s) : 2);
    free(s);
}

/* Keeps bytes that arrived while a response is going out (the next request). */
static void s_stash(fv_conn_t *c, const uint8_t *in, size_t len)
{
    if (c->stash_len + len > FV_STASH_MAX) {
        c->outcome = "error";
        s_close_soon(c);
        return;
    }
    uint8_t *ns = realloc(c->stash, c->stash_len + len);
    if (!ns) {
        s_close_soon(c);
        return;
    }
    memcpy(ns + c->stash_len, in, len);
    c->stash = ns;
    c->stash_len += len;
    /* Reading on lets a client that closes mid-stream be seen at once; only a client that
     * pipelines a lot is paused. */
    if (c->stash_len > FV_STASH_PAUSE && !c->rx_off) {
        lws_rx_flow_control(c->wsi, 0);
        c->rx_off = true;
    }
}

/* Feeds received bytes to the parser and acts on heads and complete requests. */
static void s_rx(fv_conn_t *c, const uint8_t *in, size_t len)
{
    if (c->closing)
        return;
    if (c->phase != P_READ || c->req.state == FV_REQ_DONE || c->req.state == FV_REQ_BAD) {
        s_stash(c, in, len);
        return;
    }
    while (len) {
        fv_req_state_t before = c->req.state;
        size_t n = fv_req_feed(&c->req, in, len, s_on_body, c);
        in += n;
        len -= n;
        if (c->req.state == FV_REQ_BAD) {
            s_bad_request(c);
            return;
        }
        if (before == FV_REQ_HEAD && c->req.state != FV_REQ_HEAD)
            s_on_head(c);
        if (c->req.state == FV_REQ_DONE) {
            if (c->control)
                s_control_request(c);
            else
                s_api_request(c);
            if (len)
                s_stash(c, in, len);
            return;
        }
        if (!n)
            return;
    }
}

/* ---- lws glue ----------------------------------------------------------------------------- */

/* The connection went away: count a cancel if it was in the middle of something, free it. */
static void s_closed(fv_conn_t *c)
{
    fv_server_t *srv = c->srv;
    bus_timer_cancel(srv->loop, &c->timer);
    bool busy = c->phase != P_READ || c->req.state != FV_REQ_HEAD || c->req.head_len;
    if (busy && (c->rec || c->stream_started || c->phase != P_READ))
        s_request_ended(c, c->outcome ? c->outcome : "cancelled");
    s_rec_unref(c->rec);
    if (!c->control)
        srv->open_connections--;
    fv_req_free(&c->req);
    free(c->cbody);
    free(c->stash);
    free(c->q);
    free(c);
}

/* The raw-socket protocol of both ports. */
static int s_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                      size_t len)
{
    fv_conn_t *c = lws_get_opaque_user_data(wsi);
    switch (reason) {
    case LWS_CALLBACK_RAW_ADOPT: {
        fv_server_t *srv = lws_vhost_user(lws_get_vhost(wsi));
        c = calloc(1, sizeof *c);
        if (!c)
            return -1;
        c->srv = srv;
        c->wsi = wsi;
        c->control = lws_get_vhost(wsi) == srv->vh_ctl;
        c->tls = lws_is_ssl(wsi) != 0;
        fv_req_init(&c->req);
        fv_scan_init(&c->scan);
        /* Events 20 ms apart must leave as they are produced, not wait for an ACK. */
        int one = 1;
        setsockopt(lws_get_socket_fd(wsi), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (!c->control) {
            srv->st.connections++;
            srv->open_connections++;
        }
        lws_set_opaque_user_data(wsi, c);
        return 0;
    }
    case LWS_CALLBACK_RAW_RX:
        if (c)
            s_rx(c, in, len);
        return 0;
    case LWS_CALLBACK_RAW_WRITEABLE:
        return c ? s_writeable(c) : 0;
    case LWS_CALLBACK_SSL_INFO: {
        /* lws 4.1.6 arms PENDING_TIMEOUT_ESTABLISH_WITH_SERVER (the context's timeout_secs,
         * 5 s by default; a vhost's timeout_secs is not read for it) right after SSL_accept
         * succeeds, and only the HTTP roles clear it when a request head arrives: a raw-socket
         * TLS connection is closed 5 s after its handshake, mid-stream or not. It is set just
         * after this callback returns, so clear it on the next loop turn (LWS_CALLBACK_TIMER).
         * Handshakes themselves keep lws's PENDING_TIMEOUT_SSL_ACCEPT. */
        const struct lws_ssl_info *si = in;
        if (si && (si->where & SSL_CB_HANDSHAKE_DONE))
            lws_set_timer_usecs(wsi, 0);
        return 0;
    }
    case LWS_CALLBACK_TIMER:
        lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
        return 0;
    case LWS_CALLBACK_RAW_CLOSE:
        if (c) {
            lws_set_opaque_user_data(wsi, NULL);
            s_closed(c);
        }
        return 0;
    default:
        return 0;
    }
}

static const struct lws_protocols s_protocols[] = {
    {"fake-vendor", s_callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* Creates a raw-socket listening vhost (TLS when cert is given). */
static struct lws_vhost *s_listen(fv_server_t *srv, const char *name, const char *listen,
                                  const char *cert, const char *key)
{
    char host[256];
    int port;
    if (cfg_split_listen(listen, host, sizeof host, &port) != 0 || port <= 0) {
        log_err("listen_failed", "%s: bad address \"%s\" (HOST:PORT)", name, listen);
        return NULL;
    }
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.vhost_name = name;
    info.port = port;
    info.iface = host;
    info.protocols = s_protocols;
    info.user = srv;
    info.options = LWS_SERVER_OPTION_ADOPT_APPLY_LISTEN_ACCEPT_CONFIG;
    info.options |= strchr(host, ':')
                        ? LWS_SERVER_OPTION_IPV6_V6ONLY_MODIFY | LWS_SERVER_OPTION_IPV6_V6ONLY_VALUE
                        : LWS_SERVER_OPTION_DISABLE_IPV6;
    info.listen_accept_role = "raw-skt";
    info.listen_accept_protocol = "fake-vendor";
    if (cert && key) {
        info.ssl_cert_filepath = cert;
        info.ssl_private_key_filepath = key;
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.alpn = "http/1.1";
        /* LWS_CALLBACK_SSL_INFO at the end of each handshake (see s_callback). */
        info.ssl_info_event_mask = SSL_CB_HANDSHAKE_DONE;
    }
    struct lws_vhost *vh = lws_create_vhost(bus_loop_lws(srv->loop), &info);
    if (!vh)
        log_err("listen_failed", "%s: cannot listen on %s (in use? bad cert or key?)", name,
                listen);
    else
        log_info("listening", "%s on %s%s", name, listen, cert ? " (TLS)" : "");
    return vh;
}

fv_server_t *fv_server_new(bus_loop_t *loop, const fv_opts_t *opts)
{
    fv_server_t *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    srv->loop = loop;
    srv->opts = *opts;
    srv->cfg_count = -1;
    srv->by_path = json_object();
    srv->by_status = json_object();
    srv->wbuf = malloc(LWS_PRE + FV_WRITE_MAX);
    s_default_model_list(srv);
    if (!srv->by_path || !srv->by_status || !srv->wbuf || !srv->models)
        goto fail;
    srv->vh_api = s_listen(srv, "fake-vendor-api", opts->listen, opts->cert, opts->key);
    if (!srv->vh_api)
        goto fail;
    srv->vh_ctl = s_listen(srv, "fake-vendor-control", opts->control, NULL, NULL);
    if (!srv->vh_ctl)
        goto fail;
    return srv;
fail:
    fv_server_destroy(&srv);
    return NULL;
}

void fv_server_destroy(fv_server_t **p)
{
    if (!p || !*p)
        return;
    fv_server_t *srv = *p;
    for (size_t i = 0; i < FV_RING; i++)
        s_rec_unref(srv->ring[i]);
    json_decref(srv->by_path);
    json_decref(srv->by_status);
    json_decref(srv->models);
    free(srv->wbuf);
    free(srv);
    *p = NULL;
}
