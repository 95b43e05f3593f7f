//! The real `config-leader` binary on an ephemeral loopback port: every role fetched over HTTP and HTTPS,
//! graceful stop on SIGTERM, exit codes and messages of the operator commands.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pryv_protocol::ConfResponse;
use pryv_testkit::Daemon;

const BIN: &str = env!("CARGO_BIN_EXE_config-leader");

/// Starts the binary on 127.0.0.1:0 and waits (with a deadline) for its "listening" log line.
fn start(fixture: &Fixture, extra: &[&str]) -> Daemon {
    let mut command = Command::new(BIN);
    command
        .arg("--config")
        .arg(fixture.config_path())
        .args(["--ip", "127.0.0.1", "--port", "0"])
        .args(extra);
    let mut leader = Daemon::spawn(command);
    leader.wait_listening(Duration::from_secs(20));
    leader
}

fn roles() -> [(&'static str, &'static str); 4] {
    [
        (CORE_KEY, "/pryv.yml"),
        (REG_KEY, "/register/conf/register.yml"),
        (STATIC_KEY, "/pryv.yml"),
        (SINGLE_KEY, "/pryv.yml"),
    ]
}

#[tokio::test]
async fn serves_every_role_over_http_and_stops_on_sigterm() {
    install_crypto();
    let fixture = Fixture::new();
    let mut leader = start(&fixture, &[]);
    let client = reqwest::Client::new();
    for (key, expected_last) in roles() {
        let response = client
            .get(format!("{}/conf", leader.url()))
            .header("authorization", key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: ConfResponse = response.json().await.unwrap();
        assert_eq!(body.files.last().unwrap().path, expected_last);
        assert!(body.files.iter().all(|f| !f.content.contains("DOMAIN")));
    }
    let health = client
        .get(format!("{}/health", leader.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let pid = leader.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_exit(&mut leader.child);
    assert_eq!(status.code(), Some(0), "graceful stop exits 0");
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn serves_https_only_when_a_certificate_is_configured() {
    install_crypto();
    let fixture = Fixture::new();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    fixture.write("conf/tls/cert.pem", &cert.cert.pem());
    fixture.write("conf/tls/key.pem", &cert.key_pair.serialize_pem());
    let mut json = Fixture::config_json();
    json["tls"] = serde_json::json!({"certFile": "tls/cert.pem", "keyFile": "tls/key.pem"});
    write_config(fixture.root(), &json);
    let leader = start(&fixture, &[]);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap();
    let port = leader.addr.unwrap().port();
    let response = client
        .get(format!("https://localhost:{port}/conf"))
        .header("authorization", CORE_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: ConfResponse = response.json().await.unwrap();
    assert_eq!(body.files.len(), 5);

    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP must not be served"
    );
}

#[test]
fn bad_certificate_stops_start_up_with_a_clear_message() {
    let fixture = Fixture::new();
    fixture.write("conf/cert.pem", "not a certificate");
    fixture.write("conf/key.pem", "not a key");
    let mut json = Fixture::config_json();
    json["tls"] = serde_json::json!({"certFile": "cert.pem", "keyFile": "key.pem"});
    write_config(fixture.root(), &json);
    let output = Command::new(BIN)
        .arg("--config")
        .arg(fixture.config_path())
        .args(["--port", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cert.pem") && stderr.contains("no certificate found"),
        "{stderr}"
    );
}

#[test]
fn bad_configuration_exits_78_with_one_line_per_problem() {
    let fixture = Fixture::new();
    let mut json = Fixture::config_json();
    json["templatesPath"] = serde_json::json!("missing-folder");
    json["followers"] = serde_json::json!({"some-secret-key": {"url": "http://x/"}});
    write_config(fixture.root(), &json);
    let output = Command::new(BIN)
        .arg("--config")
        .arg(fixture.config_path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("config-leader: "))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        stderr.contains("templatesPath") && stderr.contains("\"role\" is missing"),
        "{stderr}"
    );
    assert!(!stderr.contains("some-secret-key"), "key leaked: {stderr}");

    let missing = Command::new(BIN)
        .args(["--config", "/no/such/config-leader.json"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/no/such/config-leader.json"));
}

#[test]
fn check_reports_every_problem_and_render_writes_a_tree() {
    let fixture = Fixture::new();
    let ok = run_check(&fixture);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    // The fixture has a follower whose role has no folder.
    assert_eq!(ok.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("role 'reg-slave'"), "{stdout}");

    fixture.write(
        "conf/platform.yml",
        &format!("{PLATFORM}  MAIL:\n    settings:\n      MAIL_HOST:\n        value: REPLACE_ME\n      CYCLE_ONE:\n        value: x-CYCLE_TWO\n      CYCLE_TWO:\n        value: CYCLE_ONE\n"),
    );
    fixture.write("data/static/broken.json", "{TRUSTED_AUTH_URLS");
    fixture.write("data/static/bad.yml", "a: [DOMAIN");
    let output = run_check(&fixture);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1));
    for expected in [
        "MAIL.MAIL_HOST is still REPLACE_ME",
        "CYCLE_ONE -> CYCLE_TWO -> CYCLE_ONE",
        "/broken.json",
        "/bad.yml",
        "role 'reg-slave'",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(stdout.contains("5 problem(s) found"), "{stdout}");

    let out = fixture.root().join("rendered");
    let output = Command::new(BIN)
        .arg("--config")
        .arg(fixture.config_path())
        .args(["render", "--role", "core", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("nginx/conf/nginx.conf")).unwrap(),
        "server_name *.pryv.me;\nclient_max_body_size 20m;\nssl_certificate secret/pryv.me-bundle.crt;\n"
    );
    assert_eq!(
        std::fs::read(out.join("nginx/conf/secret/cert.der")).unwrap(),
        [0x30, 0x82, 0xff, 0xfe, 0x00, 0x01]
    );
}

#[test]
fn tells_systemd_it_is_ready_once_listening() {
    let fixture = Fixture::new();
    let socket_path = fixture.root().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(fixture.config_path())
        .args(["--ip", "127.0.0.1", "--port", "0"])
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buffer = [0u8; 256];
    let received = socket.recv(&mut buffer);
    let _ = child.kill();
    let _ = child.wait();
    let message = String::from_utf8_lossy(&buffer[..received.expect("no readiness notification")])
        .into_owned();
    assert!(message.contains("READY=1"), "{message}");
}

/// `config-leader check` on the fixture's configuration.
fn run_check(fixture: &Fixture) -> std::process::Output {
    Command::new(BIN)
        .arg("--config")
        .arg(fixture.config_path())
        .arg("check")
        .output()
        .unwrap()
}

fn mode(path: &std::path::Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions()) & 0o777
}

/// The database (hashes, every platform.yml) and platform.yml (the SMTP password) are the leader's user's
/// alone; `check` names any secret file others can read.
#[tokio::test]
async fn secret_files_are_private_and_check_names_loose_ones() {
    install_crypto();
    let fixture = Fixture::new();
    let platform = fixture.root().join("conf/platform.yml");
    let set_mode = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap()
    };
    set_mode(&platform, 0o644);
    set_mode(&fixture.config_path(), 0o644);
    let check = run_check(&fixture);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        said.contains(&format!("chmod 600 {}", fixture.config_path().display()))
            && said.contains(&format!("chmod 600 {}", platform.display())),
        "{said}"
    );

    let config = fixture.config();
    let database = config.database_path.clone();
    // A save writes platform.yml 0600.
    let admin_key = "binary-admin-key-0123456789abcdefghij";
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.config_path()).unwrap()).unwrap();
    json["adminKey"] = serde_json::json!(admin_key);
    write_config(fixture.root(), &json);
    let leader = start(&fixture, &[]);
    let save_domain = |domain: &str| {
        reqwest::Client::new()
            .put(format!("{}/admin/settings", leader.url()))
            .header("authorization", admin_key)
            .json(&serde_json::json!({"settings": {"MACHINES_AND_PLATFORM_SETTINGS": {"settings": {"DOMAIN": {"value": domain}}}}}))
            .send()
    };
    let saved = save_domain("private.example.com").await.unwrap();
    assert_eq!(saved.status(), 200, "{}", saved.text().await.unwrap());
    assert_eq!(mode(&platform), 0o600);
    assert_eq!(mode(&database), 0o700);
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!(
            "{}{suffix}",
            database.join("config-leader.sqlite").display()
        ));
        if file.exists() {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }
    // An operator's stricter mode is kept.
    set_mode(&platform, 0o400);
    let saved = save_domain("strict.example.com").await.unwrap();
    assert_eq!(saved.status(), 200);
    assert_eq!(mode(&platform), 0o400);
}

