//! The settings history in git, in process against real repositories on local paths: the legacy layout
//! (`gitRepoPath`: one commit per save, author and message, hand edits, agreement with the history API across
//! a restart, a repository that cannot be written), and a followed branch (`settings.git`, a bare repository
//! as the remote: a pushed commit becomes a revision, an invalid one is refused, saves are pushed back, a
//! diverged branch is reported).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use pryv_testkit::{Api, eventually, git};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const ADMIN_KEY: &str = "admin-key-0123456789abcdefghijkl";
const WITHIN: Duration = Duration::from_secs(20);
/// The metrics recorder is one per process: scrapes of two tests must not interleave.
static SCRAPE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn scrape(api: &Api) -> String {
    let _one = SCRAPE.lock().await;
    api.get("/metrics").send_text().await.1
}

fn git_available() -> bool {
    pryv_testkit::available("git", "--version")
}

/// Writes the fixture's configuration with `extra` merged in.
fn configure(fixture: &Fixture, extra: Value) {
    let mut config = Fixture::config_json();
    config["adminKey"] = json!(ADMIN_KEY);
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    write_config(fixture.root(), &config);
}

/// A leader on the fixture with `extra` merged into its configuration.
fn leader(fixture: &Fixture, extra: Value) -> (config_leader::Leader, Api, CancellationToken) {
    configure(fixture, extra);
    start(fixture)
}

fn start(fixture: &Fixture) -> (config_leader::Leader, Api, CancellationToken) {
    let shutdown = CancellationToken::new();
    let leader = config_leader::Leader::new(&fixture.config(), &shutdown).unwrap();
    let api = Api::new(config_leader::app(leader.state.clone()));
    (leader, api, shutdown)
}

async fn put(api: &Api, body: Value) -> Value {
    let (status, answer) = api
        .put("/admin/settings")
        .token(Some(ADMIN_KEY))
        .json(Some(body))
        .send()
        .await;
    assert!(status.is_success(), "{status}: {answer}");
    answer
}

fn upload_size(size: u64, message: Option<&str>) -> Value {
    let mut body =
        json!({"settings": {"LIMITS": {"settings": {"MAX_UPLOAD_SIZE_MB": {"value": size}}}}});
    if let Some(message) = message {
        body["message"] = json!(message);
    }
    body
}

async fn status(api: &Api) -> Value {
    let (code, status) = api.get("/admin/status").token(Some(ADMIN_KEY)).send().await;
    assert!(code.is_success(), "{status}");
    status["settingsRepository"].clone()
}

async fn history(api: &Api) -> Vec<Value> {
    let (_, body) = api
        .get("/admin/settings/history")
        .token(Some(ADMIN_KEY))
        .send()
        .await;
    body["revisions"].as_array().cloned().unwrap_or_default()
}

/// Waits until the repository holds every revision (`behind` 0, the latest committed).
async fn committed(api: &Api) -> Vec<Value> {
    eventually("every revision committed", WITHIN, || async {
        let revisions = history(api).await;
        let repo = status(api).await;
        (repo["behind"] == 0 && revisions.first().is_some_and(|r| r["commit"].is_string()))
            .then_some(revisions)
    })
    .await
}

/// `(commit, author, unix time, subject)` of every commit, newest first.
fn log(dir: &Path) -> Vec<(String, String, i64, String)> {
    git(dir, &["log", "--format=%H%x09%an%x09%at%x09%s"])
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.splitn(4, '\t').collect();
            (
                fields[0].to_owned(),
                fields[1].to_owned(),
                fields[2].parse().unwrap(),
                fields[3].to_owned(),
            )
        })
        .collect()
}

/// Every history entry with a commit is that commit, with the same author and date, newest first, and the
/// repository has no other commit.
fn assert_agree(revisions: &[Value], log: &[(String, String, i64, String)]) {
    let with_commits: Vec<&Value> = revisions
        .iter()
        .filter(|r| r["commit"].is_string())
        .collect();
    assert_eq!(with_commits.len(), log.len(), "{revisions:?}\n{log:?}");
    for (revision, (commit, author, at, subject)) in with_commits.iter().zip(log) {
        assert_eq!(revision["commit"], json!(commit));
        assert_eq!(revision["author"], json!(author));
        assert_eq!(revision["at"], json!(at));
        assert!(
            subject.starts_with(revision["message"].as_str().unwrap()),
            "{subject} / {revision}"
        );
    }
}

