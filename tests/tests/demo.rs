//! The README's main-job command works: the demo lays out a platform, runs a leader and a follower, and the
//! follower writes the rendered single-node tree.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::process::Command;

#[test]
fn demo_writes_a_rendered_single_node_tree() {
    let out = tempfile::tempdir().unwrap();
    let folder = out.path().join("demo");
    let output = Command::new(env!("CARGO_BIN_EXE_pryv-demo"))
        .arg("--once")
        .arg(&folder)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let core = std::fs::read_to_string(folder.join("pryv/core/conf/core.yml")).unwrap();
    assert!(core.contains("domain: pryv.localhost"), "{core}");
    assert!(
        !core.contains("REPLACE_ME") && !core.contains("SECRET"),
        "{core}"
    );
    assert!(folder.join("pryv/pryv.yml").is_file());
    assert!(
        !folder.join("pryv/core/data").exists(),
        "data folders are not written"
    );

    // A second run reuses the folder and its secrets.
    let again = Command::new(env!("CARGO_BIN_EXE_pryv-demo"))
        .arg("--once")
        .arg(&folder)
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(folder.join("pryv/core/conf/core.yml")).unwrap(),
        core
    );
}

/// The operator action the demo prints is the install guide's (edit platform.yml, then
/// `POST /admin/notify?auth=ADMIN_KEY`), and it works: the leader reaches the demo's follower where it really
/// listens.
#[tokio::test(flavor = "multi_thread")]
async fn the_printed_admin_notify_reaches_the_follower() {
    use std::io::BufRead;
    pryv_e2e::install_crypto();
    let out = tempfile::tempdir().unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_pryv-demo"))
        .arg(out.path().join("demo"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    let (edit, url) = tokio::task::spawn_blocking(move || {
        let mut edit = None;
        let url = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                if let Some(rest) = line.strip_prefix("try: edit ") {
                    edit = rest.split(" then ").next().map(std::path::PathBuf::from);
                }
                let start = line.find("http://")?;
                line.contains("/admin/notify?auth=")
                    .then(|| line[start..].trim_end_matches('"').to_owned())
            });
        (edit, url)
    })
    .await
    .unwrap();
    // The edit the demo asks for: without a change, the follower already runs the current revision and
    // the leader would only list it as up to date.
    let platform = edit.expect("the demo names the file to edit");
    let text = std::fs::read_to_string(&platform).unwrap();
    let domain = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("DOMAIN:"))
        .find_map(|l| l.trim().strip_prefix("value: "))
        .expect("a DOMAIN value")
        .to_owned();
    std::fs::write(
        &platform,
        text.replacen(&format!("value: {domain}"), "value: edited.example.com", 1),
    )
    .unwrap();
    let answer = match url {
        Some(url) => reqwest::Client::new().post(&url).send().await,
        None => {
            let _ = demo.kill();
            panic!("the demo printed no /admin/notify command");
        }
    };
    let _ = demo.kill();
    let _ = demo.wait();
    let answer = answer.unwrap();
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["successes"].as_array().unwrap().len(), 1, "{body}");
    assert!(body["failures"].as_array().unwrap().is_empty(), "{body}");
}
