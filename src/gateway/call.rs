//! One call's context as it moves through the stages, why a call was not served, and what
//! the gateway answers: a domain outcome the HTTP edge (`api::gateway`) turns into a response.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::limits::{self, RequestBudget, Slot};
use super::oai_error::OaiError;
use crate::ledger::KeyEntry;
use crate::store::RequestLogRow;

/// Everything known about a call, for its log row, its settlement and its answer's headers.
pub(super) struct Call {
    pub started: Instant,
    /// Time spent waiting on upstream attempts before the answer's head went out.
    pub upstream_wait: Duration,
    /// When the attempt that answered started.
    pub attempt_started: Option<Instant>,
    pub row: RequestLogRow,
    pub entry: Option<Arc<KeyEntry>>,
    /// Points reserved on the key and not yet settled or released.
    pub held: i64,
    pub budget: Option<RequestBudget>,
    pub quota_remaining: Option<i64>,
    /// The concurrency slot, released when the call ends (for a stream: when it ends).
    pub slot: Option<Slot>,
}

impl Call {
    pub fn new(row: RequestLogRow) -> Self {
        Self {
            started: Instant::now(),
            upstream_wait: Duration::ZERO,
            attempt_started: None,
            row,
            entry: None,
            held: 0,
            budget: None,
            quota_remaining: None,
            slot: None,
        }
    }

    pub fn elapsed_ms(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// What the answer's headers carry.
    pub fn meta(&self) -> Meta {
        Meta {
            request_id: self.row.request_id.clone(),
            quota_remaining: self.quota_remaining,
            budget: self.budget,
        }
    }
}

/// Why a call was not served (nothing reached an upstream, or no upstream answered).
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    NoKey,
    UnknownKey,
    Unavailable,
    BodyTooLarge { limit: usize },
    BodyUnreadable,
    NotAnObject,
    NoModel,
    KeyDisabled,
    KeyExpired,
    ModelNotAllowed(String),
    IpNotAllowed,
    ModelNotFound(String),
    MaxTokensTooLarge { max: i64 },
    RateLimited(limits::Refusal),
    QuotaExceeded { remaining: i64, requested: i64 },
    NoUpstreamAnswered(String),
}

impl CallError {
    /// The error in OpenAI's shape, with the messages the spec gives.
    pub fn to_oai(&self) -> OaiError {
        match self {
            Self::NoKey | Self::UnknownKey => OaiError::invalid_key(),
            Self::Unavailable => OaiError::unavailable(),
            Self::BodyTooLarge { limit } => OaiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "payload_too_large",
                format!("请求体过大，上限 {limit} 字节"),
            ),
            Self::BodyUnreadable => OaiError::bad_request("请求体读取失败", "body"),
            Self::NotAnObject => OaiError::bad_request("请求体必须是 JSON 对象", "body"),
            Self::NoModel => OaiError::bad_request("缺少 model 字段", "model"),
            Self::KeyDisabled => OaiError::forbidden("key_disabled", "API密钥已被禁用"),
            Self::KeyExpired => OaiError::forbidden("key_expired", "API密钥已过期"),
            Self::ModelNotAllowed(m) => {
                OaiError::forbidden("model_not_allowed", format!("该密钥不允许使用模型 {m}"))
                    .param("model")
            }
            Self::IpNotAllowed => OaiError::forbidden("ip_not_allowed", "该 IP 不允许使用此密钥"),
            Self::ModelNotFound(m) => OaiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                format!("模型 {m} 不存在 (the model `{m}` does not exist)"),
            )
            .param("model"),
            Self::MaxTokensTooLarge { max } => OaiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_value",
                format!("max_tokens 不能大于 {max}"),
            )
            .param("max_tokens"),
            Self::RateLimited(r) => OaiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limit_exceeded",
                r.message(),
            )
            .retry_after(r.retry_after_s()),
            Self::QuotaExceeded {
                remaining,
                requested,
            } => OaiError::quota_exceeded(*remaining, *requested),
            Self::NoUpstreamAnswered(last) => OaiError::new(
                StatusCode::BAD_GATEWAY,
                "api_error",
                "upstream_error",
                format!("上游服务不可用 ({last})"),
            ),
        }
    }
}

/// What the answer's headers carry besides its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub request_id: String,
    pub quota_remaining: Option<i64>,
    pub budget: Option<RequestBudget>,
}

/// The gateway's answer to one call.
#[derive(Debug)]
pub enum Outcome {
    /// Not served: nothing was charged.
    Refused { error: OaiError, meta: Meta },
    /// The upstream's whole answer (a refusal of its own passes on with its status).
    Answered {
        status: u16,
        body: Bytes,
        meta: Meta,
    },
    /// Server-sent events, forwarded as they arrive.
    Streaming {
        events: mpsc::Receiver<Result<Bytes, std::io::Error>>,
        meta: Meta,
    },
}
