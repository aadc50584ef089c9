//! Series, rankings, heatmap and summary. Aggregation happens in the rollup when it covers
//! the range, else in SQL; ordering, zero-filling and names happen here, so every backend
//! and both engines give the same answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{Datelike, TimeZone, Timelike};
use serde_json::{Map, Value, json};
use sqlx::Row;

use super::MonitorError;
use super::aggregates::{Buckets, Group, NameOf, Totals};
pub use super::params::HeatMetric;
use super::params::{Dim, Metric, Range, bucket_bounds};
use super::rollup::Rollup;
use super::rollup::data::Data;
use super::source::{Source, SourceKind};
use crate::timefmt::rfc3339_secs;

/// Where one request's aggregates come from, and where they came from.
pub struct Engine {
    rollup: Option<Arc<Rollup>>,
    used_rollup: AtomicBool,
    used_sql: AtomicBool,
}

impl Engine {
    /// `rollup: None` answers everything in SQL.
    pub fn new(rollup: Option<Arc<Rollup>>) -> Self {
        Self {
            rollup,
            used_rollup: AtomicBool::new(false),
            used_sql: AtomicBool::new(false),
        }
    }

    /// `f(rows, lo, hi)` on the rollup when it covers `r`; `None` means: ask SQL.
    async fn run<T, F>(&self, src: &Source, r: Range, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(&Data, i64, i64) -> T + Send + 'static,
    {
        let (lo, hi) = src.bounds(r);
        let out = match &self.rollup {
            Some(ru) => ru.query(lo, move |d| f(d, lo, hi)).await,
            None => None,
        };
        let flag = if out.is_some() {
            &self.used_rollup
        } else {
            &self.used_sql
        };
        flag.store(true, Ordering::Relaxed);
        out
    }

    /// The rollup's answer `f(rows, lo, hi)` when it covers `r`, else `sql`'s (a future is
    /// lazy: the query runs only when needed).
    pub async fn either<T, F>(
        &self,
        src: &Source,
        r: Range,
        f: F,
        sql: impl Future<Output = Result<T, MonitorError>>,
    ) -> Result<T, MonitorError>
    where
        T: Send + 'static,
        F: FnOnce(&Data, i64, i64) -> T + Send + 'static,
    {
        match self.run(src, r, f).await {
            Some(v) => Ok(v),
            None => sql.await,
        }
    }

    /// For the `X-Monitor-Engine` header.
    pub fn label(&self) -> &'static str {
        match (
            self.used_rollup.load(Ordering::Relaxed),
            self.used_sql.load(Ordering::Relaxed),
        ) {
            (true, false) => "rollup",
            (true, true) => "mixed",
            _ => "sql",
        }
    }
}

/// Names for ids: New API's tables first, then the names on the rows themselves.
pub async fn names(
    src: &Source,
    eng: &Engine,
    which: NameOf,
    ids: &[i64],
    r: Range,
) -> Result<HashMap<i64, String>, MonitorError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut out = src.table_names(which, ids).await?;
    let missing: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|i| !out.contains_key(i))
        .collect();
    if missing.is_empty() {
        return Ok(out);
    }
    let wanted = missing.clone();
    let found = eng
        .either(
            src,
            r,
            move |d, lo, hi| d.names_of(lo, hi, which, &wanted),
            src.log_names(which, &missing, r),
        )
        .await?;
    out.extend(found);
    Ok(out)
}

pub type Rows = Vec<Map<String, Value>>;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

use super::source::int_at as get_i64;

pub async fn series(src: &Source, eng: &Engine, r: Range, slot: i64) -> Result<Rows, MonitorError> {
    let by_bucket = eng
        .either(
            src,
            r,
            move |d, lo, hi| d.series(lo, hi, slot),
            sql_series(src, r, slot),
        )
        .await?;
    let (first, end) = bucket_bounds(r, slot);
    let mut out = Vec::with_capacity(((end - first) / slot) as usize);
    let mut b = first;
    while b < end {
        let v = by_bucket.get(&b).copied().unwrap_or_default();
        out.push(obj(json!({
            "bucket": rfc3339_secs(b),
            "reqs": v[0],
            "tokens": v[1],
            "users": v[2],
            "tokens_cnt": v[3],
            "quota_sum": v[4],
            "quota_usd": src.usd(v[4]),
        })));
        b += slot;
    }
    Ok(out)
}

