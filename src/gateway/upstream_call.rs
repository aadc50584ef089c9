//! One attempt against one upstream: the built-in mock answers in process; an OpenAI-style
//! upstream gets a fresh request that carries its own key and never the caller's.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use hyper::http::{HeaderName, HeaderValue, header};
use serde_json::Value;

use super::endpoint::Endpoint;
use super::http_client::{SendError, content_headers};
use super::mock;
use super::settings::UpstreamKind;
use super::upstream::Upstream;

pub use super::http_client::ByteStream;

pub enum Reply {
    /// A complete body (every non-streaming answer, and any error answer).
    Full { status: u16, body: Bytes },
    /// A successful streaming answer, still arriving.
    Stream { stream: ByteStream },
}

/// Why an attempt failed in a way that allows trying the next upstream.
#[derive(Debug, Clone)]
pub enum AttemptError {
    Connect(String),
    Timeout,
    /// A non-streamed answer longer than `max_response_bytes`.
    TooLarge(usize),
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Connect(e) => write!(f, "upstream unreachable: {e}"),
            AttemptError::Timeout => write!(f, "upstream timed out"),
            AttemptError::TooLarge(n) => write!(f, "upstream answer over {n} bytes"),
        }
    }
}

/// What one attempt sends: the endpoint on the wire, the body, and the caller's protocol
/// headers passed on to a native upstream (`anthropic-version`, `anthropic-beta`).
pub struct Outgoing<'a> {
    pub endpoint: Endpoint,
    pub body: &'a Value,
    /// `body` as the caller sent it (edited as bytes at most), when it is what the upstream
    /// gets: forwarded as it is, not serialised again.
    pub raw: Option<&'a Bytes>,
    pub stream: bool,
    pub headers: &'a [(&'static str, String)],
}

pub async fn call(
    up: &Upstream,
    key: Option<&str>,
    out: Outgoing<'_>,
    request_id: &str,
    max_response_bytes: usize,
) -> Result<Reply, AttemptError> {
    match up.s.kind {
        UpstreamKind::Mock => Ok(mock_reply(out.endpoint, out.body, out.stream, request_id)),
        UpstreamKind::Openai => http_call(up, key, &out, max_response_bytes).await,
    }
}

/// Whether an upstream's answer refuses the key we sent rather than the request: 401, 403,
/// 402 (DeepSeek's "Insufficient Balance"), or a 429 that speaks of billing or quota
/// (OpenAI's `insufficient_quota`) rather than of rate.
pub fn key_refused(status: u16, body: &[u8]) -> bool {
    match status {
        401..=403 => true,
        429 => {
            let text = String::from_utf8_lossy(&body[..body.len().min(4096)]).to_lowercase();
            [
                "insufficient_quota",
                "billing",
                "balance",
                "credit",
                "exceeded your current quota",
            ]
            .iter()
            .any(|w| text.contains(w))
        }
        _ => false,
    }
}

fn mock_reply(endpoint: Endpoint, body: &Value, stream: bool, request_id: &str) -> Reply {
    let created = chrono::Utc::now().timestamp();
    let id = format!("mock-{request_id}");
    let whole = |v: Value| Reply::Full {
        status: 200,
        body: Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
    };
    let events = |events: Vec<String>| Reply::Stream {
        stream: Box::pin(futures_util::stream::iter(
            events.into_iter().map(|e| Ok(Bytes::from(e))),
        )),
    };
    match (endpoint, stream) {
        (Endpoint::Messages, false) => whole(mock::messages_full(body, &id, created)),
        (Endpoint::Messages, true) => events(mock::messages_events(body, &id, created)),
        (Endpoint::Responses, false) => whole(mock::responses_full(body, &id, created)),
        (Endpoint::Responses, true) => events(mock::responses_events(body, &id, created)),
        (Endpoint::Embeddings, _) => whole(mock::embeddings(body)),
        (Endpoint::Chat, false) => whole(mock::chat_completion(body, &id, created)),
        (Endpoint::Completions, false) => whole(mock::text_completion(body, &id, created)),
        (Endpoint::Chat | Endpoint::Completions, true) => {
            let chunks = mock::stream_chunks(body, &id, created, endpoint == Endpoint::Chat);
            let mut all: Vec<String> = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
            all.push("data: [DONE]\n\n".to_owned());
            events(all)
        }
    }
}

async fn http_call(
    up: &Upstream,
    key: Option<&str>,
    out: &Outgoing<'_>,
    max_response_bytes: usize,
) -> Result<Reply, AttemptError> {
    let (endpoint, body, stream) = (out.endpoint, out.body, out.stream);
    let Some(target) = up.target(endpoint) else {
        return Err(AttemptError::Connect("invalid base_url".into()));
    };
    let headers = match request_headers(up, key, out) {
        Ok(h) => h,
        // Named, never shown: a header's value may be a secret.
        Err(name) => {
            return Err(AttemptError::Connect(format!(
                "invalid request header {name}"
            )));
        }
    };
    let timeout = Duration::from_millis(up.s.timeout_ms);
    let payload = match out.raw {
        Some(raw) => raw.clone(),
        // A tree of JSON values always serialises; the error arm is never taken.
        None => match serde_json::to_vec(body) {
            Ok(v) => Bytes::from(v),
            Err(e) => return Err(AttemptError::Connect(format!("request body: {e}"))),
        },
    };
    let answer = match up.http.post(target, &headers, payload, timeout).await {
        Err(SendError::Timeout) => return Err(AttemptError::Timeout),
        Err(SendError::Failed(e)) => return Err(AttemptError::Connect(e)),
        Ok(a) => a,
    };
    let status = answer.status;
    if stream && (200..300).contains(&status) {
        return Ok(Reply::Stream {
            stream: answer.body,
        });
    }
    // Read whole (to parse usage and fail over before anything is sent), but never more
    // than the cap: a runaway answer must not take the gateway's memory.
    let read = async move {
        let mut chunks = answer.body;
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(AttemptError::Connect)?;
            if buf.len() + chunk.len() > max_response_bytes {
                return Err(AttemptError::TooLarge(max_response_bytes));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(AttemptError::Timeout),
        Ok(Err(e)) => Err(e),
        Ok(Ok(body)) => Ok(Reply::Full { status, body }),
    }
}

/// What an attempt sends besides its body: the type and accepted answer, the upstream's key
/// (Anthropic-style upstreams take it as `x-api-key`; DeepSeek's takes either), the caller's
/// protocol headers, then the upstream's own configured headers. `Err` names a header whose
/// name or value HTTP cannot carry.
fn request_headers(
    up: &Upstream,
    key: Option<&str>,
    out: &Outgoing<'_>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut h = Vec::with_capacity(3 + out.headers.len() + up.s.headers.len());
    h.extend(content_headers(out.stream));
    if let Some(key) = key {
        let (name, text) = if out.endpoint == Endpoint::Messages {
            (HeaderName::from_static("x-api-key"), key.to_owned())
        } else {
            (header::AUTHORIZATION, format!("Bearer {key}"))
        };
        let mut v = HeaderValue::try_from(text).map_err(|_| name.to_string())?;
        v.set_sensitive(true);
        h.push((name, v));
    }
    let pairs = out
        .headers
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(up.s.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for (k, v) in pairs {
        let name = HeaderName::try_from(k).map_err(|_| k.to_owned())?;
        let value = HeaderValue::try_from(v).map_err(|_| k.to_owned())?;
        h.push((name, value));
    }
    Ok(h)
}
