/* tun_registry: agent registry snapshots loaded off the event loop. */
#include "tun_registry.h"
#include "bus_log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    store_agent_t *agents; /* sorted by id */
    size_t n;              /* count */
} s_snapshot_t;

struct tun_registry {
    store_params_t params;   /* copy of the connection parameters */
    char *sqlite_path;       /* owned copies of the strings in params */
    char *mysql_url;
    int64_t poll_ms;         /* re-read interval */
    pthread_t thread;        /* the worker */
    bool thread_started;     /* join on destroy */
    atomic_bool quit;        /* ask the worker to stop */
    atomic_bool poke;        /* look for changes now */
    pthread_mutex_t lock;    /* guards pending */
    s_snapshot_t *pending;   /* made by the worker, not yet adopted by the loop */
    s_snapshot_t *current;   /* the loop's snapshot */
    uint64_t generation;     /* snapshots adopted so far */
    atomic_ullong errors;    /* database errors */
};

static void s_snapshot_free(s_snapshot_t *s)
{
    if (s) {
        free(s->agents);
        free(s);
    }
}

static int s_cmp_agent(const void *a, const void *b)
{
    return strcmp(((const store_agent_t *)a)->id, ((const store_agent_t *)b)->id);
}

/* Sleeps for ms, waking early when asked to quit. */
static void s_sleep_ms(tun_registry_t *r, int64_t ms)
{
    while (ms > 0 && !atomic_load(&r->quit) && !atomic_exchange(&r->poke, false)) {
        int64_t step = ms > 50 ? 50 : ms;
        struct timespec ts = {0, (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

/* Worker: (re)connects, polls the change counter and publishes snapshots. */
static void *s_worker(void *arg)
{
    tun_registry_t *r = arg;
    store_t *st = NULL;
    int64_t seen_rev = -1;
    bool warned = false;
    while (!atomic_load(&r->quit)) {
        char err[256];
        if (!st && store_open(&r->params, &st, err, sizeof err) != 0) {
            atomic_fetch_add(&r->errors, 1);
            if (!warned)
                log_err("registry_unavailable", "agent registry: %s (retrying)", err);
            warned = true;
            s_sleep_ms(r, 1000);
            continue;
        }
        int64_t rev = 0;
        if (store_agents_rev(st, &rev) != 0) {
            atomic_fetch_add(&r->errors, 1);
            log_err("registry_error", "agent registry: %s (reconnecting)", store_last_error(st));
            store_destroy(&st);
            s_sleep_ms(r, 1000);
            continue;
        }
        if (warned) {
            log_info("registry_available", "agent registry reachable again");
            warned = false;
        }
        if (rev != seen_rev) {
            s_snapshot_t *snap = calloc(1, sizeof *snap);
            if (snap && store_agent_list(st, &snap->agents, &snap->n) == 0) {
                if (snap->n)
                    qsort(snap->agents, snap->n, sizeof *snap->agents, s_cmp_agent);
                pthread_mutex_lock(&r->lock);
                s_snapshot_free(r->pending);
                r->pending = snap;
                pthread_mutex_unlock(&r->lock);
                seen_rev = rev;
                log_debug("registry_loaded", "%zu agents (rev %lld)", snap->n, (long long)rev);
            } else {
                s_snapshot_free(snap);
                atomic_fetch_add(&r->errors, 1);
                store_destroy(&st);
            }
        }
        s_sleep_ms(r, r->poll_ms);
    }
    store_destroy(&st);
    return NULL;
}

tun_registry_t *tun_registry_new(const store_params_t *params, int64_t poll_ms)
{
    tun_registry_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->params = *params;
    r->sqlite_path = params->sqlite_path ? strdup(params->sqlite_path) : NULL;
    r->mysql_url = params->mysql_url ? strdup(params->mysql_url) : NULL;
    r->params.sqlite_path = r->sqlite_path;
    r->params.mysql_url = r->mysql_url;
    r->poll_ms = poll_ms;
    pthread_mutex_init(&r->lock, NULL);
    if (pthread_create(&r->thread, NULL, s_worker, r) != 0) {
        tun_registry_destroy(&r);
        return NULL;
    }
    r->thread_started = true;
    return r;
}

void tun_registry_destroy(tun_registry_t **p)
{
    if (!p || !*p)
        return;
    tun_registry_t *r = *p;
    atomic_store(&r->quit, true);
    if (r->thread_started)
        pthread_join(r->thread, NULL);
    s_snapshot_free(r->pending);
    s_snapshot_free(r->current);
    pthread_mutex_destroy(&r->lock);
    free(r->sqlite_path);
    free(r->mysql_url);
    free(r);
    *p = NULL;
}

bool tun_registry_refresh(tun_registry_t *r)
{
    s_snapshot_t *snap;
    pthread_mutex_lock(&r->lock);
    snap = r->pending;
    r->pending = NULL;
    pthread_mutex_unlock(&r->lock);
    if (!snap)
        return false;
    s_snapshot_free(r->current);
    r->current = snap;
    r->generation++;
    return true;
}

void tun_registry_poke(tun_registry_t *r)
{
    atomic_store(&r->poke, true);
}

uint64_t tun_registry_generation(const tun_registry_t *r)
{
    return r->generation;
}

int tun_registry_lookup(void *arg, const char *agent_id, tun_hs_agent_t *out)
{
    tun_registry_t *r = arg;
    tun_registry_refresh(r);
    if (!r->current)
        return -EAGAIN;
    store_agent_t key;
    memset(&key, 0, sizeof key);
    size_t l = strlen(agent_id);
    if (l >= sizeof key.id)
        return -ENOENT;
    memcpy(key.id, agent_id, l + 1);
    const store_agent_t *a =
        r->current->n ? bsearch(&key, r->current->agents, r->current->n, sizeof key, s_cmp_agent)
                      : NULL;
    if (!a)
        return -ENOENT;
    memcpy(out->pubkey, a->pubkey, sizeof out->pubkey);
    out->disabled = strcmp(a->status, "active") != 0;
    memcpy(out->name, a->name, sizeof out->name);
    return 0;
}

bool tun_registry_ready(const tun_registry_t *r)
{
    return r->current != NULL;
}

size_t tun_registry_count(const tun_registry_t *r)
{
    return r->current ? r->current->n : 0;
}

uint64_t tun_registry_errors(const tun_registry_t *r)
{
    return atomic_load(&((tun_registry_t *)r)->errors);
}
