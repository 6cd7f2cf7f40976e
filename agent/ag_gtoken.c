/* ag_gtoken: Google service-account tokens (JWT bearer grant) and their cache. */
#include "ag_gtoken.h"
#include "backoff.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <sodium.h>

#define S_GRANT "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="
#define S_MIN_RSA_BITS 2048 /* Google issues 2048-bit keys; shorter ones are refused */
#define S_QUOTE_MAX 120     /* longest text quoted from a file or an answer */

struct ag_gtoken {
    char *client_email;              /* iss */
    char *key_id;                    /* kid */
    EVP_PKEY *key;                   /* the RSA private key */
    char warning[AG_GTOKEN_ERR_MAX]; /* load warning, "" if none */
    /* the cache */
    char *token;          /* current access token (wiped when dropped), or NULL */
    uint64_t gen;         /* its generation, 1 for the first token */
    uint64_t obtained_us; /* when it arrived */
    bool replaces_refused; /* it was fetched because the vendor refused the one before */
    bool refused_pending;  /* the vendor refused the last token: the next one replaces it */
    uint64_t expiry_us;   /* when it stops being usable */
    uint64_t refresh_us;  /* when a refresh is due (expiry - margin) */
    /* failures */
    int failed_rc;                 /* the last refresh's negative errno, 0 if it succeeded */
    char error[AG_GTOKEN_ERR_MAX]; /* its text, "" if it succeeded */
    uint64_t retry_us;             /* earliest next refresh after a failure */
    backoff_t backoff;             /* failure count and delays */
    uint64_t (*rnd)(uint64_t);     /* backoff's dice: NULL for the secure ones; tests fix them */
    /* the refresh in flight */
    CURL *easy;                     /* the transfer, NULL when none */
    uint64_t started_us;            /* when it began (the token's lifetime counts from here) */
    char *form;                     /* its body (holds the assertion; wiped) */
    size_t form_len;                /* its length */
    struct curl_slist *hdrs;        /* its request headers */
    char *answer;                   /* the answer gathered, AG_GTOKEN_MAX_ANSWER + 1 bytes */
    size_t answer_len;              /* bytes in it */
    bool answer_too_big;            /* the write callback refused more */
    char curl_err[CURL_ERROR_SIZE]; /* CURLOPT_ERRORBUFFER */
    /* the waiters */
    ag_gtoken_waiter_t queue; /* sentinel of the circular queue (cb NULL) */
};

/* Copies at most S_QUOTE_MAX bytes of s (n bytes) into out, control and non-ASCII bytes as '?',
 * so a quoted text from a file or the network cannot break a log line. */
