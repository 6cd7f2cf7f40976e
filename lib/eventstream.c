/* eventstream: AWS event-stream framing, an incremental decoder and a one-message encoder. */
#include "eventstream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define S_CRC_LEN 4       /* the message CRC that ends every message */
#define S_TYPE_STRING 7   /* the only header type reported */
#define S_NAME_MAX 255    /* a header name's length is one byte */
#define S_VALUE_MAX 65535 /* a string value's length is two bytes */

/* Reads a big-endian 32-bit number. */
static uint32_t s_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Writes a big-endian 32-bit number. */
static void s_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* zlib's CRC32 of n bytes (n is at most ES_MAX_MESSAGE, so it fits zlib's uInt). */
static uint32_t s_crc(const uint8_t *p, size_t n)
{
    return (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)n);
}

/* Checks a prelude and gives the message's total length: 0, -EBADMSG or -EMSGSIZE. The CRC
 * comes first, as in AWS's own decoder: lengths that fail it are noise, not a size. */
static int s_check_prelude(const uint8_t *p, uint32_t *total)
{
    if (s_crc(p, 8) != s_be32(p + 8))
        return -EBADMSG;
    uint32_t t = s_be32(p), h = s_be32(p + 4);
    if (t < ES_MIN_MESSAGE || h > t - ES_MIN_MESSAGE)
        return -EBADMSG;
    if (t > ES_MAX_MESSAGE)
        return -EMSGSIZE;
    *total = t;
    return 0;
}

/* Bytes of the value of a header of type t that starts at p (n bytes left), or -1 if the type
 * is unknown or the value does not fit. */
static long s_value_len(uint8_t t, const uint8_t *p, size_t n)
{
    static const signed char fixed[] = {0, 0, 1, 2, 4, 8, -1, -1, 8, 16};
    size_t len;
    if (t > 9)
        return -1;
    if (fixed[t] >= 0) {
        len = (size_t)fixed[t];
    } else {
        if (n < 2)
            return -1;
        len = 2 + ((size_t)p[0] << 8 | p[1]);
    }
    return len <= n ? (long)len : -1;
}

/* Parses the headers block p[0, n), keeping the string headers: 0 or -EBADMSG. */
static int s_parse_headers(const uint8_t *p, size_t n, es_header_t *out, size_t *count)
{
    size_t i = 0, kept = 0;
    while (i < n) {
        size_t name_len = p[i++];
        if (name_len > n - i || n - i - name_len < 1)
            return -EBADMSG;
        const uint8_t *name = p + i;
        i += name_len;
        uint8_t type = p[i++];
        long vlen = s_value_len(type, p + i, n - i);
        if (vlen < 0)
            return -EBADMSG;
        /* Headers past ES_MAX_HEADERS are still checked, just not kept. */
        if (type == S_TYPE_STRING && kept < ES_MAX_HEADERS) {
            out[kept].name = (const char *)name;
            out[kept].name_len = name_len;
            out[kept].value = (const char *)p + i + 2;
            out[kept].value_len = (size_t)vlen - 2;
            kept++;
        }
        i += (size_t)vlen;
    }
    *count = kept;
    return 0;
}

/* Checks and delivers one whole message of total bytes (its prelude already checked). */
static int s_deliver(es_decoder_t *d, const uint8_t *msg, size_t total)
{
    if (s_crc(msg, total - S_CRC_LEN) != s_be32(msg + total - S_CRC_LEN))
        return -EBADMSG;
    size_t hlen = s_be32(msg + 4);
    es_header_t headers[ES_MAX_HEADERS];
    es_message_t m = {.headers = headers};
    if (s_parse_headers(msg + ES_PRELUDE_LEN, hlen, headers, &m.n_headers) < 0)
        return -EBADMSG;
    m.payload = msg + ES_PRELUDE_LEN + hlen;
    m.payload_len = total - ES_MIN_MESSAGE - hlen;
    d->messages++;
    if (d->fn)
        d->fn(d->arg, &m);
    return 0;
}

/* Makes room for cap bytes in the decoder's buffer (it grows to the largest message seen and
 * is then reused). */
static int s_reserve(es_decoder_t *d, size_t cap)
{
    if (cap <= d->cap)
        return 0;
    uint8_t *p = realloc(d->buf, cap);
    if (!p)
        return -ENOMEM;
    d->buf = p;
    d->cap = cap;
    return 0;
}

/* Records the first error; the decoder reads nothing after it. */
static int s_fail(es_decoder_t *d, int rc)
{
    d->error = rc;
    return rc;
}

/* Gathers bytes of the message being received into the buffer; returns how many it took
 * (at most n), or a negative errno. Room for the whole message is made only once its bytes
 * come, so a prelude alone never allocates what it claims. */
