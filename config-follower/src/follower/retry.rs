//! Retrying a cycle with capped exponential backoff and jitter: at start until the leader answers, and in the
//! background after an incomplete apply until the whole tree is on disk.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pryv_protocol::NotifyRequest;
use rand::Rng;

use crate::error::Error;

use super::{Follower, Restart, Until};

pub(super) const FIRST_RETRY: Duration = Duration::from_millis(500);
pub(super) const MAX_RETRY: Duration = Duration::from_secs(30);

impl Follower {
    /// Retries [`Follower::sync`] with capped exponential backoff and jitter until `until` holds; false if
    /// shutdown came first.
    pub async fn sync_until(self: &Arc<Self>, restart: Restart, until: Until) -> bool {
        let mut delay = FIRST_RETRY;
        let mut attempt = 0u32;
        loop {
            let outcome = self.sync(&NotifyRequest::default(), restart).await;
            let done = match (&outcome, until) {
                (Ok(_), _) | (Err(Error::ApplyIncomplete(_)), Until::Fetched) => true,
                (Err(_), _) => false,
            };
            if done {
                return true;
            }
            if let Err(err) = outcome {
                attempt += 1;
                let wait = with_jitter(delay);
                tracing::warn!(attempt, retry_in_ms = wait.as_millis() as u64, error = %err, "sync failed; retrying");
                tokio::select! {
                    _ = self.shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(wait) => {}
                }
                delay = (delay * 2).min(MAX_RETRY);
            }
        }
    }

    /// After a failed sync: retry in the background until the whole tree is on disk (one loop at a time).
    pub fn retry_in_background(self: &Arc<Self>) {
        if self.retrying.swap(true, Ordering::AcqRel) {
            return;
        }
        let follower = self.clone();
        tokio::spawn(async move {
            if follower.sync_until(Restart::Changed, Until::Applied).await {
                tracing::info!("converged with the leader");
            }
            follower.retrying.store(false, Ordering::Release);
        });
    }
}

/// `delay` ± 25 %, so followers restarted together do not retry in lockstep.
pub(super) fn with_jitter(delay: Duration) -> Duration {
    let factor = rand::rng().random_range(0.75..1.25);
    delay.mul_f64(factor)
}
