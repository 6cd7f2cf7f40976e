/* bus_mp: msgpack cursor reader (see bus_mp.h). */
#include "bus_mp.h"

#include <errno.h>
#include <string.h>

/* Loads a big-endian unsigned integer of n (1, 2, 4 or 8) bytes. */
static uint64_t s_be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Takes n bytes from the cursor into *p; -EBADMSG when fewer are left. */
static int s_take(bus_mp_t *c, size_t n, const uint8_t **p)
{
    if (n > c->left)
        return -EBADMSG;
    *p = c->p;
    c->p += n;
    c->left -= n;
    return 0;
}

/* Reads an n-byte big-endian length or value. */
static int s_take_be(bus_mp_t *c, unsigned n, uint64_t *v)
{
    const uint8_t *p;
    if (s_take(c, n, &p) < 0)
        return -EBADMSG;
    *v = s_be(p, n);
    return 0;
}

/* Finishes a str/bin: takes len payload bytes. */
static int s_raw(bus_mp_t *c, bus_mp_obj_t *o, bus_mp_kind_t kind, uint64_t len)
{
    const uint8_t *p;
    if (s_take(c, (size_t)len, &p) < 0)
        return -EBADMSG;
    o->kind = kind;
    o->v.raw.p = p;
    o->v.raw.len = (uint32_t)len;
    return 0;
}

/* Finishes an ext: reads the type byte, then len payload bytes. */
static int s_ext(bus_mp_t *c, bus_mp_obj_t *o, uint64_t len)
{
    const uint8_t *t, *p;
    if (s_take(c, 1, &t) < 0 || s_take(c, (size_t)len, &p) < 0)
        return -EBADMSG;
    o->kind = BUS_MP_EXT;
    o->v.ext.type = (int8_t)t[0];
    o->v.ext.p = p;
    o->v.ext.len = (uint32_t)len;
    return 0;
}

/* Finishes an array/map header: every element takes at least one byte, so a count that
 * cannot fit in the bytes left is rejected before anyone loops over it. */
static int s_container(bus_mp_t *c, bus_mp_obj_t *o, bus_mp_kind_t kind, uint64_t count)
{
    size_t per = kind == BUS_MP_MAP ? 2 : 1;
    if (count > c->left / per)
        return -EBADMSG;
    o->kind = kind;
    o->v.count = (uint32_t)count;
    return 0;
}

/* Stores a signed value as INT when negative, else as UINT. */
static void s_signed(bus_mp_obj_t *o, int64_t v)
{
    if (v < 0) {
        o->kind = BUS_MP_INT;
        o->v.i = v;
    } else {
        o->kind = BUS_MP_UINT;
        o->v.u = (uint64_t)v;
    }
}

/* Points the cursor at a buffer. */
void bus_mp_init(bus_mp_t *c, const void *buf, size_t len)
{
    c->p = buf;
    c->left = buf ? len : 0;
}

