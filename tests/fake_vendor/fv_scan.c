/* fv_scan: a streaming JSON structure check that captures a few top-level members. */
#include "fv_scan.h"

#include <stdlib.h>
#include <string.h>

enum {
    ST_VALUE,        /* a value must come */
    ST_VALUE_OR_END, /* after '[': a value or ']' */
    ST_KEY,          /* after ',' in an object: a key */
    ST_KEY_OR_END,   /* after '{': a key or '}' */
    ST_COLON,        /* after a key */
    ST_AFTER,        /* after a value: ',' or the container's end */
    ST_STRING,       /* inside a string */
    ST_ESC,          /* after a backslash */
    ST_UHEX,         /* inside \uXXXX */
    ST_LITERAL,      /* inside a number, true, false or null */
    ST_END,          /* after the top-level value */
};

void fv_scan_init(fv_scan_t *s)
{
    memset(s, 0, sizeof *s);
    s->stream = -1;
    s->include_usage = -1;
    s->include_obfuscation = -1;
    s->max_tokens = -1;
    s->dimensions = -1;
    s->n_inputs = -1;
    s->st = ST_VALUE;
}

/* True for JSON whitespace. */
static bool s_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* True if buf is a JSON number. */
static bool s_number(const char *p)
{
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (*p >= '0' && *p <= '9')
            p++;
    else
        return false;
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9'))
            return false;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return false;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    return *p == '\0';
}

/* A non-negative integer literal, or -1. */
static int64_t s_int(const char *p)
{
    size_t n = strspn(p, "0123456789");
    if (!n || p[n] || n > 18)
        return -1;
    return strtoll(p, NULL, 10);
}

/* True when the scalar or container starting now is the value of top-level key k. */
static bool s_top(const fv_scan_t *s, const char *k)
{
    return s->depth == 1 && strcmp(s->key1, k) == 0;
}

/* A value starts at the current depth; c is its first byte. */
static void s_value_start(fv_scan_t *s, uint8_t c)
{
    if (s->depth == 0 && c != '{')
        s->bad = true; /* the vendors want an object */
    if (s_top(s, "stream") && (c == '{' || c == '[' || c == '"'))
        s->stream = 2;
    if (s_top(s, "input"))
        s->n_inputs = c == '"' ? 1 : c == '[' ? 0 : -1;
    if (s->depth == 2 && s->stack[1] == '[' && strcmp(s->key1, "input") == 0) {
        s->n_inputs++;
        if (c == '[' || c == '"')
            s->input_nested = true;
    }
    s->value_depth = s->depth;
    s->buf_len = 0;
}

/* A string value (str) or literal (!str) ended; captures it when it is one we want. */
static void s_scalar_end(fv_scan_t *s, bool str)
{
    s->buf[s->buf_len] = '\0';
    if (!str && strcmp(s->buf, "true") != 0 && strcmp(s->buf, "false") != 0 &&
        strcmp(s->buf, "null") != 0 && !s_number(s->buf)) {
        s->bad = true;
        return;
    }
    int b = !str && strcmp(s->buf, "true") == 0 ? 1 : !str && strcmp(s->buf, "false") == 0 ? 0 : -1;
    if (s->value_depth == 1) {
        const char *k = s->key1;
        if (strcmp(k, "model") == 0) {
            s->has_model = str;
            memcpy(s->model, s->buf, s->buf_len + 1);
        } else if (strcmp(k, "stream") == 0) {
            s->stream = b >= 0 ? b : (!str && strcmp(s->buf, "null") == 0) ? -1 : 2;
        } else if (strcmp(k, "max_tokens") == 0 || strcmp(k, "max_completion_tokens") == 0 ||
                   strcmp(k, "max_output_tokens") == 0) {
            if (!str)
                s->max_tokens = s_int(s->buf);
        } else if (strcmp(k, "dimensions") == 0) {
            if (!str)
                s->dimensions = s_int(s->buf);
        } else if (strcmp(k, "encoding_format") == 0 && str) {
            size_t n = s->buf_len < sizeof s->encoding_format - 1 ? s->buf_len
                                                                  : sizeof s->encoding_format - 1;
            memcpy(s->encoding_format, s->buf, n);
            s->encoding_format[n] = '\0';
        }
    } else if (s->value_depth == 2 && s->stack[1] == '{' &&
               strcmp(s->key1, "stream_options") == 0) {
        if (strcmp(s->key2, "include_usage") == 0)
            s->include_usage = b;
        else if (strcmp(s->key2, "include_obfuscation") == 0)
            s->include_obfuscation = b;
    }
}

/* A key string ended: remember it when it is one or two levels down. */
static void s_key_end(fv_scan_t *s)
{
    s->buf[s->buf_len] = '\0';
    char *dst = s->depth == 1 ? s->key1 : s->depth == 2 ? s->key2 : NULL;
    if (dst) {
        size_t n = s->buf_len < 63 ? s->buf_len : 63;
        memcpy(dst, s->buf, n);
        dst[n] = '\0';
    }
}

