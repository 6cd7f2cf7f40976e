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

int64_t store_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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

int64_t store_purse_left(const store_purse_t *p)
{
    int64_t left;
    return __builtin_sub_overflow(p->balance, p->held, &left) ? INT64_MIN : left;
}

int store_purse_hold(store_purse_t *p, int64_t amount)
{
    int64_t held;
    if (amount == 0)
        return 1;
    if (amount > store_purse_left(p) || __builtin_add_overflow(p->held, amount, &held))
        return 0;
    p->held = held;
    return 1;
}

store_purse_t *store_purse_find(store_purse_t *arr, size_t n, int64_t user_id)
{
    for (size_t i = 0; i < n; i++) {
        if (arr[i].user_id == user_id)
            return &arr[i];
    }
    return NULL;
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

/* ---- billing ----------------------------------------------------------------------------- */

/* True if text is NUL-terminated within cap bytes; *len gets its length. */
static bool s_terminated(const char *text, size_t cap, size_t *len)
{
    const char *nul = memchr(text, '\0', cap);
    if (!nul)
        return false;
    *len = (size_t)(nul - text);
    return true;
}

/* True if model (an array of cap bytes) holds min..STORE_MODEL_MAX bytes of UTF-8 without
 * control characters, NUL-terminated. */
static bool s_model_ok(const char *model, size_t cap, size_t min)
{
    size_t n;
    if (!model || !s_terminated(model, cap, &n) || n < min || n > STORE_MODEL_MAX)
        return false;
    const unsigned char *u = (const unsigned char *)model;
    for (size_t i = 0; i < n; i++) {
        if (u[i] < 0x20 || u[i] == 0x7f)
            return false;
    }
    return bus_mp_utf8_valid(u, n);
}

/* True if the agent id array (cap bytes) is NUL-terminated and a valid id (or empty, when
 * allow_empty). */
static bool s_agent_field_ok(const char *id, size_t cap, bool allow_empty)
{
    size_t n;
    if (!s_terminated(id, cap, &n))
        return false;
    return (allow_empty && n == 0) || s_id_ok(id);
}

/* Checks a ledger row before it is appended: a valid agent id and model, seq 1..INT64_MAX,
 * attempt >= 1, figures >= 0 with cached <= input, cost = fee + credit exactly, hold >= 0,
 * fee_ppm in [0, 1,000,000]. Returns NULL, or what is wrong. */
static const char *s_row_problem(const ledger_row_t *r)
{
    if (!s_agent_field_ok(r->agent_id, sizeof(r->agent_id), false))
        return "agent_id must be 1..64 characters of [A-Za-z0-9_-]";
    if (!s_model_ok(r->model, sizeof(r->model), 1))
        return "model must be 1..256 bytes of UTF-8 without control characters";
    if (r->seq < 1 || r->seq > (uint64_t)INT64_MAX)
        return "seq must be 1..2^63-1";
    if (r->attempt < 1)
        return "attempt must be >= 1";
    if (r->input_tokens < 0 || r->cached_tokens < 0 || r->output_tokens < 0 ||
        r->cached_tokens > r->input_tokens)
        return "token figures must be >= 0 with cached <= input";
    int64_t sum;
    if (r->cost < 0 || r->fee < 0 || r->credit < 0 ||
        __builtin_add_overflow(r->fee, r->credit, &sum) || sum != r->cost)
        return "cost, fee and credit must be >= 0 with cost = fee + credit";
    if (r->hold < 0)
        return "hold must be >= 0";
    if (r->fee_ppm < 0 || r->fee_ppm > 1000000)
        return "fee_ppm must be in [0, 1000000]";
    return NULL;
}

int store_price_set(store_t *s, const store_price_t *p)
{
    if (!s || !p)
        return -EINVAL;
    if (!s_model_ok(p->model, sizeof(p->model), 1)) {
        store_set_error(s, "price: model must be 1..%d bytes of UTF-8 without control characters",
                        STORE_MODEL_MAX);
        return -EINVAL;
    }
    if (p->input < 0 || p->output < 0 || p->cached_input < 0) {
        store_set_error(s, "price: prices must be >= 0");
        return -EINVAL;
    }
    return s->ops->price_set(s, p);
}

int store_price_list(store_t *s, store_price_t **out, size_t *n)
{
    if (!s || !out || !n)
        return -EINVAL;
    *out = NULL;
    *n = 0;
    return s->ops->price_list(s, out, n);
}

int store_price_at(store_t *s, const char *model, int64_t at_ms, store_price_t *out)
{
    if (!s || !model || !out)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    if (!s_model_ok(model, strnlen(model, STORE_MODEL_MAX + 1) + 1, 1))
        return -ENOENT; /* no such row can exist */
    return s->ops->price_at(s, model, at_ms, out);
}

int store_prices_rev(store_t *s, int64_t *rev)
{
    if (!s || !rev)
        return -EINVAL;
    return s->ops->prices_rev(s, rev);
}

int store_topup_add(store_t *s, int64_t user_id, int64_t amount, int64_t created_at, int64_t *id)
{
    if (!s)
        return -EINVAL;
    if (amount <= 0) {
        store_set_error(s, "top-up: amount must be > 0");
        return -EINVAL;
    }
    if (user_id < 1) {
        store_set_error(s, "top-up: no user with id %lld", (long long)user_id);
        return -ENOENT;
    }
    int64_t dummy;
    return s->ops->topup_add(s, user_id, amount, created_at, id ? id : &dummy);
}

int store_topup_applied(store_t *s, int64_t id)
{
    if (!s)
        return -EINVAL;
    if (id < 1)
        return -ENOENT;
    return s->ops->topup_applied(s, id);
}

int store_topups_apply(store_t *s, int64_t now, size_t *applied)
{
    if (!s)
        return -EINVAL;
    size_t dummy;
    if (!applied)
        applied = &dummy;
    *applied = 0;
    return s->ops->topups_apply(s, now, applied);
}

int store_balance_get(store_t *s, int64_t user_id, store_balance_t *out)
{
    if (!s || !out)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    if (user_id < 1)
        return -ENOENT;
    return s->ops->balance_get(s, user_id, out);
}

int store_holds_place(store_t *s, const store_hold_t *holds, size_t n, int *results,
                      int64_t *available)
{
    if (!s || (n > 0 && (!holds || !results)))
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (holds[i].user_id < 1 || holds[i].amount < 0) {
            store_set_error(s, "hold %zu: user id must be >= 1 and amount >= 0", i);
            return -EINVAL;
        }
    }
    if (n == 0)
        return 0;
    return s->ops->holds_place(s, holds, n, results, available);
}

