//! Restarting services through the compose tool. Requests go through one queue worked by one task: requests
//! that arrive while a command runs are merged, so a burst of changes gives one restart per service, and two
//! restarts never run at once.
//!
//! The queue is persisted (`.config-follower/pending-restarts.json`) before a request returns and until its
//! command has finished: a follower killed with files written but services not yet restarted restarts them
//! on its next start. On shutdown the running command is allowed to finish within the drain time.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::Command;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::compose::{CONF_ROOT_VAR, default_conf_root};
use crate::error::Error;
use crate::state_dir::StateDir;
use crate::status::{RestartRecord, StatusStore};
use pryv_daemon::now_unix;

/// Key under which `up -d` of the whole project is recorded in the status.
pub const PROJECT: &str = "(project)";
const PENDING_FILE: &str = "pending-restarts.json";

/// What to do: `up -d` the project (the compose file changed) and/or restart some services.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartJob {
    pub up: bool,
    pub services: BTreeSet<String>,
}

impl RestartJob {
    pub fn is_empty(&self) -> bool {
        !self.up && self.services.is_empty()
    }

    /// The services, with [`PROJECT`] first for `up -d`.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.services.iter().cloned().collect();
        if self.up {
            names.insert(0, PROJECT.to_owned());
        }
        names
    }

    fn merge(&mut self, other: RestartJob) {
        self.up |= other.up;
        self.services.extend(other.services);
    }
}

/// Work not yet done: `queued` waits for the worker, `running` is the command in progress, `intent` what an
/// apply in progress will ask for (written before its first file, replaced by the real request after).
#[derive(Debug, Default)]
struct Queue {
    queued: RestartJob,
    running: RestartJob,
    intent: RestartJob,
    /// Number of the last request merged into `queued` (see [`Ticket`]).
    queued_ticket: u64,
    last_ticket: u64,
    /// Bumped at every change: orders the saves (see [`Snapshot`]).
    version: u64,
}

/// A request's place in the queue: [`Restarter::done`] resolves once a command covering it has finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

impl Queue {
    fn outstanding(&self) -> RestartJob {
        let mut all = self.queued.clone();
        all.merge(self.running.clone());
        all.merge(self.intent.clone());
        all
    }
}

/// What was outstanding at one change of the queue, to be saved. Saves run outside the queue's lock (they
/// fsync); the version keeps the file from going back in time when two of them race.
struct Snapshot {
    version: u64,
    outstanding: RestartJob,
}

struct Shared {
    queue: Mutex<Queue>,
    /// The version of the last snapshot saved (or tried) and that attempt's failure: an older snapshot
    /// arriving later is not written, and answers as the newer one did.
    saved: Mutex<(u64, Option<Error>)>,
    wake: Notify,
    /// The ticket of the last finished command.
    finished: tokio::sync::watch::Sender<u64>,
    /// Where the outstanding work is persisted.
    state: StateDir,
    status: Arc<StatusStore>,
    /// The compose tool (`None` until detected: `docker compose`, else `docker-compose`).
    tool: Mutex<Option<Vec<String>>>,
    compose_file: PathBuf,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What is outstanding now (called under the queue's lock), shown on `/status` at once.
    fn snapshot(&self, queue: &mut Queue) -> Snapshot {
        queue.version += 1;
        let outstanding = queue.outstanding();
        self.status
            .update(|s| s.pending_restarts = outstanding.names());
        Snapshot {
            version: queue.version,
            outstanding,
        }
    }

    /// Saves a snapshot unless a newer one was saved already. A failure is logged and returned: the caller
    /// decides whether what it promised still holds. Blocking.
    fn save(&self, snapshot: Snapshot) -> Result<(), Error> {
        let mut saved = self
            .saved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if saved.0 >= snapshot.version {
            return match &saved.1 {
                None => Ok(()),
                Some(err) => Err(unsaved(err.replay())),
            };
        }
        #[allow(clippy::disallowed_methods)]
        // save runs on blocking threads only (see save_off_runtime)
        let result = if snapshot.outstanding.is_empty() {
            self.state.remove(PENDING_FILE)
        } else {
            self.state.save(PENDING_FILE, &snapshot.outstanding)
        };
        *saved = (snapshot.version, result.as_ref().err().map(Error::replay));
        result.map_err(|err| {
            tracing::error!(error = %err, "cannot save the pending restarts; a crash now would lose them");
            unsaved(err)
        })
    }

    async fn save_off_runtime(self: &Arc<Self>, snapshot: Snapshot) -> Result<(), Error> {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || shared.save(snapshot)).await?
    }
}

