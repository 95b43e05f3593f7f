//! Safe changes with the real binaries and a fake `docker` that answers like a real engine: a service whose
//! configuration says `broken` exits. The follower reverts what left a service unhealthy and reports it; a
//! rollout stops at the first wave that goes wrong and holds the others back; a follower the leader cannot
//! reach converges by long-polling.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pryv_e2e::platform::{COMPOSE, PLATFORM};
use pryv_e2e::{Daemon, bin, free_port, install_crypto, write};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "admin-key-for-the-safe-changes-tests-0123";
const INTERNAL_SECRET: &str = "internal-secret-0123456789";
const HEALTH: &str = r#"{"enabled": true, "deadlineSeconds": 4, "settleSeconds": 1}"#;

/// A `docker` for one machine: logs its calls; `ps -q` names a container; `inspect` says `exited (1)` while
/// the machine's `core.yml` contains `broken`, else running; `logs` prints the service's complaint.
fn health_aware_docker(machine: &Path) -> PathBuf {
    let bin_dir = machine.join("fake-bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let script = format!(
        "#!/bin/sh\n\
         echo \"$*\" >> '{log}'\n\
         case \"$*\" in\n\
           *' ps -q '*) for last in \"$@\"; do :; done; echo \"cid-$last\";;\n\
           'inspect '*) if grep -q broken '{conf}'; then echo 'exited||false|1|1'; else echo 'running||false|0|0'; fi;;\n\
           'logs '*) echo 'core: cannot parse core.yml: broken'; echo 'core: auth with {secret} failed at broken.example';;\n\
         esac\n\
         exit 0\n",
        log = machine.join("docker-calls.log").display(),
        conf = machine.join("pryv/core/conf/core.yml").display(),
        secret = INTERNAL_SECRET,
    );
    let path = bin_dir.join("docker");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    bin_dir
}

/// The `restart ...` / `up -d` calls a machine's docker received.
fn restarts(machine: &Path) -> Vec<String> {
    std::fs::read_to_string(machine.join("docker-calls.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once("/pryv.yml ").map(|(_, r)| r.to_owned()))
        .filter(|r| r.starts_with("restart") || r.starts_with("up"))
        .collect()
}

/// A leader with role `core` and `machines` followers (`m1`, `m2`...), each with its own folder, key and port.
struct Fleet {
    root: tempfile::TempDir,
    leader_port: u16,
    ports: Vec<u16>,
}

impl Fleet {
    fn new(machines: usize, reachable: bool) -> Self {
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
        write(
            r,
            "config-leader/data/core/nginx/conf/nginx.conf",
            "server_name *.DOMAIN;\n",
        );
        write(
            r,
            "config-leader/data/core/mail/conf/mail.yml",
            "host: MAIL_HOST\nkey: CORE_SYSTEM_KEY\n",
        );
        let ports: Vec<u16> = (0..machines).map(|_| free_port()).collect();
        let followers: serde_json::Map<String, Value> = ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                // An unreachable follower: the leader is given a port nobody listens on.
                let url = if reachable {
                    format!("http://127.0.0.1:{port}")
                } else {
                    "http://127.0.0.1:1".to_owned()
                };
                (
                    key(i),
                    json!({"url": url, "role": "core", "name": format!("m{}", i + 1)}),
                )
            })
            .collect();
        write(
            r,
            "config-leader/conf/config-leader.json",
            &json!({
                "http": {"ip": "127.0.0.1", "port": 7000},
                "adminKey": ADMIN_KEY,
                "templatesPath": "../data",
                "platformSettings": {"platformConfig": "platform.yml"},
                "internals": {"CORE_SYSTEM_KEY": INTERNAL_SECRET},
                "followers": followers
            })
            .to_string(),
        );
        Self {
            root,
            leader_port: free_port(),
            ports,
        }
    }

    fn machine(&self, index: usize) -> PathBuf {
        self.root.path().join(format!("m{}", index + 1))
    }

    fn leader_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.leader_port)
    }

    fn start_leader(&self) -> Daemon {
        let mut command = Command::new(bin("config-leader"));
        command
            .arg("--config")
            .arg(
                self.root
                    .path()
                    .join("config-leader/conf/config-leader.json"),
            )
            .args(["--ip", "127.0.0.1", "--port", &self.leader_port.to_string()]);
        let mut leader = Daemon::spawn(command);
        leader.wait_listening(Duration::from_secs(20));
        leader
    }

    fn start_follower(&self, index: usize, extra: &Value) -> Daemon {
        let machine = self.machine(index);
        let bin_dir = health_aware_docker(&machine);
        let mut config = json!({
            "http": {"ip": "127.0.0.1", "port": self.ports[index]},
            "leader": {"url": self.leader_url(), "auth": key(index)},
            "paths": {"dataFolder": machine.join("pryv")},
            "watch": {"enabled": false},
            "health": serde_json::from_str::<Value>(HEALTH).unwrap(),
        });
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        write(&machine, "config-follower.json", &config.to_string());
        let mut command = Command::new(bin("config-follower"));
        command
            .arg("--config")
            .arg(machine.join("config-follower.json"))
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin_dir.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env_remove("PRYV_CONF_ROOT");
        let mut follower = Daemon::spawn(command).with_credential(&key(index));
        follower.wait_listening(Duration::from_secs(30));
        follower
    }

    fn core_yml(&self, index: usize) -> String {
        std::fs::read_to_string(self.machine(index).join("pryv/core/conf/core.yml"))
            .unwrap_or_default()
    }

    /// Sets DOMAIN through the admin API (saved once every role rendered) and returns the new revision.
    async fn set_domain(&self, domain: &str) -> String {
        self.save_domain(domain, "").await
    }

    /// [`Fleet::set_domain`] with a query string (`?hold=true`).
    async fn save_domain(&self, domain: &str, query: &str) -> String {
        let patch = json!({"settings": {"MAIN": {"settings": {"DOMAIN": {"value": domain}}}}});
        self.admin(
            reqwest::Method::PUT,
            &format!("/admin/settings{query}"),
            Some(patch),
        )
        .await;
        let view = self
            .admin(reqwest::Method::GET, "/admin/status", None)
            .await;
        view["followers"][0]["currentRevision"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// `GET /conf` as follower `index`: (status, body or null).
    async fn conf(&self, index: usize, if_none_match: Option<&str>) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .get(format!("{}/conf", self.leader_url()))
            .header("authorization", key(index));
        if let Some(revision) = if_none_match {
            request = request.header("if-none-match", format!("\"{revision}\""));
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.leader_url()))
            .header("authorization", ADMIN_KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }
}

