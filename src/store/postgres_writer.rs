//! The ledger's commit path on PostgreSQL: one transaction per batch on the writer's own
//! connection. Several instances commit into the same rows, so every batch first locks its
//! keys in id order (no deadlock between writers), the keys whose whole group fits are
//! charged by one statement, and the rest go one op at a time with the same conditional
//! update as SQLite: the database refuses any overdraft whatever each instance's memory says.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};

use super::{
    BatchOutcome, Committed, ConsumeOp, ConsumeResult, ConsumeWriter, KeyCounters, OpKind, Refusal,
    StoreError, StoreResult, WindowCap, budget_refusal, history_rows, is_pg_unavailable,
    refusal_of,
};
use crate::accounts::{BudgetCounters, BudgetRef};
use crate::keys::RefillInterval;
use crate::keys::refill::PeriodStarts;

// The refill period of the row's own interval ($1-$3: daily, weekly, monthly starts).
const PERIOD: &str = "(CASE refill_interval WHEN 'daily' THEN $1::BIGINT \
     WHEN 'weekly' THEN $2::BIGINT WHEN 'monthly' THEN $3::BIGINT END)";

fn due() -> String {
    format!("({PERIOD} IS NOT NULL AND (refill_period IS NULL OR {PERIOD} > refill_period))")
}

const RETURNING: &str = "used, quota, refill_period, enabled, expires_at, last_used";

/// $1-$3 period starts, $4 now; `amount` and `id` are SQL expressions. Refuses (no row)
/// unless the key can afford the amount after any due refill, and (`strict`) is enabled and
/// unexpired.
fn consume_set(strict: bool, amount: &str, id: &str) -> (String, String) {
    let due = due();
    let used = format!("((CASE WHEN {due} THEN 0 ELSE keys.used END) + {amount})");
    let quota = format!("(CASE WHEN {due} THEN keys.refill_amount ELSE keys.quota END)");
    let usable = if strict {
        " AND keys.enabled AND (keys.expires_at IS NULL OR keys.expires_at > $4)"
    } else {
        ""
    };
    (
        format!(
            "SET used = {used}, quota = {quota}, \
             refill_period = CASE WHEN {due} THEN {PERIOD} ELSE keys.refill_period END, \
             last_used = $4"
        ),
        format!("keys.id = {id}{usable} AND ({quota} IS NULL OR {used} <= {quota})"),
    )
}

fn single_sql(strict: bool) -> String {
    let (set, cond) = consume_set(strict, "$5::BIGINT", "$6");
    format!("UPDATE keys {set} WHERE {cond} RETURNING {RETURNING}")
}

/// Every key of the fast path at once: `$5` ids, `$6` totals.
fn group_sql() -> String {
    let (set, cond) = consume_set(true, "b.amt", "b.id");
    format!(
        "UPDATE keys {set} FROM unnest($5::BIGINT[], $6::BIGINT[]) AS b(id, amt) \
         WHERE {cond} RETURNING keys.id, keys.{}",
        RETURNING.replace(", ", ", keys.")
    )
}

/// Gives a hold back ($5) after any due refill, never below zero.
fn credit_sql() -> String {
    let due = due();
    format!(
        "UPDATE keys SET used = GREATEST(0, (CASE WHEN {due} THEN 0 ELSE used END) - $5::BIGINT), \
         quota = (CASE WHEN {due} THEN refill_amount ELSE quota END), \
         refill_period = CASE WHEN {due} THEN {PERIOD} ELSE refill_period END \
         WHERE id = $6"
    )
}

/// The same for a user's or team's budget ($5 amount, $6 account id; `strict`: refused
/// unless enabled and affordable, else only unless affordable).
fn budget_sql(strict: bool) -> String {
    let due = due();
    let used = format!("((CASE WHEN {due} THEN 0 ELSE used END) + $5::BIGINT)");
    let quota = format!("(CASE WHEN {due} THEN refill_amount ELSE quota END)");
    let usable = if strict { " AND enabled" } else { "" };
    format!(
        "UPDATE accounts SET used = {used}, quota = {quota}, \
         refill_period = CASE WHEN {due} THEN {PERIOD} ELSE refill_period END \
         WHERE id = $6{usable} AND ({quota} IS NULL OR {used} <= {quota}) \
         RETURNING used, quota, refill_period, enabled"
    )
}

