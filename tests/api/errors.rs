use serde_json::json;

use crate::helpers::*;

async fn raw_use(app: &TestApp, key: &str, body: &'static str) -> (u16, serde_json::Value) {
    let r = app
        .client
        .post(app.url("/api/v1/use"))
        .header("X-API-Key", key)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    status_json(r).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_name_the_field_and_charge_nothing() {
    let app = spawn_app().await;
    let (key, _) = app.create_key(json!({"quota": 100})).await;
    let cases: &[(&str, &str)] = &[
        ("{not json", ""),
        (r#"{"amount": "x"}"#, "amount"),
        (r#"{"amount": 0}"#, "amount"),
        (r#"{"amount": -5}"#, "amount"),
        (r#"{"amount": 1.5}"#, "amount"),
        (r#"{"amount": 1000000001}"#, "amount"),
        (r#"{"amount": 1e30}"#, "amount"),
        (r#"{"amount": 1, "reason": 7}"#, "reason"),
        (r#"{"amount": 1, "metadata": [1]}"#, "metadata"),
        (r#"{"amount": 1, "metadata": "x"}"#, "metadata"),
        (r#"{"amount": 1, "bogus": true}"#, "bogus"),
        ("[1, 2]", "body"),
        ("\"text\"", "body"),
    ];
    for (body, field) in cases {
        let (s, v) = raw_use(&app, &key, body).await;
        assert_eq!(s, 400, "{body} → {v}");
        assert_eq!(error_code(&v), "INVALID_REQUEST", "{body}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{body} → {v}"
        );
        if !field.is_empty() {
            assert_eq!(v["error"]["details"]["field"], *field, "{body}");
        }
    }
    let long_reason = "字".repeat(201);
    let (s, v) = app
        .key_post(
            &key,
            "/api/v1/use",
            json!({"amount": 1, "reason": long_reason}),
        )
        .await;
    assert_eq!((s, error_code(&v)), (400, "INVALID_REQUEST"));
    let big_meta = json!({"amount": 1, "metadata": {"x": "a".repeat(9000)}});
    let (s, v) = app.key_post(&key, "/api/v1/use", big_meta).await;
    assert_eq!((s, error_code(&v)), (400, "INVALID_REQUEST"), "{v}");

    // Batches: empty, too many, a bad item named by index.
    let (s, v) = app.key_post(&key, "/api/v1/use/batch", json!([])).await;
    assert_eq!((s, error_code(&v)), (400, "INVALID_REQUEST"));
    let many: Vec<_> = (0..1001).map(|_| json!({})).collect();
    let (s, v) = app.key_post(&key, "/api/v1/use/batch", json!(many)).await;
    assert_eq!((s, error_code(&v)), (400, "INVALID_REQUEST"));
    let (s, v) = app
        .key_post(
            &key,
            "/api/v1/use/batch",
            json!([{"amount": 1}, {"amount": "two"}]),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["details"]["field"], "[1].amount");
    let (s, _) = app
        .key_post(&key, "/api/v1/use/batch", json!({"amount": 1}))
        .await;
    assert_eq!(s, 400);

    // Bad paging values.
    let (s, v) = app.key_get(&key, "/api/v1/usage/history?limit=0").await;
    assert_eq!(
        (s, v["error"]["details"]["field"].clone()),
        (400, json!("limit"))
    );
    let (s, _) = app.key_get(&key, "/api/v1/usage/history?limit=1001").await;
    assert_eq!(s, 400);
    let (s, _) = app.key_get(&key, "/api/v1/usage/history?offset=-1").await;
    assert_eq!(s, 400);

    // Nothing above was charged.
    assert_eq!(app.quota(&key).await["used"], 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_413() {
    let app = spawn_app().await;
    let (key, _) = app.create_key(json!({"quota": 100})).await;
    let body = format!(r#"{{"amount":1,"reason":"{}"}}"#, "a".repeat(70 * 1024));
    let r = app
        .client
        .post(app.url("/api/v1/use"))
        .header("X-API-Key", &key)
        .body(body)
        .send()
        .await
        .unwrap();
    let (s, v) = status_json(r).await;
    assert_eq!((s, error_code(&v)), (413, "PAYLOAD_TOO_LARGE"), "{v}");
    let r = app
        .client
        .post(app.url("/admin/keys"))
        .bearer_auth(ADMIN)
        .body(vec![b' '; 100 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(app.quota(&key).await["used"], 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_errors() {
    let app = spawn_app().await;
    // Missing and unknown caller keys.
    let r = app
        .client
        .get(app.url("/api/v1/quota"))
        .send()
        .await
        .unwrap();
    let (s, v) = status_json(r).await;
    assert_eq!((s, error_code(&v)), (401, "UNAUTHORIZED"));
    let (s, v) = app
        .key_get("roc_notARealKeyAtAllxxxxxxxxxxxxxxxxx", "/api/v1/validate")
        .await;
    assert_eq!((s, error_code(&v)), (401, "UNAUTHORIZED"));
    let (s, v) = app.use_amount("garbage", 1).await;
    assert_eq!((s, error_code(&v)), (401, "UNAUTHORIZED"));

    // Admin token missing or wrong; X-Admin-Token accepted.
    let r = app.client.get(app.url("/admin/keys")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = app
        .client
        .get(app.url("/admin/keys"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    let (s, v) = status_json(r).await;
    assert_eq!((s, error_code(&v)), (401, "UNAUTHORIZED"));
    let r = app
        .client
        .get(app.url("/admin/keys"))
        .header("X-Admin-Token", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // A caller key is not an admin token.
    let (key, _) = app.create_key(json!({"quota": 5})).await;
    let r = app
        .client
        .get(app.url("/admin/keys"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Viewer reads but cannot write.
    let r = app
        .client
        .get(app.url("/admin/usage"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    for (path, body) in [
        ("/admin/keys", json!({"quota": 1})),
        ("/admin/keys/disable", json!({"key": key})),
        ("/admin/keys/reset", json!({"key": key, "newQuota": 9})),
    ] {
        let r = app
            .client
            .post(app.url(path))
            .bearer_auth(VIEWER)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (s, v) = status_json(r).await;
        assert_eq!((s, error_code(&v)), (403, "FORBIDDEN"), "{path}");
    }
    assert_eq!(app.quota(&key).await["quota"], 5);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_exceeded_has_the_seed_message_and_details() {
    let app = spawn_app().await;
    let (key, _) = app.create_key(json!({"quota": 1})).await;
    assert_eq!(app.use_amount(&key, 1).await.0, 200);
    let (s, v) = app.use_amount(&key, 1).await;
    assert_eq!(s, 429);
    assert_eq!(error_code(&v), "QUOTA_EXCEEDED");
    assert_eq!(v["error"]["message"], "配额不足，剩余配额：0，请求配额：1");
    assert_eq!(v["error"]["details"]["remaining"], 0);
    assert_eq!(v["error"]["details"]["requested"], 1);
    assert!(v["error"]["details"]["key"].as_str().unwrap().contains('…'));
    // Validate answers 200 with valid:false and the reason.
    let (s, v) = app.key_get(&key, "/api/v1/validate").await;
    assert_eq!(
        (s, v["valid"].clone(), v["reason"].clone()),
        (200, json!(false), json!("exhausted"))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_key_not_found_and_bad_admin_input() {
    let app = spawn_app().await;
    for (path, body) in [
        (
            "/admin/keys/reset",
            json!({"key": "roc_doesNotExist000000000000000000", "newQuota": 5}),
        ),
        ("/admin/keys/disable", json!({"key": "999999"})),
        ("/admin/keys/enable", json!({"key": "424242"})),
        ("/admin/keys/77/rotate", json!({})),
    ] {
        let (s, v) = app.admin_post(path, body).await;
        assert_eq!((s, error_code(&v)), (404, "KEY_NOT_FOUND"), "{path}: {v}");
    }
    let (s, v) = app.admin_get("/admin/keys/12345").await;
    assert_eq!((s, error_code(&v)), (404, "KEY_NOT_FOUND"));
    let (s, v) = app.admin_get("/admin/usage/history?key=31337").await;
    assert_eq!((s, error_code(&v)), (404, "KEY_NOT_FOUND"));

    for body in [
        json!({"prefix": "has_underscore"}),
        json!({"prefix": "waytoolongprefix1234"}),
        json!({"quota": -1}),
        json!({"quota": "10"}),
        json!({"count": 0}),
        json!({"count": 1001}),
        json!({"expiresAt": "tomorrow"}),
        json!({"limits": {"rpm": "fast"}}),
        json!({"limits": {"nope": 1}}),
        json!({"refill": {"interval": "hourly", "amount": 5}}),
        json!({"owner": {"userId": "abc"}}),
        json!({"unknownField": 1}),
    ] {
        let (s, v) = app.admin_post("/admin/keys", body.clone()).await;
        assert_eq!((s, error_code(&v)), (400, "INVALID_REQUEST"), "{body}: {v}");
    }
    let (s, v) = app
        .admin_post("/admin/keys/reset", json!({"newQuota": 5}))
        .await;
    assert_eq!(
        (s, v["error"]["details"]["field"].clone()),
        (400, json!("key"))
    );
    let (s, _) = app.admin_get("/admin/keys?status=sleeping").await;
    assert_eq!(s, 400);
    let (s, v) = app
        .admin_get("/admin/usage?startDate=2026-05-01&endDate=2026-04-01")
        .await;
    assert_eq!((s, error_code(&v)), (400, "INVALID_REQUEST"));
    let (s, _) = app.admin_get("/admin/usage?startDate=yesterday").await;
    assert_eq!(s, 400);
    // Unknown routes answer in the same error shape.
    let (s, v) = app.admin_get("/admin/nothing-here").await;
    assert_eq!((s, error_code(&v)), (404, "NOT_FOUND"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_unreachable_is_503_and_charges_nothing() {
    let app = spawn_app_with(|c| c.sqlite_busy_timeout_ms = 200).await;
    let (key, _) = app.create_key(json!({"quota": 10})).await;
    // Another process holds the database's write lock.
    let db = app.dir.path().join("qp.db");
    let url = format!("sqlite://{}", db.display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut conn)
        .await
        .unwrap();
    let (s, v) = app.use_amount(&key, 3).await;
    assert_eq!((s, error_code(&v)), (503, "UNAVAILABLE"), "{v}");
    assert!(!v["error"]["message"].as_str().unwrap().contains("database"));
    sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
    drop(conn);
    let q = app.quota(&key).await;
    assert_eq!(q["used"], 0, "a refused consume is not charged");
    let (s, v) = app.use_amount(&key, 3).await;
    assert_eq!((s, v["remaining"].clone()), (200, json!(7)));
    let (_, h) = app.key_get(&key, "/api/v1/usage/history").await;
    assert_eq!(h["total"], 1);
    app.stop().await;
}

/// Extreme numbers in the monitor's parameters are refused in the seed's error shape; none
/// reaches arithmetic that overflows (it used to panic and drop the connection).
#[tokio::test]
async fn monitor_parameters_at_the_edges_of_i64_are_refused_not_panics() {
    let app = spawn_app().await;
    let min = i64::MIN;
    let max = i64::MAX;
    let ranges = [
        format!("end_ms={min}"),
        format!("start_ms={min}&end_ms={max}"),
        format!("start_ms=0&end_ms={max}"),
        format!("start_ms={}&end_ms={max}", max - 1),
        "start_ms=-1&end_ms=5".to_owned(),
        format!("end_ms={max}"),
        "start_ms=0&end_ms=99999999999999999999".to_owned(),
    ];
    let endpoints = [
        "/api/stats/series?",
        "/api/stats/series?slot_sec=60&",
        "/api/stats/top?",
        "/api/stats/anomalies?rule=burst&",
        "/api/stats/anomalies?rule=burst&window_sec=86400&",
        "/api/stats/heatmap?",
        "/api/stats/summary?",
        "/api/stats/subject?token_id=1&",
        "/api/export/csv?query_type=series&",
    ];
    for e in endpoints {
        for r in &ranges {
            let (s, v) = app.admin_get(&format!("{e}{r}")).await;
            assert!(s == 200 || s == 400, "{e}{r}: {s} {v}");
            if s == 400 {
                assert_eq!(v["code"], 400, "{e}{r}: {v}");
                assert!(v["error"].is_string());
            }
        }
    }
    // Still serving.
    let (s, _) = app.admin_get("/api/stats/summary").await;
    assert_eq!(s, 200);
    app.stop().await;
}

/// Every error from our routes is JSON in its API family's shape, the framework's own
/// rejections included.
#[tokio::test]
async fn errors_have_the_shape_of_their_api_family() {
    let app = spawn_app().await;
    let send = |m: reqwest::Method, path: &str| {
        app.client
            .request(m, app.url(path))
            .bearer_auth(ADMIN)
            .send()
    };
    use reqwest::Method;
    let openai =
        |v: &serde_json::Value| v["error"]["message"].is_string() && v["error"]["type"].is_string();
    let monitor = |v: &serde_json::Value| {
        v["error"].is_string() && v["code"].is_number() && v["timestamp"].is_string()
    };
    let quota =
        |v: &serde_json::Value| v["error"]["code"].is_string() && v["error"]["message"].is_string();
    type Check = fn(&serde_json::Value) -> bool;
    let cases: Vec<(Method, &str, u16, Check)> = vec![
        (Method::GET, "/v1/nope", 404, openai),
        (Method::DELETE, "/v1/chat/completions", 405, openai),
        (Method::POST, "/api/stats/summary", 405, monitor),
        (Method::GET, "/api/nope", 404, monitor),
        (Method::GET, "/admin/keys/%FF%FE", 400, quota),
        (Method::PUT, "/admin/keys", 405, quota),
        (Method::GET, "/nope", 404, quota),
        (Method::GET, "/api/v1/nope", 404, quota),
    ];
    for (m, path, status, check) in cases {
        let r = send(m.clone(), path).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{m} {path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("application/json"), "{m} {path}: {ct}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(check(&v), "{m} {path}: {v}");
    }
    // One operator extractor refuses everywhere; each route writes the refusal in its own
    // family.
    for (path, check, message) in [
        (
            "/api/stats/summary",
            monitor as Check,
            "未授权：需要管理员或只读令牌",
        ),
        ("/admin/alerts", quota as Check, "管理员令牌无效或缺失"),
        ("/admin/keys", quota as Check, "管理员令牌无效或缺失"),
    ] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(check(&v), "{path}: {v}");
        assert!(v.to_string().contains(message), "{path}: {v}");
    }
    app.stop().await;
}
