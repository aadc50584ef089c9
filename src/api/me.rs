//! The key holder's own console (`/me`): sign in with the key itself (exchanged for an
//! HttpOnly session cookie scoped to `/me`; the key is never put in a URL), then read the
//! key's balance, limits, history and request log, and export its rows. A holder's session
//! opens nothing else: every admin and monitor route asks for an operator.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::amount::Amount;
use super::extract::{JsonBody, ip_allowed};
use super::input::{self, Params};
use super::quota::history_page;
use super::shapes::{HistoryPage, PageQuery};
use crate::auth::{CSRF_HEADER, Origin, cookie};
use crate::error::QuotaRefusals;
use crate::error::refusals::*;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryMap;
use crate::keys::{KeyLimits, Refill, effective_counters, status_of};
use crate::ledger::{KeyEntry, LedgerError};
use crate::state::AppState;
use crate::store::{RequestLogFilter, RequestLogRow};
use crate::timefmt::{rfc3339, rfc3339_opt};

/// The holder's session cookie (its path is `/me`: no other route ever receives it).
pub const HOLDER_COOKIE: &str = "qp_me";

/// A signed-in key holder.
pub struct Holder {
    pub entry: Arc<KeyEntry>,
    pub key_id: i64,
}

impl FromRequestParts<AppState> for Holder {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let id = cookie(&parts.headers, HOLDER_COOKIE).ok_or_else(ApiError::unauthorized_key)?;
        let key_id = st.holders.find(id).ok_or_else(ApiError::unauthorized_key)?;
        let safe = matches!(parts.method, Method::GET | Method::HEAD);
        let csrf = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.trim().is_empty());
        if !safe && !csrf {
            return Err(ApiError::forbidden("缺少 X-QP-CSRF 请求头"));
        }
        // A key deleted since sign-in ends the session.
        let entry = st
            .ledger
            .entry_by_id(key_id)
            .await?
            .ok_or_else(ApiError::unauthorized_key)?;
        Ok(Holder { entry, key_id })
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeLogin {
    /// The API key itself.
    pub key: String,
}

#[derive(Serialize, ToSchema)]
pub struct MeLoginAnswer {
    pub ok: bool,
    /// The key's hint.
    pub key: Option<String>,
}

/// What the holder sees of the key: no metadata (operators' notes), nothing of others.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MyKey {
    pub id: i64,
    /// The key's hint.
    pub key: String,
    pub name: Option<String>,
    /// `active`, `disabled`, `expired` or `exhausted`.
    pub status: &'static str,
    pub enabled: bool,
    pub quota: Option<Amount>,
    pub used: Amount,
    pub remaining: Option<Amount>,
    pub expires_at: Option<String>,
    pub created_at: String,
    pub last_used: Option<String>,
    pub limits: KeyLimits,
    pub refill: Option<Refill>,
}

/// A budget the key draws from besides its own: its user's, and the user's team's.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MyBudget {
    /// `user` or `team`.
    pub kind: &'static str,
    pub name: String,
    pub enabled: bool,
    pub quota: Option<Amount>,
    pub used: Amount,
    pub remaining: Option<Amount>,
    pub refill: Option<Refill>,
}

/// Another key of the same user (only when the operator lets the user see them).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MyOtherKey {
    pub id: i64,
    pub key: String,
    pub name: Option<String>,
    pub status: &'static str,
    pub quota: Option<Amount>,
    pub used: Amount,
    pub remaining: Option<Amount>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeSummary {
    pub key: MyKey,
    /// The user's budget, then the team's (a consume needs room in each).
    pub budgets: Vec<MyBudget>,
    /// The user's other keys, when the operator allows it (`showKeys`); else absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_keys: Option<Vec<MyOtherKey>>,
    /// `points`, `CNY` or `USD`: what the amounts are in.
    pub currency: &'static str,
}

/// One of the holder's own calls: no upstream, no client address, no error text (those
/// name the operator's upstreams).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MyRequest {
    pub timestamp: String,
    pub request_id: String,
    pub endpoint: String,
    pub model: Option<String>,
    pub prompt_tokens: i64,
    pub cached_tokens: i64,
    pub completion_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost: Amount,
    pub status: i64,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub is_stream: bool,
}