int store_hold_get(store_t *s, const uint8_t req_id[16], store_hold_t *out)
{
    if (!s || !req_id || !out)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    return s->ops->hold_get(s, req_id, out);
}

int store_holds_expire(store_t *s, int64_t now, size_t *n)
{
    if (!s)
        return -EINVAL;
    size_t dummy;
    if (!n)
        n = &dummy;
    *n = 0;
    return s->ops->holds_expire(s, now, n);
}

int store_holds_outstanding(store_t *s, int64_t *amount, int64_t *count)
{
    if (!s || !amount || !count)
        return -EINVAL;
    *amount = 0;
    *count = 0;
    return s->ops->holds_outstanding(s, amount, count);
}

/* Checks one usage report; NULL or what is wrong. */
static const char *s_usage_problem(const store_usage_t *u)
{
    size_t n;
    if (!s_terminated(u->source, sizeof(u->source), &n) ||
        (strcmp(u->source, "gateway") != 0 && strcmp(u->source, "agent") != 0))
        return "source must be \"gateway\" or \"agent\"";
    if (u->attempt < 1)
        return "attempt must be >= 1";
    if (!s_agent_field_ok(u->agent_id, sizeof(u->agent_id), true))
        return "agent_id must be empty or 1..64 characters of [A-Za-z0-9_-]";
    if (u->user_id < 0)
        return "user_id must be >= 0";
    if (!s_model_ok(u->model, sizeof(u->model), 0))
        return "model must be 0..256 bytes of UTF-8 without control characters";
    if (u->status < 0)
        return "status must be >= 0";
    if (u->input_tokens < 0 || u->cached_tokens < 0 || u->output_tokens < 0)
        return "token figures must be >= 0";
    return NULL;
}

int store_usage_put(store_t *s, const store_usage_t *u, size_t n)
{
    if (!s || (n > 0 && !u))
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        const char *why = s_usage_problem(&u[i]);
        if (why) {
            store_set_error(s, "usage report %zu: %s", i, why);
            return -EINVAL;
        }
    }
    if (n == 0)
        return 0;
    return s->ops->usage_put(s, u, n);
}

