/* jsonscan: a streaming validator for JSON request bodies that captures a few top-level members.
 *
 * The hub never reads a request body whole nor builds a tree of it. jscan_feed() takes the body
 * in chunks of any size (one byte at a time works) and keeps O(nesting depth) state: one fixed
 * allocation made by jscan_new(), nothing during the scan. It
 *  - validates the whole document as strict JSON (RFC 8259): every string escape including
 *    \uXXXX surrogate pairs (a lone surrogate is an error), well-formed UTF-8 (no overlong forms,
 *    no encoded surrogates, nothing above U+10FFFF), control characters only as escapes, the
 *    exact number grammar, the literals true/false/null, whitespace only after the top-level
 *    value, no byte-order mark; the top-level value must be an object;
 *  - reports every top-level key (unescaped) to an optional callback, and counts them;
 *  - captures the values of a small set of top-level keys, compared after unescaping
 *    ("mod\u0065l" IS "model"): the built-in JSCAN_K_* below plus up to JSCAN_EXTRA_MAX names
 *    of the caller's. The same names nested deeper are ignored: {"messages":[{"model":"x"}]}
 *    has no model. One key is captured one level down: "include_usage" inside a top-level
 *    "stream_options" object;
 *  - rejects a captured key that occurs twice, so the hub and the vendor can never read
 *    different values.
 *
 * Verdicts. Syntax, depth and size errors end the scan: jscan_feed() returns the error and
 * keeps returning it. Duplicate keys and type errors (see jscan_kind_t) do not: they are
 * recorded where they occur (the first one wins), the scan goes on validating, and
 * jscan_finish() returns them once the whole body proved well-formed — a malformed body is
 * always reported as malformed. jscan_error() shows a recorded verdict at any time, so a
 * caller may give up early. The outcome never depends on how the body was split.
 *
 * Null counts as absent ("stream": null is no stream member, as in OpenAI's API), but a
 * second occurrence of the key is still a duplicate.
 */
#ifndef JSONSCAN_H
#define JSONSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSCAN_DEPTH_DEFAULT 64 /* nesting limit when the options leave it 0 */
#define JSCAN_DEPTH_MAX 1024   /* the largest nesting limit one may configure */
#define JSCAN_KEY_MAX 256      /* unescaped key bytes kept; longer keys match nothing */
#define JSCAN_STR_MAX 256      /* unescaped bytes kept of a captured string value */
#define JSCAN_NAME_MAX 64      /* longest extra key name a caller may ask for */
#define JSCAN_EXTRA_MAX 8      /* extra key names a caller may ask for */

/* Captured keys: the built-in ones, then the caller's extras in the order given. */
typedef enum {
    JSCAN_K_MODEL,                 /* "model": must be a string of at most JSCAN_STR_MAX */
    JSCAN_K_STREAM,                /* "stream": must be a boolean */
    JSCAN_K_MAX_TOKENS,            /* "max_tokens": must be an integer >= 0 */
    JSCAN_K_MAX_COMPLETION_TOKENS, /* "max_completion_tokens": same */
    JSCAN_K_MAX_OUTPUT_TOKENS,     /* "max_output_tokens" (Responses API): same */
    JSCAN_K_STREAM_OPTIONS,        /* "stream_options": any type; presence matters */
    JSCAN_K_INCLUDE_USAGE,         /* "include_usage" inside a top-level stream_options object */
    JSCAN_K_BUILTIN_COUNT,         /* the first extra key's index */
} jscan_key_t;

/* What went wrong; each kind has one errno (in brackets). */
typedef enum {
    JSCAN_OK,                /* no error (0) */
    JSCAN_E_SYNTAX,          /* malformed JSON or a body that ended too soon (-EBADMSG) */
    JSCAN_E_NOT_OBJECT,      /* well-started JSON whose top-level value is no object (-EBADMSG) */
    JSCAN_E_DEPTH,           /* nested deeper than the limit (-ELOOP) */
    JSCAN_E_SIZE,            /* more bytes than max_bytes (-EMSGSIZE) */
    JSCAN_E_DUPLICATE,       /* a captured key occurs twice (-EEXIST) */
    JSCAN_E_MODEL_TYPE,      /* "model" is not a string (-EINVAL) */
    JSCAN_E_MODEL_LONG,      /* "model" is longer than JSCAN_STR_MAX bytes unescaped (-EINVAL) */
    JSCAN_E_STREAM_TYPE,     /* "stream" is not a boolean (-EINVAL) */
    JSCAN_E_MAX_TOKENS_TYPE, /* a max_*tokens key is no integer in [0, INT64_MAX] (-EINVAL) */
} jscan_kind_t;

/* The type of a captured value. */
typedef enum {
    JSCAN_T_ABSENT, /* the key did not occur (yet) */
    JSCAN_T_STRING,
    JSCAN_T_NUMBER,
    JSCAN_T_TRUE,
    JSCAN_T_FALSE,
    JSCAN_T_NULL,
    JSCAN_T_OBJECT,
    JSCAN_T_ARRAY,
} jscan_type_t;

