//! One fetch-apply-restart cycle ([`Follower::sync`]), shared by `POST /notify`, the start-up retry loop, the
//! optional poll and the background retry. Cycles never overlap: a lock serializes them.
//!
//! A revision becomes the follower's (`/status`, the next `If-None-Match`) only when every file of it is on
//! disk; otherwise the cycle ends in [`Error::ApplyIncomplete`] and a background retry with backoff fetches
//! and applies the whole tree again until it succeeds.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pryv_protocol::{NotifyRequest, NotifyResponse};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::apply::{self, Backup, OwnWrites, RemovalGuard};
use crate::client::{Fetched, LeaderClient};
use crate::compose::{COMPOSE_FILE, Project};
use crate::config::Config;
use crate::error::Error;
use crate::report::Reporter;
use crate::state_dir::StateDir;
use crate::restart::{PROJECT, RestartJob, Restarter, Ticket};
use crate::status::{HealthRecord, StatusStore};
use pryv_daemon::now_unix;
use pryv_protocol::{ApplyOutcome, ApplyReport};

const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// A record of the bookkeeping folder: the revision reverted after a failed health check, not to be applied again.
const REVERTED_FILE: &str = "reverted-revision";
/// A record of the bookkeeping folder: the health check in progress (what to put back if it fails).
const GATE_FILE: &str = "health-gate.json";

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
    pub shutdown: CancellationToken,
    /// The `*/conf/` watcher, switched at run time by `PUT /watch` (`watch-config`).
    pub watch: crate::conf_watch::WatchSwitch,
}

