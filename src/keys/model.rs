//! The attributes of a key, as the domain sees them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::format::KeyHash;

/// Who a key belongs to; the monitor's "user" dimension.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Owner {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// Per-key limits enforced by the gateway. Absent = no limit (or the global default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ips: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RefillInterval {
    Daily,
    Weekly,
    Monthly,
}

impl RefillInterval {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "daily" => Some(Self::Daily),
            "weekly" => Some(Self::Weekly),
            "monthly" => Some(Self::Monthly),
            _ => None,
        }
    }
}

/// At each UTC period start, `used` returns to 0 and `quota` to `amount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Refill {
    pub interval: RefillInterval,
    #[schema(minimum = 0, maximum = 2000000000000000000_i64)]
    pub amount: i64,
}

/// A key as stored: everything but the secret itself.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: i64,
    pub hash: KeyHash,
    pub hint: String,
    pub name: Option<String>,
    pub prefix: String,
    pub quota: Option<i64>,
    pub used: i64,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub last_used: Option<i64>,
    pub enabled: bool,
    pub metadata: Map<String, Value>,
    pub owner: Option<Owner>,
    pub limits: KeyLimits,
    pub refill: Option<Refill>,
    /// Start (ms) of the refill period whose reset has been applied.
    pub refill_period: Option<i64>,
}
