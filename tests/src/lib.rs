//! Helpers of the end-to-end tests: locating the real daemon binaries, running them on ephemeral loopback
//! ports, a fake `docker` that records its arguments, and waiting for conditions with deadlines.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

pub mod etcd;
pub mod machine;
pub mod platform;
pub mod proxy;
pub mod replicas;
pub mod webdriver;

pub use pryv_testkit::{Daemon, available, free_port, install_crypto, skip, wait_until, write};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::time::Duration;

/// The real binary `name` of this workspace, next to the test executables. It is (re)built once per test
/// process, so a test never runs a stale daemon (`cargo test -p pryv-e2e` alone does not build other
/// packages' binaries); an up-to-date build costs a fraction of a second.
pub fn bin(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        // The variables cargo sets for a test process would look like a changed environment to build
        // scripts and force rebuilds; give the nested build the user's environment only.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            let set_by_cargo = (key.starts_with("CARGO_")
                && !matches!(key.as_str(), "CARGO_HOME" | "CARGO_TARGET_DIR"))
                || matches!(
                    key.as_str(),
                    "OUT_DIR" | "RUST_TEST_THREADS" | "CARGO" | "RUSTC" | "RUSTDOC"
                );
            if set_by_cargo {
                command.env_remove(&key);
            }
        }
        command.args([
            "build",
            "--quiet",
            "-p",
            "config-leader",
            "-p",
            "config-follower",
            "--bins",
        ]);
        if !cfg!(debug_assertions) {
            command.arg("--release");
        }
        let status = command.status().unwrap();
        assert!(status.success(), "cannot build the daemons");
    });
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let path = dir.join(name);
    assert!(path.exists(), "{} not found", path.display());
    path
}

/// A `docker` script placed first on `PATH`: records each call's arguments, one line per call.
pub struct FakeDocker {
    pub bin_dir: PathBuf,
    pub log: PathBuf,
}

impl FakeDocker {
    pub fn new(root: &Path) -> Self {
        Self::failing_on(root, None)
    }

    /// Like [`FakeDocker::new`], but calls whose arguments contain `word` fail (exit 3, message on stderr).
    pub fn failing_on(root: &Path, word: Option<&str>) -> Self {
        let bin_dir = root.join("fake-bin");
        std::fs::create_dir_all(&bin_dir).unwrap();
        let log = root.join("docker-calls.log");
        let failure = word.map_or(String::new(), |word| {
            format!("case \"$*\" in *\"{word}\"*) echo 'simulated failure' >&2; exit 3;; esac\n")
        });
        let script = format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\n{failure}exit 0\n",
            log.display()
        );
        let path = bin_dir.join("docker");
        std::fs::write(&path, script).unwrap();
        std::os::unix::fs::PermissionsExt::set_mode(
            &mut std::fs::metadata(&path).unwrap().permissions(),
            0o755,
        );
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        Self { bin_dir, log }
    }

    /// Like [`FakeDocker::new`], but each `restart` takes `seconds`, and its end is recorded in
    /// [`FakeDocker::finished`] (so a test can tell a command cut short from one that completed).
    pub fn slow(root: &Path, seconds: f32) -> Self {
        let docker = Self::new(root);
        let finished = docker.finished_log();
        let script = format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\ncase \"$*\" in *\" restart \"*) sleep {seconds}; echo \"$*\" >> '{}';; esac\nexit 0\n",
            docker.log.display(),
            finished.display()
        );
        std::fs::write(docker.bin_dir.join("docker"), script).unwrap();
        docker
    }

    fn finished_log(&self) -> PathBuf {
        self.log.with_file_name("docker-finished.log")
    }

    /// The restart commands of a slow fake that ran to their end (same form as [`FakeDocker::actions`]).
    pub fn finished(&self) -> Vec<String> {
        std::fs::read_to_string(self.finished_log())
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_once("/pryv.yml ").map(|(_, r)| r.to_owned()))
            .collect()
    }

    /// `PATH` with the fake first.
    pub fn path_env(&self) -> String {
        format!(
            "{}:{}",
            self.bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// The recorded restart-related calls (`restart ...` or `up -d`), without the `compose -f <file>` prefix.
    pub fn actions(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let rest = line.split_once("/pryv.yml ").map(|(_, r)| r)?;
                Some(rest.to_owned())
            })
            .collect()
    }

    /// Waits until `predicate` holds on the actions.
    pub fn wait_for(&self, what: &str, predicate: impl Fn(&[String]) -> bool) -> Vec<String> {
        wait_until(what, Duration::from_secs(15), || {
            let actions = self.actions();
            predicate(&actions).then_some(actions)
        })
    }
}

/// The machines of the cluster the end-to-end tests lay out (2 cores and a reg-slave): (name, role).
pub const CLUSTER_MACHINES: [(&str, &str); 5] = [
    ("reg-master", "reg-master"),
    ("core-1", "core"),
    ("core-2", "core"),
    ("static", "static"),
    ("reg-slave", "reg-slave"),
];

/// The real follower with the configuration file `config`, on loopback port `port` (0 = any), reaching the
/// leader at `leader_url`, with `docker` first on `PATH` and `PRYV_CONF_ROOT` unset.
pub fn follower_command(
    config: &Path,
    leader_url: &str,
    port: u16,
    docker: &FakeDocker,
) -> Command {
    let mut command = Command::new(bin("config-follower"));
    command
        .arg("--config")
        .arg(config)
        .env("CONFIG_FOLLOWER_HTTP_IP", "127.0.0.1")
        .env("CONFIG_FOLLOWER_HTTP_PORT", port.to_string())
        .env("CONFIG_FOLLOWER_LEADER_URL", leader_url)
        .env("PATH", docker.path_env())
        .env_remove("PRYV_CONF_ROOT");
    command
}
