//! Time-dependent behaviour, with the clock injected: refills and expiry.

use quota_proxy::timefmt::parse_instant;
use serde_json::json;

use crate::helpers::*;

fn at(s: &str) -> i64 {
    parse_instant(s, false).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_refill_applies_once_per_period() {
    let app = spawn_app().await;
    app.clock.set_ms(at("2026-05-10T23:59:00Z"));
    let (key, id) = app
        .create_key(json!({"refill": {"interval": "daily", "amount": 10}}))
        .await;
    assert_eq!(
        app.quota(&key).await["quota"],
        10,
        "quota defaults to the refill amount"
    );
    assert_eq!(app.use_amount(&key, 10).await.0, 200);
    let (s, v) = app.use_amount(&key, 1).await;
    assert_eq!((s, error_code(&v)), (429, "QUOTA_EXCEEDED"));

    // Next UTC day: used back to 0, quota back to the amount — even before any consume.
    app.clock.set_ms(at("2026-05-11T00:00:01Z"));
    let q = app.quota(&key).await;
    assert_eq!(
        (q["used"].clone(), q["remaining"].clone()),
        (json!(0), json!(10))
    );
    let (s, v) = app.use_amount(&key, 4).await;
    assert_eq!((s, v["remaining"].clone()), (200, json!(6)));
    // Still the same day: no second reset.
    app.clock.set_ms(at("2026-05-11T18:00:00Z"));
    let (s, v) = app.use_amount(&key, 6).await;
    assert_eq!((s, v["remaining"].clone()), (200, json!(0)));
    assert_eq!(app.use_amount(&key, 1).await.0, 429);

    // The reset was persisted exactly once: after a restart the counters are as they were.
    let dir = app.stop().await;
    let app = spawn_in(dir, |_| {}).await;
    app.clock.set_ms(at("2026-05-11T19:00:00Z"));
    let (_, v) = app.admin_get(&format!("/admin/keys/{id}")).await;
    assert_eq!(
        (v["used"].clone(), v["quota"].clone()),
        (json!(10), json!(10))
    );
    assert_eq!(app.use_amount(&key, 1).await.0, 429);
    // Skipping several days still gives one fresh period, not several.
    app.clock.set_ms(at("2026-05-15T08:00:00Z"));
    let (s, v) = app.use_amount(&key, 10).await;
    assert_eq!((s, v["remaining"].clone()), (200, json!(0)), "{v}");
    assert_eq!(app.use_amount(&key, 1).await.0, 429);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monthly_refill_with_concurrent_consumes_at_the_boundary() {
    let app = spawn_app().await;
    app.clock.set_ms(at("2026-01-31T12:00:00Z"));
    let (key, _) = app
        .create_key(json!({"refill": {"interval": "monthly", "amount": 20}}))
        .await;
    assert_eq!(app.use_amount(&key, 20).await.0, 200);
    app.clock.set_ms(at("2026-02-01T00:00:05Z"));
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let c = app.client.clone();
        let url = app.url("/api/v1/use");
        let k = key.clone();
        tasks.push(tokio::spawn(async move {
            c.post(url)
                .header("X-API-Key", k)
                .json(&json!({"amount": 1}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 20, "exactly one refill's worth");
    assert_eq!(app.quota(&key).await["used"], 20);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_refuses_with_key_expired() {
    let app = spawn_app().await;
    app.clock.set_ms(at("2026-06-01T00:00:00Z"));
    let (key, _) = app
        .create_key(json!({"quota": 100, "expiresAt": "2026-06-30"}))
        .await;
    app.clock.set_ms(at("2026-06-30T23:59:00Z"));
    assert_eq!(
        app.use_amount(&key, 1).await.0,
        200,
        "the whole expiry day is usable"
    );
    app.clock.set_ms(at("2026-07-01T00:00:00Z"));
    let (s, v) = app.use_amount(&key, 1).await;
    assert_eq!((s, error_code(&v)), (403, "KEY_EXPIRED"));
    let (s, v) = app.key_get(&key, "/api/v1/validate").await;
    assert_eq!(
        (s, v["valid"].clone(), v["reason"].clone()),
        (200, json!(false), json!("expired"))
    );
    // Extending the expiry brings it back.
    let r = app
        .client
        .patch(app.url(&format!("/admin/keys/{key}")))
        .bearer_auth(ADMIN)
        .json(&json!({"expiresAt": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (s, v) = app.use_amount(&key, 1).await;
    assert_eq!((s, v["remaining"].clone()), (200, json!(98)));
    app.stop().await;
}

/// Retention removes old rows in small batches (a purge of thousands of rows never holds the
/// write lock for long) and keeps the recent ones.
#[tokio::test]
async fn purge_removes_old_rows_in_batches_and_keeps_recent_ones() {
    use quota_proxy::store::sqlite::{SqliteOptions, SqliteStore};
    use quota_proxy::store::{
        AlertStore, NewAlert, RequestLogFilter, RequestLogRow, RequestLogStore, Upkeep,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        &dir.path().join("p.db"),
        SqliteOptions {
            synchronous_full: false,
            busy_timeout: std::time::Duration::from_millis(2000),
        },
    )
    .await
    .unwrap();
    let row = |ts: i64| RequestLogRow {
        ts,
        request_id: format!("r{ts}"),
        endpoint: "chat.completions".into(),
        status: 200,
        ..Default::default()
    };
    let old: Vec<RequestLogRow> = (0..4500).map(|i| row(1_000 + i)).collect();
    store.insert_request_logs(&old).await.unwrap();
    let recent: Vec<RequestLogRow> = (0..5).map(|i| row(10_000_000 + i)).collect();
    store.insert_request_logs(&recent).await.unwrap();
    let alert = |ts: i64| NewAlert {
        ts,
        rule: "burst".into(),
        subject: "token:1".into(),
        title: "t".into(),
        message: "m".into(),
        details: serde_json::json!({}),
        link: None,
        channels: vec![],
        status: "recorded".into(),
    };
    store.insert_alert(&alert(5)).await.unwrap();
    store.insert_alert(&alert(10_000_001)).await.unwrap();
    let cut = Some(5_000_000);
    let cutoffs = quota_proxy::store::PurgeCutoffs {
        request_log: cut,
        usage_events: cut,
        audit: cut,
        alerts: cut,
        idempotency: cut,
        cooldowns: cut,
    };
    let removed = store.purge(&cutoffs).await.unwrap();
    assert_eq!(removed, 4501);
    let (_, total) = store
        .request_logs(&RequestLogFilter::default(), 10, 0)
        .await
        .unwrap();
    assert_eq!(total, 5);
    let (alerts, n) = store.alerts(&Default::default(), 10, 0).await.unwrap();
    assert_eq!((n, alerts[0].alert.ts), (1, 10_000_001));
}
