//! The monitor's `/api/*` handlers: who may read, the 60 s cache, JSON and CSV answers.

use std::collections::HashMap;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

use crate::auth::Authenticator;
use crate::error::MonitorRefusals;
use crate::error::refusals::*;
use crate::extract::{HasAuth, Operator, QueryMap};
use crate::monitor::answer::{Endpoint, compute};
use crate::monitor::params::MonitorQuery;
use crate::monitor::rows::{
    AnomaliesAnswer, HeatmapAnswer, MonitorHealth, SeriesAnswer, SubjectAnswer, SummaryAnswer,
    TopAnswer,
};
use crate::monitor::{Monitor, MonitorError, csv_export};

/// What the monitor routes need: the monitor and who may read it.
#[derive(Clone)]
pub struct MonitorState {
    pub monitor: Arc<Monitor>,
    pub auth: Arc<Authenticator>,
}

pub fn json_response(bytes: Bytes, cache: &'static str, engine: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::HeaderName::from_static("x-cache"), cache),
            (header::HeaderName::from_static("x-monitor-engine"), engine),
        ],
        bytes,
    )
        .into_response()
}

pub fn router() -> OpenApiRouter<MonitorState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(series))
        .routes(routes!(top))
        .routes(routes!(anomalies_h))
        .routes(routes!(heatmap))
        .routes(routes!(summary))
        .routes(routes!(subject_h))
        .routes(routes!(export_csv))
}

impl HasAuth for MonitorState {
    fn authenticator(&self) -> &Authenticator {
        &self.auth
    }
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
    uri: &Uri,
    q: &HashMap<String, String>,
    ep: Endpoint,
) -> Response {
    let parsed = match MonitorQuery::parse(q) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let key = cache_key(uri.path(), q);
    if !parsed.nocache()
        && let Some((hit, engine)) = st.monitor.cached(&key).await
    {
        return json_response(hit, "HIT", engine);
    }
    match compute(&st.monitor, ep, &parsed).await {
        Ok((v, engine)) => {
            let bytes = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
            st.monitor.remember(key, (bytes.clone(), engine)).await;
            json_response(bytes, "MISS", engine)
        }
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(get, path = "/api/stats/series", tag = "monitor",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(MonitorQuery),
    responses((status = 200, description = "Buckets over [start, end), zero-filled, ascending", body = SeriesAnswer, headers(("X-Cache" = String, description = "HIT or MISS"), ("X-Monitor-Engine" = String, description = "rollup or sql"))),
        MonitorRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn series(
    State(st): State<MonitorState>,
    _op: Operator,
    uri: Uri,
    QueryMap(q): QueryMap,
) -> Response {
    answer(&st, &uri, &q, Endpoint::Series).await
}

#[utoipa::path(get, path = "/api/stats/top", tag = "monitor",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(MonitorQuery),
    responses((status = 200, description = "Ranking, by metric descending", body = TopAnswer, headers(("X-Cache" = String, description = "HIT or MISS"), ("X-Monitor-Engine" = String, description = "rollup or sql"))), MonitorRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn top(
    State(st): State<MonitorState>,
    _op: Operator,
    uri: Uri,
    QueryMap(q): QueryMap,
) -> Response {
    answer(&st, &uri, &q, Endpoint::Top).await
}

#[utoipa::path(get, path = "/api/stats/anomalies", tag = "monitor",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(MonitorQuery),
    responses((status = 200, description = "Flagged subjects of one rule", body = AnomaliesAnswer, headers(("X-Cache" = String, description = "HIT or MISS"), ("X-Monitor-Engine" = String, description = "rollup or sql"))), MonitorRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn anomalies_h(
    State(st): State<MonitorState>,
    _op: Operator,
    uri: Uri,
    QueryMap(q): QueryMap,
) -> Response {
    answer(&st, &uri, &q, Endpoint::Anomalies).await
}

#[utoipa::path(get, path = "/api/stats/heatmap", tag = "monitor",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(MonitorQuery),
    responses((status = 200, description = "7 × 24 cells summed across weeks", body = HeatmapAnswer, headers(("X-Cache" = String, description = "HIT or MISS"), ("X-Monitor-Engine" = String, description = "rollup or sql"))), MonitorRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn heatmap(
    State(st): State<MonitorState>,
    _op: Operator,
    uri: Uri,
    QueryMap(q): QueryMap,
) -> Response {
    answer(&st, &uri, &q, Endpoint::Heatmap).await
}

#[utoipa::path(get, path = "/api/stats/summary", tag = "monitor",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(MonitorQuery),
    responses((status = 200, description = "KPIs of the range", body = SummaryAnswer, headers(("X-Cache" = String, description = "HIT or MISS"), ("X-Monitor-Engine" = String, description = "rollup or sql"))), MonitorRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn summary(
    State(st): State<MonitorState>,
    _op: Operator,
    uri: Uri,
    QueryMap(q): QueryMap,
) -> Response {
    answer(&st, &uri, &q, Endpoint::Summary).await
}

#[utoipa::path(get, path = "/api/stats/subject", tag = "monitor",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(MonitorQuery),
    responses((status = 200, description = "One key, user or IP: its series and latest requests", body = SubjectAnswer, headers(("X-Cache" = String, description = "HIT or MISS"), ("X-Monitor-Engine" = String, description = "rollup or sql"))), MonitorRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn subject_h(
    State(st): State<MonitorState>,
    _op: Operator,
    uri: Uri,
    QueryMap(q): QueryMap,
) -> Response {
    answer(&st, &uri, &q, Endpoint::Subject).await
}

/// Open: 200 `{ok:true,…}` when the source answers, 503 `{ok:false,…}` when it does not.
#[utoipa::path(get, path = "/api/health", tag = "monitor",
    responses((status = 200, body = MonitorHealth), (status = 503, body = MonitorHealth)))]
pub async fn health(State(st): State<MonitorState>) -> Response {
    let ok = st.monitor.source.ping().await.is_ok();
    let body = MonitorHealth {
        ok,
        version: env!("CARGO_PKG_VERSION"),
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        source: st.monitor.source.kind.as_str(),
        rollup: st.monitor.rollup.as_ref().map(|r| r.status()),
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

#[utoipa::path(get, path = "/api/export/csv", tag = "monitor",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(MonitorQuery),
    responses((status = 200, description = "The query's rows as CSV (UTF-8 with BOM, header = JSON field names)", content_type = "text/csv", body = String), MonitorRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn export_csv(
    State(st): State<MonitorState>,
    _op: Operator,
    QueryMap(q): QueryMap,
) -> Response {
    let parsed = match MonitorQuery::parse(&q) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let query_type = parsed.query_type.clone();
    let ep = match query_type.as_deref() {
        Some("series") => Endpoint::Series,
        Some("top") => Endpoint::Top,
        Some("anomalies") => Endpoint::Anomalies,
        _ => return MonitorError::invalid("query_type").into_response(),
    };
    match compute(&st.monitor, ep, &parsed).await {
        Ok((v, _)) => {
            let rows: Vec<Value> = v
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let name = query_type.unwrap_or_else(|| "export".to_owned());
            csv_export::response(&name, rows)
        }
        Err(e) => e.into_response(),
    }
}
