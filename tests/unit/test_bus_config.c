/* Unit tests for bus_config: table-driven INI loading, --set, --help and the command line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bus_config.h"
#include "bus_log.h"
#include "test_util.h"

/* A config struct shaped like a real hub process's, with every field type. */
typedef struct {
    char *listen;       /* tunnel.listen: CFG_LISTEN, required */
    char *admin_listen; /* tunnel.admin_listen: CFG_LISTEN */
    char *cert;         /* tunnel.cert: CFG_PATH, relative default */
    char *admin_token;  /* tunnel.admin_token: CFG_STR, "" default */
    int64_t heartbeat;  /* tunnel.heartbeat: CFG_MS, bounded */
    int64_t max_body;   /* gateway.max_body_bytes: CFG_BYTES, bounded */
    int64_t workers;    /* gateway.workers: CFG_INT, bounded */
    bool tls;           /* gateway.tls: CFG_BOOL */
    char *gw_listen;    /* gateway.listen: CFG_LISTEN */
    char *bus_ep;       /* bus.endpoint: CFG_ENDPOINT, ipc:// relative default */
    char *bus_remote;   /* bus.remote: CFG_ENDPOINT, tcp:// default */
    int level;          /* log.level: CFG_LEVEL */
    int64_t offset;     /* log.offset: CFG_INT, unbounded */
    char *db;           /* store.path: CFG_PATH, absolute default */
    char *mysql_url;    /* store.mysql_url: CFG_STR */
} tcfg_t;

#define MIB (INT64_C(1024) * 1024)
#define GIB (MIB * 1024)

/* Deliberately interleaves sections to check that --help groups them. */
static const cfg_entry_t s_table[] = {
    {"tunnel", "listen", CFG_LISTEN, offsetof(tcfg_t, listen), NULL, "agent tunnel listener", 0, 0},
    {"tunnel", "admin_listen", CFG_LISTEN, offsetof(tcfg_t, admin_listen), "127.0.0.1:8444",
     "admin API listener", 0, 0},
    {"gateway", "listen", CFG_LISTEN, offsetof(tcfg_t, gw_listen), "127.0.0.1:8080",
     "public HTTP listener", 0, 0},
    {"tunnel", "cert", CFG_PATH, offsetof(tcfg_t, cert), "hub.crt", "TLS certificate", 0, 0},
    {"tunnel", "admin_token", CFG_STR, offsetof(tcfg_t, admin_token), "", "admin bearer token", 0,
     0},
    {"tunnel", "heartbeat", CFG_MS, offsetof(tcfg_t, heartbeat), "15s", "ping interval", 1000,
     600000},
    {"gateway", "max_body_bytes", CFG_BYTES, offsetof(tcfg_t, max_body), "32MiB",
     "largest request body", 1, GIB},
    {"gateway", "workers", CFG_INT, offsetof(tcfg_t, workers), "4", "worker count", 1, 64},
    {"gateway", "tls", CFG_BOOL, offsetof(tcfg_t, tls), "false", "serve TLS", 0, 0},
    {"bus", "endpoint", CFG_ENDPOINT, offsetof(tcfg_t, bus_ep), "ipc://bus.sock", "bus socket", 0,
     0},
    {"bus", "remote", CFG_ENDPOINT, offsetof(tcfg_t, bus_remote), "tcp://127.0.0.1:5555",
     "remote bus", 0, 0},
    {"log", "level", CFG_LEVEL, offsetof(tcfg_t, level), "info", "log level", 0, 0},
    {"log", "offset", CFG_INT, offsetof(tcfg_t, offset), "-5", NULL, 0, 0},
    {"store", "path", CFG_PATH, offsetof(tcfg_t, db), "/var/lib/relayhub/hub.db", "database", 0, 0},
    {"store", "mysql_url", CFG_STR, offsetof(tcfg_t, mysql_url), "", "MySQL URL", 0, 0},
    CFG_END,
};

static char s_tmpdir[256];      /* realpath of this run's scratch directory (the cwd) */
static char s_oldcwd[PATH_MAX]; /* cwd before the tests */

/* Creates the scratch directory and enters it. */
static int group_setup(void **state)
{
    (void)state;
    char tmpl[PATH_MAX];
    if (!getcwd(s_oldcwd, sizeof s_oldcwd) ||
        tu_tmpdir_new(tmpl, sizeof tmpl, "test_bus_config") != 0)
        return -1;
    char *real = realpath(tmpl, NULL); /* /tmp may be a symlink */
    if (!real || strlen(real) >= sizeof s_tmpdir) {
        free(real);
        return -1;
    }
    memcpy(s_tmpdir, real, strlen(real) + 1);
    free(real);
    return chdir(s_tmpdir);
}

/* Leaves and removes the scratch directory. */
static int group_teardown(void **state)
{
    (void)state;
    if (chdir(s_oldcwd) != 0)
        return -1;
    return tu_rm_rf(s_tmpdir);
}

