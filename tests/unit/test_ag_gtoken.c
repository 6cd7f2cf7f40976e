/* Unit tests for agent/ag_gtoken: loading service-account files, the signed JWT (checked with
 * the public key), the token endpoint's answers, the refresh timing and the waiters. No
 * network: a key is generated here, answers are fed through the module's write callback (the
 * .c is included for that, and to fix the backoff's random draws). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_util.h"

#include "../../agent/ag_gtoken.c"

#define T_EMAIL "relay@proj-1.iam.gserviceaccount.com"
#define T_KID "0123456789abcdef0123456789abcdef01234567"
#define T_WALL ((time_t)1700000000)
#define SEC 1000000ull  /* one second in microseconds */
#define T0 (1000 * SEC) /* an arbitrary monotonic start */

static char t_dir[256];
static EVP_PKEY *t_key;  /* the service account's key (RSA 2048) */
static char *t_pem;      /* its PKCS#8 PEM, as Google writes it */
static char *t_pem_1024; /* a short RSA key */
static char *t_pem_ec;   /* an EC key */
static char *t_pem_enc;  /* the good key, encrypted with a pass phrase */
static int t_seq;        /* file name counter */

/* The PEM of k (encrypted with "secret" when enc), malloc'd. */
static char *t_pem_of(EVP_PKEY *k, bool enc)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_non_null(b);
    if (enc)
        assert_int_equal(
            PEM_write_bio_PKCS8PrivateKey(b, k, EVP_aes_256_cbc(), "secret", 6, NULL, NULL), 1);
    else
        assert_int_equal(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *out = strndup(data, (size_t)n);
    assert_non_null(out);
    BIO_free(b);
    return out;
}

static int t_setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    t_key = EVP_RSA_gen(2048);
    EVP_PKEY *k1024 = EVP_RSA_gen(1024);
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    if (!t_key || !k1024 || !ec)
        return -1;
    t_pem = t_pem_of(t_key, false);
    t_pem_enc = t_pem_of(t_key, true);
    t_pem_1024 = t_pem_of(k1024, false);
    t_pem_ec = t_pem_of(ec, false);
    EVP_PKEY_free(k1024);
    EVP_PKEY_free(ec);
    return tu_tmpdir_new(t_dir, sizeof t_dir, "test_ag_gtoken");
}

static int t_teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(t_key);
    free(t_pem);
    free(t_pem_enc);
    free(t_pem_1024);
    free(t_pem_ec);
    curl_global_cleanup();
    return tu_rm_rf(t_dir);
}

/* A service-account object with every field a real Google file has. */
static json_t *t_sa(void)
{
    const char *const fields[][2] = {
        {"type", "service_account"},
        {"project_id", "proj-1"},
        {"private_key_id", T_KID},
        {"private_key", t_pem},
        {"client_email", T_EMAIL},
        {"client_id", "123456789012345678901"},
        {"auth_uri", "https://accounts.google.com/o/oauth2/auth"},
        {"token_uri", "https://oauth2.googleapis.com/token"},
        {"auth_provider_x509_cert_url", "https://www.googleapis.com/oauth2/v1/certs"},
        {"client_x509_cert_url", "https://www.googleapis.com/robot/v1/metadata/x509/relay"},
        {"universe_domain", "googleapis.com"},
    };
    json_t *o = json_object();
    assert_non_null(o);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        assert_int_equal(json_object_set_new(o, fields[i][0], json_string(fields[i][1])), 0);
    return o;
}

