//! The docs' YAML examples, checked by the code that reads them (issue 29:
//! a user copies them literally, so an example the loader refuses is a bug).
//!
//! Every ```yaml block of README.md and docs/*.md, and every pipeline file a
//! shell block writes with `cat > NAME.yaml <<'TAG'`, goes through:
//! - a whole pipeline (top-level `source:` and `destination:`): the pipeline
//!   loader, `bizon_host::pipeline::parse`, as `bizon-host run` and `check` read it;
//! - a pipeline without a `source:` (a `destination:`, `transforms:` or
//!   `dead_letter:` example): the same, completed with a `dummy` source (and
//!   a `logger` destination when it has none);
//! - keys indented by 4 (the `allow:` examples): the same, as the `config`
//!   of a `wasm` destination;
//! - other top-level keys (none of `name`, `source`, `destination`,
//!   `transforms`, `dead_letter`, `streams`): a serve config, through `ServeConfig::load`, which
//!   refuses unknown keys.
//!
//! A warning (an unknown source key, say) fails as an error does. Anything
//! else fails unless the line before the block is
//! `<!-- not checked: REASON -->`. Variables (`${VAR}`, `env://VAR`) read as
//! "placeholder". A failure names the page and the line of the block.
//!
//! And every subcommand clap declares, every flag of `bizon-host`, `run`,
//! `check` and `serve`, and every key the destination, dead-letter and serve
//! configs accept is mentioned in one of those pages; every relative link
//! of them leads to a file and heading of the repository.

use bizon_host::serve::config::ServeConfig;

use crate::support::root;

/// One YAML example: where it is and its text.
struct Example {
    page: String,
    /// 1-based line of the block's first line of YAML.
    line: usize,
    text: String,
    /// The reason a `<!-- not checked: ... -->` marker gives, if any.
    skip: Option<String>,
}

/// The pages a user reads: the README and docs/*.md, in a stable order.
fn pages() -> Vec<String> {
    let mut pages = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The YAML examples of one page's text.
fn examples(page: &str, text: &str) -> Vec<Example> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(lang) = lines[i].trim_start().strip_prefix("```") else {
            i += 1;
            continue;
        };
        let lang = lang.trim();
        let end = (i + 1..lines.len())
            .find(|&j| lines[j].trim() == "```")
            .unwrap_or_else(|| panic!("{page}:{}: a code block that never ends", i + 1));
        let body = &lines[i + 1..end];
        let skip = i
            .checked_sub(1)
            .and_then(|before| lines[before].trim().strip_prefix("<!-- not checked:"))
            .map(|reason| reason.trim_end_matches("-->").trim().to_string());
        if let Some(reason) = &skip {
            assert!(!reason.is_empty(), "{page}:{i}: `not checked` needs a reason");
        }
        match lang {
            "yaml" | "yml" => found.push(Example {
                page: page.to_string(),
                line: i + 2,
                text: body.join("\n"),
                skip,
            }),
            "sh" | "bash" | "" => found.extend(heredocs(page, i + 2, body, &skip)),
            _ => {}
        }
        i = end + 1;
    }
    found
}

/// Pipeline files a shell block writes: `cat > NAME.yaml <<'TAG'` ... `TAG`.
fn heredocs(page: &str, first_line: usize, body: &[&str], skip: &Option<String>) -> Vec<Example> {
    let mut found = Vec::new();
    let mut k = 0;
    while k < body.len() {
        let line = body[k].trim();
        let opens_yaml = line.starts_with("cat >") && (line.contains(".yaml <<") || line.contains(".yml <<"));
        if !opens_yaml {
            k += 1;
            continue;
        }
        let tag = line
            .rsplit("<<")
            .next()
            .unwrap()
            .trim()
            .trim_start_matches('-')
            .trim_matches(['\'', '"']);
        let end = (k + 1..body.len())
            .find(|&j| body[j].trim() == tag)
            .unwrap_or_else(|| panic!("{page}:{}: here-document `{tag}` never ends", first_line + k));
        found.push(Example {
            page: page.to_string(),
            line: first_line + k + 1,
            text: body[k + 1..end].join("\n"),
            skip: skip.clone(),
        });
        k = end + 1;
    }
    found
}

