/* Unit tests for agent/ag_curl: libcurl's multi interface inside the bus_loop (epoll set + lws
 * raw descriptor + bus_timer), against a small HTTP server on a thread. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ag_curl.h"
#include "ag_fd.h"
#include "bus_loop.h"

#define BIG 200000

static int s_port;
static atomic_int s_closed_early; /* /hang connections the client closed */

/* Serves one connection: GET /big (BIG bytes), /hang (never answers; counts the close). */
static void *s_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char req[2048];
    size_t got = 0;
    while (got < sizeof req - 1) {
        ssize_t n = read(fd, req + got, sizeof req - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        req[got] = '\0';
        if (strstr(req, "\r\n\r\n"))
            break;
    }
    if (strncmp(req, "GET /big", 8) == 0) {
        static char body[BIG];
        memset(body, 'b', sizeof body);
        char head[128];
        int hl = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                          "Connection: close\r\n\r\n", BIG);
        if (write(fd, head, (size_t)hl) == hl) {
            size_t off = 0;
            while (off < sizeof body) {
                ssize_t n = write(fd, body + off, sizeof body - off);
                if (n <= 0)
                    break;
                off += (size_t)n;
            }
        }
    } else if (strncmp(req, "GET /hang", 9) == 0) {
        char c;
        while (read(fd, &c, 1) > 0)
            ;
        atomic_fetch_add(&s_closed_early, 1);
    }
    close(fd);
    return NULL;
}

/* Accepts connections forever (the process ends with the test). */
static void *s_server(void *arg)
{
    int ls = (int)(intptr_t)arg;
    for (;;) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_t t;
        pthread_create(&t, NULL, s_conn, (void *)(intptr_t)fd);
        pthread_detach(t);
    }
    return NULL;
}

static int s_setup(void **state)
{
    (void)state;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 64) != 0 ||
        getsockname(ls, (struct sockaddr *)&a, &al) != 0)
        return -1;
    s_port = ntohs(a.sin_port);
    pthread_t t;
    pthread_create(&t, NULL, s_server, (void *)(intptr_t)ls);
    pthread_detach(t);
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

typedef struct {
    bus_loop_t *loop;   /* the loop under test */
    ag_curl_t *curl;    /* the adapter */
    int done;           /* transfers finished */
    int want;           /* transfers to wait for */
    CURLcode last;      /* last result */
    size_t bytes;       /* body bytes received over all transfers */
    int pauses_left;    /* writes to refuse with CURL_WRITEFUNC_PAUSE */
    bus_timer_t unpause;/* resumes the paused transfer */
    bus_timer_t guard;  /* stops a hung test */
    CURL *paused;       /* the transfer paused */
} ctx_t;

/* Done callback: counts, removes and cleans up. */
static void s_done(void *arg, CURL *easy, CURLcode result)
{
    ctx_t *c = arg;
    c->done++;
    c->last = result;
    ag_curl_remove(c->curl, easy);
    curl_easy_cleanup(easy);
    if (c->done == c->want)
        bus_loop_stop(c->loop);
}

/* Resumes the paused transfer from outside curl's callbacks. */
static void s_on_unpause(bus_timer_t *t)
{
    ctx_t *c = t->arg;
    curl_easy_pause(c->paused, CURLPAUSE_CONT);
    ag_curl_kick(c->curl);
}

/* Write callback: counts bytes; pauses the first writes when asked. */
static size_t s_write(char *p, size_t size, size_t n, void *arg)
{
    ctx_t *c = arg;
    (void)p;
    if (c->pauses_left > 0) {
        c->pauses_left--;
        bus_timer_start(c->loop, &c->unpause, s_on_unpause, c, 50000);
        return CURL_WRITEFUNC_PAUSE;
    }
    c->bytes += size * n;
    return size * n;
}

/* Stops the loop if the test hangs. */
static void s_on_guard(bus_timer_t *t)
{
    ctx_t *c = t->arg;
    bus_loop_stop(c->loop);
}

/* A new easy handle for path on the test server. */
static CURL *s_easy(ctx_t *c, const char *path)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", s_port, path);
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, s_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    return e;
}

