/* test_bus_env: unit tests of the envelope codec (bus_env) and the msgpack cursor (bus_mp).
 *
 * Vectors are read from BUS_VECTOR_DIR (environment variable, else the compile-time macro,
 * else "tests/vectors" relative to the working directory). Expected values come from the
 * generator's table (tests/vectors/gen_vectors.c, included below).
 *
 * Hostile inputs are written in a small msgpack notation (see s_mk) so that each case is one
 * readable line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../bus/bus_env.h"
#include "../../bus/bus_mp.h"

#define GEN_VECTORS_NO_MAIN
#include "../vectors/gen_vectors.c"

#ifndef BUS_VECTOR_DIR
#define BUS_VECTOR_DIR "tests/vectors"
#endif

/* ---- a msgpack notation for hand-written inputs ----
 *   {k:v,...} map     [a,...] array     'text' str (escapes \xHH \\ \')     b'..' bin
 *   12 / -4 integers (non-negative packed as uint, negative as int, smallest format)
 *   1.5 float64       nil true false
 *   S(n) str of n 'a'       B(n) bin of n bytes       x(c1d9ff) raw bytes, verbatim
 *   R(n,v) inside [...]: n copies of v       D(n,v): v wrapped in n one-element arrays
 */

/* msgpack-c write callback into a bus_buf_t. */
static int s_write(void *data, const char *buf, size_t len)
{
    return bus_buf_append(data, buf, len);
}

/* Skips blanks. */
static void s_ws(const char **sp)
{
    while (**sp == ' ')
        (*sp)++;
}

/* Consumes one expected character. */
static void s_expect(const char **sp, char ch)
{
    s_ws(sp);
    if (**sp != ch)
        fail_msg("notation: want '%c' at \"%s\"", ch, *sp);
    (*sp)++;
}

/* Reads a decimal count. */
static unsigned long long s_num(const char **sp)
{
    char *end;
    unsigned long long n = strtoull(*sp, &end, 10);
    if (end == *sp)
        fail_msg("notation: want a number at \"%s\"", *sp);
    *sp = end;
    return n;
}

/* Value of a hex digit. */
static int s_hx(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    fail_msg("notation: bad hex digit '%c'", ch);
    return 0;
}

/* Reads a quoted string body (after the opening quote) into tmp. */
static void s_quoted(const char **sp, bus_buf_t *tmp)
{
    const char *s = *sp;
    while (*s != '\'') {
        uint8_t ch;
        if (!*s)
            fail_msg("notation: unterminated string");
        if (*s == '\\' && s[1] == 'x') {
            ch = (uint8_t)(s_hx(s[2]) << 4 | s_hx(s[3]));
            s += 4;
        } else if (*s == '\\') {
            ch = (uint8_t)s[1];
            s += 2;
        } else {
            ch = (uint8_t)*s++;
        }
        assert_int_equal(bus_buf_append(tmp, &ch, 1), 0);
    }
    *sp = s + 1;
}

static void s_value(const char **sp, bus_buf_t *out);

/* Reads the items of an array or map up to close; returns how many elements/pairs. */
static uint64_t s_items(const char **sp, char close, bool map, bus_buf_t *child)
{
    uint64_t count = 0;
    s_ws(sp);
    if (**sp == close) {
        (*sp)++;
        return 0;
    }
    for (;;) {
        s_ws(sp);
        if (!map && (*sp)[0] == 'R' && (*sp)[1] == '(') {
            *sp += 2;
            unsigned long long n = s_num(sp);
            s_expect(sp, ',');
            const char *start = *sp, *p = start;
            bus_buf_t junk;
            bus_buf_init(&junk, SIZE_MAX);
            for (unsigned long long i = 0; i < (n ? n : 1); i++) {
                p = start;
                s_value(&p, n ? child : &junk);
            }
            bus_buf_free(&junk);
            *sp = p;
            s_expect(sp, ')');
            count += n;
        } else {
            s_value(sp, child);
            if (map) {
                s_expect(sp, ':');
                s_value(sp, child);
            }
            count++;
        }
        s_ws(sp);
        if (**sp == ',') {
            (*sp)++;
            continue;
        }
        s_expect(sp, close);
        return count;
    }
}

/* Reads one value of the notation and packs it into out. */
static void s_value(const char **sp, bus_buf_t *out)
{
    msgpack_packer pk;
    bus_buf_t tmp;
    const char *s;
    msgpack_packer_init(&pk, out, s_write);
    bus_buf_init(&tmp, SIZE_MAX);
    s_ws(sp);
    s = *sp;
    if (*s == '{' || *s == '[') {
        *sp = s + 1;
        uint64_t n = s_items(sp, *s == '{' ? '}' : ']', *s == '{', &tmp);
        if (*s == '{')
            assert_int_equal(msgpack_pack_map(&pk, n), 0);
        else
            assert_int_equal(msgpack_pack_array(&pk, n), 0);
        assert_int_equal(bus_buf_append(out, tmp.data, tmp.len), 0);
    } else if (*s == '\'' || (s[0] == 'b' && s[1] == '\'')) {
        bool bin = *s == 'b';
        *sp = s + (bin ? 2 : 1);
        s_quoted(sp, &tmp);
        if (bin)
            assert_int_equal(
                msgpack_pack_bin_with_body(&pk, tmp.data ? (void *)tmp.data : "", tmp.len), 0);
        else
            assert_int_equal(
                msgpack_pack_str_with_body(&pk, tmp.data ? (void *)tmp.data : "", tmp.len), 0);
    } else if ((s[0] == 'S' || s[0] == 'B') && s[1] == '(') {
        *sp = s + 2;
        unsigned long long n = s_num(sp);
        s_expect(sp, ')');
        for (unsigned long long i = 0; i < n; i++) {
            uint8_t ch = s[0] == 'S' ? 'a' : (uint8_t)i;
            assert_int_equal(bus_buf_append(&tmp, &ch, 1), 0);
        }
        if (s[0] == 'S')
            assert_int_equal(msgpack_pack_str_with_body(&pk, tmp.data ? (void *)tmp.data : "", n),
                             0);
        else
            assert_int_equal(msgpack_pack_bin_with_body(&pk, tmp.data ? (void *)tmp.data : "", n),
                             0);
    } else if (s[0] == 'x' && s[1] == '(') {
        s += 2;
        while (*s != ')') {
            uint8_t ch = (uint8_t)(s_hx(s[0]) << 4 | s_hx(s[1]));
            assert_int_equal(bus_buf_append(out, &ch, 1), 0);
            s += 2;
        }
        *sp = s + 1;
    } else if (s[0] == 'D' && s[1] == '(') {
        *sp = s + 2;
        unsigned long long n = s_num(sp);
        s_expect(sp, ',');
        for (unsigned long long i = 0; i < n; i++)
            assert_int_equal(msgpack_pack_array(&pk, 1), 0);
        s_value(sp, out);
        s_expect(sp, ')');
    } else if (strncmp(s, "nil", 3) == 0) {
        *sp = s + 3;
        assert_int_equal(msgpack_pack_nil(&pk), 0);
    } else if (strncmp(s, "true", 4) == 0) {
        *sp = s + 4;
        assert_int_equal(msgpack_pack_true(&pk), 0);
    } else if (strncmp(s, "false", 5) == 0) {
        *sp = s + 5;
        assert_int_equal(msgpack_pack_false(&pk), 0);
    } else if (*s == '-' || (*s >= '0' && *s <= '9')) {
        char *end;
        size_t n = strspn(s, "-0123456789.");
        if (memchr(s, '.', n)) {
            double d = strtod(s, &end);
            assert_int_equal(msgpack_pack_double(&pk, d), 0);
        } else if (*s == '-') {
            long long v = strtoll(s, &end, 10);
            assert_int_equal(msgpack_pack_int64(&pk, v), 0);
        } else {
            unsigned long long v = strtoull(s, &end, 10);
            assert_int_equal(msgpack_pack_uint64(&pk, v), 0);
        }
        *sp = end;
    } else {
        fail_msg("notation: cannot read \"%s\"", s);
    }
    bus_buf_free(&tmp);
}

/* Packs a notation string (one or more values, back to back) into out (reset first). */
static void s_mk(const char *spec, bus_buf_t *out)
{
    const char *s = spec;
    bus_buf_reset(out);
    while (*s) {
        s_value(&s, out);
        s_ws(&s);
    }
}

/* ---- comparing envelopes field by field, expanded from envelopes.def ---- */

/* Compares two u64 fields. */
static void s_eq_U64(const uint64_t *a, const uint64_t *b, const char *name)
{
    if (*a != *b)
        fail_msg("%s: %llu != %llu", name, (unsigned long long)*a, (unsigned long long)*b);
}

/* Compares two i64 fields. */
static void s_eq_I64(const int64_t *a, const int64_t *b, const char *name)
{
    if (*a != *b)
        fail_msg("%s: %lld != %lld", name, (long long)*a, (long long)*b);
}

/* Compares two bool fields (unused until a schema has a BOOL field). */
__attribute__((unused)) static void s_eq_BOOL(const bool *a, const bool *b, const char *name)
{
    if (*a != *b)
        fail_msg("%s: bools differ", name);
}

/* Compares two str fields. */
static void s_eq_STR(const bus_str_t *a, const bus_str_t *b, const char *name)
{
    if (a->len != b->len || (a->len && memcmp(a->p, b->p, a->len) != 0))
        fail_msg("%s: \"%.*s\" != \"%.*s\"", name, (int)a->len, a->p ? a->p : "", (int)b->len,
                 b->p ? b->p : "");
}

