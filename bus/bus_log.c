/* bus_log: JSON-lines logging to stderr. */
#include "bus_log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

log_level_t bus_log_level = LOG_LVL_INFO;
static const char *s_process = "relayhub";

static const char *const s_level_names[] = {"error", "warn", "info", "debug"};

void bus_log_set_process(const char *name)
{
    s_process = name ? name : "relayhub";
}

int bus_log_parse_level(const char *text, log_level_t *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(text, s_level_names[i]) == 0) {
            *out = (log_level_t)i;
            return 0;
        }
    }
    return -EINVAL;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is invalid or cut short. */
static size_t s_utf8_len(const unsigned char *s, size_t left)
{
    unsigned char c = s[0];
    size_t n;
    unsigned int cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return n;
}

int bus_json_escape(char *dst, size_t cap, const char *s, size_t len)
{
    size_t o = strlen(dst);
    if (o >= cap)
        return -ENOSPC; /* already full: write nothing, not even a NUL past cap */
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        char tmp[8];
        const char *piece = tmp;
        size_t plen;
        size_t step = 1;
        unsigned char c = u[i];
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            plen = 2;
        } else if (c == '\n') {
            piece = "\\n";
            plen = 2;
        } else if (c == '\r') {
            piece = "\\r";
            plen = 2;
        } else if (c == '\t') {
            piece = "\\t";
            plen = 2;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
            plen = 6;
        } else if (c < 0x80) {
            tmp[0] = (char)c;
            plen = 1;
        } else {
            step = s_utf8_len(u + i, len - i);
            if (step == 0) {
                piece = "\\ufffd";
                plen = 6;
                step = 1;
            } else {
                piece = (const char *)u + i;
                plen = step;
            }
        }
        if (o + plen + 1 > cap) {
            dst[o] = '\0';
            return -ENOSPC;
        }
        memcpy(dst + o, piece, plen);
        o += plen;
        i += step;
    }
    dst[o] = '\0';
    return 0;
}

void bus_log_write(log_level_t level, const char *event, const char *req_id, const char *agent_id,
                   const char *extra_json, const char *fmt, ...)
{
    char line[4096];
    char msg[2048];
    struct timespec ts;
    struct tm tm;

    if ((unsigned)level > LOG_LVL_DEBUG)
        level = LOG_LVL_DEBUG;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line,
                     "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ\",\"level\":\"%s\","
                     "\"process\":\"",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000, s_level_names[level]);
    if (n < 0 || (size_t)n >= sizeof line)
        return;
    /* The process name is escaped like any other string, and kept short. */
    bus_json_escape(line, (size_t)n + 128, s_process, strlen(s_process));
    size_t o = strlen(line);
    snprintf(line + o, sizeof line - o, "\",\"pid\":%d,\"event\":\"", (int)getpid());
    bus_json_escape(line, sizeof line - 64, event, strlen(event));
    strncat(line, "\"", sizeof line - strlen(line) - 1);
    if (req_id) {
        strncat(line, ",\"req_id\":\"", sizeof line - strlen(line) - 1);
        bus_json_escape(line, sizeof line - 64, req_id, strlen(req_id));
        strncat(line, "\"", sizeof line - strlen(line) - 1);
    }
    if (agent_id) {
        strncat(line, ",\"agent_id\":\"", sizeof line - strlen(line) - 1);
        bus_json_escape(line, sizeof line - 64, agent_id, strlen(agent_id));
        strncat(line, "\"", sizeof line - strlen(line) - 1);
    }
    if (extra_json && *extra_json && strlen(line) + strlen(extra_json) + 64 < sizeof line) {
        strncat(line, ",", sizeof line - strlen(line) - 1);
        strncat(line, extra_json, sizeof line - strlen(line) - 1);
    }
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        strncat(line, ",\"msg\":\"", sizeof line - strlen(line) - 1);
        bus_json_escape(line, sizeof line - 8, msg, strlen(msg));
        strncat(line, "\"", sizeof line - strlen(line) - 1);
    }
    strncat(line, "}\n", sizeof line - strlen(line) - 1);
    /* One write(2) per line keeps lines whole when several processes share stderr (a pipe
     * write of at most PIPE_BUF = 4096 bytes is atomic, and line[] is smaller). */
    size_t len = strlen(line);
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
