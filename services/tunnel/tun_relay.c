/* tun_relay: gateway ⇄ agent stream relay inside hub-tunnel. */
#include "tun_relay.h"
#include "bus_log.h"
#include "bus_plat.h"
#include "tun_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

struct tun_stream {
    char key[33];              /* req_id in hex: the map key */
    uint8_t req_id[16];        /* the stream */
    uint64_t attempt;          /* which try of the gateway's request this is */
    uint8_t ident[256];        /* the gateway's ROUTER identity */
    size_t ident_len;          /* its length */
    tun_conn_t *conn;          /* the agent connection it runs on */
    uint64_t opened_us;        /* monotonic */
    tun_stream_t *prev, *next; /* the connection's streams */
};

int tun_relay_is_gateway_type(bus_type_t t)
{
    return t == BUS_T_REQ_OPEN || t == BUS_T_REQ_BODY || t == BUS_T_REQ_CANCEL ||
           t == BUS_T_CREDIT;
}

/* Unlinks and frees a stream. */
static void s_stream_free(tun_server_t *srv, tun_stream_t *st)
{
    strmap_del(srv->streams, st->key);
    tun_conn_t *c = st->conn;
    if (c) {
        if (st->prev)
            st->prev->next = st->next;
        else
            c->streams = st->next;
        if (st->next)
            st->next->prev = st->prev;
        c->nstreams--;
    }
    free(st);
    bus_metric_set(srv->m.streams_open, (int64_t)strmap_count(srv->streams));
}

/* Sends an error envelope for req_id to a gateway (a stream it named cannot proceed). */
static void s_gateway_error(tun_server_t *srv, const uint8_t *ident, size_t ident_len,
                            const uint8_t req_id[16], int code, const char *msg)
{
    bus_env_t r;
    bus_env_init(&r, BUS_T_ERROR, req_id);
    r.u.error.code = code;
    r.u.error.message = (bus_str_t){msg, strlen(msg)};
    tun_bus_send(srv, ident, ident_len, &r);
}

/* Ends a stream towards its gateway with resp.end {error}. */
static void s_end_to_gateway(tun_server_t *srv, tun_stream_t *st, const char *error)
{
    bus_env_t r;
    bus_env_init(&r, BUS_T_RESP_END, st->req_id);
    r.u.resp_end.error = (bus_str_t){error, strlen(error)};
    tun_bus_send(srv, st->ident, st->ident_len, &r);
}

/* Tells an agent to stop working on req_id. */
static void s_cancel_to_agent(tun_conn_t *c, const uint8_t req_id[16], const char *reason)
{
    bus_env_t r;
    bus_env_init(&r, BUS_T_REQ_CANCEL, req_id);
    r.u.req_cancel.reason = (bus_str_t){reason, strlen(reason)};
    tun_conn_send(c, &r);
}

/* req.open: pick the named agent's connection and start the stream. */
static void s_open(tun_server_t *srv, const uint8_t *ident, size_t ident_len,
                   const bus_env_t *env, const uint8_t *raw, size_t len)
{
    char key[33], agent_id[ID_AGENT_ID_LEN + 1] = "";
    bus_req_id_hex(env->req_id, key);
    bus_str_t aid = env->u.req_open.agent_id;
    if (aid.len && aid.len < sizeof agent_id) {
        memcpy(agent_id, aid.p, aid.len);
        agent_id[aid.len] = '\0';
    }
    tun_conn_t *c = agent_id[0] && !srv->stopping ? strmap_get(srv->agents, agent_id) : NULL;
    if (!c || c->close_code) {
        log_req(LOG_LVL_INFO, "stream_refused", key, agent_id[0] ? agent_id : NULL,
                "agent not connected to this tunnel");
        s_gateway_error(srv, ident, ident_len, env->req_id, 503,
                        srv->stopping ? "tunnel shutting down" : "agent not connected");
        return;
    }
    tun_stream_t *old = strmap_get(srv->streams, key);
    if (old) {
        /* A retry under the same req_id: the earlier attempt is over for the gateway. */
        s_cancel_to_agent(old->conn, old->req_id, "superseded by a new attempt");
        s_stream_free(srv, old);
    }
    tun_stream_t *st = calloc(1, sizeof *st);
    if (!st || ident_len > sizeof st->ident) {
        free(st);
        s_gateway_error(srv, ident, ident_len, env->req_id, 500, "tunnel out of memory");
        return;
    }
    memcpy(st->key, key, sizeof key);
    memcpy(st->req_id, env->req_id, 16);
    st->attempt = env->u.req_open.attempt;
    memcpy(st->ident, ident, ident_len);
    st->ident_len = ident_len;
    st->conn = c;
    st->opened_us = plat_mono_us();
    if (strmap_put(srv->streams, key, st) != 0) {
        free(st);
        s_gateway_error(srv, ident, ident_len, env->req_id, 500, "tunnel out of memory");
        return;
    }
    st->next = c->streams;
    if (c->streams)
        c->streams->prev = st;
    c->streams = st;
    c->nstreams++;
    bus_metric_inc(srv->m.streams_total);
    bus_metric_set(srv->m.streams_open, (int64_t)strmap_count(srv->streams));
    log_req(LOG_LVL_DEBUG, "stream_open", key, agent_id, "attempt %llu",
            (unsigned long long)st->attempt);
    if (tun_conn_send_raw(c, raw, len) != 0) {
        s_gateway_error(srv, ident, ident_len, env->req_id, 503, "agent connection failing");
        s_stream_free(srv, st);
    }
}

