//! Query parameters of the monitor API, validated with the seed's messages.

use std::collections::HashMap;

use serde::Deserialize;
use utoipa::IntoParams;

use super::error::MonitorError;
use crate::lenient;

pub const SLOTS: [i64; 7] = [60, 300, 900, 1800, 3600, 14400, 86400];
pub const MAX_POINTS: i64 = 10_000;
/// `big_request`'s default floor: an ordinary chat call (even a long one) is far below it.
pub const BIG_REQUEST_MIN_TOKENS: i64 = 10_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl Range {
    /// Unix seconds covering exactly the rows with `start_ms <= created_at*1000 < end_ms`.
    pub fn secs(&self) -> (i64, i64) {
        (ceil_div(self.start_ms, 1000), ceil_div(self.end_ms, 1000))
    }
}

fn ceil_div(a: i64, b: i64) -> i64 {
    -((-a).div_euclid(b))
}

/// Every query parameter of the monitor API, typed; each endpoint reads the ones it takes
/// (unknown names are ignored: cache busters). A value of the wrong type is refused with
/// the seed's message for it (`不支持的时间粒度` for `slot_sec`, else `参数无效: <name>`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MonitorQuery {
    /// Range start, Unix ms (default: `end_ms` − 24 h).
    #[serde(default, deserialize_with = "lenient::int")]
    #[param(minimum = 0)]
    pub start_ms: Option<i64>,
    /// Range end, exclusive, Unix ms (default: now).
    #[serde(default, deserialize_with = "lenient::int")]
    pub end_ms: Option<i64>,
    /// Series and subject: 60, 300, 900, 1800, 3600, 14400 or 86400 (default by range).
    #[serde(default, deserialize_with = "lenient::int")]
    #[param(schema_with = slot_schema)]
    pub slot_sec: Option<i64>,
    /// Top: `user`, `token`, `model` or `channel`.
    #[serde(default, deserialize_with = "lenient::text")]
    pub by: Option<String>,
    /// Top: `tokens`, `reqs`, `quota_sum` (alias `cost`); heatmap: `reqs`, `tokens`, `users`.
    #[serde(default, deserialize_with = "lenient::text")]
    pub metric: Option<String>,
    /// Top and subject 1–1000 (50); anomalies 1–10000 (100).
    #[serde(default, deserialize_with = "lenient::int")]
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<i64>,
    /// Anomalies: `burst`, `multi_user_token`, `ip_many_users` or `big_request`.
    #[serde(default, deserialize_with = "lenient::text")]
    pub rule: Option<String>,
    /// Burst: 1–86400 (60).
    #[serde(default, deserialize_with = "lenient::int")]
    #[param(minimum = 1, maximum = 86400)]
    pub window_sec: Option<i64>,
    /// Burst: 1–1000000 (120).
    #[serde(default, deserialize_with = "lenient::int")]
    #[param(minimum = 1, maximum = 1000000)]
    pub limit_per_token: Option<i64>,
    /// multi_user_token (2), ip_many_users (5): 1–1000000.
    #[serde(default, deserialize_with = "lenient::int")]
    #[param(minimum = 1, maximum = 1000000)]
    pub users_threshold: Option<i64>,
    /// multi_user_token: 1–1000000 (5).
    #[serde(default, deserialize_with = "lenient::int")]
    #[param(minimum = 1, maximum = 1000000)]
    pub ips_threshold: Option<i64>,
    /// big_request: 0–100 (3.0).
    #[serde(default, deserialize_with = "lenient::float")]
    #[param(minimum = 0, maximum = 100)]
    pub sigma: Option<f64>,
    /// big_request: the fewest tokens a flagged request has, whatever σ says (10 000); keeps
    /// uniform traffic (σ near 0) from flagging ordinary calls.
    #[serde(default, deserialize_with = "lenient::int")]
    #[param(minimum = 0, maximum = 1000000000)]
    pub min_tokens: Option<i64>,
    /// big_request: `model` (default) or `global`.
    #[serde(default, deserialize_with = "lenient::text")]
    pub scope: Option<String>,
    /// Heatmap: an IANA time zone (default from the config).
    #[serde(default, deserialize_with = "lenient::text")]
    pub tz: Option<String>,
    /// Subject: exactly one of `token_id`, `user_id`, `ip`.
    #[serde(default, deserialize_with = "lenient::int")]
    pub token_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    pub user_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub ip: Option<String>,
    /// CSV export: `series`, `top` or `anomalies`, with that query's parameters.
    #[serde(default, deserialize_with = "lenient::text")]
    pub query_type: Option<String>,
    /// `auto` (default) or `sql` (bypass the in-memory rollup).
    #[serde(default, deserialize_with = "lenient::text")]
    pub engine: Option<String>,
    /// `1` answers without the 60 s cache.
    #[serde(default, deserialize_with = "lenient::text")]
    pub nocache: Option<String>,
}

