/* bl_ledger: each agent's chain head and the delivery of its ledger rows (DESIGN §4).
 *
 * hub-billing is the only writer of the ledger, so the head of every chain (its newest seq and
 * hash) is kept here in memory, loaded from the store at start, and moved only after a commit.
 * Delivery is at-least-once and paced by the agent:
 *  - per agent: acked_seq (durable, store_ledger_ack), sent_seq (rows up to it are on their
 *    way), and whether presence says it is connected;
 *  - rows go out in seq order, at most BL_LEDGER_WINDOW beyond acked_seq; each ack opens the
 *    window again; a row whose price version this agent has not been sent since its last sync is
 *    preceded by that version's price.table;
 *  - ledger.sync {last_seq}: every price version, then every row after last_seq;
 *    ledger.nack {last_seq}: again from last_seq + 1 (the nacks of the rows behind a gap are
 *    taken as one);
 *  - a connected agent whose acked_seq has not moved for the resend period while rows are
 *    outstanding gets them again from acked_seq + 1; an agent that comes up (presence) gets its
 *    unacknowledged rows at once, which is also how rows are re-sent after billing restarts.
 * Sending never blocks: a refused send (the tunnel away, its queue full) leaves the row for the
 * next ack, presence change or resend.
 */
#ifndef BL_LEDGER_H
#define BL_LEDGER_H

#include <stdbool.h>
#include <stdint.h>

#include "bl_rules.h"
#include "bus_env.h"
#include "bus_metrics.h"
#include "ledger.h"
#include "store/store.h"

/* Rows sent and not yet acknowledged, at most, per agent. */
#define BL_LEDGER_WINDOW 256
/* An agent whose presence was not refreshed for this long counts as gone (tunnels republish
 * every few seconds). */
#define BL_PRESENCE_MAX_AGE_US (10ull * 1000000)

typedef struct bl_ledger bl_ledger_t;

/* Sends one envelope to the tunnel (for the agent env names). 0, or a negative errno when it
 * could not be queued (nothing was sent). */
typedef int (*bl_send_fn)(void *arg, const bus_env_t *env);

/* Counters bl_ledger updates (handles may be NULL). */
typedef struct {
    bus_metric_t *rows_sent;    /* ledger.tx sent */
    bus_metric_t *resync_rows;  /* ledger.tx of a row sent before (after a sync, nack, resend) */
    bus_metric_t *prices_sent;  /* price.table sent */
    bus_metric_t *disputes;     /* rows acknowledged "disputed" */
    bus_metric_t *store_errors; /* store calls that failed */
    bus_metric_t *connected;    /* gauge: agents presence says are up */
} bl_ledger_metrics_t;

/* prices is borrowed and read at each send (the caller keeps it current). */
bl_ledger_t *bl_ledger_new(bl_send_fn send, void *send_arg, const bl_prices_t *prices,
                           const bl_ledger_metrics_t *m, int64_t resend_ms);
void bl_ledger_destroy(bl_ledger_t **l);

/* (Re)loads every chain head and acked_seq from the store (store_account_list and
 * store_ledger_head). Connection state is kept. 0 or the store's error. */
int bl_ledger_load(bl_ledger_t *l, store_t *st);

/* Re-reads one agent's head from the store (after a failed settlement). */
int bl_ledger_reload_head(bl_ledger_t *l, store_t *st, const char *agent_id);

/* The agent's committed head: seq 0 and zeros for an agent without rows. */
void bl_ledger_head(const bl_ledger_t *l, const char *agent_id, uint64_t *seq,
                    uint8_t hash[LEDGER_HASH_LEN]);

/* A row is committed: it becomes its agent's head, and goes out at once when the agent is
 * connected and the row is next in line (otherwise later, from the store). -ENOMEM, -ESTALE
 * when the row does not follow the head in memory (the head is then left alone), or 0. */
int bl_ledger_committed(bl_ledger_t *l, const ledger_row_t *row);

/* Presence from a tunnel. */
void bl_ledger_presence(bl_ledger_t *l, store_t *st, const bus_presence_t *p, uint64_t now_us);

/* The agent's ledger.ack / ledger.nack / ledger.sync (agent_id stamped by the tunnel). */
void bl_ledger_on_ack(bl_ledger_t *l, store_t *st, const char *agent_id, const bus_ledger_ack_t *a,
                      uint64_t now_us);
void bl_ledger_on_nack(bl_ledger_t *l, store_t *st, const char *agent_id,
                       const bus_ledger_nack_t *nk, uint64_t now_us);
void bl_ledger_on_sync(bl_ledger_t *l, store_t *st, const char *agent_id,
                       const bus_ledger_sync_t *sy, uint64_t now_us);

/* Timer: forgets agents whose presence went stale, re-sends stalled rows. st may be NULL
 * (store away: nothing is read). */
void bl_ledger_tick(bl_ledger_t *l, store_t *st, uint64_t now_us);

/* Writes the acknowledgements received since the last call (one store_ledger_ack per agent
 * whose acked_seq moved). 0, or the first store error (those agents are retried next time). */
int bl_ledger_flush_acks(bl_ledger_t *l, store_t *st);

/* Number of agents presence says are connected. */
size_t bl_ledger_connected(const bl_ledger_t *l);

/* Fills a ledger.tx envelope for row (borrowing its strings); the target is row->agent_id. */
void bl_ledger_tx_env(const ledger_row_t *row, bus_env_t *env);

#endif
