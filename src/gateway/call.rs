//! One call's context as it moves through the stages, why a call was not served, and what
//! the gateway answers: a domain outcome the HTTP edge (`api::gateway`) turns into a response.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::limits::{self, RequestBudget, Slot};
use crate::accounts::Scope;
use crate::ledger::{Hold, KeyEntry};
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
    pub hold: Option<Hold>,
    pub budget: Option<RequestBudget>,
    pub quota_remaining: Option<i64>,
    /// The concurrency slots (the key's, its user's and team's), released when the call
    /// ends (for a stream: when it ends).
    pub slots: Vec<Slot>,
    /// The user and team whose token windows (`tpm`) count this call.
    pub accounts: Vec<i64>,
}

impl Call {
    pub fn new(row: RequestLogRow) -> Self {
        Self {
            started: Instant::now(),
            upstream_wait: Duration::ZERO,
            attempt_started: None,
            row,
            entry: None,
            hold: None,
            budget: None,
            quota_remaining: None,
            slots: Vec::new(),
            accounts: Vec::new(),
        }
    }

    /// What the call holds on its key.
    pub fn held(&self) -> i64 {
        self.hold.as_ref().map_or(0, |h| h.amount)
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
    BodyTooLarge {
        limit: usize,
    },
    BodyUnreadable,
    NotAnObject,
    NoModel,
    KeyDisabled,
    KeyExpired,
    ModelNotAllowed(String),
    IpNotAllowed,
    ModelNotFound(String),
    /// A token limit or `n` that is not a whole number in its range.
    BadCount {
        field: &'static str,
        max: i64,
    },
    /// A field the gateway reads has the wrong shape (see `shape`).
    BadField {
        field: &'static str,
        expected: &'static str,
    },
    /// Money mode has no price for the model on any upstream serving it.
    NotPriced(String),
    RateLimited(limits::Refusal),
    /// `budget`: the key's user's or team's budget refused (`None`: the key's own).
    QuotaExceeded {
        remaining: i64,
        requested: i64,
        budget: Option<Scope>,
    },
    /// The key's user or team is disabled.
    OwnerDisabled(Scope),
    NoUpstreamAnswered(String),
}

impl CallError {
    /// The HTTP status the refusal is answered with, in every protocol.
    pub fn status(&self) -> u16 {
        match self {
            Self::NoKey | Self::UnknownKey => 401,
            Self::BodyUnreadable | Self::NotAnObject | Self::NoModel => 400,
            Self::BadCount { .. } | Self::BadField { .. } => 400,
            Self::NotPriced(_) => 403,
            Self::KeyDisabled | Self::KeyExpired | Self::OwnerDisabled(_) => 403,
            Self::ModelNotAllowed(_) | Self::IpNotAllowed => 403,
            Self::ModelNotFound(_) => 404,
            Self::BodyTooLarge { .. } => 413,
            Self::RateLimited(_) | Self::QuotaExceeded { .. } => 429,
            Self::NoUpstreamAnswered(_) => 502,
            Self::Unavailable => 503,
        }
    }

    /// A stable machine-readable reason (OpenAI's `code`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoKey | Self::UnknownKey => "invalid_api_key",
            Self::Unavailable => "unavailable",
            Self::BodyTooLarge { .. } => "payload_too_large",
            Self::BodyUnreadable | Self::NotAnObject | Self::NoModel => "invalid_request",
            Self::KeyDisabled | Self::OwnerDisabled(_) => "key_disabled",
            Self::KeyExpired => "key_expired",
            Self::ModelNotAllowed(_) => "model_not_allowed",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::ModelNotFound(_) => "model_not_found",
            Self::BadCount { .. } => "invalid_value",
            Self::BadField { .. } => "invalid_type",
            Self::NotPriced(_) => "model_not_priced",
            Self::RateLimited(_) => "rate_limit_exceeded",
            Self::QuotaExceeded { .. } => "insufficient_quota",
            Self::NoUpstreamAnswered(_) => "upstream_error",
        }
    }

    /// The message the spec gives, for the caller and the request log.
    pub fn message(&self) -> String {
        match self {
            Self::NoKey | Self::UnknownKey => "API密钥无效或缺失 (invalid API key)".into(),
            Self::Unavailable => "服务暂不可用".into(),
            Self::BodyTooLarge { limit } => format!("请求体过大，上限 {limit} 字节"),
            Self::BodyUnreadable => "请求体读取失败".into(),
            Self::NotAnObject => "请求体必须是 JSON 对象".into(),
            Self::NoModel => "缺少 model 字段".into(),
            Self::KeyDisabled => "API密钥已被禁用".into(),
            Self::OwnerDisabled(Scope::User) => "API密钥所属用户已被停用".into(),
            Self::OwnerDisabled(Scope::Team) => "API密钥所属团队已被停用".into(),
            Self::KeyExpired => "API密钥已过期".into(),
            Self::ModelNotAllowed(m) => format!("该密钥不允许使用模型 {m}"),
            Self::IpNotAllowed => "该 IP 不允许使用此密钥".into(),
            Self::ModelNotFound(m) => format!("模型 {m} 不存在 (the model `{m}` does not exist)"),
            Self::BadCount { field, max } => {
                format!(
                    "{field} 必须是 1 到 {max} 之间的整数 ({field} must be an integer from 1 to {max})"
                )
            }
            Self::BadField { field, expected } => {
                format!("字段 {field} 格式错误 ({field} must be {expected})")
            }
            Self::NotPriced(m) => {
                format!("模型 {m} 未定价，无法计费 (the model `{m}` has no price)")
            }
            Self::RateLimited(r) => r.message().into(),
            Self::QuotaExceeded {
                remaining,
                requested,
                budget: None,
            } => {
                format!("配额不足，剩余配额：{remaining}，请求配额：{requested} (quota exhausted)")
            }
            Self::QuotaExceeded {
                remaining,
                requested,
                budget: Some(scope),
            } => format!(
                "配额不足，{}剩余：{remaining}，请求配额：{requested} ({} budget exhausted)",
                scope.label_zh(),
                scope.as_str()
            ),
            Self::NoUpstreamAnswered(last) => format!("上游服务不可用 ({last})"),
        }
    }

    /// The request field at fault, if one is.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            Self::BodyUnreadable | Self::NotAnObject => Some("body"),
            Self::NoModel | Self::ModelNotAllowed(_) | Self::ModelNotFound(_) => Some("model"),
            Self::BadCount { field, .. } | Self::BadField { field, .. } => Some(field),
            Self::NotPriced(_) => Some("model"),
            _ => None,
        }
    }

    /// Seconds a client should wait before trying again.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Unavailable => Some(1),
            Self::RateLimited(r) => Some(r.retry_after_s()),
            _ => None,
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
    Refused { error: CallError, meta: Meta },
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
