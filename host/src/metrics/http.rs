//! The metrics over HTTP, on axum like serve's API: the response a scrape
//! gets (serve's `GET /metrics` answers it too, behind the admin token) and
//! the listener of `run --metrics-addr`.

use std::net::SocketAddr;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;

/// The text exposition format's media type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// A scrape's answer: the rendered series.
pub fn exposition(text: String) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

/// Answers every request on `addr` (any path; `/metrics` is what the
/// docs show) with what `render` gives at that moment.
pub async fn serve(
    addr: SocketAddr,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
    Ok(spawn(listener, render))
}

fn spawn(
    listener: TcpListener,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    let app = Router::new().fallback(move || {
        let text = render();
        async move { exposition(text) }
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("metrics server: {e}");
        }
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn any_request_gets_the_series_as_prometheus_text() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = spawn(listener, || "bizon_records_read_total{pipeline=\"p\"} 10\n".to_string());
        for path in ["/metrics", "/"] {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
            assert!(
                response.contains("content-type: text/plain; version=0.0.4\r\n"),
                "{response}"
            );
            assert!(
                response.ends_with("bizon_records_read_total{pipeline=\"p\"} 10\n"),
                "{response}"
            );
        }
        server.abort();
    }
}
