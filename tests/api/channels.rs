//! Channels as data (`/admin/upstreams`): created, routed through, edited, disabled,
//! deleted and audited over HTTP with no restart; secrets write-only and sealed at rest;
//! health ejects after N failures within a window and a probe brings it back; changes
//! reach a second instance within a second (PostgreSQL).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::gateway::http_upstream;
use crate::helpers::*;
use crate::upstream_mock::MockUpstream;

const KEY_A: &str = "sk-chanAAAAAAAAAAAAAAAA1111";
const KEY_B: &str = "sk-chanBBBBBBBBBBBBBBBB2222";
const HEADER_SECRET: &str = "org-secret-value-3456";

async fn request(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = app.client.request(m, app.url(path)).bearer_auth(ADMIN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    status_json(r.send().await.unwrap()).await
}

async fn chat(app: &TestApp, key: &str, model: &str) -> u16 {
    app.client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn names(list: &Value) -> Vec<String> {
    list["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_channel_is_created_routed_edited_disabled_and_deleted_without_restart() {
    let a = MockUpstream::start().await;
    let b = MockUpstream::start().await;
    let app = spawn_app_with(|c| c.secrets_key = Some("passphrase".into())).await;
    let (key, _) = app.create_key(json!({"quota": 1000})).await;

    let (s, v) = request(
        &app,
        "POST",
        "/admin/upstreams",
        Some(
            json!({"name": "relay-a", "baseUrl": a.url, "apiKeys": [KEY_A, KEY_B],
            "models": ["gpt-*"], "headers": {"X-Org": HEADER_SECRET}, "priority": 10}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id_a = v["id"].as_i64().unwrap();
    assert_eq!(v["source"], "api");
    assert_eq!(v["keyHints"], json!(["sk-…1111", "sk-…2222"]));
    assert_eq!(v["headers"]["x-org"], "org…3456");
    assert_eq!(v["health"]["state"], "healthy");
    let text = v.to_string();
    assert!(
        !text.contains(KEY_A) && !text.contains(HEADER_SECRET),
        "{text}"
    );

    // The stand-in mock gives way to the first channel.
    let (_, list) = app.admin_get("/admin/upstreams").await;
    assert_eq!(names(&list), vec!["relay-a"]);

    // Routed at once; the two keys in turn; our header sent.
    for _ in 0..4 {
        assert_eq!(chat(&app, &key, "gpt-4o").await, 200);
    }
    let used: std::collections::BTreeSet<String> = a
        .state
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.headers["authorization"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(used.len(), 2, "both keys used: {used:?}");
    assert_eq!(a.last().headers["x-org"], HEADER_SECRET);
    assert_eq!(
        chat(&app, &key, "claude-x").await,
        404,
        "not served by any channel"
    );

    // A second channel, a lower priority; a name taken is refused.
    let (s, v) = request(
        &app,
        "POST",
        "/admin/upstreams",
        Some(json!({"name": "relay-b", "baseUrl": b.url, "apiKeys": ["sk-other-key-000000"]})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = request(
        &app,
        "PATCH",
        "/admin/upstreams/relay-b",
        Some(json!({"name": "relay-a"})),
    )
    .await;
    assert_eq!((s, error_code(&v)), (409, "UPSTREAM_EXISTS"));

    // Disabled: out of routing (b serves), shown as disabled; enabled: back.
    let (s, v) = request(
        &app,
        "POST",
        &format!("/admin/upstreams/{id_a}/disable"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["health"]["state"], "disabled");
    let before = b.hits();
    assert_eq!(chat(&app, &key, "gpt-4o").await, 200);
    assert_eq!(b.hits(), before + 1, "the disabled channel was skipped");
    request(
        &app,
        "POST",
        &format!("/admin/upstreams/{id_a}/enable"),
        None,
    )
    .await;
    let before = a.hits();
    assert_eq!(chat(&app, &key, "gpt-4o").await, 200);
    assert_eq!(a.hits(), before + 1);

    // Edited: a model map; the keys replaced (the old ones never sent again).
    let (s, v) = request(
        &app,
        "PATCH",
        &format!("/admin/upstreams/{id_a}"),
        Some(json!({"modelMap": {"fast": "gpt-4o-mini"}, "apiKeys": [KEY_B]})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["keyHints"], json!(["sk-…2222"]));
    assert_eq!(chat(&app, &key, "fast").await, 200);
    assert_eq!(a.last().body["model"], "gpt-4o-mini");
    assert_eq!(
        a.last().headers["authorization"].to_str().unwrap(),
        format!("Bearer {KEY_B}")
    );

    // Test: a real minimal call, timed; the upstream's model list.
    let (s, v) = request(&app, "POST", &format!("/admin/upstreams/{id_a}/test"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["status"], 200);
    assert_eq!(a.last().body["max_tokens"], 1);
    assert!(
        v["reply"].as_str().unwrap().contains("chat.completion"),
        "{v}"
    );
    let (s, v) = request(
        &app,
        "GET",
        &format!("/admin/upstreams/{id_a}/models"),
        None,
    )
    .await;
    assert_eq!(
        (s, v["models"].clone()),
        (200, json!(["up-model-a", "up-model-b"]))
    );

    // Per-channel stats (once the request log is flushed).
    let t = Instant::now();
    let v = loop {
        let (_, v) = app.admin_get(&format!("/admin/upstreams/{id_a}")).await;
        if v["requests"].as_i64().unwrap() >= 6 || t.elapsed() > Duration::from_secs(5) {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(v["requests"].as_i64().unwrap() >= 6, "{v}");
    assert!(v["tokens"].as_i64().unwrap() > 0, "{v}");
    assert!(v["p50LatencyMs"].is_i64());

    // Deleted: gone from routing and from the list.
    let (s, _) = request(&app, "DELETE", "/admin/upstreams/relay-b", None).await;
    assert_eq!(s, 200);
    let (s, v) = app.admin_get("/admin/upstreams/relay-b").await;
    assert_eq!((s, error_code(&v)), (404, "UPSTREAM_NOT_FOUND"));

    // Every change audited, by action family.
    let (_, v) = app
        .admin_get("/admin/audit?action=upstream.&limit=100")
        .await;
    let actions: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for want in [
        "upstream.create",
        "upstream.update",
        "upstream.disable",
        "upstream.enable",
        "upstream.test",
        "upstream.delete",
    ] {
        assert!(actions.contains(&want), "{want} in {actions:?}");
    }
    assert!(!v.to_string().contains(KEY_B), "no secret in the audit");

    // Secrets are sealed at rest: neither the key nor the header value is in the file.
    let dir = app.stop().await;
    for f in ["qp.db", "qp.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.path().join(f)) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(KEY_B) && !text.contains(HEADER_SECRET),
                "{f}"
            );
        }
    }
    // Another SECRETS_KEY cannot open them: shown as disabled, never routed.
    let app = spawn_in(dir, |c| c.secrets_key = Some("another".into())).await;
    let (_, v) = app.admin_get("/admin/upstreams/relay-a").await;
    assert_eq!(v["health"]["state"], "disabled", "{v}");
    assert!(
        v["health"]["reason"]
            .as_str()
            .unwrap()
            .contains("SECRETS_KEY"),
        "{v}"
    );
    let (s, v) = request(
        &app,
        "PATCH",
        "/admin/upstreams/relay-a",
        Some(json!({"weight": 2})),
    )
    .await;
    assert_eq!((s, error_code(&v)), (409, "UPSTREAM_SEALED"));
    let before = a.hits();
    assert_ne!(chat(&app, &key, "gpt-4o").await, 200);
    assert_eq!(a.hits(), before);
    app.stop().await;
}

#[tokio::test]
async fn bad_channel_input_is_refused_in_the_documented_shape() {
    let up = MockUpstream::start().await;
    let app =
        spawn_app_with(|c| c.gateway.upstreams = vec![http_upstream("cfg", &up.url, "k")]).await;
    for (body, field) in [
        (json!({"name": "x", "baseUrl": "ftp://h"}), "baseUrl"),
        (
            json!({"name": "x", "baseUrl": "http://user:pw@h/v1"}),
            "baseUrl",
        ),
        (json!({"baseUrl": "http://h"}), "name"),
        (
            json!({"name": "x", "baseUrl": "http://h", "weight": 0}),
            "weight",
        ),
        (
            json!({"name": "x", "baseUrl": "http://h", "protocols": ["grpc"]}),
            "protocols",
        ),
        (
            json!({"name": "x", "baseUrl": "http://h", "headers": {"Host": "e"}}),
            "headers",
        ),
    ] {
        let (s, v) = app.admin_post("/admin/upstreams", body.clone()).await;
        assert_eq!((s, error_code(&v)), (400, "INVALID_REQUEST"), "{body}: {v}");
        assert_eq!(v["error"]["details"]["field"], field, "{body}: {v}");
    }
    let (s, v) = app
        .admin_post(
            "/admin/upstreams",
            json!({"name": "x", "baseUrl": "http://h", "colour": 1}),
        )
        .await;
    assert_eq!((s, error_code(&v)), (400, "INVALID_REQUEST"), "{v}");
    // The config file's upstream: shown, read-only, its name taken.
    let (_, v) = app.admin_get("/admin/upstreams/cfg").await;
    assert_eq!(
        (v["source"].as_str(), v["id"].is_null()),
        (Some("config"), true)
    );
    assert_eq!(v["keyHints"], json!(["****"]));
    let (s, v) = request(
        &app,
        "PATCH",
        "/admin/upstreams/cfg",
        Some(json!({"weight": 2})),
    )
    .await;
    assert_eq!((s, error_code(&v)), (409, "UPSTREAM_READ_ONLY"));
    let (s, v) = request(&app, "DELETE", "/admin/upstreams/cfg", None).await;
    assert_eq!((s, error_code(&v)), (409, "UPSTREAM_READ_ONLY"));
    let (s, v) = app
        .admin_post(
            "/admin/upstreams",
            json!({"name": "cfg", "baseUrl": "http://h"}),
        )
        .await;
    assert_eq!((s, error_code(&v)), (409, "UPSTREAM_EXISTS"));
    // A viewer reads, never writes.
    let r = app
        .client
        .post(app.url("/admin/upstreams"))
        .bearer_auth(VIEWER)
        .json(&json!({"name": "v", "baseUrl": "http://h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    app.stop().await;
}

/// N failures within the window eject; after the cooldown one call probes; success heals.
#[tokio::test]
async fn a_failing_channel_is_ejected_then_probed_back() {
    let flaky = MockUpstream::start().await;
    let spare = MockUpstream::start().await;
    let app = spawn_app().await;
    let (key, _) = app.create_key(json!({"quota": 1000})).await;
    let (s, v) = app
        .admin_post(
            "/admin/upstreams",
            json!({"name": "flaky", "baseUrl": flaky.url, "priority": 10,
                   "ejectAfterFailures": 2, "ejectWindowMs": 60000, "ejectCooldownMs": 5000}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    app.admin_post(
        "/admin/upstreams",
        json!({"name": "spare", "baseUrl": spare.url}),
    )
    .await;
    flaky.state.fail_status.store(503, Ordering::SeqCst);
    // Each call fails over to the spare: the caller never sees the failures.
    for _ in 0..2 {
        assert_eq!(chat(&app, &key, "m").await, 200);
    }
    let (_, v) = app.admin_get("/admin/upstreams/flaky").await;
    assert_eq!(v["health"]["state"], "ejected", "{v}");
    assert_eq!(v["health"]["reason"], "HTTP 503");
    assert!(v["health"]["since"].is_string());
    let hits = flaky.hits();
    assert_eq!(chat(&app, &key, "m").await, 200);
    assert_eq!(flaky.hits(), hits, "ejected: not tried while others serve");

    // Its upstream recovers; after the cooldown the next call is the probe.
    flaky.state.fail_status.store(0, Ordering::SeqCst);
    app.clock.advance_ms(5_001);
    let (_, v) = app.admin_get("/admin/upstreams/flaky").await;
    assert_eq!(v["health"]["state"], "probing", "{v}");
    assert_eq!(chat(&app, &key, "m").await, 200);
    assert_eq!(flaky.hits(), hits + 1, "the probe went to it");
    let (_, v) = app.admin_get("/admin/upstreams/flaky").await;
    assert_eq!(v["health"]["state"], "healthy", "{v}");
    app.stop().await;
}

/// Changes apply on another instance within a second (PostgreSQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_changes_reach_every_instance_within_a_second() {
    let Some(url) = crate::instances::fresh_pg().await else {
        return;
    };
    let up = MockUpstream::start().await;
    let one = spawn_app_with(|c| c.database_url = Some(url.clone())).await;
    let two = spawn_app_with(|c| c.database_url = Some(url.clone())).await;
    let (key, _) = one.create_key(json!({"quota": 100})).await;
    let (s, v) = one
        .admin_post(
            "/admin/upstreams",
            json!({"name": "shared", "baseUrl": up.url, "models": ["gpt-*"]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let seen = |app: &TestApp, want: &'static str| {
        let app_url = app.url("/admin/upstreams/shared");
        let client = app.client.clone();
        async move {
            let t = Instant::now();
            loop {
                let v: Value = client
                    .get(&app_url)
                    .bearer_auth(ADMIN)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if v["health"]["state"] == want {
                    return t.elapsed();
                }
                assert!(t.elapsed() < Duration::from_secs(5), "never {want}: {v}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let took = seen(&two, "healthy").await;
    assert!(took < Duration::from_secs(1), "created: {took:?}");
    assert_eq!(chat(&two, &key, "gpt-4o").await, 200);
    assert_eq!(up.hits(), 1, "the other instance routed through it");
    one.admin_post("/admin/upstreams/shared/disable", json!({}))
        .await;
    let took = seen(&two, "disabled").await;
    assert!(took < Duration::from_secs(1), "disabled: {took:?}");
    assert_ne!(chat(&two, &key, "gpt-4o").await, 200);
    assert_eq!(up.hits(), 1);
    one.stop().await;
    two.stop().await;
}

/// The Channels page in Chromium: a channel created from the form, tested, routed through,
/// ejected when its upstream fails and back after the probe; at 1440 px and at 390 px.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channels_page_creates_tests_and_shows_health() {
    let Some(b) = crate::browser::Browser::start().await else {
        return;
    };
    let up = MockUpstream::start().await;
    let app = spawn_app().await;
    let (key, _) = app.create_key(json!({"quota": 1000})).await;
    b.resize(1440, 900).await;
    b.goto(&app.url("/#/channels")).await;
    b.login(ADMIN).await;
    b.ready().await;
    assert!(
        b.exists("[data-channel=mock]").await,
        "the stand-in mock is listed"
    );
    b.click("#add-channel").await;
    b.type_into("#ch-name", "relay-ui").await;
    b.type_into("#ch-baseUrl", &up.url).await;
    b.type_into("#ch-apiKeys", "sk-ui-key-00000000000001").await;
    b.type_into("#ch-models", "gpt-*").await;
    b.type_into("#ch-headers", "X-Team: blue-team-secret-77")
        .await;
    b.screenshot("channel-form").await;
    b.click("[data-action=save]").await;
    b.ready().await;
    b.find("[data-channel=relay-ui]").await;
    let row = "tr:has([data-channel=relay-ui])";
    assert_eq!(
        b.attr(&format!("{row} [data-state]"), "data-state").await,
        "healthy"
    );
    let page = b.text("#channels-table").await;
    assert!(page.contains("sk-…0001"), "the key hint is shown: {page}");
    assert!(
        !page.contains("blue-team-secret"),
        "header values are never shown"
    );
    assert!(!b.exists("[data-channel=mock]").await, "the mock gave way");

    // Test: a real call, its latency and answer shown.
    b.click(&format!("{row} [data-act=test]")).await;
    b.find("#test-result[data-ok=true]").await;
    assert!(b.text("#test-latency").await.ends_with("ms"));
    b.screenshot("channel-test").await;
    b.click("[data-action=close]").await;
    assert_eq!(up.hits(), 1);
    assert_eq!(up.last().headers["x-team"], "blue-team-secret-77");

    // Routed through at once.
    assert_eq!(chat(&app, &key, "gpt-4o").await, 200);
    assert_eq!(up.hits(), 2);

    // Its upstream fails: three failures within the window eject it.
    up.state.fail_status.store(503, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(chat(&app, &key, "gpt-4o").await, 502);
    }
    b.click("#refresh-channels").await;
    b.ready().await;
    assert_eq!(
        b.attr(&format!("{row} [data-state]"), "data-state").await,
        "ejected"
    );
    assert!(b.text(row).await.contains("HTTP 503"));
    b.screenshot("channel-ejected").await;
    // It recovers; after the cooldown one call probes it and it is healthy again.
    up.state.fail_status.store(0, Ordering::SeqCst);
    app.clock.advance_ms(30_001);
    assert_eq!(chat(&app, &key, "gpt-4o").await, 200);
    b.click("#refresh-channels").await;
    b.ready().await;
    assert_eq!(
        b.attr(&format!("{row} [data-state]"), "data-state").await,
        "healthy"
    );

    // Disabled from the page: shown so, and no longer routed.
    b.click(&format!("{row} [data-act=disable]")).await;
    b.ready().await;
    assert_eq!(
        b.attr(&format!("{row} [data-state]"), "data-state").await,
        "disabled"
    );
    assert_ne!(chat(&app, &key, "gpt-4o").await, 200);

    // In English: every label English, the state too.
    b.click("#lang").await;
    b.ready().await;
    assert_eq!(b.text("#add-channel").await, "Add channel");
    assert!(b.text(row).await.contains("disabled"));
    b.screenshot("channels-en").await;
    b.click(&format!("{row} [data-act=edit]")).await;
    b.screenshot("channel-form-en").await;
    b.click("[data-action=cancel]").await;
    b.click("#lang").await;
    b.ready().await;

    // Phone width: no sideways overflow; the form fits.
    b.resize(390, 844).await;
    b.goto(&app.url("/#/channels")).await;
    b.ready().await;
    b.screenshot("phone-channels").await;
    b.assert_fits_width("the channels page").await;
    b.click("#add-channel").await;
    let fits = b
        .js("const r = document.querySelector('.modal').getBoundingClientRect(); return r.left >= 0 && r.right <= window.innerWidth")
        .await;
    assert_eq!(fits, json!(true));
    b.screenshot("phone-channel-form").await;
    assert!(b.console_errors().await.is_empty());
    b.close().await;
    app.stop().await;
}