static void s_quote(char *out, size_t outlen, const char *s, size_t n)
{
    if (outlen == 0)
        return;
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < outlen && i < S_QUOTE_MAX; i++) {
        unsigned char c = (unsigned char)s[i];
        out[k++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    out[k] = '\0';
}

/* Frees a secret string after wiping it. */
static void s_free_secret(char **p)
{
    if (*p) {
        sodium_memzero(*p, strlen(*p));
        free(*p);
        *p = NULL;
    }
}

/* ---- the waiter queue (circular, with a sentinel: removal needs no list head) ---- */

/* Unlinks w from whatever queue holds it. */
static void s_unlink(ag_gtoken_waiter_t *w)
{
    w->prev->next = w->next;
    w->next->prev = w->prev;
    w->next = w->prev = NULL;
}

/* Calls every waiter once with rc. The queue is first moved to a local sentinel: a callback
 * may queue itself again (for the next refresh) or cancel another waiter of this round. */
static void s_wake(ag_gtoken_t *g, int rc)
{
    ag_gtoken_waiter_t *q = &g->queue;
    if (q->next == q)
        return;
    ag_gtoken_waiter_t local;
    local.next = q->next;
    local.prev = q->prev;
    local.next->prev = &local;
    local.prev->next = &local;
    q->next = q->prev = q;
    while (local.next != &local) {
        ag_gtoken_waiter_t *w = local.next;
        s_unlink(w);
        w->cb(w, rc, w->arg);
    }
}

int ag_gtoken_wait(ag_gtoken_t *g, ag_gtoken_waiter_t *w, ag_gtoken_wake_cb cb, void *arg)
{
    if (!g->easy)
        return -EINVAL;
    if (w->next)
        return -EALREADY;
    w->cb = cb;
    w->arg = arg;
    w->prev = g->queue.prev;
    w->next = &g->queue;
    g->queue.prev->next = w;
    g->queue.prev = w;
    return 0;
}

void ag_gtoken_cancel(ag_gtoken_waiter_t *w)
{
    if (w && w->next)
        s_unlink(w);
}

size_t ag_gtoken_waiting(const ag_gtoken_t *g)
{
    size_t n = 0;
    for (const ag_gtoken_waiter_t *w = g->queue.next; w != &g->queue; w = w->next)
        n++;
    return n;
}

/* ---- loading ---- */

/* PEM pass phrase callback: there is none (without it OpenSSL would prompt on the terminal). */
static int s_no_pass(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* Reads the whole file (at most AG_GTOKEN_MAX_FILE bytes) into *buf, NUL-terminated, and sets
 * the warning for loose permissions. 0 or a negative errno with err. */
static int s_read_file(ag_gtoken_t *g, const char *path, char **buf, size_t *len, char *err,
                       size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open: %s", strerror(e));
        return -e;
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot stat: %s", strerror(-rc));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        snprintf(err, errlen, "not a regular file");
        goto out;
    }
    if (st.st_size > AG_GTOKEN_MAX_FILE) {
        rc = -EFBIG;
        snprintf(err, errlen, "larger than %d bytes", AG_GTOKEN_MAX_FILE);
        goto out;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO))
        snprintf(g->warning, sizeof g->warning,
                 "service-account file has mode %04o: group or others may read the private key "
                 "(chmod 600 recommended)",
                 (unsigned)(st.st_mode & 07777));
    /* One byte more than allowed, to notice a file that grew since fstat. */
    char *b = malloc(AG_GTOKEN_MAX_FILE + 2);
    if (!b) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, b + n, AG_GTOKEN_MAX_FILE + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            snprintf(err, errlen, "cannot read: %s", strerror(-rc));
            break;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > AG_GTOKEN_MAX_FILE) {
            rc = -EFBIG;
            snprintf(err, errlen, "larger than %d bytes", AG_GTOKEN_MAX_FILE);
            break;
        }
    }
    if (rc != 0) {
        sodium_memzero(b, n);
        free(b);
        goto out;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
out:
    close(fd);
    return rc;
}

/* Wipes the string member name of obj (if there is one) in place: jansson frees without
 * wiping. Its text is jansson's own heap copy, not a literal, so writing to it is safe. */
static void s_wipe_member(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);
    if (json_is_string(v))
        sodium_memzero((char *)json_string_value(v), json_string_length(v));
}

/* The string member name of obj, or NULL with err when it is missing, not a string or empty. */
static const char *s_field(json_t *obj, const char *name, char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, name);
    if (!v) {
        snprintf(err, errlen, "%s: missing", name);
        return NULL;
    }
    if (!json_is_string(v)) {
        snprintf(err, errlen, "%s: not a string", name);
        return NULL;
    }
    if (json_string_length(v) == 0) {
        snprintf(err, errlen, "%s: empty", name);
        return NULL;
    }
    return json_string_value(v);
}

/* True when s (n bytes) is only visible ASCII. */
static bool s_visible(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return false;
    return true;
}

/* Parses the PEM in pem into g->key, checking it is RSA of at least S_MIN_RSA_BITS. Error texts
 * never quote the PEM. 0 or -EINVAL / -ENOMEM with err. */
