//! The gauges computed at scrape time from the fleet and the rendered trees (never renders: only what is
//! cached). Lives with the router because it reads the whole `AppState`; the names are in `crate::metrics`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use super::AppState;
use crate::metrics::{BRANCH_PROBLEMS, SETTINGS_GIT_BEHIND, SETTINGS_GIT_BRANCH_PROBLEM};
use crate::metrics::{
    FOLLOWER_LAST_FETCH, FOLLOWER_UP_TO_DATE, FOLLOWERS, PER_FOLLOWER_LIMIT, ROLE_RENDER_FAILING,
    ROLE_REVISION, ROLLOUTS, SILENT_AFTER_SECONDS,
};

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
    refresh_repository(state);
}

/// The settings repository's gauges (zero without one, so the series always exist).
fn refresh_repository(state: &AppState) {
    let status = state.admin.repository.as_ref().map(|r| r.status());
    let behind = status.as_ref().map_or(0, |s| s.behind.max(0));
    metrics::gauge!(SETTINGS_GIT_BEHIND).set(behind as f64);
    let problem = status
        .as_ref()
        .and_then(|s| s.branch.as_ref())
        .map(|b| b.state.clone());
    for name in BRANCH_PROBLEMS {
        let on = if problem.as_deref() == Some(name) {
            1.0
        } else {
            0.0
        };
        metrics::gauge!(SETTINGS_GIT_BRANCH_PROBLEM, "problem" => name).set(on);
    }
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
