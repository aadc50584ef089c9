//! The API families that write errors. Each router says which family it belongs to (`app.rs`), so a refusal is
//! written the way that route's clients read errors; only a path that matches no route is
//! placed by its prefix, as there is nothing else to go by.

use axum::response::{IntoResponse, Response};

use super::anthropic::AnthError;
use super::monitor::MonitorErrorBody;
use super::openai::OaiError;
use super::problem::Problem;
use super::quota::ApiError;

/// Who reads a route's errors, and so the shape they are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `/api/v1/*`, `/admin/*`, the dashboard's own routes: `{"error":{"code","message","details"}}`.
    Quota,
    /// The gateway: OpenAI's `{"error":{"message","type","param","code"}}`.
    OpenAi,
    /// The monitor seed's `{"error","code","timestamp"}`.
    Monitor,
    /// Anthropic Messages: `{"type":"error","error":{"type","message"}}`.
    Anthropic,
}

impl Family {
    /// The family of a path no route matched.
    pub fn of_unmatched(path: &str) -> Self {
        if path.starts_with("/v1/messages") {
            Family::Anthropic
        } else if path.starts_with("/v1/") || path == "/v1" {
            Family::OpenAi
        } else if path.starts_with("/api/") && !path.starts_with("/api/v1/") {
            Family::Monitor
        } else {
            Family::Quota
        }
    }

    pub fn render(self, p: Problem) -> Response {
        match self {
            Family::Quota => ApiError::from(p).into_response(),
            Family::OpenAi => OaiError::from(p).into_response(),
            Family::Monitor => MonitorErrorBody::from(p).into_response(),
            Family::Anthropic => AnthError::from(p).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmatched_paths_by_prefix() {
        assert_eq!(Family::of_unmatched("/v1/nope"), Family::OpenAi);
        assert_eq!(Family::of_unmatched("/v1"), Family::OpenAi);
        assert_eq!(Family::of_unmatched("/api/stats/nope"), Family::Monitor);
        assert_eq!(Family::of_unmatched("/api/v1/nope"), Family::Quota);
        assert_eq!(Family::of_unmatched("/admin/nope"), Family::Quota);
    }
}
