//! Leader replicas sharing an etcd store (`store.etcd`): each in a folder of its own (configuration, the same
//! templates and `platform.yml`, its own database), reaching the store directly or through a proxy per
//! member that a test can cut.
// Test code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::etcd::EtcdCluster;
use crate::machine::Machine;
use crate::proxy::Proxy;
use crate::{Daemon, bin, free_port, write};

pub const ADMIN_KEY: &str = "replicas-admin-key-0123456789abcdefgh";

pub const PLATFORM: &str = "vars:
  MAIN:
    settings:
      DOMAIN:
        value: pryv.example
  MAIL:
    settings:
      MAIL_HOST:
        value: smtp.example
";

/// One replica: its folder, port, its proxies to the store (when partitionable) and its process.
pub struct Replica {
    pub root: PathBuf,
    pub port: u16,
    pub proxies: Vec<Proxy>,
    pub daemon: Option<Daemon>,
}

impl Replica {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("conf/config-leader.json")
    }

    /// Starts it and waits until it listens.
    pub fn start(&mut self) {
        let mut command = Command::new(bin("config-leader"));
        command.arg("--config").arg(self.config()).args([
            "--ip",
            "127.0.0.1",
            "--port",
            &self.port.to_string(),
        ]);
        let mut daemon = Daemon::spawn(command);
        daemon.wait_listening(Duration::from_secs(30));
        self.daemon = Some(daemon);
    }

    /// Keeps its state under `prefix` in etcd instead (another platform on the same cluster).
    pub fn set_prefix(&self, prefix: &str) {
        self.edit_config(|config| config["store"]["etcd"]["prefix"] = Value::from(prefix));
    }

    /// Changes its `config-leader.json`.
    pub fn edit_config(&self, change: impl FnOnce(&mut Value)) {
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(self.config()).unwrap()).unwrap();
        change(&mut config);
        std::fs::write(self.config(), config.to_string()).unwrap();
    }

    /// `config-leader --config <its file> <args>`.
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin("config-leader"))
            .arg("--config")
            .arg(self.config())
            .args(args)
            .output()
            .unwrap()
    }

    /// Cuts it off from every etcd member (its proxies drop everything).
    pub fn cut_off(&self) {
        for proxy in &self.proxies {
            proxy.cut();
        }
    }

    /// Makes its open connections to etcd silent (a watch among them), new ones still work.
    pub fn freeze(&self) {
        for proxy in &self.proxies {
            proxy.freeze();
        }
    }

    pub fn heal(&self) {
        for proxy in &self.proxies {
            proxy.heal();
        }
    }

    pub fn logs(&self) -> String {
        self.daemon.as_ref().map(Daemon::logs).unwrap_or_default()
    }
}

/// Lays out replica `index` under `base` for `cores`, reaching `cluster` through proxies if `partitionable`.
pub fn lay_out(
    base: &Path,
    index: usize,
    cluster: &EtcdCluster,
    cores: &[Machine],
    partitionable: bool,
) -> Replica {
    let root = base.join(format!("leader-{index}"));
    write(&root, "conf/platform.yml", PLATFORM);
    // The core sees a shared secret: equal trees on every replica prove the replicas share it.
    crate::platform::write_core_role(
        &root.join("data"),
        "domain: DOMAIN\nsystemKey: CORE_SYSTEM_KEY\n",
    );
    let proxies: Vec<Proxy> = if partitionable {
        (0..cluster.endpoints().len())
            .map(|i| Proxy::start(([127, 0, 0, 1], cluster.client_port(i)).into()))
            .collect()
    } else {
        Vec::new()
    };
    let endpoints: Vec<String> = if partitionable {
        proxies.iter().map(Proxy::url).collect()
    } else {
        cluster.endpoints()
    };
    let followers: serde_json::Map<String, Value> = cores
        .iter()
        .map(|core| {
            (
                core.key.clone(),
                json!({"url": core.url(), "role": "core", "name": core.name}),
            )
        })
        .collect();
    write(
        &root,
        "conf/config-leader.json",
        &json!({
            "templatesPath": "../data",
            "platformSettings": {"platformConfig": "platform.yml"},
            "adminKey": ADMIN_KEY,
            "internals": {"CORE_SYSTEM_KEY": "SECRET"},
            "followers": followers,
            "store": {"etcd": {"endpoints": endpoints, "prefix": "/pryv-test/", "isolatedAfterSeconds": 1.5, "leaseSeconds": 2, "keepAuditEntries": 3}},
        })
        .to_string(),
    );
    Replica {
        root,
        port: free_port(),
        proxies,
        daemon: None,
    }
}

/// `PUT /admin/settings` of `MAIL_HOST` on `replica`: (status, body).
pub async fn set_mail_host(replica_url: &str, host: &str) -> (u16, Value) {
    let answer = reqwest::Client::new()
        .put(format!("{replica_url}/admin/settings"))
        .header("authorization", ADMIN_KEY)
        .json(&json!({
            "settings": {"MAIL": {"settings": {"MAIL_HOST": {"value": host}}}},
            "message": format!("mail host {host}"),
        }))
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

/// `GET /admin/settings/history` on `replica`, oldest first.
pub async fn history(replica_url: &str) -> Vec<Value> {
    let body: Value = reqwest::Client::new()
        .get(format!("{replica_url}/admin/settings/history"))
        .header("authorization", ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut entries = body["revisions"].as_array().cloned().unwrap_or_default();
    entries.reverse();
    entries
}

/// The `core` tree `replica` serves to `core`: (status, revision, the body's `mail.yml`).
pub async fn served_mail(replica_url: &str, core: &Machine) -> Option<(String, String)> {
    let answer = reqwest::Client::new()
        .get(format!("{replica_url}/conf"))
        .header("authorization", &core.key)
        .send()
        .await
        .ok()?;
    if !answer.status().is_success() {
        return None;
    }
    let body: Value = answer.json().await.ok()?;
    let mail = body["files"].as_array()?.iter().find(|f| {
        f["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("mail/conf/mail.yml"))
    })?;
    Some((
        body["revision"].as_str()?.to_owned(),
        mail["content"].as_str()?.to_owned(),
    ))
}

/// `call` an admin route of `replica_url` with the admin key: (status, body).
pub async fn admin(
    method: reqwest::Method,
    replica_url: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{replica_url}{path}"))
        .header("authorization", ADMIN_KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    match request.send().await {
        Ok(answer) => {
            let status = answer.status().as_u16();
            (status, answer.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// Waits until the replica at `replica_url` has its watch of the store open (it started following it).
pub async fn watching(replica_url: &str) {
    pryv_testkit::eventually(
        &format!("{replica_url} to watch the store"),
        std::time::Duration::from_secs(30),
        || async {
            let (status, fleet) =
                admin(reqwest::Method::GET, replica_url, "/admin/status", None).await;
            (status == 200 && fleet["replica"]["watching"] == true).then_some(())
        },
    )
    .await;
}

/// Whether the replica at `replica_url` holds the election (drives the rollouts).
pub async fn elected(replica_url: &str) -> bool {
    let (status, fleet) = admin(reqwest::Method::GET, replica_url, "/admin/status", None).await;
    status == 200 && fleet["replica"]["elected"] == true
}
