//! `POST /admin/notify`, `GET /admin/status`, `GET /admin/audit`.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{AppState, Remote};
use crate::admin::db::AuditRow;
use crate::admin::fleet::{FollowerStatus, NotifyAnswer};
use crate::admin::identity::{Caller, Permission};
use crate::admin::notify::{NotifyOrder, current_revisions};
use crate::admin::rollouts::Strategy;
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
    /// Notify only the followers of these zones.
    pub zones: Option<Vec<String>>,
    /// Notify only these followers: names, URLs, or URL patterns with `*`.
    pub followers: Option<Vec<String>>,
    /// Notify also the followers that run their current revision already (they are skipped otherwise).
    #[serde(default)]
    pub all: bool,
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
    /// The settings history in git (`gitRepoPath`, `settings.git`), when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings_repository: Option<crate::admin::git::RepositoryStatus>,
    /// With replicas (`store.etcd`): this replica's standing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaView>,
}

/// One replica's standing in etcd mode.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaView {
    /// It holds the election: it drives the rollouts.
    pub elected: bool,
    /// It has not reached a quorum of etcd for `isolatedAfterSeconds`: it refuses changes.
    pub isolated: bool,
    /// The settings revision its copy holds.
    pub settings_revision: i64,
    /// Its watch of the store is open (changes saved through other replicas reach it).
    pub watching: bool,
}

#[derive(Deserialize)]
pub struct AuditQuery {
    limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditView {
    pub entries: Vec<AuditRow>,
}

/// Tell followers to fetch their configuration (settings:update). Each gets its own key and its role's
/// revision; the answer comes once all answered or timed out.
#[utoipa::path(post, path = "/admin/notify", tag = "fleet", request_body(content = NotifyBody, description = "optional"),
    params(("role" = Option<String>, Query, description = "only followers of this role"),
        ("auth" = Option<String>, Query, description = "admin key, if not in Authorization")),
    responses((status = 200, body = NotifyAnswer), (status = 400, body = pryv_protocol::ErrorBody), (status = 401, body = pryv_protocol::ErrorBody)))]
pub async fn notify(
    State(state): State<AppState>,
    Remote(remote): Remote,
    caller: Caller,
    Query(query): Query<NotifyQuery>,
    body: Bytes,
) -> Result<Json<NotifyView>, Error> {
    caller.require(Permission::SettingsUpdate)?;
    let body = parse_body(&body)?;
    let mut roles: Vec<String> = body.roles.unwrap_or_default();
    roles.extend(query.role);
    let request = pryv_protocol::NotifyRequest {
        services: body.services,
        confirm_removals: body.confirm_removals,
        // With replicas: the follower's own replica may not have this revision yet (its watch lags).
        store_revision: Some(state.store.settings_revision()).filter(|r| *r > 0),
        ..pryv_protocol::NotifyRequest::default()
    };
    let order = NotifyOrder {
        roles,
        zones: body.zones.unwrap_or_default(),
        followers: body.followers.unwrap_or_default(),
        all: body.all,
        request,
        strategy: body.strategy,
    };
    let (answer, rollout) =
        crate::admin::notify::notify(&state.drive(), order, &caller.name()).await?;
    let summary = format!(
        "{} ok, {} failed, {} up to date{}",
        answer.successes.len(),
        answer.failures.len(),
        answer.up_to_date.len(),
        rollout.map_or(String::new(), |id| format!(", rollout {id}"))
    );
    state
        .admin
        .audit(&caller.name(), "notify", &summary, &remote)
        .await;
    Ok(Json(NotifyView { answer, rollout }))
}

/// An empty body is a plain notification of everyone.
fn parse_body(body: &[u8]) -> Result<NotifyBody, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(NotifyBody::default());
    }
    serde_json::from_slice(body).map_err(|err| {
        Error::BadRequest(format!(
            "body must be {{\"services\": [...], \"roles\": [...]}}: {err}"
        ))
    })
}

/// Every follower (never its key): last fetch, revision, whether it is current, last notification (settings:read).
#[utoipa::path(get, path = "/admin/status", tag = "fleet", responses((status = 200, body = FleetView)))]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<FleetView>, Error> {
    caller.require(Permission::SettingsRead)?;
    Ok(Json(fleet_view(&state).await))
}

/// What `GET /admin/status` answers (also the console's live `fleet` event).
pub(super) async fn fleet_view(state: &AppState) -> FleetView {
    let revisions = current_revisions(&state.drive()).await;
    FleetView {
        followers: state.admin.fleet.status(state.followers.all(), &revisions),
        render_problems: state.store.problems(),
        settings_repository: state.admin.repository.as_ref().map(|r| r.status()),
        replica: state.replica.as_ref().map(|replica| ReplicaView {
            elected: replica.election.term().is_some(),
            isolated: replica.liveness.isolated_for().is_some(),
            settings_revision: state.store.settings_revision(),
            watching: replica.watching.load(std::sync::atomic::Ordering::Acquire),
        }),
    }
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
        entries: state.admin.audit_entries(limit).await?,
    }))
}