/* One captured member. Strings are unescaped and may hold NUL bytes (from \u0000). */
typedef struct {
    jscan_type_t type;           /* JSCAN_T_ABSENT until read (object, array: once opened) */
    uint64_t key_offset;         /* byte offset of the key's opening quote */
    uint64_t value_offset;       /* byte offset of the value's first byte */
    size_t str_len;              /* string: bytes kept in str */
    bool str_truncated;          /* string: longer than JSCAN_STR_MAX (cut at a char boundary) */
    char str[JSCAN_STR_MAX + 1]; /* string: the unescaped value, NUL-terminated */
    bool is_int;                 /* number: integer grammar (no fraction, no exponent), fits */
    bool int_overflow;           /* number: integer grammar, outside int64 */
    int64_t i64;                 /* number: the value when is_int */
} jscan_value_t;

/* What the gateway needs, kept up to date as the body streams by. */
typedef struct {
    bool complete;               /* jscan_finish() returned 0: the body is valid and whole */
    uint32_t members;            /* top-level members seen so far (duplicates included) */
    bool has_model;              /* "model" is a string */
    const char *model;           /* borrowed, NUL-terminated (may hold NULs: see model_len) */
    size_t model_len;            /* bytes in model */
    bool has_stream;             /* "stream" is a boolean */
    bool stream;                 /* its value */
    bool has_max_tokens;         /* one of the three token limits is set */
    int64_t max_tokens;          /* its value, >= 0 */
    const char *max_tokens_key;  /* which won: "max_tokens", else "max_completion_tokens",
                                  * else "max_output_tokens" (by name, not by position) */
    bool stream_options_present; /* "stream_options" occurs with a non-null value */
    bool has_include_usage;      /* stream_options.include_usage is a boolean */
    bool include_usage;          /* its value */
} jscan_result_t;

/* The first error, or code 0. */
typedef struct {
    int code;          /* 0 or the negative errno jscan_finish() returns */
    jscan_kind_t kind; /* what went wrong */
    uint64_t offset;   /* byte offset in the body where it went wrong */
    const char *key;   /* the captured key concerned (duplicate, type errors), else NULL */
    char msg[192];     /* one line for the user: what, where ("... at byte N") */
} jscan_error_t;

/* Called for every top-level key, unescaped (key is only valid during the call). */
typedef void (*jscan_key_fn)(void *ctx, const char *key, size_t len, bool truncated,
                             uint64_t offset);

typedef struct {
    uint64_t max_bytes;       /* largest body accepted; 0: no limit */
    uint32_t max_depth;       /* 1..JSCAN_DEPTH_MAX; 0: JSCAN_DEPTH_DEFAULT */
    const char *const *extra; /* extra top-level keys to capture (distinct, not built-in) */
    size_t n_extra;           /* how many, at most JSCAN_EXTRA_MAX */
    jscan_key_fn on_key;      /* optional */
    void *ctx;                /* passed to on_key */
} jscan_opts_t;

typedef struct jscan jscan_t;

/* A new scanner (opts may be NULL for the defaults); NULL on bad options (errno EINVAL) or
 * without memory. Extra key i is captured as index JSCAN_K_BUILTIN_COUNT + i. */
jscan_t *jscan_new(const jscan_opts_t *opts);

/* Frees a scanner; accepts NULL and sets *p to NULL. */
void jscan_destroy(jscan_t **p);

/* Makes the scanner ready for the next body, with the same options. */
void jscan_reset(jscan_t *s);

/* Scans the next len bytes of the body: 0, or -EBADMSG / -ELOOP / -EMSGSIZE, which every
 * later call returns again. After jscan_finish(): its error, or -EALREADY if it succeeded. */
int jscan_feed(jscan_t *s, const void *data, size_t len);

/* Marks the end of the body: 0 when it is a complete, valid object without duplicate or
 * mistyped members, else the first error's negative errno (see jscan_kind_t). Idempotent. */
int jscan_finish(jscan_t *s);

/* The members captured so far (complete after jscan_finish() returned 0). Borrowed. */
const jscan_result_t *jscan_result(const jscan_t *s);

/* A captured member by index (jscan_key_t, or an extra's index); NULL if out of range. */
const jscan_value_t *jscan_value(const jscan_t *s, unsigned idx);

/* The first error so far (code 0 if none), including a verdict that jscan_finish() will
 * return but jscan_feed() did not. Borrowed. */
const jscan_error_t *jscan_error(const jscan_t *s);

/* Bytes fed so far. */
uint64_t jscan_offset(const jscan_t *s);

/* The name of a captured key index, or NULL. */
const char *jscan_key_name(const jscan_t *s, unsigned idx);

#endif
