use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use quota_proxy::app::App;
use quota_proxy::clock::OffsetClock;
use quota_proxy::config::Config;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN: &str = "test-admin-token-0123456789";
pub const VIEWER: &str = "test-viewer-token-0123456789";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: OffsetClock,
    pub dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<()>>,
}

pub fn test_config(dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        sqlite_path: dir.join("qp.db"),
        admin_token: Some(ADMIN.to_owned()),
        viewer_token: Some(VIEWER.to_owned()),
        ..Config::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    spawn_in(dir, tweak).await
}

/// Starts the app on a fresh port, over the database already in `dir` (if any).
pub async fn spawn_in(dir: TempDir, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config(dir.path());
    shared_store(dir.path(), &mut config).await;
    tweak(&mut config);
    let clock = OffsetClock::new();
    let app = App::build(config, Arc::new(clock.clone())).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let join = tokio::spawn(async move {
        app.serve(listener, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    TestApp {
        base: format!("http://{addr}"),
        client: http_client(),
        clock,
        dir,
        stop: Some(tx),
        join: Some(join),
    }
}

/// With `QP_TEST_STORE=postgres` (scripts/test.sh runs the quota, gateway and monitor
/// suites so once more), the app keeps everything in a fresh PostgreSQL database; a restart
/// in the same dir finds the same database.
async fn shared_store(dir: &Path, config: &mut Config) {
    if std::env::var("QP_TEST_STORE").as_deref() != Ok("postgres") {
        return;
    }
    let marker = dir.join("pg_url");
    let url = match std::fs::read_to_string(&marker) {
        Ok(u) => u,
        Err(_) => {
            let u = crate::instances::fresh_pg()
                .await
                .expect("QP_TEST_STORE=postgres needs TEST_PG_URL");
            std::fs::write(&marker, &u).unwrap();
            u
        }
    };
    config.database_url = Some(url);
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Graceful stop; returns the data dir so a test can start again on the same database.
    pub async fn stop(mut self) -> TempDir {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(j) = self.join.take() {
            j.await.unwrap();
        }
        self.dir
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        status_json(r).await
    }

    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        status_json(r).await
    }

    /// One chat completion through the gateway (the built-in mock answers `mock-chat`).
    pub async fn mock_chat(&self, key: &str) -> reqwest::Response {
        self.client
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
    }

    /// Creates one key; returns (full key, id).
    pub async fn create_key(&self, body: Value) -> (String, i64) {
        let (s, v) = self.admin_post("/admin/keys", body).await;
        assert_eq!(s, 200, "{v}");
        (
            v["key"].as_str().unwrap().to_owned(),
            v["id"].as_i64().unwrap(),
        )
    }

    pub async fn key_get(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(self.url(path))
            .header("X-API-Key", key)
            .send()
            .await
            .unwrap();
        status_json(r).await
    }

    pub async fn key_post(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("X-API-Key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        status_json(r).await
    }

    pub async fn use_amount(&self, key: &str, amount: i64) -> (u16, Value) {
        self.key_post(key, "/api/v1/use", json!({ "amount": amount }))
            .await
    }

    pub async fn quota(&self, key: &str) -> Value {
        let (s, v) = self.key_get(key, "/api/v1/quota").await;
        assert_eq!(s, 200, "{v}");
        v
    }
}

pub async fn status_json(r: reqwest::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (s, v)
}

pub fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// The real binary, serving on a free port over `dir`.
pub struct BinaryServer {
    pub child: tokio::process::Child,
    pub base: String,
    pub stderr_path: PathBuf,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_quota-proxy")
}

impl BinaryServer {
    pub async fn start(dir: &Path, port: u16, extra_env: &[(&str, &str)]) -> Self {
        let stderr_path = dir.join(format!("stderr-{}.log", rand_suffix()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = tokio::process::Command::new(bin());
        cmd.arg("serve")
            .arg("--port")
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(dir)
            .env_remove("ADMIN_TOKEN")
            .env("ADMIN_TOKEN", ADMIN)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let client = http_client();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{base}/healthz")).send().await
                && r.status().is_success()
            {
                return Self {
                    child,
                    base,
                    stderr_path,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("binary did not become healthy");
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

/// `quota-proxy monitor --source newapi --dsn <dsn>` on a free port, once `/api/health`
/// answers 200; returns the process (killed on drop) and its base URL.
pub async fn spawn_monitor(
    dsn: &str,
    dir: &Path,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    let port = free_port();
    let mut cmd = tokio::process::Command::new(bin());
    cmd.args(["monitor", "--source", "newapi", "--dsn", dsn, "--port"])
        .arg(port.to_string())
        .arg("--data-dir")
        .arg(dir)
        .env("ADMIN_TOKEN", ADMIN)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("monitor-stderr.log")).unwrap())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = http_client();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{base}/api/health")).send().await
            && r.status().is_success()
        {
            return (child, base);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the monitor did not come up");
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// All history entries of a key, oldest first, via the admin API.
pub async fn full_history(client: &reqwest::Client, base: &str, key_id: i64) -> Vec<Value> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let r = client
            .get(format!(
                "{base}/admin/usage/history?key={key_id}&limit=1000&offset={offset}"
            ))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let (s, v) = status_json(r).await;
        assert_eq!(s, 200, "{v}");
        let page = v["history"].as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        offset += page.len();
        out.extend(page);
    }
    out.reverse();
    out
}

/// An HTTP client for tests (reqwest is built without a default TLS provider).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Whether a tool the tests drive is usable; outside CI a missing one skips with a note,
/// under CI it fails (scripts/test.sh installs it).
pub fn tool_available(what: &str, probe: &mut std::process::Command) -> bool {
    let ok = probe.output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "{what} is missing under CI: scripts/test.sh must install it"
        );
        eprintln!("skipping: {what} not available (run scripts/test.sh)");
    }
    ok
}

/// `/metrics` as text (no metrics token configured).
pub async fn metrics_text(app: &TestApp) -> String {
    app.client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
