//! The whole platform flow as operators run it, with real processes on loopback: `init` a cluster, fill the
//! placeholders, start the leader and five followers from the generated files, change settings through the
//! admin API, notify with curl's URL, check what each machine restarted, lose and regain a follower, roll back.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pryv_e2e::{Daemon, FakeDocker, bin, free_port, install_crypto, wait_until};
use serde_json::{Value, json};

const MACHINES: [(&str, &str); 5] = pryv_e2e::CLUSTER_MACHINES;

struct Machine {
    name: &'static str,
    role: &'static str,
    config: PathBuf,
    data: PathBuf,
    port: u16,
    docker: FakeDocker,
    daemon: Option<Daemon>,
}

impl Machine {
    fn start(&mut self, leader_url: &str) {
        let command = pryv_e2e::follower_command(&self.config, leader_url, self.port, &self.docker);
        let mut daemon = Daemon::spawn(command);
        daemon.wait_listening(Duration::from_secs(30));
        self.daemon = Some(daemon);
    }

    /// Every file of the data folder but the follower's own bookkeeping, by relative path.
    fn tree(&self) -> BTreeMap<String, Vec<u8>> {
        files_under(&self.data, &self.data)
            .into_iter()
            .filter(|(path, _)| !path.starts_with(".config-follower/"))
            .collect()
    }
}

fn files_under(root: &Path, dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(root, &path));
        } else {
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            files.insert(relative, std::fs::read(&path).unwrap());
        }
    }
    files
}

