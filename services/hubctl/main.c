/* hubctl: the hub operator's command line (init, agents, users, API keys, top-ups, balances,
 * prices, the ledger). */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zmq.h>

#include "apikey.h"
#include "bus_config.h"
#include "bus_env.h"
#include "bus_log.h"
#include "bus_plat.h"
#include "hub_config.h"
#include "identity.h"
#include "ledger.h"
#include "money.h"
#include "store/store.h"
#include "tlscert.h"

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage:\n"
            "  hubctl init --dir DIR [--store sqlite|mysql] [--mysql-url mysql://u:p@h:port/db]\n"
            "              [--set section.key=value]...\n"
            "      writes DIR/hub.conf, DIR/hub.key, DIR/hub.crt, creates the database schema;\n"
            "      prints pin: and admin_token:\n"
            "  hubctl [--config DIR/hub.conf] agent add NAME --pubkey BASE64\n"
            "  hubctl [--config DIR/hub.conf] agent list\n"
            "  hubctl [--config DIR/hub.conf] agent disable ID\n"
            "  hubctl [--config DIR/hub.conf] agent enable ID\n"
            "  hubctl [--config DIR/hub.conf] user add NAME\n"
            "      prints user_id: and name:\n"
            "  hubctl [--config DIR/hub.conf] user list\n"
            "  hubctl [--config DIR/hub.conf] user disable NAME | user enable NAME\n"
            "  hubctl [--config DIR/hub.conf] user topup NAME AMOUNT\n"
            "      queues AMOUNT (currency units, e.g. 10.5) for hub-billing, which applies it;\n"
            "      waits up to 3 s and prints the new balance, or that it is queued\n"
            "  hubctl [--config DIR/hub.conf] balance NAME\n"
            "      balance, held (active holds) and pending (queued top-ups), 6 decimals\n"
            "  hubctl [--config DIR/hub.conf] key create USER\n"
            "      prints key_id: and the key (sk-...) on its own line, once: it is stored\n"
            "      only as a hash and cannot be shown again\n"
            "  hubctl [--config DIR/hub.conf] key list [USER]\n"
            "      key ids, status and the first characters of each key, never the key\n"
            "  hubctl [--config DIR/hub.conf] key revoke KEY_ID\n"
            "  hubctl [--config DIR/hub.conf] key check < FILE\n"
            "      reads a key from standard input and tells whether it is valid (exit 0)\n"
            "  hubctl [--config DIR/hub.conf] price set MODEL --input X --output Y\n"
            "              [--cached-input Z] [--from UNIX_MS|now]\n"
            "      adds a price version: currency units per 1M tokens (cached input defaults to\n"
            "      the input price), in force from --from (default now)\n"
            "  hubctl [--config DIR/hub.conf] price list\n"
            "  hubctl [--config DIR/hub.conf] ledger AGENT_ID [--from SEQ]\n"
            "      the agent's ledger rows from SEQ (default 1)\n"
            "  hubctl [--config DIR/hub.conf] ledger verify AGENT_ID\n"
            "      checks the agent's whole hash chain; exit 1 at the first fault\n"
            "  hubctl [--config DIR/hub.conf] migrate\n"
            "  hubctl --help | --version\n\n"
            "Exit status: 0 done, 1 not found or failed, 2 bad usage.\n"
            "--config defaults to ./hub.conf. hub.conf keys:\n");
    cfg_print_help(hub_config_table, out);
}

/* Opens the configured store. Returns 0 or an exit code (message printed). */
static int s_open_store(const hub_config_t *cfg, store_t **st)
{
    store_params_t sp;
    char err[512];
    if (hub_config_store_params(cfg, &sp, err, sizeof err) != 0 ||
        store_open(&sp, st, err, sizeof err) != 0) {
        fprintf(stderr, "hubctl: store: %s\n", err);
        return 1;
    }
    int version = 0;
    if (store_schema_version(*st, &version) != 0 || version == 0) {
        fprintf(stderr, "hubctl: the database has no schema yet: run hubctl init or migrate\n");
        store_destroy(st);
        return 1;
    }
    return 0;
}

/* Sends one envelope from a short-lived DEALER to a service's ROUTER (endpoint as hub.conf
 * gives it, already resolved against the config's directory). Best effort: the services' polls
 * stay the guarantee, and a service that is not running simply does not hear it. */
static void s_bus_send(const char *endpoint, const bus_env_t *env)
{
    if (!endpoint || !endpoint[0])
        return;
    bus_buf_t buf;
    bus_buf_init(&buf, 256);
    void *ctx = zmq_ctx_new();
    void *sock = ctx ? zmq_socket(ctx, ZMQ_DEALER) : NULL;
    if (sock && bus_env_encode(env, &buf) == 0) {
        int linger = 300; /* long enough to hand the message to a running service */
        zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
        if (zmq_connect(sock, endpoint) == 0)
            zmq_send(sock, buf.data, buf.len, ZMQ_DONTWAIT);
    }
    if (sock)
        zmq_close(sock);
    if (ctx)
        zmq_ctx_term(ctx);
    bus_buf_free(&buf);
}

/* Writes hub.conf with every key of the table, using defaults overridden by sets. */
static int s_write_hub_conf(const char *path, const char *backend, const char *mysql_url,
                            const char *token, char *const *sets, size_t n_sets)
{
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    len += (size_t)snprintf(buf + len, cap - len,
                            "# relayhub hub configuration (hubctl init). Every hub process reads "
                            "this file;\n# relative paths are relative to this directory.\n");
    const char *section = "";
    for (const cfg_entry_t *e = hub_config_table; e->section; e++) {
        const char *value = e->def ? e->def : "";
        char setbuf[512];
        if (strcmp(e->section, "store") == 0 && strcmp(e->key, "backend") == 0)
            value = backend;
        if (strcmp(e->section, "store") == 0 && strcmp(e->key, "mysql_url") == 0)
            value = mysql_url ? mysql_url : "";
        if (strcmp(e->section, "tunnel") == 0 && strcmp(e->key, "admin_token") == 0)
            value = token;
        for (size_t i = 0; i < n_sets; i++) {
            snprintf(setbuf, sizeof setbuf, "%s.%s=", e->section, e->key);
            if (strncmp(sets[i], setbuf, strlen(setbuf)) == 0)
                value = sets[i] + strlen(setbuf);
        }
        if (strcmp(section, e->section) != 0) {
            section = e->section;
            len += (size_t)snprintf(buf + len, cap - len, "\n[%s]\n", section);
        }
        len += (size_t)snprintf(buf + len, cap - len, "# %s\n%s = %s\n", e->help, e->key, value);
        if (len + 1024 > cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                return -ENOMEM;
            }
            buf = nb;
        }
    }
    /* hub.conf holds the admin token and maybe database credentials: owner-only. */
    int rc = plat_write_file(path, buf, len, 1, 1);
    sodium_memzero(buf, len);
    free(buf);
    return rc;
}

