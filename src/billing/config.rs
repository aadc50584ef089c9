//! `[billing.prices]` and `[[billing.windows]]` of money mode, read into a [`PriceTable`]:
//! prices per 1 M tokens as TOML numbers or decimal strings (six places at most), model keys
//! `"<model or glob>"` or `"<model or glob>@<upstream>"`, windows by days, hours, time zone and
//! holidays with a `factor` or prices of their own.

use std::collections::BTreeMap;

use chrono::{NaiveDate, Weekday};
use serde::Deserialize;

use super::money::{self, BadAmount, Currency};
use super::policy::{Billing, BillingMode, Price};
use super::prices::{
    Adjust, Entry, PriceSet, PriceTable, Window, deepseek_defaults, deepseek_peak,
};

/// A price as configured: a number or a decimal string.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Decimal {
    Number(f64),
    Text(String),
}

impl Decimal {
    pub fn micros(&self) -> Result<i64, BadAmount> {
        let v = match self {
            Decimal::Number(n) => money::from_config_number(*n)?,
            Decimal::Text(s) => money::parse_decimal(s)?,
        };
        if v < 0 {
            return Err(BadAmount(format!("{v} (negative)")));
        }
        Ok(v)
    }
}

/// The money-mode fields of one `[billing.prices."<model>"]` entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct MoneyPrices {
    pub input: Option<Decimal>,
    pub cached_input: Option<Decimal>,
    pub cache_write: Option<Decimal>,
    pub output: Option<Decimal>,
    pub per_request: Option<Decimal>,
}

/// One `[[billing.windows]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowFile {
    pub name: String,
    /// IANA zone, e.g. `Asia/Shanghai` (default UTC).
    pub tz: Option<String>,
    /// `["mon-fri"]`, `["sat", "sun"]`, `["weekdays"]`, `["weekend"]` (default every day).
    #[serde(default)]
    pub days: Vec<String>,
    /// `["08:30-12:00", "14:00-18:00"]`; an end before the start runs past midnight.
    #[serde(default)]
    pub hours: Vec<String>,
    /// `["2026-10-01"]`: dates counted as Sundays.
    #[serde(default)]
    pub holidays: Vec<String>,
    pub factor: Option<Decimal>,
    #[serde(default)]
    pub prices: BTreeMap<String, MoneyPrices>,
}

/// What is wrong with the money configuration: the setting and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub setting: &'static str,
    pub why: String,
}

fn invalid(setting: &'static str, why: impl Into<String>) -> Invalid {
    Invalid {
        setting,
        why: why.into(),
    }
}

fn price_set(key: &str, p: &MoneyPrices) -> Result<PriceSet, Invalid> {
    let get = |d: &Option<Decimal>| -> Result<Option<i64>, Invalid> {
        d.as_ref()
            .map(|d| d.micros())
            .transpose()
            .map_err(|e| invalid("billing.prices", format!("{key}: {e}")))
    };
    let input = get(&p.input)?;
    let output = get(&p.output)?;
    let per_request = get(&p.per_request)?;
    if input.is_none() && output.is_none() && per_request.is_none() {
        return Err(invalid(
            "billing.prices",
            format!("{key}: needs input and output prices, or per_request"),
        ));
    }
    let input = input.unwrap_or(0);
    Ok(PriceSet {
        input,
        // Without a cache price, cache hits and writes cost what input costs.
        cached_input: get(&p.cached_input)?.unwrap_or(input),
        cache_write: get(&p.cache_write)?.unwrap_or(input),
        output: output.unwrap_or(0),
        per_request: per_request.unwrap_or(0),
    })
}

/// `"<model>@<upstream>"` → its entry.
pub fn entries<'a>(
    prices: impl IntoIterator<Item = (&'a String, &'a MoneyPrices)>,
) -> Result<Vec<Entry>, Invalid> {
    prices
        .into_iter()
        .map(|(key, p)| {
            let (pattern, upstream) = match key.rsplit_once('@') {
                Some((m, u)) if !m.is_empty() && !u.is_empty() => (m, Some(u.to_owned())),
                _ => (key.as_str(), None),
            };
            Ok(Entry {
                pattern: pattern.to_owned(),
                upstream,
                prices: price_set(key, p)?,
            })
        })
        .collect()
}

