//! Real containers: a settings change restarts exactly the containers whose files changed, proven with
//! `docker inspect` start times. The image is made locally (`docker import` of the host's `sh` and `sleep` with
//! their libraries), since no registry is reachable. Skipped, and said so on stderr, when no engine answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pryv_e2e::{Daemon, available, bin, install_crypto, skip, wait_until, write};
use serde_json::{Value, json};

const KEY: &str = "docker-follower-key-0123456789abcdef";

fn docker_available() -> bool {
    available("docker", "info") && available("docker-compose", "version")
}

/// Everything the test creates in Docker, removed on drop (also when the test fails).
struct Cleanup {
    image: String,
    project: String,
    compose_file: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .args(["-p", &self.project, "-f"])
            .arg(&self.compose_file)
            .args(["down", "-v", "--remove-orphans", "-t", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A root filesystem with `/bin/sh` and `/bin/sleep` and the libraries they load, imported as an image.
fn import_image(work: &Path, image: &str) {
    let rootfs = work.join("rootfs");
    for program in ["/bin/sh", "/bin/sleep"] {
        let real = std::fs::canonicalize(program).unwrap();
        copy_into(&rootfs, &real, Path::new(program));
        let ldd = Command::new("ldd").arg(&real).output().unwrap();
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let library = line
                .split("=>")
                .last()
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .unwrap_or_default();
            if library.starts_with('/') {
                copy_into(&rootfs, Path::new(library), Path::new(library));
            }
        }
    }
    let tarball = work.join("rootfs.tar");
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success(), "tar failed");
    let status = Command::new("docker")
        .args(["import"])
        .arg(&tarball)
        .arg(image)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "docker import failed");
}

