//! `POST /admin/notify`, `GET /admin/status`, `GET /admin/audit`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{AppState, Remote};
use crate::admin::db::AuditRow;
use crate::admin::fleet::{FollowerStatus, NotifyAnswer};
use crate::admin::identity::{Caller, Permission};
use crate::admin::rollouts::{Rollout, Strategy};
use crate::error::Error;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/notify", post(notify))
        .route("/admin/status", get(status))
        .route("/admin/audit", get(audit))
        .route("/admin/rollouts", get(rollouts))
        .route("/admin/rollouts/{id}", get(rollout))
        .route("/admin/rollouts/{id}/resume", post(resume))
        .route("/admin/rollouts/{id}/abort", post(abort))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct NotifyBody {
    /// Passed on to the followers: restrict restarts to these services.
    pub services: Option<Vec<String>>,
    /// Notify only the followers of these roles.
    pub roles: Option<Vec<String>>,
    /// Passed on to the followers: apply a tree even if it removes most of their files.
    #[serde(default, rename = "confirmRemovals")]
    pub confirm_removals: bool,
    /// Optional: roll out in waves (`waves`, or `canary` + `batchSize`, with `pauseSeconds`, `stopOn`,
    /// `waveTimeoutSeconds`).
    #[serde(flatten)]
    pub strategy: Strategy,
}

/// Answer of `POST /admin/notify`: the notifications sent (of the first wave, for a rollout).
#[derive(Serialize, utoipa::ToSchema)]
pub struct NotifyView {
    #[serde(flatten)]
    pub answer: NotifyAnswer,
    /// The rollout started, when the body asked for waves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RolloutsView {
    pub rollouts: Vec<Rollout>,
}

