//! The request log: one row per gateway call and per upstream attempt.

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Executor, QueryBuilder};

use super::{Binds, Dialect, Reads, SqlStore};
use crate::store::error::StoreResult;
use crate::store::rows::{REQUEST_LOG_COLUMNS, RequestLogDbRow};
use crate::store::traits::RequestLogStore;
use crate::store::types::{RequestLogFilter, RequestLogRow, StatusFilter, UpstreamStats};

/// Binds of one request-log row (the columns of `REQUEST_LOG_COLUMNS`).
const REQUEST_LOG_BINDS: usize = 22;

/// Narrowing by every field of [`RequestLogFilter`], the same text for the count and the
/// page ($1…$14). A typed `CAST` lets PostgreSQL infer the type of a parameter that may be
/// NULL.
const REQUEST_FILTER: &str = "WHERE (CAST($1 AS BIGINT) IS NULL OR key_id = $1) \
    AND (CAST($2 AS TEXT) IS NULL OR key_name = $2) \
    AND (CAST($3 AS BIGINT) IS NULL OR owner_user_id = $3) \
    AND (CAST($4 AS TEXT) IS NULL OR owner_username = $4) \
    AND (CAST($5 AS TEXT) IS NULL OR model = $5) \
    AND (CAST($6 AS TEXT) IS NULL OR upstream = $6) \
    AND (CAST($7 AS TEXT) IS NULL OR endpoint = $7) \
    AND status BETWEEN $8 AND $9 \
    AND (CAST($10 AS TEXT) IS NULL OR request_id = $10) \
    AND ts >= $11 AND ts < $12 \
    AND (CAST($13 AS BIGINT) IS NULL OR id < $13)";

/// The filter's fourteen binds on `q`, in `REQUEST_FILTER`'s order.
macro_rules! bind_filter {
    ($q:expr, $f:expr) => {{
        let f: &RequestLogFilter = $f;
        let (lo, hi) = status_bounds(f.status);
        $q.bind(f.key_id)
            .bind(f.key_name.clone())
            .bind(f.user_id)
            .bind(f.username.clone())
            .bind(f.model.clone())
            .bind(f.upstream.clone())
            .bind(f.endpoint.clone())
            .bind(lo)
            .bind(hi)
            .bind(f.request_id.clone())
            .bind(f.from_ms.unwrap_or(i64::MIN))
            .bind(f.to_ms.unwrap_or(i64::MAX))
            .bind(f.before_id)
    }};
}

fn status_bounds(status: Option<StatusFilter>) -> (i64, i64) {
    match status {
        None => (i64::MIN, i64::MAX),
        Some(StatusFilter::Ok) => (i64::MIN, 399),
        Some(StatusFilter::Error) => (400, i64::MAX),
        Some(StatusFilter::Class(c)) => (c * 100, c * 100 + 99),
        Some(StatusFilter::Exact(s)) => (s, s),
    }
}

/// Nearest rank of the 95th percentile among `n` values (0-based): the smallest value with
/// 95 % of them at or below it.
/// Per upstream: name, calls, errors, mean latency, mean time to first token, tokens, cost.
type UpstreamGroup = (String, i64, i64, f64, Option<f64>, Option<i64>, Option<i64>);

fn p50_rank(n: i64) -> i64 {
    (((n as f64) * 0.5).ceil() as i64 - 1).max(0)
}

fn p95_rank(n: i64) -> i64 {
    (((n as f64) * 0.95).ceil() as i64 - 1).max(0)
}

