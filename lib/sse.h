/* sse: an incremental Server-Sent Events parser (the WHATWG "event stream" rules).
 *
 * Bytes are fed in chunks of any size, one byte at a time included, and the result never
 * depends on where the chunks are cut. Lines end in "\n", "\r\n" or a bare "\r"; a "\r" that
 * ends one chunk and a "\n" that starts the next are one line end. A UTF-8 byte order mark at
 * the very start is skipped. Comment lines (":...") are ignored; the fields are event, data
 * (several data lines are joined with "\n"), id and retry; other fields are ignored. A blank
 * line dispatches the event gathered so far; a block without data lines dispatches nothing.
 * An event left unfinished when the stream ends is never dispatched (sse_finish).
 *
 * Raw offsets: every event carries the stream offsets [start, end) of its raw bytes: from the
 * first byte after the previous blank line (comment lines in its block included) to just past
 * its own terminating blank line. Cutting those bytes out of the stream leaves a valid stream
 * without that event, with nothing re-encoded. A blank line ended by a bare "\r" is dispatched
 * only when the next byte (or sse_finish) shows whether a "\n" belongs to it, so offsets do not
 * depend on the chunking either.
 *
 * Limits: the data of one event (as dispatched), its event name and the id are each at most
 * max_event bytes. An event over that returns -EMSGSIZE from the sse_feed() that crossed the
 * limit; the event is skipped up to its blank line and parsing goes on with the next one.
 * Buffers grow to the largest event seen and are then reused: no allocation per event.
 */
#ifndef SSE_H
#define SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sse_parser sse_parser_t;

/* One dispatched event; every pointer is valid only during the callback. */
typedef struct {
    const char *event; /* event type, NUL-terminated; "message" when the block named none */
    size_t event_len;  /* its length */
    const char *data;  /* data lines joined with "\n", NUL-terminated (may itself hold NULs) */
    size_t data_len;   /* its length */
    const char *id;    /* last event id seen so far (spec: it persists), "" if none */
    size_t id_len;     /* its length */
    uint64_t start;    /* stream offset of the event's first raw byte */
    uint64_t end;      /* stream offset just past its terminating blank line */
} sse_event_t;

/* Called once per dispatched event. Returns 0 to go on, or a negative errno that stops the
 * parser: sse_feed()/sse_finish() return it, now and on every later call. The callback must
 * not feed or destroy the parser that called it. */
typedef int (*sse_event_fn)(void *arg, const sse_event_t *ev);

/* New parser; max_event (>= 1) bounds each buffered field as above. NULL on failure. */
sse_parser_t *sse_new(size_t max_event, sse_event_fn fn, void *arg);

/* Frees the parser (NULL and *p == NULL are fine) and sets *p to NULL. */
void sse_destroy(sse_parser_t **p);

/* Parses len more bytes, calling the callback for each event they complete. Returns 0;
 * -EMSGSIZE when an event over the limit was skipped (parsing goes on); -ENOMEM (the event
 * being gathered is skipped, as for -EMSGSIZE); the callback's error (sticky); -EINVAL after
 * sse_finish() or with buf NULL and len > 0. */
int sse_feed(sse_parser_t *p, const uint8_t *buf, size_t len);

/* Ends the stream: settles a pending "\r" (which may dispatch one last event) and drops an
 * unfinished event. Returns 0 or a sticky callback error. Later feeds return -EINVAL. */
int sse_finish(sse_parser_t *p);

/* Makes the parser ready for a new stream (offsets from 0), keeping its buffers. */
void sse_reset(sse_parser_t *p);

/* Bytes fed so far: the offset the next byte will have. */
uint64_t sse_offset(const sse_parser_t *p);

/* Offset of the first byte that is not yet part of a finished block: every byte before it
 * belongs to an event already dispatched (or to a block with nothing to dispatch). A relay
 * that may cut events out forwards bytes up to here and holds the rest. */
uint64_t sse_pending_start(const sse_parser_t *p);

/* The last valid "retry" value in milliseconds, or -1 if none was seen. */
int64_t sse_retry_ms(const sse_parser_t *p);

/* Events skipped for being over the limit (or for want of memory) so far. */
uint64_t sse_skipped(const sse_parser_t *p);

#endif
