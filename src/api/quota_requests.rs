//! Requests for more quota over HTTP: a key holder files one (`POST /me/api/quota-requests`)
//! and sees its own; operators list them (`GET /admin/quota-requests`) and approve or deny
//! (`POST /admin/quota-requests/{id}/approve|deny`). The operations are
//! `crate::quota_requests`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::amount::Amount;
use super::extract::{JsonBody, Operator};
use super::input::{self, MAX_QUOTA};
use super::me::Holder;
use crate::error::QuotaRefusals;
use crate::error::refusals::*;
use crate::error::{ApiError, ApiResult};
use crate::keyadmin::Actor;
use crate::quota_requests::{self, Deciders, RequestError};
use crate::state::AppState;
use crate::store::QuotaRequestRecord;
use crate::timefmt::{rfc3339, rfc3339_opt};

/// `POST /me/api/quota-requests`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewQuotaRequest {
    /// How much more (points, or money in money mode).
    #[schema(value_type = Amount)]
    pub amount: Amount,
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

/// `POST /admin/quota-requests/{id}/approve` and `/deny`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Decision {
    /// Approvals: grant this instead of what was asked.
    #[schema(value_type = Option<Amount>)]
    pub amount: Option<Amount>,
    /// Shown to the holder.
    #[schema(max_length = 500)]
    pub note: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaRequestView {
    pub id: i64,
    pub key_id: i64,
    /// The key's hint.
    pub key: Option<String>,
    pub key_name: Option<String>,
    pub user_id: Option<i64>,
    pub user_name: Option<String>,
    pub amount: Amount,
    pub reason: Option<String>,
    /// `pending`, `approved` or `denied`.
    pub status: String,
    pub created_at: String,
    pub decided_at: Option<String>,
    pub granted: Option<Amount>,
    pub note: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaRequestList {
    pub requests: Vec<QuotaRequestView>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QuotaRequestQuery {
    /// `pending`, `approved` or `denied` (absent: all).
    #[param(pattern = "^(pending|approved|denied)?$")]
    pub status: Option<String>,
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Pending => ApiError::new(
                StatusCode::CONFLICT,
                "QUOTA_REQUEST_PENDING",
                "已有一个待处理的申请，请等待管理员处理",
            ),
            RequestError::NotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "QUOTA_REQUEST_NOT_FOUND",
                "申请不存在",
            ),
            RequestError::Decided => ApiError::new(
                StatusCode::CONFLICT,
                "QUOTA_REQUEST_DECIDED",
                "该申请已处理",
            ),
            RequestError::Store(e) => e.into(),
        }
    }
}

async fn views(st: &AppState, rows: Vec<QuotaRequestRecord>) -> ApiResult<Vec<QuotaRequestView>> {
    let accounts = st.store.accounts().await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let key = st.keys.find(&r.key_id.to_string()).await?;
        out.push(QuotaRequestView {
            id: r.id,
            key_id: r.key_id,
            key: key.as_ref().map(|k| k.hint.clone()),
            key_name: key.as_ref().and_then(|k| k.name.clone()),
            user_id: r.user_id,
            user_name: r
                .user_id
                .and_then(|u| accounts.iter().find(|a| a.id == u))
                .map(|a| a.name.clone()),
            amount: Amount(r.amount),
            reason: r.reason,
            status: r.status,
            created_at: rfc3339(r.created_ms),
            decided_at: rfc3339_opt(r.decided_ms),
            granted: r.granted.map(Amount),
            note: r.note,
        });
    }
    Ok(out)
}

fn text(field: &str, v: Option<String>) -> ApiResult<Option<String>> {
    input::max_chars(field, v.as_deref(), 500)?;
    Ok(v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()))
}

/// Asks the operator for more quota on the signed-in key (one pending request at a time).
#[utoipa::path(post, path = "/me/api/quota-requests", tag = "self-service",
    request_body(content = NewQuotaRequest, content_type = "application/json"),
    responses((status = 201, body = QuotaRequestView), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | CONFLICT | TOO_LARGE | UNAVAILABLE }>))]
