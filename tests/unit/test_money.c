/* Unit tests for money: decimal parsing and formatting, and the shared cost rule. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "money.h"

static void s_parse_ok(const char *text, int64_t want)
{
    int64_t got = -12345;
    int rc = money_parse(text, 1, &got);
    if (rc != 0 || got != want)
        fail_msg("money_parse(\"%s\") = %d, %lld; want %lld", text, rc, (long long)got,
                 (long long)want);
}

static void test_parse(void **state)
{
    (void)state;
    s_parse_ok("10.5", 10500000);
    s_parse_ok("10.500000", 10500000);
    s_parse_ok("0.000001", 1);
    s_parse_ok("0", 0);
    s_parse_ok("12.", 12000000);
    s_parse_ok(".25", 250000);
    s_parse_ok("-3", -3000000);
    s_parse_ok("-0.000001", -1);
    s_parse_ok("9223372036854.775807", INT64_MAX);
    s_parse_ok("-9223372036854.775808", INT64_MIN);
    int64_t v = 0;
    static const char *const bad[] = {"", "-", ".", "1.2.3", "1,5", "+1", " 1", "1 ", "1e3",
                                      "0x10", "1.0000001", "abc", "--1", "1-", NULL};
    for (int i = 0; bad[i]; i++)
        assert_int_equal(money_parse(bad[i], 1, &v), -EINVAL);
    assert_int_equal(money_parse("-1", 0, &v), -EINVAL); /* top-ups are positive */
    assert_int_equal(money_parse("9223372036854.775808", 1, &v), -ERANGE);
    assert_int_equal(money_parse("-9223372036854.775809", 1, &v), -ERANGE);
    assert_int_equal(money_parse("99999999999999999999999999", 1, &v), -ERANGE);
    assert_int_equal(money_parse(NULL, 1, &v), -EINVAL);
}

static void test_format_round_trip(void **state)
{
    (void)state;
    char buf[MONEY_TEXT_MAX];
    money_format(10500000, buf);
    assert_string_equal(buf, "10.500000");
    money_format(-1, buf);
    assert_string_equal(buf, "-0.000001");
    money_format(0, buf);
    assert_string_equal(buf, "0.000000");
    money_format(INT64_MIN, buf);
    assert_string_equal(buf, "-9223372036854.775808");
    static const int64_t vals[] = {1, 999999, 1000000, 123456789012, -987654321, INT64_MAX,
                                   INT64_MIN};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        int64_t back = 0;
        money_format(vals[i], buf);
        assert_int_equal(money_parse(buf, 1, &back), 0);
        assert_int_equal(back, vals[i]);
    }
}

static void test_cost_rounds_once_up(void **state)
{
    (void)state;
    /* $0.15 / 1M input, $0.60 / 1M output, $0.075 / 1M cached input */
    money_price_t p = {150000, 75000, 600000};
    money_split_t s;
    money_usage_t u = {1000, 0, 500};
    /* 1000 * 150000 + 500 * 600000 = 450,000,000 / 1e6 = 450 micro-units exactly */
    assert_int_equal(money_price(&p, &u, 0, &s), 0);
    assert_int_equal(s.cost, 450);
    /* one token: 150000 / 1e6 = 0.15 micro-units → rounded up to 1, once */
    money_usage_t one = {1, 0, 0};
    assert_int_equal(money_price(&p, &one, 0, &s), 0);
    assert_int_equal(s.cost, 1);
    /* rounding happens on the sum, not per part: 3 tokens at 0.15 = 0.45 → 1, not 3 */
    money_usage_t three = {3, 0, 0};
    assert_int_equal(money_price(&p, &three, 0, &s), 0);
    assert_int_equal(s.cost, 1);
    /* cached tokens are part of input and priced at the cached rate */
    money_usage_t cached = {1000, 400, 0};
    assert_int_equal(money_price(&p, &cached, 0, &s), 0);
    assert_int_equal(s.cost, (600 * 150000 + 400 * 75000) / 1000000); /* 120, exact */
    money_usage_t zero = {0, 0, 0};
    assert_int_equal(money_price(&p, &zero, 0, &s), 0);
    assert_int_equal(s.cost, 0);
}

