/* bus_config: INI files and --set overrides driven by one table per process (see bus_config.h). */
#include "bus_config.h"

#include "bus_log.h"
#include "bus_plat.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define CFG_MAX_LINE 4096          /* longest accepted line, without its newline */
#define CFG_MAX_FILE (1024 * 1024) /* largest accepted config file */
#define CFG_SHOW_MAX 64            /* longest value quoted back in an error message */

/* State of one cfg_load call. */
typedef struct {
    const cfg_spec_t *spec; /* the table and the struct it fills */
    char *dir;              /* directory relative paths resolve against; NULL = as given */
    bool *seen;             /* per table entry: a value was given (required keys) */
    char *err;              /* caller's error buffer, may be NULL */
    size_t errlen;          /* its size */
} load_ctx_t;

/* Formats one error line into err (if any), flattening any line break into a space. */
static void s_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    for (char *p = err; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

/* Writes a printable, shortened copy of v into buf for quoting in an error message. */
static const char *s_show(const char *v, char *buf, size_t n)
{
    size_t o = 0;
    size_t vlen = strlen(v);
    for (size_t i = 0; i < vlen && o + 1 < n; i++) {
        if (o >= CFG_SHOW_MAX || o + 4 >= n) {
            if (o + 4 <= n) {
                memcpy(buf + o, "...", 3);
                o += 3;
            }
            break;
        }
        unsigned char c = (unsigned char)v[i];
        buf[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    buf[o] = '\0';
    return buf;
}

/* 1 for the blanks that surround keys and values. */
static int s_is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Trims blanks on both sides of s in place; returns the new start. */
static char *s_trim(char *s)
{
    while (s_is_blank(*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && s_is_blank(s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* 1 if s is a non-empty name of [A-Za-z0-9_.-] (sections and keys). */
static int s_is_name(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

/* ASCII case-insensitive equality (portable strcasecmp). */
static int s_ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char x = (*a >= 'A' && *a <= 'Z') ? (char)(*a - 'A' + 'a') : *a;
        char y = (*b >= 'A' && *b <= 'Z') ? (char)(*b - 'A' + 'a') : *b;
        if (x != y)
            return 0;
    }
    return *a == *b;
}

/* Duplicates s, or NULL. */
static char *s_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* Number of entries before CFG_END. */
static size_t s_count(const cfg_entry_t *table)
{
    size_t n = 0;
    while (table[n].section)
        n++;
    return n;
}

/* 1 if the value of this type is a malloc'd char * in the target. */
static int s_is_string_type(cfg_type_t t)
{
    return t == CFG_STR || t == CFG_LISTEN || t == CFG_PATH || t == CFG_ENDPOINT;
}

/* Address of the entry's field inside target. */
static void *s_field(const cfg_spec_t *spec, const cfg_entry_t *e)
{
    return (char *)spec->target + e->offset;
}

/* Index of section.key in the table, or -1. */
static long s_find(const cfg_entry_t *table, const char *section, const char *key)
{
    for (size_t i = 0; table[i].section; i++)
        if (strcmp(table[i].section, section) == 0 && strcmp(table[i].key, key) == 0)
            return (long)i;
    return -1;
}

/* 1 if the table has any key in section. */
static int s_section_known(const cfg_entry_t *table, const char *section)
{
    for (size_t i = 0; table[i].section; i++)
        if (strcmp(table[i].section, section) == 0)
            return 1;
    return 0;
}

/* Parses a signed decimal integer that fills the whole of v. 0 or -EINVAL. */
static int s_parse_int(const char *v, int64_t *out)
{
    const char *p = v;
    int neg = 0;
    if (*p == '+' || *p == '-')
        neg = *p++ == '-';
    if (*p < '0' || *p > '9')
        return -EINVAL;
    /* Accumulate as a negative number so INT64_MIN parses too. */
    int64_t n = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        int d = *p - '0';
        if (n < (INT64_MIN + d) / 10)
            return -EINVAL;
        n = n * 10 - d;
    }
    if (*p)
        return -EINVAL;
    if (!neg) {
        if (n == INT64_MIN)
            return -EINVAL;
        n = -n;
    }
    *out = n;
    return 0;
}

/* Parses "<digits>[blanks]<unit>" into a non-negative number and the unit text. 0 or -EINVAL. */
static int s_parse_number_unit(const char *v, int64_t *num, const char **unit)
{
    const char *p = v;
    int64_t n = 0;
    if (*p < '0' || *p > '9')
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        int d = *p - '0';
        if (n > (INT64_MAX - d) / 10)
            return -EINVAL;
        n = n * 10 + d;
    }
    while (*p == ' ' || *p == '\t')
        p++;
    *num = n;
    *unit = p;
    return 0;
}

/* Multiplies n by mul into *out unless it overflows int64. 0 or -EINVAL. */
static int s_scale(int64_t n, int64_t mul, int64_t *out)
{
    if (n > INT64_MAX / mul)
        return -EINVAL;
    *out = n * mul;
    return 0;
}

/* Parses a duration ("500ms", "15s", "2m", "1h", bare milliseconds) into milliseconds. */
static int s_parse_ms(const char *v, int64_t *out)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    int64_t n;
    const char *unit;
    if (s_parse_number_unit(v, &n, &unit) < 0)
        return -EINVAL;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(unit, units[i].unit) == 0)
            return s_scale(n, units[i].ms, out);
    return -EINVAL;
}

/* Parses a size ("256KiB", "32MiB", "1GiB", "4K", bare bytes) into bytes; binary units. */
static int s_parse_bytes(const char *v, int64_t *out)
{
    static const struct {
        const char *unit;
        int64_t mul;
    } units[] = {
        {"", 1},
        {"b", 1},
        {"k", 1024},
        {"kib", 1024},
        {"m", 1024 * 1024},
        {"mib", 1024 * 1024},
        {"g", INT64_C(1024) * 1024 * 1024},
        {"gib", INT64_C(1024) * 1024 * 1024},
        {"t", INT64_C(1024) * 1024 * 1024 * 1024},
        {"tib", INT64_C(1024) * 1024 * 1024 * 1024},
    };
    int64_t n;
    const char *unit;
    if (s_parse_number_unit(v, &n, &unit) < 0)
        return -EINVAL;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (s_ieq(unit, units[i].unit))
            return s_scale(n, units[i].mul, out);
    return -EINVAL;
}

/* Parses true/false/yes/no/on/off/1/0 (any case). 0 or -EINVAL. */
static int s_parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (s_ieq(v, yes[i])) {
            *out = true;
            return 0;
        }
        if (s_ieq(v, no[i])) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

/* Resolves a relative path against ctx->dir; "" and absolute paths are kept. malloc'd. */
static char *s_resolve_path(const load_ctx_t *ctx, const char *v)
{
    if (!*v || !ctx->dir || plat_path_is_absolute(v))
        return s_strdup(v);
    return plat_path_join(ctx->dir, v);
}

/* Resolves a relative ipc:// path of a checked endpoint against ctx->dir. malloc'd or NULL. */
static char *s_resolve_endpoint(const load_ctx_t *ctx, const char *v)
{
    const char *path = v + 6;
    /* tcp:// is kept as is; "ipc://@name" is Linux's abstract namespace, not a file. */
    if (!*v || strncmp(v, "ipc://", 6) != 0 || path[0] == '@' || !ctx->dir ||
        plat_path_is_absolute(path))
        return s_strdup(v);
    char *joined = plat_path_join(ctx->dir, path);
    if (!joined)
        return NULL;
    size_t n = strlen(joined);
    char *out = malloc(n + 7);
    if (out) {
        memcpy(out, "ipc://", 6);
        memcpy(out + 6, joined, n + 1);
    }
    free(joined);
    return out;
}

/* Unit named after a numeric value in range errors. */
static const char *s_unit_name(cfg_type_t t)
{
    return t == CFG_MS ? " ms" : t == CFG_BYTES ? " bytes" : "";
}

/* Parses value for entry idx and stores it in the target. where prefixes the error line
 * ("hub.conf:12", "--set a.b=c"; NULL for a default). 0 or a negative errno with err set. */
static int s_assign(load_ctx_t *ctx, size_t idx, const char *value, const char *where)
{
    const cfg_entry_t *e = &ctx->spec->table[idx];
    void *field = s_field(ctx->spec, e);
    char shown[CFG_SHOW_MAX + 8];
    char pre[1100];
    const char *what = NULL; /* the problem, e.g. "not a duration" */
    const char *hint = NULL; /* how to write it right */
    int64_t num = 0;

    if (where)
        snprintf(pre, sizeof pre, "%s: %s.%s", where, e->section, e->key);
    else
        snprintf(pre, sizeof pre, "default of %s.%s", e->section, e->key);

    switch (e->type) {
    case CFG_INT:
        if (s_parse_int(value, &num) < 0)
            what = "not an integer";
        break;
    case CFG_MS:
        if (s_parse_ms(value, &num) < 0) {
            what = "not a duration";
            hint = "use e.g. 500ms, 15s, 2m, 1h";
        }
        break;
    case CFG_BYTES:
        if (s_parse_bytes(value, &num) < 0) {
            what = "not a size";
            hint = "use e.g. 4096, 256KiB, 32MiB, 1GiB";
        }
        break;
    case CFG_BOOL: {
        bool b;
        if (s_parse_bool(value, &b) < 0) {
            what = "not a boolean";
            hint = "use true/false, yes/no, on/off, 1/0";
        } else {
            *(bool *)field = b;
        }
        break;
    }
    case CFG_LEVEL: {
        log_level_t lvl;
        if (bus_log_parse_level(value, &lvl) < 0) {
            what = "not a log level";
            hint = "use error, warn, info, debug";
        } else {
            *(int *)field = (int)lvl;
        }
        break;
    }
    case CFG_LISTEN:
        if (*value && cfg_split_listen(value, NULL, 0, NULL) < 0) {
            what = "not HOST:PORT";
            hint = "port 0-65535, IPv6 as [::1]:PORT, empty for off";
        }
        break;
    case CFG_ENDPOINT:
        if (*value &&
            !((strncmp(value, "ipc://", 6) == 0 || strncmp(value, "tcp://", 6) == 0) && value[6])) {
            what = "not an endpoint";
            hint = "use ipc://PATH or tcp://HOST:PORT";
        }
        break;
    case CFG_STR:
    case CFG_PATH:
        break;
    }
    if (what) {
        s_err(ctx->err, ctx->errlen, "%s: %s (\"%s\")%s%s", pre, what,
              s_show(value, shown, sizeof shown), hint ? "; " : "", hint ? hint : "");
        return -EINVAL;
    }

    if (e->type == CFG_INT || e->type == CFG_MS || e->type == CFG_BYTES) {
        if ((e->min || e->max) && (num < e->min || num > e->max)) {
            s_err(ctx->err, ctx->errlen, "%s: \"%s\" is out of range [%" PRId64 ", %" PRId64 "]%s",
                  pre, s_show(value, shown, sizeof shown), e->min, e->max, s_unit_name(e->type));
            return -EINVAL;
        }
        *(int64_t *)field = num;
    }

    if (s_is_string_type(e->type)) {
        char *copy;
        if (e->type == CFG_PATH)
            copy = s_resolve_path(ctx, value);
        else if (e->type == CFG_ENDPOINT)
            copy = s_resolve_endpoint(ctx, value);
        else
            copy = s_strdup(value);
        if (!copy) {
            s_err(ctx->err, ctx->errlen, "%s: out of memory", pre);
            return -ENOMEM;
        }
        char **slot = field;
        free(*slot);
        *slot = copy;
    }
    ctx->seen[idx] = true;
    return 0;
}

/* Applies one key = value from the file or an override. section/key are already validated
 * names; where prefixes errors; line is 0 for overrides. 0 or a negative errno. */
static int s_apply(load_ctx_t *ctx, const char *section, const char *key, const char *value,
                   const char *where, int line)
{
    const cfg_spec_t *spec = ctx->spec;
    long idx = s_find(spec->table, section, key);
    if (idx >= 0)
        return s_assign(ctx, (size_t)idx, value, where);
    if (s_section_known(spec->table, section)) {
        if (line > 0)
            s_err(ctx->err, ctx->errlen, "%s: unknown key %s.%s in section [%s]", where, section,
                  key, section);
        else
            s_err(ctx->err, ctx->errlen, "%s: unknown key %s.%s", where, section, key);
        return -EINVAL;
    }
    if (spec->unknown_section) {
        char msg[512] = "";
        if (spec->unknown_section(spec->cb_arg, section, key, value, line, msg, sizeof msg) != 0) {
            s_err(ctx->err, ctx->errlen, "%s: %s", where,
                  msg[0] ? msg : "rejected by the section handler");
            return -EINVAL;
        }
        return 0;
    }
    if (line > 0)
        return 0; /* another process's section in a shared file */
    s_err(ctx->err, ctx->errlen, "%s: unknown key %s.%s", where, section, key);
    return -EINVAL;
}

/* Finds an inline comment (# or ; after a blank) in an unquoted value and cuts it off. */
static void s_cut_comment(char *v)
{
    for (char *p = v; *p; p++) {
        if ((*p == '#' || *p == ';') && (p == v || s_is_blank(p[-1]))) {
            *p = '\0';
            return;
        }
    }
}

/* Handles one line of the file (NUL-terminated, mutable). *section points into the file
 * buffer and changes on a header. 0 or a negative errno with err set. */
static int s_file_line(load_ctx_t *ctx, const char *file, int lineno, char *raw,
                       const char **section)
{
    char where[1024];
    char shown[CFG_SHOW_MAX + 8];
    snprintf(where, sizeof where, "%s:%d", file, lineno);

    char *s = s_trim(raw);
    if (!*s || *s == '#' || *s == ';')
        return 0;

    if (*s == '[') {
        char *close = strchr(s, ']');
        if (!close) {
            s_err(ctx->err, ctx->errlen, "%s: missing ']' in section header", where);
            return -EINVAL;
        }
        char *rest = s_trim(close + 1);
        if (*rest && *rest != '#' && *rest != ';') {
            s_err(ctx->err, ctx->errlen, "%s: text after section header (\"%s\")", where,
                  s_show(rest, shown, sizeof shown));
            return -EINVAL;
        }
        *close = '\0';
        char *name = s_trim(s + 1);
        if (!s_is_name(name)) {
            s_err(ctx->err, ctx->errlen, "%s: bad section name \"%s\" (use A-Z a-z 0-9 _ . -)",
                  where, s_show(name, shown, sizeof shown));
            return -EINVAL;
        }
        *section = name;
        return 0;
    }

    char *eq = strchr(s, '=');
    if (!eq) {
        s_err(ctx->err, ctx->errlen, "%s: expected key = value (\"%s\")", where,
              s_show(s, shown, sizeof shown));
        return -EINVAL;
    }
    *eq = '\0';
    char *key = s_trim(s);
    char *value = s_trim(eq + 1);
    if (!s_is_name(key)) {
        s_err(ctx->err, ctx->errlen, "%s: bad key name \"%s\" (use A-Z a-z 0-9 _ . -)", where,
              s_show(key, shown, sizeof shown));
        return -EINVAL;
    }
    if (!**section) {
        s_err(ctx->err, ctx->errlen, "%s: key %s before any [section]", where, key);
        return -EINVAL;
    }
    if (*value == '"') {
        /* A quoted value runs to the next quote, taken literally (no escapes); only a comment
         * may follow it. */
        char *end = strchr(value + 1, '"');
        if (!end) {
            s_err(ctx->err, ctx->errlen, "%s: %s.%s: missing closing quote", where, *section, key);
            return -EINVAL;
        }
        char *rest = s_trim(end + 1);
        if (*rest && *rest != '#' && *rest != ';') {
            s_err(ctx->err, ctx->errlen, "%s: %s.%s: text after closing quote", where, *section,
                  key);
            return -EINVAL;
        }
        *end = '\0';
        value++;
    } else {
        s_cut_comment(value);
        value = s_trim(value);
    }
    return s_apply(ctx, *section, key, value, where, lineno);
}

/* Reads and applies the whole file. 0 or a negative errno with err set. */
static int s_load_file(load_ctx_t *ctx, const char *file)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = plat_read_file(file, CFG_MAX_FILE, &buf, &len);
    if (rc == -EFBIG) {
        s_err(ctx->err, ctx->errlen, "%s: larger than %d bytes", file, CFG_MAX_FILE);
        return rc;
    }
    if (rc < 0) {
        s_err(ctx->err, ctx->errlen, "%s: %s", file, strerror(-rc));
        return rc;
    }

    const char *section = "";
    size_t pos = 0;
    int lineno = 0;
    if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
        pos = 3; /* UTF-8 byte order mark written by some editors */
    while (pos < len) {
        lineno++;
        char *start = buf + pos;
        char *nl = memchr(start, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - start) : len - pos;
        pos += n + (nl ? 1 : 0);
        if (n > 0 && start[n - 1] == '\r')
            n--;
        if (n > CFG_MAX_LINE) {
            s_err(ctx->err, ctx->errlen, "%s:%d: line longer than %d bytes", file, lineno,
                  CFG_MAX_LINE);
            rc = -EINVAL;
            break;
        }
        if (memchr(start, '\0', n)) {
            s_err(ctx->err, ctx->errlen, "%s:%d: NUL byte in line", file, lineno);
            rc = -EINVAL;
            break;
        }
        start[n] = '\0';
        rc = s_file_line(ctx, file, lineno, start, &section);
        if (rc < 0)
            break;
    }
    free(buf);
    return rc;
}

/* Applies one "section.key=value" override. 0 or a negative errno with err set. */
static int s_load_override(load_ctx_t *ctx, const char *ov)
{
    char where[CFG_SHOW_MAX + 16];
    char shown[CFG_SHOW_MAX + 8];
    snprintf(where, sizeof where, "--set %s", s_show(ov, shown, sizeof shown));

    const char *eq = strchr(ov, '=');
    size_t klen = eq ? (size_t)(eq - ov) : 0;
    char name[256];
    if (!eq || klen == 0 || klen >= sizeof name) {
        s_err(ctx->err, ctx->errlen, "%s: expected section.key=value", where);
        return -EINVAL;
    }
    memcpy(name, ov, klen);
    name[klen] = '\0';
    /* Sections may contain dots ([instance.NAME]); keys never do: split at the last dot. */
    char *dot = strrchr(name, '.');
    if (!dot || dot == name || !dot[1] || !s_is_name(name)) {
        s_err(ctx->err, ctx->errlen, "%s: expected section.key=value", where);
        return -EINVAL;
    }
    *dot = '\0';
    return s_apply(ctx, name, dot + 1, eq + 1, where, 0);
}

/* Sets every table field to its empty state and then to its default. 0 or a negative errno. */
static int s_load_defaults(load_ctx_t *ctx)
{
    const cfg_spec_t *spec = ctx->spec;
    for (size_t i = 0; spec->table[i].section; i++) {
        const cfg_entry_t *e = &spec->table[i];
        void *field = s_field(spec, e);
        switch (e->type) {
        case CFG_STR:
        case CFG_LISTEN:
        case CFG_PATH:
        case CFG_ENDPOINT:
            *(char **)field = NULL; /* the target may hold garbage: never free here */
            break;
        case CFG_INT:
        case CFG_MS:
        case CFG_BYTES:
            *(int64_t *)field = 0;
            break;
        case CFG_BOOL:
            *(bool *)field = false;
            break;
        case CFG_LEVEL:
            *(int *)field = LOG_LVL_INFO;
            break;
        }
    }
    for (size_t i = 0; spec->table[i].section; i++) {
        if (!spec->table[i].def)
            continue;
        int rc = s_assign(ctx, i, spec->table[i].def, NULL);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* The absolute directory of file (symlinks resolved where possible), malloc'd, or NULL. */
static char *s_config_dir(const char *file)
{
    char *dir = plat_dirname(file);
    if (!dir)
        return NULL;
#ifdef _WIN32
    char *abs = _fullpath(NULL, dir, 0);
#else
    char *abs = realpath(dir, NULL);
#endif
    if (!abs)
        return dir; /* keep the relative form: still right while the cwd does not change */
    free(dir);
    return abs;
}

int cfg_load(const cfg_spec_t *spec, const char *file, char *const *overrides, size_t n_overrides,
             char *err, size_t errlen)
{
    load_ctx_t ctx = {.spec = spec, .err = err, .errlen = errlen};
    size_t n = s_count(spec->table);
    int rc = 0;

    if (err && errlen)
        err[0] = '\0';
    ctx.seen = calloc(n + 1, sizeof *ctx.seen);
    if (!ctx.seen) {
        s_err(err, errlen, "config: out of memory");
        return -ENOMEM;
    }
    if (file) {
        ctx.dir = s_config_dir(file);
        if (!ctx.dir) {
            s_err(err, errlen, "%s: out of memory", file);
            rc = -ENOMEM;
            goto out;
        }
    }
    rc = s_load_defaults(&ctx);
    if (rc == 0 && file)
        rc = s_load_file(&ctx, file);
    for (size_t i = 0; rc == 0 && i < n_overrides; i++)
        rc = s_load_override(&ctx, overrides[i]);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const cfg_entry_t *e = &spec->table[i];
        if (!e->def && !ctx.seen[i]) {
            if (file)
                s_err(err, errlen, "%s: %s.%s: required (set it in [%s] or with --set %s.%s=...)",
                      file, e->section, e->key, e->section, e->section, e->key);
            else
                s_err(err, errlen, "%s.%s: required (set it with --set %s.%s=...)", e->section,
                      e->key, e->section, e->key);
            rc = -EINVAL;
        }
    }
out:
    if (rc < 0)
        cfg_free(spec);
    free(ctx.seen);
    free(ctx.dir);
    return rc;
}

void cfg_free(const cfg_spec_t *spec)
{
    if (!spec || !spec->table || !spec->target)
        return;
    for (size_t i = 0; spec->table[i].section; i++) {
        const cfg_entry_t *e = &spec->table[i];
        if (!s_is_string_type(e->type))
            continue;
        char **slot = s_field(spec, e);
        free(*slot);
        *slot = NULL;
    }
}

/* Formats the "  section.key = default" column of one entry into buf. */
static void s_help_left(const cfg_entry_t *e, char *buf, size_t n)
{
    const char *def = e->def ? e->def : "(required)";
    if (e->def && !*e->def)
        def = "\"\"";
    snprintf(buf, n, "  %s.%s = %s", e->section, e->key, def);
}

void cfg_print_help(const cfg_entry_t *table, FILE *out)
{
    char left[512];
    int width = 0;
    for (size_t i = 0; table[i].section; i++) {
        s_help_left(&table[i], left, sizeof left);
        int w = (int)strlen(left);
        if (w > width)
            width = w;
    }
    if (width > 56)
        width = 56; /* longer entries push their help text right instead */

    for (size_t i = 0; table[i].section; i++) {
        /* Print each section once, at its first entry, with all of its entries. */
        int first = 1;
        for (size_t j = 0; j < i && first; j++)
            if (strcmp(table[j].section, table[i].section) == 0)
                first = 0;
        if (!first)
            continue;
        fprintf(out, "[%s]\n", table[i].section);
        for (size_t j = i; table[j].section; j++) {
            if (strcmp(table[j].section, table[i].section) != 0)
                continue;
            s_help_left(&table[j], left, sizeof left);
            if (table[j].help && *table[j].help)
                fprintf(out, "%-*s  %s\n", width, left, table[j].help);
            else
                fprintf(out, "%s\n", left);
        }
    }
}

/* 1 if c may appear in an unbracketed host name or IPv4 address. */
static int s_host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

int cfg_split_listen(const char *listen, char *host, size_t hostlen, int *port)
{
    const char *h, *hend, *p;
    if (!listen)
        return -EINVAL;
    if (listen[0] == '[') {
        h = listen + 1;
        hend = strchr(h, ']');
        if (!hend || hend == h || hend[1] != ':')
            return -EINVAL;
        int colon = 0;
        for (const char *c = h; c < hend; c++) {
            if (!s_host_char(*c) && *c != ':' && *c != '%')
                return -EINVAL;
            colon |= *c == ':';
        }
        if (!colon)
            return -EINVAL; /* brackets are for IPv6 only */
        p = hend + 2;
    } else {
        h = listen;
        hend = strchr(listen, ':');
        if (!hend || hend == h)
            return -EINVAL;
        for (const char *c = h; c < hend; c++)
            if (!s_host_char(*c))
                return -EINVAL;
        p = hend + 1;
    }
    /* Port: 1 to 5 digits, nothing else, at most 65535 (0 = any free port). */
    size_t plen = strlen(p);
    if (plen == 0 || plen > 5)
        return -EINVAL;
    int v = 0;
    for (size_t i = 0; i < plen; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -EINVAL;
        v = v * 10 + (p[i] - '0');
    }
    if (v > 65535)
        return -EINVAL;
    size_t hl = (size_t)(hend - h);
    if (host) {
        if (hl + 1 > hostlen)
            return -EINVAL;
        memcpy(host, h, hl);
        host[hl] = '\0';
    }
    if (port)
        *port = v;
    return 0;
}

/* Appends a copy of s to the string array *arr of *n entries. 0 or -ENOMEM. */
static int s_push(char ***arr, size_t *n, const char *s, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, s, len);
    copy[len] = '\0';
    char **grown = realloc(*arr, (*n + 1) * sizeof **arr);
    if (!grown) {
        free(copy);
        return -ENOMEM;
    }
    grown[(*n)++] = copy;
    *arr = grown;
    return 0;
}

/* If arg is name or name=VALUE, returns what follows the name (*has_inline says whether an
 * inline value was given), else NULL. */
static const char *s_match_opt(const char *arg, const char *name, int *has_inline)
{
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0)
        return NULL;
    if (arg[n] == '\0') {
        *has_inline = 0;
        return arg + n;
    }
    if (arg[n] == '=') {
        *has_inline = 1;
        return arg + n + 1;
    }
    return NULL;
}