const SELECT_BUDGET: &str = "SELECT used, quota, refill_period, enabled, refill_interval, \
     refill_amount FROM accounts WHERE id = $1";

const SELECT_KEY: &str = "SELECT used, quota, refill_period, enabled, expires_at, last_used, \
     refill_interval, refill_amount FROM keys WHERE id = $1";

struct Sql {
    group: String,
    consume: String,
    settle: String,
    credit: String,
    budget_take: String,
    budget_charge: String,
    budget_credit: String,
}

pub struct PgConsumeWriter {
    connect: PgConnectOptions,
    conn: Option<PgConnection>,
    sql: Sql,
}

impl PgConsumeWriter {
    pub async fn connect(connect: &PgConnectOptions) -> StoreResult<Self> {
        let mut w = Self {
            connect: connect.clone(),
            conn: None,
            sql: Sql {
                group: group_sql(),
                consume: single_sql(true),
                settle: single_sql(false),
                credit: credit_sql(),
                budget_take: budget_sql(true),
                budget_charge: budget_sql(false),
                budget_credit: credit_sql().replace("UPDATE keys", "UPDATE accounts"),
            },
        };
        w.conn().await?;
        Ok(w)
    }

    async fn conn(&mut self) -> StoreResult<&mut PgConnection> {
        if self.conn.is_none() {
            self.conn = Some(self.connect.connect().await?);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("no connection".into()))
    }
}

fn counters(key_id: i64, r: &PgRow, at: usize) -> Result<KeyCounters, sqlx::Error> {
    Ok(KeyCounters {
        key_id,
        used: r.try_get(at)?,
        quota: r.try_get(at + 1)?,
        refill_period: r.try_get(at + 2)?,
        enabled: r.try_get(at + 3)?,
        expires_at: r.try_get(at + 4)?,
        last_used: r.try_get(at + 5)?,
    })
}

async fn run_single(
    conn: &mut PgConnection,
    sql: &str,
    key_id: i64,
    amount: i64,
    now: i64,
    p: PeriodStarts,
) -> Result<Option<KeyCounters>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(p.daily)
        .bind(p.weekly)
        .bind(p.monthly)
        .bind(now)
        .bind(amount)
        .bind(key_id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| counters(key_id, &r, 0)).transpose()
}

/// Why the conditional update refused, and what the key has left after any due refill.
async fn classify(
    conn: &mut PgConnection,
    key_id: i64,
    now: i64,
    p: PeriodStarts,
) -> Result<(Refusal, Option<i64>, Option<KeyCounters>), sqlx::Error> {
    let Some(r) = sqlx::query(SELECT_KEY)
        .bind(key_id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok((Refusal::NotFound, None, None));
    };
    let c = counters(key_id, &r, 0)?;
    let interval: Option<String> = r.try_get(6)?;
    let amount: Option<i64> = r.try_get(7)?;
    let refill = interval
        .as_deref()
        .and_then(RefillInterval::parse)
        .zip(amount);
    let (refusal, remaining) = refusal_of(&c, refill, now, p);
    Ok((refusal, remaining, Some(c)))
}

/// Claims an idempotency key for this op inside the batch's transaction. `Some` is the
/// result another instance already committed under it: the op is answered with that and
/// applies nothing. (A claim still uncommitted elsewhere makes this wait for its outcome.)
async fn claim_idempotency(
    conn: &mut PgConnection,
    op: &ConsumeOp,
    idem: &str,
    now: i64,
) -> Result<Option<Committed>, sqlx::Error> {
    let claimed = sqlx::query(
        "INSERT INTO idempotency (key_id, idem_key, created_at, amount_used, item_count) \
         VALUES ($1, $2, $3, 0, $4) ON CONFLICT DO NOTHING RETURNING 1",
    )
    .bind(op.key_id)
    .bind(idem)
    .bind(now)
    .bind(op.items.len() as i64)
    .fetch_optional(&mut *conn)
    .await?;
    if claimed.is_some() {
        return Ok(None);
    }
    let r = sqlx::query(
        "SELECT amount_used, remaining, total_quota FROM idempotency \
         WHERE key_id = $1 AND idem_key = $2",
    )
    .bind(op.key_id)
    .bind(idem)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some(Committed {
        charged: r.try_get(0)?,
        remaining: r.try_get(1)?,
        quota: r.try_get(2)?,
    }))
}