#[tokio::test]
async fn the_legacy_layout_commits_every_save_with_its_author_and_message() {
    if !git_available() {
        return pryv_testkit::skip("git history: no git program");
    }
    let fixture = Fixture::new();
    let conf = fixture.root().join("conf");
    let (_leader, api, shutdown) = leader(&fixture, json!({"gitRepoPath": "."}));
    put(&api, upload_size(50, Some("Raise the upload limit"))).await;
    put(&api, upload_size(60, None)).await;
    // A save that changes nothing is a revision, so a commit too (one per revision).
    put(&api, upload_size(60, Some("Same again"))).await;
    let revisions = committed(&api).await;
    let entries = log(&conf);
    assert_eq!(entries[0].3, "Same again");
    assert_eq!(entries[1].3, "settings updated: LIMITS.MAX_UPLOAD_SIZE_MB");
    assert_eq!(entries[2].3, "Raise the upload limit");
    assert_eq!(entries[2].1, "admin-key");
    assert_agree(&revisions, &entries);

    // A hand edit is recorded and committed as one.
    let text = std::fs::read_to_string(conf.join("platform.yml")).unwrap();
    std::fs::write(
        conf.join("platform.yml"),
        text.replace("pryv.me", "hand.example"),
    )
    .unwrap();
    eventually("the hand edit committed", WITHIN, || async {
        let entries = log(&conf);
        (entries[0].1 == "disk").then_some(())
    })
    .await;
    assert!(log(&conf)[0].3.contains("a hand edit of platform.yml"));

    // Only platform.yml (and the .gitignore) are versioned; the secrets stay out; the tree is clean.
    let files = git(&conf, &["ls-tree", "-r", "--name-only", "HEAD"]);
    assert_eq!(files, ".gitignore\nplatform.yml");
    // Clean once the leader has moved the index entry along with the branch (right after the commit).
    eventually("a clean working tree", WITHIN, || async {
        git(&conf, &["status", "--porcelain"])
            .is_empty()
            .then_some(())
    })
    .await;
    shutdown.cancel();
}

#[tokio::test]
async fn the_git_log_and_the_history_agree_after_a_restart() {
    if !git_available() {
        return pryv_testkit::skip("git history: no git program");
    }
    let fixture = Fixture::new();
    let conf = fixture.root().join("conf");
    {
        let (_leader, api, shutdown) = leader(&fixture, json!({"gitRepoPath": "."}));
        put(&api, upload_size(30, Some("first"))).await;
        committed(&api).await;
        shutdown.cancel();
    }
    let (_leader, api, shutdown) = leader(&fixture, json!({"gitRepoPath": "."}));
    put(&api, upload_size(40, Some("after the restart"))).await;
    let (code, _) = api
        .post("/admin/settings/rollback")
        .token(Some(ADMIN_KEY))
        .json(Some(json!({"revision": 2})))
        .send()
        .await;
    assert!(code.is_success(), "{code}");
    let revisions = committed(&api).await;
    let entries = log(&conf);
    assert_eq!(
        entries.len(),
        4,
        "initial, first, after the restart, rollback: {entries:?}"
    );
    assert_agree(&revisions, &entries);
    assert_eq!(
        git(&conf, &["show", "HEAD:platform.yml"]),
        git(&conf, &["show", "HEAD~2:platform.yml"]),
        "the rollback commits revision 2's content"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_repository_that_cannot_be_written_never_loses_a_save() {
    if !git_available() {
        return pryv_testkit::skip("git history: no git program");
    }
    let fixture = Fixture::new();
    let conf = fixture.root().join("conf");
    let (_leader, api, shutdown) = leader(&fixture, json!({"gitRepoPath": "."}));
    committed(&api).await;
    // Another git command holds the branch's lock.
    let lock = conf.join(".git/refs/heads/main.lock");
    std::fs::write(&lock, "").unwrap();
    put(&api, upload_size(70, Some("while locked"))).await;
    let behind = eventually("the repository reported behind", WITHIN, || async {
        let repo = status(&api).await;
        (repo["behind"] == 1 && repo["error"].is_string()).then_some(repo)
    })
    .await;
    assert!(
        behind["error"].as_str().unwrap().contains("lock"),
        "{behind}"
    );
    let metrics = scrape(&api).await;
    assert!(
        metrics.contains("pryv_config_leader_settings_git_behind_revisions 1"),
        "{metrics}"
    );
    assert!(
        std::fs::read_to_string(conf.join("platform.yml"))
            .unwrap()
            .contains("70")
    );

    std::fs::remove_file(&lock).unwrap();
    let revisions = committed(&api).await;
    assert_eq!(revisions[0]["message"], "while locked");
    assert_agree(&revisions, &log(&conf));
    shutdown.cancel();
}

#[tokio::test]
async fn an_existing_repository_is_kept_and_the_secrets_it_tracks_are_reported() {
    if !git_available() {
        return pryv_testkit::skip("git history: no git program");
    }
    let fixture = Fixture::new();
    let conf = fixture.root().join("conf");
    configure(&fixture, json!({"gitRepoPath": "."}));
    // The legacy leader committed everything (`git add .`), the internals file included.
    git(&conf, &["init", "--quiet", "--initial-branch=main"]);
    git(&conf, &["add", "platform.yml", "config-leader.json"]);
    git(&conf, &["commit", "--quiet", "-m", "legacy commit"]);
    let legacy = git(&conf, &["rev-parse", "HEAD"]);

    let (_leader, api, shutdown) = start(&fixture);
    let revisions = committed(&api).await;
    assert_eq!(
        revisions[0]["commit"],
        json!(legacy),
        "same content: the legacy commit is the revision"
    );
    let repo = status(&api).await;
    assert_eq!(
        repo["trackedSecrets"],
        json!(["config-leader.json"]),
        "{repo} {}",
        git(&conf, &["ls-files", "--", "config-leader.json"])
    );
    let problems = config_leader::commands::check(&fixture.config()).unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("tracks config-leader.json")
                && p.contains("rm --cached config-leader.json")),
        "{problems:?}"
    );

    // A save while the branch is locked: check says the repository is behind.
    let lock = conf.join(".git/refs/heads/main.lock");
    std::fs::write(&lock, "").unwrap();
    put(&api, upload_size(80, Some("while locked"))).await;
    eventually("behind", WITHIN, || async {
        (status(&api).await["behind"] == 1).then_some(())
    })
    .await;
    let problems = config_leader::commands::check(&fixture.config()).unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("1 settings revision(s) are not yet")),
        "{problems:?}"
    );
    std::fs::remove_file(&lock).unwrap();
    committed(&api).await;
    // Never rewritten: the legacy commit is still the first.
    assert_eq!(git(&conf, &["rev-list", "--max-parents=0", "HEAD"]), legacy);
    assert!(
        git(&conf, &["ls-files"]).contains("config-leader.json"),
        "tracking left to the operator"
    );
    shutdown.cancel();
}

