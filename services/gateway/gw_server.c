/* gw_server: hub-gateway's HTTP side, routing and stream relay. */
#include "gw_server.h"
#include "bus_env.h"
#include "bus_http.h"
#include "bus_log.h"
#include "bus_metrics.h"
#include "bus_plat.h"
#include "bus_tap.h"
#include "gw_auth.h"
#include "gw_billing.h"
#include "gw_dialect.h"
#include "gw_routes.h"
#include "jsonscan.h"
#include "strmap.h"
#include "usage.h"

#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define S_MAX_TRIES 11         /* 1 + the largest gateway.retries */
#define S_CHUNK_HDR 16         /* room before data for "%zx\r\n" */
#define S_PRESENCE_MAX_AGE_US (10ull * 1000000) /* no refresh for this long: agent dropped */

/* A piece of body or response bytes, owned once and written from its own memory. */
typedef struct s_seg {
    struct s_seg *next; /* queue link */
    size_t len;         /* bytes in data */
    uint8_t data[];     /* LWS_PRE + S_CHUNK_HDR headroom, then the bytes */
} s_seg_t;

#define S_SEG_DATA(s) ((s)->data + LWS_PRE + S_CHUNK_HDR)

typedef struct gw_req gw_req_t;

typedef struct {
    gw_req_t *r; /* the request in progress on this connection, or NULL */
} s_pss_t;

struct gw_req {
    gw_server_t *srv;            /* owner */
    struct lws *wsi;             /* the user's connection (NULL once it closed) */
    s_pss_t *pss;                /* its session slot */
    uint8_t req_id[16];          /* the stream, returned as x-request-id */
    char req_hex[33];            /* x-request-id and log field */
    uint8_t sid[16];             /* the current attempt's stream id on the bus: req_id for the
                                  * first attempt, a variant of it for each retry, so that late
                                  * envelopes of an abandoned attempt can never be taken for the
                                  * new one's */
    char sid_hex[33];            /* map key of the open stream */
    gw_endpoint_t ep;            /* the endpoint: format, operation, path model, req.open path */
    char query[GW_QUERY_MAX];    /* the query passed on (gw_query_t.forward; never key=) */
    bool alt_sse;                /* the query asked for alt=sse (gemini) */
    bool proxy;                  /* an endpoint relayed to an agent (not /v1/models) */
    char *fwd[GW_FWD_HEADERS_MAX]; /* values of the user headers the format passes on (malloc'd,
                                    * NULL when absent), by gw_dialect_forward_headers order */
    /* auth */
    bool authed;                 /* key accepted */
    bool auth_pending;           /* lookup in flight */
    uint64_t auth_ticket;        /* its ticket */
    gw_principal_t who;          /* the user */
    /* body */
    int64_t content_length;      /* declared body size */
    int64_t body_in;             /* bytes received */
    jscan_t *scan;               /* validator/extractor */
    s_seg_t *body, *body_tail;   /* kept body pieces (for a retry, or until routed) */
    size_t body_kept;            /* their bytes */
    bool body_released;          /* a piece was sent and dropped: no retry possible */
    s_seg_t *held;               /* the latest piece, held until the next or the end */
    bool body_complete;          /* the whole body arrived and is valid */
    uint64_t body_sent;          /* body bytes sent to the current attempt's agent */
    uint64_t body_allowed;       /* how far the agent lets us send (its credit) */
    bool rx_paused;              /* reading the user's body is paused for lack of credit */
    /* routing */
    char agent_id[65];           /* current attempt's agent */
    char tried[S_MAX_TRIES][65]; /* agents tried */
    int attempts;                /* streams opened so far */
    bool stream_open;            /* an attempt is in progress at the agent */
    char last_error[160];        /* why the last attempt failed */
    /* billing */
    int hold;                    /* S_HOLD_*: no response byte goes out before GRANTED */
    int vendor_status;           /* the status of the agent's resp.head (0: none came) */
    bus_timer_t timer;           /* first-byte timeout */
    /* response */
    bool answered;               /* a response (or error) is decided */
    int status;                  /* response status */
    char *hdrs;                  /* response header lines from resp.head, or the error's */
    size_t hdrs_len;
    bool headers_out;            /* status line and headers written */
    bool chunked;                /* length unknown: chunked framing on HTTP/1.1, plain DATA
                                  * frames on HTTP/2 */
    bool h2;                     /* the request came over HTTP/2 */
    s_seg_t *out, *out_tail;     /* response bytes not yet written */
    size_t out_bytes;            /* their total */
    size_t credit_owed;          /* written since the last credit grant */
    bool ended;                  /* resp.end (or the error body) is queued */
    bool end_short;              /* the answer broke with no in-band way to say so: close
                                  * without the final chunk, so the reader sees a cut body */
    bool close_after;            /* close the connection after the response */
    /* usage chunk filter: the agent asked for usage the user did not ask for; that one SSE
     * event is read here and not forwarded (DESIGN §4) */
    bool drop_usage;             /* set at req.open */
    bool filtering;              /* the usage-chunk filter is on for this response */
    usage_sniffer_t *sniff;      /* reads the stream as it is relayed */
    uint8_t *pend;               /* bytes of the event still being received */
    size_t pend_len, pend_cap;   /* its length and capacity */
    uint64_t pend_base;          /* stream offset of pend[0] */
    uint64_t started_us;         /* monotonic */
    gw_req_t *prev, *next;       /* all requests */
};

/* A request's hold on its user's balance (gw_billing). */
enum { S_HOLD_NONE = 0, S_HOLD_PENDING, S_HOLD_GRANTED, S_HOLD_REFUSED };

typedef struct {
    bus_metric_t *requests, *active, *errors_4xx, *errors_5xx, *retries, *cancels;
    bus_metric_t *bytes_out, *msgs_in, *msgs_out, *agents, *auth_hits, *auth_misses;
} s_metrics_t;

struct gw_server {
    const hub_config_t *cfg;  /* borrowed */
    bus_loop_t *loop;         /* borrowed */
    struct lws_vhost *vh;     /* the users' listener */
    gw_auth_t *auth;          /* key checks */
    gw_billing_t *billing;    /* holds and usage reports */
    gw_routes_t *routes;      /* agents by model */
    strmap_t *streams;       /* req hex → gw_req_t with a stream open */
    gw_req_t *reqs;           /* every request in progress */
    void *dealer;             /* to the tunnel's ROUTER */
    void *sub;                /* the tunnel's presence */
    bus_zwatch_t *dealer_watch, *sub_watch;
    void *monitor;            /* PAIR receiving the DEALER's disconnect events */
    bus_zwatch_t *monitor_watch;
    bus_tap_t *tap;           /* envelope mirror */
    bus_metrics_t *metrics;   /* registry */
    s_metrics_t m;            /* handles */
    bus_timer_t tick;         /* presence expiry, metrics */
    bus_buf_t enc;            /* scratch encoder */
    bool stopping;            /* shutting down */
    uint64_t stop_deadline_us;
};

static void s_start_attempt(gw_req_t *r);
static void s_fail(gw_req_t *r, int status, const char *type, const char *code,
                   const char *message);

/* ---- helpers -------------------------------------------------------------------------- */

static s_seg_t *s_seg_new(const void *data, size_t len)
{
    s_seg_t *s = malloc(sizeof *s + LWS_PRE + S_CHUNK_HDR + len + 2);
    if (!s)
        return NULL;
    s->next = NULL;
    s->len = len;
    if (len)
        memcpy(S_SEG_DATA(s), data, len);
    return s;
}

static void s_seg_free_all(s_seg_t **head, s_seg_t **tail)
{
    while (*head) {
        s_seg_t *s = *head;
        *head = s->next;
        free(s);
    }
    if (tail)
        *tail = NULL;
}

/* The model the request is for: named by the path (gemini, bedrock) or the body's "model";
 * NULL (and *len 0) while the body has not shown it. */
static const char *s_model(const gw_req_t *r, size_t *len)
{
    if (r->ep.model_in_path) {
        *len = r->ep.model_len;
        return r->ep.model;
    }
    const jscan_result_t *res = r->scan ? jscan_result(r->scan) : NULL;
    if (res && res->has_model) {
        *len = res->model_len;
        return res->model;
    }
    *len = 0;
    return NULL;
}

/* Sends an envelope to the tunnel. 0 or a negative errno. */
static int s_send(gw_server_t *srv, const bus_env_t *env)
{
    bus_buf_reset(&srv->enc);
    int rc = bus_env_encode(env, &srv->enc);
    if (rc != 0) {
        log_err("encode_failed", "cannot encode %s", bus_type_name(env->type));
        return rc;
    }
    if (zmq_send(srv->dealer, srv->enc.data, srv->enc.len, ZMQ_DONTWAIT) < 0) {
        rc = -errno;
        log_warn("bus_send_failed", "to the tunnel: %s", zmq_strerror(errno));
        return rc;
    }
    bus_metric_inc(srv->m.msgs_out);
    bus_tap_mirror(srv->tap, "out", "tunnel", srv->enc.data, srv->enc.len);
    bus_zwatch_poke(srv->dealer_watch);
    return 0;
}

