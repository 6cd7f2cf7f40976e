/* Unit tests for bus/bus_loop: the edge-triggered ZeroMQ drain, timers, destroying a watch from
 * its own callback, and signal handling. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "bus_loop.h"
#include "test_util.h"

#define PRELOAD 10000  /* messages queued before the loop runs */
#define LATE_BATCH 100 /* messages sent per timer tick while it runs */
#define LATE_TICKS 20  /* timer ticks that send */
#define LIMIT_US (4 * 1000 * 1000)

static char s_tmpdir[64]; /* this run's scratch directory */

/* Creates the scratch directory. */
static int group_setup(void **state)
{
    (void)state;
    return tu_tmpdir_new(s_tmpdir, sizeof s_tmpdir, "test_bus_loop");
}

/* Removes the scratch directory. */
static int group_teardown(void **state)
{
    (void)state;
    return tu_rm_rf(s_tmpdir);
}

/* Monotonic milliseconds. */
static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A bound PULL and a connected PUSH on ipc://<tmpdir>/<name>, both with unlimited HWM. */
static void make_pair(bus_loop_t *loop, const char *name, void **pull, void **push)
{
    char ep[128];
    snprintf(ep, sizeof ep, "ipc://%s/%s", s_tmpdir, name);
    int zero = 0;
    *pull = zmq_socket(bus_loop_zctx(loop), ZMQ_PULL);
    *push = zmq_socket(bus_loop_zctx(loop), ZMQ_PUSH);
    assert_non_null(*pull);
    assert_non_null(*push);
    assert_int_equal(zmq_setsockopt(*pull, ZMQ_RCVHWM, &zero, sizeof zero), 0);
    assert_int_equal(zmq_setsockopt(*push, ZMQ_SNDHWM, &zero, sizeof zero), 0);
    assert_int_equal(zmq_setsockopt(*pull, ZMQ_LINGER, &zero, sizeof zero), 0);
    assert_int_equal(zmq_setsockopt(*push, ZMQ_LINGER, &zero, sizeof zero), 0);
    assert_int_equal(zmq_bind(*pull, ep), 0);
    assert_int_equal(zmq_connect(*push, ep), 0);
}

/* Sends one 4-byte sequence number. */
static void send_seq(void *push, uint32_t seq)
{
    assert_int_equal(zmq_send(push, &seq, sizeof seq, 0), (int)sizeof seq);
}

/* ---- the drain ---- */

typedef struct {
    bus_loop_t *loop;      /* the loop */
    void *push;            /* sender */
    uint32_t received;     /* messages the callback got */
    uint32_t sent;         /* messages sent so far */
    uint32_t total;        /* messages that will be sent in all */
    uint32_t out_of_order; /* sequence numbers not as expected */
    uint32_t eagain;       /* callback called with nothing to read */
    int ticks;             /* sender ticks so far */
    bool timed_out;        /* the limit fired */
    bus_timer_t sender;    /* sends LATE_BATCH per tick */
    bus_timer_t limit;     /* gives up */
} drain_t;

/* zmq callback: reads exactly one message, checks its order, stops the loop at the end. */
static void on_msg(void *arg, void *zsock)
{
    drain_t *d = arg;
    uint32_t seq = 0;
    int n = zmq_recv(zsock, &seq, sizeof seq, ZMQ_DONTWAIT);
    if (n < 0) {
        d->eagain++;
        return;
    }
    if (n != (int)sizeof seq || seq != d->received)
        d->out_of_order++;
    d->received++;
    if (d->received == d->total)
        bus_loop_stop(d->loop);
}

/* Timer: sends another batch while the loop is busy draining. */
static void on_sender(bus_timer_t *t)
{
    drain_t *d = t->arg;
    for (int i = 0; i < LATE_BATCH; i++)
        send_seq(d->push, d->sent++);
    if (++d->ticks < LATE_TICKS)
        bus_timer_start(d->loop, &d->sender, on_sender, d, 1000);
}

/* Timer: the test has taken too long. */
static void on_drain_limit(bus_timer_t *t)
{
    drain_t *d = t->arg;
    d->timed_out = true;
    bus_loop_stop(d->loop);
}

