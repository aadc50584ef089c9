//! Monitor and risk control (`/api/*`): time series, rankings, anomaly rules, heatmap,
//! summary and CSV export, over the gateway's request log or a New API database.

pub mod aggregates;
pub mod anomalies;
pub mod answer;
pub mod csv_export;
mod error;
pub mod params;
pub mod queries;
pub mod rollup;
pub mod rows;
pub mod source;
pub mod sql;
pub mod subject;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use anomalies::AllowList;
use rollup::{Rollup, RollupSettings};
use source::{Source, SourceKind};

pub use error::MonitorError;

/// `[monitor]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorFile {
    pub source: Option<String>,
    pub dsn: Option<String>,
    pub cache_ttl_sec: Option<u64>,
    pub tz: Option<String>,
    pub allow_ips: Option<Vec<String>>,
    pub allow_keys: Option<Vec<i64>>,
    pub allow_users: Option<Vec<i64>>,
    /// Days of rows the in-memory rollup holds (0: off).
    pub rollup_days: Option<u32>,
    pub rollup_poll_ms: Option<u64>,
    /// The most rows the rollup holds (0: no limit but `rollup_days`).
    pub rollup_max_rows: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct MonitorSettings {
    pub source: SourceKind,
    /// For `newapi`: the New API database. `native` reads the gateway's own database.
    pub dsn: Option<String>,
    pub cache_ttl_sec: u64,
    pub tz: chrono_tz::Tz,
    pub allow: AllowList,
    pub rollup: RollupSettings,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        Self {
            source: SourceKind::Native,
            dsn: None,
            cache_ttl_sec: 60,
            tz: chrono_tz::UTC,
            allow: AllowList::default(),
            rollup: RollupSettings::default(),
        }
    }
}

impl MonitorSettings {
    pub fn build(
        file: Option<MonitorFile>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, crate::config_error::ConfigError> {
        let f = file.unwrap_or_default();
        let invalid = |name: &'static str, m: String| crate::config_error::ConfigError::Invalid {
            name,
            message: m,
        };
        let non_empty = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let source = match non_empty("MONITOR_SOURCE")
            .or(f.source)
            .as_deref()
            .unwrap_or("native")
        {
            "native" => SourceKind::Native,
            "newapi" => SourceKind::NewApi,
            other => {
                return Err(invalid(
                    "monitor.source",
                    format!("{other} (native|newapi)"),
                ));
            }
        };
        let dsn = non_empty("MONITOR_DSN").or(f.dsn);
        if source == SourceKind::NewApi && dsn.is_none() {
            return Err(invalid("monitor.dsn", "newapi needs a DSN".into()));
        }
        let cache_ttl_sec = match non_empty("MONITOR_CACHE_TTL") {
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| invalid("MONITOR_CACHE_TTL", v.clone()))?,
            None => f.cache_ttl_sec.unwrap_or(60),
        };
        let tz_name = non_empty("MONITOR_TZ")
            .or(f.tz)
            .unwrap_or_else(|| "UTC".into());
        let tz = tz_name
            .parse::<chrono_tz::Tz>()
            .map_err(|_| invalid("monitor.tz", tz_name.clone()))?;
        let mut ips = Vec::new();
        for ip in f.allow_ips.unwrap_or_default() {
            ips.push(
                crate::gateway::settings::parse_net(&ip)
                    .ok_or_else(|| invalid("monitor.allow_ips", ip.clone()))?,
            );
        }
        let rollup_days = match non_empty("MONITOR_ROLLUP_DAYS") {
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| invalid("MONITOR_ROLLUP_DAYS", v.clone()))?,
            None => f.rollup_days.unwrap_or(RollupSettings::default().days),
        };
        let poll_ms = f.rollup_poll_ms.unwrap_or(1000);
        if poll_ms == 0 {
            return Err(invalid("monitor.rollup_poll_ms", "must be > 0".into()));
        }
        Ok(Self {
            source,
            dsn,
            cache_ttl_sec,
            tz,
            rollup: RollupSettings {
                days: rollup_days,
                page: RollupSettings::default().page,
                max_rows: match non_empty("MONITOR_ROLLUP_MAX_ROWS") {
                    Some(v) => v
                        .trim()
                        .parse()
                        .map_err(|_| invalid("MONITOR_ROLLUP_MAX_ROWS", v.clone()))?,
                    None => f
                        .rollup_max_rows
                        .unwrap_or(RollupSettings::default().max_rows),
                },
                poll: Duration::from_millis(poll_ms),
            },
            allow: AllowList {
                keys: f.allow_keys.unwrap_or_default().into_iter().collect(),
                users: f.allow_users.unwrap_or_default().into_iter().collect(),
                ips,
            },
        })
    }
}

