/* store: the hub's database behind one interface, two backends.
 *
 * SQLite (embedded default) and MySQL/MariaDB via libmariadb. Schema migrations live in
 * schemas/sql/{sqlite,mysql}/NNN_name.sql, compiled into the binary, applied in order by
 * store_migrate() and recorded in a schema_migrations table. A store_t is used by one thread
 * at a time; open one per thread. Calls block: hub services call them off their event loop
 * (a worker thread) or only where blocking is acceptable (hubctl, hub-billing).
 * Every function returns 0 or a negative errno; -ENOENT when a row is missing, -EEXIST on a
 * unique-key clash, -EIO for a database error (logged at debug with the server's message,
 * which store_last_error() returns). Credentials in mysql_url are never logged.
 */
#ifndef STORE_H
#define STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct store store_t;

typedef enum { STORE_SQLITE = 0, STORE_MYSQL = 1 } store_backend_t;

typedef struct {
    store_backend_t backend; /* which backend */
    const char *sqlite_path; /* SQLite database file (backend SQLITE) */
    const char *mysql_url;   /* mysql://user:pass@host:port/db (backend MYSQL); user and pass
                                are percent-decoded; host "localhost" is mapped to 127.0.0.1 */
    int busy_timeout_ms;     /* SQLite busy_timeout; 0 means 5000 */
} store_params_t;

/* Agent registry row. */
#define STORE_AGENT_ID_MAX 64
#define STORE_AGENT_NAME_MAX 128
typedef struct {
    char id[STORE_AGENT_ID_MAX + 1];     /* lowercase hex id derived from the public key */
    char name[STORE_AGENT_NAME_MAX + 1]; /* operator-chosen name, unique */
    uint8_t pubkey[32];                  /* Ed25519 public key */
    char status[16];                     /* "active" or "disabled" */
    int64_t created_at;                  /* Unix seconds */
} store_agent_t;

/* Parses "sqlite" / "mysql". 0 or -EINVAL. */
int store_backend_parse(const char *text, store_backend_t *out);

/* Opens a connection. SQLite files are created with mode 0600, WAL journal mode,
 * synchronous=NORMAL and the busy timeout. 0 or a negative errno with err set
 * (one line, no password). */
int store_open(const store_params_t *params, store_t **out, char *err, size_t errlen);
void store_destroy(store_t **s);

/* The last database error message of this connection ("" if none). */
const char *store_last_error(const store_t *s);

/* Applies every migration not yet recorded; returns the number applied (>= 0) or an error. */
int store_migrate(store_t *s);

/* Schema version: the highest migration applied (0 for an empty database). */
int store_schema_version(store_t *s, int *version);

/* Agents. store_agent_add: -EEXIST if the id or name is taken. Status starts "active". */
int store_agent_add(store_t *s, const char *id, const char *name, const uint8_t pubkey[32],
                    int64_t created_at);
int store_agent_get(store_t *s, const char *id, store_agent_t *out);
/* All agents ordered by created_at, id; *out is malloc'd (free()), *n its count. */
int store_agent_list(store_t *s, store_agent_t **out, size_t *n);
/* status is "active" or "disabled" (else -EINVAL); -ENOENT for an unknown id. */
int store_agent_set_status(store_t *s, const char *id, const char *status);
/* A number that changes whenever any agent row is added or changed: readers poll it to know
 * when to reload their cache. */
int store_agents_rev(store_t *s, int64_t *rev);

/* ---- users and API keys (migration 002) --------------------------------------------------
 * A user's API key is a 256-bit random secret shown once at creation (lib/apikey.h); the
 * store holds only its SHA-256 (a plain fast hash is right for 256-bit random secrets: there
 * is nothing to brute-force, unlike passwords), a public key id and a short display prefix.
 * Neither the secret nor its hash is ever logged or put into an error message. */

