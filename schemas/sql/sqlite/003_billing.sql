-- 003_billing (SQLite): prices, balances, top-ups, holds, usage reports, settlements, the
-- per-agent hash-chained ledger and the agents' accounts.
-- Statements end with ';' at the end of a line (schemas/gen_migrations.py splits there).
-- The whole file is applied in one transaction by store_migrate().
--
-- Money is int64 micro-units (lib/money.h), times are Unix milliseconds. Money columns that
-- SQL arithmetic updates carry a typeof() check: SQLite turns an integer overflow into a
-- REAL, and no floating point may ever be stored as money. hub-billing is the only writer of
-- balances, holds, settlements, the ledger and the accounts; hubctl queues top-ups and writes
-- prices.

-- Counters that readers poll (store_prices_rev): bumped inside the writing transaction, so a
-- reader that sees the new value also sees the change.
CREATE TABLE IF NOT EXISTS billing_revs (
    name TEXT NOT NULL PRIMARY KEY,
    rev INTEGER NOT NULL
);

INSERT OR IGNORE INTO billing_revs (name, rev) VALUES ('prices', 0);

-- Price versions: micro-units per one million tokens; a version applies from effective_from
-- on. Rows are never changed or deleted: old ledger rows name the version they used.
CREATE TABLE IF NOT EXISTS prices (
    model TEXT NOT NULL CHECK (length(CAST(model AS BLOB)) BETWEEN 1 AND 256),
    effective_from INTEGER NOT NULL,
    input INTEGER NOT NULL CHECK (input >= 0),
    output INTEGER NOT NULL CHECK (output >= 0),
    cached_input INTEGER NOT NULL CHECK (cached_input >= 0),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (model, effective_from)
);

-- A user's money: every applied top-up minus every settled charge. May go below zero by what
-- requests cost beyond their holds (DESIGN §4). A user without a row has 0.
CREATE TABLE IF NOT EXISTS balances (
    user_id INTEGER NOT NULL PRIMARY KEY REFERENCES users (id),
    balance INTEGER NOT NULL CHECK (typeof(balance) = 'integer')
);

-- Queued top-ups (hubctl user topup); hub-billing applies them and sets applied_at.
-- AUTOINCREMENT: an id is never handed out twice.
CREATE TABLE IF NOT EXISTS topups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users (id),
    amount INTEGER NOT NULL CHECK (amount > 0),
    created_at INTEGER NOT NULL,
    applied_at INTEGER
);

CREATE INDEX IF NOT EXISTS topups_user ON topups (user_id, applied_at);

CREATE INDEX IF NOT EXISTS topups_pending ON topups (applied_at, id);

-- Holds: one per request (req_id: its base id). state: 0 active, 1 settled, 2 expired,
-- 3 refused (STORE_HOLD_*). A refused hold is kept so that a re-sent request gets the same
-- answer.
CREATE TABLE IF NOT EXISTS holds (
    req_id BLOB NOT NULL PRIMARY KEY CHECK (length(req_id) = 16),
    user_id INTEGER NOT NULL REFERENCES users (id),
    amount INTEGER NOT NULL CHECK (amount >= 0),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    state INTEGER NOT NULL CHECK (state IN (0, 1, 2, 3))
);

CREATE INDEX IF NOT EXISTS holds_user_state ON holds (user_id, state);

CREATE INDEX IF NOT EXISTS holds_state_expires ON holds (state, expires_at);

