/* fv_scan: reads the few request-body members the fake vendor needs, as the body streams by.
 *
 * Bodies can be tens of MiB and are never stored whole, so the fake cannot parse them into a
 * tree. fv_scan_feed() takes the body in pieces of any size, checks its structure (balanced
 * containers, strings, literals; a top-level object) and captures the members below. Like the
 * vendors' own parsers it is lenient about duplicates: the last occurrence wins (the hub is the
 * one that must refuse them). Keys are compared as sent (escapes are not decoded).
 */
#ifndef FV_SCAN_H
#define FV_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FV_SCAN_STR_MAX 255 /* bytes kept of a captured string */
#define FV_SCAN_DEPTH 256   /* nesting limit */

typedef struct {
    /* results */
    bool valid;                      /* after fv_scan_finish(): structurally valid JSON object */
    char model[FV_SCAN_STR_MAX + 1]; /* "model" when a string */
    bool has_model;                  /* model is set */
    int stream;                      /* "stream": -1 absent, 0 false, 1 true, 2 another type */
    int include_usage;               /* "stream_options":{"include_usage"}: -1 absent, 0, 1 */
    int include_obfuscation;         /* "stream_options":{"include_obfuscation"}: -1 absent, 0, 1 */
    int64_t max_tokens;       /* max_tokens, else max_completion_tokens / max_output_tokens; -1 */
    int64_t dimensions;       /* "dimensions" (embeddings), -1 absent */
    char encoding_format[32]; /* "encoding_format" (embeddings), "" absent */
    int64_t n_inputs;         /* "input": 1 for a string, the element count of an array; -1 */
    bool input_nested;        /* "input" is an array of arrays (token lists) or of strings */
    /* state */
    int st;                        /* lexer state */
    bool bad;                      /* structure error seen */
    bool done;                     /* the top-level value ended */
    int depth;                     /* containers open */
    uint8_t stack[FV_SCAN_DEPTH];  /* '{' or '[' per level */
    bool expect_key;               /* inside an object, before a key */
    bool str_is_key;               /* the string being read is a key */
    int hex_left;                  /* \u digits left */
    char key1[64];                 /* the current top-level key */
    char key2[64];                 /* the current key one level down */
    char buf[FV_SCAN_STR_MAX + 1]; /* string or literal being captured */
    size_t buf_len;                /* bytes in buf (more are dropped) */
    int value_depth;               /* depth at which the current scalar sits */
} fv_scan_t;

/* Prepares a scanner. */
void fv_scan_init(fv_scan_t *s);

/* Scans the next bytes of the body. */
void fv_scan_feed(fv_scan_t *s, const uint8_t *p, size_t n);

/* Ends the body: sets valid. */
void fv_scan_finish(fv_scan_t *s);

#endif
