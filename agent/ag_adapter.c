/* ag_adapter: the agent-adapter worker (vendor calls with libcurl multi in the bus_loop). */
#include "ag_adapter.h"
#include "ag_bodyrw.h"
#include "ag_curl.h"
#include "ag_gtoken.h"
#include "ag_map.h"
#include "ag_proto.h"
#include "bus_env.h"
#include "bus_log.h"
#include "bus_plat.h"
#include "usage.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define S_HWM 100000               /* messages queued towards the supervisor, at most */
#define S_MAX_RESP_HEADERS 128     /* headers kept for resp.head (the KVLIST maximum) */
#define S_MAX_RESP_HEADER_BYTES (64 * 1024) /* their bytes */
#define S_MAX_REQ_HEADERS 100      /* headers forwarded to the vendor */
#define S_SNIFF_MAX (4u * 1024 * 1024) /* bytes of one event (or a whole body) the sniffer reads */
#define S_RETRY_BASE_MS 250        /* first retry ceiling; doubles up to 32 times this */

typedef struct s_xfer s_xfer_t;

struct ag_adapter {
    bus_loop_t *loop;            /* borrowed */
    const ag_config_t *cfg;      /* borrowed */
    const ag_instances_t *set;   /* borrowed */
    int slot;                    /* which worker */
    void *sock;                  /* DEALER to the supervisor */
    bus_zwatch_t *watch;         /* its watch */
    ag_curl_t *curl;             /* the multi handle in the loop */
    ag_map_t *xfers;             /* sid -> s_xfer_t */
    s_xfer_t *head;              /* every transfer (for shutdown) */
    struct curl_slist *connect_to; /* test-only CURLOPT_CONNECT_TO list */
    char *capath;                /* the system CA directory kept beside upstream.ca_file */
    ag_gtoken_t **gtokens;       /* per instance (set order): Vertex access tokens, or NULL */
    bus_buf_t enc;               /* scratch encoder */
    bool stopping;               /* shutting down */
};

struct s_xfer {
    ag_adapter_t *a;             /* owner */
    uint64_t sid;                /* the supervisor's stream number */
    uint8_t req_id[BUS_REQ_ID_LEN]; /* the stream */
    char hex[33];                /* req_id for logs */
    const ag_instance_t *inst;   /* the instance serving it (this try's) */
    const ag_instance_t *alts[4]; /* others a failed try may move to (agent run's choice) */
    int n_alts, next_alt;        /* their count, the next one to use */
    const char *up;              /* the vendor's model name (the same on every alternate) */
    ag_path_t path;              /* the request as parsed (format, operation, model) */
    ag_op_t op;                  /* what it does (path.op) */
    char fmt[33];                /* the user's API format: errors made here come in its shape */
    char *url;                   /* the vendor URL (malloc'd: streams stay small) */
    char ctype[128];             /* the request's content-type (signed for Bedrock) */
    CURL *easy;                  /* the transfer */
    struct curl_slist *hdrs;     /* request headers (one holds the key: wiped on free) */
    struct curl_slist *try_hdrs; /* hdrs plus this try's signature or token (wiped on free) */
    bool added;                  /* in the multi */
    /* retries (only before the first byte went to the hub) */
    int tries;                   /* vendor calls started */
    uint64_t first_try_us;       /* when the first began (monotonic) */
    bus_timer_t retry_timer;     /* the wait before the next try */
    bool retry_wait;             /* the timer runs */
    bool discard;                /* this try's answer is being retried: its body is dropped */
    int64_t retry_after_ms;      /* the vendor's Retry-After / retry-after-ms, -1 if none */
    int64_t retry_delay_ms;      /* the wait chosen for the next try */
    bool auth_retried;           /* a 401 already led to a fresh token (Vertex) */
    bool auth_try;               /* the next try is the one after a refused token */
    ag_gtoken_waiter_t waiter;   /* queued for a Vertex token refresh */
    bool token_wait;             /* ... and waiting */
    uint64_t token_gen;          /* the generation of the token this try sent */
    char start_err[200];         /* why a try could not start (for the user) */
    char retry_why[96];          /* why the last try failed (logs) */
    bool keep_body;              /* the whole body stays in `body` so a try can send it again */
    bool buffered;               /* the instance needs the whole body first (Bedrock) */
    char errbuf[CURL_ERROR_SIZE]; /* curl's detail on failure */
    /* request body */
    int64_t body_size;           /* bytes announced by req.open */
    int64_t body_in;             /* bytes received so far */
    bool rw_active;              /* edits on (ag_bodyrw) */
    ag_bodyrw_t rw;              /* the editor */
    char rename[AG_MODEL_MAX + 1]; /* upstream model name written into the body */
    bus_buf_t body;              /* bytes waiting for curl's read callback */
    size_t body_off;             /* first of them not yet read */
    int64_t upload_size;         /* Content-Length sent to the vendor; -1 until known */
    int64_t upload_sent;         /* bytes read by curl */
    size_t upload_credit;        /* read by curl since the last credit sent to the gateway */
    int64_t credit_hwm;          /* upload bytes already credited (a retry reads them again) */
    bool send_paused;            /* upload paused for want of body bytes */
    /* response */
    uint64_t credit;             /* response bytes the gateway can take now */
    bool recv_paused;            /* download paused for want of credit */
    long status;                 /* status of the last header block */
    bool head_sent;              /* resp.head went out */
    bus_buf_t rh;                /* kept response headers: name\0value\0 ... */
    size_t n_rh;                 /* their count */
    bool failed;                 /* a local failure ended it (nothing more to send) */
    bool sse;                    /* the response is an SSE stream (its content-type) */
    bool stream_by_path;         /* the operation streams (Gemini alt=sse, Bedrock streams) */
    usage_sniffer_t *usage;      /* reads the vendor's usage from the relayed bytes */
    s_xfer_t *prev, *next;       /* the adapter's list */
};

static bool s_token_based(const s_xfer_t *x);
static void s_token_invalidate(s_xfer_t *x);
static int s_try_start(s_xfer_t *x);
static int s_token_get(s_xfer_t *x, char *line, size_t cap);
static void s_on_retry_timer(bus_timer_t *t);

/* ---- sending to the supervisor ---------------------------------------------------------- */

