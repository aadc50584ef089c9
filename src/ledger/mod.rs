//! The quota ledger: reserve in memory, commit through the group-commit writer, answer after
//! the commit. The database's conditional update has the last word on every consume.

pub mod budgets;
pub mod table;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use std::sync::MutexGuard;

use tokio::sync::{OnceCell, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::accounts::{BudgetRef, Scope};
use crate::clock::SharedClock;
use crate::keys::{KeyHash, KeyRecord, effective_counters, hash_key, policy::is_expired};
use crate::store::{
    ConsumeOp, HoldTag, IdempotentResult, KeyEvent, OpKind, Refusal, Store, StoreError, UsageItem,
    WindowCap,
};
use budgets::{BudgetState, BudgetTable};
pub use table::{KeyEntry, KeyTable};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("unknown key")]
    UnknownKey,
    #[error("key disabled")]
    Disabled,
    #[error("key expired")]
    Expired,
    /// `budget`: the user's or team's budget refused (`None`: the key's own).
    #[error("quota exceeded")]
    QuotaExceeded {
        remaining: i64,
        requested: i64,
        budget: Option<Scope>,
    },
    /// The key's user or team is disabled.
    #[error("owner disabled")]
    OwnerDisabled(Scope),
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

/// A gateway call's hold on its key: admitted in memory, its commit on its way until
/// [`Hold::confirm`]; ended by [`Ledger::begin_settle`] or [`Ledger::release`].
#[derive(Debug)]
pub struct Hold {
    /// What is held (0 when nothing needed holding).
    pub amount: i64,
    tag: Option<HoldTag>,
    commit: Option<Reply>,
    /// The user and team budgets held from too (the settlement gives back to these).
    budgets: Vec<BudgetRef>,
}

impl Default for Hold {
    /// Nothing held.
    fn default() -> Self {
        Self::none()
    }
}

impl Hold {
    fn none() -> Self {
        Self {
            amount: 0,
            tag: None,
            commit: None,
            budgets: Vec::new(),
        }
    }

    /// Waits until the hold is durable (at once when it already is). On a refusal (another
    /// instance took the points meanwhile, a shared window is full) or a failed commit the
    /// hold is gone: nothing is held, nothing is to be given back.
    pub async fn confirm(&mut self) -> Result<(), LedgerError> {
        let Some(rx) = self.commit.take() else {
            return Ok(());
        };
        let refused = match rx.await {
            Ok(Ok(Ok(_))) => return Ok(()),
            Ok(Ok(Err(r))) => refusal_error(r, self.amount),
            Ok(Err(e)) => LedgerError::from(e),
            Err(_) => LedgerError::Unavailable,
        };
        *self = Self::none();
        Err(refused)
    }
}

/// How often a server marks itself alive and looks for holds of servers that died.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// A server not seen for this long is dead: its holds are charged by the others.
const DEAD_AFTER_MS: i64 = 10_000;

/// Reads of the users' and teams' rows a reload makes at most (see
/// [`Ledger::reload_budgets`]).
const RELOAD_READS: usize = 3;

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub struct Ledger {
    /// This server's id in `instances` and on its holds.
    instance: i64,
    table: Arc<KeyTable>,
    /// Users' and teams' budgets.
    budgets: Arc<BudgetTable>,
    store: Arc<dyn Store>,
    clock: SharedClock,
    tx: mpsc::UnboundedSender<writer::Pending>,
    /// Request-log rows for the writer's transactions, when its store carries them.
    logs_tx: Option<mpsc::UnboundedSender<writer::LogBatch>>,
    /// False from a failed commit until a write succeeds again.
    writable: Arc<std::sync::atomic::AtomicBool>,
    /// In-flight and recent idempotency keys: concurrent retries wait for the first one.
    idem: moka::future::Cache<(i64, String), IdemCell>,
    /// Other instances write the same database: gateway holds are committed there too.
    shared: bool,
}

/// Hands request-log rows to the ledger's writer (see [`Ledger::request_log_sink`]).
#[derive(Clone)]
pub struct RequestLogSink {
    tx: mpsc::UnboundedSender<writer::LogBatch>,
}

impl RequestLogSink {
    /// A sink whose writer has stopped (for tests of what its users do then).
    #[cfg(test)]
    pub fn stopped() -> Self {
        let (tx, _) = mpsc::unbounded_channel();
        Self { tx }
    }

    /// Written with the writer's next commit. `Err(rows)` when the writer has stopped: the
    /// rows come back to be written some other way.
    pub async fn write(
        &self,
        rows: Vec<crate::store::RequestLogRow>,
    ) -> Result<Result<(), StoreError>, Vec<crate::store::RequestLogRow>> {
        let (done, written) = oneshot::channel();
        if let Err(mpsc::error::SendError(b)) = self.tx.send(writer::LogBatch { rows, done }) {
            return Err(b.rows);
        }
        Ok(written
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("ledger writer stopped".into()))))
    }
}

/// Stops the writer after it has committed everything already accepted.
pub struct LedgerHandle {
    shutdown: Option<oneshot::Sender<()>>,
    stopped: oneshot::Receiver<()>,
    store: Arc<dyn Store>,
    instance: i64,
}

