//! Just enough of the W3C WebDriver protocol to drive Debian's headless
//! Chromium through `chromedriver` (started here on a loopback port):
//! sessions, navigation, elements, keys, scripts, screenshots. Waiting is
//! done in the page: an async script resolves when a MutationObserver sees
//! the condition, bounded by the session's script timeout.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use super::lines::Lines;

/// The key WebDriver sends for Enter.
pub const ENTER: &str = "\u{E007}";
/// How long an in-page wait may take.
pub const PAGE_WAIT: Duration = Duration::from_secs(15);

/// Where Chromium and its driver are, if installed.
pub fn find_browser() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| names.iter().map(PathBuf::from).find(|p| p.is_file());
    let driver = std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]))?;
    let browser = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| find(&["/usr/bin/chromium", "/usr/lib/chromium/chromium"]))?;
    Some((driver, browser))
}

/// A running chromedriver, killed on drop.
pub struct Driver {
    child: Child,
    pub url: String,
    browser: PathBuf,
    agent: ureq::Agent,
    _lines: Lines,
}

impl Driver {
    /// Starts `driver` on a free loopback port and waits until it says so.
    pub fn start(driver: &Path, browser: &Path) -> Driver {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut lines = Lines::read(child.stdout.take().unwrap());
        lines
            .until(Duration::from_secs(20), |l| {
                l.contains("started successfully")
            })
            .unwrap_or_else(|e| panic!("chromedriver did not start ({e:?}): {:?}", lines.seen));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            browser: browser.to_owned(),
            agent,
            _lines: lines,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.url);
        let mut response = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, body) => self
                .agent
                .post(&url)
                .send_json(body.unwrap_or_else(|| json!({}))),
        }
        .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = response.status();
        let value: Value = response
            .body_mut()
            .read_json()
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: bad JSON: {e}"));
        assert!(
            status.is_success(),
            "WebDriver {method} {path} failed ({status}): {value}"
        );
        value["value"].clone()
    }

    /// A new headless browser window of `width` x `height` pixels.
    pub fn session(&self, profile: &Path, width: u32, height: u32) -> Browser<'_> {
        let args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": self.browser.to_string_lossy(), "args": args},
            "timeouts": {"implicit": 5000, "script": PAGE_WAIT.as_millis() as u64, "pageLoad": 20000},
            "unhandledPromptBehavior": "accept"
        }}});
        let value = self.call("POST", "/session", Some(caps));
        let id = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id: {value}"))
            .to_owned();
        Browser { driver: self, id }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session.
pub struct Browser<'d> {
    driver: &'d Driver,
    id: String,
}

impl Browser<'_> {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.driver
            .call(method, &format!("/session/{}{path}", self.id), body)
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url})));
    }

    /// The element `css` selects (waiting up to the implicit timeout).
    pub fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.call(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({"text": text})),
        );
    }

    /// Empties an input.
    pub fn clear(&self, css: &str) {
        let el = self.find(css);
        self.call("POST", &format!("/element/{el}/clear"), Some(json!({})));
    }

    pub fn click(&self, css: &str) {
        let el = self.find(css);
        self.call("POST", &format!("/element/{el}/click"), Some(json!({})));
    }

    /// Runs `script` (a function body) with `args`; returns its value.
    pub fn run(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Waits, in the page, until the text of `css` contains `text`.
    pub fn wait_text(&self, css: &str, text: &str) {
        let script = r#"
            const [sel, want, done] = arguments;
            const ok = () => { const n = document.querySelector(sel); return !!n && n.textContent.includes(want); };
            if (ok()) return done(true);
            const obs = new MutationObserver(() => { if (ok()) { obs.disconnect(); done(true); } });
            obs.observe(document.documentElement, {subtree: true, childList: true, characterData: true, attributes: true});
        "#;
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.call(
                "POST",
                "/execute/async",
                Some(json!({"script": script, "args": [css, text]})),
            )
        }));
        if got.is_err() {
            let now = self.run(
                "const n = document.querySelector(arguments[0]); return n ? n.textContent : null;",
                json!([css]),
            );
            panic!("{css} never contained {text:?}; it holds {now}");
        }
    }

    /// Waits, in the page, until `css` is shown (or hidden, with `false`).
    pub fn wait_shown(&self, css: &str, shown: bool) {
        let script = r#"
            const [sel, want, done] = arguments;
            const ok = () => { const n = document.querySelector(sel); return !!n && (!n.hidden) === want; };
            if (ok()) return done(true);
            const obs = new MutationObserver(() => { if (ok()) { obs.disconnect(); done(true); } });
            obs.observe(document.documentElement, {subtree: true, childList: true, attributes: true});
        "#;
        self.call(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": [css, shown]})),
        );
    }

    /// Saves a PNG screenshot to `path`.
    pub fn screenshot(&self, path: &Path) {
        let v = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 screenshot"))
            .expect("a base64 PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    pub fn set_size(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = self
            .driver
            .agent
            .delete(format!("{}/session/{}", self.driver.url, self.id))
            .call();
    }
}