/// A suffix no other run's images and projects share.
fn unique_suffix() -> String {
    format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

fn copy_into(rootfs: &Path, source: &Path, target: &Path) {
    let destination = rootfs.join(target.strip_prefix("/").unwrap());
    std::fs::create_dir_all(destination.parent().unwrap()).unwrap();
    std::fs::copy(std::fs::canonicalize(source).unwrap(), &destination).unwrap();
}

fn started_at(project: &str, compose_file: &Path, service: &str) -> String {
    let id = Command::new("docker-compose")
        .args(["-p", project, "-f"])
        .arg(compose_file)
        .args(["ps", "-q", service])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&id.stdout).trim().to_owned();
    assert!(!id.is_empty(), "no container for {service}");
    let inspect = Command::new("docker")
        .args(["inspect", "-f", "{{.State.StartedAt}}", &id])
        .output()
        .unwrap();
    String::from_utf8_lossy(&inspect.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn real_containers_restart_only_what_changed() {
    if !docker_available() {
        skip(
            "real_containers_restart_only_what_changed: no Docker engine (or docker-compose) answers on this machine",
        );
        return;
    }
    install_crypto();
    let unique = unique_suffix();
    let image = format!("pryv-config-test-{unique}:latest");
    let project = format!("pryvconfigtest{unique}");
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let data = r.join("pryv");
    let _cleanup = Cleanup {
        image: image.clone(),
        project: project.clone(),
        compose_file: data.join("pryv.yml"),
    };
    import_image(r, &image);

    let service = |name: &str| {
        format!(
            "  {name}:\n    image: {image}\n    command: [\"/bin/sleep\", \"100000\"]\n    stop_signal: SIGKILL\n    volumes:\n      - ./{name}/conf/:/conf/:ro\n"
        )
    };
    write(
        r,
        "config-leader/data/core/pryv.yml",
        &format!("services:\n{}{}", service("alpha"), service("beta")),
    );
    write(
        r,
        "config-leader/data/core/alpha/conf/alpha.yml",
        "value: ALPHA_SETTING\n",
    );
    write(
        r,
        "config-leader/data/core/beta/conf/beta.yml",
        "value: BETA_SETTING\n",
    );
    let platform = "vars:\n  G:\n    settings:\n      ALPHA_SETTING:\n        value: one\n      BETA_SETTING:\n        value: two\n";
    write(r, "config-leader/conf/platform.yml", platform);
    write(
        r,
        "config-leader/conf/config-leader.json",
        &json!({"templatesPath": "../data", "internals": {}, "followers": {KEY: {"url": "http://127.0.0.1:1", "role": "core"}}})
            .to_string(),
    );
    let mut leader_command = Command::new(bin("config-leader"));
    leader_command
        .arg("--config")
        .arg(r.join("config-leader/conf/config-leader.json"))
        .args(["--ip", "127.0.0.1", "--port", "0"]);
    let mut leader = Daemon::spawn(leader_command);
    let leader_addr = leader.wait_listening(Duration::from_secs(20));

    write(
        r,
        "config-follower/conf/config-follower.json",
        &json!({
            "http": {"ip": "127.0.0.1", "port": 0},
            "leader": {"url": format!("http://{leader_addr}"), "auth": KEY},
            "paths": {"dataFolder": data},
            "restart": {"command": ["docker-compose", "-p", project]}
        })
        .to_string(),
    );
    let mut follower_command = Command::new(bin("config-follower"));
    follower_command
        .arg("--config")
        .arg(r.join("config-follower/conf/config-follower.json"));
    let mut follower = Daemon::spawn(follower_command);
    let follower_addr = follower.wait_listening(Duration::from_secs(20));

    // The operator's first start of the platform.
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
    let compose_file = data.join("pryv.yml");
    let alpha_before = started_at(&project, &compose_file, "alpha");
    let beta_before = started_at(&project, &compose_file, "beta");

    // Change the setting only alpha uses, wait for the leader to serve it, notify.
    std::fs::write(
        r.join("config-leader/conf/platform.yml"),
        platform.replace("value: one", "value: uno"),
    )
    .unwrap();
    let client = reqwest::Client::new();
    wait_until("leader sees the edit", Duration::from_secs(5), || {
        let conf = get_json(&client, &format!("http://{leader_addr}/conf"), Some(KEY))?;
        conf.to_string().contains("value: uno").then_some(())
    });
    let body: Value = client
        .post(format!("http://{follower_addr}/notify"))
        .header("authorization", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["restarted"], json!(["alpha"]), "{body}");

    let record = wait_until("alpha restart recorded", Duration::from_secs(90), || {
        let status = get_json(
            &client,
            &format!("http://{follower_addr}/status"),
            Some(KEY),
        )?;
        status["restarts"].get("alpha").cloned()
    });
    assert_eq!(record["ok"], true, "{record}");
    assert_ne!(
        started_at(&project, &compose_file, "alpha"),
        alpha_before,
        "alpha must have restarted"
    );
    assert_eq!(
        started_at(&project, &compose_file, "beta"),
        beta_before,
        "beta must not have restarted"
    );
    leader.terminate();
    follower.terminate();
}

/// A GET from inside the synchronous `wait_until` (the test runs on a multi-thread runtime).
fn get_json(client: &reqwest::Client, url: &str, key: Option<&str>) -> Option<Value> {
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(async {
            let mut request = client.get(url);
            if let Some(key) = key {
                request = request.header("authorization", key);
            }
            request.send().await.ok()?.json().await.ok()
        })
    })
}

/// A follower of its own compose project for the revert test: (follower, data folder, project).
struct Machine {
    follower: Daemon,
    data: PathBuf,
    project: String,
}

fn container_running(project: &str, compose_file: &Path, service: &str) -> bool {
    let id = Command::new("docker-compose")
        .args(["-p", project, "-f"])
        .arg(compose_file)
        .args(["ps", "-q", service])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&id.stdout).trim().to_owned();
    let inspect = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", &id])
        .output()
        .unwrap();
    String::from_utf8_lossy(&inspect.stdout).trim() == "true"
}

