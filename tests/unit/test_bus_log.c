/* Unit tests for bus_log: every line on stderr is one valid JSON object with the fixed fields. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bus_log.h"
#include "test_util.h"

static int s_saved_fd = -1; /* the real stderr while capturing */
static int s_read_fd = -1;  /* read end of the capture pipe */

/* Starts sending fd 2 into a pipe. */
static void capture_begin(void)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    s_saved_fd = dup(STDERR_FILENO);
    assert_true(s_saved_fd >= 0);
    assert_int_equal(dup2(p[1], STDERR_FILENO), STDERR_FILENO);
    close(p[1]);
    s_read_fd = p[0];
}

/* Restores stderr and returns everything written meanwhile (malloc'd, NUL-terminated). */
static char *capture_end(size_t *len_out)
{
    assert_int_equal(dup2(s_saved_fd, STDERR_FILENO), STDERR_FILENO);
    close(s_saved_fd);
    char *buf = tu_read_fd(s_read_fd, len_out);
    close(s_read_fd);
    return buf;
}

/* Parses the single line in out (which must end with one newline) as a JSON object. */
static json_t *one_line(const char *out)
{
    size_t n = strlen(out);
    assert_true(n > 0);
    assert_int_equal(out[n - 1], '\n');
    assert_ptr_equal(strchr(out, '\n'), out + n - 1);
    json_error_t e;
    json_t *j = json_loadb(out, n - 1, 0, &e);
    if (!j)
        fail_msg("invalid JSON (%s): %s", e.text, out);
    assert_true(json_is_object(j));
    return j;
}

/* The string member key of j, or NULL. */
static const char *str_of(json_t *j, const char *key)
{
    return json_string_value(json_object_get(j, key));
}

/* Checks the fields every line carries. */
static void assert_common(json_t *j, const char *level, const char *event)
{
    const char *t = str_of(j, "time");
    assert_non_null(t);
    int y, mo, d, h, mi, s, us;
    char z = 0;
    assert_int_equal(sscanf(t, "%4d-%2d-%2dT%2d:%2d:%2d.%6d%c", &y, &mo, &d, &h, &mi, &s, &us, &z),
                     8);
    assert_int_equal(strlen(t), 27);
    assert_int_equal(z, 'Z');
    assert_true(y >= 2024 && mo >= 1 && mo <= 12 && d >= 1 && d <= 31);
    assert_string_equal(str_of(j, "level"), level);
    assert_string_equal(str_of(j, "event"), event);
    assert_non_null(str_of(j, "process"));
    assert_int_equal(json_integer_value(json_object_get(j, "pid")), getpid());
}

static int setup(void **state)
{
    (void)state;
    bus_log_level = LOG_LVL_DEBUG;
    bus_log_set_process("test-proc");
    return 0;
}

static void test_basic_line(void **state)
{
    (void)state;
    capture_begin();
    log_info("agent.connected", "hello %d %s", 42, "world");
    char *out = capture_end(NULL);
    json_t *j = one_line(out);
    assert_common(j, "info", "agent.connected");
    assert_string_equal(str_of(j, "process"), "test-proc");
    assert_string_equal(str_of(j, "msg"), "hello 42 world");
    assert_null(json_object_get(j, "req_id"));
    assert_null(json_object_get(j, "agent_id"));
    json_decref(j);
    free(out);

    /* No format: no msg member. */
    capture_begin();
    bus_log_write(LOG_LVL_ERR, "boot", NULL, NULL, NULL, NULL);
    out = capture_end(NULL);
    j = one_line(out);
    assert_common(j, "error", "boot");
    assert_null(json_object_get(j, "msg"));
    json_decref(j);
    free(out);
}

