//! `/admin/settings` (read, partial update), its history and rollback, and `/admin/migrations`.

use axum::extract::{Path, Query, State};
use axum::http::header::{ETAG, IF_MATCH};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{ApiJson, AppState, Remote};
use crate::admin::db::RevisionRow;
use crate::admin::identity::{Caller, Permission};
use crate::admin::settings::{MigrationPlan, SettingChange, SettingsPatch};
use crate::error::Error;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/settings", get(read).put(update))
        .route("/admin/settings/preview", post(preview))
        .route("/admin/settings/history", get(history))
        .route("/admin/settings/history/{revision}", get(revision))
        .route("/admin/settings/rollback", post(rollback))
        .route("/admin/settings/rollback/preview", post(rollback_preview))
        .route("/admin/settings/diff", get(diff_between))
        // POST /admin/migrations is the legacy leader's path of the same action.
        .route("/admin/migrations", get(migrations).post(apply_migrations))
        .route("/admin/migrations/apply", post(apply_migrations))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SettingsView {
    /// The `vars` of platform.yml: groups with names, descriptions and settings.
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateQuery {
    #[serde(default)]
    pub(super) allow_new: bool,
    /// Save, but let no follower fetch the change before the next `POST /admin/notify` (which may roll it
    /// out in waves, also to long-polling followers).
    #[serde(default)]
    pub(super) hold: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct HistoryView {
    pub revisions: Vec<RevisionRow>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RevisionView {
    #[serde(flatten)]
    pub revision: RevisionRow,
    /// The full platform.yml of this revision.
    pub content: String,
    /// Settings changed against the previous revision.
    pub changes: Vec<SettingChange>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RollbackBody {
    pub revision: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MigrationResult {
    #[serde(flatten)]
    pub plan: MigrationPlan,
    /// New settings revision, when anything was added.
    pub revision: Option<i64>,
}

/// The settings with the revision they are, the revision also as the `ETag` (what `If-Match` names).
/// `revision` in the body only after a change (the legacy answer of a read has none).
/// The settings in force; `saved`: the revision this request's change was saved as (other replicas or
/// requests may have saved more since: the ETag is the revision of what is shown).
async fn view(state: &AppState, saved: Option<i64>) -> Result<Response, Error> {
    let (platform, current) = state.admin.settings.current_with_revision().await?;
    let settings = serde_json::to_value(&platform.vars)?;
    let revision = saved;
    Ok(with_etag(
        Json(SettingsView { settings, revision }),
        current,
    ))
}

pub(super) fn with_etag(answer: impl IntoResponse, revision: i64) -> Response {
    let mut response = answer.into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("\"{revision}\"")) {
        response.headers_mut().insert(ETAG, value);
    }
    response
}

/// The revision `If-Match` names (`"12"`, `12`, `W/"12"`); `None` without the header or with `*`. A tag that
/// is not a revision number can never be current: refused as stale.
pub(super) fn if_match(headers: &HeaderMap) -> Result<Option<i64>, Error> {
    let Some(value) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let tag = value
        .to_str()
        .unwrap_or_default()
        .trim()
        .trim_start_matches("W/")
        .trim_matches('"');
    if tag == "*" {
        return Ok(None);
    }
    tag.parse::<i64>().map(Some).map_err(|_| {
        Error::BadRequest(format!(
            "If-Match must hold a settings revision (the ETag of GET /admin/settings), not {tag:?}"
        ))
    })
}

/// The platform settings (settings:read). Internal variables never leave the leader.
#[utoipa::path(get, path = "/admin/settings", tag = "settings",
    responses((status = 200, body = SettingsView), (status = 401, body = pryv_protocol::ErrorBody), (status = 403, body = pryv_protocol::ErrorBody)))]
pub async fn read(State(state): State<AppState>, caller: Caller) -> Result<Response, Error> {
    caller.require(Permission::SettingsRead)?;
    view(&state, None).await
}

/// Change some settings (settings:update). Every role is rendered with the new values first; on any error
/// nothing is saved. Unknown groups or settings are refused unless `allowNew=true`.
#[utoipa::path(put, path = "/admin/settings", tag = "settings", request_body = SettingsPatch,
    params(("allowNew" = Option<bool>, Query, description = "create unknown groups and settings"),
        ("hold" = Option<bool>, Query, description = "no follower gets the change before the next notification"),
        ("If-Match" = Option<String>, Header, description = "the settings revision the change was made on (the ETag of GET /admin/settings)")),
    responses((status = 200, body = SettingsView), (status = 400, body = pryv_protocol::ErrorBody), (status = 403, body = pryv_protocol::ErrorBody),
        (status = 412, description = "another change was saved since the If-Match revision; `currentRevision` and the ETag name the current one", body = pryv_protocol::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Remote(remote): Remote,
    caller: Caller,
    Query(query): Query<UpdateQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Error> {
    // The permission comes before the body: a read-only user gets 403 whatever it sends.
    caller.require(Permission::SettingsUpdate)?;
    let expected = if_match(&headers)?;
    let body: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|err| Error::BadRequest(format!("the body is not JSON: {err}")))?;
    let patch = SettingsPatch::from_body(body)?;
    let revision = held_if(
        &state,
        query.hold,
        state
            .admin
            .settings
            .update(&patch, query.allow_new, &caller.name(), expected),
    )
    .await?;
    let names: Vec<String> = patch
        .settings
        .iter()
        .flat_map(|(group, g)| g.settings.keys().map(move |name| format!("{group}.{name}")))
        .collect();
    metrics::counter!(crate::metrics::SETTINGS_CHANGES, "kind" => "update").increment(1);
    state
        .admin
        .audit(
            &caller.name(),
            "settings-update",
            &format!("revision {revision}: {}", names.join(", ")),
            &remote,
        )
        .await;
    view(&state, Some(revision)).await
}

/// What `PUT /admin/settings` with the same body would change, saving nothing (settings:update): per role the
/// files added, changed and removed with a unified diff (internal secrets as `***`), and the services each
/// follower would restart.
#[utoipa::path(post, path = "/admin/settings/preview", tag = "settings", request_body = SettingsPatch,
    params(("allowNew" = Option<bool>, Query, description = "create unknown groups and settings")),
    responses((status = 200, body = crate::admin::preview::Preview), (status = 400, body = pryv_protocol::ErrorBody), (status = 403, body = pryv_protocol::ErrorBody)))]
pub async fn preview(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<UpdateQuery>,
    body: axum::body::Bytes,
) -> Result<Json<crate::admin::preview::Preview>, Error> {
    caller.require(Permission::SettingsUpdate)?;
    let body: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|err| Error::BadRequest(format!("the body is not JSON: {err}")))?;
    let patch = SettingsPatch::from_body(body)?;
    let settings = state.admin.settings.clone();
    let followers = state.followers.all().to_vec();
    // Two renders of every role: off the async workers.
    let preview = tokio::task::spawn_blocking(move || {
        let after = settings.patched(&patch, query.allow_new)?;
        let before = settings.current()?;
        settings.preview(&before, &after, &followers)
    })
    .await??;
    Ok(Json(preview))
}

