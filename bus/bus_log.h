/* bus_log: one JSON object per line on stderr.
 *
 * Every line carries time, level, process and event; req_id and agent_id are added when the
 * caller knows them. The level check happens before any formatting, so a disabled debug line
 * costs one comparison. Never pass a secret (keys, tokens, Authorization values) to a log call.
 */
#ifndef BUS_LOG_H
#define BUS_LOG_H

#include <stdarg.h>
#include <stddef.h>

typedef enum { LOG_LVL_ERR = 0, LOG_LVL_WARN = 1, LOG_LVL_INFO = 2, LOG_LVL_DEBUG = 3 } log_level_t;

/* Process-wide log settings: the only mutable global besides the config. */
extern log_level_t bus_log_level;

/* Sets the "process" field of every line (e.g. "hub-tunnel"). The string must outlive the log. */
void bus_log_set_process(const char *name);

/* Parses "error", "warn", "info", "debug"; returns 0 or -EINVAL. */
int bus_log_parse_level(const char *text, log_level_t *out);

/* Writes one line. fmt is a printf format for the human "msg" field; may be NULL.
 * req_id and agent_id may be NULL. extra_json is NULL or a fragment of already-escaped
 * JSON members without braces, e.g. "\"peer\":\"127.0.0.1\"". */
void bus_log_write(log_level_t level, const char *event, const char *req_id, const char *agent_id,
                   const char *extra_json, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Appends s to dst (cap bytes, NUL-terminated) as JSON string content (no quotes), escaping
 * quotes, backslashes, control characters and invalid UTF-8 (as U+FFFD). Returns 0, or
 * -ENOSPC when it had to cut the output short. */
int bus_json_escape(char *dst, size_t cap, const char *s, size_t len);

#define LOG_AT(lvl, event, req, agent, ...)                                                        \
    do {                                                                                           \
        if ((lvl) <= bus_log_level)                                                                \
            bus_log_write((lvl), (event), (req), (agent), NULL, __VA_ARGS__);                      \
    } while (0)

#define log_err(event, ...) LOG_AT(LOG_LVL_ERR, event, NULL, NULL, __VA_ARGS__)
#define log_warn(event, ...) LOG_AT(LOG_LVL_WARN, event, NULL, NULL, __VA_ARGS__)
#define log_info(event, ...) LOG_AT(LOG_LVL_INFO, event, NULL, NULL, __VA_ARGS__)
#define log_debug(event, ...) LOG_AT(LOG_LVL_DEBUG, event, NULL, NULL, __VA_ARGS__)

/* Variants that name the agent and/or request the line is about. */
#define log_agent(lvl, event, agent, ...) LOG_AT(lvl, event, NULL, agent, __VA_ARGS__)
#define log_req(lvl, event, req, agent, ...) LOG_AT(lvl, event, req, agent, __VA_ARGS__)

#endif
