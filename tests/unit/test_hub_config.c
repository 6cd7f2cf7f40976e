/* Unit tests for lib/hub_config (hub.conf) and agent/ag_config (agent.conf). */
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

#include "ag_config.h"
#include "bus_log.h"
#include "hub_config.h"
#include "test_util.h"

#define GOOD_PIN "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
#define GOOD_URL "wss://hub.example.org:8443/tunnel/connect"

static char s_tmpdir[64];        /* this run's scratch directory */
static char s_realdir[PATH_MAX]; /* the same, with symlinks resolved */

/* Creates the scratch directory. */
static int group_setup(void **state)
{
    (void)state;
    if (tu_tmpdir_new(s_tmpdir, sizeof s_tmpdir, "test_hub_config") != 0)
        return -1;
    if (!realpath(s_tmpdir, s_realdir))
        return -1;
    return 0;
}

/* Removes the scratch directory. */
static int group_teardown(void **state)
{
    (void)state;
    return tu_rm_rf(s_tmpdir);
}

/* Writes text to <tmpdir>/<name> and returns the path in a static buffer. */
static const char *write_conf(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", s_tmpdir, name);
    tu_write_text(path, text);
    return path;
}

/* Asserts that err mentions every given word. */
static void assert_err_has(const char *err, const char *word)
{
    if (!strstr(err, word))
        fail_msg("error \"%s\" does not mention \"%s\"", err, word);
}

/* ---- hub.conf ---- */

static void test_hub_defaults_no_file(void **state)
{
    (void)state;
    hub_config_t c;
    char err[512] = "";
    assert_int_equal(hub_config_load(&c, NULL, NULL, 0, err, sizeof err), 0);
    assert_string_equal(err, "");
    assert_string_equal(c.store_backend, "sqlite");
    assert_string_equal(c.sqlite_path, "hub.db");
    assert_string_equal(c.mysql_url, "");
    assert_string_equal(c.tunnel_router, "ipc://tunnel.ipc");
    assert_string_equal(c.tunnel_presence, "ipc://presence.ipc");
    assert_string_equal(c.tunnel_name, "tunnel-1");
    assert_string_equal(c.tunnel_listen, "127.0.0.1:8443");
    assert_string_equal(c.tunnel_admin_listen, "127.0.0.1:8081");
    assert_string_equal(c.tunnel_metrics_listen, "127.0.0.1:9101");
    assert_string_equal(c.tunnel_cert, "hub.crt");
    assert_string_equal(c.tunnel_key, "hub.key");
    assert_string_equal(c.tunnel_admin_token, "");
    assert_int_equal(c.tunnel_heartbeat_ms, 15000);
    assert_int_equal(c.tunnel_dead_after_ms, 45000);
    assert_int_equal(c.tunnel_handshake_timeout_ms, 10000);
    assert_int_equal(c.tunnel_admin_timeout_ms, 5000);
    assert_int_equal(c.tunnel_max_agents, 20000);
    assert_true(c.tunnel_registry_poll_ms >= 50 && c.tunnel_registry_poll_ms <= 1000);
    assert_int_equal(c.tunnel_send_queue_bytes, 8 * 1024 * 1024);
    assert_int_equal(c.log_level, LOG_LVL_INFO);

    store_params_t sp;
    assert_int_equal(hub_config_store_params(&c, &sp, err, sizeof err), 0);
    assert_int_equal(sp.backend, STORE_SQLITE);
    assert_string_equal(sp.sqlite_path, "hub.db");
    hub_config_free(&c);
}

