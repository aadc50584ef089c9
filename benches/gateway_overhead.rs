//! Gateway overhead, the way gateways publish it: latency through the gateway minus latency
//! direct to the same local mock upstream, at a constant arrival rate (open loop, so a slow
//! answer cannot hold back the next request), non-streaming and streaming, with quota
//! and request logging on. Plus closed-loop throughput, gateway vs direct. Then the caller
//! protocols side by side in the same run: chat, Anthropic Messages (native and translated to
//! chat) and OpenAI Responses (native and translated), each against the upstream answering
//! the same protocol directly (`BENCH_PROTOCOL_RATE`, default 1000/s; `BENCH_PROTOCOLS=0`
//! skips it).
//!
//!   cargo bench --bench gateway_overhead
//!   BENCH_SECS=5 BENCH_RATES=500,2000 cargo bench --bench gateway_overhead
//! (`BENCH_CONFIG_EXTRA='[gateway]\nlog_flush_ms = 1000'`: appended to the gateway's
//! configuration file; `BENCH_USER=1`: the key belongs to a user and a team with budgets of their own)
//!
//! The floor any proxy hop costs is measured in the same run: nginx (Debian's, `NGINX` or
//! `/usr/sbin/nginx`) as a bare reverse proxy to the same upstream — keep-alive pool, no
//! buffering of streams, no access log, as many workers as the gateway has threads — and
//! the gateway is reported as a share of it (issue #26). Without nginx the rows say so.
//!
//! Only 127.0.0.1 is contacted; every phase is bounded in time.
#![expect(clippy::unwrap_used, reason = "a benchmark stops at the first failure")]

mod support;

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
use support::{env_num, free_port, spawn, spawn_nginx, stop_nginx, wait_port};

const ADMIN: &str = "bench-admin-token";
type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Target {
    name: &'static str,
    url: String,
    key: Option<String>,
    /// The request's shape and the model it names (which picks the upstream).
    proto: Proto,
    model: &'static str,
}

#[derive(Clone, Copy)]
enum Proto {
    Chat,
    Messages,
    Responses,
}

impl Target {
    fn new(name: &'static str, url: String, key: Option<String>) -> Self {
        Self {
            name,
            url,
            key,
            proto: Proto::Chat,
            model: "mock-chat",
        }
    }

    fn body(&self, stream: bool) -> Bytes {
        let text = "benchmark request";
        let b = match self.proto {
            Proto::Chat | Proto::Messages => serde_json::json!({
                "model": self.model, "stream": stream, "max_tokens": 16,
                "messages": [{"role": "user", "content": text}],
            }),
            Proto::Responses => serde_json::json!({
                "model": self.model, "stream": stream, "max_output_tokens": 16, "input": text,
            }),
        };
        Bytes::from(b.to_string())
    }
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
    let payload = t.body(stream);
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

/// Requests per second with `conns` requests always in flight (measured after a second of
/// warm-up), and every call the loop completed, warm-up and drain included.
async fn closed_loop(client: &HttpClient, t: Arc<Target>, conns: usize, secs: u64) -> (f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let payload = t.body(false);
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
    (rate, done.load(Ordering::Relaxed))
}

/// Linux's clock ticks a second (`getconf CLK_TCK`: 100 on every Debian kernel).
const TICKS_PER_SEC: f64 = 100.0;

/// User + system ticks of a `/proc/…/stat` line.
fn ticks(stat: &str) -> Option<u64> {
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU ticks (user + system) used so far by process `pid` and by its `ledger-writer`
/// thread, from `/proc` (`None` elsewhere).
fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let all = ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let mut writer = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == "ledger-writer" {
            writer += std::fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|s| ticks(&s))
                .unwrap_or(0);
        }
    }
    Some((all, writer))
}

/// CPU ticks (user + system) used so far by process `pid` and its children (nginx's master
/// and workers), from `/proc` (`None` elsewhere).
fn tree_ticks(pid: u32) -> Option<u64> {
    let of = |pid: &str| ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?);
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    let mut all = of(&pid.to_string())?;
    for child in children.split_whitespace() {
        all += of(child).unwrap_or(0);
    }
    Some(all)
}