static int s_load_key(ag_gtoken_t *g, const char *pem, size_t len, char *err, size_t errlen)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    EVP_PKEY *k = PEM_read_bio_PrivateKey(bio, NULL, s_no_pass, NULL);
    BIO_free(bio);
    ERR_clear_error(); /* leave OpenSSL's error queue clean for other code */
    if (!k) {
        snprintf(err, errlen, "private_key: not an unencrypted PEM private key");
        return -EINVAL;
    }
    if (!EVP_PKEY_is_a(k, "RSA")) {
        snprintf(err, errlen, "private_key: not an RSA key (%s)", EVP_PKEY_get0_type_name(k));
        EVP_PKEY_free(k);
        return -EINVAL;
    }
    int bits = EVP_PKEY_get_bits(k);
    if (bits < S_MIN_RSA_BITS) {
        snprintf(err, errlen, "private_key: RSA key of %d bits (at least %d)", bits,
                 S_MIN_RSA_BITS);
        EVP_PKEY_free(k);
        return -EINVAL;
    }
    g->key = k;
    return 0;
}

/* Fills g from the service-account JSON text (len bytes). 0 or -EINVAL / -ENOMEM with err. */
static int s_from_json(ag_gtoken_t *g, const char *text, size_t len, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        /* Position only: je.text quotes the input, which may be a piece of the key. */
        snprintf(err, errlen, "not valid JSON (line %d, column %d)", je.line, je.column);
        return -EINVAL;
    }
    int rc = -EINVAL;
    if (!json_is_object(root)) {
        snprintf(err, errlen, "not a JSON object");
        goto out;
    }
    const char *type = s_field(root, "type", err, errlen);
    if (!type)
        goto out;
    if (strcmp(type, "service_account") != 0) {
        char q[S_QUOTE_MAX + 1];
        s_quote(q, sizeof q, type, strlen(type));
        snprintf(err, errlen, "type: \"%s\", not \"service_account\"", q);
        goto out;
    }
    /* The endpoint lock: no other token endpoint, however close. */
    json_t *uri = json_object_get(root, "token_uri");
    if (uri && (!json_is_string(uri) || strcmp(json_string_value(uri), AG_GTOKEN_TOKEN_URI))) {
        char q[S_QUOTE_MAX + 1] = "(not a string)";
        if (json_is_string(uri))
            s_quote(q, sizeof q, json_string_value(uri), json_string_length(uri));
        snprintf(err, errlen,
                 "token_uri: \"%s\" is not %s (the agent calls only the official "
                 "endpoint)",
                 q, AG_GTOKEN_TOKEN_URI);
        goto out;
    }
    const char *email = s_field(root, "client_email", err, errlen);
    if (!email)
        goto out;
    if (!s_visible(email, strlen(email)) || !strchr(email, '@') || strlen(email) > 320) {
        snprintf(err, errlen, "client_email: not an e-mail address");
        goto out;
    }
    const char *kid = s_field(root, "private_key_id", err, errlen);
    if (!kid)
        goto out;
    if (!s_visible(kid, strlen(kid)) || strlen(kid) > 256) {
        snprintf(err, errlen,
                 "private_key_id: holds a blank or a control character, or is "
                 "over 256 bytes");
        goto out;
    }
    const char *pem = s_field(root, "private_key", err, errlen);
    if (!pem)
        goto out;
    rc = s_load_key(g, pem, strlen(pem), err, errlen);
    if (rc != 0)
        goto out;
    g->client_email = strdup(email);
    g->key_id = strdup(kid);
    if (!g->client_email || !g->key_id) {
        snprintf(err, errlen, "out of memory");
        rc = -ENOMEM;
        goto out;
    }
    rc = 0;
out:
    s_wipe_member(root, "private_key");
    json_decref(root);
    return rc;
}

