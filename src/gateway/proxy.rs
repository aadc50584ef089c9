//! One proxied call, start to end, as stages over one [`Call`]: identify → read → policy →
//! route → limits → hold → upstream with failover → settle → log. The decisions live in
//! `stages.rs`; this file runs them around the ledger, the limiter and the upstreams, and
//! returns an [`Outcome`] (the HTTP edge is `api::gateway`). Streams are pumped by a task that
//! settles when they end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use super::adapter;
use super::call::{Call, CallError, Outcome};
use super::endpoint::{Endpoint, Protocol};
use super::health::Gate;
use super::limits::{self, Limits};
use super::responses_request::Echo;
use super::stages::{self, Request};
use super::upstream::{KeyPick, Upstream};
use super::upstream_call::{self, AttemptError, ByteStream, Outgoing, Reply};
use super::usage::Metered;
use super::{Gateway, client_ip};
use crate::auth::Origin;
use crate::billing::Ask;
use crate::ledger::{KeyEntry, LedgerError, SettleTicket};
use crate::store::{RequestLogRow, UsageItem};
use crate::telemetry;

/// The request-log error of a served call that generated nothing and was not charged.
const NO_CONTENT: &str = "上游未返回内容，未计费 (no content; not charged)";

/// The request-log error of a stream whose caller went away.
const CLIENT_LEFT: &str = "client disconnected";

/// Idle time allowed between two chunks of a stream.
const STREAM_IDLE: Duration = Duration::from_secs(300);

/// An upstream attempt that did not answer, and why (for the next attempt's log line).
enum Attempt {
    Answered(Reply),
    Failed(String),
}

impl Gateway {
    /// Every answer leaves through here: what the gateway itself cost this call.
    fn observe_overhead(call: &Call) {
        let overhead = call.started.elapsed().saturating_sub(call.upstream_wait);
        telemetry::handles::GATEWAY_OVERHEAD
            .get([&call.row.endpoint])
            .record(overhead.as_secs_f64());
    }

    /// How long the upstream took to its first event.
    fn observe_ttft(call: &Call, upstream: &str, model: &str) {
        if let Some(a) = call.attempt_started {
            telemetry::handles::UPSTREAM_TTFT
                .get([upstream, model])
                .record(a.elapsed().as_secs_f64());
        }
    }

    /// Stage "log" for a call not served: its hold returned, its row written.
    fn refuse(&self, mut call: Call, err: CallError) -> Outcome {
        if let (Some(e), Some(hold)) = (&call.entry, call.hold.take()) {
            self.ledger.release(e, hold);
        }
        call.row.status = i64::from(err.status());
        call.row.error = Some(err.message());
        call.row.latency_ms = call.elapsed_ms();
        Self::observe_overhead(&call);
        let meta = call.meta();
        self.logger.log(call.row);
        Outcome::Refused { error: err, meta }
    }

    /// `origin`: the request id and client address the server worked out for this request.
    pub async fn handle(
        self: &Arc<Self>,
        endpoint: Endpoint,
        headers: &HeaderMap,
        origin: Origin,
        body: impl Future<Output = Result<Bytes, bool>> + Send,
    ) -> Outcome {
        let ip = origin.ip;
        let mut call = Call::new(RequestLogRow {
            ts: self.ledger.now_ms(),
            request_id: origin.request_id,
            endpoint: endpoint.name().to_owned(),
            client_ip: client_ip::for_log(ip, self.settings.client_ip),
            ..Default::default()
        });
        let passed = protocol_headers(endpoint, headers);
        let from = Source {
            ip,
            conn: origin.conn,
        };
        match self.admit(&mut call, endpoint, headers, from, body).await {
            Ok((entry, req, upstreams)) => {
                let how = How {
                    endpoint,
                    headers: &passed,
                };
                self.forward(call, entry, how, req, upstreams).await
            }
            Err(e) => self.refuse(call, e),
        }
    }

