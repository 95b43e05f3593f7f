//! The followers as the leader sees them: the last `GET /conf` of each (time, revision) and the outcome of the
//! last notification, and the notification fan-out itself (concurrent, bounded, per-follower timeout).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use pryv_protocol::{ApplyReport, NotifyRequest};
use serde::Serialize;

use crate::config::FollowerEntry;
use crate::error::Error;
use crate::follower_keys::FollowerId;
use pryv_daemon::now_unix_i64;

/// Answer of `POST /admin/notify`.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct NotifyAnswer {
    pub successes: Vec<NotifySuccess>,
    pub failures: Vec<NotifyFailure>,
    /// Followers not notified: they run their variant's current revision already (they fetched it and
    /// reported it applied). `{"all": true}` notifies them too.
    #[serde(default, rename = "upToDate", skip_serializing_if = "Vec::is_empty")]
    pub up_to_date: Vec<NotifySuccess>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NotifySuccess {
    pub url: String,
    pub role: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NotifyFailure {
    pub url: String,
    pub role: String,
    pub error: String,
}

/// Outcome of the last notification sent to a follower.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NotifyOutcome {
    pub at: i64,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the leader knows of one follower.
#[derive(Debug, Clone, Default)]
struct Seen {
    last_fetch: Option<i64>,
    revision: Option<String>,
    last_notify: Option<NotifyOutcome>,
    last_report: Option<ApplyReport>,
    /// Leader's clock when that report arrived.
    report_received: Option<i64>,
}

/// Per-follower records, by position in the configuration's `followers`.
pub struct Fleet {
    seen: Mutex<HashMap<FollowerId, Seen>>,
    /// Counts the reports received, so a rollout can wait for the next one.
    reports: tokio::sync::watch::Sender<u64>,
    client: reqwest::Client,
    timeout: Duration,
    concurrency: usize,
}

/// One line of `GET /admin/status`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FollowerStatus {
    pub url: String,
    pub role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// What it is served (`core`, `core@eu`, `core@eu#1a2b3c4d`): `currentRevision` is this variant's.
    pub variant: String,
    pub last_fetch: Option<i64>,
    pub revision: Option<String>,
    pub current_revision: Option<String>,
    pub up_to_date: bool,
    pub last_notify: Option<NotifyOutcome>,
    /// How its last apply ended (files, restarts, health, revert), as the follower reported it.
    pub last_report: Option<ApplyReport>,
}

