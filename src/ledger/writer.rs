//! The single writer: group commit. Consumes queue up while a batch is being committed and
//! go together in the next transaction, so one fsync serves many requests.

// foldhash: these maps are keyed by our own ids and built per batch; SipHash buys nothing.
use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::budgets::BudgetTable;
use super::table::KeyTable;
use crate::clock::SharedClock;
use crate::keys::refill::PeriodStarts;
use crate::store::{ConsumeOp, ConsumeResult, ConsumeWriter, OpKind, RequestLogRow, StoreError};
use crate::telemetry;

/// Upper bound on one transaction, to keep commit latency bounded under a flood.
const MAX_BATCH: usize = 4096;

pub struct Pending {
    pub op: ConsumeOp,
    pub reply: oneshot::Sender<Result<ConsumeResult, StoreError>>,
}

/// Request-log rows that ride in the next commit (on a store whose writer carries them),
/// and who learns whether they were written.
pub struct LogBatch {
    pub rows: Vec<RequestLogRow>,
    pub done: oneshot::Sender<Result<(), StoreError>>,
}

/// What the writer was handed: ledger operations, and request-log rows.
struct Inbox {
    ops: mpsc::UnboundedReceiver<Pending>,
    logs: mpsc::UnboundedReceiver<LogBatch>,
    logs_open: bool,
}

impl Inbox {
    /// The operations that have arrived, without waiting.
    fn drain_ops(&mut self, batch: &mut Vec<Pending>) {
        while batch.len() < MAX_BATCH {
            match self.ops.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
    }

    /// Everything that has arrived, without waiting.
    fn drain(&mut self, batch: &mut Vec<Pending>, logs: &mut Vec<LogBatch>) {
        self.drain_ops(batch);
        while let Ok(l) = self.logs.try_recv() {
            logs.push(l);
        }
    }
}

/// How long settlements alone wait for a hold or a consume to share their commit. A
/// settlement is on no caller's path (its call was answered; the durable hold covers it
/// meanwhile) while a hold is (the answer waits for it): one call after another, each
/// call's settlement would otherwise be a commit of its own, and the next call's hold would
/// wait behind its fsync before its own. Together they are one commit, one fsync.
const SETTLEMENTS_WAIT: Duration = Duration::from_millis(5);

/// How long to wait between attempts while the store refuses writes.
const RETRY_EVERY: Duration = Duration::from_millis(250);
/// How long a stopping writer keeps trying to commit settlements the store refused.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where batches go, and what learns of the outcome.
struct Sink {
    committer: Box<dyn ConsumeWriter>,
    table: Arc<KeyTable>,
    budgets: Arc<BudgetTable>,
    clock: SharedClock,
    writable: Arc<AtomicBool>,
}

impl Sink {
    /// Commits what has arrived, refused settlements first (so each key's operations keep
    /// their order).
    async fn take_turn(
        &mut self,
        inbox: &mut Inbox,
        (batch, logs): (&mut Vec<Pending>, &mut Vec<LogBatch>),
        retry: &mut Vec<Pending>,
    ) {
        if !retry.is_empty() {
            let mut older = std::mem::take(retry);
            older.append(batch);
            *batch = older;
        }
        inbox.drain(batch, logs);
        telemetry::handles::LEDGER_QUEUE
            .get()
            .set((inbox.ops.len() + batch.len()) as f64);
        self.commit_with_logs(batch, logs, retry).await;
    }

    /// Closed and drained: gives refused settlements a last chance, then gives up on them.
    async fn give_up(
        &mut self,
        batch: &mut Vec<Pending>,
        retry: &mut Vec<Pending>,
        stopping: Option<Instant>,
    ) {
        let started = stopping.unwrap_or_else(Instant::now);
        while !retry.is_empty() && started.elapsed() < SHUTDOWN_GRACE {
            tokio::time::sleep(RETRY_EVERY).await;
            batch.append(retry);
            self.commit(batch, retry).await;
        }
        if !retry.is_empty() {
            tracing::error!(
                settlements = retry.len(),
                "stopping with settlements the store would not take"
            );
            for p in retry.drain(..) {
                let _ = p
                    .reply
                    .send(Err(StoreError::Unavailable("store refused".into())));
            }
        }
    }

    async fn commit(&mut self, batch: &mut Vec<Pending>, retry: &mut Vec<Pending>) {
        self.commit_with_logs(batch, &mut Vec::new(), retry).await;
    }

