//! Zones in-process: `check` names every zone problem, `/admin/zones` reads, previews and saves as a settings
//! revision, a zone that stops a role rendering is a 400 naming it, and each follower is served its variant.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use axum::http::{Method, StatusCode};
use common::*;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const CORE_EU2_KEY: &str = "core-eu2-key-0123456789abcdefghijk";

const ZONES: &str = "zones:
  eu:
    vars:
      MACHINES_AND_PLATFORM_SETTINGS:
        settings:
          DOMAIN:
            value: eu.pryv.me
  us:
    vars:
      LIMITS:
        settings:
          MAX_UPLOAD_SIZE_MB:
            value: 50
";

/// The fixture with zones `eu` and `us`: the core in `eu`, a second `eu` core with its own core IP, the
/// static machine in `us`.
fn zoned() -> (Fixture, Value) {
    let fixture = Fixture::new();
    fixture.write("conf/platform.yml", &format!("{PLATFORM}{ZONES}"));
    let mut json = Fixture::config_json();
    json["adminKey"] = json!(ADMIN_KEY);
    json["followers"][CORE_KEY]["zone"] = json!("eu");
    json["followers"][CORE_KEY]["name"] = json!("core-eu-1");
    json["followers"][CORE_EU2_KEY] = json!({"url": "http://127.0.0.1:6/", "role": "core",
        "name": "core-eu-2", "zone": "eu", "variables": {"CORE_1_IP": "10.9.9.9"}});
    json["followers"][STATIC_KEY]["zone"] = json!("us");
    json["followers"]
        .as_object_mut()
        .unwrap()
        .remove(ORPHAN_KEY);
    (fixture, json)
}

#[test]
fn check_names_every_zone_problem_with_its_zone_follower_and_setting() {
    let (fixture, mut json) = zoned();
    write_config(fixture.root(), &json);
    let problems = config_leader::commands::check(&fixture.config()).unwrap();
    assert!(problems.is_empty(), "{problems:?}");

    json["followers"][STATIC_KEY]["zone"] = json!("mars");
    json["followers"][CORE_EU2_KEY]["variables"] = json!({"CORE_1_IPP": "x"});
    write_config(fixture.root(), &json);
    fixture.write(
        "conf/platform.yml",
        &format!("{PLATFORM}{ZONES}").replace("          DOMAIN:", "          DOMAINN:"),
    );
    let problems = config_leader::commands::check(&fixture.config()).unwrap();
    let text = problems.join("\n");
    assert!(
        text.contains(
            "zones.eu.vars.MACHINES_AND_PLATFORM_SETTINGS.DOMAINN: there is no setting DOMAINN"
        ),
        "{text}"
    );
    assert!(
        text.contains("follower http://127.0.0.1:3/ is in zone \"mars\""),
        "{text}"
    );
    assert!(
        text.contains("follower core-eu-2: its variable CORE_1_IPP is not a setting of vars"),
        "{text}"
    );
    assert_eq!(problems.len(), 3, "{text}");
}

