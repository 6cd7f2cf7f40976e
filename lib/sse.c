/* sse: an incremental Server-Sent Events parser with raw byte offsets per event. */
#include "sse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A growable byte buffer that keeps a NUL after its content; the caller gives the limit. */
typedef struct {
    char *p;    /* bytes, NULL until first used */
    size_t len; /* bytes held */
    size_t cap; /* bytes allocated (content + NUL) */
} s_buf_t;

/* Where the parser is within a line. */
enum {
    S_LINE,    /* at the start of a line */
    S_FIELD,   /* reading a field name */
    S_SPACE,   /* just after the colon: one space is skipped */
    S_VALUE,   /* reading a field value */
    S_COMMENT, /* in a comment line */
};

/* Where the value of the current line goes. */
enum {
    T_NONE,  /* nowhere: unknown field, comment, or an event being skipped */
    T_DATA,  /* appended to the data buffer */
    T_EVENT, /* replaces the event type */
    T_ID,    /* replaces the last event id at the line end (unless it holds a NUL) */
    T_RETRY, /* a reconnection time in ms, digits only */
};

#define S_NAME_MAX 8 /* longest field name kept; longer names are unknown fields */
#define S_BOM_DONE 4 /* bom: the start of the stream has been settled */

static const uint8_t s_bom[3] = {0xEF, 0xBB, 0xBF}; /* UTF-8 byte order mark */

struct sse_parser {
    sse_event_fn fn;       /* event callback */
    void *arg;             /* its argument */
    size_t max;            /* most bytes of data, event name or id in one event */
    s_buf_t data;          /* data lines of the block, each followed by "\n" */
    s_buf_t event;         /* event type of the block */
    s_buf_t id;            /* last event id */
    s_buf_t id_new;        /* id being read; swapped with id at its line end */
    uint64_t off;          /* stream offset of the next byte fed */
    uint64_t block_start;  /* offset where the current block began */
    uint64_t cr_end;       /* end offset of a blank line ended by a pending "\r" */
    uint64_t skipped;      /* events skipped for size or memory */
    int64_t retry_ms;      /* last valid retry, -1 if none */
    int64_t retry_acc;     /* retry value being read, -1 before its first digit */
    int err;               /* sticky callback error, 0 if none */
    int pend_rc;           /* -EMSGSIZE or -ENOMEM for the current feed to return */
    int state;             /* S_* */
    int target;            /* T_* of the line being read */
    size_t name_len;       /* bytes of name used; S_NAME_MAX + 1 when too long */
    char name[S_NAME_MAX]; /* field name being read */
    uint8_t bom;           /* BOM bytes matched so far, or S_BOM_DONE */
    bool after_cr;         /* the last byte was "\r": a "\n" next ends the same line */
    bool cr_blank;         /* ... and that "\r" ended a blank line whose dispatch waits */
    bool skipping;         /* the block went over a limit: drop it up to its blank line */
    bool retry_bad;        /* the retry value holds a non-digit or overflowed */
    bool finished;         /* sse_finish() was called */
};

