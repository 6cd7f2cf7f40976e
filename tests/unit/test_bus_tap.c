/* Unit tests for bus/bus_tap: the subscriber count kept from XPUB (un)subscriptions, the
 * two-frame mirror format, nothing sent while nobody listens, drops counted when a subscriber
 * cannot keep up, the tap switched off, bad endpoints, and a stale ipc file.
 *
 * Each scenario runs one bus_loop (bus_loop_run cannot be resumed once stopped): a 2 ms timer
 * walks a list of steps, each of which acts and/or waits for its condition; a failed check
 * records its line and stops the loop, and the test tears everything down before it fails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "bus_loop.h"
#include "bus_tap.h"
#include "test_util.h"

#define PROC "tap-test"            /* process name in the headers */
#define LIMIT_US (4 * 1000 * 1000) /* a scenario that takes longer has failed */
#define BIG_LEN 100000             /* a large envelope */
#define FLOOD 60000                /* messages mirrored at a subscriber that does not read */
#define FLOOD_LEN 200              /* bytes in each */

static char s_tmpdir[64]; /* this run's scratch directory */

/* Creates the scratch directory. */
static int group_setup(void **state)
{
    (void)state;
    return tu_tmpdir_new(s_tmpdir, sizeof s_tmpdir, "test_bus_tap");
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

/* Writes "ipc://<tmpdir>/<name>" into out. */
static void endpoint_of(char *out, size_t n, const char *name)
{
    int len = snprintf(out, n, "ipc://%s/%s", s_tmpdir, name);
    assert_true(len > 0 && (size_t)len < n);
}

/* ---- the scenario runner ---- */

typedef struct scen scen_t;
/* One step: acts and/or checks its condition; true when done (the next step runs at once). */
typedef bool (*step_fn)(scen_t *s);

/* One received mirror message. */
typedef struct {
    char head[256];        /* first frame, NUL-terminated */
    int hl;                /* its length */
    uint8_t body[BIG_LEN]; /* second frame */
    int bl;                /* its length */
} tapmsg_t;

struct scen {
    bus_loop_t *loop;     /* the loop */
    bus_tap_t *tap[2];    /* taps under test (NULL when unused) */
    char ep[2][128];      /* their endpoints */
    void *sub[2];         /* subscribers (NULL when closed or unused) */
    int got[2];           /* well-formed messages each subscriber has received */
    tapmsg_t msg;         /* the last one received */
    const step_fn *steps; /* the script */
    size_t nsteps;        /* its length */
    size_t at;            /* the step being run */
    int64_t since;        /* ms when that step began */
    uint64_t mark;        /* a value a step remembers for a later one */
    int line;             /* line of the first failed check (0: none) */
    const char *what;     /* its text */
    bool timed_out;       /* the limit fired */
    bus_timer_t tick;     /* runs the steps */
    bus_timer_t limit;    /* gives up */
};

/* Records the first failed check and stops the loop. */
static void s_failed(scen_t *s, int line, const char *what)
{
    if (!s->line) {
        s->line = line;
        s->what = what;
    }
    bus_loop_stop(s->loop);
}

/* In a step: on failure, record and leave the step (the loop stops). */
#define CHECK(s, cond)                                                                             \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            s_failed((s), __LINE__, #cond);                                                        \
            return false;                                                                          \
        }                                                                                          \
    } while (0)

/* Milliseconds since the current step began. */
static int64_t s_elapsed(const scen_t *s)
{
    return now_ms() - s->since;
}

/* Timer: runs steps until one is not done yet; stops the loop after the last. */
static void on_tick(bus_timer_t *t)
{
    scen_t *s = t->arg;
    while (s->at < s->nsteps) {
        if (!s->steps[s->at](s))
            break;
        s->at++;
        s->since = now_ms();
    }
    if (s->line)
        return;
    if (s->at == s->nsteps) {
        bus_loop_stop(s->loop);
        return;
    }
    bus_timer_start(s->loop, &s->tick, on_tick, s, 2000);
}