/// A database that is garbage, or empty where a leader ran before, stops the start with exit 78 naming it.
#[test]
fn a_broken_or_emptied_database_exits_78_naming_the_file() {
    let fixture = Fixture::new();
    let database = fixture.config().database_path.join("config-leader.sqlite");
    std::fs::create_dir_all(database.parent().unwrap()).unwrap();
    let run = || {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(fixture.config_path())
            .args(["--ip", "127.0.0.1", "--port", "0"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_exit(&mut child);
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        (status.code(), stderr)
    };
    std::fs::write(&database, vec![b'x'; 8192]).unwrap();
    let (code, stderr) = run();
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains(&database.display().to_string()) && stderr.contains("backup"),
        "{stderr}"
    );
    // Emptied after a run (the credentials file says one happened): refused, not started empty.
    std::fs::write(&database, b"").unwrap();
    std::fs::write(fixture.config().credentials_file, "old-password\n").unwrap();
    let (code, stderr) = run();
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("is empty (0 bytes)"), "{stderr}");
}

/// A symlink in the templates to a file outside them (here the leader's own configuration, with the follower
/// keys) is never served: the role fails naming the link, and `check` lists it.
#[tokio::test]
async fn a_template_symlink_leading_outside_is_refused() {
    install_crypto();
    let fixture = Fixture::new();
    let link = fixture.root().join("data/core/core/conf/leak.json");
    std::os::unix::fs::symlink(fixture.config_path(), &link).unwrap();
    let check = run_check(&fixture);
    let said = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{said}");
    assert!(
        said.contains("core/core/conf/leak.json: a symlink") && said.contains("allowLinksTo"),
        "{said}"
    );
    let leader = start(&fixture, &[]);
    let response = reqwest::Client::new()
        .get(format!("{}/conf", leader.url()))
        .header("authorization", CORE_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("leak.json") && !body.contains(CORE_KEY),
        "{body}"
    );
}
