//! Application assembly: state, router, background tasks, graceful shutdown.

mod routes;

pub use routes::{Surfaces, router};

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::alerts::Alerts;
use crate::alerts::rules::Sources;
use crate::api::alerts::AlertsState;
use crate::api::monitor::MonitorState;
use crate::auth::{Authenticator, TokenDigests};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::gateway::{Gateway, GatewayHandle};
use crate::keyadmin::KeyAdmin;
use crate::ledger::{Ledger, LedgerHandle};
use crate::monitor::Monitor;
pub use crate::state::{AppInner, AppState};
use crate::store::postgres::{PgOptions, PgStore};
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::{PurgeCutoffs, Store, StoreError};
use crate::web::{DashboardInfo, WebState};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Config(String),
    #[error("gateway: {0}")]
    Gateway(#[from] crate::gateway::GatewayError),
    #[error("monitor: {0}")]
    Monitor(#[from] crate::monitor::MonitorError),
}

/// Opens the configured store: PostgreSQL when `database_url` is set, else SQLite.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(url) = &config.database_url {
        let store = PgStore::open(
            url,
            PgOptions {
                pool_max: config.db_pool_max,
                acquire_timeout: Duration::from_millis(config.db_acquire_timeout_ms),
            },
        )
        .await?;
        return Ok(Arc::new(store));
    }
    let store = SqliteStore::open(
        &config.sqlite_path,
        SqliteOptions {
            synchronous_full: config.sqlite_synchronous_full,
            busy_timeout: Duration::from_millis(config.sqlite_busy_timeout_ms),
        },
    )
    .await?;
    Ok(Arc::new(store))
}

/// Where the monitor's native source reads the request log: the shared database when there
/// is one, so every instance shows the same numbers.
fn native_dsn(config: &Config) -> String {
    match &config.database_url {
        Some(url) => url.clone(),
        None => config.sqlite_path.to_string_lossy().into_owned(),
    }
}

/// A built application: its router and the background work that must be stopped in order.
/// `serve` builds everything; `monitor` mode (`App::monitor_only`) the same minus the quota
/// API, the admin API and the gateway.
pub struct App {
    pub config: Arc<Config>,
    pub router: crate::middleware::Shell,
    core: Option<Core>,
    alerts: Arc<Alerts>,
    monitor: Arc<Monitor>,
    background: Vec<JoinHandle<()>>,
}

/// What only `serve` has: the ledger, the gateway and their writers.
struct Core {
    state: AppState,
    ledger_handle: LedgerHandle,
    gateway_handle: GatewayHandle,
}

/// What both modes share: the operator tokens, the monitor, the alerts, the dashboard.
struct Shared {
    auth: Arc<Authenticator>,
    monitor: Arc<Monitor>,
    alerts: Arc<Alerts>,
    /// Wrong credentials per client address: counted by the routes' guard, watched by the
    /// `auth_failures` alert rule.
    failures: Arc<crate::bruteforce::FailureLimiter>,
}

impl Shared {
    /// `native_dsn`: where the native source reads the request log; `upstreams`: the
    /// gateway's upstream names (the monitor's channels); `gateway`: for the key and
    /// upstream alert rules.
    async fn start(
        config: &Config,
        clock: SharedClock,
        store: Arc<dyn Store>,
        native_dsn: &str,
        upstreams: Vec<String>,
        gateway: Option<Arc<Gateway>>,
    ) -> Result<Self, StartError> {
        let admin_token = config
            .admin_token
            .clone()
            .ok_or_else(|| StartError::Config("admin token not set".into()))?;
        let auth = Arc::new(Authenticator::new(TokenDigests::new(
            &admin_token,
            config.viewer_token.as_deref(),
        )));
        let monitor = Monitor::start(
            config.monitor.clone(),
            native_dsn,
            upstreams,
            config.gateway.billing.currency,
            Some(&config.data_dir),
        )
        .await?;
        let failures = Arc::new(crate::bruteforce::FailureLimiter::new(
            config.auth_failure_allowance,
        ));
        let alerts = Alerts::new(
            config.alerts.clone(),
            Sources {
                monitor: monitor.clone(),
                store,
                gateway,
                failures: failures.clone(),
            },
            clock,
            config.listen,
        )
        .map_err(|e| StartError::Config(format!("alerts: {}", e.without_url())))?;
        alerts.start();
        Ok(Self {
            auth,
            monitor,
            alerts,
            failures,
        })
    }

    /// What answers HTTP, given the quota and gateway state when there is one.
    fn surfaces(&self, config: &Config, core: Option<AppState>, mode: &'static str) -> Surfaces {
        Surfaces {
            failures: self.failures.clone(),
            core,
            monitor: MonitorState {
                monitor: self.monitor.clone(),
                auth: self.auth.clone(),
            },
            alerts: AlertsState {
                alerts: self.alerts.clone(),
                auth: self.auth.clone(),
            },
            web: WebState {
                auth: self.auth.clone(),
                info: Arc::new(DashboardInfo {
                    mode,
                    source: self.monitor.source.kind.as_str(),
                    tz: self.monitor.settings.tz.name().to_owned(),
                    currency: config.gateway.billing.currency.code(),
                }),
            },
            metrics: crate::api::metrics::MetricsState::new(
                config.metrics_token.as_deref(),
                Some(self.monitor.clone()),
            ),
        }
    }
}