/* Timer: the scenario took too long. */
static void on_limit(bus_timer_t *t)
{
    scen_t *s = t->arg;
    s->timed_out = true;
    bus_loop_stop(s->loop);
}

/* Creates the loop and binds tap i (of n) on ipc://<tmpdir>/<name_i>. */
static scen_t *scen_new(int n, const char *name0, const char *name1)
{
    scen_t *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->loop = bus_loop_new(NULL, NULL);
    assert_non_null(s->loop);
    const char *names[2] = {name0, name1};
    for (int i = 0; i < n; i++) {
        endpoint_of(s->ep[i], sizeof s->ep[i], names[i]);
        int err = 1;
        s->tap[i] = bus_tap_new(s->loop, s->ep[i], PROC, &err);
        assert_non_null(s->tap[i]);
        assert_int_equal(err, 0);
    }
    return s;
}

/* Runs the script on the loop until it ends, fails or times out. */
static void scen_run(scen_t *s, const step_fn *steps, size_t n)
{
    s->steps = steps;
    s->nsteps = n;
    s->since = now_ms();
    bus_timer_start(s->loop, &s->tick, on_tick, s, 0);
    bus_timer_start(s->loop, &s->limit, on_limit, s, LIMIT_US);
    bus_loop_run(s->loop);
    bus_timer_cancel(s->loop, &s->tick);
    bus_timer_cancel(s->loop, &s->limit);
}

/* Tears down in the required order (lws, then the zmq sockets, then the loop), then fails the
 * test if the script did not run to its end. */
static void scen_end(scen_t *s)
{
    bus_loop_close_lws(s->loop);
    for (int i = 0; i < 2; i++) {
        bus_tap_destroy(&s->tap[i]);
        assert_null(s->tap[i]);
        if (s->sub[i])
            zmq_close(s->sub[i]);
    }
    bus_loop_destroy(&s->loop);
    assert_null(s->loop);
    int line = s->line;
    const char *what = s->what;
    size_t at = s->at, n = s->nsteps;
    bool timed_out = s->timed_out;
    free(s);
    if (line)
        fail_msg("check failed at line %d (step %zu): %s", line, at, what);
    if (timed_out || at != n)
        fail_msg("stuck at step %zu of %zu", at, n);
}

/* A SUB connected to endpoint (linger 0), subscribed to "" when subscribe is set. */
static void *sub_new(scen_t *s, const char *endpoint, bool subscribe)
{
    void *sub = zmq_socket(bus_loop_zctx(s->loop), ZMQ_SUB);
    if (!sub)
        return NULL;
    int zero = 0;
    if (zmq_setsockopt(sub, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_connect(sub, endpoint) != 0 ||
        (subscribe && zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0) != 0)) {
        zmq_close(sub);
        return NULL;
    }
    return sub;
}

/* Reads one mirrored message from sub without waiting, into s->msg: 1 when one was read,
 * 0 when none is queued, -1 when it is not exactly two frames or does not fit. */
