//! Watching `<dataFolder>/*/conf/` so an operator's edit (even a bare `touch`) restarts the services that mount
//! the file, debounced. Service folders created later are picked up. The follower's own writes are recognised
//! by their fingerprint and ignored: `/notify` already restarts for them.
//!
//! Only `conf/` folders are watched recursively; data and log folders (databases) are never watched.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio_util::sync::CancellationToken;

use crate::apply::OwnWrites;
use crate::error::Error;
use crate::restart::{RestartJob, Restarter};
use crate::state_dir::StateDir;

/// Where the operator's choice (`watch-config --no-hup` / `--stop-watch`) is kept across restarts.
const SWITCH_FILE: &str = "watch.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct SwitchState {
    enabled: bool,
}

/// What the watcher reads: the machine's folder, the debounce, and where an edit goes (the restart queue),
/// minus the follower's own writes.
#[derive(Clone)]
pub struct Watched {
    pub data: PathBuf,
    pub debounce: Duration,
    pub restarter: Restarter,
    pub own_writes: Arc<OwnWrites>,
}

/// Turns the watcher on and off while the follower runs; the choice is persisted in the bookkeeping folder
/// and wins over `watch.enabled` at the next start.
pub struct WatchSwitch {
    /// The running watcher's stop token; held across a switch so two switches never interleave.
    running: tokio::sync::Mutex<Option<CancellationToken>>,
    on: AtomicBool,
    state: StateDir,
    watched: Watched,
}

impl WatchSwitch {
    pub fn new(watched: Watched) -> Self {
        Self {
            running: tokio::sync::Mutex::new(None),
            on: AtomicBool::new(false),
            state: StateDir::of(&watched.data),
            watched,
        }
    }

    /// The persisted choice, if the operator made one (an unreadable one is logged and not followed).
    /// Blocking: start-up.
    #[allow(clippy::disallowed_methods)]
    pub fn persisted(&self) -> Option<bool> {
        match self.state.load::<SwitchState>(SWITCH_FILE) {
            Ok(choice) => choice.map(|s| s.enabled),
            Err(err) => {
                tracing::warn!(error = %err, "unreadable watcher switch; using watch.enabled");
                None
            }
        }
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::SeqCst)
    }

    /// Starts or stops the watcher (a no-op when already so); `persist` records the choice first.
    #[allow(clippy::disallowed_methods)] // the record is saved through the records' async door
    pub async fn set(
        &self,
        enabled: bool,
        persist: bool,
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        let mut running = self.running.lock().await;
        if persist {
            self.state
                .call(move |s| s.save(SWITCH_FILE, &SwitchState { enabled }))
                .await?;
        }
        match (enabled, running.is_some()) {
            (true, false) => {
                let token = shutdown.child_token();
                let (watched, stop) = (self.watched.clone(), token.clone());
                tokio::task::spawn_blocking(move || start(watched, stop)).await??;
                *running = Some(token);
                self.on.store(true, Ordering::SeqCst);
            }
            (false, true) => {
                if let Some(token) = running.take() {
                    token.cancel();
                }
                self.on.store(false, Ordering::SeqCst);
                tracing::info!("stopped watching */conf/");
            }
            _ => {}
        }
        Ok(())
    }
}

/// What the watcher's thread receives: the debouncer's events, or the order to stop.
enum Message {
    Events(DebounceEventResult),
    Stop,
}

/// Sends [`Message::Stop`] when dropped: when the stop token fires, and also when the runtime holding the
/// waiting task goes away, so the thread never outlives its follower.
struct StopOnDrop(std::sync::mpsc::Sender<Message>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(Message::Stop);
    }
}

/// Sets the watches up and starts the watcher's thread (file system calls on every event: it is not an
/// async task). Blocking: called through `spawn_blocking`, inside the runtime (it spawns the stop task).
#[allow(clippy::disallowed_methods)]
fn start(watched: Watched, shutdown: CancellationToken) -> Result<(), Error> {
    let data = watched.data.clone();
    let (tx, rx) = std::sync::mpsc::channel::<Message>();
    let events = tx.clone();
    let mut debouncer = new_debouncer(watched.debounce, None, move |result| {
        let _ = events.send(Message::Events(result));
    })
    .map_err(|err| Error::Internal(format!("cannot start the file watcher: {err}")))?;
    std::fs::create_dir_all(&data).map_err(|source| Error::Io {
        action: "create",
        path: data.clone(),
        source,
    })?;
    debouncer
        .watch(&data, RecursiveMode::NonRecursive)
        .map_err(|err| Error::Internal(format!("cannot watch {}: {err}", data.display())))?;
    for service in service_dirs(&data) {
        watch_service(&mut debouncer, &service);
    }
    std::thread::Builder::new()
        .name("conf-watch".into())
        .spawn(move || watch_loop(&watched, debouncer, &rx))
        .map_err(|err| Error::Internal(format!("cannot start the file watcher's thread: {err}")))?;
    tokio::spawn(async move {
        let _stop = StopOnDrop(tx);
        shutdown.cancelled().await;
    });
    tracing::info!(folder = %data.display(), "watching */conf/ for changes");
    Ok(())
}

