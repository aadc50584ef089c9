//! Never free, never leaked (issue #23): what a hostile or broken upstream, or a hostile client,
//! must not get out of the gateway.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::gateway::http_upstream;
use crate::helpers::*;
use crate::upstream_mock::MockUpstream;

const KEY: &str = "sk-our-upstream-Secret-0123456789";
const HEADER: &str = "org-header-value-7777";

async fn echoing_app(up: &MockUpstream) -> TestApp {
    let mut u = http_upstream("hostile", &up.url, KEY);
    u.headers.insert("x-org".into(), HEADER.into());
    spawn_app_with(move |c| c.gateway.upstreams = vec![u]).await
}

fn leaked(text: &str) -> Option<&'static str> {
    let lower = text.to_ascii_lowercase();
    for s in [KEY, HEADER] {
        if lower.contains(&s.to_ascii_lowercase()) {
            return Some(s);
        }
        // The base64 forms' stable middle, whatever the alignment.
        for pad in 0..3 {
            let enc = STANDARD.encode(format!("{}{s}", "x".repeat(pad)));
            let core = &enc[4..enc.len() - 4];
            if text.contains(core) {
                return Some(s);
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_of_any_status_carries_our_credentials() {
    let up = MockUpstream::start().await;
    let app = echoing_app(&up).await;
    let (key, _) = app.create_key(json!({"quota": 1000})).await;
    let forms = [
        KEY.to_owned(),
        KEY.to_ascii_lowercase(),
        KEY.to_ascii_uppercase(),
        KEY.replace('-', "%2D"),
        format!("Basic {}", STANDARD.encode(format!("api:{KEY}"))),
        STANDARD.encode(KEY),
        format!("headers: x-org={HEADER}"),
    ];
    for form in &forms {
        *up.state.echo.lock().unwrap() = Some(form.clone());
        for stream in [false, true] {
            let r = app
                .client
                .post(app.url("/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&json!({"model": "m", "stream": stream,
                    "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let text = r.text().await.unwrap();
            assert_eq!(leaked(&text), None, "{form} (stream {stream}): {text}");
            assert!(
                text.contains("[redacted]"),
                "{form} (stream {stream}): {text}"
            );
        }
    }
    // Error answers too, in every form (they were redacted only as plain text before).
    *up.state.echo.lock().unwrap() = None;
    up.state
        .fail_status
        .store(400, std::sync::atomic::Ordering::SeqCst);
    let r = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    assert_eq!(leaked(&text), None, "{text}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_credentials_blocks_the_guessing_address_only() {
    use quota_proxy::alerts::settings::RuleKind;
    let rx = crate::alert_receiver::Receiver::start().await;
    let hook = vec![crate::alerts::hook_channel(&rx)];
    let app = spawn_app_with(|c| {
        c.gateway.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        crate::alerts::alerting(c, hook, &[(RuleKind::AuthFailures, &[])]);
    })
    .await;
    let (key, _) = app.create_key(json!({"quota": 10})).await;
    let from =
        |ip: &str, req: reqwest::RequestBuilder| req.header("x-forwarded-for", ip.to_owned());
    let guesser = "203.0.113.9";
    // Ten wrong admin tokens are free; the eleventh starts a block.
    for i in 0..11 {
        let r = from(guesser, app.client.get(app.url("/admin/keys")))
            .bearer_auth(format!("wrong-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    // Blocked now, whatever it sends, in each route's own error shape.
    let r = from(guesser, app.client.get(app.url("/admin/keys")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "RATE_LIMITED", "{v}");
    let r = from(guesser, app.client.post(app.url("/v1/chat/completions")))
        .bearer_auth(&key)
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{v}");
    let r = from(guesser, app.client.post(app.url("/auth/login")))
        .json(&json!({"token": ADMIN}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "login blocked too");
    // The health check and another address are unaffected.
    let r = from(guesser, app.client.get(app.url("/healthz")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The API's document takes no credentials either: still served.
    let r = from(guesser, app.client.get(app.url("/api/openapi.json")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = from("198.51.100.7", app.client.get(app.url("/admin/keys")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, _) = app.key_get(&key, "/api/v1/quota").await;
    assert_eq!(s, 200, "127.0.0.1 itself is another address");
    // Announced: an alert names the address.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let alert = loop {
        if let Some(r) = rx
            .got()
            .into_iter()
            .find(|r| r.body["rule"] == "auth_failures")
        {
            break r.body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no auth_failures alert"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(alert["subject"], format!("ip:{guesser}"), "{alert}");
    // Counted.
    let m = metrics_text(&app).await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("qp_auth_blocked_total") && !l.ends_with(" 0")),
        "{m}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_without_content_is_not_charged() {
    let up = MockUpstream::start().await;
    let u = http_upstream("u", &up.url, "sk-upstream-key-123456");
    let app = spawn_app_with(move |c| c.gateway.upstreams = vec![u]).await;
    let (key, _) = app.create_key(json!({"quota": 10})).await;
    let call = |stream: bool| {
        app.client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "m", "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    // A stream with no events; one whose only event is an error; a 200 answer that is an error.
    let cases: [(bool, Option<&str>, Option<Value>); 3] = [
        (true, Some(""), None),
        (
            true,
            Some("data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n"),
            None,
        ),
        (
            false,
            None,
            Some(json!({"error": {"message": "overloaded", "type": "server_error"}})),
        ),
    ];
    for (i, (stream, raw_stream, raw_answer)) in cases.into_iter().enumerate() {
        *up.state.raw_stream.lock().unwrap() = raw_stream.map(str::to_owned);
        *up.state.raw_answer.lock().unwrap() = raw_answer;
        let r = call(stream).await.unwrap();
        assert_eq!(r.status(), 200, "case {i}");
        let _ = r.text().await.unwrap();
        let mut row = Value::Null;
        for _ in 0..100 {
            let (_, v) = app.admin_get("/admin/requests?limit=10").await;
            if v["total"].as_u64() == Some(i as u64 + 1) {
                row = v["requests"][0].clone();
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
        assert_eq!(row["cost"], 0, "case {i}: {row}");
        assert!(
            row["error"].as_str().unwrap_or("").contains("not charged"),
            "case {i}: {row}"
        );
    }
    let q = app.quota(&key).await;
    assert_eq!(q["used"], 0, "nothing useful, nothing charged: {q}");
    // A normal answer is still charged.
    *up.state.raw_stream.lock().unwrap() = None;
    *up.state.raw_answer.lock().unwrap() = None;
    assert_eq!(call(true).await.unwrap().status(), 200);
    let _ = app.quota(&key).await;
    let mut used = Value::Null;
    for _ in 0..100 {
        used = app.quota(&key).await["used"].clone();
        if used == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    assert_eq!(used, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_that_changes_money_or_access_is_refused() {
    let app = spawn_app().await;
    let (key, id) = app.create_key(json!({"quota": 100})).await;
    // Duplicate keys: not the last one quietly.
    let r = app
        .client
        .post(app.url("/api/v1/use"))
        .header("X-API-Key", &key)
        .header("content-type", "application/json")
        .body(r#"{"amount":1,"amount":7}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("amount"),
        "{v}"
    );
    // null is not "the default": absent is.
    let (s, v) = app
        .key_post(&key, "/api/v1/use", json!({"amount": null}))
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = app
        .key_post(&key, "/api/v1/use/batch", json!([{"amount": null}]))
        .await;
    assert_eq!(s, 400);
    assert_eq!(app.quota(&key).await["used"], 0, "nothing charged");
    let (s, v) = app.key_post(&key, "/api/v1/use", json!({})).await;
    assert_eq!(
        (s, &v["amountUsed"]),
        (200, &json!(1)),
        "absent: the default"
    );
    // Path ids exactly as given.
    for path in ["/admin/keys/%201", "/admin/keys/+1", "/admin/keys/1%20"] {
        let path = path.replace('1', &id.to_string());
        let (s, v) = app.admin_get(&path).await;
        assert_eq!(s, 404, "{path}: {v}");
    }
    assert_eq!(app.admin_get(&format!("/admin/keys/{id}")).await.0, 200);
    // A key born expired.
    let (s, v) = app
        .admin_post(
            "/admin/keys",
            json!({"quota": 1, "expiresAt": "2001-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    // An empty CSRF header is no CSRF header.
    let r = app
        .client
        .post(app.url("/auth/login"))
        .json(&json!({"token": ADMIN}))
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    for (csrf, want) in [("", 403), ("1", 200)] {
        let r = app
            .client
            .post(app.url("/admin/keys"))
            .header("cookie", &cookie)
            .header("x-qp-csrf", csrf)
            .json(&json!({"quota": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "csrf {csrf:?}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limited_to_some_addresses_is_limited_on_the_quota_api_too() {
    let app = spawn_app().await;
    let (elsewhere, _) = app
        .create_key(json!({"quota": 10, "limits": {"ips": ["10.0.0.0/8"]}}))
        .await;
    let (here, _) = app
        .create_key(json!({"quota": 10, "limits": {"ips": ["127.0.0.1/32"]}}))
        .await;
    for path in ["/api/v1/quota", "/api/v1/validate", "/api/v1/usage/history"] {
        let (s, v) = app.key_get(&elsewhere, path).await;
        assert_eq!(s, 403, "{path}: {v}");
        assert_eq!(app.key_get(&here, path).await.0, 200, "{path}");
    }
    let (s, _) = app
        .key_post(&elsewhere, "/api/v1/use", json!({"amount": 1}))
        .await;
    assert_eq!(s, 403);
    let (s, _) = app
        .key_post(&here, "/api/v1/use", json!({"amount": 1}))
        .await;
    assert_eq!(s, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_before_its_body_arrives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    for (path, auth) in [
        (
            "/v1/chat/completions",
            "Authorization: Bearer qp_wrong_key_000000000000",
        ),
        ("/v1/messages", "x-api-key: qp_wrong_key_000000000000"),
        ("/api/v1/use", "X-API-Key: qp_wrong_key_000000000000"),
    ] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        // A body announced and never sent: a slow-body client.
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{{"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(std::time::Duration::from_secs(3), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{path}: no answer while the body is pending"))
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 401"), "{path}: {text}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_is_cut_at_its_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|c| {
        c.connections.body_deadline = std::time::Duration::from_millis(600);
        c.connections.body_idle_timeout = std::time::Duration::from_secs(5);
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    // One byte every 150 ms: never idle long enough for the idle timeout.
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..40 {
            if wr.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        }
    });
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(std::time::Duration::from_secs(3), rd.read(&mut buf))
        .await
        .expect("answered before the trickle ended")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 4"), "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    writer.abort();
    app.stop().await;
}

/// The text a caller assembles from a stream's deltas (chat `content`, Messages `text`).
fn assembled(sse: &str) -> String {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .or(v["delta"]["text"].as_str())
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_spelled_across_streamed_events_is_masked() {
    let up = MockUpstream::start().await;
    // A chat-only upstream: Messages reach it translated, its chunks become Messages events.
    let mut u = http_upstream("hostile", &up.url, KEY);
    u.protocols = vec![quota_proxy::gateway::endpoint::Protocol::Chat];
    let app = spawn_app_with(move |c| c.gateway.upstreams = vec![u]).await;
    let (key, _) = app.create_key(json!({"quota": 1000})).await;
    // The key in three deltas, none of which holds it whole.
    let parts = [
        "the key is sk-our-up",
        "stream-Secret-01",
        "23456789 and that is all",
    ];
    let mut raw = String::new();
    for (i, p) in parts.iter().enumerate() {
        let finish = if i == parts.len() - 1 {
            json!("stop")
        } else {
            Value::Null
        };
        raw.push_str(&format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
                "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": finish}]})
        ));
    }
    raw.push_str("data: [DONE]\n\n");
    *up.state.raw_stream.lock().unwrap() = Some(raw);
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/messages",
            json!({"model": "m", "stream": true, "max_tokens": 50,
                "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ] {
        let r = app
            .client
            .post(app.url(path))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let sse = r.text().await.unwrap();
        assert_eq!(status, 200, "{path}: {sse}");
        let text = assembled(&sse);
        assert_eq!(leaked(&text), None, "{path}: {text}");
        assert!(text.starts_with("the key is "), "{path}: {text}");
        assert!(text.ends_with(" and that is all"), "{path}: {text}");
        assert!(text.contains("*****"), "{path}: {text}");
    }
    app.stop().await;
}
