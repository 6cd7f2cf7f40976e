/* apikey: user API keys: generation, parsing and hashing (see apikey.h). */
#include "apikey.h"

#include "bus_plat.h"

#include <errno.h>
#include <sodium.h>
#include <string.h>

/* RFC 4648 base32 alphabet, lowercase: safe in URLs, JSON and shells, no case ambiguity. */
static const char s_b32[] = "abcdefghijklmnopqrstuvwxyz234567";

int apikey_new_id(char id[APIKEY_ID_LEN + 1])
{
    uint8_t raw[8];
    if (plat_random(raw, sizeof raw) != 0)
        return -EIO;
    uint64_t v = 0;
    for (size_t i = 0; i < sizeof raw; i++)
        v = (v << 8) | raw[i];
    memcpy(id, "key_", 4);
    for (size_t i = 0; i < APIKEY_ID_LEN - 4; i++) {
        id[4 + i] = s_b32[v & 31]; /* 12 x 5 = 60 of the 64 random bits */
        v >>= 5;
    }
    id[APIKEY_ID_LEN] = '\0';
    sodium_memzero(raw, sizeof raw);
    return 0;
}

int apikey_generate(apikey_t *out)
{
    uint8_t raw[APIKEY_RAW_LEN];
    memset(out, 0, sizeof(*out));
    if (plat_random(raw, sizeof raw) != 0 || apikey_new_id(out->id) != 0) {
        sodium_memzero(raw, sizeof raw);
        apikey_wipe(out);
        return -EIO;
    }
    memcpy(out->secret, APIKEY_SCHEME, 3);
    /* 32 bytes -> 43 characters + NUL: exactly the room left after "sk-". */
    sodium_bin2base64(out->secret + 3, sizeof(out->secret) - 3, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    memcpy(out->prefix, out->secret + 3, APIKEY_PREFIX_LEN);
    out->prefix[APIKEY_PREFIX_LEN] = '\0';
    apikey_hash(out->secret, APIKEY_LEN, out->hash);
    return 0;
}

void apikey_wipe(apikey_t *k)
{
    if (k)
        sodium_memzero(k, sizeof(*k));
}

void apikey_hash(const char *text, size_t len, uint8_t hash[APIKEY_HASH_LEN])
{
    crypto_hash_sha256(hash, (const unsigned char *)text, (unsigned long long)len);
}

/* True for the characters of a key after "sk-": [A-Za-z0-9_-] (base64url). */
static bool s_key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

int apikey_parse(const char *text, size_t len, uint8_t hash[APIKEY_HASH_LEN])
{
    if (!text || len <= 3 || len > APIKEY_MAX_LEN || memcmp(text, APIKEY_SCHEME, 3) != 0)
        return -EINVAL;
    /* Shape checks on a secret: look at every byte whatever the verdict, so the time taken
     * does not say where a malformed key went wrong. */
    bool ok = true;
    for (size_t i = 3; i < len; i++)
        ok &= s_key_char(text[i]);
    if (!ok)
        return -EINVAL;
    if (hash)
        apikey_hash(text, len, hash);
    return 0;
}

bool apikey_hash_equal(const uint8_t a[APIKEY_HASH_LEN], const uint8_t b[APIKEY_HASH_LEN])
{
    return sodium_memcmp(a, b, APIKEY_HASH_LEN) == 0;
}

bool apikey_id_ok(const char *id)
{
    if (!id || strlen(id) != APIKEY_ID_LEN || memcmp(id, "key_", 4) != 0)
        return false;
    for (size_t i = 4; i < APIKEY_ID_LEN; i++) {
        if (id[i] == '\0' || !strchr(s_b32, id[i]))
            return false;
    }
    return true;
}
