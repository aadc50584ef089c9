//! PostgreSQL store: the same tables as SQLite, shared by any number of instances. The
//! database is the authority: every consume is a conditional update, key edits announce
//! themselves with `NOTIFY` so every instance reloads the key at once.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool, Postgres, QueryBuilder, Row, Transaction};
use tokio::sync::mpsc;

use super::postgres_writer::PgConsumeWriter;
use super::rows::{
    AlertDbRow, AuditDbRow, HistoryDbRow, KEY_COLUMNS, KeyRow, REQUEST_LOG_COLUMNS,
    RequestLogDbRow, json_text,
};
use super::{
    AlertFilter, AlertRow, AuditEntry, AuditRecord, ConsumeWriter, DeliveryRecord, HistoryEntry,
    IdempotentResult, KeyEvent, KeyPatch, NewAlert, NewKey, PurgeCutoffs, RequestLogFilter,
    RequestLogRow, StatusFilter, Store, StoreResult, UpstreamStats,
};
use crate::keys::{KeyHash, KeyRecord};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel key edits are announced on; the payload is the key's id.
const KEY_CHANNEL: &str = "quota_proxy_keys";

#[derive(Debug, Clone, Copy)]
pub struct PgOptions {
    /// Connections for reads and admin writes (the ledger's writer has its own).
    pub pool_max: u32,
    /// How long a request waits for a connection (or a new one) before answering 503.
    pub acquire_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_max: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    connect: PgConnectOptions,
}

impl PgStore {
    /// Connects and applies migrations (idempotent: several instances may start at once,
    /// the migrator takes an advisory lock).
    pub async fn open(url: &str, opts: PgOptions) -> StoreResult<Self> {
        let connect = PgConnectOptions::from_str(url)?.application_name("quota-proxy");
        let pool = PgPoolOptions::new()
            .max_connections(opts.pool_max.max(2))
            .min_connections(1)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(connect.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, connect })
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn insert_audit_tx(tx: &mut Transaction<'_, Postgres>, a: &AuditRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit (ts, action, target, key_id, token_hint, client_ip, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
    if let Some(id) = a.key_id {
        // Delivered to every listener when (and only if) the transaction commits.
        notify_key(tx, id).await?;
    }
    Ok(())
}

async fn notify_key(tx: &mut Transaction<'_, Postgres>, id: i64) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(KEY_CHANNEL)
        .bind(id.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn key_in_tx(tx: &mut Transaction<'_, Postgres>, id: i64) -> StoreResult<Option<KeyRecord>> {
    let row: Option<KeyRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM keys WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(Into::into))
}

/// Listens for key edits until the receiver is dropped. After any loss of the connection
/// (edits may have been missed meanwhile) it says so, and the ledger reloads every key.
async fn listen(connect: PgConnectOptions, tx: mpsc::UnboundedSender<KeyEvent>) {
    loop {
        let attempt = async {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy_with(connect.clone());
            let mut l = PgListener::connect_with(&pool).await?;
            l.ignore_pool_close_event(true);
            l.listen(KEY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = match attempt.await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "key change listener: cannot connect; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                if tx.is_closed() {
                    return;
                }
                continue;
            }
        };
        // Edits made before this connection listened are caught up by reading everything.
        if tx.send(KeyEvent::Resync).is_err() {
            return;
        }
        loop {
            // `try_recv` gives `None` when the connection was lost (it reconnects on the
            // next call): edits in between are unknown, so everything is reloaded.
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    if let Ok(id) = n.payload().parse::<i64>()
                        && tx.send(KeyEvent::Changed(id)).is_err()
                    {
                        return;
                    }
                }
                Ok(None) => {
                    if tx.send(KeyEvent::Resync).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "key change listener lost its connection");
                    break;
                }
            }
        }
    }
}

#[async_trait]
impl Store for PgStore {
    fn shared(&self) -> bool {
        true
    }

