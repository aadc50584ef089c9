//! Application assembly: state, router, background tasks, graceful shutdown.

mod routes;

pub use routes::{Surfaces, router};

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
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
pub struct App {
    pub state: AppState,
    pub router: Router,
    ledger_handle: LedgerHandle,
    gateway_handle: GatewayHandle,
    alerts: Arc<Alerts>,
    monitor: Arc<Monitor>,
    background: Vec<JoinHandle<()>>,
}

impl App {
    /// `config.admin_token` must be set (see [`resolve_admin_token`]).
    pub async fn build(config: Config, clock: SharedClock) -> Result<Self, StartError> {
        let admin_token = config
            .admin_token
            .clone()
            .ok_or_else(|| StartError::Config("admin token not set".into()))?;
        let store = open_store(&config).await?;
        let (ledger, ledger_handle) = Ledger::start(store.clone(), clock.clone()).await?;
        let keys = KeyAdmin::new(store.clone(), Some(ledger.clone()), clock.clone());
        let (gateway, gateway_handle) = Gateway::start(
            config.gateway.clone(),
            config.daily_req_limit,
            ledger.clone(),
            store.clone(),
        )
        .await?;
        let auth = Arc::new(Authenticator::new(TokenDigests::new(
            &admin_token,
            config.viewer_token.as_deref(),
        )));
        let monitor = Monitor::start(
            config.monitor.clone(),
            &native_dsn(&config),
            config
                .gateway
                .upstreams
                .iter()
                .map(|u| u.name.clone())
                .collect(),
            Some(&config.data_dir),
        )
        .await?;
        let web_state = WebState {
            auth: auth.clone(),
            info: Arc::new(DashboardInfo {
                mode: "serve",
                source: monitor.source.kind.as_str(),
                tz: monitor.settings.tz.name().to_owned(),
            }),
        };
        let alerts = Alerts::new(
            config.alerts.clone(),
            Sources {
                monitor: monitor.clone(),
                store: store.clone(),
                gateway: Some(gateway.clone()),
            },
            clock.clone(),
            config.listen,
        )
        .map_err(|e| StartError::Config(format!("alerts: {}", e.without_url())))?;
        alerts.start();
        let alerts_state = AlertsState {
            alerts: alerts.clone(),
            auth: auth.clone(),
        };
        let metrics_state = crate::api::metrics::MetricsState::new(
            config.metrics_token.as_deref(),
            Some(monitor.clone()),
        );
        let monitor_state = MonitorState {
            monitor: monitor.clone(),
            auth: auth.clone(),
        };
        let background = vec![
            ledger.spawn_change_follower(Duration::from_secs(1)),
            spawn_retention(store.clone(), clock, config.retention.clone()),
        ];
        let state = AppState(Arc::new(AppInner {
            config,
            store,
            ledger,
            gateway,
            keys,
            auth,
        }));
        Ok(Self {
            router: router(
                Surfaces {
                    core: Some(state.clone()),
                    monitor: monitor_state,
                    alerts: alerts_state,
                    web: web_state,
                    metrics: metrics_state,
                },
                &state.config,
            ),
            state,
            ledger_handle,
            gateway_handle,
            alerts,
            monitor,
            background,
        })
    }

    /// Serves until `signal` resolves, then finishes in-flight requests, commits every
    /// accepted consume and stops.
    pub async fn serve(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let limits = self.state.config.connections.clone();
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
        // Open streams settle first, then their log rows and the ledger are flushed.
        self.state.gateway.drain().await;
        self.gateway_handle.flushed().await;
        self.ledger_handle.shutdown().await;
        tracing::info!("ledger flushed; shutdown complete");
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
