//! The guest's stdout and stderr. They never reach the host's own streams
//! (stdout may carry a pipeline's data); both land in a small buffer that
//! keeps the first and the latest bytes of each call. After a call the buffer
//! goes to the plugin log, and after a trap it goes into the error: a Rust
//! guest prints its panic message there before aborting, and a long message
//! must still show its `panicked at` head as well as its end.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use parking_lot::Mutex;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept from the start of each call's output.
pub const HEAD_BYTES: usize = 4 * 1024;
/// Bytes kept from the end of each call's output.
pub const TAIL_BYTES: usize = 12 * 1024;

#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Tail>>);

#[derive(Default)]
struct Tail {
    head: Vec<u8>,
    bytes: VecDeque<u8>,
    discarded: usize,
}

impl Captured {
    fn push(&self, mut data: &[u8]) {
        let mut tail = self.0.lock();
        // Writing never fails: a guest whose write errors may panic while
        // printing its panic, and lose the message we want.
        let room = HEAD_BYTES - tail.head.len();
        if room > 0 {
            let (first, rest) = data.split_at(room.min(data.len()));
            tail.head.extend_from_slice(first);
            data = rest;
        }
        let data = if data.len() > TAIL_BYTES {
            tail.discarded += data.len() - TAIL_BYTES;
            &data[data.len() - TAIL_BYTES..]
        } else {
            data
        };
        let overflow = (tail.bytes.len() + data.len()).saturating_sub(TAIL_BYTES);
        tail.bytes.drain(..overflow);
        tail.discarded += overflow;
        tail.bytes.extend(data);
    }

    /// What was written since the last take, as text (the head, a line
    /// saying how many bytes were dropped in between, the tail), and how
    /// many bytes were dropped.
    pub fn take(&self) -> (String, usize) {
        let mut tail = self.0.lock();
        let head = std::mem::take(&mut tail.head);
        let rest: Vec<u8> = tail.bytes.drain(..).collect();
        let discarded = std::mem::take(&mut tail.discarded);
        let mut text = String::from_utf8_lossy(&head).into_owned();
        if discarded > 0 {
            text.push_str(&format!("\n[... {discarded} byte(s) of output dropped ...]\n"));
        }
        text.push_str(&String::from_utf8_lossy(&rest));
        (text, discarded)
    }
}

impl IsTerminal for Captured {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Captured {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Captured {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Captured {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(HEAD_BYTES + TAIL_BYTES)
    }
}

impl tokio::io::AsyncWrite for Captured {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_and_latest_bytes_and_counts_the_rest() {
        let captured = Captured::default();
        captured.push(b"panicked at src/lib.rs:1:1:\n");
        captured.push(&vec![b'a'; 10 * (HEAD_BYTES + TAIL_BYTES)]);
        captured.push(b"the end");
        let (text, discarded) = captured.take();
        assert!(text.starts_with("panicked at src/lib.rs:1:1:"), "{}", &text[..40]);
        assert!(text.ends_with("the end"));
        assert_eq!(
            discarded,
            10 * (HEAD_BYTES + TAIL_BYTES) + 7 + 28 - HEAD_BYTES - TAIL_BYTES
        );
        assert!(text.contains(&format!("[... {discarded} byte(s) of output dropped ...]")));
        assert_eq!(captured.take(), (String::new(), 0));
    }
}