static void test_ids(void **state)
{
    (void)state;
    capture_begin();
    log_req(LOG_LVL_WARN, "req.done", "req-1", "agent-1", "took %d ms", 5);
    char *out = capture_end(NULL);
    json_t *j = one_line(out);
    assert_common(j, "warn", "req.done");
    assert_string_equal(str_of(j, "req_id"), "req-1");
    assert_string_equal(str_of(j, "agent_id"), "agent-1");
    json_decref(j);
    free(out);

    capture_begin();
    log_agent(LOG_LVL_DEBUG, "agent.ping", "agent-2", "rtt");
    out = capture_end(NULL);
    j = one_line(out);
    assert_common(j, "debug", "agent.ping");
    assert_string_equal(str_of(j, "agent_id"), "agent-2");
    assert_null(json_object_get(j, "req_id"));
    json_decref(j);
    free(out);

    capture_begin();
    bus_log_write(LOG_LVL_INFO, "req.start", "req-3", NULL, NULL, "x");
    out = capture_end(NULL);
    j = one_line(out);
    assert_string_equal(str_of(j, "req_id"), "req-3");
    assert_null(json_object_get(j, "agent_id"));
    json_decref(j);
    free(out);
}

static void test_extra_json(void **state)
{
    (void)state;
    capture_begin();
    bus_log_write(LOG_LVL_INFO, "conn.open", NULL, NULL, "\"peer\":\"127.0.0.1\",\"n\":3", "ok");
    char *out = capture_end(NULL);
    json_t *j = one_line(out);
    assert_string_equal(str_of(j, "peer"), "127.0.0.1");
    assert_int_equal(json_integer_value(json_object_get(j, "n")), 3);
    assert_string_equal(str_of(j, "msg"), "ok");
    json_decref(j);
    free(out);

    capture_begin();
    bus_log_write(LOG_LVL_INFO, "conn.open", NULL, NULL, "", NULL);
    out = capture_end(NULL);
    j = one_line(out);
    json_decref(j);
    free(out);
}

static int s_evaluated; /* how often an argument of a log call was evaluated */

/* An argument with a side effect. */
static int count_eval(void)
{
    return ++s_evaluated;
}

static void test_level_filter(void **state)
{
    (void)state;
    bus_log_level = LOG_LVL_WARN;
    s_evaluated = 0;
    capture_begin();
    log_debug("x.debug", "%d", count_eval());
    log_info("x.info", "%d", count_eval());
    log_warn("x.warn", "%d", count_eval());
    log_err("x.err", "%d", count_eval());
    char *out = capture_end(NULL);
    bus_log_level = LOG_LVL_DEBUG;
    /* Disabled lines are not formatted: their arguments are never evaluated. */
    assert_int_equal(s_evaluated, 2);
    assert_null(strstr(out, "x.debug"));
    assert_null(strstr(out, "x.info"));
    char *nl = strchr(out, '\n');
    assert_non_null(nl);
    char *first = strndup(out, (size_t)(nl - out + 1));
    json_t *a = one_line(first);
    free(first);
    json_t *b = one_line(nl + 1);
    assert_string_equal(str_of(a, "event"), "x.warn");
    assert_string_equal(str_of(a, "msg"), "1");
    assert_string_equal(str_of(b, "event"), "x.err");
    assert_string_equal(str_of(b, "msg"), "2");
    json_decref(a);
    json_decref(b);
    free(out);

    bus_log_level = LOG_LVL_ERR;
    capture_begin();
    log_warn("x.warn", "no");
    out = capture_end(NULL);
    assert_string_equal(out, "");
    free(out);
    bus_log_level = LOG_LVL_DEBUG;
}

static void test_parse_level(void **state)
{
    (void)state;
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        log_level_t l = LOG_LVL_ERR;
        assert_int_equal(bus_log_parse_level(names[i], &l), 0);
        assert_int_equal(l, i);
    }
    log_level_t l;
    assert_int_equal(bus_log_parse_level("INFO", &l), -EINVAL);
    assert_int_equal(bus_log_parse_level("verbose", &l), -EINVAL);
    assert_int_equal(bus_log_parse_level("", &l), -EINVAL);
}

