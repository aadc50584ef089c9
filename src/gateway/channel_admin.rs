//! Channel operations as the admin API and the console run them: create, change, enable,
//! disable, delete (each audited in its own transaction, then applied here at once and on
//! other instances by the generation they follow), test with a real minimal call, list the
//! upstream's models, and set aside a key the upstream refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Gateway;
use super::channels::{Channel, ChannelError, ChannelInput};
use super::endpoint::{Endpoint, Protocol};
use super::settings::UpstreamKind;
use super::upstream::{KeyPick, Upstream};
use super::upstream_call::{self, Outgoing, Reply};
use crate::keyadmin::Actor;
use crate::store::{AuditRecord, StoreError, UpstreamRecord, UpstreamWrite, UpstreamWritten};

/// What a test call saw.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub ok: bool,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub model: String,
    /// The upstream's answer (masked, at most 2 000 characters).
    pub reply: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

const REPLY_CHARS: usize = 2_000;

/// The fields a change names (never their values: some are secrets).
fn fields_of(input: &ChannelInput) -> Vec<&'static str> {
    let v = serde_json::to_value(FieldNames(input)).unwrap_or(Value::Null);
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(leak_free).collect())
        .unwrap_or_default()
}

struct FieldNames<'a>(&'a ChannelInput);

impl serde::Serialize for FieldNames<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = self.0;
        let named: [(&str, bool); 17] = [
            ("name", i.name.is_some()),
            ("baseUrl", i.base_url.is_some()),
            ("protocols", i.protocols.is_some()),
            ("apiKeys", i.api_keys.is_some()),
            ("models", i.models.is_some()),
            ("modelMap", i.model_map.is_some()),
            ("priority", i.priority.is_some()),
            ("weight", i.weight.is_some()),
            ("headers", i.headers.is_some()),
            ("timeoutMs", i.timeout_ms.is_some()),
            ("connectTimeoutMs", i.connect_timeout_ms.is_some()),
            ("ejectAfterFailures", i.eject_after_failures.is_some()),
            ("ejectWindowMs", i.eject_window_ms.is_some()),
            ("ejectCooldownMs", i.eject_cooldown_ms.is_some()),
            ("tags", i.tags.is_some()),
            ("enabled", i.enabled.is_some()),
            ("", false),
        ];
        s.collect_seq(named.iter().filter(|(_, on)| *on).map(|(n, _)| n))
    }
}

/// The field names are the fixed set above.
fn leak_free(name: &str) -> &'static str {
    const ALL: [&str; 16] = [
        "name",
        "baseUrl",
        "protocols",
        "apiKeys",
        "models",
        "modelMap",
        "priority",
        "weight",
        "headers",
        "timeoutMs",
        "connectTimeoutMs",
        "ejectAfterFailures",
        "ejectWindowMs",
        "ejectCooldownMs",
        "tags",
        "enabled",
    ];
    ALL.iter().find(|n| **n == name).copied().unwrap_or("?")
}

/// The smallest call `up` answers: one token of chat, Messages or Responses, whichever it
/// speaks.
fn probe_call(up: &Upstream, model: &str) -> (Endpoint, Value) {
    let sent = up.upstream_model(model);
    if up.speaks(Protocol::Chat) {
        (
            Endpoint::Chat,
            json!({"model": sent, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1, "stream": false}),
        )
    } else if up.speaks(Protocol::Messages) {
        (
            Endpoint::Messages,
            json!({"model": sent, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}),
        )
    } else {
        (
            Endpoint::Responses,
            json!({"model": sent, "input": "ping", "max_output_tokens": 16}),
        )
    }
}

impl Gateway {
    fn audit(&self, action: &str, id: Option<i64>, actor: &Actor, details: Value) -> AuditRecord {
        AuditRecord {
            ts: self.ledger.now_ms(),
            action: action.to_owned(),
            target: id.map(|id| format!("upstream:{id}")),
            key_id: None,
            token_hint: actor.token_hint.clone(),
            client_ip: actor.client_ip.clone(),
            details: Some(details),
        }
    }

    fn write_of(&self, c: &Channel) -> UpstreamWrite {
        let (spec, secrets, key_state) = c.to_stored(&self.sealer);
        UpstreamWrite {
            name: c.name.clone(),
            spec,
            secrets,
            key_state,
            enabled: c.enabled,
            now_ms: self.ledger.now_ms(),
        }
    }

    /// A name the config file already uses (the stand-in mock aside).
    fn config_name(&self, name: &str) -> bool {
        !super::stand_in(&self.settings) && self.settings.upstreams.iter().any(|u| u.name == name)
    }

    /// An upstream in use, by channel id or by name.
    pub fn find_upstream(&self, id_or_name: &str) -> Result<Arc<Upstream>, ChannelError> {
        let roster = self.roster();
        let found = match id_or_name.parse::<i64>() {
            Ok(id) => roster.by_id(id),
            Err(_) => roster.by_name(id_or_name),
        };
        found.cloned().ok_or(ChannelError::NotFound)
    }

