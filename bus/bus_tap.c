/* bus_tap: zero-cost-when-idle envelope mirror on an XPUB socket. */
#include "bus_tap.h"
#include "bus_log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

struct bus_tap {
    void *xpub;          /* the XPUB socket */
    bus_zwatch_t *watch; /* subscription messages arrive here */
    char *process;       /* name in each header */
    int subscribers;     /* live subscriptions (verbose subscribe minus unsubscribe) */
    uint64_t dropped;    /* messages not sent because the pipe was full */
};

/* Reads one (un)subscription message and adjusts the count. */
static void s_on_subscription(void *arg, void *zsock)
{
    bus_tap_t *tap = arg;
    uint8_t buf[256];
    int n = zmq_recv(zsock, buf, sizeof buf, ZMQ_DONTWAIT);
    if (n < 1)
        return;
    if (buf[0] == 1)
        tap->subscribers++;
    else if (buf[0] == 0 && tap->subscribers > 0)
        tap->subscribers--;
    log_debug("tap_subscribers", "%d subscriber(s)", tap->subscribers);
}

bus_tap_t *bus_tap_new(bus_loop_t *loop, const char *endpoint, const char *process, int *err)
{
    *err = 0;
    if (!endpoint || !*endpoint)
        return NULL;
    bus_tap_t *tap = calloc(1, sizeof *tap);
    if (!tap) {
        *err = -ENOMEM;
        return NULL;
    }
    tap->process = strdup(process);
    tap->xpub = zmq_socket(bus_loop_zctx(loop), ZMQ_XPUB);
    if (!tap->process || !tap->xpub)
        goto fail;
    int one = 1, zero = 0, hwm = 10000;
    /* Every subscribe and unsubscribe reaches us, so the count stays exact. */
    zmq_setsockopt(tap->xpub, ZMQ_XPUB_VERBOSER, &one, sizeof one);
    zmq_setsockopt(tap->xpub, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(tap->xpub, ZMQ_SNDHWM, &hwm, sizeof hwm);
    /* By default XPUB drops silently at the high-water mark and zmq_send still succeeds, so
     * `dropped` would never count; with NODROP a full queue makes the ZMQ_DONTWAIT send fail
     * with EAGAIN instead, and bus_tap_mirror counts it. */
    zmq_setsockopt(tap->xpub, ZMQ_XPUB_NODROP, &one, sizeof one);
    if (strncmp(endpoint, "ipc://", 6) == 0)
        remove(endpoint + 6); /* a stale socket file left by a killed process */
    if (zmq_bind(tap->xpub, endpoint) != 0) {
        log_err("tap_bind_failed", "cannot bind tap on %s: %s", endpoint, zmq_strerror(errno));
        goto fail;
    }
    tap->watch = bus_zwatch_new(loop, tap->xpub, s_on_subscription, tap);
    if (!tap->watch)
        goto fail;
    return tap;
fail:
    *err = -EADDRINUSE;
    bus_tap_destroy(&tap);
    return NULL;
}

void bus_tap_destroy(bus_tap_t **p)
{
    if (!p || !*p)
        return;
    bus_tap_t *tap = *p;
    bus_zwatch_destroy(&tap->watch);
    if (tap->xpub)
        zmq_close(tap->xpub);
    free(tap->process);
    free(tap);
    *p = NULL;
}

void bus_tap_mirror(bus_tap_t *tap, const char *dir, const char *peer, const uint8_t *env,
                    size_t len)
{
    if (!tap || tap->subscribers <= 0)
        return;
    char head[192];
    int hl = snprintf(head, sizeof head, "%s %s%s%s", tap->process, dir, peer ? " " : "",
                      peer ? peer : "");
    if (hl < 0)
        return;
    if ((size_t)hl >= sizeof head)
        hl = (int)sizeof head - 1;
    if (zmq_send(tap->xpub, head, (size_t)hl, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        tap->dropped++;
        return;
    }
    /* The first frame is queued, so the second cannot fail for lack of room. */
    zmq_send(tap->xpub, env, len, ZMQ_DONTWAIT);
    bus_zwatch_poke(tap->watch);
}

int bus_tap_subscribers(const bus_tap_t *tap)
{
    return tap ? tap->subscribers : 0;
}

uint64_t bus_tap_dropped(const bus_tap_t *tap)
{
    return tap ? tap->dropped : 0;
}
