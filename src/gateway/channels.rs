//! Channels as data: what an operator sends to create or change one (`ChannelInput`), how
//! it is checked, how it is stored (`ChannelSpec` in the clear, `ChannelSecrets` sealed,
//! one `KeyState` per upstream key) and how a stored channel becomes an upstream's settings.
//! No HTTP and no SQL here: `channel_admin.rs` runs the operations, `api/upstreams.rs`
//! speaks HTTP.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::endpoint::Protocol;
use super::health::HealthPolicy;
use super::settings::{UpstreamKind, UpstreamSettings};
use crate::sealed::{SealError, Sealer};
use crate::store::UpstreamRecord;

/// A create (every field but `name` and `baseUrl` optional) or a patch (every field
/// optional; what is absent stays). `apiKeys` and `headers` replace the whole set.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelInput {
    #[schema(min_length = 1, max_length = 64)]
    pub name: Option<String>,
    /// `http(s)://host[:port]/v1`: the endpoint paths (`chat/completions`, `messages`,
    /// `responses`, `models`) are appended to it.
    pub base_url: Option<String>,
    /// `chat`, `messages`, `responses`: what it speaks natively. Default `["chat"]`.
    pub protocols: Option<Vec<String>>,
    /// Upstream API keys, used in turn. Write-only: answers show `keyHints`.
    pub api_keys: Option<Vec<String>>,
    /// Model names or globs (`deepseek-*`, `*`). Default `["*"]`.
    pub models: Option<Vec<String>>,
    /// Requested model → the name sent upstream.
    pub model_map: Option<BTreeMap<String, String>>,
    pub priority: Option<i32>,
    #[schema(minimum = 1, maximum = 1000000)]
    pub weight: Option<u32>,
    /// Extra request headers. Values are write-only (answers show a hint).
    pub headers: Option<BTreeMap<String, String>>,
    #[schema(minimum = 1000, maximum = 600000)]
    pub timeout_ms: Option<u64>,
    #[schema(minimum = 100, maximum = 60000)]
    pub connect_timeout_ms: Option<u64>,
    /// Failures within `ejectWindowMs` that eject it (0: the gateway's default).
    #[schema(minimum = 0, maximum = 1000)]
    pub eject_after_failures: Option<u32>,
    #[schema(minimum = 0, maximum = 86400000)]
    pub eject_window_ms: Option<u64>,
    /// How long an ejected channel waits before one probe call (half-open).
    #[schema(minimum = 0, maximum = 86400000)]
    pub eject_cooldown_ms: Option<u64>,
    pub tags: Option<Vec<String>>,
    /// `false`: out of routing until enabled (an operator's switch, not health).
    pub enabled: Option<bool>,
}

/// The settings kept in the clear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelSpec {
    pub base_url: String,
    pub protocols: Vec<String>,
    pub models: Vec<String>,
    pub model_map: BTreeMap<String, String>,
    pub priority: i32,
    pub weight: u32,
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    #[serde(default)]
    pub eject_after_failures: Option<u32>,
    #[serde(default)]
    pub eject_window_ms: Option<u64>,
    #[serde(default)]
    pub eject_cooldown_ms: Option<u64>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The settings kept sealed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelSecrets {
    pub api_keys: Vec<String>,
    pub headers: BTreeMap<String, String>,
}

/// One upstream key's state, in the order of the keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyState {
    /// Which key this is (a short hash), so a state never lands on a replaced key.
    pub fp: String,
    pub hint: String,
    pub disabled_reason: Option<String>,
    pub disabled_at_ms: Option<i64>,
}

/// A channel ready to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    pub name: String,
    pub spec: ChannelSpec,
    pub secrets: ChannelSecrets,
    pub key_state: Vec<KeyState>,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("{field} {why}")]
    Invalid { field: &'static str, why: String },
    #[error("no such upstream")]
    NotFound,
    #[error("an upstream has this name")]
    NameTaken,
    #[error("defined in the configuration file")]
    ReadOnly,
    #[error("secrets: {0}")]
    Sealed(SealError),
}

