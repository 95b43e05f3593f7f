//! `POST /admin/notify`, `GET /admin/status`, `GET /admin/audit`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{AppState, Remote};
use crate::admin::db::AuditRow;
use crate::admin::fleet::{FollowerStatus, NotifyAnswer};
use crate::admin::identity::{Caller, Permission};
use crate::error::Error;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/notify", post(notify))
        .route("/admin/status", get(status))
        .route("/admin/audit", get(audit))
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
) -> Result<Json<NotifyAnswer>, Error> {
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
    let answer = state
        .admin
        .fleet
        .notify(
            targets,
            &pryv_protocol::NotifyRequest {
                services: body.services,
                confirm_removals: body.confirm_removals,
                ..pryv_protocol::NotifyRequest::default()
            },
            &revisions,
        )
        .await;
    state.admin.audit(
        &caller.name(),
        "notify",
        &format!(
            "{} ok, {} failed",
            answer.successes.len(),
            answer.failures.len()
        ),
        &remote,
    );
    Ok(Json(answer))
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
