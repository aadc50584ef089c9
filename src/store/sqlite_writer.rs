//! The ledger's commit path on SQLite: one transaction per batch, executed synchronously on
//! the writer's thread with statements prepared once, through the raw handle of a
//! connection that only the writer uses.

// foldhash: these maps are keyed by our own ids and built per batch; SipHash buys nothing.
use foldhash::{HashMap, HashMapExt};

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};

use super::rows::REQUEST_LOG_COLUMNS;
use super::sqlite_raw::{Db, OwnedConn, Prepared, Step, Stmt};
use super::types::RequestLogRow;
use super::{
    BatchOutcome, Committed, ConsumeOp, ConsumeResult, ConsumeWriter, KeyCounters, OpKind, Refusal,
    StoreError, StoreResult, budget_refusal, history_rows, refusal_of,
};
use crate::accounts::{BudgetCounters, BudgetRef};
use crate::keys::RefillInterval;
use crate::keys::refill::PeriodStarts;

// The refill period of the row's own interval, and whether its reset is still due. Reading
// the interval from the row (not from memory) keeps this right even when memory is stale.
const PERIOD: &str =
    "(CASE refill_interval WHEN 'daily' THEN ?1 WHEN 'weekly' THEN ?2 WHEN 'monthly' THEN ?3 END)";

/// ?1-?3 period starts, ?4 now, ?5 amount, ?6 key id. Refuses (no row) unless the key can
/// afford the amount after any due refill, and (`strict`) is enabled and unexpired.
fn consume_sql(strict: bool) -> String {
    let usable = if strict {
        " AND enabled = 1 AND (expires_at IS NULL OR expires_at > ?4)"
    } else {
        ""
    };
    let due =
        format!("({PERIOD} IS NOT NULL AND (refill_period IS NULL OR {PERIOD} > refill_period))");
    let used = format!("((CASE WHEN {due} THEN 0 ELSE used END) + ?5)");
    let quota = format!("(CASE WHEN {due} THEN refill_amount ELSE quota END)");
    format!(
        "UPDATE keys SET used = {used}, quota = {quota}, \
         refill_period = CASE WHEN {due} THEN {PERIOD} ELSE refill_period END, last_used = ?4 \
         WHERE id = ?6{usable} AND ({quota} IS NULL OR {used} <= {quota})"
    )
}

/// ?1-?3 period starts, ?4 now, ?5 amount, ?6 key id, ?7 credit: a settlement in one
/// statement — its hold given back (never below zero) and its cost charged — when the cost
/// fits; no row otherwise (the caller then gives back and charges what is left, step by
/// step). The same arithmetic as `credit_sql` then `consume_sql(false)`, one row write.
fn settle_sql() -> String {
    let due =
        format!("({PERIOD} IS NOT NULL AND (refill_period IS NULL OR {PERIOD} > refill_period))");
    let used = format!("(MAX(0, (CASE WHEN {due} THEN 0 ELSE used END) - ?7) + ?5)");
    let quota = format!("(CASE WHEN {due} THEN refill_amount ELSE quota END)");
    format!(
        "UPDATE keys SET used = {used}, quota = {quota}, \
         refill_period = CASE WHEN {due} THEN {PERIOD} ELSE refill_period END, last_used = ?4 \
         WHERE id = ?6 AND ({quota} IS NULL OR {used} <= {quota})"
    )
}

/// ?1-?3 period starts, ?5 credit, ?6 key id: gives a hold back (after any due refill, which
/// already dropped what the old period held), never below zero.
fn credit_sql() -> String {
    let due =
        format!("({PERIOD} IS NOT NULL AND (refill_period IS NULL OR {PERIOD} > refill_period))");
    format!(
        "UPDATE keys SET used = MAX(0, (CASE WHEN {due} THEN 0 ELSE used END) - ?5), \
         quota = (CASE WHEN {due} THEN refill_amount ELSE quota END), \
         refill_period = CASE WHEN {due} THEN {PERIOD} ELSE refill_period END WHERE id = ?6"
    )
}

/// ?1-?3 period starts, ?5 amount, ?6 account id: the same for a user's or team's budget
/// (`strict`: refused unless enabled and affordable; else only unless affordable).
fn budget_sql(strict: bool) -> String {
    let due =
        format!("({PERIOD} IS NOT NULL AND (refill_period IS NULL OR {PERIOD} > refill_period))");
    let used = format!("((CASE WHEN {due} THEN 0 ELSE used END) + ?5)");
    let quota = format!("(CASE WHEN {due} THEN refill_amount ELSE quota END)");
    let usable = if strict { " AND enabled = 1" } else { "" };
    format!(
        "UPDATE accounts SET used = {used}, quota = {quota}, \
         refill_period = CASE WHEN {due} THEN {PERIOD} ELSE refill_period END \
         WHERE id = ?6{usable} AND ({quota} IS NULL OR {used} <= {quota}) \
         RETURNING used, quota, refill_period, enabled"
    )
}

