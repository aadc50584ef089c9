//! The monitor API's query parameters as the OpenAPI document states them. They are read by
//! `monitor::params` (the seed's messages, `参数无效: <name>`); the answers are the types of
//! `monitor::rows`.

use utoipa::IntoParams;

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
