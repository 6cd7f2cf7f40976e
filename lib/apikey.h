/* apikey: user API keys ("sk-..."): generation, parsing and hashing.
 *
 * A key is "sk-" followed by the unpadded base64url encoding of 32 random bytes (43
 * characters). The hub stores only SHA-256 of the whole text (store_key_add): the secret has
 * 256 bits of entropy, so a plain fast hash is right; a slow password hash (Argon2) would only
 * cost time on every request without making a 256-bit secret any harder to guess. Each key also
 * gets a public id, "key_" + 12 lowercase base32 characters (60 random bits, unrelated to the
 * secret), for listing and revoking, and a display prefix: the first 8 characters after "sk-"
 * (48 of the 256 bits; the other 208 stay secret). Presented keys are accepted in the shape
 * `sk-[A-Za-z0-9_-]+` (DESIGN.md §8), up to APIKEY_MAX_LEN characters.
 *
 * Nothing here logs. Callers must never log a key or its hash; wipe secrets after use.
 */
#ifndef APIKEY_H
#define APIKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define APIKEY_SCHEME "sk-" /* every user key starts with this */
#define APIKEY_RAW_LEN 32   /* random bytes in a generated key */
#define APIKEY_LEN 46       /* characters of a generated key: "sk-" + 43 */
#define APIKEY_MAX_LEN 128  /* longest key text accepted from a caller */
#define APIKEY_HASH_LEN 32  /* SHA-256 */
#define APIKEY_ID_LEN 16    /* "key_" + 12 characters */
#define APIKEY_PREFIX_LEN 8 /* display prefix: characters after "sk-" */

/* A freshly generated key. secret is shown to the operator once and then wiped. */
typedef struct {
    char secret[APIKEY_LEN + 1];        /* "sk-" + 43 base64url characters */
    char id[APIKEY_ID_LEN + 1];         /* "key_" + 12 lowercase base32 characters */
    char prefix[APIKEY_PREFIX_LEN + 1]; /* secret[3..11), for display */
    uint8_t hash[APIKEY_HASH_LEN];      /* SHA-256 of secret, what the store keeps */
} apikey_t;

/* Generates a new key from the secure random source (plat_random). 0, or -EIO (and *out
 * wiped) if the source fails. */
int apikey_generate(apikey_t *out);

/* Generates a new public key id ("key_" + 12 lowercase base32) into id. 0 or -EIO. */
int apikey_new_id(char id[APIKEY_ID_LEN + 1]);

/* Zeroes *k (the secret and everything derived from it); NULL-safe. */
void apikey_wipe(apikey_t *k);

/* Checks that text[0..len) has the shape of a user key (`sk-[A-Za-z0-9_-]+`, at most
 * APIKEY_MAX_LEN characters; text need not be NUL-terminated) and, if hash is not NULL,
 * writes its SHA-256. 0, or -EINVAL for anything else (hash untouched). */
int apikey_parse(const char *text, size_t len, uint8_t hash[APIKEY_HASH_LEN]);

/* SHA-256 of text[0..len), the hash the store keeps for a key text. */
void apikey_hash(const char *text, size_t len, uint8_t hash[APIKEY_HASH_LEN]);

/* True if a and b are equal, in time that does not depend on where they differ (for
 * comparing a presented key's hash with a cached one). */
bool apikey_hash_equal(const uint8_t a[APIKEY_HASH_LEN], const uint8_t b[APIKEY_HASH_LEN]);

/* True if id has the shape apikey_new_id makes ("key_" + 12 lowercase base32 characters). */
bool apikey_id_ok(const char *id);

#endif
