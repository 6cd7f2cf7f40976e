/* bus_mp: a msgpack cursor reader that never allocates.
 *
 * A bus_mp_t walks a caller's buffer one item at a time. Every length and count is checked
 * against the bytes left before anything is read, so a 5-byte header that claims a 4 GiB string
 * or a billion-element array fails at once instead of asking for memory (the msgpack-c 4.0
 * unpacker allocates count x 24 bytes from a header: never use it on untrusted input).
 * Strings, binaries and ext payloads come back as pointers into the buffer (borrowed).
 *
 * All formats of the msgpack spec are understood: nil, bool, positive/negative fixint,
 * uint8..64, int8..64, float32/64, fixstr/str8/16/32, bin8/16/32, fixarray/array16/32,
 * fixmap/map16/32, fixext1..16 and ext8/16/32. 0xc1 (never used) is malformed.
 *
 * Every reader returns 0 or -EBADMSG (truncated, malformed, or not the asked-for kind). After
 * an error the cursor's position is unspecified: abandon the message.
 */
#ifndef BUS_MP_H
#define BUS_MP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Deepest nesting of arrays/maps bus_mp_skip() is normally given (msgpack-c's own limit). */
#define BUS_MP_MAX_DEPTH 32

typedef struct {
    const uint8_t *p; /* next unread byte */
    size_t left;      /* bytes left from p to the end of the buffer */
} bus_mp_t;

typedef enum {
    BUS_MP_NIL = 1, /* nil */
    BUS_MP_BOOL,    /* v.b */
    BUS_MP_UINT,    /* v.u: any non-negative integer, whatever format carried it */
    BUS_MP_INT,     /* v.i: a negative integer (always < 0) */
    BUS_MP_FLOAT,   /* v.f: float32 (widened) or float64 */
    BUS_MP_STR,     /* v.raw: bytes, not yet checked for UTF-8 */
    BUS_MP_BIN,     /* v.raw */
    BUS_MP_ARRAY,   /* v.count elements follow */
    BUS_MP_MAP,     /* v.count key/value pairs follow */
    BUS_MP_EXT,     /* v.ext */
} bus_mp_kind_t;

typedef struct {
    bus_mp_kind_t kind; /* what was read; selects the member of v */
    union {
        bool b;         /* BOOL */
        uint64_t u;     /* UINT */
        int64_t i;      /* INT */
        double f;       /* FLOAT */
        uint32_t count; /* ARRAY: elements, MAP: pairs */
        struct {
            const uint8_t *p; /* first byte, borrowed from the buffer */
            uint32_t len;     /* byte count */
        } raw;                /* STR, BIN */
        struct {
            int8_t type;      /* application ext type */
            const uint8_t *p; /* payload, borrowed */
            uint32_t len;     /* payload byte count */
        } ext;                /* EXT */
    } v;
} bus_mp_obj_t;

/* Points the cursor at len bytes starting at buf. */
void bus_mp_init(bus_mp_t *c, const void *buf, size_t len);

/* Reads one item: a whole scalar/str/bin/ext, or only the header of an array or map (whose
 * count is already checked to fit in the bytes left). */
int bus_mp_next(bus_mp_t *c, bus_mp_obj_t *o);

/* Skips one complete value of any shape. depth is the number of array/map levels allowed
 * (0: scalars only); deeper input is -EBADMSG. */
int bus_mp_skip(bus_mp_t *c, unsigned depth);

/* True when the next item is nil (does not move the cursor). */
bool bus_mp_peek_nil(const bus_mp_t *c);

/* Reads a non-negative integer of any integer format. Negative values and non-integers fail. */
int bus_mp_read_u64(bus_mp_t *c, uint64_t *out);

/* Reads an integer of any integer format that fits int64_t. */
int bus_mp_read_i64(bus_mp_t *c, int64_t *out);

/* Reads true or false. */
int bus_mp_read_bool(bus_mp_t *c, bool *out);

/* Reads a str; *p borrows from the buffer. UTF-8 is not checked here. */
int bus_mp_read_str(bus_mp_t *c, const uint8_t **p, uint32_t *len);

/* Reads a bin; *p borrows from the buffer. */
int bus_mp_read_bin(bus_mp_t *c, const uint8_t **p, uint32_t *len);

/* Reads an array header. */
int bus_mp_read_array(bus_mp_t *c, uint32_t *count);

/* Reads a map header (count = number of pairs). */
int bus_mp_read_map(bus_mp_t *c, uint32_t *count);

/* True when p[0..len) is well-formed UTF-8 (no overlongs, surrogates or code points past
 * U+10FFFF). NUL bytes are allowed. */
bool bus_mp_utf8_valid(const uint8_t *p, size_t len);

#endif
