/* Unit tests for lib/tlscert: the self-signed hub certificate and SPKI pins. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"
#include "tlscert.h"

static char s_tmpdir[64]; /* this run's scratch directory */

/* Builds "<tmpdir>/<name>" into buf. */
static const char *tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", s_tmpdir, name);
    return buf;
}

/* Creates the scratch directory. */
static int group_setup(void **state)
{
    (void)state;
    return tu_tmpdir_new(s_tmpdir, sizeof s_tmpdir, "test_tlscert");
}

/* Removes the scratch directory. */
static int group_teardown(void **state)
{
    (void)state;
    return tu_rm_rf(s_tmpdir);
}

/* Loads the first certificate of a PEM file. */
static X509 *load_cert(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    X509 *c = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(c);
    return c;
}

/* Loads a PEM private key. */
static EVP_PKEY *load_key(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(k);
    return k;
}

/* Pin of the public half of a private key, computed here: SHA-256 of the DER SPKI, base64. */
static void pin_of_key(EVP_PKEY *k, char out[TLS_PIN_MAX])
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(k, &der);
    assert_true(n > 0);
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_non_null(ctx);
    assert_int_equal(EVP_DigestInit_ex(ctx, EVP_sha256(), NULL), 1);
    assert_int_equal(EVP_DigestUpdate(ctx, der, (size_t)n), 1);
    assert_int_equal(EVP_DigestFinal_ex(ctx, md, &mdlen), 1);
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    assert_int_equal(mdlen, 32);
    BIO *b64 = BIO_new(BIO_f_base64());
    BIO *mem = BIO_new(BIO_s_mem());
    assert_non_null(b64);
    assert_non_null(mem);
    BIO_set_flags(b64, BIO_FLAGS_BASE64_NO_NL);
    BIO_push(b64, mem);
    assert_int_equal(BIO_write(b64, md, 32), 32);
    assert_int_equal(BIO_flush(b64), 1);
    char *data = NULL;
    long len = BIO_get_mem_data(mem, &data);
    assert_int_equal(len, 44);
    snprintf(out, TLS_PIN_MAX, "sha256/%.*s", (int)len, data);
    BIO_free_all(b64);
}

/* Pin of a certificate file with the openssl command line, as an operator would compute it.
 * Returns 0, or -1 when the openssl binary is not available. */
static int pin_by_cli(const char *cert, char out[TLS_PIN_MAX])
{
    if (access("/usr/bin/openssl", X_OK) != 0)
        return -1;
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "openssl x509 -in '%s' -pubkey -noout | openssl pkey -pubin -outform der | "
             "openssl dgst -sha256 -binary | openssl base64 -A",
             cert);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char b64[128] = "";
    size_t n = fread(b64, 1, sizeof b64 - 1, p);
    b64[n] = '\0';
    assert_int_equal(pclose(p), 0);
    while (n > 0 && (b64[n - 1] == '\n' || b64[n - 1] == '\r'))
        b64[--n] = '\0';
    assert_int_equal(n, 44);
    snprintf(out, TLS_PIN_MAX, "sha256/%s", b64);
    return 0;
}

static void test_make_self_signed_files(void **state)
{
    (void)state;
    char key[128], crt[128];
    tmp_path(key, sizeof key, "a.key");
    tmp_path(crt, sizeof crt, "a.crt");
    mode_t old = umask(0);
    int rc = tls_make_self_signed(key, crt, NULL);
    umask(old);
    assert_int_equal(rc, 0);
    assert_int_equal(tu_mode_of(key), 0600);
    assert_int_equal(tu_mode_of(crt) & 0400, 0400);
    assert_int_equal(tu_mode_of(crt) & 0022, 0); /* nobody else may write it */

    EVP_PKEY *k = load_key(key);
    assert_int_equal(EVP_PKEY_get_base_id(k), EVP_PKEY_EC);
    assert_int_equal(EVP_PKEY_get_bits(k), 256);
    X509 *c = load_cert(crt);
    assert_int_equal(X509_check_private_key(c, k), 1);
    X509_free(c);
    EVP_PKEY_free(k);

    /* No overwrite: both exist, only the key exists, only the certificate exists. */
    struct stat before, after;
    assert_int_equal(stat(key, &before), 0);
    assert_int_equal(tls_make_self_signed(key, crt, NULL), -EEXIST);
    assert_int_equal(stat(key, &after), 0);
    assert_int_equal(before.st_ino, after.st_ino);
    assert_int_equal(before.st_size, after.st_size);

    char crt2[128], key2[128];
    tmp_path(crt2, sizeof crt2, "other.crt");
    assert_int_equal(tls_make_self_signed(key, crt2, NULL), -EEXIST);
    assert_int_not_equal(access(crt2, F_OK), 0); /* nothing half-written */
    tmp_path(key2, sizeof key2, "other.key");
    assert_int_equal(tls_make_self_signed(key2, crt, NULL), -EEXIST);
    assert_int_not_equal(access(key2, F_OK), 0);
}