/* Sends [sid][envelope] to the supervisor. 0 or a negative errno. */
static int s_send_sid(ag_adapter_t *a, uint64_t sid, const bus_env_t *env)
{
    bus_buf_reset(&a->enc);
    int rc = bus_env_encode(env, &a->enc);
    if (rc != 0) {
        log_err("encode_failed", "cannot encode %s: %s", bus_type_name(env->type),
                strerror(-rc));
        return rc;
    }
    uint8_t sb[AG_SID_LEN];
    ag_sid_put(sb, sid);
    if (zmq_send(a->sock, sb, sizeof sb, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(a->sock, a->enc.data, a->enc.len, ZMQ_DONTWAIT) < 0) {
        rc = -errno;
        log_warn("send_failed", "to the supervisor: %s", zmq_strerror(-rc));
        return rc;
    }
    bus_zwatch_poke(a->watch);
    return 0;
}

/* ag_send_fn for one transfer. */
static int s_xfer_send(void *arg, const bus_env_t *env)
{
    s_xfer_t *x = arg;
    return s_send_sid(x->a, x->sid, env);
}

/* ---- transfer lifetime -------------------------------------------------------------------- */

/* Frees a header list whose lines may hold a secret. */
static void s_slist_wipe_free(struct curl_slist **l)
{
    for (struct curl_slist *i = *l; i; i = i->next)
        sodium_memzero(i->data, strlen(i->data));
    curl_slist_free_all(*l);
    *l = NULL;
}

/* Frees a transfer: out of the multi at once (the vendor sees the connection or stream close),
 * headers wiped. */
static void s_xfer_free(s_xfer_t *x)
{
    ag_adapter_t *a = x->a;
    uint8_t key[AG_MAP_KEY];
    ag_map_sid_key(x->sid, key);
    if (ag_map_get(a->xfers, key) == x)
        ag_map_del(a->xfers, key);
    if (x->prev)
        x->prev->next = x->next;
    else if (a->head == x)
        a->head = x->next;
    if (x->next)
        x->next->prev = x->prev;
    if (x->retry_wait)
        bus_timer_cancel(a->loop, &x->retry_timer);
    if (x->token_wait)
        ag_gtoken_cancel(&x->waiter);
    if (x->easy) {
        if (x->added)
            ag_curl_remove(a->curl, x->easy);
        curl_easy_cleanup(x->easy);
    }
    s_slist_wipe_free(&x->hdrs);
    s_slist_wipe_free(&x->try_hdrs);
    free(x->url);
    bus_buf_free(&x->body);
    bus_buf_free(&x->rh);
    usage_destroy(&x->usage);
    free(x);
}

/* Ends a transfer that never reached the vendor (or must not go on) with a local error. */
static void s_fail(s_xfer_t *x, int status, const char *code, const char *msg)
{
    log_req(LOG_LVL_INFO, "request_refused", x->hex, NULL, "%d %s: %s", status, code, msg);
    if (!x->failed) {
        if (x->head_sent)
            ag_reply_end_error(s_xfer_send, x, x->req_id, msg);
        else
            ag_reply_error(s_xfer_send, x, x->req_id, x->fmt, status,
                           status >= 500 ? "api_error" : "invalid_request_error", code, msg, msg);
    }
    s_xfer_free(x);
}

/* A try could not start: the reason found (start_err), else fallback. */
static void s_fail_start(s_xfer_t *x, const char *fallback)
{
    s_fail(x, 502, "upstream_error", x->start_err[0] ? x->start_err : fallback);
}

/* ---- response: headers, body, end --------------------------------------------------------- */

/* Sends resp.head with the kept headers. 0 or a negative errno. */
static int s_send_head(s_xfer_t *x)
{
    if (x->head_sent)
        return 0;
    x->head_sent = true;
    if (x->status < 100 || x->status > 999)
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
    bus_str_t kv[2 * S_MAX_RESP_HEADERS];
    size_t n = 0;
    const char *p = (const char *)x->rh.data;
    const char *end = p + x->rh.len;
    while (p && p < end && n < x->n_rh) {
        size_t nl = strlen(p);
        const char *v = p + nl + 1;
        size_t vl = strlen(v);
        kv[2 * n] = (bus_str_t){p, nl};
        kv[2 * n + 1] = (bus_str_t){v, vl};
        n++;
        p = v + vl + 1;
    }
    bus_buf_t scratch;
    bus_buf_init(&scratch, S_MAX_RESP_HEADER_BYTES * 2);
    bus_env_t e;
    bus_env_init(&e, BUS_T_RESP_HEAD, x->req_id);
    e.u.resp_head.status = (uint64_t)(x->status > 0 ? x->status : 502);
    int rc = bus_list_encode_kvs(&scratch, kv, n, &e.u.resp_head.headers);
    if (rc == 0)
        rc = s_xfer_send(x, &e);
    bus_buf_free(&scratch);
    /* The sniffer reads the same answer the gateway relays (its headers first: Bedrock's
     * invoke has its token counts there). Operations that are not billed have none. */
    int fmt = ag_op_usage(&x->path, &x->stream_by_path);
    if (x->status >= 200 && x->status < 300 && fmt >= 0)
        x->usage = usage_new((usage_format_t)fmt, x->sse || x->stream_by_path, S_SNIFF_MAX);
    for (size_t i = 0; x->usage && i < n; i++)
        usage_header(x->usage, kv[2 * i].p, kv[2 * i].len, kv[2 * i + 1].p, kv[2 * i + 1].len);
    bus_buf_free(&x->rh);
    x->n_rh = 0;
    return rc;
}

/* ---- Vertex access tokens (ag_gtoken) ------------------------------------------------------- */

static bool s_token_based(const s_xfer_t *x)
{
    return x->inst->vendor == AG_VENDOR_VERTEX;
}

/* The refresher of the instance at index i, loaded at first use; NULL (logged) if its
 * service-account file cannot be used. */
static ag_gtoken_t *s_gtoken_at(ag_adapter_t *a, size_t i, char *err, size_t errlen)
{
    if (a->gtokens[i])
        return a->gtokens[i];
    const ag_instance_t *in = &a->set->v[i];
    int rc = ag_gtoken_load(in->service_account_file, &a->gtokens[i], err, errlen);
    if (rc != 0) {
        log_err("service_account_bad", "instance %s: %s", in->name, err);
        return NULL;
    }
    const char *warn = ag_gtoken_warning(a->gtokens[i]);
    if (warn)
        log_warn("service_account_mode", "instance %s: %s", in->name, warn);
    log_info("service_account_loaded", "instance %s: %s", in->name,
             ag_gtoken_client_email(a->gtokens[i]));
    return a->gtokens[i];
}

/* Starts a token refresh if one is due (ahead of expiry, or no token): one in flight at most. */
static void s_token_refresh(ag_adapter_t *a, ag_gtoken_t *g, uint64_t now)
{
    CURL *easy = NULL;
    if (!ag_gtoken_refresh_due(g, now) || ag_gtoken_begin(g, now, time(NULL), &easy) != 0)
        return;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL); /* s_on_done: not a stream */
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long)a->cfg->connect_timeout_ms);
    if (a->connect_to)
        curl_easy_setopt(easy, CURLOPT_CONNECT_TO, a->connect_to);
    if (a->cfg->ca_file && a->cfg->ca_file[0]) {
        curl_easy_setopt(easy, CURLOPT_CAINFO, a->cfg->ca_file);
        if (a->capath)
            curl_easy_setopt(easy, CURLOPT_CAPATH, a->capath);
    }
    log_info("token_refresh", "fetching a Vertex access token for %s",
             ag_gtoken_client_email(g));
    if (ag_curl_add(a->curl, easy) != 0)
        ag_gtoken_finish(g, easy, CURLE_FAILED_INIT, 0, now);
}

/* A refresh transfer finished (s_on_done for a handle that is no stream). */
static void s_token_done(ag_adapter_t *a, CURL *easy, CURLcode result)
{
    for (size_t i = 0; i < a->set->n; i++) {
        ag_gtoken_t *g = a->gtokens[i];
        if (!g || ag_gtoken_inflight(g) != easy)
            continue;
        long status = 0;
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        ag_curl_remove(a->curl, easy);
        /* finish wakes the waiting requests: they start or fail. */
        if (ag_gtoken_finish(g, easy, result, status, plat_mono_us()) == 0)
            log_info("token_refreshed", "Vertex access token for %s renewed",
                     ag_gtoken_client_email(g));
        else
            log_warn("token_refresh_failed", "instance %s: %s", a->set->v[i].name,
                     ag_gtoken_error(g));
        return;
    }
}