/* Sets up a loop and the adapter. */
static void s_ctx(ctx_t *c, struct lws_protocols *protos)
{
    memset(c, 0, sizeof *c);
    memset(protos, 0, 2 * sizeof *protos);
    protos[0] = ag_fd_protocol();
    c->loop = bus_loop_new(protos, NULL);
    assert_non_null(c->loop);
    c->curl = ag_curl_new(c->loop, s_done, c);
    assert_non_null(c->curl);
    bus_timer_start(c->loop, &c->guard, s_on_guard, c, 10 * 1000000);
}

/* Tears the loop and the adapter down. */
static void s_ctx_free(ctx_t *c)
{
    bus_timer_cancel(c->loop, &c->guard);
    bus_timer_cancel(c->loop, &c->unpause);
    ag_curl_destroy(&c->curl);
    assert_null(c->curl);
    bus_loop_close_lws(c->loop);
    bus_loop_destroy(&c->loop);
}

static void test_many_transfers(void **state)
{
    (void)state;
    ctx_t c;
    struct lws_protocols protos[2];
    s_ctx(&c, protos);
    c.want = 20;
    for (int i = 0; i < c.want; i++)
        assert_int_equal(ag_curl_add(c.curl, s_easy(&c, "/big")), 0);
    bus_loop_run(c.loop);
    assert_int_equal(c.done, 20);
    assert_int_equal(c.last, CURLE_OK);
    assert_int_equal(c.bytes, (size_t)20 * BIG);
    s_ctx_free(&c);
}

static void test_pause_and_resume(void **state)
{
    (void)state;
    ctx_t c;
    struct lws_protocols protos[2];
    s_ctx(&c, protos);
    c.want = 1;
    c.pauses_left = 3;
    c.paused = s_easy(&c, "/big");
    assert_int_equal(ag_curl_add(c.curl, c.paused), 0);
    bus_loop_run(c.loop);
    assert_int_equal(c.done, 1);
    assert_int_equal(c.last, CURLE_OK);
    assert_int_equal(c.pauses_left, 0);
    assert_int_equal(c.bytes, (size_t)BIG);
    s_ctx_free(&c);
}

static void test_timeout_uses_the_timer(void **state)
{
    (void)state;
    ctx_t c;
    struct lws_protocols protos[2];
    s_ctx(&c, protos);
    c.want = 1;
    CURL *e = s_easy(&c, "/hang");
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 200L);
    assert_int_equal(ag_curl_add(c.curl, e), 0);
    bus_loop_run(c.loop);
    assert_int_equal(c.done, 1);
    assert_int_equal(c.last, CURLE_OPERATION_TIMEDOUT);
    s_ctx_free(&c);
}

/* Removes a hanging transfer (the cancel path). */
static void s_on_remove(bus_timer_t *t)
{
    ctx_t *c = t->arg;
    ag_curl_remove(c->curl, c->paused);
    curl_easy_cleanup(c->paused);
    c->paused = NULL;
    bus_loop_stop(c->loop);
}

static void test_remove_closes_the_connection(void **state)
{
    (void)state;
    ctx_t c;
    struct lws_protocols protos[2];
    s_ctx(&c, protos);
    int before = atomic_load(&s_closed_early);
    c.paused = s_easy(&c, "/hang");
    assert_int_equal(ag_curl_add(c.curl, c.paused), 0);
    bus_timer_start(c.loop, &c.unpause, s_on_remove, &c, 100000);
    bus_loop_run(c.loop);
    assert_null(c.paused);
    for (int i = 0; i < 200 && atomic_load(&s_closed_early) == before; i++)
        usleep(5000);
    assert_int_equal(atomic_load(&s_closed_early), before + 1);
    assert_int_equal(c.done, 0);
    s_ctx_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_transfers),
        cmocka_unit_test(test_pause_and_resume),
        cmocka_unit_test(test_timeout_uses_the_timer),
        cmocka_unit_test(test_remove_closes_the_connection),
    };
    return cmocka_run_group_tests(tests, s_setup, NULL);
}
