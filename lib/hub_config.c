/* hub_config: hub.conf keys, defaults and help. */
#include "hub_config.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define H(f) offsetof(hub_config_t, f)

const cfg_entry_t hub_config_table[] = {
    {"store", "backend", CFG_STR, H(store_backend), "sqlite", "sqlite (embedded) or mysql", 0, 0},
    {"store", "sqlite_path", CFG_PATH, H(sqlite_path), "hub.db", "SQLite database file", 0, 0},
    {"store", "mysql_url", CFG_STR, H(mysql_url), "",
     "mysql://user:pass@host:port/db (backend = mysql)", 0, 0},
    {"bus", "tunnel_router", CFG_ENDPOINT, H(tunnel_router), "ipc://tunnel.ipc",
     "ROUTER bound by hub-tunnel for gateways", 0, 0},
    {"bus", "tunnel_presence", CFG_ENDPOINT, H(tunnel_presence), "ipc://presence.ipc",
     "PUB bound by hub-tunnel for presence events", 0, 0},
    {"bus", "tunnel_tap", CFG_ENDPOINT, H(tunnel_tap), "ipc://tap-tunnel.ipc",
     "XPUB mirror of hub-tunnel's envelopes for bus-tap (\"\" = off)", 0, 0},
    {"tunnel", "name", CFG_STR, H(tunnel_name), "tunnel-1", "this tunnel's name in presence", 0,
     0},
    {"tunnel", "listen", CFG_LISTEN, H(tunnel_listen), "127.0.0.1:8443",
     "WSS listener for agents (/tunnel/connect)", 0, 0},
    {"tunnel", "admin_listen", CFG_LISTEN, H(tunnel_admin_listen), "127.0.0.1:8081",
     "admin HTTP API (keep on loopback)", 0, 0},
    {"tunnel", "metrics_listen", CFG_LISTEN, H(tunnel_metrics_listen), "127.0.0.1:9101",
     "Prometheus metrics (\"\" = off)", 0, 0},
    {"tunnel", "cert", CFG_PATH, H(tunnel_cert), "hub.crt", "TLS certificate (PEM)", 0, 0},
    {"tunnel", "key", CFG_PATH, H(tunnel_key), "hub.key", "TLS private key (PEM)", 0, 0},
    {"tunnel", "admin_token", CFG_STR, H(tunnel_admin_token), "",
     "bearer token for the admin API (required)", 0, 0},
    {"tunnel", "heartbeat", CFG_MS, H(tunnel_heartbeat_ms), "15s", "ping interval", 100,
     3600000},
    {"tunnel", "dead_after", CFG_MS, H(tunnel_dead_after_ms), "45s",
     "silence after which an agent is marked gone", 300, 86400000},
    {"tunnel", "handshake_timeout", CFG_MS, H(tunnel_handshake_timeout_ms), "10s",
     "time from connect to a valid auth; also the nonce lifetime", 100, 600000},
    {"tunnel", "admin_timeout", CFG_MS, H(tunnel_admin_timeout_ms), "5s",
     "wait for an agent's reply to an admin message (then 504)", 10, 600000},
    {"tunnel", "max_agents", CFG_INT, H(tunnel_max_agents), "20000",
     "tunnel connections accepted at once", 1, 1000000},
    {"tunnel", "registry_poll", CFG_MS, H(tunnel_registry_poll_ms), "250ms",
     "how often the agent registry is re-read", 50, 60000},
    {"tunnel", "send_queue", CFG_BYTES, H(tunnel_send_queue_bytes), "8MiB",
     "outgoing bytes queued per agent before it is dropped as too slow", 65536,
     1073741824},
    {"tunnel", "presence_interval", CFG_MS, H(tunnel_presence_interval_ms), "2s",
     "every connected agent's presence is republished this often", 100, 600000},
    {"bus", "gateway_tap", CFG_ENDPOINT, H(gateway_tap), "ipc://tap-gateway.ipc",
     "XPUB mirror of hub-gateway's envelopes for bus-tap (\"\" = off)", 0, 0},
    {"gateway", "name", CFG_STR, H(gateway_name), "gateway-1",
     "this gateway's name (its bus identity adds the pid)", 0, 0},
    {"gateway", "listen", CFG_LISTEN, H(gateway_listen), "127.0.0.1:8080",
     "HTTP listener for users (OpenAI-compatible /v1/...)", 0, 0},
    {"gateway", "metrics_listen", CFG_LISTEN, H(gateway_metrics_listen), "127.0.0.1:9102",
     "Prometheus metrics (\"\" = off)", 0, 0},
    {"gateway", "cert", CFG_PATH, H(gateway_cert), "", "TLS certificate (\"\" = plain HTTP)", 0,
     0},
    {"gateway", "key", CFG_PATH, H(gateway_key), "", "TLS key", 0, 0},
    {"gateway", "http2", CFG_BOOL, H(gateway_http2), "true",
     "offer HTTP/2 on the TLS listener (false: HTTP/1.1 only, which keeps headers such as "
     "x-api-key and x-goog-api-key that libwebsockets 4.1 drops over HTTP/2)", 0, 0},
    {"gateway", "max_body_bytes", CFG_BYTES, H(gateway_max_body_bytes), "32MiB",
     "larger request bodies get 413", 1024, 1073741824},
    {"gateway", "credit_window", CFG_BYTES, H(gateway_credit_window), "256KiB",
     "response bytes an agent may send ahead of the user (flow control)", 4096, 67108864},
    {"gateway", "retries", CFG_INT, H(gateway_retries), "2",
     "other agents tried when one fails before the first byte", 0, 10},
    {"gateway", "retry_body_bytes", CFG_BYTES, H(gateway_retry_body_bytes), "1MiB",
     "request bodies up to this size are kept for a retry; also where model must appear", 4096,
     67108864},
    {"gateway", "first_byte_timeout", CFG_MS, H(gateway_first_byte_timeout_ms), "300s",
     "no response head from the agent by then: 504", 100, 3600000},
    {"gateway", "key_poll", CFG_MS, H(gateway_key_poll_ms), "250ms",
     "how often key and user changes (revocations) are looked for", 50, 60000},
    {"gateway", "hold_timeout", CFG_MS, H(gateway_hold_timeout_ms), "10s",
     "hub-billing must grant a request's hold by then, else 503 (re-asked every 500 ms)", 100,
     600000},
    {"gateway", "report_resend", CFG_MS, H(gateway_report_resend_ms), "1s",
     "unacknowledged usage reports are re-sent to hub-billing this often", 50, 600000},
    {"bus", "billing_router", CFG_ENDPOINT, H(billing_router), "ipc://billing.ipc",
     "ROUTER bound by hub-billing for gateways (holds, usage reports)", 0, 0},
    {"bus", "billing_tap", CFG_ENDPOINT, H(billing_tap), "ipc://tap-billing.ipc",
     "XPUB mirror of hub-billing's envelopes for bus-tap (\"\" = off)", 0, 0},
    {"billing", "metrics_listen", CFG_LISTEN, H(billing_metrics_listen), "127.0.0.1:9103",
     "Prometheus metrics (\"\" = off)", 0, 0},
    {"billing", "fee_ppm", CFG_INT, H(billing_fee_ppm), "0",
     "the hub's fee in parts per million of each request's cost (100000 = 10 %)", 0, 1000000},
    {"billing", "default_max_tokens", CFG_INT, H(billing_default_max_tokens), "4096",
     "output tokens a hold reserves when the request gives no max_tokens", 1, 100000000},
    {"billing", "hold_ttl", CFG_MS, H(billing_hold_ttl_ms), "1h",
     "a hold is released this long after it was granted if its request never settles", 1000,
     604800000},
    {"billing", "unpriced", CFG_STR, H(billing_unpriced), "refuse",
     "models without a price: refuse (503 model_not_priced) or free", 0, 0},
    {"billing", "agent_grace", CFG_MS, H(billing_agent_grace_ms), "30s",
     "an agent's usage report settles alone when no gateway report came by then", 100,
     86400000},
    {"billing", "resend", CFG_MS, H(billing_resend_ms), "2s",
     "unacknowledged ledger rows are re-sent to their agent this often", 50, 600000},
    {"billing", "poll", CFG_MS, H(billing_poll_ms), "250ms",
     "queued top-ups and new prices are looked for this often", 50, 60000},
    {"billing", "batch", CFG_INT, H(billing_batch), "256",
     "most holds, reports or settlements written in one transaction", 1, 100000},
    {"log", "level", CFG_LEVEL, H(log_level), "info", "error, warn, info or debug", 0, 0},
    CFG_END,
};