int store_usage_pending(store_t *s, size_t limit, store_usage_t **out, size_t *n)
{
    if (!s || !out || !n)
        return -EINVAL;
    *out = NULL;
    *n = 0;
    if (limit == 0 || limit > (size_t)INT64_MAX)
        limit = (size_t)INT64_MAX;
    return s->ops->usage_pending(s, limit, out, n);
}

int store_usage_of(store_t *s, const uint8_t req_id[16], store_usage_t **out, size_t *n)
{
    if (!s || !req_id || !out || !n)
        return -EINVAL;
    *out = NULL;
    *n = 0;
    return s->ops->usage_of(s, req_id, out, n);
}

int store_settle(store_t *s, const store_settle_t *items, size_t n)
{
    if (!s || (n > 0 && !items))
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        const store_settle_t *it = &items[i];
        const char *why = NULL;
        if (it->outcome == STORE_OUTCOME_NOTHING) {
            if (it->user_id < 0)
                why = "user_id must be >= 0";
        } else if (it->outcome == STORE_OUTCOME_BILLED) {
            if (it->user_id < 1)
                why = "user_id must be >= 1";
            else if (it->row.user_id != it->user_id)
                why = "row.user_id is not user_id";
            else if (memcmp(it->row.req_id, it->req_id, 16) != 0)
                why = "row.req_id is not req_id";
            else
                why = s_row_problem(&it->row);
        } else {
            why = "outcome must be STORE_OUTCOME_BILLED or STORE_OUTCOME_NOTHING";
        }
        if (why) {
            store_set_error(s, "settlement %zu: %s", i, why);
            return -EINVAL;
        }
    }
    if (n == 0)
        return 0;
    return s->ops->settle(s, items, n);
}

int store_settled(store_t *s, const uint8_t req_id[16], int *outcome)
{
    if (!s || !req_id)
        return -EINVAL;
    int dummy;
    if (!outcome)
        outcome = &dummy;
    *outcome = 0;
    return s->ops->settled(s, req_id, outcome);
}

int store_ledger_head(store_t *s, const char *agent_id, uint64_t *seq,
                      uint8_t hash[LEDGER_HASH_LEN])
{
    if (!s || !agent_id || !seq || !hash)
        return -EINVAL;
    *seq = 0;
    memset(hash, 0, LEDGER_HASH_LEN);
    if (!s_id_ok(agent_id))
        return 0; /* no chain can exist */
    return s->ops->ledger_head(s, agent_id, seq, hash);
}

int store_ledger_range(store_t *s, const char *agent_id, uint64_t from_seq, size_t limit,
                       ledger_row_t **out, size_t *n)
{
    if (!s || !agent_id || !out || !n)
        return -EINVAL;
    *out = NULL;
    *n = 0;
    if (!s_id_ok(agent_id) || from_seq > (uint64_t)INT64_MAX)
        return 0; /* no such rows can exist */
    if (limit == 0 || limit > (size_t)INT64_MAX)
        limit = (size_t)INT64_MAX;
    return s->ops->ledger_range(s, agent_id, from_seq, limit, out, n);
}

int store_ledger_by_req(store_t *s, const uint8_t req_id[16], ledger_row_t *out)
{
    if (!s || !req_id || !out)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    return s->ops->ledger_by_req(s, req_id, out);
}

int store_ledger_ack(store_t *s, const char *agent_id, uint64_t seq)
{
    if (!s)
        return -EINVAL;
    if (!s_id_ok(agent_id)) {
        store_set_error(s, "ledger ack: agent id must be 1..%d characters of [A-Za-z0-9_-]",
                        STORE_AGENT_ID_MAX);
        return -EINVAL;
    }
    if (seq > (uint64_t)INT64_MAX) {
        store_set_error(s, "ledger ack: seq out of range");
        return -EINVAL;
    }
    return s->ops->ledger_ack(s, agent_id, seq);
}

int store_account_list(store_t *s, store_account_t **out, size_t *n)
{
    if (!s || !out || !n)
        return -EINVAL;
    *out = NULL;
    *n = 0;
    return s->ops->account_list(s, out, n);
}

int store_billing_totals(store_t *s, store_totals_t *out)
{
    if (!s || !out)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    return s->ops->billing_totals(s, out);
}
