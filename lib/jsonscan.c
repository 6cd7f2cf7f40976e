/* jsonscan: streaming strict-JSON validator that captures a few top-level members.
 *
 * A byte-at-a-time state machine. The only memory is the jscan_t itself: the container stack is
 * one bit per level (object or array), strings are validated as they pass and copied only when
 * they are a key at a capturing level or the value of a captured key, each into a fixed buffer.
 * A value that ends on the byte after it (a number) asks for that byte to be looked at again in
 * the next state; see s_scan.
 */
#include "jsonscan.h"
#include "pct.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_SLOTS (JSCAN_K_BUILTIN_COUNT + JSCAN_EXTRA_MAX)
#define S_STR2(x) #x
#define S_STR(x) S_STR2(x)

/* Parser states. P_VALUE is 0 so that a zeroed state is ready for a body. */
enum {
    P_VALUE,     /* a value must come (at the top, after ':', after ',' in an array) */
    P_ARR_FIRST, /* after '[': a value or ']' */
    P_OBJ_FIRST, /* after '{': a key or '}' */
    P_OBJ_KEY,   /* after ',' in an object: a key */
    P_COLON,     /* after a key: ':' */
    P_AFTER,     /* after a value in a container: ',' or the closing bracket */
    P_DONE,      /* after the top-level value: whitespace only */
    P_STRING,    /* inside a string (sub: STR_*) */
    P_NUMBER,    /* inside a number (sub: N_*) */
    P_LITERAL,   /* inside true, false or null */
    P_ERROR,     /* a fatal error happened */
};

/* String sub-states. */
enum {
    STR_CHAR,  /* plain characters (and UTF-8 continuation bytes when u8_need > 0) */
    STR_ESC,   /* after a backslash */
    STR_HEX,   /* inside the 4 hex digits of \u */
    STR_LO_BS, /* after a high surrogate: the backslash of its low half must come */
    STR_LO_U,  /* after that backslash: 'u' must come */
};

/* Number sub-states, after RFC 8259's grammar. */
enum {
    N_MINUS,   /* after '-': a digit must come */
    N_ZERO,    /* a leading 0: '.', 'e', 'E' or the end */
    N_INT,     /* integer digits */
    N_DOT,     /* after '.': a digit must come */
    N_FRAC,    /* fraction digits */
    N_EXP,     /* after 'e': sign or digit */
    N_EXP_SGN, /* after the exponent's sign: a digit must come */
    N_EXP_DIG, /* exponent digits */
};

/* Everything about one body; jscan_reset zeroes it. */
typedef struct {
    uint64_t pos;   /* offset of the byte being scanned (= bytes consumed before it) */
    uint8_t state;  /* P_* */
    uint8_t sub;    /* STR_* or N_* */
    bool fatal;     /* a syntax, depth or size error ended the scan */
    bool finished;  /* jscan_finish was called */
    uint32_t depth; /* open containers */
    uint64_t stack[JSCAN_DEPTH_MAX / 64]; /* bit d set: the container at depth d+1 is an object */
    bool in_so;                           /* depth 2 is the top-level stream_options object */
    bool str_key;                         /* the current string is an object key */
    uint64_t str_off;                     /* offset of its opening quote */
    uint8_t u8_need;                      /* UTF-8 continuation bytes still to come */
    uint8_t u8_lo;                        /* smallest byte allowed as the next continuation */
    uint8_t u8_hi;                        /* largest byte allowed as the next continuation */
    uint8_t hex_n;                        /* hex digits read of the current \u escape */
    uint32_t hex_v;                       /* their value */
    uint32_t hi_sur;                      /* a high surrogate waiting for its low half, or 0 */
    char *dst;                   /* where the current string's unescaped bytes go, or NULL */
    size_t *dst_len;             /* bytes in dst */
    bool *dst_trunc;             /* set when dst overflowed */
    size_t dst_cap;              /* room in dst, without the NUL */
    char key[JSCAN_KEY_MAX + 1]; /* the key being read at a capturing level */
    size_t key_len;              /* bytes in key */
    bool key_trunc;              /* the key was longer than JSCAN_KEY_MAX */
    bool n_neg;                  /* the number has a minus sign */
    bool n_frac;                 /* the number has a fraction or an exponent */
    bool n_ovf;                  /* its integer part left int64 */
    uint64_t n_mag;              /* magnitude of its integer part */
    const char *lit;             /* the literal being read */
    uint8_t lit_pos;             /* bytes of it matched */
    int pending;                 /* slot of the value after the current key, or -1 */
    int cap;                     /* slot of the value being read, or -1 */
    bool seen[N_SLOTS];          /* the slot's key occurred */
    jscan_value_t vals[N_SLOTS]; /* captured values */
    jscan_result_t res;          /* summary of vals */
    jscan_error_t err;           /* the first error */
} jscan_state_t;