/* A refresh this request waited for ended. */
static void s_on_token(ag_gtoken_waiter_t *w, int rc, void *arg)
{
    (void)w;
    s_xfer_t *x = arg;
    x->token_wait = false;
    if (rc == 0 && s_try_start(x) == 0)
        return;
    s_fail(x, 502, "upstream_error", x->start_err[0] ? x->start_err
                                                      : "cannot get a Vertex access token");
}

/* This try's access token as its "Authorization: Bearer" line (cap bytes; wipe it after use):
 * 1, 0 when the request waits for a refresh (it starts when that ends), or a negative errno
 * with start_err set. */
static int s_token_get(s_xfer_t *x, char *line, size_t cap)
{
    ag_adapter_t *a = x->a;
    char err[256] = "";
    ag_gtoken_t *g = s_gtoken_at(a, (size_t)(x->inst - a->set->v), err, sizeof err);
    if (!g) {
        snprintf(x->start_err, sizeof x->start_err, "the provider's Vertex service account "
                 "cannot be used (see the agent's log)");
        return -EACCES;
    }
    uint64_t now = plat_mono_us();
    s_token_refresh(a, g, now);
    switch (ag_gtoken_state(g, now)) {
    case AG_GTOKEN_READY:
        return ag_gtoken_auth_header(g, now, line, cap, &x->token_gen) == 0 ? 1 : -EAGAIN;
    case AG_GTOKEN_WAIT:
        if (ag_gtoken_wait(g, &x->waiter, s_on_token, x) != 0)
            break;
        x->token_wait = true;
        return 0;
    case AG_GTOKEN_FAILED:
        break;
    }
    snprintf(x->start_err, sizeof x->start_err, "cannot get a Vertex access token: %.150s",
             ag_gtoken_error(g));
    return -EACCES;
}

/* The vendor took this try's token. */
static void s_token_accepted(s_xfer_t *x)
{
    ag_gtoken_t *g = x->a->gtokens[x->inst - x->a->set->v];
    if (g)
        ag_gtoken_accepted(g, x->token_gen);
}

/* The vendor refused this try's token (401): a refresh becomes due. */
static void s_token_invalidate(s_xfer_t *x)
{
    ag_gtoken_t *g = x->a->gtokens[x->inst - x->a->set->v];
    if (g)
        ag_gtoken_invalidate(g, x->token_gen, plat_mono_us());
}

/* ---- retries ------------------------------------------------------------------------------ */

/* Reads Retry-After (seconds or an HTTP date) and retry-after-ms (OpenAI, Anthropic) from a
 * vendor header: the least wait the vendor asks for. */
static void s_note_retry_after(s_xfer_t *x, const char *name, size_t nl, const char *v, size_t vl)
{
    char val[64];
    if (vl == 0 || vl >= sizeof val)
        return;
    memcpy(val, v, vl);
    val[vl] = '\0';
    char *end = NULL;
    if (nl == 14 && strncasecmp(name, "retry-after-ms", 14) == 0) {
        double ms = strtod(val, &end);
        if (end && *end == '\0' && ms >= 0 && ms < 86400e3)
            x->retry_after_ms = (int64_t)ms;
    } else if (nl == 11 && strncasecmp(name, "retry-after", 11) == 0 && x->retry_after_ms < 0) {
        long long sec = strtoll(val, &end, 10);
        if (end && *end == '\0' && sec >= 0 && sec < 86400) {
            x->retry_after_ms = sec * 1000;
        } else {
            time_t when = curl_getdate(val, NULL);
            time_t now = time(NULL);
            if (when > 0)
                x->retry_after_ms = when > now ? (int64_t)(when - now) * 1000 : 0;
        }
    }
}

/* A status worth another try: rate limited (429), a server error (5xx; Anthropic's overload
 * is 529). */
static bool s_status_retryable(long status)
{
    return status == 429 || (status >= 500 && status <= 599);
}

/* A transfer error worth another try: the connection failed, or broke before an answer. */
static bool s_curl_retryable(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return true;
    default:
        return false;
    }
}

/* The wait before the next try: exponential (250 ms doubling to 8 s) with jitter over its upper
 * half, and never less than what the vendor asked for. */
static int64_t s_retry_delay(const s_xfer_t *x)
{
    int shift = x->tries > 1 ? x->tries - 1 : 0;
    int64_t ceiling = (int64_t)S_RETRY_BASE_MS << (shift < 5 ? shift : 5);
    int64_t delay = ceiling / 2 + (int64_t)randombytes_uniform((uint32_t)(ceiling / 2) + 1);
    return x->retry_after_ms > delay ? x->retry_after_ms : delay;
}

/* The wait before the next try: none when another instance is left to try. */
static int64_t s_next_delay(const s_xfer_t *x)
{
    return x->next_alt < x->n_alts ? 0 : s_retry_delay(x);
}

/* True when one more try may start after delay_ms: nothing reached the hub yet, tries and the
 * time budget are left, and the body can be sent again. auth: the one try after a 401 that
 * refreshed the token, outside the count. */
static bool s_may_retry(const s_xfer_t *x, int64_t delay_ms, bool auth)
{
    const ag_config_t *cfg = x->a->cfg;
    if (x->failed || x->head_sent || x->a->stopping)
        return false;
    if (!auth && x->tries > cfg->vendor_retries)
        return false;
    if (!x->keep_body && x->body_size > 0)
        return false; /* part of the body is gone: it cannot be sent again */
    int64_t spent_ms = (int64_t)((plat_mono_us() - x->first_try_us) / 1000);
    return spent_ms + delay_ms <= cfg->vendor_retry_max_ms;
}

/* At the end of the final header block: is this answer one to try again? Then its body is
 * dropped and the next try starts when the transfer is done. */
static void s_decide_retry(s_xfer_t *x)
{
    if (s_token_based(x) && x->status != 401)
        s_token_accepted(x);
    if (s_status_retryable(x->status)) {
        int64_t delay = s_next_delay(x);
        if (!s_may_retry(x, delay, false))
            return; /* the user gets this answer as it is */
        x->discard = true;
        x->retry_delay_ms = delay;
        snprintf(x->retry_why, sizeof x->retry_why, "the vendor answered %ld", x->status);
    } else if (x->status == 401 && s_token_based(x) && !x->auth_retried &&
               s_may_retry(x, 0, true)) {
        /* An access token the vendor no longer takes: fetch a new one and try once more. */
        x->discard = true;
        x->auth_retried = true;
        x->auth_try = true;
        x->retry_delay_ms = 0;
        s_token_invalidate(x);
        snprintf(x->retry_why, sizeof x->retry_why, "the vendor refused the access token (401)");
    }
}

