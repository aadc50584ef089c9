//! Channels over HTTP (`/admin/upstreams`): list with health and stats, create, read,
//! change, enable, disable, delete, test, and the upstream's own model list. The operations
//! are `gateway/channel_admin.rs`; this file reads requests and writes answers.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::amount::Amount;
use super::extract::{JsonBody, Operator, QueryMap};
use super::input::{self, Params};
use super::shapes::WindowQuery;
use crate::error::QuotaRefusals;
use crate::error::refusals::*;
use crate::error::{ApiError, ApiResult};
use crate::gateway::channel_admin::{AdminError, TestOutcome};
use crate::gateway::channels::{ChannelError, ChannelInput, hint};
use crate::gateway::health::HealthState;
use crate::gateway::settings::UpstreamKind;
use crate::gateway::upstream::Upstream;
use crate::state::AppState;
use crate::store::UpstreamStats;
use crate::timefmt::rfc3339;

/// `{state, reason, since}`: `healthy`, `ejected` (failures within the window), `probing`
/// (cooled down, the next call is the probe) or `disabled` (by an operator, or unreadable).
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    pub state: &'static str,
    pub reason: Option<String>,
    /// RFC 3339; `null` when healthy since this instance started.
    pub since: Option<String>,
}

/// One upstream key: its hint, and whether the upstream refused it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyHealth {
    pub hint: String,
    /// `active` or `disabled`.
    pub state: &'static str,
    pub reason: Option<String>,
    pub since: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamView {
    /// The channel's id; `null` for the config file's upstreams.
    pub id: Option<i64>,
    pub name: String,
    /// `config` (read-only here) or `api`.
    pub source: &'static str,
    /// `mock` or `openai`.
    pub kind: &'static str,
    pub base_url: String,
    pub protocols: Vec<&'static str>,
    /// The upstream keys, as hints (keys are never returned).
    pub key_hints: Vec<String>,
    pub keys: Vec<KeyHealth>,
    pub models: Vec<String>,
    pub model_map: BTreeMap<String, String>,
    pub priority: i32,
    pub weight: u32,
    /// Header names → a hint of the value.
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub eject_after_failures: u32,
    pub eject_window_ms: u64,
    pub eject_cooldown_ms: u64,
    pub tags: Vec<String>,
    pub enabled: bool,
    pub health: HealthView,
    /// `health.state`, repeated for older readers.
    pub state: &'static str,
    pub ejected_until: Option<String>,
    /// Failures counted in the current window.
    pub recent_failures: u32,
    pub requests: i64,
    pub errors: i64,
    pub error_rate: f64,
    pub avg_latency_ms: i64,
    pub p50_latency_ms: i64,
    pub p95_latency_ms: i64,
    pub avg_ttft_ms: Option<i64>,
    /// Prompt and completion tokens.
    pub tokens: i64,
    pub cost: Amount,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamsResponse {
    pub upstreams: Vec<UpstreamView>,
    pub start_ms: i64,
    pub end_ms: i64,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// The model to ask (default: the channel's first listed model).
    #[schema(max_length = 200)]
    pub model: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    pub ok: bool,
    /// The upstream's HTTP status; `null` when it could not be reached.
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub model: String,
    /// The upstream's answer, masked, at most 2 000 characters.
    pub reply: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UpstreamModelList {
    pub models: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedUpstream {
    pub success: bool,
    pub name: String,
}

impl From<ChannelError> for ApiError {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::Invalid { field, why } => ApiError::invalid(field, why),
            ChannelError::NotFound => ApiError::upstream_not_found(),
            ChannelError::NameTaken => ApiError::upstream_exists(),
            ChannelError::ReadOnly => ApiError::upstream_read_only(),
            ChannelError::Sealed(_) => ApiError::upstream_sealed(),
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Channel(c) => c.into(),
            AdminError::Store(s) => s.into(),
        }
    }
}

fn ms(v: Option<i64>) -> Option<String> {
    v.map(rfc3339)
}

fn health_of(u: &Upstream, h: &crate::gateway::health::HealthView) -> HealthView {
    match (&u.broken, u.s.enabled) {
        (Some(why), _) => HealthView {
            state: "disabled",
            reason: Some(why.clone()),
            since: None,
        },
        (None, false) => HealthView {
            state: "disabled",
            reason: Some("disabled by an operator".into()),
            since: None,
        },
        (None, true) => HealthView {
            state: h.state.as_str(),
            reason: (h.state != HealthState::Healthy)
                .then(|| h.reason.clone())
                .flatten(),
            since: ms(h.since_ms),
        },
    }
}

fn view(u: &Upstream, stats: Option<&UpstreamStats>, now: i64) -> UpstreamView {
    let s = stats.cloned().unwrap_or_default();
    let h = u.health.view(now);
    let health = health_of(u, &h);
    let keys: Vec<KeyHealth> = u
        .key_states()
        .into_iter()
        .map(|k| KeyHealth {
            state: if k.disabled_reason.is_some() {
                "disabled"
            } else {
                "active"
            },
            hint: k.hint,
            reason: k.disabled_reason,
            since: ms(k.disabled_at_ms),
        })
        .collect();
    UpstreamView {
        id: u.s.id,
        name: u.s.name.clone(),
        source: if u.s.id.is_some() { "api" } else { "config" },
        kind: match u.s.kind {
            UpstreamKind::Mock => "mock",
            UpstreamKind::Openai => "openai",
        },
        base_url: crate::config_view::mask_dsn(&u.s.base_url),
        protocols: u.s.protocols.iter().map(|p| p.as_str()).collect(),
        key_hints: keys.iter().map(|k| k.hint.clone()).collect(),
        keys,
        models: u.s.models.clone(),
        model_map: u.s.model_map.clone(),
        priority: u.s.priority,
        weight: u.s.weight,
        headers: u
            .s
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), hint(v)))
            .collect(),
        timeout_ms: u.s.timeout_ms,
        connect_timeout_ms: u.s.connect_timeout_ms,
        eject_after_failures: u.policy.after,
        eject_window_ms: u.policy.window_ms,
        eject_cooldown_ms: u.policy.cooldown_ms,
        tags: u.s.tags.clone(),
        enabled: u.s.enabled,
        state: health.state,
        health,
        ejected_until: h.until_ms.filter(|&t| t > now).map(rfc3339),
        recent_failures: h.recent_failures,
        requests: s.requests,
        errors: s.errors,
        error_rate: if s.requests > 0 {
            s.errors as f64 / s.requests as f64
        } else {
            0.0
        },
        avg_latency_ms: s.avg_latency_ms.round() as i64,
        p50_latency_ms: s.p50_latency_ms,
        p95_latency_ms: s.p95_latency_ms,
        avg_ttft_ms: s.avg_ttft_ms.map(|v| v.round() as i64),
        tokens: s.tokens,
        cost: Amount(s.cost),
    }
}

