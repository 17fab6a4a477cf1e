//! The frames between bizon-host and the bridge child: a 4-byte
//! little-endian length, then the payload, whose first byte says what it is
//! (child.py lists them). A page is one JSON array of columns, decoded here
//! on the reader thread into the records the pipeline takes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::record::SourceRecord;

/// The version of the frames; child.py's `PROTOCOL`.
pub const PROTOCOL: u32 = 1;
/// The largest frame accepted. A page of 1,000 records of 100 KB is 100 MB;
/// a length past this is text read as a length (four ASCII bytes are at
/// least 0x20202020, 538 MB).
const MAX_FRAME: usize = 512 << 20;

pub fn write_frame(out: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    let length = u32::try_from(payload.len() + 1).map_err(|_| io::Error::other("frame too large"))?;
    out.write_all(&length.to_le_bytes())?;
    out.write_all(&[kind])?;
    out.write_all(payload)?;
    out.flush()
}

/// What the child says.
#[derive(Debug)]
pub enum Incoming {
    Hello(Hello),
    Started(Started),
    Page(Vec<SourceRecord>),
    Done(Done),
    Checked(Checked),
    Failed(ChildFailure),
}

#[derive(Debug, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub bizon: String,
    pub python: String,
}

#[derive(Debug, Deserialize)]
pub struct Started {
    pub source_class: String,
    pub total_records: Option<u64>,
    pub incremental: bool,
}

#[derive(Debug, Deserialize)]
pub struct Done {
    pub iterations: u64,
    pub records: u64,
    /// Bizon's incremental state after this run (`next_state`, else the previous one).
    pub state: Box<RawValue>,
}

#[derive(Debug, Deserialize)]
pub struct Checked {
    pub ok: bool,
    pub error: Option<String>,
}

/// The source's own error, as the child caught it.
#[derive(Debug, Deserialize)]
pub struct ChildFailure {
    pub message: String,
    pub traceback: String,
    pub hint: Option<String>,
}

#[derive(Debug)]
pub enum ReadError {
    /// The child closed its end: it exited or is about to.
    Eof,
    Io(io::Error),
    /// Bytes that are not a frame of this protocol.
    Garbage(String),
}

/// A page's columns: ids, source_data (kept as the exact text orjson wrote),
/// timestamps, and destination_ids (`null` when no record names one).
#[derive(Deserialize)]
struct PageColumns<'a>(
    #[serde(borrow)] Vec<Cow<'a, str>>,
    #[serde(borrow)] Vec<&'a RawValue>,
    #[serde(borrow)] Vec<Cow<'a, str>>,
    #[serde(borrow)] Option<Vec<Option<Cow<'a, str>>>>,
);

pub struct FrameReader<R> {
    inner: BufReader<R>,
    frames: u64,
    buf: Vec<u8>,
    /// destination_ids seen, shared between the records naming them.
    destinations: HashMap<String, Arc<str>>,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner: BufReader::with_capacity(1 << 16, inner),
            frames: 0,
            buf: Vec::new(),
            destinations: HashMap::new(),
        }
    }

    pub fn next(&mut self) -> Result<Incoming, ReadError> {
        let mut head = [0u8; 4];
        read_all(&mut self.inner, &mut head, true)?;
        let length = u32::from_le_bytes(head) as usize;
        if length == 0 || length > MAX_FRAME {
            // What came with it (already read, so this cannot block) shows what it was.
            let mut shown = head.to_vec();
            let more = self.inner.buffer();
            shown.extend_from_slice(&more[..more.len().min(60)]);
            return Err(self.garbage(&shown, format!("a frame length of {length} bytes")));
        }
        self.buf.resize(length, 0);
        read_all(&mut self.inner, &mut self.buf, false)?;
        let frame = self.frames;
        self.frames += 1;
        let (kind, payload) = (self.buf[0], &self.buf[1..]);
        if frame == 0 && !matches!(kind, b'H' | b'E') {
            let mut shown = head.to_vec();
            shown.extend_from_slice(&self.buf[..self.buf.len().min(60)]);
            return Err(self.garbage(&shown, "output before the bridge's hello".into()));
        }
        let decoded = match kind {
            b'H' => json(payload).map(Incoming::Hello),
            b'S' => json(payload).map(Incoming::Started),
            b'D' => json(payload).map(Incoming::Done),
            b'K' => json(payload).map(Incoming::Checked),
            b'E' => json(payload).map(Incoming::Failed),
            b'P' => page(payload, &mut self.destinations).map(Incoming::Page),
            other => Err(format!("unknown frame kind 0x{other:02x}")),
        };
        decoded.map_err(|e| ReadError::Garbage(format!("frame {frame} ({}): {e}", kind_name(kind))))
    }

    fn garbage(&self, bytes: &[u8], what: String) -> ReadError {
        ReadError::Garbage(format!(
            "{what} at frame {}; the bytes: \"{}\"",
            self.frames,
            bytes.escape_ascii()
        ))
    }
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        b'H' => "hello",
        b'S' => "started",
        b'P' => "page",
        b'D' => "done",
        b'K' => "check",
        b'E' => "error",
        _ => "unknown",
    }
}

