/* Unit tests for sigv4: every header-signing case of AWS's SigV4 test suite, byte for byte,
 * plus tables for URI encoding and header value trimming. */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>

#include "sigv4.h"

#define VECTOR_DIR TEST_SOURCE_DIR "/tests/vectors/aws-sigv4"
#define MAX_CASES 256
#define MAX_HDRS 32

/* Reads a whole file (NUL-terminated); NULL if it cannot. */
static char *s_read(const char *dir, const char *name, size_t *len_out)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf)
            break;
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (len + 1 < cap)
            break;
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    fclose(f);
    if (buf) {
        buf[len] = '\0';
        if (len_out)
            *len_out = len;
    }
    return buf;
}

/* A parsed request.txt. Header lines point into text (modified in place). */
typedef struct {
    char *text;                    /* the file, cut into pieces */
    char *head;                    /* request line and header lines, verbatim, with '\n' */
    size_t head_len;               /* their length */
    char *method, *path, *query;   /* from the request line */
    sigv4_header_t hdrs[MAX_HDRS]; /* name/value; folded values joined with '\n' */
    char *values[MAX_HDRS];        /* owned copies of the values */
    size_t n_hdrs;                 /* how many */
    const char *body;              /* the body after the blank line */
    size_t body_len;               /* its length */
} s_req_t;

static void s_req_free(s_req_t *r)
{
    for (size_t i = 0; i < r->n_hdrs; i++)
        free(r->values[i]);
    free(r->text);
    free(r->head);
}

/* Parses request.txt: "METHOD target HTTP/1.1", header lines (a line that starts with a space
 * or tab continues the previous value), a blank line, the body. 0 or -EBADMSG. */
static int s_parse_request(const char *raw, size_t len, s_req_t *r)
{
    memset(r, 0, sizeof(*r));
    /* The head ends at the first blank line, or at the end of the file. */
    const char *blank = strstr(raw, "\n\n");
    size_t head_len = blank ? (size_t)(blank - raw) + 1 : len;
    if (head_len > 0 && raw[head_len - 1] != '\n')
        return -EBADMSG; /* every head line ends with '\n' in the suite */
    r->head = strndup(raw, head_len);
    r->head_len = head_len;
    r->text = strndup(raw, head_len);
    r->body = blank ? blank + 2 : raw + len;
    r->body_len = (size_t)(raw + len - r->body);
    if (!r->head || !r->text)
        return -EBADMSG;
    char *line = r->text, *nl = strchr(line, '\n');
    if (!nl)
        return -EBADMSG;
    *nl = '\0';
    /* Request line: the method, then the target up to the last " HTTP/". */
    char *sp = strchr(line, ' ');
    char *ver = strstr(line, " HTTP/");
    for (char *v = ver; v; v = strstr(v + 1, " HTTP/"))
        ver = v;
    if (!sp || !ver || ver <= sp)
        return -EBADMSG;
    *sp = '\0';
    *ver = '\0';
    r->method = line;
    r->path = sp + 1;
    char *q = strchr(r->path, '?');
    if (q) {
        *q = '\0';
        r->query = q + 1;
    }
    for (line = nl + 1; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        *nl = '\0';
        if (line[0] == ' ' || line[0] == '\t') {
            if (r->n_hdrs == 0)
                return -EBADMSG;
            char *prev = r->values[r->n_hdrs - 1];
            size_t pl = strlen(prev), ll = strlen(line);
            char *nv = realloc(prev, pl + ll + 2);
            if (!nv)
                return -EBADMSG;
            nv[pl] = '\n';
            memcpy(nv + pl + 1, line, ll + 1);
            r->values[r->n_hdrs - 1] = nv;
            r->hdrs[r->n_hdrs - 1].value = nv;
            continue;
        }
        char *colon = strchr(line, ':');
        if (!colon || r->n_hdrs == MAX_HDRS)
            return -EBADMSG;
        *colon = '\0';
        r->values[r->n_hdrs] = strdup(colon + 1);
        if (!r->values[r->n_hdrs])
            return -EBADMSG;
        r->hdrs[r->n_hdrs].name = line;
        r->hdrs[r->n_hdrs].value = r->values[r->n_hdrs];
        r->n_hdrs++;
    }
    return 0;
}

