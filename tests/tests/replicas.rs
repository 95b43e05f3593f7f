//! Leader replicas on a real 3-member etcd cluster (loopback; SKIPPED where etcd is not installed): a
//! change saved on one is served by all; concurrent changes through every replica lose nothing; a replica
//! cut off from etcd refuses changes while its followers move on and converge; without an etcd quorum the
//! platform is read-only and the followers keep their files.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::time::Duration;

use pryv_e2e::etcd::{EtcdCluster, installed};
use pryv_e2e::install_crypto;
use pryv_e2e::machine::Machine;
use pryv_e2e::replicas::{self, Replica, history, served_mail, set_mail_host};
use pryv_testkit::eventually;

const WITHIN: Duration = Duration::from_secs(20);

/// etcd installed (else the test says SKIPPED and ends), a 3-member cluster and a folder for the machines.
fn prologue(test: &str) -> Option<(EtcdCluster, tempfile::TempDir)> {
    if !installed(test) {
        return None;
    }
    install_crypto();
    Some((EtcdCluster::start(3), tempfile::tempdir().unwrap()))
}

fn start_replicas(
    base: &std::path::Path,
    cluster: &EtcdCluster,
    cores: &[Machine],
    partitionable: &[bool],
) -> Vec<Replica> {
    let mut replicas: Vec<Replica> = partitionable
        .iter()
        .enumerate()
        .map(|(i, cut)| replicas::lay_out(base, i, cluster, cores, *cut))
        .collect();
    for replica in &mut replicas {
        replica.start();
    }
    replicas
}

