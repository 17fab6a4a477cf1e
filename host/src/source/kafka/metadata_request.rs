//! One Kafka Metadata request (version 1, no topics) on a plaintext TCP
//! connection: the brokers a cluster advertises, asked without a client
//! library that would go on to connect to them (`advertised.rs` says why).
//! Hand-written because it is two dozen bytes each way; a Kafka protocol
//! crate would be a dependency for one request.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Metadata's API key, and the version asked: v1 is the first where an
/// empty topic list means none (v0: all), so the answer is the brokers.
const METADATA: i16 = 3;
const VERSION: i16 = 1;
const CORRELATION_ID: i32 = 1;
/// Larger answers are refused: a broker list is a few hundred bytes.
const MAX_RESPONSE: usize = 1 << 20;

/// (node id, host, port) of each broker, from the first of `servers`
/// (`host:port,host:port`) that answers within `timeout`.
pub fn brokers(servers: &str, timeout: Duration) -> Result<Vec<(i32, String, i32)>, String> {
    let deadline = Instant::now() + timeout;
    let servers: Vec<&str> = servers.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let mut last = "no bootstrap server".to_string();
    for server in &servers {
        match ask(server, deadline) {
            Ok(brokers) => return Ok(brokers),
            // The caller names the servers; which one failed, when several.
            Err(e) if servers.len() > 1 => last = format!("{server}: {e}"),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The time left before `deadline`, or the error that says it passed.
fn left(deadline: Instant) -> Result<Duration, String> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "timed out".to_string())
}

fn ask(server: &str, deadline: Instant) -> Result<Vec<(i32, String, i32)>, String> {
    let addr = resolve(server, left(deadline)?)?;
    let mut stream = TcpStream::connect_timeout(&addr, left(deadline)?).map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(left(deadline)?))
        .map_err(|e| e.to_string())?;
    stream.write_all(&request()).map_err(|e| e.to_string())?;
    let mut size = [0u8; 4];
    read_by(&mut stream, &mut size, deadline)?;
    let size = usize::try_from(i32::from_be_bytes(size)).map_err(|_| "a negative response size")?;
    if size > MAX_RESPONSE {
        return Err(format!("a {size}-byte metadata response"));
    }
    let mut body = vec![0u8; size];
    read_by(&mut stream, &mut body, deadline)?;
    parse(&body)
}

/// The first address of `server`, looked up on a thread of its own: the
/// system resolver takes no timeout, and a name server that never answers
/// must not hold a pipeline's start (or the API thread that checks a
/// dead-letter topic) past the deadline. A lookup given up on ends on its
/// own, answering nobody.
fn resolve(server: &str, within: Duration) -> Result<SocketAddr, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let name = server.to_string();
    std::thread::Builder::new()
        .name("kafka-resolve".into())
        .spawn(move || {
            let _ = tx.send(name.to_socket_addrs().map(|mut a| a.next()));
        })
        .map_err(|e| e.to_string())?;
    match rx.recv_timeout(within) {
        Ok(Ok(Some(addr))) => Ok(addr),
        Ok(Ok(None)) => Err("no address".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out looking up its address".into()),
    }
}

/// Fills `buf` by `deadline`: a read timeout holds for one read, so a
/// broker sending a byte at a time would otherwise stretch it per byte.
fn read_by(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<(), String> {
    let mut filled = 0;
    while filled < buf.len() {
        stream
            .set_read_timeout(Some(left(deadline)?))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err("the connection closed mid-response".into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A read timeout is EAGAIN on Linux: say what it means.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err("timed out".into())
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

fn request() -> Vec<u8> {
    let client_id = b"bizon-host";
    let mut body = Vec::new();
    body.extend(METADATA.to_be_bytes());
    body.extend(VERSION.to_be_bytes());
    body.extend(CORRELATION_ID.to_be_bytes());
    body.extend((client_id.len() as i16).to_be_bytes());
    body.extend(client_id);
    body.extend(0i32.to_be_bytes());
    let mut framed = (body.len() as i32).to_be_bytes().to_vec();
    framed.extend(body);
    framed
}

/// The brokers of a Metadata v1 response (the rest is not read).
fn parse(body: &[u8]) -> Result<Vec<(i32, String, i32)>, String> {
    let mut r = Reader(body);
    if r.i32()? != CORRELATION_ID {
        return Err("the response answers another request".into());
    }
    let count = r.i32()?;
    let mut brokers = Vec::new();
    for _ in 0..count.max(0) {
        let id = r.i32()?;
        let host = r.string()?.ok_or("a broker without a host")?;
        let port = r.i32()?;
        let _rack = r.string()?;
        brokers.push((id, host, port));
    }
    Ok(brokers)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or("a metadata response cut short")?;
        self.0 = rest;
        Ok(*head)
    }

    fn i32(&mut self) -> Result<i32, String> {
        self.take::<4>().map(i32::from_be_bytes)
    }

    fn string(&mut self) -> Result<Option<String>, String> {
        let len = i16::from_be_bytes(self.take::<2>()?);
        let Ok(len) = usize::try_from(len) else { return Ok(None) };
        if self.0.len() < len {
            return Err("a metadata response cut short".into());
        }
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(Some(String::from_utf8_lossy(text).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_gives_its_brokers_and_a_short_one_is_an_error() {
        let mut body = CORRELATION_ID.to_be_bytes().to_vec();
        body.extend(2i32.to_be_bytes());
        for (id, host, port, rack) in [(0i32, "10.0.0.5", 9092i32, None), (1, "169.254.169.254", 80, Some("r"))] {
            body.extend(id.to_be_bytes());
            body.extend((host.len() as i16).to_be_bytes());
            body.extend(host.as_bytes());
            body.extend(port.to_be_bytes());
            match rack {
                Some(r) => {
                    body.extend((r.len() as i16).to_be_bytes());
                    body.extend(r.as_bytes());
                }
                None => body.extend((-1i16).to_be_bytes()),
            }
        }
        let brokers = parse(&body).unwrap();
        assert_eq!(
            brokers,
            vec![(0, "10.0.0.5".into(), 9092), (1, "169.254.169.254".into(), 80)]
        );
        assert!(parse(&body[..body.len() - 3]).is_err());
    }

    #[test]
    fn a_broker_answering_a_byte_at_a_time_is_given_up_on_at_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            let mut answer = 200i32.to_be_bytes().to_vec();
            answer.extend([0u8; 200]);
            for byte in answer {
                if peer.write_all(&[byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let started = Instant::now();
        let error = brokers(&server, Duration::from_millis(400)).unwrap_err();
        // Each byte comes well within the timeout; the whole answer would
        // take ten seconds.
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        assert!(error.contains("timed out"), "{error}");
    }
}
