//! The OpenAPI document is true: it names every route the server has, it is a valid OpenAPI
//! 3.1 document (`openapi-spec-validator`), and a property-based fuzz run driven by it
//! (Schemathesis) against the real server with valid credentials finds no 5xx, no answer
//! outside its documented schema, and no undocumented status code. `scripts/test.sh`
//! installs both tools; under CI a missing one fails the test.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::json;

use crate::helpers::*;

/// The `st` command, through the interpreter (its script may not be on PATH right after
/// a pip install).
fn schemathesis() -> Command {
    let mut c = Command::new("python3");
    c.args([
        "-c",
        "import sys; sys.argv[0] = 'st'; from schemathesis.cli import schemathesis; schemathesis()",
    ]);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_covers_every_route_and_is_valid_openapi() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let doc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    // Routes are registered with their documentation (`utoipa-axum`), so what is served is
    // documented by construction; here, every documented operation is served: answered by
    // its route (its own refusal), not by the unmatched-path or wrong-method fallback.
    assert!(documented.len() > 30, "{documented:?}");
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", "1");
        for method in ops.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = app
                .client
                .request(m, app.url(&concrete))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            assert!(
                !(status == 404 && body.contains("接口不存在")),
                "{method} {path} is documented but not routed: {body}"
            );
        }
    }
    // The three auth schemes, and error shapes referenced by the operations.
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for s in ["apiKey", "bearerKey", "adminToken", "viewerToken"] {
        assert!(schemes.contains_key(s), "{s}");
    }
    let text = doc.to_string();
    for e in ["QuotaError", "MonitorError", "OpenAiError"] {
        assert!(text.contains(&format!("#/components/schemas/{e}")), "{e}");
    }

    if tool_available(
        "python3 with openapi-spec-validator",
        Command::new("python3").args(["-c", "import openapi_spec_validator"]),
    ) {
        let file = app.dir.path().join("openapi.json");
        std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
        let out = Command::new("python3")
            .args([
                "-c",
                "import sys, json; from openapi_spec_validator import validate; \
                 validate(json.load(open(sys.argv[1]))); print('valid')",
            ])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schemathesis_run_over_every_operation_finds_nothing() {
    if !tool_available("schemathesis", schemathesis().arg("--version")) {
        return;
    }
    let app = spawn_app().await;
    // Decoys first, so the fuzzer's small ids hit them more often than the key it calls with.
    for _ in 0..5 {
        app.create_key(json!({"quota": 10})).await;
    }
    let (key, _) = app.create_key(json!({"name": "contract"})).await;
    let examples = std::env::var("QP_FUZZ_EXAMPLES").unwrap_or_else(|_| "40".into());
    let seed = std::env::var("QP_FUZZ_SEED").unwrap_or_else(|_| "20261122".into());
    let url = app.url("/api/openapi.json");
    let report = app.dir.path().join("st.txt");
    // Schemathesis keeps a cache in its working directory: the app's temp dir, not the repo.
    let workdir = app.dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        schemathesis()
            .current_dir(&workdir)
            .args(["run", &url])
            .args(["-H", &format!("Authorization: Bearer {ADMIN}")])
            .args(["-H", &format!("X-API-Key: {key}")])
            .args([
                "--checks",
                "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
            ])
            .args(["--max-examples", &examples, "--seed", &seed])
            .args(["--request-timeout", "20", "--no-color"])
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&report, &text).unwrap();
    let tail: String = text
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(out.status.success(), "schemathesis failed:\n{text}");
    // Every operation was exercised, and every generated case passed.
    let documented = {
        let doc: serde_json::Value = app
            .client
            .get(app.url("/api/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum::<usize>()
    };
    assert!(
        text.contains(&format!("Tested: {documented}")),
        "not every operation was tested:\n{tail}"
    );
    assert!(text.contains(" passed"), "{tail}");
    assert!(!text.contains("failures"), "{tail}");
    eprintln!("{tail}");
    app.stop().await;
}
