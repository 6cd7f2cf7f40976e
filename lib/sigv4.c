/* sigv4: AWS Signature Version 4 header signing with OpenSSL 3 (EVP digests, EVP_Q_mac). */
#include "sigv4.h"
#include "pct.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define SIGV4_ALGO "AWS4-HMAC-SHA256"

/* A growable text with a hard maximum (SIGV4_MAX_TEXT); err sticks once set. */
typedef struct {
    char *data; /* NUL-terminated when len > 0 */
    size_t len; /* bytes used */
    size_t cap; /* bytes allocated */
    int err;    /* first error, 0 if none */
} s_buf_t;

/* One header to sign, before its name is lowercased and its value trimmed. */
typedef struct {
    const char *name;  /* as given (compared case-insensitively) */
    const char *value; /* raw value */
    size_t order;      /* position in the request, keeps repeated names in order */
} s_hdr_t;

/* Ensures room for n more bytes plus a NUL. */
static int s_buf_reserve(s_buf_t *b, size_t n)
{
    if (b->err)
        return b->err;
    if (n > SIGV4_MAX_TEXT || b->len + n + 1 > SIGV4_MAX_TEXT)
        return b->err = -E2BIG;
    if (b->len + n + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
        cap *= 2;
    if (cap > SIGV4_MAX_TEXT)
        cap = SIGV4_MAX_TEXT;
    char *d = realloc(b->data, cap);
    if (!d)
        return b->err = -ENOMEM;
    b->data = d;
    b->cap = cap;
    return 0;
}

/* Appends n bytes. */
static void s_buf_add(s_buf_t *b, const char *s, size_t n)
{
    if (s_buf_reserve(b, n) < 0)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

/* Appends a NUL-terminated string. */
static void s_buf_str(s_buf_t *b, const char *s)
{
    s_buf_add(b, s, strlen(s));
}

/* Appends one byte. */
static void s_buf_ch(s_buf_t *b, char c)
{
    s_buf_add(b, &c, 1);
}

/* Frees a buffer, wiping it first (it may hold a token). */
static void s_buf_free(s_buf_t *b)
{
    if (b->data)
        OPENSSL_cleanse(b->data, b->cap);
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* Hands the buffer's text over (an empty string if nothing was written); NULL on error. */
static char *s_buf_take(s_buf_t *b)
{
    if (b->err || s_buf_reserve(b, 0) < 0)
        return NULL;
    b->data[b->len] = '\0';
    char *d = b->data;
    b->data = NULL;
    b->len = b->cap = 0;
    return d;
}

/* RFC 3986 unreserved: A-Z a-z 0-9 - _ . ~ */
static bool s_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

/* Appends in[0..len) URI-encoded; '/' kept when keep_slash; a valid %XX kept as it is when
 * keep_escapes (the input is already encoded, S3 style), with its hex digits uppercased. */
static void s_encode(s_buf_t *b, const char *in, size_t len, bool keep_slash, bool keep_escapes)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (s_unreserved(c) || (keep_slash && c == '/')) {
            s_buf_ch(b, (char)c);
        } else if (keep_escapes && c == '%' && i + 2 < len &&
                   pct_hexval((unsigned char)in[i + 1]) >= 0 &&
                   pct_hexval((unsigned char)in[i + 2]) >= 0) {
            char esc[3] = {'%', hex[pct_hexval((unsigned char)in[i + 1])],
                           hex[pct_hexval((unsigned char)in[i + 2])]};
            s_buf_add(b, esc, 3);
            i += 2;
        } else {
            char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
            s_buf_add(b, esc, 3);
        }
    }
}

/* Appends in[0..len) percent-decoded (an invalid escape stays literal). */
static void s_decode(s_buf_t *b, const char *in, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        int hi, lo;
        if (in[i] == '%' && i + 2 < len && (hi = pct_hexval((unsigned char)in[i + 1])) >= 0 &&
            (lo = pct_hexval((unsigned char)in[i + 2])) >= 0) {
            s_buf_ch(b, (char)(hi << 4 | lo));
            i += 2;
        } else {
            s_buf_ch(b, in[i]);
        }
    }
}

/* Hands a built text to the caller: copied into out (cap bytes, NUL-terminated), b freed.
 * Its length, b's error, or -E2BIG. */
static int s_buf_out(s_buf_t *b, char *out, size_t cap)
{
    int rc = b->err;
    if (!rc && b->len + 1 > cap)
        rc = -E2BIG;
    if (!rc) {
        if (b->len)
            memcpy(out, b->data, b->len);
        out[b->len] = '\0';
        rc = (int)b->len;
    }
    s_buf_free(b);
    return rc;
}