impl From<&RequestLogRow> for MyRequest {
    fn from(r: &RequestLogRow) -> Self {
        Self {
            timestamp: rfc3339(r.ts),
            request_id: r.request_id.clone(),
            endpoint: r.endpoint.clone(),
            model: r.model.clone(),
            prompt_tokens: r.prompt_tokens,
            cached_tokens: r.cached_tokens,
            completion_tokens: r.completion_tokens,
            reasoning_tokens: r.reasoning_tokens,
            cost: Amount(r.cost),
            status: r.status,
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            is_stream: r.is_stream,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MyRequests {
    pub requests: Vec<MyRequest>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// `GET /me/api/requests`, `/me/api/export.csv`: the time range.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MyRange {
    #[serde(default, deserialize_with = "crate::lenient::int")]
    #[param(minimum = 0, maximum = 4000000000000000000_i64)]
    pub start_ms: Option<i64>,
    #[serde(default, deserialize_with = "crate::lenient::int")]
    #[param(minimum = 0, maximum = 4000000000000000000_i64)]
    pub end_ms: Option<i64>,
}

const SESSION_MAX_AGE: u64 = 7 * 24 * 3600;

fn set_cookie(value: &str, max_age: u64, headers: &HeaderMap) -> axum::http::HeaderValue {
    crate::web::cookie_header(HOLDER_COOKIE, "/me", value, max_age, headers)
}

/// The key itself → a session cookie for `/me`. A wrong key is 401 (and counts toward the
/// client address's brute-force allowance like any other wrong credential).
#[utoipa::path(post, path = "/me/login", tag = "self-service",
    request_body(content = MeLogin, content_type = "application/json"),
    responses((status = 200, description = "Signed in; the `qp_me` cookie (path `/me`) is set", body = MeLoginAnswer), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | TOO_LARGE | UNAVAILABLE }>))]
pub async fn me_login(
    State(st): State<AppState>,
    origin: Option<axum::Extension<Origin>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let req: MeLogin = input::body(body)?;
    let key = req.key.trim();
    if key.is_empty() {
        return Err(ApiError::invalid("key", "不能为空"));
    }
    let entry = match st.ledger.authenticate(key).await {
        Ok(e) => e,
        Err(LedgerError::Unavailable) => return Err(ApiError::unavailable()),
        Err(_) => return Err(ApiError::unauthorized_key()),
    };
    if let Some(o) = &origin {
        o.authenticated();
    }
    if !ip_allowed(&entry, origin.as_ref().and_then(|o| o.ip)) {
        return Err(ApiError::forbidden("该 IP 不允许使用此密钥"));
    }
    let (id, hint) = {
        let s = entry.lock();
        (s.rec.id, s.rec.hint.clone())
    };
    let session = st.holders.open(id).map_err(|_| ApiError::internal())?;
    Ok((
        [(
            header::SET_COOKIE,
            set_cookie(&session, SESSION_MAX_AGE, &headers),
        )],
        Json(MeLoginAnswer {
            ok: true,
            key: Some(hint),
        }),
    )
        .into_response())
}

/// Signs out. Only with the `X-QP-CSRF` header (the page sends it): without it nothing
/// happens and `ok` is false, so no other site can sign a holder out.
#[utoipa::path(post, path = "/me/logout", tag = "self-service",
    responses((status = 200, description = "Signed out and the cookie cleared (`ok: true`), or nothing done without `X-QP-CSRF`", body = MeLoginAnswer)))]
pub async fn me_logout(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let csrf = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().is_empty());
    if !csrf {
        return Json(MeLoginAnswer {
            ok: false,
            key: None,
        })
        .into_response();
    }
    if let Some(id) = cookie(&headers, HOLDER_COOKIE) {
        st.holders.close(id);
    }
    (
        [(header::SET_COOKIE, set_cookie("", 0, &headers))],
        Json(MeLoginAnswer {
            ok: true,
            key: None,
        }),
    )
        .into_response()
}

#[derive(Serialize, ToSchema)]
pub struct MeSession {
    pub authenticated: bool,
    /// The key's hint, when signed in.
    pub key: Option<String>,
}

/// Whether this browser is signed in (always 200: the page asks before anything else).
#[utoipa::path(get, path = "/me/session", tag = "self-service",
    responses((status = 200, body = MeSession)))]
pub async fn me_session(State(st): State<AppState>, headers: HeaderMap) -> Json<MeSession> {
    let id = cookie(&headers, HOLDER_COOKIE).and_then(|c| st.holders.find(c));
    let entry = match id {
        Some(id) => st.ledger.entry_by_id(id).await.ok().flatten(),
        None => None,
    };
    Json(MeSession {
        authenticated: entry.is_some(),
        key: entry.map(|e| e.lock().rec.hint.clone()),
    })
}

/// The signed-in key: balance, status, expiry, limits, refill.
#[utoipa::path(get, path = "/me/api/summary", tag = "self-service",
    responses((status = 200, body = MeSummary), QuotaRefusals<{ AUTH | UNAVAILABLE }>))]
pub async fn me_summary(State(st): State<AppState>, holder: Holder) -> ApiResult<Json<MeSummary>> {
    let rec = st.ledger.current(&holder.entry).await;
    let now = st.ledger.now_ms();
    let c = effective_counters(&rec, now);
    let (budgets, other_keys) = budgets_of(&st, &rec, now).await?;
    Ok(Json(MeSummary {
        key: MyKey {
            id: rec.id,
            key: rec.hint.clone(),
            name: rec.name.clone(),
            status: status_of(&rec, now).as_str(),
            enabled: rec.enabled,
            quota: c.quota.map(Amount),
            used: Amount(c.used),
            remaining: c.remaining().map(Amount),
            expires_at: rfc3339_opt(rec.expires_at),
            created_at: rfc3339(rec.created_at),
            last_used: rfc3339_opt(rec.last_used),
            limits: rec.limits.clone(),
            refill: rec.refill,
        },
        budgets,
        other_keys,
        currency: st.config.gateway.billing.currency.code(),
    }))
}

