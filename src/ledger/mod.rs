//! The quota ledger: reserve in memory, commit through the group-commit writer, answer after
//! the commit. The database's conditional update has the last word on every consume.

pub mod table;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OnceCell, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::keys::{KeyHash, KeyRecord, effective_counters, hash_key, policy::is_expired};
use crate::store::{
    ConsumeOp, IdempotentResult, KeyEvent, OpKind, Refusal, Store, StoreError, UsageItem, WindowCap,
};
pub use table::{KeyEntry, KeyTable};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("unknown key")]
    UnknownKey,
    #[error("key disabled")]
    Disabled,
    #[error("key expired")]
    Expired,
    #[error("quota exceeded")]
    QuotaExceeded { remaining: i64, requested: i64 },
    #[error("store unavailable")]
    Unavailable,
    /// A request counter shared by the instances is full for its window.
    #[error("request limit reached")]
    Limited(WindowCap),
}

impl From<StoreError> for LedgerError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "store error in ledger");
        LedgerError::Unavailable
    }
}

/// What a successful consume answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumeOutcome {
    pub amount_used: i64,
    pub remaining: Option<i64>,
    pub total_quota: Option<i64>,
    pub count: i64,
}

impl From<IdempotentResult> for ConsumeOutcome {
    fn from(r: IdempotentResult) -> Self {
        Self {
            amount_used: r.amount_used,
            remaining: r.remaining,
            total_quota: r.total_quota,
            count: r.count,
        }
    }
}

type IdemCell = Arc<OnceCell<ConsumeOutcome>>;

/// A settlement on its way to the store.
pub struct SettleTicket {
    rx: Option<Reply>,
    /// The key's remaining quota as memory sees it right after this settlement.
    pub remaining_now: Option<i64>,
    quota: Option<i64>,
}

impl SettleTicket {
    /// Waits for the commit; reports what was actually charged.
    pub async fn outcome(self) -> Result<ConsumeOutcome, LedgerError> {
        let Some(rx) = self.rx else {
            return Ok(ConsumeOutcome {
                amount_used: 0,
                remaining: self.remaining_now,
                total_quota: self.quota,
                count: 0,
            });
        };
        match rx.await.map_err(|_| LedgerError::Unavailable)?? {
            Ok(c) => Ok(ConsumeOutcome {
                amount_used: c.charged,
                remaining: c.remaining,
                total_quota: c.quota,
                count: 1,
            }),
            Err(_) => Err(LedgerError::UnknownKey),
        }
    }
}

pub struct Ledger {
    table: Arc<KeyTable>,
    store: Arc<dyn Store>,
    clock: SharedClock,
    tx: mpsc::UnboundedSender<writer::Pending>,
    /// False from a failed commit until a write succeeds again.
    writable: Arc<std::sync::atomic::AtomicBool>,
    /// In-flight and recent idempotency keys: concurrent retries wait for the first one.
    idem: moka::future::Cache<(i64, String), IdemCell>,
    /// Other instances write the same database: gateway holds are committed there too.
    shared: bool,
}

/// Stops the writer after it has committed everything already accepted.
pub struct LedgerHandle {
    shutdown: Option<oneshot::Sender<()>>,
    stopped: oneshot::Receiver<()>,
}

impl LedgerHandle {
    pub async fn shutdown(mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        let _ = self.stopped.await;
    }
}