/* A new, empty object. NULL when out of memory. */
static ag_gtoken_t *s_new(void)
{
    ag_gtoken_t *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->queue.next = g->queue.prev = &g->queue;
    backoff_init(&g->backoff, AG_GTOKEN_BACKOFF_BASE_MS, AG_GTOKEN_BACKOFF_CAP_MS,
                 AG_GTOKEN_YOUNG_MS);
    return g;
}

int ag_gtoken_load(const char *path, ag_gtoken_t **out, char *err, size_t errlen)
{
    *out = NULL;
    ag_gtoken_t *g = s_new();
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    char *text = NULL;
    size_t len = 0;
    int rc = s_read_file(g, path, &text, &len, err, errlen);
    if (rc == 0) {
        rc = s_from_json(g, text, len, err, errlen);
        sodium_memzero(text, len);
        free(text);
    }
    if (rc != 0) {
        ag_gtoken_destroy(&g);
        return rc;
    }
    *out = g;
    return 0;
}

/* Drops the refresh in flight: its handle, headers, form and answer (wiped). */
static void s_drop_flight(ag_gtoken_t *g)
{
    if (g->easy)
        curl_easy_cleanup(g->easy);
    g->easy = NULL;
    curl_slist_free_all(g->hdrs);
    g->hdrs = NULL;
    if (g->form) {
        sodium_memzero(g->form, g->form_len);
        free(g->form);
    }
    g->form = NULL;
    g->form_len = 0;
    if (g->answer) {
        sodium_memzero(g->answer, g->answer_len);
        free(g->answer);
    }
    g->answer = NULL;
    g->answer_len = 0;
    g->answer_too_big = false;
}

void ag_gtoken_destroy(ag_gtoken_t **p)
{
    if (!p || !*p)
        return;
    ag_gtoken_t *g = *p;
    s_drop_flight(g);
    /* Waiters are the caller's: unlink them, do not call them. */
    if (g->queue.next)
        while (g->queue.next != &g->queue)
            s_unlink(g->queue.next);
    s_free_secret(&g->token);
    EVP_PKEY_free(g->key);
    free(g->client_email);
    free(g->key_id);
    free(g);
    *p = NULL;
}

const char *ag_gtoken_warning(const ag_gtoken_t *g)
{
    return g->warning[0] ? g->warning : NULL;
}

const char *ag_gtoken_client_email(const ag_gtoken_t *g)
{
    return g->client_email;
}

/* ---- the JWT ---- */

/* base64url without padding of bin (n bytes), malloc'd; NULL when out of memory. */
static char *s_b64url(const void *bin, size_t n)
{
    size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *out = malloc(cap);
    if (out)
        sodium_bin2base64(out, cap, bin, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return out;
}

/* base64url of the compact JSON of v (taken), malloc'd; NULL when out of memory. */
static char *s_b64url_json(json_t *v)
{
    if (!v)
        return NULL;
    char *text = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(v);
    if (!text)
        return NULL;
    char *out = s_b64url(text, strlen(text));
    free(text);
    return out;
}

/* RS256 (RSASSA-PKCS1-v1_5 with SHA-256) of msg with key; *sig malloc'd. 0, -ENOMEM, -EIO. */
static int s_sign(EVP_PKEY *key, const char *msg, size_t len, unsigned char **sig, size_t *siglen)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return -ENOMEM;
    int rc = -EIO;
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char *buf = NULL;
    size_t n = 0;
    if (EVP_DigestSignInit(ctx, &pctx, EVP_sha256(), NULL, key) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0 ||
        EVP_DigestSign(ctx, NULL, &n, (const unsigned char *)msg, len) != 1)
        goto out;
    buf = malloc(n);
    if (!buf) {
        rc = -ENOMEM;
        goto out;
    }
    if (EVP_DigestSign(ctx, buf, &n, (const unsigned char *)msg, len) != 1)
        goto out;
    *sig = buf;
    *siglen = n;
    buf = NULL;
    rc = 0;
out:
    free(buf);
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return rc;
}