impl Fleet {
    pub fn new(
        timeout: Duration,
        concurrency: usize,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, Error> {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(pryv_daemon::client_tls(ca_file).map_err(Error::Tls)?)
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .map_err(|err| Error::Tls(err.to_string()))?;
        Ok(Self {
            seen: Mutex::new(HashMap::new()),
            reports: tokio::sync::watch::Sender::new(0),
            client,
            timeout,
            concurrency: concurrency.max(1),
        })
    }

    fn with<T>(&self, change: impl FnOnce(&mut HashMap<FollowerId, Seen>) -> T) -> T {
        change(
            &mut self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// A follower fetched `revision`.
    pub fn fetched(&self, id: FollowerId, revision: &str) {
        self.with(|seen| {
            let entry = seen.entry(id).or_default();
            entry.last_fetch = Some(now_unix_i64());
            // The hot path: most fetches are of the revision already recorded (no allocation then).
            if entry.revision.as_deref() != Some(revision) {
                entry.revision = Some(revision.to_owned());
            }
        });
    }

    /// A follower reported how an apply ended.
    pub fn reported(&self, id: FollowerId, report: ApplyReport) {
        self.with(|seen| {
            let entry = seen.entry(id).or_default();
            if let Some(current) = &report.current_revision {
                entry.revision = Some(current.clone());
            }
            entry.last_report = Some(report);
            entry.report_received = Some(now_unix_i64());
        });
        self.reports.send_modify(|count| *count += 1);
    }

    /// The last report of a follower, with the leader's time of its arrival.
    pub fn last_report_received(&self, id: FollowerId) -> Option<(ApplyReport, i64)> {
        self.with(|seen| {
            let seen = seen.get(&id)?;
            Some((seen.last_report.clone()?, seen.report_received?))
        })
    }

    /// Reports kept from an earlier run (they arrived before any rollout of this run started).
    pub fn restore_report(&self, id: FollowerId, report: ApplyReport) {
        self.with(|seen| {
            let entry = seen.entry(id).or_default();
            entry.revision.clone_from(&report.current_revision);
            entry.last_report = Some(report);
            entry.report_received = Some(0);
        });
    }

    /// The revision a follower last fetched or reported running.
    pub fn known_revision(&self, id: FollowerId) -> Option<String> {
        self.with(|seen| seen.get(&id).and_then(|s| s.revision.clone()))
    }

    /// Resolves at the next report (from any follower).
    pub fn next_report(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reports.subscribe()
    }

    /// Whether a follower runs `current` already: it fetched it and its last report says it applied it.
    /// A follower that never reports (an old one) is never taken for current.
    pub fn runs(&self, id: FollowerId, current: Option<&str>) -> bool {
        let Some(current) = current else {
            return false;
        };
        self.with(|seen| {
            seen.get(&id).is_some_and(|s| {
                s.revision.as_deref() == Some(current)
                    && s.last_report.as_ref().is_some_and(|r| {
                        r.outcome.is_good() && r.revision.as_deref() == Some(current)
                    })
            })
        })
    }

    /// Status lines; `current` gives the current revision of each variant.
    pub fn status(
        &self,
        followers: &[FollowerEntry],
        current: &HashMap<String, Option<String>>,
    ) -> Vec<FollowerStatus> {
        self.with(|seen| {
            followers
                .iter()
                .enumerate()
                .map(|(index, follower)| {
                    let record = seen.get(&FollowerId(index)).cloned().unwrap_or_default();
                    let current_revision = current.get(follower.variant.key()).cloned().flatten();
                    FollowerStatus {
                        url: follower.url.clone(),
                        role: follower.role.clone(),
                        name: follower.name.clone(),
                        zone: follower.zone.clone(),
                        variant: follower.variant.key().to_owned(),
                        last_fetch: record.last_fetch,
                        // Fetched is not running: a follower that reverted or skipped the current
                        // revision (or could not write it) is behind whatever it fetched.
                        up_to_date: record.revision.is_some()
                            && record.revision == current_revision
                            && !record.last_report.as_ref().is_some_and(|r| {
                                !r.outcome.is_good() && r.revision == current_revision
                            }),
                        revision: record.revision,
                        current_revision,
                        last_notify: record.last_notify,
                        last_report: record.last_report,
                    }
                })
                .collect()
        })
    }

    /// Sends `POST {url}/notify` to each `(index, follower)` with its own key and its role's revision.
    pub async fn notify(
        &self,
        targets: Vec<(FollowerId, FollowerEntry)>,
        template: &NotifyRequest,
        revisions: &HashMap<String, Option<String>>,
    ) -> NotifyAnswer {
        let results: Vec<(FollowerId, FollowerEntry, Result<(), String>)> =
            futures::stream::iter(targets)
                .map(|(index, follower)| {
                    let body = NotifyRequest {
                        revision: revisions.get(follower.variant.key()).cloned().flatten(),
                        ..template.clone()
                    };
                    async move {
                        let result = self.notify_one(&follower, &body).await;
                        (index, follower, result)
                    }
                })
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
        let mut answer = NotifyAnswer::default();
        self.with(|seen| {
            for (index, follower, result) in results {
                let outcome = if result.is_ok() { "ok" } else { "failed" };
                metrics::counter!(crate::metrics::NOTIFICATIONS, "outcome" => outcome).increment(1);
                seen.entry(index).or_default().last_notify = Some(NotifyOutcome {
                    at: now_unix_i64(),
                    ok: result.is_ok(),
                    error: result.as_ref().err().cloned(),
                });
                match result {
                    Ok(()) => answer.successes.push(NotifySuccess {
                        url: follower.url,
                        role: follower.role,
                    }),
                    Err(error) => {
                        tracing::warn!(url = %follower.url, role = %follower.role, error = %error, "notification failed");
                        answer.failures.push(NotifyFailure {
                            url: follower.url,
                            role: follower.role,
                            error,
                        });
                    }
                }
            }
        });
        answer
    }

    async fn notify_one(
        &self,
        follower: &FollowerEntry,
        body: &NotifyRequest,
    ) -> Result<(), String> {
        let url = format!("{}/notify", follower.url.trim_end_matches('/'));
        let send = self
            .client
            .post(&url)
            .header("authorization", follower.key.expose())
            .json(body)
            .send();
        // The client's timeout covers the request; this also bounds a peer that trickles its answer.
        let response = tokio::time::timeout(self.timeout, send)
            .await
            .map_err(|_| format!("no answer within {} s", self.timeout.as_secs_f32()))?
            .map_err(|err| {
                if err.is_timeout() {
                    format!("no answer within {} s", self.timeout.as_secs_f32())
                } else if err.is_connect() {
                    format!("cannot connect: {}", pryv_daemon::error_chain(&err))
                } else {
                    pryv_daemon::error_chain(&err)
                }
            })?;
        if response.status().is_success() {
            Ok(())
        } else {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            Err(format!(
                "answered {status}: {}",
                text.chars().take(300).collect::<String>()
            ))
        }
    }
}
