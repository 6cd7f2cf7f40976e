/* ag_curl: curl multi + epoll set + bus_loop timer. */
#include "ag_curl.h"
#include "ag_fd.h"
#include "bus_log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define S_EVENTS_PER_TURN 64 /* ready sockets handled per wake-up; the rest wait for the next */

struct ag_curl {
    bus_loop_t *loop;     /* borrowed */
    CURLM *multi;         /* the multi handle */
    int epfd;             /* epoll set of curl's sockets (owned by the ag_fd watch) */
    ag_fd_t *watch;       /* the epoll descriptor in the lws loop */
    bus_timer_t timer;    /* curl's timeout */
    ag_curl_done_cb done; /* finished transfers */
    void *arg;            /* its context */
    bool in_check;        /* inside s_check_done (no nesting) */
};

/* Reports finished transfers to the owner. */
static void s_check_done(ag_curl_t *c)
{
    if (c->in_check)
        return;
    c->in_check = true;
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg == CURLMSG_DONE)
            c->done(c->arg, m->easy_handle, m->data.result);
    }
    c->in_check = false;
}

/* curl's timer fired: let it run its timeouts. */
static void s_on_timer(bus_timer_t *t)
{
    ag_curl_t *c = t->arg;
    int running;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    s_check_done(c);
}

/* CURLMOPT_TIMERFUNCTION: -1 cancels, otherwise (re)arm; curl is never called from here. */
static int s_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    ag_curl_t *c = userp;
    (void)multi;
    if (timeout_ms < 0)
        bus_timer_cancel(c->loop, &c->timer);
    else
        bus_timer_start(c->loop, &c->timer, s_on_timer, c, (int64_t)timeout_ms * 1000);
    return 0;
}

/* CURLMOPT_SOCKETFUNCTION: mirrors curl's interest in a socket into the epoll set. */
static int s_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    ag_curl_t *c = userp;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        /* The socket may already be closed; epoll drops closed descriptors by itself. */
        epoll_ctl(c->epfd, EPOLL_CTL_DEL, s, NULL);
        curl_multi_assign(c->multi, s, NULL);
        return 0;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.data.fd = s;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev.events |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev.events |= EPOLLOUT;
    int op = socketp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(c->epfd, op, s, &ev) != 0) {
        /* A reused descriptor number: the other operation is the right one. */
        op = op == EPOLL_CTL_ADD ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
        if (epoll_ctl(c->epfd, op, s, &ev) != 0) {
            log_debug("curl_epoll", "epoll_ctl on %d failed: %s", (int)s, strerror(errno));
            return -1;
        }
    }
    curl_multi_assign(c->multi, s, (void *)1);
    return 0;
}

/* The epoll descriptor is readable: hand every ready socket to curl. */
static void s_on_ready(void *arg, int fd)
{
    ag_curl_t *c = arg;
    struct epoll_event evs[S_EVENTS_PER_TURN];
    int n = epoll_wait(fd, evs, S_EVENTS_PER_TURN, 0);
    for (int i = 0; i < n; i++) {
        int flags = 0;
        if (evs[i].events & (EPOLLIN | EPOLLHUP))
            flags |= CURL_CSELECT_IN;
        if (evs[i].events & EPOLLOUT)
            flags |= CURL_CSELECT_OUT;
        if (evs[i].events & EPOLLERR)
            flags |= CURL_CSELECT_ERR;
        int running;
        curl_multi_socket_action(c->multi, evs[i].data.fd, flags, &running);
    }
    s_check_done(c);
}

ag_curl_t *ag_curl_new(bus_loop_t *loop, ag_curl_done_cb done, void *arg)
{
    ag_curl_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->loop = loop;
    c->done = done;
    c->arg = arg;
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (c->epfd < 0)
        goto fail;
    c->watch = ag_fd_new(loop, c->epfd, s_on_ready, c);
    if (!c->watch) {
        c->epfd = -1; /* closed by ag_fd_new */
        goto fail;
    }
    c->multi = curl_multi_init();
    if (!c->multi)
        goto fail;
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, s_socket_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, s_timer_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    /* Keep idle vendor connections: curl's default pool (4 x the handles in use) shrinks
     * whenever load dips, and every new TLS connection to the vendor costs a handshake and a
     * CA bundle load (the proxy benchmark saw one for every five requests at 64 connections). */
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, 512L);
    return c;
fail:
    ag_curl_destroy(&c);
    return NULL;
}

void ag_curl_destroy(ag_curl_t **p)
{
    if (!p || !*p)
        return;
    ag_curl_t *c = *p;
    bus_timer_cancel(c->loop, &c->timer);
    if (c->multi)
        curl_multi_cleanup(c->multi);
    if (c->watch)
        ag_fd_destroy(&c->watch); /* lws closes epfd */
    else if (c->epfd >= 0)
        close(c->epfd);
    free(c);
    *p = NULL;
}

CURLM *ag_curl_multi(ag_curl_t *c)
{
    return c->multi;
}

int ag_curl_add(ag_curl_t *c, CURL *easy)
{
    return curl_multi_add_handle(c->multi, easy) == CURLM_OK ? 0 : -EIO;
}

void ag_curl_remove(ag_curl_t *c, CURL *easy)
{
    curl_multi_remove_handle(c->multi, easy);
}

/* Zero-delay continuation after a pause change: curl may have work due now. */
void ag_curl_kick(ag_curl_t *c)
{
    bus_timer_start(c->loop, &c->timer, s_on_timer, c, 0);
}
