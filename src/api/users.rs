//! Users and teams over HTTP: `/admin/users`, `/admin/users/{id}`, `/admin/teams`,
//! `/admin/teams/{id}` (SPEC §9). The operations are `crate::useradmin`; a budget is the
//! same amount as a key's quota (points, or money in money mode).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::amount::Amount;
use super::extract::{JsonBody, Operator};
use super::input::{self, MAX_QUOTA};
use super::shapes::{object, present, present_object};
use crate::accounts::{Account, Scope};
use crate::error::QuotaRefusals;
use crate::error::refusals::*;
use crate::error::{ApiError, ApiResult};
use crate::keys::{KeyLimits, KeyStatus, Refill, status_of};
use crate::state::AppState;
use crate::timefmt::rfc3339;
use crate::useradmin::{AccountError, AccountPatch, new_user};

const DAY_MS: i64 = 86_400_000;

/// `POST /admin/users`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUserRequest {
    /// 1–64 characters, unique among users.
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    #[schema(max_length = 200)]
    pub contact: Option<String>,
    /// The user's own budget over all its keys (absent: unlimited).
    #[schema(value_type = Option<Amount>)]
    pub quota: Option<Amount>,
    #[serde(default, deserialize_with = "object")]
    pub refill: Option<Refill>,
    /// `rpm`, `tpm`, `dailyRequests`, `maxConcurrent` over all the user's keys together.
    #[serde(default, deserialize_with = "object")]
    pub limits: Option<KeyLimits>,
    /// The team whose budget the user also draws from.
    pub team_id: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    pub enabled: Option<bool>,
    /// Whether a holder of one of the user's keys sees the user's other keys on `/me`.
    pub show_keys: Option<bool>,
}

/// `POST /admin/teams`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTeamRequest {
    /// 1–64 characters, unique among teams.
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    /// The budget all the team's users share (each user's own budget is its cap inside).
    #[schema(value_type = Option<Amount>)]
    pub quota: Option<Amount>,
    #[serde(default, deserialize_with = "object")]
    pub refill: Option<Refill>,
    #[serde(default, deserialize_with = "object")]
    pub limits: Option<KeyLimits>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    pub enabled: Option<bool>,
}

/// `PATCH /admin/users/{id}` and `/admin/teams/{id}`: absent fields stay, `null` clears.
/// `contact`, `teamId` and `showKeys` are for users only.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchAccountRequest {
    #[schema(min_length = 1, max_length = 64)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 200)]
    pub contact: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Amount>)]
    pub quota: Option<Option<Amount>>,
    #[serde(default, deserialize_with = "present_object")]
    #[schema(value_type = Option<Refill>)]
    pub refill: Option<Option<Refill>>,
    #[serde(default, deserialize_with = "object")]
    pub limits: Option<KeyLimits>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub team_id: Option<Option<i64>>,
    #[serde(default, deserialize_with = "object")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    pub enabled: Option<bool>,
    pub show_keys: Option<bool>,
    /// `true`: what was used goes back to 0.
    pub reset_used: Option<bool>,
}

/// One of a user's keys, in the user's view.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserKey {
    pub id: i64,
    /// Display hint.
    pub key: String,
    pub name: Option<String>,
    pub quota: Option<Amount>,
    pub used: Amount,
    pub remaining: Option<Amount>,
    pub status: KeyStatus,
}

/// A member of a team, in the team's view.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamMember {
    pub id: i64,
    pub name: String,
    pub quota: Option<Amount>,
    pub used: Amount,
    pub remaining: Option<Amount>,
    pub enabled: bool,
}

/// What a user's (or team's) keys consumed on one UTC day.
#[derive(Debug, Serialize, ToSchema)]
pub struct DayUsage {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub amount: Amount,
}

/// A user or a team (`kind`), with its budget as it stands now (a due refill applied).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    pub id: i64,
    /// `user` or `team`.
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_name: Option<String>,
    pub enabled: bool,
    /// `active`, `disabled` or `exhausted`.
    pub status: String,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub quota: Option<Amount>,
    pub used: Amount,
    pub remaining: Option<Amount>,
    pub refill: Option<Refill>,
    pub limits: KeyLimits,
    pub show_keys: bool,
    pub created_at: String,
    /// Users: how many keys; teams: how many users.
    pub members: usize,
    /// Users only, on `GET /admin/users/{id}` and in lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<UserKey>>,
    /// Teams only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<TeamMember>>,
    /// The last 30 UTC days, on `GET …/{id}` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Vec<DayUsage>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountList {
    pub items: Vec<AccountView>,
    pub total: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedAccount {
    pub success: bool,
    pub id: i64,
}