    /// Every stage before an upstream is contacted; on success the call holds its slot and
    /// its reservation.
    async fn admit(
        &self,
        call: &mut Call,
        endpoint: Endpoint,
        headers: &HeaderMap,
        from: Source,
        body: impl Future<Output = Result<Bytes, bool>> + Send,
    ) -> Result<(Arc<KeyEntry>, Request, Vec<Arc<Upstream>>), CallError> {
        // Identify.
        let presented = crate::auth::caller_key(headers).ok_or(CallError::NoKey)?;
        let entry = match self.ledger.authenticate(presented).await {
            Ok(e) => e,
            Err(LedgerError::Unavailable) => return Err(CallError::Unavailable),
            Err(_) => return Err(CallError::UnknownKey),
        };
        if let Some(c) = &from.conn {
            c.authenticated();
        }
        let ip = from.ip;
        let key_id = entry.with(|rec| {
            call.row.key_id = Some(rec.id);
            call.row.key_name = rec.name.clone().or_else(|| Some(rec.hint.clone()));
            call.row.owner_user_id = rec.owner.as_ref().and_then(|o| o.user_id);
            call.row.owner_username = rec.owner.as_ref().and_then(|o| o.username.clone());
            rec.id
        });

        // Read (only now: a caller without a valid key never makes us wait for its body),
        // then policy and route.
        let req = stages::read(
            body.await,
            endpoint,
            self.settings.max_body_bytes,
            self.settings.billing.default_max_tokens,
        )?;
        call.row.model = Some(req.model.clone());
        call.row.is_stream = req.stream;
        let now = self.ledger.now_ms();
        let limits = entry.with(|rec| {
            stages::policy(rec, &req.model, ip, now).map(|()| Limits {
                rpm: rec.limits.rpm,
                tpm: rec.limits.tpm,
                daily: rec.limits.daily_requests.or(self.daily_default),
                max_concurrent: rec.limits.max_concurrent,
            })
        })?;
        let mut upstreams = stages::route(&self.roster().upstreams, endpoint, &req.model, now)?;
        // Money mode serves a call only where it has a price for it: never free.
        let billing = &self.settings.billing;
        let start = call.row.ts;
        upstreams.retain(|u| billing.prices(&req.model, &u.s.name, start));
        if upstreams.is_empty() {
            return Err(CallError::NotPriced(req.model.clone()));
        }

        // Limits, then the hold on quota.
        let est_tokens = u64::try_from(
            req.prompt_est
                .saturating_add(req.completion_budget.saturating_mul(req.choices)),
        )
        .unwrap_or(0);
        // The user's and team's limits over all their keys first: a call they refuse is
        // not counted against the key.
        for (id, l) in self.ledger.account_limits(&entry) {
            let lim = Limits {
                rpm: l.rpm,
                tpm: l.tpm,
                daily: l.daily_requests,
                max_concurrent: l.max_concurrent,
            };
            let (slot, _) = self
                .account_limiter
                .admit(id, lim, now, est_tokens)
                .map_err(CallError::RateLimited)?;
            call.slots.push(slot);
            call.accounts.push(id);
        }
        let (slot, budget) = self
            .limiter
            .admit(key_id, limits, now, est_tokens)
            .map_err(CallError::RateLimited)?;
        call.slots.push(slot);
        call.budget = budget;
        // A call the store could not charge is not served: refuse before any upstream.
        if !self.ledger.writable() {
            return Err(CallError::Unavailable);
        }
        self.hold(call, &entry, &req, &upstreams, limits, now)?;
        call.entry = Some(entry.clone());
        call.quota_remaining = self.ledger.remaining(&entry);
        Ok((entry, req, upstreams))
    }