static void test_hub_file_and_overrides(void **state)
{
    (void)state;
    const char *path = write_conf("hub.conf", "# a hub\n"
                                              "[tunnel]\n"
                                              "name = tunnel-7\n"
                                              "heartbeat = 2s\n"
                                              "dead_after = 7s\n"
                                              "send_queue = 1MiB\n"
                                              "[log]\n"
                                              "level = debug\n");
    char *sets[] = {"tunnel.max_agents=10", "store.sqlite_path=/var/lib/x.db"};
    hub_config_t c;
    char err[512] = "";
    int rc = hub_config_load(&c, path, sets, 2, err, sizeof err);
    if (rc != 0)
        fail_msg("load: %s", err);
    assert_string_equal(c.tunnel_name, "tunnel-7");
    assert_int_equal(c.tunnel_heartbeat_ms, 2000);
    assert_int_equal(c.tunnel_dead_after_ms, 7000);
    assert_int_equal(c.tunnel_send_queue_bytes, 1024 * 1024);
    assert_int_equal(c.tunnel_max_agents, 10);
    assert_int_equal(c.log_level, LOG_LVL_DEBUG);
    assert_string_equal(c.sqlite_path, "/var/lib/x.db");
    /* Relative defaults resolve against the file's directory. */
    char want[PATH_MAX + 32];
    snprintf(want, sizeof want, "%s/hub.crt", s_realdir);
    assert_string_equal(c.tunnel_cert, want);
    snprintf(want, sizeof want, "ipc://%s/tunnel.ipc", s_realdir);
    assert_string_equal(c.tunnel_router, want);
    hub_config_free(&c);
}

static void test_hub_unknown_key_in_tunnel(void **state)
{
    (void)state;
    const char *path = write_conf("unknown.conf", "[tunnel]\nname = t\nhartbeat = 5s\n");
    hub_config_t c;
    char err[512] = "";
    assert_int_equal(hub_config_load(&c, path, NULL, 0, err, sizeof err), -EINVAL);
    assert_err_has(err, "hartbeat");
    assert_err_has(err, "tunnel");
    assert_err_has(err, ":3"); /* the line */
    hub_config_free(&c);

    /* The same through --set. */
    char *sets[] = {"tunnel.bogus=1"};
    err[0] = '\0';
    assert_int_equal(hub_config_load(&c, NULL, sets, 1, err, sizeof err), -EINVAL);
    assert_err_has(err, "tunnel.bogus");
    hub_config_free(&c);
}

static void test_hub_unknown_section_ignored(void **state)
{
    (void)state;
    /* Sections of processes this build does not know (a later version's) share the file. */
    const char *path = write_conf("shared.conf", "[future_service]\n"
                                                 "listen = 0.0.0.0:8080\n"
                                                 "anything_at_all = yes\n"
                                                 "[tunnel]\n"
                                                 "name = shared\n");
    hub_config_t c;
    char err[512] = "";
    int rc = hub_config_load(&c, path, NULL, 0, err, sizeof err);
    if (rc != 0)
        fail_msg("load: %s", err);
    assert_string_equal(c.tunnel_name, "shared");
    assert_string_equal(c.tunnel_listen, "127.0.0.1:8443"); /* [future_service] listen: not ours */
    hub_config_free(&c);
}

static void test_hub_dead_after_vs_heartbeat(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "[tunnel]\nheartbeat = 10s\ndead_after = 10s\n", /* equal */
        "[tunnel]\nheartbeat = 10s\ndead_after = 5s\n",  /* shorter */
        "[tunnel]\nheartbeat = 60s\n",                   /* longer than the 45 s default */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *path = write_conf("dead.conf", bad[i]);
        hub_config_t c;
        char err[512] = "";
        assert_int_equal(hub_config_load(&c, path, NULL, 0, err, sizeof err), -EINVAL);
        assert_err_has(err, "dead_after");
        assert_err_has(err, "heartbeat");
        hub_config_free(&c);
    }
    const char *path = write_conf("dead.conf", "[tunnel]\nheartbeat = 10s\ndead_after = 10001\n");
    hub_config_t c;
    char err[512] = "";
    int rc = hub_config_load(&c, path, NULL, 0, err, sizeof err);
    if (rc != 0)
        fail_msg("load: %s", err);
    assert_int_equal(c.tunnel_dead_after_ms, 10001);
    hub_config_free(&c);
}

