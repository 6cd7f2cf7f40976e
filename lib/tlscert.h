/* tlscert: the hub's self-signed certificate and certificate pins.
 *
 * A pin is "sha256/" + base64(SHA-256(DER SubjectPublicKeyInfo)), the form HPKP and curl's
 * --pinnedpubkey use. Pinning the key rather than the certificate lets an operator renew the
 * certificate with the same key without touching any agent.
 */
#ifndef TLSCERT_H
#define TLSCERT_H

#include <openssl/x509.h>
#include <stddef.h>

#define TLS_PIN_MAX 64

/* Writes a new P-256 key (mode 0600) and a self-signed certificate valid for ten years with
 * subjectAltName DNS:localhost, IP:127.0.0.1, IP:::1 and the given extra DNS name (may be
 * NULL). Refuses to overwrite (-EEXIST). 0 or a negative errno. */
int tls_make_self_signed(const char *key_path, const char *cert_path, const char *extra_dns);

/* Pin of a certificate. 0 or -EINVAL. out needs TLS_PIN_MAX bytes. */
int tls_pin_of_x509(X509 *cert, char *out, size_t outlen);

/* Pin of the first certificate in a PEM file. 0, -ENOENT or -EINVAL. */
int tls_pin_of_file(const char *cert_path, char *out, size_t outlen);

/* 1 if text has the pin shape ("sha256/" + 44 base64 characters), else 0. */
int tls_pin_valid(const char *text);

#endif
