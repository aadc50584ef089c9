//! Monitor speed on a realistic New API `logs` table: 10 000 000 rows over the 30 days up
//! to today (~5 000 users, ~20 000 keys, 50 models, 30 channels, a daily rhythm), loaded
//! into SQLite and (when `TEST_MYSQL_URL` is set) MariaDB, with New API's indexes. Each
//! endpoint is timed cold (`nocache=1`) through the real `quota-proxy monitor` binary: from
//! the rollup (the default), from direct SQL (`engine=sql`), and beside the plain one-query
//! `GROUP BY` SQL for the same answer on the same database. The rollup's initial load time
//! and the monitor's resident memory are reported too, and each rollup answer is checked
//! equal to the SQL engine's. When Chromium and ChromeDriver are installed, the dashboard's
//! Overview for 24 h is loaded in a real browser and timed from navigation to a complete
//! view (KPIs, chart), each load on a new range so nothing comes from the monitor's cache.
//!
//!   scripts/bench-monitor.sh                          # starts MariaDB, runs this
//!   BENCH_ROWS=1000000 scripts/bench-monitor.sh       # a smaller table
//!   BENCH_RESTART_ONLY=1 scripts/bench-monitor.sh     # first load and restart only
//!   BENCH_RANGES=1 BENCH_DAYS=90 BENCH_ID_ORDER=random scripts/bench-monitor.sh
//!       # every endpoint × 1 h, 24 h, 7 d, 30 d, 90 d: rollup p95 cold beside plain SQL;
//!       # BENCH_STALE_DAYS=21 makes the newest rows three weeks old
//!
//! Only 127.0.0.1 is contacted.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark stops at the first failure"
)]

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use quota_proxy::monitor::params::{Range, auto_slot};
use sqlx::{AnyPool, AssertSqlSafe};

#[expect(dead_code, reason = "the bench uses part of the tests' browser driver")]
#[path = "../tests/api/browser.rs"]
mod browser;

const ADMIN: &str = "bench-admin-token";
const DAY: i64 = 86_400;

/// Days the data spans (`BENCH_DAYS`, 30) and how many days before today it ends
/// (`BENCH_STALE_DAYS`, 0).
fn span_days() -> i64 {
    env_num("BENCH_DAYS", 30) as i64
}

fn stale_days() -> i64 {
    env_num("BENCH_STALE_DAYS", 0) as i64
}

/// Midnight UTC `span + stale` days ago: the data ends `stale` days before today.
fn t0() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    now.div_euclid(DAY) * DAY - (span_days() + stale_days()) * DAY
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes the rows as TSV (the column order of `COLUMNS`).
fn generate(path: &std::path::Path, rows: u64, t0: i64) {
    let mut rng = Lcg(7);
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    // Heavier during the (UTC+8) day: hourly weights.
    let weights: Vec<u64> = (0..24)
        .map(|h| {
            let local = (h + 8) % 24;
            if (9..23).contains(&local) { 10 } else { 3 }
        })
        .collect();
    let total_w: u64 = weights.iter().sum();
    // Times first, then sorted: New API writes logs as requests finish, so ids follow time.
    let mut times: Vec<i64> = (0..rows)
        .map(|_| {
            let day = rng.next(span_days() as u64) as i64;
            let mut pick = rng.next(total_w);
            let mut hour = 0;
            for (h, wgt) in weights.iter().enumerate() {
                if pick < *wgt {
                    hour = h as i64;
                    break;
                }
                pick -= wgt;
            }
            t0 + day * DAY + hour * 3600 + rng.next(3600) as i64
        })
        .collect();
    times.sort_unstable();
    // BENCH_ID_ORDER=random: ids in no relation to time (back-filled or merged logs).
    if std::env::var("BENCH_ID_ORDER").as_deref() == Ok("random") {
        for i in (1..times.len()).rev() {
            let j = rng.next(i as u64 + 1) as usize;
            times.swap(i, j);
        }
    }
    for at in times {
        let token = 1 + rng.next(20_000);
        let user = 1 + token % 5_000;
        let model = rng.next(50);
        let channel = 1 + rng.next(30);
        let prompt = 20 + rng.next(2000);
        let completion = 10 + rng.next(800);
        let kind = if rng.next(50) == 0 { 5 } else { 2 };
        writeln!(
            w,
            "{user}\t{at}\t{kind}\tuser{user}\ttok-{token}\tmodel-{model}\t{}\t{prompt}\t{completion}\t{channel}\t{token}\t10.{}.{}.{}",
            (prompt + completion) * 3,
            user % 250,
            token % 250,
            user % 7
        )
        .unwrap();
    }
}

