//! `/api/*` handlers: token check, parameter parsing, the 60 s cache, and the answers.

use std::collections::HashMap;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::{Value, json};

use super::params::{Dim, Metric, Q, Rule, slot};
use super::queries::{self, Engine, HeatMetric};
use super::{Monitor, MonitorError, MonitorState, csv_export, json_response};
use super::{anomalies, subject};
use crate::api::extract::QueryMap;

pub fn router<S: Clone + Send + Sync + 'static>(st: MonitorState) -> Router<S> {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/stats/series", get(series))
        .route("/api/stats/top", get(top))
        .route("/api/stats/anomalies", get(anomalies_h))
        .route("/api/stats/heatmap", get(heatmap))
        .route("/api/stats/summary", get(summary))
        .route("/api/stats/subject", get(subject_h))
        .route("/api/export/csv", get(export_csv))
        .with_state(st)
}

fn authorize(st: &MonitorState, headers: &HeaderMap) -> Result<(), MonitorError> {
    // Every monitor route is a GET: no anti-forgery header is needed.
    st.auth
        .authenticate(headers, &Method::GET)
        .map(|_| ())
        .map_err(|_| MonitorError::Unauthorized("未授权：需要管理员或只读令牌".into()))
}

#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Series,
    Top,
    Anomalies,
    Heatmap,
    Summary,
    Subject,
}

/// The answer, and which engine aggregated it.
async fn compute(
    m: &Monitor,
    ep: Endpoint,
    q: &HashMap<String, String>,
) -> Result<(Value, &'static str), MonitorError> {
    let q = Q(q);
    // `engine=sql` bypasses the rollup (to compare the two, or to see rows the rollup does
    // not hold yet).
    let eng = match q.str("engine") {
        None | Some("auto") => Engine::new(m.rollup.clone()),
        Some("sql") => Engine::new(None),
        Some(_) => return Err(MonitorError::invalid("engine")),
    };
    let v = answer_with(m, &eng, ep, &q).await?;
    Ok((v, eng.label()))
}

async fn answer_with(
    m: &Monitor,
    eng: &Engine,
    ep: Endpoint,
    q: &Q<'_>,
) -> Result<Value, MonitorError> {
    let now = chrono::Utc::now().timestamp_millis();
    let src = &m.source;
    match ep {
        Endpoint::Series => {
            let r = q.range(now)?;
            let slot = slot(q, r)?;
            let data = queries::series(src, eng, r, slot).await?;
            Ok(json!({"data": data, "total_points": data.len(), "slot_sec": slot}))
        }
        Endpoint::Top => {
            let by = Dim::parse(q.str("by"))?;
            let metric = Metric::parse(q.str("metric"))?;
            let limit = q.int_in("limit", 1, 1000, 50)?;
            let r = q.range(now)?;
            let data = queries::top(src, eng, r, by, metric, limit as usize).await?;
            Ok(json!({"data": data, "by": by.as_str(), "metric": metric.as_str(), "limit": limit}))
        }
        Endpoint::Anomalies => {
            let rule = Rule::parse(q.str("rule"))?;
            let r = q.range(now)?;
            let limit = q.int_in("limit", 1, 10_000, 100)? as usize;
            let allow = &m.settings.allow;
            let rows = match rule {
                Rule::Burst => {
                    let w = q.int_in("window_sec", 1, 86_400, 60)?;
                    let l = q.int_in("limit_per_token", 1, 1_000_000, 120)?;
                    anomalies::burst(src, eng, r, w, l, allow).await?
                }
                Rule::MultiUserToken => {
                    let u = q.int_in("users_threshold", 1, 1_000_000, 2)?;
                    let i = q.int_in("ips_threshold", 1, 1_000_000, 5)?;
                    anomalies::multi_user_token(src, eng, r, u, i, allow).await?
                }
                Rule::IpManyUsers => {
                    let u = q.int_in("users_threshold", 1, 1_000_000, 5)?;
                    anomalies::ip_many_users(src, eng, r, u, allow).await?
                }
                Rule::BigRequest => {
                    let sigma = q.float_in("sigma", 0.0, 100.0, 3.0)?;
                    let global = match q.str("scope").unwrap_or("model") {
                        "model" => false,
                        "global" => true,
                        _ => return Err(MonitorError::invalid("scope")),
                    };
                    anomalies::big_request(src, eng, r, sigma, global, allow).await?
                }
            };
            let found = anomalies::found(rows, limit);
            Ok(json!({"data": found.rows, "rule": rule.as_str(), "total_count": found.total}))
        }
        Endpoint::Heatmap => {
            let r = q.range(now)?;
            let metric = match q.str("metric").unwrap_or("reqs") {
                "reqs" => HeatMetric::Reqs,
                "tokens" => HeatMetric::Tokens,
                "users" => HeatMetric::Users,
                _ => return Err(MonitorError::bad("不支持的指标")),
            };
            let tz = match q.str("tz") {
                None => m.settings.tz,
                Some(t) => t.parse().map_err(|_| MonitorError::invalid("tz"))?,
            };
            let data = queries::heatmap(src, eng, r, metric, tz).await?;
            Ok(json!({"data": data, "metric": q.str("metric").unwrap_or("reqs"), "tz": tz.name()}))
        }
        Endpoint::Summary => {
            let r = q.range(now)?;
            Ok(Value::Object(queries::summary(src, eng, r).await?))
        }
        Endpoint::Subject => {
            let who = subject::Subject::parse(q)?;
            let r = q.range(now)?;
            let slot = slot(q, r)?;
            let limit = q.int_in("limit", 1, 1000, 50)?;
            subject::detail(src, &who, r, slot, limit).await
        }
    }
}

