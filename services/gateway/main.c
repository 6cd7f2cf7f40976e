/* hub-gateway: the users' OpenAI-compatible HTTP endpoint. */
#include <stdio.h>

#include "bus_config.h"
#include "bus_log.h"
#include "bus_loop.h"
#include "gw_server.h"
#include "hub_config.h"
#include "identity.h"

static void s_usage(FILE *out)
{
    fprintf(out, "usage: hub-gateway [--config hub.conf] [--set section.key=value]... "
                 "[--help] [--version]\n\n"
                 "Serves the OpenAI-compatible API (/v1/chat/completions, /v1/completions,\n"
                 "/v1/embeddings, /v1/responses, /v1/models, /healthz, /readyz) and relays each\n"
                 "request through a tunnel to an agent. Reads the whole hub.conf; keys:\n\n");
    cfg_print_help(hub_config_table, out);
}

int main(int argc, char **argv)
{
    cfg_cli_t cli;
    char err[512];
    hub_config_t cfg;
    bus_log_set_process("hub-gateway");
    if (cfg_cli_parse(&cli, argc, argv, 1, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "hub-gateway: %s\n", err);
        return 2;
    }
    if (cli.help || cli.version) {
        if (cli.help)
            s_usage(stdout);
        else
            printf("hub-gateway %s\n", RELAYHUB_VERSION);
        cfg_cli_free(&cli);
        return 0;
    }
    if (cli.n_args) {
        fprintf(stderr, "hub-gateway: unexpected argument \"%s\"\n", cli.args[0]);
        cfg_cli_free(&cli);
        return 2;
    }
    if (hub_config_load(&cfg, cli.config, cli.sets, cli.n_sets, err, sizeof err) != 0) {
        fprintf(stderr, "hub-gateway: %s\n", err);
        cfg_cli_free(&cli);
        return 2;
    }
    bus_log_level = (log_level_t)cfg.log_level;
    if (id_init() != 0)
        return 1;
    int rc = 1;
    bus_loop_t *loop = bus_loop_new(NULL, NULL);
    gw_server_t *srv = loop ? gw_server_new(loop, &cfg) : NULL;
    if (srv && bus_loop_handle_signals(loop, gw_server_shutdown, srv) == 0) {
        bus_loop_run(loop);
        rc = 0;
    }
    if (loop)
        bus_loop_close_lws(loop);
    gw_server_destroy(&srv);
    bus_loop_destroy(&loop);
    hub_config_free(&cfg);
    cfg_cli_free(&cli);
    return rc;
}