#[async_trait]
impl<DB> RequestLogStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: Binds<DB>,
    Option<i64>: Binds<DB>,
    bool: Binds<DB>,
    String: Binds<DB>,
    Option<String>: Binds<DB>,
    RequestLogDbRow: Reads<DB>,
    (i64,): Reads<DB>,
    (i64, i64): Reads<DB>,
    UpstreamGroup: Reads<DB>,
{
    async fn insert_request_logs(&self, rows: &[RequestLogRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for chunk in rows.chunks(DB::MAX_BINDS / REQUEST_LOG_BINDS) {
            let mut qb: QueryBuilder<DB> =
                QueryBuilder::new(format!("INSERT INTO request_log ({REQUEST_LOG_COLUMNS}) "));
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(r.ts)
                    .push_bind(r.request_id.clone())
                    .push_bind(r.key_id)
                    .push_bind(r.key_name.clone())
                    .push_bind(r.owner_user_id)
                    .push_bind(r.owner_username.clone())
                    .push_bind(r.endpoint.clone())
                    .push_bind(r.model.clone())
                    .push_bind(r.upstream.clone())
                    .push_bind(r.prompt_tokens)
                    .push_bind(r.completion_tokens)
                    .push_bind(r.cost)
                    .push_bind(r.status)
                    .push_bind(r.error.clone())
                    .push_bind(r.latency_ms)
                    .push_bind(r.ttft_ms)
                    .push_bind(r.is_stream)
                    .push_bind(r.estimated)
                    .push_bind(r.client_ip.clone())
                    .push_bind(r.cached_tokens)
                    .push_bind(r.cache_write_tokens)
                    .push_bind(r.reasoning_tokens);
            });
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn request_logs(
        &self,
        filter: &RequestLogFilter,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<RequestLogRow>, i64)> {
        let count = format!("SELECT COUNT(*) FROM request_log {REQUEST_FILTER}");
        let (total,): (i64,) = bind_filter!(sqlx::query_as(AssertSqlSafe(count)), filter)
            .fetch_one(&self.read)
            .await?;
        let page = format!(
            "SELECT id, {REQUEST_LOG_COLUMNS} FROM request_log {REQUEST_FILTER} \
             ORDER BY id DESC LIMIT $14 OFFSET $15"
        );
        let rows: Vec<RequestLogDbRow> = bind_filter!(sqlx::query_as(AssertSqlSafe(page)), filter)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.read)
            .await?;
        Ok((rows.into_iter().map(Into::into).collect(), total))
    }

    async fn upstream_stats(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<UpstreamStats>> {
        // Averages cast to a float: PostgreSQL averages BIGINT into NUMERIC.
        let groups: Vec<UpstreamGroup> = sqlx::query_as(
            "SELECT upstream, COUNT(*), \
             CAST(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(AVG(latency_ms) AS DOUBLE PRECISION), CAST(AVG(ttft_ms) AS DOUBLE PRECISION), \
             CAST(SUM(prompt_tokens + completion_tokens) AS BIGINT), CAST(SUM(cost) AS BIGINT) \
             FROM request_log WHERE upstream IS NOT NULL AND ts >= $1 AND ts < $2 \
             GROUP BY upstream ORDER BY upstream",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.read)
        .await?;
        let mut out = Vec::with_capacity(groups.len());
        for (upstream, requests, errors, avg_latency_ms, avg_ttft_ms, tokens, cost) in groups {
            // SQLite has no percentile function: one indexed look-up per upstream and rank
            // (a handful of upstreams).
            let mut at = [0i64; 2];
            for (slot, rank) in at.iter_mut().zip([p50_rank(requests), p95_rank(requests)]) {
                let v: Option<(i64,)> = sqlx::query_as(
                    "SELECT latency_ms FROM request_log WHERE upstream = $1 AND ts >= $2 \
                     AND ts < $3 ORDER BY latency_ms LIMIT 1 OFFSET $4",
                )
                .bind(upstream.clone())
                .bind(from_ms)
                .bind(to_ms)
                .bind(rank)
                .fetch_optional(&self.read)
                .await?;
                *slot = v.map_or(0, |(v,)| v);
            }
            out.push(UpstreamStats {
                upstream,
                requests,
                errors,
                avg_latency_ms,
                p50_latency_ms: at[0],
                p95_latency_ms: at[1],
                avg_ttft_ms,
                tokens: tokens.unwrap_or(0),
                cost: cost.unwrap_or(0),
            });
        }
        Ok(out)
    }

    async fn request_counts_since(&self, since_ms: i64) -> StoreResult<Vec<(i64, i64)>> {
        Ok(sqlx::query_as(
            "SELECT key_id, COUNT(*) FROM request_log WHERE ts >= $1 AND key_id IS NOT NULL \
             GROUP BY key_id",
        )
        .bind(since_ms)
        .fetch_all(&self.read)
        .await?)
    }
}
