/* ag_config: the agent's configuration (DIR/agent.conf). */
#ifndef AG_CONFIG_H
#define AG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus_config.h"

#define AG_MAX_INSTANCES 64
#define AG_MAX_INSTANCE_KEYS 24 /* key = value lines kept per [instance.NAME] section */

/* The raw key = value pairs of one [instance.NAME] section (a later value replaces an earlier
 * one); ag_vendor checks them. */
typedef struct {
    char *key[AG_MAX_INSTANCE_KEYS];   /* key names */
    char *value[AG_MAX_INSTANCE_KEYS]; /* their values (may hold secrets: never log them) */
    size_t n;                          /* pairs used */
} ag_instance_kv_t;

typedef struct {
    /* [hub] */
    char *hub_url;               /* wss://HOST:PORT/tunnel/connect */
    char *hub_pin;               /* sha256/<base64 SPKI hash> of the hub certificate */
    int64_t reconnect_base_ms;   /* first backoff ceiling */
    int64_t reconnect_cap_ms;    /* largest backoff ceiling */
    int64_t reconnect_reset_ms;  /* uptime that resets the backoff */
    int64_t dead_after_ms;       /* hub silence before reconnecting (welcome may shorten it) */
    /* [identity] */
    char *key_file;              /* Ed25519 key, mode 0600 */
    /* [upstream] */
    char *connect_to;            /* test-only HOST:PORT:127.0.0.1:PORT[,…] */
    char *ca_file;               /* test-only extra CA for vendor TLS */
    /* [agent] */
    char *metrics_listen;        /* Prometheus metrics ("" = off) */
    char *tap;                   /* XPUB envelope mirror ("" = off) */
    int64_t adapters;            /* agent-adapter workers supervised by `agent run` */
    char *adapter_ipc;           /* ROUTER endpoint the adapters connect to */
    char *adapter_exe;           /* agent-adapter executable ("" = beside the agent's) */
    char *ledger_ipc;            /* ROUTER endpoint agent-ledger connects to */
    char *ledger_exe;            /* agent-ledger executable ("" = beside the agent's) */
    char *ledger_metrics_listen; /* agent-ledger's Prometheus metrics ("" = off) */
    char *ledger_db;             /* the agent's ledger database (SQLite, WAL) */
    int64_t ledger_resend_ms;    /* unacknowledged usage reports are re-sent this often */
    int64_t ledger_wait_ms;      /* a ledger.tx for a request still in flight waits this long
                                    for its usage record, then is written without it */
    int64_t vendor_retries;      /* extra attempts at a vendor call after the first (0-10) */
    int64_t vendor_retry_max_ms; /* time budget of one request's retries, waits included */
    int64_t vendor_retry_body_bytes; /* largest request body an adapter keeps to send again
                                        (0: requests with a body are not retried) */
    /* [upstream] */
    int64_t connect_timeout_ms;  /* vendor connection (TCP + TLS) timeout */
    bool http2;                  /* offer HTTP/2 to vendors (multiplexed), else HTTP/1.1 */
    /* [log] */
    int log_level;               /* log_level_t */
    /* [instance.NAME] sections seen, in order of first appearance (ag_vendor builds them) */
    char *instances[AG_MAX_INSTANCES]; /* section names */
    char *instance_vendor[AG_MAX_INSTANCES]; /* their vendor keys */
    ag_instance_kv_t *instance_kv[AG_MAX_INSTANCES]; /* every key of each section */
    size_t n_instances;
    char *dir;                   /* the agent's directory (the config file's) */
} ag_config_t;

extern const cfg_entry_t ag_config_table[];

/* Loads agent.conf and overrides. 0 or a negative errno with one line in err. */
int ag_config_load(ag_config_t *cfg, const char *file, char *const *sets, size_t n_sets,
                   char *err, size_t errlen);
void ag_config_free(ag_config_t *cfg);

/* Splits a wss:// URL into host, port and path. 0 or -EINVAL. */
int ag_parse_hub_url(const char *url, char *host, size_t hostlen, int *port, char *path,
                     size_t pathlen);

/* Checks a connect_to list: every entry HOST:PORT:ADDR:PORT with ADDR on loopback. */
int ag_check_connect_to(const char *list, char *err, size_t errlen);

#endif
