//! Where the monitor reads: the gateway's own request log (`native`) or a New API / One API
//! database (`newapi`: SQLite file, MySQL/MariaDB or PostgreSQL), strictly read-only.
//! Queries are written once against normalised column expressions; the dialect supplies
//! the few things the three SQL flavours disagree on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Row};

use super::aggregates::NameOf;
use super::error::MonitorError;
use super::params::Range;
use super::rollup::data::Row as LogRow;
use crate::store::{RawRow, ReadOnlyConn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Mysql,
    Postgres,
}

impl Dialect {
    /// A 64-bit integer, whatever the engine's native result type (MySQL sums are DECIMAL,
    /// PostgreSQL sums of BIGINT are NUMERIC).
    pub fn int(self, e: &str) -> String {
        match self {
            Dialect::Mysql => format!("CAST({e} AS SIGNED)"),
            Dialect::Postgres | Dialect::Sqlite => format!("CAST({e} AS BIGINT)"),
        }
    }

    /// Integer division of non-negative integers.
    pub fn idiv(self, a: &str, b: i64) -> String {
        match self {
            Dialect::Mysql => format!("({a} DIV {b})"),
            Dialect::Postgres | Dialect::Sqlite => format!("({a} / {b})"),
        }
    }

    pub fn quote(self, ident: &str) -> String {
        match self {
            Dialect::Mysql => format!("`{ident}`"),
            Dialect::Postgres | Dialect::Sqlite => format!("\"{ident}\""),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Native,
    NewApi,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Native => "native",
            SourceKind::NewApi => "newapi",
        }
    }
}

/// Normalised column expressions over the log table.
#[derive(Debug, Clone)]
pub struct Columns {
    pub table: &'static str,
    /// Only billed calls count.
    pub base: &'static str,
    /// The time column as stored (seconds or milliseconds).
    pub ts: &'static str,
    pub ts_s: &'static str,
    pub user: &'static str,
    pub token: &'static str,
    pub model: &'static str,
    /// Integer channel id (newapi) or upstream name (native).
    pub channel: &'static str,
    pub tokens: &'static str,
    pub quota: &'static str,
    pub ip: &'static str,
    pub username: &'static str,
    pub token_name: &'static str,
}

const NEWAPI: Columns = Columns {
    table: "logs",
    base: "type = 2",
    ts: "created_at",
    ts_s: "created_at",
    user: "user_id",
    token: "token_id",
    model: "model_name",
    channel: "channel_id",
    tokens: "(prompt_tokens + completion_tokens)",
    quota: "quota",
    ip: "COALESCE(ip, '')",
    username: "username",
    token_name: "token_name",
};

const NATIVE: Columns = Columns {
    table: "request_log",
    base: "status >= 200 AND status < 300",
    ts: "ts",
    ts_s: "(ts / 1000)",
    user: "COALESCE(owner_user_id, 0)",
    token: "COALESCE(key_id, 0)",
    model: "COALESCE(model, '')",
    channel: "COALESCE(upstream, '')",
    tokens: "(prompt_tokens + completion_tokens)",
    quota: "cost",
    ip: "COALESCE(client_ip, '')",
    username: "owner_username",
    token_name: "key_name",
};

/// A pool of the source's own driver for the rollup's page reads. Decoding through `Any`
/// copies every row, with its list of columns, once more: a third of a first load's time
/// went there and into the allocator (perf, 4 M rows from MariaDB).
#[derive(Clone)]
enum Native {
    Mysql(sqlx::MySqlPool),
    Postgres(sqlx::PgPool),
    /// A SQLite file: the feed's pages straight from SQLite's columns (under load the feed
    /// reads every call's row once: through sqlx's row type and worker thread it cost ~6 %
    /// of the gateway's CPU); through the pool for an in-memory database.
    Sqlite(sqlx::SqlitePool, Option<Arc<RawFeed>>),
}

/// The feed's own read-only connection to a SQLite source, opened on its first page.
struct RawFeed {
    path: std::path::PathBuf,
    conn: std::sync::Mutex<Option<ReadOnlyConn>>,
}

impl RawFeed {
    /// The feed's rows of `sql`, on a blocking thread (SQLite's calls block).
    async fn log_rows(
        self: Arc<Self>,
        sql: String,
        text_channel: bool,
    ) -> Result<Vec<(bool, LogRow)>, MonitorError> {
        tokio::task::spawn_blocking(move || {
            let mut guard = self
                .conn
                .lock()
                .map_err(|_| MonitorError::Unavailable("monitor: feed connection lost".into()))?;
            let conn = match guard.as_mut() {
                Some(c) => c,
                None => guard.insert(
                    ReadOnlyConn::open(&self.path, 5_000)
                        .map_err(|e| MonitorError::Unavailable(e.to_string()))?,
                ),
            };
            conn.rows(&sql, |r| raw_log_row(r, text_channel))
                .map_err(|e| MonitorError::Unavailable(e.to_string()))
        })
        .await
        .map_err(|e| MonitorError::Unavailable(e.to_string()))?
    }
}

