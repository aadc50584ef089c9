//! `quota-proxy mock-upstream`: the built-in mock provider over HTTP, as an OpenAI-compatible
//! upstream on loopback (benchmarks, demos, trying a config without a real provider); it
//! speaks Anthropic Messages and OpenAI Responses natively too.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

use super::mock;

#[derive(Clone, Copy)]
pub struct Pace {
    /// Pause between streamed events.
    pub chunk_delay: Duration,
    /// The same pause before the first event too (a model's time to its first token).
    pub pace_first: bool,
    /// Each JSON event carries the wall-clock time it left, in µs since the epoch, as
    /// `"system_fingerprint":"sent-<µs>"`: a proxy in front is measured per chunk by what
    /// its caller receives later than this (benches/streams.rs).
    pub stamp: bool,
}

/// `ev` stamped with the time it leaves (events other than a JSON `data:` are as they are).
fn stamped(ev: Bytes) -> Bytes {
    let Some(rest) = ev.strip_prefix(b"data: {") else {
        return ev;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let mut out = Vec::with_capacity(ev.len() + 48);
    out.extend_from_slice(b"data: {\"system_fingerprint\":\"sent-");
    out.extend_from_slice(now.to_string().as_bytes());
    out.extend_from_slice(b"\",");
    out.extend_from_slice(rest);
    Bytes::from(out)
}

fn stream(pace: Pace, body: &Value, chat: bool) -> Response {
    let created = chrono::Utc::now().timestamp();
    let mut events: Vec<Bytes> = mock::stream_chunks(body, "mock-up", created, chat)
        .iter()
        .map(|c| Bytes::from(format!("data: {c}\n\n")))
        .collect();
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    paced(pace, events)
}

/// `events` as a stream, `pace` apart (after the first, unless the first is paced too).
fn paced(pace: Pace, events: Vec<Bytes>) -> Response {
    let s = futures_util::stream::unfold(
        (events.into_iter(), true),
        move |(mut it, first)| async move {
            let ev = it.next()?;
            if (!first || pace.pace_first) && !pace.chunk_delay.is_zero() {
                tokio::time::sleep(pace.chunk_delay).await;
            }
            let ev = if pace.stamp { stamped(ev) } else { ev };
            Some((Ok::<Bytes, std::io::Error>(ev), (it, false)))
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(s))
        .unwrap_or_default()
}

fn wants_stream(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

async fn chat(State(p): State<Pace>, axum::Json(body): axum::Json<Value>) -> Response {
    if wants_stream(&body) {
        return stream(p, &body, true);
    }
    let created = chrono::Utc::now().timestamp();
    axum::Json(mock::chat_completion(&body, "mock-up", created)).into_response()
}

async fn completions(State(p): State<Pace>, axum::Json(body): axum::Json<Value>) -> Response {
    if wants_stream(&body) {
        return stream(p, &body, false);
    }
    let created = chrono::Utc::now().timestamp();
    axum::Json(mock::text_completion(&body, "mock-up", created)).into_response()
}

/// Anthropic Messages, natively (this server's root is an Anthropic-style base URL).
async fn messages(State(p): State<Pace>, axum::Json(body): axum::Json<Value>) -> Response {
    let created = chrono::Utc::now().timestamp();
    if wants_stream(&body) {
        let events = mock::messages_events(&body, "mock-up", created);
        return paced(p, events.into_iter().map(Bytes::from).collect());
    }
    axum::Json(mock::messages_full(&body, "mock-up", created)).into_response()
}

/// OpenAI Responses, natively.
async fn responses(State(p): State<Pace>, axum::Json(body): axum::Json<Value>) -> Response {
    let created = chrono::Utc::now().timestamp();
    if wants_stream(&body) {
        let events = mock::responses_events(&body, "mock-up", created);
        return paced(p, events.into_iter().map(Bytes::from).collect());
    }
    axum::Json(mock::responses_full(&body, "mock-up", created)).into_response()
}

async fn embeddings(axum::Json(body): axum::Json<Value>) -> Response {
    axum::Json(mock::embeddings(&body)).into_response()
}

/// The models the mock answers for, as OpenAI's `/v1/models` lists them.
async fn models() -> Response {
    let data: Vec<Value> = ["mock-chat", "mock-reasoner", "mock-embedding"]
        .iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "owned_by": "mock"}))
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

pub fn router(pace: Pace) -> Router {
    Router::new()
        .route("/v1/models", axum::routing::get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/messages", post(messages))
        .route("/v1/responses", post(responses))
        .with_state(pace)
}
