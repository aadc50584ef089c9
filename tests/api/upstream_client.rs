//! How the gateway reaches an upstream (`gateway::http_client`): TLS certificates verified
//! before any byte of a call is sent, redirects not followed, and a proxy named by the
//! environment honoured.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::gateway::http_upstream;
use crate::helpers::*;
use crate::upstream_mock::MockUpstream;

fn hello() -> Value {
    json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "hello"}]})
}

async fn chat(base: &str, key: &str) -> (u16, String) {
    let r = http_client()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&hello())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// What a TLS server with a self-signed certificate saw.
#[derive(Default)]
struct TlsSeen {
    connections: AtomicUsize,
    handshakes: AtomicUsize,
    plaintext: AtomicBool,
}

/// A TLS server for `localhost` whose certificate no one trusts.
async fn untrusted_tls_server() -> (u16, Arc<TlsSeen>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        ck.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(TlsSeen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            s.connections.fetch_add(1, Ordering::SeqCst);
            let (acceptor, s) = (acceptor.clone(), s.clone());
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    s.handshakes.fetch_add(1, Ordering::SeqCst);
                    let mut buf = [0u8; 64];
                    if matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {
                        s.plaintext.store(true, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_whose_certificate_is_not_trusted_never_gets_the_call_or_its_key() {
    let (port, seen) = untrusted_tls_server().await;
    let up = http_upstream(
        "untrusted",
        &format!("https://localhost:{port}/v1"),
        "sk-never-sent-1234",
    );
    let app = spawn_app_with(|c| c.gateway.upstreams = vec![up]).await;
    let (key, _) = app.create_key(json!({"quota": 1000})).await;
    let (status, body) = chat(&app.base, &key).await;
    assert!(status >= 500, "{status} {body}");
    assert!(!body.contains("sk-never-sent"), "{body}");
    assert!(
        seen.connections.load(Ordering::SeqCst) >= 1,
        "the upstream was contacted"
    );
    assert_eq!(
        seen.handshakes.load(Ordering::SeqCst),
        0,
        "the handshake was refused by the gateway"
    );
    assert!(!seen.plaintext.load(Ordering::SeqCst));
    // The request log says why, in words an operator can act on.
    let mut error = String::new();
    for _ in 0..100 {
        let (_, v) = app.admin_get("/admin/requests?limit=10").await;
        if let Some(e) = v["requests"][0]["error"].as_str() {
            error = e.to_owned();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    assert!(error.contains("certificate"), "{error}");
    assert!(!error.contains("sk-never-sent"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstreams_redirect_is_not_followed_with_the_call_and_its_key() {
    // Where a redirect would lead: it must never be asked.
    let elsewhere_hits = Arc::new(AtomicUsize::new(0));
    let hits = elsewhere_hits.clone();
    let elsewhere = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                "{}"
            }
        }),
    );
    let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere_url = format!("http://{}/v1/chat/completions", l2.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l2, elsewhere).await.unwrap() });
    let redirecting = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let to = elsewhere_url.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)]).into_response() }
        }),
    );
    let l1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", l1.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l1, redirecting).await.unwrap() });

    let up = http_upstream("redirecting", &base, "sk-stays-home-5678");
    let app = spawn_app_with(|c| c.gateway.upstreams = vec![up]).await;
    let (key, _) = app.create_key(json!({"quota": 1000})).await;
    let (status, body) = chat(&app.base, &key).await;
    assert_ne!(status, 200, "{body}");
    assert!(!body.contains("sk-stays-home"), "{body}");
    assert_eq!(elsewhere_hits.load(Ordering::SeqCst), 0);
}

/// Operators behind a proxy set `HTTP_PROXY` / `HTTPS_PROXY`: upstream calls go through it
/// (the upstream's name need not resolve here), and the start-up log says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_calls_go_through_the_proxy_the_environment_names() {
    // For an `http://` upstream a proxy gets the request in absolute form; the test mock
    // answers it as the upstream would (it routes by path).
    let proxy = MockUpstream::start().await;
    let proxy_addr = proxy.url.trim_end_matches("/v1").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("quota-proxy.toml");
    std::fs::write(
        &config,
        r#"
[[upstreams]]
name = "behind-proxy"
base_url = "http://upstream.invalid/v1"
api_key = "sk-via-proxy-9012"
models = ["*"]
"#,
    )
    .unwrap();
    let port = free_port();
    let srv = BinaryServer::start(
        dir.path(),
        port,
        &[
            ("QUOTA_PROXY_CONFIG", config.to_str().unwrap()),
            ("HTTP_PROXY", &proxy_addr),
            ("http_proxy", &proxy_addr),
            ("NO_PROXY", ""),
            ("no_proxy", ""),
        ],
    )
    .await;
    let r = http_client()
        .post(format!("{}/admin/keys", srv.base))
        .bearer_auth(ADMIN)
        .json(&json!({"quota": 1000}))
        .send()
        .await
        .unwrap();
    let key = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = chat(&srv.base, &key).await;
    assert_eq!(status, 200, "{body}");
    let got = proxy.last();
    assert_eq!(got.path, "chat/completions");
    assert_eq!(got.headers["host"], "upstream.invalid");
    assert_eq!(got.headers["authorization"], "Bearer sk-via-proxy-9012");
    assert!(
        srv.stderr().contains("through the proxy"),
        "{}",
        srv.stderr()
    );
}
