//! Configuration: CLI flags > environment > config file > defaults, validated once at start.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::gateway::settings::{BillingFile, GatewayFile, GatewaySettings, UpstreamFile};

pub use crate::config_error::ConfigError;

/// How far past its limit a declared body is still read (and dropped) before the 413, so
/// that clients writing their whole body first see the answer: the limit again, at least
/// 1 MiB. Beyond that the 413 comes at once.
pub fn body_slack(limit: usize) -> usize {
    limit.max(1 << 20)
}

/// Limits on the server's connections (see `listener`).
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Open connections at most; more are refused with 503.
    pub max_connections: usize,
    /// Time to send a request's headers, and the longest a keep-alive connection may sit
    /// idle between requests.
    pub header_read_timeout: Duration,
    /// The longest a client may pause while sending a request body.
    pub body_idle_timeout: Duration,
    /// The longest a request body may take in all, however steadily it trickles in.
    pub body_deadline: Duration,
    /// Connections one client address may hold open before any request on them proved a
    /// credential, once half the budget is in use (`0`: no cap). See `listener`.
    pub max_unauthenticated_per_ip: usize,
    /// Addresses the cap does not apply to (the trusted proxies: behind them many clients
    /// share one address).
    pub cap_exempt: Vec<ipnet::IpNet>,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(20),
            body_idle_timeout: Duration::from_secs(15),
            body_deadline: Duration::from_secs(60),
            max_unauthenticated_per_ip: 64,
            cap_exempt: Vec::new(),
        }
    }
}

/// How long each kind of row is kept; older rows are purged in small batches. `0` days
/// keeps that kind forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub request_log_days: u32,
    pub usage_history_days: u32,
    pub audit_days: u32,
    pub alerts_days: u32,
    /// Idempotency records: at least the promised 24 h.
    pub idempotency_hours: u32,
    /// How often the purge runs.
    pub every: Duration,
}

impl Retention {
    fn all(days: u32) -> Self {
        Self {
            request_log_days: days,
            usage_history_days: days,
            audit_days: days,
            alerts_days: days,
            idempotency_hours: 48,
            every: Duration::from_secs(3600),
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self::all(90)
    }
}

/// `[retention]` in the config file: per-table overrides of `log_retention_days`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    pub request_log_days: Option<u32>,
    pub usage_history_days: Option<u32>,
    pub audit_days: Option<u32>,
    pub alerts_days: Option<u32>,
    pub idempotency_hours: Option<u32>,
    pub every_secs: Option<u64>,
}

/// The config file (`quota-proxy.toml`); every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    pub sqlite_path: Option<PathBuf>,
    pub sqlite_synchronous: Option<String>,
    pub sqlite_busy_timeout_ms: Option<u64>,
    pub database_url: Option<String>,
    pub db_pool_max: Option<u32>,
    pub db_acquire_timeout_ms: Option<u64>,
    pub admin_token: Option<String>,
    pub viewer_token: Option<String>,
    pub secrets_key: Option<String>,
    pub key_prefix: Option<String>,
    pub daily_req_limit: Option<u64>,
    pub log_retention_days: Option<u32>,
    pub retention: Option<RetentionFile>,
    pub metrics_token: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub request_timeout_ms: Option<u64>,
    pub max_connections: Option<usize>,
    pub header_read_timeout_ms: Option<u64>,
    pub body_idle_timeout_ms: Option<u64>,
    pub body_deadline_ms: Option<u64>,
    pub max_unauthenticated_per_ip: Option<usize>,
    pub auth_failure_allowance: Option<u32>,
    pub gateway: Option<GatewayFile>,
    pub billing: Option<BillingFile>,
    pub upstreams: Option<Vec<UpstreamFile>>,
    pub monitor: Option<crate::monitor::MonitorFile>,
    pub alerts: Option<crate::alerts::settings::AlertsFile>,
}