struct jscan {
    jscan_opts_t opts;                                     /* options (extra names: below) */
    char extra_names[JSCAN_EXTRA_MAX][JSCAN_NAME_MAX + 1]; /* copies of the extra key names */
    const char *names[N_SLOTS];                            /* key name by slot */
    size_t name_len[N_SLOTS];                              /* its length */
    unsigned n_slots;                                      /* built-in + extra */
    jscan_state_t st;                                      /* the body being scanned */
};

static const char *const s_builtin[JSCAN_K_BUILTIN_COUNT] = {
    [JSCAN_K_MODEL] = "model",
    [JSCAN_K_STREAM] = "stream",
    [JSCAN_K_MAX_TOKENS] = "max_tokens",
    [JSCAN_K_MAX_COMPLETION_TOKENS] = "max_completion_tokens",
    [JSCAN_K_MAX_OUTPUT_TOKENS] = "max_output_tokens",
    [JSCAN_K_STREAM_OPTIONS] = "stream_options",
    [JSCAN_K_INCLUDE_USAGE] = "include_usage",
};

/* Records an error that ends the scan (it replaces a verdict recorded earlier). */
static int s_fatal(jscan_t *s, jscan_kind_t kind, int code, uint64_t off, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int s_fatal(jscan_t *s, jscan_kind_t kind, int code, uint64_t off, const char *fmt, ...)
{
    jscan_error_t *e = &s->st.err;
    va_list ap;
    e->code = code;
    e->kind = kind;
    e->offset = off;
    e->key = NULL;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    s->st.fatal = true;
    s->st.state = P_ERROR;
    return code;
}

/* Records a malformed-JSON error at the current byte. */
static int s_syntax(jscan_t *s, const char *why)
{
    return s_fatal(s, JSCAN_E_SYNTAX, -EBADMSG, s->st.pos, "malformed JSON at byte %" PRIu64 ": %s",
                   s->st.pos, why);
}

/* Records a verdict (duplicate or type error) unless an error is already recorded. */
static void s_verdict(jscan_t *s, jscan_kind_t kind, int slot, uint64_t off, const char *what)
{
    jscan_error_t *e = &s->st.err;
    if (e->code)
        return;
    e->code = kind == JSCAN_E_DUPLICATE ? -EEXIST : -EINVAL;
    e->kind = kind;
    e->offset = off;
    e->key = s->names[slot];
    snprintf(e->msg, sizeof e->msg, "%s\"%s\" at byte %" PRIu64 "%s",
             kind == JSCAN_E_DUPLICATE ? "duplicate key " : "", s->names[slot], off, what);
}

/* Recomputes the summary from the captured values. */
static void s_update(jscan_t *s)
{
    jscan_state_t *st = &s->st;
    jscan_result_t *r = &st->res;
    const jscan_value_t *v = &st->vals[JSCAN_K_MODEL];
    r->has_model = v->type == JSCAN_T_STRING && !v->str_truncated;
    r->model = r->has_model ? v->str : NULL;
    r->model_len = r->has_model ? v->str_len : 0;
    v = &st->vals[JSCAN_K_STREAM];
    r->has_stream = v->type == JSCAN_T_TRUE || v->type == JSCAN_T_FALSE;
    r->stream = v->type == JSCAN_T_TRUE;
    r->has_max_tokens = false;
    r->max_tokens = 0;
    r->max_tokens_key = NULL;
    for (int k = JSCAN_K_MAX_TOKENS; k <= JSCAN_K_MAX_OUTPUT_TOKENS; k++) {
        v = &st->vals[k];
        if (v->type == JSCAN_T_NUMBER && v->is_int && v->i64 >= 0) {
            r->has_max_tokens = true;
            r->max_tokens = v->i64;
            r->max_tokens_key = s->names[k];
            break;
        }
    }
    v = &st->vals[JSCAN_K_STREAM_OPTIONS];
    r->stream_options_present = v->type != JSCAN_T_ABSENT && v->type != JSCAN_T_NULL;
    v = &st->vals[JSCAN_K_INCLUDE_USAGE];
    r->has_include_usage = v->type == JSCAN_T_TRUE || v->type == JSCAN_T_FALSE;
    r->include_usage = v->type == JSCAN_T_TRUE;
}

/* Length of a UTF-8 buffer without an incomplete sequence at its end. */
static size_t s_utf8_trim(const char *b, size_t len)
{
    size_t i = len, conts = 0;
    while (i > 0 && conts < 3 && ((unsigned char)b[i - 1] & 0xC0) == 0x80) {
        i--;
        conts++;
    }
    if (i == 0)
        return len;
    unsigned char lead = (unsigned char)b[i - 1];
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    return conts + 1 < need ? i - 1 : len;
}

/* Stores the type of the value being captured, checks it, updates the summary. */
static void s_capture_done(jscan_t *s, jscan_type_t type)
{
    jscan_state_t *st = &s->st;
    int k = st->cap;
    if (k < 0)
        return;
    st->cap = -1;
    jscan_value_t *v = &st->vals[k];
    v->type = type;
    if (type == JSCAN_T_STRING) {
        if (v->str_truncated)
            v->str_len = s_utf8_trim(v->str, v->str_len);
        v->str[v->str_len] = '\0';
    }
    switch (k) {
    case JSCAN_K_MODEL:
        if (type != JSCAN_T_STRING && type != JSCAN_T_NULL)
            s_verdict(s, JSCAN_E_MODEL_TYPE, k, v->value_offset, " must be a string");
        else if (type == JSCAN_T_STRING && v->str_truncated)
            s_verdict(s, JSCAN_E_MODEL_LONG, k, v->value_offset,
                      " is longer than " S_STR(JSCAN_STR_MAX) " bytes");
        break;
    case JSCAN_K_STREAM:
        if (type != JSCAN_T_TRUE && type != JSCAN_T_FALSE && type != JSCAN_T_NULL)
            s_verdict(s, JSCAN_E_STREAM_TYPE, k, v->value_offset, " must be a boolean");
        break;
    case JSCAN_K_MAX_TOKENS:
    case JSCAN_K_MAX_COMPLETION_TOKENS:
    case JSCAN_K_MAX_OUTPUT_TOKENS:
        if (type != JSCAN_T_NULL && !(type == JSCAN_T_NUMBER && v->is_int && v->i64 >= 0))
            s_verdict(s, JSCAN_E_MAX_TOKENS_TYPE, k, v->value_offset,
                      " must be a non-negative integer");
        break;
    default:
        break;
    }
    s_update(s);
}

/* After a value (scalar or closed container): what may follow depends on the depth. */
static void s_value_done(jscan_t *s)
{
    s->st.state = s->st.depth == 0 ? P_DONE : P_AFTER;
}

/* Whether the container at the current depth is an object. */
static bool s_in_object(const jscan_state_t *st)
{
    uint32_t d = st->depth - 1;
    return (st->stack[d / 64] >> (d % 64)) & 1;
}

/* Opens an object or an array. */
static int s_push(jscan_t *s, bool object)
{
    jscan_state_t *st = &s->st;
    if (st->depth >= s->opts.max_depth)
        return s_fatal(s, JSCAN_E_DEPTH, -ELOOP, st->pos,
                       "JSON nested deeper than %" PRIu32 " levels at byte %" PRIu64,
                       s->opts.max_depth, st->pos);
    uint32_t d = st->depth++;
    if (object)
        st->stack[d / 64] |= UINT64_C(1) << (d % 64);
    else
        st->stack[d / 64] &= ~(UINT64_C(1) << (d % 64));
    st->state = object ? P_OBJ_FIRST : P_ARR_FIRST;
    return 0;
}

/* Closes the current container with c ('}' or ']'). */
static int s_close(jscan_t *s, uint8_t c)
{
    jscan_state_t *st = &s->st;
    if ((c == '}') != s_in_object(st))
        return s_syntax(s, c == '}' ? "'}' closes an array" : "']' closes an object");
    if (st->depth-- == 2)
        st->in_so = false;
    s_value_done(s);
    return 0;
}

/* Starts a string: a key or a value; decides where its unescaped bytes go. */
static void s_string_begin(jscan_t *s, bool key)
{
    jscan_state_t *st = &s->st;
    st->state = P_STRING;
    st->sub = STR_CHAR;
    st->u8_need = 0;
    st->hi_sur = 0;
    st->str_key = key;
    st->str_off = st->pos;
    st->dst = NULL;
    if (key && (st->depth == 1 || (st->depth == 2 && st->in_so))) {
        st->key_len = 0;
        st->key_trunc = false;
        st->dst = st->key;
        st->dst_len = &st->key_len;
        st->dst_trunc = &st->key_trunc;
        st->dst_cap = JSCAN_KEY_MAX;
    } else if (!key && st->cap >= 0) {
        jscan_value_t *v = &st->vals[st->cap];
        v->str_len = 0;
        v->str_truncated = false;
        st->dst = v->str;
        st->dst_len = &v->str_len;
        st->dst_trunc = &v->str_truncated;
        st->dst_cap = JSCAN_STR_MAX;
    }
}

/* Appends n bytes of one character to the string's destination, or marks it truncated: a
 * character is kept whole or not at all, and nothing is kept after a truncation. */
static void s_put(jscan_state_t *st, const uint8_t *b, size_t n)
{
    if (!st->dst || *st->dst_trunc)
        return;
    if (*st->dst_len + n > st->dst_cap) {
        *st->dst_trunc = true;
        return;
    }
    memcpy(st->dst + *st->dst_len, b, n);
    *st->dst_len += n;
}

/* Appends a code point (from a \u escape) as UTF-8. */
static void s_put_cp(jscan_state_t *st, uint32_t cp)
{
    uint8_t b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (uint8_t)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (uint8_t)(0xC0 | (cp >> 6));
        b[1] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (uint8_t)(0xE0 | (cp >> 12));
        b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = (uint8_t)(0xF0 | (cp >> 18));
        b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        b[3] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 4;
    }
    s_put(st, b, n);
}

