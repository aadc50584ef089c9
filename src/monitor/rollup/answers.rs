//! The monitor's aggregates computed over the rollup's rows. Each one matches, value for
//! value, the SQL the direct path runs (see `queries.rs` and `anomalies.rs`).
//! Rows are visited in time order, so "distinct per bucket" is a marker per id rather than
//! a set per bucket.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::data::Data;
use crate::monitor::aggregates::{
    BigRow, Buckets, Group, KeyTimes, Moments, NameOf, Shared, Sharing, Totals,
};
use crate::monitor::params::Dim;
use crate::monitor::params::HeatMetric;

/// Counts each id once per bucket, buckets arriving in order.
struct Distinct {
    seen: Vec<u32>,
    bucket: u32,
}

impl Distinct {
    fn new(n: usize) -> Self {
        Self {
            seen: vec![u32::MAX; n],
            bucket: 0,
        }
    }

    fn next_bucket(&mut self) {
        self.bucket += 1;
    }

    /// True the first time `id` shows up in the current bucket.
    fn first(&mut self, id: u32) -> bool {
        let s = &mut self.seen[id as usize];
        if *s == self.bucket {
            false
        } else {
            *s = self.bucket;
            true
        }
    }
}

impl Data {
    fn zero_token(&self) -> Option<u32> {
        self.tokens.find(&0)
    }

    /// User 0: rows of keys without an owner. Not a user: never counted or listed as one.
    fn zero_user(&self) -> Option<u32> {
        self.users.find(&0)
    }

    pub fn series(&self, lo: i64, hi: i64, slot: i64) -> Buckets {
        let mut out = Buckets::new();
        let mut users = Distinct::new(self.users.len());
        let mut keys = Distinct::new(self.tokens.len());
        let zero = self.zero_token();
        let no_user = self.zero_user();
        let mut cur: Option<(i64, [i64; 5])> = None;
        self.scan(lo, hi, |c, i| {
            let b = self.secs(c.ts(i)).div_euclid(slot) * slot;
            match &cur {
                Some((cb, _)) if *cb == b => {}
                _ => {
                    if let Some((cb, v)) = cur.take() {
                        out.insert(cb, v);
                    }
                    users.next_bucket();
                    keys.next_bucket();
                    cur = Some((b, [0; 5]));
                }
            }
            if let Some((_, v)) = cur.as_mut() {
                v[0] += 1;
                v[1] += c.tokens(i);
                if Some(c.user[i]) != no_user && users.first(c.user[i]) {
                    v[2] += 1;
                }
                if Some(c.token[i]) != zero && keys.first(c.token[i]) {
                    v[3] += 1;
                }
                v[4] += c.quota(i);
            }
        });
        if let Some((cb, v)) = cur {
            out.insert(cb, v);
        }
        out
    }

    /// Every group of the ranking (the caller orders and cuts them). `int_channel`: channel
    /// ids are integers (`newapi`), else upstream names.
    pub fn groups(&self, lo: i64, hi: i64, dim: Dim, int_channel: bool) -> Vec<Group> {
        let (n, col): (usize, fn(&super::data::Chunk, usize) -> u32) = match dim {
            Dim::User => (self.users.len(), |c, i| c.user[i]),
            Dim::Token => (self.tokens.len(), |c, i| c.token[i]),
            Dim::Model => (self.models.len(), |c, i| c.model[i]),
            Dim::Channel => (self.channels.len(), |c, i| c.channel[i]),
        };
        // Rows without a key, or (by user) without an owner, are not a group of their own.
        let skip = match dim {
            Dim::Token => self.zero_token(),
            Dim::User => self.zero_user(),
            Dim::Model | Dim::Channel => None,
        };
        let mut acc = vec![[0i64; 3]; n];
        self.scan(lo, hi, |c, i| {
            let k = col(c, i);
            if Some(k) != skip {
                let a = &mut acc[k as usize];
                a[0] += 1;
                a[1] += c.tokens(i);
                a[2] += c.quota(i);
            }
        });
        acc.iter()
            .enumerate()
            .filter(|(_, a)| a[0] > 0)
            .map(|(k, a)| {
                let k = k as u32;
                let (id, name) = match dim {
                    Dim::User => (*self.users.get(k), String::new()),
                    Dim::Token => (*self.tokens.get(k), String::new()),
                    Dim::Model => (0, self.models.get(k).clone()),
                    // Channel ids were stored as their decimal text.
                    Dim::Channel if int_channel => {
                        (self.channels.get(k).parse().unwrap_or(0), String::new())
                    }
                    Dim::Channel => (0, self.channels.get(k).clone()),
                };
                Group {
                    id,
                    name,
                    reqs: a[0],
                    tokens: a[1],
                    quota: a[2],
                }
            })
            .collect()
    }