/* Tells the agent of the current attempt to stop, and forgets the stream. */
static void s_cancel_stream(gw_req_t *r, const char *reason)
{
    if (!r->stream_open)
        return;
    bus_env_t e;
    bus_env_init(&e, BUS_T_REQ_CANCEL, r->sid);
    e.u.req_cancel.reason = (bus_str_t){reason, strlen(reason)};
    s_send(r->srv, &e);
    r->stream_open = false;
    strmap_del(r->srv->streams, r->sid_hex);
    gw_routes_add_load(r->srv->routes, r->agent_id, -1);
    bus_timer_cancel(r->srv->loop, &r->timer);
}

/* Reports what the request used to hub-billing: once, when it is over, for every request that
 * asked for a hold (the figures from exactly the bytes the user got: DESIGN §4). */
static void s_report_usage(gw_req_t *r)
{
    if (r->hold == S_HOLD_NONE || r->attempts < 1)
        return;
    if (r->hold == S_HOLD_PENDING)
        gw_billing_hold_cancel(r->srv->billing, r->req_id);
    const usage_t *u = usage_get(r->sniff);
    usage_bill_t bill;
    usage_bill(u, r->vendor_status, r->content_length, &bill);
    size_t model_len;
    const char *model = s_model(r, &model_len);
    gw_report_t rep = {
        .attempt = (uint32_t)r->attempts,
        .agent_id = r->agent_id,
        .user_id = r->who.user_id,
        .model = model ? model : "",
        .model_len = model_len,
        .status = r->vendor_status,
        .delivered = r->hold == S_HOLD_GRANTED,
        .complete = u && u->done,
        .estimated = bill.estimated,
        .input_tokens = bill.input_tokens,
        .cached_tokens = bill.cached_tokens,
        .output_tokens = bill.output_tokens,
    };
    if (gw_billing_report(r->srv->billing, r->req_id, &rep) != 0)
        log_req(LOG_LVL_ERR, "usage_report_lost", r->req_hex, r->agent_id,
                "out of memory: hub-billing settles from the agent's report");
    log_req(LOG_LVL_DEBUG, "usage_reported", r->req_hex, r->agent_id,
            "attempt %d status %d%s: in %lld (cached %lld), out %lld%s", r->attempts,
            r->vendor_status, rep.delivered ? "" : " (not delivered)",
            (long long)bill.input_tokens, (long long)bill.cached_tokens,
            (long long)bill.output_tokens, bill.estimated ? " (estimated)" : "");
    r->hold = S_HOLD_NONE;
}

static void s_req_free(gw_req_t *r)
{
    gw_server_t *srv = r->srv;
    if (r->auth_pending)
        gw_auth_cancel(srv->auth, r->auth_ticket);
    s_cancel_stream(r, "request over");
    s_report_usage(r);
    bus_timer_cancel(srv->loop, &r->timer);
    jscan_destroy(&r->scan);
    s_seg_free_all(&r->body, &r->body_tail);
    s_seg_free_all(&r->out, &r->out_tail);
    free(r->held);
    free(r->hdrs);
    for (int i = 0; i < GW_FWD_HEADERS_MAX; i++)
        free(r->fwd[i]);
    usage_destroy(&r->sniff);
    free(r->pend);
    if (r->prev)
        r->prev->next = r->next;
    else
        srv->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    if (r->pss)
        r->pss->r = NULL;
    bus_metric_add(srv->m.active, -1);
    free(r);
}

/* ---- responses to the user -------------------------------------------------------------- */

/* Queues response bytes (a body piece) and asks for a writable callback. */
static int s_out(gw_req_t *r, const void *data, size_t len)
{
    s_seg_t *s = s_seg_new(data, len);
    if (!s)
        return -ENOMEM;
    if (r->out_tail)
        r->out_tail->next = s;
    else
        r->out = s;
    r->out_tail = s;
    r->out_bytes += len;
    if (r->wsi)
        lws_callback_on_writable(r->wsi);
    return 0;
}

/* Answers with an error in the shape of the request's format (gw_dialect: status, type and
 * code are given in OpenAI's words), unless a response has begun. */
static void s_fail(gw_req_t *r, int status, const char *type, const char *code,
                   const char *message)
{
    gw_server_t *srv = r->srv;
    if (r->answered)
        return;
    s_cancel_stream(r, "request failed");
    r->answered = true;
    r->status = status;
    if (r->proxy && !r->body_complete)
        r->close_after = true; /* the rest of the body is unread: no next request here */
    gw_error_t err;
    free(r->hdrs);
    r->hdrs = NULL;
    r->hdrs_len = 0;
    if (gw_dialect_error(r->ep.format, status, type, code, message, r->req_hex, &err) == 0) {
        r->status = err.status;
        s_out(r, err.body, err.body_len);
        r->hdrs = err.headers; /* taken */
        r->hdrs_len = err.headers_len;
        err.headers = NULL;
        gw_error_free(&err);
    }
    status = r->status; /* gemini answers key errors with Google's statuses */
    r->chunked = false;
    r->ended = true;
    bus_metric_inc(status >= 500 ? srv->m.errors_5xx : srv->m.errors_4xx);
    log_req(status >= 500 ? LOG_LVL_WARN : LOG_LVL_INFO, "request_failed", r->req_hex,
            r->agent_id[0] ? r->agent_id : NULL, "%d %s: %s", status, code, message);
    if (r->wsi)
        lws_callback_on_writable(r->wsi);
}

/* Writes the status line and headers. */
static int s_write_headers(gw_req_t *r, struct lws *wsi)
{
    uint8_t buf[LWS_PRE + 8192];
    uint8_t *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
    if (lws_add_http_header_status(wsi, (unsigned int)r->status, &p, end))
        return -1;
    if (lws_add_http_header_by_name(wsi, (const unsigned char *)"x-request-id:",
                                    (const unsigned char *)r->req_hex, 32, &p, end))
        return -1;
    /* Header by header through lws, which encodes them for HTTP/1.1 or HPACK for HTTP/2. */
    for (const char *line = r->hdrs; line && line < r->hdrs + r->hdrs_len;) {
        const char *eol = memchr(line, '\r', (size_t)(r->hdrs + r->hdrs_len - line));
        const char *colon = memchr(line, ':', (size_t)(r->hdrs + r->hdrs_len - line));
        if (!eol || !colon || colon > eol)
            break;
        char name[130];
        size_t nl = (size_t)(colon - line);
        if (nl == 0 || nl + 2 > sizeof name)
            return -1;
        for (size_t i = 0; i < nl; i++)
            name[i] = (char)((line[i] >= 'A' && line[i] <= 'Z') ? line[i] + 32 : line[i]);
        name[nl] = ':';
        name[nl + 1] = '\0';
        const char *v = colon + 1;
        while (v < eol && *v == ' ')
            v++;
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                        (const unsigned char *)v, (int)(eol - v), &p, end))
            return -1;
        line = eol + 2;
    }
    if (!r->chunked) {
        /* The whole body is queued already (an error, or a complete short answer). */
        if (lws_add_http_header_content_length(wsi, (lws_filepos_t)r->out_bytes, &p, end))
            return -1;
    } else if (!r->h2 &&
               lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING,
                                            (const unsigned char *)"chunked", 7, &p, end)) {
        return -1;
    }
    if (r->close_after && !r->h2 &&
        lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)"close", 5,
                                     &p, end))
        return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    r->headers_out = true;
    return 0;
}

/* Grants the agent credit for what the user's socket has taken. */
static void s_grant_credit(gw_req_t *r, bool force)
{
    size_t window = (size_t)r->srv->cfg->gateway_credit_window;
    if (!r->stream_open || !r->credit_owed || (!force && r->credit_owed < window / 4))
        return;
    bus_env_t e;
    bus_env_init(&e, BUS_T_CREDIT, r->sid);
    e.u.credit.bytes = r->credit_owed;
    if (s_send(r->srv, &e) == 0)
        r->credit_owed = 0;
}