const COLUMNS: &str = "user_id, created_at, type, username, token_name, model_name, quota, prompt_tokens, completion_tokens, channel_id, token_id, ip";

fn ddl(mysql: bool) -> Vec<String> {
    let (pk, name) = if mysql {
        ("INT AUTO_INCREMENT PRIMARY KEY", "VARCHAR(191)")
    } else {
        ("INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT")
    };
    let g = if mysql { "`group`" } else { "\"group\"" };
    vec![format!(
        "CREATE TABLE logs (id {pk}, user_id INT, created_at BIGINT, type INT, content TEXT, \
         username {name} DEFAULT '', token_name {name} DEFAULT '', model_name {name} DEFAULT '', \
         quota INT DEFAULT 0, prompt_tokens INT DEFAULT 0, completion_tokens INT DEFAULT 0, use_time INT DEFAULT 0, \
         is_stream INT DEFAULT 0, channel_id INT, token_id INT DEFAULT 0, {g} {name} DEFAULT '', ip {name} DEFAULT '', other TEXT)"
    )]
}

/// New API's indexes on `logs` (the ones a monitor query can use), built after the load.
fn indexes() -> Vec<String> {
    [
        ("idx_created_at_type", "created_at, type"),
        ("idx_logs_user_id", "user_id"),
        ("idx_logs_token_id", "token_id"),
        ("idx_logs_model_name", "model_name"),
        ("idx_logs_channel_id", "channel_id"),
    ]
    .iter()
    .map(|(n, c)| format!("CREATE INDEX {n} ON logs ({c})"))
    .collect()
}

async fn exec(pool: &AnyPool, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
}

async fn load_sqlite(path: &std::path::Path, tsv: &std::path::Path) -> String {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool = AnyPool::connect(&url).await.unwrap();
    exec(&pool, "PRAGMA journal_mode = WAL").await;
    exec(&pool, "PRAGMA synchronous = OFF").await;
    for s in ddl(false) {
        exec(&pool, &s).await;
    }
    let text = std::fs::read_to_string(tsv).unwrap();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut *conn).await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for chunk in lines.chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                format!(
                    "({},{},{},'{}','{}','{}',{},{},{},{},{},'{}')",
                    f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11]
                )
            })
            .collect();
        let sql = format!("INSERT INTO logs ({COLUMNS}) VALUES {}", values.join(","));
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    sqlx::raw_sql("COMMIT").execute(&mut *conn).await.unwrap();
    drop(conn);
    for s in indexes() {
        exec(&pool, &s).await;
    }
    exec(&pool, "ANALYZE").await;
    pool.close().await;
    path.display().to_string()
}

async fn load_mysql(admin: &str, tsv: &std::path::Path) -> String {
    let admin_pool = AnyPool::connect(admin).await.unwrap();
    exec(&admin_pool, "DROP DATABASE IF EXISTS newapi_bench").await;
    exec(
        &admin_pool,
        "CREATE DATABASE newapi_bench CHARACTER SET utf8mb4",
    )
    .await;
    let url = format!("{}/newapi_bench", admin.trim_end_matches('/'));
    let pool = AnyPool::connect(&url).await.unwrap();
    for s in ddl(true) {
        exec(&pool, &s).await;
    }
    exec(
        &pool,
        &format!(
            "LOAD DATA INFILE '{}' INTO TABLE logs FIELDS TERMINATED BY '\\t' ({COLUMNS})",
            tsv.display()
        ),
    )
    .await;
    for s in indexes() {
        exec(&pool, &s).await;
    }
    exec(&pool, "ANALYZE TABLE logs").await;
    pool.close().await;
    url
}

