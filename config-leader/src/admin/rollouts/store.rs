//! The rollouts in force and the pins they put on followers, kept in SQLite. The active rollouts and the pins
//! derived from them change under one lock, and the pins are published before it is released: a wave is
//! released (its pins say `Target`) before any follower can be told about it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use pryv_protocol::NotifyRequest;

use crate::config::FollowerEntry;
use crate::error::Error;
use crate::follower_keys::FollowerId;
use pryv_daemon::now_unix_i64;

use super::model::{DEFAULT_WAVE_TIMEOUT_S, Pin, Rollout, RolloutState, Strategy};
use super::plan::plan;

type Pins = HashMap<(String, Option<String>), Pin>;

/// Where the rollouts are kept: the database (one leader) or etcd (replicas).
pub enum Records {
    Local(Arc<crate::admin::db::Db>),
    Shared(Arc<crate::etcd::rollouts::SharedRollouts>),
}

/// What a replica read from etcd at start: the rollouts (id, JSON), their target trees, the held flag.
pub struct SharedStart {
    pub rows: Vec<(i64, String)>,
    pub trees: Vec<crate::admin::db::RolloutTree>,
    pub hold: bool,
}

/// The rollouts in force, their pins, and the database behind them.
pub struct Rollouts {
    records: Records,
    /// The target trees read at start (etcd mode), adopted by the tree store before anything is served.
    start_trees: Vec<crate::admin::db::RolloutTree>,
    /// Running and stopped rollouts, by id.
    active: Mutex<BTreeMap<i64, Rollout>>,
    /// By follower URL and name: a snapshot derived from `active`, replaced while `active` is locked.
    pins: RwLock<Arc<Pins>>,
    /// Wakes a driving task early (abort).
    pub(super) signal: tokio::sync::Notify,
    /// Bumped at every save of a rollout: what the console's live view waits on.
    changes: tokio::sync::watch::Sender<u64>,
    /// A settings change saved with `?hold=true`: no follower outside a rollout gets a newer tree until
    /// the next notification (kept across restarts).
    hold: std::sync::atomic::AtomicBool,
}

/// The database flag of a change saved with `?hold=true`.
pub const HOLD_FLAG: &str = "hold-changes";

impl Rollouts {
    /// Loads the rollouts a previous run left running or stopped.
    #[allow(clippy::disallowed_methods)] // start-up (Admin::new)
    pub fn load(db: Arc<crate::admin::db::Db>) -> Result<Self, Error> {
        let rows = db.blocking().rollouts(100)?;
        let hold = db.blocking().flag(HOLD_FLAG)?;
        Ok(Self::from_rows(Records::Local(db), &rows, hold, Vec::new()))
    }

    /// The rollouts a replica read from etcd at start (the watch keeps them current: [`Rollouts::take`]).
    pub fn shared(shared: Arc<crate::etcd::rollouts::SharedRollouts>, start: SharedStart) -> Self {
        Self::from_rows(
            Records::Shared(shared),
            &start.rows,
            start.hold,
            start.trees,
        )
    }

    /// Whether the rollouts are shared by replicas (etcd mode).
    pub fn is_shared(&self) -> bool {
        matches!(self.records, Records::Shared(_))
    }

    fn from_rows(
        records: Records,
        rows: &[(i64, String)],
        hold: bool,
        start_trees: Vec<crate::admin::db::RolloutTree>,
    ) -> Self {
        let rollouts = Self {
            records,
            start_trees,
            active: Mutex::new(held_of(rows)),
            pins: RwLock::new(Arc::new(HashMap::new())),
            signal: tokio::sync::Notify::new(),
            changes: tokio::sync::watch::Sender::new(0),
            hold: std::sync::atomic::AtomicBool::new(hold),
        };
        // The pins of the rollouts a previous run left held, before any follower fetches.
        rollouts.with_active(|_| ());
        rollouts
    }