    /// The stored channel behind `id_or_name` (a config upstream is read-only).
    async fn stored(&self, id_or_name: &str) -> Result<UpstreamRecord, AdminError> {
        let records = self.store.upstreams().await?;
        let found = match id_or_name.parse::<i64>() {
            Ok(id) => records.into_iter().find(|r| r.id == id),
            Err(_) => records.into_iter().find(|r| r.name == id_or_name),
        };
        match found {
            Some(r) => Ok(r),
            None if self.find_upstream(id_or_name).is_ok() => Err(ChannelError::ReadOnly.into()),
            None => Err(ChannelError::NotFound.into()),
        }
    }

    async fn applied(&self, written: UpstreamWritten) -> Result<i64, AdminError> {
        match written {
            UpstreamWritten::Done(id) => {
                self.reload_channels().await?;
                Ok(id)
            }
            UpstreamWritten::NotFound => Err(ChannelError::NotFound.into()),
            UpstreamWritten::NameTaken => Err(ChannelError::NameTaken.into()),
        }
    }

    pub async fn create_channel(
        &self,
        input: ChannelInput,
        actor: &Actor,
    ) -> Result<i64, AdminError> {
        let fields = fields_of(&input);
        let c = Channel::create(input)?;
        if self.config_name(&c.name) {
            return Err(ChannelError::NameTaken.into());
        }
        let audit = self.audit(
            "upstream.create",
            None,
            actor,
            json!({"name": c.name, "baseUrl": c.spec.base_url, "keys": c.secrets.api_keys.len(), "fields": fields}),
        );
        let written = self
            .store
            .insert_upstream(&self.write_of(&c), &audit)
            .await?;
        self.applied(written).await
    }

    pub async fn update_channel(
        &self,
        id_or_name: &str,
        input: ChannelInput,
        actor: &Actor,
    ) -> Result<i64, AdminError> {
        let rec = self.stored(id_or_name).await?;
        let fields = fields_of(&input);
        let current = match Channel::from_record(&rec, &self.sealer) {
            Ok(c) => c,
            // Secrets that cannot be opened can still be replaced whole.
            Err(ChannelError::Sealed(_)) if input.api_keys.is_some() && input.headers.is_some() => {
                let mut blank = Channel::create(ChannelInput {
                    name: Some(rec.name.clone()),
                    base_url: Some("http://replaced.invalid".into()),
                    ..ChannelInput::default()
                })?;
                blank.spec = serde_json::from_str(&rec.spec).unwrap_or(blank.spec);
                blank
            }
            Err(e) => return Err(e.into()),
        };
        let c = current.patched(input)?;
        if self.config_name(&c.name) {
            return Err(ChannelError::NameTaken.into());
        }
        let audit = self.audit(
            "upstream.update",
            Some(rec.id),
            actor,
            json!({"name": c.name, "fields": fields}),
        );
        let written = self
            .store
            .update_upstream(rec.id, &self.write_of(&c), &audit)
            .await?;
        self.applied(written).await
    }

    /// An operator's switch. Enabling also gives every refused key another chance.
    pub async fn set_channel_enabled(
        &self,
        id_or_name: &str,
        enabled: bool,
        actor: &Actor,
    ) -> Result<i64, AdminError> {
        let rec = self.stored(id_or_name).await?;
        let mut c = Channel::from_record(&rec, &self.sealer)?;
        c.enabled = enabled;
        if enabled {
            c = c.keys_restored();
        }
        let action = if enabled {
            "upstream.enable"
        } else {
            "upstream.disable"
        };
        let audit = self.audit(action, Some(rec.id), actor, json!({"name": c.name}));
        let written = self
            .store
            .update_upstream(rec.id, &self.write_of(&c), &audit)
            .await?;
        self.applied(written).await
    }

    pub async fn delete_channel(&self, id_or_name: &str, actor: &Actor) -> Result<(), AdminError> {
        let rec = self.stored(id_or_name).await?;
        let audit = self.audit(
            "upstream.delete",
            Some(rec.id),
            actor,
            json!({"name": rec.name}),
        );
        if !self.store.delete_upstream(rec.id, &audit).await? {
            return Err(ChannelError::NotFound.into());
        }
        self.reload_channels().await?;
        Ok(())
    }