async fn sql_series(src: &Source, r: Range, slot: i64) -> Result<Buckets, MonitorError> {
    let d = src.dialect;
    let c = &src.cols;
    let bucket = format!("{} * {slot}", d.idiv(c.ts_s, slot));
    let sql = format!(
        "SELECT {b}, {n}, {t}, {u}, {k}, {q} FROM {table} WHERE {f} GROUP BY 1",
        b = d.int(&bucket),
        n = d.int("COUNT(*)"),
        t = d.int(&format!("SUM({})", c.tokens)),
        u = d.int(&format!("COUNT(DISTINCT {})", c.user)),
        k = d.int(&format!("COUNT(DISTINCT NULLIF({}, 0))", c.token)),
        q = d.int(&format!("SUM({})", c.quota)),
        table = c.table,
        f = src.filter(r),
    );
    let mut by_bucket = Buckets::new();
    for row in src.fetch(&sql).await? {
        let b = get_i64(&row, 0)?;
        let mut v = [0i64; 5];
        for (i, slot_v) in v.iter_mut().enumerate() {
            *slot_v = get_i64(&row, i + 1)?;
        }
        by_bucket.insert(b, v);
    }
    Ok(by_bucket)
}

pub async fn top(
    src: &Source,
    eng: &Engine,
    r: Range,
    dim: Dim,
    metric: Metric,
    limit: usize,
) -> Result<Rows, MonitorError> {
    let int_channel = src.kind == SourceKind::NewApi;
    let mut groups = eng
        .either(
            src,
            r,
            move |d, lo, hi| d.groups(lo, hi, dim, int_channel),
            sql_top(src, r, dim, metric, limit),
        )
        .await?;
    let metric_of = |g: &Group| match metric {
        Metric::Tokens => g.tokens,
        Metric::Reqs => g.reqs,
        Metric::QuotaSum => g.quota,
    };
    // Ties broken by the dimension's key so every backend orders alike.
    let order = |a: &Group, b: &Group| {
        metric_of(b)
            .cmp(&metric_of(a))
            .then_with(|| a.id.cmp(&b.id))
            .then_with(|| a.name.cmp(&b.name))
    };
    // The rollup hands over every group: pick the top `limit` before sorting them.
    if limit == 0 {
        groups.clear();
    } else if groups.len() > limit {
        groups.select_nth_unstable_by(limit - 1, order);
        groups.truncate(limit);
    }
    groups.sort_by(order);
    let ids: Vec<i64> = groups.iter().map(|g| g.id).collect();
    let names = match dim {
        Dim::User => names(src, eng, NameOf::User, &ids, r).await?,
        Dim::Token => names(src, eng, NameOf::Token, &ids, r).await?,
        Dim::Channel => src.channel_names(&ids).await?,
        Dim::Model => HashMap::new(),
    };
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let mut row = match dim {
            Dim::User => {
                json!({"user_id": g.id, "username": names.get(&g.id).cloned().unwrap_or_default()})
            }
            Dim::Token => {
                json!({"token_id": g.id, "token_name": names.get(&g.id).cloned().unwrap_or_default()})
            }
            Dim::Model => json!({"model_name": g.name}),
            Dim::Channel => match src.kind {
                SourceKind::NewApi => json!({
                    "channel_id": g.id,
                    "channel_name": names.get(&g.id).cloned().unwrap_or_else(|| format!("channel-{}", g.id)),
                }),
                SourceKind::Native => json!({
                    "channel_id": src.upstreams.iter().position(|u| *u == g.name).map(|i| i as i64 + 1).unwrap_or(0),
                    "channel_name": g.name,
                }),
            },
        };
        if let Value::Object(m) = &mut row {
            m.insert("tokens".into(), json!(g.tokens));
            m.insert("reqs".into(), json!(g.reqs));
            m.insert("quota_sum".into(), json!(g.quota));
            m.insert("quota_usd".into(), json!(src.usd(g.quota)));
        }
        out.push(obj(row));
    }
    Ok(out)
}

