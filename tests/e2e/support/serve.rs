//! A `bizon-host serve` process for the tests, driven only through its API.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

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
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config_path = data.with_extension("serve.yaml");
        std::fs::write(&config_path, config).unwrap();
        let log = data.with_extension(format!("{port}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_bizon-host"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data)
            .arg("--config")
            .arg(&config_path)
            .env("BIZON_HOST_ADMIN_TOKEN", ADMIN)
            .env_remove("RUST_LOG")
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
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "serve did not listen:\n{}", serve.log());
            std::thread::sleep(Duration::from_millis(50));
        }
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

    pub fn wait_for(&self, token: &str, pipeline: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status = self.ok("GET", &format!("/v1/pipelines/{pipeline}"), token, None);
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{pipeline}: waited for {what}; last status {status}\nserve log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
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
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("serve did not stop on SIGTERM:\n{}", self.log());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
