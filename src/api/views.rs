//! JSON shapes of keys and history entries (camelCase, as in the seed guide).

use serde_json::{Value, json};

use crate::keys::{KeyRecord, effective_counters, status_of};
use crate::store::HistoryEntry;
use crate::timefmt::{rfc3339, rfc3339_opt};

/// The admin view of a key: everything but the secret.
pub fn key_json(rec: &KeyRecord, now_ms: i64) -> Value {
    let c = effective_counters(rec, now_ms);
    json!({
        "id": rec.id,
        "key": rec.hint,
        "name": rec.name,
        "prefix": rec.prefix,
        "quota": c.quota,
        "used": c.used,
        "remaining": c.remaining(),
        "expiresAt": rfc3339_opt(rec.expires_at),
        "createdAt": rfc3339(rec.created_at),
        "lastUsed": rfc3339_opt(rec.last_used),
        "enabled": rec.enabled,
        "status": status_of(rec, now_ms).as_str(),
        "metadata": rec.metadata,
        "owner": rec.owner,
        "limits": rec.limits,
        "refill": rec.refill,
    })
}

pub fn history_json(h: &HistoryEntry) -> Value {
    json!({
        "timestamp": rfc3339(h.ts),
        "amount": h.amount,
        "reason": h.reason,
        "remaining": h.remaining,
        "metadata": h.metadata,
    })
}