    /// Per UTC hour start (unix s).
    pub fn hours(&self, lo: i64, hi: i64, metric: HeatMetric) -> Vec<(i64, i64)> {
        // Archived hours wholly inside the range answer from the totals kept with them,
        // without reading their rows.
        let mut whole: Vec<(i64, i64)> = Vec::new();
        if let Some(a) = &self.archive
            && lo < hi
        {
            let span = 3600 * self.unit;
            // The hours starting at or after `lo` and ending at or before `hi`.
            let first = lo.div_euclid(span) + i64::from(lo.rem_euclid(span) != 0);
            let last = hi.div_euclid(span) - 1;
            for (h, s) in a.totals_in(first, last) {
                let v = match metric {
                    HeatMetric::Reqs => s.rows as i64,
                    HeatMetric::Tokens => s.tokens,
                    HeatMetric::Users => s.users,
                };
                whole.push((h * 3600, v));
            }
        }
        let skip: std::collections::HashSet<i64> = whole.iter().map(|(h, _)| h / 3600).collect();
        let mut out: Vec<(i64, i64)> = Vec::new();
        let mut users = Distinct::new(self.users.len());
        let no_user = self.zero_user();
        self.scan_except(
            lo,
            hi,
            |h| skip.contains(&h),
            |c, i| {
                let h = self.secs(c.ts(i)).div_euclid(3600) * 3600;
                if out.last().is_none_or(|(lh, _)| *lh != h) {
                    out.push((h, 0));
                    users.next_bucket();
                }
                if let Some((_, v)) = out.last_mut() {
                    *v += match metric {
                        HeatMetric::Reqs => 1,
                        HeatMetric::Tokens => c.tokens(i),
                        HeatMetric::Users => {
                            i64::from(Some(c.user[i]) != no_user && users.first(c.user[i]))
                        }
                    };
                }
            },
        );
        if !whole.is_empty() {
            out.extend(whole);
            out.sort_unstable_by_key(|(h, _)| *h);
        }
        out
    }

    pub fn totals(&self, lo: i64, hi: i64) -> Totals {
        let mut t = Totals::default();
        let mut users = Distinct::new(self.users.len());
        let mut keys = Distinct::new(self.tokens.len());
        let mut models = Distinct::new(self.models.len());
        users.next_bucket();
        keys.next_bucket();
        models.next_bucket();
        let zero = self.zero_token();
        let no_user = self.zero_user();
        self.scan(lo, hi, |c, i| {
            t.reqs += 1;
            t.tokens += c.tokens(i);
            t.quota += c.quota(i);
            t.users += i64::from(Some(c.user[i]) != no_user && users.first(c.user[i]));
            if Some(c.token[i]) != zero {
                t.keys += i64::from(keys.first(c.token[i]));
            }
            t.models += i64::from(models.first(c.model[i]));
        });
        t
    }

