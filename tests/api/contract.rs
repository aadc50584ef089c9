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

/// How a run authenticates: the operator token and the caller key, each in one of the
/// headers the server takes.
#[derive(Clone, Copy, Debug)]
enum AuthKind {
    /// `Authorization: Bearer <admin token>` and `X-API-Key: <key>`.
    AdminBearerKeyHeader,
    /// `X-Admin-Token: <admin token>` and `Authorization: Bearer <key>`.
    AdminHeaderKeyBearer,
}

impl AuthKind {
    fn headers(self, key: &str) -> [String; 2] {
        match self {
            AuthKind::AdminBearerKeyHeader => [
                format!("Authorization: Bearer {ADMIN}"),
                format!("X-API-Key: {key}"),
            ],
            AuthKind::AdminHeaderKeyBearer => [
                format!("X-Admin-Token: {ADMIN}"),
                format!("Authorization: Bearer {key}"),
            ],
        }
    }
}

/// One Schemathesis run; its whole report.
async fn schemathesis_run(app: &TestApp, key: &str, seed: &str, auth: AuthKind) -> String {
    // The key holder's session too, for `/me/api/*` (every other route ignores it).
    let login = app
        .client
        .post(app.url("/me/login"))
        .json(&json!({ "key": key }))
        .send()
        .await
        .unwrap();
    let me_cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let h3 = format!("Cookie: {me_cookie}");
    let examples = std::env::var("QP_FUZZ_EXAMPLES").unwrap_or_else(|_| "25".into());
    let url = app.url("/api/openapi.json");
    let config =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contract/schemathesis.toml");
    // Schemathesis keeps a cache in its working directory: the app's temp dir, not the repo.
    let workdir = app.dir.path().to_path_buf();
    let [h1, h2] = auth.headers(key);
    let run_seed = seed.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        schemathesis()
            .current_dir(&workdir)
            .arg("--config-file")
            .arg(&config)
            .args(["run", &url, "-H", &h1, "-H", &h2, "-H", &h3])
            .args([
                "--checks",
                "not_a_server_error,response_schema_conformance,status_code_conformance,\
                 content_type_conformance,positive_data_acceptance,negative_data_rejection",
            ])
            .args(["--max-examples", &examples, "--seed", &run_seed])
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
    assert!(
        out.status.success(),
        "schemathesis failed (seed {seed}, {auth:?}):\n{text}"
    );
    text
}

/// Schemathesis over every operation, with three seeds and both ways of presenting each
/// credential: no 5xx, no answer outside its schema, no undocumented status, and the
/// document and the server agree on what is valid — no schema-valid request refused
/// (`positive_data_acceptance`), no schema-violating one accepted (`negative_data_rejection`).
/// Where a rule between parameters cannot be stated in a schema, `tests/contract/
/// schemathesis.toml` allows a 400 for that operation and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schemathesis_run_over_every_operation_finds_nothing() {
    if !tool_available("schemathesis", schemathesis().arg("--version")) {
        return;
    }
    // Wrong credentials are part of the fuzzing: the address must not get blocked for them.
    let app = spawn_app_with(|c| c.auth_failure_allowance = 0).await;
    // Decoys first, so the fuzzer's small ids hit them more often than the key it calls with.
    for _ in 0..5 {
        app.create_key(json!({"quota": 10})).await;
    }
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
    let seeds = std::env::var("QP_FUZZ_SEEDS").unwrap_or_else(|_| "20261122,1,2".into());
    let mut report = String::new();
    for (i, seed) in seeds.split(',').enumerate() {
        for auth in [
            AuthKind::AdminBearerKeyHeader,
            AuthKind::AdminHeaderKeyBearer,
        ] {
            // A fresh key each run: the fuzzer may disable, rotate or delete the one it holds.
            let (key, _) = app
                .create_key(json!({"name": format!("contract-{i}")}))
                .await;
            let text = schemathesis_run(&app, &key, seed, auth).await;
            let tail: String = text
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                text.contains(&format!("Tested: {documented}")),
                "not every operation was tested (seed {seed}, {auth:?}):\n{tail}"
            );
            assert!(text.contains(" passed"), "{tail}");
            for bad in [
                "failures",
                "Schema-valid request rejected",
                "Schema-violating request accepted",
                "Authentication failed",
            ] {
                assert!(!text.contains(bad), "seed {seed}, {auth:?}: {bad}\n{text}");
            }
            report.push_str(&format!(
                "seed {seed}, {auth:?}: {}\n",
                tail.lines()
                    .rev()
                    .find(|l| l.contains("generated"))
                    .unwrap_or("")
            ));
        }
    }
    std::fs::write(app.dir.path().join("st.txt"), &report).unwrap();
    eprintln!("{report}");
    app.stop().await;
}