fn invalid(field: &'static str, why: impl Into<String>) -> ChannelError {
    ChannelError::Invalid {
        field,
        why: why.into(),
    }
}

/// A short, shown form of a secret: never more than its last four characters, none of a
/// short one.
pub fn hint(secret: &str) -> String {
    let n = secret.chars().count();
    if n < 12 {
        return "****".to_owned();
    }
    let head: String = secret.chars().take(3).collect();
    let tail: String = secret.chars().skip(n - 4).collect();
    format!("{head}…{tail}")
}

fn fingerprint(secret: &str) -> String {
    hex::encode(&Sha256::digest(secret.as_bytes())[..8])
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &'static str,
    v: T,
    lo: T,
    hi: T,
) -> Result<T, ChannelError> {
    if v < lo || v > hi {
        return Err(invalid(field, format!("必须在 {lo} 到 {hi} 之间")));
    }
    Ok(v)
}

fn name_ok(name: &str) -> Result<String, ChannelError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 64 {
        return Err(invalid("name", "长度必须为 1 到 64 个字符"));
    }
    if n.chars().any(char::is_control) {
        return Err(invalid("name", "不能包含控制字符"));
    }
    Ok(n.to_owned())
}

fn base_url_ok(url: &str) -> Result<String, ChannelError> {
    let u = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(u).map_err(|_| invalid("baseUrl", "不是合法的 URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid("baseUrl", "必须是 http(s) URL"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // It would be shown to every viewer: credentials go in apiKeys or headers.
        return Err(invalid(
            "baseUrl",
            "不能包含用户名或密码，请使用 apiKeys 或 headers",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("baseUrl", "不能包含查询参数"));
    }
    Ok(u.to_owned())
}

fn list_ok(
    field: &'static str,
    items: Vec<String>,
    max_items: usize,
    max_len: usize,
) -> Result<Vec<String>, ChannelError> {
    if items.len() > max_items {
        return Err(invalid(field, format!("最多 {max_items} 项")));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for i in items {
        let t = i.trim();
        if t.is_empty() || t.chars().count() > max_len || t.chars().any(char::is_control) {
            return Err(invalid(
                field,
                format!("每一项必须为 1 到 {max_len} 个字符"),
            ));
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    Ok(out)
}

fn protocols_ok(list: Vec<String>) -> Result<Vec<String>, ChannelError> {
    if list.is_empty() {
        return Err(invalid("protocols", "不能为空"));
    }
    let mut out = Vec::new();
    for p in list {
        let p = Protocol::parse(p.trim())
            .ok_or_else(|| invalid("protocols", "只能是 chat、messages、responses"))?;
        if !out.contains(&p.as_str().to_owned()) {
            out.push(p.as_str().to_owned());
        }
    }
    Ok(out)
}

fn keys_ok(keys: Vec<String>) -> Result<Vec<String>, ChannelError> {
    let keys = list_ok("apiKeys", keys, 64, 4096)?;
    if keys
        .iter()
        .any(|k| reqwest::header::HeaderValue::from_str(k).is_err() || k.contains(' '))
    {
        return Err(invalid("apiKeys", "包含不能放进请求头的字符"));
    }
    Ok(keys)
}

/// Header names a channel may not set: the transport's own, or the ones we set per call.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "content-type",
    "accept",
];

fn headers_ok(h: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ChannelError> {
    if h.len() > 32 {
        return Err(invalid("headers", "最多 32 项"));
    }
    let mut out = BTreeMap::new();
    for (k, v) in h {
        let name = reqwest::header::HeaderName::from_bytes(k.trim().as_bytes())
            .map_err(|_| invalid("headers", "包含不合法的请求头名称"))?;
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(invalid("headers", format!("不能设置 {}", name.as_str())));
        }
        if v.len() > 8192 || reqwest::header::HeaderValue::from_str(&v).is_err() {
            return Err(invalid("headers", "包含不合法的请求头值"));
        }
        out.insert(name.as_str().to_owned(), v);
    }
    Ok(out)
}

fn map_ok(m: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ChannelError> {
    if m.len() > 256 {
        return Err(invalid("modelMap", "最多 256 项"));
    }
    for (k, v) in &m {
        if k.trim().is_empty() || v.trim().is_empty() || k.len() > 200 || v.len() > 200 {
            return Err(invalid("modelMap", "模型名必须为 1 到 200 个字符"));
        }
    }
    Ok(m)
}

/// 0 means "the gateway's default".
fn override_of(
    field: &'static str,
    v: Option<u64>,
    lo: u64,
    hi: u64,
    current: Option<u64>,
) -> Result<Option<u64>, ChannelError> {
    match v {
        None => Ok(current),
        Some(0) => Ok(None),
        Some(v) => in_range(field, v, lo, hi).map(Some),
    }
}

/// Key states for `keys`: a key kept from `previous` keeps its state.
fn key_states(keys: &[String], previous: &[KeyState]) -> Vec<KeyState> {
    keys.iter()
        .map(|k| {
            let fp = fingerprint(k);
            previous
                .iter()
                .find(|s| s.fp == fp)
                .cloned()
                .unwrap_or(KeyState {
                    fp,
                    hint: hint(k),
                    disabled_reason: None,
                    disabled_at_ms: None,
                })
        })
        .collect()
}

impl Channel {
    /// A new channel from a create request.
    pub fn create(input: ChannelInput) -> Result<Self, ChannelError> {
        let name = name_ok(input.name.as_deref().unwrap_or_default())?;
        let base_url = input
            .base_url
            .as_deref()
            .ok_or_else(|| invalid("baseUrl", "不能为空"))?;
        let blank = Channel {
            name,
            spec: ChannelSpec {
                base_url: base_url_ok(base_url)?,
                protocols: vec!["chat".to_owned()],
                models: vec!["*".to_owned()],
                model_map: BTreeMap::new(),
                priority: 0,
                weight: 1,
                timeout_ms: 120_000,
                connect_timeout_ms: 5_000,
                eject_after_failures: None,
                eject_window_ms: None,
                eject_cooldown_ms: None,
                tags: Vec::new(),
            },
            secrets: ChannelSecrets::default(),
            key_state: Vec::new(),
            enabled: true,
        };
        blank.patched(ChannelInput {
            name: None,
            ..input
        })
    }

    /// This channel with `input` applied.
    pub fn patched(mut self, input: ChannelInput) -> Result<Self, ChannelError> {
        if let Some(n) = input.name {
            self.name = name_ok(&n)?;
        }
        let s = &mut self.spec;
        if let Some(u) = input.base_url {
            s.base_url = base_url_ok(&u)?;
        }
        if let Some(p) = input.protocols {
            s.protocols = protocols_ok(p)?;
        }
        if let Some(m) = input.models {
            let m = list_ok("models", m, 512, 200)?;
            s.models = if m.is_empty() {
                vec!["*".to_owned()]
            } else {
                m
            };
        }
        if let Some(m) = input.model_map {
            s.model_map = map_ok(m)?;
        }
        if let Some(p) = input.priority {
            s.priority = p;
        }
        if let Some(w) = input.weight {
            s.weight = in_range("weight", w, 1, 1_000_000)?;
        }
        if let Some(t) = input.timeout_ms {
            s.timeout_ms = in_range("timeoutMs", t, 1_000, 600_000)?;
        }
        if let Some(t) = input.connect_timeout_ms {
            s.connect_timeout_ms = in_range("connectTimeoutMs", t, 100, 60_000)?;
        }
        s.eject_after_failures = override_of(
            "ejectAfterFailures",
            input.eject_after_failures.map(u64::from),
            1,
            1_000,
            s.eject_after_failures.map(u64::from),
        )?
        .and_then(|v| u32::try_from(v).ok());
        s.eject_window_ms = override_of(
            "ejectWindowMs",
            input.eject_window_ms,
            1_000,
            86_400_000,
            s.eject_window_ms,
        )?;
        s.eject_cooldown_ms = override_of(
            "ejectCooldownMs",
            input.eject_cooldown_ms,
            1_000,
            86_400_000,
            s.eject_cooldown_ms,
        )?;
        if let Some(t) = input.tags {
            s.tags = list_ok("tags", t, 20, 32)?;
        }
        if let Some(k) = input.api_keys {
            self.secrets.api_keys = keys_ok(k)?;
            self.key_state = key_states(&self.secrets.api_keys, &self.key_state);
        }
        if let Some(h) = input.headers {
            self.secrets.headers = headers_ok(h)?;
        }
        if let Some(e) = input.enabled {
            self.enabled = e;
        }
        Ok(self)
    }

    /// Every key usable again (an operator's enable).
    pub fn keys_restored(mut self) -> Self {
        for k in &mut self.key_state {
            k.disabled_reason = None;
            k.disabled_at_ms = None;
        }
        self
    }

    /// Reads a stored channel (its secrets opened with `sealer`).
    pub fn from_record(r: &UpstreamRecord, sealer: &Sealer) -> Result<Self, ChannelError> {
        let spec: ChannelSpec = serde_json::from_str(&r.spec)
            .map_err(|e| invalid("spec", format!("stored settings unreadable: {e}")))?;
        let secrets: ChannelSecrets =
            serde_json::from_str(&sealer.open(&r.secrets).map_err(ChannelError::Sealed)?)
                .map_err(|_| ChannelError::Sealed(SealError::Malformed))?;
        let stored: Vec<KeyState> = serde_json::from_str(&r.key_state).unwrap_or_default();
        let key_state = key_states(&secrets.api_keys, &stored);
        Ok(Self {
            name: r.name.clone(),
            spec,
            secrets,
            key_state,
            enabled: r.enabled,
        })
    }

    /// The texts to store: the spec, the sealed secrets, the key states.
    pub fn to_stored(&self, sealer: &Sealer) -> (String, String, String) {
        // Plain data structures of strings and numbers: serialising cannot fail.
        let text = |v: serde_json::Result<String>| v.unwrap_or_default();
        (
            text(serde_json::to_string(&self.spec)),
            sealer.seal(&text(serde_json::to_string(&self.secrets))),
            text(serde_json::to_string(&self.key_state)),
        )
    }

    /// The upstream this channel routes to.
    pub fn settings(&self, id: i64) -> UpstreamSettings {
        let s = &self.spec;
        UpstreamSettings {
            name: self.name.clone(),
            id: Some(id),
            kind: UpstreamKind::Openai,
            base_url: s.base_url.clone(),
            api_keys: self.secrets.api_keys.clone(),
            models: s.models.clone(),
            weight: s.weight,
            priority: s.priority,
            timeout_ms: s.timeout_ms,
            connect_timeout_ms: s.connect_timeout_ms,
            model_map: s.model_map.clone(),
            headers: self.secrets.headers.clone(),
            protocols: s
                .protocols
                .iter()
                .filter_map(|p| Protocol::parse(p))
                .collect(),
            enabled: self.enabled,
            tags: s.tags.clone(),
            health: None,
        }
    }

    /// This channel's health policy over the gateway's `default`.
    pub fn policy(&self, default: HealthPolicy) -> HealthPolicy {
        HealthPolicy {
            after: self.spec.eject_after_failures.unwrap_or(default.after),
            window_ms: self.spec.eject_window_ms.unwrap_or(default.window_ms),
            cooldown_ms: self.spec.eject_cooldown_ms.unwrap_or(default.cooldown_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: serde_json::Value) -> ChannelInput {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn create_checks_every_field_and_keeps_key_states_by_key() {
        let c = Channel::create(input(serde_json::json!({
            "name": " relay-1 ", "baseUrl": "http://127.0.0.1:9/v1/",
            "apiKeys": ["sk-aaaaaaaaaaaaaaaa1111", "sk-bbbbbbbbbbbbbbbb2222", "sk-aaaaaaaaaaaaaaaa1111"],
            "protocols": ["chat", "messages"], "weight": 3,
            "headers": {"X-Org": "org-1"}, "ejectAfterFailures": 5
        })))
        .unwrap();
        assert_eq!(c.name, "relay-1");
        assert_eq!(c.spec.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(c.secrets.api_keys.len(), 2, "duplicates dropped");
        assert_eq!(c.key_state[0].hint, "sk-…1111");
        assert_eq!(c.spec.models, vec!["*"]);
        assert_eq!(c.secrets.headers["x-org"], "org-1");
        assert_eq!(c.spec.eject_after_failures, Some(5));

        let mut c = c;
        c.key_state[1].disabled_reason = Some("HTTP 401".into());
        let c = c
            .patched(input(serde_json::json!({
                "apiKeys": ["sk-bbbbbbbbbbbbbbbb2222", "sk-cccccccccccccccc3333"],
                "ejectAfterFailures": 0
            })))
            .unwrap();
        assert_eq!(c.key_state[0].disabled_reason.as_deref(), Some("HTTP 401"));
        assert_eq!(c.key_state[1].disabled_reason, None);
        assert_eq!(c.spec.eject_after_failures, None, "0 = the default");
        assert!(c.keys_restored().key_state[0].disabled_reason.is_none());

        for bad in [
            serde_json::json!({"name": "x", "baseUrl": "ftp://h"}),
            serde_json::json!({"name": "x", "baseUrl": "http://u:p@h/v1"}),
            serde_json::json!({"name": "", "baseUrl": "http://h"}),
            serde_json::json!({"name": "x"}),
            serde_json::json!({"name": "x", "baseUrl": "http://h", "protocols": ["grpc"]}),
            serde_json::json!({"name": "x", "baseUrl": "http://h", "weight": 0}),
            serde_json::json!({"name": "x", "baseUrl": "http://h", "headers": {"Host": "y"}}),
            serde_json::json!({"name": "x", "baseUrl": "http://h", "apiKeys": ["a b"]}),
            serde_json::json!({"name": "x", "baseUrl": "http://h", "timeoutMs": 5}),
        ] {
            assert!(
                matches!(
                    Channel::create(input(bad.clone())),
                    Err(ChannelError::Invalid { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn stored_and_read_back_sealed() {
        let sealer = Sealer::new(Some("k"));
        let c = Channel::create(input(serde_json::json!({
            "name": "a", "baseUrl": "https://api.example.com/v1",
            "apiKeys": ["sk-secret-0000000000000000"], "headers": {"x-t": "tok-000000000000"}
        })))
        .unwrap();
        let (spec, secrets, key_state) = c.to_stored(&sealer);
        assert!(!secrets.contains("sk-secret") && !secrets.contains("tok-0"));
        assert!(!spec.contains("sk-secret") && !key_state.contains("sk-secret"));
        let rec = UpstreamRecord {
            id: 7,
            name: "a".into(),
            spec,
            secrets,
            key_state,
            enabled: true,
            created_ms: 0,
            updated_ms: 0,
        };
        assert_eq!(Channel::from_record(&rec, &sealer).unwrap(), c);
        assert_eq!(
            Channel::from_record(&rec, &Sealer::new(None)),
            Err(ChannelError::Sealed(SealError::NoKey))
        );
        assert_eq!(hint("short"), "****");
    }
}
