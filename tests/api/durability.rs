//! Crash and shutdown behaviour of the real binary.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

async fn create_key(client: &reqwest::Client, base: &str, quota: i64) -> (String, i64) {
    let r = client
        .post(format!("{base}/admin/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"quota": quota}))
        .send()
        .await
        .unwrap();
    let (s, v) = status_json(r).await;
    assert_eq!(s, 200, "{v}");
    (
        v["key"].as_str().unwrap().to_owned(),
        v["id"].as_i64().unwrap(),
    )
}

/// Consumes from `workers` loops until stopped; returns the reasons acknowledged with 200.
fn load(
    client: reqwest::Client,
    base: String,
    key: String,
    workers: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Arc<Mutex<Vec<String>>>, Vec<tokio::task::JoinHandle<()>>) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for w in 0..workers {
        let (client, base, key, acked, stop) = (
            client.clone(),
            base.clone(),
            key.clone(),
            acked.clone(),
            stop.clone(),
        );
        handles.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 5000 {
                let reason = format!("w{w}-{n}");
                n += 1;
                let r = client
                    .post(format!("{base}/api/v1/use"))
                    .header("X-API-Key", &key)
                    .json(&json!({"amount": 1, "reason": reason}))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 200 => {
                        // Only a complete 200 body counts as acknowledged.
                        if r.bytes().await.is_ok() {
                            acked.lock().unwrap().push(reason);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break, // the server is gone
                }
            }
        }));
    }
    (acked, handles)
}

/// Restarts the server on `dir`; every acknowledged consume is in the key's history, and
/// none twice. Returns the server and the history's length.
async fn restart_and_check(
    dir: &std::path::Path,
    port: u16,
    client: &reqwest::Client,
    id: i64,
    acked: &[String],
) -> (BinaryServer, usize) {
    let server = BinaryServer::start(dir, port, &[]).await;
    let history = full_history(client, &server.base, id).await;
    let reasons: Vec<String> = history
        .iter()
        .map(|h| h["reason"].as_str().unwrap().to_owned())
        .collect();
    let unique: HashSet<&String> = reasons.iter().collect();
    assert_eq!(unique.len(), reasons.len(), "no consume is present twice");
    for r in acked {
        assert!(unique.contains(r), "acknowledged consume {r} lost");
    }
    (server, reasons.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loses_no_acknowledged_consume_and_duplicates_none() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = BinaryServer::start(dir.path(), port, &[]).await;
    let client = http_client();
    let (key, id) = create_key(&client, &server.base, 1_000_000).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (acked, handles) = load(
        client.clone(),
        server.base.clone(),
        key.clone(),
        32,
        stop.clone(),
    );
    // Let acknowledgements accumulate, then kill -9 mid-load.
    for _ in 0..100 {
        if acked.lock().unwrap().len() >= 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in handles {
        h.await.unwrap();
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(acked.len() >= 100, "load produced {} acks", acked.len());

    let (server, logged) = restart_and_check(dir.path(), port, &client, id, &acked).await;
    // The counter agrees with the history: nothing half-applied.
    let r = client
        .get(format!("{}/api/v1/quota", server.base))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    let (_, q) = status_json(r).await;
    assert_eq!(q["used"].as_u64().unwrap() as usize, logged);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_in_flight_consumes_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = BinaryServer::start(dir.path(), port, &[]).await;
    let client = http_client();
    let (key, id) = create_key(&client, &server.base, 1_000_000).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (acked, handles) = load(
        client.clone(),
        server.base.clone(),
        key.clone(),
        16,
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = server.child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), server.child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(exit.success(), "clean exit: {exit:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in handles {
        h.await.unwrap();
    }
    assert!(server.stderr().contains("shutdown complete"));
    let acked: Vec<String> = acked.lock().unwrap().clone();

    let (server, _) = restart_and_check(dir.path(), port, &client, id, &acked).await;
    drop(server);
}