/* The JWT after prefix (a literal prepended, may be ""), malloc'd in *out with its length. */
static int s_jwt(const ag_gtoken_t *g, time_t now, const char *prefix, char **out, size_t *len)
{
    char *head =
        s_b64url_json(json_pack("{s:s, s:s, s:s}", "alg", "RS256", "typ", "JWT", "kid", g->key_id));
    char *claims =
        s_b64url_json(json_pack("{s:s, s:s, s:s, s:I, s:I}", "iss", g->client_email, "scope",
                                AG_GTOKEN_SCOPE, "aud", AG_GTOKEN_TOKEN_URI, "iat", (json_int_t)now,
                                "exp", (json_int_t)now + AG_GTOKEN_JWT_LIFETIME));
    int rc = -ENOMEM;
    char *input = NULL, *sig64 = NULL, *res = NULL;
    unsigned char *sig = NULL;
    size_t siglen = 0;
    if (!head || !claims)
        goto out;
    size_t hl = strlen(head), cl = strlen(claims);
    input = malloc(hl + 1 + cl + 1);
    if (!input)
        goto out;
    memcpy(input, head, hl);
    input[hl] = '.';
    memcpy(input + hl + 1, claims, cl + 1);
    rc = s_sign(g->key, input, hl + 1 + cl, &sig, &siglen);
    if (rc != 0)
        goto out;
    rc = -ENOMEM;
    sig64 = s_b64url(sig, siglen);
    if (!sig64)
        goto out;
    size_t pl = strlen(prefix), il = hl + 1 + cl, sl = strlen(sig64);
    res = malloc(pl + il + 1 + sl + 1);
    if (!res)
        goto out;
    memcpy(res, prefix, pl);
    memcpy(res + pl, input, il);
    res[pl + il] = '.';
    memcpy(res + pl + il + 1, sig64, sl + 1);
    *out = res;
    if (len)
        *len = pl + il + 1 + sl;
    rc = 0;
out:
    free(head);
    free(claims);
    free(input);
    free(sig);
    s_free_secret(&sig64);
    return rc;
}

int ag_gtoken_jwt(const ag_gtoken_t *g, time_t now, char **out)
{
    return s_jwt(g, now, "", out, NULL);
}

int ag_gtoken_form(const ag_gtoken_t *g, time_t now, char **out, size_t *len)
{
    /* The JWT's alphabet (base64url and '.') is all unreserved: no form encoding needed. */
    return s_jwt(g, now, S_GRANT, out, len);
}

/* ---- the answer ---- */

int64_t ag_gtoken_margin_s(int64_t expires_in)
{
    int64_t m = expires_in / 4;
    if (m < 0)
        m = 0;
    return m < AG_GTOKEN_MAX_MARGIN ? m : AG_GTOKEN_MAX_MARGIN;
}

/* Google's refusal: {"error":"code","error_description":"..."} (OAuth) or
 * {"error":{"code":N,"message":"...","status":"..."}} (its API front end). True with err set
 * when root has either shape. */
static bool s_google_error(json_t *root, long status, char *err, size_t errlen)
{
    json_t *e = json_object_get(root, "error");
    char code[S_QUOTE_MAX + 1] = "", msg[S_QUOTE_MAX + 1] = "";
    if (json_is_string(e)) {
        s_quote(code, sizeof code, json_string_value(e), json_string_length(e));
        json_t *d = json_object_get(root, "error_description");
        if (json_is_string(d))
            s_quote(msg, sizeof msg, json_string_value(d), json_string_length(d));
    } else if (json_is_object(e)) {
        json_t *s = json_object_get(e, "status");
        json_t *m = json_object_get(e, "message");
        if (json_is_string(s))
            s_quote(code, sizeof code, json_string_value(s), json_string_length(s));
        if (json_is_string(m))
            s_quote(msg, sizeof msg, json_string_value(m), json_string_length(m));
        if (!code[0] && !msg[0])
            return false;
    } else {
        return false;
    }
    snprintf(err, errlen, "Google token endpoint answered %ld: %s%s%s", status,
             code[0] ? code : "error", msg[0] ? ": " : "", msg);
    return true;
}