const SELECT_BUDGET: &str = "SELECT used, quota, refill_period, enabled, refill_interval, \
     refill_amount FROM accounts WHERE id = ?1";

/// A batch's rows go into a table by statements of these many rows, largest first: one
/// statement of many rows opens the table's and its indexes' cursors (and for `usage_events`
/// updates `sqlite_sequence`) once, not once a row — a third of a row's cost when each row was
/// a statement of its own.
const ROWS: [usize; 6] = [32, 16, 8, 4, 2, 1];

/// An insert (`verb`: `INSERT OR FAIL`, `INSERT OR IGNORE`) of `rows` rows of `width`
/// parameters each into `table (columns)`.
fn insert_sql(verb: &str, table: &str, columns: &str, width: usize, rows: usize) -> String {
    let values = (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=width).map(|c| format!("?{}", r * width + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("{verb} INTO {table} ({columns}) VALUES {values}")
}

/// One statement a size of [`ROWS`], in its order. `OR FAIL` (or `OR IGNORE`): a row that
/// fails ends the statement without undoing the rows before it, so SQLite keeps no statement
/// journal (a copy of each page a multi-row statement touches); the writer rolls the whole
/// transaction back on any error anyway.
fn prepare_inserts(
    db: &Db<'_>,
    verb: &str,
    (table, columns): (&str, &str),
    width: usize,
) -> StoreResult<Vec<Prepared>> {
    ROWS.iter()
        .map(|&n| db.prepare(&insert_sql(verb, table, columns, width, n)))
        .collect()
}

/// `rows` in order (their ids too), by as few of `stmts` (from [`prepare_inserts`]) as
/// [`ROWS`] allows; `bind` binds one row's `width` parameters from the given first one.
fn insert_rows<T>(
    db: &Db<'_>,
    stmts: &mut [Prepared],
    (mut rows, width): (&[T], usize),
    bind: impl Fn(&mut Stmt<'_>, i32, &T) -> StoreResult<()>,
) -> StoreResult<()> {
    for (size, st) in ROWS.iter().zip(stmts.iter_mut()) {
        while rows.len() >= *size {
            let (these, rest) = rows.split_at(*size);
            let mut st = st.on(db)?;
            st.reset();
            for (k, row) in these.iter().enumerate() {
                // SQLite numbers parameters from one; at most 32 × 22 of them.
                bind(
                    &mut st,
                    i32::try_from(k * width + 1).unwrap_or(i32::MAX),
                    row,
                )?;
            }
            st.step()?;
            st.reset();
            rows = rest;
        }
    }
    Ok(())
}

const EVENT_COLUMNS: &str = "key_id, ts, amount, reason, remaining, metadata";
const IDEM_COLUMNS: &str =
    "key_id, idem_key, created_at, amount_used, remaining, total_quota, item_count";
const INSERT_HOLD: &str = "INSERT INTO holds (id, key_id, amount, instance, created_at, reason, \
     metadata) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const DELETE_HOLD: &str = "DELETE FROM holds WHERE id = ?1";
const SELECT_KEY: &str = "SELECT used, quota, refill_period, enabled, expires_at, last_used, \
     refill_interval, refill_amount FROM keys WHERE id = ?1";

struct Statements {
    /// One statement a size of [`ROWS`], in its order.
    request_logs: Vec<Prepared>,
    begin: Prepared,
    commit: Prepared,
    credit: Prepared,
    consume: Prepared,
    settle: Prepared,
    settle_credited: Prepared,
    /// One statement a size of [`ROWS`], in its order.
    events: Vec<Prepared>,
    /// One statement a size of [`ROWS`], in its order.
    idems: Vec<Prepared>,
    key: Prepared,
    hold: Prepared,
    unhold: Prepared,
    budget_take: Prepared,
    budget_charge: Prepared,
    budget_credit: Prepared,
    budget: Prepared,
}

impl Statements {
    fn prepare(db: &Db<'_>) -> StoreResult<Self> {
        Ok(Self {
            // Prepared once like the rest: `sqlite3_exec` would parse them every batch.
            begin: db.prepare("BEGIN IMMEDIATE")?,
            request_logs: prepare_inserts(
                db,
                "INSERT OR FAIL",
                ("request_log", REQUEST_LOG_COLUMNS),
                LOG_WIDTH,
            )?,
            commit: db.prepare("COMMIT")?,
            credit: db.prepare(&credit_sql())?,
            consume: db.prepare(&consume_sql(true))?,
            settle: db.prepare(&consume_sql(false))?,
            settle_credited: db.prepare(&settle_sql())?,
            events: prepare_inserts(db, "INSERT OR FAIL", ("usage_events", EVENT_COLUMNS), 6)?,
            // A key already recorded (the same request retried meanwhile) keeps its record.
            idems: prepare_inserts(db, "INSERT OR IGNORE", ("idempotency", IDEM_COLUMNS), 7)?,
            key: db.prepare(SELECT_KEY)?,
            hold: db.prepare(INSERT_HOLD)?,
            unhold: db.prepare(DELETE_HOLD)?,
            budget_take: db.prepare(&budget_sql(true))?,
            budget_charge: db.prepare(&budget_sql(false))?,
            budget_credit: db.prepare(&credit_sql().replace("UPDATE keys", "UPDATE accounts"))?,
            budget: db.prepare(SELECT_BUDGET)?,
        })
    }
}

pub struct SqliteConsumeWriter {
    // Declared first so they are finalized before the connection below is closed.
    stmts: Option<Statements>,
    conn: Option<OwnedConn>,
}

impl SqliteConsumeWriter {
    /// The writer's own connection, with the settings the store's options give: read from
    /// a connection sqlx opens with them (which also creates the file and sets WAL), then
    /// applied to a raw connection this thread owns.
    pub async fn connect(opts: &SqliteConnectOptions) -> StoreResult<Self> {
        let mut probe: SqliteConnection = opts.connect().await?;
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut probe)
            .await?;
        let busy_ms: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut probe)
            .await?;
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut probe)
            .await?;
        probe.close().await?;
        let mut conn = OwnedConn::open(
            opts.get_filename(),
            i32::try_from(busy_ms).unwrap_or(i32::MAX),
        )?;
        let db = conn.db();
        db.exec(&format!("PRAGMA synchronous = {synchronous}"))?;
        db.exec(&format!("PRAGMA foreign_keys = {foreign_keys}"))?;
        Ok(Self {
            stmts: None,
            conn: Some(conn),
        })
    }
}