/// The leader of three `core` machines whose one service exits 1 when its configuration says `broken`;
/// returns it, its URL, and the followers' ports and keys.
fn start_leader_of_three(
    r: &Path,
    image: &str,
    admin_key: &str,
) -> (Daemon, String, Vec<u16>, Vec<String>) {
    // The service reads its configuration and exits 1 when it says `broken`, as a real one would on a typo.
    write(
        r,
        "config-leader/data/core/pryv.yml",
        &format!(
            "services:\n  alpha:\n    image: {image}\n    command: [\"/bin/sh\", \"-c\", \"read line < /conf/alpha.yml; case \\\"$$line\\\" in *broken*) echo \\\"alpha: cannot start: $$line\\\"; exit 1;; esac; exec /bin/sleep 100000\"]\n    stop_signal: SIGKILL\n    volumes:\n      - ./alpha/conf/:/conf/:ro\n"
        ),
    );
    write(
        r,
        "config-leader/data/core/alpha/conf/alpha.yml",
        "value: ALPHA_SETTING\n",
    );
    let platform = "vars:\n  G:\n    settings:\n      ALPHA_SETTING:\n        value: one\n";
    write(r, "config-leader/conf/platform.yml", platform);
    let ports: Vec<u16> = (0..3).map(|_| pryv_e2e::free_port()).collect();
    let keys: Vec<String> = (0..3).map(|i| format!("{KEY}-{i}")).collect();
    let followers: serde_json::Map<String, Value> = (0..3)
        .map(|i| {
            (
                keys[i].clone(),
                json!({"url": format!("http://127.0.0.1:{}", ports[i]), "role": "core", "name": format!("m{}", i + 1)}),
            )
        })
        .collect();
    write(
        r,
        "config-leader/conf/config-leader.json",
        &json!({"templatesPath": "../data", "internals": {}, "adminKey": admin_key, "followers": followers})
            .to_string(),
    );
    let mut leader_command = Command::new(bin("config-leader"));
    leader_command
        .arg("--config")
        .arg(r.join("config-leader/conf/config-leader.json"))
        .args(["--ip", "127.0.0.1", "--port", "0"]);
    let mut leader = Daemon::spawn(leader_command);
    let leader_url = format!("http://{}", leader.wait_listening(Duration::from_secs(20)));
    (leader, leader_url, ports, keys)
}

#[tokio::test(flavor = "multi_thread")]
async fn real_containers_a_bad_change_is_reverted_and_stops_the_rollout_a_good_one_rolls_through() {
    if !docker_available() {
        skip(
            "real_containers_a_bad_change_is_reverted_and_stops_the_rollout_a_good_one_rolls_through: no Docker engine (or docker-compose) answers on this machine",
        );
        return;
    }
    install_crypto();
    let unique = unique_suffix();
    let image = format!("pryv-config-revert-{unique}:latest");
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    import_image(r, &image);
    let admin_key = "docker-admin-key-0123456789abcdefghij";
    let (mut leader, leader_url, ports, keys) = start_leader_of_three(r, &image, admin_key);

    let mut machines = Vec::new();
    let mut cleanups = Vec::new();
    for i in 0..3 {
        let machine = r.join(format!("m{}", i + 1));
        let data = machine.join("pryv");
        let project = format!("pryvrevert{unique}m{i}");
        cleanups.push(Cleanup {
            image: image.clone(),
            project: project.clone(),
            compose_file: data.join("pryv.yml"),
        });
        write(
            &machine,
            "config-follower.json",
            &json!({
                "http": {"ip": "127.0.0.1", "port": ports[i]},
                "leader": {"url": leader_url, "auth": keys[i]},
                "paths": {"dataFolder": data},
                "watch": {"enabled": false},
                "restart": {"command": ["docker-compose", "-p", project]},
                "health": {"enabled": true, "deadlineSeconds": 8, "settleSeconds": 2}
            })
            .to_string(),
        );
        let mut command = Command::new(bin("config-follower"));
        command
            .arg("--config")
            .arg(machine.join("config-follower.json"));
        let mut follower = Daemon::spawn(command).with_credential(&keys[i]);
        follower.wait_listening(Duration::from_secs(20));
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
        machines.push(Machine {
            follower,
            data,
            project,
        });
    }
    let client = reqwest::Client::new();
    let admin = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut request = client
            .request(method, format!("{leader_url}{path}"))
            .header("authorization", admin_key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request
    };

    // A bad value, rolled out one machine per wave.
    let id = save_and_roll_out_one_per_wave(&admin, "broken").await;
    let rollout = wait_until("the rollout to stop", Duration::from_secs(90), || {
        let url = format!("{leader_url}/admin/rollouts/{id}?auth={admin_key}");
        let rollout = get_json(&client, &url, None)?;
        (rollout["state"] == "stopped").then_some(rollout)
    });
    assert_eq!(
        rollout["waves"][0]["followers"][0]["state"], "reverted",
        "{rollout}"
    );
    assert_eq!(rollout["waves"][1]["followers"][0]["state"], "pending");
    assert_eq!(rollout["waves"][2]["followers"][0]["state"], "pending");

    the_first_machine_reverted_and_the_others_kept_theirs(
        &client,
        &machines,
        &leader_url,
        admin_key,
    )
    .await;
    // A good value rolls through every wave; every container runs with it.
    let id = save_and_roll_out_one_per_wave(&admin, "two").await;
    let rollout = wait_until(
        "the good rollout to finish",
        Duration::from_secs(120),
        || {
            let url = format!("{leader_url}/admin/rollouts/{id}?auth={admin_key}");
            let rollout = get_json(&client, &url, None)?;
            assert_ne!(rollout["state"], "stopped", "{rollout}");
            (rollout["state"] == "done").then_some(rollout)
        },
    );
    every_machine_runs_the_good_value(&rollout, &machines);
    leader.terminate();
    for mut machine in machines {
        machine.follower.terminate();
    }
    drop(cleanups);
}

