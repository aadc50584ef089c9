//! The monitor API over New API databases on SQLite, MariaDB and PostgreSQL (real servers,
//! started by scripts/test.sh) and over the gateway's own log: every endpoint gives the same
//! answer everywhere, from the in-memory rollup and from direct SQL alike, equal to values
//! computed from the dataset in the test.

use std::time::Duration;

use quota_proxy::config::Config;
use quota_proxy::gateway::settings::mock_upstream;
use quota_proxy::monitor::rollup::RollupSettings;
use quota_proxy::monitor::source::SourceKind;
use serde_json::{Value, json};
use sqlx::{AnyPool, AssertSqlSafe};

use crate::helpers::*;
use crate::monitor_data::*;

fn esc(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Db {
    Sqlite,
    Mysql,
    Postgres,
}

fn ddl(db: Db) -> Vec<String> {
    let (pk, text, name, quote) = match db {
        Db::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT", "TEXT", '"'),
        Db::Mysql => (
            "INT AUTO_INCREMENT PRIMARY KEY",
            "LONGTEXT",
            "VARCHAR(191)",
            '`',
        ),
        Db::Postgres => ("BIGSERIAL PRIMARY KEY", "TEXT", "TEXT", '"'),
    };
    let (int, big, boolean) = match db {
        Db::Sqlite => ("INTEGER", "INTEGER", "INTEGER"),
        Db::Mysql => ("INT", "BIGINT", "TINYINT(1)"),
        Db::Postgres => ("INTEGER", "BIGINT", "BOOLEAN"),
    };
    let q = |s: &str| format!("{quote}{s}{quote}");
    let mut v = vec![
        format!(
            "CREATE TABLE users (id {pk}, username {name} DEFAULT '', display_name {name} DEFAULT '', quota {int} DEFAULT 0)"
        ),
        format!(
            "CREATE TABLE tokens (id {pk}, user_id {int}, {} {name}, name {name} DEFAULT '', status {int} DEFAULT 1)",
            q("key")
        ),
        format!(
            "CREATE TABLE channels (id {pk}, name {name} DEFAULT '', type {int} DEFAULT 0, status {int} DEFAULT 1)"
        ),
        format!(
            "CREATE TABLE logs (id {pk}, user_id {int}, created_at {big}, type {int}, content {text}, \
             username {name} DEFAULT '', token_name {name} DEFAULT '', model_name {name} DEFAULT '', \
             quota {int} DEFAULT 0, prompt_tokens {int} DEFAULT 0, completion_tokens {int} DEFAULT 0, \
             use_time {int} DEFAULT 0, is_stream {boolean} DEFAULT FALSE, channel_id {int}, token_id {int} DEFAULT 0, \
             {} {name} DEFAULT '', ip {name} DEFAULT '', other {text})",
            q("group")
        ),
    ];
    // New API's own indexes on logs.
    for (n, cols) in [
        ("idx_created_at_type", "created_at, type"),
        ("idx_logs_user_id", "user_id"),
        ("idx_logs_username", "username"),
        ("idx_logs_token_name", "token_name"),
        ("idx_logs_model_name", "model_name"),
        ("idx_logs_channel_id", "channel_id"),
        ("idx_logs_token_id", "token_id"),
        ("idx_logs_ip", "ip"),
        ("index_username_model_name", "model_name, username"),
    ] {
        v.push(format!("CREATE INDEX {n} ON logs ({cols})"));
    }
    v
}

fn inserts(d: &Data) -> Vec<String> {
    let mut v = Vec::new();
    let users: Vec<String> = d
        .users
        .iter()
        .map(|(id, n)| format!("({id}, {})", esc(n)))
        .collect();
    v.push(format!(
        "INSERT INTO users (id, username) VALUES {}",
        users.join(", ")
    ));
    let tokens: Vec<String> = d
        .tokens
        .iter()
        .map(|(id, (n, u))| format!("({id}, {u}, 'sk-{id}', {})", esc(n)))
        .collect();
    v.push(format!(
        "INSERT INTO tokens (id, user_id, {}, name) VALUES {}",
        "\"key\"",
        tokens.join(", ")
    ));
    let ch: Vec<String> = d
        .channels
        .iter()
        .map(|(id, n)| format!("({id}, {})", esc(n)))
        .collect();
    v.push(format!(
        "INSERT INTO channels (id, name) VALUES {}",
        ch.join(", ")
    ));
    for chunk in d.logs.chunks(200) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|l| {
                format!(
                    "({}, {}, {}, '', {}, {}, {}, {}, {}, {}, 100, FALSE, {}, {}, 'default', {}, '')",
                    l.user_id, l.created_at, l.kind, esc(&l.username), esc(&l.token_name), esc(&l.model),
                    l.quota, l.prompt, l.completion, l.channel, l.token, esc(&l.ip)
                )
            })
            .collect();
        v.push(format!(
            "INSERT INTO logs (user_id, created_at, type, content, username, token_name, model_name, quota, \
             prompt_tokens, completion_tokens, use_time, is_stream, channel_id, token_id, {}, ip, other) VALUES {}",
            "\"group\"",
            rows.join(", ")
        ));
    }
    v
}

async fn exec(url: &str, sqls: &[String], mysql: bool) {
    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(url).await.unwrap();
    for s in sqls {
        // MariaDB quotes identifiers with backticks unless ANSI_QUOTES is on.
        let s = if mysql {
            s.replace("\"key\"", "`key`")
                .replace("\"group\"", "`group`")
        } else {
            s.clone()
        };
        sqlx::raw_sql(AssertSqlSafe(s.clone()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}: {s}"));
    }
    pool.close().await;
}

fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var("CI").is_err(),
                "{var} is unset under CI: scripts/test.sh starts the server"
            );
            eprintln!("skipping the {var} backend: run scripts/test.sh");
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), fastrand::u32(..))
}

