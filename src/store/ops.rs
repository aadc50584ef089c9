//! Consumes as the ledger commits them: the ops, how a key row refuses one, and the
//! history rows a committed op writes. Shared by both writers.

use super::types::UsageItem;
use crate::accounts::{BudgetCounters, BudgetRef, Scope};
use crate::keys::RefillInterval;
use crate::keys::refill::PeriodStarts;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// All-or-nothing: refused unless the key is usable and can afford it.
    Consume,
    /// The cost of a call already served: charged even if the key was disabled meanwhile,
    /// and clamped to what remains so a key never goes below zero. One item.
    Settle,
    /// Points set aside for a gateway call about to be forwarded, when several instances
    /// share the database: refused like a consume, but no history is written; the call's
    /// settlement gives them back (`credit`) and charges the actual cost. With a
    /// [`HoldTag`] the hold is also recorded in `holds`, so a crash before its settlement
    /// still charges it (see `LedgerStore::recover_holds`).
    Hold,
    /// Changes nothing: reads the key's counters in line with the ops before it, so memory
    /// learns what other instances charged without losing track of its own pending ops.
    Peek,
}

/// One consume (a single `use`, a whole batch, or a gateway call's cost) to commit.
#[derive(Debug, Clone)]
pub struct ConsumeOp {
    pub key_id: i64,
    pub kind: OpKind,
    pub items: Vec<UsageItem>,
    pub idempotency_key: Option<String>,
    /// A hold given back before this op is applied (settlements of held calls).
    pub credit: i64,
    /// Request counters shared by every instance that a hold must also fit (each counts
    /// the call when the hold is granted). Only a shared store keeps them.
    pub windows: Vec<WindowCap>,
    /// A hold's durable record: written by a `Hold`, deleted by the `Settle` that ends it.
    /// A settlement whose record is already gone (recovered as if its server had died) is
    /// charged nothing: the recovery charged the hold.
    pub hold: Option<HoldTag>,
    /// The budgets this op also draws from (the key's user, the user's team), as memory
    /// saw them when it was admitted; a settlement names those of its hold. Empty for a
    /// key with no user: such ops keep the one-statement fast path.
    pub budgets: Vec<BudgetRef>,
}

/// Names one durable hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldTag {
    pub id: i64,
    /// The server that holds it (its heartbeat keeps the hold from being recovered).
    pub instance: i64,
}

/// A request counter per key and fixed window, shared in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCap {
    pub kind: WindowKind,
    /// Start of the current window (epoch ms): a different start opens a new count.
    pub start: i64,
    /// Calls the window admits.
    pub cap: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// UTC day (`dailyRequests`).
    Day,
    /// Clock minute (`rpm`).
    Minute,
}

impl WindowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowKind::Day => "day",
            WindowKind::Minute => "minute",
        }
    }
}

impl ConsumeOp {
    /// An op of `kind` on the key with nothing in it yet (no items, no idempotency key, no
    /// credit, no windows).
    pub fn new(key_id: i64, kind: OpKind) -> Self {
        Self {
            key_id,
            kind,
            items: Vec::new(),
            idempotency_key: None,
            credit: 0,
            windows: Vec::new(),
            hold: None,
            budgets: Vec::new(),
        }
    }

    pub fn total(&self) -> i64 {
        self.items.iter().map(|i| i.amount).sum()
    }

    /// What this op changes `used` by, before any clamping.
    pub fn net(&self) -> i64 {
        self.total() - self.credit
    }
}

/// Why a key's row refused an op, and what it has left after any due refill (a settlement
/// of a call already served charges that much, usable key or not).
pub fn refusal_of(
    c: &KeyCounters,
    refill: Option<(RefillInterval, i64)>,
    now_ms: i64,
    p: PeriodStarts,
) -> (Refusal, Option<i64>) {
    let (quota, used) = match refill {
        Some((interval, amount))
            if c.refill_period
                .is_none_or(|rp| p.for_interval(interval) > rp) =>
        {
            (Some(amount), 0)
        }
        _ => (c.quota, c.used),
    };
    let remaining = quota.map(|q| q.saturating_sub(used).max(0));
    let refusal = if !c.enabled {
        Refusal::Disabled
    } else if c.expires_at.is_some_and(|e| e <= now_ms) {
        Refusal::Expired
    } else {
        Refusal::Quota { remaining }
    };
    (refusal, remaining)
}

/// Why a budget's row refused an op, and what it has left after any due refill.
pub fn budget_refusal(
    scope: Scope,
    c: &BudgetCounters,
    refill: Option<(RefillInterval, i64)>,
    p: PeriodStarts,
) -> (Refusal, Option<i64>) {
    let (quota, used) = match refill {
        Some((interval, amount))
            if c.refill_period
                .is_none_or(|rp| p.for_interval(interval) > rp) =>
        {
            (Some(amount), 0)
        }
        _ => (c.quota, c.used),
    };
    let remaining = quota.map(|q| q.saturating_sub(used).max(0));
    let refusal = if c.enabled {
        Refusal::Budget { scope, remaining }
    } else {
        Refusal::BudgetDisabled(scope)
    };
    (refusal, remaining)
}

/// One usage-history row of a committed op.
pub struct HistoryRow<'a> {
    pub amount: i64,
    pub reason: Option<&'a str>,
    pub remaining: Option<i64>,
    pub metadata: Option<&'a str>,
}

/// The history rows a committed op writes: one per item with the remaining quota right after
/// that item (a settlement: one row with what was charged; a hold: none; nothing for 0).
pub fn history_rows<'a>(op: &'a ConsumeOp, c: &Committed) -> Vec<HistoryRow<'a>> {
    if matches!(op.kind, OpKind::Hold | OpKind::Peek) {
        return Vec::new();
    }
    let mut rem_after = c.remaining;
    let mut per_item = Vec::with_capacity(op.items.len());
    for item in op.items.iter().rev() {
        per_item.push(rem_after);
        rem_after = rem_after.map(|x| x + item.amount);
    }
    op.items
        .iter()
        .zip(per_item.into_iter().rev())
        .filter_map(|(item, remaining)| {
            let amount = if op.kind == OpKind::Settle {
                c.charged
            } else {
                item.amount
            };
            (amount != 0).then_some(HistoryRow {
                amount,
                reason: item.reason.as_deref(),
                remaining,
                metadata: item.metadata.as_deref(),
            })
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    Disabled,
    Expired,
    Quota {
        remaining: Option<i64>,
    },
    /// A shared request counter is full for its window.
    Window(WindowCap),
    /// The key's user's or team's budget cannot afford the op.
    Budget {
        scope: Scope,
        remaining: Option<i64>,
    },
    /// The key's user or team is disabled.
    BudgetDisabled(Scope),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub remaining: Option<i64>,
    pub quota: Option<i64>,
    /// What was charged: the op's total, or less for a clamped settle.
    pub charged: i64,
}

pub type ConsumeResult = Result<Committed, Refusal>;

/// A key's counters as the database holds them right after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCounters {
    pub key_id: i64,
    pub used: i64,
    pub quota: Option<i64>,
    pub refill_period: Option<i64>,
    pub enabled: bool,
    pub expires_at: Option<i64>,
    pub last_used: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct BatchOutcome {
    /// One per op, in the order given.
    pub results: Vec<ConsumeResult>,
    /// Fresh counters of every key the batch touched (absent when the key is gone).
    pub counters: Vec<KeyCounters>,
    /// Fresh counters of every user or team budget the batch touched.
    pub budgets: Vec<BudgetCounters>,
}