/// [`log_row`] for a raw SQLite row: the same columns, NULL read as 0 or "".
fn raw_log_row(r: &RawRow<'_>, text_channel: bool) -> (bool, LogRow) {
    let text = |i| r.column_opt_text(i).unwrap_or_default();
    let channel = if text_channel {
        text(6)
    } else {
        r.column_i64(6).to_string()
    };
    (
        r.column_i64(1) == 1,
        LogRow {
            id: r.column_i64(0),
            ts: r.column_i64(2),
            user: r.column_i64(3),
            token: r.column_i64(4),
            model: text(5),
            channel,
            tokens: r.column_i64(7),
            quota: r.column_i64(8),
            ip: text(9),
            username: text(10),
            token_name: text(11),
        },
    )
}

/// One log row as the rollup keeps it, from any driver's row of the feed's `SELECT`: id,
/// billed (1/0), time, user, key, model, channel (an id, or an upstream name as text), tokens,
/// quota, IP, user name, key name.
fn log_row<R>(r: &R, text_channel: bool) -> Result<(bool, LogRow), sqlx::Error>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let int = |i: usize| {
        r.try_get::<Option<i64>, _>(i)
            .map(Option::unwrap_or_default)
    };
    let text = |i: usize| {
        r.try_get::<Option<String>, _>(i)
            .map(Option::unwrap_or_default)
    };
    let channel = if text_channel {
        text(6)?
    } else {
        int(6)?.to_string()
    };
    Ok((
        int(1)? == 1,
        LogRow {
            id: int(0)?,
            ts: int(2)?,
            user: int(3)?,
            token: int(4)?,
            model: text(5)?,
            channel,
            tokens: int(7)?,
            quota: int(8)?,
            ip: text(9)?,
            username: text(10)?,
            token_name: text(11)?,
        },
    ))
}

fn log_rows<R>(rows: Vec<R>, text_channel: bool) -> Result<Vec<(bool, LogRow)>, MonitorError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    rows.iter()
        .map(|r| log_row(r, text_channel).map_err(MonitorError::from_sqlx))
        .collect()
}

#[derive(Clone)]
pub struct Source {
    pub kind: SourceKind,
    pub dialect: Dialect,
    pub cols: Columns,
    pool: AnyPool,
    native: Option<Native>,
    /// Which of `users`, `tokens`, `channels`, `options` exist (newapi).
    tables: std::collections::HashSet<String>,
    /// Quota per US dollar: New API's `QuotaPerUnit` (500 000 unless its `options` say
    /// otherwise); the native log in money mode in USD counts micros (1 000 000); `None` when
    /// quota is not dollars (points, or CNY: the dashboard shows the native cost in its own
    /// currency).
    pub quota_per_usd: Option<f64>,
    /// Native: upstream names in config order, for numeric channel ids.
    pub upstreams: Vec<String>,
}

fn dialect_of(url: &str) -> Result<Dialect, MonitorError> {
    if url.starts_with("sqlite:") {
        Ok(Dialect::Sqlite)
    } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
        Ok(Dialect::Mysql)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Dialect::Postgres)
    } else {
        Err(MonitorError::Config(format!(
            "unsupported DSN scheme: {}",
            url.split(':').next().unwrap_or("")
        )))
    }
}

/// A small pool of the dialect's own driver (lazy: nothing connects until the first page).
fn native_pool(dialect: Dialect, url: &str) -> Option<Native> {
    fn opts<DB: sqlx::Database>() -> sqlx::pool::PoolOptions<DB> {
        sqlx::pool::PoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
    }
    let made = match dialect {
        Dialect::Mysql => opts().connect_lazy(url).map(Native::Mysql),
        Dialect::Postgres => opts().connect_lazy(url).map(Native::Postgres),
        Dialect::Sqlite => opts().connect_lazy(url).map(|p| {
            let path = sqlite_path(url);
            let raw = (!path.is_empty() && !path.starts_with(":memory:")).then(|| {
                Arc::new(RawFeed {
                    path: path.into(),
                    conn: std::sync::Mutex::new(None),
                })
            });
            Native::Sqlite(p, raw)
        }),
    };
    match made {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "monitor: reading pages through the generic driver");
            None
        }
    }
}