/* A key ended: at a capturing level, report it and find the slot its value fills. */
static void s_key_done(jscan_t *s)
{
    jscan_state_t *st = &s->st;
    st->pending = -1;
    st->state = P_COLON;
    if (!st->dst)
        return;
    st->key[st->key_len] = '\0';
    int lo = JSCAN_K_INCLUDE_USAGE, hi = JSCAN_K_INCLUDE_USAGE + 1;
    if (st->depth == 1) {
        st->res.members++;
        if (s->opts.on_key)
            s->opts.on_key(s->opts.ctx, st->key, st->key_len, st->key_trunc, st->str_off);
        lo = 0;
        hi = (int)s->n_slots;
    }
    if (st->key_trunc)
        return;
    for (int k = lo; k < hi; k++) {
        if (k == JSCAN_K_INCLUDE_USAGE && st->depth == 1)
            continue;
        if (s->name_len[k] != st->key_len || memcmp(s->names[k], st->key, st->key_len) != 0)
            continue;
        if (st->seen[k]) {
            s_verdict(s, JSCAN_E_DUPLICATE, k, st->str_off, "");
            return;
        }
        st->seen[k] = true;
        st->vals[k].key_offset = st->str_off;
        st->pending = k;
        return;
    }
}

/* A string ended (its closing quote was the current byte). */
static void s_string_done(jscan_t *s)
{
    if (s->st.str_key) {
        s_key_done(s);
        return;
    }
    s_capture_done(s, JSCAN_T_STRING);
    s_value_done(s);
}

