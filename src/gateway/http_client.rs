//! The HTTP client upstream calls go through: hyper's pooled client straight over TCP or
//! TLS (rustls, the platform's roots) — or reqwest when the environment names a proxy.
//!
//! Why two: reqwest costs a call about a sixth of the gateway's instructions above hyper
//! itself (it parses each request's URL twice more, runs a redirect policy, a retry policy
//! and a proxy matcher), and the hot path needs none of that. But reqwest honours
//! `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` (and `NO_PROXY`), which operators behind a
//! proxy rely on: when one is set, every upstream call goes through reqwest as before.
//! Either way a call's answer is a status and its body as a stream of chunks; redirects are
//! not followed by the direct client (an API answer's 3xx is passed on as the upstream's
//! error, and the upstream's key never follows a redirect).

use std::error::Error as _;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyDataStream, Full};
use hyper::http::{HeaderName, HeaderValue, Method, Request, Uri, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// Idle pooled connections are closed after this long (as reqwest's default).
const POOL_IDLE: Duration = Duration::from_secs(90);

/// An answer's body as it arrives.
pub type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, String>> + Send>>;

type Direct = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One upstream connection pool (cheap to clone: clones share it).
#[derive(Clone, Debug)]
pub struct UpstreamClient {
    /// `None` when a proxy is configured: calls go through `reqwest`.
    direct: Option<Direct>,
    reqwest: reqwest::Client,
}

/// Where a call goes, parsed once per upstream and endpoint.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: reqwest::Url,
    uri: Uri,
}

impl Target {
    pub fn parse(text: &str) -> Option<Self> {
        let url = reqwest::Url::parse(text).ok()?;
        let uri = url.as_str().parse::<Uri>().ok()?;
        Some(Self { url, uri })
    }
}

/// An upstream's answer, its body still arriving.
pub struct Answer {
    pub status: u16,
    pub body: ByteStream,
}

/// Why no answer came.
#[derive(Debug)]
pub enum SendError {
    Timeout,
    /// What went wrong, without the URL (a base URL may carry a key in its query).
    Failed(String),
}

/// Whether the environment names a proxy reqwest would use for upstream calls.
fn proxy_configured() -> bool {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

impl UpstreamClient {
    /// A pool whose connections give up connecting after `connect_ms`.
    pub fn new(connect_ms: u64) -> Result<Self, String> {
        let connect = Duration::from_millis(connect_ms);
        let reqwest = reqwest::Client::builder()
            .connect_timeout(connect)
            .pool_idle_timeout(POOL_IDLE)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| e.to_string())?;
        let direct = if proxy_configured() {
            None
        } else {
            Some(direct_client(connect)?)
        };
        Ok(Self { direct, reqwest })
    }

    /// Whether calls go through a proxy named by the environment.
    pub fn via_proxy(&self) -> bool {
        self.direct.is_none()
    }

    /// reqwest, for the console's occasional calls (an upstream's model list).
    pub fn cold(&self) -> &reqwest::Client {
        &self.reqwest
    }

    /// POSTs `body` to `to` with `headers`; the answer's status once its head arrived.
    /// `timeout` bounds the wait for the head only.
    pub async fn post(
        &self,
        to: &Target,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, SendError> {
        match &self.direct {
            Some(direct) => post_direct(direct, to, headers, body, timeout).await,
            None => post_reqwest(&self.reqwest, to, headers, body, timeout).await,
        }
    }
}

fn direct_client(connect: Duration) -> Result<Direct, String> {
    let mut tcp = HttpConnector::new();
    tcp.set_connect_timeout(Some(connect));
    tcp.set_nodelay(true);
    // The TLS layer above decides which schemes are allowed.
    tcp.enforce_http(false);
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_platform_verifier(rustls::crypto::ring::default_provider())
        .map_err(|e| format!("TLS: {e}"))?
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(tcp);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .build(tls))
}

async fn post_direct(
    client: &Direct,
    to: &Target,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
    timeout: Duration,
) -> Result<Answer, SendError> {
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = to.uri.clone();
    let map = req.headers_mut();
    map.reserve(headers.len());
    for (k, v) in headers {
        map.append(k.clone(), v.clone());
    }
    let resp = match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => return Err(SendError::Timeout),
        Ok(Err(e)) if connect_timed_out(&e) => return Err(SendError::Timeout),
        Ok(Err(e)) => return Err(SendError::Failed(chain(&e))),
        Ok(Ok(r)) => r,
    };
    let status = resp.status().as_u16();
    let body = BodyDataStream::new(resp.into_body()).map(|r| r.map_err(|e| chain(&e)));
    Ok(Answer {
        status,
        body: Box::pin(body),
    })
}

async fn post_reqwest(
    client: &reqwest::Client,
    to: &Target,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
    timeout: Duration,
) -> Result<Answer, SendError> {
    let mut req = client.post(to.url.clone());
    for (k, v) in headers {
        req = req.header(k.clone(), v.clone());
    }
    let resp = match tokio::time::timeout(timeout, req.body(body).send()).await {
        Err(_) => return Err(SendError::Timeout),
        Ok(Err(e)) if e.is_timeout() => return Err(SendError::Timeout),
        Ok(Err(e)) => return Err(SendError::Failed(e.without_url().to_string())),
        Ok(Ok(r)) => r,
    };
    let status = resp.status().as_u16();
    let body = resp
        .bytes_stream()
        .map(|r| r.map_err(|e| e.without_url().to_string()));
    Ok(Answer {
        status,
        body: Box::pin(body),
    })
}

/// A connection attempt that ran out of its connect timeout (hyper names it as an I/O
/// error of kind `TimedOut` among the causes).
fn connect_timed_out(e: &hyper_util::client::legacy::Error) -> bool {
    let mut cause = e.source();
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// An error with its causes, `a: b: c` (hyper's own text names no URL and no header).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

/// The headers every call carries: the body's type and what answer is wanted.
pub fn content_headers(stream: bool) -> [(HeaderName, HeaderValue); 2] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (
            header::ACCEPT,
            HeaderValue::from_static(if stream {
                "text/event-stream"
            } else {
                "application/json"
            }),
        ),
    ]
}