pub struct Monitor {
    pub source: Source,
    pub settings: MonitorSettings,
    /// Answers from memory once caught up; `None` when `rollup_days` is 0.
    pub rollup: Option<Arc<Rollup>>,
    feed: Option<tokio::task::JoinHandle<()>>,
    /// Asks the feed to write the rollup's snapshot.
    persist: Option<tokio::sync::mpsc::Sender<rollup::feed::PersistRequest>>,
    /// Answer bytes and the engine that computed them.
    cache: moka::future::Cache<String, (Bytes, &'static str)>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(f) = &self.feed {
            f.abort();
        }
    }
}

impl Monitor {
    /// A cached answer (bytes and engine) for `key`.
    pub async fn cached(&self, key: &str) -> Option<(Bytes, &'static str)> {
        self.cache.get(key).await
    }

    pub async fn remember(&self, key: String, answer: (Bytes, &'static str)) {
        self.cache.insert(key, answer).await;
    }

    /// Writes the rollup's snapshot now (at shutdown), so the next start reads only newer
    /// rows. Waits at most `limit`.
    pub async fn persist(&self, limit: Duration) {
        let Some(tx) = &self.persist else { return };
        let (reply, done) = tokio::sync::oneshot::channel();
        if tx.send(reply).await.is_ok() {
            let _ = tokio::time::timeout(limit, done).await;
        }
    }

    /// `native_dsn` is the gateway's own database, used when the source is `native`.
    /// `state_dir`: where the rollup keeps its snapshot (none: no snapshot).
    pub async fn start(
        settings: MonitorSettings,
        native_dsn: &str,
        upstreams: Vec<String>,
        ledger_currency: crate::billing::Currency,
        state_dir: Option<&std::path::Path>,
    ) -> Result<Arc<Self>, MonitorError> {
        let dsn = match settings.source {
            SourceKind::Native => native_dsn.to_owned(),
            SourceKind::NewApi => settings
                .dsn
                .clone()
                .ok_or_else(|| MonitorError::Config("monitor DSN missing".into()))?,
        };
        let source = Source::connect(settings.source, &dsn, upstreams, ledger_currency).await?;
        let cache = moka::future::Cache::builder()
            .max_capacity(2_000)
            .time_to_live(Duration::from_secs(settings.cache_ttl_sec.max(1)))
            .build();
        let (rollup, feed, persist) = if settings.rollup.days > 0 {
            let r = Rollup::new(source.unit(), settings.rollup);
            let key = format!("{}|{dsn}", settings.source.as_str());
            let at = state_dir.map(|dir| rollup::feed::SnapshotAt {
                path: rollup::snapshot::path_for(dir, &key),
                source: key,
            });
            let (feed, persist) = rollup::feed::spawn(Arc::clone(&r), source.clone(), at);
            (Some(r), Some(feed), Some(persist))
        } else {
            (None, None, None)
        };
        Ok(Arc::new(Self {
            source,
            settings,
            rollup,
            feed,
            persist,
            cache,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(days: Option<u32>, poll: Option<u64>) -> Option<MonitorFile> {
        Some(MonitorFile {
            rollup_days: days,
            rollup_poll_ms: poll,
            ..MonitorFile::default()
        })
    }

    #[test]
    fn rollup_settings_come_from_file_then_env() {
        let none = |_: &str| None;
        let s = MonitorSettings::build(None, &none).unwrap();
        assert_eq!(s.rollup, RollupSettings::default());
        let s = MonitorSettings::build(file(Some(7), Some(250)), &none).unwrap();
        assert_eq!(
            (s.rollup.days, s.rollup.poll),
            (7, Duration::from_millis(250))
        );
        let off = |k: &str| (k == "MONITOR_ROLLUP_DAYS").then(|| "0".to_owned());
        let s = MonitorSettings::build(file(Some(7), None), &off).unwrap();
        assert_eq!(s.rollup.days, 0);
        let bad = |k: &str| (k == "MONITOR_ROLLUP_DAYS").then(|| "many".to_owned());
        assert!(MonitorSettings::build(None, &bad).is_err());
        assert!(MonitorSettings::build(file(None, Some(0)), &none).is_err());
    }
}