/* Starts a UTF-8 sequence with lead byte c (RFC 3629's table: no overlong forms, no
 * surrogates, nothing above U+10FFFF); 0 or -1 for a byte that cannot lead. */
static int s_utf8_lead(jscan_state_t *st, uint8_t c)
{
    st->u8_lo = 0x80;
    st->u8_hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        st->u8_need = 1;
    else if (c >= 0xE0 && c <= 0xEF)
        st->u8_need = 2;
    else if (c >= 0xF0 && c <= 0xF4)
        st->u8_need = 3;
    else
        return -1;
    if (c == 0xE0)
        st->u8_lo = 0xA0;
    else if (c == 0xED)
        st->u8_hi = 0x9F;
    else if (c == 0xF0)
        st->u8_lo = 0x90;
    else if (c == 0xF4)
        st->u8_hi = 0x8F;
    return 0;
}

/* One byte inside a string. */
static int s_string_byte(jscan_t *s, uint8_t c)
{
    jscan_state_t *st = &s->st;
    switch (st->sub) {
    case STR_CHAR:
        if (st->u8_need) {
            if (c < st->u8_lo || c > st->u8_hi)
                return s_syntax(s, "invalid UTF-8 in a string");
            st->u8_lo = 0x80;
            st->u8_hi = 0xBF;
            st->u8_need--;
        } else if (c == '"') {
            s_string_done(s);
            return 0;
        } else if (c == '\\') {
            st->sub = STR_ESC;
            return 0;
        } else if (c < 0x20) {
            return s_syntax(s, "control character in a string");
        } else if (c >= 0x80 && s_utf8_lead(st, c) < 0) {
            return s_syntax(s, "invalid UTF-8 in a string");
        }
        s_put(st, &c, 1);
        return 0;
    case STR_ESC: {
        static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
        const char *e = c ? strchr(from, c) : NULL;
        if (c == 'u') {
            st->sub = STR_HEX;
            st->hex_n = 0;
            st->hex_v = 0;
            return 0;
        }
        if (!e)
            return s_syntax(s, "invalid escape in a string");
        uint8_t out = (uint8_t)to[e - from];
        s_put(st, &out, 1);
        st->sub = STR_CHAR;
        return 0;
    }
    case STR_HEX: {
        int h = pct_hexval(c);
        if (h < 0)
            return s_syntax(s, "invalid \\u escape");
        st->hex_v = st->hex_v << 4 | (uint32_t)h;
        if (++st->hex_n < 4)
            return 0;
        uint32_t v = st->hex_v;
        if (st->hi_sur) {
            if (v < 0xDC00 || v > 0xDFFF)
                return s_syntax(s, "high surrogate without its low half");
            s_put_cp(st, 0x10000 + ((st->hi_sur - 0xD800) << 10) + (v - 0xDC00));
            st->hi_sur = 0;
        } else if (v >= 0xD800 && v <= 0xDBFF) {
            st->hi_sur = v;
            st->sub = STR_LO_BS;
            return 0;
        } else if (v >= 0xDC00 && v <= 0xDFFF) {
            return s_syntax(s, "low surrogate without its high half");
        } else {
            s_put_cp(st, v);
        }
        st->sub = STR_CHAR;
        return 0;
    }
    case STR_LO_BS:
        if (c != '\\')
            return s_syntax(s, "high surrogate without its low half");
        st->sub = STR_LO_U;
        return 0;
    default: /* STR_LO_U */
        if (c != 'u')
            return s_syntax(s, "high surrogate without its low half");
        st->sub = STR_HEX;
        st->hex_n = 0;
        st->hex_v = 0;
        return 0;
    }
}

