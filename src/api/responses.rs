//! `/v1/responses` (OpenAI Responses, what Codex CLI and newer OpenAI SDK code speak): the
//! same gateway as chat, answered as a response or its semantic events; errors in OpenAI's
//! shape.

use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::OpenAiRefusals;
use crate::error::refusals::*;
use crate::gateway::Endpoint;
use crate::state::AppState;

/// A Responses request; every field is forwarded as sent to an upstream that speaks
/// Responses, or translated to chat for one that does not.
#[derive(ToSchema)]
pub struct ResponsesRequest {
    pub model: String,
    /// A string (one user turn) or a list of input items.
    #[schema(value_type = Object)]
    pub input: Value,
    pub instructions: Option<String>,
    pub stream: Option<bool>,
    #[schema(minimum = 1, maximum = 10000000)]
    pub max_output_tokens: Option<i64>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<Vec<Value>>,
}

/// The Responses route, in the OpenAI gateway's group (OpenAI's errors).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(responses))
}

/// OpenAI Responses, through the gateway: key, limits, quota, routing, failover, metering as
/// for chat. Streams Responses' semantic events (`response.created` … `response.completed`).
#[utoipa::path(post, path = "/v1/responses", tag = "gateway",
    security(("apiKey" = []), ("bearerKey" = [])),
    request_body(content = ResponsesRequest, content_type = "application/json"),
    responses((status = 200, description = "A response, or its events when `stream` is true",
        content((Object = "application/json"), (super::gateway::SseEvent = "text/event-stream"))),
        OpenAiRefusals<{ BAD | AUTH | FORBIDDEN | NOT_FOUND | TOO_LARGE | LIMITED | BAD_GATEWAY | UNAVAILABLE | GATEWAY_TIMEOUT }>))]
pub async fn responses(State(st): State<AppState>, req: Request) -> Response {
    super::gateway::proxied(st, Endpoint::Responses, req).await
}
