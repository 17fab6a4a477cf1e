//! The client subcommands' exit statuses, as docs/serve.md gives them: 0 the
//! API answered with success; 1 it answered with an error (unknown name,
//! bad token, input it refused: its message on stderr); 2 the command could
//! not ask (bad arguments or JSON, no token, a file it cannot read, no
//! server at the URL).

use crate::support::bizon_host;
use crate::support::common::free_port;
use crate::support::serve::{Serve, ADMIN};

#[test]
fn client_commands_exit_0_1_or_2_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), "");
    let client = |url: &str, args: &[&str]| {
        let out = bizon_host()
            .args(args)
            .env("BIZON_HOST_URL", url)
            .env_remove("BIZON_HOST_TOKEN")
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stderr)
    };
    let created = bizon_host()
        .args(["tenant", "create", "acme", "--token", ADMIN])
        .env("BIZON_HOST_URL", &serve.url)
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let answer: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let acme = answer["token"].as_str().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "name: p\n").unwrap();
    let down = format!("http://127.0.0.1:{}", free_port());

    let cases: &[(&str, &[&str], i32, &str)] = &[
        (&serve.url, &["tenant", "list", "--token", ADMIN], 0, ""),
        // Answered with an error: 1.
        (
            &serve.url,
            &["tenant", "show", "nobody", "--token", ADMIN],
            1,
            "no tenant named `nobody`",
        ),
        (
            &serve.url,
            &["pipeline", "status", "p", "--token", acme],
            1,
            "no pipeline named `p`",
        ),
        (
            &serve.url,
            &["plugin", "versions", "csv", "--token", acme],
            1,
            "no plugin named `csv`",
        ),
        (
            &serve.url,
            &["tenant", "list", "--token", "wrong"],
            1,
            "Authorization: Bearer",
        ),
        (
            &serve.url,
            &["secret", "list", "--token", "wrong"],
            1,
            "Authorization: Bearer",
        ),
        (&serve.url, &["tenant", "list", "--token", acme], 1, "admin token"),
        (
            &serve.url,
            &["tenant", "limits", "acme", r#"{"nope": 1}"#, "--token", ADMIN],
            1,
            "nope",
        ),
        (
            &serve.url,
            &["pipeline", "put", "p", "bad.yaml", "--token", acme],
            1,
            "source",
        ),
        // Could not ask: 2.
        (
            &serve.url,
            &["tenant", "limits", "acme", "not json", "--token", ADMIN],
            2,
            "not JSON",
        ),
        (&serve.url, &["tenant", "list"], 2, "no token"),
        (
            &serve.url,
            &["pipeline", "put", "p", "missing.yaml", "--token", acme],
            2,
            "cannot read missing.yaml",
        ),
        (
            &serve.url,
            &["plugin", "push", "csv", "missing.wasm", "--token", acme],
            2,
            "cannot read missing.wasm",
        ),
        (&serve.url, &["secret", "put", "s", "--token", acme], 2, "--from-file"),
        (
            &serve.url,
            &["pipeline", "frobnicate", "--token", acme],
            2,
            "unrecognized subcommand",
        ),
        (&down, &["tenant", "list", "--token", ADMIN], 2, "cannot reach"),
        (&down, &["pipeline", "list", "--token", acme], 2, "cannot reach"),
    ];
    for (url, args, code, says) in cases {
        let (got, stderr) = client(url, args);
        assert_eq!(got, Some(*code), "bizon-host {}: {stderr}", args.join(" "));
        assert!(stderr.contains(says), "bizon-host {}: {stderr}", args.join(" "));
    }
}