    async fn commit_with_logs(
        &mut self,
        batch: &mut Vec<Pending>,
        logs: &mut Vec<LogBatch>,
        retry: &mut Vec<Pending>,
    ) {
        commit(
            (batch, logs),
            retry,
            self.committer.as_mut(),
            (&self.table, &self.budgets),
            &self.clock,
            &self.writable,
        )
        .await;
    }
}

pub async fn run(
    (rx, logs_rx): (
        mpsc::UnboundedReceiver<Pending>,
        mpsc::UnboundedReceiver<LogBatch>,
    ),
    mut shutdown: oneshot::Receiver<()>,
    committer: Box<dyn ConsumeWriter>,
    table: Arc<KeyTable>,
    budgets: Arc<BudgetTable>,
    clock: SharedClock,
    writable: Arc<AtomicBool>,
) {
    let mut sink = Sink {
        committer,
        table,
        budgets,
        clock,
        writable,
    };
    let mut inbox = Inbox {
        ops: rx,
        logs: logs_rx,
        logs_open: true,
    };
    let mut batch: Vec<Pending> = Vec::with_capacity(256);
    let mut logs: Vec<LogBatch> = Vec::new();
    // Settlements of calls already served that the store refused: kept (and counted in
    // memory) until they commit.
    let mut retry: Vec<Pending> = Vec::new();
    let mut stopping: Option<Instant> = None;
    loop {
        let troubled = !retry.is_empty() || !sink.writable.load(Ordering::Relaxed);
        let first = tokio::select! {
            biased;
            p = inbox.ops.recv() => p,
            l = inbox.logs.recv(), if inbox.logs_open => {
                match l {
                    // Rows alone: committed with whatever operations came with them.
                    Some(l) => {
                        logs.push(l);
                        sink.take_turn(&mut inbox, (&mut batch, &mut logs), &mut retry).await;
                    }
                    None => inbox.logs_open = false,
                }
                continue;
            }
            _ = &mut shutdown, if stopping.is_none() => {
                // Refuse new work, then commit everything already accepted.
                inbox.ops.close();
                inbox.logs.close();
                stopping = Some(Instant::now());
                inbox.ops.recv().await
            }
            _ = tokio::time::sleep(RETRY_EVERY), if troubled => {
                if retry.is_empty() {
                    let ok = sink.committer.probe(sink.clock.now_ms()).await.is_ok();
                    if ok {
                        tracing::info!("the store takes writes again");
                    }
                    sink.writable.store(ok, Ordering::Relaxed);
                } else {
                    batch.append(&mut retry);
                    sink.commit(&mut batch, &mut retry).await;
                }
                continue;
            }
        };
        let Some(first) = first else {
            sink.give_up(&mut batch, &mut retry, stopping).await;
            break;
        };
        batch.push(first);
        if stopping.is_none() {
            await_company(&mut inbox, &mut batch).await;
        }
        sink.take_turn(&mut inbox, (&mut batch, &mut logs), &mut retry)
            .await;
    }
    // Rows that arrived after the last commit (the logger flushes before the ledger stops,
    // so normally none): written on their own.
    inbox.drain(&mut batch, &mut logs);
    if !logs.is_empty() || !batch.is_empty() {
        sink.commit_with_logs(&mut batch, &mut logs, &mut retry)
            .await;
    }
    sink.committer.close().await;
    tracing::debug!("ledger writer stopped");
}

/// Settlements alone wait (at most [`SETTLEMENTS_WAIT`]) for the next operation that
/// someone is waiting for, and go with it.
async fn await_company(inbox: &mut Inbox, batch: &mut Vec<Pending>) {
    inbox.drain_ops(batch);
    if !batch.iter().all(|p| p.op.kind == OpKind::Settle) {
        return;
    }
    if let Ok(Some(p)) = tokio::time::timeout(SETTLEMENTS_WAIT, inbox.ops.recv()).await {
        batch.push(p);
    }
}

async fn commit(
    (batch, logs): (&mut Vec<Pending>, &mut Vec<LogBatch>),
    retry: &mut Vec<Pending>,
    committer: &mut dyn ConsumeWriter,
    (table, budgets): (&KeyTable, &BudgetTable),
    clock: &SharedClock,
    writable: &AtomicBool,
) {
    let now = clock.now_ms();
    let periods = PeriodStarts::at(now);
    // The operations leave the batch for the commit (no copies); refused settlements are put
    // back together with their reply channels for the next attempt.
    let (ops, replies): (Vec<ConsumeOp>, Vec<_>) = batch.drain(..).map(|p| (p.op, p.reply)).unzip();
    let mut rows: Vec<RequestLogRow> = Vec::new();
    let mut told = Vec::with_capacity(logs.len());
    for l in logs.drain(..) {
        rows.extend(l.rows);
        told.push(l.done);
    }
    let started = Instant::now();
    let outcome = committer.commit_with_logs(&ops, &rows, now, periods).await;
    telemetry::handles::LEDGER_COMMIT
        .get()
        .record(started.elapsed().as_secs_f64());
    if !ops.is_empty() {
        telemetry::handles::LEDGER_BATCH
            .get()
            .record(ops.len() as f64);
    }
    if outcome.is_err() {
        metrics::counter!(telemetry::LEDGER_FAILURES).increment(1);
    }
    // The rows' writer learns the outcome (a failed commit drops them, counted there).
    for done in told {
        let _ = done.send(match &outcome {
            Ok(_) => Ok(()),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        });
    }
    writable.store(outcome.is_ok(), Ordering::Relaxed);
    let failed = outcome.is_err();

    // What this batch settles in memory: everything when it committed; when it did not,
    // the consumes (refused, their reservation returned) but not the settlements, which stay
    // pending and are tried again.
    let mut reserved: HashMap<i64, i64> = HashMap::new();
    let mut reserved_budgets: HashMap<i64, i64> = HashMap::new();
    for op in &ops {
        if failed && op.kind == OpKind::Settle {
            continue;
        }
        *reserved.entry(op.key_id).or_default() += op.net();
        for b in &op.budgets {
            *reserved_budgets.entry(b.id).or_default() += op.net();
        }
    }
    settle_budgets(budgets, reserved_budgets, &outcome);

    // Memory catches up with the database before anyone is answered, so a caller that reads
    // its quota right after a 200 sees its own consume.
    settle_keys(table, reserved, &outcome);

    match outcome {
        Ok(o) => {
            for (reply, r) in replies.into_iter().zip(o.results) {
                let _ = reply.send(Ok(r));
            }
        }
        Err(e) => {
            let settles = ops.iter().filter(|op| op.kind == OpKind::Settle).count();
            let count = ops.len();
            crate::telemetry::log_limited("ledger_commit", |suppressed| {
                tracing::error!(
                    error = %e,
                    ops = count,
                    settlements_kept = settles,
                    suppressed,
                    "ledger commit failed"
                );
            });
            for (op, reply) in ops.into_iter().zip(replies) {
                if op.kind == OpKind::Settle {
                    retry.push(Pending { op, reply });
                } else {
                    let _ = reply.send(Err(StoreError::Unavailable("commit failed".into())));
                }
            }
        }
    }
}

/// Memory's keys after a batch: each one's pending amounts leave, and its counters are what
/// the store returned (or, when nothing was written, the reservation goes back).
fn settle_keys(
    table: &KeyTable,
    reserved: HashMap<i64, i64>,
    outcome: &Result<crate::store::BatchOutcome, StoreError>,
) {
    let fresh: HashMap<i64, _> = match outcome {
        Ok(o) => o.counters.iter().map(|c| (c.key_id, *c)).collect(),
        Err(_) => HashMap::new(),
    };
    for (key_id, amount) in reserved {
        if let Some(entry) = table.by_id(key_id) {
            let mut st = entry.lock();
            st.pending -= amount;
            match fresh.get(&key_id) {
                Some(c) => {
                    st.rec.used = c.used + st.pending;
                    st.rec.quota = c.quota;
                    st.rec.refill_period = c.refill_period;
                    st.rec.enabled = c.enabled;
                    st.rec.expires_at = c.expires_at;
                    st.rec.last_used = c.last_used;
                }
                // Nothing was written for this key: give the reservation back.
                None => st.rec.used -= amount,
            }
        }
    }
}

/// Memory's user and team budgets after a batch: each one's pending amounts leave, and its
/// counters are what the store returned (or, when nothing was written, the reservation
/// goes back).
fn settle_budgets(
    budgets: &BudgetTable,
    reserved: HashMap<i64, i64>,
    outcome: &Result<crate::store::BatchOutcome, StoreError>,
) {
    let fresh: HashMap<i64, _> = match outcome {
        Ok(o) => o.budgets.iter().map(|c| (c.id, *c)).collect(),
        Err(_) => HashMap::new(),
    };
    for (id, amount) in reserved {
        let Some(entry) = budgets.get(id) else {
            continue;
        };
        let mut st = entry.lock();
        st.pending -= amount;
        match fresh.get(&id) {
            Some(c) => {
                st.answers += 1;
                st.acct.used = c.used + st.pending;
                st.acct.quota = c.quota;
                st.acct.refill_period = c.refill_period;
                st.acct.enabled = c.enabled;
            }
            None => st.acct.used -= amount,
        }
    }
}
