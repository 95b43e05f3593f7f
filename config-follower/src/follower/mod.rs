//! One fetch-apply-restart cycle ([`Follower::sync`]), shared by `POST /notify`, the start-up retry loop, the
//! optional poll and the background retry. Cycles never overlap: a lock serializes them.
//!
//! A revision becomes the follower's (`/status`, the next `If-None-Match`) only when every file of it is on
//! disk; otherwise the cycle ends in [`Error::ApplyIncomplete`] and a background retry with backoff fetches
//! and applies the whole tree again until it succeeds.
//!
//! `cycle` (fetch, apply, conclude), `gate` (the health gate, its record and the revert), `retry` (backoff).

mod cycle;
mod gate;
mod retry;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use pryv_daemon::now_unix;
use pryv_protocol::{ApplyOutcome, ApplyReport, NotifyRequest, NotifyResponse, UnhealthyService};
use tokio_util::sync::CancellationToken;

use crate::apply::OwnWrites;
use crate::client::LeaderClient;
use crate::compose::{COMPOSE_FILE, Project};
use crate::config::{Config, HealthConfig};
use crate::error::Error;
use crate::report::Reporter;
use crate::restart::{RestartJob, Restarter};
use crate::state_dir::StateDir;
use crate::status::StatusStore;

use cycle::{Fetch, split_known};
use gate::{Gate, REVERTED_FILE};

/// The settings revision of the last tree wholly applied (`x-pryv-store-revision`), under the bookkeeping folder.
const STORE_REVISION_FILE: &str = "store-revision";

/// Whether a cycle restarts the services whose files it changed (not before the first start of a machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    Changed,
    Nothing,
}

/// When a retry loop may stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// The leader answered (the tree may still be incomplete on disk).
    Fetched,
    /// The whole tree is on disk.
    Applied,
}

/// The follower's shared state.
pub struct Follower {
    pub config: Config,
    pub status: Arc<StatusStore>,
    pub own_writes: Arc<OwnWrites>,
    pub restarter: Restarter,
    client: LeaderClient,
    /// Held by a cycle from its fetch to the end of its health check: cycles never overlap.
    cycle: Arc<tokio::sync::Mutex<()>>,
    retrying: AtomicBool,
    pub reporter: Reporter,
    /// The revision of the last tree the leader sent (applied or not): what a long-poll waits to change.
    last_seen: std::sync::Mutex<Option<String>>,
    /// The settings revision of the tree this cycle fetched: the client's floor once it is wholly on disk.
    applying_store: std::sync::Mutex<Option<i64>>,
    pub shutdown: CancellationToken,
    /// The `*/conf/` watcher, switched at run time by `PUT /watch` (`watch-config`).
    pub watch: crate::conf_watch::WatchSwitch,
    /// How the health gate learns whether restarted services are healthy.
    health: Arc<dyn HealthCheck>,
}

/// Whether restarted services are healthy: Docker's account ([`DockerHealth`]) in production; the seam lets
/// the gate's tests give a verdict.
pub trait HealthCheck: Send + Sync {
    /// Waits until every one of `services` is healthy, or the deadline: the first one still unhealthy then.
    fn wait_healthy<'a>(
        &'a self,
        restarter: &'a Restarter,
        services: &'a [String],
        config: &'a HealthConfig,
    ) -> Verdict<'a>;
}

/// What a [`HealthCheck`] answers: healthy, or the first service still unhealthy at the deadline.
pub type Verdict<'a> = Pin<Box<dyn Future<Output = Result<(), UnhealthyService>> + Send + 'a>>;

/// The containers' state from `docker inspect` and the configured probes ([`crate::health`]).
pub struct DockerHealth;

impl HealthCheck for DockerHealth {
    fn wait_healthy<'a>(
        &'a self,
        restarter: &'a Restarter,
        services: &'a [String],
        config: &'a HealthConfig,
    ) -> Verdict<'a> {
        Box::pin(crate::health::wait_healthy(restarter, services, config))
    }
}

