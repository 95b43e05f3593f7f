//! `/admin/zones`: the per-zone overrides of the settings (read, partial update, preview). A change is a
//! settings revision: `GET /admin/settings/history` lists it, rollback undoes it, `If-Match` guards it.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use super::settings::{UpdateQuery, held_if, if_match, with_etag};
use super::{AppState, Remote};
use crate::admin::identity::{Caller, Permission};
use crate::admin::zones::ZonesPatch;
use crate::error::Error;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/zones", get(read).put(update))
        .route("/admin/zones/preview", post(preview))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ZonesView {
    /// `ZONE: {GROUP: {settings: {NAME: {value}}}}`: what each zone overrides.
    #[schema(value_type = Object)]
    pub zones: serde_json::Value,
    /// The followers of each zone (name, else URL), as config-leader.json places them.
    #[schema(value_type = Object)]
    pub followers: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
}

/// The settings in force; `saved`: the revision this request's change was saved as (other replicas or
/// requests may have saved more since: the ETag is the revision of what is shown).
async fn view(state: &AppState, saved: Option<i64>) -> Result<Response, Error> {
    let (platform, current) = state.admin.settings.current_with_revision().await?;
    let zones: serde_json::Map<String, serde_json::Value> = platform
        .zones
        .iter()
        .map(|(name, zone)| Ok((name.clone(), serde_json::to_value(&zone.vars)?)))
        .collect::<Result<_, serde_json::Error>>()?;
    let mut followers: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for follower in state.followers.all() {
        if let Some(zone) = &follower.zone {
            followers
                .entry(zone.clone())
                .or_default()
                .push(follower.label().to_owned());
        }
    }
    Ok(with_etag(
        Json(ZonesView {
            zones: serde_json::Value::Object(zones),
            followers,
            revision: saved,
        }),
        current,
    ))
}

fn patch_of(body: &[u8]) -> Result<ZonesPatch, Error> {
    let body: serde_json::Value = serde_json::from_slice(body)
        .map_err(|err| Error::BadRequest(format!("the body is not JSON: {err}")))?;
    ZonesPatch::from_body(body)
}

/// Each zone's overrides and followers (settings:read); the ETag is the settings revision.
#[utoipa::path(get, path = "/admin/zones", tag = "settings",
    responses((status = 200, body = ZonesView), (status = 401, body = pryv_protocol::ErrorBody), (status = 403, body = pryv_protocol::ErrorBody)))]
pub async fn read(State(state): State<AppState>, caller: Caller) -> Result<Response, Error> {
    caller.require(Permission::SettingsRead)?;
    view(&state, None).await
}

/// Change zones' overrides (settings:update): `{"zones": {ZONE: {GROUP: {"settings": {NAME: {"value": ...}
/// | {"remove": true}}}} | null}, "message"?}`. Every role is rendered in every zone first; on any problem
/// nothing is saved. Only the followers whose tree changed get a new revision.
#[utoipa::path(put, path = "/admin/zones", tag = "settings", request_body = ZonesPatch,
    params(("hold" = Option<bool>, Query, description = "no follower gets the change before the next notification"),
        ("If-Match" = Option<String>, Header, description = "the settings revision the change was made on")),
    responses((status = 200, body = ZonesView), (status = 400, body = pryv_protocol::ErrorBody), (status = 403, body = pryv_protocol::ErrorBody),
        (status = 412, description = "another change was saved since the If-Match revision", body = pryv_protocol::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Remote(remote): Remote,
    caller: Caller,
    Query(query): Query<UpdateQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Error> {
    caller.require(Permission::SettingsUpdate)?;
    let expected = if_match(&headers)?;
    let patch = patch_of(&body)?;
    let revision = held_if(
        &state,
        query.hold,
        state
            .admin
            .settings
            .update_zones(&patch, &caller.name(), expected),
    )
    .await?;
    metrics::counter!(crate::metrics::SETTINGS_CHANGES, "kind" => "zones").increment(1);
    state
        .admin
        .audit(
            &caller.name(),
            "zones-update",
            &format!("revision {revision}: {}", patch.names().join(", ")),
            &remote,
        )
        .await;
    view(&state, Some(revision)).await
}

/// What `PUT /admin/zones` with the same body would change, saving nothing (settings:update): per variant
/// the files' diffs and the services each follower would restart.
#[utoipa::path(post, path = "/admin/zones/preview", tag = "settings", request_body = ZonesPatch,
    responses((status = 200, body = crate::admin::preview::Preview), (status = 400, body = pryv_protocol::ErrorBody), (status = 403, body = pryv_protocol::ErrorBody)))]
pub async fn preview(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Json<crate::admin::preview::Preview>, Error> {
    caller.require(Permission::SettingsUpdate)?;
    let patch = patch_of(&body)?;
    let settings = state.admin.settings.clone();
    let followers = state.followers.all().to_vec();
    let preview = tokio::task::spawn_blocking(move || {
        let before = settings.current()?;
        let after = patch.apply(&before)?;
        settings.preview(&before, &after, &followers)
    })
    .await??;
    Ok(Json(preview))
}
