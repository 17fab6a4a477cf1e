//! The guest's stdout and stderr. They never reach the host's own streams
//! (stdout may carry a pipeline's data); both land in a small buffer that
//! keeps the latest bytes. After a call the buffer goes to the plugin log,
//! and after a trap its tail (a Rust guest prints its panic message there
//! before aborting) goes into the error.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept per instance between two reads of the buffer.
pub const CAPTURE_BYTES: usize = 16 * 1024;

#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Tail>>);

#[derive(Default)]
struct Tail {
    bytes: VecDeque<u8>,
    discarded: usize,
}

impl Captured {
    fn push(&self, data: &[u8]) {
        let mut tail = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Writing never fails: a guest whose write errors may panic while
        // printing its panic, and lose the message we want.
        let data = if data.len() > CAPTURE_BYTES {
            tail.discarded += data.len() - CAPTURE_BYTES;
            &data[data.len() - CAPTURE_BYTES..]
        } else {
            data
        };
        let overflow = (tail.bytes.len() + data.len()).saturating_sub(CAPTURE_BYTES);
        tail.bytes.drain(..overflow);
        tail.discarded += overflow;
        tail.bytes.extend(data);
    }

    /// What was written since the last take, as text, and how many earlier
    /// bytes were dropped to keep the buffer small.
    pub fn take(&self) -> (String, usize) {
        let mut tail = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let bytes: Vec<u8> = tail.bytes.drain(..).collect();
        (
            String::from_utf8_lossy(&bytes).into_owned(),
            std::mem::take(&mut tail.discarded),
        )
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
        Ok(CAPTURE_BYTES)
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
    fn keeps_the_latest_bytes_and_counts_the_rest() {
        let captured = Captured::default();
        captured.push(&vec![b'a'; CAPTURE_BYTES]);
        captured.push(b"panicked at boom");
        let (text, discarded) = captured.take();
        assert_eq!(text.len(), CAPTURE_BYTES);
        assert!(text.ends_with("panicked at boom"));
        assert_eq!(discarded, "panicked at boom".len());
        assert_eq!(captured.take(), (String::new(), 0));
    }
}
