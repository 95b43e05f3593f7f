//! What `GET /status` shows: the leader, the last fetch, the applied revision and the last restart of each
//! service with its outcome.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// Snapshot served as JSON.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The leader this follower talks to now (the last one that answered, with `leader.urls`).
    pub leader_url: String,
    /// Unix seconds of the last successful fetch.
    pub last_fetch: Option<u64>,
    /// Why the last fetch failed, if it did (cleared on success).
    pub last_fetch_error: Option<String>,
    /// The revision wholly on disk: every file of it written. Never a revision only partly applied.
    pub revision: Option<String>,
    /// The leader's settings revision that tree was rendered from, when the leader says it: no tree of an
    /// older one is taken (from a replica that missed changes).
    pub store_revision: Option<i64>,
    /// Unix seconds of the last apply that wrote every file.
    pub last_apply: Option<u64>,
    /// Why the last fetched tree is not (wholly) on disk: refused files, a refused tree. Cleared when a tree
    /// is applied in full; until then every sync fetches and tries again.
    pub last_apply_error: Option<String>,
    /// The revision of that incomplete tree.
    pub failed_revision: Option<String>,
    /// Services (and `(project)` for `up -d`) whose restart is queued or running; persisted across restarts.
    pub pending_restarts: Vec<String>,
    pub restarts: BTreeMap<String, RestartRecord>,
    /// The last health check after restarts (absent until one ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthRecord>,
    /// A revision this follower applied, found unhealthy and reverted: it is not applied again (a newer
    /// one is). Kept across restarts.
    pub reverted_revision: Option<String>,
    /// The last apply report, and whether it still waits to reach the leader.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_report: Option<pryv_protocol::ApplyReport>,
    pub report_pending: bool,
}

/// The health gate of one apply: `checking`, then `healthy`, `reverted` or `revert-failed`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HealthRecord {
    pub revision: Option<String>,
    pub outcome: String,
    pub services: Vec<String>,
    /// Unix seconds when the check started and when it ended.
    pub started: u64,
    pub finished: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<pryv_protocol::UnhealthyService>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// The outcome of the last restart command that concerned a service.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestartRecord {
    pub at: u64,
    pub action: String,
    pub ok: bool,
    /// Exit status and stderr when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Shared, lock-protected status.
#[derive(Debug, Default)]
pub struct StatusStore(Mutex<Status>);

impl StatusStore {
    pub fn new(leader_url: String) -> Self {
        Self(Mutex::new(Status {
            leader_url,
            ..Status::default()
        }))
    }

    pub fn update(&self, change: impl FnOnce(&mut Status)) {
        change(
            &mut self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }

    pub fn snapshot(&self) -> Status {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
