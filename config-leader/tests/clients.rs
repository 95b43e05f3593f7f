//! The real Pryv.io clients of the leader, replayed request by request: the SSL-certificate service
//! (`pryv/service-ssl-certificate`), the admin web app (`pryv/app-web-admin`) and its pages, the migration
//! dialog, the platform-users page against small fake register and core servers. Each test sends exactly what
//! the client sends and checks exactly the fields it reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use base64::Engine;
use common::*;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const REGISTER_SYSTEM_KEY: &str = "register-system-key-0123456789ab";
const CORE_SYSTEM_KEY: &str = "core-system-key-0123456789abcdef";

/// Groups the clients need beside the fixture's: DNS (certificate service), API (account deletion).
const CLIENT_GROUPS: &str = r#"  DNS_SETTINGS:
    name: "DNS settings"
    settings:
      DNS_CUSTOM_ENTRIES:
        value: { "www": { "ip": "10.0.0.9" } }
        description: "Extra DNS entries"
  API_SETTINGS:
    name: "API settings"
    settings:
      ACCOUNT_DELETION:
        value: ["adminToken", "personalToken"]
"#;

struct Client {
    app: Router,
    fixture: Fixture,
    _leader: config_leader::Leader,
}

impl Client {
    fn start(fixture: Fixture, edit: impl FnOnce(&mut Value)) -> Self {
        let mut config = Fixture::config_json();
        config["internals"]["REGISTER_SYSTEM_KEY_1"] = json!(REGISTER_SYSTEM_KEY);
        config["internals"]["CORE_SYSTEM_KEY"] = json!(CORE_SYSTEM_KEY);
        edit(&mut config);
        write_config(fixture.root(), &config);
        let leader =
            config_leader::Leader::new(&fixture.config(), &CancellationToken::new()).unwrap();
        Self {
            app: config_leader::app(leader.state.clone()),
            fixture,
            _leader: leader,
        }
    }

    fn new() -> Self {
        let fixture = Fixture::new();
        fixture.write("conf/platform.yml", &format!("{PLATFORM}{CLIENT_GROUPS}"));
        Self::start(fixture, |_| {})
    }

