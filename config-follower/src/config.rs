//! `config-follower.json`: the Pryv-compatible keys (`http`, `leader`, `paths`) plus our optional ones, with
//! overrides from flags and the environment, validated into a [`Config`]. Every problem is reported at once.
// Blocking: the configuration is read at start-up, before the runtime serves.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pryv_protocol::Secret;
use pryv_protocol::follower_file::{self as file, FOLLOWER_DEFAULT_PORT, FollowerFile};

use crate::error::Error;

pub const DEFAULT_PORT: u16 = FOLLOWER_DEFAULT_PORT;
const DEFAULT_DEBOUNCE_MS: u64 = 500;
const DEFAULT_RESTART_TIMEOUT_S: u64 = 300;
/// A tree that would remove more than this share of the files the follower wrote is refused unless forced.
pub const DEFAULT_MAX_REMOVAL_PERCENT: u8 = 50;
const DEFAULT_HEALTH_DEADLINE_S: u64 = 120;
const DEFAULT_HEALTH_SETTLE_S: u64 = 10;

/// The health gate after restarts (`health` in the file); off unless `enabled`.
#[derive(Debug, Clone, Default)]
pub struct HealthConfig {
    pub enabled: bool,
    pub deadline: Duration,
    pub settle: Duration,
    pub probes: BTreeMap<String, file::Probe>,
}

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
    /// Base URL of the leader, without trailing slash (the first of `leader_urls`).
    pub leader_url: String,
    /// Every leader to try, in order: `leader.url`, then `leader.urls` (replicas of one platform).
    pub leader_urls: Vec<String>,
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
    pub health: HealthConfig,
    /// Wait on the leader for changes (`GET /conf?wait=`).
    pub long_poll: bool,
}

impl Config {
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Self, Error> {
        let problem = |message: String| Error::Config {
            path: path.to_owned(),
            problems: vec![message],
        };
        let text = std::fs::read_to_string(path)
            .map_err(|err| problem(format!("cannot read the configuration file: {err}")))?;
        let (file, problems) = FollowerFile::from_json(&text).map_err(problem)?;
        validate(path, file, problems, overrides)
    }
}

/// The checks of this file: the shared ones (paths, problems, listen address) and the overrides.
struct Checks<'a> {
    common: pryv_daemon::ConfigChecks,
    overrides: &'a Overrides,
}