static int s_cmd_init(const cfg_cli_t *cli)
{
    const char *dir = cfg_cli_opt(cli, "--dir");
    const char *backend = cfg_cli_opt(cli, "--store");
    const char *mysql_url = cfg_cli_opt(cli, "--mysql-url");
    char err[512];
    if (!dir) {
        fprintf(stderr, "hubctl init: --dir DIR is required\n");
        return 2;
    }
    if (!backend)
        backend = mysql_url ? "mysql" : "sqlite";
    if (strcmp(backend, "sqlite") != 0 && strcmp(backend, "mysql") != 0) {
        fprintf(stderr, "hubctl init: --store must be sqlite or mysql\n");
        return 2;
    }
    if (strcmp(backend, "mysql") == 0 && !mysql_url) {
        fprintf(stderr, "hubctl init: --store mysql needs --mysql-url mysql://user:pass@host:port/db\n");
        return 2;
    }
    int rc = plat_mkdir_private(dir);
    if (rc != 0) {
        fprintf(stderr, "hubctl init: cannot create %s: %s\n", dir, strerror(-rc));
        return 1;
    }
    char *conf = plat_path_join(dir, "hub.conf");
    char *key = plat_path_join(dir, "hub.key");
    char *crt = plat_path_join(dir, "hub.crt");
    int ret = 1;
    struct stat st;
    hub_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    store_t *store = NULL;
    if (!conf || !key || !crt)
        goto out;
    if (stat(conf, &st) == 0) {
        fprintf(stderr, "hubctl init: %s exists: refusing to overwrite\n", conf);
        goto out;
    }
    uint8_t raw[32];
    char token[64];
    plat_random(raw, sizeof raw);
    sodium_bin2base64(token, sizeof token, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    rc = s_write_hub_conf(conf, backend, mysql_url, token, cli->sets, cli->n_sets);
    if (rc != 0) {
        fprintf(stderr, "hubctl init: cannot write %s: %s\n", conf, strerror(-rc));
        goto out;
    }
    /* Read it back through the same table every process uses: what we wrote must load. */
    if (hub_config_load(&cfg, conf, NULL, 0, err, sizeof err) != 0) {
        fprintf(stderr, "hubctl init: %s\n", err);
        remove(conf);
        ret = 2;
        goto out;
    }
    if (stat(cfg.tunnel_key, &st) != 0 && stat(cfg.tunnel_cert, &st) != 0) {
        rc = tls_make_self_signed(cfg.tunnel_key, cfg.tunnel_cert, NULL);
        if (rc != 0) {
            fprintf(stderr, "hubctl init: cannot create the TLS key and certificate: %s\n",
                    strerror(-rc));
            remove(conf);
            goto out;
        }
    }
    store_params_t sp;
    if (hub_config_store_params(&cfg, &sp, err, sizeof err) != 0 ||
        store_open(&sp, &store, err, sizeof err) != 0) {
        fprintf(stderr, "hubctl init: store: %s\n", err);
        remove(conf);
        goto out;
    }
    rc = store_migrate(store);
    if (rc < 0) {
        fprintf(stderr, "hubctl init: migration failed: %s\n", store_last_error(store));
        remove(conf);
        goto out;
    }
    char pin[TLS_PIN_MAX];
    if (tls_pin_of_file(cfg.tunnel_cert, pin, sizeof pin) != 0) {
        fprintf(stderr, "hubctl init: cannot read %s\n", cfg.tunnel_cert);
        goto out;
    }
    printf("config: %s\npin: %s\nadmin_token: %s\n", conf, pin, token);
    sodium_memzero(token, sizeof token);
    ret = 0;
out:
    store_destroy(&store);
    hub_config_free(&cfg);
    free(conf);
    free(key);
    free(crt);
    return ret;
}

/* Checks an agent name: 1..128 printable characters, no control characters. */
static int s_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > STORE_AGENT_NAME_MAX)
        return 0;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return 0;
    }
    return 1;
}

