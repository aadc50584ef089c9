-- Keys: only the SHA-256 of the full key string is stored.
CREATE TABLE keys (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    key_hash        BLOB    NOT NULL UNIQUE,
    hint            TEXT    NOT NULL,
    name            TEXT,
    prefix          TEXT    NOT NULL,
    quota           INTEGER,
    used            INTEGER NOT NULL DEFAULT 0,
    expires_at      INTEGER,
    created_at      INTEGER NOT NULL,
    last_used       INTEGER,
    enabled         INTEGER NOT NULL DEFAULT 1,
    metadata        TEXT    NOT NULL DEFAULT '{}',
    owner_user_id   INTEGER,
    owner_username  TEXT,
    limits          TEXT    NOT NULL DEFAULT '{}',
    refill_interval TEXT,
    refill_amount   INTEGER,
    refill_period   INTEGER
);

-- One row per consumed item: the key's usage history.
CREATE TABLE usage_events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id    INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    amount    INTEGER NOT NULL,
    reason    TEXT,
    remaining INTEGER,
    metadata  TEXT
);
CREATE INDEX usage_events_key_id ON usage_events (key_id, id);
CREATE INDEX usage_events_ts ON usage_events (ts);

-- First result of each idempotent consume, written in the same transaction as the consume.
CREATE TABLE idempotency (
    key_id      INTEGER NOT NULL,
    idem_key    TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    amount_used INTEGER NOT NULL,
    remaining   INTEGER,
    total_quota INTEGER,
    item_count  INTEGER NOT NULL,
    PRIMARY KEY (key_id, idem_key)
);
CREATE INDEX idempotency_created_at ON idempotency (created_at);

-- Every admin write, from the HTTP API or the CLI. Also the change feed a running server
-- follows to pick up what the CLI changed in the same database file.
CREATE TABLE audit (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    ts         INTEGER NOT NULL,
    action     TEXT    NOT NULL,
    target     TEXT,
    key_id     INTEGER,
    token_hint TEXT,
    client_ip  TEXT,
    details    TEXT
);
