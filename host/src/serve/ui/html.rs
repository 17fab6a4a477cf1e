//! What every console page is made of: escaping (every value a tenant or
//! a run controls goes through [`esc`]), the frame (header, who is logged
//! in, the logout form) and the response headers. The Content-Security-Policy
//! allows only this file's own style and script, by hash: were a value ever
//! left unescaped, a script in it would still not run.

use std::fmt::Write as _;
use std::sync::OnceLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::session::{Viewer, Who};

/// `text` for HTML text and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A query string (`?a=1&b=2`) of the pairs whose value is not empty.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        q.append_pair(k, v);
    }
    match q.finish() {
        s if s.is_empty() => s,
        s => format!("?{s}"),
    }
}

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}\
header{display:flex;gap:1em;align-items:center;padding:.5em 1.5em;background:#233;color:#eee}\
header a{color:#fff;font-weight:bold;text-decoration:none}header form{margin-left:auto}\
main{padding:1em 1.5em}h1{font-size:1.3em;margin:.2em 0 .6em}h2{font-size:1.1em;margin:1.2em 0 .4em}\
table{border-collapse:collapse;background:#fff;margin:.3em 0}\
td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}th{background:#eef}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
.running,.completed{color:#070}.failed{color:#b00;font-weight:bold}.stopping{color:#a60}\
.stopped,.never_started{color:#666}.err{color:#b00;max-width:40em;overflow-wrap:anywhere}\
.charts{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}figcaption{font-size:.9em;color:#444}\
pre{background:#fff;border:1px solid #ddd;padding:.5em;overflow:auto;max-height:30em}\
.note{color:#666}.msg{padding:.5em 1em;background:#fee;border:1px solid #e99;display:inline-block}\
form.inline{display:inline}button{margin-right:.4em}input[type=text]{width:14em}\
.login{max-width:26em;margin:4em auto;background:#fff;padding:1.5em;border:1px solid #ddd}\
.login input{width:100%;box-sizing:border-box;margin:.4em 0 .8em}\
nav.pages a{margin-right:.6em}";

/// Replaces the `live` element's contents every 2 s with the same page's
/// live part (`?live=1`, rendered and escaped by the server); a session
/// that ended reloads the page, which then shows the login form.
const SCRIPT: &str = "\
const live=document.getElementById('live');\
if(live){setInterval(async()=>{\
const u=new URL(location.href);u.searchParams.set('live','1');\
try{const r=await fetch(u,{cache:'no-store'});\
if(r.redirected||r.status===401){location.reload();return}\
if(r.ok)live.innerHTML=await r.text()}catch(e){}},2000)}";

fn sha256(text: &str) -> String {
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

fn policy() -> &'static HeaderValue {
    static POLICY: OnceLock<HeaderValue> = OnceLock::new();
    POLICY.get_or_init(|| {
        let policy = format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
            sha256(SCRIPT),
            sha256(STYLE)
        );
        HeaderValue::from_str(&policy).expect("the policy is ASCII")
    })
}

/// A whole page: the frame around `main`.
pub fn document(title: &str, viewer: Option<&Viewer>, main: &str) -> String {
    let mut out = String::with_capacity(main.len() + STYLE.len() + 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width\"><title>{} · bizon-host serve</title>\
         <style>{STYLE}</style></head><body><header><a href=\"/ui\">bizon-host serve</a>",
        esc(title)
    );
    if let Some(viewer) = viewer {
        let who = match &viewer.who {
            Who::Admin => "operator (admin token)".to_string(),
            Who::Tenant(t) => format!("tenant {}", esc(t)),
        };
        let _ = write!(
            out,
            "<span>{who}</span><form method=post action=\"/ui/logout\">{}<button>Log out</button></form>",
            csrf_field(viewer)
        );
    }
    let _ = write!(
        out,
        "</header><main>{main}</main><script>{SCRIPT}</script></body></html>"
    );
    out
}

/// The hidden field every state-changing form carries.
pub fn csrf_field(viewer: &Viewer) -> String {
    format!("<input type=hidden name=csrf value=\"{}\">", esc(&viewer.csrf))
}

/// An HTML response with the console's headers: the policy above, no
/// caching (pages hold a tenant's data), no referrer, no framing.
pub fn respond(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CONTENT_SECURITY_POLICY, policy().clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// A state as a class and its text.
pub fn state(state: &str) -> String {
    let state = esc(state);
    format!("<span class=\"{state}\">{state}</span>")
}

/// A count with thousands apart (`12 345 678`).
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// Bytes as MiB, one decimal below 10.
pub fn mib(bytes: u64) -> String {
    let mib = bytes as f64 / f64::from(1 << 20);
    match mib < 10.0 {
        true => format!("{mib:.1}"),
        false => format!("{mib:.0}"),
    }
}

/// At most `max` characters of `text`, escaped, the rest cut with an ellipsis.
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", esc(&text[..at])),
        None => esc(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_becomes_text() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(cut("<b>bold</b>", 3), "&lt;b&gt;…");
        assert_eq!(state("<i>"), "<span class=\"&lt;i&gt;\">&lt;i&gt;</span>");
    }

    #[test]
    fn numbers_read_at_a_glance() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1234567), "1\u{202f}234\u{202f}567");
        assert_eq!(mib(3 << 19), "1.5");
        assert_eq!(mib(300 << 20), "300");
        assert_eq!(
            query(&[("q", "a b&c"), ("state", ""), ("page", "2")]),
            "?q=a+b%26c&page=2"
        );
        assert_eq!(query(&[("q", "")]), "");
    }

    #[test]
    fn the_policy_names_the_hashes_of_the_inline_style_and_script() {
        let policy = policy().to_str().unwrap();
        assert!(
            policy.contains(&sha256(SCRIPT)) && policy.contains(&sha256(STYLE)),
            "{policy}"
        );
        assert!(!policy.contains("unsafe-inline"), "{policy}");
    }
}