/// What `config-leader render` gives for a role, restricted to the follower's writable zones.
fn rendered(leader_config: &Path, role: &str, out: &Path) -> BTreeMap<String, Vec<u8>> {
    let output = Command::new(bin("config-leader"))
        .arg("--config")
        .arg(leader_config)
        .args(["render", "--role", role, "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    files_under(out, out)
        .into_iter()
        .filter(|(path, _)| {
            let parts: Vec<&str> = path.split('/').collect();
            parts.len() == 1 || (parts.len() >= 3 && matches!(parts[1], "conf" | "templates"))
        })
        .collect()
}

fn fill_placeholders(platform_path: &Path) {
    let mut platform = pryv_render_platform(platform_path);
    for group in platform.as_object_mut().unwrap()["vars"]
        .as_object_mut()
        .unwrap()
        .values_mut()
    {
        for (name, setting) in group["settings"].as_object_mut().unwrap().iter_mut() {
            if setting["value"] == "REPLACE_ME" {
                setting["value"] = json!(match name.as_str() {
                    "DOMAIN" => "pryv.example.com".to_owned(),
                    n if n.ends_with("IP_ADDRESS") => "192.0.2.10".to_owned(),
                    n if n.ends_with("LINK") => "https://www.example.com/legal".to_owned(),
                    "MAIL_FROM_ADDRESS" => "no-reply@example.com".to_owned(),
                    n => format!("test {}", n.to_lowercase()),
                });
            }
        }
    }
    std::fs::write(platform_path, serde_yaml_ng::to_string(&platform).unwrap()).unwrap();
}

fn pryv_render_platform(path: &Path) -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn api(method: reqwest::Method, url: &str, auth: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .header("authorization", auth);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

fn restarts(machine: &Machine) -> Vec<String> {
    machine.docker.actions()
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_from_init_to_rollback() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pryv");
    let leader_port = free_port();
    let leader_url = format!("http://127.0.0.1:{leader_port}");

    // 1. init, fill the placeholders and the follower URLs, start everything from the generated files.
    let init = Command::new(bin("config-leader"))
        .args([
            "init",
            "--topology",
            "cluster",
            "--cores",
            "2",
            "--reg-slave",
            "--out",
        ])
        .arg(&root)
        .args(["--leader-url", &leader_url])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    fill_placeholders(&root.join("config-leader/conf/platform.yml"));
    let leader_config = root.join("config-leader/conf/config-leader.json");
    let mut machines = machines_of(&root);
    point_followers_at_their_machines(&leader_config, &machines);
    let check = Command::new(bin("config-leader"))
        .arg("--config")
        .arg(&leader_config)
        .arg("check")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let mut leader_command = Command::new(bin("config-leader"));
    leader_command.arg("--config").arg(&leader_config).args([
        "--ip",
        "127.0.0.1",
        "--port",
        &leader_port.to_string(),
    ]);
    let mut leader = Daemon::spawn(leader_command);
    leader.wait_listening(Duration::from_secs(30));
    for machine in &mut machines {
        machine.start(&leader_url);
    }

    let initial_trees =
        every_tree_is_what_render_gives(&machines, &leader_config, &dir.path().join("render-1"))
            .await;
    // 3. Log in as initial_user, change DOMAIN and an SMTP setting, notify as the install guide says.
    // As the certificate service reads it: the whole file, trimmed.
    let password = std::fs::read_to_string(root.join("config-leader/credentials.txt"))
        .unwrap()
        .trim()
        .to_owned();
    let (status, login) = api(
        reqwest::Method::POST,
        &format!("{leader_url}/auth/login"),
        "",
        Some(json!({"username": "initial_user", "password": password})),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    let token = login["token"].as_str().unwrap().to_owned();
    let admin_key = serde_json::from_slice::<Value>(&std::fs::read(&leader_config).unwrap())
        .unwrap()["adminKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let notify_url = format!("{leader_url}/admin/notify?auth={admin_key}");

    let smtp = json!({"settings": {"EMAIL_SETTINGS": {"settings": {"MAIL_SMTP_HOST": {"value": "smtp.example.net"}}}}});
    let (status, body) = api(
        reqwest::Method::PUT,
        &format!("{leader_url}/admin/settings"),
        &token,
        Some(smtp),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, answer) = api(reqwest::Method::POST, &notify_url, "", None).await;
    assert_eq!(status, 200);
    // Only reg-master's tree uses the SMTP settings: the other four run their current revision already.
    let roles = |list: &Value| -> Vec<String> {
        let mut roles: Vec<String> = list
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|f| f["role"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        roles.sort();
        roles
    };
    assert_eq!(roles(&answer["successes"]), ["reg-master"], "{answer}");
    assert_eq!(
        roles(&answer["upToDate"]),
        ["core", "core", "reg-slave", "static"],
        "{answer}"
    );
    machines[0]
        .docker
        .wait_for("mail restart on reg-master", |a| !a.is_empty());

    let domain = json!({"settings": {"MACHINES_AND_PLATFORM_SETTINGS": {"settings": {"DOMAIN": {"value": "new-domain.example.org"}}}}});
    api(
        reqwest::Method::PUT,
        &format!("{leader_url}/admin/settings"),
        &token,
        Some(domain),
    )
    .await;
    let (_, answer) = api(reqwest::Method::POST, &notify_url, "", None).await;
    assert_eq!(answer["successes"].as_array().unwrap().len(), 5, "{answer}");
    each_machine_restarted_what_the_change_concerns(&machines);

    a_stopped_follower_is_named_and_converges(
        &mut machines,
        (&leader_url, &notify_url),
        &token,
        &admin_key,
    )
    .await;
    // 5. Roll back to the first revision and notify: every tree is back to step 2, byte for byte.
    let (status, body) = api(
        reqwest::Method::POST,
        &format!("{leader_url}/admin/settings/rollback"),
        &token,
        Some(json!({"revision": 1})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, answer) = api(reqwest::Method::POST, &notify_url, "", None).await;
    assert_eq!(answer["successes"].as_array().unwrap().len(), 5, "{answer}");
    for (machine, initial) in machines.iter().zip(&initial_trees) {
        assert_eq!(&machine.tree(), initial, "{} after rollback", machine.name);
    }
    assert_eq!(leader.terminate(), Some(0));
}

/// The five machines of the cluster, each in its own PRYV_CONF_ROOT (the leader's machine at `root`).
fn machines_of(root: &Path) -> Vec<Machine> {
    MACHINES
        .iter()
        .enumerate()
        .map(|(index, (name, role))| {
            let machine_root = if index == 0 {
                root.to_owned()
            } else {
                root.join("machines").join(name)
            };
            Machine {
                name,
                role,
                config: machine_root.join("config-follower/conf/config-follower.json"),
                data: machine_root.join("pryv"),
                port: free_port(),
                docker: FakeDocker::new(&machine_root),
                daemon: None,
            }
        })
        .collect()
}

/// Each follower entry of the leader's configuration points at its machine's ephemeral port.
fn point_followers_at_their_machines(leader_config: &Path, machines: &[Machine]) {
    let mut config: Value = serde_json::from_slice(&std::fs::read(leader_config).unwrap()).unwrap();
    for follower in config["followers"].as_object_mut().unwrap().values_mut() {
        let machine = machines
            .iter()
            .find(|m| follower["name"] == m.name)
            .unwrap();
        follower["url"] = json!(format!("http://127.0.0.1:{}", machine.port));
    }
    std::fs::write(
        leader_config,
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
}

/// Every tree is exactly what `render` gives for its role, and the first install restarts nothing; the trees.
async fn every_tree_is_what_render_gives(
    machines: &[Machine],
    leader_config: &Path,
    render_root: &Path,
) -> Vec<BTreeMap<String, Vec<u8>>> {
    // 2. Every tree is exactly what `render` gives for its role, and nothing outside the writable zones.
    let mut initial_trees = Vec::new();
    for machine in machines {
        let expected = rendered(leader_config, machine.role, &render_root.join(machine.name));
        assert_eq!(machine.tree(), expected, "{}", machine.name);
        assert!(
            restarts(machine).is_empty(),
            "first install restarts nothing"
        );
        initial_trees.push(machine.tree());
    }

    initial_trees
}

/// After the DOMAIN and SMTP change: each machine restarted exactly what the change concerns, and no file
/// keeps the old domain.
fn each_machine_restarted_what_the_change_concerns(machines: &[Machine]) {
    let expected: [&[&str]; 5] = [
        &[
            "restart mail",
            "restart admin_panel dns mail register reverse_proxy",
        ],
        &["restart core reverse_proxy"],
        &["restart core reverse_proxy"],
        &["restart reverse_proxy"],
        &["restart dns register"],
    ];
    for (machine, expected) in machines.iter().zip(expected) {
        let actions = machine
            .docker
            .wait_for(machine.name, |a| a.len() >= expected.len());
        assert_eq!(actions, expected, "{}", machine.name);
        let text =
            String::from_utf8(machine.tree().into_values().flatten().collect()).unwrap_or_default();
        assert!(
            !text.contains("pryv.example.com"),
            "{} still has the old domain",
            machine.name
        );
    }
}

/// Everyone is current; a stopped follower is named in failures and shown behind; restarted, it converges.
async fn a_stopped_follower_is_named_and_converges(
    machines: &mut [Machine],
    api_urls: (&str, &str),
    token: &str,
    admin_key: &str,
) {
    let (leader_url, notify_url) = api_urls;
    // 4. Everyone is current; a stopped follower is named in failures and shown behind; restarted, it converges.
    let status_url = format!("{leader_url}/admin/status");
    let (_, fleet) = api(reqwest::Method::GET, &status_url, admin_key, None).await;
    assert!(
        fleet["followers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["upToDate"] == true),
        "{fleet}"
    );
    let stopped = 3;
    assert_eq!(
        machines[stopped].daemon.as_mut().unwrap().terminate(),
        Some(0)
    );
    let name_change = json!({"settings": {"PLATFORM_INFORMATION": {"settings": {"PLATFORM_NAME": {"value": "Renamed platform"}}}}});
    api(
        reqwest::Method::PUT,
        &format!("{leader_url}/admin/settings"),
        token,
        Some(name_change),
    )
    .await;
    let started = Instant::now();
    let (_, answer) = api(reqwest::Method::POST, notify_url, "", None).await;
    assert!(started.elapsed() < Duration::from_secs(15));
    let failures = answer["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{answer}");
    assert_eq!(failures[0]["role"], "static");
    let (_, fleet) = api(reqwest::Method::GET, &status_url, admin_key, None).await;
    let line = |fleet: &Value, name: &str| {
        fleet["followers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(line(&fleet, "static")["upToDate"], false);
    assert_eq!(line(&fleet, "core-1")["upToDate"], true);
    machines[stopped].start(leader_url);
    wait_until(
        "static converges by itself",
        Duration::from_secs(30),
        || {
            let fleet: Value = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(api(
                    reqwest::Method::GET,
                    &status_url,
                    admin_key,
                    None,
                ))
            })
            .1;
            (line(&fleet, "static")["upToDate"] == true).then_some(())
        },
    );
}