/// Values given on the command line (highest precedence).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    pub sqlite_path: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub sqlite_path: PathBuf,
    pub sqlite_synchronous_full: bool,
    pub sqlite_busy_timeout_ms: u64,
    /// `postgres://…`: everything lives in PostgreSQL (several instances may share it);
    /// otherwise SQLite at `sqlite_path`.
    pub database_url: Option<String>,
    pub db_pool_max: u32,
    pub db_acquire_timeout_ms: u64,
    pub admin_token: Option<String>,
    pub viewer_token: Option<String>,
    /// Seals the stored channels' upstream keys and header values (any passphrase).
    pub secrets_key: Option<String>,
    pub key_prefix: String,
    pub daily_req_limit: Option<u64>,
    /// Wrong credentials one client address may send in a minute before it is blocked
    /// (`0`: never blocked). See `bruteforce`.
    pub auth_failure_allowance: u32,
    pub retention: Retention,
    /// When set, `/metrics` asks for `Authorization: Bearer <metrics_token>`.
    pub metrics_token: Option<String>,
    pub max_body_bytes: usize,
    /// The longest a handler may take to start its answer.
    pub request_timeout_ms: u64,
    pub connections: ConnLimits,
    pub gateway: GatewaySettings,
    pub monitor: crate::monitor::MonitorSettings,
    pub alerts: crate::alerts::settings::AlertSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            data_dir: PathBuf::from("./data"),
            sqlite_path: PathBuf::from("./data/quota-proxy.db"),
            sqlite_synchronous_full: true,
            sqlite_busy_timeout_ms: 10_000,
            database_url: None,
            db_pool_max: 16,
            db_acquire_timeout_ms: 5_000,
            admin_token: None,
            viewer_token: None,
            secrets_key: None,
            key_prefix: "qp".to_owned(),
            daily_req_limit: None,
            auth_failure_allowance: crate::bruteforce::ALLOWANCE,
            retention: Retention::default(),
            metrics_token: None,
            max_body_bytes: 64 * 1024,
            request_timeout_ms: 600_000,
            connections: ConnLimits::default(),
            gateway: GatewaySettings::default(),
            monitor: crate::monitor::MonitorSettings::default(),
            alerts: crate::alerts::settings::AlertSettings::default(),
        }
    }
}

fn invalid(name: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        message: message.into(),
    }
}

