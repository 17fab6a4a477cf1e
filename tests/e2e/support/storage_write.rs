//! A local stand-in for BigQuery's Storage Write API
//! (`google.cloud.bigquery.storage.v1.BigQueryWrite` over gRPC) that behaves
//! as the real service does where bqemulator 1.4 does not:
//!
//! - an AppendRows connection takes `write_stream` (and the writer schema) on
//!   its first request only; a later request carrying `write_stream` is
//!   refused and the connection closed;
//! - committed streams check offsets: an offset already written answers
//!   ALREADY_EXISTS, one past the end OUT_OF_RANGE (in the response, the
//!   connection stays up); the default stream takes no offsets;
//! - faults on demand: every connection closed after N appends (the last one
//!   stored or not), or one append answered but lost (a gap).
//!
//! It serves CreateWriteStream (COMMITTED), GetWriteStream, AppendRows and
//! FinalizeWriteStream, which is what the host calls; BatchCommitWriteStreams
//! and FlushRows (pending and buffered streams, unused) answer UNIMPLEMENTED.
//!
//! Rows are kept per table as their `_source_record_id`s, so a test can count
//! what landed. The messages are hand-written prost types with only the
//! fields the host uses (the Google crate's are private); the field numbers
//! are storage.proto's.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::Stream;
use tonic::body::Body;
use tonic::server::{Grpc, StreamingService, UnaryService};
use tonic::{Request, Response, Status};

use super::common::serve_in_background;