fn counters(key_id: i64, s: &Stmt<'_>) -> KeyCounters {
    KeyCounters {
        key_id,
        used: s.column_i64(0),
        quota: s.column_opt_i64(1),
        refill_period: s.column_opt_i64(2),
        enabled: s.column_i64(3) != 0,
        expires_at: s.column_opt_i64(4),
        last_used: s.column_opt_i64(5),
    }
}

fn budget_counters(id: i64, s: &Stmt<'_>) -> BudgetCounters {
    BudgetCounters {
        id,
        used: s.column_i64(0),
        quota: s.column_opt_i64(1),
        refill_period: s.column_opt_i64(2),
        enabled: s.column_i64(3) != 0,
    }
}

/// The conditional update of a key (`upd`), and on success the row as it left it (read by
/// `sel`, `SELECT_KEY`: cheaper than a `RETURNING` clause, for which SQLite builds a
/// temporary table each time).
fn run_consume(
    upd: &mut Stmt<'_>,
    sel: &mut Stmt<'_>,
    key_id: i64,
    amount: i64,
    now_ms: i64,
    p: PeriodStarts,
) -> StoreResult<Option<KeyCounters>> {
    run_update(upd, sel, (key_id, amount, None), now_ms, p)
}

/// [`run_consume`], with `?7` bound to a credit when there is one (`settle_sql`).
fn run_update(
    upd: &mut Stmt<'_>,
    sel: &mut Stmt<'_>,
    (key_id, amount, credit): (i64, i64, Option<i64>),
    now_ms: i64,
    p: PeriodStarts,
) -> StoreResult<Option<KeyCounters>> {
    upd.reset();
    upd.bind_i64(1, p.daily)?;
    upd.bind_i64(2, p.weekly)?;
    upd.bind_i64(3, p.monthly)?;
    upd.bind_i64(4, now_ms)?;
    upd.bind_i64(5, amount)?;
    upd.bind_i64(6, key_id)?;
    if let Some(credit) = credit {
        upd.bind_i64(7, credit)?;
    }
    upd.step()?;
    let changed = upd.changes() > 0;
    upd.reset();
    if !changed {
        return Ok(None);
    }
    sel.reset();
    sel.bind_i64(1, key_id)?;
    let out = match sel.step()? {
        Step::Row => Some(counters(key_id, sel)),
        Step::Done => None,
    };
    sel.reset();
    Ok(out)
}

/// Why the conditional update refused, read back from the row, and what the key has left
/// (after any due refill) whether or not it is usable: a settlement charges that much of a
/// call already served, even on a key disabled or expired meanwhile.
fn classify(
    st: &mut Stmt<'_>,
    key_id: i64,
    now_ms: i64,
    p: PeriodStarts,
) -> StoreResult<(Refusal, Option<i64>, Option<KeyCounters>)> {
    st.reset();
    st.bind_i64(1, key_id)?;
    let out = match st.step()? {
        Step::Done => (Refusal::NotFound, None, None),
        Step::Row => {
            let c = counters(key_id, st);
            let refill = st
                .column_opt_text(6)
                .as_deref()
                .and_then(RefillInterval::parse)
                .zip(st.column_opt_i64(7));
            let (refusal, remaining) = refusal_of(&c, refill, now_ms, p);
            (refusal, remaining, Some(c))
        }
    };
    st.reset();
    Ok(out)
}

