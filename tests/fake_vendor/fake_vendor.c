/* fake-vendor: a local HTTPS server speaking OpenAI's and Azure OpenAI's wire formats, with
 * fault switches and counters, for relayhub's tests. See README.md in this folder. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus_log.h"
#include "bus_loop.h"
#include "fv_server.h"

/* Prints the command line. */
static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: fake-vendor --listen HOST:PORT --cert FILE --key FILE --control HOST:PORT\n"
            "                   --openai-key KEY --azure-key KEY [--log-level LEVEL]\n\n"
            "A fake OpenAI / Azure OpenAI HTTPS server for tests (see tests/fake_vendor/"
            "README.md).\n\n"
            "  --listen HOST:PORT   API port (TLS with --cert/--key; plain HTTP without both)\n"
            "  --cert FILE          PEM certificate chain for the API port\n"
            "  --key FILE           PEM private key\n"
            "  --control HOST:PORT  plain-HTTP control port (/_fake/stats, /_fake/last, ...)\n"
            "  --openai-key KEY     the key OpenAI requests must carry (Authorization: Bearer)\n"
            "  --azure-key KEY      the key Azure requests must carry (api-key)\n"
            "  --log-level LEVEL    error, warn, info (default: one line per request), debug\n");
}

/* Called on the first SIGTERM/SIGINT: nothing to drain, stop now. */
static void s_on_stop(void *arg, int signo)
{
    bus_loop_stop(arg);
}

/* Parses the command line, then serves until SIGTERM or SIGINT. */
int main(int argc, char **argv)
{
    fv_opts_t o;
    memset(&o, 0, sizeof o);
    const char *level = "info";
    bus_log_set_process("fake-vendor");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            s_usage(stdout);
            return 0;
        }
        static const char *const names[] = {"--listen",   "--cert",       "--key",
                                            "--control",  "--openai-key", "--azure-key",
                                            "--log-level"};
        const char **slots[] = {&o.listen,     &o.cert,      &o.key, &o.control,
                                &o.openai_key, &o.azure_key, &level};
        size_t k = 0;
        const char *val = NULL;
        for (; k < sizeof names / sizeof names[0]; k++) {
            size_t nl = strlen(names[k]);
            if (strcmp(a, names[k]) == 0 && i + 1 < argc) {
                val = argv[++i];
                break;
            }
            if (strncmp(a, names[k], nl) == 0 && a[nl] == '=') {
                val = a + nl + 1;
                break;
            }
        }
        if (!val) {
            fprintf(stderr, "fake-vendor: unknown or incomplete argument \"%s\"\n", a);
            s_usage(stderr);
            return 2;
        }
        *slots[k] = val;
    }
    if (!o.listen || !o.control || !o.openai_key || !o.azure_key || !o.openai_key[0] ||
        !o.azure_key[0] || (!o.cert != !o.key)) {
        fprintf(stderr, "fake-vendor: --listen, --control, --openai-key and --azure-key are "
                        "required, and --cert goes with --key\n");
        s_usage(stderr);
        return 2;
    }
    if (bus_log_parse_level(level, &bus_log_level) != 0) {
        fprintf(stderr, "fake-vendor: --log-level: error, warn, info or debug\n");
        return 2;
    }
    int rc = 1;
    bus_loop_t *loop = bus_loop_new(NULL, NULL);
    fv_server_t *srv = loop ? fv_server_new(loop, &o) : NULL;
    if (srv && bus_loop_handle_signals(loop, s_on_stop, loop) == 0) {
        bus_loop_run(loop);
        rc = 0;
    }
    /* Connections (lws) first, while the server they point to still exists. */
    if (loop)
        bus_loop_close_lws(loop);
    fv_server_destroy(&srv);
    bus_loop_destroy(&loop);
    return rc;
}
