//! Apply reports to the leader (`POST /conf/report`): the latest one is persisted
//! (`.config-follower/report.json`) and sent by one task, retried with backoff while the leader is away. A
//! newer report replaces an unsent older one: the leader wants to know where the machine stands now.

use std::sync::Arc;
use std::time::Duration;

use pryv_protocol::ApplyReport;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::client::LeaderClient;
use crate::state_dir::StateDir;
use crate::status::StatusStore;

const REPORT_FILE: &str = "report.json";
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(60);

/// Handle to the report sender.
#[derive(Clone)]
pub struct Reporter {
    latest: Arc<watch::Sender<Option<ApplyReport>>>,
    state: StateDir,
    /// Held (on a blocking thread) while the record and `latest` change together, so a delivered report's
    /// removal never deletes a newer one saved meanwhile.
    records: Arc<std::sync::Mutex<()>>,
    status: Arc<StatusStore>,
}

impl Reporter {
    /// Starts the sender; a report a previous run could not deliver is sent first.
    pub fn spawn(
        client: LeaderClient,
        state: &StateDir,
        status: Arc<StatusStore>,
        shutdown: CancellationToken,
    ) -> Self {
        // An unreadable report is dropped (logged): the next apply sends a newer one.
        #[allow(clippy::disallowed_methods)] // start-up: Follower::new runs on a blocking thread
        let unsent: Option<ApplyReport> = state.load(REPORT_FILE).unwrap_or_else(|err| {
            tracing::warn!(error = %err, "unreadable unsent apply report; dropping it");
            None
        });
        let reporter = Self {
            latest: Arc::new(watch::Sender::new(None)),
            state: state.clone(),
            records: Arc::new(std::sync::Mutex::new(())),
            status,
        };
        let receiver = reporter.latest.subscribe();
        if let Some(report) = unsent {
            // Already on disk: only handed to the sender.
            reporter.hand_over(report);
        }
        tokio::spawn(deliver(reporter.clone(), client, receiver, shutdown));
        reporter
    }

    /// Persists `report` (on a blocking thread) and hands it to the sender, replacing an unsent older one.
    #[allow(clippy::disallowed_methods)] // the record is saved in spawn_blocking
    pub async fn send(&self, report: ApplyReport) {
        let reporter = self.clone();
        let sent = tokio::task::spawn_blocking(move || {
            let _order = reporter.lock_records();
            if let Err(err) = reporter.state.save(REPORT_FILE, &report) {
                tracing::warn!(error = %err, "cannot persist the apply report; it is lost if the follower stops before sending it");
            }
            reporter.hand_over(report);
        })
        .await;
        if let Err(err) = sent {
            tracing::error!(error = %err, "the apply report task failed; the report is not sent");
        }
    }

    fn hand_over(&self, report: ApplyReport) {
        self.status.update(|s| {
            s.last_report = Some(report.clone());
            s.report_pending = true;
        });
        self.latest.send_replace(Some(report));
    }

    fn lock_records(&self) -> std::sync::MutexGuard<'_, ()> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The leader has `report`: its record goes, unless a newer report came meanwhile.
    #[allow(clippy::disallowed_methods)] // the record is removed in spawn_blocking
    async fn delivered(&self, report: &ApplyReport) {
        let (reporter, report) = (self.clone(), report.clone());
        let removed = tokio::task::spawn_blocking(move || {
            let _order = reporter.lock_records();
            if reporter.latest.borrow().as_ref() != Some(&report) {
                return;
            }
            if let Err(err) = reporter.state.remove(REPORT_FILE) {
                tracing::warn!(error = %err, "cannot remove the delivered report; it is sent again at the next start");
            }
            reporter.status.update(|s| s.report_pending = false);
        })
        .await;
        if let Err(err) = removed {
            tracing::warn!(error = %err, "the delivered report's record could not be removed");
        }
    }
}

async fn deliver(
    reporter: Reporter,
    client: LeaderClient,
    mut receiver: watch::Receiver<Option<ApplyReport>>,
    shutdown: CancellationToken,
) {
    loop {
        let report = receiver.borrow_and_update().clone();
        let mut replaced = false;
        if let Some(report) = report {
            let mut delay = FIRST_RETRY;
            loop {
                match client.report(&report).await {
                    Ok(()) => {
                        reporter.delivered(&report).await;
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "cannot send the apply report; retrying");
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                    // A newer report replaces this one: the outer loop takes it.
                    _ = receiver.changed() => { replaced = true; break }
                }
                delay = (delay * 2).min(MAX_RETRY);
            }
        }
        if replaced || receiver.has_changed().unwrap_or(false) {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = receiver.changed() => if changed.is_err() { return },
        }
    }
}
