//! A local HTTP server that plays DingTalk, Feishu, WeCom, Slack and a generic webhook:
//! it checks each request's signature the way that platform does (computed here, not by the
//! product), records what arrived, and answers as the platform would, or with an error on
//! demand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

pub const DING_SECRET: &str = "SECdingtalk-test-secret-0001";
pub const FEISHU_SECRET: &str = "feishu-test-secret-0002";
pub const HOOK_SECRET: &str = "webhook-test-secret-0003";
/// The tokens in the channel URLs (they must never show up in answers or logs).
pub const DING_TOKEN: &str = "dingtalk0access0token0abcdef";
pub const FEISHU_TOKEN: &str = "feishu0hook0token0123456";
pub const WECOM_KEY: &str = "wecom0key0693axxx6";
pub const SLACK_PATH: &str = "T000TEST/B000TEST/slack0secret0path0XXXX";

#[derive(Debug, Clone)]
pub struct Received {
    pub platform: &'static str,
    pub body: Value,
    pub signature_ok: bool,
    pub at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ok,
    /// HTTP 500.
    Fail500,
    /// 200 with the platform's own error code.
    PlatformError,
}

#[derive(Default)]
struct Inner {
    got: Vec<Received>,
    modes: HashMap<&'static str, Mode>,
}

#[derive(Clone)]
pub struct Receiver {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

impl Receiver {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/robot/send", post(dingtalk))
            .route("/open-apis/bot/v2/hook/{token}", post(feishu))
            .route("/cgi-bin/webhook/send", post(wecom))
            .route("/services/{a}/{b}/{c}", post(slack))
            .route("/hook", post(webhook))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base,
            inner,
            task: Arc::new(task),
        }
    }

    pub fn dingtalk_url(&self) -> String {
        format!("{}/robot/send?access_token={DING_TOKEN}", self.base)
    }
    pub fn feishu_url(&self) -> String {
        format!("{}/open-apis/bot/v2/hook/{FEISHU_TOKEN}", self.base)
    }
    pub fn wecom_url(&self) -> String {
        format!("{}/cgi-bin/webhook/send?key={WECOM_KEY}", self.base)
    }
    pub fn slack_url(&self) -> String {
        format!("{}/services/{SLACK_PATH}", self.base)
    }
    pub fn webhook_url(&self) -> String {
        format!("{}/hook", self.base)
    }

    /// Stops answering (connections are refused from now on).
    pub fn stop(&self) {
        self.task.abort();
    }

    pub fn set_mode(&self, platform: &'static str, mode: Mode) {
        self.inner.lock().unwrap().modes.insert(platform, mode);
    }

    pub fn got(&self) -> Vec<Received> {
        self.inner.lock().unwrap().got.clone()
    }

    pub fn of(&self, platform: &str) -> Vec<Received> {
        self.got()
            .into_iter()
            .filter(|r| r.platform == platform)
            .collect()
    }

    /// Waits until `n` requests arrived in all (panics after `secs`).
    pub async fn wait_for(&self, n: usize, secs: u64) -> Vec<Received> {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < until,
                "only {} of {n} messages arrived: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

type St = State<Arc<Mutex<Inner>>>;

fn record(st: &Arc<Mutex<Inner>>, platform: &'static str, body: &[u8], ok: bool) -> Mode {
    let mut g = st.lock().unwrap();
    g.got.push(Received {
        platform,
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
        signature_ok: ok,
        at: Instant::now(),
    });
    g.modes.get(platform).copied().unwrap_or(Mode::Ok)
}

fn fresh(ts_ms: i64) -> bool {
    (chrono::Utc::now().timestamp_millis() - ts_ms).abs() < 3_600_000
}

/// DingTalk: `timestamp` and `sign` in the query; errcode 310000 when they do not match.
async fn dingtalk(st: St, Query(q): Query<HashMap<String, String>>, body: Bytes) -> Response {
    let ts = q.get("timestamp").cloned().unwrap_or_default();
    let sign = q.get("sign").cloned().unwrap_or_default();
    let expected = b64(&hmac(
        DING_SECRET.as_bytes(),
        format!("{ts}\n{DING_SECRET}").as_bytes(),
    ));
    let ok = q.get("access_token").map(String::as_str) == Some(DING_TOKEN)
        && sign == expected
        && ts.parse::<i64>().is_ok_and(fresh);
    let mode = record(&st, "dingtalk", &body, ok);
    match (ok, mode) {
        (_, Mode::Fail500) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        (false, _) | (_, Mode::PlatformError) => {
            axum::Json(json!({"errcode": 310000, "errmsg": "sign not match"})).into_response()
        }
        _ => axum::Json(json!({"errcode": 0, "errmsg": "ok"})).into_response(),
    }
}

/// Feishu: `timestamp` (s) and `sign` in the body; code 19021 when they do not match.
async fn feishu(st: St, Path(token): Path<String>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let ts = v["timestamp"].as_str().unwrap_or("").to_owned();
    let expected = b64(&hmac(format!("{ts}\n{FEISHU_SECRET}").as_bytes(), b""));
    let ok = token == FEISHU_TOKEN
        && v["sign"].as_str() == Some(expected.as_str())
        && ts.parse::<i64>().is_ok_and(|s| fresh(s * 1000))
        && v["msg_type"] == "post";
    let mode = record(&st, "feishu", &body, ok);
    match (ok, mode) {
        (_, Mode::Fail500) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        (false, _) | (_, Mode::PlatformError) => {
            axum::Json(json!({"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"}))
                .into_response()
        }
        _ => axum::Json(json!({"code": 0, "msg": "success", "data": {}})).into_response(),
    }
}

/// WeCom: the key in the query, a `markdown` message.
async fn wecom(st: St, Query(q): Query<HashMap<String, String>>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let ok = q.get("key").map(String::as_str) == Some(WECOM_KEY)
        && v["msgtype"] == "markdown"
        && v["markdown"]["content"].is_string();
    let mode = record(&st, "wechat_work", &body, ok);
    match (ok, mode) {
        (_, Mode::Fail500) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        (false, _) | (_, Mode::PlatformError) => {
            axum::Json(json!({"errcode": 93000, "errmsg": "invalid webhook url"})).into_response()
        }
        _ => axum::Json(json!({"errcode": 0, "errmsg": "ok"})).into_response(),
    }
}

/// Slack: the secret path, `text` required; answers the plain text `ok`.
async fn slack(st: St, Path((a, b, c)): Path<(String, String, String)>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let ok = format!("{a}/{b}/{c}") == SLACK_PATH && v["text"].is_string();
    let mode = record(&st, "slack", &body, ok);
    match (ok, mode) {
        (_, Mode::Fail500) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        (false, _) | (_, Mode::PlatformError) => {
            (StatusCode::BAD_REQUEST, "invalid_payload").into_response()
        }
        _ => "ok".into_response(),
    }
}

/// Generic webhook: `X-QP-Signature: sha256=<hex HMAC-SHA256(secret, body)>`.
async fn webhook(st: St, headers: HeaderMap, body: Bytes) -> Response {
    let expected = format!(
        "sha256={}",
        hex::encode(hmac(HOOK_SECRET.as_bytes(), &body))
    );
    let ok = headers.get("x-qp-signature").and_then(|v| v.to_str().ok()) == Some(expected.as_str());
    let mode = record(&st, "webhook", &body, ok);
    match (ok, mode) {
        (_, Mode::Fail500) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        (false, _) => StatusCode::UNAUTHORIZED.into_response(),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}