    /// Keys (not 0) that may have `min` requests within `window_sec`: their times and most
    /// frequent user. A sliding window of that length overlaps at most two consecutive
    /// aligned ones, so a first pass counts each key's requests per aligned window (in time
    /// order, two counters a key) and only keys where two neighbours reach `min` have their
    /// times collected; the caller's exact sliding count decides among those.
    pub fn key_times(&self, lo: i64, hi: i64, min: i64, window_sec: i64) -> KeyTimes {
        let zero = self.zero_token();
        let w = window_sec.max(1);
        let n = self.tokens.len();
        let (mut window, mut cur, mut prev) = (vec![i64::MIN; n], vec![0i64; n], vec![0i64; n]);
        let mut candidate = vec![false; n];
        self.scan(lo, hi, |c, i| {
            let k = c.token[i];
            if Some(k) == zero || candidate[k as usize] {
                return;
            }
            let k = k as usize;
            let b = self.secs(c.ts(i)).div_euclid(w);
            if b != window[k] {
                prev[k] = if window[k] != i64::MIN && b == window[k] + 1 {
                    cur[k]
                } else {
                    0
                };
                window[k] = b;
                cur[k] = 0;
            }
            cur[k] += 1;
            candidate[k] = prev[k] + cur[k] >= min;
        });
        let mut times: HashMap<u32, Vec<i64>> = HashMap::new();
        let mut pairs: HashMap<(u32, u32), i64> = HashMap::new();
        self.scan(lo, hi, |c, i| {
            let k = c.token[i];
            if Some(k) != zero && candidate[k as usize] {
                times.entry(k).or_default().push(self.secs(c.ts(i)));
                *pairs.entry((k, c.user[i])).or_default() += 1;
            }
        });
        let mut best: HashMap<i64, (i64, i64)> = HashMap::new();
        for ((k, u), n) in pairs {
            let (k, u) = (*self.tokens.get(k), *self.users.get(u));
            let e = best.entry(k).or_insert((u, n));
            if n > e.1 || (n == e.1 && u < e.0) {
                *e = (u, n);
            }
        }
        KeyTimes {
            per_key: times
                .into_iter()
                .map(|(k, v)| (*self.tokens.get(k), v))
                .collect::<BTreeMap<_, _>>(),
            owners: best.into_iter().map(|(k, (u, _))| (k, u)).collect(),
        }
    }

    /// Keys (not 0) used by ≥ `users_min` distinct users or from ≥ `ips_min` distinct IPs.
    pub fn shared_keys(&self, lo: i64, hi: i64, users_min: i64, ips_min: i64) -> Sharing<i64> {
        let zero = self.zero_token();
        let no_user = self.zero_user();
        let no_ip = self.ips.find(&String::new());
        let mut user_pairs = Pairs::new(self.tokens.len());
        let mut ip_pairs = Pairs::new(self.tokens.len());
        let mut reqs = vec![0i64; self.tokens.len()];
        self.scan(lo, hi, |c, i| {
            let k = c.token[i];
            if Some(k) == zero {
                return;
            }
            reqs[k as usize] += 1;
            if Some(c.user[i]) != no_user {
                user_pairs.push(k, c.user[i]);
            }
            if Some(c.ip[i]) != no_ip {
                ip_pairs.push(k, c.ip[i]);
            }
        });
        let users = user_pairs.distinct();
        let ips = ip_pairs.distinct();
        let mut n_users = vec![0i64; self.tokens.len()];
        let mut n_ips = vec![0i64; self.tokens.len()];
        for p in &users {
            n_users[(p >> 32) as usize] += 1;
        }
        for p in &ips {
            n_ips[(p >> 32) as usize] += 1;
        }
        let mut out = Sharing::default();
        for (k, &n) in reqs.iter().enumerate() {
            if n > 0 && (n_users[k] >= users_min || n_ips[k] >= ips_min) {
                out.hits.push(Shared {
                    key: *self.tokens.get(k as u32),
                    users: n_users[k],
                    ips: n_ips[k],
                    requests: n,
                });
            }
        }
        let hit: Vec<bool> = (0..self.tokens.len())
            .map(|k| reqs[k] > 0 && (n_users[k] >= users_min || n_ips[k] >= ips_min))
            .collect();
        for p in users {
            let (k, u) = ((p >> 32) as u32, p as u32);
            if hit[k as usize] {
                out.users_of
                    .entry(*self.tokens.get(k))
                    .or_insert_with(BTreeSet::new)
                    .insert(*self.users.get(u));
            }
        }
        out
    }

