/* tun_map: a string-keyed hash map of borrowed pointers (agent id → connection,
 * request id → pending request). Open hashing with chains; grows at load factor 1. */
#ifndef TUN_MAP_H
#define TUN_MAP_H

#include <stddef.h>

typedef struct tun_map tun_map_t;

tun_map_t *tun_map_new(void);
void tun_map_destroy(tun_map_t **m);

/* The value for key, or NULL. */
void *tun_map_get(const tun_map_t *m, const char *key);

/* Sets key to value (replacing any previous value). 0 or -ENOMEM. */
int tun_map_put(tun_map_t *m, const char *key, void *value);

/* Removes key; returns its value or NULL. */
void *tun_map_del(tun_map_t *m, const char *key);

size_t tun_map_count(const tun_map_t *m);

/* Calls fn for every entry; fn must not change the map. */
void tun_map_each(const tun_map_t *m, void (*fn)(void *arg, const char *key, void *value),
                  void *arg);

#endif
