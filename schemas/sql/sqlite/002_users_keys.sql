-- 002_users_keys (SQLite): users and their API keys.
-- Statements end with ';' at the end of a line (schemas/gen_migrations.py splits there).
-- The whole file is applied in one transaction by store_migrate().
--
-- rev: users and api_keys share one counter. Every add or change sets the row's rev to
-- MAX(rev) + 1 over both tables, inside the same write statement, so the greater of the two
-- MAX(rev) moves on each change (store_keys_rev); readers poll it to learn of revocations.

-- name follows the agent-name rules (store.c): 1..128 bytes of UTF-8, no control characters,
-- no leading or trailing space; compared byte for byte (SQLite's default BINARY collation).
-- AUTOINCREMENT: an id is never handed out twice, even after the highest row is gone.
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE CHECK (length(CAST(name AS BLOB)) BETWEEN 1 AND 128),
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at INTEGER NOT NULL,
    rev INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS users_rev ON users (rev);

-- id: the public key id ("key_" + lowercase base32); hash: SHA-256 of the whole secret
-- ("sk-..."), never the secret itself; prefix: the first characters of the secret after
-- "sk-", for display only. revoked_at is NULL while the key is active.
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT NOT NULL PRIMARY KEY CHECK (length(id) BETWEEN 5 AND 32),
    user_id INTEGER NOT NULL REFERENCES users (id),
    hash BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
    prefix TEXT NOT NULL CHECK (length(prefix) BETWEEN 1 AND 16),
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    rev INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys (user_id, created_at, id);

CREATE INDEX IF NOT EXISTS api_keys_created ON api_keys (created_at, id);

CREATE INDEX IF NOT EXISTS api_keys_rev ON api_keys (rev);