    /// IPs (not empty, keyed rows only) behind ≥ `users_min` distinct users.
    pub fn crowded_ips(&self, lo: i64, hi: i64, users_min: i64) -> Sharing<String> {
        let zero = self.zero_token();
        let no_user = self.zero_user();
        let no_ip = self.ips.find(&String::new());
        let mut pairs = Pairs::new(self.ips.len());
        let mut reqs = vec![0i64; self.ips.len()];
        self.scan(lo, hi, |c, i| {
            if Some(c.token[i]) == zero || Some(c.ip[i]) == no_ip {
                return;
            }
            reqs[c.ip[i] as usize] += 1;
            if Some(c.user[i]) != no_user {
                pairs.push(c.ip[i], c.user[i]);
            }
        });
        let pairs = pairs.distinct();
        let mut n_users = vec![0i64; self.ips.len()];
        for p in &pairs {
            n_users[(p >> 32) as usize] += 1;
        }
        let mut out = Sharing::default();
        for p in pairs {
            let (ip, u) = ((p >> 32) as usize, p as u32);
            if n_users[ip] >= users_min {
                out.users_of
                    .entry(self.ips.get(ip as u32).clone())
                    .or_insert_with(BTreeSet::new)
                    .insert(*self.users.get(u));
            }
        }
        for (ip, &n) in reqs.iter().enumerate() {
            if n > 0 && n_users[ip] >= users_min {
                out.hits.push(Shared {
                    key: self.ips.get(ip as u32).clone(),
                    users: n_users[ip],
                    ips: 0,
                    requests: n,
                });
            }
        }
        out
    }

    /// Token moments of keyed rows per model (`global`: one pool named `*`).
    pub fn moments(&self, lo: i64, hi: i64, global: bool) -> HashMap<String, Moments> {
        let zero = self.zero_token();
        let mut acc = vec![Moments::default(); if global { 1 } else { self.models.len() }];
        self.scan(lo, hi, |c, i| {
            if Some(c.token[i]) == zero {
                return;
            }
            let m = &mut acc[if global { 0 } else { c.model[i] as usize }];
            let t = c.tokens(i);
            m.n += 1;
            m.s1 += t;
            m.s2 = m.s2.saturating_add(t.saturating_mul(t));
        });
        acc.into_iter()
            .enumerate()
            .filter(|(_, m)| m.n > 0)
            .map(|(k, m)| {
                let name = if global {
                    "*".to_owned()
                } else {
                    self.models.get(k as u32).clone()
                };
                (name, m)
            })
            .collect()
    }

    /// Keyed rows above their group's threshold (`*` for the global pool); groups without
    /// one (too few samples) are skipped.
    pub fn big_rows(
        &self,
        lo: i64,
        hi: i64,
        global: bool,
        thresholds: &HashMap<String, f64>,
    ) -> Vec<BigRow> {
        let zero = self.zero_token();
        let by_model: Vec<Option<f64>> = if global {
            vec![thresholds.get("*").copied()]
        } else {
            self.models
                .values()
                .iter()
                .map(|m| thresholds.get(m).copied())
                .collect()
        };
        let mut out = Vec::new();
        self.scan(lo, hi, |c, i| {
            let group = if global { 0 } else { c.model[i] as usize };
            let Some(thr) = by_model.get(group).copied().flatten() else {
                return;
            };
            if Some(c.token[i]) != zero && (c.tokens(i) as f64) > thr {
                out.push(BigRow {
                    key: *self.tokens.get(c.token[i]),
                    user: *self.users.get(c.user[i]),
                    group: if global {
                        "*".to_owned()
                    } else {
                        self.models.get(c.model[i]).clone()
                    },
                    tokens: c.tokens(i),
                    ts: self.secs(c.ts(i)),
                });
            }
        });
        out
    }