    /// etcd mode: what the store holds now (another replica created, drove, aborted one; the held flag);
    /// the pins follow, and the drivers and long-polls are woken.
    pub fn take(&self, rows: &[(i64, String)], hold: bool) {
        let held = held_of(rows);
        let running = |active: &BTreeMap<i64, Rollout>| -> Vec<i64> {
            active
                .values()
                .filter(|r| r.state == RolloutState::Running)
                .map(|r| r.id)
                .collect()
        };
        let still_running = running(&held);
        let before = self.with_active(|active| {
            let before = running(active);
            *active = held;
            before
        });
        self.hold.store(hold, std::sync::atomic::Ordering::Release);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        // A drive's pause ends early only when its rollout stopped running (aborted, superseded elsewhere),
        // as with one leader: not at every write the store reports back.
        if before.iter().any(|id| !still_running.contains(id)) {
            self.signal.notify_waiters();
        }
    }

    /// Runs `change` on the active rollouts and publishes their pins before the lock is released, so no
    /// reader ever sees a rollout without its pins.
    pub(super) fn with_active<T>(
        &self,
        change: impl FnOnce(&mut BTreeMap<i64, Rollout>) -> T,
    ) -> T {
        let mut active = self
            .active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = change(&mut active);
        let pins = Arc::new(pins_of(&active));
        *self
            .pins
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = pins;
        result
    }

