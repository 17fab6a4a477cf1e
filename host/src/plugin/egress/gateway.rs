//! The same chokepoint for the host's own clients: a `serve` tenant's
//! native destination (BigQuery's REST, Storage Write and GCS clients)
//! connects through a [`Route`], never straight to its endpoint.
//!
//! The Google clients take an endpoint URL and nothing else: no connector,
//! no resolver, no per-client proxy (reqwest's come from the process's
//! environment, shared by every tenant). So a route is a small reverse proxy
//! on 127.0.0.1 that the client is pointed at instead: each connection the
//! client opens to it becomes one upstream connection, made as a plugin's
//! request is ([`super::http`]): the tenant's egress rules must allow the
//! endpoint, its name is resolved once per connection by [`Policy`], every
//! address checked against the address classes, and only a checked address
//! is connected to (TLS to the endpoint's name, with the system's roots).
//! HTTP/1.1 (REST) and HTTP/2 without TLS from the client (gRPC; `h2` by
//! ALPN upstream) are both served; requests and responses stream through,
//! trailers included. The proxy's work (TLS above all) runs under the
//! tenant's CPU share.
//!
//! A refused or failed upstream is answered in the client's terms: a
//! Google-style JSON error (403 refused, 502 unreachable) for REST, a gRPC
//! status (`PERMISSION_DENIED`, `UNAVAILABLE`) for gRPC, so the destination's
//! error says why; the host logs it too.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use super::http::{connect, Alpn};
use super::policy::{Denied, Policy};
use crate::plugin::grants::{Host, HostRule, NetworkLimits, Scheme};
use crate::quota::cpu::{CpuShare, Metered, Work};

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// Where a tenant's native destinations may connect: its egress rules, and
/// the CPU share the proxies' work is charged to.
pub struct Gateway {
    policy: Arc<Policy>,
    spawner: Spawner,
}

/// Where a route forwards: an endpoint URL, parsed.
#[derive(Debug, Clone)]
struct Upstream {
    scheme: Scheme,
    host: Host,
    port: u16,
    /// `host[:port]` as the Host header and `:authority` carry it.
    authority: String,
    /// The URL's path, kept in front of every request's path by the client.
    base: String,
}

/// A route to one endpoint: point the client at [`Route::url`]. Dropping it
/// closes the listener and every connection through it.
pub struct Route {
    pub url: String,
    task: tokio::task::AbortHandle,
}

impl Drop for Route {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Gateway {
    /// `label` names the destination in the host's log ("tenant `acme`:
    /// bigquery_streaming_v2"); `rules` are the tenant's egress ceiling.
    pub fn new(label: &str, rules: Vec<HostRule>, cpu: Option<Arc<CpuShare>>) -> Self {
        Self {
            policy: Arc::new(Policy {
                plugin: label.to_string(),
                rules,
                secrets: Vec::new(),
                limits: NetworkLimits::default(),
            }),
            spawner: Spawner { cpu },
        }
    }

    /// Checks `url` against the rules now (the rule, and the addresses its
    /// name resolves to at this moment, so a refused endpoint fails the build
    /// with the reason), then listens for the client.
    pub async fn open(&self, url: &str) -> Result<Route, Denied> {
        let upstream = Arc::new(parse(url)?);
        self.policy
            .check_http(upstream.scheme, &upstream.host, upstream.port)
            .await?;
        let refused = |e: std::io::Error| Denied {
            target: url.to_string(),
            reason: format!("cannot listen on 127.0.0.1 for its route: {e}"),
        };
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(refused)?;
        let local = listener.local_addr().map_err(refused)?;
        let (policy, spawner) = (self.policy.clone(), self.spawner.clone());
        let served = upstream.clone();
        let task = tokio::spawn(async move {
            // Dropped with the route: every connection goes with it.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(destination = %policy.plugin, "route to {}: accept: {e}", served.authority);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                while connections.try_join_next().is_some() {}
                let conn = Arc::new(Connection {
                    policy: policy.clone(),
                    upstream: served.clone(),
                    spawner: spawner.clone(),
                    h1: Mutex::new(None),
                    h2: Mutex::new(None),
                });
                let server = hyper_util::server::conn::auto::Builder::new(spawner.clone());
                let serving = async move {
                    let service = hyper::service::service_fn(move |request| {
                        let conn = conn.clone();
                        async move { Ok::<_, Infallible>(conn.forward(request).await) }
                    });
                    let _ = server.serve_connection(TokioIo::new(stream), service).await;
                };
                connections.spawn(spawner.metered(serving));
            }
        })
        .abort_handle();
        Ok(Route {
            url: format!("http://{local}{}", upstream.base),
            task,
        })
    }
}