/* Compares two bin fields. */
static void s_eq_BIN(const bus_bin_t *a, const bus_bin_t *b, const char *name)
{
    if (a->len != b->len || (a->len && memcmp(a->p, b->p, a->len) != 0))
        fail_msg("%s: bins differ (%zu vs %zu bytes)", name, a->len, b->len);
}

/* Compares two STRLISTs element by element. */
static void s_eq_STRLIST(const bus_list_t *a, const bus_list_t *b, const char *name)
{
    bus_list_t ia = *a, ib = *b;
    bus_str_t sa, sb;
    int ra, rb;
    do {
        ra = bus_list_next_str(&ia, &sa);
        rb = bus_list_next_str(&ib, &sb);
        if (ra != rb)
            fail_msg("%s: lists differ in length or validity", name);
        if (ra == 1)
            s_eq_STR(&sa, &sb, name);
    } while (ra == 1);
    assert_int_equal(ra, 0);
}

/* Compares two KVLISTs pair by pair. */
static void s_eq_KVLIST(const bus_list_t *a, const bus_list_t *b, const char *name)
{
    bus_list_t ia = *a, ib = *b;
    bus_str_t ka, va, kb, vb;
    int ra, rb;
    do {
        ra = bus_list_next_kv(&ia, &ka, &va);
        rb = bus_list_next_kv(&ib, &kb, &vb);
        if (ra != rb)
            fail_msg("%s: lists differ in length or validity", name);
        if (ra == 1) {
            s_eq_STR(&ka, &kb, name);
            s_eq_STR(&va, &vb, name);
        }
    } while (ra == 1);
    assert_int_equal(ra, 0);
}

/* Asserts two envelopes carry the same type, request id and payload. */
static void s_assert_env_eq(const bus_env_t *a, const bus_env_t *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->has_req_id, b->has_req_id);
    if (a->has_req_id)
        assert_memory_equal(a->req_id, b->req_id, BUS_REQ_ID_LEN);
    switch (a->type) {
#define BUS_F(id, name, kind, min, max, req)                                                       \
    s_eq_##kind(&a->u.id.name, &b->u.id.name, #id "." #name);
#define BUS_TYPE(ID, id, wire, fields)                                                             \
    case BUS_T_##ID:                                                                               \
        fields break;
#include "../../schemas/envelopes.def"
#undef BUS_TYPE
#undef BUS_F
    default:
        fail_msg("unexpected type %d", (int)a->type);
    }
}

/* Fails when a field holds its zero value (vectors set every field). */
static void s_set_U64(const uint64_t *v, const char *n)
{
    if (*v == 0)
        fail_msg("%s is zero", n);
}
static void s_set_I64(const int64_t *v, const char *n)
{
    if (*v == 0)
        fail_msg("%s is zero", n);
}
__attribute__((unused)) static void s_set_BOOL(const bool *v, const char *n)
{
    if (!*v)
        fail_msg("%s is false", n);
}
static void s_set_STR(const bus_str_t *v, const char *n)
{
    if (v->len == 0)
        fail_msg("%s is empty", n);
}
static void s_set_BIN(const bus_bin_t *v, const char *n)
{
    if (v->len == 0)
        fail_msg("%s is empty", n);
}
static void s_set_STRLIST(const bus_list_t *v, const char *n)
{
    if (v->count == 0)
        fail_msg("%s is empty", n);
}
static void s_set_KVLIST(const bus_list_t *v, const char *n)
{
    if (v->count == 0)
        fail_msg("%s is empty", n);
}

/* Asserts that every payload field of env is set (non-zero). */
static void s_assert_all_set(const bus_env_t *e)
{
    switch (e->type) {
#define BUS_F(id, name, kind, min, max, req) s_set_##kind(&e->u.id.name, #id "." #name);
#define BUS_TYPE(ID, id, wire, fields)                                                             \
    case BUS_T_##ID:                                                                               \
        fields break;
#include "../../schemas/envelopes.def"
#undef BUS_TYPE
#undef BUS_F
    default:
        fail_msg("unexpected type %d", (int)e->type);
    }
}

/* Decodes buf and asserts the result code; err must say something whenever it fails. */
static void s_expect_rc(const bus_buf_t *b, int want, const char *what)
{
    bus_env_t env;
    char err[256];
    int rc = bus_env_decode(b->data, b->len, &env, err, sizeof err);
    if (rc != want)
        fail_msg("%s: rc %d, want %d (%s)", what, rc, want, err);
    if (rc != 0 && err[0] == '\0')
        fail_msg("%s: no error text", what);
    if (rc != 0)
        assert_null(memchr(err, '\n', strlen(err)));
}

/* Every strict prefix of buf must fail with -EBADMSG, and a trailing byte too. */
static void s_expect_prefixes_fail(const bus_buf_t *b, bool exact)
{
    bus_env_t env;
    char err[256];
    uint8_t *copy = malloc(b->len + 1);
    assert_non_null(copy);
    if (b->len)
        memcpy(copy, b->data, b->len);
    for (size_t n = 0; n < b->len; n++) {
        /* Long inputs: every prefix near either end, and a sample in between. */
        if (b->len > 4096 && n >= 512 && n + 512 < b->len && n % 97 != 0)
            continue;
        /* A heap copy of exactly n bytes, so ASan catches any read past the end. */
        uint8_t *pre = malloc(n ? n : 1);
        assert_non_null(pre);
        memcpy(pre, copy, n);
        int rc = bus_env_decode(pre, n, &env, err, sizeof err);
        if (exact ? rc != -EBADMSG : rc == 0)
            fail_msg("prefix of %zu/%zu bytes: rc %d", n, b->len, rc);
        free(pre);
    }
    copy[b->len] = 0xc0;
    assert_int_equal(bus_env_decode(copy, b->len + 1, &env, err, sizeof err), -EBADMSG);
    free(copy);
}

/* ---- bus_mp ---- */

/* Reads one item from a notation string. */
static bus_mp_obj_t s_mp_one(const char *spec, bus_buf_t *b)
{
    bus_mp_t c;
    bus_mp_obj_t o;
    s_mk(spec, b);
    bus_mp_init(&c, b->data, b->len);
    assert_int_equal(bus_mp_next(&c, &o), 0);
    return o;
}

/* Every scalar format decodes to the right kind and value. */
static void test_mp_scalars(void **state)
{
    (void)state;
    bus_buf_t b;
    bus_mp_obj_t o;
    bus_buf_init(&b, 0);

    o = s_mp_one("x(7f)", &b);
    assert_int_equal(o.kind, BUS_MP_UINT);
    assert_int_equal(o.v.u, 127);
    o = s_mp_one("x(e0)", &b);
    assert_int_equal(o.kind, BUS_MP_INT);
    assert_int_equal(o.v.i, -32);
    o = s_mp_one("x(ff)", &b);
    assert_int_equal(o.v.i, -1);
    o = s_mp_one("x(ccff)", &b);
    assert_int_equal(o.v.u, 255);
    o = s_mp_one("x(cdffff)", &b);
    assert_int_equal(o.v.u, 65535);
    o = s_mp_one("x(ceffffffff)", &b);
    assert_int_equal(o.v.u, UINT32_MAX);
    o = s_mp_one("x(cfffffffffffffffff)", &b);
    assert_true(o.kind == BUS_MP_UINT && o.v.u == UINT64_MAX);
    o = s_mp_one("x(d080)", &b);
    assert_true(o.kind == BUS_MP_INT && o.v.i == INT8_MIN);
    o = s_mp_one("x(d18000)", &b);
    assert_true(o.kind == BUS_MP_INT && o.v.i == INT16_MIN);
    o = s_mp_one("x(d280000000)", &b);
    assert_true(o.kind == BUS_MP_INT && o.v.i == INT32_MIN);
    o = s_mp_one("x(d38000000000000000)", &b);
    assert_true(o.kind == BUS_MP_INT && o.v.i == INT64_MIN);
    o = s_mp_one("x(d07f)", &b); /* positive value in a signed format reads as UINT */
    assert_true(o.kind == BUS_MP_UINT && o.v.u == 127);
    o = s_mp_one("x(d37fffffffffffffff)", &b);
    assert_true(o.kind == BUS_MP_UINT && o.v.u == (uint64_t)INT64_MAX);
    o = s_mp_one("nil", &b);
    assert_int_equal(o.kind, BUS_MP_NIL);
    o = s_mp_one("true", &b);
    assert_true(o.kind == BUS_MP_BOOL && o.v.b);
    o = s_mp_one("false", &b);
    assert_true(o.kind == BUS_MP_BOOL && !o.v.b);
    o = s_mp_one("x(ca3fc00000)", &b);
    assert_true(o.kind == BUS_MP_FLOAT && o.v.f == 1.5);
    o = s_mp_one("x(cb4004000000000000)", &b);
    assert_true(o.kind == BUS_MP_FLOAT && o.v.f == 2.5);
    bus_buf_free(&b);
}