    /// Stage "hold": reserves the worst the call can cost on the key (and, with instances
    /// sharing the store, counts it in the shared windows).
    fn hold(
        &self,
        call: &mut Call,
        entry: &Arc<KeyEntry>,
        req: &Request,
        upstreams: &[Arc<Upstream>],
        limits: Limits,
        now: i64,
    ) -> Result<(), CallError> {
        let ask = Ask {
            prompt_est: req.prompt_est,
            completion_budget: req.completion_budget,
            choices: req.choices,
        };
        let hold = self
            .settings
            .billing
            .hold(
                &req.model,
                upstreams.iter().map(|u| u.s.name.as_str()),
                ask,
                call.row.ts,
            )
            .map_err(|_| CallError::NotPriced(req.model.clone()))?;
        let windows = if self.ledger.shared() {
            limits::shared_windows(limits, now)
        } else {
            Vec::new()
        };
        // What the key's history says if this server dies before the settlement.
        let meta = HoldMetadata {
            model: &req.model,
            request_id: &call.row.request_id,
        };
        let item = UsageItem {
            amount: hold,
            reason: Some(call.row.endpoint.clone()),
            metadata: serde_json::to_string(&meta).ok(),
        };
        match self.ledger.hold(entry, hold, windows, item) {
            Ok(h) => {
                call.hold = Some(h);
                Ok(())
            }
            Err(e) => Err(hold_refused(call, e, now)),
        }
    }

    /// Waits, once an upstream has answered, until the call's hold is durable: no byte of
    /// an answer leaves before the call is sure to be charged, even if this process dies.
    /// The commit ran while the upstream worked, so this is nearly always immediate.
    async fn confirm_hold(&self, call: &mut Call) -> Result<(), CallError> {
        let Some(hold) = call.hold.as_mut() else {
            return Ok(());
        };
        match hold.confirm().await {
            Ok(()) => Ok(()),
            Err(e) => {
                call.hold = None;
                Err(hold_refused(call, e, self.ledger.now_ms()))
            }
        }
    }

    /// Stage "upstream with failover": tries upstreams in order until one answers; nothing
    /// has reached the caller yet, so a failed attempt is invisible to it.
    async fn forward(
        self: &Arc<Self>,
        mut call: Call,
        entry: Arc<KeyEntry>,
        how: How<'_>,
        mut req: Request,
        upstreams: Vec<Arc<Upstream>>,
    ) -> Outcome {
        let mut last_error = String::from("no upstream answered");
        let mut attempts = self.settings.max_attempts as usize;
        // An ejected upstream past its cooldown lets one probe through; others wait behind
        // it and are tried only when everything else failed (as the ejected ones are).
        let mut deferred: Vec<Arc<Upstream>> = Vec::new();
        let mut queue: std::collections::VecDeque<(Arc<Upstream>, bool)> =
            upstreams.into_iter().map(|u| (u, false)).collect();
        while let Some((up, last_resort)) = queue.pop_front() {
            if attempts == 0 {
                break;
            }
            if !last_resort && up.health.gate(self.ledger.now_ms()) == Gate::Closed {
                deferred.push(up);
                if queue.is_empty() {
                    queue.extend(deferred.drain(..).map(|u| (u, true)));
                }
                continue;
            }
            let key = match up.next_key() {
                KeyPick::NoKey => None,
                KeyPick::Key(i, k) => Some((i, k)),
                KeyPick::AllDisabled => {
                    last_error = format!("{}: every upstream key was refused", up.s.name);
                    if queue.is_empty() {
                        queue.extend(deferred.drain(..).map(|u| (u, true)));
                    }
                    continue;
                }
            };
            attempts -= 1;
            // Same body for every attempt, but for the model name this upstream knows; a
            // protocol the upstream does not speak goes to it translated to chat.
            let translated = adapter::translated(how.endpoint, |p| up.speaks(p));
            let (prepared, echo) = match prepare(&mut req, &up, how.endpoint, translated) {
                Ok(p) => p,
                Err(e) => return self.refuse(call, e),
            };
            let (wire, body, raw) = wire_body(&req, &prepared, how.endpoint);
            call.row.upstream = Some(up.s.name.clone());
            let out = Outgoing {
                endpoint: wire,
                body,
                raw,
                stream: req.stream,
                headers: if translated { &[] } else { how.headers },
            };
            let shape = Shape {
                endpoint: how.endpoint,
                translated,
                echo,
            };
            let attempt = self.attempt(&mut call, &up, key, out, &req.model).await;
            if matches!(attempt, Attempt::Answered(_))
                && let Err(e) = self.confirm_hold(&mut call).await
            {
                return self.refuse(call, e);
            }
            match attempt {
                Attempt::Failed(why) => {
                    last_error = why;
                    if queue.is_empty() {
                        queue.extend(deferred.drain(..).map(|u| (u, true)));
                    }
                }
                Attempt::Answered(Reply::Full { status, body }) => {
                    return self.answer_full(call, entry, shape, &req, status, body);
                }
                Attempt::Answered(Reply::Stream { stream }) => {
                    return self.answer_stream(call, entry, shape, req, stream);
                }
            }
        }
        self.refuse(call, CallError::NoUpstreamAnswered(last_error))
    }

