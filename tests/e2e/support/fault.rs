//! A proxy in front of bqemulator that answers `insertAll` as a test script
//! says: the faults the emulator cannot produce (503, 429, per-row
//! `insertErrors` with HTTP 200). A job id submitted a second time is
//! answered 409, as BigQuery does. Any other request may be answered by a
//! second script ([`start_with`]: GCS answering 500 or 429 for a while);
//! everything else goes to the emulator.
//! Minimal HTTP/1.1 over a tokio TcpListener, one request per connection.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::common::serve_in_background;

/// What to do with the n-th insertAll request (from 0).
pub enum Reply {
    Forward,
    Status(u16, String),
    /// This status with these headers and body.
    Headers(u16, Vec<(String, String)>, String),
    /// HTTP 200 with this JSON body; the rows go nowhere.
    Json(Value),
}

/// One insertAll request as it arrived, and what it was answered.
#[derive(Debug, Clone)]
pub struct Seen {
    pub insert_ids: Vec<String>,
    pub status: u16,
    /// When it arrived.
    pub at: std::time::Instant,
}

pub type Script = dyn Fn(usize, &Value) -> Reply + Send + Sync;

/// What to answer any other request (method, path); None forwards it.
pub type Other = dyn Fn(&str, &str) -> Option<Reply> + Send + Sync;

pub struct FaultServer {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Job ids submitted (`POST .../jobs`), and whether the answer was 409.
    pub jobs: Arc<Mutex<Vec<(String, bool)>>>,
    /// The other requests: method, path and the status answered (0: forwarded).
    pub others: Arc<Mutex<Vec<(String, String, u16)>>>,
}

impl FaultServer {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The proxy, on a free port of 127.0.0.1 until the test process ends.
pub fn start(upstream: &str, script: Box<Script>) -> FaultServer {
    start_with(upstream, script, Box::new(|_, _| None))
}

/// [`start`], with `other` answering the requests that are neither
/// insertAll nor a job's submission.
pub fn start_with(upstream: &str, script: Box<Script>, other: Box<Other>) -> FaultServer {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let jobs: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let others: Arc<Mutex<Vec<(String, String, u16)>>> = Arc::default();
    let (upstream, log, script, job_log) = (upstream.to_string(), seen.clone(), Arc::new(script), jobs.clone());
    let (other, other_log) = (Arc::new(other), others.clone());
    let addr = serve_in_background(|listener| async move {
        let client = reqwest::Client::new();
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let (upstream, log, script, client, jobs) = (
                upstream.clone(),
                log.clone(),
                script.clone(),
                client.clone(),
                job_log.clone(),
            );
            let (other, others) = (other.clone(), other_log.clone());
            tokio::spawn(async move {
                let logs = Logs {
                    seen: &log,
                    jobs: &jobs,
                    others: &others,
                };
                let _ = serve(socket, &upstream, logs, &**script, &**other, &client).await;
            });
        }
    });
    FaultServer {
        url: format!("http://{addr}"),
        seen,
        jobs,
        others,
    }
}

/// Where [`serve`] writes down what it saw.
struct Logs<'a> {
    seen: &'a Mutex<Vec<Seen>>,
    jobs: &'a Mutex<Vec<(String, bool)>>,
    others: &'a Mutex<Vec<(String, String, u16)>>,
}

async fn serve(
    mut socket: TcpStream,
    upstream: &str,
    logs: Logs<'_>,
    script: &Script,
    other: &Other,
    client: &reqwest::Client,
) -> std::io::Result<()> {
    let Logs {
        seen: log,
        jobs,
        others,
    } = logs;
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 8192];
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (method, path) = (
        request_line.next().unwrap_or_default().to_string(),
        request_line.next().unwrap_or_default().to_string(),
    );
    let mut length = 0usize;
    let mut content_type = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "content-type" => content_type = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }

    let reply = if path.ends_with("/insertAll") {
        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let mut log = log.lock().unwrap();
        let reply = script(log.len(), &parsed);
        let status = match &reply {
            Reply::Forward | Reply::Json(_) => 200,
            Reply::Status(s, _) | Reply::Headers(s, _, _) => *s,
        };
        log.push(Seen {
            insert_ids: parsed["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| r["insertId"].as_str().unwrap_or_default().to_string())
                .collect(),
            status,
            at: std::time::Instant::now(),
        });
        reply
    } else if method == "POST" && path.split('?').next().unwrap_or_default().ends_with("/jobs") {
        // As BigQuery: a job id is taken once (bqemulator runs it again).
        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let id = parsed["jobReference"]["jobId"].as_str().unwrap_or_default().to_string();
        let mut jobs = jobs.lock().unwrap();
        let repeated = jobs.iter().any(|(j, _)| *j == id);
        jobs.push((id.clone(), repeated));
        match repeated {
            true => Reply::Status(
                409,
                format!(r#"{{"error":{{"code":409,"message":"Already Exists: Job {id}","status":"ALREADY_EXISTS"}}}}"#),
            ),
            false => Reply::Forward,
        }
    } else {
        let reply = other(&method, &path);
        let status = match &reply {
            None | Some(Reply::Forward) => 0,
            Some(Reply::Json(_)) => 200,
            Some(Reply::Status(s, _) | Reply::Headers(s, _, _)) => *s,
        };
        others.lock().unwrap().push((method.clone(), path.clone(), status));
        reply.unwrap_or(Reply::Forward)
    };
    let mut extra = String::new();
    let (status, answer) = match reply {
        Reply::Status(s, text) => (s, text.into_bytes()),
        Reply::Headers(s, headers, text) => {
            for (k, v) in headers {
                extra.push_str(&format!("{k}: {v}\r\n"));
            }
            (s, text.into_bytes())
        }
        Reply::Json(v) => (200, serde_json::to_vec(&v).unwrap()),
        Reply::Forward => {
            let mut request = client.request(method.parse().unwrap(), format!("{upstream}{path}"));
            if let Some(ct) = content_type {
                request = request.header("content-type", ct);
            }
            match request.body(body).send().await {
                Ok(r) => (r.status().as_u16(), r.bytes().await.unwrap_or_default().to_vec()),
                Err(e) => (502, e.to_string().into_bytes()),
            }
        }
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n",
        answer.len()
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(&answer).await?;
    socket.shutdown().await
}
