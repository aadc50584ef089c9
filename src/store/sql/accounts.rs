//! Users and teams: their records, the generation counter every instance follows them by,
//! and a user's name copied onto its keys (the request log and the monitor read it there).

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Executor, Transaction};

use super::keys::insert_audit_tx;
use super::{Binds, Dialect, Reads, SqlStore, bump_generation, read_generation};
use crate::accounts::{Account, Scope};
use crate::keys::KeyRecord;
use crate::store::error::StoreResult;
use crate::store::rows::{ACCOUNT_COLUMNS, AccountRow, KEY_COLUMNS, KeyRow, json_text};
use crate::store::traits::AccountStore;
use crate::store::types::{AccountWrite, AccountWritten, AuditRecord};

/// Whether another account of the same kind has `name`.
async fn name_taken<DB>(tx: &mut Transaction<'_, DB>, a: &Account) -> StoreResult<bool>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: Binds<DB>,
    String: Binds<DB>,
    (i64,): Reads<DB>,
{
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT id FROM accounts WHERE kind = $1 AND name = $2 AND id <> $3")
            .bind(a.scope.as_str().to_owned())
            .bind(a.name.clone())
            .bind(a.id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(row.is_some())
}

async fn read_in<DB>(tx: &mut Transaction<'_, DB>, id: i64) -> StoreResult<Option<Account>>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: Binds<DB>,
    AccountRow: Reads<DB>,
{
    let row: Option<AccountRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(Into::into))
}

fn refill_parts(a: &Account) -> (Option<String>, Option<i64>) {
    match a.refill {
        Some(r) => (Some(r.interval.as_str().to_owned()), Some(r.amount)),
        None => (None, None),
    }
}

#[async_trait]
impl<DB> AccountStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: Binds<DB>,
    bool: Binds<DB>,
    String: Binds<DB>,
    Option<i64>: Binds<DB>,
    Option<String>: Binds<DB>,
    AccountRow: Reads<DB>,
    KeyRow: Reads<DB>,
    (i64,): Reads<DB>,
    (i64, i64): Reads<DB>,
{
    async fn accounts(&self) -> StoreResult<Vec<Account>> {
        let rows: Vec<AccountRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id"
        )))
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn account(&self, id: i64) -> StoreResult<Option<Account>> {
        let row: Option<AccountRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(Into::into))
    }

    async fn account_generation(&self) -> StoreResult<i64> {
        read_generation(&self.read, "accounts").await
    }

    async fn insert_account(
        &self,
        w: &AccountWrite,
        audit: &AuditRecord,
    ) -> StoreResult<AccountWritten> {
        let a = &w.account;
        let mut tx = self.begin_write().await?;
        if name_taken(&mut tx, a).await? || (a.id > 0 && read_in(&mut tx, a.id).await?.is_some()) {
            return Ok(AccountWritten::NameTaken);
        }
        let (interval, amount) = refill_parts(a);
        // An id of its own (an owner id kept) or one the table gives (PostgreSQL's default
        // applies only when the column is left out).
        let (id_col, id_val) = if a.id > 0 {
            ("id, ", "$14, ")
        } else {
            ("", "")
        };
        let mut insert = sqlx::query_as(AssertSqlSafe(format!(
            "INSERT INTO accounts ({id_col}kind, name, contact, team_id, enabled, metadata, \
             quota, used, refill_interval, refill_amount, refill_period, limits, show_keys, \
             created_at) VALUES ({id_val}$1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11, $12, \
             $13) RETURNING id"
        )))
        .bind(a.scope.as_str().to_owned())
        .bind(a.name.clone())
        .bind(a.contact.clone())
        .bind(a.team_id)
        .bind(a.enabled)
        .bind(json_text(&a.metadata))
        .bind(a.quota)
        .bind(interval)
        .bind(amount)
        .bind(a.refill_period)
        .bind(json_text(&a.limits))
        .bind(a.show_keys)
        .bind(a.created_at);
        if a.id > 0 {
            insert = insert.bind(a.id);
        }
        let (id,): (i64,) = insert.fetch_one(&mut *tx).await?;
        if a.id > 0 && !DB::SYNC_ACCOUNT_IDS.is_empty() {
            sqlx::query(DB::SYNC_ACCOUNT_IDS).execute(&mut *tx).await?;
        }
        let mut audit = audit.clone();
        audit.target = Some(format!("{}:{id}", a.scope.as_str()));
        insert_audit_tx(&mut tx, &audit).await?;
        bump_generation(&mut tx, "accounts").await?;
        let out = read_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(out.map_or(AccountWritten::NotFound, |a| {
            AccountWritten::Done(Box::new(a))
        }))
    }

    async fn update_account(
        &self,
        w: &AccountWrite,
        audit: &AuditRecord,
    ) -> StoreResult<AccountWritten> {
        let a = &w.account;
        let mut tx = self.begin_write().await?;
        let Some(before) = read_in(&mut tx, a.id).await? else {
            return Ok(AccountWritten::NotFound);
        };
        if name_taken(&mut tx, a).await? {
            return Ok(AccountWritten::NameTaken);
        }
        // Keys before the account, as the ledger's writer locks them: two transactions never
        // wait on each other in a cycle (PostgreSQL).
        if before.name != a.name && a.scope == Scope::User {
            // In id order, as the writer takes them.
            sqlx::query(AssertSqlSafe(format!(
                "SELECT id FROM keys WHERE owner_user_id = $1 ORDER BY id{}",
                DB::FOR_UPDATE
            )))
            .bind(a.id)
            .execute(&mut *tx)
            .await?;
            let keys: Vec<(i64,)> = sqlx::query_as(
                "UPDATE keys SET owner_username = $1 WHERE owner_user_id = $2 RETURNING id",
            )
            .bind(a.name.clone())
            .bind(a.id)
            .fetch_all(&mut *tx)
            .await?;
            for (key_id,) in keys {
                DB::key_changed(&mut tx, key_id).await?;
            }
        }
        let (interval, amount) = refill_parts(a);
        sqlx::query(
            "UPDATE accounts SET name = $2, contact = $3, team_id = $4, enabled = $5, \
             metadata = $6, limits = $7, show_keys = $8, refill_interval = $9, \
             refill_amount = $10, \
             quota = CASE WHEN $11 THEN $12 ELSE quota END, \
             refill_period = CASE WHEN $11 THEN $13 ELSE refill_period END, \
             used = CASE WHEN $14 THEN 0 ELSE used END WHERE id = $1",
        )
        .bind(a.id)
        .bind(a.name.clone())
        .bind(a.contact.clone())
        .bind(a.team_id)
        .bind(a.enabled)
        .bind(json_text(&a.metadata))
        .bind(json_text(&a.limits))
        .bind(a.show_keys)
        .bind(interval)
        .bind(amount)
        .bind(w.set_quota)
        .bind(a.quota)
        .bind(a.refill_period)
        .bind(w.reset_used)
        .execute(&mut *tx)
        .await?;
        insert_audit_tx(&mut tx, audit).await?;
        bump_generation(&mut tx, "accounts").await?;
        let out = read_in(&mut tx, a.id).await?;
        tx.commit().await?;
        Ok(out.map_or(AccountWritten::NotFound, |a| {
            AccountWritten::Done(Box::new(a))
        }))
    }

    async fn delete_account(&self, id: i64, audit: &AuditRecord) -> StoreResult<AccountWritten> {
        let mut tx = self.begin_write().await?;
        let Some(before) = read_in(&mut tx, id).await? else {
            return Ok(AccountWritten::NotFound);
        };
        let in_use = match before.scope {
            Scope::User => "SELECT id FROM keys WHERE owner_user_id = $1 LIMIT 1",
            Scope::Team => "SELECT id FROM accounts WHERE team_id = $1 LIMIT 1",
        };
        let used: Option<(i64,)> = sqlx::query_as(in_use)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if used.is_some() {
            return Ok(AccountWritten::InUse);
        }
        sqlx::query("DELETE FROM accounts WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        insert_audit_tx(&mut tx, audit).await?;
        bump_generation(&mut tx, "accounts").await?;
        tx.commit().await?;
        Ok(AccountWritten::Done(Box::new(before)))
    }

    async fn keys_of_user(&self, id: i64) -> StoreResult<Vec<KeyRecord>> {
        let rows: Vec<KeyRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE owner_user_id = $1 ORDER BY id"
        )))
        .bind(id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn account_daily_usage(
        &self,
        scope: Scope,
        id: i64,
        since_ms: i64,
    ) -> StoreResult<Vec<(i64, i64)>> {
        let owners = match scope {
            Scope::User => "k.owner_user_id = $1",
            Scope::Team => "k.owner_user_id IN (SELECT id FROM accounts WHERE team_id = $1)",
        };
        let rows: Vec<(i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT (e.ts / 86400000) * 86400000 AS day, CAST(SUM(e.amount) AS BIGINT) \
             FROM usage_events e JOIN keys k ON k.id = e.key_id \
             WHERE {owners} AND e.ts >= $2 GROUP BY day ORDER BY day"
        )))
        .bind(id)
        .bind(since_ms)
        .fetch_all(&self.read)
        .await?;
        Ok(rows)
    }
}
