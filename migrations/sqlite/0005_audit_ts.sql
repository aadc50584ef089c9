-- Retention purges the audit log by time.
CREATE INDEX audit_ts ON audit (ts);
