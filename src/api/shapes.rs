//! The quota and admin API's bodies as types: requests are parsed into them (unknown fields
//! refused, every 400 naming the field's path), responses are serialized from them, the CLI
//! prints the same ones, and the OpenAPI document is generated from them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

pub use super::amount::Amount;

use crate::keys::{KeyLimits, KeyRecord, KeyStatus, Owner, Refill, effective_counters, status_of};
use crate::store::{AuditEntry, HistoryEntry, RequestLogRow};
use crate::timefmt::{rfc3339, rfc3339_opt};

/// Absent stays `None`; `null` becomes `Some(None)`: a PATCH tells "leave" from "clear".
pub(super) fn present<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A field of a struct type, as a JSON object only (or `null`): serde's derive would also
/// take an array of the struct's fields in order, which the document does not allow.
pub(super) fn object<'de, T: serde::de::DeserializeOwned, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => T::deserialize(v)
            .map(Some)
            .map_err(serde::de::Error::custom),
        Some(_) => Err(serde::de::Error::custom("expected an object")),
    }
}

/// [`object`] for a field that may be present as `null` (`Some(None)`: clear it).
pub(super) fn present_object<'de, T: serde::de::DeserializeOwned, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    object(d).map(Some)
}

/// A `YYYY-MM-DD` date or an RFC 3339 time, or `null`.
fn date_or_time_or_null() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    super::schema::json_schema(serde_json::json!({"anyOf": [
        {"type": "string", "format": "date"},
        {"type": "string", "format": "date-time"},
        {"type": "null"},
    ]}))
}

pub use crate::lenient;

// ---- quota API (caller key) ----

/// `POST /api/v1/use`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UseRequest {
    /// What to consume (default 1 when absent; `null` is refused): points,
    /// 1…1 000 000 000; in money mode a decimal of the currency.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Amount)]
    pub amount: Option<Amount>,
    /// At most 200 characters.
    #[schema(max_length = 200)]
    pub reason: Option<String>,
    /// A JSON object of at most 8 KiB.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Idempotency key (the `Idempotency-Key` header wins).
    #[schema(max_length = 200)]
    pub request_id: Option<String>,
}

/// One item of `POST /api/v1/use/batch`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UseItem {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Amount)]
    pub amount: Option<Amount>,
    #[schema(max_length = 200)]
    pub reason: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

/// `GET /api/v1/validate`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValidateResponse {
    pub valid: bool,
    /// The key's display hint.
    pub key: String,
    pub quota: Option<Amount>,
    pub remaining: Option<Amount>,
    pub expires_at: Option<String>,
    /// Why the key is not valid: `disabled`, `expired` or `exhausted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<KeyStatus>,
}

/// `POST /api/v1/use` and `/api/v1/use/batch` (`count` only for a batch).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UseResponse {
    pub success: bool,
    pub key: String,
    pub amount_used: Amount,
    pub remaining: Option<Amount>,
    pub total_quota: Option<Amount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
}

/// `GET /api/v1/quota`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaResponse {
    pub key: String,
    pub quota: Option<Amount>,
    pub remaining: Option<Amount>,
    pub used: Amount,
    pub expires_at: Option<String>,
    pub last_used: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryItem {
    pub timestamp: String,
    pub amount: Amount,
    pub reason: Option<String>,
    pub remaining: Option<Amount>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

impl From<&HistoryEntry> for HistoryItem {
    fn from(h: &HistoryEntry) -> Self {
        Self {
            timestamp: rfc3339(h.ts),
            amount: Amount(h.amount),
            reason: h.reason.clone(),
            remaining: h.remaining.map(Amount),
            metadata: h.metadata.clone(),
        }
    }
}

/// A page of usage history, newest first (`key` and `id` on the admin's).
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    pub history: Vec<HistoryItem>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
}

/// `limit` (1…1000) and `offset` (≥ 0), in the query string or, as in the seed guide, a JSON
/// body on the GET.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    #[serde(default, deserialize_with = "lenient::int")]
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

// ---- admin API ----

