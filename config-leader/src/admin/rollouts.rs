//! Rollouts: a notification sent wave by wave. Each wave's followers are notified with the revision of the
//! rollout's target; the next wave starts only when every follower of this one reported that revision
//! healthy (after a pause). The first unhealthy, reverted or incomplete follower, or a wave that times out,
//! stops the rollout: the followers of later waves keep the revision they run (`GET /conf` holds them back)
//! until the operator resumes or aborts. A rollout is saved in SQLite at each step and picked up again when
//! the leader starts.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use pryv_protocol::{ApplyOutcome, NotifyRequest};
use serde::{Deserialize, Serialize};

use crate::admin::Admin;
use crate::admin::fleet::NotifyAnswer;
use crate::auth::{FollowerId, FollowerIndex};
use crate::config::FollowerEntry;
use crate::error::Error;
use crate::store::TreeStore;
use pryv_daemon::now_unix_i64;

const DEFAULT_WAVE_TIMEOUT_S: u64 = 600;
const RECHECK: Duration = Duration::from_secs(1);

/// The rollout part of a `POST /admin/notify` body.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    /// Waves in order; followers no wave names form a last wave.
    #[serde(default)]
    pub waves: Option<Vec<WaveSpec>>,
    /// Shorthand: a first wave of this many followers, then waves of `batchSize`.
    #[serde(default)]
    pub canary: Option<usize>,
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Pause between two waves.
    #[serde(default)]
    pub pause_seconds: Option<u64>,
    /// `unhealthy` (the default, and the only choice): stop at the first follower not healthy.
    #[serde(default)]
    pub stop_on: Option<String>,
    /// How long a wave may take before the rollout stops (default 600).
    #[serde(default)]
    pub wave_timeout_seconds: Option<u64>,
}

impl Strategy {
    pub fn is_set(&self) -> bool {
        self.waves.is_some() || self.canary.is_some() || self.batch_size.is_some()
    }
}