static void test_pin_matches_independent(void **state)
{
    (void)state;
    char key[128], crt[128];
    tmp_path(key, sizeof key, "p.key");
    tmp_path(crt, sizeof crt, "p.crt");
    assert_int_equal(tls_make_self_signed(key, crt, NULL), 0);

    char pin[TLS_PIN_MAX], want[TLS_PIN_MAX];
    assert_int_equal(tls_pin_of_file(crt, pin, sizeof pin), 0);
    assert_true(tls_pin_valid(pin));

    /* From the private key, by hand with EVP: the certificate carries that key. */
    EVP_PKEY *k = load_key(key);
    pin_of_key(k, want);
    EVP_PKEY_free(k);
    assert_string_equal(pin, want);

    /* From the certificate with the openssl command line. */
    char cli[TLS_PIN_MAX];
    if (pin_by_cli(crt, cli) == 0)
        assert_string_equal(pin, cli);

    /* tls_pin_of_x509 agrees with the file variant. */
    X509 *c = load_cert(crt);
    char pin2[TLS_PIN_MAX];
    assert_int_equal(tls_pin_of_x509(c, pin2, sizeof pin2), 0);
    assert_string_equal(pin2, pin);
    assert_int_equal(tls_pin_of_x509(c, pin2, TLS_PIN_MAX - 1), -EINVAL);
    assert_int_equal(tls_pin_of_x509(NULL, pin2, sizeof pin2), -EINVAL);
    X509_free(c);
}

static void test_cert_contents(void **state)
{
    (void)state;
    char key[128], crt[128];
    tmp_path(key, sizeof key, "c.key");
    tmp_path(crt, sizeof crt, "c.crt");
    assert_int_equal(tls_make_self_signed(key, crt, "hub.example.org"), 0);
    X509 *c = load_cert(crt);

    /* subjectAltName. */
    assert_int_equal(X509_check_ip_asc(c, "127.0.0.1", 0), 1);
    assert_int_equal(X509_check_ip_asc(c, "::1", 0), 1);
    assert_int_equal(X509_check_ip_asc(c, "10.0.0.1", 0), 0);
    assert_int_equal(X509_check_ip_asc(c, "127.0.0.2", 0), 0);
    assert_int_equal(X509_check_host(c, "localhost", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(c, "hub.example.org", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(c, "evil.example.org", 0, 0, NULL), 0);

    /* Self-signed: issuer == subject, and the signature verifies with its own key. */
    assert_int_equal(X509_NAME_cmp(X509_get_subject_name(c), X509_get_issuer_name(c)), 0);
    assert_int_equal(X509_verify(c, X509_get0_pubkey(c)), 1);
    EVP_PKEY *k = load_key(key);
    assert_int_equal(X509_verify(c, k), 1);
    EVP_PKEY_free(k);

    /* A different key does not verify it. */
    EVP_PKEY *other = EVP_EC_gen("P-256");
    assert_non_null(other);
    assert_int_not_equal(X509_verify(c, other), 1);
    EVP_PKEY_free(other);

    /* v3, a server leaf, valid now and for years. */
    assert_int_equal(X509_get_version(c), 2);
    assert_int_equal(X509_check_purpose(c, X509_PURPOSE_SSL_SERVER, 0), 1);
    assert_int_equal(X509_check_ca(c), 0);
    time_t now = time(NULL);
    assert_true(X509_cmp_time(X509_get0_notBefore(c), &now) < 0);
    time_t later = now + 9L * 365 * 24 * 3600;
    assert_true(X509_cmp_time(X509_get0_notAfter(c), &later) > 0);
    X509_free(c);

    /* Without the extra name only the fixed names are present. */
    tmp_path(key, sizeof key, "d.key");
    tmp_path(crt, sizeof crt, "d.crt");
    assert_int_equal(tls_make_self_signed(key, crt, NULL), 0);
    c = load_cert(crt);
    assert_int_equal(X509_check_ip_asc(c, "127.0.0.1", 0), 1);
    assert_int_equal(X509_check_host(c, "hub.example.org", 0, 0, NULL), 0);
    X509_free(c);
}

static void test_two_certs_differ(void **state)
{
    (void)state;
    char k1[128], c1[128], k2[128], c2[128];
    tmp_path(k1, sizeof k1, "1.key");
    tmp_path(c1, sizeof c1, "1.crt");
    tmp_path(k2, sizeof k2, "2.key");
    tmp_path(c2, sizeof c2, "2.crt");
    assert_int_equal(tls_make_self_signed(k1, c1, NULL), 0);
    assert_int_equal(tls_make_self_signed(k2, c2, NULL), 0);
    char p1[TLS_PIN_MAX], p2[TLS_PIN_MAX];
    assert_int_equal(tls_pin_of_file(c1, p1, sizeof p1), 0);
    assert_int_equal(tls_pin_of_file(c2, p2, sizeof p2), 0);
    assert_string_not_equal(p1, p2);

    /* Serial numbers are random and positive. */
    X509 *x1 = load_cert(c1), *x2 = load_cert(c2);
    assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(x1), X509_get0_serialNumber(x2)),
                         0);
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x1), NULL);
    assert_non_null(bn);
    assert_false(BN_is_negative(bn));
    assert_false(BN_is_zero(bn));
    BN_free(bn);
    X509_free(x1);
    X509_free(x2);
}

