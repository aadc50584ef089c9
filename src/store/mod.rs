//! Persistence behind one trait. Store code knows atomic conditional updates, not business
//! rules: the consume update refuses an overdraft, a disabled or an expired key by itself, so
//! the database stays the authority even when memory is stale (CLI edits, several instances).

pub mod copy;
pub mod postgres;
mod postgres_writer;
mod rows;
pub mod sqlite;
mod sqlite_raw;
pub mod sqlite_writer;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::keys::refill::PeriodStarts;
use crate::keys::{KeyHash, KeyLimits, KeyRecord, Owner, Refill};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Other(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::Database(db)
                if db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some() =>
            {
                if is_pg_unavailable(db.code().as_deref().unwrap_or("")) {
                    StoreError::Unavailable(e.to_string())
                } else {
                    StoreError::Other(e.to_string())
                }
            }
            sqlx::Error::Database(db) if db.code().as_deref().is_some_and(is_storage_fault) => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Other(e.to_string()),
        }
    }
}

/// SQLite result codes (primary or extended) that mean the storage, not the statement, is
/// at fault: busy or locked by another process, I/O error, disk full, read-only file or
/// directory, cannot open, no memory. They are worth a retry later (503), not a 500.
pub fn is_storage_fault(code: &str) -> bool {
    let Ok(n) = code.parse::<i64>() else {
        return false;
    };
    matches!(n & 0xff, 5 | 6 | 7 | 8 | 10 | 13 | 14)
}

/// PostgreSQL SQLSTATEs that mean "try again later": connection exceptions (08), too many
/// connections or out of resources (53), the server shutting down or starting (57P),
/// a read-only standby (25006), serialization failures and deadlocks (40001, 40P01).
pub fn is_pg_unavailable(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || matches!(code, "25006" | "40001" | "40P01")
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Other(e.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A key to insert; the id is assigned by the store.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub hash: KeyHash,
    pub hint: String,
    pub name: Option<String>,
    pub prefix: String,
    pub quota: Option<i64>,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub metadata: Map<String, Value>,
    pub owner: Option<Owner>,
    pub limits: KeyLimits,
    pub refill: Option<Refill>,
    pub refill_period: Option<i64>,
}

/// Fields an admin may change; `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub name: Option<Option<String>>,
    pub quota: Option<Option<i64>>,
    pub used: Option<i64>,
    pub expires_at: Option<Option<i64>>,
    pub enabled: Option<bool>,
    pub metadata: Option<Map<String, Value>>,
    pub owner: Option<Option<Owner>>,
    pub limits: Option<KeyLimits>,
    pub refill: Option<Option<Refill>>,
    pub refill_period: Option<Option<i64>>,
    pub new_secret: Option<(KeyHash, String)>,
}

#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub ts: i64,
    pub action: String,
    pub target: Option<String>,
    pub key_id: Option<i64>,
    pub token_hint: Option<String>,
    pub client_ip: Option<String>,
    pub details: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: i64,
    pub record: AuditRecord,
}

#[derive(Debug, Clone)]
pub struct UsageItem {
    pub amount: i64,
    pub reason: Option<String>,
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// All-or-nothing: refused unless the key is usable and can afford it.
    Consume,
    /// The cost of a call already served: charged even if the key was disabled meanwhile,
    /// and clamped to what remains so a key never goes below zero. One item.
    Settle,
    /// Points set aside for a gateway call about to be forwarded, when several instances
    /// share the database: refused like a consume, but no history is written; the call's
    /// settlement gives them back (`credit`) and charges the actual cost.
    Hold,
    /// Changes nothing: reads the key's counters in line with the ops before it, so memory
    /// learns what other instances charged without losing track of its own pending ops.
    Peek,
}

