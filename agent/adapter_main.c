/* agent-adapter: one worker process of `agent run`, doing vendor calls (see ag_adapter.h).
 *
 *   agent-adapter --config DIR/agent.conf [--set section.key=value]... --slot N --parent PID
 *
 * Started by `agent run` only; it reads the same agent.conf (and overrides) as its supervisor,
 * dies with it (PR_SET_PDEATHSIG, and a check of the parent's pid), and talks to it over
 * agent.adapter_ipc.
 */
#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ag_adapter.h"
#include "ag_config.h"
#include "ag_fd.h"
#include "ag_vendor.h"
#include "bus_config.h"
#include "bus_log.h"
#include "bus_loop.h"
#include "bus_plat.h"

/* Prints the usage line. */
static void s_usage(FILE *out)
{
    fprintf(out, "usage: agent-adapter --config DIR/agent.conf [--set section.key=value]... "
                 "--slot N --parent PID\n"
                 "  a worker of `agent run` (which starts it); not meant to be run by hand\n");
}

/* Parses a non-negative decimal int option; -1 when absent or bad. */
static long s_num(const char *s)
{
    if (!s || !*s)
        return -1;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    return errno || *end || v < 0 ? -1 : v;
}

/* Logs one ag_instances_build warning (only the supervisor shows them: workers stay quiet). */
static void s_warn(void *arg, const char *msg)
{
    (void)arg;
    log_debug("instance_skipped", "%s", msg);
}

int main(int argc, char **argv)
{
    static const char *const extra[] = {"--slot", "--parent", NULL};
    bus_log_set_process("agent-adapter");
    cfg_cli_t cli;
    char err[512];
    if (cfg_cli_parse(&cli, argc, argv, 1, extra, err, sizeof err) != 0) {
        fprintf(stderr, "agent-adapter: %s\n", err);
        return 2;
    }
    if (cli.help || cli.version) {
        if (cli.help)
            s_usage(stdout);
        else
            printf("agent-adapter %s\n", RELAYHUB_VERSION);
        cfg_cli_free(&cli);
        return 0;
    }
    long slot = s_num(cfg_cli_opt(&cli, "--slot"));
    long parent = s_num(cfg_cli_opt(&cli, "--parent"));
    if (!cli.config || slot < 0 || parent <= 0) {
        s_usage(stderr);
        cfg_cli_free(&cli);
        return 2;
    }
    /* Die with the supervisor; if it is already gone, the signal would never come. */
    plat_die_with_parent();
    if ((long)getppid() != parent) {
        fprintf(stderr, "agent-adapter: supervisor %ld is gone\n", parent);
        cfg_cli_free(&cli);
        return 1;
    }
    ag_config_t cfg;
    int rc = ag_config_load(&cfg, cli.config, cli.sets, cli.n_sets, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "agent-adapter: %s\n", err);
        cfg_cli_free(&cli);
        return 2;
    }
    bus_log_level = (log_level_t)cfg.log_level;
    ag_instances_t set;
    rc = ag_instances_build(&set, &cfg, s_warn, NULL, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "agent-adapter: %s\n", err);
        ag_config_free(&cfg);
        cfg_cli_free(&cli);
        return 2;
    }
    int ret = 1;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        log_err("curl_failed", "curl_global_init failed");
        goto out;
    }
    struct lws_protocols protos[2];
    memset(protos, 0, sizeof protos);
    protos[0] = ag_fd_protocol();
    bus_loop_t *loop = bus_loop_new(protos, NULL);
    ag_adapter_t *ad = NULL;
    if (loop) {
        ad = ag_adapter_new(loop, &cfg, &set, (int)slot);
        if (ad && bus_loop_handle_signals(loop, ag_adapter_shutdown, ad) == 0) {
            bus_loop_run(loop);
            ret = 0;
        }
        /* Transfers go first (their sockets live in the epoll set lws is about to close). */
        ag_adapter_destroy(&ad);
        bus_loop_close_lws(loop);
    }
    bus_loop_destroy(&loop);
    curl_global_cleanup();
out:
    ag_instances_free(&set);
    ag_config_free(&cfg);
    cfg_cli_free(&cli);
    log_info("stopped", "agent-adapter %ld stopped", slot);
    return ret;
}