/* str/bin/ext in every length format, and container headers. */
static void test_mp_raw_and_containers(void **state)
{
    (void)state;
    bus_buf_t b;
    bus_mp_obj_t o;
    bus_buf_init(&b, 0);
    const struct {
        const char *spec;
        bus_mp_kind_t kind;
        uint32_t len;
    } cases[] = {
        {"x(a3616263)", BUS_MP_STR, 3},
        {"x(d903616263)", BUS_MP_STR, 3},
        {"x(da0003616263)", BUS_MP_STR, 3},
        {"x(db00000003616263)", BUS_MP_STR, 3},
        {"x(a0)", BUS_MP_STR, 0},
        {"x(c403010203)", BUS_MP_BIN, 3},
        {"x(c50003010203)", BUS_MP_BIN, 3},
        {"x(c600000003010203)", BUS_MP_BIN, 3},
        {"x(c400)", BUS_MP_BIN, 0},
        {"x(d40501)", BUS_MP_EXT, 1},
        {"x(d5050102)", BUS_MP_EXT, 2},
        {"x(d60501020304)", BUS_MP_EXT, 4},
        {"x(d7050102030405060708)", BUS_MP_EXT, 8},
        {"x(d805000102030405060708090a0b0c0d0e0f)", BUS_MP_EXT, 16},
        {"x(c70205aabb)", BUS_MP_EXT, 2},
        {"x(c8000205aabb)", BUS_MP_EXT, 2},
        {"x(c90000000205aabb)", BUS_MP_EXT, 2},
        {"x(c70005)", BUS_MP_EXT, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        o = s_mp_one(cases[i].spec, &b);
        assert_int_equal(o.kind, cases[i].kind);
        if (o.kind == BUS_MP_EXT) {
            assert_int_equal(o.v.ext.len, cases[i].len);
            assert_int_equal(o.v.ext.type, 5);
        } else {
            assert_int_equal(o.v.raw.len, cases[i].len);
            if (o.kind == BUS_MP_STR && o.v.raw.len)
                assert_memory_equal(o.v.raw.p, "abc", 3);
        }
    }
    o = s_mp_one("x(93010203)", &b);
    assert_true(o.kind == BUS_MP_ARRAY && o.v.count == 3);
    o = s_mp_one("x(dc0003010203)", &b);
    assert_true(o.kind == BUS_MP_ARRAY && o.v.count == 3);
    o = s_mp_one("x(dd00000003010203)", &b);
    assert_true(o.kind == BUS_MP_ARRAY && o.v.count == 3);
    o = s_mp_one("x(810102)", &b);
    assert_true(o.kind == BUS_MP_MAP && o.v.count == 1);
    o = s_mp_one("x(de00010102)", &b);
    assert_true(o.kind == BUS_MP_MAP && o.v.count == 1);
    o = s_mp_one("x(df000000010102)", &b);
    assert_true(o.kind == BUS_MP_MAP && o.v.count == 1);
    bus_buf_free(&b);
}

/* Truncation at every offset of every format, huge headers, 0xc1: all -EBADMSG. */
static void test_mp_truncated_and_huge(void **state)
{
    (void)state;
    static const char *const whole[] = {
        "x(ccff)",
        "x(cdffff)",
        "x(ceffffffff)",
        "x(cfffffffffffffffff)",
        "x(d080)",
        "x(d18000)",
        "x(d280000000)",
        "x(d38000000000000000)",
        "x(ca3fc00000)",
        "x(cb4004000000000000)",
        "x(a3616263)",
        "x(d903616263)",
        "x(da0003616263)",
        "x(db00000003616263)",
        "x(c403010203)",
        "x(c50003010203)",
        "x(c600000003010203)",
        "x(d40501)",
        "x(d805000102030405060708090a0b0c0d0e0f)",
        "x(c70205aabb)",
        "x(c8000205aabb)",
        "x(c90000000205aabb)",
        "x(93010203)",
        "x(dc0003010203)",
        "x(dd00000003010203)",
        "x(de00010102)",
        "x(df000000010102)",
        "{'a':[1,{'b':nil}]}",
    };
    static const char *const bad[] = {
        "x(c1)",               /* never used */
        "x(dbffffffff61)",     /* str32 of 4 GiB, 1 byte left */
        "x(c6ffffffff00)",     /* bin32 */
        "x(c9ffffffff0500)",   /* ext32 */
        "x(ddffffffff01)",     /* array32 of 4G elements */
        "x(dfffffffff0101)",   /* map32 of 4G pairs */
        "x(dc0003)",           /* array16 of 3 with nothing after */
        "x(82a161)",           /* map of 2, a key and nothing more */
        "x(9201)",             /* array of 2, one element */
        "x(de00030102030405)", /* map16 of 3 pairs: 6 items cannot fit in 5 bytes */
    };
    bus_buf_t b;
    bus_mp_t c;
    bus_buf_init(&b, 0);
    for (size_t i = 0; i < sizeof whole / sizeof whole[0]; i++) {
        s_mk(whole[i], &b);
        bus_mp_init(&c, b.data, b.len);
        assert_int_equal(bus_mp_skip(&c, BUS_MP_MAX_DEPTH), 0);
        assert_int_equal(c.left, 0);
        for (size_t n = 0; n < b.len; n++) {
            uint8_t *pre = malloc(n ? n : 1);
            memcpy(pre, b.data, n);
            bus_mp_init(&c, pre, n);
            if (bus_mp_skip(&c, BUS_MP_MAX_DEPTH) != -EBADMSG)
                fail_msg("%s: prefix %zu accepted", whole[i], n);
            free(pre);
        }
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s_mk(bad[i], &b);
        bus_mp_init(&c, b.data, b.len);
        if (bus_mp_skip(&c, BUS_MP_MAX_DEPTH) != -EBADMSG)
            fail_msg("%s accepted", bad[i]);
    }
    bus_mp_init(&c, NULL, 0);
    bus_mp_obj_t o;
    assert_int_equal(bus_mp_next(&c, &o), -EBADMSG);
    bus_buf_free(&b);
}

/* The depth limit: exactly the allowed nesting passes, one more fails, bombs fail fast. */
static void test_mp_skip_depth(void **state)
{
    (void)state;
    bus_buf_t b;
    bus_mp_t c;
    bus_buf_init(&b, 0);
    s_mk("D(32,1)", &b);
    bus_mp_init(&c, b.data, b.len);
    assert_int_equal(bus_mp_skip(&c, 32), 0);
    bus_mp_init(&c, b.data, b.len);
    assert_int_equal(bus_mp_skip(&c, 31), -EBADMSG);
    s_mk("D(33,{})", &b);
    bus_mp_init(&c, b.data, b.len);
    assert_int_equal(bus_mp_skip(&c, 32), -EBADMSG);
    s_mk("D(200000,nil)", &b); /* would blow the stack without a limit */
    bus_mp_init(&c, b.data, b.len);
    assert_int_equal(bus_mp_skip(&c, BUS_MP_MAX_DEPTH), -EBADMSG);
    s_mk("[R(20000,[{},[],'x',1.5,nil])]", &b); /* wide is fine */
    bus_mp_init(&c, b.data, b.len);
    assert_int_equal(bus_mp_skip(&c, 2), -EBADMSG);
    bus_mp_init(&c, b.data, b.len);
    assert_int_equal(bus_mp_skip(&c, 3), 0);
    assert_int_equal(c.left, 0);
    s_mk("7", &b);
    bus_mp_init(&c, b.data, b.len);
    assert_int_equal(bus_mp_skip(&c, 0), 0);
    s_mk("[]", &b);
    bus_mp_init(&c, b.data, b.len);
    assert_int_equal(bus_mp_skip(&c, 0), -EBADMSG);
    bus_buf_free(&b);
}

/* Typed readers accept exactly their kind. */
static void test_mp_typed_readers(void **state)
{
    (void)state;
    bus_buf_t b;
    bus_mp_t c;
    uint64_t u;
    int64_t i;
    bool bl;
    const uint8_t *p;
    uint32_t n;
    bus_buf_init(&b, 0);

#define S_AT(spec) (s_mk(spec, &b), bus_mp_init(&c, b.data, b.len), &c)
    assert_int_equal(bus_mp_read_u64(S_AT("x(d1ffff)"), &u), -EBADMSG); /* -1 */
    assert_int_equal(bus_mp_read_u64(S_AT("x(d10005)"), &u), 0);
    assert_int_equal(u, 5);
    assert_int_equal(bus_mp_read_u64(S_AT("'1'"), &u), -EBADMSG);
    assert_int_equal(bus_mp_read_u64(S_AT("1.0"), &u), -EBADMSG);
    assert_int_equal(bus_mp_read_u64(S_AT("true"), &u), -EBADMSG);
    assert_int_equal(bus_mp_read_i64(S_AT("x(cf8000000000000000)"), &i), -EBADMSG);
    assert_int_equal(bus_mp_read_i64(S_AT("x(cf7fffffffffffffff)"), &i), 0);
    assert_true(i == INT64_MAX);
    assert_int_equal(bus_mp_read_i64(S_AT("-7"), &i), 0);
    assert_int_equal(i, -7);
    assert_int_equal(bus_mp_read_bool(S_AT("1"), &bl), -EBADMSG);
    assert_int_equal(bus_mp_read_bool(S_AT("true"), &bl), 0);
    assert_true(bl);
    assert_int_equal(bus_mp_read_str(S_AT("b'ab'"), &p, &n), -EBADMSG);
    assert_int_equal(bus_mp_read_str(S_AT("'ab'"), &p, &n), 0);
    assert_true(n == 2 && memcmp(p, "ab", 2) == 0);
    assert_int_equal(bus_mp_read_bin(S_AT("'ab'"), &p, &n), -EBADMSG);
    assert_int_equal(bus_mp_read_bin(S_AT("b'\\x00\\xff'"), &p, &n), 0);
    assert_true(n == 2 && p[1] == 0xff);
    assert_int_equal(bus_mp_read_array(S_AT("{}"), &n), -EBADMSG);
    assert_int_equal(bus_mp_read_map(S_AT("[]"), &n), -EBADMSG);
    assert_int_equal(bus_mp_read_map(S_AT("{1:2}"), &n), 0);
    assert_int_equal(n, 1);
    assert_true(bus_mp_peek_nil(S_AT("nil")));
    assert_false(bus_mp_peek_nil(S_AT("0")));
    bus_mp_init(&c, NULL, 0);
    assert_false(bus_mp_peek_nil(&c));
#undef S_AT
    bus_buf_free(&b);
}

/* UTF-8 validation: RFC 3629 well-formedness. */
static void test_mp_utf8(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t len;
        bool ok;
    } cases[] = {
        {"", 0, true},
        {"plain ascii", 11, true},
        {"\x00nul", 4, true},
        {"\xc3\xa9", 2, true},          /* é */
        {"\xe4\xb8\x96", 3, true},      /* 世 */
        {"\xf0\x9f\x8c\x8d", 4, true},  /* U+1F30D */
        {"\xf4\x8f\xbf\xbf", 4, true},  /* U+10FFFF */
        {"\xef\xbf\xbf", 3, true},      /* U+FFFF */
        {"\xc0\x80", 2, false},         /* overlong NUL */
        {"\xc1\xbf", 2, false},         /* overlong */
        {"\xe0\x80\xaf", 3, false},     /* overlong 3-byte */
        {"\xf0\x80\x80\xaf", 4, false}, /* overlong 4-byte */
        {"\xed\xa0\x80", 3, false},     /* surrogate U+D800 */
        {"\xed\xbf\xbf", 3, false},     /* surrogate U+DFFF */
        {"\xf4\x90\x80\x80", 4, false}, /* U+110000 */
        {"\xf5\x80\x80\x80", 4, false}, /* lead byte past F4 */
        {"\xff", 1, false},
        {"\x80", 1, false}, /* lone continuation */
        {"\xc3", 1, false}, /* cut short */
        {"\xe4\xb8", 2, false},
        {"\xf0\x9f\x8c", 3, false},
        {"\xc3\x28", 2, false}, /* bad continuation */
        {"\xe4\x28\x96", 3, false},
        {"\xf0\x9f\x28\x8d", 4, false},
        {"ok\xc3\xa9then\xed\x9f\xbf", 11, true}, /* U+D7FF, just below surrogates */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (bus_mp_utf8_valid((const uint8_t *)cases[i].s, cases[i].len) != cases[i].ok)
            fail_msg("utf8 case %zu", i);
}

/* ---- bus_env ---- */

/* Type names map both ways; unknown gives "?" / BUS_T_UNKNOWN. */
static void test_type_names(void **state)
{
    (void)state;
    for (unsigned t = 1; t < BUS_T__COUNT; t++) {
        const char *n = bus_type_name((bus_type_t)t);
        assert_string_not_equal(n, "?");
        assert_int_equal(bus_type_from_name(n, strlen(n)), t);
    }
    assert_string_equal(bus_type_name(BUS_T_ADMIN_ECHO), "admin.echo");
    assert_string_equal(bus_type_name(BUS_T_REQ_OPEN), "req.open");
    assert_string_equal(bus_type_name(BUS_T_UNKNOWN), "?");
    assert_string_equal(bus_type_name(BUS_T__COUNT), "?");
    assert_string_equal(bus_type_name((bus_type_t)-1), "?");
    assert_int_equal(bus_type_from_name("admin.echo", 5), BUS_T_UNKNOWN);
    assert_int_equal(bus_type_from_name("admin.echoo", 11), BUS_T_UNKNOWN);
    assert_int_equal(bus_type_from_name(NULL, 0), BUS_T_UNKNOWN);
    assert_int_equal(bus_type_from_name("", 0), BUS_T_UNKNOWN);
}

/* Every type, all fields set: encode, decode, compare, re-encode byte for byte, and every
 * strict prefix and a trailing byte fail. Also checks the vectors cover every type. */
static void test_roundtrip_all_types(void **state)
{
    (void)state;
    bool covered[BUS_T__COUNT] = {false};
    bus_buf_t out, out2, scratch;
    bus_buf_init(&out, 0);
    bus_buf_init(&out2, 0);
    bus_buf_init(&scratch, 0);
    for (size_t i = 0; i < GV_NVECTORS; i++) {
        bus_env_t env = {0}, dec;
        char err[256], *json;
        if (gv_vectors[i].pack)
            continue;
        gv_vectors[i].build(&env, &scratch);
        assert_int_not_equal(env.type, BUS_T_UNKNOWN);
        covered[env.type] = true;
        s_assert_all_set(&env);
        bus_buf_reset(&out);
        assert_int_equal(bus_env_encode(&env, &out), 0);
        int rc = bus_env_decode(out.data, out.len, &dec, err, sizeof err);
        if (rc != 0)
            fail_msg("%s: decode %d: %s", gv_vectors[i].file, rc, err);
        assert_int_equal(dec.version, BUS_PROTO_VERSION);
        s_assert_env_eq(&env, &dec);
        bus_buf_reset(&out2);
        assert_int_equal(bus_env_encode(&dec, &out2), 0);
        assert_int_equal(out.len, out2.len);
        assert_memory_equal(out.data, out2.data, out.len);
        s_expect_prefixes_fail(&out, true);
        assert_int_equal(bus_env_to_json(&dec, &json), 0);
        char head[64];
        snprintf(head, sizeof head, "{\"v\":1,\"type\":\"%s\",", bus_type_name(env.type));
        assert_memory_equal(json, head, strlen(head));
        free(json);

        /* The same envelope without a request id. */
        env.has_req_id = !env.has_req_id;
        bus_buf_reset(&out);
        assert_int_equal(bus_env_encode(&env, &out), 0);
        assert_int_equal(bus_env_decode(out.data, out.len, &dec, err, sizeof err), 0);
        s_assert_env_eq(&env, &dec);
    }
    for (unsigned t = 1; t < BUS_T__COUNT; t++)
        if (!covered[t])
            fail_msg("no vector for type %s", bus_type_name((bus_type_t)t));
    bus_buf_free(&out);
    bus_buf_free(&out2);
    bus_buf_free(&scratch);
}

/* Minimal envelopes: optional fields left zero are omitted and come back zero. */
static void test_roundtrip_minimal(void **state)
{
    (void)state;
    bus_buf_t out;
    bus_env_t env, dec;
    char err[128];
    bus_buf_init(&out, 0);
    for (unsigned t = 1; t < BUS_T__COUNT; t++) {
        memset(&env, 0, sizeof env);
        env.type = (bus_type_t)t;
        bus_buf_reset(&out);
        int rc = bus_env_encode(&env, &out);
        /* Types with a bin of fixed length or a non-empty string need those set. */
        if (rc == -EINVAL)
            continue;
        assert_int_equal(rc, 0);
        assert_int_equal(bus_env_decode(out.data, out.len, &dec, err, sizeof err), 0);
        s_assert_env_eq(&env, &dec);
    }
    /* ping with nothing: {"v":1,"type":"ping","payload":{}} */
    memset(&env, 0, sizeof env);
    env.type = BUS_T_PING;
    bus_buf_reset(&out);
    assert_int_equal(bus_env_encode(&env, &out), 0);
    static const uint8_t want[] = {0x83, 0xa1, 'v',  1,   0xa4, 't', 'y', 'p', 'e', 0xa4, 'p', 'i',
                                   'n',  'g',  0xa7, 'p', 'a',  'y', 'l', 'o', 'a', 'd',  0x80};
    assert_int_equal(out.len, sizeof want);
    assert_memory_equal(out.data, want, sizeof want);
    bus_buf_free(&out);
}

/* Reads a whole file into b. */
static int s_read_file(const char *path, bus_buf_t *b)
{
    FILE *f = fopen(path, "rb");
    uint8_t chunk[4096];
    size_t n;
    if (!f)
        return -errno;
    bus_buf_reset(b);
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (bus_buf_append(b, chunk, n) < 0)
            break;
    fclose(f);
    return 0;
}

/* Decodes every file of tests/vectors and compares it with the generator's envelope;
 * canonical vectors must also be exactly what the encoder produces today. */
static void test_vectors(void **state)
{
    (void)state;
    const char *dir = getenv("BUS_VECTOR_DIR");
    bus_buf_t file, out, scratch;
    char path[4096], err[256];
    if (!dir || !*dir)
        dir = BUS_VECTOR_DIR;
    bus_buf_init(&file, 0);
    bus_buf_init(&out, 0);
    bus_buf_init(&scratch, 0);
    for (size_t i = 0; i < GV_NVECTORS; i++) {
        bus_env_t want = {0}, got;
        snprintf(path, sizeof path, "%s/%s", dir, gv_vectors[i].file);
        if (s_read_file(path, &file) < 0)
            fail_msg("cannot read %s (set BUS_VECTOR_DIR)", path);
        gv_vectors[i].build(&want, &scratch);
        int rc = bus_env_decode(file.data, file.len, &got, err, sizeof err);
        if (rc != 0)
            fail_msg("%s: rc %d: %s", path, rc, err);
        assert_int_equal(got.version, 1);
        s_assert_env_eq(&want, &got);
        /* The committed file is what the generator (and so the encoder) produces today. */
        assert_int_equal(gv_vector_bytes(i, &out), 0);
        if (out.len != file.len || memcmp(out.data, file.data, out.len) != 0)
            fail_msg("%s: differs from what gen_vectors.c produces now", path);
        s_expect_prefixes_fail(&file, true);
    }

    /* A few explicit checks, spelled out. */
    bus_env_t e;
    bus_str_t k, v;
    snprintf(path, sizeof path, "%s/req_open.bin", dir);
    assert_int_equal(s_read_file(path, &file), 0);
    assert_int_equal(bus_env_decode(file.data, file.len, &e, err, sizeof err), 0);
    assert_int_equal(e.type, BUS_T_REQ_OPEN);
    assert_true(e.has_req_id && e.req_id[0] == 0x00 && e.req_id[15] == 0xff);
    assert_int_equal(e.u.req_open.attempt, 2);
    assert_int_equal(e.u.req_open.body_size, -1);
    assert_true(e.u.req_open.model.len == 16 &&
                !memcmp(e.u.req_open.model.p, "claude-3-5-haiku", 16));
    assert_int_equal(e.u.req_open.headers.count, 3);
    assert_int_equal(bus_list_next_kv(&e.u.req_open.headers, &k, &v), 1);
    assert_true(k.len == 12 && !memcmp(k.p, "content-type", 12));
    assert_true(v.len == 16 && !memcmp(v.p, "application/json", 16));

    snprintf(path, sizeof path, "%s/x_admin_echo_reordered.bin", dir);
    assert_int_equal(s_read_file(path, &file), 0);
    assert_int_equal(bus_env_decode(file.data, file.len, &e, err, sizeof err), 0);
    assert_int_equal(e.type, BUS_T_ADMIN_ECHO);
    assert_false(e.has_req_id);
    assert_true(e.u.admin_echo.text.len == 9 && !memcmp(e.u.admin_echo.text.p, "reordered", 9));

    snprintf(path, sizeof path, "%s/challenge.bin", dir);
    assert_int_equal(s_read_file(path, &file), 0);
    assert_int_equal(bus_env_decode(file.data, file.len, &e, err, sizeof err), 0);
    assert_int_equal(e.u.challenge.nonce.len, 32);
    assert_int_equal(e.u.challenge.nonce.p[1], 7);
    assert_true(e.u.challenge.expires_ms == 1718000000000ull);

    bus_buf_free(&file);
    bus_buf_free(&out);
    bus_buf_free(&scratch);
}

/* One hostile input and the code it must produce. */
typedef struct {
    const char *spec; /* notation (see s_mk) */
    int rc;           /* expected return */
} s_bad_t;

#define E_ "{'v':1,'type':"
#define RID_ "b'0123456789abcdef'"

/* Malformed and unsupported envelopes: each returns its code with an error line, and no
 * prefix of it is accepted. */
static void test_malformed(void **state)
{
    (void)state;
    static const s_bad_t cases[] = {
        /* top level */
        {"x()", -EBADMSG},        /* empty input */
        {"[1,'ping']", -EBADMSG}, /* array, not a map */
        {"'ping'", -EBADMSG},     /* str, not a map */
        {"nil", -EBADMSG},
        {"{}", -EBADMSG},                           /* no v, no type */
        {"{1:1,'type':'ping'}", -EBADMSG},          /* int key */
        {"{b'v':1,'type':'ping'}", -EBADMSG},       /* bin key */
        {"{'type':'ping','payload':{}}", -EBADMSG}, /* no v */
        {"{'v':1,'payload':{}}", -EBADMSG},         /* no type */
        {"{'v':'1','type':'ping'}", -EBADMSG},      /* v as str */
        {"{'v':-1,'type':'ping'}", -EBADMSG},       /* v negative */
        {"{'v':1.0,'type':'ping'}", -EBADMSG},      /* v as float */
        {"{'v':0,'type':'ping'}", -EPROTO},
        {"{'v':2,'type':'ping'}", -EPROTO},
        {"{'v':18446744073709551615,'type':'ping'}", -EPROTO},
        {"{'v':2,'type':'no.such'}", -EPROTO}, /* version checked first */
        {E_ "b'ping'}", -EBADMSG},             /* type as bin */
        {E_ "nil}", -EBADMSG},
        {E_ "'pi\\xffng'}", -EBADMSG}, /* type not UTF-8 */
        {E_ "'no.such','req_id':" RID_ "}", -ENOTSUP},
        {E_ "'ping','req_id':b'0123456789abcde'}", -EBADMSG},   /* req_id 15 bytes */
        {E_ "'ping','req_id':b'0123456789abcdefg'}", -EBADMSG}, /* 17 bytes */
        {E_ "'ping','req_id':'0123456789abcdef'}", -EBADMSG},   /* str, not bin */
        {E_ "'ping','req_id':7}", -EBADMSG},
        {E_ "'ping','payload':[]}", -EBADMSG}, /* payload not a map */
        {E_ "'ping','payload':nil}", -EBADMSG},
        {E_ "'ping','type':'pong'}", -EBADMSG}, /* repeated known key */
        {"{'v':1,'v':1,'type':'ping'}", -EBADMSG},
        {E_ "'ping','req_id':nil,'req_id':" RID_ "}", -EBADMSG},
        {E_ "'ping','payload':{},'payload':{}}", -EBADMSG},
        {E_ "'ping','junk':D(40,1)}", -EBADMSG},           /* nesting bomb, top level */
        {E_ "'ping','junk':x(ddffffffff00)}", -EBADMSG},   /* array32 header, no elements */
        {E_ "'ping','junk':x(dfffffffff00)}", -EBADMSG},   /* map32 header */
        {E_ "'ping','junk':x(c9ffffffff0500)}", -EBADMSG}, /* ext32 past the end */
        {E_ "'ping','junk':x(c1)}", -EBADMSG},             /* never-used byte */
        {"x(dfffffffff)", -EBADMSG},                       /* map32 top level, no bytes */
        /* payload: types and shapes */
        {E_ "'ping','payload':{1:2}}", -EBADMSG},        /* int key */
        {E_ "'ping','payload':{'seq':'1'}}", -EBADMSG},  /* str where u64 */
        {E_ "'ping','payload':{'seq':-1}}", -EBADMSG},   /* negative u64 */
        {E_ "'ping','payload':{'seq':1.5}}", -EBADMSG},  /* float where u64 */
        {E_ "'ping','payload':{'seq':true}}", -EBADMSG}, /* bool where u64 */
        {E_ "'credit','payload':{'bytes':[]}}", -EBADMSG},
        {E_ "'error','payload':{'code':9223372036854775808}}", -EBADMSG}, /* past int64 */
        {E_ "'error','payload':{'code':'x'}}", -EBADMSG},
        {E_ "'admin.echo','payload':{'text':b'hi'}}", -EBADMSG}, /* bin where str */
        {E_ "'req.body','payload':{'data':'hi'}}", -EBADMSG},    /* str where bin */
        {E_ "'ping','payload':{'seq':1,'seq':2}}", -EBADMSG},    /* repeated field */
        {E_ "'ping','payload':{'seq':nil,'seq':2}}", -EBADMSG},
        {E_ "'ping','payload':{'zz':D(40,1)}}", -EBADMSG},       /* bomb in payload */
        {E_ "'ping','payload':{'zz':x(db7fffffff)}}", -EBADMSG}, /* str32 past the end */
        {E_ "'admin.echo','payload':{'text':x(dbffffffff)}}", -EBADMSG},
        {E_ "'req.body','payload':{'data':x(c6ffffffff00)}}", -EBADMSG},
        /* lengths and required fields */
        {E_ "'challenge','payload':{'proto_version':1,'nonce':B(31)}}", -EBADMSG},
        {E_ "'challenge','payload':{'proto_version':1,'nonce':B(33)}}", -EBADMSG},
        {E_ "'auth','payload':{'agent_id':'a','nonce':B(32),'signature':B(63)}}", -EBADMSG},
        {E_ "'auth','payload':{'agent_id':S(65),'nonce':B(32),'signature':B(64)}}", -EBADMSG},
        {E_ "'auth','payload':{'agent_id':'','nonce':B(32),'signature':B(64)}}", -EBADMSG},
        {E_ "'admin.echo','payload':{'text':S(65537)}}", -EBADMSG},          /* text over 64 KiB */
        {E_ "'admin.echo','payload':{'text':'\\xc0\\x80'}}", -EBADMSG},      /* overlong */
        {E_ "'admin.echo','payload':{'text':'\\xed\\xa0\\x80'}}", -EBADMSG}, /* surrogate */
        {E_ "'admin.echo','payload':{'text':'ok\\xe4\\xb8'}}", -EBADMSG},    /* cut short */
        {E_ "'admin.echo','payload':{'agent_id':'a'}}", -EBADMSG}, /* required text missing */
        {E_ "'admin.echo','payload':{'text':nil}}", -EBADMSG},     /* required as nil */
        {E_ "'admin.echo'}", -EBADMSG},                            /* no payload at all */
        {E_ "'resp.head','payload':{'headers':[]}}", -EBADMSG},    /* no status */
        {E_ "'challenge','payload':{'nonce':B(32)}}", -EBADMSG},   /* no proto_version */
        /* lists */
        {E_ "'presence','payload':{'agent_id':'a','state':'up','models':'gpt'}}", -EBADMSG},
        {E_ "'presence','payload':{'agent_id':'a','state':'up','models':[1]}}", -EBADMSG},
        {E_ "'presence','payload':{'agent_id':'a','state':'up','models':['\\xff']}}", -EBADMSG},
        {E_ "'presence','payload':{'agent_id':'a','state':'up','models':[S(8193)]}}", -EBADMSG},
        {E_ "'presence','payload':{'agent_id':'a','state':'up','models':[R(257,'m')]}}", -EBADMSG},
        {E_ "'presence','payload':{'agent_id':'a','state':'up','models':x(dcffff)}}", -EBADMSG},
        {E_ "'req.open','payload':{'headers':[['a','b','c']]}}", -EBADMSG},
        {E_ "'req.open','payload':{'headers':[['a']]}}", -EBADMSG},
        {E_ "'req.open','payload':{'headers':['a','b']}}", -EBADMSG},
        {E_ "'req.open','payload':{'headers':[['a',1]]}}", -EBADMSG},
        {E_ "'req.open','payload':{'headers':[[b'a','b']]}}", -EBADMSG},
        {E_ "'req.open','payload':{'headers':[R(129,['a','b'])]}}", -EBADMSG},
        {E_ "'req.open','payload':{'headers':{'a':'b'}}}", -EBADMSG},
    };
    bus_buf_t b;
    bus_buf_init(&b, 0);
    size_t n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n; i++) {
        s_mk(cases[i].spec, &b);
        s_expect_rc(&b, cases[i].rc, cases[i].spec);
        s_expect_prefixes_fail(&b, false);
    }
    /* Trailing bytes (a prefix of these is a valid envelope). */
    static const char *const trailing[] = {
        E_ "'ping'}x(c0)",                 /* one garbage byte */
        E_ "'ping'}{'v':1,'type':'ping'}", /* two envelopes back to back */
        E_ "'ping'}x(00000000)",
    };
    for (size_t i = 0; i < sizeof trailing / sizeof trailing[0]; i++) {
        s_mk(trailing[i], &b);
        s_expect_rc(&b, -EBADMSG, trailing[i]);
    }
    n += sizeof trailing / sizeof trailing[0];
    print_message("%zu malformed inputs rejected\n", n);
    bus_buf_free(&b);
}