static void test_hub_store_backend(void **state)
{
    (void)state;
    hub_config_t c;
    char err[512] = "";
    const char *path = write_conf("my.conf", "[store]\nbackend = mysql\n");
    assert_int_equal(hub_config_load(&c, path, NULL, 0, err, sizeof err), -EINVAL);
    assert_err_has(err, "mysql_url");
    hub_config_free(&c);

    path = write_conf("my.conf", "[store]\nbackend = mysql\n"
                                 "mysql_url = mysql://u:p@127.0.0.1:3306/hub\n");
    err[0] = '\0';
    int rc = hub_config_load(&c, path, NULL, 0, err, sizeof err);
    if (rc != 0)
        fail_msg("load: %s", err);
    store_params_t sp;
    assert_int_equal(hub_config_store_params(&c, &sp, err, sizeof err), 0);
    assert_int_equal(sp.backend, STORE_MYSQL);
    assert_string_equal(sp.mysql_url, "mysql://u:p@127.0.0.1:3306/hub");
    hub_config_free(&c);

    path = write_conf("my.conf", "[store]\nbackend = postgres\n");
    err[0] = '\0';
    assert_int_equal(hub_config_load(&c, path, NULL, 0, err, sizeof err), -EINVAL);
    assert_err_has(err, "store.backend");
    assert_err_has(err, "postgres");
    hub_config_free(&c);
}

/* ---- agent.conf ---- */

/* Loads agent.conf text; returns the rc and leaves cfg to the caller (free it). */
static int load_agent(ag_config_t *cfg, const char *text, char *err, size_t errlen)
{
    const char *path = write_conf("agent.conf", text);
    err[0] = '\0';
    return ag_config_load(cfg, path, NULL, 0, err, errlen);
}

static void test_agent_minimal(void **state)
{
    (void)state;
    ag_config_t c;
    char err[512];
    int rc = load_agent(&c, "[hub]\nurl = " GOOD_URL "\npin = " GOOD_PIN "\n", err, sizeof err);
    if (rc != 0)
        fail_msg("load: %s", err);
    assert_string_equal(c.hub_url, GOOD_URL);
    assert_string_equal(c.hub_pin, GOOD_PIN);
    assert_int_equal(c.reconnect_base_ms, 500);
    assert_int_equal(c.reconnect_cap_ms, 30000);
    assert_int_equal(c.reconnect_reset_ms, 60000);
    assert_int_equal(c.dead_after_ms, 45000);
    assert_string_equal(c.connect_to, "");
    assert_int_equal(c.n_instances, 0);
    assert_string_equal(c.dir, s_tmpdir);
    /* The default key file lives beside agent.conf. */
    char want[PATH_MAX + 32];
    snprintf(want, sizeof want, "%s/agent.key", s_realdir);
    assert_string_equal(c.key_file, want);
    ag_config_free(&c);
    assert_null(c.dir);
}