/// The caller protocols, same run: each route through the gateway against its upstream
/// answered directly in the protocol the upstream speaks for it.
async fn protocols(client: &HttpClient, up: u16, gw: u16, key: &str, secs: u64) {
    let rate = env_num("BENCH_PROTOCOL_RATE", 1000);
    let conns = env_num("BENCH_CONNS", 64) as usize;
    let t = |name, path: &str, port, proto, model, key: Option<&str>| {
        Arc::new(Target {
            name,
            url: format!("http://127.0.0.1:{port}{path}"),
            key: key.map(str::to_owned),
            proto,
            model,
        })
    };
    // (route, gateway target, the same work done directly)
    let rows = [
        (
            "chat",
            t(
                "gateway",
                "/v1/chat/completions",
                gw,
                Proto::Chat,
                "mock-chat",
                Some(key),
            ),
            t(
                "direct",
                "/v1/chat/completions",
                up,
                Proto::Chat,
                "mock-chat",
                None,
            ),
        ),
        (
            "messages native",
            t(
                "gateway",
                "/v1/messages",
                gw,
                Proto::Messages,
                "native-messages",
                Some(key),
            ),
            t(
                "direct",
                "/v1/messages",
                up,
                Proto::Messages,
                "native-messages",
                None,
            ),
        ),
        (
            "messages → chat",
            t(
                "gateway",
                "/v1/messages",
                gw,
                Proto::Messages,
                "mock-chat",
                Some(key),
            ),
            t(
                "direct",
                "/v1/chat/completions",
                up,
                Proto::Chat,
                "mock-chat",
                None,
            ),
        ),
        (
            "responses native",
            t(
                "gateway",
                "/v1/responses",
                gw,
                Proto::Responses,
                "native-responses",
                Some(key),
            ),
            t(
                "direct",
                "/v1/responses",
                up,
                Proto::Responses,
                "native-responses",
                None,
            ),
        ),
        (
            "responses → chat",
            t(
                "gateway",
                "/v1/responses",
                gw,
                Proto::Responses,
                "mock-chat",
                Some(key),
            ),
            t(
                "direct",
                "/v1/chat/completions",
                up,
                Proto::Chat,
                "mock-chat",
                None,
            ),
        ),
    ];
    for (_, g, d) in &rows {
        open_loop(client, g.clone(), false, 200, 1).await;
        open_loop(client, d.clone(), false, 200, 1).await;
    }
    println!(
        "\nCaller protocols, open loop at {rate}/s, {secs}s per cell; closed loop {conns} in flight (non-stream)"
    );
    println!(
        "| route | mode | direct p50 | gateway p50 | p50 overhead | p99 overhead | errors | closed loop req/s (direct → gateway) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (route, g, d) in &rows {
        for stream in [false, true] {
            let ds = open_loop(client, d.clone(), stream, rate, secs).await;
            let gs = open_loop(client, g.clone(), stream, rate, secs).await;
            let q = |s: &Stats, p| ms(s.hist.value_at_quantile(p));
            let tput = if stream {
                String::new()
            } else {
                let dt = closed_loop(client, d.clone(), conns, secs.min(5)).await.0;
                let gt = closed_loop(client, g.clone(), conns, secs.min(5)).await.0;
                format!("{dt:.0} → {gt:.0} ({:.0} %)", 100.0 * gt / dt)
            };
            println!(
                "| {route} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {}/{} | {tput} |",
                if stream { "stream" } else { "non-stream" },
                q(&ds, 0.5),
                q(&gs, 0.5),
                q(&gs, 0.5) - q(&ds, 0.5),
                q(&gs, 0.99) - q(&ds, 0.99),
                ds.errors + gs.errors,
                ds.sent + gs.sent,
            );
        }
    }
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
    let (up_port, gw_port, nginx_port) = (free_port(), free_port(), free_port());
    let config = dir.path().join("quota-proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[[upstreams]]\nname = \"local-mock\"\nbase_url = \"http://127.0.0.1:{up_port}/v1\"\napi_key = \"sk-bench\"\nprotocols = [\"chat\"]\n\n\
             [[upstreams]]\nname = \"native-messages\"\nbase_url = \"http://127.0.0.1:{up_port}\"\napi_key = \"sk-bench\"\nprotocols = [\"messages\"]\nmodels = [\"native-messages\"]\npriority = 10\n\n\
             [[upstreams]]\nname = \"native-responses\"\nbase_url = \"http://127.0.0.1:{up_port}/v1\"\napi_key = \"sk-bench\"\nprotocols = [\"responses\"]\nmodels = [\"native-responses\"]\npriority = 10\n\n{}\n",
            // More of the gateway's configuration, to compare settings in one harness.
            std::env::var("BENCH_CONFIG_EXTRA").unwrap_or_default().replace("\\n", "\n")
        ),
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

    let mut nginx = spawn_nginx(dir.path(), nginx_port, up_port);

    rt.block_on(async {
        wait_port(up_port).await;
        wait_port(gw_port).await;
        if nginx.is_some() {
            wait_port(nginx_port).await;
        }
        let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(4096).build_http();
        let admin = |path: &str, body: serde_json::Value| {
            let req = Request::post(format!("http://127.0.0.1:{gw_port}{path}"))
                .header("authorization", format!("Bearer {ADMIN}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap();
            let client = client.clone();
            async move {
                let resp = client.request(req).await.unwrap();
                serde_json::from_slice::<serde_json::Value>(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap()
            }
        };
        // BENCH_USER=1: the key belongs to a user in a team, each with a budget, so every
        // call is also charged to both (the ledger's per-op path instead of the fast one).
        let mut key_body = serde_json::json!({"quota": 1_000_000_000_000_i64});
        if env_num("BENCH_USER", 0) == 1 {
            let team = admin("/admin/teams", serde_json::json!({"name": "bench-team", "quota": 1_000_000_000_000_i64})).await;
            let user = admin("/admin/users", serde_json::json!({"name": "bench-user", "quota": 1_000_000_000_000_i64, "teamId": team["id"]})).await;
            key_body["userId"] = user["id"].clone();
            println!("the key belongs to user {} of team {}", user["id"], team["id"]);
        }
        let v = admin("/admin/keys", key_body).await;
        let key = v["key"].as_str().unwrap().to_owned();
        let direct = Arc::new(Target::new("direct", format!("http://127.0.0.1:{up_port}/v1/chat/completions"), None));
        let through = Arc::new(Target::new("gateway", format!("http://127.0.0.1:{gw_port}/v1/chat/completions"), Some(key.clone())));
        let proxy = nginx.as_ref().map(|_| Arc::new(Target::new("nginx", format!("http://127.0.0.1:{nginx_port}/v1/chat/completions"), None)));

        // Warm both paths (connections, caches).
        open_loop(&client, direct.clone(), false, 200, 1).await;
        open_loop(&client, through.clone(), false, 200, 1).await;
        if let Some(p) = &proxy {
            open_loop(&client, p.clone(), false, 200, 1).await;
        }

        println!("\nOpen loop, {secs}s per cell; latency = time to the whole answer (ms)");
        println!("| mode | rate/s | path | p50 | p99 | p99.9 | errors | p50 overhead | p99 overhead |");
        println!("|---|---:|---|---:|---:|---:|---:|---:|---:|");
        for stream in [false, true] {
            for &rate in &rates {
                let d = open_loop(&client, direct.clone(), stream, rate, secs).await;
                let n = match &proxy {
                    Some(p) => Some((open_loop(&client, p.clone(), stream, rate, secs).await, p)),
                    None => None,
                };
                let g = open_loop(&client, through.clone(), stream, rate, secs).await;
                let mode = if stream { "stream" } else { "non-stream" };
                let mut rows = vec![(&d, &direct)];
                if let Some((s, p)) = &n {
                    rows.push((s, p));
                }
                rows.push((&g, &through));
                for (s, t) in rows {
                    let over = if t.name != "direct" {
                        format!(
                            "{:.3} | {:.3}",
                            ms(s.hist.value_at_quantile(0.5)) - ms(d.hist.value_at_quantile(0.5)),
                            ms(s.hist.value_at_quantile(0.99)) - ms(d.hist.value_at_quantile(0.99))
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
        let (d, _) = closed_loop(&client, direct.clone(), conns, tput_secs).await;
        let nginx_pid = nginx.as_ref().map(|n| n.id());
        let n = match &proxy {
            Some(p) => {
                let before = nginx_pid.and_then(tree_ticks);
                let (rate, calls) = closed_loop(&client, p.clone(), conns, tput_secs).await;
                let after = nginx_pid.and_then(tree_ticks);
                // nginx's CPU a call, the floor a hop costs on this machine.
                let us = before
                    .zip(after)
                    .map(|(a, b)| (b - a) as f64 * 1e6 / TICKS_PER_SEC / (calls as f64).max(1.0));
                Some((rate, us))
            }
            None => None,
        };
        let cpu_before = cpu_ticks(gateway.id());
        let (g, g_calls) = closed_loop(&client, through.clone(), conns, tput_secs).await;
        let cpu_after = cpu_ticks(gateway.id());
        println!("\nClosed loop, {conns} in flight, non-stream: direct {d:.0} req/s, gateway {g:.0} req/s ({:.0} % of direct)", 100.0 * g / d);
        // CPU a call costs the gateway's process (steadier than req/s on a shared host):
        // all its threads, and the ledger's writer thread alone.
        if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
            // Every call in the CPU window: warm-up and drain included.
            let calls = g_calls as f64;
            let us = |ticks: u64| ticks as f64 * 1e6 / TICKS_PER_SEC / calls.max(1.0);
            println!(
                "Closed loop CPU per call: gateway process {:.1} µs, ledger writer {:.1} µs",
                us(b.0 - a.0),
                us(b.1 - a.1)
            );
        }
        let gateway_us = cpu_before
            .zip(cpu_after)
            .map(|(a, b)| (b.0 - a.0) as f64 * 1e6 / TICKS_PER_SEC / (g_calls as f64).max(1.0));
        match n {
            Some((n, nginx_us)) => {
                println!("Closed loop, {conns} in flight, non-stream: nginx reverse proxy {n:.0} req/s; gateway = {:.2} × nginx (issue #26 asks ≥ 0.70)", g / n);
                if let (Some(ng), Some(gw)) = (nginx_us, gateway_us) {
                    println!("Closed loop CPU per call: nginx {ng:.1} µs, gateway {gw:.1} µs ({:.1} × nginx's)", gw / ng.max(0.1));
                }
            }
            None => println!("Closed loop: no nginx, no baseline"),
        }
        if env_num("BENCH_PROTOCOLS", 1) == 1 {
            protocols(&client, up_port, gw_port, &key, secs).await;
        }
    });
    let _ = gateway.kill();
    let _ = upstream.kill();
    if let Some(n) = nginx.as_mut() {
        stop_nginx(n);
    }
    let _ = gateway.wait();
    let _ = upstream.wait();
}
