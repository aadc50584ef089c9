//! Row shapes both backends read keys and log rows into (the column types agree: integers,
//! text, a blob or bytea for the hash, a boolean or 0/1 integer for flags).

use serde_json::{Map, Value};

use super::{AlertRow, AuditEntry, AuditRecord, HistoryEntry, NewAlert, RequestLogRow};
use crate::accounts::{Account, Scope};
use crate::keys::{KeyHash, KeyLimits, KeyRecord, Owner, Refill, RefillInterval};

pub const REQUEST_LOG_COLUMNS: &str = "ts, request_id, key_id, key_name, owner_user_id, \
    owner_username, endpoint, model, upstream, prompt_tokens, completion_tokens, cost, status, \
    error, latency_ms, ttft_ms, is_stream, estimated, client_ip, cached_tokens, cache_write_tokens, \
    reasoning_tokens";

pub const KEY_COLUMNS: &str = "id, key_hash, hint, name, prefix, quota, used, expires_at, created_at, \
    last_used, enabled, metadata, owner_user_id, owner_username, limits, refill_interval, \
    refill_amount, refill_period";

#[derive(sqlx::FromRow)]
pub struct KeyRow {
    id: i64,
    key_hash: Vec<u8>,
    hint: String,
    name: Option<String>,
    prefix: String,
    quota: Option<i64>,
    used: i64,
    expires_at: Option<i64>,
    created_at: i64,
    last_used: Option<i64>,
    enabled: bool,
    metadata: String,
    owner_user_id: Option<i64>,
    owner_username: Option<String>,
    limits: String,
    refill_interval: Option<String>,
    refill_amount: Option<i64>,
    refill_period: Option<i64>,
}

