/* bus_wsconn: outgoing frame queue and incoming reassembly for lws WebSockets. */
#include "bus_wsconn.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct bus_wsframe {
    bus_wsframe_t *next; /* queue link */
    size_t len;          /* payload bytes after LWS_PRE */
    uint8_t data[];      /* LWS_PRE headroom + payload */
};

const uint8_t *bus_wsconn_queue(bus_wsconn_t *c, const uint8_t *data, size_t len)
{
    bus_wsframe_t *f = malloc(sizeof *f + LWS_PRE + len);
    if (!f)
        return NULL;
    f->next = NULL;
    f->len = len;
    memcpy(f->data + LWS_PRE, data, len);
    if (c->tail)
        c->tail->next = f;
    else
        c->head = f;
    c->tail = f;
    c->queued += len;
    return f->data + LWS_PRE;
}

int bus_wsconn_write(bus_wsconn_t *c, struct lws *wsi)
{
    bus_wsframe_t *f = c->head;
    if (!f)
        return 0;
    int n = lws_write(wsi, f->data + LWS_PRE, f->len, LWS_WRITE_BINARY);
    if (n < (int)f->len)
        return -1;
    c->head = f->next;
    if (!c->head)
        c->tail = NULL;
    c->queued -= f->len;
    n = (int)f->len;
    free(f);
    if (c->head)
        lws_callback_on_writable(wsi);
    return n;
}

void bus_wsconn_drop(bus_wsconn_t *c)
{
    while (c->head) {
        bus_wsframe_t *f = c->head;
        c->head = f->next;
        free(f);
    }
    c->tail = NULL;
    c->queued = 0;
}

int bus_wsconn_rx(bus_wsconn_t *c, bool first, bool final, const void *in, size_t len,
                  size_t max, const uint8_t **msg, size_t *msg_len)
{
    if (first && final) {
        /* The common case: the whole message in one piece, used in place. */
        if (len > max)
            return -EMSGSIZE;
        c->rx_len = 0;
        *msg = in;
        *msg_len = len;
        return 1;
    }
    if (first)
        c->rx_len = 0;
    if (c->rx_len + len > max)
        return -EMSGSIZE;
    if (c->rx_len + len > c->rx_cap) {
        size_t ncap = c->rx_cap ? c->rx_cap : 4096;
        while (ncap < c->rx_len + len)
            ncap *= 2;
        uint8_t *nb = realloc(c->rx, ncap);
        if (!nb)
            return -ENOMEM;
        c->rx = nb;
        c->rx_cap = ncap;
    }
    memcpy(c->rx + c->rx_len, in, len);
    c->rx_len += len;
    if (!final)
        return 0;
    *msg = c->rx;
    *msg_len = c->rx_len;
    c->rx_len = 0;
    return 1;
}

void bus_wsconn_free(bus_wsconn_t *c)
{
    bus_wsconn_drop(c);
    free(c->rx);
    c->rx = NULL;
    c->rx_len = c->rx_cap = 0;
}
