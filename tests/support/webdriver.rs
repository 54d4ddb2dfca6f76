//! A small WebDriver client for the dashboard's browser tests and `examples/ui_load.rs`: it
//! starts Debian's `chromedriver` on a free loopback port, opens one headless Chromium session
//! through it, and speaks the W3C WebDriver protocol over awc (already a dependency of the
//! server build), plus chromedriver's log endpoint for the browser console.
//!
//! Only what the tests use: navigate, run a script, find elements by CSS selector, click, type,
//! read text and attributes, resize the window, take a screenshot, read the console, and send
//! a DevTools command. Waits
//! are polls with a deadline ([`Browser::wait_js`]), never bare sleeps.
//!
//! The session is deleted and chromedriver killed and reaped on drop (also when a test
//! panics), so no Chromium outlives the test. A missing `chromium` or `chromedriver` is a
//! failure that says how to install them, never a silent pass.

#![allow(dead_code)] // shared by the API tests and an example, which each use a part of it

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// How many times a click is tried again when its element was redrawn under it.
const STALE_RETRIES: usize = 10;
/// Where Debian's `chromium` and `chromium-driver` packages put the two programs.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a wait polls before it fails.
pub const WAIT: Duration = Duration::from_secs(15);

/// The key under which WebDriver names an element in its answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One console message of the page (`POST /session/{id}/se/log`, type `browser`).
#[derive(Clone, Debug)]
pub struct LogEntry {
    /// `SEVERE` (console.error, uncaught exceptions, failed loads, CSP violations),
    /// `WARNING`, `INFO`, `DEBUG`.
    pub level: String,
    /// Where it came from: `console-api`, `javascript`, `network`, `security`, ...
    pub source: String,
    pub message: String,
}

/// An error answer of the driver: its WebDriver error code and message.
#[derive(Debug)]
pub struct DriverError {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// A headless Chromium session driven through its own chromedriver process.
pub struct Browser {
    /// `http://127.0.0.1:<port>` of chromedriver.
    driver_url: String,
    /// `/session/<id>`: every command of the session is under it.
    session: String,
    http: awc::Client,
    /// The chromedriver process (Chromium is its child); killed on drop after the session is
    /// deleted, which closes Chromium.
    driver: Child,
    /// chromedriver's own output, shown when it fails to start.
    driver_log: tempfile::NamedTempFile,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session at 1280×900. Panics, saying how
    /// to install them, when either program is missing.
    pub async fn start() -> Browser {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: the dashboard's browser tests need Chromium and its \
                 WebDriver (`apt-get install chromium chromium-driver`)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver_log = tempfile::NamedTempFile::new().expect("a temporary file");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(driver_log.reopen().expect("the driver's log"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("{CHROMEDRIVER} does not start: {err}"));
        let http = awc::Client::builder().timeout(Duration::from_secs(90)).finish();
        let mut browser = Browser {
            driver_url: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            http,
            driver,
            driver_log,
        };
        browser.wait_ready().await;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--window-size=1280,900"],
            },
            // Every console message, read back with `logs()`.
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let created = browser.request("POST", "/session", Some(capabilities)).await;
        let created = created.unwrap_or_else(|err| {
            panic!("chromedriver refuses a headless Chromium session: {err}")
        });
        let id = created["sessionId"].as_str().expect("a session id");
        browser.session = format!("/session/{id}");
        browser
    }

