//! The price table of money mode: prices per 1 M tokens by model name or glob (optionally for
//! one upstream), time windows that select another price set (peak / off-peak, holidays),
//! and the cost of a call, computed in integers once and rounded in the caller's favour.

use chrono::{Datelike, NaiveDate, TimeZone, Timelike, Weekday};
use chrono_tz::Tz;
use serde::Serialize;

use super::usage::Usage;
use crate::glob::glob_match;

/// One price set, in micros of the currency per 1 M tokens (per call for `per_request`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PriceSet {
    pub input: i64,
    pub cached_input: i64,
    pub cache_write: i64,
    pub output: i64,
    pub per_request: i64,
}

impl PriceSet {
    /// Every price multiplied by `factor` (micros: 500 000 is one half), rounded down.
    pub fn scaled(self, factor: i64) -> Self {
        let f = |p: i64| (i128::from(p) * i128::from(factor) / 1_000_000) as i64;
        Self {
            input: f(self.input),
            cached_input: f(self.cached_input),
            cache_write: f(self.cache_write),
            output: f(self.output),
            per_request: f(self.per_request),
        }
    }

    /// The highest of each price of two sets (a hold prices the worst case).
    pub fn max(self, o: Self) -> Self {
        Self {
            input: self.input.max(o.input),
            cached_input: self.cached_input.max(o.cached_input),
            cache_write: self.cache_write.max(o.cache_write),
            output: self.output.max(o.output),
            per_request: self.per_request.max(o.per_request),
        }
    }

    /// The cost of `u` in micros: Σ class tokens × class price ÷ 1 M, summed exactly and
    /// divided once, the remainder dropped (in the caller's favour), plus the per-call price.
    pub fn cost(&self, u: &Usage) -> i64 {
        let u = u.clamped();
        let t = |n: i64, p: i64| i128::from(n) * i128::from(p);
        let micro_millionths = t(u.input, self.input)
            + t(u.cached, self.cached_input)
            + t(u.cache_write, self.cache_write)
            + t(u.output, self.output);
        let tokens = micro_millionths / 1_000_000;
        i64::try_from(tokens)
            .unwrap_or(i64::MAX)
            .saturating_add(self.per_request)
    }
}

/// A priced model: its name or glob, the upstream it is limited to (if any), its prices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub pattern: String,
    pub upstream: Option<String>,
    pub prices: PriceSet,
}

impl Entry {
    fn matches(&self, model: &str, upstream: Option<&str>) -> bool {
        glob_match(&self.pattern, model)
            && match (&self.upstream, upstream) {
                (None, _) => true,
                (Some(want), Some(got)) => want == got,
                // Not yet routed: any upstream's entry may apply (holds take the worst).
                (Some(_), None) => true,
            }
    }

    /// Exact names before globs, longer globs before shorter, one upstream's before all's.
    fn specificity(&self) -> (bool, bool, usize) {
        (
            self.upstream.is_some(),
            !self.pattern.contains(['*', '?']),
            self.pattern.len(),
        )
    }
}

/// How a window changes the prices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adjust {
    /// Every price times this (micros: 500 000 is half).
    Factor(i64),
    /// A table of its own (models it does not list keep the base price).
    Prices(Vec<Entry>),
}

/// A time window selecting other prices: on `days` (holidays count as Sundays), within
/// `hours` (minutes of the day, `[start, end)`, wrapping past midnight when end < start),
/// in the time zone `tz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub name: String,
    pub tz: Tz,
    pub days: Vec<Weekday>,
    pub hours: Vec<(u32, u32)>,
    pub holidays: Vec<NaiveDate>,
    pub adjust: Adjust,
}

impl Window {
    pub fn contains(&self, at_ms: i64) -> bool {
        let Some(t) = self.tz.timestamp_millis_opt(at_ms).single() else {
            return false;
        };
        let minute = t.hour() * 60 + t.minute();
        let in_hours = self.hours.is_empty()
            || self.hours.iter().any(|&(s, e)| {
                if s <= e {
                    (s..e).contains(&minute)
                } else {
                    minute >= s || minute < e
                }
            });
        // A window past midnight belongs to the day it started on.
        let started_yesterday = self.hours.iter().any(|&(s, e)| s > e && minute < e);
        let date = if started_yesterday {
            t.date_naive().pred_opt().unwrap_or(t.date_naive())
        } else {
            t.date_naive()
        };
        let day = if self.holidays.contains(&date) {
            Weekday::Sun
        } else {
            date.weekday()
        };
        in_hours && (self.days.is_empty() || self.days.contains(&day))
    }
}

/// The effective table: base entries and windows, in the order they apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceTable {
    pub entries: Vec<Entry>,
    pub windows: Vec<Window>,
}

