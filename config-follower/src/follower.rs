//! One fetch-apply-restart cycle ([`Follower::sync`]), shared by `POST /notify`, the start-up retry loop, the
//! optional poll and nothing else. Cycles never overlap: a lock serializes them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use pryv_protocol::{NotifyRequest, NotifyResponse};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::apply::{self, OwnWrites};
use crate::client::{Fetched, LeaderClient};
use crate::compose::{COMPOSE_FILE, Project};
use crate::config::Config;
use crate::error::Error;
use crate::restart::{PROJECT, RestartJob, Restarter};
use crate::status::{StatusStore, now_unix};

const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// The follower's shared state.
pub struct Follower {
    pub config: Config,
    pub status: Arc<StatusStore>,
    pub own_writes: Arc<OwnWrites>,
    pub restarter: Restarter,
    client: LeaderClient,
    cycle: tokio::sync::Mutex<()>,
}

impl Follower {
    /// Builds the client and starts the restart worker.
    pub fn new(config: Config, shutdown: &CancellationToken) -> Result<Self, Error> {
        let client = LeaderClient::new(&config)?;
        let status = Arc::new(StatusStore::new(config.leader_url.clone()));
        let restarter = Restarter::spawn(
            config.restart_command.clone(),
            config.data_folder.join(COMPOSE_FILE),
            config.restart_timeout,
            status.clone(),
            shutdown.clone(),
        );
        Ok(Self {
            config,
            status,
            own_writes: Arc::new(OwnWrites::default()),
            restarter,
            client,
            cycle: tokio::sync::Mutex::new(()),
        })
    }

    /// The machine's compose project (no services when the file is missing or unreadable).
    pub fn project(&self) -> Project {
        Project::load(&self.config.data_folder).unwrap_or_else(|err| {
            tracing::warn!(error = %err, "cannot read the compose file; no service will be restarted");
            Project::default()
        })
    }

    /// Fetches, writes, and (when `restart`) queues the restart of what changed, as `request` asks.
    pub async fn sync(
        &self,
        request: &NotifyRequest,
        restart: bool,
    ) -> Result<NotifyResponse, Error> {
        if let Some(listed) = &request.services {
            let known = self.project().names();
            let unknown: Vec<String> = listed
                .iter()
                .filter(|s| !known.contains(s))
                .cloned()
                .collect();
            if !unknown.is_empty() {
                return Err(Error::UnknownServices { unknown, known });
            }
        }
        let _one_cycle = self.cycle.lock().await;
        let project_before = self.project();
        let revision = self.status.snapshot().revision;
        let fetched = match self.client.fetch(revision.as_deref()).await {
            Ok(fetched) => fetched,
            Err(err) => {
                self.status
                    .update(|s| s.last_fetch_error = Some(err.to_string()));
                return Err(err);
            }
        };
        let applied = match fetched {
            Fetched::NotModified => apply::Applied::default(),
            Fetched::Tree(tree) => {
                let data_folder = self.config.data_folder.clone();
                let validators = self.config.validate.clone();
                let own = self.own_writes.clone();
                let mut applied = tokio::task::spawn_blocking(move || {
                    apply::apply(&data_folder, &tree.files, &validators, &own)
                })
                .await
                .map_err(|err| Error::Internal(err.to_string()))?;
                applied.report.revision = tree.revision;
                applied
            }
        };
        let revision = applied.report.revision.clone().or(revision);
        self.status.update(|s| {
            s.last_fetch = Some(now_unix());
            s.last_fetch_error = None;
            s.revision.clone_from(&revision);
        });
        let mut report = applied.report;
        report.revision = revision;

        let project = self.project();
        let compose_file = self.config.data_folder.join(COMPOSE_FILE);
        let mut job = RestartJob {
            up: request.services.is_none() && applied.changed.contains(&compose_file),
            services: project.affected(&applied.changed),
        };
        if job.up {
            // `up -d` creates or recreates these with their new files already in place.
            let recreated = project.recreated_since(&project_before);
            job.services.retain(|s| !recreated.contains(s));
        }
        if let Some(listed) = &request.services {
            job.services.retain(|s| listed.contains(s));
        }
        if request.force {
            let forced: BTreeSet<String> = match &request.services {
                Some(listed) => listed.iter().cloned().collect(),
                None => project.names().into_iter().collect(),
            };
            job.services.extend(forced);
        }
        tracing::info!(
            written = report.files.len(),
            unchanged = report.unchanged,
            removed = report.removed.len(),
            rejected = report.rejected.len(),
            revision = report.revision.as_deref().unwrap_or("-"),
            "configuration applied"
        );
        if restart {
            report.restarted = job.services.iter().cloned().collect();
            if job.up {
                report.restarted.insert(0, PROJECT.to_owned());
            }
            self.restarter.request(job);
        }
        Ok(report)
    }

    /// Retries [`Follower::sync`] with capped exponential backoff and jitter until it succeeds; false if
    /// `shutdown` came first.
    pub async fn sync_until_success(&self, restart: bool, shutdown: &CancellationToken) -> bool {
        let mut delay = FIRST_RETRY;
        let mut attempt = 0u32;
        loop {
            match self.sync(&NotifyRequest::default(), restart).await {
                Ok(_) => return true,
                Err(err) => {
                    attempt += 1;
                    let wait = with_jitter(delay);
                    tracing::warn!(attempt, retry_in_ms = wait.as_millis() as u64, error = %err, "fetch failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    delay = (delay * 2).min(MAX_RETRY);
                }
            }
        }
    }
}

/// `delay` ± 25 %, so followers restarted together do not retry in lockstep.
fn with_jitter(delay: Duration) -> Duration {
    let factor = rand::rng().random_range(0.75..1.25);
    delay.mul_f64(factor)
}