    /// Waits for chromedriver to answer `GET /status` with `ready`.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(status) = self.request("GET", "/status", None).await {
                if status["ready"] == true {
                    return;
                }
            }
            if let Ok(Some(exit)) = self.driver.try_wait() {
                panic!("chromedriver exited ({exit}): {}", self.driver_output());
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready within {WAIT:?}: {}",
                self.driver_output()
            );
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn driver_output(&self) -> String {
        std::fs::read_to_string(self.driver_log.path()).unwrap_or_default()
    }

    /// One WebDriver call: its `value`, or the driver's error.
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, DriverError> {
        let url = format!("{}{path}", self.driver_url);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url),
        };
        let sent = match body {
            Some(body) => request.send_json(&body).await,
            // A POST without parameters still carries an empty JSON object.
            None if method == "POST" => request.send_json(&json!({})).await,
            None => request.send().await,
        };
        let mut response = sent.map_err(|err| DriverError {
            code: "unreachable".into(),
            message: format!("{method} {path}: {err}"),
        })?;
        let bytes = response.body().limit(64 << 20).await.map_err(|err| DriverError {
            code: "unreadable".into(),
            message: format!("{method} {path}: {err}"),
        })?;
        let mut answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let value = answer["value"].take();
        if response.status().is_success() {
            return Ok(value);
        }
        Err(DriverError {
            code: value["error"].as_str().unwrap_or("unknown error").to_owned(),
            message: format!("{method} {path}: {}", value["message"].as_str().unwrap_or("")),
        })
    }

    /// A call of this session that must succeed.
    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("{}{path}", self.session);
        self.request(method, &path, body).await.unwrap_or_else(|err| panic!("webdriver: {err}"))
    }

    /// Loads `url` and waits for its `load` event.
    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// Runs `script` (a function body: `return ...` gives the answer) with `args`.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.try_execute(script, args).await.unwrap_or_else(|err| panic!("script failed: {err}"))
    }

    /// [`Browser::execute`], with a failing script an error rather than a panic.
    pub async fn try_execute(&self, script: &str, args: Vec<Value>) -> Result<Value, DriverError> {
        let body = json!({ "script": script, "args": args });
        self.request("POST", &format!("{}/execute/sync", self.session), Some(body)).await
    }

    /// Runs `script` every 25 ms until it answers something truthy (not null, false, 0 or
    /// ""), and returns that answer; fails after `limit`, naming `what` and the last answer.
    pub async fn wait_js_within(&self, limit: Duration, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let answer = self.try_execute(script, vec![]).await;
            match &answer {
                Ok(value) if truthy(value) => return value.clone(),
                _ if Instant::now() >= deadline => {
                    let url = self.execute("return location.href", vec![]).await;
                    panic!("{what}: not within {limit:?} (page {url}, last answer {answer:?})")
                }
                _ => actix_rt::time::sleep(Duration::from_millis(25)).await,
            }
        }
    }

    /// [`Browser::wait_js_within`] with the usual deadline.
    pub async fn wait_js(&self, what: &str, script: &str) -> Value {
        self.wait_js_within(WAIT, what, script).await
    }

    /// Waits until an element matches `css`.
    pub async fn wait_for(&self, css: &str) {
        let script = format!("return document.querySelector({}) !== null", json!(css));
        self.wait_js(&format!("an element matching `{css}`"), &script).await;
    }

    /// The element matching `css`, or `None`.
    pub async fn find(&self, css: &str) -> Option<String> {
        let body = json!({ "using": "css selector", "value": css });
        let path = format!("{}/element", self.session);
        match self.request("POST", &path, Some(body)).await {
            Ok(found) => Some(found[ELEMENT_KEY].as_str().expect("an element id").to_owned()),
            Err(err) if err.code == "no such element" => None,
            Err(err) => panic!("webdriver: {err}"),
        }
    }

    /// The element matching `css`, waiting for it to exist.
    pub async fn element(&self, css: &str) -> String {
        self.wait_for(css).await;
        self.find(css).await.unwrap_or_else(|| panic!("`{css}` vanished as it was found"))
    }

    /// Clicks the element matching `css` (as a user would: it must be visible).
    pub async fn click(&self, css: &str) {
        // A live page redraws what changed: the element found may be replaced before the
        // click lands, as a person's click would land on the redrawn button. Found again then.
        for _ in 0..STALE_RETRIES {
            let id = self.element(css).await;
            let path = format!("{}/element/{id}/click", self.session);
            match self.request("POST", &path, None).await {
                Ok(_) => return,
                Err(err) if err.code == "stale element reference" => continue,
                Err(err) => panic!("webdriver: {err}"),
            }
        }
        panic!("webdriver: `{css}` was redrawn under every one of {STALE_RETRIES} clicks");
    }

    /// Types `text` into the element matching `css` (keys as a user would press them).
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.command("POST", &format!("/element/{id}/value"), Some(json!({ "text": text }))).await;
    }

    /// The rendered text of the element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        let id = self.element(css).await;
        let text = self.command("GET", &format!("/element/{id}/text"), None).await;
        text.as_str().unwrap_or_default().to_owned()
    }

    /// An attribute of the element matching `css` (`None` when absent).
    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let id = self.element(css).await;
        let value = self.command("GET", &format!("/element/{id}/attribute/{name}"), None).await;
        value.as_str().map(str::to_owned)
    }

    /// Sizes the window so that the page's viewport is `width`×`height` CSS pixels (the
    /// window's own frame, whatever it is, is added).
    pub async fn set_viewport(&self, width: u32, height: u32) {
        let (width, height) = (width as i64, height as i64);
        let mut window = (width, height);
        for _ in 0..3 {
            let rect = json!({ "width": window.0, "height": window.1 });
            self.command("POST", "/window/rect", Some(rect)).await;
            let inner = self.execute("return [innerWidth, innerHeight]", vec![]).await;
            let inner = (inner[0].as_i64().unwrap_or(0), inner[1].as_i64().unwrap_or(0));
            if inner == (width, height) {
                return;
            }
            window = (window.0 + width - inner.0, window.1 + height - inner.1);
        }
        let inner = self.execute("return [innerWidth, innerHeight]", vec![]).await;
        panic!("the viewport cannot be made {width}x{height}: it is {inner}");
    }

    /// Sends a Chrome DevTools Protocol command (chromedriver's `goog/cdp/execute`): for
    /// what WebDriver has no call for, such as a script run before the page's own.
    pub async fn cdp(&self, command: &str, params: Value) -> Value {
        let body = json!({ "cmd": command, "params": params });
        self.command("POST", "/goog/cdp/execute", Some(body)).await
    }

    /// Saves a PNG of the viewport to `path` (creating its directory).
    pub async fn screenshot(&self, path: &Path) {
        let png = self.command("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 PNG"))
            .expect("a base64 PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the screenshot directory");
        }
        std::fs::write(path, png).expect("the screenshot written");
    }

    /// The console messages since the last call (chromedriver hands each out once).
    pub async fn logs(&self) -> Vec<LogEntry> {
        let entries = self.command("POST", "/se/log", Some(json!({ "type": "browser" }))).await;
        let entries = entries.as_array().cloned().unwrap_or_default();
        let field = |entry: &Value, name: &str| entry[name].as_str().unwrap_or("").to_owned();
        entries
            .iter()
            .map(|e| LogEntry {
                level: field(e, "level"),
                source: field(e, "source"),
                message: field(e, "message"),
            })
            .collect()
    }

    /// The `SEVERE` console messages since the last read of the logs.
    pub async fn console_errors(&self) -> Vec<LogEntry> {
        self.logs().await.into_iter().filter(|e| e.level == "SEVERE").collect()
    }

    /// Deletes the session (closing Chromium) with a blocking request: drop cannot await,
    /// and chromedriver answers it without the test's own runtime.
    fn delete_session(&self) {
        let Some(address) = self.driver_url.strip_prefix("http://") else { return };
        let Ok(mut stream) = TcpStream::connect(address) else { return };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
        let request = format!(
            "DELETE {} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            self.session
        );
        if stream.write_all(request.as_bytes()).is_ok() {
            let _ = stream.read_to_end(&mut Vec::new());
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            self.delete_session();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// JavaScript's truthiness, for the answers of wait scripts.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}
