//! The health gate: after the restarts of an apply, wait for the services to be healthy; if one is not, put
//! the previous files back and stay on the previous revision. The check in progress is a record of the
//! bookkeeping folder, so a follower killed during it checks again at its next start.

use std::sync::Arc;

use pryv_protocol::NotifyResponse;

use crate::apply::{self, Backup};
use crate::error::Error;
use crate::restart::{PROJECT, RestartJob, Ticket};
use crate::state_dir::StateDir;
use crate::status::HealthRecord;
use pryv_daemon::now_unix;
use pryv_protocol::{ApplyOutcome, ApplyReport};

use super::{Follower, report_of};

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
        let services = self.gated_services(&job).await;
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
            verdict = self.health.wait_healthy(&self.restarter, &services, &self.config.health) => verdict,
        };
        report.health_ms = health_started.elapsed().as_millis() as u64;
        let unhealthy = match verdict {
            Ok(()) => {
                tracing::info!(services = ?services, "restarted services are healthy");
                self.finish_health("healthy", None, Vec::new());
                self.forget_gate().await;
                report.outcome = ApplyOutcome::Healthy;
                self.reporter.send(report).await;
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
        let unhealthy = self.masked(unhealthy).await;
        tracing::error!(service = %unhealthy.service, state = %unhealthy.state, revision = target.as_deref().unwrap_or("-"),
            "a restarted service is unhealthy; putting the previous files back");
        let mut errors = self.put_back(&backup, job, services).await;
        if let Err(err) = self.remember_reverted(target.as_deref()).await {
            errors.push(err.to_string());
        }
        self.status.update(|s| {
            s.revision.clone_from(&previous);
            s.reverted_revision.clone_from(&target);
        });
        self.forget_gate().await;
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
        self.reporter.send(report).await;
    }

    /// Log tails hold connection strings and passwords: masked before they are kept or reported (with the
    /// secrets read from the files on disk, on a blocking thread). A tail that cannot be masked is dropped.
    #[allow(clippy::disallowed_methods)] // scrubber_of_disk runs in spawn_blocking
    async fn masked(
        &self,
        unhealthy: pryv_protocol::UnhealthyService,
    ) -> pryv_protocol::UnhealthyService {
        let data = self.config.data_folder.clone();
        let key = self.config.key.expose().to_owned();
        let mut unhealthy = unhealthy;
        let tail = std::mem::take(&mut unhealthy.log_tail);
        let masked = tokio::task::spawn_blocking(move || {
            let scrubber = apply::scrubber_of_disk(&data, [key]);
            tail.iter().map(|line| scrubber.scrub(line)).collect()
        })
        .await;
        match masked {
            Ok(tail) => unhealthy.log_tail = tail,
            Err(err) => tracing::warn!(error = %err, "cannot mask the log tail; it is left out"),
        }
        unhealthy
    }

    /// Writes the previous files back (on a blocking thread) and restarts the same services again; what went
    /// wrong.
    #[allow(clippy::disallowed_methods)] // restore runs in spawn_blocking
    async fn put_back(&self, backup: &Backup, job: RestartJob, services: &[String]) -> Vec<String> {
        let (backup, data, own) = (
            backup.clone(),
            self.config.data_folder.clone(),
            self.own_writes.clone(),
        );
        let restored = tokio::task::spawn_blocking(move || backup.restore(&data, &own)).await;
        let mut errors = match restored {
            Ok((_, errors)) => errors,
            Err(err) => vec![format!("putting the previous files back failed: {err}")],
        };
        let (again, saved) = self.restarter.request(job).await;
        if let Err(problem) = saved {
            errors.push(problem.to_string());
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

    #[allow(clippy::disallowed_methods)] // through the records' async door
    pub(super) async fn forget_gate(&self) {
        if let Err(err) = self.state().call(|s| s.remove(GATE_FILE)).await {
            tracing::warn!(error = %err, "cannot remove the saved health check; it runs again at the next start");
        }
    }

    /// At start: a health check a killed run left unfinished is run again (after the restarts it left
    /// undone), before any sync. Its files are still on disk, so a revert can still put the old ones back.
    pub async fn resume_gate(self: &Arc<Self>) {
        #[allow(clippy::disallowed_methods)] // through the records' async door
        let saved: SavedGate = match self.state().call(|s| s.load(GATE_FILE)).await {
            Ok(Some(saved)) => saved,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(error = %err, "unreadable saved health check; dropping it");
                self.forget_gate().await;
                return;
            }
        };
        if !self.config.health.enabled {
            self.forget_gate().await;
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
    pub(super) async fn gated_services(&self, job: &RestartJob) -> Vec<String> {
        let mut services: Vec<String> = job.names().into_iter().filter(|s| s != PROJECT).collect();
        if job.up {
            services = self.project().await.names();
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

    #[allow(clippy::disallowed_methods)] // through the records' async door
    pub(super) async fn remember_reverted(&self, revision: Option<&str>) -> Result<(), Error> {
        let revision = revision.unwrap_or("").to_owned();
        self.state()
            .call(move |s| s.save_text(REVERTED_FILE, &revision))
            .await
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
/// Blocking: the apply's thread.
#[allow(clippy::disallowed_methods)]
pub(super) fn save_gate(state: &StateDir, gate: &SavedGate) -> Result<(), Error> {
    state.save(GATE_FILE, gate).map_err(|err| Error::Unsaved {
        what: "the health check, saved before writing",
        consequence: "nothing was changed",
        source: Box::new(err),
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

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;

    use pryv_protocol::{ConfFile, UnhealthyService};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::apply::RemovalGuard;
    use crate::config::{Config, HealthConfig, Overrides};
    use crate::follower::{HealthCheck, Verdict};
    use crate::restart::Restarter;

    const KEY: &str = "key-0123456789abcdef";

    /// A health check with a fixed verdict that remembers which services it was asked about.
    struct FakeHealth {
        unhealthy: Option<UnhealthyService>,
        asked: Mutex<Vec<Vec<String>>>,
    }

    impl HealthCheck for FakeHealth {
        fn wait_healthy<'a>(
            &'a self,
            _restarter: &'a Restarter,
            services: &'a [String],
            _config: &'a HealthConfig,
        ) -> Verdict<'a> {
            self.asked.lock().unwrap().push(services.to_vec());
            let verdict = self.unhealthy.clone().map_or(Ok(()), Err);
            Box::pin(async move { verdict })
        }
    }

    /// The restarts run `restart` (`true` or `false`: a fake compose tool, no Docker).
    fn config(dir: &Path, restart: &str) -> Config {
        let path = dir.join("config-follower.json");
        let json = serde_json::json!({
            "http": {"ip": "127.0.0.1", "port": 0},
            "leader": {"url": "http://127.0.0.1:9", "auth": KEY},
            "paths": {"dataFolder": dir.join("pryv")},
            "restart": {"command": [restart]},
            "health": {"enabled": true}
        });
        std::fs::write(&path, json.to_string()).unwrap();
        Config::load(&path, &Overrides::default()).unwrap()
    }

    fn tree(content: &str) -> Vec<ConfFile> {
        vec![ConfFile {
            path: "/core/conf/core.yml".into(),
            content: content.into(),
            encoding: None,
        }]
    }

    /// A follower on revision r2 (`core.yml` = "new", written over r1's "old"), the restart of `core` queued
    /// and the health check recorded, as a sync leaves them before its gate; with the fake health check.
    async fn gated(
        dir: &Path,
        restart: &str,
        unhealthy: Option<UnhealthyService>,
    ) -> (Arc<Follower>, Arc<FakeHealth>, Gate) {
        let health = Arc::new(FakeHealth {
            unhealthy,
            asked: Mutex::new(Vec::new()),
        });
        let follower = Follower::new(config(dir, restart), &CancellationToken::new())
            .unwrap()
            .with_health_check(health.clone());
        let data = follower.config.data_folder.clone();
        let guard = RemovalGuard {
            max_percent: 100,
            confirmed: false,
        };
        let none = Default::default();
        let own = follower.own_writes.clone();
        std::fs::create_dir_all(&data).unwrap();
        let first = apply::apply(&data, &tree("old"), &none, &own, guard, &|_, _| Ok(())).unwrap();
        assert!(first.report.rejected.is_empty(), "{:?}", first.report);
        let applied =
            apply::apply(&data, &tree("new"), &none, &own, guard, &|_, _| Ok(())).unwrap();
        let job = RestartJob {
            up: false,
            services: ["core".to_owned()].into(),
        };
        let saved = SavedGate {
            target: Some("r2".into()),
            previous: Some("r1".into()),
            job: job.clone(),
            backup: applied.backup.clone(),
        };
        save_gate(&follower.state(), &saved).unwrap();
        let (ticket, queued) = follower.restarter.request(job.clone()).await;
        queued.unwrap();
        follower.status.update(|s| s.revision = Some("r2".into()));
        let report = report_of(
            Some("r2".into()),
            Some("r2".into()),
            ApplyOutcome::Applied,
            &NotifyResponse::default(),
        );
        let gate = Gate {
            target: saved.target,
            previous: saved.previous,
            backup: applied.backup,
            job,
            ticket,
            report,
        };
        (Arc::new(follower), health, gate)
    }

    fn on_disk(follower: &Follower) -> String {
        std::fs::read_to_string(follower.config.data_folder.join("core/conf/core.yml")).unwrap()
    }

    #[tokio::test]
    async fn healthy_services_keep_the_new_files_and_end_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let (follower, health, gate) = gated(dir.path(), "true", None).await;
        follower.gate(gate).await;

        assert_eq!(*health.asked.lock().unwrap(), vec![vec!["core".to_owned()]]);
        assert_eq!(on_disk(&follower), "new");
        let status = follower.status.snapshot();
        assert_eq!(status.revision.as_deref(), Some("r2"));
        assert_eq!(status.health.unwrap().outcome, "healthy");
        assert_eq!(status.last_report.unwrap().outcome, ApplyOutcome::Healthy);
        assert!(status.restarts["core"].ok);
        assert!(
            !follower.state().path(GATE_FILE).exists(),
            "the check is over"
        );
        assert!(!follower.state().path(REVERTED_FILE).exists());
    }

    #[tokio::test]
    async fn an_unhealthy_service_puts_the_previous_files_back_and_stays_on_the_previous_revision()
    {
        let dir = tempfile::tempdir().unwrap();
        let unhealthy = UnhealthyService {
            service: "core".into(),
            state: "exited (1)".into(),
            log_tail: vec![format!("cannot connect with {KEY}")],
        };
        let (follower, _, gate) = gated(dir.path(), "true", Some(unhealthy)).await;
        follower.gate(gate).await;

        assert_eq!(on_disk(&follower), "old", "the previous bytes are back");
        let status = follower.status.snapshot();
        assert_eq!(status.revision.as_deref(), Some("r1"));
        assert_eq!(status.reverted_revision.as_deref(), Some("r2"));
        let health = status.health.unwrap();
        assert_eq!(health.outcome, "reverted", "{:?}", health.errors);
        assert_eq!(health.unhealthy.unwrap().service, "core");
        let report = status.last_report.unwrap();
        assert_eq!(report.outcome, ApplyOutcome::Reverted);
        assert_eq!(report.current_revision.as_deref(), Some("r1"));
        let tail = report.unhealthy.unwrap().log_tail.join("\n");
        assert!(
            !tail.contains(KEY) && tail.contains("cannot connect"),
            "{tail}"
        );
        // Remembered across restarts, and the check is over.
        let reverted = follower.state().load_text(REVERTED_FILE).unwrap();
        assert_eq!(reverted.as_deref(), Some("r2"));
        assert!(!follower.state().path(GATE_FILE).exists());
    }

    #[tokio::test]
    async fn a_failing_restart_after_the_revert_is_reported_as_revert_failed() {
        let dir = tempfile::tempdir().unwrap();
        let unhealthy = UnhealthyService {
            service: "core".into(),
            state: "restarting".into(),
            log_tail: Vec::new(),
        };
        let (follower, _, gate) = gated(dir.path(), "false", Some(unhealthy)).await;
        follower.gate(gate).await;

        assert_eq!(on_disk(&follower), "old");
        let health = follower.status.snapshot().health.unwrap();
        assert_eq!(health.outcome, "revert-failed");
        assert!(
            health
                .errors
                .iter()
                .any(|e| e.contains("restarting core with the previous files failed")),
            "{:?}",
            health.errors
        );
    }
}
