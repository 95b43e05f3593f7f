//! `config-follower.json`: the Pryv-compatible keys (`http`, `leader`, `paths`) plus our optional ones, with
//! overrides from flags and the environment, validated into a [`Config`]. Every problem is reported at once.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::error::Error;
use pryv_protocol::Secret;

pub const DEFAULT_PORT: u16 = 6000;
const DEFAULT_DEBOUNCE_MS: u64 = 500;
const DEFAULT_RESTART_TIMEOUT_S: u64 = 300;
/// A tree that would remove more than this share of the files the follower wrote is refused unless forced.
pub const DEFAULT_MAX_REMOVAL_PERCENT: u8 = 50;

/// Values from flags or the environment; they win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
    pub leader_url: Option<String>,
    pub leader_auth: Option<String>,
    pub data_folder: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub restart_command: Option<Vec<String>>,
    pub no_watch: bool,
    pub poll_interval: Option<u64>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub listen: SocketAddr,
    /// Base URL of the leader, without trailing slash.
    pub leader_url: String,
    /// This follower's key: sent to the leader and required on `/notify`.
    pub key: Secret,
    /// Extra CA certificate (PEM) trusted for the leader.
    pub ca_file: Option<PathBuf>,
    /// The machine's `pryv/` folder (absolute).
    pub data_folder: PathBuf,
    /// Program and leading arguments of the compose tool; `None` = detect `docker compose` / `docker-compose`.
    pub restart_command: Option<Vec<String>>,
    pub restart_timeout: Duration,
    pub watch: bool,
    pub debounce: Duration,
    /// Periodic re-fetch; `None` = off.
    pub poll_interval: Option<Duration>,
    /// Per service: a shell command run on the staged new files before they replace the old ones.
    pub validate: BTreeMap<String, String>,
    /// Refuse a tree that removes more than this percentage of the files written before (an empty or
    /// truncated template folder on the leader), unless a notification says `confirmRemovals`.
    pub max_removal_percent: u8,
    /// Serve `/notify` over HTTPS with this certificate and key (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Bearer token required on `GET /metrics` (`None` = open).
    pub metrics_token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    leader: RawLeader,
    #[serde(default)]
    paths: RawPaths,
    #[serde(default)]
    restart: RawRestart,
    #[serde(default)]
    watch: RawWatch,
    #[serde(default)]
    poll: RawPoll,
    #[serde(default)]
    validate: BTreeMap<String, String>,
    #[serde(default)]
    apply: RawApply,
    #[serde(default)]
    tls: Option<RawTls>,
    #[serde(default)]
    metrics: RawMetrics,
}