/// `slot_sec`: one of [`SLOTS`].
fn slot_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .enum_values(Some(SLOTS))
        .into()
}

impl MonitorQuery {
    pub fn parse(q: &HashMap<String, String>) -> Result<Self, MonitorError> {
        let map: serde_json::Map<String, serde_json::Value> = q
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let q: Self = serde_path_to_error::deserialize(serde_json::Value::Object(map)).map_err(
            |e| match e.path().to_string().as_str() {
                "slot_sec" => MonitorError::bad("不支持的时间粒度"),
                name => MonitorError::invalid(name),
            },
        )?;
        q.within_documented_bounds()?;
        Ok(q)
    }

    /// Every bounded parameter within its documented bounds, whichever endpoint reads it: a
    /// value out of range is refused even where that endpoint ignores the parameter, so the
    /// API documents one set of parameters and enforces exactly it.
    fn within_documented_bounds(&self) -> Result<(), MonitorError> {
        for (name, v, min, max) in [
            ("start_ms", self.start_ms, 0, i64::MAX),
            ("limit", self.limit, 1, 10_000),
            ("window_sec", self.window_sec, 1, 86_400),
            ("limit_per_token", self.limit_per_token, 1, 1_000_000),
            ("users_threshold", self.users_threshold, 1, 1_000_000),
            ("ips_threshold", self.ips_threshold, 1, 1_000_000),
            ("min_tokens", self.min_tokens, 0, 1_000_000_000),
        ] {
            int_in(name, v, min, max, 0)?;
        }
        float_in("sigma", self.sigma, 0.0, 100.0, 0.0)?;
        if self.slot_sec.is_some_and(|s| !SLOTS.contains(&s)) {
            return Err(MonitorError::bad("不支持的时间粒度"));
        }
        Ok(())
    }

    pub fn nocache(&self) -> bool {
        matches!(self.nocache.as_deref(), Some("1" | "true" | "yes"))
    }

    /// `start_ms` / `end_ms`; absent → the last 24 hours.
    pub fn range(&self, now_ms: i64) -> Result<Range, MonitorError> {
        let end_ms = self.end_ms.unwrap_or(now_ms);
        let start_ms = self.start_ms.unwrap_or(end_ms.saturating_sub(DAY_MS));
        if start_ms < 0 {
            return Err(MonitorError::invalid("start_ms"));
        }
        if start_ms >= end_ms {
            return Err(MonitorError::bad("开始时间必须小于结束时间"));
        }
        Ok(Range { start_ms, end_ms })
    }
}

/// `v` (or `default`) within `[min, max]`, else `参数无效: <name>`.
pub fn int_in(
    name: &str,
    v: Option<i64>,
    min: i64,
    max: i64,
    default: i64,
) -> Result<i64, MonitorError> {
    match v {
        None => Ok(default),
        Some(v) if (min..=max).contains(&v) => Ok(v),
        Some(_) => Err(MonitorError::invalid(name)),
    }
}

pub fn float_in(
    name: &str,
    v: Option<f64>,
    min: f64,
    max: f64,
    default: f64,
) -> Result<f64, MonitorError> {
    match v {
        None => Ok(default),
        Some(x) if x >= min && x <= max => Ok(x),
        Some(_) => Err(MonitorError::invalid(name)),
    }
}

/// The seed's table: < 6 h → 300, 6–24 h → 900, 1–7 d → 3600, > 7 d → 14400.
pub fn auto_slot(range: Range) -> i64 {
    let span = range.end_ms - range.start_ms;
    if span < 6 * HOUR_MS {
        300
    } else if span <= DAY_MS {
        900
    } else if span <= 7 * DAY_MS {
        3600
    } else {
        14400
    }
}

pub fn slot(q: &MonitorQuery, range: Range) -> Result<i64, MonitorError> {
    let slot = match q.slot_sec {
        None => auto_slot(range),
        Some(s) if SLOTS.contains(&s) => s,
        Some(_) => return Err(MonitorError::bad("不支持的时间粒度")),
    };
    let (first, end) = bucket_bounds(range, slot);
    if (end - first) / slot > MAX_POINTS {
        return Err(MonitorError::invalid("slot_sec"));
    }
    Ok(slot)
}

