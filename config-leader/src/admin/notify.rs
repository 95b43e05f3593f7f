//! `POST /admin/notify` as a service: check the roles asked for, render what changed on disk, then notify the
//! followers at once or start a rollout (whose first wave answers).

use std::collections::HashMap;

use pryv_protocol::NotifyRequest;

use crate::admin::fleet::{NotifyAnswer, NotifySuccess};
use crate::admin::rollouts::{Drive, Strategy};
use crate::error::Error;

/// What an admin asked to notify.
pub struct NotifyOrder {
    /// Only the followers of these roles (all when empty).
    pub roles: Vec<String>,
    /// Only the followers of these zones (all when empty).
    pub zones: Vec<String>,
    /// Only these followers: names, URLs or URL patterns with `*` (all when empty).
    pub followers: Vec<String>,
    /// Also the followers that run their current revision already (to rewrite files edited by hand).
    pub all: bool,
    pub request: NotifyRequest,
    pub strategy: Strategy,
}

/// The answer of the notifications sent (of the first wave for a rollout) and the rollout started.
pub async fn notify(
    drive: &Drive,
    order: NotifyOrder,
    author: &str,
) -> Result<(NotifyAnswer, Option<i64>), Error> {
    check_roles(drive, &order.roles)?;
    check_zones(drive, &order.zones)?;
    // Whatever changed on disk a moment ago is rendered before anyone is told to fetch.
    drive.store.invalidate();
    let revisions = current_revisions(drive).await;
    let (targets, up_to_date) = targets_of(drive, &order, &revisions);
    if order.strategy.is_set() {
        let trees = revisions
            .iter()
            .filter_map(|(variant, revision)| drive.store.tree_at(variant, revision.as_ref()?))
            .map(|tree| tree.stored())
            .collect();
        let rollout = drive
            .rollouts
            .create(
                &order.strategy,
                &targets,
                &revisions,
                trees,
                &order.request,
                author,
            )
            .await?;
        // With replicas the elected one drives it (perhaps this one): the first wave's answers are in the
        // rollout (`GET /admin/rollouts/{id}`), not here.
        if drive.rollouts.is_shared() {
            return Ok((
                NotifyAnswer {
                    up_to_date,
                    ..NotifyAnswer::default()
                },
                Some(rollout.id),
            ));
        }
        let (first, answer) = tokio::sync::oneshot::channel();
        tokio::spawn(drive.clone().run(rollout.id, Some(first)));
        let mut answer = answer.await.unwrap_or_default();
        answer.up_to_date = up_to_date;
        return Ok((answer, Some(rollout.id)));
    }
    // A plain notification is for everyone now: rollouts in progress no longer hold anyone back.
    drive.rollouts.supersede_all().await;
    drive.store.wake();
    let mut answer = drive
        .fleet
        .notify(targets, &order.request, &revisions)
        .await;
    answer.up_to_date = up_to_date;
    Ok((answer, None))
}

type Targets = Vec<(
    crate::follower_keys::FollowerId,
    crate::config::FollowerEntry,
)>;

/// The followers the order names, split into those to notify and those already running their variant's
/// revision (nothing to fetch: a change of one zone notifies, and restarts, only that zone's followers). An
/// order that restarts or confirms removals, or says `all`, is for everyone it names.
fn targets_of(
    drive: &Drive,
    order: &NotifyOrder,
    revisions: &HashMap<String, Option<String>>,
) -> (Targets, Vec<NotifySuccess>) {
    let everyone = order.all
        || order.request.force
        || order.request.services.is_some()
        || order.request.confirm_removals;
    let named = |f: &crate::config::FollowerEntry| {
        (order.roles.is_empty() || order.roles.contains(&f.role))
            && (order.zones.is_empty() || f.zone.as_ref().is_some_and(|z| order.zones.contains(z)))
            && (order.followers.is_empty()
                || order
                    .followers
                    .iter()
                    .any(|p| crate::admin::rollouts::follower_matches(p, f)))
    };
    let mut up_to_date = Vec::new();
    let mut targets = Vec::new();
    for (id, f) in drive.followers.with_ids().filter(|(_, f)| named(f)) {
        let current = revisions.get(f.variant.key()).cloned().flatten();
        if !everyone && drive.fleet.runs(id, current.as_deref()) {
            up_to_date.push(NotifySuccess {
                url: f.url.clone(),
                role: f.role.clone(),
            });
        } else {
            targets.push((id, f.clone()));
        }
    }
    (targets, up_to_date)
}

fn check_roles(drive: &Drive, roles: &[String]) -> Result<(), Error> {
    let known: Vec<String> = crate::tree::roles(&drive.store.templates())?;
    let unknown: Vec<&str> = roles
        .iter()
        .filter(|r| !known.contains(r))
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::BadRequest(format!(
        "unknown role(s) {}; the roles are: {}",
        unknown.join(", "),
        known.join(", ")
    )))
}

fn check_zones(drive: &Drive, zones: &[String]) -> Result<(), Error> {
    let known: std::collections::BTreeSet<&str> = drive
        .followers
        .all()
        .iter()
        .filter_map(|f| f.zone.as_deref())
        .collect();
    let unknown: Vec<&str> = zones
        .iter()
        .map(String::as_str)
        .filter(|z| !known.contains(z))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::BadRequest(format!(
        "no follower is in zone(s) {}; the followers' zones are: {}",
        unknown.join(", "),
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.into_iter().collect::<Vec<_>>().join(", ")
        }
    )))
}

/// The current revision of each variant the followers have (rendering what changed on disk first), by
/// variant key.
pub async fn current_revisions(drive: &Drive) -> HashMap<String, Option<String>> {
    let mut revisions = HashMap::new();
    for follower in drive.followers.all() {
        if !revisions.contains_key(follower.variant.key()) {
            let revision = drive
                .store
                .get(&follower.variant)
                .await
                .ok()
                .map(|t| t.revision.clone());
            revisions.insert(follower.variant.key().to_owned(), revision);
        }
    }
    revisions
}