/* Compares got with the expected file; on a difference prints both and returns false. */
static bool s_same(const char *dir, const char *file, const char *got, size_t got_len)
{
    size_t want_len = 0;
    char *want = s_read(dir, file, &want_len);
    bool ok = want && want_len == got_len && memcmp(want, got, got_len) == 0;
    if (!ok)
        print_error("%s/%s differs:\n--- want\n%s\n--- got\n%.*s\n", dir, file,
                    want ? want : "(unreadable)", (int)got_len, got);
    free(want);
    return ok;
}

/* Runs one case folder; true when every header-* file matches. */
static bool s_run_case(const char *dir)
{
    bool ok = false;
    char *raw = NULL;
    json_t *ctx = NULL;
    sigv4_result_t *res = NULL;
    s_req_t req;
    memset(&req, 0, sizeof(req));
    char *signed_req = NULL;

    char ctx_path[1024];
    snprintf(ctx_path, sizeof(ctx_path), "%s/context.json", dir);
    json_error_t jerr;
    ctx = json_load_file(ctx_path, 0, &jerr);
    size_t raw_len = 0;
    raw = s_read(dir, "request.txt", &raw_len);
    if (!ctx || !raw) {
        print_error("%s: cannot read context.json or request.txt\n", dir);
        goto out;
    }
    if (s_parse_request(raw, raw_len, &req) < 0) {
        print_error("%s: malformed request.txt\n", dir);
        goto out;
    }
    const char *ts = json_string_value(json_object_get(ctx, "timestamp"));
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (!ts || sscanf(ts, "%4d-%2d-%2dT%2d:%2d:%2dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                      &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6) {
        print_error("%s: bad timestamp\n", dir);
        goto out;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    json_t *cj = json_object_get(ctx, "credentials");
    sigv4_credentials_t cred = {
        .access_key_id = json_string_value(json_object_get(cj, "access_key_id")),
        .secret_access_key = json_string_value(json_object_get(cj, "secret_access_key")),
        .session_token = json_string_value(json_object_get(cj, "token")),
        .token_unsigned = json_is_true(json_object_get(ctx, "omit_session_token")),
        .region = json_string_value(json_object_get(ctx, "region")),
        .service = json_string_value(json_object_get(ctx, "service")),
    };
    sigv4_request_t sreq = {
        .method = req.method,
        .path = req.path,
        .query = req.query,
        .headers = req.hdrs,
        .n_headers = req.n_hdrs,
        .body = req.body,
        .body_len = req.body_len,
        .now = timegm(&tm),
        .normalize = json_is_true(json_object_get(ctx, "normalize")),
        .add_content_sha256 = json_is_true(json_object_get(ctx, "sign_body")),
    };
    int rc = sigv4_sign(&sreq, &cred, &res);
    if (rc < 0) {
        print_error("%s: sigv4_sign = %d\n", dir, rc);
        goto out;
    }

    /* The signed request: the head as it was, the added headers, a blank line, the body. */
    size_t cap = req.head_len + req.body_len + 2;
    for (size_t i = 0; i < res->n_added; i++)
        cap += strlen(res->added[i].name) + strlen(res->added[i].value) + 2;
    signed_req = malloc(cap + 1);
    assert_non_null(signed_req);
    size_t len = 0;
    memcpy(signed_req, req.head, req.head_len);
    len += req.head_len;
    for (size_t i = 0; i < res->n_added; i++)
        len += (size_t)snprintf(signed_req + len, cap + 1 - len, "%s:%s\n", res->added[i].name,
                                res->added[i].value);
    signed_req[len++] = '\n';
    memcpy(signed_req + len, req.body, req.body_len);
    len += req.body_len;

    bool a = s_same(dir, "header-canonical-request.txt", res->canonical_request,
                    strlen(res->canonical_request));
    bool b =
        s_same(dir, "header-string-to-sign.txt", res->string_to_sign, strlen(res->string_to_sign));
    bool c = s_same(dir, "header-signature.txt", res->signature, strlen(res->signature));
    bool d = s_same(dir, "header-signed-request.txt", signed_req, len);
    ok = a && b && c && d;
out:
    free(signed_req);
    sigv4_result_destroy(&res);
    s_req_free(&req);
    free(raw);
    json_decref(ctx);
    return ok;
}

/* qsort comparator for case names. */
static int s_strp_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every case folder of the suite (a folder with a context.json): all must pass, and there
 * must be some. */
static void test_aws_suite(void **state)
{
    (void)state;
    DIR *d = opendir(VECTOR_DIR);
    if (!d)
        fail_msg("cannot open %s", VECTOR_DIR);
    char *names[MAX_CASES];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char probe[1024];
        snprintf(probe, sizeof(probe), "%s/%s/context.json", VECTOR_DIR, e->d_name);
        FILE *f = fopen(probe, "r");
        if (!f)
            continue;
        fclose(f);
        assert_true(n < MAX_CASES);
        names[n] = strdup(e->d_name);
        assert_non_null(names[n]);
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), s_strp_cmp);
    size_t passed = 0;
    for (size_t i = 0; i < n; i++) {
        char dir[1024];
        snprintf(dir, sizeof(dir), "%s/%s", VECTOR_DIR, names[i]);
        if (s_run_case(dir))
            passed++;
        else
            print_error("FAIL %s\n", names[i]);
        free(names[i]);
    }
    print_message("sigv4: %zu of %zu AWS suite cases pass\n", passed, n);
    if (n == 0)
        fail_msg("no cases found in %s", VECTOR_DIR);
    if (passed != n)
        fail_msg("%zu of %zu AWS suite cases failed", n - passed, n);
}

