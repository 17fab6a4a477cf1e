//! Bizon's NDJSON lines, written by hand: this is the hot loop of the `file`
//! destination, and a generic JSON writer spends its time on what is the same
//! for every row.

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, PrimitiveArray, RecordBatch, StringArray};
use arrow_schema::ArrowError;

use super::time::write_iso8601_us;
use super::{
    bizon_schema, BIZON_EXTRACTED_AT, BIZON_ID, BIZON_LOADED_AT, SOURCE_DATA, SOURCE_RECORD_ID, SOURCE_TIMESTAMP,
};

/// Appends one line per row: the keys, order and timestamp text of Bizon's
/// `file` destination (`source_data` as a JSON string, no destination_id).
/// Batches in another layout (under `unnest`) go through arrow-json.
pub fn write_lines(records: &RecordBatch, out: &mut Vec<u8>) -> Result<(), ArrowError> {
    if records.schema() != bizon_schema() {
        let mut writer = arrow_json::LineDelimitedWriter::new(out);
        writer.write(records)?;
        return writer.finish();
    }
    let text = |name| records.column_by_name(name).expect("Bizon layout").as_string::<i32>();
    let time = |name| {
        records
            .column_by_name(name)
            .expect("Bizon layout")
            .as_primitive::<TimestampMicrosecondType>()
    };
    let (bizon_id, record_id, data) = (text(BIZON_ID), text(SOURCE_RECORD_ID), text(SOURCE_DATA));
    let mut extracted = Timestamps::new(time(BIZON_EXTRACTED_AT));
    let mut loaded = Timestamps::new(time(BIZON_LOADED_AT));
    let mut source_ts = Timestamps::new(time(SOURCE_TIMESTAMP));
    out.reserve(records.num_rows() * 200 + data.values().len() * 5 / 4);
    for row in 0..records.num_rows() {
        field(out, br#"{"bizon_id":"#, bizon_id, row);
        extracted.field(out, br#","bizon_extracted_at":""#, row);
        loaded.field(out, br#","bizon_loaded_at":""#, row);
        field(out, br#","source_record_id":"#, record_id, row);
        source_ts.field(out, br#","source_timestamp":""#, row);
        field(out, br#","source_data":"#, data, row);
        out.extend_from_slice(b"}\n");
    }
    Ok(())
}

fn field(out: &mut Vec<u8>, key: &[u8], column: &StringArray, row: usize) {
    out.extend_from_slice(key);
    if column.is_null(row) {
        out.extend_from_slice(b"null");
    } else {
        write_json_string(column.value(row), out);
    }
}

/// A timestamp column whose rows mostly repeat the previous value (a page's
/// extraction time, a flush's load time): each distinct value is formatted once.
struct Timestamps<'a> {
    column: &'a PrimitiveArray<TimestampMicrosecondType>,
    last: Option<i64>,
    text: Vec<u8>,
}

impl<'a> Timestamps<'a> {
    fn new(column: &'a PrimitiveArray<TimestampMicrosecondType>) -> Self {
        Self {
            column,
            last: None,
            text: Vec::with_capacity(32),
        }
    }

    fn field(&mut self, out: &mut Vec<u8>, key_and_quote: &[u8], row: usize) {
        if self.column.is_null(row) {
            out.extend_from_slice(&key_and_quote[..key_and_quote.len() - 1]);
            out.extend_from_slice(b"null");
            return;
        }
        let us = self.column.value(row);
        if self.last != Some(us) {
            self.last = Some(us);
            self.text.clear();
            write_iso8601_us(us, &mut self.text);
        }
        out.extend_from_slice(key_and_quote);
        out.extend_from_slice(&self.text);
        out.push(b'"');
    }
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it: only `"`,
/// `\` and controls below 0x20 (JSON requires no more).
///
/// `source_data` is JSON text, with a quote every 5-10 bytes, so the usual
/// scan that copies the run before each byte to escape spends its time in
/// small copies. Instead eight bytes are read at once, every `"` and `\` in
/// them found from one mask, and the word stored whole after each backslash
/// put in (the next store overwrites what lies past the next escape): about
/// one store per escape and one per word. Controls, rare in JSON text, are
/// escaped a byte at a time from the word that holds the first one.
pub fn write_json_string(s: &str, out: &mut Vec<u8>) {
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    const ABOVE_0X1F: u64 = ONES * 0xe0;
    let bytes = s.as_bytes();
    let start = out.len();
    // Every byte escaped as two, the quotes, and a word of slack for the stores.
    out.resize(start + 2 * bytes.len() + 2 + 8, 0);
    out[start] = b'"';
    let mut o = start + 1;
    let mut i = 0;
    while i + 8 <= bytes.len() {
        let word = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("eight bytes"));
        if zero_bytes(word & ABOVE_0X1F) != 0 {
            break;
        }
        let mut mask = zero_bytes(word ^ QUOTES) | zero_bytes(word ^ BACKSLASHES);
        let mut from = 0;
        while mask != 0 {
            let at = (mask.trailing_zeros() / 8) as usize;
            out[o..o + 8].copy_from_slice(&(word >> (8 * from)).to_le_bytes());
            o += at - from;
            out[o] = b'\\';
            o += 1;
            from = at;
            mask &= mask - 1;
        }
        out[o..o + 8].copy_from_slice(&(word >> (8 * from)).to_le_bytes());
        o += 8 - from;
        i += 8;
    }
    if i < bytes.len() {
        // The last bytes, or all from a control character on: up to six each.
        let room = o + 6 * (bytes.len() - i) + 1;
        if out.len() < room {
            out.resize(room, 0);
        }
        for &b in &bytes[i..] {
            if needs_escape(b) {
                let escape = escape_of(b).as_bytes();
                out[o..o + escape.len()].copy_from_slice(escape);
                o += escape.len();
            } else {
                out[o] = b;
                o += 1;
            }
        }
    }
    out[o] = b'"';
    out.truncate(o + 1);
}

/// [`write_json_string`] onto a `String` (headers: short, few escapes).
pub fn push_json_string(s: &str, out: &mut String) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        if needs_escape(b) {
            out.push_str(&s[run..i]);
            out.push_str(escape_of(b));
            run = i + 1;
        }
    }
    out.push_str(&s[run..]);
    out.push('"');
}

fn needs_escape(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// The escape sequence of a byte [`needs_escape`] accepts.
fn escape_of(b: u8) -> &'static str {
    const CONTROLS: [&str; 32] = [
        "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007", "\\b", "\\t", "\\n",
        "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f", "\\u0010", "\\u0011", "\\u0012", "\\u0013", "\\u0014",
        "\\u0015", "\\u0016", "\\u0017", "\\u0018", "\\u0019", "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e",
        "\\u001f",
    ];
    match b {
        b'"' => "\\\"",
        b'\\' => "\\\\",
        _ => CONTROLS[b as usize],
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// The high bit of each zero byte of `v`, and no other bit ("Determine if a
/// word has a zero byte", in the exact form that does not carry into the
/// next byte).
fn zero_bytes(v: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !(((v & LOW7) + LOW7) | v | LOW7)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = Vec::new();
        write_json_string(s, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_exactly_as_a_json_serializer_does() {
        let cases = [
            "",
            "plain ascii text that is long enough",
            r#"{"id":1,"name":"bizon-1","tags":["a","b"]}"#,
            "back\\slash and \"quotes\" at the end\"",
            "controls \u{0}\u{1}\u{8}\u{c}\n\r\t\u{1f} and \u{7f}",
            "unicode: é 漢字 🦬 e\u{301}",
            "\"\"\"\"\"\"\"\"\"",
        ];
        for s in cases {
            assert_eq!(escaped(s), serde_json::to_string(s).unwrap(), "{s:?}");
            assert_eq!(serde_json::from_str::<String>(&escaped(s)).unwrap(), s);
        }
    }

    #[test]
    fn escapes_random_text_as_serde_json_does() {
        let alphabet: Vec<char> = "ab\"\\\n\u{1}\u{1f} é漢🦬{}:,".chars().collect();
        let mut rng = fastrand::Rng::with_seed(24);
        for _ in 0..20_000 {
            let len = rng.usize(0..40);
            let s: String = (0..len).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
            let mut out = b"kept".to_vec();
            write_json_string(&s, &mut out);
            assert_eq!(&out[..4], b"kept");
            assert_eq!(
                std::str::from_utf8(&out[4..]).unwrap(),
                serde_json::to_string(&s).unwrap(),
                "{s:?}"
            );
            let mut text = String::new();
            push_json_string(&s, &mut text);
            assert_eq!(text, serde_json::to_string(&s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn lines_have_bizons_keys_in_bizons_order() {
        let mut builder = crate::record::RecordBuilder::new("users".into());
        let mut ids = crate::record::BizonIdGenerator::new();
        let record = crate::record::SourceRecord {
            id: "7".into(),
            timestamp_us: 1_714_566_600_000_000,
            data: r#"{"a":"b"}"#.into(),
            destination_id: None,
        };
        builder.append(&mut ids, 1_714_566_600_123_456, &record);
        let batch = builder.finish(1_714_566_601_000_000).unwrap();
        let mut out = Vec::new();
        write_lines(&batch, &mut out).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        let keys = [
            "bizon_id",
            "bizon_extracted_at",
            "bizon_loaded_at",
            "source_record_id",
            "source_timestamp",
            "source_data",
        ];
        let at: Vec<usize> = keys.iter().map(|k| text.find(&format!("\"{k}\":")).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "keys out of Bizon's order: {text}");
        let line: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&out).unwrap();
        assert_eq!(line.len(), keys.len());
        assert_eq!(line["bizon_extracted_at"], "2024-05-01T12:30:00.123456+00:00");
        assert_eq!(line["bizon_loaded_at"], "2024-05-01T12:30:01+00:00");
        assert_eq!(line["source_data"], r#"{"a":"b"}"#);
        assert!(out.ends_with(b"}\n"));
    }
}
