use clap::{CommandFactory, Parser};

use super::*;

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("bizon-host").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

#[cfg(feature = "serve")]
#[test]
fn token_and_url_work_after_any_client_subcommand() {
    let remote = |cli: Cli| match cli.command {
        Command::Tenant { remote, .. } | Command::Pipeline { remote, .. } => remote,
        Command::Plugin(plugin::PluginCommand::Remote(
            client::RemotePluginCommand::Push { remote, .. }
            | client::RemotePluginCommand::List { remote }
            | client::RemotePluginCommand::Versions { remote, .. },
        )) => remote,
        other => panic!("not a client command: {other:?}"),
    };
    for args in [
        // README's serve example, as typed there.
        &[
            "tenant",
            "create",
            "acme",
            "--token",
            "T",
            "--limits",
            "{}",
            "--url",
            "http://h:1",
        ][..],
        &["tenant", "--token", "T", "--url", "http://h:1", "list"],
        &[
            "tenant",
            "limits",
            "acme",
            "{\"cpu_cores\": 0.5}",
            "--token",
            "T",
            "--url",
            "http://h:1",
        ],
        &["pipeline", "status", "orders", "--token", "T", "--url", "http://h:1"],
        &["pipeline", "--url", "http://h:1", "logs", "orders", "--token", "T"],
        &[
            "plugin",
            "push",
            "csv",
            "csv.wasm",
            "--token",
            "T",
            "--url",
            "http://h:1",
        ],
        &["plugin", "versions", "csv", "--url", "http://h:1", "--token", "T"],
    ] {
        let remote = remote(parse(args));
        assert_eq!(
            (remote.token.as_deref(), remote.url.as_str()),
            (Some("T"), "http://h:1"),
            "{args:?}"
        );
    }
}

/// Every command says what it does, and a command with subcommands names
/// each of them in its own one-line summary, so `bizon-host --help` shows
/// them all.
#[test]
fn help_summaries_name_every_subcommand() {
    fn walk(command: &clap::Command, path: &str) {
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = format!("{path} {}", sub.get_name());
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            assert!(!about.is_empty(), "`{name}` has no summary for --help");
            let words: Vec<String> = about
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '-')
                .map(str::to_lowercase)
                .collect();
            for child in sub
                .get_subcommands()
                .filter(|s| !s.is_hide_set() && s.get_name() != "help")
            {
                assert!(
                    words.iter().any(|w| w == child.get_name()),
                    "the summary of `{name}` ({about:?}) does not name its subcommand `{}`",
                    child.get_name()
                );
            }
            walk(sub, &name);
        }
    }
    walk(&Cli::command(), "bizon-host");
}

#[test]
fn memory_mb_help_gives_both_defaults() {
    let run = Cli::command();
    let run = run.find_subcommand("run").unwrap();
    let help = run
        .get_arguments()
        .find(|a| a.get_id() == "memory_mb")
        .and_then(|a| a.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    assert!(help.contains("256") && help.contains("512"), "{help}");
}
