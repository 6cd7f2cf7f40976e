/* ag_map: a hash map from 16-byte keys (a req_id, or a sid zero-padded) to pointers.
 *
 * Chained buckets; the bucket array doubles when entries outnumber buckets, up to AG_MAP_MAX
 * entries (a put past it fails). Keys are copied; values are borrowed.
 */
#ifndef AG_MAP_H
#define AG_MAP_H

#include <stddef.h>
#include <stdint.h>

#define AG_MAP_KEY 16
#define AG_MAP_MAX (1u << 22)

typedef struct ag_map ag_map_t;

ag_map_t *ag_map_new(void);
/* Frees the map (not the values). Accepts NULL. */
void ag_map_destroy(ag_map_t **m);
/* Inserts or replaces. 0, -ENOMEM, -ENOSPC (over AG_MAP_MAX). */
int ag_map_put(ag_map_t *m, const uint8_t key[AG_MAP_KEY], void *value);
/* The value, or NULL. */
void *ag_map_get(const ag_map_t *m, const uint8_t key[AG_MAP_KEY]);
/* Removes the key if present. */
void ag_map_del(ag_map_t *m, const uint8_t key[AG_MAP_KEY]);
size_t ag_map_count(const ag_map_t *m);
/* A 16-byte key holding sid (big-endian in the first 8 bytes, zeros after). */
void ag_map_sid_key(uint64_t sid, uint8_t key[AG_MAP_KEY]);

#endif
