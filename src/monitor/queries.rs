//! Series, rankings, heatmap and summary. Aggregation happens in the rollup when it covers
//! the range, else in SQL; ordering, zero-filling and names happen here, so every backend
//! and both engines give the same answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{Datelike, TimeZone, Timelike};

use super::aggregates::{Group, NameOf};
use super::error::MonitorError;
pub use super::params::HeatMetric;
use super::params::{Dim, Metric, Range, bucket_bounds};
use super::rollup::Rollup;
use super::rollup::data::Data;
use super::rows::{HeatCell, Ranked, SeriesRow, SummaryAnswer, TopRow};
use super::source::{Source, SourceKind};
use super::sql;
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

pub async fn series(
    src: &Source,
    eng: &Engine,
    r: Range,
    slot: i64,
) -> Result<Vec<SeriesRow>, MonitorError> {
    let by_bucket = eng
        .either(
            src,
            r,
            move |d, lo, hi| d.series(lo, hi, slot),
            sql::series(src, r, slot),
        )
        .await?;
    let (first, end) = bucket_bounds(r, slot);
    let mut out = Vec::with_capacity(((end - first) / slot) as usize);
    let mut b = first;
    while b < end {
        let v = by_bucket.get(&b).copied().unwrap_or_default();
        out.push(SeriesRow {
            bucket: rfc3339_secs(b),
            reqs: v[0],
            tokens: v[1],
            users: v[2],
            tokens_cnt: v[3],
            quota_sum: v[4],
            quota_usd: src.usd(v[4]),
        });
        b += slot;
    }
    Ok(out)
}

pub async fn top(
    src: &Source,
    eng: &Engine,
    r: Range,
    dim: Dim,
    metric: Metric,
    limit: usize,
) -> Result<Vec<TopRow>, MonitorError> {
    let int_channel = src.kind == SourceKind::NewApi;
    let mut groups = eng
        .either(
            src,
            r,
            move |d, lo, hi| d.groups(lo, hi, dim, int_channel),
            sql::groups(src, r, dim, metric, limit),
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
        let who = match dim {
            Dim::User => Ranked::User {
                user_id: g.id,
                username: names.get(&g.id).cloned().unwrap_or_default(),
            },
            Dim::Token => Ranked::Token {
                token_id: g.id,
                token_name: names.get(&g.id).cloned().unwrap_or_default(),
            },
            Dim::Model => Ranked::Model {
                model_name: g.name.clone(),
            },
            Dim::Channel => match src.kind {
                SourceKind::NewApi => Ranked::Channel {
                    channel_id: g.id,
                    channel_name: names
                        .get(&g.id)
                        .cloned()
                        .unwrap_or_else(|| format!("channel-{}", g.id)),
                },
                SourceKind::Native => Ranked::Channel {
                    channel_id: src
                        .upstreams
                        .iter()
                        .position(|u| *u == g.name)
                        .map(|i| i as i64 + 1)
                        .unwrap_or(0),
                    channel_name: g.name.clone(),
                },
            },
        };
        out.push(TopRow {
            who,
            tokens: g.tokens,
            reqs: g.reqs,
            quota_sum: g.quota,
            quota_usd: src.usd(g.quota),
        });
    }
    Ok(out)
}

/// 7 × 24 cells `[hour, weekday, value]` (weekday 0 = Monday) in `tz`, summed across weeks.
/// Counted per UTC hour, then placed at that hour's local start.
pub async fn heatmap(
    src: &Source,
    eng: &Engine,
    r: Range,
    metric: HeatMetric,
    tz: chrono_tz::Tz,
) -> Result<Vec<HeatCell>, MonitorError> {
    let hours = eng
        .either(
            src,
            r,
            move |d, lo, hi| d.hours(lo, hi, metric),
            sql::hours(src, r, metric),
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
            out.push([h as i64, wd as i64, *v]);
        }
    }
    Ok(out)
}

pub async fn summary(src: &Source, eng: &Engine, r: Range) -> Result<SummaryAnswer, MonitorError> {
    let t = eng
        .either(
            src,
            r,
            move |d, lo, hi| d.totals(lo, hi),
            sql::totals(src, r),
        )
        .await?;
    let native = if src.kind == SourceKind::Native {
        Some(sql::native_health(src, r).await?)
    } else {
        None
    };
    Ok(SummaryAnswer {
        start_ms: r.start_ms,
        end_ms: r.end_ms,
        reqs: t.reqs,
        tokens: t.tokens,
        quota_sum: t.quota,
        quota_usd: src.usd(t.quota),
        users: t.users,
        keys: t.keys,
        models: t.models,
        native,
    })
}