struct Case {
    name: &'static str,
    path: String,
    /// The plain SQL for the same answer; `{s}`/`{e}` are the range in seconds.
    sql: &'static str,
    target_ms: f64,
}

fn cases(end: i64) -> Vec<Case> {
    let day = |d: i64| format!("start_ms={}&end_ms={}", (end - d * DAY) * 1000, end * 1000);
    vec![
        Case {
            name: "series 24h (15 min)",
            path: format!("/api/stats/series?{}&slot_sec=900", day(1)),
            sql: "SELECT (created_at DIV 900) * 900 b, COUNT(*), SUM(prompt_tokens + completion_tokens), COUNT(DISTINCT user_id), COUNT(DISTINCT token_id), SUM(quota) FROM logs WHERE type = 2 AND created_at >= {s} AND created_at < {e} GROUP BY b",
            target_ms: 250.0,
        },
        Case {
            name: "top users 7d by tokens",
            path: format!("/api/stats/top?{}&by=user&metric=tokens&limit=50", day(7)),
            sql: "SELECT user_id, COUNT(*), SUM(prompt_tokens + completion_tokens) t, SUM(quota) FROM logs WHERE type = 2 AND created_at >= {s} AND created_at < {e} GROUP BY user_id ORDER BY t DESC LIMIT 50",
            target_ms: 400.0,
        },
        Case {
            name: "top tokens 7d by reqs",
            path: format!("/api/stats/top?{}&by=token&metric=reqs&limit=50", day(7)),
            sql: "SELECT token_id, COUNT(*) n, SUM(prompt_tokens + completion_tokens), SUM(quota) FROM logs WHERE type = 2 AND created_at >= {s} AND created_at < {e} AND token_id <> 0 GROUP BY token_id ORDER BY n DESC LIMIT 50",
            target_ms: 400.0,
        },
        Case {
            name: "anomalies burst 24h",
            path: format!(
                "/api/stats/anomalies?{}&rule=burst&limit_per_token=40",
                day(1)
            ),
            sql: "SELECT token_id, COUNT(*) FROM logs WHERE type = 2 AND created_at >= {s} AND created_at < {e} AND token_id <> 0 GROUP BY token_id HAVING COUNT(*) >= 40",
            target_ms: 500.0,
        },
        Case {
            name: "anomalies multi_user_token 24h",
            path: format!("/api/stats/anomalies?{}&rule=multi_user_token", day(1)),
            sql: "SELECT token_id, COUNT(DISTINCT user_id), COUNT(DISTINCT ip) FROM logs WHERE type = 2 AND created_at >= {s} AND created_at < {e} AND token_id <> 0 GROUP BY token_id HAVING COUNT(DISTINCT user_id) >= 2 OR COUNT(DISTINCT ip) >= 5",
            target_ms: 500.0,
        },
        Case {
            name: "anomalies ip_many_users 24h",
            path: format!("/api/stats/anomalies?{}&rule=ip_many_users", day(1)),
            sql: "SELECT ip, COUNT(DISTINCT user_id) FROM logs WHERE type = 2 AND created_at >= {s} AND created_at < {e} AND token_id <> 0 AND ip <> '' GROUP BY ip HAVING COUNT(DISTINCT user_id) >= 5",
            target_ms: 500.0,
        },
        Case {
            name: "anomalies big_request 24h",
            path: format!("/api/stats/anomalies?{}&rule=big_request", day(1)),
            sql: "SELECT model_name, COUNT(*), SUM(prompt_tokens + completion_tokens), SUM((prompt_tokens + completion_tokens) * (prompt_tokens + completion_tokens)) FROM logs WHERE type = 2 AND created_at >= {s} AND created_at < {e} AND token_id <> 0 GROUP BY model_name",
            target_ms: 500.0,
        },
        Case {
            name: "series 30d (4 h)",
            path: format!("/api/stats/series?{}&slot_sec=14400", day(30)),
            sql: "SELECT (created_at DIV 14400) * 14400 b, COUNT(*), SUM(prompt_tokens + completion_tokens), COUNT(DISTINCT user_id), COUNT(DISTINCT token_id), SUM(quota) FROM logs WHERE type = 2 AND created_at >= {s} AND created_at < {e} GROUP BY b",
            target_ms: 0.0,
        },
        Case {
            name: "heatmap 7d users",
            path: format!("/api/stats/heatmap?{}&metric=users", day(7)),
            sql: "SELECT (created_at DIV 3600) * 3600 h, COUNT(DISTINCT user_id) FROM logs WHERE type = 2 AND created_at >= {s} AND created_at < {e} GROUP BY h",
            target_ms: 0.0,
        },
        Case {
            name: "summary 7d",
            path: format!("/api/stats/summary?{}", day(7)),
            sql: "SELECT COUNT(*), SUM(prompt_tokens + completion_tokens), SUM(quota), COUNT(DISTINCT user_id), COUNT(DISTINCT token_id), COUNT(DISTINCT model_name) FROM logs WHERE type = 2 AND created_at >= {s} AND created_at < {e}",
            target_ms: 0.0,
        },
    ]
}