static void test_zmq_drain_budget(void **state)
{
    (void)state;
    bus_loop_t *loop = bus_loop_new(NULL, NULL);
    assert_non_null(loop);
    void *pull, *push;
    make_pair(loop, "drain.ipc", &pull, &push);

    drain_t d = {.loop = loop, .push = push, .total = PRELOAD + LATE_BATCH * LATE_TICKS};
    /* All of these arrive before the watch exists: their edge is long gone. */
    for (uint32_t i = 0; i < PRELOAD; i++)
        send_seq(push, d.sent++);
    /* Let them reach the PULL's queue (its fd has signalled, and nobody was watching). */
    int events = 0;
    size_t sz = sizeof events;
    for (int i = 0; i < 500; i++) {
        assert_int_equal(zmq_getsockopt(pull, ZMQ_EVENTS, &events, &sz), 0);
        if (events & ZMQ_POLLIN)
            break;
        usleep(2000);
    }
    assert_true(events & ZMQ_POLLIN);

    bus_zwatch_t *w = bus_zwatch_new(loop, pull, on_msg, &d);
    assert_non_null(w);
    bus_timer_start(loop, &d.sender, on_sender, &d, 1000);
    bus_timer_start(loop, &d.limit, on_drain_limit, &d, LIMIT_US);
    int64_t t0 = now_ms();
    bus_loop_run(loop);
    int64_t took = now_ms() - t0;

    bus_loop_close_lws(loop);
    bus_zwatch_destroy(&w);
    assert_null(w);
    zmq_close(push);
    zmq_close(pull);
    bus_loop_destroy(&loop);
    assert_null(loop);

    if (d.timed_out)
        fail_msg("drain stalled: %u of %u messages after %lld ms", d.received, d.total,
                 (long long)took);
    assert_int_equal(d.received, d.total);
    assert_int_equal(d.sent, d.total);
    assert_int_equal(d.out_of_order, 0);
    assert_int_equal(d.eagain, 0);
    assert_int_equal(d.ticks, LATE_TICKS);
}

/* ---- timers ---- */

typedef struct {
    bus_loop_t *loop;    /* the loop */
    int64_t t0;          /* ms when the loop started */
    int fired_cancelled; /* calls of the cancelled timer */
    int fired_sooner;    /* calls of the timer re-armed sooner */
    int fired_later;     /* calls of the timer re-armed later */
    int64_t at_sooner;   /* when it fired (ms after t0) */
    int64_t at_later;    /* when it fired */
    int periodic;        /* calls of the self-re-arming timer */
    bus_timer_t cancelled, sooner, later, tick, stop;
} timers_t;

static void on_cancelled(bus_timer_t *t)
{
    ((timers_t *)t->arg)->fired_cancelled++;
}

static void on_sooner(bus_timer_t *t)
{
    timers_t *s = t->arg;
    s->fired_sooner++;
    s->at_sooner = now_ms() - s->t0;
}

static void on_later(bus_timer_t *t)
{
    timers_t *s = t->arg;
    s->fired_later++;
    s->at_later = now_ms() - s->t0;
}

/* Re-arms itself five times. */
static void on_tick(bus_timer_t *t)
{
    timers_t *s = t->arg;
    if (++s->periodic < 5)
        bus_timer_start(s->loop, &s->tick, on_tick, s, 5000);
}

static void on_stop_timer(bus_timer_t *t)
{
    bus_loop_stop(((timers_t *)t->arg)->loop);
}

