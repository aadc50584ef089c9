-- Invite codes: each redeemable `uses` times for a new key made from `spec` (JSON: quota,
-- expiry, limits, models, prefix, owner). Only the code's SHA-256 is kept, and its hint.
CREATE TABLE invites (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    code_hash BLOB NOT NULL UNIQUE,
    hint TEXT NOT NULL,
    spec TEXT NOT NULL,
    uses INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    valid_until INTEGER,
    created_ms INTEGER NOT NULL
);
