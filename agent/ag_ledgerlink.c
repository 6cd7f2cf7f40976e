/* ag_ledgerlink: agent-ledger supervision and relay inside `agent run` (see ag_ledgerlink.h). */
#include "ag_ledgerlink.h"
#include "ag_fd.h"
#include "ag_spawn.h"
#include "backoff.h"
#include "bus_log.h"
#include "bus_plat.h"
#include "strmap.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define S_IDENT "ledger"              /* agent-ledger's routing id */
#define S_TICK_US 200000              /* record resends and waits */
#define S_RECORD_WAIT_US 2000000ull   /* resp.end waits this long for the record at most */
#define S_RECORD_RESEND_US 1000000ull /* an unwritten record is sent again this often */
#define S_MAX_PENDING 200000          /* records waiting for agent-ledger, at most */
#define S_STOP_GRACE_MS 2000

/* A usage record not yet written by agent-ledger. */
typedef struct s_rec {
    char key[48];          /* req hex ":" attempt */
    uint8_t *report;       /* the usage.report's encoding */
    size_t report_len;
    uint8_t *held;         /* the resp.end to send once written (NULL once sent) */
    size_t held_len;
    uint64_t first_us, sent_us;
    struct s_rec *prev, *next;
} s_rec_t;

struct ag_ledgerlink {
    bus_loop_t *loop;
    const ag_config_t *cfg;
    ag_super_args_t args;
    ag_hub_ops_t hub;
    char exe[4096];
    void *sock;            /* ROUTER at agent.ledger_ipc */
    bus_zwatch_t *watch;
    pid_t pid;             /* agent-ledger, 0 when not running */
    ag_fd_t *pidfd;
    bus_timer_t restart, reap, tick;
    backoff_t backoff;
    bool stopping;
    strmap_t *recs;        /* key → s_rec_t */
    s_rec_t *rec_list;
    bus_buf_t enc;
};

static void s_spawn(ag_ledgerlink_t *l);

/* ---- records ------------------------------------------------------------------------------ */

static void s_rec_key(const uint8_t req_id[16], uint64_t attempt, char key[48])
{
    char hex[33];
    bus_req_id_hex(req_id, hex);
    snprintf(key, 48, "%s:%llu", hex, (unsigned long long)attempt);
}

static void s_rec_free(ag_ledgerlink_t *l, s_rec_t *r)
{
    strmap_del(l->recs, r->key);
    if (r->prev)
        r->prev->next = r->next;
    else
        l->rec_list = r->next;
    if (r->next)
        r->next->prev = r->prev;
    free(r->report);
    free(r->held);
    free(r);
}

/* Sends a record's held resp.end to the hub (once). */
static void s_release(ag_ledgerlink_t *l, s_rec_t *r)
{
    if (!r->held)
        return;
    l->hub.send_raw(l->hub.arg, r->held, r->held_len);
    free(r->held);
    r->held = NULL;
}

/* ---- agent-ledger's socket ------------------------------------------------------------------ */