fn days_of(name: &str) -> i64 {
    if name.contains("30d") {
        30
    } else if name.contains("7d") {
        7
    } else {
        1
    }
}

/// Resident memory of a process, in MB of 10^6 bytes (Linux reports KiB). Until
/// 2026-11-23 this returned MiB, so the bytes a row printed were ~5 % too low.
fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib * 1024.0 / 1e6)
}

async fn timed_get(client: &reqwest::Client, url: &str) -> (f64, String, bytes::Bytes) {
    let t0 = Instant::now();
    let r = client.get(url).bearer_auth(ADMIN).send().await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    let engine = r
        .headers()
        .get("x-monitor-engine")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = r.bytes().await.unwrap();
    (t0.elapsed().as_secs_f64() * 1000.0, engine, body)
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// Starts `quota-proxy monitor` over `dsn` with `dir` as its data directory and waits until
/// its rollup is ready: the process, its port, the rows held and the seconds it took.
async fn start_monitor(dsn: &str, dir: &std::path::Path) -> (KillOnDrop, String, u64, f64) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_quota-proxy"))
        .args([
            "monitor",
            "--source",
            "newapi",
            "--dsn",
            dsn,
            "--port",
            &port.to_string(),
            "--data-dir",
        ])
        .arg(dir)
        .env("ADMIN_TOKEN", ADMIN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let rows = loop {
        if let Ok(r) = client.get(format!("{base}/api/health")).send().await
            && let Ok(v) = r.json::<serde_json::Value>().await
            && v["rollup"]["state"] == "ready"
        {
            let archived = v["rollup"]["archived_rows"].as_u64().unwrap_or(0);
            if archived > 0 {
                println!("({archived} more rows on disk: MONITOR_ROLLUP_MAX_ROWS)");
            }
            break v["rollup"]["rows"].as_u64().unwrap_or(0);
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "rollup not ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    (child, base, rows, started.elapsed().as_secs_f64())
}

/// SIGTERM (the snapshot is written), then a second start over the same data directory:
/// how long until the rollup answers again, and its memory.
async fn restart(mut child: KillOnDrop, dsn: &str, dir: &std::path::Path) {
    let t0 = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    child.0.wait().unwrap();
    let stop_s = t0.elapsed().as_secs_f64();
    let snapshot: u64 = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("monitor-rollup-")
        })
        .map(|e| bytes_under(&e.path()))
        .sum();
    let (again, _, rows, ready_s) = start_monitor(dsn, dir).await;
    println!(
        "Restart: stop (snapshot written) {stop_s:.1} s, snapshot {:.0} MB; ready again with \
         {rows} rows in {ready_s:.1} s; RSS {:.0} MB ({:.0} bytes a row).\n",
        snapshot as f64 / 1e6,
        rss_mb(again.0.id()),
        rss_mb(again.0.id()) * 1e6 / rows.max(1) as f64,
    );
}

/// A file's length, or everything under a directory (the rollup's archive).
fn bytes_under(p: &std::path::Path) -> u64 {
    if p.is_dir() {
        std::fs::read_dir(p)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| bytes_under(&e.path()))
                    .sum()
            })
            .unwrap_or(0)
    } else {
        p.metadata().map(|m| m.len()).unwrap_or(0)
    }
}

