//! One SQL layer for both backends. Every query is written once, in `$1`-style placeholders
//! that SQLite and PostgreSQL both read, over the same tables (`migrations/{sqlite,postgres}`
//! differ in types only). What truly differs between the two is a `Dialect`: how a write
//! transaction starts, how many binds a statement may carry, how a batch of old rows is
//! addressed for deletion, and what happens around a key change (PostgreSQL announces it with
//! `NOTIFY`; SQLite is followed through the audit table). The ledger's two group-commit
//! writers stay separate (`sqlite_writer.rs`, `postgres_writer.rs`): their statements and
//! their locking differ on purpose.
//!
//! A new table: its migration in both folders, its row type in `store/rows.rs`, its records
//! in `store/types.rs`, a trait (or methods) in `store/traits.rs`, and its queries here, once.

mod accounts;
mod alerts;
mod audit;
mod invites;
mod keys;
mod ledger;
mod quota_requests;
mod request_log;
mod upkeep;
mod upstreams;

use async_trait::async_trait;
use sqlx::{Connection, Database, Decode, Encode, Pool, Transaction, Type};
use tokio::sync::mpsc;

use super::error::StoreResult;
use super::traits::ConsumeWriter;
use super::types::KeyEvent;

/// A value the shared queries bind (`i64: Binds<DB>` brings every `Encode` lifetime along,
/// which a plain where-clause would have to spell out at each use).
pub trait Binds<DB: Database>: for<'q> Encode<'q, DB> + Type<DB> + Send {}
impl<DB: Database, T> Binds<DB> for T where T: for<'q> Encode<'q, DB> + Type<DB> + Send {}

/// A value the shared queries decode.
pub trait Decodes<DB: Database>: for<'r> Decode<'r, DB> + Type<DB> + Send + Unpin {}
impl<DB: Database, T> Decodes<DB> for T where T: for<'r> Decode<'r, DB> + Type<DB> + Send + Unpin {}

/// A row type the shared queries decode into.
pub trait Reads<DB: Database>: for<'r> sqlx::FromRow<'r, DB::Row> + Send + Unpin {}
impl<DB: Database, T> Reads<DB> for T where T: for<'r> sqlx::FromRow<'r, DB::Row> + Send + Unpin {}

type ConnectOptions<DB> = <<DB as Database>::Connection as Connection>::Options;

/// What differs between the backends, and only that.
#[async_trait]
pub trait Dialect: Database<Arguments: sqlx::IntoArguments<Self>> + Sized {
    /// Whether other instances may write the same database.
    const SHARED: bool;
    /// How a transaction that writes begins. SQLite takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so two writers queue instead of failing on a lock upgrade.
    const BEGIN_WRITE: &'static str;
    /// Run after a row was inserted with an id of its own into `accounts`, so the ids the
    /// table gives later do not collide with it (empty where the table keeps track itself).
    const SYNC_ACCOUNT_IDS: &'static str;
    /// What a `SELECT` ends with to lock the rows it reads until the transaction ends
    /// (PostgreSQL; SQLite's write transaction already excludes every other writer).
    const FOR_UPDATE: &'static str;
    /// Binds one statement may carry (SQLite's variable limit is the smaller).
    const MAX_BINDS: usize;
    /// Tables holding per-key rows that go with the key (PostgreSQL's shared request
    /// counters; SQLite keeps those in memory).
    const KEY_SIDE_TABLES: &'static [&'static str];

    /// A `DELETE` of at most `batch` rows of `table` with `column < $1`. Neither backend
    /// takes `DELETE … LIMIT`; each addresses rows by its own physical id (`rowid`, `ctid`).
    fn purge_batch_sql(table: &str, column: &str, batch: i64) -> String;

    /// Rows an `INSERT`, `UPDATE` or `DELETE` touched (each driver reports it its own way).
    fn rows_affected(r: &Self::QueryResult) -> u64;

    /// Runs inside the transaction that wrote an audit row naming key `id`.
    async fn key_changed(tx: &mut Self::Connection, id: i64) -> StoreResult<()>;

    /// Announcements of key changes made by other processes, when the backend has them.
    fn key_events(connect: &ConnectOptions<Self>) -> Option<mpsc::UnboundedReceiver<KeyEvent>>;

    /// The ledger writer's committer.
    async fn consume_writer(connect: &ConnectOptions<Self>) -> StoreResult<Box<dyn ConsumeWriter>>;
}

/// A store on either backend: a pool for reads, one for writes (the same pool on
/// PostgreSQL; SQLite keeps one write connection so in-process writers queue instead of
/// spinning on `SQLITE_BUSY`), and the options to open the writer's own connection.
#[derive(Debug, Clone)]
pub struct SqlStore<DB: Database> {
    pub(super) read: Pool<DB>,
    pub(super) write: Pool<DB>,
    pub(super) connect: ConnectOptions<DB>,
}

impl<DB: Dialect> SqlStore<DB> {
    pub(crate) fn read_pool(&self) -> &Pool<DB> {
        &self.read
    }

    pub(crate) fn write_pool(&self) -> &Pool<DB> {
        &self.write
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    async fn begin_write(&self) -> StoreResult<Transaction<'static, DB>> {
        Ok(self.write.begin_with(DB::BEGIN_WRITE).await?)
    }
}

/// What a committed change of a family of rows (`upstreams`, `accounts`) bumps, in its own
/// transaction; every instance polls it to know when to reload that family.
pub(super) async fn bump_generation<DB>(tx: &mut Transaction<'_, DB>, name: &str) -> StoreResult<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    String: Binds<DB>,
{
    sqlx::query("UPDATE generations SET gen = gen + 1 WHERE name = $1")
        .bind(name.to_owned())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The generation of the family `name` as committed now.
pub(super) async fn read_generation<DB>(pool: &Pool<DB>, name: &str) -> StoreResult<i64>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    String: Binds<DB>,
    (i64,): Reads<DB>,
{
    let (generation,): (i64,) = sqlx::query_as("SELECT gen FROM generations WHERE name = $1")
        .bind(name.to_owned())
        .fetch_one(pool)
        .await?;
    Ok(generation)
}