/// Saves ALPHA_SETTING = `value` and rolls it out one machine per wave; the rollout's id.
async fn save_and_roll_out_one_per_wave(
    admin: &impl Fn(reqwest::Method, &str, Option<Value>) -> reqwest::RequestBuilder,
    value: &str,
) -> i64 {
    let settings = json!({"G": {"settings": {"ALPHA_SETTING": {"value": value}}}});
    let saved = admin(reqwest::Method::PUT, "/admin/settings", Some(settings))
        .send()
        .await
        .unwrap();
    assert!(saved.status().is_success());
    let waves =
        json!({"waves": [{"followers": ["m1"]}, {"followers": ["m2"]}, {"followers": ["m3"]}]});
    let answer: Value = admin(reqwest::Method::POST, "/admin/notify", Some(waves))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["rollout"].as_i64().unwrap()
}

/// Every wave healthy; every machine has the new file and its container runs.
fn every_machine_runs_the_good_value(rollout: &Value, machines: &[Machine]) {
    for (index, machine) in machines.iter().enumerate() {
        assert_eq!(
            rollout["waves"][index]["followers"][0]["state"], "healthy",
            "{rollout}"
        );
        assert_eq!(
            std::fs::read_to_string(machine.data.join("alpha/conf/alpha.yml")).unwrap(),
            "value: two\n"
        );
        assert!(container_running(
            &machine.project,
            &machine.data.join("pryv.yml"),
            "alpha"
        ));
    }
}

/// The first wave's machine reverted (its follower says why, with the log tail); the later ones kept the old file; the leader shows the report.
async fn the_first_machine_reverted_and_the_others_kept_theirs(
    client: &reqwest::Client,
    machines: &[Machine],
    leader_url: &str,
    admin_key: &str,
) {
    let first = &machines[0];
    let status = get_json(
        client,
        &format!("{}/status", first.follower.url()),
        first.follower.credential.as_deref(),
    )
    .unwrap();
    assert_eq!(status["health"]["outcome"], "reverted", "{status}");
    assert_eq!(status["health"]["unhealthy"]["service"], "alpha");
    assert!(
        status["health"]["unhealthy"]["state"]
            .as_str()
            .unwrap()
            .starts_with("exited (1)"),
        "{status}"
    );
    let tail = status["health"]["unhealthy"]["logTail"].to_string();
    assert!(
        tail.contains("alpha: cannot start: value: broken"),
        "{tail}"
    );
    assert_eq!(
        std::fs::read_to_string(first.data.join("alpha/conf/alpha.yml")).unwrap(),
        "value: one\n"
    );
    let compose_file = first.data.join("pryv.yml");
    wait_until(
        "alpha to run again with the old file",
        Duration::from_secs(30),
        || container_running(&first.project, &compose_file, "alpha").then_some(()),
    );
    for later in &machines[1..] {
        assert_eq!(
            std::fs::read_to_string(later.data.join("alpha/conf/alpha.yml")).unwrap(),
            "value: one\n"
        );
        assert!(container_running(
            &later.project,
            &later.data.join("pryv.yml"),
            "alpha"
        ));
    }
    let fleet = get_json(
        client,
        &format!("{leader_url}/admin/status?auth={admin_key}"),
        None,
    )
    .unwrap();
    assert_eq!(
        fleet["followers"][0]["lastReport"]["outcome"], "reverted",
        "{fleet}"
    );
}