static int recv_msg(scen_t *s, void *sub)
{
    tapmsg_t *m = &s->msg;
    int n = zmq_recv(sub, m->head, sizeof m->head - 1, ZMQ_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN ? 0 : -1;
    if (n > (int)sizeof m->head - 1)
        return -1;
    m->head[n] = '\0';
    m->hl = n;
    int more = 0;
    size_t sz = sizeof more;
    if (zmq_getsockopt(sub, ZMQ_RCVMORE, &more, &sz) != 0 || !more)
        return -1;
    /* The parts of a message arrive together: the second is there already. */
    n = zmq_recv(sub, m->body, sizeof m->body, ZMQ_DONTWAIT);
    if (n < 0 || n > (int)sizeof m->body)
        return -1;
    m->bl = n;
    if (zmq_getsockopt(sub, ZMQ_RCVMORE, &more, &sz) != 0 || more)
        return -1;
    return 1;
}

/* A step that waits ms milliseconds while the loop runs. */
static bool wait_ms(scen_t *s, int64_t ms)
{
    return s_elapsed(s) >= ms;
}

/* The envelopes mirrored below. */
static const uint8_t s_env_bin[] = {0x83, 0x00, 0xff, 0x00, 'x', 0x00};
static const uint8_t s_env_early[] = {'e', 'a', 'r', 'l', 'y'};
static const uint8_t s_env_after[] = {'a', 'f', 't', 'e', 'r', 0x00, 0x01};
static uint8_t s_env_big[BIG_LEN];
static uint8_t s_env_flood[FLOOD_LEN];

/* True when s->msg has exactly this header and these bytes. */
static bool msg_is(const scen_t *s, const char *head, const uint8_t *env, size_t len)
{
    return s->msg.hl == (int)strlen(head) && strcmp(s->msg.head, head) == 0 &&
           s->msg.bl == (int)len && (len == 0 || memcmp(s->msg.body, env, len) == 0);
}

/* ---- (a) nothing is sent while nobody is subscribed ---- */

/* Idle tap: count 0; a SUB connects without subscribing; mirror something. */
static bool idle_1(scen_t *s)
{
    CHECK(s, bus_tap_subscribers(s->tap[0]) == 0);
    s->sub[0] = sub_new(s, s->ep[0], false);
    CHECK(s, s->sub[0] != NULL);
    bus_tap_mirror(s->tap[0], "out", "agent:1", s_env_early, sizeof s_env_early);
    return true;
}

/* After the connection is long up: a connection alone is no subscriber; mirror again. */
static bool idle_2(scen_t *s)
{
    if (!wait_ms(s, 150))
        return false;
    CHECK(s, bus_tap_subscribers(s->tap[0]) == 0);
    bus_tap_mirror(s->tap[0], "in", NULL, s_env_early, sizeof s_env_early);
    return true;
}

/* The unsubscribed SUB got nothing; nothing counts as dropped either. Now subscribe. */
static bool idle_3(scen_t *s)
{
    if (!wait_ms(s, 100))
        return false;
    CHECK(s, recv_msg(s, s->sub[0]) == 0);
    CHECK(s, bus_tap_subscribers(s->tap[0]) == 0);
    CHECK(s, bus_tap_dropped(s->tap[0]) == 0);
    CHECK(s, zmq_setsockopt(s->sub[0], ZMQ_SUBSCRIBE, "", 0) == 0);
    return true;
}

/* Waits for the subscription to be counted. */
static bool idle_4(scen_t *s)
{
    return bus_tap_subscribers(s->tap[0]) == 1;
}

/* Nothing mirrored before the subscription shows up late; then mirror one message. */
static bool idle_5(scen_t *s)
{
    if (!wait_ms(s, 100))
        return false;
    CHECK(s, recv_msg(s, s->sub[0]) == 0);
    bus_tap_mirror(s->tap[0], "out", "agent:1", s_env_after, sizeof s_env_after);
    return true;
}

/* The first message the subscriber receives is the one mirrored after it subscribed. */
static bool idle_6(scen_t *s)
{
    int r = recv_msg(s, s->sub[0]);
    CHECK(s, r >= 0);
    if (r == 0)
        return false;
    CHECK(s, msg_is(s, PROC " out agent:1", s_env_after, sizeof s_env_after));
    return true;
}

/* And nothing else follows it. */
static bool idle_7(scen_t *s)
{
    if (!wait_ms(s, 50))
        return false;
    CHECK(s, recv_msg(s, s->sub[0]) == 0);
    return true;
}

static void test_idle_sends_nothing(void **state)
{
    (void)state;
    scen_t *s = scen_new(1, "tap.ipc", NULL);
    static const step_fn steps[] = {idle_1, idle_2, idle_3, idle_4, idle_5, idle_6, idle_7};
    scen_run(s, steps, sizeof steps / sizeof *steps);
    scen_end(s);
}

/* ---- (b) the two-frame format ---- */

/* A subscriber to "". */
static bool frames_1(scen_t *s)
{
    s->sub[0] = sub_new(s, s->ep[0], true);
    CHECK(s, s->sub[0] != NULL);
    return true;
}

/* Once counted, mirror four envelopes: binary with NULs, no peer and large, empty, and one
 * whose peer name is longer than the header buffer. */
static bool frames_2(scen_t *s)
{
    if (bus_tap_subscribers(s->tap[0]) != 1)
        return false;
    char longpeer[300];
    memset(longpeer, 'p', sizeof longpeer - 1);
    longpeer[sizeof longpeer - 1] = '\0';
    bus_tap_mirror(s->tap[0], "out", "agent:3f2a9c", s_env_bin, sizeof s_env_bin);
    bus_tap_mirror(s->tap[0], "in", NULL, s_env_big, sizeof s_env_big);
    bus_tap_mirror(s->tap[0], "out", "bus", s_env_bin, 0);
    bus_tap_mirror(s->tap[0], "in", longpeer, s_env_bin, 1);
    CHECK(s, bus_tap_dropped(s->tap[0]) == 0);
    return true;
}

/* Receives and checks them, in order. */
static bool frames_3(scen_t *s)
{
    for (;;) {
        int r = recv_msg(s, s->sub[0]);
        CHECK(s, r >= 0);
        if (r == 0)
            return false;
        switch (s->got[0]++) {
        case 0:
            CHECK(s, msg_is(s, PROC " out agent:3f2a9c", s_env_bin, sizeof s_env_bin));
            break;
        case 1:
            CHECK(s, msg_is(s, PROC " in", s_env_big, sizeof s_env_big));
            break;
        case 2:
            CHECK(s, msg_is(s, PROC " out bus", s_env_bin, 0));
            break;
        default:
            /* Cut to the 191 bytes that fit, never overflowing. */
            CHECK(s, s->msg.hl == 191);
            CHECK(s, strncmp(s->msg.head, PROC " in ppp", strlen(PROC " in ppp")) == 0);
            CHECK(s, strspn(s->msg.head + strlen(PROC " in "), "p") == 191 - strlen(PROC " in "));
            CHECK(s, s->msg.bl == 1 && s->msg.body[0] == s_env_bin[0]);
            return true;
        }
    }
}

/* Nothing more arrives. */
static bool frames_4(scen_t *s)
{
    if (!wait_ms(s, 50))
        return false;
    CHECK(s, recv_msg(s, s->sub[0]) == 0);
    return true;
}

static void test_mirror_frames(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof s_env_big; i++)
        s_env_big[i] = (uint8_t)(i * 131 + i / 256);
    scen_t *s = scen_new(1, "frames.ipc", NULL);
    static const step_fn steps[] = {frames_1, frames_2, frames_3, frames_4};
    scen_run(s, steps, sizeof steps / sizeof *steps);
    scen_end(s);
}

