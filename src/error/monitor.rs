//! The monitor API's errors in the seed's shape, `{"error","code","timestamp"}`:
//! `MonitorErrorBody` is both the body sent and the schema documented.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::problem::{Problem, with_retry_after};
use crate::monitor::MonitorError;

/// Errors of the monitor API, in the seed's shape.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = MonitorError)]
pub struct MonitorErrorBody {
    pub error: String,
    /// The HTTP status again.
    pub code: u16,
    /// RFC 3339, UTC.
    pub timestamp: String,
    #[serde(skip)]
    retry_after: Option<u64>,
}

impl MonitorErrorBody {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            error: message.into(),
            code: status.as_u16(),
            timestamp: crate::timefmt::rfc3339(chrono::Utc::now().timestamp_millis()),
            retry_after: None,
        }
    }
}

impl From<Problem> for MonitorErrorBody {
    fn from(p: Problem) -> Self {
        let message = match p {
            Problem::Unauthorized => "未授权：需要管理员或只读令牌".to_owned(),
            _ => p.message(),
        };
        let mut b = Self::new(p.status(), message);
        b.retry_after = p.retry_after();
        b
    }
}

impl From<&MonitorError> for MonitorErrorBody {
    fn from(e: &MonitorError) -> Self {
        match e {
            MonitorError::Bad(m) => Self::new(StatusCode::BAD_REQUEST, m.clone()),
            MonitorError::Unauthorized(m) => Self::new(StatusCode::UNAUTHORIZED, m.clone()),
            MonitorError::Unavailable(e) | MonitorError::Config(e) => {
                tracing::warn!(error = %e, "monitor source error");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "服务不可用")
            }
        }
    }
}

impl IntoResponse for MonitorErrorBody {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        with_retry_after((status, axum::Json(self)).into_response(), retry_after)
    }
}

impl IntoResponse for MonitorError {
    fn into_response(self) -> Response {
        MonitorErrorBody::from(&self).into_response()
    }
}