/// The top `limit` groups, ranked and cut in SQL (ties by key, ascending) so only those
/// travel; the caller re-establishes the order the same way for every backend.
async fn sql_top(
    src: &Source,
    r: Range,
    dim: Dim,
    metric: Metric,
    limit: usize,
) -> Result<Vec<Group>, MonitorError> {
    let d = src.dialect;
    let c = &src.cols;
    let (key, key_is_int) = match dim {
        Dim::User => (c.user, true),
        Dim::Token => (c.token, true),
        Dim::Model => (c.model, false),
        Dim::Channel => (c.channel, src.kind == SourceKind::NewApi),
    };
    let key_sel = if key_is_int {
        d.int(key)
    } else {
        key.to_owned()
    };
    let extra = if dim == Dim::Token {
        format!(" AND {} <> 0", c.token)
    } else {
        String::new()
    };
    let rank = match metric {
        Metric::Reqs => 2,
        Metric::Tokens => 3,
        Metric::QuotaSum => 4,
    };
    let sql = format!(
        "SELECT {key_sel}, {n}, {t}, {q} FROM {table} WHERE {f}{extra} GROUP BY {key} \
         ORDER BY {rank} DESC, 1 ASC LIMIT {limit}",
        n = d.int("COUNT(*)"),
        t = d.int(&format!("SUM({})", c.tokens)),
        q = d.int(&format!("SUM({})", c.quota)),
        table = c.table,
        f = src.filter(r),
    );
    let mut groups = Vec::new();
    for row in src.fetch(&sql).await? {
        let (id, name) = if key_is_int {
            (get_i64(&row, 0)?, String::new())
        } else {
            let s: Option<String> = row.try_get(0).map_err(MonitorError::from_sqlx)?;
            (0, s.unwrap_or_default())
        };
        groups.push(Group {
            id,
            name,
            reqs: get_i64(&row, 1)?,
            tokens: get_i64(&row, 2)?,
            quota: get_i64(&row, 3)?,
        });
    }
    Ok(groups)
}

/// 7 × 24 cells `[hour, weekday, value]` (weekday 0 = Monday) in `tz`, summed across weeks.
/// Counted per UTC hour, then placed at that hour's local start.
pub async fn heatmap(
    src: &Source,
    eng: &Engine,
    r: Range,
    metric: HeatMetric,
    tz: chrono_tz::Tz,
) -> Result<Vec<Value>, MonitorError> {
    let hours = eng
        .either(
            src,
            r,
            move |d, lo, hi| d.hours(lo, hi, metric),
            sql_hours(src, r, metric),
        )
        .await?;
    let mut cells = [[0i64; 24]; 7];
    for (h, v) in hours {
        if let Some(local) = tz.timestamp_opt(h, 0).single() {
            let wd = local.weekday().num_days_from_monday() as usize;
            cells[wd][local.hour() as usize] += v;
        }
    }
    let mut out = Vec::with_capacity(168);
    for (wd, hours) in cells.iter().enumerate() {
        for (h, v) in hours.iter().enumerate() {
            out.push(json!([h, wd, v]));
        }
    }
    Ok(out)
}

/// Per UTC hour start: the metric's value.
async fn sql_hours(
    src: &Source,
    r: Range,
    metric: HeatMetric,
) -> Result<Vec<(i64, i64)>, MonitorError> {
    let d = src.dialect;
    let c = &src.cols;
    let hour = format!("{} * 3600", d.idiv(c.ts_s, 3600));
    let value = match metric {
        HeatMetric::Reqs => d.int("COUNT(*)"),
        HeatMetric::Tokens => d.int(&format!("SUM({})", c.tokens)),
        HeatMetric::Users => d.int(&format!("COUNT(DISTINCT {})", c.user)),
    };
    let sql = format!(
        "SELECT {h}, {value} FROM {t} WHERE {f} GROUP BY 1",
        h = d.int(&hour),
        t = c.table,
        f = src.filter(r),
    );
    let mut out = Vec::new();
    for row in src.fetch(&sql).await? {
        out.push((get_i64(&row, 0)?, get_i64(&row, 1)?));
    }
    Ok(out)
}