/* Opens a container. */
static void s_push(fv_scan_t *s, uint8_t c)
{
    if (s->depth >= FV_SCAN_DEPTH) {
        s->bad = true;
        return;
    }
    s->stack[s->depth++] = c;
    s->st = c == '{' ? ST_KEY_OR_END : ST_VALUE_OR_END;
}

/* Closes a container with c ('}' or ']'). */
static void s_pop(fv_scan_t *s, uint8_t c)
{
    if (!s->depth || s->stack[s->depth - 1] != (c == '}' ? '{' : '[')) {
        s->bad = true;
        return;
    }
    s->depth--;
    s->st = s->depth ? ST_AFTER : ST_END;
    if (!s->depth)
        s->done = true;
}

/* Handles a byte where a value must start. */
static void s_begin_value(fv_scan_t *s, uint8_t c)
{
    s_value_start(s, c);
    if (c == '{' || c == '[') {
        s_push(s, c);
    } else if (c == '"') {
        s->str_is_key = false;
        s->st = ST_STRING;
    } else if (c == '-' || (c >= '0' && c <= '9') || c == 't' || c == 'f' || c == 'n') {
        s->buf[s->buf_len++] = (char)c;
        s->st = ST_LITERAL;
    } else {
        s->bad = true;
    }
}

/* Handles one byte; returns false when the byte must be looked at again (end of a literal). */
static bool s_byte(fv_scan_t *s, uint8_t c)
{
    switch (s->st) {
    case ST_VALUE:
    case ST_VALUE_OR_END:
        if (s_ws(c))
            return true;
        if (c == ']' && s->st == ST_VALUE_OR_END)
            s_pop(s, c);
        else
            s_begin_value(s, c);
        return true;
    case ST_KEY:
    case ST_KEY_OR_END:
        if (s_ws(c))
            return true;
        if (c == '}' && s->st == ST_KEY_OR_END) {
            s_pop(s, c);
        } else if (c == '"') {
            s->str_is_key = true;
            s->buf_len = 0;
            s->st = ST_STRING;
        } else {
            s->bad = true;
        }
        return true;
    case ST_COLON:
        if (s_ws(c))
            return true;
        if (c == ':')
            s->st = ST_VALUE;
        else
            s->bad = true;
        return true;
    case ST_AFTER:
        if (s_ws(c))
            return true;
        if (c == ',')
            s->st = s->stack[s->depth - 1] == '{' ? ST_KEY : ST_VALUE;
        else if (c == '}' || c == ']')
            s_pop(s, c);
        else
            s->bad = true;
        return true;
    case ST_STRING:
        if (c == '"') {
            if (s->str_is_key) {
                s_key_end(s);
                s->st = ST_COLON;
            } else {
                s_scalar_end(s, true);
                s->st = ST_AFTER;
            }
            return true;
        }
        if (c < 0x20) {
            s->bad = true;
            return true;
        }
        if (c == '\\')
            s->st = ST_ESC;
        if (s->buf_len < FV_SCAN_STR_MAX)
            s->buf[s->buf_len++] = (char)c;
        return true;
    case ST_ESC:
        if (c == 'u') {
            s->hex_left = 4;
            s->st = ST_UHEX;
        } else if (strchr("\"\\/bfnrt", c) && c) {
            s->st = ST_STRING;
        } else {
            s->bad = true;
        }
        if (s->buf_len < FV_SCAN_STR_MAX)
            s->buf[s->buf_len++] = (char)c;
        return true;
    case ST_UHEX:
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            s->bad = true;
        if (--s->hex_left == 0)
            s->st = ST_STRING;
        if (s->buf_len < FV_SCAN_STR_MAX)
            s->buf[s->buf_len++] = (char)c;
        return true;
    case ST_LITERAL:
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '.' || c == '+' || c == '-' ||
            c == 'E') {
            if (s->buf_len < 63)
                s->buf[s->buf_len++] = (char)c;
            else
                s->bad = true;
            return true;
        }
        s_scalar_end(s, false);
        s->st = s->depth ? ST_AFTER : ST_END;
        return false;
    case ST_END:
    default:
        if (!s_ws(c))
            s->bad = true;
        return true;
    }
}

void fv_scan_feed(fv_scan_t *s, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n && !s->bad;) {
        if (s_byte(s, p[i]))
            i++;
    }
}

void fv_scan_finish(fv_scan_t *s)
{
    if (s->st == ST_LITERAL && !s->bad) {
        s_scalar_end(s, false);
        s->st = ST_END;
    }
    s->valid = !s->bad && s->done && s->st == ST_END;
}
