//! What every request goes through, once, whatever its route: a request id, the client's
//! address (the socket peer, or what a trusted proxy says), a time limit, and one log line.
//! Handlers read the first two from [`Origin`] instead of working them out again.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use crate::auth::Origin;
use crate::error::ApiError;
use crate::gateway::client_ip;

#[derive(Debug, Clone)]
pub struct Context {
    /// Only these peers may name the client in `X-Forwarded-For` / `X-Real-IP`.
    pub trusted_proxies: Vec<IpNet>,
    /// The longest a handler may take to start its answer (a stream may run longer).
    pub timeout: Duration,
    /// The longest a client may pause while sending a request body.
    pub body_idle_timeout: Duration,
    /// Request body limits: `/v1/*` (the gateway's) and everything else.
    pub gateway_body_limit: usize,
    pub body_limit: usize,
}

pub async fn context(State(cx): State<Arc<Context>>, mut req: Request, next: Next) -> Response {
    let peer: Option<IpAddr> = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let ip = client_ip::resolve(peer, req.headers(), &cx.trusted_proxies);
    let request_id = crate::auth::new_request_id();
    req.extensions_mut().insert(Origin {
        request_id: request_id.clone(),
        ip,
    });
    // The route template, never the path itself: paths and queries can carry keys.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = move || {
        route
            .as_ref()
            .map_or("(unmatched)", |m| m.as_str())
            .to_owned()
    };
    let method = req.method().clone();
    let fam = family(req.uri().path());
    // The time limit guards the routes whose work has no bound of its own (monitor queries
    // on a foreign database, admin listings). The hot paths are bounded already (upstream
    // timeouts, SQLite's busy timeout) and a timer per request costs them ~15 %.
    let timed = fam == Family::Monitor || req.uri().path().starts_with("/admin/");
    // A declared length far over the limit is refused before a byte of the body is read (a
    // client that lies about it cannot hold the connection). Near the limit the body is read
    // up to it as usual, so that clients which write their whole body before reading the
    // answer still see the 413 instead of a broken pipe.
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let limit = if fam == Family::OpenAi {
        cx.gateway_body_limit
    } else {
        cx.body_limit
    };
    if declared.is_some_and(|n| n > (limit.saturating_add(crate::config::body_slack(limit))) as u64)
    {
        let mut resp = too_large(fam, limit);
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert("x-request-id", v);
        }
        observe(route(), &method, resp.status().as_u16(), Instant::now());
        return resp;
    }
    let started = Instant::now();
    // A body that stops arriving fails its read (a 4xx for the handler) instead of holding
    // the connection until the request's time limit. (Most requests have none: no timer.)
    let has_body = declared.is_some_and(|n| n > 0)
        || req
            .headers()
            .contains_key(axum::http::header::TRANSFER_ENCODING);
    let req = if has_body {
        req.map(|b| {
            axum::body::Body::new(tower_http::timeout::TimeoutBody::new(
                cx.body_idle_timeout,
                b,
            ))
        })
    } else {
        req
    };
    let mut resp = if timed {
        match tokio::time::timeout(cx.timeout, next.run(req)).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(%request_id, route = route(), "request timed out");
                ApiError::unavailable().into_response()
            }
        }
    } else {
        next.run(req).await
    };
    if let Some(shaped) = shaped_error(fam, &resp) {
        resp = shaped;
    }
    if !resp.headers().contains_key("x-request-id")
        && let Ok(v) = HeaderValue::from_str(&request_id)
    {
        resp.headers_mut().insert("x-request-id", v);
    }
    tracing::debug!(
        %request_id,
        %method,
        route = route(),
        status = resp.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    observe(route(), &method, resp.status().as_u16(), started);
    resp
}

/// Counts the request and its time to the response head. Labels stay bounded: the route
/// template, a standard method name, the status code.
fn observe(route: String, method: &axum::http::Method, status: u16, started: Instant) {
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
    metrics::counter!(
        crate::telemetry::HTTP_REQUESTS,
        "route" => route.clone(),
        "method" => method,
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(crate::telemetry::HTTP_DURATION, "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
}

fn too_large(fam: Family, limit: usize) -> Response {
    match fam {
        Family::OpenAi => crate::gateway::oai_error::OaiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "payload_too_large",
            format!("请求体过大，上限 {limit} 字节"),
        )
        .into_response(),
        _ => ApiError::payload_too_large(limit).into_response(),
    }
}

/// Which API family a path belongs to, for the shape of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// `/v1/*`: OpenAI's `{"error":{"message","type","param","code"}}`.
    OpenAi,
    /// `/api/*` but `/api/v1/*`: the monitor seed's `{"error","code","timestamp"}`.
    Monitor,
    /// Everything else: `{"error":{"code","message","details"}}`.
    Quota,
}

fn family(path: &str) -> Family {
    if path.starts_with("/v1/") || path == "/v1" {
        Family::OpenAi
    } else if path.starts_with("/api/") && !path.starts_with("/api/v1/") {
        Family::Monitor
    } else {
        Family::Quota
    }
}

/// An error answer that is not JSON (the framework's own rejections: an unmatched method, a
/// path segment that is not UTF-8, a wrong content type…) rewritten in its family's shape,
/// with the same status.
fn shaped_error(fam: Family, resp: &Response) -> Option<Response> {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if json {
        return None;
    }
    // (quota-API code, OpenAI code, message)
    let (code, oai_code, message) = match status.as_u16() {
        404 => ("NOT_FOUND", "not_found", "接口不存在"),
        405 => (
            "METHOD_NOT_ALLOWED",
            "method_not_allowed",
            "不支持的请求方法",
        ),
        408 => ("UNAVAILABLE", "timeout", "请求超时"),
        413 => ("PAYLOAD_TOO_LARGE", "payload_too_large", "请求体过大"),
        415 => (
            "INVALID_REQUEST",
            "unsupported_media_type",
            "不支持的内容类型，请使用 application/json",
        ),
        s if s >= 500 => ("INTERNAL_ERROR", "internal_error", "服务内部错误"),
        _ => ("INVALID_REQUEST", "invalid_request", "请求无效"),
    };
    let mut out = match fam {
        Family::OpenAi => {
            let kind = if status.is_server_error() {
                "api_error"
            } else {
                "invalid_request_error"
            };
            crate::gateway::oai_error::OaiError::new(status, kind, oai_code, message)
                .into_response()
        }
        Family::Monitor => (
            status,
            axum::Json(serde_json::json!({
                "error": message,
                "code": status.as_u16(),
                "timestamp": crate::timefmt::rfc3339(chrono::Utc::now().timestamp_millis()),
            })),
        )
            .into_response(),
        Family::Quota => ApiError::new(status, code, message).into_response(),
    };
    // Keep what the framework said about the method, the retry…
    for name in ["allow", "retry-after"] {
        if let Some(v) = resp.headers().get(name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_by_path() {
        assert_eq!(family("/v1/chat/completions"), Family::OpenAi);
        assert_eq!(family("/api/stats/top"), Family::Monitor);
        assert_eq!(family("/api/v1/use"), Family::Quota);
        assert_eq!(family("/admin/keys"), Family::Quota);
    }
}
