//! The admin API (`Authorization: Bearer <ADMIN_TOKEN>`; a viewer token may only read).

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{JsonBody, Operator, QueryMap};
use super::input::{self, Params};
use super::quota::history_page;
use super::shapes::{
    Amount, AuditPage, AuditQuery, AuditView, CreateKeysRequest, CreateKeysResponse, DeletedKey,
    EnabledResponse, HistoryPage, IssuedKey, IssuedMany, IssuedOne, KeyList, KeyListQuery,
    KeyQuery, KeyRef, KeyView, PageQuery, PatchKeyRequest, ResetRequest, ResetResponse,
    UsageDetail, UsageQuery, UsageResponse, UsageSummary,
};
use crate::error::QuotaRefusals;
use crate::error::refusals::*;
use crate::error::{ApiError, ApiResult};
use crate::keyadmin::CreateSpec;
use crate::keys::{
    KeyRecord, KeyStatus, Owner, Refill, effective_counters, is_valid_prefix, status_of,
};
use crate::state::AppState;
use crate::store::KeyPatch;
use crate::timefmt::parse_instant;

use super::input::MAX_QUOTA;
const MAX_NAME_CHARS: usize = 200;

fn expires_at(v: Option<&str>) -> ApiResult<Option<i64>> {
    v.map(|s| {
        parse_instant(s, true)
            .ok_or_else(|| ApiError::invalid("expiresAt", "必须是 RFC 3339 时间或 YYYY-MM-DD 日期"))
    })
    .transpose()
}

fn check_refill(refill: Option<&Refill>) -> ApiResult<()> {
    match refill {
        Some(r) if !(0..=MAX_QUOTA).contains(&r.amount) => {
            Err(ApiError::invalid("refill.amount", "必须是非负整数"))
        }
        _ => Ok(()),
    }
}

/// The owner a key is given: by `userId` (an existing user; `null`: none) or by `owner`
/// (resolved to a user, made when there is none). `None`: unchanged.
async fn owner_for(
    st: &AppState,
    op: &Operator,
    owner: Option<Option<Owner>>,
    user_id: Option<Option<i64>>,
) -> ApiResult<Option<Option<Owner>>> {
    match (owner, user_id) {
        (Some(_), Some(_)) => Err(ApiError::invalid("userId", "不能与 owner 同时给出")),
        (None, Some(None)) | (Some(None), None) => Ok(Some(None)),
        (None, Some(Some(id))) => Ok(Some(Some(st.users.owner_by_id(id).await?))),
        (Some(Some(o)), None) if o.user_id.is_none() && o.username.is_none() => Ok(Some(None)),
        (Some(Some(o)), None) => {
            input::max_chars("owner.username", o.username.as_deref(), 64)?;
            Ok(Some(Some(st.users.resolve_owner(&o, &op.actor()).await?)))
        }
        (None, None) => Ok(None),
    }
}

async fn find(st: &AppState, key_or_id: &str) -> ApiResult<KeyRecord> {
    st.keys
        .find(key_or_id)
        .await?
        .ok_or_else(ApiError::key_not_found)
}

fn key_param(key: Option<String>) -> ApiResult<String> {
    input::max_chars("key", key.as_deref(), 256)?;
    key.filter(|k| !k.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("key", "不能为空"))
}

#[utoipa::path(post, path = "/admin/keys", tag = "admin",
    security(("adminToken" = [])),
    request_body(content = Option<CreateKeysRequest>, content_type = "application/json"),
    responses((status = 200, description = "The new key (shown this once), or `keys` when `count` > 1", body = CreateKeysResponse), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | TOO_LARGE | UNAVAILABLE }>))]
