//! Invite codes over HTTP: `/admin/invites` (create, list), `/admin/invites/{code}` (read,
//! revoke) and `POST /me/redeem` (a code → a new key, shown once). The operations are
//! `crate::invites`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::amount::Amount;
use super::extract::{JsonBody, Operator};
use super::input::{self, MAX_QUOTA};
use crate::auth::Origin;
use crate::error::QuotaRefusals;
use crate::error::refusals::*;
use crate::error::{ApiError, ApiResult};
use crate::invites::{self, InviteError, InviteTemplate};
use crate::keys::{KeyLimits, is_valid_prefix};
use crate::state::AppState;
use crate::store::{AuditFilter, InviteRecord};
use crate::timefmt::{parse_instant, rfc3339, rfc3339_opt};

/// `POST /admin/invites`: the template of the keys the code makes, and how often.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateInviteRequest {
    /// Each key's quota (absent: unlimited).
    #[schema(value_type = Option<Amount>)]
    pub quota: Option<Amount>,
    /// Each key's expiry: RFC 3339 or `YYYY-MM-DD`.
    pub expires_at: Option<String>,
    #[serde(default, deserialize_with = "super::shapes::object")]
    pub limits: Option<KeyLimits>,
    /// Model globs the keys may use (the same as `limits.models`).
    pub models: Option<Vec<String>>,
    /// The user every key made belongs to.
    pub user_id: Option<i64>,
    /// Each redemption makes a new user in this team (not with `userId`).
    pub team_id: Option<i64>,
    /// Redemptions allowed (1–10 000, default 1).
    #[schema(minimum = 1, maximum = 10000)]
    pub uses: Option<i64>,
    /// Until when the code can be redeemed: RFC 3339 or `YYYY-MM-DD`.
    pub valid_until: Option<String>,
    #[schema(pattern = "^[A-Za-z0-9]{1,16}$")]
    pub prefix: Option<String>,
    #[schema(max_length = 200)]
    pub name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Redemption {
    pub key_id: Option<i64>,
    pub key: Option<String>,
    pub at: String,
    pub client_ip: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InviteView {
    pub id: i64,
    /// The code itself: only in the answer that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub hint: String,
    pub quota: Option<Amount>,
    pub expires_at: Option<String>,
    pub limits: KeyLimits,
    pub prefix: Option<String>,
    pub user_id: Option<i64>,
    pub team_id: Option<i64>,
    pub uses: i64,
    pub used: i64,
    pub remaining: i64,
    pub valid_until: Option<String>,
    pub created_at: String,
    /// Only on `GET /admin/invites/{code}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redemptions: Option<Vec<Redemption>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InviteList {
    pub invites: Vec<InviteView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    #[schema(min_length = 1, max_length = 200)]
    pub code: String,
}

/// The new key, shown this once.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Redeemed {
    pub key: String,
    pub id: i64,
    pub quota: Option<Amount>,
    pub expires_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedInvite {
    pub success: bool,
    pub id: i64,
}

fn view(r: &InviteRecord) -> InviteView {
    let t: InviteTemplate = serde_json::from_str(&r.spec).unwrap_or_default();
    InviteView {
        id: r.id,
        code: None,
        hint: r.hint.clone(),
        quota: t.quota.map(Amount),
        expires_at: rfc3339_opt(t.expires_at),
        limits: t.limits,
        prefix: t.prefix,
        user_id: t.owner.and_then(|o| o.user_id),
        team_id: t.team_id,
        uses: r.uses,
        used: r.used,
        remaining: (r.uses - r.used).max(0),
        valid_until: rfc3339_opt(r.valid_until),
        created_at: rfc3339(r.created_ms),
        redemptions: None,
    }
}

fn instant(field: &str, v: Option<&str>) -> ApiResult<Option<i64>> {
    v.map(|s| {
        parse_instant(s, true)
            .ok_or_else(|| ApiError::invalid(field, "必须是 RFC 3339 时间或 YYYY-MM-DD 日期"))
    })
    .transpose()
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "INVITE_NOT_FOUND", "邀请码不存在")
}