static void test_escaping(void **state)
{
    (void)state;
    /* Quotes, backslashes, control characters, DEL, valid multi-byte UTF-8, and invalid UTF-8:
     * a stray continuation, an overlong form, a surrogate, a byte that never occurs, a sequence
     * cut short at the end. */
    const char *msg = "q\"b\\n\nr\rt\t\x01\x1f\x7f|\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80|"
                      "\x80|\xc0\xaf|\xed\xa0\x80|\xff|\xe2\x82";
    const char *want = "q\"b\\n\nr\rt\t\x01\x1f\x7f|\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80|"
                       "\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|"
                       "\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd";
    capture_begin();
    log_req(LOG_LVL_INFO, "ev\"ent\n", "r\"1", "a\\1", "%s", msg);
    char *out = capture_end(NULL);
    /* The line holds no raw control bytes at all. */
    for (const char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\n')
            fail_msg("raw control byte 0x%02x in %s", *p, out);
    json_t *j = one_line(out);
    assert_string_equal(str_of(j, "event"), "ev\"ent\n");
    assert_string_equal(str_of(j, "req_id"), "r\"1");
    assert_string_equal(str_of(j, "agent_id"), "a\\1");
    assert_string_equal(str_of(j, "msg"), want);
    json_decref(j);
    free(out);
}

static void test_process_name(void **state)
{
    (void)state;
    bus_log_set_process("we\"ird\\name");
    capture_begin();
    log_info("p", "x");
    char *out = capture_end(NULL);
    bus_log_set_process("test-proc");
    json_t *j = one_line(out);
    assert_string_equal(str_of(j, "process"), "we\"ird\\name");
    json_decref(j);
    free(out);

    bus_log_set_process(NULL);
    capture_begin();
    log_info("p", "x");
    out = capture_end(NULL);
    bus_log_set_process("test-proc");
    j = one_line(out);
    assert_string_equal(str_of(j, "process"), "relayhub");
    json_decref(j);
    free(out);
}

static void test_long_fields(void **state)
{
    (void)state;
    /* Every field far too long: the line is cut, but stays one valid JSON object that fits in
     * one atomic pipe write. */
    size_t n = 6000;
    char *big = malloc(n + 1);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = i % 7 == 0 ? '"' : (char)('a' + i % 26);
    big[n] = '\0';
    char *biguni = malloc(n + 1);
    assert_non_null(biguni);
    for (size_t i = 0; i + 2 <= n; i += 2)
        memcpy(biguni + i, "\xc3\xa9", 2);
    biguni[n] = '\0';

    const char *evs[] = {big, "short"};
    for (size_t k = 0; k < 2; k++) {
        capture_begin();
        bus_log_write(LOG_LVL_INFO, evs[k], big, biguni, "\"k\":1", "%s%s", biguni, big);
        bus_log_write(LOG_LVL_INFO, evs[k], NULL, NULL, NULL, "%s", big);
        bus_log_write(LOG_LVL_INFO, evs[k], NULL, NULL, NULL, "\x01%s", biguni);
        size_t len;
        char *out = capture_end(&len);
        char *line = out;
        for (int i = 0; i < 3; i++) {
            char *nl = strchr(line, '\n');
            assert_non_null(nl);
            size_t ll = (size_t)(nl - line) + 1;
            assert_true(ll <= 4096);
            char *copy = strndup(line, ll);
            json_t *j = one_line(copy);
            assert_non_null(str_of(j, "event"));
            json_decref(j);
            free(copy);
            line = nl + 1;
        }
        assert_int_equal(*line, '\0');
        free(out);
    }
    free(big);
    free(biguni);
}

static void test_many_writers(void **state)
{
    (void)state;
    /* Several processes share one stderr pipe: every line arrives whole. */
    char msg[3000];
    memset(msg, 'm', sizeof msg - 1);
    msg[sizeof msg - 1] = '\0';
    capture_begin();
    pid_t kids[4];
    for (int k = 0; k < 4; k++) {
        kids[k] = fork();
        assert_true(kids[k] >= 0);
        if (kids[k] == 0) {
            for (int i = 0; i < 50; i++)
                log_info("w", "%d %s", k, msg);
            _exit(0);
        }
    }
    /* Drain while the children write: the pipe holds only 64 KiB. */
    int saved = s_saved_fd;
    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    for (;;) {
        ssize_t r = read(s_read_fd, buf + len, cap - len);
        assert_true(r >= 0);
        if (r == 0)
            break;
        len += (size_t)r;
        assert_true(len < cap);
    }
    for (int k = 0; k < 4; k++) {
        int st;
        assert_int_equal(waitpid(kids[k], &st, 0), kids[k]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    close(saved);
    close(s_read_fd);
    buf[len] = '\0';
    int lines = 0;
    for (char *line = buf; *line;) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        json_error_t e;
        json_t *j = json_loadb(line, (size_t)(nl - line), 0, &e);
        if (!j)
            fail_msg("line %d broken: %s", lines, e.text);
        json_decref(j);
        lines++;
        line = nl + 1;
    }
    assert_int_equal(lines, 200);
    free(buf);
}

/* Checks that "\"" dst "\"" parses as one JSON string. */
static void assert_json_string(const char *dst)
{
    size_t n = strlen(dst);
    char *q = malloc(n + 3);
    assert_non_null(q);
    q[0] = '"';
    memcpy(q + 1, dst, n);
    q[n + 1] = '"';
    q[n + 2] = '\0';
    json_error_t e;
    json_t *j = json_loads(q, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!j || !json_is_string(j))
        fail_msg("not a JSON string (%s): %s", j ? "type" : e.text, q);
    json_decref(j);
    free(q);
}

static void test_json_escape(void **state)
{
    (void)state;
    char dst[64];

    dst[0] = '\0';
    assert_int_equal(bus_json_escape(dst, sizeof dst, "abc", 3), 0);
    assert_string_equal(dst, "abc");
    /* It appends. */
    assert_int_equal(bus_json_escape(dst, sizeof dst, "\"\n", 2), 0);
    assert_string_equal(dst, "abc\\\"\\n");
    /* len, not the NUL, ends the input; an embedded NUL is escaped. */
    dst[0] = '\0';
    assert_int_equal(bus_json_escape(dst, sizeof dst, "a\0b", 3), 0);
    assert_string_equal(dst, "a\\u0000b");

    /* Exact fit, and one byte short. */
    dst[0] = '\0';
    assert_int_equal(bus_json_escape(dst, 4, "abc", 3), 0);
    assert_string_equal(dst, "abc");
    dst[0] = '\0';
    assert_int_equal(bus_json_escape(dst, 3, "abc", 3), -ENOSPC);
    assert_string_equal(dst, "ab");

    /* Never cuts an escape or a UTF-8 sequence in half. */
    dst[0] = '\0';
    assert_int_equal(bus_json_escape(dst, 8, "ab\"cd\"", 6), -ENOSPC);
    assert_string_equal(dst, "ab\\\"cd");
    dst[0] = '\0';
    assert_int_equal(bus_json_escape(dst, 6, "\x01", 1), -ENOSPC);
    assert_string_equal(dst, "");
    dst[0] = '\0';
    assert_int_equal(bus_json_escape(dst, 4, "a\xe2\x82\xac", 4), -ENOSPC);
    assert_string_equal(dst, "a");
    dst[0] = '\0';
    assert_int_equal(bus_json_escape(dst, 5, "a\xe2\x82\xac", 4), 0);
    assert_string_equal(dst, "a\xe2\x82\xac");
    dst[0] = '\0';
    assert_int_equal(bus_json_escape(dst, 7, "\xff", 1), 0);
    assert_string_equal(dst, "\\ufffd");

    /* Random bytes and random caps: always a valid JSON string, always within cap. */
    srand(1234);
    for (int round = 0; round < 5000; round++) {
        unsigned char in[40];
        size_t len = (size_t)(rand() % 40);
        for (size_t i = 0; i < len; i++) {
            int pick = rand() % 4;
            in[i] = pick == 0   ? (unsigned char)(rand() % 0x20)
                    : pick == 1 ? (unsigned char)(0x80 + rand() % 0x80)
                                : (unsigned char)(0x20 + rand() % 0x60);
        }
        size_t cap = 1 + (size_t)(rand() % 63);
        memset(dst, 'Z', sizeof dst);
        dst[0] = '\0';
        int rc = bus_json_escape(dst, cap, (const char *)in, len);
        assert_true(rc == 0 || rc == -ENOSPC);
        assert_true(strlen(dst) < cap);
        assert_json_string(dst);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_basic_line, setup),
        cmocka_unit_test_setup(test_ids, setup),
        cmocka_unit_test_setup(test_extra_json, setup),
        cmocka_unit_test_setup(test_level_filter, setup),
        cmocka_unit_test_setup(test_parse_level, setup),
        cmocka_unit_test_setup(test_escaping, setup),
        cmocka_unit_test_setup(test_process_name, setup),
        cmocka_unit_test_setup(test_long_fields, setup),
        cmocka_unit_test_setup(test_many_writers, setup),
        cmocka_unit_test_setup(test_json_escape, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
