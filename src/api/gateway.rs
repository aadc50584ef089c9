//! `/v1/*` handlers: thin wrappers that hand the request to the gateway.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Origin;
use crate::error::OpenAiRefusals;
use crate::error::refusals::*;
use crate::error::{AnthError, OaiError};
use crate::gateway::Endpoint;
use crate::gateway::call::{CallError, Meta, Outcome};
use crate::ledger::LedgerError;
use crate::state::AppState;

pub(super) async fn proxied(st: AppState, endpoint: Endpoint, req: Request) -> Response {
    // Set for every request by the server's middleware.
    let origin = req
        .extensions()
        .get::<Origin>()
        .cloned()
        .unwrap_or_else(|| Origin {
            request_id: crate::auth::new_request_id(),
            ip: None,
            conn: None,
        });
    let (parts, body) = req.into_parts();
    let limit = st.gateway.settings.max_body_bytes;
    let outcome = st
        .gateway
        .handle(endpoint, &parts.headers, origin, read_body(body, limit))
        .await;
    respond(outcome, endpoint)
}

/// A refusal in the caller's protocol.
fn refusal(endpoint: Endpoint, error: &CallError) -> Response {
    match endpoint {
        Endpoint::Messages => AnthError::from(error).into_response(),
        _ => OaiError::from(error).into_response(),
    }
}

/// The gateway's outcome as an HTTP answer: OpenAI's error shape, the upstream's JSON, or
/// server-sent events; each with the request id, the quota left and the rate-limit headers.
fn respond(outcome: Outcome, endpoint: Endpoint) -> Response {
    let (mut resp, meta) = match outcome {
        Outcome::Refused { error, meta } => (refusal(endpoint, &error), meta),
        Outcome::Answered { status, body, meta } => {
            let mut r = Response::new(Body::from(body));
            *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            (r, meta)
        }
        Outcome::Streaming { events, meta } => {
            let mut r = Response::new(Body::from_stream(
                tokio_stream::wrappers::ReceiverStream::new(events),
            ));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            (r, meta)
        }
    };
    meta_headers(&mut resp, &meta);
    resp
}

fn meta_headers(resp: &mut Response, meta: &Meta) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&meta.request_id) {
        h.insert("x-request-id", v);
    }
    if let Some(r) = meta.quota_remaining {
        h.insert("x-quota-remaining", HeaderValue::from(r));
    }
    if let Some(b) = meta.budget {
        h.insert("x-ratelimit-limit-requests", HeaderValue::from(b.limit));
        h.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from(b.remaining),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("{}s", b.reset_s)) {
            h.insert("x-ratelimit-reset-requests", v);
        }
    }
}

/// The body up to `limit`. Err(true): over the limit; Err(false): it could not be read.
/// Over the limit, up to `config::body_slack(limit)` more is read and dropped (for at most 5 s), so that a client
/// that writes its whole body before reading sees the 413 rather than a broken pipe; the
/// middleware refused larger declared lengths already.
async fn read_body(body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, bool> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut over = false;
    let mut drained = 0usize;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let frame = if over {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(f) => f,
                Err(_) => break,
            }
        } else {
            body.frame().await
        };
        let Some(frame) = frame else { break };
        let Ok(frame) = frame else {
            return Err(over);
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if over {
            drained += data.len();
            if drained > crate::config::body_slack(limit) {
                break;
            }
        } else if buf.len() + data.len() > limit {
            over = true;
            drained = buf.len() + data.len() - limit;
            buf.clear();
        } else {
            buf.extend_from_slice(&data);
        }
    }
    if over { Err(true) } else { Ok(buf.freeze()) }
}

#[utoipa::path(post, path = "/v1/chat/completions", tag = "gateway",
    security(("apiKey" = []), ("bearerKey" = [])),
    request_body(content = ChatRequest, content_type = "application/json"),
    responses((status = 200, description = "The upstream's answer; with `stream: true`, server-sent events as they arrive", content(
            (Object = "application/json"),
            (SseEvent = "text/event-stream"))), OpenAiRefusals<{ BAD | AUTH | FORBIDDEN | NOT_FOUND | TOO_LARGE | LIMITED | BAD_GATEWAY | UNAVAILABLE | GATEWAY_TIMEOUT }>))]
pub async fn chat_completions(State(st): State<AppState>, req: Request) -> Response {
    proxied(st, Endpoint::Chat, req).await
}

#[utoipa::path(post, path = "/v1/completions", tag = "gateway",
    security(("apiKey" = []), ("bearerKey" = [])),
    request_body(content = CompletionRequest, content_type = "application/json"),
    responses((status = 200, description = "The upstream's answer; with `stream: true`, server-sent events as they arrive", content(
            (Object = "application/json"),
            (SseEvent = "text/event-stream"))), OpenAiRefusals<{ BAD | AUTH | FORBIDDEN | NOT_FOUND | TOO_LARGE | LIMITED | BAD_GATEWAY | UNAVAILABLE | GATEWAY_TIMEOUT }>))]
pub async fn completions(State(st): State<AppState>, req: Request) -> Response {
    proxied(st, Endpoint::Completions, req).await
}