/* One step of writing the response; returns the lws callback's return value. */
static int s_writeable(gw_req_t *r, struct lws *wsi)
{
    if (!r->answered)
        return 0;
    if (r->vendor_status && r->hold == S_HOLD_PENDING)
        return 0; /* the vendor's answer waits for the hold (s_on_hold) */
    if (!r->headers_out) {
        if (!r->ended && !r->chunked && !r->out)
            return 0;
        if (s_write_headers(r, wsi) != 0)
            return -1;
        lws_callback_on_writable(wsi);
        return 0;
    }
    s_seg_t *s = r->out;
    if (s) {
        uint8_t *data = S_SEG_DATA(s);
        size_t len = s->len;
        uint8_t *from = data;
        if (r->chunked && !r->h2) {
            if (len == 0) {
                r->out = s->next;
                if (!r->out)
                    r->out_tail = NULL;
                free(s);
                lws_callback_on_writable(wsi);
                return 0;
            }
            char hdr[S_CHUNK_HDR + 1];
            int hl = snprintf(hdr, sizeof hdr, "%zx\r\n", len);
            from = data - hl;
            memcpy(from, hdr, (size_t)hl);
            memcpy(data + len, "\r\n", 2);
            len += (size_t)hl + 2;
        }
        bool last = !s->next && r->ended && !r->chunked;
        int n = lws_write(wsi, from, len, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP);
        if (n < (int)len)
            return -1;
        bus_metric_add(r->srv->m.bytes_out, (int64_t)s->len);
        r->credit_owed += s->len;
        r->out_bytes -= s->len;
        r->out = s->next;
        if (!r->out)
            r->out_tail = NULL;
        free(s);
        s_grant_credit(r, r->out == NULL);
        if (last)
            goto done;
        if (r->out || r->ended)
            lws_callback_on_writable(wsi);
        return 0;
    }
    if (!r->ended)
        return 0;
    if (r->end_short) {
        r->close_after = true; /* no terminating chunk (HTTP/1.1), no END_STREAM (HTTP/2) */
    } else if (r->chunked && !r->h2) {
        static const char tail[] = "0\r\n\r\n";
        uint8_t buf[LWS_PRE + sizeof tail];
        memcpy(buf + LWS_PRE, tail, sizeof tail - 1);
        if (lws_write(wsi, buf + LWS_PRE, sizeof tail - 1, LWS_WRITE_HTTP_FINAL) <
            (int)sizeof tail - 1)
            return -1;
    } else {
        uint8_t buf[LWS_PRE + 1];
        if (lws_write(wsi, buf + LWS_PRE, 0, LWS_WRITE_HTTP_FINAL) < 0)
            return -1;
    }
done:
    const usage_t *u = usage_get(r->sniff);
    double ms = (double)(plat_mono_us() - r->started_us) / 1000.0;
    if (u)
        log_req(LOG_LVL_INFO, "request_done", r->req_hex, r->agent_id,
                "%s %d in %.3f ms (attempts %d); usage %s: in %lld, out %lld, cached %lld",
                r->ep.path, r->status, ms, r->attempts, u->found ? "reported" : "not seen",
                (long long)u->input_tokens, (long long)u->output_tokens,
                (long long)u->cached_input_tokens);
    else
        log_req(LOG_LVL_INFO, "request_done", r->req_hex, r->agent_id[0] ? r->agent_id : NULL,
                "%s %d in %.3f ms (attempts %d)", r->ep.path, r->status, ms, r->attempts);
    bool close_after = r->close_after;
    s_req_free(r);
    if (close_after || lws_http_transaction_completed(wsi))
        return -1;
    return 0;
}

/* ---- the stream to the agent ----------------------------------------------------------- */

static void s_first_byte_timeout(bus_timer_t *t)
{
    gw_req_t *r = t->arg;
    s_fail(r, 504, "server_error", "timeout", "the provider did not answer in time");
}

/* Sends a body piece to the agent of the current attempt; pauses reading the user's body when
 * the agent's upload window is spent (it grants more with credit as its vendor reads). */
static int s_send_body(gw_req_t *r, const uint8_t *data, size_t len)
{
    bus_env_t e;
    bus_env_init(&e, BUS_T_REQ_BODY, r->sid);
    e.u.req_body.data = (bus_bin_t){data, len};
    r->body_sent += len;
    if (r->body_sent >= r->body_allowed && !r->rx_paused && r->wsi && !r->body_complete) {
        r->rx_paused = true;
        lws_rx_flow_control(r->wsi, 0);
    }
    return s_send(r->srv, &e);
}

/* Whether a failed attempt may be retried on another agent. */
static bool s_can_retry(const gw_req_t *r)
{
    return !r->headers_out && !r->body_released && !r->answered &&
           r->attempts <= r->srv->cfg->gateway_retries && r->attempts < S_MAX_TRIES;
}

/* Picks an agent not tried yet serving the request's model in its format (gw_routes_pick's
 * result). */
static int s_pick(gw_req_t *r, gw_pick_t *pick)
{
    size_t model_len;
    const char *model = s_model(r, &model_len);
    const char *excl[S_MAX_TRIES];
    for (int i = 0; i < r->attempts; i++)
        excl[i] = r->tried[i];
    return gw_routes_pick(r->srv->routes, r->ep.format, model, model_len, excl,
                          (size_t)r->attempts, pick);
}

/* Whether another agent not tried yet serves the request's model in its format now. */
static bool s_other_agent(gw_req_t *r)
{
    gw_pick_t pick;
    return s_pick(r, &pick) == 0;
}

/* The current attempt failed before any byte reached the user. */
static void s_attempt_failed(gw_req_t *r, int status, const char *why)
{
    snprintf(r->last_error, sizeof r->last_error, "%s", why);
    if (r->stream_open) {
        r->stream_open = false;
        strmap_del(r->srv->streams, r->sid_hex);
        gw_routes_add_load(r->srv->routes, r->agent_id, -1);
        bus_timer_cancel(r->srv->loop, &r->timer);
    }
    if (s_can_retry(r)) {
        bus_metric_inc(r->srv->m.retries);
        log_req(LOG_LVL_WARN, "retry", r->req_hex, r->agent_id, "attempt %d failed (%s)",
                r->attempts, why);
        s_start_attempt(r);
        return;
    }
    char msg[256];
    snprintf(msg, sizeof msg, "the provider failed: %s", why);
    s_fail(r, status ? status : 502, "server_error", "upstream_error", msg);
}

/* hub-billing's answer to the request's hold. */
static void s_on_hold(void *arg, const bus_hold_reply_t *reply)
{
    gw_req_t *r = arg;
    if (reply && reply->ok) {
        r->hold = S_HOLD_GRANTED;
        if (r->wsi)
            lws_callback_on_writable(r->wsi);
        return;
    }
    r->hold = S_HOLD_REFUSED;
    if (r->headers_out)
        return; /* never: nothing is written before the hold */
    /* Whatever the vendor sent so far is dropped: the user gets the refusal instead. */
    s_cancel_stream(r, "hold refused");
    s_seg_free_all(&r->out, &r->out_tail);
    r->out_bytes = 0;
    usage_destroy(&r->sniff);
    r->filtering = false;
    r->pend_len = 0;
    r->answered = false;
    r->ended = false;
    char msg[1100];
    if (!reply) {
        s_fail(r, 503, "server_error", "billing_unavailable",
               "billing is not available right now; please retry");
        return;
    }
    snprintf(msg, sizeof msg, "%.*s", (int)reply->message.len,
             reply->message.len ? reply->message.p : "request refused by billing");
    char code[65];
    snprintf(code, sizeof code, "%.*s", (int)reply->code.len,
             reply->code.len ? reply->code.p : "billing_refused");
    int status = reply->status >= 400 && reply->status <= 599 ? (int)reply->status : 402;
    /* 402, not OpenAI's 429, for an empty balance: the SDKs retry 429 on their own, and
     * retrying cannot help until the user tops up. */
    s_fail(r, status, status == 402 ? "insufficient_quota" : "server_error", code, msg);
}

/* Asks for the request's hold, once, as its first attempt opens (the vendor call and the
 * hold overlap). */
static void s_ask_hold(gw_req_t *r)
{
    if (r->hold != S_HOLD_NONE || !gw_endpoint_billed(&r->ep))
        return; /* count_tokens is not billed: no hold, and so no usage report */
    const jscan_result_t *res = jscan_result(r->scan);
    int64_t max_tokens = res->has_max_tokens ? res->max_tokens : 0;
    size_t model_len;
    const char *model = s_model(r, &model_len);
    int rc = gw_billing_hold(r->srv->billing, r->req_id, r->who.user_id, model, model_len,
                             r->content_length, max_tokens, s_on_hold, r);
    if (rc != 0) {
        s_fail(r, 503, "server_error", "billing_unavailable", "cannot ask billing for a hold");
        return;
    }
    r->hold = S_HOLD_PENDING;
}

