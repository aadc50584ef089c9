//! Around each group of routes (layered by `app::routes`): its body limit, its time limit,
//! wrong credentials per client address, and the framework's refusals written in the group's
//! error family.
//!
//! A hand-written layer rather than `axum::middleware::from_fn`: `from_fn` clones the route
//! and boxes it, its own future and the route's on every call; here the checks before the
//! handler are synchronous, the route's future is polled in place, and only a group with a
//! time limit allocates (its timer).

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::timed_body::TimedBody;
use crate::auth::Origin;
use crate::error::{Family, Problem};
use crate::telemetry;

/// What a group of routes (one error family, one body limit) is held to.
#[derive(Debug, Clone)]
pub struct Guard {
    pub family: Family,
    pub body_limit: usize,
    /// The longest a handler may take to start its answer (a stream may run longer). Only
    /// for routes whose work has no bound of its own (monitor queries on a foreign database,
    /// admin listings): the hot paths are bounded already (upstream timeouts, SQLite's busy
    /// timeout) and a timer per request costs them ~15 %.
    pub timeout: Option<Duration>,
    /// The longest a client may pause while sending a request body.
    pub body_idle_timeout: Duration,
    /// The longest a whole request body may take.
    pub body_deadline: Duration,
    /// Wrong credentials per client address (shared by every group).
    pub failures: Arc<crate::bruteforce::FailureLimiter>,
}

/// The layer that puts a [`Guard`] around each route of a group.
#[derive(Debug, Clone)]
pub struct GuardLayer(Arc<Guard>);

impl GuardLayer {
    pub fn new(guard: Guard) -> Self {
        Self(Arc::new(guard))
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            guard: self.0.clone(),
        }
    }
}

/// A route behind its group's [`Guard`].
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    guard: Arc<Guard>,
}

/// Paths that never take credentials: a blocked address still reaches them (a load
/// balancer's health check, the dashboard's page and files).
fn credential_free(path: &str) -> bool {
    matches!(
        path,
        "/healthz"
            | "/readyz"
            | "/"
            | "/index.html"
            | "/docs"
            | "/auth/session"
            | "/auth/logout"
            | "/api/openapi.json"
    ) || path.starts_with("/assets/")
}

impl<S> Service<Request> for Guarded<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let g = &self.guard;
        let route = req.extensions().get::<MatchedPath>().cloned();
        let answered = |resp: Response| GuardFuture::Answered {
            resp: with_route(resp, route.clone()),
        };
        let now = chrono::Utc::now().timestamp_millis();
        let ip = req
            .extensions()
            .get::<Origin>()
            .and_then(|o| o.ip)
            .filter(|_| !credential_free(req.uri().path()));
        if let Some(ip) = ip
            && let Some(wait) = g.failures.blocked(ip, now)
        {
            metrics::counter!(telemetry::AUTH_BLOCKED).increment(1);
            return answered(g.family.render(Problem::TooManyFailures(wait)));
        }
        // A declared length far over the limit is refused before a byte of the body is read
        // (a client that lies about it cannot hold the connection). Near the limit the body is
        // read up to it as usual, so that clients which write their whole body before reading
        // the answer still see the 413 instead of a broken pipe.
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let slack = crate::config::body_slack(g.body_limit);
        if declared.is_some_and(|n| n > (g.body_limit.saturating_add(slack)) as u64) {
            return answered(g.family.render(Problem::TooLarge(Some(g.body_limit))));
        }
        // A body that stops arriving fails its read (a 4xx for the handler) instead of holding
        // the connection until the request's time limit. (Most requests have none: no timer.)
        let has_body = declared.is_some_and(|n| n > 0)
            || req
                .headers()
                .contains_key(axum::http::header::TRANSFER_ENCODING);
        let req = if has_body {
            let (idle, deadline) = (g.body_idle_timeout, g.body_deadline);
            req.map(|b| axum::body::Body::new(TimedBody::new(b, idle, deadline)))
        } else {
            req
        };
        let limit = g.timeout.map(|t| Box::pin(tokio::time::sleep(t)));
        GuardFuture::Running {
            route: self.inner.call(req),
            limit,
            after: After {
                guard: g.clone(),
                ip,
                at: now,
                route,
            },
        }
    }
}