static void test_agent_required_and_bad_values(void **state)
{
    (void)state;
    static const struct {
        const char *text; /* agent.conf */
        const char *key;  /* the key the error must name */
    } cases[] = {
        {"[hub]\npin = " GOOD_PIN "\n", "hub.url"},
        {"[hub]\nurl = " GOOD_URL "\n", "hub.pin"},
        {"[hub]\nurl = ws://hub.example.org:8443/tunnel/connect\npin = " GOOD_PIN "\n", "hub.url"},
        {"[hub]\nurl = https://hub.example.org:8443/tunnel/connect\npin = " GOOD_PIN "\n",
         "hub.url"},
        {"[hub]\nurl = wss://hub.example.org/tunnel/connect\npin = " GOOD_PIN "\n", "hub.url"},
        {"[hub]\nurl = wss://:8443/tunnel/connect\npin = " GOOD_PIN "\n", "hub.url"},
        {"[hub]\nurl = wss://hub.example.org:0/\npin = " GOOD_PIN "\n", "hub.url"},
        {"[hub]\nurl = " GOOD_URL "\npin = sha256/tooshort\n", "hub.pin"},
        {"[hub]\nurl = " GOOD_URL "\npin = 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
         "hub.pin"},
        {"[hub]\nurl = " GOOD_URL "\npin = " GOOD_PIN "\nreconnect_base = soon\n",
         "hub.reconnect_base"},
        {"[hub]\nurl = " GOOD_URL "\npin = " GOOD_PIN "\nsurprise = 1\n", "hub.surprise"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ag_config_t c;
        char err[512];
        int rc = load_agent(&c, cases[i].text, err, sizeof err);
        if (rc != -EINVAL)
            fail_msg("case %zu: expected -EINVAL, got %d (%s)", i, rc, err);
        if (!strstr(err, cases[i].key))
            fail_msg("case %zu: error \"%s\" does not name %s", i, err, cases[i].key);
        ag_config_free(&c);
    }
}

static void test_agent_instances(void **state)
{
    (void)state;
    ag_config_t c;
    char err[512];
    int rc = load_agent(&c,
                        "[hub]\nurl = " GOOD_URL "\npin = " GOOD_PIN "\n"
                        "[instance.alpha]\nvendor = openai\nmodel = gpt\n"
                        "[instance.beta]\nvendor = anthropic\n"
                        "[instance.gamma]\nmodel = only-a-model\n"
                        "[instance.alpha]\nvendor = mistral\n", /* a later value wins */
                        err, sizeof err);
    if (rc != 0)
        fail_msg("load: %s", err);
    assert_int_equal(c.n_instances, 3);
    assert_string_equal(c.instances[0], "alpha");
    assert_string_equal(c.instance_vendor[0], "mistral");
    assert_string_equal(c.instances[1], "beta");
    assert_string_equal(c.instance_vendor[1], "anthropic");
    assert_string_equal(c.instances[2], "gamma");
    assert_null(c.instance_vendor[2]);
    ag_config_free(&c);
    assert_int_equal(c.n_instances, 0);

    /* Sections that are neither known nor instance.NAME are errors in agent.conf. */
    rc = load_agent(&c, "[hub]\nurl = " GOOD_URL "\npin = " GOOD_PIN "\n[bogus]\nx = 1\n", err,
                    sizeof err);
    assert_int_equal(rc, -EINVAL);
    assert_err_has(err, "bogus");
    ag_config_free(&c);
    rc = load_agent(&c, "[hub]\nurl = " GOOD_URL "\npin = " GOOD_PIN "\n[instance.]\nx = 1\n", err,
                    sizeof err);
    assert_int_equal(rc, -EINVAL);
    ag_config_free(&c);
}

static void test_agent_connect_to(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "api.openai.com:443:10.0.0.1:8443",
        "api.openai.com:443:127.0.0.1:8443,api.anthropic.com:443:192.168.1.5:9000",
        "api.openai.com:443:8.8.8.8:443",
        "api.openai.com:443:127.evil.example:443", /* a host name, resolved elsewhere */
        "api.openai.com:443:127.0.0.1.nip.io:443",
        "api.openai.com:443:127.0.0.1",          /* three fields */
        "api.openai.com:443:127.0.0.1:80:extra", /* five fields */
    };
    char err[512];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        if (ag_check_connect_to(bad[i], err, sizeof err) != -EINVAL)
            fail_msg("accepted %s", bad[i]);
        assert_err_has(err, "upstream.connect_to");
    }
    err[0] = '\0';
    assert_int_equal(ag_check_connect_to("api.openai.com:443:10.0.0.1:8443", err, sizeof err),
                     -EINVAL);
    assert_err_has(err, "10.0.0.1");

    static const char *const good[] = {
        "",
        "api.openai.com:443:127.0.0.1:8443",
        "api.openai.com:443:127.0.0.1:8443, api.anthropic.com:443:127.0.0.2:9443",
        "api.openai.com:443:127.255.255.254:1",
        "api.openai.com:443:localhost:8443",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        err[0] = '\0';
        if (ag_check_connect_to(good[i], err, sizeof err) != 0)
            fail_msg("refused %s: %s", good[i], err);
    }
    assert_int_equal(ag_check_connect_to(NULL, err, sizeof err), 0);

    /* Through the config file. */
    ag_config_t c;
    int rc = load_agent(&c,
                        "[hub]\nurl = " GOOD_URL "\npin = " GOOD_PIN "\n"
                        "[upstream]\nconnect_to = api.openai.com:443:10.0.0.1:8443\n",
                        err, sizeof err);
    assert_int_equal(rc, -EINVAL);
    assert_err_has(err, "connect_to");
    ag_config_free(&c);
    rc = load_agent(&c,
                    "[hub]\nurl = " GOOD_URL "\npin = " GOOD_PIN "\n"
                    "[upstream]\nconnect_to = api.openai.com:443:127.0.0.1:8443\n",
                    err, sizeof err);
    if (rc != 0)
        fail_msg("load: %s", err);
    assert_string_equal(c.connect_to, "api.openai.com:443:127.0.0.1:8443");
    ag_config_free(&c);
}

