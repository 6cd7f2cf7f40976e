/* bus-tap: prints the envelopes a process mirrors to its tap socket, one JSON line each. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "bus_env.h"
#include "bus_log.h"

static volatile sig_atomic_t s_stop;

static void s_on_signal(int signo)
{
    (void)signo;
    s_stop = 1;
}

int main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: bus-tap ENDPOINT\n\n"
               "Subscribes to a process's tap (e.g. ipc:///path/to/hub/tap-tunnel.ipc, the\n"
               "[bus] tunnel_tap of hub.conf) and prints each envelope it sends or receives as\n"
               "one JSON line: {\"time\",\"process\",\"dir\",\"peer\",\"envelope\"}.\n");
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("bus-tap %s\n", RELAYHUB_VERSION);
        return 0;
    }
    if (argc != 2 || (strncmp(argv[1], "ipc://", 6) != 0 && strncmp(argv[1], "tcp://", 6) != 0)) {
        fprintf(stderr, "usage: bus-tap ENDPOINT (ipc://PATH or tcp://HOST:PORT)\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    void *ctx = zmq_ctx_new();
    void *sub = zmq_socket(ctx, ZMQ_SUB);
    int zero = 0, timeout = 200;
    zmq_setsockopt(sub, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(sub, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0);
    if (zmq_connect(sub, argv[1]) != 0) {
        fprintf(stderr, "bus-tap: cannot connect to %s: %s\n", argv[1], zmq_strerror(errno));
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    uint8_t *buf = malloc(BUS_ENV_MAX_BYTES);
    if (!buf)
        return 1;
    while (!s_stop) {
        char head[256];
        int hl = zmq_recv(sub, head, sizeof head - 1, 0);
        if (hl < 0)
            continue; /* timeout or signal: check s_stop */
        if (hl > (int)sizeof head - 1)
            hl = (int)sizeof head - 1;
        head[hl] = '\0';
        int more = 0;
        size_t ms = sizeof more;
        zmq_getsockopt(sub, ZMQ_RCVMORE, &more, &ms);
        if (!more)
            continue;
        int n = zmq_recv(sub, buf, BUS_ENV_MAX_BYTES, 0);
        if (n < 0)
            continue;
        size_t len = (size_t)n > BUS_ENV_MAX_BYTES ? BUS_ENV_MAX_BYTES : (size_t)n;
        /* header: "PROCESS DIR [PEER]" */
        char process[64] = "", dir[8] = "", peer[128] = "";
        sscanf(head, "%63s %7s %127s", process, dir, peer);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        char p_esc[160] = "", peer_esc[300] = "";
        bus_json_escape(p_esc, sizeof p_esc, process, strlen(process));
        bus_json_escape(peer_esc, sizeof peer_esc, peer, strlen(peer));
        bus_env_t env;
        char err[160] = "";
        char *json = NULL;
        if (bus_env_decode(buf, len, &env, err, sizeof err) == 0 &&
            bus_env_to_json(&env, &json) == 0) {
            printf("{\"time\":%lld.%06ld,\"process\":\"%s\",\"dir\":\"%s\",\"peer\":\"%s\","
                   "\"envelope\":%s}\n",
                   (long long)ts.tv_sec, ts.tv_nsec / 1000, p_esc, dir, peer_esc, json);
        } else {
            char e_esc[320] = "";
            bus_json_escape(e_esc, sizeof e_esc, err, strlen(err));
            printf("{\"time\":%lld.%06ld,\"process\":\"%s\",\"dir\":\"%s\",\"peer\":\"%s\","
                   "\"error\":\"%s\",\"bytes\":%zu}\n",
                   (long long)ts.tv_sec, ts.tv_nsec / 1000, p_esc, dir, peer_esc, e_esc, len);
        }
        free(json);
    }
    free(buf);
    zmq_close(sub);
    zmq_ctx_term(ctx);
    return 0;
}
