//! From nothing to rendered machines: `init` for both topologies, filling the placeholders, `check`, `render`
//! of every role (valid JSON/YAML; compose files accepted by docker-compose; nginx files accepted by `nginx -t`
//! where those tools exist), `package`, and `init` refusing to overwrite.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pryv_render::PlatformFile;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_config-leader");
const DOMAIN: &str = "pryv.example.com";

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn available(program: &str, version_arg: &str) -> bool {
    Command::new(program)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn skip(what: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {what}");
}

/// Sets every placeholder the way an operator would.
fn fill_placeholders(root: &Path) {
    let path = root.join("config-leader/conf/platform.yml");
    let mut platform = PlatformFile::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for group in platform.vars.values_mut() {
        for (name, setting) in &mut group.settings {
            if setting.value.as_str() == Some("REPLACE_ME") {
                let value = match name.as_str() {
                    "DOMAIN" => DOMAIN.to_owned(),
                    n if n.ends_with("IP_ADDRESS") => "192.0.2.10".to_owned(),
                    n if n.ends_with("LINK") => {
                        format!("https://www.{DOMAIN}/{}", n.to_lowercase())
                    }
                    "MAIL_FROM_ADDRESS" => format!("no-reply@{DOMAIN}"),
                    _ => format!("test {}", name.to_lowercase()),
                };
                setting.value = Value::String(value);
            }
        }
    }
    std::fs::write(&path, platform.to_yaml().unwrap()).unwrap();
    let config_path = root.join("config-leader/conf/config-leader.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    for follower in config["followers"].as_object_mut().unwrap().values_mut() {
        let url = follower["url"].as_str().unwrap().replace("REPLACE_ME-", "");
        follower["url"] = Value::String(url);
    }
    std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

fn machine_config(root: &Path, machine: &str, runs_leader: bool) -> Value {
    let path = if runs_leader {
        root.join("config-follower/conf/config-follower.json")
    } else {
        root.join("machines")
            .join(machine)
            .join("config-follower/conf/config-follower.json")
    };
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn check_topology(init_args: &[&str], machines: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pryv-conf");
    let root_text = root.to_str().unwrap();
    let mut args = vec!["init"];
    args.extend_from_slice(init_args);
    args.extend(["--out", root_text]);
    let output = run(&args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Keys: one per machine, the same on both sides.
    let config_path = root.join("config-leader/conf/config-leader.json");
    let leader: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    let followers = leader["followers"].as_object().unwrap();
    assert_eq!(followers.len(), machines.len());
    for (index, (machine, role)) in machines.iter().enumerate() {
        let follower = machine_config(&root, machine, index == 0);
        let key = follower["leader"]["auth"].as_str().unwrap();
        assert_eq!(key.len(), 32);
        assert_eq!(followers[key]["role"], *role, "{machine}");
        assert_eq!(followers[key]["name"], *machine);
    }

    // Re-running refuses to overwrite.
    let again = run(&args);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    // check lists the placeholders, then passes once they are filled.
    let config_text = config_path.to_str().unwrap();
    let before = run(&["--config", config_text, "check"]);
    assert_eq!(before.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&before.stdout).contains("DOMAIN is still REPLACE_ME"));
    fill_placeholders(&root);
    let after = run(&["--config", config_text, "check"]);
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stdout)
    );

    // The certificate service maps DNS_SETTINGS.NAME_SERVER_ENTRIES.value to names (and throws without it).
    let platform: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("config-leader/conf/platform.yml")).unwrap(),
    )
    .unwrap();
    let entries = platform["vars"]["DNS_SETTINGS"]["settings"]["NAME_SERVER_ENTRIES"]["value"]
        .as_array()
        .expect("NAME_SERVER_ENTRIES is a list");
    assert!(!entries.is_empty());
    for entry in entries {
        assert!(
            entry["name"].as_str().unwrap().ends_with(".DOMAIN") && entry["ip"].is_string(),
            "{entry}"
        );
    }

    // Every role renders; its files are valid for the tools that read them.
    let roles: std::collections::BTreeSet<&str> = machines.iter().map(|(_, role)| *role).collect();
    for role in roles {
        let out = dir.path().join("rendered").join(role);
        let rendered = run(&[
            "--config",
            config_text,
            "render",
            "--role",
            role,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            rendered.status.success(),
            "{}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        let compose = std::fs::read_to_string(out.join("pryv.yml")).unwrap();
        assert!(
            !compose.contains("REPLACE_ME") && compose.contains("pryvio/"),
            "{compose}"
        );
        compose_config(&out, role);
        if let Ok(dns) = std::fs::read(out.join("dns/conf/dns.json")) {
            let dns: Value = serde_json::from_slice(&dns).unwrap();
            let servers = dns["dns"]["nameserver"].as_array().unwrap();
            assert_eq!(servers.len(), entries.len(), "{dns}");
            assert!(
                servers
                    .iter()
                    .all(|s| !s["name"].as_str().unwrap().contains("DOMAIN")
                        && !s["ip"].as_str().unwrap().contains("IP_ADDRESS")),
                "{dns}"
            );
        }
        if out.join("nginx/conf/nginx.conf").exists() {
            nginx_test(&out.join("nginx"), role);
        }
    }

    // One archive per machine; the leader's machine also gets the leader's folder, never its secrets' store.
    let archives = dir.path().join("archives");
    let packaged = run(&[
        "--config",
        config_text,
        "package",
        "--out",
        archives.to_str().unwrap(),
    ]);
    assert!(
        packaged.status.success(),
        "{}",
        String::from_utf8_lossy(&packaged.stderr)
    );
    for (index, (machine, _)) in machines.iter().enumerate() {
        let entries = archive_entries(&archives.join(format!("{machine}.tgz")));
        assert!(
            entries.contains(&"config-follower/conf/config-follower.json".to_owned()),
            "{entries:?}"
        );
        let has_leader = entries
            .iter()
            .any(|e| e == "config-leader/conf/config-leader.json");
        assert_eq!(has_leader, index == 0, "{machine}: {entries:?}");
        // The database folder travels empty; its content and the credentials never do.
        assert!(
            !entries.iter().any(|e| e.contains("credentials")
                || (e.contains("database/") && e != "config-leader/database/")),
            "{entries:?}"
        );
    }
}

fn archive_entries(path: &Path) -> Vec<String> {
    let file = std::fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn compose_config(rendered: &Path, role: &str) {
    if !available("docker-compose", "version") {
        skip(&format!(
            "docker-compose config of role {role}: docker-compose is not installed"
        ));
        return;
    }
    let output = Command::new("docker-compose")
        .arg("-f")
        .arg(rendered.join("pryv.yml"))
        .args(["config", "--quiet"])
        .env("PRYV_CONF_ROOT", "/var/pryv")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{role}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn nginx_test(nginx: &Path, role: &str) {
    if !available("nginx", "-v") {
        skip(&format!("nginx -t of role {role}: nginx is not installed"));
        return;
    }
    let cert =
        rcgen::generate_simple_self_signed(vec![DOMAIN.into(), format!("*.{DOMAIN}")]).unwrap();
    let secret: PathBuf = nginx.join("conf/secret");
    std::fs::write(secret.join(format!("{DOMAIN}-bundle.crt")), cert.cert.pem()).unwrap();
    std::fs::write(
        secret.join(format!("{DOMAIN}-key.pem")),
        cert.key_pair.serialize_pem(),
    )
    .unwrap();
    let output = Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(nginx)
        .args(["-c", "conf/nginx.conf", "-e", "stderr"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "nginx -t of {role}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn single_node_from_init_to_rendered_files() {
    check_topology(
        &["--topology", "single-node"],
        &[("singlenode", "singlenode")],
    );
}

#[test]
fn cluster_from_init_to_rendered_files() {
    check_topology(
        &["--topology", "cluster", "--cores", "2", "--reg-slave"],
        &[
            ("reg-master", "reg-master"),
            ("core-1", "core"),
            ("core-2", "core"),
            ("static", "static"),
            ("reg-slave", "reg-slave"),
        ],
    );
}
