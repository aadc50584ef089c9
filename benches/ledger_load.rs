//! Load benchmark of durable `POST /api/v1/use` beside a bare `/healthz` baseline, both
//! against the real release binary on loopback, in the same run.
//!
//!   cargo bench --bench ledger_load                 # 64 connections, 10 s per scenario
//!   BENCH_SECS=5 BENCH_CONNS=32 cargo bench --bench ledger_load
//!   BENCH_PG_URL=postgres://… cargo bench --bench ledger_load   # + one and two instances
//!                                                              #   on a fresh PG database
//!
//! Every request is bounded by the duration; only 127.0.0.1 is contacted.
#![expect(clippy::unwrap_used, reason = "a benchmark stops at the first failure")]

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const ADMIN: &str = "bench-admin-token";

struct Scenario {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    body: &'static str,
    /// One key per connection, or one key shared by every connection.
    keys: Vec<String>,
    /// The servers the connections go to, round robin.
    ports: Vec<u16>,
}

struct Result {
    name: &'static str,
    ops: u64,
    /// Every 200, warm-up included (to compare with the counters).
    all_ok: u64,
    errors: u64,
    secs: f64,
    hist: Histogram<u64>,
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn connection_loop(
    port: u16,
    s: Arc<Scenario>,
    key: String,
    stop: Arc<AtomicBool>,
    measure: Arc<AtomicBool>,
) -> (u64, u64, u64, Histogram<u64>) {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let (mut ops, mut errors, mut all_ok) = (0u64, 0u64, 0u64);
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    while !stop.load(Ordering::Relaxed) {
        let mut req = Request::builder()
            .method(s.method)
            .uri(s.path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json");
        if !key.is_empty() {
            req = req.header("x-api-key", &key);
        }
        let req = req
            .body(Full::new(Bytes::from_static(s.body.as_bytes())))
            .unwrap();
        let t0 = Instant::now();
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(_) => {
                errors += 1;
                break;
            }
        };
        let ok = resp.status().is_success();
        let _ = resp.into_body().collect().await;
        all_ok += u64::from(ok);
        let us = t0.elapsed().as_micros() as u64;
        if measure.load(Ordering::Relaxed) {
            if ok {
                ops += 1;
                hist.record(us.max(1)).unwrap();
            } else {
                errors += 1;
            }
        }
    }
    (ops, errors, all_ok, hist)
}

async fn run(s: Scenario, conns: usize, warmup: Duration, secs: Duration) -> Result {
    let s = Arc::new(s);
    let stop = Arc::new(AtomicBool::new(false));
    let measure = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for i in 0..conns {
        let key = if s.keys.is_empty() {
            String::new()
        } else {
            s.keys[i % s.keys.len()].clone()
        };
        handles.push(tokio::spawn(connection_loop(
            s.ports[i % s.ports.len()],
            s.clone(),
            key,
            stop.clone(),
            measure.clone(),
        )));
    }
    tokio::time::sleep(warmup).await;
    measure.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(secs).await;
    measure.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let (mut ops, mut errors, mut all_ok) = (0, 0, 0);
    for h in handles {
        let (o, e, a, hh) = h.await.unwrap();
        ops += o;
        errors += e;
        all_ok += a;
        hist.add(hh).unwrap();
    }
    Result {
        name: s.name,
        ops,
        all_ok,
        errors,
        secs: elapsed,
        hist,
    }
}

async fn create_keys(port: u16, n: usize) -> Vec<String> {
    create_keys_with(port, n, 1_000_000_000_000).await
}

async fn create_keys_with(port: u16, n: usize, quota: i64) -> Vec<String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let body = format!(r#"{{"prefix":"bench","quota":{quota},"count":{n}}}"#);
    let req = Request::post("/admin/keys")
        .header("host", "127.0.0.1")
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    if n == 1 {
        vec![v["key"].as_str().unwrap().to_owned()]
    } else {
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["key"].as_str().unwrap().to_owned())
            .collect()
    }
}

async fn used_total(port: u16, key: &str) -> i64 {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/api/v1/quota")
        .header("host", "127.0.0.1")
        .header("x-api-key", key)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["used"].as_i64().unwrap()
}