impl Checks<'_> {
    fn resolve(&self, path: &str) -> PathBuf {
        self.common.resolve(path)
    }

    fn check_listen(&mut self, http: &file::Http) -> Option<SocketAddr> {
        self.common.listen(
            (self.overrides.ip, self.overrides.port),
            (http.ip.as_deref(), http.port.as_ref()),
            ("0.0.0.0", FOLLOWER_DEFAULT_PORT),
        )
    }

    fn check_leader(&mut self, leader: file::Leader) -> (Vec<String>, String, Option<PathBuf>) {
        let mut urls: Vec<String> = Vec::new();
        let first = self.overrides.leader_url.clone().or(leader.url);
        for (name, url) in first.into_iter().map(|u| ("leader.url", u)).chain(
            leader
                .urls
                .into_iter()
                .flatten()
                .map(|u| ("leader.urls", u)),
        ) {
            let url = url.trim_end_matches('/').to_owned();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                self.common.problems.push(format!(
                    "{name}: {url:?} must start with http:// or https://"
                ));
            } else if !urls.contains(&url) {
                urls.push(url);
            }
        }
        if urls.is_empty() && self.common.problems.is_empty() {
            self.common.problems.push(
                "leader.url is missing; set the leader's base URL, e.g. \"https://lead.pryv.me\""
                    .to_owned(),
            );
        }
        let key = self
            .overrides
            .leader_auth
            .clone()
            .or(leader.auth)
            .unwrap_or_default();
        if key.trim().is_empty() {
            self.common.problems.push(
                "leader.auth is missing; set this follower's key as listed in the leader's followers".to_owned(),
            );
        }
        let ca_file = self
            .overrides
            .ca_file
            .clone()
            .or_else(|| leader.ca_file.as_deref().map(|p| self.resolve(p)));
        if let Some(ca) = &ca_file
            && !ca.is_file()
        {
            self.common
                .problems
                .push(format!("leader.caFile: {} is not a file", ca.display()));
        }
        (urls, key, ca_file)
    }

    fn check_paths(&mut self, paths: &file::Paths) -> Option<PathBuf> {
        let folder = self
            .overrides
            .data_folder
            .clone()
            .or_else(|| paths.data_folder.as_deref().map(|p| self.resolve(p)));
        // Relative `dataFolder` values resolve against the configuration file's folder, like every path here.
        if folder.is_none() {
            self.common
                .problems
                .push("paths.dataFolder is missing; set the machine's pryv/ folder".to_owned());
        }
        folder.map(|f| absolute(&f))
    }

    fn check_restart(&mut self, restart: &file::Restart) -> Option<Vec<String>> {
        let command = self
            .overrides
            .restart_command
            .clone()
            .or_else(|| restart.command.clone());
        if command.as_ref().is_some_and(Vec::is_empty) {
            self.common.problems.push(
                "restart.command: give at least the program, e.g. [\"docker\", \"compose\"]"
                    .to_owned(),
            );
        }
        command
    }

    fn check_tls(&mut self, tls: Option<&file::Tls>) -> Option<(PathBuf, PathBuf)> {
        let pair = match tls.map(|t| (&t.cert_file, &t.key_file)) {
            None => None,
            Some((Some(cert), Some(key))) => Some((self.resolve(cert), self.resolve(key))),
            Some(_) => {
                self.common
                    .problems
                    .push("tls: give both certFile and keyFile (PEM), or neither".to_owned());
                None
            }
        };
        for file in pair.iter().flat_map(|(c, k)| [c, k]) {
            if !file.is_file() {
                self.common
                    .problems
                    .push(format!("tls: {} is not a file", file.display()));
            }
        }
        pair
    }

    fn check_health(&mut self, health: file::Health) -> HealthConfig {
        let deadline = health.deadline_seconds.unwrap_or(DEFAULT_HEALTH_DEADLINE_S);
        let settle = health.settle_seconds.unwrap_or(DEFAULT_HEALTH_SETTLE_S);
        if deadline == 0 {
            self.common
                .problems
                .push("health.deadlineSeconds: give at least 1 second".to_owned());
        }
        if settle >= deadline && deadline > 0 {
            self.common.problems.push(format!(
                "health.settleSeconds ({settle}) must be shorter than health.deadlineSeconds ({deadline})"
            ));
        }
        for (service, probe) in &health.probes {
            let target = match probe {
                file::Probe::Http(url)
                    if url.starts_with("http://") || url.starts_with("https://") =>
                {
                    None
                }
                file::Probe::Http(url) => {
                    Some(format!("{url:?} must start with http:// or https://"))
                }
                file::Probe::Tcp(addr)
                    if addr
                        .rsplit_once(':')
                        .is_some_and(|(_, p)| p.parse::<u16>().is_ok()) =>
                {
                    None
                }
                file::Probe::Tcp(addr) => Some(format!("{addr:?} must be host:port")),
            };
            if let Some(problem) = target {
                self.common
                    .problems
                    .push(format!("health.probes.{service}: {problem}"));
            }
        }
        HealthConfig {
            enabled: health.enabled.unwrap_or(false),
            deadline: Duration::from_secs(deadline),
            settle: Duration::from_secs(settle),
            probes: health.probes,
        }
    }

    fn check_apply(&mut self, apply: &file::Apply) -> u8 {
        let percent = apply
            .max_removal_percent
            .unwrap_or(DEFAULT_MAX_REMOVAL_PERCENT);
        if percent > 100 {
            self.common
                .problems
                .push("apply.maxRemovalPercent: give a percentage (0-100)".to_owned());
        }
        percent
    }
}

fn validate(
    path: &Path,
    file: FollowerFile,
    problems: Vec<String>,
    overrides: &Overrides,
) -> Result<Config, Error> {
    let mut checks = Checks {
        common: pryv_daemon::ConfigChecks::new(path, problems),
        overrides,
    };
    let listen = checks.check_listen(&file.http);
    let long_poll = file.leader.long_poll.unwrap_or(false);
    let (leader_urls, key, ca_file) = checks.check_leader(file.leader);
    let leader_url = leader_urls.first().cloned().unwrap_or_default();
    let data_folder = checks.check_paths(&file.paths);
    let restart_command = checks.check_restart(&file.restart);
    let tls = checks.check_tls(file.tls.as_ref());
    let max_removal_percent = checks.check_apply(&file.apply);
    let health = checks.check_health(file.health);
    let poll = overrides
        .poll_interval
        .or(file.poll.interval_seconds)
        .filter(|s| *s > 0);
    match (listen, data_folder) {
        (Some(listen), Some(data_folder)) if checks.common.problems.is_empty() => Ok(Config {
            path: path.to_owned(),
            listen,
            leader_url,
            leader_urls,
            key: Secret::new(key),
            ca_file,
            data_folder,
            restart_command,
            restart_timeout: Duration::from_secs(
                file.restart
                    .timeout_seconds
                    .unwrap_or(DEFAULT_RESTART_TIMEOUT_S),
            ),
            watch: !overrides.no_watch && file.watch.enabled.unwrap_or(true),
            debounce: Duration::from_millis(file.watch.debounce_ms.unwrap_or(DEFAULT_DEBOUNCE_MS)),
            poll_interval: poll.map(Duration::from_secs),
            validate: file.validate,
            max_removal_percent,
            tls,
            metrics_token: file.metrics.token.filter(|t| !t.is_empty()),
            health,
            long_poll,
        }),
        _ => Err(Error::Config {
            path: path.to_owned(),
            problems: checks.common.problems,
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
