//! One proxied call, start to end: policy → limits → hold → upstream with failover →
//! settle → request log. Streams are pumped by a task that settles when they end.

use crate::auth::Origin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::limits::{Limits, RequestBudget, Slot};
use super::oai_error::OaiError;
use super::settings::{BillingMode, glob_match};
use super::sse::SseSplitter;
use super::tokens::{estimate_prompt, estimate_text};
use super::upstream::{Upstream, candidates};
use super::upstream_call::{ByteStream, Reply, call};
use super::{Endpoint, Gateway, client_ip};
use crate::keys::{KeyRecord, policy::is_expired};
use crate::ledger::{KeyEntry, LedgerError, SettleTicket};
use crate::store::{RequestLogRow, UsageItem};
use crate::telemetry;

/// Idle time allowed between two chunks of a stream.
const STREAM_IDLE: Duration = Duration::from_secs(300);

/// Everything known about a call, for its log row and its settlement.
struct Call {
    started: Instant,
    /// Time spent waiting on upstream attempts before the answer's head went out.
    upstream_wait: Duration,
    /// When the attempt that answered started.
    attempt_started: Option<Instant>,
    row: RequestLogRow,
    entry: Option<Arc<KeyEntry>>,
    held: i64,
    budget: Option<RequestBudget>,
    quota_remaining: Option<i64>,
}

impl Call {
    fn elapsed_ms(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }
}

/// Request ids need to be unique, not secret: a fast PRNG will do.
/// The largest `max_tokens` a caller may ask for.
const MAX_TOKENS: i64 = 10_000_000;

fn with_headers(mut resp: Response, call: &Call) -> Response {
    // Every answer leaves through here: what the gateway itself cost this call.
    let overhead = call.started.elapsed().saturating_sub(call.upstream_wait);
    metrics::histogram!(telemetry::GATEWAY_OVERHEAD, "endpoint" => call.row.endpoint.clone())
        .record(overhead.as_secs_f64());
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&call.row.request_id) {
        h.insert("x-request-id", v);
    }
    if let Some(r) = call.quota_remaining {
        h.insert("x-quota-remaining", HeaderValue::from(r));
    }
    if let Some(b) = call.budget {
        h.insert("x-ratelimit-limit-requests", HeaderValue::from(b.limit));
        h.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from(b.remaining),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("{}s", b.reset_s)) {
            h.insert("x-ratelimit-reset-requests", v);
        }
    }
    resp
}

#[derive(serde::Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: i64,
    #[serde(default)]
    completion_tokens: i64,
}

/// The parts of a stream chunk the gateway reads, borrowed from the event text.
#[derive(serde::Deserialize)]
struct StreamChunk<'a> {
    #[serde(default, borrow)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(serde::Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<Usage>,
}

/// Text generated in a (non-streamed) answer, for estimating when usage is missing.
fn answer_text(v: &Value) -> String {
    let mut out = String::new();
    if let Some(choices) = v.get("choices").and_then(Value::as_array) {
        for c in choices {
            for p in ["/message/content", "/text", "/delta/content"] {
                if let Some(t) = c.pointer(p).and_then(Value::as_str) {
                    out.push_str(t);
                }
            }
        }
    }
    out
}

impl Gateway {
    fn cost(&self, model: &str, prompt: i64, completion: i64) -> i64 {
        let b = &self.settings.billing;
        match b.mode {
            BillingMode::Requests => b.request_cost,
            BillingMode::Tokens => b.token_cost(model, prompt, completion),
        }
    }

    fn fail(&self, mut call: Call, err: OaiError) -> Response {
        if let Some(e) = &call.entry
            && call.held > 0
        {
            self.ledger.release(e, call.held);
            call.held = 0;
        }
        call.row.status = i64::from(err.status.as_u16());
        call.row.error = Some(err.message.clone());
        call.row.latency_ms = call.elapsed_ms();
        let resp = with_headers(err.into_response(), &call);
        self.logger.log(call.row);
        resp
    }