async fn measure(label: &str, dsn: &str, mysql: bool, end: i64, runs: usize, sql_runs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (child, base, rows, load_s) = start_monitor(dsn, dir.path()).await;
    let pid = child.0.id();
    let client = reqwest::Client::new();
    let url = if mysql {
        dsn.to_owned()
    } else {
        format!("sqlite://{dsn}?mode=ro")
    };
    let pool = AnyPool::connect(&url).await.unwrap();
    println!("\n### {label}\n");
    println!(
        "Rollup: {rows} billed rows loaded in {load_s:.1} s; monitor RSS {:.0} MB.\n",
        rss_mb(pid)
    );
    if std::env::var("BENCH_RESTART_ONLY").is_ok() {
        restart(child, dsn, dir.path()).await;
        return;
    }
    if std::env::var("BENCH_RANGES").is_ok() {
        range_table(&client, &base, &pool, mysql, end, runs, sql_runs).await;
        drop(child);
        return;
    }
    println!(
        "| query | rollup p50 ms | rollup p95 ms | SQL engine p50 ms | plain SQL p50 ms | target ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for c in cases(end) {
        let mut fast = Vec::new();
        let mut answer = bytes::Bytes::new();
        for _ in 0..runs {
            let (ms, engine, body) =
                timed_get(&client, &format!("{base}{}&nocache=1", c.path)).await;
            assert_eq!(engine, "rollup", "{}", c.name);
            fast.push(ms);
            answer = body;
        }
        let mut direct = Vec::new();
        for _ in 0..sql_runs {
            let (ms, engine, body) =
                timed_get(&client, &format!("{base}{}&nocache=1&engine=sql", c.path)).await;
            assert_eq!(engine, "sql", "{}", c.name);
            assert_eq!(body, answer, "{}: the rollup and SQL differ", c.name);
            direct.push(ms);
        }
        let (s, e) = (end - days_of(c.name) * DAY, end);
        let sql = c
            .sql
            .replace("{s}", &s.to_string())
            .replace("{e}", &e.to_string());
        let plain = plain_sql_ms(&pool, &sql, mysql, sql_runs).await;
        let target = if c.target_ms > 0.0 {
            format!("{:.0}", c.target_ms)
        } else {
            "–".to_owned()
        };
        println!(
            "| {} | {:.1} | {:.1} | {:.0} | {:.0} | {target} |",
            c.name,
            pct(fast.clone(), 0.5),
            pct(fast, 0.95),
            pct(direct, 0.5),
            plain,
        );
    }
    dashboard_overview(&base, runs).await;
    restart(child, dsn, dir.path()).await;
}

/// The median time of the plain SQL, counted by the database: the same work, one integer
/// back (the Any driver cannot decode MySQL's DECIMAL sums).
async fn plain_sql_ms(pool: &AnyPool, sql: &str, mysql: bool, runs: usize) -> f64 {
    let sql = if mysql {
        sql.to_owned()
    } else {
        sql.replace(" DIV ", " / ")
    };
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let t0 = Instant::now();
        sqlx::raw_sql(AssertSqlSafe(format!("SELECT COUNT(*) FROM ({sql}) q")))
            .fetch_all(pool)
            .await
            .unwrap();
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    pct(times, 0.5)
}

/// One endpoint family of the range table: its paths (the slowest counts) and the plain SQL
/// for the same answer (`{s}`/`{e}` the range in seconds, `{slot}` the series bucket).
struct Family {
    name: &'static str,
    paths: Vec<String>,
    sql: &'static str,
}