pub async fn summary(
    src: &Source,
    eng: &Engine,
    r: Range,
) -> Result<Map<String, Value>, MonitorError> {
    let t = eng
        .either(
            src,
            r,
            move |d, lo, hi| d.totals(lo, hi),
            sql_totals(src, r),
        )
        .await?;
    let mut out = obj(json!({
        "start_ms": r.start_ms,
        "end_ms": r.end_ms,
        "reqs": t.reqs,
        "tokens": t.tokens,
        "quota_sum": t.quota,
        "quota_usd": src.usd(t.quota),
        "users": t.users,
        "keys": t.keys,
        "models": t.models,
    }));
    if src.kind == SourceKind::Native {
        native_health(src, r, &mut out).await?;
    }
    Ok(out)
}

async fn sql_totals(src: &Source, r: Range) -> Result<Totals, MonitorError> {
    let d = src.dialect;
    let c = &src.cols;
    let sql = format!(
        "SELECT {n}, {t}, {q}, {u}, {k}, {m} FROM {table} WHERE {f}",
        n = d.int("COUNT(*)"),
        t = d.int(&format!("COALESCE(SUM({}), 0)", c.tokens)),
        q = d.int(&format!("COALESCE(SUM({}), 0)", c.quota)),
        u = d.int(&format!("COUNT(DISTINCT {})", c.user)),
        k = d.int(&format!("COUNT(DISTINCT NULLIF({}, 0))", c.token)),
        m = d.int(&format!("COUNT(DISTINCT {})", c.model)),
        table = c.table,
        f = src.filter(r),
    );
    let rows = src.fetch(&sql).await?;
    let row = rows
        .first()
        .ok_or_else(|| MonitorError::Unavailable("empty answer".into()))?;
    Ok(Totals {
        reqs: get_i64(row, 0)?,
        tokens: get_i64(row, 1)?,
        quota: get_i64(row, 2)?,
        users: get_i64(row, 3)?,
        keys: get_i64(row, 4)?,
        models: get_i64(row, 5)?,
    })
}

/// The native log also knows failed calls and latency: error rate and p50/p95 over all calls.
async fn native_health(
    src: &Source,
    r: Range,
    out: &mut Map<String, Value>,
) -> Result<(), MonitorError> {
    let d = src.dialect;
    {
        let all = format!("ts >= {} AND ts < {}", r.start_ms, r.end_ms);
        let sql = format!(
            "SELECT {n}, {e} FROM request_log WHERE {all}",
            n = d.int("COUNT(*)"),
            e = d.int(
                "COALESCE(SUM(CASE WHEN status >= 200 AND status < 300 THEN 0 ELSE 1 END), 0)"
            ),
        );
        let rows = src.fetch(&sql).await?;
        let (total, errors) = match rows.first() {
            Some(row) => (get_i64(row, 0)?, get_i64(row, 1)?),
            None => (0, 0),
        };
        out.insert(
            "error_rate".into(),
            json!(if total > 0 {
                errors as f64 / total as f64
            } else {
                0.0
            }),
        );
        for (name, p) in [("latency_p50_ms", 0.50), ("latency_p95_ms", 0.95)] {
            let v = if total > 0 {
                let offset = ((total as f64 * p).ceil() as i64 - 1).clamp(0, total - 1);
                let sql = format!(
                    "SELECT latency_ms FROM request_log WHERE {all} ORDER BY latency_ms LIMIT 1 OFFSET {offset}"
                );
                src.fetch(&sql)
                    .await?
                    .first()
                    .map(|r| get_i64(r, 0))
                    .transpose()?
            } else {
                None
            };
            out.insert(name.into(), json!(v));
        }
    }
    Ok(())
}
