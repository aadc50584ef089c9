//! The hours the memory budget does not hold, kept on disk instead of being let go: one file
//! per hour (the chunk's columns, fixed-width, so reading one back is a copy), read back one hour at a time
//! when a range reaches into them. Every answer stays exact and comes from the monitor's own
//! files; the source is never asked for them again, and memory holds one hour at a time.
//!
//! Files are immutable once the first load is over: changing an hour (a late row) writes a
//! new file under a new number, and the old one is deleted only after the next snapshot,
//! which names the files it relies on, has been written. During the first load no snapshot
//! names any file, so late rows are appended to the hour's file in place (rows arrive in id
//! order, which need not be time order) and each hour is rewritten whole once at the end.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::chunk::{Chunk, Limits};

/// One archived hour's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The file's number (`<hour>-<gen>.bin`): a rewrite takes a new one.
    pub generation: u64,
    /// Its length in bytes, as the snapshot knew it.
    pub len: u64,
    /// Records in the file (1 once settled).
    pub records: u32,
    pub rows: u64,
    pub min_id: i64,
    pub max_id: i64,
    /// The hour's tokens and distinct users (with `rows`, what the heatmap needs); exact
    /// when the file holds one record.
    pub tokens: i64,
    pub users: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Refused(&'static str),
}

#[derive(Debug)]
pub struct Archive {
    dir: PathBuf,
    hours: BTreeMap<i64, Stored>,
    rows: usize,
    next_generation: u64,
    /// Files replaced or let go, perhaps still named by the last snapshot.
    doomed: Vec<PathBuf>,
    /// The first load is running: no snapshot names these files yet.
    appending: bool,
    /// Reads that failed (a file damaged or gone under us), and the newest such hour: the
    /// query falls back to SQL and the feed lets those hours go.
    faults: AtomicU64,
    failed_hour: AtomicI64,
    /// The interned user 0 (rows of keys without an owner): not counted among an hour's
    /// users. Kept current by the rollup before each write.
    pub no_user: Option<u32>,
}

/// A file holds no record larger than this (an hour of 20 M rows would be ~1.6 GB).
const MAX_RECORD: u64 = 4 << 30;

impl Archive {
    /// An empty archive in `dir`, removing whatever an earlier run left there.
    pub fn fresh(dir: &Path) -> Result<Self, ArchiveError> {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        std::fs::create_dir_all(dir)?;
        Ok(Self::with(dir, BTreeMap::new(), 0, true))
    }

