//! The audit log in etcd, shared by the replicas: one key per entry (`audit/<unix microseconds>-<unique>`, JSON),
//! so every replica's `GET /admin/audit` lists what was done through any of them. The elected replica keeps
//! the newest `keepAuditEntries` (etcd is no place for an unbounded log): its deletions are fenced to its
//! term like every other singleton write.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::client::{Etcd, Op};
use super::election::Election;
use crate::admin::db::AuditRow;
use crate::error::Error;

const AUDIT: &str = "audit/";
/// How often the elected replica trims the log.
const PRUNE_EVERY: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
struct Stored {
    at: i64,
    actor: String,
    action: String,
    detail: String,
    remote: String,
}

pub struct SharedAudit {
    etcd: Arc<Etcd>,
    keep: usize,
}

impl SharedAudit {
    pub fn new(etcd: Arc<Etcd>, keep: usize) -> Self {
        Self { etcd, keep }
    }

    pub async fn append(
        &self,
        at: i64,
        [actor, action, detail, remote]: [&str; 4],
    ) -> Result<(), Error> {
        let stored = Stored {
            at,
            actor: actor.to_owned(),
            action: action.to_owned(),
            detail: detail.to_owned(),
            remote: remote.to_owned(),
        };
        // Microseconds first (zero-padded) so key order is time order; a random part keeps two entries of
        // one microsecond apart.
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let key = format!("{AUDIT}{micros:020}-{}", crate::secret::generate());
        self.etcd
            .txn(
                &[],
                &[Op::Put {
                    key,
                    value: serde_json::to_vec(&stored)?,
                }],
            )
            .await?;
        Ok(())
    }

    /// Writes `row` as it was (a migration): keyed by its time and its place in the old log, so the order
    /// stays.
    pub async fn import(&self, row: &AuditRow) -> Result<(), Error> {
        let stored = Stored {
            at: row.at,
            actor: row.actor.clone(),
            action: row.action.clone(),
            detail: row.detail.clone(),
            remote: row.remote.clone(),
        };
        let micros = u64::try_from(row.at).unwrap_or(0) * 1_000_000
            + u64::try_from(row.id.rem_euclid(1_000_000)).unwrap_or(0);
        self.etcd
            .txn(
                &[],
                &[Op::Put {
                    key: format!("{AUDIT}{micros:020}-imported"),
                    value: serde_json::to_vec(&stored)?,
                }],
            )
            .await?;
        Ok(())
    }

    /// Newest first, at most `limit`; each entry's id is its etcd revision (unique, growing).
    pub async fn entries(&self, limit: usize) -> Result<Vec<AuditRow>, Error> {
        let kvs = self.etcd.ends(AUDIT, limit, false).await?;
        kvs.into_iter()
            .map(|kv| {
                let stored: Stored = serde_json::from_slice(&kv.value).map_err(|err| {
                    Error::Etcd(format!("an audit entry that is not ours: {err}"))
                })?;
                Ok(AuditRow {
                    id: kv.create_revision,
                    at: stored.at,
                    actor: stored.actor,
                    action: stored.action,
                    detail: stored.detail,
                    remote: stored.remote,
                })
            })
            .collect()
    }

    /// Deletes the oldest entries beyond the newest `keep`, fenced to `election`'s term; how many.
    pub async fn prune(&self, election: &Election) -> Result<usize, Error> {
        let Some(term) = election.term() else {
            return Ok(0);
        };
        let count = usize::try_from(self.etcd.count(AUDIT).await?).unwrap_or(0);
        if count <= self.keep {
            return Ok(0);
        }
        let extra = count - self.keep;
        // The first key kept: everything before it goes.
        let oldest = self.etcd.ends(AUDIT, extra + 1, true).await?;
        let Some(first_kept) = oldest.last() else {
            return Ok(0);
        };
        let prefix = self.etcd.key("");
        let end = first_kept
            .key
            .strip_prefix(&prefix)
            .unwrap_or_default()
            .to_owned();
        if !term.valid() {
            return Ok(0);
        }
        let pruned = self
            .etcd
            .txn(
                &[term.fence()],
                &[Op::DeleteRange {
                    key: AUDIT.to_owned(),
                    end,
                }],
            )
            .await?;
        Ok(if pruned { extra } else { 0 })
    }

    /// Trims the log while this replica is elected, until shutdown.
    pub fn spawn_pruning(self: &Arc<Self>, election: Arc<Election>, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut terms = election.terms();
            loop {
                match this.prune(&election).await {
                    Ok(0) => {}
                    Ok(pruned) => tracing::info!(pruned, "trimmed the shared audit log"),
                    Err(err) => tracing::warn!(error = %err, "cannot trim the shared audit log"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(PRUNE_EVERY) => {}
                    _ = terms.changed() => {}
                }
            }
        });
    }
}