    /// One attempt: its time counted as upstream wait, its failure counted against the
    /// upstream's health (ejected after enough within its window), a key the upstream
    /// refused set aside.
    async fn attempt(
        &self,
        call: &mut Call,
        up: &Arc<Upstream>,
        key: Option<(usize, &str)>,
        out: Outgoing<'_>,
        model: &str,
    ) -> Attempt {
        let started = Instant::now();
        call.attempt_started = Some(started);
        let reply = upstream_call::call(
            up,
            key.map(|(_, k)| k),
            out,
            &call.row.request_id,
            self.settings.max_response_bytes,
        )
        .await;
        call.upstream_wait += started.elapsed();
        let failed = |kind: &'static str, why: &str| {
            metrics::counter!(telemetry::UPSTREAM_ERRORS, "upstream" => up.s.name.clone(), "kind" => kind)
                .increment(1);
            if up.health.failure(self.ledger.now_ms(), why, up.policy) {
                tracing::warn!(upstream = %up.s.name, reason = why, "upstream ejected");
                metrics::counter!(crate::telemetry::UPSTREAM_EJECTIONS, "upstream" => up.s.name.clone())
                    .increment(1);
            }
        };
        match reply {
            Err(e) => {
                let why = e.to_string();
                failed(
                    match e {
                        AttemptError::Connect(_) => "connect",
                        AttemptError::Timeout => "timeout",
                        AttemptError::TooLarge(_) => "too_large",
                    },
                    &why,
                );
                tracing::warn!(upstream = %up.s.name, request_id = %call.row.request_id, error = %why, "upstream attempt failed");
                Attempt::Failed(format!("{}: {why}", up.s.name))
            }
            Ok(Reply::Full { status, ref body })
                if key.is_some() && upstream_call::key_refused(status, body) =>
            {
                // Our key, not the caller's request: set that key aside and try on.
                let why = format!("HTTP {status}");
                if let Some((idx, _)) = key {
                    self.key_refused(up, idx, &why).await;
                }
                metrics::counter!(telemetry::UPSTREAM_ERRORS, "upstream" => up.s.name.clone(), "kind" => "key_refused")
                    .increment(1);
                Attempt::Failed(format!("{}: upstream key refused ({why})", up.s.name))
            }
            Ok(Reply::Full { status, .. }) if status == 429 || status >= 500 => {
                let why = format!("HTTP {status}");
                failed(
                    if status == 429 {
                        "status_429"
                    } else {
                        "status_5xx"
                    },
                    &why,
                );
                tracing::warn!(upstream = %up.s.name, request_id = %call.row.request_id, status, "upstream attempt failed");
                Attempt::Failed(format!("{}: {why}", up.s.name))
            }
            Ok(reply) => {
                up.health.success(self.ledger.now_ms());
                if let Reply::Full { status, .. } = &reply {
                    if *status >= 400 {
                        metrics::counter!(telemetry::UPSTREAM_ERRORS, "upstream" => up.s.name.clone(), "kind" => "status_4xx")
                            .increment(1);
                    }
                    telemetry::handles::UPSTREAM_DURATION
                        .get([&up.s.name, telemetry::model_label(model)])
                        .record(started.elapsed().as_secs_f64());
                }
                Attempt::Answered(reply)
            }
        }
    }

    /// A whole answer: settled (or, for the upstream's own refusal, released) and passed on.
    fn answer_full(
        self: &Arc<Self>,
        mut call: Call,
        entry: Arc<KeyEntry>,
        shape: Shape,
        req: &Request,
        status: u16,
        bytes: Bytes,
    ) -> Outcome {
        call.slots.clear();
        call.row.status = i64::from(status);
        call.row.latency_ms = call.elapsed_ms();
        call.row.ttft_ms = Some(call.row.latency_ms);
        let mut ticket = None;
        let bytes = if (200..300).contains(&status) {
            let metered =
                adapter::metered_full(shape.endpoint, shape.translated, &bytes, &req.estimator());
            ticket = self.begin_settle(&mut call, &entry, &req.model, metered);
            if shape.translated {
                let chat: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let answer = adapter::from_chat(shape.endpoint, &chat, req, shape.echo.as_ref());
                Bytes::from(serde_json::to_vec(&answer).unwrap_or_default())
            } else {
                bytes
            }
        } else {
            // An upstream refusal (400, 401, 404…) is passed on and costs nothing; its texts
            // lose anything that looks like a credential (upstreams echo the key we sent).
            if let Some(hold) = call.hold.take() {
                self.ledger.release(&entry, hold);
            }
            call.row.error = Some(format!("upstream answered HTTP {status}"));
            let roster = self.roster();
            let redacted = super::redact::error_body(status, &bytes, &roster.key_texts());
            adapter::refusal(shape.endpoint, status, redacted)
        };
        // Whatever the status: no credential of ours leaves in an answer.
        let bytes = match self.roster().secrets.mask(&bytes) {
            std::borrow::Cow::Borrowed(_) => bytes,
            std::borrow::Cow::Owned(masked) => {
                tracing::warn!(request_id = %call.row.request_id, status, "an upstream answer echoed a credential; masked");
                Bytes::from(masked)
            }
        };
        Self::observe_overhead(&call);
        let meta = call.meta();
        // The answer goes out now; the log row follows the settlement's commit.
        let gw = self.clone();
        self.tracker
            .spawn(async move { gw.finish_settle(call.row, ticket).await });
        Outcome::Answered {
            status,
            body: bytes,
            meta,
        }
    }

    /// Stage "settle", first half: replaces the hold by the actual cost (the usage history
    /// entry is written with it). Memory is updated at once; the returned ticket resolves
    /// when the store has it.
    fn begin_settle(
        &self,
        call: &mut Call,
        entry: &KeyEntry,
        model: &str,
        metered: Metered,
    ) -> Option<SettleTicket> {
        let u = metered.usage;
        let (prompt, completion) = (u.prompt(), u.output);
        let held_amount = call.held();
        let row = &mut call.row;
        row.prompt_tokens = prompt;
        row.completion_tokens = completion;
        row.cached_tokens = u.cached;
        row.cache_write_tokens = u.cache_write;
        row.reasoning_tokens = u.reasoning;
        row.estimated = metered.estimated;
        if !metered.delivered {
            // Nothing generated (an empty stream, only an error event, an answer without
            // output): the hold goes back, the row says why.
            if let Some(hold) = call.hold.take() {
                self.ledger.release(entry, hold);
            }
            let why = row.error.take();
            row.error = Some(match why {
                Some(w) => format!("{NO_CONTENT}: {w}"),
                None => NO_CONTENT.to_owned(),
            });
            return None;
        }
        let upstream = row.upstream.as_deref().unwrap_or_default();
        // Priced at the call's start; routing kept only upstreams with a price, so the hold
        // is charged only if the table changed under the call (never free).
        let cost = self
            .settings
            .billing
            .cost(model, upstream, &u, row.ts)
            .unwrap_or(held_amount);
        if cost > held_amount {
            // More than the worst case held (an upstream that ignored max_tokens): charged
            // what was served, clamped by the ledger to what the key has left.
            metrics::counter!(telemetry::GATEWAY_OVERRUNS).increment(1);
            tracing::warn!(request_id = %row.request_id, held = held_amount, cost, "call cost more than its hold");
        }
        let item = UsageItem {
            amount: cost,
            reason: Some(row.endpoint.clone()),
            metadata: history_metadata(row, model, &u),
        };
        let hold = call.hold.take().unwrap_or_default();
        let tokens = u64::try_from(prompt + completion).unwrap_or(0);
        let now = self.ledger.now_ms();
        if let Some(id) = call.row.key_id {
            self.limiter.record_tokens(id, now, tokens);
        }
        for &id in &call.accounts {
            self.account_limiter.record_tokens(id, now, tokens);
        }
        call.row.cost = cost;
        match self.ledger.begin_settle(entry, hold, cost, item) {
            Ok(ticket) => {
                call.quota_remaining = ticket.remaining_now;
                Some(ticket)
            }
            Err(e) => {
                let request_id = &call.row.request_id;
                crate::telemetry::log_limited("settlement", |suppressed| {
                    tracing::error!(error = %e, request_id = %request_id, suppressed, "settlement failed");
                });
                call.row.error = Some("settlement failed".into());
                None
            }
        }
    }

    /// Stage "settle", second half, then "log": waits for the settlement, then writes the
    /// call's log row with what was charged.
    async fn finish_settle(&self, mut row: RequestLogRow, ticket: Option<SettleTicket>) {
        if let Some(t) = ticket {
            match t.outcome().await {
                Ok(out) => row.cost = out.amount_used,
                Err(e) => {
                    crate::telemetry::log_limited("settlement", |suppressed| {
                        tracing::error!(error = %e, request_id = %row.request_id, suppressed, "settlement failed");
                    });
                    row.error = Some("settlement failed".into());
                }
            }
        }
        self.logger.log(row);
    }

    /// A streamed answer: its events go to the caller as they arrive, from a task that
    /// settles when the stream ends.
    fn answer_stream(
        self: &Arc<Self>,
        call: Call,
        entry: Arc<KeyEntry>,
        shape: Shape,
        req: Request,
        upstream: ByteStream,
    ) -> Outcome {
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(32);
        Self::observe_overhead(&call);
        let meta = call.meta();
        let gw = self.clone();
        let relay = adapter::relay(shape.endpoint, shape.translated, &req, shape.echo);
        self.tracker.spawn(async move {
            gw.pump(call, entry, req, relay, upstream, tx).await;
        });
        Outcome::Streaming { events: rx, meta }
    }

    /// Forwards events as they arrive; on the end (or the caller leaving, which drops the
    /// upstream request) settles what was used.
    async fn pump(
        self: Arc<Self>,
        mut call: Call,
        entry: Arc<KeyEntry>,
        req: Request,
        mut meter: super::relay::Relay,
        mut upstream: ByteStream,
        tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) {
        let mut error: Option<String> = None;
        let model_label = telemetry::model_label(&req.model);
        let up_label = call.row.upstream.clone().unwrap_or_default();
        let secrets = self.roster().secrets.clone();
        let mut guard = super::secret_stream::StreamGuard::new(&secrets);
        while !meter.done() {
            let next = tokio::select! {
                _ = tx.closed() => {
                    error = Some(CLIENT_LEFT.into());
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
            let Ok(out) = meter.push(&chunk) else {
                error = Some("upstream event too long".into());
                break;
            };
            if out.is_empty() {
                continue;
            }
            if call.row.ttft_ms.is_none() {
                call.row.ttft_ms = Some(call.elapsed_ms());
                Self::observe_ttft(&call, &up_label, model_label);
            }
            // Masked, and held back while a secret may be completing in the next event.
            let out = guard.push(&out);
            if out.is_empty() {
                continue;
            }
            if tx.send(Ok(Bytes::from(out))).await.is_err() {
                error = Some(CLIENT_LEFT.into());
                break;
            }
        }
        if error.is_none() {
            let mut rest = guard.finish();
            if let Some(tail) = meter.rest() {
                rest.extend(guard.push(&tail));
                rest.extend(guard.finish());
            }
            if !rest.is_empty() {
                let _ = tx.send(Ok(Bytes::from(rest))).await;
            }
        }
        // Dropping the upstream body closes its connection: the upstream stops generating.
        drop(upstream);
        drop(tx);
        if let Some(a) = call.attempt_started {
            if error.is_some() {
                metrics::counter!(telemetry::UPSTREAM_ERRORS, "upstream" => up_label.clone(), "kind" => "stream")
                    .increment(1);
            }
            telemetry::handles::UPSTREAM_DURATION
                .get([&up_label, model_label])
                .record(a.elapsed().as_secs_f64());
        }
        let metered = meter.metered(&req.estimator());
        // A caller who leaves early pays for what the upstream was asked to do (it bills us);
        // only an upstream that ends its stream with nothing is not charged.
        let client_left = error.as_deref() == Some(CLIENT_LEFT);
        let metered = metered.delivered(metered.delivered || client_left);
        call.row.status = 200;
        call.row.error = error;
        let ticket = self.begin_settle(&mut call, &entry, &req.model, metered);
        call.row.latency_ms = call.elapsed_ms();
        // The concurrency slot is held to the stream's end.
        call.slots.clear();
        self.finish_settle(call.row, ticket).await;
    }
}

/// Why a call's hold was refused, as the call's error (the remaining quota kept for the
/// answer's header).
fn hold_refused(call: &mut Call, e: LedgerError, now: i64) -> CallError {
    match e {
        LedgerError::Limited(w) => CallError::RateLimited(limits::Refusal::shared(w, now)),
        LedgerError::QuotaExceeded {
            remaining,
            requested,
            budget,
        } => {
            call.quota_remaining = Some(remaining);
            CallError::QuotaExceeded {
                remaining,
                requested,
                budget,
            }
        }
        LedgerError::Disabled => CallError::KeyDisabled,
        LedgerError::OwnerDisabled(scope) => CallError::OwnerDisabled(scope),
        LedgerError::Expired => CallError::KeyExpired,
        LedgerError::UnknownKey | LedgerError::Unavailable => CallError::Unavailable,
    }
}

/// What the key's history says of a call whose server died before its settlement.
#[derive(serde::Serialize)]
struct HoldMetadata<'a> {
    model: &'a str,
    request_id: &'a str,
}

