/* bus_env: envelope codec driven by the tables expanded from schemas/envelopes.def. */
#include "bus_env.h"

#include "bus_mp.h"

#include <errno.h>
#include <inttypes.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- tables expanded from envelopes.def ---- */

typedef enum { S_K_U64, S_K_I64, S_K_BOOL, S_K_STR, S_K_BIN, S_K_STRLIST, S_K_KVLIST } s_kind_t;

#define S_REQ_REQ true
#define S_REQ_OPT false

typedef struct {
    const char *name; /* payload key */
    size_t name_len;  /* strlen(name) */
    s_kind_t kind;    /* value kind */
    bool req;         /* must be present */
    uint32_t min;     /* STR/BIN: min bytes; lists: min entries */
    uint32_t max;     /* STR/BIN: max bytes; lists: max entries */
    size_t off;       /* offset of the member in the payload struct (and so in bus_env_t.u) */
} s_field_t;

typedef struct {
    const char *wire;        /* "type" string */
    size_t wire_len;         /* strlen(wire) */
    const s_field_t *fields; /* payload fields */
    size_t nfields;          /* entries in fields */
} s_type_t;

#define S_NELEM(a) (sizeof(a) / sizeof((a)[0]))

#define BUS_F(id, name, kind, min, max, req)                                                       \
    {#name, sizeof(#name) - 1, S_K_##kind, S_REQ_##req, (min), (max), offsetof(bus_##id##_t, name)},
#define BUS_TYPE(ID, id, wire, fields)                                                             \
    static const s_field_t s_fields_##id[] = {fields};                                             \
    _Static_assert(S_NELEM(s_fields_##id) <= 64, "envelopes.def: over 64 fields in " wire);
#include "../schemas/envelopes.def"
#undef BUS_TYPE
#undef BUS_F

static const s_type_t s_types[BUS_T__COUNT] = {
    [BUS_T_UNKNOWN] = {"?", 1, NULL, 0},
#define BUS_F(id, name, kind, min, max, req)
#define BUS_TYPE(ID, id, wire, fields)                                                             \
    [BUS_T_##ID] = {wire, sizeof(wire) - 1, s_fields_##id, S_NELEM(s_fields_##id)},
#include "../schemas/envelopes.def"
#undef BUS_TYPE
#undef BUS_F
};

/* Nesting allowed below the top-level map, and below the payload map. */
#define S_DEPTH_TOP (BUS_MP_MAX_DEPTH - 1)
#define S_DEPTH_PAYLOAD (BUS_MP_MAX_DEPTH - 2)

/* Keys of the top-level map when req_id is present (v, type, req_id, payload). */
#define S_TOP_KEYS 4

/* ---- small helpers ---- */

/* Writes one line of error text (if the caller wants it). */
__attribute__((format(printf, 3, 4))) static void s_err(char *err, size_t errlen, const char *fmt,
                                                        ...)
{
    va_list ap;
    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Copies up to 48 bytes of untrusted text into dst for an error line, printable ASCII only. */
static void s_sanitize(char *dst, size_t cap, const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 4 < cap && i < 48; i++) {
        unsigned char ch = (unsigned char)s[i];
        dst[n++] = (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') ? (char)ch : '?';
    }
    if (len > 48 && n + 4 < cap) {
        memcpy(dst + n, "...", 3);
        n += 3;
    }
    dst[n] = '\0';
}

/* Address of a field's member in the envelope's payload union. */
static void *s_member(bus_env_t *env, const s_field_t *f)
{
    return (char *)&env->u + f->off;
}

/* Read-only address of a field's member. */
static const void *s_cmember(const bus_env_t *env, const s_field_t *f)
{
    return (const char *)&env->u + f->off;
}

/* ---- bus_buf ---- */

/* Prepares an empty buffer. */
void bus_buf_init(bus_buf_t *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max ? max : BUS_ENV_MAX_BYTES;
}

/* Empties the buffer, keeping its memory. */
void bus_buf_reset(bus_buf_t *b)
{
    b->len = 0;
}

/* Frees the buffer's memory. */
void bus_buf_free(bus_buf_t *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

/* Makes room for n more bytes: doubles capacity up to max. */
static int s_buf_reserve(bus_buf_t *b, size_t n)
{
    if (n > b->max - b->len)
        return -ENOSPC;
    if (b->len + n <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
        cap = cap > b->max / 2 ? b->max : cap * 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d)
        return -ENOMEM;
    b->data = d;
    b->cap = cap;
    return 0;
}

/* Appends n bytes. */
int bus_buf_append(bus_buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    int rc = s_buf_reserve(b, n);
    if (rc < 0)
        return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

/* Makes a slice of a C string. */
bus_str_t bus_str_c(const char *s)
{
    bus_str_t r = {s, s ? strlen(s) : 0};
    return r;
}

bool bus_str_is(bus_str_t s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && (n == 0 || memcmp(s.p, lit, n) == 0);
}

bool bus_str_copy(bus_str_t s, char *out, size_t cap)
{
    if (cap == 0 || s.len >= cap || (s.len && memchr(s.p, '\0', s.len)))
        return false;
    if (s.len)
        memcpy(out, s.p, s.len);
    out[s.len] = '\0';
    return true;
}

/* ---- type names ---- */

/* Wire name of a type. */
const char *bus_type_name(bus_type_t t)
{
    if ((unsigned)t >= BUS_T__COUNT)
        return "?";
    return s_types[t].wire;
}

/* Looks a wire name up (linear: a handful of types, compared by length first). */
bus_type_t bus_type_from_name(const char *s, size_t len)
{
    if (!s)
        return BUS_T_UNKNOWN;
    for (unsigned t = 1; t < BUS_T__COUNT; t++)
        if (s_types[t].wire_len == len && memcmp(s_types[t].wire, s, len) == 0)
            return (bus_type_t)t;
    return BUS_T_UNKNOWN;
}

/* ---- lists ---- */

/* Reads one list string: a str, at most BUS_LIST_ELEM_MAX bytes, valid UTF-8. */
static int s_list_str(bus_mp_t *c, bus_str_t *out)
{
    const uint8_t *p;
    uint32_t len;
    if (bus_mp_read_str(c, &p, &len) < 0 || len > BUS_LIST_ELEM_MAX || !bus_mp_utf8_valid(p, len))
        return -EBADMSG;
    out->p = (const char *)p;
    out->len = len;
    return 0;
}

/* Reads one KVLIST entry: a 2-element array of list strings. */
static int s_list_kv(bus_mp_t *c, bus_str_t *k, bus_str_t *v)
{
    uint32_t n;
    if (bus_mp_read_array(c, &n) < 0 || n != 2)
        return -EBADMSG;
    if (s_list_str(c, k) < 0 || s_list_str(c, v) < 0)
        return -EBADMSG;
    return 0;
}

/* Checks an iterator before taking an element: 0 at a clean end, 1 more to come, <0 bad. */
static int s_list_more(const bus_list_t *it)
{
    if (it->count == 0)
        return it->len == 0 ? 0 : -EBADMSG;
    if (!it->p || it->len == 0)
        return -EBADMSG;
    return 1;
}

/* Takes the next string of a STRLIST. */
int bus_list_next_str(bus_list_t *it, bus_str_t *out)
{
    bus_mp_t c;
    int rc = s_list_more(it);
    if (rc <= 0)
        return rc;
    bus_mp_init(&c, it->p, it->len);
    if (s_list_str(&c, out) < 0)
        return -EBADMSG;
    it->p = c.p;
    it->len = c.left;
    it->count--;
    return 1;
}

/* Takes the next pair of a KVLIST. */
int bus_list_next_kv(bus_list_t *it, bus_str_t *k, bus_str_t *v)
{
    bus_mp_t c;
    int rc = s_list_more(it);
    if (rc <= 0)
        return rc;
    bus_mp_init(&c, it->p, it->len);
    if (s_list_kv(&c, k, v) < 0)
        return -EBADMSG;
    it->p = c.p;
    it->len = c.left;
    it->count--;
    return 1;
}

/* Walks a whole list of kind STRLIST or KVLIST: 0 when every element is valid and the count
 * matches the bytes exactly, else -EBADMSG. */
static int s_list_check(bus_list_t it, s_kind_t kind)
{
    bus_str_t k, v;
    int rc;
    for (;;) {
        rc = kind == S_K_KVLIST ? bus_list_next_kv(&it, &k, &v) : bus_list_next_str(&it, &k);
        if (rc <= 0)
            return rc;
    }
}

/* msgpack-c write callback appending to a bus_buf_t. */
static int s_pk_write(void *data, const char *buf, size_t len)
{
    return bus_buf_append(data, buf, len);
}

/* msgpack-c write callback that only counts bytes (size_t *). */
static int s_pk_count(void *data, const char *buf, size_t len)
{
    (void)buf;
    *(size_t *)data += len;
    return 0;
}

/* Checks one string for a list element. */
static bool s_elem_ok(const bus_str_t *s)
{
    if (s->len > BUS_LIST_ELEM_MAX || (!s->p && s->len))
        return false;
    return bus_mp_utf8_valid((const uint8_t *)s->p, s->len);
}

/* Packs n strings (pairs when per is 2) as list elements into scratch. */
static int s_list_encode(bus_buf_t *scratch, const bus_str_t *strs, size_t n, unsigned per,
                         bus_list_t *out)
{
    msgpack_packer pk;
    int rc = 0;
    bus_buf_reset(scratch);
    out->p = NULL;
    out->len = 0;
    out->count = 0;
    if (n > UINT32_MAX || (n && !strs))
        return -EINVAL;
    for (size_t i = 0; i < n * per; i++)
        if (!s_elem_ok(&strs[i]))
            return -EINVAL;
    msgpack_packer_init(&pk, scratch, s_pk_write);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (per == 2)
            rc = msgpack_pack_array(&pk, 2);
        for (unsigned j = 0; j < per && rc == 0; j++) {
            const bus_str_t *s = &strs[i * per + j];
            rc = msgpack_pack_str_with_body(&pk, s->p ? s->p : "", s->len);
        }
    }
    if (rc < 0) {
        bus_buf_reset(scratch);
        return rc;
    }
    out->p = scratch->data;
    out->len = scratch->len;
    out->count = (uint32_t)n;
    return 0;
}

/* Packs a STRLIST. */
int bus_list_encode_strs(bus_buf_t *scratch, const bus_str_t *strs, size_t n, bus_list_t *out)
{
    return s_list_encode(scratch, strs, n, 1, out);
}

/* Packs a KVLIST. */
int bus_list_encode_kvs(bus_buf_t *scratch, const bus_str_t *kvs, size_t n, bus_list_t *out)
{
    return s_list_encode(scratch, kvs, n, 2, out);
}

/* ---- encoding ---- */

/* True when a field holds its zero value (and may be left out). */
static bool s_is_zero(const s_field_t *f, const void *m)
{
    switch (f->kind) {
    case S_K_U64:
        return *(const uint64_t *)m == 0;
    case S_K_I64:
        return *(const int64_t *)m == 0;
    case S_K_BOOL:
        return !*(const bool *)m;
    case S_K_STR:
        return ((const bus_str_t *)m)->len == 0;
    case S_K_BIN:
        return ((const bus_bin_t *)m)->len == 0;
    case S_K_STRLIST:
    case S_K_KVLIST:
        return ((const bus_list_t *)m)->count == 0 && ((const bus_list_t *)m)->len == 0;
    }
    return true;
}

/* Checks a field that will be sent against the schema: 0 or -EINVAL. */
static int s_check_field(const s_field_t *f, const void *m)
{
    switch (f->kind) {
    case S_K_U64:
    case S_K_I64:
    case S_K_BOOL:
        return 0;
    case S_K_STR: {
        const bus_str_t *s = m;
        if ((!s->p && s->len) || s->len < f->min || s->len > f->max)
            return -EINVAL;
        return bus_mp_utf8_valid((const uint8_t *)s->p, s->len) ? 0 : -EINVAL;
    }
    case S_K_BIN: {
        const bus_bin_t *b = m;
        if ((!b->p && b->len) || b->len < f->min || b->len > f->max)
            return -EINVAL;
        return 0;
    }
    case S_K_STRLIST:
    case S_K_KVLIST: {
        const bus_list_t *l = m;
        if (l->count < f->min || l->count > f->max)
            return -EINVAL;
        return s_list_check(*l, f->kind) < 0 ? -EINVAL : 0;
    }
    }
    return -EINVAL;
}

/* Packs a string key. */
static int s_pk_key(msgpack_packer *pk, const char *k, size_t len)
{
    return msgpack_pack_str_with_body(pk, k, len);
}

/* Packs one field's value. */
static int s_pk_value(msgpack_packer *pk, const s_field_t *f, const void *m)
{
    switch (f->kind) {
    case S_K_U64:
        return msgpack_pack_uint64(pk, *(const uint64_t *)m);
    case S_K_I64:
        return msgpack_pack_int64(pk, *(const int64_t *)m);
    case S_K_BOOL:
        return *(const bool *)m ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    case S_K_STR: {
        const bus_str_t *s = m;
        return msgpack_pack_str_with_body(pk, s->len ? s->p : "", s->len);
    }
    case S_K_BIN: {
        const bus_bin_t *b = m;
        return msgpack_pack_bin_with_body(pk, b->len ? (const void *)b->p : "", b->len);
    }
    case S_K_STRLIST:
    case S_K_KVLIST: {
        const bus_list_t *l = m;
        int rc = msgpack_pack_array(pk, l->count);
        if (rc == 0 && l->len)
            rc = pk->callback(pk->data, (const char *)l->p, l->len);
        return rc;
    }
    }
    return -EINVAL;
}

/* Packs the whole envelope (already checked); present[] says which fields go out. */
static int s_pk_env(msgpack_packer *pk, const bus_env_t *env, const s_type_t *ty,
                    const bool *present, size_t npresent)
{
    uint32_t version = env->version ? env->version : BUS_PROTO_VERSION;
    int rc = msgpack_pack_map(pk, env->has_req_id ? S_TOP_KEYS : S_TOP_KEYS - 1);
    if (rc == 0)
        rc = s_pk_key(pk, "v", 1);
    if (rc == 0)
        rc = msgpack_pack_uint32(pk, version);
    if (rc == 0)
        rc = s_pk_key(pk, "type", 4);
    if (rc == 0)
        rc = msgpack_pack_str_with_body(pk, ty->wire, ty->wire_len);
    if (rc == 0 && env->has_req_id) {
        rc = s_pk_key(pk, "req_id", 6);
        if (rc == 0)
            rc = msgpack_pack_bin_with_body(pk, env->req_id, BUS_REQ_ID_LEN);
    }
    if (rc == 0)
        rc = s_pk_key(pk, "payload", 7);
    if (rc == 0)
        rc = msgpack_pack_map(pk, npresent);
    for (size_t i = 0; i < ty->nfields && rc == 0; i++) {
        const s_field_t *f = &ty->fields[i];
        if (!present[i])
            continue;
        rc = s_pk_key(pk, f->name, f->name_len);
        if (rc == 0)
            rc = s_pk_value(pk, f, s_cmember(env, f));
    }
    return rc;
}

/* Encodes: checks every field, measures the envelope, then packs it into out in one go. */
int bus_env_encode(const bus_env_t *env, bus_buf_t *out)
{
    bool present[64];
    size_t npresent = 0, size = 0, start = out->len;
    msgpack_packer pk;
    int rc;

    if ((unsigned)env->type == BUS_T_UNKNOWN || (unsigned)env->type >= BUS_T__COUNT)
        return -EINVAL;
    if (env->version > BUS_PROTO_VERSION)
        return -EINVAL;
    const s_type_t *ty = &s_types[env->type];
    for (size_t i = 0; i < ty->nfields; i++) {
        const s_field_t *f = &ty->fields[i];
        const void *m = s_cmember(env, f);
        present[i] = f->req || !s_is_zero(f, m);
        if (!present[i])
            continue;
        if (s_check_field(f, m) < 0)
            return -EINVAL;
        npresent++;
    }

    /* First pass counts bytes, so that size limits are known before anything is written. */
    msgpack_packer_init(&pk, &size, s_pk_count);
    rc = s_pk_env(&pk, env, ty, present, npresent);
    if (rc < 0)
        return rc;
    if (size > BUS_ENV_MAX_BYTES)
        return -EMSGSIZE;
    rc = s_buf_reserve(out, size);
    if (rc < 0)
        return rc;
    msgpack_packer_init(&pk, out, s_pk_write);
    rc = s_pk_env(&pk, env, ty, present, npresent);
    if (rc < 0) {
        out->len = start;
        return rc;
    }
    return 0;
}

/* ---- decoding ---- */

/* Decodes one payload field's value into its member. */
static int s_decode_field(const s_field_t *f, bus_mp_t *c, void *m, char *err, size_t errlen)
{
    const uint8_t *p;
    uint32_t len, n;
    switch (f->kind) {
    case S_K_U64:
        if (bus_mp_read_u64(c, m) < 0) {
            s_err(err, errlen, "payload.%s: want an unsigned integer", f->name);
            return -EBADMSG;
        }
        return 0;
    case S_K_I64:
        if (bus_mp_read_i64(c, m) < 0) {
            s_err(err, errlen, "payload.%s: want an integer in int64 range", f->name);
            return -EBADMSG;
        }
        return 0;
    case S_K_BOOL:
        if (bus_mp_read_bool(c, m) < 0) {
            s_err(err, errlen, "payload.%s: want a bool", f->name);
            return -EBADMSG;
        }
        return 0;
    case S_K_STR:
        if (bus_mp_read_str(c, &p, &len) < 0) {
            s_err(err, errlen, "payload.%s: want a str", f->name);
            return -EBADMSG;
        }
        if (len < f->min || len > f->max) {
            s_err(err, errlen,
                  "payload.%s: str of %" PRIu32 " bytes, allowed %" PRIu32 "..%" PRIu32, f->name,
                  len, f->min, f->max);
            return -EBADMSG;
        }
        if (!bus_mp_utf8_valid(p, len)) {
            s_err(err, errlen, "payload.%s: str is not valid UTF-8", f->name);
            return -EBADMSG;
        }
        ((bus_str_t *)m)->p = (const char *)p;
        ((bus_str_t *)m)->len = len;
        return 0;
    case S_K_BIN:
        if (bus_mp_read_bin(c, &p, &len) < 0) {
            s_err(err, errlen, "payload.%s: want a bin", f->name);
            return -EBADMSG;
        }
        if (len < f->min || len > f->max) {
            s_err(err, errlen,
                  "payload.%s: bin of %" PRIu32 " bytes, allowed %" PRIu32 "..%" PRIu32, f->name,
                  len, f->min, f->max);
            return -EBADMSG;
        }
        ((bus_bin_t *)m)->p = p;
        ((bus_bin_t *)m)->len = len;
        return 0;
    case S_K_STRLIST:
    case S_K_KVLIST: {
        bus_list_t *l = m;
        if (bus_mp_read_array(c, &n) < 0) {
            s_err(err, errlen, "payload.%s: want an array", f->name);
            return -EBADMSG;
        }
        if (n < f->min || n > f->max) {
            s_err(err, errlen, "payload.%s: %" PRIu32 " entries, allowed %" PRIu32 "..%" PRIu32,
                  f->name, n, f->min, f->max);
            return -EBADMSG;
        }
        /* Validated here in full, so iterating a decoded list never fails. */
        p = c->p;
        for (uint32_t i = 0; i < n; i++) {
            bus_str_t k, v;
            int rc = f->kind == S_K_KVLIST ? s_list_kv(c, &k, &v) : s_list_str(c, &k);
            if (rc < 0) {
                s_err(err, errlen, "payload.%s[%" PRIu32 "]: want %s", f->name, i,
                      f->kind == S_K_KVLIST ? "a [str, str] pair of valid UTF-8"
                                            : "a valid UTF-8 str");
                return -EBADMSG;
            }
        }
        l->p = n ? p : NULL;
        l->len = (size_t)(c->p - p);
        l->count = n;
        return 0;
    }
    }
    return -EBADMSG;
}

/* Finds a payload field by key. */
static const s_field_t *s_find_field(const s_type_t *ty, const uint8_t *k, uint32_t len, size_t *ix)
{
    for (size_t i = 0; i < ty->nfields; i++) {
        if (ty->fields[i].name_len == len && memcmp(ty->fields[i].name, k, len) == 0) {
            *ix = i;
            return &ty->fields[i];
        }
    }
    return NULL;
}

/* Decodes the payload map of a known type into env->u. */
static int s_decode_payload(const s_type_t *ty, bus_mp_t *c, bus_env_t *env, char *err,
                            size_t errlen)
{
    uint64_t seen = 0, present = 0;
    uint32_t n;
    if (bus_mp_read_map(c, &n) < 0) {
        s_err(err, errlen, "payload: want a map");
        return -EBADMSG;
    }
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *k;
        uint32_t klen;
        size_t ix;
        if (bus_mp_read_str(c, &k, &klen) < 0) {
            s_err(err, errlen, "payload: key %" PRIu32 " is not a str", i);
            return -EBADMSG;
        }
        const s_field_t *f = s_find_field(ty, k, klen, &ix);
        if (!f) {
            if (bus_mp_skip(c, S_DEPTH_PAYLOAD) < 0) {
                s_err(err, errlen, "payload: malformed value of an unknown field");
                return -EBADMSG;
            }
            continue;
        }
        if (seen & (UINT64_C(1) << ix)) {
            s_err(err, errlen, "payload.%s: repeated", f->name);
            return -EBADMSG;
        }
        seen |= UINT64_C(1) << ix;
        if (bus_mp_peek_nil(c)) {
            (void)bus_mp_skip(c, 0);
            continue;
        }
        int rc = s_decode_field(f, c, s_member(env, f), err, errlen);
        if (rc < 0)
            return rc;
        present |= UINT64_C(1) << ix;
    }
    for (size_t i = 0; i < ty->nfields; i++) {
        if (ty->fields[i].req && !(present & (UINT64_C(1) << i))) {
            s_err(err, errlen, "%s: payload.%s is required", ty->wire, ty->fields[i].name);
            return -EBADMSG;
        }
    }
    return 0;
}

/* Where the top-level keys were found by the first pass. */
typedef struct {
    bool has_v;             /* "v" seen */
    uint64_t v;             /* its value */
    const uint8_t *type;    /* "type" str, NULL if absent */
    uint32_t type_len;      /* its length */
    bool has_req_id_key;    /* "req_id" seen (maybe nil) */
    const uint8_t *req_id;  /* 16 bytes, NULL if absent or nil */
    const uint8_t *payload; /* first byte of the "payload" value, NULL if absent */
    size_t payload_len;     /* its length */
} s_top_t;

/* Matches a top-level key name. */
static bool s_key_is(const uint8_t *k, uint32_t klen, const char *name)
{
    size_t n = strlen(name);
    return klen == n && memcmp(k, name, n) == 0;
}

/* First pass: walks the whole top-level map, checking its structure and noting where the
 * known keys are (the payload may come before "type"). */
static int s_decode_top(bus_mp_t *c, s_top_t *top, char *err, size_t errlen)
{
    uint32_t n;
    if (bus_mp_read_map(c, &n) < 0) {
        s_err(err, errlen, "envelope is not a msgpack map (or is truncated)");
        return -EBADMSG;
    }
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *k;
        uint32_t klen;
        bool dup = false;
        if (bus_mp_read_str(c, &k, &klen) < 0) {
            s_err(err, errlen, "envelope key %" PRIu32 " is not a str (or is truncated)", i);
            return -EBADMSG;
        }
        if (s_key_is(k, klen, "v")) {
            dup = top->has_v;
            top->has_v = true;
            if (!dup && bus_mp_read_u64(c, &top->v) < 0) {
                s_err(err, errlen, "v: want an unsigned integer");
                return -EBADMSG;
            }
        } else if (s_key_is(k, klen, "type")) {
            dup = top->type != NULL;
            if (!dup && bus_mp_read_str(c, &top->type, &top->type_len) < 0) {
                s_err(err, errlen, "type: want a str");
                return -EBADMSG;
            }
        } else if (s_key_is(k, klen, "req_id")) {
            dup = top->has_req_id_key;
            top->has_req_id_key = true;
            if (!dup && bus_mp_peek_nil(c)) {
                (void)bus_mp_skip(c, 0);
            } else if (!dup) {
                const uint8_t *p;
                uint32_t len;
                if (bus_mp_read_bin(c, &p, &len) < 0 || len != BUS_REQ_ID_LEN) {
                    s_err(err, errlen, "req_id: want a bin of 16 bytes or nil");
                    return -EBADMSG;
                }
                top->req_id = p;
            }
        } else if (s_key_is(k, klen, "payload")) {
            dup = top->payload != NULL;
            if (!dup) {
                top->payload = c->p;
                if (bus_mp_skip(c, S_DEPTH_TOP) < 0) {
                    s_err(err, errlen, "payload: malformed, truncated or nested deeper than %d",
                          BUS_MP_MAX_DEPTH);
                    return -EBADMSG;
                }
                top->payload_len = (size_t)(c->p - top->payload);
            }
        } else if (bus_mp_skip(c, S_DEPTH_TOP) < 0) {
            s_err(err, errlen, "envelope: malformed, truncated or nested deeper than %d",
                  BUS_MP_MAX_DEPTH);
            return -EBADMSG;
        }
        if (dup) {
            char name[64];
            s_sanitize(name, sizeof name, (const char *)k, klen);
            s_err(err, errlen, "envelope key \"%s\" repeated", name);
            return -EBADMSG;
        }
    }
    if (c->left) {
        s_err(err, errlen, "%zu trailing bytes after the envelope", c->left);
        return -EBADMSG;
    }
    if (!top->has_v) {
        s_err(err, errlen, "envelope has no \"v\"");
        return -EBADMSG;
    }
    if (!top->type) {
        s_err(err, errlen, "envelope has no \"type\"");
        return -EBADMSG;
    }
    return 0;
}

/* Decodes one envelope: structure first, then version, type, and the payload. */
int bus_env_decode(const uint8_t *buf, size_t len, bus_env_t *out, char *err, size_t errlen)
{
    s_top_t top = {0};
    bus_mp_t c;
    int rc;

    memset(out, 0, sizeof *out);
    if (err && errlen)
        err[0] = '\0';
    if (!buf && len) {
        s_err(err, errlen, "no buffer");
        return -EBADMSG;
    }
    if (len > BUS_ENV_MAX_BYTES) {
        s_err(err, errlen, "envelope of %zu bytes exceeds %zu", len, BUS_ENV_MAX_BYTES);
        return -EBADMSG;
    }
    bus_mp_init(&c, buf, len);
    rc = s_decode_top(&c, &top, err, errlen);
    if (rc < 0)
        return rc;

    out->version = top.v > UINT32_MAX ? UINT32_MAX : (uint32_t)top.v;
    if (top.req_id) {
        out->has_req_id = true;
        memcpy(out->req_id, top.req_id, BUS_REQ_ID_LEN);
    }
    if (top.v == 0 || top.v > BUS_PROTO_VERSION) {
        s_err(err, errlen, "unsupported protocol version %" PRIu64 " (this side speaks 1..%d)",
              top.v, BUS_PROTO_VERSION);
        return -EPROTO;
    }
    if (!bus_mp_utf8_valid(top.type, top.type_len)) {
        s_err(err, errlen, "type: str is not valid UTF-8");
        return -EBADMSG;
    }
    bus_type_t t = bus_type_from_name((const char *)top.type, top.type_len);
    if (t == BUS_T_UNKNOWN) {
        char name[64];
        s_sanitize(name, sizeof name, (const char *)top.type, top.type_len);
        s_err(err, errlen, "unknown envelope type \"%s\"", name);
        return -ENOTSUP;
    }
    out->type = t;

    static const uint8_t empty_map[1] = {0x80};
    if (top.payload)
        bus_mp_init(&c, top.payload, top.payload_len);
    else
        bus_mp_init(&c, empty_map, sizeof empty_map);
    rc = s_decode_payload(&s_types[t], &c, out, err, errlen);
    if (rc < 0) {
        memset(&out->u, 0, sizeof out->u);
        return rc;
    }
    return 0;
}

/* ---- JSON for the tap ---- */

/* Appends a NUL-terminated piece of JSON. */
static int s_js(bus_buf_t *b, const char *s)
{
    return bus_buf_append(b, s, strlen(s));
}

/* Appends a JSON string literal; -EINVAL if s is not valid UTF-8. */
static int s_js_str(bus_buf_t *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    int rc;
    if ((!s && len) || !bus_mp_utf8_valid((const uint8_t *)s, len))
        return -EINVAL;
    rc = bus_buf_append(b, "\"", 1);
    size_t run = 0; /* bytes copied as they are, flushed in one append */
    for (size_t i = 0; i < len && rc == 0; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[7];
        size_t n = 0;
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char)ch;
            n = 2;
        } else if (ch < 0x20) {
            esc[0] = '\\';
            n = 2;
            switch (ch) {
            case '\n':
                esc[1] = 'n';
                break;
            case '\r':
                esc[1] = 'r';
                break;
            case '\t':
                esc[1] = 't';
                break;
            case '\b':
                esc[1] = 'b';
                break;
            case '\f':
                esc[1] = 'f';
                break;
            default:
                memcpy(esc + 1, "u00", 3);
                esc[4] = hex[ch >> 4];
                esc[5] = hex[ch & 15];
                n = 6;
            }
        }
        if (n == 0) {
            run++;
            continue;
        }
        rc = bus_buf_append(b, s + i - run, run);
        run = 0;
        if (rc == 0)
            rc = bus_buf_append(b, esc, n);
    }
    if (rc == 0 && run)
        rc = bus_buf_append(b, s + len - run, run);
    if (rc == 0)
        rc = bus_buf_append(b, "\"", 1);
    return rc;
}

/* Appends lower-case hex of n bytes (no quotes). */
static int s_js_hex(bus_buf_t *b, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char two[2];
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        two[0] = hex[p[i] >> 4];
        two[1] = hex[p[i] & 15];
        rc = bus_buf_append(b, two, 2);
    }
    return rc;
}

/* Appends a bin: "hex", or {"len":N,"hex":"first 64 bytes"} past 64 bytes. */
static int s_js_bin(bus_buf_t *b, const bus_bin_t *v)
{
    char num[48];
    int rc;
    if (!v->p && v->len)
        return -EINVAL;
    if (v->len <= 64) {
        rc = s_js(b, "\"");
        if (rc == 0)
            rc = s_js_hex(b, v->p, v->len);
        return rc ? rc : s_js(b, "\"");
    }
    snprintf(num, sizeof num, "{\"len\":%zu,\"hex\":\"", v->len);
    rc = s_js(b, num);
    if (rc == 0)
        rc = s_js_hex(b, v->p, 64);
    return rc ? rc : s_js(b, "\"}");
}

/* Appends a list as a JSON array (of strings, or of [key, value] arrays). */
static int s_js_list(bus_buf_t *b, bus_list_t it, s_kind_t kind)
{
    bus_str_t k, v;
    int rc = s_js(b, "["), got;
    bool first = true;
    while (rc == 0) {
        got = kind == S_K_KVLIST ? bus_list_next_kv(&it, &k, &v) : bus_list_next_str(&it, &k);
        if (got < 0)
            return -EINVAL;
        if (got == 0)
            break;
        if (!first)
            rc = s_js(b, ",");
        first = false;
        if (rc == 0 && kind == S_K_KVLIST) {
            rc = s_js(b, "[");
            if (rc == 0)
                rc = s_js_str(b, k.p, k.len);
            if (rc == 0)
                rc = s_js(b, ",");
            if (rc == 0)
                rc = s_js_str(b, v.p, v.len);
            if (rc == 0)
                rc = s_js(b, "]");
        } else if (rc == 0) {
            rc = s_js_str(b, k.p, k.len);
        }
    }
    return rc ? rc : s_js(b, "]");
}

/* Appends one field's value as JSON. */
static int s_js_value(bus_buf_t *b, const s_field_t *f, const void *m)
{
    char num[32];
    switch (f->kind) {
    case S_K_U64:
        snprintf(num, sizeof num, "%" PRIu64, *(const uint64_t *)m);
        return s_js(b, num);
    case S_K_I64:
        snprintf(num, sizeof num, "%" PRId64, *(const int64_t *)m);
        return s_js(b, num);
    case S_K_BOOL:
        return s_js(b, *(const bool *)m ? "true" : "false");
    case S_K_STR:
        return s_js_str(b, ((const bus_str_t *)m)->p, ((const bus_str_t *)m)->len);
    case S_K_BIN:
        return s_js_bin(b, m);
    case S_K_STRLIST:
    case S_K_KVLIST:
        return s_js_list(b, *(const bus_list_t *)m, f->kind);
    }
    return -EINVAL;
}

/* Largest JSON line produced (strings escape to at most 6x their size). */
#define S_JSON_MAX ((size_t)64 << 20)

/* Renders an envelope as one JSON line. */
int bus_env_to_json(const bus_env_t *env, char **out)
{
    bus_buf_t b;
    char head[48], hex[33];
    int rc;

    *out = NULL;
    if ((unsigned)env->type == BUS_T_UNKNOWN || (unsigned)env->type >= BUS_T__COUNT)
        return -EINVAL;
    const s_type_t *ty = &s_types[env->type];
    bus_buf_init(&b, S_JSON_MAX);
    snprintf(head, sizeof head, "{\"v\":%" PRIu32 ",\"type\":",
             env->version ? env->version : (uint32_t)BUS_PROTO_VERSION);
    rc = s_js(&b, head);
    if (rc == 0)
        rc = s_js_str(&b, ty->wire, ty->wire_len);
    if (rc == 0)
        rc = s_js(&b, ",\"req_id\":");
    if (rc == 0 && env->has_req_id) {
        bus_req_id_hex(env->req_id, hex);
        rc = s_js(&b, "\"");
        if (rc == 0)
            rc = s_js(&b, hex);
        if (rc == 0)
            rc = s_js(&b, "\"");
    } else if (rc == 0) {
        rc = s_js(&b, "null");
    }
    if (rc == 0)
        rc = s_js(&b, ",\"payload\":{");
    for (size_t i = 0; i < ty->nfields && rc == 0; i++) {
        const s_field_t *f = &ty->fields[i];
        if (i)
            rc = s_js(&b, ",");
        if (rc == 0)
            rc = s_js_str(&b, f->name, f->name_len);
        if (rc == 0)
            rc = s_js(&b, ":");
        if (rc == 0)
            rc = s_js_value(&b, f, s_cmember(env, f));
    }
    if (rc == 0)
        rc = bus_buf_append(&b, "}}", 3); /* with the NUL */
    if (rc < 0) {
        bus_buf_free(&b);
        return rc;
    }
    *out = (char *)b.data;
    return 0;
}

/* ---- request ids ---- */

/* Formats a request id as hex. */
void bus_req_id_hex(const uint8_t id[BUS_REQ_ID_LEN], char out[33])
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < BUS_REQ_ID_LEN; i++) {
        out[2 * i] = hex[id[i] >> 4];
        out[2 * i + 1] = hex[id[i] & 15];
    }
    out[32] = '\0';
}

/* Value of one hex digit, or -1. */
static int s_hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Parses a 32-digit hex request id. */
int bus_req_id_parse(const char *hex, uint8_t out[BUS_REQ_ID_LEN])
{
    uint8_t tmp[BUS_REQ_ID_LEN];
    if (!hex)
        return -EINVAL;
    for (size_t i = 0; i < BUS_REQ_ID_LEN; i++) {
        int hi = s_hexval(hex[2 * i]);
        int lo = hi < 0 ? -1 : s_hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        tmp[i] = (uint8_t)(hi << 4 | lo);
    }
    if (hex[32] != '\0')
        return -EINVAL;
    memcpy(out, tmp, sizeof tmp);
    return 0;
}

void bus_env_init(bus_env_t *env, bus_type_t t, const uint8_t *req_id)
{
    memset(env, 0, sizeof *env);
    env->type = t;
    env->version = BUS_PROTO_VERSION;
    if (req_id) {
        env->has_req_id = true;
        memcpy(env->req_id, req_id, BUS_REQ_ID_LEN);
    }
}
