/* Unit tests for lib/identity: Ed25519 key files, agent ids and handshake signatures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "identity.h"
#include "test_util.h"

#define PIN_A "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
#define PIN_B "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFV="

static char s_tmpdir[64]; /* this run's scratch directory */

/* Builds "<tmpdir>/<name>" into buf. */
static const char *tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", s_tmpdir, name);
    return buf;
}

/* Initialises libsodium and creates the scratch directory. */
static int group_setup(void **state)
{
    (void)state;
    if (id_init() != 0)
        return -1;
    return tu_tmpdir_new(s_tmpdir, sizeof s_tmpdir, "test_identity");
}

/* Removes the scratch directory. */
static int group_teardown(void **state)
{
    (void)state;
    return tu_rm_rf(s_tmpdir);
}

/* Writes raw bytes to a new file with the given mode (exactly, whatever the umask). */
static void write_raw(const char *path, const void *data, size_t len, mode_t mode)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(fchmod(fd, mode), 0);
    if (len)
        assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
}

/* Standard padded base64 of n bytes into out. */
static void b64(char *out, size_t outlen, const uint8_t *bin, size_t n)
{
    sodium_bin2base64(out, outlen, bin, n, sodium_base64_VARIANT_ORIGINAL);
}

/* Lowercase hex of the first 16 bytes of SHA-256(pk), computed without id_agent_id. */
static void expected_agent_id(const uint8_t pk[ID_PUBKEY_LEN], char out[33])
{
    uint8_t h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, pk, 16); /* in two pieces: a different code path */
    crypto_hash_sha256_update(&st, pk + 16, ID_PUBKEY_LEN - 16);
    crypto_hash_sha256_final(&st, h);
    static const char hexd[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hexd[h[i] >> 4];
        out[2 * i + 1] = hexd[h[i] & 15];
    }
    out[32] = '\0';
}

static void test_keypair_generate(void **state)
{
    (void)state;
    id_keypair_t a, b;
    assert_int_equal(id_keypair_generate(&a), 0);
    assert_int_equal(id_keypair_generate(&b), 0);
    assert_memory_not_equal(a.pk, b.pk, ID_PUBKEY_LEN);
    assert_memory_not_equal(a.sk, b.sk, ID_SECKEY_LEN);
    /* libsodium's secret key is seed || public key, and the public key derives from it. */
    assert_memory_equal(a.sk + 32, a.pk, ID_PUBKEY_LEN);
    uint8_t pk[ID_PUBKEY_LEN];
    assert_int_equal(crypto_sign_ed25519_sk_to_pk(pk, a.sk), 0);
    assert_memory_equal(pk, a.pk, ID_PUBKEY_LEN);
}

static void test_keyfile_write_mode_and_no_overwrite(void **state)
{
    (void)state;
    char path[128];
    tmp_path(path, sizeof path, "write.key");
    id_keypair_t a, b, r;
    assert_int_equal(id_keypair_generate(&a), 0);
    assert_int_equal(id_keypair_generate(&b), 0);
    mode_t old = umask(0); /* the mode must not depend on a permissive umask */
    int rc = id_keyfile_write(path, &a);
    umask(old);
    assert_int_equal(rc, 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600);

    /* A second write refuses, and leaves the first key in place. */
    assert_int_equal(id_keyfile_write(path, &b), -EEXIST);
    assert_int_equal(id_keyfile_read(path, &r), 0);
    assert_memory_equal(r.pk, a.pk, ID_PUBKEY_LEN);

    /* The file is the header line and the base64 seed; the secret key half never appears. */
    char *text = tu_read_file(path, NULL);
    char seed64[64];
    b64(seed64, sizeof seed64, a.sk, 32);
    char want[128];
    snprintf(want, sizeof want, "relayhub-agent-key-v1\n%s\n", seed64);
    assert_string_equal(text, want);
    free(text);
    unlink(path);
}

static void test_keyfile_roundtrip(void **state)
{
    (void)state;
    char path[128];
    tmp_path(path, sizeof path, "rt.key");
    id_keypair_t a, r;
    assert_int_equal(id_keypair_generate(&a), 0);
    assert_int_equal(id_keyfile_write(path, &a), 0);
    memset(&r, 0xa5, sizeof r);
    assert_int_equal(id_keyfile_read(path, &r), 0);
    assert_memory_equal(r.pk, a.pk, ID_PUBKEY_LEN);
    assert_memory_equal(r.sk, a.sk, ID_SECKEY_LEN);

    /* The loaded key signs what the original key verifies. */
    uint8_t nonce[ID_NONCE_LEN] = {1, 2, 3};
    char id[ID_AGENT_ID_LEN + 1];
    id_agent_id(a.pk, id);
    uint8_t sig[ID_SIG_LEN];
    assert_int_equal(id_auth_sign(&r, 1, nonce, id, PIN_A, sig), 0);
    assert_int_equal(id_auth_verify(a.pk, 1, nonce, id, PIN_A, sig), 0);

    /* A missing file is not "malformed". */
    tmp_path(path, sizeof path, "missing.key");
    assert_int_equal(id_keyfile_read(path, &r), -ENOENT);
}