/// `/api/stats/anomalies` for `params`, as that endpoint answers it (for the alert rules).
pub async fn anomalies_answer(
    m: &Monitor,
    params: &HashMap<String, String>,
) -> Result<Value, MonitorError> {
    compute(m, Endpoint::Anomalies, params)
        .await
        .map(|(v, _)| v)
}

/// The cache key: path and parameters in a fixed order, `nocache` left out.
fn cache_key(path: &str, q: &HashMap<String, String>) -> String {
    let mut pairs: Vec<(&String, &String)> =
        q.iter().filter(|(k, _)| k.as_str() != "nocache").collect();
    pairs.sort();
    let mut key = path.to_owned();
    for (k, v) in pairs {
        key.push('&');
        key.push_str(k);
        key.push('=');
        key.push_str(v);
    }
    key
}

async fn answer(
    st: &MonitorState,
    headers: &HeaderMap,
    uri: &Uri,
    q: &HashMap<String, String>,
    ep: Endpoint,
) -> Response {
    if let Err(e) = authorize(st, headers) {
        return e.into_response();
    }
    let key = cache_key(uri.path(), q);
    let bypass = Q(q).flag("nocache");
    if !bypass && let Some((hit, engine)) = st.monitor.cache.get(&key).await {
        return json_response(hit, "HIT", engine);
    }
    match compute(&st.monitor, ep, q).await {
        Ok((v, engine)) => {
            let bytes = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
            st.monitor.cache.insert(key, (bytes.clone(), engine)).await;
            json_response(bytes, "MISS", engine)
        }
        Err(e) => e.into_response(),
    }
}

async fn series(
    State(st): State<MonitorState>,
    h: HeaderMap,
    uri: Uri,
    QueryMap(q): QueryMap,
) -> Response {
    answer(&st, &h, &uri, &q, Endpoint::Series).await
}

async fn top(
    State(st): State<MonitorState>,
    h: HeaderMap,
    uri: Uri,
    QueryMap(q): QueryMap,
) -> Response {
    answer(&st, &h, &uri, &q, Endpoint::Top).await
}

async fn anomalies_h(
    State(st): State<MonitorState>,
    h: HeaderMap,
    uri: Uri,
    QueryMap(q): QueryMap,
) -> Response {
    answer(&st, &h, &uri, &q, Endpoint::Anomalies).await
}

async fn heatmap(
    State(st): State<MonitorState>,
    h: HeaderMap,
    uri: Uri,
    QueryMap(q): QueryMap,
) -> Response {
    answer(&st, &h, &uri, &q, Endpoint::Heatmap).await
}

async fn summary(
    State(st): State<MonitorState>,
    h: HeaderMap,
    uri: Uri,
    QueryMap(q): QueryMap,
) -> Response {
    answer(&st, &h, &uri, &q, Endpoint::Summary).await
}

async fn subject_h(
    State(st): State<MonitorState>,
    h: HeaderMap,
    uri: Uri,
    QueryMap(q): QueryMap,
) -> Response {
    answer(&st, &h, &uri, &q, Endpoint::Subject).await
}

/// Open: 200 `{ok:true,…}` when the source answers, 503 `{ok:false,…}` when it does not.
async fn health(State(st): State<MonitorState>) -> Response {
    let ok = st.monitor.source.ping().await.is_ok();
    let body = json!({
        "ok": ok,
        "version": env!("CARGO_PKG_VERSION"),
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "source": st.monitor.source.kind.as_str(),
        "rollup": st.monitor.rollup.as_ref().map(|r| r.status()),
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn export_csv(
    State(st): State<MonitorState>,
    h: HeaderMap,
    QueryMap(q): QueryMap,
) -> Response {
    if let Err(e) = authorize(&st, &h) {
        return e.into_response();
    }
    let ep = match Q(&q).str("query_type") {
        Some("series") => Endpoint::Series,
        Some("top") => Endpoint::Top,
        Some("anomalies") => Endpoint::Anomalies,
        _ => return MonitorError::invalid("query_type").into_response(),
    };
    match compute(&st.monitor, ep, &q).await {
        Ok((v, _)) => {
            let rows: Vec<Value> = v
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let name = Q(&q).str("query_type").unwrap_or("export").to_owned();
            csv_export::response(&name, rows)
        }
        Err(e) => e.into_response(),
    }
}