impl Follower {
    /// Builds the client and starts the restart worker (which resumes restarts a previous run left undone).
    /// Blocking (it reads the bookkeeping records): call it from a blocking thread.
    #[allow(clippy::disallowed_methods)]
    pub fn new(config: Config, shutdown: &CancellationToken) -> Result<Self, Error> {
        let client = LeaderClient::new(&config)?;
        let status = Arc::new(StatusStore::new(config.leader_url.clone()));
        let state = StateDir::of(&config.data_folder);
        // An unreadable record of the reverted revision stops the start: taking it for "none" would apply
        // the revision that was reverted.
        let reverted = state.load_text(REVERTED_FILE)?;
        status.update(|s| s.reverted_revision = reverted);
        // Likewise the settings revision applied here: taking "none" would accept a lagging replica's tree.
        if let Some(text) = state.load_text(STORE_REVISION_FILE)? {
            let floor = text.trim().parse::<i64>().map_err(|_| Error::Record {
                action: "read",
                path: state.path(STORE_REVISION_FILE),
                reason: "not a settings revision number; remove the file only if the leader's settings history was reset".into(),
            })?;
            client.raise_floor(floor);
            status.update(|s| s.store_revision = Some(floor));
        }
        let reporter = Reporter::spawn(client.clone(), &state, status.clone(), shutdown.clone());
        let restarter = Restarter::spawn(
            config.restart_command.clone(),
            config.data_folder.join(COMPOSE_FILE),
            &state,
            config.restart_timeout,
            status.clone(),
            shutdown.clone(),
        );
        let own_writes = Arc::new(OwnWrites::default());
        let watch = crate::conf_watch::WatchSwitch::new(crate::conf_watch::Watched {
            data: config.data_folder.clone(),
            debounce: config.debounce,
            restarter: restarter.clone(),
            own_writes: own_writes.clone(),
        });
        Ok(Self {
            status,
            own_writes,
            restarter,
            client,
            cycle: Arc::new(tokio::sync::Mutex::new(())),
            retrying: AtomicBool::new(false),
            reporter,
            last_seen: std::sync::Mutex::new(None),
            applying_store: std::sync::Mutex::new(None),
            shutdown: shutdown.clone(),
            watch,
            config,
            health: Arc::new(DockerHealth),
        })
    }

    /// The same follower with another health check (tests).
    pub fn with_health_check(mut self, health: Arc<dyn HealthCheck>) -> Self {
        self.health = health;
        self
    }

    /// The client to the leader.
    pub fn client(&self) -> &LeaderClient {
        &self.client
    }

    /// The machine's compose project (no services when the file is missing or unreadable), read on a
    /// blocking thread.
    #[allow(clippy::disallowed_methods)]
    pub async fn project(&self) -> Project {
        let data = self.config.data_folder.clone();
        tokio::task::spawn_blocking(move || crate::compose::machine_project(&data))
            .await
            .unwrap_or_else(|err| {
                tracing::warn!(error = %err, "cannot read the compose file");
                Project::default()
            })
    }

    /// Fetches, writes, and (with [`Restart::Changed`]) queues the restart of what changed, as `request` asks.
    /// Services named in `request` that this machine does not run are ignored (listed in the answer). With
    /// the health gate on, the restarted services are then checked in the background (the next cycle waits
    /// for that check) and the files put back if one stays unhealthy.
    pub async fn sync(
        self: &Arc<Self>,
        request: &NotifyRequest,
        restart: Restart,
    ) -> Result<NotifyResponse, Error> {
        let one_cycle = self.cycle.clone().lock_owned().await;
        let started = std::time::Instant::now();
        let project_before = self.project().await;
        let (listed, ignored) = split_known(request.services.as_deref(), &project_before);
        if !ignored.is_empty() {
            tracing::info!(ignored = ?ignored, "notification names services this machine does not run");
        }
        let revision = self.status.snapshot().revision;
        let (applied, tree_revision) = match self
            .fetch_and_apply(request, restart, &project_before, revision.clone())
            .await?
        {
            Fetch::Applied(applied, tree_revision) => (applied, tree_revision),
            Fetch::Skipped(answer) => return Ok(answer),
        };
        let job = match restart {
            Restart::Changed => {
                let project_after = self.project().await;
                self.restart_job(
                    request,
                    listed.as_ref(),
                    (&project_before, &project_after),
                    &applied.changed,
                )
            }
            Restart::Nothing => RestartJob::default(),
        };
        let mut report = applied.report;
        report.ignored = ignored;
        report.restarted = job.names();
        let apply_ms = started.elapsed().as_millis() as u64;
        // Queued (and persisted) whatever the outcome: files that did reach the disk must reach the services.
        let (ticket, saved) = self.restarter.request(job.clone()).await;
        if let Err(problem) = saved {
            report.problems.push(problem.to_string());
        }
        let answer = self.conclude(report, tree_revision.clone());
        if answer.is_ok() {
            self.take_store_revision().await;
        }
        let report = self.apply_report(&answer, &applied.changed, tree_revision.clone(), apply_ms);
        if answer.is_ok() && self.config.health.enabled && !job.is_empty() {
            let gate = Gate {
                target: tree_revision,
                previous: revision,
                backup: applied.backup,
                job,
                ticket,
                report,
            };
            let follower = self.clone();
            tokio::spawn(async move {
                follower.gate(gate).await;
                drop(one_cycle);
            });
        } else {
            self.forget_gate().await;
            // A poll that found nothing new is not worth a report; a notification or a failure always is.
            if answer.is_err() || !applied.changed.is_empty() || request.revision.is_some() {
                self.reporter.send(report).await;
            }
        }
        answer
    }

