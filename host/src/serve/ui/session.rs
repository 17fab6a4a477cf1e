//! The console's sessions, and who a page answers, as extractors in the
//! style of [`super::super::auth`]: a handler that takes [`Viewer`],
//! [`Scoped`] or [`ScopedPipeline`] runs only for a live session, and only
//! on a tenant the session may see; one that takes [`Checked`] only for a
//! form that carries the session's CSRF token. A route cannot forget
//! either: what it acts on is an argument it cannot get otherwise.
//!
//! The cookie holds a random session id (256 bits), never a token; the
//! server keeps the id's SHA-256, so a lookup's timing says nothing of the
//! ids it holds. `HttpOnly` keeps it from scripts, `SameSite=Strict` from
//! other sites' requests, and `Secure` is set when the request came over
//! TLS (a proxy's `X-Forwarded-Proto: https`: serve itself speaks plain HTTP).
//! SameSite alone is not trusted to stop a cross-site form (older browsers,
//! a sibling subdomain): every POST carries the session's CSRF token too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Form, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use parking_lot::Mutex;

use super::super::auth::same;
use super::super::registry::PipelineRow;
use super::super::state::State;
use super::super::tenants::Tenant;
use super::super::token::{hash, hex};
use super::{Console, UiError};

pub const COOKIE: &str = "bizon_session";
/// A session ends this long after its login, used or not: a page left open
/// refreshes itself, so an idle timeout would never fire.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Sessions held at once; past it the oldest ends. Each is ~200 bytes, and
/// a login needs a valid token, so only holders of one can fill it.
const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    Admin,
    Tenant(String),
}

#[derive(Clone)]
struct Session {
    who: Who,
    csrf: String,
    expires: Instant,
}

#[derive(Default)]
pub struct Sessions {
    /// By the SHA-256 of the session id.
    by_digest: Mutex<HashMap<String, Session>>,
}

/// 256 random bits, in hex.
fn random() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source");
    hex(&bytes)
}

impl Sessions {
    /// A new session for `who`: its id, for the cookie.
    pub fn open(&self, who: Who, now: Instant) -> String {
        let id = random();
        let session = Session {
            who,
            csrf: random(),
            expires: now + LIFETIME,
        };
        let mut sessions = self.by_digest.lock();
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| s.expires > now);
        }
        if sessions.len() >= MAX_SESSIONS {
            // Every session expires LIFETIME after it began: the first to
            // expire is the oldest.
            if let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone()) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(hash(&id), session);
        id
    }

    fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let digest = hash(id);
        let mut sessions = self.by_digest.lock();
        match sessions.get(&digest) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                sessions.remove(&digest);
                None
            }
            None => None,
        }
    }

    pub fn close(&self, id: &str) {
        self.by_digest.lock().remove(&hash(id));
    }

    /// Ends every session of a tenant that is gone.
    fn close_tenant(&self, tenant: &str) {
        self.by_digest
            .lock()
            .retain(|_, s| !matches!(&s.who, Who::Tenant(t) if t == tenant));
    }
}

/// The session's id from the request's cookies.
pub fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, id)| id)
        .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether the browser reached us over TLS: through a proxy that ends it
/// and says so. A forged header only makes the cookie stricter.
fn over_tls(headers: &HeaderMap) -> bool {
    let says = |name: &str, test: &dyn Fn(&str) -> bool| {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).any(test)
    };
    says("x-forwarded-proto", &|v| v.trim().eq_ignore_ascii_case("https"))
        || says("forwarded", &|v| {
            v.split([';', ','])
                .any(|p| p.trim().eq_ignore_ascii_case("proto=https"))
        })
}

