/* ag_super: agent-adapter supervision and stream routing inside `agent run`. */
#include "ag_super.h"
#include "ag_fd.h"
#include "ag_ledgerlink.h"
#include "ag_map.h"
#include "ag_proto.h"
#include "ag_spawn.h"
#include "backoff.h"
#include "bus_log.h"
#include "bus_plat.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define S_MAX_SLOTS 64
#define S_HWM 100000                  /* messages queued per peer, at most */
#define S_PING_US 1000000             /* worker ping interval */
#define S_DEAD_US 10000000            /* a worker silent this long is killed */
#define S_REAP_POLL_US 200000         /* child check without a pidfd */
#define S_RESTART_BASE_MS 200
#define S_RESTART_CAP_MS 10000
#define S_RESTART_RESET_MS 30000
#define S_STOP_GRACE_MS 2000          /* SIGTERM to SIGKILL on shutdown */

typedef struct s_stream s_stream_t;
typedef struct s_slot s_slot_t;

struct s_slot {
    ag_super_t *s;          /* owner */
    int index;              /* slot number (--slot) */
    pid_t pid;              /* the running worker, 0 when none */
    char ident[64];         /* its routing id: adapter-SLOT-PID */
    size_t ident_len;       /* its length */
    bool ready;             /* said hello */
    uint64_t started_us;    /* spawn time (monotonic) */
    uint64_t seen_us;       /* last hello or pong */
    ag_fd_t *pidfd;         /* exit watch, or NULL (then the reap timer polls) */
    bus_timer_t restart;    /* next spawn */
    bus_timer_t reap;       /* exit poll without a pidfd */
    backoff_t backoff;      /* restart schedule */
    size_t nstreams;        /* streams it runs */
    s_stream_t *streams;    /* them */
};

struct s_stream {
    uint64_t sid;                   /* our number for it */
    uint8_t req_id[BUS_REQ_ID_LEN]; /* the hub's */
    char hex[33];                   /* req_id for logs */
    s_slot_t *slot;                 /* the worker running it */
    size_t inst;                    /* index of its instance in the set */
    uint32_t attempt;               /* the hub's attempt number (req.open), >= 1 */
    char model[257];                /* the model asked for (the public name the hub prices) */
    int status;                     /* the vendor's status in resp.head (0: none yet) */
    bool head;                      /* resp.head went to the hub */
    bool cancelled;                 /* the hub ended it: the worker's resp.end is recorded,
                                       not relayed */
    s_stream_t *prev, *next;        /* the slot's list */
};

struct ag_super {
    bus_loop_t *loop;             /* borrowed */
    const ag_config_t *cfg;       /* borrowed */
    const ag_instances_t *set;    /* borrowed */
    ag_super_args_t args;         /* borrowed strings */
    ag_hub_ops_t hub;             /* the tunnel client */
    void *sock;                   /* ROUTER the workers connect to */
    bus_zwatch_t *watch;          /* its watch */
    s_slot_t slots[S_MAX_SLOTS];  /* workers */
    int nslots;                   /* how many run */
    ag_map_t *by_req;             /* req_id -> stream */
    ag_map_t *by_sid;             /* sid -> stream */
    uint64_t next_sid;            /* next stream number (from 1) */
    uint64_t *inflight;           /* per instance, streams in flight */
    bus_timer_t ping;             /* liveness round */
    uint64_t ping_seq;            /* its counter */
    bool stopping;                /* being destroyed */
    char announce_id[72];         /* agent id to announce once a worker is ready ("" = none) */
    ag_ledgerlink_t *ledger;      /* where usage records go (NULL: none kept) */
};

static int s_announce_now(ag_super_t *s, const char *agent_id);

static void s_spawn(ag_super_t *s, s_slot_t *sl);

/* ---- streams ---------------------------------------------------------------------------- */

/* Forgets a stream: out of both maps, its slot's list and its instance's count. */
static void s_stream_free(ag_super_t *s, s_stream_t *st)
{
    uint8_t key[AG_MAP_KEY];
    if (ag_map_get(s->by_req, st->req_id) == st)
        ag_map_del(s->by_req, st->req_id);
    ag_map_sid_key(st->sid, key);
    ag_map_del(s->by_sid, key);
    s_slot_t *sl = st->slot;
    if (st->prev)
        st->prev->next = st->next;
    else
        sl->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    sl->nstreams--;
    if (s->inflight[st->inst])
        s->inflight[st->inst]--;
    free(st);
}