/// One consume (a single `use`, a whole batch, or a gateway call's cost) to commit.
#[derive(Debug, Clone)]
pub struct ConsumeOp {
    pub key_id: i64,
    pub kind: OpKind,
    pub items: Vec<UsageItem>,
    pub idempotency_key: Option<String>,
    /// A hold given back before this op is applied (settlements of held calls).
    pub credit: i64,
    /// Request counters shared by every instance that a hold must also fit (each counts
    /// the call when the hold is granted). Only a shared store keeps them.
    pub windows: Vec<WindowCap>,
}

/// A request counter per key and fixed window, shared in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCap {
    pub kind: WindowKind,
    /// Start of the current window (epoch ms): a different start opens a new count.
    pub start: i64,
    /// Calls the window admits.
    pub cap: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// UTC day (`dailyRequests`).
    Day,
    /// Clock minute (`rpm`).
    Minute,
}

impl WindowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowKind::Day => "day",
            WindowKind::Minute => "minute",
        }
    }
}

impl ConsumeOp {
    /// An op of `kind` on the key with nothing in it yet (no items, no idempotency key, no
    /// credit, no windows).
    pub fn new(key_id: i64, kind: OpKind) -> Self {
        Self {
            key_id,
            kind,
            items: Vec::new(),
            idempotency_key: None,
            credit: 0,
            windows: Vec::new(),
        }
    }

    pub fn total(&self) -> i64 {
        self.items.iter().map(|i| i.amount).sum()
    }

    /// What this op changes `used` by, before any clamping.
    pub fn net(&self) -> i64 {
        self.total() - self.credit
    }
}

/// Why a key's row refused an op, and what it has left after any due refill (a settlement
/// of a call already served charges that much, usable key or not).
pub fn refusal_of(
    c: &KeyCounters,
    refill: Option<(crate::keys::RefillInterval, i64)>,
    now_ms: i64,
    p: PeriodStarts,
) -> (Refusal, Option<i64>) {
    let (quota, used) = match refill {
        Some((interval, amount))
            if c.refill_period
                .is_none_or(|rp| p.for_interval(interval) > rp) =>
        {
            (Some(amount), 0)
        }
        _ => (c.quota, c.used),
    };
    let remaining = quota.map(|q| q.saturating_sub(used).max(0));
    let refusal = if !c.enabled {
        Refusal::Disabled
    } else if c.expires_at.is_some_and(|e| e <= now_ms) {
        Refusal::Expired
    } else {
        Refusal::Quota { remaining }
    };
    (refusal, remaining)
}

/// One usage-history row of a committed op.
pub struct HistoryRow<'a> {
    pub amount: i64,
    pub reason: Option<&'a str>,
    pub remaining: Option<i64>,
    pub metadata: Option<String>,
}