pub async fn create_keys(
    State(st): State<AppState>,
    op: Operator,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<CreateKeysResponse>> {
    op.require_write()?;
    let req: CreateKeysRequest = input::body(body)?;
    let prefix = req.prefix.unwrap_or_else(|| st.config.key_prefix.clone());
    if !is_valid_prefix(&prefix) {
        return Err(ApiError::invalid("prefix", "必须是 1 到 16 个字母或数字"));
    }
    input::max_chars("name", req.name.as_deref(), MAX_NAME_CHARS)?;
    input::metadata_size("metadata", req.metadata.as_ref())?;
    check_refill(req.refill.as_ref())?;
    let expiry = expires_at(req.expires_at.as_deref())?;
    if expiry.is_some_and(|e| e <= st.keys.now_ms()) {
        // A key born expired is a typo (a year, a month), never what was meant.
        return Err(ApiError::invalid(
            "expiresAt",
            "不能早于当前时间 (already past)",
        ));
    }
    let spec = CreateSpec {
        prefix,
        quota: input::amount_in_range("quota", req.quota, 0, MAX_QUOTA)?,
        expires_at: expiry,
        name: req.name,
        count: input::in_range("count", req.count, 1, 1000)?.unwrap_or(1) as u32,
        metadata: req.metadata.unwrap_or_default(),
        owner: owner_for(&st, &op, req.owner.map(Some), req.user_id.map(Some))
            .await?
            .flatten(),
        limits: req.limits.unwrap_or_default(),
        refill: req.refill,
    };
    let issued = st.keys.create(&spec, &op.actor()).await?;
    let now = st.keys.now_ms();
    let mut keys: Vec<IssuedKey> = issued.iter().map(|k| IssuedKey::new(k, now)).collect();
    Ok(Json(match (spec.count, keys.pop()) {
        (1, Some(key)) => CreateKeysResponse::One(IssuedOne { success: true, key }),
        (_, last) => {
            keys.extend(last);
            CreateKeysResponse::Many(IssuedMany {
                success: true,
                keys,
            })
        }
    }))
}

#[utoipa::path(get, path = "/admin/keys", tag = "admin",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(KeyListQuery, PageQuery),
    responses((status = 200, body = KeyList), QuotaRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn list_keys(
    State(st): State<AppState>,
    _op: Operator,
    QueryMap(q): QueryMap,
) -> ApiResult<Json<KeyList>> {
    let params = Params::new(q, None)?;
    let query: KeyListQuery = params.get()?;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(KeyStatus::parse(s).ok_or_else(|| {
            ApiError::invalid("status", "必须是 active、disabled、expired 或 exhausted")
        })?),
    };
    let needle = query.q.map(|s| s.to_lowercase()).filter(|s| !s.is_empty());
    let (limit, offset) = params.page(100)?;
    let now = st.keys.now_ms();
    let mut keys: Vec<KeyRecord> = st
        .keys
        .all()
        .await?
        .into_iter()
        .filter(|k| status.is_none_or(|s| status_of(k, now) == s))
        .filter(|k| {
            needle.as_deref().is_none_or(|n| {
                k.hint.to_lowercase().contains(n)
                    || k.id.to_string() == n
                    || k.name
                        .as_deref()
                        .is_some_and(|x| x.to_lowercase().contains(n))
                    || k.owner
                        .as_ref()
                        .and_then(|o| o.username.as_deref())
                        .is_some_and(|x| x.to_lowercase().contains(n))
            })
        })
        .collect();
    keys.sort_by_key(|k| std::cmp::Reverse(k.id));
    let total = keys.len();
    let page = keys
        .iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(limit as usize)
        .map(|k| KeyView::new(k, now))
        .collect();
    Ok(Json(KeyList {
        keys: page,
        total,
        limit,
        offset,
    }))
}

#[utoipa::path(get, path = "/admin/keys/{id}", tag = "admin",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(("id" = String, Path, description = "The key's id or the full key")),
    responses((status = 200, body = KeyView), QuotaRefusals<{ AUTH | NOT_FOUND | UNAVAILABLE }>))]
pub async fn get_key(
    State(st): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<KeyView>> {
    let rec = find(&st, &id).await?;
    Ok(Json(KeyView::new(&rec, st.keys.now_ms())))
}

#[utoipa::path(patch, path = "/admin/keys/{id}", tag = "admin",
    security(("adminToken" = [])),
    params(("id" = String, Path, description = "The key's id or the full key")),
    request_body(content = Option<PatchKeyRequest>, content_type = "application/json"),
    responses((status = 200, body = KeyView), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | NOT_FOUND | TOO_LARGE | UNAVAILABLE }>))]
