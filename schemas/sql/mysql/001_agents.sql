-- 001_agents (MySQL/MariaDB): the agent registry and the migration log.
-- Statements end with ';' at the end of a line (schemas/gen_migrations.py splits there).
-- DDL is not transactional here: store_migrate() runs the statements one by one and records
-- the version only after all succeeded, so every statement must be safe to run twice
-- (CREATE TABLE IF NOT EXISTS, indexes inside the CREATE TABLE).
--
-- id is ASCII with binary collation and name utf8mb4_bin, so that ids and names compare
-- byte for byte, exactly as in SQLite (no case folding; store.c refuses names with leading
-- or trailing spaces, which PAD SPACE collations would ignore).

CREATE TABLE IF NOT EXISTS schema_migrations (
    version INT NOT NULL PRIMARY KEY,
    applied_at BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- rev: set to MAX(rev) + 1 by every add and status change, so MAX(rev) moves on each change
-- (store_agents_rev); readers poll it to refresh their caches.
CREATE TABLE IF NOT EXISTS agents (
    id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    name VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    pubkey VARBINARY(32) NOT NULL,
    status VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT 'active',
    created_at BIGINT NOT NULL,
    rev BIGINT NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY agents_name (name),
    KEY agents_rev (rev),
    KEY agents_created (created_at, id),
    CONSTRAINT agents_status CHECK (status IN ('active', 'disabled')),
    CONSTRAINT agents_pubkey CHECK (LENGTH(pubkey) = 32)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
