//! The OpenAPI 3.1 document (`GET /api/openapi.json`), generated from the handlers'
//! annotations and the request and response types they parse and serialize.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::shapes::{MonitorError, OpenAiError, QuotaError};

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "A caller key (the gateway also takes it as `Authorization: Bearer`)",
            ))),
        );
        c.add_security_scheme(
            "metricsToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("METRICS_TOKEN, when set"))
                    .build(),
            ),
        );
        c.add_security_scheme(
            "bearerKey",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A caller key as a bearer token (OpenAI SDKs)"))
                    .build(),
            ),
        );
        c.add_security_scheme(
            "adminToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("ADMIN_TOKEN (also accepted as `X-Admin-Token`)"))
                    .build(),
            ),
        );
        c.add_security_scheme(
            "viewerToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("VIEWER_TOKEN: reads only"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "quota-proxy", description = "OpenAI-compatible gateway with per-key quotas, metering, monitoring and alerts"),
    modifiers(&Security),
    paths(
        super::quota::validate,
        super::quota::use_quota,
        super::quota::use_batch,
        super::quota::quota,
        super::quota::history,
        super::admin::create_keys,
        super::admin::list_keys,
        super::admin::get_key,
        super::admin::patch_key,
        super::admin::delete_key,
        super::admin::rotate_key,
        super::admin::reset_key,
        super::admin::disable_key,
        super::admin::enable_key,
        super::admin::usage,
        super::admin::usage_history,
        super::admin::audit,
        super::admin::requests,
        super::admin::upstreams,
        super::alerts::list,
        super::alerts::channels,
        super::alerts::test,
        super::monitor::health,
        super::monitor::series,
        super::monitor::top,
        super::monitor::anomalies_h,
        super::monitor::heatmap,
        super::monitor::summary,
        super::monitor::subject_h,
        super::monitor::export_csv,
        super::gateway::models,
        super::gateway::chat_completions,
        super::gateway::completions,
        super::gateway::embeddings,
        super::health::healthz,
        super::health::readyz,
        super::metrics::metrics,
        crate::web::login,
        crate::web::logout,
        crate::web::session,
    ),
    components(schemas(QuotaError, MonitorError, OpenAiError)),
    tags(
        (name = "quota", description = "The caller's quota API (`X-API-Key`)"),
        (name = "admin", description = "Key administration (`ADMIN_TOKEN`; `VIEWER_TOKEN` reads)"),
        (name = "alerts", description = "Alert history, channels and a test message"),
        (name = "monitor", description = "Usage monitoring and risk control (seed: NewAPI 监控系统)"),
        (name = "gateway", description = "OpenAI-compatible gateway"),
        (name = "health", description = "Liveness and readiness"),
        (name = "dashboard", description = "Dashboard sign-in (session cookie)"),
    )
)]
pub struct ApiDoc;

/// The document as served.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The document as JSON, every response described (the status's reason phrase where the
/// annotation gave none, as OpenAPI requires a description).
pub fn document_json() -> serde_json::Value {
    let mut v = serde_json::to_value(document()).unwrap_or_default();
    if let Some(paths) = v.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for op in paths.values_mut().filter_map(|p| p.as_object_mut()) {
            for o in op.values_mut() {
                let Some(responses) = o.get_mut("responses").and_then(|r| r.as_object_mut()) else {
                    continue;
                };
                for (code, r) in responses.iter_mut() {
                    if let Some(r) = r.as_object_mut()
                        && !r.contains_key("description")
                    {
                        let reason = code
                            .parse::<u16>()
                            .ok()
                            .and_then(|c| axum::http::StatusCode::from_u16(c).ok())
                            .and_then(|c| c.canonical_reason())
                            .unwrap_or("");
                        r.insert("description".into(), reason.into());
                    }
                }
            }
        }
    }
    v
}

/// `GET /api/openapi.json`: built once, served as bytes.
pub async fn openapi_json() -> axum::response::Response {
    use axum::response::IntoResponse;
    static JSON: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let body = JSON.get_or_init(|| serde_json::to_vec(&document_json()).unwrap_or_default());
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.clone(),
    )
        .into_response()
}
