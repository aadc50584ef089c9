//! The `/v1/*` gateway against real HTTP upstreams (the test mock) and the built-in mock.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use quota_proxy::gateway::settings::{
    BillingMode, Price, UpstreamKind, UpstreamSettings, mock_upstream,
};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::upstream_mock::MockUpstream;

pub fn http_upstream(name: &str, url: &str, key: &str) -> UpstreamSettings {
    UpstreamSettings {
        name: name.to_owned(),
        kind: UpstreamKind::Openai,
        base_url: url.to_owned(),
        api_keys: vec![key.to_owned()],
        timeout_ms: 5_000,
        ..mock_upstream()
    }
}

async fn app_with(ups: Vec<UpstreamSettings>) -> TestApp {
    spawn_app_with(|c| c.gateway.upstreams = ups).await
}

async fn chat(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello gateway"}]})
}

/// The request log (written off the response path) once it holds `n` rows.
async fn logs(app: &TestApp, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let (_, v) = app.admin_get("/admin/requests?limit=1000").await;
        let rows = v["requests"].as_array().unwrap().clone();
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("request log did not reach {n} rows");
}

async fn sse_events(r: reqwest::Response) -> Vec<String> {
    let text = r.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_goes_upstream_with_the_upstreams_key_only() {
    let up = MockUpstream::start().await;
    let mut s = http_upstream("primary", &up.url, "sk-upstream-secret");
    s.model_map.insert("gpt-4o".into(), "deepseek-chat".into());
    s.headers.insert("x-extra".into(), "1".into());
    let app = app_with(vec![s]).await;
    let (key, id) = app.create_key(json!({"quota": 10})).await;

    let r = chat(&app, &key, hello("gpt-4o")).await;
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    assert_eq!(r.headers()["x-quota-remaining"], "9");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("hello gateway")
    );

    let got = up.last();
    assert_eq!(got.path, "chat/completions");
    assert_eq!(got.headers["authorization"], "Bearer sk-upstream-secret");
    assert_eq!(got.headers["x-extra"], "1");
    assert_eq!(got.body["model"], "deepseek-chat", "model_map applied");
    let all_headers = format!("{:?}", got.headers);
    assert!(
        !all_headers.contains(&key),
        "the caller's key never goes upstream"
    );
    assert!(!got.body.to_string().contains(&key));
    assert!(got.headers.get("x-api-key").is_none());

    // Other auth headers work; completions and embeddings too.
    let r = app
        .client
        .post(app.url("/v1/completions"))
        .header("x-trial-key", &key)
        .json(&json!({"model": "gpt-4o", "prompt": "once upon"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = app
        .client
        .post(app.url("/v1/embeddings"))
        .header("X-API-Key", &key)
        .json(&json!({"model": "text-embedding-3-small", "input": ["a", "b"]}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);

    // Every call: a log row and a usage-history entry.
    let rows = logs(&app, 3).await;
    let chat_row = rows
        .iter()
        .find(|r| r["endpoint"] == "chat.completions")
        .unwrap();
    assert_eq!(chat_row["upstream"], "primary");
    assert_eq!(chat_row["status"], 200);
    assert_eq!(chat_row["cost"], 1);
    assert_eq!(chat_row["keyId"], id);
    assert_eq!(chat_row["estimated"], false);
    assert!(chat_row["promptTokens"].as_i64().unwrap() > 0);
    assert!(chat_row["completionTokens"].as_i64().unwrap() > 0);
    assert_eq!(chat_row["clientIp"], "127.0.0.1");
    let (_, h) = app.key_get(&key, "/api/v1/usage/history").await;
    assert_eq!(h["total"], 3);
    assert_eq!(h["history"][2]["reason"], "chat.completions");
    assert_eq!(h["history"][2]["metadata"]["model"], "gpt-4o");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_use_openais_shape() {
    let app = spawn_app().await;
    let r = chat(&app, "qp_wrong", hello("m")).await;
    assert_eq!(r.status().as_u16(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert!(v["error"]["type"].is_string() && v["error"].get("param").is_some());
    let (key, _) = app.create_key(json!({"quota": 5})).await;
    let r = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = chat(&app, &key, json!({"messages": []})).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["param"], "model");
    let big = "x".repeat(5 * 1024 * 1024);
    let r = chat(
        &app,
        &key,
        json!({"model": "m", "messages": [{"role": "user", "content": big}]}),
    )
    .await;
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(
        app.quota(&key).await["used"],
        0,
        "refused calls cost nothing"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_is_incremental_and_usage_is_injected_then_hidden() {
    let up = MockUpstream::start().await;
    up.state.chunk_delay_ms.store(200, Ordering::SeqCst);
    let app = app_with(vec![http_upstream("slow", &up.url, "sk-up")]).await;
    let (key, _) = app.create_key(json!({"quota": 10})).await;

    let t0 = Instant::now();
    let mut r = chat(
        &app,
        &key,
        json!({"model": "m", "stream": true, "max_tokens": 4,
                                          "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let first = r.chunk().await.unwrap().unwrap();
    let first_at = t0.elapsed();
    let mut rest = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    let total = t0.elapsed();
    assert!(first.starts_with(b"data: "));
    assert!(
        total >= Duration::from_millis(1000),
        "upstream took {total:?}"
    );
    assert!(
        first_at < Duration::from_millis(500) && first_at * 3 < total,
        "first chunk at {first_at:?} of {total:?}: not buffered"
    );
    let mut all = first.to_vec();
    all.extend_from_slice(&rest);
    let text = String::from_utf8(all).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(
        !text.contains("\"usage\""),
        "the injected usage chunk is hidden"
    );
    assert_eq!(
        up.last().body["stream_options"]["include_usage"],
        true,
        "injected upstream"
    );

    // A caller that asks for usage sees it.
    up.state.chunk_delay_ms.store(0, Ordering::SeqCst);
    let r = chat(
        &app,
        &key,
        json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                                      "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let events = sse_events(r).await;
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert!(usage_chunk["usage"]["completion_tokens"].as_i64().unwrap() > 0);

    // Usage came from the stream, not an estimate.
    let rows = logs(&app, 2).await;
    for row in &rows {
        assert_eq!(row["isStream"], true);
        assert_eq!(row["estimated"], false, "{row}");
        assert!(row["ttftMs"].as_i64().is_some());
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_usage_is_estimated_and_marked() {
    let up = MockUpstream::start().await;
    up.state.omit_usage.store(true, Ordering::SeqCst);
    let app = spawn_app_with(|c| {
        c.gateway.upstreams = vec![http_upstream("u", &up.url, "k")];
        c.gateway.billing.mode = BillingMode::Tokens;
        c.gateway.billing.default_price = Price {
            prompt: 1000.0,
            completion: 1000.0,
        };
    })
    .await;
    let (key, _) = app.create_key(json!({"quota": 100000})).await;
    let r = chat(&app, &key, json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "abcdefgh"}]})).await;
    let events = sse_events(r).await;
    assert!(events.len() > 3);
    let r = chat(&app, &key, hello("m")).await;
    assert_eq!(r.status().as_u16(), 200);
    let rows = logs(&app, 2).await;
    for row in &rows {
        assert_eq!(row["estimated"], true);
        let tokens =
            row["promptTokens"].as_i64().unwrap() + row["completionTokens"].as_i64().unwrap();
        assert!(tokens > 0);
        assert_eq!(
            row["cost"].as_i64().unwrap(),
            tokens,
            "1 point a token at these prices"
        );
    }
    // An OpenAI model is counted by its own tokenizer (o200k_base), whole and streamed.
    let o200k = tiktoken_rs::o200k_base_singleton();
    for stream in [false, true] {
        let body = json!({"model": "gpt-4o-mini", "stream": stream,
            "messages": [{"role": "user", "content": "internationalization of tokenizers"}]});
        let n = rows_now(&app).await + 1;
        let r = chat(&app, &key, body).await;
        let answer: String = if stream {
            sse_events(r)
                .await
                .iter()
                .filter_map(|e| serde_json::from_str::<Value>(e).ok())
                .filter_map(|c| {
                    c["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(str::to_owned)
                })
                .collect()
        } else {
            let v: Value = r.json().await.unwrap();
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let row = logs(&app, n).await[0].clone();
        assert_eq!(row["estimated"], true, "{row}");
        let prompt = o200k
            .encode_ordinary("internationalization of tokenizers")
            .len()
            + 4;
        assert_eq!(row["promptTokens"], prompt, "{row}");
        assert_eq!(
            row["completionTokens"],
            o200k.encode_ordinary(&answer).len(),
            "{row}"
        );
    }
    app.stop().await;
}

async fn rows_now(app: &TestApp) -> usize {
    let (_, v) = app.admin_get("/admin/requests?limit=1").await;
    v["total"].as_u64().unwrap() as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_on_5xx_429_and_connect_errors_then_ejection() {
    let bad = MockUpstream::start().await;
    bad.state.fail_status.store(500, Ordering::SeqCst);
    let good = MockUpstream::start().await;
    let mut a = http_upstream("a-bad", &bad.url, "ka");
    a.priority = 10;
    let mut dead = http_upstream(
        "dead",
        &format!("http://127.0.0.1:{}/v1", free_port()),
        "kd",
    );
    dead.priority = 5;
    let b = http_upstream("b-good", &good.url, "kb");
    let app = spawn_app_with(|c| {
        c.gateway.upstreams = vec![a, dead, b];
        c.gateway.eject_after_failures = 2;
        c.gateway.eject_cooldown_ms = 60_000;
    })
    .await;
    let (key, _) = app.create_key(json!({"quota": 100})).await;

    let r = chat(&app, &key, hello("m")).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!((bad.hits(), good.hits()), (1, 1));
    assert_eq!(good.last().headers["authorization"], "Bearer kb");
    let rows = logs(&app, 1).await;
    assert_eq!(rows[0]["upstream"], "b-good");

    // Second failure ejects a-bad: from then on it is not tried.
    let r = chat(&app, &key, hello("m")).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(bad.hits(), 2);
    for _ in 0..3 {
        assert_eq!(chat(&app, &key, hello("m")).await.status().as_u16(), 200);
    }
    assert_eq!(bad.hits(), 2, "ejected upstream left alone");
    assert_eq!(good.hits(), 5);

    // 429 from the only healthy upstream also fails over; with nothing left: 502, free.
    good.state.fail_status.store(429, Ordering::SeqCst);
    let before = app.quota(&key).await["used"].as_i64().unwrap();
    let r = chat(&app, &key, hello("m")).await;
    assert_eq!(r.status().as_u16(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_error");
    assert!(!v.to_string().contains("kb"), "no upstream key in errors");
    assert_eq!(
        app.quota(&key).await["used"].as_i64().unwrap(),
        before,
        "no answer, no charge"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retry_once_bytes_were_sent() {
    let first = MockUpstream::start().await;
    first.state.abort_after.store(3, Ordering::SeqCst);
    // Paced, so the first events are on the wire before the cut.
    first.state.chunk_delay_ms.store(100, Ordering::SeqCst);
    let second = MockUpstream::start().await;
    let mut a = http_upstream("first", &first.url, "k1");
    a.priority = 1;
    let app = app_with(vec![a, http_upstream("second", &second.url, "k2")]).await;
    let (key, _) = app.create_key(json!({"quota": 10})).await;
    let r = chat(
        &app,
        &key,
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    let body = r.text().await.unwrap_or_default();
    assert!(body.contains("data: "), "the caller got the first events");
    assert!(!body.contains("[DONE]"));
    assert_eq!(second.hits(), 0, "no retry after the first byte");
    let rows = logs(&app, 1).await;
    assert!(
        rows[0]["error"]
            .as_str()
            .unwrap()
            .contains("upstream stream error")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_refused_before_any_upstream_is_contacted() {
    let up = MockUpstream::start().await;
    let app = app_with(vec![http_upstream("u", &up.url, "k")]).await;
    let (key, _) = app.create_key(json!({"quota": 2})).await;
    for _ in 0..2 {
        assert_eq!(chat(&app, &key, hello("m")).await.status().as_u16(), 200);
    }
    let r = chat(&app, &key, hello("m")).await;
    assert_eq!(r.status().as_u16(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "insufficient_quota");
    assert!(v["error"]["message"].as_str().unwrap().contains("配额不足"));
    assert_eq!(up.hits(), 2, "the refused call never reached the upstream");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_billing_reserves_then_settles_actual_cost() {
    let up = MockUpstream::start().await;
    let app = spawn_app_with(|c| {
        c.gateway.upstreams = vec![http_upstream("u", &up.url, "k")];
        c.gateway.billing.mode = BillingMode::Tokens;
        c.gateway.billing.default_price = Price {
            prompt: 1000.0,
            completion: 2000.0,
        };
        c.gateway.billing.default_max_tokens = 50;
    })
    .await;
    let (key, _) = app.create_key(json!({"quota": 1000})).await;
    let r = chat(
        &app,
        &key,
        json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    let (p, c) = (
        v["usage"]["prompt_tokens"].as_i64().unwrap(),
        v["usage"]["completion_tokens"].as_i64().unwrap(),
    );
    let expected = p + 2 * c;
    assert_eq!(
        app.quota(&key).await["used"].as_i64().unwrap(),
        expected,
        "charged actual usage"
    );
    let rows = logs(&app, 1).await;
    assert_eq!(rows[0]["cost"].as_i64().unwrap(), expected);

    // A hold larger than what remains is refused up front: default_max_tokens 50 → ≥ 100.
    let (small, _) = app.create_key(json!({"quota": 60})).await;
    let r = chat(&app, &small, hello("m")).await;
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(up.hits(), 1);
    // With a small max_tokens it fits.
    let r = chat(
        &app,
        &small,
        json!({"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_streams_on_a_key_worth_ten() {
    let up = MockUpstream::start().await;
    up.state.chunk_delay_ms.store(20, Ordering::SeqCst);
    let app = app_with(vec![http_upstream("u", &up.url, "k")]).await;
    let (key, _) = app.create_key(json!({"quota": 10})).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let c = app.client.clone();
        let url = app.url("/v1/chat/completions");
        let k = key.clone();
        tasks.push(tokio::spawn(async move {
            let r = c
                .post(url)
                .bearer_auth(k)
                .json(&json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            let body = r.text().await.unwrap();
            (s, body.contains("[DONE]"))
        }));
    }
    let mut served = 0;
    for t in tasks {
        let (s, done) = t.await.unwrap();
        if s == 200 {
            assert!(done);
            served += 1;
        } else {
            assert_eq!(s, 429);
        }
    }
    if served != 10 {
        // Seen once under load on PostgreSQL (11): what the log and the history said then.
        let (_, log) = app.admin_get("/admin/requests?limit=100").await;
        let (_, history) = app.key_get(&key, "/api/v1/usage/history?limit=100").await;
        panic!(
            "served {served} on a key worth 10; upstream hits {}; quota {}; log {log}; history {history}",
            up.hits(),
            app.quota(&key).await
        );
    }
    assert_eq!(up.hits(), 10);
    let q = app.quota(&key).await;
    assert_eq!(
        (q["used"].clone(), q["remaining"].clone()),
        (json!(10), json!(0))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_limits_and_their_headers() {
    let up = MockUpstream::start().await;
    let app = spawn_app_with(|c| {
        c.gateway.upstreams = vec![http_upstream("u", &up.url, "k")];
        c.daily_req_limit = Some(3);
    })
    .await;

    // rpm with the OpenAI-style headers.
    let (key, _) = app
        .create_key(json!({"quota": 100, "limits": {"rpm": 2}}))
        .await;
    let r = chat(&app, &key, hello("m")).await;
    assert_eq!(r.headers()["x-ratelimit-limit-requests"], "2");
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "1");
    assert!(
        r.headers()["x-ratelimit-reset-requests"]
            .to_str()
            .unwrap()
            .ends_with('s')
    );
    assert_eq!(chat(&app, &key, hello("m")).await.status().as_u16(), 200);
    let r = chat(&app, &key, hello("m")).await;
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");

    // dailyRequests from DAILY_REQ_LIMIT when the key sets none.
    let (daily, _) = app.create_key(json!({"quota": 100})).await;
    for _ in 0..3 {
        assert_eq!(chat(&app, &daily, hello("m")).await.status().as_u16(), 200);
    }
    let r = chat(&app, &daily, hello("m")).await;
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));

    // tpm: the estimate of the next call does not fit.
    let (tpm, _) = app
        .create_key(json!({"quota": 100, "limits": {"tpm": 60}}))
        .await;
    let small =
        json!({"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(chat(&app, &tpm, small.clone()).await.status().as_u16(), 200);
    let r = chat(
        &app,
        &tpm,
        json!({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status().as_u16(), 429);

    // Allowed models and IPs.
    let (scoped, _) = app
        .create_key(
            json!({"quota": 100, "limits": {"models": ["deepseek-*"], "ips": ["10.0.0.0/8"]}}),
        )
        .await;
    let r = chat(&app, &scoped, hello("gpt-4o")).await;
    assert_eq!(r.status().as_u16(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_allowed");
    let r = chat(&app, &scoped, hello("deepseek-chat")).await;
    assert_eq!(r.status().as_u16(), 403, "127.0.0.1 is not in 10.0.0.0/8");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "ip_not_allowed");
    let (local, _) = app
        .create_key(
            json!({"quota": 100, "limits": {"models": ["deepseek-*"], "ips": ["127.0.0.1"]}}),
        )
        .await;
    assert_eq!(
        chat(&app, &local, hello("deepseek-chat"))
            .await
            .status()
            .as_u16(),
        200
    );

    // maxConcurrent: a second call while a slow stream is open.
    up.state.chunk_delay_ms.store(150, Ordering::SeqCst);
    let (conc, _) = app
        .create_key(json!({"quota": 100, "limits": {"maxConcurrent": 1}}))
        .await;
    let mut open = chat(
        &app,
        &conc,
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    open.chunk().await.unwrap();
    let r = chat(&app, &conc, hello("m")).await;
    assert_eq!(r.status().as_u16(), 429);
    while open.chunk().await.unwrap().is_some() {}
    up.state.chunk_delay_ms.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        chat(&app, &conc, hello("m")).await.status().as_u16(),
        200,
        "slot released"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_cancels_the_upstream_and_charges_what_was_used() {
    let up = MockUpstream::start().await;
    up.state.chunk_delay_ms.store(200, Ordering::SeqCst);
    let app = app_with(vec![http_upstream("u", &up.url, "k")]).await;
    let (key, _) = app.create_key(json!({"quota": 10})).await;
    let mut r = chat(
        &app,
        &key,
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "bye"}]}),
    )
    .await;
    r.chunk().await.unwrap().unwrap();
    drop(r);
    for _ in 0..50 {
        if up.state.streams_cancelled.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        up.state.streams_cancelled.load(Ordering::SeqCst),
        1,
        "the upstream saw the close"
    );
    assert_eq!(up.state.streams_completed.load(Ordering::SeqCst), 0);
    let rows = logs(&app, 1).await;
    assert_eq!(rows[0]["error"], "client disconnected");
    assert_eq!(rows[0]["cost"], 1);
    assert_eq!(app.quota(&key).await["used"], 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_configured_names_and_costs_nothing() {
    let mut s = mock_upstream();
    s.models = vec!["deepseek-chat".into(), "deepseek-*".into()];
    s.model_map.insert("gpt-4o".into(), "deepseek-chat".into());
    let app = app_with(vec![s]).await;
    let (key, _) = app.create_key(json!({"quota": 1})).await;
    let r = app
        .client
        .get(app.url("/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["deepseek-chat", "gpt-4o"]);
    assert_eq!(app.quota(&key).await["used"], 0);
    let r = app.client.get(app.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Unknown model: 404 in OpenAI's shape, free.
    let r = chat(&app, &key, hello("claude-3")).await;
    assert_eq!(r.status().as_u16(), 404);
    app.stop().await;
}

/// An upstream's refusal of the request reaches the caller in OpenAI's shape, free, and
/// without the upstream key it echoed; a refusal of our key (401) is not the caller's: the
/// key is set aside, shown, and the caller told no upstream answered.
#[tokio::test]
async fn upstream_refusals_are_passed_on_without_our_upstream_key() {
    let up = MockUpstream::start().await;
    up.state.fail_status.store(400, Ordering::SeqCst);
    let secret = "sk-proj-UPSTREAMsecret0123456789";
    let app =
        spawn_app_with(|c| c.gateway.upstreams = vec![http_upstream("u", &up.url, secret)]).await;
    let (key, _) = app.create_key(json!({"quota": 10})).await;
    let r = chat(&app, &key, hello("m")).await;
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    // The upstream did echo it; we did not pass it on.
    assert!(
        up.last().headers["authorization"]
            .to_str()
            .unwrap()
            .contains(secret)
    );
    let text = v.to_string();
    assert!(!text.contains("UPSTREAMsecret"), "{text}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Incorrect API key provided")
    );
    assert_eq!(v["error"]["code"], "mock_failure");
    assert_eq!(app.quota(&key).await["used"], 0, "a refusal costs nothing");

    up.state.fail_status.store(401, Ordering::SeqCst);
    let r = chat(&app, &key, hello("m")).await;
    assert_eq!(r.status().as_u16(), 502);
    let text = r.text().await.unwrap();
    assert!(!text.contains("UPSTREAMsecret"), "{text}");
    let (_, v) = app.admin_get("/admin/upstreams/u").await;
    assert_eq!(v["keys"][0]["state"], "disabled", "{v}");
    assert_eq!(v["keys"][0]["reason"], "HTTP 401");
    assert!(!v.to_string().contains("UPSTREAMsecret"), "{v}");
    // Set aside: the next call does not reach the upstream with it.
    let before = up.hits();
    assert_eq!(chat(&app, &key, hello("m")).await.status().as_u16(), 502);
    assert_eq!(up.hits(), before);
    assert_eq!(app.quota(&key).await["used"], 0);
    app.stop().await;
}

/// A call served while its key was disabled still pays, clamped to what the key had left
/// (docs/design.md: "charges it even if the key was disabled meanwhile").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_disabled_during_a_call_still_pays_for_it() {
    let up = MockUpstream::start().await;
    up.state.chunk_delay_ms.store(60, Ordering::SeqCst);
    let app = spawn_app_with(|c| {
        c.gateway.upstreams = vec![http_upstream("u", &up.url, "k")];
        c.gateway.billing.mode = BillingMode::Tokens;
        c.gateway.billing.default_price = Price {
            prompt: 1000.0,
            completion: 1000.0,
        };
    })
    .await;
    // The hold (prompt estimate + 1) fits; the call's real cost does not.
    let (key, id) = app.create_key(json!({"quota": 8})).await;
    let call = {
        let client = app.client.clone();
        let url = app.url("/v1/chat/completions");
        let key = key.clone();
        tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"model": "m", "stream": true, "max_tokens": 1,
                              "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.text().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (s, _) = app
        .admin_post("/admin/keys/disable", json!({"key": id.to_string()}))
        .await;
    assert_eq!(s, 200);
    call.await.unwrap();
    let rows = logs(&app, 1).await;
    let cost =
        rows[0]["promptTokens"].as_i64().unwrap() + rows[0]["completionTokens"].as_i64().unwrap();
    assert!(cost > 8, "the call cost more than the key had: {cost}");
    // Memory and database agree: the key paid all it had.
    let (_, v) = app.admin_get(&format!("/admin/keys/{id}")).await;
    assert_eq!(v["enabled"], false);
    assert_eq!(v["used"], 8, "{v}");
    let dir = app.stop().await;
    let app = spawn_in(dir, |_| {}).await;
    let (_, v) = app.admin_get(&format!("/admin/keys/{id}")).await;
    assert_eq!(v["used"], 8, "after a restart: {v}");
    app.stop().await;
}

/// Numbers from the caller never reach arithmetic that overflows.
#[tokio::test]
async fn huge_max_tokens_is_refused_naming_the_field() {
    let app = spawn_app_with(|c| {
        c.gateway.billing.mode = BillingMode::Tokens;
    })
    .await;
    let (key, _) = app.create_key(json!({"limits": {"tpm": 1000}})).await;
    for n in [i64::MAX, 10_000_001] {
        let r = chat(
            &app,
            &key,
            json!({"model": "mock-chat", "max_tokens": n, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(r.status().as_u16(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"], "max_tokens", "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    // The largest allowed value is judged by the limits, not wrapped past them.
    let r = chat(
        &app,
        &key,
        json!({"model": "mock-chat", "max_tokens": 10_000_000, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status().as_u16(), 429, "over the tpm limit");
    let rows = logs(&app, 3).await;
    assert!(rows.iter().all(|r| r["status"] != 500));
    app.stop().await;
}

/// A runaway non-streamed answer is cut at `max_response_bytes`: the attempt fails (and the
/// next upstream is tried), nothing is charged, and the gateway never holds more than the cap.
#[tokio::test]
async fn an_upstream_answer_over_the_cap_fails_the_attempt() {
    let big = MockUpstream::start().await;
    big.state.pad_answer.store(300 * 1024, Ordering::SeqCst);
    let fine = MockUpstream::start().await;
    let mut a = http_upstream("big", &big.url, "k1");
    a.priority = 10;
    let b = http_upstream("fine", &fine.url, "k2");
    let app = spawn_app_with(|c| {
        c.gateway.upstreams = vec![a.clone()];
        c.gateway.max_response_bytes = 64 * 1024;
    })
    .await;
    let (key, _) = app.create_key(json!({"quota": 10})).await;
    let r = chat(&app, &key, hello("m")).await;
    assert_eq!(r.status().as_u16(), 502);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("65536"),
        "{v}"
    );
    assert_eq!(app.quota(&key).await["used"], 0);
    app.stop().await;

    let app = spawn_app_with(|c| {
        c.gateway.upstreams = vec![a, b];
        c.gateway.max_response_bytes = 64 * 1024;
    })
    .await;
    let (key, _) = app.create_key(json!({"quota": 10})).await;
    let r = chat(&app, &key, hello("m")).await;
    assert_eq!(r.status().as_u16(), 200, "failed over to the next upstream");
    assert_eq!(fine.hits(), 1);
    app.stop().await;
}

/// What the caller sent goes upstream byte for byte when nothing in it has to change (its
/// key order, spacing and escapes kept: it is not serialised again); a chat stream gets
/// `stream_options.include_usage` as one member put first, or merged into the caller's own
/// `stream_options`; a model the upstream knows by another name is renamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unedited_bodies_go_upstream_byte_for_byte() {
    let up = MockUpstream::start().await;
    let mut s = http_upstream("primary", &up.url, "sk-upstream");
    s.model_map.insert("gpt-4o".into(), "deepseek-chat".into());
    let app = app_with(vec![s]).await;
    let (key, _) = app.create_key(json!({"quota": 100})).await;
    let send = |body: &'static str| {
        app.client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let plain = "{ \"messages\" : [{\"content\":\"caf\\u00e9 \\\"q\\\"\",\"role\":\"user\"}],\n  \"model\":\"m\", \"max_tokens\": 5 }";
    let r = send(plain).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(&up.last().raw[..], plain.as_bytes(), "forwarded as sent");

    let stream =
        "  {\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    let r = send(stream).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let _ = r.text().await.unwrap();
    let got = up.last();
    let expected = format!(
        "  {{\"stream_options\":{{\"include_usage\":true}},{}",
        &stream[3..]
    );
    assert_eq!(std::str::from_utf8(&got.raw).unwrap(), expected);
    assert_eq!(got.body["stream_options"]["include_usage"], true);

    let own = "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"x\":1},\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    let r = send(own).await.unwrap();
    let _ = r.text().await.unwrap();
    let got = up.last();
    assert_eq!(
        got.body["stream_options"],
        json!({"x": 1, "include_usage": true}),
        "merged, one stream_options"
    );
    assert_eq!(
        std::str::from_utf8(&got.raw)
            .unwrap()
            .matches("stream_options")
            .count(),
        1
    );

    // A name given twice: read as its last value, and sent upstream once, never as sent
    // (an upstream that kept the first would run another model than the one billed).
    let twice = "{\"model\":\"gpt-4o\",\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    let r = send(twice).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let got = up.last();
    assert_eq!(got.body["model"], "m");
    assert_eq!(
        std::str::from_utf8(&got.raw)
            .unwrap()
            .matches("\"model\"")
            .count(),
        1,
        "one model member upstream"
    );

    let renamed = "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    let r = send(renamed).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let got = up.last();
    assert_eq!(got.body["model"], "deepseek-chat");
    assert_eq!(got.body["messages"][0]["content"], "hi");
    app.stop().await;
}
