//! Persistence. Store code knows atomic conditional updates, not business rules: the consume
//! update refuses an overdraft, a disabled or an expired key by itself, so the database stays
//! the authority even when memory is stale (CLI edits, several instances).
//!
//! `types` (records and filters) and `ops` (consumes as committed) are what callers hand in
//! and get back; `traits` is what they may ask, one trait per aggregate; `sql/` answers it
//! once for both backends; `sqlite` and `postgres` are the dialects and how each is opened;
//! the two ledger writers are each backend's own.

pub mod copy;
mod error;
mod ops;
pub mod postgres;
mod postgres_writer;
mod rows;
pub mod sql;
pub mod sqlite;
mod sqlite_raw;
pub mod sqlite_writer;
mod traits;
mod types;

pub use error::{StoreError, StoreResult, is_pg_unavailable, is_storage_fault};
pub use ops::{
    BatchOutcome, Committed, ConsumeOp, ConsumeResult, HistoryRow, HoldTag, KeyCounters, OpKind,
    Refusal, WindowCap, WindowKind, budget_refusal, history_rows, refusal_of,
};
pub use sqlite_raw::{
    ReadOnlyConn, Stmt as RawRow, allocate_with_mimalloc, skip_allocation_statistics,
};
pub use traits::{
    AccountStore, AlertStore, AuditStore, ConsumeWriter, InviteStore, KeyStore, LedgerStore,
    QuotaRequestStore, RequestLogStore, Store, Upkeep, UpstreamStore,
};
pub use types::{
    AccountWrite, AccountWritten, AlertFilter, AlertRow, AuditEntry, AuditFilter, AuditRecord,
    DeliveryRecord, HistoryEntry, IdempotentResult, InviteClaim, InviteRecord, KeyEvent, KeyPatch,
    NewAlert, NewKey, PurgeCutoffs, QuotaRequestRecord, RequestLogFilter, RequestLogRow,
    StatusFilter, UpstreamRecord, UpstreamStats, UpstreamWrite, UpstreamWritten, UsageItem,
};
