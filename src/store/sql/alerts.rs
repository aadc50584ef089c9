//! Alerts, their deliveries and cooldowns.

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Executor, QueryBuilder};

use super::{Binds, Dialect, Reads, SqlStore};
use crate::store::error::StoreResult;
use crate::store::rows::AlertDbRow;
use crate::store::traits::AlertStore;
use crate::store::types::{AlertFilter, AlertRow, DeliveryRecord, NewAlert};

const ALERT_FILTER: &str = "WHERE (CAST($1 AS TEXT) IS NULL OR rule = $1) \
    AND (CAST($2 AS TEXT) IS NULL OR status = $2) AND ts >= $3 AND ts < $4";

#[async_trait]
impl<DB> AlertStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: Binds<DB>,
    Option<i64>: Binds<DB>,
    bool: Binds<DB>,
    String: Binds<DB>,
    Option<String>: Binds<DB>,
    AlertDbRow: Reads<DB>,
    DeliveryRecord: Reads<DB>,
    (i64,): Reads<DB>,
    (String,): Reads<DB>,
{
    async fn insert_alert(&self, a: &NewAlert) -> StoreResult<i64> {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO alerts (ts, rule, subject, title, message, details, link, channels, status) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(a.ts)
        .bind(a.rule.clone())
        .bind(a.subject.clone())
        .bind(a.title.clone())
        .bind(a.message.clone())
        .bind(a.details.to_string())
        .bind(a.link.clone())
        .bind(a.channels.join(","))
        .bind(a.status.clone())
        .fetch_one(&self.write)
        .await?;
        Ok(id)
    }

    async fn set_alert_status(&self, id: i64, status: &str) -> StoreResult<()> {
        sqlx::query("UPDATE alerts SET status = $1 WHERE id = $2")
            .bind(status.to_owned())
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn insert_delivery(&self, d: &DeliveryRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO alert_deliveries (alert_id, channel, attempt, ts, ok, http_status, error) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(d.alert_id)
        .bind(d.channel.clone())
        .bind(d.attempt)
        .bind(d.ts)
        .bind(d.ok)
        .bind(d.http_status)
        .bind(d.error.clone())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn alerts(
        &self,
        f: &AlertFilter,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<AlertRow>, i64)> {
        let (from, to) = (f.from_ms.unwrap_or(i64::MIN), f.to_ms.unwrap_or(i64::MAX));
        let (total,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM alerts {ALERT_FILTER}"
        )))
        .bind(f.rule.clone())
        .bind(f.status.clone())
        .bind(from)
        .bind(to)
        .fetch_one(&self.read)
        .await?;
        let rows: Vec<AlertDbRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT id, ts, rule, subject, title, message, details, link, channels, status \
             FROM alerts {ALERT_FILTER} ORDER BY id DESC LIMIT $5 OFFSET $6"
        )))
        .bind(f.rule.clone())
        .bind(f.status.clone())
        .bind(from)
        .bind(to)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.read)
        .await?;
        Ok((rows.into_iter().map(Into::into).collect(), total))
    }

    async fn deliveries(&self, alert_ids: &[i64]) -> StoreResult<Vec<DeliveryRecord>> {
        let mut out = Vec::new();
        for chunk in alert_ids.chunks(DB::MAX_BINDS.min(1000)) {
            let mut qb: QueryBuilder<DB> = QueryBuilder::new(
                "SELECT alert_id, channel, attempt, ts, ok, http_status, error \
                 FROM alert_deliveries WHERE alert_id IN (",
            );
            let mut ids = qb.separated(", ");
            for id in chunk {
                ids.push_bind(*id);
            }
            qb.push(") ORDER BY id");
            out.extend(
                qb.build_query_as::<DeliveryRecord>()
                    .fetch_all(&self.read)
                    .await?,
            );
        }
        Ok(out)
    }

    async fn claim_cooldowns(
        &self,
        rule: &str,
        subjects: &[String],
        now_ms: i64,
        until_ms: i64,
    ) -> StoreResult<Vec<String>> {
        // In one order on every instance, so two claims never wait on each other in a
        // cycle. A concurrent claim of the same subject waits on the unique index, then sees
        // the winner's cooldown and claims nothing.
        let mut unique = subjects.to_vec();
        unique.sort();
        unique.dedup();
        let mut tx = self.begin_write().await?;
        let mut claimed = Vec::new();
        for s in unique {
            let won: Option<(String,)> = sqlx::query_as(
                "INSERT INTO alert_cooldowns (rule, subject, until_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (rule, subject) DO UPDATE SET until_ms = excluded.until_ms \
                 WHERE alert_cooldowns.until_ms <= $4 RETURNING subject",
            )
            .bind(rule.to_owned())
            .bind(s)
            .bind(until_ms)
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await?;
            claimed.extend(won.map(|(s,)| s));
        }
        tx.commit().await?;
        Ok(claimed)
    }
}
