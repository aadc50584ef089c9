//! SQLite store: WAL, one writer connection (so in-process writers queue instead of spinning
//! on SQLITE_BUSY), a small read pool, `busy_timeout` for other processes (the CLI).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use tokio::sync::mpsc;

use super::error::{StoreError, StoreResult};
use super::sql::{Dialect, SqlStore};
use super::sqlite_writer::SqliteConsumeWriter;
use super::traits::ConsumeWriter;
use super::types::KeyEvent;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub type SqliteStore = SqlStore<Sqlite>;

#[derive(Debug, Clone, Copy)]
pub struct SqliteOptions {
    /// `FULL` survives power loss; `NORMAL` survives a process crash only.
    pub synchronous_full: bool,
    /// How long a writer waits for another process's write lock before giving up (503).
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous_full: true,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

impl SqlStore<Sqlite> {
    /// Opens (creating when absent) the database file and applies migrations.
    pub async fn open(path: &Path, opts: SqliteOptions) -> StoreResult<Self> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("create {}: {e}", dir.display())))?;
        }
        let connect = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if opts.synchronous_full {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(opts.busy_timeout);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            // A storage fault can leave a connection inside a transaction whose ROLLBACK also
            // failed; handed out again, it would refuse every later write. Such a connection
            // is closed and a fresh one opened instead.
            .before_acquire(|conn, _| {
                Box::pin(async move {
                    use sqlx::Connection;
                    Ok(!conn.is_in_transaction())
                })
            })
            .connect_with(connect.clone())
            .await?;
        MIGRATOR.run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect.clone().read_only(true))
            .await?;
        Ok(Self {
            read,
            write,
            connect,
        })
    }
}