/// `POST /admin/keys`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKeysRequest {
    /// 1–16 letters or digits (default from the config).
    #[schema(pattern = "^[A-Za-z0-9]{1,16}$")]
    pub prefix: Option<String>,
    /// Points (money mode: a decimal of the currency); absent or null = unlimited.
    pub quota: Option<Amount>,
    /// RFC 3339 time or YYYY-MM-DD date, in the future.
    #[schema(schema_with = date_or_time_or_null)]
    pub expires_at: Option<String>,
    #[schema(max_length = 200)]
    pub name: Option<String>,
    /// 1…1000 keys (default 1).
    #[schema(minimum = 1, maximum = 1000)]
    pub count: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Who the key belongs to (`/admin/users`): `{userId}` of an existing user, or — today's
    /// owners — `{userId, username}` or `{username}`, which make that user when there is none.
    #[serde(default, deserialize_with = "object")]
    pub owner: Option<Owner>,
    /// The user the key belongs to (its budget is drawn from too); not with `owner`.
    pub user_id: Option<i64>,
    #[serde(default, deserialize_with = "object")]
    pub limits: Option<KeyLimits>,
    #[serde(default, deserialize_with = "object")]
    pub refill: Option<Refill>,
}

/// `PATCH /admin/keys/{id}`: absent fields stay, `null` clears.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchKeyRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 200)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Amount>)]
    pub quota: Option<Option<Amount>>,
    /// Added to the quota as it is at that moment, `used` kept (not with `quota`; not on an
    /// unlimited key).
    #[schema(value_type = Option<Amount>)]
    pub add_quota: Option<Amount>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = date_or_time_or_null)]
    pub expires_at: Option<Option<String>>,
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Option<Map<String, Value>>>,
    #[serde(default, deserialize_with = "present_object")]
    #[schema(value_type = Option<Owner>)]
    pub owner: Option<Option<Owner>>,
    /// The user the key belongs to; `null`: none. Not with `owner`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub user_id: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present_object")]
    #[schema(value_type = Option<KeyLimits>)]
    pub limits: Option<Option<KeyLimits>>,
    #[serde(default, deserialize_with = "present_object")]
    #[schema(value_type = Option<Refill>)]
    pub refill: Option<Option<Refill>>,
}

impl PatchKeyRequest {
    /// The names of the fields present, for the audit log.
    pub fn fields(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("quota", self.quota.is_some()),
            ("addQuota", self.add_quota.is_some()),
            ("expiresAt", self.expires_at.is_some()),
            ("enabled", self.enabled.is_some()),
            ("metadata", self.metadata.is_some()),
            ("owner", self.owner.is_some()),
            ("userId", self.user_id.is_some()),
            ("limits", self.limits.is_some()),
            ("refill", self.refill.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, set)| set.then_some(n))
        .collect()
    }
}

/// `POST /admin/keys/reset`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResetRequest {
    /// The full key or its id.
    #[schema(required = true, pattern = r"\S", max_length = 256)]
    pub key: Option<String>,
    /// The new quota (`null` = unlimited; absent keeps the quota).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Amount>)]
    pub new_quota: Option<Option<Amount>>,
}

/// `POST /admin/keys/disable` and `/admin/keys/enable`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    /// The full key or its id.
    #[schema(required = true, pattern = r"\S", max_length = 256)]
    pub key: Option<String>,
}

/// A key as issued (creation, rotation): the only answer that carries the full key.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedKey {
    /// The full key, shown this once.
    pub key: String,
    pub id: i64,
    pub name: Option<String>,
    pub quota: Option<Amount>,
    pub remaining: Option<Amount>,
    pub expires_at: Option<String>,
    pub created_at: String,
}

impl IssuedKey {
    pub fn new(k: &crate::keyadmin::IssuedKey, now_ms: i64) -> Self {
        let c = effective_counters(&k.record, now_ms);
        Self {
            key: k.full.clone(),
            id: k.record.id,
            name: k.record.name.clone(),
            quota: c.quota.map(Amount),
            remaining: c.remaining().map(Amount),
            expires_at: rfc3339_opt(k.record.expires_at),
            created_at: rfc3339(k.record.created_at),
        }
    }
}

/// `POST /admin/keys` with `count` 1, and `POST /admin/keys/{id}/rotate`.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedOne {
    pub success: bool,
    #[serde(flatten)]
    pub key: IssuedKey,
}

/// `POST /admin/keys` with `count` > 1.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedMany {
    pub success: bool,
    pub keys: Vec<IssuedKey>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum CreateKeysResponse {
    One(IssuedOne),
    Many(IssuedMany),
}

