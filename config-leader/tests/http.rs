//! Router tests in-process (no socket): authentication, answers, caching headers, errors, live reload.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use http_body_util::BodyExt;
use pryv_protocol::ConfResponse;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

struct Harness {
    fixture: Fixture,
    app: Router,
    _leader: config_leader::Leader,
}

fn harness() -> Harness {
    let fixture = Fixture::new();
    let leader = config_leader::Leader::new(&fixture.config(), &CancellationToken::new()).unwrap();
    let app = config_leader::app(leader.state.clone());
    Harness {
        fixture,
        app,
        _leader: leader,
    }
}

async fn send(
    app: &Router,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

fn conf(key: &str) -> Request<Body> {
    Request::get("/conf")
        .header("authorization", key)
        .body(Body::empty())
        .unwrap()
}

fn file<'a>(body: &'a ConfResponse, path: &str) -> &'a pryv_protocol::ConfFile {
    body.files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("{path} missing"))
}

#[tokio::test]
async fn follower_gets_its_role_rendered_in_stable_order() {
    let h = harness();
    let (status, headers, body) = send(&h.app, conf(CORE_KEY)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    let body: ConfResponse = serde_json::from_slice(&body).unwrap();
    let paths: Vec<_> = body.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/core/conf/core.json",
            "/core/data/.gitkeep",
            "/nginx/conf/nginx.conf",
            "/nginx/conf/secret/cert.der",
            "/pryv.yml"
        ]
    );
    let core: Value = serde_json::from_str(&file(&body, "/core/conf/core.json").content).unwrap();
    assert_eq!(
        core["domain"], "pryv.me",
        "platform variable wins over internal"
    );
    assert_eq!(
        core["hostings"],
        serde_json::json!({"hosting1": {"co1": {"ip": "10.0.0.3"}}})
    );
    assert_eq!(
        core["trusted"],
        serde_json::json!(["https://sw.pryv.me/access", "https://other.example"])
    );
    let generated = core["key"].as_str().unwrap();
    assert_eq!(generated.len(), 32, "SECRET internal was generated");
    assert_eq!(
        file(&body, "/nginx/conf/nginx.conf").content,
        "server_name *.pryv.me;\nclient_max_body_size 20m;\nssl_certificate secret/pryv.me-bundle.crt;\n"
    );
    let der = file(&body, "/nginx/conf/secret/cert.der");
    assert_eq!(der.encoding.as_deref(), Some("base64"));
    assert_eq!(der.content, "MIL//gAB");
    let revision = body.revision.unwrap();
    assert_eq!(headers["etag"], format!("\"{revision}\"").as_str());
}

#[tokio::test]
async fn key_in_query_parameter_works_and_roles_are_separate() {
    let h = harness();
    let request = Request::get(format!("/conf?auth={REG_KEY}"))
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(&h.app, request).await;
    assert_eq!(status, StatusCode::OK);
    let body: ConfResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(body.files.len(), 1);
    assert_eq!(
        body.files[0].content,
        "dns:\n  domain: pryv.me\n  ip: 10.0.0.2\n"
    );
}

#[tokio::test]
async fn missing_or_unknown_key_is_401_json() {
    let h = harness();
    for request in [
        Request::get("/conf").body(Body::empty()).unwrap(),
        conf("not-a-key"),
        Request::get("/conf?auth=").body(Body::empty()).unwrap(),
    ] {
        let (status, _, body) = send(&h.app, request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["id"], "invalid-key");
        assert!(body["error"]["message"].is_string());
    }
}

#[tokio::test]
async fn role_without_folder_is_404_naming_the_role() {
    let h = harness();
    let (status, _, body) = send(&h.app, conf(ORPHAN_KEY)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["id"], "role-not-found");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'reg-slave'")
    );
}

#[tokio::test]
async fn matching_if_none_match_is_304() {
    let h = harness();
    let (_, headers, _) = send(&h.app, conf(CORE_KEY)).await;
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let request = Request::get("/conf")
        .header("authorization", CORE_KEY)
        .header("if-none-match", &etag)
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = send(&h.app, request).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(headers["etag"], etag.as_str());
    let stale = Request::get("/conf")
        .header("authorization", CORE_KEY)
        .header("if-none-match", "\"0000\"")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&h.app, stale).await.0, StatusCode::OK);
}

#[tokio::test]
async fn render_error_is_500_naming_the_file_and_other_roles_still_serve() {
    let h = harness();
    h.fixture
        .write("data/static/broken.json", "{\"list\": TRUSTED_AUTH_URLS,}");
    let (status, _, body) = send(&h.app, conf(STATIC_KEY)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["id"], "render-failed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("/broken.json") && message.contains("invalid JSON"),
        "{message}"
    );
    assert_eq!(send(&h.app, conf(CORE_KEY)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn cycle_is_500_naming_the_variables() {
    let h = harness();
    h.fixture.write(
        "conf/platform.yml",
        "vars:\n  G:\n    settings:\n      DOMAIN:\n        value: a.ALIAS\n      ALIAS:\n        value: DOMAIN\n",
    );
    let body = pryv_testkit::eventually(
        "the cycle to be reported",
        Duration::from_secs(5),
        || async {
            let (status, _, body) = send(&h.app, conf(SINGLE_KEY)).await;
            (status == StatusCode::INTERNAL_SERVER_ERROR)
                .then(|| serde_json::from_slice::<Value>(&body).unwrap())
        },
    )
    .await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("DOMAIN -> ALIAS -> DOMAIN"), "{message}");
}

#[tokio::test]
async fn hand_edits_show_without_restart() {
    let h = harness();
    let (_, _, before) = send(&h.app, conf(SINGLE_KEY)).await;
    let before: ConfResponse = serde_json::from_slice(&before).unwrap();
    assert_eq!(before.files[0].content, "domain: pryv.me\n");

    // A settings edit.
    h.fixture.write(
        "conf/platform.yml",
        &PLATFORM.replace("value: pryv.me", "value: example.com"),
    );
    let content = wait_for_change(&h.app, SINGLE_KEY, &before.revision.unwrap()).await;
    assert_eq!(content.files[0].content, "domain: example.com\n");

    // A template edit, and a new file in a new folder.
    h.fixture
        .write("data/singlenode/new/conf/x.yml", "d: DOMAIN\n");
    let content = wait_for_change(&h.app, SINGLE_KEY, &content.revision.unwrap()).await;
    assert_eq!(content.files[0].path, "/new/conf/x.yml");
    assert_eq!(content.files[0].content, "d: example.com\n");
}

async fn wait_for_change(app: &Router, key: &str, old_revision: &str) -> ConfResponse {
    // The watcher's debounce is well under a second; the deadline only bounds a failing run.
    pryv_testkit::eventually(
        "the change to be served",
        Duration::from_secs(10),
        || async {
            let (status, _, body) = send(app, conf(key)).await;
            let body: ConfResponse = (status == StatusCode::OK)
                .then(|| serde_json::from_slice(&body).ok())
                .flatten()?;
            (body.revision.as_deref() != Some(old_revision)).then_some(body)
        },
    )
    .await
}

#[tokio::test]
async fn health_and_unknown_routes() {
    let h = harness();
    let (status, _, _) = send(&h.app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = send(&h.app, Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["id"], "not-found");
}