static void test_keyfile_permissions(void **state)
{
    (void)state;
    char path[128];
    tmp_path(path, sizeof path, "perm.key");
    id_keypair_t a, r;
    assert_int_equal(id_keypair_generate(&a), 0);
    assert_int_equal(id_keyfile_write(path, &a), 0);
    static const mode_t bad[] = {0644, 0640, 0604, 0660, 0602, 0620};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(chmod(path, bad[i]), 0);
        assert_int_equal(id_keyfile_read(path, &r), -EPERM);
    }
    assert_int_equal(chmod(path, 0400), 0);
    assert_int_equal(id_keyfile_read(path, &r), 0);
    assert_memory_equal(r.pk, a.pk, ID_PUBKEY_LEN);
    unlink(path);
}

static void test_keyfile_malformed(void **state)
{
    (void)state;
    char path[128];
    tmp_path(path, sizeof path, "bad.key");
    uint8_t seed[48];
    randombytes_buf(seed, sizeof seed);
    char s32[80], s16[80], s48[80];
    b64(s32, sizeof s32, seed, 32);
    b64(s16, sizeof s16, seed, 16);
    b64(s48, sizeof s48, seed, 48);

    char good[160];
    snprintf(good, sizeof good, "relayhub-agent-key-v1\n%s\n", s32);
    id_keypair_t r;
    write_raw(path, good, strlen(good), 0600);
    assert_int_equal(id_keyfile_read(path, &r), 0); /* the control case parses */

    char cases[10][200];
    snprintf(cases[0], sizeof cases[0], "%s", "");                                /* empty */
    snprintf(cases[1], sizeof cases[1], "relayhub-agent-key-v2\n%s\n", s32);      /* header */
    snprintf(cases[2], sizeof cases[2], "%s\n", s32);                             /* none */
    snprintf(cases[3], sizeof cases[3], "relayhub-agent-key-v1\n!!!!%s\n", s32);  /* base64 */
    snprintf(cases[4], sizeof cases[4], "relayhub-agent-key-v1\n%s\n", s16);      /* short */
    snprintf(cases[5], sizeof cases[5], "relayhub-agent-key-v1\n%s\n", s48);      /* long */
    snprintf(cases[6], sizeof cases[6], "%s", "relayhub-agent-key-v1\n");         /* no seed */
    snprintf(cases[7], sizeof cases[7], "relayhub-agent-key-v1\n%s junk\n", s32); /* trailer */
    snprintf(cases[8], sizeof cases[8], "relayhub-agent-key-v1 %s\n", s32);       /* no \n */
    snprintf(cases[9], sizeof cases[9], "relayhub-agent-key-v1\n%.20s\n", s32);   /* cut */
    for (size_t i = 0; i < 10; i++) {
        write_raw(path, cases[i], strlen(cases[i]), 0600);
        memset(&r, 0, sizeof r);
        int rc = id_keyfile_read(path, &r);
        if (rc != -EBADMSG)
            fail_msg("case %zu: expected -EBADMSG, got %d", i, rc);
    }
    unlink(path);
}

static void test_agent_id(void **state)
{
    (void)state;
    id_keypair_t a, b;
    assert_int_equal(id_keypair_generate(&a), 0);
    assert_int_equal(id_keypair_generate(&b), 0);
    char id1[ID_AGENT_ID_LEN + 1], id2[ID_AGENT_ID_LEN + 1], idb[ID_AGENT_ID_LEN + 1];
    char want[33];
    memset(id1, 'X', sizeof id1);
    id_agent_id(a.pk, id1);
    assert_int_equal(strlen(id1), ID_AGENT_ID_LEN);
    for (size_t i = 0; i < ID_AGENT_ID_LEN; i++)
        assert_true((id1[i] >= '0' && id1[i] <= '9') || (id1[i] >= 'a' && id1[i] <= 'f'));
    expected_agent_id(a.pk, want);
    assert_string_equal(id1, want);
    id_agent_id(a.pk, id2);
    assert_string_equal(id1, id2); /* stable */
    id_agent_id(b.pk, idb);
    assert_string_not_equal(id1, idb);
    expected_agent_id(b.pk, want);
    assert_string_equal(idb, want);

    /* A fixed key gives a fixed id (so hubctl and the agent agree across builds). */
    uint8_t zero[ID_PUBKEY_LEN] = {0};
    id_agent_id(zero, id1);
    assert_string_equal(id1, "66687aadf862bd776c8fc18b8e9f8e20");
    assert_true(id_agent_id_valid(id1));
}

