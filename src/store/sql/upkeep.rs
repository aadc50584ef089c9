//! The database as a whole: liveness, sharing, change announcements, retention.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Executor};
use tokio::sync::mpsc;

use super::{Binds, Dialect, SqlStore};
use crate::store::error::StoreResult;
use crate::store::traits::Upkeep;
use crate::store::types::{KeyEvent, PurgeCutoffs};

/// Rows a purge deletes per transaction.
const PURGE_BATCH: i64 = 2000;

#[async_trait]
impl<DB> Upkeep for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: Binds<DB>,
    Option<i64>: Binds<DB>,
{
    fn shared(&self) -> bool {
        DB::SHARED
    }

    fn key_events(&self) -> Option<mpsc::UnboundedReceiver<KeyEvent>> {
        DB::key_events(&self.connect)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    async fn purge(&self, cutoffs: &PurgeCutoffs) -> StoreResult<u64> {
        // Small batches, each its own short transaction, with a pause between them: the
        // ledger's writer gets the write lock between any two, so a large purge never makes a
        // consume wait for long.
        let jobs: [(&str, &str, Option<i64>); 6] = [
            ("request_log", "ts", cutoffs.request_log),
            ("usage_events", "ts", cutoffs.usage_events),
            ("idempotency", "created_at", cutoffs.idempotency),
            ("audit", "ts", cutoffs.audit),
            ("alerts", "ts", cutoffs.alerts),
            ("alert_cooldowns", "until_ms", cutoffs.cooldowns),
        ];
        let mut total = 0u64;
        for (table, column, before) in jobs {
            let Some(before) = before else { continue };
            let sql = DB::purge_batch_sql(table, column, PURGE_BATCH);
            loop {
                let done = sqlx::query(AssertSqlSafe(sql.clone()))
                    .bind(before)
                    .execute(&self.write)
                    .await?;
                let n = DB::rows_affected(&done);
                total += n;
                if n < PURGE_BATCH as u64 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        // Deliveries of alerts that are gone.
        let done = sqlx::query(
            "DELETE FROM alert_deliveries WHERE NOT EXISTS \
             (SELECT 1 FROM alerts WHERE alerts.id = alert_deliveries.alert_id)",
        )
        .execute(&self.write)
        .await?;
        total += DB::rows_affected(&done);
        Ok(total)
    }
}
