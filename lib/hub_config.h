/* hub_config: the one table of every hub.conf key, shared by all hub processes and hubctl.
 *
 * Every hub process reads the whole hub.conf with this table, so an unknown key in any known
 * section is an error everywhere (exit 2), and each process uses the sections it needs.
 */
#ifndef HUB_CONFIG_H
#define HUB_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "bus_config.h"
#include "store/store.h"

typedef struct {
    /* [store] */
    char *store_backend;  /* "sqlite" or "mysql" */
    char *sqlite_path;    /* SQLite database file */
    char *mysql_url;      /* mysql://user:pass@host:port/db */
    /* [bus] */
    char *tunnel_router;   /* ROUTER the tunnel binds for gateways */
    char *tunnel_presence; /* PUB the tunnel binds for presence events */
    char *tunnel_tap;      /* XPUB mirror of the tunnel's envelopes ("" = off) */
    /* [tunnel] */
    char *tunnel_name;            /* name of this tunnel instance in presence events */
    char *tunnel_listen;          /* WSS listener for agents */
    char *tunnel_admin_listen;    /* admin HTTP API (loopback) */
    char *tunnel_metrics_listen;  /* Prometheus metrics ("" = off) */
    char *tunnel_cert;            /* TLS certificate (PEM) */
    char *tunnel_key;             /* TLS private key (PEM) */
    char *tunnel_admin_token;     /* bearer token of the admin API */
    int64_t tunnel_heartbeat_ms;  /* ping interval */
    int64_t tunnel_dead_after_ms; /* silence after which an agent is gone */
    int64_t tunnel_handshake_timeout_ms; /* time allowed from connect to auth */
    int64_t tunnel_admin_timeout_ms;     /* wait for an agent's reply to admin.echo */
    int64_t tunnel_max_agents;           /* connections accepted at once */
    int64_t tunnel_registry_poll_ms;     /* how often the agent registry is re-read */
    int64_t tunnel_send_queue_bytes;     /* per-agent outgoing queue limit */
    int64_t tunnel_presence_interval_ms; /* full presence republished this often */
    /* [gateway] */
    char *gateway_name;             /* names this gateway's bus identity */
    char *gateway_listen;           /* the users' HTTP listener */
    char *gateway_metrics_listen;   /* Prometheus metrics ("" = off) */
    char *gateway_cert;             /* TLS certificate ("" = plain HTTP) */
    char *gateway_key;              /* TLS key */
    bool gateway_http2;             /* offer h2 on the TLS listener */
    int64_t gateway_max_body_bytes; /* request bodies larger than this get 413 */
    int64_t gateway_credit_window;  /* response bytes an agent may send ahead of the user */
    int64_t gateway_retries;        /* other agents tried when one fails before the first byte */
    int64_t gateway_retry_body_bytes;  /* bodies up to this are kept for a retry */
    int64_t gateway_first_byte_timeout_ms; /* no response head by then: 504 */
    int64_t gateway_key_poll_ms;    /* key/user change poll (revocations) */
    char *gateway_tap;              /* XPUB mirror of the gateway's envelopes ("" = off) */
    int64_t gateway_hold_timeout_ms; /* hub-billing must grant the hold by then, else 503 */
    int64_t gateway_report_resend_ms; /* unacknowledged usage reports are re-sent this often */
    /* [bus] (billing) */
    char *billing_router;           /* ROUTER hub-billing binds for gateways */
    char *billing_tap;              /* XPUB mirror of hub-billing's envelopes ("" = off) */
    /* [billing] */
    char *billing_metrics_listen;   /* Prometheus metrics ("" = off) */
    int64_t billing_fee_ppm;        /* the hub's fee, parts per million of each cost */
    int64_t billing_default_max_tokens; /* output bound of a hold when max_tokens is not given */
    int64_t billing_hold_ttl_ms;    /* a hold expires this long after it was granted */
    char *billing_unpriced;         /* "refuse" (503) or "free" for models without a price */
    int64_t billing_agent_grace_ms; /* an agent's report settles alone after this without the
                                       gateway's */
    int64_t billing_resend_ms;      /* unacknowledged ledger rows are re-sent this often */
    int64_t billing_poll_ms;        /* top-ups and prices are looked for this often */
    int64_t billing_batch;          /* most holds / reports / settlements per transaction */
    /* [log] */
    int log_level; /* log_level_t */
} hub_config_t;

extern const cfg_entry_t hub_config_table[];

/* Loads hub.conf (file may be NULL) and overrides; on error writes one line to err. */
int hub_config_load(hub_config_t *cfg, const char *file, char *const *sets, size_t n_sets,
                    char *err, size_t errlen);
void hub_config_free(hub_config_t *cfg);

/* Store parameters for the configured backend. 0 or -EINVAL (err set). */
int hub_config_store_params(const hub_config_t *cfg, store_params_t *out, char *err,
                            size_t errlen);

#endif