/* CURLOPT_HEADERFUNCTION: status lines, kept headers, and the end of the final block. */
static size_t s_on_header(char *buf, size_t size, size_t nitems, void *userp)
{
    s_xfer_t *x = userp;
    size_t n = size * nitems;
    size_t len = n;
    while (len && (buf[len - 1] == '\r' || buf[len - 1] == '\n'))
        len--;
    if (x->head_sent)
        return n; /* trailers: not relayed */
    if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        /* A new block (1xx blocks come before the final one): start over. */
        const char *sp = memchr(buf, ' ', len);
        x->status = 0;
        if (sp && (size_t)(sp - buf) + 4 <= len) {
            long st = 0;
            for (int i = 1; i <= 3; i++) {
                char ch = sp[i];
                if (ch < '0' || ch > '9') {
                    st = 0;
                    break;
                }
                st = st * 10 + (ch - '0');
            }
            x->status = st;
        }
        bus_buf_reset(&x->rh);
        x->n_rh = 0;
        return n;
    }
    if (len == 0) {
        /* The final header block: resp.head waits for the first body byte (a 200 with no
         * body is a failure to retry), unless this answer is one to try again. */
        if (x->status >= 200)
            s_decide_retry(x);
        return n;
    }
    const char *colon = memchr(buf, ':', len);
    if (!colon)
        return n;
    size_t nl = (size_t)(colon - buf);
    const char *v = colon + 1;
    size_t vl = len - nl - 1;
    while (vl && (*v == ' ' || *v == '\t')) {
        v++;
        vl--;
    }
    while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        vl--;
    s_note_retry_after(x, buf, nl, v, vl);
    if (!ag_hdr_from_vendor(buf, nl) || x->n_rh >= S_MAX_RESP_HEADERS ||
        nl > BUS_LIST_ELEM_MAX || vl > BUS_LIST_ELEM_MAX || memchr(v, '\0', vl))
        return n;
    /* Header names go lower-case (HTTP/2 style) so the gateway compares them plainly. */
    char name[256];
    if (nl >= sizeof name)
        return n;
    for (size_t i = 0; i < nl; i++)
        name[i] = (char)((buf[i] >= 'A' && buf[i] <= 'Z') ? buf[i] + 32 : buf[i]);
    name[nl] = '\0';
    if (nl == 12 && memcmp(name, "content-type", 12) == 0 && vl >= 17 &&
        strncasecmp(v, "text/event-stream", 17) == 0)
        x->sse = true;
    if (bus_buf_append(&x->rh, name, nl + 1) != 0)
        return n; /* over the byte limit: the rest is dropped */
    if (bus_buf_append(&x->rh, v, vl) != 0 || bus_buf_append(&x->rh, "", 1) != 0) {
        x->rh.len -= nl + 1;
        return n;
    }
    x->n_rh++;
    return n;
}