int ag_gtoken_parse(long http_status, const char *body, size_t len, char **token,
                    int64_t *expires_in, char *err, size_t errlen)
{
    *token = NULL;
    *expires_in = 0;
    json_t *root = len ? json_loadb(body, len, 0, NULL) : NULL;
    int rc;
    if (!json_is_object(root)) {
        if (http_status != 200)
            snprintf(err, errlen, "Google token endpoint answered %ld (%s)", http_status,
                     len ? "not a JSON object" : "empty");
        else
            snprintf(err, errlen, "Google token endpoint answered 200 with %s",
                     len ? "no JSON object" : "an empty body");
        rc = http_status != 200 ? -EPROTO : -EBADMSG;
        goto out;
    }
    if (s_google_error(root, http_status, err, errlen)) {
        rc = -EACCES;
        goto out;
    }
    if (http_status != 200) {
        snprintf(err, errlen, "Google token endpoint answered %ld", http_status);
        rc = -EPROTO;
        goto out;
    }
    rc = -EBADMSG;
    json_t *tok = json_object_get(root, "access_token");
    json_t *exp = json_object_get(root, "expires_in");
    json_t *typ = json_object_get(root, "token_type");
    if (!json_is_string(tok) || json_string_length(tok) == 0) {
        snprintf(err, errlen, "token answer: access_token missing");
        goto out;
    }
    if (json_string_length(tok) > AG_GTOKEN_MAX_TOKEN ||
        !s_visible(json_string_value(tok), json_string_length(tok))) {
        /* It goes into a header line: no blanks, no CR/LF, nothing a header could not hold. */
        snprintf(err, errlen,
                 "token answer: access_token is over %d bytes or holds a blank "
                 "or a control character",
                 AG_GTOKEN_MAX_TOKEN);
        goto out;
    }
    json_int_t secs;
    if (json_is_integer(exp)) {
        secs = json_integer_value(exp);
    } else if (json_is_real(exp) && json_real_value(exp) >= 1 && json_real_value(exp) < 1e9) {
        secs = (json_int_t)json_real_value(exp);
    } else {
        snprintf(err, errlen, "token answer: expires_in missing or not a number");
        goto out;
    }
    if (secs < 1) {
        snprintf(err, errlen, "token answer: expires_in %lld", (long long)secs);
        goto out;
    }
    if (!json_is_string(typ) || strcasecmp(json_string_value(typ), "Bearer") != 0) {
        snprintf(err, errlen, "token answer: token_type is not \"Bearer\"");
        goto out;
    }
    *token = strdup(json_string_value(tok));
    if (!*token) {
        snprintf(err, errlen, "out of memory");
        rc = -ENOMEM;
        goto out;
    }
    *expires_in = secs < AG_GTOKEN_MAX_EXPIRES_IN ? (int64_t)secs : AG_GTOKEN_MAX_EXPIRES_IN;
    rc = 0;
out:
    s_wipe_member(root, "access_token"); /* the answer's copy of the token */
    json_decref(root);
    return rc;
}

/* ---- the cache ---- */

/* True when g holds a token usable at now_us. */
static bool s_usable(const ag_gtoken_t *g, uint64_t now_us)
{
    return g->token && now_us < g->expiry_us;
}

ag_gtoken_state_t ag_gtoken_state(const ag_gtoken_t *g, uint64_t now_us)
{
    if (s_usable(g, now_us))
        return AG_GTOKEN_READY;
    if (g->easy)
        return AG_GTOKEN_WAIT;
    if (g->failed_rc && now_us < g->retry_us)
        return AG_GTOKEN_FAILED;
    return AG_GTOKEN_WAIT;
}

