//! What the host reads back from a plugin and prints: describe's name and
//! version, error strings, rejected rows' reasons and log lines all go
//! through `plugin::text::sanitize` (tracebacks through `sanitize_lines`)
//! before the host's log, a terminal or the result JSON. For any text and
//! bound: no panic, nothing that could forge a log line or drive a
//! terminal survives, the output is bounded, and safe text is kept as is.

use bizon_host::plugin::text::{sanitize, sanitize_lines};
use proptest::prelude::*;

/// Characters that must never reach the host's output raw: controls (a
/// newline forges a log line, ESC drives the terminal), DEL, C1 controls,
/// and the marks that reorder or hide text.
fn dangerous(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// Text with many of the characters that matter.
fn text() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        4 => any::<char>(),
        2 => prop::sample::select(vec!['\n', '\r', '\t', '\u{1b}', '\u{7f}', '\u{85}', '\u{202e}', '\u{2066}', '\u{200b}', '\u{feff}', 'é', '𝄞', '\\', '"']),
        4 => prop::char::range('a', 'z'),
    ];
    prop::collection::vec(c, 0..300).prop_map(|cs| cs.into_iter().collect())
}

/// The longest a sanitized text of `max` bytes kept can be: each kept
/// byte at most 10 bytes of escape (`\u{10ffff}` for 4 bytes), and the note.
fn bound(max: usize, len: usize) -> usize {
    max.min(len) * 10 + 80
}

proptest! {
    #![proptest_config(super::config(512))]

    #[test]
    fn sanitized_text_holds_nothing_dangerous_and_is_bounded(text in text(), max in 0usize..400) {
        let out = sanitize(&text, max);
        prop_assert!(!out.chars().any(dangerous), "{:?} -> {:?}", text, out);
        prop_assert!(out.len() <= bound(max, text.len()), "{} bytes for max {}", out.len(), max);
        if text.len() <= max && !text.chars().any(dangerous) {
            prop_assert_eq!(&out, &text);
        }
        if text.len() > max {
            prop_assert!(out.ends_with("bytes shown]"), "{:?}", out);
        }
    }

    #[test]
    fn sanitized_lines_hold_nothing_dangerous_and_are_bounded(text in text(), max in 0usize..400) {
        let lines = sanitize_lines(&text, max);
        prop_assert!(lines.len() <= text.split('\n').count() + 1);
        let total: usize = lines.iter().map(String::len).sum();
        prop_assert!(total <= bound(max, text.len()) + 80 * lines.len(), "{} bytes for max {}", total, max);
        for line in &lines {
            prop_assert!(!line.chars().any(dangerous), "{:?}", line);
        }
    }
}
