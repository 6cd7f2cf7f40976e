/* hub-tunnel: the agents' WebSocket endpoint, the admin API and presence on the bus. */
#include <stdio.h>
#include <stdlib.h>

#include "bus_config.h"
#include "bus_log.h"
#include "bus_loop.h"
#include "hub_config.h"
#include "identity.h"
#include "tun_server.h"

static void s_usage(FILE *out)
{
    fprintf(out, "usage: hub-tunnel [--config hub.conf] [--set section.key=value]... "
                 "[--help] [--version]\n\n"
                 "Accepts agent tunnels (WSS /tunnel/connect), serves the admin API and\n"
                 "publishes presence events. Reads the whole hub.conf; keys:\n\n");
    cfg_print_help(hub_config_table, out);
}

int main(int argc, char **argv)
{
    cfg_cli_t cli;
    char err[512];
    hub_config_t cfg;
    bus_log_set_process("hub-tunnel");
    if (cfg_cli_parse(&cli, argc, argv, 1, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "hub-tunnel: %s\n", err);
        return 2;
    }
    if (cli.help) {
        s_usage(stdout);
        cfg_cli_free(&cli);
        return 0;
    }
    if (cli.version) {
        printf("hub-tunnel %s\n", RELAYHUB_VERSION);
        cfg_cli_free(&cli);
        return 0;
    }
    if (cli.n_args) {
        fprintf(stderr, "hub-tunnel: unexpected argument \"%s\"\n", cli.args[0]);
        cfg_cli_free(&cli);
        return 2;
    }
    if (hub_config_load(&cfg, cli.config, cli.sets, cli.n_sets, err, sizeof err) != 0) {
        fprintf(stderr, "hub-tunnel: %s\n", err);
        cfg_cli_free(&cli);
        return 2;
    }
    bus_log_level = (log_level_t)cfg.log_level;
    if (id_init() != 0) {
        log_err("startup", "libsodium failed to initialise");
        return 1;
    }
    int rc = 1;
    bus_loop_t *loop = bus_loop_new(NULL, NULL);
    tun_server_t *srv = loop ? tun_server_new(loop, &cfg) : NULL;
    if (srv && bus_loop_handle_signals(loop, tun_server_shutdown, srv) == 0) {
        bus_loop_run(loop);
        rc = 0;
    }
    /* Tear down in reverse order: connections (lws) first, while the server still exists, then
     * the server's zmq sockets, then the zmq context. */
    if (loop)
        bus_loop_close_lws(loop);
    tun_server_destroy(&srv);
    bus_loop_destroy(&loop);
    hub_config_free(&cfg);
    cfg_cli_free(&cli);
    return rc;
}
