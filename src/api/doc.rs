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
    ),
    components(schemas(QuotaError, MonitorError, OpenAiError)),
    tags(
        (name = "quota", description = "The caller's quota API (`X-API-Key`)"),
        (name = "admin", description = "Key administration (`ADMIN_TOKEN`; `VIEWER_TOKEN` reads)"),
    )
)]
pub struct ApiDoc;

/// The document as served.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}