/* Unknown fields and keys of every shape are skipped; nil optional fields read as zero. */
static void test_unknown_skipped(void **state)
{
    (void)state;
    bus_buf_t b;
    bus_env_t e;
    char err[256];
    bus_buf_init(&b, 0);
    s_mk("{'zz':{'a':[1,-2,1.5,nil,true,b'x',x(d40501),{}]},'v':1,'payload':{'later':"
         "x(c70305aabbcc),'seq':7,'t_us':nil,'more':D(28,'deep')},'type':'ping','req_id':nil}",
         &b);
    assert_int_equal(bus_env_decode(b.data, b.len, &e, err, sizeof err), 0);
    assert_int_equal(e.type, BUS_T_PING);
    assert_false(e.has_req_id);
    assert_int_equal(e.u.ping.seq, 7);
    assert_int_equal(e.u.ping.t_us, 0);
    /* u64 from a signed format with a positive value */
    s_mk(E_ "'credit','payload':{'bytes':x(d200010000)}}", &b);
    assert_int_equal(bus_env_decode(b.data, b.len, &e, err, sizeof err), 0);
    assert_int_equal(e.u.credit.bytes, 65536);
    /* i64 extremes */
    s_mk(E_ "'error','payload':{'code':-9223372036854775808}}", &b);
    assert_int_equal(bus_env_decode(b.data, b.len, &e, err, sizeof err), 0);
    assert_true(e.u.error.code == INT64_MIN);
    s_mk(E_ "'error','payload':{'code':9223372036854775807}}", &b);
    assert_int_equal(bus_env_decode(b.data, b.len, &e, err, sizeof err), 0);
    assert_true(e.u.error.code == INT64_MAX);
    /* limits are inclusive */
    s_mk(E_ "'admin.echo','payload':{'text':S(65536),'agent_id':S(64)}}", &b);
    assert_int_equal(bus_env_decode(b.data, b.len, &e, err, sizeof err), 0);
    assert_int_equal(e.u.admin_echo.text.len, 65536);
    s_mk(E_ "'presence','payload':{'agent_id':'a','state':'up','models':[R(256,S(4000))]}}", &b);
    assert_int_equal(bus_env_decode(b.data, b.len, &e, err, sizeof err), 0);
    assert_int_equal(e.u.presence.models.count, 256);
    s_mk(E_ "'presence','payload':{'agent_id':'a','state':'up','models':[S(8192)]}}", &b);
    assert_int_equal(bus_env_decode(b.data, b.len, &e, err, sizeof err), 0);
    /* nesting up to the limit below an unknown key is fine */
    s_mk(E_ "'ping','junk':D(30,1)}", &b);
    assert_int_equal(bus_env_decode(b.data, b.len, &e, err, sizeof err), 0);
    s_mk(E_ "'ping','junk':D(31,1)}", &b);
    assert_int_equal(bus_env_decode(b.data, b.len, &e, err, sizeof err), 0);
    s_mk(E_ "'ping','junk':D(32,1)}", &b);
    assert_int_equal(bus_env_decode(b.data, b.len, &e, err, sizeof err), -EBADMSG);
    bus_buf_free(&b);
}

