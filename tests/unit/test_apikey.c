/* Unit tests for lib/apikey: key generation, shape checks, hashing, key ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <openssl/evp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apikey.h"

#define N_KEYS 200

/* SHA-256 by OpenSSL: an implementation independent of the one apikey.c uses. */
static void ref_sha256(const void *data, size_t len, uint8_t out[32])
{
    unsigned int n = 0;
    assert_int_equal(EVP_Digest(data, len, out, &n, EVP_sha256(), NULL), 1);
    assert_int_equal(n, 32);
}

/* True if c is one of the base64url characters [A-Za-z0-9_-]. */
static int is_b64url(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

/* Initialises libsodium (apikey.c uses it; hubctl calls id_init, which does the same). */
static int group_setup(void **state)
{
    (void)state;
    return sodium_init() < 0 ? -1 : 0;
}

/* Generated keys: "sk-" + 43 base64url characters of 32 bytes; id, prefix and hash agree with
 * the secret; every key and id is new. */
static void t_generate(void **state)
{
    (void)state;
    static apikey_t keys[N_KEYS];
    for (size_t i = 0; i < N_KEYS; i++) {
        apikey_t *k = &keys[i];
        assert_int_equal(apikey_generate(k), 0);
        assert_int_equal(strlen(k->secret), APIKEY_LEN);
        assert_memory_equal(k->secret, "sk-", 3);
        for (size_t j = 3; j < APIKEY_LEN; j++)
            assert_true(is_b64url(k->secret[j]));
        uint8_t raw[64];
        size_t raw_len = 0;
        int b64 = sodium_base642bin(raw, sizeof raw, k->secret + 3, APIKEY_LEN - 3, NULL, &raw_len,
                                    NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        assert_int_equal(b64, 0);
        assert_int_equal(raw_len, APIKEY_RAW_LEN);

        assert_true(apikey_id_ok(k->id));
        assert_int_equal(strlen(k->prefix), APIKEY_PREFIX_LEN);
        assert_memory_equal(k->prefix, k->secret + 3, APIKEY_PREFIX_LEN);
        uint8_t want[32], got[32];
        ref_sha256(k->secret, APIKEY_LEN, want);
        assert_memory_equal(k->hash, want, 32);
        assert_int_equal(apikey_parse(k->secret, strlen(k->secret), got), 0);
        assert_memory_equal(got, want, 32);
        for (size_t j = 0; j < i; j++) {
            assert_string_not_equal(keys[j].secret, k->secret);
            assert_string_not_equal(keys[j].id, k->id);
            assert_memory_not_equal(keys[j].hash, k->hash, 32);
        }
    }
    /* the ids use the whole base32 alphabet (2400 characters, each expected 75 times) */
    int seen[256] = {0};
    for (size_t i = 0; i < N_KEYS; i++)
        for (size_t j = 4; j < APIKEY_ID_LEN; j++)
            seen[(unsigned char)keys[i].id[j]]++;
    for (const char *c = "abcdefghijklmnopqrstuvwxyz234567"; *c; c++)
        if (seen[(unsigned char)*c] < 20)
            fail_msg("id character %c appears %d times in %d ids", *c, seen[(unsigned char)*c],
                     N_KEYS);
    for (size_t i = 0; i < N_KEYS; i++)
        apikey_wipe(&keys[i]);
}

/* apikey_new_id alone has the same shape. */
static void t_new_id(void **state)
{
    (void)state;
    char a[APIKEY_ID_LEN + 1], b[APIKEY_ID_LEN + 1];
    assert_int_equal(apikey_new_id(a), 0);
    assert_int_equal(apikey_new_id(b), 0);
    assert_true(apikey_id_ok(a));
    assert_true(apikey_id_ok(b));
    assert_string_not_equal(a, b);
}

/* A fixed vector: SHA-256("sk-test"), by parse and by hash. */
static void t_known_vector(void **state)
{
    (void)state;
    static const char hex[] = "f3abf2a6cc4f00987743db5f544ba345b4899ae31f326d8ee9c4816de153c9e0";
    uint8_t want[32], got[32];
    assert_int_equal(sodium_hex2bin(want, sizeof want, hex, 64, NULL, NULL, NULL), 0);
    apikey_hash("sk-test", 7, got);
    assert_memory_equal(got, want, 32);
    memset(got, 0, sizeof got);
    assert_int_equal(apikey_parse("sk-test", 7, got), 0);
    assert_memory_equal(got, want, 32);
    /* only len bytes count: the text need not be NUL-terminated */
    memset(got, 0, sizeof got);
    assert_int_equal(apikey_parse("sk-testEXTRA", 7, got), 0);
    assert_memory_equal(got, want, 32);
    assert_int_equal(apikey_parse("sk-test", 7, NULL), 0);
}

/* Anything not shaped `sk-[A-Za-z0-9_-]+` (at most APIKEY_MAX_LEN) is -EINVAL and leaves the
 * hash alone. */
static void t_parse_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",        "s",           "sk",          "sk-",        "SK-abc",  "sk_abc",    "sk-abc def",
        "sk-abc=", "sk-abc+",     "sk-abc/",     " sk-abc",    "sk-abc ", "sk-abc\n",  "sk-abc\r",
        "sk-ab.c", "Bearer sk-a", "sk-\xc3\xa9", "sk-abc\x7f", "sk-abc:", "pk-abcdef",
    };
    uint8_t h[32];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(h, 0xa5, sizeof h);
        if (apikey_parse(bad[i], strlen(bad[i]), h) != -EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
        for (size_t j = 0; j < sizeof h; j++)
            assert_int_equal(h[j], 0xa5);
    }
    /* an embedded NUL inside len */
    assert_int_equal(apikey_parse("sk-ab\0cd", 8, h), -EINVAL);
    assert_int_equal(apikey_parse(NULL, 5, h), -EINVAL);

    /* the longest accepted key, and one more */
    char longest[APIKEY_MAX_LEN + 2];
    memcpy(longest, "sk-", 3);
    memset(longest + 3, 'A', sizeof longest - 3);
    assert_int_equal(apikey_parse(longest, APIKEY_MAX_LEN, h), 0);
    assert_int_equal(apikey_parse(longest, APIKEY_MAX_LEN + 1, h), -EINVAL);
    /* the shortest: one character after "sk-"; every character of the alphabet */
    assert_int_equal(apikey_parse("sk-x", 4, h), 0);
    static const char all[] = "sk-ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    assert_int_equal(apikey_parse(all, strlen(all), h), 0);
}