static long s_gather(es_decoder_t *d, const uint8_t *data, size_t n)
{
    size_t want = ES_PRELUDE_LEN;
    if (d->len >= ES_PRELUDE_LEN)
        want = s_be32(d->buf); /* checked when the prelude was complete */
    if (s_reserve(d, want) < 0)
        return -ENOMEM;
    size_t take = want - d->len < n ? want - d->len : n;
    memcpy(d->buf + d->len, data, take);
    d->len += take;
    if (want == ES_PRELUDE_LEN && d->len == ES_PRELUDE_LEN) {
        uint32_t total;
        int rc = s_check_prelude(d->buf, &total);
        if (rc < 0)
            return rc;
    } else if (d->len == want) {
        int rc = s_deliver(d, d->buf, want);
        d->len = 0;
        if (rc < 0)
            return rc;
    }
    return (long)take;
}

void es_decoder_init(es_decoder_t *d, es_message_fn fn, void *arg)
{
    memset(d, 0, sizeof *d);
    d->fn = fn;
    d->arg = arg;
}

void es_decoder_free(es_decoder_t *d)
{
    if (!d)
        return;
    free(d->buf);
    d->buf = NULL;
    d->len = d->cap = 0;
}

int es_decoder_feed(es_decoder_t *d, const uint8_t *data, size_t len)
{
    if (d->error)
        return d->error;
    if (!data && len)
        return -EINVAL; /* the caller's mistake, not the stream's: not sticky */
    while (len > 0) {
        /* A whole message at a boundary is read where it lies, without a copy. */
        uint32_t total;
        if (d->len == 0 && len >= ES_PRELUDE_LEN) {
            int rc = s_check_prelude(data, &total);
            if (rc < 0)
                return s_fail(d, rc);
            if (len >= total) {
                rc = s_deliver(d, data, total);
                if (rc < 0)
                    return s_fail(d, rc);
                data += total;
                len -= total;
                continue;
            }
        }
        long took = s_gather(d, data, len);
        if (took < 0)
            return s_fail(d, (int)took);
        data += took;
        len -= (size_t)took;
    }
    return 0;
}

bool es_decoder_idle(const es_decoder_t *d)
{
    return d->len == 0 && d->error == 0;
}

const char *es_header_get(const es_message_t *m, const char *name, size_t *len)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < m->n_headers; i++) {
        const es_header_t *h = &m->headers[i];
        if (h->name_len == n && memcmp(h->name, name, n) == 0) {
            if (len)
                *len = h->value_len;
            return h->value;
        }
    }
    return NULL;
}

/* Bytes of the headers block for n string headers: 0, or -EINVAL if one is missing or too long. */
static int s_headers_len(const char *const *names, const char *const *values, size_t n, size_t *out)
{
    size_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        if (!names[i] || !values[i])
            return -EINVAL;
        size_t nl = strlen(names[i]), vl = strlen(values[i]);
        if (nl > S_NAME_MAX || vl > S_VALUE_MAX || sum > ES_MAX_MESSAGE)
            return -EINVAL;
        sum += 1 + nl + 1 + 2 + vl;
    }
    *out = sum;
    return 0;
}

/* Writes n string headers at p. */
static void s_put_headers(uint8_t *p, const char *const *names, const char *const *values, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(names[i]), vl = strlen(values[i]);
        *p++ = (uint8_t)nl;
        memcpy(p, names[i], nl);
        p += nl;
        *p++ = S_TYPE_STRING;
        *p++ = (uint8_t)(vl >> 8);
        *p++ = (uint8_t)vl;
        memcpy(p, values[i], vl);
        p += vl;
    }
}

uint8_t *es_encode(const char *const *names, const char *const *values, size_t n,
                   const uint8_t *payload, size_t payload_len, size_t *out_len)
{
    size_t hlen = 0;
    if (!out_len || (n && (!names || !values)) || (!payload && payload_len) ||
        payload_len > ES_MAX_MESSAGE || s_headers_len(names, values, n, &hlen) < 0 ||
        ES_MIN_MESSAGE + hlen + payload_len > ES_MAX_MESSAGE) {
        errno = EINVAL;
        return NULL;
    }
    size_t total = ES_MIN_MESSAGE + hlen + payload_len;
    uint8_t *m = malloc(total);
    if (!m)
        return NULL;
    s_put_be32(m, (uint32_t)total);
    s_put_be32(m + 4, (uint32_t)hlen);
    s_put_be32(m + 8, s_crc(m, 8));
    s_put_headers(m + ES_PRELUDE_LEN, names, values, n);
    if (payload_len)
        memcpy(m + ES_PRELUDE_LEN + hlen, payload, payload_len);
    s_put_be32(m + total - S_CRC_LEN, s_crc(m, total - S_CRC_LEN));
    *out_len = total;
    return m;
}
