//! `POST /admin/notify` as a service: check the roles asked for, render what changed on disk, then notify the
//! followers at once or start a rollout (whose first wave answers).

use std::collections::HashMap;

use pryv_protocol::NotifyRequest;

use crate::admin::fleet::NotifyAnswer;
use crate::admin::rollouts::{Drive, Strategy};
use crate::error::Error;

/// What an admin asked to notify.
pub struct NotifyOrder {
    /// Only the followers of these roles (all when empty).
    pub roles: Vec<String>,
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
    // Whatever changed on disk a moment ago is rendered before anyone is told to fetch.
    drive.store.invalidate();
    let revisions = current_revisions(drive).await;
    let targets: Vec<_> = drive
        .followers
        .with_ids()
        .filter(|(_, f)| order.roles.is_empty() || order.roles.contains(&f.role))
        .map(|(id, f)| (id, f.clone()))
        .collect();
    if order.strategy.is_set() {
        let rollout = drive
            .rollouts
            .create(
                &order.strategy,
                &targets,
                &revisions,
                &order.request,
                author,
            )
            .await?;
        let (first, answer) = tokio::sync::oneshot::channel();
        tokio::spawn(drive.clone().run(rollout.id, Some(first)));
        return Ok((answer.await.unwrap_or_default(), Some(rollout.id)));
    }
    // A plain notification is for everyone now: rollouts in progress no longer hold anyone back.
    drive.rollouts.supersede_all().await;
    drive.store.wake();
    let answer = drive
        .fleet
        .notify(targets, &order.request, &revisions)
        .await;
    Ok((answer, None))
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

/// The current revision of each role the followers have (rendering what changed on disk first).
pub async fn current_revisions(drive: &Drive) -> HashMap<String, Option<String>> {
    let mut revisions = HashMap::new();
    for follower in drive.followers.all() {
        if !revisions.contains_key(&follower.role) {
            let revision = drive
                .store
                .get(&follower.role)
                .await
                .ok()
                .map(|t| t.revision.clone());
            revisions.insert(follower.role.clone(), revision);
        }
    }
    revisions
}
