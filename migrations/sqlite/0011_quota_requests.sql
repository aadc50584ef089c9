-- Requests for more quota, made by key holders on /me and decided by an operator.
CREATE TABLE quota_requests (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id      INTEGER NOT NULL,
    user_id     INTEGER,
    amount      INTEGER NOT NULL,
    reason      TEXT,
    status      TEXT    NOT NULL DEFAULT 'pending',
    created_ms  INTEGER NOT NULL,
    decided_ms  INTEGER,
    decided_by  TEXT,
    granted     INTEGER,
    note        TEXT
);
CREATE INDEX quota_requests_status ON quota_requests (status, id);
CREATE INDEX quota_requests_key ON quota_requests (key_id, id);
