/* gw_server: hub-gateway — the users' OpenAI-compatible HTTP endpoint.
 *
 * Each request: authenticate the key (gw_auth), check the headers and scan the body as it
 * arrives (lib/jsonscan: model, stream, duplicates, validity) without building a tree, pick an
 * agent for the model (gw_routes, fed by the tunnels' presence), and open a stream through the
 * tunnel: req.open, then the body as req.body chunks. The agent's resp.head / resp.chunk /
 * resp.end are written to the user as they arrive; the gateway grants credit to the agent as
 * the user's socket drains, so a slow reader pauses the vendor transfer instead of filling
 * memory. A user who goes away cancels the stream. A failure before the first byte reaches the
 * user (agent gone, refused, vendor 5xx) is retried on another agent, up to gateway.retries,
 * when the body is small enough to have been kept (gateway.retry_body_bytes).
 */
#ifndef GW_SERVER_H
#define GW_SERVER_H

#include "bus_loop.h"
#include "hub_config.h"

typedef struct gw_server gw_server_t;

gw_server_t *gw_server_new(bus_loop_t *loop, const hub_config_t *cfg);
void gw_server_destroy(gw_server_t **srv);

/* Graceful stop: refuse new requests, let streams in flight finish (bounded), then stop. */
void gw_server_shutdown(void *srv, int signo);

#endif