fn unsaved(err: Error) -> Error {
    Error::Unsaved {
        what: "the pending restarts",
        consequence: "a crash before they run would lose them",
        source: Box::new(err),
    }
}

/// The restarts a previous run left undone: none when there is no file; every service when the file exists but
/// cannot be read or parsed (what it owed is unknown, so everything is restarted to be safe).
// Start-up only (Follower::new runs on a blocking thread).
#[allow(clippy::disallowed_methods)]
fn load(state: &StateDir) -> RestartJob {
    match state.load(PENDING_FILE) {
        Ok(job) => job.unwrap_or_default(),
        Err(err) => {
            tracing::warn!(error = %err, "unreadable pending restarts; restarting every service to be safe");
            RestartJob {
                up: true,
                services: BTreeSet::new(),
            }
        }
    }
}

/// Handle to the restart queue.
#[derive(Clone)]
pub struct Restarter {
    shared: Arc<Shared>,
    worker: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Restarter {
    /// Starts the worker. `command` is the compose tool (`None` = detect `docker compose`, else
    /// `docker-compose`). Restarts persisted in `state` by an earlier run are queued first.
    pub fn spawn(
        command: Option<Vec<String>>,
        compose_file: PathBuf,
        state: &StateDir,
        timeout: Duration,
        status: Arc<StatusStore>,
        shutdown: CancellationToken,
    ) -> Self {
        let leftover = load(state);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            saved: Mutex::new((0, None)),
            wake: Notify::new(),
            finished: tokio::sync::watch::Sender::new(0),
            state: state.clone(),
            status,
            tool: Mutex::new(command),
            compose_file,
        });
        if !leftover.is_empty() {
            tracing::warn!(services = ?leftover.names(), "restarts left undone by the previous run; doing them now");
            let mut queue = shared.lock();
            queue.queued = leftover;
            // Ticket 1: a health check resumed at start waits for these restarts.
            queue.last_ticket = 1;
            queue.queued_ticket = 1;
            // Not saved again: the file on disk already holds these restarts.
            let _ = shared.snapshot(&mut queue);
            shared.wake.notify_one();
        }
        let restarter = Self {
            shared,
            worker: Arc::new(Mutex::new(None)),
        };
        let worker = tokio::spawn(work(restarter.clone(), timeout, shutdown));
        *restarter
            .worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(worker);
        restarter
    }

    /// Records (persisted) what an apply about to start will restart, so a crash during it loses nothing;
    /// `Err` when it could not be saved (the apply must then not start). Blocking: the apply's thread.
    pub fn announce(&self, job: RestartJob) -> Result<(), Error> {
        let snapshot = {
            let mut queue = self.shared.lock();
            queue.intent.merge(job);
            self.shared.snapshot(&mut queue)
        };
        self.shared.save(snapshot)
    }

    /// Queues a job (persisted before this returns) and replaces any announced intent. An empty job only
    /// clears the intent (its ticket is already done). The job runs even when it could not be saved; the
    /// second part says so, for callers that promised it was.
    pub async fn request(&self, job: RestartJob) -> (Ticket, Result<(), Error>) {
        let (ticket, snapshot) = self.enqueue(job);
        (ticket, self.shared.save_off_runtime(snapshot).await)
    }

    /// [`Restarter::request`] for blocking code (the `*/conf/` watcher's thread).
    pub fn request_blocking(&self, job: RestartJob) -> (Ticket, Result<(), Error>) {
        let (ticket, snapshot) = self.enqueue(job);
        (ticket, self.shared.save(snapshot))
    }

    fn enqueue(&self, job: RestartJob) -> (Ticket, Snapshot) {
        let mut queue = self.shared.lock();
        queue.intent = RestartJob::default();
        let wake = !job.is_empty();
        queue.queued.merge(job);
        let snapshot = self.shared.snapshot(&mut queue);
        if !wake {
            return (Ticket(0), snapshot);
        }
        queue.last_ticket += 1;
        queue.queued_ticket = queue.last_ticket;
        self.shared.wake.notify_one();
        (Ticket(queue.last_ticket), snapshot)
    }

    /// The ticket of the last request (what a job queued before now waits for).
    pub fn last_ticket(&self) -> Ticket {
        Ticket(self.shared.lock().last_ticket)
    }

    /// Waits until the command that covers `ticket` has finished; false if the worker stopped first.
    pub async fn done(&self, ticket: Ticket) -> bool {
        let mut finished = self.shared.finished.subscribe();
        finished.wait_for(|done| *done >= ticket.0).await.is_ok()
    }

    /// Runs a compose command (`ps`, ...) with the restart tool, outside the queue; its standard output.
    pub async fn query(
        &self,
        program: &[String],
        args: &[&str],
        timeout: Duration,
    ) -> Result<String, String> {
        run(
            program,
            &self.shared.compose_file,
            args,
            timeout,
            Log::Quiet,
        )
        .await
    }

    /// The compose tool in use (detected once).
    pub async fn tool(&self) -> Vec<String> {
        let configured = self
            .shared
            .tool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match configured {
            Some(tool) => tool,
            None => {
                let detected = detect_compose().await;
                *self
                    .shared
                    .tool
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(detected.clone());
                detected
            }
        }
    }

    /// Waits (at most `within`) for the worker to finish the command it is running after shutdown.
    pub async fn finish(&self, within: Duration) {
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(worker) = worker
            && tokio::time::timeout(within, worker).await.is_err()
        {
            tracing::warn!(
                "the restart command did not finish in time; it will be run again at the next start"
            );
        }
    }
}

