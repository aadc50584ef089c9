//! Request extractors: the JSON body (size-limited, parsed by us so errors name fields),
//! the calling key, the admin or viewer token, and the client IP.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde_json::Value;

use crate::auth::{AuthError, Origin};
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

/// An admin or viewer: a token from `Authorization: Bearer` or `X-Admin-Token`, or a
/// dashboard session (see [`crate::auth`]).
#[derive(Debug, Clone)]
pub struct Operator {
    pub role: Role,
    pub token_hint: String,
    pub client_ip: Option<IpAddr>,
}

impl Operator {
    pub fn require_write(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Viewer => Err(ApiError::forbidden("只读令牌不能执行写操作")),
        }
    }

    pub fn actor(&self) -> crate::keyadmin::Actor {
        crate::keyadmin::Actor {
            token_hint: Some(self.token_hint.clone()),
            client_ip: self.client_ip.map(|ip| ip.to_string()),
        }
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let p = state
            .auth
            .authenticate(&parts.headers, &parts.method)
            .map_err(|e| match e {
                AuthError::Unauthorized => ApiError::unauthorized_admin(),
                AuthError::MissingCsrf => ApiError::forbidden("缺少 X-QP-CSRF 请求头"),
            })?;
        // Resolved once per request by the middleware (trusted proxies honoured).
        let client_ip = parts.extensions.get::<Origin>().and_then(|o| o.ip);
        Ok(Operator {
            role: p.role,
            token_hint: p.hint,
            client_ip,
        })
    }
}

/// The query string as a map (repeated names: the last wins). Never rejects: values are
/// validated field by field by the handler.
pub struct QueryMap(pub std::collections::HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        Ok(QueryMap(
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }
}
