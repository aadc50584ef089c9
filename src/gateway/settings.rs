//! Gateway settings: upstreams, routing and retry behaviour, billing. Read from the config
//! file (`[gateway]`, `[billing]`, `[[upstreams]]`) and the seed's env shortcut.

use super::endpoint::Protocol;
pub use crate::glob::glob_match;
use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::Deserialize;

use crate::config_error::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    /// Any OpenAI-compatible HTTP API.
    #[default]
    Openai,
    /// The built-in deterministic provider (no network).
    Mock,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub name: String,
    #[serde(default)]
    pub kind: UpstreamKind,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Several keys, used in turn (with or instead of `api_key`).
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Model names or globs (`deepseek-*`, `*`) this upstream serves.
    #[serde(default)]
    pub models: Vec<String>,
    /// The caller protocols it speaks natively (`chat`, `messages`); default `["chat"]`.
    #[serde(default)]
    pub protocols: Option<Vec<String>>,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Requested model name → the name sent to this upstream.
    #[serde(default)]
    pub model_map: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    pub max_attempts: Option<u32>,
    pub eject_after_failures: Option<u32>,
    pub eject_cooldown_ms: Option<u64>,
    pub eject_window_ms: Option<u64>,
    pub trusted_proxies: Option<Vec<String>>,
    pub client_ip: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub max_response_bytes: Option<usize>,
    pub log_flush_ms: Option<u64>,
}

pub use crate::billing::config::BillingFile;
pub use crate::billing::{Billing, BillingMode, Price};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIpPolicy {
    Keep,
    Hash,
    Drop,
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub name: String,
    /// The channel's id when it was added from the admin API; `None` for the config file's.
    pub id: Option<i64>,
    pub kind: UpstreamKind,
    pub base_url: String,
    /// Used in turn; a key the upstream refuses (401/403, billing) is set aside alone.
    pub api_keys: Vec<String>,
    pub models: Vec<String>,
    pub weight: u32,
    pub priority: i32,
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub model_map: BTreeMap<String, String>,
    pub headers: BTreeMap<String, String>,
    /// The caller protocols it speaks natively; any other reaches it translated to chat.
    pub protocols: Vec<Protocol>,
    /// An operator's switch (channels from the admin API); config upstreams are always on.
    pub enabled: bool,
    pub tags: Vec<String>,
    /// Its own ejection policy; `None`: the gateway's.
    pub health: Option<super::health::HealthPolicy>,
}

#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub upstreams: Vec<UpstreamSettings>,
    pub max_attempts: u32,
    pub eject_after_failures: u32,
    pub eject_cooldown_ms: u64,
    /// Failures count toward ejection within this window.
    pub eject_window_ms: u64,
    pub trusted_proxies: Vec<IpNet>,
    pub client_ip: ClientIpPolicy,
    pub max_body_bytes: usize,
    /// The largest non-streamed upstream answer read (bigger: the attempt fails).
    pub max_response_bytes: usize,
    pub log_flush_ms: u64,
    pub billing: Billing,
    /// No upstream was configured: every answer comes from the built-in mock.
    pub mock_fallback: bool,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            upstreams: vec![mock_upstream()],
            max_attempts: 3,
            eject_after_failures: 3,
            eject_cooldown_ms: 30_000,
            eject_window_ms: 60_000,
            trusted_proxies: Vec::new(),
            client_ip: ClientIpPolicy::Keep,
            max_body_bytes: 4 * 1024 * 1024,
            max_response_bytes: 32 * 1024 * 1024,
            log_flush_ms: 200,
            mock_fallback: true,
            billing: Billing::default(),
        }
    }
}

pub fn mock_upstream() -> UpstreamSettings {
    UpstreamSettings {
        name: "mock".to_owned(),
        id: None,
        kind: UpstreamKind::Mock,
        base_url: String::new(),
        api_keys: Vec::new(),
        models: vec!["*".to_owned()],
        weight: 1,
        priority: 0,
        timeout_ms: 120_000,
        connect_timeout_ms: 5_000,
        model_map: BTreeMap::new(),
        headers: BTreeMap::new(),
        // The mock answers every protocol in its own words.
        protocols: vec![Protocol::Chat, Protocol::Messages, Protocol::Responses],
        enabled: true,
        tags: Vec::new(),
        health: None,
    }
}

fn invalid(name: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        message: message.into(),
    }
}

