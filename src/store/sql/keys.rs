//! Keys and the audit rows their edits write, in the same transaction.

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Executor, QueryBuilder, Transaction};

use super::{Binds, Dialect, Reads, SqlStore};
use crate::keys::{KeyHash, KeyRecord};
use crate::store::error::StoreResult;
use crate::store::rows::{KEY_COLUMNS, KeyRow, json_text};
use crate::store::traits::KeyStore;
use crate::store::types::{AuditRecord, KeyPatch, NewKey};

/// Writes the audit row and, when it names a key, lets the backend announce the change
/// (delivered to other instances when, and only if, the transaction commits).
pub(super) async fn insert_audit_tx<DB>(
    tx: &mut Transaction<'_, DB>,
    a: &AuditRecord,
) -> StoreResult<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: Binds<DB>,
    Option<i64>: Binds<DB>,
    String: Binds<DB>,
    Option<String>: Binds<DB>,
{
    sqlx::query(
        "INSERT INTO audit (ts, action, target, key_id, token_hint, client_ip, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(a.ts)
    .bind(a.action.clone())
    .bind(a.target.clone())
    .bind(a.key_id)
    .bind(a.token_hint.clone())
    .bind(a.client_ip.clone())
    .bind(a.details.as_ref().map(json_text))
    .execute(&mut **tx)
    .await?;
    if let Some(id) = a.key_id {
        DB::key_changed(&mut **tx, id).await?;
    }
    Ok(())
}

/// A quota or `used` changed by an operator, in the key's usage history (amount 0): the
/// holder sees why their balance moved, next to what they consumed.
async fn admin_history_row<DB>(
    tx: &mut Transaction<'_, DB>,
    before: &KeyRecord,
    after: &KeyRecord,
    audit: &AuditRecord,
) -> StoreResult<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: Binds<DB>,
    Option<i64>: Binds<DB>,
    Option<String>: Binds<DB>,
{
    let mut m = serde_json::Map::new();
    m.insert("admin".into(), true.into());
    if before.quota != after.quota {
        m.insert(
            "quota".into(),
            serde_json::json!({"from": before.quota, "to": after.quota}),
        );
    }
    if before.used != after.used {
        m.insert(
            "used".into(),
            serde_json::json!({"from": before.used, "to": after.used}),
        );
    }
    if let Some(h) = &audit.token_hint {
        m.insert("by".into(), h.clone().into());
    }
    sqlx::query(
        "INSERT INTO usage_events (key_id, ts, amount, reason, remaining, metadata) \
         VALUES ($1, $2, 0, $3, $4, $5)",
    )
    .bind(after.id)
    .bind(audit.ts)
    .bind(Some(audit.action.clone()))
    .bind(after.quota.map(|q| (q - after.used).max(0)))
    .bind(serde_json::to_string(&m).ok())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn key_in_tx<DB>(tx: &mut Transaction<'_, DB>, id: i64) -> StoreResult<Option<KeyRecord>>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: Binds<DB>,
    Option<i64>: Binds<DB>,
    KeyRow: Reads<DB>,
{
    let row: Option<KeyRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM keys WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(Into::into))
}

/// The `UPDATE` a patch makes: only the fields it sets.
fn patch_statement<DB>(id: i64, patch: &KeyPatch) -> QueryBuilder<DB>
where
    DB: Dialect,
    i64: Binds<DB>,
    Option<i64>: Binds<DB>,
    bool: Binds<DB>,
    String: Binds<DB>,
    Option<String>: Binds<DB>,
    Vec<u8>: Binds<DB>,
{
    let mut qb: QueryBuilder<DB> = QueryBuilder::new("UPDATE keys SET id = id");
    if let Some(v) = &patch.name {
        qb.push(", name = ").push_bind(v.clone());
    }
    if let Some(v) = patch.quota {
        qb.push(", quota = ").push_bind(v);
    }
    if let Some((add, cap)) = patch.quota_add {
        qb.push(", quota = CASE WHEN quota > ")
            .push_bind(cap)
            .push(" - ")
            .push_bind(add)
            .push(" THEN ")
            .push_bind(cap)
            .push(" ELSE quota + ")
            .push_bind(add)
            .push(" END");
    }
    if let Some(v) = patch.used {
        qb.push(", used = ").push_bind(v);
    }
    if let Some(v) = patch.expires_at {
        qb.push(", expires_at = ").push_bind(v);
    }
    if let Some(v) = patch.enabled {
        qb.push(", enabled = ").push_bind(v);
    }
    if let Some(v) = &patch.metadata {
        qb.push(", metadata = ").push_bind(json_text(v));
    }
    if let Some(owner) = &patch.owner {
        qb.push(", owner_user_id = ")
            .push_bind(owner.as_ref().and_then(|o| o.user_id));
        qb.push(", owner_username = ")
            .push_bind(owner.as_ref().and_then(|o| o.username.clone()));
    }
    if let Some(v) = &patch.limits {
        qb.push(", limits = ").push_bind(json_text(v));
    }
    if let Some(refill) = patch.refill {
        qb.push(", refill_interval = ")
            .push_bind(refill.map(|r| r.interval.as_str().to_owned()));
        qb.push(", refill_amount = ")
            .push_bind(refill.map(|r| r.amount));
    }
    if let Some(v) = patch.refill_period {
        qb.push(", refill_period = ").push_bind(v);
    }
    if let Some((hash, hint)) = &patch.new_secret {
        qb.push(", key_hash = ").push_bind(hash.to_vec());
        qb.push(", hint = ").push_bind(hint.clone());
    }
    qb.push(" WHERE id = ").push_bind(id);
    qb
}

#[async_trait]
impl<DB> KeyStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: Binds<DB>,
    Option<i64>: Binds<DB>,
    bool: Binds<DB>,
    String: Binds<DB>,
    Option<String>: Binds<DB>,
    Vec<u8>: Binds<DB>,
    KeyRow: Reads<DB>,
    (i64,): Reads<DB>,
{
    async fn load_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        let rows: Vec<KeyRow> =
            sqlx::query_as(AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM keys")))
                .fetch_all(&self.read)
                .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn key_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyRecord>> {
        let row: Option<KeyRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE key_hash = $1"
        )))
        .bind(hash.to_vec())
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(Into::into))
    }

    async fn key_by_id(&self, id: i64) -> StoreResult<Option<KeyRecord>> {
        let row: Option<KeyRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(Into::into))
    }

    async fn insert_keys(
        &self,
        keys: &[NewKey],
        audit: &AuditRecord,
    ) -> StoreResult<Vec<KeyRecord>> {
        let mut tx = self.begin_write().await?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO keys (key_hash, hint, name, prefix, quota, used, expires_at, \
                 created_at, enabled, metadata, owner_user_id, owner_username, limits, \
                 refill_interval, refill_amount, refill_period) \
                 VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                 RETURNING id",
            )
            .bind(k.hash.to_vec())
            .bind(k.hint.clone())
            .bind(k.name.clone())
            .bind(k.prefix.clone())
            .bind(k.quota)
            .bind(k.expires_at)
            .bind(k.created_at)
            .bind(true)
            .bind(json_text(&k.metadata))
            .bind(k.owner.as_ref().and_then(|o| o.user_id))
            .bind(k.owner.as_ref().and_then(|o| o.username.clone()))
            .bind(json_text(&k.limits))
            .bind(k.refill.map(|r| r.interval.as_str().to_owned()))
            .bind(k.refill.map(|r| r.amount))
            .bind(k.refill_period)
            .fetch_one(&mut *tx)
            .await?;
            let mut a = audit.clone();
            a.key_id = Some(id);
            a.target = Some(id.to_string());
            insert_audit_tx(&mut tx, &a).await?;
            if let Some(rec) = key_in_tx(&mut tx, id).await? {
                out.push(rec);
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn update_key(
        &self,
        id: i64,
        patch: &KeyPatch,
        audit: &AuditRecord,
    ) -> StoreResult<Option<KeyRecord>> {
        let mut tx = self.begin_write().await?;
        let before = key_in_tx(&mut tx, id).await?;
        let mut update = patch_statement::<DB>(id, patch);
        let done = update.build().execute(&mut *tx).await?;
        if DB::rows_affected(&done) == 0 {
            return Ok(None);
        }
        let mut a = audit.clone();
        a.key_id = a.key_id.or(Some(id));
        insert_audit_tx(&mut tx, &a).await?;
        let rec = key_in_tx(&mut tx, id).await?;
        if let (Some(b), Some(r)) = (&before, &rec)
            && (b.quota != r.quota || b.used != r.used)
        {
            admin_history_row(&mut tx, b, r, &a).await?;
        }
        tx.commit().await?;
        Ok(rec)
    }

    async fn delete_key(&self, id: i64, audit: &AuditRecord) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM keys WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&done) == 0 {
            return Ok(false);
        }
        let mut a = audit.clone();
        a.key_id = a.key_id.or(Some(id));
        insert_audit_tx(&mut tx, &a).await?;
        sqlx::query("DELETE FROM holds WHERE key_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for table in DB::KEY_SIDE_TABLES {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE key_id = $1"
            )))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}
