-- Gateway holds committed before an answer leaves: a call served by a process that died
-- before its settlement is charged its hold at the next sweep, exactly once (the row is
-- deleted by whichever comes first, the settlement or the sweep).
CREATE TABLE holds (
    id INTEGER PRIMARY KEY,
    key_id INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    instance INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    reason TEXT,
    metadata TEXT
);
CREATE INDEX holds_instance ON holds (instance);

-- Each running server's heartbeat (wall-clock ms): a hold whose server stopped beating is
-- recovered by the others (or by the next start).
CREATE TABLE instances (
    id INTEGER PRIMARY KEY,
    seen_ms INTEGER NOT NULL
);
