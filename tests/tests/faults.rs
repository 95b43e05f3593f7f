//! Faults as they happen, against the real binaries: a caller that hangs up mid-apply, a file that cannot be
//! written, kill -9 and SIGTERM during a restart, an empty or broken source, stale temporary files, oversized
//! bodies. The follower must never claim a state it is not in, never wipe itself, never lose a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use pryv_e2e::platform::*;
use pryv_e2e::{FakeDocker, free_port, wait_until, write};
use serde_json::{Value, json};

/// A leader and a converged follower; returns (leader, follower, leader port).
fn converged(platform: &Platform, extra: &Value) -> (pryv_e2e::Daemon, pryv_e2e::Daemon) {
    let port = free_port();
    let leader = platform.start_leader(port);
    let mut follower = platform.spawn_follower_with(port, extra);
    follower.wait_listening(Duration::from_secs(30));
    (leader, follower)
}

async fn change_domain(
    platform: &Platform,
    leader: &pryv_e2e::Daemon,
    from: &str,
    to: &str,
) -> String {
    let old = leader_revision(leader).await;
    platform.set_platform(&format!("value: {from}"), &format!("value: {to}"));
    wait_leader_change(leader, &old).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_hangs_up_mid_apply_does_not_stop_the_sync() {
    let platform = Platform::new();
    // Validation of `core` takes a second: the caller gives up long before the apply ends.
    let (leader, follower) = converged(&platform, &json!({"validate": {"core": "sleep 1"}}));
    let target = change_domain(&platform, &leader, "pryv.me", "example.com").await;

    let hung_up = reqwest::Client::new()
        .post(format!("{}/notify", follower.url()))
        .header("authorization", KEY)
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(hung_up.is_err(), "the caller gave up");

    let status = wait_status(&follower, "the revision of the abandoned sync", |s| {
        s["revision"] == target.as_str()
    })
    .await;
    assert!(status["lastApplyError"].is_null(), "{status}");
    assert_eq!(platform.read("core/conf/core.yml"), "domain: example.com\n");
    platform
        .docker
        .wait_for("the restart of the abandoned sync", |a| {
            a.iter().any(|line| line == "restart core mail nginx")
        });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_cannot_be_written_keeps_the_old_revision_and_is_retried() {
    let platform = Platform::new();
    let (leader, follower) = converged(&platform, &json!({}));
    let before = follower_status(&follower).await["revision"].clone();
    // The fault: a folder where the file goes (a rename onto it fails, even for root).
    let blocked = platform.data().join("core/conf/core.yml");
    std::fs::remove_file(&blocked).unwrap();
    write(&blocked, "in-the-way", "x");
    let target = change_domain(&platform, &leader, "pryv.me", "example.com").await;

    let (status, body) = notify(&follower, KEY, None).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["id"], "apply-incomplete");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/core/conf/core.yml")
    );
    assert!(
        follower
            .logs()
            .contains("configuration not wholly applied; the revision is not taken"),
        "the log says what happened"
    );
    let status = follower_status(&follower).await;
    assert_eq!(
        status["revision"], before,
        "the new revision is not claimed"
    );
    assert_eq!(status["failedRevision"], target.as_str());
    assert!(
        status["lastApplyError"]
            .as_str()
            .unwrap()
            .contains("core.yml")
    );
    // What did reach the disk reaches the services.
    assert_eq!(
        platform.read("nginx/conf/nginx.conf"),
        "server_name *.example.com;\n"
    );
    platform
        .docker
        .wait_for("restart of what was written", |a| {
            a.iter().any(|l| l == "restart mail nginx")
        });

    // The fault goes away: the background retry converges without anyone asking.
    std::fs::remove_dir_all(&blocked).unwrap();
    let status = wait_status(&follower, "convergence after the fault", |s| {
        s["revision"] == target.as_str()
    })
    .await;
    assert!(status["lastApplyError"].is_null(), "{status}");
    assert_eq!(platform.read("core/conf/core.yml"), "domain: example.com\n");
    platform.docker.wait_for("restart of the late file", |a| {
        a.iter().any(|l| l == "restart core")
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn restarts_survive_kill_9_and_sigterm_waits_for_the_running_one() {
    let mut platform = Platform::new();
    platform.docker = FakeDocker::slow(platform.root.path(), 1.5);
    let (leader, mut follower) = converged(&platform, &json!({}));
    let port = leader.addr.unwrap().port();

    change_domain(&platform, &leader, "pryv.me", "example.com").await;
    let (status, body) = notify(&follower, KEY, None).await;
    assert_eq!(status, 200, "{body}");
    platform
        .docker
        .wait_for("the restart to start", |a| a.len() == 1);
    let pending = platform
        .data()
        .join(".config-follower/pending-restarts.json");
    assert!(pending.exists(), "persisted while it runs");
    follower.child.kill().unwrap();
    follower.child.wait().unwrap();

    // A killed write left temporary files; the next start removes them.
    write(&platform.data(), "core/conf/.pryv-tmp-stale", "half");
    write(&platform.data(), ".pryv-tmp-stale2", "half");
    let mut follower = platform.spawn_follower_with(port, &json!({}));
    follower.wait_listening(Duration::from_secs(30));
    let finished = wait_until("the resumed restart", Duration::from_secs(15), || {
        let finished = platform.docker.finished();
        (finished.len() >= 2).then_some(finished)
    });
    assert_eq!(
        finished,
        ["restart core mail nginx", "restart core mail nginx"]
    );
    assert!(!platform.data().join("core/conf/.pryv-tmp-stale").exists());
    assert!(!platform.data().join(".pryv-tmp-stale2").exists());
    wait_until("the queue to empty", Duration::from_secs(5), || {
        (!pending.exists()).then_some(())
    });

    // SIGTERM while a restart runs: the follower waits for it before exiting.
    change_domain(&platform, &leader, "example.com", "example.org").await;
    let (status, _) = notify(&follower, KEY, None).await;
    assert_eq!(status, 200);
    platform
        .docker
        .wait_for("the second restart to start", |a| a.len() == 3);
    assert_eq!(follower.terminate(), Some(0));
    assert_eq!(
        platform.docker.finished().len(),
        3,
        "the running command was not cut short"
    );
    assert!(!pending.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_or_broken_source_never_empties_a_machine() {
    let platform = Platform::new();
    let (leader, follower) = converged(&platform, &json!({}));
    let good = leader_revision(&leader).await;
    let platform_yml = platform.path("config-leader/conf/platform.yml");
    let settings = std::fs::read_to_string(&platform_yml).unwrap();

    // An emptied platform.yml: `check` fails, the leader keeps serving the last good tree.
    std::fs::write(&platform_yml, "").unwrap();
    let check = platform.check();
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stdout).contains("no settings"));
    let (status, body) = notify(&follower, KEY, Some(json!({"force": false}))).await;
    assert_eq!(status, 200, "{body}");
    assert!(strings(&body["files"]).is_empty() && strings(&body["removed"]).is_empty());
    assert_eq!(leader_revision(&leader).await, good);
    assert!(leader.logs().contains("still serving the last good tree"));
    std::fs::write(&platform_yml, &settings).unwrap();

    // An emptied role folder: the same.
    let role = platform.path("config-leader/data/core");
    let moved = platform.path("config-leader/core-away");
    std::fs::rename(&role, &moved).unwrap();
    std::fs::create_dir(&role).unwrap();
    let check = platform.check();
    assert!(String::from_utf8_lossy(&check.stdout).contains("has no file"));
    let (status, _) = notify(&follower, KEY, None).await;
    assert_eq!(status, 200);
    assert_eq!(platform.read("core/conf/core.yml"), "domain: pryv.me\n");
    assert!(platform.data().join("pryv.yml").exists());
    std::fs::remove_dir(&role).unwrap();
    std::fs::rename(&moved, &role).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_follower_refuses_a_tree_that_removes_everything_unless_confirmed() {
    let platform = Platform::new();
    let tree = std::sync::Arc::new(std::sync::Mutex::new(json!({"files": [
        {"path": "/core/conf/a.yml", "content": "a"},
        {"path": "/core/conf/b.yml", "content": "b"},
        {"path": "/core/conf/c.yml", "content": "c"}
    ]})));
    let served = tree.clone();
    let app = axum::Router::new().route(
        "/conf",
        axum::routing::get(move || {
            let served = served.clone();
            async move { axum::Json(served.lock().unwrap().clone()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut follower = platform.spawn_follower(port);
    follower.wait_listening(Duration::from_secs(20));
    assert_eq!(platform.read("core/conf/c.yml"), "c");

    *tree.lock().unwrap() = json!({"files": []});
    let (status, body) = notify(&follower, KEY, None).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("every one of the 3 files")
    );
    assert_eq!(platform.read("core/conf/a.yml"), "a", "nothing removed");

    *tree.lock().unwrap() = json!({"files": [{"path": "/core/conf/a.yml", "content": "a"}]});
    let (status, body) = notify(&follower, KEY, None).await;
    assert_eq!(status, 500, "two thirds is over the 50 % default: {body}");

    let (status, body) = notify(&follower, KEY, Some(json!({"confirmRemovals": true}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        strings(&body["removed"]),
        ["/core/conf/b.yml", "/core/conf/c.yml"]
    );

    // An oversized notification answers the JSON error shape.
    let response = reqwest::Client::new()
        .post(format!("{}/notify", follower.url()))
        .header("authorization", KEY)
        .body(vec![b' '; 3 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["id"], "payload-too-large");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_follower_serves_https_and_the_leader_notifies_it_with_its_ca() {
    let platform = Platform::new();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    write(platform.root.path(), "tls/cert.pem", &cert.cert.pem());
    write(
        platform.root.path(),
        "tls/key.pem",
        &cert.key_pair.serialize_pem(),
    );
    let follower_port = free_port();
    let admin_key = "admin-key-0123456789abcdefghijkl";
    let leader_config = platform.path("config-leader/conf/config-leader.json");
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(&leader_config).unwrap()).unwrap();
    config["followers"][KEY]["url"] = json!(format!("https://localhost:{follower_port}"));
    config["notify"] = json!({"caFile": platform.path("tls/cert.pem")});
    config["adminKey"] = json!(admin_key);
    std::fs::write(&leader_config, config.to_string()).unwrap();

    let port = free_port();
    let leader = platform.start_leader(port);
    let mut follower = platform.spawn_follower_with(
        port,
        &json!({
            "http": {"ip": "127.0.0.1", "port": follower_port},
            "tls": {"certFile": platform.path("tls/cert.pem"), "keyFile": platform.path("tls/key.pem")}
        }),
    );
    follower.wait_listening(Duration::from_secs(30));
    assert!(
        follower.logs().contains("scheme=\"https\""),
        "{}",
        follower.logs()
    );

    // `all`: the follower already runs the current revision; the notification itself is under test.
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/admin/notify", leader.url()))
        .header("authorization", admin_key)
        .json(&json!({"all": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["successes"].as_array().unwrap().len(), 1, "{answer}");
    assert!(
        answer["failures"].as_array().unwrap().is_empty(),
        "{answer}"
    );
    // Plain HTTP to the follower's port does not get an answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{follower_port}/health"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

/// A hand edit with a value nested 100,000 levels deep: refused at once naming the line, the last good tree
/// stays served without delay, and SIGTERM still stops the leader.
#[tokio::test(flavor = "multi_thread")]
async fn a_pathologically_deep_platform_file_is_refused_fast_and_the_good_tree_stays() {
    let platform = Platform::new();
    let port = free_port();
    let mut leader = platform.start_leader(port);
    let good = leader_revision(&leader).await;
    let platform_yml = platform.path("config-leader/conf/platform.yml");
    let deep = format!(
        "{}      DEEP:\n        value: {}{}\n",
        std::fs::read_to_string(&platform_yml).unwrap(),
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    std::fs::write(&platform_yml, deep).unwrap();
    let check = platform.check();
    let said = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{said}");
    assert!(
        said.contains("line 13: values nested more than 64 levels"),
        "{said}"
    );
    // The leader keeps answering with the last good tree, at once.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let answer = client
        .get(format!("{}/conf", leader.url()))
        .header("authorization", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["revision"], good.as_str());
    wait_until(
        "the leader to refuse the edit",
        Duration::from_secs(10),
        || {
            leader
                .logs()
                .contains("still serving the last good tree")
                .then_some(())
        },
    );
    assert_eq!(leader.terminate(), Some(0));
}

/// A log reader that stops reading (a stalled journald, a full pipe): the leader keeps answering. Its log
/// lines are written by a thread of their own, so no request waits on stderr; without that, the ~64 KiB of
/// the pipe fill after a few hundred request lines and every worker blocks.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_log_reader_never_blocks_requests() {
    let platform = Platform::new();
    let port = free_port();
    let mut leader = std::process::Command::new(pryv_e2e::bin("config-leader"))
        .arg("--config")
        .arg(platform.path("config-leader/conf/config-leader.json"))
        .args(["--ip", "127.0.0.1", "--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        // Piped and never read.
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    pryv_testkit::eventually("the leader answers", Duration::from_secs(20), || async {
        client
            .get(format!("{url}/health"))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    // Each request logs a line of ~200 bytes: far more than the pipe holds.
    for index in 0..3000 {
        let status = client
            .get(format!("{url}/conf"))
            .header("authorization", KEY)
            .send()
            .await
            .map(|r| r.status().as_u16());
        assert_eq!(
            status.ok(),
            Some(200),
            "request {index} with the log reader stalled"
        );
    }
    let _ = leader.kill();
    let _ = leader.wait();
}