/// The history rows a committed op writes: one per item with the remaining quota right after
/// that item (a settlement: one row with what was charged; a hold: none; nothing for 0).
pub fn history_rows<'a>(op: &'a ConsumeOp, c: &Committed) -> Vec<HistoryRow<'a>> {
    if matches!(op.kind, OpKind::Hold | OpKind::Peek) {
        return Vec::new();
    }
    let mut rem_after = c.remaining;
    let mut per_item = Vec::with_capacity(op.items.len());
    for item in op.items.iter().rev() {
        per_item.push(rem_after);
        rem_after = rem_after.map(|x| x + item.amount);
    }
    op.items
        .iter()
        .zip(per_item.into_iter().rev())
        .filter_map(|(item, remaining)| {
            let amount = if op.kind == OpKind::Settle {
                c.charged
            } else {
                item.amount
            };
            (amount != 0).then(|| HistoryRow {
                amount,
                reason: item.reason.as_deref(),
                remaining,
                metadata: item
                    .metadata
                    .as_ref()
                    .and_then(|m| serde_json::to_string(m).ok()),
            })
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    Disabled,
    Expired,
    Quota {
        remaining: Option<i64>,
    },
    /// A shared request counter is full for its window.
    Window(WindowCap),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub remaining: Option<i64>,
    pub quota: Option<i64>,
    /// What was charged: the op's total, or less for a clamped settle.
    pub charged: i64,
}

pub type ConsumeResult = Result<Committed, Refusal>;

/// A key's counters as the database holds them right after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCounters {
    pub key_id: i64,
    pub used: i64,
    pub quota: Option<i64>,
    pub refill_period: Option<i64>,
    pub enabled: bool,
    pub expires_at: Option<i64>,
    pub last_used: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct BatchOutcome {
    /// One per op, in the order given.
    pub results: Vec<ConsumeResult>,
    /// Fresh counters of every key the batch touched (absent when the key is gone).
    pub counters: Vec<KeyCounters>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotentResult {
    pub amount_used: i64,
    pub remaining: Option<i64>,
    pub total_quota: Option<i64>,
    pub count: i64,
}

/// One gateway call, as logged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestLogRow {
    pub ts: i64,
    pub request_id: String,
    pub key_id: Option<i64>,
    pub key_name: Option<String>,
    pub owner_user_id: Option<i64>,
    pub owner_username: Option<String>,
    pub endpoint: String,
    pub model: Option<String>,
    pub upstream: Option<String>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost: i64,
    pub status: i64,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub is_stream: bool,
    pub estimated: bool,
    pub client_ip: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub ts: i64,
    pub amount: i64,
    pub reason: Option<String>,
    pub remaining: Option<i64>,
    pub metadata: Option<Value>,
}

/// Commits groups of consumes. Used by the ledger's single writer only, on its own thread.
#[async_trait(?Send)]
pub trait ConsumeWriter {
    /// Commits `ops` in one transaction. Each is applied only if the key exists, is
    /// enabled, unexpired and can afford it (after any due refill); the others are refused.
    async fn commit(
        &mut self,
        ops: &[ConsumeOp],
        now_ms: i64,
        periods: PeriodStarts,
    ) -> StoreResult<BatchOutcome>;

    /// Writes one small row in its own transaction: whether the database takes writes.
    async fn probe(&mut self, now_ms: i64) -> StoreResult<()>;

    async fn close(self: Box<Self>);
}

/// An alert as raised, before its deliveries.
#[derive(Debug, Clone)]
pub struct NewAlert {
    pub ts: i64,
    pub rule: String,
    pub subject: String,
    pub title: String,
    pub message: String,
    pub details: Value,
    pub link: Option<String>,
    pub channels: Vec<String>,
    pub status: String,
}

#[derive(Debug, Clone)]
pub struct AlertRow {
    pub id: i64,
    pub alert: NewAlert,
}

/// One attempt to deliver one alert to one channel.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRecord {
    pub alert_id: i64,
    pub channel: String,
    pub attempt: i64,
    pub ts: i64,
    pub ok: bool,
    pub http_status: Option<i64>,
    pub error: Option<String>,
}

/// Epoch-ms cutoffs per table: rows older are purged; `None` keeps the table whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeCutoffs {
    pub request_log: Option<i64>,
    pub usage_events: Option<i64>,
    pub audit: Option<i64>,
    pub alerts: Option<i64>,
    pub idempotency: Option<i64>,
    /// Alert cooldowns that ended before this.
    pub cooldowns: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub rule: Option<String>,
    pub status: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

/// What `/admin/requests` narrows the request log to.
#[derive(Debug, Clone, Default)]
pub struct RequestLogFilter {
    pub key_id: Option<i64>,
    pub model: Option<String>,
    pub status: Option<StatusFilter>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Below 400.
    Ok,
    /// 400 and above.
    Error,
    Exact(i64),
}

/// One upstream's calls over a range.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamStats {
    pub upstream: String,
    pub requests: i64,
    pub errors: i64,
    pub avg_latency_ms: f64,
    pub p95_latency_ms: i64,
    pub avg_ttft_ms: Option<f64>,
}