impl LedgerHandle {
    pub async fn shutdown(mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        let _ = self.stopped.await;
        // Every hold of this server is settled now: nothing for the others to recover.
        if let Err(e) = self.store.retire(self.instance).await {
            tracing::warn!(error = %e, "could not retire this server's heartbeat");
        }
    }
}

/// Runs the writer on a thread of its own: its many short waits on the database would
/// otherwise queue behind request handling on the shared runtime, stretching every batch.
/// Starts the writer's thread; also says whether its store carries request-log rows.
fn spawn_writer_thread(
    (rx, logs_rx): (
        mpsc::UnboundedReceiver<writer::Pending>,
        mpsc::UnboundedReceiver<writer::LogBatch>,
    ),
    stop_rx: oneshot::Receiver<()>,
    store: Arc<dyn Store>,
    table: Arc<KeyTable>,
    budgets: Arc<BudgetTable>,
    clock: SharedClock,
    writable: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(oneshot::Receiver<()>, bool), StoreError> {
    let (done_tx, done_rx) = oneshot::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<bool, StoreError>>();
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
                        let _ = ready_tx.send(Ok(committer.carries_request_logs()));
                        writer::run(
                            (rx, logs_rx),
                            stop_rx,
                            committer,
                            table,
                            budgets,
                            clock,
                            writable,
                        )
                        .await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
            let _ = done_tx.send(());
        })
        .map_err(|e| StoreError::Other(format!("writer thread: {e}")))?;
    let carries = ready_rx
        .recv()
        .map_err(|_| StoreError::Other("writer thread ended early".into()))??;
    Ok((done_rx, carries))
}

fn refusal_error(r: Refusal, requested: i64) -> LedgerError {
    match r {
        Refusal::NotFound => LedgerError::UnknownKey,
        Refusal::Disabled => LedgerError::Disabled,
        Refusal::Expired => LedgerError::Expired,
        Refusal::Quota { remaining } => LedgerError::QuotaExceeded {
            remaining: remaining.unwrap_or(0),
            requested,
            budget: None,
        },
        Refusal::Budget { scope, remaining } => LedgerError::QuotaExceeded {
            remaining: remaining.unwrap_or(0),
            requested,
            budget: Some(scope),
        },
        Refusal::BudgetDisabled(scope) => LedgerError::OwnerDisabled(scope),
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
        // Earlier consumes belong to the old period; what is still pending lands in the new
        // one (the store's refill drops the committed rest the same way).
        st.rec.used = st.pending;
        st.rec.quota = due.quota;
        st.rec.refill_period = due.period;
    }
    let c = effective_counters(&st.rec, now);
    if !c.can_afford(amount) {
        return Err(LedgerError::QuotaExceeded {
            remaining: c.remaining().unwrap_or(0).max(0),
            requested: amount,
            budget: None,
        });
    }
    Ok(())
}

