/* gw_routes: the gateway's routing table, built from the tunnels' presence events.
 *
 * Each connected agent has the models it serves, its capacity and its in-flight count (the
 * tunnel's figure, plus the streams this gateway opened since that figure was published).
 * gw_routes_pick() chooses, for a model, the agent with the lowest load relative to its
 * capacity among those not excluded (the agents a retry already tried), breaking ties at
 * random so that gateways do not all pile onto the same agent. An agent whose presence has not
 * been refreshed for max_age is dropped: a tunnel that died cannot say goodbye.
 */
#ifndef GW_ROUTES_H
#define GW_ROUTES_H

#include <stddef.h>
#include <stdint.h>

#include "bus_env.h"

#define GW_AGENT_ID_MAX 64
#define GW_MODEL_MAX 256

typedef struct gw_routes gw_routes_t;

typedef struct {
    char agent_id[GW_AGENT_ID_MAX + 1]; /* the agent */
    char tunnel[64];                    /* the tunnel it is connected to */
    uint64_t in_flight;                 /* tunnel's figure + this gateway's opens since */
    uint64_t capacity;                  /* announced concurrency (0: unknown, counts as 1) */
} gw_pick_t;

gw_routes_t *gw_routes_new(void);
void gw_routes_destroy(gw_routes_t **r);

/* Applies a presence event (state "up" or "down"); now_us monotonic. 0 or a negative errno. */
int gw_routes_apply(gw_routes_t *r, const bus_presence_t *p, uint64_t now_us);

/* Drops agents not refreshed within max_age_us. Returns how many were dropped. */
size_t gw_routes_expire(gw_routes_t *r, uint64_t now_us, uint64_t max_age_us);

/* Picks an agent for model, skipping the n_exclude agent ids in exclude. 0 with *out filled,
 * -ENOENT when no connected agent serves the model, -EAGAIN when agents serve it but all are
 * excluded, -ENOTCONN when no agent is connected at all. */
int gw_routes_pick(gw_routes_t *r, const char *model, size_t model_len,
                   const char *const *exclude, size_t n_exclude, gw_pick_t *out);

/* This gateway opened (+1) or finished (-1) a stream on agent_id. */
void gw_routes_add_load(gw_routes_t *r, const char *agent_id, int delta);

/* Number of connected agents. */
size_t gw_routes_agents(const gw_routes_t *r);

/* Calls fn once per distinct model served now, in sorted order. */
void gw_routes_each_model(const gw_routes_t *r, void (*fn)(void *arg, const char *model),
                          void *arg);

#endif