/// The usage-history entry's metadata: what was served, for whom. The cache and reasoning
/// classes only when there are some (most calls have none). Serialised from borrowed fields
/// straight to its text (no map built and dropped on the hot path).
#[derive(serde::Serialize)]
struct HistoryMetadata<'a> {
    model: &'a str,
    upstream: Option<&'a str>,
    prompt_tokens: i64,
    completion_tokens: i64,
    #[serde(skip_serializing_if = "none_counted")]
    cached_tokens: i64,
    #[serde(skip_serializing_if = "none_counted")]
    cache_write_tokens: i64,
    #[serde(skip_serializing_if = "none_counted")]
    reasoning_tokens: i64,
    estimated: bool,
    request_id: &'a str,
}

fn none_counted(n: &i64) -> bool {
    *n <= 0
}

fn history_metadata(row: &RequestLogRow, model: &str, u: &crate::billing::Usage) -> Option<String> {
    serde_json::to_string(&HistoryMetadata {
        model,
        upstream: row.upstream.as_deref(),
        prompt_tokens: u.prompt(),
        completion_tokens: u.output,
        cached_tokens: u.cached,
        cache_write_tokens: u.cache_write,
        reasoning_tokens: u.reasoning,
        estimated: row.estimated,
        request_id: &row.request_id,
    })
    .ok()
}

