/* Unit tests for bus/bus_metrics: the Prometheus text rendering and the /metrics endpoint. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "bus_loop.h"
#include "bus_metrics.h"

/* Number of non-overlapping occurrences of needle in hay. */
static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    size_t nl = strlen(needle);
    for (const char *p = strstr(hay, needle); p; p = strstr(p + nl, needle))
        n++;
    return n;
}

static void test_render_families(void **state)
{
    (void)state;
    bus_metrics_t *m = bus_metrics_new("test-proc");
    assert_non_null(m);
    /* Family a's members are registered with another family in between. */
    bus_metric_t *a1 = bus_metrics_add(m, BUS_COUNTER, "relayhub_a_total", NULL, "A things");
    bus_metric_t *b1 = bus_metrics_add(m, BUS_GAUGE, "relayhub_b", "kind=\"x\"", "B level");
    bus_metric_t *a2 =
        bus_metrics_add(m, BUS_COUNTER, "relayhub_a_total", "reason=\"bad_signature\"", "A things");
    bus_metric_t *c1 = bus_metrics_add(m, BUS_GAUGE, "relayhub_c", NULL, "C");
    bus_metric_t *b2 =
        bus_metrics_add(m, BUS_GAUGE, "relayhub_b", "kind=\"y\",zone=\"z1\"", "B level");
    assert_non_null(a1);
    assert_non_null(b1);
    assert_non_null(a2);
    assert_non_null(c1);
    assert_non_null(b2);

    bus_metric_inc(a1);
    bus_metric_inc(a1);
    bus_metric_inc(a1);
    bus_metric_add(a2, 5);
    bus_metric_add(a2, 3);
    bus_metric_set(b1, -42);
    bus_metric_set(b2, 7);
    bus_metric_add(b2, -10);
    assert_int_equal(bus_metric_get(a1), 3);
    assert_int_equal(bus_metric_get(a2), 8);
    assert_int_equal(bus_metric_get(b1), -42);
    assert_int_equal(bus_metric_get(b2), -3);
    assert_int_equal(bus_metric_get(c1), 0);

    size_t len = 0;
    char *text = bus_metrics_render(m, &len);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    const char *want = "# HELP relayhub_a_total A things\n"
                       "# TYPE relayhub_a_total counter\n"
                       "relayhub_a_total{process=\"test-proc\"} 3\n"
                       "relayhub_a_total{process=\"test-proc\",reason=\"bad_signature\"} 8\n"
                       "# HELP relayhub_b B level\n"
                       "# TYPE relayhub_b gauge\n"
                       "relayhub_b{process=\"test-proc\",kind=\"x\"} -42\n"
                       "relayhub_b{process=\"test-proc\",kind=\"y\",zone=\"z1\"} -3\n"
                       "# HELP relayhub_c C\n"
                       "# TYPE relayhub_c gauge\n"
                       "relayhub_c{process=\"test-proc\"} 0\n";
    assert_string_equal(text, want);
    assert_int_equal(count_of(text, "# HELP relayhub_a_total "), 1);
    assert_int_equal(count_of(text, "# TYPE relayhub_b "), 1);
    free(text);
    bus_metrics_destroy(&m);
    assert_null(m);
    bus_metrics_destroy(&m);
    bus_metrics_destroy(NULL);
}

static void test_values_extremes(void **state)
{
    (void)state;
    bus_metrics_t *m = bus_metrics_new("p");
    assert_non_null(m);
    bus_metric_t *g = bus_metrics_add(m, BUS_GAUGE, "g", NULL, NULL); /* NULL help: empty */
    bus_metric_t *c = bus_metrics_add(m, BUS_COUNTER, "c_total", NULL, "big");
    bus_metric_set(g, INT64_MIN);
    bus_metric_set(c, INT64_MAX);
    size_t len = 0;
    char *text = bus_metrics_render(m, &len);
    assert_non_null(text);
    assert_string_equal(text, "# HELP g \n# TYPE g gauge\ng{process=\"p\"} -9223372036854775808\n"
                              "# HELP c_total big\n# TYPE c_total counter\n"
                              "c_total{process=\"p\"} 9223372036854775807\n");
    free(text);

    /* An empty registry renders as empty text, not NULL. */
    bus_metrics_t *e = bus_metrics_new("empty");
    assert_non_null(e);
    len = 99;
    text = bus_metrics_render(e, &len);
    assert_non_null(text);
    assert_int_equal(len, 0);
    assert_string_equal(text, "");
    free(text);
    bus_metrics_destroy(&e);
    bus_metrics_destroy(&m);
}

