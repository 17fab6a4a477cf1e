//! Reading a record's JSON text without building a tree: the members of an
//! object as (key, value text) pairs.
//!
//! A transform that moves fields around (a Kafka flatten, a rename) needs
//! where each member starts and ends, not a parsed value. The host checks
//! that every `source_data` it hands a transform is JSON, and checks again
//! what the transform returns, so this does not validate: it only tracks
//! strings and nesting, which is several times cheaper than serde_json's
//! validating parse of the same text. Text that is not JSON gives an error
//! or members that make no sense; it cannot read outside `text`.
//!
//! ```
//! let members: Vec<_> = bizon_sdk::json::members(r#"{"a": 1, "b": {"c": [2]}}"#)
//!     .collect::<Result<_, _>>()
//!     .unwrap();
//! assert_eq!(members, [("a".into(), "1"), ("b".into(), r#"{"c": [2]}"#)]);
//! ```

use std::borrow::Cow;

use crate::Error;

/// The members of the object `text`, in order: each key (unescaped) and its
/// value's JSON text (trimmed). An error when `text` is not an object.
pub fn members(text: &str) -> Members<'_> {
    let text = text.trim();
    match text.strip_prefix('{') {
        Some(_) => Members {
            text,
            at: 1,
            done: false,
        },
        None => Members {
            text,
            at: 0,
            done: false,
        },
    }
}

pub struct Members<'a> {
    text: &'a str,
    at: usize,
    done: bool,
}

impl<'a> Iterator for Members<'a> {
    type Item = Result<(Cow<'a, str>, &'a str), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.member();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

impl<'a> Members<'a> {
    fn member(&mut self) -> Option<Result<(Cow<'a, str>, &'a str), Error>> {
        let bytes = self.text.as_bytes();
        if self.at == 0 {
            return Some(Err(Error::msg("not a JSON object")));
        }
        let mut at = skip_space(bytes, self.at);
        match bytes.get(at) {
            Some(b'}') => return None,
            Some(b'"') => {}
            _ => return Some(Err(Error::msg("not a JSON object: expected a key"))),
        }
        let key_end = match string_end(bytes, at) {
            Some(end) => end,
            None => return Some(Err(Error::msg("not a JSON object: a key is not closed"))),
        };
        let raw_key = &self.text[at + 1..key_end - 1];
        let key = if raw_key.contains('\\') {
            match serde_json::from_str::<String>(&self.text[at..key_end]) {
                Ok(key) => Cow::Owned(key),
                Err(e) => return Some(Err(Error::msg(format!("not a JSON object: a key: {e}")))),
            }
        } else {
            Cow::Borrowed(raw_key)
        };
        at = skip_space(bytes, key_end);
        if bytes.get(at) != Some(&b':') {
            return Some(Err(Error::msg(format!("not a JSON object: no `:` after key `{key}`"))));
        }
        let start = skip_space(bytes, at + 1);
        let end = match value_end(bytes, start) {
            Some(end) if end > start => end,
            _ => {
                return Some(Err(Error::msg(format!(
                    "not a JSON object: the value of `{key}` is not closed"
                ))))
            }
        };
        at = skip_space(bytes, end);
        match bytes.get(at) {
            Some(b',') => self.at = at + 1,
            Some(b'}') => {
                self.at = at;
            }
            _ => {
                return Some(Err(Error::msg(format!(
                    "not a JSON object: expected `,` or `}}` after `{key}`"
                ))))
            }
        }
        Some(Ok((key, self.text[start..end].trim_end())))
    }
}

fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// Just past the closing quote of the string opening at `at`.
fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    None
}

/// Just past the value starting at `at`: a string, an object or array (to
/// its matching bracket), or a scalar (to the next delimiter).
fn value_end(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'"' => string_end(bytes, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            while i < bytes.len() {
                match bytes[i] {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => Some(
            bytes[at..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']'))
                .map_or(bytes.len(), |n| at + n),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Result<Vec<(String, String)>, Error> {
        members(text)
            .map(|m| m.map(|(k, v)| (k.into_owned(), v.to_string())))
            .collect()
    }

    #[test]
    fn members_keep_their_text_and_order() {
        let text = r#" { "z" : "a,}\"b" , "a":[1,{"x":"]"}], "n": -1.5e3 ,"t":true, "o":{} } "#;
        assert_eq!(
            all(text).unwrap(),
            [
                ("z", r#""a,}\"b""#),
                ("a", r#"[1,{"x":"]"}]"#),
                ("n", "-1.5e3"),
                ("t", "true"),
                ("o", "{}")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn escaped_keys_are_unescaped_and_empty_objects_have_none() {
        assert_eq!(
            all(r#"{"a\"b\u00e9":null}"#).unwrap(),
            [("a\"bé".to_string(), "null".to_string())]
        );
        assert!(all("{}").unwrap().is_empty());
        assert!(all(" { } ").unwrap().is_empty());
    }

    #[test]
    fn what_is_not_an_object_is_an_error_not_a_panic() {
        for text in [
            "[1]",
            "1",
            "",
            "{",
            r#"{"a""#,
            r#"{"a":"#,
            r#"{"a":1"#,
            r#"{"a":{"b":1}"#,
            r#"{"a" 1}"#,
            r#"{1:2}"#,
        ] {
            assert!(all(text).is_err(), "{text:?} was taken for an object");
        }
    }
}