/// What is done with the route's answer.
struct After {
    guard: Arc<Guard>,
    /// The client, when its wrong credentials count.
    ip: Option<IpAddr>,
    /// When the request arrived (ms), for the failure count.
    at: i64,
    /// The route template, handed to the answer for the request metrics.
    route: Option<MatchedPath>,
}

impl After {
    fn finish(self, resp: Response) -> Response {
        let g = &self.guard;
        let resp = shaped_error(g.family, resp);
        if resp.status() == axum::http::StatusCode::UNAUTHORIZED
            && let Some(ip) = self.ip
        {
            metrics::counter!(telemetry::AUTH_FAILURES).increment(1);
            if let Some(wait) = g.failures.failed(ip, self.at) {
                telemetry::log_limited("auth_blocked", |suppressed| {
                    tracing::warn!(client_ip = %ip, seconds = wait, suppressed, "too many wrong credentials: address blocked");
                });
            }
        }
        with_route(resp, self.route)
    }
}

/// `resp`, carrying its route's template to the request metrics (`shell`), which see the
/// answer but not the routing.
fn with_route(mut resp: Response, route: Option<MatchedPath>) -> Response {
    if let Some(route) = route {
        resp.extensions_mut().insert(route);
    }
    resp
}

pin_project! {
    /// A guarded route's answer: refused before the route ran, or the route's own.
    #[project = GuardProj]
    #[project_replace = GuardReplace]
    pub enum GuardFuture<F> {
        Answered { resp: Response },
        Running {
            #[pin]
            route: F,
            limit: Option<Pin<Box<tokio::time::Sleep>>>,
            after: After,
        },
        Done,
    }
}

/// How a poll of a running route ended.
enum Outcome {
    Answered,
    Route(Response),
    TimedOut,
}

impl<F> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = match self.as_mut().project() {
            GuardProj::Answered { .. } => Outcome::Answered,
            // Polled again after its answer: there is nothing more to give.
            GuardProj::Done => return Poll::Pending,
            GuardProj::Running { route, limit, .. } => match route.poll(cx) {
                Poll::Ready(Ok(r)) => Outcome::Route(r),
                Poll::Pending
                    if limit
                        .as_mut()
                        .is_some_and(|t| t.as_mut().poll(cx).is_ready()) =>
                {
                    Outcome::TimedOut
                }
                Poll::Pending => return Poll::Pending,
            },
        };
        let resp = match (self.project_replace(Self::Done), outcome) {
            (GuardReplace::Answered { resp }, _) => resp,
            (GuardReplace::Running { after, .. }, Outcome::Route(r)) => after.finish(r),
            (GuardReplace::Running { after, .. }, _) => {
                tracing::warn!("request timed out");
                let family = after.guard.family;
                after.finish(family.render(Problem::Unavailable))
            }
            (GuardReplace::Done, _) => return Poll::Pending,
        };
        Poll::Ready(Ok(resp))
    }
}

/// The answer to a path no route matched, in the family its prefix suggests.
pub async fn unmatched(uri: axum::http::Uri) -> Response {
    Family::of_unmatched(uri.path()).render(Problem::NotFound)
}

/// An extractor's `Problem`, or an error answer that is not JSON (the framework's own
/// rejections: an unmatched method, a path segment that is not UTF-8, a wrong content type…),
/// rewritten in the family's shape, with the same status.
fn shaped_error(family: Family, resp: Response) -> Response {
    if let Some(&problem) = resp.extensions().get::<Problem>() {
        return with_headers_of(&resp, family.render(problem));
    }
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if json {
        return resp;
    }
    with_headers_of(&resp, family.render(Problem::of_status(status)))
}

/// `out`, keeping what `original` said about the method and the retry.
fn with_headers_of(original: &Response, mut out: Response) -> Response {
    for name in ["allow", "retry-after"] {
        if let Some(v) = original.headers().get(name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}
