//! A message's JSON key or value, checked and made compact in one pass.
//!
//! Bizon round-trips each key and value through `orjson.loads`/`orjson.dumps`:
//! invalid JSON is refused, and what goes into `source_data` has no
//! whitespace outside strings (key order and number text kept). The host
//! used to check with serde_json, then scan for whitespace, then copy: 14% of
//! a Kafka -> `file` run's profile. [`append`] does all three in one pass
//! over the bytes for what messages carry (UTF-8 text, ordinary numbers,
//! nesting below 100), and hands anything else to [`slow`], the serde_json
//! path, which gives the verdict and the error text: the fast path never
//! accepts what serde_json refuses, and writes what the slow path writes.

use std::borrow::Cow;

/// Appends `bytes`, one JSON value, to `out` without whitespace outside its
/// strings; invalid UTF-8 becomes replacement characters first, as Bizon's
/// `decode("utf-8", errors="replace")` does. On an error `out` is unchanged.
pub fn append(bytes: &[u8], out: &mut String) -> Result<(), serde_json::Error> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let before = out.len();
        if Compactor::new(text, out).document() {
            return Ok(());
        }
        out.truncate(before);
    }
    slow(bytes, out)
}

/// serde_json decides, on the text with invalid UTF-8 replaced. Read as a
/// `Value`, not skipped as `IgnoredAny`, which passes numbers unread: `1E400`
/// (past f64, refused by orjson) went into source_data that no JSON reader
/// takes back (found by tests/e2e/fuzz/kafka_json.rs). Rare: the fast path
/// takes ordinary messages.
fn slow(bytes: &[u8], out: &mut String) -> Result<(), serde_json::Error> {
    let text: Cow<'_, str> = String::from_utf8_lossy(bytes);
    serde_json::from_str::<serde_json::Value>(&text)?;
    out.reserve(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\n' | '\r' | '\t') {
            out.push(c);
        }
    }
    Ok(())
}

/// Deeper nesting goes to serde_json, which refuses past 128 levels.
const MAX_DEPTH: usize = 100;

/// A recursive-descent check of `text` that copies it to `out` a run at a
/// time, leaving out the whitespace between tokens. Every method returns
/// false on anything it does not accept for sure (then serde_json decides).
struct Compactor<'a, 'o> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    /// Start of the run not copied yet.
    run: usize,
    depth: usize,
    out: &'o mut String,
}

impl<'a, 'o> Compactor<'a, 'o> {
    fn new(text: &'a str, out: &'o mut String) -> Self {
        Self {
            text,
            bytes: text.as_bytes(),
            at: 0,
            run: 0,
            depth: 0,
            out,
        }
    }

    fn document(mut self) -> bool {
        self.out.reserve(self.text.len());
        self.space();
        if !self.value() {
            return false;
        }
        self.space();
        if self.at != self.bytes.len() {
            return false;
        }
        self.out.push_str(&self.text[self.run..]);
        true
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Skips whitespace, copying the run before it. Called around every
    /// token, mostly where there is none: one compare says so.
    #[inline]
    fn space(&mut self) {
        // JSON's whitespace is ' ', \n, \r and \t, all at or below ' '.
        if self.bytes.get(self.at).is_none_or(|&b| b > b' ') {
            return;
        }
        self.skip_space();
    }

    #[cold]
    fn skip_space(&mut self) {
        if !matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            return;
        }
        self.out.push_str(&self.text[self.run..self.at]);
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
        self.run = self.at;
    }