    /// Sets a key the upstream refused aside, here at once and, for a stored channel, in
    /// the store (so every instance stops using it).
    pub(super) async fn key_refused(&self, up: &Upstream, idx: usize, why: &str) {
        let now = self.ledger.now_ms();
        if !up.disable_key(idx, why, now) {
            return;
        }
        let (Some(id), Some(secrets)) = (up.s.id, up.stored_secrets.as_deref()) else {
            return;
        };
        let states = serde_json::to_string(&up.key_states()).unwrap_or_default();
        match self
            .store
            .set_upstream_key_state(id, secrets, &states, now)
            .await
        {
            Ok(true) => {
                let audit = AuditRecord {
                    ts: now,
                    action: "upstream.key_disabled".into(),
                    target: Some(format!("upstream:{id}")),
                    key_id: None,
                    token_hint: Some("gateway".into()),
                    client_ip: None,
                    details: Some(
                        json!({"name": up.s.name, "key": up.key_states().get(idx).map(|k| k.hint.clone()), "reason": why}),
                    ),
                };
                if let Err(e) = self.store.insert_audit(&audit).await {
                    tracing::warn!(error = %e, "could not audit a refused upstream key");
                }
                if let Err(e) = self.reload_channels().await {
                    tracing::warn!(error = %e, "could not reload the channels");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not store a refused upstream key"),
        }
    }

    /// A real minimal call (one token asked) through `up`, timed. Costs the operator, not a
    /// key; a success ends an ejection, a failure is only reported.
    pub async fn test_channel(
        &self,
        up: &Upstream,
        model: Option<String>,
        actor: &Actor,
    ) -> Result<TestOutcome, AdminError> {
        let model = model
            .filter(|m| !m.trim().is_empty())
            .or_else(|| up.listed_models().into_iter().next())
            .unwrap_or_else(|| "gpt-4o-mini".to_owned());
        let (endpoint, body) = probe_call(up, &model);
        let key = match up.next_key() {
            KeyPick::Key(_, k) => Some(k),
            KeyPick::NoKey => None,
            KeyPick::AllDisabled => {
                return Ok(TestOutcome {
                    ok: false,
                    status: None,
                    latency_ms: 0,
                    model,
                    reply: None,
                    error: Some(
                        "every upstream key was refused; enable the channel or replace its keys"
                            .into(),
                    ),
                });
            }
        };
        let request_id = crate::auth::new_request_id();
        let started = Instant::now();
        let reply = upstream_call::call(
            up,
            key,
            Outgoing {
                endpoint,
                body: &body,
                raw: None,
                stream: false,
                headers: &[],
            },
            &request_id,
            self.settings.max_response_bytes,
        )
        .await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let out = self.outcome(reply, latency_ms, model);
        if out.ok {
            up.health.success(self.ledger.now_ms());
        }
        let audit = self.audit(
            "upstream.test",
            up.s.id,
            actor,
            json!({"name": up.s.name, "ok": out.ok, "status": out.status, "latencyMs": out.latency_ms}),
        );
        self.store.insert_audit(&audit).await?;
        Ok(out)
    }

    /// What a test call's reply says, its texts masked.
    fn outcome(
        &self,
        reply: Result<Reply, upstream_call::AttemptError>,
        latency_ms: u64,
        model: String,
    ) -> TestOutcome {
        let masked = |b: &[u8]| {
            let roster = self.roster();
            let m = roster.secrets.mask(b);
            let text = String::from_utf8_lossy(&m);
            super::redact::redact(&text, &roster.key_texts())
                .chars()
                .take(REPLY_CHARS)
                .collect::<String>()
        };
        match reply {
            Ok(Reply::Full { status, body }) => {
                let ok = (200..300).contains(&status);
                TestOutcome {
                    ok,
                    status: Some(status),
                    latency_ms,
                    model,
                    reply: Some(masked(&body)),
                    error: (!ok).then(|| format!("upstream answered HTTP {status}")),
                }
            }
            Ok(Reply::Stream { .. }) => TestOutcome {
                ok: true,
                status: Some(200),
                latency_ms,
                model,
                reply: None,
                error: None,
            },
            Err(e) => TestOutcome {
                ok: false,
                status: None,
                latency_ms,
                model,
                reply: None,
                error: Some(masked(e.to_string().as_bytes())),
            },
        }
    }

    /// The model ids the upstream's `/models` lists.
    pub async fn upstream_models(&self, up: &Upstream) -> Result<Vec<String>, String> {
        if up.s.kind == UpstreamKind::Mock {
            return Ok(up.listed_models());
        }
        let url = up.models_url().ok_or("invalid baseUrl")?;
        let mut req = up.http.cold().get(url.clone());
        if let KeyPick::Key(_, k) = up.next_key() {
            req = req.bearer_auth(k);
        }
        for (k, v) in &up.s.headers {
            req = req.header(k, v);
        }
        let resp = tokio::time::timeout(Duration::from_millis(up.s.timeout_ms), req.send())
            .await
            .map_err(|_| "upstream timed out".to_owned())?
            .map_err(|e| format!("upstream unreachable: {}", e.without_url()))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(format!("upstream answered HTTP {status}"));
        }
        let body: Value = resp
            .json()
            .await
            .map_err(|_| "the upstream's answer is not a model list".to_owned())?;
        let mut ids: Vec<String> = body["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}
