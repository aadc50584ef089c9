//! A served gateway call is charged even if the process dies (issue #23): the hold is
//! committed before the answer's first byte, and a restarted server (or a surviving one on
//! PostgreSQL) charges the holds a dead one left. kill -9 under gateway load, streamed and
//! not, on SQLite and on PostgreSQL: every answered call is in the key's history exactly
//! once, and nothing is in it twice — and the key's user's budget says the same.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::instances::fresh_pg;

/// Tokens mode: a call's hold (prompt estimate + max_tokens) differs from its cost, so a
/// recovered hold and a settled call are told apart in the history.
const CONFIG: &str = "[billing]\nmode = \"tokens\"\n";

/// A key of a user (with a budget of its own): what the key is charged, the user is too.
async fn create_key(base: &str) -> (String, i64) {
    let r = http_client()
        .post(format!("{base}/admin/users"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": format!("killed-{}", fastrand::u32(..)), "quota": 100_000_000}))
        .send()
        .await
        .unwrap();
    let (s, user) = status_json(r).await;
    assert_eq!(s, 201, "{user}");
    let r = http_client()
        .post(format!("{base}/admin/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"quota": 100_000_000, "userId": user["id"]}))
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

/// What the key's user has used, as the store holds it.
async fn user_used(base: &str, key_id: i64) -> i64 {
    let client = http_client();
    let r = client
        .get(format!("{base}/admin/keys/{key_id}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let (_, k) = status_json(r).await;
    let r = client
        .get(format!("{base}/admin/users/{}", k["userId"]))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let (s, u) = status_json(r).await;
    assert_eq!(s, 200, "{u}");
    u["used"].as_i64().unwrap()
}

/// One call; its request id when it was answered in full (a whole 200 body, or a stream
/// up to its `[DONE]`).
async fn call(client: &reqwest::Client, base: &str, key: &str, stream: bool) -> Option<String> {
    let r = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(
            &json!({"model": "mock-chat", "stream": stream, "max_tokens": 64,
            "messages": [{"role": "user", "content": "count to three"}]}),
        )
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    let id = r.headers().get("x-request-id")?.to_str().ok()?.to_owned();
    if !stream {
        let body: Value = r.json().await.ok()?;
        return body["choices"].is_array().then_some(id);
    }
    let mut events = r.bytes_stream();
    let mut seen = Vec::new();
    while let Some(chunk) = events.next().await {
        seen.extend_from_slice(&chunk.ok()?);
    }
    String::from_utf8_lossy(&seen)
        .contains("data: [DONE]")
        .then_some(id)
}

/// `workers` loops of calls (every other one streamed) until the server is gone or
/// `stop`; the request ids answered in full.
async fn load_until_killed(
    server: &mut BinaryServer,
    key: &str,
    workers: usize,
    kill_after: usize,
) -> Vec<String> {
    let answered = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut handles = Vec::new();
    for w in 0..workers {
        let (base, key, answered, stop) = (
            server.base.clone(),
            key.to_owned(),
            answered.clone(),
            stop.clone(),
        );
        handles.push(tokio::spawn(async move {
            let client = http_client();
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 2000 {
                n += 1;
                match call(&client, &base, &key, (w + n).is_multiple_of(2)).await {
                    Some(id) => answered.lock().unwrap().push(id),
                    None if stop.load(std::sync::atomic::Ordering::Relaxed) => break,
                    None => {}
                }
            }
        }));
    }
    let started = Instant::now();
    while answered.lock().unwrap().len() < kill_after && started.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in handles {
        h.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(
        answered.len() >= kill_after / 2,
        "load answered only {}",
        answered.len()
    );
    answered
}

/// The key's history by request id: how many rows each has, and the sum of all amounts.
async fn charges(base: &str, id: i64) -> (HashMap<String, usize>, i64, usize) {
    let history = full_history(&http_client(), base, id).await;
    let mut by_request: HashMap<String, usize> = HashMap::new();
    let mut total = 0;
    let mut recovered = 0;
    for h in &history {
        let rid = h["metadata"]["request_id"]
            .as_str()
            .unwrap_or_else(|| panic!("a gateway charge names its request: {h}"));
        *by_request.entry(rid.to_owned()).or_default() += 1;
        total += h["amount"].as_i64().unwrap();
        if h["metadata"]["recovered"] == true {
            recovered += 1;
        }
    }
    (by_request, total, recovered)
}

async fn used(base: &str, key: &str) -> i64 {
    let r = http_client()
        .get(format!("{base}/api/v1/quota"))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap();
    let (s, v) = status_json(r).await;
    assert_eq!(s, 200, "{v}");
    v["used"].as_i64().unwrap()
}

/// Every answered call charged, none twice, and the counter equal to the history.
fn check(answered: &[String], by_request: &HashMap<String, usize>, total: i64, used: i64) {
    for (rid, n) in by_request {
        assert_eq!(*n, 1, "request {rid} charged {n} times");
    }
    let free: Vec<&String> = answered
        .iter()
        .filter(|id| !by_request.contains_key(*id))
        .collect();
    assert!(
        free.is_empty(),
        "{} answered calls never charged: {free:?}",
        free.len()
    );
    assert_eq!(used, total, "the key's counter equals its history");
}

fn env_with_config(dir: &std::path::Path) -> String {
    let path = dir.join("quota-proxy.toml");
    std::fs::write(&path, CONFIG).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_gateway_load_leaves_no_answered_call_free_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let config = env_with_config(dir.path());
    let env = [("QUOTA_PROXY_CONFIG", config.as_str())];
    let port = free_port();
    let mut server = BinaryServer::start(dir.path(), port, &env).await;
    let (key, id) = create_key(&server.base).await;
    let mut answered = Vec::new();
    let mut recovered_total = 0;
    // Three kills at different depths of the load.
    for kill_after in [150, 400, 60] {
        answered.extend(load_until_killed(&mut server, &key, 16, kill_after).await);
        server = BinaryServer::start(dir.path(), port, &env).await;
        let (by_request, total, recovered) = charges(&server.base, id).await;
        check(
            &answered,
            &by_request,
            total,
            used(&server.base, &key).await,
        );
        assert_eq!(
            user_used(&server.base, id).await,
            total,
            "the user's budget was charged exactly what the key was"
        );
        recovered_total = recovered;
    }
    eprintln!(
        "answered {} calls over three kills; {recovered_total} charged at their hold after a restart",
        answered.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_gateway_load_leaves_no_answered_call_free_on_postgres() {
    let Some(url) = fresh_pg().await else { return };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = env_with_config(da.path());
    let env = [
        ("QUOTA_PROXY_CONFIG", config.as_str()),
        ("DATABASE_URL", url.as_str()),
    ];
    let mut a = BinaryServer::start(da.path(), free_port(), &env).await;
    let b = BinaryServer::start(db.path(), free_port(), &env).await;
    let (key, id) = create_key(&b.base).await;
    let answered = load_until_killed(&mut a, &key, 16, 300).await;
    // The survivor charges the dead server's holds once it has stopped beating (10 s).
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let started = Instant::now();
    loop {
        let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM holds")
            .fetch_one(&pool)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{left} holds of the dead server never recovered"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (by_request, total, recovered) = charges(&b.base, id).await;
    check(&answered, &by_request, total, used(&b.base, &key).await);
    assert_eq!(user_used(&b.base, id).await, total, "the user too");
    eprintln!(
        "answered {}; {recovered} charged at their hold by the survivor",
        answered.len()
    );
    pool.close().await;
}
