//! The admin API (`Authorization: Bearer <ADMIN_TOKEN>`; a viewer token may only read).

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Map, Value, json};

use super::extract::{JsonBody, Operator, QueryMap};
use super::input::{self, Params};
use super::quota::history_page;
use super::views::key_json;
use crate::error::{ApiError, ApiResult};
use crate::gateway::settings::UpstreamKind;
use crate::keyadmin::CreateSpec;
use crate::keys::{
    KeyLimits, KeyRecord, KeyStatus, Owner, Refill, effective_counters, is_valid_prefix, status_of,
};
use crate::state::AppState;
use crate::store::{KeyPatch, RequestLogFilter, StatusFilter};
use crate::timefmt::{parse_instant, rfc3339, rfc3339_opt};

const MAX_QUOTA: i64 = i64::MAX / 4;
const MAX_NAME_CHARS: usize = 200;

fn expires_at(map: &Map<String, Value>) -> ApiResult<Option<Option<i64>>> {
    match map.get("expiresAt") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => {
            parse_instant(s, true)
                .map(|ms| Some(Some(ms)))
                .ok_or_else(|| {
                    ApiError::invalid("expiresAt", "必须是 RFC 3339 时间或 YYYY-MM-DD 日期")
                })
        }
        Some(_) => Err(ApiError::invalid("expiresAt", "必须是字符串")),
    }
}

fn validate_refill(refill: Option<Option<Refill>>) -> ApiResult<Option<Option<Refill>>> {
    if let Some(Some(r)) = refill
        && !(0..=MAX_QUOTA).contains(&r.amount)
    {
        return Err(ApiError::invalid("refill.amount", "必须是非负整数"));
    }
    Ok(refill)
}

async fn find(st: &AppState, key_or_id: &str) -> ApiResult<KeyRecord> {
    st.keys
        .find(key_or_id)
        .await?
        .ok_or_else(ApiError::key_not_found)
}

fn key_param(map: &Map<String, Value>) -> ApiResult<String> {
    input::string(map, "key", "", 256)?.ok_or_else(|| ApiError::invalid("key", "不能为空"))
}

pub async fn create_keys(
    State(st): State<AppState>,
    op: Operator,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    op.require_write()?;
    let map = input::object(body, "body")?;
    input::reject_unknown(
        &map,
        &[
            "prefix",
            "quota",
            "expiresAt",
            "name",
            "count",
            "metadata",
            "owner",
            "limits",
            "refill",
        ],
        "",
    )?;
    let prefix =
        input::string(&map, "prefix", "", 16)?.unwrap_or_else(|| st.config.key_prefix.clone());
    if !is_valid_prefix(&prefix) {
        return Err(ApiError::invalid("prefix", "必须是 1 到 16 个字母或数字"));
    }
    let spec = CreateSpec {
        prefix,
        quota: input::nullable_int(&map, "quota", 0, MAX_QUOTA)?.flatten(),
        expires_at: expires_at(&map)?.flatten(),
        name: input::string(&map, "name", "", MAX_NAME_CHARS)?,
        count: input::int(&map, "count", "", 1, 1000)?.unwrap_or(1) as u32,
        metadata: input::metadata(&map, "metadata", "")?.unwrap_or_default(),
        owner: input::typed::<Owner>(&map, "owner")?.flatten(),
        limits: input::typed::<KeyLimits>(&map, "limits")?
            .flatten()
            .unwrap_or_default(),
        refill: validate_refill(input::typed::<Refill>(&map, "refill")?)?.flatten(),
    };
    let issued = st.keys.create(&spec, &op.actor()).await?;
    let one = |k: &crate::keyadmin::IssuedKey| {
        let c = effective_counters(&k.record, st.keys.now_ms());
        json!({
            "key": k.full,
            "id": k.record.id,
            "name": k.record.name,
            "quota": c.quota,
            "remaining": c.remaining(),
            "expiresAt": rfc3339_opt(k.record.expires_at),
            "createdAt": rfc3339(k.record.created_at),
        })
    };
    let body = if spec.count == 1 {
        let mut v = issued.first().map(one).unwrap_or_else(|| json!({}));
        v["success"] = json!(true);
        v
    } else {
        json!({ "success": true, "keys": issued.iter().map(one).collect::<Vec<_>>() })
    };
    Ok(Json(body))
}