/* Picks an agent and opens a stream for the complete (or routable) request. */
static void s_start_attempt(gw_req_t *r)
{
    gw_server_t *srv = r->srv;
    const jscan_result_t *res = jscan_result(r->scan);
    size_t model_len;
    const char *model = s_model(r, &model_len);
    gw_pick_t pick;
    gw_format_t fmt = r->ep.format;
    int rc = s_pick(r, &pick);
    if (rc == -ENOTCONN) {
        s_fail(r, 503, "server_error", "no_agents", "no provider is connected right now");
        return;
    }
    if (rc == -ENOENT) {
        char msg[400];
        int ml = (int)(model_len > 256 ? 256 : model_len);
        if (gw_routes_formats(srv->routes, model, model_len))
            snprintf(msg, sizeof msg, "The model `%.*s` is not served in the %s format here", ml,
                     model, gw_format_name(fmt));
        else
            snprintf(msg, sizeof msg, "The model `%.*s` does not exist or no provider serves it",
                     ml, model);
        s_fail(r, 404, "invalid_request_error", "model_not_found", msg);
        return;
    }
    if (rc != 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "every provider of this model failed: %s", r->last_error);
        s_fail(r, 502, "server_error", "upstream_error", msg);
        return;
    }
    memcpy(r->agent_id, pick.agent_id, sizeof r->agent_id);
    memcpy(r->tried[r->attempts], pick.agent_id, sizeof r->tried[0]);
    r->attempts++;
    /* Attempt n's stream id: the request id with its last byte xor (n - 1). */
    memcpy(r->sid, r->req_id, sizeof r->sid);
    r->sid[15] ^= (uint8_t)(r->attempts - 1);
    bus_req_id_hex(r->sid, r->sid_hex);
    /* req.open: what the agent needs to call its vendor; never the user's credentials. */
    bus_env_t e;
    bus_env_init(&e, BUS_T_REQ_OPEN, r->sid);
    bus_req_open_t *o = &e.u.req_open;
    o->agent_id = (bus_str_t){r->agent_id, strlen(r->agent_id)};
    o->attempt = (uint64_t)r->attempts;
    o->format = bus_str_c(gw_format_name(fmt));
    o->model = (bus_str_t){model, model_len};
    o->method = bus_str_c("POST");
    o->path = (bus_str_t){r->ep.path, strlen(r->ep.path)};
    o->query = (bus_str_t){r->query, strlen(r->query)};
    o->body_size = r->content_length;
    /* The agent adds stream_options.include_usage when the user did not ask (DESIGN §4):
     * OpenAI's chat and completions only. */
    bool add_usage = res->has_stream && res->stream && !res->stream_options_present &&
                     (r->ep.op == GW_OP_CHAT || r->ep.op == GW_OP_COMPLETIONS);
    r->drop_usage = add_usage;
    /* Whether the user asked for a stream: the body's "stream" (openai, anthropic), the method
     * and alt=sse (gemini), the operation (bedrock). */
    bool stream = fmt == GW_FORMAT_GEMINI    ? r->ep.op == GW_OP_STREAM_GENERATE
                  : fmt == GW_FORMAT_BEDROCK ? gw_endpoint_stream_op(&r->ep)
                                             : res->has_stream && res->stream;
    bus_str_t kv[2 * (3 + GW_FWD_HEADERS_MAX)] = {
        bus_str_c("content-type"), bus_str_c("application/json"),
        bus_str_c("x-relayhub-stream"), bus_str_c(stream ? "1" : "0"),
        bus_str_c("x-relayhub-add-include-usage"), bus_str_c(add_usage ? "1" : "0")};
    size_t n_kv = 3;
    /* The user headers this format passes on (anthropic-version, anthropic-beta): nothing else
     * of the user's reaches the agent. */
    const char *const *fwd = gw_dialect_forward_headers(fmt);
    for (int i = 0; fwd[i] && i < GW_FWD_HEADERS_MAX; i++) {
        if (!r->fwd[i])
            continue;
        kv[2 * n_kv] = bus_str_c(fwd[i]);
        kv[2 * n_kv + 1] = bus_str_c(r->fwd[i]);
        n_kv++;
    }
    bus_buf_t scratch;
    bus_buf_init(&scratch, 4096 + GW_FWD_HEADERS_MAX * GW_FWD_VALUE_MAX);
    rc = bus_list_encode_kvs(&scratch, kv, n_kv, &o->headers);
    if (rc == 0)
        rc = s_send(srv, &e);
    bus_buf_free(&scratch);
    if (rc != 0) {
        s_fail(r, 503, "server_error", "tunnel_unavailable", "the tunnel is not reachable");
        return;
    }
    r->stream_open = true;
    r->body_sent = 0;
    r->body_allowed = 4 * (uint64_t)srv->cfg->gateway_credit_window; /* the upload window */
    strmap_put(srv->streams, r->sid_hex, r);
    gw_routes_add_load(srv->routes, r->agent_id, +1);
    bus_timer_start(srv->loop, &r->timer, s_first_byte_timeout, r,
                    srv->cfg->gateway_first_byte_timeout_ms * 1000);
    log_req(LOG_LVL_DEBUG, "stream_open", r->req_hex, r->agent_id, "attempt %d", r->attempts);
    s_ask_hold(r);
    if (r->answered)
        return;
    /* The body kept so far, then (if the body is still arriving) the rest as it comes. */
    for (s_seg_t *s = r->body; s; s = s->next)
        s_send_body(r, S_SEG_DATA(s), s->len);
    if (r->body_complete && r->held) {
        s_send_body(r, S_SEG_DATA(r->held), r->held->len);
    }
}

/* Everything needed to route is known: auth done, and the body complete or far enough. */
static void s_maybe_start(gw_req_t *r)
{
    if (r->answered || r->stream_open || r->attempts || !r->authed)
        return;
    size_t model_len;
    bool has_model = s_model(r, &model_len) != NULL;
    if (r->body_complete ||
        (has_model && r->body_kept >= (size_t)r->srv->cfg->gateway_retry_body_bytes)) {
        if (!has_model) {
            s_fail(r, 400, "invalid_request_error", "missing_model",
                   "you must provide a model parameter");
            return;
        }
        s_start_attempt(r);
    }
}

/* ---- bus input ----------------------------------------------------------------------- */

/* Turns resp.head headers into response header lines for the user. */
static void s_take_headers(gw_req_t *r, const bus_list_t *list)
{
    static const char *const drop[] = {"connection", "keep-alive", "transfer-encoding",
                                       "content-length", "set-cookie", "x-request-id",
                                       "proxy-authenticate", "upgrade", "trailer", "te",
                                       "server", "date", NULL};
    size_t cap = 1024, len = 0;
    char *out = malloc(cap);
    if (!out)
        return;
    bus_list_t it = *list;
    bus_str_t k, v;
    while (bus_list_next_kv(&it, &k, &v) == 1) {
        bool skip = k.len == 0 || k.len > 128 || v.len > 4096;
        for (int i = 0; !skip && drop[i]; i++)
            skip = strlen(drop[i]) == k.len && strncasecmp(drop[i], k.p, k.len) == 0;
        for (size_t i = 0; !skip && i < v.len; i++)
            skip = v.p[i] == '\r' || v.p[i] == '\n';
        if (skip)
            continue;
        if (len + k.len + v.len + 5 > cap) {
            cap = (len + k.len + v.len + 5) * 2;
            char *n = realloc(out, cap);
            if (!n)
                break;
            out = n;
        }
        memcpy(out + len, k.p, k.len);
        len += k.len;
        memcpy(out + len, ": ", 2);
        len += 2;
        memcpy(out + len, v.p, v.len);
        len += v.len;
        memcpy(out + len, "\r\n", 2);
        len += 2;
    }
    out[len] = '\0'; /* the loop keeps 5 spare bytes: the lines stay a C string */
    free(r->hdrs);
    r->hdrs = out;
    r->hdrs_len = len;
}

#define S_PEND_MAX (1u << 20) /* the sniffer's own event limit */
/* A non-streamed answer the sniffer gathers to read its usage: the agent's own limit
 * (agent-adapter's S_SNIFF_MAX), so both sides read the same bodies and agree on their figures
 * (a body over it is estimated on both sides). Memory grows with the body, up to this. */
#define S_BODY_SNIFF_MAX (4u << 20)

/* An SSE event is complete: forward its bytes unless it is the usage chunk we added. */
static void s_on_usage_event(void *arg, const usage_event_t *ev)
{
    gw_req_t *r = arg;
    if (ev->start < r->pend_base || ev->end > r->pend_base + r->pend_len)
        return; /* not in our window (never expected) */
    if (!ev->usage_only) {
        s_out(r, r->pend + (ev->start - r->pend_base), (size_t)(ev->end - ev->start));
        return;
    }
    /* Dropped bytes are consumed all the same: the agent gets their credit back. */
    r->credit_owed += (size_t)(ev->end - ev->start);
    log_req(LOG_LVL_DEBUG, "usage_chunk_dropped", r->req_hex, r->agent_id,
                "%llu bytes the user did not ask for", (unsigned long long)(ev->end - ev->start));
}

/* Relays response bytes, through the usage filter when it is on. */
static void s_relay_bytes(gw_req_t *r, const uint8_t *data, size_t len)
{
    if (!r->filtering) {
        /* What the user gets is what the gateway's figure counts (DESIGN §4). */
        s_out(r, data, len);
        if (r->sniff)
            usage_feed(r->sniff, data, len);
        return;
    }
    /* Held bytes are not credited until they are written, so the filter may hold at most a
     * quarter of the window: beyond that the agent would wait for credit that never comes. */
    size_t limit = (size_t)r->srv->cfg->gateway_credit_window / 4;
    if (r->pend_len + len > r->pend_cap || r->pend_len + len > limit) {
        size_t ncap = r->pend_cap ? r->pend_cap : 1024; /* idle streams stay small */
        while (ncap < r->pend_len + len)
            ncap *= 2;
        uint8_t *nb = r->pend_len + len <= limit ? realloc(r->pend, ncap) : NULL;
        if (!nb) {
            /* An event this large is no usage chunk: stop filtering, relay everything. */
            log_req(LOG_LVL_INFO, "usage_filter_off", r->req_hex, r->agent_id,
                    "an event over %zu bytes: relaying the stream unfiltered", limit);
            s_out(r, r->pend, r->pend_len);
            s_out(r, data, len);
            r->pend_len = 0;
            r->filtering = false;
            usage_set_event_cb(r->sniff, NULL, NULL);
            usage_feed(r->sniff, data, len);
            return;
        }
        r->pend = nb;
        r->pend_cap = ncap;
    }
    memcpy(r->pend + r->pend_len, data, len);
    r->pend_len += len;
    usage_feed(r->sniff, data, len);
    /* Everything before hold_from has been forwarded (or dropped) by the callback. */
    uint64_t hold = usage_hold_from(r->sniff);
    if (hold > r->pend_base) {
        size_t done = (size_t)(hold - r->pend_base);
        if (done > r->pend_len)
            done = r->pend_len;
        memmove(r->pend, r->pend + done, r->pend_len - done);
        r->pend_len -= done;
        r->pend_base += done;
    }
}