async fn work(restarter: Restarter, timeout: Duration, shutdown: CancellationToken) {
    let shared = restarter.shared.clone();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = shared.wake.notified() => {}
        }
        loop {
            let (job, ticket) = {
                let mut queue = shared.lock();
                if queue.queued.is_empty() {
                    break;
                }
                queue.running = std::mem::take(&mut queue.queued);
                (queue.running.clone(), queue.queued_ticket)
            };
            let tool = restarter.tool().await;
            // Not cancelled by shutdown: a compose command cut in the middle leaves services half restarted.
            run_job(&tool, &shared.compose_file, timeout, &job, &shared.status).await;
            let snapshot = {
                let mut queue = shared.lock();
                queue.running = RestartJob::default();
                shared.snapshot(&mut queue)
            };
            // A failure leaves the finished job in the file: the next start runs it again (safe side).
            let _ = shared.save_off_runtime(snapshot).await;
            shared.finished.send_replace(ticket);
            if shutdown.is_cancelled() {
                // What is still queued stays persisted for the next start.
                return;
            }
        }
    }
}

async fn detect_compose() -> Vec<String> {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if plugin {
        vec!["docker".into(), "compose".into()]
    } else {
        tracing::info!("docker compose plugin not found; using docker-compose");
        vec!["docker-compose".into()]
    }
}

async fn run_job(
    program: &[String],
    compose_file: &std::path::Path,
    timeout: Duration,
    job: &RestartJob,
    status: &StatusStore,
) {
    if job.up {
        let outcome = run(program, compose_file, &["up", "-d"], timeout, Log::Info)
            .await
            .map(drop);
        record(status, [PROJECT.to_owned()].iter(), "up", &outcome);
    }
    if !job.services.is_empty() {
        let mut args = vec!["restart"];
        args.extend(job.services.iter().map(String::as_str));
        let outcome = run(program, compose_file, &args, timeout, Log::Info)
            .await
            .map(drop);
        record(status, job.services.iter(), "restart", &outcome);
    }
}

/// Whether a compose command is logged (restarts are; the health check's polling is not).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Log {
    Info,
    Quiet,
}

