//! Timestamps on the wire: RFC 3339 in UTC (`2026-12-31T23:59:59Z`); stored as Unix ms.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `rfc3339` of Unix seconds (New API's time unit).
pub fn rfc3339_secs(secs: i64) -> String {
    rfc3339(secs.saturating_mul(1000))
}

pub fn rfc3339_opt(ms: Option<i64>) -> Option<String> {
    ms.map(rfc3339)
}

/// Parses an instant: RFC 3339, or a bare date `YYYY-MM-DD`. A bare date means the start of
/// that day, or its last second when `end_of_day` (an expiry date includes the whole day).
pub fn parse_instant(s: &str, end_of_day: bool) -> Option<i64> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_millis());
    }
    let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let t = if end_of_day {
        date.and_hms_opt(23, 59, 59)?
    } else {
        date.and_hms_opt(0, 0, 0)?
    };
    Some(t.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_dates() {
        let ms = parse_instant("2026-12-31T23:59:59Z", false).unwrap();
        assert_eq!(rfc3339(ms), "2026-12-31T23:59:59Z");
        assert_eq!(parse_instant("2026-12-31", true), Some(ms));
        assert_eq!(
            rfc3339(parse_instant("2026-12-31", false).unwrap()),
            "2026-12-31T00:00:00Z"
        );
        assert_eq!(parse_instant("2026-13-01", false), None);
        assert_eq!(parse_instant("soon", false), None);
    }
}
