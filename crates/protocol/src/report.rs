//! Body of `POST /conf/report` (follower → leader): how one apply ended. Sent after the restarts and the
//! health check, so the leader (and a rollout waiting on a wave) knows what each machine really runs.

use serde::{Deserialize, Serialize};

use crate::RejectedFile;

/// How an apply ended, as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum ApplyOutcome {
    /// Every file on disk; nothing was restarted or no health check is configured.
    Applied,
    /// The leader's tree was already on disk.
    Unchanged,
    /// Every file on disk and every restarted service healthy.
    Healthy,
    /// A restarted service stayed unhealthy: the previous files were put back and the services restarted.
    Reverted,
    /// Some files could not be written (or the tree was refused whole); the revision is not taken.
    Incomplete,
    /// The tree is a revision this follower reverted before: not applied again.
    Skipped,
}

impl ApplyOutcome {
    /// The machine runs the revision it was given and nothing is wrong.
    pub fn is_good(self) -> bool {
        matches!(self, Self::Applied | Self::Unchanged | Self::Healthy)
    }
}

/// A service found unhealthy after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UnhealthyService {
    pub service: String,
    /// Its last state (`exited (1)`, `restarting`, `unhealthy`, `probe failed: ...`).
    pub state: String,
    /// The last lines of its container's log.
    #[serde(default)]
    pub log_tail: Vec<String>,
}

/// One apply, start to end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    /// The leader's revision this apply was about.
    pub revision: Option<String>,
    /// The revision wholly on disk afterwards (the previous one after a revert).
    pub current_revision: Option<String>,
    pub outcome: ApplyOutcome,
    #[serde(default)]
    pub written: Vec<String>,
    #[serde(default)]
    pub removed: Vec<String>,
    #[serde(default)]
    pub rejected: Vec<RejectedFile>,
    /// Services restarted (`(project)` for `up -d`).
    #[serde(default)]
    pub restarted: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<UnhealthyService>,
    #[serde(default)]
    pub errors: Vec<String>,
    /// Milliseconds spent writing, restarting and waiting for health.
    #[serde(default)]
    pub apply_ms: u64,
    #[serde(default)]
    pub restart_ms: u64,
    #[serde(default)]
    pub health_ms: u64,
    /// Unix seconds when the apply ended.
    pub at: u64,
}