/// The keys at the block's top level (column 0, comments aside).
fn top_level_keys(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with([' ', '#', '-']) && !l.trim().is_empty())
        .filter_map(|l| l.split_once(':').map(|(key, _)| key.trim()))
        .collect()
}

/// Checks one example; `Err` says why it is refused. What the loader reports
/// names the page and the page's line: the text is preceded by as many empty
/// lines as the page has before it (after what completes a fragment).
fn check(example: &Example) -> Result<(), String> {
    let text = &example.text;
    let keys = top_level_keys(text);
    let has = |key: &str| keys.contains(&key);
    let placed = |prefix: &str| {
        let blank = (example.line - 1).saturating_sub(prefix.lines().count());
        format!("{prefix}{}{text}\n", "\n".repeat(blank))
    };
    let page = example.page.as_str();
    let pipeline_keys = ["name", "source", "destination", "transforms", "dead_letter", "streams"];
    let pipeline = if !keys.is_empty() && !pipeline_keys.iter().any(|k| has(k)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.yaml");
        std::fs::write(&path, placed("")).unwrap();
        return ServeConfig::load(&path)
            .map(drop)
            .map_err(|e| e.to_string().replace(&path.display().to_string(), page));
    } else if has("source") && has("destination") {
        placed("")
    } else if !keys.is_empty() && !has("source") {
        let mut prefix = String::new();
        if !has("name") {
            prefix.push_str("name: docs\n");
        }
        prefix.push_str("source: {name: dummy}\n");
        if !has("destination") {
            prefix.push_str("destination: {name: logger}\n");
        }
        placed(&prefix)
    } else if keys.is_empty() && text.lines().any(|l| l.starts_with("    ") && !l.starts_with("     ")) {
        placed("name: docs\nsource: {name: dummy}\ndestination:\n  name: wasm\n  config:\n    plugin: docs.wasm\n")
    } else {
        return Err(
            "neither a pipeline nor a serve config: complete it, or mark it `<!-- not checked: REASON -->`".to_string(),
        );
    };
    let parsed =
        bizon_host::pipeline::parse(&pipeline, page, |_| Some("placeholder".to_string())).map_err(|e| e.to_string())?;
    // An unknown source key is only a warning to a user (as in Bizon), but
    // in an example it is a typo or a key that no longer exists.
    match parsed.warnings.as_slice() {
        [] => Ok(()),
        warnings => Err(format!("warnings: {}", warnings.join("; "))),
    }
}

#[test]
fn every_yaml_example_passes_the_loader() {
    let mut checked = 0;
    let mut skipped = 0;
    let mut failures = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(root().join(&page)).unwrap();
        for example in examples(&page, &text) {
            if example.skip.is_some() {
                skipped += 1;
                continue;
            }
            checked += 1;
            if let Err(e) = check(&example) {
                failures.push(format!("the block at {}:{}: {e}", example.page, example.line));
            }
        }
    }
    eprintln!("docs: {checked} YAML examples checked, {skipped} marked not checked");
    assert!(
        checked >= 10,
        "only {checked} YAML examples found: is the extraction broken?"
    );
    assert!(
        failures.is_empty(),
        "YAML examples the loader refuses:\n{}",
        failures.join("\n")
    );
}

/// The extraction itself: a marker skips the block after it, a here-document's
/// line numbers are the page's, and a broken example is refused with its place.
#[test]
fn a_broken_example_is_named_by_page_and_line() {
    let page = "intro\n\n```yaml\nname: a\nsource: {name: dummy}\ndestination: {name: file, config: {bufer_size: 5}}\n```\n\n<!-- not checked: needs a real project -->\n```yaml\nname: b\n```\n\n```sh\ncat > p.yaml <<'YAML'\nname: c\nsource: {name: dummy}\ndestination: {name: logger}\nYAML\n```\n";
    let found = examples("page.md", page);
    assert_eq!(found.len(), 3);
    assert_eq!((found[0].line, found[0].skip.as_deref()), (4, None));
    assert_eq!(found[1].skip.as_deref(), Some("needs a real project"));
    assert_eq!(found[2].line, 16);
    let refused = check(&found[0]).unwrap_err();
    assert!(
        refused.starts_with("page.md:6:") && refused.contains("bufer_size"),
        "{refused}"
    );
    check(&found[2]).unwrap();
}

