//! Refusals that any route can meet before its handler speaks (no such route or method, a
//! body too large, a wrong content type, a time limit), in no family's words yet: each
//! family's error type is `From<Problem>`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

/// A refusal of the framework's or of the server as a whole, in no family's words yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    NotFound,
    MethodNotAllowed,
    /// No operator credentials, or wrong ones.
    Unauthorized,
    /// A viewer token (or session) asked to write.
    ReadOnly,
    /// A write made with the dashboard's session cookie but without `X-QP-CSRF`.
    MissingCsrf,
    Timeout,
    /// A body over the route's limit (known when the server refused it itself).
    TooLarge(Option<usize>),
    UnsupportedMediaType,
    Internal,
    Unavailable,
    /// Any other 4xx of the framework, with its status kept.
    Invalid(StatusCode),
    /// Too many wrong credentials from this client address: wait this many seconds.
    TooManyFailures(u64),
}

impl Problem {
    /// What a non-JSON error answer of the framework means.
    pub fn of_status(status: StatusCode) -> Self {
        match status.as_u16() {
            404 => Problem::NotFound,
            405 => Problem::MethodNotAllowed,
            408 => Problem::Timeout,
            413 => Problem::TooLarge(None),
            415 => Problem::UnsupportedMediaType,
            503 => Problem::Unavailable,
            s if s >= 500 => Problem::Internal,
            _ => Problem::Invalid(status),
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Problem::NotFound => StatusCode::NOT_FOUND,
            Problem::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Problem::Unauthorized => StatusCode::UNAUTHORIZED,
            Problem::ReadOnly | Problem::MissingCsrf => StatusCode::FORBIDDEN,
            Problem::Timeout => StatusCode::REQUEST_TIMEOUT,
            Problem::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Problem::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Problem::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Problem::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Problem::Invalid(s) => s,
            Problem::TooManyFailures(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The quota API's `code`.
    pub fn quota_code(self) -> &'static str {
        match self {
            Problem::NotFound => "NOT_FOUND",
            Problem::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Problem::Unauthorized => "UNAUTHORIZED",
            Problem::ReadOnly | Problem::MissingCsrf => "FORBIDDEN",
            Problem::Timeout | Problem::Unavailable => "UNAVAILABLE",
            Problem::TooLarge(_) => "PAYLOAD_TOO_LARGE",
            Problem::UnsupportedMediaType | Problem::Invalid(_) => "INVALID_REQUEST",
            Problem::Internal => "INTERNAL_ERROR",
            Problem::TooManyFailures(_) => "RATE_LIMITED",
        }
    }

    /// OpenAI's `code`.
    pub fn openai_code(self) -> &'static str {
        match self {
            Problem::NotFound => "not_found",
            Problem::MethodNotAllowed => "method_not_allowed",
            Problem::Unauthorized => "unauthorized",
            Problem::ReadOnly | Problem::MissingCsrf => "forbidden",
            Problem::Timeout => "timeout",
            Problem::TooLarge(_) => "payload_too_large",
            Problem::UnsupportedMediaType => "unsupported_media_type",
            Problem::Internal => "internal_error",
            Problem::Unavailable => "unavailable",
            Problem::Invalid(_) => "invalid_request",
            Problem::TooManyFailures(_) => "rate_limit_exceeded",
        }
    }

    pub fn message(self) -> String {
        match self {
            Problem::NotFound => "接口不存在".into(),
            Problem::MethodNotAllowed => "不支持的请求方法".into(),
            Problem::Unauthorized => "管理员令牌无效或缺失".into(),
            Problem::ReadOnly => "只读令牌不能执行写操作".into(),
            Problem::MissingCsrf => "缺少 X-QP-CSRF 请求头".into(),
            Problem::Timeout => "请求超时".into(),
            Problem::TooLarge(Some(limit)) => format!("请求体过大，上限 {limit} 字节"),
            Problem::TooLarge(None) => "请求体过大".into(),
            Problem::UnsupportedMediaType => "不支持的内容类型，请使用 application/json".into(),
            Problem::Internal => "服务内部错误".into(),
            Problem::Unavailable => "服务暂不可用".into(),
            Problem::Invalid(_) => "请求无效".into(),
            Problem::TooManyFailures(s) => {
                format!("凭证错误次数过多，请 {s} 秒后再试 (too many failed attempts)")
            }
        }
    }

    pub fn retry_after(self) -> Option<u64> {
        match self {
            Problem::Unavailable => Some(1),
            Problem::TooManyFailures(s) => Some(s),
            _ => None,
        }
    }
}

/// `resp` with a `Retry-After` of `secs`, when given.
pub fn with_retry_after(mut resp: Response, secs: Option<u64>) -> Response {
    if let Some(secs) = secs {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framework_statuses_keep_their_meaning() {
        for (code, p) in [
            (404, Problem::NotFound),
            (405, Problem::MethodNotAllowed),
            (413, Problem::TooLarge(None)),
            (415, Problem::UnsupportedMediaType),
            (500, Problem::Internal),
            (503, Problem::Unavailable),
        ] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(Problem::of_status(status), p);
            assert_eq!(p.status(), status);
        }
        let teapot = StatusCode::IM_A_TEAPOT;
        assert_eq!(Problem::of_status(teapot).status(), teapot);
        assert_eq!(Problem::Unavailable.retry_after(), Some(1));
    }
}