/// Waits until `replica` serves `core` a mail host of `host`; the revision it serves.
async fn served_host(replica: &Replica, core: &Machine, host: &str) -> String {
    let url = replica.url();
    eventually(
        &format!("{url} to serve mail host {host}"),
        WITHIN,
        || async {
            served_mail(&url, core)
                .await
                .filter(|(_, mail)| mail.contains(host))
                .map(|(revision, _)| revision)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_saved_on_one_replica_is_served_by_all_and_concurrent_saves_lose_nothing() {
    let Some((cluster, base)) = prologue("replicas: saves through several replicas") else {
        return;
    };
    let cores = [Machine::new(base.path(), "core-1")];
    let replicas = start_replicas(base.path(), &cluster, &cores, &[false, false, false]);

    // Same settings, same shared secrets: every replica serves the same bytes.
    let mut first = BTreeSet::new();
    for replica in &replicas {
        first.insert(served_host(replica, &cores[0], "smtp.example").await);
    }
    assert_eq!(first.len(), 1, "one revision on every replica: {first:?}");

    // Saved on one, served by all, under one revision.
    let (status, body) = set_mail_host(&replicas[0].url(), "smtp.first.example").await;
    assert_eq!(status, 200, "{body}");
    let mut changed = BTreeSet::new();
    for replica in &replicas {
        changed.insert(served_host(replica, &cores[0], "smtp.first.example").await);
    }
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed.is_disjoint(&first));

    // Concurrent saves through every replica: each acknowledged one is in the history exactly once, under
    // the revision its answer named, and the numbers have no gaps.
    let saves = (0..18).map(|i| {
        let url = replicas[(i * 7) % replicas.len()].url();
        async move { (i, set_mail_host(&url, &format!("smtp-{i}.example")).await) }
    });
    let answers = futures::future::join_all(saves).await;
    let entries = history(&replicas[1].url()).await;
    let numbers: Vec<i64> = entries
        .iter()
        .map(|e| e["revision"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = (1..=i64::try_from(entries.len()).unwrap()).collect();
    assert_eq!(numbers, expected, "no gap, no duplicate");
    let mut acknowledged = 0;
    for (i, (status, body)) in &answers {
        let message = format!("mail host smtp-{i}.example");
        let found: Vec<&serde_json::Value> = entries
            .iter()
            .filter(|e| e["message"] == message.as_str())
            .collect();
        match status {
            200 => {
                acknowledged += 1;
                assert_eq!(found.len(), 1, "{message}: {entries:?}");
                assert_eq!(found[0]["revision"], body["revision"], "{message}");
            }
            409 => assert!(
                found.is_empty(),
                "a refused save is not in the history: {message}"
            ),
            other => panic!("save {i}: unexpected {other}: {body}"),
        }
    }
    assert!(
        acknowledged >= 12,
        "most concurrent saves succeed: {acknowledged} of 18"
    );
    // Every replica ends on the newest revision.
    let newest = entries.last().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    let host = newest.trim_start_matches("mail host ");
    for replica in &replicas {
        served_host(replica, &cores[0], host).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_etcd_refuses_changes_and_its_followers_move_on_and_converge() {
    let Some((cluster, base)) = prologue("replicas: a replica partitioned from etcd") else {
        return;
    };
    let mut cores = [Machine::new(base.path(), "core-1")];
    // Replica 2 reaches etcd only through proxies the test cuts.
    let replicas = start_replicas(base.path(), &cluster, &cores, &[false, false, true]);
    let urls: Vec<String> = [2, 0, 1].iter().map(|&i| replicas[i].url()).collect();
    cores[0].start_on(&urls);
    let core = &cores[0];
    pryv_e2e::wait_until("the core's first files", WITHIN, || {
        core.read("mail/conf/mail.yml")
            .contains("smtp.example")
            .then_some(())
    });

    replicas::watching(&replicas[2].url()).await;
    replicas[2].cut_off();
    let isolated = replicas[2].url();
    // At once the store does not answer it (503 store-unavailable), soon it knows itself cut off.
    let refusal = eventually(
        "the cut-off replica to call itself isolated",
        WITHIN,
        || async {
            let (status, body) = set_mail_host(&isolated, "smtp.never.example").await;
            assert_eq!(status, 503, "a replica without etcd never saves: {body}");
            (body["error"]["id"] == "leader-isolated").then_some(body)
        },
    )
    .await;
    assert!(
        refusal["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cut off"),
        "{refusal}"
    );
    // It vouches for nothing new: no tree without the revision the caller has.
    let plain = reqwest::Client::new()
        .get(format!("{isolated}/conf"))
        .header("authorization", &core.key)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 503);

    // A change through a replica that reaches etcd reaches the follower, which moves on from replica 2.
    let (status, body) = set_mail_host(&replicas[0].url(), "smtp.during.example").await;
    assert_eq!(status, 200, "{body}");
    pryv_e2e::wait_until(
        "the follower to take the change from another replica",
        WITHIN,
        || {
            core.read("mail/conf/mail.yml")
                .contains("smtp.during.example")
                .then_some(())
        },
    );
    assert!(
        !core.read("mail/conf/mail.yml").contains("smtp.never"),
        "the refused change never reached a machine"
    );

    // Meanwhile etcd compacts its history past what replica 2's watch had processed.
    let http = reqwest::Client::new();
    let header: serde_json::Value = http
        .post(format!("{}/v3/kv/range", cluster.endpoint(0)))
        .json(&serde_json::json!({"key": "AA==", "count_only": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let revision = header["header"]["revision"].as_str().unwrap().to_owned();
    let compacted = http
        .post(format!("{}/v3/kv/compaction", cluster.endpoint(0)))
        .json(&serde_json::json!({"revision": revision, "physical": true}))
        .send()
        .await
        .unwrap();
    assert!(compacted.status().is_success());

    // Healed, replica 2 catches up (its watch resumes, finds its revision compacted, reads everything
    // again) and accepts changes again.
    replicas[2].heal();
    served_host(&replicas[2], core, "smtp.during.example").await;
    assert!(
        replicas[2].logs().contains("compacted"),
        "{}",
        replicas[2].logs()
    );
    let accepted = eventually("the healed replica to accept a change", WITHIN, || async {
        let (status, _) = set_mail_host(&isolated, "smtp.after.example").await;
        (status == 200).then_some(())
    })
    .await;
    let () = accepted;
    served_host(&replicas[0], core, "smtp.after.example").await;
    pryv_e2e::wait_until("the follower to converge", WITHIN, || {
        core.read("mail/conf/mail.yml")
            .contains("smtp.after.example")
            .then_some(())
    });
    assert!(
        replicas[2].logs().contains("cut off from the etcd store"),
        "{}",
        replicas[2].logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_etcd_quorum_the_platform_is_read_only_and_followers_keep_their_files() {
    let Some((mut cluster, base)) = prologue("replicas: etcd without a quorum") else {
        return;
    };
    let mut cores = [Machine::new(base.path(), "core-1")];
    let replicas = start_replicas(base.path(), &cluster, &cores, &[false, false]);
    cores[0].start_on(&[replicas[0].url(), replicas[1].url()]);
    let core = &cores[0];
    pryv_e2e::wait_until("the core's first files", WITHIN, || {
        core.read("mail/conf/mail.yml")
            .contains("smtp.example")
            .then_some(())
    });
    let files_before = core.read("mail/conf/mail.yml");
    let status_before = pryv_e2e::platform::follower_status(core.daemon.as_ref().unwrap()).await;
    // It reported to replica 0; replica 1 knows the report too (through the store).
    let fleet = eventually(
        "replica 1 to know the follower's report",
        WITHIN,
        || async {
            let fleet: serde_json::Value = reqwest::Client::new()
                .get(format!("{}/admin/status", replicas[1].url()))
                .header("authorization", replicas::ADMIN_KEY)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let report = &fleet["followers"][0]["lastReport"];
            (report["revision"] == status_before["revision"]).then_some(fleet)
        },
    )
    .await;
    assert_eq!(
        fleet["followers"][0]["lastReport"]["outcome"], "applied",
        "{fleet}"
    );

    cluster.stop_member(1);
    cluster.stop_member(2);
    for replica in &replicas {
        let url = replica.url();
        let body = eventually("every replica to refuse changes", WITHIN, || async {
            let (status, body) = set_mail_host(&url, "smtp.lost.example").await;
            (status == 503).then_some(body)
        })
        .await;
        assert!(
            ["leader-isolated", "store-unavailable"]
                .contains(&body["error"]["id"].as_str().unwrap()),
            "{body}"
        );
    }
    // The follower asks again (a notification): it keeps what it has, nothing removed, nothing restarted.
    let follower = core.daemon.as_ref().unwrap();
    let answer = reqwest::Client::new()
        .post(format!("{}/notify", follower.url()))
        .header("authorization", &core.key)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    let status = pryv_e2e::platform::wait_status(follower, "the sync to end", |status| {
        status["lastFetch"] != status_before["lastFetch"] || status["lastFetchError"].is_string()
    })
    .await;
    assert_eq!(status["revision"], status_before["revision"], "{status}");
    assert_eq!(core.read("mail/conf/mail.yml"), files_before);

    // A quorum again: changes are accepted and reach the follower.
    cluster.start_member(1);
    let url = replicas[1].url();
    eventually(
        "a replica to accept changes again",
        Duration::from_secs(30),
        || async {
            let (status, _) = set_mail_host(&url, "smtp.back.example").await;
            (status == 200).then_some(())
        },
    )
    .await;
    converge(core, "smtp.back.example", &replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_never_takes_a_tree_of_older_settings_than_it_applied() {
    let Some((cluster, base)) = prologue("replicas: a follower against a replica behind") else {
        return;
    };
    let mut cores = [Machine::new(base.path(), "core-1")];
    let mut replicas = start_replicas(base.path(), &cluster, &cores, &[false]);
    // A replica whose store is behind: it serves settings revision 1 (another prefix, never changed).
    let mut behind = replicas::lay_out(base.path(), 1, &cluster, &cores, false);
    behind.set_prefix("/pryv-behind/");
    behind.start();
    for host in ["smtp.second.example", "smtp.third.example"] {
        let (status, body) = set_mail_host(&replicas[0].url(), host).await;
        assert_eq!(status, 200, "{body}");
    }
    cores[0].start_on(&[replicas[0].url(), behind.url()]);
    let core = &cores[0];
    converge(core, "smtp.third.example", &replicas).await;
    let follower = core.daemon.as_ref().unwrap();
    let applied = pryv_e2e::platform::wait_status(follower, "the settings revision applied", |s| {
        s["storeRevision"] == 3
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(core.root.join("pryv/.config-follower/store-revision")).unwrap(),
        "3",
        "recorded across restarts"
    );

    // The up-to-date replica goes away; the one behind answers, with an older tree: refused.
    replicas[0].daemon.take();
    let answer = reqwest::Client::new()
        .post(format!("{}/notify", follower.url()))
        .header("authorization", &core.key)
        .send()
        .await
        .unwrap();
    let (status, body) = (answer.status(), answer.text().await.unwrap());
    assert!(!status.is_success(), "the sync fails: {body}");
    assert!(body.contains("older than revision 3"), "{body}");
    let refused = pryv_e2e::platform::wait_status(follower, "the older tree to be refused", |s| {
        s["lastFetchError"]
            .as_str()
            .is_some_and(|e| e.contains("older than revision 3"))
    })
    .await;
    assert_eq!(refused["revision"], applied["revision"], "{refused}");
    assert!(
        core.read("mail/conf/mail.yml")
            .contains("smtp.third.example")
    );

    // Restarted (kill -9, then started again), it still knows what it applied: the older tree stays refused.
    cores[0].daemon.take();
    cores[0].start_on(&[replicas[0].url(), behind.url()]);
    let restarted = cores[0].daemon.as_ref().unwrap();
    let status =
        pryv_e2e::platform::wait_status(restarted, "the older tree refused after a restart", |s| {
            s["lastFetchError"]
                .as_str()
                .is_some_and(|e| e.contains("older than revision 3"))
        })
        .await;
    assert_eq!(status["storeRevision"], 3, "{status}");
    assert!(
        cores[0]
            .read("mail/conf/mail.yml")
            .contains("smtp.third.example")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_one_replica_is_a_session_on_every_replica_and_ends_on_every_replica() {
    let Some((cluster, base)) = prologue("replicas: admin sessions") else {
        return;
    };
    let cores = [Machine::new(base.path(), "core-1")];
    let replicas = start_replicas(base.path(), &cluster, &cores, &[false, false, false]);
    let url = |i: usize| replicas[i].url();
    let http = reqwest::Client::new();
    let call =
        |method: reqwest::Method, url: String, auth: String, body: Option<serde_json::Value>| {
            let mut request = http.request(method, url).header("authorization", auth);
            if let Some(body) = body {
                request = request.json(&body);
            }
            async move {
                let answer = request.send().await.unwrap();
                let status = answer.status().as_u16();
                (
                    status,
                    answer.json::<serde_json::Value>().await.unwrap_or_default(),
                )
            }
        };
    let login_as = |i: usize, username: &str, password: &str| {
        let body = serde_json::json!({"username": username, "password": password});
        let request = http.post(format!("{}/auth/login", url(i))).json(&body);
        async move {
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), 200);
            answer.json::<serde_json::Value>().await.unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let login = |i: usize, password: &str| login_as(i, "alice", password);
    // Replica 0's own emergency account manages the shared users.
    let emergency = std::fs::read_to_string(replicas[0].root.join("credentials.txt")).unwrap();
    let root = login_as(0, "initial_user", emergency.trim()).await;
    let admin = || root.clone();
    let reads_settings = |i: usize, token: String| {
        call(
            reqwest::Method::GET,
            format!("{}/admin/settings", url(i)),
            token,
            None,
        )
    };

    // Created through one replica, logged in through another, a session on the third.
    let (status, body) = call(
        reqwest::Method::POST,
        format!("{}/users", url(0)),
        admin(),
        Some(serde_json::json!({"username": "alice", "password": "alice-password-1", "permissions": {"settings": ["read"]}})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let token = login(1, "alice-password-1").await;
    assert_eq!(reads_settings(2, token.clone()).await.0, 200);
    let (status, listed) = call(
        reqwest::Method::GET,
        format!("{}/users", url(0)),
        admin(),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(listed.to_string().contains("alice"), "{listed}");

    // The rule for acting on another admin holds across replicas: a help desk that may reset passwords
    // cannot reset one of an admin holding more than it, and nobody acts without a credential.
    for (name, permissions) in [
        (
            "helpdesk",
            serde_json::json!({"users": ["read", "resetPassword"]}),
        ),
        (
            "chief",
            serde_json::json!({"users": ["read", "resetPassword"], "settings": ["read", "update"]}),
        ),
    ] {
        let (status, body) = call(
            reqwest::Method::POST,
            format!("{}/users", url(0)),
            admin(),
            Some(serde_json::json!({"username": name, "password": format!("{name}-password-1"), "permissions": permissions})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let helpdesk = login_as(1, "helpdesk", "helpdesk-password-1").await;
    let (status, body) = call(
        reqwest::Method::POST,
        format!("{}/users/chief/reset-password", url(2)),
        helpdesk,
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = call(
        reqwest::Method::POST,
        format!("{}/users/chief/reset-password", url(2)),
        String::new(),
        None,
    )
    .await;
    assert_eq!(status, 401);
    // Her password is the one she had.
    login_as(0, "chief", "chief-password-1").await;

    // Her password reset through one replica ends the session on all of them.
    let (status, reset) = call(
        reqwest::Method::POST,
        format!("{}/users/alice/reset-password", url(0)),
        admin(),
        None,
    )
    .await;
    assert_eq!(status, 200, "{reset}");
    for i in 0..3 {
        assert_eq!(reads_settings(i, token.clone()).await.0, 401, "replica {i}");
    }

    // A logout through one replica ends the session on the others.
    let token = login(2, reset["password"].as_str().unwrap()).await;
    assert_eq!(reads_settings(1, token.clone()).await.0, 200);
    let (status, _) = call(
        reqwest::Method::POST,
        format!("{}/auth/logout", url(0)),
        token.clone(),
        None,
    )
    .await;
    assert!(status < 300, "{status}");
    for i in 0..3 {
        assert_eq!(reads_settings(i, token.clone()).await.0, 401, "replica {i}");
    }

    // One audit log for all: what was done through replicas 0 and 2 is listed by replica 1, and the elected
    // replica keeps only the newest entries (3 here, `keepAuditEntries`).
    let actions = eventually("the shared audit log, trimmed to 3", WITHIN, || async {
        let (status, audit) = call(
            reqwest::Method::GET,
            format!("{}/admin/audit", url(1)),
            replicas::ADMIN_KEY.to_owned(),
            None,
        )
        .await;
        assert_eq!(status, 200, "{audit}");
        let actions: Vec<String> = audit["entries"]
            .as_array()?
            .iter()
            .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
            .collect();
        (actions.len() == 3).then_some(actions)
    })
    .await;
    assert_eq!(actions, ["logout", "login", "user-reset-password"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_run_on_sqlite_moves_to_etcd_with_its_history_users_and_secrets() {
    let Some((cluster, base)) = prologue("replicas: store migrate --to etcd") else {
        return;
    };
    let cores = [Machine::new(base.path(), "core-1")];
    // One leader on SQLite: its secrets generated into its file, two revisions, an admin user.
    let mut single = replicas::lay_out(base.path(), 0, &cluster, &cores, false);
    let store = std::sync::Mutex::new(serde_json::Value::Null);
    single.edit_config(|config| {
        *store.lock().unwrap() = config["store"].take();
        config.as_object_mut().unwrap().remove("store");
    });
    single.start();
    let (status, body) = set_mail_host(&single.url(), "smtp.sqlite.example").await;
    assert_eq!(status, 200, "{body}");
    let emergency = std::fs::read_to_string(single.root.join("credentials.txt")).unwrap();
    let http = reqwest::Client::new();
    let token = |url: String, username: &'static str, password: String| {
        let request = http
            .post(format!("{url}/auth/login"))
            .json(&serde_json::json!({"username": username, "password": password}));
        async move {
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), 200);
            answer.json::<serde_json::Value>().await.unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let root = token(single.url(), "initial_user", emergency.trim().to_owned()).await;
    let created = http
        .post(format!("{}/users", single.url()))
        .header("authorization", root)
        .json(&serde_json::json!({"username": "bob", "password": "bob-password-12", "permissions": {"settings": ["read"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let (served_before, _) = served_mail(&single.url(), &cores[0]).await.unwrap();
    single.daemon.take().unwrap().terminate();

    // Migrated into etcd, once.
    single.edit_config(|config| config["store"] = store.lock().unwrap().clone());
    let migrated = single.command(&["store", "migrate", "--to", "etcd"]);
    let said = String::from_utf8_lossy(&migrated.stdout).into_owned()
        + &String::from_utf8_lossy(&migrated.stderr);
    assert!(migrated.status.success(), "{said}");
    assert!(
        said.contains("copied settings revisions 1 to 2") && said.contains("1 admin user(s)"),
        "{said}"
    );
    let again = single.command(&["store", "migrate", "--to", "etcd"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds settings (revision 2)"));

    // The old leader as a replica, and a new one with placeholders only: same trees, same history, same users.
    single.start();
    let mut fresh = replicas::lay_out(base.path(), 1, &cluster, &cores, false);
    fresh.start();
    for replica in [&single, &fresh] {
        assert_eq!(
            served_host(replica, &cores[0], "smtp.sqlite.example").await,
            served_before
        );
    }
    let entries = history(&fresh.url()).await;
    let messages: Vec<&str> = entries
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        [
            "platform.yml found at first start",
            "mail host smtp.sqlite.example"
        ]
    );
    let bob = token(fresh.url(), "bob", "bob-password-12".to_owned()).await;
    let read = http
        .get(format!("{}/admin/settings", single.url()))
        .header("authorization", bob)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    // Its audit log came along (the newest entries, `keepAuditEntries`).
    let (status, audit) =
        replicas::admin(reqwest::Method::GET, &fresh.url(), "/admin/audit", None).await;
    assert_eq!(status, 200);
    assert!(audit.to_string().contains("user-create"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notified_follower_asks_another_replica_when_its_own_has_not_caught_up() {
    let Some((cluster, base)) = prologue("replicas: a notification through another replica") else {
        return;
    };
    let mut cores = [Machine::new(base.path(), "core-1")];
    let replicas = start_replicas(base.path(), &cluster, &cores, &[false]);
    // The follower's own replica never catches up (it follows another prefix, still at revision 1).
    let mut behind = replicas::lay_out(base.path(), 1, &cluster, &cores, false);
    behind.set_prefix("/pryv-behind/");
    behind.start();
    cores[0].start_on(&[behind.url(), replicas[0].url()]);
    let core = &cores[0];
    converge(core, "smtp.example", &replicas).await;
    for host in ["smtp.second.example", "smtp.third.example"] {
        let (status, body) = set_mail_host(&replicas[0].url(), host).await;
        assert_eq!(status, 200, "{body}");
    }
    // The notification says revision 3 is in force: the follower's replica answers for revision 1 (a 304:
    // the same tree as it has), so it asks the next one.
    let answer = reqwest::Client::new()
        .post(format!("{}/admin/notify", replicas[0].url()))
        .header("authorization", replicas::ADMIN_KEY)
        .json(&serde_json::json!({"all": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    converge(core, "smtp.third.example", &replicas).await;
    let status = pryv_e2e::platform::follower_status(core.daemon.as_ref().unwrap()).await;
    assert_eq!(status["leaderUrl"], replicas[0].url().as_str(), "{status}");
    assert_eq!(status["storeRevision"], 3, "{status}");
}

/// Waits until the follower of `core` has mail host `host` on disk; on timeout, shows what each process said.
async fn converge(core: &Machine, host: &str, replicas: &[Replica]) {
    // Its long-poll may be backing off after the outage (30 s at most).
    let done = pryv_testkit::poll_until(Duration::from_secs(45), || async {
        core.read("mail/conf/mail.yml").contains(host).then_some(())
    })
    .await;
    if done.is_none() {
        let follower = core.daemon.as_ref().unwrap();
        let logs: Vec<String> = replicas.iter().map(Replica::logs).collect();
        panic!(
            "the follower never took {host}; status {}\nfollower:\n{}\nreplicas:\n{}",
            pryv_e2e::platform::follower_status(follower).await,
            follower.logs(),
            logs.join("\n----\n")
        );
    }
}

/// Three cores long-polling both replicas, their first files on disk; which replica is elected.
async fn rollout_platform(
    base: &std::path::Path,
    cluster: &EtcdCluster,
    count: usize,
) -> (Vec<Machine>, Vec<Replica>, usize) {
    let names = ["core-1", "core-2", "core-3"];
    let mut cores: Vec<Machine> = names[..count]
        .iter()
        .map(|name| Machine::new(base, name))
        .collect();
    let replicas = start_replicas(base, cluster, &cores, &[false, false]);
    let urls: Vec<String> = replicas.iter().map(Replica::url).collect();
    for core in &mut cores {
        core.start_on(&urls);
    }
    for core in &cores {
        converge(core, "smtp.example", &replicas).await;
    }
    let elected = eventually("a replica to be elected", WITHIN, || async {
        for (i, replica) in replicas.iter().enumerate() {
            if replicas::elected(&replica.url()).await {
                return Some(i);
            }
        }
        None
    })
    .await;
    (cores, replicas, elected)
}

/// Saves a held change through `saver` and starts a rollout of it, one core per wave, through `notifier`.
async fn start_rollout(saver: &str, notifier: &str, pause_seconds: u64) -> i64 {
    let body = serde_json::json!({"settings": {"MAIL": {"settings": {"MAIL_HOST": {"value": "smtp.rollout.example"}}}}});
    let (status, saved) = replicas::admin(
        reqwest::Method::PUT,
        saver,
        "/admin/settings?hold=true",
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{saved}");
    let (status, notified) = replicas::admin(
        reqwest::Method::POST,
        notifier,
        "/admin/notify",
        Some(serde_json::json!({"batchSize": 1, "pauseSeconds": pause_seconds})),
    )
    .await;
    assert_eq!(status, 200, "{notified}");
    notified["rollout"].as_i64().unwrap()
}

async fn rollout_record(replica_url: &str, id: i64) -> Option<serde_json::Value> {
    let (status, body) = replicas::admin(
        reqwest::Method::GET,
        replica_url,
        &format!("/admin/rollouts/{id}"),
        None,
    )
    .await;
    (status == 200).then_some(body)
}

/// Waits until rollout `id` is `done` on `replica_url`; all along, no core has the new host before its
/// wave started (the files are read before the rollout, so a file ahead of its wave would show).
async fn done_with_no_wave_early(
    replica_url: &str,
    id: i64,
    cores: &[Machine],
) -> serde_json::Value {
    eventually(
        "the rollout to be done, no wave early",
        Duration::from_secs(45),
        || async {
            let changed: Vec<bool> = cores
                .iter()
                .map(|c| {
                    c.read("mail/conf/mail.yml")
                        .contains("smtp.rollout.example")
                })
                .collect();
            let rollout = rollout_record(replica_url, id).await?;
            for (core, changed) in cores.iter().zip(&changed) {
                let wave = rollout["waves"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|w| w["followers"].to_string().contains(core.name))
                    .unwrap();
                assert!(
                    !changed || !wave["started"].is_null(),
                    "{} has the change before its wave started: {rollout}",
                    core.name
                );
            }
            (rollout["state"] == "done").then_some(rollout)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_elected_replica_mid_rollout_lets_another_resume_it() {
    let Some((cluster, base)) = prologue("replicas: the elected replica killed mid-rollout") else {
        return;
    };
    let (cores, mut replicas, elected) = rollout_platform(base.path(), &cluster, 3).await;
    let other = 1 - elected;
    // Created through the replica that does not drive: the elected one picks it up.
    let id = start_rollout(&replicas[other].url(), &replicas[other].url(), 3).await;
    let survivor = replicas[other].url();
    eventually("the first wave to finish", WITHIN, || async {
        let rollout = rollout_record(&survivor, id).await?;
        (!rollout["waves"][0]["finished"].is_null()).then_some(())
    })
    .await;
    let held = cores
        .iter()
        .filter(|c| {
            !c.read("mail/conf/mail.yml")
                .contains("smtp.rollout.example")
        })
        .count();
    if held != 2 {
        let logs: Vec<String> = cores
            .iter()
            .map(|c| c.daemon.as_ref().unwrap().logs())
            .collect();
        panic!(
            "the later waves are held during the pause: {held} held\n{}\n=== replicas\n{}\n----\n{}",
            logs.join("\n----\n"),
            replicas[0].logs(),
            replicas[1].logs()
        );
    }

    replicas[elected].daemon.take(); // kill -9
    eventually("the other replica to be elected", WITHIN, || async {
        replicas::elected(&survivor).await.then_some(())
    })
    .await;
    let done = done_with_no_wave_early(&survivor, id, &cores).await;
    for core in &cores {
        let status = pryv_e2e::platform::follower_status(core.daemon.as_ref().unwrap()).await;
        assert!(
            core.read("mail/conf/mail.yml")
                .contains("smtp.rollout.example"),
            "{}: {status}\n{done}\n{}",
            core.name,
            replicas[other].logs()
        );
    }
    let waves = done["waves"].as_array().unwrap();
    for pair in waves.windows(2) {
        assert!(
            pair[1]["started"].as_i64() >= pair[0]["finished"].as_i64(),
            "{done}"
        );
    }
    assert!(
        replicas[other]
            .logs()
            .contains("driving the rollout as the elected replica")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_elected_replica_resumed_after_its_lease_writes_nothing_and_notifies_nobody() {
    let Some((cluster, base)) = prologue("replicas: the elected replica stopped past its lease")
    else {
        return;
    };
    let (cores, replicas, elected) = rollout_platform(base.path(), &cluster, 2).await;
    let other = 1 - elected;
    let survivor = replicas[other].url();
    let id = start_rollout(&replicas[elected].url(), &replicas[elected].url(), 4).await;
    eventually("the first wave to finish", WITHIN, || async {
        let rollout = rollout_record(&survivor, id).await?;
        (!rollout["waves"][0]["finished"].is_null()).then_some(())
    })
    .await;
    let stopped = replicas[elected]
        .daemon
        .as_ref()
        .unwrap()
        .child
        .id()
        .to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &stopped])
            .status()
            .unwrap()
            .success()
    );

    // Its lease runs out: the other one is elected and finishes the rollout.
    eventually("the other replica to be elected", WITHIN, || async {
        replicas::elected(&survivor).await.then_some(())
    })
    .await;
    let done = done_with_no_wave_early(&survivor, id, &cores).await;
    let notified = |core: &Machine| {
        core.daemon
            .as_ref()
            .unwrap()
            .logs()
            .matches("notification received")
            .count()
    };
    let before: Vec<usize> = cores.iter().map(notified).collect();

    // Resumed: its drive and its term end, with no write and no notification.
    assert!(
        std::process::Command::new("kill")
            .args(["-CONT", &stopped])
            .status()
            .unwrap()
            .success()
    );
    pryv_e2e::wait_until("the resumed replica to leave the rollout", WITHIN, || {
        replicas[elected]
            .logs()
            .contains("not the elected replica any more")
            .then_some(())
    });
    pryv_e2e::wait_until(
        "the resumed replica to know it lost the election",
        WITHIN,
        || {
            replicas[elected]
                .logs()
                .contains("no longer the replica that drives rollouts")
                .then_some(())
        },
    );
    assert_eq!(
        rollout_record(&survivor, id).await.unwrap(),
        done,
        "no write after the lease"
    );
    let after: Vec<usize> = cores.iter().map(notified).collect();
    assert_eq!(after, before, "no notification after the lease");
    assert!(!replicas::elected(&replicas[elected].url()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_platform_file_is_imported_validated_as_a_save_and_served_by_every_replica() {
    let Some((cluster, base)) = prologue("replicas: settings import") else {
        return;
    };
    let cores = [Machine::new(base.path(), "core-1")];
    let replicas = start_replicas(base.path(), &cluster, &cores, &[false, false]);
    let edited = base.path().join("edited.yml");
    std::fs::write(
        &edited,
        replicas::PLATFORM.replace("smtp.example", "smtp.imported.example"),
    )
    .unwrap();
    let imported = replicas[1].command(&[
        "settings",
        "import",
        edited.to_str().unwrap(),
        "--message",
        "by hand",
    ]);
    let said = String::from_utf8_lossy(&imported.stdout).into_owned()
        + &String::from_utf8_lossy(&imported.stderr);
    assert!(imported.status.success(), "{said}");
    assert!(said.contains("saved as settings revision 2"), "{said}");
    for replica in &replicas {
        served_host(replica, &cores[0], "smtp.imported.example").await;
    }
    let entries = history(&replicas[0].url()).await;
    assert_eq!(entries.last().unwrap()["author"], "import");
    assert_eq!(entries.last().unwrap()["message"], "by hand");

    // A file that does not parse is refused, naming it; nothing is saved.
    std::fs::write(&edited, "vars:\n  MAIL: [unclosed\n").unwrap();
    let refused = replicas[0].command(&["settings", "import", edited.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("edited.yml"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(history(&replicas[0].url()).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_templates_are_validated_then_served_by_every_replica() {
    let Some((cluster, base)) = prologue("replicas: templates push") else {
        return;
    };
    let cores = [Machine::new(base.path(), "core-1")];
    let replicas = start_replicas(base.path(), &cluster, &cores, &[false, false]);
    let (before, _) = served_mail(&replicas[0].url(), &cores[0]).await.unwrap();
    let mail = |replica: &Replica| replica.root.join("data/core/mail/conf/mail.yml");

    // An edit of a replica's own folder is not served: replicas render the store's templates.
    std::fs::write(mail(&replicas[1]), "host: MAIL_HOST\nport: 587\n").unwrap();
    let (_, served) = served_mail(&replicas[1].url(), &cores[0]).await.unwrap();
    assert!(!served.contains("587"), "{served}");

    let pushed = replicas[1].command(&["templates", "push"]);
    let said = String::from_utf8_lossy(&pushed.stdout).into_owned()
        + &String::from_utf8_lossy(&pushed.stderr);
    assert!(pushed.status.success() && said.contains("pushed"), "{said}");
    let mut revisions = BTreeSet::new();
    for replica in &replicas {
        let url = replica.url();
        let revision = eventually("the pushed templates to be served", WITHIN, || async {
            served_mail(&url, &cores[0])
                .await
                .filter(|(_, mail)| mail.contains("port: 587"))
                .map(|(revision, _)| revision)
        })
        .await;
        revisions.insert(revision);
    }
    assert_eq!(
        revisions.len(),
        1,
        "the same tree on every replica: {revisions:?}"
    );
    assert!(!revisions.contains(&before));

    // A folder that does not render (a symlink out of the templates) is refused; nothing changes.
    std::os::unix::fs::symlink(
        "/etc/hostname",
        replicas[0].root.join("data/core/core/conf/host.yml"),
    )
    .unwrap();
    let refused = replicas[0].command(&["templates", "push"]);
    let said = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains("symlink"), "{said}");
    for replica in &replicas {
        let (revision, _) = served_mail(&replica.url(), &cores[0]).await.unwrap();
        assert!(revisions.contains(&revision));
    }
}

/// A CA, a certificate for 127.0.0.1 signed by it (server and client use) and a client certificate, as PEM
/// files in `dir`.
fn certificates(
    dir: &std::path::Path,
) -> (pryv_e2e::etcd::Tls, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let signed = |usages: Vec<ExtendedKeyUsagePurpose>, name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
        params.extended_key_usages = usages;
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}-key.pem")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    };
    let (cert, key) = signed(
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        "member",
    );
    let (client_cert, client_key) = signed(vec![ExtendedKeyUsagePurpose::ClientAuth], "leader");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    (
        pryv_e2e::etcd::Tls {
            ca: ca_path,
            cert,
            key,
        },
        client_cert,
        client_key,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_reached_over_tls_with_a_client_certificate() {
    if !installed("replicas: etcd over TLS") {
        return;
    }
    install_crypto();
    let base = tempfile::tempdir().unwrap();
    let (tls, client_cert, client_key) = certificates(base.path());
    let cluster = EtcdCluster::start_tls(tls.clone());
    let cores = [Machine::new(base.path(), "core-1")];
    let mut replica = replicas::lay_out(base.path(), 0, &cluster, &cores, false);
    replica.edit_config(|config| {
        config["store"]["etcd"]["tls"] = serde_json::json!({
            "caFile": tls.ca, "certFile": client_cert, "keyFile": client_key,
        });
    });
    replica.start();
    served_host(&replica, &cores[0], "smtp.example").await;
    let (status, body) = set_mail_host(&replica.url(), "smtp.tls.example").await;
    assert_eq!(status, 200, "{body}");
    served_host(&replica, &cores[0], "smtp.tls.example").await;

    // Without its client certificate a replica is refused by the members and does not start.
    let refused = replicas::lay_out(base.path(), 1, &cluster, &cores, false);
    refused.edit_config(|config| {
        config["store"]["etcd"]["tls"] = serde_json::json!({"caFile": tls.ca})
    });
    let started = refused.command(&["--ip", "127.0.0.1", "--port", "0"]);
    assert!(!started.status.success());
    let said = String::from_utf8_lossy(&started.stderr);
    assert!(
        said.contains("etcd store") && said.contains("127.0.0.1"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_watch_goes_silent_notices_and_catches_up() {
    let Some((cluster, base)) = prologue("replicas: a silent watch") else {
        return;
    };
    let cores = [Machine::new(base.path(), "core-1")];
    let replicas = start_replicas(base.path(), &cluster, &cores, &[false, true]);
    replicas::watching(&replicas[1].url()).await;
    // Its watch's connection stays open but carries nothing more; no error says so.
    replicas[1].freeze();
    let (status, body) = set_mail_host(&replicas[0].url(), "smtp.unseen.example").await;
    assert_eq!(status, 200, "{body}");
    let url = replicas[1].url();
    eventually(
        "the replica to notice its watch is stuck and catch up",
        Duration::from_secs(40),
        || async {
            served_mail(&url, &cores[0])
                .await
                .filter(|(_, mail)| mail.contains("smtp.unseen.example"))
        },
    )
    .await;
    assert!(
        replicas[1]
            .logs()
            .contains("did not deliver a change in time"),
        "{}",
        replicas[1].logs()
    );
}
