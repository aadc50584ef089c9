//! `GET /admin/prices`: the effective billing table — the mode, the currency, every priced
//! model (shipped default or configured) and the time windows, with the window in force now.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::Operator;
use crate::billing::money::format_decimal;
use crate::billing::prices::{Adjust, Entry, PriceSet, deepseek_defaults};
use crate::billing::{Billing, BillingMode};
use crate::error::ApiResult;
use crate::error::QuotaRefusals;
use crate::error::refusals::*;
use crate::state::AppState;

/// Prices of one set, per 1 M tokens (`perRequest`: per call), as decimal strings of the
/// currency.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PriceView {
    pub input: String,
    pub cached_input: String,
    pub cache_write: String,
    pub output: String,
    pub per_request: String,
}

impl From<PriceSet> for PriceView {
    fn from(p: PriceSet) -> Self {
        Self {
            input: format_decimal(p.input),
            cached_input: format_decimal(p.cached_input),
            cache_write: format_decimal(p.cache_write),
            output: format_decimal(p.output),
            per_request: format_decimal(p.per_request),
        }
    }
}

/// One priced model name or glob.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PriceEntryView {
    pub model: String,
    /// Only calls served by this upstream (absent: any).
    pub upstream: Option<String>,
    /// `default` (shipped with quota-proxy) or `config`.
    pub source: &'static str,
    #[serde(flatten)]
    pub prices: PriceView,
}

/// A time window that selects other prices.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowView {
    pub name: String,
    pub tz: String,
    /// Weekdays, `Mon`…`Sun` (empty: every day).
    pub days: Vec<String>,
    /// `HH:MM-HH:MM` (empty: all day).
    pub hours: Vec<String>,
    pub holidays: Vec<String>,
    /// Every price times this (a decimal), or …
    pub factor: Option<String>,
    /// … prices of its own.
    pub prices: Vec<PriceEntryView>,
    /// Whether it applies at this moment.
    pub active: bool,
}

/// `GET /admin/prices`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PricesResponse {
    /// `requests`, `tokens` or `money`.
    pub mode: &'static str,
    /// `points`, `CNY` or `USD`.
    pub currency: &'static str,
    /// Requests mode: points per served call.
    pub request_cost: i64,
    /// Money mode: prices per 1 M tokens (a call takes the most specific match: its upstream
    /// before any, an exact name before a glob, a longer glob before a shorter).
    pub prices: Vec<PriceEntryView>,
    pub windows: Vec<WindowView>,
    /// Where the shipped defaults come from and when they were read.
    pub defaults_source: Option<&'static str>,
}

fn hhmm(m: u32) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

fn entries(list: &[Entry], shipped: &[Entry]) -> Vec<PriceEntryView> {
    list.iter()
        .map(|e| PriceEntryView {
            model: e.pattern.clone(),
            upstream: e.upstream.clone(),
            source: if shipped.contains(e) {
                "default"
            } else {
                "config"
            },
            prices: e.prices.into(),
        })
        .collect()
}

fn view(b: &Billing, now_ms: i64) -> PricesResponse {
    let shipped = deepseek_defaults(b.currency);
    let windows = b
        .table
        .windows
        .iter()
        .map(|w| {
            let (factor, prices) = match &w.adjust {
                Adjust::Factor(f) => (Some(format_decimal(*f)), Vec::new()),
                Adjust::Prices(own) => (None, entries(own, &[])),
            };
            WindowView {
                name: w.name.clone(),
                tz: w.tz.name().to_owned(),
                days: w.days.iter().map(|d| d.to_string()).collect(),
                hours: w
                    .hours
                    .iter()
                    .map(|(s, e)| format!("{}-{}", hhmm(*s), hhmm(*e)))
                    .collect(),
                holidays: w.holidays.iter().map(|d| d.to_string()).collect(),
                factor,
                prices,
                active: w.contains(now_ms),
            }
        })
        .collect();
    PricesResponse {
        mode: b.mode.name(),
        currency: b.currency.code(),
        request_cost: b.request_cost,
        prices: entries(&b.table.entries, &shipped),
        windows,
        defaults_source: (b.mode == BillingMode::Money
            && b.table.entries.iter().any(|e| shipped.contains(e)))
        .then_some(
            "DeepSeek Models & Pricing (api-docs.deepseek.com/quick_start/pricing) and its July 2026 peak-hours notice, read 2026-12-03",
        ),
    }
}

/// The effective price table.
#[utoipa::path(get, path = "/admin/prices", tag = "admin",
    security(("adminToken" = []), ("viewerToken" = [])),
    responses((status = 200, body = PricesResponse), QuotaRefusals<{ AUTH | UNAVAILABLE }>))]
pub async fn prices(State(st): State<AppState>, _op: Operator) -> ApiResult<Json<PricesResponse>> {
    Ok(Json(view(&st.gateway.settings.billing, st.ledger.now_ms())))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(prices))
}
