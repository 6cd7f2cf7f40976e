/* strmap: a string-keyed hash map of borrowed pointers (agent id → connection,
 * request id → pending request). Open hashing with chains; grows at load factor 1. */
#ifndef STRMAP_H
#define STRMAP_H

#include <stddef.h>

typedef struct strmap strmap_t;

strmap_t *strmap_new(void);
void strmap_destroy(strmap_t **m);

/* The value for key, or NULL. */
void *strmap_get(const strmap_t *m, const char *key);

/* Sets key to value (replacing any previous value). 0 or -ENOMEM. */
int strmap_put(strmap_t *m, const char *key, void *value);

/* Removes key; returns its value or NULL. */
void *strmap_del(strmap_t *m, const char *key);

size_t strmap_count(const strmap_t *m);

/* Calls fn for every entry; fn must not change the map. */
void strmap_each(const strmap_t *m, void (*fn)(void *arg, const char *key, void *value),
                  void *arg);

#endif
