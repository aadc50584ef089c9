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
    // Every served call paid; nothing was charged twice or given away. (Settlements commit
    // off the response path: wait for the last of them.)
    let mut got = used_in_db(&url, id).await;
    for _ in 0..100 {
        if got.1 >= 50 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        got = used_in_db(&url, id).await;
    }
    assert_eq!(got, (50, 50));
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

/// Creates a key on a server started as a binary; returns (full key, id).
async fn create_key_at(base: &str, quota: i64) -> (String, i64) {
    let v: Value = http_client()
        .post(format!("{base}/admin/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({ "quota": quota }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        v["key"].as_str().unwrap().to_owned(),
        v["id"].as_i64().unwrap(),
    )
}

/// Counts of a load run: acknowledged consumes, and every other status seen.
#[derive(Default, Debug)]
struct Tally {
    acked: i64,
    unavailable: i64,
    with_retry_after: i64,
    other: Vec<u16>,
}

/// `width` workers consuming 1 from `key` on `bases` (round robin) until `stop` is set.
fn load(
    bases: Vec<String>,
    key: String,
    width: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(usize, Tally)>> {
    tokio::spawn(async move {
        let client = http_client();
        let mut workers = Vec::new();
        for w in 0..width {
            let (client, key, stop) = (client.clone(), key.clone(), stop.clone());
            let base = bases[w % bases.len()].clone();
            let which = w % bases.len();
            workers.push(tokio::spawn(async move {
                let mut t = Tally::default();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = client
                        .post(format!("{base}/api/v1/use"))
                        .header("X-API-Key", &key)
                        .json(&json!({"amount": 1}))
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => t.acked += 1,
                        Ok(r) if r.status() == 503 => {
                            t.unavailable += 1;
                            if r.headers().contains_key("retry-after") {
                                t.with_retry_after += 1;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Ok(r) => t.other.push(r.status().as_u16()),
                        // The instance is gone (killed): this worker stops.
                        Err(_) => break,
                    }
                }
                (which, t)
            }));
        }
        let mut out = Vec::new();
        for w in workers {
            out.push(w.await.unwrap());
        }
        out
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_one_instance_under_load_loses_and_duplicates_nothing() {
    let Some(url) = fresh_pg().await else { return };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env = [("DATABASE_URL", url.as_str())];
    let mut a = BinaryServer::start(da.path(), free_port(), &env).await;
    let b = BinaryServer::start(db.path(), free_port(), &env).await;
    let (key, id) = create_key_at(&b.base, 1_000_000).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let width = 16;
    let run = load(
        vec![a.base.clone(), b.base.clone()],
        key.clone(),
        width,
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.child.start_kill().unwrap();
    a.child.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let tallies = run.await.unwrap();
    let acked: i64 = tallies.iter().map(|(_, t)| t.acked).sum();
    let acked_b: i64 = tallies
        .iter()
        .filter(|(w, _)| *w == 1)
        .map(|(_, t)| t.acked)
        .sum();
    assert!(acked_b > 0 && acked > acked_b, "{tallies:?}");
    for (_, t) in &tallies {
        assert!(t.other.is_empty(), "{tallies:?}");
    }
    let (used, history) = used_in_db(&url, id).await;
    // Every acknowledged consume is there; only those in flight on A when it died
    // (at most one per A's worker) may have committed unacknowledged; nothing twice.
    assert!(used >= acked, "lost: used {used} < acknowledged {acked}");
    assert!(
        used - acked <= (width / 2) as i64,
        "used {used}, acknowledged {acked}"
    );
    assert_eq!(history, used, "history and counter agree (no duplicate)");
    drop(b);
}

/// A PostgreSQL server of the test's own, to stop and start under load.
struct PrivatePg {
    dir: tempfile::TempDir,
    ctl: std::path::PathBuf,
    port: u16,
}

impl PrivatePg {
    fn start() -> Option<Self> {
        let bindir = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()?;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if is_root() {
            std::process::Command::new("chown")
                .args(["postgres", &dir.path().to_string_lossy()])
                .status()
                .unwrap();
        }
        let pg = Self {
            ctl: bindir.join("pg_ctl"),
            port: free_port(),
            dir,
        };
        let ok = pg
            .run(
                &bindir.join("initdb"),
                &[
                    "-D",
                    &data.to_string_lossy(),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                ],
            )
            .success();
        assert!(ok, "initdb failed");
        pg.up();
        Some(pg)
    }

    fn run(&self, prog: &std::path::Path, args: &[&str]) -> std::process::ExitStatus {
        let mut cmd = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(prog);
            c
        } else {
            std::process::Command::new(prog)
        };
        cmd.args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
    }

    fn up(&self) {
        let data = self.dir.path().join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        let ok = self
            .run(
                &self.ctl,
                &[
                    "-D",
                    &data.to_string_lossy(),
                    "-l",
                    &log.to_string_lossy(),
                    "-w",
                    "-o",
                    &opts,
                    "start",
                ],
            )
            .success();
        assert!(ok, "pg_ctl start failed");
    }

    fn down(&self) {
        let data = self.dir.path().join("data");
        self.run(
            &self.ctl,
            &["-D", &data.to_string_lossy(), "-m", "fast", "-w", "stop"],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        self.run(
            &self.ctl,
            &["-D", &data.to_string_lossy(), "-m", "immediate", "stop"],
        );
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarting_under_load_gives_503_then_recovers_without_loss() {
    // Needs the PostgreSQL server binaries scripts/test.sh installs.
    if fresh_pg().await.is_none() {
        return;
    }
    let pg = PrivatePg::start().expect("PostgreSQL server binaries");
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("DB_ACQUIRE_TIMEOUT_MS", "1000"),
    ];
    let server = BinaryServer::start(dir.path(), free_port(), &env).await;
    let client = http_client();
    let (key, id) = create_key_at(&server.base, 1_000_000).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let run = load(vec![server.base.clone()], key.clone(), 8, stop.clone());
    tokio::time::sleep(Duration::from_millis(800)).await;
    pg.down();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = client
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "/readyz reflects the database");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pg.up();
    // Service resumes by itself: consumes succeed again within 15 s.
    let back = within(Duration::from_secs(15), async || {
        let r = client
            .post(format!("{}/api/v1/use", server.base))
            .header("X-API-Key", &key)
            .json(&json!({"amount": 1}))
            .send()
            .await
            .unwrap();
        r.status() == 200
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let tallies = run.await.unwrap();
    assert!(back.is_some(), "no recovery: {}", server.stderr());
    let mut t = Tally::default();
    for (_, x) in tallies {
        t.acked += x.acked;
        t.unavailable += x.unavailable;
        t.with_retry_after += x.with_retry_after;
        t.other.extend(x.other);
    }
    assert!(t.unavailable > 0, "no 503 while PostgreSQL was down: {t:?}");
    assert_eq!(
        t.unavailable, t.with_retry_after,
        "every 503 has Retry-After"
    );
    assert!(t.other.is_empty(), "{t:?}");
    // The probe consume after recovery counts too.
    let acked = t.acked + 1;
    let (used, history) = used_in_db(&url, id).await;
    assert!(used >= acked, "lost: used {used} < acknowledged {acked}");
    // Only a commit whose answer was lost with the server may be in doubt.
    assert!(used - acked <= 8, "used {used}, acknowledged {acked}");
    assert_eq!(history, used);
    let ready = client
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_to_copies_a_sqlite_deployment_and_keys_still_work() {
    let Some(url) = fresh_pg().await else { return };
    let app = spawn_app().await;
    let (key, id) = app
        .create_key(json!({"quota": 500, "name": "迁移", "limits": {"rpm": 100}}))
        .await;
    let (key2, _) = app.create_key(json!({"quota": 10})).await;
    for amount in [3, 4, 5] {
        assert_eq!(app.use_amount(&key, amount).await.0, 200);
    }
    assert_eq!(app.mock_chat(&key).await.status(), 200);
    let (s, _) = app
        .admin_post("/admin/keys/disable", json!({"key": key2}))
        .await;
    assert_eq!(s, 200);
    let before = app.quota(&key).await;
    let dir = app.stop().await;
    let db = dir.path().join("qp.db");

    let out = tokio::process::Command::new(bin())
        .args(["migrate", "--to", &url, "--db"])
        .arg(&db)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("every count and sum matches"), "{stderr}");
    for table in [
        "keys",
        "usage_events",
        "request_log",
        "audit",
        "idempotency",
    ] {
        assert!(stdout.contains(table), "{stdout}");
    }
    assert!(
        !stdout.contains(&key) && !stderr.contains(&key),
        "no secret printed"
    );

    // A second copy into the now populated database is refused.
    let again = tokio::process::Command::new(bin())
        .args(["migrate", "--to", &url, "--db"])
        .arg(&db)
        .output()
        .await
        .unwrap();
    assert!(!again.status.success());

    let pg = spawn_app_with(|c| c.database_url = Some(url.clone())).await;
    let after = pg.quota(&key).await;
    assert_eq!(
        after, before,
        "same counters, and the key authenticates by its hash"
    );
    let (s, v) = pg.use_amount(&key2, 1).await;
    assert_eq!((s, error_code(&v)), (403, "KEY_DISABLED"));
    let (_, h) = pg.key_get(&key, "/api/v1/usage/history").await;
    assert_eq!(h["total"], 4, "three consumes and the gateway call");
    let (_, k) = pg.admin_get(&format!("/admin/keys/{id}")).await;
    assert_eq!(
        (k["name"].clone(), k["limits"]["rpm"].clone()),
        (json!("迁移"), json!(100))
    );
    // New rows continue after the copied ids.
    let (_, id3) = pg.create_key(json!({"quota": 1})).await;
    assert!(id3 > id);
    assert_eq!(pg.use_amount(&key, 1).await.0, 200);
    pg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cooldown_claims_on_postgres_have_exactly_one_winner() {
    use quota_proxy::store::AlertStore;
    use quota_proxy::store::postgres::{PgOptions, PgStore};
    let Some(url) = fresh_pg().await else { return };
    let store = std::sync::Arc::new(PgStore::open(&url, PgOptions::default()).await.unwrap());
    let subjects: Vec<String> = (0..5).map(|i| format!("token:{i}")).collect();
    for round in 0..5i64 {
        let now = round * 1000;
        let mut claims = Vec::new();
        for _ in 0..16 {
            let (s, subjects) = (store.clone(), subjects.clone());
            claims.push(tokio::spawn(async move {
                s.claim_cooldowns("burst", &subjects, now, now + 1000)
                    .await
                    .unwrap()
            }));
        }
        let mut won: Vec<String> = Vec::new();
        for c in claims {
            won.extend(c.await.unwrap());
        }
        won.sort();
        assert_eq!(
            won, subjects,
            "round {round}: each subject claimed exactly once"
        );
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_concurrent_and_tpm_hold_per_instance_within_the_stated_bound() {
    use std::sync::atomic::Ordering;
    let Some(url) = fresh_pg().await else { return };
    let up = crate::upstream_mock::MockUpstream::start().await;
    let tweak = |c: &mut quota_proxy::config::Config| {
        c.database_url = Some(url.clone());
        c.gateway.upstreams = vec![crate::gateway::http_upstream("u", &up.url, "k")];
    };
    let a = spawn_app_with(tweak).await;
    let b = spawn_app_with(tweak).await;
    let chat = |app: &TestApp, key: &str, stream: bool| {
        app.client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": "m", "stream": stream, "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };

    // maxConcurrent 1 with two instances: one open call on each, never a third (N × 1).
    up.state.chunk_delay_ms.store(150, Ordering::SeqCst);
    let (key, _) = a
        .create_key(json!({"quota": 1000, "limits": {"maxConcurrent": 1}}))
        .await;
    let mut on_a = chat(&a, &key, true).await.unwrap();
    on_a.chunk().await.unwrap();
    assert_eq!(chat(&a, &key, false).await.unwrap().status(), 429);
    let mut on_b = chat(&b, &key, true).await.unwrap();
    assert_eq!(on_b.status(), 200, "the other instance has its own slot");
    on_b.chunk().await.unwrap();
    assert_eq!(chat(&b, &key, false).await.unwrap().status(), 429);
    assert_eq!(chat(&a, &key, false).await.unwrap().status(), 429);
    while on_a.chunk().await.unwrap().is_some() {}
    while on_b.chunk().await.unwrap().is_some() {}
    up.state.chunk_delay_ms.store(0, Ordering::SeqCst);

    // tpm: each instance admits until its own minute is full; together at most N × tpm.
    let tpm = 120u64;
    let (key, _) = a
        .create_key(json!({"quota": 100000, "limits": {"tpm": tpm}}))
        .await;
    // A call is admitted on its estimate (prompt estimate + max_tokens) and counted with its
    // actual usage, so one instance may pass `tpm` by at most one call's excess.
    let mut tokens = [0u64; 2];
    let mut largest = 0u64;
    for (i, app) in [&a, &b].into_iter().enumerate() {
        for _ in 0..50 {
            let r = chat(app, &key, false).await.unwrap();
            if r.status() == 429 {
                break;
            }
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            let n = v["usage"]["total_tokens"].as_u64().unwrap();
            tokens[i] += n;
            largest = largest.max(n);
        }
        assert!(tokens[i] > 0, "instance {i} admitted nothing");
        assert!(tokens[i] <= tpm + largest, "instance {i}: {tokens:?}");
    }
    assert!(tokens[0] + tokens[1] <= 2 * (tpm + largest), "{tokens:?}");
    a.stop().await;
    b.stop().await;
}