/// One batch's transaction: the database, its statements, and the batch's clock.
struct Batch<'a, 'd> {
    db: &'a Db<'d>,
    s: &'a mut Statements,
    now_ms: i64,
    p: PeriodStarts,
    /// Every user or team budget touched so far, as it stands now.
    budgets: HashMap<i64, BudgetCounters>,
}

/// Parameters of one request-log row.
const LOG_WIDTH: usize = 22;

/// One request-log row from parameter `p` on, in the order of `REQUEST_LOG_COLUMNS`.
fn bind_log(st: &mut Stmt<'_>, p: i32, r: &RequestLogRow) -> StoreResult<()> {
    st.bind_i64(p, r.ts)?;
    st.bind_opt_text(p + 1, Some(&r.request_id))?;
    st.bind_opt_i64(p + 2, r.key_id)?;
    st.bind_opt_text(p + 3, r.key_name.as_deref())?;
    st.bind_opt_i64(p + 4, r.owner_user_id)?;
    st.bind_opt_text(p + 5, r.owner_username.as_deref())?;
    st.bind_opt_text(p + 6, Some(&r.endpoint))?;
    st.bind_opt_text(p + 7, r.model.as_deref())?;
    st.bind_opt_text(p + 8, r.upstream.as_deref())?;
    st.bind_i64(p + 9, r.prompt_tokens)?;
    st.bind_i64(p + 10, r.completion_tokens)?;
    st.bind_i64(p + 11, r.cost)?;
    st.bind_i64(p + 12, r.status)?;
    st.bind_opt_text(p + 13, r.error.as_deref())?;
    st.bind_i64(p + 14, r.latency_ms)?;
    st.bind_opt_i64(p + 15, r.ttft_ms)?;
    st.bind_i64(p + 16, i64::from(r.is_stream))?;
    st.bind_i64(p + 17, i64::from(r.estimated))?;
    st.bind_opt_text(p + 18, r.client_ip.as_deref())?;
    st.bind_i64(p + 19, r.cached_tokens)?;
    st.bind_i64(p + 20, r.cache_write_tokens)?;
    st.bind_i64(p + 21, r.reasoning_tokens)?;
    Ok(())
}

fn commit_sync(
    db: &Db<'_>,
    s: &mut Statements,
    (ops, logs): (&[ConsumeOp], &[RequestLogRow]),
    now_ms: i64,
    p: PeriodStarts,
) -> StoreResult<BatchOutcome> {
    s.begin.on(db)?.run()?;
    let mut b = Batch {
        db,
        s,
        now_ms,
        p,
        budgets: HashMap::new(),
    };
    let mut results: Vec<Option<ConsumeResult>> = vec![None; ops.len()];
    let mut fresh = Vec::new();
    let (order, by_key) = group_by_key(ops);
    for key_id in order {
        let idxs = &by_key[&key_id];
        if let Some(c) = b.whole_group(ops, idxs, key_id, &mut results)? {
            fresh.push(c);
            continue;
        }
        // Slow path: one by one, refusing only those that do not fit.
        let mut last = None;
        for &i in idxs {
            let (result, seen) = b.one(&ops[i], key_id)?;
            results[i] = Some(result);
            last = seen.or(last);
        }
        fresh.extend(last);
    }
    b.records(ops, &results)?;
    // Memory learns every touched budget's counters, the ones last given back included.
    for r in ops.iter().flat_map(|op| &op.budgets) {
        if !b.budgets.contains_key(&r.id) {
            b.read_budget(*r)?;
        }
    }
    insert_rows(db, &mut b.s.request_logs, (logs, LOG_WIDTH), bind_log)?;
    b.s.commit.on(db)?.run()?;
    Ok(BatchOutcome {
        results: results
            .into_iter()
            .map(|r| r.unwrap_or(Err(Refusal::NotFound)))
            .collect(),
        counters: fresh,
        budgets: b.budgets.into_values().collect(),
    })
}

/// The keys in order of first appearance, and each key's ops in arrival order.
fn group_by_key(ops: &[ConsumeOp]) -> (Vec<i64>, HashMap<i64, Vec<usize>>) {
    let mut order: Vec<i64> = Vec::new();
    let mut by_key: HashMap<i64, Vec<usize>> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        by_key
            .entry(op.key_id)
            .or_insert_with(|| {
                order.push(op.key_id);
                Vec::new()
            })
            .push(i);
    }
    (order, by_key)
}

