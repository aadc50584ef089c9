use serde_json::json;

use crate::helpers::*;

async fn use_with_idem(
    app: &TestApp,
    key: &str,
    idem: &str,
    amount: i64,
) -> (u16, serde_json::Value) {
    let r = app
        .client
        .post(app.url("/api/v1/use"))
        .header("X-API-Key", key)
        .header("Idempotency-Key", idem)
        .json(&json!({"amount": amount}))
        .send()
        .await
        .unwrap();
    status_json(r).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_consume_returns_first_result_and_charges_once() {
    let app = spawn_app().await;
    let (key, _) = app.create_key(json!({"quota": 100})).await;
    let (s1, first) = use_with_idem(&app, &key, "req-1", 7).await;
    assert_eq!(s1, 200);
    assert_eq!(first["remaining"], 93);
    app.use_amount(&key, 3).await; // something else happens in between
    let (s2, second) = use_with_idem(&app, &key, "req-1", 7).await;
    assert_eq!(s2, 200);
    assert_eq!(first, second, "the first result, byte for byte");
    assert_eq!(app.quota(&key).await["used"], 10);

    // requestId in the body works the same way.
    let (s, a) = app
        .key_post(
            &key,
            "/api/v1/use",
            json!({"amount": 5, "requestId": "body-id"}),
        )
        .await;
    let (_, b) = app
        .key_post(
            &key,
            "/api/v1/use",
            json!({"amount": 5, "requestId": "body-id"}),
        )
        .await;
    assert_eq!((s, &a), (200, &b));
    assert_eq!(app.quota(&key).await["used"], 15);

    // Concurrent retries of one request: charged exactly once.
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let c = app.client.clone();
        let url = app.url("/api/v1/use");
        let k = key.clone();
        tasks.push(tokio::spawn(async move {
            let r = c
                .post(url)
                .header("X-API-Key", k)
                .header("Idempotency-Key", "storm")
                .json(&json!({"amount": 2}))
                .send()
                .await
                .unwrap();
            status_json(r).await
        }));
    }
    let mut bodies = std::collections::HashSet::new();
    for t in tasks {
        let (s, v) = t.await.unwrap();
        assert_eq!(s, 200);
        bodies.insert(v.to_string());
    }
    assert_eq!(bodies.len(), 1);
    assert_eq!(app.quota(&key).await["used"], 17);

    // A batch with an idempotency key.
    let batch = json!([{"amount": 1}, {"amount": 2}]);
    for _ in 0..3 {
        let r = app
            .client
            .post(app.url("/api/v1/use/batch"))
            .header("X-API-Key", &key)
            .header("Idempotency-Key", "batch-1")
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    assert_eq!(app.quota(&key).await["used"], 20);

    // It survives a restart (the record is in the database, not only in memory).
    let dir = app.stop().await;
    let app = spawn_in(dir, |_| {}).await;
    let (s3, third) = use_with_idem(&app, &key, "req-1", 7).await;
    assert_eq!((s3, &third), (200, &first));
    assert_eq!(app.quota(&key).await["used"], 20);
    let (_, h) = app.key_get(&key, "/api/v1/usage/history?limit=1000").await;
    assert_eq!(h["total"], 6, "7, 3, 5, 2 and the batch's two items");

    // A refused attempt is not remembered: it may succeed once quota allows.
    let (key2, _) = app.create_key(json!({"quota": 1})).await;
    assert_eq!(use_with_idem(&app, &key2, "x", 2).await.0, 429);
    app.admin_post("/admin/keys/reset", json!({"key": key2, "newQuota": 5}))
        .await;
    let (s, v) = use_with_idem(&app, &key2, "x", 2).await;
    assert_eq!((s, v["remaining"].clone()), (200, json!(3)));
    app.stop().await;
}