/* Sends [ident][sid][raw][extra?] to a worker. 0 or a negative errno (-EHOSTUNREACH: gone). */
static int s_to_worker(ag_super_t *s, s_slot_t *sl, uint64_t sid, const uint8_t *raw,
                       size_t len, const char *extra)
{
    uint8_t sb[AG_SID_LEN];
    ag_sid_put(sb, sid);
    int more = extra ? ZMQ_SNDMORE : 0;
    if (zmq_send(s->sock, sl->ident, sl->ident_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(s->sock, sb, sizeof sb, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(s->sock, raw, len, more | ZMQ_DONTWAIT) < 0 ||
        (extra && zmq_send(s->sock, extra, strlen(extra), ZMQ_DONTWAIT) < 0)) {
        int e = errno;
        log_warn("worker_send_failed", "adapter %d: %s", sl->index, zmq_strerror(e));
        return -e;
    }
    bus_zwatch_poke(s->watch);
    return 0;
}

/* Encodes env and sends it to a worker for sid. */
static int s_env_to_worker(ag_super_t *s, s_slot_t *sl, uint64_t sid, const bus_env_t *env)
{
    bus_buf_t b;
    bus_buf_init(&b, 64 * 1024);
    int rc = bus_env_encode(env, &b);
    if (rc == 0)
        rc = s_to_worker(s, sl, sid, b.data, b.len, NULL);
    bus_buf_free(&b);
    return rc;
}

/* Tells a worker to drop a stream (cancel), best effort. */
static void s_cancel_at_worker(ag_super_t *s, s_stream_t *st, const char *reason)
{
    if (!st->slot->pid)
        return;
    bus_env_t e;
    bus_env_init(&e, BUS_T_REQ_CANCEL, st->req_id);
    e.u.req_cancel.reason = bus_str_c(reason);
    s_env_to_worker(s, st->slot, st->sid, &e);
}

/* ag_send_fn towards the hub. */
static int s_hub_send(void *arg, const bus_env_t *env)
{
    ag_super_t *s = arg;
    return s->hub.send(s->hub.arg, env);
}

/* Ends every stream of a worker towards the hub (it died or was replaced). */
static void s_slot_streams_gone(ag_super_t *s, s_slot_t *sl, const char *why)
{
    while (sl->streams) {
        s_stream_t *st = sl->streams;
        if (!st->cancelled) {
            log_req(LOG_LVL_WARN, "stream_broken", st->hex, NULL, "%s", why);
            ag_reply_end_error(s_hub_send, s, st->req_id, why);
        }
        s_stream_free(s, st);
    }
}

/* ---- req.open routing ---------------------------------------------------------------------- */

/* Picks the instance for a model: serving it, under max_concurrency, lowest load ratio.
 * Returns its index, -ENOENT (nobody serves it) or -EBUSY (all full). */
static int s_pick_instance(const ag_super_t *s, const ag_path_t *path, const char *model,
                           size_t len)
{
    int best = -1;
    bool served = false;
    for (size_t i = 0; i < s->set->n; i++) {
        const ag_instance_t *in = &s->set->v[i];
        if (!ag_instance_serves(in, path->format, path->op))
            continue;
        if (path->op != AG_OP_MODELS && !ag_instance_upstream(in, model, len))
            continue;
        served = true;
        if ((int64_t)s->inflight[i] >= in->max_concurrency)
            continue;
        /* inflight/max lower than the best's: compare by cross-multiplying. */
        if (best < 0 || s->inflight[i] * (uint64_t)s->set->v[best].max_concurrency <
                            s->inflight[best] * (uint64_t)in->max_concurrency)
            best = (int)i;
    }
    if (best >= 0)
        return best;
    return served ? -EBUSY : -ENOENT;
}

/* The ready worker with the fewest streams, or NULL. */
static s_slot_t *s_pick_slot(ag_super_t *s)
{
    s_slot_t *best = NULL;
    for (int i = 0; i < s->nslots; i++) {
        s_slot_t *sl = &s->slots[i];
        if (sl->pid && sl->ready && (!best || sl->nstreams < best->nstreams))
            best = sl;
    }
    return best;
}

/* The instance frame for the worker: the chosen instance, then up to S_MAX_ALTERNATES others a
 * failed try may move to ("a,b,c"): same vendor, serving the request's format and operation,
 * the same upstream model name (so the body edits are the same), with room under their
 * max_concurrency now, least loaded first. */
enum { S_MAX_ALTERNATES = 4 };
static void s_instance_frame(const ag_super_t *s, size_t chosen, const ag_path_t *path,
                             const char *model, size_t len, char *out, size_t cap)
{
    const ag_instance_t *c = &s->set->v[chosen];
    const char *up = ag_instance_upstream(c, model, len);
    snprintf(out, cap, "%s", c->name);
    bool used[AG_MAX_INSTANCES] = {false};
    for (int k = 0; k < S_MAX_ALTERNATES && up; k++) {
        int best = -1;
        for (size_t i = 0; i < s->set->n && i < AG_MAX_INSTANCES; i++) {
            const ag_instance_t *in = &s->set->v[i];
            const char *iup = ag_instance_upstream(in, model, len);
            if (i == chosen || used[i] || in->vendor != c->vendor || !iup ||
                strcmp(iup, up) != 0 || !ag_instance_serves(in, path->format, path->op) ||
                (int64_t)s->inflight[i] >= in->max_concurrency)
                continue;
            if (best < 0 || s->inflight[i] * (uint64_t)s->set->v[best].max_concurrency <
                                s->inflight[best] * (uint64_t)in->max_concurrency)
                best = (int)i;
        }
        if (best < 0)
            break;
        used[best] = true;
        size_t n = strlen(out);
        snprintf(out + n, cap - n, ",%s", s->set->v[best].name);
    }
}

/* req.open from the hub: check, choose, hand to a worker. */
static void s_open(ag_super_t *s, const bus_env_t *env, const uint8_t *raw, size_t len)
{
    char hex[33];
    bus_req_id_hex(env->req_id, hex);
    s_stream_t *old = ag_map_get(s->by_req, env->req_id);
    if (old) {
        /* A retry under the same req_id: the earlier attempt is over. */
        s_cancel_at_worker(s, old, "superseded by a new attempt");
        s_stream_free(s, old);
    }
    const bus_req_open_t *o = &env->u.req_open;
    char fmt[33]; /* the user's API format: agent-made errors come in its shape */
    snprintf(fmt, sizeof fmt, "%.*s", (int)(o->format.len < 32 ? o->format.len : 32),
             o->format.len ? o->format.p : "");
    ag_path_t path;
    int rc = ag_path_parse(o->format.p, o->format.len, o->method.p, o->method.len, o->path.p,
                           o->path.len, o->query.p, o->query.len, &path);
    if (rc != 0) {
        char msg[200];
        int fl = (int)(o->format.len > 32 ? 32 : o->format.len);
        int ml = (int)(o->method.len > 16 ? 16 : o->method.len);
        int pl = (int)(o->path.len > 120 ? 120 : o->path.len);
        if (rc == -ENOTSUP)
            snprintf(msg, sizeof msg, "API format \"%.*s\" is not served by this agent", fl,
                     fl ? o->format.p : "");
        else
            snprintf(msg, sizeof msg, "Invalid URL (%.*s %.*s)", ml, ml ? o->method.p : "", pl,
                     pl ? o->path.p : "");
        /* -EINVAL with the operation's own method: the model named in the path is bad. */
        bool bad_model = rc == -EINVAL && path.op != AG_OP_NONE &&
                         o->method.len == strlen(ag_op_method(path.op)) &&
                         memcmp(o->method.p, ag_op_method(path.op), o->method.len) == 0;
        if (bad_model)
            snprintf(msg, sizeof msg, "the model named in the path is not a valid model name");
        log_req(LOG_LVL_INFO, "request_refused", hex, NULL, "%s", msg);
        int status = bad_model ? 400 : rc == -EINVAL ? 405 : 404;
        ag_reply_error(s_hub_send, s, env->req_id, fmt, status, "invalid_request_error",
                       bad_model           ? "invalid_model"
                       : rc == -EINVAL     ? "method_not_allowed"
                                           : "unknown_url",
                       msg, "agent refused the path");
        return;
    }
    const char *model;
    int ml = ag_request_model(&path, o->model.p, o->model.len, &model);
    if (ml < 0 || (ml == 0 && path.op != AG_OP_MODELS)) {
        ag_reply_error(s_hub_send, s, env->req_id, fmt, 400, "invalid_request_error",
                       "invalid_model",
                       ml < 0 ? "the model and the deployment in the path differ"
                              : "no model named", "agent refused the request");
        return;
    }
    int inst = s_pick_instance(s, &path, model, (size_t)(ml > 0 ? ml : 0));
    if (inst < 0) {
        char msg[400];
        if (inst == -ENOENT) {
            snprintf(msg, sizeof msg, "The model `%.*s` does not exist or you do not have access "
                     "to it.", ml > 256 ? 256 : ml, ml > 0 ? model : "");
            log_req(LOG_LVL_INFO, "request_refused", hex, NULL, "model not served");
            ag_reply_error(s_hub_send, s, env->req_id, fmt, 404, "invalid_request_error",
                           "model_not_found", msg, "agent does not serve the model");
        } else {
            snprintf(msg, sizeof msg, "The agent's instances of this model are at their "
                     "max_concurrency; retry later.");
            log_req(LOG_LVL_INFO, "request_refused", hex, NULL, "instances busy");
            ag_reply_error(s_hub_send, s, env->req_id, fmt, 429, "requests", "rate_limit_exceeded",
                           msg, "agent busy");
        }
        return;
    }
    s_slot_t *sl = s_pick_slot(s);
    if (!sl) {
        log_req(LOG_LVL_WARN, "request_refused", hex, NULL, "no adapter ready");
        ag_reply_error(s_hub_send, s, env->req_id, fmt, 503, "api_error", "agent_unavailable",
                       "The agent has no worker ready; retry.", "agent has no adapter ready");
        return;
    }
    s_stream_t *st = calloc(1, sizeof *st);
    uint8_t key[AG_MAP_KEY];
    if (!st) {
        ag_reply_end_error(s_hub_send, s, env->req_id, "agent out of memory");
        return;
    }
    st->sid = s->next_sid++;
    memcpy(st->req_id, env->req_id, BUS_REQ_ID_LEN);
    memcpy(st->hex, hex, sizeof hex);
    st->slot = sl;
    st->inst = (size_t)inst;
    st->attempt = o->attempt >= 1 && o->attempt < 256 ? (uint32_t)o->attempt : 1;
    size_t pml = o->model.len < sizeof st->model ? o->model.len : sizeof st->model - 1;
    if (pml)
        memcpy(st->model, o->model.p, pml);
    ag_map_sid_key(st->sid, key);
    if (ag_map_put(s->by_req, st->req_id, st) != 0 || ag_map_put(s->by_sid, key, st) != 0) {
        ag_map_del(s->by_req, st->req_id);
        free(st);
        ag_reply_end_error(s_hub_send, s, env->req_id, "agent out of memory");
        return;
    }
    st->next = sl->streams;
    if (sl->streams)
        sl->streams->prev = st;
    sl->streams = st;
    sl->nstreams++;
    s->inflight[inst]++;
    log_req(LOG_LVL_DEBUG, "stream_routed", hex, NULL, "instance %s, adapter %d",
            s->set->v[inst].name, sl->index);
    char frame[(AG_INSTANCE_NAME_MAX + 1) * (1 + S_MAX_ALTERNATES)];
    s_instance_frame(s, (size_t)inst, &path, model, (size_t)(ml > 0 ? ml : 0), frame,
                     sizeof frame);
    if (s_to_worker(s, sl, st->sid, raw, len, frame) != 0) {
        s_stream_free(s, st);
        ag_reply_error(s_hub_send, s, env->req_id, fmt, 503, "api_error", "agent_unavailable",
                       "The agent's worker is not reachable; retry.", "agent adapter unreachable");
    }
}

/* The hub has ended a stream. Its worker still answers with a resp.end carrying what was
 * produced, which is recorded for billing (not relayed): the stream stays known by its sid
 * until then, and no longer by its req_id. told: the worker has been told. */
static void s_stream_cancelled(ag_super_t *s, s_stream_t *st, bool told)
{
    if (!told) {
        s_stream_free(s, st);
        return;
    }
    if (ag_map_get(s->by_req, st->req_id) == st)
        ag_map_del(s->by_req, st->req_id);
    st->cancelled = true;
}

/* The worker's resp.end: write the usage record, then (unless the hub ended the stream
 * already) relay the end once agent-ledger has the record (DESIGN §4). */
static void s_stream_end(ag_super_t *s, s_stream_t *st, const bus_env_t *env,
                         const uint8_t *raw, size_t len)
{
    const bus_resp_end_t *e = &env->u.resp_end;
    bool cancelled = st->cancelled;
    if (!s->ledger || (e->input_tokens == 0 && e->output_tokens == 0)) {
        /* Nothing to bill (a refusal, a vendor error, a cancel before any answer). */
        if (!cancelled)
            s->hub.send_raw(s->hub.arg, raw, len);
        s_stream_free(s, st);
        return;
    }
    bus_env_t rep;
    bus_env_init(&rep, BUS_T_USAGE_REPORT, st->req_id);
    rep.req_id[15] ^= (uint8_t)(st->attempt - 1); /* the request's base id */
    bus_usage_report_t *u = &rep.u.usage_report;
    u->source = bus_str_c("agent");
    u->attempt = st->attempt;
    u->model = bus_str_c(st->model);
    u->status = st->status > 0 ? (uint64_t)st->status : 0;
    u->delivered = st->head;
    u->complete = e->complete && !cancelled;
    u->estimated = e->estimated;
    u->input_tokens = e->input_tokens;
    u->cached_tokens = e->cached_tokens;
    u->output_tokens = e->output_tokens;
    ag_ledgerlink_record(s->ledger, &rep, cancelled ? NULL : raw, cancelled ? 0 : len);
    s_stream_free(s, st);
}

void ag_super_set_ledger(ag_super_t *s, ag_ledgerlink_t *l)
{
    if (s)
        s->ledger = l;
}

bool ag_super_stream_open(const ag_super_t *s, const uint8_t req_id[BUS_REQ_ID_LEN])
{
    return s && ag_map_get(s->by_req, req_id) != NULL;
}

void ag_super_from_hub(ag_super_t *s, const bus_env_t *env, const uint8_t *raw, size_t len)
{
    if (!env->has_req_id)
        return;
    if (env->type == BUS_T_REQ_OPEN) {
        s_open(s, env, raw, len);
        return;
    }
    s_stream_t *st = ag_map_get(s->by_req, env->req_id);
    if (!st)
        return; /* ended already (a cancel or credit racing the end is normal) */
    int rc = s_to_worker(s, st->slot, st->sid, raw, len, NULL);
    if (env->type == BUS_T_REQ_CANCEL) {
        log_req(LOG_LVL_DEBUG, "stream_cancel", st->hex, NULL, "by the hub");
        s_stream_cancelled(s, st, rc == 0);
    } else if (rc != 0) {
        ag_reply_end_error(s_hub_send, s, st->req_id, "agent adapter unreachable");
        s_stream_free(s, st);
    }
}

void ag_super_hub_down(ag_super_t *s)
{
    s->announce_id[0] = '\0';
    for (int i = 0; i < s->nslots; i++) {
        s_slot_t *sl = &s->slots[i];
        for (s_stream_t *st = sl->streams, *next; st; st = next) {
            next = st->next;
            if (st->cancelled)
                continue;
            s_cancel_at_worker(s, st, "tunnel down");
            s_stream_cancelled(s, st, sl->pid != 0);
        }
    }
}

int ag_super_announce(ag_super_t *s, const char *agent_id)
{
    if (s->set->n == 0)
        return 0; /* serves nothing: nothing to announce */
    if (!s_pick_slot(s)) {
        /* No worker ready yet: announce when the first one is, so no request finds none. */
        snprintf(s->announce_id, sizeof s->announce_id, "%s", agent_id);
        return 0;
    }
    s->announce_id[0] = '\0';
    return s_announce_now(s, agent_id);
}

/* Builds and sends the presence envelope: every public model once, with the formats it is
 * served in (the union over the instances serving it). */
static int s_announce_now(ag_super_t *s, const char *agent_id)
{
    enum { S_MAX_MODELS = 256, S_FMT_LEN = 64 }; /* the presence STRLIST maximum */
    bus_str_t names[S_MAX_MODELS], fmts[S_MAX_MODELS];
    unsigned served[S_MAX_MODELS];         /* each model's formats: AG_FMT_ bits */
    char fmt_buf[S_MAX_MODELS][S_FMT_LEN]; /* 16 KiB */
    size_t n = 0;
    uint64_t capacity = 0;
    for (size_t i = 0; i < s->set->n; i++) {
        const ag_instance_t *in = &s->set->v[i];
        capacity += (uint64_t)in->max_concurrency;
        for (size_t m = 0; m < in->n_models; m++) {
            size_t k;
            for (k = 0; k < n && strcmp(names[k].p, in->models[m].pub) != 0; k++)
                ;
            if (k == n) {
                if (n == S_MAX_MODELS)
                    continue;
                names[n++] = bus_str_c(in->models[m].pub);
                served[k] = 0;
            }
            served[k] |= ag_instance_formats(in);
        }
    }
    for (size_t k = 0; k < n; k++) {
        if (ag_format_names(served[k], fmt_buf[k], S_FMT_LEN) != 0)
            fmt_buf[k][0] = '\0'; /* never: every name fits */
        fmts[k] = bus_str_c(fmt_buf[k]);
    }
    bus_buf_t scratch, fscratch;
    bus_buf_init(&scratch, 64 * 1024);
    bus_buf_init(&fscratch, 64 * 1024);
    bus_env_t e;
    bus_env_init(&e, BUS_T_PRESENCE, NULL);
    e.u.presence.agent_id = bus_str_c(agent_id);
    e.u.presence.state = bus_str_c("up");
    e.u.presence.capacity = capacity;
    e.u.presence.in_flight = ag_map_count(s->by_sid);
    int rc = bus_list_encode_strs(&scratch, names, n, &e.u.presence.models);
    if (rc == 0)
        rc = bus_list_encode_strs(&fscratch, fmts, n, &e.u.presence.model_formats);
    if (rc == 0)
        rc = s->hub.send(s->hub.arg, &e);
    bus_buf_free(&scratch);
    bus_buf_free(&fscratch);
    if (rc == 0)
        log_info("presence_sent", "announced %zu model(s), capacity %llu", n,
                 (unsigned long long)capacity);
    return rc;
}

size_t ag_super_streams(const ag_super_t *s)
{
    return s ? ag_map_count(s->by_sid) : 0;
}

/* ---- messages from workers --------------------------------------------------------------- */

/* The slot whose worker has this routing id, or NULL. */
static s_slot_t *s_slot_by_ident(ag_super_t *s, const void *id, size_t len)
{
    for (int i = 0; i < s->nslots; i++) {
        s_slot_t *sl = &s->slots[i];
        if (sl->pid && sl->ident_len == len && memcmp(sl->ident, id, len) == 0)
            return sl;
    }
    return NULL;
}

/* A worker moved a stream's next try to another instance: its in-flight count moves too. */
static void s_instance_switch(ag_super_t *s, s_stream_t *st, const bus_instance_switch_t *sw)
{
    const ag_instance_t *to = ag_instances_find(s->set, sw->instance.p, sw->instance.len);
    if (!to) {
        log_req(LOG_LVL_WARN, "bad_message", st->hex, NULL, "switch to an unknown instance");
        return;
    }
    size_t i = (size_t)(to - s->set->v);
    if (i == st->inst)
        return;
    if (s->inflight[st->inst])
        s->inflight[st->inst]--;
    s->inflight[i]++;
    log_req(LOG_LVL_INFO, "instance_switch", st->hex, NULL, "%s -> %s: %.*s",
            s->set->v[st->inst].name, to->name, (int)sw->reason.len,
            sw->reason.len ? sw->reason.p : "");
    st->inst = i;
}

/* Reads one message from a worker: [ident][sid][envelope]. */
static void s_on_worker(void *arg, void *zsock)
{
    ag_super_t *s = arg;
    zmq_msg_t parts[3];
    int n = bus_zrecv_parts(zsock, parts, 3);
    if (n < 3 || zmq_msg_size(&parts[1]) != AG_SID_LEN)
        goto out;
    s_slot_t *sl = s_slot_by_ident(s, zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0]));
    if (!sl)
        goto out; /* a worker that has been replaced */
    uint64_t sid = ag_sid_get(zmq_msg_data(&parts[1]));
    const uint8_t *raw = zmq_msg_data(&parts[2]);
    size_t len = zmq_msg_size(&parts[2]);
    bus_env_t env;
    char err[160];
    if (bus_env_decode(raw, len, &env, err, sizeof err) != 0) {
        log_warn("bad_message", "from adapter %d: %s", sl->index, err);
        goto out;
    }
    sl->seen_us = plat_mono_us();
    if (sid == 0) {
        if (env.type == BUS_T_HELLO && !sl->ready) {
            sl->ready = true;
            backoff_connected(&sl->backoff, sl->seen_us);
            log_info("adapter_ready", "agent-adapter %d (pid %d) ready", sl->index, (int)sl->pid);
            if (s->announce_id[0] && s_announce_now(s, s->announce_id) == 0)
                s->announce_id[0] = '\0';
        }
        goto out;
    }
    uint8_t key[AG_MAP_KEY];
    ag_map_sid_key(sid, key);
    s_stream_t *st = ag_map_get(s->by_sid, key);
    if (!st || st->slot != sl)
        goto out; /* the stream ended here first (cancel, retry) */
    if (env.type == BUS_T_INSTANCE_SWITCH && env.has_req_id &&
        memcmp(env.req_id, st->req_id, BUS_REQ_ID_LEN) == 0) {
        s_instance_switch(s, st, &env.u.instance_switch);
        goto out;
    }
    if ((env.type != BUS_T_RESP_HEAD && env.type != BUS_T_RESP_CHUNK &&
         env.type != BUS_T_RESP_END && env.type != BUS_T_CREDIT) || !env.has_req_id ||
        memcmp(env.req_id, st->req_id, BUS_REQ_ID_LEN) != 0) {
        log_warn("bad_message", "adapter %d sent %s for another stream", sl->index,
                 bus_type_name(env.type));
        goto out;
    }
    if (env.type == BUS_T_RESP_END) {
        s_stream_end(s, st, &env, raw, len);
        goto out;
    }
    if (env.type == BUS_T_RESP_HEAD) {
        st->status = (int)env.u.resp_head.status;
        st->head = !st->cancelled;
    }
    if (!st->cancelled)
        s->hub.send_raw(s->hub.arg, raw, len);
out:
    for (int i = 0; i < n; i++)
        zmq_msg_close(&parts[i]);
}

