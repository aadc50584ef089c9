//! What a stream costs the gateway (issue #26), the real release binary in front of the
//! built-in mock upstream serving paced streams (`--chunk-delay-ms`):
//!
//! 1. **Latency at one connection**: streams one after another, 2 ms between the upstream's
//!    chunks, through the gateway and straight to the upstream in the same run; the time to
//!    the first chunk and the time a chunk takes (first to last over the gaps), p50 and p99,
//!    and what the gateway adds (the issue asks ≤ 150 µs to the first token, ≤ 20 µs a chunk).
//! 2. **Memory**: "RSS with 1 000 concurrent slow streams … ≤ 64 KiB a stream above idle":
//!    the gateway's resident set (`/proc/<pid>/status` `VmRSS`) at start, idle after a
//!    warm-up round, with every stream open and past its first chunk, and after they ended.
//!
//!   cargo bench --bench streams                      # 400 streams at c=1, then 1 000 open
//!   BENCH_STREAMS=2000 BENCH_CHUNK_MS=100 BENCH_C1=1000 cargo bench --bench streams
//!
//! Only 127.0.0.1 is contacted; every stream ends by itself (25 chunks) and the whole run is
//! bounded by a timeout.
#![expect(clippy::unwrap_used, reason = "a benchmark stops at the first failure")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use support::{env_num, free_port, spawn, spawn_nginx, stop_nginx, wait_port};

const ADMIN: &str = "bench-admin-token";
type HttpClient = Client<HttpConnector, Full<Bytes>>;

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

/// The wall clock in µs since the epoch (what the stamping mock writes into its events).
fn wall_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

/// Every complete `sent-<µs>` stamp in `buf`, and the bytes after the last one (kept for
/// a stamp split across frames).
fn stamps(buf: &[u8]) -> (Vec<u128>, usize) {
    let text = String::from_utf8_lossy(buf);
    let mut out = Vec::new();
    let mut used = 0;
    let mut from = 0;
    while let Some(at) = text[from..].find("sent-") {
        let digits = &text[from + at + 5..];
        let Some(end) = digits.find('"') else { break };
        if let Ok(v) = digits[..end].parse() {
            out.push(v);
        }
        from += at + 5 + end;
        used = from;
    }
    (out, used)
}

/// One stream: microseconds to its first chunk, and how long each later chunk took from
/// the upstream's sending it (its stamp) to this client's receiving it.
async fn timed_stream(client: &HttpClient, path: &Path) -> (f64, Vec<f64>) {
    let (url, key) = (&path.url, path.key.as_deref());
    let body = format!(
        r#"{{"model":"{}","stream":true,"max_tokens":64,"messages":[{{"role":"user","content":"count slowly"}}]}}"#,
        path.model
    );
    let mut req = Request::post(url).header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let t0 = Instant::now();
    let resp = client
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut b = resp.into_body();
    let (mut first, mut transit, mut pending) = (None, Vec::new(), Vec::new());
    while let Some(frame) = b.frame().await {
        let frame = frame.unwrap();
        let Some(d) = frame.data_ref().filter(|d| !d.is_empty()) else {
            continue;
        };
        let now = wall_us();
        let seen_first = first.is_some();
        first.get_or_insert_with(Instant::now);
        pending.extend_from_slice(d);
        let (sent, used) = stamps(&pending);
        pending.drain(..used);
        if seen_first {
            transit.extend(sent.iter().map(|&s| now.saturating_sub(s) as f64));
        }
    }
    let ttft = (first.unwrap() - t0).as_secs_f64() * 1e6;
    (ttft, transit)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// One way a stream goes: straight to an upstream, through nginx or the gateway; `base`
/// is the index of the direct path to the same upstream (what this one adds to).
struct Path {
    name: &'static str,
    url: String,
    key: Option<String>,
    model: &'static str,
    base: usize,
}

/// Part 1: `n` streams one at a time on each path, in turn.
async fn one_connection(client: &HttpClient, paths: &[Path], n: usize) {
    let mut ttft: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    let mut transit: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for round in 0..n + 20 {
        for (i, path) in paths.iter().enumerate() {
            let (t, c) = timed_stream(client, path).await;
            if round >= 20 {
                ttft[i].push(t);
                transit[i].extend(c);
            }
        }
    }
    println!(
        "\nStreams at one connection, {n} each way, the upstream pacing chunks 2 ms apart (µs; \
         a chunk: from the upstream's sending it to the client's receiving it)"
    );
    println!("| path | first chunk p50 | p99 | a chunk p50 | p99 |");
    println!("|---|---:|---:|---:|---:|");
    let mut p50 = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let r = (
            pct(&mut ttft[i], 0.5),
            pct(&mut ttft[i], 0.99),
            pct(&mut transit[i], 0.5),
            pct(&mut transit[i], 0.99),
        );
        println!(
            "| {} | {:.0} | {:.0} | {:.1} | {:.1} |",
            path.name, r.0, r.1, r.2, r.3
        );
        p50.push((r.0, r.2));
    }
    for (i, path) in paths.iter().enumerate().filter(|(i, p)| p.base != *i) {
        println!(
            "Added by {}, p50: {:.0} µs to the first chunk, {:.1} µs a chunk",
            path.name,
            p50[i].0 - p50[path.base].0,
            p50[i].1 - p50[path.base].1
        );
    }
    println!("(issue #26 asks of the gateway ≤ 150 µs to the first token, ≤ 20 µs a chunk)");
}