impl Batch<'_, '_> {
    /// Fast path: a key's plain consumes and holds committed by one statement for their
    /// sum, when it fits. `None` when the group is not all plain or does not fit.
    fn whole_group(
        &mut self,
        ops: &[ConsumeOp],
        idxs: &[usize],
        key_id: i64,
        results: &mut [Option<ConsumeResult>],
    ) -> StoreResult<Option<KeyCounters>> {
        let all_consume = idxs.iter().all(|&i| {
            matches!(ops[i].kind, OpKind::Consume | OpKind::Hold)
                && ops[i].credit == 0
                && ops[i].budgets.is_empty()
        });
        if !all_consume {
            return Ok(None);
        }
        let total: i64 = idxs.iter().map(|&i| ops[i].total()).sum();
        let Some(c) = run_consume(
            &mut self.s.consume.on(self.db)?,
            &mut self.s.key.on(self.db)?,
            key_id,
            total,
            self.now_ms,
            self.p,
        )?
        else {
            return Ok(None);
        };
        let mut used_after = c.used;
        for &i in idxs.iter().rev() {
            results[i] = Some(Ok(Committed {
                remaining: c.quota.map(|q| q - used_after),
                quota: c.quota,
                charged: ops[i].total(),
            }));
            used_after -= ops[i].total();
            self.record_hold(&ops[i])?;
        }
        Ok(Some(c))
    }

    /// A granted hold's durable record, written as it is applied: a settlement later in the
    /// same batch must find it.
    fn record_hold(&mut self, op: &ConsumeOp) -> StoreResult<()> {
        let (OpKind::Hold, Some(tag)) = (op.kind, op.hold) else {
            return Ok(());
        };
        let item = op.items.first();
        let metadata = item.and_then(|i| i.metadata.as_deref());
        let mut h = self.s.hold.on(self.db)?;
        h.reset();
        h.bind_i64(1, tag.id)?;
        h.bind_i64(2, op.key_id)?;
        h.bind_i64(3, op.total())?;
        h.bind_i64(4, tag.instance)?;
        h.bind_i64(5, self.now_ms)?;
        h.bind_opt_text(6, item.and_then(|i| i.reason.as_deref()))?;
        h.bind_opt_text(7, metadata)?;
        h.step()?;
        h.reset();
        Ok(())
    }

    /// Deletes a settlement's hold record; false when it is gone (recovered already).
    fn end_hold(&mut self, id: i64) -> StoreResult<bool> {
        let mut d = self.s.unhold.on(self.db)?;
        d.reset();
        d.bind_i64(1, id)?;
        d.step()?;
        let found = d.changes() > 0;
        d.reset();
        Ok(found)
    }

    /// One op on its own, and the key's counters as it left them (when read).
    fn one(
        &mut self,
        op: &ConsumeOp,
        key_id: i64,
    ) -> StoreResult<(ConsumeResult, Option<KeyCounters>)> {
        let (now_ms, p) = (self.now_ms, self.p);
        if let Some(done) = self.settled_early(op, key_id)? {
            return Ok(done);
        }
        if op.credit > 0 {
            self.give_back(key_id, op.credit)?;
            for b in &op.budgets {
                self.budget_credit(b.id, op.credit)?;
            }
        }
        let mut charged = op.total();
        if op.kind == OpKind::Settle {
            // A served call pays no more than its user and team have left either.
            charged = charged.min(self.budgets_left(&op.budgets)?.unwrap_or(i64::MAX));
        }
        let stmt = match op.kind {
            OpKind::Consume | OpKind::Hold | OpKind::Peek => &mut self.s.consume,
            OpKind::Settle => &mut self.s.settle,
        };
        let mut row = run_consume(
            &mut stmt.on(self.db)?,
            &mut self.s.key.on(self.db)?,
            key_id,
            charged,
            now_ms,
            p,
        )?;
        let mut refusal = None;
        let mut seen = None;
        if row.is_none() {
            let (r, left, c) = classify(&mut self.s.key.on(self.db)?, key_id, now_ms, p)?;
            seen = c;
            match (op.kind, left, r) {
                (_, _, Refusal::NotFound)
                | (OpKind::Consume | OpKind::Hold | OpKind::Peek, _, _) => refusal = Some(r),
                // A served call pays what is left, never more (disabled or not).
                (OpKind::Settle, Some(left), _) if left > 0 => {
                    charged = left;
                    row = run_consume(
                        &mut self.s.settle.on(self.db)?,
                        &mut self.s.key.on(self.db)?,
                        key_id,
                        charged,
                        now_ms,
                        p,
                    )?;
                }
                (OpKind::Settle, _, _) => {
                    charged = 0;
                    row = c;
                }
            }
        }
        if row.is_some()
            && refusal.is_none()
            && let Some((r, c)) = self.budgets_after_key(op, charged)?
        {
            seen = c;
            row = None;
            refusal = Some(r);
        }
        if row.is_some() && refusal.is_none() {
            self.record_hold(op)?;
        }
        Ok(match (row, refusal) {
            (Some(c), None) => (
                Ok(Committed {
                    remaining: c.quota.map(|q| q - c.used),
                    quota: c.quota,
                    charged,
                }),
                Some(c),
            ),
            (_, r) => (Err(r.unwrap_or(Refusal::NotFound)), seen),
        })
    }

