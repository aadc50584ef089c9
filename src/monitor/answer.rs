//! Every monitor answer as JSON, from the rollup when it covers the range or from SQL:
//! what the `/api/*` handlers serve and what the alert rules read.

use serde::Serialize;
use serde_json::Value;

use super::error::MonitorError;
use super::params::{Dim, Metric, MonitorQuery, Rule, float_in, int_in, slot};
use super::queries::{self, Engine, HeatMetric};
use super::rows::{AnomaliesAnswer, HeatmapAnswer, SeriesAnswer, TopAnswer};
use super::{Monitor, anomalies, subject};

/// The monitor's queries.
#[derive(Debug, Clone, Copy)]
pub enum Endpoint {
    Series,
    Top,
    Anomalies,
    Heatmap,
    Summary,
    Subject,
}

/// The answer, and which engine aggregated it.
pub async fn compute(
    m: &Monitor,
    ep: Endpoint,
    q: &MonitorQuery,
) -> Result<(Value, &'static str), MonitorError> {
    let eng = engine(m, q)?;
    let v = answer_with(m, &eng, ep, q).await?;
    Ok((v, eng.label()))
}

/// The rollup when it covers the range, else SQL; `engine=sql` bypasses the rollup (to
/// compare the two, or to see rows the rollup does not hold yet).
fn engine(m: &Monitor, q: &MonitorQuery) -> Result<Engine, MonitorError> {
    match q.engine.as_deref() {
        None | Some("auto") => Ok(Engine::new(m.rollup.clone())),
        Some("sql") => Ok(Engine::new(None)),
        Some(_) => Err(MonitorError::invalid("engine")),
    }
}

/// The subjects one rule flags over `q`'s range, as `/api/stats/anomalies` answers them:
/// what the alert rules read, typed.
pub async fn anomalies(m: &Monitor, q: &MonitorQuery) -> Result<AnomaliesAnswer, MonitorError> {
    let eng = engine(m, q)?;
    anomalies_with(m, &eng, q, chrono::Utc::now().timestamp_millis()).await
}

async fn anomalies_with(
    m: &Monitor,
    eng: &Engine,
    q: &MonitorQuery,
    now: i64,
) -> Result<AnomaliesAnswer, MonitorError> {
    let src = &m.source;
    let rule = Rule::parse(q.rule.as_deref())?;
    let r = q.range(now)?;
    let limit = int_in("limit", q.limit, 1, 10_000, 100)? as usize;
    let allow = &m.settings.allow;
    let found = match rule {
        Rule::Burst => {
            let w = int_in("window_sec", q.window_sec, 1, 86_400, 60)?;
            let l = int_in("limit_per_token", q.limit_per_token, 1, 1_000_000, 120)?;
            anomalies::burst(src, eng, r, w, l, allow, limit).await?
        }
        Rule::MultiUserToken => {
            let u = int_in("users_threshold", q.users_threshold, 1, 1_000_000, 2)?;
            let i = int_in("ips_threshold", q.ips_threshold, 1, 1_000_000, 5)?;
            anomalies::multi_user_token(src, eng, r, u, i, allow, limit).await?
        }
        Rule::IpManyUsers => {
            let u = int_in("users_threshold", q.users_threshold, 1, 1_000_000, 5)?;
            anomalies::ip_many_users(src, eng, r, u, allow, limit).await?
        }
        Rule::BigRequest => {
            let sigma = float_in("sigma", q.sigma, 0.0, 100.0, 3.0)?;
            let min_tokens = int_in(
                "min_tokens",
                q.min_tokens,
                0,
                1_000_000_000,
                super::params::BIG_REQUEST_MIN_TOKENS,
            )?;
            let global = match q.scope.as_deref().unwrap_or("model") {
                "model" => false,
                "global" => true,
                _ => return Err(MonitorError::invalid("scope")),
            };
            let how = anomalies::BigRequest {
                sigma,
                min_tokens,
                global,
            };
            anomalies::big_request(src, eng, r, how, allow, limit).await?
        }
    };
    Ok(AnomaliesAnswer {
        data: found.rows,
        rule: rule.as_str(),
        total_count: found.total,
    })
}

async fn answer_with(
    m: &Monitor,
    eng: &Engine,
    ep: Endpoint,
    q: &MonitorQuery,
) -> Result<Value, MonitorError> {
    let now = chrono::Utc::now().timestamp_millis();
    let src = &m.source;
    match ep {
        Endpoint::Series => {
            let r = q.range(now)?;
            let slot = slot(q, r)?;
            let data = queries::series(src, eng, r, slot).await?;
            to_value(SeriesAnswer {
                total_points: data.len(),
                data,
                slot_sec: slot,
            })
        }
        Endpoint::Top => {
            let by = Dim::parse(q.by.as_deref())?;
            let metric = Metric::parse(q.metric.as_deref())?;
            let limit = int_in("limit", q.limit, 1, 1000, 50)?;
            let r = q.range(now)?;
            let data = queries::top(src, eng, r, by, metric, limit as usize).await?;
            to_value(TopAnswer {
                data,
                by: by.as_str(),
                metric: metric.as_str(),
                limit,
            })
        }
        Endpoint::Anomalies => to_value(anomalies_with(m, eng, q, now).await?),
        Endpoint::Heatmap => {
            let r = q.range(now)?;
            let metric = match q.metric.as_deref().unwrap_or("reqs") {
                "reqs" => HeatMetric::Reqs,
                "tokens" => HeatMetric::Tokens,
                "users" => HeatMetric::Users,
                _ => return Err(MonitorError::bad("不支持的指标")),
            };
            let tz = match q.tz.as_deref() {
                None => m.settings.tz,
                Some(t) => t.parse().map_err(|_| MonitorError::invalid("tz"))?,
            };
            let data = queries::heatmap(src, eng, r, metric, tz).await?;
            to_value(HeatmapAnswer {
                data,
                metric: q.metric.as_deref().unwrap_or("reqs").to_owned(),
                tz: tz.name().to_owned(),
            })
        }
        Endpoint::Summary => {
            let r = q.range(now)?;
            to_value(queries::summary(src, eng, r).await?)
        }
        Endpoint::Subject => {
            let who = subject::Subject::parse(q)?;
            let r = q.range(now)?;
            let slot = slot(q, r)?;
            let limit = int_in("limit", q.limit, 1, 1000, 50)?;
            to_value(subject::detail(src, &who, r, slot, limit).await?)
        }
    }
}

/// The typed answer as the JSON the cache keeps and the alert rules read. (Plain structs of
/// numbers and strings always serialize; a non-finite float becomes `null`.)
fn to_value(answer: impl Serialize) -> Result<Value, MonitorError> {
    Ok(serde_json::to_value(answer).unwrap_or_default())
}