fn key(index: usize) -> String {
    format!("follower-key-{index}-0123456789abcdefghijkl")
}

/// Waits up to 30 s for `check` (the suite's containers and health checks take seconds).
async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    check: impl FnMut() -> F,
) -> T {
    pryv_testkit::eventually(what, Duration::from_secs(30), check).await
}

async fn status(follower: &Daemon) -> Value {
    pryv_e2e::platform::follower_status(follower).await
}

async fn wait_status(follower: &Daemon, what: &str, predicate: impl Fn(&Value) -> bool) -> Value {
    let what = format!("{what}; follower log:\n{}", follower.logs());
    let what = what.as_str();
    wait_for(what, || async {
        let status = status(follower).await;
        predicate(&status).then_some(status)
    })
    .await
}

async fn notify(follower: &Daemon, index: usize) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/notify", follower.url()))
        .header("authorization", key(index))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_that_makes_a_service_exit_is_reverted_reported_and_not_retried() {
    let fleet = Fleet::new(1, true);
    let _leader = fleet.start_leader();
    let follower = fleet.start_follower(0, &json!({}));
    let good =
        wait_status(&follower, "the first tree", |s| s["revision"].is_string()).await["revision"]
            .clone();
    assert_eq!(fleet.core_yml(0), "domain: pryv.me\n");

    let bad = fleet.set_domain("broken.example").await;
    let answer = notify(&follower, 0).await;
    assert_eq!(answer["files"].as_array().unwrap().len(), 2, "{answer}");
    let status = wait_status(&follower, "the revert", |s| {
        s["health"]["outcome"] == "reverted"
    })
    .await;
    assert_eq!(
        status["revision"], good,
        "back on the previous revision: {status}"
    );
    assert_eq!(status["revertedRevision"], bad.as_str());
    assert_eq!(status["health"]["unhealthy"]["service"], "core");
    assert_eq!(status["health"]["unhealthy"]["state"], "exited (1)");
    assert!(
        status["health"]["unhealthy"]["logTail"][0]
            .as_str()
            .unwrap()
            .contains("cannot parse")
    );
    // The follower masks what its files say is secret (here `key: <internal>` of mail.yml).
    let tail = status["health"]["unhealthy"]["logTail"].to_string();
    assert!(
        tail.contains("auth with *** failed") && !tail.contains(INTERNAL_SECRET),
        "{tail}"
    );
    assert_eq!(
        fleet.core_yml(0),
        "domain: pryv.me\n",
        "the old file is back"
    );
    // Restarted with the bad file, then again with the good one.
    assert_eq!(
        restarts(&fleet.machine(0)),
        ["restart core nginx", "restart core nginx"]
    );

    // The leader got the report.
    let report = wait_for("the report at the leader", || async {
        let view = fleet
            .admin(reqwest::Method::GET, "/admin/status", None)
            .await;
        let report = view["followers"][0]["lastReport"].clone();
        (report["outcome"] == "reverted").then_some(view)
    })
    .await;
    let line = &report["followers"][0];
    assert_eq!(line["lastReport"]["revision"], bad.as_str());
    assert_eq!(line["lastReport"]["currentRevision"], good);
    assert_eq!(line["lastReport"]["unhealthy"]["service"], "core");
    // The leader masks every setting and internal value of 8+ characters (here the DOMAIN too).
    let tail = line["lastReport"]["unhealthy"]["logTail"].to_string();
    assert!(
        tail.contains("failed at ***")
            && !tail.contains(INTERNAL_SECRET)
            && !tail.contains("broken.example"),
        "{tail}"
    );
    assert_eq!(
        line["upToDate"], false,
        "a reverted follower is not up to date: {line}"
    );

    // The same bad revision again: not applied, no restart loop.
    let again = notify(&follower, 0).await;
    assert!(
        again["skipped"].as_str().unwrap().contains("reverted"),
        "{again}"
    );
    assert_eq!(restarts(&fleet.machine(0)).len(), 2);
    assert_eq!(fleet.core_yml(0), "domain: pryv.me\n");

    // A newer revision is tried normally.
    let fixed = fleet.set_domain("example.com").await;
    notify(&follower, 0).await;
    let status = wait_status(&follower, "the healthy apply", |s| {
        s["health"]["outcome"] == "healthy"
    })
    .await;
    assert_eq!(status["revision"], fixed.as_str());
    assert_eq!(fleet.core_yml(0), "domain: example.com\n");
}

