/* bus_wsconn: the WebSocket plumbing both ends of the tunnel share.
 *
 * An outgoing queue of binary frames, each allocated once with the LWS_PRE headroom lws
 * needs so it is written without another copy, and written one frame per writable callback
 * (the receiver sets the pace); and the reassembly of a message lws delivers in pieces
 * (fragments, or a frame larger than the protocol's rx buffer), bounded by a maximum.
 */
#ifndef BUS_WSCONN_H
#define BUS_WSCONN_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct bus_wsframe bus_wsframe_t;

typedef struct {
    bus_wsframe_t *head; /* next frame to write */
    bus_wsframe_t *tail; /* last queued */
    size_t queued;       /* payload bytes queued */
    uint8_t *rx;         /* reassembly buffer */
    size_t rx_len;       /* bytes gathered for the current message */
    size_t rx_cap;       /* its capacity */
} bus_wsconn_t;

/* Queues a copy of one binary message. Returns a pointer to the queued copy (valid until it
 * is written) or NULL when memory is short. The caller asks lws for a writable callback. */
const uint8_t *bus_wsconn_queue(bus_wsconn_t *c, const uint8_t *data, size_t len);

/* Writes the head frame (on a writable callback). Returns the payload bytes written (> 0),
 * 0 when the queue is empty, or -1 when the write failed (close the connection). Asks for
 * another writable callback when frames remain. */
int bus_wsconn_write(bus_wsconn_t *c, struct lws *wsi);

/* Discards every queued frame. */
void bus_wsconn_drop(bus_wsconn_t *c);

/* Feeds received bytes (on a receive callback; first and final are lws_is_first_fragment()
 * and lws_is_final_fragment()). Returns 1 with msg and msg_len set when a whole message is
 * complete (valid until the next call), 0 when more is to come, -EMSGSIZE when the message
 * would exceed max, -ENOMEM. */
int bus_wsconn_rx(bus_wsconn_t *c, bool first, bool final, const void *in, size_t len,
                  size_t max, const uint8_t **msg, size_t *msg_len);

/* Frees the queue and the reassembly buffer; the struct can be reused. */
void bus_wsconn_free(bus_wsconn_t *c);

#endif
