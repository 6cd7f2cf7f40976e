/* agent: the provider's process. `agent init`, `agent pubkey`, `agent run`. */
#include <errno.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ag_client.h"
#include "ag_config.h"
#include "ag_fd.h"
#include "ag_ledgerlink.h"
#include "ag_super.h"
#include "ag_vendor.h"
#include "bus_config.h"
#include "bus_log.h"
#include "bus_loop.h"
#include "bus_plat.h"
#include "identity.h"
#include "tlscert.h"

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage:\n"
            "  agent init [--dir DIR] --hub wss://HOST:PORT/tunnel/connect --pin sha256/<base64>\n"
            "      creates DIR/agent.key (Ed25519, mode 0600) and DIR/agent.conf;\n"
            "      prints pubkey: and agent_id:\n"
            "      DIR defaults to $XDG_DATA_HOME/relayhub/agent (~/.local/share/relayhub/agent)\n"
            "  agent pubkey [--dir DIR | --config DIR/agent.conf]\n"
            "      prints the public key (base64) to register with hubctl agent add\n"
            "  agent run [--dir DIR | --config DIR/agent.conf] [--set section.key=value]...\n"
            "      connects to the hub and serves it; reconnects forever\n"
            "  agent --help | --version\n\n"
            "agent.conf keys:\n");
    cfg_print_help(ag_config_table, out);
    fprintf(out,
            "  [instance.NAME] sections: one per vendor instance:\n"
            "    vendor = openai | azure | anthropic | gemini | vertex | bedrock (others are\n"
            "        skipped with a warning)\n"
            "    models = comma-separated names; PUBLIC=UPSTREAM renames (Azure: the deployment)\n"
            "    max_concurrency = requests in flight at once (default %d; beyond: 429)\n"
            "    openai, azure, anthropic, gemini: api_key = the vendor key\n"
            "    azure: resource (RESOURCE.openai.azure.com), api_version (default %s)\n"
            "    anthropic, gemini: openai_compatible = true also serves OpenAI chat requests\n"
            "        through the vendor's own OpenAI-compatible endpoint (default false)\n"
            "    vertex: project, region, service_account_file (the service account's JSON key)\n"
            "    bedrock: region, access_key_id, secret_access_key, session_token (optional),\n"
            "        max_body_bytes (the body is buffered to be signed; default 20MiB)\n",
            AG_DEFAULT_MAX_CONCURRENCY, AG_DEFAULT_AZURE_API_VERSION);
}

