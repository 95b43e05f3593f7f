//! Zones with real processes on loopback: a platform whose cores are in `eu` and `us`, one `eu` core with a
//! hosting name of its own. Each core gets its variant's files; a change of the `eu` SMTP host reaches, and
//! restarts, only the `eu` cores; the rollback goes out as a rollout in zone waves.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pryv_e2e::machine::Machine;
use pryv_e2e::{Daemon, bin, free_port, install_crypto, write};
use pryv_testkit::eventually;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "zones-admin-key-0123456789abcdefghij";

const PLATFORM: &str = "vars:
  MAIN:
    settings:
      DOMAIN:
        value: pryv.example
  HOSTING:
    settings:
      CORE_HOSTING:
        value: hosting-default
  MAIL:
    settings:
      MAIL_HOST:
        value: smtp.example
zones:
  eu:
    vars:
      MAIL:
        settings:
          MAIL_HOST:
            value: smtp.eu.example
  us:
    vars:
      MAIL:
        settings:
          MAIL_HOST:
            value: smtp.us.example
";

fn lay_out_leader(base: &Path, cores: &[Machine]) -> PathBuf {
    write(base, "leader/conf/platform.yml", PLATFORM);
    pryv_e2e::platform::write_core_role(
        &base.join("leader/data"),
        "domain: DOMAIN\nhosting: CORE_HOSTING\n",
    );
    let mut followers = serde_json::Map::new();
    for core in cores {
        let mut entry = json!({
            "url": core.url(),
            "role": "core",
            "name": core.name,
            "zone": if core.name.starts_with("eu") { "eu" } else { "us" },
        });
        if core.name == "eu-2" {
            entry["variables"] = json!({"CORE_HOSTING": "hosting-eu-2"});
        }
        followers.insert(core.key.clone(), entry);
    }
    write(
        base,
        "leader/conf/config-leader.json",
        &json!({
            "templatesPath": "../data",
            "platformSettings": {"platformConfig": "platform.yml"},
            "adminKey": ADMIN_KEY,
            "internals": {},
            "followers": followers,
        })
        .to_string(),
    );
    base.join("leader/conf/config-leader.json")
}

