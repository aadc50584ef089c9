//! The caller protocols at the gateway's edges, one function per edge: a call of a protocol
//! the chosen upstream does not speak goes to it as chat and its answer comes back in the
//! caller's protocol; a native answer is metered in its own protocol's usage fields. The
//! stages between (key, limits, hold, routing, failover, settlement, log) never ask which
//! protocol a call speaks. Adding a protocol: a module like `anthropic.rs` or `responses.rs`
//! (request to chat, answer from chat, a stream translator, a native usage watcher) and one
//! arm in each function here.

use bytes::Bytes;
use serde_json::Value;

use super::call::CallError;
use super::endpoint::{Endpoint, Protocol};
use super::messages_request;
use super::relay::{Native, Relay, Translated};
use super::responses_request::{self, Echo};
use super::stages::{self, Request, StreamMeter};
use super::tokens::Estimator;
use super::usage::Metered;
use super::{anthropic, responses};
use crate::billing::Usage;

/// Whether a call of `endpoint` reaches an upstream speaking `speaks` as chat.
pub fn translated(endpoint: Endpoint, speaks: impl Fn(Protocol) -> bool) -> bool {
    let p = endpoint.protocol();
    p != Protocol::Chat && !speaks(p)
}

/// A caller's request as chat: the body for the upstream, and what a Responses answer
/// repeats of the request.
pub struct Chat {
    pub body: Bytes,
    pub echo: Option<Echo>,
}

/// The caller's request as a chat request for `model` (only asked for a translated call).
pub fn to_chat(endpoint: Endpoint, req: &Request, model: &str) -> Result<Chat, CallError> {
    match endpoint.protocol() {
        Protocol::Responses => {
            let c = responses_request::to_chat(&req.raw, req.spans.as_ref(), model)
                .map_err(|_| CallError::BodyUnreadable)?;
            Ok(Chat {
                body: Bytes::from(c.body),
                echo: Some(c.echo),
            })
        }
        Protocol::Messages => {
            let body = messages_request::to_chat(&req.raw, req.spans.as_ref(), model)
                .map_err(|_| CallError::BodyUnreadable)?;
            Ok(Chat {
                body: Bytes::from(body),
                echo: None,
            })
        }
        // (Never translated: chat is what the others are translated into.)
        Protocol::Chat => Ok(Chat {
            body: req.raw.clone(),
            echo: None,
        }),
    }
}

/// A whole chat answer in the caller's protocol (`echo`: what a response repeats of a
/// Responses request).
pub fn from_chat(endpoint: Endpoint, chat: &Value, req: &Request, echo: Option<&Echo>) -> Value {
    match (endpoint.protocol(), echo) {
        (Protocol::Messages, _) => anthropic::response_from_chat(chat, &req.model),
        (Protocol::Responses, Some(echo)) => responses::response_from_chat(chat, &req.model, echo),
        (Protocol::Responses, None) => {
            responses::response_from_chat(chat, &req.model, &Echo::of_tree(req.body()))
        }
        (Protocol::Chat, _) => chat.clone(),
    }
}

/// What a whole answer used, read in the protocol it was answered in: only `usage` is
/// parsed; the text is estimated when there is none.
pub fn metered_full(
    endpoint: Endpoint,
    translated: bool,
    bytes: &[u8],
    est: &Estimator,
) -> Metered {
    let native = |text: fn(&Value) -> String| {
        let (usage, delivered): (Option<Usage>, bool) = super::usage::answer(bytes);
        match usage {
            Some(u) => Metered::reported(u),
            None => {
                let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
                Metered::estimated(est.prompt(), est.text(&text(&v)))
            }
        }
        .delivered(delivered)
    };
    match (endpoint.protocol(), translated) {
        (Protocol::Chat, _) => stages::metered_full(bytes, est, endpoint),
        (_, true) => stages::metered_full(bytes, est, Endpoint::Chat),
        (Protocol::Messages, false) => native(anthropic::content_text),
        (Protocol::Responses, false) => native(responses::output_text),
    }
}

/// What a streamed answer's bytes become on their way to the caller.
pub fn relay(endpoint: Endpoint, translated: bool, req: &Request, echo: Option<Echo>) -> Relay {
    match (endpoint.protocol(), translated) {
        (Protocol::Chat, _) => Relay::Chat(StreamMeter::new(req.caller_wants_usage)),
        (Protocol::Messages, false) => {
            Relay::Native(Native::new(Box::<anthropic::NativeUsage>::default()))
        }
        (Protocol::Responses, false) => {
            Relay::Native(Native::new(Box::<responses::NativeUsage>::default()))
        }
        (Protocol::Messages, true) => Relay::Translated(Box::new(Translated::new(Box::new(
            anthropic::StreamTranslator::new(&req.model),
        )))),
        (Protocol::Responses, true) => Relay::Translated(Box::new(Translated::new(Box::new(
            responses::StreamTranslator::new(
                &req.model,
                echo.unwrap_or_else(|| Echo::of_tree(req.body())),
            ),
        )))),
    }
}

/// An upstream's refusal (already redacted) in the caller's protocol's error shape,
/// whichever shape the upstream used. Responses' errors are OpenAI's, as chat's.
pub fn refusal(endpoint: Endpoint, status: u16, redacted: Vec<u8>) -> Bytes {
    match endpoint.protocol() {
        Protocol::Messages => {
            let v: Value = serde_json::from_slice(&redacted).unwrap_or(Value::Null);
            let message = v
                .pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("upstream answered HTTP {status}"));
            Bytes::from(
                serde_json::to_vec(&anthropic::error_body(status, &message)).unwrap_or_default(),
            )
        }
        Protocol::Chat | Protocol::Responses => Bytes::from(redacted),
    }
}