int sigv4_uri_encode(const char *in, size_t len, int keep_slash, char *out, size_t cap)
{
    s_buf_t b = {0};
    s_encode(&b, in, len, keep_slash, false);
    return s_buf_out(&b, out, cap);
}

/* True for the whitespace that a header value may carry (folded lines included). */
static bool s_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Appends a header value trimmed, each inner whitespace run collapsed to one space. */
static void s_trim(s_buf_t *b, const char *v)
{
    bool pending = false, any = false;
    for (; *v; v++) {
        if (s_space(*v)) {
            pending = any;
            continue;
        }
        if (pending)
            s_buf_ch(b, ' ');
        pending = false;
        any = true;
        s_buf_ch(b, *v);
    }
}

int sigv4_trim_value(const char *value, char *out, size_t cap)
{
    s_buf_t b = {0};
    s_trim(&b, value);
    return s_buf_out(&b, out, cap);
}

/* One path segment: a slice of the caller's path. */
typedef struct {
    const char *p; /* start */
    size_t n;      /* length */
} s_seg_t;

/* Appends the canonical URI. With normalize, "." / ".." / empty segments are resolved as in
 * RFC 3986 (a trailing slash is kept) and each segment is encoded, '%' included, which is the
 * "double encoding" every service but S3 expects; without, the path is kept as it is and only
 * bytes that are not yet encoded get encoded (S3). */
static int s_canonical_path(s_buf_t *b, const char *path, bool normalize)
{
    size_t len = strlen(path);
    if (len == 0) {
        s_buf_ch(b, '/');
        return 0;
    }
    if (path[0] != '/' || len > SIGV4_MAX_TEXT)
        return -EINVAL;
    if (!normalize) {
        s_encode(b, path, len, true, true);
        return 0;
    }
    s_seg_t *segs = calloc(len / 2 + 2, sizeof(*segs));
    if (!segs)
        return -ENOMEM;
    size_t n = 0;
    bool trailing = false;
    const char *p = path + 1, *end = path + len;
    for (;;) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *stop = slash ? slash : end;
        size_t sl = (size_t)(stop - p);
        /* The last segment decides the trailing slash: "a/", "a/." and "a/.." have one. */
        trailing = sl == 0;
        if (sl == 2 && p[0] == '.' && p[1] == '.') {
            if (n > 0)
                n--;
            trailing = true;
        } else if (sl == 1 && p[0] == '.') {
            trailing = true;
        } else if (sl > 0) {
            segs[n].p = p;
            segs[n].n = sl;
            n++;
        }
        if (!slash)
            break;
        p = slash + 1;
    }
    s_buf_ch(b, '/');
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            s_buf_ch(b, '/');
        s_encode(b, segs[i].p, segs[i].n, false, false);
    }
    if (n > 0 && trailing)
        s_buf_ch(b, '/');
    free(segs);
    return 0;
}

/* One query parameter, encoded, pointing into a buffer that no longer grows. */
typedef struct {
    const char *name;  /* encoded name, NUL-terminated */
    const char *value; /* encoded value, NUL-terminated */
} s_param_t;

/* Orders parameters by encoded name, then encoded value (bytewise). */
static int s_param_cmp(const void *a, const void *b)
{
    const s_param_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

/* Appends the canonical query: each parameter decoded then re-encoded, sorted, "=" always. */
static int s_canonical_query(s_buf_t *b, const char *query)
{
    if (!query || !*query)
        return 0;
    size_t len = strlen(query);
    if (len > SIGV4_MAX_TEXT)
        return -E2BIG;
    size_t count = 1;
    for (size_t i = 0; i < len; i++)
        count += query[i] == '&';
    size_t *offs = calloc(count * 2, sizeof(*offs));
    s_param_t *params = calloc(count, sizeof(*params));
    s_buf_t text = {0}, raw = {0};
    int rc = -ENOMEM;
    if (!offs || !params)
        goto out;
    /* Pass 1: encoded "name\0value\0" pairs into text, remembering offsets (text moves). */
    size_t n = 0;
    const char *p = query, *end = query + len;
    for (;;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if (stop > p) {
            const char *eq = memchr(p, '=', (size_t)(stop - p));
            const char *name_end = eq ? eq : stop;
            const char *val = eq ? eq + 1 : stop;
            raw.len = 0;
            s_decode(&raw, p, (size_t)(name_end - p));
            offs[2 * n] = text.len;
            s_encode(&text, raw.data ? raw.data : "", raw.len, false, false);
            s_buf_ch(&text, '\0');
            raw.len = 0;
            s_decode(&raw, val, (size_t)(stop - val));
            offs[2 * n + 1] = text.len;
            s_encode(&text, raw.data ? raw.data : "", raw.len, false, false);
            s_buf_ch(&text, '\0');
            n++;
        }
        if (!amp)
            break;
        p = amp + 1;
    }
    rc = text.err ? text.err : raw.err;
    if (rc < 0)
        goto out;
    /* Pass 2: pointers, sort, join. */
    for (size_t i = 0; i < n; i++) {
        params[i].name = text.data + offs[2 * i];
        params[i].value = text.data + offs[2 * i + 1];
    }
    qsort(params, n, sizeof(*params), s_param_cmp);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            s_buf_ch(b, '&');
        s_buf_str(b, params[i].name);
        s_buf_ch(b, '=');
        s_buf_str(b, params[i].value);
    }
    rc = 0;
out:
    s_buf_free(&text);
    s_buf_free(&raw);
    free(params);
    free(offs);
    return rc;
}

