//! The OpenAI-compatible gateway (`/v1/*`): authentication, per-key policy and limits,
//! billing through the ledger, routing with failover, streaming, request logs.

mod adapter;
pub mod anthropic;
pub mod call;
pub mod client_ip;
pub mod endpoint;
pub mod limits;
pub mod mock;
pub mod mock_server;
mod proxy;
pub mod redact;
mod relay;
pub mod reqlog;
pub mod responses;
pub mod secret_stream;
pub mod secrets;
pub mod settings;
pub mod shape;
pub mod sse;
mod stages;
pub mod tokens;
pub mod upstream;
mod upstream_call;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::ledger::Ledger;
use crate::store::Store;
use limits::Limiter;
use reqlog::{LoggerHandle, RequestLogger};
use settings::GatewaySettings;
use upstream::Upstream;

pub use endpoint::Endpoint;

pub struct Gateway {
    pub settings: GatewaySettings,
    pub upstreams: Vec<Arc<Upstream>>,
    pub limiter: Limiter,
    pub logger: RequestLogger,
    pub daily_default: Option<u64>,
    http: reqwest::Client,
    ledger: Arc<Ledger>,
    /// Streams still being pumped: shutdown waits for them to settle and log.
    tracker: TaskTracker,
    /// Our upstream keys and header values, masked in every answer.
    secrets: secrets::Scanner,
}

pub struct GatewayHandle {
    logger: LoggerHandle,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("http client: {0}")]
    Http(String),
}

impl Gateway {
    pub async fn start(
        settings: GatewaySettings,
        daily_default: Option<u64>,
        ledger: Arc<Ledger>,
        store: Arc<dyn Store>,
    ) -> Result<(Arc<Self>, GatewayHandle), GatewayError> {
        // One process-wide TLS provider; a second install attempt is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let connect_timeout = settings
            .upstreams
            .iter()
            .map(|u| u.connect_timeout_ms)
            .min()
            .unwrap_or(5_000);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(connect_timeout))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| GatewayError::Http(e.to_string()))?;
        let (logger, logger_handle) =
            RequestLogger::start(store.clone(), Duration::from_millis(settings.log_flush_ms));
        let limiter = Limiter::default();
        let now = ledger.now_ms();
        match store
            .request_counts_since(now - now.rem_euclid(86_400_000))
            .await
        {
            Ok(counts) => limiter.seed_daily(now, &counts),
            Err(e) => tracing::warn!(error = %e, "could not restore daily request counts"),
        }
        let secrets = secrets::Scanner::new(settings.upstreams.iter().flat_map(|u| {
            u.api_key
                .as_deref()
                .into_iter()
                .chain(u.headers.values().map(String::as_str))
        }));
        let upstreams = settings
            .upstreams
            .iter()
            .cloned()
            .map(|u| Arc::new(Upstream::new(u)))
            .collect();
        let gw = Arc::new(Self {
            settings,
            upstreams,
            limiter,
            logger,
            daily_default,
            http,
            ledger,
            tracker: TaskTracker::new(),
            secrets,
        });
        Ok((
            gw,
            GatewayHandle {
                logger: logger_handle,
            },
        ))
    }

    /// Waits for open streams to finish settling. Call before stopping the ledger.
    /// Waits for open streams and settlements, at most 30 s: with the store refusing writes
    /// a settlement waits in the ledger, which only gives up once it is told to stop.
    pub async fn drain(&self) {
        self.tracker.close();
        if tokio::time::timeout(std::time::Duration::from_secs(30), self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("stopping with calls still waiting for their settlement");
        }
    }
}

impl GatewayHandle {
    /// Flushes the request log; call after the gateway itself is dropped.
    pub async fn flushed(self) {
        self.logger.flushed().await;
    }
}