fn weekday(s: &str) -> Option<Weekday> {
    s.parse::<Weekday>().ok()
}

fn days(list: &[String]) -> Result<Vec<Weekday>, Invalid> {
    use Weekday::*;
    let mut out = Vec::new();
    for d in list {
        let d = d.trim().to_ascii_lowercase();
        match d.as_str() {
            "weekdays" => out.extend([Mon, Tue, Wed, Thu, Fri]),
            "weekend" | "weekends" => out.extend([Sat, Sun]),
            _ => match d.split_once('-') {
                Some((a, b)) => {
                    let (Some(a), Some(b)) = (weekday(a), weekday(b)) else {
                        return Err(invalid("billing.windows.days", d.clone()));
                    };
                    let mut w = a;
                    out.push(w);
                    while w != b {
                        w = w.succ();
                        out.push(w);
                    }
                }
                None => {
                    out.push(weekday(&d).ok_or_else(|| invalid("billing.windows.days", d.clone()))?)
                }
            },
        }
    }
    Ok(out)
}

fn minute_of(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

fn hours(list: &[String]) -> Result<Vec<(u32, u32)>, Invalid> {
    list.iter()
        .map(|r| {
            r.split_once('-')
                .and_then(|(a, b)| Some((minute_of(a)?, minute_of(b)?)))
                .filter(|(a, b)| a != b)
                .ok_or_else(|| invalid("billing.windows.hours", format!("{r:?} (HH:MM-HH:MM)")))
        })
        .collect()
}

/// One window, checked.
pub fn window(w: &WindowFile) -> Result<Window, Invalid> {
    let tz = match &w.tz {
        None => chrono_tz::UTC,
        Some(z) => z
            .parse()
            .map_err(|_| invalid("billing.windows.tz", format!("{}: {z:?}", w.name)))?,
    };
    let holidays = w
        .holidays
        .iter()
        .map(|d| {
            NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map_err(|_| invalid("billing.windows.holidays", format!("{d:?} (YYYY-MM-DD)")))
        })
        .collect::<Result<_, _>>()?;
    let adjust = match (&w.factor, w.prices.is_empty()) {
        (Some(f), true) => Adjust::Factor(
            f.micros()
                .map_err(|e| invalid("billing.windows.factor", format!("{}: {e}", w.name)))?,
        ),
        (None, false) => Adjust::Prices(entries(&w.prices)?),
        _ => {
            return Err(invalid(
                "billing.windows",
                format!("{}: give either factor or prices", w.name),
            ));
        }
    };
    Ok(Window {
        name: w.name.clone(),
        tz,
        days: days(&w.days)?,
        hours: hours(&w.hours)?,
        holidays,
        adjust,
    })
}

/// The whole table: configured entries over the shipped defaults (a configured key replaces
/// the default of the same name), then the windows.
pub fn table(
    defaults: Vec<Entry>,
    prices: &BTreeMap<String, MoneyPrices>,
    windows: &[WindowFile],
) -> Result<PriceTable, Invalid> {
    let configured = entries(prices)?;
    let mut all: Vec<Entry> = defaults
        .into_iter()
        .filter(|d| {
            !configured
                .iter()
                .any(|c| c.pattern == d.pattern && c.upstream == d.upstream)
        })
        .collect();
    all.extend(configured);
    Ok(PriceTable {
        entries: all,
        windows: windows.iter().map(window).collect::<Result<_, _>>()?,
    })
}

/// One `[billing.prices."<model>"]`: tokens mode's points per 1 000 (`prompt`,
/// `completion`) or money mode's prices per 1 M tokens.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriceFile {
    pub prompt: Option<f64>,
    pub completion: Option<f64>,
    pub input: Option<Decimal>,
    pub cached_input: Option<Decimal>,
    pub cache_write: Option<Decimal>,
    pub output: Option<Decimal>,
    pub per_request: Option<Decimal>,
}

