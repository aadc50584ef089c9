//! The four risk rules. Keys with `token_id = 0` never count; allow-listed keys, users and
//! IPs are left out. Results are ordered most serious first, with ids breaking ties.

use std::collections::{BTreeSet, HashMap};

use super::aggregates::{NameOf, Shared, Sharing};
use super::error::MonitorError;
use super::params::Range;
use super::queries::{Engine, names};
use super::rows::{AnomalyRow, BigRequestRow, BurstRow, CrowdedIpRow, SharedKeyRow};
use super::source::Source;
use super::sql;
use crate::timefmt::rfc3339_secs;

#[derive(Debug, Clone, Default)]
pub struct AllowList {
    pub keys: BTreeSet<i64>,
    pub users: BTreeSet<i64>,
    pub ips: Vec<ipnet::IpNet>,
}

impl AllowList {
    fn ip(&self, ip: &str) -> bool {
        ip.parse::<std::net::IpAddr>()
            .is_ok_and(|a| self.ips.iter().any(|n| n.contains(&a)))
    }
}

pub struct Found {
    pub rows: Vec<AnomalyRow>,
    pub total: usize,
}

/// The busiest `window_sec` of one key's sorted times: how many, and where it starts.
fn peak(ts: &[i64], window_sec: i64) -> (usize, usize) {
    let (mut best, mut best_at) = (0usize, 0usize);
    let mut hi = 0usize;
    for lo in 0..ts.len() {
        hi = hi.max(lo);
        while hi < ts.len() && ts[hi] < ts[lo] + window_sec {
            hi += 1;
        }
        if hi - lo > best {
            best = hi - lo;
            best_at = lo;
        }
    }
    (best, best_at)
}

pub async fn burst(
    src: &Source,
    eng: &Engine,
    r: Range,
    window_sec: i64,
    limit: i64,
    allow: &AllowList,
    keep: usize,
) -> Result<Found, MonitorError> {
    let times = eng
        .either(
            src,
            r,
            move |d, lo, hi| d.key_times(lo, hi, limit, window_sec),
            sql::key_times(src, r, limit),
        )
        .await?;
    // Peak of a true sliding window: for each request, how many fall in [t, t + window).
    let mut hits = Vec::new();
    for (key, ts) in &times.per_key {
        if allow.keys.contains(key) {
            continue;
        }
        let (best, best_at) = peak(ts, window_sec);
        if best as i64 >= limit {
            let user = times.owners.get(key).copied().unwrap_or(0);
            if allow.users.contains(&user) {
                continue;
            }
            hits.push((*key, user, best, ts[best_at], ts[best_at + best - 1]));
        }
    }
    hits.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    let total = first(&mut hits, keep);
    let keys: Vec<i64> = hits.iter().map(|h| h.0).collect();
    let users: Vec<i64> = hits.iter().map(|h| h.1).collect();
    let knames = names(src, eng, NameOf::Token, &keys, r).await?;
    let unames = names(src, eng, NameOf::User, &users, r).await?;
    let rows = hits
        .into_iter()
        .map(|(k, u, n, first, last)| {
            AnomalyRow::Burst(BurstRow {
                token_id: k,
                token_name: knames.get(&k).cloned().unwrap_or_default(),
                user_id: u,
                username: unames.get(&u).cloned().unwrap_or_default(),
                request_count: n as i64,
                window_sec,
                threshold: limit,
                first_request: rfc3339_secs(first),
                last_request: rfc3339_secs(last),
            })
        })
        .collect();
    Ok(Found { rows, total })
}

/// Keeps the first `keep` of the sorted `hits` (names are looked up for those only) and
/// returns how many there were.
fn first<T>(hits: &mut Vec<T>, keep: usize) -> usize {
    let total = hits.len();
    hits.truncate(keep);
    total
}