pub async fn patch_key(
    State(st): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<KeyView>> {
    op.require_write()?;
    let rec = find(&st, &id).await?;
    let req: PatchKeyRequest = input::body(body)?;
    input::max_chars(
        "name",
        req.name.as_ref().and_then(|n| n.as_deref()),
        MAX_NAME_CHARS,
    )?;
    input::metadata_size("metadata", req.metadata.as_ref().and_then(|m| m.as_ref()))?;
    check_refill(req.refill.as_ref().and_then(|r| r.as_ref()))?;
    let fields = req.fields();
    let quota_add = input::amount_in_range("addQuota", req.add_quota, 1, MAX_QUOTA)?;
    if quota_add.is_some() && req.quota.is_some() {
        return Err(ApiError::invalid("addQuota", "不能与 quota 同时给出"));
    }
    if quota_add.is_some() && rec.quota.is_none() {
        return Err(ApiError::invalid(
            "addQuota",
            "该密钥无限额，请用 quota 设置",
        ));
    }
    let patch = KeyPatch {
        quota_add: quota_add.map(|a| (a, MAX_QUOTA)),
        quota: req
            .quota
            .map(|q| input::amount_in_range("quota", q, 0, MAX_QUOTA))
            .transpose()?,
        expires_at: req
            .expires_at
            .map(|e| expires_at(e.as_deref()))
            .transpose()?,
        name: req.name,
        enabled: req.enabled,
        metadata: req.metadata.map(Option::unwrap_or_default),
        owner: owner_for(&st, &op, req.owner, req.user_id).await?,
        limits: req.limits.map(Option::unwrap_or_default),
        refill: req.refill,
        ..Default::default()
    };
    let rec = st
        .keys
        .patch(
            rec.id,
            patch,
            "key.update",
            &op.actor(),
            Some(json!({ "fields": fields })),
        )
        .await?
        .ok_or_else(ApiError::key_not_found)?;
    Ok(Json(KeyView::new(&rec, st.keys.now_ms())))
}

#[utoipa::path(delete, path = "/admin/keys/{id}", tag = "admin",
    security(("adminToken" = [])),
    params(("id" = String, Path, description = "The key's id or the full key")),
    responses((status = 200, body = DeletedKey), QuotaRefusals<{ AUTH | FORBIDDEN | NOT_FOUND | UNAVAILABLE }>))]
pub async fn delete_key(
    State(st): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<DeletedKey>> {
    op.require_write()?;
    let rec = find(&st, &id).await?;
    if !st.keys.delete(rec.id, &op.actor()).await? {
        return Err(ApiError::key_not_found());
    }
    Ok(Json(DeletedKey {
        success: true,
        id: rec.id,
        key: rec.hint,
    }))
}

#[utoipa::path(post, path = "/admin/keys/{id}/rotate", tag = "admin",
    security(("adminToken" = [])),
    params(("id" = String, Path, description = "The key's id or the full key")),
    responses((status = 200, description = "The new full key (shown this once); same id, quota and history", body = IssuedOne), QuotaRefusals<{ AUTH | FORBIDDEN | NOT_FOUND | UNAVAILABLE }>))]
pub async fn rotate_key(
    State(st): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<IssuedOne>> {
    op.require_write()?;
    let rec = find(&st, &id).await?;
    let issued = st
        .keys
        .rotate(&rec, &op.actor())
        .await?
        .ok_or_else(ApiError::key_not_found)?;
    Ok(Json(IssuedOne {
        success: true,
        key: IssuedKey::new(&issued, st.keys.now_ms()),
    }))
}

#[utoipa::path(post, path = "/admin/keys/reset", tag = "admin",
    security(("adminToken" = [])),
    request_body(content = Option<ResetRequest>, content_type = "application/json"),
    responses((status = 200, body = ResetResponse), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | NOT_FOUND | TOO_LARGE | UNAVAILABLE }>))]