/* Loads the test table from file and overrides into c. */
static int load(tcfg_t *c, const char *file, char *const *sets, size_t n, char *err, size_t errlen)
{
    memset(c, 0xa5, sizeof *c); /* garbage: cfg_load must not free or read it */
    cfg_spec_t spec = {s_table, c, NULL, NULL};
    return cfg_load(&spec, file, sets, n, err, errlen);
}

/* Frees c's strings. */
static void unload(tcfg_t *c)
{
    cfg_spec_t spec = {s_table, c, NULL, NULL};
    cfg_free(&spec);
}

/* Asserts that every string field is NULL (after a failed load or cfg_free). */
static void assert_strings_null(const tcfg_t *c)
{
    assert_null(c->listen);
    assert_null(c->admin_listen);
    assert_null(c->cert);
    assert_null(c->admin_token);
    assert_null(c->gw_listen);
    assert_null(c->bus_ep);
    assert_null(c->bus_remote);
    assert_null(c->db);
    assert_null(c->mysql_url);
}

static void test_defaults(void **state)
{
    (void)state;
    tcfg_t c;
    char err[256];
    char *sets[] = {"tunnel.listen=0.0.0.0:8443"};
    assert_int_equal(load(&c, NULL, sets, 1, err, sizeof err), 0);
    assert_string_equal(err, "");
    assert_string_equal(c.listen, "0.0.0.0:8443");
    assert_string_equal(c.admin_listen, "127.0.0.1:8444");
    assert_string_equal(c.gw_listen, "127.0.0.1:8080");
    /* Without a file, relative paths stay relative (to the current directory). */
    assert_string_equal(c.cert, "hub.crt");
    assert_string_equal(c.admin_token, "");
    assert_int_equal(c.heartbeat, 15000);
    assert_int_equal(c.max_body, 32 * MIB);
    assert_int_equal(c.workers, 4);
    assert_false(c.tls);
    assert_string_equal(c.bus_ep, "ipc://bus.sock");
    assert_string_equal(c.bus_remote, "tcp://127.0.0.1:5555");
    assert_int_equal(c.level, LOG_LVL_INFO);
    assert_int_equal(c.offset, -5);
    assert_string_equal(c.db, "/var/lib/relayhub/hub.db");
    assert_string_equal(c.mysql_url, "");
    unload(&c);
    assert_strings_null(&c);
    unload(&c); /* twice is harmless */
}

static void test_required(void **state)
{
    (void)state;
    tcfg_t c;
    char err[256];
    assert_int_equal(load(&c, NULL, NULL, 0, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "tunnel.listen: required"));
    assert_null(strchr(err, '\n'));
    assert_strings_null(&c);

    tu_write_text("req.conf", "[tunnel]\nheartbeat = 20s\n");
    assert_int_equal(load(&c, "req.conf", NULL, 0, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "req.conf: tunnel.listen: required"));
    assert_strings_null(&c);

    /* An empty value counts as given: "" means off for a listener. */
    tu_write_text("req2.conf", "[tunnel]\nlisten =\n");
    assert_int_equal(load(&c, "req2.conf", NULL, 0, err, sizeof err), 0);
    assert_string_equal(c.listen, "");
    unload(&c);
}

static const cfg_entry_t s_small[] = {
    {"a", "ms", CFG_MS, offsetof(tcfg_t, heartbeat), "0", NULL, 0, 0},
    {"a", "bytes", CFG_BYTES, offsetof(tcfg_t, max_body), "0", NULL, 0, 0},
    {"a", "int", CFG_INT, offsetof(tcfg_t, offset), "0", NULL, 0, 0},
    {"a", "bool", CFG_BOOL, offsetof(tcfg_t, tls), "no", NULL, 0, 0},
    {"a", "level", CFG_LEVEL, offsetof(tcfg_t, level), "warn", NULL, 0, 0},
    {"a", "listen", CFG_LISTEN, offsetof(tcfg_t, listen), "", NULL, 0, 0},
    CFG_END,
};

/* Loads one "a.key=value" override into the unbounded s_small table. */
static int load_small(tcfg_t *c, const char *set, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    char *sets[] = {(char *)set};
    cfg_spec_t spec = {s_small, c, NULL, NULL};
    return cfg_load(&spec, NULL, sets, set ? 1 : 0, err, errlen);
}

/* Frees what load_small loaded. */
static void unload_small(tcfg_t *c)
{
    cfg_spec_t spec = {s_small, c, NULL, NULL};
    cfg_free(&spec);
}

