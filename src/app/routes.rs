//! The one place routes are put together: each API module's router (every route registered
//! with its documentation, `utoipa-axum`), the guard of its group (error family, body and
//! time limits), the OpenAPI document of exactly what is served, and the layers around all.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;

use crate::api::alerts::AlertsState;
use crate::api::metrics::MetricsState;
use crate::api::monitor::MonitorState;
use crate::api::{
    admin, alerts, doc, gateway, health, invites, me, messages, metrics, monitor, prices, quota,
    quota_requests, requests, responses, upstreams, users,
};
use crate::config::Config;
use crate::error::Family;
use crate::middleware::{Context, Guard, GuardLayer, Shell, unmatched};
use crate::state::AppState;
use crate::web::{self, WebState};

/// What answers HTTP in an application. `serve` has everything; `monitor` mode has no
/// quota, admin or gateway routes (`core: None`).
pub struct Surfaces {
    /// Wrong credentials per client address, shared with the alert rule that reports them.
    pub failures: Arc<crate::bruteforce::FailureLimiter>,
    pub core: Option<AppState>,
    pub monitor: MonitorState,
    pub alerts: AlertsState,
    pub web: WebState,
    pub metrics: MetricsState,
}

/// The quota API and the key holder's `/me`: callers authenticate with a key.
fn holder_routes() -> OpenApiRouter<AppState> {
    health::router()
        .merge(quota::router())
        .merge(me::router())
        .merge(quota_requests::me_router())
}

/// The operators' API (admin or viewer token, or the console's session).
fn operator_routes() -> OpenApiRouter<AppState> {
    admin::router()
        .merge(prices::router())
        .merge(requests::router())
        .merge(upstreams::router())
        .merge(invites::router())
        .merge(users::router())
        .merge(quota_requests::router())
}

/// Every route of `surfaces`, guarded by group, with `/api/openapi.json` describing them.
pub fn router(surfaces: Surfaces, config: &Config) -> Shell {
    // The metrics recorder is installed before the first request is counted.
    crate::telemetry::handle();
    let guarded = Guards::new(config, surfaces.failures.clone());
    let mut api = OpenApiRouter::with_openapi(doc::base());
    if let Some(core) = surfaces.core {
        api = api
            .merge(
                guarded
                    .apply(holder_routes(), Family::Quota, false)
                    .with_state(core.clone()),
            )
            .merge(
                guarded
                    .apply(operator_routes(), Family::Quota, true)
                    .with_state(core.clone()),
            )
            .merge(
                guarded
                    .apply(
                        gateway::router().merge(responses::router()),
                        Family::OpenAi,
                        false,
                    )
                    .with_state(core.clone()),
            )
            .merge(
                guarded
                    .apply(messages::router(), Family::Anthropic, false)
                    .with_state(core),
            );
    }
    let api = api
        .merge(
            guarded
                .apply(monitor::router(), Family::Monitor, true)
                .with_state(surfaces.monitor),
        )
        .merge(
            guarded
                .apply(alerts::router(), Family::Quota, true)
                .with_state(surfaces.alerts),
        )
        .merge(
            guarded
                .apply(web::router(), Family::Quota, false)
                .with_state(surfaces.web),
        )
        .merge(
            guarded
                .apply(metrics::router(), Family::Quota, false)
                .with_state(surfaces.metrics),
        );
    let (routes, document) = api.split_for_parts();
    let money = config.gateway.billing.mode == crate::billing::BillingMode::Money;
    let document: Arc<[u8]> = doc::to_json(document, money).into();
    let openapi = Router::new().route(
        "/api/openapi.json",
        get(move || {
            let body = document.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body.to_vec(),
                )
            }
        }),
    );
    let routes = routes.merge(guarded.apply_plain(openapi, Family::Quota));
    harden(routes, config)
}

/// The guard settings a group of routes gets, from the configuration.
struct Guards {
    body_limit: usize,
    gateway_body_limit: usize,
    timeout: Duration,
    body_idle_timeout: Duration,
    body_deadline: Duration,
    failures: Arc<crate::bruteforce::FailureLimiter>,
}

impl Guards {
    fn new(config: &Config, failures: Arc<crate::bruteforce::FailureLimiter>) -> Self {
        Self {
            body_limit: config.max_body_bytes,
            gateway_body_limit: config.gateway.max_body_bytes,
            timeout: Duration::from_millis(config.request_timeout_ms),
            body_idle_timeout: config.connections.body_idle_timeout,
            body_deadline: config.connections.body_deadline,
            failures,
        }
    }

    /// `routes` guarded as a group of `family`; `timed` for routes whose work has no bound
    /// of its own.
    fn apply<S>(&self, routes: OpenApiRouter<S>, family: Family, timed: bool) -> OpenApiRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        routes.layer(self.layer(family, timed))
    }

    /// `apply` for routes outside the OpenAPI document.
    fn apply_plain(&self, routes: Router, family: Family) -> Router {
        routes.layer(self.layer(family, false))
    }

    fn layer(&self, family: Family, timed: bool) -> GuardLayer {
        GuardLayer::new(Guard {
            family,
            body_limit: if matches!(family, Family::OpenAi | Family::Anthropic) {
                self.gateway_body_limit
            } else {
                self.body_limit
            },
            timeout: timed.then_some(self.timeout),
            body_idle_timeout: self.body_idle_timeout,
            body_deadline: self.body_deadline,
            failures: self.failures.clone(),
        })
    }
}

/// The unmatched-path fallback and what every request goes through around the router
/// (`Shell`: request id, client address, body limit, panics, security headers, metrics).
fn harden(routes: Router, config: &Config) -> Shell {
    let cx = Context {
        trusted_proxies: config.gateway.trusted_proxies.clone(),
        unit: config.gateway.billing.currency,
    };
    Shell::new(
        routes.fallback(unmatched),
        cx,
        config.max_body_bytes,
        web::secure_headers(),
    )
}
