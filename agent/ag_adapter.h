/* ag_adapter: one agent-adapter worker: vendor calls for the streams `agent run` hands it.
 *
 * Connects a DEALER to the supervisor (agent.adapter_ipc, see ag_proto.h) and runs every
 * stream as one libcurl easy transfer in a multi handle joined to the loop (ag_curl): many at
 * once, HTTP keep-alive and HTTP/2 multiplexing to the vendor.
 *
 * Per stream: req.open builds the vendor request from the chosen instance (endpoint lock and
 * header filters in ag_vendor); req.body bytes go through the body rewriter (ag_bodyrw) into a
 * queue that curl's read callback drains, pausing the upload when the queue is empty and
 * resuming it when more arrives; response headers become one resp.head, each curl write
 * callback one resp.chunk, sent at once. credit: the stream starts with a window of
 * AG_WINDOW_BYTES response bytes; a write that does not fit in what is left pauses the
 * transfer (CURL_WRITEFUNC_PAUSE) until credit arrives. req.cancel removes the transfer at once.
 * The end is resp.end {error, usage}; a failure before the vendor answered is a resp.head with a
 * synthetic status (502, or 504 on a timeout) and an OpenAI error body, then resp.end {error},
 * so the gateway can retry elsewhere.
 */
#ifndef AG_ADAPTER_H
#define AG_ADAPTER_H

#include "ag_config.h"
#include "ag_vendor.h"
#include "bus_loop.h"

typedef struct ag_adapter ag_adapter_t;

/* Creates the worker for slot and connects it. cfg and set are borrowed and must outlive it.
 * NULL on failure (logged). */
ag_adapter_t *ag_adapter_new(bus_loop_t *loop, const ag_config_t *cfg, const ag_instances_t *set,
                             int slot);
void ag_adapter_destroy(ag_adapter_t **a);

/* Graceful stop (SIGTERM/SIGINT, or the supervisor gone): ends every stream with an error and
 * stops the loop. */
void ag_adapter_shutdown(void *a, int signo);

#endif
