//! One fetch-apply cycle: fetch the tree, skip a reverted revision, write it on a blocking thread, queue the
//! restarts, and take the revision only when wholly on disk.

use std::collections::BTreeSet;
use std::path::PathBuf;

use pryv_protocol::{NotifyRequest, NotifyResponse};

use crate::apply::{self, Backup, RemovalGuard};
use crate::client::Fetched;
use crate::compose::{COMPOSE_FILE, Project};
use crate::error::Error;
use crate::restart::RestartJob;
use pryv_daemon::now_unix;
use pryv_protocol::{ApplyOutcome, ApplyReport};

use super::gate::{SavedGate, save_gate};
use super::{Follower, Restart, report_of};

impl Follower {
    /// Fetches the tree and writes it, unless it is a revision this follower reverted. A tree refused whole
    /// is reported and ends the cycle in [`Error::ApplyIncomplete`].
    pub(super) async fn fetch_and_apply(
        &self,
        request: &NotifyRequest,
        restart: Restart,
        project_before: &Project,
        revision: Option<String>,
    ) -> Result<Fetch, Error> {
        let tree = match self.fetch(revision.as_deref()).await? {
            Fetched::NotModified => return Ok(Fetch::Applied(apply::Applied::default(), revision)),
            Fetched::Tree(tree, store) => {
                *self
                    .applying_store
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = store;
                tree
            }
        };
        self.saw(tree.revision.as_deref());
        if tree.revision.is_some() && tree.revision == self.status.snapshot().reverted_revision {
            return Ok(Fetch::Skipped(self.skip_reverted(tree.revision).await));
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
            Err(refused) => {
                let reason = refused.to_string();
                metrics::counter!(crate::metrics::APPLIES, "outcome" => "refused").increment(1);
                tracing::error!(reason = %reason, "configuration refused");
                self.record_incomplete(&reason, tree.revision.clone());
                // Clears the announced intent; if that cannot be saved, the next start restarts it (safe side).
                let _ = self.restarter.request(RestartJob::default()).await;
                self.reporter
                    .send(ApplyReport {
                        errors: vec![reason.clone()],
                        ..report_of(
                            tree.revision,
                            revision,
                            ApplyOutcome::Incomplete,
                            &NotifyResponse::default(),
                        )
                    })
                    .await;
                Err(Error::ApplyIncomplete(reason))
            }
        }
    }

    /// The report of an apply that just ended (before any health check).
    pub(super) fn apply_report(
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
    pub(super) async fn skip_reverted(&self, revision: Option<String>) -> NotifyResponse {
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
        self.reporter
            .send(ApplyReport {
                errors: vec![reason.clone()],
                ..report_of(
                    revision,
                    current.clone(),
                    ApplyOutcome::Skipped,
                    &NotifyResponse::default(),
                )
            })
            .await;
        NotifyResponse {
            revision: current,
            skipped: Some(reason),
            ..NotifyResponse::default()
        }
    }

    /// Fetches the tree (`If-None-Match: revision`), recording the outcome in the status and the metrics.
    pub(super) async fn fetch(&self, revision: Option<&str>) -> Result<Fetched, Error> {
        let started = std::time::Instant::now();
        let fetched = self.client.fetch(revision).await;
        metrics::histogram!(crate::metrics::FETCH_DURATION).record(started.elapsed().as_secs_f64());
        let outcome = match &fetched {
            Ok(Fetched::Tree(..)) => "changed",
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
    pub(super) fn conclude(
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
    #[allow(clippy::disallowed_methods)] // the records are saved inside spawn_blocking
    pub(super) async fn apply_tree(
        &self,
        files: Vec<pryv_protocol::ConfFile>,
        request: &NotifyRequest,
        restart: Restart,
        project_before: &Project,
        target: Option<String>,
    ) -> Result<Result<apply::Applied, Error>, Error> {
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
        .map_err(Error::from)
    }

    /// What to restart for `changed`, given the compose project before and after the apply.
    pub(super) fn restart_job(
        &self,
        request: &NotifyRequest,
        listed: Option<&Vec<String>>,
        (project_before, project): (&Project, &Project),
        changed: &[PathBuf],
    ) -> RestartJob {
        let compose_file = self.config.data_folder.join(COMPOSE_FILE);
        let mut job = if listed.is_none() {
            let (up, services) =
                crate::compose::plan_restarts(project_before, project, &compose_file, changed);
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

    pub(super) fn record_incomplete(&self, reason: &str, revision: Option<String>) {
        self.status.update(|s| {
            s.last_apply_error = Some(reason.to_owned());
            s.failed_revision = revision;
        });
    }
}

/// What a fetch led to.
pub(super) enum Fetch {
    /// Written (or nothing to write), with the revision of the tree.
    Applied(apply::Applied, Option<String>),
    /// A reverted revision, not applied: the answer.
    Skipped(NotifyResponse),
}

/// The listed services this machine runs (`None` = no list), and the ones it does not.
pub(super) fn split_known(
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

pub(super) fn incomplete_reason(report: &NotifyResponse) -> String {
    let mut reasons = report.problems.clone();
    if !report.rejected.is_empty() {
        reasons.push(rejected_reason(report));
    }
    reasons.join("; ")
}

pub(super) fn rejected_reason(report: &NotifyResponse) -> String {
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
