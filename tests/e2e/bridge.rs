//! End-to-end: Bizon's own sources through the bridge (docs/bridge.md), with
//! real CPython and Bizon 0.6.4 from .venv-bizon (scripts/install-bizon.sh):
//! a custom source gives the records Bizon gives, incremental runs start
//! where the last successful one ended, and a child that fails, crashes,
//! hangs, writes garbage or is stopped ends the run as it should.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{bizon_host, require_tool, root, signal, stderr, wait_until};

fn repo(path: &str) -> PathBuf {
    root().join(path)
}

/// The Python with Bizon 0.6.4; a test without it fails, saying how to get it.
fn bizon_python() -> PathBuf {
    require_tool(
        "Bizon 0.6.4's Python",
        &[repo(".venv-bizon/bin/python")],
        "bash scripts/install-bizon.sh",
    )
}

/// A directory holding the shop source (tests/fixtures/bridge) and a pipeline.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            repo("tests/fixtures/bridge/shop_source.py"),
            dir.path().join("shop_source.py"),
        )
        .unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `pipeline.yaml`: the shop source with `settings` (indented
    /// under `source:`) into the file destination `shop_items`.
    fn pipeline(&self, settings: &str, sync_mode: &str) {
        let settings: String = settings.lines().map(|l| format!("  {l}\n")).collect();
        let yaml = format!(
            "name: shop\nsource:\n  name: shop\n  stream: items\n  source_file_path: shop_source.py\n  \
             sync_mode: {sync_mode}\n{settings}destination:\n  name: file\n  config:\n    destination_id: shop_items\n"
        );
        std::fs::write(self.path("pipeline.yaml"), yaml).unwrap();
    }

    fn host(&self, args: &[&str]) -> Command {
        let mut command = bizon_host();
        command
            .env_remove("VIRTUAL_ENV")
            .env_remove("BIZON_HOST_PYTHON")
            .arg("--python")
            .arg(bizon_python())
            .args(args)
            .current_dir(self.dir.path());
        command
    }

    fn run(&self) -> Output {
        self.host(&["run", "pipeline.yaml"]).output().unwrap()
    }

    /// source_record_id -> source_data, from a file destination's output.
    fn written(&self, name: &str) -> BTreeMap<String, String> {
        let text = std::fs::read_to_string(self.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut records = BTreeMap::new();
        for line in text.lines() {
            let line: Value = serde_json::from_str(line).unwrap();
            let id = line["source_record_id"].as_str().unwrap().to_string();
            let data = line["source_data"].as_str().unwrap().to_string();
            assert!(records.insert(id.clone(), data).is_none(), "{id} written twice");
        }
        records
    }
}

fn ok(output: &Output) {
    assert!(output.status.success(), "{}", stderr(output));
}

#[test]
fn a_custom_source_gives_the_records_bizon_gives() {
    let bizon = Work::new();
    bizon.pipeline("items: 2500\npage_size: 300", "full_refresh");
    let output = Command::new(repo(".venv-bizon/bin/bizon"))
        .args(["run", "pipeline.yaml"])
        .current_dir(bizon.dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "Bizon itself failed: {}", stderr(&output));
    let expected = bizon.written("shop_items.json");
    assert_eq!(expected.len(), 2500);

    let host = Work::new();
    host.pipeline("items: 2500\npage_size: 300", "full_refresh");
    let output = host.run();
    ok(&output);
    let got = host.written("shop_items.json");
    assert_eq!(got.len(), expected.len());
    for (id, data) in &expected {
        assert_eq!(got.get(id), Some(data), "record {id}");
    }
    // The integer past 64 bits took Bizon's fallback encoder, and came through.
    assert!(got["7"].contains("\"big\": 1180591620717411303424"), "{}", got["7"]);
    // What the source printed went to the log, not into the frames.
    assert!(
        stderr(&output).contains("shop source: catalogue open"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn incremental_runs_write_new_records_only_and_a_failed_run_keeps_the_state() {
    let w = Work::new();
    let items = |ids: std::ops::Range<u64>| {
        let list: Vec<Value> = ids
            .map(|i| serde_json::json!({"id": i, "name": format!("n{i}")}))
            .collect();
        std::fs::write(w.path("items.json"), serde_json::to_vec(&list).unwrap()).unwrap();
    };
    let ids = || -> Vec<u64> {
        let mut ids: Vec<u64> = w
            .written("shop_items.json")
            .keys()
            .map(|k| k.parse().unwrap())
            .collect();
        ids.sort();
        ids
    };
    let state =
        || -> Value { serde_json::from_slice(&std::fs::read(w.path("pipeline.bizon-state.json")).unwrap()).unwrap() };

    // First run: no state yet, so Bizon's producer fetches everything.
    items(0..100);
    w.pipeline("items_file: items.json\npage_size: 30", "incremental");
    ok(&w.run());
    assert_eq!(ids(), (0..100).collect::<Vec<_>>());
    let first = state();
    assert_eq!(first["state"], serde_json::json!({"max_id": 99}));
    assert_eq!(first["job"], "shop");

    // New items; a run whose source fails after a page: nothing published,
    // the state is the first run's.
    items(0..150);
    w.pipeline("items_file: items.json\npage_size: 30\nfail_at_page: 1", "incremental");
    let output = w.run();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("the shop API refused page 1"),
        "{}",
        stderr(&output)
    );
    assert_eq!(state(), first);
    assert_eq!(ids(), (0..100).collect::<Vec<_>>());

    // The next run starts where the first ended: the new items only, once.
    w.pipeline("items_file: items.json\npage_size: 30", "incremental");
    ok(&w.run());
    assert_eq!(ids(), (0..150).collect::<Vec<_>>());
    let second = state();
    assert_eq!(second["state"], serde_json::json!({"max_id": 149}));
    assert!(second["last_run"].as_str() > first["last_run"].as_str());

    // Nothing new: nothing written, the state kept.
    ok(&w.run());
    assert_eq!(ids(), (0..150).collect::<Vec<_>>());
    assert_eq!(state()["state"], serde_json::json!({"max_id": 149}));
}

#[test]
fn a_source_error_ends_the_run_with_its_traceback_and_publishes_nothing() {
    let w = Work::new();
    w.pipeline("items: 2500\npage_size: 300\nfail_at_page: 3", "full_refresh");
    let output = w.run();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("ValueError: the shop API refused page 3"), "{err}");
    assert!(err.contains("Traceback (most recent call last)"), "{err}");
    assert!(
        err.contains("shop_source.py\", line") && err.contains("in misbehave"),
        "{err}"
    );
    assert!(!w.path("shop_items.json").exists(), "a failed full refresh published");
}

#[test]
fn a_crashed_child_ends_the_run_with_its_stack() {
    let w = Work::new();
    w.pipeline("items: 2500\npage_size: 300\ncrash_at_page: 2", "full_refresh");
    let output = w.run();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("crashed (SIGSEGV"), "{err}");
    // faulthandler's dump: the Python line that crashed.
    assert!(
        err.contains("Segmentation fault") && err.contains("in misbehave"),
        "{err}"
    );
    assert!(!w.path("shop_items.json").exists());
}

#[test]
fn a_hung_child_is_killed_after_the_page_timeout_showing_where_it_hung() {
    let w = Work::new();
    w.pipeline(
        "items: 2500\npage_size: 300\nhang_at_page: 1\nbridge:\n  page_timeout_s: 2",
        "full_refresh",
    );
    let started = Instant::now();
    let output = w.run();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.contains("no answer from the source within 2 s"), "{err}");
    assert!(err.contains("in misbehave"), "{err}");
}

