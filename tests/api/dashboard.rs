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
    b.screenshot("key-created-zh").await;
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

    // A session that ends (here: revoked elsewhere) sends the page back to the login form
    // with a message, at the next thing it loads.
    b.js_async("await fetch('/auth/logout', {method: 'POST'}); return 1;")
        .await;
    b.click("[data-nav=rankings]").await;
    b.find("#login-form").await;
    assert_eq!(b.text("#login-msg").await, "会话已过期，请重新登录");
    b.console_errors().await;
    b.close().await;
    app.stop().await;
}

#[tokio::test]
async fn sign_in_assets_and_security_headers() {
    let app = spawn_app().await;
    let c = &app.client;

    // The page: security headers, revalidated every time.
    let r = c.get(app.url("/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let h = r.headers().clone();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(h["cache-control"], "no-cache");
    let csp = h["content-security-policy"].to_str().unwrap().to_owned();
    let script_src = csp
        .split(';')
        .find(|d| d.trim().starts_with("script-src"))
        .unwrap();
    assert!(!script_src.contains("unsafe"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let html = r.text().await.unwrap();
    // API answers carry them too.
    let r = c.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    // And answers no route matched (the headers wrap the router, not each route).
    let r = c.get(app.url("/no/such/path")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");

    // Every file the page loads: gzip, cached for a year, and small in total.
    let mut total = html.len();
    // The modules are named in an inline import map, which the CSP allows by its hash only.
    let map = html
        .split("<script type=\"importmap\">")
        .nth(1)
        .and_then(|rest| rest.split("</script>").next())
        .unwrap();
    let digest = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        <sha2::Sha256 as sha2::Digest>::digest(map.as_bytes()),
    );
    assert!(script_src.contains(&format!("'sha256-{digest}'")), "{csp}");
    let mut urls: Vec<&str> = html
        .split('"')
        .filter(|s| s.starts_with("/assets/") && s.contains("?v="))
        .collect();
    urls.sort();
    urls.dedup();
    // The stylesheet, ECharts, and every module of the page (main.js and one per page…).
    assert!(urls.len() >= 12, "{html}");
    assert!(
        urls.iter().any(|u| u.starts_with("/assets/main.js?v=")),
        "{html}"
    );
    for u in &urls {
        let r = c
            .get(app.url(u))
            .header("accept-encoding", "gzip, br")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{u}");
        assert_eq!(r.headers()["content-encoding"], "gzip", "{u}");
        assert_eq!(
            r.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        let etag = r.headers()["etag"].clone();
        let gz = r.bytes().await.unwrap();
        total += gz.len();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
        // Without gzip: the same bytes, uncompressed.
        let plain = c.get(app.url(u)).send().await.unwrap();
        assert!(plain.headers().get("content-encoding").is_none());
        assert_eq!(plain.bytes().await.unwrap().to_vec(), raw);
        // Revalidation.
        let r = c
            .get(app.url(u))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 304);
    }
    assert!(total < 600 * 1024, "first load {total} bytes");
    eprintln!("dashboard first load: {total} bytes compressed");
    // An old or missing version is not cached for long; an unknown file is a 404.
    let stale = urls[0].split('?').next().unwrap().to_owned() + "?v=old";
    let r = c.get(app.url(&stale)).send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "no-cache");
    let r = c.get(app.url("/assets/nope.js")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // Sign-in.
    let login = |token: &str, proto: Option<&str>| {
        let mut rq = c
            .post(app.url("/auth/login"))
            .json(&json!({ "token": token }));
        if let Some(p) = proto {
            rq = rq.header("x-forwarded-proto", p);
        }
        rq.send()
    };
    let r = login("wrong", None).await.unwrap();
    let (s, v) = status_json(r).await;
    assert_eq!((s, error_code(&v)), (401, "UNAUTHORIZED"), "{v}");
    let r = c
        .post(app.url("/auth/login"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = login(ADMIN, None).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"));
    assert!(!set.contains(ADMIN), "the token is not the cookie");
    let cookie = set.split(';').next().unwrap().to_owned();
    let r = login(ADMIN, Some("https")).await.unwrap();
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Secure")
    );

    let with = |m: reqwest::Method, path: &str, cookie: &str| {
        c.request(m, app.url(path))
            .header("cookie", cookie.to_owned())
    };
    let (s, v) = status_json(
        with(reqwest::Method::GET, "/auth/session", &cookie)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["authenticated"], true);
    assert_eq!(v["role"], "admin");
    assert_eq!(v["mode"], "serve");
    assert_eq!(v["source"], "native");
    let (_, v) = status_json(c.get(app.url("/auth/session")).send().await.unwrap()).await;
    assert_eq!(v["authenticated"], false);
    for path in ["/admin/keys", "/api/stats/summary", "/admin/upstreams"] {
        let r = with(reqwest::Method::GET, path, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    // A write with the cookie needs the anti-forgery header.
    let r = with(reqwest::Method::POST, "/admin/keys", &cookie)
        .json(&json!({"quota": 3}))
        .send()
        .await
        .unwrap();
    let (s, v) = status_json(r).await;
    assert_eq!((s, error_code(&v)), (403, "FORBIDDEN"), "{v}");
    let r = with(reqwest::Method::POST, "/admin/keys", &cookie)
        .header("x-qp-csrf", "1")
        .json(&json!({"quota": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The audit log names the token the session was opened with, never the cookie.
    let (_, audit) = app.admin_get("/admin/audit").await;
    let hint = audit["entries"][0]["tokenHint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(hint.starts_with("admin#"), "{hint}");
    assert!(
        !audit
            .to_string()
            .contains(cookie.split('=').nth(1).unwrap())
    );

    // The viewer's session reads but never writes.
    let r = login(VIEWER, None).await.unwrap();
    let vcookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let r = with(reqwest::Method::GET, "/admin/keys", &vcookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = with(reqwest::Method::POST, "/admin/keys", &vcookie)
        .header("x-qp-csrf", "1")
        .json(&json!({"quota": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // Logout revokes the session and clears the cookie.
    let r = with(reqwest::Method::POST, "/auth/logout", &cookie)
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let r = with(reqwest::Method::GET, "/admin/keys", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = with(reqwest::Method::GET, "/api/stats/summary", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    app.stop().await;
}

#[tokio::test]
async fn upstreams_request_filters_and_subject_detail() {
    let (app, ida, idb) = seeded().await;
    let (from, to) = window();
    let rg = format!("start_ms={from}&end_ms={to}");

    let v = api(&app, &format!("/admin/upstreams?{rg}")).await;
    let up = &v["upstreams"][0];
    assert_eq!(up["name"], "mock");
    assert_eq!(up["kind"], "mock");
    assert_eq!(up["state"], "healthy");
    assert_eq!(up["requests"], 12);
    assert_eq!(up["errors"], 0);
    assert_eq!(up["errorRate"], 0.0);
    let (s, _) = app.admin_get("/admin/upstreams?start_ms=10&end_ms=5").await;
    assert_eq!(s, 400);

    let model = url_escape(HOSTILE);
    let v = api(&app, &format!("/admin/requests?model={model}")).await;
    assert_eq!(v["total"], 2);
    assert!(
        v["requests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["model"] == HOSTILE)
    );
    let v = api(&app, &format!("/admin/requests?key={ida}&status=ok")).await;
    assert_eq!(v["total"], 7);
    assert_eq!(api(&app, "/admin/requests?status=error").await["total"], 0);
    assert_eq!(api(&app, "/admin/requests?status=200").await["total"], 12);
    let (s, v) = app.admin_get("/admin/requests?status=abc").await;
    assert_eq!((s, error_code(&v)), (400, "INVALID_REQUEST"));

    // One key, one user, one IP up close.
    let v = api(&app, &format!("/api/stats/subject?token_id={idb}&{rg}")).await;
    assert_eq!(v["subject"], json!({"token_id": idb}));
    assert_eq!(v["total_count"], 5);
    let reqs: i64 = v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["reqs"].as_i64().unwrap())
        .sum();
    assert_eq!(reqs, 5);
    let rows = v["requests"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    assert!(
        rows.iter()
            .all(|r| r["token_id"] == idb && r["username"] == HOSTILE && r["ip"] == "127.0.0.1")
    );
    let times: Vec<&str> = rows
        .iter()
        .map(|r| r["created_at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    assert_eq!(
        api(&app, &format!("/api/stats/subject?user_id=1&{rg}")).await["total_count"],
        7
    );
    assert_eq!(
        api(
            &app,
            &format!("/api/stats/subject?ip=127.0.0.1&limit=3&{rg}")
        )
        .await["total_count"],
        12
    );
    assert_eq!(
        api(
            &app,
            &format!("/api/stats/subject?ip=127.0.0.1&limit=3&{rg}")
        )
        .await["requests"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    for bad in [
        "ip=not-an-ip",
        "token_id=1&ip=127.0.0.1",
        "",
        "token_id=x",
        "limit=0&token_id=1",
    ] {
        let (s, v) = app.admin_get(&format!("/api/stats/subject?{bad}")).await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(v["error"].as_str().unwrap().starts_with("参数无效"), "{v}");
    }
    app.stop().await;
}

fn url_escape(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `quota-proxy monitor` over a New API database whose users, keys and models carry
/// hostile names: every page shows them as text, and only the monitor's pages exist.
#[tokio::test]
async fn monitor_mode_over_a_new_api_database_with_hostile_names() {
    use crate::monitor::{Db, load};
    use crate::monitor_data::{HOURS, SHARED_KEY, T0, generate};
    let Some(b) = Browser::start().await else {
        return;
    };
    let mut d = generate();
    let model = "claude-3<script>window.__xss=2</script>";
    let user = 1;
    d.users.insert(user, HOSTILE.to_owned());
    d.tokens.get_mut(&SHARED_KEY).unwrap().0 = HOSTILE.to_owned();
    for l in &mut d.logs {
        if l.user_id == user {
            l.username = HOSTILE.to_owned();
        }
        if l.token == SHARED_KEY {
            l.token_name = HOSTILE.to_owned();
        }
        if l.model == "claude-3" {
            l.model = model.to_owned();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let dsn = load(Db::Sqlite, &d, dir.path()).await.unwrap();
    let (_child, base) = spawn_monitor(&dsn, dir.path(), &[("VIEWER_TOKEN", VIEWER)]).await;
    let http = http_client();
    let range = format!("from={}&to={}", T0 * 1000, (T0 + HOURS * 3600) * 1000);
    let api_range = format!(
        "start_ms={}&end_ms={}",
        T0 * 1000,
        (T0 + HOURS * 3600) * 1000
    );
    let get = |path: String| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let r = http
                .get(format!("{base}{path}"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap();
            status_json(r).await.1
        }
    };

    b.goto(&format!("{base}/#/overview?{range}")).await;
    b.login(VIEWER).await;
    b.find("main").await;
    b.ready().await;
    // Monitor only: no keys or requests pages, no upstream table.
    assert!(!b.exists("[data-nav=keys]").await);
    assert!(!b.exists("[data-nav=requests]").await);
    assert!(!b.exists("#upstreams").await);
    let sum = get(format!("/api/stats/summary?{api_range}")).await;
    assert_eq!(
        b.attr("[data-kpi=reqs]", "data-value").await,
        sum["reqs"].to_string()
    );
    assert_eq!(
        b.attr("[data-kpi=quota_sum]", "data-value").await,
        sum["quota_sum"].to_string()
    );
    assert!(
        !b.exists("[data-kpi=error_rate]").await,
        "no error rate for New API"
    );
    no_console_errors(&b, "monitor overview").await;
    b.screenshot("monitor-overview-zh").await;

    for (page, needle) in [
        (
            format!("rankings?by=user&metric=reqs&limit=500&{range}"),
            HOSTILE,
        ),
        (format!("rankings?by=model&metric=reqs&{range}"), model),
        (
            format!("rankings?by=token&metric=reqs&limit=500&{range}"),
            HOSTILE,
        ),
        (format!("anomalies?rule=multi_user_token&{range}"), HOSTILE),
        (format!("subject?user_id={user}&{range}"), HOSTILE),
    ] {
        b.goto(&format!("{base}/#/{page}")).await;
        b.ready().await;
        let text = b.text("main").await;
        assert!(text.contains(needle), "{page}: {needle} not shown as text");
        no_script_ran(&b).await;
        assert_eq!(
            b.js("return document.querySelectorAll('main img, main script').length")
                .await,
            json!(0)
        );
        no_console_errors(&b, &page).await;
    }
    // The first rows of a ranking are the API's.
    b.goto(&format!(
        "{base}/#/rankings?by=channel&metric=quota_sum&{range}"
    ))
    .await;
    b.ready().await;
    let top = get(format!(
        "/api/stats/top?by=channel&metric=quota_sum&limit=50&{api_range}"
    ))
    .await;
    for i in 0..3 {
        assert_eq!(
            b.text(&format!(
                "#rank-table tr[data-row='{i}'] td[data-col=channel_name]"
            ))
            .await,
            top["data"][i]["channel_name"].as_str().unwrap()
        );
        assert_eq!(
            b.text(&format!(
                "#rank-table tr[data-row='{i}'] td[data-col=quota_sum]"
            ))
            .await,
            fmt_thousands(top["data"][i]["quota_sum"].as_i64().unwrap())
        );
    }
    b.screenshot("monitor-rankings-zh").await;
    // The anomaly tab counts are the API's.
    b.goto(&format!("{base}/#/anomalies?rule=ip_many_users&{range}"))
        .await;
    b.ready().await;
    for rule in ["burst", "multi_user_token", "ip_many_users", "big_request"] {
        let v = get(format!("/api/stats/anomalies?rule={rule}&{api_range}")).await;
        assert_eq!(
            b.attr(&format!("[data-rule={rule}]"), "data-count").await,
            v["total_count"].to_string(),
            "{rule}"
        );
    }
    b.screenshot("monitor-anomalies-zh").await;
    b.close().await;
}

/// 1234567 → "1,234,567" (the page's numbers in both languages).
fn fmt_thousands(n: i64) -> String {
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// The source failing shows a banner a person understands, not a blank page.
#[tokio::test]
async fn a_failing_source_shows_a_banner() {
    use crate::monitor::{Db, load};
    use crate::monitor_data::{HOURS, T0, generate};
    let Some(b) = Browser::start().await else {
        return;
    };
    let d = generate();
    let dir = tempfile::tempdir().unwrap();
    let dsn = load(Db::Sqlite, &d, dir.path()).await.unwrap();
    // Direct SQL only: the rollup would go on answering from memory.
    let (_child, base) = spawn_monitor(&dsn, dir.path(), &[("MONITOR_ROLLUP_DAYS", "0")]).await;
    let range = format!("from={}&to={}", T0 * 1000, (T0 + HOURS * 3600) * 1000);
    b.goto(&format!("{base}/#/overview?{range}")).await;
    b.login(ADMIN).await;
    b.find("main").await;
    b.ready().await;
    assert!(!b.exists(".banner").await);
    // The database file turns to garbage under the running monitor.
    let original = std::fs::read(&dsn).unwrap();
    std::fs::write(&dsn, vec![0x5au8; 64 * 1024]).unwrap();
    b.goto(&format!("{base}/#/rankings?{range}")).await;
    b.ready().await;
    let banner = b.text(".banner").await;
    assert_eq!(banner, "数据源不可用（503），正在重试…");
    assert!(b.exists("header nav").await, "the page is still there");
    b.screenshot("source-down-zh").await;
    // The page tries again by itself and recovers when the source does.
    std::fs::write(&dsn, original).unwrap();
    let mut recovered = false;
    for _ in 0..150 {
        if !b.exists(".banner").await && b.exists("#rank-table tbody tr[data-row='0']").await {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the view came back after the source did");
    b.console_errors().await;
    b.close().await;
}

/// The Alerts page shows the history the API holds and sends test messages (admin only).
#[tokio::test]
async fn the_alerts_page_shows_the_history_and_sends_a_test() {
    use crate::alert_receiver::{HOOK_SECRET, Receiver};
    use quota_proxy::alerts::settings::{ChannelKind, ChannelSettings, RuleKind};
    let Some(b) = Browser::start().await else {
        return;
    };
    let rx = Receiver::start().await;
    let hook = ChannelSettings {
        name: "ops-hook".into(),
        kind: ChannelKind::Webhook,
        url: rx.webhook_url(),
        secret: Some(HOOK_SECRET.into()),
        rules: vec![RuleKind::Burst],
    };
    let app = spawn_app_with(|c| {
        c.alerts.channels = vec![hook];
        for (k, rs) in c.alerts.rules.iter_mut() {
            rs.enabled = *k == RuleKind::Burst;
            rs.every_ms = 200;
            rs.params.insert("limit_per_token".into(), "3".into());
        }
    })
    .await;
    let (k, _) = app.create_key(json!({"name": HOSTILE, "quota": 100})).await;
    for _ in 0..4 {
        app.mock_chat(&k).await;
    }
    rx.wait_for(1, 20).await;
    let api_alerts = loop {
        let v = api(&app, "/admin/alerts").await;
        if v["alerts"][0]["status"] == "sent" {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    b.goto(&app.url("/#/alerts")).await;
    b.login(ADMIN).await;
    b.find("#alerts-table").await;
    b.ready().await;
    assert_eq!(
        b.js("return document.querySelectorAll('#alerts-table tbody tr').length")
            .await,
        json!(1)
    );
    let title = b
        .text("#alerts-table tr[data-row='0'] td[data-col=title]")
        .await;
    assert_eq!(title, api_alerts["alerts"][0]["title"].as_str().unwrap());
    assert!(title.contains(HOSTILE), "the hostile key name is text");
    no_script_ran(&b).await;
    assert_eq!(
        b.text("#alerts-table tr[data-row='0'] td[data-col=deliveries]")
            .await,
        "ops-hook"
    );
    assert!(
        !b.text("#alert-channels")
            .await
            .contains(crate::alert_receiver::HOOK_SECRET)
    );
    no_console_errors(&b, "alerts").await;
    b.screenshot("alerts-zh").await;
    // A test message from the page reaches the receiver.
    b.click("button[data-test-channel=ops-hook]").await;
    rx.wait_for(2, 10).await;
    let out = b.find("#alert-channels .test-result").await;
    for _ in 0..50 {
        if out.text().await.unwrap() == "已送达" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(out.text().await.unwrap(), "已送达");
    assert!(rx.got()[1].signature_ok);
    b.click("#lang").await;
    b.ready().await;
    b.screenshot("alerts-en").await;
    b.click("#lang").await;
    b.ready().await;

    // The viewer reads the history but has no test button.
    b.click("#logout").await;
    b.login(VIEWER).await;
    b.find("#alerts-table").await;
    b.ready().await;
    assert!(b.text("#alerts-table").await.contains(HOSTILE));
    assert!(!b.exists("button[data-test-channel]").await);
    no_console_errors(&b, "alerts (viewer)").await;
    b.close().await;
    app.stop().await;
}

#[tokio::test]
async fn the_api_docs_page_renders_every_operation_offline() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let doc = api(&app, "/api/openapi.json").await;
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    b.goto(&app.url("/docs")).await;
    // Swagger UI renders one block per operation once it has read the document.
    let mut shown = 0;
    for _ in 0..200 {
        shown = b
            .js("return document.querySelectorAll('.opblock').length")
            .await
            .as_u64()
            .unwrap_or(0) as usize;
        if shown == operations {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shown, operations, "{}", b.text("body").await);
    assert!(b.text(".info .title").await.contains("quota-proxy"));
    b.screenshot("api-docs").await;
    no_console_errors(&b, "docs").await;
    b.close().await;
    app.stop().await;
}