/* agent init: key pair and config in DIR; refuses to overwrite either. */
static int s_cmd_init(const cfg_cli_t *cli)
{
    char *default_dir = NULL;
    const char *dir = cfg_cli_opt(cli, "--dir");
    const char *hub = cfg_cli_opt(cli, "--hub");
    const char *pin = cfg_cli_opt(cli, "--pin");
    char host[256], path[256];
    int port;
    if (!hub || !pin) {
        fprintf(stderr, "agent init: --hub and --pin are required\n");
        return 2;
    }
    if (!dir) {
        default_dir = plat_default_data_dir("agent");
        if (!default_dir) {
            fprintf(stderr, "agent init: no --dir and no home directory to default to\n");
            return 2;
        }
        dir = default_dir;
    }
    if (ag_parse_hub_url(hub, host, sizeof host, &port, path, sizeof path) != 0) {
        fprintf(stderr, "agent init: --hub: expected wss://HOST:PORT/tunnel/connect\n");
        return 2;
    }
    if (!tls_pin_valid(pin)) {
        fprintf(stderr, "agent init: --pin: expected sha256/<44 base64 characters> "
                        "(hubctl init prints it)\n");
        return 2;
    }
    int rc = plat_mkdir_private(dir);
    if (rc != 0) {
        fprintf(stderr, "agent init: cannot create %s: %s\n", dir, strerror(-rc));
        free(default_dir);
        return 1;
    }
    char *key_path = plat_path_join(dir, "agent.key");
    char *conf_path = plat_path_join(dir, "agent.conf");
    struct stat st;
    int ret = 1;
    if (!key_path || !conf_path)
        goto out;
    if (stat(key_path, &st) == 0 || stat(conf_path, &st) == 0) {
        fprintf(stderr, "agent init: %s already holds an agent (agent.key or agent.conf): "
                        "refusing to overwrite\n", dir);
        goto out;
    }
    id_keypair_t kp;
    if (id_keypair_generate(&kp) != 0 || (rc = id_keyfile_write(key_path, &kp)) != 0) {
        fprintf(stderr, "agent init: cannot write %s: %s\n", key_path, strerror(-rc));
        goto out;
    }
    char conf[2048];
    int n = snprintf(conf, sizeof conf,
                     "# relayhub agent configuration (agent init)\n"
                     "[hub]\n"
                     "url = %s\n"
                     "pin = %s\n"
                     "\n[identity]\n"
                     "key_file = agent.key\n"
                     "\n[agent]\n"
                     "# metrics_listen = 127.0.0.1:9201\n"
                     "\n[log]\n"
                     "level = info\n"
                     "\n# One section per vendor instance, for example:\n"
                     "# [instance.main]\n"
                     "# vendor = openai\n"
                     "# api_key = sk-...\n"
                     "# models = gpt-4o-mini\n"
                     "# max_concurrency = 8\n",
                     hub, pin);
    if (n < 0 || (size_t)n >= sizeof conf ||
        (rc = plat_write_file(conf_path, conf, (size_t)n, 1, 1)) != 0) {
        fprintf(stderr, "agent init: cannot write %s\n", conf_path);
        remove(key_path);
        goto out;
    }
    char b64[45], id[ID_AGENT_ID_LEN + 1];
    id_pubkey_b64(kp.pk, b64);
    id_agent_id(kp.pk, id);
    sodium_memzero(&kp, sizeof kp);
    printf("pubkey: %s\nagent_id: %s\n", b64, id);
    if (default_dir)
        printf("dir: %s\n", dir);
    ret = 0;
out:
    free(default_dir);
    free(key_path);
    free(conf_path);
    return ret;
}

/* Resolves the config path from --config or --dir (default: the platform's data directory,
 * ~/.local/share/relayhub/agent on Linux). */
static char *s_config_path(const cfg_cli_t *cli)
{
    if (cli->config)
        return strdup(cli->config);
    const char *dir = cfg_cli_opt(cli, "--dir");
    if (dir)
        return plat_path_join(dir, "agent.conf");
    char *def = plat_default_data_dir("agent");
    char *path = def ? plat_path_join(def, "agent.conf") : NULL;
    free(def);
    return path;
}

/* Loads the config named by --config/--dir; *path_out (may be NULL) gets its path. */
static int s_load(const cfg_cli_t *cli, ag_config_t *cfg, const char *cmd, char **path_out)
{
    char err[512];
    char *path = s_config_path(cli);
    if (!path)
        return 1;
    int rc = ag_config_load(cfg, path, cli->sets, cli->n_sets, err, sizeof err);
    if (rc != 0) {
        free(path);
        fprintf(stderr, "agent %s: %s\n", cmd, err);
        return 2;
    }
    if (path_out)
        *path_out = path;
    else
        free(path);
    return 0;
}

static int s_cmd_pubkey(const cfg_cli_t *cli)
{
    ag_config_t cfg;
    int rc = s_load(cli, &cfg, "pubkey", NULL);
    if (rc != 0)
        return rc;
    id_keypair_t kp;
    rc = id_keyfile_read(cfg.key_file, &kp);
    if (rc != 0) {
        fprintf(stderr, "agent pubkey: %s: %s\n", cfg.key_file,
                rc == -EPERM ? "readable by group or others (chmod 600)" : strerror(-rc));
        ag_config_free(&cfg);
        return 1;
    }
    char b64[45];
    id_pubkey_b64(kp.pk, b64);
    sodium_memzero(&kp, sizeof kp);
    printf("%s\n", b64);
    ag_config_free(&cfg);
    return 0;
}

/* ag_instances_build's warnings (an instance of a vendor this build does not serve). */
static void s_instance_warn(void *arg, const char *msg)
{
    (void)arg;
    log_warn("instance_skipped", "%s", msg);
}

