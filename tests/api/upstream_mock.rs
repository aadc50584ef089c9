//! A test upstream that speaks OpenAI's wire format over real HTTP, with knobs: fail with a
//! status, delay stream chunks, omit usage, abort mid-stream. It records what it received and
//! notices when a stream's reader goes away.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use quota_proxy::gateway::mock;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    /// The body's bytes as they arrived (chat, Messages and Responses).
    pub raw: Bytes,
}

#[derive(Default)]
pub struct MockState {
    pub received: Mutex<Vec<Received>>,
    pub fail_status: AtomicU16,
    pub chunk_delay_ms: AtomicU64,
    pub omit_usage: AtomicBool,
    /// Send this many events, then cut the connection.
    pub abort_after: AtomicUsize,
    pub streams_cancelled: AtomicUsize,
    pub streams_completed: AtomicUsize,
    /// Pads non-streamed chat answers to at least this many bytes.
    pub pad_answer: AtomicUsize,
    /// Usage to report instead of the mock's, in the protocol's own shape (chat's, Anthropic's
    /// or Responses'), whole and streamed.
    pub usage: Mutex<Option<Value>>,
    /// Text a hostile upstream puts in a 200 answer: the whole answer's content, and in
    /// streams an extra event `{"error":{"message": …}}` before the end.
    pub echo: Mutex<Option<String>>,
    /// A chat answer sent as is, with status 200: the whole SSE body of a stream, the JSON
    /// of a non-streamed answer.
    pub raw_stream: Mutex<Option<String>>,
    pub raw_answer: Mutex<Option<Value>>,
}

impl MockState {
    fn usage(&self) -> Option<Value> {
        self.usage.lock().unwrap().clone()
    }
}

/// An SSE event with its JSON `data` changed by `f`.
fn patch_event(ev: String, f: impl Fn(&mut Value)) -> String {
    let mut out = String::new();
    for line in ev.split_inclusive('\n') {
        match line
            .strip_prefix("data: ")
            .map(|d| serde_json::from_str::<Value>(d.trim_end()))
        {
            Some(Ok(mut v)) => {
                f(&mut v);
                out.push_str(&format!("data: {v}\n"));
            }
            _ => out.push_str(line),
        }
    }
    out
}

pub struct MockUpstream {
    pub url: String,
    pub state: Arc<MockState>,
}

impl MockUpstream {
    pub async fn start() -> Self {
        let state = Arc::new(MockState::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route(
                "/v1/models",
                axum::routing::get(|| async {
                    axum::Json(serde_json::json!({"object": "list", "data": [
                        {"id": "up-model-b", "object": "model"},
                        {"id": "up-model-a", "object": "model"}
                    ]}))
                }),
            )
            .route("/v1/completions", post(completions))
            .route("/v1/embeddings", post(embeddings))
            // Native Anthropic Messages: its base URL is this server's root.
            .route("/v1/messages", post(messages))
            // Native OpenAI Responses, beside chat under the same base URL.
            .route("/v1/responses", post(responses))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url: format!("http://{addr}/v1"),
            state,
        }
    }

