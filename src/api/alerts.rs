//! `/admin/alerts*`: the history with every delivery attempt, the channels (masked), and a
//! test message to one channel. Admin or viewer may read; only admin may send.

use std::collections::HashMap;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::alerts::Alerts;
use crate::alerts::channels::mask_url;
use crate::alerts::rules::applicable;
use crate::alerts::settings::{Lang, RuleKind};
use crate::api::input::{self, Params};
use crate::api::shapes::{PageQuery, lenient};
use crate::auth::Authenticator;
use crate::error::QuotaRefusals;
use crate::error::refusals::*;
use crate::error::{ApiError, ApiResult};
use crate::extract::{HasAuth, Operator, QueryMap};
use crate::store::{AlertFilter, AlertRow, DeliveryRecord};
use crate::timefmt::rfc3339;

#[derive(Clone)]
pub struct AlertsState {
    pub alerts: Arc<Alerts>,
    pub auth: Arc<Authenticator>,
}

pub fn router() -> OpenApiRouter<AlertsState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(channels))
        .routes(routes!(test))
}

impl HasAuth for AlertsState {
    fn authenticator(&self) -> &Authenticator {
        &self.auth
    }
}

/// `GET /admin/alerts` filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertsQuery {
    /// `burst`, `multi_user_token`, `ip_many_users`, `big_request`, `quota_low`,
    /// `key_expiring`, `upstream_down`, `auth_failures`, `quota_request`.
    #[param(
        pattern = "^(burst|multi_user_token|ip_many_users|big_request|quota_low|key_expiring|upstream_down|auth_failures|quota_request)?$"
    )]
    pub rule: Option<String>,
    /// `sending`, `sent`, `partial`, `failed` or `recorded`.
    #[param(pattern = "^(sending|sent|partial|failed|recorded)?$")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "lenient::int")]
    #[param(minimum = 0, maximum = 4000000000000000000_i64)]
    pub start_ms: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    #[param(minimum = 0, maximum = 4000000000000000000_i64)]
    pub end_ms: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    pub channel: String,
    pub attempt: i64,
    pub timestamp: String,
    pub ok: bool,
    pub http_status: Option<i64>,
    pub error: Option<String>,
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(d: DeliveryRecord) -> Self {
        Self {
            channel: d.channel,
            attempt: d.attempt,
            timestamp: rfc3339(d.ts),
            ok: d.ok,
            http_status: d.http_status,
            error: d.error,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertView {
    pub id: i64,
    pub timestamp: String,
    pub rule: String,
    pub subject: String,
    pub title: String,
    pub message: String,
    #[schema(value_type = Object)]
    pub details: Value,
    pub link: Option<String>,
    pub channels: Vec<String>,
    pub status: String,
    pub deliveries: Vec<DeliveryView>,
}

impl AlertView {
    fn new(r: AlertRow, deliveries: Vec<DeliveryView>) -> Self {
        let a = r.alert;
        Self {
            id: r.id,
            timestamp: rfc3339(a.ts),
            rule: a.rule,
            subject: a.subject,
            title: a.title,
            message: a.message,
            details: a.details,
            link: a.link,
            channels: a.channels,
            status: a.status,
            deliveries,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertsPage {
    pub alerts: Vec<AlertView>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

#[utoipa::path(get, path = "/admin/alerts", tag = "alerts",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(AlertsQuery, PageQuery),
    responses((status = 200, description = "Alerts, newest first, with every delivery attempt", body = AlertsPage), QuotaRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn list(
    State(st): State<AlertsState>,
    _op: Operator,
    QueryMap(q): QueryMap,
) -> ApiResult<Json<AlertsPage>> {
    let params = Params::new(q, None)?;
    let (limit, offset) = params.page(50)?;
    let query: AlertsQuery = params.get()?;
    let rule = query.rule.filter(|r| !r.is_empty());
    if let Some(r) = &rule
        && RuleKind::parse(r).is_none()
    {
        return Err(ApiError::invalid("rule", "未知的规则"));
    }
    let status = query.status.filter(|s| !s.is_empty());
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
        from_ms: input::in_range("start_ms", query.start_ms, 0, input::MAX_MS)?,
        to_ms: input::in_range("end_ms", query.end_ms, 0, input::MAX_MS)?,
    };
    let store = &st.alerts.sources.store;
    let (rows, total) = store.alerts(&filter, limit, offset).await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut by_alert: HashMap<i64, Vec<DeliveryView>> = HashMap::new();
    for d in store.deliveries(&ids).await? {
        by_alert.entry(d.alert_id).or_default().push(d.into());
    }
    let alerts = rows
        .into_iter()
        .map(|r| {
            let d = by_alert.remove(&r.id).unwrap_or_default();
            AlertView::new(r, d)
        })
        .collect();
    Ok(Json(AlertsPage {
        alerts,
        total,
        limit,
        offset,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelView {
    pub name: String,
    /// `dingtalk`, `feishu`, `wecom`, `slack` or `webhook`.
    pub kind: &'static str,
    /// The address with its secret parts masked.
    pub url: String,
    pub signed: bool,
    pub rules: Vec<&'static str>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleView {
    pub rule: &'static str,
    pub enabled: bool,
    /// Whether the rule can run on this instance's source.
    pub applicable: bool,
    pub every_sec: u64,
    pub lookback_sec: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelsResponse {
    pub enabled: bool,
    /// `zh` or `en`.
    pub language: &'static str,
    pub cooldown_sec: i64,
    pub channels: Vec<ChannelView>,
    pub rules: Vec<RuleView>,
}

#[utoipa::path(get, path = "/admin/alerts/channels", tag = "alerts",
    security(("adminToken" = []), ("viewerToken" = [])),
    responses((status = 200, description = "Channels (addresses masked) and rules", body = ChannelsResponse), QuotaRefusals<{ AUTH }>))]
pub async fn channels(
    State(st): State<AlertsState>,
    _op: Operator,
) -> ApiResult<Json<ChannelsResponse>> {
    let s = &st.alerts.settings;
    let channels = s
        .channels
        .iter()
        .map(|c| ChannelView {
            name: c.name.clone(),
            kind: c.kind.as_str(),
            url: mask_url(&c.url),
            signed: c.secret.is_some(),
            rules: c.rules.iter().map(|r| r.as_str()).collect(),
        })
        .collect();
    let rules = s
        .rules
        .iter()
        .map(|(r, rs)| RuleView {
            rule: r.as_str(),
            enabled: rs.enabled,
            applicable: applicable(*r, &st.alerts.sources),
            every_sec: rs.every_ms / 1000,
            lookback_sec: rs.lookback_ms / 1000,
        })
        .collect();
    Ok(Json(ChannelsResponse {
        enabled: s.enabled,
        language: match s.lang {
            Lang::Zh => "zh",
            Lang::En => "en",
        },
        cooldown_sec: s.cooldown_ms / 1000,
        channels,
        rules,
    }))
}

/// `POST /admin/alerts/test`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// A configured channel's name.
    #[schema(required = true, pattern = r"\S")]
    pub channel: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestResponse {
    pub ok: bool,
    pub channel: String,
    pub http_status: Option<u16>,
    /// The platform's answer (trimmed).
    pub answer: String,
    pub error: Option<String>,
}

#[utoipa::path(post, path = "/admin/alerts/test", tag = "alerts",
    security(("adminToken" = [])),
    request_body(content = Option<TestRequest>, content_type = "application/json"),
    responses((status = 200, description = "One signed test message sent; the platform's answer", body = TestResponse), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | NOT_FOUND | TOO_LARGE }>))]
pub async fn test(
    State(st): State<AlertsState>,
    op: Operator,
    body: axum::body::Bytes,
) -> Response {
    match send_test(&st, &op, &body).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn send_test(st: &AlertsState, op: &Operator, body: &[u8]) -> ApiResult<TestResponse> {
    op.require_write()?;
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(serde_json::from_slice::<Value>(body).map_err(|_| ApiError::malformed_json())?)
    };
    let req: TestRequest = input::body(body)?;
    let name = req
        .channel
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::invalid("channel", "不能为空"))?;
    let c = st
        .alerts
        .settings
        .channels
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "没有这个通道 (no such alert channel)",
            )
        })?;
    let a = st.alerts.attempt(c, &st.alerts.test_message()).await;
    Ok(TestResponse {
        ok: a.ok,
        channel: c.name.clone(),
        http_status: a.http_status,
        answer: a.answer,
        error: a.error,
    })
}
