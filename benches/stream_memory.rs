//! Memory a held-open stream costs the gateway (issue #26: "RSS with 1 000 concurrent slow
//! streams … ≤ 64 KiB a stream above idle"). The real release binary in front of the
//! built-in mock upstream serving slow streams (`--chunk-delay-ms`); the gateway's resident
//! set (`/proc/<pid>/status` `VmRSS`) idle after a warm-up, then with every stream open
//! and past its first chunk, then after they all ended.
//!
//!   cargo bench --bench stream_memory                      # 1 000 streams
//!   BENCH_STREAMS=2000 BENCH_CHUNK_MS=100 cargo bench --bench stream_memory
//!
//! Only 127.0.0.1 is contacted; every stream ends by itself (25 chunks) and the whole run is
//! bounded by a timeout.
#![expect(clippy::unwrap_used, reason = "a benchmark stops at the first failure")]

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
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

/// The process's resident set in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

async fn post(
    client: &HttpClient,
    url: &str,
    auth: &str,
    body: String,
) -> hyper::Response<hyper::body::Incoming> {
    let req = Request::post(url)
        .header("authorization", format!("Bearer {auth}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    client.request(req).await.unwrap()
}

/// `n` streams at once; returns when every one has its first chunk (`first` counts them)
/// and hands back the tasks that read them to the end.
async fn open_streams(
    client: &HttpClient,
    url: &str,
    key: &str,
    n: usize,
    first: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let body = r#"{"model":"mock-chat","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"count slowly"}]}"#;
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (c, u, k, f, d) = (
            client.clone(),
            url.to_owned(),
            key.to_owned(),
            first.clone(),
            done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let resp = post(&c, &u, &k, body.to_owned()).await;
            assert_eq!(resp.status(), 200);
            let mut b = resp.into_body();
            let mut seen = false;
            while let Some(frame) = b.frame().await {
                if frame.unwrap().data_ref().is_some_and(|d| !d.is_empty()) && !seen {
                    seen = true;
                    f.fetch_add(1, Ordering::Relaxed);
                }
            }
            d.fetch_add(1, Ordering::Relaxed);
        }));
    }
    tasks
}

async fn until(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what} not reached in {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn main() {
    let n = env_num("BENCH_STREAMS", 1000) as usize;
    let chunk_ms = env_num("BENCH_CHUNK_MS", 200);
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
        format!("[[upstreams]]\nname = \"slow-mock\"\nbase_url = \"http://127.0.0.1:{up_port}/v1\"\napi_key = \"sk-bench\"\n"),
    )
    .unwrap();
    let mut upstream = spawn(
        &[
            "mock-upstream",
            "--port",
            &up_port.to_string(),
            "--chunk-delay-ms",
            &chunk_ms.to_string(),
        ],
        &[],
    );
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
    let pid = gateway.id();
    rt.block_on(async {
        wait_port(up_port).await;
        wait_port(gw_port).await;
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(n)
            .build_http();
        let resp = post(&client, &format!("http://127.0.0.1:{gw_port}/admin/keys"), ADMIN, r#"{"quota": 1000000000000}"#.into()).await;
        let v: serde_json::Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        let key = v["key"].as_str().unwrap().to_owned();
        let url = format!("http://127.0.0.1:{gw_port}/v1/chat/completions");
        let cold = rss_kib(pid);
        // Warm-up: a round of streams as wide as the measured one, so pools, buffers and the
        // allocator's arenas already grew once; idle is measured after it ended.
        let (first, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let warm = open_streams(&client, &url, &key, n, first.clone(), done.clone()).await;
        for t in warm {
            t.await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = rss_kib(pid);
        let (first, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let t0 = Instant::now();
        let tasks = open_streams(&client, &url, &key, n, first.clone(), done.clone()).await;
        until("every stream's first chunk", Duration::from_secs(60), || first.load(Ordering::Relaxed) >= n).await;
        let opened_in = t0.elapsed();
        // Sample while they are all open (none ends before 25 chunks × the delay).
        let mut peak = 0;
        while done.load(Ordering::Relaxed) == 0 && t0.elapsed() < Duration::from_millis(chunk_ms * 20) {
            peak = peak.max(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let open_now = n - done.load(Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_kib(pid);
        println!("\n{n} concurrent streams ({chunk_ms} ms a chunk, 25 chunks): all open in {opened_in:.1?}, {open_now} still open at the last sample");
        println!("| gateway RSS | KiB |");
        println!("|---|---:|");
        println!("| started, no stream yet | {cold} |");
        println!("| idle (after a warm-up round of {n}) | {idle} |");
        println!("| with {n} streams open (peak) | {peak} |");
        println!("| after they ended | {after} |");
        println!("| per open stream above idle | {:.1} |", (peak.saturating_sub(idle)) as f64 / n as f64);
        println!("| per stream, peak above the cold start | {:.1} |", (peak.saturating_sub(cold)) as f64 / n as f64);
        println!("(issue #26 asks ≤ 64 KiB a stream above idle)");
    });
    let _ = gateway.kill();
    let _ = upstream.kill();
    let _ = gateway.wait();
    let _ = upstream.wait();
}
