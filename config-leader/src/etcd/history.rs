//! The settings history in etcd: one key per revision (`settings/history/000000000012`), the newest being the
//! settings in force. A save is one transaction that creates the key after the revision it was based on, only
//! if that key is still absent: two replicas saving from the same base never both succeed, and the numbers
//! have no gaps (a revision is written only after its predecessor was read as the newest).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::client::{Compare, Etcd, Op};
use crate::admin::db::RevisionRow;
use crate::error::Error;

const HISTORY: &str = "settings/history/";

fn key(revision: i64) -> String {
    format!("{HISTORY}{revision:012}")
}

/// One revision as stored (JSON).
#[derive(Serialize, Deserialize)]
struct Stored {
    revision: i64,
    author: String,
    at: i64,
    message: String,
    content: String,
}

impl Stored {
    fn row(self) -> RevisionRow {
        RevisionRow {
            revision: self.revision,
            author: self.author,
            at: self.at,
            message: self.message,
            content: self.content,
            commit: None,
        }
    }
}

fn decode(value: &[u8]) -> Result<RevisionRow, Error> {
    serde_json::from_slice::<Stored>(value)
        .map(Stored::row)
        .map_err(|err| Error::Etcd(format!("a settings revision that is not ours: {err}")))
}

/// The shared history, on one etcd client.
pub struct SharedHistory {
    etcd: Arc<Etcd>,
}

impl SharedHistory {
    pub fn new(etcd: Arc<Etcd>) -> Self {
        Self { etcd }
    }

    /// The key prefix a watch follows.
    pub fn prefix() -> &'static str {
        HISTORY
    }

    /// The settings in force: the newest revision (none before the first start).
    pub async fn latest(&self) -> Result<Option<RevisionRow>, Error> {
        self.etcd
            .last(HISTORY)
            .await?
            .map(|kv| decode(&kv.value))
            .transpose()
    }

    pub async fn revision(&self, revision: i64) -> Result<Option<RevisionRow>, Error> {
        self.etcd
            .get(&key(revision))
            .await?
            .map(|kv| decode(&kv.value))
            .transpose()
    }

    /// Every revision, newest first, without contents.
    pub async fn revisions(&self) -> Result<Vec<RevisionRow>, Error> {
        let (kvs, _) = self.etcd.list(HISTORY).await?;
        let mut rows = kvs
            .iter()
            .map(|kv| decode(&kv.value))
            .collect::<Result<Vec<_>, _>>()?;
        rows.reverse();
        for row in &mut rows {
            row.content.clear();
        }
        Ok(rows)
    }

    /// Writes `row` as it is (number, author, time, message, content) if its key is absent: a migration.
    pub async fn import(&self, row: &RevisionRow) -> Result<bool, Error> {
        let stored = Stored {
            revision: row.revision,
            author: row.author.clone(),
            at: row.at,
            message: row.message.clone(),
            content: row.content.clone(),
        };
        self.etcd
            .txn(
                &[Compare::Absent(key(row.revision))],
                &[Op::Put {
                    key: key(row.revision),
                    value: serde_json::to_vec(&stored)?,
                }],
            )
            .await
    }

    /// Saves `content` as revision `after + 1`, only if nobody saved it first: its number, or `None` when
    /// another replica did (the caller starts again from the newest).
    pub async fn append(
        &self,
        after: i64,
        author: &str,
        at: i64,
        message: &str,
        content: &str,
    ) -> Result<Option<i64>, Error> {
        let revision = after + 1;
        let stored = Stored {
            revision,
            author: author.to_owned(),
            at,
            message: message.to_owned(),
            content: content.to_owned(),
        };
        let saved = self
            .etcd
            .txn(
                &[Compare::Absent(key(revision))],
                &[Op::Put {
                    key: key(revision),
                    value: serde_json::to_vec(&stored)?,
                }],
            )
            .await?;
        Ok(saved.then_some(revision))
    }
}
