//! What a call costs in the deployment's billing mode, and what it must hold before it is
//! forwarded: the seed's points per request, points per 1 000 tokens, or money from the
//! price table. Domain code; the gateway asks, the ledger charges.

use std::collections::BTreeMap;

use super::money::Currency;
use super::prices::{PriceSet, PriceTable};
use super::usage::Usage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingMode {
    /// A fixed number of points per served call (the seed's).
    Requests,
    /// Points per 1 000 prompt and completion tokens.
    Tokens,
    /// Micros of a currency from the price table.
    Money,
}

impl BillingMode {
    pub fn name(self) -> &'static str {
        match self {
            BillingMode::Requests => "requests",
            BillingMode::Tokens => "tokens",
            BillingMode::Money => "money",
        }
    }
}

/// Points per 1 000 tokens (tokens mode).
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Points per 1 000 prompt tokens.
    pub prompt: f64,
    /// Points per 1 000 completion tokens.
    pub completion: f64,
}

#[derive(Debug, Clone)]
pub struct Billing {
    pub mode: BillingMode,
    /// `Points` unless the mode is money.
    pub currency: Currency,
    pub request_cost: i64,
    pub default_max_tokens: i64,
    pub default_price: Price,
    pub prices: BTreeMap<String, Price>,
    /// Money mode's table (empty otherwise).
    pub table: PriceTable,
}

impl Default for Billing {
    /// The seed's: one point per served call.
    fn default() -> Self {
        Self {
            mode: BillingMode::Requests,
            currency: Currency::Points,
            request_cost: 1,
            default_max_tokens: 1024,
            default_price: Price {
                prompt: 1.0,
                completion: 1.0,
            },
            prices: BTreeMap::new(),
            table: PriceTable::default(),
        }
    }
}

/// Money mode has no price for this model (on any upstream that serves it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoPrice;

/// What a call asks for, as the hold sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    pub prompt_est: i64,
    /// Completion tokens one choice may take.
    pub completion_budget: i64,
    /// Choices asked (`n`).
    pub choices: i64,
}

impl Billing {
    pub fn price(&self, model: &str) -> Price {
        self.prices
            .get(model)
            .copied()
            .unwrap_or(self.default_price)
    }

    /// Points for the given token counts, rounded up; a served call costs at least 1.
    pub fn token_cost(&self, model: &str, prompt: i64, completion: i64) -> i64 {
        let p = self.price(model);
        let raw =
            (prompt.max(0) as f64 * p.prompt + completion.max(0) as f64 * p.completion) / 1000.0;
        if !raw.is_finite() || raw >= i64::MAX as f64 {
            return i64::MAX;
        }
        (raw.ceil() as i64).max(1)
    }

    /// The prices a call of `model` served by `upstream` pays at `at_ms` (money mode).
    pub fn quote(&self, model: &str, upstream: &str, at_ms: i64) -> Result<PriceSet, NoPrice> {
        self.table
            .quote(model, Some(upstream), at_ms)
            .map(|q| q.prices)
            .ok_or(NoPrice)
    }

    /// Whether money mode can charge a call of `model` served by `upstream`; the other
    /// modes always can.
    pub fn prices(&self, model: &str, upstream: &str, at_ms: i64) -> bool {
        self.mode != BillingMode::Money || self.quote(model, upstream, at_ms).is_ok()
    }

