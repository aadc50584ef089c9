//! The one place routes are put together: each API module's router (every route registered
//! with its documentation, `utoipa-axum`), the guard of its group (error family, body and
//! time limits), the OpenAPI document of exactly what is served, and the layers around all.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa_axum::router::OpenApiRouter;

use crate::api::alerts::AlertsState;
use crate::api::metrics::MetricsState;
use crate::api::monitor::MonitorState;
use crate::api::{
    admin, alerts, doc, gateway, health, invites, me, messages, metrics, monitor, prices, quota,
    quota_requests, requests, responses, upstreams, users,
};
use crate::config::Config;
use crate::error::{ApiError, Family};
use crate::middleware::{Context, Guard, context, guard, unmatched};
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
pub fn router(surfaces: Surfaces, config: &Config) -> Router {
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
    let routes = routes.route(
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
        let g = Guard {
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
        };
        routes.layer(axum::middleware::from_fn_with_state(g, guard))
    }
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal().into_response()
}

/// The unmatched-path fallback and the per-request context around every route; the body
/// limit, panic catching and the security headers around the whole router, once. A layer
/// added with `Router::layer` wraps each route in a box of its own, cloned on every request
/// (eight layers were ~50 allocations a call); only the context needs the matched route.
fn harden(routes: Router, config: &Config) -> Router {
    let cx = Context {
        trusted_proxies: config.gateway.trusted_proxies.clone(),
        unit: config.gateway.billing.currency,
    };
    let routed = routes
        .fallback(unmatched)
        .layer(axum::middleware::from_fn_with_state(Arc::new(cx), context));
    let [csp, frame, sniff, referrer] = web::SECURE_HEADERS.map(web::secure_header);
    let around = tower::ServiceBuilder::new()
        .layer(csp)
        .layer(frame)
        .layer(sniff)
        .layer(referrer)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .service(routed);
    Router::new().fallback_service(around)
}
