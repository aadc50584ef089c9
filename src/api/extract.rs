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
        match parse_unique(&bytes) {
            Parsed::Value(v) => Ok(JsonBody(Some(v))),
            // `{"amount":1,"amount":7}` must not quietly mean 7.
            Parsed::Duplicate(key) => Err(ApiError::invalid(&key, "字段重复 (duplicate key)")),
            Parsed::Malformed => Err(ApiError::malformed_json()),
        }
    }
}

/// What a JSON body read as: its value, or the first key that appears twice in one object
/// (at any depth) of otherwise well-formed JSON, or not JSON at all.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    Value(Value),
    Duplicate(String),
    Malformed,
}

/// `bytes` as a JSON value, in one pass that also finds a repeated key (a separate walk for
/// the keys cost as much as the parse). Malformed JSON is `Malformed` even after a repeated
/// key; otherwise the first repeated key is reported.
pub fn parse_unique(bytes: &[u8]) -> Parsed {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::cell::RefCell;

    /// Builds the value as `serde_json::Value`'s own visitor does.
    struct Build<'a>(&'a RefCell<Option<String>>);

    impl<'de> DeserializeSeed<'de> for Build<'_> {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Build<'_> {
        type Value = Value;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_none<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
            let mut items = Vec::with_capacity(a.size_hint().unwrap_or(0));
            while let Some(v) = a.next_element_seed(Build(self.0))? {
                items.push(v);
            }
            Ok(Value::Array(items))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
            let mut map = serde_json::Map::new();
            while let Some(k) = a.next_key::<String>()? {
                let v = a.next_value_seed(Build(self.0))?;
                match map.entry(k) {
                    serde_json::map::Entry::Vacant(e) => {
                        e.insert(v);
                    }
                    serde_json::map::Entry::Occupied(e) => {
                        let mut first = self.0.borrow_mut();
                        if first.is_none() {
                            *first = Some(e.key().clone());
                        }
                    }
                }
            }
            Ok(Value::Object(map))
        }
    }

    let repeated = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Build(&repeated).deserialize(&mut de).and_then(|v| {
        de.end()?;
        Ok(v)
    });
    match (parsed, repeated.into_inner()) {
        (Err(_), _) => Parsed::Malformed,
        (Ok(_), Some(key)) => Parsed::Duplicate(key),
        (Ok(v), None) => Parsed::Value(v),
    }
}

/// The `Idempotency-Key` header alone (the `HeaderMap` extractor copies every header).
pub struct IdempotencyHeader(pub Option<axum::http::HeaderValue>);

impl<S: Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get("idempotency-key").cloned()))
    }
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
    use super::{Parsed, parse_unique};
    use serde_json::Value;

    #[test]
    fn duplicate_keys_are_found_at_any_depth() {
        let dup = |b: &[u8]| match parse_unique(b) {
            Parsed::Duplicate(k) => Some(k),
            _ => None,
        };
        assert_eq!(
            dup(br#"{"amount":1,"amount":7}"#).as_deref(),
            Some("amount")
        );
        assert_eq!(dup(br#"[{"a":{"b":1,"b":2}}]"#).as_deref(), Some("b"));
        assert_eq!(
            dup(br#"{"a":{"x":1,"x":1},"b":1,"b":2}"#).as_deref(),
            Some("x")
        );
        assert_eq!(dup(br#"{"a":{"x":1},"b":{"x":2}}"#), None);
        // Malformed wins over a repeated key, wherever the fault is.
        assert_eq!(parse_unique(br#"{"a":1,"a":2"#), Parsed::Malformed);
        assert_eq!(parse_unique(br#"{"a":1,"a":2} x"#), Parsed::Malformed);
        assert_eq!(parse_unique(b"{nope"), Parsed::Malformed);
    }

    /// The value is what `serde_json` itself reads, for every kind of member.
    #[test]
    fn values_are_serde_jsons_own() {
        for text in [
            r#"{"amount":1,"reason":"bench","metadata":{"a":[1,-2,3.5,1e300,true,null,"\u00e9x"]}}"#,
            r#"[18446744073709551615,-9223372036854775808,0.1,"",{}]"#,
            r#"  "just a string"  "#,
            "null",
            r#"{"z":1,"a":2,"m":{"y":[],"b":{}}}"#,
        ] {
            let ours = match parse_unique(text.as_bytes()) {
                Parsed::Value(v) => v,
                other => panic!("{text}: {other:?}"),
            };
            let theirs: Value = serde_json::from_str(text).unwrap();
            assert_eq!(ours, theirs, "{text}");
            // Same key order too (the API keeps the caller's order).
            assert_eq!(ours.to_string(), theirs.to_string(), "{text}");
        }
    }
}