    /// Reads the active rollouts (the pins stay as they are).
    pub(super) fn read_active<T>(&self, read: impl FnOnce(&BTreeMap<i64, Rollout>) -> T) -> T {
        read(
            &self
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
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let pinned = if pins.is_empty() {
            None
        } else {
            pins.get(&(follower.url.clone(), follower.name.clone()))
                .cloned()
        };
        pinned.or_else(|| self.holding().then_some(Pin::Hold))
    }

    /// The target trees of the rollouts in force (those of ended ones are dropped): what the tree store
    /// adopts at start.
    #[allow(clippy::disallowed_methods)] // start-up (Admin::new)
    pub fn target_trees(&self) -> Result<Vec<crate::admin::db::RolloutTree>, Error> {
        let ids: Vec<i64> = self.read_active(|active| active.keys().copied().collect());
        match &self.records {
            Records::Local(db) => db.blocking().rollout_trees(&ids),
            Records::Shared(_) => Ok(self.start_trees.clone()),
        }
    }

    /// Whether a change saved with `?hold=true` waits for a notification.
    pub fn holding(&self) -> bool {
        self.hold.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Holds every follower outside a rollout on what it has (`on`), or lets them fetch again.
    pub async fn set_hold(&self, on: bool) -> Result<(), Error> {
        if self.holding() == on {
            return Ok(());
        }
        match &self.records {
            Records::Local(db) => db.call(move |db| db.set_flag(HOLD_FLAG, on)).await?,
            Records::Shared(shared) => shared.set_hold(on).await?,
        }
        self.hold.store(on, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Resolves at the next change of any rollout.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    async fn save(&self, rollout: &Rollout) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        let Records::Local(db) = &self.records else {
            return;
        };
        let (id, state) = (rollout.id, rollout.state.as_str());
        let saved = match serde_json::to_string(rollout) {
            Ok(body) => db.call(move |db| db.update_rollout(id, state, &body)).await,
            Err(err) => Err(Error::from(err)),
        };
        if let Err(err) = saved {
            tracing::error!(id = rollout.id, error = %err, "cannot save the rollout");
        }
    }

    /// Changes rollout `id` (if active) and publishes its pins; saves it when it changed (a driver's
    /// wake-up that learnt nothing writes nothing); returns the new state.
    pub(super) async fn update(
        &self,
        id: i64,
        fence: Option<&crate::etcd::election::Term>,
        change: impl Fn(&mut Rollout) + Sync,
    ) -> Option<Rollout> {
        if let Records::Shared(shared) = &self.records {
            return self.update_shared(shared, id, fence, &change).await;
        }
        let (updated, changed) = self.with_active(|active| {
            let rollout = active.get_mut(&id)?;
            let before = rollout.clone();
            change(rollout);
            let copy = rollout.clone();
            if !rollout.state.holds() {
                active.remove(&id);
            }
            let changed = copy != before;
            Some((copy, changed))
        })?;
        if changed {
            self.save(&updated).await;
        }
        Some(updated)
    }

    /// etcd mode: the change is written first (fenced to the driver's term when given), then taken here:
    /// pins never get ahead of the store, and a replica that lost its term changes nothing.
    async fn update_shared(
        &self,
        shared: &crate::etcd::rollouts::SharedRollouts,
        id: i64,
        fence: Option<&crate::etcd::election::Term>,
        change: &(dyn Fn(&mut Rollout) + Sync),
    ) -> Option<Rollout> {
        let current = self.read_active(|active| active.get(&id).cloned())?;
        let mut probe = current.clone();
        change(&mut probe);
        if probe == current {
            return Some(current);
        }
        if fence.is_some_and(|term| !term.valid()) {
            tracing::warn!(
                id,
                "not the elected replica any more: the rollout is left as it is"
            );
            return None;
        }
        let compare = fence.map(crate::etcd::election::Term::fence);
        let rewrite = |before: &str| -> Result<String, Error> {
            let mut rollout: Rollout = serde_json::from_str(before)?;
            change(&mut rollout);
            Ok(serde_json::to_string(&rollout)?)
        };
        match shared.change(id, compare.as_ref(), &rewrite).await {
            Ok(crate::etcd::rollouts::Changed::Saved(json)) => {
                let rollout: Rollout = serde_json::from_str(&json).ok()?;
                let copy = rollout.clone();
                self.with_active(|active| {
                    if copy.state.holds() {
                        active.insert(id, copy);
                    } else {
                        active.remove(&id);
                    }
                });
                self.changes.send_modify(|n| *n = n.wrapping_add(1));
                Some(rollout)
            }
            Ok(crate::etcd::rollouts::Changed::Missing) => None,
            Ok(crate::etcd::rollouts::Changed::Fenced) => {
                tracing::warn!(
                    id,
                    "another replica drives rollouts now: this one's change was refused"
                );
                None
            }
            Err(err) => {
                tracing::error!(id, error = %err, "cannot save the rollout in the etcd store");
                None
            }
        }
    }

    /// How many rollouts are running and how many stopped.
    pub fn held_counts(&self) -> (usize, usize) {
        self.read_active(|active| {
            let running = active
                .values()
                .filter(|r| r.state == RolloutState::Running)
                .count();
            (running, active.len() - running)
        })
    }

    /// Every rollout still held, for the drivers to pick up at start.
    pub fn running_ids(&self) -> Vec<i64> {
        self.read_active(|active| {
            active
                .values()
                .filter(|r| r.state == RolloutState::Running)
                .map(|r| r.id)
                .collect()
        })
    }

    /// Ends every held rollout and a held change: a newer notification replaces them.
    pub async fn supersede_all(&self) {
        self.supersede_except(None).await;
    }

    async fn supersede_except(&self, keep: Option<i64>) {
        let ids: Vec<i64> = self.read_active(|active| {
            active
                .keys()
                .copied()
                .filter(|id| Some(*id) != keep)
                .collect()
        });
        let finished = now_unix_i64();
        for id in ids {
            self.update(id, None, |r| {
                r.state = RolloutState::Superseded;
                r.finished = Some(finished);
            })
            .await;
        }
        // Last: until here a held change still holds everyone the pins do not cover yet.
        if let Err(err) = self.set_hold(false).await {
            tracing::error!(error = %err, "cannot release the held change");
        }
        self.signal.notify_waiters();
    }

    /// Creates a rollout of `targets` (followers of the roles asked for) in waves planned by `strategy`.
    /// The exact target trees (`trees`) are saved with it: a restarted leader serves the same bytes.
    pub async fn create(
        &self,
        strategy: &Strategy,
        targets: &[(FollowerId, FollowerEntry)],
        revisions: &HashMap<String, Option<String>>,
        trees: Vec<crate::admin::db::RolloutTree>,
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
                .filter_map(|(variant, rev)| Some((variant.clone(), rev.clone()?)))
                .filter(|(variant, _)| targets.iter().any(|(_, f)| f.variant.key() == variant))
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
        let body = serde_json::to_string(&rollout)?;
        let state = rollout.state.as_str();
        let trees: Vec<_> = trees
            .into_iter()
            .filter(|t| rollout.targets.get(&t.variant) == Some(&t.revision))
            .collect();
        rollout.id = match &self.records {
            Records::Local(db) => {
                db.call(move |db| {
                    let id = db.insert_rollout(state, &body)?;
                    for tree in &trees {
                        db.insert_rollout_tree(id, tree)?;
                    }
                    Ok(id)
                })
                .await?
            }
            Records::Shared(shared) => {
                let numbered = |id: i64| {
                    let mut copy = rollout.clone();
                    copy.id = id;
                    Ok(serde_json::to_string(&copy)?)
                };
                shared.insert(numbered, &trees).await?
            }
        };
        self.save(&rollout).await;
        self.with_active(|active| active.insert(rollout.id, rollout.clone()));
        // The new pins are in place before the older rollouts and a held change let go.
        self.supersede_except(Some(rollout.id)).await;
        Ok(rollout)
    }

    /// A rollout by id (held ones from memory, the others from the database).
    pub async fn get(&self, id: i64) -> Result<Option<Rollout>, Error> {
        if let Some(held) = self.read_active(|active| active.get(&id).cloned()) {
            return Ok(Some(held));
        }
        Ok(self.list(10_000).await?.into_iter().find(|r| r.id == id))
    }

    /// The newest rollouts first.
    pub async fn list(&self, limit: i64) -> Result<Vec<Rollout>, Error> {
        let rows = match &self.records {
            Records::Local(db) => db.call(move |db| db.rollouts(limit)).await?,
            Records::Shared(shared) => {
                let mut rows = shared.all().await?;
                rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
                rows
            }
        };
        Ok(rows
            .into_iter()
            .filter_map(|(_, body)| serde_json::from_str::<Rollout>(&body).ok())
            .map(|stored| {
                self.read_active(|active| active.get(&stored.id).cloned())
                    .unwrap_or(stored)
            })
            .collect())
    }

    /// Stops a held rollout for good; the followers it held get the current tree at their next fetch.
    pub async fn abort(&self, id: i64) -> Result<Rollout, Error> {
        let finished = now_unix_i64();
        let aborted = self
            .update(id, None, |r| {
                r.state = RolloutState::Aborted;
                r.finished = Some(finished);
            })
            .await
            .ok_or_else(|| not_held(id))?;
        self.signal.notify_waiters();
        Ok(aborted)
    }

    /// Makes a stopped rollout go on with the wave after the one that stopped it.
    pub async fn resume(&self, id: i64) -> Result<Rollout, Error> {
        let refused = std::sync::Mutex::new(None);
        let resumed = self
            .update(id, None, |r| {
                if r.state == RolloutState::Stopped {
                    r.state = RolloutState::Running;
                    r.current_wave += 1;
                    r.reason = None;
                } else {
                    *refused
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r.state);
                }
            })
            .await
            .ok_or_else(|| not_held(id))?;
        let refused = *refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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

/// The rollouts of `rows` (id, JSON) still held (running or stopped), by id.
fn held_of(rows: &[(i64, String)]) -> BTreeMap<i64, Rollout> {
    let mut active = BTreeMap::new();
    for (id, body) in rows {
        match serde_json::from_str::<Rollout>(body) {
            Ok(rollout) if rollout.state.holds() => {
                active.insert(*id, rollout);
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(id, error = %err, "unreadable rollout record"),
        }
    }
    active
}

/// Which tree each follower of a held rollout gets: the target once its wave started, what it has before.
fn pins_of(active: &BTreeMap<i64, Rollout>) -> Pins {
    let mut pins = HashMap::new();
    // Older first, so the newest rollout's pin wins.
    for rollout in active.values().filter(|r| r.state.holds()) {
        for (index, wave) in rollout.waves.iter().enumerate() {
            let released = index < rollout.current_wave
                || (index == rollout.current_wave && wave.started.is_some());
            for member in &wave.followers {
                let pin = match rollout.targets.get(member.target_key()) {
                    Some(target) if released => Pin::Target(target.clone()),
                    _ => Pin::Hold,
                };
                pins.insert((member.url.clone(), member.name.clone()), pin);
            }
        }
    }
    pins
}
