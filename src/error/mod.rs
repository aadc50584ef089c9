//! Errors as callers read them: one type per API family, each both the body it sends and the
//! schema the OpenAPI document shows (`QuotaError`, `OpenAiError`, `MonitorError`), and the
//! refusals every route may meet before its handler (`Problem`), written in the family of the
//! route (`Family`). A new caller protocol adds a family here: its body type, `From<Problem>`
//! and `From<&CallError>`.

mod anthropic;
mod family;
mod monitor;
mod openai;
mod problem;
mod quota;
pub mod refusals;

pub use anthropic::{AnthError, AnthropicError, AnthropicErrorBody};
pub use family::Family;
pub use monitor::MonitorErrorBody;
pub use openai::{OaiError, OpenAiError, OpenAiErrorBody};
pub use problem::{Problem, with_retry_after};
pub use quota::{ApiError, ApiResult, QuotaError, QuotaErrorBody};
pub use refusals::{AnthropicRefusals, MonitorRefusals, OpenAiRefusals, QuotaRefusals, Refusals};