fn parse_env<T: std::str::FromStr>(
    env: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<T>, ConfigError> {
    match env(name) {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => v
            .trim()
            .parse::<T>()
            .map(Some)
            .map_err(|_| invalid(name, format!("cannot parse {v:?}"))),
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

impl Config {
    /// Loads from the real process environment.
    pub fn load(over: &Overrides) -> Result<Self, ConfigError> {
        Self::load_with(over, &|k| std::env::var(k).ok())
    }

    pub fn load_with(
        over: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file_path = over
            .config
            .clone()
            .or_else(|| env("QUOTA_PROXY_CONFIG").map(PathBuf::from))
            .or_else(|| {
                let p = PathBuf::from("quota-proxy.toml");
                p.exists().then_some(p)
            });
        let mut file = match &file_path {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        let d = Config::default();
        let listen = listen_addr(over, env, &file, &d)?;
        let monitor = crate::monitor::MonitorSettings::build(file.monitor.take(), env)?;
        let mut alerts = crate::alerts::settings::AlertSettings::build(file.alerts.take(), env)?;
        // Alert texts follow the monitor's zone unless given their own.
        alerts.tz = alerts.tz.or(Some(monitor.tz));
        let (data_dir, sqlite_path, sqlite_synchronous_full) = sqlite_files(over, env, &file, &d)?;
        let key_prefix = non_empty(env("KEY_PREFIX"))
            .or(file.key_prefix.clone())
            .unwrap_or_else(|| d.key_prefix.clone());
        if !crate::keys::is_valid_prefix(&key_prefix) {
            return Err(invalid("key_prefix", "1-16 letters or digits"));
        }
        let max_body_bytes = parse_env::<usize>(env, "MAX_BODY_BYTES")?
            .or(file.max_body_bytes)
            .unwrap_or(d.max_body_bytes);
        if max_body_bytes < 1024 {
            return Err(invalid("max_body_bytes", "at least 1024"));
        }
        let request_timeout_ms = parse_env::<u64>(env, "REQUEST_TIMEOUT_MS")?
            .or(file.request_timeout_ms)
            .unwrap_or(d.request_timeout_ms);
        if request_timeout_ms < 1000 {
            return Err(invalid("request_timeout_ms", "at least 1000"));
        }
        let connections = connection_limits(env, &file)?;
        let (database_url, db_pool_max) = database(env, &file, &d)?;
        Ok(Config {
            listen,
            data_dir,
            sqlite_path,
            sqlite_synchronous_full,
            sqlite_busy_timeout_ms: parse_env::<u64>(env, "SQLITE_BUSY_TIMEOUT_MS")?
                .or(file.sqlite_busy_timeout_ms)
                .unwrap_or(d.sqlite_busy_timeout_ms),
            database_url,
            db_pool_max,
            db_acquire_timeout_ms: parse_env::<u64>(env, "DB_ACQUIRE_TIMEOUT_MS")?
                .or(file.db_acquire_timeout_ms)
                .unwrap_or(d.db_acquire_timeout_ms)
                .max(100),
            admin_token: non_empty(env("ADMIN_TOKEN")).or(non_empty(file.admin_token)),
            viewer_token: non_empty(env("VIEWER_TOKEN")).or(non_empty(file.viewer_token)),
            secrets_key: non_empty(env("SECRETS_KEY")).or(non_empty(file.secrets_key)),
            key_prefix,
            daily_req_limit: parse_env::<u64>(env, "DAILY_REQ_LIMIT")?.or(file.daily_req_limit),
            auth_failure_allowance: parse_env::<u32>(env, "AUTH_FAILURE_ALLOWANCE")?
                .or(file.auth_failure_allowance)
                .unwrap_or(d.auth_failure_allowance),
            retention: retention(env, file.log_retention_days, file.retention)?,
            metrics_token: non_empty(env("METRICS_TOKEN")).or(non_empty(file.metrics_token)),
            max_body_bytes,
            request_timeout_ms,
            connections,
            gateway: GatewaySettings::build(file.gateway, file.billing, file.upstreams, env)?,
            monitor,
            alerts,
        })
    }
}

/// `host` and `port`: flags, then the environment, then the file.
fn listen_addr(
    over: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
    file: &FileConfig,
    d: &Config,
) -> Result<SocketAddr, ConfigError> {
    let host = over
        .host
        .clone()
        .or_else(|| non_empty(env("HOST")))
        .or(file.host.clone())
        .unwrap_or_else(|| d.listen.ip().to_string());
    let port = match over.port {
        Some(p) => p,
        None => parse_env::<u16>(env, "PORT")?
            .or(file.port)
            .unwrap_or(d.listen.port()),
    };
    let ip: IpAddr = host
        .parse()
        .map_err(|_| invalid("host", format!("not an IP address: {host}")))?;
    Ok(SocketAddr::new(ip, port))
}

/// The data directory, the SQLite file in it, and whether commits survive power loss.
fn sqlite_files(
    over: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
    file: &FileConfig,
    d: &Config,
) -> Result<(PathBuf, PathBuf, bool), ConfigError> {
    let data_dir = over
        .data_dir
        .clone()
        .or_else(|| non_empty(env("DATA_DIR")).map(PathBuf::from))
        .or(file.data_dir.clone())
        .unwrap_or_else(|| d.data_dir.clone());
    let sqlite_path = over
        .sqlite_path
        .clone()
        .or_else(|| non_empty(env("SQLITE_PATH")).map(PathBuf::from))
        .or(file.sqlite_path.clone())
        .unwrap_or_else(|| data_dir.join("quota-proxy.db"));
    let sync = non_empty(env("SQLITE_SYNCHRONOUS"))
        .or(file.sqlite_synchronous.clone())
        .unwrap_or_else(|| "full".to_owned());
    let full = match sync.to_ascii_lowercase().as_str() {
        "full" => true,
        "normal" => false,
        other => {
            return Err(invalid(
                "sqlite_synchronous",
                format!("{other} (full|normal)"),
            ));
        }
    };
    Ok((data_dir, sqlite_path, full))
}

/// How many connections, and how long a client may be slow.
fn connection_limits(
    env: &dyn Fn(&str) -> Option<String>,
    file: &FileConfig,
) -> Result<ConnLimits, ConfigError> {
    let dc = ConnLimits::default();
    Ok(ConnLimits {
        max_connections: parse_env::<usize>(env, "MAX_CONNECTIONS")?
            .or(file.max_connections)
            .unwrap_or(dc.max_connections)
            .max(1),
        header_read_timeout: std::time::Duration::from_millis(
            parse_env::<u64>(env, "HEADER_READ_TIMEOUT_MS")?
                .or(file.header_read_timeout_ms)
                .unwrap_or(dc.header_read_timeout.as_millis() as u64)
                .max(100),
        ),
        body_idle_timeout: std::time::Duration::from_millis(
            parse_env::<u64>(env, "BODY_IDLE_TIMEOUT_MS")?
                .or(file.body_idle_timeout_ms)
                .unwrap_or(dc.body_idle_timeout.as_millis() as u64)
                .max(100),
        ),
        body_deadline: std::time::Duration::from_millis(
            parse_env::<u64>(env, "BODY_DEADLINE_MS")?
                .or(file.body_deadline_ms)
                .unwrap_or(dc.body_deadline.as_millis() as u64)
                .max(100),
        ),
        max_unauthenticated_per_ip: parse_env::<usize>(env, "MAX_UNAUTHENTICATED_PER_IP")?
            .or(file.max_unauthenticated_per_ip)
            .unwrap_or(dc.max_unauthenticated_per_ip),
        // Filled from the gateway's trusted proxies once those are read.
        cap_exempt: Vec::new(),
    })
}

/// The PostgreSQL URL (none: SQLite) and its pool size.
fn database(
    env: &dyn Fn(&str) -> Option<String>,
    file: &FileConfig,
    d: &Config,
) -> Result<(Option<String>, u32), ConfigError> {
    let database_url = non_empty(env("DATABASE_URL")).or(non_empty(file.database_url.clone()));
    if let Some(url) = &database_url
        && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        return Err(invalid(
            "database_url",
            "postgres://… (leave unset for SQLite at sqlite_path)",
        ));
    }
    let db_pool_max = parse_env::<u32>(env, "DB_POOL_MAX")?
        .or(file.db_pool_max)
        .unwrap_or(d.db_pool_max);
    if db_pool_max < 2 {
        return Err(invalid("db_pool_max", "at least 2"));
    }
    Ok((database_url, db_pool_max))
}

fn retention(
    env: &dyn Fn(&str) -> Option<String>,
    days: Option<u32>,
    file: Option<RetentionFile>,
) -> Result<Retention, ConfigError> {
    let all = parse_env::<u32>(env, "LOG_RETENTION_DAYS")?
        .or(days)
        .unwrap_or(Retention::default().request_log_days);
    let d = Retention::all(all);
    let f = file.unwrap_or_default();
    let pick = |name: &'static str, file: Option<u32>, default: u32| {
        parse_env::<u32>(env, name).map(|v| v.or(file).unwrap_or(default))
    };
    let r = Retention {
        request_log_days: pick("RETENTION_REQUEST_LOG_DAYS", f.request_log_days, all)?,
        usage_history_days: pick("RETENTION_USAGE_HISTORY_DAYS", f.usage_history_days, all)?,
        audit_days: pick("RETENTION_AUDIT_DAYS", f.audit_days, all)?,
        alerts_days: pick("RETENTION_ALERTS_DAYS", f.alerts_days, all)?,
        idempotency_hours: pick(
            "RETENTION_IDEMPOTENCY_HOURS",
            f.idempotency_hours,
            d.idempotency_hours,
        )?,
        every: Duration::from_secs(
            parse_env::<u64>(env, "RETENTION_EVERY_SECS")?
                .or(f.every_secs)
                .unwrap_or(d.every.as_secs())
                .max(1),
        ),
    };
    if r.idempotency_hours < 24 {
        return Err(invalid(
            "retention.idempotency_hours",
            "at least 24 (idempotency keys are promised for 24 h)",
        ));
    }
    Ok(r)
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn precedence_flags_over_env_over_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "port = 9000\nkey_prefix = \"roc\"\ndaily_req_limit = 7\n",
        )
        .unwrap();
        let over = Overrides {
            config: Some(file.clone()),
            ..Default::default()
        };
        let c = Config::load_with(&over, &env_of(&[])).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.key_prefix, "roc");
        assert_eq!(c.daily_req_limit, Some(7));

        let c = Config::load_with(&over, &env_of(&[("PORT", "9100")])).unwrap();
        assert_eq!(c.listen.port(), 9100);

        let over2 = Overrides {
            port: Some(9200),
            ..over
        };
        let c = Config::load_with(&over2, &env_of(&[("PORT", "9100")])).unwrap();
        assert_eq!(c.listen.port(), 9200);
    }

    #[test]
    fn alert_texts_follow_the_monitors_zone_unless_given_their_own() {
        let c = Config::load_with(
            &Overrides::default(),
            &env_of(&[("MONITOR_TZ", "Asia/Shanghai")]),
        )
        .unwrap();
        assert_eq!(c.alerts.zone(), chrono_tz::Asia::Shanghai);
        let c = Config::load_with(
            &Overrides::default(),
            &env_of(&[
                ("MONITOR_TZ", "Asia/Shanghai"),
                ("ALERT_TZ", "Europe/Berlin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.alerts.zone(), chrono_tz::Europe::Berlin);
    }

    #[test]
    fn defaults_and_bad_values() {
        let c = Config::load_with(&Overrides::default(), &env_of(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8787");
        assert!(c.sqlite_path.ends_with("quota-proxy.db"));
        assert!(Config::load_with(&Overrides::default(), &env_of(&[("PORT", "x")])).is_err());
        assert!(
            Config::load_with(&Overrides::default(), &env_of(&[("KEY_PREFIX", "a_b")])).is_err()
        );
    }

    #[test]
    fn retention_defaults_and_per_table_overrides() {
        let c = Config::load_with(&Overrides::default(), &env_of(&[])).unwrap();
        assert_eq!(c.retention, Retention::default());
        assert_eq!(c.retention.audit_days, 90);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "log_retention_days = 30\n[retention]\naudit_days = 365\nalerts_days = 0\n",
        )
        .unwrap();
        let over = Overrides {
            config: Some(file),
            ..Default::default()
        };
        let c = Config::load_with(&over, &env_of(&[("RETENTION_REQUEST_LOG_DAYS", "7")])).unwrap();
        assert_eq!(c.retention.request_log_days, 7);
        assert_eq!(c.retention.usage_history_days, 30);
        assert_eq!(c.retention.audit_days, 365);
        assert_eq!(c.retention.alerts_days, 0);
        let bad = env_of(&[("RETENTION_IDEMPOTENCY_HOURS", "2")]);
        assert!(Config::load_with(&Overrides::default(), &bad).is_err());
    }
}