/* Unknown type: -ENOTSUP, err names the type, req_id still filled in. */
static void test_unknown_type(void **state)
{
    (void)state;
    bus_buf_t b;
    bus_env_t e;
    char err[256];
    bus_buf_init(&b, 0);
    s_mk("{'payload':{'x':1},'req_id':" RID_ ",'type':'ledger.frob','v':1}", &b);
    assert_int_equal(bus_env_decode(b.data, b.len, &e, err, sizeof err), -ENOTSUP);
    assert_int_equal(e.type, BUS_T_UNKNOWN);
    assert_true(e.has_req_id);
    assert_memory_equal(e.req_id, "0123456789abcdef", 16);
    assert_non_null(strstr(err, "\"ledger.frob\""));
    /* a hostile name is cut and made printable in err */
    s_mk(E_ "'a\\\"b\\x01c\\x0ad\\xc3\\xa9"
            "0123456789012345678901234567890123456789012345678"
            "9'}",
         &b);
    assert_int_equal(bus_env_decode(b.data, b.len, &e, err, sizeof err), -ENOTSUP);
    assert_null(strchr(err, '\n'));
    assert_non_null(strstr(err, "a?b?c?d??"));
    assert_non_null(strstr(err, "...\""));
    /* -EPROTO also keeps the req_id and the version */
    s_mk("{'v':7,'type':'ping','req_id':" RID_ "}", &b);
    assert_int_equal(bus_env_decode(b.data, b.len, &e, err, sizeof err), -EPROTO);
    assert_true(e.has_req_id);
    assert_int_equal(e.version, 7);
    /* a payload error keeps req_id and type, and zeroes the payload */
    s_mk(E_ "'ping','req_id':" RID_ ",'payload':{'seq':5,'t_us':'x'}}", &b);
    assert_int_equal(bus_env_decode(b.data, b.len, &e, err, sizeof err), -EBADMSG);
    assert_true(e.has_req_id);
    assert_int_equal(e.type, BUS_T_PING);
    assert_int_equal(e.u.ping.seq, 0);
    assert_non_null(strstr(err, "t_us"));
    /* err may be NULL or tiny */
    assert_int_equal(bus_env_decode(b.data, b.len, &e, NULL, 0), -EBADMSG);
    assert_int_equal(bus_env_decode(b.data, b.len, &e, err, 1), -EBADMSG);
    assert_int_equal(err[0], '\0');
    bus_buf_free(&b);
}

