/* store: argument checks, backend dispatch and the migration runner (see store.h). */
#include "store_impl.h"

#include "bus_log.h"
#include "bus_mp.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int store_backend_parse(const char *text, store_backend_t *out)
{
    if (!text || !out)
        return -EINVAL;
    if (strcmp(text, "sqlite") == 0)
        *out = STORE_SQLITE;
    else if (strcmp(text, "mysql") == 0)
        *out = STORE_MYSQL;
    else
        return -EINVAL;
    return 0;
}

int store_open(const store_params_t *params, store_t **out, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!params) {
        if (err && errlen)
            snprintf(err, errlen, "store: no parameters");
        return -EINVAL;
    }
    store_t *s = calloc(1, sizeof(*s));
    if (!s) {
        if (err && errlen)
            snprintf(err, errlen, "store: out of memory");
        return -ENOMEM;
    }
    char dummy[8];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    int rc;
    s->backend = params->backend;
    if (params->backend == STORE_SQLITE) {
        rc = store_sqlite_open(s, params, err, errlen);
    } else if (params->backend == STORE_MYSQL) {
        rc = store_mysql_open(s, params, err, errlen);
    } else {
        snprintf(err, errlen, "store: unknown backend %d", (int)params->backend);
        rc = -EINVAL;
    }
    if (rc < 0) {
        log_debug("store.open_failed", "%s", err);
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void store_destroy(store_t **p)
{
    if (!p || !*p)
        return;
    store_t *s = *p;
    if (s->ops && s->db)
        s->ops->close(s);
    free(s);
    *p = NULL;
}

const char *store_last_error(const store_t *s)
{
    return s ? s->last_error : "";
}

void store_set_error(store_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->last_error, sizeof(s->last_error), fmt, ap);
    va_end(ap);
    log_debug("store.error", "%s: %s", s->ops ? s->ops->name : "store", s->last_error);
}

int store_agents_push(store_agent_t **arr, size_t *n, size_t *cap, const store_agent_t *a)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        store_agent_t *grown = realloc(*arr, ncap * sizeof(**arr));
        if (!grown)
            return -ENOMEM;
        *arr = grown;
        *cap = ncap;
    }
    (*arr)[(*n)++] = *a;
    return 0;
}

int store_array_push(void **arr, size_t *n, size_t *cap, const void *item, size_t size)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        if (ncap > SIZE_MAX / size)
            return -ENOMEM;
        void *grown = realloc(*arr, ncap * size);
        if (!grown)
            return -ENOMEM;
        *arr = grown;
        *cap = ncap;
    }
    memcpy((char *)*arr + *n * size, item, size);
    (*n)++;
    return 0;
}

/* The compiled-in migrations of s's backend. */
static const store_migration_t *s_migrations(const store_t *s, size_t *count)
{
    if (s->backend == STORE_MYSQL) {
        *count = store_migrations_mysql_count;
        return store_migrations_mysql;
    }
    *count = store_migrations_sqlite_count;
    return store_migrations_sqlite;
}

int store_migrate(store_t *s)
{
    if (!s)
        return -EINVAL;
    size_t count;
    const store_migration_t *migs = s_migrations(s, &count);
    int rc = s->ops->migrate_begin(s);
    if (rc < 0)
        return rc;
    int applied = 0;
    for (size_t i = 0; i < count; i++) {
        rc = s->ops->migrate_one(s, &migs[i], (int64_t)time(NULL));
        if (rc < 0) {
            log_debug("store.migrate_failed", "%s %s: %s", s->ops->name, migs[i].name,
                      s->last_error);
            break;
        }
        if (rc > 0) {
            log_debug("store.migrated", "%s %s", s->ops->name, migs[i].name);
            applied++;
        }
    }
    s->ops->migrate_end(s);
    return rc < 0 ? rc : applied;
}

int store_schema_version(store_t *s, int *version)
{
    if (!s || !version)
        return -EINVAL;
    return s->ops->schema_version(s, version);
}