/* CURLOPT_WRITEFUNCTION: one resp.chunk per call, within the credit window. */
static size_t s_on_write(char *ptr, size_t size, size_t nmemb, void *userp)
{
    s_xfer_t *x = userp;
    size_t n = size * nmemb;
    if (x->failed)
        return 0;
    if (x->discard)
        return n; /* the answer of a try that will be made again: nobody reads it */
    if (!x->head_sent && s_send_head(x) != 0) {
        x->failed = true;
        return 0;
    }
    if (n > x->credit) {
        /* curl keeps these bytes and offers them again after curl_easy_pause(). */
        x->recv_paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    bus_env_t e;
    bus_env_init(&e, BUS_T_RESP_CHUNK, x->req_id);
    e.u.resp_chunk.data = (bus_bin_t){(const uint8_t *)ptr, n};
    if (s_xfer_send(x, &e) != 0) {
        x->failed = true;
        return 0;
    }
    x->credit -= n;
    if (x->usage)
        usage_feed(x->usage, (const uint8_t *)ptr, n); /* informational errors only */
    return n;
}

/* CURLOPT_READFUNCTION: hands curl the queued body bytes; pauses when none are queued. */
static size_t s_on_read(char *buf, size_t size, size_t nitems, void *userp)
{
    s_xfer_t *x = userp;
    size_t room = size * nitems;
    size_t avail = x->body.len - x->body_off;
    if (avail) {
        size_t n = avail < room ? avail : room;
        memcpy(buf, x->body.data + x->body_off, n);
        x->body_off += n;
        x->upload_sent += (int64_t)n;
        /* Flow control of the upload: the gateway sends the body only as far as we grant,
         * so neither the tunnel nor this worker queues a large body. A retry reads bytes
         * that were credited already; a buffered body was credited as it came. */
        if (x->upload_sent > x->credit_hwm && !x->buffered) {
            x->upload_credit += (size_t)(x->upload_sent - x->credit_hwm);
            x->credit_hwm = x->upload_sent;
        }
        if (x->upload_credit > 0 &&
            (x->upload_credit >= 64 * 1024 || x->upload_sent >= x->upload_size)) {
            bus_env_t e;
            bus_env_init(&e, BUS_T_CREDIT, x->req_id);
            e.u.credit.bytes = x->upload_credit;
            if (s_xfer_send(x, &e) == 0)
                x->upload_credit = 0;
        }
        if (x->body_off == x->body.len && !x->keep_body) {
            bus_buf_reset(&x->body);
            x->body_off = 0;
        }
        return n;
    }
    if (x->upload_sent >= x->upload_size)
        return 0;
    x->send_paused = true;
    return CURL_READFUNC_PAUSE;
}

/* Applies the pause state (both directions) after one of them changed. */
static void s_repause(s_xfer_t *x)
{
    int mask = (x->recv_paused ? CURLPAUSE_RECV : 0) | (x->send_paused ? CURLPAUSE_SEND : 0);
    curl_easy_pause(x->easy, mask);
    ag_curl_kick(x->a->curl);
}

/* Sends the stream's resp.end with the figures it is billed on (lib/usage's usage_bill, the
 * rule the gateway applies to the same bytes): always, even after a cancel, so that `agent
 * run` can write the usage record before the hub hears the end (DESIGN §4). */
static void s_send_end(s_xfer_t *x, const char *error)
{
    bus_env_t e;
    bus_env_init(&e, BUS_T_RESP_END, x->req_id);
    const usage_t *u = NULL;
    if (x->usage) {
        usage_finish(x->usage);
        u = usage_get(x->usage);
    }
    /* A stream that stopped without its final event (message_stop, [DONE], the metadata
     * event...) is cut short, even when the connection closed cleanly. */
    if (!error && u && (x->sse || x->stream_by_path) && !u->done) {
        error = "the vendor's stream ended without its final event";
        log_req(LOG_LVL_WARN, "stream_incomplete", x->hex, NULL, "%s (instance %s)", error,
                x->inst->name);
    }
    usage_bill_t bill;
    usage_bill(u, x->head_sent ? (int)x->status : 0, x->body_size, &bill);
    e.u.resp_end.input_tokens = (uint64_t)bill.input_tokens;
    e.u.resp_end.cached_tokens = (uint64_t)bill.cached_tokens;
    e.u.resp_end.output_tokens = (uint64_t)bill.output_tokens;
    e.u.resp_end.estimated = bill.estimated;
    e.u.resp_end.complete = u && u->done && !error;
    if (error)
        e.u.resp_end.error = bus_str_c(error);
    s_xfer_send(x, &e);
}

/* Moves the next try to the next alternate instance (another key, resource or region serving
 * the same model); agent run moves the stream's in-flight count with it (instance.switch). No
 * wait is owed to another instance. false when none is left. */
static bool s_switch_instance(s_xfer_t *x)
{
    while (x->next_alt < x->n_alts) {
        const ag_instance_t *to = x->alts[x->next_alt++];
        char url[AG_URL_MAX];
        char *copy;
        if ((x->buffered && x->body_size > to->max_body_bytes) ||
            ag_url_build(to, &x->path, x->up, url, sizeof url) != 0 || !(copy = strdup(url)))
            continue;
        free(x->url);
        x->url = copy;
        curl_easy_setopt(x->easy, CURLOPT_URL, x->url);
        bus_env_t e;
        bus_env_init(&e, BUS_T_INSTANCE_SWITCH, x->req_id);
        e.u.instance_switch.instance = bus_str_c(to->name);
        e.u.instance_switch.reason = bus_str_c(x->retry_why);
        s_xfer_send(x, &e);
        log_req(LOG_LVL_INFO, "instance_switch", x->hex, NULL, "%s -> %s: %s", x->inst->name,
                to->name, x->retry_why);
        x->inst = to;
        x->retry_delay_ms = 0;
        return true;
    }
    return false;
}

/* Takes the transfer out of curl and starts the next try after x->retry_delay_ms (on the next
 * alternate instance, if one is left, unless this is the try after a refused token). */
static void s_retry(s_xfer_t *x)
{
    ag_adapter_t *a = x->a;
    if (!x->auth_try)
        s_switch_instance(x);
    x->auth_try = false;
    log_req(LOG_LVL_INFO, "vendor_retry", x->hex, NULL,
            "try %d failed: %s; trying again in %lld ms (instance %s)", x->tries, x->retry_why,
            (long long)x->retry_delay_ms, x->inst->name);
    if (x->added) {
        ag_curl_remove(a->curl, x->easy);
        x->added = false;
    }
    usage_destroy(&x->usage);
    x->retry_wait = true;
    bus_timer_start(a->loop, &x->retry_timer, s_on_retry_timer, x, x->retry_delay_ms * 1000);
}

/* A transfer finished in curl. */
static void s_on_done(void *arg, CURL *easy, CURLcode result)
{
    s_xfer_t *x = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
    if (!x) {
        s_token_done(arg, easy, result);
        return;
    }
    if (x->failed) {
        log_req(LOG_LVL_WARN, "stream_failed", x->hex, NULL, "could not relay to the supervisor");
        s_xfer_free(x);
        return;
    }
    if (x->discard) {
        s_retry(x); /* decided when its headers came */
        return;
    }
    if (result == CURLE_OK) {
        if (!x->head_sent && x->status >= 200 && x->status < 300) {
            /* Google has been seen to answer 200 with nothing at all: not a success. */
            snprintf(x->retry_why, sizeof x->retry_why,
                     "the vendor answered %ld with an empty body", x->status);
            x->retry_delay_ms = s_next_delay(x);
            if (s_may_retry(x, x->retry_delay_ms, false))
                s_retry(x);
            else
                s_fail(x, 502, "upstream_error", x->retry_why);
            return;
        }
        if (!x->head_sent)
            s_send_head(x);
        s_send_end(x, NULL);
        log_req(LOG_LVL_DEBUG, "stream_done", x->hex, NULL, "status %ld", x->status);
        s_xfer_free(x);
        return;
    }
    char msg[CURL_ERROR_SIZE + 96];
    snprintf(msg, sizeof msg, "vendor call failed: %s%s%s", curl_easy_strerror(result),
             x->errbuf[0] ? ": " : "", x->errbuf);
    if (!x->head_sent && s_curl_retryable(result)) {
        snprintf(x->retry_why, sizeof x->retry_why, "%.95s", msg);
        x->retry_delay_ms = s_next_delay(x);
        if (s_may_retry(x, x->retry_delay_ms, false)) {
            s_retry(x);
            return;
        }
    }
    log_req(LOG_LVL_WARN, "vendor_failed", x->hex, NULL, "%s (instance %s, try %d)", msg,
            x->inst->name, x->tries);
    if (x->head_sent) {
        /* A drop after the first byte went to the user: reported, never retried. */
        s_send_end(x, msg);
        s_xfer_free(x);
    } else {
        s_fail(x, result == CURLE_OPERATION_TIMEDOUT ? 504 : 502, "upstream_error", msg);
    }
}

/* ---- request: open, body, credit, cancel -------------------------------------------------- */

/* Appends a copy of line to *l. 0 or -ENOMEM. */
static int s_slist_add(struct curl_slist **l, const char *line)
{
    struct curl_slist *n = curl_slist_append(*l, line);
    if (!n)
        return -ENOMEM;
    *l = n;
    return 0;
}

/* This try's header list: the request's headers, then what changes from try to try (a Bedrock
 * signature over the whole body at this time; a Vertex token's line, token_line). 0 or a
 * negative errno. */
static int s_try_headers(s_xfer_t *x, const char *token_line)
{
    s_slist_wipe_free(&x->try_hdrs);
    int rc = 0;
    for (struct curl_slist *l = x->hdrs; l && rc == 0; l = l->next)
        rc = s_slist_add(&x->try_hdrs, l->data);
    char auth[1024];
    int arc = rc == 0 ? ag_auth_header(x->inst, x->op, auth, sizeof auth) : 1;
    if (arc == 0)
        rc = s_slist_add(&x->try_hdrs, auth);
    else if (arc < 0)
        rc = arc; /* 1: no static header (a token or a signature, below) */
    sodium_memzero(auth, sizeof auth);
    if (rc == 0 && token_line)
        rc = s_slist_add(&x->try_hdrs, token_line);
    if (rc == 0 && x->inst->vendor == AG_VENDOR_BEDROCK) {
        ag_sig_lines_t sig = {0};
        rc = ag_bedrock_sign(x->inst, x->url, x->ctype, x->body.data, x->body.len, time(NULL),
                             &sig);
        for (size_t i = 0; rc == 0 && i < sig.n; i++)
            rc = s_slist_add(&x->try_hdrs, sig.line[i]);
        ag_sig_lines_free(&sig);
    }
    return rc;
}

/* Starts one try of the vendor call once the upload size is known (and, for a buffering
 * instance, the whole body is in): this try's headers, the body from its first byte, the
 * transfer in curl. A token-based instance without a token waits for its refresher, which
 * calls this again. 0 or a negative errno. */
static int s_try_start(s_xfer_t *x)
{
    if (x->added || x->retry_wait || x->token_wait)
        return 0; /* running, or waiting for its next try or for a token */
    if (x->tries > 0 && !x->keep_body && x->body_size > 0) {
        /* The body outgrew the replay limit while this try waited: it cannot be sent again. */
        snprintf(x->start_err, sizeof x->start_err, "%s; the request body is too large to send "
                 "again", x->retry_why);
        return -E2BIG;
    }
    char token_line[AG_GTOKEN_MAX_TOKEN + 32] = "";
    if (s_token_based(x)) {
        int rc = s_token_get(x, token_line, sizeof token_line);
        if (rc <= 0)
            return rc; /* 0: waiting for the refresher */
    }
    int rc = s_try_headers(x, token_line[0] ? token_line : NULL);
    sodium_memzero(token_line, sizeof token_line);
    if (rc != 0)
        return rc;
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->try_hdrs);
    if (x->tries > 0) {
        /* Everything from the previous try is forgotten; the body is sent from its start. */
        x->status = 0;
        bus_buf_reset(&x->rh);
        x->n_rh = 0;
        x->sse = false;
        x->body_off = 0;
        x->upload_sent = 0;
        x->recv_paused = x->send_paused = false;
        x->errbuf[0] = '\0';
    } else {
        x->first_try_us = plat_mono_us();
    }
    x->discard = false;
    x->retry_after_ms = -1;
    x->tries++;
    if (x->op != AG_OP_MODELS)
        curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->upload_size);
    if (ag_curl_add(x->a->curl, x->easy) != 0)
        return -EIO;
    x->added = true;
    return 0;
}