impl Follower {
    /// Builds the client and starts the restart worker (which resumes restarts a previous run left undone).
    pub fn new(config: Config, shutdown: &CancellationToken) -> Result<Self, Error> {
        let client = LeaderClient::new(&config)?;
        let status = Arc::new(StatusStore::new(config.leader_url.clone()));
        let state = StateDir::of(&config.data_folder);
        // An unreadable record of the reverted revision stops the start: taking it for "none" would apply
        // the revision that was reverted.
        let reverted = state.load_text(REVERTED_FILE)?;
        status.update(|s| s.reverted_revision = reverted);
        let reporter =
            Reporter::spawn(client.clone(), &state, status.clone(), shutdown.clone());
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
            shutdown: shutdown.clone(),
            watch,
            config,
        })
    }

    /// The client to the leader.
    pub fn client(&self) -> &LeaderClient {
        &self.client
    }

    /// The machine's compose project (no services when the file is missing or unreadable).
    pub fn project(&self) -> Project {
        crate::compose::machine_project(&self.config.data_folder)
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
        let project_before = self.project();
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
                self.restart_job(request, listed.as_ref(), &project_before, &applied.changed)
            }
            Restart::Nothing => RestartJob::default(),
        };
        let mut report = applied.report;
        report.ignored = ignored;
        report.restarted = job.names();
        let apply_ms = started.elapsed().as_millis() as u64;
        // Queued (and persisted) whatever the outcome: files that did reach the disk must reach the services.
        let (ticket, saved) = self.restarter.request(job.clone());
        if let Err(problem) = saved {
            report.problems.push(problem);
        }
        let answer = self.conclude(report, tree_revision.clone());
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
            self.forget_gate();
            // A poll that found nothing new is not worth a report; a notification or a failure always is.
            if answer.is_err() || !applied.changed.is_empty() || request.revision.is_some() {
                self.reporter.send(report);
            }
        }
        answer
    }

    /// Fetches the tree and writes it, unless it is a revision this follower reverted. A tree refused whole
    /// is reported and ends the cycle in [`Error::ApplyIncomplete`].
    async fn fetch_and_apply(
        &self,
        request: &NotifyRequest,
        restart: Restart,
        project_before: &Project,
        revision: Option<String>,
    ) -> Result<Fetch, Error> {
        let tree = match self.fetch(revision.as_deref()).await? {
            Fetched::NotModified => return Ok(Fetch::Applied(apply::Applied::default(), revision)),
            Fetched::Tree(tree) => tree,
        };
        self.saw(tree.revision.as_deref());
        if tree.revision.is_some() && tree.revision == self.status.snapshot().reverted_revision {
            return Ok(Fetch::Skipped(self.skip_reverted(tree.revision)));
        }
        let outcome = self
            .apply_tree(
                tree.files,
                request,
                restart,
                project_before,
                tree.revision.clone(),
            )
            .await?;
        match outcome {
            Ok(applied) => Ok(Fetch::Applied(applied, tree.revision)),
            Err(reason) => {
                metrics::counter!(crate::metrics::APPLIES, "outcome" => "refused").increment(1);
                tracing::error!(reason = %reason, "configuration refused");
                self.record_incomplete(&reason, tree.revision.clone());
                // Clears the announced intent; if that cannot be saved, the next start restarts it (safe side).
                let _ = self.restarter.request(RestartJob::default());
                self.reporter.send(ApplyReport {
                    errors: vec![reason.clone()],
                    ..report_of(
                        tree.revision,
                        revision,
                        ApplyOutcome::Incomplete,
                        &NotifyResponse::default(),
                    )
                });
                Err(Error::ApplyIncomplete(reason))
            }
        }
    }

    /// The report of an apply that just ended (before any health check).
    fn apply_report(
        &self,
        answer: &Result<NotifyResponse, Error>,
        changed: &[PathBuf],
        tree_revision: Option<String>,
        apply_ms: u64,
    ) -> ApplyReport {
        let outcome = match answer {
            Ok(_) if changed.is_empty() => ApplyOutcome::Unchanged,
            Ok(_) => ApplyOutcome::Applied,
            Err(_) => ApplyOutcome::Incomplete,
        };
        let empty = NotifyResponse::default();
        let mut report = report_of(
            tree_revision,
            self.status.snapshot().revision,
            outcome,
            answer.as_ref().unwrap_or(&empty),
        );
        report.apply_ms = apply_ms;
        if let Err(err) = answer {
            report.errors.push(err.to_string());
        }
        report
    }

    /// The tree is a revision this follower reverted: it stays on what it runs (a newer revision is tried).
    fn skip_reverted(&self, revision: Option<String>) -> NotifyResponse {
        let reason = format!(
            "revision {} was reverted here after a failed health check; staying on the current files until \
             the leader has a newer revision",
            revision.as_deref().unwrap_or("-")
        );
        tracing::warn!(
            revision = revision.as_deref().unwrap_or("-"),
            "not applying a revision reverted before"
        );
        let current = self.status.snapshot().revision;
        self.reporter.send(ApplyReport {
            errors: vec![reason.clone()],
            ..report_of(
                revision,
                current.clone(),
                ApplyOutcome::Skipped,
                &NotifyResponse::default(),
            )
        });
        NotifyResponse {
            revision: current,
            skipped: Some(reason),
            ..NotifyResponse::default()
        }
    }

    fn saw(&self, revision: Option<&str>) {
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

    /// After the restarts of an apply: wait for the services to be healthy; if one is not by the deadline,
    /// put the previous files back, restart the same services again and stay on the previous revision.
    async fn gate(&self, gate: Gate) {
        let Gate {
            target,
            previous,
            backup,
            job,
            ticket,
            mut report,
        } = gate;
        let services = self.gated_services(&job);
        let started_at = now_unix();
        self.status.update(|s| {
            s.health = Some(HealthRecord {
                revision: target.clone(),
                outcome: "checking".into(),
                services: services.clone(),
                started: started_at,
                finished: None,
                unhealthy: None,
                errors: Vec::new(),
            });
        });
        let restart_started = std::time::Instant::now();
        tokio::select! {
            _ = self.shutdown.cancelled() => return,
            done = self.restarter.done(ticket) => if !done { return },
        }
        report.restart_ms = restart_started.elapsed().as_millis() as u64;
        let health_started = std::time::Instant::now();
        let verdict = tokio::select! {
            _ = self.shutdown.cancelled() => return,
            verdict = crate::health::wait_healthy(&self.restarter, &services, &self.config.health) => verdict,
        };
        report.health_ms = health_started.elapsed().as_millis() as u64;
        let unhealthy = match verdict {
            Ok(()) => {
                tracing::info!(services = ?services, "restarted services are healthy");
                self.finish_health("healthy", None, Vec::new());
                self.forget_gate();
                report.outcome = ApplyOutcome::Healthy;
                self.reporter.send(report);
                return;
            }
            Err(unhealthy) => unhealthy,
        };
        self.revert(
            Gate {
                target,
                previous,
                backup,
                job,
                ticket,
                report,
            },
            &services,
            unhealthy,
        )
        .await;
    }

    /// Puts the previous files back, restarts the same services again, and stays on the previous revision.
    async fn revert(
        &self,
        gate: Gate,
        services: &[String],
        unhealthy: pryv_protocol::UnhealthyService,
    ) {
        let Gate {
            target,
            previous,
            backup,
            job,
            mut report,
            ..
        } = gate;
        // Log tails hold connection strings and passwords: masked before they are kept or reported.
        let scrubber = apply::scrubber_of_disk(
            &self.config.data_folder,
            [self.config.key.expose().to_owned()],
        );
        let mut unhealthy = unhealthy;
        for line in &mut unhealthy.log_tail {
            *line = scrubber.scrub(line);
        }
        tracing::error!(service = %unhealthy.service, state = %unhealthy.state, revision = target.as_deref().unwrap_or("-"),
            "a restarted service is unhealthy; putting the previous files back");
        let (_, mut errors) = backup.restore(&self.config.data_folder, &self.own_writes);
        let (again, saved) = self.restarter.request(job);
        if let Err(problem) = saved {
            errors.push(problem);
        }
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            _ = self.restarter.done(again) => {}
        }
        if let Some(failed) = services.iter().find(|s| {
            self.status
                .snapshot()
                .restarts
                .get(*s)
                .is_some_and(|r| !r.ok)
        }) {
            errors.push(format!(
                "restarting {failed} with the previous files failed"
            ));
        }
        if let Err(err) = self.remember_reverted(target.as_deref()) {
            errors.push(err);
        }
        self.status.update(|s| {
            s.revision.clone_from(&previous);
            s.reverted_revision.clone_from(&target);
        });
        self.forget_gate();
        let outcome = if errors.is_empty() {
            "reverted"
        } else {
            "revert-failed"
        };
        self.finish_health(outcome, Some(unhealthy.clone()), errors.clone());
        metrics::counter!(crate::metrics::APPLIES, "outcome" => "reverted").increment(1);
        report.outcome = ApplyOutcome::Reverted;
        report.current_revision = previous;
        report.unhealthy = Some(unhealthy);
        report.errors.extend(errors);
        self.reporter.send(report);
    }

    fn state(&self) -> StateDir {
        StateDir::of(&self.config.data_folder)
    }

    fn forget_gate(&self) {
        if let Err(err) = self.state().remove(GATE_FILE) {
            tracing::warn!(error = %err, "cannot remove the saved health check; it runs again at the next start");
        }
    }

    /// At start: a health check a killed run left unfinished is run again (after the restarts it left
    /// undone), before any sync. Its files are still on disk, so a revert can still put the old ones back.
    pub async fn resume_gate(self: &Arc<Self>) {
        let saved: SavedGate = match self.state().load(GATE_FILE) {
            Ok(Some(saved)) => saved,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(error = %err, "unreadable saved health check; dropping it");
                self.forget_gate();
                return;
            }
        };
        if !self.config.health.enabled {
            self.forget_gate();
            return;
        }
        tracing::warn!(
            revision = saved.target.as_deref().unwrap_or("-"),
            "a health check was cut short by a stop; running it again"
        );
        let one_cycle = self.cycle.clone().lock_owned().await;
        self.status.update(|s| s.revision.clone_from(&saved.target));
        let gate = Gate {
            report: report_of(
                saved.target.clone(),
                saved.target.clone(),
                ApplyOutcome::Applied,
                &NotifyResponse::default(),
            ),
            target: saved.target,
            previous: saved.previous,
            backup: saved.backup,
            ticket: self.restarter.last_ticket(),
            job: saved.job,
        };
        let follower = self.clone();
        tokio::spawn(async move {
            follower.gate(gate).await;
            drop(one_cycle);
        });
    }

    /// The services a restart job concerns (every service of the project for `up -d`).
    fn gated_services(&self, job: &RestartJob) -> Vec<String> {
        let mut services: Vec<String> = job.names().into_iter().filter(|s| s != PROJECT).collect();
        if job.up {
            services = self.project().names();
        }
        services
    }

    fn finish_health(
        &self,
        outcome: &str,
        unhealthy: Option<pryv_protocol::UnhealthyService>,
        errors: Vec<String>,
    ) {
        self.status.update(|s| {
            if let Some(health) = &mut s.health {
                health.outcome = outcome.to_owned();
                health.finished = Some(now_unix());
                health.unhealthy = unhealthy;
                health.errors = errors;
            }
        });
    }

    fn remember_reverted(&self, revision: Option<&str>) -> Result<(), String> {
        self.state()
            .save_text(REVERTED_FILE, revision.unwrap_or(""))
            .map_err(|err| format!("cannot remember the reverted revision: {err}"))
    }

    /// Fetches the tree (`If-None-Match: revision`), recording the outcome in the status and the metrics.
    async fn fetch(&self, revision: Option<&str>) -> Result<Fetched, Error> {
        let started = std::time::Instant::now();
        let fetched = self.client.fetch(revision).await;
        metrics::histogram!(crate::metrics::FETCH_DURATION).record(started.elapsed().as_secs_f64());
        let outcome = match &fetched {
            Ok(Fetched::Tree(_)) => "changed",
            Ok(Fetched::NotModified) => "not_modified",
            Err(_) => "failed",
        };
        metrics::counter!(crate::metrics::FETCHES, "outcome" => outcome).increment(1);
        let reachable = if fetched.is_ok() { 1.0 } else { 0.0 };
        metrics::gauge!(crate::metrics::LEADER_REACHABLE).set(reachable);
        match &fetched {
            Ok(_) => self.status.update(|s| {
                s.last_fetch = Some(now_unix());
                s.last_fetch_error = None;
            }),
            Err(err) => self
                .status
                .update(|s| s.last_fetch_error = Some(err.to_string())),
        }
        fetched
    }

    /// Takes the revision when the whole tree is on disk; otherwise records why not and fails the cycle.
    fn conclude(
        &self,
        mut report: NotifyResponse,
        tree_revision: Option<String>,
    ) -> Result<NotifyResponse, Error> {
        for (result, count) in [
            ("written", report.files.len()),
            ("unchanged", report.unchanged),
            ("removed", report.removed.len()),
            ("rejected", report.rejected.len()),
        ] {
            metrics::counter!(crate::metrics::FILES, "result" => result).increment(count as u64);
        }
        let complete = report.rejected.is_empty() && report.problems.is_empty();
        let revision = tree_revision.as_deref().unwrap_or("-");
        if complete {
            tracing::info!(
                written = report.files.len(),
                unchanged = report.unchanged,
                removed = report.removed.len(),
                revision,
                "configuration applied"
            );
        } else {
            tracing::error!(
                written = report.files.len(),
                unchanged = report.unchanged,
                removed = report.removed.len(),
                rejected = report.rejected.len(),
                problems = report.problems.len(),
                revision,
                "configuration not wholly applied; the revision is not taken"
            );
        }
        let outcome = if complete { "complete" } else { "incomplete" };
        metrics::counter!(crate::metrics::APPLIES, "outcome" => outcome).increment(1);
        if complete {
            self.status.update(|s| {
                s.revision.clone_from(&tree_revision);
                s.last_apply = Some(now_unix());
                s.last_apply_error = None;
                s.failed_revision = None;
            });
            report.revision = tree_revision;
            Ok(report)
        } else {
            let reason = incomplete_reason(&report);
            self.record_incomplete(&reason, tree_revision);
            Err(Error::ApplyIncomplete(reason))
        }
    }

    /// Applies `files` on a blocking thread. The outer error is a failure of the task itself; the inner one a
    /// tree refused whole.
    async fn apply_tree(
        &self,
        files: Vec<pryv_protocol::ConfFile>,
        request: &NotifyRequest,
        restart: Restart,
        project_before: &Project,
        target: Option<String>,
    ) -> Result<Result<apply::Applied, String>, Error> {
        let data_folder = self.config.data_folder.clone();
        let validators = self.config.validate.clone();
        let own = self.own_writes.clone();
        let guard = RemovalGuard {
            max_percent: self.config.max_removal_percent,
            confirmed: request.confirm_removals,
        };
        let restarter = self.restarter.clone();
        let project = project_before.clone();
        let compose_file = data_folder.join(COMPOSE_FILE);
        let gate_record =
            (restart == Restart::Changed && self.config.health.enabled).then(|| self.state());
        let revisions = (target, self.status.snapshot().revision);
        tokio::task::spawn_blocking(move || {
            let announce = |paths: &[PathBuf], backup: &Backup| {
                if restart == Restart::Changed {
                    let job = RestartJob {
                        up: paths.contains(&compose_file),
                        services: project.affected(paths),
                    };
                    // Saved before the first write: a follower killed during the health check checks
                    // again at its next start and can still put these bytes back.
                    if let Some(state) = &gate_record {
                        save_gate(
                            state,
                            &SavedGate {
                                target: revisions.0.clone(),
                                previous: revisions.1.clone(),
                                job: job.clone(),
                                backup: backup.clone(),
                            },
                        )?;
                    }
                    restarter.announce(job)?;
                }
                Ok(())
            };
            apply::apply(&data_folder, &files, &validators, &own, guard, &announce)
        })
        .await
        .map_err(|err| Error::Internal(err.to_string()))
    }

    fn restart_job(
        &self,
        request: &NotifyRequest,
        listed: Option<&Vec<String>>,
        project_before: &Project,
        changed: &[PathBuf],
    ) -> RestartJob {
        let project = self.project();
        let compose_file = self.config.data_folder.join(COMPOSE_FILE);
        let mut job = if listed.is_none() {
            let (up, services) =
                crate::compose::plan_restarts(project_before, &project, &compose_file, changed);
            RestartJob { up, services }
        } else {
            RestartJob {
                up: false,
                services: project.affected(changed),
            }
        };
        if let Some(listed) = listed {
            job.services.retain(|s| listed.contains(s));
        }
        if request.force {
            let forced: BTreeSet<String> = match listed {
                Some(listed) => listed.iter().cloned().collect(),
                None => project.names().into_iter().collect(),
            };
            job.services.extend(forced);
        }
        job
    }

    fn record_incomplete(&self, reason: &str, revision: Option<String>) {
        self.status.update(|s| {
            s.last_apply_error = Some(reason.to_owned());
            s.failed_revision = revision;
        });
    }

    /// Retries [`Follower::sync`] with capped exponential backoff and jitter until `until` holds; false if
    /// shutdown came first.
    pub async fn sync_until(self: &Arc<Self>, restart: Restart, until: Until) -> bool {
        let mut delay = FIRST_RETRY;
        let mut attempt = 0u32;
        loop {
            let outcome = self.sync(&NotifyRequest::default(), restart).await;
            let done = match (&outcome, until) {
                (Ok(_), _) | (Err(Error::ApplyIncomplete(_)), Until::Fetched) => true,
                (Err(_), _) => false,
            };
            if done {
                return true;
            }
            if let Err(err) = outcome {
                attempt += 1;
                let wait = with_jitter(delay);
                tracing::warn!(attempt, retry_in_ms = wait.as_millis() as u64, error = %err, "sync failed; retrying");
                tokio::select! {
                    _ = self.shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(wait) => {}
                }
                delay = (delay * 2).min(MAX_RETRY);
            }
        }
    }

    /// After a failed sync: retry in the background until the whole tree is on disk (one loop at a time).
    pub fn retry_in_background(self: &Arc<Self>) {
        if self.retrying.swap(true, Ordering::AcqRel) {
            return;
        }
        let follower = self.clone();
        tokio::spawn(async move {
            if follower.sync_until(Restart::Changed, Until::Applied).await {
                tracing::info!("converged with the leader");
            }
            follower.retrying.store(false, Ordering::Release);
        });
    }
}