fn main() {
    // cargo passes `--bench`; nothing to parse.
    let conns = env_num("BENCH_CONNS", 64) as usize;
    let secs = Duration::from_secs(env_num("BENCH_SECS", 10));
    let warmup = Duration::from_secs(env_num("BENCH_WARMUP_SECS", 2));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // BENCH_PORT: load a server started by hand (with ADMIN_TOKEN=bench-admin-token), e.g.
    // to profile it; otherwise the release binary is started on a free port.
    let (port, mut server) = match std::env::var("BENCH_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
    {
        Some(port) => (port, None),
        None => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = std::process::Command::new(env!("CARGO_BIN_EXE_quota-proxy"))
                .args(["serve", "--port", &port.to_string(), "--data-dir"])
                .arg(dir.path())
                .env("ADMIN_TOKEN", ADMIN)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            (port, Some(child))
        }
    };

    let pg = std::env::var("BENCH_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .map(|u| start_pg_instances(&rt, &u));

    rt.block_on(async {
        let mut all = vec![port];
        all.extend(pg.iter().flat_map(|p| p.ports.clone()));
        for p in all {
            for _ in 0..200 {
                if TcpStream::connect(("127.0.0.1", p)).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let many = create_keys(port, conns).await;
        let one = create_keys(port, 1).await;
        let scenarios = vec![
            Scenario {
                name: "GET /healthz (baseline)",
                method: "GET",
                path: "/healthz",
                body: "",
                keys: vec![],
                ports: vec![port],
            },
            Scenario {
                name: "POST /api/v1/use, a key per connection",
                method: "POST",
                path: "/api/v1/use",
                body: r#"{"amount":1,"reason":"bench"}"#,
                keys: many.clone(),
                ports: vec![port],
            },
            Scenario {
                name: "POST /api/v1/use, one shared key",
                method: "POST",
                path: "/api/v1/use",
                body: r#"{"amount":1,"reason":"bench"}"#,
                keys: one.clone(),
                ports: vec![port],
            },
        ];
        // BENCH_ONLY=use runs only the scenarios whose name contains it (the baseline always).
        let only = std::env::var("BENCH_ONLY").unwrap_or_default();
        let mut results = Vec::new();
        for (i, s) in scenarios.into_iter().enumerate() {
            if i > 0 && !s.name.contains(only.as_str()) {
                continue;
            }
            results.push(run(s, conns, warmup, secs).await);
        }
        let mut pg_checks = Vec::new();
        if let Some(pg) = &pg {
            let (a, b) = (pg.ports[0], pg.ports[1]);
            let one_a = create_keys(a, 1).await;
            let many_a = create_keys(a, conns).await;
            let one_ab = create_keys(a, 1).await;
            let many_ab = create_keys(a, conns).await;
            let use_body = r#"{"amount":1,"reason":"bench"}"#;
            for (name, keys, ports) in [
                (
                    "PostgreSQL, one instance: /use, a key per connection",
                    many_a,
                    vec![a],
                ),
                (
                    "PostgreSQL, one instance: /use, one shared key",
                    one_a.clone(),
                    vec![a],
                ),
                (
                    "PostgreSQL, two instances: /use, a key per connection",
                    many_ab,
                    vec![a, b],
                ),
                (
                    "PostgreSQL, two instances: /use, one shared key",
                    one_ab.clone(),
                    vec![a, b],
                ),
            ] {
                let r = run(
                    Scenario {
                        name,
                        method: "POST",
                        path: "/api/v1/use",
                        body: use_body,
                        keys,
                        ports,
                    },
                    conns,
                    warmup,
                    secs,
                )
                .await;
                results.push(r);
            }
            let shared = results.last().map(|r| r.all_ok).unwrap_or(0);
            let used = used_total(b, &one_ab[0]).await;
            pg_checks.push(format!(
                "two instances, shared key: {shared} acknowledged, used = {used} in PostgreSQL"
            ));
            // Overdraft check: a key worth 20 000 drained by both instances at once.
            let small = create_keys_with(a, 1, 20_000).await;
            let r = run(
                Scenario {
                    name: "drain",
                    method: "POST",
                    path: "/api/v1/use",
                    body: use_body,
                    keys: small.clone(),
                    ports: vec![a, b],
                },
                conns,
                Duration::from_millis(0),
                Duration::from_secs(3),
            )
            .await;
            let used = used_total(a, &small[0]).await;
            pg_checks.push(format!(
                "overdraft check: quota 20 000 drained from both instances: {} succeeded, \
                 used = {used} ({})",
                r.all_ok,
                if r.all_ok == 20_000 && used == 20_000 {
                    "exact, no overdraft"
                } else {
                    "MISMATCH"
                }
            ));
        }
        let base_ops = results[0].ops as f64 / results[0].secs;
        println!();
        println!(
            "{conns} connections, {}s measured after {}s warm-up, SQLite synchronous=FULL",
            secs.as_secs(),
            warmup.as_secs()
        );
        println!("| scenario | ops/s | p50 ms | p99 ms | p99.9 ms | errors | vs baseline |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for r in &results {
            let ops = r.ops as f64 / r.secs;
            println!(
                "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.0} % |",
                r.name,
                ops,
                r.hist.value_at_quantile(0.50) as f64 / 1000.0,
                r.hist.value_at_quantile(0.99) as f64 / 1000.0,
                r.hist.value_at_quantile(0.999) as f64 / 1000.0,
                r.errors,
                100.0 * ops / base_ops
            );
        }
        // Sanity: the shared key's counter matches what was acknowledged (plus warm-up).
        let used = used_total(port, &one[0]).await;
        println!("\nshared key used = {used} (every acknowledged consume, warm-up included)");
        for c in pg_checks {
            println!("{c}");
        }
    });
    if let Some(server) = server.as_mut() {
        let _ = server.kill();
        let _ = server.wait();
    }
    if let Some(mut pg) = pg {
        for c in &mut pg.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Two instances of the release binary on one fresh PostgreSQL database.
struct PgInstances {
    ports: Vec<u16>,
    children: Vec<std::process::Child>,
    _dirs: Vec<tempfile::TempDir>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_pg_instances(rt: &tokio::runtime::Runtime, admin_url: &str) -> PgInstances {
    let name = format!("qp_bench_{}", std::process::id());
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(admin_url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let mut out = PgInstances {
        ports: Vec::new(),
        children: Vec::new(),
        _dirs: Vec::new(),
    };
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_quota-proxy"))
            .args(["serve", "--port", &port.to_string(), "--data-dir"])
            .arg(dir.path())
            .env("ADMIN_TOKEN", ADMIN)
            .env("DATABASE_URL", &url)
            .env("MONITOR_ROLLUP_DAYS", "0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        out.ports.push(port);
        out.children.push(child);
        out._dirs.push(dir);
    }
    out
}
