//! The install guide, command by command, on a cluster (2 cores and a reg-slave) laid out from a Pryv.io
//! release tarball: `init --from`, `package`, each machine's archive unpacked in its own folder, then the
//! guide's scripts in the guide's order with a fake `docker` that records its calls. The leader and followers
//! the compose files would start are started by the test itself (the real binaries), so `run-pryv` finds the
//! compose file a follower wrote and `watch-config` switches a live follower's watcher.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use pryv_e2e::{Daemon, FakeDocker, bin, free_port, install_crypto, write};

const MACHINES: [(&str, &str); 5] = pryv_e2e::CLUSTER_MACHINES;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A release tarball in Pryv's layout, made from our cluster templates, with a leading folder and a file that
/// belongs nowhere.
fn release_tarball(work: &Path) -> PathBuf {
    let release = work.join("release/pryv.io-1.9.2-cluster");
    let templates = repo().join("templates/cluster");
    write(
        &release,
        "config-leader/conf/template-platform.yml",
        &std::fs::read_to_string(templates.join("platform.yml")).unwrap(),
    );
    run(Command::new("cp")
        .arg("-r")
        .arg(templates.join("data"))
        .arg(release.join("config-leader/data")));
    write(&release, "README.md", "release notes\n");
    let tarball = work.join("pryv.io-1.9.2-cluster.tgz");
    run(Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(work.join("release"))
        .arg("pryv.io-1.9.2-cluster"));
    tarball
}

/// Runs one of a machine's scripts with the fake docker first on PATH.
fn script(
    machine: &Path,
    docker: &FakeDocker,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut command = Command::new(machine.join(name));
    command
        .args(args)
        .env("PATH", docker.path_env())
        .env_remove("PRYV_CONF_ROOT");
    for (key, value) in env {
        command.env(key, value);
    }
    run(&mut command)
}

