/* tun_registry: the tunnel's cached copy of the agent registry.
 *
 * A worker thread owns its own store connection and re-reads the agents table whenever
 * store_agents_rev() changes (polled every registry_poll), so database latency never reaches
 * the event loop and hubctl changes arrive within a second. The loop adopts each new snapshot
 * with tun_registry_refresh() and looks agents up without locks or I/O.
 */
#ifndef TUN_REGISTRY_H
#define TUN_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"
#include "tun_handshake.h"

typedef struct tun_registry tun_registry_t;

/* Starts the worker. params are copied. NULL on failure. */
tun_registry_t *tun_registry_new(const store_params_t *params, int64_t poll_ms);
void tun_registry_destroy(tun_registry_t **r);

/* Called on the loop: adopts a newer snapshot if the worker made one. Returns true if the
 * snapshot changed. */
bool tun_registry_refresh(tun_registry_t *r);

/* Asks the worker to look for changes now rather than at its next poll. */
void tun_registry_poke(tun_registry_t *r);

/* Counts adopted snapshots, so a caller can tell whether it has seen the current one. */
uint64_t tun_registry_generation(const tun_registry_t *r);

/* Lookup for the handshake (adopts a newer snapshot first, so an agent added a moment ago is
 * found as soon as the worker has read it): 0, -ENOENT, or -EAGAIN before the first load. */
int tun_registry_lookup(void *r, const char *agent_id, tun_hs_agent_t *out);

/* True once a snapshot has been loaded. */
bool tun_registry_ready(const tun_registry_t *r);

/* Number of agents in the current snapshot. */
size_t tun_registry_count(const tun_registry_t *r);

/* Database errors seen by the worker (for metrics). */
uint64_t tun_registry_errors(const tun_registry_t *r);

#endif