fn families() -> Vec<Family> {
    let mut top = Vec::new();
    for by in ["user", "token", "model", "channel"] {
        for metric in ["tokens", "reqs", "quota_sum"] {
            top.push(format!("/api/stats/top?by={by}&metric={metric}&limit=10"));
        }
    }
    vec![
        Family {
            name: "series",
            paths: vec!["/api/stats/series?x=1".into()],
            sql: "SELECT (created_at DIV {slot}) * {slot} b, COUNT(*), SUM(prompt_tokens + completion_tokens), COUNT(DISTINCT user_id), COUNT(DISTINCT token_id), SUM(quota) FROM logs WHERE type = 2 AND created_at >= {s} AND created_at < {e} GROUP BY b",
        },
        Family {
            name: "top (12: user, token, model, channel × tokens, reqs, quota)",
            paths: top,
            sql: "SELECT token_id, SUM(prompt_tokens + completion_tokens) t FROM logs WHERE type = 2 AND created_at >= {s} AND created_at < {e} GROUP BY token_id ORDER BY t DESC LIMIT 10",
        },
        Family {
            name: "heatmap",
            paths: vec!["/api/stats/heatmap?metric=reqs".into()],
            sql: "SELECT (created_at DIV 3600) * 3600 h, COUNT(*) FROM logs WHERE type = 2 AND created_at >= {s} AND created_at < {e} GROUP BY h",
        },
        Family {
            name: "summary",
            paths: vec!["/api/stats/summary?x=1".into()],
            sql: "SELECT COUNT(*), SUM(prompt_tokens + completion_tokens), SUM(quota), COUNT(DISTINCT user_id), COUNT(DISTINCT token_id), COUNT(DISTINCT model_name) FROM logs WHERE type = 2 AND created_at >= {s} AND created_at < {e}",
        },
        Family {
            name: "burst",
            paths: vec!["/api/stats/anomalies?rule=burst".into()],
            sql: "SELECT token_id, created_at DIV 60 m, COUNT(*) FROM logs WHERE type = 2 AND created_at >= {s} AND created_at < {e} AND token_id <> 0 GROUP BY token_id, m HAVING COUNT(*) >= 10",
        },
        Family {
            name: "multi_user_token",
            paths: vec!["/api/stats/anomalies?rule=multi_user_token".into()],
            sql: "SELECT token_id, COUNT(DISTINCT user_id), COUNT(DISTINCT ip) FROM logs WHERE type = 2 AND created_at >= {s} AND created_at < {e} AND token_id <> 0 GROUP BY token_id HAVING COUNT(DISTINCT user_id) >= 2 OR COUNT(DISTINCT ip) >= 5",
        },
        Family {
            name: "ip_many_users",
            paths: vec!["/api/stats/anomalies?rule=ip_many_users".into()],
            sql: "SELECT ip, COUNT(DISTINCT user_id) FROM logs WHERE type = 2 AND created_at >= {s} AND created_at < {e} AND token_id <> 0 AND ip <> '' GROUP BY ip HAVING COUNT(DISTINCT user_id) >= 5",
        },
        Family {
            name: "big_request",
            paths: vec!["/api/stats/anomalies?rule=big_request".into()],
            sql: "SELECT model_name, COUNT(*), SUM(prompt_tokens + completion_tokens), SUM((prompt_tokens + completion_tokens) * (prompt_tokens + completion_tokens)) FROM logs WHERE type = 2 AND created_at >= {s} AND created_at < {e} AND token_id <> 0 GROUP BY model_name",
        },
        Family {
            name: "CSV (top tokens)",
            paths: vec!["/api/export/csv?query_type=top&by=token&metric=tokens&limit=100".into()],
            sql: "SELECT token_id, SUM(prompt_tokens + completion_tokens) t FROM logs WHERE type = 2 AND created_at >= {s} AND created_at < {e} GROUP BY token_id ORDER BY t DESC LIMIT 100",
        },
    ]
}

