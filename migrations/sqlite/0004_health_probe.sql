-- One row the ledger's writer rewrites to learn whether the database takes writes again
-- after a storage fault (an empty transaction would not touch the disk).
CREATE TABLE health_probe (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL
);