pub async fn me_file_quota_request(
    State(st): State<AppState>,
    holder: Holder,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<QuotaRequestView>)> {
    let req: NewQuotaRequest = input::body(body)?;
    let amount = input::amount_in_range("amount", Some(req.amount), 1, MAX_QUOTA)?.unwrap_or(1);
    let reason = text("reason", req.reason)?;
    let key = holder.entry.snapshot();
    let actor = Actor {
        token_hint: Some(format!("holder {}", key.hint)),
        client_ip: None,
    };
    let now = st.ledger.now_ms();
    let id = quota_requests::file(st.store.as_ref(), &key, amount, reason, &actor, now).await?;
    let row = st
        .store
        .quota_request(id)
        .await?
        .ok_or(RequestError::NotFound)?;
    let mut v = views(&st, vec![row]).await?;
    Ok((StatusCode::CREATED, Json(v.remove(0))))
}

/// The signed-in key's requests, newest first.
#[utoipa::path(get, path = "/me/api/quota-requests", tag = "self-service",
    responses((status = 200, body = QuotaRequestList), QuotaRefusals<{ AUTH | UNAVAILABLE }>))]
pub async fn me_quota_requests(
    State(st): State<AppState>,
    holder: Holder,
) -> ApiResult<Json<QuotaRequestList>> {
    let rows = st
        .store
        .quota_requests(None, Some(holder.key_id), 50)
        .await?;
    Ok(Json(QuotaRequestList {
        requests: views(&st, rows).await?,
    }))
}

/// Requests for more quota, newest first (the operator's queue).
#[utoipa::path(get, path = "/admin/quota-requests", tag = "admin",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(QuotaRequestQuery),
    responses((status = 200, body = QuotaRequestList), QuotaRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn list_quota_requests(
    State(st): State<AppState>,
    _op: Operator,
    Query(q): Query<QuotaRequestQuery>,
) -> ApiResult<Json<QuotaRequestList>> {
    let status = q.status.filter(|s| !s.is_empty());
    if status
        .as_deref()
        .is_some_and(|s| !matches!(s, "pending" | "approved" | "denied"))
    {
        return Err(ApiError::invalid(
            "status",
            "必须是 pending、approved 或 denied",
        ));
    }
    let rows = st
        .store
        .quota_requests(status.as_deref(), None, 500)
        .await?;
    Ok(Json(QuotaRequestList {
        requests: views(&st, rows).await?,
    }))
}

fn path_id(id: &str) -> ApiResult<i64> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RequestError::NotFound.into());
    }
    id.parse().map_err(|_| RequestError::NotFound.into())
}

/// Approves: the amount (or `amount`) is added to the key's quota, or — for a key without
/// one — to its user's budget.
#[utoipa::path(post, path = "/admin/quota-requests/{id}/approve", tag = "admin",
    security(("adminToken" = [])),
    params(("id" = String, Path, description = "The request's id")),
    request_body(content = Option<Decision>, content_type = "application/json"),
    responses((status = 200, body = QuotaRequestView), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | NOT_FOUND | CONFLICT | TOO_LARGE | UNAVAILABLE }>))]
pub async fn approve_quota_request(
    State(st): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<QuotaRequestView>> {
    op.require_write()?;
    let id = path_id(&id)?;
    let req: Decision = input::body(body)?;
    let amount = input::amount_in_range("amount", req.amount, 1, MAX_QUOTA)?;
    let note = text("note", req.note)?;
    let d = Deciders {
        store: &st.store,
        keys: &st.keys,
        users: &st.users,
    };
    let (r, _) =
        quota_requests::approve(&d, id, amount, note, &op.actor(), st.ledger.now_ms()).await?;
    Ok(Json(views(&st, vec![r]).await?.remove(0)))
}

#[utoipa::path(post, path = "/admin/quota-requests/{id}/deny", tag = "admin",
    security(("adminToken" = [])),
    params(("id" = String, Path, description = "The request's id")),
    request_body(content = Option<Decision>, content_type = "application/json"),
    responses((status = 200, body = QuotaRequestView), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | NOT_FOUND | CONFLICT | TOO_LARGE | UNAVAILABLE }>))]
pub async fn deny_quota_request(
    State(st): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<QuotaRequestView>> {
    op.require_write()?;
    let id = path_id(&id)?;
    let req: Decision = input::body(body)?;
    if req.amount.is_some() {
        return Err(ApiError::invalid("amount", "仅用于批准"));
    }
    let note = text("note", req.note)?;
    let r =
        quota_requests::deny(st.store.as_ref(), id, note, &op.actor(), st.ledger.now_ms()).await?;
    Ok(Json(views(&st, vec![r]).await?.remove(0)))
}

/// The holder's two routes (under `/me`, with its session).
pub fn me_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(me_file_quota_request, me_quota_requests))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_quota_requests))
        .routes(routes!(approve_quota_request))
        .routes(routes!(deny_quota_request))
}