fn leader_command(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("config-leader"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

async fn api(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .header("authorization", ADMIN_KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// The status line of each core, by name.
async fn fleet(leader: &str) -> std::collections::BTreeMap<String, Value> {
    let (_, status) = api(reqwest::Method::GET, format!("{leader}/admin/status"), None).await;
    status["followers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap().to_owned(), f.clone()))
        .collect()
}

async fn all_up_to_date(leader: &str) {
    eventually("every core up to date", Duration::from_secs(20), || async {
        fleet(leader)
            .await
            .values()
            .all(|f| f["upToDate"] == true)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_zone_gets_its_own_files_and_only_a_changed_zone_fetches_and_restarts() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let mut cores: Vec<Machine> = ["eu-1", "eu-2", "us-1"]
        .into_iter()
        .map(|name| Machine::new(dir.path(), name))
        .collect();
    let config = lay_out_leader(dir.path(), &cores);
    let check = leader_command(&config, &["check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    let port = free_port();
    let mut leader_cmd = Command::new(bin("config-leader"));
    leader_cmd.arg("--config").arg(&config).args([
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
    ]);
    let mut leader = Daemon::spawn(leader_cmd);
    leader.wait_listening(Duration::from_secs(30));
    let url = leader.url();
    for core in &mut cores {
        core.start(&url);
    }
    each_core_has_its_variant(&cores, &config, dir.path());
    all_up_to_date(&url).await;
    let before = fleet(&url).await;
    assert_eq!(before["eu-1"]["zone"], "eu");
    assert_eq!(before["eu-1"]["variant"], "core@eu");
    assert!(
        before["eu-2"]["variant"]
            .as_str()
            .unwrap()
            .starts_with("core@eu#")
    );
    assert_eq!(before["us-1"]["variant"], "core@us");
    assert_ne!(
        before["eu-1"]["currentRevision"],
        before["us-1"]["currentRevision"]
    );

    a_bad_zone_change_is_refused_naming_zone_and_setting(&url).await;
    let changed = only_eu_fetches_writes_and_restarts(&url, &cores, &before).await;
    the_rollback_rolls_out_in_zone_waves(&url, &cores, &before, changed).await;
    assert_eq!(leader.terminate(), Some(0));
}

/// Each core's files are its variant's, exactly what `render --follower` gives.
fn each_core_has_its_variant(cores: &[Machine], config: &Path, base: &Path) {
    for core in cores {
        wait_until_file(core, "mail/conf/mail.yml");
    }
    let mail = |c: &Machine| c.read("mail/conf/mail.yml");
    let hosting = |c: &Machine| c.read("core/conf/core.yml");
    assert_eq!(mail(&cores[0]), "host: smtp.eu.example\n");
    assert_eq!(mail(&cores[1]), "host: smtp.eu.example\n");
    assert_eq!(mail(&cores[2]), "host: smtp.us.example\n");
    assert_eq!(
        hosting(&cores[0]),
        "domain: pryv.example\nhosting: hosting-default\n"
    );
    assert_eq!(
        hosting(&cores[1]),
        "domain: pryv.example\nhosting: hosting-eu-2\n"
    );
    assert_eq!(
        hosting(&cores[2]),
        "domain: pryv.example\nhosting: hosting-default\n"
    );
    for core in cores {
        let out = base.join("render").join(core.name);
        let output = leader_command(
            config,
            &[
                "render",
                "--role",
                "core",
                "--follower",
                core.name,
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        for file in ["mail/conf/mail.yml", "core/conf/core.yml", "pryv.yml"] {
            assert_eq!(
                std::fs::read_to_string(out.join(file)).unwrap(),
                core.read(file),
                "{} {file}",
                core.name
            );
        }
        assert!(
            core.docker.actions().is_empty(),
            "first install restarts nothing"
        );
    }
    let zone_out = base.join("render/zone-us");
    let output = leader_command(
        config,
        &[
            "render",
            "--role",
            "core",
            "--zone",
            "us",
            "--out",
            zone_out.to_str().unwrap(),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(zone_out.join("mail/conf/mail.yml")).unwrap(),
        "host: smtp.us.example\n"
    );
}

fn wait_until_file(core: &Machine, relative: &str) {
    pryv_e2e::wait_until(
        &format!("{} writes {relative}", core.name),
        Duration::from_secs(20),
        || (!core.read(relative).is_empty()).then_some(()),
    );
}

async fn history_length(url: &str) -> usize {
    let (_, history) = api(
        reqwest::Method::GET,
        format!("{url}/admin/settings/history"),
        None,
    )
    .await;
    history["revisions"].as_array().unwrap().len()
}

async fn a_bad_zone_change_is_refused_naming_zone_and_setting(url: &str) {
    let revisions = history_length(url).await;
    let (status, body) = api(
        reqwest::Method::PUT,
        format!("{url}/admin/zones"),
        Some(json!({"zones": {"eu": {"MAIL": {"settings": {"MAIL_HOTS": {"value": "x"}}}}}})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let text = body.to_string();
    assert!(text.contains("zones.eu.MAIL.MAIL_HOTS"), "{text}");
    assert_eq!(history_length(url).await, revisions, "nothing saved");
}

/// Changes the `eu` SMTP host: only the `eu` cores are notified, fetch, write and restart `mail`.
async fn only_eu_fetches_writes_and_restarts(
    url: &str,
    cores: &[Machine],
    before: &std::collections::BTreeMap<String, Value>,
) -> i64 {
    let (status, body) = api(
        reqwest::Method::PUT,
        format!("{url}/admin/zones"),
        Some(json!({
            "zones": {"eu": {"MAIL": {"settings": {"MAIL_HOST": {"value": "smtp2.eu.example"}}}}},
            "message": "eu mail moves"
        })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["zones"]["eu"]["MAIL"]["settings"]["MAIL_HOST"]["value"],
        "smtp2.eu.example"
    );
    let revision = body["revision"].as_i64().unwrap();
    let (status, answer) = api(reqwest::Method::POST, format!("{url}/admin/notify"), None).await;
    assert_eq!(status, 200, "{answer}");
    let urls = |list: &Value| -> Vec<String> {
        list.as_array()
            .map(|l| {
                l.iter()
                    .map(|s| s["url"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let core_url = Machine::url;
    assert_eq!(urls(&answer["successes"]).len(), 2, "{answer}");
    assert!(
        !urls(&answer["successes"]).contains(&core_url(&cores[2])),
        "{answer}"
    );
    assert_eq!(urls(&answer["upToDate"]), [core_url(&cores[2])], "{answer}");
    for core in &cores[..2] {
        core.docker
            .wait_for(&format!("{} restarts mail", core.name), |a| {
                a.iter().any(|a| a == "restart mail")
            });
        assert_eq!(core.read("mail/conf/mail.yml"), "host: smtp2.eu.example\n");
        assert_eq!(core.docker.actions(), ["restart mail"], "{}", core.name);
    }
    all_up_to_date(url).await;
    let after = fleet(url).await;
    let us = &cores[2];
    assert_eq!(us.read("mail/conf/mail.yml"), "host: smtp.us.example\n");
    assert!(us.docker.actions().is_empty(), "us restarts nothing");
    assert_eq!(
        after["us-1"]["lastFetch"], before["us-1"]["lastFetch"],
        "us did not fetch"
    );
    assert_eq!(
        after["us-1"]["currentRevision"],
        before["us-1"]["currentRevision"]
    );
    assert_ne!(
        after["eu-1"]["currentRevision"],
        before["eu-1"]["currentRevision"]
    );
    let (_, entry) = api(
        reqwest::Method::GET,
        format!("{url}/admin/settings/history/{revision}"),
        None,
    )
    .await;
    assert_eq!(entry["message"], "eu mail moves");
    assert_eq!(
        entry["changes"],
        json!([{"zone": "eu", "group": "MAIL", "name": "MAIL_HOST", "change": "changed",
                "before": "smtp.eu.example", "after": "smtp2.eu.example"}])
    );
    revision
}

/// Rolls back and rolls the rollback out in zone waves: the `eu` cores go back, `us` is not part of it.
async fn the_rollback_rolls_out_in_zone_waves(
    url: &str,
    cores: &[Machine],
    before: &std::collections::BTreeMap<String, Value>,
    changed: i64,
) {
    let (status, body) = api(
        reqwest::Method::POST,
        format!("{url}/admin/settings/rollback"),
        Some(json!({"revision": changed - 1})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, answer) = api(
        reqwest::Method::POST,
        format!("{url}/admin/notify"),
        Some(json!({"waves": [{"zones": ["eu"]}, {"zones": ["us"]}]})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["rollout"].as_i64().unwrap();
    let rollout = eventually("the rollout finishes", Duration::from_secs(30), || async {
        let (_, rollout) = api(
            reqwest::Method::GET,
            format!("{url}/admin/rollouts/{id}"),
            None,
        )
        .await;
        (rollout["state"] == "done").then_some(rollout)
    })
    .await;
    let waves = rollout["waves"].as_array().unwrap();
    assert_eq!(
        waves.len(),
        1,
        "us is up to date: no wave of its own: {rollout}"
    );
    let members: Vec<&str> = waves[0]["followers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["zone"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["eu", "eu"], "{rollout}");
    for core in &cores[..2] {
        assert_eq!(core.read("mail/conf/mail.yml"), "host: smtp.eu.example\n");
    }
    assert!(cores[2].docker.actions().is_empty());
    let after = fleet(url).await;
    for name in ["eu-1", "eu-2", "us-1"] {
        assert_eq!(
            after[name]["currentRevision"], before[name]["currentRevision"],
            "{name}"
        );
    }
}
