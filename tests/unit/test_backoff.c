/* Unit tests for lib/backoff: exponential ceilings, full jitter and the reset rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "backoff.h"

#define BASE 500
#define CAP 30000
#define RESET 60000

static uint64_t s_last_bound; /* bound passed to the last stub call */
static unsigned s_calls;      /* stub calls */

/* Deterministic random source: the largest value allowed. */
static uint64_t rnd_max(uint64_t bound)
{
    s_last_bound = bound;
    s_calls++;
    return bound - 1;
}

/* Deterministic random source: always zero. */
static uint64_t rnd_zero(uint64_t bound)
{
    s_last_bound = bound;
    s_calls++;
    return 0;
}

static void test_ceilings(void **state)
{
    (void)state;
    backoff_t b;
    backoff_init(&b, BASE, CAP, RESET);
    static const int64_t want[] = {500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000};
    for (uint32_t i = 0; i < sizeof want / sizeof want[0]; i++)
        assert_int_equal(backoff_ceiling_ms(&b, i), want[i]);
    assert_int_equal(backoff_ceiling_ms(&b, 63), CAP);
    assert_int_equal(backoff_ceiling_ms(&b, 64), CAP);
    assert_int_equal(backoff_ceiling_ms(&b, 1000), CAP);
    assert_int_equal(backoff_ceiling_ms(&b, UINT32_MAX), CAP);

    /* A cap that is a power-of-two multiple of the base is reached exactly. */
    backoff_init(&b, 1000, 8000, RESET);
    assert_int_equal(backoff_ceiling_ms(&b, 2), 4000);
    assert_int_equal(backoff_ceiling_ms(&b, 3), 8000);
    assert_int_equal(backoff_ceiling_ms(&b, 4), 8000);

    /* Odd inputs are clamped: base at least 1, cap at least base. */
    backoff_init(&b, 0, 0, RESET);
    assert_int_equal(b.base_ms, 1);
    assert_int_equal(b.cap_ms, 1);
    assert_int_equal(backoff_ceiling_ms(&b, 1000), 1);
    backoff_init(&b, 2000, 100, RESET);
    assert_int_equal(backoff_ceiling_ms(&b, 0), 2000);
    assert_int_equal(backoff_ceiling_ms(&b, 5), 2000);
}

static void test_ceiling_no_overflow_near_int64_max(void **state)
{
    (void)state;
    /* Doubling must stop before it leaves int64_t, whatever the cap (UBSan traps otherwise). */
    backoff_t b;
    backoff_init(&b, 1, INT64_MAX, RESET);
    assert_int_equal(backoff_ceiling_ms(&b, 0), 1);
    assert_int_equal(backoff_ceiling_ms(&b, 62), INT64_C(1) << 62);
    assert_int_equal(backoff_ceiling_ms(&b, 63), INT64_MAX);
    assert_int_equal(backoff_ceiling_ms(&b, 1000), INT64_MAX);
    backoff_init(&b, 3, INT64_MAX - 1, RESET);
    for (uint32_t i = 0; i < 200; i++) {
        int64_t c = backoff_ceiling_ms(&b, i);
        assert_true(c >= 3);
        assert_true(c <= INT64_MAX - 1);
        if (i > 0)
            assert_true(c >= backoff_ceiling_ms(&b, i - 1)); /* never shrinks */
    }
    assert_int_equal(backoff_ceiling_ms(&b, 199), INT64_MAX - 1);
}

static void test_next_with_stub(void **state)
{
    (void)state;
    backoff_t b;
    backoff_init(&b, BASE, CAP, RESET);
    /* The largest draw is exactly the ceiling: the interval is closed [0, ceiling]. */
    static const int64_t want[] = {500, 1000, 2000, 4000, 8000, 16000, 30000, 30000};
    s_calls = 0;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_int_equal(b.attempt, i);
        assert_int_equal(backoff_next_ms(&b, rnd_max), want[i]);
        assert_int_equal(s_last_bound, (uint64_t)want[i] + 1);
        assert_int_equal(b.attempt, i + 1);
    }
    assert_int_equal(s_calls, sizeof want / sizeof want[0]);

    /* The smallest draw is 0. */
    backoff_init(&b, BASE, CAP, RESET);
    for (int i = 0; i < 10; i++)
        assert_int_equal(backoff_next_ms(&b, rnd_zero), 0);
    assert_int_equal(b.attempt, 10);
    assert_int_equal(s_last_bound, CAP + 1);

    /* The attempt counter saturates and stays at the cap. */
    for (int i = 0; i < 1000; i++)
        assert_int_equal(backoff_next_ms(&b, rnd_max), CAP);
    assert_true(b.attempt <= 64);
    assert_int_equal(b.attempt, 64);
}