/// The invite named by its id or its full code.
async fn find(st: &AppState, code: &str) -> ApiResult<InviteRecord> {
    let found = match code.parse::<i64>() {
        Ok(id) => st.store.invite(id).await?,
        Err(_) => st.store.invite_by_hash(&invites::code_hash(code)).await?,
    };
    found.ok_or_else(not_found)
}

/// Makes an invite code (shown this once): whoever redeems it gets a new key made from the
/// template, at most `uses` times, until `validUntil`.
#[utoipa::path(post, path = "/admin/invites", tag = "admin",
    security(("adminToken" = [])),
    request_body(content = Option<CreateInviteRequest>, content_type = "application/json"),
    responses((status = 201, body = InviteView), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | TOO_LARGE | UNAVAILABLE }>))]
pub async fn create_invite(
    State(st): State<AppState>,
    op: Operator,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<InviteView>)> {
    op.require_write()?;
    let req: CreateInviteRequest = input::body(body)?;
    let prefix = req.prefix.unwrap_or_else(|| st.config.key_prefix.clone());
    if !is_valid_prefix(&prefix) {
        return Err(ApiError::invalid("prefix", "必须是 1 到 16 个字母或数字"));
    }
    input::max_chars("name", req.name.as_deref(), 200)?;
    let now = st.ledger.now_ms();
    let uses = input::in_range("uses", req.uses, 1, 10_000)?.unwrap_or(1);
    let valid_until = instant("validUntil", req.valid_until.as_deref())?;
    if valid_until.is_some_and(|v| v <= now) {
        return Err(ApiError::invalid("validUntil", "必须晚于当前时间"));
    }
    let mut limits = req.limits.unwrap_or_default();
    if let Some(m) = req.models {
        limits.models = Some(m);
    }
    let template = InviteTemplate {
        quota: input::amount_in_range("quota", req.quota, 0, MAX_QUOTA)?,
        expires_at: instant("expiresAt", req.expires_at.as_deref())?,
        limits,
        prefix: Some(prefix),
        owner: match req.user_id {
            Some(id) => Some(st.users.owner_by_id(id).await?),
            None => None,
        },
        name: req.name,
        team_id: match (req.user_id, req.team_id) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid("teamId", "不能与 userId 同时给出"));
            }
            (None, Some(t)) => {
                st.users
                    .get(crate::accounts::Scope::Team, t)
                    .await
                    .map_err(|_| ApiError::invalid("teamId", "团队不存在"))?;
                Some(t)
            }
            _ => None,
        },
    };
    let (code, id) = invites::create(
        st.store.as_ref(),
        &template,
        uses,
        valid_until,
        &op.actor(),
        now,
    )
    .await?;
    let rec = st.store.invite(id).await?.ok_or_else(not_found)?;
    let mut v = view(&rec);
    v.code = Some(code);
    Ok((StatusCode::CREATED, Json(v)))
}

#[utoipa::path(get, path = "/admin/invites", tag = "admin",
    security(("adminToken" = []), ("viewerToken" = [])),
    responses((status = 200, body = InviteList), QuotaRefusals<{ AUTH | UNAVAILABLE }>))]
pub async fn list_invites(
    State(st): State<AppState>,
    _op: Operator,
) -> ApiResult<Json<InviteList>> {
    let rows = st.store.invites().await?;
    Ok(Json(InviteList {
        invites: rows.iter().map(view).collect(),
    }))
}

/// One invite and every redemption of it (the key made, when, from where).
#[utoipa::path(get, path = "/admin/invites/{code}", tag = "admin",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(("code" = String, Path, description = "The invite's id or its full code")),
    responses((status = 200, body = InviteView), QuotaRefusals<{ AUTH | NOT_FOUND | UNAVAILABLE }>))]
