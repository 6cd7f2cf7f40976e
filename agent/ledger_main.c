/* agent-ledger: the only writer of the agent's SQLite database (see al_ledger.h).
 *
 *   agent-ledger --config DIR/agent.conf [--set section.key=value]... --parent PID
 *
 * Started and supervised by `agent run`; it reads the same agent.conf (and overrides), dies with
 * it (PR_SET_PDEATHSIG, and a check of the parent's pid), and talks to it over
 * agent.ledger_ipc. The agent id that names the chain is derived from the agent's key
 * (identity.key_file) as `agent pubkey` does, so it is known before the hub sends any row, and a
 * database of another agent is refused instead of being mixed with this one's.
 */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ag_config.h"
#include "al_ledger.h"
#include "bus_config.h"
#include "bus_log.h"
#include "bus_loop.h"
#include "bus_plat.h"
#include "identity.h"

/* Prints the usage line. */
static void s_usage(FILE *out)
{
    fprintf(out, "usage: agent-ledger --config DIR/agent.conf [--set section.key=value]... "
                 "--parent PID\n"
                 "  the ledger process of `agent run` (which starts it): usage records, prices\n"
                 "  and the verified copy of the hub's ledger in agent.ledger_db\n\n"
                 "Reads the whole agent.conf; keys:\n\n");
    cfg_print_help(ag_config_table, out);
}

/* Parses a positive decimal pid; -1 when absent or bad. */
static long s_pid(const char *s)
{
    if (!s || !*s)
        return -1;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    return errno || *end || v <= 0 ? -1 : v;
}

/* The agent id from the key file, into id. 0 or 1 with a line on stderr. */
static int s_agent_id(const ag_config_t *cfg, char id[ID_AGENT_ID_LEN + 1])
{
    if (id_init() != 0) {
        fprintf(stderr, "agent-ledger: cannot initialise libsodium\n");
        return 1;
    }
    id_keypair_t kp;
    int rc = id_keyfile_read(cfg->key_file, &kp);
    if (rc != 0) {
        fprintf(stderr, "agent-ledger: %s: %s\n", cfg->key_file,
                rc == -EPERM ? "readable by group or others (chmod 600)" : strerror(-rc));
        return 1;
    }
    id_agent_id(kp.pk, id);
    sodium_memzero(&kp, sizeof kp); /* only the public half was needed */
    return 0;
}

int main(int argc, char **argv)
{
    static const char *const extra[] = {"--parent", NULL};
    bus_log_set_process("agent-ledger");
    cfg_cli_t cli;
    char err[512];
    if (cfg_cli_parse(&cli, argc, argv, 1, extra, err, sizeof err) != 0) {
        fprintf(stderr, "agent-ledger: %s\n", err);
        return 2;
    }
    if (cli.help || cli.version) {
        if (cli.help)
            s_usage(stdout);
        else
            printf("agent-ledger %s\n", RELAYHUB_VERSION);
        cfg_cli_free(&cli);
        return 0;
    }
    long parent = s_pid(cfg_cli_opt(&cli, "--parent"));
    if (!cli.config || parent <= 0 || cli.n_args != 2) {
        /* args holds the extra option as the pair ("--parent", PID) and nothing else. */
        s_usage(stderr);
        cfg_cli_free(&cli);
        return 2;
    }
    /* Die with the supervisor; if it is already gone, the signal would never come. */
    plat_die_with_parent();
    if ((long)getppid() != parent) {
        fprintf(stderr, "agent-ledger: supervisor %ld is gone\n", parent);
        cfg_cli_free(&cli);
        return 1;
    }
    ag_config_t cfg;
    if (ag_config_load(&cfg, cli.config, cli.sets, cli.n_sets, err, sizeof err) != 0) {
        fprintf(stderr, "agent-ledger: %s\n", err);
        cfg_cli_free(&cli);
        return 2;
    }
    bus_log_level = (log_level_t)cfg.log_level;
    char agent_id[ID_AGENT_ID_LEN + 1];
    int ret = s_agent_id(&cfg, agent_id);
    if (ret != 0)
        goto out;
    ret = 1;
    bus_loop_t *loop = bus_loop_new(NULL, NULL);
    al_ledger_t *l = loop ? al_ledger_new(loop, &cfg, agent_id, parent) : NULL;
    if (l && bus_loop_handle_signals(loop, al_ledger_shutdown, l) == 0) {
        bus_loop_run(loop);
        ret = 0;
    }
    if (loop)
        bus_loop_close_lws(loop);
    al_ledger_destroy(&l);
    bus_loop_destroy(&loop);
    log_info("stopped", "agent-ledger stopped");
out:
    ag_config_free(&cfg);
    cfg_cli_free(&cli);
    return ret;
}
