//! What ships beside the binaries: systemd units pass `systemd-analyze verify`, compose files parse with
//! `docker-compose config`. With `PRYV_SLOW_TESTS=1`, both images are built from a local Debian base and the
//! follower container restarts a sibling container through the host's socket. Each check says SKIPPED when its
//! tool is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pryv_e2e::{available, bin, skip, wait_until, write};
use serde_json::json;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

#[test]
fn systemd_units_verify() {
    if !available("systemd-analyze", "--version") {
        skip("systemd-analyze verify: systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for daemon in ["config-leader", "config-follower"] {
        let unit = std::fs::read_to_string(repo().join(format!("docker/systemd/{daemon}.service")))
            .unwrap();
        assert!(
            unit.contains("Type=notify")
                && unit.contains("NoNewPrivileges=yes")
                && unit.contains("ProtectSystem=strict")
        );
        // verify checks that ExecStart exists: point it at the binary just built.
        let unit = unit.replace(
            &format!("/usr/local/bin/{daemon}"),
            bin(daemon).to_str().unwrap(),
        );
        let path = dir.path().join(format!("{daemon}.service"));
        std::fs::write(&path, unit).unwrap();
        let output = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && !stderr.contains(&format!("{daemon}.service:")),
            "{daemon}: {stderr}"
        );
    }
}

