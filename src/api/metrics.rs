//! `GET /metrics`: the Prometheus text exposition, optionally behind `METRICS_TOKEN`.

use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::monitor::Monitor;

#[derive(Clone)]
pub struct MetricsState {
    /// SHA-256 of `METRICS_TOKEN`, compared in constant time; `None`: open.
    token: Option<[u8; 32]>,
    monitor: Option<Arc<Monitor>>,
}

impl MetricsState {
    pub fn new(token: Option<&str>, monitor: Option<Arc<Monitor>>) -> Self {
        Self {
            token: token.map(|t| Sha256::digest(t.as_bytes()).into()),
            monitor,
        }
    }
}

#[utoipa::path(get, path = "/metrics", tag = "health",
    security((), ("metricsToken" = [])),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "`METRICS_TOKEN` is set and was not presented", content_type = "text/plain", body = String)))]
pub async fn metrics(State(st): State<MetricsState>, headers: HeaderMap) -> Response {
    if let Some(want) = &st.token {
        let given = crate::auth::bearer(&headers).unwrap_or("");
        let got: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        if !bool::from(got.ct_eq(want)) {
            return (StatusCode::UNAUTHORIZED, "metrics token required\n").into_response();
        }
    }
    if let Some(r) = st.monitor.as_ref().and_then(|m| m.rollup.as_ref()) {
        r.publish_gauges();
    }
    let body = crate::telemetry::handle().render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The Prometheus metrics.
pub fn router() -> OpenApiRouter<MetricsState> {
    OpenApiRouter::new().routes(routes!(metrics))
}
