//! Rollouts across a leader restart, in-process: the exact target tree is kept with the rollout, so a leader
//! started again serves the followers of a started wave their target, never the newer settings saved since,
//! and keeps the followers of later waves on what they have.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use axum::http::{Method, StatusCode};
use common::*;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The nginx file `key`'s follower gets, and the revision (with `If-None-Match: sent`, when given).
async fn nginx_conf(
    app: &axum::Router,
    key: &str,
    sent: Option<&str>,
) -> (StatusCode, String, String) {
    let tag = sent.map(|s| format!("\"{s}\""));
    let mut headers = vec![("authorization", key)];
    if let Some(tag) = &tag {
        headers.push(("if-none-match", tag.as_str()));
    }
    let (status, answer_headers, body) = request(app, Method::GET, "/conf", &headers, None).await;
    let revision = answer_headers["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let nginx = body["files"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["path"] == "/nginx/conf/nginx.conf")
        .map(|f| f["content"].as_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, nginx, revision)
}

async fn set_upload(app: &axum::Router, megabytes: u32) {
    let (status, body) = as_admin(app,
        Method::PUT,
        "/admin/settings",
        Some(json!({"settings": {"LIMITS": {"settings": {"MAX_UPLOAD_SIZE_MB": {"value": megabytes}}}}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_restarted_leader_serves_a_started_wave_its_target_and_holds_the_later_waves() {
    let fixture = Fixture::new();
    let mut json = Fixture::config_json();
    json["adminKey"] = json!(ADMIN_KEY);
    write_config(fixture.root(), &json);
    let first = config_leader::Leader::new(&fixture.config(), &CancellationToken::new()).unwrap();
    let app = config_leader::app(first.state.clone());
    let (_, before, reg_revision) = nginx_conf(&app, REG_KEY, None).await;
    assert!(before.is_empty(), "reg-master has no nginx file");
    let (_, core_before, _) = nginx_conf(&app, CORE_KEY, None).await;
    assert!(core_before.contains("20m"), "{core_before}");

    // Roll 30 MB out: the core first, then (after a long pause) everyone else.
    set_upload(&app, 30).await;
    let (status, answer) = as_admin(
        &app,
        Method::POST,
        "/admin/notify",
        Some(json!({"waves": [{"roles": ["core"]}], "pauseSeconds": 600})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, target, target_revision) = nginx_conf(&app, CORE_KEY, None).await;
    assert!(target.contains("30m"), "{target}");
    // A newer change saved meanwhile does not reach the started wave.
    set_upload(&app, 40).await;
    let (_, pinned, revision) = nginx_conf(&app, CORE_KEY, None).await;
    assert_eq!(
        (pinned.as_str(), revision.as_str()),
        (target.as_str(), target_revision.as_str())
    );

    // The leader starts again: nothing of the first process's memory is left.
    drop(app);
    drop(first);
    let second = config_leader::Leader::new(&fixture.config(), &CancellationToken::new()).unwrap();
    let app = config_leader::app(second.state.clone());
    let (status, after, revision) = nginx_conf(&app, CORE_KEY, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        revision, target_revision,
        "the target, not the newer settings"
    );
    assert_eq!(after, target);
    // A follower of the later wave keeps what it has (304 for its revision), not the newer tree.
    let (status, _, revision) = nginx_conf(&app, REG_KEY, Some(&reg_revision)).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(revision, reg_revision);
    let (_, rollouts) = as_admin(&app, Method::GET, "/admin/rollouts", None).await;
    assert_eq!(rollouts["rollouts"][0]["state"], "running", "{rollouts}");
}