/* Adds a digit to the integer part of a captured number, noting an int64 overflow. */
static void s_digit(jscan_state_t *st, uint8_t c)
{
    if (st->cap < 0 || st->n_ovf)
        return;
    uint64_t d = (uint64_t)(c - '0');
    uint64_t limit = st->n_neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    if (st->n_mag > (limit - d) / 10)
        st->n_ovf = true;
    else
        st->n_mag = st->n_mag * 10 + d;
}

/* The number ended just before the current byte. */
static void s_number_done(jscan_t *s)
{
    jscan_state_t *st = &s->st;
    if (st->cap >= 0) {
        jscan_value_t *v = &st->vals[st->cap];
        v->int_overflow = !st->n_frac && st->n_ovf;
        v->is_int = !st->n_frac && !st->n_ovf;
        if (v->is_int && !st->n_neg)
            v->i64 = (int64_t)st->n_mag;
        else if (v->is_int) /* -2^63 has no positive counterpart in int64 */
            v->i64 = st->n_mag > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)st->n_mag;
        s_capture_done(s, JSCAN_T_NUMBER);
    }
    s_value_done(s);
}

/* One byte inside a number: 0, 1 when the number ended before it (look at it again), or an
 * error. */
static int s_number_byte(jscan_t *s, uint8_t c)
{
    jscan_state_t *st = &s->st;
    bool digit = c >= '0' && c <= '9';
    switch (st->sub) {
    case N_MINUS:
        if (!digit)
            return s_syntax(s, "a digit must follow '-'");
        st->sub = c == '0' ? N_ZERO : N_INT;
        s_digit(st, c);
        return 0;
    case N_ZERO:
    case N_INT:
        if (digit && st->sub == N_ZERO)
            return s_syntax(s, "leading zero in a number");
        if (digit) {
            s_digit(st, c);
            return 0;
        }
        break;
    case N_DOT:
        if (!digit)
            return s_syntax(s, "a digit must follow '.'");
        st->sub = N_FRAC;
        return 0;
    case N_FRAC:
        if (digit)
            return 0;
        if (c == '.')
            return s_syntax(s, "second '.' in a number");
        break;
    case N_EXP:
        if (c == '+' || c == '-') {
            st->sub = N_EXP_SGN;
            return 0;
        }
        /* fall through */
    case N_EXP_SGN:
        if (!digit)
            return s_syntax(s, "a digit must follow the exponent");
        st->sub = N_EXP_DIG;
        return 0;
    default: /* N_EXP_DIG */
        if (digit)
            return 0;
        if (c == '.' || c == 'e' || c == 'E')
            return s_syntax(s, "malformed exponent");
        s_number_done(s);
        return 1;
    }
    /* N_ZERO, N_INT, N_FRAC on a non-digit */
    if (c == '.' && st->sub != N_FRAC) {
        st->sub = N_DOT;
        st->n_frac = true;
        return 0;
    }
    if (c == 'e' || c == 'E') {
        st->sub = N_EXP;
        st->n_frac = true;
        return 0;
    }
    s_number_done(s);
    return 1;
}