pub async fn list_keys(
    State(st): State<AppState>,
    _op: Operator,
    QueryMap(q): QueryMap,
) -> ApiResult<Json<Value>> {
    let params = Params::new(q, None)?;
    let status = match params.str("status")? {
        None => None,
        Some(s) if s.is_empty() => None,
        Some(s) => Some(KeyStatus::parse(&s).ok_or_else(|| {
            ApiError::invalid("status", "必须是 active、disabled、expired 或 exhausted")
        })?),
    };
    let needle = params
        .str("q")?
        .map(|s| s.to_lowercase())
        .filter(|s| !s.is_empty());
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
    let page: Vec<Value> = keys
        .iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(limit as usize)
        .map(|k| key_json(k, now))
        .collect();
    Ok(Json(
        json!({ "keys": page, "total": total, "limit": limit, "offset": offset }),
    ))
}

pub async fn get_key(
    State(st): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let rec = find(&st, &id).await?;
    Ok(Json(key_json(&rec, st.keys.now_ms())))
}

pub async fn patch_key(
    State(st): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    op.require_write()?;
    let rec = find(&st, &id).await?;
    let map = input::object(body, "body")?;
    input::reject_unknown(
        &map,
        &[
            "name",
            "quota",
            "expiresAt",
            "enabled",
            "metadata",
            "owner",
            "limits",
            "refill",
        ],
        "",
    )?;
    let patch = KeyPatch {
        name: match map.get("name") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(_) => Some(input::string(&map, "name", "", MAX_NAME_CHARS)?),
        },
        quota: input::nullable_int(&map, "quota", 0, MAX_QUOTA)?,
        expires_at: expires_at(&map)?,
        enabled: input::boolean(&map, "enabled")?,
        metadata: match map.get("metadata") {
            Some(Value::Null) => Some(Map::new()),
            _ => input::metadata(&map, "metadata", "")?,
        },
        owner: input::typed::<Owner>(&map, "owner")?,
        limits: input::typed::<KeyLimits>(&map, "limits")?.map(Option::unwrap_or_default),
        refill: validate_refill(input::typed::<Refill>(&map, "refill")?)?,
        ..Default::default()
    };
    let fields: Vec<&String> = map.keys().collect();
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
    Ok(Json(key_json(&rec, st.keys.now_ms())))
}

pub async fn delete_key(
    State(st): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    op.require_write()?;
    let rec = find(&st, &id).await?;
    if !st.keys.delete(rec.id, &op.actor()).await? {
        return Err(ApiError::key_not_found());
    }
    Ok(Json(
        json!({ "success": true, "id": rec.id, "key": rec.hint }),
    ))
}

pub async fn rotate_key(
    State(st): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    op.require_write()?;
    let rec = find(&st, &id).await?;
    let issued = st
        .keys
        .rotate(&rec, &op.actor())
        .await?
        .ok_or_else(ApiError::key_not_found)?;
    let c = effective_counters(&issued.record, st.keys.now_ms());
    Ok(Json(json!({
        "success": true,
        "key": issued.full,
        "id": issued.record.id,
        "quota": c.quota,
        "remaining": c.remaining(),
        "expiresAt": rfc3339_opt(issued.record.expires_at),
        "createdAt": rfc3339(issued.record.created_at),
    })))
}

pub async fn reset_key(
    State(st): State<AppState>,
    op: Operator,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    op.require_write()?;
    let map = input::object(body, "body")?;
    input::reject_unknown(&map, &["key", "newQuota"], "")?;
    let key = key_param(&map)?;
    let new_quota = input::nullable_int(&map, "newQuota", 0, MAX_QUOTA)?;
    let rec = find(&st, &key).await?;
    let rec = st
        .keys
        .reset(&rec, new_quota, &op.actor())
        .await?
        .ok_or_else(ApiError::key_not_found)?;
    let c = effective_counters(&rec, st.keys.now_ms());
    Ok(Json(json!({
        "success": true,
        "key": rec.hint,
        "id": rec.id,
        "quota": c.quota,
        "used": c.used,
        "remaining": c.remaining(),
    })))
}

