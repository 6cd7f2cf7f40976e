/* bus_env: the envelope codec shared by the bus and the tunnel (DESIGN.md section 2).
 *
 * Wire format: one msgpack map with string keys
 *   "v"       uint, protocol version (1 .. BUS_PROTO_VERSION)
 *   "type"    str, the wire name of the type ("admin.echo")
 *   "req_id"  bin of exactly 16 bytes; absent or nil on control messages
 *   "payload" map of field name -> value, as defined in schemas/envelopes.def (absent = {})
 * Unknown top-level keys and unknown payload fields are skipped. A missing (or nil) payload
 * field decodes as its zero value unless the schema marks it REQ. Binary data is msgpack bin.
 *
 * Every type and field comes from schemas/envelopes.def: the enum, the payload structs, the
 * union and the codec tables below are all expanded from it.
 *
 * Decoding never allocates and never copies: strings, binaries and lists in the decoded
 * envelope borrow from the input buffer, which must outlive them. It walks the input with the
 * bus_mp cursor reader, which checks every length before reading (never msgpack_unpack*).
 *
 * Encoding uses msgpack-c's packer writing into a bus_buf_t, a growable buffer with a hard
 * maximum. The encoder checks every field against the schema first, so it never emits an
 * envelope that bus_env_decode() would reject.
 *
 * Lists (STRLIST, KVLIST) are carried in both directions as a bus_list_t: the raw msgpack
 * bytes of the array's elements plus their count. A decoded list is walked lazily with
 * bus_list_next_str()/bus_list_next_kv(); the same list can be put into another envelope
 * as-is (zero-copy relay of headers). To build a list from C data, bus_list_encode_strs() or
 * bus_list_encode_kvs() pack it into a scratch bus_buf_t and point a bus_list_t at it.
 */
#ifndef BUS_ENV_H
#define BUS_ENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BUS_PROTO_VERSION 1
/* Largest encoded envelope accepted by the decoder and produced by the encoder. */
#define BUS_ENV_MAX_BYTES ((size_t)(1u << 20) + 64 * 1024)
/* Longest string inside a STRLIST or KVLIST (each key and each value). */
#define BUS_LIST_ELEM_MAX 8192u
/* Length of a request id in bytes. */
#define BUS_REQ_ID_LEN 16

/* A borrowed string: UTF-8, not NUL-terminated, may contain NUL. p may be NULL when len is 0. */
typedef struct {
    const char *p; /* first byte */
    size_t len;    /* byte count */
} bus_str_t;

/* A borrowed byte string. p may be NULL when len is 0. */
typedef struct {
    const uint8_t *p; /* first byte */
    size_t len;       /* byte count */
} bus_bin_t;

/* A borrowed list: the raw msgpack encoding of an array's elements (without the array header)
 * and their count. An iterator is a copy of the list that bus_list_next_* consume. */
typedef struct {
    const uint8_t *p; /* first element's first byte */
    size_t len;       /* bytes of all elements */
    uint32_t count;   /* elements left */
} bus_list_t;

/* Envelope types, one per BUS_TYPE in envelopes.def. */
typedef enum {
    BUS_T_UNKNOWN = 0,
#define BUS_F(id, name, kind, min, max, req)
#define BUS_TYPE(ID, id, wire, fields) BUS_T_##ID,
#include "../schemas/envelopes.def"
#undef BUS_TYPE
#undef BUS_F
    BUS_T__COUNT
} bus_type_t;

/* C type of each field kind in the payload structs. */
#define BUS_CTYPE_U64 uint64_t
#define BUS_CTYPE_I64 int64_t
#define BUS_CTYPE_BOOL bool
#define BUS_CTYPE_STR bus_str_t
#define BUS_CTYPE_BIN bus_bin_t
#define BUS_CTYPE_STRLIST bus_list_t
#define BUS_CTYPE_KVLIST bus_list_t

/* One payload struct per type: bus_hello_t, bus_challenge_t, bus_admin_echo_t, ...
 * (members as listed in envelopes.def). */
#define BUS_F(id, name, kind, min, max, req) BUS_CTYPE_##kind name;
#define BUS_TYPE(ID, id, wire, fields)                                                             \
    typedef struct {                                                                               \
        fields                                                                                     \
    } bus_##id##_t;
#include "../schemas/envelopes.def"
#undef BUS_TYPE
#undef BUS_F

/* A decoded envelope, or one to encode. */
typedef struct {
    bus_type_t type;  /* selects the member of u */
    uint32_t version; /* decode: the sender's "v"; encode: 0 means BUS_PROTO_VERSION */
    bool has_req_id;  /* req_id present (stream messages) */
    uint8_t req_id[BUS_REQ_ID_LEN]; /* valid when has_req_id */
    union {
#define BUS_F(id, name, kind, min, max, req)
#define BUS_TYPE(ID, id, wire, fields) bus_##id##_t id;
#include "../schemas/envelopes.def"
#undef BUS_TYPE
#undef BUS_F
    } u; /* payload of the type */
} bus_env_t;

/* A growable byte buffer with a hard maximum (curl's dynbuf). */
typedef struct {
    uint8_t *data; /* malloc'd bytes, NULL until the first append */
    size_t len;    /* bytes used */
    size_t cap;    /* bytes allocated */
    size_t max;    /* len never exceeds this; appends past it fail with -ENOSPC */
} bus_buf_t;