/* Reads one item (scalar, str, bin, ext, or a container header). */
int bus_mp_next(bus_mp_t *c, bus_mp_obj_t *o)
{
    const uint8_t *tp;
    uint64_t v;
    if (s_take(c, 1, &tp) < 0)
        return -EBADMSG;
    uint8_t t = tp[0];

    if (t <= 0x7f) {
        o->kind = BUS_MP_UINT;
        o->v.u = t;
        return 0;
    }
    if (t >= 0xe0) {
        o->kind = BUS_MP_INT;
        o->v.i = (int64_t)(int8_t)t;
        return 0;
    }
    if (t <= 0x8f)
        return s_container(c, o, BUS_MP_MAP, t & 0x0f);
    if (t <= 0x9f)
        return s_container(c, o, BUS_MP_ARRAY, t & 0x0f);
    if (t <= 0xbf)
        return s_raw(c, o, BUS_MP_STR, t & 0x1f);

    switch (t) {
    case 0xc0:
        o->kind = BUS_MP_NIL;
        return 0;
    case 0xc2:
    case 0xc3:
        o->kind = BUS_MP_BOOL;
        o->v.b = t == 0xc3;
        return 0;
    case 0xc4:
    case 0xc5:
    case 0xc6: {
        unsigned n = 1u << (t - 0xc4);
        if (s_take_be(c, n, &v) < 0)
            return -EBADMSG;
        return s_raw(c, o, BUS_MP_BIN, v);
    }
    case 0xc7:
    case 0xc8:
    case 0xc9: {
        unsigned n = 1u << (t - 0xc7);
        if (s_take_be(c, n, &v) < 0)
            return -EBADMSG;
        return s_ext(c, o, v);
    }
    case 0xca: {
        uint32_t bits;
        float f;
        if (s_take_be(c, 4, &v) < 0)
            return -EBADMSG;
        bits = (uint32_t)v;
        memcpy(&f, &bits, sizeof f);
        o->kind = BUS_MP_FLOAT;
        o->v.f = f;
        return 0;
    }
    case 0xcb: {
        double d;
        if (s_take_be(c, 8, &v) < 0)
            return -EBADMSG;
        memcpy(&d, &v, sizeof d);
        o->kind = BUS_MP_FLOAT;
        o->v.f = d;
        return 0;
    }
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
        if (s_take_be(c, 1u << (t - 0xcc), &v) < 0)
            return -EBADMSG;
        o->kind = BUS_MP_UINT;
        o->v.u = v;
        return 0;
    case 0xd0:
        if (s_take_be(c, 1, &v) < 0)
            return -EBADMSG;
        s_signed(o, (int8_t)(uint8_t)v);
        return 0;
    case 0xd1:
        if (s_take_be(c, 2, &v) < 0)
            return -EBADMSG;
        s_signed(o, (int16_t)(uint16_t)v);
        return 0;
    case 0xd2:
        if (s_take_be(c, 4, &v) < 0)
            return -EBADMSG;
        s_signed(o, (int32_t)(uint32_t)v);
        return 0;
    case 0xd3:
        if (s_take_be(c, 8, &v) < 0)
            return -EBADMSG;
        s_signed(o, (int64_t)v);
        return 0;
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        return s_ext(c, o, 1u << (t - 0xd4));
    case 0xd9:
    case 0xda:
    case 0xdb:
        if (s_take_be(c, 1u << (t - 0xd9), &v) < 0)
            return -EBADMSG;
        return s_raw(c, o, BUS_MP_STR, v);
    case 0xdc:
    case 0xdd:
        if (s_take_be(c, t == 0xdc ? 2 : 4, &v) < 0)
            return -EBADMSG;
        return s_container(c, o, BUS_MP_ARRAY, v);
    case 0xde:
    case 0xdf:
        if (s_take_be(c, t == 0xde ? 2 : 4, &v) < 0)
            return -EBADMSG;
        return s_container(c, o, BUS_MP_MAP, v);
    default: /* 0xc1: never used */
        return -EBADMSG;
    }
}

/* Skips one value; recursion is bounded by depth (at most BUS_MP_MAX_DEPTH frames when
 * callers pass the usual limit). */
int bus_mp_skip(bus_mp_t *c, unsigned depth)
{
    bus_mp_obj_t o;
    uint64_t items;
    if (bus_mp_next(c, &o) < 0)
        return -EBADMSG;
    if (o.kind != BUS_MP_ARRAY && o.kind != BUS_MP_MAP)
        return 0;
    if (depth == 0)
        return -EBADMSG;
    items = o.kind == BUS_MP_MAP ? 2 * (uint64_t)o.v.count : o.v.count;
    for (uint64_t i = 0; i < items; i++)
        if (bus_mp_skip(c, depth - 1) < 0)
            return -EBADMSG;
    return 0;
}

