//! The platform most end-to-end tests share: a leader folder with role `core` (three services) and a
//! follower data folder in one temporary `PRYV_CONF_ROOT`, a fake `docker`, and small HTTP helpers.
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::{Daemon, FakeDocker, bin, install_crypto, write};

pub const KEY: &str = "core-follower-key-0123456789abcdefgh";

pub const PLATFORM: &str = "vars:
  MAIN:
    name: Main
    settings:
      DOMAIN:
        value: pryv.me
  MAIL:
    name: Mail
    settings:
      MAIL_HOST:
        value: smtp.pryv.me
";

pub const COMPOSE: &str = "services:
  core:
    image: core
    volumes:
      - ${PRYV_CONF_ROOT}/pryv/core/conf/:/app/conf/:ro
      - ${PRYV_CONF_ROOT}/pryv/core/data/:/app/data/
  nginx:
    image: nginx
    volumes:
      - ./nginx/conf/:/etc/nginx/:ro
  mail:
    image: mail
    volumes:
      - ./mail/conf/:/app/conf/:ro
";

/// Role `core` of the multi-machine tests under `data` (a templates folder): its compose file, the core's
/// `core.yml` (`core_yml`), the mail service's host and nginx's domain.
pub fn write_core_role(data: &Path, core_yml: &str) {
    write(data, "core/pryv.yml", COMPOSE);
    write(data, "core/core/conf/core.yml", core_yml);
    write(data, "core/mail/conf/mail.yml", "host: MAIL_HOST\n");
    write(
        data,
        "core/nginx/conf/nginx.conf",
        "server_name *.DOMAIN;\n",
    );
}

/// A leader folder with role `core` and a follower data folder, in one temporary `PRYV_CONF_ROOT`.
pub struct Platform {
    pub root: tempfile::TempDir,
    pub docker: FakeDocker,
}

impl Default for Platform {
    fn default() -> Self {
        Self::new()
    }
}

impl Platform {
    pub fn new() -> Self {
        install_crypto();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r, "config-leader/conf/platform.yml", PLATFORM);
        write(r, "config-leader/data/core/pryv.yml", COMPOSE);
        write(
            r,
            "config-leader/data/core/core/conf/core.yml",
            "domain: DOMAIN\n",
        );
        write(r, "config-leader/data/core/core/data/.gitkeep", "");
        write(
            r,
            "config-leader/data/core/nginx/conf/nginx.conf",
            "server_name *.DOMAIN;\n",
        );
        write(
            r,
            "config-leader/data/core/mail/conf/mail.yml",
            "host: MAIL_HOST\ndomain: DOMAIN\n",
        );
        write(
            r,
            "config-leader/conf/config-leader.json",
            &json!({
                "http": {"ip": "127.0.0.1", "port": 7000},
                "templatesPath": "../data",
                "platformSettings": {"platformConfig": "platform.yml"},
                "internals": {},
                "followers": {KEY: {"url": "http://127.0.0.1:1/", "role": "core"}}
            })
            .to_string(),
        );
        let docker = FakeDocker::new(r);
        Self { root, docker }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.path().join(relative)
    }

    pub fn data(&self) -> PathBuf {
        self.path("pryv")
    }

    pub fn start_leader(&self, port: u16) -> Daemon {
        let mut command = Command::new(bin("config-leader"));
        command
            .arg("--config")
            .arg(self.path("config-leader/conf/config-leader.json"))
            .args(["--ip", "127.0.0.1", "--port", &port.to_string()]);
        let mut leader = Daemon::spawn(command);
        leader.wait_listening(Duration::from_secs(20));
        leader
    }

    pub fn follower_config(&self, leader_port: u16, extra: &Value) -> PathBuf {
        let path = self.path("config-follower/conf/config-follower.json");
        let mut config = json!({
            "http": {"ip": "127.0.0.1", "port": 0},
            "leader": {"url": format!("http://127.0.0.1:{leader_port}"), "auth": KEY},
            "paths": {"dataFolder": self.data()},
            "watch": {"debounceMs": 150}
        });
        for (key, value) in extra.as_object().unwrap() {
            config[key] = value.clone();
        }
        write(
            self.root.path(),
            "config-follower/conf/config-follower.json",
            &config.to_string(),
        );
        path
    }

    pub fn spawn_follower(&self, leader_port: u16) -> Daemon {
        self.spawn_follower_with(leader_port, &json!({}))
    }

    pub fn spawn_follower_with(&self, leader_port: u16, extra: &Value) -> Daemon {
        let mut command = Command::new(bin("config-follower"));
        command
            .arg("--config")
            .arg(self.follower_config(leader_port, extra))
            .env("PATH", self.docker.path_env())
            .env_remove("PRYV_CONF_ROOT");
        Daemon::spawn(command).with_credential(KEY)
    }

    /// `config-leader check` on the leader's configuration.
    pub fn check(&self) -> std::process::Output {
        Command::new(bin("config-leader"))
            .arg("--config")
            .arg(self.path("config-leader/conf/config-leader.json"))
            .arg("check")
            .output()
            .unwrap()
    }

    pub fn set_platform(&self, from: &str, to: &str) {
        let path = self.path("config-leader/conf/platform.yml");
        let text = std::fs::read_to_string(&path).unwrap().replace(from, to);
        std::fs::write(path, text).unwrap();
    }

    pub fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.data().join(relative)).unwrap_or_default()
    }
}

pub async fn leader_revision(leader: &Daemon) -> String {
    reqwest::Client::new()
        .get(format!("{}/conf", leader.url()))
        .header("authorization", KEY)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["revision"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits for the leader to serve a tree other than `old` (its watcher saw the hand edit).
pub async fn wait_leader_change(leader: &Daemon, old: &str) -> String {
    pryv_testkit::eventually(
        "the leader to pick up the edit",
        Duration::from_secs(5),
        || async {
            let revision = leader_revision(leader).await;
            (revision != old).then_some(revision)
        },
    )
    .await
}

pub async fn notify(follower: &Daemon, key: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/notify", follower.url()))
        .header("authorization", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

pub fn touch(path: &Path) {
    let file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(1))
        .unwrap();
}

pub fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// The follower's `GET /status` (with the follower's key, which it requires).
pub async fn follower_status(follower: &Daemon) -> Value {
    let mut request = reqwest::Client::new().get(format!("{}/status", follower.url()));
    if let Some(key) = &follower.credential {
        request = request.header("authorization", key);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// Polls the follower's `/status` until `predicate` holds (15 s at most); returns that status.
pub async fn wait_status(
    follower: &Daemon,
    what: &str,
    predicate: impl Fn(&Value) -> bool,
) -> Value {
    let reached = pryv_testkit::poll_until(Duration::from_secs(15), || async {
        let status = follower_status(follower).await;
        predicate(&status).then_some(status)
    })
    .await;
    match reached {
        Some(status) => status,
        None => panic!(
            "timed out waiting for {what}; last status {}\nlogs:\n{}",
            follower_status(follower).await,
            follower.logs()
        ),
    }
}
