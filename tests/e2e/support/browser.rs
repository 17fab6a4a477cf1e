//! Headless Chromium driven over WebDriver: Debian's chromedriver (from
//! `chromium-driver`, installed with chromium by scripts/install-chromium.sh)
//! speaks the W3C protocol as JSON over HTTP, which the tests' blocking
//! reqwest client sends. The browser logs in, clicks and reads pages as a
//! person would; its cookies are its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use super::common::{free_port, on_path, poll, require_tool, wait_for_listener};

const INSTALL: &str = "bash scripts/install-chromium.sh";
/// The W3C name of a found element's id in its JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::blocking::Client,
}

/// Debian's real binary: /usr/bin/chromium is a shell wrapper around it.
fn chromium() -> PathBuf {
    let mut candidates = vec![PathBuf::from("/usr/lib/chromium/chromium")];
    candidates.extend(on_path("chromium"));
    candidates.extend(on_path("chromium-browser"));
    require_tool("chromium", &candidates, INSTALL)
}

impl Browser {
    /// A new headless browser of `width` x `height` pixels, its profile in `dir`.
    pub fn start(dir: &Path, width: u32, height: u32) -> Browser {
        let chromium = chromium();
        let driver = require_tool("chromedriver", &on_path("chromedriver"), INSTALL);
        let port = free_port();
        let log = dir.join("chromedriver.log");
        let child = std::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for_listener(&format!("127.0.0.1:{port}"), "chromedriver", &log);
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let profile = dir.join("chromium-profile");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--window-size={width},{height}"),
                         format!("--user-data-dir={}", profile.display())],
            },
        }}});
        let session = http
            .post(format!("http://127.0.0.1:{port}/session"))
            .json(&capabilities)
            .send()
            .and_then(|r| r.json::<Value>())
            .unwrap();
        let id = session["value"]["sessionId"].as_str().unwrap_or_else(|| {
            panic!(
                "chromedriver made no session: {session}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        Browser {
            base: format!("http://127.0.0.1:{port}/session/{id}"),
            driver: child,
            http,
        }
    }

    /// A WebDriver command's `value`; an error answer fails the test.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or(json!({}))),
        };
        let answer: Value = request.send().and_then(|r| r.json()).unwrap();
        if answer["value"]["error"].is_string() {
            panic!("WebDriver {method} {path}: {}", answer["value"]);
        }
        answer["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.command("GET", "/url", None).as_str().unwrap().to_string()
    }

    /// The page's markup as the browser holds it now.
    pub fn source(&self) -> String {
        self.command("GET", "/source", None).as_str().unwrap().to_string()
    }

    fn element(&self, css: &str) -> String {
        let found = self.command("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        let id = found[ELEMENT].as_str();
        id.unwrap_or_else(|| panic!("WebDriver: no element id for `{css}` in {found}"))
            .to_string()
    }

    /// The rendered text of the first element `css` selects now (None when
    /// none does). One script finds and reads it: the console redraws its
    /// live part every 2 s, and finding an element in one WebDriver command
    /// and reading it in the next fails ("stale element reference") when a
    /// redraw falls between them.
    fn read(&self, css: &str) -> Option<String> {
        let script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;";
        let text = self.command("POST", "/execute/sync", Some(json!({"script": script, "args": [css]})));
        text.as_str().map(|t| t.trim().to_string())
    }

    /// The rendered text of the first element `css` selects.
    pub fn text(&self, css: &str) -> String {
        self.read(css)
            .unwrap_or_else(|| panic!("WebDriver: no element `{css}` on {}", self.url()))
    }

    /// Elements `css` selects now.
    pub fn count(&self, css: &str) -> usize {
        let found = self.command(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        );
        found.as_array().unwrap().len()
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.command("POST", &format!("/element/{id}/value"), Some(json!({ "text": text })));
    }

    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.command("POST", &format!("/element/{id}/click"), None);
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub fn script(&self, script: &str) -> Value {
        self.command("POST", "/execute/sync", Some(json!({"script": script, "args": []})))
    }

    /// The browser's cookies for the page's site, as it keeps them.
    pub fn cookies(&self) -> Vec<Value> {
        self.command("GET", "/cookie", None).as_array().unwrap().clone()
    }

    /// Waits until the first element `css` selects reads something `done` accepts.
    pub fn wait_text(&self, css: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
        let last = std::cell::RefCell::new(String::new());
        poll(
            || format!("{what}: `{css}` last read {:?} on {}", last.borrow(), self.url()),
            || {
                let text = self.read(css).unwrap_or_default();
                let answer = done(&text).then(|| text.clone());
                *last.borrow_mut() = text;
                answer
            },
        )
    }

    /// Saves the window as a PNG at `path`.
    pub fn screenshot(&self, path: &Path) {
        let png = self.command("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.http.delete(&self.base).send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
