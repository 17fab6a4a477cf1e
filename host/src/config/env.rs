//! Environment substitution in a pipeline file, done on the text before it is
//! parsed so that line numbers in later errors stay those of the file.
//!
//! `${VAR}` is replaced by the value of `VAR`; `BIZON_ENV_NAME` written as a
//! whole word is replaced by the value of the variable `BIZON_ENV_NAME`, which
//! is how Bizon users pass secrets. A missing variable is an error that names
//! the line.

use super::ConfigError;

pub fn substitute(text: &str, file: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let line_no = index + 1;
        let mut rest = line;
        while !rest.is_empty() {
            let dollar = rest.find("${");
            let bizon = find_bizon_env(rest);
            match (dollar, bizon) {
                (Some(d), b) if b.is_none_or(|b| d < b) => {
                    out.push_str(&rest[..d]);
                    let after = &rest[d + 2..];
                    let Some(end) = after.find('}') else {
                        return Err(ConfigError::at(file, line_no, d + 1, "`${` without a closing `}`"));
                    };
                    let name = &after[..end];
                    out.push_str(&value_of(name, file, line_no, d + 1, &lookup)?);
                    rest = &after[end + 1..];
                }
                (_, Some(b)) => {
                    out.push_str(&rest[..b]);
                    let end = rest[b..]
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .map_or(rest.len(), |e| b + e);
                    out.push_str(&value_of(&rest[b..end], file, line_no, b + 1, &lookup)?);
                    rest = &rest[end..];
                }
                (None, None) => {
                    out.push_str(rest);
                    rest = "";
                }
                (Some(_), None) => unreachable!("covered by the first arm"),
            }
        }
    }
    Ok(out)
}

/// Start of a `BIZON_ENV_` word that is not part of a longer identifier.
fn find_bizon_env(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find("BIZON_ENV_").map(|i| i + from) {
        let prev_ok = s[..i].chars().next_back().is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        if prev_ok {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

fn value_of(
    name: &str,
    file: &str,
    line: usize,
    column: usize,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    lookup(name).ok_or_else(|| {
        ConfigError::at(file, line, column, format!("environment variable `{name}` is not set"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "BIZON_ENV_KEY" => Some("k".into()),
            _ => None,
        }
    }

    #[test]
    fn replaces_dollar_braces_and_bizon_env_words() {
        let out = substitute("a: ${TOKEN}\nb: BIZON_ENV_KEY\nc: x${TOKEN}y\n", "p.yml", env).unwrap();
        assert_eq!(out, "a: s3cret\nb: k\nc: xs3crety\n");
    }

    #[test]
    fn leaves_longer_identifiers_alone() {
        let out = substitute("a: MY_BIZON_ENV_KEY\n", "p.yml", env).unwrap();
        assert_eq!(out, "a: MY_BIZON_ENV_KEY\n");
    }

    #[test]
    fn missing_variable_names_file_and_line() {
        let err = substitute("a: 1\nb: ${NOPE}\n", "p.yml", env).unwrap_err();
        assert_eq!(err.to_string(), "p.yml:2:4: environment variable `NOPE` is not set");
    }
}
