//! Watches the templates folder (recursively) and the folder of `platform.yml`, and marks the rendered trees
//! stale on a change of a template or of `platform.yml` itself, so hand edits show without a restart. The
//! folder of `platform.yml` is watched rather than the file because editors save by renaming onto it; other
//! files in that folder (logs, the database, backups) are not changes of the configuration.

use std::path::Path;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use crate::store::TreeStore;

/// What keeps change detection alive; dropping it stops the watcher.
pub enum ChangeWatch {
    Notify(RecommendedWatcher),
    /// Fallback when the OS watcher cannot start (e.g. inotify limits): re-render at most once a second.
    Polling(tokio::task::JoinHandle<()>),
}

/// Starts watching; falls back to marking trees stale every second if the OS watcher fails.
pub fn start(
    store: &TreeStore,
    templates: &Path,
    platform_config: &Path,
    shutdown: &CancellationToken,
) -> ChangeWatch {
    match notify_watcher(store, templates, platform_config) {
        Ok(watcher) => ChangeWatch::Notify(watcher),
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch files; checking for changes every second instead");
            let store = store.clone();
            let shutdown = shutdown.clone();
            ChangeWatch::Polling(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tick.tick() => store.invalidate(),
                    }
                }
            }))
        }
    }
}

/// Whether `event` touches a template or `platform.yml` (as itself or as a rename's source or target). An
/// event without paths (a rescan) may hide anything, so it counts.
fn concerns(event: &notify::Event, templates: &Path, platform_file: &Path) -> bool {
    let platform_name = platform_file.file_name();
    event.paths.is_empty()
        || event.paths.iter().any(|path| {
            // Only the platform folder is watched besides the templates: its file name is enough.
            path.starts_with(templates) || path.file_name() == platform_name
        })
}

fn notify_watcher(
    store: &TreeStore,
    templates: &Path,
    platform_config: &Path,
) -> notify::Result<RecommendedWatcher> {
    let store = store.clone();
    let templates_root = templates.to_owned();
    let platform_file = platform_config.to_owned();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
            Ok(event) if concerns(&event, &templates_root, &platform_file) => store.invalidate(),
            Ok(_) => {}
            // A lost event (queue overflow) may hide a change: re-render to be safe.
            Err(_) => store.invalidate(),
        })?;
    watcher.watch(templates, RecursiveMode::Recursive)?;
    let platform_dir = platform_config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    watcher.watch(platform_dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        let mut event = notify::Event::new(kind);
        for path in paths {
            event = event.add_path(path.into());
        }
        event
    }

    #[test]
    fn only_templates_and_the_platform_file_count() {
        let templates = Path::new("/p/data");
        let platform = Path::new("/p/conf/platform.yml");
        let write = EventKind::Modify(ModifyKind::Any);
        assert!(concerns(
            &event(write, &["/p/conf/platform.yml"]),
            templates,
            platform
        ));
        assert!(concerns(
            &event(write, &["/p/data/core/x.yml"]),
            templates,
            platform
        ));
        assert!(!concerns(
            &event(write, &["/p/conf/leader.log"]),
            templates,
            platform
        ));
        assert!(!concerns(
            &event(
                EventKind::Create(CreateKind::File),
                &["/p/conf/.pryv-tmp-abc"]
            ),
            templates,
            platform
        ));
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(concerns(
            &event(
                rename,
                &["/p/conf/.platform.yml.swp", "/p/conf/platform.yml"]
            ),
            templates,
            platform
        ));
        assert!(concerns(&event(write, &[]), templates, platform), "rescan");
    }
}
