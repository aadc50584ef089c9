//! What every request goes through, once, whatever its route (`context`): a request id, the
//! client's address (the socket peer, or what a trusted proxy says), one log line and the
//! request metrics. Handlers read the first two from [`Origin`] instead of working them out
//! again. Around each group of routes (`guard`, layered by `app.rs`): its body limit, its time
//! limit, and the framework's refusals written in the group's error family.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

use crate::auth::Origin;
use crate::error::{Family, Problem};
use crate::gateway::client_ip;
use crate::telemetry;

#[derive(Debug, Clone)]
pub struct Context {
    /// Only these peers may name the client in `X-Forwarded-For` / `X-Real-IP`.
    pub trusted_proxies: Vec<IpNet>,
    /// What the API's amounts are in (points, or the currency of money mode).
    pub unit: crate::billing::Currency,
}

pub async fn context(State(cx): State<Arc<Context>>, mut req: Request, next: Next) -> Response {
    let peer: Option<IpAddr> = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let ip = client_ip::resolve(peer, req.headers(), &cx.trusted_proxies);
    let request_id = crate::auth::new_request_id();
    let conn = req
        .extensions()
        .get::<std::sync::Arc<crate::conn_trust::ConnTrust>>()
        .cloned();
    req.extensions_mut().insert(Origin {
        request_id: request_id.clone(),
        ip,
        conn,
    });
    // The route template, never the path itself: paths and queries can carry keys.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("(unmatched)", |m| m.as_str());
    let method = req.method().clone();
    let started = Instant::now();
    let mut resp = crate::billing::unit::with_unit(cx.unit, next.run(req)).await;
    if !resp.headers().contains_key("x-request-id")
        && let Ok(v) = HeaderValue::from_str(&request_id)
    {
        resp.headers_mut().insert("x-request-id", v);
    }
    tracing::debug!(
        %request_id,
        %method,
        route,
        status = resp.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    observe(route, &method, resp.status(), started);
    resp
}

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

/// Paths that never take credentials: a blocked address still reaches them (a load
/// balancer's health check, the dashboard's page and files).
fn credential_free(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/" | "/index.html" | "/docs" | "/auth/session" | "/auth/logout"
    ) || path.starts_with("/assets/")
}

pub async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
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
        return g.family.render(Problem::TooManyFailures(wait));
    }
    let resp = guarded(&g, req, next).await;
    if resp.status() == axum::http::StatusCode::UNAUTHORIZED
        && let Some(ip) = ip
    {
        metrics::counter!(telemetry::AUTH_FAILURES).increment(1);
        if let Some(wait) = g.failures.failed(ip, now) {
            telemetry::log_limited("auth_blocked", |suppressed| {
                tracing::warn!(client_ip = %ip, seconds = wait, suppressed, "too many wrong credentials: address blocked");
            });
        }
    }
    resp
}

async fn guarded(g: &Guard, req: Request, next: Next) -> Response {
    // A declared length far over the limit is refused before a byte of the body is read (a
    // client that lies about it cannot hold the connection). Near the limit the body is read
    // up to it as usual, so that clients which write their whole body before reading the
    // answer still see the 413 instead of a broken pipe.
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let slack = crate::config::body_slack(g.body_limit);
    if declared.is_some_and(|n| n > (g.body_limit.saturating_add(slack)) as u64) {
        return g.family.render(Problem::TooLarge(Some(g.body_limit)));
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
    let resp = match g.timeout {
        Some(limit) => match tokio::time::timeout(limit, next.run(req)).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!("request timed out");
                g.family.render(Problem::Unavailable)
            }
        },
        None => next.run(req).await,
    };
    shaped_error(g.family, resp)
}

/// The answer to a path no route matched, in the family its prefix suggests.
pub async fn unmatched(uri: axum::http::Uri) -> Response {
    Family::of_unmatched(uri.path()).render(Problem::NotFound)
}

/// Counts the request and its time to the response head. Labels stay bounded: the route
/// template, a standard method name, the status code.
fn observe(route: &str, method: &axum::http::Method, status: StatusCode, started: Instant) {
    use axum::http::Method;
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

/// A request body that fails when it pauses longer than `idle`, or once `deadline` has passed
/// since the request arrived, however steadily it trickles in (the idle limit alone lets a
/// byte every few seconds hold a connection for as long as the body is long). The timer is
/// armed only when the body has to wait: a body already in the buffer (nearly every call)
/// costs no timer at all.
struct TimedBody {
    inner: axum::body::Body,
    idle: Duration,
    deadline: tokio::time::Instant,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Data arrived since the timer was last set: the idle time starts again.
    progressed: bool,
}

impl TimedBody {
    fn new(inner: axum::body::Body, idle: Duration, deadline: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: tokio::time::Instant::now() + deadline,
            timer: None,
            progressed: true,
        }
    }
}

impl hyper::body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, axum::Error>>> {
        use std::task::Poll;
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            self.progressed = true;
            return Poll::Ready(frame);
        }
        if self.progressed {
            self.progressed = false;
            let at = (tokio::time::Instant::now() + self.idle).min(self.deadline);
            match self.timer.as_mut() {
                Some(t) => t.as_mut().reset(at),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        let expired = self
            .timer
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready());
        if expired {
            let what = if tokio::time::Instant::now() >= self.deadline {
                "the request body took longer than its deadline"
            } else {
                "the request body stopped arriving"
            };
            return Poll::Ready(Some(Err(axum::Error::new(what))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