static void test_value_syntax(void **state)
{
    (void)state;
    static const struct {
        const char *set;
        int64_t want;
    } ms[] = {{"a.ms=0", 0},       {"a.ms=250", 250},    {"a.ms=500ms", 500}, {"a.ms=15s", 15000},
              {"a.ms=2m", 120000}, {"a.ms=1h", 3600000}, {"a.ms=15 s", 15000}},
      bytes[] = {{"a.bytes=4096", 4096},       {"a.bytes=256KiB", 256 * 1024},
                 {"a.bytes=32MiB", 32 * MIB},  {"a.bytes=1GiB", GIB},
                 {"a.bytes=4k", 4096},         {"a.bytes=2M", 2 * MIB},
                 {"a.bytes=1tib", GIB * 1024}, {"a.bytes=7B", 7}},
      ints[] = {{"a.int=0", 0},
                {"a.int=-17", -17},
                {"a.int=+42", 42},
                {"a.int=9223372036854775807", INT64_MAX},
                {"a.int=-9223372036854775808", INT64_MIN}};
    tcfg_t c;
    char err[256];
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        assert_int_equal(load_small(&c, ms[i].set, err, sizeof err), 0);
        assert_int_equal(c.heartbeat, ms[i].want);
        unload_small(&c);
    }
    for (size_t i = 0; i < sizeof bytes / sizeof bytes[0]; i++) {
        assert_int_equal(load_small(&c, bytes[i].set, err, sizeof err), 0);
        assert_int_equal(c.max_body, bytes[i].want);
        unload_small(&c);
    }
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        assert_int_equal(load_small(&c, ints[i].set, err, sizeof err), 0);
        assert_true(c.offset == ints[i].want);
        unload_small(&c);
    }
    static const char *const yes[] = {"true", "yes", "on", "1", "TRUE", "Yes"};
    static const char *const no[] = {"false", "no", "off", "0", "OFF"};
    char set[64];
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        snprintf(set, sizeof set, "a.bool=%s", yes[i]);
        assert_int_equal(load_small(&c, set, err, sizeof err), 0);
        assert_true(c.tls);
        unload_small(&c);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        snprintf(set, sizeof set, "a.bool=%s", no[i]);
        c.tls = true;
        assert_int_equal(load_small(&c, set, err, sizeof err), 0);
        assert_false(c.tls);
        unload_small(&c);
    }
    static const char *const levels[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        snprintf(set, sizeof set, "a.level=%s", levels[i]);
        assert_int_equal(load_small(&c, set, err, sizeof err), 0);
        assert_int_equal(c.level, i);
        unload_small(&c);
    }
    /* The default of s_small's level is "warn". */
    assert_int_equal(load_small(&c, NULL, err, sizeof err), 0);
    assert_int_equal(c.level, LOG_LVL_WARN);
    unload_small(&c);

    static const char *const bad[] = {
        "a.ms=",
        "a.ms=15x",
        "a.ms=-1s",
        "a.ms=1.5s",
        "a.ms=s",
        "a.ms=99999999999999999999",
        "a.ms=9223372036854775807h",
        "a.bytes=32MB",
        "a.bytes=-1",
        "a.bytes=1 GiBs",
        "a.bytes=99999999999999999999999",
        "a.int=",
        "a.int=12a",
        "a.int=0x10",
        "a.int= 5",
        "a.int=-",
        "a.int=9223372036854775808",
        "a.int=-9223372036854775809",
        "a.bool=maybe",
        "a.bool=",
        "a.level=verbose",
        "a.level=INFO",
        "a.listen=8443",
        "a.listen=:80",
        "a.listen=[::1]:80000",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = load_small(&c, bad[i], err, sizeof err);
        if (rc != -EINVAL)
            fail_msg("%s accepted (rc %d)", bad[i], rc);
        /* The message names the key. */
        char key[32];
        const char *eq = strchr(bad[i], '=');
        snprintf(key, sizeof key, "%.*s: ", (int)(eq - bad[i]), bad[i]);
        if (!strstr(err, key))
            fail_msg("%s: error \"%s\" does not name the key", bad[i], err);
        assert_null(strchr(err, '\n'));
    }
}

static void test_file_values(void **state)
{
    (void)state;
    tcfg_t c;
    char err[256];
    char want[PATH_MAX + 64];
    tu_write_text("full.conf", "# relayhub hub\n"
                               "[tunnel]\n"
                               "listen = 127.0.0.1:9443\n"
                               "admin_token = s3cret\n"
                               "heartbeat = 90s\n"
                               "cert = certs/hub.crt\n"
                               "[gateway]\n"
                               "max_body_bytes = 256KiB\n"
                               "workers = 64\n"
                               "tls = yes\n"
                               "listen = [::1]:0\n"
                               "[bus]\n"
                               "endpoint = ipc://run/bus.sock\n"
                               "remote = tcp://10.0.0.1:7000\n"
                               "[log]\n"
                               "level = debug\n"
                               "offset = -9223372036854775808\n"
                               "[store]\n"
                               "path = /srv/hub.db\n"
                               "[billing]\n"
                               "whatever = ignored by this process\n");
    assert_int_equal(load(&c, "full.conf", NULL, 0, err, sizeof err), 0);
    assert_string_equal(c.listen, "127.0.0.1:9443");
    assert_string_equal(c.admin_listen, "127.0.0.1:8444");
    assert_string_equal(c.admin_token, "s3cret");
    assert_int_equal(c.heartbeat, 90000);
    snprintf(want, sizeof want, "%s/certs/hub.crt", s_tmpdir);
    assert_string_equal(c.cert, want);
    assert_int_equal(c.max_body, 256 * 1024);
    assert_int_equal(c.workers, 64);
    assert_true(c.tls);
    assert_string_equal(c.gw_listen, "[::1]:0");
    snprintf(want, sizeof want, "ipc://%s/run/bus.sock", s_tmpdir);
    assert_string_equal(c.bus_ep, want);
    assert_string_equal(c.bus_remote, "tcp://10.0.0.1:7000");
    assert_int_equal(c.level, LOG_LVL_DEBUG);
    assert_true(c.offset == INT64_MIN);
    assert_string_equal(c.db, "/srv/hub.db");
    assert_string_equal(c.mysql_url, "");
    unload(&c);
    assert_strings_null(&c);
}

