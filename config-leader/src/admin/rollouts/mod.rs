//! Rollouts: a notification sent wave by wave. Each wave's followers are notified with the revision of the
//! rollout's target; the next wave starts only when every follower of this one reported that revision
//! healthy (after a pause). The first unhealthy, reverted or incomplete follower, or a wave that times out,
//! stops the rollout: the followers of later waves keep the revision they run (`GET /conf` holds them back)
//! until the operator resumes or aborts. A rollout is saved in SQLite at each step and picked up again when
//! the leader starts.
//!
//! `model` (the API and stored shapes), `plan` (followers into waves), `store` (the rollouts in force, their
//! pins, SQLite), `drive` (one task per running rollout).

mod drive;
mod model;
mod plan;
mod store;

pub use drive::{Drive, drive_while_elected};
pub use model::*;
pub(crate) use plan::matches as follower_matches;
pub use store::{HOLD_FLAG, Rollouts, SharedStart};