/* Appends n bytes to b unless its content would exceed limit; keeps a NUL after it. */
static int s_buf_add(s_buf_t *b, const void *src, size_t n, size_t limit)
{
    if (b->len > limit || n > limit - b->len)
        return -EMSGSIZE;
    size_t need = b->len + n + 1;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        if (cap > limit + 1)
            cap = limit + 1; /* never more than the limit allows (need <= limit + 1) */
        char *q = realloc(b->p, cap);
        if (!q)
            return -ENOMEM;
        b->p = q;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, src, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

/* Frees a buffer's memory. */
static void s_buf_free(s_buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* Gives up on the current block after a limit or allocation failure (rc). */
static void s_skip_block(sse_parser_t *p, int rc)
{
    p->skipping = true;
    p->target = T_NONE;
    p->skipped++;
    p->data.len = 0;
    p->event.len = 0;
    if (!p->pend_rc)
        p->pend_rc = rc;
}

/* Decides where the value of the current line goes, from its field name. */
static void s_field(sse_parser_t *p)
{
    const char *n = p->name;
    size_t len = p->name_len;
    p->target = T_NONE;
    if (p->skipping)
        return;
    if (len == 4 && memcmp(n, "data", 4) == 0) {
        p->target = T_DATA;
    } else if (len == 5 && memcmp(n, "event", 5) == 0) {
        p->target = T_EVENT;
        p->event.len = 0;
    } else if (len == 2 && memcmp(n, "id", 2) == 0) {
        p->target = T_ID;
        p->id_new.len = 0;
    } else if (len == 5 && memcmp(n, "retry", 5) == 0) {
        p->target = T_RETRY;
        p->retry_acc = -1;
        p->retry_bad = false;
    }
}

/* Takes n bytes of the current line's value. */
static void s_value(sse_parser_t *p, const uint8_t *v, size_t n)
{
    int rc = 0;
    switch (p->target) {
    case T_DATA:
        rc = s_buf_add(&p->data, v, n, p->max);
        break;
    case T_EVENT:
        rc = s_buf_add(&p->event, v, n, p->max);
        break;
    case T_ID:
        rc = s_buf_add(&p->id_new, v, n, p->max);
        break;
    case T_RETRY:
        for (size_t i = 0; i < n && !p->retry_bad; i++) {
            int d = v[i] - '0';
            if (d < 0 || d > 9 || (p->retry_acc > (INT64_MAX - d) / 10)) {
                p->retry_bad = true;
                break;
            }
            p->retry_acc = (p->retry_acc < 0 ? 0 : p->retry_acc * 10) + d;
        }
        break;
    default:
        break;
    }
    if (rc < 0)
        s_skip_block(p, rc);
}

/* Ends a non-blank line: commits what its field asked for. */
static void s_eol(sse_parser_t *p)
{
    if (p->state == S_FIELD)
        s_field(p); /* a line without a colon: the whole line is the name, the value is "" */
    switch (p->target) {
    case T_DATA: {
        /* The data limit counts what is dispatched: the last "\n" is removed then. */
        int rc = s_buf_add(&p->data, "\n", 1, p->max + 1);
        if (rc < 0)
            s_skip_block(p, rc);
        break;
    }
    case T_ID:
        if (p->id_new.len == 0 || !memchr(p->id_new.p, 0, p->id_new.len)) {
            s_buf_t t = p->id;
            p->id = p->id_new;
            p->id_new = t;
        }
        break;
    case T_RETRY:
        if (!p->retry_bad && p->retry_acc >= 0)
            p->retry_ms = p->retry_acc;
        break;
    default:
        break;
    }
    p->target = T_NONE;
    p->state = S_LINE;
}

/* Handles a blank line ending at offset end: dispatches the block's event, if any. */
static int s_dispatch(sse_parser_t *p, uint64_t end)
{
    uint64_t start = p->block_start;
    p->block_start = end;
    if (p->skipping || p->data.len == 0) {
        p->skipping = false;
        p->data.len = 0;
        p->event.len = 0;
        return 0;
    }
    p->data.len--; /* the "\n" after the last data line */
    p->data.p[p->data.len] = '\0';
    sse_event_t ev = {
        .event = p->event.len ? p->event.p : "message",
        .event_len = p->event.len ? p->event.len : 7,
        .data = p->data.p,
        .data_len = p->data.len,
        .id = p->id.len ? p->id.p : "",
        .id_len = p->id.len,
        .start = start,
        .end = end,
    };
    int rc = p->fn ? p->fn(p->arg, &ev) : 0;
    p->data.len = 0;
    p->event.len = 0;
    if (rc < 0) {
        p->err = rc;
        return rc;
    }
    return 0;
}

/* Settles a pending "\r" that was not followed by "\n": dispatches if it ended a blank line. */
static int s_settle_cr(sse_parser_t *p)
{
    p->after_cr = false;
    if (!p->cr_blank)
        return 0;
    p->cr_blank = false;
    return s_dispatch(p, p->cr_end);
}

/* Parses n bytes whose first one is at stream offset base. */
static int s_run(sse_parser_t *p, const uint8_t *b, size_t n, uint64_t base)
{
    size_t i = 0;
    int rc;
    while (i < n) {
        uint8_t c = b[i];
        if (p->after_cr) {
            if (c == '\n') {
                /* "\r\n" split anywhere is one line end; a blank line ends after the "\n". */
                i++;
                p->after_cr = false;
                if (p->cr_blank) {
                    p->cr_blank = false;
                    if ((rc = s_dispatch(p, base + i)) < 0)
                        return rc;
                }
                continue;
            }
            if ((rc = s_settle_cr(p)) < 0)
                return rc;
        }
        switch (p->state) {
        case S_LINE:
            if (c == '\r') {
                i++;
                /* Blank line: whether a "\n" follows decides where it ends; wait for it. */
                p->after_cr = true;
                p->cr_blank = true;
                p->cr_end = base + i;
            } else if (c == '\n') {
                i++;
                if ((rc = s_dispatch(p, base + i)) < 0)
                    return rc;
            } else if (c == ':') {
                i++;
                p->state = S_COMMENT;
            } else {
                p->state = S_FIELD; /* this byte is read again as the name's first */
                p->name_len = 0;
            }
            break;
        case S_FIELD:
            i++;
            if (c == ':') {
                s_field(p);
                p->state = S_SPACE;
            } else if (c == '\r' || c == '\n') {
                s_eol(p);
                p->after_cr = c == '\r';
            } else if (p->name_len < S_NAME_MAX) {
                p->name[p->name_len++] = (char)c;
            } else {
                p->name_len = S_NAME_MAX + 1;
            }
            break;
        case S_SPACE:
            p->state = S_VALUE;
            if (c == ' ')
                i++;
            break;
        default: { /* S_VALUE, S_COMMENT: take the run up to the line end at once */
            size_t j = i;
            while (j < n && b[j] != '\n' && b[j] != '\r')
                j++;
            if (p->state == S_VALUE && j > i)
                s_value(p, b + i, j - i);
            i = j;
            if (i < n) {
                s_eol(p);
                p->after_cr = b[i] == '\r';
                i++;
            }
            break;
        }
        }
    }
    return 0;
}

/* The stream did not start with a whole BOM: parses the bytes that matched so far. */
static int s_bom_give_up(sse_parser_t *p)
{
    uint8_t m = p->bom;
    p->bom = S_BOM_DONE;
    return m ? s_run(p, s_bom, m, 0) : 0;
}

sse_parser_t *sse_new(size_t max_event, sse_event_fn fn, void *arg)
{
    if (max_event < 1 || max_event > SIZE_MAX / 4)
        return NULL;
    sse_parser_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->fn = fn;
    p->arg = arg;
    p->max = max_event;
    sse_reset(p);
    return p;
}

void sse_destroy(sse_parser_t **pp)
{
    if (!pp || !*pp)
        return;
    sse_parser_t *p = *pp;
    s_buf_free(&p->data);
    s_buf_free(&p->event);
    s_buf_free(&p->id);
    s_buf_free(&p->id_new);
    free(p);
    *pp = NULL;
}

void sse_reset(sse_parser_t *p)
{
    if (!p)
        return;
    p->data.len = p->event.len = p->id.len = p->id_new.len = 0;
    p->off = p->block_start = p->cr_end = p->skipped = 0;
    p->retry_ms = p->retry_acc = -1;
    p->err = p->pend_rc = 0;
    p->state = S_LINE;
    p->target = T_NONE;
    p->name_len = 0;
    p->bom = 0;
    p->after_cr = p->cr_blank = p->skipping = p->retry_bad = p->finished = false;
}

int sse_feed(sse_parser_t *p, const uint8_t *buf, size_t len)
{
    if (!p || (!buf && len))
        return -EINVAL;
    if (p->err)
        return p->err;
    if (p->finished)
        return -EINVAL;
    p->pend_rc = 0;
    size_t i = 0;
    int rc = 0;
    /* A BOM is skipped only at the very start; its bytes may come one feed at a time. */
    while (p->bom < 3 && i < len) {
        if (buf[i] != s_bom[p->bom]) {
            rc = s_bom_give_up(p);
            break;
        }
        p->bom++;
        i++;
        if (p->bom == 3) {
            p->bom = S_BOM_DONE;
            p->block_start = 3;
        }
    }
    if (rc == 0)
        rc = s_run(p, buf + i, len - i, p->off + i);
    p->off += len;
    return rc < 0 ? rc : p->pend_rc;
}

int sse_finish(sse_parser_t *p)
{
    if (!p)
        return -EINVAL;
    if (p->err)
        return p->err;
    if (p->finished)
        return 0;
    p->finished = true;
    int rc = p->bom < 3 ? s_bom_give_up(p) : 0;
    if (rc == 0 && p->after_cr)
        rc = s_settle_cr(p);
    /* An event without its blank line is never dispatched. */
    p->data.len = 0;
    p->event.len = 0;
    p->skipping = false;
    p->state = S_LINE;
    p->target = T_NONE;
    return rc;
}

uint64_t sse_offset(const sse_parser_t *p)
{
    return p ? p->off : 0;
}

uint64_t sse_pending_start(const sse_parser_t *p)
{
    return p ? p->block_start : 0;
}

int64_t sse_retry_ms(const sse_parser_t *p)
{
    return p ? p->retry_ms : -1;
}

uint64_t sse_skipped(const sse_parser_t *p)
{
    return p ? p->skipped : 0;
}