/// The stats window of a query (default: the last hour).
fn window(q: WindowQuery, now: i64) -> ApiResult<(i64, i64)> {
    let end = input::in_range("end_ms", q.end_ms, 0, input::MAX_MS)?.unwrap_or(now);
    let start = input::in_range("start_ms", q.start_ms, 0, input::MAX_MS)?
        .unwrap_or(end.saturating_sub(3_600_000));
    if start >= end {
        return Err(ApiError::invalid("start_ms", "必须小于 end_ms"));
    }
    Ok((start, end))
}

/// One upstream's view, its stats over the last hour.
async fn one(st: &AppState, id_or_name: &str) -> ApiResult<Json<UpstreamView>> {
    let u = st.gateway.find_upstream(id_or_name)?;
    let now = st.gateway.now_ms();
    let stats = st.store.upstream_stats(now - 3_600_000, now).await?;
    let s = stats.iter().find(|s| s.upstream == u.s.name);
    Ok(Json(view(&u, s, now)))
}

/// The gateway's upstreams (config file and channels): settings, health and, over
/// `[start_ms, end_ms)` (default: the last hour), calls, errors, latency, tokens and cost.
#[utoipa::path(get, path = "/admin/upstreams", tag = "admin",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(WindowQuery),
    responses((status = 200, body = UpstreamsResponse), QuotaRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn list_upstreams(
    State(st): State<AppState>,
    _op: Operator,
    QueryMap(q): QueryMap,
) -> ApiResult<Json<UpstreamsResponse>> {
    let (start, end) = window(Params::new(q, None)?.get()?, st.gateway.now_ms())?;
    let stats = st.store.upstream_stats(start, end).await?;
    let now = st.gateway.now_ms();
    let upstreams = st
        .gateway
        .roster()
        .upstreams
        .iter()
        .map(|u| view(u, stats.iter().find(|s| s.upstream == u.s.name), now))
        .collect();
    Ok(Json(UpstreamsResponse {
        upstreams,
        start_ms: start,
        end_ms: end,
    }))
}

/// Adds a channel; in use on every instance within a second.
#[utoipa::path(post, path = "/admin/upstreams", tag = "admin",
    security(("adminToken" = [])),
    request_body(content = ChannelInput, content_type = "application/json"),
    responses((status = 201, body = UpstreamView), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | CONFLICT | TOO_LARGE | UNAVAILABLE }>))]
pub async fn create_upstream(
    State(st): State<AppState>,
    op: Operator,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<UpstreamView>)> {
    op.require_write()?;
    let input: ChannelInput = input::body(body)?;
    let id = st.gateway.create_channel(input, &op.actor()).await?;
    Ok((StatusCode::CREATED, one(&st, &id.to_string()).await?))
}

#[utoipa::path(get, path = "/admin/upstreams/{id}", tag = "admin",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(("id" = String, Path, description = "The channel's id, or an upstream's name")),
    responses((status = 200, body = UpstreamView), QuotaRefusals<{ AUTH | NOT_FOUND | UNAVAILABLE }>))]