static int s_cmd_agent(const cfg_cli_t *cli, char **words, size_t n, const hub_config_t *cfg)
{
    store_t *st = NULL;
    if (n < 1) {
        fprintf(stderr, "hubctl agent: add, list, disable or enable\n");
        return 2;
    }
    const char *sub = words[0];
    int rc;
    if (strcmp(sub, "add") == 0) {
        const char *b64 = cfg_cli_opt(cli, "--pubkey");
        if (n != 2 || !b64) {
            fprintf(stderr, "hubctl agent add: usage: hubctl agent add NAME --pubkey BASE64\n");
            return 2;
        }
        if (!s_name_ok(words[1])) {
            fprintf(stderr, "hubctl agent add: NAME must be 1-128 printable characters\n");
            return 2;
        }
        uint8_t pk[ID_PUBKEY_LEN];
        if (id_pubkey_parse(b64, pk) != 0) {
            fprintf(stderr, "hubctl agent add: --pubkey must be a base64 Ed25519 public key "
                            "(agent pubkey prints it)\n");
            return 2;
        }
        char id[ID_AGENT_ID_LEN + 1];
        id_agent_id(pk, id);
        if ((rc = s_open_store(cfg, &st)) != 0)
            return rc;
        rc = store_agent_add(st, id, words[1], pk, (int64_t)time(NULL));
        if (rc == -EEXIST)
            fprintf(stderr, "hubctl agent add: an agent with this key or name exists (id %s)\n",
                    id);
        else if (rc != 0)
            fprintf(stderr, "hubctl agent add: %s\n", store_last_error(st));
        else
            printf("%s\n", id);
        store_destroy(&st);
        return rc == 0 ? 0 : 1;
    }
    if (strcmp(sub, "list") == 0) {
        if ((rc = s_open_store(cfg, &st)) != 0)
            return rc;
        store_agent_t *list = NULL;
        size_t count = 0;
        rc = store_agent_list(st, &list, &count);
        if (rc != 0) {
            fprintf(stderr, "hubctl agent list: %s\n", store_last_error(st));
            store_destroy(&st);
            return 1;
        }
        printf("%-32s  %-8s  %-20s  %-44s  %s\n", "ID", "STATUS", "CREATED", "PUBKEY", "NAME");
        for (size_t i = 0; i < count; i++) {
            char b64[45], when[32];
            time_t t = (time_t)list[i].created_at;
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
            id_pubkey_b64(list[i].pubkey, b64);
            printf("%-32s  %-8s  %-20s  %-44s  %s\n", list[i].id, list[i].status, when, b64,
                   list[i].name);
        }
        free(list);
        store_destroy(&st);
        return 0;
    }
    if (strcmp(sub, "disable") == 0 || strcmp(sub, "enable") == 0) {
        if (n != 2) {
            fprintf(stderr, "hubctl agent %s: usage: hubctl agent %s ID\n", sub, sub);
            return 2;
        }
        if ((rc = s_open_store(cfg, &st)) != 0)
            return rc;
        rc = store_agent_set_status(st, words[1],
                                    strcmp(sub, "disable") == 0 ? "disabled" : "active");
        if (rc == -ENOENT)
            fprintf(stderr, "hubctl agent %s: no agent with id %s\n", sub, words[1]);
        else if (rc != 0)
            fprintf(stderr, "hubctl agent %s: %s\n", sub, store_last_error(st));
        else
            printf("%s %sd\n", words[1], sub);
        store_destroy(&st);
        return rc == 0 ? 0 : 1;
    }
    fprintf(stderr, "hubctl agent: unknown subcommand \"%s\"\n", sub);
    return 2;
}

/* Formats Unix seconds as an ISO 8601 UTC time ("-" for 0). */
static void s_fmt_time(int64_t when, char *buf, size_t cap)
{
    if (when == 0) {
        snprintf(buf, cap, "-");
        return;
    }
    time_t t = (time_t)when;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, cap, "%lld", (long long)when);
}

/* Looks up a user by name for command cmd; prints why not. 0, or an exit code. */
static int s_find_user(store_t *st, const char *cmd, const char *name, store_user_t *u)
{
    int rc = store_user_get_by_name(st, name, u);
    if (rc == -ENOENT) {
        fprintf(stderr, "hubctl %s: no user named \"%s\"\n", cmd, name);
        return 1;
    }
    if (rc != 0) {
        fprintf(stderr, "hubctl %s: %s\n", cmd, store_last_error(st));
        return 1;
    }
    return 0;
}

/* hubctl user add NAME: creates a user and prints its id and name. */
static int s_user_add(store_t *st, const char *name)
{
    int64_t id = 0;
    int rc = store_user_add(st, name, (int64_t)time(NULL), &id);
    if (rc == -EINVAL) {
        fprintf(stderr, "hubctl user add: %s\n", store_last_error(st));
        return 2;
    }
    if (rc == -EEXIST) {
        fprintf(stderr, "hubctl user add: a user named \"%s\" exists\n", name);
        return 1;
    }
    if (rc != 0) {
        fprintf(stderr, "hubctl user add: %s\n", store_last_error(st));
        return 1;
    }
    printf("user_id: %lld\nname: %s\n", (long long)id, name);
    return 0;
}

/* hubctl user list: every user, in id order. */
static int s_user_list(store_t *st)
{
    store_user_t *list = NULL;
    size_t count = 0;
    if (store_user_list(st, &list, &count) != 0) {
        fprintf(stderr, "hubctl user list: %s\n", store_last_error(st));
        return 1;
    }
    printf("%-8s  %-8s  %-20s  %s\n", "ID", "STATUS", "CREATED", "NAME");
    for (size_t i = 0; i < count; i++) {
        char when[32];
        s_fmt_time(list[i].created_at, when, sizeof when);
        printf("%-8lld  %-8s  %-20s  %s\n", (long long)list[i].id, list[i].status, when,
               list[i].name);
    }
    free(list);
    return 0;
}

/* hubctl user disable|enable NAME. */
static int s_user_status(store_t *st, const char *sub, const char *name)
{
    char cmd[32];
    snprintf(cmd, sizeof cmd, "user %s", sub);
    store_user_t u;
    int rc = s_find_user(st, cmd, name, &u);
    if (rc != 0)
        return rc;
    rc = store_user_set_status(st, u.id, strcmp(sub, "disable") == 0 ? "disabled" : "active");
    if (rc != 0) {
        fprintf(stderr, "hubctl %s: %s\n", cmd,
                rc == -ENOENT ? "the user is gone" : store_last_error(st));
        return 1;
    }
    printf("%s %sd\n", name, sub);
    return 0;
}

/* Now, in Unix milliseconds (the billing tables' time unit). */
static int64_t s_now_ms(void)
{
    return (int64_t)(plat_wall_us() / 1000);
}

/* Sleeps ms milliseconds (a wait for another process, never on a service's loop). */
static void s_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Asks hub-billing to act at once on what hubctl just wrote ("topups" or "prices") rather than
 * at its next poll (billing.poll), which stays the guarantee. */
static void s_poke_billing(const hub_config_t *cfg, const char *what)
{
    bus_env_t env;
    bus_env_init(&env, BUS_T_BILLING_POKE, NULL);
    env.u.billing_poke.what = bus_str_c(what);
    s_bus_send(cfg->billing_router, &env);
}

/* hubctl user topup USER AMOUNT: queues the top-up (hub-billing is the only writer of
 * balances), pokes hub-billing, and waits up to 3 s to report the balance it produced. */
