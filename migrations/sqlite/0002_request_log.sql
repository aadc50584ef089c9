-- One row per gateway call (the monitor's native source).
CREATE TABLE request_log (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    ts                INTEGER NOT NULL,
    request_id        TEXT    NOT NULL,
    key_id            INTEGER,
    key_name          TEXT,
    owner_user_id     INTEGER,
    owner_username    TEXT,
    endpoint          TEXT    NOT NULL,
    model             TEXT,
    upstream          TEXT,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost              INTEGER NOT NULL DEFAULT 0,
    status            INTEGER NOT NULL,
    error             TEXT,
    latency_ms        INTEGER NOT NULL,
    ttft_ms           INTEGER,
    is_stream         INTEGER NOT NULL DEFAULT 0,
    estimated         INTEGER NOT NULL DEFAULT 0,
    client_ip         TEXT
);
CREATE INDEX request_log_ts ON request_log (ts);
CREATE INDEX request_log_key_ts ON request_log (key_id, ts);