/* The stream ended: whatever the filter still holds goes out as it is. */
static void s_relay_flush(gw_req_t *r)
{
    if (r->sniff && !r->filtering)
        usage_finish(r->sniff);
    if (r->sniff && r->filtering) {
        usage_finish(r->sniff);
        uint64_t hold = usage_hold_from(r->sniff);
        if (hold > r->pend_base && hold - r->pend_base <= r->pend_len) {
            size_t done = (size_t)(hold - r->pend_base);
            memmove(r->pend, r->pend + done, r->pend_len - done);
            r->pend_len -= done;
            r->pend_base += done;
        }
    }
    if (r->pend_len)
        s_out(r, r->pend, r->pend_len);
    r->pend_len = 0;
}

static void s_on_stream_env(gw_req_t *r, const bus_env_t *env)
{
    switch (env->type) {
    case BUS_T_ERROR:
        /* From the tunnel: the agent is not there, or the stream is unknown. */
        if (!r->headers_out && !r->answered) {
            char why[160];
            snprintf(why, sizeof why, "%.*s", (int)env->u.error.message.len,
                     env->u.error.message.len ? env->u.error.message.p : "");
            s_attempt_failed(r, 502, why);
        }
        return;
    case BUS_T_RESP_HEAD: {
        bus_timer_cancel(r->srv->loop, &r->timer);
        int status = (int)env->u.resp_head.status;
        /* A vendor's 5xx is retried on another agent when there is one; when there is none,
         * the vendor's own answer (in its format, with its reason) is relayed. */
        if (status >= 500 && s_can_retry(r) && s_other_agent(r)) {
            char why[64];
            snprintf(why, sizeof why, "vendor answered %d", status);
            s_cancel_stream(r, "retrying elsewhere");
            s_attempt_failed(r, status, why);
            return;
        }
        if (r->answered)
            return;
        r->answered = true;
        r->status = status >= 100 && status <= 599 ? status : 502;
        r->vendor_status = r->status;
        r->chunked = true;
        s_take_headers(r, &env->u.resp_head.headers);
        usage_format_t fmt;
        bool streaming;
        bool sse = r->hdrs && strstr(r->hdrs, "text/event-stream");
        if (r->status == 200 && gw_endpoint_usage(&r->ep, sse, r->alt_sse, &fmt, &streaming) == 0) {
            /* The gateway's usage figure: read from exactly the bytes the user receives (and,
             * for Bedrock's invoke, from the token-count headers, given before any byte). */
            r->sniff = usage_new(fmt, streaming, streaming ? S_PEND_MAX : S_BODY_SNIFF_MAX);
            bus_list_t it = env->u.resp_head.headers;
            bus_str_t k, v;
            while (r->sniff && bus_list_next_kv(&it, &k, &v) == 1)
                usage_header(r->sniff, k.p, k.len, v.p, v.len);
            /* The include_usage filter: OpenAI's SSE streams only (drop_usage is never set for
             * the other formats). */
            r->filtering = r->sniff && r->drop_usage && sse;
            if (r->filtering)
                usage_set_event_cb(r->sniff, s_on_usage_event, r);
        }
        if (r->wsi)
            lws_callback_on_writable(r->wsi);
        return;
    }
    case BUS_T_RESP_CHUNK: {
        if (!r->answered || r->ended)
            return;
        size_t len = env->u.resp_chunk.data.len;
        size_t limit = 2 * (size_t)r->srv->cfg->gateway_credit_window + 65536;
        if (r->out_bytes + len > limit) {
            /* The agent ignores flow control: stop it rather than buffer without bound. */
            log_req(LOG_LVL_WARN, "credit_overrun", r->req_hex, r->agent_id,
                    "%zu bytes queued for the user: ending the stream", r->out_bytes + len);
            s_cancel_stream(r, "credit window overrun");
            r->close_after = true;
            r->end_short = true;
            r->ended = true;
            if (r->wsi)
                lws_callback_on_writable(r->wsi);
            return;
        }
        s_relay_bytes(r, env->u.resp_chunk.data.p, len);
        return;
    }
    case BUS_T_RESP_END: {
        bool had_head = r->answered;
        bus_str_t err = env->u.resp_end.error;
        r->stream_open = false;
        strmap_del(r->srv->streams, r->sid_hex);
        gw_routes_add_load(r->srv->routes, r->agent_id, -1);
        bus_timer_cancel(r->srv->loop, &r->timer);
        if (!had_head) {
            char why[160];
            snprintf(why, sizeof why, "%.*s", (int)err.len, err.len ? err.p : "no response");
            s_attempt_failed(r, 502, why);
            return;
        }
        s_relay_flush(r);
        if (err.len) {
            log_req(LOG_LVL_WARN, "stream_broken", r->req_hex, r->agent_id,
                    "after the first byte: %.*s", (int)err.len, err.p);
            /* Tell the reader in its format's own way (an SSE error event, an event-stream
             * exception); where the format has none, the connection ends short. */
            bool sse = r->hdrs && strstr(r->hdrs, "text/event-stream");
            size_t n = 0;
            uint8_t *ev = gw_dialect_stream_error(&r->ep, r->status, sse, err.p, err.len, &n);
            if (ev && n) {
                s_out(r, ev, n);
            } else {
                r->close_after = true;
                /* A success cut short ends without its last chunk; a vendor's error answer
                 * (its body relayed whole) ends normally. */
                r->end_short = r->status >= 200 && r->status <= 299;
            }
            free(ev);
        }
        r->ended = true;
        if (r->wsi)
            lws_callback_on_writable(r->wsi);
        return;
    }
    case BUS_T_CREDIT:
        /* The agent's vendor took body bytes: send more of the body. */
        r->body_allowed += env->u.credit.bytes;
        if (r->rx_paused && r->body_sent < r->body_allowed && r->wsi) {
            r->rx_paused = false;
            lws_rx_flow_control(r->wsi, 1);
        }
        return;
    default:
        return;
    }
}

/* One envelope from the tunnel. */
static void s_on_dealer(void *arg, void *zsock)
{
    gw_server_t *srv = arg;
    zmq_msg_t msg;
    if (bus_zrecv_parts(zsock, &msg, 1) == 0)
        return;
    const uint8_t *buf = zmq_msg_data(&msg);
    size_t len = zmq_msg_size(&msg);
    bus_metric_inc(srv->m.msgs_in);
    bus_tap_mirror(srv->tap, "in", "tunnel", buf, len);
    bus_env_t env;
    char err[160];
    if (bus_env_decode(buf, len, &env, err, sizeof err) != 0 || !env.has_req_id) {
        log_warn("bad_bus_message", "from the tunnel: %s", err);
        zmq_msg_close(&msg);
        return;
    }
    char hex[33];
    bus_req_id_hex(env.req_id, hex);
    gw_req_t *r = strmap_get(srv->streams, hex);
    if (r)
        s_on_stream_env(r, &env);
    else if (env.type == BUS_T_RESP_HEAD || env.type == BUS_T_RESP_CHUNK) {
        /* A stream we gave up on: make the agent stop. */
        bus_env_t c;
        bus_env_init(&c, BUS_T_REQ_CANCEL, env.req_id);
        c.u.req_cancel.reason = bus_str_c("no such request at the gateway");
        s_send(srv, &c);
    }
    zmq_msg_close(&msg);
}

/* The DEALER lost its connection to hub-tunnel (it died or restarted): nothing of the streams
 * it carried will come back. Each one ends now as if its agent had gone: retried elsewhere
 * before its first byte, ended with an error after it, instead of waiting for a timeout. */