pub async fn reset_key(
    State(st): State<AppState>,
    op: Operator,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<ResetResponse>> {
    op.require_write()?;
    let req: ResetRequest = input::body(body)?;
    let key = key_param(req.key)?;
    let new_quota = req
        .new_quota
        .map(|q| input::amount_in_range("newQuota", q, 0, MAX_QUOTA))
        .transpose()?;
    let rec = find(&st, &key).await?;
    let rec = st
        .keys
        .reset(&rec, new_quota, &op.actor())
        .await?
        .ok_or_else(ApiError::key_not_found)?;
    let c = effective_counters(&rec, st.keys.now_ms());
    Ok(Json(ResetResponse {
        success: true,
        key: rec.hint,
        id: rec.id,
        quota: c.quota.map(Amount),
        used: Amount(c.used),
        remaining: c.remaining().map(Amount),
    }))
}

async fn set_enabled(
    st: AppState,
    op: Operator,
    body: Option<Value>,
    enabled: bool,
) -> ApiResult<Json<EnabledResponse>> {
    op.require_write()?;
    let req: KeyRef = input::body(body)?;
    let key = key_param(req.key)?;
    let rec = find(&st, &key).await?;
    let rec = st
        .keys
        .set_enabled(rec.id, enabled, &op.actor())
        .await?
        .ok_or_else(ApiError::key_not_found)?;
    Ok(Json(EnabledResponse {
        success: true,
        key: rec.hint,
        id: rec.id,
        enabled: rec.enabled,
    }))
}

#[utoipa::path(post, path = "/admin/keys/disable", tag = "admin",
    security(("adminToken" = [])),
    request_body(content = Option<KeyRef>, content_type = "application/json"),
    responses((status = 200, body = EnabledResponse), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | NOT_FOUND | TOO_LARGE | UNAVAILABLE }>))]
pub async fn disable_key(
    State(st): State<AppState>,
    op: Operator,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<EnabledResponse>> {
    set_enabled(st, op, body, false).await
}

#[utoipa::path(post, path = "/admin/keys/enable", tag = "admin",
    security(("adminToken" = [])),
    request_body(content = Option<KeyRef>, content_type = "application/json"),
    responses((status = 200, body = EnabledResponse), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | NOT_FOUND | TOO_LARGE | UNAVAILABLE }>))]