/* ASCII lowercase, independent of the locale. */
static unsigned char s_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

/* Compares two header names as their lowercase forms. */
static int s_name_cmp(const char *a, const char *b)
{
    for (;; a++, b++) {
        unsigned char x = s_lower((unsigned char)*a), y = s_lower((unsigned char)*b);
        if (x != y || !x)
            return (int)x - (int)y;
    }
}

/* Orders headers by lowercase name, keeping request order among repeats. */
static int s_hdr_cmp(const void *a, const void *b)
{
    const s_hdr_t *x = a, *y = b;
    int c = s_name_cmp(x->name, y->name);
    if (c)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* True if name is a non-empty HTTP token (RFC 9110 tchar). */
static bool s_valid_name(const char *name)
{
    if (!name || !*name)
        return false;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (*p <= 32 || *p >= 127 || strchr("\"(),/:;<=>?@[\\]{}", *p))
            return false;
    }
    return true;
}

/* Appends the canonical headers block ("name:value\n" each) to b and the signed-header list
 * ("a;b;c") to signed_list. */
static void s_canonical_headers(s_buf_t *b, s_buf_t *signed_list, s_hdr_t *hdrs, size_t n)
{
    qsort(hdrs, n, sizeof(*hdrs), s_hdr_cmp);
    for (size_t i = 0; i < n; i++) {
        bool repeat = i > 0 && s_name_cmp(hdrs[i - 1].name, hdrs[i].name) == 0;
        if (repeat) {
            s_buf_ch(b, ',');
        } else {
            if (i > 0) {
                s_buf_ch(b, '\n');
                s_buf_ch(signed_list, ';');
            }
            for (const char *c = hdrs[i].name; *c; c++) {
                char lc = (char)s_lower((unsigned char)*c);
                s_buf_ch(b, lc);
                s_buf_ch(signed_list, lc);
            }
            s_buf_ch(b, ':');
        }
        s_trim(b, hdrs[i].value);
    }
    if (n > 0)
        s_buf_ch(b, '\n');
}

/* Writes 32 bytes as lowercase hex (65 bytes with the NUL). */
static void s_hex(const unsigned char in[32], char out[65])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[64] = '\0';
}

/* SHA-256 of data as lowercase hex. 0 or -EIO. */
static int s_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!EVP_Digest(data ? data : "", len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        return -EIO;
    s_hex(md, out);
    return 0;
}

/* out = HMAC-SHA256(key, data). 0 or -EIO. */
static int s_hmac(const unsigned char *key, size_t key_len, const char *data, size_t len,
                  unsigned char out[32])
{
    size_t out_len = 0;
    if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, key_len, data, len, out, 32,
                   &out_len) ||
        out_len != 32)
        return -EIO;
    return 0;
}

/* signature = hex(HMAC(kSigning, sts)), kSigning derived from the secret through the date,
 * region, service and "aws4_request". Every intermediate key is wiped. */
