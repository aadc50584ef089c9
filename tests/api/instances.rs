//! Several instances on one PostgreSQL database (started by scripts/test.sh): every promise
//! of one instance — exact quota, idempotency, refills, request limits, key edits — holds
//! across two, each a real router on a real port (or the real binary) over a fresh database.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::{Value, json};

use quota_proxy::clock::Clock;

use crate::helpers::*;

/// A fresh, empty database on the test PostgreSQL server, as a URL.
pub(crate) async fn fresh_pg() -> Option<String> {
    let admin = match std::env::var("TEST_PG_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            assert!(
                std::env::var("CI").is_err(),
                "TEST_PG_URL is unset under CI: scripts/test.sh starts PostgreSQL"
            );
            eprintln!("skipping PostgreSQL instances: run scripts/test.sh");
            return None;
        }
    };
    let name = format!("qp_{}_{}", std::process::id(), fastrand::u32(..));
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').unwrap();
    Some(format!("{base}/{name}"))
}

async fn two(url: &str) -> (TestApp, TestApp) {
    let a = spawn_app_with(|c| c.database_url = Some(url.to_owned())).await;
    let b = spawn_app_with(|c| c.database_url = Some(url.to_owned())).await;
    (a, b)
}

/// Fires `n` requests, alternating between the instances, at most `width` at a time;
/// returns the statuses in order of completion.
async fn spread(
    apps: &[&TestApp],
    n: usize,
    width: usize,
    req: impl Fn(&TestApp, usize) -> reqwest::RequestBuilder,
) -> Vec<(u16, Value)> {
    let mut out = Vec::with_capacity(n);
    let mut running = FuturesUnordered::new();
    for i in 0..n {
        let r = req(apps[i % apps.len()], i);
        running.push(async move { status_json(r.send().await.unwrap()).await });
        if running.len() >= width
            && let Some(x) = running.next().await
        {
            out.push(x);
        }
    }
    while let Some(x) = running.next().await {
        out.push(x);
    }
    out
}

fn count(results: &[(u16, Value)], status: u16) -> usize {
    results.iter().filter(|(s, _)| *s == status).count()
}

async fn used_in_db(url: &str, id: i64) -> (i64, i64) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let used: i64 = sqlx::query_scalar("SELECT used FROM keys WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    let history: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM usage_events WHERE key_id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    (used, history)
}

