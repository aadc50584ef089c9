//! Query parameters of the monitor API, validated with the seed's messages.

use std::collections::HashMap;

use super::MonitorError;

pub const SLOTS: [i64; 7] = [60, 300, 900, 1800, 3600, 14400, 86400];
pub const MAX_POINTS: i64 = 10_000;
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

pub struct Q<'a>(pub &'a HashMap<String, String>);

impl Q<'_> {
    fn raw(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, MonitorError> {
        match self.raw(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| MonitorError::invalid(name)),
        }
    }

    pub fn int_in(
        &self,
        name: &str,
        min: i64,
        max: i64,
        default: i64,
    ) -> Result<i64, MonitorError> {
        match self.int(name)? {
            None => Ok(default),
            Some(v) if (min..=max).contains(&v) => Ok(v),
            Some(_) => Err(MonitorError::invalid(name)),
        }
    }

    pub fn float_in(
        &self,
        name: &str,
        min: f64,
        max: f64,
        default: f64,
    ) -> Result<f64, MonitorError> {
        match self.raw(name) {
            None => Ok(default),
            Some(v) => match v.parse::<f64>() {
                Ok(x) if x.is_finite() && x >= min && x <= max => Ok(x),
                _ => Err(MonitorError::invalid(name)),
            },
        }
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.raw(name)
    }

    pub fn flag(&self, name: &str) -> bool {
        matches!(self.raw(name), Some("1" | "true" | "yes"))
    }

    /// `start_ms` / `end_ms`; absent → the last 24 hours.
    pub fn range(&self, now_ms: i64) -> Result<Range, MonitorError> {
        let end_ms = self.int("end_ms")?.unwrap_or(now_ms);
        let start_ms = self
            .int("start_ms")?
            .unwrap_or(end_ms.saturating_sub(DAY_MS));
        if start_ms < 0 {
            return Err(MonitorError::invalid("start_ms"));
        }
        if start_ms >= end_ms {
            return Err(MonitorError::bad("开始时间必须小于结束时间"));
        }
        Ok(Range { start_ms, end_ms })
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

pub fn slot(q: &Q, range: Range) -> Result<i64, MonitorError> {
    let slot = match q.int("slot_sec") {
        Err(_) => return Err(MonitorError::bad("不支持的时间粒度")),
        Ok(None) => auto_slot(range),
        Ok(Some(s)) if SLOTS.contains(&s) => s,
        Ok(Some(_)) => return Err(MonitorError::bad("不支持的时间粒度")),
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
            "quota_sum" => Ok(Metric::QuotaSum),
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