/// `scheme://host[:port][/path]`, http or https.
fn parse(url: &str) -> Result<Upstream, Denied> {
    let bad = |reason: &str| Denied {
        target: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::Http,
        Some("https") => Scheme::Https,
        _ => return Err(bad("an endpoint is http:// or https://")),
    };
    let authority = uri.authority().ok_or_else(|| bad("the URL has no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("user information in an endpoint URL is not sent"));
    }
    let port = authority
        .port_u16()
        .unwrap_or(if scheme == Scheme::Https { 443 } else { 80 });
    if uri.query().is_some() {
        return Err(bad("an endpoint URL has no query"));
    }
    Ok(Upstream {
        scheme,
        host: Host::parse(authority.host()),
        port,
        authority: authority.as_str().to_string(),
        base: uri.path().trim_end_matches('/').to_string(),
    })
}

/// Runs the proxies' tasks (connections, HTTP/2 streams) under the tenant's
/// CPU share, when there is one.
#[derive(Clone)]
struct Spawner {
    cpu: Option<Arc<CpuShare>>,
}

impl Spawner {
    fn metered<F: Future<Output = ()> + Send + 'static>(
        &self,
        f: F,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        match &self.cpu {
            Some(cpu) => Box::pin(Metered::new(f, cpu.clone(), Work::Pipeline)),
            None => Box::pin(f),
        }
    }
}

impl<F> hyper::rt::Executor<F> for Spawner
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(self.metered(async move {
            fut.await;
        }));
    }
}

/// One client connection to a route, and the upstream connection it
/// became (made at its first request; again if it closed).
struct Connection {
    policy: Arc<Policy>,
    upstream: Arc<Upstream>,
    spawner: Spawner,
    h1: Mutex<Option<http1::SendRequest<Incoming>>>,
    h2: Mutex<Option<http2::SendRequest<Incoming>>>,
}

/// Why a request could not be forwarded.
enum Failed {
    Denied(Denied),
    Unreachable(String),
}

/// Headers of one hop only (RFC 9110, 7.6.1), never forwarded.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "transfer-encoding",
    "upgrade",
    "host",
];

