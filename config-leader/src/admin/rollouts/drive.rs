//! One task per running rollout: notify a wave, wait for its reports, pause, go on; stop at the first bad
//! report or a timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pryv_protocol::{ApplyOutcome, NotifyRequest};

use crate::admin::fleet::{Fleet, NotifyAnswer};
use crate::config::FollowerEntry;
use crate::follower_keys::{FollowerId, FollowerIndex};
use crate::store::TreeStore;
use pryv_daemon::now_unix_i64;

use super::model::{MemberState, Rollout, RolloutState, Wave};
use super::store::Rollouts;

const RECHECK: Duration = Duration::from_secs(1);

/// What a driving task needs besides the rollouts.
#[derive(Clone)]
pub struct Drive {
    pub rollouts: Arc<Rollouts>,
    pub fleet: Arc<Fleet>,
    pub store: TreeStore,
    pub followers: Arc<FollowerIndex>,
    /// etcd mode: the elected replica's term every write of the drive is fenced to (`None` with SQLite).
    pub term: Option<crate::etcd::election::Term>,
}

impl Drive {
    /// Runs rollout `id` wave by wave until it is done, stopped or aborted. The answer of the first wave's
    /// notifications goes to `first` (for `POST /admin/notify`).
    pub async fn run(self, id: i64, first: Option<tokio::sync::oneshot::Sender<NotifyAnswer>>) {
        self.run_while_allowed(id, first).await;
        if !self.may_act() {
            tracing::warn!(
                id,
                "not the elected replica any more: leaving the rollout to the one that is"
            );
        }
    }

