//! Property-based fuzz of the JSON inputs (proptest, bounded): whatever JSON arrives at a
//! write endpoint, the answer is never a 5xx and always JSON.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::helpers::*;

const FIELDS: &[&str] = &[
    "amount",
    "reason",
    "metadata",
    "requestId",
    "quota",
    "prefix",
    "expiresAt",
    "name",
    "count",
    "owner",
    "limits",
    "refill",
    "key",
    "newQuota",
    "enabled",
    "userId",
    "username",
    "rpm",
    "tpm",
    "dailyRequests",
    "maxConcurrent",
    "models",
    "ips",
    "interval",
    "model",
    "messages",
    "role",
    "content",
    "max_tokens",
    "stream",
    "token",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5i64..2000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e20f64..1e20).prop_map(|f| json!(f)),
        "[a-zA-Z0-9_ \\-:.\u{4e00}-\u{4e10}<>]{0,24}".prop_map(Value::from),
        Just(json!("2031-01-01")),
        Just(json!("daily")),
        Just(json!("mock-chat")),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(FIELDS), inner), 0..6).prop_map(
                |kv| {
                    let mut m = Map::new();
                    for (k, v) in kv {
                        m.insert((*k).to_owned(), v);
                    }
                    Value::Object(m)
                }
            ),
        ]
    })
}

#[test]
fn random_json_bodies_never_get_a_5xx() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (app, key, id) = rt.block_on(async {
        let app = spawn_app().await;
        let (key, id) = app.create_key(json!({"quota": 1_000_000})).await;
        (app, key, id)
    });
    let cases = [
        ("POST", "/api/v1/use".to_owned(), true),
        ("POST", "/api/v1/use/batch".to_owned(), true),
        ("POST", "/admin/keys".to_owned(), false),
        ("POST", "/admin/keys/reset".to_owned(), false),
        ("POST", "/admin/keys/disable".to_owned(), false),
        ("PATCH", format!("/admin/keys/{id}"), false),
        ("POST", "/v1/chat/completions".to_owned(), true),
        ("POST", "/auth/login".to_owned(), false),
    ];
    let config = ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(body in json_value())| {
        rt.block_on(async {
            for (method, path, as_caller) in &cases {
                let m: reqwest::Method = method.parse().unwrap();
                let mut rq = app.client.request(m, app.url(path)).json(&body);
                rq = if *as_caller { rq.bearer_auth(&key) } else { rq.bearer_auth(ADMIN) };
                let r = rq.send().await.unwrap();
                let status = r.status().as_u16();
                let ct = r
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let text = r.text().await.unwrap();
                assert!(status < 500, "{method} {path} {body} → {status} {text}");
                if status >= 400 {
                    assert!(ct.starts_with("application/json"), "{method} {path} {body} → {ct}");
                    let v: Value = serde_json::from_str(&text).unwrap();
                    assert!(v.get("error").is_some(), "{method} {path} → {text}");
                }
            }
        });
    });
    rt.block_on(async { app.stop().await });
}
