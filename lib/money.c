/* money: decimal amounts in int64 micro-units, exact pricing with one rounding. */
#include "money.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

int money_parse(const char *text, int allow_negative, int64_t *out)
{
    if (!text || !*text)
        return -EINVAL;
    const char *p = text;
    bool neg = false;
    if (*p == '-') {
        if (!allow_negative)
            return -EINVAL;
        neg = true;
        p++;
    }
    /* Accumulate as a negative number so that INT64_MIN micro-units fit. */
    __int128 acc = 0;
    int int_digits = 0, frac_digits = 0;
    bool seen_dot = false;
    for (; *p; p++) {
        if (*p == '.') {
            if (seen_dot)
                return -EINVAL;
            seen_dot = true;
            continue;
        }
        if (*p < '0' || *p > '9')
            return -EINVAL;
        if (seen_dot) {
            if (++frac_digits > 6)
                return -EINVAL;
        } else {
            int_digits++;
        }
        acc = acc * 10 + (*p - '0');
        if (acc > (__int128)INT64_MAX * 10 + 9)
            return -ERANGE;
    }
    if (int_digits == 0 && frac_digits == 0)
        return -EINVAL;
    for (int i = frac_digits; i < 6; i++) {
        acc *= 10;
        if (acc > (__int128)INT64_MAX + 1)
            return -ERANGE;
    }
    if (neg)
        acc = -acc;
    if (acc > INT64_MAX || acc < INT64_MIN)
        return -ERANGE;
    *out = (int64_t)acc;
    return 0;
}

int money_format(int64_t micros, char out[MONEY_TEXT_MAX])
{
    /* Work on the magnitude as unsigned: -INT64_MIN does not fit in int64. */
    uint64_t mag = micros < 0 ? (uint64_t)0 - (uint64_t)micros : (uint64_t)micros;
    return snprintf(out, MONEY_TEXT_MAX, "%s%llu.%06llu", micros < 0 ? "-" : "",
                    (unsigned long long)(mag / MONEY_MICROS),
                    (unsigned long long)(mag % MONEY_MICROS));
}

int money_price(const money_price_t *price, const money_usage_t *usage, int64_t fee_ppm,
                money_split_t *out)
{
    if (usage->input < 0 || usage->cached_input < 0 || usage->output < 0 ||
        usage->cached_input > usage->input || price->input < 0 || price->cached_input < 0 ||
        price->output < 0 || fee_ppm < 0 || fee_ppm > MONEY_MICROS)
        return -EINVAL;
    /* Each product is below 2^126: no overflow in 128 bits. */
    __int128 sum = (__int128)(usage->input - usage->cached_input) * price->input +
                   (__int128)usage->cached_input * price->cached_input +
                   (__int128)usage->output * price->output;
    __int128 cost = (sum + (MONEY_MICROS - 1)) / MONEY_MICROS; /* rounded once, up */
    if (cost > INT64_MAX)
        return -ERANGE;
    return money_split((int64_t)cost, fee_ppm, out);
}

int money_split(int64_t cost, int64_t fee_ppm, money_split_t *out)
{
    if (!out || cost < 0 || fee_ppm < 0 || fee_ppm > MONEY_MICROS)
        return -EINVAL;
    __int128 fee = (__int128)cost * fee_ppm / MONEY_MICROS; /* rounded down: never in the
                                                               hub's favour */
    out->cost = cost;
    out->fee = (int64_t)fee;
    out->credit = cost - (int64_t)fee;
    return 0;
}
