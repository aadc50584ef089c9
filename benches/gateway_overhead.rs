//! Gateway overhead, the way gateways publish it: latency through the gateway minus latency
//! direct to the same local mock upstream, at a constant arrival rate (open loop, so a slow
//! answer cannot hold back the next request), non-streaming and streaming, with quota
//! and request logging on. Plus closed-loop throughput, gateway vs direct.
//!
//!   cargo bench --bench gateway_overhead
//!   BENCH_SECS=5 BENCH_RATES=500,2000 cargo bench --bench gateway_overhead
//!
//! Only 127.0.0.1 is contacted; every phase is bounded in time.
#![expect(clippy::unwrap_used, reason = "a benchmark stops at the first failure")]

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const ADMIN: &str = "bench-admin-token";
type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Target {
    name: &'static str,
    url: String,
    key: Option<String>,
}

fn body(stream: bool) -> Bytes {
    let b = serde_json::json!({
        "model": "mock-chat",
        "stream": stream,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "benchmark request"}],
    });
    Bytes::from(b.to_string())
}

/// One request; returns the time to the whole answer, or None on failure.
async fn one(client: &HttpClient, t: &Target, payload: Bytes) -> Option<Duration> {
    let mut req = Request::post(&t.url).header("content-type", "application/json");
    if let Some(k) = &t.key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let t0 = Instant::now();
    let resp = client
        .request(req.body(Full::new(payload)).ok()?)
        .await
        .ok()?;
    let ok = resp.status().is_success();
    resp.into_body().collect().await.ok()?;
    ok.then(|| t0.elapsed())
}

struct Stats {
    hist: Histogram<u64>,
    errors: u64,
    sent: u64,
}

/// Sends `rate` requests a second for `secs`, each on its own task.
async fn open_loop(
    client: &HttpClient,
    t: Arc<Target>,
    stream: bool,
    rate: u64,
    secs: u64,
) -> Stats {
    let hist = Arc::new(std::sync::Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let errors = Arc::new(AtomicU64::new(0));
    let payload = body(stream);
    let total = rate * secs;
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let (c, t, h, e, p) = (
            client.clone(),
            t.clone(),
            hist.clone(),
            errors.clone(),
            payload.clone(),
        );
        tasks.push(tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(10), one(&c, &t, p)).await {
                Ok(Some(d)) => {
                    let _ = h.lock().unwrap().record(d.as_micros() as u64);
                }
                _ => {
                    e.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let hist = hist.lock().unwrap().clone();
    Stats {
        hist,
        errors: errors.load(Ordering::Relaxed),
        sent: total,
    }
}

/// Requests per second with `conns` requests always in flight.
async fn closed_loop(client: &HttpClient, t: Arc<Target>, conns: usize, secs: u64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let payload = body(false);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (c, t, s, d, p) = (
            client.clone(),
            t.clone(),
            stop.clone(),
            done.clone(),
            payload.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if one(&c, &t, p.clone()).await.is_some() {
                    d.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = done.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let n = done.load(Ordering::Relaxed) - before;
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    rate
}

fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Child {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_quota-proxy"));
    c.args(args).stdout(Stdio::null()).env("RUST_LOG", "warn");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

async fn wait_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("port {port} never opened");
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn main() {
    let secs = env_num("BENCH_SECS", 10);
    let rates: Vec<u64> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| "500,2000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (up_port, gw_port) = (free_port(), free_port());
    let config = dir.path().join("quota-proxy.toml");
    std::fs::write(
        &config,
        format!("[[upstreams]]\nname = \"local-mock\"\nbase_url = \"http://127.0.0.1:{up_port}/v1\"\napi_key = \"sk-bench\"\n"),
    )
    .unwrap();
    let mut upstream = spawn(&["mock-upstream", "--port", &up_port.to_string()], &[]);
    let mut gateway = spawn(
        &[
            "serve",
            "--port",
            &gw_port.to_string(),
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        &[("ADMIN_TOKEN", ADMIN)],
    );

    rt.block_on(async {
        wait_port(up_port).await;
        wait_port(gw_port).await;
        let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(4096).build_http();
        let req = Request::post(format!("http://127.0.0.1:{gw_port}/admin/keys"))
            .header("authorization", format!("Bearer {ADMIN}"))
            .body(Full::new(Bytes::from_static(br#"{"quota": 1000000000000}"#)))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        let key = v["key"].as_str().unwrap().to_owned();
        let direct = Arc::new(Target { name: "direct", url: format!("http://127.0.0.1:{up_port}/v1/chat/completions"), key: None });
        let through = Arc::new(Target { name: "gateway", url: format!("http://127.0.0.1:{gw_port}/v1/chat/completions"), key: Some(key) });

        // Warm both paths (connections, caches).
        open_loop(&client, direct.clone(), false, 200, 1).await;
        open_loop(&client, through.clone(), false, 200, 1).await;

        println!("\nOpen loop, {secs}s per cell; latency = time to the whole answer (ms)");
        println!("| mode | rate/s | path | p50 | p99 | p99.9 | errors | p50 overhead | p99 overhead |");
        println!("|---|---:|---|---:|---:|---:|---:|---:|---:|");
        for stream in [false, true] {
            for &rate in &rates {
                let d = open_loop(&client, direct.clone(), stream, rate, secs).await;
                let g = open_loop(&client, through.clone(), stream, rate, secs).await;
                let mode = if stream { "stream" } else { "non-stream" };
                for (s, t) in [(&d, &direct), (&g, &through)] {
                    let over = if t.name == "gateway" {
                        format!(
                            "{:.3} | {:.3}",
                            ms(g.hist.value_at_quantile(0.5)) - ms(d.hist.value_at_quantile(0.5)),
                            ms(g.hist.value_at_quantile(0.99)) - ms(d.hist.value_at_quantile(0.99))
                        )
                    } else {
                        " | ".to_owned()
                    };
                    println!(
                        "| {mode} | {rate} | {} | {:.3} | {:.3} | {:.3} | {}/{} | {over} |",
                        t.name,
                        ms(s.hist.value_at_quantile(0.5)),
                        ms(s.hist.value_at_quantile(0.99)),
                        ms(s.hist.value_at_quantile(0.999)),
                        s.errors,
                        s.sent,
                    );
                }
            }
        }
        let conns = env_num("BENCH_CONNS", 64) as usize;
        let tput_secs = secs.min(5);
        let d = closed_loop(&client, direct.clone(), conns, tput_secs).await;
        let g = closed_loop(&client, through.clone(), conns, tput_secs).await;
        println!("\nClosed loop, {conns} in flight, non-stream: direct {d:.0} req/s, gateway {g:.0} req/s ({:.0} % of direct)", 100.0 * g / d);
    });
    let _ = gateway.kill();
    let _ = upstream.kill();
    let _ = gateway.wait();
    let _ = upstream.wait();
}
