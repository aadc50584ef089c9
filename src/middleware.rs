//! What every request goes through, once, whatever its route: a request id, the client's
//! address (the socket peer, or what a trusted proxy says), a time limit, and one log line.
//! Handlers read the first two from [`Origin`] instead of working them out again.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use crate::auth::Origin;
use crate::error::ApiError;
use crate::gateway::client_ip;

#[derive(Debug, Clone)]
pub struct Context {
    /// Only these peers may name the client in `X-Forwarded-For` / `X-Real-IP`.
    pub trusted_proxies: Vec<IpNet>,
    /// The longest a handler may take to start its answer (a stream may run longer).
    pub timeout: Duration,
}

pub async fn context(State(cx): State<Arc<Context>>, mut req: Request, next: Next) -> Response {
    let peer: Option<IpAddr> = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let ip = client_ip::resolve(peer, req.headers(), &cx.trusted_proxies);
    let request_id = crate::auth::new_request_id();
    req.extensions_mut().insert(Origin {
        request_id: request_id.clone(),
        ip,
    });
    // The route template, never the path itself: paths and queries can carry keys.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "(unmatched)".to_owned());
    let method = req.method().clone();
    let started = Instant::now();
    let mut resp = match tokio::time::timeout(cx.timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(%request_id, %route, "request timed out");
            ApiError::unavailable().into_response()
        }
    };
    if !resp.headers().contains_key("x-request-id")
        && let Ok(v) = HeaderValue::from_str(&request_id)
    {
        resp.headers_mut().insert("x-request-id", v);
    }
    tracing::debug!(
        %request_id,
        %method,
        %route,
        status = resp.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    resp
}