static void test_relative_paths(void **state)
{
    (void)state;
    tcfg_t c;
    char err[256];
    char want[PATH_MAX + 64];
    assert_int_equal(mkdir("sub", 0700), 0);
    tu_write_text("sub/hub.conf", "[tunnel]\nlisten = h:1\n[bus]\nremote = ipc:///run/x.sock\n");
    /* Defaults resolve against the config file's directory too. */
    assert_int_equal(load(&c, "sub/hub.conf", NULL, 0, err, sizeof err), 0);
    snprintf(want, sizeof want, "%s/sub/hub.crt", s_tmpdir);
    assert_string_equal(c.cert, want);
    snprintf(want, sizeof want, "ipc://%s/sub/bus.sock", s_tmpdir);
    assert_string_equal(c.bus_ep, want);
    assert_string_equal(c.bus_remote, "ipc:///run/x.sock"); /* absolute stays */
    assert_string_equal(c.db, "/var/lib/relayhub/hub.db");
    unload(&c);

    /* The same file named by an absolute path gives the same result; so do --set values. */
    char abs[PATH_MAX + 64];
    snprintf(abs, sizeof abs, "%s/sub/hub.conf", s_tmpdir);
    char *sets[] = {"tunnel.cert=../other.crt", "bus.endpoint=ipc://@abstract", "store.path="};
    assert_int_equal(load(&c, abs, sets, 3, err, sizeof err), 0);
    snprintf(want, sizeof want, "%s/sub/../other.crt", s_tmpdir);
    assert_string_equal(c.cert, want);
    assert_string_equal(c.bus_ep, "ipc://@abstract");
    assert_string_equal(c.db, "");
    unload(&c);
}

static void test_merge_and_syntax(void **state)
{
    (void)state;
    tcfg_t c;
    char err[256];
    tu_write_text("merge.conf", "\xef\xbb\xbf; a comment after a BOM\r\n"
                                "[tunnel]\r\n"
                                "listen = 1.2.3.4:1\r\n"
                                "heartbeat = 20s\r\n"
                                "\r\n"
                                "[gateway]   # trailing comment\n"
                                "workers=2\n"
                                "  [ tunnel ]  \n"
                                "\tlisten\t=\t  5.6.7.8:2   \n"
                                "admin_token = \"  a # b ; c  \"   # quoted keeps it all\n"
                                "[gateway]\n"
                                "workers = 3 ; inline comment\n"
                                "[store]\n"
                                "mysql_url = mysql://u:p@h/db#frag\n"
                                "[bus]\n"
                                "endpoint = \"\"\n"
                                "[log]\n"
                                "# level = error\n"
                                "   ; offset = 1\n"
                                "offset = 7");
    assert_int_equal(load(&c, "merge.conf", NULL, 0, err, sizeof err), 0);
    assert_string_equal(c.listen, "5.6.7.8:2"); /* a later value wins */
    assert_int_equal(c.heartbeat, 20000);       /* earlier [tunnel] keys survive the merge */
    assert_int_equal(c.workers, 3);
    assert_string_equal(c.admin_token, "  a # b ; c  ");
    assert_string_equal(c.mysql_url, "mysql://u:p@h/db#frag"); /* '#' inside a word is data */
    assert_string_equal(c.bus_ep, "");
    assert_int_equal(c.level, LOG_LVL_INFO);
    assert_int_equal(c.offset, 7); /* last line without a newline */
    unload(&c);
}

/* One error case: file content (NULL = no file), overrides, the expected message. */
typedef struct {
    const char *content; /* written to hub.conf */
    const char *set;     /* one override or NULL */
    const char *expect;  /* exact message, or prefix when prefix is set */
    int prefix;          /* compare only the start */
    int rc;              /* expected return */
} err_case_t;