/* Inputs over BUS_ENV_MAX_BYTES are refused before anything is parsed; at the limit they are
 * parsed. */
static void test_max_bytes(void **state)
{
    (void)state;
    bus_buf_t b;
    bus_env_t e;
    char err[256];
    bus_buf_init(&b, BUS_ENV_MAX_BYTES + 16);
    s_mk(E_ "'req.body','payload':{'data':B(1048576)}}", &b);
    assert_true(b.len < BUS_ENV_MAX_BYTES);
    assert_int_equal(bus_env_decode(b.data, b.len, &e, err, sizeof err), 0);
    assert_int_equal(e.u.req_body.data.len, 1048576);
    s_mk(E_ "'req.body','payload':{'data':B(1048577)}}", &b);
    assert_int_equal(bus_env_decode(b.data, b.len, &e, err, sizeof err), -EBADMSG);
    assert_non_null(strstr(err, "data"));
    /* an unknown field pads the envelope to one byte over the limit */
    size_t pad = BUS_ENV_MAX_BYTES + 1 - 22; /* 22 bytes of envelope around the bin */
    char spec[128];
    snprintf(spec, sizeof spec, E_ "'ping','zz':B(%zu)}", pad);
    s_mk(spec, &b);
    while (b.len > BUS_ENV_MAX_BYTES + 1) {
        pad--;
        snprintf(spec, sizeof spec, E_ "'ping','zz':B(%zu)}", pad);
        s_mk(spec, &b);
    }
    while (b.len < BUS_ENV_MAX_BYTES + 1) {
        pad++;
        snprintf(spec, sizeof spec, E_ "'ping','zz':B(%zu)}", pad);
        s_mk(spec, &b);
    }
    assert_int_equal(b.len, BUS_ENV_MAX_BYTES + 1);
    assert_int_equal(bus_env_decode(b.data, b.len, &e, err, sizeof err), -EBADMSG);
    assert_int_equal(bus_env_decode(b.data, b.len - 1, &e, err, sizeof err), -EBADMSG);
    snprintf(spec, sizeof spec, E_ "'ping','zz':B(%zu)}", pad - 1);
    s_mk(spec, &b);
    assert_int_equal(b.len, BUS_ENV_MAX_BYTES);
    assert_int_equal(bus_env_decode(b.data, b.len, &e, err, sizeof err), 0);
    bus_buf_free(&b);
}