/* ---- worker processes -------------------------------------------------------------------- */

/* Schedules a restart of the slot after its backoff. */
static void s_restart_later(ag_super_t *s, s_slot_t *sl);

/* A worker's exit was reaped: end its streams and schedule its restart. */
static void s_worker_gone(ag_super_t *s, s_slot_t *sl, int status)
{
    char why[96];
    if (WIFSIGNALED(status))
        snprintf(why, sizeof why, "agent adapter died (signal %d)", WTERMSIG(status));
    else
        snprintf(why, sizeof why, "agent adapter exited (%d)", WEXITSTATUS(status));
    log_warn("adapter_died", "agent-adapter %d (pid %d): %s", sl->index, (int)sl->pid, why);
    sl->pid = 0;
    sl->ready = false;
    sl->ident_len = 0;
    ag_fd_destroy(&sl->pidfd);
    bus_timer_cancel(s->loop, &sl->reap);
    backoff_disconnected(&sl->backoff, plat_mono_us());
    s_slot_streams_gone(s, sl, why);
    if (!s->stopping)
        s_restart_later(s, sl);
}

/* Reaps the slot's worker if it has exited. 1 if it had. */
static int s_try_reap(ag_super_t *s, s_slot_t *sl)
{
    int status = 0;
    if (!sl->pid)
        return 0;
    pid_t r = waitpid(sl->pid, &status, WNOHANG);
    if (r == sl->pid || (r < 0 && errno == ECHILD)) {
        s_worker_gone(s, sl, r == sl->pid ? status : 0);
        return 1;
    }
    return 0;
}