/// First bucket start and the end (exclusive) in seconds: buckets are UTC-aligned to
/// `slot` and cover `[start, end)`.
pub fn bucket_bounds(range: Range, slot: i64) -> (i64, i64) {
    let (s, e) = range.secs();
    let first = s.div_euclid(slot) * slot;
    let last_end = ceil_div(e, slot) * slot;
    (first, last_end)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    User,
    Token,
    Model,
    Channel,
}

impl Dim {
    pub fn parse(s: Option<&str>) -> Result<Self, MonitorError> {
        match s.unwrap_or("user") {
            "user" => Ok(Dim::User),
            "token" => Ok(Dim::Token),
            "model" => Ok(Dim::Model),
            "channel" => Ok(Dim::Channel),
            _ => Err(MonitorError::bad("不支持的维度")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Dim::User => "user",
            Dim::Token => "token",
            Dim::Model => "model",
            Dim::Channel => "channel",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Tokens,
    Reqs,
    QuotaSum,
}

impl Metric {
    pub fn parse(s: Option<&str>) -> Result<Self, MonitorError> {
        match s.unwrap_or("tokens") {
            "tokens" => Ok(Metric::Tokens),
            "reqs" => Ok(Metric::Reqs),
            // `cost`: what the calls were charged — the same sum, named as money mode reads it.
            "quota_sum" | "cost" => Ok(Metric::QuotaSum),
            _ => Err(MonitorError::bad("不支持的指标")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Tokens => "tokens",
            Metric::Reqs => "reqs",
            Metric::QuotaSum => "quota_sum",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Burst,
    MultiUserToken,
    IpManyUsers,
    BigRequest,
}

impl Rule {
    pub fn parse(s: Option<&str>) -> Result<Self, MonitorError> {
        match s.unwrap_or("burst") {
            "burst" => Ok(Rule::Burst),
            "multi_user_token" => Ok(Rule::MultiUserToken),
            "ip_many_users" => Ok(Rule::IpManyUsers),
            "big_request" => Ok(Rule::BigRequest),
            _ => Err(MonitorError::bad("不支持的规则")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Burst => "burst",
            Rule::MultiUserToken => "multi_user_token",
            Rule::IpManyUsers => "ip_many_users",
            Rule::BigRequest => "big_request",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_slots_follow_the_seed_table() {
        let r = |h: i64| Range {
            start_ms: 0,
            end_ms: h * HOUR_MS,
        };
        assert_eq!(auto_slot(r(1)), 300);
        assert_eq!(auto_slot(r(6)), 900);
        assert_eq!(auto_slot(r(24)), 900);
        assert_eq!(auto_slot(r(25)), 3600);
        assert_eq!(auto_slot(r(24 * 7)), 3600);
        assert_eq!(auto_slot(r(24 * 8)), 14400);
    }

    #[test]
    fn the_query_is_typed_with_the_seeds_messages() {
        let parse = |pairs: &[(&str, &str)]| {
            let m: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            MonitorQuery::parse(&m).map_err(|e| e.to_string())
        };
        let q = parse(&[
            ("start_ms", " 5 "),
            ("by", " "),
            ("sigma", "2.5"),
            ("x", "y"),
        ])
        .unwrap();
        assert_eq!((q.start_ms, q.by, q.sigma), (Some(5), None, Some(2.5)));
        assert_eq!(
            parse(&[("start_ms", "abc")]).unwrap_err(),
            "参数无效: start_ms"
        );
        assert_eq!(parse(&[("slot_sec", "x")]).unwrap_err(), "不支持的时间粒度");
        assert_eq!(parse(&[("sigma", "NaN")]).unwrap_err(), "参数无效: sigma");
        assert_eq!(
            parse(&[("limit", "99999999999999999999")]).unwrap_err(),
            "参数无效: limit"
        );
        assert!(parse(&[("nocache", "1")]).unwrap().nocache());
        assert_eq!(
            int_in("limit", Some(0), 1, 10, 5).unwrap_err().to_string(),
            "参数无效: limit"
        );
        assert_eq!(int_in("limit", None, 1, 10, 5).unwrap(), 5);
    }

    #[test]
    fn bucket_bounds_cover_start_to_end() {
        let r = Range {
            start_ms: 90_500,
            end_ms: 250_000,
        };
        assert_eq!(r.secs(), (91, 250));
        assert_eq!(bucket_bounds(r, 60), (60, 300));
    }
}

/// What the heatmap counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeatMetric {
    Reqs,
    Tokens,
    Users,
}
