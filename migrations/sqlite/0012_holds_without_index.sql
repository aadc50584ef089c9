-- The holds table only ever holds calls in flight (a handful of rows): its index on
-- `instance` saved nothing a scan would cost, and cost every hold and every settlement a
-- page more to write in the WAL. (PostgreSQL keeps it: several servers share that table.)
DROP INDEX IF EXISTS holds_instance;