static void test_null_handles_ignored(void **state)
{
    (void)state;
    bus_metric_inc(NULL);
    bus_metric_add(NULL, 5);
    bus_metric_set(NULL, -1);
    assert_int_equal(bus_metric_get(NULL), 0);
    assert_null(bus_metrics_add(NULL, BUS_COUNTER, "x_total", NULL, "x"));

    /* A NULL handle does not touch any registered metric either. */
    bus_metrics_t *m = bus_metrics_new("p");
    assert_non_null(m);
    bus_metric_t *x = bus_metrics_add(m, BUS_COUNTER, "x_total", NULL, "x");
    bus_metric_add(x, 2);
    bus_metric_t *none = NULL;
    bus_metric_inc(none);
    bus_metric_set(none, 100);
    assert_int_equal(bus_metric_get(x), 2);
    size_t len = 0;
    char *text = bus_metrics_render(m, &len);
    assert_non_null(text);
    assert_non_null(strstr(text, "x_total{process=\"p\"} 2\n"));
    free(text);
    bus_metrics_destroy(&m);
}

static void test_render_large(void **state)
{
    (void)state;
    /* Far more than the initial 4 KiB buffer: the text grows and nothing is cut. */
    bus_metrics_t *m = bus_metrics_new("big-process-name");
    assert_non_null(m);
    bus_metric_t *x[500];
    char labels[128];
    for (int i = 0; i < 500; i++) {
        snprintf(labels, sizeof labels, "agent=\"%032d\",i=\"%d\"", i, i);
        x[i] = bus_metrics_add(m, i % 2 ? BUS_GAUGE : BUS_COUNTER,
                               i % 2 ? "relayhub_odd" : "relayhub_even_total", labels, "help");
        assert_non_null(x[i]);
        bus_metric_set(x[i], i * 1000);
    }
    size_t len = 0;
    char *text = bus_metrics_render(m, &len);
    assert_non_null(text);
    assert_true(len > 4096 * 4);
    assert_int_equal(len, strlen(text));
    assert_int_equal(count_of(text, "# HELP "), 2);
    assert_int_equal(count_of(text, "\n"), 500 + 4);
    char line[200];
    for (int i = 0; i < 500; i++) {
        snprintf(line, sizeof line, "{process=\"big-process-name\",agent=\"%032d\",i=\"%d\"} %d\n",
                 i, i, i * 1000);
        if (!strstr(text, line))
            fail_msg("missing metric %d", i);
    }
    assert_int_equal(text[len - 1], '\n');
    free(text);
    bus_metrics_destroy(&m);
}

/* ---- /metrics over HTTP ---- */

/* A plain-socket client run on a thread while the loop serves. */
typedef struct {
    int port;            /* where the server listens */
    char resp[2][16384]; /* responses to GET /metrics and GET /other */
    size_t len[2];       /* their lengths */
    atomic_int done;     /* the client finished (both requests) */
} client_t;

/* Sends one GET and reads the whole response (until EOF or Content-Length is satisfied). */
static size_t http_get(int port, const char *path, char *out, size_t cap)
{
    out[0] = '\0';
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct timeval tv = {3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return 0;
    }
    char req[256];
    int n =
        snprintf(req, sizeof req,
                 "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n", path, port);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        close(fd);
        return 0;
    }
    size_t len = 0;
    for (;;) {
        if (len + 1 >= cap)
            break;
        ssize_t r = recv(fd, out + len, cap - 1 - len, 0);
        if (r <= 0)
            break;
        len += (size_t)r;
        out[len] = '\0';
        /* Stop once the announced body is complete (the server may keep the socket). */
        char *hdr_end = strstr(out, "\r\n\r\n");
        const char *cl = strcasestr(out, "\r\ncontent-length:");
        if (hdr_end && cl && cl < hdr_end) {
            size_t body = (size_t)strtoul(cl + 17, NULL, 10);
            if (len >= (size_t)(hdr_end + 4 - out) + body)
                break;
        }
    }
    out[len] = '\0';
    close(fd);
    return len;
}

/* Client thread: both requests, then report. */
static void *client_main(void *arg)
{
    client_t *c = arg;
    c->len[0] = http_get(c->port, "/metrics", c->resp[0], sizeof c->resp[0]);
    c->len[1] = http_get(c->port, "/other", c->resp[1], sizeof c->resp[1]);
    atomic_store(&c->done, 1);
    return NULL;
}