impl GatewaySettings {
    /// Builds the settings. Upstreams: the file's `[[upstreams]]`, else the seed's
    /// `DEEPSEEK_API_KEY` (+ `DEEPSEEK_BASE_URL`) as one upstream serving every model, else
    /// the built-in mock.
    pub fn build(
        gateway: Option<GatewayFile>,
        billing: Option<BillingFile>,
        upstreams: Option<Vec<UpstreamFile>>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let d = Self::default();
        let g = gateway.unwrap_or_default();
        let (ups, mock_fallback) = upstreams_of(upstreams, env)?;
        let billing =
            crate::billing::config::billing(billing).map_err(|e| invalid(e.setting, e.why))?;
        let client_ip = match g.client_ip.as_deref().unwrap_or("keep") {
            "keep" => ClientIpPolicy::Keep,
            "hash" => ClientIpPolicy::Hash,
            "drop" => ClientIpPolicy::Drop,
            other => {
                return Err(invalid(
                    "gateway.client_ip",
                    format!("{other} (keep|hash|drop)"),
                ));
            }
        };
        let mut trusted = Vec::new();
        for t in g.trusted_proxies.unwrap_or_default() {
            trusted
                .push(parse_net(&t).ok_or_else(|| invalid("gateway.trusted_proxies", t.clone()))?);
        }
        Ok(Self {
            upstreams: ups,
            max_attempts: g.max_attempts.unwrap_or(d.max_attempts).clamp(1, 10),
            eject_after_failures: g
                .eject_after_failures
                .unwrap_or(d.eject_after_failures)
                .max(1),
            eject_cooldown_ms: g.eject_cooldown_ms.unwrap_or(d.eject_cooldown_ms),
            eject_window_ms: g
                .eject_window_ms
                .unwrap_or(d.eject_window_ms)
                .clamp(1_000, 86_400_000),
            trusted_proxies: trusted,
            client_ip,
            max_body_bytes: g.max_body_bytes.unwrap_or(d.max_body_bytes),
            max_response_bytes: g
                .max_response_bytes
                .unwrap_or(d.max_response_bytes)
                .max(1024),
            log_flush_ms: g.log_flush_ms.unwrap_or(d.log_flush_ms).clamp(10, 60_000),
            mock_fallback,
            billing,
        })
    }
}

/// The file's `[[upstreams]]`, else the seed's `DEEPSEEK_API_KEY` (+ `DEEPSEEK_BASE_URL`) as
/// one upstream serving every model, else the built-in mock (then `true`); names unique.
fn upstreams_of(
    upstreams: Option<Vec<UpstreamFile>>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Vec<UpstreamSettings>, bool), ConfigError> {
    let non_empty = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let mut ups = Vec::new();
    for u in upstreams.unwrap_or_default() {
        ups.push(upstream_from_file(u, env)?);
    }
    // A half-given DeepSeek setting is a mistake, not a request for the mock.
    if env("DEEPSEEK_API_KEY").is_some_and(|k| k.trim().is_empty()) {
        return Err(invalid("DEEPSEEK_API_KEY", "is set but empty"));
    }
    if ups.is_empty()
        && non_empty("DEEPSEEK_BASE_URL").is_some()
        && non_empty("DEEPSEEK_API_KEY").is_none()
    {
        return Err(invalid(
            "DEEPSEEK_BASE_URL",
            "is set but DEEPSEEK_API_KEY is not: set both, or configure [[upstreams]]",
        ));
    }
    if ups.is_empty()
        && let Some(key) = non_empty("DEEPSEEK_API_KEY")
    {
        ups.push(UpstreamSettings {
            name: "deepseek".to_owned(),
            kind: UpstreamKind::Openai,
            base_url: non_empty("DEEPSEEK_BASE_URL")
                .unwrap_or_else(|| "https://api.deepseek.com".to_owned())
                .trim_end_matches('/')
                .to_owned(),
            api_keys: vec![key],
            ..mock_upstream()
        });
    }
    let mock_fallback = ups.is_empty();
    if mock_fallback {
        ups.push(mock_upstream());
    }
    let mut names = std::collections::HashSet::new();
    for u in &ups {
        if !names.insert(u.name.clone()) {
            return Err(invalid("upstreams", format!("duplicate name {}", u.name)));
        }
    }
    Ok((ups, mock_fallback))
}