/// One wave: named followers (name, URL, or a URL pattern with `*`), every follower of some roles, or a
/// share of the followers not yet placed.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum WaveSpec {
    Followers { followers: Vec<String> },
    Roles { roles: Vec<String> },
    Percent { percent: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutState {
    Running,
    /// Stopped by an unhealthy follower or a timeout; later waves held back until resume or abort.
    Stopped,
    Done,
    Aborted,
    /// A newer notification replaced it.
    Superseded,
}

impl RolloutState {
    fn holds(self) -> bool {
        matches!(self, Self::Running | Self::Stopped)
    }
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Done => "done",
            Self::Aborted => "aborted",
            Self::Superseded => "superseded",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MemberState {
    Pending,
    Notified,
    /// The notification did not arrive (a follower that long-polls still gets the revision).
    Unreachable,
    Healthy,
    Reverted,
    Incomplete,
    Skipped,
    TimedOut,
}

impl MemberState {
    fn is_final(self) -> bool {
        matches!(
            self,
            Self::Healthy | Self::Reverted | Self::Incomplete | Self::Skipped | Self::TimedOut
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaveMember {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub role: String,
    pub state: MemberState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl WaveMember {
    /// A follower is known to a rollout by its URL and name (never by its key).
    fn is(&self, follower: &FollowerEntry) -> bool {
        self.url == follower.url && self.name == follower.name
    }

    fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.url)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    pub followers: Vec<WaveMember>,
    pub started: Option<i64>,
    pub finished: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub id: i64,
    pub state: RolloutState,
    pub author: String,
    pub started: i64,
    pub finished: Option<i64>,
    /// The revision each role rolls out.
    pub targets: BTreeMap<String, String>,
    pub waves: Vec<Wave>,
    /// Index of the wave in progress (or where it stopped).
    pub current_wave: usize,
    pub pause_seconds: u64,
    pub wave_timeout_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<String>>,
    #[serde(default)]
    pub confirm_removals: bool,
    /// Why it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Which tree `GET /conf` gives a follower while a rollout concerns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// Its wave has not started: it keeps what it runs.
    Hold,
    /// Its wave started: this revision, not a newer one.
    Target(String),
}

/// The rollouts in force, their pins, and the database behind them.
pub struct Rollouts {
    db: Arc<crate::admin::db::Db>,
    /// Running and stopped rollouts, by id.
    active: Mutex<BTreeMap<i64, Rollout>>,
    /// By follower URL and name.
    pins: RwLock<HashMap<(String, Option<String>), Pin>>,
    /// Wakes a driving task early (abort).
    signal: tokio::sync::Notify,
    /// A settings change saved with `?hold=true`: no follower outside a rollout gets a newer tree until
    /// the next notification (kept across restarts).
    hold: std::sync::atomic::AtomicBool,
}

const HOLD_FLAG: &str = "hold-changes";

impl Rollouts {
    /// Loads the rollouts a previous run left running or stopped.
    pub fn load(db: Arc<crate::admin::db::Db>) -> Result<Self, Error> {
        let mut active = BTreeMap::new();
        for (id, body) in db.rollouts(100)? {
            match serde_json::from_str::<Rollout>(&body) {
                Ok(rollout) if rollout.state.holds() => {
                    active.insert(id, rollout);
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(id, error = %err, "unreadable rollout in the database"),
            }
        }
        let hold = db.flag(HOLD_FLAG)?;
        let rollouts = Self {
            db,
            active: Mutex::new(active),
            pins: RwLock::new(HashMap::new()),
            signal: tokio::sync::Notify::new(),
            hold: std::sync::atomic::AtomicBool::new(hold),
        };
        rollouts.refresh_pins();
        Ok(rollouts)
    }

    fn with_active<T>(&self, change: impl FnOnce(&mut BTreeMap<i64, Rollout>) -> T) -> T {
        change(
            &mut self
                .active
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The pin of the follower at `url`, if a rollout (or a held change) holds it.
    pub fn pin(&self, follower: &FollowerEntry) -> Option<Pin> {
        let pins = self
            .pins
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pinned = if pins.is_empty() {
            None
        } else {
            pins.get(&(follower.url.clone(), follower.name.clone()))
                .cloned()
        };
        pinned.or_else(|| self.holding().then_some(Pin::Hold))
    }

    /// Whether a change saved with `?hold=true` waits for a notification.
    pub fn holding(&self) -> bool {
        self.hold.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Holds every follower outside a rollout on what it has (`on`), or lets them fetch again.
    pub fn set_hold(&self, on: bool) -> Result<(), Error> {
        if self.holding() == on {
            return Ok(());
        }
        self.db.set_flag(HOLD_FLAG, on)?;
        self.hold.store(on, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    fn refresh_pins(&self) {
        let pins = self.with_active(|active| {
            let mut pins = HashMap::new();
            // Older first, so the newest rollout's pin wins.
            for rollout in active.values().filter(|r| r.state.holds()) {
                for (index, wave) in rollout.waves.iter().enumerate() {
                    let released = index < rollout.current_wave
                        || (index == rollout.current_wave && wave.started.is_some());
                    for member in &wave.followers {
                        let pin = match rollout.targets.get(&member.role) {
                            Some(target) if released => Pin::Target(target.clone()),
                            _ => Pin::Hold,
                        };
                        pins.insert((member.url.clone(), member.name.clone()), pin);
                    }
                }
            }
            pins
        });
        *self
            .pins
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = pins;
    }

    fn save(&self, rollout: &Rollout) {
        let saved = serde_json::to_string(rollout)
            .map_err(|err| Error::Internal(err.to_string()))
            .and_then(|body| {
                self.db
                    .update_rollout(rollout.id, rollout.state.as_str(), &body)
            });
        if let Err(err) = saved {
            tracing::error!(id = rollout.id, error = %err, "cannot save the rollout");
        }
    }

    /// Changes rollout `id` (if active), saves it, refreshes the pins; returns the new state.
    fn update(&self, id: i64, change: impl FnOnce(&mut Rollout)) -> Option<Rollout> {
        let updated = self.with_active(|active| {
            let rollout = active.get_mut(&id)?;
            change(rollout);
            let copy = rollout.clone();
            if !rollout.state.holds() {
                active.remove(&id);
            }
            Some(copy)
        })?;
        self.save(&updated);
        self.refresh_pins();
        Some(updated)
    }

    /// How many rollouts are running and how many stopped.
    pub fn held_counts(&self) -> (usize, usize) {
        self.with_active(|active| {
            let running = active
                .values()
                .filter(|r| r.state == RolloutState::Running)
                .count();
            (running, active.len() - running)
        })
    }

    /// Every rollout still held, for the drivers to pick up at start.
    pub fn running_ids(&self) -> Vec<i64> {
        self.with_active(|active| {
            active
                .values()
                .filter(|r| r.state == RolloutState::Running)
                .map(|r| r.id)
                .collect()
        })
    }

    /// Ends every held rollout and a held change: a newer notification replaces them.
    pub fn supersede_all(&self) {
        self.supersede_except(None);
    }

    fn supersede_except(&self, keep: Option<i64>) {
        let ids: Vec<i64> = self.with_active(|active| {
            active
                .keys()
                .copied()
                .filter(|id| Some(*id) != keep)
                .collect()
        });
        for id in ids {
            self.update(id, |r| {
                r.state = RolloutState::Superseded;
                r.finished = Some(now_unix_i64());
            });
        }
        self.refresh_pins();
        // Last: until here a held change still holds everyone the pins do not cover yet.
        if let Err(err) = self.set_hold(false) {
            tracing::error!(error = %err, "cannot release the held change");
        }
        self.signal.notify_waiters();
    }

    /// Creates a rollout of `targets` (followers of the roles asked for) in waves planned by `strategy`.
    pub fn create(
        &self,
        strategy: &Strategy,
        targets: &[(FollowerId, FollowerEntry)],
        revisions: &HashMap<String, Option<String>>,
        request: &NotifyRequest,
        author: &str,
    ) -> Result<Rollout, Error> {
        if let Some(stop_on) = &strategy.stop_on
            && stop_on != "unhealthy"
        {
            return Err(Error::BadRequest(format!(
                "stopOn: {stop_on:?} is not known; the only choice is \"unhealthy\""
            )));
        }
        let waves = plan(strategy, targets)?;
        let mut rollout = Rollout {
            id: 0,
            state: RolloutState::Running,
            author: author.to_owned(),
            started: now_unix_i64(),
            finished: None,
            targets: revisions
                .iter()
                .filter_map(|(role, rev)| Some((role.clone(), rev.clone()?)))
                .filter(|(role, _)| targets.iter().any(|(_, f)| &f.role == role))
                .collect(),
            waves,
            current_wave: 0,
            pause_seconds: strategy.pause_seconds.unwrap_or(0),
            wave_timeout_seconds: strategy
                .wave_timeout_seconds
                .unwrap_or(DEFAULT_WAVE_TIMEOUT_S)
                .max(1),
            services: request.services.clone(),
            confirm_removals: request.confirm_removals,
            reason: None,
        };
        let body = serde_json::to_string(&rollout).map_err(|e| Error::Internal(e.to_string()))?;
        rollout.id = self.db.insert_rollout(rollout.state.as_str(), &body)?;
        self.save(&rollout);
        self.with_active(|active| active.insert(rollout.id, rollout.clone()));
        // The new pins are in place before the older rollouts and a held change let go.
        self.supersede_except(Some(rollout.id));
        Ok(rollout)
    }

    /// A rollout by id (held ones from memory, the others from the database).
    pub fn get(&self, id: i64) -> Result<Option<Rollout>, Error> {
        if let Some(held) = self.with_active(|active| active.get(&id).cloned()) {
            return Ok(Some(held));
        }
        Ok(self.list(10_000)?.into_iter().find(|r| r.id == id))
    }

    /// The newest rollouts first.
    pub fn list(&self, limit: i64) -> Result<Vec<Rollout>, Error> {
        Ok(self
            .db
            .rollouts(limit)?
            .into_iter()
            .filter_map(|(_, body)| serde_json::from_str::<Rollout>(&body).ok())
            .map(|stored| {
                self.with_active(|active| active.get(&stored.id).cloned())
                    .unwrap_or(stored)
            })
            .collect())
    }

    /// Stops a held rollout for good; the followers it held get the current tree at their next fetch.
    pub fn abort(&self, id: i64) -> Result<Rollout, Error> {
        let aborted = self
            .update(id, |r| {
                r.state = RolloutState::Aborted;
                r.finished = Some(now_unix_i64());
            })
            .ok_or_else(|| not_held(id))?;
        self.signal.notify_waiters();
        Ok(aborted)
    }

    /// Makes a stopped rollout go on with the wave after the one that stopped it.
    pub fn resume(&self, id: i64) -> Result<Rollout, Error> {
        let mut refused = None;
        let resumed = self
            .update(id, |r| {
                if r.state == RolloutState::Stopped {
                    r.state = RolloutState::Running;
                    r.current_wave += 1;
                    r.reason = None;
                } else {
                    refused = Some(r.state);
                }
            })
            .ok_or_else(|| not_held(id))?;
        match refused {
            Some(state) => Err(Error::Conflict(format!(
                "rollout {id} is {}; only a stopped rollout can be resumed",
                state.as_str()
            ))),
            None => Ok(resumed),
        }
    }
}

fn not_held(id: i64) -> Error {
    Error::Conflict(format!(
        "rollout {id} is not running or stopped (see GET /admin/rollouts/{id})"
    ))
}

/// Places `targets` in waves (each follower once, empty waves dropped, the unplaced ones last).
fn plan(strategy: &Strategy, targets: &[(FollowerId, FollowerEntry)]) -> Result<Vec<Wave>, Error> {
    let mut remaining: Vec<&FollowerEntry> = targets.iter().map(|(_, f)| f).collect();
    let mut groups: Vec<Vec<&FollowerEntry>> = Vec::new();
    let total = remaining.len();
    fn take<'a>(
        remaining: &mut Vec<&'a FollowerEntry>,
        groups: &mut Vec<Vec<&'a FollowerEntry>>,
        pick: &dyn Fn(usize, &FollowerEntry) -> bool,
    ) {
        type Placed<'a> = Vec<(usize, &'a FollowerEntry)>;
        let (chosen, rest): (Placed<'a>, Placed<'a>) = remaining
            .iter()
            .copied()
            .enumerate()
            .partition(|(index, f)| pick(*index, f));
        *remaining = rest.into_iter().map(|(_, f)| f).collect();
        groups.push(chosen.into_iter().map(|(_, f)| f).collect());
    }
    if let Some(specs) = &strategy.waves {
        for spec in specs {
            match spec {
                WaveSpec::Followers { followers } => {
                    take(&mut remaining, &mut groups, &|_, f| {
                        followers.iter().any(|p| matches(p, f))
                    });
                }
                WaveSpec::Roles { roles } => {
                    take(&mut remaining, &mut groups, &|_, f| roles.contains(&f.role))
                }
                WaveSpec::Percent { percent } => {
                    if *percent == 0 || *percent > 100 {
                        return Err(Error::BadRequest(format!(
                            "waves: percent {percent} must be between 1 and 100"
                        )));
                    }
                    let count = (total * usize::from(*percent)).div_ceil(100).max(1);
                    take(&mut remaining, &mut groups, &|index, _| index < count);
                }
            }
        }
    } else {
        let canary = strategy.canary.unwrap_or(0);
        if canary > 0 {
            take(&mut remaining, &mut groups, &|index, _| index < canary);
        }
        let batch = strategy.batch_size.unwrap_or(usize::MAX).max(1);
        while !remaining.is_empty() && batch != usize::MAX {
            take(&mut remaining, &mut groups, &|index, _| index < batch);
        }
    }
    if !remaining.is_empty() {
        let rest = std::mem::take(&mut remaining);
        groups.push(rest);
    }
    Ok(groups
        .into_iter()
        .filter(|g| !g.is_empty())
        .map(|followers| Wave {
            followers: followers
                .into_iter()
                .map(|f| WaveMember {
                    url: f.url.clone(),
                    name: f.name.clone(),
                    role: f.role.clone(),
                    state: MemberState::Pending,
                    detail: None,
                })
                .collect(),
            started: None,
            finished: None,
        })
        .collect())
}

/// A follower named by `pattern`: its name, its URL, or a URL pattern where `*` matches anything.
fn matches(pattern: &str, follower: &FollowerEntry) -> bool {
    if follower.name.as_deref() == Some(pattern) || follower.url == pattern {
        return true;
    }
    pattern.contains('*') && glob(pattern, &follower.url)
}

fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = match parts.split_first() {
        Some(split) => split,
        None => return text.is_empty(),
    };
    let Some(mut tail) = text.strip_prefix(first) else {
        return false;
    };
    for (index, part) in rest.iter().enumerate() {
        let last = index == rest.len() - 1;
        if last {
            return tail.ends_with(part);
        }
        match tail.find(part) {
            Some(at) => tail = &tail[at + part.len()..],
            None => return false,
        }
    }
    tail.is_empty()
}

/// What a driving task needs besides the rollouts.
#[derive(Clone)]
pub struct Drive {
    pub admin: Arc<Admin>,
    pub store: TreeStore,
    pub followers: Arc<FollowerIndex>,
}

impl Drive {
    /// Runs rollout `id` wave by wave until it is done, stopped or aborted. The answer of the first wave's
    /// notifications goes to `first` (for `POST /admin/notify`).
    pub async fn run(self, id: i64, first: Option<tokio::sync::oneshot::Sender<NotifyAnswer>>) {
        let rollouts = &self.admin.rollouts;
        let mut first = first;
        loop {
            let Some(rollout) = rollouts.with_active(|a| a.get(&id).cloned()) else {
                return;
            };
            if rollout.state != RolloutState::Running {
                return;
            }
            let index = rollout.current_wave;
            if index >= rollout.waves.len() {
                rollouts.update(id, |r| {
                    r.state = RolloutState::Done;
                    r.finished = Some(now_unix_i64());
                });
                tracing::info!(id, "rollout done");
                return;
            }
            let started = rollout.waves[index].started.unwrap_or_else(now_unix_i64);
            rollouts.update(id, |r| r.waves[index].started = Some(started));
            // Followers waiting on `GET /conf?wait=` of this wave are released now.
            self.store.wake();
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
                .update(id, |r| {
                    r.waves[index].finished = Some(now_unix_i64());
                    r.current_wave += 1;
                })
                .is_some_and(|r| r.current_wave < r.waves.len());
            if more && rollout.pause_seconds > 0 {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(rollout.pause_seconds)) => {}
                    _ = rollouts.signal.notified() => {}
                }
            }
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
        let answer = self.admin.fleet.notify(targets, &request, &revisions).await;
        let failed: Vec<(String, String)> = answer
            .failures
            .iter()
            .map(|f| (f.url.clone(), f.error.clone()))
            .collect();
        self.admin.rollouts.update(rollout.id, |r| {
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
        });
        answer
    }

    /// Waits for every follower of wave `index` to report; false when the rollout stopped (or was aborted).
    async fn wait_wave(&self, id: i64, index: usize, started: i64, timeout_s: u64) -> bool {
        let rollouts = &self.admin.rollouts;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_s);
        let mut reports = self.admin.fleet.next_report();
        loop {
            let Some(rollout) = rollouts.with_active(|a| a.get(&id).cloned()) else {
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
            let updated = rollouts.update(id, |r| {
                for (position, state, detail) in &verdicts {
                    if let Some(member) = r.waves[index].followers.get_mut(*position) {
                        member.state = *state;
                        member.detail.clone_from(detail);
                    }
                }
                if let Some((position, state, _)) = &bad {
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
            });
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
                    rollouts.update(id, |r| {
                        for member in r.waves[index].followers.iter_mut().filter(|m| !m.state.is_final()) {
                            member.state = MemberState::TimedOut;
                        }
                        r.state = RolloutState::Stopped;
                        r.reason = Some(format!("wave {} timed out after {timeout_s} s", index + 1));
                    });
                    tracing::warn!(id, wave = index + 1, "rollout stopped: wave timed out");
                    return false;
                }
                _ = reports.changed() => {}
                _ = rollouts.signal.notified() => {}
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
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
            let Some((id, _)) = self.followers.with_ids().find(|(_, f)| member.is(f)) else {
                continue;
            };
            let Some((report, received)) = self.admin.fleet.last_report_received(id) else {
                continue;
            };
            let target = rollout.targets.get(&member.role);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn follower(name: &str, role: &str) -> (FollowerId, FollowerEntry) {
        (
            FollowerId(0),
            FollowerEntry {
                url: format!("http://{name}.example:6000"),
                role: role.into(),
                name: Some(name.into()),
                key: crate::secret::Secret::new("k".to_owned()),
            },
        )
    }

    fn names(waves: &[Wave]) -> Vec<Vec<String>> {
        waves
            .iter()
            .map(|w| {
                w.followers
                    .iter()
                    .map(|m| m.name.clone().unwrap_or_default())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn waves_place_each_follower_once_and_the_rest_last() {
        let fleet = [
            follower("a", "core"),
            follower("b", "core"),
            follower("c", "reg-master"),
            follower("d", "static"),
        ];
        let strategy: Strategy = serde_json::from_value(serde_json::json!({
            "waves": [{"followers": ["b"]}, {"roles": ["core", "reg-master"]}]
        }))
        .unwrap();
        assert_eq!(
            names(&plan(&strategy, &fleet).unwrap()),
            [vec!["b"], vec!["a", "c"], vec!["d"]]
        );
        let canary: Strategy =
            serde_json::from_value(serde_json::json!({"canary": 1, "batchSize": 2})).unwrap();
        assert_eq!(
            names(&plan(&canary, &fleet).unwrap()),
            [vec!["a"], vec!["b", "c"], vec!["d"]]
        );
        let percent: Strategy = serde_json::from_value(
            serde_json::json!({"waves": [{"percent": 25}, {"percent": 50}]}),
        )
        .unwrap();
        assert_eq!(
            names(&plan(&percent, &fleet).unwrap()),
            [vec!["a"], vec!["b", "c"], vec!["d"]]
        );
        let zero: Strategy =
            serde_json::from_value(serde_json::json!({"waves": [{"percent": 0}]})).unwrap();
        assert!(plan(&zero, &fleet).is_err());
    }

    #[test]
    fn url_patterns() {
        let (_, f) = follower("core-1", "core");
        assert!(matches("core-1", &f));
        assert!(matches("http://core-1.example:6000", &f));
        assert!(matches("http://core-*", &f));
        assert!(matches("*:6000", &f));
        assert!(matches("*core*example*", &f));
        assert!(!matches("http://reg-*", &f));
        assert!(!matches("core", &f));
    }
}
