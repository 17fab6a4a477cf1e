//! A pipeline file, parsed and checked: Bizon's YAML read unchanged.
//!
//! `name`, `source` (typed by the source registry, `source::config`),
//! `destination` (`name` + `config`, typed by the destination registry),
//! `streams` (injected into the source and destination as Bizon does:
//! [`streams`](super::streams)), `transforms` (checked here, run by
//! `transform`), `dead_letter` (bizon-host's own), and the sections
//! bizon-host reads but does not implement (`engine`, `id`, `alerting`,
//! `monitoring`, `secrets`), reported with a warning. Every error names the
//! file, the line and the field.
//!
//! Parsing goes in passes over the same text: first the source's and the
//! destination's `name`, then each section with the typed config those
//! names call for. Serde's tagged enums would do it in one pass, but they
//! buffer values and lose the line numbers the errors need.

use std::path::Path;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::streams::{self, StreamConfig};
use crate::config::{env, from_yaml, ConfigError, SourceRun};
use crate::dead_letter::DeadLetterConfig;
use crate::destination::{self, DestinationConfig};
use crate::source::config::{self as source_config, SourceConfig};

/// A pipeline, parsed and checked.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub source: SourceConfig,
    pub destination: DestinationConfig,
    /// Where undecodable messages and rejected rows go instead of stopping the run.
    pub dead_letter: Option<DeadLetterConfig>,
    /// Applied in order to every record before buffering.
    #[cfg(feature = "wasm")]
    pub transforms: Vec<crate::transform::TransformSpec>,
    /// Sections of the file that bizon-host reads but does not act on.
    pub ignored_sections: Vec<&'static str>,
    /// Things worth telling the user that do not stop the run.
    pub warnings: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    name: String,
    source: SourceName,
    destination: DestinationName,
    #[serde(default)]
    engine: Option<IgnoredAny>,
    #[cfg(feature = "wasm")]
    #[serde(default)]
    transforms: Option<Vec<crate::transform::TransformEntry>>,
    #[cfg(not(feature = "wasm"))]
    #[serde(default)]
    transforms: Option<IgnoredAny>,
    #[serde(default)]
    streams: Option<Vec<StreamConfig>>,
    #[serde(default)]
    dead_letter: Option<DeadLetterConfig>,
    #[serde(default)]
    id: Option<IgnoredAny>,
    #[serde(default)]
    alerting: Option<IgnoredAny>,
    #[serde(default)]
    monitoring: Option<IgnoredAny>,
    #[serde(default)]
    secrets: Option<IgnoredAny>,
}

/// Just the source's name; the rest of the section is read in a later pass.
#[derive(Deserialize)]
struct SourceName {
    name: Spanned<String>,
}

/// Just the destination's name; its section is read by `destination::parse`.
#[derive(Deserialize)]
struct DestinationName {
    name: Spanned<String>,
}

/// The dead letters' two targets, with the line of `topic` for the error
/// when both are given (the typed config has no lines).
#[derive(Deserialize)]
struct DeadLetterTargets {
    #[serde(default)]
    dead_letter: Option<Targets>,
}

#[derive(Deserialize)]
struct Targets {
    #[serde(default)]
    path: Option<IgnoredAny>,
    #[serde(default)]
    topic: Option<Spanned<String>>,
}

/// The source section's keys that shape what a destination does.
#[derive(Deserialize)]
struct Run {
    source: SourceRun,
}

/// Reads, substitutes and parses a pipeline file.
pub fn load(path: &Path) -> Result<Pipeline, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::at(&file, 0, 0, format!("cannot read the pipeline file: {e}")))?;
    parse(&text, &file, |name| std::env::var(name).ok())
}

/// Parses pipeline text; `file` names it in errors, `lookup` reads the environment.
pub fn parse(text: &str, file: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Pipeline, ConfigError> {
    let text = env::substitute(text, file, lookup)?;
    let names: PipelineFile = from_yaml(&text, file)?;
    let mut warnings = Vec::new();
    let mut source = source_config::parse(&text, file, &names.source.name, &mut warnings)?;
    let mut destination = destination::parse(&text, file, &names.destination.name)?;
    if let Some(streams) = names.streams.as_deref().filter(|s| !s.is_empty()) {
        streams::apply(
            streams,
            file,
            &mut source,
            &mut destination.options_mut().record_schemas,
        )?;
    }
    source_config::check(&source, file, &names.source.name)?;
    if names.dead_letter.is_some() {
        let targets: DeadLetterTargets = from_yaml(&text, file)?;
        if let Some(Targets {
            path: Some(_),
            topic: Some(topic),
        }) = targets.dead_letter
        {
            return Err(ConfigError::spanned(
                file,
                &topic,
                "dead_letter.topic: give `path` (a file) or `topic` (a Kafka topic), not both",
            ));
        }
    }
    destination.options().validate(file)?;
    let run: Run = from_yaml(&text, file)?;
    let options = destination.options_mut();
    options.sync_mode = run.source.sync_mode(file, &names.destination.name.value)?;
    #[cfg(feature = "kafka")]
    {
        options.source_identity = matches!(source, SourceConfig::Kafka(_));
    }
    if options.destination_id.is_none() {
        options.generated_destination_id = Some(run.source.generated_destination_id());
    }
    #[cfg(feature = "wasm")]
    let transforms = crate::transform::check_entries(names.transforms.unwrap_or_default(), &text, file)?;
    let ignored_sections = [
        ("engine", names.engine.is_some()),
        ("id", names.id.is_some()),
        #[cfg(not(feature = "wasm"))]
        ("transforms", names.transforms.is_some()),
        ("alerting", names.alerting.is_some()),
        ("monitoring", names.monitoring.is_some()),
        ("secrets", names.secrets.is_some()),
    ]
    .into_iter()
    .filter_map(|(section, present)| present.then_some(section))
    .collect();
    Ok(Pipeline {
        name: names.name,
        source,
        destination,
        dead_letter: names.dead_letter,
        #[cfg(feature = "wasm")]
        transforms,
        ignored_sections,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    const BASE: &str = "name: p\nsource: {name: dummy, total_records: 1}\ndestination: {name: logger, config: {}}\n";

    #[test]
    fn a_top_level_id_is_tolerated_with_a_warning() {
        let p = super::parse(&format!("id: 7\n{BASE}"), "p.yaml", |_| None).unwrap();
        assert_eq!(p.ignored_sections, vec!["id"]);
    }

    #[test]
    fn dead_letters_to_a_file_and_a_topic_at_once_are_refused_at_the_topic() {
        let text = format!("{BASE}dead_letter:\n  path: dl.jsonl\n  topic: dead\n");
        let e = super::parse(&text, "p.yaml", |_| None).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("p.yaml", 6), "{e}");
        assert!(
            e.message.contains("dead_letter.topic") && e.message.contains("not both"),
            "{e}"
        );
    }
}