async fn finish_idempotency(
    conn: &mut PgConnection,
    op: &ConsumeOp,
    idem: &str,
    result: &ConsumeResult,
) -> Result<(), sqlx::Error> {
    match result {
        Ok(c) => {
            sqlx::query(
                "UPDATE idempotency SET amount_used = $3, remaining = $4, total_quota = $5 \
                 WHERE key_id = $1 AND idem_key = $2",
            )
            .bind(op.key_id)
            .bind(idem)
            .bind(op.total())
            .bind(c.remaining)
            .bind(c.quota)
            .execute(&mut *conn)
            .await?;
        }
        // A refused consume leaves no record: a retry may succeed later.
        Err(_) => {
            sqlx::query("DELETE FROM idempotency WHERE key_id = $1 AND idem_key = $2")
                .bind(op.key_id)
                .bind(idem)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// Counts the call in each of its shared windows; refuses (and counts nothing) when one is
/// full. A window whose start is newer than the stored one begins a new count.
async fn take_windows(
    conn: &mut PgConnection,
    op: &ConsumeOp,
) -> Result<Option<WindowCap>, sqlx::Error> {
    for (i, w) in op.windows.iter().enumerate() {
        let taken = w.cap > 0
            && sqlx::query(
                "INSERT INTO key_windows (key_id, kind, start, n) VALUES ($1, $2, $3, 1) \
                 ON CONFLICT (key_id, kind) DO UPDATE SET \
                 n = CASE WHEN EXCLUDED.start > key_windows.start THEN 1 \
                 ELSE key_windows.n + 1 END, \
                 start = GREATEST(EXCLUDED.start, key_windows.start) \
                 WHERE EXCLUDED.start > key_windows.start OR key_windows.n < $4 RETURNING n",
            )
            .bind(op.key_id)
            .bind(w.kind.as_str())
            .bind(w.start)
            .bind(w.cap)
            .fetch_optional(&mut *conn)
            .await?
            .is_some();
        if !taken {
            give_windows_back(conn, op.key_id, &op.windows[..i]).await?;
            return Ok(Some(*w));
        }
    }
    Ok(None)
}

async fn give_windows_back(
    conn: &mut PgConnection,
    key_id: i64,
    windows: &[WindowCap],
) -> Result<(), sqlx::Error> {
    for w in windows {
        sqlx::query(
            "UPDATE key_windows SET n = n - 1 \
             WHERE key_id = $1 AND kind = $2 AND start = $3 AND n > 0",
        )
        .bind(key_id)
        .bind(w.kind.as_str())
        .bind(w.start)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The user and team budgets of one batch: the statements, and every budget touched so far
/// as it stands now.
struct Budgets<'a> {
    sql: &'a Sql,
    p: PeriodStarts,
    now: i64,
    fresh: HashMap<i64, BudgetCounters>,
}

fn budget_counters(id: i64, r: &PgRow) -> Result<BudgetCounters, sqlx::Error> {
    Ok(BudgetCounters {
        id,
        used: r.try_get(0)?,
        quota: r.try_get(1)?,
        refill_period: r.try_get(2)?,
        enabled: r.try_get(3)?,
    })
}

impl Budgets<'_> {
    /// Runs a budget statement for `amount`; whether the row took it.
    async fn run(
        &mut self,
        conn: &mut PgConnection,
        sql: &str,
        id: i64,
        amount: i64,
    ) -> Result<bool, sqlx::Error> {
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(self.p.daily)
            .bind(self.p.weekly)
            .bind(self.p.monthly)
            .bind(self.now)
            .bind(amount)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        let Some(row) = row else { return Ok(false) };
        let c = budget_counters(id, &row)?;
        // A credit returns no row worth keeping: it is read again at the batch's end.
        if sql != self.sql.budget_credit {
            self.fresh.insert(id, c);
        }
        Ok(true)
    }

    /// A budget's row as it stands: why it refuses and what it has left (`None`: no row).
    async fn read(
        &mut self,
        conn: &mut PgConnection,
        b: BudgetRef,
    ) -> Result<Option<(Refusal, Option<i64>)>, sqlx::Error> {
        let Some(r) = sqlx::query(SELECT_BUDGET)
            .bind(b.id)
            .fetch_optional(&mut *conn)
            .await?
        else {
            return Ok(None);
        };
        let c = budget_counters(b.id, &r)?;
        let interval: Option<String> = r.try_get(4)?;
        let amount: Option<i64> = r.try_get(5)?;
        let refill = interval
            .as_deref()
            .and_then(RefillInterval::parse)
            .zip(amount);
        self.fresh.insert(b.id, c);
        Ok(Some(budget_refusal(b.scope, &c, refill, self.p)))
    }

    async fn credit(
        &mut self,
        conn: &mut PgConnection,
        id: i64,
        credit: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(AssertSqlSafe(self.sql.budget_credit.as_str()))
            .bind(self.p.daily)
            .bind(self.p.weekly)
            .bind(self.p.monthly)
            .bind(self.now)
            .bind(credit)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        // Read again at the batch's end (the credit may have applied a due refill too).
        self.fresh.remove(&id);
        Ok(())
    }

    /// Takes `amount` from every budget (enabled and affordable), or from none: on a
    /// refusal what was taken is given back, and the refusal names the budget.
    async fn take(
        &mut self,
        conn: &mut PgConnection,
        budgets: &[BudgetRef],
        amount: i64,
    ) -> Result<Option<Refusal>, sqlx::Error> {
        let take = self.sql.budget_take.clone();
        for (j, &b) in budgets.iter().enumerate() {
            if self.run(conn, &take, b.id, amount).await? {
                continue;
            }
            // A budget whose row is gone (its user deleted meanwhile) limits nothing.
            let Some((refusal, _)) = self.read(conn, b).await? else {
                continue;
            };
            for prev in &budgets[..j] {
                self.credit(conn, prev.id, amount).await?;
            }
            return Ok(Some(refusal));
        }
        Ok(None)
    }

    /// What the budgets have left together (the least of them; `None`: unlimited).
    async fn left(
        &mut self,
        conn: &mut PgConnection,
        budgets: &[BudgetRef],
    ) -> Result<Option<i64>, sqlx::Error> {
        let mut least: Option<i64> = None;
        for &b in budgets {
            if let Some((_, Some(left))) = self.read(conn, b).await? {
                least = Some(least.map_or(left, |l| l.min(left)));
            }
        }
        Ok(least)
    }

    /// Charges a settled call's cost (already clamped to what every budget has left).
    async fn charge(
        &mut self,
        conn: &mut PgConnection,
        budgets: &[BudgetRef],
        amount: i64,
    ) -> Result<(), sqlx::Error> {
        let charge = self.sql.budget_charge.clone();
        for &b in budgets {
            self.run(conn, &charge, b.id, amount).await?;
        }
        Ok(())
    }
}

/// One op on its own: the conditional update, and on a refusal the reason (a settlement
/// then pays what is left).
async fn apply_one(
    conn: &mut PgConnection,
    sql: &Sql,
    op: &ConsumeOp,
    budgets: &mut Budgets<'_>,
) -> Result<(ConsumeResult, Option<KeyCounters>), sqlx::Error> {
    let (key_id, now, p) = (op.key_id, budgets.now, budgets.p);
    if op.kind == OpKind::Peek {
        let (_, _, c) = classify(conn, key_id, now, p).await?;
        return Ok(match c {
            Some(c) => (ok(&c, 0), Some(c)),
            None => (Err(Refusal::NotFound), None),
        });
    }
    if op.kind == OpKind::Settle
        && let Some(tag) = op.hold
    {
        let gone = sqlx::query("DELETE FROM holds WHERE id = $1")
            .bind(tag.id)
            .execute(&mut *conn)
            .await?;
        if gone.rows_affected() == 0 {
            // Recovered meanwhile (its server looked dead): the recovery charged the hold.
            let (_, _, c) = classify(conn, key_id, now, p).await?;
            return Ok(match c {
                Some(c) => (ok(&c, 0), Some(c)),
                None => (Err(Refusal::NotFound), None),
            });
        }
    }
    if let Some(full) = take_windows(conn, op).await? {
        return Ok((Err(Refusal::Window(full)), None));
    }
    if op.credit > 0 {
        sqlx::query(AssertSqlSafe(sql.credit.as_str()))
            .bind(p.daily)
            .bind(p.weekly)
            .bind(p.monthly)
            .bind(now)
            .bind(op.credit)
            .bind(key_id)
            .execute(&mut *conn)
            .await?;
        for b in &op.budgets {
            budgets.credit(conn, b.id, op.credit).await?;
        }
    }
    let mut charged = op.total();
    if op.kind == OpKind::Settle {
        // A served call pays no more than its user and team have left either.
        charged = charged.min(budgets.left(conn, &op.budgets).await?.unwrap_or(i64::MAX));
    }
    let (result, c) = apply_key(conn, sql, op, charged, now, p).await?;
    let Ok(done) = result else {
        return Ok((result, c));
    };
    if op.kind == OpKind::Settle {
        budgets.charge(conn, &op.budgets, done.charged).await?;
    } else if let Some(r) = budgets.take(conn, &op.budgets, done.charged).await? {
        // The key could, its user or team could not: the key gets it back.
        sqlx::query(AssertSqlSafe(sql.credit.as_str()))
            .bind(p.daily)
            .bind(p.weekly)
            .bind(p.monthly)
            .bind(now)
            .bind(done.charged)
            .bind(key_id)
            .execute(&mut *conn)
            .await?;
        give_windows_back(conn, key_id, &op.windows).await?;
        let (_, _, c) = classify(conn, key_id, now, p).await?;
        return Ok((Err(r), c));
    }
    record_holds(conn, std::slice::from_ref(op), now).await?;
    Ok((result, c))
}

/// The key's own conditional update for `charged`; on a refusal the reason (a settlement
/// then pays what is left).
async fn apply_key(
    conn: &mut PgConnection,
    sql: &Sql,
    op: &ConsumeOp,
    mut charged: i64,
    now: i64,
    p: PeriodStarts,
) -> Result<(ConsumeResult, Option<KeyCounters>), sqlx::Error> {
    let key_id = op.key_id;
    let stmt = match op.kind {
        OpKind::Consume | OpKind::Hold | OpKind::Peek => &sql.consume,
        OpKind::Settle => &sql.settle,
    };
    if let Some(c) = run_single(conn, stmt, key_id, charged, now, p).await? {
        return Ok((ok(&c, charged), Some(c)));
    }
    let (refusal, left, c) = classify(conn, key_id, now, p).await?;
    if op.kind == OpKind::Hold {
        give_windows_back(conn, key_id, &op.windows).await?;
    }
    match (op.kind, left, refusal) {
        (_, _, Refusal::NotFound) | (OpKind::Consume | OpKind::Hold | OpKind::Peek, _, _) => {
            Ok((Err(refusal), c))
        }
        // A served call pays what is left, never more (disabled or not).
        (OpKind::Settle, Some(left), _) if left > 0 => {
            charged = left;
            match run_single(conn, &sql.settle, key_id, charged, now, p).await? {
                Some(c) => Ok((ok(&c, charged), Some(c))),
                None => Ok((Err(Refusal::NotFound), c)),
            }
        }
        (OpKind::Settle, _, _) => match c {
            Some(c) => Ok((ok(&c, 0), Some(c))),
            None => Ok((Err(Refusal::NotFound), None)),
        },
    }
}

fn ok(c: &KeyCounters, charged: i64) -> ConsumeResult {
    Ok(Committed {
        remaining: c.quota.map(|q| q - c.used),
        quota: c.quota,
        charged,
    })
}

/// What a batch decided so far: each op's result, the ops answered from another instance's
/// idempotency record (nothing of theirs is written), each touched key's fresh counters.
struct Decided {
    results: Vec<Option<ConsumeResult>>,
    replayed: Vec<bool>,
    fresh: HashMap<i64, KeyCounters>,
}

async fn commit_batch(
    conn: &mut PgConnection,
    sql: &Sql,
    ops: &[ConsumeOp],
    now: i64,
    p: PeriodStarts,
) -> Result<BatchOutcome, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let mut d = Decided {
        results: vec![None; ops.len()],
        replayed: vec![false; ops.len()],
        fresh: HashMap::new(),
    };
    let mut by_key: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        by_key.entry(op.key_id).or_default().push(i);
    }
    let ids: Vec<i64> = by_key.keys().copied().collect();
    // Locks in id order: two instances' batches never wait on each other in a cycle.
    sqlx::query("SELECT id FROM keys WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    // Then the users' and teams' budgets, in id order too (always after the keys).
    let mut accounts: Vec<i64> = ops
        .iter()
        .flat_map(|op| op.budgets.iter().map(|b| b.id))
        .collect();
    accounts.sort_unstable();
    accounts.dedup();
    if !accounts.is_empty() {
        sqlx::query("SELECT id FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&accounts)
            .execute(&mut *tx)
            .await?;
    }
    plain_groups(&mut tx, sql, ops, &by_key, now, p, &mut d).await?;
    let mut budgets = Budgets {
        sql,
        p,
        now,
        fresh: HashMap::new(),
    };
    // Everything else, one op at a time in each key's arrival order.
    for (&key_id, idxs) in &by_key {
        if d.fresh.contains_key(&key_id) {
            continue;
        }
        for &i in idxs {
            one_op(&mut tx, sql, &ops[i], i, &mut budgets, &mut d).await?;
        }
    }
    insert_history(&mut tx, ops, &d, now).await?;
    // Memory learns every touched budget's counters, the ones last given back included.
    for r in ops.iter().flat_map(|op| &op.budgets) {
        if !budgets.fresh.contains_key(&r.id) {
            budgets.read(&mut tx, *r).await?;
        }
    }
    tx.commit().await?;
    Ok(BatchOutcome {
        results: d
            .results
            .into_iter()
            .map(|r| r.unwrap_or(Err(Refusal::NotFound)))
            .collect(),
        counters: d.fresh.into_values().collect(),
        budgets: budgets.fresh.into_values().collect(),
    })
}

/// Fast path: keys whose ops are all plain consumes or holds, all in one statement.
async fn plain_groups(
    tx: &mut PgConnection,
    sql: &Sql,
    ops: &[ConsumeOp],
    by_key: &BTreeMap<i64, Vec<usize>>,
    now: i64,
    p: PeriodStarts,
    d: &mut Decided,
) -> Result<(), sqlx::Error> {
    let fast: Vec<(i64, i64)> = by_key
        .iter()
        .filter(|(_, idxs)| {
            idxs.iter().all(|&i| {
                let op = &ops[i];
                matches!(op.kind, OpKind::Consume | OpKind::Hold)
                    && op.credit == 0
                    && op.idempotency_key.is_none()
                    && op.windows.is_empty()
                    && op.budgets.is_empty()
            })
        })
        .map(|(&id, idxs)| (id, idxs.iter().map(|&i| ops[i].total()).sum()))
        .collect();
    if fast.is_empty() {
        return Ok(());
    }
    let (fids, amts): (Vec<i64>, Vec<i64>) = fast.into_iter().unzip();
    let rows = sqlx::query(AssertSqlSafe(sql.group.as_str()))
        .bind(p.daily)
        .bind(p.weekly)
        .bind(p.monthly)
        .bind(now)
        .bind(&fids)
        .bind(&amts)
        .fetch_all(&mut *tx)
        .await?;
    for r in rows {
        let key_id: i64 = r.try_get(0)?;
        let c = counters(key_id, &r, 1)?;
        let mut used_after = c.used;
        for &i in by_key[&key_id].iter().rev() {
            d.results[i] = Some(Ok(Committed {
                remaining: c.quota.map(|q| q - used_after),
                quota: c.quota,
                charged: ops[i].total(),
            }));
            used_after -= ops[i].total();
        }
        d.fresh.insert(key_id, c);
    }
    let granted = by_key
        .iter()
        .filter(|(id, _)| d.fresh.contains_key(id))
        .flat_map(|(_, idxs)| idxs.iter().map(|&i| &ops[i]));
    record_holds(tx, granted, now).await
}

/// The durable records of granted holds (ops of other kinds, or without a tag, are
/// skipped), in one statement: a settlement later in the batch must find them.
async fn record_holds<'o>(
    tx: &mut PgConnection,
    ops: impl IntoIterator<Item = &'o ConsumeOp>,
    now: i64,
) -> Result<(), sqlx::Error> {
    let (mut id, mut key, mut amount, mut instance, mut reason, mut meta) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for op in ops {
        let (OpKind::Hold, Some(tag)) = (op.kind, op.hold) else {
            continue;
        };
        let item = op.items.first();
        id.push(tag.id);
        key.push(op.key_id);
        amount.push(op.total());
        instance.push(tag.instance);
        reason.push(item.and_then(|i| i.reason.clone()));
        meta.push(item.and_then(|i| i.metadata.clone()));
    }
    if id.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO holds (id, key_id, amount, instance, created_at, reason, metadata) \
         SELECT i, k, a, n, $5, r, m FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], \
         $4::BIGINT[], $6::TEXT[], $7::TEXT[]) AS u(i, k, a, n, r, m)",
    )
    .bind(&id)
    .bind(&key)
    .bind(&amount)
    .bind(&instance)
    .bind(now)
    .bind(&reason)
    .bind(&meta)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// One op on its own: replayed from its idempotency record, or applied (and recorded).
