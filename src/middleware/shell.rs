//! What every request goes through, once, whatever its route: a request id, the client's
//! address (the socket peer, or what a trusted proxy says), the unit amounts are in, the
//! default body limit, a panic turned into a 500, the security headers, one log line and the
//! request metrics. Handlers read the first two from [`Origin`] instead of working them out
//! again.
//!
//! One hand-written service instead of a stack of layers (four `SetResponseHeader`s, a
//! `CatchPanic`, a `from_fn` and a router around them): each of those wrapped the next one's
//! future in its own and moved it, and `from_fn` cloned and boxed the route on every call. The
//! route's template, which only exists inside the router, comes back on the answer from the
//! group's guard (`guard::with_route`).

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request};
use axum::http::header::{HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};

use crate::auth::Origin;
use crate::billing::Currency;
use crate::error::ApiError;
use crate::gateway::client_ip;
use crate::telemetry;

#[derive(Debug, Clone)]
pub struct Context {
    /// Only these peers may name the client in `X-Forwarded-For` / `X-Real-IP`.
    pub trusted_proxies: Vec<IpNet>,
    /// What the API's amounts are in (points, or the currency of money mode).
    pub unit: Currency,
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The routes behind the default body limit (`DefaultBodyLimit`'s service type is private:
/// named through its layer).
type Limited = <DefaultBodyLimit as Layer<Router>>::Service;

/// Every route, with what every request goes through around them.
#[derive(Clone)]
pub struct Shell {
    routes: Limited,
    settings: Arc<Settings>,
}

struct Settings {
    context: Context,
    /// Set on every answer that does not set its own.
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Shell {
    /// `routes` (already guarded by group, with their fallback) served with `context`, bodies
    /// limited to `body_limit` bytes unless a group says otherwise, and `headers` on every
    /// answer that has none of that name.
    pub fn new(
        routes: Router,
        context: Context,
        body_limit: usize,
        headers: Vec<(HeaderName, HeaderValue)>,
    ) -> Self {
        Self {
            routes: DefaultBodyLimit::max(body_limit).layer(routes),
            settings: Arc::new(Settings { context, headers }),
        }
    }
}

impl Service<Request> for Shell {
    type Response = Response;
    type Error = Infallible;
    type Future = ShellFuture<<Limited as Service<Request>>::Future>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        // A router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let cx = &self.settings.context;
        let peer: Option<IpAddr> = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let ip = client_ip::resolve(peer, req.headers(), &cx.trusted_proxies);
        let request_id = crate::auth::new_request_id();
        let conn = req
            .extensions()
            .get::<Arc<crate::conn_trust::ConnTrust>>()
            .cloned();
        req.extensions_mut().insert(Origin {
            request_id: request_id.clone(),
            ip,
            conn,
        });
        let finish = Finish {
            settings: self.settings.clone(),
            request_id,
            method: req.method().clone(),
            started: Instant::now(),
        };
        let unit = cx.unit;
        let routes = &mut self.routes;
        // Routing itself runs here; handlers and guards run when the future is polled.
        match std::panic::catch_unwind(AssertUnwindSafe(|| routes.call(req))) {
            Ok(route) => ShellFuture::Running {
                route: crate::billing::unit::in_unit(unit, route),
                finish,
            },
            Err(_) => ShellFuture::Panicked { finish },
        }
    }
}

/// What is added to the answer and recorded once it is there.
struct Finish {
    settings: Arc<Settings>,
    request_id: String,
    method: Method,
    started: Instant,
}

impl Finish {
    fn finish(self, mut resp: Response) -> Response {
        let headers = resp.headers_mut();
        // Room for ours at once: growing the map header by header rehashed it twice.
        headers.reserve(1 + self.settings.headers.len());
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            headers.entry(X_REQUEST_ID).or_insert(v);
        }
        for (name, value) in &self.settings.headers {
            headers.entry(name).or_insert_with(|| value.clone());
        }
        // The route template, never the path itself: paths and queries can carry keys.
        let matched = resp.extensions().get::<MatchedPath>();
        let route = matched.map_or("(unmatched)", |m| m.as_str());
        tracing::debug!(
            request_id = %self.request_id,
            method = %self.method,
            route,
            status = resp.status().as_u16(),
            ms = self.started.elapsed().as_millis() as u64,
            "request"
        );
        observe(route, &self.method, resp.status(), self.started);
        resp
    }
}

pin_project! {
    /// A request's answer, with what every answer gets.
    #[project = ShellProj]
    #[project_replace = ShellReplace]
    pub enum ShellFuture<F> {
        Running {
            #[pin]
            route: TaskLocalFuture<Currency, F>,
            finish: Finish,
        },
        Panicked { finish: Finish },
        Done,
    }
}

impl<F> Future for ShellFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let resp = match self.as_mut().project() {
            ShellProj::Running { route, .. } => {
                match std::panic::catch_unwind(AssertUnwindSafe(|| route.poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(Ok(resp))) => resp,
                    Ok(Poll::Ready(Err(never))) => match never {},
                    Err(_) => panicked(),
                }
            }
            ShellProj::Panicked { .. } => panicked(),
            // Polled again after its answer: there is nothing more to give.
            ShellProj::Done => return Poll::Pending,
        };
        match self.project_replace(Self::Done) {
            ShellReplace::Running { finish, .. } | ShellReplace::Panicked { finish } => {
                Poll::Ready(Ok(finish.finish(resp)))
            }
            ShellReplace::Done => Poll::Pending,
        }
    }
}

/// A handler that panicked answers 500 in the documented shape (the panic's message is
/// already in the log, from the panic hook; it may hold anything, so it is not sent).
fn panicked() -> Response {
    ApiError::internal().into_response()
}

/// Counts the request and its time to the response head. Labels stay bounded: the route
/// template, a standard method name, the status code.
fn observe(route: &str, method: &Method, status: StatusCode, started: Instant) {
    let method = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    telemetry::handles::HTTP_REQUESTS
        .get([route, method, status.as_str()])
        .increment(1);
    telemetry::handles::HTTP_DURATION
        .get([route, method])
        .record(started.elapsed().as_secs_f64());
}