static void test_timers(void **state)
{
    (void)state;
    bus_loop_t *loop = bus_loop_new(NULL, NULL);
    assert_non_null(loop);
    timers_t s = {.loop = loop};
    s.t0 = now_ms();
    bus_timer_start(loop, &s.cancelled, on_cancelled, &s, 10 * 1000);
    bus_timer_cancel(loop, &s.cancelled);
    bus_timer_cancel(loop, &s.cancelled); /* twice is harmless */
    bus_timer_start(loop, &s.sooner, on_sooner, &s, 2 * 1000 * 1000);
    bus_timer_start(loop, &s.sooner, on_sooner, &s, 20 * 1000); /* replaces the 2 s deadline */
    bus_timer_start(loop, &s.later, on_later, &s, 10 * 1000);
    bus_timer_start(loop, &s.later, on_later, &s, 150 * 1000); /* replaces the 10 ms one */
    bus_timer_start(loop, &s.tick, on_tick, &s, 5000);
    bus_timer_start(loop, &s.stop, on_stop_timer, &s, 300 * 1000);
    bus_loop_run(loop);
    int64_t took = now_ms() - s.t0;

    assert_int_equal(s.fired_cancelled, 0);
    assert_int_equal(s.fired_sooner, 1);
    assert_true(s.at_sooner >= 19);
    assert_true(s.at_sooner < 1000);
    assert_int_equal(s.fired_later, 1);
    assert_true(s.at_later >= 149);
    assert_int_equal(s.periodic, 5);
    assert_true(took >= 299);
    assert_true(took < 2000); /* the stop timer ended it, not the replaced 2 s deadline */

    bus_loop_close_lws(loop);
    /* After lws is gone, timers are no-ops rather than crashes. */
    bus_timer_start(loop, &s.cancelled, on_cancelled, &s, 0);
    bus_timer_cancel(loop, &s.cancelled);
    bus_loop_destroy(&loop);
    assert_int_equal(s.fired_cancelled, 0);
}

/* ---- destroying a watch from its own callback ---- */

typedef struct {
    bus_loop_t *loop; /* the loop */
    void *push;       /* sender */
    bus_zwatch_t *w;  /* the watch, destroyed by its first callback */
    int calls;        /* callback calls */
    bus_timer_t more; /* sends more after the destroy */
    bus_timer_t stop; /* ends the test */
} selfdestroy_t;

static void on_msg_destroy(void *arg, void *zsock)
{
    selfdestroy_t *s = arg;
    char buf[16];
    s->calls++;
    (void)zmq_recv(zsock, buf, sizeof buf, ZMQ_DONTWAIT);
    bus_zwatch_destroy(&s->w);
    assert_null(s->w);
}

static void on_more(bus_timer_t *t)
{
    selfdestroy_t *s = t->arg;
    for (uint32_t i = 0; i < 50; i++)
        send_seq(s->push, i);
}

static void on_selfdestroy_stop(bus_timer_t *t)
{
    bus_loop_stop(((selfdestroy_t *)t->arg)->loop);
}

static void test_zwatch_destroy_in_callback(void **state)
{
    (void)state;
    bus_loop_t *loop = bus_loop_new(NULL, NULL);
    assert_non_null(loop);
    void *pull, *push;
    make_pair(loop, "destroy.ipc", &pull, &push);
    selfdestroy_t s = {.loop = loop, .push = push};
    for (uint32_t i = 0; i < 100; i++)
        send_seq(push, i);
    s.w = bus_zwatch_new(loop, pull, on_msg_destroy, &s);
    assert_non_null(s.w);
    bus_timer_start(loop, &s.more, on_more, &s, 50 * 1000);
    bus_timer_start(loop, &s.stop, on_selfdestroy_stop, &s, 250 * 1000);
    bus_loop_run(loop);
    /* One call, although 149 more messages were waiting or arrived afterwards. */
    assert_int_equal(s.calls, 1);
    assert_null(s.w);

    /* The socket is still the caller's and still works. */
    int events = 0;
    size_t sz = sizeof events;
    assert_int_equal(zmq_getsockopt(pull, ZMQ_EVENTS, &events, &sz), 0);
    assert_true(events & ZMQ_POLLIN);
    uint32_t seq = 99;
    assert_int_equal(zmq_recv(pull, &seq, sizeof seq, ZMQ_DONTWAIT), (int)sizeof seq);
    assert_int_equal(seq, 1);

    bus_loop_close_lws(loop);
    zmq_close(push);
    zmq_close(pull);
    bus_loop_destroy(&loop);
}

/* ---- signals (last: they leave SIGTERM/SIGINT/SIGHUP blocked in this process) ---- */

typedef struct {
    bus_loop_t *loop; /* the loop */
    int hook_calls;   /* on_stop calls */
    int hook_signo;   /* the signal it got */
    bool hook_stops;  /* the hook calls bus_loop_stop */
    bool timed_out;   /* the limit fired */
    int raised;       /* signals raised so far */
    bus_timer_t raise1, raise2, hup, limit;
} sigtest_t;

