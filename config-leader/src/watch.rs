//! Watches the templates folder (recursively) and the folder of `platform.yml`, and marks the rendered trees
//! stale on any change, so hand edits show without a restart. The folder of `platform.yml` is watched rather
//! than the file because editors save by renaming.

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

fn notify_watcher(
    store: &TreeStore,
    templates: &Path,
    platform_config: &Path,
) -> notify::Result<RecommendedWatcher> {
    let store = store.clone();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
            Ok(_) => store.invalidate(),
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