pub async fn get_invite(
    State(st): State<AppState>,
    _op: Operator,
    Path(code): Path<String>,
) -> ApiResult<Json<InviteView>> {
    let rec = find(&st, &code).await?;
    let filter = AuditFilter {
        action: Some("invite.redeem".into()),
        target: Some(format!("invite:{}", rec.id)),
        ..AuditFilter::default()
    };
    let (rows, _) = st.store.audit(&filter, 1000, 0).await?;
    let mut v = view(&rec);
    v.redemptions = Some(
        rows.iter()
            .map(|e| {
                let d = e.record.details.clone().unwrap_or_default();
                Redemption {
                    key_id: d["keyId"].as_i64(),
                    key: d["key"].as_str().map(str::to_owned),
                    at: rfc3339(e.record.ts),
                    client_ip: e.record.client_ip.clone(),
                }
            })
            .collect(),
    );
    Ok(Json(v))
}

/// Revokes a code (keys already made stay).
#[utoipa::path(delete, path = "/admin/invites/{code}", tag = "admin",
    security(("adminToken" = [])),
    params(("code" = String, Path, description = "The invite's id or its full code")),
    responses((status = 200, body = DeletedInvite), QuotaRefusals<{ AUTH | FORBIDDEN | NOT_FOUND | UNAVAILABLE }>))]
pub async fn delete_invite(
    State(st): State<AppState>,
    op: Operator,
    Path(code): Path<String>,
) -> ApiResult<Json<DeletedInvite>> {
    op.require_write()?;
    let rec = find(&st, &code).await?;
    if !invites::revoke(st.store.as_ref(), rec.id, &op.actor(), st.ledger.now_ms()).await? {
        return Err(not_found());
    }
    Ok(Json(DeletedInvite {
        success: true,
        id: rec.id,
    }))
}

/// An invite code → a new key, shown this once. Unknown codes count as wrong credentials
/// (401); a client address redeems at most 5 codes an hour (429).
#[utoipa::path(post, path = "/me/redeem", tag = "self-service",
    request_body(content = RedeemRequest, content_type = "application/json"),
    responses((status = 200, body = Redeemed), QuotaRefusals<{ BAD | AUTH | CONFLICT | LIMITED | TOO_LARGE | UNAVAILABLE }>))]
pub async fn redeem(
    State(st): State<AppState>,
    origin: Option<axum::Extension<Origin>>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Redeemed>> {
    let req: RedeemRequest = input::body(body)?;
    let code = req.code.trim();
    if code.is_empty() || code.len() > 200 {
        return Err(ApiError::invalid("code", "长度必须为 1 到 200 个字符"));
    }
    let ip = origin.as_ref().and_then(|o| o.ip);
    let now = st.ledger.now_ms();
    match invites::redeem(
        st.store.as_ref(),
        (&st.keys, &st.users),
        &st.redemptions,
        code,
        ip,
        now,
    )
    .await
    {
        Ok((issued, _)) => {
            st.ledger.refresh(issued.record.clone()).await;
            Ok(Json(Redeemed {
                key: issued.full,
                id: issued.record.id,
                quota: issued.record.quota.map(Amount),
                expires_at: rfc3339_opt(issued.record.expires_at),
            }))
        }
        Err(InviteError::Unknown) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "INVITE_INVALID",
            "邀请码无效",
        )),
        Err(InviteError::Exhausted) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "INVITE_USED_UP",
            "邀请码已用完",
        )),
        Err(InviteError::Expired) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "INVITE_EXPIRED",
            "邀请码已过期",
        )),
        Err(InviteError::TooMany) => {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                "兑换过于频繁，请稍后再试",
            );
            e.retry_after = Some(3600);
            Err(e)
        }
        Err(InviteError::Store(e)) => Err(e.into()),
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_invite, list_invites))
        .routes(routes!(get_invite, delete_invite))
        .routes(routes!(redeem))
}
