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

#endif