/// Runs the writer on a thread of its own: its many short waits on the database would
/// otherwise queue behind request handling on the shared runtime, stretching every batch.
fn spawn_writer_thread(
    rx: mpsc::UnboundedReceiver<writer::Pending>,
    stop_rx: oneshot::Receiver<()>,
    store: Arc<dyn Store>,
    table: Arc<KeyTable>,
    clock: SharedClock,
    writable: Arc<std::sync::atomic::AtomicBool>,
) -> Result<oneshot::Receiver<()>, StoreError> {
    let (done_tx, done_rx) = oneshot::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), StoreError>>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Other(format!("writer runtime: {e}")))?;
    std::thread::Builder::new()
        .name("ledger-writer".into())
        .spawn(move || {
            rt.block_on(async move {
                // The committer is made here: it stays on this thread for its whole life.
                match store.consume_writer().await {
                    Ok(committer) => {
                        let _ = ready_tx.send(Ok(()));
                        writer::run(rx, stop_rx, committer, table, clock, writable).await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
            let _ = done_tx.send(());
        })
        .map_err(|e| StoreError::Other(format!("writer thread: {e}")))?;
    ready_rx
        .recv()
        .map_err(|_| StoreError::Other("writer thread ended early".into()))??;
    Ok(done_rx)
}

fn refusal_error(r: Refusal, requested: i64) -> LedgerError {
    match r {
        Refusal::NotFound => LedgerError::UnknownKey,
        Refusal::Disabled => LedgerError::Disabled,
        Refusal::Expired => LedgerError::Expired,
        Refusal::Quota { remaining } => LedgerError::QuotaExceeded {
            remaining: remaining.unwrap_or(0),
            requested,
        },
        Refusal::Window(w) => LedgerError::Limited(w),
    }
}

type Reply = oneshot::Receiver<Result<crate::store::ConsumeResult, StoreError>>;

/// Whether `amount` may be taken from the key now; applies a due refill to memory first.
fn admit(st: &mut table::KeyState, now: i64, amount: i64) -> Result<(), LedgerError> {
    if !st.rec.enabled {
        return Err(LedgerError::Disabled);
    }
    if is_expired(&st.rec, now) {
        return Err(LedgerError::Expired);
    }
    let due = effective_counters(&st.rec, now);
    if due.reset_due {
        // Earlier consumes belong to the old period; open holds settle in the new one.
        st.rec.used = st.held;
        st.rec.quota = due.quota;
        st.rec.refill_period = due.period;
    }
    let c = effective_counters(&st.rec, now);
    if !c.can_afford(amount) {
        return Err(LedgerError::QuotaExceeded {
            remaining: c.remaining().unwrap_or(0).max(0),
            requested: amount,
        });
    }
    Ok(())
}

impl Ledger {
    /// Counts `amount` as pending and hands `op` to the writer. Called with the key's lock
    /// held, so the writer sees each key's operations in the order they were admitted.
    fn enqueue(
        &self,
        st: &mut table::KeyState,
        op: ConsumeOp,
        amount: i64,
    ) -> Result<Reply, LedgerError> {
        let (reply, rx) = oneshot::channel();
        st.rec.used += amount;
        st.pending += amount;
        if self.tx.send(writer::Pending { op, reply }).is_err() {
            st.rec.used -= amount;
            st.pending -= amount;
            return Err(LedgerError::Unavailable);
        }
        Ok(rx)
    }

    /// Whether other instances share the database (holds and request counters go there).
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// Whether the store took the last write. While it does not, the gateway refuses new
    /// calls (it could not charge them) and `/readyz` answers 503.
    pub fn writable(&self) -> bool {
        self.writable.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Loads every key into memory and starts the writer.
    pub async fn start(
        store: Arc<dyn Store>,
        clock: SharedClock,
    ) -> Result<(Arc<Self>, LedgerHandle), StoreError> {
        let table = Arc::new(KeyTable::default());
        for rec in store.load_keys().await? {
            table.upsert(rec);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let writable = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let stopped = spawn_writer_thread(
            rx,
            stop_rx,
            store.clone(),
            table.clone(),
            clock.clone(),
            writable.clone(),
        )?;
        let shared = store.shared();
        let ledger = Arc::new(Self {
            shared,
            table,
            store,
            clock,
            tx,
            writable,
            idem: moka::future::Cache::builder()
                .max_capacity(200_000)
                .time_to_live(Duration::from_secs(24 * 3600))
                .build(),
        });
        Ok((
            ledger,
            LedgerHandle {
                shutdown: Some(stop_tx),
                stopped,
            },
        ))
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn table(&self) -> &KeyTable {
        &self.table
    }

    /// Finds the key a caller presented. A miss falls back to the store, so keys created by
    /// the CLI in the same database work at once.
    pub async fn authenticate(&self, presented: &str) -> Result<Arc<KeyEntry>, LedgerError> {
        let hash: KeyHash = hash_key(presented);
        if let Some(e) = self.table.by_hash(&hash) {
            return Ok(e);
        }
        match self.store.key_by_hash(&hash).await? {
            Some(rec) => Ok(self.table.upsert(rec)),
            None => Err(LedgerError::UnknownKey),
        }
    }

    /// A key by id, from memory or (when another process created it) from the store.
    pub async fn entry_by_id(&self, id: i64) -> Result<Option<Arc<KeyEntry>>, StoreError> {
        if let Some(e) = self.table.by_id(id) {
            return Ok(Some(e));
        }
        Ok(self
            .store
            .key_by_id(id)
            .await?
            .map(|r| self.table.upsert(r)))
    }

    /// The key as it stands now. Alone on its database memory is exact; when instances
    /// share it, the key's counters are read in line with this instance's own pending ops
    /// (through the writer), so an answer about the balance includes the others' charges.
    pub async fn current(&self, entry: &KeyEntry) -> KeyRecord {
        if self.shared
            && let Ok(rx) = self.peek(entry)
            && !matches!(rx.await, Ok(Ok(_)))
        {
            tracing::warn!("could not re-read a key; answering from memory");
        }
        entry.snapshot()
    }

    /// Asks the writer for the key's counters as the database holds them, after this
    /// instance's own pending ops.
    fn peek(&self, entry: &KeyEntry) -> Result<Reply, LedgerError> {
        let mut st = entry.lock();
        let op = ConsumeOp::new(st.rec.id, OpKind::Peek);
        self.enqueue(&mut st, op, 0)
    }

    /// The key's record with any due refill applied to the view.
    pub fn view(&self, entry: &KeyEntry) -> KeyRecord {
        let mut rec = entry.snapshot();
        let c = effective_counters(&rec, self.now_ms());
        rec.quota = c.quota;
        rec.used = c.used;
        rec
    }

    /// Replaces a key's state with what the store now holds (after an admin write).
    pub fn refresh(&self, rec: KeyRecord) {
        self.table.upsert(rec);
    }

    pub fn forget(&self, id: i64) {
        self.table.remove(id);
    }

    /// Consumes `items` all-or-nothing. With an idempotency key, a retry returns the first
    /// successful result and charges nothing.
    pub async fn consume(
        &self,
        entry: &KeyEntry,
        items: Vec<UsageItem>,
        idempotency_key: Option<String>,
    ) -> Result<ConsumeOutcome, LedgerError> {
        let Some(idem) = idempotency_key else {
            return self.consume_now(entry, items, None).await;
        };
        let key_id = entry.lock().rec.id;
        let cell = self
            .idem
            .get_with((key_id, idem.clone()), async { Arc::new(OnceCell::new()) })
            .await;
        cell.get_or_try_init(|| async {
            if let Some(prev) = self.store.idempotent_result(key_id, &idem).await? {
                return Ok(ConsumeOutcome::from(prev));
            }
            self.consume_now(entry, items, Some(idem.clone())).await
        })
        .await
        .copied()
    }

    async fn consume_now(
        &self,
        entry: &KeyEntry,
        items: Vec<UsageItem>,
        idempotency_key: Option<String>,
    ) -> Result<ConsumeOutcome, LedgerError> {
        let total: i64 = items.iter().map(|i| i.amount).sum();
        let count = items.len() as i64;
        let now = self.now_ms();
        let reply_rx = {
            let mut st = entry.lock();
            admit(&mut st, now, total)?;
            let op = ConsumeOp {
                items,
                idempotency_key,
                ..ConsumeOp::new(st.rec.id, OpKind::Consume)
            };
            self.enqueue(&mut st, op, total)?
        };
        let committed = reply_rx
            .await
            .map_err(|_| LedgerError::Unavailable)?
            .map_err(LedgerError::from)?;
        match committed {
            Ok(c) => Ok(ConsumeOutcome {
                amount_used: c.charged,
                remaining: c.remaining,
                total_quota: c.quota,
                count,
            }),
            Err(r) => Err(refusal_error(r, total)),
        }
    }

    /// Holds `amount` for a call about to be forwarded. Refused exactly like a consume.
    /// Nothing is charged until [`Ledger::settle`]; alone on its database the hold lives in
    /// memory, and when instances share the database it is committed there (so no two
    /// instances promise the same points), then settled or given back.
    ///
    /// `windows`: the request counters this call must also fit when instances share the
    /// database (alone, the gateway's own limiter is exact and they are not needed).
    pub async fn reserve(
        &self,
        entry: &KeyEntry,
        amount: i64,
        windows: Vec<WindowCap>,
    ) -> Result<(), LedgerError> {
        let now = self.now_ms();
        let reply = {
            let mut st = entry.lock();
            admit(&mut st, now, amount)?;
            if !self.shared || (amount <= 0 && windows.is_empty()) {
                st.rec.used += amount;
                st.held += amount;
                return Ok(());
            }
            let op = ConsumeOp {
                items: vec![UsageItem {
                    amount,
                    reason: None,
                    metadata: None,
                }],
                windows,
                ..ConsumeOp::new(st.rec.id, OpKind::Hold)
            };
            self.enqueue(&mut st, op, amount)?
        };
        match reply
            .await
            .map_err(|_| LedgerError::Unavailable)?
            .map_err(LedgerError::from)?
        {
            Ok(_) => Ok(()),
            Err(r) => Err(refusal_error(r, amount)),
        }
    }

    /// Gives a hold back in full (the call got no upstream answer).
    pub fn release(&self, entry: &KeyEntry, amount: i64) {
        let mut st = entry.lock();
        if !self.shared || amount <= 0 {
            st.rec.used -= amount;
            st.held -= amount;
            return;
        }
        let op = ConsumeOp {
            credit: amount,
            ..ConsumeOp::new(st.rec.id, OpKind::Settle)
        };
        // Not awaited: the writer keeps a settlement until the store takes it.
        if self.enqueue(&mut st, op, -amount).is_err() {
            tracing::error!("ledger stopped; a hold was not given back");
        }
    }

    /// Replaces a hold by the call's actual cost: memory at once, the store through the
    /// writer. The charge is clamped to what remains, so a key never goes below zero.
    pub fn begin_settle(
        &self,
        entry: &KeyEntry,
        held: i64,
        actual: i64,
        item: UsageItem,
    ) -> Result<SettleTicket, LedgerError> {
        let mut st = entry.lock();
        let now = self.now_ms();
        // Alone, the hold lives in memory and is given back here; when instances share the
        // database it was committed, and the settlement gives it back there (`credit`).
        let credit = if self.shared {
            held
        } else {
            st.rec.used -= held;
            st.held -= held;
            0
        };
        // Never below zero remaining: a call that cost more than its hold (an upstream past
        // max_tokens) is charged what is left, as the store's settlement clamps it too.
        let room = effective_counters(&st.rec, now)
            .remaining()
            .map(|r| r.max(0).saturating_add(credit));
        let actual = actual.max(0).min(room.unwrap_or(i64::MAX));
        if actual == 0 && credit == 0 {
            let c = effective_counters(&st.rec, now);
            return Ok(SettleTicket {
                rx: None,
                remaining_now: c.remaining(),
                quota: c.quota,
            });
        }
        let op = ConsumeOp {
            items: vec![UsageItem {
                amount: actual,
                ..item
            }],
            credit,
            ..ConsumeOp::new(st.rec.id, OpKind::Settle)
        };
        let reply_rx = self.enqueue(&mut st, op, actual - credit)?;
        let c = effective_counters(&st.rec, now);
        Ok(SettleTicket {
            rx: Some(reply_rx),
            remaining_now: c.remaining().map(|r| r.max(0)),
            quota: c.quota,
        })
    }

    /// [`Ledger::begin_settle`] and wait for the commit.
    pub async fn settle(
        &self,
        entry: &KeyEntry,
        held: i64,
        actual: i64,
        item: UsageItem,
    ) -> Result<ConsumeOutcome, LedgerError> {
        self.begin_settle(entry, held, actual, item)?
            .outcome()
            .await
    }

    /// Keeps memory in step with edits made by other processes (the CLI, other instances):
    /// from the store's announcements when it makes them (PostgreSQL), else by following
    /// the audit log every `every`.
    pub fn spawn_change_follower(self: &Arc<Self>, every: Duration) -> JoinHandle<()> {
        let ledger = Arc::downgrade(self);
        if let Some(mut events) = self.store.key_events() {
            return tokio::spawn(async move {
                while let Some(ev) = events.recv().await {
                    let Some(l) = ledger.upgrade() else { return };
                    match ev {
                        KeyEvent::Changed(id) => l.reload(id).await,
                        KeyEvent::Resync => l.reload_all().await,
                    }
                }
            });
        }
        tokio::spawn(async move {
            let mut last = match ledger.upgrade() {
                Some(l) => l.store.last_audit_id().await.unwrap_or(0),
                None => return,
            };
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(l) = ledger.upgrade() else { return };
                let changes = match l.store.key_changes_since(last).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read key changes");
                        continue;
                    }
                };
                for (audit_id, key_id) in changes {
                    last = last.max(audit_id);
                    l.reload(key_id).await;
                }
            }
        })
    }

    async fn reload(&self, key_id: i64) {
        match self.store.key_by_id(key_id).await {
            Ok(Some(rec)) => {
                self.refresh(rec);
                // The row was read beside the writer: a commit may have landed in between.
                // Its counters are put right in line with the writer's own (not awaited).
                if self.shared
                    && let Some(e) = self.table.by_id(key_id)
                {
                    let _ = self.peek(&e);
                }
            }
            Ok(None) => self.forget(key_id),
            Err(e) => tracing::warn!(error = %e, "could not reload key"),
        }
    }

    /// Every key again, after announcements may have been missed.
    async fn reload_all(&self) {
        match self.store.load_keys().await {
            Ok(recs) => {
                let live: std::collections::HashSet<i64> = recs.iter().map(|r| r.id).collect();
                for rec in recs {
                    self.refresh(rec);
                }
                for e in self.table.all() {
                    let id = e.lock().rec.id;
                    if !live.contains(&id) {
                        self.forget(id);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not reload keys"),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The ledger over a real SQLite file: memory and database agree after every kind of
    //! operation, and the refusals are the documented ones.

    use super::*;
    use crate::clock::OffsetClock;
    use crate::keyadmin::{Actor, CreateSpec, KeyAdmin};
    use crate::store::sqlite::{SqliteOptions, SqliteStore};

    struct Fixture {
        ledger: Arc<Ledger>,
        handle: LedgerHandle,
        admin: KeyAdmin,
        _dir: tempfile::TempDir,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(
                &dir.path().join("l.db"),
                SqliteOptions {
                    synchronous_full: false,
                    busy_timeout: Duration::from_secs(2),
                },
            )
            .await
            .unwrap(),
        );
        let clock: SharedClock = Arc::new(OffsetClock::new());
        let (ledger, handle) = Ledger::start(store.clone(), clock.clone()).await.unwrap();
        let admin = KeyAdmin::new(store, Some(ledger.clone()), clock);
        Fixture {
            ledger,
            handle,
            admin,
            _dir: dir,
        }
    }

    async fn key(f: &Fixture, quota: Option<i64>) -> Arc<KeyEntry> {
        let spec = CreateSpec {
            prefix: "t".into(),
            quota,
            expires_at: None,
            name: None,
            count: 1,
            metadata: Default::default(),
            owner: None,
            limits: Default::default(),
            refill: None,
        };
        let issued = f.admin.create(&spec, &Actor::cli()).await.unwrap();
        f.ledger.authenticate(&issued[0].full).await.unwrap()
    }

    fn item(amount: i64) -> UsageItem {
        UsageItem {
            amount,
            reason: None,
            metadata: None,
        }
    }

    async fn used_in_db(f: &Fixture, e: &KeyEntry) -> i64 {
        let id = e.lock().rec.id;
        f.ledger.store().key_by_id(id).await.unwrap().unwrap().used
    }

    #[tokio::test]
    async fn consume_is_all_or_nothing_and_memory_matches_the_database() {
        let f = fixture().await;
        let e = key(&f, Some(10)).await;
        let out = f
            .ledger
            .consume(&e, vec![item(3), item(4)], None)
            .await
            .unwrap();
        assert_eq!((out.amount_used, out.remaining, out.count), (7, Some(3), 2));
        let refused = f.ledger.consume(&e, vec![item(2), item(2)], None).await;
        assert!(matches!(
            refused,
            Err(LedgerError::QuotaExceeded {
                remaining: 3,
                requested: 4
            })
        ));
        assert_eq!(f.ledger.view(&e).used, 7);
        assert_eq!(used_in_db(&f, &e).await, 7);
        f.handle.shutdown().await;
    }

    #[tokio::test]
    async fn holds_are_memory_only_and_settlements_clamp_to_what_is_left() {
        let f = fixture().await;
        let e = key(&f, Some(5)).await;
        f.ledger.reserve(&e, 4, vec![]).await.unwrap();
        assert!(matches!(
            f.ledger.reserve(&e, 2, vec![]).await,
            Err(LedgerError::QuotaExceeded { .. })
        ));
        assert_eq!(used_in_db(&f, &e).await, 0, "a hold is not a charge");
        // The call cost more than held and more than was left: it pays what is left.
        let out = f.ledger.settle(&e, 4, 9, item(0)).await.unwrap();
        assert_eq!(out.amount_used, 5);
        assert_eq!(f.ledger.view(&e).used, 5);
        assert_eq!(used_in_db(&f, &e).await, 5);
        // A released hold charges nothing.
        let e2 = key(&f, Some(5)).await;
        f.ledger.reserve(&e2, 3, vec![]).await.unwrap();
        f.ledger.release(&e2, 3);
        assert_eq!(f.ledger.view(&e2).used, 0);
        f.handle.shutdown().await;
    }

    #[tokio::test]
    async fn idempotent_retries_charge_once() {
        let f = fixture().await;
        let e = key(&f, None).await;
        let a = f
            .ledger
            .consume(&e, vec![item(2)], Some("req-1".into()))
            .await
            .unwrap();
        let b = f
            .ledger
            .consume(&e, vec![item(2)], Some("req-1".into()))
            .await
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(used_in_db(&f, &e).await, 2);
        assert_eq!(a.remaining, None, "unlimited");
        f.handle.shutdown().await;
    }

    #[tokio::test]
    async fn a_disabled_key_refuses_consumes_and_holds() {
        let f = fixture().await;
        let e = key(&f, Some(5)).await;
        let rec = f.ledger.view(&e);
        f.admin
            .set_enabled(rec.id, false, &Actor::cli())
            .await
            .unwrap();
        let e = f.ledger.entry_by_id(rec.id).await.unwrap().unwrap();
        assert!(matches!(
            f.ledger.consume(&e, vec![item(1)], None).await,
            Err(LedgerError::Disabled)
        ));
        assert!(matches!(
            f.ledger.reserve(&e, 1, vec![]).await,
            Err(LedgerError::Disabled)
        ));
        f.handle.shutdown().await;
    }
}