static void s_on_monitor(void *arg, void *zsock)
{
    gw_server_t *srv = arg;
    zmq_msg_t parts[2];
    int n = bus_zrecv_parts(zsock, parts, 2);
    bool lost = false;
    if (n >= 1 && zmq_msg_size(&parts[0]) >= 2) {
        uint16_t ev;
        memcpy(&ev, zmq_msg_data(&parts[0]), sizeof ev);
        lost = ev == ZMQ_EVENT_DISCONNECTED;
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close(&parts[i]);
    if (!lost)
        return;
    size_t open = strmap_count(srv->streams);
    log_warn("tunnel_lost", "the connection to hub-tunnel dropped: ending %zu open streams", open);
    if (!open)
        return;
    bus_env_t end;
    bus_env_init(&end, BUS_T_RESP_END, NULL);
    end.u.resp_end.error = bus_str_c("the tunnel connection was lost");
    for (gw_req_t *r = srv->reqs; r; r = r->next)
        if (r->stream_open)
            s_on_stream_env(r, &end);
}

/* One presence event. */
static void s_on_presence(void *arg, void *zsock)
{
    gw_server_t *srv = arg;
    zmq_msg_t msg;
    if (bus_zrecv_parts(zsock, &msg, 1) == 0)
        return;
    bus_env_t env;
    char err[160];
    bus_tap_mirror(srv->tap, "in", "presence", zmq_msg_data(&msg), zmq_msg_size(&msg));
    if (bus_env_decode(zmq_msg_data(&msg), zmq_msg_size(&msg), &env, err, sizeof err) == 0) {
        if (env.type == BUS_T_PRESENCE) {
            gw_routes_apply(srv->routes, &env.u.presence, plat_mono_us());
        } else if (env.type == BUS_T_REGISTRY_CHANGED) {
            /* A key was revoked or a user disabled: forget every cached answer now. */
            gw_auth_flush(srv->auth);
            log_info("keys_changed", "API key cache flushed on notice from hubctl");
        }
    }
    zmq_msg_close(&msg);
    bus_metric_set(srv->m.agents, (int64_t)gw_routes_agents(srv->routes));
}

/* ---- HTTP ------------------------------------------------------------------------------- */

static void s_on_auth(void *arg, int status, const gw_principal_t *who)
{
    gw_req_t *r = arg;
    r->auth_pending = false;
    if (status == -EAGAIN) {
        s_fail(r, 503, "server_error", "auth_unavailable",
               "cannot check API keys right now; try again");
        return;
    }
    if (status != 0) {
        s_fail(r, 401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided.");
        return;
    }
    r->who = *who;
    r->authed = true;
    if (!r->proxy) {
        lws_callback_on_writable(r->wsi);
        return;
    }
    s_maybe_start(r);
}

/* Copies a header lws does not know by name (name in lowercase, without the colon) into out;
 * false when absent, or longer than out holds. Over HTTP/2, lws 4.1 keeps no such headers. */
static bool s_custom_header(struct lws *wsi, const char *name, char *out, size_t cap)
{
    char n[64];
    int nl = snprintf(n, sizeof n, "%s:", name);
    if (nl <= 0 || (size_t)nl >= sizeof n)
        return false;
    int len = lws_hdr_custom_length(wsi, n, nl);
    if (len < 0 || (size_t)len >= cap)
        return false;
    return lws_hdr_custom_copy(wsi, out, (int)cap, n, nl) >= 0;
}

/* Starts the key check with the key from where the request's format reads it (query_key: the
 * key= parameter, or NULL); the request is answered or its check queued. */
static void s_authenticate(gw_req_t *r, struct lws *wsi, const char *query_key)
{
    char auth[256], x_api_key[256], x_goog[256];
    gw_creds_t c = {
        .authorization = bus_http_header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, auth, sizeof auth) == 0
                             ? auth
                             : NULL,
        .x_api_key = r->ep.format == GW_FORMAT_ANTHROPIC &&
                             s_custom_header(wsi, "x-api-key", x_api_key, sizeof x_api_key)
                         ? x_api_key
                         : NULL,
        .x_goog_api_key = r->ep.format == GW_FORMAT_GEMINI &&
                                  s_custom_header(wsi, "x-goog-api-key", x_goog, sizeof x_goog)
                              ? x_goog
                              : NULL,
        .query_key = query_key,
    };
    const char *key;
    size_t key_len;
    if (gw_dialect_key(r->ep.format, &c, &key, &key_len) != 0) {
        s_fail(r, 401, "invalid_request_error", "missing_api_key",
               gw_dialect_no_key_message(r->ep.format));
    } else {
        int status = 0;
        gw_principal_t who;
        int rc =
            gw_auth_check(r->srv->auth, key, key_len, s_on_auth, r, &status, &who, &r->auth_ticket);
        if (rc == 1)
            s_on_auth(r, status, &who);
        else if (rc == 0)
            r->auth_pending = true;
        else
            s_fail(r, 500, "server_error", "internal_error", "cannot check the API key");
    }
    sodium_memzero(auth, sizeof auth);
    sodium_memzero(x_api_key, sizeof x_api_key);
    sodium_memzero(x_goog, sizeof x_goog);
}

typedef struct {
    json_t *arr;
} s_models_t;

static void s_add_model(void *arg, const char *model)
{
    s_models_t *m = arg;
    json_array_append_new(m->arr, json_pack("{s:s, s:s, s:i, s:s}", "id", model, "object",
                                            "model", "created", (json_int_t)0, "owned_by",
                                            "relayhub"));
}

/* GET /v1/models: what connected agents serve now, in OpenAI's list shape. */
static void s_models(gw_req_t *r)
{
    s_models_t m = {json_array()};
    gw_routes_each_model(r->srv->routes, GW_FORMAT_OPENAI, s_add_model, &m);
    json_t *o = json_pack("{s:s, s:o}", "object", "list", "data", m.arr);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    r->answered = true;
    r->status = 200;
    r->hdrs = strdup("content-type: application/json\r\n");
    r->hdrs_len = r->hdrs ? strlen(r->hdrs) : 0;
    if (body) {
        s_out(r, body, strlen(body));
        free(body);
    }
    r->ended = true;
}

static void s_simple(gw_req_t *r, int status, const char *json)
{
    r->answered = true;
    r->status = status;
    r->hdrs = strdup("content-type: application/json\r\n");
    r->hdrs_len = r->hdrs ? strlen(r->hdrs) : 0;
    s_out(r, json, strlen(json));
    r->ended = true;
}

/* Reads the user headers the request's format passes on to the agent. 0, or -1 when one is
 * present but not acceptable (the request is answered). */
static int s_take_forward_headers(gw_req_t *r, struct lws *wsi)
{
    const char *const *names = gw_dialect_forward_headers(r->ep.format);
    for (int i = 0; names[i] && i < GW_FWD_HEADERS_MAX; i++) {
        char n[64];
        int nl = snprintf(n, sizeof n, "%s:", names[i]);
        int len = nl > 0 && (size_t)nl < sizeof n ? lws_hdr_custom_length(wsi, n, nl) : -1;
        if (len <= 0)
            continue; /* absent or empty (or over HTTP/2, where lws 4.1 keeps no such headers) */
        char *v = malloc((size_t)len + 1);
        if (!v || lws_hdr_custom_copy(wsi, v, len + 1, n, nl) < 0 ||
            !gw_dialect_header_value_ok(v, strlen(v))) {
            free(v);
            char msg[160];
            snprintf(msg, sizeof msg, "the %s header is too long or not printable ASCII", names[i]);
            s_fail(r, 400, "invalid_request_error", "invalid_header", msg);
            return -1;
        }
        r->fwd[i] = v;
    }
    return 0;
}

/* Reads the query: what goes on to the agent, alt=sse, and a key= (gemini's), into *q. 0, or
 * -1 when the request was answered (a query too long). */
static int s_take_query(gw_req_t *r, struct lws *wsi, gw_query_t *q)
{
    char buf[4 * GW_QUERY_MAX];
    const char *pieces[64];
    size_t n = 0, used = 0;
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS);
    int rc = total < (int)sizeof buf ? 0 : -ENOSPC;
    /* lws keeps the query decoded, one "name=value" fragment per parameter: the total (with
     * one separator between fragments) fits, so every fragment and its NUL fits too. */
    for (int i = 0; rc == 0 && total > 0; i++) {
        int len = lws_hdr_copy_fragment(wsi, buf + used, (int)(sizeof buf - used),
                                        WSI_TOKEN_HTTP_URI_ARGS, i);
        if (len < 0)
            break;
        if (n == sizeof pieces / sizeof pieces[0]) {
            rc = -ENOSPC;
            break;
        }
        pieces[n++] = buf + used;
        used += (size_t)len + 1;
    }
    if (rc == 0)
        rc = gw_query_parse(&r->ep, pieces, n, q);
    sodium_memzero(buf, sizeof buf); /* a key= was in there */
    if (rc != 0) {
        r->close_after = true; /* the body is not read */
        s_fail(r, 414, "invalid_request_error", "query_too_long", "the query string is too long");
        return -1;
    }
    snprintf(r->query, sizeof r->query, "%s", q->forward);
    r->alt_sse = q->alt_sse;
    return 0;
}