/// The watcher's thread: new folders get watches, an operator's edit queues the restart of the services
/// mounting it.
#[allow(clippy::disallowed_methods)]
fn watch_loop(watched: &Watched, mut debouncer: Watcher, rx: &std::sync::mpsc::Receiver<Message>) {
    let data = &watched.data;
    while let Ok(Message::Events(result)) = rx.recv() {
        let events = match result {
            Ok(events) => events,
            Err(errors) => {
                for err in errors {
                    tracing::warn!(error = %err, "file watcher error");
                }
                continue;
            }
        };
        let mut changed: Vec<PathBuf> = Vec::new();
        for event in events.iter().filter(|e| !is_read_only(&e.kind)) {
            for path in &event.paths {
                // Logged once the watches are in place, so the line means "edits here are seen now".
                if path.parent() == Some(data.as_path()) && path.is_dir() {
                    watch_service(&mut debouncer, path);
                    tracing::info!(folder = %path.display(), "watching a new service folder");
                } else if is_conf_dir(data, path) && path.is_dir() {
                    watch_or_warn(&mut debouncer, path, RecursiveMode::Recursive);
                    tracing::info!(folder = %path.display(), "watching a new conf folder");
                }
                if is_operator_change(data, path, &watched.own_writes) && !changed.contains(path) {
                    changed.push(path.clone());
                }
            }
        }
        if changed.is_empty() {
            continue;
        }
        metrics::counter!(crate::metrics::WATCHER_EVENTS).increment(changed.len() as u64);
        let services = crate::compose::machine_project(data).affected(&changed);
        tracing::info!(files = ?changed, services = ?services, "configuration edited on this machine");
        // Runs even if it cannot be saved (the failure is logged by the queue).
        let _ = watched.restarter.request_blocking(RestartJob {
            up: false,
            services,
        });
    }
}

// One listing of the data folder when the watcher starts or a folder appears.
#[allow(clippy::disallowed_methods)]
fn service_dirs(data: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !is_hidden(p))
                .collect()
        })
        .unwrap_or_default()
}

type Watcher = Debouncer<RecommendedWatcher, RecommendedCache>;

fn watch_or_warn(debouncer: &mut Watcher, path: &Path, mode: RecursiveMode) {
    if let Err(err) = debouncer.watch(path, mode) {
        tracing::warn!(path = %path.display(), error = %err, "cannot watch");
    }
}

/// A service folder (for a `conf/` created later) and its `conf/` tree.
fn watch_service(debouncer: &mut Watcher, service: &Path) {
    if is_hidden(service) {
        return;
    }
    watch_or_warn(debouncer, service, RecursiveMode::NonRecursive);
    let conf = service.join("conf");
    if conf.is_dir() {
        watch_or_warn(debouncer, &conf, RecursiveMode::Recursive);
    }
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Opening or reading a file (a container loading its configuration) is not a change.
fn is_read_only(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(
            AccessKind::Open(_)
                | AccessKind::Read
                | AccessKind::Close(AccessMode::Read | AccessMode::Execute | AccessMode::Any)
                | AccessKind::Any
                | AccessKind::Other
        )
    )
}

fn is_conf_dir(data: &Path, path: &Path) -> bool {
    path.strip_prefix(data).is_ok_and(|rel| {
        let parts: Vec<_> = rel.components().collect();
        parts.len() == 2 && parts[1].as_os_str() == "conf"
    })
}

/// A file under `<data>/<service>/conf/` that is not a temporary file, not a folder, and not as the follower
/// itself left it.
fn is_operator_change(data: &Path, path: &Path, own_writes: &OwnWrites) -> bool {
    let Ok(rel) = path.strip_prefix(data) else {
        return false;
    };
    let parts: Vec<_> = rel.components().collect();
    if parts.len() < 3 || parts[1].as_os_str() != "conf" || is_hidden(parts[0].as_os_str().as_ref())
    {
        return false;
    }
    let temporary = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(".pryv-tmp-"));
    !temporary && !path.is_dir() && !own_writes.is_own(path)
}