static void test_fee_and_credit_add_up(void **state)
{
    (void)state;
    money_price_t p = {2500000, 1250000, 10000000}; /* gpt-4o-like prices */
    money_split_t s;
    for (int64_t fee_ppm = 0; fee_ppm <= 1000000; fee_ppm += 33333) {
        for (int64_t tokens = 0; tokens < 5000; tokens += 37) {
            money_usage_t u = {tokens * 3, tokens, tokens};
            assert_int_equal(money_price(&p, &u, fee_ppm, &s), 0);
            assert_int_equal(s.fee + s.credit, s.cost);
            assert_true(s.fee >= 0 && s.credit >= 0);
            /* the fee is rounded down: never more than its exact share */
            assert_true((__int128)s.fee * 1000000 <= (__int128)s.cost * fee_ppm);
        }
    }
    money_usage_t u = {1000, 0, 1000};
    assert_int_equal(money_price(&p, &u, 1000000, &s), 0);
    assert_int_equal(s.fee, s.cost);
    assert_int_equal(s.credit, 0);
}

static void test_bad_inputs_and_overflow(void **state)
{
    (void)state;
    money_price_t p = {1, 1, 1};
    money_split_t s;
    money_usage_t neg = {-1, 0, 0}, cached_over = {5, 6, 0}, ok = {1, 0, 0};
    assert_int_equal(money_price(&p, &neg, 0, &s), -EINVAL);
    assert_int_equal(money_price(&p, &cached_over, 0, &s), -EINVAL);
    assert_int_equal(money_price(&p, &ok, -1, &s), -EINVAL);
    assert_int_equal(money_price(&p, &ok, 1000001, &s), -EINVAL);
    money_price_t neg_price = {-1, 0, 0};
    assert_int_equal(money_price(&neg_price, &ok, 0, &s), -EINVAL);
    /* huge figures: computed exactly in 128 bits, refused only when the cost leaves int64 */
    money_price_t big = {INT64_MAX, INT64_MAX, INT64_MAX};
    money_usage_t many = {INT64_MAX, 0, INT64_MAX};
    assert_int_equal(money_price(&big, &many, 0, &s), -ERANGE);
    money_usage_t fits = {1000000, 0, 0};
    money_price_t high = {INT64_MAX, 0, 0};
    assert_int_equal(money_price(&high, &fits, 500000, &s), 0);
    assert_int_equal(s.cost, INT64_MAX);
    assert_int_equal(s.fee + s.credit, INT64_MAX);
}

/* money_split: the same rule for a cost that is already known (a charge capped at its hold). */
static void test_split_known_cost(void **state)
{
    (void)state;
    money_split_t o;
    assert_int_equal(money_split(1851, 100000, &o), 0);
    assert_int_equal(o.cost, 1851);
    assert_int_equal(o.fee, 185);
    assert_int_equal(o.credit, 1666);
    assert_int_equal(money_split(INT64_MAX, 999999, &o), 0);
    assert_int_equal(o.fee + o.credit, INT64_MAX);
    assert_int_equal(money_split(0, 500000, &o), 0);
    assert_int_equal(o.fee, 0);
    assert_int_equal(money_split(-1, 0, &o), -EINVAL);
    assert_int_equal(money_split(5, 1000001, &o), -EINVAL);
    /* money_price and money_split agree. */
    money_price_t p = {.input = 2500000, .cached_input = 1250000, .output = 10000000};
    money_usage_t u = {.input = 1234, .cached_input = 1000, .output = 777};
    money_split_t a, b;
    assert_int_equal(money_price(&p, &u, 123456, &a), 0);
    assert_int_equal(money_split(a.cost, 123456, &b), 0);
    assert_memory_equal(&a, &b, sizeof a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_format_round_trip),
        cmocka_unit_test(test_cost_rounds_once_up),
        cmocka_unit_test(test_fee_and_credit_add_up),
        cmocka_unit_test(test_bad_inputs_and_overflow),
        cmocka_unit_test(test_split_known_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