/// `GET /admin/users` and `/admin/teams` filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccountQuery {
    /// Matches the name, contact or id.
    pub q: Option<String>,
    /// Users of this team only.
    #[serde(rename = "teamId", default, deserialize_with = "crate::lenient::int")]
    #[param(minimum = 0, maximum = 4000000000000000000_i64)]
    pub team_id: Option<i64>,
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::NotFound(Scope::User) => {
                ApiError::new(StatusCode::NOT_FOUND, "USER_NOT_FOUND", "用户不存在")
            }
            AccountError::NotFound(Scope::Team) => {
                ApiError::new(StatusCode::NOT_FOUND, "TEAM_NOT_FOUND", "团队不存在")
            }
            AccountError::NameTaken(Scope::User) => {
                ApiError::new(StatusCode::CONFLICT, "USER_EXISTS", "已有同名用户")
            }
            AccountError::NameTaken(Scope::Team) => {
                ApiError::new(StatusCode::CONFLICT, "TEAM_EXISTS", "已有同名团队")
            }
            AccountError::InUse(Scope::User) => ApiError::new(
                StatusCode::CONFLICT,
                "USER_IN_USE",
                "该用户仍有密钥：请先删除这些密钥或把它们移给其他用户",
            ),
            AccountError::InUse(Scope::Team) => ApiError::new(
                StatusCode::CONFLICT,
                "TEAM_IN_USE",
                "该团队仍有用户：请先把这些用户移出团队",
            ),
            AccountError::UnknownTeam => ApiError::invalid("teamId", "团队不存在"),
            AccountError::UnknownUser => ApiError::invalid("userId", "用户不存在"),
            AccountError::InvalidName => {
                ApiError::invalid("name", "必须是 1 到 64 个字符，不含控制字符")
            }
            AccountError::Store(e) => e.into(),
        }
    }
}

fn check_refill(refill: Option<&Refill>) -> ApiResult<()> {
    match refill {
        Some(r) if !(0..=MAX_QUOTA).contains(&r.amount) => {
            Err(ApiError::invalid("refill.amount", "必须是非负整数"))
        }
        _ => Ok(()),
    }
}

fn status(a: &Account, now: i64) -> &'static str {
    if !a.enabled {
        "disabled"
    } else if a.counters(now).remaining().is_some_and(|r| r <= 0) {
        "exhausted"
    } else {
        "active"
    }
}

fn view(a: &Account, now: i64) -> AccountView {
    let c = a.counters(now);
    AccountView {
        id: a.id,
        kind: a.scope.as_str().to_owned(),
        name: a.name.clone(),
        contact: a.contact.clone(),
        team_id: a.team_id,
        team_name: None,
        enabled: a.enabled,
        status: status(a, now).to_owned(),
        metadata: a.metadata.clone(),
        quota: c.quota.map(Amount),
        used: Amount(c.used),
        remaining: c.remaining().map(|r| Amount(r.max(0))),
        refill: a.refill,
        limits: a.limits.clone(),
        show_keys: a.show_keys,
        created_at: rfc3339(a.created_at),
        members: 0,
        keys: None,
        users: None,
        usage: None,
    }
}

/// The id in the path: digits only (`/admin/users/%201` is not user 1).
fn path_id(scope: Scope, id: &str) -> ApiResult<i64> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AccountError::NotFound(scope).into());
    }
    id.parse::<i64>()
        .map_err(|_| AccountError::NotFound(scope).into())
}