impl From<KeyRow> for KeyRecord {
    fn from(r: KeyRow) -> Self {
        let mut hash: KeyHash = [0; 32];
        if r.key_hash.len() == 32 {
            hash.copy_from_slice(&r.key_hash);
        }
        let owner = if r.owner_user_id.is_some() || r.owner_username.is_some() {
            Some(Owner {
                user_id: r.owner_user_id,
                username: r.owner_username,
            })
        } else {
            None
        };
        let refill = match (
            r.refill_interval.as_deref().and_then(RefillInterval::parse),
            r.refill_amount,
        ) {
            (Some(interval), Some(amount)) => Some(Refill { interval, amount }),
            _ => None,
        };
        KeyRecord {
            id: r.id,
            hash,
            hint: r.hint,
            name: r.name,
            prefix: r.prefix,
            quota: r.quota,
            used: r.used,
            expires_at: r.expires_at,
            created_at: r.created_at,
            last_used: r.last_used,
            enabled: r.enabled,
            metadata: serde_json::from_str::<Map<String, Value>>(&r.metadata).unwrap_or_default(),
            owner,
            limits: serde_json::from_str::<KeyLimits>(&r.limits).unwrap_or_default(),
            refill,
            refill_period: r.refill_period,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct RequestLogDbRow {
    id: i64,
    ts: i64,
    request_id: String,
    key_id: Option<i64>,
    key_name: Option<String>,
    owner_user_id: Option<i64>,
    owner_username: Option<String>,
    endpoint: String,
    model: Option<String>,
    upstream: Option<String>,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost: i64,
    status: i64,
    error: Option<String>,
    latency_ms: i64,
    ttft_ms: Option<i64>,
    is_stream: bool,
    estimated: bool,
    client_ip: Option<String>,
    cached_tokens: i64,
    cache_write_tokens: i64,
    reasoning_tokens: i64,
}

impl From<RequestLogDbRow> for RequestLogRow {
    fn from(r: RequestLogDbRow) -> Self {
        RequestLogRow {
            id: r.id,
            ts: r.ts,
            request_id: r.request_id,
            key_id: r.key_id,
            key_name: r.key_name,
            owner_user_id: r.owner_user_id,
            owner_username: r.owner_username,
            endpoint: r.endpoint,
            model: r.model,
            upstream: r.upstream,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cost: r.cost,
            status: r.status,
            error: r.error,
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            is_stream: r.is_stream,
            estimated: r.estimated,
            client_ip: r.client_ip,
            cached_tokens: r.cached_tokens,
            cache_write_tokens: r.cache_write_tokens,
            reasoning_tokens: r.reasoning_tokens,
        }
    }
}

pub fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".to_owned())
}

#[derive(sqlx::FromRow)]
pub struct HistoryDbRow {
    ts: i64,
    amount: i64,
    reason: Option<String>,
    remaining: Option<i64>,
    metadata: Option<String>,
}

impl From<HistoryDbRow> for HistoryEntry {
    fn from(r: HistoryDbRow) -> Self {
        HistoryEntry {
            ts: r.ts,
            amount: r.amount,
            reason: r.reason,
            remaining: r.remaining,
            metadata: r.metadata.and_then(|m| serde_json::from_str(&m).ok()),
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct AuditDbRow {
    id: i64,
    ts: i64,
    action: String,
    target: Option<String>,
    key_id: Option<i64>,
    token_hint: Option<String>,
    client_ip: Option<String>,
    details: Option<String>,
}

impl From<AuditDbRow> for AuditEntry {
    fn from(r: AuditDbRow) -> Self {
        AuditEntry {
            id: r.id,
            record: AuditRecord {
                ts: r.ts,
                action: r.action,
                target: r.target,
                key_id: r.key_id,
                token_hint: r.token_hint,
                client_ip: r.client_ip,
                details: r.details.and_then(|d| serde_json::from_str(&d).ok()),
            },
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct AlertDbRow {
    id: i64,
    ts: i64,
    rule: String,
    subject: String,
    title: String,
    message: String,
    details: String,
    link: Option<String>,
    channels: String,
    status: String,
}

impl From<AlertDbRow> for AlertRow {
    fn from(r: AlertDbRow) -> Self {
        AlertRow {
            id: r.id,
            alert: NewAlert {
                ts: r.ts,
                rule: r.rule,
                subject: r.subject,
                title: r.title,
                message: r.message,
                details: serde_json::from_str(&r.details).unwrap_or(Value::Null),
                link: r.link,
                channels: r
                    .channels
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                status: r.status,
            },
        }
    }
}

pub const ACCOUNT_COLUMNS: &str = "id, kind, name, contact, team_id, enabled, metadata, quota, \
    used, refill_interval, refill_amount, refill_period, limits, show_keys, created_at";

#[derive(sqlx::FromRow)]
pub struct AccountRow {
    id: i64,
    kind: String,
    name: String,
    contact: Option<String>,
    team_id: Option<i64>,
    enabled: bool,
    metadata: String,
    quota: Option<i64>,
    used: i64,
    refill_interval: Option<String>,
    refill_amount: Option<i64>,
    refill_period: Option<i64>,
    limits: String,
    show_keys: bool,
    created_at: i64,
}

impl From<AccountRow> for Account {
    fn from(r: AccountRow) -> Self {
        let refill = match (
            r.refill_interval.as_deref().and_then(RefillInterval::parse),
            r.refill_amount,
        ) {
            (Some(interval), Some(amount)) => Some(Refill { interval, amount }),
            _ => None,
        };
        Account {
            id: r.id,
            scope: Scope::parse(&r.kind).unwrap_or(Scope::User),
            name: r.name,
            contact: r.contact,
            team_id: r.team_id,
            enabled: r.enabled,
            metadata: serde_json::from_str::<Map<String, Value>>(&r.metadata).unwrap_or_default(),
            quota: r.quota,
            used: r.used,
            refill,
            refill_period: r.refill_period,
            limits: serde_json::from_str::<KeyLimits>(&r.limits).unwrap_or_default(),
            show_keys: r.show_keys,
            created_at: r.created_at,
        }
    }
}