    /// An op done before the step-by-step path: a peek, a settlement whose hold was
    /// recovered meanwhile (its server looked dead: the recovery charged the hold), or the
    /// usual settlement in one statement.
    fn settled_early(
        &mut self,
        op: &ConsumeOp,
        key_id: i64,
    ) -> StoreResult<Option<(ConsumeResult, Option<KeyCounters>)>> {
        if op.kind == OpKind::Peek {
            return self.as_is(key_id).map(Some);
        }
        if op.kind == OpKind::Settle
            && let Some(tag) = op.hold
            && !self.end_hold(tag.id)?
        {
            return self.as_is(key_id).map(Some);
        }
        self.settle_in_one(op, key_id)
    }

    /// The usual settlement (no user or team budget, the cost fits): hold given back and cost
    /// charged by one row write. `None` when it is not that (nothing written).
    fn settle_in_one(
        &mut self,
        op: &ConsumeOp,
        key_id: i64,
    ) -> StoreResult<Option<(ConsumeResult, Option<KeyCounters>)>> {
        if op.kind != OpKind::Settle || op.credit <= 0 || !op.budgets.is_empty() {
            return Ok(None);
        }
        let c = run_update(
            &mut self.s.settle_credited.on(self.db)?,
            &mut self.s.key.on(self.db)?,
            (key_id, op.total(), Some(op.credit)),
            self.now_ms,
            self.p,
        )?;
        Ok(c.map(|c| {
            let committed = Committed {
                remaining: c.quota.map(|q| q - c.used),
                quota: c.quota,
                charged: op.total(),
            };
            (Ok(committed), Some(c))
        }))
    }

    /// The key's counters as they stand, nothing charged (a peek, or a settlement whose hold
    /// was recovered already).
    fn as_is(&mut self, key_id: i64) -> StoreResult<(ConsumeResult, Option<KeyCounters>)> {
        let (_, _, c) = classify(&mut self.s.key.on(self.db)?, key_id, self.now_ms, self.p)?;
        let result = match c {
            Some(c) => Ok(Committed {
                remaining: c.quota.map(|q| q - c.used),
                quota: c.quota,
                charged: 0,
            }),
            None => Err(Refusal::NotFound),
        };
        Ok((result, c))
    }

    /// The user's and team's part of an op the key took: a settlement charges them; a
    /// consume or hold takes from them, and when one refuses, the key gets its part back
    /// (the refusal, and the key's counters as they now stand).
    fn budgets_after_key(
        &mut self,
        op: &ConsumeOp,
        charged: i64,
    ) -> StoreResult<Option<(Refusal, Option<KeyCounters>)>> {
        if op.kind == OpKind::Settle {
            self.charge_budgets(&op.budgets, charged)?;
            return Ok(None);
        }
        let Some(r) = self.take_budgets(&op.budgets, charged)? else {
            return Ok(None);
        };
        self.give_back(op.key_id, charged)?;
        let (_, _, c) = classify(&mut self.s.key.on(self.db)?, op.key_id, self.now_ms, self.p)?;
        Ok(Some((r, c)))
    }

    /// Runs a budget statement (`take`, `charge`) for `amount`; the fresh counters when the
    /// row took it.
    fn run_budget(&mut self, take: bool, id: i64, amount: i64) -> StoreResult<bool> {
        let stmt = if take {
            &mut self.s.budget_take
        } else {
            &mut self.s.budget_charge
        };
        let mut st = stmt.on(self.db)?;
        st.reset();
        st.bind_i64(1, self.p.daily)?;
        st.bind_i64(2, self.p.weekly)?;
        st.bind_i64(3, self.p.monthly)?;
        st.bind_i64(5, amount)?;
        st.bind_i64(6, id)?;
        let out = match st.step()? {
            Step::Row => Some(budget_counters(id, &st)),
            Step::Done => None,
        };
        st.reset();
        if let Some(c) = out {
            self.budgets.insert(id, c);
        }
        Ok(out.is_some())
    }

    /// A budget's row as it stands: why it refuses and what it has left (`None`: no row).
    fn read_budget(&mut self, b: BudgetRef) -> StoreResult<Option<(Refusal, Option<i64>)>> {
        let mut st = self.s.budget.on(self.db)?;
        st.reset();
        st.bind_i64(1, b.id)?;
        let out = match st.step()? {
            Step::Done => None,
            Step::Row => {
                let c = budget_counters(b.id, &st);
                let refill = st
                    .column_opt_text(4)
                    .as_deref()
                    .and_then(RefillInterval::parse)
                    .zip(st.column_opt_i64(5));
                Some((c, budget_refusal(b.scope, &c, refill, self.p)))
            }
        };
        st.reset();
        Ok(out.map(|(c, r)| {
            self.budgets.insert(b.id, c);
            r
        }))
    }