/* ---- (c) the subscriber count ---- */

/* Two subscribers. */
static bool count_1(scen_t *s)
{
    s->sub[0] = sub_new(s, s->ep[0], true);
    s->sub[1] = sub_new(s, s->ep[0], true);
    CHECK(s, s->sub[0] != NULL && s->sub[1] != NULL);
    return true;
}

/* Both counted: mirror one message. */
static bool count_2(scen_t *s)
{
    if (bus_tap_subscribers(s->tap[0]) < 2)
        return false;
    CHECK(s, bus_tap_subscribers(s->tap[0]) == 2);
    bus_tap_mirror(s->tap[0], "out", "x", s_env_bin, sizeof s_env_bin);
    return true;
}

/* Each receives it; then the first closes. */
static bool count_3(scen_t *s)
{
    for (int i = 0; i < 2; i++) {
        int r = recv_msg(s, s->sub[i]);
        CHECK(s, r >= 0);
        if (r == 1) {
            CHECK(s, msg_is(s, PROC " out x", s_env_bin, sizeof s_env_bin));
            s->got[i]++;
        }
    }
    if (s->got[0] < 1 || s->got[1] < 1)
        return false;
    CHECK(s, s->got[0] == 1 && s->got[1] == 1);
    zmq_close(s->sub[0]);
    s->sub[0] = NULL;
    return true;
}