/// The file of a `sqlite:` URL as [`normalise_dsn`] writes it.
fn sqlite_path(url: &str) -> &str {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    path.split('?').next().unwrap_or(path)
}

/// A SQLite path (or `sqlite:` URL) becomes a read-only URL; other DSNs pass through.
pub fn normalise_dsn(dsn: &str) -> String {
    let dsn = dsn.trim();
    if dsn.contains("://") && !dsn.starts_with("sqlite:") {
        return dsn.replacen("mariadb://", "mysql://", 1);
    }
    let path = dsn
        .strip_prefix("sqlite://")
        .or_else(|| dsn.strip_prefix("sqlite:"))
        .unwrap_or(dsn);
    let path = path.split('?').next().unwrap_or(path);
    format!("sqlite://{path}?mode=ro")
}

impl Source {
    pub async fn connect(
        kind: SourceKind,
        dsn: &str,
        upstreams: Vec<String>,
        ledger_currency: crate::billing::Currency,
    ) -> Result<Self, MonitorError> {
        sqlx::any::install_default_drivers();
        let url = normalise_dsn(dsn);
        let dialect = dialect_of(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy(&url)
            .map_err(|e| MonitorError::Config(format!("monitor DSN: {e}")))?;
        let cols = match kind {
            SourceKind::Native => NATIVE,
            SourceKind::NewApi => NEWAPI,
        };
        let native = native_pool(dialect, &url);
        let mut src = Self {
            kind,
            dialect,
            cols,
            pool,
            native,
            tables: Default::default(),
            quota_per_usd: match (kind, ledger_currency) {
                (SourceKind::NewApi, _) => Some(500_000.0),
                (SourceKind::Native, crate::billing::Currency::Usd) => {
                    Some(crate::billing::money::MICROS as f64)
                }
                (SourceKind::Native, _) => None,
            },
            upstreams,
        };
        if let Err(e) = src.discover().await {
            // The source may be down at start; /api/health says so, queries retry.
            tracing::warn!(error = %e, "monitor source not reachable yet");
        }
        Ok(src)
    }

    /// Finds the optional name tables and New API's quota unit.
    async fn discover(&mut self) -> Result<(), MonitorError> {
        if self.kind != SourceKind::NewApi {
            return Ok(());
        }
        let list = "'users', 'tokens', 'channels', 'options'";
        let sql = match self.dialect {
            Dialect::Sqlite => {
                format!("SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ({list})")
            }
            Dialect::Mysql => format!(
                "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name IN ({list})"
            ),
            Dialect::Postgres => format!(
                "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name IN ({list})"
            ),
        };
        let rows = self.fetch(&sql).await?;
        self.tables = rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>(0).ok())
            .collect();
        if self.tables.contains("options") {
            let sql = format!(
                "SELECT {v} FROM options WHERE {k} = 'QuotaPerUnit'",
                k = self.dialect.quote("key"),
                v = self.dialect.quote("value")
            );
            if let Ok(rows) = self.fetch(&sql).await
                && let Some(v) = rows.first().and_then(|r| r.try_get::<String, _>(0).ok())
                && let Ok(q) = v.trim().parse::<f64>()
                && q > 0.0
            {
                self.quota_per_usd = Some(q);
            }
        }
        Ok(())
    }

    pub fn has_table(&self, t: &str) -> bool {
        self.tables.contains(t)
    }

    pub async fn fetch(&self, sql: &str) -> Result<Vec<AnyRow>, MonitorError> {
        sqlx::query(AssertSqlSafe(sql.to_owned()))
            .fetch_all(&self.pool)
            .await
            .map_err(MonitorError::from_sqlx)
    }

    /// The rollup feed's rows (its `SELECT`), decoded by the source's own driver.
    pub async fn fetch_log_rows(&self, sql: &str) -> Result<Vec<(bool, LogRow)>, MonitorError> {
        let text_channel = self.kind == SourceKind::Native;
        let sql = AssertSqlSafe(sql.to_owned());
        match &self.native {
            Some(Native::Mysql(p)) => log_rows(
                sqlx::query(sql)
                    .fetch_all(p)
                    .await
                    .map_err(MonitorError::from_sqlx)?,
                text_channel,
            ),
            Some(Native::Postgres(p)) => log_rows(
                sqlx::query(sql)
                    .fetch_all(p)
                    .await
                    .map_err(MonitorError::from_sqlx)?,
                text_channel,
            ),
            Some(Native::Sqlite(_, Some(raw))) => raw.clone().log_rows(sql.0, text_channel).await,
            Some(Native::Sqlite(p, None)) => log_rows(
                sqlx::query(sql)
                    .fetch_all(p)
                    .await
                    .map_err(MonitorError::from_sqlx)?,
                text_channel,
            ),
            None => log_rows(self.fetch(&sql.0).await?, text_channel),
        }
    }