    /// Takes `amount` from every budget (enabled and affordable), or from none: on a
    /// refusal what was taken is given back, and the refusal names the budget.
    fn take_budgets(&mut self, budgets: &[BudgetRef], amount: i64) -> StoreResult<Option<Refusal>> {
        for (j, &b) in budgets.iter().enumerate() {
            if self.run_budget(true, b.id, amount)? {
                continue;
            }
            // A budget whose row is gone (its user deleted meanwhile) limits nothing.
            let Some((refusal, _)) = self.read_budget(b)? else {
                continue;
            };
            for prev in &budgets[..j] {
                self.budget_credit(prev.id, amount)?;
            }
            return Ok(Some(refusal));
        }
        Ok(None)
    }

    /// What the budgets have left together (the least of them; `None`: unlimited).
    fn budgets_left(&mut self, budgets: &[BudgetRef]) -> StoreResult<Option<i64>> {
        let mut least: Option<i64> = None;
        for &b in budgets {
            if let Some((_, Some(left))) = self.read_budget(b)? {
                least = Some(least.map_or(left, |l| l.min(left)));
            }
        }
        Ok(least)
    }

    /// Charges a settled call's cost (already clamped to what every budget has left).
    fn charge_budgets(&mut self, budgets: &[BudgetRef], amount: i64) -> StoreResult<()> {
        for &b in budgets {
            self.run_budget(false, b.id, amount)?;
        }
        Ok(())
    }

    /// Gives `credit` back to a budget, never below zero.
    fn budget_credit(&mut self, id: i64, credit: i64) -> StoreResult<()> {
        let mut c = self.s.budget_credit.on(self.db)?;
        c.reset();
        c.bind_i64(1, self.p.daily)?;
        c.bind_i64(2, self.p.weekly)?;
        c.bind_i64(3, self.p.monthly)?;
        c.bind_i64(5, credit)?;
        c.bind_i64(6, id)?;
        c.step()?;
        c.reset();
        // Read again at the batch's end (the credit may have applied a due refill too).
        self.budgets.remove(&id);
        Ok(())
    }

    /// A settled call's hold given back before its cost is charged.
    fn give_back(&mut self, key_id: i64, credit: i64) -> StoreResult<()> {
        let mut c = self.s.credit.on(self.db)?;
        c.reset();
        c.bind_i64(1, self.p.daily)?;
        c.bind_i64(2, self.p.weekly)?;
        c.bind_i64(3, self.p.monthly)?;
        c.bind_i64(5, credit)?;
        c.bind_i64(6, key_id)?;
        c.step()?;
        c.reset();
        Ok(())
    }

    /// The usage-history rows and idempotency records of the committed ops.
    fn records(&mut self, ops: &[ConsumeOp], results: &[Option<ConsumeResult>]) -> StoreResult<()> {
        let now_ms = self.now_ms;
        let mut history = Vec::new();
        let mut idems = Vec::new();
        for (op, r) in ops.iter().zip(results) {
            let Some(Ok(c)) = r else { continue };
            history.extend(history_rows(op, c).into_iter().map(|h| (op.key_id, h)));
            if let Some(k) = &op.idempotency_key {
                idems.push((op, k, c));
            }
        }
        insert_rows(
            self.db,
            &mut self.s.idems,
            (&idems, 7),
            |q, p, (op, k, c)| {
                q.bind_i64(p, op.key_id)?;
                q.bind_opt_text(p + 1, Some(k))?;
                q.bind_i64(p + 2, now_ms)?;
                q.bind_i64(p + 3, op.total())?;
                q.bind_opt_i64(p + 4, c.remaining)?;
                q.bind_opt_i64(p + 5, c.quota)?;
                q.bind_i64(p + 6, op.items.len() as i64)
            },
        )?;
        insert_rows(
            self.db,
            &mut self.s.events,
            (&history, 6),
            |e, p, (key_id, h)| {
                e.bind_i64(p, *key_id)?;
                e.bind_i64(p + 1, now_ms)?;
                e.bind_i64(p + 2, h.amount)?;
                e.bind_opt_text(p + 3, h.reason)?;
                e.bind_opt_i64(p + 4, h.remaining)?;
                e.bind_opt_text(p + 5, h.metadata)
            },
        )
    }
}

impl SqliteConsumeWriter {
    /// Runs `f` on the writer's own connection; on an error, rolls back
    /// whatever `f` left open, so the connection is usable for the next call.
    async fn with_db<T>(
        &mut self,
        f: impl FnOnce(&Db<'_>, &mut Option<Statements>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("writer closed".into()))?;
        let db = conn.db();
        let out = f(&db, &mut self.stmts);
        if out.is_err() {
            let _ = db.exec("ROLLBACK");
        }
        out
    }
}

#[async_trait(?Send)]
impl ConsumeWriter for SqliteConsumeWriter {
    async fn commit(
        &mut self,
        ops: &[ConsumeOp],
        now_ms: i64,
        periods: PeriodStarts,
    ) -> StoreResult<BatchOutcome> {
        self.commit_with_logs(ops, &[], now_ms, periods).await
    }

