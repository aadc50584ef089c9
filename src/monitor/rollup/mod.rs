//! The monitor's own copy of the recent billed rows, in memory, fed read-only by reading new
//! rows by id. Direct SQL over tens of millions of log rows takes seconds; the same answers
//! computed here take milliseconds. It answers a query only once it has caught up and only
//! for ranges inside its horizon; everything else goes to SQL. Design: docs/design.md.

pub mod answers;
pub mod archive;
pub mod chunk;
pub mod data;
pub mod feed;
pub mod snapshot;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use data::Data;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupSettings {
    /// How many days back from the newest row the rollup holds (93: the 90-day preset of a
    /// database a few days behind); 0 turns it off.
    pub days: u32,
    pub poll: Duration,
    /// Rows read from the source a query (the tests make it small to exercise paging).
    pub page: usize,
    /// The most rows held (the operator's memory budget, ~50 bytes a row); past it the
    /// oldest hours are let go and ranges reaching into them are answered by SQL.
    /// `0`: no limit but the horizon.
    pub max_rows: usize,
}

impl Default for RollupSettings {
    fn default() -> Self {
        Self {
            days: 93,
            poll: Duration::from_secs(1),
            page: 100_000,
            // ~1 GB: 93 days of a busy relay must not take the machine's memory unasked.
            max_rows: 20_000_000,
        }
    }
}

pub struct Rollup {
    data: RwLock<Data>,
    /// Highest id read from the source.
    last_id: AtomicI64,
    /// Unix ms of the last successful poll.
    polled_at: AtomicI64,
    ready: AtomicBool,
    /// Rows restored from the snapshot at start (0: loaded from the source).
    restored: std::sync::atomic::AtomicUsize,
    pub settings: RollupSettings,
}

/// What `/api/health` reports.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RollupStatus {
    pub state: &'static str,
    pub rows: usize,
    pub last_id: i64,
    pub covered_from: Option<String>,
    pub polled_at: Option<String>,
    /// Rows restored from the snapshot at start (0: read from the source).
    pub restored_rows: usize,
    /// Rows of the oldest hours kept on disk because the memory budget does not hold them.
    pub archived_rows: usize,
}

impl Rollup {
    /// Sets the rollup's gauges (rows held, seconds since the last poll of the source).
    pub fn publish_gauges(&self) {
        let (rows, archived) = {
            let d = self.read_data();
            (d.rows, d.archived_rows())
        };
        metrics::gauge!(crate::telemetry::ROLLUP_ROWS).set(rows as f64);
        metrics::gauge!(crate::telemetry::ROLLUP_ARCHIVED).set(archived as f64);
        let polled = self.polled_at.load(Ordering::Relaxed);
        if polled > 0 {
            let lag = (chrono::Utc::now().timestamp_millis() - polled).max(0) as f64 / 1000.0;
            metrics::gauge!(crate::telemetry::ROLLUP_LAG).set(lag);
        }
    }

    pub fn new(unit: i64, settings: RollupSettings) -> Arc<Self> {
        Arc::new(Self {
            data: RwLock::new(Data::new(unit)),
            last_id: AtomicI64::new(0),
            polled_at: AtomicI64::new(0),
            ready: AtomicBool::new(false),
            restored: std::sync::atomic::AtomicUsize::new(0),
            settings,
        })
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// A poisoned lock still holds whole rows: every mutation completes or does not start
    /// (the pushes cannot panic midway), so the data is usable.
    fn read_data(&self) -> std::sync::RwLockReadGuard<'_, Data> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_data(&self) -> std::sync::RwLockWriteGuard<'_, Data> {
        self.data.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` over the rows when they cover `[lo, …)`; `None` sends the caller to SQL.
    /// Off the async workers: a month of rows is tens of milliseconds of scanning.
    pub async fn query<T, F>(self: &Arc<Self>, lo: i64, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(&Data) -> T + Send + 'static,
    {
        if !self.is_ready() {
            return None;
        }
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let d = me.read_data();
            if !d.covers(lo) {
                return None;
            }
            // An archived hour that cannot be read makes the answer incomplete: SQL answers.
            let faults = || d.archive.as_ref().map_or(0, |a| a.faults());
            let before = faults();
            let out = f(&d);
            (faults() == before).then_some(out)
        })
        .await
        .ok()
        .flatten()
    }

    pub fn status(&self) -> RollupStatus {
        let d = self.read_data();
        let iso_s = crate::timefmt::rfc3339_secs;
        let polled = self.polled_at.load(Ordering::Relaxed);
        RollupStatus {
            state: if self.is_ready() { "ready" } else { "loading" },
            rows: d.rows,
            last_id: self.last_id.load(Ordering::Relaxed),
            covered_from: (d.covered_from != i64::MAX).then(|| iso_s(d.secs(d.covered_from))),
            polled_at: (polled > 0).then(|| iso_s(polled / 1000)),
            restored_rows: self.restored.load(Ordering::Relaxed),
            archived_rows: d.archived_rows(),
        }
    }
}