/// An IP address or CIDR block.
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

fn upstream_from_file(
    u: UpstreamFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<UpstreamSettings, ConfigError> {
    if u.name.trim().is_empty() {
        return Err(invalid("upstreams.name", "must not be empty"));
    }
    let mut api_keys: Vec<String> = match (u.api_key, u.api_key_env) {
        (Some(k), _) => vec![k],
        (None, Some(var)) => vec![env(&var).filter(|v| !v.is_empty()).ok_or_else(|| {
            invalid(
                "upstreams.api_key_env",
                format!("{} names unset variable {var}", u.name),
            )
        })?],
        (None, None) => Vec::new(),
    };
    for k in u.api_keys {
        if !k.trim().is_empty() && !api_keys.contains(&k) {
            api_keys.push(k);
        }
    }
    let base_url = match u.kind {
        UpstreamKind::Mock => String::new(),
        UpstreamKind::Openai => {
            let url = u
                .base_url
                .ok_or_else(|| invalid("upstreams.base_url", format!("{} has none", u.name)))?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "upstreams.base_url",
                    format!("{}: http(s) URL", u.name),
                ));
            }
            url.trim_end_matches('/').to_owned()
        }
    };
    let protocols = match (u.kind, u.protocols) {
        (UpstreamKind::Mock, None) => mock_upstream().protocols,
        (_, None) => vec![Protocol::Chat],
        (_, Some(list)) => {
            let mut out = Vec::new();
            for p in &list {
                out.push(Protocol::parse(p).ok_or_else(|| {
                    invalid(
                        "upstreams.protocols",
                        format!("{}: {p:?} (chat, messages, responses)", u.name),
                    )
                })?);
            }
            if out.is_empty() {
                return Err(invalid("upstreams.protocols", format!("{}: empty", u.name)));
            }
            out
        }
    };
    Ok(UpstreamSettings {
        name: u.name,
        id: None,
        kind: u.kind,
        base_url,
        api_keys,
        models: if u.models.is_empty() {
            vec!["*".to_owned()]
        } else {
            u.models
        },
        weight: u.weight.unwrap_or(1).max(1),
        priority: u.priority.unwrap_or(0),
        timeout_ms: u.timeout_ms.unwrap_or(120_000),
        connect_timeout_ms: u.connect_timeout_ms.unwrap_or(5_000),
        model_map: u.model_map,
        headers: u.headers,
        protocols,
        enabled: true,
        tags: Vec::new(),
        health: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("deepseek-*", "deepseek-chat"));
        assert!(!glob_match("deepseek-*", "gpt-4o"));
        assert!(glob_match("gpt-4?", "gpt-4o"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("exact", "exact"));
    }

    #[test]
    fn env_shortcut_and_mock_default() {
        let none = |_: &str| None;
        let s = GatewaySettings::build(None, None, None, &none).unwrap();
        assert_eq!(s.upstreams.len(), 1);
        assert_eq!(s.upstreams[0].kind, UpstreamKind::Mock);
        let env = |k: &str| match k {
            "DEEPSEEK_API_KEY" => Some("sk-test".to_owned()),
            "DEEPSEEK_BASE_URL" => Some("http://127.0.0.1:9/".to_owned()),
            _ => None,
        };
        let s = GatewaySettings::build(None, None, None, &env).unwrap();
        assert_eq!(s.upstreams[0].name, "deepseek");
        assert_eq!(s.upstreams[0].base_url, "http://127.0.0.1:9");
        assert_eq!(s.upstreams[0].models, vec!["*".to_owned()]);
        assert!(!s.mock_fallback);
        assert!(
            GatewaySettings::build(None, None, None, &none)
                .unwrap()
                .mock_fallback
        );
    }

    #[test]
    fn a_half_given_deepseek_setting_refuses_to_start() {
        let url_only = |k: &str| (k == "DEEPSEEK_BASE_URL").then(|| "https://x".to_owned());
        let e = GatewaySettings::build(None, None, None, &url_only).unwrap_err();
        assert!(e.to_string().contains("DEEPSEEK_BASE_URL"), "{e}");
        let empty_key = |k: &str| (k == "DEEPSEEK_API_KEY").then(|| " ".to_owned());
        let e = GatewaySettings::build(None, None, None, &empty_key).unwrap_err();
        assert!(e.to_string().contains("DEEPSEEK_API_KEY"), "{e}");
    }
}
