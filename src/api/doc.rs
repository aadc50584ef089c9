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
///
/// `money`: whether amounts are decimals of a currency (else whole points, and the document
/// says so, with each amount's range).
pub fn to_json(document: utoipa::openapi::OpenApi, money: bool) -> Vec<u8> {
    let mut v = serde_json::to_value(document).unwrap_or_default();
    gateway_fields(&mut v);
    csv_needs_its_query(&mut v);
    if let Some(batch) = v
        .pointer_mut(
            "/paths/~1api~1v1~1use~1batch/post/requestBody/content/application~1json/schema",
        )
        .and_then(|s| s.as_object_mut())
    {
        batch.insert("minItems".into(), 1.into());
        batch.insert("maxItems".into(), super::input::MAX_BATCH_ITEMS.into());
    }
    if !money {
        point_amounts(&mut v);
    }
    if let Some(paths) = v.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for op in paths.values_mut().filter_map(|p| p.as_object_mut()) {
            for o in op.values_mut() {
                optional_bodies_are_objects(o);
                blank_numbers_are_absent(o);
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

/// The gateway's request schemas take the fields it checks from the table that checks them
/// (`gateway::shape`): what the document allows is what the server accepts.
fn gateway_fields(doc: &mut serde_json::Value) {
    use crate::gateway::Endpoint;
    use crate::gateway::shape::fields;
    for (name, endpoint) in [
        ("ChatRequest", Endpoint::Chat),
        ("CompletionRequest", Endpoint::Completions),
        ("EmbeddingRequest", Endpoint::Embeddings),
        ("MessagesRequest", Endpoint::Messages),
        ("CountTokensRequest", Endpoint::Messages),
        ("ResponsesRequest", Endpoint::Responses),
    ] {
        let Some(schema) = doc
            .pointer_mut(&format!("/components/schemas/{name}"))
            .and_then(|s| s.as_object_mut())
        else {
            continue;
        };
        let mut required: Vec<serde_json::Value> = schema
            .get("required")
            .and_then(|r| r.as_array())
            .cloned()
            .unwrap_or_default();
        let props = schema
            .entry("properties")
            .or_insert_with(|| serde_json::json!({}));
        for f in fields(endpoint) {
            if let Some(p) = props.as_object_mut() {
                let mut s = f.kind.schema(!f.required);
                // Keep the field's own description.
                if let (Some(d), Some(o)) = (
                    p.get(f.name)
                        .and_then(|old| old.get("description"))
                        .cloned(),
                    s.as_object_mut(),
                ) {
                    o.insert("description".into(), d);
                }
                p.insert(f.name.into(), s);
            }
            if f.required && !required.iter().any(|r| r == f.name) {
                required.push(f.name.into());
            }
        }
        schema.insert("required".into(), required.into());
    }
}

/// A body an operation may omit (its extractor takes an absent body as `{}`) is documented
/// as optional, not as `null`: the server refuses a `null` body.
fn optional_bodies_are_objects(op: &mut serde_json::Value) {
    let Some(schema) = op.pointer_mut("/requestBody/content/application~1json/schema") else {
        return;
    };
    let Some(alts) = schema.get("oneOf").and_then(|o| o.as_array()) else {
        return;
    };
    let real: Vec<serde_json::Value> = alts
        .iter()
        .filter(|a| a.get("type").and_then(|t| t.as_str()) != Some("null"))
        .cloned()
        .collect();
    if real.len() == 1 && alts.len() == 2 {
        *schema = real.into_iter().next().unwrap_or_default();
    }
}

/// Points modes: an amount is a whole number, in each field's own range.
fn point_amounts(doc: &mut serde_json::Value) {
    use super::input::{MAX_AMOUNT, MAX_QUOTA};
    if let Some(a) = doc.pointer_mut("/components/schemas/Amount") {
        *a = serde_json::json!({"type": "integer", "format": "int64"});
    }
    // (schema, property, minimum, maximum, whether `null` is taken: unlimited quota)
    for (schema, prop, min, max, nullable) in [
        ("UseRequest", "amount", 1, MAX_AMOUNT, false),
        ("UseItem", "amount", 1, MAX_AMOUNT, false),
        ("CreateKeysRequest", "quota", 0, MAX_QUOTA, true),
        ("PatchKeyRequest", "quota", 0, MAX_QUOTA, true),
        ("ResetRequest", "newQuota", 0, MAX_QUOTA, true),
    ] {
        let Some(p) = doc.pointer_mut(&format!("/components/schemas/{schema}/properties/{prop}"))
        else {
            continue;
        };
        let mut s = serde_json::json!({
            "type": if nullable { serde_json::json!(["integer", "null"]) } else { "integer".into() },
            "format": "int64", "minimum": min, "maximum": max,
        });
        if let (Some(d), Some(o)) = (p.get("description").cloned(), s.as_object_mut()) {
            o.insert("description".into(), d);
        }
        *p = s;
    }
}

/// Numbers in a query string may be left blank (`limit=`): the server reads a blank as "not
/// given" (`lenient`), and the document says so.
fn blank_numbers_are_absent(op: &mut serde_json::Value) {
    let Some(params) = op.get_mut("parameters").and_then(|p| p.as_array_mut()) else {
        return;
    };
    for p in params {
        if p.get("in").and_then(|i| i.as_str()) != Some("query") {
            continue;
        }
        let Some(schema) = p.get_mut("schema") else {
            continue;
        };
        let numeric = match schema.get("type") {
            Some(serde_json::Value::String(t)) => t == "integer" || t == "number",
            Some(serde_json::Value::Array(ts)) => {
                ts.iter().any(|t| t == "integer" || t == "number")
            }
            _ => false,
        };
        if numeric {
            let number = schema.take();
            *schema = serde_json::json!({"anyOf": [number, {"type": "string", "maxLength": 0}]});
        }
    }
}

/// The monitor's endpoints share one parameter list; the CSV export alone requires
/// `query_type`, one of three.
fn csv_needs_its_query(doc: &mut serde_json::Value) {
    let Some(params) = doc
        .pointer_mut("/paths/~1api~1export~1csv/get/parameters")
        .and_then(|p| p.as_array_mut())
    else {
        return;
    };
    for p in params {
        if p.get("name").and_then(|n| n.as_str()) == Some("query_type") {
            p["required"] = true.into();
            p["schema"] =
                serde_json::json!({"type": "string", "enum": ["series", "top", "anomalies"]});
        }
    }
}