/// Settings revisions, newest first (settings:read).
#[utoipa::path(get, path = "/admin/settings/history", tag = "settings", responses((status = 200, body = HistoryView)))]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<HistoryView>, Error> {
    caller.require(Permission::SettingsRead)?;
    Ok(Json(HistoryView {
        revisions: state.admin.settings.history().await?,
    }))
}

/// One revision, its content and its changes against the previous one (settings:read).
#[utoipa::path(get, path = "/admin/settings/history/{revision}", tag = "settings", params(("revision" = i64, Path)),
    responses((status = 200, body = RevisionView), (status = 400, body = pryv_protocol::ErrorBody)))]
pub async fn revision(
    State(state): State<AppState>,
    caller: Caller,
    Path(revision): Path<i64>,
) -> Result<Response, Error> {
    caller.require(Permission::SettingsRead)?;
    let (row, changes) = state.admin.settings.revision(revision).await?;
    let number = row.revision;
    Ok(with_etag(
        Json(RevisionView {
            content: row.content.clone(),
            revision: row,
            changes,
        }),
        number,
    ))
}

/// Make an earlier revision current again, recorded as a new revision (settings:update).
#[utoipa::path(post, path = "/admin/settings/rollback", tag = "settings", request_body = RollbackBody,
    params(("If-Match" = Option<String>, Header, description = "the current settings revision")),
    responses((status = 200, body = SettingsView), (status = 400, body = pryv_protocol::ErrorBody), (status = 412, body = pryv_protocol::ErrorBody)))]