/// Names the model as `up` knows it in the call's tree when a tree goes to `up` (the
/// built-in mock, or a rename whose place in the bytes is not known: a body with a member
/// named twice); whether the caller's bytes say it.
fn name_model_for(req: &mut Request, up: &Upstream) -> Sent {
    let up_model = up.upstream_model(&req.model).to_owned();
    let as_sent = up_model == req.model;
    let needs_tree = !as_sent || up.s.kind == super::settings::UpstreamKind::Mock;
    if needs_tree {
        // (An earlier attempt may have renamed it for its upstream.)
        let body = req.body_mut();
        if body["model"] != up_model.as_str() {
            body["model"] = Value::from(up_model);
        }
    }
    Sent {
        as_sent,
        needs_tree,
    }
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    /// The caller's bytes are what the upstream should get.
    as_sent: bool,
    /// The upstream reads a tree (renamed, or the built-in mock).
    needs_tree: bool,
}

/// What one attempt sends, made for its upstream.
struct Prepared {
    /// The caller's request as chat (a translated call).
    chat: Option<adapter::Chat>,
    /// The caller's bytes with the model renamed for the upstream.
    renamed: Option<Bytes>,
    /// That chat request as a tree, for the built-in mock.
    chat_tree: Option<Value>,
    sent: Sent,
}

