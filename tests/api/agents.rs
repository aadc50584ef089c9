//! The real coding agents through the gateway, offline: Claude Code (`claude -p`, Anthropic
//! Messages) and Codex CLI (`codex exec`, OpenAI Responses), both installed from npm by
//! `scripts/test.sh` into `tests/agents`. Each is pointed at the gateway, which routes to a
//! local chat-only upstream (so both protocols are translated) that scripts one tool call —
//! write a file, run a command — and then ends the turn. The agent must carry out the tool
//! call on this machine, send its result back, and finish; every call is charged and logged.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::gateway::http_upstream;
use crate::helpers::*;
use quota_proxy::gateway::endpoint::Protocol;

fn agents_bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/agents/node_modules/.bin")
        .join(name)
}

fn agent_available(name: &str) -> bool {
    tool_available(
        &format!("the agent {name} (tests/agents)"),
        Command::new(agents_bin(name)).arg("--version"),
    )
}

/// What the scripted upstream was asked: each request's body.
#[derive(Default)]
struct Script {
    seen: Mutex<Vec<Value>>,
    /// The file Claude Code is to write (absolute, as its Write tool wants).
    write_path: String,
}

/// The tool call the script makes for a request offering `tools`, if any.
fn scripted_call(script: &Script, tools: &[Value]) -> Option<(&'static str, Value)> {
    let offers = |n: &str| tools.iter().any(|t| t["function"]["name"] == n);
    if offers("Write") {
        Some((
            "Write",
            json!({"file_path": script.write_path, "content": "written by claude code through quota-proxy\n"}),
        ))
    } else if offers("exec_command") {
        Some((
            "exec_command",
            json!({"cmd": "echo ran-by-codex-through-quota-proxy > codex.txt"}),
        ))
    } else {
        None
    }
}

/// A chat-only upstream (OpenAI wire format) with a script: offered a tool it knows and no
/// tool result yet, it calls the tool; otherwise it answers in text (quoting the tool's
/// result when there is one). Streams when asked, usage included.
async fn scripted(State(script): State<Arc<Script>>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    script.seen.lock().unwrap().push(body.clone());
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let after_tool = messages.last().is_some_and(|m| m["role"] == "tool");
    let tools = body["tools"].as_array().cloned().unwrap_or_default();
    let call = (!after_tool)
        .then(|| scripted_call(&script, &tools))
        .flatten();
    let text = if after_tool {
        let said = messages.last().unwrap()["content"].to_string();
        format!("Done. The tool said: {}", &said[..said.len().min(80)])
    } else {
        "OK.".to_owned()
    };
    let usage = json!({"prompt_tokens": 1200, "completion_tokens": 30, "total_tokens": 1230,
        "prompt_tokens_details": {"cached_tokens": 1000}});
    let model = body["model"].clone();
    if body["stream"] != true {
        let message = match &call {
            Some((name, args)) => json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_script_1", "type": "function",
                 "function": {"name": name, "arguments": args.to_string()}}]}),
            None => json!({"role": "assistant", "content": text}),
        };
        let finish = if call.is_some() { "tool_calls" } else { "stop" };
        return axum::Json(json!({"id": "chatcmpl-script", "object": "chat.completion",
            "created": 0, "model": model, "usage": usage,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}]}))
        .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-script", "object": "chat.completion.chunk", "created": 0,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    match &call {
        Some((name, args)) => {
            let args = args.to_string();
            let (a, b) = args.split_at(args.len() / 2);
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_script_1", "type": "function",
                    "function": {"name": name, "arguments": a}}]}),
                Value::Null,
            ));
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": b}}]}),
                Value::Null,
            ));
            events.push(chunk(json!({}), json!("tool_calls")));
        }
        None => {
            events.push(chunk(json!({"content": text}), Value::Null));
            events.push(chunk(json!({}), json!("stop")));
        }
    }
    events.push(
        json!({"id": "chatcmpl-script", "object": "chat.completion.chunk",
        "created": 0, "model": model, "choices": [], "usage": usage}),
    );
    let mut sse: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    sse.push_str("data: [DONE]\n\n");
    ([("content-type", "text/event-stream")], Body::from(sse)).into_response()
}

async fn start_script(write_path: String) -> (String, Arc<Script>) {
    let script = Arc::new(Script {
        write_path,
        ..Default::default()
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(scripted))
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), script)
}

/// A gateway whose only upstream is the scripted chat-only one.
async fn gateway_to_script(write_path: String) -> (TestApp, Arc<Script>) {
    let (url, script) = start_script(write_path).await;
    let mut up = http_upstream("scripted-chat", &url, "sk-scripted-upstream");
    up.protocols = vec![Protocol::Chat];
    up.models = vec!["*".into()];
    let app = spawn_app_with(|c| c.gateway.upstreams = vec![up]).await;
    (app, script)
}

