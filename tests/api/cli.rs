//! The CLI on the same database file as a running server.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

fn cli(dir: &Path, args: &[&str]) -> (bool, Value, String) {
    let out = Command::new(bin())
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("ADMIN_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let v = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        out.status.success(),
        v,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Retries `check` for up to 3 s: the server follows CLI edits within a second.
async fn eventually<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..60 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached within 3 s");
}

async fn use_status(client: &reqwest::Client, base: &str, key: &str) -> (u16, Value) {
    let r = client
        .post(format!("{base}/api/v1/use"))
        .header("X-API-Key", key)
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    status_json(r).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_cli_flags_and_live_server_sharing_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(cli(d, &["migrate"]).0);
    let out_file = d.join("api-keys.json");
    let (ok, _, err) = cli(
        d,
        &[
            "keys",
            "create",
            "--prefix",
            "roc",
            "--quota",
            "1000",
            "--expires",
            "2026-12-31",
            "--count",
            "5",
            "--output",
            out_file.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let keys: Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 5);
    for k in keys {
        assert!(k["key"].as_str().unwrap().starts_with("roc_"));
        assert_eq!(k["quota"], 1000);
        assert_eq!(k["expiresAt"], "2026-12-31T23:59:59Z");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is private");
    }

    let port = free_port();
    let server = BinaryServer::start(d, port, &[]).await;
    let client = http_client();
    let base = server.base.clone();
    let k0 = keys[0]["key"].as_str().unwrap().to_owned();
    let id0 = keys[0]["id"].as_i64().unwrap();
    assert_eq!(use_status(&client, &base, &k0).await.0, 200);

    // A key created by the CLI while the server runs works at once.
    let (ok, fresh, _) = cli(d, &["keys", "create", "--quota", "3"]);
    assert!(ok);
    let fresh_key = fresh[0]["key"].as_str().unwrap().to_owned();
    let (s, v) = use_status(&client, &base, &fresh_key).await;
    assert_eq!((s, v["remaining"].clone()), (200, json!(2)));

    // Disable, reset, rotate from the CLI reach the running server.
    let (ok, v, _) = cli(d, &["keys", "disable", &id0.to_string()]);
    assert!(ok);
    assert_eq!(v["enabled"], false);
    eventually(|| async { use_status(&client, &base, &k0).await.0 == 403 }).await;
    assert!(cli(d, &["keys", "enable", &k0]).0);
    eventually(|| async { use_status(&client, &base, &k0).await.0 == 200 }).await;

    let (ok, v, _) = cli(d, &["keys", "reset", &k0, "--quota", "5"]);
    assert!(ok);
    assert_eq!(
        (v["quota"].clone(), v["used"].clone()),
        (json!(5), json!(0))
    );
    eventually(|| async {
        let r = client
            .get(format!("{base}/api/v1/quota"))
            .header("X-API-Key", &k0)
            .send()
            .await
            .unwrap();
        let (_, q) = status_json(r).await;
        q["quota"] == 5
    })
    .await;
    let mut ok_count = 0;
    for _ in 0..8 {
        if use_status(&client, &base, &k0).await.0 == 200 {
            ok_count += 1;
        }
    }
    assert_eq!(ok_count, 5, "the new quota holds exactly");

    let (ok, v, _) = cli(d, &["keys", "rotate", &id0.to_string()]);
    assert!(ok);
    let new_k0 = v["key"].as_str().unwrap().to_owned();
    eventually(|| async { use_status(&client, &base, &k0).await.0 == 401 }).await;
    let r = client
        .get(format!("{base}/api/v1/quota"))
        .header("X-API-Key", &new_k0)
        .send()
        .await
        .unwrap();
    let (s, q) = status_json(r).await;
    assert_eq!((s, q["used"].clone()), (200, json!(5)));

    // list / show / usage / delete.
    let (ok, list, _) = cli(d, &["keys", "list"]);
    assert!(ok);
    assert_eq!(list.as_array().unwrap().len(), 6);
    let (ok, list, _) = cli(d, &["keys", "list", "--status", "exhausted"]);
    assert!(ok);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (ok, shown, _) = cli(d, &["keys", "show", &new_k0]);
    assert!(ok);
    assert_eq!(shown["id"], id0);
    assert!(
        !shown.to_string().contains(&new_k0),
        "show prints the hint, not the key"
    );
    let (ok, usage, _) = cli(d, &["usage"]);
    assert!(ok);
    let u0 = usage
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == id0)
        .unwrap();
    assert_eq!(u0["periodUsed"], 7, "1 + 1 after enable + 5 after reset");
    let (ok, _, _) = cli(d, &["keys", "delete", &fresh_key]);
    assert!(ok);
    eventually(|| async { use_status(&client, &base, &fresh_key).await.0 == 401 }).await;
    let (ok, _, err) = cli(d, &["keys", "show", "99999"]);
    assert!(!ok);
    assert!(err.contains("not found"));
    let (ok, _, _) = cli(d, &["keys", "create", "--prefix", "bad_prefix"]);
    assert!(!ok);

    // The server saw every CLI change in its audit log, marked as the CLI's.
    let r = client
        .get(format!("{base}/admin/audit?limit=1000"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let (_, a) = status_json(r).await;
    assert!(
        a["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["tokenHint"] == "cli" && e["action"] == "key.rotate")
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_api_key_script_takes_the_seed_flags() {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/generate-api-key.sh");
    let out_file = dir.path().join("api-keys.json");
    let out = Command::new("bash")
        .arg(&script)
        .args([
            "--prefix", "roc", "--quota", "1000", "--count", "5", "--output",
        ])
        .arg(&out_file)
        .arg("--data-dir")
        .arg(dir.path())
        .env("QUOTA_PROXY_BIN", bin())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys: Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 5);

    let out = Command::new("bash")
        .arg(&script)
        .args([
            "--prefix",
            "roc",
            "--quota",
            "1000",
            "--expires",
            "2026-12-31",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("QUOTA_PROXY_BIN", bin())
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["expiresAt"], "2026-12-31T23:59:59Z");
    assert_eq!(v[0]["quota"], 1000);
}

/// With no upstream configured the server says so at start and in `/healthz`; a half-given
/// DeepSeek setting refuses to start, naming it.
#[tokio::test]
async fn the_mock_fallback_is_announced_and_a_half_setting_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let srv = BinaryServer::start(dir.path(), free_port(), &[]).await;
    let v: Value = http_client()
        .get(format!("{}/healthz", srv.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["upstream"], "mock", "{v}");
    assert!(v["warning"].as_str().unwrap().contains("mock"));
    assert!(srv.stderr().contains("built-in mock"), "logged at start");
    // The gateway's small blocks go to mimalloc (the standalone monitor's test checks glibc).
    assert!(
        srv.stderr()
            .contains("allocator=\"mimalloc up to 32 KiB, glibc above\""),
        "{}",
        srv.stderr()
    );
    // SQLite's allocation statistics (a global mutex on every one of its allocations) are
    // off, and its memory comes from mimalloc: set before SQLite is first used, or refused.
    assert!(
        srv.stderr()
            .contains("sqlite_statistics=false sqlite_on_mimalloc=true"),
        "{}",
        srv.stderr()
    );
    drop(srv);

    let out = Command::new(bin())
        .args(["serve", "--port", &free_port().to_string(), "--data-dir"])
        .arg(dir.path())
        .env("ADMIN_TOKEN", ADMIN)
        .env("DEEPSEEK_BASE_URL", "https://api.example.invalid")
        .env_remove("DEEPSEEK_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DEEPSEEK_BASE_URL"), "{err}");
}
