//! Invite codes: created, listed, revoked, and each use taken by one conditional update.

use async_trait::async_trait;
use sqlx::Executor;

use super::keys::insert_audit_tx;
use super::{Binds, Dialect, Reads, SqlStore};
use crate::store::error::StoreResult;
use crate::store::traits::InviteStore;
use crate::store::types::{AuditRecord, InviteClaim, InviteRecord};

const COLUMNS: &str = "id, code_hash, hint, spec, uses, used, valid_until, created_ms";

#[async_trait]
impl<DB> InviteStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: Binds<DB>,
    Option<i64>: Binds<DB>,
    String: Binds<DB>,
    Option<String>: Binds<DB>,
    Vec<u8>: Binds<DB>,
    InviteRecord: Reads<DB>,
    (i64,): Reads<DB>,
{
    async fn insert_invite(&self, i: &InviteRecord, audit: &AuditRecord) -> StoreResult<i64> {
        let mut tx = self.begin_write().await?;
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO invites (code_hash, hint, spec, uses, used, valid_until, created_ms) \
             VALUES ($1, $2, $3, $4, 0, $5, $6) RETURNING id",
        )
        .bind(i.code_hash.clone())
        .bind(i.hint.clone())
        .bind(i.spec.clone())
        .bind(i.uses)
        .bind(i.valid_until)
        .bind(i.created_ms)
        .fetch_one(&mut *tx)
        .await?;
        let mut a = audit.clone();
        a.target = Some(format!("invite:{id}"));
        insert_audit_tx(&mut tx, &a).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn invites(&self) -> StoreResult<Vec<InviteRecord>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM invites ORDER BY id DESC"
        )))
        .fetch_all(&self.read)
        .await?)
    }

    async fn invite(&self, id: i64) -> StoreResult<Option<InviteRecord>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM invites WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.read)
        .await?)
    }

    async fn invite_by_hash(&self, hash: &[u8]) -> StoreResult<Option<InviteRecord>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM invites WHERE code_hash = $1"
        )))
        .bind(hash.to_vec())
        .fetch_optional(&self.read)
        .await?)
    }

    async fn delete_invite(&self, id: i64, audit: &AuditRecord) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM invites WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&done) == 0 {
            return Ok(false);
        }
        insert_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn claim_invite(&self, hash: &[u8], now_ms: i64) -> StoreResult<InviteClaim> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE invites SET used = used + 1 WHERE code_hash = $1 AND used < uses \
             AND (valid_until IS NULL OR valid_until > $2)",
        )
        .bind(hash.to_vec())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let row: Option<InviteRecord> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM invites WHERE code_hash = $1"
        )))
        .bind(hash.to_vec())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(match row {
            None => InviteClaim::Unknown,
            Some(r) if DB::rows_affected(&done) > 0 => InviteClaim::Claimed(r),
            Some(r) if r.valid_until.is_some_and(|v| v <= now_ms) => InviteClaim::Expired,
            Some(_) => InviteClaim::Exhausted,
        })
    }

    async fn unclaim_invite(&self, id: i64) -> StoreResult<()> {
        sqlx::query("UPDATE invites SET used = used - 1 WHERE id = $1 AND used > 0")
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}