    /// Sends one request; returns status, headers and the JSON body (`Null` when empty).
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        request(&self.app, method, path, headers, body).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, body) = self
            .send(method, path, &[("authorization", token)], body)
            .await;
        (status, body)
    }

    /// As the certificate service: the whole credentials file, trimmed, is initial_user's password.
    async fn login_as_initial_user(&self) -> String {
        let password =
            std::fs::read_to_string(self.fixture.root().join("credentials.txt")).unwrap();
        self.login("initial_user", password.trim()).await
    }

    async fn login(&self, username: &str, password: &str) -> String {
        let (status, _, body) = self
            .send(
                Method::POST,
                "/auth/login",
                &[],
                Some(json!({"username": username, "password": password})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }
}

/// What the web app does with the token: decode the payload (no verification) to read who and what.
fn jwt_payload(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn the_certificate_service_logs_in_edits_dns_and_notifies() {
    let client = Client::new();
    let token = client.login_as_initial_user().await;

    // getSettings: res.body.settings
    let (status, body) = client
        .call(Method::GET, "/admin/settings", &token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut settings = body["settings"].clone();
    // updateSettings: the whole object back, one value changed.
    settings["DNS_SETTINGS"]["settings"]["DNS_CUSTOM_ENTRIES"]["value"]["_acme-challenge"] =
        json!("challenge-token-1");
    let (status, answer) = client
        .call(Method::PUT, "/admin/settings", &token, Some(settings))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, after) = client
        .call(Method::GET, "/admin/settings", &token, None)
        .await;
    let entries = &after["settings"]["DNS_SETTINGS"]["settings"]["DNS_CUSTOM_ENTRIES"]["value"];
    assert_eq!(entries["_acme-challenge"], "challenge-token-1");
    assert_eq!(entries["www"]["ip"], "10.0.0.9", "the other entries stay");
    assert_eq!(
        after["settings"]["MACHINES_AND_PLATFORM_SETTINGS"]["settings"]["DOMAIN"]["value"],
        "pryv.me"
    );

    // rebootServices: the body is read as { successes, failures }.
    let (status, answer) = client
        .call(
            Method::POST,
            "/admin/notify",
            &token,
            Some(json!({"services": ["dns", "reverse_proxy"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        answer["successes"].is_array() && answer["failures"].is_array(),
        "{answer}"
    );
}

#[tokio::test]
async fn the_admin_web_app_from_its_own_origin() {
    let client = Client::new();
    let origin = "https://adm.pryv.me";

    the_login_preflight_and_other_origins(&client, origin).await;
    // Login: the token's payload says who is logged in and which pages to show.
    let password = std::fs::read_to_string(client.fixture.root().join("credentials.txt")).unwrap();
    let (status, headers, body) = client
        .send(
            Method::POST,
            "/auth/login",
            &[("origin", origin)],
            Some(json!({"username": "initial_user", "password": password.trim()})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["access-control-allow-origin"], origin);
    let token = body["token"].as_str().unwrap().to_owned();
    let user = jwt_payload(&token);
    assert_eq!(user["username"], "initial_user");
    for (group, permission) in [
        ("settings", "read"),
        ("settings", "update"),
        ("users", "read"),
        ("users", "create"),
        ("users", "delete"),
        ("users", "resetPassword"),
        ("users", "changePermissions"),
        ("platformUsers", "read"),
        ("platformUsers", "delete"),
        ("platformUsers", "modify"),
    ] {
        assert!(
            user["permissions"][group]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == permission),
            "{group}:{permission} in {user}"
        );
    }

    the_config_page_round_trip(&client, &token, origin).await;
    the_users_page(&client, &token).await;
}

/// The users page: create, list, edit, reset, change password, old sessions, read-only refusals, delete.
async fn the_users_page(client: &Client, token: &str) {
    // Users page: create (all three groups, a 10-character password), list, edit, reset, delete.
    let permissions = json!({"users": [], "settings": ["read"], "platformUsers": []});
    let (status, created) = client
        .call(
            Method::POST,
            "/users",
            token,
            Some(json!({"username": "operator", "password": "aZ3-x_9qPw", "permissions": permissions})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["user"]["username"], "operator");
    let (_, list) = client.call(Method::GET, "/users", token, None).await;
    let operator = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "operator")
        .unwrap()
        .clone();
    assert_eq!(operator["permissions"], permissions);
    let new_permissions =
        json!({"users": ["read"], "settings": ["read", "update"], "platformUsers": ["read"]});
    let (status, changed) = client
        .call(
            Method::PUT,
            "/users/operator/permissions",
            token,
            Some(json!({"permissions": new_permissions})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["user"]["permissions"], new_permissions);
    let (status, reset) = client
        .call(
            Method::POST,
            "/users/operator/reset-password",
            token,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let reset_password = reset["password"].as_str().unwrap().to_owned();

    // The operator changes its own password (the name comes from the token); a mistyped check is refused.
    let operator_token = client.login("operator", &reset_password).await;
    let name = jwt_payload(&operator_token)["username"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/users/{name}/change-password");
    let (status, refused) = client
        .call(
            Method::POST,
            &path,
            &operator_token,
            Some(json!({"oldPassword": reset_password, "newPassword": "new-pass-123", "newPasswordCheck": "new-pass-124"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("newPasswordCheck")
    );
    let (status, short) = client
        .call(
            Method::POST,
            &path,
            &operator_token,
            Some(json!({"oldPassword": reset_password, "newPassword": "short", "newPasswordCheck": "short"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        short["error"]["message"].as_str().unwrap().contains("8"),
        "{short}"
    );
    let (status, _) = client
        .call(
            Method::POST,
            &path,
            &operator_token,
            Some(json!({"oldPassword": reset_password, "newPassword": "new-pass-123", "newPasswordCheck": "new-pass-123"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // The old session answers exactly what makes the web app log out.
    let (status, body) = client
        .call(Method::GET, "/admin/settings", &operator_token, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["message"], "Invalid token");
    let (status, body) = client
        .call(Method::GET, "/admin/settings", "not-a-token", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["message"], "Invalid token");

    // A read-only user's PUT is a 403 whatever the body.
    let reader = client
        .call(
            Method::POST,
            "/users",
            token,
            Some(json!({"username": "reader", "password": "reader-pass", "permissions": {"users": [], "settings": ["read"], "platformUsers": []}})),
        )
        .await;
    assert_eq!(reader.0, StatusCode::CREATED);
    let reader_token = client.login("reader", "reader-pass").await;
    for body in [json!("not an object"), json!({"settings": 3}), json!({})] {
        let (status, _) = client
            .call(Method::PUT, "/admin/settings", &reader_token, Some(body))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    let (status, deleted) = client
        .call(Method::DELETE, "/users/operator", token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted["username"], "operator");
}

/// The config page reads the settings, PUTs back every group it read, then notifies with {}.
async fn the_config_page_round_trip(client: &Client, token: &str, origin: &str) {
    // Config page: read, then PUT back every group it read; then notify with {}.
    let (status, headers, config) = client
        .send(
            Method::GET,
            "/admin/settings",
            &[("authorization", token), ("origin", origin)],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["access-control-allow-origin"], origin);
    let mut groups = config["settings"].clone();
    groups["LIMITS"]["settings"]["MAX_UPLOAD_SIZE_MB"]["value"] = json!(64);
    let (status, answer) = client
        .call(Method::PUT, "/admin/settings", token, Some(groups))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["settings"]["LIMITS"]["settings"]["MAX_UPLOAD_SIZE_MB"]["value"],
        64
    );
    let (_, report) = client
        .call(Method::POST, "/admin/notify", token, Some(json!({})))
        .await;
    assert!(report.get("successes").is_some() && report.get("failures").is_some());
}

/// The login's preflight from the admin app's origin is allowed; another origin, and /conf, get no CORS headers.
async fn the_login_preflight_and_other_origins(client: &Client, origin: &str) {
    // Preflight of the login, from the admin app's origin.
    let (status, headers, _) = client
        .send(
            Method::OPTIONS,
            "/auth/login",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ],
            None,
        )
        .await;
    assert!(status.is_success(), "{status}");
    assert_eq!(headers["access-control-allow-origin"], origin);
    let methods = headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        methods.contains("POST") && methods.contains("PUT") && methods.contains("DELETE"),
        "{methods}"
    );
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    // Another origin gets no CORS headers; neither does /conf.
    let (_, headers, _) = client
        .send(
            Method::OPTIONS,
            "/admin/settings",
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "GET"),
            ],
            None,
        )
        .await;
    assert!(headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn configured_origins_replace_the_default_and_star_is_explicit() {
    let fixture = Fixture::new();
    let client = Client::start(fixture, |c| {
        c["cors"] = json!({"allowedOrigins": ["https://ops.example"]})
    });
    let preflight = |origin: &'static str| {
        let client = &client;
        async move {
            client
                .send(
                    Method::OPTIONS,
                    "/users",
                    &[("origin", origin), ("access-control-request-method", "GET")],
                    None,
                )
                .await
                .1
        }
    };
    assert_eq!(
        preflight("https://ops.example").await["access-control-allow-origin"],
        "https://ops.example"
    );
    assert!(
        preflight("https://adm.pryv.me")
            .await
            .get("access-control-allow-origin")
            .is_none()
    );

    let client = Client::start(Fixture::new(), |c| {
        c["cors"] = json!({"allowedOrigins": ["*"]})
    });
    let (_, headers, _) = client
        .send(
            Method::OPTIONS,
            "/admin/status",
            &[
                ("origin", "https://any.example"),
                ("access-control-request-method", "GET"),
            ],
            None,
        )
        .await;
    assert_eq!(headers["access-control-allow-origin"], "*");
}

/// A 1.6-era cluster platform of our own making, in the legacy shapes.
const OLD_PLATFORM: &str = r#"vars:
  MISCELLANEOUS_SETTINGS:
    name: "Misc"
    settings:
      TEMPLATE_VERSION:
        value: "1.6.3"
        description: "old description"
  MACHINES_AND_PLATFORM_SETTINGS:
    name: "Machines (old name)"
    settings:
      DOMAIN:
        value: pryv.me
        description: "old"
      HOSTINGS_AND_CORES:
        value: { hosting1: { co1: { ip: 10.0.0.3 } } }
      TRUSTED_AUTH_URLS:
        value: ["https://sw.pryv.me/access"]
      OBSOLETE_IP:
        value: 10.9.9.9
  MFA_SETTINGS:
    name: "MFA"
    settings:
      MFA_SMS_API_SETTINGS:
        value:
          endpoints:
            value: { challenge: "https://sms.example/challenge", verify: "https://sms.example/verify" }
          auth:
            value: "sms-api-key"
  ADVANCED_API_SETTINGS:
    name: "Advanced"
    settings:
      WEBHOOKS_SETTINGS:
        value: { maxRetries: { value: 7 }, minIntervalMs: { value: 3000 }, runsSize: { value: 40 } }
      VERSIONING_SETTINGS:
        value: { deletionMode: { value: "keep-authors" }, forceKeepHistory: { value: true } }
      CUSTOM_SYSTEM_STREAMS:
        value: '{"profile": [{"id": "nickname", "isShown": true}], "account": [{"id": "phone", "isEditable": true}], "insurance": [{"id": "number"}]}'
  LIMITS:
    name: Limits
    settings:
      MAX_UPLOAD_SIZE_MB:
        value: 64
  RETIRED_GROUP:
    settings:
      GONE:
        value: 1
"#;

/// The target release's template platform file (1.7.0).
const TEMPLATE_1_7_0: &str = r#"vars:
  MISCELLANEOUS_SETTINGS:
    name: "Miscellaneous settings"
    settings:
      TEMPLATE_VERSION:
        value: "1.7.0"
        description: "Version of the templates"
  MACHINES_AND_PLATFORM_SETTINGS:
    name: "Machines and platform settings"
    settings:
      DOMAIN:
        value: REPLACE_ME
        description: "Domain of the platform"
      HOSTINGS_AND_CORES:
        value: { hosting1: { co1: { ip: REPLACE_ME } } }
        description: "Cores per hosting"
      TRUSTED_AUTH_URLS:
        value: []
        description: "Trusted apps"
        optional: true
  MFA_SETTINGS:
    name: "Multi-factor authentication"
    settings:
      MFA_MODE:
        value: disabled
        description: "MFA mode"
      MFA_ENDPOINTS:
        value: { challenge: { url: "", headers: { authorization: "" } }, verify: { url: "", headers: { authorization: "" } } }
        description: "MFA endpoints"
  ADVANCED_API_SETTINGS:
    name: "Advanced API settings"
    settings:
      WEBHOOKS_SETTINGS:
        value: { maxRetries: 5, minIntervalMs: 5000, runsSize: 50 }
        description: "Webhooks"
      VERSIONING_SETTINGS:
        value: { deletionMode: "keep-nothing", forceKeepHistory: false }
        description: "Versioning"
      ACCOUNT_SYSTEM_STREAMS:
        value: "[]"
        description: "Account streams"
      OTHER_SYSTEM_STREAMS:
        value: "[]"
        description: "Other system streams"
      NEW_FLAG:
        value: true
        description: "A setting new in 1.7.0"
  LIMITS:
    name: "Limits"
    settings:
      MAX_UPLOAD_SIZE_MB:
        value: 20
        description: "Largest upload"
  NEW_GROUP:
    name: "New group"
    settings:
      NEW_SETTING:
        value: 42
        description: "Added by 1.7.0"
"#;

#[tokio::test]
async fn the_migration_dialog_upgrades_a_1_6_cluster_platform() {
    let fixture = Fixture::new();
    fixture.write("conf/platform.yml", OLD_PLATFORM);
    fixture.write("conf/template-platform.yml", TEMPLATE_1_7_0);
    let client = Client::start(fixture, |c| {
        c["platformSettings"]["platformTemplate"] = json!("template-platform.yml")
    });
    let token = client.login_as_initial_user().await;
    let before = std::fs::read(client.fixture.root().join("conf/platform.yml")).unwrap();

    // The upgrade dialog reads res.data.migrations[*].versionsFrom / versionTo.
    let (status, listed) = client
        .call(Method::GET, "/admin/migrations", &token, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let steps: Vec<String> = listed["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}>{}",
                m["versionsFrom"].as_array().unwrap().len(),
                m["versionTo"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            "4>1.6.4", "8>1.6.12", "3>1.6.15", "6>1.6.21", "1>1.6.22", "1>1.6.23", "1>1.7.0"
        ]
    );
    assert_eq!(listed["deploymentType"], "cluster");

    let (status, applied) = client
        .call(Method::POST, "/admin/migrations/apply", &token, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied["migrations"], listed["migrations"]);

    let (_, body) = client
        .call(Method::GET, "/admin/settings", &token, None)
        .await;
    the_migrated_settings(&body).await;
    // Nothing left to do; one history entry; a rollback restores the file byte for byte.
    let (_, again) = client
        .call(Method::GET, "/admin/migrations", &token, None)
        .await;
    assert!(again["migrations"].as_array().unwrap().is_empty());
    let (_, history) = client
        .call(Method::GET, "/admin/settings/history", &token, None)
        .await;
    let revisions = history["revisions"].as_array().unwrap();
    assert_eq!(revisions.len(), 2, "{history}");
    assert!(
        revisions[0]["message"]
            .as_str()
            .unwrap()
            .contains("1.6.3 to 1.7.0")
    );
    let (status, _) = client
        .call(
            Method::POST,
            "/admin/settings/rollback",
            &token,
            Some(json!({"revision": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        std::fs::read(client.fixture.root().join("conf/platform.yml")).unwrap(),
        before
    );
}

/// What the 1.6 to 1.9 migrations did to the settings: values kept, new ones added, wrappers removed, streams split, old ones removed.
async fn the_migrated_settings(body: &Value) {
    let s = &body["settings"];
    let value = |group: &str, name: &str| s[group]["settings"][name]["value"].clone();
    // Version, operator values kept, metadata aligned.
    assert_eq!(value("MISCELLANEOUS_SETTINGS", "TEMPLATE_VERSION"), "1.7.0");
    assert_eq!(value("MACHINES_AND_PLATFORM_SETTINGS", "DOMAIN"), "pryv.me");
    assert_eq!(
        value("MACHINES_AND_PLATFORM_SETTINGS", "HOSTINGS_AND_CORES")["hosting1"]["co1"]["ip"],
        "10.0.0.3"
    );
    assert_eq!(value("LIMITS", "MAX_UPLOAD_SIZE_MB"), 64);
    assert_eq!(
        s["MACHINES_AND_PLATFORM_SETTINGS"]["name"],
        "Machines and platform settings"
    );
    assert_eq!(
        s["MACHINES_AND_PLATFORM_SETTINGS"]["settings"]["DOMAIN"]["description"],
        "Domain of the platform"
    );
    assert_eq!(
        s["MACHINES_AND_PLATFORM_SETTINGS"]["settings"]["TRUSTED_AUTH_URLS"]["optional"],
        true
    );
    // New settings and groups with the target template's values.
    assert_eq!(value("ADVANCED_API_SETTINGS", "NEW_FLAG"), true);
    assert_eq!(value("NEW_GROUP", "NEW_SETTING"), 42);
    assert_eq!(s["NEW_GROUP"]["name"], "New group");
    // 1.6.4: nested {value} wrappers removed.
    assert_eq!(
        value("ADVANCED_API_SETTINGS", "WEBHOOKS_SETTINGS"),
        json!({"maxRetries": 7, "minIntervalMs": 3000, "runsSize": 40})
    );
    assert_eq!(
        value("ADVANCED_API_SETTINGS", "VERSIONING_SETTINGS"),
        json!({"deletionMode": "keep-authors", "forceKeepHistory": true})
    );
    // 1.6.21: challenge-verify with the old SMS endpoints and auth.
    assert_eq!(value("MFA_SETTINGS", "MFA_MODE"), "challenge-verify");
    let endpoints = value("MFA_SETTINGS", "MFA_ENDPOINTS");
    assert_eq!(
        endpoints["challenge"]["url"],
        "https://sms.example/challenge"
    );
    assert_eq!(endpoints["verify"]["url"], "https://sms.example/verify");
    assert_eq!(
        endpoints["challenge"]["headers"]["authorization"],
        "sms-api-key"
    );
    assert_eq!(
        endpoints["verify"]["headers"]["authorization"],
        "sms-api-key"
    );
    // 1.7.0: system streams split; every stream after `account` kept.
    let account: Value = serde_json::from_str(
        value("ADVANCED_API_SETTINGS", "ACCOUNT_SYSTEM_STREAMS")
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        account,
        json!([{"id": "phone", "isEditable": true, "isShown": false}])
    );
    let other: Value = serde_json::from_str(
        value("ADVANCED_API_SETTINGS", "OTHER_SYSTEM_STREAMS")
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let ids: Vec<&str> = other
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["profile", "insurance"]);
    assert_eq!(
        other[1]["children"][0],
        json!({"id": "number", "isShown": false, "isEditable": false})
    );
    // Removed: what the template no longer has.
    assert!(
        s["MFA_SETTINGS"]["settings"]
            .get("MFA_SMS_API_SETTINGS")
            .is_none()
    );
    assert!(
        s["ADVANCED_API_SETTINGS"]["settings"]
            .get("CUSTOM_SYSTEM_STREAMS")
            .is_none()
    );
    assert!(
        s["MACHINES_AND_PLATFORM_SETTINGS"]["settings"]
            .get("OBSOLETE_IP")
            .is_none()
    );
    assert!(s.get("RETIRED_GROUP").is_none());
}

#[tokio::test]
async fn no_chain_is_a_clear_error() {
    let fixture = Fixture::new();
    fixture.write(
        "conf/platform.yml",
        &OLD_PLATFORM.replace("\"1.6.3\"", "\"1.2.0\""),
    );
    fixture.write("conf/template-platform.yml", TEMPLATE_1_7_0);
    let client = Client::start(fixture, |c| {
        c["platformSettings"]["platformTemplate"] = json!("template-platform.yml")
    });
    let token = client.login_as_initial_user().await;
    let (status, body) = client
        .call(Method::GET, "/admin/migrations", &token, None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no migration available from 1.2.0 to 1.7.0")
    );
}

/// Requests a fake register or core received: (method, path and query, authorization).
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// A fake register or core: records each request and answers from `answer(method, path)`.
async fn fake_peer(answer: fn(&str, &str) -> (StatusCode, Value)) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = Router::new().fallback(move |request: Request<Body>| {
        let log = log.clone();
        async move {
            let method = request.method().to_string();
            let path = request.uri().to_string();
            let key = request
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            log.lock()
                .unwrap()
                .push((method.clone(), path.clone(), key));
            let (status, body) = answer(&method, &path);
            (status, axum::Json(body))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn the_platform_users_page_through_the_register_and_the_cores() {
    install_crypto();
    let (register, register_seen) = fake_peer(|method, path| match (method, path) {
        ("GET", "/admin/users/alice") => (
            StatusCode::OK,
            json!({"username": "alice", "email": "a@x.example"}),
        ),
        ("GET", p) if p.starts_with("/cores?username=alice") => {
            (StatusCode::OK, json!({"core": {"url": "CORE_URL"}}))
        }
        ("DELETE", "/users/alice?onlyReg=true") => (StatusCode::OK, json!({"deleted": true})),
        _ => (
            StatusCode::NOT_FOUND,
            json!({"error": {"message": "unknown user"}}),
        ),
    })
    .await;
    let (core_a, core_a_seen) = fake_peer(|method, path| match (method, path) {
        ("DELETE", "/users/alice") => (
            StatusCode::OK,
            json!({"userDeletion": {"username": "alice"}}),
        ),
        ("DELETE", "/system/users/alice/mfa") => (StatusCode::NO_CONTENT, Value::Null),
        _ => (StatusCode::NOT_FOUND, json!({})),
    })
    .await;
    let (core_b, core_b_seen) = fake_peer(|_, _| (StatusCode::NOT_FOUND, json!({}))).await;

    let fixture = Fixture::new();
    fixture.write("conf/platform.yml", &format!("{PLATFORM}{CLIENT_GROUPS}"));
    let (register_url, core_a_url, core_b_url) = (register.clone(), core_a.clone(), core_b.clone());
    let client = Client::start(fixture, move |c| {
        c["registerUrl"] = json!(register_url);
        c["platformUsers"] = json!({"coreUrls": [core_a_url, core_b_url]});
    });
    let token = client.login_as_initial_user().await;

    let (status, found) = client
        .call(Method::GET, "/platform-users/alice", &token, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["user"]["username"], "alice");
    let (status, missing) = client
        .call(Method::GET, "/platform-users/bob", &token, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bob")
    );

    let (status, deleted) = client
        .call(Method::DELETE, "/platform-users/alice", &token, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["username"], "alice");
    assert!(core_a_seen.lock().unwrap().contains(&(
        "DELETE".into(),
        "/users/alice".into(),
        CORE_SYSTEM_KEY.into()
    )));
    assert!(core_b_seen.lock().unwrap().contains(&(
        "DELETE".into(),
        "/users/alice".into(),
        CORE_SYSTEM_KEY.into()
    )));
    assert!(register_seen.lock().unwrap().contains(&(
        "DELETE".into(),
        "/users/alice?onlyReg=true".into(),
        REGISTER_SYSTEM_KEY.into()
    )));
    assert!(register_seen.lock().unwrap().contains(&(
        "GET".into(),
        "/admin/users/alice".into(),
        REGISTER_SYSTEM_KEY.into()
    )));

    // Permissions: a user without platformUsers permissions gets 403.
    client
        .call(
            Method::POST,
            "/users",
            &token,
            Some(json!({"username": "plain", "password": "plain-pass", "permissions": {"users": [], "settings": ["read"], "platformUsers": []}})),
        )
        .await;
    let plain = client.login("plain", "plain-pass").await;
    for (method, path) in [
        (Method::GET, "/platform-users/alice"),
        (Method::DELETE, "/platform-users/alice"),
        (Method::DELETE, "/platform-users/alice/mfa"),
    ] {
        assert_eq!(
            client.call(method, path, &plain, None).await.0,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    // A username that is not one never reaches a peer.
    assert_eq!(
        client
            .call(Method::GET, "/platform-users/a%2F..%2Fb", &token, None)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );

    // Audit.
    let (_, audit) = client.call(Method::GET, "/admin/audit", &token, None).await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "platform-user-delete" && e["detail"] == "alice")
    );
}

#[tokio::test]
async fn mfa_reset_finds_the_core_through_the_register() {
    install_crypto();
    let (core, core_seen) = fake_peer(|method, path| match (method, path) {
        ("DELETE", "/system/users/alice/mfa") => (StatusCode::NO_CONTENT, Value::Null),
        _ => (StatusCode::NOT_FOUND, json!({})),
    })
    .await;
    // The register names the core: it must answer with the fake core's URL, known only now.
    let core_for_register = core.clone();
    let register_seen: Seen = Arc::default();
    let log = register_seen.clone();
    let app = Router::new().fallback(move |request: Request<Body>| {
        let core = core_for_register.clone();
        let log = log.clone();
        async move {
            log.lock()
                .unwrap()
                .push(("GET".into(), request.uri().to_string(), String::new()));
            axum::Json(json!({"core": {"url": core}}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let register = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let fixture = Fixture::new();
    let register_url = register.clone();
    let client = Client::start(fixture, move |c| c["registerUrl"] = json!(register_url));
    let token = client.login_as_initial_user().await;
    let (status, _) = client
        .call(Method::DELETE, "/platform-users/alice/mfa", &token, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(register_seen.lock().unwrap()[0].1, "/cores?username=alice");
    assert_eq!(
        core_seen.lock().unwrap()[0],
        (
            "DELETE".into(),
            "/system/users/alice/mfa".into(),
            CORE_SYSTEM_KEY.into()
        )
    );
}

#[tokio::test]
async fn deletion_needs_the_platform_setting_and_unreachable_peers_are_named() {
    install_crypto();
    let fixture = Fixture::new();
    fixture.write(
        "conf/platform.yml",
        &format!(
            "{PLATFORM}{}",
            CLIENT_GROUPS.replace("[\"adminToken\", \"personalToken\"]", "[\"personalToken\"]")
        ),
    );
    let client = Client::start(fixture, |c| {
        c["registerUrl"] = json!("http://127.0.0.1:9");
        c["platformUsers"] = json!({"coreUrls": ["http://127.0.0.1:9"], "timeoutSeconds": 2});
    });
    let token = client.login_as_initial_user().await;
    let (status, body) = client
        .call(Method::DELETE, "/platform-users/alice", &token, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ACCOUNT_DELETION")
    );
    let (status, body) = client
        .call(Method::GET, "/platform-users/alice", &token, None)
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("register") && message.contains("127.0.0.1:9"),
        "{message}"
    );
}

#[tokio::test]
async fn a_json_file_superseded_by_its_yaml_is_not_served() {
    let fixture = Fixture::new();
    fixture.write("data/core/core/conf/core.yml", "domain: DOMAIN\n");
    // A stale JSON that no longer renders would fail the whole role if it were served.
    fixture.write("data/core/core/conf/core.json", "{ not json DOMAIN");
    let client = Client::start(fixture, |_| {});
    let (status, _, body) = client
        .send(Method::GET, "/conf", &[("authorization", CORE_KEY)], None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let paths: Vec<&str> = body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/core/conf/core.yml") && !paths.contains(&"/core/conf/core.json"),
        "{paths:?}"
    );
    let warnings = config_leader::commands::warnings(&client.fixture.config());
    assert!(
        warnings.iter().any(|w| w.contains("/core/conf/core.json")),
        "{warnings:?}"
    );
}

/// The default allowed origin follows the platform's DOMAIN when it changes (the parsed settings are cached per
/// change, never served stale).
#[tokio::test]
async fn the_default_origin_follows_a_domain_change() {
    let client = Client::new();
    let token = client.login_as_initial_user().await;
    let allowed = |origin: &'static str| {
        let client = &client;
        async move {
            let (_, headers, _) = client
                .send(
                    Method::OPTIONS,
                    "/admin/settings",
                    &[("origin", origin), ("access-control-request-method", "GET")],
                    None,
                )
                .await;
            headers.get("access-control-allow-origin").is_some()
        }
    };
    assert!(allowed("https://adm.pryv.me").await);
    let (status, answer) = client
        .call(
            Method::PUT,
            "/admin/settings",
            &token,
            Some(json!({"settings": {"MACHINES_AND_PLATFORM_SETTINGS": {"settings": {"DOMAIN": {"value": "moved.example.com"}}}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(allowed("https://adm.moved.example.com").await);
    assert!(!allowed("https://adm.pryv.me").await);
}
