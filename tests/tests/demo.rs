//! The README's main-job command works: the demo lays out a platform, runs a leader and a follower, and the
//! follower writes the rendered single-node tree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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