/// `user_id:username` pairs, comma-separated, in id order.
fn user_list(ids: &BTreeSet<i64>, names: &HashMap<i64, String>) -> String {
    ids.iter()
        .map(|u| match names.get(u) {
            Some(n) if !n.is_empty() => n.clone(),
            _ => u.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The users of the given subjects, each once.
fn users_of<K: std::hash::Hash + Eq>(s: &Sharing<K>, subjects: &[&K]) -> Vec<i64> {
    subjects
        .iter()
        .filter_map(|k| s.users_of.get(*k))
        .flatten()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

pub async fn multi_user_token(
    src: &Source,
    eng: &Engine,
    r: Range,
    users_threshold: i64,
    ips_threshold: i64,
    allow: &AllowList,
    keep: usize,
) -> Result<Found, MonitorError> {
    let found = eng
        .either(
            src,
            r,
            move |d, lo, hi| d.shared_keys(lo, hi, users_threshold, ips_threshold),
            sql::shared_keys(src, r, users_threshold, ips_threshold),
        )
        .await?;
    let mut hits: Vec<&Shared<i64>> = found
        .hits
        .iter()
        .filter(|h| !allow.keys.contains(&h.key))
        .collect();
    hits.sort_by(|a, b| {
        b.users
            .cmp(&a.users)
            .then(b.ips.cmp(&a.ips))
            .then(a.key.cmp(&b.key))
    });
    let total = first(&mut hits, keep);
    let keys: Vec<i64> = hits.iter().map(|h| h.key).collect();
    let knames = names(src, eng, NameOf::Token, &keys, r).await?;
    let subjects: Vec<&i64> = hits.iter().map(|h| &h.key).collect();
    let unames = names(src, eng, NameOf::User, &users_of(&found, &subjects), r).await?;
    let empty = BTreeSet::new();
    let rows = hits
        .into_iter()
        .map(|h| {
            AnomalyRow::SharedKey(SharedKeyRow {
                token_id: h.key,
                token_name: knames.get(&h.key).cloned().unwrap_or_default(),
                user_count: h.users,
                ip_count: h.ips,
                threshold: users_threshold,
                users: user_list(found.users_of.get(&h.key).unwrap_or(&empty), &unames),
                total_requests: h.requests,
            })
        })
        .collect();
    Ok(Found { rows, total })
}

pub async fn ip_many_users(
    src: &Source,
    eng: &Engine,
    r: Range,
    threshold: i64,
    allow: &AllowList,
    keep: usize,
) -> Result<Found, MonitorError> {
    let found = eng
        .either(
            src,
            r,
            move |d, lo, hi| d.crowded_ips(lo, hi, threshold),
            sql::crowded_ips(src, r, threshold),
        )
        .await?;
    let mut hits: Vec<&Shared<String>> = found.hits.iter().filter(|h| !allow.ip(&h.key)).collect();
    hits.sort_by(|a, b| b.users.cmp(&a.users).then(a.key.cmp(&b.key)));
    let total = first(&mut hits, keep);
    let subjects: Vec<&String> = hits.iter().map(|h| &h.key).collect();
    let unames = names(src, eng, NameOf::User, &users_of(&found, &subjects), r).await?;
    let empty = BTreeSet::new();
    let rows = hits
        .into_iter()
        .map(|h| {
            AnomalyRow::CrowdedIp(CrowdedIpRow {
                ip: h.key.clone(),
                user_count: h.users,
                threshold,
                users: user_list(found.users_of.get(&h.key).unwrap_or(&empty), &unames),
                total_requests: h.requests,
            })
        })
        .collect();
    Ok(Found { rows, total })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Each group's mean, standard deviation and threshold (groups of fewer than 30 requests
/// are not judged).
fn group_thresholds(
    moments: impl IntoIterator<Item = (String, super::aggregates::Moments)>,
    sigma: f64,
    min_tokens: i64,
) -> HashMap<String, (f64, f64, f64)> {
    let mut stats = HashMap::new();
    for (group, m) in moments {
        if m.n < 30 {
            continue;
        }
        let mean = m.s1 as f64 / m.n as f64;
        let var = ((m.s2 as f64) / m.n as f64 - mean * mean).max(0.0);
        let std = var.sqrt();
        // Never below the floor: on uniform traffic σ is tiny and an ordinary call would be
        // "far above the mean".
        let threshold = (mean + sigma * std).max(min_tokens as f64 - 0.5);
        stats.insert(group, (mean, std, threshold));
    }
    stats
}

/// How `big_request` judges a request: above `mean + sigma·std` of its group (its model, or
/// all requests when `global`) and at least `min_tokens`.
#[derive(Debug, Clone, Copy)]
pub struct BigRequest {
    pub sigma: f64,
    pub min_tokens: i64,
    pub global: bool,
}

pub async fn big_request(
    src: &Source,
    eng: &Engine,
    r: Range,
    how: BigRequest,
    allow: &AllowList,
    keep: usize,
) -> Result<Found, MonitorError> {
    let BigRequest {
        sigma,
        min_tokens,
        global,
    } = how;
    let moments = eng
        .either(
            src,
            r,
            move |d, lo, hi| d.moments(lo, hi, global),
            sql::moments(src, r, global),
        )
        .await?;
    let stats = group_thresholds(moments, sigma, min_tokens);
    let Some(min_threshold) = stats.values().map(|v| v.2).reduce(f64::min) else {
        return Ok(Found {
            rows: Vec::new(),
            total: 0,
        });
    };
    let floor = min_threshold.floor() as i64;
    // SQL reads the rows above the lowest threshold; the rollup applies each group's own.
    let thresholds: HashMap<String, f64> = stats.iter().map(|(g, v)| (g.clone(), v.2)).collect();
    let rows = eng
        .either(
            src,
            r,
            move |d, lo, hi| d.big_rows(lo, hi, global, &thresholds),
            sql::big_rows(src, r, global, floor),
        )
        .await?;
    let mut hits = Vec::new();
    for b in rows {
        if let Some(&(mean, std, thr)) = stats.get(&b.group)
            && (b.tokens as f64) > thr
            && !allow.keys.contains(&b.key)
            && !allow.users.contains(&b.user)
        {
            hits.push((b, mean, std, thr));
        }
    }
    hits.sort_by(|(a, ..), (b, ..)| {
        b.tokens
            .cmp(&a.tokens)
            .then(a.ts.cmp(&b.ts))
            .then(a.key.cmp(&b.key))
    });
    let total = first(&mut hits, keep);
    let keys: Vec<i64> = hits.iter().map(|h| h.0.key).collect();
    let users: Vec<i64> = hits.iter().map(|h| h.0.user).collect();
    let knames = names(src, eng, NameOf::Token, &keys, r).await?;
    let unames = names(src, eng, NameOf::User, &users, r).await?;
    let rows = hits
        .into_iter()
        .map(|(b, mean, std, thr)| {
            AnomalyRow::BigRequest(BigRequestRow {
                token_id: b.key,
                token_name: knames.get(&b.key).cloned().unwrap_or_default(),
                user_id: b.user,
                username: unames.get(&b.user).cloned().unwrap_or_default(),
                model_name: (!global).then(|| b.group.clone()),
                token_count: b.tokens,
                created_at: rfc3339_secs(b.ts),
                mean_tokens: round2(mean),
                std_tokens: round2(std),
                threshold: round2(thr),
                sigma,
            })
        })
        .collect();
    Ok(Found { rows, total })
}
