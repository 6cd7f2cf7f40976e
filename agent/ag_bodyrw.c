/* ag_bodyrw: top-level JSON edits on a streamed body. */
#include "ag_bodyrw.h"

#include <errno.h>
#include <string.h>

enum { S_PRE = 0, S_BODY, S_COPY, S_POST };

void ag_bodyrw_init(ag_bodyrw_t *rw, const char *insert, const char *rename)
{
    memset(rw, 0, sizeof *rw);
    rw->insert = insert;
    rw->insert_len = insert ? strlen(insert) : 0;
    rw->rename = rename;
    rw->rename_len = rename ? strlen(rename) : 0;
    rw->state = S_PRE;
}

/* True for JSON whitespace. */
static bool s_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Appends in[from..to) to out. */
static int s_flush(bus_buf_t *out, const uint8_t *in, size_t from, size_t to)
{
    return to > from ? bus_buf_append(out, in + from, to - from) : 0;
}

/* Scans one byte inside the object (not in the replaced value). Returns 1 when the byte starts
 * the model value to replace, 0 to copy it, -EBADMSG. */
static int s_scan(ag_bodyrw_t *rw, uint8_t c)
{
    if (rw->in_str) {
        if (rw->esc) {
            rw->esc = false;
        } else if (c == '\\') {
            rw->esc = true;
        } else if (c == '"') {
            rw->in_str = false;
            if (rw->key_str) {
                rw->key_str = false;
                bool is_model = rw->key_len == 5 && memcmp(rw->key, "model", 5) == 0;
                if (is_model && rw->model_done)
                    return -EBADMSG; /* a second top-level "model" */
                rw->key_is_model = is_model;
            }
            return 0;
        }
        if (rw->key_str) {
            if (rw->key_len < sizeof rw->key)
                rw->key[rw->key_len] = (char)c;
            rw->key_len++;
        }
        return 0;
    }
    if (s_ws(c))
        return 0;
    bool value_start = rw->depth == 1 && rw->value_next && c != ':';
    if (value_start) {
        rw->value_next = false;
        if (rw->key_is_model && rw->rename) {
            if (c != '"')
                return -EBADMSG;
            return 1;
        }
    }
    switch (c) {
    case '"':
        rw->in_str = true;
        rw->esc = false;
        if (rw->depth == 1 && rw->expect_key) {
            rw->expect_key = false;
            rw->key_str = true;
            rw->key_len = 0;
        }
        return 0;
    case ':':
        if (rw->depth == 1)
            rw->value_next = true;
        return 0;
    case ',':
        if (rw->depth == 1) {
            rw->expect_key = true;
            rw->key_is_model = false;
        }
        return 0;
    case '{':
    case '[':
        if (rw->depth == UINT32_MAX)
            return -EBADMSG;
        rw->depth++;
        return 0;
    case '}':
    case ']':
        if (rw->depth == 0)
            return -EBADMSG;
        rw->depth--;
        if (rw->depth == 0)
            rw->state = S_POST;
        return 0;
    default:
        return 0;
    }
}

int ag_bodyrw_feed(ag_bodyrw_t *rw, const uint8_t *in, size_t n, bus_buf_t *out)
{
    size_t span = 0; /* first input byte not yet copied */
    int rc;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = in[i];
        switch (rw->state) {
        case S_COPY:
            /* Nothing left to edit: copy the rest in one go. */
            return bus_buf_append(out, in + span, n - span);
        case S_PRE:
            if (s_ws(c))
                continue;
            if (c != '{')
                return -EBADMSG;
            if ((rc = s_flush(out, in, span, i + 1)) != 0 ||
                (rc = s_flush(out, (const uint8_t *)rw->insert, 0, rw->insert_len)) != 0)
                return rc;
            span = i + 1;
            rw->delta += (int64_t)rw->insert_len;
            rw->depth = 1;
            rw->expect_key = true;
            rw->state = rw->rename ? S_BODY : S_COPY;
            continue;
        case S_POST:
            if (!s_ws(c))
                return -EBADMSG;
            continue;
        default:
            break;
        }
        if (rw->skip_value) {
            /* Inside the replaced string: drop its bytes up to the closing quote. */
            if (rw->esc)
                rw->esc = false;
            else if (c == '\\')
                rw->esc = true;
            else if (c == '"') {
                rw->skip_value = false;
                rw->model_done = true;
            }
            rw->delta--;
            span = i + 1;
            continue;
        }
        rc = s_scan(rw, c);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            /* The model value starts: write the new one in its place. */
            if ((rc = s_flush(out, in, span, i)) != 0 || (rc = bus_buf_append(out, "\"", 1)) != 0 ||
                (rc = s_flush(out, (const uint8_t *)rw->rename, 0, rw->rename_len)) != 0 ||
                (rc = bus_buf_append(out, "\"", 1)) != 0)
                return rc;
            rw->delta += (int64_t)rw->rename_len + 2 - 1;
            rw->skip_value = true;
            rw->esc = false;
            span = i + 1;
        }
    }
    return s_flush(out, in, span, n);
}

int ag_bodyrw_final_delta(const ag_bodyrw_t *rw, bool input_done, int64_t *delta)
{
    if (!rw->rename) {
        *delta = (int64_t)rw->insert_len; /* whether or not the '{' has come yet */
        return 1;
    }
    if (rw->model_done || input_done) {
        *delta = rw->delta;
        return 1;
    }
    return 0;
}

int ag_bodyrw_complete(const ag_bodyrw_t *rw)
{
    return rw->state == S_POST || (rw->state == S_COPY && rw->depth == 1);
}
