//! `wasi:http/outgoing-handler`: every request a plugin sends comes through
//! [`Hooks::send_request`], which asks the [`Policy`], connects only to the
//! addresses it checked (never to the name again: no DNS rebinding), adds
//! the host's secrets, and bounds the exchange in time, size and number.
//! wasmtime-wasi-http's `default_send_request` is not used: it resolves the
//! name a second time and waits 600 s by default.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme as UriScheme;
use http::{Method, Request, Response};
use http_body::{Body, Frame};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::policy::{Denied, Policy};
use crate::plugin::grants::{Host, Scheme};

type SendFuture = Box<dyn Future<Output = Result<(Response<WasiBody>, IoFuture), Error>> + Send>;
type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// One instance's HTTP hooks; the connection limit is per instance.
pub struct Hooks {
    policy: Arc<Policy>,
    connections: Arc<Semaphore>,
}

impl Hooks {
    pub fn new(policy: Arc<Policy>) -> Self {
        let connections = Arc::new(Semaphore::new(policy.limits.max_connections));
        Self { policy, connections }
    }
}

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        // The plugin's request-options cannot lengthen the host's limits.
        let policy = self.policy.clone();
        let connections = self.connections.clone();
        Box::new(async move {
            send(&policy, connections, request).await.inspect_err(|e| {
                if let Error::InternalError(Some(message)) = e {
                    tracing::warn!(plugin = %policy.plugin, "{message}");
                }
            })
        })
    }
}

fn deny(denied: Denied) -> Error {
    Error::InternalError(Some(denied.to_string()))
}

async fn send(
    policy: &Policy,
    connections: Arc<Semaphore>,
    mut request: Request<WasiBody>,
) -> Result<(Response<WasiBody>, IoFuture), Error> {
    let uri = request.uri().clone();
    let scheme = match uri.scheme() {
        Some(s) if *s == UriScheme::HTTP => Scheme::Http,
        Some(s) if *s == UriScheme::HTTPS => Scheme::Https,
        _ => return Err(Error::HttpProtocolError),
    };
    let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
    let host = Host::parse(authority.host());
    let port = authority
        .port_u16()
        .unwrap_or(if scheme == Scheme::Https { 443 } else { 80 });
    let target = format!("{scheme}://{host}:{port}");
    if authority.as_str().contains('@') {
        return Err(deny(Denied {
            target,
            reason: "user information in the URL is not sent; use allow.secrets".into(),
        }));
    }
    if request.method() == Method::CONNECT {
        return Err(deny(Denied {
            target,
            reason: "CONNECT (tunnelling) is not allowed".into(),
        }));
    }
    let addrs = policy.check_http(scheme, &host, port).await.map_err(deny)?;
    let permit = connections.try_acquire_owned().map_err(|_| {
        deny(Denied {
            target: target.clone(),
            reason: format!(
                "the instance already has {} connection(s) open (allow.network.max_connections)",
                policy.limits.max_connections
            ),
        })
    })?;

    let headers = request.headers_mut();
    for secret in policy.secret_headers(scheme, &host, port) {
        headers.insert(secret.header.clone(), secret.value.clone());
    }
    // The request line carries only the path: an absolute URI would make
    // an allowed server act as a proxy for a host the rules never saw.
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = path.parse().map_err(|_| Error::HttpRequestUriInvalid)?;

    let limits = &policy.limits;
    let connect_timeout = Duration::from_millis(limits.connect_timeout_ms);
    let first_byte = Duration::from_millis(limits.first_byte_timeout_ms);
    let stream = tokio::time::timeout(connect_timeout, connect(&addrs, scheme, &host, Alpn::None))
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
    let (mut sender, conn) = tokio::time::timeout(connect_timeout, hyper::client::conn::http1::handshake(stream))
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
    let driver = tokio::spawn(async move {
        let result = conn.await;
        drop(permit);
        result
    });
    let response = tokio::time::timeout(first_byte, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)??;

    let cap = limits.max_response_bytes();
    if let Some(length) = response.headers().get(http::header::CONTENT_LENGTH) {
        if length
            .to_str()
            .ok()
            .and_then(|l| l.parse::<u64>().ok())
            .is_some_and(|l| l > cap)
        {
            return Err(Error::HttpResponseBodySize(Some(cap)));
        }
    }
    let response = response.map(|incoming| {
        http_body_util::BodyExt::boxed_unsync(Capped {
            inner: incoming,
            left: cap,
            cap,
            idle: first_byte,
            timer: Box::pin(tokio::time::sleep(first_byte)),
        })
    });
    let io: IoFuture = Box::new(async move {
        match driver.await {
            Ok(result) => result.map_err(Error::from),
            Err(_) => Err(Error::ConnectionTerminated),
        }
    });
    Ok((response, io))
}

pub(super) type Stream = TokioIo<Box<dyn IoStream>>;

pub(super) trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> IoStream for T {}

/// What TLS offers the server (ALPN): nothing (HTTP/1.1, a plugin's
/// requests) or `h2` (the gateway's gRPC).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Alpn {
    None,
    H2,
}

/// TCP to the first checked address that answers, then TLS for https.
pub(super) async fn connect(addrs: &[SocketAddr], scheme: Scheme, host: &Host, alpn: Alpn) -> Result<Stream, Error> {
    let mut last = None;
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = match (tcp, last) {
        (Some(tcp), _) => tcp,
        (None, Some(e)) => return Err(Error::Connect(e)),
        (None, None) => return Err(Error::DestinationNotFound),
    };
    if scheme != Scheme::Https {
        return Ok(TokioIo::new(Box::new(tcp)));
    }
    let name = match host {
        Host::Ip(ip) => rustls::pki_types::ServerName::IpAddress((*ip).into()),
        Host::Name(name) => {
            rustls::pki_types::ServerName::try_from(name.clone()).map_err(|_| Error::HttpRequestUriInvalid)?
        }
    };
    let config = match alpn {
        Alpn::None => TLS.clone(),
        Alpn::H2 => TLS_H2.clone(),
    };
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(Error::Tls)?;
    Ok(TokioIo::new(Box::new(tls)))
}

/// [`TLS`] offering HTTP/2, which gRPC needs.
static TLS_H2: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
    let mut config = (*TLS.clone()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
});

/// The system's trusted roots, read once.
static TLS: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!("reading the system's TLS roots: {error}");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!("TLS roots for plugins: {added} added, {ignored} unparsable");
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
});

/// A response body cut off at the size cap, and at `idle` without a byte.
struct Capped {
    inner: hyper::body::Incoming,
    left: u64,
    cap: u64,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.left {
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(this.cap)))));
                    }
                    this.left -= len;
                }
                let deadline = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}