async fn run(
    program: &[String],
    compose_file: &std::path::Path,
    args: &[&str],
    timeout: Duration,
    log: Log,
) -> Result<String, String> {
    let Some((exe, lead)) = program.split_first() else {
        return Err("empty restart command".into());
    };
    let mut command = Command::new(exe);
    command
        .args(lead)
        .arg("-f")
        .arg(compose_file)
        .args(args)
        // Its own process group: a Ctrl-C meant for the follower does not cut the command short.
        .process_group(0)
        .kill_on_drop(true);
    // Compose files mount `${PRYV_CONF_ROOT}/pryv/...`: give it the same default the follower uses.
    if std::env::var_os(CONF_ROOT_VAR).is_none()
        && let Some(root) = compose_file.parent().and_then(default_conf_root)
    {
        command.env(CONF_ROOT_VAR, root);
    }
    if log == Log::Info {
        tracing::info!(command = %exe, args = ?args, "running compose command");
    } else {
        tracing::debug!(command = %exe, args = ?args, "running compose command");
    }
    match tokio::time::timeout(timeout, command.output()).await {
        Err(_) => Err(format!("timed out after {}s", timeout.as_secs())),
        Ok(Err(err)) => Err(format!("cannot run {exe}: {err}")),
        Ok(Ok(output)) if output.status.success() => {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        }
        Ok(Ok(output)) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            Err(format!("{} ({})", output.status, stderr.trim()))
        }
    }
}

fn record<'a>(
    status: &StatusStore,
    services: impl Iterator<Item = &'a String>,
    action: &str,
    outcome: &Result<(), String>,
) {
    let services: Vec<&String> = services.collect();
    let result = if outcome.is_ok() { "ok" } else { "failed" };
    for service in &services {
        metrics::counter!(crate::metrics::RESTARTS, "service" => (*service).clone(), "outcome" => result)
            .increment(1);
    }
    match outcome {
        Ok(()) => tracing::info!(action, services = ?services, "restart command succeeded"),
        Err(err) => {
            tracing::error!(action, services = ?services, error = %err, "restart command failed")
        }
    }
    let at = now_unix();
    status.update(|s| {
        for service in services {
            s.restarts.insert(
                service.clone(),
                RestartRecord {
                    at,
                    action: action.to_owned(),
                    ok: outcome.is_ok(),
                    error: outcome.as_ref().err().cloned(),
                },
            );
        }
    });
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn shared(state: &StateDir) -> Shared {
        Shared {
            queue: Mutex::new(Queue::default()),
            saved: Mutex::new((0, None)),
            wake: Notify::new(),
            finished: tokio::sync::watch::Sender::new(0),
            state: state.clone(),
            status: Arc::new(StatusStore::new("http://127.0.0.1:9".into())),
            tool: Mutex::new(None),
            compose_file: PathBuf::from("pryv.yml"),
        }
    }

    fn job(service: &str) -> RestartJob {
        RestartJob {
            up: false,
            services: [service.to_owned()].into(),
        }
    }

    #[test]
    fn saves_never_go_back_in_time_and_a_superseded_one_answers_as_the_newer_did() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::of(dir.path());
        let shared = shared(&state);
        let older = {
            let mut queue = shared.lock();
            queue.queued.merge(job("core"));
            shared.snapshot(&mut queue)
        };
        let newer = {
            let mut queue = shared.lock();
            queue.queued.merge(job("nginx"));
            shared.snapshot(&mut queue)
        };
        // The newer snapshot's save runs first (two callers racing off the queue's lock).
        shared.save(newer).unwrap();
        shared.save(older).unwrap();
        let on_disk: RestartJob = state.load(PENDING_FILE).unwrap().unwrap();
        assert_eq!(on_disk.names(), ["core", "nginx"], "the newer state stays");

        // A newer save that failed: the older one, arriving after, says so too.
        std::fs::remove_file(state.path(PENDING_FILE)).unwrap();
        std::fs::create_dir_all(state.path(PENDING_FILE)).unwrap();
        let (older, newer) = {
            let mut queue = shared.lock();
            let older = shared.snapshot(&mut queue);
            queue.queued.merge(job("mail"));
            (older, shared.snapshot(&mut queue))
        };
        let failed = shared.save(newer).unwrap_err().to_string();
        assert!(failed.contains("pending restarts"), "{failed}");
        let superseded = shared.save(older).unwrap_err().to_string();
        assert!(superseded.contains("pending restarts"), "{superseded}");
    }
}
