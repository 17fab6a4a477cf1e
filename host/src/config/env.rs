//! Environment substitution in a pipeline file, done on the text before it is
//! parsed so that line numbers in later errors stay those of the file.
//!
//! The forms Bizon resolves (tests/fixtures/bizon/FACTS.md, section d):
//! `env://VAR` as a whole value, `${env://VAR}` inside a string, and a value
//! that is a `BIZON_ENV_...` word, read from the variable of that name. We
//! also take plain `${VAR}`, which Bizon rejects as malformed. A missing
//! variable is an error naming the line: Bizon turns a missing `BIZON_ENV_`
//! into null, which then fails somewhere less clear.
//!
//! A value is inserted bare when it is a plain word or number (so
//! `buffer_size: env://SIZE` stays a number) and as a quoted YAML string
//! otherwise, so that JSON service-account keys and the like cannot change the
//! structure of the file.

use super::ConfigError;

pub fn substitute(text: &str, file: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        substitute_line(line, index + 1, file, &lookup, &mut out)?;
    }
    Ok(out)
}

/// A reference found in a line: its byte range and the variable it names.
struct Reference<'a> {
    start: usize,
    end: usize,
    name: &'a str,
}

fn substitute_line(
    line: &str,
    line_no: usize,
    file: &str,
    lookup: &impl Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<(), ConfigError> {
    let mut pos = 0;
    while let Some(r) = next_reference(line, pos, file, line_no)? {
        out.push_str(&line[pos..r.start]);
        let value = lookup(r.name).ok_or_else(|| {
            ConfigError::at(
                file,
                line_no,
                r.start + 1,
                format!("environment variable `{}` is not set", r.name),
            )
        })?;
        out.push_str(&render(&value, quote_context(&line[..r.start])));
        pos = r.end;
    }
    out.push_str(&line[pos..]);
    Ok(())
}

fn next_reference<'a>(
    line: &'a str,
    from: usize,
    file: &str,
    line_no: usize,
) -> Result<Option<Reference<'a>>, ConfigError> {
    let rest = &line[from..];
    let candidates = [
        rest.find("${"),
        find_word(rest, "env://"),
        find_word(rest, "BIZON_ENV_"),
    ];
    let Some(start) = candidates.into_iter().flatten().min() else {
        return Ok(None);
    };
    let at = from + start;
    let tail = &line[at..];
    if let Some(inner) = tail.strip_prefix("${") {
        let close = inner
            .find('}')
            .ok_or_else(|| ConfigError::at(file, line_no, at + 1, "`${` without a closing `}`"))?;
        let body = inner[..close].trim();
        let name = body.strip_prefix("env://").unwrap_or(body).trim();
        if name.is_empty() || !name.chars().all(is_name_char) {
            return Err(ConfigError::at(
                file,
                line_no,
                at + 1,
                format!("`${{{body}}}` is not a reference; expected `${{env://NAME}}` or `${{NAME}}`"),
            ));
        }
        return Ok(Some(Reference {
            start: at,
            end: at + 2 + close + 1,
            name,
        }));
    }
    let name_from = if tail.starts_with("env://") {
        at + "env://".len()
    } else {
        at
    };
    let name_len = line[name_from..]
        .find(|c: char| !is_name_char(c))
        .unwrap_or(line.len() - name_from);
    Ok(Some(Reference {
        start: at,
        end: name_from + name_len,
        name: &line[name_from..name_from + name_len],
    }))
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Start of `word` where it is not the tail of a longer identifier.
fn find_word(s: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find(word).map(|i| i + from) {
        if s[..i].chars().next_back().is_none_or(|c| !is_name_char(c)) {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

#[derive(Clone, Copy, PartialEq)]
enum Quote {
    None,
    Single,
    Double,
}

/// Whether the text before a reference leaves it inside a quoted scalar.
fn quote_context(before: &str) -> Quote {
    let mut state = Quote::None;
    let mut chars = before.chars().peekable();
    while let Some(c) = chars.next() {
        state = match (state, c) {
            (Quote::None, '"') => Quote::Double,
            (Quote::None, '\'') => Quote::Single,
            (Quote::Double, '\\') => {
                chars.next();
                Quote::Double
            }
            (Quote::Double, '"') | (Quote::Single, '\'') => Quote::None,
            (s, _) => s,
        };
    }
    state
}

fn render(value: &str, quote: Quote) -> String {
    match quote {
        Quote::Double => {
            let json = serde_json::to_string(value).expect("a string serializes");
            json[1..json.len() - 1].to_string()
        }
        Quote::Single => value.replace('\'', "''"),
        Quote::None if !value.is_empty() && value.chars().all(|c| is_name_char(c) || ".+-/@".contains(c)) => {
            value.to_string()
        }
        Quote::None => serde_json::to_string(value).expect("a string serializes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "BIZON_ENV_KEY" => Some("k".into()),
            "SIZE" => Some("5".into()),
            "SA_KEY" => Some(r#"{"type": "service_account", "key": "a\nb"}"#.into()),
            _ => None,
        }
    }

    #[test]
    fn resolves_every_form_bizon_knows_and_plain_dollar_braces() {
        let text = "a: ${env://TOKEN}\nb: BIZON_ENV_KEY\nc: x${TOKEN}y\nd: env://SIZE\ne: \"pre-${env://TOKEN}\"\n";
        let out = substitute(text, "p.yml", env).unwrap();
        assert_eq!(out, "a: s3cret\nb: k\nc: xs3crety\nd: 5\ne: \"pre-s3cret\"\n");
    }

    #[test]
    fn structured_values_are_quoted_so_yaml_keeps_its_shape() {
        let out = substitute("key: env://SA_KEY\n", "p.yml", env).unwrap();
        let parsed: std::collections::BTreeMap<String, String> = serde_saphyr::from_str(&out).unwrap();
        assert_eq!(parsed["key"], env("SA_KEY").unwrap());
    }

    #[test]
    fn leaves_longer_identifiers_and_other_schemes_alone() {
        let out = substitute("a: MY_BIZON_ENV_KEY\nb: https://x.y\n", "p.yml", env).unwrap();
        assert_eq!(out, "a: MY_BIZON_ENV_KEY\nb: https://x.y\n");
    }

    #[test]
    fn missing_variable_names_file_and_line() {
        let err = substitute("a: 1\nb: ${env://NOPE}\n", "p.yml", env).unwrap_err();
        assert_eq!(err.to_string(), "p.yml:2:4: environment variable `NOPE` is not set");
        let err = substitute("a: ${foo://bar}\n", "p.yml", env).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("p.yml:1:4: `${foo://bar}` is not a reference"),
            "{err}"
        );
    }
}
