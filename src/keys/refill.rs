//! UTC period starts for quota refills. A reset is due when the current period's start is
//! later than the last applied one, which makes applying it idempotent.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use super::model::RefillInterval;

const DAY_MS: i64 = 86_400_000;

/// Start (ms) of the period containing `now_ms`. Weeks start on Monday (ISO 8601).
pub fn period_start(interval: RefillInterval, now_ms: i64) -> i64 {
    match interval {
        RefillInterval::Daily => now_ms.div_euclid(DAY_MS) * DAY_MS,
        RefillInterval::Weekly => {
            let day = now_ms.div_euclid(DAY_MS);
            // 1970-01-01 was a Thursday: +3 makes Monday the first day of a week.
            let weekday_from_monday = (day + 3).rem_euclid(7);
            (day - weekday_from_monday) * DAY_MS
        }
        RefillInterval::Monthly => {
            let dt = DateTime::<Utc>::from_timestamp_millis(now_ms).unwrap_or_default();
            NaiveDate::from_ymd_opt(dt.year(), dt.month(), 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc().timestamp_millis())
                .unwrap_or(now_ms)
        }
    }
}

/// The three period starts at once, so the store can pick by the row's own interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodStarts {
    pub daily: i64,
    pub weekly: i64,
    pub monthly: i64,
}

impl PeriodStarts {
    pub fn at(now_ms: i64) -> Self {
        Self {
            daily: period_start(RefillInterval::Daily, now_ms),
            weekly: period_start(RefillInterval::Weekly, now_ms),
            monthly: period_start(RefillInterval::Monthly, now_ms),
        }
    }

    pub fn for_interval(&self, interval: RefillInterval) -> i64 {
        match interval {
            RefillInterval::Daily => self.daily,
            RefillInterval::Weekly => self.weekly,
            RefillInterval::Monthly => self.monthly,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn daily_weekly_monthly_boundaries() {
        let t = ms("2026-11-21T15:30:00Z"); // a Saturday
        assert_eq!(
            period_start(RefillInterval::Daily, t),
            ms("2026-11-21T00:00:00Z")
        );
        assert_eq!(
            period_start(RefillInterval::Weekly, t),
            ms("2026-11-16T00:00:00Z")
        );
        assert_eq!(
            period_start(RefillInterval::Monthly, t),
            ms("2026-11-01T00:00:00Z")
        );
        let monday = ms("2026-11-16T00:00:00Z");
        assert_eq!(period_start(RefillInterval::Weekly, monday), monday);
        assert_eq!(
            period_start(RefillInterval::Weekly, monday - 1),
            ms("2026-11-09T00:00:00Z")
        );
    }
}