/* True if id is 1..STORE_AGENT_ID_MAX bytes of [A-Za-z0-9_-] (safe in URLs and JSON). */
static bool s_id_ok(const char *id)
{
    if (!id)
        return false;
    size_t n = strlen(id);
    if (n == 0 || n > STORE_AGENT_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* True if name is 1..STORE_AGENT_NAME_MAX bytes of valid UTF-8 without control characters
 * and without a leading or trailing space (which MySQL's PAD SPACE collations would ignore in
 * the unique key, unlike SQLite). */
static bool s_name_ok(const char *name)
{
    if (!name)
        return false;
    size_t n = strlen(name);
    if (n == 0 || n > STORE_AGENT_NAME_MAX || name[0] == ' ' || name[n - 1] == ' ')
        return false;
    /* Control characters are single bytes below 0x80, never inside a multi-byte sequence. */
    const unsigned char *u = (const unsigned char *)name;
    for (size_t i = 0; i < n; i++) {
        if (u[i] < 0x20 || u[i] == 0x7f)
            return false;
    }
    return bus_mp_utf8_valid(u, n);
}

/* True for the two statuses an agent can have. */
static bool s_status_ok(const char *status)
{
    return status && (strcmp(status, "active") == 0 || strcmp(status, "disabled") == 0);
}

int store_agent_add(store_t *s, const char *id, const char *name, const uint8_t pubkey[32],
                    int64_t created_at)
{
    if (!s || !pubkey)
        return -EINVAL;
    if (!s_id_ok(id)) {
        store_set_error(s, "agent id must be 1..%d characters of [A-Za-z0-9_-]",
                        STORE_AGENT_ID_MAX);
        return -EINVAL;
    }
    if (!s_name_ok(name)) {
        store_set_error(s,
                        "agent name must be 1..%d bytes of UTF-8 without control characters "
                        "or leading/trailing spaces",
                        STORE_AGENT_NAME_MAX);
        return -EINVAL;
    }
    return s->ops->agent_add(s, id, name, pubkey, created_at);
}

int store_agent_get(store_t *s, const char *id, store_agent_t *out)
{
    if (!s || !id || !out)
        return -EINVAL;
    if (!s_id_ok(id))
        return -ENOENT; /* no such row can exist */
    memset(out, 0, sizeof(*out));
    return s->ops->agent_get(s, id, out);
}

int store_agent_list(store_t *s, store_agent_t **out, size_t *n)
{
    if (!s || !out || !n)
        return -EINVAL;
    *out = NULL;
    *n = 0;
    return s->ops->agent_list(s, out, n);
}

int store_agent_set_status(store_t *s, const char *id, const char *status)
{
    if (!s || !id)
        return -EINVAL;
    if (!s_status_ok(status)) {
        store_set_error(s, "agent status must be \"active\" or \"disabled\"");
        return -EINVAL;
    }
    if (!s_id_ok(id))
        return -ENOENT;
    return s->ops->agent_set_status(s, id, status);
}

int store_agents_rev(store_t *s, int64_t *rev)
{
    if (!s || !rev)
        return -EINVAL;
    return s->ops->agents_rev(s, rev);
}

/* ---- users and API keys ----------------------------------------------------------------- */

/* True if id is "key_" followed by 1..STORE_KEY_ID_MAX - 4 characters of [a-z0-9]. */
static bool s_key_id_ok(const char *id)
{
    if (!id || strncmp(id, "key_", 4) != 0)
        return false;
    size_t n = strlen(id);
    if (n < 5 || n > STORE_KEY_ID_MAX)
        return false;
    for (size_t i = 4; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

/* True if prefix is 1..STORE_KEY_PREFIX_MAX characters of the key alphabet [A-Za-z0-9_-]. */
static bool s_prefix_ok(const char *prefix)
{
    if (!prefix)
        return false;
    size_t n = strlen(prefix);
    if (n == 0 || n > STORE_KEY_PREFIX_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = prefix[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

int store_user_add(store_t *s, const char *name, int64_t created_at, int64_t *id)
{
    if (!s)
        return -EINVAL;
    if (!s_name_ok(name)) {
        store_set_error(s,
                        "user name must be 1..%d bytes of UTF-8 without control characters "
                        "or leading/trailing spaces",
                        STORE_USER_NAME_MAX);
        return -EINVAL;
    }
    int64_t dummy;
    return s->ops->user_add(s, name, created_at, id ? id : &dummy);
}

int store_user_get_by_name(store_t *s, const char *name, store_user_t *out)
{
    if (!s || !name || !out)
        return -EINVAL;
    if (!s_name_ok(name))
        return -ENOENT; /* no such row can exist */
    memset(out, 0, sizeof(*out));
    return s->ops->user_get_by_name(s, name, out);
}

int store_user_list(store_t *s, store_user_t **out, size_t *n)
{
    if (!s || !out || !n)
        return -EINVAL;
    *out = NULL;
    *n = 0;
    return s->ops->user_list(s, out, n);
}

int store_user_set_status(store_t *s, int64_t user_id, const char *status)
{
    if (!s)
        return -EINVAL;
    if (!s_status_ok(status)) { /* a user has an agent's two statuses */
        store_set_error(s, "user status must be \"active\" or \"disabled\"");
        return -EINVAL;
    }
    if (user_id < 1)
        return -ENOENT;
    return s->ops->user_set_status(s, user_id, status);
}

int store_key_add(store_t *s, int64_t user_id, const char *key_id,
                  const uint8_t hash[STORE_KEY_HASH_LEN], const char *prefix, int64_t created_at)
{
    if (!s || !hash)
        return -EINVAL;
    if (!s_key_id_ok(key_id)) {
        store_set_error(s, "key id must be \"key_\" and 1..%d characters of [a-z0-9]",
                        STORE_KEY_ID_MAX - 4);
        return -EINVAL;
    }
    if (!s_prefix_ok(prefix)) {
        store_set_error(s, "key prefix must be 1..%d characters of [A-Za-z0-9_-]",
                        STORE_KEY_PREFIX_MAX);
        return -EINVAL;
    }
    if (user_id < 1) {
        store_set_error(s, "key add: no user with id %lld", (long long)user_id);
        return -ENOENT;
    }
    return s->ops->key_add(s, user_id, key_id, hash, prefix, created_at);
}

int store_key_lookup(store_t *s, const uint8_t hash[STORE_KEY_HASH_LEN], store_key_t *out)
{
    if (!s || !hash || !out)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    return s->ops->key_lookup(s, hash, out);
}

int store_key_revoke(store_t *s, const char *key_id, int64_t revoked_at)
{
    if (!s || !key_id)
        return -EINVAL;
    if (!s_key_id_ok(key_id))
        return -ENOENT;
    return s->ops->key_revoke(s, key_id, revoked_at);
}

int store_key_list(store_t *s, int64_t user_id, store_key_t **out, size_t *n)
{
    if (!s || !out || !n || user_id < 0)
        return -EINVAL;
    *out = NULL;
    *n = 0;
    return s->ops->key_list(s, user_id, out, n);
}

int store_keys_rev(store_t *s, int64_t *rev)
{
    if (!s || !rev)
        return -EINVAL;
    return s->ops->keys_rev(s, rev);
}