#[derive(Deserialize, Default)]
struct RawMetrics {
    token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawApply {
    max_removal_percent: Option<u8>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawHttp {
    ip: Option<String>,
    port: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawLeader {
    url: Option<String>,
    auth: Option<String>,
    ca_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawPaths {
    data_folder: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawRestart {
    command: Option<Vec<String>>,
    timeout_seconds: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawWatch {
    enabled: Option<bool>,
    debounce_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawPoll {
    interval_seconds: Option<u64>,
}

impl Config {
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|err| Error::Config {
            path: path.to_owned(),
            problems: vec![format!("cannot read the configuration file: {err}")],
        })?;
        let raw: RawConfig = serde_json::from_str(&text).map_err(|err| Error::Config {
            path: path.to_owned(),
            problems: vec![format!("not a valid configuration: {err}")],
        })?;
        validate(path, raw, overrides)
    }
}

fn validate(path: &Path, raw: RawConfig, overrides: &Overrides) -> Result<Config, Error> {
    let base = path.parent().unwrap_or(Path::new(".")).to_owned();
    let resolve = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        }
    };
    let mut problems = Vec::new();

    let ip = overrides.ip.or_else(|| {
        let text = raw.http.ip.as_deref().unwrap_or("0.0.0.0");
        text.parse()
            .map_err(|_| problems.push(format!("http.ip: {text:?} is not an IP address")))
            .ok()
    });
    let port = overrides.port.or_else(|| match &raw.http.port {
        None => Some(DEFAULT_PORT),
        Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    });
    if port.is_none() {
        problems.push("http.port: not a port number (0-65535)".to_owned());
    }

    let leader_url = overrides
        .leader_url
        .clone()
        .or(raw.leader.url)
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_owned();
    if leader_url.is_empty() {
        problems.push(
            "leader.url is missing; set the leader's base URL, e.g. \"https://lead.pryv.me\""
                .to_owned(),
        );
    } else if !(leader_url.starts_with("http://") || leader_url.starts_with("https://")) {
        problems.push(format!(
            "leader.url: {leader_url:?} must start with http:// or https://"
        ));
    }
    let key = overrides
        .leader_auth
        .clone()
        .or(raw.leader.auth)
        .unwrap_or_default();
    if key.trim().is_empty() {
        problems.push(
            "leader.auth is missing; set this follower's key as listed in the leader's followers"
                .to_owned(),
        );
    }
    let ca_file = overrides
        .ca_file
        .clone()
        .or_else(|| raw.leader.ca_file.as_deref().map(resolve));
    if let Some(ca) = &ca_file
        && !ca.is_file()
    {
        problems.push(format!("leader.caFile: {} is not a file", ca.display()));
    }

    let data_folder = overrides
        .data_folder
        .clone()
        .or_else(|| raw.paths.data_folder.as_deref().map(resolve));
    // Relative `dataFolder` values resolve against the configuration file's folder, like every path here.
    let data_folder = match data_folder {
        Some(folder) => Some(absolute(&folder)),
        None => {
            problems.push("paths.dataFolder is missing; set the machine's pryv/ folder".to_owned());
            None
        }
    };

    let restart_command = overrides.restart_command.clone().or(raw.restart.command);
    if restart_command.as_ref().is_some_and(Vec::is_empty) {
        problems.push(
            "restart.command: give at least the program, e.g. [\"docker\", \"compose\"]".to_owned(),
        );
    }

    let tls = match raw.tls.as_ref().map(|t| (&t.cert_file, &t.key_file)) {
        None => None,
        Some((Some(cert), Some(key))) => Some((resolve(cert), resolve(key))),
        Some(_) => {
            problems.push("tls: give both certFile and keyFile (PEM), or neither".to_owned());
            None
        }
    };
    for file in tls.iter().flat_map(|(c, k)| [c, k]) {
        if !file.is_file() {
            problems.push(format!("tls: {} is not a file", file.display()));
        }
    }
    let max_removal_percent = raw
        .apply
        .max_removal_percent
        .unwrap_or(DEFAULT_MAX_REMOVAL_PERCENT);
    if max_removal_percent > 100 {
        problems.push("apply.maxRemovalPercent: give a percentage (0-100)".to_owned());
    }

    let poll = overrides
        .poll_interval
        .or(raw.poll.interval_seconds)
        .filter(|s| *s > 0);

    match (ip, port, data_folder) {
        (Some(ip), Some(port), Some(data_folder)) if problems.is_empty() => Ok(Config {
            path: path.to_owned(),
            listen: SocketAddr::new(ip, port),
            leader_url,
            key: Secret::new(key),
            ca_file,
            data_folder,
            restart_command,
            restart_timeout: Duration::from_secs(
                raw.restart
                    .timeout_seconds
                    .unwrap_or(DEFAULT_RESTART_TIMEOUT_S),
            ),
            watch: !overrides.no_watch && raw.watch.enabled.unwrap_or(true),
            debounce: Duration::from_millis(raw.watch.debounce_ms.unwrap_or(DEFAULT_DEBOUNCE_MS)),
            poll_interval: poll.map(Duration::from_secs),
            validate: raw.validate,
            max_removal_percent,
            tls,
            metrics_token: raw.metrics.token.filter(|t| !t.is_empty()),
        }),
        _ => Err(Error::Config {
            path: path.to_owned(),
            problems,
        }),
    }
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str) -> Result<Config, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config-follower.json");
        std::fs::write(&path, json).unwrap();
        Config::load(&path, &Overrides::default())
    }

    #[test]
    fn legacy_file_loads() {
        let config = load(
            r#"{"http": {"ip": "0.0.0.0", "port": 6000},
                "leader": {"url": "https://lead.pryv.me/", "auth": "k"},
                "paths": {"dataFolder": "/var/pryv/pryv/"}}"#,
        )
        .unwrap();
        assert_eq!(config.leader_url, "https://lead.pryv.me");
        assert_eq!(config.data_folder, PathBuf::from("/var/pryv/pryv/"));
        assert!(config.watch);
        assert_eq!(config.poll_interval, None);
        assert_eq!(format!("{:?}", config.key), "***");
    }

    #[test]
    fn every_problem_is_listed() {
        let err = load(r#"{"http": {"port": "x"}, "leader": {"url": "ftp://x"}}"#).unwrap_err();
        let text = err.to_string();
        for expected in ["http.port", "leader.url", "leader.auth", "paths.dataFolder"] {
            assert!(text.contains(expected), "{expected} missing from {text}");
        }
    }
}