/// The budgets of the key's user and team, and (when allowed) the user's other keys.
async fn budgets_of(
    st: &AppState,
    rec: &crate::keys::KeyRecord,
    now: i64,
) -> ApiResult<(Vec<MyBudget>, Option<Vec<MyOtherKey>>)> {
    let Some(uid) = rec.owner.as_ref().and_then(|o| o.user_id) else {
        return Ok((Vec::new(), None));
    };
    let Some(user) = st.store.account(uid).await? else {
        return Ok((Vec::new(), None));
    };
    let team = match user.team_id {
        Some(t) => st.store.account(t).await?,
        None => None,
    };
    let budgets = std::iter::once(&user)
        .chain(team.as_ref())
        .map(|a| {
            let c = a.counters(now);
            MyBudget {
                kind: a.scope.as_str(),
                name: a.name.clone(),
                enabled: a.enabled,
                quota: c.quota.map(Amount),
                used: Amount(c.used),
                remaining: c.remaining().map(|r| Amount(r.max(0))),
                refill: a.refill,
            }
        })
        .collect();
    if !user.show_keys {
        return Ok((budgets, None));
    }
    let others = st
        .store
        .keys_of_user(uid)
        .await?
        .into_iter()
        .filter(|k| k.id != rec.id)
        .map(|k| {
            let c = effective_counters(&k, now);
            MyOtherKey {
                id: k.id,
                key: k.hint.clone(),
                name: k.name.clone(),
                status: status_of(&k, now).as_str(),
                quota: c.quota.map(Amount),
                used: Amount(c.used),
                remaining: c.remaining().map(Amount),
            }
        })
        .collect();
    Ok((budgets, Some(others)))
}

/// The key's usage history, newest first (as `/api/v1/usage/history`).
#[utoipa::path(get, path = "/me/api/history", tag = "self-service",
    params(PageQuery),
    responses((status = 200, body = HistoryPage), QuotaRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn me_history(
    State(st): State<AppState>,
    holder: Holder,
    QueryMap(q): QueryMap,
) -> ApiResult<Json<HistoryPage>> {
    let params = Params::new(q, None)?;
    history_page(&st, holder.key_id, &params).await.map(Json)
}

fn my_filter(holder: &Holder, params: &Params) -> ApiResult<RequestLogFilter> {
    let r: MyRange = params.get()?;
    Ok(RequestLogFilter {
        key_id: Some(holder.key_id),
        from_ms: input::in_range("start_ms", r.start_ms, 0, input::MAX_MS)?,
        to_ms: input::in_range("end_ms", r.end_ms, 0, input::MAX_MS)?,
        ..RequestLogFilter::default()
    })
}

/// The key's own gateway calls, newest first.
#[utoipa::path(get, path = "/me/api/requests", tag = "self-service",
    params(MyRange, PageQuery),
    responses((status = 200, body = MyRequests), QuotaRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn me_requests(
    State(st): State<AppState>,
    holder: Holder,
    QueryMap(q): QueryMap,
) -> ApiResult<Json<MyRequests>> {
    let params = Params::new(q, None)?;
    let (limit, offset) = params.page(50)?;
    let f = my_filter(&holder, &params)?;
    let (rows, total) = st.store.request_logs(&f, limit, offset).await?;
    Ok(Json(MyRequests {
        requests: rows.iter().map(MyRequest::from).collect(),
        total,
        limit,
        offset,
    }))
}

/// Every one of the key's calls in the range, as CSV (header = the JSON field names).
#[utoipa::path(get, path = "/me/api/export.csv", tag = "self-service",
    params(MyRange),
    responses((status = 200, description = "The key's own request log as CSV", content_type = "text/csv", body = String),
        QuotaRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn me_export(
    State(st): State<AppState>,
    holder: Holder,
    QueryMap(q): QueryMap,
) -> ApiResult<Response> {
    let params = Params::new(q, None)?;
    let f = my_filter(&holder, &params)?;
    super::requests::csv_export::<MyRequest>(&st, f, "my-requests.csv").await
}

async fn page(headers: HeaderMap) -> Response {
    crate::web::me_page(&headers)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .route("/me", axum::routing::get(page))
        .route("/me/", axum::routing::get(page))
        .routes(routes!(me_login))
        .routes(routes!(me_logout))
        .routes(routes!(me_session))
        .routes(routes!(me_summary))
        .routes(routes!(me_history))
        .routes(routes!(me_requests))
        .routes(routes!(me_export))
}
