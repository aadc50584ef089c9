-- Invite codes: each redeemable `uses` times for a new key made from `spec` (JSON: quota,
-- expiry, limits, models, prefix, owner). Only the code's SHA-256 is kept, and its hint.
CREATE TABLE invites (
    id BIGSERIAL PRIMARY KEY,
    code_hash BYTEA NOT NULL UNIQUE,
    hint TEXT NOT NULL,
    spec TEXT NOT NULL,
    uses BIGINT NOT NULL,
    used BIGINT NOT NULL DEFAULT 0,
    valid_until BIGINT,
    created_ms BIGINT NOT NULL
);
