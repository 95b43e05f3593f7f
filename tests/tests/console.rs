//! The console in a real browser (headless Chromium through WebDriver) against a real leader and two real
//! followers on loopback: log in, change a setting, review the diff and the restarts, save with a message, see
//! the followers' apply reports arrive, roll out in two waves and watch it finish, roll back from the history,
//! create an admin user. A JavaScript error or a CSP violation in the page fails the test; every screen is
//! photographed (`target/console-screenshots/`). Where Chromium or its driver is missing: SKIPPED.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pryv_e2e::machine::Machine;
use pryv_e2e::webdriver::Browser;
use pryv_e2e::{Daemon, bin, free_port, install_crypto, write};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "console-admin-key-0123456789abcdefgh";

fn mail(machine: &Machine) -> String {
    machine.read("mail/conf/mail.yml")
}

fn lay_out(base: &Path, machines: &[Machine]) -> PathBuf {
    write(
        base,
        "leader/conf/platform.yml",
        pryv_e2e::platform::PLATFORM,
    );
    pryv_e2e::platform::write_core_role(&base.join("leader/data"), "domain: DOMAIN\n");
    let followers: serde_json::Map<String, Value> = machines
        .iter()
        .map(|m| {
            (
                m.key.clone(),
                json!({"url": m.url(), "role": "core", "name": m.name}),
            )
        })
        .collect();
    write(
        base,
        "leader/conf/config-leader.json",
        &json!({
            "templatesPath": "../data",
            "platformSettings": {"platformConfig": "platform.yml"},
            "adminKey": ADMIN_KEY,
            "internals": {"configLeaderTokenSecret": "SECRET"},
            "followers": followers,
        })
        .to_string(),
    );
    base.join("leader/conf/config-leader.json")
}

