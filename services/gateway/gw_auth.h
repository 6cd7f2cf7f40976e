/* gw_auth: user API key checks with a cache in front of the database.
 *
 * The hub stores only SHA-256 hashes of keys. A presented key is hashed and looked up in an
 * in-memory cache; a miss goes to a worker thread that owns its own store connection, so the
 * event loop never waits on the database, and the answer comes back through an eventfd. The
 * worker polls store_keys_rev() every poll_ms; any change (a key revoked, a user disabled)
 * flushes the cache, so a revocation takes effect within about poll_ms (250 ms by default).
 * Unknown keys are cached too (until the next change), so a flood of bad keys costs one query
 * each at most once. The cache has a hard size limit; when full it is flushed.
 */
#ifndef GW_AUTH_H
#define GW_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "bus_loop.h"
#include "store/store.h"

typedef struct gw_auth gw_auth_t;

typedef struct {
    char key_id[STORE_KEY_ID_MAX + 1];        /* public id of the key */
    int64_t user_id;                          /* its user */
    char user_name[STORE_USER_NAME_MAX + 1];  /* the user's name */
} gw_principal_t;

/* Outcome of a check: 0 valid (who filled), -EACCES unknown/revoked key or disabled user,
 * -EAGAIN the database is unreachable (answer 503, not 401). */
typedef void (*gw_auth_cb)(void *arg, int status, const gw_principal_t *who);

gw_auth_t *gw_auth_new(bus_loop_t *loop, const store_params_t *params, int64_t poll_ms,
                       size_t max_entries);
void gw_auth_destroy(gw_auth_t **a);

/* Checks a presented key ("sk-…"). Returns 1 when answered from the cache (*status and *who
 * set, cb not called), 0 when a lookup was queued (cb will be called on the loop, unless
 * gw_auth_cancel(*ticket) is called first), or a negative errno. A malformed key is answered
 * at once as -EACCES. */
int gw_auth_check(gw_auth_t *a, const char *key, size_t len, gw_auth_cb cb, void *arg,
                  int *status, gw_principal_t *who, uint64_t *ticket);

/* Forgets a queued check (its requester went away). */
void gw_auth_cancel(gw_auth_t *a, uint64_t ticket);

/* Drops every cached answer now (keys or users changed): lookups in flight are answered but
 * not cached. */
void gw_auth_flush(gw_auth_t *a);

/* True once the worker has reached the database at least once. */
bool gw_auth_ready(const gw_auth_t *a);

/* Cache statistics for metrics. */
uint64_t gw_auth_hits(const gw_auth_t *a);
uint64_t gw_auth_misses(const gw_auth_t *a);

#endif
