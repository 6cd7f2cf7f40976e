/* strmap: chained hash map keyed by strings (FNV-1a). */
#include "strmap.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct s_entry {
    char *key;            /* owned copy */
    void *value;          /* borrowed */
    struct s_entry *next; /* chain */
} s_entry_t;

struct strmap {
    s_entry_t **buckets; /* nbuckets chains */
    size_t nbuckets;     /* power of two */
    size_t count;        /* entries */
};

static uint64_t s_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

strmap_t *strmap_new(void)
{
    strmap_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->nbuckets = 64;
    m->buckets = calloc(m->nbuckets, sizeof *m->buckets);
    if (!m->buckets) {
        free(m);
        return NULL;
    }
    return m;
}

void strmap_destroy(strmap_t **p)
{
    if (!p || !*p)
        return;
    strmap_t *m = *p;
    for (size_t i = 0; i < m->nbuckets; i++) {
        s_entry_t *e = m->buckets[i];
        while (e) {
            s_entry_t *n = e->next;
            free(e->key);
            free(e);
            e = n;
        }
    }
    free(m->buckets);
    free(m);
    *p = NULL;
}

static s_entry_t **s_find(const strmap_t *m, const char *key)
{
    s_entry_t **pe = &m->buckets[s_hash(key) & (m->nbuckets - 1)];
    while (*pe && strcmp((*pe)->key, key) != 0)
        pe = &(*pe)->next;
    return pe;
}

void *strmap_get(const strmap_t *m, const char *key)
{
    s_entry_t *e = *s_find(m, key);
    return e ? e->value : NULL;
}

/* Doubles the bucket array; keeps the map as is when memory is short. */
static void s_grow(strmap_t *m)
{
    size_t nb = m->nbuckets * 2;
    s_entry_t **b = calloc(nb, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        s_entry_t *e = m->buckets[i];
        while (e) {
            s_entry_t *n = e->next;
            size_t j = s_hash(e->key) & (nb - 1);
            e->next = b[j];
            b[j] = e;
            e = n;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = nb;
}

int strmap_put(strmap_t *m, const char *key, void *value)
{
    s_entry_t **pe = s_find(m, key);
    if (*pe) {
        (*pe)->value = value;
        return 0;
    }
    s_entry_t *e = calloc(1, sizeof *e);
    if (!e)
        return -ENOMEM;
    e->key = strdup(key);
    if (!e->key) {
        free(e);
        return -ENOMEM;
    }
    e->value = value;
    *pe = e;
    m->count++;
    if (m->count > m->nbuckets)
        s_grow(m);
    return 0;
}

void *strmap_del(strmap_t *m, const char *key)
{
    s_entry_t **pe = s_find(m, key);
    s_entry_t *e = *pe;
    if (!e)
        return NULL;
    void *v = e->value;
    *pe = e->next;
    free(e->key);
    free(e);
    m->count--;
    return v;
}

size_t strmap_count(const strmap_t *m)
{
    return m->count;
}

void strmap_each(const strmap_t *m, void (*fn)(void *arg, const char *key, void *value),
                  void *arg)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (s_entry_t *e = m->buckets[i]; e; e = e->next)
            fn(arg, e->key, e->value);
    }
}
