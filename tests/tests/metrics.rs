//! `GET /metrics` of both real daemons after a day's work in miniature (fetch, settings change, notify,
//! restart, an operator's edit, logins), checked against docs/METRICS.md; the dashboard's queries and the alert
//! rules name only metrics that exist; the rules parse (`promtool check rules` where it is installed).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pryv_e2e::platform::*;
use pryv_e2e::{available, free_port, skip};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "metrics-admin-key-0123456789abcdef";
const METRICS_TOKEN: &str = "scrape-token-0123456789";

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Metric names in `text`: `pryv_config_*` and `process_*` words.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if (rest.starts_with("pryv_config_") || rest.starts_with("process_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
        {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.insert(rest[..end].to_owned());
            i += end;
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    names
}

/// The names a histogram or counter exposes under: `x_bucket`/`x_sum`/`x_count` count as `x`.
fn base(name: &str) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(stripped) = name.strip_suffix(suffix) {
            return stripped.to_owned();
        }
    }
    name.to_owned()
}

/// The metrics documented in docs/METRICS.md (first column of its tables).
fn documented() -> BTreeSet<String> {
    std::fs::read_to_string(repo().join("docs/METRICS.md"))
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_owned)
        .collect()
}

async fn scrape(url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("{url}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The value of the first exposition line that starts with `series`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn both_daemons_expose_every_documented_metric() {
    let platform = Platform::new();
    let follower_port = free_port();
    let config_path = platform.path("config-leader/conf/config-leader.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["followers"][KEY]["url"] = json!(format!("http://127.0.0.1:{follower_port}"));
    config["followers"][KEY]["name"] = json!("core-1");
    config["adminKey"] = json!(ADMIN_KEY);
    config["metrics"] = json!({"token": METRICS_TOKEN});
    std::fs::write(&config_path, config.to_string()).unwrap();
    let leader = platform.start_leader(free_port());
    let mut follower = platform.spawn_follower_with(
        leader.addr.unwrap().port(),
        &json!({"http": {"ip": "127.0.0.1", "port": follower_port}, "watch": {"debounceMs": 100}}),
    );
    follower.wait_listening(Duration::from_secs(30));
    let client = reqwest::Client::new();

    // A settings change, a notification (restarts), an operator's edit, logins.
    let answer: Value = client
        .put(format!("{}/admin/settings", leader.url()))
        .header("authorization", ADMIN_KEY)
        .json(&json!({"MAIL": {"settings": {"MAIL_HOST": {"value": "smtp.example.org"}}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer["revision"].is_number(), "{answer}");
    let notified: Value = client
        .post(format!("{}/admin/notify", leader.url()))
        .header("authorization", ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        notified["successes"].as_array().unwrap().len(),
        1,
        "{notified}"
    );
    platform
        .docker
        .wait_for("the restart", |a| a.iter().any(|l| l == "restart mail"));
    touch(&platform.data().join("core/conf/core.yml"));
    platform.docker.wait_for("the watcher's restart", |a| {
        a.iter().any(|l| l == "restart core")
    });
    let password = std::fs::read_to_string(platform.path("config-leader/credentials.txt")).unwrap();
    for attempt in [password.trim(), "wrong-password"] {
        client
            .post(format!("{}/auth/login", leader.url()))
            .json(&json!({"username": "initial_user", "password": attempt}))
            .send()
            .await
            .unwrap();
    }
    client
        .post(format!("{}/admin/settings/rollback", leader.url()))
        .header("authorization", ADMIN_KEY)
        .json(&json!({"revision": 1}))
        .send()
        .await
        .unwrap();

    // The leader's metrics need the token; the follower's are open.
    assert_eq!(scrape(&leader.url(), None).await.0, 401);
    assert_eq!(scrape(&leader.url(), Some("wrong")).await.0, 401);
    let (status, leader_text) = scrape(&leader.url(), Some(METRICS_TOKEN)).await;
    assert_eq!(status, 200);
    let (status, follower_text) = scrape(&follower.url(), None).await;
    assert_eq!(status, 200);

    let exposed: BTreeSet<String> = names_in(&leader_text)
        .union(&names_in(&follower_text))
        .map(|n| base(n))
        .collect();
    let documented = documented();
    assert!(documented.len() > 25, "{documented:?}");
    let missing: Vec<&String> = documented.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "documented but not exposed: {missing:?}"
    );
    let undocumented: Vec<&String> = exposed
        .iter()
        .filter(|n| n.starts_with("pryv_config_"))
        .filter(|n| !documented.contains(*n))
        .collect();
    assert!(
        undocumented.is_empty(),
        "exposed but not documented: {undocumented:?}"
    );

    // A few values that must follow from what happened.
    assert_eq!(
        value(
            &leader_text,
            "pryv_config_leader_followers{state=\"known\"}"
        ),
        Some(1.0)
    );
    assert!(
        value(
            &leader_text,
            "pryv_config_leader_notifications_total{outcome=\"ok\"}"
        ) >= Some(1.0)
    );
    assert!(
        value(
            &leader_text,
            "pryv_config_leader_admin_logins_total{outcome=\"failure\"}"
        ) >= Some(1.0)
    );
    assert!(
        leader_text
            .contains("pryv_config_leader_http_requests_total{route=\"/conf\",status=\"200\"}")
    );
    assert!(
        leader_text
            .contains("pryv_config_leader_follower_up_to_date{follower=\"core-1\",role=\"core\"}")
    );
    assert!(
        value(
            &follower_text,
            "pryv_config_follower_restarts_total{service=\"mail\",outcome=\"ok\"}"
        ) >= Some(1.0)
    );
    assert!(value(&follower_text, "pryv_config_follower_watcher_events_total") >= Some(1.0));
    assert_eq!(
        value(&follower_text, "pryv_config_follower_leader_reachable"),
        Some(1.0)
    );
    for text in [&leader_text, &follower_text] {
        assert!(
            !text.contains(KEY) && !text.contains(ADMIN_KEY),
            "no key in a label"
        );
    }
}

#[test]
fn the_dashboard_and_the_alerts_name_only_documented_metrics() {
    let documented = documented();
    let dashboard = std::fs::read_to_string(repo().join("docs/grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&dashboard).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queries.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(queries.len() >= 10);
    let rules_text = std::fs::read_to_string(repo().join("docs/prometheus-alerts.yml")).unwrap();
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&rules_text).unwrap();
    let mut alerts = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            assert!(rule["alert"].as_str().is_some(), "{rule:?}");
            alerts.push(rule["expr"].as_str().unwrap().to_owned());
        }
    }
    for expr in queries.iter().chain(&alerts) {
        for name in names_in(expr) {
            let name = base(&name);
            assert!(
                documented.contains(&name),
                "{name} (in {expr}) is not a documented metric"
            );
        }
    }
    for needed in [
        "pryv_config_leader_follower_up_to_date",
        "pryv_config_follower_applies_total",
        "up{job=\"pryv-config-leader\"}",
    ] {
        assert!(rules_text.contains(needed), "alert on {needed}");
    }
    if available("promtool", "--version") {
        let output = Command::new("promtool")
            .args(["check", "rules"])
            .arg(repo().join("docs/prometheus-alerts.yml"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    } else {
        skip(
            "promtool check rules: prometheus is not installed (the rules were parsed as YAML instead)",
        );
    }
}