/// Runs an agent to its end (three minutes at most); its output, or a failure that shows
/// what it said.
async fn run_agent(cmd: Command) -> String {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), cmd.output())
        .await
        .expect("the agent finished within three minutes")
        .expect("start the agent");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "agent failed:\n{stdout}\n{stderr}");
    stdout
}

/// The request log's rows for `endpoint` once at least `n` are written.
async fn rows_of(app: &TestApp, endpoint: &str, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let (_, v) = app.admin_get("/admin/requests?limit=100").await;
        let rows: Vec<Value> = v["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["endpoint"] == endpoint)
            .cloned()
            .collect();
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} {endpoint} rows logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_writes_a_file_through_the_gateway() {
    if !agent_available("claude") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let target = work.path().join("hello.txt");
    let (app, script) = gateway_to_script(target.display().to_string()).await;
    let (key, id) = app.create_key(json!({"quota": 100})).await;
    let mut cmd = Command::new(agents_bin("claude"));
    cmd.args([
        "-p",
        "Create hello.txt in the current directory.",
        "--output-format",
        "json",
        "--max-turns",
        "4",
        // Allowed by name: `--dangerously-skip-permissions` is refused to root (CI).
        "--allowedTools",
        "Write",
    ])
    .current_dir(work.path())
    .env("HOME", home.path())
    .env("ANTHROPIC_BASE_URL", &app.base)
    .env("ANTHROPIC_API_KEY", &key)
    .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
    .env("DISABLE_AUTOUPDATER", "1")
    .env_remove("ANTHROPIC_AUTH_TOKEN");
    let out = run_agent(cmd).await;
    let v: Value = serde_json::from_str(out.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|_| panic!("claude's JSON result: {out}"));
    assert_eq!(v["is_error"], false, "{v}");
    assert!(v["result"].as_str().unwrap_or("").contains("Done"), "{v}");
    // The tool really ran on this machine.
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "written by claude code through quota-proxy\n"
    );
    // The upstream saw chat only: the tool result came back to it as a tool message.
    let seen = script.seen.lock().unwrap().clone();
    assert!(seen.iter().any(|b| {
        b["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["role"] == "tool")
    }));
    // Every call charged and logged as `messages`.
    let rows = rows_of(&app, "messages", 2).await;
    let served = rows.iter().filter(|r| r["status"] == 200).count();
    assert!(served >= 2, "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r["status"] != 200 || (r["promptTokens"] == 1200 && r["estimated"] == false))
    );
    let (_, k) = app.admin_get(&format!("/admin/keys/{id}")).await;
    assert_eq!(k["used"].as_i64().unwrap() as usize, served);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_runs_a_command_through_the_gateway() {
    if !agent_available("codex") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (app, script) = gateway_to_script(String::new()).await;
    let (key, id) = app.create_key(json!({"quota": 100})).await;
    let provider = format!(
        "model_providers.qp={{name=\"quota-proxy\",base_url=\"{}/v1\",env_key=\"QP_KEY\",wire_api=\"responses\"}}",
        app.base
    );
    let mut cmd = Command::new(agents_bin("codex"));
    cmd.args([
        "exec",
        "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",
        "-c",
        "model_provider=qp",
        "-c",
        &provider,
        "-m",
        "gpt-5-codex",
        "Write codex.txt by running a command.",
    ])
    .current_dir(work.path())
    .env("HOME", home.path())
    .env("CODEX_HOME", home.path())
    .env("QP_KEY", &key)
    .env_remove("OPENAI_API_KEY");
    let out = run_agent(cmd).await;
    assert!(out.contains("Done"), "{out}");
    assert_eq!(
        std::fs::read_to_string(work.path().join("codex.txt")).unwrap(),
        "ran-by-codex-through-quota-proxy\n"
    );
    let seen = script.seen.lock().unwrap().clone();
    let result = seen
        .iter()
        .flat_map(|b| b["messages"].as_array().cloned().unwrap_or_default())
        .find(|m| m["role"] == "tool")
        .expect("the command's output came back as a tool message");
    assert_eq!(result["tool_call_id"], "call_script_1");
    let rows = rows_of(&app, "responses", 2).await;
    let served = rows.iter().filter(|r| r["status"] == 200).count();
    assert!(served >= 2, "{rows:?}");
    let (_, k) = app.admin_get(&format!("/admin/keys/{id}")).await;
    assert_eq!(k["used"].as_i64().unwrap() as usize, served);
    app.stop().await;
}
