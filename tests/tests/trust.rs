//! The follower never trusts a record of its own it could not read or write: a corrupt manifest is rebuilt
//! and what it cannot account for is reported (never silently kept), and a restart queue that cannot be saved
//! stops the apply before it writes anything. The leader's `/admin/status` never says "up to date" for either.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use pryv_e2e::platform::*;
use pryv_e2e::{Daemon, free_port, write};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "trust-admin-key-0123456789abcdefghij";

/// A leader (with an admin key) and a converged follower.
fn converged(platform: &Platform) -> (Daemon, Daemon) {
    let config = platform.path("config-leader/conf/config-leader.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["adminKey"] = json!(ADMIN_KEY);
    std::fs::write(&config, json.to_string()).unwrap();
    let port = free_port();
    let leader = platform.start_leader(port);
    let mut follower = platform.spawn_follower(port);
    follower.wait_listening(Duration::from_secs(30));
    (leader, follower)
}

/// The follower's entry in the leader's `/admin/status` once its report for `revision` arrived.
async fn reported(leader: &Daemon, revision: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status: Value = reqwest::Client::new()
            .get(format!("{}/admin/status", leader.url()))
            .header("authorization", ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let follower = status["followers"][0].clone();
        if follower["lastReport"]["revision"] == revision {
            return follower;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no report for {revision}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_manifest_is_rebuilt_and_what_it_cannot_account_for_is_reported() {
    let platform = Platform::new();
    let (leader, follower) = converged(&platform);
    let manifest = platform.data().join(".config-follower/manifest.json");
    assert!(manifest.is_file());
    std::fs::write(&manifest, b"{\"files\": [\"core/co").unwrap();
    // The leader stops sending mail.yml; the follower wrote it, but its record of that is gone.
    let old = leader_revision(&leader).await;
    std::fs::remove_file(platform.path("config-leader/data/core/mail/conf/mail.yml")).unwrap();
    let target = wait_leader_change(&leader, &old).await;

    let (status, body) = notify(&follower, KEY, None).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["id"], "apply-incomplete");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("mail/conf/mail.yml"), "{message}");
    assert!(message.contains("manifest"), "{message}");
    assert!(
        platform.data().join("mail/conf/mail.yml").is_file(),
        "kept, not guessed away"
    );
    let status = follower_status(&follower).await;
    assert_ne!(status["revision"], target.as_str(), "{status}");
    assert_eq!(status["failedRevision"], target.as_str());
    assert!(
        platform
            .data()
            .join(".config-follower/manifest.json.corrupt")
            .is_file(),
        "the unreadable bytes are kept for the operator"
    );
    let entry = reported(&leader, &target).await;
    assert_eq!(entry["lastReport"]["outcome"], "incomplete", "{entry}");
    assert_eq!(entry["upToDate"], false, "{entry}");

    // The rebuilt manifest remembers the unaccounted file: a second notification still says so.
    let (status, body) = notify(&follower, KEY, None).await;
    assert_eq!(status, 500, "{body}");
    // The operator confirms: the follower removes it and takes the revision.
    let (status, body) = notify(&follower, KEY, Some(json!({"confirmRemovals": true}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(strings(&body["removed"]), ["/mail/conf/mail.yml"]);
    assert!(!platform.data().join("mail/conf/mail.yml").exists());
    let status = follower_status(&follower).await;
    assert_eq!(status["revision"], target.as_str(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_queue_that_cannot_be_saved_stops_the_apply_before_any_write() {
    let platform = Platform::new();
    let (leader, follower) = converged(&platform);
    // The fault: a non-empty folder where the queue file goes (a rename onto it fails, even for root).
    let queue = platform
        .data()
        .join(".config-follower/pending-restarts.json");
    let _ = std::fs::remove_file(&queue);
    write(&queue, "in-the-way", "x");
    let old = leader_revision(&leader).await;
    platform.set_platform("value: pryv.me", "value: example.com");
    let target = wait_leader_change(&leader, &old).await;

    let (status, body) = notify(&follower, KEY, None).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["id"], "apply-incomplete");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("pending restarts"), "{message}");
    assert_eq!(
        platform.read("core/conf/core.yml"),
        "domain: pryv.me\n",
        "nothing written while its restart could not be recorded"
    );
    let entry = reported(&leader, &target).await;
    assert_eq!(entry["lastReport"]["outcome"], "incomplete", "{entry}");
    assert_eq!(entry["upToDate"], false, "{entry}");

    // The fault goes away: the background retry writes, queues (saved) and restarts.
    std::fs::remove_dir_all(&queue).unwrap();
    let status = wait_status(&follower, "convergence once the queue can be saved", |s| {
        s["revision"] == target.as_str()
    })
    .await;
    assert!(status["lastApplyError"].is_null(), "{status}");
    assert_eq!(platform.read("core/conf/core.yml"), "domain: example.com\n");
    platform
        .docker
        .wait_for("the restart of the late apply", |a| {
            a.iter().any(|line| line == "restart core mail nginx")
        });
}
