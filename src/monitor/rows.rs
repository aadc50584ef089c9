//! The monitor's answers as types: what `/api/stats/*` serve (and the CSV export and the
//! alert rules read), the same whichever engine aggregated them. Field order is the JSON's.

use serde::Serialize;
use utoipa::ToSchema;

use super::rollup::RollupStatus;

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SeriesRow {
    /// Bucket start, ISO 8601 UTC.
    pub bucket: String,
    pub reqs: i64,
    /// Prompt + completion tokens.
    pub tokens: i64,
    /// Distinct users.
    pub users: i64,
    /// Distinct keys.
    pub tokens_cnt: i64,
    pub quota_sum: i64,
    /// The quota in US dollars, when it is dollars (New API; the native log billing in USD).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_usd: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SeriesAnswer {
    pub data: Vec<SeriesRow>,
    pub total_points: usize,
    pub slot_sec: i64,
}

/// Who a ranking row is about: the dimension's own fields.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Ranked {
    User {
        user_id: i64,
        username: String,
    },
    Token {
        token_id: i64,
        token_name: String,
    },
    Model {
        model_name: String,
    },
    Channel {
        channel_id: i64,
        channel_name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TopRow {
    #[serde(flatten)]
    pub who: Ranked,
    pub tokens: i64,
    pub reqs: i64,
    pub quota_sum: i64,
    /// The quota in US dollars, when it is dollars (New API; the native log billing in USD).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_usd: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TopAnswer {
    pub data: Vec<TopRow>,
    pub by: &'static str,
    pub metric: &'static str,
    pub limit: i64,
}

/// `burst`: a key's busiest window.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct BurstRow {
    pub token_id: i64,
    pub token_name: String,
    pub user_id: i64,
    pub username: String,
    /// Requests in the peak window.
    pub request_count: i64,
    pub window_sec: i64,
    pub threshold: i64,
    pub first_request: String,
    pub last_request: String,
}

/// `multi_user_token`: a key shared by many users or addresses.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SharedKeyRow {
    pub token_id: i64,
    pub token_name: String,
    pub user_count: i64,
    pub ip_count: i64,
    pub threshold: i64,
    /// `user_id:username` pairs (or names), comma-separated.
    pub users: String,
    pub total_requests: i64,
}

/// `ip_many_users`: many users behind one address.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CrowdedIpRow {
    pub ip: String,
    pub user_count: i64,
    pub threshold: i64,
    pub users: String,
    pub total_requests: i64,
}

/// `big_request`: one request far above its model's mean.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct BigRequestRow {
    pub token_id: i64,
    pub token_name: String,
    pub user_id: i64,
    pub username: String,
    /// `null` with `scope=global`.
    pub model_name: Option<String>,
    pub token_count: i64,
    pub created_at: String,
    pub mean_tokens: f64,
    pub std_tokens: f64,
    pub threshold: f64,
    pub sigma: f64,
}

/// A flagged subject; its fields depend on the rule.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum AnomalyRow {
    Burst(BurstRow),
    SharedKey(SharedKeyRow),
    CrowdedIp(CrowdedIpRow),
    BigRequest(BigRequestRow),
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AnomaliesAnswer {
    pub data: Vec<AnomalyRow>,
    pub rule: &'static str,
    pub total_count: usize,
}

/// `[hour 0–23, weekday 0 (Monday)–6, value]`.
pub type HeatCell = [i64; 3];

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HeatmapAnswer {
    /// 168 cells `[hour, weekday, value]`, summed across weeks.
    #[schema(value_type = Vec<Vec<i64>>)]
    pub data: Vec<HeatCell>,
    pub metric: String,
    pub tz: String,
}

/// Failed calls and latency, known to the native log only.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct NativeHealth {
    pub error_rate: f64,
    pub latency_p50_ms: Option<i64>,
    pub latency_p95_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SummaryAnswer {
    pub start_ms: i64,
    pub end_ms: i64,
    pub reqs: i64,
    pub tokens: i64,
    pub quota_sum: i64,
    /// The quota in US dollars, when it is dollars (New API; the native log billing in USD).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_usd: Option<f64>,
    pub users: i64,
    pub keys: i64,
    pub models: i64,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub native: Option<NativeHealth>,
}

/// Whose detail: one of the three.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum SubjectRef {
    Token { token_id: i64 },
    User { user_id: i64 },
    Ip { ip: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SubjectSeriesRow {
    pub bucket: String,
    pub reqs: i64,
    pub tokens: i64,
    pub quota_sum: i64,
    /// The quota in US dollars, when it is dollars (New API; the native log billing in USD).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_usd: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SubjectRequest {
    pub id: i64,
    pub created_at: String,
    pub token_id: i64,
    pub token_name: String,
    pub user_id: i64,
    pub username: String,
    pub model_name: String,
    /// `null` on the native log (its rows name their upstream instead).
    pub channel_id: Option<i64>,
    pub tokens: i64,
    pub quota_sum: i64,
    /// The quota in US dollars, when it is dollars (New API; the native log billing in USD).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_usd: Option<f64>,
    pub ip: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SubjectAnswer {
    pub subject: SubjectRef,
    pub series: Vec<SubjectSeriesRow>,
    pub slot_sec: i64,
    pub requests: Vec<SubjectRequest>,
    pub total_count: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MonitorHealth {
    pub ok: bool,
    pub version: &'static str,
    pub timestamp: String,
    /// `native` or `newapi`.
    pub source: &'static str,
    pub rollup: Option<RollupStatus>,
}