async fn set_enabled(
    st: AppState,
    op: Operator,
    body: Option<Value>,
    enabled: bool,
) -> ApiResult<Json<Value>> {
    op.require_write()?;
    let map = input::object(body, "body")?;
    input::reject_unknown(&map, &["key"], "")?;
    let key = key_param(&map)?;
    let rec = find(&st, &key).await?;
    let rec = st
        .keys
        .set_enabled(rec.id, enabled, &op.actor())
        .await?
        .ok_or_else(ApiError::key_not_found)?;
    Ok(Json(
        json!({ "success": true, "key": rec.hint, "id": rec.id, "enabled": rec.enabled }),
    ))
}

pub async fn disable_key(
    State(st): State<AppState>,
    op: Operator,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    set_enabled(st, op, body, false).await
}

pub async fn enable_key(
    State(st): State<AppState>,
    op: Operator,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    set_enabled(st, op, body, true).await
}

/// Inclusive date range: a bare `endDate` day counts whole.
fn date_range(params: &Params) -> ApiResult<(i64, i64)> {
    let start = match params.str("startDate")? {
        None => i64::MIN / 2,
        Some(s) => parse_instant(&s, false)
            .ok_or_else(|| ApiError::invalid("startDate", "必须是 YYYY-MM-DD 或 RFC 3339 时间"))?,
    };
    let end = match params.str("endDate")? {
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

pub async fn usage(
    State(st): State<AppState>,
    _op: Operator,
    QueryMap(q): QueryMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
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
        total_used += c.used;
        if let Some(q) = c.quota {
            total_quota += q;
            total_remaining += (q - c.used).max(0);
        }
        match status_of(k, now) {
            KeyStatus::Expired => expired += 1,
            KeyStatus::Active | KeyStatus::Exhausted => active += 1,
            KeyStatus::Disabled => {}
        }
    }
    let details: Vec<Value> = keys
        .iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(limit as usize)
        .map(|k| {
            let c = effective_counters(k, now);
            json!({
                "key": k.hint,
                "id": k.id,
                "name": k.name,
                "quota": c.quota,
                "used": c.used,
                "remaining": c.remaining(),
                "periodUsed": period.get(&k.id).copied().unwrap_or(0),
                "lastUsed": rfc3339_opt(k.last_used),
                "createdAt": rfc3339(k.created_at),
                "expiresAt": rfc3339_opt(k.expires_at),
                "enabled": k.enabled,
            })
        })
        .collect();
    Ok(Json(json!({
        "summary": {
            "totalKeys": keys.len(),
            "totalQuota": total_quota,
            "totalUsed": total_used,
            "totalRemaining": total_remaining,
            "activeKeys": active,
            "expiredKeys": expired,
        },
        "details": details,
        "total": keys.len(),
        "limit": limit,
        "offset": offset,
    })))
}

pub async fn usage_history(
    State(st): State<AppState>,
    _op: Operator,
    QueryMap(q): QueryMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let params = Params::new(q, body)?;
    let key = params
        .str("key")?
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("key", "不能为空"))?;
    let rec = find(&st, &key).await?;
    let mut page = history_page(&st, rec.id, &params).await?;
    page["key"] = json!(rec.hint);
    page["id"] = json!(rec.id);
    Ok(Json(page))
}

pub async fn audit(
    State(st): State<AppState>,
    _op: Operator,
    QueryMap(q): QueryMap,
) -> ApiResult<Json<Value>> {
    let params = Params::new(q, None)?;
    let (limit, offset) = params.page(100)?;
    let (rows, total) = st.store.audit(limit, offset).await?;
    let entries: Vec<Value> = rows
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "timestamp": rfc3339(e.record.ts),
                "action": e.record.action,
                "target": e.record.target,
                "tokenHint": e.record.token_hint,
                "clientIp": e.record.client_ip,
                "details": e.record.details,
            })
        })
        .collect();
    Ok(Json(
        json!({ "entries": entries, "total": total, "limit": limit, "offset": offset }),
    ))
}