#define STORE_USER_NAME_MAX 128 /* bytes; the same rules as agent names */
#define STORE_KEY_ID_MAX 32     /* "key_" + 1..28 characters of [a-z0-9] */
#define STORE_KEY_PREFIX_MAX 16 /* display prefix: 1..16 characters of [A-Za-z0-9_-] */
#define STORE_KEY_HASH_LEN 32   /* SHA-256 of the whole secret ("sk-...") */

/* User row. */
typedef struct {
    int64_t id;                         /* assigned by the database, >= 1 */
    char name[STORE_USER_NAME_MAX + 1]; /* unique, compared byte for byte */
    char status[16];                    /* "active" or "disabled" */
    int64_t created_at;                 /* Unix seconds */
} store_user_t;

/* API key row joined with its user (store_key_lookup, store_key_list). Never the secret. */
typedef struct {
    char id[STORE_KEY_ID_MAX + 1];           /* public key id, e.g. "key_3kq7c2m9xa4t" */
    int64_t user_id;                         /* owner */
    char user_name[STORE_USER_NAME_MAX + 1]; /* owner's name */
    char prefix[STORE_KEY_PREFIX_MAX + 1];   /* first characters after "sk-", for display */
    char status[16];                         /* "active" or "revoked" */
    char user_status[16];                    /* owner's status: "active" or "disabled" */
    int64_t created_at;                      /* Unix seconds */
    int64_t revoked_at;                      /* Unix seconds; 0 while active */
} store_key_t;

/* Adds an active user; *id (may be NULL) gets its id. -EINVAL for a bad name (1..128 bytes of
 * UTF-8, no control characters, no leading or trailing space), -EEXIST if the name is taken. */
int store_user_add(store_t *s, const char *name, int64_t created_at, int64_t *id);
/* Reads a user by name (byte-exact). -ENOENT if there is none. */
int store_user_get_by_name(store_t *s, const char *name, store_user_t *out);
/* All users ordered by id; *out is malloc'd (free()), *n its count. */
int store_user_list(store_t *s, store_user_t **out, size_t *n);
/* status is "active" or "disabled" (else -EINVAL); -ENOENT for an unknown id. Setting the
 * status a user already has still counts as a change (store_keys_rev moves). */
int store_user_set_status(store_t *s, int64_t user_id, const char *status);

/* Adds an active key for user_id. key_id: "key_" + 1..28 of [a-z0-9]; prefix: 1..16 of
 * [A-Za-z0-9_-] (else -EINVAL). -ENOENT if the user does not exist; -EEXIST if the key id or
 * the hash is taken. */
int store_key_add(store_t *s, int64_t user_id, const char *key_id,
                  const uint8_t hash[STORE_KEY_HASH_LEN], const char *prefix, int64_t created_at);
/* Finds the key whose hash this is, with its user. -ENOENT if there is none. A revoked key or
 * a disabled user is still found: the caller decides (out->status, out->user_status). The
 * index lookup by hash needs no constant-time care: its timing reveals at most something about
 * a SHA-256 output, never about a stored secret. */
int store_key_lookup(store_t *s, const uint8_t hash[STORE_KEY_HASH_LEN], store_key_t *out);
/* Revokes a key: status "revoked", revoked_at set. -ENOENT for an unknown id; revoking a key
 * that is already revoked changes nothing (revoked_at and store_keys_rev stay) and returns
 * -EALREADY, so callers can tell the two apart and still treat both as success. */
int store_key_revoke(store_t *s, const char *key_id, int64_t revoked_at);
/* Keys of one user (user_id >= 1) or of every user (user_id 0), ordered by created_at, id;
 * *out is malloc'd (free()), *n its count. An unknown user_id lists nothing. */
int store_key_list(store_t *s, int64_t user_id, store_key_t **out, size_t *n);
/* A number that changes whenever any user or key is added or changed (a revocation, a user
 * disabled): readers (the gateway's key cache) poll it to know when to reload. */
int store_keys_rev(store_t *s, int64_t *rev);

#endif