#[test]
fn garbage_on_the_childs_stdout_ends_the_run() {
    let w = Work::new();
    // A "python" that says something before Python starts.
    let wrapper = w.path("noisy-python");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho 'Welcome to the cluster!'\nexec {} \"$@\"\n",
            bizon_python().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    w.pipeline("items: 10", "full_refresh");
    let output = w
        .host(&["run", "pipeline.yaml"])
        .arg("--python")
        .arg(&wrapper)
        .output()
        .unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("not the bridge protocol"), "{err}");
    assert!(err.contains("Welcome to the cluster!"), "{err}");
}

#[test]
fn sigterm_reaches_the_child_and_stops_the_run() {
    let w = Work::new();
    w.pipeline("endless: true\npage_size: 100\npid_file: child.pid", "stream");
    let mut host = w
        .host(&["run", "pipeline.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Records flowing: the stream destination appends them straight away.
    wait_until("records written by the endless source", || {
        w.path("child.pid").exists() && std::fs::metadata(w.path("shop_items.json")).is_ok_and(|m| m.len() > 0)
    });
    let child: i32 = std::fs::read_to_string(w.path("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    signal(host.id(), libc::SIGTERM);
    let status = host.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(host.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("SIGTERM received, stopping after the current page"),
        "{err}"
    );
    assert!(
        !Path::new(&format!("/proc/{child}")).exists(),
        "the child {child} outlived the host"
    );
    // What was read was written before the host exited: every line whole.
    let written = w.written("shop_items.json");
    assert!(!written.is_empty());
}

#[test]
fn a_python_without_bizon_or_a_sources_extras_names_what_to_install() {
    let w = Work::new();
    w.pipeline("items: 10", "full_refresh");
    let output = w
        .host(&["run", "pipeline.yaml"])
        .arg("--python")
        .arg("/usr/bin/python3")
        .output()
        .unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("bizon is not installed in /usr/bin/python3"), "{err}");
    assert!(err.contains("pip install \"bizon==0.6.4\""), "{err}");

    // Bizon's own gsheets example: its extra (gspread) is not in .venv-bizon.
    let example = bizon_example("gsheets/config/service_account.example.yml");
    let output = w.host(&["check"]).arg(&example).output().unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("pip install \"bizon[gsheets]==0.6.4\""), "{err}");
}

/// A file Bizon 0.6.4 ships in bizon/connectors/sources/.
fn bizon_example(path: &str) -> PathBuf {
    let output = Command::new(bizon_python())
        // `bizon` is a namespace package: no __file__.
        .args(["-c", "import bizon; print(list(bizon.__path__)[0])"])
        .output()
        .unwrap();
    let root = String::from_utf8(output.stdout).unwrap();
    Path::new(root.trim()).join("connectors/sources").join(path)
}

#[test]
fn check_takes_bizons_api_examples_to_the_network_call() {
    let w = Work::new();
    for (example, host) in [
        ("hubspot/config/api_key.example.yml", "api.hubapi.com"),
        ("pokeapi/config/pokeapi_pokemon_to_logger.example.yml", "pokeapi.co"),
    ] {
        let output = w.host(&["check"]).arg(bizon_example(example)).output().unwrap();
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{example}: {err}");
        assert!(!err.contains("unknown source"), "{example}: {err}");
        assert!(err.contains(host), "{example}: {err}");
    }
}

/// A custom source that reports what it can reach: a socket to a listener
/// of the test's, and the host's environment.
const PROBE_SOURCE: &str = r#"
import json, os, socket
from typing import List, Optional, Tuple, Type
from pydantic import Field
from bizon.source.config import SourceConfig
from bizon.source.models import SourceIteration, SourceRecord
from bizon.source.source import AbstractSource

class ProbeConfig(SourceConfig):
    port: int = Field(...)

class Probe(AbstractSource):
    @staticmethod
    def streams() -> List[str]:
        return ["probe"]
    @staticmethod
    def get_config_class() -> Type[SourceConfig]:
        return ProbeConfig
    def get_authenticator(self):
        return None
    def check_connection(self) -> Tuple[bool, Optional[str]]:
        return True, None
    def get_total_records_count(self) -> Optional[int]:
        return 1
    def get(self, pagination: dict = None) -> SourceIteration:
        try:
            socket.create_connection(("127.0.0.1", self.config.port), timeout=5).close()
            reached = "connected"
        except OSError as e:
            reached = str(e)
        found = {"connect": reached, "admin_token": os.environ.get("BIZON_HOST_ADMIN_TOKEN"), "cwd": os.getcwd()}
        with open("probe.json", "w") as f:
            json.dump(found, f)
        return SourceIteration(next_pagination={}, records=[SourceRecord(id="1", data=found)])
"#;

#[test]
fn under_serve_the_bridge_is_off_unless_enabled_then_runs_without_network_or_environment() {
    use crate::support::serve::{body, Serve};
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let pipeline = format!(
        "name: probe\nsource:\n  name: probe\n  stream: probe\n  source_file_path: probe.py\n  port: {port}\n\
         destination:\n  name: logger\n"
    );

    // Off by default: refused when stored, saying who turns it on.
    let off = Serve::start(&dir.path().join("off"), "native_destinations: [logger]\n");
    let token = off.tenant("acme", serde_json::json!({}));
    let (status, err) = off.call("PUT", "/v1/pipelines/probe", &token, body(&pipeline));
    assert_eq!(status, 422, "{err}");
    assert!(err.to_string().contains("bridge: true"), "{err}");
    drop(off);

    let serve = Serve::start(
        &dir.path().join("on"),
        &format!(
            "native_destinations: [logger]\nbridge: true\nbridge_python: {}\n",
            bizon_python().display()
        ),
    );
    let token = serve.tenant("acme", serde_json::json!({}));
    // A path outside the tenant's files is refused.
    let outside = pipeline.replace("source_file_path: probe.py", "source_file_path: /etc/passwd.py");
    let (status, err) = serve.call("PUT", "/v1/pipelines/probe", &token, body(&outside));
    assert_eq!(status, 422, "{err}");
    let files = serve.data.join("tenants/acme/files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("probe.py"), PROBE_SOURCE).unwrap();
    serve.ok("PUT", "/v1/pipelines/probe", &token, body(&pipeline));
    serve.ok("POST", "/v1/pipelines/probe/start", &token, None);
    let status = serve.wait_for(&token, "probe", "completed", |s| {
        s["state"] == "completed" || s["state"] == "failed"
    });
    assert_eq!(status["state"], "completed", "{status}\n{}", serve.log());
    let found: Value = serde_json::from_slice(&std::fs::read(files.join("probe.json")).unwrap()).unwrap();
    // Its own network namespace: not even the host's loopback.
    assert!(found["connect"].as_str().unwrap().contains("unreachable"), "{found}");
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "the child reached the host");
    assert_eq!(found["admin_token"], Value::Null, "the host's environment leaked");
    assert_eq!(
        found["cwd"].as_str().map(Path::new),
        Some(files.canonicalize().unwrap().as_path())
    );
    // The state is kept among the tenant's files.
    assert!(files.join("pipelines/probe.bizon-state.json").exists());
}
