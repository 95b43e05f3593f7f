//! One follower machine of a multi-machine test: its own folder (`PRYV_CONF_ROOT`), key, port and fake
//! `docker`, and the real follower started against a leader.
// Test code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::{Daemon, FakeDocker, follower_command};

pub struct Machine {
    pub name: &'static str,
    /// Its key, as the leader's `followers` must list it.
    pub key: String,
    pub root: PathBuf,
    pub port: u16,
    pub docker: FakeDocker,
    pub daemon: Option<Daemon>,
}

impl Machine {
    /// A machine in `base/<name>`, not started.
    pub fn new(base: &Path, name: &'static str) -> Self {
        let root = base.join(name);
        Self {
            name,
            key: format!("{name}-follower-key-0123456789abcdefghij"),
            docker: FakeDocker::new(&root),
            root,
            port: crate::free_port(),
            daemon: None,
        }
    }

    /// Its URL, for the leader's `followers`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A file of its data folder (`pryv/<relative>`), empty when missing.
    pub fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.root.join("pryv").join(relative)).unwrap_or_default()
    }

    /// Starts its follower against `leader_url` and waits until it listens.
    pub fn start(&mut self, leader_url: &str) {
        self.start_on(&[leader_url.to_owned()]);
    }

    /// Starts its follower against the leader replicas `leader_urls` (`leader.url` the first, `leader.urls`
    /// all of them; long-polling when there are several) and waits until it listens.
    pub fn start_on(&mut self, leader_urls: &[String]) {
        let leader_url = leader_urls[0].as_str();
        let config = self.root.join("config-follower.json");
        std::fs::create_dir_all(&self.root).unwrap();
        std::fs::write(
            &config,
            json!({
                "leader": {"url": leader_url, "urls": leader_urls, "auth": self.key, "longPoll": leader_urls.len() > 1},
                "paths": {"dataFolder": self.root.join("pryv")},
            })
            .to_string(),
        )
        .unwrap();
        let command = follower_command(&config, leader_url, self.port, &self.docker);
        let mut daemon = Daemon::spawn(command).with_credential(&self.key);
        daemon.wait_listening(Duration::from_secs(30));
        self.daemon = Some(daemon);
    }
}
