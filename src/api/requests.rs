//! The gateway's request log: `GET /admin/requests` (a page, newest first) and
//! `GET /admin/requests/export.csv` (the whole filtered set, streamed), narrowed by the same
//! filters: time range, key (full key, id, hint or name), user, model, upstream, endpoint,
//! status class or code, request id.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::amount::{unit, with_unit};
use super::extract::{Operator, QueryMap};
use super::input::{self, MAX_MS, Params};
use super::shapes::{PageQuery, RequestView, RequestsPage, RequestsQuery};
use crate::error::QuotaRefusals;
use crate::error::refusals::*;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::{RequestLogFilter, StatusFilter};

/// Rows read from the store at a time while exporting.
const EXPORT_PAGE: i64 = 2_000;

/// An export in progress: what is left to read.
struct Export {
    store: std::sync::Arc<dyn crate::store::Store>,
    filter: RequestLogFilter,
    /// A page already read (the first one, read before the answer starts).
    page: Option<Vec<crate::store::RequestLogRow>>,
    header: bool,
    amounts: crate::billing::Currency,
}

/// The filter the query asks for.
async fn filter(st: &AppState, params: &Params) -> ApiResult<RequestLogFilter> {
    let q: RequestsQuery = params.get()?;
    let given = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let mut f = RequestLogFilter::default();
    if let Some(k) = given(q.key) {
        input::max_chars("key", Some(&k), 256)?;
        // A full key or an id names one key; anything else is a name or a hint, as the
        // log rows carry them (no such key: no rows, not an error).
        match st.keys.find(&k).await? {
            Some(rec) => f.key_id = Some(rec.id),
            None => f.key_name = Some(k),
        }
    }
    for (name, v) in [("user", &q.user), ("requestId", &q.request_id)] {
        input::max_chars(name, v.as_deref(), 256)?;
    }
    if let Some(u) = given(q.user) {
        match u.parse::<i64>() {
            Ok(id) => f.user_id = Some(id),
            Err(_) => f.username = Some(u),
        }
    }
    f.model = given(q.model);
    f.upstream = given(q.upstream);
    f.endpoint = given(q.endpoint);
    if let Some(e) = &f.endpoint
        && ![
            "chat.completions",
            "completions",
            "embeddings",
            "messages",
            "responses",
        ]
        .contains(&e.as_str())
    {
        return Err(ApiError::invalid(
            "endpoint",
            "必须是 chat.completions、completions、embeddings、messages 或 responses",
        ));
    }
    f.status = given(q.status).map(|s| status(&s)).transpose()?;
    f.request_id = given(q.request_id);
    f.from_ms = input::in_range("start_ms", q.start_ms, 0, MAX_MS)?;
    f.to_ms = input::in_range("end_ms", q.end_ms, 0, MAX_MS)?;
    Ok(f)
}

fn status(s: &str) -> ApiResult<StatusFilter> {
    let b = s.as_bytes();
    let digit = |c: u8| c.is_ascii_digit();
    match s {
        "ok" => Ok(StatusFilter::Ok),
        "error" => Ok(StatusFilter::Error),
        _ if b.len() == 3 && (b'1'..=b'5').contains(&b[0]) && &b[1..] == b"xx" => {
            Ok(StatusFilter::Class(i64::from(b[0] - b'0')))
        }
        _ if b.len() == 3 && (b'1'..=b'5').contains(&b[0]) && b.iter().all(|&c| digit(c)) => {
            Ok(StatusFilter::Exact(s.parse().unwrap_or(0)))
        }
        _ => Err(ApiError::invalid(
            "status",
            "必须是 2xx、4xx、5xx、ok、error 或 HTTP 状态码",
        )),
    }
}

/// Gateway request log, newest first, narrowed by the filters.
#[utoipa::path(get, path = "/admin/requests", tag = "admin",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(RequestsQuery, PageQuery),
    responses((status = 200, body = RequestsPage), QuotaRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn requests(
    State(st): State<AppState>,
    _op: Operator,
    QueryMap(q): QueryMap,
) -> ApiResult<Json<RequestsPage>> {
    let params = Params::new(q, None)?;
    let (limit, offset) = params.page(100)?;
    let f = filter(&st, &params).await?;
    let (rows, total) = st.store.request_logs(&f, limit, offset).await?;
    Ok(Json(RequestsPage {
        requests: rows.iter().map(RequestView::from).collect(),
        total,
        limit,
        offset,
    }))
}

/// Every row the filters select, newest first, as CSV (UTF-8, header = the JSON field
/// names of `/admin/requests`), streamed page by page.
#[utoipa::path(get, path = "/admin/requests/export.csv", tag = "admin",
    security(("adminToken" = []), ("viewerToken" = [])),
    params(RequestsQuery),
    responses((status = 200, description = "The filtered request log as CSV", content_type = "text/csv", body = String),
        QuotaRefusals<{ BAD | AUTH | UNAVAILABLE }>))]
pub async fn export_requests_csv(
    State(st): State<AppState>,
    _op: Operator,
    QueryMap(q): QueryMap,
) -> ApiResult<Response> {
    let params = Params::new(q, None)?;
    let f = filter(&st, &params).await?;
    csv_export::<RequestView>(&st, f, "requests.csv").await
}

/// Every row `f` selects, newest first, as CSV of `V` (its field names the header), streamed
/// page by page. The first page is read before answering, so a failing store is a clean 503
/// rather than a cut body.
pub(super) async fn csv_export<V>(
    st: &AppState,
    f: crate::store::RequestLogFilter,
    file_name: &'static str,
) -> ApiResult<Response>
where
    V: serde::Serialize + for<'a> From<&'a crate::store::RequestLogRow>,
{
    let (first, _) = st.store.request_logs(&f, EXPORT_PAGE, 0).await?;
    let state = Export {
        store: st.store.clone(),
        filter: f,
        page: Some(first),
        header: true,
        amounts: unit(),
    };
    let stream = futures_util::stream::unfold(Some(state), |state| async move {
        let mut s = state?;
        let page = match s.page.take() {
            Some(p) => p,
            None => match s.store.request_logs(&s.filter, EXPORT_PAGE, 0).await {
                Ok((p, _)) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "request log export cut short");
                    return Some((Err(std::io::Error::other("store unavailable")), None));
                }
            },
        };
        let header = std::mem::replace(&mut s.header, false);
        let chunk = with_unit(s.amounts, async { to_csv::<V>(&page, header) }).await;
        // Keyset paging: the next page is what is older than this one's last row.
        let next = match page.last() {
            Some(last) if page.len() as i64 >= EXPORT_PAGE => {
                s.filter.before_id = Some(last.id);
                Some(s)
            }
            _ => None,
        };
        Some((Ok::<_, std::io::Error>(chunk), next))
    });
    let disposition = format!("attachment; filename=\"{file_name}\"");
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `rows` as CSV lines (with the header line first when `header`).
fn to_csv<V>(rows: &[crate::store::RequestLogRow], header: bool) -> Vec<u8>
where
    V: serde::Serialize + for<'a> From<&'a crate::store::RequestLogRow>,
{
    let mut w = csv::WriterBuilder::new()
        .has_headers(header)
        .from_writer(Vec::with_capacity(rows.len() * 200));
    for r in rows {
        // The API's own row: flat already, its field names the header, its cost in the
        // deployment's unit.
        if let Err(e) = w.serialize(V::from(r)) {
            tracing::warn!(error = %e, "a request-log row could not be written as CSV");
        }
    }
    w.into_inner().unwrap_or_default()
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(requests))
        .routes(routes!(export_requests_csv))
}
