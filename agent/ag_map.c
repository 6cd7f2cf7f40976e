/* ag_map: 16-byte-key hash map with chaining. */
#include "ag_map.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct s_entry {
    uint8_t key[AG_MAP_KEY]; /* copied key */
    void *value;             /* borrowed value */
    struct s_entry *next;    /* bucket chain */
} s_entry_t;

struct ag_map {
    s_entry_t **buckets; /* nb chains */
    size_t nb;           /* bucket count, a power of two */
    size_t count;        /* entries */
};

/* FNV-1a over the key. */
static uint64_t s_hash(const uint8_t key[AG_MAP_KEY])
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < AG_MAP_KEY; i++) {
        h ^= key[i];
        h *= 1099511628211ull;
    }
    return h;
}

ag_map_t *ag_map_new(void)
{
    ag_map_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->nb = 64;
    m->buckets = calloc(m->nb, sizeof *m->buckets);
    if (!m->buckets) {
        free(m);
        return NULL;
    }
    return m;
}

void ag_map_destroy(ag_map_t **p)
{
    if (!p || !*p)
        return;
    ag_map_t *m = *p;
    for (size_t i = 0; i < m->nb; i++) {
        for (s_entry_t *e = m->buckets[i], *n; e; e = n) {
            n = e->next;
            free(e);
        }
    }
    free(m->buckets);
    free(m);
    *p = NULL;
}

/* Doubles the bucket array (best effort: on no memory the chains just grow longer). */
static void s_grow(ag_map_t *m)
{
    size_t nb = m->nb * 2;
    s_entry_t **b = calloc(nb, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < m->nb; i++) {
        for (s_entry_t *e = m->buckets[i], *n; e; e = n) {
            n = e->next;
            size_t j = (size_t)s_hash(e->key) & (nb - 1);
            e->next = b[j];
            b[j] = e;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nb = nb;
}

int ag_map_put(ag_map_t *m, const uint8_t key[AG_MAP_KEY], void *value)
{
    size_t i = (size_t)s_hash(key) & (m->nb - 1);
    for (s_entry_t *e = m->buckets[i]; e; e = e->next) {
        if (memcmp(e->key, key, AG_MAP_KEY) == 0) {
            e->value = value;
            return 0;
        }
    }
    if (m->count >= AG_MAP_MAX)
        return -ENOSPC;
    s_entry_t *e = malloc(sizeof *e);
    if (!e)
        return -ENOMEM;
    memcpy(e->key, key, AG_MAP_KEY);
    e->value = value;
    e->next = m->buckets[i];
    m->buckets[i] = e;
    m->count++;
    if (m->count > m->nb)
        s_grow(m);
    return 0;
}

void *ag_map_get(const ag_map_t *m, const uint8_t key[AG_MAP_KEY])
{
    size_t i = (size_t)s_hash(key) & (m->nb - 1);
    for (s_entry_t *e = m->buckets[i]; e; e = e->next) {
        if (memcmp(e->key, key, AG_MAP_KEY) == 0)
            return e->value;
    }
    return NULL;
}

void ag_map_del(ag_map_t *m, const uint8_t key[AG_MAP_KEY])
{
    size_t i = (size_t)s_hash(key) & (m->nb - 1);
    for (s_entry_t **pp = &m->buckets[i]; *pp; pp = &(*pp)->next) {
        if (memcmp((*pp)->key, key, AG_MAP_KEY) == 0) {
            s_entry_t *e = *pp;
            *pp = e->next;
            free(e);
            m->count--;
            return;
        }
    }
}

size_t ag_map_count(const ag_map_t *m)
{
    return m->count;
}

void ag_map_sid_key(uint64_t sid, uint8_t key[AG_MAP_KEY])
{
    memset(key, 0, AG_MAP_KEY);
    for (int i = 7; i >= 0; i--) {
        key[i] = (uint8_t)(sid & 0xff);
        sid >>= 8;
    }
}
