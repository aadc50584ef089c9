//! `/v1/responses` (OpenAI Responses) through the gateway, with the official `openai` SDKs
//! (Python and Node) and raw HTTP: against the built-in mock and a local upstream that speak
//! Responses natively, and a local chat-only upstream (translation). Each call is charged,
//! limited and logged like chat.

use std::sync::atomic::Ordering;

use quota_proxy::gateway::endpoint::Protocol;
use serde_json::{Value, json};

use crate::gateway::http_upstream;
use crate::helpers::*;
use crate::seed_clients::{node_has, python_has, run_client};
use crate::upstream_mock::MockUpstream;

async fn responses(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/responses"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The log rows of `/v1/responses` calls, newest first, once there are at least `n`.
async fn logged_at_least(app: &TestApp, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let (_, v) = app.admin_get("/admin/requests?limit=100").await;
        let rows: Vec<Value> = v["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["endpoint"] == "responses")
            .cloned()
            .collect();
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} responses rows logged");
}

/// gpt-* goes to the built-in mock (native Responses), deepseek-* to a local chat-only
/// upstream (translated).
async fn native_and_chat_only() -> (TestApp, MockUpstream) {
    let up = MockUpstream::start().await;
    let mut chat_only = http_upstream("chatonly", &up.url, "sk-upstream-chat");
    chat_only.protocols = vec![Protocol::Chat];
    chat_only.models = vec!["deepseek-*".into()];
    let mut mock = quota_proxy::gateway::settings::mock_upstream();
    mock.models = vec!["gpt-*".into()];
    let app = spawn_app_with(|c| c.gateway.upstreams = vec![chat_only, mock]).await;
    (app, up)
}

async fn sdk(app: &TestApp, program: &'static str, script: &'static str, model: &str, ok: &str) {
    let (key, _) = app.create_key(json!({"quota": 1000})).await;
    let (spent, _) = app.create_key(json!({"quota": 0})).await;
    run_client(
        program,
        script,
        vec![app.base.clone(), key, spent, model.to_owned()],
        ok,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_openai_sdk_speaks_responses_natively_and_translated() {
    if !python_has("openai") {
        return;
    }
    let (app, up) = native_and_chat_only().await;
    let ok = "python openai responses OK";
    sdk(&app, "python3", "openai_responses.py", "gpt-5-codex", ok).await;
    assert_eq!(up.hits(), 0, "gpt-* stayed on the mock");
    sdk(&app, "python3", "openai_responses.py", "deepseek-chat", ok).await;
    // The chat upstream saw chat completions only, with our key, the tool round trip as a
    // tool call and a tool message.
    let seen = up.state.received.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        5,
        "create, stream, two tool turns, streamed tool turn"
    );
    for r in &seen {
        assert_eq!(r.path, "chat/completions");
        assert_eq!(r.headers["authorization"], "Bearer sk-upstream-chat");
        assert!(r.body.get("input").is_none() && r.body["messages"].is_array());
    }
    let round_trip = seen
        .iter()
        .find(|r| {
            r.body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["role"] == "tool")
        })
        .expect("a translated function_call_output");
    let msgs = round_trip.body["messages"].as_array().unwrap();
    assert!(
        msgs.iter()
            .any(|m| m["tool_calls"][0]["function"]["name"] == "exec_command")
    );
    assert_eq!(
        round_trip.body["tools"][0]["function"]["name"],
        "exec_command"
    );
    // Ten served calls, each logged as `responses`, each a point, usage read not guessed;
    // the two refusals (bad key, spent key) logged and free.
    let rows = logged_at_least(&app, 11).await;
    let served: Vec<&Value> = rows.iter().filter(|r| r["status"] == 200).collect();
    assert_eq!(served.len(), 10, "{rows:?}");
    for r in &served {
        assert_eq!(r["cost"], 1, "{r}");
        assert_eq!(r["estimated"], false, "{r}");
        assert!(r["promptTokens"].as_i64().unwrap() > 0, "{r}");
        assert!(r["completionTokens"].as_i64().unwrap() > 0, "{r}");
    }
    assert!(served.iter().any(|r| r["upstream"] == "mock"));
    assert!(served.iter().any(|r| r["upstream"] == "chatonly"));
    let refused = rows
        .iter()
        .find(|r| r["status"] == 429)
        .expect("spent key logged");
    assert_eq!(refused["cost"], 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_openai_sdk_speaks_responses_natively_and_translated() {
    if !node_has("openai") {
        return;
    }
    let (app, up) = native_and_chat_only().await;
    for model in ["gpt-5-codex", "deepseek-chat"] {
        sdk(
            &app,
            "node",
            "openai_responses.js",
            model,
            "node openai responses OK",
        )
        .await;
    }
    assert_eq!(
        up.hits(),
        5,
        "the deepseek-* calls reached the chat upstream"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_to_a_native_upstream_pass_through_and_are_metered_from_its_usage() {
    let up = MockUpstream::start().await;
    let mut native = http_upstream("openai", &up.url, "sk-openai-upstream");
    native.protocols = vec![Protocol::Chat, Protocol::Responses];
    native.model_map = [("codex".to_owned(), "gpt-5-codex".to_owned())].into();
    let app = spawn_app_with(|c| c.gateway.upstreams = vec![native]).await;
    let (key, id) = app.create_key(json!({"quota": 10})).await;
    let body = json!({
        "model": "codex", "instructions": "sys", "store": false,
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k1",
        "tools": [{"type": "web_search"}],
        "input": [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "dev"}]},
                  {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "native please"}]}]
    });
    let r = responses(&app, &key, body.clone()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "response");
    assert!(
        v["output"][0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("native please")
    );
    let got = up.last();
    assert_eq!(got.path, "/v1/responses");
    assert_eq!(got.headers["authorization"], "Bearer sk-openai-upstream");
    // Forwarded as sent but for the model name the upstream knows.
    let mut expected = body.clone();
    expected["model"] = json!("gpt-5-codex");
    assert_eq!(got.body, expected);

    // Streamed: the upstream's events reach the caller unchanged, metered from
    // `response.completed`.
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let r = responses(&app, &key, sb).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.starts_with("event: response.created\n"), "{text}");
    assert!(text.contains("event: response.completed\n"), "{text}");
    let rows = logged_at_least(&app, 2).await;
    assert!(
        rows.iter()
            .all(|r| r["status"] == 200 && r["estimated"] == false),
        "{rows:?}"
    );
    let usage_of = |t: &str| -> Value {
        let done = t
            .split("\n\n")
            .find(|e| e.contains("response.completed"))
            .unwrap();
        serde_json::from_str::<Value>(done.split_once("data: ").unwrap().1).unwrap()["response"]["usage"].clone()
    };
    let u = usage_of(&text);
    let streamed_row = rows.iter().find(|r| r["isStream"] == true).unwrap();
    assert_eq!(streamed_row["promptTokens"], u["input_tokens"]);
    assert_eq!(streamed_row["completionTokens"], u["output_tokens"]);
    let (_, k) = app.admin_get(&format!("/admin/keys/{id}")).await;
    assert_eq!(k["used"], 2, "both calls charged");

    // The upstream's refusal reaches the caller in OpenAI's shape, its key redacted, free.
    up.state.fail_status.store(400, Ordering::SeqCst);
    let r = responses(&app, &key, body).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "mock_failure");
    assert!(!v.to_string().contains("sk-openai-upstream"), "{v}");
    let (_, k) = app.admin_get(&format!("/admin/keys/{id}")).await;
    assert_eq!(k["used"], 2, "a refusal costs nothing");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_refusals_limits_and_failover_are_those_of_chat() {
    let bad = MockUpstream::start().await;
    bad.state.fail_status.store(503, Ordering::SeqCst);
    let mut first = http_upstream("first-bad", &bad.url, "k1");
    first.priority = 10;
    let good = MockUpstream::start().await;
    let mut second = http_upstream("second-chat", &good.url, "k2");
    second.protocols = vec![Protocol::Chat];
    let app = spawn_app_with(|c| c.gateway.upstreams = vec![first, second]).await;
    let small = || json!({"model": "m", "input": "x", "max_output_tokens": 8});

    let r = responses(&app, "qp_nope", small()).await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");

    // Failover before the first byte: the native upstream's 503, then the chat upstream
    // answers (translated); the caller sees one response.
    let (key, id) = app.create_key(json!({"quota": 3})).await;
    let r = responses(&app, &key, small()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!((bad.hits(), good.hits()), (1, 1));
    assert_eq!(bad.last().path, "/v1/responses");
    assert_eq!(good.last().path, "chat/completions");
    let rows = logged_at_least(&app, 2).await;
    assert_eq!(rows[0]["upstream"], "second-chat");

    // Quota: the seed's message, nothing charged past it.
    for _ in 0..2 {
        assert_eq!(responses(&app, &key, small()).await.status(), 200);
    }
    let r = responses(&app, &key, small()).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("配额不足"),
        "{v}"
    );
    let (_, k) = app.admin_get(&format!("/admin/keys/{id}")).await;
    assert_eq!(k["used"], 3);

    // Models and rpm limits.
    let (only, _) = app
        .create_key(json!({"quota": 100, "limits": {"models": ["claude-*"], "rpm": 5}}))
        .await;
    let r = responses(&app, &only, small()).await;
    assert_eq!(r.status(), 403);
    let (rpm, _) = app
        .create_key(json!({"quota": 100, "limits": {"rpm": 1}}))
        .await;
    assert_eq!(responses(&app, &rpm, small()).await.status(), 200);
    let r = responses(&app, &rpm, small()).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // A body that is not a request: OpenAI's shape, never a 500.
    let r = app
        .client
        .post(app.url("/v1/responses"))
        .bearer_auth(&rpm)
        .body("[1,2]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    app.stop().await;
}
