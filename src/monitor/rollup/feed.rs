//! Keeps the rollup in step with the source, read-only: pages of rows by id from the start
//! of the horizon, then every poll the rows after the last id seen.
//!
//! Ids are not committed in order: under concurrent inserts id 41 can become visible after
//! id 42 was read. Ids skipped over by recent pages are kept as gaps and asked for again
//! for `GAP_TTL`. Old logs deleted at the source (New API's log cleanup) show up as a rising
//! `MIN(id)`, and the rollup forgets the same rows.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use super::Rollup;
use super::data::Row as LogRow;
use super::snapshot;
use crate::monitor::error::MonitorError;
use crate::monitor::source::{Source, SourceKind};

const GAP_TTL: Duration = Duration::from_secs(120);
const MAX_GAPS: usize = 10_000;
/// How often a caught-up rollup is written to its snapshot (and at shutdown).
const SNAPSHOT_EVERY: Duration = Duration::from_secs(300);

/// Where the rollup keeps its snapshot, and the source it belongs to.
#[derive(Debug, Clone)]
pub struct SnapshotAt {
    pub path: PathBuf,
    /// Identifies the source (kind and DSN); only a digest of it is written.
    pub source: String,
}

/// Asks the feed to write its snapshot now; answered when it is written (or skipped).
pub type PersistRequest = oneshot::Sender<()>;

