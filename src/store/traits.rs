//! What the rest of the program may ask of a store, one trait per aggregate: keys (with the
//! audit rows their edits write), the ledger's reads and its writer, the request log, alerts,
//! and upkeep. `Store` is all of them; both backends implement them once, in `store/sql/`.

use async_trait::async_trait;

use super::error::StoreResult;
use super::ops::BatchOutcome;
use super::ops::ConsumeOp;
use super::types::QuotaRequestRecord;
use super::types::{
    AccountWrite, AccountWritten, AlertFilter, AlertRow, AuditEntry, AuditFilter, AuditRecord,
    DeliveryRecord, HistoryEntry, IdempotentResult, InviteClaim, InviteRecord, KeyEvent, KeyPatch,
    NewAlert, NewKey, PurgeCutoffs, RequestLogFilter, RequestLogRow, UpstreamRecord, UpstreamStats,
    UpstreamWrite, UpstreamWritten,
};
use crate::accounts::Account;
use crate::keys::refill::PeriodStarts;
use crate::keys::{KeyHash, KeyRecord};

/// Commits groups of consumes. Used by the ledger's single writer only, on its own thread.
#[async_trait(?Send)]
pub trait ConsumeWriter {
    /// Commits `ops` in one transaction. Each is applied only if the key exists, is
    /// enabled, unexpired and can afford it (after any due refill); the others are refused.
    async fn commit(
        &mut self,
        ops: &[ConsumeOp],
        now_ms: i64,
        periods: PeriodStarts,
    ) -> StoreResult<BatchOutcome>;

    /// Whether request-log rows may ride in this writer's transactions
    /// ([`Self::commit_with_logs`]): a call's log row then costs no transaction (and no
    /// fsync, no second writer waiting for the write lock) of its own.
    fn carries_request_logs(&self) -> bool {
        false
    }

    /// [`Self::commit`], with `logs` inserted in the same transaction. Only a writer that
    /// [carries request logs](Self::carries_request_logs) is given rows.
    async fn commit_with_logs(
        &mut self,
        ops: &[ConsumeOp],
        logs: &[RequestLogRow],
        now_ms: i64,
        periods: PeriodStarts,
    ) -> StoreResult<BatchOutcome> {
        if logs.is_empty() {
            self.commit(ops, now_ms, periods).await
        } else {
            Err(super::error::StoreError::Other(
                "this store writes its request log itself".into(),
            ))
        }
    }

    /// Writes one small row in its own transaction: whether the database takes writes.
    async fn probe(&mut self, now_ms: i64) -> StoreResult<()>;

    async fn close(self: Box<Self>);
}

/// Keys, and the audit rows that every key edit writes in the same transaction.
#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn load_keys(&self) -> StoreResult<Vec<KeyRecord>>;
    async fn key_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyRecord>>;
    async fn key_by_id(&self, id: i64) -> StoreResult<Option<KeyRecord>>;

    /// Inserts all keys and one audit row per key, in one transaction.
    async fn insert_keys(
        &self,
        keys: &[NewKey],
        audit: &AuditRecord,
    ) -> StoreResult<Vec<KeyRecord>>;
    /// Applies the patch and the audit row in one transaction; `None` when no such key.
    async fn update_key(
        &self,
        id: i64,
        patch: &KeyPatch,
        audit: &AuditRecord,
    ) -> StoreResult<Option<KeyRecord>>;
    async fn delete_key(&self, id: i64, audit: &AuditRecord) -> StoreResult<bool>;
}

/// The audit log on its own (admin actions that touch no key, and the change feed).
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn insert_audit(&self, audit: &AuditRecord) -> StoreResult<()>;
    /// Newest first, narrowed by `filter`.
    async fn audit(
        &self,
        filter: &AuditFilter,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<AuditEntry>, i64)>;
    /// Audit rows after `after_id` that touched a key: `(audit id, key id)`, ascending.
    async fn key_changes_since(&self, after_id: i64) -> StoreResult<Vec<(i64, i64)>>;
    async fn last_audit_id(&self) -> StoreResult<i64>;
}

