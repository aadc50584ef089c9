//! PostgreSQL store: the same tables as SQLite, shared by any number of instances. The
//! database is the authority: every consume is a conditional update, key edits announce
//! themselves with `NOTIFY` so every instance reloads the key at once.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgQueryResult};
use sqlx::{PgConnection, Postgres};
use tokio::sync::mpsc;

use super::error::StoreResult;
use super::postgres_writer::PgConsumeWriter;
use super::sql::{Dialect, SqlStore};
use super::traits::ConsumeWriter;
use super::types::KeyEvent;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel key edits are announced on; the payload is the key's id.
const KEY_CHANNEL: &str = "quota_proxy_keys";

#[derive(Debug, Clone, Copy)]
pub struct PgOptions {
    /// Connections for reads and admin writes (the ledger's writer has its own).
    pub pool_max: u32,
    /// How long a request waits for a connection (or a new one) before answering 503.
    pub acquire_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_max: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

pub type PgStore = SqlStore<Postgres>;

impl SqlStore<Postgres> {
    /// Connects and applies migrations (idempotent: several instances may start at once,
    /// the migrator takes an advisory lock).
    pub async fn open(url: &str, opts: PgOptions) -> StoreResult<Self> {
        let connect = PgConnectOptions::from_str(url)?.application_name("quota-proxy");
        let pool = PgPoolOptions::new()
            .max_connections(opts.pool_max.max(2))
            .min_connections(1)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(connect.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            read: pool.clone(),
            write: pool,
            connect,
        })
    }
}

#[async_trait]
impl Dialect for Postgres {
    const SHARED: bool = true;
    const BEGIN_WRITE: &'static str = "BEGIN";
    /// Well below PostgreSQL's 65 535: 1 000 request-log rows a statement.
    const SYNC_ACCOUNT_IDS: &'static str =
        "SELECT setval(pg_get_serial_sequence('accounts', 'id'), (SELECT MAX(id) FROM accounts))";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const MAX_BINDS: usize = 19_000;
    /// The shared request counters (`dailyRequests`, `rpm`) of a deleted key.
    const KEY_SIDE_TABLES: &'static [&'static str] = &["key_windows"];

    fn purge_batch_sql(table: &str, column: &str, batch: i64) -> String {
        format!(
            "DELETE FROM {table} WHERE ctid = ANY(ARRAY(\
             SELECT ctid FROM {table} WHERE {column} < $1 LIMIT {batch}))"
        )
    }

    fn rows_affected(r: &PgQueryResult) -> u64 {
        r.rows_affected()
    }

    /// Delivered to every listener when (and only if) the transaction commits.
    async fn key_changed(tx: &mut PgConnection, id: i64) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(KEY_CHANNEL)
            .bind(id.to_string())
            .execute(tx)
            .await?;
        Ok(())
    }

    fn key_events(connect: &PgConnectOptions) -> Option<mpsc::UnboundedReceiver<KeyEvent>> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(listen(connect.clone(), tx));
        Some(rx)
    }

    async fn consume_writer(connect: &PgConnectOptions) -> StoreResult<Box<dyn ConsumeWriter>> {
        Ok(Box::new(PgConsumeWriter::connect(connect).await?))
    }
}

/// Listens for key edits until the receiver is dropped. After any loss of the connection
/// (edits may have been missed meanwhile) it says so, and the ledger reloads every key.
async fn listen(connect: PgConnectOptions, tx: mpsc::UnboundedSender<KeyEvent>) {
    loop {
        let attempt = async {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy_with(connect.clone());
            let mut l = PgListener::connect_with(&pool).await?;
            l.ignore_pool_close_event(true);
            l.listen(KEY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = match attempt.await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "key change listener: cannot connect; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                if tx.is_closed() {
                    return;
                }
                continue;
            }
        };
        // Edits made before this connection listened are caught up by reading everything.
        if tx.send(KeyEvent::Resync).is_err() {
            return;
        }
        loop {
            // `try_recv` gives `None` when the connection was lost (it reconnects on the
            // next call): edits in between are unknown, so everything is reloaded.
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    if let Ok(id) = n.payload().parse::<i64>()
                        && tx.send(KeyEvent::Changed(id)).is_err()
                    {
                        return;
                    }
                }
                Ok(None) => {
                    if tx.send(KeyEvent::Resync).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "key change listener lost its connection");
                    break;
                }
            }
        }
    }
}