fn calls(docker: &FakeDocker) -> Vec<String> {
    std::fs::read_to_string(&docker.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l != "compose version")
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_install_guide_on_a_cluster_from_a_release_tarball() {
    install_crypto();
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let docker = FakeDocker::new(work);

    // init --from the release, then package.
    let leader_root = work.join("leader-root");
    let init = run(Command::new(bin("config-leader"))
        .args(["init", "--cores", "2", "--reg-slave", "--from"])
        .arg(release_tarball(work))
        .arg("--out")
        .arg(&leader_root));
    assert!(
        stdout(&init).contains("not placed") && stdout(&init).contains("README.md"),
        "{}",
        stdout(&init)
    );
    assert!(
        leader_root
            .join("config-leader/data/core/pryv.yml")
            .is_file()
    );
    assert!(
        leader_root
            .join("config-leader/conf/template-platform.yml")
            .is_file()
    );
    let config = leader_root.join("config-leader/conf/config-leader.json");
    let archives = work.join("archives");
    run(Command::new(bin("config-leader"))
        .arg("--config")
        .arg(&config)
        .arg("package")
        .arg("--out")
        .arg(&archives));

    // Each machine unpacks its archive in its own PRYV_CONF_ROOT.
    let machine = |name: &str| work.join("machines").join(name);
    unpack_each_machine(&machine, &archives);
    let master = machine("reg-master");

    ensure_permissions(&machine, &docker);
    let core_1 = machine("core-1");

    // 2. On the leader's machine: sudo ./run-config-leader; the compose file would start this leader.
    script(&master, &docker, "run-config-leader", &[], &[]);
    let leader_port = free_port();
    let mut leader = Daemon::spawn({
        let mut command = Command::new(bin("config-leader"));
        command
            .arg("--config")
            .arg(master.join("config-leader/conf/config-leader.json"))
            .args(["--ip", "127.0.0.1", "--port", &leader_port.to_string()]);
        command
    });
    leader.wait_listening(Duration::from_secs(30));
    let leader_url = format!("http://127.0.0.1:{leader_port}");

    // 3. sudo ./run-config-follower on every machine; 4. sudo ./run-pryv once its follower wrote pryv.yml.
    let mut followers = Vec::new();
    for (name, _) in MACHINES {
        let root = machine(name);
        script(&root, &docker, "run-config-follower", &[], &[]);
        let mut command = Command::new(bin("config-follower"));
        command
            .env(
                "CONFIG_FOLLOWER_CONFIG",
                root.join("config-follower/conf/config-follower.json"),
            )
            .env("CONFIG_FOLLOWER_LEADER_URL", &leader_url)
            .env("CONFIG_FOLLOWER_HTTP_IP", "127.0.0.1")
            .env("CONFIG_FOLLOWER_HTTP_PORT", "0")
            .env("PATH", docker.path_env())
            .env_remove("PRYV_CONF_ROOT");
        let mut follower = Daemon::spawn(command);
        follower.wait_listening(Duration::from_secs(30));
        assert!(
            root.join("pryv/pryv.yml").is_file(),
            "{name}: the follower wrote the compose file"
        );
        script(&root, &docker, "run-pryv", &[], &[]);
        followers.push(follower);
    }
    for (name, _) in MACHINES {
        let root = machine(name);
        script(&root, &docker, "restart-pryv", &[], &[]);
        script(&root, &docker, "restart-config-follower", &[], &[]);
    }
    every_machine_ran_its_compose_projects(&machine, &master, &docker);

    watch_config_switches(&core_1, &docker, &followers[1]).await;
    // The choice survives a restart of the follower, whatever its configuration file says.
    let mut command = Command::new(bin("config-follower"));
    command
        .env(
            "CONFIG_FOLLOWER_CONFIG",
            core_1.join("config-follower/conf/config-follower.json"),
        )
        .env("CONFIG_FOLLOWER_LEADER_URL", &leader_url)
        .env("CONFIG_FOLLOWER_HTTP_IP", "127.0.0.1")
        .env("CONFIG_FOLLOWER_HTTP_PORT", "0")
        .env("PATH", docker.path_env());
    drop(followers);
    let mut again = Daemon::spawn(command);
    again.wait_listening(Duration::from_secs(30));
    let state: serde_json::Value = reqwest::get(format!("{}/watch", again.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["enabled"], false, "the --stop-watch choice is kept");

    // Later: stop-* scripts.
    script(&core_1, &docker, "stop-pryv", &[], &[]);
    script(&core_1, &docker, "stop-config-follower", &[], &[]);
    script(&master, &docker, "stop-config-leader", &[], &[]);
    let all = calls(&docker);
    assert!(all.contains(&compose_call(&core_1, "pryv", "pryv/pryv.yml", "down")));
    assert!(all.contains(&compose_call(
        &master,
        "config-leader",
        "config-leader/config-leader.yml",
        "down"
    )));
}

/// The compose command the scripts run for `project` of `file` under `root`.
fn compose_call(root: &Path, project: &str, file: &str, args: &str) -> String {
    format!("compose -p {project} -f {}/{file} {args}", root.display())
}

/// run-config-leader, run-config-follower, run-pryv and the restart scripts ran their compose projects.
fn every_machine_ran_its_compose_projects(
    machine: &dyn Fn(&str) -> PathBuf,
    master: &Path,
    docker: &FakeDocker,
) {
    let all = calls(docker);
    assert!(
        all.contains(&compose_call(
            master,
            "config-leader",
            "config-leader/config-leader.yml",
            "up -d"
        )),
        "{all:#?}"
    );
    for (name, _) in MACHINES {
        let root = machine(name);
        for expected in [
            compose_call(
                &root,
                "config-follower",
                "config-follower/config-follower.yml",
                "up -d",
            ),
            compose_call(&root, "pryv", "pryv/pryv.yml", "up -d"),
            compose_call(&root, "pryv", "pryv/pryv.yml", "restart"),
            compose_call(
                &root,
                "config-follower",
                "config-follower/config-follower.yml",
                "restart",
            ),
        ] {
            assert!(all.contains(&expected), "{expected} not in {all:#?}");
        }
    }
}

/// Each machine unpacks its archive in its own PRYV_CONF_ROOT: scripts executable, secrets 0600, the leader's
/// files only on the leader's machine.
fn unpack_each_machine(machine: &dyn Fn(&str) -> PathBuf, archives: &Path) {
    for (name, role) in MACHINES {
        std::fs::create_dir_all(machine(name)).unwrap();
        run(Command::new("tar")
            .arg("-xzf")
            .arg(archives.join(format!("{name}.tgz")))
            .arg("-C")
            .arg(machine(name)));
        let root = machine(name);
        for script in [
            "run-config-follower",
            "stop-config-follower",
            "restart-config-follower",
            "run-pryv",
            "stop-pryv",
            "restart-pryv",
            "watch-config",
            &format!("ensure-permissions-{role}"),
        ] {
            assert_eq!(mode(&root.join(script)), 0o755, "{name}: {script}");
        }
        assert_eq!(
            mode(&root.join("config-follower/conf/config-follower.json")),
            0o600,
            "{name}"
        );
        assert!(
            root.join("config-follower/config-follower.yml").is_file(),
            "{name}"
        );
        assert!(
            root.join("systemd/config-follower.service").is_file(),
            "{name}"
        );
        assert!(root.join("pryv").is_dir(), "{name}");
        let leader_files = [
            "run-config-leader",
            "stop-config-leader",
            "restart-config-leader",
            "config-leader/config-leader.yml",
        ];
        for file in leader_files {
            assert_eq!(
                root.join(file).exists(),
                name == "reg-master",
                "{name}: {file}"
            );
        }
    }
    let master = machine("reg-master");
    assert_eq!(
        mode(&master.join("config-leader/conf/config-leader.json")),
        0o600
    );
    assert!(
        master.join("config-leader/database").is_dir() && master.join("config-leader/log").is_dir()
    );
    assert!(!master.join("config-leader/credentials.txt").exists());
}

/// 1. sudo ./ensure-permissions-<role> (dry run: the commands it would run; for real too when root).
fn ensure_permissions(machine: &dyn Fn(&str) -> PathBuf, docker: &FakeDocker) {
    let master = machine("reg-master");
    // 1. sudo ./ensure-permissions-<role> (dry run: the commands it would run; for real too when root).
    for (name, role) in MACHINES {
        let output = script(
            &machine(name),
            docker,
            &format!("ensure-permissions-{role}"),
            &["--dry-run"],
            &[],
        );
        let text = stdout(&output);
        assert!(
            text.contains(&format!(
                "chown -R 0:0 {}/config-follower",
                machine(name).display()
            )),
            "{text}"
        );
        if role == "core" {
            for folder in ["pryv/core/data", "pryv/core/log", "pryv/mongodb/data"] {
                assert!(
                    text.contains(&format!(
                        "chown -R 9999:9999 {}/{folder}",
                        machine(name).display()
                    )),
                    "{text}"
                );
            }
        }
    }
    let output = script(
        &master,
        docker,
        "ensure-permissions-reg-master",
        &["--dry-run"],
        &[],
    );
    assert!(stdout(&output).contains(&format!(
        "chown -R 10001:10001 {}/config-leader",
        master.display()
    )));
    let core_1 = machine("core-1");
    if running_as_root() {
        script(&core_1, docker, "ensure-permissions-core", &[], &[]);
        let owner = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata(core_1.join("pryv/core/data")).unwrap(),
        );
        assert_eq!(owner, 9999);
    } else {
        pryv_e2e::skip("ensure-permissions for real: the test does not run as root");
    }
}

/// sudo ./watch-config --no-hup: an edit under pryv/*/conf/ restarts its service; --stop-watch stops that;
/// the choice is saved.
async fn watch_config_switches(core_1: &Path, docker: &FakeDocker, core_follower: &Daemon) {
    // sudo ./watch-config --no-hup: an edit under pryv/*/conf/ restarts its service; --stop-watch stops that.
    let follower_url = core_follower.url();
    let env = [("FOLLOWER_URL", follower_url.as_str())];
    let on = script(core_1, docker, "watch-config", &["--no-hup"], &env);
    assert!(stdout(&on).contains("now restarts"), "{}", stdout(&on));
    let file = core_1.join("pryv/core/conf/core.yml");
    let before = docker.actions().len();
    touch(&file);
    docker.wait_for("the watcher's restart", |a| {
        a.len() > before && a.last().is_some_and(|l| l == "restart core")
    });
    let off = script(core_1, docker, "watch-config", &["--stop-watch"], &env);
    assert!(
        stdout(&off).contains("no longer watches"),
        "{}",
        stdout(&off)
    );
    let state: serde_json::Value = reqwest::get(format!("{follower_url}/watch"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["enabled"], false);
    let before = docker.actions().len();
    touch(&file);
    // An absence: give the watcher several debounce periods (500 ms) to act, then check it did not.
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(
        docker.actions().len(),
        before,
        "no restart once the watch is stopped"
    );
}

#[test]
fn scripts_fall_back_to_docker_compose_and_say_what_is_missing() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("machine");
    run(Command::new(bin("config-leader"))
        .args(["init", "--topology", "single-node", "--out"])
        .arg(work.path().join("leader")));
    run(Command::new(bin("config-leader"))
        .arg("--config")
        .arg(
            work.path()
                .join("leader/config-leader/conf/config-leader.json"),
        )
        .arg("package")
        .arg("--out")
        .arg(work.path().join("archives")));
    std::fs::create_dir_all(&root).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(work.path().join("archives/singlenode.tgz"))
        .arg("-C")
        .arg(&root));

    // Only docker-compose is installed: `docker compose version` fails.
    let bin_dir = work.path().join("only-compose");
    let log = work.path().join("compose-calls.log");
    write(&bin_dir, "docker", "#!/bin/sh\nexit 1\n");
    write(
        &bin_dir,
        "docker-compose",
        &format!("#!/bin/sh\necho \"$*\" >> '{}'\n", log.display()),
    );
    for tool in ["docker", "docker-compose"] {
        std::fs::set_permissions(bin_dir.join(tool), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run(Command::new(root.join("run-config-follower")).env("PATH", &path));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().trim(),
        format!(
            "-p config-follower -f {}/config-follower/config-follower.yml up -d",
            root.display()
        )
    );

    // run-pryv before the follower wrote pryv.yml: one line that says what to do, exit 1.
    let output = Command::new(root.join("run-pryv"))
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("pryv.yml not found") && stderr.contains("run-config-follower"),
        "{stderr}"
    );
}

fn touch(path: &Path) {
    let file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(1))
        .unwrap();
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