async fn one_op(
    tx: &mut PgConnection,
    sql: &Sql,
    op: &ConsumeOp,
    i: usize,
    budgets: &mut Budgets<'_>,
    d: &mut Decided,
) -> Result<(), sqlx::Error> {
    if let Some(idem) = &op.idempotency_key
        && let Some(prev) = claim_idempotency(&mut *tx, op, idem, budgets.now).await?
    {
        d.results[i] = Some(Ok(prev));
        d.replayed[i] = true;
        return Ok(());
    }
    let (result, c) = apply_one(&mut *tx, sql, op, budgets).await?;
    if let Some(idem) = &op.idempotency_key {
        finish_idempotency(&mut *tx, op, idem, &result).await?;
    }
    if let Some(c) = c {
        d.fresh.insert(op.key_id, c);
    }
    d.results[i] = Some(result);
    Ok(())
}

/// The usage-history rows of every op this batch committed, in one statement.
async fn insert_history(
    tx: &mut PgConnection,
    ops: &[ConsumeOp],
    d: &Decided,
    now: i64,
) -> Result<(), sqlx::Error> {
    let (mut k, mut amount, mut reason, mut remaining, mut meta) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, (op, r)) in ops.iter().zip(&d.results).enumerate() {
        let Some(Ok(c)) = r else { continue };
        if d.replayed[i] {
            continue;
        }
        for h in history_rows(op, c) {
            k.push(op.key_id);
            amount.push(h.amount);
            reason.push(h.reason.map(str::to_owned));
            remaining.push(h.remaining);
            meta.push(h.metadata.map(str::to_owned));
        }
    }
    if k.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO usage_events (key_id, ts, amount, reason, remaining, metadata) \
         SELECT k, $2, a, r, rem, m FROM unnest($1::BIGINT[], $3::BIGINT[], $4::TEXT[], \
         $5::BIGINT[], $6::TEXT[]) AS u(k, a, r, rem, m)",
    )
    .bind(&k)
    .bind(now)
    .bind(&amount)
    .bind(&reason)
    .bind(&remaining)
    .bind(&meta)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn is_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "40P01")))
}