static int s_signature(const sigv4_credentials_t *cred, const char *date, const char *sts,
                       char out[65])
{
    size_t slen = strlen(cred->secret_access_key);
    unsigned char *k0 = malloc(slen + 4);
    unsigned char k1[32], k2[32], k3[32], k4[32], sig[32];
    if (!k0)
        return -ENOMEM;
    memcpy(k0, "AWS4", 4);
    memcpy(k0 + 4, cred->secret_access_key, slen);
    int rc = s_hmac(k0, slen + 4, date, strlen(date), k1);
    if (!rc)
        rc = s_hmac(k1, 32, cred->region, strlen(cred->region), k2);
    if (!rc)
        rc = s_hmac(k2, 32, cred->service, strlen(cred->service), k3);
    if (!rc)
        rc = s_hmac(k3, 32, "aws4_request", 12, k4);
    if (!rc)
        rc = s_hmac(k4, 32, sts, strlen(sts), sig);
    if (!rc)
        s_hex(sig, out);
    OPENSSL_cleanse(k0, slen + 4);
    free(k0);
    OPENSSL_cleanse(k1, sizeof(k1));
    OPENSSL_cleanse(k2, sizeof(k2));
    OPENSSL_cleanse(k3, sizeof(k3));
    OPENSSL_cleanse(k4, sizeof(k4));
    OPENSSL_cleanse(sig, sizeof(sig));
    return rc;
}

/* True if s is 64 lowercase hex digits. */
static bool s_is_sha256_hex(const char *s)
{
    size_t i = 0;
    for (; s[i]; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    }
    return i == 64;
}

/* True if s is non-empty and has no whitespace or control bytes. */
static bool s_valid_word(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++) {
        if ((unsigned char)*s <= 32 || *s == 127)
            return false;
    }
    return true;
}

/* Checks the inputs; 0 or -EINVAL / -E2BIG. */
static int s_check(const sigv4_request_t *req, const sigv4_credentials_t *cred)
{
    if (!s_valid_word(req->method) || !req->path || (req->n_headers && !req->headers) ||
        (req->body_len && !req->body && !req->payload_sha256))
        return -EINVAL;
    if (req->payload_sha256 && !s_is_sha256_hex(req->payload_sha256))
        return -EINVAL;
    if (!s_valid_word(cred->access_key_id) || !cred->secret_access_key ||
        !*cred->secret_access_key || !s_valid_word(cred->region) || !s_valid_word(cred->service) ||
        strchr(cred->region, '/') || strchr(cred->service, '/'))
        return -EINVAL;
    if (cred->session_token && strpbrk(cred->session_token, "\r\n"))
        return -EINVAL;
    if (req->n_headers > SIGV4_MAX_HEADERS)
        return -E2BIG;
    bool token = cred->session_token && *cred->session_token;
    for (size_t i = 0; i < req->n_headers; i++) {
        const char *name = req->headers[i].name;
        if (!s_valid_name(name) || !req->headers[i].value)
            return -EINVAL;
        /* The signer owns these: a second copy would make the request ambiguous. */
        if (!s_name_cmp(name, "authorization") || !s_name_cmp(name, "x-amz-date") ||
            (token && !s_name_cmp(name, "x-amz-security-token")) ||
            (req->add_content_sha256 && !s_name_cmp(name, "x-amz-content-sha256")))
            return -EINVAL;
    }
    return 0;
}

void sigv4_result_destroy(sigv4_result_t **p)
{
    if (!p || !*p)
        return;
    sigv4_result_t *r = *p;
    char *texts[] = {r->canonical_request, r->string_to_sign, r->authorization, r->token_value};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        if (texts[i])
            OPENSSL_cleanse(texts[i], strlen(texts[i]));
        free(texts[i]);
    }
    OPENSSL_cleanse(r, sizeof(*r));
    free(r);
    *p = NULL;
}