#[utoipa::path(post, path = "/v1/embeddings", tag = "gateway",
    security(("apiKey" = []), ("bearerKey" = [])),
    request_body(content = EmbeddingRequest, content_type = "application/json"),
    responses((status = 200, description = "The upstream's answer", content(
            (Object = "application/json"),
            (SseEvent = "text/event-stream"))), OpenAiRefusals<{ BAD | AUTH | FORBIDDEN | NOT_FOUND | TOO_LARGE | LIMITED | BAD_GATEWAY | UNAVAILABLE | GATEWAY_TIMEOUT }>))]
pub async fn embeddings(State(st): State<AppState>, req: Request) -> Response {
    proxied(st, Endpoint::Embeddings, req).await
}

/// Models the configured upstreams serve (and this key may use). Costs nothing.
#[utoipa::path(get, path = "/v1/models", tag = "gateway",
    security(("apiKey" = []), ("bearerKey" = [])),
    params(("anthropic-version" = Option<String>, Header, description = "When present (the Anthropic SDK sends it), the list is in Anthropic's shape")),
    responses((status = 200, description = "OpenAI's model list, or Anthropic's when `anthropic-version` is sent", body = ModelsAnswer), OpenAiRefusals<{ AUTH | UNAVAILABLE }>))]
pub async fn models(
    State(st): State<AppState>,
    origin: Option<axum::Extension<Origin>>,
    headers: HeaderMap,
) -> Response {
    let presented = crate::auth::caller_key(&headers).map(str::to_owned);
    let Some(presented) = presented else {
        return OaiError::from(&CallError::UnknownKey).into_response();
    };
    let entry = match st.ledger.authenticate(&presented).await {
        Ok(e) => e,
        Err(LedgerError::Unavailable) => {
            return OaiError::from(&CallError::Unavailable).into_response();
        }
        Err(_) => return OaiError::from(&CallError::UnknownKey).into_response(),
    };
    if let Some(o) = origin {
        o.authenticated();
    }
    let allowed = entry.snapshot().limits.models;
    let anthropic = headers.contains_key("anthropic-version");
    let mut seen = std::collections::BTreeSet::new();
    let mut data = Vec::new();
    for up in st.gateway.roster().upstreams.iter().filter(|u| u.usable()) {
        for m in up.listed_models() {
            let ok = allowed.as_ref().is_none_or(|a| {
                a.iter()
                    .any(|g| crate::gateway::settings::glob_match(g, &m))
            });
            if ok && seen.insert(m.to_owned()) {
                data.push(Model {
                    id: m.to_owned(),
                    object: "model",
                    created: 0,
                    owned_by: up.s.name.clone(),
                });
            }
        }
    }
    if anthropic {
        return axum::Json(AnthropicModelList::of(&data)).into_response();
    }
    axum::Json(ModelList {
        object: "list",
        data,
    })
    .into_response()
}

/// What `/v1/models` answers: OpenAI's list, or Anthropic's for the Anthropic SDK.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ModelsAnswer {
    OpenAi(ModelList),
    Anthropic(AnthropicModelList),
}

/// `/v1/models` as the Anthropic SDK reads it (asked with `anthropic-version`).
#[derive(Serialize, ToSchema)]
pub struct AnthropicModelList {
    pub data: Vec<AnthropicModel>,
    pub has_more: bool,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AnthropicModel {
    /// Always `model`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub display_name: String,
    /// RFC 3339 (the configuration has no dates: the Unix epoch).
    pub created_at: &'static str,
}

impl AnthropicModelList {
    fn of(models: &[Model]) -> Self {
        Self {
            data: models
                .iter()
                .map(|m| AnthropicModel {
                    kind: "model",
                    id: m.id.clone(),
                    display_name: m.id.clone(),
                    created_at: "1970-01-01T00:00:00Z",
                })
                .collect(),
            has_more: false,
            first_id: models.first().map(|m| m.id.clone()),
            last_id: models.last().map(|m| m.id.clone()),
        }
    }
}

/// An OpenAI chat request; every other field is forwarded to the upstream as sent.
#[derive(ToSchema)]
pub struct ChatRequest {
    pub model: String,
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Value>,
    pub stream: Option<bool>,
    #[schema(minimum = 1, maximum = 10000000)]
    pub max_tokens: Option<i64>,
}

/// An OpenAI (legacy) completion request; other fields are forwarded as sent.
#[derive(ToSchema)]
pub struct CompletionRequest {
    pub model: String,
    #[schema(value_type = Object)]
    pub prompt: Value,
    pub stream: Option<bool>,
    #[schema(minimum = 1, maximum = 10000000)]
    pub max_tokens: Option<i64>,
}

/// An OpenAI embeddings request; other fields are forwarded as sent.
#[derive(ToSchema)]
pub struct EmbeddingRequest {
    pub model: String,
    #[schema(value_type = Object)]
    pub input: Value,
}

#[derive(Serialize, ToSchema)]
pub struct Model {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub owned_by: String,
}

#[derive(Serialize, ToSchema)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<Model>,
}

/// One server-sent event of a streamed answer: `data` is a JSON chunk, or `[DONE]` last.
#[derive(Serialize, ToSchema)]
pub struct SseEvent {
    pub data: String,
    pub event: Option<String>,
    pub id: Option<String>,
}

/// The OpenAI-compatible gateway.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(models))
        .routes(routes!(chat_completions))
        .routes(routes!(completions))
        .routes(routes!(embeddings))
}
