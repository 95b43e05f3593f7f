//! A fixture platform on disk: templates for several roles, a platform.yml and a config-leader.json.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};

use axum::Router;
use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

pub const CORE_KEY: &str = "core-key-0123456789abcdefghijklmn";
pub const REG_KEY: &str = "reg-key-0123456789abcdefghijklmno";
pub const STATIC_KEY: &str = "static-key-0123456789abcdefghijkl";
pub const SINGLE_KEY: &str = "single-key-0123456789abcdefghijkl";
/// The admin key the tests that need one set in `adminKey`.
pub const ADMIN_KEY: &str = "admin-key-0123456789abcdefghijkl";
pub const ORPHAN_KEY: &str = "orphan-key-0123456789abcdefghijkl";

pub const PLATFORM: &str = r#"vars:
  MACHINES_AND_PLATFORM_SETTINGS:
    name: "Machines and platform settings"
    settings:
      DOMAIN:
        value: pryv.me
        description: "Domain of the platform"
      REG_MASTER_IP_ADDRESS:
        value: 10.0.0.2
      HOSTINGS_AND_CORES:
        value: { hosting1: { co1: { ip: CORE_1_IP } } }
      CORE_1_IP:
        value: 10.0.0.3
      TRUSTED_AUTH_URLS:
        value: ["https://sw.DOMAIN/access", "https://other.example"]
  LIMITS:
    name: Limits
    settings:
      MAX_UPLOAD_SIZE_MB:
        value: 20
"#;

pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "conf/platform.yml", PLATFORM);
        write(
            root,
            "data/core/pryv.yml",
            "services:\n  core:\n    image: core\n    volumes:\n      - ./core/conf/:/app/conf/:ro\n",
        );
        write(
            root,
            "data/core/core/conf/core.json",
            r#"{"domain": "DOMAIN", "hostings": HOSTINGS_AND_CORES, "key": "CORE_SYSTEM_KEY", "trusted": TRUSTED_AUTH_URLS}"#,
        );
        write(
            root,
            "data/core/nginx/conf/nginx.conf",
            "server_name *.DOMAIN;\nclient_max_body_size MAX_UPLOAD_SIZE_MBm;\nssl_certificate secret/DOMAIN-bundle.crt;\n",
        );
        write_bytes(
            root,
            "data/core/nginx/conf/secret/cert.der",
            &[0x30, 0x82, 0xff, 0xfe, 0x00, 0x01],
        );
        write(root, "data/core/core/data/.gitkeep", "");
        write(
            root,
            "data/reg-master/register/conf/register.yml",
            "dns:\n  domain: DOMAIN\n  ip: REG_MASTER_IP_ADDRESS\n",
        );
        write(root, "data/static/pryv.yml", "services: {}\n");
        write(root, "data/singlenode/pryv.yml", "domain: DOMAIN\n");
        write_config(root, &Self::config_json());
        Self { dir }
    }

    pub fn config_json() -> Value {
        json!({
            "http": {"ip": "127.0.0.1", "port": 7000},
            "templatesPath": "../data",
            "platformSettings": {"platformConfig": "platform.yml"},
            "internals": {"CORE_SYSTEM_KEY": "SECRET", "DOMAIN": "internal-loses.example"},
            "followers": {
                CORE_KEY: {"url": "http://127.0.0.1:1/", "role": "core"},
                REG_KEY: {"url": "http://127.0.0.1:2/", "role": "reg-master"},
                STATIC_KEY: {"url": "http://127.0.0.1:3/", "role": "static"},
                SINGLE_KEY: {"url": "http://127.0.0.1:4/", "role": "singlenode"},
                ORPHAN_KEY: {"url": "http://127.0.0.1:5/", "role": "reg-slave"}
            },
            "logs": {"console": {"active": true}},
            "registerUrl": "https://reg.pryv.me"
        })
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.root().join("conf/config-leader.json")
    }

    pub fn write(&self, relative: &str, text: &str) {
        write(self.root(), relative, text);
    }

    pub fn config(&self) -> config_leader::Config {
        config_leader::Config::load(&self.config_path(), &config_leader::Overrides::default())
            .unwrap()
    }
}

pub fn write(root: &Path, relative: &str, text: &str) {
    write_bytes(root, relative, text.as_bytes());
}

pub fn write_bytes(root: &Path, relative: &str, bytes: &[u8]) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

pub fn write_config(root: &Path, json: &Value) {
    write(
        root,
        "conf/config-leader.json",
        &serde_json::to_string_pretty(json).unwrap(),
    );
}

#[allow(unused_imports)]
pub use pryv_testkit::install_crypto;

/// One request to the router in process; the status, the headers and the JSON body (`Null` when not JSON).
pub async fn request(
    app: &Router,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let mut call = pryv_testkit::Api::new(app.clone())
        .call(method, path)
        .json(body);
    for (name, value) in headers {
        call = call.header(name, value);
    }
    let answer = call.answer().await;
    (answer.status, answer.headers, answer.body)
}

/// One request with the admin key; the status and the JSON body.
pub async fn as_admin(
    app: &Router,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (status, _, value) =
        request(app, method, path, &[("authorization", ADMIN_KEY)], body).await;
    (status, value)
}

/// `POST /conf/report` as the follower of `key`; the status.
pub async fn report_as(app: &Router, key: &str, report: Value) -> StatusCode {
    let (status, _, _) = request(
        app,
        Method::POST,
        "/conf/report",
        &[("authorization", key)],
        Some(report),
    )
    .await;
    status
}