int hub_config_load(hub_config_t *cfg, const char *file, char *const *sets, size_t n_sets,
                    char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    cfg_spec_t spec = {hub_config_table, cfg, NULL, NULL};
    int rc = cfg_load(&spec, file, sets, n_sets, err, errlen);
    if (rc != 0)
        return rc;
    rc = -EINVAL;
    if (strcmp(cfg->store_backend, "sqlite") != 0 && strcmp(cfg->store_backend, "mysql") != 0) {
        snprintf(err, errlen, "store.backend: must be sqlite or mysql (got \"%s\")",
                 cfg->store_backend);
    } else if (strcmp(cfg->store_backend, "mysql") == 0 && !cfg->mysql_url[0]) {
        snprintf(err, errlen, "store.mysql_url: required when store.backend = mysql");
    } else if (cfg->tunnel_dead_after_ms <= cfg->tunnel_heartbeat_ms) {
        snprintf(err, errlen, "tunnel.dead_after: must be longer than tunnel.heartbeat");
    } else {
        return 0;
    }
    hub_config_free(cfg);
    return rc;
}

void hub_config_free(hub_config_t *cfg)
{
    cfg_spec_t spec = {hub_config_table, cfg, NULL, NULL};
    cfg_free(&spec);
}

int hub_config_store_params(const hub_config_t *cfg, store_params_t *out, char *err,
                            size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (store_backend_parse(cfg->store_backend, &out->backend) != 0) {
        snprintf(err, errlen, "store.backend: must be sqlite or mysql");
        return -EINVAL;
    }
    out->sqlite_path = cfg->sqlite_path;
    out->mysql_url = cfg->mysql_url;
    return 0;
}
