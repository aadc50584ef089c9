//! Request bodies and parameters into the typed shapes of [`super::shapes`]: every 400 names
//! the offending field's path (`amount`, `[1].amount`, `limits.rpm`).

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

pub const MAX_AMOUNT: i64 = 1_000_000_000;
/// The largest quota a key may have (points, or units of the currency; exact in a JSON
/// Schema's double).
pub const MAX_QUOTA: i64 = 2_000_000_000_000_000_000;
/// The largest time in ms a query takes (year ~128 000; exact in a JSON Schema's double).
pub const MAX_MS: i64 = 4_000_000_000_000_000_000;
pub const MAX_REASON_CHARS: usize = 200;
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
pub const MAX_BATCH_ITEMS: usize = 1000;
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;

/// A JSON object body (`{}` when absent) as `T`.
pub fn body<T: DeserializeOwned>(body: Option<Value>) -> ApiResult<T> {
    match body {
        None => typed(Value::Object(Map::new())),
        Some(v @ Value::Object(_)) => typed(v),
        Some(_) => Err(ApiError::invalid("body", "必须是 JSON 对象")),
    }
}

/// A JSON array body as a list of `T`.
pub fn list<T: DeserializeOwned>(body: Option<Value>) -> ApiResult<Vec<T>> {
    match body {
        Some(v @ Value::Array(_)) => typed(v),
        _ => Err(ApiError::invalid("body", "必须是 JSON 数组")),
    }
}

fn typed<T: DeserializeOwned>(v: Value) -> ApiResult<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.inner().to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg);
        if msg.starts_with("unknown field `") {
            return ApiError::invalid(&path, "是未知字段");
        }
        let field = if path == "." { "body" } else { path.as_str() };
        ApiError::invalid(field, describe(msg))
    })
}

/// What serde found wrong, said in the API's language (its own English words are for the
/// logs, not the caller).
fn describe(msg: &str) -> String {
    let kind = |want: &str| -> &'static str {
        let w = want.to_ascii_lowercase();
        if w.contains("amount of") {
            "金额（十进制字符串，如 \"10.00\"）"
        } else if w.contains("integer")
            || w.contains("i64")
            || w.contains("u64")
            || w.contains("u32")
        {
            "整数"
        } else if w.contains("boolean") {
            "布尔值"
        } else if w.contains("string") {
            "字符串"
        } else if w.contains("sequence") || w.contains("array") {
            "数组"
        } else if w.contains("map") || w.contains("struct") || w.contains("object") {
            "对象"
        } else if w.contains("number") || w.contains("f64") {
            "数字"
        } else {
            "正确的格式"
        }
    };
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        let want = rest.split_once(", expected ").map_or("", |(_, w)| w);
        return format!("类型错误，应为{}", kind(want));
    }
    if let Some(rest) = msg.strip_prefix("invalid value: ") {
        let want = rest.split_once(", expected ").map_or("", |(_, w)| w);
        return format!("取值无效，应为{}", kind(want));
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        return format!("缺少字段 {}", rest.trim_end_matches('`'));
    }
    if msg.starts_with("unknown variant `") {
        let allowed = msg.split_once("expected ").map_or("", |(_, a)| a);
        return format!(
            "取值无效，可选：{}",
            allowed.replace("one of ", "").replace('`', "")
        );
    }
    if msg == "expected an object" {
        return "类型错误，应为对象".into();
    }
    if msg.ends_with(" is out of range") {
        return "超出范围".into();
    }
    "格式错误".into()
}

/// `v` within `[min, max]`, else a 400 naming `field`.
pub fn in_range(field: &str, v: Option<i64>, min: i64, max: i64) -> ApiResult<Option<i64>> {
    match v {
        Some(n) if !(min..=max).contains(&n) => Err(ApiError::invalid(
            field,
            format!("必须是 {min} 到 {max} 之间的整数"),
        )),
        other => Ok(other),
    }
}

