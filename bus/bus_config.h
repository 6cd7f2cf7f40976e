/* bus_config: INI files and command-line overrides, driven by one table per side.
 *
 * A table of cfg_entry_t describes every key: section, name, type, where it lands in the
 * caller's config struct, its default and a help line. The same table fills the struct from
 * defaults, the file and `--set section.key=value` overrides, and prints `--help`.
 *
 * File rules: `[section]` headers, `key = value` lines, `#` or `;` comments, surrounding
 * whitespace trimmed, optional double quotes around a value. Duplicate sections merge; a later
 * value wins. A key in a section the table knows but the key is not in the table is an error.
 * A section the table does not know is handed to the caller's `unknown_section` callback when
 * given (e.g. the agent's [instance.NAME] sections), else ignored (hub processes share one
 * hub.conf and each ignores the sections it does not use). Relative paths (CFG_PATH) and ipc://
 * endpoints (CFG_ENDPOINT) are resolved against the directory of the config file.
 */
#ifndef BUS_CONFIG_H
#define BUS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    CFG_STR,      /* char *, malloc'd; "" allowed */
    CFG_INT,      /* int64_t, decimal */
    CFG_BOOL,     /* bool: true/false/yes/no/on/off/1/0 */
    CFG_MS,       /* int64_t milliseconds: "15s", "500ms", "2m" or a bare number of ms */
    CFG_BYTES,    /* int64_t bytes: "32MiB", "256KiB", "1GiB" or a bare number */
    CFG_LISTEN,   /* char *: "HOST:PORT" or "" for off; HOST must be given */
    CFG_PATH,     /* char *: file path, relative to the config file's directory */
    CFG_ENDPOINT, /* char *: zmq endpoint ipc://, tcp://; ipc:// relative to the config dir */
    CFG_LEVEL,    /* int (log_level_t): error, warn, info, debug */
} cfg_type_t;

typedef struct {
    const char *section; /* "tunnel" */
    const char *key;     /* "listen" */
    cfg_type_t type;     /* how the value is parsed */
    size_t offset;       /* offsetof() the field in the caller's struct */
    const char *def;     /* default as text; NULL means required */
    const char *help;    /* one line for --help */
    int64_t min, max;    /* inclusive bounds for numeric types (0,0 = unbounded) */
} cfg_entry_t;

#define CFG_END {NULL, NULL, CFG_STR, 0, NULL, NULL, 0, 0}

/* Called for each key=value in a section unknown to the table. Return 0, or -1 with err set. */
typedef int (*cfg_section_cb)(void *arg, const char *section, const char *key,
                              const char *value, int line, char *err, size_t errlen);

typedef struct {
    const cfg_entry_t *table;       /* the keys */
    void *target;                   /* the struct the offsets refer to */
    cfg_section_cb unknown_section; /* optional */
    void *cb_arg;                   /* passed to unknown_section */
} cfg_spec_t;

/* Fills target from defaults, then the file (may be NULL: defaults and overrides only; relative
 * paths then resolve against the current directory), then the overrides ("section.key=value").
 * On failure returns a negative errno and writes one line to err naming the file, line and key. */
int cfg_load(const cfg_spec_t *spec, const char *file, char *const *overrides, size_t n_overrides,
             char *err, size_t errlen);

/* Frees every string the table owns in target. */
void cfg_free(const cfg_spec_t *spec);

/* Prints every key of the table as "  section.key = default   help" to out. */
void cfg_print_help(const cfg_entry_t *table, FILE *out);

/* Splits "HOST:PORT" (IPv6 as "[::1]:PORT"); host is written without brackets.
 * Returns 0 or -EINVAL. */
int cfg_split_listen(const char *listen, char *host, size_t hostlen, int *port);

/* Common command line of every process: --config FILE, --set s.k=v (repeatable), --help,
 * --version. Positional words are collected in order. */
typedef struct {
    const char *config;    /* --config value or NULL */
    char **sets;           /* --set values */
    size_t n_sets;         /* count of sets */
    char **args;           /* positional arguments */
    size_t n_args;         /* count of args */
    bool help;             /* --help seen */
    bool version;          /* --version seen */
} cfg_cli_t;

/* Parses argv[first..argc). Options listed in extra (NULL-terminated, e.g. {"--dir", NULL})
 * take one value each and are stored with their value as positional pairs in args
 * ("--dir", "x"). Returns 0 or -EINVAL with err set. */
int cfg_cli_parse(cfg_cli_t *cli, int argc, char **argv, int first, const char *const *extra,
                  char *err, size_t errlen);
void cfg_cli_free(cfg_cli_t *cli);

/* Looks up the value of an extra option collected by cfg_cli_parse, or NULL. */
const char *cfg_cli_opt(const cfg_cli_t *cli, const char *name);

#endif
