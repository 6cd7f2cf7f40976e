/* eventstream: AWS's binary event-stream framing (application/vnd.amazon.eventstream).
 *
 * Bedrock's streamed answers (invoke-with-response-stream, converse-stream) are a sequence of
 * messages, every number big-endian:
 *   total length (4) | headers length (4) | prelude CRC32 (4, over the 8 bytes before it)
 *   | headers | payload | message CRC32 (4, over everything before it)
 * A header is: name length (1), name, value type (1), value. Types: 0 bool true, 1 bool false
 * (no value bytes), 2 byte (1), 3 short (2), 4 integer (4), 5 long (8), 6 byte array (2-byte
 * length + bytes), 7 string (2-byte length + bytes), 8 timestamp (8), 9 UUID (16).
 * Bedrock uses the string headers :event-type, :content-type, :message-type ("event" or
 * "exception") and :exception-type.
 *
 * The decoder is incremental: bytes are fed as they arrive, split anywhere, and each complete
 * message is handed to a callback with its string headers and payload. It never changes or
 * holds back the bytes the caller relays; it only reads them. CRC32 is zlib's (ISO-HDLC).
 * The encoder builds one message (for fake vendors in tests, and for the gateway's in-stream
 * error in this format).
 */
#ifndef EVENTSTREAM_H
#define EVENTSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ES_PRELUDE_LEN 12                   /* total length, headers length, prelude CRC */
#define ES_MIN_MESSAGE (ES_PRELUDE_LEN + 4) /* no headers, no payload */
#define ES_MAX_MESSAGE (16u * 1024 * 1024)  /* AWS's own limit for one message */
#define ES_MAX_HEADERS 32                   /* string headers kept per message */

/* One string header of a message (borrowed from the decoder's buffer). */
typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} es_header_t;

/* One decoded message, valid during the callback only. */
typedef struct {
    const es_header_t *headers; /* the string-typed headers, in order */
    size_t n_headers;           /* their count (headers of other types are skipped) */
    const uint8_t *payload;     /* the payload bytes */
    size_t payload_len;         /* their count */
} es_message_t;

/* Called for each complete message whose CRCs check. */
typedef void (*es_message_fn)(void *arg, const es_message_t *m);

/* Decoder state. Zero-initialize with es_decoder_init; free with es_decoder_free. */
typedef struct {
    es_message_fn fn;  /* callback */
    void *arg;         /* its argument */
    uint8_t *buf;      /* bytes of the message being received */
    size_t len, cap;   /* their count, the buffer's size */
    uint64_t messages; /* messages decoded */
    int error;         /* 0, or the first error: -EBADMSG (bad CRC, bad lengths, bad header),
                          -EMSGSIZE (a message over ES_MAX_MESSAGE), -ENOMEM; once set, the
                          decoder reads nothing more */
} es_decoder_t;

/* Sets d up empty, calling fn(arg, message) for each message. */
void es_decoder_init(es_decoder_t *d, es_message_fn fn, void *arg);

/* Frees d's buffer (d NULL is fine); es_decoder_init makes it ready again. */
void es_decoder_free(es_decoder_t *d);

/* Feeds len bytes, calling the callback for each message they complete (the callback must not
 * feed or free the decoder). 0, or the decoder's (sticky) error; -EINVAL for data NULL with
 * len > 0 (not sticky). */
int es_decoder_feed(es_decoder_t *d, const uint8_t *data, size_t len);

/* True when no partial message is pending (the stream ended on a message boundary) and no error
 * has stopped the decoder. */
bool es_decoder_idle(const es_decoder_t *d);

/* The value of the first string header called name (exact bytes, case-sensitive) in m, or NULL
 * (with *len unset). len may be NULL. */
const char *es_header_get(const es_message_t *m, const char *name, size_t *len);

/* Encodes one message with n string headers (names[i] = values[i]) and a payload. Returns a
 * malloc'd buffer of *out_len bytes, or NULL (ENOMEM, or a name over 255 bytes, a value over
 * 65535, a message over ES_MAX_MESSAGE, a NULL name or value: errno EINVAL). Names and values
 * are NUL-terminated; payload may be NULL when payload_len is 0. */
uint8_t *es_encode(const char *const *names, const char *const *values, size_t n,
                   const uint8_t *payload, size_t payload_len, size_t *out_len);

#endif