impl Connection {
    async fn forward(&self, mut request: Request<Incoming>) -> Response<Body> {
        let grpc = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        let up = &self.upstream;
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
        strip(request.headers_mut());
        let sent = if request.version() == Version::HTTP_2 {
            // HTTP/2 carries the target in the URI (`:scheme`, `:authority`).
            *request.uri_mut() = match format!("{}://{}{path}", up.scheme, up.authority).parse() {
                Ok(uri) => uri,
                Err(_) => return self.refuse(grpc, Failed::Unreachable(format!("bad path {path:?}"))),
            };
            match self.h2_sender().await {
                Ok(mut sender) => sender.send_request(request).await.map_err(|e| e.to_string()),
                Err(failed) => return self.refuse(grpc, failed),
            }
        } else {
            *request.uri_mut() = match path.parse() {
                Ok(uri) => uri,
                Err(_) => return self.refuse(grpc, Failed::Unreachable(format!("bad path {path:?}"))),
            };
            let host = HeaderValue::from_str(&up.authority).expect("a parsed authority is a header value");
            request.headers_mut().insert(header::HOST, host);
            // HTTP/1.1 is one exchange at a time: the lock is held for it.
            let mut sender = self.h1.lock().await;
            if sender.as_ref().is_none_or(|s| s.is_closed()) {
                match self.connect_h1().await {
                    Ok(s) => *sender = Some(s),
                    Err(failed) => return self.refuse(grpc, failed),
                }
            }
            let sender = sender.as_mut().expect("set above");
            match sender.ready().await {
                Ok(()) => sender.send_request(request).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        match sent {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip(&mut parts.headers);
                Response::from_parts(parts, body.boxed_unsync())
            }
            Err(e) => self.refuse(grpc, Failed::Unreachable(e)),
        }
    }

    async fn h2_sender(&self) -> Result<http2::SendRequest<Incoming>, Failed> {
        let mut sender = self.h2.lock().await;
        if let Some(s) = sender.as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let stream = self.connect(Alpn::H2).await?;
        let (s, driver) = http2::handshake(self.spawner.clone(), stream)
            .await
            .map_err(|e| Failed::Unreachable(format!("HTTP/2 handshake: {e}")))?;
        tokio::spawn(self.spawner.metered(async move {
            let _ = driver.await;
        }));
        *sender = Some(s.clone());
        Ok(s)
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<Incoming>, Failed> {
        let stream = self.connect(Alpn::None).await?;
        let (s, driver) = http1::handshake(stream)
            .await
            .map_err(|e| Failed::Unreachable(format!("HTTP/1.1 handshake: {e}")))?;
        tokio::spawn(self.spawner.metered(async move {
            let _ = driver.await;
        }));
        Ok(s)
    }

    /// The checked addresses of the endpoint (resolved now, once), then TCP
    /// and TLS to the first that answers.
    async fn connect(&self, alpn: Alpn) -> Result<super::http::Stream, Failed> {
        let up = &self.upstream;
        let addrs = self
            .policy
            .check_http(up.scheme, &up.host, up.port)
            .await
            .map_err(Failed::Denied)?;
        let timeout = Duration::from_millis(self.policy.limits.connect_timeout_ms);
        match tokio::time::timeout(timeout, connect(&addrs, up.scheme, &up.host, alpn)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(Failed::Unreachable(e.to_string())),
            Err(_) => Err(Failed::Unreachable(format!(
                "no connection within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    /// The answer for a request that was not forwarded, in the client's terms.
    fn refuse(&self, grpc: bool, failed: Failed) -> Response<Body> {
        let up = &self.upstream;
        let (status, grpc_status, message) = match failed {
            Failed::Denied(denied) => (StatusCode::FORBIDDEN, "7", denied.to_string()),
            Failed::Unreachable(why) => (
                StatusCode::BAD_GATEWAY,
                "14",
                format!("{}://{}: {why}", up.scheme, up.authority),
            ),
        };
        tracing::warn!(destination = %self.policy.plugin, "{message}");
        let empty = || Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync();
        if grpc {
            // A trailers-only answer: the status rides in the headers.
            let encoded: String = message
                .bytes()
                .map(|b| match b {
                    b' '..=b'~' if b != b'%' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
            return Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/grpc")
                .header("grpc-status", grpc_status)
                .header("grpc-message", encoded)
                .body(empty())
                .expect("a valid response");
        }
        let body = serde_json::json!({"error": {"code": status.as_u16(), "message": message}}).to_string();
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(
                Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .expect("a valid response")
    }
}

fn strip(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_their_default_ports_and_paths() {
        let up = parse("https://bigquery.googleapis.com").unwrap();
        assert_eq!(
            (up.port, up.authority.as_str(), up.base.as_str()),
            (443, "bigquery.googleapis.com", "")
        );
        let up = parse("http://127.0.0.1:9050/base/").unwrap();
        assert_eq!((up.scheme, up.port, up.base.as_str()), (Scheme::Http, 9050, "/base"));
        assert!(parse("ftp://x.test").unwrap_err().reason.contains("http"));
        assert!(parse("https://u:p@x.test")
            .unwrap_err()
            .reason
            .contains("user information"));
    }

    #[tokio::test]
    async fn a_route_forwards_to_an_allowed_endpoint_and_refuses_a_rebound_one() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A one-shot HTTP/1.1 server that answers with the Host it was sent.
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = upstream.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = upstream.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let host = text
                .lines()
                .find_map(|l| l.strip_prefix("host: "))
                .unwrap_or("none")
                .to_string();
            let body = format!("{host} {}", text.lines().next().unwrap());
            let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            s.write_all(answer.as_bytes()).await.unwrap();
        });
        let rule = HostRule::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let gateway = Gateway::new("test", vec![rule], None);
        let route = gateway.open(&format!("http://127.0.0.1:{port}/v2")).await.unwrap();
        assert!(route.url.starts_with("http://127.0.0.1:") && route.url.ends_with("/v2"));
        let answer = reqwest_like_get(&format!("{}/tables?x=1", route.url)).await;
        assert_eq!(answer, format!("127.0.0.1:{port} GET /v2/tables?x=1 HTTP/1.1"));
        // A name that resolves to loopback is refused unless a rule names the address.
        let gateway = Gateway::new("test", vec![HostRule::parse("http://localhost:1").unwrap()], None);
        let err = gateway.open("http://localhost:1").await.err().unwrap();
        assert!(err.reason.contains("loopback"), "{err}");
        // No rule: nothing.
        let err = gateway.open("http://example.com").await.err().unwrap();
        assert!(err.reason.contains("no rule"), "{err}");
    }

    /// A GET over a plain TCP connection, its body as text.
    async fn reqwest_like_get(url: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let uri: Uri = url.parse().unwrap();
        let mut s = tokio::net::TcpStream::connect(uri.authority().unwrap().as_str())
            .await
            .unwrap();
        let request = format!(
            "GET {} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
            uri.path_and_query().unwrap(),
            uri.authority().unwrap()
        );
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out.split("\r\n\r\n").nth(1).unwrap().to_string()
    }
}