/// Fills `buf`; an end of stream before the first byte of a frame
/// (`at_start`) is `Eof`, inside one it is garbage.
fn read_all(inner: &mut impl BufRead, buf: &mut [u8], at_start: bool) -> Result<(), ReadError> {
    let mut filled = 0;
    while filled < buf.len() {
        match inner.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 && at_start => return Err(ReadError::Eof),
            Ok(0) => {
                return Err(ReadError::Garbage(format!(
                    "the output ended inside a frame, after \"{}\"",
                    buf[..filled.min(60)].escape_ascii()
                )))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(())
}

fn json<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(payload).map_err(|e| e.to_string())
}

fn page(payload: &[u8], destinations: &mut HashMap<String, Arc<str>>) -> Result<Vec<SourceRecord>, String> {
    let PageColumns(ids, data, times, dests) = json(payload)?;
    let n = ids.len();
    if data.len() != n || times.len() != n || dests.as_ref().is_some_and(|d| d.len() != n) {
        return Err(format!(
            "columns of different lengths ({n} ids, {} data, {} timestamps)",
            data.len(),
            times.len()
        ));
    }
    let mut dests = dests.map(Vec::into_iter);
    let mut records = Vec::with_capacity(n);
    for ((id, data), time) in ids.into_iter().zip(data).zip(times) {
        let timestamp_us =
            timestamp_us(&time).ok_or_else(|| format!("record `{id}`: timestamp `{time}` not understood"))?;
        let destination_id = dests.as_mut().and_then(|d| d.next().flatten()).map(|name| {
            destinations
                .entry(name.into_owned())
                .or_insert_with_key(|k| Arc::from(k.as_str()))
                .clone()
        });
        records.push(SourceRecord {
            id: id.into_owned(),
            timestamp_us,
            data: data.get().to_string(),
            destination_id,
        });
    }
    Ok(records)
}

/// orjson's datetime text, `YYYY-MM-DDTHH:MM:SS[.ffffff][+HH:MM|Z]`, as
/// microseconds since the epoch; a time without a zone is UTC, as Bizon's
/// `Datetime(time_zone="UTC")` column takes it.
fn timestamp_us(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0i64, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros = 0;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        // Micro- or finer: what is past the microsecond is dropped, as Bizon's column does.
        for (i, d) in fraction[..digits].iter().enumerate().take(6) {
            micros += i64::from(d - b'0') * 10i64.pow(5 - i as u32);
        }
        rest = &fraction[digits..];
    }
    let offset_s = match rest {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let minutes = i64::from(h1 - b'0') * 600
                + i64::from(h2 - b'0') * 60
                + i64::from(m1 - b'0') * 10
                + i64::from(m2 - b'0');
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    Some(seconds * 1_000_000 + micros)
}

/// Howard Hinnant's civil-to-days algorithm (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_orjson_timestamps() {
        assert_eq!(timestamp_us("1970-01-01T00:00:00"), Some(0));
        assert_eq!(timestamp_us("1970-01-01T00:00:01.5+00:00"), Some(1_500_000));
        assert_eq!(
            timestamp_us("2026-12-07T05:30:23.249199+00:00"),
            Some(1_796_621_423_249_199)
        );
        // The same instant written in another zone.
        assert_eq!(
            timestamp_us("2026-12-07T07:30:23.249199+02:00"),
            timestamp_us("2026-12-07T05:30:23.249199Z")
        );
        assert_eq!(timestamp_us("1969-12-31T23:59:59.999999"), Some(-1));
        assert_eq!(timestamp_us("2026-13-07T05:30:23"), None);
        assert_eq!(timestamp_us("not a time at all!!"), None);
    }

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, kind, payload).unwrap();
        out
    }

    #[test]
    fn decodes_a_page_keeping_the_data_text() {
        let mut bytes = frame(b'H', br#"{"protocol":1,"bizon":"0.6.4","python":"3.11.7"}"#);
        bytes.extend(frame(
            b'P',
            br#"[["1","2"],[{"a":1,"b":"x"},{"a":2.50}],["2026-12-07T05:30:23+00:00","2026-12-07T05:30:23.5"],[null,"t"]]"#,
        ));
        let mut reader = FrameReader::new(&bytes[..]);
        assert!(matches!(reader.next(), Ok(Incoming::Hello(h)) if h.bizon == "0.6.4"));
        let Ok(Incoming::Page(records)) = reader.next() else {
            panic!("a page")
        };
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].data, r#"{"a":1,"b":"x"}"#);
        assert_eq!(records[1].data, r#"{"a":2.50}"#);
        assert_eq!(records[1].timestamp_us - records[0].timestamp_us, 500_000);
        assert_eq!(records[0].destination_id, None);
        assert_eq!(records[1].destination_id.as_deref(), Some("t"));
        assert!(matches!(reader.next(), Err(ReadError::Eof)));
    }

    #[test]
    fn text_instead_of_frames_is_garbage_that_shows_the_bytes() {
        let mut reader = FrameReader::new(&b"hello from a print()\n"[..]);
        let Err(ReadError::Garbage(message)) = reader.next() else {
            panic!("garbage")
        };
        assert!(message.contains("hell"), "{message}");
        // A length that fits, then something that is not a hello.
        let mut bytes = frame(b'P', b"[]");
        bytes.extend(frame(b'H', b"{}"));
        let Err(ReadError::Garbage(message)) = FrameReader::new(&bytes[..]).next() else {
            panic!("garbage")
        };
        assert!(message.contains("before the bridge's hello"), "{message}");
        // Columns that do not line up.
        let mut bytes = frame(b'H', br#"{"protocol":1,"bizon":"0.6.4","python":"3"}"#);
        bytes.extend(frame(b'P', br#"[["1"],[],[],null]"#));
        let mut reader = FrameReader::new(&bytes[..]);
        reader.next().unwrap();
        let Err(ReadError::Garbage(message)) = reader.next() else {
            panic!("garbage")
        };
        assert!(
            message.contains("frame 1 (page): columns of different lengths"),
            "{message}"
        );
    }
}