/// The admin view of a key: everything but the secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub id: i64,
    /// Display hint.
    pub key: String,
    pub name: Option<String>,
    pub prefix: String,
    pub quota: Option<Amount>,
    pub used: Amount,
    pub remaining: Option<Amount>,
    pub expires_at: Option<String>,
    pub created_at: String,
    pub last_used: Option<String>,
    pub enabled: bool,
    pub status: KeyStatus,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub owner: Option<Owner>,
    /// The user the key belongs to (`owner.userId`).
    pub user_id: Option<i64>,
    pub limits: KeyLimits,
    pub refill: Option<Refill>,
}

impl KeyView {
    pub fn new(rec: &KeyRecord, now_ms: i64) -> Self {
        let c = effective_counters(rec, now_ms);
        Self {
            id: rec.id,
            key: rec.hint.clone(),
            name: rec.name.clone(),
            prefix: rec.prefix.clone(),
            quota: c.quota.map(Amount),
            used: Amount(c.used),
            remaining: c.remaining().map(Amount),
            expires_at: rfc3339_opt(rec.expires_at),
            created_at: rfc3339(rec.created_at),
            last_used: rfc3339_opt(rec.last_used),
            enabled: rec.enabled,
            status: status_of(rec, now_ms),
            metadata: rec.metadata.clone(),
            owner: rec.owner.clone(),
            user_id: rec.owner.as_ref().and_then(|o| o.user_id),
            limits: rec.limits.clone(),
            refill: rec.refill,
        }
    }
}

