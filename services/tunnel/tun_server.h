/* tun_server: hub-tunnel — the agents' WebSocket endpoint, the admin API and the bus side.
 *
 * Agents connect over TLS to /tunnel/connect and authenticate (tun_handshake). Authenticated
 * connections live in an AgentID → connection map; a second authenticated connection for the
 * same id replaces the first (closed with 4010), while a connection that fails the handshake
 * never touches the map, so a forger cannot displace the honest agent. A one-second sweep
 * sends heartbeats, closes silent agents (4007) and slow handshakes (4009), and publishes a
 * `presence` event on the bus whenever an agent comes or goes.
 */
#ifndef TUN_SERVER_H
#define TUN_SERVER_H

#include "bus_loop.h"
#include "hub_config.h"

typedef struct tun_server tun_server_t;

/* Builds the server on loop: loads the certificate pin, starts the registry worker, binds the
 * bus sockets and the listeners. NULL on failure (logged). */
tun_server_t *tun_server_new(bus_loop_t *loop, const hub_config_t *cfg);
void tun_server_destroy(tun_server_t **srv);

/* The lws protocols the server's vhosts use (for bus_loop_new). */
const struct lws_protocols *tun_server_protocols(void);

/* Graceful stop: refuse new work, close agents with 1001, answer pending admin calls with 503,
 * then stop the loop. */
void tun_server_shutdown(void *srv, int signo);

#endif