fn use_req(app: &TestApp, key: &str, body: Value) -> reqwest::RequestBuilder {
    app.client
        .post(app.url("/api/v1/use"))
        .header("X-API-Key", key)
        .json(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_consumes_across_two_instances_take_exactly_the_quota() {
    let Some(url) = fresh_pg().await else { return };
    let (a, b) = two(&url).await;
    let (key, id) = a.create_key(json!({"quota": 3000})).await;
    let started = Instant::now();
    let res = spread(&[&a, &b], 10_000, 256, |app, _| {
        use_req(app, &key, json!({"amount": 1}))
    })
    .await;
    eprintln!(
        "10 000 consumes over two instances: {:?}",
        started.elapsed()
    );
    assert_eq!(count(&res, 200), 3000);
    for (s, v) in &res {
        if *s != 200 {
            assert_eq!((*s, error_code(v)), (429, "QUOTA_EXCEEDED"), "{v}");
        }
    }
    assert_eq!(used_in_db(&url, id).await, (3000, 3000));
    // Both instances answer the key's balance as the database holds it.
    for app in [&a, &b] {
        let q = app.quota(&key).await;
        assert_eq!(
            (q["used"].as_i64(), q["remaining"].as_i64()),
            (Some(3000), Some(0))
        );
    }
    let (_, h) = b.key_get(&key, "/api/v1/usage/history?limit=1").await;
    assert_eq!(h["total"], 3000);

    // Batches are all-or-nothing across instances too: 3 a batch on 3 002 → 1 000 batches.
    let (key2, id2) = b.create_key(json!({"quota": 3002})).await;
    let batch = json!([{"amount": 1}, {"amount": 1}, {"amount": 1}]);
    let res = spread(&[&a, &b], 1500, 128, |app, _| {
        app.client
            .post(app.url("/api/v1/use/batch"))
            .header("X-API-Key", &key2)
            .json(&batch)
    })
    .await;
    assert_eq!(count(&res, 200), 1000);
    assert_eq!(used_in_db(&url, id2).await, (3000, 3000));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_calls_on_a_key_worth_fifty_serve_exactly_fifty() {
    let Some(url) = fresh_pg().await else { return };
    let (a, b) = two(&url).await;
    let (key, id) = a.create_key(json!({"quota": 50})).await;
    let body = json!({"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]});
    let res = spread(&[&a, &b], 160, 64, |app, _| {
        app.client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body)
    })
    .await;
    assert_eq!(count(&res, 200), 50, "{:?}", &res[..3]);
    assert_eq!(count(&res, 429), 110);
    // Every served call paid; nothing was charged twice or given away.
    let (used, history) = used_in_db(&url, id).await;
    assert_eq!((used, history), (50, 50));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotency_key_replayed_on_the_other_instance_charges_once() {
    let Some(url) = fresh_pg().await else { return };
    let (a, b) = two(&url).await;
    let (key, id) = a.create_key(json!({"quota": 100})).await;
    let send = |app: &TestApp, idem: &str| {
        use_req(app, &key, json!({"amount": 7})).header("Idempotency-Key", idem.to_owned())
    };
    let (s1, v1) = status_json(send(&a, "order-1").send().await.unwrap()).await;
    let (s2, v2) = status_json(send(&b, "order-1").send().await.unwrap()).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(v1, v2, "the replay answers the first result");
    assert_eq!(used_in_db(&url, id).await, (7, 7));

    // Each idempotency key sent to both instances at once, 100 keys: each charged once,
    // and both answers of a pair are the same.
    let (open_key, open_id) = a.create_key(json!({})).await;
    let res = spread(&[&a, &b], 200, 64, |app, i| {
        use_req(app, &open_key, json!({"amount": 7}))
            .header("Idempotency-Key", format!("race-{}", i / 2))
    })
    .await;
    assert_eq!(count(&res, 200), 200);
    assert_eq!(used_in_db(&url, open_id).await, (700, 700));
    a.stop().await;
    b.stop().await;
}

/// Polls `f` until it is true or `limit` passes; returns how long it took.
async fn within(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if f().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_edits_on_one_instance_or_the_cli_reach_the_other_within_a_second() {
    let Some(url) = fresh_pg().await else { return };
    let (a, b) = two(&url).await;
    let (key, id) = a.create_key(json!({"quota": 100})).await;
    // B learns the key (a miss falls back to the database) and caches it.
    assert_eq!(b.use_amount(&key, 1).await.0, 200);

    let (s, _) = a
        .admin_post("/admin/keys/disable", json!({"key": id.to_string()}))
        .await;
    assert_eq!(s, 200);
    let took = within(Duration::from_secs(1), async || {
        let (s, v) = b.use_amount(&key, 1).await;
        s == 403 && error_code(&v) == "KEY_DISABLED"
    })
    .await;
    assert!(took.is_some(), "disable on A not refused on B within 1 s");
    let (s, _) = a
        .admin_post("/admin/keys/enable", json!({"key": id.to_string()}))
        .await;
    assert_eq!(s, 200);

    let (s, v) = a
        .admin_post(&format!("/admin/keys/{id}/rotate"), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let new_key = v["key"].as_str().unwrap().to_owned();
    let took = within(Duration::from_secs(1), async || {
        b.use_amount(&key, 1).await.0 == 401 && b.use_amount(&new_key, 1).await.0 == 200
    })
    .await;
    assert!(took.is_some(), "rotation on A not seen by B within 1 s");

    // The CLI edits the same database: both instances refuse within 1 s.
    let out = tokio::process::Command::new(bin())
        .args(["keys", "disable", &id.to_string()])
        .env("DATABASE_URL", &url)
        .env("DATA_DIR", a.dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = within(Duration::from_secs(1), async || {
        a.use_amount(&new_key, 1).await.0 == 403 && b.use_amount(&new_key, 1).await.0 == 403
    })
    .await;
    assert!(took.is_some(), "a CLI edit not seen by both within 1 s");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daily_refill_across_midnight_applies_once_across_both() {
    let Some(url) = fresh_pg().await else { return };
    let (a, b) = two(&url).await;
    // Both clocks at 23:59:30 UTC of some day.
    let day = 86_400_000i64;
    let t0 = (a.clock.now_ms() / day + 3) * day - 30_000;
    a.clock.set_ms(t0);
    b.clock.set_ms(t0);
    let (key, id) = a
        .create_key(json!({"quota": 100, "refill": {"interval": "daily", "amount": 100}}))
        .await;
    let res = spread(&[&a, &b], 140, 32, |app, _| {
        use_req(app, &key, json!({"amount": 1}))
    })
    .await;
    assert_eq!(count(&res, 200), 100);
    // Past midnight on both: the refill happens once, whoever consumes first.
    a.clock.set_ms(t0 + 60_000);
    b.clock.set_ms(t0 + 60_000);
    let res = spread(&[&a, &b], 140, 32, |app, _| {
        use_req(app, &key, json!({"amount": 1}))
    })
    .await;
    assert_eq!(count(&res, 200), 100, "one refill of 100, not two");
    let (used, _) = used_in_db(&url, id).await;
    assert_eq!(used, 100);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daily_requests_and_rpm_hold_across_instances() {
    let Some(url) = fresh_pg().await else { return };
    let (a, b) = two(&url).await;
    // 10 s into a clock minute on both, so every call below falls in one minute.
    let minute = 60_000i64;
    let t0 = (a.clock.now_ms() / minute + 2) * minute + 10_000;
    a.clock.set_ms(t0);
    b.clock.set_ms(t0);
    let body = json!({"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]});
    let chat = |key: String| {
        let body = body.clone();
        move |app: &TestApp, _| {
            app.client
                .post(app.url("/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&body)
        }
    };
    let (daily_key, _) = a
        .create_key(json!({"quota": 1000, "limits": {"dailyRequests": 30}}))
        .await;
    let res = spread(&[&a, &b], 90, 16, chat(daily_key)).await;
    assert_eq!(
        count(&res, 200),
        30,
        "dailyRequests is exact across instances"
    );
    assert!(res.iter().all(|(s, _)| *s == 200 || *s == 429));

    let (rpm_key, _) = a
        .create_key(json!({"quota": 1000, "limits": {"rpm": 20}}))
        .await;
    let res = spread(&[&a, &b], 60, 16, chat(rpm_key.clone())).await;
    // Within one clock minute the instances together admit exactly `rpm` (the stated
    // bound is 2 × rpm over any sliding 60 s, never more than `rpm` in a clock minute).
    assert_eq!(count(&res, 200), 20);
    // The next clock minute opens a new count (5 s later, past each instance's own
    // sliding minute too).
    a.clock.set_ms(t0 + minute + 5_000);
    b.clock.set_ms(t0 + minute + 5_000);
    let res = spread(&[&a, &b], 30, 8, chat(rpm_key)).await;
    assert_eq!(count(&res, 200), 20);
    a.stop().await;
    b.stop().await;
}