/* The first byte of a value. */
static int s_value_start(jscan_t *s, uint8_t c)
{
    jscan_state_t *st = &s->st;
    static const char *const lits[] = {"true", "false", "null"};
    if (st->depth == 0 && c != '{') {
        if (c && strchr("[\"-0123456789tfn", c))
            return s_fatal(s, JSCAN_E_NOT_OBJECT, -EBADMSG, st->pos,
                           "the body must be a JSON object (byte %" PRIu64 ")", st->pos);
        return s_syntax(s, "expected a JSON object");
    }
    st->cap = st->pending;
    st->pending = -1;
    if (st->cap >= 0)
        st->vals[st->cap].value_offset = st->pos;
    switch (c) {
    case '{':
    case '[': {
        bool so = st->cap == JSCAN_K_STREAM_OPTIONS && c == '{';
        s_capture_done(s, c == '{' ? JSCAN_T_OBJECT : JSCAN_T_ARRAY);
        int rc = s_push(s, c == '{');
        if (rc == 0 && so)
            st->in_so = true;
        return rc;
    }
    case '"':
        s_string_begin(s, false);
        return 0;
    case 't':
    case 'f':
    case 'n':
        st->state = P_LITERAL;
        st->lit = lits[c == 't' ? 0 : c == 'f' ? 1 : 2];
        st->lit_pos = 1;
        return 0;
    default:
        if (c != '-' && !(c >= '0' && c <= '9')) {
            st->cap = -1;
            return s_syntax(s, "expected a value");
        }
        st->state = P_NUMBER;
        st->sub = c == '-' ? N_MINUS : c == '0' ? N_ZERO : N_INT;
        st->n_neg = c == '-';
        st->n_frac = false;
        st->n_ovf = false;
        st->n_mag = 0;
        if (c != '-')
            s_digit(st, c);
        return 0;
    }
}

