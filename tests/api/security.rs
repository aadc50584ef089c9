use serde_json::json;

use crate::helpers::*;

fn file_contains(path: &std::path::Path, needle: &[u8]) -> bool {
    match std::fs::read(path) {
        Ok(bytes) => bytes.windows(needle.len()).any(|w| w == needle),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_files_hold_no_full_key() {
    let app = spawn_app().await;
    let (s, v) = app
        .admin_post(
            "/admin/keys",
            json!({"prefix": "roc", "quota": 50, "count": 3}),
        )
        .await;
    assert_eq!(s, 200);
    let keys: Vec<String> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap().to_owned())
        .collect();
    for k in &keys {
        app.use_amount(k, 1).await;
    }
    let (_, rotated) = app
        .admin_post(&format!("/admin/keys/{}/rotate", keys[0]), json!({}))
        .await;
    let mut all = keys.clone();
    all.push(rotated["key"].as_str().unwrap().to_owned());
    let dir = app.stop().await;
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        files += 1;
        for k in &all {
            let secret = k.split_once('_').unwrap().1;
            assert!(
                !file_contains(&p, k.as_bytes()),
                "{} holds a full key",
                p.display()
            );
            assert!(
                !file_contains(&p, secret.as_bytes()),
                "{} holds a secret",
                p.display()
            );
            // Nor any 12-character run of it.
            assert!(
                !file_contains(&p, &secret.as_bytes()[8..20]),
                "{}",
                p.display()
            );
        }
    }
    assert!(files >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_hold_no_key_or_token() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // An upstream whose key must never be logged: unreachable, so the call fails over to
    // the built-in mock and the failure is logged.
    let config = dir.path().join("quota-proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[[upstreams]]\nname = \"remote\"\nbase_url = \"http://127.0.0.1:{}/v1\"\n\
             api_key = \"sk-upstream-must-not-be-logged\"\npriority = 10\n\n\
             [[upstreams]]\nname = \"local\"\nkind = \"mock\"\n",
            free_port()
        ),
    )
    .unwrap();
    let server = BinaryServer::start(
        dir.path(),
        port,
        &[("QUOTA_PROXY_CONFIG", config.to_str().unwrap())],
    )
    .await;
    let client = http_client();
    let r = client
        .post(format!("{}/admin/keys", server.base))
        .bearer_auth(ADMIN)
        .json(&json!({"quota": 5}))
        .send()
        .await
        .unwrap();
    let (_, v) = status_json(r).await;
    let key = v["key"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        client
            .post(format!("{}/api/v1/use", server.base))
            .header("X-API-Key", &key)
            .json(&json!({"amount": 1}))
            .send()
            .await
            .unwrap();
    }
    let r = client
        .post(format!("{}/v1/chat/completions", server.base))
        .bearer_auth(&key)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "failed over to the mock");
    let r = client
        .post(format!("{}/v1/chat/completions", server.base))
        .header("x-trial-key", &key)
        .json(
            &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("[DONE]"));
    client
        .get(format!("{}/admin/usage/history?key={key}", server.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    client
        .get(format!("{}/admin/keys", server.base))
        .bearer_auth("a-wrong-token-that-must-not-be-logged")
        .send()
        .await
        .unwrap();
    drop(server);
    let mut log = String::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.to_string_lossy().contains("stderr-") {
            log.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
    assert!(log.contains("listening"), "the log was captured");
    let secret = key.split_once('_').unwrap().1;
    assert!(!log.contains(secret), "a key leaked into the log");
    assert!(!log.contains(ADMIN));
    assert!(!log.contains("sk-upstream-must-not-be-logged"));
    assert!(
        log.contains("remote"),
        "the failover was logged: {}",
        log.lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("gateway"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!log.contains("a-wrong-token-that-must-not-be-logged"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_admin_token_is_private_and_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let run = |dir: &std::path::Path| {
        let mut cmd = std::process::Command::new(bin());
        cmd.args(["serve", "--port", &port.to_string(), "--data-dir"])
            .arg(dir)
            .env_remove("ADMIN_TOKEN")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let read_until_listening = |child: &mut std::process::Child| {
        use std::io::BufRead;
        let out = child.stdout.take().unwrap();
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(out).lines() {
            let line = line.unwrap();
            let done = line.contains("listening");
            lines.push(line);
            if done {
                break;
            }
        }
        lines.join("\n")
    };
    let mut child = run(dir.path());
    let first = read_until_listening(&mut child);
    let token_file = dir.path().join("admin_token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(first.contains(&token), "printed at first start");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The token works.
    let r = http_client()
        .get(format!("http://127.0.0.1:{port}/admin/keys"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    child.kill().unwrap();
    child.wait().unwrap();

    let mut child = run(dir.path());
    let second = read_until_listening(&mut child);
    assert!(!second.contains(&token), "not printed again");
    child.kill().unwrap();
    child.wait().unwrap();
}
