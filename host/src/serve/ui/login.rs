//! Logging in and out. `POST /ui/login` takes the form field `token` (the
//! admin's or a tenant's) and answers a session cookie; the token is read
//! from the body only, never put in a URL, a page or a log line.
//!
//! Guessing is made useless twice over: a wrong token is answered after
//! [`WRONG_DELAY`], and each client address may send [`BURST`] wrong
//! tokens, then one every [`REFILL`]; past that, logins from it are
//! refused (429) without looking at the token, so a right guess there says
//! nothing. Every attempt takes its turn first and a right one gives it
//! back, so parallel guesses cannot slip past the count. IPv6 clients are
//! counted by /64, what one machine is usually given. Behind a proxy every
//! client has the proxy's address: they share one count.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Form, FromRequestParts, State as Extract};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use parking_lot::Mutex;
use serde::Deserialize;

use super::super::auth::{who, Caller};
use super::super::state::State;
use super::html::{document, esc, respond};
use super::session::{cookie, session_id, Checked, Who};
use super::{Console, UiError};

/// How long a wrong token waits for its answer.
pub const WRONG_DELAY: Duration = Duration::from_secs(1);
/// Wrong tokens an address may send before it must wait.
pub const BURST: f64 = 5.0;
/// Then one more each this long: 180 an hour.
pub const REFILL: Duration = Duration::from_secs(20);
/// Addresses counted at once (~50 bytes each). Past it, those whose count
/// is back to full are forgotten; if none is, new addresses wait too.
const MAX_ADDRESSES: usize = 100_000;

/// The client's address, as the listener saw it (none when the router runs
/// without one, as in unit tests: those share one count).
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        Ok(ClientAddr(addr))
    }
}

/// What is counted for an address: IPv4 whole, IPv6 by its /64.
fn counted(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Each address's wrong tokens, as a bucket of turns.
#[derive(Default)]
pub struct Attempts {
    by_addr: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl Attempts {
    fn refilled((turns, at): (f64, Instant), now: Instant) -> f64 {
        (turns + now.saturating_duration_since(at).as_secs_f64() / REFILL.as_secs_f64()).min(BURST)
    }

    /// Takes a turn for `addr`, or says how long until it has one.
    pub fn take(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let addr = counted(addr);
        let mut by_addr = self.by_addr.lock();
        if by_addr.len() >= MAX_ADDRESSES && !by_addr.contains_key(&addr) {
            by_addr.retain(|_, b| Self::refilled(*b, now) < BURST);
            if by_addr.len() >= MAX_ADDRESSES {
                return Err(REFILL);
            }
        }
        let bucket = by_addr.entry(addr).or_insert((BURST, now));
        let turns = Self::refilled(*bucket, now);
        if turns < 1.0 {
            *bucket = (turns, now);
            return Err(REFILL.mul_f64(1.0 - turns));
        }
        *bucket = (turns - 1.0, now);
        Ok(())
    }

    /// A right token: the turn it took is given back.
    pub fn give_back(&self, addr: IpAddr, now: Instant) {
        let addr = counted(addr);
        let mut by_addr = self.by_addr.lock();
        if let Some(bucket) = by_addr.get_mut(&addr) {
            *bucket = ((Self::refilled(*bucket, now) + 1.0).min(BURST), now);
        }
    }
}

fn form_page(status: StatusCode, message: Option<&str>) -> Response {
    let message = message.map_or(String::new(), |m| format!("<p class=msg>{}</p>", esc(m)));
    let main = format!(
        "<div class=login><h1>Log in</h1>{message}\
         <form method=post action=\"/ui/login\"><label for=token>Token (the admin's or a tenant's)</label>\
         <input id=token name=token type=password autocomplete=off required autofocus>\
         <button>Log in</button></form>\
         <p class=note>The token stays in this form: the console keeps a session cookie, not the token.</p></div>"
    );
    respond(status, document("Log in", None, &main))
}

/// `GET /ui/login`.
pub async fn form() -> Response {
    form_page(StatusCode::OK, None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /ui/login`.
pub async fn login(
    Extract(state): Extract<Arc<State>>,
    Extension(console): Extension<Arc<Console>>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, UiError> {
    if let Err(wait) = console.attempts.take(client, Instant::now()) {
        tracing::warn!(%client, "console login refused: too many wrong tokens from this address");
        let mut page = form_page(
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "Too many wrong tokens from your address: try again in {} s.",
                wait.as_secs().max(1)
            )),
        );
        page.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
        return Ok(page);
    }
    let token = form.token.trim();
    let caller = match token.is_empty() {
        true => None,
        false => who(&state, token)?,
    };
    let Some(caller) = caller else {
        tokio::time::sleep(WRONG_DELAY).await;
        tracing::warn!(%client, "console login with a wrong token");
        return Ok(form_page(
            StatusCode::UNAUTHORIZED,
            Some("That token is not valid here."),
        ));
    };
    console.attempts.give_back(client, Instant::now());
    let who = match caller {
        Caller::Admin => Who::Admin,
        Caller::Tenant(name) => Who::Tenant(name),
    };
    match &who {
        Who::Admin => tracing::info!(%client, "console login: the operator"),
        Who::Tenant(tenant) => tracing::info!(%client, %tenant, "console login"),
    }
    // A session the browser had before is not carried over: a new id for
    // every login, so an id planted before it is worth nothing after.
    if let Some(old) = session_id(&headers) {
        console.sessions.close(old);
    }
    let id = console.sessions.open(who, Instant::now());
    let mut response = Redirect::to("/ui").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(Some(&id), &headers));
    Ok(response)
}

/// `POST /ui/logout`: the session ends here, whatever the browser keeps.
pub async fn logout(Extension(console): Extension<Arc<Console>>, headers: HeaderMap, form: Checked) -> Response {
    console.sessions.close(&form.viewer.id);
    let mut response = Redirect::to("/ui/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(None, &headers));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_has_a_few_turns_then_one_each_refill() {
        let attempts = Attempts::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let now = Instant::now();
        for _ in 0..BURST as usize {
            attempts.take(a, now).unwrap();
        }
        let wait = attempts.take(a, now).unwrap_err();
        assert_eq!(wait, REFILL);
        attempts.take(b, now).expect("another address has its own turns");
        let later = now + REFILL;
        attempts.take(a, later).expect("a turn came back");
        assert!(attempts.take(a, later).is_err());
    }

    #[test]
    fn a_right_token_gives_its_turn_back() {
        let attempts = Attempts::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let now = Instant::now();
        for _ in 0..20 {
            attempts.take(a, now).unwrap();
            attempts.give_back(a, now);
        }
    }

    #[test]
    fn ipv6_is_counted_by_its_64_and_mapped_ipv4_as_ipv4() {
        let now = Instant::now();
        let attempts = Attempts::default();
        for i in 0..BURST as u16 {
            let addr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, i));
            attempts.take(addr, now).unwrap();
        }
        let same_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 9, 9, 9, 9));
        assert!(attempts.take(same_64, now).is_err());
        assert_eq!(
            counted("::ffff:10.1.2.3".parse().unwrap()),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }
}