pub async fn rollback(
    State(state): State<AppState>,
    Remote(remote): Remote,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RollbackBody>,
) -> Result<Response, Error> {
    caller.require(Permission::SettingsUpdate)?;
    let expected = if_match(&headers)?;
    let revision = state
        .admin
        .settings
        .rollback(body.revision, &caller.name(), expected)
        .await?;
    metrics::counter!(crate::metrics::SETTINGS_CHANGES, "kind" => "rollback").increment(1);
    state
        .admin
        .audit(
            &caller.name(),
            "settings-rollback",
            &format!("to revision {} as revision {revision}", body.revision),
            &remote,
        )
        .await;
    view(&state, Some(revision)).await
}

/// The steps from the platform's template version to the template platform file's, and what they would change
/// (settings:read).
#[utoipa::path(get, path = "/admin/migrations", tag = "settings", responses((status = 200, body = MigrationPlan), (status = 400, body = pryv_protocol::ErrorBody)))]
pub async fn migrations(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<MigrationPlan>, Error> {
    caller.require(Permission::SettingsRead)?;
    Ok(Json(state.admin.settings.migrations()?))
}

/// Migrate platform.yml to the template's version (settings:update): one history entry. The answer lists the
/// steps applied (empty when there was nothing to do).
#[utoipa::path(post, path = "/admin/migrations/apply", tag = "settings", params(("If-Match" = Option<String>, Header, description = "the current settings revision")),
    responses((status = 200, body = MigrationResult), (status = 400, body = pryv_protocol::ErrorBody), (status = 412, body = pryv_protocol::ErrorBody)))]
pub async fn apply_migrations(
    State(state): State<AppState>,
    Remote(remote): Remote,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Json<MigrationResult>, Error> {
    caller.require(Permission::SettingsUpdate)?;
    let expected = if_match(&headers)?;
    let (plan, revision) = state
        .admin
        .settings
        .apply_migrations(&caller.name(), expected)
        .await?;
    if revision.is_some() {
        metrics::counter!(crate::metrics::SETTINGS_CHANGES, "kind" => "migration").increment(1);
    }
    state
        .admin
        .audit(
            &caller.name(),
            "migrations-apply",
            &format!(
                "{} -> {}: {} step(s), {} setting(s) changed",
                plan.platform_version,
                plan.template_version,
                plan.migrations.len(),
                plan.changes.len()
            ),
            &remote,
        )
        .await;
    Ok(Json(MigrationResult { plan, revision }))
}

#[derive(Deserialize)]
pub struct DiffQuery {
    from: i64,
    to: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DiffView {
    pub changes: Vec<SettingChange>,
}

/// The settings changed between any two revisions, setting by setting (settings:read).
#[utoipa::path(get, path = "/admin/settings/diff", tag = "settings",
    params(("from" = i64, Query), ("to" = i64, Query)),
    responses((status = 200, body = DiffView), (status = 400, body = pryv_protocol::ErrorBody)))]
pub async fn diff_between(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<DiffQuery>,
) -> Result<Json<DiffView>, Error> {
    caller.require(Permission::SettingsRead)?;
    let changes = state
        .admin
        .settings
        .changes_between(query.from, query.to)
        .await?;
    Ok(Json(DiffView { changes }))
}

/// What `POST /admin/settings/rollback` with the same body would change on every machine, saving nothing
/// (settings:update).
#[utoipa::path(post, path = "/admin/settings/rollback/preview", tag = "settings", request_body = RollbackBody,
    responses((status = 200, body = crate::admin::preview::Preview), (status = 400, body = pryv_protocol::ErrorBody)))]
pub async fn rollback_preview(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RollbackBody>,
) -> Result<Json<crate::admin::preview::Preview>, Error> {
    caller.require(Permission::SettingsUpdate)?;
    Ok(Json(
        state.admin.settings.rollback_preview(body.revision).await?,
    ))
}

/// Runs `save`, the change held first when `hold` (a follower waiting on `GET /conf?wait=` must not see it in
/// between); a failed save releases the hold it set.
pub(super) async fn held_if(
    state: &AppState,
    hold: bool,
    save: impl std::future::Future<Output = Result<i64, Error>>,
) -> Result<i64, Error> {
    let was_holding = state.admin.rollouts.holding();
    if hold {
        state.admin.rollouts.set_hold(true).await?;
    }
    let saved = save.await;
    if saved.is_err() && hold && !was_holding {
        state.admin.rollouts.set_hold(false).await?;
    }
    saved
}
