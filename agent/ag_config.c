/* ag_config: agent.conf keys, defaults and checks. */
#include "ag_config.h"
#include "ag_proto.h"
#include "bus_log.h"
#include "bus_plat.h"
#include "tlscert.h"

#include <arpa/inet.h>
#include <sodium.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define A(f) offsetof(ag_config_t, f)

const cfg_entry_t ag_config_table[] = {
    {"hub", "url", CFG_STR, A(hub_url), NULL, "wss://HOST:PORT/tunnel/connect (required)", 0, 0},
    {"hub", "pin", CFG_STR, A(hub_pin), NULL,
     "sha256/<base64> pin of the hub certificate's public key (required)", 0, 0},
    {"hub", "reconnect_base", CFG_MS, A(reconnect_base_ms), "500ms",
     "first reconnect delay ceiling (full jitter)", 10, 600000},
    {"hub", "reconnect_cap", CFG_MS, A(reconnect_cap_ms), "30s", "largest reconnect delay", 10,
     3600000},
    {"hub", "reconnect_reset", CFG_MS, A(reconnect_reset_ms), "60s",
     "a connection up this long resets the backoff", 0, 86400000},
    {"hub", "dead_after", CFG_MS, A(dead_after_ms), "45s",
     "hub silence after which the agent reconnects", 300, 86400000},
    {"identity", "key_file", CFG_PATH, A(key_file), "agent.key", "Ed25519 key (mode 0600)", 0,
     0},
    {"upstream", "connect_to", CFG_STR, A(connect_to), "",
     "TEST ONLY: HOST:PORT:127.0.0.1:PORT[,...] (loopback targets only)", 0, 0},
    {"upstream", "ca_file", CFG_PATH, A(ca_file), "", "TEST ONLY: extra CA for vendor TLS", 0,
     0},
    {"agent", "metrics_listen", CFG_LISTEN, A(metrics_listen), "",
     "Prometheus metrics HOST:PORT (\"\" = off)", 0, 0},
    {"agent", "tap", CFG_ENDPOINT, A(tap), "", "XPUB envelope mirror endpoint (\"\" = off)", 0, 0},
    {"agent", "adapters", CFG_INT, A(adapters), "2",
     "agent-adapter worker processes (started only when an instance is served)", 1, 64},
    {"agent", "adapter_ipc", CFG_ENDPOINT, A(adapter_ipc), "ipc://adapters.ipc",
     "endpoint between agent run and its adapters", 0, 0},
    {"agent", "adapter_exe", CFG_STR, A(adapter_exe), "",
     "agent-adapter executable (\"\" = the one beside agent)", 0, 0},
    {"agent", "ledger_ipc", CFG_ENDPOINT, A(ledger_ipc), "ipc://ledger.ipc",
     "ROUTER endpoint agent-ledger connects to", 0, 0},
    {"agent", "ledger_exe", CFG_STR, A(ledger_exe), "",
     "agent-ledger executable (\"\" = the one beside agent)", 0, 0},
    {"agent", "ledger_metrics_listen", CFG_LISTEN, A(ledger_metrics_listen), "",
     "agent-ledger's Prometheus metrics: disputes, unbilled, rows (\"\" = off)", 0, 0},
    {"agent", "ledger_db", CFG_PATH, A(ledger_db), "agent-ledger.db",
     "the agent's ledger database (SQLite, WAL)", 0, 0},
    {"agent", "ledger_resend", CFG_MS, A(ledger_resend_ms), "2s",
     "unacknowledged usage reports are re-sent to the hub this often", 50, 600000},
    {"agent", "ledger_wait", CFG_MS, A(ledger_wait_ms), "10s",
     "a ledger row for a request still in flight waits this long for its usage record", 10,
     600000},
    {"agent", "vendor_retries", CFG_INT, A(vendor_retries), "2",
     "extra attempts at a vendor call after the first (connection failures, 429, 5xx; only "
     "before the first answer byte went to the hub)", 0, 10},
    {"agent", "vendor_retry_max", CFG_MS, A(vendor_retry_max_ms), "30s",
     "time budget of one request's retries, waits included", 0, 600000},
    {"agent", "vendor_retry_body_bytes", CFG_BYTES, A(vendor_retry_body_bytes), "1MiB",
     "largest request body kept in the adapter to be sent again (0 = bodies not retried)", 0,
     AG_MAX_BODY_BYTES},
    {"upstream", "connect_timeout", CFG_MS, A(connect_timeout_ms), "10s",
     "vendor connection timeout (TCP and TLS)", 100, 600000},
    {"upstream", "http2", CFG_BOOL, A(http2), "true",
     "offer HTTP/2 to vendors (streams multiplexed on one connection)", 0, 0},
    {"log", "level", CFG_LEVEL, A(log_level), "info", "error, warn, info or debug", 0, 0},
    CFG_END,
};