impl PriceFile {
    fn money(&self) -> MoneyPrices {
        MoneyPrices {
            input: self.input.clone(),
            cached_input: self.cached_input.clone(),
            cache_write: self.cache_write.clone(),
            output: self.output.clone(),
            per_request: self.per_request.clone(),
        }
    }
}

/// `[billing]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingFile {
    pub mode: Option<String>,
    /// Money mode: `CNY` or `USD`.
    pub currency: Option<String>,
    /// Money mode: whether DeepSeek's shipped prices and peak hours apply (default true).
    pub defaults: Option<bool>,
    pub request_cost: Option<i64>,
    pub default_max_tokens: Option<i64>,
    pub default_price: Option<Price>,
    #[serde(default)]
    pub prices: BTreeMap<String, PriceFile>,
    #[serde(default)]
    pub windows: Vec<WindowFile>,
}

fn mode_and_currency(f: &BillingFile) -> Result<(BillingMode, Currency), Invalid> {
    let mode = match f.mode.as_deref().unwrap_or("requests") {
        "requests" => BillingMode::Requests,
        "tokens" => BillingMode::Tokens,
        "money" => BillingMode::Money,
        other => {
            return Err(invalid(
                "billing.mode",
                format!("{other} (requests|tokens|money)"),
            ));
        }
    };
    let currency = match (mode, f.currency.as_deref()) {
        (BillingMode::Money, None) => {
            return Err(invalid("billing.currency", "money mode needs CNY or USD"));
        }
        (BillingMode::Money, Some(c)) => match Currency::parse(c) {
            Some(c) if c != Currency::Points => c,
            _ => return Err(invalid("billing.currency", format!("{c} (CNY|USD)"))),
        },
        (_, Some(c)) => {
            return Err(invalid(
                "billing.currency",
                format!("{c}: a currency is for mode = \"money\""),
            ));
        }
        (_, None) => Currency::Points,
    };
    Ok((mode, currency))
}

/// Tokens mode's points per 1 000 tokens, checked.
fn token_prices(prices: &BTreeMap<String, PriceFile>) -> Result<BTreeMap<String, Price>, Invalid> {
    let mut out = BTreeMap::new();
    for (m, p) in prices {
        let (Some(prompt), Some(completion)) = (p.prompt, p.completion) else {
            return Err(invalid(
                "billing.prices",
                format!("{m}: tokens mode needs prompt and completion (points per 1 000 tokens)"),
            ));
        };
        if !(prompt >= 0.0 && completion >= 0.0 && prompt.is_finite() && completion.is_finite()) {
            return Err(invalid(
                "billing.prices",
                format!("{m}: prices must be ≥ 0"),
            ));
        }
        out.insert(m.clone(), Price { prompt, completion });
    }
    Ok(out)
}

/// Money mode's table: the configured prices and windows, over DeepSeek's shipped prices and
/// peak hours unless `defaults = false`.
fn money_table(f: &BillingFile, currency: Currency) -> Result<PriceTable, Invalid> {
    let mut money = BTreeMap::new();
    for (m, p) in &f.prices {
        if p.prompt.is_some() || p.completion.is_some() {
            return Err(invalid(
                "billing.prices",
                format!(
                    "{m}: prompt/completion are tokens-mode prices; money mode takes input, cached_input, cache_write, output, per_request"
                ),
            ));
        }
        money.insert(m.clone(), p.money());
    }
    let shipped = f.defaults.unwrap_or(true);
    let defaults = if shipped {
        deepseek_defaults(currency)
    } else {
        Vec::new()
    };
    let mut t = table(defaults, &money, &f.windows)?;
    // The operator's windows first (the first that contains a call's time applies).
    if shipped && let Some(peak) = deepseek_peak(currency) {
        t.windows.push(peak);
    }
    Ok(t)
}

