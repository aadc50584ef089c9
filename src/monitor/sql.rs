//! The direct-SQL engine: the same intermediate aggregates as the rollup's
//! (`rollup/answers.rs`), one function per question, read with one query text per dialect.
//! Queries and rules (`queries.rs`, `anomalies.rs`) ask either engine through
//! `Engine::either` (in `queries.rs`) and turn the aggregates into answers once.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::Row;

use super::aggregates::{BigRow, Buckets, Group, KeyTimes, Moments, Shared, Sharing, Totals};
use super::error::MonitorError;
use super::params::{Dim, HeatMetric, Metric, Range};
use super::rows::NativeHealth;
use super::source::{Source, SourceKind, int_at as get_i64, int_at as i, text_at as s};

pub async fn series(src: &Source, r: Range, slot: i64) -> Result<Buckets, MonitorError> {
    let d = src.dialect;
    let c = &src.cols;
    let bucket = format!("{} * {slot}", d.idiv(c.ts_s, slot));
    let sql = format!(
        "SELECT {b}, {n}, {t}, {u}, {k}, {q} FROM {table} WHERE {f} GROUP BY 1",
        b = d.int(&bucket),
        n = d.int("COUNT(*)"),
        t = d.int(&format!("SUM({})", c.tokens)),
        u = d.int(&format!("COUNT(DISTINCT NULLIF({}, 0))", c.user)),
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

/// The top `limit` groups, ranked and cut in SQL (ties by key, ascending) so only those
/// travel; the caller re-establishes the order the same way for every backend.
pub async fn groups(
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
    // Rows without a key, or (by user) without an owner, are not a group of their own.
    let extra = match dim {
        Dim::Token => format!(" AND {} <> 0", c.token),
        Dim::User => format!(" AND {} <> 0", c.user),
        Dim::Model | Dim::Channel => String::new(),
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

/// Per UTC hour start: the metric's value.
pub async fn hours(
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
        HeatMetric::Users => d.int(&format!("COUNT(DISTINCT NULLIF({}, 0))", c.user)),
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

pub async fn totals(src: &Source, r: Range) -> Result<Totals, MonitorError> {
    let d = src.dialect;
    let c = &src.cols;
    let sql = format!(
        "SELECT {n}, {t}, {q}, {u}, {k}, {m} FROM {table} WHERE {f}",
        n = d.int("COUNT(*)"),
        t = d.int(&format!("COALESCE(SUM({}), 0)", c.tokens)),
        q = d.int(&format!("COALESCE(SUM({}), 0)", c.quota)),
        u = d.int(&format!("COUNT(DISTINCT NULLIF({}, 0))", c.user)),
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

/// Request times of the keys with at least `limit` requests in the range.
pub async fn key_times(src: &Source, r: Range, limit: i64) -> Result<KeyTimes, MonitorError> {
    let (d, c) = (src.dialect, &src.cols);
    let f = src.filter(r);
    // Only keys with enough requests in the whole range can hold that many in one window.
    let candidates = format!(
        "SELECT {tok} FROM {t} WHERE {f} AND {tok} <> 0 GROUP BY {tok} HAVING COUNT(*) >= {limit}",
        tok = c.token,
        t = c.table,
    );
    let sql = format!(
        "SELECT {tk}, {ts} FROM {t} WHERE {f} AND {tok} IN ({candidates}) ORDER BY 1, 2",
        tk = d.int(c.token),
        ts = d.int(c.ts_s),
        t = c.table,
        tok = c.token,
    );
    let mut per_key: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for row in src.fetch(&sql).await? {
        per_key.entry(i(&row, 0)?).or_default().push(i(&row, 1)?);
    }
    let owners = key_owners(src, r, &candidates).await?;
    Ok(KeyTimes { per_key, owners })
}

pub async fn shared_keys(
    src: &Source,
    r: Range,
    users_threshold: i64,
    ips_threshold: i64,
) -> Result<Sharing<i64>, MonitorError> {
    let (d, c) = (src.dialect, &src.cols);
    let f = src.filter(r);
    let sql = format!(
        "SELECT {tk}, {uc}, {ic}, {n} FROM {t} WHERE {f} AND {tok} <> 0 GROUP BY {tok} \
         HAVING COUNT(DISTINCT NULLIF({user}, 0)) >= {users_threshold} OR COUNT(DISTINCT NULLIF({ip}, '')) >= {ips_threshold}",
        tk = d.int(c.token),
        uc = d.int(&format!("COUNT(DISTINCT NULLIF({}, 0))", c.user)),
        ic = d.int(&format!("COUNT(DISTINCT NULLIF({}, ''))", c.ip)),
        n = d.int("COUNT(*)"),
        t = c.table,
        tok = c.token,
        user = c.user,
        ip = c.ip,
    );
    let mut out = Sharing::default();
    for row in src.fetch(&sql).await? {
        out.hits.push(Shared {
            key: i(&row, 0)?,
            users: i(&row, 1)?,
            ips: i(&row, 2)?,
            requests: i(&row, 3)?,
        });
    }
    let pairs_sql = format!(
        "SELECT DISTINCT {tk}, {u} FROM {t} WHERE {f} AND {user} <> 0 AND {tok} IN (SELECT {tok} FROM {t} WHERE {f} AND {tok} <> 0 \
         GROUP BY {tok} HAVING COUNT(DISTINCT NULLIF({user}, 0)) >= {users_threshold} OR COUNT(DISTINCT NULLIF({ip}, '')) >= {ips_threshold})",
        tk = d.int(c.token),
        u = d.int(c.user),
        t = c.table,
        tok = c.token,
        user = c.user,
        ip = c.ip,
    );
    out.users_of = users_by(src, &pairs_sql, i).await?;
    Ok(out)
}

pub async fn crowded_ips(
    src: &Source,
    r: Range,
    threshold: i64,
) -> Result<Sharing<String>, MonitorError> {
    let (d, c) = (src.dialect, &src.cols);
    let f = src.filter(r);
    let base = format!(
        "{f} AND {tok} <> 0 AND {ip} <> ''",
        tok = c.token,
        ip = c.ip
    );
    let sql = format!(
        "SELECT {ip}, {uc}, {n} FROM {t} WHERE {base} GROUP BY {ip} HAVING COUNT(DISTINCT NULLIF({user}, 0)) >= {threshold}",
        ip = c.ip,
        uc = d.int(&format!("COUNT(DISTINCT NULLIF({}, 0))", c.user)),
        n = d.int("COUNT(*)"),
        t = c.table,
        user = c.user,
    );
    let mut out = Sharing::default();
    for row in src.fetch(&sql).await? {
        out.hits.push(Shared {
            key: s(&row, 0)?,
            users: i(&row, 1)?,
            ips: 0,
            requests: i(&row, 2)?,
        });
    }
    let pairs_sql = format!(
        "SELECT DISTINCT {ip}, {u} FROM {t} WHERE {base} AND {user} <> 0 AND {ip} IN \
         (SELECT {ip} FROM {t} WHERE {base} GROUP BY {ip} HAVING COUNT(DISTINCT NULLIF({user}, 0)) >= {threshold})",
        ip = c.ip,
        u = d.int(c.user),
        t = c.table,
        user = c.user,
    );
    out.users_of = users_by(src, &pairs_sql, s).await?;
    Ok(out)
}

pub async fn moments(
    src: &Source,
    r: Range,
    global: bool,
) -> Result<HashMap<String, Moments>, MonitorError> {
    let (d, c) = (src.dialect, &src.cols);
    let f = format!("{} AND {} <> 0", src.filter(r), c.token);
    let group = if global {
        "'*'".to_owned()
    } else {
        c.model.to_owned()
    };
    // Exact integer sums, so mean and deviation agree across backends.
    let sql = format!(
        "SELECT {group}, {n}, {s1}, {s2} FROM {t} WHERE {f} GROUP BY 1",
        n = d.int("COUNT(*)"),
        s1 = d.int(&format!("SUM({})", c.tokens)),
        // Squared as BIGINT: 50 000 tokens squared overflows a 32-bit column type.
        s2 = d.int(&format!("SUM({tk} * {tk})", tk = d.int(c.tokens))),
        t = c.table,
    );
    let mut out = HashMap::new();
    for row in src.fetch(&sql).await? {
        out.insert(
            s(&row, 0)?,
            Moments {
                n: i(&row, 1)?,
                s1: i(&row, 2)?,
                s2: i(&row, 3)?,
            },
        );
    }
    Ok(out)
}

pub async fn big_rows(
    src: &Source,
    r: Range,
    global: bool,
    floor: i64,
) -> Result<Vec<BigRow>, MonitorError> {
    let (d, c) = (src.dialect, &src.cols);
    let sql = format!(
        "SELECT {tk}, {u}, {m}, {tok}, {ts} FROM {t} WHERE {f} AND {key} <> 0 AND {tokens} > {floor}",
        tk = d.int(c.token),
        u = d.int(c.user),
        m = if global { "'*'" } else { c.model },
        tok = d.int(c.tokens),
        ts = d.int(c.ts_s),
        t = c.table,
        f = src.filter(r),
        key = c.token,
        tokens = c.tokens,
    );
    let mut out = Vec::new();
    for row in src.fetch(&sql).await? {
        out.push(BigRow {
            key: i(&row, 0)?,
            user: i(&row, 1)?,
            group: s(&row, 2)?,
            tokens: i(&row, 3)?,
            ts: i(&row, 4)?,
        });
    }
    Ok(out)
}

/// The most frequent user of each key in the range (ties: the smallest id).
async fn key_owners(
    src: &Source,
    r: Range,
    keys_sql: &str,
) -> Result<HashMap<i64, i64>, MonitorError> {
    let (d, c) = (src.dialect, &src.cols);
    let sql = format!(
        "SELECT {t}, {u}, {n} FROM {table} WHERE {f} AND {tok} IN ({keys_sql}) GROUP BY {tok}, {user}",
        t = d.int(c.token),
        u = d.int(c.user),
        n = d.int("COUNT(*)"),
        table = c.table,
        f = src.filter(r),
        tok = c.token,
        user = c.user,
    );
    let mut best: HashMap<i64, (i64, i64)> = HashMap::new();
    for row in src.fetch(&sql).await? {
        let (t, u, n) = (i(&row, 0)?, i(&row, 1)?, i(&row, 2)?);
        let e = best.entry(t).or_insert((u, n));
        if n > e.1 || (n == e.1 && u < e.0) {
            *e = (u, n);
        }
    }
    Ok(best.into_iter().map(|(t, (u, _))| (t, u)).collect())
}

/// `(key, user)` pairs from `sql`, grouped by key.
async fn users_by<K: std::hash::Hash + Eq>(
    src: &Source,
    sql: &str,
    key: fn(&sqlx::any::AnyRow, usize) -> Result<K, MonitorError>,
) -> Result<HashMap<K, BTreeSet<i64>>, MonitorError> {
    let mut out: HashMap<K, BTreeSet<i64>> = HashMap::new();
    for row in src.fetch(sql).await? {
        out.entry(key(&row, 0)?).or_default().insert(i(&row, 1)?);
    }
    Ok(out)
}

/// The native log also knows failed calls and latency: error rate and p50/p95 over all calls.
pub async fn native_health(src: &Source, r: Range) -> Result<NativeHealth, MonitorError> {
    let d = src.dialect;
    let all = format!("ts >= {} AND ts < {}", r.start_ms, r.end_ms);
    let sql = format!(
        "SELECT {n}, {e} FROM request_log WHERE {all}",
        n = d.int("COUNT(*)"),
        e = d.int("COALESCE(SUM(CASE WHEN status >= 200 AND status < 300 THEN 0 ELSE 1 END), 0)"),
    );
    let rows = src.fetch(&sql).await?;
    let (total, errors) = match rows.first() {
        Some(row) => (get_i64(row, 0)?, get_i64(row, 1)?),
        None => (0, 0),
    };
    let mut pct = [None, None];
    for (slot, p) in pct.iter_mut().zip([0.50, 0.95]) {
        if total > 0 {
            let offset = ((total as f64 * p).ceil() as i64 - 1).clamp(0, total - 1);
            let sql = format!(
                "SELECT latency_ms FROM request_log WHERE {all} ORDER BY latency_ms LIMIT 1 OFFSET {offset}"
            );
            *slot = src
                .fetch(&sql)
                .await?
                .first()
                .map(|r| get_i64(r, 0))
                .transpose()?;
        }
    }
    Ok(NativeHealth {
        error_rate: if total > 0 {
            errors as f64 / total as f64
        } else {
            0.0
        },
        latency_p50_ms: pct[0],
        latency_p95_ms: pct[1],
    })
}
