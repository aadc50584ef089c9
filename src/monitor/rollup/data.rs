//! The rollup's memory: the billed rows of the horizon, column by column, in hourly chunks
//! kept in time order, with every repeated value (ids, names, models, IPs) interned, times
//! as offsets within the hour and token and quota counts in 32 bits (the rare larger value
//! kept aside by row id). 48 bytes a row: 10 million rows hold in ~480 MB.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// One billed row as the feed reads it, normalised (NULL → 0 or '').
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub id: i64,
    /// In the source's own unit: seconds (`newapi`) or milliseconds (`native`).
    pub ts: i64,
    pub user: i64,
    pub token: i64,
    pub model: String,
    /// Channel id as text (`newapi`) or upstream name (`native`).
    pub channel: String,
    pub tokens: i64,
    pub quota: i64,
    pub ip: String,
    pub username: String,
    pub token_name: String,
}

/// Every row of a load looks up seven values here: foldhash (seeded per process) instead of
/// SipHash, whose DoS resistance is not needed for the operator's own log.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug)]
pub struct Interner<T> {
    map: FastMap<T, u32>,
    vals: Vec<T>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self {
            map: FastMap::default(),
            vals: Vec::new(),
        }
    }
}

impl<T: Hash + Eq + Clone> Interner<T> {
    /// Owns a copy only the first time a value is seen (`&str` in, `String` kept).
    pub fn intern<Q>(&mut self, v: &Q) -> u32
    where
        T: Borrow<Q>,
        Q: ToOwned<Owned = T> + Hash + Eq + ?Sized,
    {
        if let Some(&i) = self.map.get(v) {
            return i;
        }
        let i = self.vals.len() as u32;
        let owned = v.to_owned();
        self.vals.push(owned.clone());
        self.map.insert(owned, i);
        i
    }

    /// An interner holding `vals` at their positions (a restored snapshot).
    pub fn from_values(vals: Vec<T>) -> Self {
        let map = vals
            .iter()
            .enumerate()
            .map(|(i, v)| (v.clone(), i as u32))
            .collect();
        Self { map, vals }
    }

    /// Every value, by its index.
    pub fn values(&self) -> &[T] {
        &self.vals
    }

    pub fn find(&self, v: &T) -> Option<u32> {
        self.map.get(v).copied()
    }

    pub fn get(&self, i: u32) -> &T {
        &self.vals[i as usize]
    }

    pub fn len(&self) -> usize {
        self.vals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vals.is_empty()
    }
}

/// Marks a token or quota count kept in `Chunk::wide` instead.
const WIDE: u32 = u32::MAX;

/// The rows of one UTC hour, sorted by time (ties in arrival order).
#[derive(Debug, Default)]
pub struct Chunk {
    /// The hour's start in source units; `ts` holds offsets from it (an hour of
    /// milliseconds fits 32 bits).
    pub(super) base: i64,
    pub id: Vec<i64>,
    pub(super) ts: Vec<u32>,
    pub user: Vec<u32>,
    pub token: Vec<u32>,
    pub model: Vec<u32>,
    pub channel: Vec<u32>,
    pub ip: Vec<u32>,
    pub uname: Vec<u32>,
    pub tname: Vec<u32>,
    pub(super) tokens: Vec<u32>,
    pub(super) quota: Vec<u32>,
    /// Token and quota counts outside `0..u32::MAX`, by row id (`WIDE` in the column).
    pub(super) wide_tokens: HashMap<i64, i64>,
    pub(super) wide_quota: HashMap<i64, i64>,
    /// Rows were appended out of time order (initial load); `settle` sorts them.
    pub(super) unsorted: bool,
}

/// `v` as a column value, or `WIDE` with `v` kept in `aside` under `id`.
fn narrow(v: i64, id: i64, aside: &mut HashMap<i64, i64>) -> u32 {
    match u32::try_from(v) {
        Ok(n) if n != WIDE => n,
        _ => {
            aside.insert(id, v);
            WIDE
        }
    }
}

/// The interned ids of one row.
struct Coded {
    user: u32,
    token: u32,
    model: u32,
    channel: u32,
    ip: u32,
    uname: u32,
    tname: u32,
}

