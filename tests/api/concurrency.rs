//! N concurrent consumes on a key with quota Q: exactly min(N, floor(Q/amount)) succeed.

use serde_json::{Value, json};

use crate::helpers::*;

async fn fire(app: &TestApp, key: &str, path: &str, body: Value, n: usize) -> (usize, usize) {
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let c = app.client.clone();
        let url = app.url(path);
        let k = key.to_owned();
        let b = body.clone();
        tasks.push(tokio::spawn(async move {
            let r = c
                .post(url)
                .header("X-API-Key", k)
                .json(&b)
                .send()
                .await
                .unwrap();
            let (s, v) = status_json(r).await;
            if s != 200 {
                assert_eq!((s, error_code(&v)), (429, "QUOTA_EXCEEDED"), "{v}");
            }
            s
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            _ => refused += 1,
        }
    }
    (ok, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_concurrent_consumes_never_overdraw() {
    let app = spawn_app().await;
    let (key, id) = app.create_key(json!({"quota": 100})).await;
    let (ok, refused) = fire(&app, &key, "/api/v1/use", json!({"amount": 1}), 500).await;
    assert_eq!((ok, refused), (100, 400));
    let q = app.quota(&key).await;
    assert_eq!(
        (q["used"].clone(), q["remaining"].clone()),
        (json!(100), json!(0))
    );
    let history = full_history(&app.client, &app.base, id).await;
    assert_eq!(history.len(), 100);
    // Each entry's remaining is distinct: every consume saw its own place in line.
    let mut rem: Vec<i64> = history
        .iter()
        .map(|h| h["remaining"].as_i64().unwrap())
        .collect();
    rem.sort_unstable();
    assert_eq!(rem, (0..100).collect::<Vec<_>>());

    // Amount 3 against quota 100: floor(100/3) = 33.
    let (key3, _) = app.create_key(json!({"quota": 100})).await;
    let (ok, _) = fire(&app, &key3, "/api/v1/use", json!({"amount": 3}), 500).await;
    assert_eq!(ok, 33);
    assert_eq!(app.quota(&key3).await["used"], 99);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_are_all_or_nothing() {
    let app = spawn_app().await;
    let (key, id) = app.create_key(json!({"quota": 100})).await;
    let batch = json!([{"amount": 1, "reason": "a"}, {"amount": 2, "reason": "b"}]);
    let (ok, refused) = fire(&app, &key, "/api/v1/use/batch", batch, 500).await;
    assert_eq!((ok, refused), (33, 467));
    let q = app.quota(&key).await;
    assert_eq!(q["used"], 99);
    let history = full_history(&app.client, &app.base, id).await;
    assert_eq!(
        history.len(),
        66,
        "two entries per successful batch, none from refused ones"
    );
    let total: i64 = history.iter().map(|h| h["amount"].as_i64().unwrap()).sum();
    assert_eq!(total, 99);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_keys_at_once_each_exact() {
    let app = spawn_app().await;
    let mut keys = Vec::new();
    for q in [10, 25, 40, 0] {
        keys.push((app.create_key(json!({"quota": q})).await.0, q));
    }
    let mut tasks = Vec::new();
    for (k, _) in &keys {
        for _ in 0..60 {
            let c = app.client.clone();
            let url = app.url("/api/v1/use");
            let k = k.clone();
            tasks.push(tokio::spawn(async move {
                let r = c
                    .post(url)
                    .header("X-API-Key", &k)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                (k, r.status().as_u16())
            }));
        }
    }
    let mut ok = std::collections::HashMap::<String, i64>::new();
    for t in tasks {
        let (k, s) = t.await.unwrap();
        if s == 200 {
            *ok.entry(k).or_default() += 1;
        }
    }
    for (k, q) in &keys {
        assert_eq!(
            ok.get(k).copied().unwrap_or(0),
            *q as i64,
            "key with quota {q}"
        );
        assert_eq!(app.quota(k).await["used"], *q);
    }
    app.stop().await;
}