/* The encoder refuses what the decoder would refuse. */
static void test_encode_invalid(void **state)
{
    (void)state;
    static const uint8_t bytes[64] = {1};
    bus_buf_t out, scratch;
    bus_env_t e;
    bus_buf_init(&out, 0);
    bus_buf_init(&scratch, 0);

    memset(&e, 0, sizeof e);
    assert_int_equal(bus_env_encode(&e, &out), -EINVAL); /* BUS_T_UNKNOWN */
    e.type = BUS_T__COUNT;
    assert_int_equal(bus_env_encode(&e, &out), -EINVAL);
    e.type = BUS_T_PING;
    e.version = 2;
    assert_int_equal(bus_env_encode(&e, &out), -EINVAL);
    e.version = 1;
    assert_int_equal(bus_env_encode(&e, &out), 0);

    memset(&e, 0, sizeof e);
    e.type = BUS_T_CHALLENGE;
    e.u.challenge.nonce = (bus_bin_t){bytes, 31};
    assert_int_equal(bus_env_encode(&e, &out), -EINVAL); /* nonce not 32 */
    e.u.challenge.nonce.len = 0;
    assert_int_equal(bus_env_encode(&e, &out), -EINVAL); /* required, so sent, so checked */
    e.u.challenge.nonce.len = 32;
    assert_int_equal(bus_env_encode(&e, &out), 0);
    e.u.challenge.nonce.p = NULL;
    assert_int_equal(bus_env_encode(&e, &out), -EINVAL); /* NULL with a length */

    memset(&e, 0, sizeof e);
    e.type = BUS_T_AUTH;
    e.u.auth.agent_id = bus_str_c("a");
    e.u.auth.nonce = (bus_bin_t){bytes, 32};
    e.u.auth.signature = (bus_bin_t){bytes, 63};
    assert_int_equal(bus_env_encode(&e, &out), -EINVAL);
    e.u.auth.signature.len = 64;
    assert_int_equal(bus_env_encode(&e, &out), 0);
    e.u.auth.agent_id = bus_str_c("");
    assert_int_equal(bus_env_encode(&e, &out), -EINVAL); /* under its minimum */
    char long_id[66];
    memset(long_id, 'x', 65);
    long_id[65] = '\0';
    e.u.auth.agent_id = bus_str_c(long_id);
    assert_int_equal(bus_env_encode(&e, &out), -EINVAL); /* 65 > 64 */
    long_id[64] = '\0';
    e.u.auth.agent_id = bus_str_c(long_id);
    assert_int_equal(bus_env_encode(&e, &out), 0);

    memset(&e, 0, sizeof e);
    e.type = BUS_T_ADMIN_ECHO;
    e.u.admin_echo.text = bus_str_c("bad \xc0\x80 utf8");
    assert_int_equal(bus_env_encode(&e, &out), -EINVAL);
    e.u.admin_echo.text = bus_str_c("fine");
    e.u.admin_echo.agent_id = bus_str_c("\xed\xa0\x80");
    assert_int_equal(bus_env_encode(&e, &out), -EINVAL); /* optional, but set: checked */

    /* lists: too many, malformed raw bytes, count/bytes mismatch */
    memset(&e, 0, sizeof e);
    e.type = BUS_T_PRESENCE;
    e.u.presence.agent_id = bus_str_c("a");
    e.u.presence.state = bus_str_c("up");
    bus_str_t many[257];
    for (int i = 0; i < 257; i++)
        many[i] = bus_str_c("m");
    assert_int_equal(bus_list_encode_strs(&scratch, many, 257, &e.u.presence.models), 0);
    assert_int_equal(bus_env_encode(&e, &out), -EINVAL);
    assert_int_equal(bus_list_encode_strs(&scratch, many, 256, &e.u.presence.models), 0);
    assert_int_equal(bus_env_encode(&e, &out), 0);
    e.u.presence.models.count = 255; /* bytes for 256 */
    assert_int_equal(bus_env_encode(&e, &out), -EINVAL);
    e.u.presence.models.count = 0; /* count 0 but bytes left */
    assert_int_equal(bus_env_encode(&e, &out), -EINVAL);
    static const uint8_t not_strs[] = {0x01, 0x02};
    e.u.presence.models = (bus_list_t){not_strs, 2, 2};
    assert_int_equal(bus_env_encode(&e, &out), -EINVAL);
    bus_str_t bad = {"\xff", 1};
    assert_int_equal(bus_list_encode_strs(&scratch, &bad, 1, &e.u.presence.models), -EINVAL);
    char big[BUS_LIST_ELEM_MAX + 2];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    bus_str_t bigs = bus_str_c(big);
    assert_int_equal(bus_list_encode_strs(&scratch, &bigs, 1, &e.u.presence.models), -EINVAL);
    bigs.len--;
    assert_int_equal(bus_list_encode_strs(&scratch, &bigs, 1, &e.u.presence.models), 0);

    /* a KVLIST given where a STRLIST belongs */
    bus_str_t kv[2] = {bus_str_c("k"), bus_str_c("v")};
    assert_int_equal(bus_list_encode_kvs(&scratch, kv, 1, &e.u.presence.models), 0);
    assert_int_equal(bus_env_encode(&e, &out), -EINVAL);

    bus_buf_free(&out);
    bus_buf_free(&scratch);
}

/* Buffer limits: -ENOSPC leaves the buffer as it was; -EMSGSIZE past BUS_ENV_MAX_BYTES. */
static void test_encode_limits(void **state)
{
    (void)state;
    bus_buf_t out, scratch;
    bus_env_t e;
    bus_buf_init(&out, 40);
    bus_buf_init(&scratch, 0);
    memset(&e, 0, sizeof e);
    e.type = BUS_T_PING;
    assert_int_equal(bus_env_encode(&e, &out), 0); /* 23 bytes */
    assert_int_equal(out.len, 23);
    assert_int_equal(bus_env_encode(&e, &out), -ENOSPC); /* 46 > 40 */
    assert_int_equal(out.len, 23);
    e.u.ping.seq = 1;
    bus_buf_free(&out);
    bus_buf_init(&out, 23);
    assert_int_equal(bus_env_encode(&e, &out), -ENOSPC);
    assert_int_equal(out.len, 0);
    e.u.ping.seq = 0;
    assert_int_equal(bus_env_encode(&e, &out), 0);
    assert_int_equal(out.len, 23); /* exactly at max */

    /* bus_buf_append itself */
    bus_buf_reset(&out);
    assert_int_equal(bus_buf_append(&out, "0123456789012345678901234", 24), -ENOSPC);
    assert_int_equal(out.len, 0);
    assert_int_equal(bus_buf_append(&out, "01234567890123456789012", 23), 0);
    assert_int_equal(bus_buf_append(&out, "x", 0), 0);
    assert_int_equal(bus_buf_append(&out, "x", 1), -ENOSPC);
    bus_buf_free(&out);
    bus_buf_free(NULL);

    /* 128 headers of 8 KiB keys and values: valid fields, but over BUS_ENV_MAX_BYTES. */
    static char kb8[BUS_LIST_ELEM_MAX + 1];
    memset(kb8, 'h', BUS_LIST_ELEM_MAX);
    bus_str_t *kvs = calloc(256, sizeof *kvs);
    assert_non_null(kvs);
    for (int i = 0; i < 256; i++)
        kvs[i] = (bus_str_t){kb8, BUS_LIST_ELEM_MAX};
    bus_buf_init(&scratch, (size_t)4 << 20);
    memset(&e, 0, sizeof e);
    e.type = BUS_T_REQ_OPEN;
    assert_int_equal(bus_list_encode_kvs(&scratch, kvs, 128, &e.u.req_open.headers), 0);
    bus_buf_init(&out, (size_t)8 << 20);
    assert_int_equal(bus_env_encode(&e, &out), -EMSGSIZE);
    assert_int_equal(out.len, 0);
    /* the scratch buffer's own max applies to list building */
    bus_buf_t small;
    bus_buf_init(&small, 100);
    assert_int_equal(bus_list_encode_kvs(&small, kvs, 2, &e.u.req_open.headers), -ENOSPC);
    assert_int_equal(small.len, 0);
    assert_int_equal(e.u.req_open.headers.count, 0);
    bus_buf_free(&small);
    free(kvs);
    bus_buf_free(&out);
    bus_buf_free(&scratch);
}

