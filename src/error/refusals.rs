//! How a route documents its refusals: `responses((status = 200, body = X), Refusals<Body,
//! { BAD | AUTH | UNAVAILABLE }>)` lists the statuses that route may answer with, each with
//! its family's error body, in one line instead of one per status.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, response::Response};
use utoipa::{IntoResponses, ToSchema};

pub const BAD: u16 = 1;
pub const AUTH: u16 = 1 << 1;
pub const FORBIDDEN: u16 = 1 << 2;
pub const NOT_FOUND: u16 = 1 << 3;
pub const TOO_LARGE: u16 = 1 << 4;
pub const LIMITED: u16 = 1 << 5;
pub const BAD_GATEWAY: u16 = 1 << 6;
pub const UNAVAILABLE: u16 = 1 << 7;
pub const GATEWAY_TIMEOUT: u16 = 1 << 8;
pub const CONFLICT: u16 = 1 << 9;

const STATUSES: [(u16, u16, &str); 10] = [
    (BAD, 400, "Invalid request: the field at fault is named"),
    (AUTH, 401, "Missing or wrong credentials"),
    (
        FORBIDDEN,
        403,
        "Not allowed for these credentials or this key",
    ),
    (NOT_FOUND, 404, "No such key, model or resource"),
    (
        CONFLICT,
        409,
        "In conflict with what exists (a name taken, a read-only resource)",
    ),
    (TOO_LARGE, 413, "Request body over the limit"),
    (
        LIMITED,
        429,
        "Quota or rate limit reached (`Retry-After` when waiting helps)",
    ),
    (BAD_GATEWAY, 502, "No upstream answered"),
    (UNAVAILABLE, 503, "Temporarily unavailable (`Retry-After`)"),
    (GATEWAY_TIMEOUT, 504, "The upstream timed out"),
];

/// The refusals of a route: the statuses in `S`, each with the error body `B`.
pub struct Refusals<B, const S: u16>(PhantomData<B>);

impl<B: ToSchema, const S: u16> IntoResponses for Refusals<B, S> {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        STATUSES
            .iter()
            .filter(|(bit, _, _)| S & bit != 0)
            .map(|(_, code, description)| {
                let body = ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(B::name())))
                    .build();
                let response = ResponseBuilder::new()
                    .description(*description)
                    .content("application/json", body)
                    .build();
                (code.to_string(), RefOr::T(response))
            })
            .collect()
    }
}

/// Refusals in the quota and admin APIs' shape.
pub type QuotaRefusals<const S: u16> = Refusals<super::quota::QuotaError, S>;
/// Refusals in OpenAI's shape.
pub type OpenAiRefusals<const S: u16> = Refusals<super::openai::OpenAiError, S>;
/// Refusals in the monitor seed's shape.
pub type MonitorRefusals<const S: u16> = Refusals<super::monitor::MonitorErrorBody, S>;
/// Refusals in Anthropic's shape.
pub type AnthropicRefusals<const S: u16> = Refusals<super::anthropic::AnthropicError, S>;
