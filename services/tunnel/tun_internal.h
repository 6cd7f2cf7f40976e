/* tun_internal: hub-tunnel's shared state, for its own modules only (tun_server, tun_relay).
 * Everything here runs on the one loop thread. */
#ifndef TUN_INTERNAL_H
#define TUN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus_env.h"
#include "bus_loop.h"
#include "bus_metrics.h"
#include "bus_tap.h"
#include "bus_wsconn.h"
#include "hub_config.h"
#include "tlscert.h"
#include "tun_handshake.h"
#include "strmap.h"
#include "tun_registry.h"
#include "tun_server.h"

typedef struct tun_conn {
    struct lws *wsi;           /* the WebSocket */
    tun_server_t *srv;         /* owner */
    tun_hs_t hs;               /* handshake state; READY once authenticated */
    char peer[64];             /* remote address */
    uint64_t since_wall_us;    /* connected at (wall clock) */
    uint64_t since_mono_us;    /* connected at (monotonic) */
    uint64_t seen_wall_us;     /* last message received (wall clock) */
    uint64_t seen_mono_us;     /* last message received (monotonic) */
    uint64_t ping_mono_us;     /* last ping sent */
    uint64_t ping_seq;         /* ping counter */
    bus_wsconn_t ws;           /* outgoing frames and incoming reassembly */
    int close_code;            /* non-zero: close on the next writable callback */
    char close_reason[96];     /* sent with the close frame */
    bool registered;           /* this connection is the map's entry for its agent */
    struct tun_stream *streams; /* streams relayed to this agent (tun_relay) */
    uint8_t *models;           /* the models it serves: its presence's STRLIST bytes, owned */
    size_t models_len;         /* their length */
    uint32_t models_count;     /* how many */
    uint8_t *formats;          /* the formats of each model: presence's model_formats, owned */
    size_t formats_len;        /* their length */
    uint32_t formats_count;    /* how many */
    uint64_t capacity;         /* concurrent requests it accepts (0: unknown) */
    size_t nstreams;           /* their count */
    struct tun_conn *prev;     /* all connections */
    struct tun_conn *next;
} tun_conn_t;

typedef struct {
    bus_metric_t *connections, *connected, *msgs_in, *msgs_out, *bytes_in, *bytes_out;
    bus_metric_t *errors, *decode_errors, *handshakes_ok, *replaced, *gone, *admin_requests;
    bus_metric_t *admin_timeouts, *registry_agents, *registry_errors, *tap_dropped;
    bus_metric_t *hs_fail[17];
    bus_metric_t *streams_open, *streams_total, *streams_orphaned;
    bus_metric_t *billing_dropped;
} tun_metrics_t;

struct tun_server {
    const hub_config_t *cfg;     /* borrowed */
    bus_loop_t *loop;            /* borrowed */
    struct lws_vhost *vh_tunnel; /* WSS listener */
    struct lws_vhost *vh_admin;  /* admin API */
    tun_registry_t *reg;         /* agent registry cache */
    char pin[TLS_PIN_MAX];       /* our certificate's pin, bound into signatures */
    strmap_t *agents;           /* agent id → authenticated connection */
    strmap_t *pending;          /* req id hex → pending echo */
    strmap_t *streams;          /* req id hex → relayed stream (tun_relay) */
    tun_conn_t *conns;           /* every connection, authenticated or not */
    size_t nconns;               /* their count */
    void *router;                /* ROUTER for gateways and tools */
    void *pub;                   /* PUB for presence */
    bus_zwatch_t *router_watch;  /* router readiness */
    bus_tap_t *tap;              /* envelope mirror */
    bus_metrics_t *metrics;      /* registry of metrics */
    tun_metrics_t m;             /* handles */
    bus_timer_t sweep;           /* heartbeats and timeouts */
    uint64_t reg_generation;     /* registry snapshot last enforced on connections */
    uint64_t last_sweep_us;      /* monotonic time of the previous sweep */
    uint64_t presence_us;        /* monotonic time presence was last republished in full */
    bus_timer_t stop_timer;      /* graceful stop progress */
    uint64_t stop_deadline_us;   /* force stop after this */
    bus_buf_t enc;               /* scratch encoder buffer */
    bool stopping;               /* shutting down */
};

/* Encodes env into srv->enc. 0 or a negative errno (logged, counted). */
int tun_encode(tun_server_t *srv, const bus_env_t *env);

/* Asks lws to close an agent connection with code/reason on its next writable callback. */
void tun_conn_close(tun_conn_t *c, int code, const char *reason);

/* Queues an envelope to an agent; tun_conn_send_raw queues already-encoded bytes unchanged.
 * 0, -EPIPE (closing), -EAGAIN (queue over tunnel.send_queue: the agent is dropped), -ENOMEM. */
int tun_conn_send(tun_conn_t *c, const bus_env_t *env);
int tun_conn_send_raw(tun_conn_t *c, const uint8_t *buf, size_t len);

/* Sends to a bus peer (a gateway or tool) by its ROUTER identity; _raw sends encoded bytes.
 * 0, or -EHOSTUNREACH when the peer is gone, -EAGAIN when its queue is full. */
int tun_bus_send(tun_server_t *srv, const uint8_t *ident, size_t ident_len, const bus_env_t *env);
int tun_bus_send_raw(tun_server_t *srv, const uint8_t *ident, size_t ident_len,
                     const uint8_t *buf, size_t len);

#endif