async fn rollout(fleet: &Fleet, id: i64, what: &str, predicate: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, || async {
        let rollout = fleet
            .admin(reqwest::Method::GET, &format!("/admin/rollouts/{id}"), None)
            .await;
        predicate(&rollout).then_some(rollout)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_stops_after_the_first_bad_wave_and_a_good_one_rolls_through_every_wave() {
    let fleet = Fleet::new(3, true);
    let _leader = fleet.start_leader();
    let followers: Vec<Daemon> = (0..3)
        .map(|i| fleet.start_follower(i, &json!({})))
        .collect();
    for follower in &followers {
        wait_status(follower, "the first tree", |s| s["revision"].is_string()).await;
    }
    let good = fleet.conf(0, None).await.1["revision"]
        .as_str()
        .unwrap()
        .to_owned();
    let waves =
        json!({"waves": [{"followers": ["m1"]}, {"followers": ["m2"]}, {"followers": ["m3"]}]});

    fleet.set_domain("broken.example").await;
    let answer = fleet
        .admin(reqwest::Method::POST, "/admin/notify", Some(waves.clone()))
        .await;
    let id = answer["rollout"].as_i64().unwrap();
    assert_eq!(
        answer["successes"].as_array().unwrap().len(),
        1,
        "only the first wave: {answer}"
    );
    let stopped = rollout(&fleet, id, "the rollout to stop", |r| {
        r["state"] == "stopped"
    })
    .await;
    assert_eq!(
        stopped["waves"][0]["followers"][0]["state"], "reverted",
        "{stopped}"
    );
    assert_eq!(stopped["waves"][1]["followers"][0]["state"], "pending");
    assert!(
        stopped["reason"].as_str().unwrap().contains("m1")
            || stopped["reason"].as_str().unwrap().contains("127.0.0.1")
    );
    for index in 0..3 {
        assert_eq!(
            fleet.core_yml(index),
            "domain: pryv.me\n",
            "machine {index}"
        );
    }
    assert!(restarts(&fleet.machine(1)).is_empty() && restarts(&fleet.machine(2)).is_empty());
    // Held back: a later wave's follower keeps its revision, asked with or without it.
    assert_eq!(fleet.conf(1, Some(&good)).await.0, 304);
    assert_eq!(fleet.conf(2, None).await.1["revision"], good.as_str());
    // ... even when it syncs by itself.
    let held = notify(&followers[1], 1).await;
    assert!(held["files"].as_array().unwrap().is_empty(), "{held}");
    assert_eq!(fleet.core_yml(1), "domain: pryv.me\n");

    let fixed = fleet.set_domain("example.com").await;
    let answer = fleet
        .admin(reqwest::Method::POST, "/admin/notify", Some(waves))
        .await;
    let id = answer["rollout"].as_i64().unwrap();
    let done = rollout(&fleet, id, "the good rollout to finish", |r| {
        r["state"] == "done"
    })
    .await;
    for (index, wave) in done["waves"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            wave["followers"][0]["state"], "healthy",
            "wave {index}: {done}"
        );
        assert!(wave["started"].is_i64() && wave["finished"].is_i64());
    }
    for (index, follower) in followers.iter().enumerate() {
        assert_eq!(
            fleet.core_yml(index),
            "domain: example.com\n",
            "machine {index}"
        );
        assert_eq!(status(follower).await["revision"], fixed.as_str());
    }
    let superseded = fleet
        .admin(
            reqwest::Method::GET,
            &format!("/admin/rollouts/{}", id - 1),
            None,
        )
        .await;
    assert_eq!(superseded["state"], "superseded");
    let listed = fleet
        .admin(reqwest::Method::GET, "/admin/rollouts", None)
        .await;
    assert_eq!(listed["rollouts"][0]["id"], id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_the_leader_cannot_reach_converges_by_long_polling() {
    let fleet = Fleet::new(1, false);
    let _leader = fleet.start_leader();
    let follower = fleet.start_follower(0, &json!({"leader": {"url": fleet.leader_url(), "auth": key(0), "longPoll": true}, "health": {}}));
    wait_status(&follower, "the first tree", |s| s["revision"].is_string()).await;

    let target = fleet.set_domain("example.com").await;
    let changed = Instant::now();
    // Nobody notifies it (the leader could not): the long-poll brings the change.
    wait_status(&follower, "the long-polled change", |s| {
        s["revision"] == target.as_str()
    })
    .await;
    assert!(
        changed.elapsed() < Duration::from_secs(5),
        "{:?}",
        changed.elapsed()
    );
    assert_eq!(fleet.core_yml(0), "domain: example.com\n");
    let machine = fleet.machine(0);
    let done = wait_for("the restart", || async {
        let done = restarts(&machine);
        (!done.is_empty()).then_some(done)
    })
    .await;
    assert_eq!(done, ["restart core nginx"]);

    // The leader answers a waiting request at the timeout with 304.
    let started = Instant::now();
    let response = reqwest::Client::new()
        .get(format!(
            "{}/conf?wait={target}&timeout=1",
            fleet.leader_url()
        ))
        .header("authorization", key(0))
        .header("if-none-match", format!("\"{target}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304);
    assert!(started.elapsed() >= Duration::from_millis(900));
    // The same without If-None-Match (as the docs promise): 304 too, with the ETag, never the whole tree.
    let response = reqwest::Client::new()
        .get(format!(
            "{}/conf?wait={target}&timeout=1",
            fleet.leader_url()
        ))
        .header("authorization", key(0))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304);
    assert_eq!(
        response.headers()["etag"].to_str().unwrap(),
        format!("\"{target}\"")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_preview_shows_exactly_what_the_apply_then_changes() {
    let fleet = Fleet::new(1, true);
    let _leader = fleet.start_leader();
    let follower = fleet.start_follower(0, &json!({"health": {}}));
    wait_status(&follower, "the first tree", |s| s["revision"].is_string()).await;
    let change = json!({"MAIL": {"name": "Mail", "settings": {"MAIL_HOST": {"value": "smtp.example.com", "description": "relay"}}}});

    let preview = fleet
        .admin(
            reqwest::Method::POST,
            "/admin/settings/preview",
            Some(change.clone()),
        )
        .await;
    let role = &preview["roles"][0];
    assert_eq!(role["role"], "core");
    let files: Vec<String> = role["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(files, ["/mail/conf/mail.yml"]);
    let diff = role["files"][0]["diff"].as_str().unwrap();
    assert!(
        diff.contains("-host: smtp.pryv.me\n+host: smtp.example.com"),
        "{diff}"
    );
    assert!(
        diff.contains("key: ***") && !diff.contains(INTERNAL_SECRET),
        "secrets masked: {diff}"
    );
    assert_eq!(role["restarts"], json!(["mail"]));
    assert_eq!(role["followers"][0]["name"], "m1");
    assert_eq!(role["followers"][0]["restarts"], json!(["mail"]));
    assert_eq!(fleet.core_yml(0), "domain: pryv.me\n", "nothing saved");
    let unchanged = fleet
        .admin(reqwest::Method::GET, "/admin/settings", None)
        .await;
    assert_eq!(
        unchanged["settings"]["MAIL"]["settings"]["MAIL_HOST"]["value"],
        "smtp.pryv.me"
    );

    // The same body saved and notified does exactly that.
    fleet
        .admin(reqwest::Method::PUT, "/admin/settings", Some(change))
        .await;
    let answer = notify(&follower, 0).await;
    assert_eq!(answer["files"], json!(files));
    assert_eq!(answer["restarted"], role["restarts"]);
    let machine = fleet.machine(0);
    let done = wait_for("the restart", || async {
        let done = restarts(&machine);
        (!done.is_empty()).then_some(done)
    })
    .await;
    assert_eq!(done, ["restart mail"]);

    // The terminal view of the same change, from the recorded revision before it.
    let output = Command::new(bin("config-leader"))
        .arg("--config")
        .arg(
            fleet
                .root
                .path()
                .join("config-leader/conf/config-leader.json"),
        )
        .args(["diff", "--from-revision", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("role core: 1 file(s); restarts: mail"),
        "{text}"
    );
    assert!(
        text.contains("changed /mail/conf/mail.yml") && text.contains("+host: smtp.example.com"),
        "{text}"
    );
    assert!(!text.contains(INTERNAL_SECRET), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_killed_during_the_health_check_checks_again_at_start_and_reverts() {
    let fleet = Fleet::new(1, true);
    let _leader = fleet.start_leader();
    let mut follower = fleet.start_follower(0, &json!({}));
    let good =
        wait_status(&follower, "the first tree", |s| s["revision"].is_string()).await["revision"]
            .clone();
    let bad = fleet.set_domain("broken.example").await;
    notify(&follower, 0).await;
    wait_status(&follower, "the health check", |s| {
        s["health"]["outcome"] == "checking"
    })
    .await;
    follower.child.kill().unwrap();
    follower.child.wait().unwrap();
    assert_eq!(
        fleet.core_yml(0),
        "domain: broken.example\n",
        "killed with the new files on disk"
    );

    let follower = fleet.start_follower(0, &json!({}));
    let status = wait_status(&follower, "the revert after the restart", |s| {
        s["health"]["outcome"] == "reverted"
    })
    .await;
    assert_eq!(status["revision"], good, "{status}");
    assert_eq!(status["revertedRevision"], bad.as_str());
    assert_eq!(fleet.core_yml(0), "domain: pryv.me\n");
    assert!(
        !fleet
            .machine(0)
            .join("pryv/.config-follower/health-gate.json")
            .exists(),
        "{}",
        follower.logs()
    );
    // The first sync after the revert skips the bad revision instead of applying it again.
    let again = notify(&follower, 0).await;
    assert!(again["skipped"].is_string(), "{again}");
    assert_eq!(fleet.core_yml(0), "domain: pryv.me\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_rollout_survives_a_leader_restart_and_can_be_resumed_or_aborted() {
    let fleet = Fleet::new(3, true);
    let mut leader = fleet.start_leader();
    let followers: Vec<Daemon> = (0..3)
        .map(|i| fleet.start_follower(i, &json!({})))
        .collect();
    for follower in &followers {
        wait_status(follower, "the first tree", |s| s["revision"].is_string()).await;
    }
    let good = fleet.conf(0, None).await.1["revision"]
        .as_str()
        .unwrap()
        .to_owned();
    let waves = json!({"waves": [{"followers": ["m1"]}, {"followers": ["m2"]}, {"followers": ["m3"]}], "waveTimeoutSeconds": 30});
    fleet.set_domain("broken.example").await;
    let id = fleet
        .admin(reqwest::Method::POST, "/admin/notify", Some(waves))
        .await["rollout"]
        .as_i64()
        .unwrap();
    rollout(&fleet, id, "the rollout to stop", |r| {
        r["state"] == "stopped"
    })
    .await;

    // A restart of the leader keeps the rollout and what it holds back.
    leader.terminate();
    let leader = fleet.start_leader();
    let kept = fleet
        .admin(reqwest::Method::GET, &format!("/admin/rollouts/{id}"), None)
        .await;
    assert_eq!(kept["state"], "stopped", "{kept}");
    assert_eq!(kept["waves"][0]["followers"][0]["state"], "reverted");
    assert_eq!(
        fleet.conf(1, Some(&good)).await.0,
        304,
        "m2 still held back"
    );
    let last = fleet
        .admin(reqwest::Method::GET, "/admin/status", None)
        .await;
    assert_eq!(
        last["followers"][0]["lastReport"]["outcome"], "reverted",
        "reports kept: {last}"
    );

    // Resume: the operator goes on with the next wave; m2 gets the (bad) revision and reverts too.
    let resumed = fleet
        .admin(
            reqwest::Method::POST,
            &format!("/admin/rollouts/{id}/resume"),
            None,
        )
        .await;
    assert_eq!(resumed["state"], "running");
    assert_eq!(resumed["currentWave"], 1);
    let stopped = rollout(&fleet, id, "the second wave to stop it", |r| {
        r["state"] == "stopped" && r["currentWave"] == 1
    })
    .await;
    assert_eq!(
        stopped["waves"][1]["followers"][0]["state"], "reverted",
        "{stopped}"
    );
    assert_eq!(fleet.core_yml(1), "domain: pryv.me\n");
    assert_eq!(fleet.core_yml(2), "domain: pryv.me\n");

    // Abort: the rollout ends and holds nobody back any more.
    let aborted = fleet
        .admin(
            reqwest::Method::POST,
            &format!("/admin/rollouts/{id}/abort"),
            None,
        )
        .await;
    assert_eq!(aborted["state"], "aborted");
    let refused = reqwest::Client::new()
        .post(format!("{}/admin/rollouts/{id}/resume", fleet.leader_url()))
        .header("authorization", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    assert_ne!(fleet.conf(2, Some(&good)).await.0, 304, "m3 no longer held");
    drop(leader);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_polling_follower_of_a_later_wave_waits_for_its_wave() {
    let fleet = Fleet::new(2, false);
    let _leader = fleet.start_leader();
    let poll =
        |i: usize| json!({"leader": {"url": fleet.leader_url(), "auth": key(i), "longPoll": true}});
    let first = fleet.start_follower(0, &poll(0));
    let second = fleet.start_follower(1, &poll(1));
    for follower in [&first, &second] {
        wait_status(follower, "the first tree", |s| s["revision"].is_string()).await;
    }
    // Saved but held: the followers waiting on the leader do not get it before the rollout.
    let target = fleet.save_domain("example.com", "?hold=true").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fleet.core_yml(0),
        "domain: pryv.me\n",
        "held until the notification"
    );
    assert_eq!(fleet.core_yml(1), "domain: pryv.me\n");
    // The leader reaches neither: they get the target by long-polling, wave by wave.
    let waves = json!({"waves": [{"followers": ["m1"]}], "pauseSeconds": 2});
    let id = fleet
        .admin(reqwest::Method::POST, "/admin/notify", Some(waves))
        .await["rollout"]
        .as_i64()
        .unwrap();
    wait_status(&first, "m1 to long-poll the target", |s| {
        s["revision"] == target.as_str()
    })
    .await;
    assert_eq!(
        fleet.core_yml(1),
        "domain: pryv.me\n",
        "m2's wave has not started"
    );
    // Its wave starts after m1 reported healthy and the pause: then it converges by itself.
    wait_status(&second, "m2 in its wave", |s| {
        s["revision"] == target.as_str()
    })
    .await;
    rollout(&fleet, id, "the rollout to finish", |r| {
        r["state"] == "done"
    })
    .await;
    assert_eq!(fleet.core_yml(1), "domain: example.com\n");
}
