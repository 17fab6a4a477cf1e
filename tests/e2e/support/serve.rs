//! A `bizon-host serve` process for the tests, driven only through its API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::common::{bizon_host, free_port, poll, signal, wait_for_listener};

pub const ADMIN: &str = "admin-token-for-the-e2e-tests";

/// Bodies larger than this wait for `100 Continue` ([`Serve::call`]):
/// under the socket buffers, a body is written whole before any answer.
const EXPECT_CONTINUE_OVER: usize = 64 << 10;

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
        match body {
            Some(body) if body.len() > EXPECT_CONTINUE_OVER => self.call_after_continue(method, path, token, &body),
            body => self.send(method, path, token, body).unwrap(),
        }
    }

    /// A request whose body waits for the server's `100 Continue`
    /// (`Expect: 100-continue`, as curl sends past 1 MiB). A server that
    /// refuses it from its headers (401, 403, 413 by Content-Length)
    /// answers before any of the body is sent; written at once instead, a
    /// body larger than the socket's buffers is cut off by the server
    /// closing the connection, and its answer lost with it. reqwest does
    /// not send `Expect`, hence the few lines of HTTP/1.1 here.
    fn call_after_continue(&self, method: &str, path: &str, token: &str, body: &[u8]) -> (u16, Value) {
        use std::io::{BufRead, BufReader, Read, Write};
        let addr = self.url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let head = |reader: &mut BufReader<std::net::TcpStream>| {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let mut length = None;
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                match line.trim_end().split_once(':') {
                    Some((k, v)) if k.eq_ignore_ascii_case("content-length") => length = v.trim().parse().ok(),
                    Some(_) => {}
                    None => return (status, length),
                }
            }
        };
        let (mut status, mut length) = head(&mut reader);
        if status == 100 {
            stream.write_all(body).unwrap();
            (status, length) = head(&mut reader);
        }
        let mut text = Vec::new();
        match length {
            Some(n) => {
                text.resize(n, 0);
                reader.read_exact(&mut text).unwrap();
            }
            None => {
                reader.read_to_end(&mut text).unwrap();
            }
        }
        let text = String::from_utf8_lossy(&text).into_owned();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
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

/// What the console answered: status, body, `Location` and `Set-Cookie`.
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub location: Option<String>,
    pub set_cookie: Option<String>,
}

/// The console as a browser without a cookie store sees it, from a client
/// address of 127/8 (its wrong tokens are counted by address).
pub struct Console<'a> {
    serve: &'a Serve,
    http: reqwest::blocking::Client,
}

impl Serve {
    /// A client of the console's from `from` (127.0.0.N), following no redirect.
    pub fn console(&self, from: [u8; 4]) -> Console<'_> {
        Console {
            serve: self,
            http: reqwest::blocking::Client::builder()
                .local_address(std::net::IpAddr::from(from))
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        }
    }
}

impl Console<'_> {
    fn answer(response: reqwest::blocking::Response) -> Answer {
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_string())
        };
        let (location, set_cookie) = (header("location"), header("set-cookie"));
        let status = response.status().as_u16();
        Answer {
            status,
            body: response.text().unwrap(),
            location,
            set_cookie,
        }
    }

    /// `POST path` with a form of `fields`, and `cookie` (`name=value`) if any.
    pub fn post(&self, cookie: Option<&str>, path: &str, fields: &[(&str, &str)]) -> Answer {
        let form = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut request = self
            .http
            .post(format!("{}{path}", self.serve.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        Self::answer(request.send().unwrap())
    }

    pub fn get(&self, cookie: Option<&str>, path: &str) -> Answer {
        let mut request = self.http.get(format!("{}{path}", self.serve.url));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        Self::answer(request.send().unwrap())
    }

    /// Logs in with `token`: the answer, and the cookie to send back (`name=value`).
    pub fn login(&self, token: &str) -> (Answer, Option<String>) {
        let answer = self.post(None, "/ui/login", &[("token", token)]);
        let cookie = answer
            .set_cookie
            .as_deref()
            .map(|c| c.split(';').next().unwrap().to_string());
        (answer, cookie)
    }

    /// `GET path` of a session that must answer 200: the page.
    pub fn page(&self, cookie: &str, path: &str) -> String {
        let answer = self.get(Some(cookie), path);
        assert_eq!(answer.status, 200, "GET {path}: {}\n{}", answer.body, self.serve.log());
        answer.body
    }

    /// The session's CSRF token, from a form of the page at `path`.
    pub fn csrf(&self, cookie: &str, path: &str) -> String {
        let page = self.page(cookie, path);
        let at = page.find("name=csrf value=\"").expect("a form with a CSRF token") + 17;
        page[at..at + 64].to_string()
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

/// The hosts of one shared registry (a PostgreSQL URL): each has its own
/// data dir under `dir` and all share one secrets key there (the first host
/// makes it), with a fast reconcile.
pub struct SharedRegistry {
    url: String,
    dir: PathBuf,
}

impl SharedRegistry {
    pub fn new(url: &str, dir: &Path) -> Self {
        Self {
            url: url.to_string(),
            dir: dir.to_path_buf(),
        }
    }

    /// Host `id`'s data dir.
    pub fn data(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Starts host `id`; again after a kill, it finds its data dir as it was.
    pub fn start(&self, id: &str) -> Serve {
        let config = format!(
            "registry: {}\nhost_id: {id}\nreconcile_interval_ms: 300\nsecrets_key_file: {}\n",
            self.url,
            self.dir.join("secrets.key").display()
        );
        Serve::start(&self.data(id), &config)
    }
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
        // Read while a plugin writes: a file listed may be gone when it is
        // read (CI once failed here without naming why), and its last line
        // may be cut.
        let text = match std::fs::read(entry.path()) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", entry.path().display()),
        };
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
