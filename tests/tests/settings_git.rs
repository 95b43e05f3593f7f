//! The settings branch end to end, with the real binaries: a commit an operator pushes to the branch the
//! leader follows (a bare repository on a local path) reaches a long-polling follower's files.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use pryv_e2e::platform::*;
use pryv_e2e::{free_port, wait_until, write};
use pryv_testkit::git;
use serde_json::json;

#[tokio::test]
async fn a_commit_pushed_to_the_followed_branch_reaches_a_follower() {
    if !pryv_testkit::available("git", "--version") {
        return pryv_testkit::skip("settings branch: no git program");
    }
    let platform = Platform::new();
    let root = platform.root.path();
    let bare = root.join("settings.git");
    git(
        root,
        &[
            "init",
            "--quiet",
            "--bare",
            "--initial-branch=main",
            bare.to_str().unwrap(),
        ],
    );
    let port = free_port();
    write(
        root,
        "config-leader/conf/config-leader.json",
        &json!({
            "http": {"ip": "127.0.0.1", "port": port},
            "templatesPath": "../data",
            "platformSettings": {"platformConfig": "platform.yml"},
            "internals": {},
            "followers": {KEY: {"url": "http://127.0.0.1:1/", "role": "core"}},
            "settings": {"git": {"remote": bare, "branch": "main", "pollSeconds": 1}}
        })
        .to_string(),
    );
    let leader = platform.start_leader(port);
    let mut follower = platform.spawn_follower_with(
        port,
        &json!({"leader": {
        "url": format!("http://127.0.0.1:{port}"), "auth": KEY, "longPoll": true}}),
    );
    follower.wait_listening(Duration::from_secs(20));
    wait_status(&follower, "the first tree applied", |s| {
        s["revision"].is_string()
    })
    .await;
    assert_eq!(platform.read("core/conf/core.yml"), "domain: pryv.me\n");

    // The leader starts the empty branch with its history; the operator clones it, edits, pushes.
    let clone = root.join("clone");
    wait_until("the branch created", Duration::from_secs(20), || {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&bare)
            .args(["rev-parse", "--verify", "--quiet", "main"])
            .output()
            .ok()
            .filter(|o| o.status.success())
    });
    git(
        root,
        &[
            "clone",
            "--quiet",
            bare.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    let file = clone.join("platform.yml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("pryv.me", "git.example")).unwrap();
    git(&clone, &["commit", "--quiet", "-am", "Move to git.example"]);
    git(&clone, &["push", "--quiet", "origin", "main"]);

    wait_status(&follower, "the pushed settings applied", |_| {
        platform.read("core/conf/core.yml") == "domain: git.example\n"
    })
    .await;
    let on_leader =
        std::fs::read_to_string(platform.path("config-leader/conf/platform.yml")).unwrap();
    assert!(on_leader.contains("git.example"), "{on_leader}");
    drop(leader);
}
