/* backoff: exponential backoff with full jitter. */
#include "backoff.h"
#include "bus_plat.h"

void backoff_init(backoff_t *b, int64_t base_ms, int64_t cap_ms, int64_t reset_after_ms)
{
    b->base_ms = base_ms > 0 ? base_ms : 1;
    b->cap_ms = cap_ms >= b->base_ms ? cap_ms : b->base_ms;
    b->reset_after_ms = reset_after_ms;
    b->attempt = 0;
    b->up_since_us = 0;
}

int64_t backoff_ceiling_ms(const backoff_t *b, uint32_t attempt)
{
    int64_t c = b->base_ms;
    /* Clamp before doubling: with a cap above INT64_MAX / 2, c * 2 would overflow. */
    for (uint32_t i = 0; i < attempt && c < b->cap_ms; i++)
        c = c > b->cap_ms / 2 ? b->cap_ms : c * 2;
    return c < b->cap_ms ? c : b->cap_ms;
}

int64_t backoff_next_ms(backoff_t *b, uint64_t (*rnd)(uint64_t bound))
{
    int64_t ceiling = backoff_ceiling_ms(b, b->attempt);
    if (b->attempt < 64)
        b->attempt++;
    uint64_t (*r)(uint64_t) = rnd ? rnd : plat_random_below;
    return (int64_t)r((uint64_t)ceiling + 1);
}

void backoff_connected(backoff_t *b, uint64_t now_us)
{
    b->up_since_us = now_us ? now_us : 1;
}

void backoff_disconnected(backoff_t *b, uint64_t now_us)
{
    if (b->up_since_us && now_us >= b->up_since_us &&
        (int64_t)((now_us - b->up_since_us) / 1000) >= b->reset_after_ms)
        b->attempt = 0;
    b->up_since_us = 0;
}
