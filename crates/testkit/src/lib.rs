//! What the tests of every crate share: real daemons on ephemeral loopback ports (their log captured, their
//! address read from the "listening" line, killed on drop), free ports, waits for conditions with deadlines,
//! skips reported on stderr, and [`Api`], a fluent client of an axum router in process:
//! `api.post("/users").token(&t).json(body).send().await`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]
// Test code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// Whether `program arg` runs and succeeds (a tool is installed and, for `docker info`, answering).
pub fn available(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `git args` in `dir` as an operator named Grace would (author and committer set), asserting success;
/// its trimmed standard output.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Grace")
        .env("GIT_AUTHOR_EMAIL", "grace@example.com")
        .env("GIT_COMMITTER_NAME", "Grace")
        .env("GIT_COMMITTER_EMAIL", "grace@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Reports a check that could not run, on the real stderr (not the captured test output) so the skip is
/// visible in CI logs.
pub fn skip(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {what}");
}

/// Installs rustls' ring provider for the test's reqwest clients.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A free loopback port (bound then released; for processes that must start later on a known port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` until it returns `Some`, panicking after `within`.
pub fn wait_until<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls the async `check` every 20 ms until it returns `Some`; `None` once `within` has passed. The one
/// async wait of the tests: a condition with a deadline, never a sleep standing for an event.
pub async fn poll_until<T, F: std::future::Future<Output = Option<T>>>(
    within: Duration,
    mut check: impl FnMut() -> F,
) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`poll_until`], panicking with `what` at the deadline.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    within: Duration,
    check: impl FnMut() -> F,
) -> T {
    match poll_until(within, check).await {
        Some(value) => value,
        None => panic!("timed out after {within:?} waiting for {what}"),
    }
}

/// Writes `text` at `root/relative`, creating folders.
pub fn write(root: &Path, relative: &str, text: &str) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A daemon process: its captured log lines, its listening address; killed on drop.
pub struct Daemon {
    pub child: Child,
    pub addr: Option<SocketAddr>,
    pub logs: Arc<Mutex<Vec<String>>>,
    /// The key its protected routes want (a follower's `/status`), when the test set one.
    pub credential: Option<String>,
    listening: mpsc::Receiver<SocketAddr>,
}

impl Daemon {
    /// Spawns `command` with stderr captured.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, listening) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Logged before the address is announced: a test that saw it listening sees the line too.
                sink.lock().unwrap().push(line.clone());
                if line.contains("listening")
                    && let Some(addr) = line.split("addr=").nth(1)
                    && let Ok(addr) = addr.split_whitespace().next().unwrap_or_default().parse()
                {
                    let _ = tx.send(addr);
                }
            }
        });
        Self {
            child,
            addr: None,
            logs,
            credential: None,
            listening,
        }
    }

    /// Records the key its protected routes want.
    pub fn with_credential(mut self, key: &str) -> Self {
        self.credential = Some(key.to_owned());
        self
    }

    /// Waits for the "listening" line and returns the address.
    pub fn wait_listening(&mut self, within: Duration) -> SocketAddr {
        if let Some(addr) = self.addr {
            return addr;
        }
        let addr = self.listening.recv_timeout(within).unwrap_or_else(|_| {
            panic!(
                "daemon did not start listening; logs:\n{}",
                self.logs.lock().unwrap().join("\n")
            )
        });
        self.addr = Some(addr);
        addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr.expect("not listening yet"))
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "daemon did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An axum router called in process.
#[derive(Clone)]
pub struct Api {
    app: Router,
}

/// One request being built.
pub struct Call {
    app: Router,
    request: axum::http::request::Builder,
    body: Option<Value>,
}

/// What came back: status, headers, the JSON body (`Null` when empty or not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Api {
    pub fn new(app: Router) -> Self {
        Self { app }
    }

    pub fn call(&self, method: Method, path: &str) -> Call {
        Call {
            app: self.app.clone(),
            request: Request::builder().method(method).uri(path),
            body: None,
        }
    }

    pub fn get(&self, path: &str) -> Call {
        self.call(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> Call {
        self.call(Method::POST, path)
    }

    pub fn put(&self, path: &str) -> Call {
        self.call(Method::PUT, path)
    }

    pub fn delete(&self, path: &str) -> Call {
        self.call(Method::DELETE, path)
    }
}

impl Call {
    /// The credential (`Authorization` header), when there is one.
    pub fn token(self, token: Option<&str>) -> Self {
        match token {
            Some(token) => self.header("authorization", token),
            None => self,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.request = self.request.header(name, value);
        self
    }

    pub fn json(mut self, body: Option<Value>) -> Self {
        self.body = body;
        self
    }

    /// Sends it; the whole answer.
    pub async fn answer(self) -> Answer {
        let (status, headers, bytes) = self.raw().await;
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn raw(self) -> (StatusCode, HeaderMap, axum::body::Bytes) {
        let mut request = self.request;
        let body = match self.body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let response = self.app.oneshot(request.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, bytes)
    }

    /// Sends it; status and the body as text (`/metrics`).
    pub async fn send_text(self) -> (StatusCode, String) {
        let (status, _, bytes) = self.raw().await;
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Sends it; status and JSON body.
    pub async fn send(self) -> (StatusCode, Value) {
        let answer = self.answer().await;
        (answer.status, answer.body)
    }
}
