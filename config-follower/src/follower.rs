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

use crate::apply::{self, OwnWrites, RemovalGuard, STATE_DIR};
use crate::client::{Fetched, LeaderClient};
use crate::compose::{COMPOSE_FILE, Project};
use crate::config::Config;
use crate::error::Error;
use crate::restart::{RestartJob, Restarter};
use crate::status::StatusStore;
use pryv_daemon::now_unix;

const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

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
    cycle: tokio::sync::Mutex<()>,
    retrying: AtomicBool,
    pub shutdown: CancellationToken,
    /// The `*/conf/` watcher, switched at run time by `PUT /watch` (`watch-config`).
    pub watch: crate::watch::WatchSwitch,
}

impl Follower {
    /// Builds the client and starts the restart worker (which resumes restarts a previous run left undone).
    pub fn new(config: Config, shutdown: &CancellationToken) -> Result<Self, Error> {
        let client = LeaderClient::new(&config)?;
        let status = Arc::new(StatusStore::new(config.leader_url.clone()));
        let restarter = Restarter::spawn(
            config.restart_command.clone(),
            config.data_folder.join(COMPOSE_FILE),
            &config.data_folder.join(STATE_DIR),
            config.restart_timeout,
            status.clone(),
            shutdown.clone(),
        );
        Ok(Self {
            status,
            own_writes: Arc::new(OwnWrites::default()),
            restarter,
            client,
            cycle: tokio::sync::Mutex::new(()),
            retrying: AtomicBool::new(false),
            shutdown: shutdown.clone(),
            watch: crate::watch::WatchSwitch::new(&config.data_folder),
            config,
        })
    }

    /// The machine's compose project (no services when the file is missing or unreadable).
    pub fn project(&self) -> Project {
        Project::load(&self.config.data_folder).unwrap_or_else(|err| {
            tracing::warn!(error = %err, "cannot read the compose file; no service will be restarted");
            Project::default()
        })
    }

    /// Fetches, writes, and (with [`Restart::Changed`]) queues the restart of what changed, as `request` asks.
    /// Services named in `request` that this machine does not run are ignored (listed in the answer).
    pub async fn sync(
        &self,
        request: &NotifyRequest,
        restart: Restart,
    ) -> Result<NotifyResponse, Error> {
        let _one_cycle = self.cycle.lock().await;
        let project_before = self.project();
        let (listed, ignored) = split_known(request.services.as_deref(), &project_before);
        if !ignored.is_empty() {
            tracing::info!(ignored = ?ignored, "notification names services this machine does not run");
        }
        let revision = self.status.snapshot().revision;
        let fetched = self.fetch(revision.as_deref()).await?;
        let (applied, tree_revision) = match fetched {
            Fetched::NotModified => (apply::Applied::default(), revision.clone()),
            Fetched::Tree(tree) => {
                let outcome = self
                    .apply_tree(tree.files, request, restart, &project_before)
                    .await?;
                match outcome {
                    Ok(applied) => (applied, tree.revision),
                    Err(reason) => {
                        metrics::counter!(crate::metrics::APPLIES, "outcome" => "refused")
                            .increment(1);
                        tracing::error!(reason = %reason, "configuration refused");
                        self.record_incomplete(&reason, tree.revision);
                        self.restarter.request(RestartJob::default());
                        return Err(Error::ApplyIncomplete(reason));
                    }
                }
            }
        };
        let job = self.restart_job(request, listed.as_ref(), &project_before, &applied.changed);
        let mut report = applied.report;
        report.ignored = ignored;
        report.restarted = match restart {
            Restart::Changed => job.names(),
            Restart::Nothing => Vec::new(),
        };
        // Queued (and persisted) whatever the outcome: files that did reach the disk must reach the services.
        self.restarter.request(match restart {
            Restart::Changed => job,
            Restart::Nothing => RestartJob::default(),
        });
        self.conclude(report, tree_revision)
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
        tracing::info!(
            written = report.files.len(),
            unchanged = report.unchanged,
            removed = report.removed.len(),
            rejected = report.rejected.len(),
            revision = tree_revision.as_deref().unwrap_or("-"),
            "configuration applied"
        );
        let complete = report.rejected.is_empty();
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
        tokio::task::spawn_blocking(move || {
            let announce = |paths: &[PathBuf]| {
                if restart == Restart::Changed {
                    restarter.announce(RestartJob {
                        up: paths.contains(&compose_file),
                        services: project.affected(paths),
                    });
                }
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
        let mut job = RestartJob {
            up: listed.is_none() && changed.contains(&compose_file),
            services: project.affected(changed),
        };
        if job.up {
            // `up -d` creates or recreates these with their new files already in place.
            let recreated = project.recreated_since(project_before);
            job.services.retain(|s| !recreated.contains(s));
        }
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
    pub async fn sync_until(&self, restart: Restart, until: Until) -> bool {
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