    /// The tree just applied wholly: its settings revision becomes the floor, recorded across restarts. A
    /// record that cannot be saved is logged: the floor holds until the next start.
    #[allow(clippy::disallowed_methods)] // through the records' async door
    async fn take_store_revision(&self) {
        let store = self
            .applying_store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(revision) = store.filter(|r| *r > self.client.floor()) else {
            return;
        };
        self.client.raise_floor(revision);
        self.status.update(|s| s.store_revision = Some(revision));
        let saved = self
            .state()
            .call(move |s| s.save_text(STORE_REVISION_FILE, &revision.to_string()))
            .await;
        if let Err(err) = saved {
            tracing::error!(error = %err, revision, "cannot record the settings revision applied; after a restart a lagging leader replica could serve an older tree");
        }
    }

    pub(super) fn saw(&self, revision: Option<&str>) {
        *self
            .last_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = revision.map(str::to_owned);
    }

    /// The revision of the last tree the leader sent, else the one on disk.
    pub fn last_seen(&self) -> Option<String> {
        self.last_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .or_else(|| self.status.snapshot().revision)
    }
}

/// The report of an apply that ended with `outcome`, listing what `answer` wrote, removed and restarted.
fn report_of(
    revision: Option<String>,
    current_revision: Option<String>,
    outcome: ApplyOutcome,
    answer: &NotifyResponse,
) -> ApplyReport {
    ApplyReport {
        revision,
        current_revision,
        outcome,
        written: answer.files.clone(),
        removed: answer.removed.clone(),
        rejected: answer.rejected.clone(),
        restarted: answer.restarted.clone(),
        unhealthy: None,
        errors: Vec::new(),
        apply_ms: 0,
        restart_ms: 0,
        health_ms: 0,
        at: now_unix(),
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn config(data: &std::path::Path) -> Config {
        let path = data.join("config-follower.json");
        let json = serde_json::json!({
            "http": {"ip": "127.0.0.1", "port": 0},
            "leader": {"url": "http://127.0.0.1:9", "auth": "key-0123456789abcdef"},
            "paths": {"dataFolder": data.join("pryv")},
            "restart": {"command": ["true"]}
        });
        std::fs::write(&path, json.to_string()).unwrap();
        Config::load(&path, &Overrides::default()).unwrap()
    }

    #[tokio::test]
    async fn a_reverted_revision_that_cannot_be_read_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::of(&dir.path().join("pryv"));
        // A folder where the record should be: it exists and cannot be read.
        std::fs::create_dir_all(state.path(REVERTED_FILE)).unwrap();
        let shutdown = CancellationToken::new();
        let err = Follower::new(config(dir.path()), &shutdown)
            .err()
            .expect("an unreadable record must not be taken for none");
        assert!(
            err.to_string().contains("cannot read") && err.to_string().contains(REVERTED_FILE),
            "{err}"
        );

        // A readable one is taken: the follower stays off that revision.
        std::fs::remove_dir(state.path(REVERTED_FILE)).unwrap();
        state.save_text(REVERTED_FILE, "r7\n").unwrap();
        let follower = Follower::new(config(dir.path()), &shutdown).unwrap();
        assert_eq!(
            follower.status.snapshot().reverted_revision.as_deref(),
            Some("r7")
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn the_settings_revision_applied_is_taken_at_start_and_an_unreadable_one_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::of(&dir.path().join("pryv"));
        let shutdown = CancellationToken::new();
        state
            .save_text(STORE_REVISION_FILE, "not a number")
            .unwrap();
        let err = Follower::new(config(dir.path()), &shutdown)
            .err()
            .expect("a record that is not a revision must not be taken for none");
        assert!(err.to_string().contains(STORE_REVISION_FILE), "{err}");

        state.save_text(STORE_REVISION_FILE, "12").unwrap();
        let follower = Follower::new(config(dir.path()), &shutdown).unwrap();
        assert_eq!(follower.client().floor(), 12);
        assert_eq!(follower.status.snapshot().store_revision, Some(12));
        shutdown.cancel();
    }
}
