-- Alerts raised by the rules, one delivery row per attempt per channel, and the cooldown
-- per (rule, subject) that keeps a problem from being announced twice, across restarts.
CREATE TABLE alerts (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    ts       INTEGER NOT NULL,
    rule     TEXT    NOT NULL,
    subject  TEXT    NOT NULL,
    title    TEXT    NOT NULL,
    message  TEXT    NOT NULL,
    details  TEXT    NOT NULL,
    link     TEXT,
    channels TEXT    NOT NULL,
    status   TEXT    NOT NULL
);
CREATE INDEX alerts_ts ON alerts (ts);
CREATE INDEX alerts_rule_ts ON alerts (rule, ts);

CREATE TABLE alert_deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id    INTEGER NOT NULL,
    channel     TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    ts          INTEGER NOT NULL,
    ok          INTEGER NOT NULL,
    http_status INTEGER,
    error       TEXT
);
CREATE INDEX alert_deliveries_alert ON alert_deliveries (alert_id);

CREATE TABLE alert_cooldowns (
    rule     TEXT    NOT NULL,
    subject  TEXT    NOT NULL,
    until_ms INTEGER NOT NULL,
    PRIMARY KEY (rule, subject)
);