/// Gateway request log, newest first; `key`, `model` and `status` (`ok`, `error` or a
/// code) narrow it.
pub async fn requests(
    State(st): State<AppState>,
    _op: Operator,
    QueryMap(q): QueryMap,
) -> ApiResult<Json<Value>> {
    let params = Params::new(q, None)?;
    let (limit, offset) = params.page(100)?;
    let mut filter = RequestLogFilter::default();
    if let Some(k) = params.str("key")?.filter(|k| !k.trim().is_empty()) {
        filter.key_id = Some(find(&st, &k).await?.id);
    }
    filter.model = params.str("model")?.filter(|m| !m.is_empty());
    filter.status = match params.str("status")?.as_deref() {
        None | Some("") => None,
        Some("ok") => Some(StatusFilter::Ok),
        Some("error") => Some(StatusFilter::Error),
        Some(code) => Some(StatusFilter::Exact(
            code.parse::<i64>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| ApiError::invalid("status", "必须是 ok、error 或 HTTP 状态码"))?,
        )),
    };
    let (rows, total) = st.store.request_logs(&filter, limit, offset).await?;
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "timestamp": rfc3339(r.ts),
                "requestId": r.request_id,
                "keyId": r.key_id,
                "keyName": r.key_name,
                "ownerUserId": r.owner_user_id,
                "ownerUsername": r.owner_username,
                "endpoint": r.endpoint,
                "model": r.model,
                "upstream": r.upstream,
                "promptTokens": r.prompt_tokens,
                "completionTokens": r.completion_tokens,
                "cost": r.cost,
                "status": r.status,
                "error": r.error,
                "latencyMs": r.latency_ms,
                "ttftMs": r.ttft_ms,
                "isStream": r.is_stream,
                "estimated": r.estimated,
                "clientIp": r.client_ip,
            })
        })
        .collect();
    Ok(Json(
        json!({ "requests": rows, "total": total, "limit": limit, "offset": offset }),
    ))
}

/// The gateway's upstreams: configuration, health (ejected or not) and, over
/// `[start_ms, end_ms)` (default: the last hour), calls, error rate and latency.
pub async fn upstreams(
    State(st): State<AppState>,
    _op: Operator,
    QueryMap(q): QueryMap,
) -> ApiResult<Json<Value>> {
    let params = Params::new(q, None)?;
    let now = chrono::Utc::now().timestamp_millis();
    let end = params.int("end_ms", 0, i64::MAX / 2, now)?;
    let start = params.int("start_ms", 0, i64::MAX / 2, end.saturating_sub(3_600_000))?;
    if start >= end {
        return Err(ApiError::invalid("start_ms", "必须小于 end_ms"));
    }
    let stats = st.store.upstream_stats(start, end).await?;
    let list: Vec<Value> = st
        .gateway
        .upstreams
        .iter()
        .map(|u| {
            let s = stats
                .iter()
                .find(|s| s.upstream == u.s.name)
                .cloned()
                .unwrap_or_default();
            let until = u.ejected_until();
            json!({
                "name": u.s.name,
                "kind": match u.s.kind { UpstreamKind::Mock => "mock", UpstreamKind::Openai => "openai" },
                "priority": u.s.priority,
                "weight": u.s.weight,
                "models": u.s.models,
                "state": if until > now { "ejected" } else { "healthy" },
                "ejectedUntil": (until > now).then(|| rfc3339(until)),
                "consecutiveFailures": u.consecutive_failures(),
                "requests": s.requests,
                "errors": s.errors,
                "errorRate": if s.requests > 0 { s.errors as f64 / s.requests as f64 } else { 0.0 },
                "avgLatencyMs": s.avg_latency_ms.round() as i64,
                "p95LatencyMs": s.p95_latency_ms,
                "avgTtftMs": s.avg_ttft_ms.map(|v| v.round() as i64),
            })
        })
        .collect();
    Ok(Json(json!({
        "upstreams": list,
        "startMs": start,
        "endMs": end,
    })))
}