static void test_agent_key_file_paths(void **state)
{
    (void)state;
    ag_config_t c;
    char err[512], want[PATH_MAX + 32];
    int rc = load_agent(&c,
                        "[hub]\nurl = " GOOD_URL "\npin = " GOOD_PIN "\n"
                        "[identity]\nkey_file = keys/my.key\n",
                        err, sizeof err);
    if (rc != 0)
        fail_msg("load: %s", err);
    snprintf(want, sizeof want, "%s/keys/my.key", s_realdir);
    assert_string_equal(c.key_file, want);
    ag_config_free(&c);

    rc = load_agent(&c,
                    "[hub]\nurl = " GOOD_URL "\npin = " GOOD_PIN "\n"
                    "[identity]\nkey_file = /etc/relayhub/agent.key\n",
                    err, sizeof err);
    if (rc != 0)
        fail_msg("load: %s", err);
    assert_string_equal(c.key_file, "/etc/relayhub/agent.key");
    ag_config_free(&c);

    /* Without a file, --set alone: relative to the current directory, dir ".". */
    char *sets[] = {"hub.url=" GOOD_URL, "hub.pin=" GOOD_PIN};
    rc = ag_config_load(&c, NULL, sets, 2, err, sizeof err);
    if (rc != 0)
        fail_msg("load: %s", err);
    assert_string_equal(c.key_file, "agent.key");
    assert_string_equal(c.dir, ".");
    ag_config_free(&c);
}

static void test_agent_parse_hub_url(void **state)
{
    (void)state;
    char host[256], path[256];
    int port = 0;
    assert_int_equal(ag_parse_hub_url(GOOD_URL, host, sizeof host, &port, path, sizeof path), 0);
    assert_string_equal(host, "hub.example.org");
    assert_int_equal(port, 8443);
    assert_string_equal(path, "/tunnel/connect");
    assert_int_equal(
        ag_parse_hub_url("wss://[::1]:9443", host, sizeof host, &port, path, sizeof path), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 9443);
    assert_string_equal(path, "/");
    assert_int_equal(ag_parse_hub_url(NULL, host, sizeof host, &port, path, sizeof path), -EINVAL);
    assert_int_equal(ag_parse_hub_url("wss://", host, sizeof host, &port, path, sizeof path),
                     -EINVAL);
    assert_int_equal(ag_parse_hub_url("wss:///x", host, sizeof host, &port, path, sizeof path),
                     -EINVAL);
    assert_int_equal(ag_parse_hub_url("WSS://h:1/", host, sizeof host, &port, path, sizeof path),
                     -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hub_defaults_no_file),
        cmocka_unit_test(test_hub_file_and_overrides),
        cmocka_unit_test(test_hub_unknown_key_in_tunnel),
        cmocka_unit_test(test_hub_unknown_section_ignored),
        cmocka_unit_test(test_hub_dead_after_vs_heartbeat),
        cmocka_unit_test(test_hub_store_backend),
        cmocka_unit_test(test_agent_minimal),
        cmocka_unit_test(test_agent_required_and_bad_values),
        cmocka_unit_test(test_agent_instances),
        cmocka_unit_test(test_agent_connect_to),
        cmocka_unit_test(test_agent_key_file_paths),
        cmocka_unit_test(test_agent_parse_hub_url),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
