//! One key, user or IP up close (the dashboard's detail view of a flagged subject): its
//! series and its most recent billed requests. Always direct SQL on the subject's own
//! column (New API indexes `token_id`, `user_id` and `ip`), so it reads that subject's rows
//! only, whatever the range.

use std::net::IpAddr;

use super::error::MonitorError;
use super::params::{MonitorQuery, Range, bucket_bounds};
use super::rows::{SubjectAnswer, SubjectRef, SubjectRequest, SubjectSeriesRow};
use super::source::{Source, SourceKind, int_at as int, text_at as text};
use crate::timefmt::rfc3339_secs;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Token(i64),
    User(i64),
    /// In canonical form, so it is safe to inline (digits, hex, `.` and `:` only).
    Ip(String),
}

impl Subject {
    /// Exactly one of `token_id`, `user_id`, `ip`.
    pub fn parse(q: &MonitorQuery) -> Result<Self, MonitorError> {
        let (token, user, ip) = (q.token_id, q.user_id, q.ip.as_deref());
        match (token, user, ip) {
            (Some(t), None, None) if t > 0 => Ok(Subject::Token(t)),
            (None, Some(u), None) if u >= 0 => Ok(Subject::User(u)),
            (None, None, Some(ip)) => ip
                .parse::<IpAddr>()
                .map(|a| Subject::Ip(a.to_string()))
                .map_err(|_| MonitorError::invalid("ip")),
            (Some(_), None, None) => Err(MonitorError::invalid("token_id")),
            (None, Some(_), None) => Err(MonitorError::invalid("user_id")),
            _ => Err(MonitorError::invalid("token_id")),
        }
    }

    fn as_ref(&self) -> SubjectRef {
        match self {
            Subject::Token(t) => SubjectRef::Token { token_id: *t },
            Subject::User(u) => SubjectRef::User { user_id: *u },
            Subject::Ip(ip) => SubjectRef::Ip { ip: ip.clone() },
        }
    }

    /// A condition on the raw, indexed column.
    fn condition(&self, kind: SourceKind) -> String {
        let native = kind == SourceKind::Native;
        match self {
            Subject::Token(t) => format!("{} = {t}", if native { "key_id" } else { "token_id" }),
            Subject::User(u) if native => format!("COALESCE(owner_user_id, 0) = {u}"),
            Subject::User(u) => format!("user_id = {u}"),
            Subject::Ip(ip) => format!("{} = '{ip}'", if native { "client_ip" } else { "ip" }),
        }
    }
}

/// The subject's series and its latest requests.
pub async fn detail(
    src: &Source,
    subject: &Subject,
    r: Range,
    slot: i64,
    limit: i64,
) -> Result<SubjectAnswer, MonitorError> {
    let series = series(src, subject, r, slot).await?;
    let (requests, total) = requests(src, subject, r, limit).await?;
    Ok(SubjectAnswer {
        subject: subject.as_ref(),
        series,
        slot_sec: slot,
        requests,
        total_count: total,
    })
}

async fn series(
    src: &Source,
    s: &Subject,
    r: Range,
    slot: i64,
) -> Result<Vec<SubjectSeriesRow>, MonitorError> {
    let d = src.dialect;
    let c = &src.cols;
    let sql = format!(
        "SELECT {b}, {n}, {t}, {q} FROM {table} WHERE {f} AND {cond} GROUP BY 1",
        b = d.int(&format!("{} * {slot}", d.idiv(c.ts_s, slot))),
        n = d.int("COUNT(*)"),
        t = d.int(&format!("SUM({})", c.tokens)),
        q = d.int(&format!("SUM({})", c.quota)),
        table = c.table,
        f = src.filter(r),
        cond = s.condition(src.kind),
    );
    let mut by_bucket = std::collections::HashMap::new();
    for row in src.fetch(&sql).await? {
        by_bucket.insert(int(&row, 0)?, [int(&row, 1)?, int(&row, 2)?, int(&row, 3)?]);
    }
    let (first, end) = bucket_bounds(r, slot);
    let mut out = Vec::new();
    let mut b = first;
    while b < end {
        let v = by_bucket.get(&b).copied().unwrap_or_default();
        out.push(SubjectSeriesRow {
            bucket: rfc3339_secs(b),
            reqs: v[0],
            tokens: v[1],
            quota_sum: v[2],
            quota_usd: src.usd(v[2]),
        });
        b += slot;
    }
    Ok(out)
}

async fn requests(
    src: &Source,
    s: &Subject,
    r: Range,
    limit: i64,
) -> Result<(Vec<SubjectRequest>, i64), MonitorError> {
    let d = src.dialect;
    let c = &src.cols;
    let count_sql = format!(
        "SELECT {n} FROM {table} WHERE {f} AND {cond}",
        n = d.int("COUNT(*)"),
        table = c.table,
        f = src.filter(r),
        cond = s.condition(src.kind),
    );
    let total = match src.fetch(&count_sql).await?.first() {
        Some(row) => int(row, 0)?,
        None => 0,
    };
    let sql = format!(
        "SELECT {id}, {ts}, {tok}, {tname}, {user}, {uname}, {model}, {chan}, {tokens}, {quota}, {ip} \
         FROM {table} WHERE {f} AND {cond} ORDER BY {rawts} DESC, id DESC LIMIT {limit}",
        id = d.int("id"),
        ts = d.int(c.ts_s),
        tok = d.int(c.token),
        tname = c.token_name,
        user = d.int(c.user),
        uname = c.username,
        model = c.model,
        chan = if src.kind == SourceKind::NewApi {
            d.int(c.channel)
        } else {
            d.int("0")
        },
        tokens = d.int(c.tokens),
        quota = d.int(c.quota),
        ip = c.ip,
        table = c.table,
        f = src.filter(r),
        cond = s.condition(src.kind),
        rawts = c.ts,
    );
    let native_channels = src.kind == SourceKind::Native;
    let mut out = Vec::new();
    for row in src.fetch(&sql).await? {
        let quota = int(&row, 9)?;
        // Native rows name their upstream; its channel id is its place in the config.
        let channel_id = if native_channels {
            None
        } else {
            Some(int(&row, 7)?)
        };
        out.push(SubjectRequest {
            id: int(&row, 0)?,
            created_at: rfc3339_secs(int(&row, 1)?),
            token_id: int(&row, 2)?,
            token_name: text(&row, 3)?,
            user_id: int(&row, 4)?,
            username: text(&row, 5)?,
            model_name: text(&row, 6)?,
            channel_id,
            tokens: int(&row, 8)?,
            quota_sum: quota,
            quota_usd: src.usd(quota),
            ip: text(&row, 10)?,
        });
    }
    Ok((out, total))
}