static void s_on_reap_timer(bus_timer_t *t);

/* The worker's pidfd is readable: it has exited. */
static void s_on_pidfd(void *arg, int fd)
{
    s_slot_t *sl = arg;
    (void)fd;
    if (!s_try_reap(sl->s, sl)) {
        /* Readable but not reapable yet is not expected; poll instead of spinning. */
        ag_fd_destroy(&sl->pidfd);
        bus_timer_start(sl->s->loop, &sl->reap, s_on_reap_timer, sl, S_REAP_POLL_US);
    }
}

/* Polls a worker's exit (no pidfd). */
static void s_on_reap_timer(bus_timer_t *t)
{
    s_slot_t *sl = t->arg;
    if (!s_try_reap(sl->s, sl))
        bus_timer_start(sl->s->loop, &sl->reap, s_on_reap_timer, sl, S_REAP_POLL_US);
}

/* The restart timer fired. */
static void s_on_restart(bus_timer_t *t)
{
    s_slot_t *sl = t->arg;
    s_spawn(sl->s, sl);
}

/* Schedules the slot's next spawn after its backoff. */
static void s_restart_later(ag_super_t *s, s_slot_t *sl)
{
    int64_t ms = backoff_next_ms(&sl->backoff, NULL);
    log_info("adapter_restart", "agent-adapter %d restarts in %lld ms", sl->index,
             (long long)ms);
    bus_timer_start(s->loop, &sl->restart, s_on_restart, sl, ms * 1000);
}

