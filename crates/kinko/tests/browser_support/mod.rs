//! A real browser for the page tests: Debian's `chromium`, driven by `chromedriver` over the
//! W3C WebDriver protocol (JSON over HTTP, spoken with the tests' own HTTP helper). Headless,
//! a phone-sized window. Nothing is skipped: without chromium the tests fail and say what to
//! install. Screenshots go to one folder per run, printed at the start.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::support::HttpResponse;

/// How long one WebDriver command may take: starting Chromium on a busy 2-core machine takes
/// longer than the 20 s the API helper allows.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// One WebDriver command (JSON over HTTP/1.1, one connection each).
fn http_with(
    address: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    _headers: &[(&str, &str)],
) -> HttpResponse {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(address).unwrap_or_else(|error| panic!("{error}"));
    stream
        .set_read_timeout(Some(COMMAND_TIMEOUT))
        .unwrap_or_else(|error| panic!("{error}"));
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|error| panic!("{error}"));
    // chromedriver keeps the connection open: read the head, then Content-Length bytes.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let (head_end, length) = loop {
        let read = stream
            .read(&mut chunk)
            .unwrap_or_else(|error| panic!("WebDriver {method} {path}: {error}"));
        assert!(read > 0, "WebDriver {method} {path}: connection closed");
        raw.extend_from_slice(&chunk[..read]);
        if let Some(end) = raw.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length);
        }
    };
    while raw.len() < head_end + length {
        let read = stream
            .read(&mut chunk)
            .unwrap_or_else(|error| panic!("WebDriver {method} {path}: {error}"));
        assert!(read > 0, "WebDriver {method} {path}: connection closed");
        raw.extend_from_slice(&chunk[..read]);
    }
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let body = String::from_utf8_lossy(&raw[head_end..head_end + length]).into_owned();
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    HttpResponse {
        status,
        headers: Vec::new(),
        body,
    }
}

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a page may take to reach the state a step waits for.
pub const WAIT: Duration = Duration::from_secs(20);

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

/// `chromedriver` and one browser session, both ended when dropped.
pub struct Browser {
    driver: Child,
    driver_address: String,
    session: String,
    pub screenshots: PathBuf,
    shot: u32,
}

impl Drop for Browser {
    fn drop(&mut self) {
        drop(self.call("DELETE", "", None));
        drop(self.driver.kill());
        drop(self.driver.wait());
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|error| panic!("no free port: {error}"))
}

impl Browser {
    /// Starts chromedriver and a headless Chromium; `run` names the screenshot folder.
    pub fn start(run: &str) -> Self {
        let chromium = which("chromium").unwrap_or_else(|| {
            panic!(
                "chromium is not installed: the page tests need Debian's chromium and \
                 chromium-driver (apt-get install -y chromium chromium-driver; .ci/run does it)"
            )
        });
        let chromedriver = which("chromedriver").unwrap_or_else(|| {
            panic!("chromedriver is not installed: apt-get install -y chromium-driver")
        });
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("starting chromedriver: {error}"));
        let driver_address = format!("127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if std::net::TcpStream::connect(&driver_address).is_ok() {
                let status = http_with(&driver_address, "GET", "/status", None, &[]);
                if status.status == 200 && status.body.contains("\"ready\":true") {
                    break;
                }
            }
            assert!(started.elapsed() < WAIT, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=412,915",
                         "--lang=ja", "--no-first-run"],
                "prefs": { "intl.accept_languages": "ja,en" },
            },
        }}});
        let created = http_with(
            &driver_address,
            "POST",
            "/session",
            Some(&capabilities.to_string()),
            &[],
        );
        assert_eq!(
            created.status, 200,
            "chromium did not start: {}",
            created.body
        );
        let session = value_of(&created)["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id: {}", created.body))
            .to_owned();
        let screenshots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("screenshots")
            .join(run);
        std::fs::create_dir_all(&screenshots).unwrap_or_else(|error| panic!("{error}"));
        println!("screenshots of this run: {}", screenshots.display());
        Self {
            driver,
            driver_address,
            session,
            screenshots,
            shot: 0,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> HttpResponse {
        let body = body.map(|body| body.to_string());
        http_with(
            &self.driver_address,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_deref(),
            &[],
        )
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let response = self.call(method, path, body);
        assert_eq!(response.status, 200, "{method} {path}: {}", response.body);
        value_of(&response)["value"].clone()
    }

    pub fn go(&self, url: &str) {
        self.ok("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.ok("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn source(&self) -> String {
        self.ok("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element `css` selects, waiting for it to appear.
    pub fn find(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            let response = self.call(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            );
            if response.status == 200 {
                let element = value_of(&response)["value"][ELEMENT_KEY]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                assert!(!element.is_empty(), "{css}: {}", response.body);
                return element;
            }
            assert!(
                started.elapsed() < WAIT,
                "no {css} on {}:\n{}",
                self.url(),
                self.source()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn exists(&self, css: &str) -> bool {
        self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        )
        .status
            == 200
    }

    pub fn text(&self, css: &str) -> String {
        let element = self.find(css);
        self.ok("GET", &format!("/element/{element}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn attribute(&self, css: &str, name: &str) -> String {
        let element = self.find(css);
        self.ok("GET", &format!("/element/{element}/attribute/{name}"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Types into a field (after clearing it), as a person would.
    pub fn fill(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.ok(
            "POST",
            &format!("/element/{element}/clear"),
            Some(json!({})),
        );
        self.ok(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    pub fn click(&self, css: &str) {
        let element = self.find(css);
        self.ok(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    /// Waits until the address satisfies `test`.
    pub fn wait_for_url(&self, what: &str, test: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let url = self.url();
            if test(&url) {
                return url;
            }
            assert!(started.elapsed() < WAIT, "never reached {what}; at {url}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the page holds `text`.
    pub fn wait_for_text(&self, text: &str) {
        let started = Instant::now();
        loop {
            if self.source().contains(text) {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "{text:?} never appeared on {}:\n{}",
                self.url(),
                self.source()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The browser's cookies for the current site, HttpOnly ones included.
    pub fn cookies(&self) -> Vec<(String, String)> {
        self.ok("GET", "/cookie", None)
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|cookie| {
                (
                    cookie["name"].as_str().unwrap_or_default().to_owned(),
                    cookie["value"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Types `text` into whatever has the focus (WebDriver key codes: \u{E004} Tab,
    /// \u{E007} Enter), as a keyboard would.
    pub fn keys(&self, text: &str) {
        let active = self.ok("GET", "/element/active", None);
        let element = active[ELEMENT_KEY].as_str().unwrap_or_default().to_owned();
        assert!(!element.is_empty(), "nothing has the focus");
        self.ok(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Forgets one cookie of the current site.
    pub fn delete_cookie(&self, name: &str) {
        self.ok("DELETE", &format!("/cookie/{name}"), None);
    }

    /// A PNG of the viewport, numbered in the order taken.
    pub fn screenshot(&mut self, name: &str) -> PathBuf {
        let encoded = self.ok("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .unwrap_or_else(|error| panic!("screenshot: {error}"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        self.shot += 1;
        let path = self
            .screenshots
            .join(format!("{:02}-{name}.png", self.shot));
        std::fs::write(&path, png).unwrap_or_else(|error| panic!("{error}"));
        path
    }
}

fn value_of(response: &HttpResponse) -> Value {
    serde_json::from_str(&response.body)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", response.body))
}