/* Closing a subscriber takes it off the count; the other still receives. */
static bool count_4(scen_t *s)
{
    int n = bus_tap_subscribers(s->tap[0]);
    CHECK(s, n >= 1);
    if (n != 1)
        return false;
    bus_tap_mirror(s->tap[0], "in", "y", s_env_after, sizeof s_env_after);
    return true;
}

/* The remaining subscriber receives; then it unsubscribes. */
static bool count_5(scen_t *s)
{
    int r = recv_msg(s, s->sub[1]);
    CHECK(s, r >= 0);
    if (r == 0)
        return false;
    CHECK(s, msg_is(s, PROC " in y", s_env_after, sizeof s_env_after));
    CHECK(s, zmq_setsockopt(s->sub[1], ZMQ_UNSUBSCRIBE, "", 0) == 0);
    return true;
}

/* Unsubscribing counts too; subscribe again. */
static bool count_6(scen_t *s)
{
    int n = bus_tap_subscribers(s->tap[0]);
    CHECK(s, n >= 0 && n <= 1);
    if (n != 0)
        return false;
    CHECK(s, zmq_setsockopt(s->sub[1], ZMQ_SUBSCRIBE, "", 0) == 0);
    return true;
}

/* Counted again; now close the last subscriber. */
static bool count_7(scen_t *s)
{
    int n = bus_tap_subscribers(s->tap[0]);
    CHECK(s, n >= 0 && n <= 1);
    if (n != 1)
        return false;
    zmq_close(s->sub[1]);
    s->sub[1] = NULL;
    return true;
}

/* Back to 0, and it stays there. */
static bool count_8(scen_t *s)
{
    int n = bus_tap_subscribers(s->tap[0]);
    CHECK(s, n >= 0 && n <= 1);
    return n == 0;
}

static bool count_9(scen_t *s)
{
    CHECK(s, bus_tap_subscribers(s->tap[0]) == 0);
    if (!wait_ms(s, 100))
        return false;
    CHECK(s, bus_tap_subscribers(s->tap[0]) == 0);
    bus_tap_mirror(s->tap[0], "out", "z", s_env_bin, sizeof s_env_bin);
    CHECK(s, bus_tap_dropped(s->tap[0]) == 0);
    return true;
}

static void test_subscriber_count(void **state)
{
    (void)state;
    scen_t *s = scen_new(1, "count.ipc", NULL);
    static const step_fn steps[] = {count_1, count_2, count_3, count_4, count_5,
                                    count_6, count_7, count_8, count_9};
    scen_run(s, steps, sizeof steps / sizeof *steps);
    scen_end(s);
}

/* ---- a subscriber that does not read: drops are counted, never torn ---- */

/* A subscriber with a tiny receive queue that reads nothing for now. */
static bool slow_1(scen_t *s)
{
    void *sub = zmq_socket(bus_loop_zctx(s->loop), ZMQ_SUB);
    CHECK(s, sub != NULL);
    s->sub[0] = sub;
    int zero = 0, ten = 10;
    CHECK(s, zmq_setsockopt(sub, ZMQ_LINGER, &zero, sizeof zero) == 0);
    CHECK(s, zmq_setsockopt(sub, ZMQ_RCVHWM, &ten, sizeof ten) == 0);
    CHECK(s, zmq_connect(sub, s->ep[0]) == 0);
    CHECK(s, zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0) == 0);
    return true;
}