/* The agent-adapter executable: agent.adapter_exe, else the one beside this program. */
static char *s_adapter_exe(const ag_config_t *cfg)
{
    if (cfg->adapter_exe && cfg->adapter_exe[0])
        return strdup(cfg->adapter_exe);
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return strdup("agent-adapter");
    self[n] = '\0';
    char *dir = plat_dirname(self);
    char *exe = dir ? plat_path_join(dir, "agent-adapter") : NULL;
    free(dir);
    return exe;
}

/* Logs the models the instances serve (what presence will carry). */
static void s_log_models(const ag_instances_t *set)
{
    char list[1024];
    size_t used = 0, count = 0;
    list[0] = '\0';
    for (size_t i = 0; i < set->n; i++) {
        for (size_t m = 0; m < set->v[i].n_models; m++, count++) {
            int w = snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "",
                             set->v[i].models[m].pub);
            if (w > 0 && (size_t)w < sizeof list - used)
                used += (size_t)w;
        }
    }
    if (set->n)
        log_info("serving", "%zu instance(s), %zu model(s): %s", set->n, count, list);
    else
        log_info("serving", "no vendor instance configured: requests will be refused");
}

/* ag_hub_ops_t.send over the tunnel client. */
static int s_hub_send(void *arg, const bus_env_t *env)
{
    return ag_client_send(arg, env);
}

/* ag_hub_ops_t.send_raw over the tunnel client. */
static int s_hub_send_raw(void *arg, const uint8_t *raw, size_t len)
{
    return ag_client_send_raw(arg, raw, len);
}

/* What the tunnel client's hooks reach. */
typedef struct {
    ag_super_t *super;       /* the adapters */
    ag_ledgerlink_t *ledger; /* agent-ledger */
} s_run_t;

/* ag_client_hooks_t.on_stream: streams to the supervisor, money to agent-ledger. */
static void s_on_stream(void *arg, const bus_env_t *env, const uint8_t *raw, size_t len)
{
    s_run_t *run = arg;
    if (env->type == BUS_T_LEDGER_TX) {
        /* The row's stream (its attempt's id) may still be open: its record is coming. */
        uint8_t sid[BUS_REQ_ID_LEN];
        memcpy(sid, env->req_id, sizeof sid);
        sid[15] ^= (uint8_t)(env->u.ledger_tx.attempt ? env->u.ledger_tx.attempt - 1 : 0);
        ag_ledgerlink_from_hub(run->ledger, env, raw, len,
                               env->has_req_id && ag_super_stream_open(run->super, sid));
    } else if (env->type == BUS_T_PRICE_TABLE || env->type == BUS_T_USAGE_ACK) {
        ag_ledgerlink_from_hub(run->ledger, env, raw, len, false);
    } else {
        ag_super_from_hub(run->super, env, raw, len);
    }
}

/* ag_client_hooks_t.on_up: announce what this agent serves; agent-ledger syncs. */
static void s_on_up(void *arg, const char *agent_id)
{
    s_run_t *run = arg;
    ag_super_announce(run->super, agent_id);
    ag_ledgerlink_online(run->ledger);
}

/* ag_client_hooks_t.on_down: to the supervisor. */
static void s_on_down(void *arg)
{
    s_run_t *run = arg;
    ag_super_hub_down(run->super);
}