/* Writes text to a new file in the scratch directory with mode; returns its path (static). */
static const char *t_write(const char *text, mode_t mode)
{
    static char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/sa-%d.json", t_dir, t_seq++);
    tu_write_text(path, text);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

/* Writes o (taken) as a file with mode; returns its path. */
static const char *t_write_json(json_t *o, mode_t mode)
{
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    assert_non_null(text);
    json_decref(o);
    const char *p = t_write(text, mode);
    free(text);
    return p;
}

/* Loads the standard file; fails the test unless it loads. */
static ag_gtoken_t *t_load_good(void)
{
    char err[256] = "";
    ag_gtoken_t *g = NULL;
    int rc = ag_gtoken_load(t_write_json(t_sa(), 0600), &g, err, sizeof err);
    if (rc != 0)
        fail_msg("load: %d %s", rc, err);
    return g;
}

/* base64url (no padding) decode of s (n bytes) into a malloc'd NUL-terminated buffer. */
static char *t_unb64(const char *s, size_t n, size_t *outlen)
{
    char *out = malloc(n + 1);
    assert_non_null(out);
    size_t len = 0;
    assert_int_equal(sodium_base642bin((unsigned char *)out, n, s, n, NULL, &len, NULL,
                                       sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                     0);
    out[len] = '\0';
    if (outlen)
        *outlen = len;
    return out;
}

/* ---- loading ---- */

static void test_load_ok(void **state)
{
    (void)state;
    ag_gtoken_t *g = t_load_good();
    assert_string_equal(ag_gtoken_client_email(g), T_EMAIL);
    assert_null(ag_gtoken_warning(g));
    assert_string_equal(ag_gtoken_error(g), "");
    assert_true(EVP_PKEY_eq(g->key, t_key) == 1);
    ag_gtoken_destroy(&g);
    assert_null(g);
    ag_gtoken_destroy(&g); /* NULL is fine */
    ag_gtoken_destroy(NULL);

    /* token_uri may be absent (the official one is used). */
    json_t *o = t_sa();
    json_object_del(o, "token_uri");
    char err[256] = "";
    assert_int_equal(ag_gtoken_load(t_write_json(o, 0400), &g, err, sizeof err), 0);
    assert_null(ag_gtoken_warning(g));
    ag_gtoken_destroy(&g);

    /* An old-style PKCS#1 PEM ("BEGIN RSA PRIVATE KEY") loads too. */
    BIO *b = BIO_new(BIO_s_mem());
    assert_true(PEM_write_bio_PrivateKey_traditional(b, t_key, NULL, NULL, 0, NULL, NULL) == 1);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *pkcs1 = strndup(data, (size_t)n);
    BIO_free(b);
    assert_non_null(strstr(pkcs1, "BEGIN RSA PRIVATE KEY"));
    o = t_sa();
    json_object_set_new(o, "private_key", json_string(pkcs1));
    free(pkcs1);
    assert_int_equal(ag_gtoken_load(t_write_json(o, 0600), &g, err, sizeof err), 0);
    ag_gtoken_destroy(&g);
}

static void test_load_mode_warning(void **state)
{
    (void)state;
    static const mode_t modes[] = {0644, 0640, 0604, 0660, 0620};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        ag_gtoken_t *g = NULL;
        char err[256] = "", want[16];
        assert_int_equal(ag_gtoken_load(t_write_json(t_sa(), modes[i]), &g, err, sizeof err), 0);
        const char *w = ag_gtoken_warning(g);
        assert_non_null(w);
        snprintf(want, sizeof want, "mode %04o", (unsigned)modes[i]);
        assert_non_null(strstr(w, want));
        assert_non_null(strstr(w, "chmod 600"));
        ag_gtoken_destroy(&g);
    }
}

typedef struct {
    const char *what;  /* the case */
    const char *field; /* member to change, or NULL for a raw file text */
    const char *value; /* its new value as JSON text (NULL with pem NULL: delete it) */
    char **pem;        /* or a PEM of the group setup as its value */
    const char *raw;   /* the raw file text when field is NULL */
    int rc;            /* expected result */
    const char *msg;   /* expected in err */
} t_bad_t;

static void test_load_bad(void **state)
{
    (void)state;
    static const t_bad_t cases[] = {
        {"not JSON", NULL, NULL, NULL, "{\"type\": \"service_account\",", -EINVAL,
         "not valid JSON"},
        {"array", NULL, NULL, NULL, "[]", -EINVAL, "not a JSON object"},
        {"empty", NULL, NULL, NULL, "", -EINVAL, "not valid JSON"},
        {"duplicate token_uri", NULL, NULL, NULL,
         "{\"type\":\"service_account\",\"token_uri\":\"https://oauth2.googleapis.com/token\","
         "\"token_uri\":\"https://evil.example/token\"}",
         -EINVAL, "not valid JSON"},
        {"no type", "type", NULL, NULL, NULL, -EINVAL, "type: missing"},
        {"authorized_user", "type", "\"authorized_user\"", NULL, NULL, -EINVAL,
         "type: \"authorized_user\", not \"service_account\""},
        {"type not a string", "type", "42", NULL, NULL, -EINVAL, "type: not a string"},
        {"no client_email", "client_email", NULL, NULL, NULL, -EINVAL, "client_email: missing"},
        {"empty client_email", "client_email", "\"\"", NULL, NULL, -EINVAL, "client_email: empty"},
        {"client_email without @", "client_email", "\"relay.iam.gserviceaccount.com\"", NULL, NULL,
         -EINVAL, "client_email: not an e-mail address"},
        {"no private_key_id", "private_key_id", NULL, NULL, NULL, -EINVAL,
         "private_key_id: missing"},
        {"private_key_id blank", "private_key_id", "\"abc def\"", NULL, NULL, -EINVAL,
         "private_key_id: holds a blank"},
        {"no private_key", "private_key", NULL, NULL, NULL, -EINVAL, "private_key: missing"},
        {"private_key int", "private_key", "42", NULL, NULL, -EINVAL, "private_key: not a string"},
        {"private_key garbage PEM", "private_key",
         "\"-----BEGIN PRIVATE KEY-----\\nAAAAAAAA\\n-----END PRIVATE KEY-----\\n\"", NULL, NULL,
         -EINVAL, "private_key: not an unencrypted PEM private key"},
        {"private_key text", "private_key", "\"not a key\"", NULL, NULL, -EINVAL,
         "private_key: not an unencrypted PEM private key"},
        {"private_key encrypted", "private_key", NULL, &t_pem_enc, NULL, -EINVAL,
         "private_key: not an unencrypted PEM private key"},
        {"private_key EC", "private_key", NULL, &t_pem_ec, NULL, -EINVAL,
         "private_key: not an RSA key (EC)"},
        {"private_key 1024", "private_key", NULL, &t_pem_1024, NULL, -EINVAL,
         "private_key: RSA key of 1024 bits (at least 2048)"},
        {"token_uri foreign", "token_uri", "\"https://evil.example/token\"", NULL, NULL, -EINVAL,
         "token_uri: \"https://evil.example/token\" is not https://oauth2.googleapis.com/token "
         "(the agent calls only the official endpoint)"},
        {"token_uri http", "token_uri", "\"http://oauth2.googleapis.com/token\"", NULL, NULL,
         -EINVAL, "token_uri: \"http://oauth2.googleapis.com/token\" is not"},
        {"token_uri slash", "token_uri", "\"https://oauth2.googleapis.com/token/\"", NULL, NULL,
         -EINVAL, "token_uri: \"https://oauth2.googleapis.com/token/\" is not"},
        {"token_uri suffix", "token_uri", "\"https://oauth2.googleapis.com.evil.example/token\"",
         NULL, NULL, -EINVAL, "token_uri: \"https://oauth2.googleapis.com.evil.example/token\""},
        {"token_uri case", "token_uri", "\"https://OAUTH2.googleapis.com/token\"", NULL, NULL,
         -EINVAL, "token_uri: \"https://OAUTH2.googleapis.com/token\" is not"},
        {"token_uri control", "token_uri", "\"https://evil.example/\\r\\nX: y\"", NULL, NULL,
         -EINVAL, "token_uri: \"https://evil.example/??X: y\" is not"},
        {"token_uri old", "token_uri", "\"https://accounts.google.com/o/oauth2/token\"", NULL, NULL,
         -EINVAL, "token_uri: \"https://accounts.google.com/o/oauth2/token\" is not"},
        {"token_uri int", "token_uri", "42", NULL, NULL, -EINVAL, "token_uri: \"(not a string)\""},
        {"token_uri null", "token_uri", "null", NULL, NULL, -EINVAL,
         "token_uri: \"(not a string)\""},
        {"token_uri empty", "token_uri", "\"\"", NULL, NULL, -EINVAL, "token_uri: \"\" is not"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const t_bad_t *c = &cases[i];
        const char *path;
        if (c->field) {
            json_t *o = t_sa();
            if (c->pem)
                json_object_set_new(o, c->field, json_string(*c->pem));
            else if (c->value)
                json_object_set_new(o, c->field, json_loads(c->value, JSON_DECODE_ANY, NULL));
            else
                json_object_del(o, c->field);
            path = t_write_json(o, 0600);
        } else {
            path = t_write(c->raw, 0600);
        }
        ag_gtoken_t *g = (ag_gtoken_t *)1;
        char err[256] = "";
        int rc = ag_gtoken_load(path, &g, err, sizeof err);
        if (rc != c->rc || !strstr(err, c->msg))
            fail_msg("%s: rc %d, err \"%s\" (want %d, \"%s\")", c->what, rc, err, c->rc, c->msg);
        assert_null(g);
        assert_null(strstr(err, "PRIVATE KEY"));
    }
}

static void test_load_file_errors(void **state)
{
    (void)state;
    ag_gtoken_t *g = NULL;
    char err[256] = "", path[PATH_MAX];

    snprintf(path, sizeof path, "%s/absent.json", t_dir);
    assert_int_equal(ag_gtoken_load(path, &g, err, sizeof err), -ENOENT);
    assert_string_equal(err, "cannot open: No such file or directory");
    assert_null(g);

    assert_int_equal(ag_gtoken_load(t_dir, &g, err, sizeof err), -EINVAL);
    assert_string_equal(err, "not a regular file");

    /* Over 64 KiB: refused before it is parsed. */
    json_t *o = t_sa();
    char *pad = malloc(AG_GTOKEN_MAX_FILE + 1);
    assert_non_null(pad);
    memset(pad, 'x', AG_GTOKEN_MAX_FILE);
    pad[AG_GTOKEN_MAX_FILE] = '\0';
    json_object_set_new(o, "padding", json_string(pad));
    free(pad);
    assert_int_equal(ag_gtoken_load(t_write_json(o, 0600), &g, err, sizeof err), -EFBIG);
    assert_string_equal(err, "larger than 65536 bytes");

    /* A JSON error inside the key's string must not quote the key. */
    json_t *sa = t_sa();
    char *text = json_dumps(sa, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(sa);
    char *key = strstr(text, "MII");
    assert_non_null(key);
    key[10] = '\\';
    key[11] = 'q'; /* an invalid escape in the middle of the key */
    assert_int_equal(ag_gtoken_load(t_write(text, 0600), &g, err, sizeof err), -EINVAL);
    free(text);
    assert_non_null(strstr(err, "not valid JSON (line 1, column"));
    assert_null(strstr(err, "MII"));
    assert_null(strstr(err, "BEGIN"));
}

/* ---- the JWT ---- */

static void test_jwt(void **state)
{
    (void)state;
    ag_gtoken_t *g = t_load_good();
    char *jwt = NULL;
    assert_int_equal(ag_gtoken_jwt(g, T_WALL, &jwt), 0);
    assert_null(strchr(jwt, '='));
    assert_null(strchr(jwt, '+'));
    assert_null(strchr(jwt, '/'));

    char *dot1 = strchr(jwt, '.');
    assert_non_null(dot1);
    char *dot2 = strchr(dot1 + 1, '.');
    assert_non_null(dot2);
    assert_null(strchr(dot2 + 1, '.'));

    char *head = t_unb64(jwt, (size_t)(dot1 - jwt), NULL);
    assert_string_equal(head, "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"" T_KID "\"}");
    char *claims = t_unb64(dot1 + 1, (size_t)(dot2 - dot1 - 1), NULL);
    assert_string_equal(claims, "{\"iss\":\"" T_EMAIL "\","
                                "\"scope\":\"https://www.googleapis.com/auth/cloud-platform\","
                                "\"aud\":\"https://oauth2.googleapis.com/token\","
                                "\"iat\":1700000000,\"exp\":1700003600}");
    size_t siglen = 0;
    char *sig = t_unb64(dot2 + 1, strlen(dot2 + 1), &siglen);
    assert_int_equal(siglen, 256);

    /* The signature verifies over "header.claims" with the public key (RS256). */
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    assert_int_equal(EVP_DigestVerifyInit(ctx, &pctx, EVP_sha256(), NULL, t_key), 1);
    assert_true(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) > 0);
    assert_int_equal(EVP_DigestVerify(ctx, (unsigned char *)sig, siglen, (unsigned char *)jwt,
                                      (size_t)(dot2 - jwt)),
                     1);
    /* ...and not over anything else. */
    EVP_MD_CTX_reset(ctx);
    pctx = NULL;
    assert_int_equal(EVP_DigestVerifyInit(ctx, &pctx, EVP_sha256(), NULL, t_key), 1);
    jwt[5] ^= 1;
    assert_int_not_equal(EVP_DigestVerify(ctx, (unsigned char *)sig, siglen, (unsigned char *)jwt,
                                          (size_t)(dot2 - jwt)),
                         1);
    jwt[5] ^= 1;
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();

    /* PKCS#1 v1.5 is deterministic: same time, same JWT; another time, another one. */
    char *again = NULL, *later = NULL;
    assert_int_equal(ag_gtoken_jwt(g, T_WALL, &again), 0);
    assert_string_equal(again, jwt);
    assert_int_equal(ag_gtoken_jwt(g, T_WALL + 1, &later), 0);
    assert_string_not_equal(later, jwt);

    /* The form body is the grant type and the same JWT. */
    char *form = NULL;
    size_t flen = 0;
    assert_int_equal(ag_gtoken_form(g, T_WALL, &form, &flen), 0);
    static const char pre[] =
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=";
    assert_int_equal(flen, strlen(form));
    assert_memory_equal(form, pre, sizeof pre - 1);
    assert_string_equal(form + sizeof pre - 1, jwt);

    free(form);
    free(later);
    free(again);
    free(sig);
    free(claims);
    free(head);
    free(jwt);
    ag_gtoken_destroy(&g);
}

/* ---- the answer ---- */

typedef struct {
    long status;      /* HTTP status */
    const char *body; /* the answer */
    int rc;           /* expected result */
    const char *want; /* the token, or a piece of the error */
    int64_t secs;     /* expected expires_in */
} t_answer_t;

static void test_parse(void **state)
{
    (void)state;
    static const t_answer_t cases[] = {
        {200,
         "{\"access_token\":\"ya29.a0AfB_byC-x\",\"expires_in\":3599,"
         "\"token_type\":\"Bearer\"}",
         0, "ya29.a0AfB_byC-x", 3599},
        {200, "{\"access_token\":\"t\",\"expires_in\":60,\"token_type\":\"bearer\"}", 0, "t", 60},
        {200, "{\"token_type\":\"Bearer\",\"expires_in\":3599.0,\"access_token\":\"t2\"}", 0, "t2",
         3599},
        {200, "{\"access_token\":\"t\",\"expires_in\":999999,\"token_type\":\"Bearer\"}", 0, "t",
         AG_GTOKEN_MAX_EXPIRES_IN},
        {400, "{\"error\":\"invalid_grant\",\"error_description\":\"Invalid JWT Signature.\"}",
         -EACCES, "Google token endpoint answered 400: invalid_grant: Invalid JWT Signature.", 0},
        {400,
         "{\"error\":\"invalid_grant\",\"error_description\":\"Invalid JWT: Token must be "
         "a short-lived token (60 minutes) and in a reasonable timeframe.\"}",
         -EACCES, "invalid_grant: Invalid JWT: Token must be a short-lived token", 0},
        {401, "{\"error\":\"unauthorized_client\"}", -EACCES,
         "Google token endpoint answered 401: unauthorized_client", 0},
        {403,
         "{\"error\":{\"code\":403,\"message\":\"The caller does not have permission\","
         "\"status\":\"PERMISSION_DENIED\"}}",
         -EACCES, "answered 403: PERMISSION_DENIED: The caller does not have permission", 0},
        {200, "{\"error\":\"invalid_grant\"}", -EACCES, "answered 200: invalid_grant", 0},
        {400, "{\"error\":\"x\",\"error_description\":\"line\\nbreak\\u0007\"}", -EACCES,
         "x: line?break?", 0},
        {502, "<html><body>Bad Gateway</body></html>", -EPROTO,
         "Google token endpoint answered 502 (not a JSON object)", 0},
        {503, "", -EPROTO, "Google token endpoint answered 503 (empty)", 0},
        {500, "{\"unexpected\":true}", -EPROTO, "Google token endpoint answered 500", 0},
        {200, "", -EBADMSG, "answered 200 with an empty body", 0},
        {200, "not json", -EBADMSG, "answered 200 with no JSON object", 0},
        {200, "[1]", -EBADMSG, "answered 200 with no JSON object", 0},
        {200, "{\"expires_in\":3599,\"token_type\":\"Bearer\"}", -EBADMSG, "access_token missing",
         0},
        {200, "{\"access_token\":\"\",\"expires_in\":3599,\"token_type\":\"Bearer\"}", -EBADMSG,
         "access_token missing", 0},
        {200, "{\"access_token\":7,\"expires_in\":3599,\"token_type\":\"Bearer\"}", -EBADMSG,
         "access_token missing", 0},
        {200,
         "{\"access_token\":\"a\\r\\nX-Evil: 1\",\"expires_in\":3599,"
         "\"token_type\":\"Bearer\"}",
         -EBADMSG, "control character", 0},
        {200, "{\"access_token\":\"a b\",\"expires_in\":3599,\"token_type\":\"Bearer\"}", -EBADMSG,
         "blank", 0},
        {200, "{\"access_token\":\"t\",\"token_type\":\"Bearer\"}", -EBADMSG,
         "expires_in missing or not a number", 0},
        {200, "{\"access_token\":\"t\",\"expires_in\":\"3599\",\"token_type\":\"Bearer\"}",
         -EBADMSG, "expires_in missing or not a number", 0},
        {200, "{\"access_token\":\"t\",\"expires_in\":0,\"token_type\":\"Bearer\"}", -EBADMSG,
         "expires_in 0", 0},
        {200, "{\"access_token\":\"t\",\"expires_in\":-5,\"token_type\":\"Bearer\"}", -EBADMSG,
         "expires_in -5", 0},
        {200, "{\"access_token\":\"t\",\"expires_in\":3599}", -EBADMSG,
         "token_type is not \"Bearer\"", 0},
        {200, "{\"access_token\":\"t\",\"expires_in\":3599,\"token_type\":\"MAC\"}", -EBADMSG,
         "token_type is not \"Bearer\"", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const t_answer_t *c = &cases[i];
        char *tok = (char *)1, err[AG_GTOKEN_ERR_MAX] = "";
        int64_t secs = -1;
        int rc = ag_gtoken_parse(c->status, c->body, strlen(c->body), &tok, &secs, err, sizeof err);
        if (rc != c->rc)
            fail_msg("case %zu: rc %d (want %d), err \"%s\"", i, rc, c->rc, err);
        if (rc == 0) {
            assert_string_equal(tok, c->want);
            assert_int_equal(secs, c->secs);
            free(tok);
        } else {
            assert_null(tok);
            if (!strstr(err, c->want))
                fail_msg("case %zu: err \"%s\" lacks \"%s\"", i, err, c->want);
        }
    }
    /* A NUL inside the body (len counts it) is not JSON. */
    char *tok, err[AG_GTOKEN_ERR_MAX];
    int64_t secs;
    assert_int_equal(ag_gtoken_parse(200, "{}\0{}", 5, &tok, &secs, err, sizeof err), -EBADMSG);
    /* An over-long token. */
    char *big = malloc(AG_GTOKEN_MAX_TOKEN + 100);
    assert_non_null(big);
    int n = snprintf(big, AG_GTOKEN_MAX_TOKEN + 100,
                     "{\"access_token\":\"%0*d\",\"expires_in\":"
                     "3599,\"token_type\":\"Bearer\"}",
                     AG_GTOKEN_MAX_TOKEN + 1, 0);
    assert_int_equal(ag_gtoken_parse(200, big, (size_t)n, &tok, &secs, err, sizeof err), -EBADMSG);
    free(big);
}

static void test_margin(void **state)
{
    (void)state;
    static const int64_t table[][2] = {
        {3600, 300}, {3599, 300}, {1200, 300}, {1199, 299}, {1000, 250}, {600, 150},   {1600, 300},
        {60, 15},    {10, 2},     {3, 0},      {1, 0},      {0, 0},      {86400, 300},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        assert_int_equal(ag_gtoken_margin_s(table[i][0]), table[i][1]);
}

/* ---- the cache and the exchange ---- */

#define T_OK(secs)                                                                                 \
    "{\"access_token\":\"tok-" #secs "\",\"expires_in\":" #secs ",\"token_type\":\"Bearer\"}"
#define T_REFUSED "{\"error\":\"invalid_grant\",\"error_description\":\"Invalid JWT Signature.\"}"

static uint64_t t_rnd_low(uint64_t bound)
{
    (void)bound;
    return 0;
}
static uint64_t t_rnd_high(uint64_t bound)
{
    return bound - 1;
}

/* One exchange begun at start_us and answered at end_us with status and body (curl result
 * CURLE_OK). Returns finish's result. */
static int t_exchange(ag_gtoken_t *g, uint64_t start_us, uint64_t end_us, long status,
                      const char *body)
{
    CURL *e = NULL;
    assert_int_equal(ag_gtoken_begin(g, start_us, T_WALL, &e), 0);
    assert_non_null(e);
    assert_ptr_equal(ag_gtoken_inflight(g), e);
    size_t n = strlen(body);
    assert_int_equal(s_on_write((char *)body, 1, n, g), n);
    int rc = ag_gtoken_finish(g, e, CURLE_OK, status, end_us);
    assert_null(ag_gtoken_inflight(g));
    return rc;
}

static void test_timing_fresh(void **state)
{
    (void)state;
    ag_gtoken_t *g = t_load_good();
    uint64_t gen = 0;

    /* No token yet: a refresh is due, requests wait. */
    assert_int_equal(ag_gtoken_state(g, T0), AG_GTOKEN_WAIT);
    assert_true(ag_gtoken_refresh_due(g, T0));
    assert_null(ag_gtoken_token(g, T0, NULL));

    /* In flight: nothing more is due, a second begin is refused, requests wait. */
    CURL *e = NULL, *e2 = (CURL *)1;
    assert_int_equal(ag_gtoken_begin(g, T0, T_WALL, &e), 0);
    assert_false(ag_gtoken_refresh_due(g, T0));
    assert_int_equal(ag_gtoken_begin(g, T0, T_WALL, &e2), -EALREADY);
    assert_null(e2);
    assert_int_equal(ag_gtoken_state(g, T0 + SEC), AG_GTOKEN_WAIT);
    assert_int_equal(ag_gtoken_finish(g, (CURL *)&gen, CURLE_OK, 200, T0), -EINVAL);
    assert_ptr_equal(ag_gtoken_inflight(g), e);
    const char *ok = T_OK(3600);
    assert_int_equal(s_on_write((char *)ok, 1, strlen(ok), g), strlen(ok));
    assert_int_equal(ag_gtoken_finish(g, e, CURLE_OK, 200, T0 + SEC / 2), 0);

    /* Fresh: usable, not due. The lifetime counts from the begin (T0), the margin is 300 s. */
    assert_int_equal(ag_gtoken_state(g, T0 + SEC), AG_GTOKEN_READY);
    assert_string_equal(ag_gtoken_token(g, T0 + SEC, &gen), "tok-3600");
    assert_int_equal(gen, 1);
    assert_string_equal(ag_gtoken_error(g), "");
    assert_false(ag_gtoken_refresh_due(g, T0 + SEC));
    assert_false(ag_gtoken_refresh_due(g, T0 + 3300 * SEC - 1));
    /* Within the margin: due, still usable. */
    assert_true(ag_gtoken_refresh_due(g, T0 + 3300 * SEC));
    assert_int_equal(ag_gtoken_state(g, T0 + 3300 * SEC), AG_GTOKEN_READY);

    /* A refresh in flight: the old token goes on until it expires, then requests wait. */
    assert_int_equal(ag_gtoken_begin(g, T0 + 3300 * SEC, T_WALL, &e), 0);
    assert_int_equal(ag_gtoken_state(g, T0 + 3599 * SEC), AG_GTOKEN_READY);
    assert_string_equal(ag_gtoken_token(g, T0 + 3600 * SEC - 1, NULL), "tok-3600");
    assert_int_equal(ag_gtoken_state(g, T0 + 3600 * SEC), AG_GTOKEN_WAIT);
    assert_null(ag_gtoken_token(g, T0 + 3600 * SEC, NULL));
    assert_false(ag_gtoken_refresh_due(g, T0 + 3600 * SEC));
    ok = T_OK(3599);
    assert_int_equal(s_on_write((char *)ok, 1, strlen(ok), g), strlen(ok));
    assert_int_equal(ag_gtoken_finish(g, e, CURLE_OK, 200, T0 + 3601 * SEC), 0);
    assert_string_equal(ag_gtoken_token(g, T0 + 3601 * SEC, &gen), "tok-3599");
    assert_int_equal(gen, 2);
    /* The new token: expires at 3300 + 3599 s, due 300 s before. */
    assert_false(ag_gtoken_refresh_due(g, T0 + 6599 * SEC - 1));
    assert_true(ag_gtoken_refresh_due(g, T0 + 6599 * SEC));
    assert_int_equal(ag_gtoken_state(g, T0 + 6899 * SEC - 1), AG_GTOKEN_READY);
    assert_int_equal(ag_gtoken_state(g, T0 + 6899 * SEC), AG_GTOKEN_WAIT);
    ag_gtoken_destroy(&g);
}

static void test_timing_short(void **state)
{
    (void)state;
    ag_gtoken_t *g = t_load_good();
    /* 60 s: margin 15 s, so due at 45 s, not on every request. */
    assert_int_equal(t_exchange(g, T0, T0 + SEC / 4, 200, T_OK(60)), 0);
    assert_false(ag_gtoken_refresh_due(g, T0 + SEC));
    assert_false(ag_gtoken_refresh_due(g, T0 + 45 * SEC - 1));
    assert_true(ag_gtoken_refresh_due(g, T0 + 45 * SEC));
    assert_int_equal(ag_gtoken_state(g, T0 + 60 * SEC - 1), AG_GTOKEN_READY);
    assert_int_equal(ag_gtoken_state(g, T0 + 60 * SEC), AG_GTOKEN_WAIT);

    /* 2 s: margin 0; due only when it expires. */
    assert_int_equal(t_exchange(g, T0 + 60 * SEC, T0 + 60 * SEC, 200, T_OK(2)), 0);
    assert_false(ag_gtoken_refresh_due(g, T0 + 62 * SEC - 1));
    assert_true(ag_gtoken_refresh_due(g, T0 + 62 * SEC));

    /* A token that expired before its answer arrived is a failure. */
    assert_int_equal(t_exchange(g, T0 + 100 * SEC, T0 + 102 * SEC, 200, T_OK(1)), -ETIMEDOUT);
    assert_non_null(strstr(ag_gtoken_error(g), "expired before the answer arrived"));
    assert_int_equal(ag_gtoken_state(g, T0 + 102 * SEC), AG_GTOKEN_FAILED);
    ag_gtoken_destroy(&g);
}

static void test_invalidate(void **state)
{
    (void)state;
    ag_gtoken_t *g = t_load_good();
    g->rnd = t_rnd_low;
    uint64_t gen = 0;
    assert_int_equal(t_exchange(g, T0, T0 + SEC, 200, T_OK(3600)), 0);
    assert_non_null(ag_gtoken_token(g, T0 + 60 * SEC, &gen));
    assert_int_equal(gen, 1);

    /* A 401 on a token that served a minute: dropped, refresh due at once, requests wait. */
    assert_false(ag_gtoken_invalidate(g, 0, T0 + 60 * SEC));
    assert_true(ag_gtoken_invalidate(g, 1, T0 + 60 * SEC));
    assert_false(ag_gtoken_invalidate(g, 1, T0 + 60 * SEC)); /* twice: nothing left */
    assert_null(ag_gtoken_token(g, T0 + 60 * SEC, NULL));
    assert_true(ag_gtoken_refresh_due(g, T0 + 60 * SEC));
    assert_int_equal(ag_gtoken_state(g, T0 + 60 * SEC), AG_GTOKEN_WAIT);
    assert_string_equal(ag_gtoken_error(g), "");

    /* New token (gen 2). A late 401 for gen 1 (sent before) changes nothing. */
    assert_int_equal(t_exchange(g, T0 + 60 * SEC, T0 + 61 * SEC, 200, T_OK(3600)), 0);
    assert_non_null(ag_gtoken_token(g, T0 + 62 * SEC, &gen));
    assert_int_equal(gen, 2);
    assert_false(ag_gtoken_invalidate(g, 1, T0 + 62 * SEC));
    assert_int_equal(ag_gtoken_state(g, T0 + 62 * SEC), AG_GTOKEN_READY);

    /* A 401 on a token 1 s old that itself replaced a refused one: a failure (error kept,
     * retried after 1 s at least). */
    assert_true(ag_gtoken_invalidate(g, 2, T0 + 62 * SEC));
    assert_int_equal(ag_gtoken_state(g, T0 + 62 * SEC), AG_GTOKEN_FAILED);
    assert_string_equal(ag_gtoken_error(g), "the vendor refused an access token 1000 ms old "
                                            "(HTTP 401)");
    assert_false(ag_gtoken_refresh_due(g, T0 + 63 * SEC - 1));
    assert_true(ag_gtoken_refresh_due(g, T0 + 63 * SEC));
    assert_int_equal(ag_gtoken_state(g, T0 + 63 * SEC), AG_GTOKEN_WAIT);
    assert_int_equal(t_exchange(g, T0 + 63 * SEC, T0 + 64 * SEC, 200, T_OK(3600)), 0);
    assert_string_equal(ag_gtoken_error(g), "");
    assert_non_null(ag_gtoken_token(g, T0 + 64 * SEC, &gen));
    assert_int_equal(gen, 3);
    /* ...and the next young one waits longer (the count did not reset): 1 s + 2 s. */
    g->rnd = t_rnd_high;
    assert_true(ag_gtoken_invalidate(g, 3, T0 + 65 * SEC));
    assert_int_equal(g->backoff.attempt, 2);
    assert_false(ag_gtoken_refresh_due(g, T0 + 68 * SEC - 1));
    assert_true(ag_gtoken_refresh_due(g, T0 + 68 * SEC));
    ag_gtoken_destroy(&g);

    /* A young token that replaced nothing (the vendor revoked it): fetched again at once. */
    g = t_load_good();
    assert_int_equal(t_exchange(g, T0, T0 + SEC, 200, T_OK(3600)), 0);
    assert_true(ag_gtoken_invalidate(g, 1, T0 + 2 * SEC));
    assert_int_equal(ag_gtoken_state(g, T0 + 2 * SEC), AG_GTOKEN_WAIT);
    assert_true(ag_gtoken_refresh_due(g, T0 + 2 * SEC));
    assert_string_equal(ag_gtoken_error(g), "");
    /* ... and its replacement refused at once too: now a failure. */
    assert_int_equal(t_exchange(g, T0 + 2 * SEC, T0 + 3 * SEC, 200, T_OK(3600)), 0);
    assert_true(ag_gtoken_invalidate(g, 2, T0 + 4 * SEC));
    assert_int_equal(ag_gtoken_state(g, T0 + 4 * SEC), AG_GTOKEN_FAILED);
    /* A replacement the vendor took once, then refused: a revocation, fetched again at once. */
    assert_int_equal(t_exchange(g, T0 + 5 * SEC, T0 + 6 * SEC, 200, T_OK(3600)), 0);
    ag_gtoken_accepted(g, 2); /* an older generation: changes nothing */
    ag_gtoken_accepted(g, 3);
    assert_true(ag_gtoken_invalidate(g, 3, T0 + 7 * SEC));
    assert_int_equal(ag_gtoken_state(g, T0 + 7 * SEC), AG_GTOKEN_WAIT);
    ag_gtoken_destroy(&g);
}

static void test_failure_backoff(void **state)
{
    (void)state;
    ag_gtoken_t *g = t_load_good();
    g->rnd = t_rnd_high; /* each delay is 1 s + the backoff ceiling: 1, 2, 4 s... */

    /* First failure at 1 s: retry at 1 + 1 + 1 = 3 s. */
    assert_int_equal(t_exchange(g, T0, T0 + SEC, 400, T_REFUSED), -EACCES);
    assert_string_equal(ag_gtoken_error(g), "Google token endpoint answered 400: invalid_grant: "
                                            "Invalid JWT Signature.");
    assert_int_equal(ag_gtoken_state(g, T0 + SEC), AG_GTOKEN_FAILED);
    assert_false(ag_gtoken_refresh_due(g, T0 + 3 * SEC - 1));
    assert_int_equal(ag_gtoken_state(g, T0 + 3 * SEC - 1), AG_GTOKEN_FAILED);
    assert_true(ag_gtoken_refresh_due(g, T0 + 3 * SEC));
    assert_int_equal(ag_gtoken_state(g, T0 + 3 * SEC), AG_GTOKEN_WAIT);

    /* Second (transport) at 4 s: retry at 4 + 1 + 2 = 7 s. */
    CURL *e = NULL;
    assert_int_equal(ag_gtoken_begin(g, T0 + 3 * SEC, T_WALL, &e), 0);
    assert_int_equal(ag_gtoken_state(g, T0 + 3 * SEC), AG_GTOKEN_WAIT); /* in flight */
    snprintf(g->curl_err, sizeof g->curl_err, "Could not resolve host: oauth2.googleapis.com");
    assert_int_equal(ag_gtoken_finish(g, e, CURLE_COULDNT_RESOLVE_HOST, 0, T0 + 4 * SEC), -EIO);
    assert_string_equal(ag_gtoken_error(g), "token request failed: Could not resolve host: "
                                            "oauth2.googleapis.com");
    assert_false(ag_gtoken_refresh_due(g, T0 + 7 * SEC - 1));
    assert_true(ag_gtoken_refresh_due(g, T0 + 7 * SEC));

    /* Third at 8 s: 8 + 1 + 4 = 13 s; without curl's own text, curl's code is named. */
    assert_int_equal(ag_gtoken_begin(g, T0 + 7 * SEC, T_WALL, &e), 0);
    assert_int_equal(ag_gtoken_finish(g, e, CURLE_OPERATION_TIMEDOUT, 0, T0 + 8 * SEC), -EIO);
    assert_string_equal(ag_gtoken_error(g), "token request failed: Timeout was reached");
    assert_false(ag_gtoken_refresh_due(g, T0 + 13 * SEC - 1));
    assert_true(ag_gtoken_refresh_due(g, T0 + 13 * SEC));

    /* Success: the error goes. */
    assert_int_equal(t_exchange(g, T0 + 13 * SEC, T0 + 14 * SEC, 200, T_OK(3600)), 0);
    assert_string_equal(ag_gtoken_error(g), "");
    assert_int_equal(ag_gtoken_state(g, T0 + 14 * SEC), AG_GTOKEN_READY);

    /* The token served an hour: the count resets. A failed early refresh keeps the old
     * token in use; its retry waits 1 + 1 s. */
    uint64_t t = T0 + (13 + 3300) * SEC;
    assert_true(ag_gtoken_refresh_due(g, t));
    assert_int_equal(t_exchange(g, t, t + SEC, 500, "{}"), -EPROTO);
    assert_string_equal(ag_gtoken_error(g), "Google token endpoint answered 500");
    assert_int_equal(ag_gtoken_state(g, t + SEC), AG_GTOKEN_READY);
    assert_string_equal(ag_gtoken_token(g, t + SEC, NULL), "tok-3600");
    assert_false(ag_gtoken_refresh_due(g, t + 3 * SEC - 1));
    assert_true(ag_gtoken_refresh_due(g, t + 3 * SEC));
    /* Expired with the failure's retry time passed: wait for a refresh (due). */
    assert_int_equal(ag_gtoken_state(g, T0 + 3613 * SEC), AG_GTOKEN_WAIT);

    /* With the low dice, the wait is never below 1 s. */
    g->rnd = t_rnd_low;
    t = T0 + 4000 * SEC;
    assert_int_equal(t_exchange(g, t, t, 200, "nope"), -EBADMSG);
    assert_false(ag_gtoken_refresh_due(g, t + SEC - 1));
    assert_true(ag_gtoken_refresh_due(g, t + SEC));
    ag_gtoken_destroy(&g);
}

static void test_answer_limit(void **state)
{
    (void)state;
    ag_gtoken_t *g = t_load_good();
    CURL *e = NULL;
    assert_int_equal(ag_gtoken_begin(g, T0, T_WALL, &e), 0);
    static char chunk[16384];
    memset(chunk, ' ', sizeof chunk);
    for (int i = 0; i < 4; i++)
        assert_int_equal(s_on_write(chunk, 1, sizeof chunk, g), sizeof chunk); /* 64 KiB */
    assert_int_equal(s_on_write(chunk, 1, 1, g), 0); /* one byte more: refused */
    assert_int_equal(ag_gtoken_finish(g, e, CURLE_WRITE_ERROR, 200, T0 + SEC), -EMSGSIZE);
    assert_string_equal(ag_gtoken_error(g), "Google token endpoint: answer over 65536 bytes");

    /* The next exchange starts with an empty answer again. */
    assert_int_equal(t_exchange(g, T0 + 5 * SEC, T0 + 6 * SEC, 200, T_OK(3600)), 0);
    ag_gtoken_destroy(&g);
}

/* The easy handle speaks https only: http and file URLs fail before any connection. */
static void test_https_only(void **state)
{
    (void)state;
    ag_gtoken_t *g = t_load_good();
    static const char *const urls[] = {"http://127.0.0.1:9/token", "file:///etc/hostname",
                                       "ftp://127.0.0.1:9/x"};
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        CURL *e = NULL;
        assert_int_equal(ag_gtoken_begin(g, T0, T_WALL, &e), 0);
        curl_easy_setopt(e, CURLOPT_URL, urls[i]);
        CURLcode res = curl_easy_perform(e);
        assert_int_equal(res, CURLE_UNSUPPORTED_PROTOCOL);
        assert_int_equal(g->answer_len, 0);
        assert_int_equal(ag_gtoken_finish(g, e, res, 0, T0 + SEC), -EIO);
        assert_non_null(strstr(ag_gtoken_error(g), "token request failed: "));
    }
    ag_gtoken_destroy(&g);
}

static void test_auth_header(void **state)
{
    (void)state;
    ag_gtoken_t *g = t_load_good();
    char line[64];
    uint64_t gen = 0;
    assert_int_equal(ag_gtoken_auth_header(g, T0, line, sizeof line, &gen), -EAGAIN);
    assert_int_equal(t_exchange(g, T0, T0, 200, T_OK(3600)), 0);
    assert_int_equal(ag_gtoken_auth_header(g, T0, line, sizeof line, &gen), 0);
    assert_string_equal(line, "Authorization: Bearer tok-3600");
    assert_int_equal(gen, 1);
    assert_int_equal(ag_gtoken_auth_header(g, T0, line, 20, &gen), -ENOSPC);
    assert_int_equal(ag_gtoken_auth_header(g, T0 + 3600 * SEC, line, sizeof line, &gen), -EAGAIN);
    ag_gtoken_destroy(&g);
}

/* ---- waiters ---- */

typedef struct {
    ag_gtoken_t *g;             /* the refresher */
    ag_gtoken_waiter_t w;       /* the queue entry */
    int calls;                  /* times woken */
    int rc;                     /* the last rc */
    char token[32];             /* the token seen when woken with 0 */
    int order;                  /* wake-up order */
    ag_gtoken_waiter_t *cancel; /* a waiter to cancel when woken */
    bool again;                 /* begin a new refresh and queue again when woken */
} t_req_t;

static int t_order;

static void t_woken(ag_gtoken_waiter_t *w, int rc, void *arg)
{
    t_req_t *r = arg;
    assert_ptr_equal(w, &r->w);
    assert_null(w->next); /* not queued any more */
    r->calls++;
    r->rc = rc;
    r->order = ++t_order;
    if (rc == 0)
        snprintf(r->token, sizeof r->token, "%s", ag_gtoken_token(r->g, T0 + 2 * SEC, NULL));
    if (r->cancel)
        ag_gtoken_cancel(r->cancel);
    if (r->again) {
        r->again = false;
        CURL *e = NULL;
        assert_int_equal(ag_gtoken_begin(r->g, T0 + 10 * SEC, T_WALL, &e), 0);
        assert_int_equal(ag_gtoken_wait(r->g, &r->w, t_woken, r), 0);
    }
}

static void test_waiters(void **state)
{
    (void)state;
    ag_gtoken_t *g = t_load_good();
    t_req_t a = {.g = g}, b = {.g = g}, c = {.g = g}, d = {.g = g};
    t_order = 0;

    /* Nothing in flight: nothing to wait for. */
    assert_int_equal(ag_gtoken_wait(g, &a.w, t_woken, &a), -EINVAL);
    assert_int_equal(ag_gtoken_waiting(g), 0);

    CURL *e = NULL;
    assert_int_equal(ag_gtoken_begin(g, T0, T_WALL, &e), 0);
    assert_int_equal(ag_gtoken_wait(g, &a.w, t_woken, &a), 0);
    assert_int_equal(ag_gtoken_wait(g, &b.w, t_woken, &b), 0);
    assert_int_equal(ag_gtoken_wait(g, &c.w, t_woken, &c), 0);
    assert_int_equal(ag_gtoken_wait(g, &d.w, t_woken, &d), 0);
    assert_int_equal(ag_gtoken_wait(g, &a.w, t_woken, &a), -EALREADY);
    assert_int_equal(ag_gtoken_waiting(g), 4);
    ag_gtoken_cancel(&b.w); /* b's request was cancelled */
    ag_gtoken_cancel(&b.w); /* twice is fine */
    assert_int_equal(ag_gtoken_waiting(g), 3);
    a.cancel = &d.w; /* a's wake-up cancels d, still queued in the same round */

    const char *ok = T_OK(3600);
    assert_int_equal(s_on_write((char *)ok, 1, strlen(ok), g), strlen(ok));
    assert_int_equal(ag_gtoken_finish(g, e, CURLE_OK, 200, T0 + SEC), 0);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.rc, 0);
    assert_string_equal(a.token, "tok-3600");
    assert_int_equal(b.calls, 0);
    assert_int_equal(c.calls, 1);
    assert_string_equal(c.token, "tok-3600");
    assert_int_equal(d.calls, 0);
    assert_true(a.order < c.order); /* arrival order */
    assert_int_equal(ag_gtoken_waiting(g), 0);

    /* A failed refresh wakes with its errno; a waiter may begin the next and queue again. */
    a = (t_req_t){.g = g, .again = true};
    c = (t_req_t){.g = g};
    assert_int_equal(ag_gtoken_begin(g, T0 + 5 * SEC, T_WALL, &e), 0);
    assert_int_equal(ag_gtoken_wait(g, &a.w, t_woken, &a), 0);
    assert_int_equal(ag_gtoken_wait(g, &c.w, t_woken, &c), 0);
    assert_int_equal(s_on_write((char *)T_REFUSED, 1, strlen(T_REFUSED), g), strlen(T_REFUSED));
    assert_int_equal(ag_gtoken_finish(g, e, CURLE_OK, 400, T0 + 6 * SEC), -EACCES);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.rc, -EACCES);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.rc, -EACCES);
    /* a queued itself for the refresh it began: woken by that one only. */
    assert_int_equal(ag_gtoken_waiting(g), 1);
    e = ag_gtoken_inflight(g);
    assert_non_null(e);
    assert_int_equal(s_on_write((char *)ok, 1, strlen(ok), g), strlen(ok));
    assert_int_equal(ag_gtoken_finish(g, e, CURLE_OK, 200, T0 + 11 * SEC), 0);
    assert_int_equal(a.calls, 2);
    assert_int_equal(a.rc, 0);
    assert_int_equal(c.calls, 1);

    /* Destroyed with a refresh in flight and waiters queued: they are dropped, not called. */
    b = (t_req_t){.g = g};
    assert_int_equal(ag_gtoken_begin(g, T0 + 100 * SEC, T_WALL, &e), 0);
    assert_int_equal(ag_gtoken_wait(g, &b.w, t_woken, &b), 0);
    ag_gtoken_destroy(&g);
    assert_int_equal(b.calls, 0);
    assert_null(b.w.next);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_ok),
        cmocka_unit_test(test_load_mode_warning),
        cmocka_unit_test(test_load_bad),
        cmocka_unit_test(test_load_file_errors),
        cmocka_unit_test(test_jwt),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_margin),
        cmocka_unit_test(test_timing_fresh),
        cmocka_unit_test(test_timing_short),
        cmocka_unit_test(test_invalidate),
        cmocka_unit_test(test_failure_backoff),
        cmocka_unit_test(test_answer_limit),
        cmocka_unit_test(test_https_only),
        cmocka_unit_test(test_auth_header),
        cmocka_unit_test(test_waiters),
    };
    return cmocka_run_group_tests(tests, t_setup, t_teardown);
}
