//! Request extractors of the quota and admin APIs: the JSON body (size-limited, parsed by us
//! so errors name fields) and the calling key. The operator and the query map are shared by
//! every group of routes (`crate::extract`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde_json::Value;

use crate::error::ApiError;
use crate::ledger::{KeyEntry, LedgerError};
use crate::state::AppState;

/// An optional JSON body: `None` when the body is empty.
pub struct JsonBody(pub Option<Value>);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(state.config.max_body_bytes)
            } else {
                ApiError::malformed_json()
            }
        })?;
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(JsonBody(None));
        }
        serde_json::from_slice(&bytes)
            .map(|v| JsonBody(Some(v)))
            .map_err(|_| ApiError::malformed_json())
    }
}

/// The key a caller of `/api/v1/*` presented in `X-API-Key` (or `Authorization: Bearer`).
pub struct Caller {
    pub entry: Arc<KeyEntry>,
    pub hint: String,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented =
            crate::auth::caller_key(&parts.headers).ok_or_else(ApiError::unauthorized_key)?;
        match state.ledger.authenticate(presented).await {
            Ok(entry) => {
                let hint = entry.lock().rec.hint.clone();
                Ok(Caller { entry, hint })
            }
            Err(LedgerError::Unavailable) => Err(ApiError::unavailable()),
            Err(_) => Err(ApiError::unauthorized_key()),
        }
    }
}

pub use crate::auth::{Role, TokenDigests, token_hint};
pub use crate::extract::{HasAuth, Operator, QueryMap};

impl HasAuth for AppState {
    fn authenticator(&self) -> &crate::auth::Authenticator {
        &self.auth
    }
}
