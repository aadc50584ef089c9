//! `/v1/messages` (Anthropic Messages, what Claude Code speaks) and its `count_tokens`: the
//! same gateway as chat, answered in Anthropic's shapes, errors included.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::AnthError;
use crate::error::AnthropicRefusals;
use crate::error::refusals::*;
use crate::gateway::Endpoint;
use crate::gateway::call::CallError;
use crate::ledger::LedgerError;
use crate::state::AppState;

/// A Messages request; every field is forwarded as sent to an upstream that speaks Messages,
/// or translated to chat for one that does not.
#[derive(ToSchema)]
pub struct MessagesRequest {
    pub model: String,
    #[schema(minimum = 1, maximum = 10000000)]
    pub max_tokens: i64,
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Value>,
    #[schema(value_type = Option<Object>)]
    pub system: Option<Value>,
    pub stream: Option<bool>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<Vec<Value>>,
}

/// A `count_tokens` request: a Messages request without `max_tokens`.
#[derive(ToSchema)]
pub struct CountTokensRequest {
    pub model: String,
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Value>,
    #[schema(value_type = Option<Object>)]
    pub system: Option<Value>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<Vec<Value>>,
}

/// What `count_tokens` answers.
#[derive(Serialize, ToSchema)]
pub struct TokenCount {
    pub input_tokens: i64,
}

/// The Messages routes, guarded as their own family (Anthropic's errors).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(messages))
        .routes(routes!(count_tokens))
}

/// Anthropic Messages, through the gateway: key, limits, quota, routing, failover, metering
/// as for chat. Streams in Messages' own event grammar.
#[utoipa::path(post, path = "/v1/messages", tag = "messages",
    security(("apiKey" = []), ("bearerKey" = [])),
    request_body(content = MessagesRequest, content_type = "application/json"),
    responses((status = 200, description = "A Messages answer, or its events when `stream` is true",
        content((Object = "application/json"), (super::gateway::SseEvent = "text/event-stream"))),
        AnthropicRefusals<{ BAD | AUTH | FORBIDDEN | NOT_FOUND | TOO_LARGE | LIMITED | BAD_GATEWAY | UNAVAILABLE }>))]
pub async fn messages(State(st): State<AppState>, req: Request) -> Response {
    super::gateway::proxied(st, Endpoint::Messages, req).await
}

/// The prompt's size in tokens, estimated here (nothing is forwarded or charged); the key
/// must be valid.
#[utoipa::path(post, path = "/v1/messages/count_tokens", tag = "messages",
    security(("apiKey" = []), ("bearerKey" = [])),
    request_body(content = CountTokensRequest, content_type = "application/json"),
    responses((status = 200, body = TokenCount), AnthropicRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn count_tokens(
    State(st): State<AppState>,
    origin: Option<axum::Extension<crate::auth::Origin>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(presented) = crate::auth::caller_key(&headers) else {
        return AnthError::from(&CallError::NoKey).into_response();
    };
    match st.ledger.authenticate(presented).await {
        Ok(_) => {
            if let Some(o) = origin {
                o.authenticated();
            }
        }
        Err(LedgerError::Unavailable) => {
            return AnthError::from(&CallError::Unavailable).into_response();
        }
        Err(_) => return AnthError::from(&CallError::UnknownKey).into_response(),
    }
    let Ok(v @ Value::Object(_)) = serde_json::from_slice::<Value>(&body) else {
        return AnthError::from(&CallError::NotAnObject).into_response();
    };
    if !v.get("model").is_some_and(Value::is_string) {
        return AnthError::from(&CallError::NoModel).into_response();
    }
    if let Some(Err(e)) = v
        .as_object()
        .map(|m| crate::gateway::shape::check(Endpoint::Messages, m, &[]))
    {
        return AnthError::from(&e).into_response();
    }
    let chat = crate::gateway::anthropic::request_to_chat(&v);
    let tools = chat.get("tools").map(Value::to_string).unwrap_or_default();
    let input_tokens = crate::gateway::tokens::estimate_prompt(&chat)
        + crate::gateway::tokens::estimate_text(&tools);
    axum::Json(TokenCount { input_tokens }).into_response()
}
