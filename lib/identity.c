/* identity: Ed25519 agent identity and handshake signatures. */
#include "identity.h"
#include "bus_plat.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_KEYFILE_HEADER "relayhub-agent-key-v1\n"

int id_init(void)
{
    return sodium_init() < 0 ? -EIO : 0;
}

int id_keypair_generate(id_keypair_t *kp)
{
    return crypto_sign_keypair(kp->pk, kp->sk) == 0 ? 0 : -EIO;
}

int id_keyfile_write(const char *path, const id_keypair_t *kp)
{
    /* The file holds the 32-byte seed; the key pair is derived from it on load. */
    char b64[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_ORIGINAL)];
    char text[sizeof S_KEYFILE_HEADER + sizeof b64 + 2];
    sodium_bin2base64(b64, sizeof b64, kp->sk, 32, sodium_base64_VARIANT_ORIGINAL);
    int n = snprintf(text, sizeof text, "%s%s\n", S_KEYFILE_HEADER, b64);
    int rc = plat_write_file(path, text, (size_t)n, 1, 1);
    sodium_memzero(text, sizeof text);
    sodium_memzero(b64, sizeof b64);
    return rc;
}

int id_keyfile_read(const char *path, id_keypair_t *kp)
{
    int rc = plat_check_private(path);
    if (rc != 0)
        return rc;
    char *text = NULL;
    size_t len = 0;
    rc = plat_read_file(path, 4096, &text, &len);
    if (rc != 0)
        return rc;
    rc = -EBADMSG;
    size_t hl = strlen(S_KEYFILE_HEADER);
    if (len > hl && memcmp(text, S_KEYFILE_HEADER, hl) == 0) {
        uint8_t seed[32];
        size_t bin_len = 0;
        const char *end = NULL;
        if (sodium_base642bin(seed, sizeof seed, text + hl, len - hl, "\r\n", &bin_len, &end,
                              sodium_base64_VARIANT_ORIGINAL) == 0 &&
            bin_len == 32 && end && (*end == '\0' || *end == '\n' || *end == '\r')) {
            rc = crypto_sign_seed_keypair(kp->pk, kp->sk, seed) == 0 ? 0 : -EIO;
        }
        sodium_memzero(seed, sizeof seed);
    }
    sodium_memzero(text, len);
    free(text);
    return rc;
}

void id_agent_id(const uint8_t pk[ID_PUBKEY_LEN], char out[ID_AGENT_ID_LEN + 1])
{
    uint8_t h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, pk, ID_PUBKEY_LEN);
    sodium_bin2hex(out, ID_AGENT_ID_LEN + 1, h, ID_AGENT_ID_LEN / 2);
}

int id_agent_id_valid(const char *s)
{
    if (!s || strlen(s) != ID_AGENT_ID_LEN)
        return 0;
    for (const char *p = s; *p; p++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    }
    return 1;
}

void id_pubkey_b64(const uint8_t pk[ID_PUBKEY_LEN], char out[45])
{
    sodium_bin2base64(out, 45, pk, ID_PUBKEY_LEN, sodium_base64_VARIANT_ORIGINAL);
}

int id_pubkey_parse(const char *b64, uint8_t pk[ID_PUBKEY_LEN])
{
    static const int variants[] = {sodium_base64_VARIANT_ORIGINAL,
                                   sodium_base64_VARIANT_ORIGINAL_NO_PADDING,
                                   sodium_base64_VARIANT_URLSAFE,
                                   sodium_base64_VARIANT_URLSAFE_NO_PADDING};
    if (!b64)
        return -EINVAL;
    size_t len = strlen(b64);
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        size_t bin_len = 0;
        const char *end = NULL;
        if (sodium_base642bin(pk, ID_PUBKEY_LEN, b64, len, NULL, &bin_len, &end, variants[i]) ==
                0 &&
            bin_len == ID_PUBKEY_LEN && end == b64 + len)
            return 0;
    }
    return -EINVAL;
}

int id_auth_message(uint32_t proto_version, const uint8_t nonce[ID_NONCE_LEN],
                    const char *agent_id, const char *pin, uint8_t *out)
{
    size_t tl = sizeof ID_AUTH_TAG; /* includes the NUL: the tag is terminated */
    size_t al = strlen(agent_id), pl = strlen(pin);
    if (al > 64 || pl > ID_PIN_MAX || tl + 4 + ID_NONCE_LEN + 2 + al + pl > ID_AUTH_MSG_MAX)
        return -EINVAL;
    uint8_t *p = out;
    memcpy(p, ID_AUTH_TAG, tl);
    p += tl;
    *p++ = (uint8_t)(proto_version >> 24);
    *p++ = (uint8_t)(proto_version >> 16);
    *p++ = (uint8_t)(proto_version >> 8);
    *p++ = (uint8_t)proto_version;
    memcpy(p, nonce, ID_NONCE_LEN);
    p += ID_NONCE_LEN;
    /* Length prefixes keep (id, pin) pairs from sliding into each other. */
    *p++ = (uint8_t)al;
    memcpy(p, agent_id, al);
    p += al;
    *p++ = (uint8_t)pl;
    memcpy(p, pin, pl);
    p += pl;
    return (int)(p - out);
}

int id_auth_sign(const id_keypair_t *kp, uint32_t proto_version,
                 const uint8_t nonce[ID_NONCE_LEN], const char *agent_id, const char *pin,
                 uint8_t sig[ID_SIG_LEN])
{
    uint8_t msg[ID_AUTH_MSG_MAX];
    int n = id_auth_message(proto_version, nonce, agent_id, pin, msg);
    if (n < 0)
        return n;
    return crypto_sign_detached(sig, NULL, msg, (unsigned long long)n, kp->sk) == 0 ? 0 : -EIO;
}

int id_auth_verify(const uint8_t pk[ID_PUBKEY_LEN], uint32_t proto_version,
                   const uint8_t nonce[ID_NONCE_LEN], const char *agent_id, const char *pin,
                   const uint8_t sig[ID_SIG_LEN])
{
    uint8_t msg[ID_AUTH_MSG_MAX];
    int n = id_auth_message(proto_version, nonce, agent_id, pin, msg);
    if (n < 0)
        return n;
    return crypto_sign_verify_detached(sig, msg, (unsigned long long)n, pk) == 0 ? 0 : -EPERM;
}
