//! A real etcd cluster on loopback for the leader-replica tests (Debian's `etcd-server`): members with their
//! own ports and data folders, each stopped (SIGKILL) and started again at will.
// Test code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{available, free_port};

/// Whether the etcd server is installed; says SKIPPED (naming `test`) when not.
pub fn installed(test: &str) -> bool {
    if available("etcd", "--version") {
        return true;
    }
    crate::skip(&format!(
        "{test}: etcd is not installed (apt-get install etcd-server)"
    ));
    false
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data: PathBuf,
    child: Option<Child>,
}

/// The PEM files of a member serving TLS and requiring client certificates signed by `ca`.
#[derive(Clone)]
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// An etcd cluster of loopback members.
pub struct EtcdCluster {
    members: Vec<Member>,
    token: String,
    tls: Option<Tls>,
    _root: tempfile::TempDir,
}

impl EtcdCluster {
    /// `size` members, started and answering. A cluster that does not come up (a port taken between its
    /// choice and etcd's bind, by a parallel test) is started again on other ports.
    pub fn start(size: usize) -> Self {
        for _ in 0..3 {
            let mut cluster = Self::launch(size);
            if cluster.came_up(Duration::from_secs(20)) {
                return cluster;
            }
            for index in 0..size {
                cluster.stop_member(index);
            }
        }
        panic!("a {size}-member etcd cluster did not come up three times");
    }

    fn launch(size: usize) -> Self {
        let root = tempfile::tempdir().unwrap();
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data: root.path().join(format!("m{i}")),
                child: None,
            })
            .collect();
        let mut cluster = Self {
            members,
            token: format!("pryv-test-{}", std::process::id()),
            tls: None,
            _root: root,
        };
        for index in 0..size {
            cluster.start_member(index);
        }
        cluster
    }

    /// Whether every member answers healthy within `within`; false at once when one exited.
    fn came_up(&mut self, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        loop {
            let exited = self.members.iter_mut().any(|m| {
                m.child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_some())
            });
            if exited {
                return false;
            }
            if (0..self.members.len()).all(|i| healthy(&self.endpoint(i))) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One member serving clients over TLS only, requiring a client certificate (not waited for: a
    /// leader's start waits for its store).
    pub fn start_tls(tls: Tls) -> Self {
        let root = tempfile::tempdir().unwrap();
        let member = Member {
            name: "tls".into(),
            client_port: free_port(),
            peer_port: free_port(),
            data: root.path().join("tls"),
            child: None,
        };
        let mut cluster = Self {
            members: vec![member],
            token: format!("pryv-tls-{}", std::process::id()),
            tls: Some(tls),
            _root: root,
        };
        cluster.start_member(0);
        cluster
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `index` (again, on its data folder: it rejoins).
    pub fn start_member(&mut self, index: usize) {
        let initial = self.initial_cluster();
        let token = self.token.clone();
        let tls = self.tls.clone();
        let member = &mut self.members[index];
        let state = if member.data.exists() {
            "existing"
        } else {
            "new"
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let mut command = Command::new("etcd");
        if let Some(tls) = &tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = command
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&member.data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-token", &token])
            .args(["--initial-cluster-state", state])
            // Fast elections: the tests measure the leader replicas, not etcd's defaults.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        member.child = Some(child);
    }

    /// Kills member `index` (SIGKILL).
    pub fn stop_member(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The client URL of member `index`.
    pub fn endpoint(&self, index: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.members[index].client_port)
    }

    /// The client port of member `index`.
    pub fn client_port(&self, index: usize) -> u16 {
        self.members[index].client_port
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Waits until every running member says it is healthy (it has a leader and a quorum).
    pub fn wait_healthy(&self) {
        let running: Vec<String> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.child.is_some())
            .map(|(i, _)| self.endpoint(i))
            .collect();
        crate::wait_until(
            "the etcd members to be healthy",
            Duration::from_secs(30),
            || {
                running
                    .iter()
                    .all(|endpoint| healthy(endpoint))
                    .then_some(())
            },
        );
    }
}

/// `GET /health` of one member says `"health":"true"`.
fn healthy(endpoint: &str) -> bool {
    let Some(address) = endpoint.strip_prefix("http://") else {
        return false;
    };
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return false;
    };
    use std::io::{Read, Write};
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.stop_member(index);
        }
    }
}