#[derive(Deserialize)]
pub struct NotifyQuery {
    role: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetView {
    pub followers: Vec<FollowerStatus>,
    /// Roles whose templates or settings stopped rendering, and the last good revision still served.
    pub render_problems: std::collections::BTreeMap<String, crate::store::RenderProblem>,
}

#[derive(Deserialize)]
pub struct AuditQuery {
    limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditView {
    pub entries: Vec<AuditRow>,
}

/// The current revision of each role the followers have (rendering what changed on disk first).
async fn current_revisions(state: &AppState) -> HashMap<String, Option<String>> {
    let mut revisions = HashMap::new();
    for follower in state.followers.all() {
        if !revisions.contains_key(&follower.role) {
            let revision = state
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

/// Tell followers to fetch their configuration (settings:update). Each gets its own key and its role's
/// revision; the answer comes once all answered or timed out.
#[utoipa::path(post, path = "/admin/notify", tag = "fleet", request_body(content = NotifyBody, description = "optional"),
    params(("role" = Option<String>, Query, description = "only followers of this role"),
        ("auth" = Option<String>, Query, description = "admin key, if not in Authorization")),
    responses((status = 200, body = NotifyAnswer), (status = 400, body = pryv_protocol::ErrorBody), (status = 401, body = pryv_protocol::ErrorBody)))]
// Long on purpose: body, role filter, targets, fan-out and audit read best as one request story.
pub async fn notify(
    State(state): State<AppState>,
    Remote(remote): Remote,
    caller: Caller,
    Query(query): Query<NotifyQuery>,
    body: Bytes,
) -> Result<Json<NotifyView>, Error> {
    caller.require(Permission::SettingsUpdate)?;
    let body: NotifyBody = if body.iter().all(u8::is_ascii_whitespace) {
        NotifyBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|err| {
            Error::BadRequest(format!(
                "body must be {{\"services\": [...], \"roles\": [...]}}: {err}"
            ))
        })?
    };
    let mut roles: Vec<String> = body.roles.unwrap_or_default();
    roles.extend(query.role);
    let known: Vec<String> = crate::tree::roles(&state.store.templates())?;
    let unknown: Vec<&String> = roles.iter().filter(|r| !known.contains(r)).collect();
    if !unknown.is_empty() {
        return Err(Error::BadRequest(format!(
            "unknown role(s) {}; the roles are: {}",
            unknown
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            known.join(", ")
        )));
    }
    // Whatever changed on disk a moment ago is rendered before anyone is told to fetch.
    state.store.invalidate();
    let revisions = current_revisions(&state).await;
    let targets: Vec<_> = state
        .followers
        .with_ids()
        .filter(|(_, f)| roles.is_empty() || roles.contains(&f.role))
        .map(|(id, f)| (id, f.clone()))
        .collect();
    let request = pryv_protocol::NotifyRequest {
        services: body.services,
        confirm_removals: body.confirm_removals,
        ..pryv_protocol::NotifyRequest::default()
    };
    let (answer, rollout) = if body.strategy.is_set() {
        let rollout = state.admin.rollouts.create(
            &body.strategy,
            &targets,
            &revisions,
            &request,
            &caller.name(),
        )?;
        let (first, answer) = tokio::sync::oneshot::channel();
        tokio::spawn(state.drive().run(rollout.id, Some(first)));
        (answer.await.unwrap_or_default(), Some(rollout.id))
    } else {
        // A plain notification is for everyone now: rollouts in progress no longer hold anyone back.
        state.admin.rollouts.supersede_all();
        state.store.wake();
        let answer = state
            .admin
            .fleet
            .notify(targets, &request, &revisions)
            .await;
        (answer, None)
    };
    state.admin.audit(
        &caller.name(),
        "notify",
        &format!(
            "{} ok, {} failed{}",
            answer.successes.len(),
            answer.failures.len(),
            rollout.map_or(String::new(), |id| format!(", rollout {id}"))
        ),
        &remote,
    );
    Ok(Json(NotifyView { answer, rollout }))
}

/// Rollouts, newest first (settings:read).
#[utoipa::path(get, path = "/admin/rollouts", tag = "fleet", responses((status = 200, body = RolloutsView)))]
pub async fn rollouts(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<RolloutsView>, Error> {
    caller.require(Permission::SettingsRead)?;
    Ok(Json(RolloutsView {
        rollouts: state.admin.rollouts.list(100)?,
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
        .get(id)?
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
    rollout_action(&state, remote, &caller, &id, RolloutAction::Resume)
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
    rollout_action(&state, remote, &caller, &id, RolloutAction::Abort)
}

#[derive(Clone, Copy)]
enum RolloutAction {
    Resume,
    Abort,
}

fn rollout_action(
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
            let resumed = state.admin.rollouts.resume(id)?;
            tokio::spawn(state.drive().run(id, None));
            (resumed, "rollout-resume")
        }
        RolloutAction::Abort => {
            let aborted = state.admin.rollouts.abort(id)?;
            // The followers it held back may fetch the current tree now, long-polling ones included.
            state.store.wake();
            (aborted, "rollout-abort")
        }
    };
    state
        .admin
        .audit(&caller.name(), name, &format!("rollout {id}"), &remote);
    Ok(Json(rollout))
}

fn rollout_id(text: &str) -> Result<i64, Error> {
    text.parse()
        .map_err(|_| Error::BadRequest(format!("rollout id {text:?} is not a number")))
}

/// Every follower (never its key): last fetch, revision, whether it is current, last notification (settings:read).
#[utoipa::path(get, path = "/admin/status", tag = "fleet", responses((status = 200, body = FleetView)))]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<FleetView>, Error> {
    caller.require(Permission::SettingsRead)?;
    let revisions = current_revisions(&state).await;
    Ok(Json(FleetView {
        followers: state.admin.fleet.status(state.followers.all(), &revisions),
        render_problems: state.store.problems(),
    }))
}

/// Audit log, newest first (settings:read).
#[utoipa::path(get, path = "/admin/audit", tag = "fleet", params(("limit" = Option<i64>, Query)),
    responses((status = 200, body = AuditView), (status = 400, description = "limit is not an integer", body = pryv_protocol::ErrorBody)))]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditView>, Error> {
    caller.require(Permission::SettingsRead)?;
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    Ok(Json(AuditView {
        entries: state.admin.db.audit_entries(limit)?,
    }))
}
