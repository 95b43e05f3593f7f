//! Process plumbing shared by both daemons: log set-up, turning SIGTERM/SIGINT into a cancellation, systemd
//! readiness, exit codes, the TLS settings, and the accept loop with its connection limits. No routes, no
//! configuration format.

mod json_errors;
mod logging;
pub mod metrics;
mod serve;
mod tls;

pub use json_errors::json_errors;

/// Unix seconds now (0 if the clock is before 1970): the one clock of both daemons.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// [`now_unix`] as the signed integer SQLite stores.
pub fn now_unix_i64() -> i64 {
    i64::try_from(now_unix()).unwrap_or(i64::MAX)
}
pub use logging::{LogFormat, LogGuard, init_logging};
pub use serve::{
    DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DRAIN, ServeOptions, connection_cap, serve,
    server_tls,
};
pub use tls::{client_tls, client_tls_with_identity, error_chain};
use tokio_util::sync::CancellationToken;

/// sysexits' EX_CONFIG: the configuration is wrong; fix it before restarting.
pub const EXIT_CONFIG: u8 = 78;

/// Tells systemd (`Type=notify`) the daemon is ready: configuration loaded and socket bound. A no-op when not
/// started by systemd (`NOTIFY_SOCKET` unset).
pub fn notify_ready() {
    if let Err(err) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %err, "cannot send the readiness notification to systemd");
    }
}

/// Tells systemd the daemon is stopping.
pub fn notify_stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}

/// The body of both daemons' `main`: a multi-threaded runtime, SIGTERM/SIGINT turned into the cancellation of
/// the token given to `body`, and `body`'s exit code.
pub fn run_until_signal<F, Fut>(program: &str, body: F) -> std::process::ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = std::process::ExitCode>,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{program}: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        body(shutdown).await
    })
}

/// What both daemons' configuration checks share: the folder relative paths resolve against, the list of
/// problems every check adds to, and the listen address check.
pub struct ConfigChecks {
    base: std::path::PathBuf,
    pub problems: Vec<String>,
}

impl ConfigChecks {
    /// Checks of the file at `config_path`, starting with the `problems` found while reading it.
    pub fn new(config_path: &std::path::Path, problems: Vec<String>) -> Self {
        Self {
            base: config_path
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .to_owned(),
            problems,
        }
    }

    pub fn resolve(&self, path: &str) -> std::path::PathBuf {
        resolve_path(&self.base, path)
    }

    pub fn push(&mut self, problem: String) {
        self.problems.push(problem);
    }

    /// The listen address: overrides first, then the file's `http.ip`/`http.port`, then the defaults.
    pub fn listen(
        &mut self,
        overrides: (Option<std::net::IpAddr>, Option<u16>),
        file: (Option<&str>, Option<&serde_json::Value>),
        defaults: (&str, u16),
    ) -> Option<std::net::SocketAddr> {
        let ip = overrides.0.or_else(|| {
            parse_ip(file.0.unwrap_or(defaults.0))
                .map_err(|problem| {
                    self.push(format!(
                        "http.ip: {problem}; use e.g. \"0.0.0.0\" or \"127.0.0.1\""
                    ))
                })
                .ok()
        });
        let port = overrides.1.or_else(|| {
            parse_port(file.1, defaults.1)
                .map_err(|problem| self.push(format!("http.port: {problem}")))
                .ok()
        });
        Some(std::net::SocketAddr::new(ip?, port?))
    }
}

/// `path` from a configuration file in `base`: absolute as given, else relative to `base`.
pub fn resolve_path(base: &std::path::Path, path: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(path);
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

/// An `ip` setting; the error says what was wrong.
pub fn parse_ip(text: &str) -> Result<std::net::IpAddr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an IP address"))
}

/// A `port` setting: a number or a string holding one (legacy files have both); absent = `default`.
pub fn parse_port(value: Option<&serde_json::Value>, default: u16) -> Result<u16, String> {
    let port = match value {
        None => Some(default),
        Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    };
    port.ok_or_else(|| "not a port number (0-65535)".to_owned())
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
        _ = shutdown.cancelled() => return,
    }
    shutdown.cancel();
}