/// Whether `amount` may also be taken from each of the key's user and team budgets now
/// (checked after the key's own, so a refusal names the first that cannot afford it).
fn admit_budgets(
    budgets: &mut [MutexGuard<'_, BudgetState>],
    now: i64,
    amount: i64,
) -> Result<(), LedgerError> {
    for b in budgets.iter_mut() {
        if !b.acct.enabled {
            return Err(LedgerError::OwnerDisabled(b.acct.scope));
        }
        let due = b.acct.counters(now);
        if due.reset_due {
            b.acct.used = b.pending;
            b.acct.quota = due.quota;
            b.acct.refill_period = due.period;
        }
        let c = b.acct.counters(now);
        if !c.can_afford(amount) {
            return Err(LedgerError::QuotaExceeded {
                remaining: c.remaining().unwrap_or(0).max(0),
                requested: amount,
                budget: Some(b.acct.scope),
            });
        }
    }
    Ok(())
}

/// The room left across the key and its budgets (`None`: unlimited), each with `credit`
/// given back first.
fn room(
    st: &table::KeyState,
    budgets: &[MutexGuard<'_, BudgetState>],
    now: i64,
    credit: i64,
) -> Option<i64> {
    let key = effective_counters(&st.rec, now).remaining();
    budgets
        .iter()
        .map(|b| b.acct.counters(now).remaining())
        .chain(std::iter::once(key))
        .flatten()
        .map(|r| r.max(0).saturating_add(credit))
        .min()
}

impl Ledger {
    /// Counts `amount` as pending and hands `op` to the writer. Called with the key's lock
    /// held, so the writer sees each key's operations in the order they were admitted.
    fn enqueue(
        &self,
        st: &mut table::KeyState,
        budgets: &mut [MutexGuard<'_, BudgetState>],
        op: ConsumeOp,
        amount: i64,
    ) -> Result<Reply, LedgerError> {
        let (reply, rx) = oneshot::channel();
        st.rec.used += amount;
        st.pending += amount;
        for b in budgets.iter_mut() {
            b.acct.used += amount;
            b.pending += amount;
        }
        if self.tx.send(writer::Pending { op, reply }).is_err() {
            st.rec.used -= amount;
            st.pending -= amount;
            for b in budgets.iter_mut() {
                b.acct.used -= amount;
                b.pending -= amount;
            }
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
        let instance = fastrand::i64(1..i64::MAX);
        store.heartbeat(instance, wall_ms()).await?;
        // Alone on its database, every hold left there is a dead server's; shared, only
        // those of servers that stopped beating.
        let alive_after = if store.shared() {
            wall_ms() - DEAD_AFTER_MS
        } else {
            i64::MAX
        };
        let recovered = store
            .recover_holds(instance, alive_after, clock.now_ms())
            .await?;
        if recovered > 0 {
            tracing::warn!(
                recovered,
                "charged the holds of calls a stopped server served but did not settle"
            );
        }
        let table = Arc::new(KeyTable::default());
        let budgets = Arc::new(BudgetTable::default());
        budgets.replace_all(store.accounts().await?);
        for rec in store.load_keys().await? {
            table.upsert(rec);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (logs_tx, logs_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let writable = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (stopped, carries_logs) = spawn_writer_thread(
            (rx, logs_rx),
            stop_rx,
            store.clone(),
            table.clone(),
            budgets.clone(),
            clock.clone(),
            writable.clone(),
        )?;
        let shared = store.shared();
        let ledger_store = store.clone();
        let ledger = Arc::new(Self {
            instance,
            shared,
            table,
            budgets,
            store,
            clock,
            tx,
            logs_tx: carries_logs.then_some(logs_tx),
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
                store: ledger_store,
                instance,
            },
        ))
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Where request-log rows go to ride in the ledger's own commits (SQLite: one writer
    /// and one fsync for both); `None` when the store writes them itself.
    pub fn request_log_sink(&self) -> Option<RequestLogSink> {
        self.logs_tx.clone().map(|tx| RequestLogSink { tx })
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
        let entry = match self.table.by_hash(&hash) {
            Some(e) => e,
            None => match self.store.key_by_hash(&hash).await? {
                Some(rec) => self.table.upsert(rec),
                None => return Err(LedgerError::UnknownKey),
            },
        };
        self.know_user(&entry).await;
        Ok(entry)
    }

    /// Loads the key's user (and its team) when memory does not know them yet: created by
    /// another instance or the CLI since the last reload.
    async fn know_user(&self, entry: &KeyEntry) {
        let Some(uid) = entry.lock().rec.owner.as_ref().and_then(|o| o.user_id) else {
            return;
        };
        if self.budgets.get(uid).is_some() {
            return;
        }
        let Ok(Some(user)) = self.store.account(uid).await else {
            return;
        };
        let team = user.team_id;
        self.budgets.upsert(user);
        if let Some(t) = team.filter(|&t| self.budgets.get(t).is_none())
            && let Ok(Some(team)) = self.store.account(t).await
        {
            self.budgets.upsert(team);
        }
    }

    /// The limits of the key's user and the user's team that set anything, with their ids.
    pub fn account_limits(&self, entry: &KeyEntry) -> Vec<(i64, crate::keys::KeyLimits)> {
        let uid = entry.lock().rec.owner.as_ref().and_then(|o| o.user_id);
        if uid.is_none() {
            return Vec::new();
        }
        let (_, chain) = self.budgets.chain(uid);
        chain
            .iter()
            .filter_map(|b| {
                let st = b.lock();
                let l = &st.acct.limits;
                (l.rpm.is_some()
                    || l.tpm.is_some()
                    || l.daily_requests.is_some()
                    || l.max_concurrent.is_some())
                .then(|| (st.acct.id, l.clone()))
            })
            .collect()
    }

    /// Users' and teams' budgets as memory holds them.
    pub fn budgets(&self) -> &BudgetTable {
        &self.budgets
    }

    /// Reloads every user and team (after an edit here, or when another instance's edit
    /// is noticed).
    pub async fn reload_budgets(&self) -> Result<(), StoreError> {
        // A budget busy enough to be answered for during every read is taken as read on
        // the last: its next commit's answer puts it right.
        for _ in 0..RELOAD_READS - 1 {
            let answers = self.budgets.answers();
            let accounts = self.store.accounts().await?;
            if self.budgets.refresh_all(accounts, &answers).is_empty() {
                return Ok(());
            }
        }
        self.budgets.replace_all(self.store.accounts().await?);
        Ok(())
    }

    /// Follows edits of users and teams made by other instances or the CLI: the accounts'
    /// generation is read every `every` and everything reloaded when it moved.
    pub fn spawn_budget_follower(self: &Arc<Self>, every: Duration) -> JoinHandle<()> {
        let ledger = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut seen: Option<i64> = None;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(l) = ledger.upgrade() else { return };
                let now = match l.store.account_generation().await {
                    Ok(g) => g,
                    Err(e) => {
                        crate::telemetry::log_limited("budget_follower", |suppressed| {
                            tracing::warn!(error = %e, suppressed, "could not read the accounts' generation");
                        });
                        continue;
                    }
                };
                if seen.is_some_and(|s| s == now) {
                    continue;
                }
                match l.reload_budgets().await {
                    Ok(()) => seen = Some(now),
                    Err(e) => tracing::warn!(error = %e, "could not reload users and teams"),
                }
            }
        })
    }

    /// A key by id, from memory or (when another process created it) from the store.
    pub async fn entry_by_id(&self, id: i64) -> Result<Option<Arc<KeyEntry>>, StoreError> {
        if let Some(e) = self.table.by_id(id) {
            self.know_user(&e).await;
            return Ok(Some(e));
        }
        let Some(entry) = self
            .store
            .key_by_id(id)
            .await?
            .map(|r| self.table.upsert(r))
        else {
            return Ok(None);
        };
        self.know_user(&entry).await;
        Ok(Some(entry))
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
        self.enqueue(&mut st, &mut [], op, 0)
    }

    /// The key's record with any due refill applied to the view.
    #[cfg(test)]
    pub fn view(&self, entry: &KeyEntry) -> KeyRecord {
        let mut rec = entry.snapshot();
        let c = effective_counters(&rec, self.now_ms());
        rec.quota = c.quota;
        rec.used = c.used;
        rec
    }

    /// What the key has left (`None`: unlimited), with any due refill applied.
    pub fn remaining(&self, entry: &KeyEntry) -> Option<i64> {
        let now = self.now_ms();
        entry.with(|rec| {
            let c = effective_counters(rec, now);
            c.quota.map(|q| q - c.used)
        })
    }

    /// Replaces a key's state with what the store now holds (after an admin write, or an
    /// announcement of one). When the row says the key used less than memory counts (a
    /// reset, or a row read before commits that memory has already counted), the counters
    /// are read again in line with the writer before this returns: until then memory keeps
    /// the higher count, so no call is admitted here that the store would refuse.
    pub async fn refresh(&self, rec: KeyRecord) {
        let (entry, doubt) = self.table.refresh(rec);
        if doubt {
            self.reread(&[entry]).await;
        }
    }

    /// The counters of `entries` read again in line with the writer (all asked at once).
    async fn reread(&self, entries: &[Arc<KeyEntry>]) {
        let asked: Vec<_> = entries.iter().filter_map(|e| self.peek(e).ok()).collect();
        let mut failed = entries.len() - asked.len();
        for rx in asked {
            if !matches!(rx.await, Ok(Ok(_))) {
                failed += 1;
            }
        }
        if failed > 0 {
            tracing::warn!(
                failed,
                "could not re-read keys; memory keeps the higher count"
            );
        }
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
            let (refs, chain) = self
                .budgets
                .chain(st.rec.owner.as_ref().and_then(|o| o.user_id));
            let mut bs: Vec<_> = chain.iter().map(|b| b.lock()).collect();
            admit(&mut st, now, total)?;
            admit_budgets(&mut bs, now, total)?;
            let op = ConsumeOp {
                items,
                idempotency_key,
                budgets: refs,
                ..ConsumeOp::new(st.rec.id, OpKind::Consume)
            };
            self.enqueue(&mut st, &mut bs, op, total)?
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

    /// Holds `amount` for a call about to be forwarded: admitted in memory at once (refused
    /// exactly like a consume), and committed through the writer with a durable record
    /// (`holds`), so a call served by a process that dies before its settlement is still
    /// charged, at its hold, by [`Ledger::recover_holds`]. The caller forwards while the
    /// commit runs and waits for [`Hold::confirm`] before the first byte of an answer
    /// leaves; nothing is charged until [`Ledger::begin_settle`].
    ///
    /// `windows`: the request counters this call must also fit when instances share the
    /// database (alone, the gateway's own limiter is exact and they are not needed).
    /// `item`: what a recovery writes in the key's history (reason, metadata).
    pub fn hold(
        &self,
        entry: &KeyEntry,
        amount: i64,
        windows: Vec<WindowCap>,
        item: UsageItem,
    ) -> Result<Hold, LedgerError> {
        let now = self.now_ms();
        let mut st = entry.lock();
        let (refs, chain) = self
            .budgets
            .chain(st.rec.owner.as_ref().and_then(|o| o.user_id));
        let mut bs: Vec<_> = chain.iter().map(|b| b.lock()).collect();
        admit(&mut st, now, amount)?;
        admit_budgets(&mut bs, now, amount)?;
        if amount <= 0 && windows.is_empty() {
            return Ok(Hold::none());
        }
        let tag = HoldTag {
            id: fastrand::i64(1..i64::MAX),
            instance: self.instance,
        };
        let op = ConsumeOp {
            items: vec![UsageItem { amount, ..item }],
            windows,
            hold: Some(tag),
            budgets: refs.clone(),
            ..ConsumeOp::new(st.rec.id, OpKind::Hold)
        };
        let commit = self.enqueue(&mut st, &mut bs, op, amount)?;
        Ok(Hold {
            amount,
            tag: Some(tag),
            commit: Some(commit),
            budgets: refs,
        })
    }

    /// Gives a hold back in full (the call got no upstream answer, or nothing of use).
    pub fn release(&self, entry: &KeyEntry, hold: Hold) {
        let Some(tag) = hold.tag else { return };
        let mut st = entry.lock();
        let chain = self.budgets.entries(&hold.budgets);
        let mut bs: Vec<_> = chain.iter().map(|b| b.lock()).collect();
        let op = ConsumeOp {
            credit: hold.amount,
            hold: Some(tag),
            budgets: hold.budgets,
            ..ConsumeOp::new(st.rec.id, OpKind::Settle)
        };
        // Not awaited: the writer keeps a settlement until the store takes it.
        if self.enqueue(&mut st, &mut bs, op, -hold.amount).is_err() {
            tracing::error!("ledger stopped; a hold was not given back");
        }
    }

    /// Replaces a hold by the call's actual cost: memory at once, the store through the
    /// writer. The charge is clamped to what remains, so a key never goes below zero.
    pub fn begin_settle(
        &self,
        entry: &KeyEntry,
        hold: Hold,
        actual: i64,
        item: UsageItem,
    ) -> Result<SettleTicket, LedgerError> {
        let mut st = entry.lock();
        let chain = self.budgets.entries(&hold.budgets);
        let mut bs: Vec<_> = chain.iter().map(|b| b.lock()).collect();
        let now = self.now_ms();
        // The hold was committed: the settlement gives it back there (`credit`).
        let credit = if hold.tag.is_some() { hold.amount } else { 0 };
        // Never below zero remaining, on the key or its user or team: a call that cost more
        // than its hold (an upstream past max_tokens) is charged what is left, as the
        // store's settlement clamps it too.
        let room = room(&st, &bs, now, credit);
        let actual = actual.max(0).min(room.unwrap_or(i64::MAX));
        if actual == 0 && hold.tag.is_none() {
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
            hold: hold.tag,
            budgets: hold.budgets,
            ..ConsumeOp::new(st.rec.id, OpKind::Settle)
        };
        let reply_rx = self.enqueue(&mut st, &mut bs, op, actual - credit)?;
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
        hold: Hold,
        actual: i64,
        item: UsageItem,
    ) -> Result<ConsumeOutcome, LedgerError> {
        self.begin_settle(entry, hold, actual, item)?
            .outcome()
            .await
    }

    /// Marks this server alive every [`HEARTBEAT_EVERY`] and charges the holds of servers
    /// that stopped beating (see [`crate::store::LedgerStore::recover_holds`]).
    pub fn spawn_hold_keeper(self: &Arc<Self>) -> JoinHandle<()> {
        let ledger = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(l) = ledger.upgrade() else { return };
                if let Err(e) = l.keep_holds().await {
                    crate::telemetry::log_limited("hold_keeper", |suppressed| {
                        tracing::warn!(error = %e, suppressed, "heartbeat or hold recovery failed");
                    });
                }
            }
        })
    }

    async fn keep_holds(&self) -> Result<(), StoreError> {
        let now = wall_ms();
        self.store.heartbeat(self.instance, now).await?;
        let recovered = self
            .store
            .recover_holds(self.instance, now - DEAD_AFTER_MS, self.now_ms())
            .await?;
        if recovered > 0 {
            tracing::warn!(
                recovered,
                "charged the holds of calls a stopped server served but did not settle"
            );
        }
        Ok(())
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
            Ok(Some(rec)) => self.refresh(rec).await,
            Ok(None) => self.forget(key_id),
            Err(e) => tracing::warn!(error = %e, "could not reload key"),
        }
    }

    /// Every key again, after announcements may have been missed.
    async fn reload_all(&self) {
        match self.store.load_keys().await {
            Ok(recs) => {
                let live: std::collections::HashSet<i64> = recs.iter().map(|r| r.id).collect();
                let doubted: Vec<_> = recs
                    .into_iter()
                    .map(|rec| self.table.refresh(rec))
                    .filter_map(|(e, doubt)| doubt.then_some(e))
                    .collect();
                self.reread(&doubted).await;
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
        sqlite: Arc<SqliteStore>,
        _dir: tempfile::TempDir,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Arc::new(
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
        let store: Arc<dyn Store> = sqlite.clone();
        let clock: SharedClock = Arc::new(OffsetClock::new());
        let (ledger, handle) = Ledger::start(store.clone(), clock.clone()).await.unwrap();
        let admin = KeyAdmin::new(store, Some(ledger.clone()), clock);
        Fixture {
            ledger,
            handle,
            admin,
            sqlite,
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
                requested: 4,
                budget: None
            })
        ));
        assert_eq!(f.ledger.view(&e).used, 7);
        assert_eq!(used_in_db(&f, &e).await, 7);
        f.handle.shutdown().await;
    }

    async fn holds_in_db(f: &Fixture) -> Vec<(i64, i64)> {
        sqlx::query_as("SELECT key_id, amount FROM holds ORDER BY id")
            .fetch_all(f.sqlite.read_pool())
            .await
            .unwrap()
    }

    /// A key's row read before commits that memory has already counted (an announcement
    /// of an admin write racing a burst of calls) must not lower the count: memory would
    /// then admit calls the store refuses after their upstream was asked (seen on
    /// PostgreSQL as 11 upstream calls on a key worth 10).
    #[tokio::test]
    async fn a_row_read_before_commits_never_lowers_the_count() {
        let f = fixture().await;
        let e = key(&f, Some(10)).await;
        let id = e.lock().rec.id;
        let mut first = f.ledger.hold(&e, 5, vec![], item(0)).unwrap();
        first.confirm().await.unwrap();
        let stale = f.ledger.store().key_by_id(id).await.unwrap().unwrap();
        let mut second = f.ledger.hold(&e, 3, vec![], item(0)).unwrap();
        second.confirm().await.unwrap();
        assert_eq!((stale.used, used_in_db(&f, &e).await), (5, 8));
        // Memory between the row and the writer's answer: what concurrent calls see.
        let (_, doubt) = f.ledger.table().refresh(stale.clone());
        assert!(doubt);
        assert_eq!(f.ledger.view(&e).used, 8, "the stale row was taken");
        assert!(matches!(
            f.ledger.hold(&e, 3, vec![], item(0)),
            Err(LedgerError::QuotaExceeded { remaining: 2, .. })
        ));
        f.ledger.refresh(stale).await;
        assert_eq!(f.ledger.view(&e).used, 8);
        assert!(matches!(
            f.ledger.hold(&e, 3, vec![], item(0)),
            Err(LedgerError::QuotaExceeded { remaining: 2, .. })
        ));
        f.ledger.settle(&e, first, 5, item(5)).await.unwrap();
        f.ledger.settle(&e, second, 3, item(3)).await.unwrap();
        // A reset does lower it, by the time the admin write returns.
        let rec = e.snapshot();
        f.admin.reset(&rec, None, &Actor::cli()).await.unwrap();
        assert_eq!(f.ledger.view(&e).used, 0);
        let mut after = f.ledger.hold(&e, 10, vec![], item(0)).unwrap();
        after.confirm().await.unwrap();
        f.handle.shutdown().await;
    }

    #[tokio::test]
    async fn holds_are_durable_and_settlements_clamp_to_what_is_left() {
        let f = fixture().await;
        let e = key(&f, Some(5)).await;
        let mut h = f.ledger.hold(&e, 4, vec![], item(0)).unwrap();
        h.confirm().await.unwrap();
        assert!(matches!(
            f.ledger.hold(&e, 2, vec![], item(0)),
            Err(LedgerError::QuotaExceeded { .. })
        ));
        assert_eq!(
            used_in_db(&f, &e).await,
            4,
            "a confirmed hold is in the database"
        );
        assert_eq!(holds_in_db(&f).await, vec![(e.lock().rec.id, 4)]);
        // The call cost more than held and more than was left: it pays what is left.
        let out = f.ledger.settle(&e, h, 9, item(0)).await.unwrap();
        assert_eq!(out.amount_used, 5);
        assert_eq!(f.ledger.view(&e).used, 5);
        assert_eq!(used_in_db(&f, &e).await, 5);
        assert!(
            holds_in_db(&f).await.is_empty(),
            "the settlement ends the hold"
        );
        // A released hold charges nothing.
        let e2 = key(&f, Some(5)).await;
        let h2 = f.ledger.hold(&e2, 3, vec![], item(0)).unwrap();
        f.ledger.release(&e2, h2);
        assert_eq!(f.ledger.view(&e2).used, 0);
        for _ in 0..100 {
            if used_in_db(&f, &e2).await == 0 && holds_in_db(&f).await.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(used_in_db(&f, &e2).await, 0);
        assert!(holds_in_db(&f).await.is_empty());
        f.handle.shutdown().await;
    }

    /// One call after another: a call's settlement waits for the next call's hold and both
    /// are one commit (the settlement's usage event and the new hold's record carry the
    /// same commit time), so the hold does not wait behind the settlement's commit.
    #[tokio::test]
    async fn a_settlement_shares_the_next_holds_commit() {
        let f = fixture().await;
        let e = key(&f, Some(1000)).await;
        let mut h = f.ledger.hold(&e, 10, vec![], item(0)).unwrap();
        h.confirm().await.unwrap();
        let ticket = f.ledger.begin_settle(&e, h, 4, item(0)).unwrap();
        // Longer than a commit here (no fsync), shorter than a settlement's wait.
        std::thread::sleep(Duration::from_micros(1500));
        let mut next = f.ledger.hold(&e, 10, vec![], item(0)).unwrap();
        next.confirm().await.unwrap();
        assert_eq!(ticket.outcome().await.unwrap().amount_used, 4);
        let (settled,): (i64,) =
            sqlx::query_as("SELECT ts FROM usage_events ORDER BY id DESC LIMIT 1")
                .fetch_one(f.sqlite.read_pool())
                .await
                .unwrap();
        let (held,): (i64,) = sqlx::query_as("SELECT created_at FROM holds")
            .fetch_one(f.sqlite.read_pool())
            .await
            .unwrap();
        assert_eq!(settled, held, "one commit");
        assert_eq!(used_in_db(&f, &e).await, 14);
        f.handle.shutdown().await;
    }

    #[tokio::test]
    async fn a_hold_left_by_a_dead_server_is_charged_once_at_the_next_start() {
        let f = fixture().await;
        let e = key(&f, Some(10)).await;
        let id = e.lock().rec.id;
        let mut meta = serde_json::Map::new();
        meta.insert("request_id".into(), "req-dead".into());
        let mut h = f
            .ledger
            .hold(
                &e,
                4,
                vec![],
                UsageItem {
                    amount: 0,
                    reason: Some("chat".into()),
                    metadata: Some(serde_json::Value::Object(meta).to_string()),
                },
            )
            .unwrap();
        h.confirm().await.unwrap();
        // The server stops without settling (as if killed after the answer left).
        let Fixture {
            ledger,
            handle,
            admin: _admin,
            sqlite: _sqlite,
            _dir,
        } = f;
        handle.shutdown().await;
        let store = ledger.store().clone();
        drop(ledger);
        let (again, handle) = Ledger::start(store.clone(), Arc::new(OffsetClock::new()))
            .await
            .unwrap();
        let (rows, total) = store.history(id, 10, 0).await.unwrap();
        assert_eq!(total, 1);
        assert_eq!(rows[0].amount, 4);
        assert_eq!(rows[0].remaining, Some(6));
        let m = rows[0].metadata.clone().unwrap();
        assert_eq!(m["request_id"], "req-dead");
        assert_eq!(m["recovered"], true);
        assert_eq!(store.key_by_id(id).await.unwrap().unwrap().used, 4);
        // A second start finds nothing more to charge.
        handle.shutdown().await;
        drop(again);
        let (_third, handle) = Ledger::start(store.clone(), Arc::new(OffsetClock::new()))
            .await
            .unwrap();
        assert_eq!(store.history(id, 10, 0).await.unwrap().1, 1);
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn a_settlement_after_its_hold_was_recovered_charges_nothing_more() {
        let f = fixture().await;
        let e = key(&f, Some(10)).await;
        let id = e.lock().rec.id;
        let mut h = f.ledger.hold(&e, 4, vec![], item(0)).unwrap();
        h.confirm().await.unwrap();
        // Another server took this one for dead and charged the hold.
        let n = f
            .ledger
            .store()
            .recover_holds(-1, i64::MAX, f.ledger.now_ms())
            .await
            .unwrap();
        assert_eq!(n, 1);
        let out = f.ledger.settle(&e, h, 2, item(0)).await.unwrap();
        assert_eq!(out.amount_used, 0, "charged once, by the recovery");
        assert_eq!(used_in_db(&f, &e).await, 4);
        assert_eq!(f.ledger.view(&e).used, 4);
        assert_eq!(f.ledger.store().history(id, 10, 0).await.unwrap().1, 1);
        f.handle.shutdown().await;
    }

    #[tokio::test]
    async fn many_settlements_of_one_key_in_a_batch_charge_each_exactly() {
        let f = fixture().await;
        let e = key(&f, Some(1000)).await;
        let id = e.lock().rec.id;
        let mut tasks = Vec::new();
        for i in 0..40_i64 {
            let (l, e) = (f.ledger.clone(), e.clone());
            tasks.push(tokio::spawn(async move {
                let mut h = l.hold(&e, 5, vec![], item(0)).unwrap();
                h.confirm().await.unwrap();
                l.settle(&e, h, i % 7, item(0)).await.unwrap().amount_used
            }));
        }
        let mut charged = 0;
        for t in tasks {
            charged += t.await.unwrap();
        }
        let want: i64 = (0..40_i64).map(|i| i % 7).sum();
        assert_eq!(charged, want);
        assert_eq!(used_in_db(&f, &e).await, want);
        assert_eq!(f.ledger.view(&e).used, want);
        let (rows, _) = f.ledger.store().history(id, 1000, 0).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.amount).sum::<i64>(), want);
        assert!(holds_in_db(&f).await.is_empty());
        // A settlement that would overdraw is clamped to what is left, as ever.
        let mut h = f.ledger.hold(&e, 5, vec![], item(0)).unwrap();
        h.confirm().await.unwrap();
        let out = f.ledger.settle(&e, h, 5000, item(0)).await.unwrap();
        assert_eq!(out.amount_used, 1000 - want);
        assert_eq!(used_in_db(&f, &e).await, 1000);
        f.handle.shutdown().await;
    }

    /// A consume of many items writes its history rows by statements of several rows each
    /// (32 + 8 + 4 + 1 here): every row in order, with its own amount, reason, remaining and
    /// metadata.
    #[tokio::test]
    async fn many_history_rows_of_one_commit_keep_their_order_and_fields() {
        let f = fixture().await;
        let e = key(&f, Some(10_000)).await;
        let id = e.lock().rec.id;
        let items: Vec<UsageItem> = (1..=45_i64)
            .map(|i| UsageItem {
                amount: i,
                reason: (i % 4 != 0).then(|| format!("r{i}")),
                metadata: (i % 3 == 0).then(|| format!("{{\"n\":{i}}}")),
            })
            .collect();
        f.ledger.consume(&e, items, None).await.unwrap();
        let (rows, total) = f.ledger.store().history(id, 100, 0).await.unwrap();
        assert_eq!(total, 45);
        // Newest first: item 45 down to item 1, each leaving what the ones before it left.
        let mut left = 10_000 - (1..=45_i64).sum::<i64>();
        for (row, i) in rows.iter().zip((1..=45_i64).rev()) {
            assert_eq!(row.amount, i);
            assert_eq!(row.reason, (i % 4 != 0).then(|| format!("r{i}")));
            assert_eq!(row.remaining, Some(left));
            assert_eq!(
                row.metadata,
                (i % 3 == 0).then(|| serde_json::json!({ "n": i }))
            );
            left += i;
        }
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

    async fn user_key(f: &Fixture, quota: Option<i64>, budget: Option<i64>) -> Arc<KeyEntry> {
        let users = crate::useradmin::UserAdmin::new(
            f.ledger.store().clone(),
            Some(f.ledger.clone()),
            Arc::new(OffsetClock::new()),
        );
        let mut u = crate::useradmin::new_user(0, format!("u{}", fastrand::u32(..)));
        u.quota = budget;
        let user = users.create(u, &Actor::cli()).await.unwrap();
        let spec = CreateSpec {
            prefix: "t".into(),
            quota,
            expires_at: None,
            name: None,
            count: 1,
            metadata: Default::default(),
            owner: Some(crate::useradmin::owner_of(&user)),
            limits: Default::default(),
            refill: None,
        };
        let issued = f.admin.create(&spec, &Actor::cli()).await.unwrap();
        f.ledger.authenticate(&issued[0].full).await.unwrap()
    }

    /// A user's row read before commits the writer has since answered for is not taken:
    /// memory would forget them (the keys' twin: `a_row_read_before_commits_never_…`).
    #[tokio::test]
    async fn a_budget_row_read_before_commits_is_read_again() {
        let f = fixture().await;
        let e = user_key(&f, None, Some(10)).await;
        let uid = e.lock().rec.owner.clone().unwrap().user_id.unwrap();
        let budget_used = |l: &Ledger| l.budgets.get(uid).unwrap().lock().acct.used;
        let mut first = f.ledger.hold(&e, 5, vec![], item(0)).unwrap();
        first.confirm().await.unwrap();
        let answers = f.ledger.budgets.answers();
        let stale = f.ledger.store().accounts().await.unwrap();
        let mut second = f.ledger.hold(&e, 3, vec![], item(0)).unwrap();
        second.confirm().await.unwrap();
        assert_eq!(budget_used(&f.ledger), 8);
        let moved = f.ledger.budgets.refresh_all(stale, &answers);
        assert_eq!(moved, vec![uid]);
        assert_eq!(budget_used(&f.ledger), 8, "the stale row was taken");
        assert!(matches!(
            f.ledger.hold(&e, 3, vec![], item(0)),
            Err(LedgerError::QuotaExceeded {
                budget: Some(Scope::User),
                remaining: 2,
                ..
            })
        ));
        // A reload reads again and lands on what the store holds.
        f.ledger.reload_budgets().await.unwrap();
        assert_eq!(budget_used(&f.ledger), 8);
        f.ledger.settle(&e, first, 5, item(5)).await.unwrap();
        f.ledger.settle(&e, second, 3, item(3)).await.unwrap();
        f.handle.shutdown().await;
    }

    #[tokio::test]
    async fn keys_of_one_user_share_its_budget_exactly() {
        let f = fixture().await;
        let a = user_key(&f, Some(100), Some(10)).await;
        let uid = a.lock().rec.owner.clone().unwrap().user_id.unwrap();
        // A second key of the same user.
        let spec = CreateSpec {
            prefix: "t".into(),
            quota: None,
            expires_at: None,
            name: None,
            count: 1,
            metadata: Default::default(),
            owner: a.lock().rec.owner.clone(),
            limits: Default::default(),
            refill: None,
        };
        let issued = f.admin.create(&spec, &Actor::cli()).await.unwrap();
        let b = f.ledger.authenticate(&issued[0].full).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..30 {
            let (l, e) = (
                f.ledger.clone(),
                if i % 2 == 0 { a.clone() } else { b.clone() },
            );
            tasks.push(tokio::spawn(async move {
                l.consume(&e, vec![item(1)], None).await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(LedgerError::QuotaExceeded {
                    budget: Some(Scope::User),
                    remaining: 0,
                    ..
                }) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(ok, 10, "the user's budget of 10 serves exactly 10");
        let user = f.ledger.store().account(uid).await.unwrap().unwrap();
        assert_eq!(user.used, 10);
        assert_eq!(used_in_db(&f, &a).await + used_in_db(&f, &b).await, 10);
        // A hold that fits the key but not the user is refused before anything is sent.
        assert!(matches!(
            f.ledger.hold(&a, 1, vec![], item(0)),
            Err(LedgerError::QuotaExceeded {
                budget: Some(Scope::User),
                ..
            })
        ));
        f.handle.shutdown().await;
    }

    #[tokio::test]
    async fn a_settlement_is_clamped_to_the_users_budget_and_a_release_gives_it_back() {
        let f = fixture().await;
        let e = user_key(&f, Some(100), Some(8)).await;
        let uid = e.lock().rec.owner.clone().unwrap().user_id.unwrap();
        let mut h = f.ledger.hold(&e, 5, vec![], item(0)).unwrap();
        h.confirm().await.unwrap();
        assert_eq!(
            f.ledger.store().account(uid).await.unwrap().unwrap().used,
            5
        );
        let out = f.ledger.settle(&e, h, 50, item(0)).await.unwrap();
        assert_eq!(out.amount_used, 8, "charged what the user had left");
        assert_eq!(used_in_db(&f, &e).await, 8);
        assert_eq!(
            f.ledger.store().account(uid).await.unwrap().unwrap().used,
            8
        );
        // A key with its own room but a user budget at zero: released holds give back.
        let e2 = user_key(&f, None, Some(3)).await;
        let uid2 = e2.lock().rec.owner.clone().unwrap().user_id.unwrap();
        let mut h2 = f.ledger.hold(&e2, 3, vec![], item(0)).unwrap();
        h2.confirm().await.unwrap();
        f.ledger.release(&e2, h2);
        for _ in 0..100 {
            if f.ledger.store().account(uid2).await.unwrap().unwrap().used == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            f.ledger.store().account(uid2).await.unwrap().unwrap().used,
            0
        );
        let again = f.ledger.consume(&e2, vec![item(3)], None).await.unwrap();
        assert_eq!(again.amount_used, 3);
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
            f.ledger.hold(&e, 1, vec![], item(0)),
            Err(LedgerError::Disabled)
        ));
        f.handle.shutdown().await;
    }
}