/// What the ledger reads, and its writer.
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// The ledger writer's own committer (one per writer; it may hold a connection).
    async fn consume_writer(&self) -> StoreResult<Box<dyn ConsumeWriter>>;

    async fn idempotent_result(
        &self,
        key_id: i64,
        idem_key: &str,
    ) -> StoreResult<Option<IdempotentResult>>;

    /// Newest first.
    async fn history(
        &self,
        key_id: i64,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<HistoryEntry>, i64)>;
    /// Sum of consumed amounts per key with `from_ms <= ts < to_ms`.
    async fn period_used(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<(i64, i64)>>;

    /// Marks server `instance` alive at `wall_ms` (wall-clock time, whatever the ledger's
    /// clock says: other servers compare it with theirs).
    async fn heartbeat(&self, instance: i64, wall_ms: i64) -> StoreResult<()>;
    /// Charges, at their held amount, the holds of every server other than `instance` not
    /// seen since `alive_after_ms` (a server that died with calls in flight), each exactly
    /// once: its history row written, its record deleted. Returns how many.
    async fn recover_holds(
        &self,
        instance: i64,
        alive_after_ms: i64,
        now_ms: i64,
    ) -> StoreResult<u64>;
    /// Forgets a server that stopped cleanly (its holds are all settled).
    async fn retire(&self, instance: i64) -> StoreResult<()>;
}

/// One row per gateway call (and per upstream attempt).
#[async_trait]
pub trait RequestLogStore: Send + Sync {
    async fn insert_request_logs(&self, rows: &[RequestLogRow]) -> StoreResult<()>;
    /// Newest first, narrowed by `filter`.
    async fn request_logs(
        &self,
        filter: &RequestLogFilter,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<RequestLogRow>, i64)>;
    /// Calls per upstream in `[from_ms, to_ms)` (rows that reached an upstream).
    async fn upstream_stats(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<UpstreamStats>>;
    /// Gateway calls per key since `since_ms` (to restore daily counters after a restart).
    async fn request_counts_since(&self, since_ms: i64) -> StoreResult<Vec<(i64, i64)>>;
}

/// Alerts, their deliveries and cooldowns.
#[async_trait]
pub trait AlertStore: Send + Sync {
    async fn insert_alert(&self, a: &NewAlert) -> StoreResult<i64>;
    async fn set_alert_status(&self, id: i64, status: &str) -> StoreResult<()>;
    async fn insert_delivery(&self, d: &DeliveryRecord) -> StoreResult<()>;
    /// Newest first.
    async fn alerts(
        &self,
        filter: &AlertFilter,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<AlertRow>, i64)>;
    async fn deliveries(&self, alert_ids: &[i64]) -> StoreResult<Vec<DeliveryRecord>>;
    /// Starts the cooldown (until `until_ms`) of each subject of `rule` that is not cooling
    /// at `now_ms`, and returns those: the subjects this caller may announce. Atomic, so of
    /// several instances evaluating the same problem at once exactly one announces it.
    async fn claim_cooldowns(
        &self,
        rule: &str,
        subjects: &[String],
        now_ms: i64,
        until_ms: i64,
    ) -> StoreResult<Vec<String>>;
}

/// Channels added from the admin API, and the counter every instance follows them by.
#[async_trait]
pub trait UpstreamStore: Send + Sync {
    async fn upstreams(&self) -> StoreResult<Vec<UpstreamRecord>>;
    /// Bumped by every committed change of the channels.
    async fn upstream_generation(&self) -> StoreResult<i64>;
    async fn insert_upstream(
        &self,
        u: &UpstreamWrite,
        audit: &AuditRecord,
    ) -> StoreResult<UpstreamWritten>;
    /// Replaces channel `id` whole (the caller merged its patch into what it read).
    async fn update_upstream(
        &self,
        id: i64,
        u: &UpstreamWrite,
        audit: &AuditRecord,
    ) -> StoreResult<UpstreamWritten>;
    async fn delete_upstream(&self, id: i64, audit: &AuditRecord) -> StoreResult<bool>;
    /// Writes the per-key states of channel `id` if its secrets are still `secrets` (a key
    /// turned off by the gateway never lands on keys an operator has just replaced).
    async fn set_upstream_key_state(
        &self,
        id: i64,
        secrets: &str,
        key_state: &str,
        now_ms: i64,
    ) -> StoreResult<bool>;
}

/// Invite codes.
#[async_trait]
pub trait InviteStore: Send + Sync {
    async fn insert_invite(&self, i: &InviteRecord, audit: &AuditRecord) -> StoreResult<i64>;
    async fn invites(&self) -> StoreResult<Vec<InviteRecord>>;
    async fn invite(&self, id: i64) -> StoreResult<Option<InviteRecord>>;
    async fn invite_by_hash(&self, hash: &[u8]) -> StoreResult<Option<InviteRecord>>;
    async fn delete_invite(&self, id: i64, audit: &AuditRecord) -> StoreResult<bool>;
    /// Takes one use of the code with this hash, if it has one left and is still valid at
    /// `now_ms` (one conditional update: concurrent redemptions never exceed `uses`).
    async fn claim_invite(&self, hash: &[u8], now_ms: i64) -> StoreResult<InviteClaim>;
    /// Gives a use back (the key it was for could not be made).
    async fn unclaim_invite(&self, id: i64) -> StoreResult<()>;
}

/// Users and teams (one table): their records and budgets. The ledger writer changes
/// `used`; these change everything else.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Every user and team.
    async fn accounts(&self) -> StoreResult<Vec<Account>>;
    async fn account(&self, id: i64) -> StoreResult<Option<Account>>;
    /// Bumped by every committed change of a user or team.
    async fn account_generation(&self) -> StoreResult<i64>;
    /// Inserts `w.account` (with its id when it is positive: an owner id kept).
    async fn insert_account(
        &self,
        w: &AccountWrite,
        audit: &AuditRecord,
    ) -> StoreResult<AccountWritten>;
    /// Writes everything but the counters (see [`AccountWrite`]); a user's new name is
    /// copied onto its keys.
    async fn update_account(
        &self,
        w: &AccountWrite,
        audit: &AuditRecord,
    ) -> StoreResult<AccountWritten>;
    /// Refused (`InUse`) while a user has keys or a team has users.
    async fn delete_account(&self, id: i64, audit: &AuditRecord) -> StoreResult<AccountWritten>;
    /// The keys of user `id`.
    async fn keys_of_user(&self, id: i64) -> StoreResult<Vec<KeyRecord>>;
    /// What the keys of a user (or of a team's users) consumed per UTC day since
    /// `since_ms`: `(day start ms, amount)`, oldest first.
    async fn account_daily_usage(
        &self,
        scope: crate::accounts::Scope,
        id: i64,
        since_ms: i64,
    ) -> StoreResult<Vec<(i64, i64)>>;
}

