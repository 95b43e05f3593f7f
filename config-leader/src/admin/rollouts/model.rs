//! What a rollout is: the `POST /admin/notify` strategy, the waves and their members, and the pins `GET /conf`
//! obeys. Saved as JSON in SQLite.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::FollowerEntry;

pub(super) const DEFAULT_WAVE_TIMEOUT_S: u64 = 600;

/// The rollout part of a `POST /admin/notify` body.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    /// Waves in order; followers no wave names form a last wave.
    #[serde(default)]
    pub waves: Option<Vec<WaveSpec>>,
    /// Shorthand: a first wave of this many followers, then waves of `batchSize`.
    #[serde(default)]
    pub canary: Option<usize>,
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Pause between two waves.
    #[serde(default)]
    pub pause_seconds: Option<u64>,
    /// `unhealthy` (the default, and the only choice): stop at the first follower not healthy.
    #[serde(default)]
    pub stop_on: Option<String>,
    /// How long a wave may take before the rollout stops (default 600).
    #[serde(default)]
    pub wave_timeout_seconds: Option<u64>,
}

impl Strategy {
    pub fn is_set(&self) -> bool {
        self.waves.is_some() || self.canary.is_some() || self.batch_size.is_some()
    }
}

/// One wave: named followers (name, URL, or a URL pattern with `*`), every follower of some roles or of some
/// zones, or a share of the followers not yet placed.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum WaveSpec {
    Followers { followers: Vec<String> },
    Roles { roles: Vec<String> },
    Zones { zones: Vec<String> },
    Percent { percent: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutState {
    Running,
    /// Stopped by an unhealthy follower or a timeout; later waves held back until resume or abort.
    Stopped,
    Done,
    Aborted,
    /// A newer notification replaced it.
    Superseded,
}

impl RolloutState {
    pub fn holds(self) -> bool {
        matches!(self, Self::Running | Self::Stopped)
    }
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Done => "done",
            Self::Aborted => "aborted",
            Self::Superseded => "superseded",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MemberState {
    Pending,
    Notified,
    /// The notification did not arrive (a follower that long-polls still gets the revision).
    Unreachable,
    Healthy,
    Reverted,
    Incomplete,
    Skipped,
    TimedOut,
}

impl MemberState {
    pub(super) fn is_final(self) -> bool {
        matches!(
            self,
            Self::Healthy | Self::Reverted | Self::Incomplete | Self::Skipped | Self::TimedOut
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaveMember {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The variant it is served (`core@eu`), when not the plain role: the key of its target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub state: MemberState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl WaveMember {
    /// A follower is known to a rollout by its URL and name (never by its key).
    pub(super) fn is(&self, follower: &FollowerEntry) -> bool {
        self.url == follower.url && self.name == follower.name
    }

    pub(super) fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.url)
    }

    /// The key of its target revision in [`Rollout::targets`] (rollouts saved before zones: its role).
    pub(super) fn target_key(&self) -> &str {
        self.variant.as_deref().unwrap_or(&self.role)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    pub followers: Vec<WaveMember>,
    pub started: Option<i64>,
    pub finished: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub id: i64,
    pub state: RolloutState,
    pub author: String,
    pub started: i64,
    pub finished: Option<i64>,
    /// The revision each variant rolls out, by variant key (the role for followers without zone or own
    /// variables).
    pub targets: BTreeMap<String, String>,
    pub waves: Vec<Wave>,
    /// Index of the wave in progress (or where it stopped).
    pub current_wave: usize,
    pub pause_seconds: u64,
    pub wave_timeout_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<String>>,
    #[serde(default)]
    pub confirm_removals: bool,
    /// Why it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Which tree `GET /conf` gives a follower while a rollout concerns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// Its wave has not started: it keeps what it runs.
    Hold,
    /// Its wave started: this revision, not a newer one.
    Target(String),
}
