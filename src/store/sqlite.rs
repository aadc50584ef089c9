//! SQLite store: WAL, one writer connection (so in-process writers queue instead of spinning
//! on SQLITE_BUSY), a small read pool, `busy_timeout` for other processes (the CLI).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite, SqlitePool, Transaction};

use super::rows::{
    AlertDbRow, AuditDbRow, HistoryDbRow, KEY_COLUMNS, KeyRow, REQUEST_LOG_COLUMNS,
    RequestLogDbRow, json_text,
};
use super::sqlite_writer::SqliteConsumeWriter;
use super::{
    AlertFilter, AlertRow, AuditEntry, AuditRecord, ConsumeWriter, DeliveryRecord, HistoryEntry,
    IdempotentResult, KeyPatch, NewAlert, NewKey, PurgeCutoffs, RequestLogFilter, RequestLogRow,
    StatusFilter, Store, StoreError, StoreResult, UpstreamStats,
};
use crate::keys::{KeyHash, KeyRecord};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
    connect: SqliteConnectOptions,
}

#[derive(Debug, Clone, Copy)]
pub struct SqliteOptions {
    /// `FULL` survives power loss; `NORMAL` survives a process crash only.
    pub synchronous_full: bool,
    /// How long a writer waits for another process's write lock before giving up (503).
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous_full: true,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

impl SqliteStore {
    /// Opens (creating when absent) the database file and applies migrations.
    pub async fn open(path: &Path, opts: SqliteOptions) -> StoreResult<Self> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("create {}: {e}", dir.display())))?;
        }
        let connect = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if opts.synchronous_full {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(opts.busy_timeout);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            // A storage fault can leave a connection inside a transaction whose ROLLBACK also
            // failed; handed out again, it would refuse every later write. Such a connection
            // is closed and a fresh one opened instead.
            .before_acquire(|conn, _| {
                Box::pin(async move {
                    use sqlx::Connection;
                    Ok(!conn.is_in_transaction())
                })
            })
            .connect_with(connect.clone())
            .await?;
        MIGRATOR.run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect.clone().read_only(true))
            .await?;
        Ok(Self {
            read,
            write,
            connect,
        })
    }

    pub(crate) fn read_pool(&self) -> &SqlitePool {
        &self.read
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

async fn insert_audit_tx(tx: &mut Transaction<'_, Sqlite>, a: &AuditRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit (ts, action, target, key_id, token_hint, client_ip, details) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(a.ts)
    .bind(&a.action)
    .bind(&a.target)
    .bind(a.key_id)
    .bind(&a.token_hint)
    .bind(&a.client_ip)
    .bind(a.details.as_ref().map(json_text))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn key_in_tx(tx: &mut Transaction<'_, Sqlite>, id: i64) -> StoreResult<Option<KeyRecord>> {
    let row: Option<KeyRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM keys WHERE id = ?"
    )))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(Into::into))
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    async fn load_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        let rows: Vec<KeyRow> =
            sqlx::query_as(AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM keys")))
                .fetch_all(&self.read)
                .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn key_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyRecord>> {
        let row: Option<KeyRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE key_hash = ?"
        )))
        .bind(&hash[..])
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(Into::into))
    }

    async fn key_by_id(&self, id: i64) -> StoreResult<Option<KeyRecord>> {
        let row: Option<KeyRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(Into::into))
    }

    async fn insert_keys(
        &self,
        keys: &[NewKey],
        audit: &AuditRecord,
    ) -> StoreResult<Vec<KeyRecord>> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO keys (key_hash, hint, name, prefix, quota, used, expires_at, \
                 created_at, enabled, metadata, owner_user_id, owner_username, limits, \
                 refill_interval, refill_amount, refill_period) \
                 VALUES (?, ?, ?, ?, ?, 0, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(&k.hash[..])
            .bind(&k.hint)
            .bind(&k.name)
            .bind(&k.prefix)
            .bind(k.quota)
            .bind(k.expires_at)
            .bind(k.created_at)
            .bind(json_text(&k.metadata))
            .bind(k.owner.as_ref().and_then(|o| o.user_id))
            .bind(k.owner.as_ref().and_then(|o| o.username.clone()))
            .bind(json_text(&k.limits))
            .bind(k.refill.map(|r| r.interval.as_str()))
            .bind(k.refill.map(|r| r.amount))
            .bind(k.refill_period)
            .fetch_one(&mut *tx)
            .await?;
            let mut a = audit.clone();
            a.key_id = Some(id);
            a.target = Some(id.to_string());
            insert_audit_tx(&mut tx, &a).await?;
            if let Some(rec) = key_in_tx(&mut tx, id).await? {
                out.push(rec);
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn update_key(
        &self,
        id: i64,
        patch: &KeyPatch,
        audit: &AuditRecord,
    ) -> StoreResult<Option<KeyRecord>> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        if key_in_tx(&mut tx, id).await?.is_none() {
            return Ok(None);
        }
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("UPDATE keys SET id = id");
        if let Some(v) = &patch.name {
            qb.push(", name = ").push_bind(v.clone());
        }
        if let Some(v) = patch.quota {
            qb.push(", quota = ").push_bind(v);
        }
        if let Some(v) = patch.used {
            qb.push(", used = ").push_bind(v);
        }
        if let Some(v) = patch.expires_at {
            qb.push(", expires_at = ").push_bind(v);
        }
        if let Some(v) = patch.enabled {
            qb.push(", enabled = ").push_bind(v);
        }
        if let Some(v) = &patch.metadata {
            qb.push(", metadata = ").push_bind(json_text(v));
        }
        if let Some(owner) = &patch.owner {
            qb.push(", owner_user_id = ")
                .push_bind(owner.as_ref().and_then(|o| o.user_id));
            qb.push(", owner_username = ")
                .push_bind(owner.as_ref().and_then(|o| o.username.clone()));
        }
        if let Some(v) = &patch.limits {
            qb.push(", limits = ").push_bind(json_text(v));
        }
        if let Some(refill) = patch.refill {
            qb.push(", refill_interval = ")
                .push_bind(refill.map(|r| r.interval.as_str()));
            qb.push(", refill_amount = ")
                .push_bind(refill.map(|r| r.amount));
        }
        if let Some(v) = patch.refill_period {
            qb.push(", refill_period = ").push_bind(v);
        }
        if let Some((hash, hint)) = &patch.new_secret {
            qb.push(", key_hash = ").push_bind(hash.to_vec());
            qb.push(", hint = ").push_bind(hint.clone());
        }
        qb.push(" WHERE id = ").push_bind(id);
        qb.build().execute(&mut *tx).await?;
        insert_audit_tx(&mut tx, audit).await?;
        let rec = key_in_tx(&mut tx, id).await?;
        tx.commit().await?;
        Ok(rec)
    }

    async fn delete_key(&self, id: i64, audit: &AuditRecord) -> StoreResult<bool> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let n = sqlx::query("DELETE FROM keys WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        insert_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn consume_writer(&self) -> StoreResult<Box<dyn ConsumeWriter>> {
        Ok(Box::new(SqliteConsumeWriter::connect(&self.connect).await?))
    }

    async fn idempotent_result(
        &self,
        key_id: i64,
        idem_key: &str,
    ) -> StoreResult<Option<IdempotentResult>> {
        let row = sqlx::query(
            "SELECT amount_used, remaining, total_quota, item_count FROM idempotency \
             WHERE key_id = ? AND idem_key = ?",
        )
        .bind(key_id)
        .bind(idem_key)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            Ok(IdempotentResult {
                amount_used: r.try_get(0)?,
                remaining: r.try_get(1)?,
                total_quota: r.try_get(2)?,
                count: r.try_get(3)?,
            })
        })
        .transpose()
    }

    async fn history(
        &self,
        key_id: i64,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<HistoryEntry>, i64)> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_events WHERE key_id = ?")
            .bind(key_id)
            .fetch_one(&self.read)
            .await?;
        let rows: Vec<HistoryDbRow> = sqlx::query_as(
            "SELECT ts, amount, reason, remaining, metadata FROM usage_events \
             WHERE key_id = ? ORDER BY id DESC LIMIT ? OFFSET ?",
        )
        .bind(key_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.read)
        .await?;
        Ok((rows.into_iter().map(Into::into).collect(), total))
    }

    async fn period_used(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<(i64, i64)>> {
        let rows = sqlx::query(
            "SELECT key_id, SUM(amount) FROM usage_events WHERE ts >= ? AND ts < ? GROUP BY key_id",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    async fn insert_audit(&self, audit: &AuditRecord) -> StoreResult<()> {
        let mut tx = self.write.begin().await?;
        insert_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit(&self, limit: i64, offset: i64) -> StoreResult<(Vec<AuditEntry>, i64)> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit")
            .fetch_one(&self.read)
            .await?;
        let rows: Vec<AuditDbRow> = sqlx::query_as(
            "SELECT id, ts, action, target, key_id, token_hint, client_ip, details FROM audit \
             ORDER BY id DESC LIMIT ? OFFSET ?",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.read)
        .await?;
        Ok((rows.into_iter().map(Into::into).collect(), total))
    }

    async fn key_changes_since(&self, after_id: i64) -> StoreResult<Vec<(i64, i64)>> {
        let rows = sqlx::query(
            "SELECT id, key_id FROM audit WHERE id > ? AND key_id IS NOT NULL ORDER BY id",
        )
        .bind(after_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    async fn last_audit_id(&self) -> StoreResult<i64> {
        let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM audit")
            .fetch_one(&self.read)
            .await?;
        Ok(id.unwrap_or(0))
    }

    async fn insert_request_logs(&self, rows: &[RequestLogRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.write.begin().await?;
        // 19 binds a row: 500 rows stay below SQLite's variable limit.
        for chunk in rows.chunks(500) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new(format!("INSERT INTO request_log ({REQUEST_LOG_COLUMNS}) "));
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(r.ts)
                    .push_bind(&r.request_id)
                    .push_bind(r.key_id)
                    .push_bind(&r.key_name)
                    .push_bind(r.owner_user_id)
                    .push_bind(&r.owner_username)
                    .push_bind(&r.endpoint)
                    .push_bind(&r.model)
                    .push_bind(&r.upstream)
                    .push_bind(r.prompt_tokens)
                    .push_bind(r.completion_tokens)
                    .push_bind(r.cost)
                    .push_bind(r.status)
                    .push_bind(&r.error)
                    .push_bind(r.latency_ms)
                    .push_bind(r.ttft_ms)
                    .push_bind(r.is_stream)
                    .push_bind(r.estimated)
                    .push_bind(&r.client_ip);
            });
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn request_logs(
        &self,
        filter: &RequestLogFilter,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<RequestLogRow>, i64)> {
        let (lo, hi) = match filter.status {
            None => (i64::MIN, i64::MAX),
            Some(StatusFilter::Ok) => (i64::MIN, 399),
            Some(StatusFilter::Error) => (400, i64::MAX),
            Some(StatusFilter::Exact(s)) => (s, s),
        };
        const WHERE: &str = "WHERE (?1 IS NULL OR key_id = ?1) AND (?2 IS NULL OR model = ?2) \
                             AND status BETWEEN ?3 AND ?4";
        let total: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM request_log {WHERE}"
        )))
        .bind(filter.key_id)
        .bind(&filter.model)
        .bind(lo)
        .bind(hi)
        .fetch_one(&self.read)
        .await?;
        let rows: Vec<RequestLogDbRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {REQUEST_LOG_COLUMNS} FROM request_log {WHERE} \
             ORDER BY id DESC LIMIT ?5 OFFSET ?6"
        )))
        .bind(filter.key_id)
        .bind(&filter.model)
        .bind(lo)
        .bind(hi)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.read)
        .await?;
        Ok((rows.into_iter().map(Into::into).collect(), total))
    }

    async fn upstream_stats(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<UpstreamStats>> {
        let rows = sqlx::query(
            "SELECT upstream, COUNT(*), SUM(status >= 400), AVG(latency_ms), AVG(ttft_ms) \
             FROM request_log WHERE upstream IS NOT NULL AND ts >= ? AND ts < ? \
             GROUP BY upstream ORDER BY upstream",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.read)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let upstream: String = r.try_get(0)?;
            let requests: i64 = r.try_get(1)?;
            // Nearest-rank p95: the value below which 95 % of the calls fall.
            let rank = ((requests as f64) * 0.95).ceil() as i64 - 1;
            let p95: i64 = sqlx::query_scalar(
                "SELECT latency_ms FROM request_log WHERE upstream = ? AND ts >= ? AND ts < ? \
                 ORDER BY latency_ms LIMIT 1 OFFSET ?",
            )
            .bind(&upstream)
            .bind(from_ms)
            .bind(to_ms)
            .bind(rank.max(0))
            .fetch_optional(&self.read)
            .await?
            .unwrap_or(0);
            out.push(UpstreamStats {
                upstream,
                requests,
                errors: r.try_get::<Option<i64>, _>(2)?.unwrap_or(0),
                avg_latency_ms: r.try_get::<Option<f64>, _>(3)?.unwrap_or(0.0),
                p95_latency_ms: p95,
                avg_ttft_ms: r.try_get(4)?,
            });
        }
        Ok(out)
    }

    async fn request_counts_since(&self, since_ms: i64) -> StoreResult<Vec<(i64, i64)>> {
        let rows = sqlx::query(
            "SELECT key_id, COUNT(*) FROM request_log WHERE ts >= ? AND key_id IS NOT NULL \
             GROUP BY key_id",
        )
        .bind(since_ms)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    async fn insert_alert(&self, a: &NewAlert) -> StoreResult<i64> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO alerts (ts, rule, subject, title, message, details, link, channels, status) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(a.ts)
        .bind(&a.rule)
        .bind(&a.subject)
        .bind(&a.title)
        .bind(&a.message)
        .bind(a.details.to_string())
        .bind(&a.link)
        .bind(a.channels.join(","))
        .bind(&a.status)
        .fetch_one(&self.write)
        .await?;
        Ok(id)
    }

    async fn set_alert_status(&self, id: i64, status: &str) -> StoreResult<()> {
        sqlx::query("UPDATE alerts SET status = ? WHERE id = ?")
            .bind(status)
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn insert_delivery(&self, d: &DeliveryRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO alert_deliveries (alert_id, channel, attempt, ts, ok, http_status, error) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(d.alert_id)
        .bind(&d.channel)
        .bind(d.attempt)
        .bind(d.ts)
        .bind(d.ok)
        .bind(d.http_status)
        .bind(&d.error)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn alerts(
        &self,
        f: &AlertFilter,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<AlertRow>, i64)> {
        const WHERE: &str = "WHERE (?1 IS NULL OR rule = ?1) AND (?2 IS NULL OR status = ?2) \
                             AND ts >= ?3 AND ts < ?4";
        let (from, to) = (f.from_ms.unwrap_or(i64::MIN), f.to_ms.unwrap_or(i64::MAX));
        let total: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM alerts {WHERE}"
        )))
        .bind(&f.rule)
        .bind(&f.status)
        .bind(from)
        .bind(to)
        .fetch_one(&self.read)
        .await?;
        let rows: Vec<AlertDbRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT id, ts, rule, subject, title, message, details, link, channels, status \
             FROM alerts {WHERE} ORDER BY id DESC LIMIT ?5 OFFSET ?6"
        )))
        .bind(&f.rule)
        .bind(&f.status)
        .bind(from)
        .bind(to)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.read)
        .await?;
        Ok((rows.into_iter().map(Into::into).collect(), total))
    }

    async fn deliveries(&self, alert_ids: &[i64]) -> StoreResult<Vec<DeliveryRecord>> {
        let mut out = Vec::new();
        for chunk in alert_ids.chunks(500) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "SELECT alert_id, channel, attempt, ts, ok, http_status, error \
                 FROM alert_deliveries WHERE alert_id IN (",
            );
            let mut sep = qb.separated(", ");
            for id in chunk {
                sep.push_bind(*id);
            }
            qb.push(") ORDER BY id");
            out.extend(
                qb.build_query_as::<DeliveryRecord>()
                    .fetch_all(&self.read)
                    .await?,
            );
        }
        Ok(out)
    }

    async fn claim_cooldowns(
        &self,
        rule: &str,
        subjects: &[String],
        now_ms: i64,
        until_ms: i64,
    ) -> StoreResult<Vec<String>> {
        let mut tx = self.write.begin().await?;
        let mut claimed = Vec::new();
        for s in subjects {
            let won: Option<String> = sqlx::query_scalar(
                "INSERT INTO alert_cooldowns (rule, subject, until_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (rule, subject) DO UPDATE SET until_ms = excluded.until_ms \
                 WHERE alert_cooldowns.until_ms <= ?4 RETURNING subject",
            )
            .bind(rule)
            .bind(s)
            .bind(until_ms)
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await?;
            claimed.extend(won);
        }
        tx.commit().await?;
        Ok(claimed)
    }

    async fn purge(&self, cutoffs: &PurgeCutoffs) -> StoreResult<u64> {
        // Small batches, each its own short transaction, with a pause between them: the
        // ledger's writer gets the write lock between any two, so a large purge never makes a
        // consume wait for the busy timeout.
        const BATCH: i64 = 2000;
        let jobs: [(&str, &str, Option<i64>); 6] = [
            ("request_log", "ts", cutoffs.request_log),
            ("usage_events", "ts", cutoffs.usage_events),
            ("idempotency", "created_at", cutoffs.idempotency),
            ("audit", "ts", cutoffs.audit),
            ("alerts", "ts", cutoffs.alerts),
            ("alert_cooldowns", "until_ms", cutoffs.cooldowns),
        ];
        let mut total = 0u64;
        for (table, column, before) in jobs {
            let Some(before) = before else { continue };
            let sql = format!(
                "DELETE FROM {table} WHERE rowid IN \
                 (SELECT rowid FROM {table} WHERE {column} < ? LIMIT {BATCH})"
            );
            loop {
                let n = sqlx::query(AssertSqlSafe(sql.clone()))
                    .bind(before)
                    .execute(&self.write)
                    .await?
                    .rows_affected();
                total += n;
                if n < BATCH as u64 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        // Deliveries of alerts that are gone.
        total += sqlx::query(
            "DELETE FROM alert_deliveries WHERE alert_id NOT IN (SELECT id FROM alerts)",
        )
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(
            &dir.path().join("s.db"),
            SqliteOptions {
                synchronous_full: false,
                busy_timeout: Duration::from_secs(2),
            },
        )
        .await
        .unwrap();
        (s, dir)
    }

    fn row(ts: i64, upstream: &str, status: i64, latency: i64, model: &str) -> RequestLogRow {
        RequestLogRow {
            ts,
            request_id: format!("r{ts}"),
            endpoint: "chat.completions".into(),
            upstream: Some(upstream.into()),
            model: Some(model.into()),
            status,
            latency_ms: latency,
            key_id: Some(if status < 400 { 1 } else { 2 }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn upstream_stats_and_request_filters() {
        let (s, _d) = store().await;
        let mut rows: Vec<RequestLogRow> = (0..20)
            .map(|i| row(1000 + i, "a", 200, 10 * (i + 1), "m1"))
            .collect();
        rows.push(row(2000, "a", 502, 5, "m2"));
        rows.push(row(2001, "b", 500, 7, "m2"));
        rows.push(row(9000, "a", 200, 1, "m1"));
        s.insert_request_logs(&rows).await.unwrap();
        let st = s.upstream_stats(0, 5000).await.unwrap();
        assert_eq!(st.len(), 2);
        let a = &st[0];
        assert_eq!((a.upstream.as_str(), a.requests, a.errors), ("a", 21, 1));
        // Nearest-rank p95 of 5, 10, 20 … 200: the 20th of 21 values.
        assert_eq!(a.p95_latency_ms, 190);
        assert_eq!((st[1].requests, st[1].errors), (1, 1));

        let f = |key_id, model: Option<&str>, status| RequestLogFilter {
            key_id,
            model: model.map(str::to_owned),
            status,
        };
        let count = |flt: RequestLogFilter| {
            let s = &s;
            async move { s.request_logs(&flt, 100, 0).await.unwrap().1 }
        };
        assert_eq!(count(f(None, None, None)).await, 23);
        assert_eq!(count(f(None, Some("m2"), None)).await, 2);
        assert_eq!(count(f(None, None, Some(StatusFilter::Error))).await, 2);
        assert_eq!(count(f(None, None, Some(StatusFilter::Ok))).await, 21);
        assert_eq!(
            count(f(None, None, Some(StatusFilter::Exact(502)))).await,
            1
        );
        assert_eq!(count(f(Some(2), Some("m2"), None)).await, 2);
        let (newest, _) = s.request_logs(&f(None, None, None), 1, 0).await.unwrap();
        assert_eq!(newest[0].ts, 9000, "newest first");
    }

    #[tokio::test]
    async fn cooldowns_are_claimed_once_until_they_expire() {
        let (s, _d) = store().await;
        let both: Vec<String> = vec!["token:1".into(), "token:2".into()];
        assert_eq!(
            s.claim_cooldowns("burst", &both, 0, 100).await.unwrap(),
            both
        );
        // Still cooling at 50: nothing to announce, for either subject.
        assert!(
            s.claim_cooldowns("burst", &both, 50, 150)
                .await
                .unwrap()
                .is_empty()
        );
        // Another rule has its own cooldowns.
        assert_eq!(
            s.claim_cooldowns("quota_low", &both[..1], 50, 300)
                .await
                .unwrap(),
            vec!["token:1"]
        );
        // At 100 both have ended: claimed again, until 300.
        assert_eq!(
            s.claim_cooldowns("burst", &both, 100, 300).await.unwrap(),
            both
        );
        assert!(
            s.claim_cooldowns("burst", &both, 299, 400)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn storage_fault_codes() {
        for code in ["5", "6", "10", "13", "8", "14", "1290", "3338", "517"] {
            assert!(super::super::is_storage_fault(code), "{code}");
        }
        for code in ["1", "19", "2067", "x"] {
            assert!(!super::super::is_storage_fault(code), "{code}");
        }
    }
}
