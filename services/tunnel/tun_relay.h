/* tun_relay: streams between gateways (ZeroMQ ROUTER) and agents (WebSocket).
 *
 * A gateway opens a stream with `req.open` {agent_id, …} under a 128-bit req_id; the tunnel
 * remembers which gateway (ROUTER identity) and which agent connection the stream joins and
 * relays every later envelope of that req_id unchanged, in both directions: req.body,
 * req.cancel and credit to the agent; resp.head, resp.chunk, resp.end, credit and error to the
 * gateway. Many streams share one agent connection. The tunnel holds no stream data of its own:
 * flow control is end to end (credit), and the send queues are bounded.
 *
 * A stream ends with resp.end or error from the agent, or req.cancel from the gateway. When an
 * agent goes away (disconnect, heartbeat, replacement) each of its streams ends with a resp.end
 * carrying an error, so no user waits forever; when a gateway is gone (its identity is
 * unknown to the ROUTER) the agent gets req.cancel. Envelopes for unknown streams are answered
 * so the sender stops: an agent gets req.cancel, a gateway gets an error.
 */
#ifndef TUN_RELAY_H
#define TUN_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include "bus_env.h"

typedef struct tun_server tun_server_t;
typedef struct tun_conn tun_conn_t;
typedef struct tun_stream tun_stream_t;

/* An envelope of a stream type from a gateway (req.open, req.body, req.cancel, credit). raw is
 * the envelope's encoded bytes, relayed unchanged. */
void tun_relay_from_gateway(tun_server_t *srv, const uint8_t *ident, size_t ident_len,
                            const bus_env_t *env, const uint8_t *raw, size_t len);

/* An envelope of a stream type from an authenticated agent (resp.*, credit, error with a
 * req_id). Returns 1 if it belonged to a stream (handled), 0 otherwise. */
int tun_relay_from_agent(tun_conn_t *c, const bus_env_t *env, const uint8_t *raw, size_t len);

/* The agent behind c is gone: end each of its streams towards its gateway. Idempotent. */
void tun_relay_agent_gone(tun_conn_t *c, const char *why);

/* Ends every stream (hub shutting down). */
void tun_relay_shutdown(tun_server_t *srv);

/* 1 for the envelope types the relay carries from gateways, else 0. */
int tun_relay_is_gateway_type(bus_type_t t);

#endif