/// Key holders' requests for more quota and their decisions.
#[async_trait]
pub trait QuotaRequestStore: Send + Sync {
    /// Files a request; `None` when the key already has one pending.
    async fn insert_quota_request(
        &self,
        r: &QuotaRequestRecord,
        audit: &AuditRecord,
    ) -> StoreResult<Option<i64>>;
    /// Newest first; `status` and `key_id` narrow it.
    async fn quota_requests(
        &self,
        status: Option<&str>,
        key_id: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<QuotaRequestRecord>>;
    async fn quota_request(&self, id: i64) -> StoreResult<Option<QuotaRequestRecord>>;
    /// Moves a pending request to `to.status` (one conditional update: two operators never
    /// both decide it); false when it was not pending. `to` carries the decision's fields.
    async fn decide_quota_request(
        &self,
        to: &QuotaRequestRecord,
        audit: Option<&AuditRecord>,
    ) -> StoreResult<bool>;
    /// Back to pending (the approval's grant could not be applied).
    async fn reopen_quota_request(&self, id: i64) -> StoreResult<()>;
}

/// The database as a whole: liveness, sharing, change announcements, retention.
#[async_trait]
pub trait Upkeep: Send + Sync {
    /// Whether other instances may write the same database. Then memory is never trusted
    /// on its own: gateway holds are committed too, and request counters are shared.
    fn shared(&self) -> bool;

    /// Key changes as they commit, when the store can announce them (otherwise the audit
    /// log is polled).
    fn key_events(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<KeyEvent>>;

    async fn ping(&self) -> StoreResult<()>;

    /// Drops the rows older than their table's cutoff, in small batches; returns the rows
    /// removed.
    async fn purge(&self, cutoffs: &PurgeCutoffs) -> StoreResult<u64>;
}

/// Every aggregate: what the application holds as `Arc<dyn Store>`.
pub trait Store:
    KeyStore
    + AuditStore
    + LedgerStore
    + RequestLogStore
    + AlertStore
    + UpstreamStore
    + InviteStore
    + AccountStore
    + QuotaRequestStore
    + Upkeep
    + 'static
{
}

impl<T> Store for T where
    T: KeyStore
        + AuditStore
        + LedgerStore
        + RequestLogStore
        + AlertStore
        + UpstreamStore
        + InviteStore
        + AccountStore
        + QuotaRequestStore
        + Upkeep
        + 'static
{
}