/// `GET /admin/keys` filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyListQuery {
    /// `active`, `disabled`, `expired` or `exhausted`.
    #[param(pattern = "^(active|disabled|expired|exhausted)?$")]
    pub status: Option<String>,
    /// Matches the hint, id, name or owner's username.
    pub q: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
    pub total: usize,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedKey {
    pub success: bool,
    pub id: i64,
    pub key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResetResponse {
    pub success: bool,
    pub key: String,
    pub id: i64,
    pub quota: Option<Amount>,
    pub used: Amount,
    pub remaining: Option<Amount>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnabledResponse {
    pub success: bool,
    pub key: String,
    pub id: i64,
    pub enabled: bool,
}

/// `GET /admin/usage`: `startDate`, `endDate` (YYYY-MM-DD or RFC 3339, inclusive).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct UsageQuery {
    #[param(schema_with = date_or_time)]
    pub start_date: Option<String>,
    #[param(schema_with = date_or_time)]
    pub end_date: Option<String>,
}

/// A `YYYY-MM-DD` date or an RFC 3339 time.
fn date_or_time() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    super::schema::json_schema(serde_json::json!({"anyOf": [
        {"type": "string", "format": "date"},
        {"type": "string", "format": "date-time"},
    ]}))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageSummary {
    pub total_keys: usize,
    pub total_quota: Amount,
    pub total_used: Amount,
    pub total_remaining: Amount,
    pub active_keys: usize,
    pub expired_keys: usize,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageDetail {
    pub key: String,
    pub id: i64,
    pub name: Option<String>,
    pub quota: Option<Amount>,
    pub used: Amount,
    pub remaining: Option<Amount>,
    /// Consumed inside the date range.
    pub period_used: Amount,
    pub last_used: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub enabled: bool,
}

impl UsageDetail {
    pub fn new(k: &KeyRecord, now_ms: i64, period_used: i64) -> Self {
        let c = effective_counters(k, now_ms);
        Self {
            key: k.hint.clone(),
            id: k.id,
            name: k.name.clone(),
            quota: c.quota.map(Amount),
            used: Amount(c.used),
            remaining: c.remaining().map(Amount),
            period_used: Amount(period_used),
            last_used: rfc3339_opt(k.last_used),
            created_at: rfc3339(k.created_at),
            expires_at: rfc3339_opt(k.expires_at),
            enabled: k.enabled,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageResponse {
    pub summary: UsageSummary,
    pub details: Vec<UsageDetail>,
    pub total: usize,
    pub limit: i64,
    pub offset: i64,
}

/// `GET /admin/usage/history`: whose history.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyQuery {
    /// The full key or its id.
    #[param(required = true, pattern = r"\S", max_length = 256)]
    pub key: Option<String>,
}

/// `GET /admin/audit` filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// An action (`key.update`), or every action of a family by its prefix ending in `.`
    /// (`key.`).
    #[param(max_length = 64)]
    pub action: Option<String>,
    /// What was acted on (a key's id).
    #[param(max_length = 256)]
    pub target: Option<String>,
    #[serde(rename = "keyId", default, deserialize_with = "lenient::int")]
    #[param(rename = "keyId")]
    pub key_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    #[param(minimum = 0, maximum = 4000000000000000000_i64)]
    pub start_ms: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    #[param(minimum = 0, maximum = 4000000000000000000_i64)]
    pub end_ms: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditView {
    pub id: i64,
    pub timestamp: String,
    pub action: String,
    pub target: Option<String>,
    /// The key the action touched, if one.
    pub key_id: Option<i64>,
    pub token_hint: Option<String>,
    pub client_ip: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

impl From<&AuditEntry> for AuditView {
    fn from(e: &AuditEntry) -> Self {
        Self {
            id: e.id,
            timestamp: rfc3339(e.record.ts),
            action: e.record.action.clone(),
            target: e.record.target.clone(),
            key_id: e.record.key_id,
            token_hint: e.record.token_hint.clone(),
            client_ip: e.record.client_ip.clone(),
            details: e.record.details.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditView>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// `GET /admin/requests` filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RequestsQuery {
    /// The full key, its id, its hint (`qp_abcd…wxyz`) or its name.
    #[param(max_length = 256)]
    pub key: Option<String>,
    /// A user's id or username.
    #[param(max_length = 256)]
    pub user: Option<String>,
    pub model: Option<String>,
    pub upstream: Option<String>,
    /// `chat.completions`, `completions`, `embeddings`, `messages` or `responses`.
    #[param(pattern = "^(chat\\.completions|completions|embeddings|messages|responses)?$")]
    pub endpoint: Option<String>,
    /// `2xx`, `4xx`, `5xx` (any class), `ok` (below 400), `error` (400 and above) or a code.
    #[param(pattern = "^(ok|error|[1-5]xx|[1-5][0-9][0-9])?$")]
    pub status: Option<String>,
    #[serde(rename = "requestId")]
    #[param(rename = "requestId", max_length = 256)]
    pub request_id: Option<String>,
    /// From this time (Unix ms, inclusive).
    #[serde(default, deserialize_with = "lenient::int")]
    #[param(minimum = 0, maximum = 4000000000000000000_i64)]
    pub start_ms: Option<i64>,
    /// Before this time (Unix ms, exclusive).
    #[serde(default, deserialize_with = "lenient::int")]
    #[param(minimum = 0, maximum = 4000000000000000000_i64)]
    pub end_ms: Option<i64>,
}

/// One gateway call from the request log.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestView {
    pub timestamp: String,
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
    /// Prompt tokens the upstream served from its cache (within `promptTokens`).
    pub cached_tokens: i64,
    /// Prompt tokens written to the upstream's cache (within `promptTokens`).
    pub cache_write_tokens: i64,
    /// Completion tokens spent reasoning (within `completionTokens`).
    pub reasoning_tokens: i64,
    /// What the call was charged, in the ledger's unit (money mode: micros of the currency).
    pub cost: Amount,
    pub status: i64,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub is_stream: bool,
    pub estimated: bool,
    pub client_ip: Option<String>,
}

impl From<&RequestLogRow> for RequestView {
    fn from(r: &RequestLogRow) -> Self {
        Self {
            timestamp: rfc3339(r.ts),
            request_id: r.request_id.clone(),
            key_id: r.key_id,
            key_name: r.key_name.clone(),
            owner_user_id: r.owner_user_id,
            owner_username: r.owner_username.clone(),
            endpoint: r.endpoint.clone(),
            model: r.model.clone(),
            upstream: r.upstream.clone(),
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cached_tokens: r.cached_tokens,
            cache_write_tokens: r.cache_write_tokens,
            reasoning_tokens: r.reasoning_tokens,
            cost: Amount(r.cost),
            status: r.status,
            error: r.error.clone(),
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            is_stream: r.is_stream,
            estimated: r.estimated,
            client_ip: r.client_ip.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RequestsPage {
    pub requests: Vec<RequestView>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// `GET /admin/upstreams`: the stats window (default: the last hour).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WindowQuery {
    #[serde(default, deserialize_with = "lenient::int")]
    #[param(minimum = 0, maximum = 4000000000000000000_i64)]
    pub start_ms: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    #[param(minimum = 0, maximum = 4000000000000000000_i64)]
    pub end_ms: Option<i64>,
}