/* Building and iterating lists; iterators reject damaged lists. */
static void test_lists(void **state)
{
    (void)state;
    bus_buf_t scratch;
    bus_list_t l, it;
    bus_str_t s, k, v;
    bus_buf_init(&scratch, 0);

    bus_str_t strs[3] = {bus_str_c("a"), bus_str_c(""), {"n\0l", 3}};
    assert_int_equal(bus_list_encode_strs(&scratch, strs, 3, &l), 0);
    assert_int_equal(l.count, 3);
    it = l;
    assert_int_equal(bus_list_next_str(&it, &s), 1);
    assert_true(s.len == 1 && s.p[0] == 'a');
    assert_int_equal(bus_list_next_str(&it, &s), 1);
    assert_int_equal(s.len, 0);
    assert_int_equal(bus_list_next_str(&it, &s), 1);
    assert_true(s.len == 3 && s.p[1] == '\0');
    assert_int_equal(bus_list_next_str(&it, &s), 0);
    assert_int_equal(bus_list_next_str(&it, &s), 0);
    it = l;
    assert_int_equal(bus_list_next_kv(&it, &k, &v), -EBADMSG); /* strs are not pairs */

    assert_int_equal(bus_list_encode_strs(&scratch, NULL, 0, &l), 0);
    assert_true(l.count == 0 && l.len == 0);
    assert_int_equal(bus_list_next_str(&l, &s), 0);
    assert_int_equal(bus_list_encode_strs(&scratch, NULL, 1, &l), -EINVAL);

    bus_str_t kvs[4] = {bus_str_c("k1"), bus_str_c("v1"), bus_str_c("k2"), bus_str_c("")};
    assert_int_equal(bus_list_encode_kvs(&scratch, kvs, 2, &l), 0);
    it = l;
    assert_int_equal(bus_list_next_kv(&it, &k, &v), 1);
    assert_true(k.len == 2 && !memcmp(k.p, "k1", 2) && v.len == 2 && !memcmp(v.p, "v1", 2));
    assert_int_equal(bus_list_next_kv(&it, &k, &v), 1);
    assert_true(k.len == 2 && v.len == 0);
    assert_int_equal(bus_list_next_kv(&it, &k, &v), 0);
    it = l;
    assert_int_equal(bus_list_next_str(&it, &s), -EBADMSG);

    /* count larger than the bytes, bytes left after count runs out, truncated element */
    it = l;
    it.count = 3;
    assert_int_equal(bus_list_next_kv(&it, &k, &v), 1);
    assert_int_equal(bus_list_next_kv(&it, &k, &v), 1);
    assert_int_equal(bus_list_next_kv(&it, &k, &v), -EBADMSG);
    it = l;
    it.count = 1;
    assert_int_equal(bus_list_next_kv(&it, &k, &v), 1);
    assert_int_equal(bus_list_next_kv(&it, &k, &v), -EBADMSG);
    it = l;
    it.len = 4;
    assert_int_equal(bus_list_next_kv(&it, &k, &v), -EBADMSG);
    it = (bus_list_t){NULL, 0, 1};
    assert_int_equal(bus_list_next_str(&it, &s), -EBADMSG);

    /* a decoded list is usable as-is in a new envelope (relay without copying) */
    bus_buf_t in, out;
    bus_env_t e, f, g;
    char err[128];
    bus_buf_init(&in, 0);
    bus_buf_init(&out, 0);
    s_mk(E_ "'resp.head','payload':{'status':200,'headers':[['a','1'],['b','2']]}}", &in);
    assert_int_equal(bus_env_decode(in.data, in.len, &e, err, sizeof err), 0);
    memset(&f, 0, sizeof f);
    f.type = BUS_T_REQ_OPEN;
    f.u.req_open.headers = e.u.resp_head.headers;
    assert_int_equal(bus_env_encode(&f, &out), 0);
    assert_int_equal(bus_env_decode(out.data, out.len, &g, err, sizeof err), 0);
    s_eq_KVLIST(&e.u.resp_head.headers, &g.u.req_open.headers, "relayed");
    bus_buf_free(&in);
    bus_buf_free(&out);
    bus_buf_free(&scratch);
}

/* JSON for the tap: exact output for a few envelopes. */
static void test_json(void **state)
{
    (void)state;
    bus_env_t e;
    bus_buf_t scratch;
    char *js;
    bus_buf_init(&scratch, 0);

    memset(&e, 0, sizeof e);
    e.type = BUS_T_ADMIN_ECHO;
    e.u.admin_echo.agent_id = bus_str_c("a\"b\\c");
    e.u.admin_echo.text = (bus_str_t){"x\n\t\x01\x1f\x7f\xc3\xa9\0z", 10};
    assert_int_equal(bus_env_to_json(&e, &js), 0);
    assert_string_equal(js, "{\"v\":1,\"type\":\"admin.echo\",\"req_id\":null,\"payload\":"
                            "{\"agent_id\":\"a\\\"b\\\\c\",\"text\":\"x\\n\\t\\u0001\\u001f"
                            "\x7f\xc3\xa9\\u0000z\"}}");
    free(js);

    memset(&e, 0, sizeof e);
    e.type = BUS_T_REQ_OPEN;
    e.has_req_id = true;
    for (int i = 0; i < 16; i++)
        e.req_id[i] = (uint8_t)(0xf0 + i);
    e.u.req_open.attempt = 1;
    e.u.req_open.method = bus_str_c("POST");
    e.u.req_open.body_size = -1;
    bus_str_t kv[4] = {bus_str_c("a"), bus_str_c("1"), bus_str_c("a"), bus_str_c("2")};
    assert_int_equal(bus_list_encode_kvs(&scratch, kv, 2, &e.u.req_open.headers), 0);
    assert_int_equal(bus_env_to_json(&e, &js), 0);
    assert_string_equal(js,
                        "{\"v\":1,\"type\":\"req.open\","
                        "\"req_id\":\"f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff\",\"payload\":"
                        "{\"attempt\":1,\"format\":\"\",\"model\":\"\",\"method\":\"POST\","
                        "\"path\":\"\",\"query\":\"\",\"headers\":[[\"a\",\"1\"],[\"a\",\"2\"]],"
                        "\"body_size\":-1,\"agent_id\":\"\"}}");
    free(js);

    memset(&e, 0, sizeof e);
    e.type = BUS_T_PRESENCE;
    bus_str_t models[2] = {bus_str_c("m1"), bus_str_c("m\"2")};
    assert_int_equal(bus_list_encode_strs(&scratch, models, 2, &e.u.presence.models), 0);
    e.u.presence.capacity = UINT64_MAX;
    assert_int_equal(bus_env_to_json(&e, &js), 0);
    assert_non_null(strstr(js, "\"models\":[\"m1\",\"m\\\"2\"]"));
    assert_non_null(strstr(js, "\"capacity\":18446744073709551615"));
    free(js);

    uint8_t data[100];
    for (int i = 0; i < 100; i++)
        data[i] = (uint8_t)i;
    memset(&e, 0, sizeof e);
    e.type = BUS_T_RESP_CHUNK;
    e.u.resp_chunk.data = (bus_bin_t){data, 3};
    assert_int_equal(bus_env_to_json(&e, &js), 0);
    assert_non_null(strstr(js, "\"payload\":{\"data\":\"000102\"}}"));
    free(js);
    e.u.resp_chunk.data.len = 64;
    assert_int_equal(bus_env_to_json(&e, &js), 0);
    assert_non_null(strstr(js, "\"data\":\"000102"));
    free(js);
    e.u.resp_chunk.data.len = 100;
    assert_int_equal(bus_env_to_json(&e, &js), 0);
    assert_non_null(strstr(js, "\"data\":{\"len\":100,\"hex\":\"000102"));
    assert_non_null(strstr(js, "3d3e3f\"}}}"));
    free(js);

    e.type = BUS_T_UNKNOWN;
    assert_int_equal(bus_env_to_json(&e, &js), -EINVAL);
    assert_null(js);
    memset(&e, 0, sizeof e);
    e.type = BUS_T_ADMIN_ECHO;
    e.u.admin_echo.text = bus_str_c("\xff");
    assert_int_equal(bus_env_to_json(&e, &js), -EINVAL);
    assert_null(js);
    bus_buf_free(&scratch);
}

/* Request ids: hex out, hex in, strict parsing. */
static void test_req_id(void **state)
{
    (void)state;
    uint8_t id[16], back[16];
    char hex[33];
    for (int i = 0; i < 16; i++)
        id[i] = (uint8_t)(i * 17 + 3);
    bus_req_id_hex(id, hex);
    assert_int_equal(strlen(hex), 32);
    assert_string_equal(hex, "031425364758697a8b9cadbecfe0f102");
    assert_int_equal(bus_req_id_parse(hex, back), 0);
    assert_memory_equal(id, back, 16);
    assert_int_equal(bus_req_id_parse("00112233445566778899AABBCCDDEEFF", back), 0);
    assert_int_equal(back[10], 0xaa);
    memset(back, 0x5a, sizeof back);
    assert_int_equal(bus_req_id_parse("00112233445566778899aabbccddeef", back), -EINVAL);
    assert_int_equal(bus_req_id_parse("00112233445566778899aabbccddeeff0", back), -EINVAL);
    assert_int_equal(bus_req_id_parse("00112233445566778899aabbccddeefg", back), -EINVAL);
    assert_int_equal(bus_req_id_parse(" 0112233445566778899aabbccddeeff", back), -EINVAL);
    assert_int_equal(bus_req_id_parse("", back), -EINVAL);
    assert_int_equal(bus_req_id_parse(NULL, back), -EINVAL);
    assert_int_equal(back[0], 0x5a); /* untouched on failure */
}

/* bus_str_is and bus_str_copy: exact comparison, and copies that never overrun or truncate. */
static void test_str_helpers(void **state)
{
    (void)state;
    assert_true(bus_str_is(bus_str_c("ledger"), "ledger"));
    assert_false(bus_str_is(bus_str_c("ledge"), "ledger"));
    assert_false(bus_str_is(bus_str_c("ledgers"), "ledger"));
    assert_true(bus_str_is(bus_str_c(NULL), ""));
    char out[6] = "xxxxx";
    assert_true(bus_str_copy(bus_str_c("agent"), out, sizeof out));
    assert_string_equal(out, "agent");
    assert_false(bus_str_copy(bus_str_c("agents"), out, sizeof out)); /* no room for the NUL */
    assert_string_equal(out, "agent");
    bus_str_t nul = {"a\0b", 3};
    assert_false(bus_str_copy(nul, out, sizeof out));
    assert_true(bus_str_copy(bus_str_c(NULL), out, sizeof out));
    assert_string_equal(out, "");
    assert_false(bus_str_copy(bus_str_c(""), out, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mp_scalars),
        cmocka_unit_test(test_mp_raw_and_containers),
        cmocka_unit_test(test_mp_truncated_and_huge),
        cmocka_unit_test(test_mp_skip_depth),
        cmocka_unit_test(test_mp_typed_readers),
        cmocka_unit_test(test_mp_utf8),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_roundtrip_all_types),
        cmocka_unit_test(test_roundtrip_minimal),
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_unknown_skipped),
        cmocka_unit_test(test_unknown_type),
        cmocka_unit_test(test_max_bytes),
        cmocka_unit_test(test_encode_invalid),
        cmocka_unit_test(test_encode_limits),
        cmocka_unit_test(test_lists),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_req_id),
        cmocka_unit_test(test_str_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