static void test_agent_id_valid(void **state)
{
    (void)state;
    assert_true(id_agent_id_valid("0123456789abcdef0123456789abcdef"));
    assert_true(id_agent_id_valid("ffffffffffffffffffffffffffffffff"));
    assert_false(id_agent_id_valid(NULL));
    assert_false(id_agent_id_valid(""));
    assert_false(id_agent_id_valid("0123456789abcdef0123456789abcde"));   /* 31 */
    assert_false(id_agent_id_valid("0123456789abcdef0123456789abcdef0")); /* 33 */
    assert_false(id_agent_id_valid("0123456789ABCDEF0123456789abcdef"));  /* upper */
    assert_false(id_agent_id_valid("0123456789abcdeg0123456789abcdef"));  /* g */
    assert_false(id_agent_id_valid("0123456789abcdef 123456789abcdef"));  /* space */
    assert_false(id_agent_id_valid("0123456789abcdef0123456789abcde/"));  /* '/' */
    assert_false(id_agent_id_valid("0123456789abcdef0123456789abcde:"));  /* ':' */
    assert_false(id_agent_id_valid("../../../../../../../etc/passwd.."));
}

static void test_pubkey_b64_parse(void **state)
{
    (void)state;
    /* 0xfb 0xff 0xbf encodes as "+/+/": the standard and URL-safe alphabets differ. */
    uint8_t pk[ID_PUBKEY_LEN], out[ID_PUBKEY_LEN];
    for (size_t i = 0; i < ID_PUBKEY_LEN; i++)
        pk[i] = (uint8_t)(i % 3 == 0 ? 0xfb : i % 3 == 1 ? 0xff : 0xbf);
    char std[45];
    id_pubkey_b64(pk, std);
    assert_int_equal(strlen(std), 44);
    assert_int_equal(std[43], '=');
    assert_non_null(strchr(std, '+'));
    assert_non_null(strchr(std, '/'));

    char url[45], unpadded[45], url_unpadded[45];
    snprintf(url, sizeof url, "%s", std);
    for (char *p = url; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    snprintf(unpadded, sizeof unpadded, "%.43s", std);
    snprintf(url_unpadded, sizeof url_unpadded, "%.43s", url);

    const char *forms[] = {std, url, unpadded, url_unpadded};
    for (size_t i = 0; i < 4; i++) {
        memset(out, 0, sizeof out);
        assert_int_equal(id_pubkey_parse(forms[i], out), 0);
        assert_memory_equal(out, pk, ID_PUBKEY_LEN);
    }

    /* A real key round-trips too. */
    id_keypair_t kp;
    assert_int_equal(id_keypair_generate(&kp), 0);
    id_pubkey_b64(kp.pk, std);
    assert_int_equal(id_pubkey_parse(std, out), 0);
    assert_memory_equal(out, kp.pk, ID_PUBKEY_LEN);

    /* Wrong lengths and garbage. */
    uint8_t raw[40];
    memset(raw, 7, sizeof raw);
    char s31[64], s33[64], s64[100];
    b64(s31, sizeof s31, raw, 31);
    b64(s33, sizeof s33, raw, 33);
    b64(s64, sizeof s64, raw, 40);
    assert_int_equal(id_pubkey_parse(s31, out), -EINVAL);
    assert_int_equal(id_pubkey_parse(s33, out), -EINVAL);
    assert_int_equal(id_pubkey_parse(s64, out), -EINVAL);
    assert_int_equal(id_pubkey_parse("", out), -EINVAL);
    assert_int_equal(id_pubkey_parse(NULL, out), -EINVAL);
    assert_int_equal(id_pubkey_parse("not base64 at all, not even close!!!!!!!!!!", out), -EINVAL);
    char trailing[64];
    snprintf(trailing, sizeof trailing, "%s ", std); /* trailing junk after a valid key */
    assert_int_equal(id_pubkey_parse(trailing, out), -EINVAL);
    snprintf(trailing, sizeof trailing, "%sAAAA", std);
    assert_int_equal(id_pubkey_parse(trailing, out), -EINVAL);
}

static void test_sign_verify_roundtrip(void **state)
{
    (void)state;
    id_keypair_t kp;
    assert_int_equal(id_keypair_generate(&kp), 0);
    char id[ID_AGENT_ID_LEN + 1];
    id_agent_id(kp.pk, id);
    uint8_t nonce[ID_NONCE_LEN];
    randombytes_buf(nonce, sizeof nonce);
    uint8_t sig[ID_SIG_LEN], sig2[ID_SIG_LEN];
    assert_int_equal(id_auth_sign(&kp, 1, nonce, id, PIN_A, sig), 0);
    assert_int_equal(id_auth_verify(kp.pk, 1, nonce, id, PIN_A, sig), 0);
    assert_int_equal(id_auth_sign(&kp, 1, nonce, id, PIN_A, sig2), 0);
    assert_memory_equal(sig, sig2, ID_SIG_LEN); /* Ed25519 is deterministic */

    /* The signature covers exactly id_auth_message's bytes, checked with libsodium directly. */
    uint8_t msg[ID_AUTH_MSG_MAX];
    int n = id_auth_message(1, nonce, id, PIN_A, msg);
    assert_true(n > 0);
    assert_int_equal(crypto_sign_verify_detached(sig, msg, (unsigned long long)n, kp.pk), 0);
}

static void test_verify_binds_every_input(void **state)
{
    (void)state;
    id_keypair_t kp, other;
    assert_int_equal(id_keypair_generate(&kp), 0);
    assert_int_equal(id_keypair_generate(&other), 0);
    char id[ID_AGENT_ID_LEN + 1];
    id_agent_id(kp.pk, id);
    uint8_t nonce[ID_NONCE_LEN];
    randombytes_buf(nonce, sizeof nonce);
    uint8_t sig[ID_SIG_LEN];
    assert_int_equal(id_auth_sign(&kp, 1, nonce, id, PIN_A, sig), 0);
    assert_int_equal(id_auth_verify(kp.pk, 1, nonce, id, PIN_A, sig), 0);

    /* Protocol version. */
    assert_int_equal(id_auth_verify(kp.pk, 2, nonce, id, PIN_A, sig), -EPERM);
    assert_int_equal(id_auth_verify(kp.pk, 0, nonce, id, PIN_A, sig), -EPERM);
    assert_int_equal(id_auth_verify(kp.pk, 1u | (1u << 24), nonce, id, PIN_A, sig), -EPERM);

    /* Every single bit of the nonce. */
    for (size_t bit = 0; bit < ID_NONCE_LEN * 8; bit++) {
        uint8_t n2[ID_NONCE_LEN];
        memcpy(n2, nonce, sizeof n2);
        n2[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        if (id_auth_verify(kp.pk, 1, n2, id, PIN_A, sig) != -EPERM)
            fail_msg("nonce bit %zu not bound", bit);
    }

    /* Agent id: one character changed, or another valid id. */
    char id2[ID_AGENT_ID_LEN + 1];
    snprintf(id2, sizeof id2, "%s", id);
    id2[31] = id2[31] == '0' ? '1' : '0';
    assert_int_equal(id_auth_verify(kp.pk, 1, nonce, id2, PIN_A, sig), -EPERM);
    id_agent_id(other.pk, id2);
    assert_int_equal(id_auth_verify(kp.pk, 1, nonce, id2, PIN_A, sig), -EPERM);

    /* Pin: one character, or a prefix. */
    assert_int_equal(id_auth_verify(kp.pk, 1, nonce, id, PIN_B, sig), -EPERM);
    assert_int_equal(id_auth_verify(kp.pk, 1, nonce, id, "sha256/", sig), -EPERM);
    assert_int_equal(id_auth_verify(kp.pk, 1, nonce, id, "", sig), -EPERM);

    /* Every single bit of the signature. */
    for (size_t bit = 0; bit < ID_SIG_LEN * 8; bit++) {
        uint8_t s2[ID_SIG_LEN];
        memcpy(s2, sig, sizeof s2);
        s2[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        if (id_auth_verify(kp.pk, 1, nonce, id, PIN_A, s2) != -EPERM)
            fail_msg("signature bit %zu not checked", bit);
    }

    /* Another key: neither verifies the other's signature. */
    assert_int_equal(id_auth_verify(other.pk, 1, nonce, id, PIN_A, sig), -EPERM);
    uint8_t osig[ID_SIG_LEN];
    assert_int_equal(id_auth_sign(&other, 1, nonce, id, PIN_A, osig), 0);
    assert_int_equal(id_auth_verify(kp.pk, 1, nonce, id, PIN_A, osig), -EPERM);
    assert_int_equal(id_auth_verify(other.pk, 1, nonce, id, PIN_A, osig), 0);
}

static void test_auth_message_limits(void **state)
{
    (void)state;
    uint8_t nonce[ID_NONCE_LEN] = {0};
    uint8_t msg[ID_AUTH_MSG_MAX];
    char id64[65], id65[66], pin64[65], pin65[66];
    memset(id64, 'a', 64);
    id64[64] = '\0';
    memset(id65, 'a', 65);
    id65[65] = '\0';
    memset(pin64, 'p', 64);
    pin64[64] = '\0';
    memset(pin65, 'p', 65);
    pin65[65] = '\0';

    int n = id_auth_message(1, nonce, id64, pin64, msg);
    assert_int_equal(n, (int)sizeof ID_AUTH_TAG + 4 + ID_NONCE_LEN + 1 + 64 + 1 + 64);
    assert_true(n <= ID_AUTH_MSG_MAX);
    assert_int_equal(id_auth_message(1, nonce, id65, "p", msg), -EINVAL);
    assert_int_equal(id_auth_message(1, nonce, "a", pin65, msg), -EINVAL);
    assert_int_equal(id_auth_message(1, nonce, id65, pin65, msg), -EINVAL);

    /* Sign and verify pass the error through rather than signing a cut message. */
    id_keypair_t kp;
    assert_int_equal(id_keypair_generate(&kp), 0);
    uint8_t sig[ID_SIG_LEN];
    assert_int_equal(id_auth_sign(&kp, 1, nonce, id65, PIN_A, sig), -EINVAL);
    assert_int_equal(id_auth_sign(&kp, 1, nonce, "a", pin65, sig), -EINVAL);
    assert_int_equal(id_auth_sign(&kp, 1, nonce, "a", PIN_A, sig), 0);
    assert_int_equal(id_auth_verify(kp.pk, 1, nonce, id65, PIN_A, sig), -EINVAL);
    assert_int_equal(id_auth_verify(kp.pk, 1, nonce, "a", pin65, sig), -EINVAL);
}

static void test_auth_message_layout(void **state)
{
    (void)state;
    uint8_t nonce[ID_NONCE_LEN];
    for (size_t i = 0; i < sizeof nonce; i++)
        nonce[i] = (uint8_t)(0x80 + i);
    uint8_t m1[ID_AUTH_MSG_MAX], m2[ID_AUTH_MSG_MAX];
    int n1 = id_auth_message(1, nonce, "ab", "c", m1);
    int n2 = id_auth_message(1, nonce, "a", "bc", m2);
    assert_true(n1 > 0);
    assert_int_equal(n1, n2);
    assert_memory_not_equal(m1, m2, (size_t)n1);

    /* The exact layout: tag with its NUL, big-endian version, nonce, len+id, len+pin. */
    uint8_t want[ID_AUTH_MSG_MAX];
    size_t o = 0;
    memcpy(want, "relayhub/tunnel-auth/v1", 24); /* 23 characters and the NUL */
    o += 24;
    want[o++] = 0x01;
    want[o++] = 0x02;
    want[o++] = 0x03;
    want[o++] = 0x04;
    memcpy(want + o, nonce, ID_NONCE_LEN);
    o += ID_NONCE_LEN;
    want[o++] = 2;
    want[o++] = 'a';
    want[o++] = 'b';
    want[o++] = 1;
    want[o++] = 'c';
    int n = id_auth_message(0x01020304u, nonce, "ab", "c", m1);
    assert_int_equal(n, (int)o);
    assert_memory_equal(m1, want, o);

    /* Empty id and pin still carry their length bytes. */
    n = id_auth_message(1, nonce, "", "", m1);
    assert_int_equal(n, 24 + 4 + ID_NONCE_LEN + 2);
    assert_int_equal(m1[n - 2], 0);
    assert_int_equal(m1[n - 1], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keypair_generate),
        cmocka_unit_test(test_keyfile_write_mode_and_no_overwrite),
        cmocka_unit_test(test_keyfile_roundtrip),
        cmocka_unit_test(test_keyfile_permissions),
        cmocka_unit_test(test_keyfile_malformed),
        cmocka_unit_test(test_agent_id),
        cmocka_unit_test(test_agent_id_valid),
        cmocka_unit_test(test_pubkey_b64_parse),
        cmocka_unit_test(test_sign_verify_roundtrip),
        cmocka_unit_test(test_verify_binds_every_input),
        cmocka_unit_test(test_auth_message_limits),
        cmocka_unit_test(test_auth_message_layout),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
