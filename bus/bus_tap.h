/* bus_tap: mirrors every envelope a process sends and receives to an XPUB socket.
 *
 * The XPUB socket runs in verbose mode so the process sees every (un)subscription and keeps a
 * count of subscribers; while the count is zero, bus_tap_mirror() returns after one integer
 * test, so an idle tap costs nothing. Each mirrored message has two frames: a header
 * "PROCESS DIR" (DIR is "in" or "out", plus a peer name when known: "out agent:3f2a…"),
 * and the envelope's msgpack bytes unchanged. `bus-tap ENDPOINT` prints them as JSON lines.
 * Mirroring never blocks: when the subscriber is slow, messages are dropped and counted.
 */
#ifndef BUS_TAP_H
#define BUS_TAP_H

#include <stddef.h>
#include <stdint.h>

#include "bus_loop.h"

typedef struct bus_tap bus_tap_t;

/* Binds an XPUB socket on endpoint ("" or NULL → returns NULL with *err = 0: tap off).
 * process names the mirroring process in each header. */
bus_tap_t *bus_tap_new(bus_loop_t *loop, const char *endpoint, const char *process, int *err);
void bus_tap_destroy(bus_tap_t **tap);

/* Mirrors one envelope. dir is "in" or "out"; peer may be NULL. tap may be NULL. */
void bus_tap_mirror(bus_tap_t *tap, const char *dir, const char *peer, const uint8_t *env,
                    size_t len);

/* Number of current subscribers (0 when nobody listens). */
int bus_tap_subscribers(const bus_tap_t *tap);

/* Messages dropped because the subscriber could not keep up. */
uint64_t bus_tap_dropped(const bus_tap_t *tap);

#endif