    /// The archive a snapshot names: every file must be there with the length it had;
    /// files it does not name (written after it, or replaced) are deleted.
    pub fn restore(
        dir: &Path,
        hours: Vec<(i64, Stored)>,
        next_generation: u64,
    ) -> Result<Self, ArchiveError> {
        let hours: BTreeMap<i64, Stored> = hours.into_iter().collect();
        let a = Self::with(dir, hours, next_generation, false);
        for (h, s) in &a.hours {
            let len = std::fs::metadata(a.path(*h, s.generation))?.len();
            if len != s.len || s.generation >= next_generation {
                return Err(ArchiveError::Refused("an archived hour changed"));
            }
        }
        let named: std::collections::HashSet<PathBuf> = a
            .hours
            .iter()
            .map(|(h, s)| a.path(*h, s.generation))
            .collect();
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if !named.contains(&p) {
                let _ = std::fs::remove_file(&p);
            }
        }
        Ok(a)
    }

    fn with(
        dir: &Path,
        hours: BTreeMap<i64, Stored>,
        next_generation: u64,
        appending: bool,
    ) -> Self {
        let rows = hours.values().map(|s| s.rows as usize).sum();
        Self {
            dir: dir.to_owned(),
            hours,
            rows,
            next_generation,
            doomed: Vec::new(),
            appending,
            faults: AtomicU64::new(0),
            failed_hour: AtomicI64::new(i64::MIN),
            no_user: None,
        }
    }

    fn path(&self, hour: i64, generation: u64) -> PathBuf {
        self.dir.join(format!("{hour}-{generation}.bin"))
    }

    /// What a snapshot records: each hour's file.
    pub fn listing(&self) -> (Vec<(i64, Stored)>, u64) {
        (
            self.hours.iter().map(|(h, s)| (*h, *s)).collect(),
            self.next_generation,
        )
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn newest_hour(&self) -> Option<i64> {
        self.hours.keys().next_back().copied()
    }

    /// The archived hours in `lo..=hi` (none when `lo > hi`) whose totals are exact (one
    /// record), with them.
    pub fn totals_in(&self, lo: i64, hi: i64) -> impl Iterator<Item = (i64, &Stored)> + '_ {
        self.hours
            .range(lo..hi.saturating_add(1).max(lo))
            .filter(|(_, s)| s.records == 1)
            .map(|(h, s)| (*h, s))
    }

    /// The archived hours in `lo..=hi`.
    pub fn hours_in(&self, lo: i64, hi: i64) -> impl Iterator<Item = i64> + '_ {
        self.hours.range(lo..=hi).map(|(h, _)| *h)
    }

    /// Adds `chunk`'s rows to `hour`: a new file for a new hour; appended in place during
    /// the first load; else the hour rewritten under a new number.
    pub fn put(
        &mut self,
        hour: i64,
        chunk: &Chunk,
        unit: i64,
        limits: &Limits,
    ) -> Result<(), ArchiveError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let rows = chunk.len() as u64;
        let (min_id, max_id) = (chunk.min_id(), chunk.max_id());
        match self.hours.get(&hour).copied() {
            None => {
                let s = self.write_new(hour, chunk)?;
                self.hours.insert(hour, s);
            }
            Some(mut s) if self.appending => {
                let bytes = encode(hour, chunk);
                let mut f = OpenOptions::new()
                    .append(true)
                    .open(self.path(hour, s.generation))?;
                f.write_all(&bytes)?;
                s.len += bytes.len() as u64;
                s.records += 1;
                s.rows += rows;
                s.min_id = s.min_id.min(min_id);
                s.max_id = s.max_id.max(max_id);
                self.hours.insert(hour, s);
            }
            Some(old) => {
                let mut whole = self.get(hour, unit, limits)?;
                whole.append(chunk.clone());
                whole.settle();
                let s = self.write_new(hour, &whole)?;
                self.retire(hour, old.generation);
                self.hours.insert(hour, s);
            }
        }
        // The hour grew by the chunk's rows whichever way it was written.
        self.rows += rows as usize;
        Ok(())
    }

    /// Writes `chunk` as the only record of a new file for `hour`.
    fn write_new(&mut self, hour: i64, chunk: &Chunk) -> Result<Stored, ArchiveError> {
        let no_user = self.no_user;
        let generation = self.next_generation;
        self.next_generation += 1;
        let bytes = encode(hour, chunk);
        let path = self.path(hour, generation);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, &path)?;
        Ok(Stored {
            generation,
            len: bytes.len() as u64,
            records: 1,
            rows: chunk.len() as u64,
            min_id: chunk.min_id(),
            max_id: chunk.max_id(),
            tokens: (0..chunk.len()).map(|i| chunk.tokens(i)).sum(),
            users: {
                let mut u = chunk.user.clone();
                u.retain(|&x| Some(x) != no_user);
                u.sort_unstable();
                u.dedup();
                u.len() as i64
            },
        })
    }

    /// The rows of `hour`, sorted by time. A failure is counted (see `faults`).
    pub fn get(&self, hour: i64, unit: i64, limits: &Limits) -> Result<Chunk, ArchiveError> {
        let out = self.read(hour, unit, limits);
        if out.is_err() {
            self.faults.fetch_add(1, Ordering::AcqRel);
            self.failed_hour.fetch_max(hour, Ordering::AcqRel);
        }
        out
    }

    fn read(&self, hour: i64, unit: i64, limits: &Limits) -> Result<Chunk, ArchiveError> {
        let s = self
            .hours
            .get(&hour)
            .ok_or(ArchiveError::Refused("hour not archived"))?;
        let mut bytes = Vec::with_capacity(s.len as usize);
        File::open(self.path(hour, s.generation))?.read_to_end(&mut bytes)?;
        let mut rest = bytes.as_slice();
        let mut out: Option<Chunk> = None;
        while !rest.is_empty() {
            let (len, tail) = rest
                .split_at_checked(8)
                .ok_or(ArchiveError::Refused("truncated"))?;
            let len = u64::from_le_bytes(
                len.try_into()
                    .map_err(|_| ArchiveError::Refused("truncated"))?,
            );
            if len > MAX_RECORD || len as usize > tail.len() {
                return Err(ArchiveError::Refused("truncated"));
            }
            let (record, tail) = tail.split_at(len as usize);
            let (h, c) = Chunk::from_raw(record, unit, limits).map_err(ArchiveError::Refused)?;
            if h != hour {
                return Err(ArchiveError::Refused("another hour"));
            }
            match out.as_mut() {
                Some(o) => o.append(c),
                None => out = Some(c),
            }
            rest = tail;
        }
        let mut c = out.ok_or(ArchiveError::Refused("empty"))?;
        c.settle();
        Ok(c)
    }

    /// How many reads have failed so far.
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Acquire)
    }

    /// The newest hour whose read failed since the last call.
    pub fn take_failed(&self) -> Option<i64> {
        let h = self.failed_hour.swap(i64::MIN, Ordering::AcqRel);
        (h != i64::MIN).then_some(h)
    }

    /// Lets every hour before `hour` go.
    pub fn remove_before(&mut self, hour: i64) {
        let old: Vec<i64> = self.hours.range(..hour).map(|(h, _)| *h).collect();
        self.remove(&old);
    }

    /// Forgets the rows with ids below `min_id` (deleted at the source): hours holding only
    /// such rows go, hours holding some are rewritten without them. New API deletes by time,
    /// so with ids in time order that is one hour; in any order, each hour at most once per
    /// cleanup.
    pub fn forget_below(
        &mut self,
        min_id: i64,
        unit: i64,
        limits: &Limits,
    ) -> Result<(), ArchiveError> {
        let gone: Vec<i64> = self
            .hours
            .iter()
            .filter(|(_, s)| s.max_id < min_id)
            .map(|(h, _)| *h)
            .collect();
        self.remove(&gone);
        let partial: Vec<(i64, Stored)> = self
            .hours
            .iter()
            .filter(|(_, s)| s.min_id < min_id)
            .map(|(h, s)| (*h, *s))
            .collect();
        for (h, old) in partial {
            let mut c = self.get(h, unit, limits)?;
            c.retain_from(min_id);
            if c.is_empty() {
                self.remove(&[h]);
                continue;
            }
            let s = self.write_new(h, &c)?;
            self.retire(h, old.generation);
            self.rows = self.rows - old.rows as usize + c.len();
            self.hours.insert(h, s);
        }
        Ok(())
    }

    /// An hour's replaced file: deleted now during the first load, else after the next
    /// snapshot (the last one may name it).
    fn retire(&mut self, hour: i64, generation: u64) {
        let p = self.path(hour, generation);
        if self.appending {
            let _ = std::fs::remove_file(p);
        } else {
            self.doomed.push(p);
        }
    }

    fn remove(&mut self, hours: &[i64]) {
        for h in hours {
            if let Some(s) = self.hours.remove(h) {
                self.rows -= s.rows as usize;
                self.retire(*h, s.generation);
            }
        }
    }

    /// The first load is over: every hour appended to more than once is rewritten as one
    /// sorted record, and from now on files are replaced, never changed.
    pub fn settle(&mut self, unit: i64, limits: &Limits) -> Result<(), ArchiveError> {
        let many: Vec<(i64, Stored)> = self
            .hours
            .iter()
            .filter(|(_, s)| s.records > 1)
            .map(|(h, s)| (*h, *s))
            .collect();
        for (h, old) in many {
            let c = self.get(h, unit, limits)?;
            let s = self.write_new(h, &c)?;
            let _ = std::fs::remove_file(self.path(h, old.generation));
            self.hours.insert(h, s);
        }
        self.appending = false;
        Ok(())
    }

    /// Makes every file durable: called before a snapshot names them.
    pub fn sync(&self) -> Result<(), ArchiveError> {
        for (h, s) in &self.hours {
            File::open(self.path(*h, s.generation))?.sync_all()?;
        }
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// A snapshot naming the current files was written: the replaced ones can go.
    pub fn purge(&mut self) {
        for p in self.doomed.drain(..) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// One length-prefixed record.
fn encode(hour: i64, chunk: &Chunk) -> Vec<u8> {
    let body = chunk.to_raw(hour);
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out
}
