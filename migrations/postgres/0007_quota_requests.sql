-- Requests for more quota, made by key holders on /me and decided by an operator.
CREATE TABLE quota_requests (
    id          BIGSERIAL PRIMARY KEY,
    key_id      BIGINT NOT NULL,
    user_id     BIGINT,
    amount      BIGINT NOT NULL,
    reason      TEXT,
    status      TEXT    NOT NULL DEFAULT 'pending',
    created_ms  BIGINT NOT NULL,
    decided_ms  BIGINT,
    decided_by  TEXT,
    granted     BIGINT,
    note        TEXT
);
CREATE INDEX quota_requests_status ON quota_requests (status, id);
CREATE INDEX quota_requests_key ON quota_requests (key_id, id);
