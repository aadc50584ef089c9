-- Channels added from the admin API / console (config-file upstreams are not stored). The
-- settings that are never queried live in `spec` (JSON); the upstream keys and header
-- values in `secrets`, sealed when SECRETS_KEY is set; each key's state (hint, disabled
-- reason) in `key_state`, in the order of the keys.
CREATE TABLE upstreams (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    secrets TEXT NOT NULL,
    key_state TEXT NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

-- A counter per set of settings other instances follow: bumped in every transaction that
-- changes the set (with NOTIFY), read by every instance on the announcement and every
-- second in case one was missed.
CREATE TABLE generations (
    name TEXT PRIMARY KEY,
    gen BIGINT NOT NULL
);
INSERT INTO generations (name, gen) VALUES ('upstreams', 0);