    pub fn hits(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    pub fn last(&self) -> Received {
        self.state.received.lock().unwrap().last().cloned().unwrap()
    }
}

fn record(st: &MockState, path: &str, headers: HeaderMap, body: &Value) -> Option<Response> {
    record_raw(st, path, headers, body, Bytes::new())
}

fn record_raw(
    st: &MockState,
    path: &str,
    headers: HeaderMap,
    body: &Value,
    raw: Bytes,
) -> Option<Response> {
    let headers_auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    st.received.lock().unwrap().push(Received {
        path: path.to_owned(),
        headers,
        body: body.clone(),
        raw,
    });
    // Like OpenAI's 401, the error echoes the credential it was sent.
    let auth = headers_auth.unwrap_or_default();
    match st.fail_status.load(Ordering::SeqCst) {
        0 => None,
        s => Some(
            (
                StatusCode::from_u16(s).unwrap(),
                axum::Json(json!({"error": {
                    "message": format!("mock failure; Incorrect API key provided: {auth}"),
                    "type": "server_error",
                    "code": "mock_failure",
                }})),
            )
                .into_response(),
        ),
    }
}

/// Counts whether the reader of a stream stayed to the end.
struct StreamGuard {
    state: Arc<MockState>,
    finished: bool,
}

impl StreamGuard {
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.finished {
            self.state.streams_completed.fetch_add(1, Ordering::SeqCst);
        } else {
            self.state.streams_cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn sse(st: Arc<MockState>, body: &Value, chat: bool) -> Response {
    let mut chunks = mock::stream_chunks(body, "up-1", 1, chat);
    if st.omit_usage.load(Ordering::SeqCst) {
        chunks.retain(|c| c.get("usage").is_none());
    }
    if let Some(u) = st.usage() {
        for c in chunks.iter_mut().filter(|c| c.get("usage").is_some()) {
            c["usage"] = u.clone();
        }
    }
    if let Some(e) = st.echo.lock().unwrap().clone() {
        let at = chunks.len().saturating_sub(1);
        chunks.insert(
            at,
            json!({"error": {"message": format!("Incorrect API key provided: {e}")}}),
        );
    }
    let mut events: Vec<String> = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    events.push("data: [DONE]\n\n".to_owned());
    let delay = Duration::from_millis(st.chunk_delay_ms.load(Ordering::SeqCst));
    let abort_after = st.abort_after.load(Ordering::SeqCst);
    let guard = StreamGuard {
        state: st.clone(),
        finished: false,
    };
    let stream = futures_util::stream::unfold(
        (events.into_iter().enumerate(), guard),
        move |(mut it, guard)| async move {
            match it.next() {
                Some((i, ev)) => {
                    if abort_after > 0 && i >= abort_after {
                        // An error from the body stream makes the server cut the connection.
                        let rest: Vec<_> = it.by_ref().collect();
                        drop(rest);
                        return Some((Err(std::io::Error::other("aborted")), (it, guard)));
                    }
                    if i > 0 && !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    Some((Ok::<Bytes, std::io::Error>(Bytes::from(ev)), (it, guard)))
                }
                None => {
                    guard.finish();
                    None
                }
            }
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn chat(State(st): State<Arc<MockState>>, headers: HeaderMap, raw: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&raw) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if let Some(r) = record_raw(&st, "chat/completions", headers, &body, raw) {
        return r;
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        if let Some(raw) = st.raw_stream.lock().unwrap().clone() {
            return ([("content-type", "text/event-stream")], raw).into_response();
        }
        return sse(st, &body, true);
    }
    if let Some(raw) = st.raw_answer.lock().unwrap().clone() {
        return axum::Json(raw).into_response();
    }
    let mut v = mock::chat_completion(&body, "up-1", 1);
    if st.omit_usage.load(Ordering::SeqCst) {
        v.as_object_mut().unwrap().remove("usage");
    }
    if let Some(u) = st.usage() {
        v["usage"] = u;
    }
    if let Some(e) = st.echo.lock().unwrap().clone() {
        v["choices"][0]["message"]["content"] = Value::String(e);
    }
    let pad = st.pad_answer.load(Ordering::SeqCst);
    if pad > 0 {
        v["padding"] = Value::String("x".repeat(pad));
    }
    axum::Json(v).into_response()
}

async fn completions(
    State(st): State<Arc<MockState>>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> Response {
    if let Some(r) = record(&st, "completions", headers, &body) {
        return r;
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return sse(st, &body, false);
    }
    axum::Json(mock::text_completion(&body, "up-1", 1)).into_response()
}

async fn embeddings(
    State(st): State<Arc<MockState>>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> Result<Response, Infallible> {
    if let Some(r) = record(&st, "embeddings", headers, &body) {
        return Ok(r);
    }
    Ok(axum::Json(mock::embeddings(&body)).into_response())
}

async fn messages(State(st): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    let raw = body;
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    if let Some(r) = record_raw(&st, "/v1/messages", headers, &body, raw) {
        return r;
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let mut events = mock::messages_events(&body, "msg-upstream", 0);
        if let Some(u) = st.usage() {
            // Input and cache classes in message_start, the output count in message_delta.
            events = events
                .into_iter()
                .map(|e| {
                    patch_event(e, |v| match v["type"].as_str() {
                        Some("message_start") => v["message"]["usage"] = u.clone(),
                        Some("message_delta") => {
                            v["usage"] = json!({"output_tokens": u["output_tokens"]})
                        }
                        _ => {}
                    })
                })
                .collect();
        }
        let stream = futures_util::stream::iter(
            events
                .into_iter()
                .map(|e| Ok::<_, Infallible>(Bytes::from(e))),
        );
        return (
            [("content-type", "text/event-stream")],
            Body::from_stream(stream),
        )
            .into_response();
    }
    let mut v = mock::messages_full(&body, "msg-upstream", 0);
    if let Some(u) = st.usage() {
        v["usage"] = u;
    }
    axum::Json(v).into_response()
}

async fn responses(State(st): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    let raw = body;
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    if let Some(r) = record_raw(&st, "/v1/responses", headers, &body, raw) {
        return r;
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let mut events = mock::responses_events(&body, "upstream", 0);
        if let Some(u) = st.usage() {
            events = events
                .into_iter()
                .map(|e| {
                    patch_event(e, |v| {
                        if v["type"] == "response.completed" {
                            v["response"]["usage"] = u.clone();
                        }
                    })
                })
                .collect();
        }
        let stream = futures_util::stream::iter(
            events
                .into_iter()
                .map(|e| Ok::<_, Infallible>(Bytes::from(e))),
        );
        return (
            [("content-type", "text/event-stream")],
            Body::from_stream(stream),
        )
            .into_response();
    }
    let mut v = mock::responses_full(&body, "upstream", 0);
    if let Some(u) = st.usage() {
        v["usage"] = u;
    }
    axum::Json(v).into_response()
}
