//! Billing in money: amounts as integer micros of a currency, the price table (per model,
//! per upstream, per time window), usage by billing class and the cost of a call. Domain
//! code: no HTTP, no SQL; the gateway asks it for holds and costs, the API shows its table.

pub mod config;
pub mod money;
pub mod policy;
pub mod prices;
pub mod unit;
pub mod usage;

pub use money::Currency;
pub use policy::{Ask, Billing, BillingMode, NoPrice, Price};
pub use prices::{PriceSet, PriceTable, Quote};
pub use usage::Usage;