/// A database holding `d`, and a DSN of a user that may only SELECT.
pub(crate) async fn load(db: Db, d: &Data, dir: &std::path::Path) -> Option<String> {
    load_rw(db, d, dir).await.map(|(ro, _)| ro)
}

/// `load`, and also a URL that may write the same database.
async fn load_rw(db: Db, d: &Data, dir: &std::path::Path) -> Option<(String, String)> {
    let mut sqls = ddl(db);
    sqls.extend(inserts(d));
    match db {
        Db::Sqlite => {
            let path = dir.join("newapi.db");
            exec(
                &format!("sqlite://{}?mode=rwc", path.display()),
                &sqls,
                false,
            )
            .await;
            Some((
                path.display().to_string(),
                format!("sqlite://{}", path.display()),
            ))
        }
        Db::Postgres => {
            let admin = server_url("TEST_PG_URL")?;
            let name = unique("newapi");
            exec(&admin, &[format!("CREATE DATABASE {name}")], false).await;
            let base = admin.rsplit_once('/').unwrap().0.to_owned();
            let db_url = format!("{base}/{name}");
            exec(&db_url, &sqls, false).await;
            let role = unique("mon");
            exec(
                &db_url,
                &[
                    format!("CREATE ROLE {role} LOGIN PASSWORD 'pw'"),
                    format!("GRANT CONNECT ON DATABASE {name} TO {role}"),
                    format!("GRANT USAGE ON SCHEMA public TO {role}"),
                    format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"),
                ],
                false,
            )
            .await;
            let hostport = base.rsplit_once('@').unwrap().1;
            Some((format!("postgres://{role}:pw@{hostport}/{name}"), db_url))
        }
        Db::Mysql => {
            let admin = server_url("TEST_MYSQL_URL")?;
            let name = unique("newapi");
            exec(
                &admin,
                &[format!("CREATE DATABASE {name} CHARACTER SET utf8mb4")],
                true,
            )
            .await;
            let db_url = format!("{}{name}", admin.trim_end_matches('/').to_owned() + "/");
            exec(&db_url, &sqls, true).await;
            let user = unique("mon");
            exec(
                &admin,
                &[
                    format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'"),
                    format!("GRANT SELECT ON {name}.* TO '{user}'@'%'"),
                ],
                true,
            )
            .await;
            let hostport = admin
                .trim_start_matches("mysql://")
                .split('@')
                .nth(1)
                .unwrap()
                .trim_end_matches('/')
                .to_owned();
            Some((format!("mysql://{user}:pw@{hostport}/{name}"), db_url))
        }
    }
}

/// The gateway's own request log holding the same calls.
/// The three upstreams the native rows name as their channels.
fn native_upstreams(c: &mut Config) {
    c.gateway.upstreams = ["ch-a", "ch-b", "ch-c"]
        .iter()
        .map(|n| quota_proxy::gateway::settings::UpstreamSettings {
            name: (*n).to_owned(),
            ..mock_upstream()
        })
        .collect();
}

/// Writes the data into the app's own request log: its SQLite file, or its PostgreSQL
/// database when the suite runs with `QP_TEST_STORE=postgres`.
async fn load_native(app: &TestApp, d: &Data) {
    let url = std::fs::read_to_string(app.dir.path().join("pg_url"))
        .unwrap_or_else(|_| format!("sqlite://{}", app.dir.path().join("qp.db").display()));
    let mut sqls = Vec::new();
    for chunk in d.logs.chunks(200) {
        let rows: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let key = if l.token == 0 { "NULL".to_owned() } else { l.token.to_string() };
                let status = if l.kind == 2 { 200 } else { 500 };
                format!(
                    "({}, 'r{}', {key}, {}, {}, {}, 'chat.completions', {}, {}, {}, {}, {}, {status}, 10, FALSE, {})",
                    l.created_at * 1000, i, esc(&l.token_name), l.user_id, esc(&l.username), esc(&l.model),
                    esc(&d.channels[&l.channel]), l.prompt, l.completion, l.quota, esc(&l.ip)
                )
            })
            .collect();
        sqls.push(format!(
            "INSERT INTO request_log (ts, request_id, key_id, key_name, owner_user_id, owner_username, endpoint, \
             model, upstream, prompt_tokens, completion_tokens, cost, status, latency_ms, is_stream, client_ip) VALUES {}",
            rows.join(", ")
        ));
    }
    exec(&url, &sqls, false).await;
}

async fn get(app: &TestApp, path_and_query: &str) -> (u16, Value) {
    let (s, _, v) = get_engine(app, path_and_query).await;
    (s, v)
}

/// Status, the engine that answered (`X-Monitor-Engine`), body.
async fn get_engine(app: &TestApp, path_and_query: &str) -> (u16, String, Value) {
    let sep = if path_and_query.contains('?') {
        '&'
    } else {
        '?'
    };
    let r = app
        .client
        .get(app.url(&format!("{path_and_query}{sep}nocache=1")))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    let engine = r
        .headers()
        .get("x-monitor-engine")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let (s, v) = status_json(r).await;
    (s, engine, v)
}

/// A rollup that holds the dataset's (old) days, polls quickly and reads small pages (so
/// every load goes through many pages, each fetched while the one before is stored).
fn with_rollup(c: &mut Config) {
    c.monitor.rollup = RollupSettings {
        days: 3650,
        poll: Duration::from_millis(100),
        page: 97,
        max_rows: 0,
    };
}

