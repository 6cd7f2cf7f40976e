/* bl_server: hub-billing — the only writer of balances, holds, settlements and the ledger.
 *
 * Sockets (ZeroMQ, one single-threaded loop):
 *  - a ROUTER bound at bus.billing_router: gateways send hold.req and usage.report and get
 *    hold.reply and usage.ack; hubctl sends billing.poke;
 *  - a DEALER with routing id "billing" connected to bus.tunnel_router: hub-tunnel forwards
 *    agents' usage.report / ledger.ack / ledger.nack / ledger.sync (agent_id stamped) and relays
 *    ledger.tx / price.table / usage.ack to the agent named in agent_id;
 *  - a SUB on bus.tunnel_presence: which agents are connected (bl_ledger).
 *
 * Group commit: everything read in one loop turn is written in one transaction per kind
 * (holds: store_holds_place; reports: store_usage_put; settlements: store_settle), and only
 * then answered. Store calls block the loop — this process exists to write the database, and
 * while a transaction runs new messages wait in ZeroMQ and make the next batch larger. Nothing
 * relies on ZeroMQ queues: a hold is durable before it is granted, a report before it is
 * acknowledged, a ledger row before it is sent; senders re-send until acknowledged, and a store
 * error never acknowledges anything.
 *
 * Settlement (every 50 ms and right after new reports): the pending reports of each request
 * are judged by bl_rules (the gateway's figure, or the agent's capped by the hold after
 * billing.agent_grace); billed requests get a sealed row on their agent's chain (bl_ledger keeps
 * the heads), and the rows go out to connected agents after the commit.
 */
#ifndef BL_SERVER_H
#define BL_SERVER_H

#include "bus_loop.h"
#include "hub_config.h"

typedef struct bl_server bl_server_t;

/* Binds and connects the sockets, starts the timers and opens the store (a store that cannot
 * be reached yet is retried every second; until then holds are answered 503 and reports are
 * not acknowledged). NULL on failure (logged). */
bl_server_t *bl_server_new(bus_loop_t *loop, const hub_config_t *cfg);
void bl_server_destroy(bl_server_t **srv);

/* Graceful stop: writes and answers what was already read, records acks, then stops. */
void bl_server_shutdown(void *srv, int signo);

#endif