/* Test state driven by loop timers. */
typedef struct {
    bus_loop_t *loop;  /* the loop under test */
    client_t *client;  /* the client thread's results */
    bus_timer_t poll;  /* checks client->done */
    bus_timer_t limit; /* gives up after a few seconds */
    bool timed_out;    /* the limit fired */
} serve_t;

/* Stops the loop once the client is done; otherwise polls again. */
static void on_poll(bus_timer_t *t)
{
    serve_t *s = t->arg;
    if (atomic_load(&s->client->done)) {
        bus_loop_stop(s->loop);
        return;
    }
    bus_timer_start(s->loop, &s->poll, on_poll, s, 5000);
}

/* Stops the loop when the test takes too long. */
static void on_limit(bus_timer_t *t)
{
    serve_t *s = t->arg;
    s->timed_out = true;
    bus_loop_stop(s->loop);
}

/* A TCP port on 127.0.0.1 that was free a moment ago. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static void test_serve_http(void **state)
{
    (void)state;
    bus_metrics_t *m = bus_metrics_new("metrics-test");
    assert_non_null(m);
    bus_metric_t *conn =
        bus_metrics_add(m, BUS_GAUGE, "relayhub_test_connections", NULL, "open connections");
    bus_metric_t *refused = bus_metrics_add(m, BUS_COUNTER, "relayhub_test_refused_total",
                                            "reason=\"bad_signature\"", "refusals");
    bus_metric_set(conn, 12);
    bus_metric_add(refused, 3);

    bus_loop_t *loop = bus_loop_new(NULL, NULL);
    assert_non_null(loop);
    assert_int_equal(bus_metrics_serve(m, loop, ""), 0); /* off */
    int port = free_port();
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    assert_int_equal(bus_metrics_serve(m, loop, listen), 0);

    client_t *client = calloc(1, sizeof *client);
    assert_non_null(client);
    client->port = port;
    serve_t s = {.loop = loop, .client = client};
    bus_timer_start(loop, &s.poll, on_poll, &s, 5000);
    bus_timer_start(loop, &s.limit, on_limit, &s, 5 * 1000 * 1000);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, client_main, client), 0);
    bus_loop_run(loop);
    pthread_join(th, NULL);
    bus_loop_close_lws(loop);
    bus_loop_destroy(&loop);

    assert_false(s.timed_out);
    assert_int_equal(atomic_load(&client->done), 1);

    /* GET /metrics: 200, the exposition content type, the rendered text as the body. */
    const char *r = client->resp[0];
    if (strncmp(r, "HTTP/1.1 200", 12) != 0)
        fail_msg("unexpected response to /metrics: %.200s", r);
    const char *hdr_end = strstr(r, "\r\n\r\n");
    assert_non_null(hdr_end);
    const char *ct = strcasestr(r, "\r\ncontent-type:");
    assert_non_null(ct);
    assert_true(ct < hdr_end);
    assert_non_null(strstr(ct, "text/plain; version=0.0.4"));
    size_t n = 0;
    char *want = bus_metrics_render(m, &n);
    assert_non_null(want);
    assert_string_equal(hdr_end + 4, want);
    assert_non_null(strstr(hdr_end, "relayhub_test_connections{process=\"metrics-test\"} 12\n"));
    assert_non_null(strstr(hdr_end, "relayhub_test_refused_total{process=\"metrics-test\","
                                    "reason=\"bad_signature\"} 3\n"));
    free(want);

    /* Any other path: 404. */
    if (strncmp(client->resp[1], "HTTP/1.1 404", 12) != 0)
        fail_msg("unexpected response to /other: %.200s", client->resp[1]);

    free(client);
    bus_metrics_destroy(&m);
}

static void test_serve_bad_address(void **state)
{
    (void)state;
    bus_metrics_t *m = bus_metrics_new("p");
    assert_non_null(m);
    bus_loop_t *loop = bus_loop_new(NULL, NULL);
    assert_non_null(loop);
    assert_true(bus_metrics_serve(m, loop, "no-port-here") < 0);

    /* A port somebody else is listening on. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 1), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    char listen_at[64];
    snprintf(listen_at, sizeof listen_at, "127.0.0.1:%d", ntohs(sa.sin_port));
    assert_true(bus_metrics_serve(m, loop, listen_at) < 0);
    close(fd);

    bus_loop_close_lws(loop);
    bus_loop_destroy(&loop);
    bus_metrics_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_families),      cmocka_unit_test(test_values_extremes),
        cmocka_unit_test(test_null_handles_ignored), cmocka_unit_test(test_render_large),
        cmocka_unit_test(test_serve_http),           cmocka_unit_test(test_serve_bad_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