/* Takes the value of option name: inline, or the next argument. NULL with err set if missing. */
static const char *s_opt_value(const char *name, const char *inl, int has_inline, int argc,
                               char **argv, int *i, char *err, size_t errlen)
{
    if (has_inline) {
        if (!*inl) {
            s_err(err, errlen, "%s: empty value", name);
            return NULL;
        }
        return inl;
    }
    if (*i + 1 >= argc) {
        s_err(err, errlen, "%s: missing value", name);
        return NULL;
    }
    return argv[++*i];
}

int cfg_cli_parse(cfg_cli_t *cli, int argc, char **argv, int first, const char *const *extra,
                  char *err, size_t errlen)
{
    int rc = 0;
    int only_args = 0;
    memset(cli, 0, sizeof *cli);
    if (err && errlen)
        err[0] = '\0';

    for (int i = first; i < argc && rc == 0; i++) {
        const char *a = argv[i];
        const char *v;
        int inl = 0;
        /* "-" (stdin) and "-5" (a negative number) are words, not options. */
        if (only_args || a[0] != '-' || a[1] == '\0' || (a[1] >= '0' && a[1] <= '9')) {
            rc = s_push(&cli->args, &cli->n_args, a, strlen(a));
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_args = 1;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cli->help = true;
        } else if (strcmp(a, "--version") == 0) {
            cli->version = true;
        } else if ((v = s_match_opt(a, "--config", &inl))) {
            v = s_opt_value("--config", v, inl, argc, argv, &i, err, errlen);
            if (!v)
                rc = -EINVAL;
            else
                cli->config = v;
        } else if ((v = s_match_opt(a, "--set", &inl))) {
            v = s_opt_value("--set", v, inl, argc, argv, &i, err, errlen);
            if (!v)
                rc = -EINVAL;
            else
                rc = s_push(&cli->sets, &cli->n_sets, v, strlen(v));
        } else {
            const char *name = NULL;
            for (size_t k = 0; extra && extra[k] && !name; k++)
                if ((v = s_match_opt(a, extra[k], &inl)))
                    name = extra[k];
            if (!name) {
                char shown[CFG_SHOW_MAX + 8];
                s_err(err, errlen, "unknown option %s (see --help)",
                      s_show(a, shown, sizeof shown));
                rc = -EINVAL;
                break;
            }
            v = s_opt_value(name, v, inl, argc, argv, &i, err, errlen);
            if (!v)
                rc = -EINVAL;
            else if ((rc = s_push(&cli->args, &cli->n_args, name, strlen(name))) == 0)
                rc = s_push(&cli->args, &cli->n_args, v, strlen(v));
        }
    }
    if (rc == -ENOMEM)
        s_err(err, errlen, "command line: out of memory");
    if (rc < 0)
        cfg_cli_free(cli);
    return rc;
}

void cfg_cli_free(cfg_cli_t *cli)
{
    if (!cli)
        return;
    for (size_t i = 0; i < cli->n_sets; i++)
        free(cli->sets[i]);
    for (size_t i = 0; i < cli->n_args; i++)
        free(cli->args[i]);
    free(cli->sets);
    free(cli->args);
    memset(cli, 0, sizeof *cli);
}

const char *cfg_cli_opt(const cfg_cli_t *cli, const char *name)
{
    const char *found = NULL;
    /* Pairs sit among the positional words and every option name starts with "--": skip each
     * pair whole, so a value that looks like an option is never read as one. The last
     * occurrence wins. */
    for (size_t i = 0; i + 1 < cli->n_args; i++) {
        if (strncmp(cli->args[i], "--", 2) != 0)
            continue;
        if (strcmp(cli->args[i], name) == 0)
            found = cli->args[i + 1];
        i++;
    }
    return found;
}