    /// The hold: the worst the call can cost at the prices of any of the `upstreams` it may
    /// be served by — the whole prompt at the input price, every choice's whole budget at
    /// the output price.
    pub fn hold<'a>(
        &self,
        model: &str,
        upstreams: impl IntoIterator<Item = &'a str>,
        ask: Ask,
        at_ms: i64,
    ) -> Result<i64, NoPrice> {
        let completion = ask.completion_budget.saturating_mul(ask.choices.max(1));
        match self.mode {
            BillingMode::Requests => Ok(self.request_cost),
            BillingMode::Tokens => Ok(self.token_cost(model, ask.prompt_est, completion)),
            BillingMode::Money => {
                let worst = upstreams
                    .into_iter()
                    .filter_map(|u| self.quote(model, u, at_ms).ok())
                    .reduce(PriceSet::max)
                    .ok_or(NoPrice)?;
                // Worst case: no cache hits, and a cache write costs at least the input.
                let input = PriceSet {
                    input: worst.input.max(worst.cache_write),
                    ..worst
                };
                Ok(input.cost(&Usage::plain(ask.prompt_est, completion)))
            }
        }
    }

    /// What a served call costs: `usage` at the prices of the upstream that served it, at
    /// the call's start.
    pub fn cost(
        &self,
        model: &str,
        upstream: &str,
        usage: &Usage,
        at_ms: i64,
    ) -> Result<i64, NoPrice> {
        match self.mode {
            BillingMode::Requests => Ok(self.request_cost),
            BillingMode::Tokens => Ok(self.token_cost(model, usage.prompt(), usage.output)),
            BillingMode::Money => Ok(self.quote(model, upstream, at_ms)?.cost(usage)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::prices::{Adjust, Entry, Window, deepseek_defaults};
    use super::*;

    fn money() -> Billing {
        Billing {
            mode: BillingMode::Money,
            currency: Currency::Cny,
            table: PriceTable {
                entries: deepseek_defaults(Currency::Cny),
                windows: vec![Window {
                    name: "peak".into(),
                    tz: chrono_tz::Asia::Shanghai,
                    days: vec![],
                    hours: vec![(9 * 60, 12 * 60)],
                    holidays: vec![],
                    adjust: Adjust::Factor(2_000_000),
                }],
            },
            ..Billing::default()
        }
    }

    #[test]
    fn the_hold_covers_every_choice_at_the_worst_price() {
        let mut b = money();
        b.table.entries.push(Entry {
            pattern: "deepseek-v4-flash".into(),
            upstream: Some("dear".into()),
            prices: PriceSet {
                input: 10_000_000,
                cached_input: 1,
                cache_write: 0,
                output: 1_000_000,
                per_request: 0,
            },
        });
        let ask = Ask {
            prompt_est: 1_000_000,
            completion_budget: 1_000,
            choices: 3,
        };
        // 2025-01-01 02:00 UTC = 10:00 Beijing: peak, prices doubled.
        let peak = 1_735_696_800_000;
        let off = peak + 4 * 3_600_000;
        let cheap = b.quote("deepseek-v4-flash", "ds", off).unwrap();
        let hold = b
            .hold("deepseek-v4-flash", ["ds", "dear"], ask, off)
            .unwrap();
        // 1M prompt at ¥10 (the dear upstream's input) + 3 000 output at the higher output.
        let out = cheap.output.max(1_000_000);
        assert_eq!(hold, 10_000_000 + 3_000 * out / 1_000_000);
        let peak_hold = b.hold("deepseek-v4-flash", ["ds"], ask, peak).unwrap();
        assert_eq!(
            peak_hold,
            2 * b.hold("deepseek-v4-flash", ["ds"], ask, off).unwrap()
        );
        assert_eq!(b.hold("gpt-x", ["ds"], ask, off), Err(NoPrice));
        assert!(!b.prices("gpt-x", "ds", off));
        assert_eq!(
            b.cost("gpt-x", "ds", &Usage::plain(1, 1), off),
            Err(NoPrice)
        );
    }

    #[test]
    fn points_modes_are_unchanged() {
        let mut b = money();
        b.mode = BillingMode::Requests;
        b.request_cost = 3;
        let ask = Ask {
            prompt_est: 5,
            completion_budget: 100,
            choices: 10,
        };
        assert_eq!(b.hold("any", ["x"], ask, 0), Ok(3));
        assert!(b.prices("any", "x", 0));
        b.mode = BillingMode::Tokens;
        // 5 + 100 × 10 tokens at 1 point per 1 000, rounded up.
        assert_eq!(b.hold("any", ["x"], ask, 0), Ok(2));
        assert_eq!(b.token_cost("m", 10, 10), 1);
        assert_eq!(b.token_cost("m", 1500, 600), 3);
    }
}
