/* al_ledger: the agent-ledger process's message handling: usage records, the price table and
 * the agent's copy of the hub's ledger (DESIGN §4), on top of al_db (storage) and al_verify
 * (verdicts).
 *
 * Transport: a DEALER with routing id "ledger" connected to agent.ledger_ipc, where `agent run`
 * binds a ROUTER. Every message is one frame holding one bus_env envelope, in both directions.
 * `agent run` keeps the usage.ack {source "ledger"} for itself and forwards everything else this
 * process sends to the hub as it is; it relays to this process the hub's ledger.tx,
 * price.table and usage.ack {source "agent"}, its own usage.report {source "agent"} for each
 * finished attempt, and billing.poke {what "online"} when the tunnel (re)connects.
 *
 *   usage.report   written to the usage table (once per (req_id, attempt)); after the commit,
 *                  usage.ack {source "ledger", attempt} back to `agent run` (which holds the
 *                  stream's resp.end until then), and the report to the hub, re-sent every
 *                  agent.ledger_resend and on billing.poke until the hub's usage.ack.
 *   usage.ack      from the hub {source "agent"}: the record is marked reported.
 *   price.table    a price version, stored (history kept: old rows stay verifiable).
 *   ledger.tx      seq <= the last stored: a re-send: ledger.ack again with the stored verdict if
 *                  the hash is the stored one, else ledger.nack. seq past the next expected:
 *                  ledger.nack {seq, last_seq, reason}. Otherwise queued and processed strictly
 *                  in order: a row without a usage record whose in_flight flag is set waits for
 *                  it up to agent.ledger_wait (rows behind it wait too); then al_verify gives
 *                  the verdict, the row is written whatever it is (the hub's chain is canonical
 *                  and both copies stay identical row for row), and ledger.ack {seq, verdict}.
 *   billing.poke   {what "online"}: ledger.sync {last_seq, last_hash} and every unreported usage
 *                  record re-sent. A sync also goes out at start.
 *
 * Durability: the writes of one loop turn share one transaction; every acknowledgement and every
 * message to the hub waits in an outbox until that transaction commits, so a kill -9 at any
 * moment loses only messages whose senders re-send them. A failed commit drops the outbox,
 * reloads the chain's state from the file and asks the hub for the rows again (ledger.sync).
 *
 * Metrics (agent.ledger_metrics_listen): rows by verdict, disputes by reason, unbilled micros,
 * usage records, unreported usage records, syncs and nacks sent, usage reports re-sent.
 */
#ifndef AL_LEDGER_H
#define AL_LEDGER_H

#include "ag_config.h"
#include "bus_loop.h"

#define AL_IDENTITY "ledger" /* this process's routing id on agent.ledger_ipc */

typedef struct al_ledger al_ledger_t;

/* Opens the database, connects to `agent run` and sends the start sync. cfg is borrowed and
 * must outlive it; agent_id is this agent's id (identity.h); parent is the pid of `agent run`
 * (checked on every resend tick: the process stops when it is gone). NULL on failure (logged). */
al_ledger_t *al_ledger_new(bus_loop_t *loop, const ag_config_t *cfg, const char *agent_id,
                           long parent);
/* Commits and sends what is pending, then frees everything. Accepts NULL; sets *p to NULL. */
void al_ledger_destroy(al_ledger_t **p);

/* Graceful stop (SIGTERM/SIGINT, or the parent gone): commits and sends what is pending, then
 * stops the loop. */
void al_ledger_shutdown(void *l, int signo);

#endif
