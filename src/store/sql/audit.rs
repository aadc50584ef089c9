//! The audit log on its own.

use async_trait::async_trait;
use sqlx::Executor;

use super::keys::insert_audit_tx;
use super::{Binds, Dialect, Reads, SqlStore};
use crate::store::error::StoreResult;
use crate::store::rows::AuditDbRow;
use crate::store::traits::AuditStore;
use crate::store::types::{AuditEntry, AuditRecord};

#[async_trait]
impl<DB> AuditStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: Binds<DB>,
    Option<i64>: Binds<DB>,
    String: Binds<DB>,
    Option<String>: Binds<DB>,
    AuditDbRow: Reads<DB>,
    (i64,): Reads<DB>,
    (Option<i64>,): Reads<DB>,
    (i64, i64): Reads<DB>,
{
    async fn insert_audit(&self, audit: &AuditRecord) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        insert_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit(&self, limit: i64, offset: i64) -> StoreResult<(Vec<AuditEntry>, i64)> {
        let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit")
            .fetch_one(&self.read)
            .await?;
        let rows: Vec<AuditDbRow> = sqlx::query_as(
            "SELECT id, ts, action, target, key_id, token_hint, client_ip, details FROM audit \
             ORDER BY id DESC LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.read)
        .await?;
        Ok((rows.into_iter().map(Into::into).collect(), total))
    }

    async fn key_changes_since(&self, after_id: i64) -> StoreResult<Vec<(i64, i64)>> {
        Ok(sqlx::query_as(
            "SELECT id, key_id FROM audit WHERE id > $1 AND key_id IS NOT NULL ORDER BY id",
        )
        .bind(after_id)
        .fetch_all(&self.read)
        .await?)
    }

    async fn last_audit_id(&self) -> StoreResult<i64> {
        let (id,): (Option<i64>,) = sqlx::query_as("SELECT MAX(id) FROM audit")
            .fetch_one(&self.read)
            .await?;
        Ok(id.unwrap_or(0))
    }
}
