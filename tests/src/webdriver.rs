//! A W3C WebDriver session on Debian's `chromedriver` and headless `chromium`, for the console tests: the
//! few commands they use (navigate, find, click, type, run a script, screenshot, the browser log) as JSON over
//! HTTP on loopback. Nothing is downloaded: where the driver or the browser is missing, `start` says so.
// Test code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

/// The key W3C WebDriver names an element reference by.
pub const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    client: reqwest::Client,
    session: String,
    driver: Child,
    screenshots: PathBuf,
}

/// The driver and the browser, if both are installed.
pub fn installed() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| {
        names.iter().find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|path| path.is_file())
            })
        })
    };
    Some((
        find(&["chromedriver"])?,
        find(&["chromium", "chromium-browser", "google-chrome"])?,
    ))
}

impl Browser {
    /// A headless browser `width` × `height` whose screenshots go to `screenshots`.
    pub async fn start(screenshots: &Path, width: u32, height: u32) -> Option<Self> {
        let (driver_path, browser_path) = installed()?;
        let port = crate::free_port();
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let ready = pryv_testkit::poll_until(Duration::from_secs(20), || {
            let client = client.clone();
            let url = format!("{base}/status");
            async move {
                let body: Value = client.get(url).send().await.ok()?.json().await.ok()?;
                (body["value"]["ready"] == true).then_some(())
            }
        })
        .await;
        ready?;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser_path,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--window-size={width},{height}"), "--no-first-run", "--disable-extensions"]
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let answer: Value = client
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let session = answer["value"]["sessionId"].as_str()?.to_owned();
        std::fs::create_dir_all(screenshots).ok()?;
        Some(Self {
            client,
            session: format!("{base}/session/{session}"),
            driver,
            screenshots: screenshots.to_owned(),
        })
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Moves the console to `hash` (`#/settings`) and waits until that screen is drawn.
    pub async fn goto_hash(&self, hash: &str) {
        let screen = hash
            .trim_start_matches("#/")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        self.run("location.hash = arguments[0];", json!([hash]))
            .await;
        pryv_testkit::eventually(
            &format!("the {screen} screen"),
            Duration::from_secs(15),
            || async {
                let drawn = self
                    .run(
                        "return document.getElementById('view').dataset.screen || '';",
                        json!([]),
                    )
                    .await;
                (drawn == screen.as_str()).then_some(())
            },
        )
        .await;
    }

    /// Runs `script` in the page (its `arguments` are `args`) and returns its value.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    async fn find_now(&self, using: &str, value: &str) -> Option<String> {
        let found = self
            .command(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": using, "value": value})),
            )
            .await;
        found.as_array()?.first()?[ELEMENT]
            .as_str()
            .map(str::to_owned)
    }

    /// The first element matching the CSS selector, waited for.
    pub async fn find(&self, css: &str) -> String {
        self.find_by("css selector", css).await
    }

    /// The first button whose text is `text`, waited for.
    pub async fn button(&self, text: &str) -> String {
        self.find_by("xpath", &format!("//button[normalize-space(.)='{text}']"))
            .await
    }

    async fn find_by(&self, using: &str, value: &str) -> String {
        pryv_testkit::eventually(
            &format!("an element {value}"),
            Duration::from_secs(15),
            || self.find_now(using, value),
        )
        .await
    }

    pub async fn click(&self, element: &str) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Replaces the text of an input.
    pub async fn type_into(&self, element: &str, text: &str) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/clear"),
            Some(json!({})),
        )
        .await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The visible text of the element matching the CSS selector (empty when there is none).
    pub async fn text(&self, css: &str) -> String {
        self.run(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Waits until the element matching `css` shows `needle` in its text.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        pryv_testkit::eventually(
            &format!("{css} showing {needle:?}"),
            Duration::from_secs(20),
            || async {
                let text = self.text(css).await;
                text.contains(needle).then_some(text)
            },
        )
        .await
    }

    /// Writes `<name>.png` beside the others.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let data = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .unwrap();
        let path = self.screenshots.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// What went wrong in the page: the console's own record of errors and CSP violations, and every
    /// SEVERE entry of the browser's log but the HTTP answers the test caused on purpose (`expected`: the
    /// path and status of each, e.g. `("/auth/login", 401)` for a wrong password).
    pub async fn errors(&self, expected: &[(&str, u16)]) -> Vec<String> {
        let mut errors: Vec<String> = self
            .run(
                "return window.__consoleErrors || ['the console did not load'];",
                json!([]),
            )
            .await
            .as_array()
            .map(|l| l.iter().map(|e| e.to_string()).collect())
            .unwrap_or_default();
        let log = self
            .command(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({"type": "browser"})),
            )
            .await;
        for entry in log.as_array().into_iter().flatten() {
            let message = entry["message"].as_str().unwrap_or_default();
            let wanted = expected.iter().any(|(path, status)| {
                message.contains(&format!("{path} - Failed to load resource: the server responded with a status of {status} "))
            });
            if entry["level"] == "SEVERE" && !wanted {
                errors.push(message.to_owned());
            }
        }
        errors
    }

    pub async fn quit(mut self) {
        let _ = self.client.delete(&self.session).send().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}
