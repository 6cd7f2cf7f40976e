/* gw_auth: key cache, lookup worker thread, eventfd back to the loop. */
#include "gw_auth.h"
#include "apikey.h"
#include "bus_log.h"
#include "strmap.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

typedef struct s_job {
    struct s_job *next;           /* queue link */
    uint64_t ticket;              /* who asked */
    uint8_t hash[APIKEY_HASH_LEN]; /* what to look up */
    int status;                   /* result: 0, -EACCES, -EAGAIN */
    gw_principal_t who;           /* result when 0 */
    uint64_t gen;                 /* cache generation when queued */
    gw_auth_cb cb;                /* requester */
    void *arg;
} s_job_t;

typedef struct {
    int status;         /* 0 or -EACCES */
    gw_principal_t who; /* when 0 */
} s_entry_t;

struct gw_auth {
    bus_loop_t *loop;           /* borrowed */
    store_params_t params;      /* copy, strings owned below */
    char *sqlite_path, *mysql_url;
    int64_t poll_ms;            /* rev poll interval */
    size_t max_entries;         /* cache limit */
    strmap_t *cache;           /* hex(hash) → s_entry_t */
    strmap_t *waiting;         /* ticket (decimal) → s_job_t queued, for cancel */
    uint64_t next_ticket;       /* ticket counter */
    int efd;                    /* worker → loop wake-up */
    bus_fdwatch_t *watch;       /* on efd */
    pthread_t thread;           /* the worker */
    bool started;               /* join on destroy */
    pthread_mutex_t lock;       /* guards todo, done, flush */
    pthread_cond_t cond;        /* worker wake-up */
    s_job_t *todo, *todo_tail;  /* loop → worker */
    s_job_t *done;              /* worker → loop */
    bool flush;                 /* worker saw a change: loop drops the cache */
    bool quit;                  /* stop the worker */
    atomic_bool ready;          /* database reached once */
    uint64_t hits, misses;      /* statistics */
    uint64_t gen;               /* bumped by every flush */
};

static void s_hex(const uint8_t hash[APIKEY_HASH_LEN], char out[2 * APIKEY_HASH_LEN + 1])
{
    sodium_bin2hex(out, 2 * APIKEY_HASH_LEN + 1, hash, APIKEY_HASH_LEN);
}

static void s_free_value(void *arg, const char *key, void *value)
{
    (void)arg;
    (void)key;
    free(value);
}

static void s_flush_cache(gw_auth_t *a)
{
    a->gen++;
    strmap_each(a->cache, s_free_value, NULL);
    strmap_destroy(&a->cache);
    a->cache = strmap_new();
}

/* Worker: answers lookups and watches the change counter. */
static void *s_worker(void *arg)
{
    gw_auth_t *a = arg;
    store_t *st = NULL;
    int64_t seen_rev = -1;
    bool warned = false;
    pthread_mutex_lock(&a->lock);
    while (!a->quit) {
        s_job_t *jobs = a->todo;
        a->todo = a->todo_tail = NULL;
        pthread_mutex_unlock(&a->lock);

        char err[256];
        if (!st && store_open(&a->params, &st, err, sizeof err) != 0) {
            if (!warned)
                log_err("keystore_unavailable", "key lookups: %s (retrying)", err);
            warned = true;
            st = NULL;
        }
        bool changed = false;
        int64_t rev = 0;
        if (st && store_keys_rev(st, &rev) != 0) {
            log_err("keystore_error", "key lookups: %s (reconnecting)", store_last_error(st));
            store_destroy(&st);
        } else if (st) {
            if (warned)
                log_info("keystore_available", "key lookups reach the database again");
            warned = false;
            atomic_store(&a->ready, true);
            changed = seen_rev != -1 && rev != seen_rev;
            seen_rev = rev;
        }
        for (s_job_t *j = jobs; j; j = j->next) {
            store_key_t k;
            if (!st) {
                j->status = -EAGAIN;
                continue;
            }
            int rc = store_key_lookup(st, j->hash, &k);
            if (rc == 0 && strcmp(k.status, "active") == 0 &&
                strcmp(k.user_status, "active") == 0) {
                j->status = 0;
                memcpy(j->who.key_id, k.id, sizeof j->who.key_id);
                j->who.user_id = k.user_id;
                memcpy(j->who.user_name, k.user_name, sizeof j->who.user_name);
            } else if (rc == 0 || rc == -ENOENT) {
                j->status = -EACCES;
            } else {
                j->status = -EAGAIN;
                store_destroy(&st);
            }
        }
        pthread_mutex_lock(&a->lock);
        if (changed)
            a->flush = true;
        if (jobs) {
            s_job_t *last = jobs;
            while (last->next)
                last = last->next;
            last->next = a->done;
            a->done = jobs;
        }
        if (jobs || changed) {
            uint64_t one = 1;
            ssize_t w = write(a->efd, &one, sizeof one);
            (void)w;
        }
        if (!a->todo && !a->quit) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += (long)(a->poll_ms % 1000) * 1000000L;
            ts.tv_sec += a->poll_ms / 1000 + ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&a->cond, &a->lock, &ts);
        }
    }
    pthread_mutex_unlock(&a->lock);
    store_destroy(&st);
    return NULL;
}

