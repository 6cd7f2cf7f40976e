/* bus_config: INI files and command-line overrides, driven by one table per side.
 *
 * A table of cfg_entry_t describes every key: section, name, type, where it lands in the
 * caller's config struct, its default and a help line. The same table fills the struct from
 * defaults, the file and `--set section.key=value` overrides, and prints `--help`.
 *
 * File rules: `[section]` headers, `key = value` lines, `#` or `;` comments, surrounding
 * whitespace trimmed, optional double quotes around a value. Duplicate sections merge; a later
 * value wins. A key in a section the table knows but the key is not in the table is an error.
 * Details: a comment may also follow a value or a header when a blank precedes the `#`/`;`
 * (`workers = 4  # per core`); `#` inside a word is data (`redis://h/0#x`). A quoted value is
 * taken literally up to the next `"` (no escapes; quote a value that holds ` #`). Section and
 * key names are [A-Za-z0-9_.-]; a key before any section, a line without `=`, a header without
 * `]`, a line over 4096 bytes, a NUL byte or a file over 1 MiB is an error. CRLF line ends and a
 * UTF-8 BOM are accepted. Every error is one line, e.g.
 *   hub.conf:12: tunnel.heartbeat: not a duration ("15x"); use e.g. 500ms, 15s, 2m, 1h
 *   hub.conf:3: unknown key tunnel.lisen in section [tunnel]
 *   --set tunnel.foo=1: unknown key tunnel.foo
 *   hub.conf: tunnel.listen: required (set it in [tunnel] or with --set tunnel.listen=...)
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
    CFG_MS,       /* int64_t milliseconds: "15s", "500ms", "2m", "1h" or a bare number of ms */
    CFG_BYTES,    /* int64_t bytes: "32MiB", "256KiB", "1GiB" (also K/M/G/T, any case; all
                     binary) or a bare number */
    CFG_LISTEN,   /* char *: "HOST:PORT" (port 0-65535, IPv6 as "[::1]:PORT") or "" for off */
    CFG_PATH,     /* char *: file path, relative to the config file's directory; "" kept */
    CFG_ENDPOINT, /* char *: zmq endpoint ipc://, tcp:// or "" (off); a relative ipc:// path is
                     made relative to the config dir; tcp:// and ipc://@abstract kept as is */
    CFG_LEVEL,    /* int or log_level_t field: error, warn, info, debug */
} cfg_type_t;

typedef struct {
    const char *section; /* "tunnel" */
    const char *key;     /* "listen" */
    cfg_type_t type;     /* how the value is parsed */
    size_t offset;       /* offsetof() the field in the caller's struct */
    const char *def;     /* default as text; NULL means required */
    const char *help;    /* one line for --help */
    int64_t min, max;    /* inclusive bounds for CFG_INT/MS/BYTES in ms or bytes (0,0 = none) */
} cfg_entry_t;

#define CFG_END {NULL, NULL, CFG_STR, 0, NULL, NULL, 0, 0}

/* Called for each key=value in a section unknown to the table (line is 0 for a --set). Return 0,
 * or -1 with err set to a message without a location: cfg_load puts "file:line: " or
 * "--set ...: " in front and returns -EINVAL. */
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
 * On failure returns a negative errno and writes one line to err naming the file, line and key.
 *
 * The table's fields in target are overwritten without being read or freed first (call
 * cfg_free before loading into the same struct again). On failure every string the table owns
 * has been freed and set to NULL. A key whose def is NULL must be given by the file or a --set.
 * The config file's directory is made absolute, so resolved paths and ipc:// endpoints do not
 * depend on the current directory; defaults and --set values are resolved the same way.
 * An override splits at its first '=' and the name at its last '.' (sections may contain dots,
 * "instance.openai.api_key=..."); its value is taken literally. err may be NULL. */
int cfg_load(const cfg_spec_t *spec, const char *file, char *const *overrides, size_t n_overrides,
             char *err, size_t errlen);

/* Frees every string the table owns in target and sets it to NULL; safe to call twice. */
void cfg_free(const cfg_spec_t *spec);

/* Prints every key of the table as "  section.key = default   help" to out, grouped under a
 * "[section]" line per section in the order sections first appear, help texts aligned. A key
 * without default shows "(required)", an empty default shows "". */
void cfg_print_help(const cfg_entry_t *table, FILE *out);

/* Splits "HOST:PORT" (IPv6 as "[::1]:PORT"); host is written without brackets. HOST is a name
 * or address of [A-Za-z0-9._-] (inside brackets also ':' and '%'), PORT 0-65535 in digits.
 * host (with hostlen) and port may be NULL to only validate. Returns 0 or -EINVAL (also when
 * host does not fit in hostlen with its NUL). */
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

/* Parses argv[first..argc). Options listed in extra (NULL-terminated, e.g. {"--dir", NULL};
 * names start with "--") take one value each and are stored with their value as positional
 * pairs in args ("--dir", "x"). Every option also takes "--opt=value"; "--" ends options;
 * "-" and "-5" are words; -h is --help; the last --config wins. config points into argv;
 * sets and args are malloc'd copies owned by cli. Returns 0, or -EINVAL (-ENOMEM) with err set
 * to one line ("unknown option --x (see --help)", "--config: missing value") and cli freed. */
int cfg_cli_parse(cfg_cli_t *cli, int argc, char **argv, int first, const char *const *extra,
                  char *err, size_t errlen);

/* Frees what cfg_cli_parse stored and zeroes cli; safe to call twice. */
void cfg_cli_free(cfg_cli_t *cli);

/* Looks up the value of an extra option collected by cfg_cli_parse (the last one if repeated),
 * or NULL. A word after "--" that equals an option name can be mistaken for it. */
const char *cfg_cli_opt(const cfg_cli_t *cli, const char *name);

#endif
