//! `/v1/*` handlers: thin wrappers that hand the request to the gateway.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::Origin;
use crate::gateway::Endpoint;
use crate::gateway::oai_error::OaiError;
use crate::ledger::LedgerError;
use crate::state::AppState;

async fn proxied(st: AppState, endpoint: Endpoint, req: Request) -> Response {
    // Set for every request by the server's middleware.
    let origin = req
        .extensions()
        .get::<Origin>()
        .cloned()
        .unwrap_or_else(|| Origin {
            request_id: crate::auth::new_request_id(),
            ip: None,
        });
    let (parts, body) = req.into_parts();
    let limit = st.gateway.settings.max_body_bytes;
    // Err(true): over the limit; Err(false): the body could not be read.
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        e.into_inner()
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
    });
    st.gateway
        .handle(endpoint, &parts.headers, origin, bytes)
        .await
}

pub async fn chat_completions(State(st): State<AppState>, req: Request) -> Response {
    proxied(st, Endpoint::Chat, req).await
}

pub async fn completions(State(st): State<AppState>, req: Request) -> Response {
    proxied(st, Endpoint::Completions, req).await
}

pub async fn embeddings(State(st): State<AppState>, req: Request) -> Response {
    proxied(st, Endpoint::Embeddings, req).await
}

/// Models the configured upstreams serve (and this key may use). Costs nothing.
pub async fn models(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let presented = crate::auth::caller_key(&headers).map(str::to_owned);
    let Some(presented) = presented else {
        return OaiError::invalid_key().into_response();
    };
    let entry = match st.ledger.authenticate(&presented).await {
        Ok(e) => e,
        Err(LedgerError::Unavailable) => return OaiError::unavailable().into_response(),
        Err(_) => return OaiError::invalid_key().into_response(),
    };
    let allowed = entry.snapshot().limits.models;
    let mut seen = std::collections::BTreeSet::new();
    let mut data: Vec<Value> = Vec::new();
    for up in &st.gateway.upstreams {
        for m in up.listed_models() {
            let ok = allowed.as_ref().is_none_or(|a| {
                a.iter()
                    .any(|g| crate::gateway::settings::glob_match(g, &m))
            });
            if ok && seen.insert(m.to_owned()) {
                data.push(json!({"id": m, "object": "model", "created": 0, "owned_by": up.s.name}));
            }
        }
    }
    axum::Json(json!({"object": "list", "data": data})).into_response()
}
