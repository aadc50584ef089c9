//! The request log searched and exported (issue #24): every filter of `GET /admin/requests`,
//! and `GET /admin/requests/export.csv` giving the whole filtered set, across pages.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

async fn call(app: &TestApp, key: &str, path: &str, body: Value) -> String {
    let r = app
        .client
        .post(app.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let _ = r.bytes().await;
    id
}

/// Waits until the log holds `n` rows (the logger writes in the background).
async fn logged(app: &TestApp, n: i64) {
    for _ in 0..200 {
        if app.admin_get("/admin/requests?limit=1").await.1["total"] == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the log never reached {n} rows");
}

/// A numeric query parameter of a console URL (its hash part).
fn url_param(url: &str, name: &str) -> i64 {
    url.split(['?', '&'])
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in {url}"))
}

fn url_escape(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn total(v: &Value) -> i64 {
    v["total"].as_i64().unwrap()
}

async fn csv(app: &TestApp, query: &str) -> (u16, String) {
    let r = app
        .client
        .get(app.url(&format!("/admin/requests/export.csv?{query}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_narrows_the_log_and_the_csv_is_the_whole_set() {
    let app = spawn_app().await;
    let (alpha, alpha_id) = app
        .create_key(json!({"name": "alpha", "owner": {"userId": 7, "username": "ann"}}))
        .await;
    let (plain, plain_id) = app.create_key(json!({})).await;
    let chat = json!({"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]});
    let started = chrono::Utc::now().timestamp_millis();
    let mut alpha_ids = Vec::new();
    for _ in 0..3 {
        alpha_ids.push(call(&app, &alpha, "/v1/chat/completions", chat.clone()).await);
    }
    let msg = json!({"model": "mock-chat", "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}]});
    alpha_ids.push(call(&app, &alpha, "/v1/messages", msg).await);
    call(&app, &plain, "/v1/chat/completions", chat.clone()).await;
    let missing = json!({"model": "mock-chat", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]});
    let failed = call(&app, &plain, "/v1/chat/completions", missing).await;
    logged(&app, 6).await;

    let hint = app.admin_get(&format!("/admin/keys/{plain_id}")).await.1["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let q = |s: String| {
        let app = &app;
        async move {
            let (status, v) = app.admin_get(&format!("/admin/requests?{s}")).await;
            assert_eq!(status, 200, "{s}: {v}");
            v
        }
    };
    assert_eq!(total(&q("key=alpha".into()).await), 4, "by name");
    assert_eq!(total(&q(format!("key={alpha_id}")).await), 4, "by id");
    assert_eq!(
        total(&q(format!("key={alpha}")).await),
        4,
        "by the full key"
    );
    assert_eq!(
        total(&q(format!("key={}", url_escape(&hint))).await),
        2,
        "by hint"
    );
    assert_eq!(
        total(&q("key=nobody".into()).await),
        0,
        "no such key: no rows"
    );
    assert_eq!(total(&q("user=7".into()).await), 4);
    assert_eq!(total(&q("user=ann".into()).await), 4);
    assert_eq!(total(&q("endpoint=messages".into()).await), 1);
    assert_eq!(total(&q("upstream=mock".into()).await), 5);
    assert_eq!(total(&q("status=2xx".into()).await), 5);
    assert_eq!(total(&q("status=4xx".into()).await), 1);
    assert_eq!(total(&q("status=5xx".into()).await), 0);
    let one = q(format!("requestId={failed}")).await;
    assert_eq!(total(&one), 1);
    assert_eq!(one["requests"][0]["keyId"], plain_id);
    assert!(one["requests"][0]["error"].is_string(), "{one}");
    let now = chrono::Utc::now().timestamp_millis();
    assert_eq!(
        total(&q(format!("start_ms={started}&end_ms={}", now + 1)).await),
        6
    );
    assert_eq!(total(&q(format!("end_ms={started}")).await), 0);
    assert_eq!(
        total(&q("key=alpha&endpoint=chat.completions&status=200".into()).await),
        3
    );
    for bad in ["status=2x", "status=600", "endpoint=chat", "start_ms=-1"] {
        let (s, v) = app.admin_get(&format!("/admin/requests?{bad}")).await;
        assert_eq!((s, error_code(&v)), (400, "INVALID_REQUEST"), "{bad}: {v}");
    }

    // The CSV of a filter: its header and exactly the rows the API counts.
    let (s, text) = csv(&app, "key=alpha").await;
    assert_eq!(s, 200);
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("timestamp,requestId,keyId,keyName"),
        "{header}"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 4, "{text}");
    for id in &alpha_ids {
        assert!(text.contains(id.as_str()), "{id} missing from {text}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_csv_export_streams_past_one_page() {
    let app = spawn_app().await;
    let (key, _) = app.create_key(json!({})).await;
    let chat = json!({"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]});
    // More than one export page (2 000 rows).
    let n = 2_150;
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (url, key, chat) = (app.url("/v1/chat/completions"), key.clone(), chat.clone());
        tasks.push(tokio::spawn(async move {
            let client = http_client();
            for _ in (w..n).step_by(16) {
                let r = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&chat)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    logged(&app, n as i64).await;
    let (s, text) = csv(&app, "").await;
    assert_eq!(s, 200);
    let ids: std::collections::HashSet<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(ids.len(), n, "every row once");
    assert_eq!(text.lines().count(), n + 1);
    app.stop().await;
}

/// The console's request log in Chromium: filtered by key name and time from the form, the
/// rows and the whole-set CSV agree with the API; usable at phone width.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_filters_the_log_and_exports_what_it_shows() {
    let Some(b) = crate::browser::Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let (alpha, _) = app.create_key(json!({"name": "alpha"})).await;
    let (beta, _) = app.create_key(json!({"name": "beta"})).await;
    let chat = json!({"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]});
    for k in [&alpha, &alpha, &alpha, &beta, &beta] {
        call(&app, k, "/v1/chat/completions", chat.clone()).await;
    }
    logged(&app, 5).await;
    b.goto(&app.url("/")).await;
    b.login(ADMIN).await;
    b.ready().await;
    b.goto(&app.url("/#/requests")).await;
    b.ready().await;
    b.type_into("#req-key", "alpha").await;
    // From an hour ago: the time filter is applied too.
    b.js("const d = new Date(Date.now() - 3600e3); const p = (n) => String(n).padStart(2, '0'); \
          document.getElementById('req-from').value = d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + 'T' + p(d.getHours()) + ':' + p(d.getMinutes());")
        .await;
    b.click("#req-filters button[type=submit]").await;
    b.ready().await;
    let rows = b
        .js("return document.querySelectorAll('#requests-table tbody tr').length")
        .await;
    assert_eq!(rows, json!(3));
    let url = b.c.current_url().await.unwrap();
    assert!(
        url.as_str().contains("key=alpha") && url.as_str().contains("start_ms="),
        "{url}"
    );
    let api_total = app.admin_get("/admin/requests?key=alpha").await.1["total"].clone();
    assert_eq!(api_total, json!(3));
    // The CSV link carries the same filters; with the session cookie it is the whole set.
    let lines = b
        .js_async("const r = await fetch(document.getElementById('req-csv').href); const t = await r.text(); return t.trim().split('\\n').length;")
        .await;
    assert_eq!(lines, json!(4), "header and three rows");
    assert!(b.console_errors().await.is_empty());
    // The API docs are one click away.
    assert!(b.attr("#docs-link", "href").await.ends_with("/docs"));
    // One time zone on the screen: an unknown one is refused with a message; a chosen one
    // moves the log's times and the pickers alike.
    let set_zone = |z: &'static str| {
        format!(
            "const i = document.getElementById('tz'); i.value = '{z}';              i.dispatchEvent(new Event('change', {{bubbles: true}}));"
        )
    };
    b.js(&set_zone("Mars/Olympus")).await;
    assert!(
        b.text("#banner").await.contains("Mars/Olympus"),
        "{}",
        b.text("#banner").await
    );
    assert_ne!(
        b.js("return document.getElementById('tz').value").await,
        json!("Mars/Olympus")
    );
    b.js(&set_zone("Asia/Shanghai")).await;
    b.ready().await;
    let first =
        app.admin_get("/admin/requests?key=alpha&limit=1").await.1["requests"][0]["timestamp"]
            .as_str()
            .unwrap()
            .to_owned();
    let utc_hour: u32 = first[11..13].parse().unwrap();
    let shown = b
        .js("return document.querySelector('#requests-table tbody tr td').textContent")
        .await;
    let want = format!(" {:02}:{}", (utc_hour + 8) % 24, &first[14..19]);
    assert!(
        shown.as_str().unwrap().contains(&want),
        "{shown} should show {want} (from {first})"
    );
    let from_value = b
        .js("return document.getElementById('req-from').value")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    let start_ms: i64 = url_param(b.c.current_url().await.unwrap().as_str(), "start_ms");
    let start_utc_hour = ((start_ms / 3_600_000) % 24) as u32;
    assert_eq!(
        from_value[11..13].parse::<u32>().unwrap(),
        (start_utc_hour + 8) % 24,
        "the picker shows the chosen zone's wall clock: {from_value}"
    );
    b.screenshot("requests-filtered-zh").await;
    // At phone width nothing spills sideways.
    b.resize(390, 844).await;
    b.ready().await;
    b.screenshot("requests-filtered-phone").await;
    assert_eq!(
        b.js("return document.body.scrollWidth <= window.innerWidth")
            .await,
        json!(true),
        "the request log overflows at 390 px"
    );
    b.close().await;
    app.stop().await;
}

/// Keys without an owner are "no user" in the monitor (issue #24): not counted among users,
/// not a ranking row, not one of the users behind an address — on the rollup and in SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_an_owner_is_no_user_anywhere() {
    let app = spawn_app().await;
    let (eve, _) = app
        .create_key(json!({"owner": {"userId": 5, "username": "eve"}}))
        .await;
    let (fay, _) = app
        .create_key(json!({"owner": {"userId": 6, "username": "fay"}}))
        .await;
    let (nobody, _) = app.create_key(json!({})).await;
    let chat = json!({"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]});
    for k in [&eve, &eve, &fay, &fay, &nobody, &nobody, &nobody] {
        call(&app, k, "/v1/chat/completions", chat.clone()).await;
    }
    logged(&app, 7).await;
    let now = chrono::Utc::now().timestamp_millis();
    let range = format!(
        "start_ms={}&end_ms={}&nocache=1",
        now - 3_600_000,
        now + 60_000
    );
    for engine in ["sql", "auto"] {
        let get = |path: String| {
            let app = &app;
            async move {
                let (s, v) = app.admin_get(&path).await;
                assert_eq!(s, 200, "{path}: {v}");
                v
            }
        };
        // The rollup reads the log on its next poll.
        let mut summary = Value::Null;
        for _ in 0..200 {
            summary = get(format!("/api/stats/summary?{range}&engine={engine}")).await;
            if summary["reqs"] == 7 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(summary["reqs"], 7, "{engine}: {summary}");
        assert_eq!(summary["users"], 2, "{engine}: {summary}");
        assert_eq!(summary["keys"], 3, "{engine}: {summary}");
        let top = get(format!(
            "/api/stats/top?{range}&engine={engine}&by=user&metric=reqs"
        ))
        .await;
        let ids: Vec<i64> = top["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["user_id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, vec![5, 6], "{engine}: {top}");
        let crowded = get(format!(
            "/api/stats/anomalies?{range}&engine={engine}&rule=ip_many_users&users_threshold=2"
        ))
        .await;
        let row = &crowded["data"][0];
        assert_eq!(row["user_count"], 2, "{engine}: {crowded}");
        assert!(!row.to_string().contains("\"0\""), "{engine}: {crowded}");
        let heat = get(format!(
            "/api/stats/heatmap?{range}&engine={engine}&metric=users"
        ))
        .await;
        let users: i64 = heat["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c[2].as_i64().unwrap())
            .max()
            .unwrap();
        assert_eq!(users, 2, "{engine}: {heat}");
    }
    app.stop().await;
}

/// The audit log, filtered in the API and on its console page (issue #24).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_is_filtered_and_shown() {
    let app = spawn_app().await;
    let (_, a) = app.create_key(json!({"name": "one"})).await;
    let (_, b) = app.create_key(json!({"name": "two"})).await;
    let (s, _) = app
        .admin_post("/admin/keys/disable", json!({"key": a.to_string()}))
        .await;
    assert_eq!(s, 200);
    let (s, _) = app
        .admin_post("/admin/keys/reset", json!({"key": b.to_string()}))
        .await;
    assert_eq!(s, 200);
    let get = |q: &str| {
        let app = &app;
        let q = q.to_owned();
        async move {
            let (s, v) = app.admin_get(&format!("/admin/audit?{q}")).await;
            assert_eq!(s, 200, "{q}: {v}");
            v
        }
    };
    assert_eq!(get("").await["total"], 4);
    assert_eq!(get("action=key.create").await["total"], 2);
    assert_eq!(
        get("action=key.").await["total"],
        4,
        "a family by its prefix"
    );
    assert_eq!(get("action=key.disable").await["entries"][0]["keyId"], a);
    assert_eq!(get(&format!("target={b}")).await["total"], 2);
    assert_eq!(
        get(&format!("keyId={a}&action=key.disable")).await["total"],
        1
    );
    let now = chrono::Utc::now().timestamp_millis();
    assert_eq!(
        get(&format!("end_ms={}", now - 3_600_000)).await["total"],
        0
    );
    assert_eq!(
        get(&format!("start_ms={}", now - 3_600_000)).await["total"],
        4
    );

    let Some(br) = crate::browser::Browser::start().await else {
        app.stop().await;
        return;
    };
    br.goto(&app.url("/")).await;
    br.login(ADMIN).await;
    br.ready().await;
    br.goto(&app.url("/#/audit?action=key.create")).await;
    br.ready().await;
    assert_eq!(
        br.js("return document.querySelectorAll('#audit-table tbody tr').length")
            .await,
        json!(2)
    );
    assert!(br.console_errors().await.is_empty());
    br.screenshot("audit-zh").await;
    // The English UI says the server's refusals in English, naming the field.
    br.click("#lang").await;
    br.ready().await;
    br.goto(&app.url("/#/audit?start_ms=-5")).await;
    br.ready().await;
    let banner = br.text("#banner").await;
    assert!(banner.contains("Invalid value: start_ms"), "{banner}");
    assert!(
        !banner
            .chars()
            .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
        "Chinese in the English UI: {banner}"
    );
    br.click("#lang").await;
    br.ready().await;
    br.goto(&app.url("/#/audit?action=key.create")).await;
    br.ready().await;
    br.resize(390, 844).await;
    br.ready().await;
    br.screenshot("audit-phone-zh").await;
    assert_eq!(
        br.js("return document.body.scrollWidth <= window.innerWidth")
            .await,
        json!(true),
        "the audit page overflows at 390 px"
    );
    br.close().await;
    app.stop().await;
}

/// Editing a key from the console (issue #24): the quota raised or set keeps `used`, each
/// change in the key's history and the audit; name and limits edited; a reset warns first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_edited_from_the_console_and_used_is_kept() {
    let Some(b) = crate::browser::Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let (key, id) = app.create_key(json!({"name": "trial", "quota": 20})).await;
    assert_eq!(app.use_amount(&key, 3).await.0, 200);
    b.goto(&app.url("/")).await;
    b.login(ADMIN).await;
    b.ready().await;
    b.goto(&app.url(&format!("/#/key?id={id}"))).await;
    b.ready().await;
    // Add 10: quota 30, used still 3.
    b.click("[data-act=quota]").await;
    b.js("document.getElementById('quota-mode').value = 'add'")
        .await;
    b.type_into("#quota-amount", "10").await;
    b.click("[data-action=confirm]").await;
    b.ready().await;
    let q = app.quota(&key).await;
    assert_eq!(
        (q["quota"].clone(), q["used"].clone()),
        (json!(30), json!(3)),
        "{q}"
    );
    // Set to 50.
    b.click("[data-act=quota]").await;
    b.js("document.getElementById('quota-mode').value = 'set'")
        .await;
    b.type_into("#quota-amount", "50").await;
    b.click("[data-action=confirm]").await;
    b.ready().await;
    let q = app.quota(&key).await;
    assert_eq!(
        (q["quota"].clone(), q["used"].clone()),
        (json!(50), json!(3)),
        "{q}"
    );
    // Both changes are in the key's history (amount 0, from → to) and the audit.
    let (_, h) = app
        .admin_get(&format!("/admin/usage/history?key={id}&limit=10"))
        .await;
    let admin: Vec<&Value> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["metadata"]["admin"] == true)
        .collect();
    assert_eq!(admin.len(), 2, "{h}");
    assert_eq!(admin[0]["metadata"]["quota"], json!({"from": 30, "to": 50}));
    assert_eq!(admin[0]["amount"], 0);
    let (_, a) = app
        .admin_get(&format!("/admin/audit?action=key.update&keyId={id}"))
        .await;
    assert_eq!(a["total"], 2, "{a}");
    // Name and limits.
    b.click("[data-act=edit]").await;
    b.type_into("#edit-name", "renamed").await;
    b.type_into("#edit-rpm", "5").await;
    b.click("[data-action=confirm]").await;
    b.ready().await;
    let (_, k) = app.admin_get(&format!("/admin/keys/{id}")).await;
    assert_eq!(k["name"], "renamed", "{k}");
    assert_eq!(k["limits"]["rpm"], 5, "{k}");
    assert_eq!(k["used"], 3, "{k}");
    // A reset says what it does before it does it.
    b.click("[data-act=reset]").await;
    let warning = b.text("#reset-warning").await;
    assert!(
        warning.contains("清零") || warning.contains(" 0"),
        "{warning}"
    );
    b.screenshot("key-reset-warning-zh").await;
    b.click("[data-action=cancel]").await;
    assert_eq!(app.quota(&key).await["used"], 3, "cancelled: nothing reset");
    assert!(b.console_errors().await.is_empty());
    b.resize(390, 844).await;
    b.ready().await;
    b.click("[data-act=edit]").await;
    b.screenshot("key-edit-phone-zh").await;
    assert_eq!(
        b.js("return document.body.scrollWidth <= window.innerWidth")
            .await,
        json!(true),
        "the edit dialog overflows at 390 px"
    );
    b.click("[data-action=cancel]").await;
    b.close().await;
    app.stop().await;
}

/// Every page of the console at phone width (390 × 844): reachable from the nav, nothing
/// spilling sideways (issue #24).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_page_fits_a_phone() {
    let Some(b) = crate::browser::Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let (key, id) = app
        .create_key(json!({"name": "phone", "owner": {"userId": 3, "username": "pat"}}))
        .await;
    let chat = json!({"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..3 {
        call(&app, &key, "/v1/chat/completions", chat.clone()).await;
    }
    logged(&app, 3).await;
    b.resize(390, 844).await;
    b.goto(&app.url("/")).await;
    b.login(ADMIN).await;
    b.ready().await;
    for page in [
        "overview".to_owned(),
        "rankings".to_owned(),
        "heatmap".to_owned(),
        "anomalies".to_owned(),
        "keys".to_owned(),
        format!("key?id={id}"),
        "requests".to_owned(),
        "prices".to_owned(),
        "audit".to_owned(),
        "alerts".to_owned(),
        "channels".to_owned(),
        "invites".to_owned(),
    ] {
        b.goto(&app.url(&format!("/#/{page}"))).await;
        b.ready().await;
        let name = page.split('?').next().unwrap().to_owned();
        b.screenshot(&format!("phone-{name}")).await;
        let (scroll, width) = (
            b.js("return document.body.scrollWidth").await,
            b.js("return window.innerWidth").await,
        );
        assert!(
            scroll.as_i64().unwrap() <= width.as_i64().unwrap(),
            "{page} overflows at 390 px: {scroll} > {width}"
        );
        if name == "alerts" {
            // No channel configured: the page says what to set (issue #24).
            assert!(b.text("#alerts-setup").await.contains("ALERT_DINGTALK_URL"));
        }
        // Every page's nav entry is on screen or reachable by scrolling the nav row.
        assert!(b.exists(&format!("[data-nav={name}]")).await || name == "key");
    }
    assert!(b.console_errors().await.is_empty());
    b.close().await;
    app.stop().await;
}

/// A refused create-key body says what is wrong in the API's words, naming the field, with
/// none of serde's English (issue #24).
#[tokio::test]
async fn body_errors_name_the_field_without_serdes_english() {
    let app = spawn_app().await;
    for (body, field) in [
        (json!({"quota": "abc"}), "quota"),
        (json!({"count": "2"}), "count"),
        (
            json!({"refill": {"interval": "hourly", "amount": 5}}),
            "refill",
        ),
        (json!({"limits": [null, null]}), "limits"),
    ] {
        let (s, v) = app.admin_post("/admin/keys", body.clone()).await;
        assert_eq!((s, error_code(&v)), (400, "INVALID_REQUEST"), "{body}: {v}");
        assert_eq!(v["error"]["details"]["field"], field, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        let words = msg
            .replace(field, "")
            .replace("daily", "")
            .replace("weekly", "")
            .replace("monthly", "");
        assert!(
            !words.chars().any(|c| c.is_ascii_alphabetic()),
            "{body}: {msg}"
        );
    }
    app.stop().await;
}

/// "Add quota" is done by the server in the update itself: concurrent adds all count, `used`
/// stays, each add is in the key's history (issue #24).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_quota_adds_all_count_and_keep_used() {
    let app = spawn_app().await;
    let (key, id) = app.create_key(json!({"quota": 100})).await;
    assert_eq!(app.use_amount(&key, 7).await.0, 200);
    let path = app.url(&format!("/admin/keys/{id}"));
    let adds = (0..20).map(|_| {
        let (client, path) = (app.client.clone(), path.clone());
        async move {
            client
                .patch(path)
                .bearer_auth(ADMIN)
                .json(&json!({"addQuota": 5}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(adds).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let q = app.quota(&key).await;
    assert_eq!(
        (q["quota"].clone(), q["used"].clone()),
        (json!(200), json!(7)),
        "{q}"
    );
    let hist = full_history(&app.client, &app.base, id).await;
    let adds = hist
        .iter()
        .filter(|e| e["metadata"]["admin"] == true)
        .count();
    assert_eq!(adds, 20, "each add in the history: {hist:?}");
    // Not with quota; not on an unlimited key.
    let r = app
        .client
        .patch(&path)
        .bearer_auth(ADMIN)
        .json(&json!({"addQuota": 5, "quota": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let (_, unlimited) = app.create_key(json!({})).await;
    let r = app
        .client
        .patch(app.url(&format!("/admin/keys/{unlimited}")))
        .bearer_auth(ADMIN)
        .json(&json!({"addQuota": 5}))
        .send()
        .await
        .unwrap();
    let (s, v) = status_json(r).await;
    assert_eq!(
        (s, v["error"]["details"]["field"].clone()),
        (400, json!("addQuota"))
    );
    app.stop().await;
}