static int s_user_topup(store_t *st, const hub_config_t *cfg, const char *name,
                        const char *amount_text)
{
    int64_t amount = 0;
    int rc = money_parse(amount_text, 0, &amount);
    if (rc != 0 || amount <= 0) {
        fprintf(stderr,
                "hubctl user topup: AMOUNT must be a positive decimal in currency units with at "
                "most 6 decimals (e.g. 10.5), not \"%s\"%s\n",
                amount_text, rc == -ERANGE ? " (too large)" : "");
        return 2;
    }
    store_user_t u;
    if ((rc = s_find_user(st, "user topup", name, &u)) != 0)
        return rc;
    int64_t id = 0;
    rc = store_topup_add(st, u.id, amount, s_now_ms(), &id);
    if (rc != 0) {
        fprintf(stderr, "hubctl user topup: %s\n",
                rc == -ENOENT ? "the user is gone" : store_last_error(st));
        return 1;
    }
    s_poke_billing(cfg, "topups");
    char amt[MONEY_TEXT_MAX], bal[MONEY_TEXT_MAX];
    money_format(amount, amt);
    uint64_t deadline = plat_mono_us() + 3000000;
    for (;;) {
        rc = store_topup_applied(st, id);
        if (rc != 0 || plat_mono_us() >= deadline)
            break;
        s_sleep_ms(50);
    }
    /* From here on the top-up is durable: whatever follows exits 0, so that a script never
     * retries it and tops up twice. */
    store_balance_t b;
    if (rc == 1 && store_balance_get(st, u.id, &b) == 0) {
        money_format(b.balance, bal);
        printf("topup: %s +%s balance %s\n", u.name, amt, bal);
    } else if (rc == 1) {
        printf("topup: %s +%s applied\n", u.name, amt);
        fprintf(stderr, "hubctl user topup: the new balance cannot be read: %s\n",
                store_last_error(st));
    } else {
        printf("topup: %s +%s queued (hub-billing is not running; it applies it at start)\n",
               u.name, amt);
        if (rc < 0)
            fprintf(stderr, "hubctl user topup: top-up %lld is queued, but its state cannot be "
                            "read: %s\n",
                    (long long)id, store_last_error(st));
    }
    return 0;
}

/* hubctl user SUBCOMMAND ...: checks the words, opens the store, runs the subcommand. */
static int s_cmd_user(char **words, size_t n, const hub_config_t *cfg)
{
    const char *sub = n >= 1 ? words[0] : "";
    bool named =
        strcmp(sub, "add") == 0 || strcmp(sub, "disable") == 0 || strcmp(sub, "enable") == 0;
    bool topup = strcmp(sub, "topup") == 0;
    if (named && n != 2) {
        fprintf(stderr, "hubctl user %s: usage: hubctl user %s NAME\n", sub, sub);
        return 2;
    }
    if (topup && n != 3) {
        fprintf(stderr, "hubctl user topup: usage: hubctl user topup NAME AMOUNT\n");
        return 2;
    }
    if (!named && !topup && strcmp(sub, "list") != 0) {
        if (n)
            fprintf(stderr,
                    "hubctl user: unknown subcommand \"%s\" (add, list, disable, "
                    "enable, topup)\n",
                    sub);
        else
            fprintf(stderr, "hubctl user: add, list, disable, enable or topup\n");
        return 2;
    }
    if (strcmp(sub, "list") == 0 && n != 1) {
        fprintf(stderr, "hubctl user list: takes no arguments\n");
        return 2;
    }
    store_t *st = NULL;
    int rc = s_open_store(cfg, &st);
    if (rc != 0)
        return rc;
    if (strcmp(sub, "add") == 0)
        rc = s_user_add(st, words[1]);
    else if (strcmp(sub, "list") == 0)
        rc = s_user_list(st);
    else if (topup)
        rc = s_user_topup(st, cfg, words[1], words[2]);
    else
        rc = s_user_status(st, sub, words[1]);
    store_destroy(&st);
    return rc;
}

/* hubctl key create USER: makes a key and prints its id and the secret, once. The secret is
 * written to stdout only (never stderr, never a log) and wiped from memory afterwards. */
static int s_key_create(store_t *st, const char *user)
{
    store_user_t u;
    int rc = s_find_user(st, "key create", user, &u);
    if (rc != 0)
        return rc;
    apikey_t key;
    /* A clash of 60-bit random ids is all but impossible; still, a fresh key beats failing. */
    for (int attempt = 0; attempt < 3; attempt++) {
        rc = apikey_generate(&key);
        if (rc != 0) {
            fprintf(stderr, "hubctl key create: no secure random source\n");
            return 1;
        }
        rc = store_key_add(st, u.id, key.id, key.hash, key.prefix, (int64_t)time(NULL));
        if (rc != -EEXIST)
            break;
        apikey_wipe(&key);
    }
    if (rc != 0) {
        apikey_wipe(&key);
        fprintf(stderr, "hubctl key create: %s\n",
                rc == -ENOENT ? "the user is gone" : store_last_error(st));
        return 1;
    }
    char key_id[sizeof key.id];
    memcpy(key_id, key.id, sizeof key_id);
    printf("key_id: %s\nuser: %s\n%s\n", key.id, u.name, key.secret);
    int lost = fflush(stdout) != 0 || ferror(stdout);
    apikey_wipe(&key);
    if (lost) {
        /* Nobody saw the secret: a key that cannot be handed out must not stay valid. */
        store_key_revoke(st, key_id, (int64_t)time(NULL));
        fprintf(stderr, "hubctl key create: could not write the key to standard output; "
                        "it has been revoked\n");
        return 1;
    }
    fprintf(stderr, "hubctl key create: store the key now: it is kept only as a hash and "
                    "cannot be shown again\n");
    if (strcmp(u.status, "active") != 0)
        fprintf(stderr,
                "hubctl key create: note: user \"%s\" is %s: the key is refused until "
                "hubctl user enable\n",
                u.name, u.status);
    return 0;
}

/* hubctl key list [USER]: keys with their prefix only. */
static int s_key_list(store_t *st, const char *user)
{
    int64_t uid = 0;
    if (user) {
        store_user_t u;
        int rc = s_find_user(st, "key list", user, &u);
        if (rc != 0)
            return rc;
        uid = u.id;
    }
    store_key_t *list = NULL;
    size_t count = 0;
    if (store_key_list(st, uid, &list, &count) != 0) {
        fprintf(stderr, "hubctl key list: %s\n", store_last_error(st));
        return 1;
    }
    printf("%-16s  %-8s  %-20s  %-20s  %-14s  %s\n", "KEY_ID", "STATUS", "CREATED", "REVOKED",
           "PREFIX", "USER");
    for (size_t i = 0; i < count; i++) {
        char made[32], gone[32], prefix[STORE_KEY_PREFIX_MAX + 8];
        s_fmt_time(list[i].created_at, made, sizeof made);
        s_fmt_time(list[i].revoked_at, gone, sizeof gone);
        snprintf(prefix, sizeof prefix, "sk-%s...", list[i].prefix);
        printf("%-16s  %-8s  %-20s  %-20s  %-14s  %s\n", list[i].id, list[i].status, made, gone,
               prefix, list[i].user_name);
    }
    free(list);
    return 0;
}