static void test_uri_encode(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int keep_slash;
        const char *want;
    } cases[] = {
        {"", 0, ""},
        {"AZaz09-_.~", 0, "AZaz09-_.~"},
        {"a b", 0, "a%20b"},
        {"a+b=c&d", 0, "a%2Bb%3Dc%26d"},
        {"/model/x", 0, "%2Fmodel%2Fx"},
        {"/model/x", 1, "/model/x"},
        {"v1%3A0", 1, "v1%253A0"}, /* Bedrock's model ids: encoded again */
        {"\xe1\x88\xb4", 0, "%E1%88%B4"},
        {"*!'()", 0, "%2A%21%27%28%29"},
        {"\x7f\x01", 0, "%7F%01"},
    };
    char out[64];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = sigv4_uri_encode(cases[i].in, strlen(cases[i].in), cases[i].keep_slash, out,
                                  sizeof(out));
        if (rc < 0 || strcmp(out, cases[i].want) != 0 || (size_t)rc != strlen(cases[i].want))
            fail_msg("encode(\"%s\") = %d \"%s\"; want \"%s\"", cases[i].in, rc, out,
                     cases[i].want);
    }
    assert_int_equal(sigv4_uri_encode("a b", 3, 0, out, 5), -E2BIG); /* needs 6 */
    assert_int_equal(sigv4_uri_encode("a b", 3, 0, out, 6), 5);
}

static void test_trim_value(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"", ""},
        {"   ", ""},
        {" value1", "value1"},
        {"value1  ", "value1"},
        {"\"a   b   c\"", "\"a b c\""},
        {"value1\n  value2\n     value3", "value1 value2 value3"},
        {"\t a \t b \r\n", "a b"},
        {"application/json", "application/json"},
    };
    char out[64];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = sigv4_trim_value(cases[i].in, out, sizeof(out));
        if (rc < 0 || strcmp(out, cases[i].want) != 0)
            fail_msg("trim(\"%s\") = %d \"%s\"; want \"%s\"", cases[i].in, rc, out, cases[i].want);
    }
    assert_int_equal(sigv4_trim_value("abcdef", out, 6), -E2BIG);
}

/* Signs a Bedrock-shaped request and returns the canonical request's URI line. */
static void s_bedrock_uri(const char *path, int normalize, char *uri, size_t cap)
{
    sigv4_header_t h[] = {{"Host", "bedrock-runtime.us-east-1.amazonaws.com"},
                          {"Content-Type", "application/json"}};
    sigv4_request_t req = {.method = "POST",
                           .path = path,
                           .headers = h,
                           .n_headers = 2,
                           .body = "{}",
                           .body_len = 2,
                           .now = 1440938160,
                           .normalize = normalize};
    sigv4_credentials_t cred = {.access_key_id = "AKIDEXAMPLE",
                                .secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                                .region = "us-east-1",
                                .service = "bedrock"};
    sigv4_result_t *res = NULL;
    assert_int_equal(sigv4_sign(&req, &cred, &res), 0);
    const char *l = strchr(res->canonical_request, '\n') + 1;
    size_t n = (size_t)(strchr(l, '\n') - l);
    assert_true(n < cap);
    memcpy(uri, l, n);
    uri[n] = '\0';
    assert_int_equal(res->n_added, 2);
    assert_string_equal(res->added[0].name, "X-Amz-Date");
    assert_string_equal(res->added[0].value, "20150830T123600Z");
    assert_string_equal(res->added[1].name, "Authorization");
    sigv4_result_destroy(&res);
    assert_null(res);
}

