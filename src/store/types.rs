//! The records the store reads and writes (keys, audit, logs, alerts) and the filters over them.

use serde_json::{Map, Value};

use crate::keys::{KeyHash, KeyLimits, Owner, Refill};

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
    /// Added to the stored quota in the update itself (two concurrent adds both count);
    /// an unlimited quota stays unlimited; the sum is capped at `quota_cap`.
    pub quota_add: Option<(i64, i64)>,
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

/// What `audit` narrows to; every field optional.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// An action (`key.update`), or a family of them by its prefix (`key.`).
    pub action: Option<String>,
    pub target: Option<String>,
    pub key_id: Option<i64>,
    /// `from_ms <= ts < to_ms`.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
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
    /// A JSON object's text, as the history stores it (serialised by whoever makes the
    /// item, once, off the writer's thread).
    pub metadata: Option<String>,
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
    /// The row's id once stored (0 for a row not yet written).
    pub id: i64,
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
    /// Prompt tokens served from the upstream's cache (within `prompt_tokens`).
    pub cached_tokens: i64,
    /// Prompt tokens written to the upstream's cache (within `prompt_tokens`).
    pub cache_write_tokens: i64,
    /// Completion tokens spent reasoning (within `completion_tokens`).
    pub reasoning_tokens: i64,
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
    /// The key's name, or its hint for a key without one (the row's `key_name`).
    pub key_name: Option<String>,
    pub user_id: Option<i64>,
    pub username: Option<String>,
    pub model: Option<String>,
    pub upstream: Option<String>,
    pub endpoint: Option<String>,
    pub status: Option<StatusFilter>,
    pub request_id: Option<String>,
    /// `from_ms <= ts < to_ms`.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Rows with a smaller id only (paging through everything, newest first).
    pub before_id: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Below 400.
    Ok,
    /// 400 and above.
    Error,
    /// `2xx`, `4xx`…: the hundreds digit.
    Class(i64),
    Exact(i64),
}

/// One upstream's calls over a range.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamStats {
    pub upstream: String,
    pub requests: i64,
    pub errors: i64,
    pub avg_latency_ms: f64,
    pub p50_latency_ms: i64,
    pub p95_latency_ms: i64,
    pub avg_ttft_ms: Option<f64>,
    /// Prompt and completion tokens.
    pub tokens: i64,
    /// In the ledger's unit.
    pub cost: i64,
}

/// What another process changed, announced by a store shared between instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEvent {
    /// This key was created, edited or deleted: reload it.
    Changed(i64),
    /// Announcements may have been missed (the connection was lost): reload every key.
    Resync,
}

/// A channel as stored. The store keeps its settings opaque: `spec` and `key_state` are
/// JSON texts and `secrets` a sealed text, all written and read by the gateway.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UpstreamRecord {
    pub id: i64,
    pub name: String,
    pub spec: String,
    pub secrets: String,
    pub key_state: String,
    pub enabled: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// What a create or an update writes (the whole channel: the caller merged any patch).
#[derive(Debug, Clone)]
pub struct UpstreamWrite {
    pub name: String,
    pub spec: String,
    pub secrets: String,
    pub key_state: String,
    pub enabled: bool,
    pub now_ms: i64,
}

/// How a channel write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamWritten {
    Done(i64),
    NotFound,
    /// Another channel has the name.
    NameTaken,
}

/// An invite code as stored (the code itself only as its hash).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct InviteRecord {
    pub id: i64,
    pub code_hash: Vec<u8>,
    pub hint: String,
    /// JSON, written and read by the invite operations.
    pub spec: String,
    pub uses: i64,
    pub used: i64,
    pub valid_until: Option<i64>,
    pub created_ms: i64,
}

/// How taking one use of an invite went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InviteClaim {
    Claimed(InviteRecord),
    Unknown,
    Exhausted,
    Expired,
}

/// A user or team to insert, or what an edit sets: the whole record but its counters, as
/// the caller merged it (the ledger owns `used`; an edit sets `quota` only when asked).
#[derive(Debug, Clone)]
pub struct AccountWrite {
    pub account: crate::accounts::Account,
    /// Edits: write `quota` (and `refill_period`) from `account`; else they are kept.
    pub set_quota: bool,
    /// Edits: `used` back to 0.
    pub reset_used: bool,
}

/// How an account edit or deletion went.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountWritten {
    Done(Box<crate::accounts::Account>),
    NotFound,
    /// Another user (or team) has that name.
    NameTaken,
    /// The user still has keys, or the team still has users.
    InUse,
}

/// A key holder's request for more quota, as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct QuotaRequestRecord {
    pub id: i64,
    pub key_id: i64,
    pub user_id: Option<i64>,
    pub amount: i64,
    pub reason: Option<String>,
    /// `pending`, `approved` or `denied`.
    pub status: String,
    pub created_ms: i64,
    pub decided_ms: Option<i64>,
    pub decided_by: Option<String>,
    /// What an approval added (to the key, or to its user's budget).
    pub granted: Option<i64>,
    pub note: Option<String>,
}