/* The wait before a retry is over. */
static void s_on_retry_timer(bus_timer_t *t)
{
    s_xfer_t *x = t->arg;
    x->retry_wait = false;
    if (s_try_start(x) != 0)
        s_fail_start(x, "cannot start the vendor call again");
}

/* Adds one header line "name: value" to the request list. 0 or -ENOMEM. */
static int s_add_header(s_xfer_t *x, const char *name, size_t nl, const char *value, size_t vl)
{
    size_t len = nl + 2 + vl;
    char *line = malloc(len + 1);
    if (!line)
        return -ENOMEM;
    memcpy(line, name, nl);
    memcpy(line + nl, ": ", 2);
    if (vl)
        memcpy(line + nl + 2, value, vl);
    line[len] = '\0';
    struct curl_slist *l = curl_slist_append(x->hdrs, line);
    sodium_memzero(line, len);
    free(line);
    if (!l)
        return -ENOMEM;
    x->hdrs = l;
    return 0;
}

/* Builds the vendor request headers: the user's, filtered; the vendor's auth; identity
 * encoding; no Expect. Sets *add_usage from the gateway's hint. 0 or a negative errno. */
static int s_build_headers(s_xfer_t *x, const bus_req_open_t *o, bool *add_usage)
{
    bus_list_t it = o->headers;
    bus_str_t k, v;
    const char *const *defaults = ag_default_headers(x->inst, x->op);
    bool sent_default[8] = {false};
    int count = 0, rc;
    *add_usage = false;
    snprintf(x->ctype, sizeof x->ctype, "application/json");
    bool has_ct = false;
    while ((rc = bus_list_next_kv(&it, &k, &v)) == 1) {
        if (k.len == strlen(AG_INCLUDE_USAGE_HEADER) &&
            strncasecmp(k.p, AG_INCLUDE_USAGE_HEADER, k.len) == 0) {
            *add_usage = v.len == 1 && v.p[0] == '1';
            continue;
        }
        if (!ag_hdr_to_vendor(k.p, k.len, v.p, v.len) || count >= S_MAX_REQ_HEADERS)
            continue;
        if (k.len == 12 && strncasecmp(k.p, "content-type", 12) == 0) {
            if (v.len >= sizeof x->ctype)
                return -EBADMSG;
            snprintf(x->ctype, sizeof x->ctype, "%.*s", (int)v.len, v.p);
            has_ct = true;
        }
        for (size_t i = 0; defaults[i] && i < 8; i++) {
            const char *colon = strchr(defaults[i], ':');
            if (colon && (size_t)(colon - defaults[i]) == k.len &&
                strncasecmp(defaults[i], k.p, k.len) == 0)
                sent_default[i] = true;
        }
        if ((rc = s_add_header(x, k.p, k.len, v.p, v.len)) != 0)
            return rc;
        count++;
    }
    if (rc < 0)
        return -EBADMSG;
    for (size_t i = 0; defaults[i] && i < 8; i++) {
        if (!sent_default[i] && (rc = s_slist_add(&x->hdrs, defaults[i])) != 0)
            return rc;
    }
    /* The instance's auth header is added per try (s_try_headers): a try may move to another
     * instance, and tokens and signatures change from try to try. */
    static const char *const fixed[] = {"Accept-Encoding: identity", "Expect:", NULL};
    for (size_t i = 0; fixed[i]; i++) {
        if ((rc = s_slist_add(&x->hdrs, fixed[i])) != 0)
            return rc;
    }
    if (!has_ct && x->op != AG_OP_MODELS)
        return s_slist_add(&x->hdrs, "Content-Type: application/json");
    return 0;
}

/* Sets up the easy handle for x and url. 0 or -ENOMEM. */
static int s_setup_easy(s_xfer_t *x, const char *url)
{
    ag_adapter_t *a = x->a;
    CURL *e = curl_easy_init();
    if (!e)
        return -ENOMEM;
    x->easy = e;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)x);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION,
                     a->cfg->http2 ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)a->cfg->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, s_on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, s_on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    if (a->connect_to)
        curl_easy_setopt(e, CURLOPT_CONNECT_TO, a->connect_to);
    if (a->cfg->ca_file && a->cfg->ca_file[0]) {
        /* CAINFO replaces the default bundle: keep the system's through CAPATH. */
        curl_easy_setopt(e, CURLOPT_CAINFO, a->cfg->ca_file);
        if (a->capath)
            curl_easy_setopt(e, CURLOPT_CAPATH, a->capath);
    }
    if (x->op == AG_OP_MODELS) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, s_on_read);
        curl_easy_setopt(e, CURLOPT_READDATA, x);
    }
    return 0;
}

/* Reads agent run's instance frame, "chosen[,alternate...]": the instance for the first try and
 * those a failed try may move to. x->inst stays NULL when the chosen one is unknown. */
static void s_parse_instances(s_xfer_t *x, const char *frame, size_t len)
{
    const ag_instances_t *set = x->a->set;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && frame[i] != ',')
            continue;
        const ag_instance_t *in = ag_instances_find(set, frame + start, i - start);
        if (start == 0)
            x->inst = in;
        else if (in && x->inst && x->n_alts < (int)(sizeof x->alts / sizeof x->alts[0]))
            x->alts[x->n_alts++] = in;
        if (!x->inst)
            return;
        start = i + 1;
    }
}