#[async_trait]
impl Dialect for Sqlite {
    const SHARED: bool = false;
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    /// Below `SQLITE_MAX_VARIABLE_NUMBER` (32 766 since 3.32): 500 request-log rows a statement.
    const SYNC_ACCOUNT_IDS: &'static str = "";
    const FOR_UPDATE: &'static str = "";
    const MAX_BINDS: usize = 9_500;
    const KEY_SIDE_TABLES: &'static [&'static str] = &[];

    fn purge_batch_sql(table: &str, column: &str, batch: i64) -> String {
        format!(
            "DELETE FROM {table} WHERE rowid IN \
             (SELECT rowid FROM {table} WHERE {column} < $1 LIMIT {batch})"
        )
    }

    fn rows_affected(r: &SqliteQueryResult) -> u64 {
        r.rows_affected()
    }

    /// Other processes' edits are followed through the audit table (`key_changes_since`).
    async fn key_changed(_tx: &mut sqlx::SqliteConnection, _id: i64) -> StoreResult<()> {
        Ok(())
    }

    fn key_events(_connect: &SqliteConnectOptions) -> Option<mpsc::UnboundedReceiver<KeyEvent>> {
        None
    }

    async fn consume_writer(connect: &SqliteConnectOptions) -> StoreResult<Box<dyn ConsumeWriter>> {
        Ok(Box::new(SqliteConsumeWriter::connect(connect).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::traits::{AlertStore, RequestLogStore};
    use crate::store::types::{RequestLogFilter, RequestLogRow, StatusFilter};

    /// `.cargo/config.toml` hands SQLite's build `HAVE_FDATASYNC`: each commit's WAL sync
    /// is then `fdatasync` (SQLite names no such option in `PRAGMA compile_options`, so the
    /// build's environment is what can be checked).
    #[test]
    fn sqlite_is_built_to_sync_its_wal_with_fdatasync() {
        let flags = option_env!("LIBSQLITE3_FLAGS").unwrap_or_default();
        assert!(
            flags.split_whitespace().any(|f| f == "-DHAVE_FDATASYNC=1"),
            "LIBSQLITE3_FLAGS={flags:?}"
        );
    }

    async fn store() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(
            &dir.path().join("s.db"),
            SqliteOptions {
                synchronous_full: false,
                busy_timeout: Duration::from_secs(2),
            },
        )
        .await
        .unwrap();
        (s, dir)
    }

    fn row(ts: i64, upstream: &str, status: i64, latency: i64, model: &str) -> RequestLogRow {
        RequestLogRow {
            ts,
            request_id: format!("r{ts}"),
            endpoint: "chat.completions".into(),
            upstream: Some(upstream.into()),
            model: Some(model.into()),
            status,
            latency_ms: latency,
            key_id: Some(if status < 400 { 1 } else { 2 }),
            ..Default::default()
        }
    }

    async fn key_with_quota(s: &SqliteStore, quota: i64) -> i64 {
        use crate::store::traits::KeyStore;
        let new = crate::store::types::NewKey {
            hash: crate::keys::format::hash_key("sk-test-ride"),
            hint: "sk-t...ride".into(),
            name: None,
            prefix: "sk-".into(),
            quota: Some(quota),
            expires_at: None,
            created_at: 1,
            metadata: Default::default(),
            owner: None,
            limits: Default::default(),
            refill: None,
            refill_period: None,
        };
        let audit = crate::store::types::AuditRecord {
            ts: 1,
            action: "key.create".into(),
            target: None,
            key_id: None,
            token_hint: None,
            client_ip: None,
            details: None,
        };
        s.insert_keys(&[new], &audit).await.unwrap()[0].id
    }

    /// A row with every column set (and text that must come back byte for byte).
    fn every_column(key: i64) -> RequestLogRow {
        RequestLogRow {
            ts: 5_000,
            request_id: "req-full".into(),
            key_id: Some(key),
            key_name: Some("名字 <b>".into()),
            owner_user_id: Some(7),
            owner_username: Some("alice".into()),
            endpoint: "messages".into(),
            model: Some("m".into()),
            upstream: Some("up".into()),
            prompt_tokens: 11,
            completion_tokens: 12,
            cached_tokens: 3,
            cache_write_tokens: 4,
            reasoning_tokens: 5,
            cost: 99,
            status: 200,
            error: Some("e".into()),
            latency_ms: 42,
            ttft_ms: Some(9),
            is_stream: true,
            estimated: true,
            client_ip: Some("203.0.113.9".into()),
            ..Default::default()
        }
    }

    /// Request-log rows ride in the ledger writer's transaction: every column is stored as
    /// given, and a commit that fails writes none of them.
    #[tokio::test]
    async fn request_log_rows_ride_in_the_writers_commit() {
        use crate::keys::refill::PeriodStarts;
        use crate::store::{ConsumeOp, HoldTag, LedgerStore, OpKind, UsageItem};
        let (s, _d) = store().await;
        let key = key_with_quota(&s, 1_000).await;
        let mut w = s.consume_writer().await.unwrap();
        assert!(w.carries_request_logs());
        let full = every_column(key);
        let hold = |id| ConsumeOp {
            items: vec![UsageItem {
                amount: 10,
                reason: None,
                metadata: None,
            }],
            hold: Some(HoldTag { id, instance: 1 }),
            ..ConsumeOp::new(key, OpKind::Hold)
        };
        let p = PeriodStarts::at(5_000);
        let out = w
            .commit_with_logs(
                &[hold(1)],
                &[full.clone(), row(5_001, "a", 502, 1, "m")],
                5_000,
                p,
            )
            .await
            .unwrap();
        assert!(out.results[0].is_ok());
        let (got, total) = s
            .request_logs(&RequestLogFilter::default(), 10, 0)
            .await
            .unwrap();
        assert_eq!(total, 2);
        let stored = got.iter().find(|r| r.request_id == "req-full").unwrap();
        assert_eq!(
            RequestLogRow {
                id: stored.id,
                ..full.clone()
            },
            *stored
        );
        // The same hold id again: the transaction fails, and its rows go with it.
        let failed = w
            .commit_with_logs(&[hold(1)], &[row(6_000, "b", 200, 1, "m")], 6_000, p)
            .await;
        assert!(failed.is_err());
        let (_, total) = s
            .request_logs(&RequestLogFilter::default(), 10, 0)
            .await
            .unwrap();
        assert_eq!(total, 2);
        // Rows alone commit too.
        w.commit_with_logs(&[], &[row(7_000, "c", 200, 1, "m")], 7_000, p)
            .await
            .unwrap();
        let (_, total) = s
            .request_logs(&RequestLogFilter::default(), 10, 0)
            .await
            .unwrap();
        assert_eq!(total, 3);
        w.close().await;
    }

    /// Many rows of one commit go in by statements of several rows each (32 + 8 + 4 + 1 here):
    /// every column of every row stored as given, ids in the order given.
    #[tokio::test]
    async fn many_request_log_rows_of_one_commit_are_stored_whole_and_in_order() {
        use crate::keys::refill::PeriodStarts;
        use crate::store::LedgerStore;
        let (s, _d) = store().await;
        let key = key_with_quota(&s, 1_000).await;
        let mut w = s.consume_writer().await.unwrap();
        let rows: Vec<RequestLogRow> = (0..45_i64)
            .map(|i| RequestLogRow {
                ts: 5_000 + i,
                request_id: format!("req-{i}"),
                prompt_tokens: i,
                error: (i % 2 == 0).then(|| format!("e{i}")),
                ttft_ms: (i % 3 == 0).then_some(i),
                ..every_column(key)
            })
            .collect();
        w.commit_with_logs(&[], &rows, 5_000, PeriodStarts::at(5_000))
            .await
            .unwrap();
        let (mut got, total) = s
            .request_logs(&RequestLogFilter::default(), 100, 0)
            .await
            .unwrap();
        assert_eq!(total, 45);
        got.sort_by_key(|r| r.id);
        for (stored, want) in got.iter().zip(&rows) {
            assert_eq!(
                *stored,
                RequestLogRow {
                    id: stored.id,
                    ..want.clone()
                }
            );
        }
        w.close().await;
    }

    /// Many idempotency records of one commit go in by statements of several rows each: each
    /// op's own record, and of a key given twice in the batch the first one's.
    #[tokio::test]
    async fn many_idempotency_records_of_one_commit_are_each_ops_own() {
        use crate::keys::refill::PeriodStarts;
        use crate::store::{ConsumeOp, LedgerStore, OpKind, UsageItem};
        let (s, _d) = store().await;
        let key = key_with_quota(&s, 100_000).await;
        let mut w = s.consume_writer().await.unwrap();
        let op = |i: i64, idem: String| ConsumeOp {
            items: vec![UsageItem {
                amount: i,
                reason: None,
                metadata: None,
            }],
            idempotency_key: Some(idem),
            ..ConsumeOp::new(key, OpKind::Consume)
        };
        let mut ops: Vec<ConsumeOp> = (1..=45_i64).map(|i| op(i, format!("idem-{i}"))).collect();
        ops.push(op(1_000, "idem-3".into()));
        let out = w
            .commit_with_logs(&ops, &[], 5_000, PeriodStarts::at(5_000))
            .await
            .unwrap();
        assert!(out.results.iter().all(Result::is_ok));
        for i in 1..=45_i64 {
            let r = s
                .idempotent_result(key, &format!("idem-{i}"))
                .await
                .unwrap()
                .unwrap();
            let used: i64 = (1..=i).sum();
            assert_eq!(
                (r.amount_used, r.remaining, r.total_quota, r.count),
                (i, Some(100_000 - used), Some(100_000), 1),
                "idem-{i}"
            );
        }
        w.close().await;
    }

    #[tokio::test]
    async fn upstream_stats_and_request_filters() {
        let (s, _d) = store().await;
        let mut rows: Vec<RequestLogRow> = (0..20)
            .map(|i| row(1000 + i, "a", 200, 10 * (i + 1), "m1"))
            .collect();
        rows.push(row(2000, "a", 502, 5, "m2"));
        rows.push(row(2001, "b", 500, 7, "m2"));
        rows.push(row(9000, "a", 200, 1, "m1"));
        s.insert_request_logs(&rows).await.unwrap();
        let st = s.upstream_stats(0, 5000).await.unwrap();
        assert_eq!(st.len(), 2);
        let a = &st[0];
        assert_eq!((a.upstream.as_str(), a.requests, a.errors), ("a", 21, 1));
        // Nearest-rank p95 of 5, 10, 20 … 200: the 20th of 21 values.
        assert_eq!(a.p95_latency_ms, 190);
        assert_eq!((st[1].requests, st[1].errors), (1, 1));

        let f = |key_id, model: Option<&str>, status| RequestLogFilter {
            key_id,
            model: model.map(str::to_owned),
            status,
            ..Default::default()
        };
        let count = |flt: RequestLogFilter| {
            let s = &s;
            async move { s.request_logs(&flt, 100, 0).await.unwrap().1 }
        };
        assert_eq!(count(f(None, None, None)).await, 23);
        assert_eq!(count(f(None, Some("m2"), None)).await, 2);
        assert_eq!(count(f(None, None, Some(StatusFilter::Error))).await, 2);
        assert_eq!(count(f(None, None, Some(StatusFilter::Ok))).await, 21);
        assert_eq!(
            count(f(None, None, Some(StatusFilter::Exact(502)))).await,
            1
        );
        assert_eq!(count(f(Some(2), Some("m2"), None)).await, 2);
        let (newest, _) = s.request_logs(&f(None, None, None), 1, 0).await.unwrap();
        assert_eq!(newest[0].ts, 9000, "newest first");
    }

    #[tokio::test]
    async fn cooldowns_are_claimed_once_until_they_expire() {
        let (s, _d) = store().await;
        let both: Vec<String> = vec!["token:1".into(), "token:2".into()];
        assert_eq!(
            s.claim_cooldowns("burst", &both, 0, 100).await.unwrap(),
            both
        );
        // Still cooling at 50: nothing to announce, for either subject.
        assert!(
            s.claim_cooldowns("burst", &both, 50, 150)
                .await
                .unwrap()
                .is_empty()
        );
        // Another rule has its own cooldowns.
        assert_eq!(
            s.claim_cooldowns("quota_low", &both[..1], 50, 300)
                .await
                .unwrap(),
            vec!["token:1"]
        );
        // At 100 both have ended: claimed again, until 300.
        assert_eq!(
            s.claim_cooldowns("burst", &both, 100, 300).await.unwrap(),
            both
        );
        assert!(
            s.claim_cooldowns("burst", &both, 299, 400)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn storage_fault_codes() {
        for code in ["5", "6", "10", "13", "8", "14", "1290", "3338", "517"] {
            assert!(super::super::is_storage_fault(code), "{code}");
        }
        for code in ["1", "19", "2067", "x"] {
            assert!(!super::super::is_storage_fault(code), "{code}");
        }
    }
}
