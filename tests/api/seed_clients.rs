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

pub(crate) fn python_has(module: &str) -> bool {
    tool_available(
        &format!("python3 with {module}"),
        Command::new("python3").args(["-c", &format!("import {module}")]),
    )
}

pub(crate) fn node_has(package: &str) -> bool {
    tool_available("node", Command::new("node").arg("--version"))
        && tool_available(
            &format!("the npm package {package}"),
            Command::new("test")
                .arg("-d")
                .arg(clients_dir().join("node_modules").join(package)),
        )
}

/// Runs `program script args…` in tests/clients and checks it succeeded and said `ok_line`.
pub(crate) async fn run_client(
    program: &'static str,
    script: &'static str,
    args: Vec<String>,
    ok_line: &str,
) {
    let out = tokio::task::spawn_blocking(move || {
        let dir = clients_dir();
        Command::new(program)
            .arg(dir.join(script))
            .args(&args)
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
    assert!(stdout.contains(ok_line), "{stdout}");
}

/// The seed's clients get a fresh key worth 1000.
async fn seed_client(program: &'static str, script: &'static str, ok_line: &str) {
    let app = spawn_app().await;
    let (key, _) = app
        .create_key(json!({"prefix": "roc", "quota": 1000}))
        .await;
    run_client(
        program,
        script,
        vec![app.base.clone(), key, "1000".into()],
        ok_line,
    )
    .await;
    app.stop().await;
}

/// The SDKs get a key with quota to spare and one already spent.
async fn sdk_client(program: &'static str, script: &'static str, ok_line: &str) {
    let app = spawn_app().await;
    let (key, _) = app.create_key(json!({"quota": 1000})).await;
    let (spent, _) = app.create_key(json!({"quota": 0})).await;
    run_client(program, script, vec![app.base.clone(), key, spent], ok_line).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_python_client_works_unchanged() {
    if python_has("requests") {
        seed_client("python3", "seed_client.py", "python seed client OK").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_node_client_works_unchanged() {
    if node_has("axios") {
        seed_client("node", "seed_client.js", "node seed client OK").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_through_the_gateway() {
    if python_has("openai") {
        sdk_client("python3", "openai_sdk.py", "python openai sdk OK").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_node_sdk_through_the_gateway() {
    if node_has("openai") {
        sdk_client("node", "openai_sdk.js", "node openai sdk OK").await;
    }
}