/* Once counted, mirror far more than the tap's 10000-message queue holds, in one burst. */
static bool slow_2(scen_t *s)
{
    if (bus_tap_subscribers(s->tap[0]) != 1)
        return false;
    for (uint32_t i = 0; i < FLOOD; i++) {
        memcpy(s_env_flood, &i, sizeof i);
        bus_tap_mirror(s->tap[0], "out", "flood", s_env_flood, sizeof s_env_flood);
    }
    CHECK(s, bus_tap_dropped(s->tap[0]) > 0);
    CHECK(s, bus_tap_dropped(s->tap[0]) < FLOOD);
    return true;
}

/* Reads everything: each message whole and in order; delivered plus dropped is all of them. */
static bool slow_3(scen_t *s)
{
    /* With a 10-message receive queue, wait here a little for the next few rather than
     * letting each 2 ms tick collect only ten (the tap sends without the loop's help). */
    int64_t until = now_ms() + 50;
    for (;;) {
        int r = recv_msg(s, s->sub[0]);
        CHECK(s, r >= 0);
        if (r == 0) {
            zmq_pollitem_t item = {.socket = s->sub[0], .events = ZMQ_POLLIN};
            if (now_ms() < until && zmq_poll(&item, 1, 5) > 0)
                continue;
            break;
        }
        uint32_t seq;
        CHECK(s, s->msg.bl == FLOOD_LEN);
        CHECK(s, strcmp(s->msg.head, PROC " out flood") == 0);
        memcpy(&seq, s->msg.body, sizeof seq);
        CHECK(s, seq >= s->mark && seq < FLOOD); /* ascending (gaps where dropped) */
        s->mark = (uint64_t)seq + 1;
        s->got[0]++;
    }
    uint64_t done = (uint64_t)s->got[0] + bus_tap_dropped(s->tap[0]);
    CHECK(s, done <= FLOOD);
    return done == FLOOD;
}

/* Once the subscriber has caught up, messages flow again (retrying while the tap still
 * believes the queue full: the reader's progress reaches it asynchronously). */
static bool slow_4(scen_t *s)
{
    uint64_t before = bus_tap_dropped(s->tap[0]);
    bus_tap_mirror(s->tap[0], "in", "last", s_env_after, sizeof s_env_after);
    return bus_tap_dropped(s->tap[0]) == before;
}

static bool slow_5(scen_t *s)
{
    int r = recv_msg(s, s->sub[0]);
    CHECK(s, r >= 0);
    if (r == 0)
        return false;
    CHECK(s, msg_is(s, PROC " in last", s_env_after, sizeof s_env_after));
    return true;
}

static void test_slow_subscriber_drops_counted(void **state)
{
    (void)state;
    scen_t *s = scen_new(1, "slow.ipc", NULL);
    static const step_fn steps[] = {slow_1, slow_2, slow_3, slow_4, slow_5};
    scen_run(s, steps, sizeof steps / sizeof *steps);
    scen_end(s);
}

/* ---- (d) tap off, NULL handles, bad endpoints ---- */