static void on_stop_hook(void *arg, int signo)
{
    sigtest_t *s = arg;
    s->hook_calls++;
    s->hook_signo = signo;
    assert_true(bus_loop_stopping(s->loop)); /* draining has begun */
    if (s->hook_stops)
        bus_loop_stop(s->loop);
}

static void on_raise_term(bus_timer_t *t)
{
    sigtest_t *s = t->arg;
    s->raised++;
    raise(SIGTERM);
}

static void on_raise_hup(bus_timer_t *t)
{
    raise(SIGHUP);
    (void)t;
}

static void on_sig_limit(bus_timer_t *t)
{
    sigtest_t *s = t->arg;
    s->timed_out = true;
    bus_loop_stop(s->loop);
}

static void test_signal_graceful_hook(void **state)
{
    (void)state;
    bus_loop_t *loop = bus_loop_new(NULL, NULL);
    assert_non_null(loop);
    sigtest_t s = {.loop = loop, .hook_stops = true};
    assert_int_equal(bus_loop_handle_signals(loop, on_stop_hook, &s), 0);
    assert_false(bus_loop_stopping(loop));
    bus_timer_start(loop, &s.hup, on_raise_hup, &s, 5 * 1000); /* ignored */
    bus_timer_start(loop, &s.raise1, on_raise_term, &s, 30 * 1000);
    bus_timer_start(loop, &s.limit, on_sig_limit, &s, 3 * 1000 * 1000);
    bus_loop_run(loop);
    assert_false(s.timed_out);
    assert_int_equal(s.raised, 1);
    assert_int_equal(s.hook_calls, 1);
    assert_int_equal(s.hook_signo, SIGTERM);
    assert_true(bus_loop_stopping(loop));
    bus_loop_close_lws(loop);
    bus_loop_destroy(&loop);
}

static void test_signal_second_stops_at_once(void **state)
{
    (void)state;
    bus_loop_t *loop = bus_loop_new(NULL, NULL);
    assert_non_null(loop);
    sigtest_t s = {.loop = loop, .hook_stops = false}; /* the hook keeps "finishing work" */
    assert_int_equal(bus_loop_handle_signals(loop, on_stop_hook, &s), 0);
    bus_timer_start(loop, &s.raise1, on_raise_term, &s, 10 * 1000);
    bus_timer_start(loop, &s.raise2, on_raise_term, &s, 100 * 1000);
    bus_timer_start(loop, &s.limit, on_sig_limit, &s, 3 * 1000 * 1000);
    int64_t t0 = now_ms();
    bus_loop_run(loop);
    int64_t took = now_ms() - t0;
    assert_false(s.timed_out);
    assert_int_equal(s.raised, 2);
    assert_int_equal(s.hook_calls, 1); /* not called again for the second signal */
    assert_int_equal(s.hook_signo, SIGTERM);
    assert_true(took >= 99);
    assert_true(took < 2000);
    bus_loop_close_lws(loop);
    bus_loop_destroy(&loop);
}

static void test_signal_without_hook(void **state)
{
    (void)state;
    bus_loop_t *loop = bus_loop_new(NULL, NULL);
    assert_non_null(loop);
    sigtest_t s = {.loop = loop};
    assert_int_equal(bus_loop_handle_signals(loop, NULL, NULL), 0);
    bus_timer_start(loop, &s.raise1, on_raise_term, &s, 10 * 1000);
    bus_timer_start(loop, &s.limit, on_sig_limit, &s, 3 * 1000 * 1000);
    bus_loop_run(loop);
    assert_false(s.timed_out); /* no hook: the first signal stops the loop */
    assert_int_equal(s.raised, 1);
    bus_loop_close_lws(loop);
    bus_loop_destroy(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zmq_drain_budget),
        cmocka_unit_test(test_timers),
        cmocka_unit_test(test_zwatch_destroy_in_callback),
        cmocka_unit_test(test_signal_graceful_hook),
        cmocka_unit_test(test_signal_second_stops_at_once),
        cmocka_unit_test(test_signal_without_hook),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