fn main() {
    let n = env_num("BENCH_STREAMS", 1000) as usize;
    let chunk_ms = env_num("BENCH_CHUNK_MS", 200);
    let c1 = env_num("BENCH_C1", 400) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (up_port, gw_port, fast_port, gw2_port) =
        (free_port(), free_port(), free_port(), free_port());
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
    // Part 1's own pair: the upstream pacing chunks 2 ms apart, a gateway in front of it.
    let dir2 = tempfile::tempdir().unwrap();
    let think_port = free_port();
    let config2 = dir2.path().join("quota-proxy.toml");
    std::fs::write(
        &config2,
        format!(
            "[[upstreams]]\nname = \"paced-mock\"\nbase_url = \"http://127.0.0.1:{fast_port}/v1\"\n\
             api_key = \"sk-bench\"\nmodels = [\"mock-chat\"]\n\
             [[upstreams]]\nname = \"thinking-mock\"\nbase_url = \"http://127.0.0.1:{think_port}/v1\"\n\
             api_key = \"sk-bench\"\nmodels = [\"mock-think\"]\n"
        ),
    )
    .unwrap();
    let mut paced = spawn(
        &[
            "mock-upstream",
            "--port",
            &fast_port.to_string(),
            "--chunk-delay-ms",
            "2",
            "--stamp",
        ],
        &[],
    );
    // The same pacing before the first chunk too: a model's time to its first token, during
    // which the gateway's durable hold commits.
    let mut thinking = spawn(
        &[
            "mock-upstream",
            "--port",
            &think_port.to_string(),
            "--chunk-delay-ms",
            "2",
            "--stamp",
            "--pace-first",
        ],
        &[],
    );
    let mut gateway2 = spawn(
        &[
            "serve",
            "--port",
            &gw2_port.to_string(),
            "--data-dir",
            dir2.path().to_str().unwrap(),
            "--config",
            config2.to_str().unwrap(),
        ],
        &[("ADMIN_TOKEN", ADMIN)],
    );
    let nginx_port = free_port();
    let mut nginx = spawn_nginx(dir2.path(), nginx_port, fast_port);
    rt.block_on(async {
        wait_port(fast_port).await;
        wait_port(think_port).await;
        wait_port(gw2_port).await;
        if nginx.is_some() {
            wait_port(nginx_port).await;
        }
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let resp = post(
            &client,
            &format!("http://127.0.0.1:{gw2_port}/admin/keys"),
            ADMIN,
            r#"{"quota": 1000000000000}"#.into(),
        )
        .await;
        let v: serde_json::Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        let key = v["key"].as_str().unwrap().to_owned();
        let url = |port: u16| format!("http://127.0.0.1:{port}/v1/chat/completions");
        let path = |name, port, key: Option<&String>, model, base| Path {
            name,
            url: url(port),
            key: key.cloned(),
            model,
            base,
        };
        let mut paths = vec![path("direct", fast_port, None, "mock-chat", 0)];
        if nginx.is_some() {
            paths.push(path("nginx", nginx_port, None, "mock-chat", 0));
        }
        paths.push(path("gateway", gw2_port, Some(&key), "mock-chat", 0));
        let base = paths.len();
        paths.push(path(
            "direct, first chunk paced too",
            think_port,
            None,
            "mock-think",
            base,
        ));
        paths.push(path(
            "gateway, first chunk paced too",
            gw2_port,
            Some(&key),
            "mock-think",
            base,
        ));
        one_connection(&client, &paths, c1).await;
    });
    if let Some(n) = nginx.as_mut() {
        stop_nginx(n);
    }
    let _ = gateway2.kill();
    let _ = paced.kill();
    let _ = thinking.kill();
    let _ = gateway2.wait();
    let _ = paced.wait();
    let _ = thinking.wait();
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
