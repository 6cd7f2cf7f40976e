/* ag_super: `agent run`'s side of the adapters: supervision and stream routing.
 *
 * Starts agent.adapters agent-adapter processes (only when at least one instance is served),
 * each with the supervisor's own --config and --set arguments plus --slot and --parent, and
 * restarts any that dies, after a backoff (full jitter from 200 ms up to 10 s; the schedule
 * resets after 30 s of uptime). Children die with the supervisor (PR_SET_PDEATHSIG, set by the
 * adapter itself, which also checks its parent's pid); each child's exit is seen through a
 * pidfd in the loop. A worker that does not answer pings for 10 s is killed (and restarted).
 *
 * Streams (see ag_proto.h for the frames): a req.open from the hub is checked against the
 * endpoint lock first (unknown format or path → 404/405, unknown model → 404 model_not_found,
 * all instances of the model at max_concurrency → 429, in OpenAI's error shape, without a
 * vendor call); then the least-loaded instance serving the model (in flight relative to its
 * max_concurrency, counted over all workers) and the least-loaded ready worker are chosen.
 * Every later envelope of the stream is relayed unchanged both ways. A stream ends with the
 * worker's resp.end, the hub's req.cancel, a retry of the same req_id (the old attempt is
 * cancelled at its worker), the worker's death (the hub gets resp.end {error}), or the tunnel
 * going down (each worker gets req.cancel).
 */
#ifndef AG_SUPER_H
#define AG_SUPER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ag_config.h"
#include "ag_vendor.h"
#include "bus_env.h"
#include "bus_loop.h"

typedef struct ag_super ag_super_t;

/* How the supervisor talks to the hub (the tunnel client). */
typedef struct {
    int (*send)(void *arg, const bus_env_t *env);                 /* encode and send */
    int (*send_raw)(void *arg, const uint8_t *raw, size_t len);    /* send encoded bytes */
    void *arg;                                                     /* their context */
} ag_hub_ops_t;

/* What the workers are started with. */
typedef struct {
    const char *exe;        /* agent-adapter path */
    const char *config;     /* --config value */
    char *const *sets;      /* --set values */
    size_t n_sets;          /* their count */
} ag_super_args_t;

/* Creates the supervisor, binds agent.adapter_ipc and starts the workers (none when set is
 * empty). cfg, set, args and hub are borrowed. NULL on failure (logged). */
ag_super_t *ag_super_new(bus_loop_t *loop, const ag_config_t *cfg, const ag_instances_t *set,
                         const ag_super_args_t *args, const ag_hub_ops_t *hub);
/* Stops the workers (SIGTERM, then SIGKILL after 2 s) and frees everything. Accepts NULL. */
void ag_super_destroy(ag_super_t **s);

/* A stream envelope from the hub (req.open, req.body, req.cancel, credit); raw is its encoding. */
void ag_super_from_hub(ag_super_t *s, const bus_env_t *env, const uint8_t *raw, size_t len);
/* The tunnel went down: the hub has ended every stream; cancel them at the workers. */
void ag_super_hub_down(ag_super_t *s);

/* Sends presence {agent_id, state "up", models (every public name served, once), capacity
 * (the sum of the instances' max_concurrency)} to the hub, which publishes it for gateways.
 * Nothing when no instance is served; deferred until a worker is ready. 0 or a negative errno. */
int ag_super_announce(ag_super_t *s, const char *agent_id);

/* Where usage records go (agent-ledger); NULL keeps none. */
typedef struct ag_ledgerlink ag_ledgerlink_t;
void ag_super_set_ledger(ag_super_t *s, ag_ledgerlink_t *l);

/* Whether a stream (by its stream id on the bus) is still open here. */
bool ag_super_stream_open(const ag_super_t *s, const uint8_t req_id[BUS_REQ_ID_LEN]);

/* Streams in flight (for tests and metrics). */
size_t ag_super_streams(const ag_super_t *s);

#endif
