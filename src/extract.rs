//! Extractors every group of routes shares, whatever its state: the operator (an admin or
//! viewer token, or a dashboard session) and the query string as a map. A refusal here is a
//! `Problem`, written in the family of the route that refused it (the route's guard does).

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::auth::{AuthError, Authenticator, Origin, Role};
use crate::error::Problem;

/// The state of a group of routes that operators call.
pub trait HasAuth {
    fn authenticator(&self) -> &Authenticator;
}

/// An admin or viewer: a token from `Authorization: Bearer` or `X-Admin-Token`, or a
/// dashboard session (see [`crate::auth`]).
#[derive(Debug, Clone)]
pub struct Operator {
    pub role: Role,
    pub token_hint: String,
    pub client_ip: Option<IpAddr>,
}

impl Operator {
    pub fn require_write(&self) -> Result<(), Problem> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Viewer => Err(Problem::ReadOnly),
        }
    }

    pub fn actor(&self) -> crate::keyadmin::Actor {
        crate::keyadmin::Actor {
            token_hint: Some(self.token_hint.clone()),
            client_ip: self.client_ip.map(|ip| ip.to_string()),
        }
    }
}

impl<S: HasAuth + Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let p = state
            .authenticator()
            .authenticate(&parts.headers, &parts.method)
            .map_err(|e| match e {
                AuthError::Unauthorized => Problem::Unauthorized,
                AuthError::MissingCsrf => Problem::MissingCsrf,
            })?;
        // Resolved once per request by the middleware (trusted proxies honoured).
        let origin = parts.extensions.get::<Origin>();
        origin.inspect(|o| o.authenticated());
        let client_ip = origin.and_then(|o| o.ip);
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
