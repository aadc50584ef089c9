//! The shell and a guard around a real router, called as the listener calls them.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::{Service, ServiceExt};

use super::{Context, Guard, GuardLayer, Shell};
use crate::error::Family;

fn shell(timeout: Option<Duration>) -> Shell {
    let guard = GuardLayer::new(Guard {
        family: Family::OpenAi,
        body_limit: 1024,
        timeout,
        body_idle_timeout: Duration::from_secs(5),
        body_deadline: Duration::from_secs(5),
        failures: Arc::new(crate::bruteforce::FailureLimiter::new(0)),
    });
    let routes = Router::new()
        .route(
            "/boom",
            get(|| async {
                if std::hint::black_box(true) {
                    panic!("sk-secret-in-a-panic");
                }
                "unreachable"
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                "late"
            }),
        )
        .route(
            "/own",
            get(|| async { ([("x-frame-options", "SAMEORIGIN")], "framed").into_response() }),
        )
        .route(
            "/origin",
            get(|req: axum::extract::Request| async move {
                let o = req.extensions().get::<crate::auth::Origin>().cloned();
                o.map_or_else(String::new, |o| o.request_id)
            }),
        )
        .layer(guard);
    Shell::new(
        routes.fallback(super::unmatched),
        Context {
            trusted_proxies: Vec::new(),
            unit: crate::billing::Currency::Points,
        },
        1024,
        crate::web::secure_headers(),
    )
}

async fn get_path(s: &Shell, path: &str) -> Response {
    let req = Request::get(path).body(Body::empty()).unwrap();
    s.clone().oneshot(req).await.unwrap()
}

async fn body_text(r: Response) -> String {
    let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    String::from_utf8(b.to_vec()).unwrap()
}

fn has_secure_headers(r: &Response) -> bool {
    crate::web::SECURE_HEADERS
        .iter()
        .all(|(name, _)| r.headers().contains_key(*name))
}

#[tokio::test]
async fn a_panicking_handler_answers_500_in_shape_with_every_header() {
    let s = shell(None);
    let r = get_path(&s, "/boom").await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(has_secure_headers(&r));
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(id.starts_with("req_"), "{id}");
    let body = body_text(r).await;
    assert!(body.contains("INTERNAL_ERROR"), "{body}");
    assert!(
        !body.contains("sk-secret"),
        "the panic's text leaked: {body}"
    );
    // The service goes on answering.
    let r = get_path(&s, "/own").await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_answers_own_header_is_kept_and_the_rest_are_added() {
    let s = shell(None);
    let r = get_path(&s, "/own").await;
    assert_eq!(r.headers()["x-frame-options"], "SAMEORIGIN");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.headers().contains_key("content-security-policy"));
    // An unmatched path gets them too, in the family its prefix suggests.
    let r = get_path(&s, "/v1/nothing-here").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(has_secure_headers(&r));
    assert!(r.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn the_handler_sees_the_request_id_the_answer_carries() {
    let s = shell(None);
    let r = get_path(&s, "/origin").await;
    let header = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(body_text(r).await, header);
}

#[tokio::test]
async fn a_timed_group_answers_503_in_its_family_when_the_handler_is_late() {
    let s = shell(Some(Duration::from_millis(50)));
    let r = get_path(&s, "/slow").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(has_secure_headers(&r));
    let body = body_text(r).await;
    // The OpenAI family's shape: {"error":{"message":…,"type":…}}.
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"]["message"].is_string(), "{body}");
    // Without a time limit the same route answers.
    let s = shell(None);
    let r = get_path(&s, "/slow").await;
    assert_eq!(body_text(r).await, "late");
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_before_the_handler() {
    let mut s = shell(None);
    let req = Request::get("/own")
        .header("content-length", "10000000")
        .body(Body::empty())
        .unwrap();
    let r = s.call(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(has_secure_headers(&r));
}
