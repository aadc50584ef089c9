//! Key holders' requests for more quota: filed (one pending per key), listed, decided once.

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Executor};

use super::keys::insert_audit_tx;
use super::{Binds, Dialect, Reads, SqlStore};
use crate::store::error::StoreResult;
use crate::store::traits::QuotaRequestStore;
use crate::store::types::{AuditRecord, QuotaRequestRecord};

const COLUMNS: &str = "id, key_id, user_id, amount, reason, status, created_ms, decided_ms, \
    decided_by, granted, note";

#[async_trait]
impl<DB> QuotaRequestStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: Binds<DB>,
    Option<i64>: Binds<DB>,
    String: Binds<DB>,
    Option<String>: Binds<DB>,
    QuotaRequestRecord: Reads<DB>,
    (i64,): Reads<DB>,
{
    async fn insert_quota_request(
        &self,
        r: &QuotaRequestRecord,
        audit: &AuditRecord,
    ) -> StoreResult<Option<i64>> {
        let mut tx = self.begin_write().await?;
        let pending: Option<(i64,)> = sqlx::query_as(
            "SELECT id FROM quota_requests WHERE key_id = $1 AND status = 'pending' LIMIT 1",
        )
        .bind(r.key_id)
        .fetch_optional(&mut *tx)
        .await?;
        if pending.is_some() {
            return Ok(None);
        }
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO quota_requests (key_id, user_id, amount, reason, status, created_ms) \
             VALUES ($1, $2, $3, $4, 'pending', $5) RETURNING id",
        )
        .bind(r.key_id)
        .bind(r.user_id)
        .bind(r.amount)
        .bind(r.reason.clone())
        .bind(r.created_ms)
        .fetch_one(&mut *tx)
        .await?;
        let mut a = audit.clone();
        a.target = Some(format!("quota_request:{id}"));
        insert_audit_tx(&mut tx, &a).await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    async fn quota_requests(
        &self,
        status: Option<&str>,
        key_id: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<QuotaRequestRecord>> {
        Ok(sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM quota_requests \
             WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR key_id = $2) \
             ORDER BY id DESC LIMIT $3"
        )))
        .bind(status.map(str::to_owned))
        .bind(key_id)
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
    }

    async fn quota_request(&self, id: i64) -> StoreResult<Option<QuotaRequestRecord>> {
        Ok(sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM quota_requests WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.read)
        .await?)
    }

    async fn decide_quota_request(
        &self,
        to: &QuotaRequestRecord,
        audit: Option<&AuditRecord>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE quota_requests SET status = $2, decided_ms = $3, decided_by = $4, \
             granted = $5, note = $6 WHERE id = $1 AND status = 'pending'",
        )
        .bind(to.id)
        .bind(to.status.clone())
        .bind(to.decided_ms)
        .bind(to.decided_by.clone())
        .bind(to.granted)
        .bind(to.note.clone())
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&done) == 0 {
            return Ok(false);
        }
        if let Some(a) = audit {
            insert_audit_tx(&mut tx, a).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn reopen_quota_request(&self, id: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE quota_requests SET status = 'pending', decided_ms = NULL, decided_by = NULL, \
             granted = NULL, note = NULL WHERE id = $1",
        )
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(())
    }
}