/// Waits until the rollup has caught up and holds exactly `rows` billed rows.
async fn wait_rollup(app: &TestApp, rows: usize) {
    let mut last = Value::Null;
    for _ in 0..300 {
        let (_, h) =
            status_json(app.client.get(app.url("/api/health")).send().await.unwrap()).await;
        last = h["rollup"].clone();
        if last["state"] == "ready" && last["rows"] == rows {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("rollup did not reach {rows} rows: {last}");
}

/// The same query from the rollup and from SQL: both succeed, each engine says it answered,
/// and the answers are identical.
async fn both_engines(app: &TestApp, q: &str) -> Value {
    let (s, engine, v) = get_engine(app, q).await;
    assert_eq!((s, engine.as_str()), (200, "rollup"), "{q}: {v}");
    let sep = if q.contains('?') { '&' } else { '?' };
    let (s, engine, direct) = get_engine(app, &format!("{q}{sep}engine=sql")).await;
    assert_eq!((s, engine.as_str()), (200, "sql"), "{q}: {direct}");
    assert_eq!(v, direct, "{q}: rollup and SQL differ");
    v
}

fn range() -> String {
    format!(
        "start_ms={}&end_ms={}",
        T0 * 1000,
        (T0 + HOURS * 3600) * 1000
    )
}

/// Every endpoint and parameter combination the comparison covers.
fn queries() -> Vec<String> {
    let r = range();
    let mut q = vec![
        format!("/api/stats/series?{r}&slot_sec=3600"),
        format!("/api/stats/series?{r}"),
        format!("/api/stats/summary?{r}"),
        format!("/api/stats/heatmap?{r}&metric=reqs"),
        format!("/api/stats/heatmap?{r}&metric=tokens&tz=Asia/Shanghai"),
        format!("/api/stats/heatmap?{r}&metric=users"),
        format!("/api/stats/anomalies?{r}&rule=burst"),
        format!("/api/stats/anomalies?{r}&rule=multi_user_token"),
        format!("/api/stats/anomalies?{r}&rule=ip_many_users"),
        format!("/api/stats/anomalies?{r}&rule=big_request"),
        format!("/api/stats/anomalies?{r}&rule=big_request&scope=global&sigma=2.5"),
    ];
    for by in ["user", "token", "model", "channel"] {
        for metric in ["tokens", "reqs", "quota_sum"] {
            q.push(format!(
                "/api/stats/top?{r}&by={by}&metric={metric}&limit=10"
            ));
        }
    }
    q
}

fn check_against_data(path: &str, v: &Value, d: &Data) {
    let data = v["data"].as_array();
    if path.contains("series") && path.contains("slot_sec=3600") {
        let expected = d.series(3600);
        let got = data.unwrap();
        assert_eq!(got.len(), expected.len(), "zero-filled: one point per hour");
        for (g, e) in got.iter().zip(expected) {
            assert_eq!(g["reqs"], e.1, "{g}");
            assert_eq!(g["tokens"], e.2);
            assert_eq!(g["users"], e.3);
            assert_eq!(g["tokens_cnt"], e.4);
            assert_eq!(g["quota_sum"], e.5);
        }
        assert_eq!(got[0]["bucket"], "2026-03-02T00:00:00Z");
    } else if path.contains("series") {
        assert_eq!(
            v["slot_sec"], 3600,
            "48 h → 1-hour buckets by the seed's table"
        );
    } else if path.contains("summary") {
        let c: Vec<&Log> = d.consumed().collect();
        assert_eq!(v["reqs"], c.len());
        assert_eq!(v["tokens"], c.iter().map(|l| l.tokens()).sum::<i64>());
        assert_eq!(v["quota_sum"], c.iter().map(|l| l.quota).sum::<i64>());
    } else if path.contains("top") {
        let by = path.split("by=").nth(1).unwrap().split('&').next().unwrap();
        let metric = path
            .split("metric=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        let expected = d.top(by, metric);
        let got = data.unwrap();
        assert_eq!(got.len(), expected.len().min(10));
        for (g, e) in got.iter().zip(expected) {
            let key = match by {
                "user" => g["user_id"].to_string(),
                "token" => g["token_id"].to_string(),
                "model" => g["model_name"].as_str().unwrap().to_owned(),
                _ => g["channel_id"].to_string(),
            };
            assert_eq!(
                (
                    key,
                    g["reqs"].as_i64().unwrap(),
                    g["tokens"].as_i64().unwrap(),
                    g["quota_sum"].as_i64().unwrap()
                ),
                e,
                "{path}"
            );
        }
        if by == "user" && got.iter().any(|g| g["user_id"] == 1) {
            assert!(got.iter().any(|g| g["username"] == "张三"));
        }
    } else if path.contains("rule=burst") {
        let got: Vec<(i64, usize)> = data
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["token_id"].as_i64().unwrap(),
                    r["request_count"].as_u64().unwrap() as usize,
                )
            })
            .collect();
        assert_eq!(got, d.bursts(60, 120));
        assert_eq!(
            got,
            vec![(BURST_KEY, 130)],
            "the even key and keyless rows do not fire"
        );
    } else if path.contains("multi_user_token") {
        let got: Vec<i64> = data
            .unwrap()
            .iter()
            .map(|r| r["token_id"].as_i64().unwrap())
            .collect();
        let mut expected: Vec<i64> = d.shared_keys(2, 5).iter().map(|k| k.0).collect();
        expected.sort_unstable();
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, expected);
        assert!(got.contains(&MANY_IP_KEY) && got.contains(&SHARED_KEY));
    } else if path.contains("ip_many_users") {
        let got: Vec<(String, u64)> = data
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["ip"].as_str().unwrap().to_owned(),
                    r["user_count"].as_u64().unwrap(),
                )
            })
            .collect();
        let expected: Vec<(String, u64)> = d
            .crowded_ips(5)
            .into_iter()
            .map(|(i, n)| (i, n as u64))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(got[0].0, CROWDED_IP);
    } else if path.contains("big_request") && !path.contains("global") {
        let got: Vec<(i64, i64)> = data
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["token_id"].as_i64().unwrap(),
                    r["token_count"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got.len(), 3, "{got:?}");
        let mut exp = d.outsized(3.0);
        exp.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut g2 = got.clone();
        g2.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        assert_eq!(g2, exp);
        assert!(data.unwrap().iter().all(|r| r["model_name"] == "gpt-4o"));
    } else if path.contains("heatmap") && path.contains("metric=reqs") {
        let cells = data.unwrap();
        assert_eq!(cells.len(), 168);
        let total: i64 = cells.iter().map(|c| c[2].as_i64().unwrap()).sum();
        assert_eq!(total, d.consumed().count() as i64);
        // Monday 02:00 UTC holds the burst.
        let monday_2 = cells.iter().find(|c| c[0] == 2 && c[1] == 0).unwrap();
        assert!(monday_2[2].as_i64().unwrap() >= 130);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_agrees_on_every_backend_and_with_the_data() {
    let d = generate();
    let dir = tempfile::tempdir().unwrap();
    let mut sources: Vec<(String, TestApp)> = Vec::new();
    for db in [Db::Sqlite, Db::Mysql, Db::Postgres] {
        if let Some(dsn) = load(db, &d, dir.path()).await {
            let app = spawn_app_with(|c| {
                c.monitor.source = SourceKind::NewApi;
                c.monitor.dsn = Some(dsn.clone());
                with_rollup(c);
            })
            .await;
            let (s, h) =
                status_json(app.client.get(app.url("/api/health")).send().await.unwrap()).await;
            assert_eq!(
                (s, h["ok"].clone(), h["source"].clone()),
                (200, json!(true), json!("newapi")),
                "{db:?}"
            );
            sources.push((format!("{db:?}"), app));
        }
    }
    let native = spawn_app_with(|c| {
        with_rollup(c);
        native_upstreams(c);
    })
    .await;
    load_native(&native, &d).await;
    sources.push(("native".into(), native));
    let billed = d.consumed().count();
    for (_, app) in &sources {
        wait_rollup(app, billed).await;
    }

    for q in queries() {
        let mut answers = Vec::new();
        for (name, app) in &sources {
            let v = both_engines(app, &q).await;
            check_against_data(&q, &v, &d);
            let mut v = v;
            if let Some(o) = v.as_object_mut() {
                // The native summary adds error rate and latency; the rest must match.
                for k in ["error_rate", "latency_p50_ms", "latency_p95_ms"] {
                    o.remove(k);
                }
            }
            // Dollars are New API's (500 000 quota a dollar); a points-mode native log has none.
            dollars_checked_and_removed(&mut v, name != "native");
            answers.push((name.clone(), v));
        }
        for (name, v) in &answers[1..] {
            assert_eq!(
                v, &answers[0].1,
                "{q}: {name} differs from {}",
                answers[0].0
            );
        }
    }
    let (_, s) = get(
        &sources.last().unwrap().1,
        &format!("/api/stats/summary?{}", range()),
    )
    .await;
    let total = d.logs.len() as f64;
    let errors = d.logs.iter().filter(|l| l.kind != 2).count() as f64;
    assert!(
        (s["error_rate"].as_f64().unwrap() - errors / total).abs() < 1e-9,
        "native error rate"
    );
    for (_, app) in sources {
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_cache_and_csv() {
    let d = generate();
    let dir = tempfile::tempdir().unwrap();
    let dsn = load(Db::Sqlite, &d, dir.path()).await.unwrap();
    let app = spawn_app_with(|c| {
        c.monitor.source = SourceKind::NewApi;
        c.monitor.dsn = Some(dsn);
    })
    .await;
    let r = range();
    let cases = [
        (
            "/api/stats/series?start_ms=2000&end_ms=1000".to_owned(),
            "开始时间必须小于结束时间",
        ),
        (
            format!("/api/stats/series?{r}&slot_sec=7"),
            "不支持的时间粒度",
        ),
        (
            format!(
                "/api/stats/series?start_ms=0&end_ms={}&slot_sec=60",
                30 * 86_400_000i64
            ),
            "参数无效: slot_sec",
        ),
        (format!("/api/stats/top?{r}&by=planet"), "不支持的维度"),
        (format!("/api/stats/top?{r}&metric=vibes"), "不支持的指标"),
        (format!("/api/stats/top?{r}&limit=0"), "参数无效: limit"),
        (
            format!("/api/stats/anomalies?{r}&rule=astrology"),
            "不支持的规则",
        ),
        (
            format!("/api/stats/anomalies?{r}&rule=big_request&sigma=x"),
            "参数无效: sigma",
        ),
        (
            format!("/api/stats/heatmap?{r}&tz=Mars/Olympus"),
            "参数无效: tz",
        ),
        (
            "/api/stats/series?start_ms=abc".to_owned(),
            "参数无效: start_ms",
        ),
        (
            format!("/api/export/csv?{r}&query_type=pie"),
            "参数无效: query_type",
        ),
    ];
    for (q, msg) in cases {
        let (s, v) = get(&app, &q).await;
        assert_eq!(s, 400, "{q}");
        assert_eq!(v["error"], msg, "{q}");
        assert_eq!(v["code"], 400);
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    // Auth: admin and viewer read; nothing else does. Health is open.
    let r2 = app
        .client
        .get(app.url(&format!("/api/stats/summary?{r}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r2.status().as_u16(), 401);
    let r2 = app.client.get(app.url("/api/health")).send().await.unwrap();
    assert_eq!(r2.status().as_u16(), 200);

    // Cache: MISS, then HIT with the same bytes; nocache bypasses.
    let url = app.url(&format!("/api/stats/top?{r}&by=token&metric=reqs"));
    let a = app
        .client
        .get(&url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(a.headers()["x-cache"], "MISS");
    let a = a.bytes().await.unwrap();
    let b = app
        .client
        .get(&url)
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(b.headers()["x-cache"], "HIT");
    assert_eq!(b.bytes().await.unwrap(), a, "byte-identical");
    let c = app
        .client
        .get(format!("{url}&nocache=1"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(c.headers()["x-cache"], "MISS");

    // CSV for each query type: BOM, header = JSON field names, rows parse, formulas neutralised.
    for (qt, extra) in [
        ("series", "&slot_sec=3600"),
        ("top", "&by=token&metric=reqs&limit=40"),
        ("anomalies", "&rule=multi_user_token"),
    ] {
        let (_, json_v) = get(
            &app,
            &format!(
                "/api/stats/{}?{r}{extra}",
                if qt == "series" || qt == "top" {
                    qt
                } else {
                    "anomalies"
                }
            ),
        )
        .await;
        let resp = app
            .client
            .get(app.url(&format!("/api/export/csv?{r}&query_type={qt}{extra}")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert!(
            resp.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .starts_with("attachment")
        );
        let bytes = resp.bytes().await.unwrap();
        assert_eq!(&bytes[..3], b"\xEF\xBB\xBF", "UTF-8 BOM");
        let mut rdr = csv::Reader::from_reader(&bytes[3..]);
        let header: Vec<String> = rdr.headers().unwrap().iter().map(str::to_owned).collect();
        let rows_json = json_v["data"].as_array().unwrap();
        let expected_header: Vec<String> =
            rows_json[0].as_object().unwrap().keys().cloned().collect();
        assert_eq!(header, expected_header, "{qt}");
        let records: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
        assert_eq!(records.len(), rows_json.len(), "{qt}");
        if qt == "top" {
            let i = header.iter().position(|h| h == "token_name").unwrap();
            let names: Vec<&str> = records.iter().map(|rec| rec.get(i).unwrap()).collect();
            assert!(
                names.contains(&format!("'{FORMULA_NAME}").as_str()),
                "{names:?}"
            );
            assert!(!names.contains(&FORMULA_NAME));
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_503_when_the_database_goes_away_and_recovers() {
    let Some(admin) = server_url("TEST_PG_URL") else {
        return;
    };
    let d = generate();
    let dir = tempfile::tempdir().unwrap();
    let dsn = load(Db::Postgres, &d, dir.path()).await.unwrap();
    let name = dsn.rsplit('/').next().unwrap().to_owned();
    let app = spawn_app_with(|c| {
        c.monitor.source = SourceKind::NewApi;
        c.monitor.dsn = Some(dsn.clone());
        with_rollup(c);
    })
    .await;
    wait_rollup(&app, d.consumed().count()).await;
    let health = || async {
        app.client
            .get(app.url("/api/health"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(health().await, 200);
    exec(
        &admin,
        &[
            format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            ),
        ],
        false,
    )
    .await;
    let mut down = 0;
    for _ in 0..50 {
        if health().await == 503 {
            down += 1;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(down, 1, "503 while the database refuses connections");
    let (s, v) = get(&app, &format!("/api/stats/summary?{}&engine=sql", range())).await;
    assert_eq!((s, v["error"].clone()), (503, json!("服务不可用")));
    // The rollup goes on answering from what it read before the outage.
    let (s, engine, v) = get_engine(&app, &format!("/api/stats/summary?{}", range())).await;
    assert_eq!((s, engine.as_str()), (200, "rollup"));
    assert_eq!(v["reqs"], d.consumed().count());
    exec(
        &admin,
        &[format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")],
        false,
    )
    .await;
    let mut up = false;
    for _ in 0..50 {
        if health().await == 200 {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "recovers when the database returns");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_command_serves_a_new_api_database_alone() {
    let d = generate();
    let dir = tempfile::tempdir().unwrap();
    let dsn = load(Db::Sqlite, &d, dir.path()).await.unwrap();
    let (mut child, base) = spawn_monitor(&dsn, dir.path(), &[]).await;
    let client = http_client();
    let r = client
        .get(format!("{base}/api/stats/summary?{}", range()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let (s, v) = status_json(r).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["reqs"], d.consumed().count());
    // Only the monitor: no gateway, no key API.
    let r = client
        .get(format!("{base}/api/v1/quota"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // Millions of rows in small columns: glibc alone keeps them compact (`memory::SplitAlloc`).
    let log = std::fs::read_to_string(dir.path().join("monitor-stderr.log")).unwrap();
    assert!(log.contains("allocator=\"glibc\""), "{log}");
    assert!(log.contains("sqlite_on_mimalloc=false"), "{log}");
    // The New API file was opened read-only: it is unchanged.
    let before = std::fs::metadata(&dsn).unwrap().len();
    drop(child.start_kill());
    let _ = child.wait().await;
    assert_eq!(std::fs::metadata(&dsn).unwrap().len(), before);
}

/// One more consume row in New API's shape, with an explicit id.
fn log_row(id: i64, created_at: i64, token: i64, kind: i64) -> String {
    format!(
        "INSERT INTO logs (id, user_id, created_at, type, content, username, token_name, model_name, quota, \
         prompt_tokens, completion_tokens, use_time, is_stream, channel_id, token_id, \"group\", ip, other) \
         VALUES ({id}, 7, {created_at}, {kind}, '', 'late-user', 'late-key', 'gpt-4o', 900, 100, 200, 10, FALSE, 1, \
         {token}, 'default', '198.51.100.9', '')"
    )
}

async fn count_billed(url: &str) -> usize {
    let pool = AnyPool::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM logs WHERE type = 2")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n as usize
}

/// The rollup follows the source: new rows, a row whose id commits after a higher one
/// (the feed must go back for it), and New API's cleanup deleting the oldest logs. After
/// each step every endpoint still agrees with direct SQL, with and without a memory budget
/// (then the deleted rows are in the archive's hours on disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollup_follows_new_rows_late_ids_and_deleted_logs() {
    let d = generate();
    // Without a budget, and with one that keeps two thirds of the hours on disk.
    for (db, budget) in [Db::Sqlite, Db::Mysql, Db::Postgres]
        .into_iter()
        .flat_map(|db| [(db, 0), (db, d.consumed().count() / 3)])
    {
        let dir = tempfile::tempdir().unwrap();
        let Some((dsn, writer)) = load_rw(db, &d, dir.path()).await else {
            continue;
        };
        let mysql = db == Db::Mysql;
        let app = spawn_app_with(|c| {
            c.monitor.source = SourceKind::NewApi;
            c.monitor.dsn = Some(dsn.clone());
            with_rollup(c);
            c.monitor.rollup.max_rows = budget;
        })
        .await;
        let mut billed = d.consumed().count();
        wait_held(&app, billed).await;
        let max_id = d.logs.len() as i64;
        let now = chrono::Utc::now().timestamp();
        let recent = format!(
            "start_ms={}&end_ms={}",
            (now - 3600) * 1000,
            (now + 3600) * 1000
        );

        // New rows now: one billed, one top-up that must not count.
        exec(
            &writer,
            &[
                log_row(max_id + 1, now, BURST_KEY, 2),
                log_row(max_id + 2, now, BURST_KEY, 1),
            ],
            mysql,
        )
        .await;
        billed += 1;
        wait_held(&app, billed).await;
        let v = both_engines(&app, &format!("/api/stats/summary?{recent}")).await;
        assert_eq!(v["reqs"], 1, "{db:?} {budget}");

        // Id max+10 becomes visible before max+5: the feed reads past the gap, then back.
        exec(&writer, &[log_row(max_id + 10, now, SHARED_KEY, 2)], mysql).await;
        billed += 1;
        wait_held(&app, billed).await;
        exec(&writer, &[log_row(max_id + 5, now, SHARED_KEY, 2)], mysql).await;
        billed += 1;
        wait_held(&app, billed).await;
        let v = both_engines(&app, &format!("/api/stats/summary?{recent}")).await;
        assert_eq!(v["reqs"], 3, "{db:?}");
        both_engines(
            &app,
            &format!("/api/stats/top?{recent}&by=token&metric=reqs"),
        )
        .await;

        // New API's log cleanup: the oldest third of the logs goes.
        exec(
            &writer,
            &[format!("DELETE FROM logs WHERE id <= {}", max_id / 3)],
            mysql,
        )
        .await;
        let left = count_billed(&writer).await;
        assert!(left < billed, "{db:?}: the delete removed billed rows");
        wait_held(&app, left).await;
        for q in queries() {
            both_engines(&app, &q).await;
        }
        app.stop().await;
    }
}

/// A restart restores the rollup from its snapshot (written at shutdown) and reads only the
/// rows added since, on every backend: rows added while it was down, and a row whose id
/// commits later, are each counted once, and every endpoint still agrees with direct SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_restores_the_rollup_and_reads_only_newer_rows() {
    let d = generate();
    for db in [Db::Sqlite, Db::Mysql, Db::Postgres] {
        let src_dir = tempfile::tempdir().unwrap();
        let Some((dsn, writer)) = load_rw(db, &d, src_dir.path()).await else {
            continue;
        };
        let mysql = db == Db::Mysql;
        let newapi = |c: &mut Config| {
            c.monitor.source = SourceKind::NewApi;
            c.monitor.dsn = Some(dsn.clone());
            with_rollup(c);
        };
        let app = spawn_app_with(newapi).await;
        let billed = d.consumed().count();
        wait_rollup(&app, billed).await;
        let (_, h) =
            status_json(app.client.get(app.url("/api/health")).send().await.unwrap()).await;
        assert_eq!(
            h["rollup"]["restored_rows"], 0,
            "{db:?}: a first start reads the source"
        );
        let before = both_engines(&app, &format!("/api/stats/summary?{}", range())).await;
        let data_dir = app.stop().await;
        let snapshots: Vec<_> = std::fs::read_dir(data_dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("monitor-rollup-")
            })
            .collect();
        assert_eq!(
            snapshots.len(),
            1,
            "{db:?}: one snapshot written at shutdown"
        );
        let name = snapshots[0].file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains("logs") && !dsn.contains(&name),
            "no DSN in the file name"
        );

        // While it is down: two new rows, leaving a gap the next row fills later.
        let max_id = d.logs.len() as i64;
        let now = chrono::Utc::now().timestamp();
        exec(
            &writer,
            &[
                log_row(max_id + 1, now, BURST_KEY, 2),
                log_row(max_id + 3, now, SHARED_KEY, 2),
            ],
            mysql,
        )
        .await;
        let app = spawn_in(data_dir, newapi).await;
        wait_rollup(&app, billed + 2).await;
        let (_, h) =
            status_json(app.client.get(app.url("/api/health")).send().await.unwrap()).await;
        assert_eq!(
            h["rollup"]["restored_rows"], billed,
            "{db:?}: the old rows come from the snapshot"
        );
        exec(&writer, &[log_row(max_id + 2, now, SHARED_KEY, 2)], mysql).await;
        wait_rollup(&app, billed + 3).await;
        let after = both_engines(&app, &format!("/api/stats/summary?{}", range())).await;
        assert_eq!(
            before, after,
            "{db:?}: the restored range answers as before"
        );
        let recent = format!(
            "start_ms={}&end_ms={}",
            (now - 3600) * 1000,
            (now + 3600) * 1000
        );
        let v = both_engines(&app, &format!("/api/stats/summary?{recent}")).await;
        assert_eq!(v["reqs"], 3, "{db:?}: each new row counted once");
        for q in queries() {
            both_engines(&app, &q).await;
        }
        app.stop().await;
    }
}

/// An operator's memory budget: the rollup keeps the newest hours that fit in memory and the
/// older ones on disk (its archive, beside the snapshot), so every range, inside the hours in
/// memory, across them and wholly before them, is still answered by the rollup, equal to
/// direct SQL and to the data, on every backend. After a restart the archive is taken back
/// as the snapshot named it, and rows arriving since are counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_budget_keeps_the_older_hours_on_disk_and_every_answer_stays_equal() {
    let d = generate();
    for db in [Db::Sqlite, Db::Mysql, Db::Postgres] {
        let src_dir = tempfile::tempdir().unwrap();
        if let Some((dsn, writer)) = load_rw(db, &d, src_dir.path()).await {
            budgeted(&d, db, &dsn, &writer).await;
        }
    }
}

/// The same on the gateway's own request log (times in milliseconds), its rows written
/// after the rollup is ready: the budget moves hours to disk as they come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_budget_on_the_native_log_keeps_every_answer_equal() {
    let d = generate();
    let billed = d.consumed().count();
    let budget = billed / 4;
    let app = spawn_app_with(|c| {
        with_rollup(c);
        c.monitor.rollup.max_rows = budget;
        native_upstreams(c);
    })
    .await;
    load_native(&app, &d).await;
    let rollup = wait_held(&app, billed).await;
    assert!(
        rollup["rows"].as_u64().unwrap() as usize <= budget,
        "{rollup}"
    );
    assert!(
        rollup["archived_rows"].as_u64().unwrap() as usize >= billed - budget,
        "{rollup}"
    );
    for q in queries() {
        let v = both_engines(&app, &q).await;
        check_against_data(&q, &v, &d);
    }
    for r in split_ranges(T0 + 30 * 3600) {
        summary_counts(&app, &d, r, &[], "native").await;
    }
    app.stop().await;
}

/// The summary over `[lo, hi)` from both engines, its request count checked against the
/// data plus the `extra` rows' times written by the test.
async fn summary_counts(app: &TestApp, d: &Data, (lo, hi): (i64, i64), extra: &[i64], label: &str) {
    let q = format!(
        "/api/stats/summary?start_ms={}&end_ms={}",
        lo * 1000,
        hi * 1000
    );
    let v = both_engines(app, &q).await;
    let want = d
        .consumed()
        .filter(|l| l.created_at >= lo && l.created_at < hi)
        .count()
        + extra.iter().filter(|t| **t >= lo && **t < hi).count();
    assert_eq!(v["reqs"], want, "{label}: {q}");
}

async fn health_rollup(app: &TestApp) -> Value {
    let (_, h) = status_json(app.client.get(app.url("/api/health")).send().await.unwrap()).await;
    h["rollup"].clone()
}

/// Waits until the rollup is ready and holds `total` rows in memory and on disk together.
async fn wait_held(app: &TestApp, total: usize) -> Value {
    let mut r = Value::Null;
    for _ in 0..400 {
        r = health_rollup(app).await;
        let held = r["rows"].as_u64().unwrap_or(0) + r["archived_rows"].as_u64().unwrap_or(0);
        if r["state"] == "ready" && held == total as u64 {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the rollup did not come to hold {total} rows: {r}");
}

/// Summary queries over the ranges a budget splits: wholly archived, across, wholly in memory.
fn split_ranges(memory_from: i64) -> Vec<(i64, i64)> {
    vec![
        (T0, T0 + 2 * 3600),
        (T0 + 3600, memory_from + 3600),
        (memory_from, T0 + HOURS * 3600),
        (T0 - 7 * 86_400, T0 + 7 * 86_400),
    ]
}

async fn budgeted(d: &Data, db: Db, dsn: &str, writer: &str) {
    let billed = d.consumed().count();
    let budget = billed / 3;
    let config = |c: &mut Config| {
        c.monitor.source = SourceKind::NewApi;
        c.monitor.dsn = Some(dsn.to_owned());
        with_rollup(c);
        c.monitor.rollup.max_rows = budget;
    };
    let app = spawn_app_with(config).await;
    let rollup = wait_held(&app, billed).await;
    let held = rollup["rows"].as_u64().unwrap() as usize;
    let archived = rollup["archived_rows"].as_u64().unwrap() as usize;
    assert!(
        held > 0 && held <= budget,
        "{db:?}: {held} rows in memory, budget {budget}"
    );
    assert!(
        archived >= billed - budget,
        "{db:?}: {archived} rows on disk"
    );
    let covered = chrono::DateTime::parse_from_rfc3339(rollup["covered_from"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert!(covered <= T0, "{db:?}: nothing was let go ({covered})");
    for q in queries() {
        let v = both_engines(&app, &q).await;
        check_against_data(&q, &v, d);
    }
    // Where memory begins: the archive holds every hour before it.
    let memory_from = T0 + HOURS * 3600 - (held as i64 * HOURS * 3600) / billed as i64;
    let memory_from = memory_from - memory_from.rem_euclid(3600);
    for (lo, hi) in split_ranges(memory_from) {
        summary_counts(&app, d, (lo, hi), &[], &format!("{db:?}")).await;
        let q = format!(
            "/api/stats/top?start_ms={}&end_ms={}&by=user&metric=reqs&limit=5",
            lo * 1000,
            hi * 1000
        );
        both_engines(&app, &q).await;
        let q = format!(
            "/api/stats/anomalies?start_ms={}&end_ms={}&rule=burst",
            lo * 1000,
            hi * 1000
        );
        both_engines(&app, &q).await;
    }

    // A restart takes the archive back; rows written meanwhile, one of them in an archived
    // hour (a late id), are each counted once.
    let data_dir = app.stop().await;
    let max_id = d.logs.len() as i64;
    let mysql = db == Db::Mysql;
    exec(
        writer,
        &[
            log_row(max_id + 1, T0 + 60, SHARED_KEY, 2),
            log_row(max_id + 2, T0 + HOURS * 3600 - 60, SHARED_KEY, 2),
        ],
        mysql,
    )
    .await;
    let app = spawn_in(data_dir, config).await;
    let rollup = wait_held(&app, billed + 2).await;
    assert!(
        rollup["restored_rows"].as_u64().unwrap() > 0,
        "{db:?}: restored from the snapshot: {rollup}"
    );
    assert!(
        rollup["archived_rows"].as_u64().unwrap() >= archived as u64,
        "{rollup}"
    );
    for r in split_ranges(memory_from) {
        let label = format!("{db:?} after the restart");
        summary_counts(&app, d, r, &[T0 + 60, T0 + HOURS * 3600 - 60], &label).await;
    }
    for q in queries() {
        both_engines(&app, &q).await;
    }
    app.stop().await;
}

/// A database whose newest rows are months old (the test data is from March): the horizon
/// counts back from its newest row, so a one-day rollup holds the data's last day. Ranges
/// inside it are answered from memory, ranges reaching before it by SQL, every answer equal
/// to the other engine and to the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_horizon_counts_back_from_the_newest_row_of_an_old_database() {
    let d = generate();
    let dir = tempfile::tempdir().unwrap();
    for db in [Db::Sqlite, Db::Mysql, Db::Postgres] {
        if let Some(dsn) = load(db, &d, dir.path()).await {
            horizon_of_an_old_database(&d, &dsn).await;
        }
    }
}

async fn horizon_of_an_old_database(d: &Data, dsn: &str) {
    let app = spawn_app_with(|c| {
        c.monitor.source = SourceKind::NewApi;
        c.monitor.dsn = Some(dsn.to_owned());
        with_rollup(c);
        c.monitor.rollup.days = 1;
    })
    .await;
    let newest = d.consumed().map(|l| l.created_at).max().unwrap();
    let from = (newest - 86_400).div_euclid(3600) * 3600;
    let held = d.consumed().filter(|l| l.created_at >= from).count();
    wait_rollup(&app, held).await;
    let (_, h) = status_json(app.client.get(app.url("/api/health")).send().await.unwrap()).await;
    let covered =
        chrono::DateTime::parse_from_rfc3339(h["rollup"]["covered_from"].as_str().unwrap())
            .unwrap()
            .timestamp();
    assert_eq!(
        covered, from,
        "one day back from the newest row, at an hour boundary"
    );

    // Inside: from memory, equal to SQL and to the data.
    let end = (T0 + HOURS * 3600) * 1000;
    let inside = format!("/api/stats/summary?start_ms={}&end_ms={end}", from * 1000);
    let v = both_engines(&app, &inside).await;
    let expected: Vec<_> = d.consumed().filter(|l| l.created_at >= from).collect();
    assert_eq!(v["reqs"], expected.len());
    assert_eq!(
        v["tokens"],
        expected.iter().map(|l| l.tokens()).sum::<i64>()
    );
    // Every endpoint the comparison covers, over the held day: from memory, as SQL answers.
    let held_range = format!("start_ms={}&end_ms={end}", from * 1000);
    for q in queries() {
        both_engines(&app, &q.replace(&range(), &held_range)).await;
    }

    // Across the horizon: SQL, and the whole data.
    let across = format!("/api/stats/summary?{}", range());
    let (s, engine, v) = get_engine(&app, &across).await;
    assert_eq!((s, engine.as_str()), (200, "sql"));
    check_against_data(&across, &v, d);
    app.stop().await;
}

/// Checks every `quota_usd` beside a `quota_sum` is New API's conversion of it (present when
/// `expected`, absent otherwise), then removes it so sources compare on the rest.
fn dollars_checked_and_removed(v: &mut Value, expected: bool) {
    match v {
        Value::Array(items) => items
            .iter_mut()
            .for_each(|i| dollars_checked_and_removed(i, expected)),
        Value::Object(o) => {
            if let Some(q) = o.get("quota_sum").and_then(Value::as_i64) {
                let usd = o.remove("quota_usd");
                if expected {
                    let want = (q as f64 / 500_000.0 * 1e6).round() / 1e6;
                    assert_eq!(usd, Some(json!(want)), "quota_usd of {q}");
                } else {
                    assert_eq!(usd, None, "no dollars for points");
                }
            }
            o.values_mut()
                .for_each(|x| dollars_checked_and_removed(x, expected));
        }
        _ => {}
    }
}