/// An amount within `min..=max` points; in money mode the bounds are currency units (an
/// amount is then micros, up to `max` units).
pub fn amount_in_range(
    field: &str,
    v: Option<super::amount::Amount>,
    min: i64,
    max: i64,
) -> ApiResult<Option<i64>> {
    use crate::billing::{Currency, money::MICROS};
    let Some(v) = v else { return Ok(None) };
    match super::amount::unit() {
        Currency::Points => in_range(field, Some(v.0), min, max),
        c => {
            // The smallest positive amount is one micro: a minimum of 1 point means > 0.
            let lo = if min > 0 {
                1
            } else {
                min.saturating_mul(MICROS)
            };
            // Never past a quarter of the integer range, where the ledger's sums stay exact.
            let hi = max.saturating_mul(MICROS).min(i64::MAX / 4);
            if (lo..=hi).contains(&v.0) {
                Ok(Some(v.0))
            } else {
                Err(ApiError::invalid(
                    field,
                    format!(
                        "必须是 {min} 到 {max} {} 之间的金额（最多 6 位小数）",
                        c.code()
                    ),
                ))
            }
        }
    }
}

pub fn max_chars(field: &str, v: Option<&str>, max: usize) -> ApiResult<()> {
    match v {
        Some(s) if s.chars().count() > max => {
            Err(ApiError::invalid(field, format!("不能超过 {max} 个字符")))
        }
        _ => Ok(()),
    }
}

/// A metadata object of at most `MAX_METADATA_BYTES` serialized.
pub fn metadata_size(field: &str, v: Option<&Map<String, Value>>) -> ApiResult<()> {
    if let Some(m) = v {
        let size = serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > MAX_METADATA_BYTES {
            return Err(ApiError::invalid(
                field,
                format!("不能超过 {MAX_METADATA_BYTES} 字节"),
            ));
        }
    }
    Ok(())
}

pub fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// Parameters may come in the query string or, as in the seed guide's curl examples, in a
/// JSON body on a GET. The query string wins; unknown names are ignored (caches busters).
pub struct Params {
    merged: Map<String, Value>,
}

impl Params {
    pub fn new(query: HashMap<String, String>, body: Option<Value>) -> ApiResult<Self> {
        let mut merged = match body {
            None => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(ApiError::invalid("body", "必须是 JSON 对象")),
        };
        for (k, v) in query {
            merged.insert(k, Value::String(v));
        }
        Ok(Self { merged })
    }

    /// The parameters as `T`. Numbers are taken as their text, as if from the query string
    /// (integer fields parse either).
    pub fn get<T: DeserializeOwned>(&self) -> ApiResult<T> {
        let m: Map<String, Value> = self
            .merged
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::Number(n) => Value::String(n.to_string()),
                    other => other.clone(),
                };
                (k.clone(), v)
            })
            .collect();
        typed(Value::Object(m))
    }

    /// `limit` (1–1000, `default_limit` when absent) and `offset` (≥ 0, default 0).
    pub fn page(&self, default_limit: i64) -> ApiResult<(i64, i64)> {
        let p: super::shapes::PageQuery = self.get()?;
        Ok((
            in_range("limit", p.limit, 1, 1000)?.unwrap_or(default_limit),
            in_range("offset", p.offset, 0, i64::MAX)?.unwrap_or(0),
        ))
    }
}

#[cfg(test)]
mod describe_tests {
    use super::describe;

    #[test]
    fn serdes_words_become_the_apis() {
        assert_eq!(
            describe("invalid type: string \"abc\", expected an integer"),
            "类型错误，应为整数"
        );
        assert_eq!(
            describe("invalid type: integer `5`, expected a string"),
            "类型错误，应为字符串"
        );
        assert_eq!(describe("missing field `interval`"), "缺少字段 interval");
        assert_eq!(
            describe("unknown variant `hourly`, expected one of `daily`, `weekly`, `monthly`"),
            "取值无效，可选：daily, weekly, monthly"
        );
        assert_eq!(describe("expected an object"), "类型错误，应为对象");
        for m in ["something else entirely", "invalid length 3, expected 2"] {
            assert!(!describe(m).chars().any(|c| c.is_ascii_alphabetic()), "{m}");
        }
    }
}