/* Loop side: results and cache flushes from the worker. */
static void s_on_wake(void *arg, int fd)
{
    gw_auth_t *a = arg;
    uint64_t n;
    ssize_t r = read(fd, &n, sizeof n);
    (void)r;
    pthread_mutex_lock(&a->lock);
    s_job_t *done = a->done;
    a->done = NULL;
    bool flush = a->flush;
    a->flush = false;
    pthread_mutex_unlock(&a->lock);
    if (flush)
        s_flush_cache(a);
    while (done) {
        s_job_t *j = done;
        done = j->next;
        char t[24];
        snprintf(t, sizeof t, "%llu", (unsigned long long)j->ticket);
        bool wanted = strmap_del(a->waiting, t) != NULL;
        /* Cache definite answers; "database down" is retried on the next request. */
        if (j->status != -EAGAIN && !flush && j->gen == a->gen) {
            if (strmap_count(a->cache) >= a->max_entries)
                s_flush_cache(a);
            s_entry_t *e = malloc(sizeof *e);
            char hex[2 * APIKEY_HASH_LEN + 1];
            s_hex(j->hash, hex);
            if (e) {
                e->status = j->status;
                e->who = j->who;
                free(strmap_get(a->cache, hex));
                if (strmap_put(a->cache, hex, e) != 0)
                    free(e);
            }
        }
        if (wanted)
            j->cb(j->arg, j->status, j->status == 0 ? &j->who : NULL);
        sodium_memzero(j->hash, sizeof j->hash);
        free(j);
    }
}

gw_auth_t *gw_auth_new(bus_loop_t *loop, const store_params_t *params, int64_t poll_ms,
                       size_t max_entries)
{
    gw_auth_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->loop = loop;
    a->params = *params;
    a->sqlite_path = params->sqlite_path ? strdup(params->sqlite_path) : NULL;
    a->mysql_url = params->mysql_url ? strdup(params->mysql_url) : NULL;
    a->params.sqlite_path = a->sqlite_path;
    a->params.mysql_url = a->mysql_url;
    a->poll_ms = poll_ms > 0 ? poll_ms : 250;
    a->max_entries = max_entries ? max_entries : 100000;
    a->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    a->cache = strmap_new();
    a->waiting = strmap_new();
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->cond, NULL);
    if (a->efd < 0 || !a->cache || !a->waiting)
        goto fail;
    a->watch = bus_fdwatch_new(loop, a->efd, s_on_wake, a);
    if (!a->watch)
        goto fail;
    if (pthread_create(&a->thread, NULL, s_worker, a) != 0)
        goto fail;
    a->started = true;
    return a;
fail:
    gw_auth_destroy(&a);
    return NULL;
}

static void s_free_job(void *arg, const char *key, void *value)
{
    (void)arg;
    (void)key;
    (void)value; /* jobs are owned by the queues, not by this index */
}

void gw_auth_destroy(gw_auth_t **p)
{
    if (!p || !*p)
        return;
    gw_auth_t *a = *p;
    if (a->started) {
        pthread_mutex_lock(&a->lock);
        a->quit = true;
        pthread_cond_signal(&a->cond);
        pthread_mutex_unlock(&a->lock);
        pthread_join(a->thread, NULL);
    }
    for (s_job_t *lists[2] = {a->todo, a->done}, **l = lists; l < lists + 2; l++) {
        while (*l) {
            s_job_t *j = *l;
            *l = j->next;
            free(j);
        }
    }
    bus_fdwatch_destroy(&a->watch);
    if (a->cache) {
        strmap_each(a->cache, s_free_value, NULL);
        strmap_destroy(&a->cache);
    }
    if (a->waiting) {
        strmap_each(a->waiting, s_free_job, NULL);
        strmap_destroy(&a->waiting);
    }
    if (a->efd >= 0)
        close(a->efd);
    pthread_mutex_destroy(&a->lock);
    pthread_cond_destroy(&a->cond);
    free(a->sqlite_path);
    free(a->mysql_url);
    free(a);
    *p = NULL;
}

int gw_auth_check(gw_auth_t *a, const char *key, size_t len, gw_auth_cb cb, void *arg,
                  int *status, gw_principal_t *who, uint64_t *ticket)
{
    uint8_t hash[APIKEY_HASH_LEN];
    if (apikey_parse(key, len, hash) != 0) {
        *status = -EACCES;
        return 1;
    }
    char hex[2 * APIKEY_HASH_LEN + 1];
    s_hex(hash, hex);
    s_entry_t *e = strmap_get(a->cache, hex);
    if (e) {
        a->hits++;
        *status = e->status;
        if (e->status == 0)
            *who = e->who;
        return 1;
    }
    a->misses++;
    s_job_t *j = calloc(1, sizeof *j);
    if (!j)
        return -ENOMEM;
    memcpy(j->hash, hash, sizeof hash);
    sodium_memzero(hash, sizeof hash);
    j->ticket = ++a->next_ticket;
    j->gen = a->gen;
    j->cb = cb;
    j->arg = arg;
    char t[24];
    snprintf(t, sizeof t, "%llu", (unsigned long long)j->ticket);
    if (strmap_put(a->waiting, t, j) != 0) {
        free(j);
        return -ENOMEM;
    }
    *ticket = j->ticket;
    pthread_mutex_lock(&a->lock);
    if (a->todo_tail)
        a->todo_tail->next = j;
    else
        a->todo = j;
    a->todo_tail = j;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->lock);
    return 0;
}

void gw_auth_cancel(gw_auth_t *a, uint64_t ticket)
{
    char t[24];
    snprintf(t, sizeof t, "%llu", (unsigned long long)ticket);
    strmap_del(a->waiting, t); /* the job itself comes back and is freed unanswered */
}

void gw_auth_flush(gw_auth_t *a)
{
    s_flush_cache(a);
}

bool gw_auth_ready(const gw_auth_t *a)
{
    return atomic_load(&((gw_auth_t *)a)->ready);
}

uint64_t gw_auth_hits(const gw_auth_t *a)
{
    return a->hits;
}

uint64_t gw_auth_misses(const gw_auth_t *a)
{
    return a->misses;
}
