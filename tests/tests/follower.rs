//! The real leader and follower binaries together on loopback, with a fake `docker` recording restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pryv_e2e::platform::*;
use pryv_e2e::{Daemon, FakeDocker, bin, free_port, install_crypto, wait_until, write};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn restarts_exactly_what_changed() {
    let platform = Platform::new();
    let leader = platform.start_leader(0);
    let leader_port = leader.addr.unwrap().port();
    let mut follower = platform.spawn_follower(leader_port);
    follower.wait_listening(Duration::from_secs(20));

    // First install: the tree is written, the skipped zones are not, nothing is restarted.
    assert_eq!(platform.read("core/conf/core.yml"), "domain: pryv.me\n");
    assert_eq!(platform.read("pryv.yml"), COMPOSE);
    assert!(!platform.data().join("core/data").exists());
    assert!(platform.docker.actions().is_empty());

    // An SMTP change: only mail's file changes, only mail restarts.
    let revision = leader_revision(&leader).await;
    platform.set_platform("smtp.pryv.me", "mail.example.com");
    let new_revision = wait_leader_change(&leader, &revision).await;
    let (status, body) = notify(&follower, KEY, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(strings(&body["files"]), ["/mail/conf/mail.yml"]);
    assert_eq!(strings(&body["restarted"]), ["mail"]);
    assert_eq!(body["revision"], new_revision.as_str());
    assert_eq!(
        platform.read("mail/conf/mail.yml"),
        "host: mail.example.com\ndomain: pryv.me\n"
    );
    platform.docker.wait_for("restart mail", |a| a.len() == 1);

    // An operator's touch restarts the service mounting that file. Because the watcher handles events in
    // order, once nginx has restarted any event from the follower's own write of mail.yml was handled too:
    // mail must still have restarted once only.
    touch(&platform.data().join("nginx/conf/nginx.conf"));
    let actions = platform.docker.wait_for("restart nginx", |a| a.len() >= 2);
    assert_eq!(actions, ["restart mail", "restart nginx"]);

    // Nothing changed: nothing written, nothing restarted.
    let (status, body) = notify(&follower, KEY, None).await;
    assert_eq!(status, 200);
    assert!(strings(&body["files"]).is_empty());
    assert!(strings(&body["restarted"]).is_empty());
    touch(&platform.data().join("core/conf/core.yml"));
    let actions = platform.docker.wait_for("restart core", |a| a.len() >= 3);
    assert_eq!(actions, ["restart mail", "restart nginx", "restart core"]);

    // A forced restart of a listed service; a service this machine does not run is ignored (the certificate
    // service notifies every machine with the same list).
    let (status, body) = notify(
        &follower,
        KEY,
        Some(json!({"services": ["mail"], "force": true})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(strings(&body["restarted"]), ["mail"]);
    let actions = platform.docker.wait_for("forced restart", |a| a.len() >= 4);
    assert_eq!(actions[3], "restart mail");
    let (status, body) = notify(
        &follower,
        KEY,
        Some(json!({"services": ["dns", "reverse_proxy", "mail"], "force": true})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(strings(&body["ignored"]), ["dns", "reverse_proxy"]);
    assert_eq!(strings(&body["restarted"]), ["mail"]);
    let actions = platform.docker.wait_for("forced restart", |a| a.len() >= 5);
    assert_eq!(actions[4], "restart mail");

    // A domain change touches every service mounting a file with the domain: one command for all.
    let revision = leader_revision(&leader).await;
    platform.set_platform("value: pryv.me", "value: example.com");
    wait_leader_change(&leader, &revision).await;
    let (_, body) = notify(&follower, KEY, None).await;
    assert_eq!(strings(&body["restarted"]), ["core", "mail", "nginx"]);
    let actions = platform.docker.wait_for("domain restart", |a| a.len() >= 6);
    assert_eq!(actions[5], "restart core mail nginx");

    // A restriction to some services only restarts those.
    let revision = leader_revision(&leader).await;
    platform.set_platform("value: example.com", "value: example.org");
    wait_leader_change(&leader, &revision).await;
    let (_, body) = notify(&follower, KEY, Some(json!({"services": ["core"]}))).await;
    assert_eq!(strings(&body["restarted"]), ["core"]);
    assert_eq!(
        platform.read("nginx/conf/nginx.conf"),
        "server_name *.example.org;\n",
        "files are all written"
    );

    let (status, _) = notify(&follower, "wrong-key", None).await;
    assert_eq!(status, 401);
    // The status carries log tails of unhealthy containers: the follower's key only; /health stays open.
    for auth in [None, Some("wrong-key")] {
        let mut request = reqwest::Client::new().get(format!("{}/status", follower.url()));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        assert_eq!(request.send().await.unwrap().status(), 401, "{auth:?}");
    }
    let by_query = reqwest::get(format!("{}/status?auth={KEY}", follower.url()))
        .await
        .unwrap();
    assert_eq!(by_query.status(), 200);
    let health = reqwest::get(format!("{}/health", follower.url()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let status: Value = follower_status(&follower).await;
    assert!(status["lastFetch"].as_u64().is_some());
    assert!(status["revision"].as_str().is_some());
    assert_eq!(status["restarts"]["mail"]["ok"], true);
    assert!(!follower.logs().contains(KEY), "key must never be logged");
    assert_eq!(follower.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_leader_writes_nothing_outside_the_data_folder() {
    install_crypto();
    let platform = Platform::new();
    let outside = platform.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(platform.data()).unwrap();
    std::os::unix::fs::symlink(&outside, platform.data().join("link")).unwrap();

    let files = json!({"files": [
        {"path": "/../escape.txt", "content": "x"},
        {"path": "//tmp/evil-absolute", "content": "x"},
        {"path": "/core/conf/../../../escape2.txt", "content": "x"},
        {"path": "/link/conf/through-symlink.txt", "content": "x"},
        {"path": "/core/conf/with\u{0}nul", "content": "x"},
        {"path": "relative/conf/x", "content": "x"},
        {"path": "/core/conf/ok.yml", "content": "fine"}
    ]});
    let app = axum::Router::new().route(
        "/conf",
        axum::routing::get(move || async move { axum::Json(files.clone()) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut follower = platform.spawn_follower(port);
    follower.wait_listening(Duration::from_secs(20));
    assert_eq!(platform.read("core/conf/ok.yml"), "fine");
    // Refused entries mean the tree is not on disk: the notify fails and says why, the revision is not taken.
    let (status, body) = notify(&follower, KEY, None).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["id"], "apply-incomplete");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("6 file(s)") && message.contains("/../escape.txt"),
        "{message}"
    );
    let status = follower_status(&follower).await;
    assert!(
        status["lastApplyError"]
            .as_str()
            .unwrap()
            .contains("6 file(s)")
    );
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "nothing written through the symlink"
    );
    assert!(!platform.path("escape.txt").exists() && !platform.path("escape2.txt").exists());
    assert!(!Path::new("/tmp/evil-absolute").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn fresh_follower_waits_for_the_leader_then_converges() {
    let platform = Platform::new();
    let port = free_port();
    let socket_path = platform.path("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut command = Command::new(bin("config-follower"));
    command
        .arg("--config")
        .arg(platform.follower_config(port, &json!({})))
        .env("PATH", platform.docker.path_env())
        .env("NOTIFY_SOCKET", &socket_path)
        .env_remove("PRYV_CONF_ROOT");
    let mut follower = Daemon::spawn(command).with_credential(KEY);
    wait_until("a failed attempt", Duration::from_secs(10), || {
        follower
            .logs()
            .contains("sync failed; retrying")
            .then_some(())
    });
    assert!(follower.addr.is_none());
    let mut buffer = [0u8; 64];
    assert!(
        socket.recv(&mut buffer).is_err(),
        "not ready while it has no configuration"
    );
    let _leader = platform.start_leader(port);
    follower.wait_listening(Duration::from_secs(30));
    assert_eq!(platform.read("core/conf/core.yml"), "domain: pryv.me\n");
    socket.set_nonblocking(false).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let received = socket.recv(&mut buffer).expect("readiness notification");
    assert!(String::from_utf8_lossy(&buffer[..received]).contains("READY=1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn follower_with_a_tree_serves_at_once_while_the_leader_is_down() {
    let platform = Platform::new();
    write(&platform.data(), "pryv.yml", COMPOSE);
    write(
        &platform.data(),
        "core/conf/core.yml",
        "domain: old.example\n",
    );
    let port = free_port();
    let mut follower = platform.spawn_follower(port);
    follower.wait_listening(Duration::from_secs(5));
    let health = reqwest::get(format!("{}/health", follower.url()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let started = Instant::now();
    let (status, body) = notify(&follower, KEY, None).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["id"], "leader-unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "notify must not hang"
    );

    let _leader = platform.start_leader(port);
    wait_until("convergence", Duration::from_secs(40), || {
        (platform.read("core/conf/core.yml") == "domain: pryv.me\n").then_some(())
    });
    // The tree existed before: the background convergence restarts what changed.
    platform.docker.wait_for("restart after convergence", |a| {
        a.iter().any(|l| l.starts_with("restart"))
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn compose_changes_new_services_polling_and_failed_restarts() {
    let mut platform = Platform::new();
    platform.docker = FakeDocker::failing_on(platform.root.path(), Some("restart extra"));
    let leader = platform.start_leader(0);
    let mut follower = platform.spawn_follower_with(
        leader.addr.unwrap().port(),
        &json!({"poll": {"intervalSeconds": 1}}),
    );
    follower.wait_listening(Duration::from_secs(20));

    // A new service with its own conf/ folder: the compose file changes (up -d) and nothing else restarts.
    // (The service's file first: whichever state the poll sees, the new service is only created, never
    // restarted on top.)
    write(
        platform.root.path(),
        "config-leader/data/core/extra/conf/extra.yml",
        "domain: DOMAIN\n",
    );
    write(
        platform.root.path(),
        "config-leader/data/core/pryv.yml",
        &format!(
            "{COMPOSE}  extra:\n    image: extra\n    volumes:\n      - ./extra/conf/:/conf/\n"
        ),
    );
    // No notification: the periodic poll converges by itself.
    let actions = platform
        .docker
        .wait_for("up -d from the poll", |a| a.iter().any(|l| l == "up -d"));
    assert_eq!(
        actions,
        ["up -d"],
        "up -d creates the new service; nothing else restarts"
    );
    assert_eq!(platform.read("extra/conf/extra.yml"), "domain: pryv.me\n");

    // The new conf/ folder is watched; its service's restart fails and the failure shows on /status.
    wait_until("the new folder is watched", Duration::from_secs(10), || {
        follower
            .logs()
            .contains("watching a new service folder")
            .then_some(())
    });
    touch(&platform.data().join("extra/conf/extra.yml"));
    platform
        .docker
        .wait_for("restart extra", |a| a.iter().any(|l| l == "restart extra"));
    let record = wait_until("failure on /status", Duration::from_secs(10), || {
        let status: Value = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(follower_status(&follower))
        });
        status["restarts"].get("extra").cloned()
    });
    assert_eq!(record["ok"], false);
    assert!(
        record["error"]
            .as_str()
            .unwrap()
            .contains("simulated failure"),
        "{record}"
    );
    // The follower keeps running.
    assert_eq!(
        reqwest::get(format!("{}/health", follower.url()))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn bad_follower_configuration_exits_78_naming_every_problem() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        "c.json",
        r#"{"leader": {"url": "ftp://x"}, "http": {"port": "nope"}}"#,
    );
    let output = Command::new(bin("config-follower"))
        .arg("--config")
        .arg(root.path().join("c.json"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "c.json",
        "leader.url",
        "leader.auth",
        "paths.dataFolder",
        "http.port",
    ] {
        assert!(stderr.contains(expected), "{expected} missing: {stderr}");
    }
}

/// `leader.urls`: the first leader does not answer, the follower moves on to the next, converges, and stays
/// with it (its apply report reaches the leader that answered).
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_moves_on_to_the_next_leader_when_the_first_does_not_answer() {
    let platform = Platform::new();
    let leader = platform.start_leader(0);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut follower = platform.spawn_follower_with(
        0,
        &json!({"leader": {"url": dead, "urls": [leader.url()], "auth": KEY}}),
    );
    follower.wait_listening(Duration::from_secs(20));
    assert_eq!(platform.read("core/conf/core.yml"), "domain: pryv.me\n");
    let logs = follower.logs();
    assert!(
        logs.contains("switched to another one") && logs.contains(&dead),
        "{logs}"
    );
    let status = follower_status(&follower).await;
    assert_eq!(status["leaderUrl"], leader.url(), "{status}");
    // Its apply report goes to the leader that answered, without trying the dead one first.
    wait_until(
        "the report reaches the leader",
        Duration::from_secs(15),
        || leader.logs().contains("apply report").then_some(()),
    );
    assert_eq!(
        follower.logs().matches("switched to another one").count(),
        1,
        "{}",
        follower.logs()
    );
}