    fn carries_request_logs(&self) -> bool {
        true
    }

    async fn commit_with_logs(
        &mut self,
        ops: &[ConsumeOp],
        logs: &[RequestLogRow],
        now_ms: i64,
        periods: PeriodStarts,
    ) -> StoreResult<BatchOutcome> {
        self.with_db(|db, stmts| {
            if stmts.is_none() {
                *stmts = Some(Statements::prepare(db)?);
            }
            let Some(stmts) = stmts.as_mut() else {
                return Err(StoreError::Other("statements not prepared".into()));
            };
            commit_sync(db, stmts, (ops, logs), now_ms, periods)
        })
        .await
    }

    async fn probe(&mut self, now_ms: i64) -> StoreResult<()> {
        self.with_db(|db, _| {
            db.exec("BEGIN IMMEDIATE")?;
            db.exec(&format!(
                "INSERT OR REPLACE INTO health_probe (id, ts) VALUES (1, {now_ms})"
            ))?;
            db.exec("COMMIT")
        })
        .await
    }

    async fn close(mut self: Box<Self>) {
        // Statements first, then the connection (closing it checkpoints when it is the
        // database's last).
        self.stmts = None;
        self.conn = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    const DAY: i64 = 86_400_000;
    type KeyRow = (Option<i64>, i64, Option<(&'static str, i64, i64)>);

    async fn key_db() -> SqliteConnection {
        let mut db = SqliteConnectOptions::new()
            .in_memory(true)
            .connect()
            .await
            .unwrap();
        sqlx::query(
            "CREATE TABLE keys (id INTEGER PRIMARY KEY, quota INTEGER, used INTEGER NOT NULL, \
             refill_interval TEXT, refill_amount INTEGER, refill_period INTEGER, last_used INTEGER)",
        )
        .execute(&mut db)
        .await
        .unwrap();
        db
    }

    /// Runs `sql` with the writer's bindings (period starts at day one, now just after).
    async fn run(db: &mut SqliteConnection, sql: String, amount: i64, credit: Option<i64>) -> bool {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(DAY)
            .bind(DAY)
            .bind(DAY)
            .bind(DAY + 123)
            .bind(amount)
            .bind(1_i64);
        if let Some(c) = credit {
            q = q.bind(c);
        }
        q.execute(&mut *db).await.unwrap().rows_affected() == 1
    }

    /// The key as `(quota, used, refill)`; after one-statement or two-step settlement: whether
    /// the charge fitted, and the row's `(used, quota, refill_period)`.
    async fn settle(
        db: &mut SqliteConnection,
        (quota, used, refill): KeyRow,
        (credit, amount): (i64, i64),
        one: bool,
    ) -> (bool, (i64, Option<i64>, Option<i64>)) {
        sqlx::query("DELETE FROM keys")
            .execute(&mut *db)
            .await
            .unwrap();
        sqlx::query("INSERT INTO keys VALUES (1, ?1, ?2, ?3, ?4, ?5, NULL)")
            .bind(quota)
            .bind(used)
            .bind(refill.map(|r| r.0))
            .bind(refill.map(|r| r.1))
            .bind(refill.map(|r| r.2))
            .execute(&mut *db)
            .await
            .unwrap();
        let fitted = if one {
            run(db, settle_sql(), amount, Some(credit)).await
        } else {
            run(db, credit_sql(), credit, None).await;
            run(db, consume_sql(false), amount, None).await
        };
        let r = sqlx::query("SELECT used, quota, refill_period FROM keys")
            .fetch_one(&mut *db)
            .await
            .unwrap();
        (fitted, (r.get(0), r.get(1), r.get(2)))
    }

    /// The one-statement settlement leaves a key exactly as the hold given back and then the
    /// cost charged would, refill due or not, and refuses exactly when that charge would not
    /// fit (the caller then takes the step-by-step path).
    #[tokio::test]
    async fn a_settlement_in_one_statement_matches_give_back_then_charge() {
        let mut db = key_db().await;
        let mut fitted = 0;
        for quota in [None, Some(0_i64), Some(50), Some(100)] {
            for used in [0_i64, 30, 60, 100] {
                for refill in [None, Some(("daily", 80, 0)), Some(("daily", 80, DAY))] {
                    for op in [(10, 5), (10, 40), (40, 10), (100, 0), (5, 90)] {
                        let key = (quota, used, refill);
                        let one = settle(&mut db, key, op, true).await;
                        let two = settle(&mut db, key, op, false).await;
                        assert_eq!(one.0, two.0, "{key:?} {op:?}");
                        if one.0 {
                            assert_eq!(one.1, two.1, "{key:?} {op:?}");
                            fitted += 1;
                        }
                    }
                }
            }
        }
        assert!(fitted > 50, "most cases fit: {fitted}");
    }
}
