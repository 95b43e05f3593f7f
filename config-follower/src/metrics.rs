//! The follower's Prometheus metrics (all `pryv_config_follower_*`, base units, `_total` counters) and the
//! gauges computed at scrape time from its status. Labels are bounded: outcomes are fixed words, services come
//! from the machine's compose file. See docs/METRICS.md.

use crate::status::StatusStore;

pub const FETCHES: &str = "pryv_config_follower_fetches_total";
pub const FETCH_DURATION: &str = "pryv_config_follower_fetch_duration_seconds";
pub const FILES: &str = "pryv_config_follower_files_total";
pub const APPLIES: &str = "pryv_config_follower_applies_total";
pub const RESTARTS: &str = "pryv_config_follower_restarts_total";
pub const SINCE_APPLY: &str = "pryv_config_follower_seconds_since_last_apply";
pub const LAST_APPLY: &str = "pryv_config_follower_last_apply_timestamp_seconds";
pub const REVISION: &str = "pryv_config_follower_applied_revision_info";
pub const WATCHER_EVENTS: &str = "pryv_config_follower_watcher_events_total";
pub const LEADER_REACHABLE: &str = "pryv_config_follower_leader_reachable";
pub const PENDING_RESTARTS: &str = "pryv_config_follower_pending_restarts";

/// Describes every metric once (HELP lines).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    pryv_daemon::metrics::install();
    describe_counter!(
        FETCHES,
        "Fetches of the leader's tree by outcome (changed, not_modified, failed)"
    );
    describe_histogram!(
        FETCH_DURATION,
        Unit::Seconds,
        "Time of a fetch from the leader"
    );
    describe_counter!(
        FILES,
        "Files by result of an apply (written, unchanged, removed, rejected)"
    );
    describe_counter!(
        APPLIES,
        "Applies by outcome (complete, incomplete, refused)"
    );
    describe_counter!(
        RESTARTS,
        "Compose commands by service ((project) for up -d) and outcome (ok, failed)"
    );
    describe_gauge!(
        SINCE_APPLY,
        Unit::Seconds,
        "Seconds since a tree was last applied in full"
    );
    describe_gauge!(
        LAST_APPLY,
        Unit::Seconds,
        "Unix time of the last apply in full"
    );
    describe_gauge!(REVISION, "1 for the revision wholly on disk");
    describe_counter!(
        WATCHER_EVENTS,
        "Operators' edits under */conf/ seen by the watcher"
    );
    describe_gauge!(
        LEADER_REACHABLE,
        "1 when the last fetch reached the leader, 0 when it failed"
    );
    describe_gauge!(
        PENDING_RESTARTS,
        "Services whose restart is queued or running"
    );
}

/// Revision series set at the previous scrape, zeroed when they no longer apply.
static PREVIOUS_REVISION: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Sets the gauges computed at scrape time.
pub fn refresh(status: &StatusStore) {
    let status = status.snapshot();
    if let Some(at) = status.last_apply {
        metrics::gauge!(LAST_APPLY).set(at as f64);
        metrics::gauge!(SINCE_APPLY).set(pryv_daemon::now_unix().saturating_sub(at) as f64);
    }
    let mut previous = PREVIOUS_REVISION
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(old) = previous.take()
        && status.revision.as_ref() != Some(&old)
    {
        metrics::gauge!(REVISION, "revision" => old).set(0.0);
    }
    if let Some(revision) = &status.revision {
        metrics::gauge!(REVISION, "revision" => revision.clone()).set(1.0);
        *previous = Some(revision.clone());
    }
    metrics::gauge!(PENDING_RESTARTS).set(status.pending_restarts.len() as f64);
}
