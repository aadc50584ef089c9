//! Slow, idle and too many clients: the server closes what it must and keeps serving the
//! others.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Reads until the peer closes (or `within` passes); returns what was read and whether the
/// connection was closed.
async fn read_to_close(s: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn idle_and_slow_header_connections_are_closed_while_others_are_served() {
    let app = spawn_app_with(|c| {
        c.connections.header_read_timeout = Duration::from_millis(400);
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(addr(&app)).await.unwrap());
    }
    let mut slow = TcpStream::connect(addr(&app)).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // A keep-alive connection that made one request, then went quiet.
    let mut kept = TcpStream::connect(addr(&app)).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Others are served meanwhile.
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let started = Instant::now();
    for s in idle.iter_mut() {
        let (_, closed) = read_to_close(s, Duration::from_secs(3)).await;
        assert!(closed, "an idle connection stayed open");
    }
    let (_, closed) = read_to_close(&mut slow, Duration::from_secs(3)).await;
    assert!(closed, "a slow header stayed open");
    let (got, closed) = read_to_close(&mut kept, Duration::from_secs(3)).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(closed, "an idle keep-alive connection stayed open");
    assert!(started.elapsed() < Duration::from_secs(3));
    app.stop().await;
}

#[tokio::test]
async fn past_the_connection_cap_a_client_gets_a_clear_refusal() {
    let app = spawn_app_with(|c| {
        c.connections.max_connections = 4;
        c.connections.header_read_timeout = Duration::from_secs(10);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(addr(&app)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(addr(&app)).await.unwrap();
    let (got, closed) = read_to_close(&mut extra, Duration::from_secs(2)).await;
    assert!(closed);
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    let body = got.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "UNAVAILABLE");
    // Freed slots serve again.
    drop(held);
    let mut ok = false;
    for _ in 0..50 {
        if let Ok(r) = http_client().get(app.url("/healthz")).send().await
            && r.status().is_success()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok);
    app.stop().await;
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_read() {
    let app = spawn_app().await;
    for (path, openai) in [("/api/v1/use", false), ("/v1/chat/completions", true)] {
        let mut s = TcpStream::connect(addr(&app)).await.unwrap();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             X-API-Key: qp_x\r\nContent-Length: 10000000\r\n\r\n{{}}"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let started = Instant::now();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("answered without waiting for the body")
            .unwrap();
        let got = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(got.starts_with("HTTP/1.1 413"), "{path}: {got}");
        assert!(started.elapsed() < Duration::from_secs(1));
        let body = got.split("\r\n\r\n").nth(1).unwrap_or("");
        if openai {
            assert!(body.contains("\"type\""), "{body}");
        } else {
            assert!(body.contains("PAYLOAD_TOO_LARGE"), "{body}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_answered_and_closed() {
    let app = spawn_app_with(|c| {
        c.connections.body_idle_timeout = Duration::from_millis(300);
    })
    .await;
    let (key, _) = app.create_key(serde_json::json!({"quota": 5})).await;
    for path in ["/api/v1/use", "/v1/chat/completions", "/admin/keys"] {
        let mut s = TcpStream::connect(addr(&app)).await.unwrap();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             X-API-Key: {key}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Length: 100\r\n\r\n{{\"amo"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let started = Instant::now();
        let (got, _) = read_to_close(&mut s, Duration::from_secs(3)).await;
        assert!(got.starts_with("HTTP/1.1 4"), "{path}: {got}");
        assert!(started.elapsed() < Duration::from_secs(2), "{path}");
    }
    // Nothing was charged.
    assert_eq!(app.quota(&key).await["used"], 0);
    app.stop().await;
}

/// A connection from `from` (a loopback address of its own) to the app.
async fn connect_from(from: &str, app: &TestApp) -> std::io::Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(format!("{from}:0").parse().unwrap())?;
    sock.connect(addr(app).parse().unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_body_flood_from_one_address_leaves_room_for_everyone_else() {
    // 300 connections from 127.0.0.2 announce a 60 000-byte login body and trickle it; the
    // budget is 200 connections. Without a per-address cap the flood takes all 200.
    let app = spawn_app_with(|c| {
        c.connections.max_connections = 200;
        c.connections.max_unauthenticated_per_ip = 64;
    })
    .await;
    let (key, _) = app.create_key(serde_json::json!({"quota": 1000})).await;
    let mut flood = Vec::new();
    let mut refused = 0;
    for _ in 0..300 {
        let Ok(mut s) = connect_from("127.0.0.2", &app).await else {
            refused += 1;
            continue;
        };
        let head = "POST /auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                    content-length: 60000\r\n\r\n{\"token\":\"";
        if s.write_all(head.as_bytes()).await.is_err() {
            refused += 1;
            continue;
        }
        flood.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Which of them the server answered at once with its refusal.
    let mut held = Vec::new();
    for mut s in flood {
        let (got, closed) = read_to_close(&mut s, Duration::from_millis(5)).await;
        if closed || got.starts_with("HTTP/1.1 503") {
            refused += 1;
        } else {
            held.push(s);
        }
    }
    assert!(
        held.len() <= 110,
        "one address holds {} unauthenticated connections of 200",
        held.len()
    );
    assert_eq!(held.len() + refused, 300);
    // Everyone else is served meanwhile: the quota API and the gateway, from 127.0.0.1.
    let mut calls = Vec::new();
    for i in 0..60 {
        let (app_key, url) = (key.clone(), app.url(""));
        calls.push(tokio::spawn(async move {
            let client = http_client();
            let r = if i % 2 == 0 {
                client
                    .get(format!("{url}/api/v1/quota"))
                    .header("X-API-Key", &app_key)
                    .send()
                    .await
            } else {
                client
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(&app_key)
                    .json(&serde_json::json!({"model": "mock-chat",
                        "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await
            };
            r.map(|r| r.status().as_u16()).unwrap_or(0)
        }));
    }
    for c in calls {
        assert_eq!(
            c.await.unwrap(),
            200,
            "a normal client was not served during the flood"
        );
    }
    // The flood is still going (its connections held), a byte at a time.
    for s in held.iter_mut().take(20) {
        s.write_all(b"x").await.unwrap();
    }
    drop(held);
    app.stop().await;
}

/// What the server answers to `raw` (sent as is), read until it closes.
async fn raw_answer(app: &TestApp, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr(app)).await.unwrap();
    // The server may answer (and close) before it has read everything: ignore a broken pipe.
    let _ = s.write_all(raw).await;
    let (got, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    got
}

#[tokio::test]
async fn requests_hyper_cannot_parse_are_refused_in_json_too() {
    let app = spawn_app().await;
    let long_uri = format!(
        "GET /api/v1/quota?{} HTTP/1.1\r\nhost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let mut many_headers = String::from("GET /healthz HTTP/1.1\r\nhost: x\r\n");
    for i in 0..150 {
        many_headers.push_str(&format!("x-h{i}: v\r\n"));
    }
    many_headers.push_str("\r\n");
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "b".repeat(600_000)
    );
    for (raw, status, code) in [
        ("NOT A REQUEST\r\n\r\n".to_owned(), 400, "INVALID_REQUEST"),
        (
            "GET / HTTP/1.1\r\nbad header\r\n\r\n".to_owned(),
            400,
            "INVALID_REQUEST",
        ),
        (long_uri, 414, "URI_TOO_LONG"),
        (many_headers, 431, "HEADERS_TOO_LARGE"),
        (huge_header, 431, "HEADERS_TOO_LARGE"),
    ] {
        let got = raw_answer(&app, raw.as_bytes()).await;
        assert!(
            got.starts_with(&format!("HTTP/1.1 {status} ")),
            "{status}: {}",
            &got[..got.len().min(200)]
        );
        assert!(
            got.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{got}"
        );
        let body = got.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], code, "{got}");
    }
    // The router's own answers are untouched.
    let got = raw_answer(
        &app,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
    app.stop().await;
}
