//! The health gate: after the restarts of an apply, wait for the services to be healthy; if one is not, put
//! the previous files back and stay on the previous revision. The check in progress is a record of the
//! bookkeeping folder, so a follower killed during it checks again at its next start.

use std::sync::Arc;

use pryv_protocol::NotifyResponse;

use crate::apply::{self, Backup};
use crate::restart::{PROJECT, RestartJob, Ticket};
use crate::state_dir::StateDir;
use crate::status::HealthRecord;
use pryv_daemon::now_unix;
use pryv_protocol::{ApplyOutcome, ApplyReport};

use super::Follower;
use super::cycle::report_of;

/// A record of the bookkeeping folder: the revision reverted after a failed health check, not to be applied again.
pub(super) const REVERTED_FILE: &str = "reverted-revision";
/// A record of the bookkeeping folder: the health check in progress (what to put back if it fails).
pub(super) const GATE_FILE: &str = "health-gate.json";

impl Follower {
    /// After the restarts of an apply: wait for the services to be healthy; if one is not by the deadline,
    /// put the previous files back, restart the same services again and stay on the previous revision.
    pub(super) async fn gate(&self, gate: Gate) {
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
    pub(super) async fn revert(
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
        let unhealthy = self.masked(unhealthy);
        tracing::error!(service = %unhealthy.service, state = %unhealthy.state, revision = target.as_deref().unwrap_or("-"),
            "a restarted service is unhealthy; putting the previous files back");
        let mut errors = self.put_back(&backup, job, services).await;
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

    /// Log tails hold connection strings and passwords: masked before they are kept or reported.
    fn masked(
        &self,
        unhealthy: pryv_protocol::UnhealthyService,
    ) -> pryv_protocol::UnhealthyService {
        let scrubber = apply::scrubber_of_disk(
            &self.config.data_folder,
            [self.config.key.expose().to_owned()],
        );
        let mut unhealthy = unhealthy;
        for line in &mut unhealthy.log_tail {
            *line = scrubber.scrub(line);
        }
        unhealthy
    }

    /// Writes the previous files back and restarts the same services again; what went wrong.
    async fn put_back(&self, backup: &Backup, job: RestartJob, services: &[String]) -> Vec<String> {
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
        errors
    }

    pub(super) fn state(&self) -> StateDir {
        StateDir::of(&self.config.data_folder)
    }

    pub(super) fn forget_gate(&self) {
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
    pub(super) fn gated_services(&self, job: &RestartJob) -> Vec<String> {
        let mut services: Vec<String> = job.names().into_iter().filter(|s| s != PROJECT).collect();
        if job.up {
            services = self.project().names();
        }
        services
    }

    pub(super) fn finish_health(
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

    pub(super) fn remember_reverted(&self, revision: Option<&str>) -> Result<(), String> {
        self.state()
            .save_text(REVERTED_FILE, revision.unwrap_or(""))
            .map_err(|err| format!("cannot remember the reverted revision: {err}"))
    }
}

/// A health check in progress, saved in the bookkeeping folder until it ends.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct SavedGate {
    pub(super) target: Option<String>,
    pub(super) previous: Option<String>,
    pub(super) job: RestartJob,
    pub(super) backup: Backup,
}

/// `Err` when the check cannot be saved: the apply does not start (a stop during the check would skip it).
pub(super) fn save_gate(state: &StateDir, gate: &SavedGate) -> Result<(), String> {
    state.save(GATE_FILE, gate).map_err(|err| {
        format!(
            "{err} (the health check, saved before writing); nothing was changed. Free space or make the \
             folder writable"
        )
    })
}

/// What the health gate of one apply needs.
pub(super) struct Gate {
    pub(super) target: Option<String>,
    pub(super) previous: Option<String>,
    pub(super) backup: Backup,
    pub(super) job: RestartJob,
    pub(super) ticket: Ticket,
    pub(super) report: ApplyReport,
}