/// Users with their keys and team names, or teams with their users, as the list shows.
async fn full_views(
    st: &AppState,
    scope: Scope,
    only: Option<i64>,
    q: &AccountQuery,
) -> ApiResult<Vec<AccountView>> {
    let now = st.ledger.now_ms();
    let all = st.store.accounts().await?;
    let keys = st.keys.all().await?;
    let needle = q.q.as_deref().map(|s| s.trim().to_lowercase());
    let mut out = Vec::new();
    for a in all.iter().filter(|a| a.scope == scope) {
        if only.is_some_and(|id| id != a.id)
            || q.team_id.is_some_and(|t| a.team_id != Some(t))
            || needle.as_deref().is_some_and(|n| {
                !a.name.to_lowercase().contains(n)
                    && !a
                        .contact
                        .as_deref()
                        .unwrap_or("")
                        .to_lowercase()
                        .contains(n)
                    && a.id.to_string() != n
            })
        {
            continue;
        }
        let mut v = view(a, now);
        match scope {
            Scope::User => {
                v.team_name = a
                    .team_id
                    .and_then(|t| all.iter().find(|t2| t2.id == t))
                    .map(|t| t.name.clone());
                let mine: Vec<UserKey> = keys
                    .iter()
                    .filter(|k| k.owner.as_ref().and_then(|o| o.user_id) == Some(a.id))
                    .map(|k| {
                        let c = crate::keys::effective_counters(k, now);
                        UserKey {
                            id: k.id,
                            key: k.hint.clone(),
                            name: k.name.clone(),
                            quota: c.quota.map(Amount),
                            used: Amount(c.used),
                            remaining: c.remaining().map(|r| Amount(r.max(0))),
                            status: status_of(k, now),
                        }
                    })
                    .collect();
                v.members = mine.len();
                v.keys = Some(mine);
            }
            Scope::Team => {
                let members: Vec<TeamMember> = all
                    .iter()
                    .filter(|u| u.scope == Scope::User && u.team_id == Some(a.id))
                    .map(|u| {
                        let c = u.counters(now);
                        TeamMember {
                            id: u.id,
                            name: u.name.clone(),
                            quota: c.quota.map(Amount),
                            used: Amount(c.used),
                            remaining: c.remaining().map(|r| Amount(r.max(0))),
                            enabled: u.enabled,
                        }
                    })
                    .collect();
                v.members = members.len();
                v.users = Some(members);
            }
        }
        out.push(v);
    }
    Ok(out)
}

async fn list(st: &AppState, scope: Scope, q: &AccountQuery) -> ApiResult<Json<AccountList>> {
    input::in_range("teamId", q.team_id, 0, 4_000_000_000_000_000_000)?;
    let items = full_views(st, scope, None, q).await?;
    Ok(Json(AccountList {
        total: items.len(),
        items,
    }))
}

async fn one(st: &AppState, scope: Scope, id: &str) -> ApiResult<Json<AccountView>> {
    let id = path_id(scope, id)?;
    let mut v = full_views(st, scope, Some(id), &AccountQuery::default())
        .await?
        .pop()
        .ok_or(AccountError::NotFound(scope))?;
    let now = st.ledger.now_ms();
    let since = (now.div_euclid(DAY_MS) - 29) * DAY_MS;
    let days = st.store.account_daily_usage(scope, id, since).await?;
    v.usage = Some(
        days.into_iter()
            .map(|(day, amount)| DayUsage {
                day: rfc3339(day)[..10].to_owned(),
                amount: Amount(amount),
            })
            .collect(),
    );
    Ok(Json(v))
}

/// A user's or team's limits count calls and tokens over all its keys; which models and
/// addresses a call may use stays a key's own setting.
fn check_limits(limits: Option<&KeyLimits>) -> ApiResult<()> {
    match limits {
        Some(l) if l.models.is_some() => Err(ApiError::invalid(
            "limits.models",
            "用户和团队的 limits 只支持 rpm、tpm、dailyRequests、maxConcurrent（模型限制请设在密钥上）",
        )),
        Some(l) if l.ips.is_some() => Err(ApiError::invalid(
            "limits.ips",
            "用户和团队的 limits 只支持 rpm、tpm、dailyRequests、maxConcurrent（IP 限制请设在密钥上）",
        )),
        _ => Ok(()),
    }
}

fn budget_of(
    quota: Option<Amount>,
    refill: Option<&Refill>,
    metadata: Option<&Map<String, Value>>,
) -> ApiResult<Option<i64>> {
    check_refill(refill)?;
    input::metadata_size("metadata", metadata)?;
    input::amount_in_range("quota", quota, 0, MAX_QUOTA)
}