/* Starts the slot's worker process. */
static void s_spawn(ag_super_t *s, s_slot_t *sl)
{
    if (s->stopping || sl->pid)
        return;
    char slot[16], parent[24];
    snprintf(slot, sizeof slot, "%d", sl->index);
    snprintf(parent, sizeof parent, "%d", (int)getpid());
    const char *const extra[] = {"--slot", slot, "--parent", parent, NULL};
    pid_t pid = ag_spawn(s->args.exe, s->args.config, s->args.sets, s->args.n_sets, extra);
    if (pid < 0) {
        log_err("adapter_spawn_failed", "%s: %s", s->args.exe, strerror((int)-pid));
        s_restart_later(s, sl);
        return;
    }
    sl->pid = pid;
    sl->ready = false;
    sl->started_us = plat_mono_us();
    sl->seen_us = sl->started_us;
    int n = snprintf(sl->ident, sizeof sl->ident, "adapter-%d-%d", sl->index, (int)pid);
    sl->ident_len = (size_t)n;
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    sl->pidfd = pfd >= 0 ? ag_fd_new(s->loop, pfd, s_on_pidfd, sl) : NULL;
    if (!sl->pidfd)
        bus_timer_start(s->loop, &sl->reap, s_on_reap_timer, sl, S_REAP_POLL_US);
    log_info("adapter_started", "agent-adapter %d started (pid %d)", sl->index, (int)pid);
}