/* apikey_hash_equal: equal, and unequal in the first or the last byte. */
static void t_hash_equal(void **state)
{
    (void)state;
    uint8_t a[32], b[32];
    for (int i = 0; i < 32; i++)
        a[i] = b[i] = (uint8_t)(i * 13);
    assert_true(apikey_hash_equal(a, b));
    b[0] ^= 1;
    assert_false(apikey_hash_equal(a, b));
    b[0] ^= 1;
    b[31] ^= 0x80;
    assert_false(apikey_hash_equal(a, b));
}

/* apikey_id_ok accepts exactly "key_" + 12 lowercase base32 characters. */
static void t_id_ok(void **state)
{
    (void)state;
    assert_true(apikey_id_ok("key_abcdefgh2345"));
    assert_true(apikey_id_ok("key_777777777777"));
    static const char *const bad[] = {
        "",
        "key_",
        "key_abcdefgh234",
        "key_abcdefgh23456",
        "KEY_abcdefgh2345",
        "key-abcdefgh2345",
        "key_ABCDEFGH2345",
        "key_abcdefgh2341",
        "key_abcdefgh234 ",
        "xey_abcdefgh2345",
        "sk-abcdefghijklm",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (apikey_id_ok(bad[i]))
            fail_msg("accepted id \"%s\"", bad[i]);
    assert_false(apikey_id_ok(NULL));
}

/* apikey_wipe zeroes every byte and accepts NULL. */
static void t_wipe(void **state)
{
    (void)state;
    apikey_t k;
    assert_int_equal(apikey_generate(&k), 0);
    apikey_wipe(&k);
    const unsigned char *p = (const unsigned char *)&k;
    for (size_t i = 0; i < sizeof k; i++)
        assert_int_equal(p[i], 0);
    apikey_wipe(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_generate),     cmocka_unit_test(t_new_id),
        cmocka_unit_test(t_known_vector), cmocka_unit_test(t_parse_rejects),
        cmocka_unit_test(t_hash_equal),   cmocka_unit_test(t_id_ok),
        cmocka_unit_test(t_wipe),
    };
    return cmocka_run_group_tests_name("apikey", tests, group_setup, NULL);
}