#[utoipa::path(post, path = "/admin/users", tag = "admin",
    security(("adminToken" = [])),
    request_body(content = CreateUserRequest, content_type = "application/json"),
    responses((status = 201, body = AccountView), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | CONFLICT | TOO_LARGE | UNAVAILABLE }>))]
pub async fn create_user(
    State(st): State<AppState>,
    op: Operator,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<AccountView>)> {
    op.require_write()?;
    let req: CreateUserRequest = input::body(body)?;
    input::max_chars("contact", req.contact.as_deref(), 200)?;
    check_limits(req.limits.as_ref())?;
    let mut a = new_user(0, req.name);
    a.quota = budget_of(req.quota, req.refill.as_ref(), req.metadata.as_ref())?;
    a.contact = req.contact;
    a.refill = req.refill;
    a.limits = req.limits.unwrap_or_default();
    a.team_id = req.team_id;
    a.metadata = req.metadata.unwrap_or_default();
    a.enabled = req.enabled.unwrap_or(true);
    a.show_keys = req.show_keys.unwrap_or(false);
    let made = st.users.create(a, &op.actor()).await?;
    let v = one(&st, Scope::User, &made.id.to_string()).await?;
    Ok((StatusCode::CREATED, v))
}

#[utoipa::path(post, path = "/admin/teams", tag = "admin",
    security(("adminToken" = [])),
    request_body(content = CreateTeamRequest, content_type = "application/json"),
    responses((status = 201, body = AccountView), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | CONFLICT | TOO_LARGE | UNAVAILABLE }>))]
pub async fn create_team(
    State(st): State<AppState>,
    op: Operator,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<AccountView>)> {
    op.require_write()?;
    let req: CreateTeamRequest = input::body(body)?;
    check_limits(req.limits.as_ref())?;
    let mut a = new_user(0, req.name);
    a.scope = Scope::Team;
    a.quota = budget_of(req.quota, req.refill.as_ref(), req.metadata.as_ref())?;
    a.refill = req.refill;
    a.limits = req.limits.unwrap_or_default();
    a.metadata = req.metadata.unwrap_or_default();
    a.enabled = req.enabled.unwrap_or(true);
    let made = st.users.create(a, &op.actor()).await?;
    let v = one(&st, Scope::Team, &made.id.to_string()).await?;
    Ok((StatusCode::CREATED, v))
}

/// Every user with its budget as it stands, its keys and its team.
#[utoipa::path(get, path = "/admin/users", tag = "admin",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(AccountQuery),
    responses((status = 200, body = AccountList), QuotaRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn list_users(
    State(st): State<AppState>,
    _op: Operator,
    Query(q): Query<AccountQuery>,
) -> ApiResult<Json<AccountList>> {
    list(&st, Scope::User, &q).await
}

/// Every team with its budget as it stands and its users.
#[utoipa::path(get, path = "/admin/teams", tag = "admin",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(AccountQuery),
    responses((status = 200, body = AccountList), QuotaRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn list_teams(
    State(st): State<AppState>,
    _op: Operator,
    Query(q): Query<AccountQuery>,
) -> ApiResult<Json<AccountList>> {
    list(&st, Scope::Team, &q).await
}

/// One user: budget (`used`, `remaining`), keys, team, and what its keys consumed a day
/// over the last 30 days.
#[utoipa::path(get, path = "/admin/users/{id}", tag = "admin",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(("id" = String, Path, description = "The user's id")),
    responses((status = 200, body = AccountView), QuotaRefusals<{ AUTH | NOT_FOUND | UNAVAILABLE }>))]
pub async fn get_user(
    State(st): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<AccountView>> {
    one(&st, Scope::User, &id).await
}

#[utoipa::path(get, path = "/admin/teams/{id}", tag = "admin",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(("id" = String, Path, description = "The team's id")),
    responses((status = 200, body = AccountView), QuotaRefusals<{ AUTH | NOT_FOUND | UNAVAILABLE }>))]
