//! API keys as a domain: format, hashing, attributes and policy. No HTTP, no SQL.

pub mod format;
pub mod model;
pub mod policy;
pub mod refill;

pub use format::{GeneratedKey, KeyHash, generate_key, hash_key, hint_for, is_valid_prefix};
pub use model::{KeyLimits, KeyRecord, Owner, Refill, RefillInterval};
pub use policy::{Counters, KeyStatus, counters_at, effective_counters, status_of};
