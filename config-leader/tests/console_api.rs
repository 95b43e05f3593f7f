//! The routes the console stands on, in-process: its files and their headers, `GET /auth/me`, the live
//! events, a diff between any two revisions, the preview of a rollback, and notifying one follower.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::*;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

fn leader() -> (Fixture, config_leader::Leader, axum::Router) {
    let fixture = Fixture::new();
    let mut json = Fixture::config_json();
    json["adminKey"] = json!(ADMIN_KEY);
    write_config(fixture.root(), &json);
    let leader = config_leader::Leader::new(&fixture.config(), &CancellationToken::new()).unwrap();
    let app = config_leader::app(leader.state.clone());
    (fixture, leader, app)
}

#[tokio::test]
async fn the_console_files_carry_strict_headers_and_me_says_who_calls() {
    let (_fixture, _leader, app) = leader();
    for (path, status, kind) in [
        ("/console/", StatusCode::OK, "text/html"),
        ("/console/app.js", StatusCode::OK, "text/javascript"),
        ("/console/settings.js", StatusCode::OK, "text/javascript"),
        (
            "/console/nope.js",
            StatusCode::NOT_FOUND,
            "application/json",
        ),
    ] {
        let (got, headers, _) = request(&app, Method::GET, path, &[], None).await;
        assert_eq!(got, status, "{path}");
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(
            policy.starts_with("default-src 'none'") && !policy.contains("unsafe"),
            "{path}: {policy}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
    }
    // Only the embedded files: no path reaches the disk.
    for path in [
        "/console/../conf/config-leader.json",
        "/console/%2e%2e%2fconf%2fplatform.yml",
    ] {
        let (status, _, _) = request(&app, Method::GET, path, &[], None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, headers, _) = request(&app, Method::GET, "/console", &[], None).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers["location"], "/console/");
    let (status, me) = as_admin(&app, Method::GET, "/auth/me", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "admin-key");
    assert_eq!(me["permissions"]["settings"], json!(["read", "update"]));
    let (status, _, _) = request(&app, Method::GET, "/auth/me", &[], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// The next `event: <name>` of the stream and its JSON data.
async fn next_event(body: &mut Body) -> (String, Value) {
    let mut text = String::new();
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let name = block
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .map(str::to_owned);
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_owned);
            if let (Some(name), Some(data)) = (name, data) {
                return (name, serde_json::from_str(&data).unwrap());
            }
        }
    }
}

#[tokio::test]
async fn events_send_the_fleet_and_the_rollouts_at_once_and_after_a_change() {
    let (_fixture, leader, app) = leader();
    let response = app
        .clone()
        .oneshot(
            Request::get("/admin/events")
                .header("authorization", ADMIN_KEY)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let (name, fleet) = next_event(&mut body).await;
    assert_eq!(name, "fleet");
    assert_eq!(fleet["followers"].as_array().unwrap().len(), 5);
    assert!(fleet["followers"][0]["lastFetch"].is_null());
    let (name, rollouts) = next_event(&mut body).await;
    assert_eq!(name, "rollouts");
    assert!(rollouts["rollouts"].as_array().unwrap().is_empty());
    // A follower fetches and reports: the next fleet event shows it.
    let (status, _, _) = request(
        &app,
        Method::GET,
        "/conf",
        &[("authorization", CORE_KEY)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let report = json!({"outcome": "applied", "revision": "r", "currentRevision": "r", "written": [], "removed": [],
        "rejected": [], "restarted": [], "errors": [], "applyMs": 1, "at": 1});
    let status = report_as(&app, CORE_KEY, report).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (name, fleet) = next_event(&mut body).await;
    assert_eq!(name, "fleet");
    let core = fleet["followers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["role"] == "core")
        .unwrap();
    assert_eq!(core["lastReport"]["outcome"], "applied", "{core}");
    drop(leader);
}

#[tokio::test]
async fn a_diff_between_two_revisions_a_rollback_preview_and_one_follower_notified() {
    let (fixture, _leader, app) = leader();
    let (status, _) = as_admin(
        &app,
        Method::PUT,
        "/admin/settings",
        Some(json!({"settings": {"LIMITS": {"settings": {"MAX_UPLOAD_SIZE_MB": {"value": 30}}}}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, diff) =
        as_admin(&app, Method::GET, "/admin/settings/diff?from=1&to=2", None).await;
    assert_eq!(status, StatusCode::OK, "{diff}");
    assert_eq!(
        diff["changes"],
        json!([{"group": "LIMITS", "name": "MAX_UPLOAD_SIZE_MB", "change": "changed", "before": 20, "after": 30}])
    );
    let (_, back) = as_admin(&app, Method::GET, "/admin/settings/diff?from=2&to=1", None).await;
    assert_eq!(back["changes"][0]["after"], 20);
    let (status, missing) =
        as_admin(&app, Method::GET, "/admin/settings/diff?from=1&to=9", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(missing.to_string().contains("no settings revision 9"));

    let platform = std::fs::read(fixture.root().join("conf/platform.yml")).unwrap();
    let (status, preview) = as_admin(
        &app,
        Method::POST,
        "/admin/settings/rollback/preview",
        Some(json!({"revision": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    let core = preview["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == "core")
        .unwrap();
    let diff = core["files"][0]["diff"].as_str().unwrap();
    assert!(
        diff.contains("-client_max_body_size 30m;") && diff.contains("+client_max_body_size 20m;"),
        "{diff}"
    );
    assert_eq!(
        std::fs::read(fixture.root().join("conf/platform.yml")).unwrap(),
        platform,
        "nothing saved"
    );
    let (_, history) = as_admin(&app, Method::GET, "/admin/settings/history", None).await;
    assert_eq!(history["revisions"].as_array().unwrap().len(), 2);

    // Only the named follower is notified (it does not listen: a failure, and nobody else is tried).
    let (status, answer) = as_admin(
        &app,
        Method::POST,
        "/admin/notify",
        Some(json!({"followers": ["http://127.0.0.1:2/"], "all": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer["successes"].as_array().unwrap().is_empty());
    let failed: Vec<&str> = answer["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["url"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["http://127.0.0.1:2/"], "{answer}");
}