/* Liveness round: pings ready workers, kills silent ones. */
static void s_on_ping(bus_timer_t *t)
{
    ag_super_t *s = t->arg;
    uint64_t now = plat_mono_us();
    bus_env_t e;
    bus_env_init(&e, BUS_T_PING, NULL);
    e.u.ping.seq = ++s->ping_seq;
    for (int i = 0; i < s->nslots; i++) {
        s_slot_t *sl = &s->slots[i];
        if (!sl->pid)
            continue;
        if (now - sl->seen_us > S_DEAD_US) {
            log_warn("adapter_silent", "agent-adapter %d (pid %d) silent for %d s: killing it",
                     sl->index, (int)sl->pid, S_DEAD_US / 1000000);
            kill(sl->pid, SIGKILL);
            sl->seen_us = now; /* the pidfd reports the exit */
            continue;
        }
        if (sl->ready)
            s_env_to_worker(s, sl, 0, &e);
    }
    bus_timer_start(s->loop, &s->ping, s_on_ping, s, S_PING_US);
}

ag_super_t *ag_super_new(bus_loop_t *loop, const ag_config_t *cfg, const ag_instances_t *set,
                         const ag_super_args_t *args, const ag_hub_ops_t *hub)
{
    ag_super_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->loop = loop;
    s->cfg = cfg;
    s->set = set;
    s->args = *args;
    s->hub = *hub;
    s->next_sid = 1;
    s->by_req = ag_map_new();
    s->by_sid = ag_map_new();
    s->inflight = calloc(set->n ? set->n : 1, sizeof *s->inflight);
    if (!s->by_req || !s->by_sid || !s->inflight)
        goto fail;
    if (set->n == 0)
        return s; /* nothing to serve: no workers */
    s->sock = zmq_socket(bus_loop_zctx(loop), ZMQ_ROUTER);
    if (!s->sock)
        goto fail;
    int one = 1, zero = 0, hwm = S_HWM;
    zmq_setsockopt(s->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(s->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (zmq_bind(s->sock, cfg->adapter_ipc) != 0) {
        log_err("bind_failed", "agent.adapter_ipc %s: %s", cfg->adapter_ipc,
                zmq_strerror(errno));
        goto fail;
    }
    s->watch = bus_zwatch_new(loop, s->sock, s_on_worker, s);
    if (!s->watch)
        goto fail;
    s->nslots = (int)(cfg->adapters < S_MAX_SLOTS ? cfg->adapters : S_MAX_SLOTS);
    for (int i = 0; i < s->nslots; i++) {
        s_slot_t *sl = &s->slots[i];
        sl->s = s;
        sl->index = i;
        backoff_init(&sl->backoff, S_RESTART_BASE_MS, S_RESTART_CAP_MS, S_RESTART_RESET_MS);
        s_spawn(s, sl);
    }
    bus_timer_start(loop, &s->ping, s_on_ping, s, S_PING_US);
    return s;
fail:
    ag_super_destroy(&s);
    return NULL;
}

/* Sleeps ms milliseconds (shutdown only, outside the loop's work). */
static void s_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void ag_super_destroy(ag_super_t **p)
{
    if (!p || !*p)
        return;
    ag_super_t *s = *p;
    s->stopping = true;
    bus_timer_cancel(s->loop, &s->ping);
    for (int i = 0; i < s->nslots; i++) {
        s_slot_t *sl = &s->slots[i];
        bus_timer_cancel(s->loop, &sl->restart);
        bus_timer_cancel(s->loop, &sl->reap);
        if (sl->pid)
            kill(sl->pid, SIGTERM);
    }
    /* Give the workers a moment to end their streams, then make sure they are gone. */
    for (long waited = 0;; waited += 10) {
        bool left = false;
        for (int i = 0; i < s->nslots; i++) {
            s_slot_t *sl = &s->slots[i];
            int st;
            if (sl->pid && waitpid(sl->pid, &st, WNOHANG) != 0)
                sl->pid = 0;
            left = left || sl->pid;
        }
        if (!left)
            break;
        if (waited >= S_STOP_GRACE_MS) {
            for (int i = 0; i < s->nslots; i++) {
                if (s->slots[i].pid) {
                    kill(s->slots[i].pid, SIGKILL);
                    waitpid(s->slots[i].pid, NULL, 0);
                    s->slots[i].pid = 0;
                }
            }
            break;
        }
        s_sleep_ms(10);
    }
    for (int i = 0; i < s->nslots; i++) {
        s_slot_t *sl = &s->slots[i];
        while (sl->streams)
            s_stream_free(s, sl->streams);
        ag_fd_destroy(&sl->pidfd);
    }
    bus_zwatch_destroy(&s->watch);
    if (s->sock)
        zmq_close(s->sock);
    ag_map_destroy(&s->by_req);
    ag_map_destroy(&s->by_sid);
    free(s->inflight);
    free(s);
    *p = NULL;
}