/* Peeks for a nil byte. */
bool bus_mp_peek_nil(const bus_mp_t *c)
{
    return c->left > 0 && c->p[0] == 0xc0;
}

/* Reads a non-negative integer. */
int bus_mp_read_u64(bus_mp_t *c, uint64_t *out)
{
    bus_mp_obj_t o;
    if (bus_mp_next(c, &o) < 0 || o.kind != BUS_MP_UINT)
        return -EBADMSG;
    *out = o.v.u;
    return 0;
}

/* Reads an integer that fits int64_t. */
int bus_mp_read_i64(bus_mp_t *c, int64_t *out)
{
    bus_mp_obj_t o;
    if (bus_mp_next(c, &o) < 0)
        return -EBADMSG;
    if (o.kind == BUS_MP_INT) {
        *out = o.v.i;
        return 0;
    }
    if (o.kind == BUS_MP_UINT && o.v.u <= (uint64_t)INT64_MAX) {
        *out = (int64_t)o.v.u;
        return 0;
    }
    return -EBADMSG;
}

/* Reads a bool. */
int bus_mp_read_bool(bus_mp_t *c, bool *out)
{
    bus_mp_obj_t o;
    if (bus_mp_next(c, &o) < 0 || o.kind != BUS_MP_BOOL)
        return -EBADMSG;
    *out = o.v.b;
    return 0;
}

/* Reads a str or bin (kind) as a borrowed slice. */
static int s_read_raw(bus_mp_t *c, bus_mp_kind_t kind, const uint8_t **p, uint32_t *len)
{
    bus_mp_obj_t o;
    if (bus_mp_next(c, &o) < 0 || o.kind != kind)
        return -EBADMSG;
    *p = o.v.raw.p;
    *len = o.v.raw.len;
    return 0;
}

/* Reads a str. */
int bus_mp_read_str(bus_mp_t *c, const uint8_t **p, uint32_t *len)
{
    return s_read_raw(c, BUS_MP_STR, p, len);
}

/* Reads a bin. */
int bus_mp_read_bin(bus_mp_t *c, const uint8_t **p, uint32_t *len)
{
    return s_read_raw(c, BUS_MP_BIN, p, len);
}

/* Reads an array or map header (kind). */
static int s_read_hdr(bus_mp_t *c, bus_mp_kind_t kind, uint32_t *count)
{
    bus_mp_obj_t o;
    if (bus_mp_next(c, &o) < 0 || o.kind != kind)
        return -EBADMSG;
    *count = o.v.count;
    return 0;
}

/* Reads an array header. */
int bus_mp_read_array(bus_mp_t *c, uint32_t *count)
{
    return s_read_hdr(c, BUS_MP_ARRAY, count);
}

/* Reads a map header. */
int bus_mp_read_map(bus_mp_t *c, uint32_t *count)
{
    return s_read_hdr(c, BUS_MP_MAP, count);
}

/* Validates UTF-8 per RFC 3629 (the table of well-formed byte sequences in Unicode 3.9). */
bool bus_mp_utf8_valid(const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t b = p[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint8_t lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
        if (b >= 0xc2 && b <= 0xdf) {
            n = 2;
        } else if (b >= 0xe0 && b <= 0xef) {
            n = 3;
            if (b == 0xe0)
                lo = 0xa0; /* no overlongs */
            else if (b == 0xed)
                hi = 0x9f; /* no surrogates */
        } else if (b >= 0xf0 && b <= 0xf4) {
            n = 4;
            if (b == 0xf0)
                lo = 0x90; /* no overlongs */
            else if (b == 0xf4)
                hi = 0x8f; /* nothing past U+10FFFF */
        } else {
            return false;
        }
        if (len - i < n)
            return false;
        if (p[i + 1] < lo || p[i + 1] > hi)
            return false;
        for (size_t k = 2; k < n; k++)
            if (p[i + k] < 0x80 || p[i + k] > 0xbf)
                return false;
        i += n;
    }
    return true;
}