/// `Set-Cookie` for a new session; `None` ends it.
pub fn cookie(id: Option<&str>, headers: &HeaderMap) -> HeaderValue {
    let secure = if over_tls(headers) { "; Secure" } else { "" };
    let value = match id {
        Some(id) => format!(
            "{COOKIE}={id}; Path=/ui; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
            LIFETIME.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Strict{secure}"),
    };
    HeaderValue::from_str(&value).expect("a hex id is a valid header value")
}

pub fn console(parts: &Parts) -> Result<Arc<Console>, UiError> {
    parts
        .extensions
        .get::<Arc<Console>>()
        .cloned()
        .ok_or_else(|| UiError::page(StatusCode::INTERNAL_SERVER_ERROR, "the console's state is missing"))
}

/// A page's reader: a live session's.
pub struct Viewer {
    pub who: Who,
    /// The session's CSRF token, for the forms the page shows.
    pub csrf: String,
    /// The session's id (for logging out).
    pub id: String,
}

impl Viewer {
    pub fn is_admin(&self) -> bool {
        self.who == Who::Admin
    }
}

impl FromRequestParts<Arc<State>> for Viewer {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, UiError> {
        let console = console(parts)?;
        let id = session_id(&parts.headers).ok_or(UiError::LoginFirst)?;
        let session = console.sessions.get(id, Instant::now()).ok_or(UiError::LoginFirst)?;
        if let Who::Tenant(tenant) = &session.who {
            // A deleted tenant's sessions end with it.
            if state.tenants.get(&state.registry, tenant)?.is_none() {
                console.sessions.close_tenant(tenant);
                return Err(UiError::LoginFirst);
            }
        }
        Ok(Viewer {
            who: session.who,
            csrf: session.csrf,
            id: id.to_string(),
        })
    }
}

/// A page of one tenant (the path's `{tenant}`): the admin sees every
/// tenant; a tenant only its own, and another's name answers the same 404
/// as a name nobody has, as the API does.
pub struct Scoped {
    pub viewer: Viewer,
    pub tenant: Arc<Tenant>,
}

impl FromRequestParts<Arc<State>> for Scoped {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, UiError> {
        let viewer = Viewer::from_request_parts(parts, state).await?;
        let params = path_params(parts, state).await?;
        let name = params.get("tenant").map_or("", String::as_str);
        if matches!(&viewer.who, Who::Tenant(own) if own != name) {
            return Err(UiError::not_found("tenant", name));
        }
        let tenant = state.tenant(name)?;
        Ok(Scoped { viewer, tenant })
    }
}

/// A page of one pipeline (the path's `{pipeline}`) of a [`Scoped`] tenant.
pub struct ScopedPipeline {
    pub viewer: Viewer,
    pub tenant: Arc<Tenant>,
    pub row: PipelineRow,
}

impl FromRequestParts<Arc<State>> for ScopedPipeline {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, UiError> {
        let Scoped { viewer, tenant } = Scoped::from_request_parts(parts, state).await?;
        let params = path_params(parts, state).await?;
        let name = params.get("pipeline").map_or("", String::as_str);
        let row = state
            .registry
            .pipeline(&tenant.name, name)?
            .ok_or_else(|| UiError::not_found("pipeline", name))?;
        Ok(ScopedPipeline { viewer, tenant, row })
    }
}

async fn path_params(parts: &mut Parts, state: &Arc<State>) -> Result<HashMap<String, String>, UiError> {
    Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map(|Path(p)| p)
        .map_err(|e| UiError::page(StatusCode::NOT_FOUND, e.body_text()))
}

/// A submitted form of a live session that carries its CSRF token: the
/// cookie, which a browser may attach to another site's request, is not
/// enough to act.
pub struct Checked {
    pub viewer: Viewer,
    /// The form's fields but the token.
    pub fields: Vec<(String, String)>,
}

impl Checked {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl FromRequest<Arc<State>> for Checked {
    type Rejection = UiError;

    async fn from_request(request: Request, state: &Arc<State>) -> Result<Self, UiError> {
        let (mut parts, body) = request.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let Form(mut fields) = Form::<Vec<(String, String)>>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|e| UiError::page(e.status(), e.body_text()))?;
        let sent = fields.iter().position(|(k, _)| k == "csrf").map(|i| fields.remove(i).1);
        if !sent.is_some_and(|token| same(&token, &viewer.csrf)) {
            return Err(UiError::page(
                StatusCode::FORBIDDEN,
                "this form does not carry this session's CSRF token (it came from another page or an older \
                 session): reload the page and try again",
            ));
        }
        Ok(Checked { viewer, fields })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_id_until_it_expires_or_closes() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let id = sessions.open(Who::Tenant("acme".into()), now);
        assert_eq!(id.len(), 64);
        let found = sessions.get(&id, now + Duration::from_secs(60)).unwrap();
        assert_eq!(found.who, Who::Tenant("acme".into()));
        assert_ne!(found.csrf, id);
        assert!(sessions.get(&id, now + LIFETIME).is_none(), "expired");
        let id = sessions.open(Who::Admin, now);
        sessions.close(&id);
        assert!(sessions.get(&id, now).is_none(), "closed");
        assert!(
            !sessions.by_digest.lock().keys().any(|k| *k == id),
            "ids are kept as digests"
        );
    }

    #[test]
    fn the_oldest_session_makes_room() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let first = sessions.open(Who::Admin, start);
        for i in 1..=MAX_SESSIONS {
            sessions.open(Who::Admin, start + Duration::from_millis(i as u64));
        }
        assert_eq!(sessions.by_digest.lock().len(), MAX_SESSIONS);
        assert!(sessions.get(&first, start).is_none());
    }

    #[test]
    fn the_cookie_holds_the_id_only_and_is_strict() {
        let mut headers = HeaderMap::new();
        let id = "ab".repeat(32);
        let plain = cookie(Some(&id), &headers);
        assert_eq!(
            plain,
            format!("bizon_session={id}; Path=/ui; Max-Age=28800; HttpOnly; SameSite=Strict").as_str()
        );
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(cookie(Some(&id), &headers).to_str().unwrap().ends_with("; Secure"));
        let mut forwarded = HeaderMap::new();
        forwarded.insert("forwarded", HeaderValue::from_static("for=1.2.3.4;proto=https"));
        assert!(cookie(None, &forwarded).to_str().unwrap().contains("Max-Age=0"));
        assert!(cookie(None, &forwarded).to_str().unwrap().ends_with("; Secure"));
    }

    #[test]
    fn the_session_cookie_is_read_among_others() {
        let id = "0f".repeat(32);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("theme=dark; {COOKIE}={id}; x=1")).unwrap(),
        );
        assert_eq!(session_id(&headers), Some(id.as_str()));
        headers.insert(header::COOKIE, HeaderValue::from_static("bizon_session=<script>"));
        assert_eq!(session_id(&headers), None);
    }
}
