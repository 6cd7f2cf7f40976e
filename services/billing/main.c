/* hub-billing: holds, usage reports, settlement and the agents' ledgers (DESIGN §4). */
#include <stdio.h>

#include "bl_rules.h"
#include "bl_server.h"
#include "bus_config.h"
#include "bus_log.h"
#include "bus_loop.h"
#include "hub_config.h"

static void s_usage(FILE *out)
{
    fprintf(out, "usage: hub-billing [--config hub.conf] [--set section.key=value]... "
                 "[--help] [--version]\n\n"
                 "The only writer of balances, holds, settlements and the ledger: answers the\n"
                 "gateways' holds, stores usage reports, settles requests, and sends each agent\n"
                 "its hash-chained ledger rows through hub-tunnel. Reads the whole hub.conf; "
                 "keys:\n\n");
    cfg_print_help(hub_config_table, out);
}

int main(int argc, char **argv)
{
    cfg_cli_t cli;
    char err[512];
    hub_config_t cfg;
    bus_log_set_process("hub-billing");
    if (cfg_cli_parse(&cli, argc, argv, 1, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "hub-billing: %s\n", err);
        return 2;
    }
    if (cli.help || cli.version) {
        if (cli.help)
            s_usage(stdout);
        else
            printf("hub-billing %s\n", RELAYHUB_VERSION);
        cfg_cli_free(&cli);
        return 0;
    }
    if (cli.n_args) {
        fprintf(stderr, "hub-billing: unexpected argument \"%s\"\n", cli.args[0]);
        cfg_cli_free(&cli);
        return 2;
    }
    if (hub_config_load(&cfg, cli.config, cli.sets, cli.n_sets, err, sizeof err) != 0) {
        fprintf(stderr, "hub-billing: %s\n", err);
        cfg_cli_free(&cli);
        return 2;
    }
    bl_unpriced_t unpriced;
    if (bl_unpriced_parse(cfg.billing_unpriced, &unpriced) != 0) {
        fprintf(stderr, "hub-billing: billing.unpriced: must be refuse or free (got \"%s\")\n",
                cfg.billing_unpriced);
        hub_config_free(&cfg);
        cfg_cli_free(&cli);
        return 2;
    }
    bus_log_level = (log_level_t)cfg.log_level;
    int rc = 1;
    bus_loop_t *loop = bus_loop_new(NULL, NULL);
    bl_server_t *srv = loop ? bl_server_new(loop, &cfg) : NULL;
    if (srv && bus_loop_handle_signals(loop, bl_server_shutdown, srv) == 0) {
        bus_loop_run(loop);
        rc = 0;
    }
    /* Reverse order: lws (the metrics listener) first, then the server's sockets, then zmq. */
    if (loop)
        bus_loop_close_lws(loop);
    bl_server_destroy(&srv);
    bus_loop_destroy(&loop);
    hub_config_free(&cfg);
    cfg_cli_free(&cli);
    return rc;
}