pub fn spawn(
    rollup: Arc<Rollup>,
    src: Source,
    snapshot: Option<SnapshotAt>,
) -> (tokio::task::JoinHandle<()>, mpsc::Sender<PersistRequest>) {
    let (tx, mut persist) = mpsc::channel::<PersistRequest>(4);
    let task = tokio::spawn(async move {
        let poll = rollup.settings.poll;
        let mut feed = Feed {
            rollup,
            src,
            gaps: BTreeMap::new(),
            started: false,
            failing: false,
            began: Instant::now(),
            snapshot,
            saved_at: Instant::now(),
            prefetched: None,
            newest: None,
        };
        feed.restore().await;
        loop {
            // A shutdown asks for a snapshot even in the middle of a load.
            while let Ok(reply) = persist.try_recv() {
                feed.persist().await;
                let _ = reply.send(());
            }
            let wait = match feed.step().await {
                Ok(true) => {
                    tokio::task::yield_now().await;
                    continue;
                }
                Ok(false) => {
                    feed.failing = false;
                    if feed.saved_at.elapsed() >= SNAPSHOT_EVERY {
                        feed.persist().await;
                    }
                    poll
                }
                Err(e) => {
                    // One line per outage, not one per poll.
                    if !feed.failing {
                        tracing::warn!(error = %e, "monitor rollup: source not readable, retrying");
                    }
                    feed.failing = true;
                    poll.max(Duration::from_secs(1))
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                Some(reply) = persist.recv() => {
                    feed.persist().await;
                    let _ = reply.send(());
                }
            }
        }
    });
    (task, tx)
}

struct Feed {
    rollup: Arc<Rollup>,
    src: Source,
    /// Ids skipped by a page, and when.
    gaps: BTreeMap<i64, Instant>,
    started: bool,
    failing: bool,
    began: Instant,
    snapshot: Option<SnapshotAt>,
    saved_at: Instant,
    /// The next page, already asked for: the rows after this id. While a page is parsed
    /// and stored, the source prepares the next one.
    prefetched: Option<(i64, Prefetch)>,
    /// The newest row's time seen (source units): the horizon counts back from it (or from
    /// now, if that is earlier), so a database that stopped receiving rows weeks ago still
    /// has its last `days` held.
    newest: Option<i64>,
}

type Prefetch = tokio::task::JoinHandle<Result<Vec<(bool, LogRow)>, MonitorError>>;

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Feed {
    /// Loads the snapshot, if there is one for this source that still reaches back to the
    /// horizon: the feed then reads only the rows after it.
    async fn restore(&mut self) {
        let Some(at) = self.snapshot.clone() else {
            return;
        };
        let unit = self.src.unit();
        let started = Instant::now();
        // Without a budget there is no archive: a snapshot naming one is refused (the
        // rollup loads from the source, all of it in memory).
        let budget = self.rollup.settings.max_rows > 0;
        let loaded = tokio::task::spawn_blocking(move || {
            let dir = snapshot::archive_dir(&at.path);
            snapshot::load(&at.path, &at.source, unit, budget.then_some(dir.as_path()))
        })
        .await;
        let restored = match loaded {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "monitor rollup: snapshot not used; loading from the source");
                return;
            }
            Err(_) => return,
        };
        self.newest = restored.data.newest();
        // Under a memory budget the snapshot starts where the budget left it; without one it
        // must reach back to the horizon (else `rollup_days` grew: load again).
        if self.rollup.settings.max_rows == 0 && restored.data.covered_from > self.horizon() {
            tracing::info!(
                "monitor rollup: the snapshot starts after the horizon; loading from the source"
            );
            return;
        }
        let rows = restored.data.rows;
        let now = Instant::now();
        self.gaps = restored.gaps.iter().map(|&id| (id, now)).collect();
        self.rollup
            .last_id
            .store(restored.last_id, Ordering::Release);
        *self.rollup.write_data() = restored.data;
        self.rollup.restored.store(rows, Ordering::Relaxed);
        self.started = true;
        tracing::info!(
            rows,
            last_id = restored.last_id,
            ms = started.elapsed().as_millis() as u64,
            "monitor rollup restored from its snapshot; reading newer rows from the source"
        );
    }

    /// Writes the snapshot of a caught-up rollup (off the async workers).
    async fn persist(&mut self) {
        let Some(at) = self.snapshot.clone() else {
            return;
        };
        if !self.rollup.is_ready() {
            return;
        }
        let rollup = Arc::clone(&self.rollup);
        let gaps: Vec<i64> = self.gaps.keys().copied().collect();
        let started = Instant::now();
        let done = tokio::task::spawn_blocking(move || {
            let last_id = rollup.last_id.load(Ordering::Acquire);
            let d = rollup.read_data();
            let saved =
                snapshot::save(&at.path, &at.source, &d, last_id, &gaps).map(|size| (size, d.rows));
            drop(d);
            if saved.is_ok() {
                // The files this snapshot no longer names can go.
                if let Some(a) = rollup.write_data().archive.as_mut() {
                    a.purge();
                }
            }
            // The encoded records were transient.
            crate::memory::release_free_memory();
            saved
        })
        .await;
        self.saved_at = Instant::now();
        match done {
            Ok(Ok((bytes, rows))) => tracing::info!(
                rows,
                bytes,
                ms = started.elapsed().as_millis() as u64,
                "monitor rollup snapshot written"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "monitor rollup snapshot not written"),
            Err(_) => {}
        }
    }

    /// The start of the horizon in source units: `days` back from the newest row (or from
    /// now, when that is earlier), at an hour boundary.
    fn horizon(&self) -> i64 {
        let unit = self.src.unit();
        let days = i64::from(self.rollup.settings.days);
        let anchor_s = self
            .newest
            .map_or(now_s(), |n| n.div_euclid(unit).min(now_s()));
        let from_s = (anchor_s - days * 86_400).div_euclid(3600) * 3600;
        from_s.max(0) * unit
    }

    fn select(&self) -> String {
        let (d, c) = (self.src.dialect, &self.src.cols);
        let channel = match self.src.kind {
            SourceKind::NewApi => d.int(&format!("COALESCE({}, 0)", c.channel)),
            SourceKind::Native => format!("COALESCE({}, '')", c.channel),
        };
        format!(
            "SELECT {id}, {base}, {ts}, {user}, {token}, COALESCE({model}, ''), {channel}, {tokens}, \
             {quota}, {ip}, COALESCE({un}, ''), COALESCE({tn}, '') FROM {t}",
            id = d.int("id"),
            base = d.int(&format!("CASE WHEN {} THEN 1 ELSE 0 END", c.base)),
            ts = d.int(c.ts),
            user = d.int(&format!("COALESCE({}, 0)", c.user)),
            token = d.int(&format!("COALESCE({}, 0)", c.token)),
            model = c.model,
            tokens = d.int("COALESCE(prompt_tokens, 0) + COALESCE(completion_tokens, 0)"),
            quota = d.int(&format!("COALESCE({}, 0)", c.quota)),
            ip = c.ip,
            un = c.username,
            tn = c.token_name,
            t = c.table,
        )
    }

    /// The page of rows after `last`, by id.
    fn page_sql(&self, last: i64) -> String {
        format!(
            "{} WHERE id > {last} ORDER BY id LIMIT {}",
            self.select(),
            self.rollup.settings.page.max(1)
        )
    }

    async fn one_int(&self, sql: &str) -> Result<Option<i64>, MonitorError> {
        let rows = self.src.fetch(sql).await?;
        Ok(rows
            .first()
            .and_then(|r| r.try_get::<Option<i64>, _>(0).ok().flatten()))
    }

    /// Where to start reading: the smallest id inside the horizon (ids need not follow
    /// time: back-filled rows), or after the newest row when the horizon holds none.
    async fn start(&mut self) -> Result<(), MonitorError> {
        let (d, c) = (self.src.dialect, &self.src.cols);
        // The time index answers this without a scan (New API's `created_at`, ours `ts`).
        self.newest = self
            .one_int(&format!(
                "SELECT {} FROM {}",
                d.int(&format!("MAX({})", c.ts)),
                c.table
            ))
            .await?;
        let from = self.horizon();
        let first = self
            .one_int(&format!(
                "SELECT {id} FROM {t} WHERE {ts} >= {from}",
                id = d.int("MIN(id)"),
                t = c.table,
                ts = c.ts,
            ))
            .await?;
        let last = match first {
            Some(id) => id - 1,
            None => self
                .one_int(&format!("SELECT {} FROM {}", d.int("MAX(id)"), c.table))
                .await?
                .unwrap_or(0),
        };
        self.rollup.last_id.store(last, Ordering::Release);
        // Under a memory budget the oldest hours go to disk, beside the snapshot.
        let archive = match &self.snapshot {
            Some(at) if self.rollup.settings.max_rows > 0 => {
                let dir = snapshot::archive_dir(&at.path);
                // A snapshot left from before names files this load replaces: it goes
                // first, so a crash during the load cannot pair it with the new files.
                let old = at.path.clone();
                let made = tokio::task::spawn_blocking(move || {
                    match std::fs::remove_file(&old) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e.into()),
                    }
                    super::archive::Archive::fresh(&dir)
                })
                .await;
                match made {
                    Ok(Ok(a)) => Some(a),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "monitor rollup: no archive; hours beyond the memory budget go to SQL");
                        None
                    }
                    Err(_) => None,
                }
            }
            Some(at) => {
                // An archive left by an earlier run under a budget is of no use now.
                let dir = snapshot::archive_dir(&at.path);
                let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
                None
            }
            None => None,
        };
        {
            let mut data = self.rollup.write_data();
            data.advance_to(from);
            data.archive = archive;
        }
        self.started = true;
        Ok(())
    }

    /// The page after `last`: the one fetched ahead when it follows `last`, else fetched
    /// now; when it is full, the one after it is asked for at once.
    async fn next_page(&mut self, last: i64) -> Result<Vec<(bool, LogRow)>, MonitorError> {
        let page = match self.prefetched.take() {
            Some((after, next)) if after == last => match next.await {
                Ok(rows) => rows?,
                Err(_) => self.src.fetch_log_rows(&self.page_sql(last)).await?,
            },
            stale => {
                if let Some((_, next)) = stale {
                    next.abort();
                }
                self.src.fetch_log_rows(&self.page_sql(last)).await?
            }
        };
        if page.len() >= self.rollup.settings.page.max(1)
            && let Some(next_after) = page.last().map(|(_, r)| r.id)
        {
            let src = self.src.clone();
            let sql = self.page_sql(next_after);
            self.prefetched = Some((
                next_after,
                tokio::spawn(async move { src.fetch_log_rows(&sql).await }),
            ));
        }
        Ok(page)
    }

    /// One page; `true` when more are waiting.
    async fn step(&mut self) -> Result<bool, MonitorError> {
        if !self.started {
            self.start().await?;
        }
        let c = &self.src.cols;
        let min_id = self
            .one_int(&format!(
                "SELECT {} FROM {}",
                self.src.dialect.int("MIN(id)"),
                c.table
            ))
            .await?;
        let last = self.rollup.last_id.load(Ordering::Acquire);
        let page = self.next_page(last).await?;
        let full = page.len() >= self.rollup.settings.page.max(1);
        let rows = page;
        let late = self.late_rows().await?;
        self.note_gaps(last, &rows);
        let newest = rows.iter().chain(late.iter()).map(|(_, r)| r.ts).max();
        self.newest = self.newest.max(newest);

        let horizon = self.horizon();
        {
            let mut data = self.rollup.write_data();
            data.drop_failed_hours();
            data.advance_to(horizon);
            if let Some(m) = min_id {
                data.forget_below(m);
            }
            for (billed, row) in rows.iter().chain(late.iter()) {
                if *billed {
                    data.push(row);
                }
            }
            data.fit(self.rollup.settings.max_rows);
            if !full && !data.ready {
                data.settle();
                if self.rollup.restored.load(Ordering::Relaxed) == 0 {
                    data.compact();
                }
            }
        }
        if let Some((_, r)) = rows.last() {
            self.rollup.last_id.store(r.id, Ordering::Release);
        }
        self.rollup
            .polled_at
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        if !full && !self.rollup.is_ready() {
            // The load's transient allocations are garbage now: give them back.
            let _ = tokio::task::spawn_blocking(crate::memory::release_free_memory).await;
        }
        if !full && !self.rollup.ready.swap(true, Ordering::AcqRel) {
            metrics::gauge!(crate::telemetry::ROLLUP_LOAD).set(self.began.elapsed().as_secs_f64());
            tracing::info!(
                rows = self.rollup.read_data().rows,
                seconds = self.began.elapsed().as_secs(),
                "monitor rollup ready: queries inside its horizon are answered from memory"
            );
        }
        Ok(full)
    }

    /// Remembers the ids a page skipped, when the page is recent enough for them to be
    /// transactions still in flight rather than rows long gone.
    fn note_gaps(&mut self, last: i64, rows: &[(bool, LogRow)]) {
        let recent_from = (now_s() - GAP_TTL.as_secs() as i64) * self.src.unit();
        if rows.last().is_none_or(|(_, r)| r.ts < recent_from) {
            return;
        }
        let now = Instant::now();
        let mut prev = last;
        for (_, r) in rows {
            if r.id > prev + 1 && r.id - prev <= MAX_GAPS as i64 {
                for id in prev + 1..r.id {
                    self.gaps.insert(id, now);
                }
            }
            prev = prev.max(r.id);
        }
        while self.gaps.len() > MAX_GAPS {
            self.gaps.pop_first();
        }
    }

    /// Rows that filled earlier gaps.
    async fn late_rows(&mut self) -> Result<Vec<(bool, LogRow)>, MonitorError> {
        self.gaps.retain(|_, at| at.elapsed() < GAP_TTL);
        if self.gaps.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = self.gaps.keys().copied().collect();
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
            let sql = format!("{} WHERE id IN ({})", self.select(), list.join(","));
            for row in self.src.fetch_log_rows(&sql).await? {
                self.gaps.remove(&row.1.id);
                out.push(row);
            }
        }
        Ok(out)
    }
}
