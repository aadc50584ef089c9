//! HTTP handlers for `/healthz`, `/readyz`, the caller quota API `/api/v1/*` and the admin
//! API `/admin/*`. Thin: parse and validate, call the ledger or key admin, shape the answer.

pub mod admin;
pub mod alerts;
pub mod amount;
pub mod doc;
pub mod extract;
pub mod gateway;
pub mod health;
pub mod input;
pub mod invites;
pub mod me;
pub mod messages;
pub mod metrics;
pub mod monitor;
pub mod prices;
pub mod quota;
pub mod quota_requests;
pub mod requests;
pub mod responses;
pub mod schema;
pub mod shapes;
pub mod upstreams;
pub mod users;