bool ag_gtoken_refresh_due(const ag_gtoken_t *g, uint64_t now_us)
{
    if (g->easy)
        return false;
    if (g->failed_rc)
        return now_us >= g->retry_us;
    return !g->token || now_us >= g->refresh_us;
}

const char *ag_gtoken_token(const ag_gtoken_t *g, uint64_t now_us, uint64_t *gen)
{
    if (!s_usable(g, now_us))
        return NULL;
    if (gen)
        *gen = g->gen;
    return g->token;
}

int ag_gtoken_auth_header(const ag_gtoken_t *g, uint64_t now_us, char *out, size_t outlen,
                          uint64_t *gen)
{
    const char *t = ag_gtoken_token(g, now_us, gen);
    if (!t)
        return -EAGAIN;
    int n = snprintf(out, outlen, "Authorization: Bearer %s", t);
    if (n < 0 || (size_t)n >= outlen) {
        sodium_memzero(out, outlen);
        return -ENOSPC;
    }
    return 0;
}

const char *ag_gtoken_error(const ag_gtoken_t *g)
{
    return g->error;
}

/* Records a failed refresh at now_us: its error, and the earliest next one (1 s plus the
 * backoff delay, so a failure is never retried at once). */
static void s_fail(ag_gtoken_t *g, int rc, uint64_t now_us)
{
    g->failed_rc = rc;
    int64_t ms = AG_GTOKEN_RETRY_MIN_MS + backoff_next_ms(&g->backoff, g->rnd);
    g->retry_us = now_us + (uint64_t)ms * 1000;
}

bool ag_gtoken_invalidate(ag_gtoken_t *g, uint64_t gen, uint64_t now_us)
{
    if (!g->token || gen != g->gen)
        return false;
    s_free_secret(&g->token);
    /* Resets the failure count if the token served long enough. A young token refused is
     * fetched again at once (the vendor may have revoked it); refused again while young, it
     * counts as a failure of its own, so a vendor that takes no token costs no refresh per
     * request. */
    backoff_disconnected(&g->backoff, now_us);
    bool young = now_us - g->obtained_us < (uint64_t)AG_GTOKEN_YOUNG_MS * 1000;
    bool again = g->replaces_refused;
    g->refused_pending = true;
    if (young && again) {
        snprintf(g->error, sizeof g->error,
                 "the vendor refused an access token %llu ms old "
                 "(HTTP 401)",
                 (unsigned long long)((now_us - g->obtained_us) / 1000));
        s_fail(g, -EACCES, now_us);
    }
    return true;
}

void ag_gtoken_accepted(ag_gtoken_t *g, uint64_t gen)
{
    if (g->token && gen == g->gen)
        g->replaces_refused = false;
}

/* CURLOPT_WRITEFUNCTION: gathers the answer, at most AG_GTOKEN_MAX_ANSWER bytes; returning
 * less than given makes curl fail the transfer with CURLE_WRITE_ERROR. */
static size_t s_on_write(char *data, size_t size, size_t nmemb, void *userp)
{
    ag_gtoken_t *g = userp;
    size_t n = size * nmemb;
    if (n > AG_GTOKEN_MAX_ANSWER - g->answer_len) {
        g->answer_too_big = true;
        return 0;
    }
    memcpy(g->answer + g->answer_len, data, n);
    g->answer_len += n;
    return n;
}

