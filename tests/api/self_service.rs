//! The key holder's console (`/me`, issue #25): signed in with the key itself, it shows that
//! key and nothing else — every admin and monitor route refuses a holder's session.

use serde_json::{Value, json};

use crate::helpers::*;

async fn me_login(app: &TestApp, key: &str) -> (u16, Option<String>, Value) {
    let r = app
        .client
        .post(app.url("/me/login"))
        .json(&json!({ "key": key }))
        .send()
        .await
        .unwrap();
    let cookie = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    let (s, v) = status_json(r).await;
    (s, cookie, v)
}

/// The `name=value` part of a Set-Cookie.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

async fn me_get(app: &TestApp, cookie: &str, path: &str) -> (u16, Value) {
    let r = app
        .client
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    status_json(r).await
}

async fn chat(app: &TestApp, key: &str) {
    let r = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

async fn logged(app: &TestApp, n: i64) {
    for _ in 0..100 {
        let (_, v) = app.admin_get("/admin/requests?limit=1").await;
        if v["total"].as_i64().unwrap_or(0) >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the request log never reached {n} rows");
}

#[tokio::test]
async fn a_holder_sees_their_own_key_and_only_it() {
    let app = spawn_app().await;
    let (mine, my_id) = app
        .create_key(json!({"name": "mine", "quota": 100, "metadata": {"note": "operator-only"}}))
        .await;
    let (theirs, _) = app.create_key(json!({"name": "theirs", "quota": 50})).await;
    for _ in 0..3 {
        chat(&app, &mine).await;
    }
    for _ in 0..2 {
        chat(&app, &theirs).await;
    }
    logged(&app, 5).await;

    let (s, _, v) = me_login(&app, "qp_wrongwrongwrongwrongwrongwrongwr").await;
    assert_eq!((s, error_code(&v)), (401, "UNAUTHORIZED"));
    let (s, set, v) = me_login(&app, &mine).await;
    assert_eq!(s, 200, "{v}");
    let set = set.unwrap();
    assert!(
        set.contains("Path=/me") && set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(
        !set.contains(&mine),
        "the cookie is a session id, not the key"
    );
    let cookie = pair(&set);

    let (s, v) = me_get(&app, &cookie, "/me/api/summary").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["key"]["id"], my_id);
    assert_eq!(v["key"]["used"], 3);
    assert_eq!(v["key"]["remaining"], 97);
    assert!(
        v["key"].get("metadata").is_none(),
        "operators' notes stay hidden: {v}"
    );
    let (_, v) = me_get(&app, &cookie, "/me/api/requests").await;
    assert_eq!(v["total"], 3, "only my calls: {v}");
    for r in v["requests"].as_array().unwrap() {
        assert!(
            r.get("upstream").is_none() && r.get("clientIp").is_none(),
            "{r}"
        );
    }
    let (_, v) = me_get(&app, &cookie, "/me/api/history").await;
    assert_eq!(v["total"], 3, "{v}");
    let csv = app
        .client
        .get(app.url("/me/api/export.csv"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), 1 + 3, "{csv}");
    assert!(
        csv.starts_with("timestamp,requestId,endpoint,model"),
        "{csv}"
    );

    // The page itself is served, with no key in it.
    let page = app.client.get(app.url("/me")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("me.js"));

    // Without the session, or after logout: nothing.
    assert_eq!(me_get(&app, "", "/me/api/summary").await.0, 401);
    let logout = |csrf: bool| {
        let mut r = app
            .client
            .post(app.url("/me/logout"))
            .header("cookie", &cookie);
        if csrf {
            r = r.header("x-qp-csrf", "1");
        }
        r.send()
    };
    // Without the anti-forgery header (another site's form) nothing happens.
    let (_, v) = status_json(logout(false).await.unwrap()).await;
    assert_eq!(v["ok"], false);
    assert_eq!(me_get(&app, &cookie, "/me/api/summary").await.0, 200);
    let (s, v) = status_json(logout(true).await.unwrap()).await;
    assert_eq!((s, v["ok"].clone()), (200, json!(true)));
    assert_eq!(me_get(&app, &cookie, "/me/api/summary").await.0, 401);

    // A key deleted since sign-in ends the session.
    let (_, set, _) = me_login(&app, &mine).await;
    let cookie = pair(&set.unwrap());
    let r = app
        .client
        .delete(app.url(&format!("/admin/keys/{my_id}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(me_get(&app, &cookie, "/me/api/summary").await.0, 401);
    app.stop().await;
}

/// A holder's session against every documented admin, monitor and alert route, every method:
/// each refuses (401) — none answers with data.
#[tokio::test]
async fn a_holder_session_opens_no_operator_route() {
    // The brute-force limit off: every refusal here is the authentication's own.
    let app = spawn_app_with(|c| c.auth_failure_allowance = 0).await;
    let (key, _) = app.create_key(json!({"quota": 10})).await;
    let (_, set, _) = me_login(&app, &key).await;
    let cookie = pair(&set.unwrap());
    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut tried = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let operator = path.starts_with("/admin/")
            || (path.starts_with("/api/")
                && !path.starts_with("/api/v1/")
                && path != "/api/health");
        if !operator {
            continue;
        }
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "1" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in ops.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = app
                .client
                .request(m, app.url(&concrete))
                .header("cookie", &cookie)
                .header("x-qp-csrf", "1")
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 401, "{method} {concrete}");
            tried += 1;
        }
    }
    assert!(tried >= 30, "{tried} operations tried");
    app.stop().await;
}

/// The `/me` page in Chromium: sign in with the key, see the balance, own requests and the
/// snippets; at 1440 px and at 390 px with no sideways overflow; sign out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_me_page_signs_in_with_the_key_and_fits_a_phone() {
    let Some(b) = crate::browser::Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let (key, _) = app.create_key(json!({"name": "trial", "quota": 500})).await;
    for _ in 0..4 {
        chat(&app, &key).await;
    }
    logged(&app, 4).await;
    b.resize(1440, 900).await;
    b.goto(&app.url("/me")).await;
    b.find("#me-login").await;
    // An invite code redeemed on the sign-in page: the new key shown once, and it works.
    let (_, inv) = app
        .admin_post("/admin/invites", json!({"quota": 7, "uses": 1}))
        .await;
    b.type_into("#me-code", inv["code"].as_str().unwrap()).await;
    b.click("#me-redeem-btn").await;
    let new_key = b.text("#me-new-key").await;
    assert_eq!(app.quota(&new_key).await["remaining"], 7);
    b.screenshot("me-redeemed").await;
    b.type_into("#me-key", "qp_not-a-key").await;
    b.click("#me-login-btn").await;
    for _ in 0..50 {
        if !b.text("#me-msg").await.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        !b.text("#me-msg").await.is_empty(),
        "a wrong key is said so"
    );
    b.type_into("#me-key", &key).await;
    b.click("#me-login-btn").await;
    b.ready().await;
    assert_eq!(b.text("#me-remaining").await, "496");
    assert!(b.text("#me-requests").await.contains("mock-chat"));
    let snippets = b.text("#me-snippets").await;
    assert!(
        snippets.contains(&app.base) && snippets.contains("ANTHROPIC_BASE_URL"),
        "{snippets}"
    );
    assert!(
        !b.text("body").await.contains(&key),
        "the key is never shown back"
    );
    let url = b.js("return location.href").await;
    assert!(
        !url.as_str().unwrap().contains(&key),
        "nor put in the address"
    );
    b.screenshot("me").await;
    b.click("#lang").await;
    b.ready().await;
    assert_eq!(b.text(".brand").await, "My key");
    assert!(b.text("#me-snippets").await.contains("<your key>"));
    b.screenshot("me-en").await;
    b.resize(390, 844).await;
    b.goto(&app.url("/me")).await;
    b.ready().await;
    b.screenshot("phone-me").await;
    b.assert_fits_width("the /me page").await;
    b.click("#me-logout").await;
    b.find("#me-login").await;
    // The refused sign-in may be reported again; nothing else.
    let errors = b.console_errors().await;
    assert!(errors.iter().all(|e| e.contains("/me/login")), "{errors:?}");
    b.close().await;
    app.stop().await;
}
