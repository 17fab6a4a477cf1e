//! What a plugin says, made safe to print. A plugin's log lines, output,
//! error strings, rejected-row reasons and describe() fields all end up in
//! the host's log, its terminal or the result JSON. A raw newline there forges
//! a host log line; an escape sequence rewrites the operator's terminal; a
//! bidirectional override hides text. Every such character is shown escaped
//! instead, and the text is cut to a bound.

use std::fmt::Write;

/// [`sanitize`] line by line, for text whose lines matter (a traceback):
/// each line of `text` escaped, at most `max` bytes of it in all.
pub fn sanitize_lines(text: &str, max: usize) -> Vec<String> {
    let mut left = max;
    let mut lines = Vec::new();
    for line in text.split('\n') {
        if left == 0 {
            lines.push(format!("... [truncated: {max} of {} bytes shown]", text.len()));
            break;
        }
        lines.push(sanitize(line, left));
        left = left.saturating_sub(line.len() + 1);
    }
    lines
}

/// `text` with control characters escaped (`\n`, `\r`, `\t`, `\e`, `\u{..}`)
/// and cut to at most `max` bytes of the original, with a note when cut.
pub fn sanitize(text: &str, max: usize) -> String {
    let (kept, cut) = match text.len() <= max {
        true => (text, false),
        false => {
            let mut end = max;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            (&text[..end], true)
        }
    };
    let mut out = String::with_capacity(kept.len() + 16);
    for c in kept.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{1b}' => out.push_str("\\e"),
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    if cut {
        let _ = write!(out, "... [truncated: {} of {} bytes shown]", kept.len(), text.len());
    }
    out
}

/// C0/C1 controls, DEL, and the Unicode format characters that reorder or
/// hide text on a terminal (bidi overrides and isolates, zero-width marks).
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_escaped_one_by_one_and_bounded() {
        assert_eq!(sanitize_lines("a\u{1b}\nb\\n\r", 100), ["a\\e", "b\\n\\r"]);
        let cut = sanitize_lines("abc\ndef\nghi", 5);
        assert_eq!(cut[0], "abc");
        assert!(cut.last().unwrap().contains("truncated"), "{cut:?}");
    }

    #[test]
    fn newlines_and_escapes_cannot_forge_lines_or_drive_the_terminal() {
        let forged = "ok\nINFO done records_written=1000000\r\u{1b}[2K\u{1b}]0;owned\u{7}";
        let safe = sanitize(forged, 4096);
        assert!(!safe.chars().any(|c| c.is_control()), "{safe}");
        assert_eq!(safe, "ok\\nINFO done records_written=1000000\\r\\e[2K\\e]0;owned\\u{7}");
    }

    #[test]
    fn bidi_overrides_and_c1_controls_are_escaped_but_text_is_kept() {
        assert_eq!(sanitize("a\u{202e}b\u{85}c", 100), "a\\u{202e}b\\u{85}c");
        assert_eq!(sanitize("数据 🚀 é", 100), "数据 🚀 é");
    }

    #[test]
    fn cut_on_a_char_boundary_with_a_note() {
        let cut = sanitize("ééé", 3);
        assert!(cut.starts_with("é..."), "{cut}");
        assert!(cut.contains("2 of 6 bytes"), "{cut}");
        assert_eq!(sanitize("short", 10), "short");
    }
}
