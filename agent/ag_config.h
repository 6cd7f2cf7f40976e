/* ag_config: the agent's configuration (DIR/agent.conf). */
#ifndef AG_CONFIG_H
#define AG_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "bus_config.h"

#define AG_MAX_INSTANCES 64

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
    /* [log] */
    int log_level;               /* log_level_t */
    /* [instance.NAME] sections seen (vendors are added by later work; none is served yet) */
    char *instances[AG_MAX_INSTANCES]; /* section names */
    char *instance_vendor[AG_MAX_INSTANCES]; /* their vendor keys */
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