    fn key_events(&self) -> Option<mpsc::UnboundedReceiver<KeyEvent>> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(listen(self.connect.clone(), tx));
        Some(rx)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn load_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        let rows: Vec<KeyRow> =
            sqlx::query_as(AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM keys")))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn key_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyRecord>> {
        let row: Option<KeyRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE key_hash = $1"
        )))
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Into::into))
    }

    async fn key_by_id(&self, id: i64) -> StoreResult<Option<KeyRecord>> {
        let row: Option<KeyRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Into::into))
    }

    async fn insert_keys(
        &self,
        keys: &[NewKey],
        audit: &AuditRecord,
    ) -> StoreResult<Vec<KeyRecord>> {
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO keys (key_hash, hint, name, prefix, quota, used, expires_at, \
                 created_at, enabled, metadata, owner_user_id, owner_username, limits, \
                 refill_interval, refill_amount, refill_period) \
                 VALUES ($1, $2, $3, $4, $5, 0, $6, $7, TRUE, $8, $9, $10, $11, $12, $13, $14) \
                 RETURNING id",
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
        let mut tx = self.pool.begin().await?;
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("UPDATE keys SET id = id");
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
        if qb.build().execute(&mut *tx).await?.rows_affected() == 0 {
            return Ok(None);
        }
        let mut a = audit.clone();
        a.key_id = a.key_id.or(Some(id));
        insert_audit_tx(&mut tx, &a).await?;
        let rec = key_in_tx(&mut tx, id).await?;
        tx.commit().await?;
        Ok(rec)
    }

    async fn delete_key(&self, id: i64, audit: &AuditRecord) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("DELETE FROM keys WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        let mut a = audit.clone();
        a.key_id = a.key_id.or(Some(id));
        insert_audit_tx(&mut tx, &a).await?;
        sqlx::query("DELETE FROM key_windows WHERE key_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn consume_writer(&self) -> StoreResult<Box<dyn ConsumeWriter>> {
        Ok(Box::new(PgConsumeWriter::connect(&self.connect).await?))
    }

    async fn idempotent_result(
        &self,
        key_id: i64,
        idem_key: &str,
    ) -> StoreResult<Option<IdempotentResult>> {
        // A row whose consume is still being committed elsewhere has no result yet: it is
        // invisible here (uncommitted), and the writer settles the race.
        let row = sqlx::query(
            "SELECT amount_used, remaining, total_quota, item_count FROM idempotency \
             WHERE key_id = $1 AND idem_key = $2",
        )
        .bind(key_id)
        .bind(idem_key)
        .fetch_optional(&self.pool)
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
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_events WHERE key_id = $1")
            .bind(key_id)
            .fetch_one(&self.pool)
            .await?;
        let rows: Vec<HistoryDbRow> = sqlx::query_as(
            "SELECT ts, amount, reason, remaining, metadata FROM usage_events \
             WHERE key_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
        )
        .bind(key_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        Ok((rows.into_iter().map(Into::into).collect(), total))
    }

    async fn period_used(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<(i64, i64)>> {
        let rows = sqlx::query(
            "SELECT key_id, CAST(SUM(amount) AS BIGINT) FROM usage_events \
             WHERE ts >= $1 AND ts < $2 GROUP BY key_id",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    async fn insert_audit(&self, audit: &AuditRecord) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        insert_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit(&self, limit: i64, offset: i64) -> StoreResult<(Vec<AuditEntry>, i64)> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit")
            .fetch_one(&self.pool)
            .await?;
        let rows: Vec<AuditDbRow> = sqlx::query_as(
            "SELECT id, ts, action, target, key_id, token_hint, client_ip, details FROM audit \
             ORDER BY id DESC LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        Ok((rows.into_iter().map(Into::into).collect(), total))
    }

    async fn key_changes_since(&self, after_id: i64) -> StoreResult<Vec<(i64, i64)>> {
        let rows = sqlx::query(
            "SELECT id, key_id FROM audit WHERE id > $1 AND key_id IS NOT NULL ORDER BY id",
        )
        .bind(after_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    async fn last_audit_id(&self) -> StoreResult<i64> {
        let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM audit")
            .fetch_one(&self.pool)
            .await?;
        Ok(id.unwrap_or(0))
    }

    async fn insert_request_logs(&self, rows: &[RequestLogRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        // 19 binds a row, well below PostgreSQL's 65 535.
        for chunk in rows.chunks(1000) {
            let mut qb: QueryBuilder<Postgres> =
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
        const WHERE: &str = "WHERE ($1::BIGINT IS NULL OR key_id = $1) \
                             AND ($2::TEXT IS NULL OR model = $2) AND status BETWEEN $3 AND $4";
        let total: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM request_log {WHERE}"
        )))
        .bind(filter.key_id)
        .bind(&filter.model)
        .bind(lo)
        .bind(hi)
        .fetch_one(&self.pool)
        .await?;
        let rows: Vec<RequestLogDbRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {REQUEST_LOG_COLUMNS} FROM request_log {WHERE} \
             ORDER BY id DESC LIMIT $5 OFFSET $6"
        )))
        .bind(filter.key_id)
        .bind(&filter.model)
        .bind(lo)
        .bind(hi)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        Ok((rows.into_iter().map(Into::into).collect(), total))
    }

    async fn upstream_stats(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<UpstreamStats>> {
        // Nearest-rank p95 as on SQLite: the smallest latency with 95 % of the calls at or
        // below it.
        let rows = sqlx::query(
            "SELECT upstream, COUNT(*), CAST(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(AVG(latency_ms) AS DOUBLE PRECISION), \
             CAST(percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_ms) AS BIGINT), \
             CAST(AVG(ttft_ms) AS DOUBLE PRECISION) \
             FROM request_log WHERE upstream IS NOT NULL AND ts >= $1 AND ts < $2 \
             GROUP BY upstream ORDER BY upstream",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UpstreamStats {
                    upstream: r.try_get(0)?,
                    requests: r.try_get(1)?,
                    errors: r.try_get::<Option<i64>, _>(2)?.unwrap_or(0),
                    avg_latency_ms: r.try_get::<Option<f64>, _>(3)?.unwrap_or(0.0),
                    p95_latency_ms: r.try_get::<Option<i64>, _>(4)?.unwrap_or(0),
                    avg_ttft_ms: r.try_get(5)?,
                })
            })
            .collect()
    }

    async fn request_counts_since(&self, since_ms: i64) -> StoreResult<Vec<(i64, i64)>> {
        let rows = sqlx::query(
            "SELECT key_id, COUNT(*) FROM request_log WHERE ts >= $1 AND key_id IS NOT NULL \
             GROUP BY key_id",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    async fn insert_alert(&self, a: &NewAlert) -> StoreResult<i64> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO alerts (ts, rule, subject, title, message, details, link, channels, status) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
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
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn set_alert_status(&self, id: i64, status: &str) -> StoreResult<()> {
        sqlx::query("UPDATE alerts SET status = $1 WHERE id = $2")
            .bind(status)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_delivery(&self, d: &DeliveryRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO alert_deliveries (alert_id, channel, attempt, ts, ok, http_status, error) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(d.alert_id)
        .bind(&d.channel)
        .bind(d.attempt)
        .bind(d.ts)
        .bind(d.ok)
        .bind(d.http_status)
        .bind(&d.error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn alerts(
        &self,
        f: &AlertFilter,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<AlertRow>, i64)> {
        const WHERE: &str = "WHERE ($1::TEXT IS NULL OR rule = $1) \
                             AND ($2::TEXT IS NULL OR status = $2) AND ts >= $3 AND ts < $4";
        let (from, to) = (f.from_ms.unwrap_or(i64::MIN), f.to_ms.unwrap_or(i64::MAX));
        let total: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM alerts {WHERE}"
        )))
        .bind(&f.rule)
        .bind(&f.status)
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await?;
        let rows: Vec<AlertDbRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT id, ts, rule, subject, title, message, details, link, channels, status \
             FROM alerts {WHERE} ORDER BY id DESC LIMIT $5 OFFSET $6"
        )))
        .bind(&f.rule)
        .bind(&f.status)
        .bind(from)
        .bind(to)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        Ok((rows.into_iter().map(Into::into).collect(), total))
    }

    async fn deliveries(&self, alert_ids: &[i64]) -> StoreResult<Vec<DeliveryRecord>> {
        Ok(sqlx::query_as(
            "SELECT alert_id, channel, attempt, ts, ok, http_status, error \
             FROM alert_deliveries WHERE alert_id = ANY($1) ORDER BY id",
        )
        .bind(alert_ids)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn claim_cooldowns(
        &self,
        rule: &str,
        subjects: &[String],
        now_ms: i64,
        until_ms: i64,
    ) -> StoreResult<Vec<String>> {
        let mut unique = subjects.to_vec();
        unique.sort();
        unique.dedup();
        // A concurrent claim of the same subject waits on the unique index, then sees the
        // winner's cooldown and claims nothing.
        Ok(sqlx::query_scalar(
            "INSERT INTO alert_cooldowns (rule, subject, until_ms) \
             SELECT $1, s, $3 FROM unnest($2::TEXT[]) AS s \
             ON CONFLICT (rule, subject) DO UPDATE SET until_ms = EXCLUDED.until_ms \
             WHERE alert_cooldowns.until_ms <= $4 RETURNING subject",
        )
        .bind(rule)
        .bind(&unique)
        .bind(until_ms)
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn purge(&self, cutoffs: &PurgeCutoffs) -> StoreResult<u64> {
        // Small batches, each its own short transaction, so no purge holds locks for long.
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
                "DELETE FROM {table} WHERE ctid = ANY(ARRAY(\
                 SELECT ctid FROM {table} WHERE {column} < $1 LIMIT {BATCH}))"
            );
            loop {
                let n = sqlx::query(AssertSqlSafe(sql.clone()))
                    .bind(before)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                total += n;
                if n < BATCH as u64 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        total += sqlx::query(
            "DELETE FROM alert_deliveries d WHERE NOT EXISTS \
             (SELECT 1 FROM alerts a WHERE a.id = d.alert_id)",
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(total)
    }
}