async fn conf(app: &axum::Router, key: &str, path: &str) -> String {
    let (status, _, body) =
        request(app, Method::GET, "/conf", &[("authorization", key)], None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .map(|f| f["content"].as_str().unwrap().to_owned())
        .unwrap()
}

#[tokio::test]
async fn each_follower_gets_its_variant_and_zone_changes_are_revisions() {
    let (fixture, json) = zoned();
    write_config(fixture.root(), &json);
    let leader = config_leader::Leader::new(&fixture.config(), &CancellationToken::new()).unwrap();
    let app = config_leader::app(leader.state.clone());

    // Precedence: own variables > zone > platform.
    let eu1 = conf(&app, CORE_KEY, "/core/conf/core.json").await;
    let eu2 = conf(&app, CORE_EU2_KEY, "/core/conf/core.json").await;
    assert!(
        eu1.contains("\"domain\": \"eu.pryv.me\"") && eu1.contains("10.0.0.3"),
        "{eu1}"
    );
    assert!(
        eu2.contains("\"domain\": \"eu.pryv.me\"") && eu2.contains("10.9.9.9"),
        "{eu2}"
    );
    let reg = conf(&app, REG_KEY, "/register/conf/register.yml").await;
    assert!(reg.contains("domain: pryv.me"), "{reg}");
    conf(&app, STATIC_KEY, "/pryv.yml").await;

    let (status, zones) = as_admin(&app, Method::GET, "/admin/zones", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        zones["zones"]["us"]["LIMITS"]["settings"]["MAX_UPLOAD_SIZE_MB"]["value"],
        50
    );
    assert_eq!(zones["followers"]["eu"], json!(["core-eu-1", "core-eu-2"]));

    // A zone value that breaks a role's JSON in that zone: 400 naming the zone and the file, nothing saved.
    let platform_before = std::fs::read(fixture.root().join("conf/platform.yml")).unwrap();
    let (status, body) = as_admin(&app,
        Method::PUT,
        "/admin/zones",
        Some(json!({"zones": {"us": {"MACHINES_AND_PLATFORM_SETTINGS": {"settings": {"TRUSTED_AUTH_URLS": {"value": "not [json"}}}}}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body.to_string();
    assert!(
        message.contains("zone us: ") && message.contains("core.json"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(fixture.root().join("conf/platform.yml")).unwrap(),
        platform_before
    );

    // The preview of a change of eu: the eu variants change, not the plain roles.
    let change = json!({"zones": {"eu": {"MACHINES_AND_PLATFORM_SETTINGS": {"settings": {"DOMAIN": {"value": "eu2.pryv.me"}}}}}});
    let (status, preview) = as_admin(
        &app,
        Method::POST,
        "/admin/zones/preview",
        Some(change.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    let changed: Vec<(String, Vec<String>)> = preview["roles"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["files"].as_array().unwrap().is_empty())
        .map(|r| {
            let followers = r["followers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["name"].as_str().unwrap().to_owned())
                .collect();
            (r["variant"].as_str().unwrap_or("-").to_owned(), followers)
        })
        .collect();
    assert_eq!(changed.len(), 2, "{preview}");
    assert_eq!(changed[0].0, "core@eu");
    assert_eq!(changed[0].1, ["core-eu-1"]);
    assert!(changed[1].0.starts_with("core@eu#"), "{changed:?}");
    assert_eq!(changed[1].1, ["core-eu-2"]);

    // Saved: a revision with a zone change; eu's revision moves, the plain roles' and us's do not.
    let revisions = leader.state.store.cached_revisions();
    let (status, saved) = as_admin(&app, Method::PUT, "/admin/zones", Some(change)).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    let revision = saved["revision"].as_i64().unwrap();
    assert!(
        conf(&app, CORE_KEY, "/core/conf/core.json")
            .await
            .contains("eu2.pryv.me")
    );
    conf(&app, STATIC_KEY, "/pryv.yml").await;
    conf(&app, REG_KEY, "/register/conf/register.yml").await;
    let after = leader.state.store.cached_revisions();
    assert_ne!(after["core@eu"], revisions["core@eu"]);
    assert_eq!(after["reg-master"], revisions["reg-master"]);
    assert_eq!(after["static@us"], revisions["static@us"]);
    let (_, entry) = as_admin(
        &app,
        Method::GET,
        &format!("/admin/settings/history/{revision}"),
        None,
    )
    .await;
    assert_eq!(entry["changes"][0]["zone"], "eu");
    assert_eq!(entry["changes"][0]["name"], "DOMAIN");

    // A settings save of vars keeps the zones (what the admin web app sends).
    let (status, _) = as_admin(&app,
        Method::PUT,
        "/admin/settings",
        Some(json!({"LIMITS": {"name": "Limits", "settings": {"MAX_UPLOAD_SIZE_MB": {"value": 30}}}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let text = std::fs::read_to_string(fixture.root().join("conf/platform.yml")).unwrap();
    assert!(text.contains("eu2.pryv.me"), "{text}");

    // Rolled back: eu's tree is the one before the change again.
    let (status, _) = as_admin(
        &app,
        Method::POST,
        "/admin/settings/rollback",
        Some(json!({"revision": revision - 1})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(conf(&app, CORE_KEY, "/core/conf/core.json").await, eu1);

    let (_, status) = as_admin(&app, Method::GET, "/admin/status", None).await;
    let lines = status["followers"].as_array().unwrap();
    let eu2_line = lines.iter().find(|f| f["name"] == "core-eu-2").unwrap();
    assert_eq!(eu2_line["zone"], "eu");
    assert!(
        eu2_line["variant"]
            .as_str()
            .unwrap()
            .starts_with("core@eu#")
    );
}

/// A zone's override and a follower's own variable are settings like any other: masked out of the log tails
/// followers report.
#[tokio::test]
async fn zone_and_follower_values_are_masked_in_reports() {
    let (fixture, mut json) = zoned();
    json["followers"][CORE_EU2_KEY]["variables"] =
        json!({"CORE_1_IP": "own-secret-value-0987654321"});
    write_config(fixture.root(), &json);
    fixture.write(
        "conf/platform.yml",
        &format!("{PLATFORM}{ZONES}").replace("value: 50", "value: 'zone-secret-value-1234567890'"),
    );
    let leader = config_leader::Leader::new(&fixture.config(), &CancellationToken::new()).unwrap();
    let app = config_leader::app(leader.state.clone());
    let report = json!({"outcome": "reverted", "revision": "r", "currentRevision": "q", "written": [],
        "removed": [], "rejected": [], "restarted": ["core"], "errors": [], "applyMs": 1, "at": 1,
        "unhealthy": {"service": "core", "state": "exited",
            "logTail": ["auth failed for zone-secret-value-1234567890 and own-secret-value-0987654321"]}});
    let status = report_as(&app, CORE_KEY, report).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, status) = as_admin(&app, Method::GET, "/admin/status", None).await;
    let text = status.to_string();
    assert!(text.contains("auth failed for"), "{text}");
    assert!(
        !text.contains("zone-secret-value") && !text.contains("own-secret-value"),
        "{text}"
    );
}
