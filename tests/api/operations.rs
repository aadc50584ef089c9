//! Operability against the real server: Prometheus metrics (parsed with a Prometheus text
//! parser), retention with an injected clock, JSON logs, `check-config`.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

const METRICS_TOKEN: &str = "metrics-token-for-tests";

async fn scrape(app: &TestApp) -> Vec<prometheus_parse::Sample> {
    let r = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap()
        .samples
}

/// The sum over samples of `name` whose labels include `labels` (a histogram counts its
/// observations).
fn total(samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(b) => b
                .iter()
                .find(|c| c.less_than.is_infinite())
                .map_or(0.0, |c| c.count),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic_and_carry_no_secret() {
    let app = spawn_app_with(|c| c.metrics_token = Some(METRICS_TOKEN.into())).await;
    // The token is asked for, and a wrong one refused.
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let before = scrape(&app).await;
    let (key, _) = app.create_key(json!({"quota": 1000})).await;
    for _ in 0..3 {
        assert_eq!(app.use_amount(&key, 1).await.0, 200);
    }
    assert_eq!(app.mock_chat(&key).await.status(), 200);
    let r = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "mock-1", "stream": true,
            "messages": [{"role": "user", "content": "hi there"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();
    let (s, _) = app
        .admin_get("/api/stats/summary?nocache=1&engine=sql")
        .await;
    assert_eq!(s, 200);
    // Log rows are written off the response path.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = scrape(&app).await;

    let moved = |name: &str, labels: &[(&str, &str)]| {
        total(&after, name, labels) - total(&before, name, labels)
    };
    let use_route = [
        ("route", "/api/v1/use"),
        ("method", "POST"),
        ("status", "200"),
    ];
    // Other tests in this process share the recorder: counts move by at least ours.
    assert!(moved("qp_http_requests_total", &use_route) >= 3.0);
    assert!(
        moved(
            "qp_http_request_duration_seconds",
            &[("route", "/api/v1/use")]
        ) >= 3.0
    );
    assert!(
        moved(
            "qp_http_requests_total",
            &[("route", "/v1/chat/completions"), ("status", "200")]
        ) >= 2.0
    );
    assert!(
        moved(
            "qp_gateway_overhead_seconds",
            &[("endpoint", "chat.completions")]
        ) >= 2.0
    );
    assert!(moved("qp_gateway_requests_total", &[("outcome", "ok")]) >= 2.0);
    assert!(moved("qp_upstream_duration_seconds", &[("upstream", "mock")]) >= 2.0);
    assert!(moved("qp_upstream_ttft_seconds", &[("upstream", "mock")]) >= 1.0);
    assert!(moved("qp_tokens_total", &[("kind", "prompt")]) > 0.0);
    assert!(moved("qp_tokens_total", &[("kind", "completion")]) > 0.0);
    assert!(moved("qp_cost_points_total", &[]) >= 2.0);
    assert!(moved("qp_ledger_commit_batch_size", &[]) >= 1.0);
    assert!(moved("qp_ledger_commit_duration_seconds", &[]) >= 1.0);
    assert!(moved("qp_request_log_rows_total", &[]) >= 2.0);
    assert!(
        moved(
            "qp_http_requests_total",
            &[("route", "/api/stats/summary"), ("status", "200")]
        ) >= 1.0
    );
    // Gauges exist (the rollup's only when the monitor keeps one).
    for name in [
        "qp_ledger_queue_depth",
        "qp_request_log_queue_depth",
        "qp_monitor_rollup_rows",
        "qp_monitor_rollup_archived_rows",
    ] {
        assert!(after.iter().any(|s| s.metric == name), "{name} missing");
    }
    // Bounded labels: no key, token, IP or request id anywhere in a label.
    let secret_bits = [key.as_str(), ADMIN, METRICS_TOKEN, "127.0.0.1", "req_"];
    for s in &after {
        for (k, v) in s.labels.iter() {
            assert!(
                !secret_bits.iter().any(|b| v.contains(b)),
                "{}: {k}={v}",
                s.metric
            );
        }
    }
    // The label names used are the documented ones.
    let mut label_names: HashMap<&str, ()> = HashMap::new();
    for s in after.iter().filter(|s| s.metric.starts_with("qp_")) {
        for (k, _) in s.labels.iter() {
            label_names.insert(k.as_str(), ());
        }
    }
    for k in label_names.keys() {
        assert!(
            [
                "route", "method", "status", "endpoint", "outcome", "upstream", "model", "kind",
                "channel"
            ]
            .contains(k),
            "unexpected label {k}"
        );
    }
    app.stop().await;
}

async fn history(app: &TestApp, id: i64) -> i64 {
    let (s, v) = app
        .admin_get(&format!("/admin/usage/history?key={id}&limit=100"))
        .await;
    assert_eq!(s, 200);
    v["total"].as_i64().unwrap()
}

async fn requests(app: &TestApp) -> i64 {
    app.admin_get("/admin/requests?limit=100").await.1["total"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_each_table_past_its_age_and_keeps_recent_rows() {
    let app = spawn_app_with(|c| {
        c.retention.usage_history_days = 90;
        c.retention.request_log_days = 30;
        c.retention.audit_days = 365;
        c.retention.every = Duration::from_millis(200);
    })
    .await;
    let (key, id) = app.create_key(json!({"quota": 1000})).await;
    for _ in 0..3 {
        assert_eq!(app.use_amount(&key, 1).await.0, 200);
    }
    assert_eq!(app.mock_chat(&key).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        history(&app, id).await,
        4,
        "three consumes and one gateway call"
    );
    assert_eq!(requests(&app).await, 1);

    // 40 days later: the request log (30 d) goes, history (90 d) and audit (365 d) stay.
    app.clock.advance_ms(40 * 86_400_000);
    assert_eq!(app.use_amount(&key, 1).await.0, 200);
    let r = app.mock_chat(&key).await;
    assert_eq!(r.status(), 200);
    let recent_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    // Settled and logged off the response path: wait for the new rows, and for the purge.
    let mut log = serde_json::Value::Null;
    for _ in 0..50 {
        log = app.admin_get("/admin/requests?limit=100").await.1;
        if log["total"] == 1 && log["requests"][0]["requestId"] == recent_id.as_str() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        log["total"], 1,
        "old request-log rows were not purged: {log}"
    );
    assert_eq!(log["requests"][0]["requestId"], recent_id.as_str());
    assert_eq!(history(&app, id).await, 6, "history is kept 90 days");

    // 100 days after the start: the first four history rows go, the two recent stay.
    app.clock.advance_ms(60 * 86_400_000);
    let mut left = 0;
    for _ in 0..50 {
        left = history(&app, id).await;
        if left == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 2);
    // The audit log (365 d) still holds the key's creation; the key itself is untouched.
    let (_, audit) = app.admin_get("/admin/audit?limit=100").await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "key.create")
    );
    assert_eq!(app.quota(&key).await["used"], 6);
    app.stop().await;
}

const UPSTREAM_SECRET: &str = "sk-upstream-secret-0123456789abcdef";
const WEBHOOK_TOKEN: &str = "hook0123456789abcdef0123456789";
const SIGN_SECRET: &str = "SECsign0123456789abcdef";
const DB_PASSWORD: &str = "db-pass-0123456789";

/// A config naming one upstream that is down (so calls fail and log warnings), a webhook
/// and a New API DSN, each with a secret.
fn config_with_secrets(dir: &std::path::Path, dead_port: u16) -> std::path::PathBuf {
    let file = dir.join("quota-proxy.toml");
    std::fs::write(
        &file,
        format!(
            r#"
metrics_token = "{METRICS_TOKEN}"
log_retention_days = 30
[retention]
audit_days = 400

[[upstreams]]
name = "primary"
base_url = "http://127.0.0.1:{dead_port}/v1"
api_key = "{UPSTREAM_SECRET}"
models = ["*"]
connect_timeout_ms = 300

[alerts]
enabled = false
[[alerts.channels]]
name = "ops"
kind = "dingtalk"
url = "https://oapi.dingtalk.com/robot/send?access_token={WEBHOOK_TOKEN}"
secret = "{SIGN_SECRET}"

[monitor]
dsn = "mysql://newapi:{DB_PASSWORD}@127.0.0.1:3306/newapi"
"#
        ),
    )
    .unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_parse_line_by_line_with_request_ids_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_with_secrets(dir.path(), free_port());
    // The DSN is only for `check-config`; this server reads its own log.
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("[monitor]\n", "")
        .replace(
            &format!("dsn = \"mysql://newapi:{DB_PASSWORD}@127.0.0.1:3306/newapi\"\n"),
            "",
        );
    std::fs::write(&file, text).unwrap();
    let port = free_port();
    let server = BinaryServer::start(
        dir.path(),
        port,
        &[
            ("LOG_FORMAT", "json"),
            ("QUOTA_PROXY_CONFIG", file.to_str().unwrap()),
        ],
    )
    .await;
    let client = http_client();
    let r = client
        .post(format!("{}/admin/keys", server.base))
        .bearer_auth(ADMIN)
        .json(&json!({"quota": 10}))
        .send()
        .await
        .unwrap();
    let key = r.json::<serde_json::Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    // A call whose upstream is down: warnings with the request id, never the upstream key.
    let r = client
        .post(format!("{}/v1/chat/completions", server.base))
        .bearer_auth(&key)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let r = client
        .get(format!("{}/api/v1/quota", server.base))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.stderr();
    let mut lines = 0;
    let mut with_id = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        lines += 1;
        if v["request_id"] == request_id.as_str() {
            with_id += 1;
        }
    }
    assert!(lines >= 5, "{log}");
    assert!(
        with_id >= 2,
        "the failed attempt and the request line: {log}"
    );
    for secret in [
        key.as_str(),
        ADMIN,
        UPSTREAM_SECRET,
        WEBHOOK_TOKEN,
        SIGN_SECRET,
        METRICS_TOKEN,
    ] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
    assert!(!log.contains('\u{1b}'), "escape codes in a JSON log");
    drop(server);

    // The default text format: no colour codes when stderr is a file.
    let port = free_port();
    let server = BinaryServer::start(dir.path(), port, &[]).await;
    http_client()
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    let log = server.stderr();
    assert!(log.contains("listening") || log.contains("INFO"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a redirected log: {log:?}"
    );
}

#[test]
fn check_config_prints_the_effective_settings_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_with_secrets(dir.path(), 9);
    let out = std::process::Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&file)
        .env("ADMIN_TOKEN", ADMIN)
        .env("RETENTION_ALERTS_DAYS", "7")
        .env(
            "DATABASE_URL",
            format!("postgres://qp:{DB_PASSWORD}@db.internal:5432/quota"),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["upstreams"][0]["name"], "primary");
    assert_eq!(v["retention"]["request_log_days"], 30);
    assert_eq!(v["retention"]["audit_days"], 400);
    assert_eq!(v["retention"]["alerts_days"], 7, "env over file");
    assert_eq!(v["alerts"]["channels"][0]["kind"], "dingtalk");
    assert!(
        v["monitor"]["dsn"]
            .as_str()
            .unwrap()
            .starts_with("mysql://newapi:***@")
    );
    assert!(v["admin_token"].as_str().unwrap().contains("chars"));
    assert_eq!(
        v["database_url"], "postgres://qp:***@db.internal:5432/quota",
        "the shared database, its password masked"
    );
    for secret in [
        ADMIN,
        UPSTREAM_SECRET,
        WEBHOOK_TOKEN,
        SIGN_SECRET,
        DB_PASSWORD,
        METRICS_TOKEN,
    ] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "a secret was printed"
        );
    }

    // An invalid file: a non-zero exit that names the problem.
    std::fs::write(&file, "prot = 1\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("prot"));
}
