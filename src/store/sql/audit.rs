//! The audit log on its own.

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Executor};

use super::keys::insert_audit_tx;
use super::{Binds, Dialect, Reads, SqlStore};
use crate::store::error::StoreResult;
use crate::store::rows::AuditDbRow;
use crate::store::traits::AuditStore;
use crate::store::types::{AuditEntry, AuditFilter, AuditRecord};

/// `$1` exact action, `$2` action prefix of `$3` characters, `$4` target, `$5` key id,
/// `$6`–`$7` time range. Typed `CAST`s let PostgreSQL infer a parameter that may be NULL.
const AUDIT_FILTER: &str = "WHERE (CAST($1 AS TEXT) IS NULL OR action = $1) \
    AND (CAST($2 AS TEXT) IS NULL OR SUBSTR(action, 1, CAST($3 AS INTEGER)) = $2) \
    AND (CAST($4 AS TEXT) IS NULL OR target = $4) \
    AND (CAST($5 AS BIGINT) IS NULL OR key_id = $5) \
    AND ts >= $6 AND ts < $7";

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

    async fn audit(
        &self,
        filter: &AuditFilter,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<AuditEntry>, i64)> {
        // An action ending in `.` is a family: its prefix, matched without LIKE's wildcards.
        let (exact, prefix) = match filter.action.as_deref() {
            Some(a) if a.ends_with('.') => (None, Some(a.to_owned())),
            other => (other.map(str::to_owned), None),
        };
        let plen = prefix.as_ref().map_or(0, |p| p.len() as i64);
        // The filter's seven binds, the same for the count and the page.
        macro_rules! bind_filter {
            ($q:expr) => {
                $q.bind(exact.clone())
                    .bind(prefix.clone())
                    .bind(plen)
                    .bind(filter.target.clone())
                    .bind(filter.key_id)
                    .bind(filter.from_ms.unwrap_or(i64::MIN))
                    .bind(filter.to_ms.unwrap_or(i64::MAX))
            };
        }
        let count = format!("SELECT COUNT(*) FROM audit {AUDIT_FILTER}");
        let (total,): (i64,) = bind_filter!(sqlx::query_as(AssertSqlSafe(count)))
            .fetch_one(&self.read)
            .await?;
        let page = format!(
            "SELECT id, ts, action, target, key_id, token_hint, client_ip, details FROM audit \
             {AUDIT_FILTER} ORDER BY id DESC LIMIT $8 OFFSET $9"
        );
        let rows: Vec<AuditDbRow> = bind_filter!(sqlx::query_as(AssertSqlSafe(page)))
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
