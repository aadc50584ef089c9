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
    (i64, i64, i64, Option<String>, Option<String>): Reads<DB>,
    (Option<i64>, i64): Reads<DB>,
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

    async fn heartbeat(&self, instance: i64, wall_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO instances (id, seen_ms) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET seen_ms = excluded.seen_ms",
        )
        .bind(instance)
        .bind(wall_ms)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn recover_holds(
        &self,
        instance: i64,
        alive_after_ms: i64,
        now_ms: i64,
    ) -> StoreResult<u64> {
        // Read first, outside a write transaction: nearly always there is nothing to do.
        let orphans: Vec<(i64, i64, i64, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT h.id, h.key_id, h.amount, h.reason, h.metadata FROM holds h \
             WHERE h.instance <> $1 AND NOT EXISTS (SELECT 1 FROM instances i \
             WHERE i.id = h.instance AND i.seen_ms >= $2) ORDER BY h.id",
        )
        .bind(instance)
        .bind(alive_after_ms)
        .fetch_all(&self.read)
        .await?;
        if orphans.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let mut recovered = 0;
        for (id, key_id, amount, reason, metadata) in orphans {
            // Whoever deletes the record charges the call: the settlement (a server that
            // was only slow to beat) or this recovery, never both.
            let gone = sqlx::query("DELETE FROM holds WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if DB::rows_affected(&gone) == 0 {
                continue;
            }
            // The hold is already counted in the key's `used`: only its history row is due.
            let key: Option<(Option<i64>, i64)> =
                sqlx::query_as("SELECT quota, used FROM keys WHERE id = $1")
                    .bind(key_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some((quota, used)) = key else { continue };
            sqlx::query(
                "INSERT INTO usage_events (key_id, ts, amount, reason, remaining, metadata) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(key_id)
            .bind(now_ms)
            .bind(amount)
            .bind(reason)
            .bind(quota.map(|q| (q - used).max(0)))
            .bind(recovered_metadata(metadata.as_deref()))
            .execute(&mut *tx)
            .await?;
            recovered += 1;
        }
        sqlx::query("DELETE FROM instances WHERE seen_ms < $1")
            .bind(alive_after_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(recovered)
    }

    async fn retire(&self, instance: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(instance)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}

/// A recovered hold's history metadata: the call's own (model, request id…) marked as
/// charged at its hold by a recovery.
fn recovered_metadata(held: Option<&str>) -> Option<String> {
    let mut m: serde_json::Map<String, serde_json::Value> = held
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    m.insert("recovered".into(), serde_json::Value::Bool(true));
    serde_json::to_string(&m).ok()
}