/// The body for `up`: the caller's (its model renamed when `up` knows it by another name),
/// or the caller's request as chat, with what a translated answer repeats of it.
fn prepare(
    req: &mut Request,
    up: &Upstream,
    endpoint: Endpoint,
    translated: bool,
) -> Result<(Prepared, Option<Echo>), CallError> {
    if !translated {
        let up_model = up.upstream_model(&req.model);
        let renamed = (up_model != req.model && up.s.kind != super::settings::UpstreamKind::Mock)
            .then(|| req.renamed(up_model))
            .flatten();
        let sent = match renamed {
            Some(_) => Sent {
                as_sent: false,
                needs_tree: false,
            },
            None => name_model_for(req, up),
        };
        let p = Prepared {
            chat: None,
            renamed,
            chat_tree: None,
            sent,
        };
        return Ok((p, None));
    }
    let mut chat = adapter::to_chat(endpoint, req, up.upstream_model(&req.model))?;
    let echo = chat.echo.take();
    let chat_tree = (up.s.kind == super::settings::UpstreamKind::Mock)
        .then(|| serde_json::from_slice::<Value>(&chat.body).unwrap_or(Value::Null));
    let sent = Sent {
        as_sent: false,
        needs_tree: chat_tree.is_some(),
    };
    let p = Prepared {
        chat: Some(chat),
        renamed: None,
        chat_tree,
        sent,
    };
    Ok((p, echo))
}