/// The prices that apply to one call, and the window that chose them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote<'a> {
    pub prices: PriceSet,
    pub window: Option<&'a str>,
}

fn best<'a>(entries: &'a [Entry], model: &str, upstream: Option<&str>) -> Option<&'a Entry> {
    entries
        .iter()
        .filter(|e| e.matches(model, upstream))
        .max_by_key(|e| e.specificity())
}

impl PriceTable {
    /// The prices of `model` at `at_ms`, served by `upstream` (`None`: not routed yet, so the
    /// highest of every upstream's entry). `None` when the model has no price.
    pub fn quote(&self, model: &str, upstream: Option<&str>, at_ms: i64) -> Option<Quote<'_>> {
        let base = match upstream {
            Some(_) => best(&self.entries, model, upstream)?.prices,
            None => self
                .entries
                .iter()
                .filter(|e| e.matches(model, None))
                .map(|e| e.prices)
                .reduce(PriceSet::max)?,
        };
        for w in self.windows.iter().filter(|w| w.contains(at_ms)) {
            let prices = match &w.adjust {
                Adjust::Factor(f) => base.scaled(*f),
                Adjust::Prices(own) => match best(own, model, upstream) {
                    Some(e) => e.prices,
                    None => continue,
                },
            };
            return Some(Quote {
                prices,
                window: Some(&w.name),
            });
        }
        Some(Quote {
            prices: base,
            window: None,
        })
    }
}

/// DeepSeek's list prices as shipped, per 1 M tokens, off-peak (the base), read 2026-12-03
/// from copies of DeepSeek's "Models & Pricing" page (api-docs.deepseek.com/quick_start/pricing)
/// and its July 2026 peak-pricing notice: `deepseek-v4-flash` and `deepseek-v4-pro` (cache hit,
/// cache miss, output; reasoning is billed as output), `deepseek-chat` / `deepseek-reasoner`
/// as the aliases of V4 Flash they became. [`deepseek_peak`] doubles them in the peak hours.
/// Configured `[billing.prices]` entries override them; `[billing] defaults = false` drops
/// them.
pub fn deepseek_defaults(currency: super::money::Currency) -> Vec<Entry> {
    use super::money::Currency;
    // (cache hit, cache miss, output) in micros per 1 M tokens.
    let (flash, pro) = match currency {
        Currency::Cny => (
            (20_000, 1_000_000, 2_000_000),
            (25_000, 3_000_000, 6_000_000),
        ),
        Currency::Usd => ((2_800, 140_000, 280_000), (3_625, 435_000, 870_000)),
        Currency::Points => return Vec::new(),
    };
    [
        ("deepseek-v4-flash", flash),
        ("deepseek-v4-pro", pro),
        ("deepseek-chat", flash),
        ("deepseek-reasoner", flash),
    ]
    .into_iter()
    .map(|(m, (hit, miss, out))| Entry {
        pattern: m.to_owned(),
        upstream: None,
        prices: PriceSet {
            input: miss,
            cached_input: hit,
            // DeepSeek bills no cache writes.
            cache_write: miss,
            output: out,
            per_request: 0,
        },
    })
    .collect()
}