/* The checks of a request to an endpoint before its body comes, and its key check. */
static int s_start_endpoint(gw_req_t *r, struct lws *wsi, bool get, bool post, gw_query_t *q)
{
    gw_server_t *srv = r->srv;
    if (s_take_query(r, wsi, q) != 0)
        return 0;
    if (r->ep.op == GW_OP_MODELS) {
        if (!get) {
            s_fail(r, 405, "invalid_request_error", "method_not_allowed", "use GET");
            return 0;
        }
        s_authenticate(r, wsi, NULL);
        return 0;
    }
    r->proxy = true;
    if (!post) {
        s_fail(r, 405, "invalid_request_error", "method_not_allowed", "use POST");
        return 0;
    }
    /* The body's framing. lws 4.1 does not decode chunked request bodies: refuse them. */
    bool te = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0;
    char cl[64] = "";
    bool has_cl = bus_http_header(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, cl, sizeof cl) == 0;
    r->close_after = true; /* until the body is fully read, the connection cannot be reused */
    if (te && has_cl) {
        s_fail(r, 400, "invalid_request_error", "bad_framing",
               "Content-Length together with Transfer-Encoding");
        return 0;
    }
    if (te) {
        s_fail(r, 411, "invalid_request_error", "length_required",
               "send the body with Content-Length (chunked request bodies are not accepted)");
        return 0;
    }
    if (!has_cl || !*cl || strspn(cl, "0123456789") != strlen(cl) || strlen(cl) > 15) {
        s_fail(r, has_cl ? 400 : 411, "invalid_request_error",
               has_cl ? "bad_content_length" : "length_required",
               has_cl ? "malformed or repeated Content-Length" : "Content-Length is required");
        return 0;
    }
    r->content_length = strtoll(cl, NULL, 10);
    if (r->content_length > srv->cfg->gateway_max_body_bytes) {
        char msg[160];
        snprintf(msg, sizeof msg, "request body of %lld bytes is over the limit of %lld bytes",
                 (long long)r->content_length, (long long)srv->cfg->gateway_max_body_bytes);
        s_fail(r, 413, "invalid_request_error", "request_too_large", msg);
        return 0;
    }
    if (s_take_forward_headers(r, wsi) != 0)
        return 0;
    r->close_after = false;
    jscan_opts_t jo;
    memset(&jo, 0, sizeof jo);
    jo.max_bytes = (uint64_t)srv->cfg->gateway_max_body_bytes;
    r->scan = jscan_new(&jo);
    if (!r->scan)
        return -1;
    s_authenticate(r, wsi, q->has_key ? q->key : NULL);
    if (r->content_length == 0) {
        jscan_finish(r->scan);
        s_fail(r, 400, "invalid_request_error", "invalid_json", "the request body is empty");
    }
    return 0;
}

/* A new request's headers are in (LWS_CALLBACK_HTTP). */
static int s_on_request(gw_server_t *srv, s_pss_t *pss, struct lws *wsi, const char *uri)
{
    gw_req_t *r = calloc(1, sizeof *r);
    if (!r)
        return -1;
    r->srv = srv;
    r->wsi = wsi;
    r->pss = pss;
    pss->r = r;
    r->started_us = plat_mono_us();
    r->h2 = lws_get_network_wsi(wsi) != wsi;
    plat_random(r->req_id, sizeof r->req_id);
    bus_req_id_hex(r->req_id, r->req_hex);
    r->next = srv->reqs;
    if (srv->reqs)
        srv->reqs->prev = r;
    srv->reqs = r;
    bus_metric_inc(srv->m.requests);
    bus_metric_add(srv->m.active, 1);
    /* The path arrives percent-decoded; the query is read apart (never logged, and key= never
     * kept past the key check). */
    int prc = gw_endpoint_parse(uri ? uri : "/", &r->ep);
    bool post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
    bool get = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0;

    if (strcmp(r->ep.path, "/healthz") == 0) {
        s_simple(r, 200, "{\"status\":\"ok\"}\n");
        return 0;
    }
    if (strcmp(r->ep.path, "/readyz") == 0) {
        bool ready = gw_auth_ready(srv->auth) && !srv->stopping;
        s_simple(r, ready ? 200 : 503,
                 ready ? "{\"status\":\"ready\"}\n" : "{\"status\":\"not ready\"}\n");
        return 0;
    }
    if (srv->stopping) {
        r->close_after = true;
        s_fail(r, 503, "server_error", "shutting_down", "the gateway is shutting down");
        return 0;
    }
    if (prc == -EINVAL) {
        r->close_after = true; /* the body is not read */
        s_fail(r, 400, "invalid_request_error", "invalid_model",
               r->ep.format == GW_FORMAT_BEDROCK
                   ? "The provided model identifier is invalid."
                   : "the model named in the path is empty, too long or not printable ASCII");
        return 0;
    }
    if (prc != 0) {
        s_fail(r, 404, "invalid_request_error", "unknown_url", "Unknown request URL");
        return 0;
    }
    gw_query_t q = {0};
    int rc = s_start_endpoint(r, wsi, get, post, &q);
    sodium_memzero(&q, sizeof q);
    return rc;
}

/* A piece of the request body (LWS_CALLBACK_HTTP_BODY). */
static void s_on_body(gw_req_t *r, const uint8_t *in, size_t len)
{
    if (r->answered || !r->scan)
        return;
    r->body_in += (int64_t)len;
    if (jscan_feed(r->scan, in, len) != 0) {
        r->close_after = true;
        s_fail(r, 400, "invalid_request_error", "invalid_json", jscan_error(r->scan)->msg);
        return;
    }
    const jscan_error_t *je = jscan_error(r->scan);
    if (je->code) {
        r->close_after = true;
        s_fail(r, 400, "invalid_request_error", "invalid_request", je->msg);
        return;
    }
    s_seg_t *s = s_seg_new(in, len);
    if (!s) {
        s_fail(r, 500, "server_error", "internal_error", "out of memory");
        return;
    }
    /* Hold back the newest piece: if the end of the body proves it invalid, the agent must
     * never have received a complete body. */
    s_seg_t *prev = r->held;
    r->held = s;
    if (!prev)
        return;
    if (r->stream_open && (r->body_released || r->body_kept + prev->len >
                                                   (size_t)r->srv->cfg->gateway_retry_body_bytes)) {
        /* Large body: stream it through, keep nothing (no retry after this). */
        s_send_body(r, S_SEG_DATA(prev), prev->len);
        free(prev);
        if (!r->body_released) {
            /* The pieces kept so far went out when the stream opened. */
            s_seg_free_all(&r->body, &r->body_tail);
            r->body_kept = 0;
            r->body_released = true;
        }
        return;
    }
    if (r->body_kept > (size_t)r->srv->cfg->gateway_retry_body_bytes && !r->ep.model_in_path &&
        !jscan_result(r->scan)->has_model) {
        r->close_after = true;
        char msg[160];
        snprintf(msg, sizeof msg, "the model parameter must appear within the first %lld bytes",
                 (long long)r->srv->cfg->gateway_retry_body_bytes);
        s_fail(r, 400, "invalid_request_error", "model_too_late", msg);
        free(prev);
        return;
    }
    if (r->body_tail)
        r->body_tail->next = prev;
    else
        r->body = prev;
    r->body_tail = prev;
    r->body_kept += prev->len;
    if (r->stream_open)
        s_send_body(r, S_SEG_DATA(prev), prev->len);
    else
        s_maybe_start(r);
}

/* The whole body arrived (LWS_CALLBACK_HTTP_BODY_COMPLETION). */
static void s_on_body_done(gw_req_t *r)
{
    if (r->answered || !r->scan)
        return;
    if (jscan_finish(r->scan) != 0) {
        s_fail(r, 400, "invalid_request_error", "invalid_request", jscan_error(r->scan)->msg);
        return;
    }
    const jscan_result_t *res = jscan_result(r->scan);
    if (!res->has_model && !r->ep.model_in_path) {
        s_fail(r, 400, "invalid_request_error", "missing_model",
               "you must provide a model parameter");
        return;
    }
    r->body_complete = true;
    if (r->stream_open) {
        if (r->held)
            s_send_body(r, S_SEG_DATA(r->held), r->held->len);
        if (r->body_released) {
            free(r->held);
        } else if (r->held) {
            if (r->body_tail)
                r->body_tail->next = r->held;
            else
                r->body = r->held;
            r->body_tail = r->held;
            r->body_kept += r->held->len;
        }
        r->held = NULL;
        return;
    }
    if (r->held) {
        if (r->body_tail)
            r->body_tail->next = r->held;
        else
            r->body = r->held;
        r->body_tail = r->held;
        r->body_kept += r->held->len;
        r->held = NULL;
    }
    s_maybe_start(r);
}

static int s_http_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    s_pss_t *pss = user;
    gw_server_t *srv = lws_vhost_user(lws_get_vhost(wsi));
    gw_req_t *r = pss ? pss->r : NULL;
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        if (r)
            s_req_free(r);
        return s_on_request(srv, pss, wsi, in);
    case LWS_CALLBACK_HTTP_BODY:
        if (r)
            s_on_body(r, in, len);
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (r)
            s_on_body_done(r);
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (!r)
            return 0;
        if (!r->answered && r->authed && !r->proxy) {
            s_models(r);
        }
        return s_writeable(r, wsi);
    case LWS_CALLBACK_CLOSED_HTTP:
        if (r) {
            if (r->stream_open) {
                bus_metric_inc(srv->m.cancels);
                log_req(LOG_LVL_INFO, "user_gone", r->req_hex, r->agent_id,
                        "the user went away: cancelling");
            }
            r->wsi = NULL;
            s_req_free(r);
        }
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static void s_tick(bus_timer_t *t)
{
    gw_server_t *srv = t->arg;
    gw_routes_expire(srv->routes, plat_mono_us(), S_PRESENCE_MAX_AGE_US);
    bus_metric_set(srv->m.agents, (int64_t)gw_routes_agents(srv->routes));
    bus_metric_set(srv->m.auth_hits, (int64_t)gw_auth_hits(srv->auth));
    bus_metric_set(srv->m.auth_misses, (int64_t)gw_auth_misses(srv->auth));
    if (srv->stopping && ((!srv->reqs && !gw_billing_unacked(srv->billing)) ||
                          plat_mono_us() > srv->stop_deadline_us)) {
        bus_loop_stop(srv->loop);
        return;
    }
    bus_timer_start(srv->loop, &srv->tick, s_tick, srv, srv->stopping ? 50000 : 1000000);
}