/* Whether c is JSON whitespace. */
static bool s_ws(uint8_t c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/* One byte in any state: 0, 1 to look at the same byte again in the new state, or an error. */
static int s_byte(jscan_t *s, uint8_t c)
{
    jscan_state_t *st = &s->st;
    switch (st->state) {
    case P_VALUE:
    case P_ARR_FIRST:
        if (s_ws(c))
            return 0;
        if (c == ']' && st->state == P_ARR_FIRST)
            return s_close(s, c);
        if (c == ']' || c == '}')
            return s_syntax(s, st->depth ? "expected a value (trailing comma?)"
                                         : "expected a JSON object");
        return s_value_start(s, c);
    case P_OBJ_FIRST:
    case P_OBJ_KEY:
        if (s_ws(c))
            return 0;
        if (c == '"') {
            s_string_begin(s, true);
            return 0;
        }
        if (c == '}' && st->state == P_OBJ_FIRST)
            return s_close(s, c);
        return s_syntax(s, c == '}' ? "trailing comma in an object" : "expected a string key");
    case P_COLON:
        if (s_ws(c))
            return 0;
        if (c != ':')
            return s_syntax(s, "expected ':' after a key");
        st->state = P_VALUE;
        return 0;
    case P_AFTER:
        if (s_ws(c))
            return 0;
        if (c == ',') {
            st->state = s_in_object(st) ? P_OBJ_KEY : P_VALUE;
            return 0;
        }
        if (c == '}' || c == ']')
            return s_close(s, c);
        return s_syntax(s, s_in_object(st) ? "expected ',' or '}'" : "expected ',' or ']'");
    case P_DONE:
        if (s_ws(c))
            return 0;
        return s_syntax(s, "data after the top-level object");
    case P_STRING:
        return s_string_byte(s, c);
    case P_NUMBER:
        return s_number_byte(s, c);
    case P_LITERAL:
        if (c != (uint8_t)st->lit[st->lit_pos])
            return s_syntax(s, "invalid literal");
        if (st->lit[++st->lit_pos] == '\0') {
            s_capture_done(s, st->lit[0] == 't'   ? JSCAN_T_TRUE
                              : st->lit[0] == 'f' ? JSCAN_T_FALSE
                                                  : JSCAN_T_NULL);
            s_value_done(s);
        }
        return 0;
    default:
        return st->err.code;
    }
}

/* Scans n bytes. Inside a string whose bytes are not kept, plain ASCII is skipped in a tight
 * loop: large bodies are mostly message text. */
static int s_scan(jscan_t *s, const uint8_t *p, size_t n)
{
    jscan_state_t *st = &s->st;
    size_t i = 0;
    while (i < n) {
        if (st->state == P_STRING && st->sub == STR_CHAR && !st->u8_need && !st->dst) {
            size_t j = i;
            while (j < n && p[j] >= 0x20 && p[j] < 0x80 && p[j] != '"' && p[j] != '\\')
                j++;
            st->pos += j - i;
            i = j;
            if (i == n)
                break;
        }
        int rc;
        do
            rc = s_byte(s, p[i]);
        while (rc == 1);
        if (rc < 0)
            return rc;
        i++;
        st->pos++;
    }
    return 0;
}

/* Checks the options, copies the extra names, allocates the one block a scan needs. */
jscan_t *jscan_new(const jscan_opts_t *opts)
{
    jscan_opts_t o = {0};
    if (opts)
        o = *opts;
    if (o.max_depth == 0)
        o.max_depth = JSCAN_DEPTH_DEFAULT;
    if (o.max_depth > JSCAN_DEPTH_MAX || o.n_extra > JSCAN_EXTRA_MAX || (o.n_extra && !o.extra))
        goto invalid;
    jscan_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    for (unsigned k = 0; k < JSCAN_K_BUILTIN_COUNT; k++)
        s->names[k] = s_builtin[k];
    for (size_t i = 0; i < o.n_extra; i++) {
        const char *name = o.extra[i];
        size_t len = name ? strlen(name) : JSCAN_NAME_MAX + 1;
        if (len > JSCAN_NAME_MAX) {
            free(s);
            goto invalid;
        }
        for (unsigned k = 0; k < JSCAN_K_BUILTIN_COUNT + i; k++) {
            if (strcmp(s->names[k], name) == 0) {
                free(s);
                goto invalid;
            }
        }
        memcpy(s->extra_names[i], name, len + 1);
        s->names[JSCAN_K_BUILTIN_COUNT + i] = s->extra_names[i];
    }
    s->n_slots = JSCAN_K_BUILTIN_COUNT + (unsigned)o.n_extra;
    for (unsigned k = 0; k < s->n_slots; k++)
        s->name_len[k] = strlen(s->names[k]);
    o.extra = NULL; /* the caller's array need not outlive the call */
    s->opts = o;
    jscan_reset(s);
    return s;
invalid:
    errno = EINVAL;
    return NULL;
}

/* Frees the scanner. */
void jscan_destroy(jscan_t **p)
{
    if (!p || !*p)
        return;
    free(*p);
    *p = NULL;
}

/* Forgets the body; the options stay. */
void jscan_reset(jscan_t *s)
{
    memset(&s->st, 0, sizeof s->st);
    s->st.state = P_VALUE;
    s->st.pending = -1;
    s->st.cap = -1;
}

/* Scans a chunk, stopping at the size limit. */
int jscan_feed(jscan_t *s, const void *data, size_t len)
{
    jscan_state_t *st = &s->st;
    if (st->fatal)
        return st->err.code;
    if (st->finished)
        return st->err.code ? st->err.code : -EALREADY;
    size_t n = len;
    uint64_t max = s->opts.max_bytes;
    /* Scan up to the limit before refusing, so that an error inside the allowed bytes wins
     * whatever the chunking. */
    if (max && (st->pos > max || (uint64_t)len > max - st->pos))
        n = (size_t)(max - st->pos);
    int rc = n ? s_scan(s, data, n) : 0;
    if (rc < 0)
        return rc;
    if (n < len)
        return s_fatal(s, JSCAN_E_SIZE, -EMSGSIZE, max,
                       "request body larger than %" PRIu64 " bytes", max);
    return 0;
}

/* Ends the body: incomplete is malformed; else the first verdict, if any. */
int jscan_finish(jscan_t *s)
{
    jscan_state_t *st = &s->st;
    if (st->fatal || st->finished)
        return st->err.code;
    if (st->state != P_DONE) {
        const char *why = st->state == P_STRING        ? "unterminated string"
                          : st->depth == 0 && !st->pos ? "empty body"
                          : st->depth == 0             ? "no JSON object"
                                                       : "unexpected end of the body";
        s_syntax(s, why);
        st->finished = true;
        return st->err.code;
    }
    st->finished = true;
    st->res.complete = st->err.code == 0;
    return st->err.code;
}

/* The summary of the captured members. */
const jscan_result_t *jscan_result(const jscan_t *s)
{
    return &s->st.res;
}

/* One captured member. */
const jscan_value_t *jscan_value(const jscan_t *s, unsigned idx)
{
    return idx < s->n_slots && idx < N_SLOTS ? &s->st.vals[idx] : NULL;
}

/* The first error or verdict. */
const jscan_error_t *jscan_error(const jscan_t *s)
{
    return &s->st.err;
}

/* Bytes scanned. */
uint64_t jscan_offset(const jscan_t *s)
{
    return s->st.pos;
}

/* A captured key's name. */
const char *jscan_key_name(const jscan_t *s, unsigned idx)
{
    return idx < s->n_slots && idx < N_SLOTS ? s->names[idx] : NULL;
}
