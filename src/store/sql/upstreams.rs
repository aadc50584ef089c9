//! Channels added from the admin API, and the generation counter other instances follow.

use async_trait::async_trait;
use sqlx::{Executor, Transaction};

use super::keys::insert_audit_tx;
use super::{Binds, Dialect, Reads, SqlStore, bump_generation, read_generation};
use crate::store::error::StoreResult;
use crate::store::traits::UpstreamStore;
use crate::store::types::{AuditRecord, UpstreamRecord, UpstreamWrite, UpstreamWritten};

const COLUMNS: &str = "id, name, spec, secrets, key_state, enabled, created_ms, updated_ms";

/// The id of the channel named `name`, if any.
async fn named<DB>(tx: &mut Transaction<'_, DB>, name: &str) -> StoreResult<Option<i64>>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    String: Binds<DB>,
    (i64,): Reads<DB>,
{
    let row: Option<(i64,)> = sqlx::query_as("SELECT id FROM upstreams WHERE name = $1")
        .bind(name.to_owned())
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.map(|(id,)| id))
}

#[async_trait]
impl<DB> UpstreamStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: Binds<DB>,
    bool: Binds<DB>,
    String: Binds<DB>,
    Option<i64>: Binds<DB>,
    Option<String>: Binds<DB>,
    UpstreamRecord: Reads<DB>,
    (i64,): Reads<DB>,
{
    async fn upstreams(&self) -> StoreResult<Vec<UpstreamRecord>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM upstreams ORDER BY id"
        )))
        .fetch_all(&self.read)
        .await?)
    }

    async fn upstream_generation(&self) -> StoreResult<i64> {
        read_generation(&self.read, "upstreams").await
    }

    async fn insert_upstream(
        &self,
        u: &UpstreamWrite,
        audit: &AuditRecord,
    ) -> StoreResult<UpstreamWritten> {
        let mut tx = self.begin_write().await?;
        if named(&mut tx, &u.name).await?.is_some() {
            return Ok(UpstreamWritten::NameTaken);
        }
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO upstreams (name, spec, secrets, key_state, enabled, created_ms, \
             updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id",
        )
        .bind(u.name.clone())
        .bind(u.spec.clone())
        .bind(u.secrets.clone())
        .bind(u.key_state.clone())
        .bind(u.enabled)
        .bind(u.now_ms)
        .fetch_one(&mut *tx)
        .await?;
        let mut audit = audit.clone();
        audit.target = Some(format!("upstream:{id}"));
        insert_audit_tx(&mut tx, &audit).await?;
        bump_generation(&mut tx, "upstreams").await?;
        tx.commit().await?;
        Ok(UpstreamWritten::Done(id))
    }

    async fn update_upstream(
        &self,
        id: i64,
        u: &UpstreamWrite,
        audit: &AuditRecord,
    ) -> StoreResult<UpstreamWritten> {
        let mut tx = self.begin_write().await?;
        if named(&mut tx, &u.name)
            .await?
            .is_some_and(|other| other != id)
        {
            return Ok(UpstreamWritten::NameTaken);
        }
        let done = sqlx::query(
            "UPDATE upstreams SET name = $1, spec = $2, secrets = $3, key_state = $4, \
             enabled = $5, updated_ms = $6 WHERE id = $7",
        )
        .bind(u.name.clone())
        .bind(u.spec.clone())
        .bind(u.secrets.clone())
        .bind(u.key_state.clone())
        .bind(u.enabled)
        .bind(u.now_ms)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&done) == 0 {
            return Ok(UpstreamWritten::NotFound);
        }
        insert_audit_tx(&mut tx, audit).await?;
        bump_generation(&mut tx, "upstreams").await?;
        tx.commit().await?;
        Ok(UpstreamWritten::Done(id))
    }

    async fn delete_upstream(&self, id: i64, audit: &AuditRecord) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM upstreams WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&done) == 0 {
            return Ok(false);
        }
        insert_audit_tx(&mut tx, audit).await?;
        bump_generation(&mut tx, "upstreams").await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn set_upstream_key_state(
        &self,
        id: i64,
        secrets: &str,
        key_state: &str,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE upstreams SET key_state = $1, updated_ms = $2 WHERE id = $3 AND secrets = $4",
        )
        .bind(key_state.to_owned())
        .bind(now_ms)
        .bind(id)
        .bind(secrets.to_owned())
        .execute(&mut *tx)
        .await?;
        let changed = DB::rows_affected(&done) > 0;
        if changed {
            bump_generation(&mut tx, "upstreams").await?;
        }
        tx.commit().await?;
        Ok(changed)
    }
}
