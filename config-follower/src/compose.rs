//! The machine's compose file: the shared model (`pryv-compose`), also used by the leader's preview.

pub use pryv_compose::*;

/// The machine's compose project (no services when the file is missing or unreadable, which is logged).
pub fn machine_project(data_folder: &std::path::Path) -> Project {
    Project::load(data_folder).unwrap_or_else(|err| {
        tracing::warn!(error = %err, "cannot read the compose file; no service will be restarted");
        Project::default()
    })
}
