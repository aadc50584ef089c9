//! The OpenAPI 3.1 document (`GET /api/openapi.json`), generated from the handlers'
//! annotations and the request and response types they parse and serialize.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{AnthropicError, MonitorErrorBody, OpenAiError, QuotaError};

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

/// The document's frame: its title, security schemes, tags and the error bodies every
/// family shares. The paths are added by the routers that serve them (`app::router`).
#[derive(OpenApi)]
#[openapi(
    info(title = "quota-proxy", description = "OpenAI-compatible gateway with per-key quotas, metering, monitoring and alerts"),
    modifiers(&Security),
    components(schemas(QuotaError, MonitorErrorBody, OpenAiError, AnthropicError)),
    tags(
        (name = "quota", description = "The caller's quota API (`X-API-Key`)"),
        (name = "admin", description = "Key administration (`ADMIN_TOKEN`; `VIEWER_TOKEN` reads)"),
        (name = "alerts", description = "Alert history, channels and a test message"),
        (name = "monitor", description = "Usage monitoring and risk control (seed: NewAPI 监控系统)"),
        (name = "gateway", description = "OpenAI-compatible gateway"),
        (name = "messages", description = "Anthropic Messages (Claude Code and the Anthropic SDKs)"),
        (name = "health", description = "Liveness and readiness"),
        (name = "dashboard", description = "Dashboard sign-in (session cookie)"),
    )
)]
struct Frame;

pub fn base() -> utoipa::openapi::OpenApi {
    let mut doc = Frame::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The document as JSON, every response described (the status's reason phrase where the
/// annotation gave none, as OpenAPI requires a description).
pub fn to_json(document: utoipa::openapi::OpenApi) -> Vec<u8> {
    let mut v = serde_json::to_value(document).unwrap_or_default();
    if let Some(paths) = v.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for op in paths.values_mut().filter_map(|p| p.as_object_mut()) {
            for o in op.values_mut() {
                // Any route that checks credentials may refuse an address that guessed too
                // often (`bruteforce`): 429 in the same family's body as its 401.
                let secured = o.get("security").is_some();
                let Some(responses) = o.get_mut("responses").and_then(|r| r.as_object_mut()) else {
                    continue;
                };
                // The refusal is JSON in the route's family; a 401 that is not JSON (metrics)
                // says nothing of its shape.
                let json_401 = responses
                    .get("401")
                    .filter(|r| r.pointer("/content/application~1json").is_some())
                    .cloned();
                let secured = secured || responses.contains_key("401");
                let limited = json_401.or_else(|| {
                    secured.then(|| {
                        serde_json::json!({"content": {"application/json": {"schema":
                            {"$ref": "#/components/schemas/QuotaError"}}}})
                    })
                });
                if !responses.contains_key("429")
                    && let Some(mut limited) = limited
                {
                    if let Some(l) = limited.as_object_mut() {
                        l.insert(
                            "description".into(),
                            "Too many wrong credentials from this client address; see Retry-After"
                                .into(),
                        );
                    }
                    responses.insert("429".into(), limited);
                }
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
    serde_json::to_vec(&v).unwrap_or_default()
}