static void test_full_jitter_real_random(void **state)
{
    (void)state;
    backoff_t b;
    backoff_init(&b, BASE, CAP, RESET);
    const uint32_t attempt = 3; /* ceiling 4000 */
    const int64_t ceiling = backoff_ceiling_ms(&b, attempt);
    assert_int_equal(ceiling, 4000);
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    int64_t sum = 0;
    for (int i = 0; i < 2000; i++) {
        b.attempt = attempt;
        int64_t d = backoff_next_ms(&b, NULL);
        assert_true(d >= 0);
        assert_true(d <= ceiling);
        assert_int_equal(b.attempt, attempt + 1);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
        sum += d;
    }
    /* Full jitter, not "ceiling/2 + jitter": the whole interval is used. */
    assert_true(lo < ceiling / 10);
    assert_true(hi > ceiling * 9 / 10);
    /* The mean of 2000 uniform draws is within a few percent of ceiling/2 (sd ~ 26). */
    int64_t mean = sum / 2000;
    assert_true(mean > 1700 && mean < 2300);

    /* At attempt 0 the draw stays within the base. */
    for (int i = 0; i < 200; i++) {
        b.attempt = 0;
        int64_t d = backoff_next_ms(&b, NULL);
        assert_true(d >= 0 && d <= BASE);
    }
}

static void test_reset_after_long_connection(void **state)
{
    (void)state;
    backoff_t b;
    backoff_init(&b, BASE, CAP, RESET);
    for (int i = 0; i < 5; i++)
        backoff_next_ms(&b, rnd_zero);
    assert_int_equal(b.attempt, 5);

    const uint64_t t0 = 1000000000ULL;
    backoff_connected(&b, t0);
    assert_int_equal(b.attempt, 5); /* coming up alone does not reset */
    backoff_disconnected(&b, t0 + (uint64_t)RESET * 1000);
    assert_int_equal(b.attempt, 0);
    assert_int_equal(b.up_since_us, 0);
    assert_int_equal(backoff_next_ms(&b, rnd_max), BASE); /* the schedule starts over */

    /* Well past reset_after resets too. */
    for (int i = 0; i < 3; i++)
        backoff_next_ms(&b, rnd_zero);
    backoff_connected(&b, t0);
    backoff_disconnected(&b, t0 + 3600ULL * 1000000);
    assert_int_equal(b.attempt, 0);

    /* now_us == 0 at connect is still "up" (0 means down internally). */
    for (int i = 0; i < 3; i++)
        backoff_next_ms(&b, rnd_zero);
    backoff_connected(&b, 0);
    assert_true(b.up_since_us != 0);
    backoff_disconnected(&b, (uint64_t)RESET * 1000 + 1);
    assert_int_equal(b.attempt, 0);
}

static void test_short_connection_keeps_schedule(void **state)
{
    (void)state;
    backoff_t b;
    backoff_init(&b, BASE, CAP, RESET);
    for (int i = 0; i < 4; i++)
        backoff_next_ms(&b, rnd_zero);
    assert_int_equal(b.attempt, 4);

    const uint64_t t0 = 5000000ULL;
    backoff_connected(&b, t0);
    backoff_disconnected(&b, t0 + (uint64_t)RESET * 1000 - 1000); /* 1 ms short */
    assert_int_equal(b.attempt, 4);
    assert_int_equal(b.up_since_us, 0);
    assert_int_equal(backoff_next_ms(&b, rnd_max), 8000); /* the schedule continues */

    /* A disconnect without a connect (a failed attempt) never resets. */
    backoff_disconnected(&b, t0 + 3600ULL * 1000000);
    assert_int_equal(b.attempt, 5);

    /* A clock that went backwards does not reset either. */
    backoff_connected(&b, t0);
    backoff_disconnected(&b, t0 - 1);
    assert_int_equal(b.attempt, 5);

    /* The connect time is forgotten at disconnect: a second disconnect later is no reset. */
    backoff_connected(&b, t0);
    backoff_disconnected(&b, t0 + 1000);
    backoff_disconnected(&b, t0 + (uint64_t)RESET * 1000 * 2);
    assert_int_equal(b.attempt, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ceilings),
        cmocka_unit_test(test_ceiling_no_overflow_near_int64_max),
        cmocka_unit_test(test_next_with_stub),
        cmocka_unit_test(test_full_jitter_real_random),
        cmocka_unit_test(test_reset_after_long_connection),
        cmocka_unit_test(test_short_connection_keeps_schedule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
