/* ag_ledgerlink: `agent run`'s side of agent-ledger: supervision and message relay.
 *
 * Starts agent-ledger (`--config FILE [--set ...] --parent PID`), restarts it after a backoff
 * when it dies, and binds agent.ledger_ipc, a ROUTER its DEALER (identity "ledger") connects
 * to. Relays:
 *   hub → ledger: ledger.tx (with in_flight set when the stream is still open here),
 *                 price.table, usage.ack (the hub's acknowledgement of the agent's report);
 *   ledger → hub: usage.report, ledger.ack, ledger.nack, ledger.sync, as they are;
 *   here → ledger: usage.report for every stream that used tokens, and billing.poke
 *                 {what "online"} whenever the tunnel comes up.
 * A stream's resp.end waits until agent-ledger has written its usage record (its local
 * usage.ack {source "ledger"}): the record exists before the hub can settle (DESIGN §4). An
 * agent-ledger that does not answer within S_RECORD_WAIT does not hold the user's answer
 * hostage: resp.end goes out, and the record is sent again until it is written.
 */
#ifndef AG_LEDGERLINK_H
#define AG_LEDGERLINK_H

#include <stddef.h>
#include <stdint.h>

#include "ag_config.h"
#include "ag_super.h"
#include "bus_env.h"
#include "bus_loop.h"

typedef struct ag_ledgerlink ag_ledgerlink_t;

/* Binds agent.ledger_ipc and starts agent-ledger (exe, with the config and --set values of
 * args). hub is how messages reach the tunnel. NULL on failure (logged). */
ag_ledgerlink_t *ag_ledgerlink_new(bus_loop_t *loop, const ag_config_t *cfg,
                                   const ag_super_args_t *args, const ag_hub_ops_t *hub);
/* Stops agent-ledger (SIGTERM, then SIGKILL after 2 s) and frees everything. Accepts NULL. */
void ag_ledgerlink_destroy(ag_ledgerlink_t **l);

/* A money envelope from the hub (ledger.tx, price.table, usage.ack); raw is its encoding.
 * in_flight: for ledger.tx, the request's stream is still open here. */
void ag_ledgerlink_from_hub(ag_ledgerlink_t *l, const bus_env_t *env, const uint8_t *raw,
                            size_t len, bool in_flight);

/* The tunnel is up: agent-ledger syncs its chain and re-sends unacknowledged reports. */
void ag_ledgerlink_online(ag_ledgerlink_t *l);

/* Records a stream's usage (report: a usage.report, req_id the request's base id) and sends
 * held (a resp.end's encoding, may be NULL) to the hub once agent-ledger has written it.
 * 0 or -ENOMEM (then held is sent at once). */
int ag_ledgerlink_record(ag_ledgerlink_t *l, const bus_env_t *report, const uint8_t *held,
                         size_t held_len);

#endif
