//! The followers' last apply reports in etcd: a follower reports to the replica it talks to, and every
//! replica learns it (what notifications skip as up to date, what the console's fleet shows, what a rollout
//! waits for). One key per follower URL (`reports/<url>`, the masked report as JSON).

use std::sync::Arc;

use super::client::{Etcd, Op};
use crate::error::Error;

pub const REPORTS: &str = "reports/";

pub struct SharedReports {
    etcd: Arc<Etcd>,
}

impl SharedReports {
    pub fn new(etcd: Arc<Etcd>) -> Self {
        Self { etcd }
    }

    /// Keeps `body` (a masked report, JSON) as the last report of the follower at `url`.
    pub async fn put(&self, url: &str, body: &str) -> Result<(), Error> {
        self.etcd
            .txn(
                &[],
                &[Op::Put {
                    key: format!("{REPORTS}{url}"),
                    value: body.as_bytes().to_vec(),
                }],
            )
            .await?;
        Ok(())
    }

    /// The report stored under the full key `key` (as a watch names it): (follower URL, JSON).
    pub async fn at(&self, key: &str) -> Result<Option<(String, Vec<u8>)>, Error> {
        let Some(url) = key.strip_prefix(&self.etcd.key(REPORTS)) else {
            return Ok(None);
        };
        let name = format!("{REPORTS}{url}");
        Ok(self
            .etcd
            .get(&name)
            .await?
            .map(|kv| (url.to_owned(), kv.value)))
    }

    /// Every follower's last report: (URL, JSON).
    pub async fn all(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let prefix = self.etcd.key(REPORTS);
        let (kvs, _) = self.etcd.list(REPORTS).await?;
        Ok(kvs
            .into_iter()
            .filter_map(|kv| Some((kv.key.strip_prefix(&prefix)?.to_owned(), kv.value)))
            .collect())
    }
}
