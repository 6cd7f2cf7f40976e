/* money: amounts as int64 micro-units, and the one cost rule hub and agent share.
 *
 * No floating point anywhere near money (DESIGN §4). An amount is a count of micro-units
 * (1e-6 of the currency unit). Prices are micro-units per one million tokens. The cost of a
 * request is computed exactly with 128-bit intermediates and rounded once, up, to the
 * micro-unit:
 *
 *   cost = ceil((uncached_input * price_input + cached_input * price_cached_input
 *                + output * price_output) / 1,000,000)
 *
 * where uncached_input = input - cached_input (a vendor's cached tokens are part of its input
 * count). The hub's fee is fee_ppm parts per million of the cost, rounded DOWN; the provider's
 * credit is the rest, so cost = fee + credit exactly and rounding never favours the hub.
 */
#ifndef MONEY_H
#define MONEY_H

#include <stddef.h>
#include <stdint.h>

#define MONEY_MICROS 1000000LL /* micro-units per currency unit */
#define MONEY_TEXT_MAX 32      /* enough for any int64 amount as text */

/* Prices of one model, micro-units per one million tokens. */
typedef struct {
    int64_t input;        /* uncached input tokens */
    int64_t cached_input; /* cached input tokens */
    int64_t output;       /* output tokens */
} money_price_t;

/* What a request used. cached_input is part of input. */
typedef struct {
    int64_t input;
    int64_t cached_input;
    int64_t output;
} money_usage_t;

/* The result of pricing a request. */
typedef struct {
    int64_t cost;   /* what the user pays */
    int64_t fee;    /* the hub's part */
    int64_t credit; /* the provider's part: cost - fee */
} money_split_t;

/* Parses a decimal amount in currency units ("10.5", "0.000001", "-3", "12.") into
 * micro-units. At most 6 fraction digits; no exponent, no spaces, no "+"; a "-" only when
 * allow_negative. 0, -EINVAL (malformed, more than 6 decimals) or -ERANGE (out of int64). */
int money_parse(const char *text, int allow_negative, int64_t *out);

/* Formats micro-units as a decimal with exactly 6 fraction digits ("10.500000", "-0.000001").
 * Returns the length written (out must hold MONEY_TEXT_MAX bytes). */
int money_format(int64_t micros, char out[MONEY_TEXT_MAX]);

/* Prices a request and splits the cost. fee_ppm in [0, 1,000,000]. 0, -EINVAL (negative
 * figures, cached > input, fee_ppm out of range) or -ERANGE (cost beyond int64). */
int money_price(const money_price_t *price, const money_usage_t *usage, int64_t fee_ppm,
                money_split_t *out);

/* Splits a cost that is already known (a charge capped at its hold) by the same rule: fee =
 * floor(cost * fee_ppm / 1,000,000), credit = cost - fee. 0 or -EINVAL. */
int money_split(int64_t cost, int64_t fee_ppm, money_split_t *out);

#endif
