//! A `bizon-host serve` process for the tests, driven only through its API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::common::{bizon_host, free_port, poll, signal, wait_for_listener};

pub const ADMIN: &str = "admin-token-for-the-e2e-tests";

pub struct Serve {
    pub url: String,
    pub data: PathBuf,
    child: Option<Child>,
    http: reqwest::blocking::Client,
    log: PathBuf,
}

impl Serve {
    /// Starts serve on a free port with `data` as its data dir and `config` as serve.yaml.
    pub fn start(data: &Path, config: &str) -> Serve {
        Self::start_with(data, config, &[])
    }

    /// [`Self::start`] with more arguments to `serve`.
    pub fn start_with(data: &Path, config: &str, args: &[&str]) -> Serve {
        let port = free_port();
        let log = data.with_extension(format!("{port}.log"));
        let child = serve_command(data, config, port, args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let serve = Serve {
            url: format!("http://127.0.0.1:{port}"),
            data: data.to_path_buf(),
            child: Some(child),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            log,
        };
        wait_for_listener(&format!("127.0.0.1:{port}"), "serve", &serve.log);
        serve
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// (status, body as JSON, or as a string when it is not JSON).
    pub fn call(&self, method: &str, path: &str, token: &str, body: Option<Vec<u8>>) -> (u16, Value) {
        self.send(method, path, token, body).unwrap()
    }

    /// [`Self::call`], or the error of a request the server cut off.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send()?;
        let status = response.status().as_u16();
        let text = response.text()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    pub fn ok(&self, method: &str, path: &str, token: &str, body: Option<Vec<u8>>) -> Value {
        let (status, body) = self.call(method, path, token, body);
        assert!(
            (200..300).contains(&status),
            "{path}: {status} {body}\nserve log:\n{}",
            self.log()
        );
        body
    }

    pub fn tenant(&self, name: &str, limits: Value) -> String {
        let body = serde_json::json!({"name": name, "limits": limits})
            .to_string()
            .into_bytes();
        self.ok("POST", "/v1/tenants", ADMIN, Some(body))["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The pipeline's status once `done` holds for it.
    pub fn wait_for(&self, token: &str, pipeline: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let path = format!("/v1/pipelines/{pipeline}");
        let last = std::cell::RefCell::new(Value::Null);
        poll(
            || {
                format!(
                    "{pipeline}: {what}; last status {}\nserve log:\n{}",
                    last.borrow(),
                    self.log()
                )
            },
            || {
                let status = self.ok("GET", &path, token, None);
                let answer = done(&status).then(|| status.clone());
                *last.borrow_mut() = status;
                answer
            },
        )
    }

    /// Each of `requests` (method, path) with `token` is answered exactly as
    /// for a name nobody has: 404, and for a pipeline the same message but
    /// for its name. A tenant cannot tell another's things from nothing.
    pub fn assert_not_found(&self, token: &str, requests: &[(&str, &str)]) {
        let missing = self.call("GET", "/v1/pipelines/nobody", token, None).1;
        let missing = missing["error"]["message"].as_str().unwrap();
        for (method, path) in requests {
            let (status, body) = self.call(method, path, token, None);
            assert_eq!(status, 404, "{method} {path}: {body}");
            if let Some(name) = path.strip_prefix("/v1/pipelines/") {
                let name = name.split('/').next().unwrap();
                assert_eq!(
                    body["error"]["message"],
                    missing.replace("nobody", name),
                    "{method} {path}"
                );
            }
        }
    }

    /// SIGKILL: the host dies without stopping anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait: pipelines are stopped (and resume at the next start).
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        signal(self.pid(), libc::SIGTERM);
        let child = self.child.as_mut().unwrap();
        let log = &self.log;
        poll(
            || {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                format!("serve to stop on SIGTERM:\n{log}")
            },
            || child.try_wait().unwrap(),
        );
        // Not before: a serve that did not stop is killed when dropped.
        self.child = None;
    }
}

/// `bizon-host serve` on `port` with `data` as its data dir, `config` as serve.yaml.
fn serve_command(data: &Path, config: &str, port: u16, args: &[&str]) -> std::process::Command {
    let config_path = data.with_extension("serve.yaml");
    std::fs::write(&config_path, config).unwrap();
    let mut command = bizon_host();
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .arg("--config")
        .arg(&config_path)
        .args(args)
        .env("BIZON_HOST_ADMIN_TOKEN", ADMIN);
    command
}

/// A serve that must refuse to start: its exit status (not success) and
/// what it printed.
pub fn refused_start(data: &Path, config: &str, args: &[&str]) -> String {
    /// Killed when the wait gives up: a serve that started after all would run on.
    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let log = data.with_extension("refused.log");
    let mut child = Killed(
        serve_command(data, config, free_port(), args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let printed = || std::fs::read_to_string(&log).unwrap_or_default();
    let status = poll(
        || format!("serve to refuse to start:\n{}", printed()),
        || child.0.try_wait().unwrap(),
    );
    assert!(!status.success(), "serve started: {}", printed());
    printed()
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A request body of text (YAML or JSON).
pub fn body(text: &str) -> Option<Vec<u8>> {
    Some(text.as_bytes().to_vec())
}

/// The data rows (headers left out) of each csv file under `dir`, by file name.
pub fn csv_files(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let rows = text
            .lines()
            .filter(|l| !l.starts_with("bizon_id"))
            .map(str::to_string)
            .collect();
        out.insert(entry.file_name().to_string_lossy().into_owned(), rows);
    }
    out
}

/// The data rows of every csv file under `dir`.
pub fn csv_rows(dir: &Path) -> Vec<String> {
    csv_files(dir).into_values().flatten().collect()
}

/// `partition_P_offset_O` of each Kafka record the csv plugin wrote under
/// `tenants/acme/files/out` of each data dir, all together.
pub fn kafka_positions(data_dirs: &[&Path]) -> Vec<String> {
    data_dirs
        .iter()
        .flat_map(|d| csv_rows(&d.join("tenants/acme/files/out")))
        .map(|r| {
            let at = r.find("partition_").expect("a kafka record id");
            r[at..].split(',').next().unwrap().to_string()
        })
        .collect()
}
