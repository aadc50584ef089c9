//! Request extractors of the quota and admin APIs: the JSON body (size-limited, parsed by us
//! so errors name fields) and the calling key. The operator and the query map are shared by
//! every group of routes (`crate::extract`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde_json::Value;

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
        if let Some(key) = duplicate_key(&bytes) {
            // `{"amount":1,"amount":7}` must not quietly mean 7.
            return Err(ApiError::invalid(&key, "字段重复 (duplicate key)"));
        }
        serde_json::from_slice(&bytes)
            .map(|v| JsonBody(Some(v)))
            .map_err(|_| ApiError::malformed_json())
    }
}

/// The first key that appears twice in one object of the JSON `bytes`, at any depth (`None`
/// also when the JSON is malformed: the parse that follows says so).
pub fn duplicate_key(bytes: &[u8]) -> Option<String> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::cell::RefCell;

    struct Walk<'a>(&'a RefCell<Option<String>>);

    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
            while a.next_element_seed(Walk(self.0))?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = a.next_key::<String>()? {
                if !seen.insert(k.clone()) && self.0.borrow().is_none() {
                    *self.0.borrow_mut() = Some(k);
                }
                a.next_value_seed(Walk(self.0))?;
            }
            Ok(())
        }
    }

    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    Walk(&found).deserialize(&mut de).ok()?;
    found.into_inner()
}

/// Whether the key's `ips` limit (if any) admits a caller at `ip`.
pub fn ip_allowed(entry: &KeyEntry, ip: Option<std::net::IpAddr>) -> bool {
    let Some(nets) = entry.lock().rec.limits.ips.clone() else {
        return true;
    };
    ip.is_some_and(|ip| {
        nets.iter()
            .filter_map(|n| crate::gateway::settings::parse_net(n))
            .any(|n| n.contains(&ip))
    })
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
                if let Some(o) = parts.extensions.get::<crate::auth::Origin>() {
                    o.authenticated();
                }
                let hint = entry.lock().rec.hint.clone();
                let ip = parts
                    .extensions
                    .get::<crate::auth::Origin>()
                    .and_then(|o| o.ip);
                // A key limited to some addresses is limited on every route, as the gateway
                // limits it.
                if !ip_allowed(&entry, ip) {
                    return Err(ApiError::forbidden("该 IP 不允许使用此密钥"));
                }
                Ok(Caller { entry, hint })
            }
            Err(LedgerError::Unavailable) => Err(ApiError::unavailable()),
            Err(_) => Err(ApiError::unauthorized_key()),
        }
    }
}

pub use crate::auth::{Role, TokenDigests, token_hint};
pub use crate::extract::{HasAuth, Operator, QueryMap};

impl HasAuth for AppState {
    fn authenticator(&self) -> &crate::auth::Authenticator {
        &self.auth
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn duplicate_keys_are_found_at_any_depth() {
        use super::duplicate_key;
        assert_eq!(
            duplicate_key(br#"{"amount":1,"amount":7}"#).as_deref(),
            Some("amount")
        );
        assert_eq!(
            duplicate_key(br#"[{"a":{"b":1,"b":2}}]"#).as_deref(),
            Some("b")
        );
        assert_eq!(duplicate_key(br#"{"a":{"x":1},"b":{"x":2}}"#), None);
        assert_eq!(duplicate_key(b"{nope"), None);
    }
}