static void test_errors(void **state)
{
    (void)state;
    char longline[5000];
    char longcase[5200];
    memset(longline, 'x', 4097);
    longline[4097] = '\0';
    snprintf(longcase, sizeof longcase, "[tunnel]\nlisten = h:1\nadmin_token = %s\n",
             longline + 14);
    const err_case_t cases[] = {
        {"[tunnel]\nlisten = h:1\n\n\n\n\n\n\n\n\n\nheartbeat = 15x\n", NULL,
         "hub.conf:12: tunnel.heartbeat: not a duration (\"15x\")", 1, -EINVAL},
        {"[tunnel]\nlisten = h:1\nlisen = h:2\n", NULL,
         "hub.conf:3: unknown key tunnel.lisen in section [tunnel]", 0, -EINVAL},
        {"[tunnel]\nlisten = h:1\n", "tunnel.foo=1", "--set tunnel.foo=1: unknown key tunnel.foo",
         0, -EINVAL},
        {"[tunnel]\nlisten = h:1\n", "nosuch.key=1", "--set nosuch.key=1: unknown key nosuch.key",
         0, -EINVAL},
        {"[tunnel]\nlisten = h:1\n", "tunnel.heartbeat=15x",
         "--set tunnel.heartbeat=15x: tunnel.heartbeat: not a duration (\"15x\")", 1, -EINVAL},
        {"[tunnel]\nlisten = h:1\n", "tunnel", "--set tunnel: expected section.key=value", 0,
         -EINVAL},
        {"[tunnel]\nlisten = h:1\n", "listen=h:2", "--set listen=h:2: expected section.key=value",
         0, -EINVAL},
        {"[tunnel]\nlisten = h:1\n", ".listen=h:2", "--set .listen=h:2: expected section.key=value",
         0, -EINVAL},
        {"[gateway]\nworkers = 65\n[tunnel]\nlisten=h:1\n", NULL,
         "hub.conf:2: gateway.workers: \"65\" is out of range [1, 64]", 0, -EINVAL},
        {"[tunnel]\nlisten = h:1\nheartbeat = 999ms\n", NULL,
         "hub.conf:3: tunnel.heartbeat: \"999ms\" is out of range [1000, 600000] ms", 0, -EINVAL},
        {"[tunnel]\nlisten = h:1\n", "gateway.max_body_bytes=2GiB",
         "--set gateway.max_body_bytes=2GiB: gateway.max_body_bytes: \"2GiB\" is out of range "
         "[1, 1073741824] bytes",
         0, -EINVAL},
        {"[gateway]\nworkers = four\n", NULL,
         "hub.conf:2: gateway.workers: not an integer (\"four\")", 0, -EINVAL},
        {"[gateway]\ntls = maybe\n", NULL, "hub.conf:2: gateway.tls: not a boolean (\"maybe\")", 1,
         -EINVAL},
        {"[log]\nlevel = loud\n", NULL, "hub.conf:2: log.level: not a log level (\"loud\")", 1,
         -EINVAL},
        {"[tunnel]\nlisten = 8443\n", NULL, "hub.conf:2: tunnel.listen: not HOST:PORT (\"8443\")",
         1, -EINVAL},
        {"[tunnel]\nlisten = h:1\n[bus]\nendpoint = http://x\n", NULL,
         "hub.conf:4: bus.endpoint: not an endpoint (\"http://x\")", 1, -EINVAL},
        {"[tunnel]\nlisten = h:1\n[bus]\nendpoint = ipc://\n", NULL,
         "hub.conf:4: bus.endpoint: not an endpoint (\"ipc://\")", 1, -EINVAL},
        {"[tunnel\nlisten = h:1\n", NULL, "hub.conf:1: missing ']' in section header", 0, -EINVAL},
        {"[tunnel]\nlisten h:1\n", NULL, "hub.conf:2: expected key = value (\"listen h:1\")", 0,
         -EINVAL},
        {longcase, NULL, "hub.conf:3: line longer than 4096 bytes", 0, -EINVAL},
        {"[tunnel]\nlisten = \"h:1\n", NULL, "hub.conf:2: tunnel.listen: missing closing quote", 0,
         -EINVAL},
        {"[tunnel]\nlisten = \"h:1\" x\n", NULL,
         "hub.conf:2: tunnel.listen: text after closing quote", 0, -EINVAL},
        {"listen = h:1\n", NULL, "hub.conf:1: key listen before any [section]", 0, -EINVAL},
        {"[tunnel]\nlis ten = h:1\n", NULL, "hub.conf:2: bad key name \"lis ten\"", 1, -EINVAL},
        {"[tun nel]\n", NULL, "hub.conf:1: bad section name \"tun nel\"", 1, -EINVAL},
        {"[]\n", NULL, "hub.conf:1: bad section name \"\"", 1, -EINVAL},
        {"[tunnel] x\n", NULL, "hub.conf:1: text after section header (\"x\")", 0, -EINVAL},
        {"[tunnel]\n= h:1\n", NULL, "hub.conf:2: bad key name \"\"", 1, -EINVAL},
        {"[tunnel]\nlisten = \x01\x1b[31m\n", NULL,
         "hub.conf:2: tunnel.listen: not HOST:PORT (\"??[31m\")", 1, -EINVAL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tcfg_t c;
        char err[512];
        char *sets[] = {(char *)cases[i].set};
        tu_write_text("hub.conf", cases[i].content);
        int rc = load(&c, "hub.conf", sets, cases[i].set ? 1 : 0, err, sizeof err);
        if (rc != cases[i].rc)
            fail_msg("case %zu: rc %d, want %d (%s)", i, rc, cases[i].rc, err);
        int ok = cases[i].prefix ? strncmp(err, cases[i].expect, strlen(cases[i].expect)) == 0
                                 : strcmp(err, cases[i].expect) == 0;
        if (!ok)
            fail_msg("case %zu:\n got  %s\n want %s", i, err, cases[i].expect);
        assert_null(strchr(err, '\n'));
        assert_strings_null(&c);
    }

    /* A line of exactly 4096 bytes is fine. */
    tcfg_t c;
    char err[256];
    char exact[5200];
    memset(longline, 'y', 4096);
    longline[4096] = '\0';
    snprintf(exact, sizeof exact, "[tunnel]\nlisten = h:1\nadmin_token = %s\n", longline + 14);
    tu_write_text("hub.conf", exact);
    assert_int_equal(load(&c, "hub.conf", NULL, 0, err, sizeof err), 0);
    assert_int_equal(strlen(c.admin_token), 4096 - 14);
    unload(&c);

    /* A NUL byte inside a line. */
    FILE *f = fopen("nul.conf", "wb");
    assert_non_null(f);
    fwrite("[tunnel]\nlisten = h\0:1\n", 1, 23, f);
    fclose(f);
    assert_int_equal(load(&c, "nul.conf", NULL, 0, err, sizeof err), -EINVAL);
    assert_string_equal(err, "nul.conf:2: NUL byte in line");

    /* A missing file, and an error buffer too small for the whole line. */
    assert_int_equal(load(&c, "nosuch.conf", NULL, 0, err, sizeof err), -ENOENT);
    assert_string_equal(err, "nosuch.conf: No such file or directory");
    char tiny[8];
    assert_int_equal(load(&c, "nosuch.conf", NULL, 0, tiny, sizeof tiny), -ENOENT);
    assert_string_equal(tiny, "nosuch.");
    assert_int_equal(load(&c, "nosuch.conf", NULL, 0, NULL, 0), -ENOENT);

    /* A very long value is shortened in the message. */
    char longset[300];
    memset(longset, 0, sizeof longset);
    memcpy(longset, "tunnel.heartbeat=", 17);
    memset(longset + 17, '9', 200);
    longset[217] = 'x';
    char *sets[] = {"tunnel.listen=h:1", longset};
    assert_int_equal(load(&c, NULL, sets, 2, err, sizeof err), -EINVAL);
    assert_true(strlen(err) < 240); /* both copies of the value are cut to 64 bytes */
    assert_non_null(strstr(err, "...: tunnel.heartbeat: not a duration"));
}

static void test_set_precedence(void **state)
{
    (void)state;
    tcfg_t c;
    char err[256];
    tu_write_text("prec.conf", "[tunnel]\nlisten = h:1\n[gateway]\nworkers = 8\ntls = on\n");
    char *sets[] = {"gateway.workers=16", "gateway.workers=32", "tunnel.listen=[::]:443",
                    "gateway.tls=off", "tunnel.admin_token=a=b=c"};
    assert_int_equal(load(&c, "prec.conf", sets, 5, err, sizeof err), 0);
    assert_int_equal(c.workers, 32);
    assert_string_equal(c.listen, "[::]:443");
    assert_false(c.tls);
    assert_string_equal(c.admin_token, "a=b=c"); /* only the first '=' splits */
    unload(&c);

    /* --set can provide a required key. */
    char *sets2[] = {"tunnel.listen=h:2"};
    tu_write_text("prec2.conf", "[gateway]\nworkers = 8\n");
    assert_int_equal(load(&c, "prec2.conf", sets2, 1, err, sizeof err), 0);
    assert_string_equal(c.listen, "h:2");
    assert_int_equal(c.workers, 8);
    unload(&c);
}

/* What the unknown-section callback saw. */
typedef struct {
    char log[1024]; /* "section|key|value|line;" per call */
    int calls;      /* number of calls */
} cb_seen_t;

/* Records every key of an unknown section; rejects vendor "bogus". */
static int instance_cb(void *arg, const char *section, const char *key, const char *value, int line,
                       char *err, size_t errlen)
{
    cb_seen_t *seen = arg;
    size_t o = strlen(seen->log);
    snprintf(seen->log + o, sizeof seen->log - o, "%s|%s|%s|%d;", section, key, value, line);
    seen->calls++;
    if (strcmp(key, "vendor") == 0 && strcmp(value, "bogus") == 0) {
        snprintf(err, errlen, "%s.%s: unknown vendor \"%s\"", section, key, value);
        return -1;
    }
    return 0;
}

static void test_unknown_section_cb(void **state)
{
    (void)state;
    tcfg_t c;
    char err[256];
    cb_seen_t seen;
    memset(&seen, 0, sizeof seen);
    cfg_spec_t spec = {s_table, &c, instance_cb, &seen};
    tu_write_text("agent.conf", "[tunnel]\nlisten = h:1\n"
                                "[instance.openai-main]\nvendor = openai\nmodels = \"gpt-4o, o3\"\n"
                                "[instance.claude]\nvendor = anthropic\n"
                                "[instance.openai-main]\nmax_concurrency = 4\n");
    char *sets[] = {"instance.claude.api_key=sk-x", "instance.new.vendor=gemini"};
    memset(&c, 0, sizeof c);
    assert_int_equal(cfg_load(&spec, "agent.conf", sets, 2, err, sizeof err), 0);
    assert_int_equal(seen.calls, 6);
    assert_string_equal(seen.log, "instance.openai-main|vendor|openai|4;"
                                  "instance.openai-main|models|gpt-4o, o3|5;"
                                  "instance.claude|vendor|anthropic|7;"
                                  "instance.openai-main|max_concurrency|4|9;"
                                  "instance.claude|api_key|sk-x|0;"
                                  "instance.new|vendor|gemini|0;");
    cfg_free(&spec);

    /* The callback's error gets the file and line in front. */
    tu_write_text("agent.conf", "[tunnel]\nlisten = h:1\n[instance.x]\nvendor = bogus\n");
    memset(&seen, 0, sizeof seen);
    assert_int_equal(cfg_load(&spec, "agent.conf", NULL, 0, err, sizeof err), -EINVAL);
    assert_string_equal(err, "agent.conf:4: instance.x.vendor: unknown vendor \"bogus\"");
    assert_null(c.listen);
    char *bad[] = {"instance.y.vendor=bogus"};
    tu_write_text("agent.conf", "[tunnel]\nlisten = h:1\n");
    assert_int_equal(cfg_load(&spec, "agent.conf", bad, 1, err, sizeof err), -EINVAL);
    assert_string_equal(
        err, "--set instance.y.vendor=bogus: instance.y.vendor: unknown vendor \"bogus\"");

    /* Unknown keys in known sections never reach the callback. */
    tu_write_text("agent.conf", "[tunnel]\nlisten = h:1\nnope = 1\n");
    memset(&seen, 0, sizeof seen);
    assert_int_equal(cfg_load(&spec, "agent.conf", NULL, 0, err, sizeof err), -EINVAL);
    assert_int_equal(seen.calls, 0);
    assert_string_equal(err, "agent.conf:3: unknown key tunnel.nope in section [tunnel]");
}

/* Runs cfg_print_help into a malloc'd string. */
static char *help_text(const cfg_entry_t *table)
{
    /* static: the stream keeps their addresses until fclose */
    static char *buf;
    static size_t len;
    buf = NULL;
    len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    cfg_print_help(table, f);
    assert_int_equal(fclose(f), 0);
    return buf;
}

static void test_help(void **state)
{
    (void)state;
    char *h = help_text(s_table);
    for (size_t i = 0; s_table[i].section; i++) {
        char line[256];
        const char *def = s_table[i].def ? s_table[i].def : "(required)";
        if (s_table[i].def && !*s_table[i].def)
            def = "\"\"";
        snprintf(line, sizeof line, "\n  %s.%s = %s ", s_table[i].section, s_table[i].key, def);
        if (!strstr(h, line)) {
            /* An entry without help text ends its line right after the default. */
            snprintf(line, sizeof line, "\n  %s.%s = %s\n", s_table[i].section, s_table[i].key,
                     def);
            if (!strstr(h, line))
                fail_msg("help lacks %s.%s:\n%s", s_table[i].section, s_table[i].key, h);
        }
        if (s_table[i].help)
            assert_non_null(strstr(h, s_table[i].help));
    }
    /* Grouped: each section header once, and tunnel's keys before [gateway]. */
    assert_ptr_equal(strstr(h, "[tunnel]\n"), h);
    char *gw = strstr(h, "[gateway]\n");
    assert_non_null(gw);
    assert_null(strstr(gw + 1, "[gateway]\n"));
    assert_true(strstr(h, "tunnel.heartbeat") < gw);
    assert_true(strstr(h, "gateway.listen") > gw);
    assert_non_null(strstr(h, "[bus]\n"));
    assert_non_null(strstr(h, "[log]\n"));
    assert_non_null(strstr(h, "[store]\n"));
    /* Help texts line up. */
    const char *a = strstr(h, "agent tunnel listener");
    const char *b = strstr(h, "ping interval");
    size_t col_a = 0, col_b = 0;
    for (const char *p = a; p > h && p[-1] != '\n'; p--)
        col_a++;
    for (const char *p = b; p > h && p[-1] != '\n'; p--)
        col_b++;
    assert_int_equal(col_a, col_b);
    free(h);
}

static void test_cli(void **state)
{
    (void)state;
    cfg_cli_t cli;
    char err[256];
    static const char *const extra[] = {"--dir", "--hub", NULL};

    char *argv1[] = {"agent", "init",        "--config", "a.conf", "--set",
                     "x.y=1", "--set=z.w=2", "--dir",    "/tmp/d", "--hub=wss://h:1/t",
                     "word",  "-",           "-5",       "--",     "--version",
                     NULL};
    assert_int_equal(cfg_cli_parse(&cli, 15, argv1, 1, extra, err, sizeof err), 0);
    assert_string_equal(cli.config, "a.conf");
    assert_int_equal(cli.n_sets, 2);
    assert_string_equal(cli.sets[0], "x.y=1");
    assert_string_equal(cli.sets[1], "z.w=2");
    assert_false(cli.help);
    assert_false(cli.version); /* after "--" it is a word */
    assert_int_equal(cli.n_args, 9);
    const char *want[] = {"init", "--dir", "/tmp/d", "--hub",    "wss://h:1/t",
                          "word", "-",     "-5",     "--version"};
    for (size_t i = 0; i < 9; i++)
        assert_string_equal(cli.args[i], want[i]);
    assert_string_equal(cfg_cli_opt(&cli, "--dir"), "/tmp/d");
    assert_string_equal(cfg_cli_opt(&cli, "--hub"), "wss://h:1/t");
    assert_null(cfg_cli_opt(&cli, "--pin"));
    cfg_cli_free(&cli);
    assert_int_equal(cli.n_args, 0);
    cfg_cli_free(&cli);

    char *argv2[] = {"p",     "--config=b.conf", "-h",       "--version", "--dir",
                     "--hub", "--dir=2",         "--config", "c.conf",    NULL};
    assert_int_equal(cfg_cli_parse(&cli, 9, argv2, 1, extra, err, sizeof err), 0);
    assert_string_equal(cli.config, "c.conf"); /* the last --config wins */
    assert_true(cli.help);
    assert_true(cli.version);
    /* "--hub" is the value of the first --dir, not an option; the last --dir wins. */
    assert_string_equal(cfg_cli_opt(&cli, "--dir"), "2");
    assert_null(cfg_cli_opt(&cli, "--hub"));
    cfg_cli_free(&cli);

    char *argv3[] = {"p", "--help", NULL};
    assert_int_equal(cfg_cli_parse(&cli, 2, argv3, 1, NULL, err, sizeof err), 0);
    assert_true(cli.help);
    assert_int_equal(cli.n_args, 0);
    assert_null(cli.config);
    cfg_cli_free(&cli);

    static const struct {
        const char *arg;
        const char *expect;
    } bad[] = {
        {"--bogus", "unknown option --bogus (see --help)"},
        {"--dirx=1", "unknown option --dirx=1 (see --help)"},
        {"-x", "unknown option -x (see --help)"},
        {"--config", "--config: missing value"},
        {"--config=", "--config: empty value"},
        {"--set", "--set: missing value"},
        {"--dir", "--dir: missing value"},
        {"--hub=", "--hub: empty value"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *argv[] = {"p", "w", (char *)bad[i].arg, NULL};
        assert_int_equal(cfg_cli_parse(&cli, 3, argv, 1, extra, err, sizeof err), -EINVAL);
        assert_string_equal(err, bad[i].expect);
        assert_int_equal(cli.n_args, 0); /* freed on failure */
        assert_null(cli.args);
    }
}

static void test_split_listen(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *host;
        int port;
    } good[] = {
        {"127.0.0.1:8443", "127.0.0.1", 8443},
        {"localhost:0", "localhost", 0},
        {"[::1]:80", "::1", 80},
        {"[::]:65535", "::", 65535},
        {"[fe80::1%eth0]:9", "fe80::1%eth0", 9},
        {"my-host_1.example.com:1", "my-host_1.example.com", 1},
        {"0.0.0.0:00080", "0.0.0.0", 80},
    };
    char host[64];
    int port;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        port = -1;
        assert_int_equal(cfg_split_listen(good[i].in, host, sizeof host, &port), 0);
        assert_string_equal(host, good[i].host);
        assert_int_equal(port, good[i].port);
    }
    static const char *const bad[] = {
        "",         ":80",      "host:",       "host",   "host:65536", "host:-1", "host:+80",
        "host:80x", "host: 80", "::1:80",      "[::1]",  "[::1]80",    "[]:80",   "[127.0.0.1]:80",
        "[::1:80",  "ho st:80", "host:800000", "h/x:80", "[::1]:",     "*:80",    "host:80:",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (cfg_split_listen(bad[i], host, sizeof host, &port) != -EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_int_equal(cfg_split_listen(NULL, host, sizeof host, &port), -EINVAL);
    /* The host buffer must hold the host and its NUL. */
    assert_int_equal(cfg_split_listen("abcd:1", host, 4, &port), -EINVAL);
    assert_int_equal(cfg_split_listen("abc:1", host, 4, &port), 0);
    assert_string_equal(host, "abc");
    /* Validation only. */
    assert_int_equal(cfg_split_listen("[::1]:5", NULL, 0, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_required),
        cmocka_unit_test(test_value_syntax),
        cmocka_unit_test(test_file_values),
        cmocka_unit_test(test_relative_paths),
        cmocka_unit_test(test_merge_and_syntax),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_set_precedence),
        cmocka_unit_test(test_unknown_section_cb),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_split_listen),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