/* agent run: the tunnel client and the adapter supervisor in one loop, until a signal. */
static int s_cmd_run(const cfg_cli_t *cli)
{
    ag_config_t cfg;
    char *conf_path = NULL;
    int rc = s_load(cli, &cfg, "run", &conf_path);
    if (rc != 0)
        return rc;
    bus_log_level = (log_level_t)cfg.log_level;
    ag_instances_t set;
    char err[512];
    rc = ag_instances_build(&set, &cfg, s_instance_warn, NULL, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "agent run: %s\n", err);
        free(conf_path);
        ag_config_free(&cfg);
        return 2;
    }
    char *lock_path = plat_path_join(cfg.dir, "agent.lock");
    int lock = lock_path ? plat_lock_file(lock_path) : -ENOMEM;
    if (lock < 0) {
        fprintf(stderr, "agent run: %s: %s\n", cfg.dir,
                lock == -EWOULDBLOCK ? "another agent is already running in this directory"
                                     : strerror(-lock));
        free(lock_path);
        free(conf_path);
        ag_instances_free(&set);
        ag_config_free(&cfg);
        return 1;
    }
    id_keypair_t kp;
    rc = id_keyfile_read(cfg.key_file, &kp);
    if (rc != 0) {
        fprintf(stderr, "agent run: %s: %s\n", cfg.key_file,
                rc == -EPERM ? "readable by group or others (chmod 600)"
                : rc == -EBADMSG ? "not an agent key"
                                 : strerror(-rc));
        plat_unlock(lock);
        free(lock_path);
        free(conf_path);
        ag_instances_free(&set);
        ag_config_free(&cfg);
        return 1;
    }
    s_log_models(&set);
    int ret = 1;
    ag_client_t *client = NULL;
    ag_super_t *super = NULL;
    ag_ledgerlink_t *ledger = NULL;
    s_run_t run = {NULL, NULL};
    char *exe = s_adapter_exe(&cfg);
    /* protocols[0] must stay the tunnel's: lws delivers certificate checks there. */
    struct lws_protocols protos[3];
    memset(protos, 0, sizeof protos);
    protos[0] = ag_client_protocols()[0];
    protos[1] = ag_fd_protocol();
    bus_loop_t *loop = exe ? bus_loop_new(protos, NULL) : NULL;
    if (loop) {
        client = ag_client_new(loop, &cfg, &kp);
        /* The pin check finds the client through the loop's user pointer. */
        if (client) {
            bus_loop_set_user(loop, client);
            ag_super_args_t args = {exe, conf_path, cli->sets, cli->n_sets};
            ag_hub_ops_t hub = {s_hub_send, s_hub_send_raw, client};
            super = ag_super_new(loop, &cfg, &set, &args, &hub);
            ledger = super ? ag_ledgerlink_new(loop, &cfg, &args, &hub) : NULL;
            ag_super_set_ledger(super, ledger);
            run = (s_run_t){super, ledger};
        }
        if (client && super && ledger) {
            ag_client_hooks_t hooks = {s_on_stream, s_on_down, s_on_up, &run};
            ag_client_set_hooks(client, &hooks);
            if (bus_loop_handle_signals(loop, ag_client_shutdown, client) == 0) {
                bus_loop_run(loop);
                ret = 0;
            }
        }
        ag_super_destroy(&super);
        ag_ledgerlink_destroy(&ledger);
        bus_loop_close_lws(loop);
    }
    ag_client_destroy(&client);
    bus_loop_destroy(&loop);
    free(exe);
    sodium_memzero(&kp, sizeof kp);
    plat_unlock(lock);
    free(lock_path);
    free(conf_path);
    ag_instances_free(&set);
    ag_config_free(&cfg);
    log_info("stopped", "agent stopped");
    return ret;
}

int main(int argc, char **argv)
{
    static const char *const extra[] = {"--dir", "--hub", "--pin", NULL};
    cfg_cli_t cli;
    char err[512];
    bus_log_set_process("agent");
    if (id_init() != 0) {
        fprintf(stderr, "agent: libsodium failed to initialise\n");
        return 1;
    }
    if (argc < 2) {
        s_usage(stderr);
        return 2;
    }
    if (cfg_cli_parse(&cli, argc, argv, 1, extra, err, sizeof err) != 0) {
        fprintf(stderr, "agent: %s\n", err);
        return 2;
    }
    int rc = 2;
    /* Positional words: the command first; options were stored as ("--dir", value) pairs. */
    const char *cmd = NULL;
    for (size_t i = 0; i < cli.n_args; i++) {
        if (strncmp(cli.args[i], "--", 2) == 0) {
            i++;
            continue;
        }
        cmd = cli.args[i];
        break;
    }
    if (cli.help) {
        s_usage(stdout);
        rc = 0;
    } else if (cli.version) {
        printf("agent %s\n", RELAYHUB_VERSION);
        rc = 0;
    } else if (!cmd) {
        s_usage(stderr);
    } else if (strcmp(cmd, "init") == 0) {
        rc = s_cmd_init(&cli);
    } else if (strcmp(cmd, "pubkey") == 0) {
        rc = s_cmd_pubkey(&cli);
    } else if (strcmp(cmd, "run") == 0) {
        rc = s_cmd_run(&cli);
    } else {
        fprintf(stderr, "agent: unknown command \"%s\" (init, pubkey, run)\n", cmd);
    }
    cfg_cli_free(&cli);
    return rc;
}
