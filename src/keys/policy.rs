//! What a key may do right now: status and the counters after any due refill.

use serde::Serialize;

use super::model::{KeyRecord, Refill};
use super::refill::period_start;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Disabled,
    Expired,
    Exhausted,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Expired => "expired",
            Self::Exhausted => "exhausted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "disabled" => Some(Self::Disabled),
            "expired" => Some(Self::Expired),
            "exhausted" => Some(Self::Exhausted),
            _ => None,
        }
    }
}

/// Quota and usage as they stand at `now_ms`, with a due refill applied (not persisted:
/// the ledger persists it with the next consume).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub quota: Option<i64>,
    pub used: i64,
    /// The refill period this view belongs to, when the key refills.
    pub period: Option<i64>,
    pub reset_due: bool,
}

impl Counters {
    pub fn remaining(&self) -> Option<i64> {
        self.quota.map(|q| q - self.used)
    }

    pub fn can_afford(&self, amount: i64) -> bool {
        match self.quota {
            None => true,
            Some(q) => self.used.saturating_add(amount) <= q,
        }
    }
}

pub fn effective_counters(rec: &KeyRecord, now_ms: i64) -> Counters {
    counters_at(rec.quota, rec.used, rec.refill, rec.refill_period, now_ms)
}

/// The counters of anything with a quota and a refill (a key, a user's or a team's budget)
/// as they stand at `now_ms`.
pub fn counters_at(
    quota: Option<i64>,
    used: i64,
    refill: Option<Refill>,
    refill_period: Option<i64>,
    now_ms: i64,
) -> Counters {
    match refill {
        None => Counters {
            quota,
            used,
            period: None,
            reset_due: false,
        },
        Some(refill) => {
            let p = period_start(refill.interval, now_ms);
            if refill_period.is_none_or(|applied| p > applied) {
                Counters {
                    quota: Some(refill.amount),
                    used: 0,
                    period: Some(p),
                    reset_due: true,
                }
            } else {
                Counters {
                    quota,
                    used,
                    period: Some(p),
                    reset_due: false,
                }
            }
        }
    }
}

pub fn is_expired(rec: &KeyRecord, now_ms: i64) -> bool {
    rec.expires_at.is_some_and(|e| e <= now_ms)
}

pub fn status_of(rec: &KeyRecord, now_ms: i64) -> KeyStatus {
    if !rec.enabled {
        KeyStatus::Disabled
    } else if is_expired(rec, now_ms) {
        KeyStatus::Expired
    } else if effective_counters(rec, now_ms)
        .remaining()
        .is_some_and(|r| r <= 0)
    {
        KeyStatus::Exhausted
    } else {
        KeyStatus::Active
    }
}
