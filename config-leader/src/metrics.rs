//! The leader's Prometheus metrics: names (all `pryv_config_leader_*`, base units, `_total` counters) and their
//! descriptions; a leaf module (the scrape-time gauges are set by `routes::scrape`). Labels are bounded: routes are
//! patterns, roles come from the templates folder, outcomes are fixed words; follower names (never keys) only
//! while the fleet has at most [`PER_FOLLOWER_LIMIT`] followers. See docs/METRICS.md.

pub const HTTP_REQUESTS: &str = "pryv_config_leader_http_requests_total";
pub const CONF_DURATION: &str = "pryv_config_leader_conf_request_duration_seconds";
/// 1 while this replica cannot reach a quorum of its etcd store (etcd mode).
pub const STORE_ISOLATED: &str = "pryv_config_leader_store_isolated";
/// 1 on the replica elected to drive rollouts (etcd mode).
pub const ELECTED: &str = "pryv_config_leader_elected";
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
pub const SETTINGS_GIT_BEHIND: &str = "pryv_config_leader_settings_git_behind_revisions";
pub const SETTINGS_GIT_BRANCH_PROBLEM: &str = "pryv_config_leader_settings_git_branch_problem";
/// The problems `SETTINGS_GIT_BRANCH_PROBLEM` reports, one series each.
pub const BRANCH_PROBLEMS: [&str; 3] = ["refused", "diverged", "unreachable"];

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
        ELECTED,
        "1 on the leader replica elected to drive rollouts and trim the audit log (etcd mode)"
    );
    describe_gauge!(
        STORE_ISOLATED,
        "1 while this leader replica cannot reach a quorum of its etcd store (it refuses changes)"
    );
    describe_gauge!(
        ROLE_RENDER_FAILING,
        "1 while a role's templates or settings do not render (the last good tree is served)"
    );
    describe_fleet_and_admin();
}

/// The fleet's, the admin API's and the settings repository's metrics.
fn describe_fleet_and_admin() {
    use metrics::{Unit, describe_counter, describe_gauge};
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
        "Settings changes by kind (update, rollback, migration, git: a commit of the followed branch)"
    );
    describe_gauge!(
        SETTINGS_GIT_BEHIND,
        "Settings revisions not yet committed to the settings repository (gitRepoPath); retried"
    );
    describe_gauge!(
        SETTINGS_GIT_BRANCH_PROBLEM,
        "1 while the followed settings branch (settings.git) has this problem: refused (its tip does not render), diverged, unreachable"
    );
}