static void test_paths(void **state)
{
    (void)state;
    char uri[256];
    s_bedrock_uri("/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse", 1, uri,
                  sizeof(uri));
    assert_string_equal(uri, "/model/anthropic.claude-3-5-haiku-20241022-v1%253A0/converse");
    s_bedrock_uri("/a%3a0/b c", 0, uri, sizeof(uri)); /* S3: already encoded, encoded once */
    assert_string_equal(uri, "/a%3A0/b%20c");
    s_bedrock_uri("/a/b/../c/./d/", 1, uri, sizeof(uri));
    assert_string_equal(uri, "/a/c/d/");
    s_bedrock_uri("/a/b/..", 1, uri, sizeof(uri));
    assert_string_equal(uri, "/a/");
    s_bedrock_uri("", 1, uri, sizeof(uri));
    assert_string_equal(uri, "/");
}

static void test_rejects(void **state)
{
    (void)state;
    sigv4_header_t h[] = {{"Host", "x"}, {"X-Amz-Date", "20150830T123600Z"}};
    sigv4_request_t req = {.method = "GET",
                           .path = "/",
                           .headers = h,
                           .n_headers = 2,
                           .now = 1440938160,
                           .normalize = 1};
    sigv4_credentials_t cred = {.access_key_id = "AKID",
                                .secret_access_key = "s",
                                .region = "us-east-1",
                                .service = "bedrock"};
    sigv4_result_t *res = NULL;
    assert_int_equal(sigv4_sign(&req, &cred, &res), -EINVAL); /* signer's own header */
    assert_null(res);
    h[1].name = "Bad Name";
    assert_int_equal(sigv4_sign(&req, &cred, &res), -EINVAL);
    req.n_headers = 1;
    req.payload_sha256 = "ABC";
    assert_int_equal(sigv4_sign(&req, &cred, &res), -EINVAL);
    req.payload_sha256 = NULL;
    cred.secret_access_key = "";
    assert_int_equal(sigv4_sign(&req, &cred, &res), -EINVAL);
    cred.secret_access_key = "s";
    req.path = "relative";
    assert_int_equal(sigv4_sign(&req, &cred, &res), -EINVAL);
    req.path = "/";
    req.n_headers = SIGV4_MAX_HEADERS + 1;
    assert_int_equal(sigv4_sign(&req, &cred, &res), -E2BIG);
    req.n_headers = 1;
    assert_int_equal(sigv4_sign(&req, &cred, &res), 0);
    sigv4_result_destroy(&res);
    sigv4_result_destroy(&res); /* NULL is fine */
    sigv4_result_destroy(NULL);
}

/* A given payload hash is used as is, and query parameters are sorted after encoding. */
static void test_payload_hash_and_query(void **state)
{
    (void)state;
    const char *empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    sigv4_header_t h[] = {{"Host", "x"}};
    sigv4_request_t req = {.method = "GET",
                           .path = "/",
                           .query = "b=2&a=%7e&a=1&&c",
                           .headers = h,
                           .n_headers = 1,
                           .payload_sha256 = empty,
                           .now = 1440938160,
                           .normalize = 1,
                           .add_content_sha256 = 1};
    sigv4_credentials_t cred = {.access_key_id = "AKID",
                                .secret_access_key = "s",
                                .session_token = "tok",
                                .region = "us-east-1",
                                .service = "bedrock"};
    sigv4_result_t *res = NULL;
    assert_int_equal(sigv4_sign(&req, &cred, &res), 0);
    char want[512];
    snprintf(want, sizeof(want),
             "GET\n/\na=1&a=~&b=2&c=\nhost:x\nx-amz-content-sha256:%s\n"
             "x-amz-date:20150830T123600Z\nx-amz-security-token:tok\n\n"
             "host;x-amz-content-sha256;x-amz-date;x-amz-security-token\n%s",
             empty, empty);
    assert_string_equal(res->canonical_request, want);
    assert_int_equal(res->n_added, 4);
    assert_string_equal(res->added[0].name, "X-Amz-Security-Token");
    assert_string_equal(res->added[2].name, "x-amz-content-sha256");
    assert_string_equal(res->added[2].value, empty);
    sigv4_result_destroy(&res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aws_suite),  cmocka_unit_test(test_uri_encode),
        cmocka_unit_test(test_trim_value), cmocka_unit_test(test_paths),
        cmocka_unit_test(test_rejects),    cmocka_unit_test(test_payload_hash_and_query),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