/* hubctl key revoke KEY_ID: a second revoke is reported but still succeeds. */
static int s_key_revoke(store_t *st, const char *key_id)
{
    int rc = store_key_revoke(st, key_id, (int64_t)time(NULL));
    if (rc == 0) {
        printf("%s revoked\n", key_id);
        return 0;
    }
    if (rc == -EALREADY) {
        printf("%s was already revoked\n", key_id);
        return 0;
    }
    if (rc == -ENOENT)
        fprintf(stderr, "hubctl key revoke: no key with id %s (see hubctl key list)\n", key_id);
    else
        fprintf(stderr, "hubctl key revoke: %s\n", store_last_error(st));
    return 1;
}

/* hubctl key check: reads one key from stdin (never from the command line, where other users
 * could see it) and reports what the hub would do with it; exit 0 only if it would accept. */
static int s_key_check(store_t *st)
{
    char line[APIKEY_MAX_LEN + 3];
    uint8_t hash[APIKEY_HASH_LEN];
    size_t len = 0;
    int ret = 1;
    if (fgets(line, sizeof line, stdin)) {
        len = strlen(line);
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
    }
    int rc = apikey_parse(line, len, hash);
    sodium_memzero(line, sizeof line);
    if (rc != 0) {
        fprintf(stderr,
                "hubctl key check: standard input holds no API key (sk-[A-Za-z0-9_-]+, "
                "at most %d characters)\n",
                APIKEY_MAX_LEN);
        return 1;
    }
    store_key_t k;
    rc = store_key_lookup(st, hash, &k);
    sodium_memzero(hash, sizeof hash);
    if (rc == -ENOENT) {
        printf("status: unknown\n");
        fprintf(stderr, "hubctl key check: no such key\n");
    } else if (rc != 0) {
        fprintf(stderr, "hubctl key check: %s\n", store_last_error(st));
    } else {
        printf("key_id: %s\nuser: %s\nstatus: %s\nuser_status: %s\n", k.id, k.user_name, k.status,
               k.user_status);
        ret = strcmp(k.status, "active") == 0 && strcmp(k.user_status, "active") == 0 ? 0 : 1;
    }
    return ret;
}

/* hubctl key SUBCOMMAND ...: checks the words, opens the store, runs the subcommand. */
static int s_cmd_key(char **words, size_t n, const hub_config_t *cfg)
{
    const char *sub = n >= 1 ? words[0] : "";
    int bad = 0;
    if (strcmp(sub, "create") == 0 || strcmp(sub, "revoke") == 0)
        bad = n != 2;
    else if (strcmp(sub, "list") == 0)
        bad = n > 2;
    else if (strcmp(sub, "check") == 0)
        bad = n != 1;
    else
        bad = -1;
    if (bad < 0) {
        if (n)
            fprintf(stderr,
                    "hubctl key: unknown subcommand \"%s\" (create, list, revoke, "
                    "check)\n",
                    sub);
        else
            fprintf(stderr, "hubctl key: create, list, revoke or check\n");
        return 2;
    }
    if (bad) {
        static const char *const usage[][2] = {{"create", "key create USER"},
                                               {"revoke", "key revoke KEY_ID"},
                                               {"list", "key list [USER]"},
                                               {"check", "key check < FILE-WITH-KEY"}};
        for (size_t i = 0; i < sizeof usage / sizeof usage[0]; i++)
            if (strcmp(sub, usage[i][0]) == 0)
                fprintf(stderr, "hubctl key %s: usage: hubctl %s\n", sub, usage[i][1]);
        return 2;
    }
    if (strcmp(sub, "revoke") == 0 && strncmp(words[1], APIKEY_SCHEME, 3) == 0) {
        /* Someone pasted the secret: do not echo it; it is also now in their shell history. */
        fprintf(stderr, "hubctl key revoke: give the key id (key_..., see hubctl key list), "
                        "not the key itself\n");
        return 2;
    }
    store_t *st = NULL;
    int rc = s_open_store(cfg, &st);
    if (rc != 0)
        return rc;
    if (strcmp(sub, "create") == 0)
        rc = s_key_create(st, words[1]);
    else if (strcmp(sub, "list") == 0)
        rc = s_key_list(st, n == 2 ? words[1] : NULL);
    else if (strcmp(sub, "revoke") == 0)
        rc = s_key_revoke(st, words[1]);
    else
        rc = s_key_check(st);
    store_destroy(&st);
    return rc;
}

/* Tells running services that the registry changed, so they reload now rather than at their
 * next poll. agent add/disable/enable → "agents"; user disable/enable and key revoke → "keys". */
static void s_notify(const hub_config_t *cfg, const char *what, const char *sub)
{
    const char *topic = NULL;
    if (strcmp(what, "agent") == 0 && (strcmp(sub, "add") == 0 || strcmp(sub, "disable") == 0 ||
                                       strcmp(sub, "enable") == 0))
        topic = "agents";
    else if ((strcmp(what, "user") == 0 &&
              (strcmp(sub, "disable") == 0 || strcmp(sub, "enable") == 0)) ||
             (strcmp(what, "key") == 0 && strcmp(sub, "revoke") == 0))
        topic = "keys";
    if (!topic)
        return;
    bus_env_t env;
    bus_env_init(&env, BUS_T_REGISTRY_CHANGED, NULL);
    env.u.registry_changed.what = bus_str_c(topic);
    s_bus_send(cfg->tunnel_router, &env);
}

/* ---- billing: balances, prices, the ledger ---------------------------------------------- */

