//! The gateway's errors in OpenAI's shape, `{"error":{"message","type","param","code"}}`, so
//! the official SDKs raise the matching exception (401 → AuthenticationError, 429 →
//! RateLimitError, …). `OpenAiError` is both the body sent and the schema documented.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::problem::{Problem, with_retry_after};
use crate::gateway::call::CallError;

/// Errors of the gateway, in OpenAI's shape so OpenAI SDKs surface them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OpenAiError {
    pub error: OpenAiErrorBody,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OpenAiErrorBody {
    pub message: String,
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    #[schema(value_type = Option<String>)]
    pub param: Option<&'static str>,
    #[schema(value_type = Option<String>)]
    pub code: Option<&'static str>,
}

/// A refusal of the gateway: its status, its `Retry-After`, and its body.
#[derive(Debug, Clone)]
pub struct OaiError {
    pub status: StatusCode,
    pub retry_after: Option<u64>,
    pub body: OpenAiError,
}

impl OaiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            retry_after: None,
            body: OpenAiError {
                error: OpenAiErrorBody {
                    message: message.into(),
                    kind,
                    param: None,
                    code: Some(code),
                },
            },
        }
    }

    pub fn param(mut self, p: &'static str) -> Self {
        self.body.error.param = Some(p);
        self
    }

    pub fn retry_after(mut self, s: u64) -> Self {
        self.retry_after = Some(s);
        self
    }
}

/// OpenAI's error `type` for a status.
fn kind_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "invalid_request_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

impl From<Problem> for OaiError {
    fn from(p: Problem) -> Self {
        let status = p.status();
        let mut e = Self::new(status, kind_of(status), p.openai_code(), p.message());
        e.retry_after = p.retry_after();
        e
    }
}

impl From<&CallError> for OaiError {
    fn from(e: &CallError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
        let kind = match e {
            CallError::QuotaExceeded { .. } => "insufficient_quota",
            _ => kind_of(status),
        };
        let mut out = Self::new(status, kind, e.code(), e.message());
        out.body.error.param = e.param();
        out.retry_after = e.retry_after();
        out
    }
}

impl IntoResponse for OaiError {
    fn into_response(self) -> Response {
        with_retry_after(
            (self.status, axum::Json(self.body)).into_response(),
            self.retry_after,
        )
    }
}