/* Collects [instance.NAME] sections and every key in them; ag_vendor checks the keys. */
static int s_instance_key(void *arg, const char *section, const char *key, const char *value,
                          int line, char *err, size_t errlen)
{
    ag_config_t *cfg = arg;
    if (strncmp(section, "instance.", 9) != 0 || !section[9]) {
        snprintf(err, errlen, "%sunknown section [%s]", line ? "" : "--set: ", section);
        return -1;
    }
    size_t i;
    for (i = 0; i < cfg->n_instances; i++) {
        if (strcmp(cfg->instances[i], section + 9) == 0)
            break;
    }
    if (i == cfg->n_instances) {
        if (i == AG_MAX_INSTANCES) {
            snprintf(err, errlen, "[%s]: more than %d instances", section, AG_MAX_INSTANCES);
            return -1;
        }
        cfg->instance_kv[i] = calloc(1, sizeof *cfg->instance_kv[i]);
        cfg->instances[i] = strdup(section + 9);
        if (!cfg->instances[i] || !cfg->instance_kv[i]) {
            free(cfg->instances[i]);
            free(cfg->instance_kv[i]);
            cfg->instances[i] = NULL;
            cfg->instance_kv[i] = NULL;
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        cfg->n_instances++;
    }
    if (strcmp(key, "vendor") == 0) {
        free(cfg->instance_vendor[i]);
        cfg->instance_vendor[i] = strdup(value);
    }
    ag_instance_kv_t *kv = cfg->instance_kv[i];
    size_t k;
    for (k = 0; k < kv->n && strcmp(kv->key[k], key) != 0; k++)
        ;
    if (k == kv->n) {
        if (k == AG_MAX_INSTANCE_KEYS) {
            snprintf(err, errlen, "[%s]: more than %d keys", section, AG_MAX_INSTANCE_KEYS);
            return -1;
        }
        kv->key[k] = strdup(key);
        if (!kv->key[k]) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        kv->n++;
    }
    char *v = strdup(value);
    if (!v) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (kv->value[k]) {
        sodium_memzero(kv->value[k], strlen(kv->value[k]));
        free(kv->value[k]);
    }
    kv->value[k] = v;
    return 0;
}

int ag_parse_hub_url(const char *url, char *host, size_t hostlen, int *port, char *path,
                     size_t pathlen)
{
    if (!url || strncmp(url, "wss://", 6) != 0)
        return -EINVAL;
    const char *h = url + 6;
    const char *slash = strchr(h, '/');
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    char hostport[300];
    if (hl == 0 || hl >= sizeof hostport)
        return -EINVAL;
    memcpy(hostport, h, hl);
    hostport[hl] = '\0';
    if (cfg_split_listen(hostport, host, hostlen, port) != 0 || *port <= 0)
        return -EINVAL;
    snprintf(path, pathlen, "%s", slash ? slash : "/");
    return 0;
}

int ag_check_connect_to(const char *list, char *err, size_t errlen)
{
    if (!list || !*list)
        return 0;
    char *copy = strdup(list), *save = NULL;
    if (!copy)
        return -ENOMEM;
    int rc = 0;
    for (char *e = strtok_r(copy, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
        while (*e == ' ')
            e++;
        /* HOST:PORT:ADDR:PORT — the third field is the address actually dialled. */
        char *f[5] = {0};
        char *s2 = NULL;
        int n = 0;
        /* Up to five fields, so that a fifth one is seen (and refused). */
        for (char *t = strtok_r(e, ":", &s2); t && n < 5; t = strtok_r(NULL, ":", &s2))
            f[n++] = t;
        if (n != 4) {
            snprintf(err, errlen, "upstream.connect_to: \"%s\" is not HOST:PORT:ADDR:PORT", e);
            rc = -EINVAL;
            break;
        }
        /* An IPv4 literal in 127/8 or "localhost": a name such as "127.example.com" would be
         * resolved by DNS and could point anywhere. */
        struct in_addr a4;
        bool loopback = inet_pton(AF_INET, f[2], &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
        if (!loopback && strcmp(f[2], "localhost") != 0) {
            snprintf(err, errlen,
                     "upstream.connect_to: target %s is not a loopback address (test-only key)",
                     f[2]);
            rc = -EINVAL;
            break;
        }
    }
    free(copy);
    return rc;
}

int ag_config_load(ag_config_t *cfg, const char *file, char *const *sets, size_t n_sets,
                   char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    cfg_spec_t spec = {ag_config_table, cfg, s_instance_key, cfg};
    int rc = cfg_load(&spec, file, sets, n_sets, err, errlen);
    if (rc != 0)
        goto fail;
    char host[256], path[256];
    int port;
    rc = -EINVAL;
    if (ag_parse_hub_url(cfg->hub_url, host, sizeof host, &port, path, sizeof path) != 0) {
        snprintf(err, errlen, "hub.url: expected wss://HOST:PORT/tunnel/connect (got \"%s\")",
                 cfg->hub_url);
        goto fail;
    }
    if (!tls_pin_valid(cfg->hub_pin)) {
        snprintf(err, errlen, "hub.pin: expected sha256/<44 base64 characters>");
        goto fail;
    }
    rc = ag_check_connect_to(cfg->connect_to, err, errlen);
    if (rc != 0)
        goto fail;
    cfg->dir = file ? plat_dirname(file) : strdup(".");
    if (!cfg->dir) {
        rc = -ENOMEM;
        goto fail;
    }
    return 0;
fail:
    ag_config_free(cfg);
    return rc;
}

void ag_config_free(ag_config_t *cfg)
{
    cfg_spec_t spec = {ag_config_table, cfg, NULL, NULL};
    cfg_free(&spec);
    for (size_t i = 0; i < cfg->n_instances; i++) {
        free(cfg->instances[i]);
        free(cfg->instance_vendor[i]);
        cfg->instances[i] = NULL;
        cfg->instance_vendor[i] = NULL;
        ag_instance_kv_t *kv = cfg->instance_kv[i];
        for (size_t k = 0; kv && k < kv->n; k++) {
            free(kv->key[k]);
            if (kv->value[k]) /* values may be API keys: wipe them */
                sodium_memzero(kv->value[k], strlen(kv->value[k]));
            free(kv->value[k]);
        }
        free(kv);
        cfg->instance_kv[i] = NULL;
    }
    cfg->n_instances = 0;
    free(cfg->dir);
    cfg->dir = NULL;
}