pub mod pb {
    //! storage.proto, stream.proto, arrow.proto and google.rpc.Status: the
    //! fields the host sends or reads.

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CreateWriteStreamRequest {
        #[prost(string, tag = "1")]
        pub parent: String,
        #[prost(message, optional, tag = "2")]
        pub write_stream: Option<WriteStream>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteStream {
        #[prost(string, tag = "1")]
        pub name: String,
        /// TYPE_UNSPECIFIED 0, COMMITTED 1, PENDING 2, BUFFERED 3.
        #[prost(int32, tag = "2")]
        pub r#type: i32,
        #[prost(string, tag = "8")]
        pub location: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetWriteStreamRequest {
        #[prost(string, tag = "1")]
        pub name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FinalizeWriteStreamRequest {
        #[prost(string, tag = "1")]
        pub name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FinalizeWriteStreamResponse {
        #[prost(int64, tag = "1")]
        pub row_count: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Int64Value {
        #[prost(int64, tag = "1")]
        pub value: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AppendRowsRequest {
        #[prost(string, tag = "1")]
        pub write_stream: String,
        #[prost(message, optional, tag = "2")]
        pub offset: Option<Int64Value>,
        #[prost(message, optional, tag = "5")]
        pub arrow_rows: Option<ArrowData>,
        #[prost(string, tag = "6")]
        pub trace_id: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ArrowData {
        #[prost(message, optional, tag = "1")]
        pub writer_schema: Option<ArrowSchema>,
        #[prost(message, optional, tag = "2")]
        pub rows: Option<ArrowRecordBatch>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ArrowSchema {
        #[prost(bytes = "vec", tag = "1")]
        pub serialized_schema: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ArrowRecordBatch {
        #[prost(bytes = "vec", tag = "1")]
        pub serialized_record_batch: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AppendRowsResponse {
        #[prost(message, optional, tag = "1")]
        pub append_result: Option<AppendResult>,
        #[prost(message, optional, tag = "2")]
        pub error: Option<RpcStatus>,
        #[prost(string, tag = "5")]
        pub write_stream: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AppendResult {
        #[prost(message, optional, tag = "1")]
        pub offset: Option<Int64Value>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RpcStatus {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
    }
}

const COMMITTED: i32 = 1;
const SERVICE: &str = "/google.cloud.bigquery.storage.v1.BigQueryWrite/";

/// Faults to produce on demand.
#[derive(Clone, Copy, Default)]
pub struct Faults {
    /// Every connection is closed (UNAVAILABLE, no answer) at its append
    /// number `n + 1`; `stored` says whether that append's rows were written
    /// first (the worst case for a client: it cannot tell).
    pub close_after: Option<(usize, bool)>,
    /// The n-th append (from 0) to each committed stream is answered OK but
    /// its rows are lost: the next offset is past the stream's end.
    pub lose: Option<usize>,
}

/// One AppendRows request as it arrived and what it got.
#[derive(Debug, Clone)]
pub struct Seen {
    pub connection: usize,
    /// Index of the request on its connection (from 0).
    pub index: usize,
    pub write_stream: String,
    /// `write_stream` was set on the request itself.
    pub carried_stream: bool,
    pub offset: Option<i64>,
    pub rows: usize,
    /// "ok", "ALREADY_EXISTS", "OUT_OF_RANGE", "closed", "lost" or "refused: ...".
    pub answer: String,
}

struct WriteStreamState {
    table: String,
    committed: bool,
    /// Rows appended (the next offset).
    len: i64,
    finalized: bool,
    appends: usize,
}

#[derive(Default)]
pub struct State {
    streams: HashMap<String, WriteStreamState>,
    /// `_source_record_id`s by table (`projects/p/datasets/d/tables/t`).
    rows: HashMap<String, Vec<String>>,
    seen: Vec<Seen>,
    connections: usize,
    pub created: usize,
    pub got: usize,
    pub finalized: usize,
}

pub struct StandIn {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl StandIn {
    /// Rows of `table` (`project.dataset.table`) as `_source_record_id`s.
    pub fn rows(&self, table: &str) -> Vec<String> {
        let key = table_path(table);
        self.state.lock().unwrap().rows.get(&key).cloned().unwrap_or_default()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// (CreateWriteStream, GetWriteStream, FinalizeWriteStream) calls.
    pub fn calls(&self) -> (usize, usize, usize) {
        let s = self.state.lock().unwrap();
        (s.created, s.got, s.finalized)
    }
}

fn table_path(table: &str) -> String {
    let parts: Vec<&str> = table.split('.').collect();
    format!("projects/{}/datasets/{}/tables/{}", parts[0], parts[1], parts[2])
}

/// The stand-in, on a free port of 127.0.0.1 until the test process ends.
pub fn start(faults: Faults) -> StandIn {
    let state: Arc<Mutex<State>> = Arc::default();
    let service = Service {
        state: state.clone(),
        faults,
    };
    let addr = serve_in_background(|listener| async move {
        tonic::transport::Server::builder()
            .serve_with_incoming(service, tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    StandIn {
        url: format!("http://{addr}"),
        state,
    }
}

#[derive(Clone)]
struct Service {
    state: Arc<Mutex<State>>,
    faults: Faults,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;
type Answers = Pin<Box<dyn Stream<Item = Result<pb::AppendRowsResponse, Status>> + Send>>;

impl tower_service::Service<http::Request<Body>> for Service {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let method = req.uri().path().strip_prefix(SERVICE).unwrap_or("").to_string();
        let state = self.state.clone();
        match method.as_str() {
            "CreateWriteStream" => unary(req, move |r: pb::CreateWriteStreamRequest| create(&state, r)),
            "GetWriteStream" => unary(req, move |r: pb::GetWriteStreamRequest| get(&state, r)),
            "FinalizeWriteStream" => unary(req, move |r: pb::FinalizeWriteStreamRequest| finalize(&state, r)),
            "AppendRows" => {
                let service = Appends {
                    state,
                    faults: self.faults,
                };
                Box::pin(async move {
                    let mut grpc =
                        Grpc::new(tonic_prost::ProstCodec::<pb::AppendRowsResponse, pb::AppendRowsRequest>::default());
                    Ok(grpc.streaming(service, req).await)
                })
            }
            other => {
                let status = Status::unimplemented(format!("the stand-in does not serve {other}"));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

struct Unary<Q, A>(Arc<dyn Fn(Q) -> Result<A, Status> + Send + Sync>);

impl<Q, A> UnaryService<Q> for Unary<Q, A> {
    type Response = A;
    type Future = std::future::Ready<Result<Response<A>, Status>>;

    fn call(&mut self, request: Request<Q>) -> Self::Future {
        std::future::ready((self.0)(request.into_inner()).map(Response::new))
    }
}

fn unary<Q, A>(
    req: http::Request<Body>,
    f: impl Fn(Q) -> Result<A, Status> + Send + Sync + 'static,
) -> BoxFuture<Result<http::Response<Body>, std::convert::Infallible>>
where
    Q: prost::Message + Default + Send + 'static,
    A: prost::Message + Send + 'static,
{
    Box::pin(async move {
        let mut grpc = Grpc::new(tonic_prost::ProstCodec::<A, Q>::default());
        Ok(grpc.unary(Unary(Arc::new(f)), req).await)
    })
}

fn create(state: &Mutex<State>, r: pb::CreateWriteStreamRequest) -> Result<pb::WriteStream, Status> {
    let kind = r.write_stream.map(|w| w.r#type).unwrap_or_default();
    if kind != COMMITTED {
        return Err(Status::unimplemented("the stand-in creates COMMITTED streams only"));
    }
    let mut s = state.lock().unwrap();
    s.created += 1;
    let name = format!("{}/streams/s{}", r.parent, s.created);
    s.streams.insert(
        name.clone(),
        WriteStreamState {
            table: r.parent,
            committed: true,
            len: 0,
            finalized: false,
            appends: 0,
        },
    );
    Ok(pb::WriteStream {
        name,
        r#type: COMMITTED,
        location: String::new(),
    })
}

fn get(state: &Mutex<State>, r: pb::GetWriteStreamRequest) -> Result<pb::WriteStream, Status> {
    let mut s = state.lock().unwrap();
    s.got += 1;
    match s.streams.get(&r.name) {
        Some(w) => Ok(pb::WriteStream {
            name: r.name.clone(),
            r#type: if w.committed { COMMITTED } else { 0 },
            location: String::new(),
        }),
        None => Err(Status::not_found(format!(
            "Requested entity was not found. Entity: {}",
            r.name
        ))),
    }
}

fn finalize(
    state: &Mutex<State>,
    r: pb::FinalizeWriteStreamRequest,
) -> Result<pb::FinalizeWriteStreamResponse, Status> {
    let mut s = state.lock().unwrap();
    s.finalized += 1;
    match s.streams.get_mut(&r.name) {
        Some(w) => {
            w.finalized = true;
            Ok(pb::FinalizeWriteStreamResponse { row_count: w.len })
        }
        None => Err(Status::not_found(format!(
            "Requested entity was not found. Entity: {}",
            r.name
        ))),
    }
}

struct Appends {
    state: Arc<Mutex<State>>,
    faults: Faults,
}

impl StreamingService<pb::AppendRowsRequest> for Appends {
    type Response = pb::AppendRowsResponse;
    type ResponseStream = Answers;
    type Future = BoxFuture<Result<Response<Answers>, Status>>;

    fn call(&mut self, request: Request<tonic::Streaming<pb::AppendRowsRequest>>) -> Self::Future {
        let mut incoming = request.into_inner();
        let (state, faults) = (self.state.clone(), self.faults);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let connection = {
                let mut s = state.lock().unwrap();
                s.connections += 1;
                s.connections
            };
            let mut connection_state = Connection::default();
            let mut index = 0;
            while let Ok(Some(req)) = incoming.message().await {
                let answer = state
                    .lock()
                    .unwrap()
                    .append(connection, index, &mut connection_state, req, faults);
                index += 1;
                let end = answer.is_err();
                if tx.send(answer).await.is_err() || end {
                    break;
                }
            }
        });
        let answers: Answers = Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|answer| (answer, rx))
        }));
        Box::pin(async move { Ok(Response::new(answers)) })
    }
}

#[derive(Default)]
struct Connection {
    write_stream: Option<String>,
    schema: Vec<u8>,
}

fn in_band(write_stream: &str, code: tonic::Code, message: String) -> pb::AppendRowsResponse {
    pb::AppendRowsResponse {
        append_result: None,
        error: Some(pb::RpcStatus {
            code: code as i32,
            message,
        }),
        write_stream: write_stream.into(),
    }
}

impl State {
    /// One AppendRows request of a connection. `Err` closes the connection.
    fn append(
        &mut self,
        connection: usize,
        index: usize,
        c: &mut Connection,
        req: pb::AppendRowsRequest,
        faults: Faults,
    ) -> Result<pb::AppendRowsResponse, Status> {
        let carried_stream = !req.write_stream.is_empty();
        let offset = req.offset.as_ref().map(|o| o.value);
        let mut seen = Seen {
            connection,
            index,
            write_stream: req.write_stream.clone(),
            carried_stream,
            offset,
            rows: 0,
            answer: String::new(),
        };
        let result = self.answer(c, req, faults, &mut seen);
        seen.write_stream = c.write_stream.clone().unwrap_or_default();
        if let Err(status) = &result {
            if seen.answer.is_empty() {
                seen.answer = format!("refused: {}", status.message());
            }
        }
        self.seen.push(seen);
        result
    }

    fn answer(
        &mut self,
        c: &mut Connection,
        req: pb::AppendRowsRequest,
        faults: Faults,
        seen: &mut Seen,
    ) -> Result<pb::AppendRowsResponse, Status> {
        // As BigQuery: the stream (and schema) on the first request of a
        // connection, never again on the same stream.
        let name = match (&c.write_stream, req.write_stream.is_empty()) {
            (None, true) => {
                return Err(Status::invalid_argument(
                    "write_stream must be set on the first request of an AppendRows connection",
                ))
            }
            (None, false) => req.write_stream.clone(),
            (Some(_), false) => {
                return Err(Status::invalid_argument(
                    "write_stream may only be set on the first request of a connection",
                ))
            }
            (Some(name), true) => name.clone(),
        };
        c.write_stream = Some(name.clone());
        let data = req
            .arrow_rows
            .ok_or_else(|| Status::invalid_argument("the stand-in takes Arrow rows only"))?;
        if let Some(schema) = data.writer_schema {
            c.schema = schema.serialized_schema;
        }
        if c.schema.is_empty() {
            return Err(Status::invalid_argument("writer_schema missing on the first request"));
        }
        let batch = data.rows.map(|r| r.serialized_record_batch).unwrap_or_default();
        let ids = record_ids(&c.schema, &batch).map_err(Status::invalid_argument)?;
        seen.rows = ids.len();
        if let Some((after, stored)) = faults.close_after {
            if seen.index == after {
                if stored {
                    let _ = self.store(&name, seen.offset, &ids);
                }
                seen.answer = "closed".into();
                return Err(Status::unavailable("the stand-in closed the connection"));
            }
        }
        let mut lose = false;
        if let Some(w) = self.streams.get_mut(&name).filter(|w| w.committed) {
            lose = faults.lose == Some(w.appends);
            w.appends += 1;
        }
        let answer = match lose {
            true => {
                // Answered as written, but the rows go nowhere and the
                // stream does not advance: the next offset is a gap.
                let offset = self.streams.get(&name).map(|w| w.len);
                seen.answer = "lost".into();
                Ok(offset)
            }
            false => self.store(&name, seen.offset, &ids),
        };
        Ok(match answer {
            Ok(offset) => {
                if seen.answer.is_empty() {
                    seen.answer = "ok".into();
                }
                pb::AppendRowsResponse {
                    append_result: Some(pb::AppendResult {
                        offset: offset.map(|value| pb::Int64Value { value }),
                    }),
                    error: None,
                    write_stream: name,
                }
            }
            Err((code, message)) => {
                seen.answer = match code {
                    tonic::Code::AlreadyExists => "ALREADY_EXISTS".into(),
                    tonic::Code::OutOfRange => "OUT_OF_RANGE".into(),
                    _ => format!("refused: {message}"),
                };
                in_band(&name, code, message)
            }
        })
    }

    /// Appends `ids` to the stream's table; the offset written at (committed
    /// streams) or None (the default stream).
    fn store(&mut self, name: &str, offset: Option<i64>, ids: &[String]) -> Result<Option<i64>, (tonic::Code, String)> {
        let table = match name.strip_suffix("/streams/_default") {
            Some(table) => {
                if offset.is_some() {
                    return Err((
                        tonic::Code::InvalidArgument,
                        "offsets are not supported on the default stream".into(),
                    ));
                }
                self.rows.entry(table.to_string()).or_default().extend_from_slice(ids);
                return Ok(None);
            }
            None => name,
        };
        let Some(w) = self.streams.get_mut(table) else {
            return Err((
                tonic::Code::NotFound,
                format!("Requested entity was not found. Entity: {name}"),
            ));
        };
        if w.finalized {
            return Err((tonic::Code::InvalidArgument, format!("Stream is finalized: {name}")));
        }
        let at = offset.unwrap_or(w.len);
        if at < w.len {
            return Err((
                tonic::Code::AlreadyExists,
                format!("The offset is within stream, expected offset {}, received {at}", w.len),
            ));
        }
        if at > w.len {
            return Err((
                tonic::Code::OutOfRange,
                format!("The offset is beyond stream, expected offset {}, received {at}", w.len),
            ));
        }
        w.len += ids.len() as i64;
        let table = w.table.clone();
        self.rows.entry(table).or_default().extend_from_slice(ids);
        Ok(Some(at))
    }
}

/// The `_source_record_id` of each row of an IPC-encapsulated record batch
/// (the row number when the batch has no such column).
fn record_ids(schema: &[u8], batch: &[u8]) -> Result<Vec<String>, String> {
    use arrow_array::cast::AsArray;
    let mut stream = schema.to_vec();
    stream.extend_from_slice(batch);
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(stream), None)
        .map_err(|e| format!("Arrow schema: {e}"))?;
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| format!("Arrow rows: {e}"))?;
        match batch.column_by_name("_source_record_id") {
            Some(column) => ids.extend(
                column
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.unwrap_or_default().to_string()),
            ),
            None => {
                let base = ids.len();
                ids.extend((0..batch.num_rows()).map(|i| (base + i).to_string()))
            }
        }
    }
    Ok(ids)
}