impl Chunk {
    fn new(base: i64) -> Self {
        Self {
            base,
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// Row `i`'s time, in source units.
    pub fn ts(&self, i: usize) -> i64 {
        self.base + i64::from(self.ts[i])
    }

    pub fn tokens(&self, i: usize) -> i64 {
        match self.tokens[i] {
            WIDE => self.wide_tokens.get(&self.id[i]).copied().unwrap_or(0),
            n => i64::from(n),
        }
    }

    pub fn quota(&self, i: usize) -> i64 {
        match self.quota[i] {
            WIDE => self.wide_quota.get(&self.id[i]).copied().unwrap_or(0),
            n => i64::from(n),
        }
    }

    /// The first row at or after time `t` (source units).
    fn first_from(&self, t: i64) -> usize {
        self.ts.partition_point(|&o| self.base + i64::from(o) < t)
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Applies `f` to every column alike.
    fn each_column(&mut self, f: &mut dyn FnMut(&mut dyn Column)) {
        f(&mut self.id);
        f(&mut self.ts);
        f(&mut self.user);
        f(&mut self.token);
        f(&mut self.model);
        f(&mut self.channel);
        f(&mut self.ip);
        f(&mut self.uname);
        f(&mut self.tname);
        f(&mut self.tokens);
        f(&mut self.quota);
    }

    /// Sorts the rows by time (stable: equal times keep arrival order) and gives back
    /// spare capacity.
    fn settle(&mut self) {
        if self.unsorted {
            let mut order: Vec<u32> = (0..self.len() as u32).collect();
            order.sort_by_key(|&i| self.ts[i as usize]);
            self.each_column(&mut |c| c.permute(&order));
            self.unsorted = false;
        }
        self.each_column(&mut |c| c.shrink());
    }

    fn insert(&mut self, at: usize, r: &Row, c: Coded) {
        // `r.ts` lies in this chunk's hour: the offset is below an hour of milliseconds.
        let offset = u32::try_from(r.ts - self.base).unwrap_or(0);
        let tokens = narrow(r.tokens, r.id, &mut self.wide_tokens);
        let quota = narrow(r.quota, r.id, &mut self.wide_quota);
        self.id.insert(at, r.id);
        self.ts.insert(at, offset);
        self.user.insert(at, c.user);
        self.token.insert(at, c.token);
        self.model.insert(at, c.model);
        self.channel.insert(at, c.channel);
        self.ip.insert(at, c.ip);
        self.uname.insert(at, c.uname);
        self.tname.insert(at, c.tname);
        self.tokens.insert(at, tokens);
        self.quota.insert(at, quota);
    }

    /// Keeps the rows whose id is at least `min_id`; returns how many went.
    fn retain_from(&mut self, min_id: i64) -> usize {
        let keep: Vec<bool> = self.id.iter().map(|&i| i >= min_id).collect();
        let gone = keep.iter().filter(|k| !**k).count();
        if gone > 0 {
            self.each_column(&mut |c| c.keep(&keep));
            self.wide_tokens.retain(|id, _| *id >= min_id);
            self.wide_quota.retain(|id, _| *id >= min_id);
        }
        gone
    }
}

/// What `Chunk::each_column` can do to any column.
trait Column {
    fn permute(&mut self, order: &[u32]);
    fn keep(&mut self, keep: &[bool]);
    fn shrink(&mut self);
}

impl<T: Copy> Column for Vec<T> {
    fn permute(&mut self, order: &[u32]) {
        let v: Vec<T> = order.iter().map(|&i| self[i as usize]).collect();
        *self = v;
    }

    fn keep(&mut self, keep: &[bool]) {
        let mut k = keep.iter();
        self.retain(|_| k.next().copied().unwrap_or(true));
    }

    fn shrink(&mut self) {
        self.shrink_to_fit();
    }
}

#[derive(Debug)]
pub struct Data {
    /// Source units per second: 1 (`newapi`, seconds) or 1000 (`native`, milliseconds).
    pub unit: i64,
    pub chunks: BTreeMap<i64, Chunk>,
    pub users: Interner<i64>,
    pub tokens: Interner<i64>,
    pub models: Interner<String>,
    pub channels: Interner<String>,
    pub ips: Interner<String>,
    /// User names and key names.
    pub names: Interner<String>,
    pub rows: usize,
    /// Every billed row with `ts >= covered_from` (source units, an hour boundary) is held
    /// once the feed has caught up.
    pub covered_from: i64,
    /// The smallest id the source still holds, as last seen.
    pub min_id: i64,
    pub ready: bool,
}

impl Data {
    pub fn new(unit: i64) -> Self {
        Self {
            unit,
            chunks: BTreeMap::new(),
            users: Interner::default(),
            tokens: Interner::default(),
            models: Interner::default(),
            channels: Interner::default(),
            ips: Interner::default(),
            names: Interner::default(),
            rows: 0,
            covered_from: i64::MAX,
            min_id: 0,
            ready: false,
        }
    }

    pub fn hour_of(&self, ts: i64) -> i64 {
        ts.div_euclid(self.unit).div_euclid(3600)
    }

    /// Seconds since the epoch, as the SQL path computes them (`ts / 1000` for milliseconds).
    pub fn secs(&self, ts: i64) -> i64 {
        ts.div_euclid(self.unit)
    }

    /// The newest row's time (source units), if any row is held.
    pub fn newest(&self) -> Option<i64> {
        let c = self.chunks.values().next_back()?;
        (0..c.len()).map(|i| c.ts(i)).max()
    }

    /// Whether the rollup answers for a range starting at `lo` (source units).
    pub fn covers(&self, lo: i64) -> bool {
        self.ready && lo >= self.covered_from
    }

    pub fn push(&mut self, r: &Row) {
        if r.ts < self.covered_from || r.id < self.min_id {
            return;
        }
        let c = Coded {
            user: self.users.intern(&r.user),
            token: self.tokens.intern(&r.token),
            model: self.models.intern(r.model.as_str()),
            channel: self.channels.intern(r.channel.as_str()),
            ip: self.ips.intern(r.ip.as_str()),
            uname: self.names.intern(r.username.as_str()),
            tname: self.names.intern(r.token_name.as_str()),
        };
        let hour = self.hour_of(r.ts);
        if !self.chunks.contains_key(&hour) {
            // A new hour: the previous one is (nearly always) complete.
            if self.ready
                && let Some((_, prev)) = self.chunks.range_mut(..hour).next_back()
            {
                prev.settle();
            }
            self.chunks
                .insert(hour, Chunk::new(hour * 3600 * self.unit));
        }
        let ready = self.ready;
        let Some(chunk) = self.chunks.get_mut(&hour) else {
            return;
        };
        // Rows arrive in id order, which is almost time order: the insert is nearly always
        // at the end. While loading, out-of-order rows are appended and sorted once.
        let base = chunk.base;
        let at = if chunk.ts.last().is_none_or(|&t| base + i64::from(t) <= r.ts) {
            chunk.len()
        } else if !ready {
            chunk.unsorted = true;
            chunk.len()
        } else {
            chunk.ts.partition_point(|&t| base + i64::from(t) <= r.ts)
        };
        chunk.insert(at, r, c);
        self.rows += 1;
    }

    /// The initial load is complete: sorts what arrived out of order, and from now on
    /// answers queries.
    pub fn settle(&mut self) {
        for c in self.chunks.values_mut() {
            c.settle();
        }
        self.ready = true;
    }

    /// Moves the horizon forward to `from` (an hour boundary), forgetting older rows.
    pub fn advance_to(&mut self, from: i64) {
        if from <= self.covered_from && self.covered_from != i64::MAX {
            return;
        }
        self.covered_from = from;
        let first_kept = self.hour_of(from);
        let old: Vec<i64> = self.chunks.range(..first_kept).map(|(h, _)| *h).collect();
        for h in old {
            if let Some(c) = self.chunks.remove(&h) {
                self.rows -= c.len();
            }
        }
    }

    /// Lets the oldest hours go until at most `max_rows` rows are held (the newest hour is
    /// always kept whole). The horizon moves with them: ranges reaching before it go to SQL.
    pub fn fit(&mut self, max_rows: usize) {
        if max_rows == 0 {
            return;
        }
        while self.rows > max_rows && self.chunks.len() > 1 {
            let Some((&hour, _)) = self.chunks.iter().next() else {
                break;
            };
            self.advance_to((hour + 1) * 3600 * self.unit);
        }
    }

    /// The source no longer holds ids below `min_id` (old logs deleted): forget them too.
    pub fn forget_below(&mut self, min_id: i64) {
        if min_id <= self.min_id {
            return;
        }
        self.min_id = min_id;
        let mut empty = Vec::new();
        for (h, c) in self.chunks.iter_mut() {
            self.rows -= c.retain_from(min_id);
            if c.is_empty() {
                empty.push(*h);
            }
        }
        for h in empty {
            self.chunks.remove(&h);
        }
    }

    /// Calls `f(chunk, i)` for each held row with `lo <= ts < hi`, in time order.
    pub fn scan(&self, lo: i64, hi: i64, mut f: impl FnMut(&Chunk, usize)) {
        if lo >= hi {
            return;
        }
        let (h_lo, h_hi) = (self.hour_of(lo), self.hour_of(hi - 1));
        for c in self.chunks.range(h_lo..=h_hi).map(|(_, c)| c) {
            let start = c.first_from(lo);
            let end = c.first_from(hi);
            for i in start..end {
                f(c, i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, ts: i64, user: i64) -> Row {
        Row {
            id,
            ts,
            user,
            token: user * 10,
            ..Row::default()
        }
    }

    fn scanned(d: &Data, lo: i64, hi: i64) -> Vec<i64> {
        let mut ids = Vec::new();
        d.scan(lo, hi, |c, i| ids.push(c.id[i]));
        ids
    }

    #[test]
    fn rows_come_back_in_time_order_within_the_range() {
        let mut d = Data::new(1);
        d.covered_from = 0;
        d.ready = true;
        for (id, ts) in [
            (1, 100),
            (2, 3700),
            (3, 50),
            (4, 3600),
            (5, 7300),
            (6, 3650),
        ] {
            d.push(&row(id, ts, 1));
        }
        assert_eq!(scanned(&d, 0, 10_000), vec![3, 1, 4, 6, 2, 5]);
        assert_eq!(scanned(&d, 100, 3700), vec![1, 4, 6]);
        assert_eq!(scanned(&d, 3600, 3601), vec![4]);
        assert_eq!(d.rows, 6);
    }

    #[test]
    fn a_budget_lets_the_oldest_hours_go() {
        let mut d = Data::new(1);
        d.covered_from = 0;
        for id in 0..10 {
            d.push(&row(id, id * 1800, 1));
        }
        d.fit(5);
        assert!(d.rows <= 5, "{}", d.rows);
        assert_eq!(scanned(&d, 0, i64::MAX), (6..10).collect::<Vec<_>>());
        assert_eq!(d.covered_from, 3 * 3600);
        assert!(!d.covers(0) && d.covered_from > 0);
        // Rows older than the new start are not taken back.
        d.push(&row(20, 100, 1));
        assert_eq!(d.rows, 4);
        d.fit(0);
        assert_eq!(d.rows, 4, "0 = no budget");
    }

    #[test]
    fn the_horizon_and_deletions_forget_rows() {
        let mut d = Data::new(1000);
        d.covered_from = 0;
        for id in 0..10 {
            d.push(&row(id, id * 1_800_000, id % 3));
        }
        d.forget_below(3);
        assert_eq!(scanned(&d, 0, i64::MAX), (3..10).collect::<Vec<_>>());
        d.advance_to(3 * 3_600_000);
        assert_eq!(scanned(&d, 0, i64::MAX), (6..10).collect::<Vec<_>>());
        assert_eq!(d.rows, 4);
        // Late rows older than the horizon or below the deleted ids are not taken.
        d.push(&row(20, 1000, 1));
        d.push(&row(1, 4 * 3_600_000, 1));
        assert_eq!(d.rows, 4);
    }
}