int sigv4_sign(const sigv4_request_t *req, const sigv4_credentials_t *cred, sigv4_result_t **out)
{
    if (!req || !cred || !out)
        return -EINVAL;
    *out = NULL;
    int rc = s_check(req, cred);
    if (rc < 0)
        return rc;
    bool token = cred->session_token && *cred->session_token;
    sigv4_result_t *r = calloc(1, sizeof(*r));
    s_hdr_t *hdrs = calloc(req->n_headers + 3, sizeof(*hdrs));
    s_buf_t creq = {0}, signed_list = {0}, sts = {0}, auth = {0};
    if (!r || !hdrs) {
        rc = -ENOMEM;
        goto out;
    }

    struct tm tm;
    if (!gmtime_r(&req->now, &tm) || tm.tm_year + 1900 < 1000 || tm.tm_year + 1900 > 9999 ||
        strftime(r->amz_date, sizeof(r->amz_date), "%Y%m%dT%H%M%SZ", &tm) != 16) {
        rc = -EINVAL;
        goto out;
    }
    char date[9];
    memcpy(date, r->amz_date, 8);
    date[8] = '\0';

    if (req->payload_sha256) {
        memcpy(r->payload_hash, req->payload_sha256, 65);
    } else if ((rc = s_sha256_hex(req->body, req->body_len, r->payload_hash)) < 0) {
        goto out;
    }
    if (token && !(r->token_value = strdup(cred->session_token))) {
        rc = -ENOMEM;
        goto out;
    }

    /* The headers to sign: the caller's, then the ones we add. */
    size_t n = 0;
    for (size_t i = 0; i < req->n_headers; i++, n++)
        hdrs[n] = (s_hdr_t){req->headers[i].name, req->headers[i].value, n};
    hdrs[n] = (s_hdr_t){"x-amz-date", r->amz_date, n};
    n++;
    if (token && !cred->token_unsigned) {
        hdrs[n] = (s_hdr_t){"x-amz-security-token", r->token_value, n};
        n++;
    }
    if (req->add_content_sha256) {
        hdrs[n] = (s_hdr_t){"x-amz-content-sha256", r->payload_hash, n};
        n++;
    }

    /* Canonical request: method, URI, query, headers, blank, signed headers, payload hash. */
    s_buf_str(&creq, req->method);
    s_buf_ch(&creq, '\n');
    if ((rc = s_canonical_path(&creq, req->path, req->normalize != 0)) < 0)
        goto out;
    s_buf_ch(&creq, '\n');
    if ((rc = s_canonical_query(&creq, req->query)) < 0)
        goto out;
    s_buf_ch(&creq, '\n');
    s_canonical_headers(&creq, &signed_list, hdrs, n);
    s_buf_ch(&creq, '\n');
    s_buf_add(&creq, signed_list.data ? signed_list.data : "", signed_list.len);
    s_buf_ch(&creq, '\n');
    s_buf_str(&creq, r->payload_hash);
    if ((rc = creq.err ? creq.err : signed_list.err) < 0)
        goto out;

    /* String to sign: algorithm, time, scope, hash of the canonical request. */
    char creq_hash[65];
    if ((rc = s_sha256_hex(creq.data, creq.len, creq_hash)) < 0)
        goto out;
    s_buf_str(&sts, SIGV4_ALGO "\n");
    s_buf_str(&sts, r->amz_date);
    s_buf_ch(&sts, '\n');
    s_buf_str(&sts, date);
    s_buf_ch(&sts, '/');
    s_buf_str(&sts, cred->region);
    s_buf_ch(&sts, '/');
    s_buf_str(&sts, cred->service);
    s_buf_str(&sts, "/aws4_request\n");
    s_buf_str(&sts, creq_hash);
    if ((rc = sts.err) < 0)
        goto out;

    if ((rc = s_signature(cred, date, sts.data, r->signature)) < 0)
        goto out;

    s_buf_str(&auth, SIGV4_ALGO " Credential=");
    s_buf_str(&auth, cred->access_key_id);
    s_buf_ch(&auth, '/');
    s_buf_str(&auth, date);
    s_buf_ch(&auth, '/');
    s_buf_str(&auth, cred->region);
    s_buf_ch(&auth, '/');
    s_buf_str(&auth, cred->service);
    s_buf_str(&auth, "/aws4_request, SignedHeaders=");
    s_buf_add(&auth, signed_list.data, signed_list.len);
    s_buf_str(&auth, ", Signature=");
    s_buf_str(&auth, r->signature);

    r->canonical_request = s_buf_take(&creq);
    r->string_to_sign = s_buf_take(&sts);
    r->authorization = s_buf_take(&auth);
    if (!r->canonical_request || !r->string_to_sign || !r->authorization) {
        rc = auth.err ? auth.err : -ENOMEM;
        goto out;
    }

    /* The headers to append, in the order AWS's own signer adds them. */
    if (token)
        r->added[r->n_added++] = (sigv4_header_t){"X-Amz-Security-Token", r->token_value};
    r->added[r->n_added++] = (sigv4_header_t){"X-Amz-Date", r->amz_date};
    if (req->add_content_sha256)
        r->added[r->n_added++] = (sigv4_header_t){"x-amz-content-sha256", r->payload_hash};
    r->added[r->n_added++] = (sigv4_header_t){"Authorization", r->authorization};
    *out = r;
    r = NULL;
    rc = 0;
out:
    sigv4_result_destroy(&r);
    free(hdrs);
    s_buf_free(&creq);
    s_buf_free(&signed_list);
    s_buf_free(&sts);
    s_buf_free(&auth);
    return rc;
}