/* req.open: checks the request against the instance and starts the vendor call. */
static void s_open(ag_adapter_t *a, uint64_t sid, const bus_env_t *env, const char *inst_name,
                   size_t inst_len)
{
    uint8_t key[AG_MAP_KEY];
    ag_map_sid_key(sid, key);
    if (ag_map_get(a->xfers, key)) {
        log_warn("protocol_error", "stream %llu opened twice", (unsigned long long)sid);
        return;
    }
    s_xfer_t *x = calloc(1, sizeof *x);
    if (!x) {
        log_err("no_memory", "cannot take a stream");
        return;
    }
    x->a = a;
    x->sid = sid;
    memcpy(x->req_id, env->req_id, BUS_REQ_ID_LEN);
    bus_req_id_hex(x->req_id, x->hex);
    x->upload_size = -1;
    x->credit = AG_WINDOW_BYTES;
    bus_buf_init(&x->rh, S_MAX_RESP_HEADER_BYTES);
    if (ag_map_put(a->xfers, key, x) != 0) {
        free(x);
        return;
    }
    x->next = a->head;
    if (a->head)
        a->head->prev = x;
    a->head = x;

    const bus_req_open_t *o = &env->u.req_open;
    s_parse_instances(x, inst_name, inst_len);
    if (!x->inst) {
        s_fail(x, 503, "instance_unavailable",
               "the agent's adapter does not know the chosen instance (config changed?)");
        return;
    }
    snprintf(x->fmt, sizeof x->fmt, "%.*s", (int)(o->format.len < 32 ? o->format.len : 32),
             o->format.len ? o->format.p : "");
    int rc = ag_path_parse(o->format.p, o->format.len, o->method.p, o->method.len, o->path.p,
                           o->path.len, o->query.p, o->query.len, &x->path);
    if (rc != 0) {
        s_fail(x, rc == -EINVAL ? 405 : 404, rc == -EINVAL ? "method_not_allowed" : "unknown_url",
               "this path is not served by the agent");
        return;
    }
    x->op = x->path.op;
    const char *model;
    int ml = ag_request_model(&x->path, o->model.p, o->model.len, &model);
    const char *up = NULL;
    if (x->op != AG_OP_MODELS) {
        up = ml > 0 ? ag_instance_upstream(x->inst, model, (size_t)ml) : NULL;
        x->up = up;
        if (!up) {
            s_fail(x, 404, "model_not_found", "the model is not served by this agent");
            return;
        }
    }
    x->body_size = o->body_size;
    if (x->body_size < 0 || x->body_size > AG_MAX_BODY_BYTES) {
        s_fail(x, 413, "request_too_large", "request body too large for the agent");
        return;
    }
    if (x->op == AG_OP_MODELS && x->body_size) {
        s_fail(x, 400, "invalid_request", "GET with a body");
        return;
    }
    x->buffered = ag_instance_buffers_body(x->inst);
    if (x->buffered && x->body_size > x->inst->max_body_bytes) {
        char msg[200];
        snprintf(msg, sizeof msg, "request body of %lld bytes is over this provider's limit of "
                 "%lld bytes (the whole body is signed before it is sent)",
                 (long long)x->body_size, (long long)x->inst->max_body_bytes);
        s_fail(x, 413, "request_too_large", msg);
        return;
    }
    /* The body stays here while it fits, so that a failed try can send it again. */
    x->keep_body = x->buffered || x->body_size <= a->cfg->vendor_retry_body_bytes;
    bool add_usage = false;
    rc = s_build_headers(x, o, &add_usage);
    if (rc != 0) {
        s_fail(x, 400, "invalid_request", "malformed request headers");
        return;
    }
    add_usage = add_usage && ag_op_takes_include_usage(x->op) && x->body_size > 0;
    bool rename = up && ag_model_in_body(x->inst, x->op) &&
                  ((size_t)ml != strlen(up) || memcmp(model, up, (size_t)ml) != 0);
    if (rename)
        snprintf(x->rename, sizeof x->rename, "%s", up);
    x->rw_active = (add_usage || rename) && x->body_size > 0;
    ag_bodyrw_init(&x->rw, add_usage ? AG_INCLUDE_USAGE_TEXT : NULL, rename ? x->rename : NULL);
    bus_buf_init(&x->body, (size_t)x->body_size + sizeof AG_INCLUDE_USAGE_TEXT + AG_MODEL_MAX + 16);

    char url[AG_URL_MAX];
    if (ag_url_build(x->inst, &x->path, up, url, sizeof url) != 0) {
        s_fail(x, 400, "invalid_request", "cannot build the vendor URL for this model");
        return;
    }
    x->url = strdup(url);
    if (!x->url) {
        s_fail(x, 500, "agent_error", "out of memory");
        return;
    }
    if (s_setup_easy(x, x->url) != 0) {
        s_fail(x, 500, "agent_error", "out of memory");
        return;
    }
    log_req(LOG_LVL_DEBUG, "stream_open", x->hex, NULL, "instance %s, %s %s, %lld body bytes",
            x->inst->name, ag_op_method(x->op), x->url, (long long)x->body_size);
    if (x->buffered && x->body_size > 0)
        return; /* starts when the whole body is in (s_body) */
    int64_t delta = 0;
    if (!x->rw_active || ag_bodyrw_final_delta(&x->rw, x->body_size == 0, &delta)) {
        x->upload_size = x->body_size + (x->rw_active ? delta : 0);
        if (s_try_start(x) != 0)
            s_fail_start(x, "cannot start the vendor call");
    }
}

/* req.body: queues bytes for curl (through the editor), starts or resumes the upload. */
static void s_body(s_xfer_t *x, const bus_bin_t *data)
{
    if (x->op == AG_OP_MODELS || (int64_t)data->len > x->body_size - x->body_in) {
        s_fail(x, 400, "invalid_request", "request body longer than announced");
        return;
    }
    if (x->body_off == x->body.len && !x->keep_body) {
        bus_buf_reset(&x->body);
        x->body_off = 0;
    }
    if (x->keep_body && !x->buffered &&
        (int64_t)(x->body.len + data->len) > x->a->cfg->vendor_retry_body_bytes) {
        /* Over the replay limit after all (a rewrite grew it): no retry for this request. */
        x->keep_body = false;
        memmove(x->body.data, x->body.data + x->body_off, x->body.len - x->body_off);
        x->body.len -= x->body_off;
        x->body_off = 0;
    }
    int rc = x->rw_active ? ag_bodyrw_feed(&x->rw, data->p, data->len, &x->body)
                          : (data->len ? bus_buf_append(&x->body, data->p, data->len) : 0);
    if (rc != 0) {
        s_fail(x, 400, "invalid_request",
               rc == -EBADMSG ? "request body is not a JSON object the agent can edit"
                              : "request body over the agent's buffer");
        return;
    }
    x->body_in += (int64_t)data->len;
    bool all_in = x->body_in == x->body_size;
    if (all_in && x->rw_active && !ag_bodyrw_complete(&x->rw)) {
        s_fail(x, 400, "invalid_request", "request body is not a complete JSON object");
        return;
    }
    if (x->buffered) {
        /* Credit as it comes (curl reads nothing before the whole body is here), then sign
         * and send. */
        bus_env_t e;
        bus_env_init(&e, BUS_T_CREDIT, x->req_id);
        e.u.credit.bytes = data->len;
        if (data->len && s_xfer_send(x, &e) != 0)
            return;
        if (all_in) {
            x->upload_size = x->body_size;
            if (s_try_start(x) != 0)
                s_fail_start(x, "cannot sign or start the vendor call");
        }
        return;
    }
    if (!x->added) {
        int64_t delta = 0;
        if (ag_bodyrw_final_delta(&x->rw, all_in, &delta)) {
            x->upload_size = x->body_size + delta;
            if (s_try_start(x) != 0)
                s_fail_start(x, "cannot start the vendor call");
        }
        return;
    }
    if (x->send_paused && x->body.len > x->body_off) {
        x->send_paused = false;
        s_repause(x);
    }
}

/* credit: more response bytes may go; resumes a paused download. */
static void s_credit(s_xfer_t *x, uint64_t bytes)
{
    x->credit = bytes > UINT64_MAX - x->credit ? UINT64_MAX : x->credit + bytes;
    if (x->recv_paused && x->added) {
        x->recv_paused = false;
        s_repause(x); /* may deliver kept bytes through s_on_write at once */
    }
}

