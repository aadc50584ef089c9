//! `[alerts]` in the config file and the `ALERT_*` environment variables: channels, rules
//! with their schedules and thresholds, cooldown, language, retries.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config_error::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleKind {
    Burst,
    MultiUserToken,
    IpManyUsers,
    BigRequest,
    QuotaLow,
    KeyExpiring,
    UpstreamDown,
    /// Client addresses blocked for guessing credentials.
    AuthFailures,
    /// A key holder asked for more quota (`/me`); announced until decided.
    QuotaRequest,
}

impl RuleKind {
    pub const ALL: [RuleKind; 9] = [
        RuleKind::Burst,
        RuleKind::MultiUserToken,
        RuleKind::IpManyUsers,
        RuleKind::BigRequest,
        RuleKind::QuotaLow,
        RuleKind::KeyExpiring,
        RuleKind::UpstreamDown,
        RuleKind::AuthFailures,
        RuleKind::QuotaRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Burst => "burst",
            RuleKind::MultiUserToken => "multi_user_token",
            RuleKind::IpManyUsers => "ip_many_users",
            RuleKind::BigRequest => "big_request",
            RuleKind::QuotaLow => "quota_low",
            RuleKind::KeyExpiring => "key_expiring",
            RuleKind::UpstreamDown => "upstream_down",
            RuleKind::AuthFailures => "auth_failures",
            RuleKind::QuotaRequest => "quota_request",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Computed by the monitor over its source (works over a New API database too).
    pub fn is_monitor_rule(self) -> bool {
        matches!(
            self,
            RuleKind::Burst
                | RuleKind::MultiUserToken
                | RuleKind::IpManyUsers
                | RuleKind::BigRequest
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    DingTalk,
    Feishu,
    WeChatWork,
    Slack,
    Webhook,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::DingTalk => "dingtalk",
            ChannelKind::Feishu => "feishu",
            ChannelKind::WeChatWork => "wechat_work",
            ChannelKind::Slack => "slack",
            ChannelKind::Webhook => "webhook",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            ChannelKind::DingTalk,
            ChannelKind::Feishu,
            ChannelKind::WeChatWork,
            ChannelKind::Slack,
            ChannelKind::Webhook,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

/// A destination. `url` and `secret` are secrets: never logged, never answered.
#[derive(Clone)]
pub struct ChannelSettings {
    pub name: String,
    pub kind: ChannelKind,
    pub url: String,
    pub secret: Option<String>,
    /// Only these rules (all when empty).
    pub rules: Vec<RuleKind>,
}

impl std::fmt::Debug for ChannelSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelSettings")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &"<secret>")
            .field("secret", &self.secret.as_ref().map(|_| "<secret>"))
            .field("rules", &self.rules)
            .finish()
    }
}

impl ChannelSettings {
    pub fn wants(&self, rule: RuleKind) -> bool {
        self.rules.is_empty() || self.rules.contains(&rule)
    }
}

/// When a rule runs, over which past, and its thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSettings {
    pub enabled: bool,
    pub every_ms: u64,
    pub lookback_ms: i64,
    /// Monitor rules: parameters of `/api/stats/anomalies` (thresholds), as given.
    pub params: BTreeMap<String, String>,
    /// `quota_low`: remaining below this share of the quota.
    pub threshold_pct: f64,
    /// `key_expiring`: expiring within this many days.
    pub days: i64,
    /// `upstream_down`: error rate at or above this (with at least `min_requests` calls).
    pub error_rate: f64,
    pub min_requests: i64,
}

impl RuleSettings {
    fn default_for(rule: RuleKind) -> Self {
        let (every, lookback) = match rule {
            RuleKind::Burst => (60, 300),
            RuleKind::UpstreamDown | RuleKind::AuthFailures => (60, 300),
            RuleKind::QuotaRequest => (60, 0),
            RuleKind::KeyExpiring => (3600, 0),
            _ => (300, 1800),
        };
        Self {
            enabled: true,
            every_ms: every * 1000,
            lookback_ms: lookback * 1000,
            params: BTreeMap::new(),
            threshold_pct: 20.0,
            days: 3,
            error_rate: 0.5,
            min_requests: 10,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub enabled: bool,
    pub channels: Vec<ChannelSettings>,
    pub rules: BTreeMap<RuleKind, RuleSettings>,
    pub lang: Lang,
    /// The zone the texts' times are written in (ISO 8601 with its offset); `None` until the
    /// configuration resolves it (`[alerts] tz`, else `[monitor] tz`).
    pub tz: Option<chrono_tz::Tz>,
    /// Where the dashboard is reachable, for links in messages (default: the listen address).
    pub public_url: Option<String>,
    pub cooldown_ms: i64,
    /// At least this many subjects in one run: one summary message instead.
    pub summary_at: usize,
    /// How many samples a summary lists.
    pub summary_samples: usize,
    pub max_attempts: u32,
    pub retry_base_ms: u64,
    pub timeout_ms: u64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            channels: Vec::new(),
            rules: RuleKind::ALL
                .into_iter()
                .map(|r| (r, RuleSettings::default_for(r)))
                .collect(),
            lang: Lang::Zh,
            tz: None,
            public_url: None,
            cooldown_ms: 3_600_000,
            summary_at: 10,
            summary_samples: 5,
            max_attempts: 3,
            retry_base_ms: 1000,
            timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsFile {
    pub enabled: Option<bool>,
    pub language: Option<String>,
    pub tz: Option<String>,
    pub public_url: Option<String>,
    pub cooldown_sec: Option<u64>,
    pub summary_at: Option<usize>,
    pub max_attempts: Option<u32>,
    pub retry_base_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub channels: Option<Vec<ChannelFile>>,
    pub rules: Option<BTreeMap<String, RuleFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelFile {
    pub name: Option<String>,
    pub kind: String,
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    pub rules: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub enabled: Option<bool>,
    pub every_sec: Option<u64>,
    pub lookback_sec: Option<u64>,
    pub window_sec: Option<u64>,
    pub limit_per_token: Option<u64>,
    pub users_threshold: Option<u64>,
    pub ips_threshold: Option<u64>,
    pub sigma: Option<f64>,
    pub min_tokens: Option<u64>,
    pub scope: Option<String>,
    pub threshold_pct: Option<f64>,
    pub days: Option<i64>,
    pub error_rate: Option<f64>,
    pub min_requests: Option<i64>,
}

fn invalid(name: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        message: message.into(),
    }
}

/// Env channels for the common case: one per platform.
const ENV_CHANNELS: [(&str, &str, ChannelKind); 5] = [
    (
        "ALERT_DINGTALK_URL",
        "ALERT_DINGTALK_SECRET",
        ChannelKind::DingTalk,
    ),
    (
        "ALERT_FEISHU_URL",
        "ALERT_FEISHU_SECRET",
        ChannelKind::Feishu,
    ),
    ("ALERT_WECOM_URL", "", ChannelKind::WeChatWork),
    ("ALERT_SLACK_URL", "", ChannelKind::Slack),
    (
        "ALERT_WEBHOOK_URL",
        "ALERT_WEBHOOK_SECRET",
        ChannelKind::Webhook,
    ),
];

/// One `[[alerts.channels]]` entry, its URL and secret from the file or the named variable.
fn channel_from_file(
    c: ChannelFile,
    env_ne: &dyn Fn(&str) -> Option<String>,
) -> Result<ChannelSettings, ConfigError> {
    let kind = ChannelKind::parse(&c.kind).ok_or_else(|| {
        invalid(
            "alerts.channels.kind",
            format!(
                "{:?}: dingtalk, feishu, wechat_work, slack or webhook",
                c.kind
            ),
        )
    })?;
    let url = c
        .url
        .or_else(|| c.url_env.as_deref().and_then(env_ne))
        .ok_or_else(|| invalid("alerts.channels.url", "missing (url or url_env)"))?;
    let secret = c
        .secret
        .or_else(|| c.secret_env.as_deref().and_then(env_ne));
    let mut rules = Vec::new();
    for r in c.rules.unwrap_or_default() {
        rules.push(
            RuleKind::parse(&r)
                .ok_or_else(|| invalid("alerts.channels.rules", format!("{r:?}")))?,
        );
    }
    Ok(ChannelSettings {
        name: c.name.unwrap_or_else(|| kind.as_str().to_owned()),
        kind,
        url,
        secret,
        rules,
    })
}

impl AlertSettings {
    pub fn build(
        file: Option<AlertsFile>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let f = file.unwrap_or_default();
        let env_ne = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let mut s = AlertSettings::default();
        if let Some(e) = env_ne("ALERTS_ENABLED") {
            s.enabled = matches!(e.trim(), "1" | "true" | "yes" | "on");
        } else if let Some(e) = f.enabled {
            s.enabled = e;
        }
        s.lang = match env_ne("ALERT_LANG")
            .or(f.language)
            .as_deref()
            .unwrap_or("zh")
        {
            "zh" | "zh-CN" | "cn" => Lang::Zh,
            "en" => Lang::En,
            other => return Err(invalid("alerts.language", format!("{other:?}: zh or en"))),
        };
        s.tz = match env_ne("ALERT_TZ").or(f.tz) {
            None => None,
            Some(z) => Some(z.trim().parse::<chrono_tz::Tz>().map_err(|_| {
                invalid(
                    "alerts.tz",
                    format!("{z:?}: an IANA time zone such as Asia/Shanghai"),
                )
            })?),
        };
        s.public_url = env_ne("ALERT_PUBLIC_URL")
            .or(f.public_url)
            .map(|u| u.trim_end_matches('/').to_owned());
        if let Some(c) = env_ne("ALERT_COOLDOWN_SEC") {
            let c: u64 = c
                .trim()
                .parse()
                .map_err(|_| invalid("ALERT_COOLDOWN_SEC", "seconds"))?;
            s.cooldown_ms = (c as i64).saturating_mul(1000);
        } else if let Some(c) = f.cooldown_sec {
            s.cooldown_ms = (c as i64).saturating_mul(1000);
        }
        if let Some(n) = f.summary_at {
            if n < 2 {
                return Err(invalid("alerts.summary_at", "at least 2"));
            }
            s.summary_at = n;
        }
        if let Some(n) = f.max_attempts {
            s.max_attempts = n.clamp(1, 10);
        }
        if let Some(n) = f.retry_base_ms {
            s.retry_base_ms = n;
        }
        if let Some(n) = f.timeout_ms {
            s.timeout_ms = n.max(100);
        }
        for c in f.channels.unwrap_or_default() {
            s.push_channel(channel_from_file(c, &env_ne)?)?;
        }
        s.channels_from_env(&env_ne)?;
        for (name, r) in f.rules.unwrap_or_default() {
            let kind = RuleKind::parse(&name)
                .ok_or_else(|| invalid("alerts.rules", format!("unknown rule {name:?}")))?;
            let rs = s
                .rules
                .get_mut(&kind)
                .ok_or_else(|| invalid("alerts.rules", name.clone()))?;
            apply_rule(rs, r)?;
        }
        Ok(s)
    }

    /// The seed's one-variable channels (`ALERT_DINGTALK_URL`, …).
    fn channels_from_env(
        &mut self,
        env_ne: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        for (url_var, secret_var, kind) in ENV_CHANNELS {
            if let Some(url) = env_ne(url_var) {
                let secret = if secret_var.is_empty() {
                    None
                } else {
                    env_ne(secret_var)
                };
                self.push_channel(ChannelSettings {
                    name: kind.as_str().to_owned(),
                    kind,
                    url,
                    secret,
                    rules: Vec::new(),
                })?;
            }
        }
        Ok(())
    }

    fn push_channel(&mut self, c: ChannelSettings) -> Result<(), ConfigError> {
        if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
            return Err(invalid("alerts.channels.url", "must be an http(s) URL"));
        }
        if self.channels.iter().any(|o| o.name == c.name) {
            return Err(invalid(
                "alerts.channels.name",
                format!("{:?} used twice", c.name),
            ));
        }
        self.channels.push(c);
        Ok(())
    }
}

fn apply_rule(rs: &mut RuleSettings, r: RuleFile) -> Result<(), ConfigError> {
    if let Some(e) = r.enabled {
        rs.enabled = e;
    }
    if let Some(v) = r.every_sec {
        if v == 0 {
            return Err(invalid("alerts.rules.every_sec", "at least 1"));
        }
        rs.every_ms = v * 1000;
    }
    if let Some(v) = r.lookback_sec {
        rs.lookback_ms = (v as i64).saturating_mul(1000);
    }
    let mut param = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            rs.params.insert(k.to_owned(), v);
        }
    };
    param("window_sec", r.window_sec.map(|v| v.to_string()));
    param("limit_per_token", r.limit_per_token.map(|v| v.to_string()));
    param("users_threshold", r.users_threshold.map(|v| v.to_string()));
    param("ips_threshold", r.ips_threshold.map(|v| v.to_string()));
    param("sigma", r.sigma.map(|v| v.to_string()));
    param("min_tokens", r.min_tokens.map(|v| v.to_string()));
    param("scope", r.scope);
    if let Some(v) = r.threshold_pct {
        if !(0.0..=100.0).contains(&v) {
            return Err(invalid("alerts.rules.threshold_pct", "0 to 100"));
        }
        rs.threshold_pct = v;
    }
    if let Some(v) = r.days {
        rs.days = v.max(0);
    }
    if let Some(v) = r.error_rate {
        if !(0.0..=1.0).contains(&v) {
            return Err(invalid("alerts.rules.error_rate", "0 to 1"));
        }
        rs.error_rate = v;
    }
    if let Some(v) = r.min_requests {
        rs.min_requests = v.max(1);
    }
    Ok(())
}

impl AlertSettings {
    /// The zone alert texts write times in.
    pub fn zone(&self) -> chrono_tz::Tz {
        self.tz.unwrap_or(chrono_tz::UTC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_env_channels_and_rule_overrides() {
        let file: AlertsFile = toml::from_str(
            r#"
            language = "en"
            cooldown_sec = 60
            [[channels]]
            name = "ops"
            kind = "dingtalk"
            url = "https://example.invalid/robot/send?access_token=abc"
            secret = "SEC1"
            rules = ["burst"]
            [rules.burst]
            every_sec = 5
            limit_per_token = 50
            [rules.quota_low]
            threshold_pct = 10
            "#,
        )
        .unwrap();
        let env = |k: &str| (k == "ALERT_SLACK_URL").then(|| "https://example.invalid/s".into());
        let s = AlertSettings::build(Some(file), &env).unwrap();
        assert_eq!(s.lang, Lang::En);
        assert_eq!(s.cooldown_ms, 60_000);
        assert_eq!(s.channels.len(), 2);
        assert!(s.channels[0].wants(RuleKind::Burst) && !s.channels[0].wants(RuleKind::QuotaLow));
        assert!(s.channels[1].wants(RuleKind::QuotaLow));
        let b = &s.rules[&RuleKind::Burst];
        assert_eq!(b.every_ms, 5000);
        assert_eq!(b.lookback_ms, 300_000);
        assert_eq!(b.params["limit_per_token"], "50");
        assert_eq!(s.rules[&RuleKind::QuotaLow].threshold_pct, 10.0);
        assert_eq!(s.rules[&RuleKind::MultiUserToken].every_ms, 300_000);
        // Secrets stay out of debug output.
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("SEC1") && !dbg.contains("access_token"),
            "{dbg}"
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let none = |_: &str| None;
        for bad in [
            "[[channels]]\nkind = \"pager\"\nurl = \"https://x\"",
            "[[channels]]\nkind = \"slack\"",
            "[[channels]]\nkind = \"slack\"\nurl = \"ftp://x\"",
            "[rules.nope]\nenabled = true",
            "[rules.burst]\nevery_sec = 0",
            "language = \"fr\"",
            "tz = \"Mars/Olympus\"",
        ] {
            let f: AlertsFile = toml::from_str(bad).unwrap();
            assert!(AlertSettings::build(Some(f), &none).is_err(), "{bad}");
        }
    }

    #[test]
    fn alert_times_are_written_in_the_configured_zone() {
        let f: AlertsFile = toml::from_str("tz = \"Asia/Shanghai\"").unwrap();
        let s = AlertSettings::build(Some(f), &|_: &str| None).unwrap();
        let v = super::super::text::Voice {
            lang: s.lang,
            tz: s.zone(),
        };
        // 2026-12-03T10:00:00Z
        assert_eq!(v.time(1_796_292_000_000), "2026-12-03T18:00:00+08:00");
        assert_eq!(
            v.time_text("2026-12-03T10:00:00Z"),
            "2026-12-03T18:00:00+08:00"
        );
        assert_eq!(v.time_text("not a time"), "not a time");
        // Unset: the configuration resolves it from `[monitor] tz` (UTC here).
        let unset = AlertSettings::build(None, &|_: &str| None).unwrap();
        assert_eq!(unset.zone(), chrono_tz::UTC);
    }
}