    /// The greatest name each id carries on its rows in the range, as `MAX(name)` does.
    pub fn names_of(&self, lo: i64, hi: i64, which: NameOf, ids: &[i64]) -> HashMap<i64, String> {
        let (interner, n) = match which {
            NameOf::User => (&self.users, self.users.len()),
            NameOf::Token => (&self.tokens, self.tokens.len()),
        };
        let mut wanted = vec![false; n];
        for id in ids {
            if let Some(k) = interner.find(id) {
                wanted[k as usize] = true;
            }
        }
        let mut best: HashMap<u32, u32> = HashMap::new();
        self.scan(lo, hi, |c, i| {
            let (k, name) = match which {
                NameOf::User => (c.user[i], c.uname[i]),
                NameOf::Token => (c.token[i], c.tname[i]),
            };
            if wanted[k as usize] {
                let e = best.entry(k).or_insert(name);
                if *e != name && self.names.get(name) > self.names.get(*e) {
                    *e = name;
                }
            }
        });
        best.into_iter()
            .map(|(k, name)| (*interner.get(k), self.names.get(name).clone()))
            .collect()
    }
}

fn pair(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

/// Distinct `(left, right)` pairs of interned ids, as `left << 32 | right`. A pair equal to
/// the previous one of the same left id is not stored again: a key is mostly used by one
/// user from one address, so most rows repeat their key's last pair and the sort at the end
/// sees a fraction of the rows.
struct Pairs {
    last: Vec<u32>,
    pairs: Vec<u64>,
}

impl Pairs {
    fn new(lefts: usize) -> Self {
        Self {
            last: vec![u32::MAX; lefts],
            pairs: Vec::new(),
        }
    }

    fn push(&mut self, left: u32, right: u32) {
        let seen = &mut self.last[left as usize];
        if *seen != right {
            *seen = right;
            self.pairs.push(pair(left, right));
        }
    }

    fn distinct(mut self) -> Vec<u64> {
        self.pairs.sort_unstable();
        self.pairs.dedup();
        self.pairs
    }
}

#[cfg(test)]
mod tests {
    use super::super::data::{Data, Row};
    use proptest::prelude::*;

    /// The sliding-window peak, by brute force.
    fn peak(ts: &[i64], w: i64) -> usize {
        ts.iter()
            .map(|&t| ts.iter().filter(|&&u| u >= t && u < t + w).count())
            .max()
            .unwrap_or(0)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Every key that reaches `min` requests within `window` seconds is among the
        /// candidates, with all its times: pruning never hides a burst.
        #[test]
        fn pruned_key_times_keep_every_burst(
            rows in prop::collection::vec((1i64..6, 0i64..7200), 1..300),
            window in 1i64..600,
            min in 1i64..12,
        ) {
            let mut d = Data::new(1);
            d.advance_to(0);
            for (id, (token, t)) in rows.iter().enumerate() {
                d.push(&Row {
                    id: id as i64 + 1,
                    ts: 1_000_000 + t,
                    user: 1,
                    token: *token,
                    model: "m".into(),
                    channel: "1".into(),
                    tokens: 1,
                    quota: 1,
                    ip: String::new(),
                    username: String::new(),
                    token_name: String::new(),
                });
            }
            d.settle();
            let got = d.key_times(0, i64::MAX, min, window);
            for token in 1..6 {
                let mut ts: Vec<i64> = rows
                    .iter()
                    .filter(|(k, _)| *k == token)
                    .map(|(_, t)| 1_000_000 + t)
                    .collect();
                ts.sort_unstable();
                if peak(&ts, window) as i64 >= min {
                    prop_assert_eq!(got.per_key.get(&token), Some(&ts), "token {}", token);
                }
            }
        }
    }
}
