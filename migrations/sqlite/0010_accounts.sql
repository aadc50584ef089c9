-- Users and teams: the budgets a key draws from besides its own (one table, one id space;
-- `kind` says which). A key's `owner_user_id` names its user; `owner_username` is a copy
-- of the user's name kept for the request log and the monitor's user dimension.
CREATE TABLE accounts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    contact         TEXT,
    team_id         INTEGER,
    enabled         INTEGER NOT NULL DEFAULT 1,
    metadata        TEXT    NOT NULL DEFAULT '{}',
    quota           INTEGER,
    used            INTEGER NOT NULL DEFAULT 0,
    refill_interval TEXT,
    refill_amount   INTEGER,
    refill_period   INTEGER,
    limits          TEXT    NOT NULL DEFAULT '{}',
    show_keys       INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL
);
CREATE INDEX accounts_kind_name ON accounts (kind, name);
CREATE INDEX accounts_team ON accounts (team_id);
CREATE INDEX keys_owner ON keys (owner_user_id);

-- Today's owners become users: the owner's id is kept (the monitor's history names it),
-- its name is the username seen on its keys (or `user-<id>`); an owner known by name only
-- gets a new id. Nothing is lost: the keys keep their owner columns, now pointing at users.
INSERT INTO accounts (id, kind, name, created_at)
SELECT owner_user_id, 'user', COALESCE(MAX(owner_username), 'user-' || owner_user_id),
       MIN(created_at)
FROM keys WHERE owner_user_id IS NOT NULL GROUP BY owner_user_id;
INSERT INTO accounts (kind, name, created_at)
SELECT 'user', owner_username, MIN(created_at) FROM keys
WHERE owner_user_id IS NULL AND owner_username IS NOT NULL
  AND owner_username NOT IN (SELECT name FROM accounts WHERE kind = 'user')
GROUP BY owner_username;
UPDATE keys SET owner_user_id = (SELECT MIN(id) FROM accounts a
    WHERE a.kind = 'user' AND a.name = keys.owner_username)
WHERE owner_user_id IS NULL AND owner_username IS NOT NULL;
UPDATE keys SET owner_username = (SELECT name FROM accounts a WHERE a.id = keys.owner_user_id)
WHERE owner_user_id IS NOT NULL;

INSERT INTO generations (name, gen) VALUES ('accounts', 0);
