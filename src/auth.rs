//! Who an operator is: the admin or viewer token (bearer or `X-Admin-Token`), or a
//! dashboard session cookie issued in exchange for one of them. Free of axum routing: the
//! admin API, the monitor API and the dashboard all ask this one place.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "qp_session";
/// Writes made with a session cookie must carry this header: a cross-site form cannot set
/// it, and a cross-site script cannot send it without a CORS preflight we never grant.
pub const CSRF_HEADER: &str = "x-qp-csrf";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

/// SHA-256 digests of the configured tokens; presented tokens are hashed and compared in
/// constant time, so neither length nor content leaks through timing.
#[derive(Debug, Clone)]
pub struct TokenDigests {
    pub admin: [u8; 32],
    pub viewer: Option<[u8; 32]>,
}

impl TokenDigests {
    pub fn new(admin: &str, viewer: Option<&str>) -> Self {
        Self {
            admin: Sha256::digest(admin.as_bytes()).into(),
            viewer: viewer.map(|v| Sha256::digest(v.as_bytes()).into()),
        }
    }

    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let is_admin = bool::from(d.ct_eq(&self.admin));
        let is_viewer = self.viewer.is_some_and(|v| bool::from(d.ct_eq(&v)));
        if is_admin {
            Some(Role::Admin)
        } else if is_viewer {
            Some(Role::Viewer)
        } else {
            None
        }
    }
}

/// A short, non-reversible label for a token in the audit log.
pub fn token_hint(role: Role, presented: &str) -> String {
    let d = Sha256::digest(presented.as_bytes());
    format!("{}#{}", role.as_str(), hex::encode(&d[..4]))
}

/// Where a request comes from, worked out once per request (see `middleware`): its id and
/// the client's address (trusted proxies honoured).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub request_id: String,
    pub ip: Option<std::net::IpAddr>,
    /// The connection the request came on (absent in router-level tests).
    pub conn: Option<std::sync::Arc<crate::conn_trust::ConnTrust>>,
}

impl Origin {
    /// The request proved a credential: its connection stops counting as unauthenticated.
    pub fn authenticated(&self) {
        if let Some(c) = &self.conn {
            c.authenticated();
        }
    }
}

/// `req_` and 24 base-62 characters.
pub fn new_request_id() -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut id = String::with_capacity(28);
    id.push_str("req_");
    for _ in 0..24 {
        id.push(ALPHABET[fastrand::usize(..62)] as char);
    }
    id
}

/// An authenticated operator.
#[derive(Debug, Clone)]
pub struct Principal {
    pub role: Role,
    /// The audit label of the token (the one a session was opened with).
    pub hint: String,
    pub via_session: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No credentials, or wrong ones (401).
    Unauthorized,
    /// A session-cookie write without the anti-forgery header (403).
    MissingCsrf,
}

#[derive(Debug, Clone)]
struct Session<T> {
    data: T,
    last_seen: Instant,
    created: Instant,
}

/// What an operator's session holds: the role and the audit label of its token.
pub type OperatorSession = (Role, String);

/// Sessions, in memory: a restart signs everyone out, and logout really revokes. Only the
/// SHA-256 of a session id is kept. `T` is what a session stands for (an operator's role, a
/// key holder's key id).
#[derive(Debug)]
pub struct Sessions<T: Clone = OperatorSession> {
    map: Mutex<HashMap<[u8; 32], Session<T>>>,
    idle: Duration,
    max_age: Duration,
}

const MAX_SESSIONS: usize = 10_000;

