//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    pub ok: bool,
    pub version: Option<String>,
    /// `mock` when no upstream is configured.
    pub upstream: Option<String>,
    pub warning: Option<String>,
    pub error: Option<String>,
    pub writable: Option<bool>,
}

/// Alive; and says so loudly when no upstream is configured, so a mistyped configuration is
/// not mistaken for a working one.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, body = Health)))]
pub async fn healthz(State(st): State<AppState>) -> Json<Value> {
    let mut v = json!({ "ok": true, "version": env!("CARGO_PKG_VERSION") });
    if st.gateway.settings.mock_fallback {
        v["upstream"] = json!("mock");
        v["warning"] = json!(MOCK_WARNING);
    }
    Json(v)
}

pub const MOCK_WARNING: &str = "未配置上游：/v1 的回答来自内置 mock（no upstream configured: /v1 answers come from the built-in mock）";

/// Ready when the store answers and takes writes.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(st): State<AppState>) -> (StatusCode, Json<Value>) {
    if !st.ledger.writable() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ok": false, "error": "服务不可用", "writable": false })),
        );
    }
    match st.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "ok": true }))),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "ok": false, "error": "服务不可用" })),
            )
        }
    }
}

/// Liveness and readiness.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}