pub async fn get_upstream(
    State(st): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<UpstreamView>> {
    one(&st, &id).await
}

/// Changes a channel: absent fields stay; `apiKeys` and `headers` replace the whole set
/// (a kept key keeps its state).
#[utoipa::path(patch, path = "/admin/upstreams/{id}", tag = "admin",
    security(("adminToken" = [])),
    params(("id" = String, Path, description = "The channel's id, or its name")),
    request_body(content = ChannelInput, content_type = "application/json"),
    responses((status = 200, body = UpstreamView), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | NOT_FOUND | CONFLICT | TOO_LARGE | UNAVAILABLE }>))]
pub async fn patch_upstream(
    State(st): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<UpstreamView>> {
    op.require_write()?;
    let input: ChannelInput = input::body(body)?;
    let id = st.gateway.update_channel(&id, input, &op.actor()).await?;
    one(&st, &id.to_string()).await
}

#[utoipa::path(delete, path = "/admin/upstreams/{id}", tag = "admin",
    security(("adminToken" = [])),
    params(("id" = String, Path, description = "The channel's id, or its name")),
    responses((status = 200, body = DeletedUpstream), QuotaRefusals<{ AUTH | FORBIDDEN | NOT_FOUND | CONFLICT | UNAVAILABLE }>))]
pub async fn delete_upstream(
    State(st): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<DeletedUpstream>> {
    op.require_write()?;
    let u = st.gateway.find_upstream(&id)?;
    st.gateway.delete_channel(&id, &op.actor()).await?;
    Ok(Json(DeletedUpstream {
        success: true,
        name: u.s.name.clone(),
    }))
}

/// Back into routing; every key the upstream refused gets another chance.
#[utoipa::path(post, path = "/admin/upstreams/{id}/enable", tag = "admin",
    security(("adminToken" = [])),
    params(("id" = String, Path, description = "The channel's id, or its name")),
    responses((status = 200, body = UpstreamView), QuotaRefusals<{ AUTH | FORBIDDEN | NOT_FOUND | CONFLICT | UNAVAILABLE }>))]
pub async fn enable_upstream(
    State(st): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<UpstreamView>> {
    switch(&st, &op, &id, true).await
}

/// An operator's enable or disable, answered with the channel as it is then.
async fn switch(st: &AppState, op: &Operator, id: &str, on: bool) -> ApiResult<Json<UpstreamView>> {
    op.require_write()?;
    let id = st.gateway.set_channel_enabled(id, on, &op.actor()).await?;
    one(st, &id.to_string()).await
}

/// Out of routing until enabled (an operator's switch, apart from health).
#[utoipa::path(post, path = "/admin/upstreams/{id}/disable", tag = "admin",
    security(("adminToken" = [])),
    params(("id" = String, Path, description = "The channel's id, or its name")),
    responses((status = 200, body = UpstreamView), QuotaRefusals<{ AUTH | FORBIDDEN | NOT_FOUND | CONFLICT | UNAVAILABLE }>))]
pub async fn disable_upstream(
    State(st): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<UpstreamView>> {
    switch(&st, &op, &id, false).await
}

/// A real minimal call (one token) through this upstream, timed; the answer shown masked.
/// A success ends an ejection. Audited.
#[utoipa::path(post, path = "/admin/upstreams/{id}/test", tag = "admin",
    security(("adminToken" = [])),
    params(("id" = String, Path, description = "The channel's id, or an upstream's name")),
    request_body(content = Option<TestRequest>, content_type = "application/json"),
    responses((status = 200, body = TestResult), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | NOT_FOUND | TOO_LARGE | UNAVAILABLE }>))]
pub async fn test_upstream(
    State(st): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<TestResult>> {
    op.require_write()?;
    let req: TestRequest = input::body(body)?;
    input::max_chars("model", req.model.as_deref(), 200)?;
    let u = st.gateway.find_upstream(&id)?;
    let TestOutcome {
        ok,
        status,
        latency_ms,
        model,
        reply,
        error,
    } = st.gateway.test_channel(&u, req.model, &op.actor()).await?;
    Ok(Json(TestResult {
        ok,
        status,
        latency_ms,
        model,
        reply,
        error,
    }))
}

/// The model ids the upstream's own `/models` lists (to fill `models`).
#[utoipa::path(get, path = "/admin/upstreams/{id}/models", tag = "admin",
    security(("adminToken" = [])),
    params(("id" = String, Path, description = "The channel's id, or an upstream's name")),
    responses((status = 200, body = UpstreamModelList), QuotaRefusals<{ AUTH | FORBIDDEN | NOT_FOUND | BAD_GATEWAY | UNAVAILABLE }>))]
pub async fn upstream_models(
    State(st): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<UpstreamModelList>> {
    op.require_write()?;
    let u = st.gateway.find_upstream(&id)?;
    match st.gateway.upstream_models(&u).await {
        Ok(models) => Ok(Json(UpstreamModelList { models })),
        Err(why) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "UPSTREAM_ERROR",
            format!("无法获取上游模型列表：{why}"),
        )),
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_upstreams, create_upstream))
        .routes(routes!(get_upstream, patch_upstream, delete_upstream))
        .routes(routes!(enable_upstream))
        .routes(routes!(disable_upstream))
        .routes(routes!(test_upstream))
        .routes(routes!(upstream_models))
}
