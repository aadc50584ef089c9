//! `/v1/messages` (Anthropic Messages) through the gateway, with the official `anthropic`
//! Python SDK and raw HTTP: against the built-in mock (which speaks Messages), a local
//! upstream that speaks Messages natively, and a local chat-only upstream (translation).
//! Each call is charged and logged like chat.

use quota_proxy::gateway::endpoint::Protocol;
use serde_json::{Value, json};

use crate::gateway::http_upstream;
use crate::helpers::*;
use crate::seed_clients::{node_has, python_has, run_client};
use crate::upstream_mock::MockUpstream;

async fn sdk_run(app: &TestApp, model: &str) {
    let (key, _) = app.create_key(json!({"quota": 1000})).await;
    let (spent, _) = app.create_key(json!({"quota": 0})).await;
    run_client(
        "python3",
        "anthropic_sdk.py",
        vec![app.base.clone(), key, spent, model.to_owned()],
        "python anthropic sdk OK",
    )
    .await;
}

async fn messages(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The log rows of `/v1/messages` calls, newest first, once there are at least `n` (rows are
/// written in batches off the response path).
async fn logged_at_least(app: &TestApp, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let (_, v) = app.admin_get("/admin/requests?limit=100").await;
        let rows: Vec<Value> = v["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["endpoint"] == "messages")
            .cloned()
            .collect();
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} messages rows logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_sdk_works_against_the_built_in_mock() {
    if !python_has("anthropic") {
        return;
    }
    let app = spawn_app().await;
    sdk_run(&app, "claude-opus-4-8").await;
    let rows = logged_at_least(&app, 6).await;
    // create, stream, two tool turns, a streamed tool turn, and the spent key's refusal.
    assert!(rows.iter().any(|r| r["status"] == 429));
    let served: Vec<&Value> = rows.iter().filter(|r| r["status"] == 200).collect();
    assert_eq!(served.len(), 5, "{rows:?}");
    for r in &served {
        assert!(r["completionTokens"].as_i64().unwrap() > 0, "{r}");
        assert_eq!(r["cost"], 1, "requests mode: a point a call");
        assert_eq!(r["upstream"], "mock");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_anthropic_sdk_works_natively_and_translated() {
    if !node_has("@anthropic-ai/sdk") {
        return;
    }
    let up = MockUpstream::start().await;
    let mut chat_only = http_upstream("chatonly", &up.url, "sk-upstream-chat");
    chat_only.protocols = vec![Protocol::Chat];
    chat_only.models = vec!["deepseek-*".into()];
    // claude-* goes to the built-in mock (native Messages), deepseek-* to the chat upstream.
    let mut mock = quota_proxy::gateway::settings::mock_upstream();
    mock.models = vec!["claude-*".into()];
    let app = spawn_app_with(|c| c.gateway.upstreams = vec![chat_only, mock]).await;
    for model in ["claude-sonnet-4-5", "deepseek-chat"] {
        let (key, _) = app.create_key(json!({"quota": 1000})).await;
        let (spent, _) = app.create_key(json!({"quota": 0})).await;
        run_client(
            "node",
            "anthropic_sdk.js",
            vec![app.base.clone(), key, spent, model.to_owned()],
            "node anthropic sdk OK",
        )
        .await;
    }
    assert!(
        up.hits() >= 3,
        "the deepseek-* calls reached the chat upstream"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_to_a_chat_only_upstream_are_translated_both_ways() {
    if !python_has("anthropic") {
        return;
    }
    let up = MockUpstream::start().await;
    let mut chat_only = http_upstream("chatonly", &up.url, "sk-upstream-chat");
    chat_only.protocols = vec![Protocol::Chat];
    let app = spawn_app_with(|c| c.gateway.upstreams = vec![chat_only]).await;
    sdk_run(&app, "deepseek-chat").await;
    // The upstream only ever saw chat completions, with our key, never the caller's.
    let seen = up.state.received.lock().unwrap().clone();
    assert!(seen.len() >= 5);
    for r in &seen {
        assert_eq!(r.path, "chat/completions");
        assert_eq!(r.headers["authorization"], "Bearer sk-upstream-chat");
        assert!(r.headers.get("x-api-key").is_none());
        assert!(r.headers.get("anthropic-version").is_none());
        assert!(r.body["messages"].is_array());
    }
    // The tool round trip went over as chat tool calls and a tool message.
    let with_result = seen
        .iter()
        .find(|r| {
            r.body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["role"] == "tool")
        })
        .expect("a translated tool result");
    assert_eq!(with_result.body["tools"][0]["type"], "function");
    assert!(
        with_result.body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["tool_calls"].is_array())
    );
    let served = logged_at_least(&app, 5).await;
    assert!(served.iter().filter(|r| r["status"] == 200).count() >= 5);
    assert!(
        served
            .iter()
            .filter(|r| r["status"] == 200)
            .all(|r| r["estimated"] == false && r["promptTokens"].as_i64().unwrap() > 0),
        "usage read from the translated chat answers: {served:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_to_a_native_upstream_pass_through_with_its_key_and_headers() {
    let up = MockUpstream::start().await;
    let root = up.url.trim_end_matches("/v1").to_owned();
    let mut native = http_upstream("anthropic", &root, "sk-ant-upstream");
    native.protocols = vec![Protocol::Messages];
    let app = spawn_app_with(|c| c.gateway.upstreams = vec![native]).await;
    let (key, id) = app.create_key(json!({"quota": 10})).await;
    let body = json!({
        "model": "claude-x", "max_tokens": 32,
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "native please"}]
    });
    let r = messages(&app, &key, body.clone()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert!(
        v["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("native please")
    );
    let got = up.last();
    assert_eq!(got.path, "/v1/messages");
    assert_eq!(got.headers["x-api-key"], "sk-ant-upstream");
    assert!(got.headers.get("authorization").is_none());
    assert_eq!(got.headers["anthropic-version"], "2023-06-01");
    assert_eq!(
        got.headers["anthropic-beta"],
        "interleaved-thinking-2025-05-14"
    );
    assert_eq!(got.body["system"], body["system"], "forwarded as sent");
    assert!(!got.body.to_string().contains(&key));

    // Streamed: the upstream's events reach the caller unchanged and are metered.
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let r = messages(&app, &key, sb).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = r.text().await.unwrap();
    assert!(text.starts_with("event: message_start\n"), "{text}");
    assert!(text.contains("event: message_stop\n"), "{text}");
    let rows = logged_at_least(&app, 2).await;
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r["status"] == 200 && r["estimated"] == false)
    );
    let (_, k) = app.admin_get(&format!("/admin/keys/{id}")).await;
    assert_eq!(k["used"], 2, "both calls charged");

    // The upstream's own refusal reaches the caller in Anthropic's shape, its key redacted.
    up.state
        .fail_status
        .store(400, std::sync::atomic::Ordering::SeqCst);
    let r = messages(&app, &key, body).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(!v.to_string().contains("sk-ant-upstream"), "{v}");
    let (_, k) = app.admin_get(&format!("/admin/keys/{id}")).await;
    assert_eq!(k["used"], 2, "a refusal costs nothing");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_refusals_are_in_anthropic_shape_and_limits_apply() {
    let app = spawn_app().await;
    let small =
        || json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]});
    let r = messages(&app, "qp_nope", small()).await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "authentication_error", "message": "API密钥无效或缺失 (invalid API key)"}})
    );
    let (key, _) = app
        .create_key(json!({"quota": 100, "limits": {"models": ["claude-*"]}}))
        .await;
    let r = messages(&app, &key, small()).await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "permission_error");
    let (rpm, _) = app
        .create_key(json!({"quota": 100, "limits": {"rpm": 1}}))
        .await;
    assert_eq!(messages(&app, &rpm, small()).await.status(), 200);
    let r = messages(&app, &rpm, small()).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    // A framework refusal on the route is Anthropic-shaped too.
    let r = app
        .client
        .get(app.url("/v1/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    app.stop().await;
}