/// A health check in progress, saved in the bookkeeping folder until it ends.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedGate {
    target: Option<String>,
    previous: Option<String>,
    job: RestartJob,
    backup: Backup,
}

/// `Err` when the check cannot be saved: the apply does not start (a stop during the check would skip it).
fn save_gate(state: &StateDir, gate: &SavedGate) -> Result<(), String> {
    state.save(GATE_FILE, gate).map_err(|err| {
        format!(
            "{err} (the health check, saved before writing); nothing was changed. Free space or make the \
             folder writable"
        )
    })
}

/// What a fetch led to.
enum Fetch {
    /// Written (or nothing to write), with the revision of the tree.
    Applied(apply::Applied, Option<String>),
    /// A reverted revision, not applied: the answer.
    Skipped(NotifyResponse),
}

/// What the health gate of one apply needs.
struct Gate {
    target: Option<String>,
    previous: Option<String>,
    backup: Backup,
    job: RestartJob,
    ticket: Ticket,
    report: ApplyReport,
}

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

/// The listed services this machine runs (`None` = no list), and the ones it does not.
fn split_known(
    services: Option<&[String]>,
    project: &Project,
) -> (Option<Vec<String>>, Vec<String>) {
    let Some(services) = services else {
        return (None, Vec::new());
    };
    let known = project.names();
    let (listed, ignored) = services.iter().cloned().partition(|s| known.contains(s));
    (Some(listed), ignored)
}

fn incomplete_reason(report: &NotifyResponse) -> String {
    let mut reasons = report.problems.clone();
    if !report.rejected.is_empty() {
        reasons.push(rejected_reason(report));
    }
    reasons.join("; ")
}

fn rejected_reason(report: &NotifyResponse) -> String {
    let listed: Vec<String> = report
        .rejected
        .iter()
        .take(10)
        .map(|r| format!("{} ({})", r.path, r.reason))
        .collect();
    let more = report.rejected.len().saturating_sub(listed.len());
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!(
        "{} file(s) of the leader's tree are not on disk: {}{more}; the revision is not taken and the next \
         sync tries again",
        report.rejected.len(),
        listed.join("; ")
    )
}

/// `delay` ± 25 %, so followers restarted together do not retry in lockstep.
fn with_jitter(delay: Duration) -> Duration {
    let factor = rand::rng().random_range(0.75..1.25);
    delay.mul_f64(factor)
}