/// DeepSeek's peak hours (since its V4 launch, July 2026): 09:00–12:00 and 14:00–18:00
/// Beijing time on weekdays, every class at twice the base price — for DeepSeek's models
/// only (other models keep their price in these hours).
pub fn deepseek_peak(currency: super::money::Currency) -> Option<Window> {
    let entries: Vec<Entry> = deepseek_defaults(currency)
        .into_iter()
        .map(|e| Entry {
            prices: e.prices.scaled(2_000_000),
            ..e
        })
        .collect();
    if entries.is_empty() {
        return None;
    }
    use Weekday::*;
    Some(Window {
        name: "deepseek-peak".to_owned(),
        tz: chrono_tz::Asia::Shanghai,
        days: vec![Mon, Tue, Wed, Thu, Fri],
        hours: vec![(9 * 60, 12 * 60), (14 * 60, 18 * 60)],
        holidays: Vec::new(),
        adjust: Adjust::Prices(entries),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(input: i64, cached: i64, write: i64, output: i64) -> PriceSet {
        PriceSet {
            input,
            cached_input: cached,
            cache_write: write,
            output,
            per_request: 0,
        }
    }

    #[test]
    fn cost_is_summed_then_rounded_down_once() {
        // ¥2 / 1M input, ¥0.5 / 1M cached, ¥8 / 1M output.
        let p = set(2_000_000, 500_000, 0, 8_000_000);
        let u = Usage {
            input: 1,
            cached: 1,
            output: 1,
            ..Usage::default()
        };
        // 2 + 0.5 + 8 = 10.5 micros → 10 (not 2 + 0 + 8 rounded per class, not 11).
        assert_eq!(p.cost(&u), 10);
        let u = Usage {
            input: 1_000_000,
            cached: 3_000_000,
            output: 250_000,
            reasoning: 100_000,
            ..Usage::default()
        };
        assert_eq!(p.cost(&u), 2_000_000 + 1_500_000 + 2_000_000);
        let fixed = PriceSet {
            per_request: 30_000,
            ..PriceSet::default()
        };
        assert_eq!(fixed.cost(&u), 30_000);
    }

    fn table() -> PriceTable {
        let e = |pattern: &str, upstream: Option<&str>, input| Entry {
            pattern: pattern.into(),
            upstream: upstream.map(str::to_owned),
            prices: set(input, 0, 0, input),
        };
        PriceTable {
            entries: vec![
                e("deepseek-*", None, 1),
                e("deepseek-chat", None, 2),
                e("deepseek-chat", Some("cheap"), 3),
            ],
            windows: vec![Window {
                name: "off-peak".into(),
                tz: chrono_tz::Asia::Shanghai,
                days: vec![Weekday::Sat, Weekday::Sun],
                hours: vec![],
                holidays: vec![NaiveDate::from_ymd_opt(2026, 10, 1).unwrap()],
                adjust: Adjust::Factor(500_000),
            }],
        }
    }

    fn at(y: i32, m: u32, d: u32, h: u32) -> i64 {
        chrono_tz::Asia::Shanghai
            .with_ymd_and_hms(y, m, d, h, 0, 0)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn the_most_specific_entry_and_the_window_apply() {
        let t = table();
        let wed = at(2026, 12, 2, 10);
        let q = |m, up| t.quote(m, up, wed).map(|q| q.prices.input);
        assert_eq!(q("deepseek-coder", Some("x")), Some(1));
        assert_eq!(q("deepseek-chat", Some("x")), Some(2));
        assert_eq!(q("deepseek-chat", Some("cheap")), Some(3));
        assert_eq!(q("deepseek-chat", None), Some(3), "not routed: the highest");
        assert_eq!(q("gpt-4o", Some("x")), None, "no price, no quote");
        // Saturday in Beijing, and a holiday on a Thursday: the window's half price.
        let sat = t
            .quote("deepseek-chat", Some("x"), at(2026, 12, 5, 10))
            .unwrap();
        assert_eq!((sat.prices.input, sat.window), (1, Some("off-peak")));
        let holiday = t
            .quote("deepseek-chat", Some("x"), at(2026, 10, 1, 10))
            .unwrap();
        assert_eq!(holiday.window, Some("off-peak"));
    }

    #[test]
    fn hours_past_midnight_belong_to_the_day_they_start() {
        let w = Window {
            name: "night".into(),
            tz: chrono_tz::Asia::Shanghai,
            days: vec![Weekday::Fri],
            hours: vec![(22 * 60, 6 * 60)],
            holidays: vec![],
            adjust: Adjust::Factor(0),
        };
        assert!(w.contains(at(2026, 12, 4, 23)), "Friday 23:00");
        assert!(
            w.contains(at(2026, 12, 5, 3)),
            "Saturday 03:00, Friday's night"
        );
        assert!(!w.contains(at(2026, 12, 5, 23)), "Saturday 23:00");
        assert!(!w.contains(at(2026, 12, 4, 12)), "Friday noon");
    }

    proptest! {
        /// The cost equals the hand computation with exact rationals, to the micro.
        #[test]
        fn cost_matches_the_hand_computation(
            input in 0i64..50_000_000, cached in 0i64..50_000_000,
            write in 0i64..5_000_000, output in 0i64..10_000_000,
            p in (0i64..100_000_000, 0i64..100_000_000, 0i64..100_000_000, 0i64..100_000_000),
            per_request in 0i64..1_000_000,
        ) {
            let prices = PriceSet { input: p.0, cached_input: p.1, cache_write: p.2, output: p.3, per_request };
            let u = Usage { input, cached, cache_write: write, output, reasoning: output / 2 };
            let exact_millionths = (input as i128) * (p.0 as i128) + (cached as i128) * (p.1 as i128)
                + (write as i128) * (p.2 as i128) + (output as i128) * (p.3 as i128);
            let cost = prices.cost(&u) as i128;
            // Never above the exact amount, and less by under one micro.
            prop_assert!((cost - per_request as i128) * 1_000_000 <= exact_millionths);
            prop_assert!(exact_millionths - (cost - per_request as i128) * 1_000_000 < 1_000_000);
        }
    }
}