/// The README and docs/*.md, as one text.
fn all_pages() -> String {
    pages()
        .iter()
        .map(|page| std::fs::read_to_string(root().join(page)).unwrap())
        .collect()
}

/// Whether `docs` has `words` not followed by more of a word or a flag.
fn mentions(docs: &str, words: &str) -> bool {
    docs.match_indices(words).any(|(at, _)| {
        let next = docs[at + words.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// Every subcommand clap declares (but the hidden ones and `help`) is
/// mentioned with its parent, as `bizon-host run`, `tenant list`, ...
#[test]
fn every_subcommand_is_documented() {
    use clap::CommandFactory;

    fn walk(parent: &clap::Command, out: &mut Vec<String>) {
        for sub in parent
            .get_subcommands()
            .filter(|c| !c.is_hide_set() && c.get_name() != "help")
        {
            out.push(format!("{} {}", parent.get_name(), sub.get_name()));
            walk(sub, out);
        }
    }
    let docs = all_pages();
    let mut commands = Vec::new();
    walk(&bizon_host::cli::Cli::command().name("bizon-host"), &mut commands);
    assert!(
        commands.len() >= 20,
        "only {} subcommands found: {commands:?}",
        commands.len()
    );
    let missing: Vec<&String> = commands.iter().filter(|c| !mentions(&docs, c)).collect();
    assert!(
        missing.is_empty(),
        "subcommands no page of README.md or docs/*.md mentions: {missing:?}"
    );
}

/// Every flag of `bizon-host`, `run`, `check` and `serve` (as clap declares
/// them, so a new flag is caught) is mentioned, as `--flag`, in the README or
/// docs/*.md.
#[test]
fn every_flag_of_run_check_and_serve_is_documented() {
    use clap::CommandFactory;

    let docs = all_pages();
    let cli = bizon_host::cli::Cli::command();
    let commands = [("bizon-host", &cli)]
        .into_iter()
        .chain(["run", "check", "serve"].map(|name| {
            let command = cli
                .find_subcommand(name)
                .unwrap_or_else(|| panic!("no `{name}` subcommand"));
            (name, command)
        }));
    let mut missing = Vec::new();
    let mut checked = Vec::new();
    for (name, command) in commands {
        for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
            let Some(long) = arg.get_long() else { continue };
            let flag = format!("--{long}");
            if matches!(long, "help" | "version") {
                continue;
            }
            checked.push(format!("{name} {flag}"));
            if !mentions(&docs, &flag) {
                missing.push(format!("{name} {flag}"));
            }
        }
    }
    eprintln!("docs: {} flags checked: {}", checked.len(), checked.join(", "));
    assert!(checked.len() >= 10, "only {} flags found: {checked:?}", checked.len());
    assert!(
        missing.is_empty(),
        "flags no page of README.md or docs/*.md mentions:\n{}",
        missing.join("\n")
    );
}

/// GitHub's anchor of a heading: lower case, punctuation dropped but `-` and
/// `_`, spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every relative link of the README and docs/*.md names a file of the
/// repository, and its `#anchor` a heading of that page: a doc leans only
/// on what a reader of the repository can open.
#[test]
fn every_relative_link_resolves() {
    let mut checked = 0;
    let mut broken = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(root().join(&page)).unwrap();
        let dir = root().join(&page).parent().unwrap().to_path_buf();
        for (n, line) in text.lines().enumerate() {
            // The notes this project was built from are not in the repository.
            if line.contains("REFERENCE") {
                broken.push(format!(
                    "{page}:{}: cites REFERENCE, which is not in the repository",
                    n + 1
                ));
            }
            for (at, _) in line.match_indices("](") {
                let rest = &line[at + 2..];
                let Some(target) = rest.split(')').next() else { continue };
                if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
                    continue;
                }
                checked += 1;
                let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
                let path = if file.is_empty() {
                    root().join(&page)
                } else {
                    dir.join(file)
                };
                if !path.exists() {
                    broken.push(format!("{page}:{}: {target}: no such file", n + 1));
                    continue;
                }
                if fragment.is_empty() || path.extension().is_none_or(|e| e != "md") {
                    continue;
                }
                let target_text = std::fs::read_to_string(&path).unwrap();
                let found = target_text
                    .lines()
                    .filter_map(|l| l.strip_prefix('#').map(|h| h.trim_start_matches('#')))
                    .any(|h| anchor(h) == fragment);
                if !found {
                    broken.push(format!("{page}:{}: {target}: no such heading", n + 1));
                }
            }
        }
    }
    assert!(checked >= 20, "only {checked} relative links found");
    assert!(broken.is_empty(), "links that lead nowhere:\n{}", broken.join("\n"));
}

/// The keys a config section accepts, as the code says: the loader's answer
/// to an unknown key `zzz` there ("expected one of a, b, ...").
fn accepted_keys(section: &str, refused: Result<(), String>) -> Vec<String> {
    let error = refused.expect_err(section);
    let (_, list) = error
        .split_once("expected one of ")
        .unwrap_or_else(|| panic!("{section}: no list of keys in {error:?}"));
    list.split(", ")
        .map(|key| key.trim().trim_matches('`').to_string())
        .collect()
}

/// Every key of the destinations' configs (the common options, each
/// destination's own, wasm `limits`/`allow`, `retry`, `record_schemas`),
/// of `dead_letter` and of the serve config and its
/// tenant limits is mentioned in README.md or docs/*.md. The keys come from
/// the code, so a new one fails here until it is documented.
#[test]
fn every_config_key_is_documented() {
    let pipeline = |destination: &str, extra: &str| {
        let text = format!("name: x\nsource: {{name: dummy}}\ndestination: {destination}\n{extra}");
        bizon_host::pipeline::parse(&text, "keys.yaml", |_| None)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let serve = |text: &str| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.yaml");
        std::fs::write(&path, text).unwrap();
        ServeConfig::load(&path).map(drop).map_err(|e| e.to_string())
    };
    let mut sections: Vec<(String, Result<(), String>)> = [
        "file",
        "logger",
        "wasm",
        "bigquery",
        "bigquery_streaming",
        "bigquery_streaming_v2",
    ]
    .iter()
    .map(|name| {
        (
            format!("{name} config"),
            pipeline(&format!("{{name: {name}, config: {{zzz: 1}}}}"), ""),
        )
    })
    .collect();
    let wasm = |inner: &str| pipeline(&format!("{{name: wasm, config: {{plugin: a.wasm, {inner}}}}}"), "");
    sections.extend([
        ("wasm limits".to_string(), wasm("limits: {zzz: 1}")),
        ("wasm allow".to_string(), wasm("allow: {zzz: 1}")),
        ("wasm allow.network".to_string(), wasm("allow: {network: {zzz: 1}}")),
        (
            "wasm allow.dirs[]".to_string(),
            wasm("allow: {dirs: [{host: ., zzz: 1}]}"),
        ),
        (
            "retry".to_string(),
            pipeline("{name: file, config: {retry: {zzz: 1}}}", ""),
        ),
        (
            "record_schemas[]".to_string(),
            pipeline("{name: file, config: {record_schemas: [{zzz: 1}]}}", ""),
        ),
        (
            "dead_letter".to_string(),
            pipeline("{name: file}", "dead_letter: {zzz: 1}\n"),
        ),
        ("serve config".to_string(), serve("zzz: 1\n")),
        ("tenant limits".to_string(), serve("limits: {zzz: 1}\n")),
    ]);
    let docs = all_pages();
    let documented = |key: &str| {
        docs.match_indices(key).any(|(at, _)| {
            let before = docs[..at].chars().next_back();
            let after = docs[at + key.len()..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            !word(before) && !word(after)
        })
    };
    let mut missing = Vec::new();
    let mut checked = 0;
    for (section, refused) in sections {
        for key in accepted_keys(&section, refused) {
            checked += 1;
            if !documented(&key) {
                missing.push(format!("{section}: {key}"));
            }
        }
    }
    eprintln!("docs: {checked} config keys checked");
    assert!(
        missing.is_empty(),
        "config keys no page of README.md or docs/*.md mentions:\n{}",
        missing.join("\n")
    );
}
