//! `GET /admin/rollouts`, `GET /admin/rollouts/{id}`, `POST /admin/rollouts/{id}/resume`, `POST
//! /admin/rollouts/{id}/abort`.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use super::{AppState, Remote};
use crate::admin::identity::{Caller, Permission};
use crate::admin::rollouts::Rollout;
use crate::error::Error;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/rollouts", get(rollouts))
        .route("/admin/rollouts/{id}", get(rollout))
        .route("/admin/rollouts/{id}/resume", post(resume))
        .route("/admin/rollouts/{id}/abort", post(abort))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RolloutsView {
    pub rollouts: Vec<Rollout>,
}

/// Rollouts, newest first (settings:read).
#[utoipa::path(get, path = "/admin/rollouts", tag = "fleet", responses((status = 200, body = RolloutsView)))]
pub async fn rollouts(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<RolloutsView>, Error> {
    caller.require(Permission::SettingsRead)?;
    Ok(Json(RolloutsView {
        rollouts: state.admin.rollouts.list(100).await?,
    }))
}

/// One rollout: its waves and each follower's state (settings:read).
#[utoipa::path(get, path = "/admin/rollouts/{id}", tag = "fleet", params(("id" = i64, Path)),
    responses((status = 200, body = Rollout), (status = 404, body = pryv_protocol::ErrorBody)))]
pub async fn rollout(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Rollout>, Error> {
    caller.require(Permission::SettingsRead)?;
    let id = rollout_id(&id)?;
    state
        .admin
        .rollouts
        .get(id)
        .await?
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("no rollout {id}")))
}

/// Goes on with the wave after the one that stopped the rollout (settings:update).
#[utoipa::path(post, path = "/admin/rollouts/{id}/resume", tag = "fleet", params(("id" = i64, Path)),
    responses((status = 200, body = Rollout), (status = 409, body = pryv_protocol::ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    remote: Remote,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Rollout>, Error> {
    rollout_action(&state, remote, &caller, &id, RolloutAction::Resume).await
}

/// Ends a rollout; the followers it held get the current tree at their next fetch (settings:update).
#[utoipa::path(post, path = "/admin/rollouts/{id}/abort", tag = "fleet", params(("id" = i64, Path)),
    responses((status = 200, body = Rollout), (status = 409, body = pryv_protocol::ErrorBody)))]
pub async fn abort(
    State(state): State<AppState>,
    remote: Remote,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Rollout>, Error> {
    rollout_action(&state, remote, &caller, &id, RolloutAction::Abort).await
}

#[derive(Clone, Copy)]
enum RolloutAction {
    Resume,
    Abort,
}

async fn rollout_action(
    state: &AppState,
    Remote(remote): Remote,
    caller: &Caller,
    id: &str,
    action: RolloutAction,
) -> Result<Json<Rollout>, Error> {
    caller.require(Permission::SettingsUpdate)?;
    let id = rollout_id(id)?;
    let (rollout, name) = match action {
        RolloutAction::Resume => {
            let resumed = state.admin.rollouts.resume(id).await?;
            // With replicas the elected one picks it up.
            if !state.admin.rollouts.is_shared() {
                tokio::spawn(state.drive().run(id, None));
            }
            (resumed, "rollout-resume")
        }
        RolloutAction::Abort => {
            let aborted = state.admin.rollouts.abort(id).await?;
            // The followers it held back may fetch the current tree now, long-polling ones included.
            state.store.wake();
            (aborted, "rollout-abort")
        }
    };
    state
        .admin
        .audit(&caller.name(), name, &format!("rollout {id}"), &remote)
        .await;
    Ok(Json(rollout))
}

fn rollout_id(text: &str) -> Result<i64, Error> {
    text.parse()
        .map_err(|_| Error::BadRequest(format!("rollout id {text:?} is not a number")))
}
