//! The rollouts in etcd, shared by the replicas: one key per rollout (`rollouts/records/000000000007`, the
//! rollout as JSON), its exact target trees (`rollouts/trees/000000000007/<variant>`), and the held-change
//! flag (`flags/hold-changes`). Every replica takes them through its watch (the pins it serves); the elected
//! one drives them, each of its writes fenced to its term.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::client::{Compare, Etcd, Op};
use crate::admin::db::RolloutTree;
use crate::error::Error;

pub const ROLLOUTS: &str = "rollouts/";
const RECORDS: &str = "rollouts/records/";
const TREES: &str = "rollouts/trees/";
pub const HOLD: &str = "flags/hold-changes";
/// Tries of one change when another replica changes the same rollout in between.
const ATTEMPTS: usize = 5;

fn record(id: i64) -> String {
    format!("{RECORDS}{id:012}")
}

/// The writes of rollout `id` (its JSON) and of its target trees.
fn record_ops(id: i64, body: &str, trees: &[RolloutTree]) -> Result<Vec<Op>, Error> {
    let mut ops = vec![Op::Put {
        key: record(id),
        value: body.as_bytes().to_vec(),
    }];
    for tree in trees {
        let stored = StoredTree {
            variant: tree.variant.clone(),
            role: tree.role.clone(),
            revision: tree.revision.clone(),
            files: tree.files,
            body: B64.encode(&tree.body),
        };
        ops.push(Op::Put {
            key: format!("{TREES}{id:012}/{}", tree.variant),
            value: serde_json::to_vec(&stored)?,
        });
    }
    Ok(ops)
}

#[derive(Serialize, Deserialize)]
struct StoredTree {
    variant: String,
    role: String,
    revision: String,
    files: i64,
    /// The served body, base64.
    body: String,
}

/// What a fenced or compare-and-swap change came to.
pub enum Changed {
    Saved(String),
    /// The rollout is not in the store.
    Missing,
    /// The write was fenced off: this replica no longer holds the term.
    Fenced,
}

pub struct SharedRollouts {
    etcd: Arc<Etcd>,
}

impl SharedRollouts {
    pub fn new(etcd: Arc<Etcd>) -> Self {
        Self { etcd }
    }

    /// Every rollout (newest first) as JSON, and every target tree of those still held.
    pub async fn all(&self) -> Result<Vec<(i64, String)>, Error> {
        let (kvs, _) = self.etcd.list(RECORDS).await?;
        let prefix = self.etcd.key(RECORDS);
        let mut rows: Vec<(i64, String)> = kvs
            .into_iter()
            .filter_map(|kv| {
                let id = kv.key.strip_prefix(&prefix)?.parse().ok()?;
                Some((id, String::from_utf8(kv.value).ok()?))
            })
            .collect();
        rows.reverse();
        Ok(rows)
    }

    pub async fn trees(&self, ids: &[i64]) -> Result<Vec<RolloutTree>, Error> {
        let mut trees = Vec::new();
        for id in ids {
            let (kvs, _) = self.etcd.list(&format!("{TREES}{id:012}/")).await?;
            for kv in kvs {
                let stored: StoredTree = serde_json::from_slice(&kv.value).map_err(|err| {
                    Error::Etcd(format!("a rollout tree that is not ours: {err}"))
                })?;
                trees.push(RolloutTree {
                    variant: stored.variant,
                    role: stored.role,
                    revision: stored.revision,
                    files: stored.files,
                    body: B64
                        .decode(stored.body)
                        .map_err(|err| Error::Etcd(format!("a rollout tree body: {err}")))?,
                });
            }
        }
        Ok(trees)
    }

    /// Records a new rollout (`body(id)` gives its JSON once the id is known) and its trees in one
    /// transaction; its id.
    pub async fn insert(
        &self,
        body: impl Fn(i64) -> Result<String, Error> + Sync,
        trees: &[RolloutTree],
    ) -> Result<i64, Error> {
        for _ in 0..ATTEMPTS {
            let prefix = self.etcd.key(RECORDS);
            let last = self
                .etcd
                .last(RECORDS)
                .await?
                .and_then(|kv| kv.key.strip_prefix(&prefix)?.parse::<i64>().ok())
                .unwrap_or(0);
            let id = last + 1;
            let ops = record_ops(id, &body(id)?, trees)?;
            if self.etcd.txn(&[Compare::Absent(record(id))], &ops).await? {
                return Ok(id);
            }
        }
        Err(Error::Conflict(
            "other replicas keep creating rollouts at the same time; retry".into(),
        ))
    }

    /// Writes rollout `id` (its JSON) and its trees as they are, if absent: a migration.
    pub async fn import(&self, id: i64, body: &str, trees: &[RolloutTree]) -> Result<bool, Error> {
        let ops = record_ops(id, body, trees)?;
        self.etcd.txn(&[Compare::Absent(record(id))], &ops).await
    }

    /// Changes rollout `id` as `change` says (on what the store holds), only while `fence` holds when
    /// given (the elected replica's term).
    pub async fn change(
        &self,
        id: i64,
        fence: Option<&Compare>,
        change: &(dyn Fn(&str) -> Result<String, Error> + Sync),
    ) -> Result<Changed, Error> {
        for _ in 0..ATTEMPTS {
            let Some(kv) = self.etcd.get(&record(id)).await? else {
                return Ok(Changed::Missing);
            };
            let before = String::from_utf8(kv.value.clone())
                .map_err(|_| Error::Etcd("a rollout that is not UTF-8".into()))?;
            let after = change(&before)?;
            let mut compare = vec![Compare::ValueIs(record(id), kv.value)];
            compare.extend(fence.cloned());
            let saved = self
                .etcd
                .txn(
                    &compare,
                    &[Op::Put {
                        key: record(id),
                        value: after.clone().into_bytes(),
                    }],
                )
                .await?;
            if saved {
                return Ok(Changed::Saved(after));
            }
            if let Some(Compare::ValueIs(key, value)) = fence {
                let holder = self.etcd.get(key).await?;
                if holder.map(|kv| kv.value).as_ref() != Some(value) {
                    return Ok(Changed::Fenced);
                }
            }
        }
        Err(Error::Conflict(format!(
            "rollout {id} keeps being changed through other replicas; retry"
        )))
    }

    pub async fn hold(&self) -> Result<bool, Error> {
        Ok(self
            .etcd
            .get(HOLD)
            .await?
            .is_some_and(|kv| kv.value == b"1"))
    }

    /// Holds a change (`on`) or lets it go: a compare-and-swap on the flag as read, so two replicas setting
    /// it at once both see what they replaced.
    pub async fn set_hold(&self, on: bool) -> Result<(), Error> {
        let value = if on { b"1".to_vec() } else { b"0".to_vec() };
        for _ in 0..ATTEMPTS {
            let compare = match self.etcd.get(HOLD).await? {
                Some(kv) if kv.value == value => return Ok(()),
                Some(kv) => Compare::ValueIs(HOLD.to_owned(), kv.value),
                None => Compare::Absent(HOLD.to_owned()),
            };
            let put = Op::Put {
                key: HOLD.to_owned(),
                value: value.clone(),
            };
            if self.etcd.txn(&[compare], &[put]).await? {
                return Ok(());
            }
        }
        Err(Error::Conflict(
            "the held change keeps being set and released through other replicas; retry".into(),
        ))
    }
}