    /// `origin`: the request id and client address the server worked out for this request.
    pub async fn handle(
        self: &Arc<Self>,
        endpoint: Endpoint,
        headers: &HeaderMap,
        origin: Origin,
        body: Result<Bytes, bool>,
    ) -> Response {
        let ip = origin.ip;
        let mut call = Call {
            started: Instant::now(),
            upstream_wait: Duration::ZERO,
            attempt_started: None,
            row: RequestLogRow {
                ts: self.ledger.now_ms(),
                request_id: origin.request_id,
                endpoint: endpoint.name().to_owned(),
                client_ip: client_ip::for_log(ip, self.settings.client_ip),
                ..Default::default()
            },
            entry: None,
            held: 0,
            budget: None,
            quota_remaining: None,
        };

        // Who is calling.
        let Some(presented) = crate::auth::caller_key(headers) else {
            return self.fail(call, OaiError::invalid_key());
        };
        let entry = match self.ledger.authenticate(presented).await {
            Ok(e) => e,
            Err(LedgerError::Unavailable) => return self.fail(call, OaiError::unavailable()),
            Err(_) => return self.fail(call, OaiError::invalid_key()),
        };
        let rec: KeyRecord = entry.snapshot();
        call.row.key_id = Some(rec.id);
        call.row.key_name = rec.name.clone().or_else(|| Some(rec.hint.clone()));
        call.row.owner_user_id = rec.owner.as_ref().and_then(|o| o.user_id);
        call.row.owner_username = rec.owner.as_ref().and_then(|o| o.username.clone());

        // What is asked.
        let body = match body {
            Ok(b) => b,
            Err(true) => {
                let e = OaiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    "payload_too_large",
                    format!("请求体过大，上限 {} 字节", self.settings.max_body_bytes),
                );
                return self.fail(call, e);
            }
            Err(false) => return self.fail(call, OaiError::bad_request("请求体读取失败", "body")),
        };
        let req: Map<String, Value> = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) => m,
            _ => {
                return self.fail(
                    call,
                    OaiError::bad_request("请求体必须是 JSON 对象", "body"),
                );
            }
        };
        let Some(model) = req.get("model").and_then(Value::as_str).map(str::to_owned) else {
            return self.fail(call, OaiError::bad_request("缺少 model 字段", "model"));
        };
        call.row.model = Some(model.clone());
        let stream = endpoint != Endpoint::Embeddings
            && req.get("stream").and_then(Value::as_bool).unwrap_or(false);
        call.row.is_stream = stream;

        // May this key make this call?
        let now = self.ledger.now_ms();
        if !rec.enabled {
            return self.fail(call, OaiError::forbidden("key_disabled", "API密钥已被禁用"));
        }
        if is_expired(&rec, now) {
            return self.fail(call, OaiError::forbidden("key_expired", "API密钥已过期"));
        }
        if let Some(allowed) = &rec.limits.models
            && !allowed.iter().any(|g| glob_match(g, &model))
        {
            let msg = format!("该密钥不允许使用模型 {model}");
            return self.fail(
                call,
                OaiError::forbidden("model_not_allowed", msg).param("model"),
            );
        }
        if let Some(nets) = &rec.limits.ips {
            let ok = ip.is_some_and(|ip| {
                nets.iter()
                    .filter_map(|n| super::settings::parse_net(n))
                    .any(|n| n.contains(&ip))
            });
            if !ok {
                return self.fail(
                    call,
                    OaiError::forbidden("ip_not_allowed", "该 IP 不允许使用此密钥"),
                );
            }
        }
        let cands = candidates(&self.upstreams, &model, now);
        if cands.is_empty() {
            let e = OaiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                format!("模型 {model} 不存在 (the model `{model}` does not exist)"),
            )
            .param("model");
            return self.fail(call, e);
        }

        // Limits, then the hold on quota.
        let mut req = Value::Object(req);
        let prompt_est = estimate_prompt(&req);
        let max_tokens = req
            .get("max_tokens")
            .or_else(|| req.get("max_completion_tokens"))
            .and_then(Value::as_i64)
            .filter(|&n| n > 0);
        // No model answers more than this; larger numbers would only overflow the sums below.
        if max_tokens.is_some_and(|n| n > MAX_TOKENS) {
            let e = OaiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_value",
                format!("max_tokens 不能大于 {MAX_TOKENS}"),
            )
            .param("max_tokens");
            return self.fail(call, e);
        }
        let completion_budget = match endpoint {
            Endpoint::Embeddings => 0,
            _ => max_tokens.unwrap_or(self.settings.billing.default_max_tokens),
        };
        let limits = Limits {
            rpm: rec.limits.rpm,
            tpm: rec.limits.tpm,
            daily: rec.limits.daily_requests.or(self.daily_default),
            max_concurrent: rec.limits.max_concurrent,
        };
        let est_tokens = u64::try_from(prompt_est.saturating_add(completion_budget)).unwrap_or(0);
        let slot = match self.limiter.admit(rec.id, limits, now, est_tokens) {
            Ok((slot, budget)) => {
                call.budget = budget;
                slot
            }
            Err(r) => {
                let e = OaiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "rate_limit_exceeded",
                    r.message(),
                )
                .retry_after(r.retry_after_s());
                return self.fail(call, e);
            }
        };
        // A call the store could not charge is not served: refuse before any upstream.
        if !self.ledger.writable() {
            return self.fail(call, OaiError::unavailable());
        }
        let hold = self.cost(&model, prompt_est, completion_budget);
        match self.ledger.reserve(&entry, hold) {
            Ok(()) => call.held = hold,
            Err(LedgerError::QuotaExceeded {
                remaining,
                requested,
            }) => {
                call.quota_remaining = Some(remaining);
                return self.fail(call, OaiError::quota_exceeded(remaining, requested));
            }
            Err(LedgerError::Disabled) => {
                return self.fail(call, OaiError::forbidden("key_disabled", "API密钥已被禁用"));
            }
            Err(LedgerError::Expired) => {
                return self.fail(call, OaiError::forbidden("key_expired", "API密钥已过期"));
            }
            Err(_) => return self.fail(call, OaiError::unavailable()),
        }
        call.entry = Some(entry.clone());
        call.quota_remaining = self
            .ledger
            .view(&entry)
            .quota
            .map(|q| q - self.ledger.view(&entry).used);

        // Include usage in streams; remember whether the caller asked, to hide it if not.
        let caller_wants_usage = req
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if stream && let Value::Object(m) = &mut req {
            let opts = m.entry("stream_options").or_insert_with(|| json!({}));
            if let Value::Object(o) = opts {
                o.insert("include_usage".into(), Value::Bool(true));
            }
        }

        // Try upstreams in order until one answers; nothing has reached the caller yet.
        let mut last_error = String::from("no upstream answered");
        let attempts = self.settings.max_attempts as usize;
        for up in cands.iter().take(attempts) {
            // Same body for every attempt, but for the model name this upstream knows.
            req["model"] = Value::String(up.upstream_model(&model).to_owned());
            let body = &req;
            call.row.upstream = Some(up.s.name.clone());
            let attempt = Instant::now();
            call.attempt_started = Some(attempt);
            let reply = call_upstream(self, up, endpoint, body, stream, &call.row.request_id).await;
            call.upstream_wait += attempt.elapsed();
            let up_label = || up.s.name.clone();
            match &reply {
                Err(e) => {
                    let kind = match e {
                        super::upstream_call::AttemptError::Connect(_) => "connect",
                        super::upstream_call::AttemptError::Timeout => "timeout",
                        super::upstream_call::AttemptError::TooLarge(_) => "too_large",
                    };
                    metrics::counter!(telemetry::UPSTREAM_ERRORS, "upstream" => up_label(), "kind" => kind)
                        .increment(1);
                }
                Ok(Reply::Full { status, .. }) if *status == 429 || *status >= 500 => {
                    let kind = if *status == 429 {
                        "status_429"
                    } else {
                        "status_5xx"
                    };
                    metrics::counter!(telemetry::UPSTREAM_ERRORS, "upstream" => up_label(), "kind" => kind)
                        .increment(1);
                }
                Ok(Reply::Full { status, .. }) => {
                    if *status >= 400 {
                        metrics::counter!(telemetry::UPSTREAM_ERRORS, "upstream" => up_label(), "kind" => "status_4xx")
                            .increment(1);
                    }
                    metrics::histogram!(telemetry::UPSTREAM_DURATION, "upstream" => up_label(), "model" => telemetry::model_label(&model))
                        .record(attempt.elapsed().as_secs_f64());
                }
                Ok(Reply::Stream { .. }) => {}
            }
            match reply {
                Err(e) => {
                    up.record_failure(
                        self.ledger.now_ms(),
                        self.settings.eject_after_failures,
                        self.settings.eject_cooldown_ms,
                    );
                    tracing::warn!(upstream = %up.s.name, request_id = %call.row.request_id, error = %e, "upstream attempt failed");
                    last_error = format!("{}: {e}", up.s.name);
                }
                Ok(Reply::Full {
                    status,
                    body: bytes,
                }) if status == 429 || status >= 500 => {
                    up.record_failure(
                        self.ledger.now_ms(),
                        self.settings.eject_after_failures,
                        self.settings.eject_cooldown_ms,
                    );
                    tracing::warn!(upstream = %up.s.name, request_id = %call.row.request_id, status, "upstream attempt failed");
                    last_error = format!("{}: HTTP {status}", up.s.name);
                    drop(bytes);
                }
                Ok(Reply::Full {
                    status,
                    body: bytes,
                }) => {
                    up.record_success();
                    return self
                        .finish_full(
                            call, entry, &model, endpoint, body, status, bytes, prompt_est, slot,
                        )
                        .await;
                }
                Ok(Reply::Stream { stream: s }) => {
                    up.record_success();
                    return self.start_stream(
                        call,
                        entry,
                        model,
                        s,
                        prompt_est,
                        caller_wants_usage,
                        slot,
                    );
                }
            }
        }
        let e = OaiError::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            "upstream_error",
            format!("上游服务不可用 ({last_error})"),
        );
        self.fail(call, e)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call context split into stages is the architecture issue's next step"
    )]
    async fn finish_full(
        self: &Arc<Self>,
        mut call: Call,
        entry: Arc<KeyEntry>,
        model: &str,
        endpoint: Endpoint,
        sent: &Value,
        status: u16,
        bytes: Bytes,
        prompt_est: i64,
        slot: Slot,
    ) -> Response {
        drop(slot);
        call.row.status = i64::from(status);
        call.row.latency_ms = call.elapsed_ms();
        call.row.ttft_ms = Some(call.row.latency_ms);
        let ok = (200..300).contains(&status);
        let mut ticket = None;
        // Only `usage` is read (no tree is built); the full parse is for the rare estimate.
        let usage = serde_json::from_slice::<UsageOnly>(&bytes)
            .ok()
            .and_then(|u| u.usage)
            .map(|u| (u.prompt_tokens, u.completion_tokens));
        let (prompt, completion, estimated) = match usage {
            Some((p, c)) => (p, c, false),
            None => {
                let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                (prompt_est, estimate_text(&answer_text(&parsed)), true)
            }
        };
        let _ = sent;
        if ok {
            let completion = if endpoint == Endpoint::Embeddings {
                0
            } else {
                completion
            };
            call.row.prompt_tokens = prompt;
            call.row.completion_tokens = completion;
            call.row.estimated = estimated;
            ticket = self.begin_settle(&mut call, &entry, model, prompt, completion);
        } else {
            // An upstream refusal (400, 401, 404…) is passed on and costs nothing; its texts
            // lose anything that looks like a credential (upstreams echo the key we sent).
            self.ledger.release(&entry, call.held);
            call.held = 0;
            call.row.error = Some(format!("upstream answered HTTP {status}"));
        }
        let bytes = if ok {
            bytes
        } else {
            let keys: Vec<&str> = self
                .upstreams
                .iter()
                .filter_map(|u| u.s.api_key.as_deref())
                .collect();
            Bytes::from(super::redact::error_body(status, &bytes, &keys))
        };
        let mut resp = Response::new(Body::from(bytes));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let resp = with_headers(resp, &call);
        // The answer goes out now; the log row follows the settlement's commit.
        let gw = self.clone();
        self.tracker
            .spawn(async move { gw.finish_settle(call.row, ticket).await });
        resp
    }

    /// Replaces the hold by the actual cost (the usage history entry is written with it).
    /// Memory is updated at once; the returned ticket resolves when the store has it.
    fn begin_settle(
        &self,
        call: &mut Call,
        entry: &KeyEntry,
        model: &str,
        prompt: i64,
        completion: i64,
    ) -> Option<SettleTicket> {
        let cost = self.cost(model, prompt, completion);
        let item = UsageItem {
            amount: cost,
            reason: Some(call.row.endpoint.clone()),
            metadata: Some(
                json!({
                    "model": model,
                    "upstream": call.row.upstream,
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "estimated": call.row.estimated,
                    "request_id": call.row.request_id,
                })
                .as_object()
                .cloned()
                .unwrap_or_default(),
            ),
        };
        let held = std::mem::take(&mut call.held);
        if let Some(id) = call.row.key_id {
            self.limiter.record_tokens(
                id,
                self.ledger.now_ms(),
                u64::try_from(prompt + completion).unwrap_or(0),
            );
        }
        call.row.cost = cost;
        match self.ledger.begin_settle(entry, held, cost, item) {
            Ok(ticket) => {
                call.quota_remaining = ticket.remaining_now;
                Some(ticket)
            }
            Err(e) => {
                tracing::error!(error = %e, request_id = %call.row.request_id, "settlement failed");
                call.row.error = Some("settlement failed".into());
                None
            }
        }
    }

    /// Waits for a settlement, then writes the call's log row with what was charged.
    async fn finish_settle(&self, mut row: RequestLogRow, ticket: Option<SettleTicket>) {
        if let Some(t) = ticket {
            match t.outcome().await {
                Ok(out) => row.cost = out.amount_used,
                Err(e) => {
                    tracing::error!(error = %e, request_id = %row.request_id, "settlement failed");
                    row.error = Some("settlement failed".into());
                }
            }
        }
        self.logger.log(row);
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call context split into stages is the architecture issue's next step"
    )]
    fn start_stream(
        self: &Arc<Self>,
        call: Call,
        entry: Arc<KeyEntry>,
        model: String,
        upstream: ByteStream,
        prompt_est: i64,
        caller_wants_usage: bool,
        slot: Slot,
    ) -> Response {
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(32);
        let mut resp = Response::new(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let resp = with_headers(resp, &call);
        let gw = self.clone();
        self.tracker.spawn(async move {
            gw.pump(
                call,
                entry,
                model,
                upstream,
                prompt_est,
                caller_wants_usage,
                tx,
            )
            .await;
            drop(slot);
        });
        resp
    }

    /// Forwards events as they arrive; on the end (or the caller leaving, which drops the
    /// upstream request) settles what was used.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call context split into stages is the architecture issue's next step"
    )]
    async fn pump(
        self: Arc<Self>,
        mut call: Call,
        entry: Arc<KeyEntry>,
        model: String,
        mut upstream: ByteStream,
        prompt_est: i64,
        caller_wants_usage: bool,
        tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) {
        let mut splitter = SseSplitter::default();
        let mut usage: Option<(i64, i64)> = None;
        let mut text = String::new();
        let mut error: Option<String> = None;
        let mut done = false;
        while !done {
            let next = tokio::select! {
                _ = tx.closed() => {
                    error = Some("client disconnected".into());
                    break;
                }
                n = tokio::time::timeout(STREAM_IDLE, upstream.next()) => n,
            };
            let chunk = match next {
                Err(_) => {
                    error = Some("upstream idle timeout".into());
                    break;
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    error = Some(format!("upstream stream error: {e}"));
                    break;
                }
                Ok(Some(Ok(c))) => c,
            };
            let mut out = Vec::with_capacity(chunk.len() + 16);
            let Ok(events) = splitter.push(&chunk) else {
                error = Some("upstream event too long".into());
                break;
            };
            for ev in events {
                if ev.data == "[DONE]" {
                    done = true;
                } else if let Ok(c) = serde_json::from_str::<StreamChunk>(&ev.data) {
                    if let Some(u) = &c.usage {
                        usage = Some((u.prompt_tokens, u.completion_tokens));
                    }
                    for choice in c.choices.iter().flatten() {
                        if let Some(t) = choice.delta.as_ref().and_then(|d| d.content.as_deref()) {
                            text.push_str(t);
                        }
                        if let Some(t) = choice.text.as_deref() {
                            text.push_str(t);
                        }
                    }
                    let usage_only =
                        c.usage.is_some() && c.choices.as_ref().is_some_and(|v| v.is_empty());
                    if usage_only && !caller_wants_usage {
                        continue;
                    }
                }
                out.extend_from_slice(&ev.raw);
                out.extend_from_slice(b"\n\n");
            }
            if out.is_empty() {
                continue;
            }
            if call.row.ttft_ms.is_none() {
                call.row.ttft_ms = Some(call.elapsed_ms());
                if let Some(a) = call.attempt_started {
                    metrics::histogram!(
                        telemetry::UPSTREAM_TTFT,
                        "upstream" => call.row.upstream.clone().unwrap_or_default(),
                        "model" => telemetry::model_label(&model)
                    )
                    .record(a.elapsed().as_secs_f64());
                }
            }
            if tx.send(Ok(Bytes::from(out))).await.is_err() {
                error = Some("client disconnected".into());
                break;
            }
        }
        if error.is_none()
            && let Some(rest) = splitter.rest()
        {
            let _ = tx.send(Ok(rest)).await;
        }
        // Dropping the upstream body closes its connection: the upstream stops generating.
        drop(upstream);
        drop(tx);
        let (prompt, completion) = match usage {
            Some(u) => u,
            None => {
                call.row.estimated = true;
                (prompt_est, estimate_text(&text))
            }
        };
        if let Some(a) = call.attempt_started {
            let up = call.row.upstream.clone().unwrap_or_default();
            let model_l = telemetry::model_label(&model);
            if error.is_some() {
                metrics::counter!(telemetry::UPSTREAM_ERRORS, "upstream" => up.clone(), "kind" => "stream")
                    .increment(1);
            }
            metrics::histogram!(telemetry::UPSTREAM_DURATION, "upstream" => up, "model" => model_l)
                .record(a.elapsed().as_secs_f64());
        }
        call.row.status = 200;
        call.row.error = error;
        call.row.prompt_tokens = prompt;
        call.row.completion_tokens = completion;
        let ticket = self.begin_settle(&mut call, &entry, &model, prompt, completion);
        call.row.latency_ms = call.elapsed_ms();
        self.finish_settle(call.row, ticket).await;
    }
}

async fn call_upstream(
    gw: &Gateway,
    up: &Upstream,
    endpoint: Endpoint,
    body: &Value,
    stream: bool,
    request_id: &str,
) -> Result<Reply, super::upstream_call::AttemptError> {
    call(
        &gw.http,
        up,
        endpoint,
        body,
        stream,
        request_id,
        gw.settings.max_response_bytes,
    )
    .await
}