    fn value(&mut self) -> bool {
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            true
        } else {
            false
        }
    }

    fn object(&mut self) -> bool {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return false;
        }
        self.at += 1;
        self.space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            self.depth -= 1;
            return true;
        }
        loop {
            if self.peek() != Some(b'"') || !self.string() {
                return false;
            }
            self.space();
            if self.peek() != Some(b':') {
                return false;
            }
            self.at += 1;
            self.space();
            if !self.value() {
                return false;
            }
            if let Some(done) = self.after_item(b'}') {
                return done;
            }
        }
    }

    fn array(&mut self) -> bool {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return false;
        }
        self.at += 1;
        self.space();
        if self.peek() == Some(b']') {
            self.at += 1;
            self.depth -= 1;
            return true;
        }
        loop {
            if !self.value() {
                return false;
            }
            if let Some(done) = self.after_item(b']') {
                return done;
            }
        }
    }

    /// After an object's member or an array's element: a comma goes on
    /// (`None`), `close` ends the container (`Some(true)`), anything else
    /// is not JSON (`Some(false)`).
    fn after_item(&mut self, close: u8) -> Option<bool> {
        self.space();
        match self.peek() {
            Some(b',') => {
                self.at += 1;
                self.space();
                None
            }
            Some(c) if c == close => {
                self.at += 1;
                self.depth -= 1;
                Some(true)
            }
            _ => Some(false),
        }
    }

    /// A string from its opening quote. Escapes are checked; a `\u` escape
    /// of a surrogate (whose pairing serde_json checks) and control
    /// characters (which it refuses) go to serde_json. The text is UTF-8
    /// already, so other bytes need no look.
    fn string(&mut self) -> bool {
        self.at += 1;
        loop {
            // Eight bytes at a time up to the first quote, backslash or control.
            while let Some(word) = self.bytes.get(self.at..self.at + 8) {
                let mask = special(u64::from_le_bytes(word.try_into().expect("eight bytes")));
                if mask != 0 {
                    self.at += (mask.trailing_zeros() / 8) as usize;
                    break;
                }
                self.at += 8;
            }
            let Some(b) = self.peek() else { return false };
            self.at += 1;
            match b {
                b'"' => return true,
                b'\\' => {
                    let Some(e) = self.peek() else { return false };
                    self.at += 1;
                    match e {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let Some(hex) = self.bytes.get(self.at..self.at + 4) else {
                                return false;
                            };
                            let Some(unit) = std::str::from_utf8(hex)
                                .ok()
                                .and_then(|h| u16::from_str_radix(h, 16).ok())
                            else {
                                return false;
                            };
                            if hex[0] == b'+' || (0xd800..0xe000).contains(&unit) {
                                return false;
                            }
                            self.at += 4;
                        }
                        _ => return false,
                    }
                }
                0..0x20 => return false,
                _ => {}
            }
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, and sure to
    /// be finite as an f64 (serde_json refuses `1e400`): at most 300 digits
    /// before the point plus the exponent, or serde_json decides.
    fn number(&mut self) -> bool {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let int = self.digits();
        match int {
            0 => return false,
            1 => {}
            _ if self.bytes[self.at - int] == b'0' => return false,
            _ => {}
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return false;
            }
        }
        let mut exponent = 0i64;
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            let negative = match self.peek() {
                Some(b'-') => true,
                Some(b'+') => false,
                _ => false,
            };
            if matches!(self.peek(), Some(b'-' | b'+')) {
                self.at += 1;
            }
            let n = self.digits();
            if n == 0 || n > 4 {
                return false;
            }
            let text = &self.text[self.at - n..self.at];
            exponent = text.parse::<i64>().expect("digits");
            if negative {
                exponent = -exponent;
            }
        }
        int as i64 + exponent <= 300
    }

    fn digits(&mut self) -> usize {
        let from = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - from
    }
}

/// The high bit of each byte of `word` that is `"`, `\` or below 0x20.
fn special(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let zero_bytes = |v: u64| !(((v & LOW7) + LOW7) | v | LOW7);
    zero_bytes(word ^ (ONES * b'"' as u64))
        | zero_bytes(word ^ (ONES * b'\\' as u64))
        | zero_bytes(word & (ONES * 0xe0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(text: &str) -> Option<String> {
        let mut out = String::from("prefix");
        Compactor::new(text, &mut out)
            .document()
            .then(|| out["prefix".len()..].to_string())
    }

    fn slow_text(bytes: &[u8]) -> Result<String, String> {
        let mut out = String::new();
        slow(bytes, &mut out).map(|()| out).map_err(|e| e.to_string())
    }

    /// What the fast path accepts, serde_json accepts, and the text is the
    /// same; what it does not, `append` still answers as serde_json does.
    fn agrees(text: &str) {
        let slow = slow_text(text.as_bytes());
        if let Some(fast) = fast(text) {
            assert_eq!(Ok(fast), slow, "{text:?}");
        }
        let mut out = String::new();
        assert_eq!(
            append(text.as_bytes(), &mut out)
                .map(|()| out)
                .map_err(|e| e.to_string()),
            slow,
            "{text:?}"
        );
    }

    #[test]
    fn takes_what_messages_carry_on_the_fast_path() {
        for text in [
            r#"{"id":7}"#,
            "{ \"a\": [1, 2.50, -0, 1e5, 2E-3, 0.5e+2],\n \"s\": \"x y\\n\\u00e9\\\"\", \"t\": true, \"f\": false, \"z\": null }",
            r#"{"before":null,"after":{"id":1,"email":"user1@example.com","name":"Usér 🦬","tags":["a","b"]}}"#,
            " \t\r\n[ ] ",
            "\"long string with no escapes at all, more than eight bytes\"",
            "-12345678901234567890123",
            "{}",
        ] {
            assert!(fast(text).is_some(), "{text:?}");
            agrees(text);
        }
    }

    #[test]
    fn answers_as_serde_json_on_everything_else() {
        let deep = format!("{}{}", "[".repeat(127), "]".repeat(127));
        let too_deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        let many_digits = "9".repeat(400);
        for text in [
            "",
            "   ",
            "{nope",
            "plain",
            "{\"a\":1,}",
            "[1,]",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "1e400",
            "1e-400",
            "1e99999",
            "tru",
            "nul",
            "{\"a\" 1}",
            "{1:2}",
            "\"tab\tinside\"",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\u+123\"",
            "\"\\ud83e\\udd9b\"",
            "\"\\ud83e\"",
            "\"\\udd9b x\"",
            "\"unterminated",
            "{} {}",
            "[1] x",
            "\u{feff}{}",
            &deep,
            &too_deep,
            &many_digits,
        ] {
            agrees(text);
        }
    }

    #[test]
    fn invalid_utf8_is_replaced_first() {
        let mut out = String::new();
        append(b"{\"a\": \"\xff\"}", &mut out).unwrap();
        assert_eq!(out, "{\"a\":\"\u{fffd}\"}");
        let mut out = String::from("kept");
        assert!(append(b"{\"a\": \xff}", &mut out).is_err());
        assert_eq!(out, "kept", "unchanged on an error");
    }
}
