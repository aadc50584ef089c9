//! The Messages route's errors in Anthropic's shape, `{"type":"error","error":{"type",
//! "message"}}`, so the Anthropic SDKs raise the matching exception (401 →
//! AuthenticationError, 429 → RateLimitError, 529/503 → OverloadedError…).
//! `AnthropicError` is both the body sent and the schema documented.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::problem::{Problem, with_retry_after};
use crate::gateway::anthropic::error_type;
use crate::gateway::call::CallError;

/// Errors of the Messages route, in Anthropic's shape.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AnthropicError {
    /// Always `error`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    pub error: AnthropicErrorBody,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AnthropicErrorBody {
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `rate_limit_error`, `api_error`, `overloaded_error`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    pub message: String,
}

/// A refusal of the Messages route: its status, its `Retry-After`, and its body.
#[derive(Debug, Clone)]
pub struct AnthError {
    pub status: StatusCode,
    pub retry_after: Option<u64>,
    pub body: AnthropicError,
}

impl AnthError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            retry_after: None,
            body: AnthropicError {
                kind: "error",
                error: AnthropicErrorBody {
                    kind: error_type(status.as_u16()),
                    message: message.into(),
                },
            },
        }
    }
}

impl From<Problem> for AnthError {
    fn from(p: Problem) -> Self {
        let mut e = Self::new(p.status(), p.message());
        e.retry_after = p.retry_after();
        e
    }
}

impl From<&CallError> for AnthError {
    fn from(e: &CallError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut out = Self::new(status, e.message());
        out.retry_after = e.retry_after();
        out
    }
}

impl IntoResponse for AnthError {
    fn into_response(self) -> Response {
        with_retry_after(
            (self.status, axum::Json(self.body)).into_response(),
            self.retry_after,
        )
    }
}
