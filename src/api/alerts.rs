//! `/admin/alerts*`: the history with every delivery attempt, the channels (masked), and a
//! test message to one channel. Admin or viewer may read; only admin may send.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::alerts::Alerts;
use crate::alerts::channels::mask_url;
use crate::alerts::rules::applicable;
use crate::alerts::settings::{Lang, RuleKind};
use crate::api::extract::QueryMap;
use crate::api::input::Params;
use crate::auth::{AuthError, Authenticator, Principal, Role};
use crate::error::{ApiError, ApiResult};
use crate::store::AlertFilter;
use crate::timefmt::rfc3339;

#[derive(Clone)]
pub struct AlertsState {
    pub alerts: Arc<Alerts>,
    pub auth: Arc<Authenticator>,
}

pub fn router<S: Clone + Send + Sync + 'static>(st: AlertsState) -> Router<S> {
    Router::new()
        .route("/admin/alerts", get(list))
        .route("/admin/alerts/channels", get(channels))
        .route("/admin/alerts/test", post(test))
        .with_state(st)
}

fn who(st: &AlertsState, headers: &HeaderMap, method: &Method) -> ApiResult<Principal> {
    st.auth.authenticate(headers, method).map_err(|e| match e {
        AuthError::Unauthorized => ApiError::unauthorized_admin(),
        AuthError::MissingCsrf => ApiError::forbidden("缺少 X-QP-CSRF 请求头"),
    })
}

async fn list(
    State(st): State<AlertsState>,
    headers: HeaderMap,
    QueryMap(q): QueryMap,
) -> ApiResult<Json<Value>> {
    who(&st, &headers, &Method::GET)?;
    let params = Params::new(q, None)?;
    let (limit, offset) = params.page(50)?;
    let rule = params.str("rule")?.filter(|r| !r.is_empty());
    if let Some(r) = &rule
        && RuleKind::parse(r).is_none()
    {
        return Err(ApiError::invalid("rule", "未知的规则"));
    }
    let status = params.str("status")?.filter(|s| !s.is_empty());
    if let Some(s) = &status
        && !["sending", "sent", "partial", "failed", "recorded"].contains(&s.as_str())
    {
        return Err(ApiError::invalid(
            "status",
            "必须是 sending、sent、partial、failed 或 recorded",
        ));
    }
    let filter = AlertFilter {
        rule,
        status,
        from_ms: params
            .str("start_ms")?
            .map(|_| params.int("start_ms", 0, i64::MAX / 2, 0))
            .transpose()?,
        to_ms: params
            .str("end_ms")?
            .map(|_| params.int("end_ms", 0, i64::MAX / 2, 0))
            .transpose()?,
    };
    let store = &st.alerts.sources.store;
    let (rows, total) = store.alerts(&filter, limit, offset).await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut by_alert: HashMap<i64, Vec<Value>> = HashMap::new();
    for d in store.deliveries(&ids).await? {
        by_alert.entry(d.alert_id).or_default().push(json!({
            "channel": d.channel,
            "attempt": d.attempt,
            "timestamp": rfc3339(d.ts),
            "ok": d.ok,
            "httpStatus": d.http_status,
            "error": d.error,
        }));
    }
    let alerts: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let a = r.alert;
            json!({
                "id": r.id,
                "timestamp": rfc3339(a.ts),
                "rule": a.rule,
                "subject": a.subject,
                "title": a.title,
                "message": a.message,
                "details": a.details,
                "link": a.link,
                "channels": a.channels,
                "status": a.status,
                "deliveries": by_alert.remove(&r.id).unwrap_or_default(),
            })
        })
        .collect();
    Ok(Json(
        json!({"alerts": alerts, "total": total, "limit": limit, "offset": offset}),
    ))
}

async fn channels(State(st): State<AlertsState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    who(&st, &headers, &Method::GET)?;
    let s = &st.alerts.settings;
    let channels: Vec<Value> = s
        .channels
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "kind": c.kind.as_str(),
                "url": mask_url(&c.url),
                "signed": c.secret.is_some(),
                "rules": c.rules.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let rules: Vec<Value> = s
        .rules
        .iter()
        .map(|(r, rs)| {
            json!({
                "rule": r.as_str(),
                "enabled": rs.enabled,
                "applicable": applicable(*r, &st.alerts.sources),
                "everySec": rs.every_ms / 1000,
                "lookbackSec": rs.lookback_ms / 1000,
            })
        })
        .collect();
    Ok(Json(json!({
        "enabled": s.enabled,
        "language": match s.lang { Lang::Zh => "zh", Lang::En => "en" },
        "cooldownSec": s.cooldown_ms / 1000,
        "channels": channels,
        "rules": rules,
    })))
}

/// `{channel}` → one signed test message, and the platform's answer.
async fn test(
    State(st): State<AlertsState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let p = match who(&st, &headers, &Method::POST) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if p.role != Role::Admin {
        return ApiError::forbidden("只读令牌不能执行写操作").into_response();
    }
    let name = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("channel").and_then(Value::as_str).map(str::to_owned));
    let Some(name) = name else {
        return ApiError::invalid("channel", "不能为空").into_response();
    };
    let Some(c) = st.alerts.settings.channels.iter().find(|c| c.name == name) else {
        return ApiError::invalid("channel", "没有这个通道").into_response();
    };
    let a = st.alerts.attempt(c, &st.alerts.test_message()).await;
    Json(json!({
        "ok": a.ok,
        "channel": c.name,
        "httpStatus": a.http_status,
        "answer": a.answer,
        "error": a.error,
    }))
    .into_response()
}
