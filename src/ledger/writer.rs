//! The single writer: group commit. Consumes queue up while a batch is being committed and
//! go together in the next transaction, so one fsync serves many requests.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::budgets::BudgetTable;
use super::table::KeyTable;
use crate::clock::SharedClock;
use crate::keys::refill::PeriodStarts;
use crate::store::{ConsumeOp, ConsumeResult, ConsumeWriter, OpKind, StoreError};
use crate::telemetry;

/// Upper bound on one transaction, to keep commit latency bounded under a flood.
const MAX_BATCH: usize = 4096;

pub struct Pending {
    pub op: ConsumeOp,
    pub reply: oneshot::Sender<Result<ConsumeResult, StoreError>>,
}

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
    async fn commit(&mut self, batch: &mut Vec<Pending>, retry: &mut Vec<Pending>) {
        commit(
            batch,
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
    mut rx: mpsc::UnboundedReceiver<Pending>,
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
    let mut batch: Vec<Pending> = Vec::with_capacity(256);
    // Settlements of calls already served that the store refused: kept (and counted in
    // memory) until they commit.
    let mut retry: Vec<Pending> = Vec::new();
    let mut stopping: Option<Instant> = None;
    loop {
        let troubled = !retry.is_empty() || !sink.writable.load(Ordering::Relaxed);
        let first = tokio::select! {
            biased;
            p = rx.recv() => p,
            _ = &mut shutdown, if stopping.is_none() => {
                // Refuse new work, then commit everything already accepted.
                rx.close();
                stopping = Some(Instant::now());
                rx.recv().await
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
            // Closed and drained: give refused settlements a last chance, then give up.
            let started = stopping.unwrap_or_else(Instant::now);
            while !retry.is_empty() && started.elapsed() < SHUTDOWN_GRACE {
                tokio::time::sleep(RETRY_EVERY).await;
                batch.append(&mut retry);
                sink.commit(&mut batch, &mut retry).await;
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
            break;
        };
        batch.push(first);
        // Refused settlements go first, so each key's operations keep their order.
        if !retry.is_empty() {
            let mut older = std::mem::take(&mut retry);
            older.append(&mut batch);
            batch = older;
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        metrics::gauge!(telemetry::LEDGER_QUEUE).set((rx.len() + batch.len()) as f64);
        sink.commit(&mut batch, &mut retry).await;
    }
    sink.committer.close().await;
    tracing::debug!("ledger writer stopped");
}

async fn commit(
    batch: &mut Vec<Pending>,
    retry: &mut Vec<Pending>,
    committer: &mut dyn ConsumeWriter,
    (table, budgets): (&KeyTable, &BudgetTable),
    clock: &SharedClock,
    writable: &AtomicBool,
) {
    let now = clock.now_ms();
    let periods = PeriodStarts::at(now);
    let ops: Vec<ConsumeOp> = batch.iter().map(|p| p.op.clone()).collect();
    let started = Instant::now();
    let outcome = committer.commit(&ops, now, periods).await;
    metrics::histogram!(telemetry::LEDGER_COMMIT).record(started.elapsed().as_secs_f64());
    metrics::histogram!(telemetry::LEDGER_BATCH).record(ops.len() as f64);
    if outcome.is_err() {
        metrics::counter!(telemetry::LEDGER_FAILURES).increment(1);
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
    let fresh: HashMap<i64, _> = match &outcome {
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

    match outcome {
        Ok(o) => {
            for (p, r) in batch.drain(..).zip(o.results) {
                let _ = p.reply.send(Ok(r));
            }
        }
        Err(e) => {
            let settles = batch.iter().filter(|p| p.op.kind == OpKind::Settle).count();
            let ops = batch.len();
            crate::telemetry::log_limited("ledger_commit", |suppressed| {
                tracing::error!(
                    error = %e,
                    ops,
                    settlements_kept = settles,
                    suppressed,
                    "ledger commit failed"
                );
            });
            for p in batch.drain(..) {
                if p.op.kind == OpKind::Settle {
                    retry.push(p);
                } else {
                    let _ = p
                        .reply
                        .send(Err(StoreError::Unavailable("commit failed".into())));
                }
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
                st.acct.used = c.used + st.pending;
                st.acct.quota = c.quota;
                st.acct.refill_period = c.refill_period;
                st.acct.enabled = c.enabled;
            }
            None => st.acct.used -= amount,
        }
    }
}