/// What another process changed, announced by a store shared between instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEvent {
    /// This key was created, edited or deleted: reload it.
    Changed(i64),
    /// Announcements may have been missed (the connection was lost): reload every key.
    Resync,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Whether other instances may write the same database. Then memory is never trusted
    /// on its own: gateway holds are committed too, and request counters are shared.
    fn shared(&self) -> bool {
        false
    }

    /// Key changes as they commit, when the store can announce them (otherwise the audit
    /// log is polled).
    fn key_events(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<KeyEvent>> {
        None
    }

    async fn ping(&self) -> StoreResult<()>;

    async fn load_keys(&self) -> StoreResult<Vec<KeyRecord>>;
    async fn key_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyRecord>>;
    async fn key_by_id(&self, id: i64) -> StoreResult<Option<KeyRecord>>;

    /// Inserts all keys and one audit row per key, in one transaction.
    async fn insert_keys(
        &self,
        keys: &[NewKey],
        audit: &AuditRecord,
    ) -> StoreResult<Vec<KeyRecord>>;
    /// Applies the patch and the audit row in one transaction; `None` when no such key.
    async fn update_key(
        &self,
        id: i64,
        patch: &KeyPatch,
        audit: &AuditRecord,
    ) -> StoreResult<Option<KeyRecord>>;
    async fn delete_key(&self, id: i64, audit: &AuditRecord) -> StoreResult<bool>;

    /// The ledger writer's own committer (one per writer; it may hold a connection).
    async fn consume_writer(&self) -> StoreResult<Box<dyn ConsumeWriter>>;

    async fn idempotent_result(
        &self,
        key_id: i64,
        idem_key: &str,
    ) -> StoreResult<Option<IdempotentResult>>;

    /// Newest first.
    async fn history(
        &self,
        key_id: i64,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<HistoryEntry>, i64)>;
    /// Sum of consumed amounts per key with `from_ms <= ts < to_ms`.
    async fn period_used(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<(i64, i64)>>;

    async fn insert_audit(&self, audit: &AuditRecord) -> StoreResult<()>;
    /// Newest first.
    async fn audit(&self, limit: i64, offset: i64) -> StoreResult<(Vec<AuditEntry>, i64)>;
    /// Audit rows after `after_id` that touched a key: `(audit id, key id)`, ascending.
    async fn key_changes_since(&self, after_id: i64) -> StoreResult<Vec<(i64, i64)>>;
    async fn last_audit_id(&self) -> StoreResult<i64>;

    async fn insert_request_logs(&self, rows: &[RequestLogRow]) -> StoreResult<()>;
    /// Newest first, narrowed by `filter`.
    async fn request_logs(
        &self,
        filter: &RequestLogFilter,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<RequestLogRow>, i64)>;
    /// Calls per upstream in `[from_ms, to_ms)` (rows that reached an upstream).
    async fn upstream_stats(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<UpstreamStats>>;
    /// Gateway calls per key since `since_ms` (to restore daily counters after a restart).
    async fn request_counts_since(&self, since_ms: i64) -> StoreResult<Vec<(i64, i64)>>;

    async fn insert_alert(&self, a: &NewAlert) -> StoreResult<i64>;
    async fn set_alert_status(&self, id: i64, status: &str) -> StoreResult<()>;
    async fn insert_delivery(&self, d: &DeliveryRecord) -> StoreResult<()>;
    /// Newest first.
    async fn alerts(
        &self,
        filter: &AlertFilter,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<AlertRow>, i64)>;
    async fn deliveries(&self, alert_ids: &[i64]) -> StoreResult<Vec<DeliveryRecord>>;
    /// Starts the cooldown (until `until_ms`) of each subject of `rule` that is not cooling
    /// at `now_ms`, and returns those: the subjects this caller may announce. Atomic, so of
    /// several instances evaluating the same problem at once exactly one announces it.
    async fn claim_cooldowns(
        &self,
        rule: &str,
        subjects: &[String],
        now_ms: i64,
        until_ms: i64,
    ) -> StoreResult<Vec<String>>;

    /// Drops the rows older than their table's cutoff, in small batches; returns the rows
    /// removed.
    async fn purge(&self, cutoffs: &PurgeCutoffs) -> StoreResult<u64>;
}
