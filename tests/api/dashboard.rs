//! The dashboard in a real browser (headless Chromium through WebDriver) against the real
//! server, plus the HTTP contract of its sign-in, assets and headers.

use std::time::Duration;

use serde_json::{Value, json};

use crate::browser::Browser;
use crate::helpers::*;

/// Runs script if it is ever inserted as HTML; the tests check `window.__xss` stays unset.
pub const HOSTILE: &str = "<img src=x onerror=\"window.__xss=1\">";

/// A gateway with some traffic: two keys of two owners (one with hostile names), calls on
/// two models (one hostile), all through the built-in mock upstream.
async fn seeded() -> (TestApp, i64, i64) {
    let app = spawn_app().await;
    let (ka, ida) = app
        .create_key(
            json!({"name": "alpha", "quota": 1000, "owner": {"userId": 1, "username": "alice"}}),
        )
        .await;
    let (kb, idb) = app
        .create_key(
            json!({"name": HOSTILE, "quota": 1000, "owner": {"userId": 2, "username": HOSTILE}}),
        )
        .await;
    for (key, model, n) in [
        (&ka, "mock-chat", 7),
        (&kb, "mock-chat", 3),
        (&kb, HOSTILE, 2),
    ] {
        for _ in 0..n {
            let r = app
                .client
                .post(app.url("/v1/chat/completions"))
                .bearer_auth(key)
                .json(&json!({"model": model, "messages": [{"role": "user", "content": "hello dashboard"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
        }
    }
    // Request-log rows are written off the response path, and the monitor's rollup reads
    // them on its next poll.
    let (from, to) = window();
    let q = format!("/api/stats/summary?nocache=1&start_ms={from}&end_ms={to}");
    for i in 0..200 {
        let (_, v) = app.admin_get(&q).await;
        if v["reqs"] == 12 {
            break;
        }
        assert!(i < 199, "the monitor never saw the 12 calls: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (app, ida, idb)
}

/// A fixed range around now, as the page's custom-range parameters and the API's.
fn window() -> (i64, i64) {
    let now = chrono::Utc::now().timestamp_millis();
    let end = (now / 60_000 + 2) * 60_000;
    (end - 3 * 3_600_000, end)
}

async fn api(app: &TestApp, path: &str) -> Value {
    let (s, v) = app.admin_get(path).await;
    assert_eq!(s, 200, "{path}: {v}");
    v
}

async fn no_console_errors(b: &Browser, page: &str) {
    let errs = b.console_errors().await;
    assert!(errs.is_empty(), "console errors on {page}: {errs:?}");
}

async fn no_script_ran(b: &Browser) {
    assert_eq!(b.js("return window.__xss === undefined").await, json!(true));
}

#[tokio::test]
async fn dashboard_pages_show_the_apis_numbers_in_both_languages() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let (app, _ida, idb) = seeded().await;
    let (from, to) = window();
    let range = format!("from={from}&to={to}");
    let api_range = format!("start_ms={from}&end_ms={to}");

    // Wrong token: refused with a message, still on the login form.
    b.goto(&app.url("/")).await;
    b.ready().await;
    b.screenshot("login-zh").await;
    b.login("not-the-token").await;
    let msg = b.find("#login-msg").await;
    for _ in 0..50 {
        if !msg.text().await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(msg.text().await.unwrap(), "令牌无效");
    // The refused login's 401 is the one expected console entry (which also shows that
    // console errors are seen at all).
    let errs = b.console_errors().await;
    assert!(
        errs.iter().any(|e| e.contains("401")),
        "the browser log is read: {errs:?}"
    );

    b.type_into("#token", ADMIN).await;
    b.click("#login-btn").await;
    b.find("main").await;
    b.goto(&app.url(&format!("/#/overview?{range}"))).await;
    b.ready().await;
    // The token is nowhere a script can read it.
    assert_eq!(
        b.js("return document.cookie.includes('qp_session') || JSON.stringify(localStorage).includes('test-admin')")
            .await,
        json!(false)
    );

    // Overview: the KPIs are the summary's.
    let sum = api(&app, &format!("/api/stats/summary?{api_range}")).await;
    assert_eq!(sum["reqs"], 12);
    for k in ["reqs", "tokens", "quota_sum", "users", "keys", "models"] {
        assert_eq!(
            b.attr(&format!("[data-kpi={k}]"), "data-value").await,
            sum[k].to_string(),
            "KPI {k}"
        );
    }
    assert!(b.exists("[data-kpi=error_rate]").await);
    assert!(b.exists("#trend-chart canvas").await, "trend chart drawn");
    // Upstreams with their state.
    assert_eq!(b.text("#upstreams td[data-col=name]").await, "mock");
    assert_eq!(b.text("#upstreams td[data-col=state]").await, "正常");
    no_console_errors(&b, "overview").await;
    b.screenshot("overview-zh").await;

    // CSV link: the browser downloads what the API exports.
    let href = b.attr("a[data-csv=series]", "href").await;
    let in_browser = b
        .js_async(&format!(
            "const r = await fetch('{href}'); \
             return [r.headers.get('content-disposition'), Array.from(new Uint8Array(await r.arrayBuffer()))];"
        ))
        .await;
    assert!(
        in_browser[0].as_str().unwrap().starts_with("attachment"),
        "{in_browser}"
    );
    let browser_bytes: Vec<u8> = serde_json::from_value(in_browser[1].clone()).unwrap();
    let r = app
        .client
        .get(app.url(&href))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let from_api = r.text().await.unwrap();
    assert!(from_api.starts_with('\u{feff}'), "BOM");
    assert_eq!(String::from_utf8(browser_bytes).unwrap(), from_api);

    // Rankings by key: first rows equal the API's, hostile names as text.
    b.goto(&app.url(&format!("/#/rankings?by=token&metric=reqs&{range}")))
        .await;
    b.ready().await;
    let top = api(
        &app,
        &format!("/api/stats/top?by=token&metric=reqs&limit=50&{api_range}"),
    )
    .await;
    assert_eq!(top["data"][0]["token_id"], json!(_ida));
    let first = b
        .text("#rank-table tr[data-row='0'] td[data-col=token_name]")
        .await;
    assert_eq!(first, top["data"][0]["token_name"].as_str().unwrap());
    let second = b
        .text("#rank-table tr[data-row='1'] td[data-col=token_name]")
        .await;
    assert_eq!(second, HOSTILE, "a hostile key name shows as text");
    assert_eq!(
        b.text("#rank-table tr[data-row='0'] td[data-col=reqs]")
            .await,
        top["data"][0]["reqs"].to_string()
    );
    no_script_ran(&b).await;
    no_console_errors(&b, "rankings").await;
    b.screenshot("rankings-zh").await;
    // The sortable table re-sorts on a header click.
    b.click("#rank-table th[data-col=reqs]").await;
    assert_eq!(
        b.text("#rank-table tr[data-row='0'] td[data-col=reqs]")
            .await,
        top["data"][0]["reqs"].to_string()
    );
    b.click("#rank-table th[data-col=reqs]").await;
    assert_eq!(
        b.text("#rank-table tr[data-row='0'] td[data-col=reqs]")
            .await,
        "5"
    );

    // Models: the hostile model name is text too.
    b.goto(&app.url(&format!("/#/rankings?by=model&metric=reqs&{range}")))
        .await;
    b.ready().await;
    assert_eq!(
        b.text("#rank-table tr[data-row='1'] td[data-col=model_name]")
            .await,
        HOSTILE
    );
    no_script_ran(&b).await;

    // A click on a key opens its detail: series and requests from the subject API.
    b.goto(&app.url(&format!("/#/rankings?by=token&metric=reqs&{range}")))
        .await;
    b.ready().await;
    b.click("#rank-table tr[data-row='1'] td[data-col=token_name] a")
        .await;
    b.ready().await;
    let subj = api(
        &app,
        &format!("/api/stats/subject?token_id={idb}&{api_range}"),
    )
    .await;
    assert_eq!(subj["total_count"], 5);
    assert!(b.text("#subject-requests").await.contains(HOSTILE));
    assert_eq!(
        b.js("return document.querySelectorAll('#subject-requests tbody tr').length")
            .await,
        json!(5)
    );
    no_script_ran(&b).await;
    no_console_errors(&b, "subject").await;
    b.screenshot("detail-zh").await;

    // Heatmap: a cell equals the API's.
    b.goto(&app.url(&format!("/#/heatmap?metric=reqs&{range}")))
        .await;
    b.ready().await;
    let heat = api(
        &app,
        &format!("/api/stats/heatmap?metric=reqs&tz=UTC&{api_range}"),
    )
    .await;
    let cell = heat["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c[2].as_i64().unwrap() > 0)
        .cloned()
        .unwrap();
    let css = format!("td[data-weekday='{}'][data-hour='{}']", cell[1], cell[0]);
    assert_eq!(b.attr(&css, "data-value").await, cell[2].to_string());
    no_console_errors(&b, "heatmap").await;
    b.screenshot("heatmap-zh").await;

    // Anomalies: each tab's count is the API's, with the parameters in the address.
    b.goto(&app.url(&format!(
        "/#/anomalies?rule=burst&window_sec=3600&limit_per_token=5&{range}"
    )))
    .await;
    b.ready().await;
    let burst = api(
        &app,
        &format!("/api/stats/anomalies?rule=burst&window_sec=3600&limit_per_token=5&{api_range}"),
    )
    .await;
    assert_eq!(burst["total_count"], 2, "{burst}");
    assert_eq!(b.attr("[data-rule=burst]", "data-count").await, "2");
    let multi = api(
        &app,
        &format!("/api/stats/anomalies?rule=multi_user_token&{api_range}"),
    )
    .await;
    assert_eq!(
        b.attr("[data-rule=multi_user_token]", "data-count").await,
        multi["total_count"].to_string()
    );
    assert!(b.text("#anomaly-table").await.contains(HOSTILE));
    no_script_ran(&b).await;
    no_console_errors(&b, "anomalies").await;
    b.screenshot("anomalies-zh").await;

    // Keys and requests pages render (their behaviour is tested below).
    b.goto(&app.url("/#/keys")).await;
    b.ready().await;
    assert!(b.text("#keys-table").await.contains(HOSTILE));
    no_script_ran(&b).await;
    no_console_errors(&b, "keys").await;
    b.screenshot("keys-zh").await;
    b.goto(&app.url("/#/requests?status=ok")).await;
    b.ready().await;
    assert_eq!(
        b.js("return document.querySelectorAll('#requests-table tbody tr').length")
            .await,
        json!(12)
    );
    no_console_errors(&b, "requests").await;
    b.screenshot("requests-zh").await;

    // The language switch changes the labels; a reload keeps page, range and language.
    b.goto(&app.url(&format!("/#/overview?{range}"))).await;
    b.ready().await;
    assert_eq!(b.text("[data-nav=overview]").await, "概览");
    b.click("#lang").await;
    b.ready().await;
    assert_eq!(b.text("[data-nav=overview]").await, "Overview");
    b.c.refresh().await.unwrap();
    b.ready().await;
    assert_eq!(b.text("[data-nav=overview]").await, "Overview");
    let url = b.c.current_url().await.unwrap();
    assert!(url.as_str().contains(&format!("from={from}")), "{url}");
    assert_eq!(
        b.attr("[data-kpi=reqs]", "data-value").await,
        sum["reqs"].to_string()
    );
    no_console_errors(&b, "overview (en)").await;
    b.screenshot("overview-en").await;
    for (page, name) in [
        (
            format!("rankings?by=user&metric=tokens&{range}"),
            "rankings-en",
        ),
        (format!("heatmap?{range}"), "heatmap-en"),
        (
            format!("anomalies?rule=burst&window_sec=3600&limit_per_token=5&{range}"),
            "anomalies-en",
        ),
        ("keys".to_owned(), "keys-en"),
        ("requests".to_owned(), "requests-en"),
        (format!("key?id={idb}"), "key-en"),
    ] {
        b.goto(&app.url(&format!("/#/{page}"))).await;
        b.ready().await;
        no_script_ran(&b).await;
        no_console_errors(&b, name).await;
        b.screenshot(name).await;
    }

    // Logout: back to the login form, and the session no longer opens the API.
    b.click("#logout").await;
    b.find("#login-form").await;
    let status = b
        .js_async("const r = await fetch('/api/stats/summary'); return r.status;")
        .await;
    assert_eq!(status, json!(401));
    b.console_errors().await;
    b.close().await;
    app.stop().await;
}

/// The key id shown in a row of the keys table, by the key's name.
async fn row_of(b: &Browser, name: &str) -> String {
    let v = b
        .js(&format!(
            "const rows = [...document.querySelectorAll('#keys-table tbody tr')]; \
             const r = rows.find(r => r.querySelector('td[data-col=name]').textContent === {name:?}); \
             return r ? r.getAttribute('data-row') : null;"
        ))
        .await;
    v.as_str()
        .unwrap_or_else(|| panic!("no row named {name}"))
        .to_owned()
}

async fn act(b: &Browser, name: &str, action: &str) {
    let row = row_of(b, name).await;
    b.click(&format!(
        "#keys-table tr[data-row='{row}'] button[data-act={action}]"
    ))
    .await;
}

async fn key_state(app: &TestApp, id: i64) -> (u16, Value) {
    app.admin_get(&format!("/admin/keys/{id}")).await
}

/// Polls the API until `check` holds (the page acts asynchronously).
async fn until(app: &TestApp, id: i64, what: &str, check: impl Fn(u16, &Value) -> bool) -> Value {
    for _ in 0..100 {
        let (s, v) = key_state(app, id).await;
        if check(s, &v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: {:?}", key_state(app, id).await);
}

#[tokio::test]
async fn keys_are_created_and_managed_in_the_browser() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    b.goto(&app.url("/#/keys")).await;
    b.login(ADMIN).await;
    b.find("#create-key").await;
    b.ready().await;

    // Create with every field the form has.
    b.click("#create-key").await;
    b.type_into("#new-name", "browser key").await;
    b.type_into("#new-prefix", "web").await;
    b.type_into("#new-quota", "500").await;
    b.js("document.getElementById('new-expiresAt').value = '2031-05-06'")
        .await;
    b.type_into("#new-ownerId", "42").await;
    b.type_into("#new-ownerName", "carol").await;
    b.type_into("#new-rpm", "60").await;
    b.type_into("#new-models", "mock-*, gpt-4o").await;
    b.js("document.getElementById('new-refill_interval').value = 'monthly'")
        .await;
    b.type_into("#new-refillAmount", "500").await;
    b.click("button[data-action=create]").await;
    let full = b.text(".fullkey").await;
    assert!(full.starts_with("web_") && full.len() == 36, "{full}");
    b.screenshot("key-created-en").await;
    b.click("button[data-action=close]").await;
    b.ready().await;

    // It exists in the API with the fields entered.
    let (s, v) = app.admin_get(&format!("/admin/keys/{full}")).await;
    assert_eq!(s, 200, "{v}");
    let id = v["id"].as_i64().unwrap();
    assert_eq!(v["name"], "browser key");
    assert_eq!(v["prefix"], "web");
    assert_eq!(v["quota"], 500);
    assert_eq!(v["expiresAt"], "2031-05-06T23:59:59Z");
    assert_eq!(v["owner"], json!({"userId": 42, "username": "carol"}));
    assert_eq!(
        v["limits"],
        json!({"rpm": 60, "models": ["mock-*", "gpt-4o"]})
    );
    assert_eq!(v["refill"], json!({"interval": "monthly", "amount": 500}));
    // The full key was shown exactly once: it is nowhere on the page now, nor after a reload.
    let html = b.c.source().await.unwrap();
    assert!(!html.contains(&full), "full key still on the page");
    b.c.refresh().await.unwrap();
    b.ready().await;
    assert!(!b.c.source().await.unwrap().contains(&full));
    assert_eq!(
        app.key_get(&full, "/api/v1/validate").await.1["valid"],
        true
    );

    // Disable, enable.
    act(&b, "browser key", "disable").await;
    until(&app, id, "disabled", |_, v| v["enabled"] == false).await;
    b.ready().await;
    act(&b, "browser key", "enable").await;
    until(&app, id, "enabled", |_, v| v["enabled"] == true).await;
    b.ready().await;

    // Reset to a new quota.
    app.use_amount(&full, 7).await;
    b.c.refresh().await.unwrap();
    b.ready().await;
    act(&b, "browser key", "reset").await;
    b.type_into("#new-quota", "50").await;
    b.click("button[data-action=confirm]").await;
    until(&app, id, "reset", |_, v| v["quota"] == 50 && v["used"] == 0).await;
    b.ready().await;

    // Rotate: the new key is shown once and works; the old one does not.
    act(&b, "browser key", "rotate").await;
    b.click("button[data-action=confirm]").await;
    let rotated = b.text(".fullkey").await;
    assert_ne!(rotated, full);
    b.click("button[data-action=close]").await;
    assert_eq!(
        app.key_get(&rotated, "/api/v1/validate").await.1["valid"],
        true
    );
    assert_eq!(app.key_get(&full, "/api/v1/validate").await.0, 401);
    b.ready().await;

    // Delete asks first; cancel keeps the key, confirm deletes it.
    act(&b, "browser key", "delete").await;
    b.click("button[data-action=cancel]").await;
    assert_eq!(key_state(&app, id).await.0, 200);
    act(&b, "browser key", "delete").await;
    b.click("button[data-action=confirm]").await;
    until(&app, id, "deleted", |s, _| s == 404).await;
    b.ready().await;
    assert!(!b.text("#keys-table").await.contains("browser key"));

    // A refused create shows the API's message and keeps the form open.
    b.click("#create-key").await;
    b.type_into("#new-prefix", "bad prefix!").await;
    b.click("button[data-action=create]").await;
    let msg = b.find("#create-msg").await;
    for _ in 0..50 {
        if !msg.text().await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(msg.text().await.unwrap().contains("prefix"));
    b.click("button[data-action=cancel]").await;
    b.console_errors().await;
    b.close().await;
    app.stop().await;
}

#[tokio::test]
async fn the_viewer_sees_no_write_controls_and_cannot_write() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let (_, id) = app.create_key(json!({"name": "kept", "quota": 10})).await;
    b.goto(&app.url("/#/keys")).await;
    b.login(VIEWER).await;
    b.find("#keys-table tbody tr").await;
    b.ready().await;
    assert_eq!(b.text("#role").await, "只读");
    assert!(b.text("#keys-table").await.contains("kept"));
    assert!(!b.exists("#create-key").await, "no create button");
    assert!(!b.exists("button[data-act]").await, "no row actions");
    b.goto(&app.url(&format!("/#/key?id={id}"))).await;
    b.ready().await;
    assert!(
        !b.exists("button[data-act]").await,
        "no actions on the detail"
    );
    no_console_errors(&b, "viewer keys").await;

    // A forged write with the viewer's session is refused by the server.
    let forged = b
        .js_async(
            "const r = await fetch('/admin/keys', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-QP-CSRF': '1'}, body: JSON.stringify({quota: 5})}); \
             return [r.status, await r.json()];",
        )
        .await;
    assert_eq!(forged[0], 403, "{forged}");
    assert_eq!(forged[1]["error"]["code"], "FORBIDDEN");
    let forged = b
        .js_async(
            &format!("const r = await fetch('/admin/keys/{id}', {{method: 'DELETE', headers: {{'X-QP-CSRF': '1'}}}}); return r.status;"),
        )
        .await;
    assert_eq!(forged, 403);
    assert_eq!(key_state(&app, id).await.0, 200, "the key is still there");
    b.console_errors().await;
    b.close().await;
    app.stop().await;
}
