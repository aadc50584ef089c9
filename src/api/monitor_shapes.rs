//! The monitor API's parameters and answers, for the OpenAPI document. The engines build
//! these answers as JSON rows shared by both of them (`monitor/aggregates.rs`); these types
//! state the shape, and the contract fuzz run (Schemathesis) checks every answer against it.

use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

/// The time range, `[start_ms, end_ms)` in Unix milliseconds (default: the last 24 h).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeParams {
    #[param(minimum = 0)]
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// `1` answers without the 60 s cache.
    pub nocache: Option<String>,
    /// `auto` (default) or `sql` (bypass the in-memory rollup).
    pub engine: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesParams {
    /// 60, 300, 900, 1800, 3600, 14400 or 86400; absent: chosen by the range.
    pub slot_sec: Option<i64>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopParams {
    /// `user`, `token`, `model` or `channel`.
    pub by: Option<String>,
    /// `tokens`, `reqs` or `quota_sum`.
    pub metric: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AnomalyParams {
    /// `burst`, `multi_user_token`, `ip_many_users` or `big_request`.
    pub rule: Option<String>,
    #[param(minimum = 1, maximum = 86400)]
    pub window_sec: Option<i64>,
    #[param(minimum = 1, maximum = 1000000)]
    pub limit_per_token: Option<i64>,
    #[param(minimum = 1, maximum = 1000000)]
    pub users_threshold: Option<i64>,
    #[param(minimum = 1, maximum = 1000000)]
    pub ips_threshold: Option<i64>,
    #[param(minimum = 0, maximum = 100)]
    pub sigma: Option<f64>,
    /// `model` (default) or `global`.
    pub scope: Option<String>,
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<i64>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HeatmapParams {
    /// `reqs`, `tokens` or `users`.
    pub metric: Option<String>,
    /// IANA time zone (default from the config).
    pub tz: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubjectParams {
    /// One of `token_id`, `user_id`, `ip`.
    pub token_id: Option<i64>,
    pub user_id: Option<i64>,
    pub ip: Option<String>,
    pub slot_sec: Option<i64>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CsvParams {
    /// `series`, `top` or `anomalies`, with that query's parameters.
    #[param(required = true)]
    pub query_type: Option<String>,
    /// For `top`: `user`, `token`, `model` or `channel`.
    pub by: Option<String>,
    /// For `top`: `tokens`, `reqs` or `quota_sum`.
    pub metric: Option<String>,
}

#[derive(Serialize, ToSchema)]
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
    pub quota_usd: f64,
}

#[derive(Serialize, ToSchema)]
pub struct SeriesAnswer {
    pub data: Vec<SeriesRow>,
    pub total_points: i64,
    pub slot_sec: i64,
}

/// A ranking row: the dimension's fields, then the three metrics.
#[derive(Serialize, ToSchema)]
pub struct TopRow {
    pub user_id: Option<i64>,
    pub username: Option<String>,
    pub token_id: Option<i64>,
    pub token_name: Option<String>,
    pub model_name: Option<String>,
    pub channel_id: Option<i64>,
    pub channel_name: Option<String>,
    pub tokens: i64,
    pub reqs: i64,
    pub quota_sum: i64,
    pub quota_usd: f64,
}

#[derive(Serialize, ToSchema)]
pub struct TopAnswer {
    pub data: Vec<TopRow>,
    pub by: String,
    pub metric: String,
    pub limit: i64,
}

/// A flagged subject; the fields depend on the rule (see the monitor section of the README).
#[derive(Serialize, ToSchema)]
pub struct AnomalyRow {
    pub token_id: Option<i64>,
    pub token_name: Option<String>,
    pub user_id: Option<i64>,
    pub username: Option<String>,
    pub ip: Option<String>,
    /// `burst`: requests in the peak window.
    pub request_count: Option<i64>,
    pub window_sec: Option<i64>,
    pub first_request: Option<String>,
    pub last_request: Option<String>,
    pub user_count: Option<i64>,
    pub ip_count: Option<i64>,
    /// `user_id:username` pairs, comma-separated.
    pub users: Option<String>,
    pub total_requests: Option<i64>,
    pub model_name: Option<String>,
    pub token_count: Option<i64>,
    pub created_at: Option<String>,
    pub mean_tokens: Option<f64>,
    pub std_tokens: Option<f64>,
    pub sigma: Option<f64>,
    pub threshold: f64,
}

#[derive(Serialize, ToSchema)]
pub struct AnomaliesAnswer {
    pub data: Vec<AnomalyRow>,
    pub rule: String,
    pub total_count: i64,
}

#[derive(Serialize, ToSchema)]
pub struct HeatmapAnswer {
    /// 168 cells `[hour 0–23, weekday 0 (Monday)–6, value]`.
    #[schema(value_type = Vec<Vec<f64>>)]
    pub data: Vec<[i64; 3]>,
    pub metric: String,
    pub tz: String,
}

#[derive(Serialize, ToSchema)]
pub struct SummaryAnswer {
    pub start_ms: i64,
    pub end_ms: i64,
    pub reqs: i64,
    pub tokens: i64,
    pub quota_sum: i64,
    pub quota_usd: f64,
    pub users: i64,
    pub keys: i64,
    pub models: i64,
    /// Native source only.
    pub error_rate: Option<f64>,
    pub latency_p50_ms: Option<i64>,
    pub latency_p95_ms: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct SubjectSeriesRow {
    pub bucket: String,
    pub reqs: i64,
    pub tokens: i64,
    pub quota_sum: i64,
    pub quota_usd: f64,
}

#[derive(Serialize, ToSchema)]
pub struct SubjectRequest {
    pub id: i64,
    pub created_at: String,
    pub token_id: i64,
    pub token_name: String,
    pub user_id: i64,
    pub username: String,
    pub model_name: String,
    pub channel_id: Option<i64>,
    pub tokens: i64,
    pub quota_sum: i64,
    pub quota_usd: f64,
    pub ip: String,
}

#[derive(Serialize, ToSchema)]
pub struct SubjectAnswer {
    /// `{token_id}`, `{user_id}` or `{ip}`.
    #[schema(value_type = Object)]
    pub subject: serde_json::Value,
    pub series: Vec<SubjectSeriesRow>,
    pub slot_sec: i64,
    pub requests: Vec<SubjectRequest>,
    pub total_count: i64,
}

#[derive(Serialize, ToSchema)]
pub struct RollupState {
    /// `loading` or `ready`.
    pub state: String,
    pub rows: i64,
    pub last_id: i64,
    pub covered_from: Option<String>,
    pub polled_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MonitorHealth {
    pub ok: bool,
    pub version: String,
    pub timestamp: String,
    /// `native` or `newapi`.
    pub source: String,
    pub rollup: Option<RollupState>,
}