static void test_pin_valid(void **state)
{
    (void)state;
    const char *good = "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    assert_int_equal(strlen(good), 51);
    assert_true(tls_pin_valid(good));
    assert_true(tls_pin_valid("sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="));
    assert_true(tls_pin_valid("sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));

    assert_false(tls_pin_valid(NULL));
    assert_false(tls_pin_valid(""));
    assert_false(tls_pin_valid("sha256/"));
    assert_false(tls_pin_valid("sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuF="));   /* 43 */
    assert_false(tls_pin_valid("sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU==")); /* 45 */
    assert_false(tls_pin_valid("SHA256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="));  /* case */
    assert_false(tls_pin_valid("sha1/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=AA"));
    assert_false(tls_pin_valid("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=sha256/"));
    assert_false(tls_pin_valid("sha256/47DEQpj8HBSa-_TImW+5JCeuQeRkm5NMpJWZG3hSuFU="));  /* url */
    assert_false(tls_pin_valid("sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSu=U="));  /* = */
    assert_false(tls_pin_valid("sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuF U"));  /* sp */
    assert_false(tls_pin_valid("sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU\n")); /* nl */
    assert_false(tls_pin_valid(" sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="));
}

static void test_pin_of_file_errors(void **state)
{
    (void)state;
    char path[128], pin[TLS_PIN_MAX];
    tmp_path(path, sizeof path, "does-not-exist.crt");
    assert_int_equal(tls_pin_of_file(path, pin, sizeof pin), -ENOENT);

    tmp_path(path, sizeof path, "garbage.crt");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("-----BEGIN CERTIFICATE-----\nnot a certificate at all\n-----END CERTIFICATE-----\n", f);
    fclose(f);
    assert_int_equal(tls_pin_of_file(path, pin, sizeof pin), -EINVAL);

    tmp_path(path, sizeof path, "empty.crt");
    f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(tls_pin_of_file(path, pin, sizeof pin), -EINVAL);

    /* A PEM private key is not a certificate. */
    char key[128], crt[128];
    tmp_path(key, sizeof key, "e.key");
    tmp_path(crt, sizeof crt, "e.crt");
    assert_int_equal(tls_make_self_signed(key, crt, NULL), 0);
    assert_int_equal(tls_pin_of_file(key, pin, sizeof pin), -EINVAL);
    /* A buffer too small for a pin. */
    assert_int_equal(tls_pin_of_file(crt, pin, 10), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_make_self_signed_files),
        cmocka_unit_test(test_pin_matches_independent),
        cmocka_unit_test(test_cert_contents),
        cmocka_unit_test(test_two_certs_differ),
        cmocka_unit_test(test_pin_valid),
        cmocka_unit_test(test_pin_of_file_errors),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