/* Sends encoded bytes to agent-ledger. 0, or -EHOSTUNREACH while it is not connected. */
static int s_to_ledger(ag_ledgerlink_t *l, const uint8_t *raw, size_t len)
{
    if (!l->sock)
        return -ENOTCONN;
    if (zmq_send(l->sock, S_IDENT, strlen(S_IDENT), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(l->sock, raw, len, ZMQ_DONTWAIT) < 0)
        return -errno;
    bus_zwatch_poke(l->watch);
    return 0;
}

static int s_env_to_ledger(ag_ledgerlink_t *l, const bus_env_t *env)
{
    bus_buf_reset(&l->enc);
    int rc = bus_env_encode(env, &l->enc);
    return rc ? rc : s_to_ledger(l, l->enc.data, l->enc.len);
}

/* Re-sends every record agent-ledger has not written (it has just come up, or a timer). */
static void s_resend_all(ag_ledgerlink_t *l)
{
    uint64_t now = plat_mono_us();
    for (s_rec_t *r = l->rec_list; r; r = r->next) {
        r->sent_us = now;
        s_to_ledger(l, r->report, r->report_len);
    }
}

static void s_on_ledger(void *arg, void *zsock)
{
    ag_ledgerlink_t *l = arg;
    zmq_msg_t parts[2];
    int n = bus_zrecv_parts(zsock, parts, 2);
    if (n < 2)
        goto out;
    if (zmq_msg_size(&parts[0]) != strlen(S_IDENT) ||
        memcmp(zmq_msg_data(&parts[0]), S_IDENT, strlen(S_IDENT)) != 0)
        goto out;
    const uint8_t *raw = zmq_msg_data(&parts[1]);
    size_t len = zmq_msg_size(&parts[1]);
    bus_env_t env;
    char err[160];
    if (bus_env_decode(raw, len, &env, err, sizeof err) != 0) {
        log_warn("bad_message", "from agent-ledger: %s", err);
        goto out;
    }
    switch (env.type) {
    case BUS_T_USAGE_ACK: {
        bus_str_t src = env.u.usage_ack.source;
        if (!env.has_req_id || !bus_str_is(src, "ledger"))
            break;
        char key[48];
        s_rec_key(env.req_id, env.u.usage_ack.attempt, key);
        s_rec_t *r = strmap_get(l->recs, key);
        if (r) {
            s_release(l, r);
            s_rec_free(l, r);
        }
        break;
    }
    case BUS_T_LEDGER_SYNC:
        /* agent-ledger (re)started: whatever it had not written is sent again. */
        s_resend_all(l);
        /* fall through */
    case BUS_T_USAGE_REPORT:
    case BUS_T_LEDGER_ACK:
    case BUS_T_LEDGER_NACK:
        l->hub.send_raw(l->hub.arg, raw, len);
        break;
    default:
        log_warn("bad_message", "agent-ledger sent %s", bus_type_name(env.type));
        break;
    }
out:
    for (int i = 0; i < n; i++)
        zmq_msg_close(&parts[i]);
}

/* ---- supervision ---------------------------------------------------------------------------- */

static void s_on_restart(bus_timer_t *t)
{
    s_spawn(t->arg);
}

static void s_gone(ag_ledgerlink_t *l, int status)
{
    if (WIFSIGNALED(status))
        log_warn("ledger_died", "agent-ledger (pid %d) died (signal %d)", (int)l->pid,
                 WTERMSIG(status));
    else
        log_warn("ledger_died", "agent-ledger (pid %d) exited (%d)", (int)l->pid,
                 WEXITSTATUS(status));
    l->pid = 0;
    ag_fd_destroy(&l->pidfd);
    bus_timer_cancel(l->loop, &l->reap);
    backoff_disconnected(&l->backoff, plat_mono_us());
    if (l->stopping)
        return;
    int64_t ms = backoff_next_ms(&l->backoff, NULL);
    log_info("ledger_restart", "agent-ledger restarts in %lld ms", (long long)ms);
    bus_timer_start(l->loop, &l->restart, s_on_restart, l, ms * 1000);
}

static int s_try_reap(ag_ledgerlink_t *l)
{
    int status = 0;
    if (!l->pid)
        return 0;
    pid_t r = waitpid(l->pid, &status, WNOHANG);
    if (r == l->pid || (r < 0 && errno == ECHILD)) {
        s_gone(l, r == l->pid ? status : 0);
        return 1;
    }
    return 0;
}

static void s_on_reap(bus_timer_t *t)
{
    ag_ledgerlink_t *l = t->arg;
    if (!s_try_reap(l))
        bus_timer_start(l->loop, &l->reap, s_on_reap, l, 200000);
}

static void s_on_pidfd(void *arg, int fd)
{
    ag_ledgerlink_t *l = arg;
    (void)fd;
    if (!s_try_reap(l)) {
        ag_fd_destroy(&l->pidfd);
        bus_timer_start(l->loop, &l->reap, s_on_reap, l, 200000);
    }
}

static void s_spawn(ag_ledgerlink_t *l)
{
    if (l->stopping || l->pid)
        return;
    char parent[24];
    snprintf(parent, sizeof parent, "%d", (int)getpid());
    const char *const extra[] = {"--parent", parent, NULL};
    pid_t pid = ag_spawn(l->exe, l->args.config, l->args.sets, l->args.n_sets, extra);
    if (pid < 0) {
        log_err("ledger_spawn_failed", "%s: %s", l->exe, strerror((int)-pid));
        int64_t ms = backoff_next_ms(&l->backoff, NULL);
        bus_timer_start(l->loop, &l->restart, s_on_restart, l, ms * 1000);
        return;
    }
    l->pid = pid;
    backoff_connected(&l->backoff, plat_mono_us());
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    l->pidfd = pfd >= 0 ? ag_fd_new(l->loop, pfd, s_on_pidfd, l) : NULL;
    if (!l->pidfd)
        bus_timer_start(l->loop, &l->reap, s_on_reap, l, 200000);
    log_info("ledger_started", "agent-ledger started (pid %d)", (int)pid);
}

/* Records waiting too long release their resp.end; unwritten ones are sent again. */
static void s_tick(bus_timer_t *t)
{
    ag_ledgerlink_t *l = t->arg;
    uint64_t now = plat_mono_us();
    for (s_rec_t *r = l->rec_list; r; r = r->next) {
        if (r->held && now - r->first_us >= S_RECORD_WAIT_US) {
            log_warn("ledger_slow", "agent-ledger has not written a usage record in %llu ms: "
                     "ending the stream anyway (%s)",
                     (unsigned long long)(S_RECORD_WAIT_US / 1000), r->key);
            s_release(l, r);
        }
        if (now - r->sent_us >= S_RECORD_RESEND_US) {
            r->sent_us = now;
            s_to_ledger(l, r->report, r->report_len);
        }
    }
    bus_timer_start(l->loop, &l->tick, s_tick, l, S_TICK_US);
}

/* ---- API ------------------------------------------------------------------------------------ */

ag_ledgerlink_t *ag_ledgerlink_new(bus_loop_t *loop, const ag_config_t *cfg,
                                   const ag_super_args_t *args, const ag_hub_ops_t *hub)
{
    ag_ledgerlink_t *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->loop = loop;
    l->cfg = cfg;
    l->args = *args;
    l->hub = *hub;
    bus_buf_init(&l->enc, 4096);
    backoff_init(&l->backoff, 200, 10000, 30000);
    l->recs = strmap_new();
    if (!l->recs)
        goto fail;
    /* agent-ledger beside agent-adapter (args->exe) unless configured. */
    if (cfg->ledger_exe && cfg->ledger_exe[0]) {
        snprintf(l->exe, sizeof l->exe, "%s", cfg->ledger_exe);
    } else {
        const char *slash = strrchr(args->exe, '/');
        int dl = slash ? (int)(slash - args->exe + 1) : 0;
        snprintf(l->exe, sizeof l->exe, "%.*sagent-ledger", dl, args->exe);
    }
    l->sock = zmq_socket(bus_loop_zctx(loop), ZMQ_ROUTER);
    if (!l->sock)
        goto fail;
    int one = 1, zero = 0, hwm = 100000;
    zmq_setsockopt(l->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    /* A restarted agent-ledger reconnects under the same identity: it takes it over. */
    zmq_setsockopt(l->sock, ZMQ_ROUTER_HANDOVER, &one, sizeof one);
    zmq_setsockopt(l->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(l->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(l->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (zmq_bind(l->sock, cfg->ledger_ipc) != 0) {
        log_err("bind_failed", "agent.ledger_ipc %s: %s", cfg->ledger_ipc, zmq_strerror(errno));
        goto fail;
    }
    l->watch = bus_zwatch_new(loop, l->sock, s_on_ledger, l);
    if (!l->watch)
        goto fail;
    s_spawn(l);
    bus_timer_start(loop, &l->tick, s_tick, l, S_TICK_US);
    return l;
fail:
    ag_ledgerlink_destroy(&l);
    return NULL;
}

void ag_ledgerlink_destroy(ag_ledgerlink_t **p)
{
    if (!p || !*p)
        return;
    ag_ledgerlink_t *l = *p;
    l->stopping = true;
    bus_timer_cancel(l->loop, &l->tick);
    bus_timer_cancel(l->loop, &l->restart);
    bus_timer_cancel(l->loop, &l->reap);
    if (l->pid) {
        kill(l->pid, SIGTERM);
        for (long waited = 0; waitpid(l->pid, NULL, WNOHANG) == 0; waited += 10) {
            if (waited >= S_STOP_GRACE_MS) {
                kill(l->pid, SIGKILL);
                waitpid(l->pid, NULL, 0);
                break;
            }
            struct timespec ts = {0, 10000000L};
            nanosleep(&ts, NULL);
        }
        l->pid = 0;
    }
    ag_fd_destroy(&l->pidfd);
    while (l->rec_list) {
        s_release(l, l->rec_list);
        s_rec_free(l, l->rec_list);
    }
    bus_zwatch_destroy(&l->watch);
    if (l->sock)
        zmq_close(l->sock);
    strmap_destroy(&l->recs);
    bus_buf_free(&l->enc);
    free(l);
    *p = NULL;
}

void ag_ledgerlink_from_hub(ag_ledgerlink_t *l, const bus_env_t *env, const uint8_t *raw,
                            size_t len, bool in_flight)
{
    if (!l)
        return;
    if (env->type == BUS_T_LEDGER_TX) {
        /* Only this process may say a stream is in flight: whatever the hub wrote is reset. */
        bus_env_t e = *env;
        e.u.ledger_tx.in_flight = in_flight;
        s_env_to_ledger(l, &e);
        return;
    }
    s_to_ledger(l, raw, len);
}

void ag_ledgerlink_online(ag_ledgerlink_t *l)
{
    if (!l)
        return;
    bus_env_t e;
    bus_env_init(&e, BUS_T_BILLING_POKE, NULL);
    e.u.billing_poke.what = bus_str_c("online");
    s_env_to_ledger(l, &e);
}

int ag_ledgerlink_record(ag_ledgerlink_t *l, const bus_env_t *report, const uint8_t *held,
                         size_t held_len)
{
    if (!l) {
        if (held)
            return -EINVAL;
        return 0;
    }
    char key[48];
    s_rec_key(report->req_id, report->u.usage_report.attempt, key);
    s_rec_t *r = strmap_get(l->recs, key);
    if (r) {
        s_release(l, r); /* a second end of the same attempt: the first is over */
        s_rec_free(l, r);
    }
    if (strmap_count(l->recs) >= S_MAX_PENDING)
        goto nomem;
    r = calloc(1, sizeof *r);
    if (!r)
        goto nomem;
    memcpy(r->key, key, sizeof key);
    bus_buf_reset(&l->enc);
    if (bus_env_encode(report, &l->enc) != 0 || !(r->report = malloc(l->enc.len)) ||
        (held && !(r->held = malloc(held_len)))) {
        free(r->report);
        free(r);
        goto nomem;
    }
    memcpy(r->report, l->enc.data, l->enc.len);
    r->report_len = l->enc.len;
    if (held) {
        memcpy(r->held, held, held_len);
        r->held_len = held_len;
    }
    if (strmap_put(l->recs, r->key, r) != 0) {
        free(r->report);
        free(r->held);
        free(r);
        goto nomem;
    }
    r->next = l->rec_list;
    if (r->next)
        r->next->prev = r;
    l->rec_list = r;
    r->first_us = r->sent_us = plat_mono_us();
    s_to_ledger(l, r->report, r->report_len);
    return 0;
nomem:
    log_err("usage_record_lost", "cannot keep a usage record (%s): the hub settles this request "
            "from the gateway's figure", key);
    if (held)
        l->hub.send_raw(l->hub.arg, held, held_len);
    return -ENOMEM;
}
