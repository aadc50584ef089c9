//! The seed guide's Python and Node.js client classes, unchanged, and the official `openai`
//! SDKs, against the real server. `scripts/test.sh` installs `requests`, `openai`, `axios` and
//! the Node `openai` package; under CI a missing one fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::helpers::*;

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Whether the runtime is usable; outside CI a missing one skips with a note.
fn available(what: &str, probe: &mut Command) -> bool {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_python_client_works_unchanged() {
    if !available(
        "python3 with requests",
        Command::new("python3").args(["-c", "import requests"]),
    ) {
        return;
    }
    let app = spawn_app().await;
    let (key, _) = app
        .create_key(json!({"prefix": "roc", "quota": 1000}))
        .await;
    let base = app.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(clients_dir().join("seed_client.py"))
            .args([&base, &key, "1000"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("python seed client OK"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_node_client_works_unchanged() {
    let dir = clients_dir();
    let has_axios = dir.join("node_modules/axios").exists();
    if !available("node", Command::new("node").arg("--version")) {
        return;
    }
    if !has_axios {
        assert!(std::env::var("CI").is_err(), "axios missing under CI");
        eprintln!("skipping: axios not installed (run scripts/test.sh)");
        return;
    }
    let app = spawn_app().await;
    let (key, _) = app
        .create_key(json!({"prefix": "roc", "quota": 1000}))
        .await;
    let base = app.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(dir.join("seed_client.js"))
            .args([&base, &key, "1000"])
            .current_dir(&dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("node seed client OK"));
    app.stop().await;
}

/// A key with quota to spare and one already spent.
async fn sdk_keys(app: &TestApp) -> (String, String) {
    let (key, _) = app.create_key(json!({"quota": 1000})).await;
    let (spent, _) = app.create_key(json!({"quota": 0})).await;
    (key, spent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_through_the_gateway() {
    if !available(
        "python3 with openai",
        Command::new("python3").args(["-c", "import openai"]),
    ) {
        return;
    }
    let app = spawn_app().await;
    let (key, spent) = sdk_keys(&app).await;
    let base = app.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(clients_dir().join("openai_sdk.py"))
            .args([&base, &key, &spent])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("python openai sdk OK"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_node_sdk_through_the_gateway() {
    let dir = clients_dir();
    if !available("node", Command::new("node").arg("--version")) {
        return;
    }
    if !dir.join("node_modules/openai").exists() {
        assert!(
            std::env::var("CI").is_err(),
            "the openai npm package is missing under CI"
        );
        eprintln!("skipping: openai npm package not installed (run scripts/test.sh)");
        return;
    }
    let app = spawn_app().await;
    let (key, spent) = sdk_keys(&app).await;
    let base = app.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(dir.join("openai_sdk.js"))
            .args([&base, &key, &spent])
            .current_dir(&dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("node openai sdk OK"));
    app.stop().await;
}