#[async_trait(?Send)]
impl ConsumeWriter for PgConsumeWriter {
    async fn commit(
        &mut self,
        ops: &[ConsumeOp],
        now_ms: i64,
        periods: PeriodStarts,
    ) -> StoreResult<BatchOutcome> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.conn().await?;
            let Some(conn) = self.conn.as_mut() else {
                return Err(StoreError::Unavailable("no connection".into()));
            };
            match commit_batch(conn, &self.sql, ops, now_ms, periods).await {
                Ok(o) => return Ok(o),
                // Nothing of a failed transaction stays; a conflict is simply tried again.
                Err(e) if is_conflict(&e) && attempt < 3 => continue,
                Err(e) => {
                    let broken = match &e {
                        sqlx::Error::Database(db) => {
                            is_pg_unavailable(db.code().as_deref().unwrap_or(""))
                        }
                        _ => true,
                    };
                    if broken {
                        // A fresh connection next time: this one may be dead or mid-transaction.
                        if let Some(c) = self.conn.take() {
                            let _ = tokio::time::timeout(
                                std::time::Duration::from_millis(200),
                                c.close(),
                            )
                            .await;
                        }
                    }
                    return Err(e.into());
                }
            }
        }
    }

    async fn probe(&mut self, now_ms: i64) -> StoreResult<()> {
        let conn = self.conn().await?;
        let r = sqlx::query(
            "INSERT INTO health_probe (id, ts) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET ts = EXCLUDED.ts",
        )
        .bind(now_ms)
        .execute(&mut *conn)
        .await;
        if r.is_err() {
            self.conn = None;
        }
        r.map(|_| ()).map_err(Into::into)
    }

    async fn close(mut self: Box<Self>) {
        if let Some(c) = self.conn.take() {
            let _ = c.close().await;
        }
    }
}