/// Every endpoint family over each range ending at the data's end: the rollup's cold p95
/// (the slowest path of the family) beside the plain one-query SQL's time, and their ratio.
async fn range_table(
    client: &reqwest::Client,
    base: &str,
    pool: &AnyPool,
    mysql: bool,
    end: i64,
    runs: usize,
    sql_runs: usize,
) {
    let ranges: Vec<(&str, i64)> = [
        ("1 h", 3600),
        ("24 h", DAY),
        ("7 d", 7 * DAY),
        ("30 d", 30 * DAY),
        ("90 d", 90 * DAY),
    ]
    .into_iter()
    .filter(|(_, len)| *len <= span_days() * DAY)
    .collect();
    print!("| endpoint |");
    for (name, _) in &ranges {
        print!(" {name}: p95 / SQL ms (×) |");
    }
    println!();
    println!("|---|{}", "---:|".repeat(ranges.len()));
    for f in families() {
        print!("| {} |", f.name);
        for &(_, len) in &ranges {
            let (s, e) = (end - len, end);
            let range = format!("start_ms={}&end_ms={}", s * 1000, e * 1000);
            let mut worst = 0.0f64;
            for p in &f.paths {
                let mut times = Vec::new();
                for _ in 0..runs {
                    let (ms, engine, _) =
                        timed_get(client, &format!("{base}{p}&{range}&nocache=1")).await;
                    // The CSV export answers through the same engines without the header.
                    assert!(
                        engine == "rollup" || (engine.is_empty() && p.contains("csv")),
                        "{p} over {len} s: {engine}"
                    );
                    times.push(ms);
                }
                worst = worst.max(pct(times, 0.95));
            }
            let slot = auto_slot(Range {
                start_ms: s * 1000,
                end_ms: e * 1000,
            });
            let sql = f
                .sql
                .replace("{s}", &s.to_string())
                .replace("{e}", &e.to_string())
                .replace("{slot}", &slot.to_string());
            let plain = plain_sql_ms(pool, &sql, mysql, sql_runs).await;
            print!(
                " {worst:.1} / {plain:.0} ({:.0}×) |",
                plain / worst.max(0.001)
            );
        }
        println!();
    }
    println!();
}

/// The dashboard's Overview over the last 24 h in headless Chromium: milliseconds from
/// navigation to the complete view, cold (a new range each load).
async fn dashboard_overview(base: &str, runs: usize) {
    let Some(b) = browser::Browser::start().await else {
        println!("\n(dashboard: no chromium/chromedriver, skipped)");
        return;
    };
    b.goto(&format!("{base}/")).await;
    b.login(ADMIN).await;
    b.find("main").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut times = Vec::new();
    for i in 0..runs.max(3) as i64 {
        let to = (now / 60_000 - i) * 60_000;
        let from = to - 86_400_000;
        b.goto("about:blank").await;
        b.goto(&format!("{base}/#/overview?from={from}&to={to}"))
            .await;
        let ms = loop {
            let v = b
                .js("return window.__qpReadyAt === undefined ? null : window.__qpReadyAt")
                .await;
            if let Some(ms) = v.as_f64() {
                break ms;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert!(b.exists("#trend-chart canvas").await, "chart drawn");
        assert!(b.exists("[data-kpi=reqs]").await, "KPIs shown");
        times.push(ms);
    }
    println!(
        "\nDashboard Overview 24 h in Chromium, navigation → complete view ({} cold loads): p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms.",
        times.len(),
        pct(times.clone(), 0.5),
        pct(times.clone(), 0.95),
        times.iter().cloned().fold(0.0, f64::max),
    );
    b.close().await;
}

/// Stops the monitor even when a measurement panics.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let rows = env_num("BENCH_ROWS", 10_000_000);
    let runs = env_num("BENCH_RUNS", 20) as usize;
    // Direct SQL takes seconds a query at this size: fewer runs.
    let sql_runs = env_num("BENCH_SQL_RUNS", 2).max(1) as usize;
    sqlx::any::install_default_drivers();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tsv = dir.path().join("logs.tsv");
    let started = Instant::now();
    let first_day = t0();
    generate(&tsv, rows, first_day);
    println!(
        "generated {rows} rows in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let end = first_day + span_days() * DAY;
    rt.block_on(async {
        if let Ok(admin) = std::env::var("TEST_MYSQL_URL") {
            let t0 = Instant::now();
            let dsn = load_mysql(&admin, &tsv).await;
            println!(
                "MariaDB: loaded and indexed in {:.0}s",
                t0.elapsed().as_secs_f64()
            );
            measure(
                &format!("MariaDB, {rows} rows"),
                &dsn,
                true,
                end,
                runs,
                sql_runs,
            )
            .await;
        }
        let t0 = Instant::now();
        let path = load_sqlite(&dir.path().join("newapi.db"), &tsv).await;
        println!(
            "SQLite: loaded and indexed in {:.0}s",
            t0.elapsed().as_secs_f64()
        );
        measure(
            &format!("SQLite, {rows} rows"),
            &path,
            false,
            end,
            runs,
            sql_runs,
        )
        .await;
    });
}
