-- 002_users_keys (MySQL/MariaDB): users and their API keys.
-- Statements end with ';' at the end of a line (schemas/gen_migrations.py splits there).
-- DDL is not transactional here: every statement must be safe to run twice (see 001).
--
-- rev: users and api_keys share one counter. Every add or change sets the row's rev to
-- MAX(rev) + 1 over both tables, under the "keys" named lock and in the same transaction
-- (store_mysql.c), so the greater of the two MAX(rev) moves on each change (store_keys_rev);
-- readers poll it to learn of revocations.
--
-- name is utf8mb4_bin so that names compare byte for byte, as in SQLite (store.c refuses
-- leading and trailing spaces, which PAD SPACE collations would ignore); ids are ASCII binary.

CREATE TABLE IF NOT EXISTS users (
    id BIGINT NOT NULL AUTO_INCREMENT,
    name VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    status VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT 'active',
    created_at BIGINT NOT NULL,
    rev BIGINT NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY users_name (name),
    KEY users_rev (rev),
    CONSTRAINT users_status CHECK (status IN ('active', 'disabled')),
    CONSTRAINT users_name_len CHECK (LENGTH(name) BETWEEN 1 AND 128)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- id: the public key id ("key_" + lowercase base32); hash: SHA-256 of the whole secret
-- ("sk-..."), never the secret itself; prefix: the first characters of the secret after
-- "sk-", for display only. revoked_at is NULL while the key is active.
CREATE TABLE IF NOT EXISTS api_keys (
    id VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id BIGINT NOT NULL,
    hash BINARY(32) NOT NULL,
    prefix VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    status VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT 'active',
    created_at BIGINT NOT NULL,
    revoked_at BIGINT NULL,
    rev BIGINT NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY api_keys_hash (hash),
    KEY api_keys_user (user_id, created_at, id),
    KEY api_keys_created (created_at, id),
    KEY api_keys_rev (rev),
    CONSTRAINT api_keys_user_fk FOREIGN KEY (user_id) REFERENCES users (id),
    CONSTRAINT api_keys_status CHECK (status IN ('active', 'revoked')),
    CONSTRAINT api_keys_id_len CHECK (LENGTH(id) BETWEEN 5 AND 32),
    CONSTRAINT api_keys_prefix_len CHECK (LENGTH(prefix) BETWEEN 1 AND 16)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
