//! The single writer: group commit. Consumes queue up while a batch is being committed and
//! go together in the next transaction, so one fsync serves many requests.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::table::KeyTable;
use crate::clock::SharedClock;
use crate::keys::refill::PeriodStarts;
use crate::store::{ConsumeOp, ConsumeResult, ConsumeWriter, StoreError};

/// Upper bound on one transaction, to keep commit latency bounded under a flood.
const MAX_BATCH: usize = 4096;

pub struct Pending {
    pub op: ConsumeOp,
    pub reply: oneshot::Sender<Result<ConsumeResult, StoreError>>,
}

pub async fn run(
    mut rx: mpsc::UnboundedReceiver<Pending>,
    mut shutdown: oneshot::Receiver<()>,
    mut committer: Box<dyn ConsumeWriter>,
    table: Arc<KeyTable>,
    clock: SharedClock,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(256);
    loop {
        let first = tokio::select! {
            biased;
            p = rx.recv() => p,
            _ = &mut shutdown => {
                // Refuse new work, then commit everything already accepted.
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        commit(&mut batch, committer.as_mut(), &table, &clock).await;
    }
    committer.close().await;
    tracing::debug!("ledger writer stopped");
}

async fn commit(
    batch: &mut Vec<Pending>,
    committer: &mut dyn ConsumeWriter,
    table: &KeyTable,
    clock: &SharedClock,
) {
    let now = clock.now_ms();
    let periods = PeriodStarts::at(now);
    let ops: Vec<ConsumeOp> = batch.iter().map(|p| p.op.clone()).collect();
    let mut reserved: HashMap<i64, i64> = HashMap::new();
    for op in &ops {
        *reserved.entry(op.key_id).or_default() += op.total();
    }
    let outcome = committer.commit(&ops, now, periods).await;

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
                    st.rec.used = c.used + st.pending + st.held;
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
            tracing::error!(error = %e, ops = batch.len(), "ledger commit failed");
            for p in batch.drain(..) {
                let _ = p
                    .reply
                    .send(Err(StoreError::Unavailable("commit failed".into())));
            }
        }
    }
}
