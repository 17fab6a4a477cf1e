//! `transforms:` in a pipeline file: Bizon's `{label, python}` entries and
//! bizon-host's `{label, wasm: PATH, config, allow}` ones, each remembering
//! where it is written so that every error names the file and line.

use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::ConfigError;
use crate::plugin::{Grants, Limits};

/// One entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransformEntry {
    label: Spanned<String>,
    #[serde(default)]
    python: Option<Spanned<String>>,
    #[serde(default)]
    wasm: Option<Spanned<PathBuf>>,
    /// A component transform's `open` argument.
    #[serde(default)]
    config: Option<serde_json::Value>,
    #[serde(default)]
    allow: Option<Grants>,
    #[serde(default)]
    limits: Option<Limits>,
}

/// Where a transform's text is: its file, and the line of its first line of
/// code (a `python` entry) or of its `label`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// An error at this location.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.file, self.line, self.column, message)
    }
}

/// One transform, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformSpec {
    pub label: String,
    pub kind: TransformKind,
    pub at: Location,
    pub limits: Limits,
    pub allow: Grants,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TransformKind {
    /// Bizon's: code exec'd per record. `first_line` is the file line of the
    /// code's line 1, so a SyntaxError's line maps back to the file.
    Python { code: String, first_line: usize },
    /// A component exporting `bizon:destination/transform`; `config_json`
    /// is its `open` argument. `named` is how messages name it when not by
    /// its path (`serve`: the tenant's `NAME@VERSION`, not where the host
    /// keeps its bytes).
    Wasm {
        path: PathBuf,
        config_json: String,
        named: Option<String>,
    },
}

impl TransformSpec {
    /// The file line of line `line` (1-based) of a Python transform's code.
    pub fn code_line(&self, line: usize) -> usize {
        match &self.kind {
            TransformKind::Python { first_line, .. } => first_line + line.saturating_sub(1),
            TransformKind::Wasm { .. } => self.at.line,
        }
    }
}

/// Checks the entries; `text` is the file's text, to tell a block scalar
/// (`python: |`, code from the next line) from an inline one.
pub(crate) fn check(entries: Vec<TransformEntry>, text: &str, file: &str) -> Result<Vec<TransformSpec>, ConfigError> {
    let mut specs: Vec<TransformSpec> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let label = entry.label.value.trim().to_string();
        let at = |span: &serde_saphyr::Location| Location {
            file: file.to_string(),
            line: span.line() as usize,
            column: span.column() as usize,
        };
        let label_at = at(&entry.label.referenced);
        if label.is_empty() {
            return Err(label_at.error(format!("transforms[{i}].label: must not be empty")));
        }
        if let Some(other) = specs.iter().find(|s| s.label == label) {
            return Err(label_at.error(format!(
                "transforms[{i}].label: `{label}` is also the label of the transform at line {}; labels name transforms in errors, so they must differ",
                other.at.line
            )));
        }
        let kind = match (entry.python, entry.wasm) {
            (Some(code), None) => {
                if entry.config.is_some() {
                    return Err(label_at.error(format!(
                        "transforms[{i}].config: only a `wasm` transform takes a config"
                    )));
                }
                let line = code.referenced.line() as usize;
                let block = text
                    .lines()
                    .nth(line.saturating_sub(1))
                    .and_then(|l| l.get(code.referenced.column().saturating_sub(1) as usize..))
                    .is_some_and(|rest| rest.starts_with(['|', '>']));
                TransformKind::Python {
                    code: code.value,
                    first_line: if block { line + 1 } else { line },
                }
            }
            (None, Some(path)) => {
                let config_json = match entry.config {
                    None | Some(serde_json::Value::Null) => "{}".to_string(),
                    Some(value @ serde_json::Value::Object(_)) => value.to_string(),
                    Some(_) => {
                        return Err(at(&path.referenced).error(format!("transforms[{i}].config: must be a mapping")))
                    }
                };
                TransformKind::Wasm {
                    path: path.value,
                    config_json,
                    named: None,
                }
            }
            (Some(_), Some(_)) => {
                return Err(label_at.error(format!(
                    "transforms[{i}] (`{label}`): give `python` (code) or `wasm` (a component), not both"
                )))
            }
            (None, None) => {
                return Err(label_at.error(format!(
                    "transforms[{i}] (`{label}`): give `python` (code run per record, as Bizon) or `wasm` (a transform component)"
                )))
            }
        };
        let at = match &kind {
            TransformKind::Python { first_line, .. } => Location {
                line: *first_line,
                ..label_at
            },
            TransformKind::Wasm { .. } => label_at,
        };
        specs.push(TransformSpec {
            label,
            kind,
            at,
            limits: entry.limits.unwrap_or_default(),
            allow: entry.allow.unwrap_or_default(),
        });
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Vec<TransformSpec>, ConfigError> {
        let entries: Vec<TransformEntry> = serde_saphyr::from_str(yaml).unwrap();
        check(entries, yaml, "p.yaml")
    }

    #[test]
    fn python_code_lines_map_to_the_file() {
        let yaml = "- label: a\n  python: |\n    x = 1\n    data['x'] = x\n- label: b\n  python: data['y'] = 2\n";
        let specs = parse(yaml).unwrap();
        assert_eq!(specs[0].code_line(2), 4);
        assert_eq!(specs[1].code_line(1), 6);
        assert_eq!(specs[0].at.line, 3);
    }

    #[test]
    fn an_entry_needs_exactly_one_kind_and_a_unique_label() {
        let err = parse("- label: a\n").unwrap_err();
        assert!(err.to_string().starts_with("p.yaml:1:"), "{err}");
        assert!(err.message.contains("give `python`"), "{err}");
        let err = parse("- label: a\n  python: x\n- label: a\n  python: y\n").unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        let err = parse("- label: a\n  wasm: t.wasm\n  config: [1]\n").unwrap_err();
        assert!(err.message.contains("must be a mapping"), "{err}");
    }
}
