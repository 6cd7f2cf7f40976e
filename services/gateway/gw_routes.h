/* gw_routes: the gateway's routing table, built from the tunnels' presence events.
 *
 * Each connected agent has the models it serves, each with the request formats (API dialects)
 * it is served in, its capacity and its in-flight count (the tunnel's figure, plus the streams
 * this gateway opened since that figure was published). gw_routes_pick() chooses, for a model
 * in a format, the agent with the lowest load relative to its capacity among those serving the
 * model in that format and not excluded (the agents a retry already tried), breaking ties at
 * random so that gateways do not all pile onto the same agent. An agent whose presence has not
 * been refreshed for max_age is dropped: a tunnel that died cannot say goodbye.
 *
 * Formats come from presence.model_formats, parallel to models: element i is the
 * space-separated names of the formats models[i] is served in ("openai anthropic"). An element
 * that is absent (the list is missing or shorter than models) or empty means "openai" (agents
 * older than the formats); names the gateway does not speak ("azure") are ignored, so a model
 * whose element names none of ours is routable in no format. A model listed twice is served
 * in the union of its elements.
 */
#ifndef GW_ROUTES_H
#define GW_ROUTES_H

#include <stddef.h>
#include <stdint.h>

#include "bus_env.h"

#define GW_AGENT_ID_MAX 64
#define GW_MODEL_MAX 256

typedef struct gw_routes gw_routes_t;

/* The request formats the gateway speaks (names as in presence and req.open). */
typedef enum {
    GW_FORMAT_OPENAI = 0, /* "openai" */
    GW_FORMAT_ANTHROPIC,  /* "anthropic" */
    GW_FORMAT_GEMINI,     /* "gemini" (AI Studio and Vertex instances) */
    GW_FORMAT_BEDROCK,    /* "bedrock" */
    GW_FORMAT_COUNT
} gw_format_t;

#define GW_FORMAT_BIT(f) (1u << (unsigned)(f))

/* The wire name of a format ("openai", ...); "?" out of range. */
const char *gw_format_name(gw_format_t f);

/* The format called name (len bytes), or -1 when the gateway does not speak it. */
int gw_format_from_name(const char *name, size_t len);

/* The set of formats (GW_FORMAT_BIT) in one model_formats element; "" is openai. */
unsigned gw_formats_parse(const char *s, size_t len);

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

/* Picks an agent for model in format, skipping the n_exclude agent ids in exclude. 0 with *out
 * filled, -ENOENT when no connected agent serves the model in that format, -EAGAIN when agents
 * serve it but all are excluded, -ENOTCONN when no agent is connected at all. */
int gw_routes_pick(gw_routes_t *r, gw_format_t format, const char *model, size_t model_len,
                   const char *const *exclude, size_t n_exclude, gw_pick_t *out);

/* The formats (GW_FORMAT_BIT) connected agents serve model in, 0 when nobody serves it. */
unsigned gw_routes_formats(const gw_routes_t *r, const char *model, size_t model_len);

/* This gateway opened (+1) or finished (-1) a stream on agent_id. */
void gw_routes_add_load(gw_routes_t *r, const char *agent_id, int delta);

/* Number of connected agents. */
size_t gw_routes_agents(const gw_routes_t *r);

/* Calls fn once per distinct model served now in format, in sorted order. */
void gw_routes_each_model(const gw_routes_t *r, gw_format_t format,
                          void (*fn)(void *arg, const char *model), void *arg);

#endif
