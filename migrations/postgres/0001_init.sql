-- The same tables as the SQLite migrations 0001-0005, in PostgreSQL's types. Times are epoch
-- milliseconds (BIGINT) on both backends, so rows copy across unchanged.

-- Keys: only the SHA-256 of the full key string is stored.
CREATE TABLE keys (
    id              BIGSERIAL PRIMARY KEY,
    key_hash        BYTEA   NOT NULL UNIQUE,
    hint            TEXT    NOT NULL,
    name            TEXT,
    prefix          TEXT    NOT NULL,
    quota           BIGINT,
    used            BIGINT  NOT NULL DEFAULT 0,
    expires_at      BIGINT,
    created_at      BIGINT  NOT NULL,
    last_used       BIGINT,
    enabled         BOOLEAN NOT NULL DEFAULT TRUE,
    metadata        TEXT    NOT NULL DEFAULT '{}',
    owner_user_id   BIGINT,
    owner_username  TEXT,
    limits          TEXT    NOT NULL DEFAULT '{}',
    refill_interval TEXT,
    refill_amount   BIGINT,
    refill_period   BIGINT
);

-- One row per consumed item: the key's usage history.
CREATE TABLE usage_events (
    id        BIGSERIAL PRIMARY KEY,
    key_id    BIGINT NOT NULL,
    ts        BIGINT NOT NULL,
    amount    BIGINT NOT NULL,
    reason    TEXT,
    remaining BIGINT,
    metadata  TEXT
);
CREATE INDEX usage_events_key_id ON usage_events (key_id, id);
CREATE INDEX usage_events_ts ON usage_events (ts);

-- First result of each idempotent consume, written in the same transaction as the consume.
CREATE TABLE idempotency (
    key_id      BIGINT NOT NULL,
    idem_key    TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    amount_used BIGINT NOT NULL,
    remaining   BIGINT,
    total_quota BIGINT,
    item_count  BIGINT NOT NULL,
    PRIMARY KEY (key_id, idem_key)
);
CREATE INDEX idempotency_created_at ON idempotency (created_at);

-- Every admin write, from the HTTP API, the CLI or another instance: also the change feed
-- every instance follows.
CREATE TABLE audit (
    id         BIGSERIAL PRIMARY KEY,
    ts         BIGINT NOT NULL,
    action     TEXT   NOT NULL,
    target     TEXT,
    key_id     BIGINT,
    token_hint TEXT,
    client_ip  TEXT,
    details    TEXT
);
CREATE INDEX audit_ts ON audit (ts);

-- One row per gateway call, from every instance (the monitor's native source).
CREATE TABLE request_log (
    id                BIGSERIAL PRIMARY KEY,
    ts                BIGINT  NOT NULL,
    request_id        TEXT    NOT NULL,
    key_id            BIGINT,
    key_name          TEXT,
    owner_user_id     BIGINT,
    owner_username    TEXT,
    endpoint          TEXT    NOT NULL,
    model             TEXT,
    upstream          TEXT,
    prompt_tokens     BIGINT  NOT NULL DEFAULT 0,
    completion_tokens BIGINT  NOT NULL DEFAULT 0,
    cost              BIGINT  NOT NULL DEFAULT 0,
    status            BIGINT  NOT NULL,
    error             TEXT,
    latency_ms        BIGINT  NOT NULL,
    ttft_ms           BIGINT,
    is_stream         BOOLEAN NOT NULL DEFAULT FALSE,
    estimated         BOOLEAN NOT NULL DEFAULT FALSE,
    client_ip         TEXT
);
CREATE INDEX request_log_ts ON request_log (ts);
CREATE INDEX request_log_key_ts ON request_log (key_id, ts);

CREATE TABLE alerts (
    id       BIGSERIAL PRIMARY KEY,
    ts       BIGINT NOT NULL,
    rule     TEXT   NOT NULL,
    subject  TEXT   NOT NULL,
    title    TEXT   NOT NULL,
    message  TEXT   NOT NULL,
    details  TEXT   NOT NULL,
    link     TEXT,
    channels TEXT   NOT NULL,
    status   TEXT   NOT NULL
);
CREATE INDEX alerts_ts ON alerts (ts);
CREATE INDEX alerts_rule_ts ON alerts (rule, ts);

CREATE TABLE alert_deliveries (
    id          BIGSERIAL PRIMARY KEY,
    alert_id    BIGINT  NOT NULL,
    channel     TEXT    NOT NULL,
    attempt     BIGINT  NOT NULL,
    ts          BIGINT  NOT NULL,
    ok          BOOLEAN NOT NULL,
    http_status BIGINT,
    error       TEXT
);
CREATE INDEX alert_deliveries_alert ON alert_deliveries (alert_id);

CREATE TABLE alert_cooldowns (
    rule     TEXT   NOT NULL,
    subject  TEXT   NOT NULL,
    until_ms BIGINT NOT NULL,
    PRIMARY KEY (rule, subject)
);

-- One row per instance that rewrites it to learn whether the database takes writes.
CREATE TABLE health_probe (
    id BIGINT PRIMARY KEY,
    ts BIGINT NOT NULL
);

-- Request counters shared by every instance: per key and kind ('day', 'minute'), the
-- window's start and the calls admitted in it.
CREATE TABLE key_windows (
    key_id BIGINT NOT NULL,
    kind   TEXT   NOT NULL,
    start  BIGINT NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (key_id, kind)
);
