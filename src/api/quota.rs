//! The caller's quota API (`X-API-Key`): validate, use, use/batch, quota, usage/history.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Caller, IdempotencyHeader, JsonBody, QueryMap};
use super::input::{
    self, MAX_AMOUNT, MAX_BATCH_ITEMS, MAX_IDEMPOTENCY_KEY_CHARS, MAX_REASON_CHARS, Params,
};
use super::shapes::{
    Amount, HistoryItem, HistoryPage, QuotaResponse, UseItem, UseRequest, UseResponse,
    ValidateResponse,
};
use crate::error::QuotaRefusals;
use crate::error::refusals::*;
use crate::error::{ApiError, ApiResult};
use crate::keys::{KeyStatus, effective_counters, status_of};
use crate::state::AppState;
use crate::store::UsageItem;
use crate::timefmt::rfc3339_opt;

#[utoipa::path(get, path = "/api/v1/validate", tag = "quota",
    security(("apiKey" = []), ("bearerKey" = [])),
    responses((status = 200, description = "The key's state (`valid:false` with `reason` when not usable)", body = ValidateResponse), QuotaRefusals<{ AUTH | FORBIDDEN | UNAVAILABLE }>))]
pub async fn validate(State(st): State<AppState>, caller: Caller) -> Json<ValidateResponse> {
    let rec = st.ledger.current(&caller.entry).await;
    let now = st.ledger.now_ms();
    let c = effective_counters(&rec, now);
    let status = status_of(&rec, now);
    Json(ValidateResponse {
        valid: status == KeyStatus::Active,
        key: rec.hint,
        quota: c.quota.map(Amount),
        remaining: c.remaining().map(Amount),
        expires_at: rfc3339_opt(rec.expires_at),
        reason: (status != KeyStatus::Active).then_some(status),
    })
}

fn item(it: UseItem, path: &str) -> ApiResult<UsageItem> {
    input::max_chars(
        &input::join(path, "reason"),
        it.reason.as_deref(),
        MAX_REASON_CHARS,
    )?;
    input::metadata_size(&input::join(path, "metadata"), it.metadata.as_ref())?;
    Ok(UsageItem {
        amount: input::amount_in_range(&input::join(path, "amount"), it.amount, 1, MAX_AMOUNT)?
            .unwrap_or(1),
        reason: it.reason,
        // An object's text: `Value`'s `Display` cannot fail.
        metadata: it
            .metadata
            .map(|m| serde_json::Value::Object(m).to_string()),
    })
}

fn idempotency_key(
    header: &IdempotencyHeader,
    request_id: Option<String>,
) -> ApiResult<Option<String>> {
    let from_header = match &header.0 {
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

/// Commits `items` as one all-or-nothing consume and answers as `use` and `use/batch` do.
async fn consume(
    st: &AppState,
    caller: &Caller,
    items: Vec<UsageItem>,
    idem: Option<String>,
    batch: bool,
) -> ApiResult<Json<UseResponse>> {
    let out = st
        .ledger
        .consume(&caller.entry, items, idem)
        .await
        .map_err(|e| ApiError::from_ledger(e, &caller.hint))?;
    Ok(Json(UseResponse {
        success: true,
        key: caller.hint.clone(),
        amount_used: Amount(out.amount_used),
        remaining: out.remaining.map(Amount),
        total_quota: out.total_quota.map(Amount),
        count: batch.then_some(out.count),
    }))
}

#[utoipa::path(post, path = "/api/v1/use", tag = "quota",
    security(("apiKey" = []), ("bearerKey" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "A retried consume with the same key returns the first result without charging again")),
    request_body(content = Option<UseRequest>, content_type = "application/json"),
    responses((status = 200, body = UseResponse), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | TOO_LARGE | LIMITED | UNAVAILABLE }>))]
pub async fn use_quota(
    State(st): State<AppState>,
    caller: Caller,
    idem_header: IdempotencyHeader,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<UseResponse>> {
    let req: UseRequest = input::body(body)?;
    input::max_chars(
        "requestId",
        req.request_id.as_deref(),
        MAX_IDEMPOTENCY_KEY_CHARS,
    )?;
    let idem = idempotency_key(&idem_header, req.request_id)?;
    let it = item(
        UseItem {
            amount: req.amount,
            reason: req.reason,
            metadata: req.metadata,
        },
        "",
    )?;
    consume(&st, &caller, vec![it], idem, false).await
}

#[utoipa::path(post, path = "/api/v1/use/batch", tag = "quota",
    security(("apiKey" = []), ("bearerKey" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "A retried batch with the same key returns the first result without charging again")),
    request_body(content = Vec<UseItem>, description = "1…1000 items, all-or-nothing"),
    responses((status = 200, body = UseResponse), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | TOO_LARGE | LIMITED | UNAVAILABLE }>))]
pub async fn use_batch(
    State(st): State<AppState>,
    caller: Caller,
    idem_header: IdempotencyHeader,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<UseResponse>> {
    let list: Vec<UseItem> = input::list(body)?;
    if list.is_empty() || list.len() > MAX_BATCH_ITEMS {
        return Err(ApiError::invalid(
            "body",
            format!("必须包含 1 到 {MAX_BATCH_ITEMS} 项"),
        ));
    }
    let items = list
        .into_iter()
        .enumerate()
        .map(|(i, it)| item(it, &format!("[{i}]")))
        .collect::<ApiResult<Vec<_>>>()?;
    let idem = idempotency_key(&idem_header, None)?;
    consume(&st, &caller, items, idem, true).await
}

#[utoipa::path(get, path = "/api/v1/quota", tag = "quota",
    security(("apiKey" = []), ("bearerKey" = [])),
    responses((status = 200, body = QuotaResponse), QuotaRefusals<{ AUTH | FORBIDDEN | UNAVAILABLE }>))]
pub async fn quota(State(st): State<AppState>, caller: Caller) -> Json<QuotaResponse> {
    let rec = st.ledger.current(&caller.entry).await;
    let c = effective_counters(&rec, st.ledger.now_ms());
    Json(QuotaResponse {
        key: rec.hint,
        quota: c.quota.map(Amount),
        remaining: c.remaining().map(Amount),
        used: Amount(c.used),
        expires_at: rfc3339_opt(rec.expires_at),
        last_used: rfc3339_opt(rec.last_used),
    })
}

/// Shared by the caller's and the admin's history endpoints.
pub async fn history_page(st: &AppState, key_id: i64, params: &Params) -> ApiResult<HistoryPage> {
    let (limit, offset) = params.page(10)?;
    let (rows, total) = st.store.history(key_id, limit, offset).await?;
    Ok(HistoryPage {
        history: rows.iter().map(HistoryItem::from).collect(),
        total,
        limit,
        offset,
        key: None,
        id: None,
    })
}

#[utoipa::path(get, path = "/api/v1/usage/history", tag = "quota",
    security(("apiKey" = []), ("bearerKey" = [])),
    params(super::shapes::PageQuery),
    responses((status = 200, body = HistoryPage), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | UNAVAILABLE }>))]
pub async fn history(
    State(st): State<AppState>,
    caller: Caller,
    QueryMap(q): QueryMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<HistoryPage>> {
    let params = Params::new(q, body)?;
    let key_id = caller.entry.lock().rec.id;
    history_page(&st, key_id, &params).await.map(Json)
}

/// The caller's quota API, each route registered with its documentation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(validate))
        .routes(routes!(use_quota))
        .routes(routes!(use_batch))
        .routes(routes!(quota))
        .routes(routes!(history))
}