/// What goes upstream: the protocol, the body's tree (when anything reads it), and the
/// bytes to send when they are known (the caller's own, or its request as chat).
fn wire_body<'a>(
    req: &'a Request,
    p: &'a Prepared,
    endpoint: Endpoint,
) -> (Endpoint, &'a Value, Option<&'a Bytes>) {
    /// What stands for the tree when an HTTP upstream gets bytes (it reads only those).
    static NO_TREE: Value = Value::Null;
    if let Some(c) = &p.chat {
        let tree = p.chat_tree.as_ref().unwrap_or(&NO_TREE);
        return (Endpoint::Chat, tree, Some(&c.body));
    }
    if let Some(b) = &p.renamed {
        return (endpoint, &NO_TREE, Some(b));
    }
    let body = if p.sent.needs_tree {
        req.body()
    } else {
        &NO_TREE
    };
    (endpoint, body, p.sent.as_sent.then_some(&req.raw))
}

/// Where a call comes from: the client's address and its connection.
struct Source {
    ip: Option<std::net::IpAddr>,
    conn: Option<Arc<crate::conn_trust::ConnTrust>>,
}

/// How a call is made: its caller endpoint, and the caller's protocol headers passed on to an
/// upstream that speaks the protocol natively.
struct How<'a> {
    endpoint: Endpoint,
    headers: &'a [(&'static str, String)],
}

/// What an answer must become for the caller: its endpoint, whether the upstream was
/// reached translated to chat, and what a translated Responses answer repeats of the
/// request.
struct Shape {
    endpoint: Endpoint,
    translated: bool,
    echo: Option<Echo>,
}

/// The caller's headers a native upstream of its protocol needs (Messages: the API version
/// and beta features it asked for; a default version when it sent none).
fn protocol_headers(endpoint: Endpoint, headers: &HeaderMap) -> Vec<(&'static str, String)> {
    if endpoint.protocol() != Protocol::Messages {
        return Vec::new();
    }
    let get = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut out = vec![(
        "anthropic-version",
        get("anthropic-version").unwrap_or_else(|| "2023-06-01".to_owned()),
    )];
    if let Some(beta) = get("anthropic-beta") {
        out.push(("anthropic-beta", beta));
    }
    out
}
