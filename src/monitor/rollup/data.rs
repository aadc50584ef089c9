//! The rollup's memory: the billed rows of the horizon, column by column, in hourly chunks
//! kept in time order, with every repeated value (ids, names, models, IPs) interned, times
//! as offsets within the hour and token and quota counts in 32 bits (the rare larger value
//! kept aside by row id), ids in 32 bits around a base. 44 bytes a row: 10 million rows hold in
//! ~440 MB.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use super::archive::Archive;
pub use super::chunk::{Chunk, Row};
use super::chunk::{Coded, Limits};

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
    /// The oldest hours, on disk, when the memory budget does not hold them (all older than
    /// every hour in `chunks`); `None` without a state directory: those hours go to SQL.
    pub archive: Option<Archive>,
    /// Rows for archived hours (late ids) waiting to be written at the end of the page.
    pending: BTreeMap<i64, Chunk>,
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
            archive: None,
            pending: BTreeMap::new(),
        }
    }

    /// What an archived chunk's references must stay below.
    pub fn limits(&self) -> Limits {
        [
            self.users.len(),
            self.tokens.len(),
            self.models.len(),
            self.channels.len(),
            self.ips.len(),
            self.names.len(),
        ]
    }

    /// Rows held on disk by the archive.
    pub fn archived_rows(&self) -> usize {
        self.archive.as_ref().map_or(0, Archive::rows)
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
        if self
            .archive
            .as_ref()
            .and_then(Archive::newest_hour)
            .is_some_and(|newest| hour <= newest)
        {
            let base = hour * 3600 * self.unit;
            let p = self.pending.entry(hour).or_insert_with(|| Chunk::new(base));
            p.unsorted = true;
            let at = p.len();
            p.insert(at, r, c);
            return;
        }
        if !self.chunks.contains_key(&hour) {
            // A new hour: the previous one is (nearly always) complete. During a load in
            // time order too: its spare capacity goes back now, while the allocator can
            // still reuse it for the next hour, instead of all at the end.
            if let Some((_, prev)) = self.chunks.range_mut(..hour).next_back()
                && (self.ready || !prev.unsorted)
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
        self.flush_pending();
        let (unit, limits) = (self.unit, self.limits());
        if let Some(a) = self.archive_mut()
            && let Err(e) = a.settle(unit, &limits)
        {
            tracing::warn!(error = %e, "monitor rollup: archive not usable; older hours go to SQL");
            self.drop_archive();
        }
        self.ready = true;
    }

    /// After a first load from the source: each chunk copied into allocations of exactly
    /// its size, one at a time, as a restore would make them — the load left the columns
    /// among the holes of its pages. (A restored rollup is already laid out so.)
    pub fn compact(&mut self) {
        for c in self.chunks.values_mut() {
            *c = c.clone();
        }
    }

    /// The archive failed: its hours are let go (answered by SQL from now on).
    fn drop_archive(&mut self) {
        self.pending.clear();
        if let Some(newest) = self.archive.take().and_then(|a| a.newest_hour()) {
            self.advance_to((newest + 1) * 3600 * self.unit);
        }
    }

    /// Writes the rows that arrived for archived hours.
    fn flush_pending(&mut self) {
        let (unit, limits) = (self.unit, self.limits());
        let pending = std::mem::take(&mut self.pending);
        let Some(a) = self.archive_mut() else {
            return;
        };
        for (h, mut c) in pending {
            c.settle();
            if let Err(e) = a.put(h, &c, unit, &limits) {
                tracing::warn!(error = %e, "monitor rollup: archive not writable; older hours go to SQL");
                self.drop_archive();
                return;
            }
        }
    }

    /// An archived hour could not be read back: it and every older hour are let go.
    pub fn drop_failed_hours(&mut self) {
        if let Some(h) = self.archive.as_ref().and_then(Archive::take_failed) {
            tracing::warn!(
                hour = h,
                "monitor rollup: archived hour unreadable; older hours go to SQL"
            );
            self.advance_to((h + 1) * 3600 * self.unit);
        }
    }

    /// Moves the horizon forward to `from` (an hour boundary), forgetting older rows.
    pub fn advance_to(&mut self, from: i64) {
        if from <= self.covered_from && self.covered_from != i64::MAX {
            return;
        }
        self.covered_from = from;
        let first_kept = self.hour_of(from);
        if let Some(a) = self.archive_mut() {
            a.remove_before(first_kept);
        }
        self.pending = self.pending.split_off(&first_kept);
        let old: Vec<i64> = self.chunks.range(..first_kept).map(|(h, _)| *h).collect();
        for h in old {
            if let Some(c) = self.chunks.remove(&h) {
                self.rows -= c.len();
            }
        }
    }

    /// Moves the oldest hours out of memory until at most `max_rows` rows are held there
    /// (the newest hour is always kept whole): into the archive when there is one, else
    /// they are let go and the horizon moves with them (ranges reaching before it go to SQL).
    /// Also writes the rows that arrived for archived hours.
    /// The archive, told which interned user is "no user" (it counts each hour's users).
    fn archive_mut(&mut self) -> Option<&mut super::archive::Archive> {
        let no_user = self.users.find(&0);
        let a = self.archive.as_mut()?;
        a.no_user = no_user;
        Some(a)
    }

    pub fn fit(&mut self, max_rows: usize) {
        self.flush_pending();
        if max_rows == 0 {
            return;
        }
        let (unit, limits) = (self.unit, self.limits());
        // Told once here: the loop below holds the oldest chunk while writing it out.
        let _ = self.archive_mut();
        while self.rows > max_rows && self.chunks.len() > 1 {
            let Some(mut oldest) = self.chunks.first_entry() else {
                break;
            };
            let hour = *oldest.key();
            if let Some(a) = self.archive.as_mut() {
                oldest.get_mut().settle();
                match a.put(hour, oldest.get(), unit, &limits) {
                    Ok(()) => {
                        self.rows -= oldest.remove().len();
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "monitor rollup: archive not writable; older hours go to SQL");
                        self.drop_archive();
                    }
                }
            }
            self.advance_to((hour + 1) * 3600 * unit);
        }
    }

    /// The source no longer holds ids below `min_id` (old logs deleted): forget them too.
    pub fn forget_below(&mut self, min_id: i64) {
        if min_id <= self.min_id {
            return;
        }
        self.min_id = min_id;
        let (unit, limits) = (self.unit, self.limits());
        if let Some(a) = self.archive_mut()
            && let Err(e) = a.forget_below(min_id, unit, &limits)
        {
            tracing::warn!(error = %e, "monitor rollup: archive not writable; older hours go to SQL");
            self.drop_archive();
        }
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
    pub fn scan(&self, lo: i64, hi: i64, f: impl FnMut(&Chunk, usize)) {
        self.scan_except(lo, hi, |_| false, f);
    }

    /// `scan`, without reading the archived hours `skip` names (answered from their totals).
    pub fn scan_except(
        &self,
        lo: i64,
        hi: i64,
        skip: impl Fn(i64) -> bool,
        mut f: impl FnMut(&Chunk, usize),
    ) {
        if lo >= hi {
            return;
        }
        let (h_lo, h_hi) = (self.hour_of(lo), self.hour_of(hi - 1));
        if let Some(a) = &self.archive {
            let hours: Vec<i64> = a.hours_in(h_lo, h_hi).filter(|h| !skip(*h)).collect();
            if !hours.is_empty() {
                let (unit, limits) = (self.unit, self.limits());
                // One thread reads and decodes the next hours while this one visits the
                // current: two cores, and at most three hours in memory.
                std::thread::scope(|s| {
                    let (tx, rx) = std::sync::mpsc::sync_channel::<Option<Chunk>>(2);
                    s.spawn(move || {
                        for h in hours {
                            // A failure is counted by the archive (the query is then
                            // answered by SQL); the other hours are still read, so every
                            // damaged one is noted at once.
                            if tx.send(a.get(h, unit, &limits).ok()).is_err() {
                                break;
                            }
                        }
                    });
                    for c in rx.into_iter().flatten() {
                        let (start, end) = (c.first_from(lo), c.first_from(hi));
                        for i in start..end {
                            // Rows deleted at the source since the hour was archived.
                            if c.id(i) >= self.min_id {
                                f(&c, i);
                            }
                        }
                    }
                });
            }
        }
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
        d.scan(lo, hi, |c, i| ids.push(c.id(i)));
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

    /// Every row as (id, ts), in scan order.
    fn everything(d: &Data) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        d.scan(i64::MIN / 2, i64::MAX / 2, |c, i| {
            out.push((c.id(i), c.ts(i)))
        });
        out
    }

    use crate::monitor::params::HeatMetric;

    #[test]
    fn an_archive_keeps_what_the_budget_does_not_hold_even_from_a_load_out_of_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut plain = Data::new(1);
        let mut budgeted = Data::new(1);
        plain.covered_from = 0;
        budgeted.covered_from = 0;
        budgeted.archive = Some(Archive::fresh(&dir.path().join("a")).unwrap());
        // 40 hours of rows whose ids are not in time order, read in pages of 50.
        let rows: Vec<Row> = (0..2000)
            .map(|id| row(id, (id * 7919) % (40 * 3600), id % 13))
            .collect();
        for page in rows.chunks(50) {
            for r in page {
                plain.push(r);
                budgeted.push(r);
            }
            budgeted.fit(300);
            assert!(budgeted.rows <= 300 || budgeted.chunks.len() == 1);
        }
        plain.settle();
        budgeted.settle();
        assert_eq!(budgeted.rows + budgeted.archived_rows(), 2000);
        assert!(budgeted.archived_rows() > 1000);
        assert_eq!(budgeted.covered_from, 0, "nothing was let go");
        assert_eq!(everything(&budgeted), everything(&plain));
        assert_eq!(
            scanned(&budgeted, 5000, 90_000),
            scanned(&plain, 5000, 90_000)
        );
        // The heatmap's hours: archived hours wholly inside a range come from their totals.
        let metrics = [HeatMetric::Reqs, HeatMetric::Tokens, HeatMetric::Users];
        for (lo, hi) in [
            (0, 40 * 3600),
            (1800, 20 * 3600 + 5),
            (3600, 7200),
            (100, 200),
            (-5, 1 << 40),
        ] {
            for m in metrics {
                assert_eq!(
                    budgeted.hours(lo, hi, m),
                    plain.hours(lo, hi, m),
                    "{lo}..{hi} {m:?}"
                );
            }
        }

        // After the load: a late row for an archived hour is written as a new file.
        let late = row(5000, 10, 1);
        plain.push(&late);
        budgeted.push(&late);
        budgeted.fit(300);
        assert_eq!(everything(&budgeted), everything(&plain));
        assert_eq!(budgeted.rows + budgeted.archived_rows(), plain.rows);
        // Deleted logs and the horizon reach the archive too.
        plain.forget_below(100);
        budgeted.forget_below(100);
        assert_eq!(everything(&budgeted), everything(&plain));
        assert_eq!(budgeted.rows + budgeted.archived_rows(), plain.rows);
        for m in metrics {
            assert_eq!(budgeted.hours(0, 1 << 40, m), plain.hours(0, 1 << 40, m));
        }
        plain.advance_to(20 * 3600);
        budgeted.advance_to(20 * 3600);
        assert_eq!(everything(&budgeted), everything(&plain));
        assert!(budgeted.archived_rows() > 0);
    }

    #[test]
    fn an_unreadable_archived_hour_is_counted_and_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let adir = dir.path().join("a");
        let mut d = Data::new(1);
        d.covered_from = 0;
        d.archive = Some(Archive::fresh(&adir).unwrap());
        for id in 0..100 {
            d.push(&row(id, id * 360, 1));
        }
        d.fit(20);
        d.settle();
        let archived = d.archived_rows();
        assert!(archived >= 80, "{archived}");
        for e in std::fs::read_dir(&adir).unwrap() {
            std::fs::write(e.unwrap().path(), b"damaged").unwrap();
        }
        let faults = d.archive.as_ref().unwrap().faults();
        let _ = everything(&d);
        assert!(d.archive.as_ref().unwrap().faults() > faults);
        d.drop_failed_hours();
        assert!(
            d.covered_from > 0,
            "the damaged hours are no longer claimed"
        );
        assert_eq!(d.archived_rows(), 0);
        assert_eq!(everything(&d).len(), d.rows);
    }
}