static const struct lws_protocols s_protocols[] = {
    {"gateway-http", s_http_cb, sizeof(s_pss_t), 0, 0, NULL, 0}, {NULL, NULL, 0, 0, 0, NULL, 0}};

static void s_register_metrics(gw_server_t *srv)
{
    bus_metrics_t *m = srv->metrics;
    s_metrics_t *x = &srv->m;
    x->requests = bus_metrics_add(m, BUS_COUNTER, "relayhub_gateway_requests_total", NULL,
                                  "HTTP requests received");
    x->active = bus_metrics_add(m, BUS_GAUGE, "relayhub_gateway_requests_active", NULL,
                                "requests in progress");
    x->errors_4xx = bus_metrics_add(m, BUS_COUNTER, "relayhub_errors_total", "class=\"4xx\"",
                                    "requests answered with an error");
    x->errors_5xx = bus_metrics_add(m, BUS_COUNTER, "relayhub_errors_total", "class=\"5xx\"",
                                    "requests answered with an error");
    x->retries = bus_metrics_add(m, BUS_COUNTER, "relayhub_gateway_retries_total", NULL,
                                 "attempts retried on another agent");
    x->cancels = bus_metrics_add(m, BUS_COUNTER, "relayhub_gateway_cancels_total", NULL,
                                 "streams cancelled because the user went away");
    x->bytes_out = bus_metrics_add(m, BUS_COUNTER, "relayhub_gateway_bytes_out_total", NULL,
                                   "response body bytes written to users");
    x->msgs_in = bus_metrics_add(m, BUS_COUNTER, "relayhub_messages_in_total", NULL,
                                 "envelopes received");
    x->msgs_out = bus_metrics_add(m, BUS_COUNTER, "relayhub_messages_out_total", NULL,
                                  "envelopes sent");
    x->agents = bus_metrics_add(m, BUS_GAUGE, "relayhub_gateway_agents", NULL,
                                "agents in the routing table");
    x->auth_hits = bus_metrics_add(m, BUS_COUNTER, "relayhub_gateway_key_cache_hits_total",
                                   NULL, "API key checks answered from the cache");
    x->auth_misses = bus_metrics_add(m, BUS_COUNTER, "relayhub_gateway_key_cache_misses_total",
                                     NULL, "API key checks that went to the database");
}

gw_server_t *gw_server_new(bus_loop_t *loop, const hub_config_t *cfg)
{
    gw_server_t *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    srv->cfg = cfg;
    srv->loop = loop;
    bus_buf_init(&srv->enc, BUS_ENV_MAX_BYTES);
    store_params_t sp;
    char err[256];
    if (hub_config_store_params(cfg, &sp, err, sizeof err) != 0) {
        log_err("config", "%s", err);
        goto fail;
    }
    srv->metrics = bus_metrics_new("hub-gateway");
    srv->routes = gw_routes_new();
    srv->streams = strmap_new();
    srv->auth = gw_auth_new(loop, &sp, cfg->gateway_key_poll_ms, 100000);
    if (!srv->metrics || !srv->routes || !srv->streams || !srv->auth)
        goto fail;
    s_register_metrics(srv);
    void *z = bus_loop_zctx(loop);
    srv->dealer = zmq_socket(z, ZMQ_DEALER);
    srv->sub = zmq_socket(z, ZMQ_SUB);
    if (!srv->dealer || !srv->sub)
        goto fail;
    char ident[128];
    uint32_t rnd;
    plat_random(&rnd, sizeof rnd);
    snprintf(ident, sizeof ident, "%s:%d:%08x", cfg->gateway_name, (int)getpid(), rnd);
    int zero = 0, hwm = 100000;
    zmq_setsockopt(srv->dealer, ZMQ_ROUTING_ID, ident, strlen(ident));
    zmq_setsockopt(srv->dealer, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(srv->dealer, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(srv->dealer, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(srv->sub, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(srv->sub, ZMQ_SUBSCRIBE, "", 0);
    /* connect, not bind: a tunnel that is not up yet is waited for. */
    if (zmq_connect(srv->dealer, cfg->tunnel_router) != 0 ||
        zmq_connect(srv->sub, cfg->tunnel_presence) != 0) {
        log_err("bus_connect_failed", "cannot connect to the tunnel: %s", zmq_strerror(errno));
        goto fail;
    }
    srv->billing = gw_billing_new(loop, cfg, ident, NULL, srv->metrics);
    if (!srv->billing)
        goto fail;
    char mon[64];
    snprintf(mon, sizeof mon, "inproc://gateway-monitor-%p", (void *)srv);
    if (zmq_socket_monitor(srv->dealer, mon, ZMQ_EVENT_DISCONNECTED) != 0 ||
        !(srv->monitor = zmq_socket(z, ZMQ_PAIR)) || zmq_connect(srv->monitor, mon) != 0) {
        log_err("bus_monitor_failed", "cannot watch the tunnel connection: %s",
                zmq_strerror(errno));
        goto fail;
    }
    zmq_setsockopt(srv->monitor, ZMQ_LINGER, &zero, sizeof zero);
    srv->monitor_watch = bus_zwatch_new(loop, srv->monitor, s_on_monitor, srv);
    if (!srv->monitor_watch)
        goto fail;
    srv->dealer_watch = bus_zwatch_new(loop, srv->dealer, s_on_dealer, srv);
    srv->sub_watch = bus_zwatch_new(loop, srv->sub, s_on_presence, srv);
    if (!srv->dealer_watch || !srv->sub_watch)
        goto fail;
    int terr = 0;
    srv->tap = bus_tap_new(loop, cfg->gateway_tap, "hub-gateway", &terr);
    if (terr)
        goto fail;
    const char *cert = cfg->gateway_cert[0] ? cfg->gateway_cert : NULL;
    const char *key = cfg->gateway_key[0] ? cfg->gateway_key : NULL;
    /* HTTP/2 on a TLS listener unless gateway.http2 = false (libwebsockets 4.1 keeps no
     * unknown header over HTTP/2: x-api-key, x-goog-api-key and anthropic-version need
     * HTTP/1.1). */
    srv->vh = bus_loop_listen(loop, "gateway", cfg->gateway_listen, s_protocols, cert, key,
                              cfg->gateway_http2 ? "h2,http/1.1" : "http/1.1", srv);
    if (!srv->vh)
        goto fail;
    if (bus_metrics_serve(srv->metrics, loop, cfg->gateway_metrics_listen) != 0)
        goto fail;
    bus_timer_start(loop, &srv->tick, s_tick, srv, 1000000);
    log_info("started", "hub-gateway %s on %s://%s (bus identity %s)", cfg->gateway_name,
             cert ? "https" : "http", cfg->gateway_listen, ident);
    return srv;
fail:
    gw_server_destroy(&srv);
    return NULL;
}

void gw_server_destroy(gw_server_t **p)
{
    if (!p || !*p)
        return;
    gw_server_t *srv = *p;
    while (srv->reqs)
        s_req_free(srv->reqs);
    gw_billing_destroy(&srv->billing);
    bus_timer_cancel(srv->loop, &srv->tick);
    bus_tap_destroy(&srv->tap);
    bus_zwatch_destroy(&srv->dealer_watch);
    bus_zwatch_destroy(&srv->sub_watch);
    bus_zwatch_destroy(&srv->monitor_watch);
    if (srv->dealer)
        zmq_socket_monitor(srv->dealer, NULL, 0);
    if (srv->monitor)
        zmq_close(srv->monitor);
    if (srv->dealer)
        zmq_close(srv->dealer);
    if (srv->sub)
        zmq_close(srv->sub);
    gw_auth_destroy(&srv->auth);
    strmap_destroy(&srv->streams);
    gw_routes_destroy(&srv->routes);
    bus_metrics_destroy(&srv->metrics);
    bus_buf_free(&srv->enc);
    free(srv);
    *p = NULL;
}

void gw_server_shutdown(void *arg, int signo)
{
    gw_server_t *srv = arg;
    (void)signo;
    srv->stopping = true;
    srv->stop_deadline_us = plat_mono_us() + 10000000;
    log_info("shutdown", "refusing new requests; %s in flight", srv->reqs ? "some" : "none");
    bus_timer_start(srv->loop, &srv->tick, s_tick, srv, 0);
}