/// `[billing]` read and checked (`None`: the defaults, the seed's points per request).
pub fn billing(f: Option<BillingFile>) -> Result<Billing, Invalid> {
    let f = f.unwrap_or_default();
    let (mode, currency) = mode_and_currency(&f)?;
    let d = Billing::default();
    let request_cost = f.request_cost.unwrap_or(d.request_cost);
    if request_cost < 0 {
        return Err(invalid("billing.request_cost", "not negative"));
    }
    let (prices, table) = if mode == BillingMode::Money {
        (BTreeMap::new(), money_table(&f, currency)?)
    } else {
        if !f.windows.is_empty() {
            return Err(invalid(
                "billing.windows",
                "time windows are for mode = \"money\"",
            ));
        }
        (token_prices(&f.prices)?, PriceTable::default())
    };
    Ok(Billing {
        mode,
        currency,
        request_cost,
        default_max_tokens: f
            .default_max_tokens
            .unwrap_or(d.default_max_tokens)
            .clamp(1, MAX_TOKENS),
        default_price: f.default_price.unwrap_or(d.default_price),
        prices,
        table,
    })
}

/// The largest `max_tokens` a caller may ask for: no model answers more, and larger numbers
/// would only overflow the sums that follow.
pub const MAX_TOKENS: i64 = 10_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peak_off_peak_configuration_reads() {
        let toml = r#"
            [prices."deepseek-chat"]
            input = 2
            cached_input = "0.5"
            output = 8.0
            [prices."glm-*@zhipu"]
            per_request = 0.01
            [[windows]]
            name = "off-peak"
            tz = "Asia/Shanghai"
            days = ["mon-fri"]
            hours = ["00:30-08:30"]
            holidays = ["2026-10-01"]
            factor = 0.5
        "#;
        #[derive(Deserialize)]
        struct F {
            prices: BTreeMap<String, MoneyPrices>,
            windows: Vec<WindowFile>,
        }
        let f: F = toml::from_str(toml).unwrap();
        let t = table(
            super::super::prices::deepseek_defaults(super::super::money::Currency::Cny),
            &f.prices,
            &f.windows,
        )
        .unwrap();
        let chat = t
            .entries
            .iter()
            .find(|e| e.pattern == "deepseek-chat")
            .unwrap();
        assert_eq!(chat.prices.input, 2_000_000, "configured over the default");
        assert_eq!(chat.prices.cached_input, 500_000);
        assert_eq!(
            chat.prices.cache_write, 2_000_000,
            "no cache-write price: input's"
        );
        assert!(t.entries.iter().any(|e| e.pattern == "deepseek-reasoner"));
        let glm = t.entries.iter().find(|e| e.pattern == "glm-*").unwrap();
        assert_eq!(glm.upstream.as_deref(), Some("zhipu"));
        assert_eq!(glm.prices.per_request, 10_000);
        let w = &t.windows[0];
        assert_eq!(w.days.len(), 5);
        assert_eq!(w.hours, vec![(30, 510)]);
        assert_eq!(w.adjust, Adjust::Factor(500_000));
    }

    #[test]
    fn bad_settings_name_themselves() {
        let w = |f: &str| -> WindowFile { toml::from_str(&format!("name = \"w\"\n{f}")).unwrap() };
        assert_eq!(
            window(&w("tz = \"Mars/Olympus\"\nfactor = 1"))
                .unwrap_err()
                .setting,
            "billing.windows.tz"
        );
        assert_eq!(
            window(&w("days = [\"funday\"]\nfactor = 1"))
                .unwrap_err()
                .setting,
            "billing.windows.days"
        );
        assert_eq!(
            window(&w("hours = [\"25:00-26:00\"]\nfactor = 1"))
                .unwrap_err()
                .setting,
            "billing.windows.hours"
        );
        assert_eq!(window(&w("")).unwrap_err().setting, "billing.windows");
        let p: MoneyPrices = toml::from_str("input = 0.0000001\noutput = 1").unwrap();
        assert!(price_set("m", &p).is_err());
        let p: MoneyPrices = toml::from_str("cached_input = 1").unwrap();
        assert!(price_set("m", &p).is_err());
    }
}