impl App {
    /// Everything: the quota API, the gateway, the monitor, alerts and the dashboard.
    /// `config.admin_token` must be set (see [`resolve_admin_token`]).
    pub async fn build(config: Config, clock: SharedClock) -> Result<Self, StartError> {
        let store = open_store(&config).await?;
        let (ledger, ledger_handle) = Ledger::start(store.clone(), clock.clone()).await?;
        let keys = KeyAdmin::new(store.clone(), Some(ledger.clone()), clock.clone());
        let users =
            crate::useradmin::UserAdmin::new(store.clone(), Some(ledger.clone()), clock.clone());
        let (gateway, gateway_handle) = Gateway::start(
            config.gateway.clone(),
            config.daily_req_limit,
            ledger.clone(),
            store.clone(),
            crate::sealed::Sealer::new(config.secrets_key.as_deref()),
        )
        .await?;
        let upstreams = config.gateway.upstreams.iter().map(|u| u.name.clone());
        let shared = Shared::start(
            &config,
            clock.clone(),
            store.clone(),
            &native_dsn(&config),
            upstreams.collect(),
            Some(gateway.clone()),
        )
        .await?;
        let background = vec![
            ledger.spawn_change_follower(Duration::from_secs(1)),
            ledger.spawn_hold_keeper(),
            ledger.spawn_budget_follower(Duration::from_millis(500)),
            gateway.spawn_channel_follower(Duration::from_millis(500)),
            spawn_retention(store.clone(), clock, config.retention.clone()),
        ];
        let state = AppState(Arc::new(AppInner {
            config,
            store,
            ledger,
            gateway,
            keys,
            users,
            auth: shared.auth.clone(),
            holders: crate::auth::Sessions::new(
                Duration::from_secs(12 * 3600),
                Duration::from_secs(7 * 24 * 3600),
            ),
            redemptions: crate::invites::RedeemLimiter::new(5),
        }));
        let config = Arc::new(state.config.clone());
        let surfaces = shared.surfaces(&config, Some(state.clone()), "serve");
        Ok(Self {
            router: router(surfaces, &config),
            config,
            core: Some(Core {
                state,
                ledger_handle,
                gateway_handle,
            }),
            alerts: shared.alerts,
            monitor: shared.monitor,
            background,
        })
    }

    /// The monitor alone (no gateway, no ledger), for pointing at an existing relay's
    /// database. Alert history and cooldowns live in this instance's own database, never in
    /// the monitored one (which stays read-only).
    pub async fn monitor_only(config: Config, clock: SharedClock) -> Result<Self, StartError> {
        let store = open_store(&config).await?;
        let shared = Shared::start(
            &config,
            clock,
            store,
            &config.sqlite_path.to_string_lossy(),
            Vec::new(),
            None,
        )
        .await?;
        let config = Arc::new(config);
        let surfaces = shared.surfaces(&config, None, "monitor");
        Ok(Self {
            router: router(surfaces, &config),
            config,
            core: None,
            alerts: shared.alerts,
            monitor: shared.monitor,
            background: Vec::new(),
        })
    }

    /// Serves until `signal` resolves, then finishes in-flight requests, commits every
    /// accepted consume and stops.
    pub async fn serve(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let mut limits = self.config.connections.clone();
        limits.cap_exempt = self.config.gateway.trusted_proxies.clone();
        let result = crate::listener::serve(listener, self.router.clone(), limits, signal).await;
        self.shutdown().await;
        result
    }

    pub async fn shutdown(self) {
        for task in &self.background {
            task.abort();
        }
        self.alerts.stop();
        // The rollup's snapshot: the next start reads only rows added since.
        self.monitor.persist(Duration::from_secs(30)).await;
        if let Some(core) = self.core {
            // Open streams settle first, then their log rows and the ledger are flushed.
            core.state.gateway.drain().await;
            core.gateway_handle.flushed().await;
            core.ledger_handle.shutdown().await;
            tracing::info!("ledger flushed; shutdown complete");
        }
    }
}

fn spawn_retention(
    store: Arc<dyn Store>,
    clock: SharedClock,
    retention: crate::config::Retention,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(retention.every);
        loop {
            tick.tick().await;
            let cutoffs = purge_cutoffs(&retention, clock.now_ms());
            match store.purge(&cutoffs).await {
                Ok(n) if n > 0 => tracing::info!(rows = n, "retention purge"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention purge failed"),
            }
        }
    })
}

/// What `retention` keeps, at `now_ms`.
pub fn purge_cutoffs(retention: &crate::config::Retention, now_ms: i64) -> PurgeCutoffs {
    const DAY: i64 = 86_400_000;
    let days = |d: u32| (d > 0).then(|| now_ms - i64::from(d) * DAY);
    PurgeCutoffs {
        request_log: days(retention.request_log_days),
        usage_events: days(retention.usage_history_days),
        audit: days(retention.audit_days),
        alerts: days(retention.alerts_days),
        idempotency: Some(now_ms - i64::from(retention.idempotency_hours) * 3_600_000),
        cooldowns: Some(now_ms),
    }
}

/// The admin token: from config, else from `<data_dir>/admin_token`, else generated, saved
/// there with mode 0600 and returned with `true` so the caller prints it (once).
pub fn resolve_admin_token(config: &Config) -> Result<(String, bool), StartError> {
    if let Some(t) = &config.admin_token {
        return Ok((t.clone(), false));
    }
    let path = config.data_dir.join("admin_token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_owned();
        if !t.is_empty() {
            return Ok((t, false));
        }
    }
    std::fs::create_dir_all(&config.data_dir)?;
    let token = format!(
        "qpa_{}",
        crate::keys::format::random_base62(40)
            .map_err(|e| StartError::Config(format!("random source: {e}")))?
    );
    write_private(&path, &token)?;
    Ok((token, true))
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(content.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
