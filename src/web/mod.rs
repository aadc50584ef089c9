//! The dashboard: its page and files (`/`, `/assets/*`), sign-in with the admin or viewer
//! token in exchange for an HttpOnly session cookie (`/auth/*`), and the security headers
//! every response carries. The pages themselves call the admin and monitor APIs.

pub mod assets;

use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::auth::{Authenticator, SESSION_COOKIE, cookie, token_hint};
use crate::error::ApiError;
use crate::error::QuotaRefusals;
use crate::error::refusals::*;
use crate::extract::QueryMap;
use assets::Assets;

/// What the page needs to know about the process serving it.
#[derive(Debug, Clone)]
pub struct DashboardInfo {
    /// `serve` (gateway, keys, monitor) or `monitor` (monitor only).
    pub mode: &'static str,
    /// The monitor's source: `native` or `newapi`.
    pub source: &'static str,
    /// The monitor's default time zone (IANA).
    pub tz: String,
    /// What amounts are in: `points`, `CNY` or `USD` (money mode).
    pub currency: &'static str,
}

#[derive(Clone)]
pub struct WebState {
    pub auth: Arc<Authenticator>,
    pub info: Arc<DashboardInfo>,
}

/// The dashboard: its page and files (not API operations, so undocumented) and its sign-in.
pub fn router() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/{name}", get(asset))
        .route("/docs", get(docs))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(session))
}

/// Headers for every response: no framing, no sniffing, no inline or foreign script, no
/// referrer leaving the site (each set only when the answer has none of its own).
pub const SECURE_HEADERS: [(&str, &str); 4] = [
    ("content-security-policy", CSP),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

/// [`SECURE_HEADERS`] as header names and values.
pub fn secure_headers() -> Vec<(HeaderName, HeaderValue)> {
    SECURE_HEADERS
        .iter()
        .map(|&(name, v)| (HeaderName::from_static(name), HeaderValue::from_static(v)))
        .collect()
}

/// Scripts from the origin only; the dashboard page adds the hash of its import map.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

async fn index(headers: HeaderMap) -> Response {
    let assets = Assets::get();
    let mut resp = assets.index(&headers);
    let csp = CSP.replace(
        "script-src 'self';",
        &format!("script-src 'self' {};", assets.import_map_hash()),
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        resp.headers_mut()
            .insert(HeaderName::from_static("content-security-policy"), v);
    }
    resp
}

async fn docs(headers: HeaderMap) -> Response {
    Assets::get().docs(&headers)
}

async fn asset(
    axum::extract::Path(name): axum::extract::Path<String>,
    QueryMap(q): QueryMap,
    headers: HeaderMap,
) -> Response {
    Assets::get()
        .file(&name, q.get("v").map(String::as_str), &headers)
        .unwrap_or_else(|| ApiError::not_found_route().into_response())
}

/// `POST /auth/login`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The admin or viewer token.
    pub token: String,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct LoginAnswer {
    pub ok: bool,
    /// `admin` or `viewer`; absent on logout.
    pub role: Option<&'static str>,
}

/// `GET /auth/session`: who is signed in; the rest only when someone is.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SessionAnswer {
    pub authenticated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// `serve` or `monitor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
    /// `points`, `CNY` or `USD`: what quotas, costs and balances are in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<&'static str>,
}

fn session_cookie(value: &str, max_age: u64, headers: &HeaderMap) -> HeaderValue {
    cookie_header(SESSION_COOKIE, "/", value, max_age, headers)
}

/// A `Set-Cookie` value for a session cookie: HttpOnly, `SameSite=Strict`, and `Secure`
/// behind a TLS-terminating proxy (it must not travel over plain HTTP then).
pub fn cookie_header(
    name: &str,
    path: &str,
    value: &str,
    max_age: u64,
    headers: &HeaderMap,
) -> HeaderValue {
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let c = format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The key holders' page (`/me`), with its import map allowed.
pub fn me_page(headers: &HeaderMap) -> Response {
    let assets = Assets::get();
    let mut resp = assets.me(headers);
    let csp = CSP.replace(
        "script-src 'self';",
        &format!("script-src 'self' {};", assets.import_map_hash()),
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        resp.headers_mut()
            .insert(HeaderName::from_static("content-security-policy"), v);
    }
    resp
}

/// `{token}` → a session cookie and `{role}`; a wrong token → 401.
#[utoipa::path(post, path = "/auth/login", tag = "dashboard",
    request_body(content = Login, content_type = "application/json"),
    responses((status = 200, description = "Signed in; the `qp_session` cookie is set", body = LoginAnswer), QuotaRefusals<{ BAD | AUTH | TOO_LARGE }>))]
pub async fn login(
    State(st): State<WebState>,
    origin: Option<axum::Extension<crate::auth::Origin>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Ok(Login { token }) = serde_json::from_slice::<Login>(&body) else {
        return ApiError::invalid("token", "不能为空").into_response();
    };
    let Some(role) = st.auth.tokens.role_of(token.trim()) else {
        return ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "令牌无效",
        )
        .into_response();
    };
    if let Some(o) = origin {
        o.authenticated();
    }
    let id = match st
        .auth
        .sessions
        .open((role, token_hint(role, token.trim())))
    {
        Ok(id) => id,
        Err(_) => return ApiError::internal().into_response(),
    };
    let max_age = st.auth.sessions.max_age().as_secs();
    (
        [(header::SET_COOKIE, session_cookie(&id, max_age, &headers))],
        Json(LoginAnswer {
            ok: true,
            role: Some(role.as_str()),
        }),
    )
        .into_response()
}

#[utoipa::path(post, path = "/auth/logout", tag = "dashboard",
    responses((status = 200, description = "Signed out; the cookie is cleared", body = LoginAnswer)))]
pub async fn logout(State(st): State<WebState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        st.auth.sessions.close(id);
    }
    (
        [(header::SET_COOKIE, session_cookie("", 0, &headers))],
        Json(LoginAnswer {
            ok: true,
            role: None,
        }),
    )
        .into_response()
}

/// Who is signed in (`authenticated: false` when nobody is: the page asks this before
/// anything else, so the answer is not an error), and what this process serves.
#[utoipa::path(get, path = "/auth/session", tag = "dashboard",
    responses((status = 200, body = SessionAnswer)))]
pub async fn session(State(st): State<WebState>, headers: HeaderMap) -> Response {
    match st.auth.authenticate(&headers, &Method::GET) {
        Ok(p) => Json(SessionAnswer {
            authenticated: true,
            role: Some(p.role.as_str()),
            mode: Some(st.info.mode),
            source: Some(st.info.source),
            tz: Some(st.info.tz.clone()),
            version: Some(env!("CARGO_PKG_VERSION")),
            currency: Some(st.info.currency),
        })
        .into_response(),
        Err(_) => Json(SessionAnswer {
            authenticated: false,
            role: None,
            mode: None,
            source: None,
            tz: None,
            version: None,
            currency: None,
        })
        .into_response(),
    }
}