impl<T: Clone> Sessions<T> {
    pub fn new(idle: Duration, max_age: Duration) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            idle,
            max_age,
        }
    }

    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// A new session id (returned once, to be set as the cookie).
    pub fn open(&self, data: T) -> Result<String, getrandom::Error> {
        let id = crate::keys::format::random_base62(43)?;
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| self.alive(s, now));
            if map.len() >= MAX_SESSIONS {
                // Full of live sessions: the least recently used one goes.
                if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k) {
                    map.remove(&oldest);
                }
            }
        }
        map.insert(
            digest(&id),
            Session {
                data,
                last_seen: now,
                created: now,
            },
        );
        Ok(id)
    }

    pub fn close(&self, id: &str) {
        self.lock().remove(&digest(id));
    }

    pub fn find(&self, id: &str) -> Option<T> {
        let now = Instant::now();
        let key = digest(id);
        let mut map = self.lock();
        let alive = map.get(&key).is_some_and(|s| self.alive(s, now));
        if !alive {
            map.remove(&key);
            return None;
        }
        let s = map.get_mut(&key)?;
        s.last_seen = now;
        Some(s.data.clone())
    }

    fn alive(&self, s: &Session<T>, now: Instant) -> bool {
        now.duration_since(s.last_seen) < self.idle && now.duration_since(s.created) < self.max_age
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session<T>>> {
        // A panic while holding this lock leaves a map that is still consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// Tokens and sessions: the one place that decides who an operator is.
#[derive(Debug)]
pub struct Authenticator {
    pub tokens: TokenDigests,
    pub sessions: Sessions,
}

impl Authenticator {
    pub fn new(tokens: TokenDigests) -> Self {
        Self {
            tokens,
            sessions: Sessions::new(
                Duration::from_secs(12 * 3600),
                Duration::from_secs(7 * 24 * 3600),
            ),
        }
    }

    /// A token in `Authorization: Bearer` or `X-Admin-Token` wins; else the session cookie.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        method: &Method,
    ) -> Result<Principal, AuthError> {
        if let Some(presented) = presented_token(headers) {
            let role = self
                .tokens
                .role_of(presented)
                .ok_or(AuthError::Unauthorized)?;
            return Ok(Principal {
                role,
                hint: token_hint(role, presented),
                via_session: false,
            });
        }
        let id = cookie(headers, SESSION_COOKIE).ok_or(AuthError::Unauthorized)?;
        let (role, hint) = self.sessions.find(id).ok_or(AuthError::Unauthorized)?;
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        // An empty header is no header: a form or a proxy may send one by accident.
        let csrf = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.trim().is_empty());
        if !safe && !csrf {
            return Err(AuthError::MissingCsrf);
        }
        Ok(Principal {
            role,
            hint,
            via_session: true,
        })
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The bearer token of `Authorization`, if that scheme is used.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = header(headers, "authorization")?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The key a caller of the quota API or the gateway presents: `X-API-Key`, else
/// `Authorization: Bearer`, else the legacy `x-trial-key`. The one parser for both.
pub fn caller_key(headers: &HeaderMap) -> Option<&str> {
    header(headers, "x-api-key")
        .or_else(|| bearer(headers))
        .or_else(|| header(headers, "x-trial-key"))
}

/// `X-Admin-Token` first: it can only mean an operator token, while `Authorization: Bearer`
/// may carry a caller key on the same request (a client configured for both APIs).
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    header(headers, "x-admin-token").or_else(|| bearer(headers))
}

/// The value of cookie `name` (the first one, if repeated).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn session_cookie_authenticates_and_writes_need_the_csrf_header() {
        let auth = Authenticator::new(TokenDigests::new("adm", Some("view")));
        let id = auth
            .sessions
            .open((Role::Viewer, "viewer#x".into()))
            .unwrap();
        let c = format!("other=1; {SESSION_COOKIE}={id}");
        let p = auth
            .authenticate(&headers(&[("cookie", &c)]), &Method::GET)
            .unwrap();
        assert_eq!((p.role, p.via_session), (Role::Viewer, true));
        assert_eq!(
            auth.authenticate(&headers(&[("cookie", &c)]), &Method::POST)
                .unwrap_err(),
            AuthError::MissingCsrf
        );
        assert!(
            auth.authenticate(
                &headers(&[("cookie", &c), (CSRF_HEADER, "1")]),
                &Method::POST
            )
            .is_ok()
        );
        auth.sessions.close(&id);
        assert_eq!(
            auth.authenticate(&headers(&[("cookie", &c)]), &Method::GET)
                .unwrap_err(),
            AuthError::Unauthorized
        );
    }

    #[test]
    fn a_wrong_bearer_is_refused_even_with_a_valid_cookie() {
        let auth = Authenticator::new(TokenDigests::new("adm", None));
        let id = auth.sessions.open((Role::Admin, "admin#x".into())).unwrap();
        let c = format!("{SESSION_COOKIE}={id}");
        let h = headers(&[("cookie", &c), ("authorization", "Bearer nope")]);
        assert!(auth.authenticate(&h, &Method::GET).is_err());
        let h = headers(&[("authorization", "Bearer adm")]);
        assert_eq!(
            auth.authenticate(&h, &Method::POST).unwrap().role,
            Role::Admin
        );
    }

    #[test]
    fn idle_sessions_expire() {
        let s: Sessions = Sessions::new(Duration::from_millis(1), Duration::from_secs(60));
        let id = s.open((Role::Admin, "a".into())).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.find(&id).is_none());
    }
}
