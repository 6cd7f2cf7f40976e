/* identity: agent keys, agent ids and the tunnel handshake signature (Ed25519, libsodium).
 *
 * The agent id is the lowercase hex of the first 16 bytes of SHA-256(public key): derived, so
 * `agent init` and `hubctl agent add --pubkey` agree without talking, and safe in URLs/JSON.
 * The handshake signs a domain-separated message that binds the protocol version, the hub's
 * single-use nonce, the agent id and the pin of the hub certificate the agent saw, so a
 * signature is useless on another connection, another hub or behind a TLS interceptor.
 */
#ifndef IDENTITY_H
#define IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#define ID_PUBKEY_LEN 32
#define ID_SECKEY_LEN 64
#define ID_SIG_LEN 64
#define ID_NONCE_LEN 32
#define ID_AGENT_ID_LEN 32 /* hex characters */
#define ID_PIN_MAX 64      /* "sha256/" + 44 base64 characters */
#define ID_AUTH_TAG "relayhub/tunnel-auth/v1"

typedef struct {
    uint8_t pk[ID_PUBKEY_LEN]; /* public key */
    uint8_t sk[ID_SECKEY_LEN]; /* libsodium secret key (seed || public key) */
} id_keypair_t;

/* Initialises libsodium; call once at start. 0 or -EIO. */
int id_init(void);

/* Generates a new key pair. */
int id_keypair_generate(id_keypair_t *kp);

/* Writes the key file (mode 0600; -EEXIST if it exists). */
int id_keyfile_write(const char *path, const id_keypair_t *kp);

/* Reads a key file; -EPERM if group or others can read it, -EBADMSG if malformed. */
int id_keyfile_read(const char *path, id_keypair_t *kp);

/* Agent id from a public key: 32 lowercase hex characters + NUL. */
void id_agent_id(const uint8_t pk[ID_PUBKEY_LEN], char out[ID_AGENT_ID_LEN + 1]);

/* 1 if s looks like an agent id (32 lowercase hex characters), else 0. */
int id_agent_id_valid(const char *s);

/* Base64 (standard, padded) of a public key; out needs 45 bytes. */
void id_pubkey_b64(const uint8_t pk[ID_PUBKEY_LEN], char out[45]);

/* Parses a base64 public key (standard or URL-safe, padding optional). 0 or -EINVAL. */
int id_pubkey_parse(const char *b64, uint8_t pk[ID_PUBKEY_LEN]);

/* Builds the message the agent signs. Returns its length, or -EINVAL when an input is
 * too long. out needs ID_AUTH_MSG_MAX bytes. */
#define ID_AUTH_MSG_MAX 256
int id_auth_message(uint32_t proto_version, const uint8_t nonce[ID_NONCE_LEN],
                    const char *agent_id, const char *pin, uint8_t *out);

/* Signs the handshake message. 0 or -EINVAL. */
int id_auth_sign(const id_keypair_t *kp, uint32_t proto_version,
                 const uint8_t nonce[ID_NONCE_LEN], const char *agent_id, const char *pin,
                 uint8_t sig[ID_SIG_LEN]);

/* Verifies a handshake signature against a registered public key. 0 if valid, -EPERM if not,
 * -EINVAL for malformed inputs. */
int id_auth_verify(const uint8_t pk[ID_PUBKEY_LEN], uint32_t proto_version,
                   const uint8_t nonce[ID_NONCE_LEN], const char *agent_id, const char *pin,
                   const uint8_t sig[ID_SIG_LEN]);

#endif
