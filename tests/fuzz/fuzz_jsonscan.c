/* fuzz_jsonscan: libFuzzer target for the streaming JSON body scanner (lib/jsonscan).
 *
 * The first two input bytes choose a split point, the rest is the body. The body is scanned in
 * one feed, in two feeds split there, and in short pieces; every way must give the same
 * outcome. Its validity must agree with jansson's (skipping what jansson cannot represent:
 * numbers out of range, a NUL in a key; bodies over the depth limit; and bodies with a raw NUL
 * byte that jansson accepts, as it drops such bytes after some tokens), and when the body is
 * valid without a verdict the captured model, stream and max_tokens must be what jansson reads.
 *
 *   CC=clang meson setup /tmp/rh-fuzz -Dfuzz=enabled && ninja -C /tmp/rh-fuzz
 *   mkdir -p /tmp/jscan-corpus && printf '\0\5{"model":"x","stream":true}' \
 *       > /tmp/jscan-corpus/seed1
 *   /tmp/rh-fuzz/tests/fuzz/fuzz_jsonscan -max_total_time=60 -max_len=2048 /tmp/jscan-corpus
 */
#include "jsonscan.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What a scan ended with. */
typedef struct {
    int rc;             /* jscan_finish's answer, or the failing feed's */
    jscan_kind_t kind;  /* the error kind */
    uint64_t off;       /* the error offset */
    jscan_result_t res; /* the result */
} outcome_t;

/* Scans body: a first piece of first bytes (maybe none), then pieces of step bytes (> 0). */
static void s_scan(jscan_t *s, const uint8_t *body, size_t len, size_t first, size_t step,
                   outcome_t *o)
{
    jscan_reset(s);
    size_t at = first < len ? first : len;
    int rc = jscan_feed(s, body, at); /* may be an empty feed */
    while (rc == 0 && at < len) {
        size_t n = step < len - at ? step : len - at;
        rc = jscan_feed(s, body + at, n);
        at += n;
    }
    int fin = jscan_finish(s);
    if (rc != 0 && fin != rc)
        abort(); /* a fatal error must stick */
    const jscan_error_t *e = jscan_error(s);
    if (fin != e->code || (fin != 0 && (e->msg[0] == '\0' || !strstr(e->msg, "byte "))))
        abort();
    if (fin == 0 && !jscan_result(s)->complete)
        abort();
    o->rc = fin;
    o->kind = e->kind;
    o->off = e->offset;
    o->res = *jscan_result(s);
}

/* Aborts unless two outcomes agree (the model compared by content). */
static void s_same(const outcome_t *a, const outcome_t *b)
{
    const jscan_result_t *x = &a->res, *y = &b->res;
    if (a->rc != b->rc || a->kind != b->kind || a->off != b->off || x->complete != y->complete ||
        x->members != y->members || x->has_model != y->has_model || x->model_len != y->model_len ||
        (x->has_model && memcmp(x->model, y->model, x->model_len) != 0) ||
        x->has_stream != y->has_stream || x->stream != y->stream ||
        x->has_max_tokens != y->has_max_tokens || x->max_tokens != y->max_tokens ||
        x->stream_options_present != y->stream_options_present ||
        x->has_include_usage != y->has_include_usage || x->include_usage != y->include_usage)
        abort();
}

/* Checks a valid body's captured members against jansson's tree of it. */
static void s_check_members(const json_t *root, const jscan_result_t *r)
{
    const json_t *m = json_object_get(root, "model");
    if (r->has_model != (m && json_is_string(m)))
        abort();
    if (r->has_model && (r->model_len != json_string_length(m) ||
                         memcmp(r->model, json_string_value(m), r->model_len) != 0))
        abort();
    const json_t *st = json_object_get(root, "stream");
    if (r->has_stream != (st && json_is_boolean(st)) ||
        (r->has_stream && r->stream != json_is_true(st)))
        abort();
    const json_t *mt = json_object_get(root, "max_tokens");
    if (mt && json_is_integer(mt) &&
        (!r->has_max_tokens || r->max_tokens != json_integer_value(mt)))
        abort();
    if (r->members < json_object_size(root))
        abort();
}

/* Scans the body three ways, compares them, then compares validity with jansson. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t split = (size_t)data[0] | (size_t)data[1] << 8;
    const uint8_t *body = data + 2;
    size_t len = size - 2;
    split = len ? split % (len + 1) : 0;

    jscan_t *s = jscan_new(NULL);
    if (!s)
        abort();
    outcome_t whole, two, small;
    s_scan(s, body, len, len, len, &whole);
    s_scan(s, body, len, split, len, &two);
    s_same(&whole, &two);
    s_scan(s, body, len, 1, (split % 7) + 1, &small);
    s_same(&whole, &small);

    json_error_t je;
    json_t *root = json_loadb((const char *)body, len, JSON_ALLOW_NUL, &je);
    enum json_error_code jc = root ? json_error_unknown : json_error_code(&je);
    /* jansson skips a raw NUL byte after some tokens ({"a":1\0} loads): never trust its yes
     * for a body holding one. */
    bool skip = whole.rc == -ELOOP || jc == json_error_numeric_overflow ||
                jc == json_error_null_byte_in_key || (root && memchr(body, 0, len));
    if (!skip) {
        bool ours = whole.rc == 0 || whole.rc == -EEXIST || whole.rc == -EINVAL;
        bool theirs = root && json_is_object(root);
        if (ours != theirs)
            abort();
        if (whole.rc == 0)
            s_check_members(root, &whole.res);
    }
    json_decref(root);
    jscan_destroy(&s);
    return 0;
}
