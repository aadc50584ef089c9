//! What the ledger reads (idempotency records, history, per-period sums) and its writer.

use async_trait::async_trait;
use sqlx::Executor;

use super::{Binds, Dialect, Reads, SqlStore};
use crate::store::error::StoreResult;
use crate::store::rows::HistoryDbRow;
use crate::store::traits::{ConsumeWriter, LedgerStore};
use crate::store::types::{HistoryEntry, IdempotentResult};

#[async_trait]
impl<DB> LedgerStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: Binds<DB>,
    Option<i64>: Binds<DB>,
    String: Binds<DB>,
    Option<String>: Binds<DB>,
    HistoryDbRow: Reads<DB>,
    (i64,): Reads<DB>,
    (i64, i64): Reads<DB>,
    (i64, Option<i64>, Option<i64>, i64): Reads<DB>,
{
    async fn consume_writer(&self) -> StoreResult<Box<dyn ConsumeWriter>> {
        DB::consume_writer(&self.connect).await
    }

    async fn idempotent_result(
        &self,
        key_id: i64,
        idem_key: &str,
    ) -> StoreResult<Option<IdempotentResult>> {
        // On PostgreSQL a record whose consume is still being committed elsewhere is
        // invisible here (uncommitted); the writer settles that race.
        let row: Option<(i64, Option<i64>, Option<i64>, i64)> = sqlx::query_as(
            "SELECT amount_used, remaining, total_quota, item_count FROM idempotency \
             WHERE key_id = $1 AND idem_key = $2",
        )
        .bind(key_id)
        .bind(idem_key.to_owned())
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(
            |(amount_used, remaining, total_quota, count)| IdempotentResult {
                amount_used,
                remaining,
                total_quota,
                count,
            },
        ))
    }

    async fn history(
        &self,
        key_id: i64,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<HistoryEntry>, i64)> {
        let (total,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM usage_events WHERE key_id = $1")
                .bind(key_id)
                .fetch_one(&self.read)
                .await?;
        let rows: Vec<HistoryDbRow> = sqlx::query_as(
            "SELECT ts, amount, reason, remaining, metadata FROM usage_events \
             WHERE key_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
        )
        .bind(key_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.read)
        .await?;
        Ok((rows.into_iter().map(Into::into).collect(), total))
    }

    async fn period_used(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<(i64, i64)>> {
        // PostgreSQL sums BIGINT into NUMERIC: cast back.
        Ok(sqlx::query_as(
            "SELECT key_id, CAST(SUM(amount) AS BIGINT) FROM usage_events \
             WHERE ts >= $1 AND ts < $2 GROUP BY key_id",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.read)
        .await?)
    }
}
