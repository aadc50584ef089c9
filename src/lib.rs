//! quota-proxy: an OpenAI-compatible gateway with per-key quotas, and the quota service,
//! monitor and dashboard around it.
// Lints are set for the whole package in Cargo.toml `[lints]`; long functions only here, for
// the library (tests may read as one scenario). Threshold: `clippy.toml`.
#![deny(clippy::too_many_lines)]

pub mod accounts;
pub mod alerts;
pub mod api;
pub mod app;
pub mod auth;
pub mod billing;
pub mod bruteforce;
pub mod cli;
pub mod clock;
pub mod config;
pub mod config_error;
pub mod config_view;
pub mod conn_trust;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod glob;
pub mod invites;
pub mod keyadmin;
pub mod keys;
pub mod ledger;
pub mod lenient;
pub mod listener;
pub mod memory;
pub mod middleware;
pub mod monitor;
pub mod quota_requests;
pub mod sealed;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod timefmt;
pub mod useradmin;
pub mod web;
pub mod wire;