static void test_off_and_bad_endpoints(void **state)
{
    (void)state;
    bus_loop_t *loop = bus_loop_new(NULL, NULL);
    assert_non_null(loop);
    int err = 12345;
    assert_null(bus_tap_new(loop, "", PROC, &err));
    assert_int_equal(err, 0);
    err = 12345;
    assert_null(bus_tap_new(loop, NULL, PROC, &err));
    assert_int_equal(err, 0);

    /* Every call accepts the NULL of a tap that is off. */
    bus_tap_t *off = NULL;
    bus_tap_mirror(off, "out", "peer", s_env_bin, sizeof s_env_bin);
    bus_tap_mirror(off, "in", NULL, NULL, 0);
    assert_int_equal(bus_tap_subscribers(off), 0);
    assert_int_equal(bus_tap_dropped(off), 0);
    bus_tap_destroy(&off);
    assert_null(off);
    bus_tap_destroy(NULL);

    char missing_dir[160];
    snprintf(missing_dir, sizeof missing_dir, "ipc://%s/no/such/dir/tap.ipc", s_tmpdir);
    const char *bad[] = {"bogus://x", "tcp://",    "tcp://127.0.0.1:notaport",
                         "ipc://",    missing_dir, "no-scheme-at-all"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err = 0;
        bus_tap_t *t = bus_tap_new(loop, bad[i], PROC, &err);
        if (t || err >= 0)
            fail_msg("endpoint \"%s\": tap %p, err %d", bad[i], (void *)t, err);
    }

    /* After those failures, a good endpoint still binds. */
    char ep[128];
    endpoint_of(ep, sizeof ep, "good.ipc");
    err = 1;
    bus_tap_t *good = bus_tap_new(loop, ep, PROC, &err);
    assert_non_null(good);
    assert_int_equal(err, 0);
    assert_int_equal(bus_tap_subscribers(good), 0);
    assert_int_equal(bus_tap_dropped(good), 0);
    bus_tap_mirror(good, "out", NULL, s_env_bin, sizeof s_env_bin); /* nobody listens */
    assert_int_equal(bus_tap_dropped(good), 0);

    bus_loop_close_lws(loop);
    bus_tap_destroy(&good);
    assert_null(good);
    bus_loop_destroy(&loop);
}

/* ---- (e) a stale ipc file does not prevent binding ---- */

/* Leaves a socket file at path, as a killed process would: bound, then closed, not unlinked. */
static void make_stale_socket(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa = {0};
    sa.sun_family = AF_UNIX;
    assert_true(strlen(path) < sizeof sa.sun_path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 1), 0);
    close(fd);
    assert_int_equal(access(path, F_OK), 0);
}

/* A subscriber on each tap. */
static bool stale_1(scen_t *s)
{
    for (int i = 0; i < 2; i++) {
        s->sub[i] = sub_new(s, s->ep[i], true);
        CHECK(s, s->sub[i] != NULL);
    }
    return true;
}

/* Both taps see their subscriber: they really listen at those paths. Mirror on each. */
static bool stale_2(scen_t *s)
{
    if (bus_tap_subscribers(s->tap[0]) != 1 || bus_tap_subscribers(s->tap[1]) != 1)
        return false;
    bus_tap_mirror(s->tap[0], "out", "zero", s_env_bin, sizeof s_env_bin);
    bus_tap_mirror(s->tap[1], "out", "one", s_env_bin, sizeof s_env_bin);
    return true;
}

/* Each subscriber gets its own tap's message. */
static bool stale_3(scen_t *s)
{
    static const char *heads[2] = {PROC " out zero", PROC " out one"};
    for (int i = 0; i < 2; i++) {
        if (s->got[i])
            continue;
        int r = recv_msg(s, s->sub[i]);
        CHECK(s, r >= 0);
        if (r == 1) {
            CHECK(s, msg_is(s, heads[i], s_env_bin, sizeof s_env_bin));
            s->got[i]++;
        }
    }
    return s->got[0] && s->got[1];
}

static void test_stale_ipc_file(void **state)
{
    (void)state;
    char path[2][128];
    snprintf(path[0], sizeof path[0], "%s/stale-sock.ipc", s_tmpdir);
    snprintf(path[1], sizeof path[1], "%s/stale-file.ipc", s_tmpdir);
    make_stale_socket(path[0]);
    tu_write_text(path[1], "left behind\n");
    scen_t *s = scen_new(2, "stale-sock.ipc", "stale-file.ipc");
    static const step_fn steps[] = {stale_1, stale_2, stale_3};
    scen_run(s, steps, sizeof steps / sizeof *steps);
    scen_end(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_sends_nothing),
        cmocka_unit_test(test_mirror_frames),
        cmocka_unit_test(test_subscriber_count),
        cmocka_unit_test(test_slow_subscriber_drops_counted),
        cmocka_unit_test(test_off_and_bad_endpoints),
        cmocka_unit_test(test_stale_ipc_file),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