/// A bare repository as the remote and an operator's clone of it.
struct Remote {
    bare: std::path::PathBuf,
    clone: std::path::PathBuf,
}

fn remote(fixture: &Fixture) -> Remote {
    let bare = fixture.root().join("remote.git");
    git(
        fixture.root(),
        &[
            "init",
            "--quiet",
            "--bare",
            "--initial-branch=main",
            bare.to_str().unwrap(),
        ],
    );
    Remote {
        clone: fixture.root().join("clone"),
        bare,
    }
}

fn followed(remote: &Remote) -> Value {
    json!({"settings": {"git": {"remote": remote.bare, "branch": "main", "pollSeconds": 1}}})
}

/// The operator clones the branch, edits platform.yml with `edit`, commits with `subject` and pushes.
fn push_edit(remote: &Remote, subject: &str, edit: impl Fn(&str) -> String) -> String {
    if !remote.clone.exists() {
        git(
            remote.bare.parent().unwrap(),
            &["clone", "--quiet", remote.bare.to_str().unwrap(), "clone"],
        );
    }
    git(&remote.clone, &["pull", "--quiet", "--ff-only"]);
    let file = remote.clone.join("platform.yml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, edit(&text)).unwrap();
    git(&remote.clone, &["commit", "--quiet", "-am", subject]);
    git(&remote.clone, &["push", "--quiet", "origin", "main"]);
    git(&remote.clone, &["rev-parse", "HEAD"])
}

#[tokio::test]
async fn a_followed_branch_gives_revisions_refuses_what_does_not_render_and_gets_the_saves() {
    if !git_available() {
        return pryv_testkit::skip("git history: no git program");
    }
    let fixture = Fixture::new();
    let remote = remote(&fixture);
    let (_leader, api, shutdown) = leader(&fixture, followed(&remote));
    // The empty remote's branch starts with the leader's history.
    eventually("the branch created", WITHIN, || async {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&remote.bare)
            .args(["rev-parse", "--verify", "--quiet", "main"])
            .output()
            .ok()
            .filter(|o| o.status.success())
    })
    .await;

    // A commit pushed to the branch becomes a revision: its author, its subject, its id.
    let pushed = push_edit(&remote, "Move to branch.example", |t| {
        t.replace("pryv.me", "branch.example")
    });
    let revisions = eventually("the pushed commit taken", WITHIN, || async {
        let revisions = history(&api).await;
        (revisions[0]["commit"] == json!(pushed)).then_some(revisions)
    })
    .await;
    assert_eq!(revisions[0]["author"], "Grace");
    assert_eq!(revisions[0]["message"], "Move to branch.example");
    let entry = eventually("the commit audited", WITHIN, || async {
        let (_, audit) = api.get("/admin/audit").token(Some(ADMIN_KEY)).send().await;
        let entry = audit["entries"][0].clone();
        (entry["action"] == "settings-git-commit").then_some(entry)
    })
    .await;
    assert_eq!(
        (&entry["actor"], &entry["action"]),
        (&json!("Grace"), &json!("settings-git-commit"))
    );
    assert!(
        entry["detail"].as_str().unwrap().contains(&pushed),
        "{entry}"
    );
    let core = api.get("/conf").token(Some(CORE_KEY)).send().await.1;
    assert!(
        core.to_string().contains("branch.example"),
        "followers get it"
    );

    // A commit that does not render is refused: nothing changes, the commit and the problems are shown.
    let broken = push_edit(&remote, "Drop the hostings", |t| {
        t.replace(
            "      HOSTINGS_AND_CORES:\n        value: { hosting1: { co1: { ip: CORE_1_IP } } }\n",
            "",
        )
    });
    let refused = eventually("the broken commit refused", WITHIN, || async {
        let branch = status(&api).await["branch"].clone();
        (branch["state"] == "refused").then_some(branch)
    })
    .await;
    assert_eq!(refused["refused"]["commit"], json!(broken));
    assert!(
        refused["refused"]["problems"].to_string().contains("core"),
        "{refused}"
    );
    assert_eq!(history(&api).await[0]["commit"], json!(pushed));
    let metrics = scrape(&api).await;
    assert!(
        metrics.contains("pryv_config_leader_settings_git_branch_problem{problem=\"refused\"} 1"),
        "{metrics}"
    );

    // A save through the API now has the leader and the branch each with a commit the other lacks:
    // reported as diverged, never forced.
    put(&api, upload_size(90, Some("API save"))).await;
    let diverged = eventually("the divergence reported", WITHIN, || async {
        let branch = status(&api).await["branch"].clone();
        (branch["state"] == "diverged").then_some(branch)
    })
    .await;
    assert_eq!(diverged["remoteCommit"], json!(broken));
    assert_eq!(
        git(&remote.bare, &["rev-parse", "main"]),
        broken,
        "never forced"
    );

    // The operator resets the branch to the leader's commit: in sync again, and the next save is pushed.
    let head = status(&api).await["head"].as_str().unwrap().to_owned();
    git(
        &remote.clone,
        &[
            "fetch",
            "--quiet",
            fixture.root().join("conf").to_str().unwrap(),
            "main",
        ],
    );
    git(&remote.clone, &["reset", "--quiet", "--hard", &head]);
    git(
        &remote.clone,
        &["push", "--quiet", "--force", "origin", "main"],
    );
    put(&api, upload_size(95, Some("pushed back"))).await;
    eventually("the save pushed to the branch", WITHIN, || async {
        let tip = git(&remote.bare, &["rev-parse", "main"]);
        let shown = git(&remote.bare, &["show", "main:platform.yml"]);
        (tip != head && shown.contains("95")).then_some(())
    })
    .await;
    assert_eq!(
        git(&remote.bare, &["log", "-1", "--format=%an %s", "main"]),
        "admin-key pushed back"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_first_start_on_an_existing_branch_takes_its_tip() {
    if !git_available() {
        return pryv_testkit::skip("git history: no git program");
    }
    let fixture = Fixture::new();
    let remote = remote(&fixture);
    // The operator's branch already holds the settings, with another domain.
    let seed = fixture.root().join("seed");
    git(
        fixture.root(),
        &["clone", "--quiet", remote.bare.to_str().unwrap(), "seed"],
    );
    std::fs::write(
        seed.join("platform.yml"),
        PLATFORM.replace("pryv.me", "seeded.example"),
    )
    .unwrap();
    git(&seed, &["add", "platform.yml"]);
    git(&seed, &["commit", "--quiet", "-m", "Seed the settings"]);
    git(&seed, &["push", "--quiet", "origin", "HEAD:main"]);
    let tip = git(&seed, &["rev-parse", "HEAD"]);

    let (_leader, api, shutdown) = leader(&fixture, followed(&remote));
    let revisions = eventually("the branch's tip taken", WITHIN, || async {
        let revisions = history(&api).await;
        (revisions[0]["commit"] == json!(tip)).then_some(revisions)
    })
    .await;
    assert_eq!(revisions[0]["author"], "Grace");
    assert_eq!(revisions[0]["message"], "Seed the settings");
    let on_disk = std::fs::read_to_string(fixture.root().join("conf/platform.yml")).unwrap();
    assert!(on_disk.contains("seeded.example"));
    // The leader's earlier history stays out of git: no divergence, nothing to push.
    let repo = committed(&api).await;
    assert_eq!(repo.len(), 2, "{repo:?}");
    eventually("in sync with the branch", WITHIN, || async {
        (status(&api).await["branch"]["state"] == "in-sync").then_some(())
    })
    .await;
    assert_eq!(
        git(&fixture.root().join("conf"), &["rev-parse", "HEAD"]),
        tip
    );
    assert_eq!(git(&remote.bare, &["rev-parse", "main"]), tip);
    shutdown.cancel();
}