pub async fn enable_key(
    State(st): State<AppState>,
    op: Operator,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<EnabledResponse>> {
    set_enabled(st, op, body, true).await
}

/// Inclusive date range: a bare `endDate` day counts whole.
fn date_range(params: &Params) -> ApiResult<(i64, i64)> {
    let q: UsageQuery = params.get()?;
    let start = match q.start_date {
        None => i64::MIN / 2,
        Some(s) => parse_instant(&s, false)
            .ok_or_else(|| ApiError::invalid("startDate", "必须是 YYYY-MM-DD 或 RFC 3339 时间"))?,
    };
    let end = match q.end_date {
        None => i64::MAX / 2,
        Some(s) => {
            let bare_date = s.trim().len() == 10;
            let ms = parse_instant(&s, false).ok_or_else(|| {
                ApiError::invalid("endDate", "必须是 YYYY-MM-DD 或 RFC 3339 时间")
            })?;
            if bare_date { ms + 86_400_000 } else { ms + 1 }
        }
    };
    if start >= end {
        return Err(ApiError::invalid("startDate", "必须早于 endDate"));
    }
    Ok((start, end))
}

#[utoipa::path(get, path = "/admin/usage", tag = "admin",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(UsageQuery, PageQuery),
    responses((status = 200, body = UsageResponse), QuotaRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn usage(
    State(st): State<AppState>,
    _op: Operator,
    QueryMap(q): QueryMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<UsageResponse>> {
    let params = Params::new(q, body)?;
    let (start, end) = date_range(&params)?;
    let (limit, offset) = params.page(100)?;
    let now = st.keys.now_ms();
    let mut keys = st.keys.all().await?;
    keys.sort_by_key(|k| k.id);
    let period: std::collections::HashMap<i64, i64> = st
        .store
        .period_used(start, end)
        .await?
        .into_iter()
        .collect();

    let (mut total_quota, mut total_used, mut total_remaining) = (0i64, 0i64, 0i64);
    let (mut active, mut expired) = (0usize, 0usize);
    for k in &keys {
        let c = effective_counters(k, now);
        // Saturating: a handful of keys near the largest quota would overflow a plain sum.
        total_used = total_used.saturating_add(c.used);
        if let Some(q) = c.quota {
            total_quota = total_quota.saturating_add(q);
            total_remaining = total_remaining.saturating_add(q.saturating_sub(c.used).max(0));
        }
        match status_of(k, now) {
            KeyStatus::Expired => expired += 1,
            KeyStatus::Active | KeyStatus::Exhausted => active += 1,
            KeyStatus::Disabled => {}
        }
    }
    let details = keys
        .iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(limit as usize)
        .map(|k| UsageDetail::new(k, now, period.get(&k.id).copied().unwrap_or(0)))
        .collect();
    Ok(Json(UsageResponse {
        summary: UsageSummary {
            total_keys: keys.len(),
            total_quota: Amount(total_quota),
            total_used: Amount(total_used),
            total_remaining: Amount(total_remaining),
            active_keys: active,
            expired_keys: expired,
        },
        details,
        total: keys.len(),
        limit,
        offset,
    }))
}

#[utoipa::path(get, path = "/admin/usage/history", tag = "admin",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(KeyQuery, PageQuery),
    responses((status = 200, body = HistoryPage), QuotaRefusals<{ BAD | AUTH | NOT_FOUND | UNAVAILABLE }>))]
pub async fn usage_history(
    State(st): State<AppState>,
    _op: Operator,
    QueryMap(q): QueryMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<HistoryPage>> {
    let params = Params::new(q, body)?;
    let query: KeyQuery = params.get()?;
    let key = key_param(query.key)?;
    let rec = find(&st, &key).await?;
    let mut page = history_page(&st, rec.id, &params).await?;
    page.key = Some(rec.hint);
    page.id = Some(rec.id);
    Ok(Json(page))
}

/// Every admin write, newest first, narrowed by action (or a family: `key.`), target, key
/// and time.
#[utoipa::path(get, path = "/admin/audit", tag = "admin",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(AuditQuery, PageQuery),
    responses((status = 200, description = "Every admin write, newest first", body = AuditPage), QuotaRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn audit(
    State(st): State<AppState>,
    _op: Operator,
    QueryMap(q): QueryMap,
) -> ApiResult<Json<AuditPage>> {
    let params = Params::new(q, None)?;
    let (limit, offset) = params.page(100)?;
    let query: AuditQuery = params.get()?;
    let given = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    input::max_chars("action", query.action.as_deref(), 64)?;
    input::max_chars("target", query.target.as_deref(), 256)?;
    let filter = crate::store::AuditFilter {
        action: given(query.action),
        target: given(query.target),
        key_id: query.key_id,
        from_ms: input::in_range("start_ms", query.start_ms, 0, input::MAX_MS)?,
        to_ms: input::in_range("end_ms", query.end_ms, 0, input::MAX_MS)?,
    };
    let (rows, total) = st.store.audit(&filter, limit, offset).await?;
    Ok(Json(AuditPage {
        entries: rows.iter().map(AuditView::from).collect(),
        total,
        limit,
        offset,
    }))
}

/// Key administration, usage, audit and the request log.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_keys, list_keys))
        .routes(routes!(reset_key))
        .routes(routes!(disable_key))
        .routes(routes!(enable_key))
        .routes(routes!(get_key, patch_key, delete_key))
        .routes(routes!(rotate_key))
        .routes(routes!(usage))
        .routes(routes!(usage_history))
        .routes(routes!(audit))
}
