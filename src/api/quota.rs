//! The caller's quota API (`X-API-Key`): validate, use, use/batch, quota, usage/history.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Map, Value, json};

use super::extract::{Caller, JsonBody, QueryMap};
use super::input::{
    self, MAX_AMOUNT, MAX_BATCH_ITEMS, MAX_IDEMPOTENCY_KEY_CHARS, MAX_REASON_CHARS, Params,
};
use super::views::history_json;
use crate::error::{ApiError, ApiResult};
use crate::keys::{KeyStatus, effective_counters, status_of};
use crate::state::AppState;
use crate::store::UsageItem;
use crate::timefmt::rfc3339_opt;

pub async fn validate(State(st): State<AppState>, caller: Caller) -> Json<Value> {
    let rec = caller.entry.snapshot();
    let now = st.ledger.now_ms();
    let c = effective_counters(&rec, now);
    let status = status_of(&rec, now);
    let mut body = json!({
        "valid": status == KeyStatus::Active,
        "key": rec.hint,
        "quota": c.quota,
        "remaining": c.remaining(),
        "expiresAt": rfc3339_opt(rec.expires_at),
    });
    if status != KeyStatus::Active {
        body["reason"] = json!(status.as_str());
    }
    Json(body)
}

fn item(map: &Map<String, Value>, path: &str) -> ApiResult<UsageItem> {
    Ok(UsageItem {
        amount: input::int(map, "amount", path, 1, MAX_AMOUNT)?.unwrap_or(1),
        reason: input::string(map, "reason", path, MAX_REASON_CHARS)?,
        metadata: input::metadata(map, "metadata", path)?,
    })
}

fn idempotency_key(headers: &HeaderMap, request_id: Option<String>) -> ApiResult<Option<String>> {
    let from_header = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::invalid("Idempotency-Key", "必须是可见 ASCII 字符"))?
                .trim()
                .to_owned(),
        ),
    };
    let key = from_header.or(request_id).filter(|k| !k.is_empty());
    match key {
        Some(k) if k.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS => Err(ApiError::invalid(
            "Idempotency-Key",
            format!("不能超过 {MAX_IDEMPOTENCY_KEY_CHARS} 个字符"),
        )),
        other => Ok(other),
    }
}

async fn consume(
    st: &AppState,
    caller: &Caller,
    items: Vec<UsageItem>,
    idem: Option<String>,
) -> ApiResult<crate::ledger::ConsumeOutcome> {
    st.ledger
        .consume(&caller.entry, items, idem)
        .await
        .map_err(|e| ApiError::from_ledger(e, &caller.hint))
}

pub async fn use_quota(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let map = input::object(body, "body")?;
    input::reject_unknown(&map, &["amount", "reason", "metadata", "requestId"], "")?;
    let it = item(&map, "")?;
    let idem = idempotency_key(
        &headers,
        input::string(&map, "requestId", "", MAX_IDEMPOTENCY_KEY_CHARS)?,
    )?;
    let out = consume(&st, &caller, vec![it], idem).await?;
    Ok(Json(json!({
        "success": true,
        "key": caller.hint,
        "amountUsed": out.amount_used,
        "remaining": out.remaining,
        "totalQuota": out.total_quota,
    })))
}

pub async fn use_batch(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let Some(Value::Array(arr)) = body else {
        return Err(ApiError::invalid("body", "必须是 JSON 数组"));
    };
    if arr.is_empty() || arr.len() > MAX_BATCH_ITEMS {
        return Err(ApiError::invalid(
            "body",
            format!("必须包含 1 到 {MAX_BATCH_ITEMS} 项"),
        ));
    }
    let mut items = Vec::with_capacity(arr.len());
    for (i, v) in arr.into_iter().enumerate() {
        let path = format!("[{i}]");
        let Value::Object(map) = v else {
            return Err(ApiError::invalid(&path, "必须是 JSON 对象"));
        };
        input::reject_unknown(&map, &["amount", "reason", "metadata"], &path)?;
        items.push(item(&map, &path)?);
    }
    let idem = idempotency_key(&headers, None)?;
    let out = consume(&st, &caller, items, idem).await?;
    Ok(Json(json!({
        "success": true,
        "key": caller.hint,
        "amountUsed": out.amount_used,
        "remaining": out.remaining,
        "totalQuota": out.total_quota,
        "count": out.count,
    })))
}

pub async fn quota(State(st): State<AppState>, caller: Caller) -> Json<Value> {
    let rec = caller.entry.snapshot();
    let c = effective_counters(&rec, st.ledger.now_ms());
    Json(json!({
        "key": rec.hint,
        "quota": c.quota,
        "remaining": c.remaining(),
        "used": c.used,
        "expiresAt": rfc3339_opt(rec.expires_at),
        "lastUsed": rfc3339_opt(rec.last_used),
    }))
}

/// Shared by the caller's and the admin's history endpoints.
pub async fn history_page(st: &AppState, key_id: i64, params: &Params) -> ApiResult<Value> {
    let (limit, offset) = params.page(10)?;
    let (rows, total) = st.store.history(key_id, limit, offset).await?;
    Ok(json!({
        "history": rows.iter().map(history_json).collect::<Vec<_>>(),
        "total": total,
        "limit": limit,
        "offset": offset,
    }))
}

pub async fn history(
    State(st): State<AppState>,
    caller: Caller,
    QueryMap(q): QueryMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let params = Params::new(q, body)?;
    let key_id = caller.entry.lock().rec.id;
    history_page(&st, key_id, &params).await.map(Json)
}