/* Formats Unix milliseconds as ISO 8601 UTC with milliseconds ("2026-11-26T06:26:38.123Z"). */
static void s_fmt_time_ms(int64_t ms, char *buf, size_t cap)
{
    int64_t sec = ms / 1000, frac = ms % 1000;
    if (frac < 0) {
        frac += 1000;
        sec--;
    }
    time_t t = (time_t)sec;
    struct tm tm;
    char whole[40];
    if (!gmtime_r(&t, &tm) || strftime(whole, sizeof whole, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        snprintf(buf, cap, "%lld", (long long)ms);
    else
        snprintf(buf, cap, "%s.%03lldZ", whole, (long long)frac);
}

/* Parses a non-negative decimal integer (digits only, no sign, no spaces). 0 or -EINVAL. */
static int s_parse_u63(const char *text, int64_t *out)
{
    int64_t v = 0;
    if (!text || !*text)
        return -EINVAL;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9' || v > (INT64_MAX - (*p - '0')) / 10)
            return -EINVAL;
        v = v * 10 + (*p - '0');
    }
    *out = v;
    return 0;
}

/* Lowercase hex of n bytes into out (2n + 1 bytes). */
static void s_hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

/* hubctl balance USER: balance, active holds and queued top-ups, 6 decimals each. */
static int s_cmd_balance(char **words, size_t n, const hub_config_t *cfg)
{
    if (n != 1) {
        fprintf(stderr, "hubctl balance: usage: hubctl balance USER\n");
        return 2;
    }
    store_t *st = NULL;
    int rc = s_open_store(cfg, &st);
    if (rc != 0)
        return rc;
    store_user_t u;
    store_balance_t b;
    if ((rc = s_find_user(st, "balance", words[0], &u)) == 0) {
        rc = store_balance_get(st, u.id, &b);
        if (rc != 0) {
            fprintf(stderr, "hubctl balance: %s\n",
                    rc == -ENOENT ? "the user is gone" : store_last_error(st));
            rc = 1;
        } else {
            char bal[MONEY_TEXT_MAX], held[MONEY_TEXT_MAX], pend[MONEY_TEXT_MAX];
            money_format(b.balance, bal);
            money_format(b.held, held);
            money_format(b.pending_topups, pend);
            printf("%s balance %s held %s", u.name, bal, held);
            if (b.pending_topups != 0)
                printf(" pending %s", pend);
            printf("\n");
        }
    }
    store_destroy(&st);
    return rc;
}

/* Parses a price option (currency units per 1M tokens) into micro-units per 1M tokens. */
static int s_price_opt(const cfg_cli_t *cli, const char *opt, int64_t *out)
{
    const char *text = cfg_cli_opt(cli, opt);
    if (!text)
        return -ENOENT;
    if (money_parse(text, 0, out) != 0) {
        fprintf(stderr,
                "hubctl price set: %s must be a decimal >= 0 in currency units per 1M tokens "
                "with at most 6 decimals (e.g. 2.5), not \"%s\"\n",
                opt, text);
        return -EINVAL;
    }
    return 0;
}

/* Prints one price version as a table row (see s_price_header). */
static void s_price_row(const store_price_t *p)
{
    char when[48], in[MONEY_TEXT_MAX], cached[MONEY_TEXT_MAX], out[MONEY_TEXT_MAX];
    s_fmt_time_ms(p->effective_from, when, sizeof when);
    money_format(p->input, in);
    money_format(p->cached_input, cached);
    money_format(p->output, out);
    printf("%-24s  %-24s  %13lld  %16s  %16s  %16s\n", p->model, when,
           (long long)p->effective_from, in, cached, out);
}

/* The header of the price table: prices are currency units per 1M tokens. */
static void s_price_header(void)
{
    printf("%-24s  %-24s  %13s  %16s  %16s  %16s\n", "MODEL", "EFFECTIVE_FROM", "FROM_MS",
           "INPUT/1M", "CACHED_INPUT/1M", "OUTPUT/1M");
}

/* hubctl price set MODEL --input X --output Y [--cached-input Z] [--from UNIX_MS|now]. */
static int s_price_set(const cfg_cli_t *cli, const char *model, const hub_config_t *cfg)
{
    store_price_t p;
    memset(&p, 0, sizeof p);
    int a = s_price_opt(cli, "--input", &p.input);
    int b = s_price_opt(cli, "--output", &p.output);
    int c = s_price_opt(cli, "--cached-input", &p.cached_input);
    if (a == -EINVAL || b == -EINVAL || c == -EINVAL)
        return 2;
    if (a != 0 || b != 0) {
        fprintf(stderr, "hubctl price set: usage: hubctl price set MODEL --input X --output Y "
                        "[--cached-input Z] [--from UNIX_MS|now]\n");
        return 2;
    }
    if (c == -ENOENT)
        p.cached_input = p.input;
    size_t len = strlen(model);
    if (len == 0 || len > STORE_MODEL_MAX) {
        fprintf(stderr, "hubctl price set: MODEL must be 1-%d bytes\n", STORE_MODEL_MAX);
        return 2;
    }
    memcpy(p.model, model, len + 1);
    p.created_at = s_now_ms();
    p.effective_from = p.created_at;
    const char *from = cfg_cli_opt(cli, "--from");
    if (from && strcmp(from, "now") != 0 && s_parse_u63(from, &p.effective_from) != 0) {
        fprintf(stderr, "hubctl price set: --from must be Unix milliseconds or now, not \"%s\"\n",
                from);
        return 2;
    }
    store_t *st = NULL;
    int rc = s_open_store(cfg, &st);
    if (rc != 0)
        return rc;
    rc = store_price_set(st, &p);
    if (rc == -EEXIST) {
        fprintf(stderr, "hubctl price set: %s already has a price from %lld: versions are never "
                        "changed; give another --from\n",
                model, (long long)p.effective_from);
        rc = 1;
    } else if (rc == -EINVAL) {
        fprintf(stderr, "hubctl price set: MODEL must be UTF-8 without control characters\n");
        rc = 2;
    } else if (rc != 0) {
        fprintf(stderr, "hubctl price set: %s\n", store_last_error(st));
        rc = 1;
    } else {
        s_poke_billing(cfg, "prices");
        s_price_header();
        s_price_row(&p);
    }
    store_destroy(&st);
    return rc;
}

/* hubctl price list: every version of every model. */
static int s_price_list(const hub_config_t *cfg)
{
    store_t *st = NULL;
    int rc = s_open_store(cfg, &st);
    if (rc != 0)
        return rc;
    store_price_t *list = NULL;
    size_t count = 0;
    if (store_price_list(st, &list, &count) != 0) {
        fprintf(stderr, "hubctl price list: %s\n", store_last_error(st));
        store_destroy(&st);
        return 1;
    }
    s_price_header();
    for (size_t i = 0; i < count; i++)
        s_price_row(&list[i]);
    free(list);
    store_destroy(&st);
    return 0;
}

/* hubctl price set|list. */
static int s_cmd_price(const cfg_cli_t *cli, char **words, size_t n, const hub_config_t *cfg)
{
    const char *sub = n >= 1 ? words[0] : "";
    if (strcmp(sub, "set") == 0 && n == 2)
        return s_price_set(cli, words[1], cfg);
    if (strcmp(sub, "list") == 0 && n == 1)
        return s_price_list(cfg);
    if (strcmp(sub, "set") == 0)
        fprintf(stderr, "hubctl price set: usage: hubctl price set MODEL --input X --output Y "
                        "[--cached-input Z] [--from UNIX_MS|now]\n");
    else if (strcmp(sub, "list") == 0)
        fprintf(stderr, "hubctl price list: takes no arguments\n");
    else if (n)
        fprintf(stderr, "hubctl price: unknown subcommand \"%s\" (set, list)\n", sub);
    else
        fprintf(stderr, "hubctl price: set or list\n");
    return 2;
}

/* Rows fetched from the store at a time by ledger listings and checks. */
#define S_LEDGER_PAGE 1024

/* Whether an agent with no ledger rows is at least registered: 0 yes, else an exit code. */
static int s_ledger_agent_known(store_t *st, const char *cmd, const char *agent)
{
    store_agent_t a;
    int rc = store_agent_get(st, agent, &a);
    if (rc == -ENOENT) {
        fprintf(stderr, "hubctl %s: no agent with id %s and no ledger rows for it\n", cmd,
                agent);
        return 1;
    }
    if (rc != 0) {
        fprintf(stderr, "hubctl %s: %s\n", cmd, store_last_error(st));
        return 1;
    }
    return 0;
}

/* hubctl ledger AGENT [--from SEQ]: the agent's rows from seq SEQ on. */
static int s_ledger_list(store_t *st, const char *agent, uint64_t from)
{
    printf("%-8s  %-24s  %-32s  %3s  %-6s  %-20s  %9s  %9s  %9s  %3s  %14s  %14s  %14s  %s\n",
           "SEQ", "TIME", "REQ_ID", "ATT", "USER", "MODEL", "IN", "CACHED", "OUT", "EST", "COST",
           "FEE", "CREDIT", "HASH");
    size_t total = 0;
    for (;;) {
        ledger_row_t *rows = NULL;
        size_t count = 0;
        if (store_ledger_range(st, agent, from, S_LEDGER_PAGE, &rows, &count) != 0) {
            fprintf(stderr, "hubctl ledger: %s\n", store_last_error(st));
            return 1;
        }
        for (size_t i = 0; i < count; i++) {
            const ledger_row_t *r = &rows[i];
            char when[48], req[33], hash[2 * LEDGER_HASH_LEN + 1];
            char cost[MONEY_TEXT_MAX], fee[MONEY_TEXT_MAX], credit[MONEY_TEXT_MAX];
            s_fmt_time_ms(r->created_ms, when, sizeof when);
            s_hex(r->req_id, sizeof r->req_id, req);
            s_hex(r->hash, LEDGER_HASH_LEN, hash);
            hash[16] = '\0'; /* a prefix identifies the row; ledger verify checks them all */
            money_format(r->cost, cost);
            money_format(r->fee, fee);
            money_format(r->credit, credit);
            printf("%-8llu  %-24s  %-32s  %3u  %-6lld  %-20s  %9lld  %9lld  %9lld  %3s  %14s  "
                   "%14s  %14s  %s\n",
                   (unsigned long long)r->seq, when, req, (unsigned)r->attempt,
                   (long long)r->user_id, r->model, (long long)r->input_tokens,
                   (long long)r->cached_tokens, (long long)r->output_tokens,
                   r->estimated ? "yes" : "no", cost, fee, credit, hash);
        }
        total += count;
        uint64_t next = count ? rows[count - 1].seq + 1 : 0;
        free(rows);
        if (count < S_LEDGER_PAGE)
            break;
        from = next;
    }
    uint64_t head_seq = 0;
    uint8_t head_hash[LEDGER_HASH_LEN];
    if (total == 0 && store_ledger_head(st, agent, &head_seq, head_hash) == 0 && head_seq == 0)
        return s_ledger_agent_known(st, "ledger", agent);
    return 0;
}

/* What a ledger fault means, for the operator. */
static const char *s_fault_text(ledger_fault_t f)
{
    switch (f) {
    case LEDGER_BAD_SEQ:
        return "seq does not follow the previous row (a row dropped, repeated or reordered)";
    case LEDGER_BAD_PREV:
        return "prev_hash is not the previous row's hash";
    case LEDGER_BAD_HASH:
        return "hash does not match the row's contents (the row was changed)";
    case LEDGER_BAD_AMOUNTS:
        return "amounts do not add up (cost != fee + credit, a negative figure, or cached > "
               "input)";
    case LEDGER_BAD_AGENT:
        return "a row of another agent";
    case LEDGER_OK:
        break;
    }
    return "ok";
}

/* hubctl ledger verify AGENT: walks the whole chain from seq 1, then checks that it ends where
 * the agent's chain head says. */
static int s_ledger_verify(store_t *st, const char *agent)
{
    ledger_walk_t w;
    ledger_walk_init(&w, agent, 0, NULL);
    uint64_t from = 1;
    for (;;) {
        ledger_row_t *rows = NULL;
        size_t count = 0;
        if (store_ledger_range(st, agent, from, S_LEDGER_PAGE, &rows, &count) != 0) {
            fprintf(stderr, "hubctl ledger verify: %s\n", store_last_error(st));
            return 1;
        }
        for (size_t i = 0; i < count; i++) {
            ledger_fault_t f = ledger_walk_next(&w, &rows[i]);
            if (f != LEDGER_OK) {
                printf("ledger verify %s: seq %llu: %s: %s (%llu rows verified before it)\n",
                       agent, (unsigned long long)rows[i].seq, ledger_fault_name(f),
                       s_fault_text(f), (unsigned long long)w.seq);
                free(rows);
                return 1;
            }
        }
        free(rows);
        if (count < S_LEDGER_PAGE)
            break;
        from = w.seq + 1;
    }
    uint64_t head_seq = 0;
    uint8_t head_hash[LEDGER_HASH_LEN];
    if (store_ledger_head(st, agent, &head_seq, head_hash) != 0) {
        fprintf(stderr, "hubctl ledger verify: %s\n", store_last_error(st));
        return 1;
    }
    /* The head is kept apart from the rows (the agent's account): rows lost from the end of the
     * chain, which no walk can see, show here. */
    if (head_seq == w.seq && memcmp(head_hash, w.hash, LEDGER_HASH_LEN) != 0) {
        printf("ledger verify %s: seq %llu: bad_head: the chain's head records another hash for "
               "its last row\n",
               agent, (unsigned long long)w.seq);
        return 1;
    }
    if (head_seq != w.seq) {
        printf("ledger verify %s: seq %llu: bad_head: the chain's head is seq %llu, but its rows "
               "end at seq %llu\n",
               agent, (unsigned long long)(head_seq > w.seq ? w.seq + 1 : head_seq + 1),
               (unsigned long long)head_seq, (unsigned long long)w.seq);
        return 1;
    }
    if (w.seq == 0) {
        int rc = s_ledger_agent_known(st, "ledger verify", agent);
        if (rc != 0)
            return rc;
    }
    printf("ledger verify %s: %llu rows, ok\n", agent, (unsigned long long)w.seq);
    return 0;
}

/* hubctl ledger AGENT [--from SEQ] | ledger verify AGENT. */
static int s_cmd_ledger(const cfg_cli_t *cli, char **words, size_t n, const hub_config_t *cfg)
{
    bool verify = n >= 1 && strcmp(words[0], "verify") == 0;
    if ((verify && n != 2) || (!verify && n != 1)) {
        fprintf(stderr, "hubctl ledger: usage: hubctl ledger AGENT [--from SEQ] | "
                        "hubctl ledger verify AGENT\n");
        return 2;
    }
    const char *from_text = cfg_cli_opt(cli, "--from");
    int64_t from = 1;
    if (verify && from_text) {
        fprintf(stderr, "hubctl ledger verify: always walks the whole chain (no --from)\n");
        return 2;
    }
    if (from_text && (s_parse_u63(from_text, &from) != 0 || from < 1)) {
        fprintf(stderr, "hubctl ledger: --from must be a seq >= 1, not \"%s\"\n", from_text);
        return 2;
    }
    const char *agent = words[verify ? 1 : 0];
    if (strlen(agent) == 0 || strlen(agent) > LEDGER_AGENT_ID_MAX) {
        fprintf(stderr, "hubctl ledger: AGENT must be an agent id (hubctl agent list)\n");
        return 2;
    }
    store_t *st = NULL;
    int rc = s_open_store(cfg, &st);
    if (rc != 0)
        return rc;
    rc = verify ? s_ledger_verify(st, agent) : s_ledger_list(st, agent, (uint64_t)from);
    store_destroy(&st);
    return rc;
}

int main(int argc, char **argv)
{
    static const char *const extra[] = {"--dir",   "--store",  "--mysql-url",    "--pubkey",
                                        "--input", "--output", "--cached-input", "--from",
                                        NULL};
    cfg_cli_t cli;
    char err[512];
    bus_log_set_process("hubctl");
    bus_log_level = LOG_LVL_WARN;
    if (id_init() != 0)
        return 1;
    if (cfg_cli_parse(&cli, argc, argv, 1, extra, err, sizeof err) != 0) {
        fprintf(stderr, "hubctl: %s\n", err);
        return 2;
    }
    /* Positional words, skipping the (option, value) pairs the parser stored. */
    char *words[16];
    size_t n = 0;
    for (size_t i = 0; i < cli.n_args; i++) {
        if (strncmp(cli.args[i], "--", 2) == 0 && i + 1 < cli.n_args) {
            i++;
            continue;
        }
        if (n < 16)
            words[n++] = cli.args[i];
    }
    int rc = 2;
    if (cli.help) {
        s_usage(stdout);
        rc = 0;
    } else if (cli.version) {
        printf("hubctl %s\n", RELAYHUB_VERSION);
        rc = 0;
    } else if (n == 0) {
        s_usage(stderr);
    } else if (strcmp(words[0], "init") == 0) {
        rc = s_cmd_init(&cli);
    } else {
        hub_config_t cfg;
        const char *path = cli.config ? cli.config : "hub.conf";
        if (hub_config_load(&cfg, path, cli.sets, cli.n_sets, err, sizeof err) != 0) {
            fprintf(stderr, "hubctl: %s\n", err);
            cfg_cli_free(&cli);
            return 2;
        }
        if (strcmp(words[0], "agent") == 0) {
            rc = s_cmd_agent(&cli, words + 1, n - 1, &cfg);
        } else if (strcmp(words[0], "user") == 0) {
            rc = s_cmd_user(words + 1, n - 1, &cfg);
        } else if (strcmp(words[0], "key") == 0) {
            rc = s_cmd_key(words + 1, n - 1, &cfg);
        } else if (strcmp(words[0], "balance") == 0) {
            rc = s_cmd_balance(words + 1, n - 1, &cfg);
        } else if (strcmp(words[0], "price") == 0) {
            rc = s_cmd_price(&cli, words + 1, n - 1, &cfg);
        } else if (strcmp(words[0], "ledger") == 0) {
            rc = s_cmd_ledger(&cli, words + 1, n - 1, &cfg);
        } else if (strcmp(words[0], "migrate") == 0) {
            store_t *st = NULL;
            store_params_t sp;
            if (hub_config_store_params(&cfg, &sp, err, sizeof err) == 0 &&
                store_open(&sp, &st, err, sizeof err) == 0) {
                int applied = store_migrate(st);
                if (applied >= 0) {
                    printf("%d migration(s) applied\n", applied);
                    rc = 0;
                } else {
                    fprintf(stderr, "hubctl migrate: %s\n", store_last_error(st));
                    rc = 1;
                }
                store_destroy(&st);
            } else {
                fprintf(stderr, "hubctl migrate: %s\n", err);
                rc = 1;
            }
        } else {
            fprintf(stderr, "hubctl: unknown command \"%s\"\n", words[0]);
        }
        if (rc == 0 && n >= 2)
            s_notify(&cfg, words[0], words[1]);
        hub_config_free(&cfg);
    }
    cfg_cli_free(&cli);
    return rc;
}