void tun_relay_from_gateway(tun_server_t *srv, const uint8_t *ident, size_t ident_len,
                            const bus_env_t *env, const uint8_t *raw, size_t len)
{
    if (!env->has_req_id) {
        static const uint8_t zero[16];
        s_gateway_error(srv, ident, ident_len, zero, 400, "stream envelope without req_id");
        return;
    }
    if (env->type == BUS_T_REQ_OPEN) {
        s_open(srv, ident, ident_len, env, raw, len);
        return;
    }
    char key[33];
    bus_req_id_hex(env->req_id, key);
    tun_stream_t *st = strmap_get(srv->streams, key);
    if (!st || st->ident_len != ident_len || memcmp(st->ident, ident, ident_len) != 0) {
        /* A cancel or credit racing the stream's end is normal; anything else is an error. */
        if (env->type == BUS_T_REQ_BODY)
            s_gateway_error(srv, ident, ident_len, env->req_id, 404, "no such stream");
        return;
    }
    int rc = tun_conn_send_raw(st->conn, raw, len);
    if (env->type == BUS_T_REQ_CANCEL) {
        log_req(LOG_LVL_DEBUG, "stream_cancel", key, st->conn->hs.agent_id, "by the gateway");
        s_stream_free(srv, st);
    } else if (rc != 0) {
        s_end_to_gateway(srv, st, "agent connection failing");
        s_stream_free(srv, st);
    }
}

int tun_relay_from_agent(tun_conn_t *c, const bus_env_t *env, const uint8_t *raw, size_t len)
{
    tun_server_t *srv = c->srv;
    if (!env->has_req_id)
        return 0;
    char key[33];
    bus_req_id_hex(env->req_id, key);
    tun_stream_t *st = strmap_get(srv->streams, key);
    if (!st || st->conn != c) {
        if (env->type == BUS_T_ERROR)
            return 0; /* maybe an admin exchange's error: not ours */
        /* Ended on our side (cancelled, superseded): make the agent stop too. */
        bus_metric_inc(srv->m.streams_orphaned);
        if (env->type != BUS_T_RESP_END && env->type != BUS_T_CREDIT)
            s_cancel_to_agent(c, env->req_id, "no such stream");
        return 1;
    }
    int rc = tun_bus_send_raw(srv, st->ident, st->ident_len, raw, len);
    if (rc == -EHOSTUNREACH) {
        log_req(LOG_LVL_INFO, "gateway_gone", key, c->hs.agent_id,
                "gateway unreachable: cancelling the stream");
        s_cancel_to_agent(c, env->req_id, "gateway gone");
        s_stream_free(srv, st);
        return 1;
    }
    if (rc == -EAGAIN) {
        /* Credit bounds what a well-behaved gateway can have queued: this one is stuck. */
        log_req(LOG_LVL_WARN, "gateway_stuck", key, c->hs.agent_id,
                "gateway queue full: ending the stream");
        s_cancel_to_agent(c, env->req_id, "gateway not reading");
        s_stream_free(srv, st);
        return 1;
    }
    if (env->type == BUS_T_RESP_END || env->type == BUS_T_ERROR) {
        log_req(LOG_LVL_DEBUG, "stream_end", key, c->hs.agent_id, "after %.3f ms",
                (double)(plat_mono_us() - st->opened_us) / 1000.0);
        s_stream_free(srv, st);
    }
    return 1;
}

void tun_relay_agent_gone(tun_conn_t *c, const char *why)
{
    tun_server_t *srv = c->srv;
    char msg[160];
    snprintf(msg, sizeof msg, "agent gone: %s", why);
    while (c->streams) {
        tun_stream_t *st = c->streams;
        log_req(LOG_LVL_INFO, "stream_broken", st->key, c->hs.agent_id, "%s", msg);
        s_end_to_gateway(srv, st, msg);
        s_stream_free(srv, st);
    }
}

void tun_relay_shutdown(tun_server_t *srv)
{
    for (tun_conn_t *c = srv->conns; c; c = c->next)
        tun_relay_agent_gone(c, "hub shutting down");
}
