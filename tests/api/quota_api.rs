use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    let (s, v) = status_json(r).await;
    assert_eq!(s, 200);
    assert_eq!(v["ok"], true);
    assert!(v["version"].is_string());
    let (s, v) = status_json(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!((s, v["ok"].clone()), (200, json!(true)));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_flow_validate_use_batch_quota_history() {
    let app = spawn_app().await;
    let (s, created) = app
        .admin_post(
            "/admin/keys",
            json!({"prefix": "roc", "quota": 1000, "expiresAt": "2026-12-31T23:59:59Z"}),
        )
        .await;
    assert_eq!(s, 200, "{created}");
    assert_eq!(created["success"], true);
    assert_eq!(created["quota"], 1000);
    assert_eq!(created["remaining"], 1000);
    assert_eq!(created["expiresAt"], "2026-12-31T23:59:59Z");
    assert!(created["createdAt"].as_str().unwrap().ends_with('Z'));
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("roc_") && key.len() == 4 + 32);

    let (s, v) = app.key_get(&key, "/api/v1/validate").await;
    assert_eq!(s, 200);
    assert_eq!(v["valid"], true);
    assert_eq!(v["quota"], 1000);
    assert_eq!(v["remaining"], 1000);
    assert_eq!(v["expiresAt"], "2026-12-31T23:59:59Z");
    let hint = v["key"].as_str().unwrap();
    assert!(hint.starts_with("roc_") && hint.contains('…') && hint != key);

    let (s, v) = app
        .key_post(
            &key,
            "/api/v1/use",
            json!({"amount": 1, "reason": "openclaw_api_call",
                   "metadata": {"model": "deepseek-chat", "tokens": 100}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"success": true, "key": hint, "amountUsed": 1, "remaining": 999, "totalQuota": 1000})
    );

    let (s, v) = app
        .key_post(
            &key,
            "/api/v1/use/batch",
            json!([{"amount": 2, "reason": "openclaw_api_call_1"},
                   {"amount": 3, "reason": "openclaw_api_call_2"}]),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["amountUsed"], 5);
    assert_eq!(v["remaining"], 994);
    assert_eq!(v["count"], 2);
    assert_eq!(v["totalQuota"], 1000);

    let q = app.quota(&key).await;
    assert_eq!(q["quota"], 1000);
    assert_eq!(q["used"], 6);
    assert_eq!(q["remaining"], 994);
    assert!(q["lastUsed"].is_string());

    // The seed's GET with a JSON body.
    let r = app
        .client
        .get(app.url("/api/v1/usage/history"))
        .header("X-API-Key", &key)
        .header("Content-Type", "application/json")
        .body(r#"{"limit": 2, "offset": 0}"#)
        .send()
        .await
        .unwrap();
    let (s, v) = status_json(r).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["total"], 3);
    assert_eq!(v["limit"], 2);
    assert_eq!(v["offset"], 0);
    let h = v["history"].as_array().unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0]["amount"], 3);
    assert_eq!(h[0]["reason"], "openclaw_api_call_2");
    assert_eq!(h[0]["remaining"], 994);
    assert_eq!(h[1]["remaining"], 997);
    // Query string form, next page: the first consume with its metadata.
    let (s, v) = app
        .key_get(&key, "/api/v1/usage/history?limit=2&offset=2")
        .await;
    assert_eq!(s, 200);
    let h = v["history"].as_array().unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(
        h[0]["metadata"],
        json!({"model": "deepseek-chat", "tokens": 100})
    );
    assert_eq!(h[0]["remaining"], 999);
    assert!(h[0]["timestamp"].as_str().unwrap().ends_with('Z'));

    // Default amount is 1; Authorization: Bearer works for callers too.
    let r = app
        .client
        .post(app.url("/api/v1/use"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let (s, v) = status_json(r).await;
    assert_eq!(
        (s, v["amountUsed"].clone(), v["remaining"].clone()),
        (200, json!(1), json!(993))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlimited_key_has_null_quota_and_never_runs_out() {
    let app = spawn_app().await;
    let (key, _) = app.create_key(json!({})).await;
    assert!(key.starts_with("qp_"), "default prefix");
    let (s, v) = app.use_amount(&key, 1_000_000_000).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["remaining"], serde_json::Value::Null);
    assert_eq!(v["totalQuota"], serde_json::Value::Null);
    let q = app.quota(&key).await;
    assert_eq!(q["used"], 1_000_000_000);
    app.stop().await;
}