/* Reads one message from the supervisor: [sid][envelope][instance?]. */
static void s_on_msg(void *arg, void *zsock)
{
    ag_adapter_t *a = arg;
    zmq_msg_t parts[3];
    int n = bus_zrecv_parts(zsock, parts, 3);
    if (n < 2 || zmq_msg_size(&parts[0]) != AG_SID_LEN) {
        log_warn("bad_message", "malformed frame from the supervisor");
        goto out;
    }
    uint64_t sid = ag_sid_get(zmq_msg_data(&parts[0]));
    bus_env_t env;
    char err[160];
    if (bus_env_decode(zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]), &env, err,
                       sizeof err) != 0) {
        log_warn("bad_message", "from the supervisor: %s", err);
        goto out;
    }
    if (sid == 0) {
        if (env.type == BUS_T_PING) {
            bus_env_t r;
            bus_env_init(&r, BUS_T_PONG, NULL);
            r.u.pong.seq = env.u.ping.seq;
            s_send_sid(a, 0, &r);
        }
        goto out;
    }
    if (env.type == BUS_T_REQ_OPEN) {
        if (a->stopping || n < 3) {
            s_xfer_t tmp = {.a = a, .sid = sid};
            ag_reply_end_error(s_xfer_send, &tmp, env.req_id,
                               a->stopping ? "agent adapter stopping" : "no instance named");
            goto out;
        }
        s_open(a, sid, &env, zmq_msg_data(&parts[2]), zmq_msg_size(&parts[2]));
        goto out;
    }
    uint8_t key[AG_MAP_KEY];
    ag_map_sid_key(sid, key);
    s_xfer_t *x = ag_map_get(a->xfers, key);
    if (!x)
        goto out; /* ended here already; the supervisor has forgotten it or will */
    switch (env.type) {
    case BUS_T_REQ_BODY:
        s_body(x, &env.u.req_body.data);
        break;
    case BUS_T_CREDIT:
        s_credit(x, env.u.credit.bytes);
        break;
    case BUS_T_REQ_CANCEL:
        log_req(LOG_LVL_INFO, "stream_cancelled", x->hex, NULL, "%.*s",
                (int)env.u.req_cancel.reason.len,
                env.u.req_cancel.reason.len ? env.u.req_cancel.reason.p : "");
        /* What was produced until now is billed: `agent run` records it (DESIGN §4). */
        s_send_end(x, "cancelled");
        s_xfer_free(x);
        break;
    default:
        break;
    }
out:
    for (int i = 0; i < n; i++)
        zmq_msg_close(&parts[i]);
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

/* Builds the CONNECT_TO list from upstream.connect_to ("a,b" → two entries). */
static int s_connect_to(ag_adapter_t *a)
{
    const char *list = a->cfg->connect_to;
    if (!list || !*list)
        return 0;
    char *copy = strdup(list), *save = NULL;
    if (!copy)
        return -ENOMEM;
    for (char *e = strtok_r(copy, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
        while (*e == ' ')
            e++;
        struct curl_slist *l = curl_slist_append(a->connect_to, e);
        if (!l) {
            free(copy);
            return -ENOMEM;
        }
        a->connect_to = l;
    }
    free(copy);
    log_warn("test_mapping", "upstream.connect_to is set (TEST ONLY): %s", list);
    return 0;
}

ag_adapter_t *ag_adapter_new(bus_loop_t *loop, const ag_config_t *cfg, const ag_instances_t *set,
                             int slot)
{
    ag_adapter_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->loop = loop;
    a->cfg = cfg;
    a->set = set;
    a->slot = slot;
    bus_buf_init(&a->enc, BUS_ENV_MAX_BYTES);
    a->xfers = ag_map_new();
    a->gtokens = calloc(set->n ? set->n : 1, sizeof *a->gtokens);
    if (!a->xfers || !a->gtokens || s_connect_to(a) != 0)
        goto fail;
    if (cfg->ca_file && cfg->ca_file[0]) {
        /* The system CA directory curl was built with, so a test CA adds to it. */
        CURL *probe = curl_easy_init();
        char *capath = NULL;
        if (probe && curl_easy_getinfo(probe, CURLINFO_CAPATH, &capath) == CURLE_OK && capath)
            a->capath = strdup(capath);
        else if (access("/etc/ssl/certs", R_OK) == 0)
            a->capath = strdup("/etc/ssl/certs");
        curl_easy_cleanup(probe);
    }
    a->curl = ag_curl_new(loop, s_on_done, a);
    if (!a->curl) {
        log_err("curl_failed", "cannot create the curl multi handle");
        goto fail;
    }
    a->sock = zmq_socket(bus_loop_zctx(loop), ZMQ_DEALER);
    if (!a->sock)
        goto fail;
    char ident[64];
    snprintf(ident, sizeof ident, "adapter-%d-%d", slot, (int)getpid());
    int zero = 0, hwm = S_HWM;
    zmq_setsockopt(a->sock, ZMQ_ROUTING_ID, ident, strlen(ident));
    zmq_setsockopt(a->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(a->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(a->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (zmq_connect(a->sock, cfg->adapter_ipc) != 0) {
        log_err("connect_failed", "%s: %s", cfg->adapter_ipc, zmq_strerror(errno));
        goto fail;
    }
    a->watch = bus_zwatch_new(loop, a->sock, s_on_msg, a);
    if (!a->watch)
        goto fail;
    bus_env_t h;
    bus_env_init(&h, BUS_T_HELLO, NULL);
    h.u.hello.proto_version = BUS_PROTO_VERSION;
    h.u.hello.agent_version = bus_str_c("relayhub-adapter/" RELAYHUB_VERSION);
    if (s_send_sid(a, 0, &h) != 0)
        goto fail;
    log_info("started", "agent-adapter %d ready (%zu instances)", slot, set->n);
    return a;
fail:
    ag_adapter_destroy(&a);
    return NULL;
}

void ag_adapter_destroy(ag_adapter_t **p)
{
    if (!p || !*p)
        return;
    ag_adapter_t *a = *p;
    while (a->head)
        s_xfer_free(a->head);
    bus_zwatch_destroy(&a->watch);
    if (a->sock)
        zmq_close(a->sock);
    for (size_t i = 0; a->gtokens && i < a->set->n; i++) {
        CURL *inflight = a->gtokens[i] ? ag_gtoken_inflight(a->gtokens[i]) : NULL;
        if (inflight)
            ag_curl_remove(a->curl, inflight);
        ag_gtoken_destroy(&a->gtokens[i]);
    }
    free(a->gtokens);
    ag_curl_destroy(&a->curl);
    curl_slist_free_all(a->connect_to);
    free(a->capath);
    ag_map_destroy(&a->xfers);
    bus_buf_free(&a->enc);
    free(a);
    *p = NULL;
}

void ag_adapter_shutdown(void *arg, int signo)
{
    ag_adapter_t *a = arg;
    (void)signo;
    a->stopping = true;
    while (a->head) {
        s_xfer_t *x = a->head;
        if (!x->failed)
            ag_reply_end_error(s_xfer_send, x, x->req_id, "agent adapter stopping");
        s_xfer_free(x);
    }
    bus_loop_stop(a->loop);
}