/* Prepares an empty buffer that may grow to max bytes (0: BUS_ENV_MAX_BYTES). No allocation. */
void bus_buf_init(bus_buf_t *b, size_t max);

/* Empties the buffer, keeping its memory for reuse. */
void bus_buf_reset(bus_buf_t *b);

/* Frees the memory; the buffer is left empty and reusable (same max). Accepts NULL. */
void bus_buf_free(bus_buf_t *b);

/* Appends n bytes: 0, -ENOSPC past max (nothing appended), -ENOMEM. */
int bus_buf_append(bus_buf_t *b, const void *p, size_t n);

/* Makes a bus_str_t of a NUL-terminated string (NULL gives the empty string). */
bus_str_t bus_str_c(const char *s);
/* Whether s is exactly the text lit. */
bool bus_str_is(bus_str_t s, const char *lit);
/* Copies s into a NUL-terminated buffer of cap bytes; false (out untouched) when it does not fit
 * or holds a NUL. */
bool bus_str_copy(bus_str_t s, char *out, size_t cap);

/* Wire name of a type ("admin.echo"); "?" for BUS_T_UNKNOWN or out of range. */
const char *bus_type_name(bus_type_t t);

/* Type with this wire name, or BUS_T_UNKNOWN. */
bus_type_t bus_type_from_name(const char *s, size_t len);

/* Appends the encoding of env to out. On failure out is left as it was.
 * Returns 0; -EINVAL for a bad envelope (unknown type, version past BUS_PROTO_VERSION, a
 * string over its maximum or not UTF-8, a bin of the wrong length such as a nonce that is not
 * 32 bytes, a malformed list or one with too many entries); -EMSGSIZE when the envelope alone
 * would exceed BUS_ENV_MAX_BYTES; -ENOSPC when out would grow past out->max; -ENOMEM. */
/* Clears env and makes it an envelope of type t at the current protocol version, for the
 * stream req_id (NULL: a control message without one). */
void bus_env_init(bus_env_t *env, bus_type_t t, const uint8_t *req_id);

int bus_env_encode(const bus_env_t *env, bus_buf_t *out);

/* Decodes one envelope that fills buf[0..len) exactly. Slices in *out borrow from buf.
 * Returns 0; -EBADMSG for malformed input (truncated, trailing bytes, not a map, a non-str
 * key, a value of the wrong type, req_id not 16 bytes, a string over its maximum or not UTF-8,
 * nesting deeper than 32 arrays/maps, a length past the end, a repeated known key, a missing
 * REQ field, or len > BUS_ENV_MAX_BYTES); -EPROTO for a version of 0 or past
 * BUS_PROTO_VERSION; -ENOTSUP for a type this build does not know.
 * On any failure the payload (out->u) is zeroed; out->version, out->type and out->req_id /
 * has_req_id are still set when they could be read, so the caller can send an error reply
 * (on -ENOTSUP out->type is BUS_T_UNKNOWN). err (may be NULL) gets one line saying why. */
int bus_env_decode(const uint8_t *buf, size_t len, bus_env_t *out, char *err, size_t errlen);

/* Takes the next string of a STRLIST iterator: 1 got one, 0 end, -EBADMSG malformed (not a
 * str, not UTF-8, over BUS_LIST_ELEM_MAX, or count and bytes disagree). */
int bus_list_next_str(bus_list_t *it, bus_str_t *out);

/* Takes the next [key, value] pair of a KVLIST iterator: 1, 0 end, -EBADMSG. */
int bus_list_next_kv(bus_list_t *it, bus_str_t *k, bus_str_t *v);

/* Packs n strings as a STRLIST into scratch (reset first) and points *out at scratch's bytes;
 * keep scratch alive and unchanged while *out is used. 0, -EINVAL (string not UTF-8 or over
 * BUS_LIST_ELEM_MAX, n over UINT32_MAX), -ENOSPC, -ENOMEM. */
int bus_list_encode_strs(bus_buf_t *scratch, const bus_str_t *strs, size_t n, bus_list_t *out);

/* Packs n pairs as a KVLIST into scratch (reset first) and points *out at it. kvs holds 2*n
 * strings: key0, value0, key1, value1, ... Same returns as bus_list_encode_strs(). */
int bus_list_encode_kvs(bus_buf_t *scratch, const bus_str_t *kvs, size_t n, bus_list_t *out);

/* Renders env as one line of JSON for the bus tap:
 * {"v":1,"type":"...","req_id":"hex"|null,"payload":{...}} with every field of the type;
 * bin as a hex string, or {"len":N,"hex":"<first 64 bytes>"} when longer than 64 bytes;
 * STRLIST as an array of strings; KVLIST as an array of [key, value] arrays.
 * *out is malloc'd, NUL-terminated, the caller's to free (NULL on failure). 0, -EINVAL (unknown
 * type, invalid UTF-8 or a malformed list), -ENOSPC (over 64 MiB of JSON), -ENOMEM. */
int bus_env_to_json(const bus_env_t *env, char **out);

/* Writes the 32 lower-case hex digits of a request id and a NUL. */
void bus_req_id_hex(const uint8_t id[BUS_REQ_ID_LEN], char out[33]);

/* Parses exactly 32 hex digits (either case, NUL-terminated) into a request id: 0, -EINVAL. */
int bus_req_id_parse(const char *hex, uint8_t out[BUS_REQ_ID_LEN]);

#endif
