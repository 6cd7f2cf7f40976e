-- 001_agents (SQLite): the agent registry and the migration log.
-- Statements end with ';' at the end of a line (schemas/gen_migrations.py splits there).
-- The whole file is applied in one transaction by store_migrate().

CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    applied_at INTEGER NOT NULL
);

-- rev: set to MAX(rev) + 1 by every add and status change, so MAX(rev) moves on each change
-- (store_agents_rev); readers poll it to refresh their caches.
CREATE TABLE IF NOT EXISTS agents (
    id TEXT NOT NULL PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 64),
    name TEXT NOT NULL UNIQUE CHECK (length(CAST(name AS BLOB)) BETWEEN 1 AND 128),
    pubkey BLOB NOT NULL CHECK (length(pubkey) = 32),
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at INTEGER NOT NULL,
    rev INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS agents_rev ON agents (rev);

CREATE INDEX IF NOT EXISTS agents_created ON agents (created_at, id);