pub async fn get_team(
    State(st): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<AccountView>> {
    one(&st, Scope::Team, &id).await
}

async fn patch(
    st: &AppState,
    op: &Operator,
    scope: Scope,
    id: &str,
    body: Option<Value>,
) -> ApiResult<Json<AccountView>> {
    op.require_write()?;
    let id = path_id(scope, id)?;
    let req: PatchAccountRequest = input::body(body)?;
    if scope == Scope::Team {
        for (field, set) in [
            ("contact", req.contact.is_some()),
            ("teamId", req.team_id.is_some()),
            ("showKeys", req.show_keys.is_some()),
        ] {
            if set {
                return Err(ApiError::invalid(field, "仅用于用户，团队没有此字段"));
            }
        }
    }
    input::max_chars(
        "contact",
        req.contact.as_ref().and_then(|c| c.as_deref()),
        200,
    )?;
    let quota = req
        .quota
        .map(|q| input::amount_in_range("quota", q, 0, MAX_QUOTA))
        .transpose()?;
    check_refill(req.refill.as_ref().and_then(|r| r.as_ref()))?;
    check_limits(req.limits.as_ref())?;
    input::metadata_size("metadata", req.metadata.as_ref())?;
    let p = AccountPatch {
        name: req.name,
        contact: req.contact,
        team_id: req.team_id,
        enabled: req.enabled,
        metadata: req.metadata,
        quota,
        refill: req.refill,
        limits: req.limits,
        show_keys: req.show_keys,
        reset_used: req.reset_used.unwrap_or(false),
    };
    st.users.update(scope, id, p, &op.actor()).await?;
    one(st, scope, &id.to_string()).await
}

#[utoipa::path(patch, path = "/admin/users/{id}", tag = "admin",
    security(("adminToken" = [])),
    params(("id" = String, Path, description = "The user's id")),
    request_body(content = PatchAccountRequest, content_type = "application/json"),
    responses((status = 200, body = AccountView), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | NOT_FOUND | CONFLICT | TOO_LARGE | UNAVAILABLE }>))]
pub async fn patch_user(
    State(st): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<AccountView>> {
    patch(&st, &op, Scope::User, &id, body).await
}

#[utoipa::path(patch, path = "/admin/teams/{id}", tag = "admin",
    security(("adminToken" = [])),
    params(("id" = String, Path, description = "The team's id")),
    request_body(content = PatchAccountRequest, content_type = "application/json"),
    responses((status = 200, body = AccountView), QuotaRefusals<{ BAD | AUTH | FORBIDDEN | NOT_FOUND | CONFLICT | TOO_LARGE | UNAVAILABLE }>))]
pub async fn patch_team(
    State(st): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<AccountView>> {
    patch(&st, &op, Scope::Team, &id, body).await
}

async fn delete(
    st: &AppState,
    op: &Operator,
    scope: Scope,
    id: &str,
) -> ApiResult<Json<DeletedAccount>> {
    op.require_write()?;
    let id = path_id(scope, id)?;
    st.users.delete(scope, id, &op.actor()).await?;
    Ok(Json(DeletedAccount { success: true, id }))
}

/// Deletes a user without keys (409 `USER_IN_USE` while it has some).
#[utoipa::path(delete, path = "/admin/users/{id}", tag = "admin",
    security(("adminToken" = [])),
    params(("id" = String, Path, description = "The user's id")),
    responses((status = 200, body = DeletedAccount), QuotaRefusals<{ AUTH | FORBIDDEN | NOT_FOUND | CONFLICT | UNAVAILABLE }>))]
pub async fn delete_user(
    State(st): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<DeletedAccount>> {
    delete(&st, &op, Scope::User, &id).await
}

/// Deletes a team without users (409 `TEAM_IN_USE` while it has some).
#[utoipa::path(delete, path = "/admin/teams/{id}", tag = "admin",
    security(("adminToken" = [])),
    params(("id" = String, Path, description = "The team's id")),
    responses((status = 200, body = DeletedAccount), QuotaRefusals<{ AUTH | FORBIDDEN | NOT_FOUND | CONFLICT | UNAVAILABLE }>))]
pub async fn delete_team(
    State(st): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<DeletedAccount>> {
    delete(&st, &op, Scope::Team, &id).await
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user, list_users))
        .routes(routes!(get_user, patch_user, delete_user))
        .routes(routes!(create_team, list_teams))
        .routes(routes!(get_team, patch_team, delete_team))
}
