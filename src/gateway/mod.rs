//! The OpenAI-compatible gateway (`/v1/*`): authentication, per-key policy and limits,
//! billing through the ledger, routing with failover, streaming, request logs.

mod adapter;
pub mod anthropic;
pub mod call;
pub mod channel_admin;
pub mod channels;
pub mod chat_chunk;
pub mod client_ip;
pub mod endpoint;
pub mod health;
pub mod http_client;
pub mod limits;
pub mod lite;
pub mod messages_request;
pub mod mock;
pub mod mock_server;
mod proxy;
pub mod raw_json;
pub mod redact;
mod relay;
pub mod reqlog;
pub mod responses;
pub mod responses_request;
pub mod roster;
pub mod secret_stream;
pub mod secrets;
pub mod settings;
pub mod shape;
pub mod skim;
pub mod sse;
mod stages;
pub mod tokens;
pub mod upstream;
mod upstream_call;
pub mod usage;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::ledger::Ledger;
use crate::sealed::Sealer;
use crate::store::{Store, StoreResult};
use health::HealthPolicy;
use limits::Limiter;
use reqlog::{LoggerHandle, RequestLogger};
use roster::{Roster, Sources};
use settings::GatewaySettings;

pub use endpoint::Endpoint;

pub struct Gateway {
    pub settings: GatewaySettings,
    /// The upstreams in use: replaced whole when channels change (see `roster.rs`).
    roster: RwLock<Arc<Roster>>,
    pub limiter: Limiter,
    /// The same limits per user and per team, over all their keys (this instance's own
    /// counts, not restored after a restart).
    pub account_limiter: Limiter,
    pub logger: RequestLogger,
    pub daily_default: Option<u64>,
    http: http_client::UpstreamClient,
    ledger: Arc<Ledger>,
    store: Arc<dyn Store>,
    /// Opens and seals the stored channels' secrets.
    pub sealer: Sealer,
    /// Reloads one at a time, so an older read never replaces a newer snapshot.
    reloading: tokio::sync::Mutex<()>,
    /// Streams still being pumped: shutdown waits for them to settle and log.
    tracker: TaskTracker,
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
        sealer: Sealer,
    ) -> Result<(Arc<Self>, GatewayHandle), GatewayError> {
        // One process-wide TLS provider; a second install attempt is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http =
            http_client::UpstreamClient::new(DEFAULT_CONNECT_MS).map_err(GatewayError::Http)?;
        if http.via_proxy() {
            tracing::info!(
                "upstream calls go through the proxy the environment names (HTTPS_PROXY, HTTP_PROXY or ALL_PROXY)"
            );
        }
        let (logger, logger_handle) = RequestLogger::start(
            store.clone(),
            ledger.request_log_sink(),
            Duration::from_millis(settings.log_flush_ms),
        );
        let limiter = Limiter::default();
        let now = ledger.now_ms();
        match store
            .request_counts_since(now - now.rem_euclid(86_400_000))
            .await
        {
            Ok(counts) => limiter.seed_daily(now, &counts),
            Err(e) => tracing::warn!(error = %e, "could not restore daily request counts"),
        }
        let empty = Roster::build(
            &Sources {
                config: &settings.upstreams,
                mock_fallback: stand_in(&settings),
                records: &[],
                generation: -1,
                sealer: &sealer,
                policy: policy_of(&settings),
                http: &http,
                default_connect_ms: DEFAULT_CONNECT_MS,
            },
            None,
        );
        let gw = Arc::new(Self {
            settings,
            roster: RwLock::new(Arc::new(empty)),
            limiter,
            account_limiter: Limiter::default(),
            logger,
            daily_default,
            http,
            ledger,
            store,
            sealer,
            reloading: tokio::sync::Mutex::new(()),
            tracker: TaskTracker::new(),
        });
        if let Err(e) = gw.reload_channels().await {
            tracing::error!(error = %e, "could not read the stored channels; serving the configured upstreams");
        }
        Ok((
            gw,
            GatewayHandle {
                logger: logger_handle,
            },
        ))
    }

    /// The gateway's clock (the ledger's), in epoch ms.
    pub fn now_ms(&self) -> i64 {
        self.ledger.now_ms()
    }

    /// The upstreams in use now.
    pub fn roster(&self) -> Arc<Roster> {
        // Only ever replaced whole under the lock: a poisoned one still holds a snapshot.
        self.roster
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the stored channels and replaces the snapshot (upstream health carried over).
    pub async fn reload_channels(&self) -> StoreResult<()> {
        let _one = self.reloading.lock().await;
        let generation = self.store.upstream_generation().await?;
        let records = self.store.upstreams().await?;
        let previous = self.roster();
        let next = Roster::build(
            &Sources {
                config: &self.settings.upstreams,
                mock_fallback: stand_in(&self.settings),
                records: &records,
                generation,
                sealer: &self.sealer,
                policy: policy_of(&self.settings),
                http: &self.http,
                default_connect_ms: DEFAULT_CONNECT_MS,
            },
            Some(&previous),
        );
        *self.roster.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(())
    }

    /// Follows channel changes made by other instances: the generation is read every
    /// `every` and the channels reloaded when it moved.
    pub fn spawn_channel_follower(
        self: &Arc<Self>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(gw) = weak.upgrade() else { return };
                let seen = gw.roster().generation;
                match gw.store.upstream_generation().await {
                    Ok(g) if g != seen => {
                        if let Err(e) = gw.reload_channels().await {
                            tracing::warn!(error = %e, "could not reload the channels");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "channel generation unreadable"),
                }
            }
        })
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

/// The connect timeout of the shared client (an upstream with another gets its own).
const DEFAULT_CONNECT_MS: u64 = 5_000;

/// Whether the configured upstreams are only the stand-in mock (nothing configured).
pub(crate) fn stand_in(s: &GatewaySettings) -> bool {
    s.mock_fallback
        && s.upstreams
            .iter()
            .all(|u| u.kind == settings::UpstreamKind::Mock)
}

fn policy_of(s: &GatewaySettings) -> HealthPolicy {
    HealthPolicy {
        after: s.eject_after_failures,
        window_ms: s.eject_window_ms,
        cooldown_ms: s.eject_cooldown_ms,
    }
}

impl GatewayHandle {
    /// Flushes the request log; call after the gateway itself is dropped.
    pub async fn flushed(self) {
        self.logger.flushed().await;
    }
}
