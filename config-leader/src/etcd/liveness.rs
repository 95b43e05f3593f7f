//! Whether this replica still reaches a quorum of etcd: a linearizable read every fraction of
//! `isolatedAfterSeconds`; without an answer for that long, the replica is isolated. An isolated replica
//! refuses every change (503 `leader-isolated`) and answers `GET /conf` only with 304 for the revision a
//! follower already has, so a follower moves on to a replica that can vouch for what it serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::client::Etcd;

pub struct Liveness {
    started: Instant,
    /// Milliseconds after `started` of the last quorum answer.
    last_ok: AtomicU64,
    isolated_after: Duration,
}

impl Liveness {
    /// Counted as reaching the store now (the start has just read it).
    pub fn new(isolated_after: Duration) -> Self {
        Self {
            started: Instant::now(),
            last_ok: AtomicU64::new(0),
            isolated_after,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A quorum answered just now.
    pub fn confirm(&self) {
        self.last_ok.fetch_max(self.now_ms(), Ordering::Relaxed);
    }

    /// Seconds since the last quorum answer, when longer than the limit.
    pub fn isolated_for(&self) -> Option<u64> {
        let silent = self
            .now_ms()
            .saturating_sub(self.last_ok.load(Ordering::Relaxed));
        let limit = u64::try_from(self.isolated_after.as_millis()).unwrap_or(u64::MAX);
        (silent > limit).then_some(silent / 1000)
    }

    /// Checks the store until shutdown, logging each change between reachable and isolated.
    pub fn spawn(self: &Arc<Self>, etcd: Arc<Etcd>, shutdown: CancellationToken) {
        let this = self.clone();
        let period = (self.isolated_after / 4).max(Duration::from_millis(100));
        metrics::gauge!(crate::metrics::STORE_ISOLATED).set(0.0);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut was_isolated = false;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let answered = tokio::time::timeout(this.isolated_after, etcd.revision()).await;
                match answered {
                    Ok(Ok(_)) => this.confirm(),
                    Ok(Err(err)) => tracing::debug!(error = %err, "etcd store check failed"),
                    Err(_) => tracing::debug!("etcd store check timed out"),
                }
                let isolated = this.isolated_for().is_some();
                if isolated != was_isolated {
                    if isolated {
                        tracing::error!(
                            "cut off from the etcd store: refusing changes, serving only what followers already have"
                        );
                    } else {
                        tracing::info!(
                            "the etcd store answers again: serving and accepting changes"
                        );
                    }
                    metrics::gauge!(crate::metrics::STORE_ISOLATED)
                        .set(f64::from(u8::from(isolated)));
                    was_isolated = isolated;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolated_only_after_the_limit_without_an_answer() {
        let liveness = Liveness::new(Duration::from_millis(0));
        liveness.confirm();
        // A limit of zero: any silence at all counts once a millisecond has passed.
        let later = liveness.now_ms() + 2;
        while liveness.now_ms() < later {
            std::hint::spin_loop();
        }
        assert!(liveness.isolated_for().is_some());
        let patient = Liveness::new(Duration::from_secs(3600));
        assert_eq!(patient.isolated_for(), None);
    }
}
