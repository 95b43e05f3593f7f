//! The election of the one replica that does singleton work (driving rollouts): a key created only if
//! absent, attached to a lease this replica keeps alive. The replica holds a *term* while its key is in
//! place: every write of singleton work is fenced (its transaction also compares the key with this term's
//! value, so a replica that lost the election writes nothing), and a term also ends locally, without asking
//! etcd, once the lease may have expired (`valid`): a replica stopped (SIGSTOP) and resumed after its lease
//! makes no write and sends no notification, even before it learns it lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::client::{Compare, Etcd, Op};
use crate::error::Error;

const KEY: &str = "election/driver";

/// One term of this replica as the elected one.
#[derive(Clone)]
pub struct Term {
    /// The election key's value for this term: what fenced writes compare.
    pub value: String,
    lease: i64,
    /// The lease's time, as granted.
    ttl: Duration,
    /// Until when the lease is certainly alive (monotonic clock, advanced at each keep-alive).
    valid_until: Arc<std::sync::Mutex<Instant>>,
    /// Cancelled when the term ends (lost lease, shutdown).
    pub ended: CancellationToken,
}

impl Term {
    /// Whether this replica may still act as the elected one: the term did not end and its lease cannot
    /// have expired yet.
    pub fn valid(&self) -> bool {
        !self.ended.is_cancelled()
            && Instant::now()
                < *self
                    .valid_until
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The comparison that fences a write to this term.
    pub fn fence(&self) -> Compare {
        Compare::ValueIs(KEY.to_owned(), self.value.as_bytes().to_vec())
    }
}

/// This replica's candidacy: the term it holds, if any.
pub struct Election {
    etcd: Arc<Etcd>,
    ttl: Duration,
    name: String,
    term: tokio::sync::watch::Sender<Option<Term>>,
}

impl Election {
    pub fn new(etcd: Arc<Etcd>, ttl: Duration) -> Self {
        Self {
            etcd,
            ttl,
            name: format!("{}-{}", std::process::id(), crate::secret::generate()),
            term: tokio::sync::watch::Sender::new(None),
        }
    }

    /// The term in force (a valid one), if this replica is the elected one.
    pub fn term(&self) -> Option<Term> {
        self.term.borrow().clone().filter(Term::valid)
    }

    /// Changes of the term (won, lost).
    pub fn terms(&self) -> tokio::sync::watch::Receiver<Option<Term>> {
        self.term.subscribe()
    }

    /// Campaigns until shutdown: wins when the key is absent, keeps the lease alive while it holds it,
    /// campaigns again after losing it.
    pub fn spawn(self: &Arc<Self>, shutdown: CancellationToken) {
        let this = self.clone();
        metrics::gauge!(crate::metrics::ELECTED).set(0.0);
        tokio::spawn(async move {
            loop {
                if shutdown.is_cancelled() {
                    break;
                }
                match this.campaign().await {
                    Ok(Some(term)) => {
                        tracing::info!(term = %term.value, "elected to drive rollouts");
                        this.term.send_replace(Some(term.clone()));
                        metrics::gauge!(crate::metrics::ELECTED).set(1.0);
                        this.hold(&term, &shutdown).await;
                        term.ended.cancel();
                        this.term.send_replace(None);
                        metrics::gauge!(crate::metrics::ELECTED).set(0.0);
                        tracing::warn!(term = %term.value, "no longer the replica that drives rollouts");
                    }
                    Ok(None) => {}
                    Err(err) => tracing::debug!(error = %err, "election: cannot campaign now"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(self_retry(this.ttl)) => {}
                }
            }
            if let Some(term) = this.term.send_replace(None) {
                term.ended.cancel();
            }
        });
    }

    /// One try: a lease, then the key if absent. `None`: another replica holds it.
    async fn campaign(&self) -> Result<Option<Term>, Error> {
        // Held by another replica: no lease asked for (it would only expire unused).
        if self.etcd.get(KEY).await?.is_some() {
            return Ok(None);
        }
        let asked = Instant::now();
        let seconds = i64::try_from(self.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let (lease, granted) = self.etcd.grant_for(seconds).await?;
        let ttl = Duration::from_secs(u64::try_from(granted).unwrap_or(u64::MAX));
        let value = format!("{}-{lease}", self.name);
        let won = self
            .etcd
            .txn(
                &[Compare::Absent(KEY.to_owned())],
                &[Op::PutLeased {
                    key: KEY.to_owned(),
                    value: value.clone().into_bytes(),
                    lease,
                }],
            )
            .await?;
        if !won {
            return Ok(None);
        }
        Ok(Some(Term {
            value,
            lease,
            ttl,
            valid_until: Arc::new(std::sync::Mutex::new(asked + ttl)),
            ended: CancellationToken::new(),
        }))
    }

    /// Keeps the term's lease alive every third of its time; returns when it is lost (expired, or not
    /// renewed in time) or at shutdown.
    async fn hold(&self, term: &Term, shutdown: &CancellationToken) {
        let lease = term.lease;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(term.ttl / 3) => {}
            }
            if !term.valid() {
                return;
            }
            let asked = Instant::now();
            match self.etcd.keep_alive(lease).await {
                Ok(left) if left > 0 => {
                    *term
                        .valid_until
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = asked + term.ttl;
                }
                Ok(_) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot keep the election lease alive");
                    if !term.valid() {
                        return;
                    }
                }
            }
        }
    }
}

/// Pause between two campaigns.
fn self_retry(ttl: Duration) -> Duration {
    (ttl / 4).max(Duration::from_millis(200))
}
