-- 003_billing (MySQL/MariaDB): prices, balances, top-ups, holds, usage reports, settlements,
-- the per-agent hash-chained ledger and the agents' accounts.
-- Statements end with ';' at the end of a line (schemas/gen_migrations.py splits there).
-- DDL is not transactional here: every statement must be safe to run twice (see 001).
--
-- Money is BIGINT micro-units (lib/money.h), times are Unix milliseconds; MariaDB refuses an
-- out-of-range BIGINT result instead of wrapping. Ids and hashes are BINARY; agent ids and
-- sources ASCII binary; models utf8mb4_nopad_bin, byte for byte as in SQLite (no PAD SPACE:
-- "m" and "m " are two models in both backends). hub-billing is the only writer of balances,
-- holds, settlements, the ledger and the accounts; hubctl queues top-ups and writes prices.

-- Counters that readers poll (store_prices_rev): bumped inside the writing transaction (the
-- row lock orders writers), so a reader that sees the new value also sees the change.
CREATE TABLE IF NOT EXISTS billing_revs (
    name VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    rev BIGINT NOT NULL,
    PRIMARY KEY (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

INSERT IGNORE INTO billing_revs (name, rev) VALUES ('prices', 0);

-- Price versions: micro-units per one million tokens; a version applies from effective_from
-- on. Rows are never changed or deleted: old ledger rows name the version they used.
CREATE TABLE IF NOT EXISTS prices (
    model VARCHAR(256) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    effective_from BIGINT NOT NULL,
    input BIGINT NOT NULL,
    output BIGINT NOT NULL,
    cached_input BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (model, effective_from),
    CONSTRAINT prices_model_len CHECK (LENGTH(model) BETWEEN 1 AND 256),
    CONSTRAINT prices_nonneg CHECK (input >= 0 AND output >= 0 AND cached_input >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- A user's money: every applied top-up minus every settled charge. May go below zero by what
-- requests cost beyond their holds (DESIGN §4). A user without a row has 0.
CREATE TABLE IF NOT EXISTS balances (
    user_id BIGINT NOT NULL,
    balance BIGINT NOT NULL,
    PRIMARY KEY (user_id),
    CONSTRAINT balances_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Queued top-ups (hubctl user topup); hub-billing applies them and sets applied_at.
CREATE TABLE IF NOT EXISTS topups (
    id BIGINT NOT NULL AUTO_INCREMENT,
    user_id BIGINT NOT NULL,
    amount BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    applied_at BIGINT NULL,
    PRIMARY KEY (id),
    KEY topups_user (user_id, applied_at),
    KEY topups_pending (applied_at, id),
    CONSTRAINT topups_user_fk FOREIGN KEY (user_id) REFERENCES users (id),
    CONSTRAINT topups_amount CHECK (amount > 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Holds: one per request (req_id: its base id). state: 0 active, 1 settled, 2 expired,
-- 3 refused (STORE_HOLD_*). A refused hold is kept so that a re-sent request gets the same
-- answer.
CREATE TABLE IF NOT EXISTS holds (
    req_id BINARY(16) NOT NULL,
    user_id BIGINT NOT NULL,
    amount BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    state TINYINT NOT NULL,
    PRIMARY KEY (req_id),
    KEY holds_user_state (user_id, state),
    KEY holds_state_expires (state, expires_at),
    CONSTRAINT holds_user_fk FOREIGN KEY (user_id) REFERENCES users (id),
    CONSTRAINT holds_amount CHECK (amount >= 0),
    CONSTRAINT holds_state CHECK (state IN (0, 1, 2, 3))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Usage reports kept until their request is settled (then deleted). One per (request,
-- source, attempt): a re-send finds its row and changes nothing. No foreign keys: reports
-- come from the network, and an agent may not know the user (user_id 0).
CREATE TABLE IF NOT EXISTS usage_reports (
    req_id BINARY(16) NOT NULL,
    source VARCHAR(15) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    attempt BIGINT NOT NULL,
    agent_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id BIGINT NOT NULL,
    model VARCHAR(256) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    status INT NOT NULL,
    delivered TINYINT NOT NULL,
    complete TINYINT NOT NULL,
    estimated TINYINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (req_id, source, attempt),
    KEY usage_reports_received (received_at, req_id),
    CONSTRAINT usage_reports_source CHECK (source IN ('gateway', 'agent')),
    CONSTRAINT usage_reports_attempt CHECK (attempt >= 1),
    CONSTRAINT usage_reports_model_len CHECK (LENGTH(model) <= 256),
    CONSTRAINT usage_reports_tokens
        CHECK (input_tokens >= 0 AND cached_tokens >= 0 AND output_tokens >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- How each request ended for billing (outcome 1 billed, 2 nothing: STORE_OUTCOME_*). A billed
-- request names its ledger row (agent_id, seq); otherwise both are NULL.
CREATE TABLE IF NOT EXISTS settlements (
    req_id BINARY(16) NOT NULL,
    outcome TINYINT NOT NULL,
    user_id BIGINT NOT NULL,
    agent_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
    seq BIGINT NULL,
    settled_at BIGINT NOT NULL,
    PRIMARY KEY (req_id),
    CONSTRAINT settlements_outcome CHECK (outcome IN (1, 2))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The ledger: one hash chain per agent (lib/ledger.h), seq 1, 2, ... without gaps; every
-- column of ledger_row_t. cost = fee + credit on every row (store.c refuses anything else).
-- No foreign key to agents: the chain outlives the registry entry.
CREATE TABLE IF NOT EXISTS ledger (
    agent_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    seq BIGINT NOT NULL,
    req_id BINARY(16) NOT NULL,
    attempt BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    model VARCHAR(256) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    estimated TINYINT NOT NULL,
    cost BIGINT NOT NULL,
    fee BIGINT NOT NULL,
    credit BIGINT NOT NULL,
    hold_amount BIGINT NOT NULL,
    price_from BIGINT NOT NULL,
    fee_ppm BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    prev_hash BINARY(32) NOT NULL,
    hash BINARY(32) NOT NULL,
    PRIMARY KEY (agent_id, seq),
    UNIQUE KEY ledger_req (req_id),
    CONSTRAINT ledger_seq CHECK (seq >= 1 AND attempt >= 1),
    CONSTRAINT ledger_model_len CHECK (LENGTH(model) BETWEEN 1 AND 256),
    CONSTRAINT ledger_tokens CHECK (input_tokens >= 0 AND cached_tokens >= 0
                                    AND output_tokens >= 0),
    CONSTRAINT ledger_amounts CHECK (cost >= 0 AND fee >= 0 AND credit >= 0
                                     AND hold_amount >= 0 AND cost = fee + credit),
    CONSTRAINT ledger_fee_ppm CHECK (fee_ppm BETWEEN 0 AND 1000000)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per agent with a chain or an acknowledgement: its credit (sum of its rows' credit),
-- its chain's head (last_seq 0 and a zero hash before the first row) and the newest row it
-- acknowledged (never moves back).
CREATE TABLE IF NOT EXISTS agent_accounts (
    agent_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    credit BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    last_hash BINARY(32) NOT NULL,
    acked_seq BIGINT NOT NULL,
    PRIMARY KEY (agent_id),
    CONSTRAINT agent_accounts_seqs CHECK (last_seq >= 0 AND acked_seq >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