int ag_gtoken_begin(ag_gtoken_t *g, uint64_t now_us, time_t now_wall, CURL **easy)
{
    *easy = NULL;
    if (g->easy)
        return -EALREADY;
    /* A new cycle: the current token (if any) has served; the failure count resets if it
     * served long enough. */
    backoff_disconnected(&g->backoff, now_us);
    const char *stage = "sign", *why = "out of memory";
    int rc = ag_gtoken_form(g, now_wall, &g->form, &g->form_len);
    if (rc != 0) {
        if (rc != -ENOMEM)
            why = "OpenSSL failed";
        goto fail;
    }
    stage = "start";
    rc = -ENOMEM;
    g->answer = malloc(AG_GTOKEN_MAX_ANSWER + 1);
    if (!g->answer)
        goto fail;
    static const char *const hdrs[] = {"Content-Type: application/x-www-form-urlencoded",
                                       "Accept: application/json", "Expect:", NULL};
    for (size_t i = 0; hdrs[i]; i++) {
        struct curl_slist *l = curl_slist_append(g->hdrs, hdrs[i]);
        if (!l)
            goto fail;
        g->hdrs = l;
    }
    CURL *e = curl_easy_init();
    if (!e)
        goto fail;
    g->easy = e;
    g->curl_err[0] = '\0';
    if (curl_easy_setopt(e, CURLOPT_URL, AG_GTOKEN_TOKEN_URI) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https") != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "https") != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)AG_GTOKEN_TIMEOUT_MS) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_POST, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)g->form_len) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, g->form) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, g->hdrs) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, s_on_write) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEDATA, g) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, g->curl_err) != CURLE_OK) {
        why = "libcurl refused an option";
        rc = -EIO;
        goto fail;
    }
    g->started_us = now_us;
    g->answer_len = 0;
    g->answer_too_big = false;
    *easy = e;
    return 0;
fail:
    snprintf(g->error, sizeof g->error, "cannot %s the token request: %s", stage, why);
    s_drop_flight(g);
    s_fail(g, rc, now_us);
    return rc;
}

CURL *ag_gtoken_inflight(const ag_gtoken_t *g)
{
    return g->easy;
}

/* Stores the outcome of the exchange that began at g->started_us and ended at now_us (result,
 * status, the answer in body) in the cache. 0 or the failure's negative errno. */
static int s_complete(ag_gtoken_t *g, CURLcode result, long status, const char *body, size_t len,
                      uint64_t now_us)
{
    char *token = NULL;
    int64_t secs = 0;
    int rc;
    if (g->answer_too_big) {
        rc = -EMSGSIZE;
        snprintf(g->error, sizeof g->error, "Google token endpoint: answer over %d bytes",
                 AG_GTOKEN_MAX_ANSWER);
    } else if (result != CURLE_OK) {
        rc = -EIO;
        char q[S_QUOTE_MAX + 1];
        const char *why = g->curl_err[0] ? g->curl_err : curl_easy_strerror(result);
        s_quote(q, sizeof q, why, strlen(why));
        snprintf(g->error, sizeof g->error, "token request failed: %s", q);
    } else {
        rc = ag_gtoken_parse(status, body, len, &token, &secs, g->error, sizeof g->error);
    }
    uint64_t expiry = g->started_us + (uint64_t)secs * 1000000;
    if (rc == 0 && expiry <= now_us) {
        rc = -ETIMEDOUT;
        snprintf(g->error, sizeof g->error,
                 "Google token endpoint: the token (expires_in %lld "
                 "s) expired before the answer arrived",
                 (long long)secs);
        s_free_secret(&token);
    }
    if (rc != 0) {
        s_fail(g, rc, now_us);
        return rc;
    }
    s_free_secret(&g->token);
    g->token = token;
    g->gen++;
    g->obtained_us = now_us;
    g->replaces_refused = g->refused_pending;
    g->refused_pending = false;
    g->expiry_us = expiry;
    g->refresh_us = expiry - (uint64_t)ag_gtoken_margin_s(secs) * 1000000;
    g->failed_rc = 0;
    g->error[0] = '\0';
    backoff_connected(&g->backoff, now_us);
    return 0;
}

int ag_gtoken_finish(ag_gtoken_t *g, CURL *easy, CURLcode result, long http_status, uint64_t now_us)
{
    if (!easy || easy != g->easy)
        return -EINVAL;
    int rc = s_complete(g, result, http_status, g->answer, g->answer_len, now_us);
    s_drop_flight(g);
    s_wake(g, rc);
    return rc;
}
