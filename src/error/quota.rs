//! The quota and admin APIs' errors, `{"error":{"code","message","details"}}`: `QuotaError`
//! is both the body sent and the schema documented. Messages never carry internals or
//! secrets.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::problem::{Problem, with_retry_after};
use crate::accounts::Scope;
use crate::ledger::LedgerError;
use crate::store::StoreError;

/// Errors of the quota and admin APIs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuotaError {
    pub error: QuotaErrorBody,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuotaErrorBody {
    /// `INVALID_REQUEST`, `UNAUTHORIZED`, `FORBIDDEN`, `KEY_DISABLED`, `KEY_EXPIRED`,
    /// `KEY_NOT_FOUND`, `NOT_FOUND`, `METHOD_NOT_ALLOWED`, `PAYLOAD_TOO_LARGE`,
    /// `QUOTA_EXCEEDED`, `RATE_LIMITED`, `INTERNAL_ERROR`, `UNAVAILABLE`,
    /// `UPSTREAM_NOT_FOUND`, `UPSTREAM_EXISTS`, `UPSTREAM_READ_ONLY`, `UPSTREAM_SEALED`.
    #[schema(value_type = String)]
    pub code: &'static str,
    pub message: String,
    /// `{field}` for `INVALID_REQUEST`; `{key, remaining, requested}` for `QUOTA_EXCEEDED`.
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

/// A refusal of the quota or admin API: its status, its `Retry-After`, and its body.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub retry_after: Option<u64>,
    /// Boxed: keeps `Result<_, ApiError>` small on the happy path.
    pub body: Box<QuotaError>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            retry_after: None,
            body: Box::new(QuotaError {
                error: QuotaErrorBody {
                    code,
                    message: message.into(),
                    details: None,
                },
            }),
        }
    }

    pub fn code(&self) -> &'static str {
        self.body.error.code
    }

    pub fn message(&self) -> &str {
        &self.body.error.message
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.body.error.details = Some(details);
        self
    }

    /// 400 naming the offending field.
    pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            format!("请求参数无效：{field} {problem}"),
        )
        .with_details(json!({ "field": field }))
    }

    pub fn malformed_json() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "请求参数无效：请求体不是合法的 JSON",
        )
    }

    pub fn unauthorized_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "API密钥无效或缺失",
        )
    }

    pub fn unauthorized_admin() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "管理员令牌无效或缺失",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    pub fn key_disabled() -> Self {
        Self::new(StatusCode::FORBIDDEN, "KEY_DISABLED", "API密钥已被禁用")
    }

    pub fn key_expired() -> Self {
        Self::new(StatusCode::FORBIDDEN, "KEY_EXPIRED", "API密钥已过期")
    }

    pub fn key_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "KEY_NOT_FOUND", "API密钥不存在")
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("请求体过大，上限 {limit} 字节"),
        )
        .with_details(json!({ "limit": limit }))
    }

    pub fn quota_exceeded(key_hint: &str, remaining: i64, requested: i64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "QUOTA_EXCEEDED",
            format!("配额不足，剩余配额：{remaining}，请求配额：{requested}"),
        )
        .with_details(json!({ "key": key_hint, "remaining": remaining, "requested": requested }))
    }

    /// The key could afford it, its user's or team's budget could not: the seed's code and
    /// shape, the message naming that budget and what it has left (`details.budget` says
    /// which: `user` or `team`).
    pub fn budget_exceeded(key_hint: &str, scope: Scope, remaining: i64, requested: i64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "QUOTA_EXCEEDED",
            format!(
                "配额不足，{}剩余：{remaining}，请求配额：{requested}",
                scope.label_zh()
            ),
        )
        .with_details(json!({
            "key": key_hint,
            "remaining": remaining,
            "requested": requested,
            "budget": scope.as_str(),
        }))
    }

    /// The key is usable, its user or team was disabled by an operator.
    pub fn owner_disabled(scope: Scope) -> Self {
        let msg = match scope {
            Scope::User => "API密钥所属用户已被停用",
            Scope::Team => "API密钥所属团队已被停用",
        };
        Self::new(StatusCode::FORBIDDEN, "KEY_DISABLED", msg)
            .with_details(json!({ "budget": scope.as_str() }))
    }

    pub fn upstream_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "UPSTREAM_NOT_FOUND", "上游不存在")
    }

    pub fn upstream_exists() -> Self {
        Self::new(StatusCode::CONFLICT, "UPSTREAM_EXISTS", "已有同名上游")
    }

    pub fn upstream_read_only() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "UPSTREAM_READ_ONLY",
            "该上游来自配置文件，只读：请修改配置文件",
        )
    }

    /// Stored secrets that cannot be opened (SECRETS_KEY missing or changed).
    pub fn upstream_sealed() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "UPSTREAM_SEALED",
            "无法解密该上游的密钥：请设置原来的 SECRETS_KEY，或同时重新填写 apiKeys 和 headers",
        )
    }

    pub fn not_found_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "接口不存在")
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "不支持的请求方法",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "服务器内部错误",
        )
    }

    pub fn unavailable() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "服务暂不可用",
        );
        e.retry_after = Some(1);
        e
    }

    /// Maps a ledger refusal for the key shown as `key_hint`.
    pub fn from_ledger(e: LedgerError, key_hint: &str) -> Self {
        match e {
            LedgerError::UnknownKey => Self::unauthorized_key(),
            LedgerError::Disabled => Self::key_disabled(),
            LedgerError::Expired => Self::key_expired(),
            LedgerError::QuotaExceeded {
                remaining,
                requested,
                budget: None,
            } => Self::quota_exceeded(key_hint, remaining, requested),
            LedgerError::QuotaExceeded {
                remaining,
                requested,
                budget: Some(scope),
            } => Self::budget_exceeded(key_hint, scope, remaining, requested),
            LedgerError::OwnerDisabled(scope) => Self::owner_disabled(scope),
            LedgerError::Unavailable => Self::unavailable(),
            LedgerError::Limited(w) => {
                let mut e = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RATE_LIMITED",
                    "请求过于频繁：超过请求数限制",
                );
                e.retry_after = Some(match w.kind {
                    crate::store::WindowKind::Minute => 60,
                    crate::store::WindowKind::Day => 3600,
                });
                e
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        crate::telemetry::log_limited("store_error", |suppressed| {
            tracing::error!(error = %e, suppressed, "store error");
        });
        match e {
            StoreError::Unavailable(_) => Self::unavailable(),
            StoreError::Other(_) => Self::internal(),
        }
    }
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        if let Problem::TooLarge(Some(limit)) = p {
            return Self::payload_too_large(limit);
        }
        let mut e = Self::new(p.status(), p.quota_code(), p.message());
        e.retry_after = p.retry_after();
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        with_retry_after(
            (self.status, axum::Json(self.body)).into_response(),
            self.retry_after,
        )
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// An extractor's refusal: written in the quota family here, and again in the family of
/// the route by its guard, which finds the problem in the answer's extensions.
impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut resp = ApiError::from(self).into_response();
        resp.extensions_mut().insert(self);
        resp
    }
}
