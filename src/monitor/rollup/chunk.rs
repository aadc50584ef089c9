//! One hour of the rollup's rows, column by column: interned references, times as offsets
//! within the hour, token and quota counts in 32 bits (the rare wider value kept aside by
//! row id). Also its encoding on disk, shared by the snapshot and the archive.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

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

/// Marks a token or quota count kept in `Chunk::wide` instead.
const WIDE: u32 = u32::MAX;

/// The rows of one UTC hour, sorted by time (ties in arrival order).
#[derive(Debug, Default, Clone)]
pub struct Chunk {
    /// The hour's start in source units; `ts` holds offsets from it (an hour of
    /// milliseconds fits 32 bits).
    pub(super) base: i64,
    pub(super) ids: Ids,
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
pub(super) struct Coded {
    pub(super) user: u32,
    pub(super) token: u32,
    pub(super) model: u32,
    pub(super) channel: u32,
    pub(super) ip: u32,
    pub(super) uname: u32,
    pub(super) tname: u32,
}

impl Chunk {
    pub(super) fn new(base: i64) -> Self {
        Self {
            base,
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// Row `i`'s id.
    pub fn id(&self, i: usize) -> i64 {
        self.ids.get(i)
    }

    /// Row `i`'s time, in source units.
    pub fn ts(&self, i: usize) -> i64 {
        self.base + i64::from(self.ts[i])
    }

    pub fn tokens(&self, i: usize) -> i64 {
        match self.tokens[i] {
            WIDE => self.wide_tokens.get(&self.id(i)).copied().unwrap_or(0),
            n => i64::from(n),
        }
    }

    pub fn quota(&self, i: usize) -> i64 {
        match self.quota[i] {
            WIDE => self.wide_quota.get(&self.id(i)).copied().unwrap_or(0),
            n => i64::from(n),
        }
    }

    /// The first row at or after time `t` (source units).
    pub(super) fn first_from(&self, t: i64) -> usize {
        self.ts.partition_point(|&o| self.base + i64::from(o) < t)
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Applies `f` to every column alike.
    fn each_column(&mut self, f: &mut dyn FnMut(&mut dyn Column)) {
        f(&mut self.ids);
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
    pub(super) fn settle(&mut self) {
        if self.unsorted {
            let mut order: Vec<u32> = (0..self.len() as u32).collect();
            order.sort_by_key(|&i| self.ts[i as usize]);
            self.each_column(&mut |c| c.permute(&order));
            self.unsorted = false;
        }
        self.each_column(&mut |c| c.shrink());
    }

    pub(super) fn insert(&mut self, at: usize, r: &Row, c: Coded) {
        // `r.ts` lies in this chunk's hour: the offset is below an hour of milliseconds.
        let offset = u32::try_from(r.ts - self.base).unwrap_or(0);
        let tokens = narrow(r.tokens, r.id, &mut self.wide_tokens);
        let quota = narrow(r.quota, r.id, &mut self.wide_quota);
        self.ids.insert(at, r.id);
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
    pub(super) fn retain_from(&mut self, min_id: i64) -> usize {
        let keep: Vec<bool> = self.ids.iter().map(|i| i >= min_id).collect();
        let gone = keep.iter().filter(|k| !**k).count();
        if gone > 0 {
            self.each_column(&mut |c| c.keep(&keep));
            self.wide_tokens.retain(|id, _| *id >= min_id);
            self.wide_quota.retain(|id, _| *id >= min_id);
        }
        gone
    }
}

/// Row ids as 32-bit offsets from a base chosen 2^31 below the first id (4 bytes a row
/// instead of 8: a tenth of the rollup's memory). A chunk given an id more than 2^31 away
/// keeps every id whole from then on.
#[derive(Debug, Clone)]
pub(super) enum Ids {
    Narrow { base: i64, off: Vec<u32> },
    Wide(Vec<i64>),
}

impl Default for Ids {
    fn default() -> Self {
        Ids::Wide(Vec::new())
    }
}

impl Ids {
    fn base_for(id: i64) -> i64 {
        id.saturating_sub(1 << 31)
    }

    /// Narrow when every id fits around one base, else whole.
    pub(super) fn from_ids(ids: &[i64]) -> Self {
        let (Some(&lo), Some(&hi)) = (ids.iter().min(), ids.iter().max()) else {
            return Ids::default();
        };
        let base = Self::base_for(lo);
        if hi
            .checked_sub(base)
            .is_some_and(|d| d <= i64::from(u32::MAX))
        {
            Ids::Narrow {
                base,
                off: ids.iter().map(|&v| (v - base) as u32).collect(),
            }
        } else {
            Ids::Wide(ids.to_vec())
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Ids::Narrow { off, .. } => off.len(),
            Ids::Wide(v) => v.len(),
        }
    }

    pub(super) fn get(&self, i: usize) -> i64 {
        match self {
            Ids::Narrow { base, off } => base + i64::from(off[i]),
            Ids::Wide(v) => v[i],
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// `id`'s offset, or `None` when it does not fit this base.
    fn offset(base: i64, id: i64) -> Option<u32> {
        id.checked_sub(base).and_then(|d| u32::try_from(d).ok())
    }

    pub(super) fn insert(&mut self, at: usize, id: i64) {
        if let Ids::Wide(v) = self
            && v.is_empty()
        {
            *self = Ids::Narrow {
                base: Self::base_for(id),
                off: Vec::new(),
            };
        }
        match self {
            Ids::Narrow { base, off } => match Self::offset(*base, id) {
                Some(o) => off.insert(at, o),
                None => {
                    let mut whole: Vec<i64> = off.iter().map(|&o| *base + i64::from(o)).collect();
                    whole.insert(at, id);
                    *self = Ids::Wide(whole);
                }
            },
            Ids::Wide(v) => v.insert(at, id),
        }
    }

    pub(super) fn push(&mut self, id: i64) {
        self.insert(self.len(), id);
    }
}

impl Column for Ids {
    fn permute(&mut self, order: &[u32]) {
        match self {
            Ids::Narrow { off, .. } => off.permute(order),
            Ids::Wide(v) => v.permute(order),
        }
    }

    fn keep(&mut self, keep: &[bool]) {
        match self {
            Ids::Narrow { off, .. } => off.keep(keep),
            Ids::Wide(v) => v.keep(keep),
        }
    }

    fn shrink(&mut self) {
        match self {
            Ids::Narrow { off, .. } => off.shrink(),
            Ids::Wide(v) => v.shrink(),
        }
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

/// Row counts per interned table (users, tokens, models, channels, IPs, names): what a
/// decoded chunk's references must stay below.
pub(super) type Limits = [usize; 6];

/// One hourly chunk on disk: borrowed from the rollup when written (no copy of the
/// columns), owned when read.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ChunkRecord<'a> {
    hour: i64,
    base: i64,
    id: Cow<'a, [i64]>,
    ts: Cow<'a, [u32]>,
    user: Cow<'a, [u32]>,
    token: Cow<'a, [u32]>,
    model: Cow<'a, [u32]>,
    channel: Cow<'a, [u32]>,
    ip: Cow<'a, [u32]>,
    uname: Cow<'a, [u32]>,
    tname: Cow<'a, [u32]>,
    tokens: Cow<'a, [u32]>,
    quota: Cow<'a, [u32]>,
    wide_tokens: Vec<(i64, i64)>,
    wide_quota: Vec<(i64, i64)>,
}

impl Chunk {
    pub(super) fn record(&self, hour: i64) -> ChunkRecord<'_> {
        ChunkRecord {
            hour,
            base: self.base,
            id: Cow::Owned(self.ids.iter().collect()),
            ts: Cow::Borrowed(&self.ts),
            user: Cow::Borrowed(&self.user),
            token: Cow::Borrowed(&self.token),
            model: Cow::Borrowed(&self.model),
            channel: Cow::Borrowed(&self.channel),
            ip: Cow::Borrowed(&self.ip),
            uname: Cow::Borrowed(&self.uname),
            tname: Cow::Borrowed(&self.tname),
            tokens: Cow::Borrowed(&self.tokens),
            quota: Cow::Borrowed(&self.quota),
            wide_tokens: self.wide_tokens.iter().map(|(k, v)| (*k, *v)).collect(),
            wide_quota: self.wide_quota.iter().map(|(k, v)| (*k, *v)).collect(),
        }
    }

    /// Appends `other`'s rows (same hour) after this chunk's; `settle` sorts them.
    pub(super) fn append(&mut self, other: Chunk) {
        if other.is_empty() {
            return;
        }
        self.unsorted |= !self.is_empty() || other.unsorted;
        for id in other.ids.iter() {
            self.ids.push(id);
        }
        self.ts.extend(other.ts);
        self.user.extend(other.user);
        self.token.extend(other.token);
        self.model.extend(other.model);
        self.channel.extend(other.channel);
        self.ip.extend(other.ip);
        self.uname.extend(other.uname);
        self.tname.extend(other.tname);
        self.tokens.extend(other.tokens);
        self.quota.extend(other.quota);
        self.wide_tokens.extend(other.wide_tokens);
        self.wide_quota.extend(other.wide_quota);
    }

    /// The smallest row id held (0 when empty).
    pub(super) fn min_id(&self) -> i64 {
        self.ids.iter().min().unwrap_or(0)
    }

    /// The largest row id held (0 when empty).
    pub(super) fn max_id(&self) -> i64 {
        self.ids.iter().max().unwrap_or(0)
    }
}

impl ChunkRecord<'static> {
    /// The chunk and its hour, once every column has the same length, every interned
    /// reference points inside its table and the base is the hour's start.
    pub(super) fn into_chunk(
        self,
        unit: i64,
        limits: &Limits,
    ) -> Result<(i64, Chunk), &'static str> {
        let c = Chunk {
            base: self.base,
            ids: Ids::from_ids(&self.id),
            ts: self.ts.into_owned(),
            user: self.user.into_owned(),
            token: self.token.into_owned(),
            model: self.model.into_owned(),
            channel: self.channel.into_owned(),
            ip: self.ip.into_owned(),
            uname: self.uname.into_owned(),
            tname: self.tname.into_owned(),
            tokens: self.tokens.into_owned(),
            quota: self.quota.into_owned(),
            wide_tokens: self.wide_tokens.into_iter().collect(),
            wide_quota: self.wide_quota.into_iter().collect(),
            // Written chunks are settled: sorted by time.
            unsorted: false,
        };
        c.checked(self.hour, unit, limits).map(|c| (self.hour, c))
    }
}

impl Chunk {
    /// The chunk, once every column has the same length, every interned reference points
    /// inside its table and the base is the hour's start.
    fn checked(self, hour: i64, unit: i64, limits: &Limits) -> Result<Chunk, &'static str> {
        let c = &self;
        let n = c.ts.len();
        let same_len = [
            c.ids.len(),
            c.user.len(),
            c.token.len(),
            c.model.len(),
            c.channel.len(),
            c.ip.len(),
            c.uname.len(),
            c.tname.len(),
            c.tokens.len(),
            c.quota.len(),
        ]
        .iter()
        .all(|&l| l == n);
        let refs_ok = [
            (&c.user, limits[0]),
            (&c.token, limits[1]),
            (&c.model, limits[2]),
            (&c.channel, limits[3]),
            (&c.ip, limits[4]),
            (&c.uname, limits[5]),
            (&c.tname, limits[5]),
        ]
        .iter()
        .all(|(col, max)| col.iter().all(|&v| (v as usize) < *max));
        let hour_ok = c.base == hour * 3600 * unit;
        if !same_len || !refs_ok || !hour_ok {
            return Err("inconsistent chunk");
        }
        Ok(self)
    }

    /// The chunk as fixed-width little-endian columns (the archive's records): decoding is
    /// a copy per column, several times faster than the snapshot's variable-length integers,
    /// at ~48 bytes a row instead of ~22. Queries reaching into archived hours decode them
    /// each time; the snapshot is read once at start.
    pub(super) fn to_raw(&self, hour: i64) -> Vec<u8> {
        let n = self.len();
        let wide = self.wide_tokens.len() + self.wide_quota.len();
        let mut out = Vec::with_capacity(RAW_HEAD + n * RAW_ROW + wide * 16);
        for v in [
            hour,
            self.base,
            n as i64,
            self.wide_tokens.len() as i64,
            self.wide_quota.len() as i64,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in self.ids.iter() {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for col in self.u32_columns() {
            for v in col {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        for (k, v) in self.wide_tokens.iter().chain(self.wide_quota.iter()) {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    fn u32_columns(&self) -> [&Vec<u32>; 10] {
        [
            &self.ts,
            &self.user,
            &self.token,
            &self.model,
            &self.channel,
            &self.ip,
            &self.uname,
            &self.tname,
            &self.tokens,
            &self.quota,
        ]
    }

    /// Reads what `to_raw` wrote, checked as a snapshot's chunk is.
    pub(super) fn from_raw(
        bytes: &[u8],
        unit: i64,
        limits: &Limits,
    ) -> Result<(i64, Chunk), &'static str> {
        const BAD: &str = "inconsistent chunk";
        let head: Vec<i64> = bytes
            .get(..RAW_HEAD)
            .ok_or(BAD)?
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
            .collect();
        let [hour, base, n, wt, wq] = head[..] else {
            return Err(BAD);
        };
        let (n, wt, wq) = (
            usize::try_from(n).map_err(|_| BAD)?,
            usize::try_from(wt).map_err(|_| BAD)?,
            usize::try_from(wq).map_err(|_| BAD)?,
        );
        let want = n
            .checked_mul(RAW_ROW)
            .and_then(|r| r.checked_add(RAW_HEAD))
            .and_then(|r| r.checked_add(wt.checked_add(wq)?.checked_mul(16)?))
            .ok_or(BAD)?;
        if bytes.len() != want {
            return Err(BAD);
        }
        let mut at = RAW_HEAD;
        let mut take = |len: usize| {
            let part = &bytes[at..at + len];
            at += len;
            part
        };
        let i64s = |b: &[u8]| -> Vec<i64> {
            b.chunks_exact(8)
                .map(|x| i64::from_le_bytes(x.try_into().unwrap_or_default()))
                .collect()
        };
        let u32s = |b: &[u8]| -> Vec<u32> {
            b.chunks_exact(4)
                .map(|x| u32::from_le_bytes(x.try_into().unwrap_or_default()))
                .collect()
        };
        let ids = Ids::from_ids(&i64s(take(n * 8)));
        let mut cols: Vec<Vec<u32>> = (0..10).map(|_| u32s(take(n * 4))).collect();
        let pairs = |v: Vec<i64>| -> HashMap<i64, i64> {
            v.chunks_exact(2).map(|p| (p[0], p[1])).collect()
        };
        let wide_tokens = pairs(i64s(take(wt * 16)));
        let wide_quota = pairs(i64s(take(wq * 16)));
        let mut next = || cols.remove(0);
        let c = Chunk {
            base,
            ids,
            ts: next(),
            user: next(),
            token: next(),
            model: next(),
            channel: next(),
            ip: next(),
            uname: next(),
            tname: next(),
            tokens: next(),
            quota: next(),
            wide_tokens,
            wide_quota,
            unsorted: false,
        };
        c.checked(hour, unit, limits).map(|c| (hour, c))
    }
}

/// `to_raw`'s header (hour, base, rows, wide token and quota counts) and bytes a row.
const RAW_HEAD: usize = 40;
const RAW_ROW: usize = 8 + 10 * 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_layout_round_trips_and_refuses_a_damaged_record() {
        let mut c = Chunk::new(7200);
        for i in 0..5u32 {
            let r = Row {
                id: 10 + i64::from(i),
                ts: 7200 + i64::from(i) * 60,
                tokens: if i == 2 { 1 << 40 } else { i64::from(i) },
                quota: if i == 3 { -5 } else { 100 },
                ..Row::default()
            };
            let coded = Coded {
                user: i % 2,
                token: 0,
                model: 1,
                channel: 0,
                ip: 0,
                uname: 0,
                tname: 1,
            };
            c.insert(c.len(), &r, coded);
        }
        let limits = [2, 1, 2, 1, 1, 2];
        let raw = c.to_raw(2);
        let (hour, back) = Chunk::from_raw(&raw, 1, &limits).unwrap();
        assert_eq!(hour, 2);
        assert_eq!(
            back.ids.iter().collect::<Vec<_>>(),
            (10..15).collect::<Vec<_>>()
        );
        assert_eq!(back.user, c.user);
        assert_eq!(
            (0..5).map(|i| back.tokens(i)).collect::<Vec<_>>(),
            vec![0, 1, 1 << 40, 3, 4]
        );
        assert_eq!(back.quota(3), -5);
        assert!(
            Chunk::from_raw(&raw[..raw.len() - 1], 1, &limits).is_err(),
            "truncated"
        );
        assert!(
            Chunk::from_raw(&raw, 1000, &limits).is_err(),
            "another unit"
        );
        assert!(
            Chunk::from_raw(&raw, 1, &[1, 1, 1, 1, 1, 1]).is_err(),
            "references out of bounds"
        );
    }

    #[test]
    fn ids_are_kept_in_32_bits_until_one_does_not_fit() {
        let mut ids = Ids::default();
        for id in [5_000_000_000i64, 5_000_000_007, 4_999_999_990] {
            ids.push(id);
        }
        assert!(matches!(ids, Ids::Narrow { .. }));
        ids.insert(1, 5_000_000_001);
        ids.permute(&[3, 0, 1, 2]);
        assert_eq!(
            ids.iter().collect::<Vec<_>>(),
            vec![4_999_999_990, 5_000_000_000, 5_000_000_001, 5_000_000_007]
        );
        ids.push(1);
        assert!(matches!(ids, Ids::Wide(_)), "an id 5 billion away");
        ids.keep(&[true, false, true, true, true]);
        assert_eq!(
            ids.iter().collect::<Vec<_>>(),
            vec![4_999_999_990, 5_000_000_001, 5_000_000_007, 1]
        );
        let back = Ids::from_ids(&[7, -3, 12]);
        assert!(matches!(back, Ids::Narrow { .. }));
        assert_eq!(back.iter().collect::<Vec<_>>(), vec![7, -3, 12]);
        assert!(matches!(Ids::from_ids(&[i64::MIN, i64::MAX]), Ids::Wide(_)));
    }
}
