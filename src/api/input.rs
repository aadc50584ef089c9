//! Field-by-field validation of JSON bodies and query strings, so every 400 names its field.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

pub const MAX_AMOUNT: i64 = 1_000_000_000;
pub const MAX_REASON_CHARS: usize = 200;
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
pub const MAX_BATCH_ITEMS: usize = 1000;
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;

/// The body as an object (`{}` when absent).
pub fn object(body: Option<Value>, what: &str) -> ApiResult<Map<String, Value>> {
    match body {
        None => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(ApiError::invalid(what, "必须是 JSON 对象")),
    }
}

pub fn reject_unknown(map: &Map<String, Value>, allowed: &[&str], path: &str) -> ApiResult<()> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::invalid(&join(path, k), "是未知字段")),
        None => Ok(()),
    }
}

pub fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// An integer in `[min, max]`; absent or null → `None`.
pub fn int(
    map: &Map<String, Value>,
    field: &str,
    path: &str,
    min: i64,
    max: i64,
) -> ApiResult<Option<i64>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => int_value(v, &join(path, field), min, max).map(Some),
    }
}

pub fn int_value(v: &Value, name: &str, min: i64, max: i64) -> ApiResult<i64> {
    match v.as_i64() {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(
            name,
            format!("必须是 {min} 到 {max} 之间的整数"),
        )),
    }
}

/// Absent → `None`; null → `Some(None)`; a value → `Some(Some(v))`.
pub fn nullable_int(
    map: &Map<String, Value>,
    field: &str,
    min: i64,
    max: i64,
) -> ApiResult<Option<Option<i64>>> {
    match map.get(field) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => int_value(v, field, min, max).map(|n| Some(Some(n))),
    }
}

pub fn string(
    map: &Map<String, Value>,
    field: &str,
    path: &str,
    max_chars: usize,
) -> ApiResult<Option<String>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max_chars => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(ApiError::invalid(
            &join(path, field),
            format!("不能超过 {max_chars} 个字符"),
        )),
        Some(_) => Err(ApiError::invalid(&join(path, field), "必须是字符串")),
    }
}

pub fn boolean(map: &Map<String, Value>, field: &str) -> ApiResult<Option<bool>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid(field, "必须是布尔值")),
    }
}

/// A JSON object of at most `MAX_METADATA_BYTES` serialized.
pub fn metadata(
    map: &Map<String, Value>,
    field: &str,
    path: &str,
) -> ApiResult<Option<Map<String, Value>>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => {
            let size = serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX);
            if size > MAX_METADATA_BYTES {
                Err(ApiError::invalid(
                    &join(path, field),
                    format!("不能超过 {MAX_METADATA_BYTES} 字节"),
                ))
            } else {
                Ok(Some(m.clone()))
            }
        }
        Some(_) => Err(ApiError::invalid(&join(path, field), "必须是 JSON 对象")),
    }
}

/// A nested object parsed by serde (unknown fields refused by the type).
pub fn typed<T: DeserializeOwned>(
    map: &Map<String, Value>,
    field: &str,
) -> ApiResult<Option<Option<T>>> {
    match map.get(field) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => serde_json::from_value::<T>(v.clone())
            .map(|t| Some(Some(t)))
            .map_err(|e| {
                ApiError::invalid(
                    field,
                    format!("格式错误（{}）", strip_position(&e.to_string())),
                )
            }),
    }
}

fn strip_position(msg: &str) -> String {
    msg.split(" at line ").next().unwrap_or(msg).to_owned()
}

/// Paging (`limit`, `offset`) and other scalars may come in the query string or, as in the
/// seed guide's curl examples, in a JSON body on a GET. The query string wins.
pub struct Params {
    query: HashMap<String, String>,
    body: Map<String, Value>,
}

impl Params {
    pub fn new(query: HashMap<String, String>, body: Option<Value>) -> ApiResult<Self> {
        Ok(Self {
            query,
            body: object(body, "body")?,
        })
    }

    pub fn str(&self, name: &str) -> ApiResult<Option<String>> {
        if let Some(v) = self.query.get(name) {
            return Ok(Some(v.clone()));
        }
        match self.body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(ApiError::invalid(name, "必须是字符串")),
        }
    }

    /// `limit` (1–1000, `default_limit` when absent) and `offset` (≥ 0, default 0).
    pub fn page(&self, default_limit: i64) -> ApiResult<(i64, i64)> {
        Ok((
            self.int("limit", 1, 1000, default_limit)?,
            self.int("offset", 0, i64::MAX, 0)?,
        ))
    }

    pub fn int(&self, name: &str, min: i64, max: i64, default: i64) -> ApiResult<i64> {
        if let Some(v) = self.query.get(name) {
            return match v.trim().parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::invalid(
                    name,
                    format!("必须是 {min} 到 {max} 之间的整数"),
                )),
            };
        }
        Ok(int(&self.body, name, "", min, max)?.unwrap_or(default))
    }
}
