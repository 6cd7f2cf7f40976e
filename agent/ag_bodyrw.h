/* ag_bodyrw: streaming edits of a JSON request body on its way to the vendor.
 *
 * Two edits, both at the top level of the body's JSON object, without buffering the body:
 *  - insert a text right after the opening '{' (the agent inserts
 *    `"stream_options":{"include_usage":true},` when the gateway says, with the req.open header
 *    `x-relayhub-add-include-usage: 1`, that the user streams without asking for usage);
 *  - replace the value of the top-level "model" key with another model name (a renamed model:
 *    the user's public name becomes the vendor's).
 * Bytes are fed as they arrive and come out at once. The scanner tracks strings, escapes and
 * nesting depth only; the gateway has already checked the body is one JSON object with at most
 * one top-level "model" (a second one here is an error anyway).
 *
 * The output's length differs from the input's by a delta that is known as soon as the model
 * value has passed (or at once when no rename is asked), so the Content-Length sent to the
 * vendor is exact.
 */
#ifndef AG_BODYRW_H
#define AG_BODYRW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus_env.h"

typedef struct {
    const char *insert;  /* text after '{' (borrowed), or NULL */
    size_t insert_len;   /* its length */
    const char *rename;  /* new model name (borrowed; JSON-safe characters), or NULL */
    size_t rename_len;   /* its length */
    int state;           /* before '{', inside the object, after it */
    uint32_t depth;      /* nesting depth (1 = the top-level object) */
    bool in_str;         /* inside a string */
    bool esc;            /* the previous string byte was a backslash */
    bool expect_key;     /* at depth 1, the next string is a key */
    bool key_str;        /* the current string is a depth-1 key */
    char key[8];         /* its first bytes */
    size_t key_len;      /* its raw length */
    bool key_is_model;   /* the last depth-1 key was "model" */
    bool value_next;     /* after the depth-1 ':', before the value */
    bool skip_value;     /* inside the model string being replaced */
    bool model_done;     /* the model value has been replaced */
    int64_t delta;       /* output bytes minus input bytes so far */
} ag_bodyrw_t;

/* Prepares a rewriter; insert and rename may be NULL (then it copies). */
void ag_bodyrw_init(ag_bodyrw_t *rw, const char *insert, const char *rename);

/* Feeds n input bytes; appends the output to out. 0, -EBADMSG (not a JSON object, a second
 * "model", a model value that is not a string), -ENOSPC / -ENOMEM from out. */
int ag_bodyrw_feed(ag_bodyrw_t *rw, const uint8_t *in, size_t n, bus_buf_t *out);

/* 1 with *delta set when the final output length is input length + *delta, 0 when that
 * depends on bytes not seen yet. input_done says the whole body has been fed. */
int ag_bodyrw_final_delta(const ag_bodyrw_t *rw, bool input_done, int64_t *delta);

/* 1 when the body ended as a complete top-level object, else 0. */
int ag_bodyrw_complete(const ag_bodyrw_t *rw);

#endif