    pub async fn ping(&self) -> Result<(), MonitorError> {
        self.fetch("SELECT 1").await.map(|_| ())
    }

    /// Units of the stored time column per second.
    pub fn unit(&self) -> i64 {
        match self.kind {
            SourceKind::NewApi => 1,
            SourceKind::Native => 1000,
        }
    }

    /// The range in the stored time column's unit, `[lo, hi)`.
    pub fn bounds(&self, r: Range) -> (i64, i64) {
        match self.kind {
            SourceKind::NewApi => r.secs(),
            SourceKind::Native => (r.start_ms, r.end_ms),
        }
    }

    /// `base AND range` for this source.
    pub fn filter(&self, r: Range) -> String {
        let (lo, hi) = self.bounds(r);
        format!(
            "{b} AND {t} >= {lo} AND {t} < {hi}",
            b = self.cols.base,
            t = self.cols.ts
        )
    }

    pub fn usd(&self, quota: i64) -> Option<f64> {
        let v = quota as f64 / self.quota_per_usd?;
        Some((v * 1_000_000.0).round() / 1_000_000.0)
    }

    /// Names from New API's `users` / `tokens` tables, when they are reachable.
    pub async fn table_names(
        &self,
        which: NameOf,
        ids: &[i64],
    ) -> Result<HashMap<i64, String>, MonitorError> {
        let (table, name) = match which {
            NameOf::User => ("users", "username"),
            NameOf::Token => ("tokens", "name"),
        };
        if self.kind != SourceKind::NewApi || !self.has_table(table) || ids.is_empty() {
            return Ok(HashMap::new());
        }
        self.lookup(table, "id", name, ids).await
    }

    pub async fn channel_names(&self, ids: &[i64]) -> Result<HashMap<i64, String>, MonitorError> {
        if self.kind != SourceKind::NewApi || !self.has_table("channels") || ids.is_empty() {
            return Ok(HashMap::new());
        }
        self.lookup("channels", "id", "name", ids).await
    }

    async fn lookup(
        &self,
        table: &str,
        id: &str,
        name: &str,
        ids: &[i64],
    ) -> Result<HashMap<i64, String>, MonitorError> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(500) {
            let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
            let sql = format!(
                "SELECT {idc}, {name} FROM {table} WHERE {idc} IN ({})",
                list.join(","),
                idc = self.dialect.int(id),
            );
            for row in self.fetch(&sql).await? {
                let k: i64 = row.try_get(0).map_err(MonitorError::from_sqlx)?;
                if let Ok(Some(n)) = row.try_get::<Option<String>, _>(1) {
                    out.insert(k, n);
                }
            }
        }
        Ok(out)
    }

    /// The greatest name each id carries on its billed rows in the range.
    pub async fn log_names(
        &self,
        which: NameOf,
        ids: &[i64],
        r: Range,
    ) -> Result<HashMap<i64, String>, MonitorError> {
        let (log_id, log_name) = match which {
            NameOf::User => (self.cols.user, self.cols.username),
            NameOf::Token => (self.cols.token, self.cols.token_name),
        };
        let mut out = HashMap::new();
        for chunk in ids.chunks(500) {
            let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
            let sql = format!(
                "SELECT {id}, MAX({log_name}) FROM {t} WHERE {f} AND {log_id} IN ({}) GROUP BY {log_id}",
                list.join(","),
                id = self.dialect.int(log_id),
                t = self.cols.table,
                f = self.filter(r),
            );
            for row in self.fetch(&sql).await? {
                let k: i64 = row.try_get(0).map_err(MonitorError::from_sqlx)?;
                if let Ok(Some(n)) = row.try_get::<Option<String>, _>(1) {
                    out.insert(k, n);
                }
            }
        }
        Ok(out)
    }
}

/// Column `i` of a row as an integer; NULL reads as 0.
pub fn int_at(row: &AnyRow, i: usize) -> Result<i64, MonitorError> {
    row.try_get::<Option<i64>, _>(i)
        .map(|v| v.unwrap_or(0))
        .map_err(MonitorError::from_sqlx)
}

/// Column `i` of a row as text; NULL reads as ''.
pub fn text_at(row: &AnyRow, i: usize) -> Result<String, MonitorError> {
    row.try_get::<Option<String>, _>(i)
        .map(|v| v.unwrap_or_default())
        .map_err(MonitorError::from_sqlx)
}
