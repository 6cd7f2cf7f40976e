/* backoff: reconnect delays with exponential growth and full jitter.
 *
 * Attempt n (0-based) waits a uniform random time in [0, min(cap, base * 2^n)] ("full jitter":
 * a hub restart does not bring every agent back in the same millisecond). The attempt counter
 * resets once a connection has stayed up for reset_after_ms.
 */
#ifndef BACKOFF_H
#define BACKOFF_H

#include <stdint.h>

typedef struct {
    int64_t base_ms;        /* first ceiling (500 ms) */
    int64_t cap_ms;         /* largest ceiling (30 s) */
    int64_t reset_after_ms; /* a connection up this long resets the schedule (60 s) */
    uint32_t attempt;       /* failures since the last reset */
    uint64_t up_since_us;   /* monotonic time the current connection came up, 0 if down */
} backoff_t;

void backoff_init(backoff_t *b, int64_t base_ms, int64_t cap_ms, int64_t reset_after_ms);

/* The ceiling for attempt n: min(cap, base * 2^n), without overflow. */
int64_t backoff_ceiling_ms(const backoff_t *b, uint32_t attempt);

/* Delay before the next attempt, given a random number source r in [0, bound). Advances the
 * attempt counter. rnd may be NULL to use the platform's secure random. */
int64_t backoff_next_ms(backoff_t *b, uint64_t (*rnd)(uint64_t bound));

/* Records that a connection came up (now_us monotonic). */
void backoff_connected(backoff_t *b, uint64_t now_us);

/* Records that it went down; resets the schedule if it had stayed up long enough. */
void backoff_disconnected(backoff_t *b, uint64_t now_us);

#endif
