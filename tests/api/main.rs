//! One integration-test binary: every test runs the real router on a real port (or the real
//! binary) against a real SQLite file in a temp dir.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test stops at the first surprise"
)]

mod admin_api;
mod agents;
mod alert_receiver;
mod alerts;
mod billing;
mod browser;
mod channels;
mod cli;
mod concurrency;
mod connections;
mod contract;
mod dashboard;
mod durability;
mod errors;
mod faults;
mod fuzz;
mod gateway;
mod helpers;
mod idempotency;
mod instances;
mod invites;
mod kill_gateway;
mod layers;
mod lifecycle;
mod messages;
mod monitor;
mod monitor_data;
mod never_free;
mod operations;
mod quota_api;
mod request_log;
mod responses;
mod security;
mod seed_clients;
mod self_service;
mod upstream_client;
mod upstream_mock;
mod users;