async fn api(url: String) -> Value {
    reqwest::Client::new()
        .get(url)
        .header("authorization", ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("console-screenshots")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_changes_reviews_rolls_out_and_rolls_back_in_the_console() {
    install_crypto();
    if pryv_e2e::webdriver::installed().is_none() {
        pryv_e2e::skip("console browser test: chromium and chromium-driver are not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut machines = vec![
        Machine::new(dir.path(), "core-1"),
        Machine::new(dir.path(), "core-2"),
    ];
    let config = lay_out(dir.path(), &machines);
    let port = free_port();
    let mut command = Command::new(bin("config-leader"));
    command
        .arg("--config")
        .arg(&config)
        .args(["--ip", "127.0.0.1", "--port", &port.to_string()]);
    let mut leader = Daemon::spawn(command);
    leader.wait_listening(Duration::from_secs(30));
    let url = leader.url();
    for machine in &mut machines {
        machine.start(&url);
    }
    pryv_e2e::wait_until(
        "both followers wrote their files",
        Duration::from_secs(20),
        || {
            machines
                .iter()
                .all(|m| mail(m) == "host: smtp.pryv.me\n")
                .then_some(())
        },
    );
    the_console_is_served_with_strict_headers(&url).await;
    let Some(browser) = Browser::start(&screenshots(), 1280, 900).await else {
        pryv_e2e::skip("console browser test: chromedriver did not start a session");
        return;
    };
    let password = std::fs::read_to_string(dir.path().join("leader/credentials.txt"))
        .unwrap()
        .trim()
        .to_owned();
    log_in(&browser, &url, &password).await;
    change_review_and_save(&browser).await;
    notify_and_see_the_reports(&browser, &url, &machines).await;
    roll_out_in_two_waves(&browser, &url, &machines).await;
    a_stale_edit_is_a_conflict(&browser, &url).await;
    roll_back_from_the_history(&browser, &url).await;
    create_an_admin_user(&browser, &url).await;
    add_a_zone(&browser, &url).await;
    the_other_screens(&browser).await;
    too_many_failed_logins_count_down(&browser).await;
    // Answers the test asks for: a wrong password, a stale save, and migrations without a template configured.
    let errors = browser
        .errors(&[
            ("/auth/login", 401),
            ("/auth/login", 429),
            ("/admin/settings", 412),
            ("/admin/migrations", 400),
        ])
        .await;
    assert!(errors.is_empty(), "errors in the page: {errors:?}");
    // Stopped while the console's event stream is open: the stream ends with the leader, the drain does
    // not wait for it.
    assert_eq!(leader.terminate(), Some(0));
    assert!(
        !leader.logs().contains("did not finish in time"),
        "{}",
        leader.logs()
    );
    browser.quit().await;
}

async fn the_console_is_served_with_strict_headers(url: &str) {
    for path in [
        "/console/",
        "/console/app.js",
        "/console/console.css",
        "/console/missing.js",
    ] {
        let response = reqwest::get(format!("{url}{path}")).await.unwrap();
        let headers = response.headers();
        let policy = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(policy.contains(directive), "{path}: {policy}");
        }
        assert!(
            !policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"),
            "{policy}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
    }
    let index = reqwest::get(format!("{url}/console/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !index.contains("<script>") && !index.contains("style="),
        "no inline script or style"
    );
}

async fn log_in(browser: &Browser, url: &str, password: &str) {
    browser.goto(&format!("{url}/console/")).await;
    browser.screenshot("01-login").await;
    let wrong = browser.find("input[name=username]").await;
    browser.type_into(&wrong, "initial_user").await;
    let field = browser.find("input[name=password]").await;
    browser.type_into(&field, "not-the-password").await;
    browser.click(&browser.button("Log in").await).await;
    browser
        .wait_text(".login", "invalid username or password")
        .await;
    browser.type_into(&field, password).await;
    browser.click(&browser.button("Log in").await).await;
    browser
        .wait_text("main[data-screen=overview]", "Latest revisions")
        .await;
    let overview = browser.wait_text("main", "core").await;
    assert!(overview.contains("up to date 2"), "{overview}");
    browser.screenshot("02-overview").await;
}

async fn change_review_and_save(browser: &Browser) {
    browser.goto_hash("#/settings").await;
    let host = browser.find("input[name=MAIL_HOST]").await;
    browser.type_into(&host, "smtp2.pryv.me").await;
    let changed = browser.text("[data-setting=MAIL_HOST].changed").await;
    assert!(
        changed.contains("MAIL_HOST"),
        "the field is marked changed: {changed:?}"
    );
    browser.click(&browser.button("Review changes").await).await;
    let review = browser.wait_text("[data-review]", "Restarts").await;
    assert!(
        review.contains("-host: smtp.pryv.me") && review.contains("+host: smtp2.pryv.me"),
        "{review}"
    );
    assert!(
        review.contains("core-1: restart mail") || review.contains("core-1: mail"),
        "{review}"
    );
    browser.screenshot("03-settings-review").await;
    let message = browser.find("input[name=message]").await;
    browser.type_into(&message, "mail moves to smtp2").await;
    browser.click(&browser.button("Save").await).await;
    browser
        .wait_text("main[data-screen=settings] h1", "revision 2")
        .await;
}

async fn notify_and_see_the_reports(browser: &Browser, url: &str, machines: &[Machine]) {
    browser.goto_hash("#/followers").await;
    browser.wait_text("tbody", "core-2").await;
    browser.click(&browser.button("Notify role").await).await;
    // The live view: both rows come back up to date with the new revision's report.
    let current = api(format!("{url}/admin/status")).await["followers"][0]["currentRevision"]
        .as_str()
        .unwrap()
        .chars()
        .take(8)
        .collect::<String>();
    for machine in machines {
        browser
            .wait_text(&format!("tr[data-follower={}]", machine.name), &current)
            .await;
        machine
            .docker
            .wait_for(&format!("{} restarts mail", machine.name), |a| {
                !a.is_empty()
            });
        assert_eq!(mail(machine), "host: smtp2.pryv.me\n");
    }
    browser.wait_text("tbody", "up to date").await;
    browser.screenshot("04-followers").await;
    browser.goto_hash("#/followers/core-1").await;
    let detail = browser.wait_text("[data-report]", "Restarted").await;
    assert!(
        detail.contains("mail") && detail.contains("applied"),
        "{detail}"
    );
    browser.screenshot("05-follower-detail").await;
}

async fn roll_out_in_two_waves(browser: &Browser, url: &str, machines: &[Machine]) {
    browser.goto_hash("#/settings").await;
    let host = browser.find("input[name=MAIL_HOST]").await;
    browser.type_into(&host, "smtp3.pryv.me").await;
    browser.click(&browser.button("Review changes").await).await;
    browser.wait_text("[data-review]", "smtp3").await;
    browser
        .click(&browser.button("Save and roll out…").await)
        .await;
    browser
        .wait_text("main[data-screen=rollouts]", "Where each machine lands")
        .await;
    let which = browser.find("input[name=wave-0-value]").await;
    browser.type_into(&which, "core-1").await;
    let planned = browser.wait_text("[data-placement]", "Wave 2").await;
    assert!(
        planned.contains("Wave 1\ncore-1") && planned.contains("Wave 2\ncore-2"),
        "{planned}"
    );
    browser.screenshot("06-rollout-builder").await;
    browser.click(&browser.button("Start rollout").await).await;
    let done = browser
        .wait_text("main[data-screen=rollout] h1", "done")
        .await;
    assert!(done.contains("Rollout"), "{done}");
    let detail = browser.text("main").await;
    assert!(
        detail.contains("Wave 1") && detail.contains("Wave 2"),
        "{detail}"
    );
    browser.screenshot("07-rollout-done").await;
    for machine in machines {
        assert_eq!(mail(machine), "host: smtp3.pryv.me\n", "{}", machine.name);
    }
    let rollouts = api(format!("{url}/admin/rollouts")).await;
    assert_eq!(
        rollouts["rollouts"][0]["waves"].as_array().unwrap().len(),
        2
    );
}

/// Another admin saves while this one edits: the save is refused as a conflict, nothing is overwritten.
async fn a_stale_edit_is_a_conflict(browser: &Browser, url: &str) {
    browser.goto_hash("#/settings").await;
    let domain = browser.find("input[name=DOMAIN]").await;
    browser.type_into(&domain, "console.example").await;
    let (status, _) = put_settings(
        url,
        json!({"settings": {"MAIN": {"settings": {"DOMAIN": {"value": "other-admin.example"}}}}}),
    )
    .await;
    assert_eq!(status, 200);
    browser.click(&browser.button("Review changes").await).await;
    browser.wait_text("[data-review]", "console.example").await;
    browser.click(&browser.button("Save").await).await;
    browser.wait_text("[data-conflict]", "Conflict").await;
    browser.screenshot("08-settings-conflict").await;
    let settings = api(format!("{url}/admin/settings")).await;
    assert_eq!(
        settings["settings"]["MAIN"]["settings"]["DOMAIN"]["value"],
        "other-admin.example"
    );
}

async fn put_settings(url: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .put(format!("{url}/admin/settings"))
        .header("authorization", ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn roll_back_from_the_history(browser: &Browser, url: &str) {
    browser.goto_hash("#/history").await;
    browser
        .wait_text("main[data-screen=history]", "mail moves to smtp2")
        .await;
    browser.click(&browser.button("Compare").await).await;
    browser
        .wait_text("main[data-screen=history]", "other-admin.example")
        .await;
    let first = browser.find("tr[data-revision='1'] button").await;
    browser.click(&first).await;
    let preview = browser
        .wait_text("[data-rollback]", "Roll back to revision 1")
        .await;
    assert!(preview.contains("+host: smtp.pryv.me"), "{preview}");
    browser.screenshot("09-history-rollback").await;
    browser
        .click(&browser.button("Confirm rollback").await)
        .await;
    pryv_testkit::eventually(
        "the rollback is a revision",
        Duration::from_secs(10),
        || async {
            let history = api(format!("{url}/admin/settings/history")).await;
            (history["revisions"][0]["message"] == "rollback to revision 1").then_some(())
        },
    )
    .await;
}

async fn create_an_admin_user(browser: &Browser, url: &str) {
    browser.goto_hash("#/users").await;
    let name = browser.find("input[name=new-username]").await;
    browser.type_into(&name, "console-reader").await;
    browser
        .click(&browser.find("input[value='settings:read']").await)
        .await;
    browser.click(&browser.button("Create user").await).await;
    let shown = browser.wait_text("[role=status]", "shown once").await;
    assert!(shown.contains("console-reader"), "{shown}");
    let password = browser.text("[data-password]").await;
    assert!(password.len() >= 12, "a generated password: {password:?}");
    browser.screenshot("10-users").await;
    let login: Value = reqwest::Client::new()
        .post(format!("{url}/auth/login"))
        .json(&json!({"username": "console-reader", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        login["token"].is_string(),
        "the shown password logs in: {login}"
    );
}

async fn the_other_screens(browser: &Browser) {
    for (hash, name, needle) in [
        ("#/audit", "11-audit", "settings-update"),
        ("#/migrations", "12-migrations", "platformTemplate"),
        ("#/platform-users", "13-platform-users", "Look up"),
        ("#/account", "14-account", "Change password"),
        ("#/overview", "15-overview-after", "rollback to revision 1"),
    ] {
        browser.goto_hash(hash).await;
        browser.wait_text("main", needle).await;
        browser.screenshot(name).await;
    }
    browser.resize(390, 844).await;
    browser.goto_hash("#/followers").await;
    browser.wait_text("main", "core-2").await;
    let overflow = browser
        .run(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            json!([]),
        )
        .await;
    assert!(
        overflow.as_i64().unwrap_or(1) <= 1,
        "no horizontal scroll at a phone width: {overflow}"
    );
    browser.screenshot("16-followers-phone").await;
}

/// Logged out, then wrong passwords until the leader refuses for a while: the login says how long and
/// keeps its button disabled meanwhile.
async fn too_many_failed_logins_count_down(browser: &Browser) {
    browser.resize(1280, 900).await;
    browser.goto_hash("#/account").await;
    browser.click(&browser.button("Log out").await).await;
    browser.wait_text("main[data-screen=login]", "Log in").await;
    let nav = browser
        .run(
            "return document.getElementById('nav').offsetParent === null;",
            json!([]),
        )
        .await;
    assert_eq!(nav, true, "no navigation once logged out");
    let username = browser.find("input[name=username]").await;
    browser.type_into(&username, "initial_user").await;
    let password = browser.find("input[name=password]").await;
    browser.type_into(&password, "wrong-password").await;
    let locked = pryv_testkit::eventually(
        "the leader's Retry-After",
        Duration::from_secs(30),
        || async {
            let text = browser.text(".login").await;
            if text.contains("Too many attempts") {
                return Some(text);
            }
            let disabled = browser
                .run(
                    "return document.querySelector('.login button').disabled;",
                    json!([]),
                )
                .await;
            if disabled == false {
                let button = browser.button("Log in").await;
                browser.click(&button).await;
            }
            None
        },
    )
    .await;
    assert!(locked.contains("try again in"), "{locked}");
    let disabled = browser
        .run(
            "return document.querySelector('.login button').disabled;",
            json!([]),
        )
        .await;
    assert_eq!(disabled, true, "the button waits for the countdown");
    browser.screenshot("17-login-throttled").await;
}

/// A zone with one override, made in the zones screen: reviewed, saved as a revision.
async fn add_a_zone(browser: &Browser, url: &str) {
    browser.goto_hash("#/zones").await;
    let name = browser.find("input[name=new-zone]").await;
    browser.type_into(&name, "eu").await;
    browser.click(&browser.button("Add zone").await).await;
    browser.wait_text("[data-zone=eu]", "Zone eu").await;
    let setting = browser.find("select[name=eu-new-setting]").await;
    let mut element = serde_json::Map::new();
    element.insert(pryv_e2e::webdriver::ELEMENT.to_owned(), json!(setting));
    browser
        .run("arguments[0].value = 'MAIL_HOST';", json!([element]))
        .await;
    let value = browser.find("input[name=eu-new-value]").await;
    browser.type_into(&value, "smtp.eu.example").await;
    browser.click(&browser.button("Add override").await).await;
    browser
        .click(&browser.button("Review zone changes").await)
        .await;
    browser.wait_text("[data-review]", "Review").await;
    let before = browser.text("main h1").await;
    browser.click(&browser.button("Save zones").await).await;
    // Saved: the screen is drawn again at the new revision, the override an input of zone eu.
    pryv_testkit::eventually("the zones at the new revision", Duration::from_secs(15), || async {
        let heading = browser.text("main[data-screen=zones] h1").await;
        let value = browser
            .run("const i = document.querySelector('input[name=\"eu-MAIL_HOST\"]'); return i ? i.value : '';", json!([]))
            .await;
        (heading.starts_with("Zones (revision") && heading != before && value == "smtp.eu.example").then_some(())
    })
    .await;
    browser.screenshot("11-zones").await;
    let zones = api(format!("{url}/admin/zones")).await;
    assert_eq!(
        zones["zones"]["eu"]["MAIL"]["settings"]["MAIL_HOST"]["value"], "smtp.eu.example",
        "{zones}"
    );
}
