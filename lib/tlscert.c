/* tlscert: self-signed certificates and SPKI pins with OpenSSL 3 EVP APIs. */
#include "tlscert.h"
#include "bus_plat.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Adds one X509v3 extension given in config syntax. 0 or -EINVAL. */
static int s_add_ext(X509 *cert, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext)
        return -EINVAL;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -EINVAL;
}

/* Serialises a PEM object through a memory BIO into a malloc'd buffer. */
static int s_bio_take(BIO *bio, char **out, size_t *len)
{
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    if (n <= 0)
        return -EIO;
    *out = malloc((size_t)n);
    if (!*out)
        return -ENOMEM;
    memcpy(*out, data, (size_t)n);
    *len = (size_t)n;
    return 0;
}

int tls_make_self_signed(const char *key_path, const char *cert_path, const char *extra_dns)
{
    struct stat st;
    if (stat(key_path, &st) == 0 || stat(cert_path, &st) == 0)
        return -EEXIST;
    int rc = -EIO;
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *cert = X509_new();
    BIO *kb = BIO_new(BIO_s_mem()), *cb = BIO_new(BIO_s_mem());
    char *kpem = NULL, *cpem = NULL;
    size_t klen = 0, clen = 0;
    if (!pkey || !cert || !kb || !cb)
        goto out;
    uint8_t serial[16];
    plat_random(serial, sizeof serial);
    serial[0] &= 0x7f; /* a positive serial */
    BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
    if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert))) {
        BN_free(bn);
        goto out;
    }
    BN_free(bn);
    X509_set_version(cert, 2);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 10L * 365 * 24 * 3600);
    X509_set_pubkey(cert, pkey);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"relayhub", -1,
                               -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"relayhub hub",
                               -1, -1, 0);
    X509_set_issuer_name(cert, name);
    char san[512];
    snprintf(san, sizeof san, "DNS:localhost,IP:127.0.0.1,IP:::1%s%s",
             extra_dns && *extra_dns ? ",DNS:" : "", extra_dns && *extra_dns ? extra_dns : "");
    if (s_add_ext(cert, NID_subject_alt_name, san) ||
        s_add_ext(cert, NID_basic_constraints, "critical,CA:FALSE") ||
        s_add_ext(cert, NID_key_usage, "critical,digitalSignature") ||
        s_add_ext(cert, NID_ext_key_usage, "serverAuth"))
        goto out;
    if (!X509_sign(cert, pkey, EVP_sha256()))
        goto out;
    if (!PEM_write_bio_PrivateKey(kb, pkey, NULL, NULL, 0, NULL, NULL) ||
        !PEM_write_bio_X509(cb, cert))
        goto out;
    if (s_bio_take(kb, &kpem, &klen) || s_bio_take(cb, &cpem, &clen))
        goto out;
    rc = plat_write_file(key_path, kpem, klen, 1, 1);
    if (rc == 0) {
        rc = plat_write_file(cert_path, cpem, clen, 0, 1);
        if (rc != 0)
            remove(key_path);
    }
out:
    if (kpem) {
        OPENSSL_cleanse(kpem, klen);
        free(kpem);
    }
    free(cpem);
    BIO_free(kb);
    BIO_free(cb);
    X509_free(cert);
    EVP_PKEY_free(pkey);
    return rc;
}

int tls_pin_of_x509(X509 *cert, char *out, size_t outlen)
{
    if (!cert || outlen < TLS_PIN_MAX)
        return -EINVAL;
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(X509_get0_pubkey(cert), &der);
    if (n <= 0)
        return -EINVAL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int ok = EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
    OPENSSL_free(der);
    if (!ok || mdlen != 32)
        return -EINVAL;
    unsigned char b64[48];
    int bl = EVP_EncodeBlock(b64, md, 32);
    if (bl != 44)
        return -EINVAL;
    snprintf(out, outlen, "sha256/%s", (const char *)b64);
    return 0;
}

int tls_pin_of_file(const char *cert_path, char *out, size_t outlen)
{
    FILE *f = fopen(cert_path, "r");
    if (!f)
        return -ENOENT;
    X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!cert)
        return -EINVAL;
    int rc = tls_pin_of_x509(cert, out, outlen);
    X509_free(cert);
    return rc;
}

int tls_pin_valid(const char *text)
{
    if (!text || strncmp(text, "sha256/", 7) != 0 || strlen(text) != 7 + 44)
        return 0;
    for (const char *p = text + 7; *p; p++) {
        char c = *p;
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '+' || c == '/' || (c == '=' && p == text + 7 + 43);
        if (!ok)
            return 0;
    }
    return 1;
}