    async fn run_while_allowed(
        &self,
        id: i64,
        first: Option<tokio::sync::oneshot::Sender<NotifyAnswer>>,
    ) {
        let rollouts = &self.rollouts;
        let mut first = first;
        loop {
            if !self.may_act() {
                return;
            }
            let Some(rollout) = rollouts.read_active(|a| a.get(&id).cloned()) else {
                return;
            };
            if rollout.state != RolloutState::Running {
                return;
            }
            let index = rollout.current_wave;
            if index >= rollout.waves.len() {
                rollouts
                    .update(id, self.term.as_ref(), |r| {
                        r.state = RolloutState::Done;
                        r.finished = Some(now_unix_i64());
                    })
                    .await;
                tracing::info!(id, "rollout done");
                return;
            }
            let started = rollout.waves[index].started.unwrap_or_else(now_unix_i64);
            rollouts
                .update(id, self.term.as_ref(), |r| {
                    r.waves[index].started = Some(started)
                })
                .await;
            // Followers waiting on `GET /conf?wait=` of this wave are released now.
            self.store.wake();
            // A replica that lost its term (or was stopped past its lease) tells nobody anything.
            if !self.may_act() {
                return;
            }
            let answer = self.notify_wave(&rollout, index).await;
            if let Some(first) = first.take() {
                let _ = first.send(answer);
            }
            if !self
                .wait_wave(id, index, started, rollout.wave_timeout_seconds)
                .await
            {
                return;
            }
            let more = rollouts
                .update(id, self.term.as_ref(), |r| {
                    r.waves[index].finished = Some(now_unix_i64());
                    // Absolute, not `+= 1`: a change is applied again on the store's newest copy when
                    // another write came in between (with replicas), and must mean the same.
                    r.current_wave = r.current_wave.max(index + 1);
                })
                .await
                .is_some_and(|r| r.current_wave < r.waves.len());
            if more && rollout.pause_seconds > 0 {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(rollout.pause_seconds)) => {}
                    _ = rollouts.signal.notified() => {}
                    _ = self.term_ended() => return,
                }
            }
        }
    }

    /// Whether this drive may still write and notify: always with SQLite; in etcd mode while the term it
    /// was started in is valid.
    fn may_act(&self) -> bool {
        self.term
            .as_ref()
            .is_none_or(crate::etcd::election::Term::valid)
    }

    /// Resolves when the term ends (never with SQLite).
    async fn term_ended(&self) {
        match &self.term {
            Some(term) => term.ended.cancelled().await,
            None => std::future::pending().await,
        }
    }

    fn member_ids(&self, wave: &Wave) -> Vec<(FollowerId, FollowerEntry)> {
        wave.followers
            .iter()
            .filter(|m| !m.state.is_final())
            .filter_map(|m| {
                self.followers
                    .with_ids()
                    .find(|(_, f)| m.is(f))
                    .map(|(id, f)| (id, f.clone()))
            })
            .collect()
    }

    async fn notify_wave(&self, rollout: &Rollout, index: usize) -> NotifyAnswer {
        let targets = self.member_ids(&rollout.waves[index]);
        let revisions: HashMap<String, Option<String>> = rollout
            .targets
            .iter()
            .map(|(role, rev)| (role.clone(), Some(rev.clone())))
            .collect();
        let request = NotifyRequest {
            services: rollout.services.clone(),
            confirm_removals: rollout.confirm_removals,
            ..NotifyRequest::default()
        };
        let answer = self.fleet.notify(targets, &request, &revisions).await;
        let failed: Vec<(String, String)> = answer
            .failures
            .iter()
            .map(|f| (f.url.clone(), f.error.clone()))
            .collect();
        self.rollouts
            .update(rollout.id, self.term.as_ref(), |r| {
                for member in r.waves[index]
                    .followers
                    .iter_mut()
                    .filter(|m| !m.state.is_final())
                {
                    match failed.iter().find(|(url, _)| *url == member.url) {
                        Some((_, error)) => {
                            member.state = MemberState::Unreachable;
                            member.detail = Some(error.clone());
                        }
                        None => member.state = MemberState::Notified,
                    }
                }
            })
            .await;
        answer
    }

    /// Waits for every follower of wave `index` to report; false when the rollout stopped (or was aborted).
    async fn wait_wave(&self, id: i64, index: usize, started: i64, timeout_s: u64) -> bool {
        let rollouts = &self.rollouts;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_s);
        let mut reports = self.fleet.next_report();
        loop {
            let Some(rollout) = rollouts.read_active(|a| a.get(&id).cloned()) else {
                return false;
            };
            if rollout.state != RolloutState::Running {
                return false;
            }
            let verdicts = self.verdicts(&rollout, index, started);
            let bad = verdicts
                .iter()
                .find(|(_, state, _)| state.is_final() && *state != MemberState::Healthy)
                .cloned();
            let updated = self
                .record_verdicts(id, index, &verdicts, bad.as_ref())
                .await;
            if bad.is_some() {
                tracing::warn!(id, wave = index + 1, reason = ?updated.and_then(|r| r.reason), "rollout stopped");
                return false;
            }
            let all_done = updated.is_some_and(|r| {
                r.waves[index]
                    .followers
                    .iter()
                    .all(|m| m.state == MemberState::Healthy)
            });
            if all_done {
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    self.time_out(id, index, timeout_s).await;
                    return false;
                }
                _ = reports.changed() => {}
                _ = rollouts.signal.notified() => {}
                _ = tokio::time::sleep(RECHECK) => {}
                _ = self.term_ended() => return false,
            }
            if !self.may_act() {
                return false;
            }
        }
    }

    /// Records each member's verdict; the first bad one stops the rollout with its reason.
    async fn record_verdicts(
        &self,
        id: i64,
        index: usize,
        verdicts: &[(usize, MemberState, Option<String>)],
        bad: Option<&(usize, MemberState, Option<String>)>,
    ) -> Option<Rollout> {
        self.rollouts
            .update(id, self.term.as_ref(), |r| {
                for (position, state, detail) in verdicts {
                    if let Some(member) = r.waves[index].followers.get_mut(*position) {
                        member.state = *state;
                        member.detail.clone_from(detail);
                    }
                }
                if let Some((position, state, _)) = bad {
                    let url = r.waves[index]
                        .followers
                        .get(*position)
                        .map_or_else(String::new, |m| m.label().to_owned());
                    r.state = RolloutState::Stopped;
                    r.reason = Some(format!(
                        "wave {}: follower {url} is {}",
                        index + 1,
                        serde_json::to_value(state)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    ));
                }
            })
            .await
    }

    /// Wave `index` did not finish in time: its members still waited for are timed out, the rollout stops.
    async fn time_out(&self, id: i64, index: usize, timeout_s: u64) {
        self.rollouts
            .update(id, self.term.as_ref(), |r| {
                for member in r.waves[index]
                    .followers
                    .iter_mut()
                    .filter(|m| !m.state.is_final())
                {
                    member.state = MemberState::TimedOut;
                }
                r.state = RolloutState::Stopped;
                r.reason = Some(format!("wave {} timed out after {timeout_s} s", index + 1));
            })
            .await;
        tracing::warn!(id, wave = index + 1, "rollout stopped: wave timed out");
    }

    /// Each member's state from the reports received since the wave started.
    fn verdicts(
        &self,
        rollout: &Rollout,
        index: usize,
        started: i64,
    ) -> Vec<(usize, MemberState, Option<String>)> {
        let mut verdicts = Vec::new();
        for (position, member) in rollout.waves[index]
            .followers
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.state.is_final())
        {
            let Some(id) = self.followers.id_of(&member.url, member.name.as_deref()) else {
                continue;
            };
            let Some((report, received)) = self.fleet.last_report_received(id) else {
                continue;
            };
            let target = rollout.targets.get(member.target_key());
            if received < started || report.revision.as_ref() != target {
                continue;
            }
            let state = match report.outcome {
                ApplyOutcome::Applied | ApplyOutcome::Unchanged | ApplyOutcome::Healthy => {
                    MemberState::Healthy
                }
                ApplyOutcome::Reverted => MemberState::Reverted,
                ApplyOutcome::Incomplete => MemberState::Incomplete,
                ApplyOutcome::Skipped => MemberState::Skipped,
            };
            let detail = report
                .unhealthy
                .as_ref()
                .map(|u| format!("{}: {}", u.service, u.state))
                .or_else(|| report.errors.first().cloned());
            verdicts.push((position, state, detail));
        }
        verdicts
    }
}

/// etcd mode: while this replica holds a term of the election, drives every running rollout (those left
/// running by a replica that went away, those created or resumed through any replica), each drive fenced
/// to the term. A drive ends with its term; the next term drives again.
pub fn drive_while_elected(
    state: crate::routes::AppState,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let Some(replica) = state.replica.clone() else {
        return;
    };
    tokio::spawn(async move {
        let mut terms = replica.election.terms();
        let mut changes = state.admin.rollouts.changes();
        let driving: Arc<std::sync::Mutex<std::collections::HashSet<i64>>> = Arc::default();
        let ended = Arc::new(tokio::sync::Notify::new());
        loop {
            if let Some(term) = replica.election.term() {
                for id in state.admin.rollouts.running_ids() {
                    let newly = driving
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(id);
                    if !newly {
                        continue;
                    }
                    tracing::info!(id, "driving the rollout as the elected replica");
                    let drive = Drive {
                        term: Some(term.clone()),
                        ..state.drive()
                    };
                    let (driving, ended) = (driving.clone(), ended.clone());
                    tokio::spawn(async move {
                        drive.run(id, None).await;
                        driving
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .remove(&id);
                        ended.notify_one();
                    });
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = terms.changed() => {}
                _ = changes.changed() => {}
                _ = ended.notified() => {}
            }
        }
    });
}