#[test]
fn compose_files_parse() {
    if !available("docker-compose", "version") {
        skip("docker-compose config: docker-compose is not installed");
        return;
    }
    for file in ["config-leader.yml", "config-follower.yml"] {
        let output = Command::new("docker-compose")
            .arg("-f")
            .arg(repo().join("docker").join(file))
            .args(["config", "--quiet"])
            .env("PRYV_CONF_ROOT", "/var/pryv")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Removes what the slow test creates, also on failure.
struct Cleanup(Vec<Vec<String>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for command in self.0.iter().rev() {
            let _ = Command::new(&command[0])
                .args(&command[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The local base image, the release binaries' image, and the two daemons' images built on them (each
/// removed by `cleanup`); the leader's image answers `--version`.
fn build_images(unique: u32, base: &str, images: (&str, &str), cleanup: &mut Cleanup) {
    let (follower_image, leader_image) = images;
    let status = Command::new(repo().join("docker/local-base.sh"))
        .arg(base)
        .status()
        .unwrap();
    assert!(status.success(), "local base image");
    let release = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(repo())
        .args([
            "build",
            "--release",
            "-p",
            "config-leader",
            "-p",
            "config-follower",
        ])
        .status()
        .unwrap();
    assert!(release.success());
    let binaries_image = format!("pryv-config-binaries-test-{unique}");
    cleanup.0.push(vec![
        "docker".into(),
        "rmi".into(),
        "-f".into(),
        binaries_image.clone(),
    ]);
    let status = Command::new("docker")
        .current_dir(repo())
        .args([
            "build",
            "-f",
            "docker/binaries.Dockerfile",
            "-t",
            &binaries_image,
            ".",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "binaries image");
    for (dockerfile, image) in [
        ("config-leader.Dockerfile", leader_image),
        ("config-follower.Dockerfile", follower_image),
    ] {
        let status = Command::new("docker")
            .current_dir(repo())
            .args([
                "build",
                "-f",
                &format!("docker/{dockerfile}"),
                "--build-arg",
                &format!("BASE_IMAGE={base}"),
            ])
            .args([
                "--build-arg",
                &format!("BINARIES_IMAGE={binaries_image}"),
                "-t",
                image,
                ".",
            ])
            .status()
            .unwrap();
        assert!(status.success(), "{dockerfile}");
    }
    assert!(docker(&["run", "--rm", leader_image, "--version"]).contains("config-leader"));
}

#[test]
fn images_build_and_the_follower_container_restarts_a_sibling() {
    if std::env::var("PRYV_SLOW_TESTS").as_deref() != Ok("1") {
        skip("image build test: set PRYV_SLOW_TESTS=1 to build the images (several minutes)");
        return;
    }
    if !available("docker", "info") {
        skip("image build test: no Docker engine answers");
        return;
    }
    let unique = std::process::id();
    let base = format!("pryv-local-base-test-{unique}:bookworm");
    let follower_image = format!("pryv-config-follower-test-{unique}");
    let leader_image = format!("pryv-config-leader-test-{unique}");
    let project = format!("pryvimagetest{unique}");
    let root = tempfile::tempdir().unwrap();
    let conf_root = root.path().to_owned();
    let images = ["docker", "rmi", "-f", &base, &follower_image, &leader_image];
    let mut cleanup = Cleanup(vec![images.map(str::to_owned).to_vec()]);

    build_images(
        unique,
        &base,
        (&follower_image, &leader_image),
        &mut cleanup,
    );

    // A sibling service the follower must restart, and a leader (the test's own binary) serving its tree.
    let data = conf_root.join("pryv");
    let compose = format!(
        "services:\n  sibling:\n    image: {base}\n    command: [\"sleep\", \"100000\"]\n    stop_signal: SIGKILL\n    volumes:\n      - {}/pryv/sibling/conf/:/conf/:ro\n",
        conf_root.display()
    );
    write(&conf_root, "config-leader/data/core/pryv.yml", &compose);
    write(
        &conf_root,
        "config-leader/data/core/sibling/conf/s.yml",
        "v: SIBLING_VALUE\n",
    );
    write(
        &conf_root,
        "config-leader/conf/platform.yml",
        "vars:\n  G:\n    settings:\n      SIBLING_VALUE:\n        value: one\n",
    );
    let key = "image-test-follower-key-0123456789";
    write(&conf_root, "config-leader/conf/config-leader.json", &json!({"templatesPath": "../data", "followers": {key: {"url": "http://127.0.0.1:1", "role": "core"}}}).to_string());
    let mut leader_command = Command::new(bin("config-leader"));
    leader_command
        .arg("--config")
        .arg(conf_root.join("config-leader/conf/config-leader.json"))
        .args(["--ip", "127.0.0.1", "--port", "0"]);
    let mut leader = pryv_e2e::Daemon::spawn(leader_command);
    let leader_addr = leader.wait_listening(Duration::from_secs(20));
    let follower_port = pryv_e2e::free_port();
    write(
        &conf_root,
        "config-follower/conf/config-follower.json",
        &json!({"http": {"ip": "127.0.0.1", "port": follower_port}, "leader": {"url": format!("http://{leader_addr}"), "auth": key},
                "paths": {"dataFolder": data}, "restart": {"command": ["docker-compose", "-p", project]}}).to_string(),
    );
    let container = format!("{project}-follower");
    cleanup.0.push(vec![
        "docker-compose".into(),
        "-p".into(),
        project.clone(),
        "-f".into(),
        data.join("pryv.yml").display().to_string(),
        "down".into(),
        "-t".into(),
        "0".into(),
    ]);
    cleanup.0.push(vec![
        "docker".into(),
        "rm".into(),
        "-f".into(),
        container.clone(),
    ]);
    let root_text = conf_root.display().to_string();
    docker(&[
        "run",
        "-d",
        "--name",
        &container,
        "--network",
        "host",
        "-v",
        &format!("{root_text}:{root_text}"),
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-e",
        &format!("PRYV_CONF_ROOT={root_text}"),
        &follower_image,
        "--config",
        &format!("{root_text}/config-follower/conf/config-follower.json"),
    ]);
    wait_until(
        "the follower container wrote the tree",
        Duration::from_secs(60),
        || data.join("pryv.yml").exists().then_some(()),
    );
    let up = Command::new("docker-compose")
        .args(["-p", &project, "-f"])
        .arg(data.join("pryv.yml"))
        .args(["up", "-d"])
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let sibling = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--filter",
        "label=com.docker.compose.service=sibling",
    ]);
    let started = docker(&["inspect", "-f", "{{.State.StartedAt}}", &sibling]);

    std::fs::write(
        conf_root.join("config-leader/conf/platform.yml"),
        "vars:\n  G:\n    settings:\n      SIBLING_VALUE:\n        value: two\n",
    )
    .unwrap();
    wait_until("notify accepted", Duration::from_secs(30), || {
        let output = Command::new("curl")
            .args([
                "-s",
                "-X",
                "POST",
                "-H",
                &format!("authorization: {key}"),
                &format!("http://127.0.0.1:{follower_port}/notify"),
            ])
            .output()
            .ok()?;
        String::from_utf8_lossy(&output.stdout)
            .contains("sibling")
            .then_some(())
    });
    wait_until("the sibling restarted", Duration::from_secs(90), || {
        (docker(&["inspect", "-f", "{{.State.StartedAt}}", &sibling]) != started).then_some(())
    });
    leader.terminate();
}