-- Usage reports kept until their request is settled (then deleted). One per (request,
-- source, attempt): a re-send finds its row and changes nothing. No foreign keys: reports
-- come from the network, and an agent may not know the user (user_id 0).
CREATE TABLE IF NOT EXISTS usage_reports (
    req_id BLOB NOT NULL CHECK (length(req_id) = 16),
    source TEXT NOT NULL CHECK (source IN ('gateway', 'agent')),
    attempt INTEGER NOT NULL CHECK (attempt >= 1),
    agent_id TEXT NOT NULL CHECK (length(agent_id) <= 64),
    user_id INTEGER NOT NULL,
    model TEXT NOT NULL CHECK (length(CAST(model AS BLOB)) <= 256),
    status INTEGER NOT NULL,
    delivered INTEGER NOT NULL CHECK (delivered IN (0, 1)),
    complete INTEGER NOT NULL CHECK (complete IN (0, 1)),
    estimated INTEGER NOT NULL CHECK (estimated IN (0, 1)),
    input_tokens INTEGER NOT NULL CHECK (input_tokens >= 0),
    cached_tokens INTEGER NOT NULL CHECK (cached_tokens >= 0),
    output_tokens INTEGER NOT NULL CHECK (output_tokens >= 0),
    received_at INTEGER NOT NULL,
    PRIMARY KEY (req_id, source, attempt)
);

CREATE INDEX IF NOT EXISTS usage_reports_received ON usage_reports (received_at, req_id);

-- How each request ended for billing (outcome 1 billed, 2 nothing: STORE_OUTCOME_*). A billed
-- request names its ledger row (agent_id, seq); otherwise both are NULL.
CREATE TABLE IF NOT EXISTS settlements (
    req_id BLOB NOT NULL PRIMARY KEY CHECK (length(req_id) = 16),
    outcome INTEGER NOT NULL CHECK (outcome IN (1, 2)),
    user_id INTEGER NOT NULL,
    agent_id TEXT,
    seq INTEGER,
    settled_at INTEGER NOT NULL
);

-- The ledger: one hash chain per agent (lib/ledger.h), seq 1, 2, ... without gaps; every
-- column of ledger_row_t. cost = fee + credit on every row (store.c refuses anything else).
-- No foreign key to agents: the chain outlives the registry entry.
CREATE TABLE IF NOT EXISTS ledger (
    agent_id TEXT NOT NULL CHECK (length(agent_id) BETWEEN 1 AND 64),
    seq INTEGER NOT NULL CHECK (seq >= 1),
    req_id BLOB NOT NULL UNIQUE CHECK (length(req_id) = 16),
    attempt INTEGER NOT NULL CHECK (attempt >= 1),
    user_id INTEGER NOT NULL,
    model TEXT NOT NULL CHECK (length(CAST(model AS BLOB)) BETWEEN 1 AND 256),
    input_tokens INTEGER NOT NULL CHECK (input_tokens >= 0),
    cached_tokens INTEGER NOT NULL CHECK (cached_tokens >= 0),
    output_tokens INTEGER NOT NULL CHECK (output_tokens >= 0),
    estimated INTEGER NOT NULL CHECK (estimated IN (0, 1)),
    cost INTEGER NOT NULL CHECK (cost >= 0),
    fee INTEGER NOT NULL CHECK (fee >= 0),
    credit INTEGER NOT NULL CHECK (credit >= 0),
    hold_amount INTEGER NOT NULL CHECK (hold_amount >= 0),
    price_from INTEGER NOT NULL,
    fee_ppm INTEGER NOT NULL CHECK (fee_ppm BETWEEN 0 AND 1000000),
    created_ms INTEGER NOT NULL,
    prev_hash BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash BLOB NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (agent_id, seq),
    CHECK (cost = fee + credit)
);

-- One row per agent with a chain or an acknowledgement: its credit (sum of its rows' credit),
-- its chain's head (last_seq 0 and a zero hash before the first row) and the newest row it
-- acknowledged (never moves back).
CREATE TABLE IF NOT EXISTS agent_accounts (
    agent_id TEXT NOT NULL PRIMARY KEY CHECK (length(agent_id) BETWEEN 1 AND 64),
    credit INTEGER NOT NULL CHECK (typeof(credit) = 'integer'),
    last_seq INTEGER NOT NULL CHECK (last_seq >= 0),
    last_hash BLOB NOT NULL CHECK (length(last_hash) = 32),
    acked_seq INTEGER NOT NULL CHECK (acked_seq >= 0)
);
