//! The leader's Prometheus metrics: names (all `pryv_config_leader_*`, base units, `_total` counters) and the
//! gauges computed at scrape time from the fleet and the rendered trees. Labels are bounded: routes are
//! patterns, roles come from the templates folder, outcomes are fixed words; follower names (never keys) only
//! while the fleet has at most [`PER_FOLLOWER_LIMIT`] followers. See docs/METRICS.md.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::routes::AppState;

pub const HTTP_REQUESTS: &str = "pryv_config_leader_http_requests_total";
pub const CONF_DURATION: &str = "pryv_config_leader_conf_request_duration_seconds";
pub const CONF_BYTES: &str = "pryv_config_leader_conf_bytes_served_total";
pub const RENDERS: &str = "pryv_config_leader_renders_total";
pub const RENDER_DURATION: &str = "pryv_config_leader_render_duration_seconds";
pub const ROLE_REVISION: &str = "pryv_config_leader_role_revision_info";
pub const ROLE_RENDER_FAILING: &str = "pryv_config_leader_role_render_failing";
pub const FOLLOWERS: &str = "pryv_config_leader_followers";
pub const FOLLOWER_UP_TO_DATE: &str = "pryv_config_leader_follower_up_to_date";
pub const FOLLOWER_LAST_FETCH: &str = "pryv_config_leader_follower_last_fetch_timestamp_seconds";
pub const NOTIFICATIONS: &str = "pryv_config_leader_notifications_total";
pub const LOGINS: &str = "pryv_config_leader_admin_logins_total";
pub const SETTINGS_CHANGES: &str = "pryv_config_leader_settings_changes_total";
pub const ROLLOUTS: &str = "pryv_config_leader_rollouts";

/// A follower without a fetch for this long counts as silent.
pub const SILENT_AFTER_SECONDS: u64 = 600;
/// Per-follower series are exposed up to this fleet size; beyond, only the aggregates (cardinality).
pub const PER_FOLLOWER_LIMIT: usize = 200;

/// Describes every metric once (HELP lines), so a scrape shows them before their first event.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    pryv_daemon::metrics::install();
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route pattern and status code"
    );
    describe_histogram!(CONF_DURATION, Unit::Seconds, "Time to answer GET /conf");
    describe_counter!(
        CONF_BYTES,
        Unit::Bytes,
        "Bytes of rendered trees sent by GET /conf"
    );
    describe_counter!(
        RENDERS,
        "Renders of a role's tree, by role and outcome (ok, failed)"
    );
    describe_histogram!(
        RENDER_DURATION,
        Unit::Seconds,
        "Time to render a role's tree"
    );
    describe_gauge!(ROLE_REVISION, "1 for the revision each role serves now");
    describe_gauge!(
        ROLE_RENDER_FAILING,
        "1 while a role's templates or settings do not render (the last good tree is served)"
    );
    describe_gauge!(
        FOLLOWERS,
        "Followers by state: known, up_to_date, behind, silent (no fetch for 10 minutes)"
    );
    describe_gauge!(
        FOLLOWER_UP_TO_DATE,
        "1 when the follower fetched its role's current revision (small fleets only)"
    );
    describe_gauge!(
        FOLLOWER_LAST_FETCH,
        Unit::Seconds,
        "Unix time of the follower's last fetch (small fleets only)"
    );
    describe_counter!(
        NOTIFICATIONS,
        "Notifications sent to followers, by outcome (ok, failed)"
    );
    describe_counter!(
        LOGINS,
        "Admin logins by outcome (success, failure, throttled)"
    );
    describe_gauge!(
        ROLLOUTS,
        "Rollouts in force by state (running, stopped: held back by an unhealthy follower or a timeout)"
    );
    describe_counter!(
        SETTINGS_CHANGES,
        "Settings changes by kind (update, rollback, migration)"
    );
}

/// Series set at the previous scrape, so the ones that no longer apply are zeroed.
static PREVIOUS_REVISIONS: Mutex<Option<HashSet<(String, String)>>> = Mutex::new(None);

/// Sets the gauges computed at scrape time (never renders: only what is cached).
pub fn refresh(state: &AppState) {
    let revisions = state.store.cached_revisions();
    refresh_roles(state, &revisions);
    refresh_fleet(state, revisions);
    let (running, stopped) = state.admin.rollouts.held_counts();
    metrics::gauge!(ROLLOUTS, "state" => "running").set(running as f64);
    metrics::gauge!(ROLLOUTS, "state" => "stopped").set(stopped as f64);
}

fn refresh_roles(state: &AppState, revisions: &HashMap<String, String>) {
    let current: HashSet<(String, String)> = revisions
        .iter()
        .map(|(role, revision)| (role.clone(), revision.clone()))
        .collect();
    let mut previous = PREVIOUS_REVISIONS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (role, revision) in previous.iter().flatten() {
        if !current.contains(&(role.clone(), revision.clone())) {
            metrics::gauge!(ROLE_REVISION, "role" => role.clone(), "revision" => revision.clone())
                .set(0.0);
        }
    }
    for (role, revision) in &current {
        metrics::gauge!(ROLE_REVISION, "role" => role.clone(), "revision" => revision.clone())
            .set(1.0);
    }
    *previous = Some(current);
    drop(previous);

    let problems = state.store.problems();
    for role in revisions.keys().chain(problems.keys()) {
        let failing = if problems.contains_key(role) {
            1.0
        } else {
            0.0
        };
        metrics::gauge!(ROLE_RENDER_FAILING, "role" => role.clone()).set(failing);
    }
}

fn refresh_fleet(state: &AppState, revisions: HashMap<String, String>) {
    let current: HashMap<String, Option<String>> = revisions
        .into_iter()
        .map(|(role, revision)| (role, Some(revision)))
        .collect();
    let followers = state.admin.fleet.status(state.followers.all(), &current);
    let now = pryv_daemon::now_unix() as i64;
    let silent = |last: Option<i64>| last.is_none_or(|at| now - at > SILENT_AFTER_SECONDS as i64);
    let count = |keep: &dyn Fn(&crate::admin::fleet::FollowerStatus) -> bool| {
        followers.iter().filter(|f| keep(f)).count() as f64
    };
    metrics::gauge!(FOLLOWERS, "state" => "known").set(followers.len() as f64);
    metrics::gauge!(FOLLOWERS, "state" => "up_to_date").set(count(&|f| f.up_to_date));
    metrics::gauge!(FOLLOWERS, "state" => "behind").set(count(&|f| !f.up_to_date));
    metrics::gauge!(FOLLOWERS, "state" => "silent").set(count(&|f| silent(f.last_fetch)));
    if followers.len() <= PER_FOLLOWER_LIMIT {
        for follower in &followers {
            let name = follower
                .name
                .clone()
                .unwrap_or_else(|| follower.url.clone());
            let labels = [("follower", name), ("role", follower.role.clone())];
            metrics::gauge!(FOLLOWER_UP_TO_DATE, &labels).set(if follower.up_to_date {
                1.0
            } else {
                0.0
            });
            if let Some(at) = follower.last_fetch {
                metrics::gauge!(FOLLOWER_LAST_FETCH, &labels).set(at as f64);
            }
        }
    }
}
