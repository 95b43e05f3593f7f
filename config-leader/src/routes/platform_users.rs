//! `/platform-users/{username}`: the admin web app's "Platform users" page (Pryv.io accounts, through the
//! register and the cores). Each route needs its `platformUsers` permission and is audited.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;

use super::{AppState, Remote};
use crate::admin::identity::{Caller, Permission};
use crate::admin::platform_users::validate_username;
use crate::error::Error;

/// The platform setting listing who may delete accounts; `adminToken` lets the admin API do it.
const ACCOUNT_DELETION: &str = "ACCOUNT_DELETION";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/platform-users/{username}", get(read).delete(remove))
        .route("/platform-users/{username}/mfa", delete(remove_mfa))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PlatformUser {
    /// The register's record of the account, as the register answers it.
    #[schema(value_type = Object)]
    pub user: Value,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeletedPlatformUser {
    pub username: String,
}

/// A Pryv.io account as the register knows it (platformUsers:read).
#[utoipa::path(get, path = "/platform-users/{username}", tag = "platform-users", params(("username" = String, Path)),
    responses((status = 200, body = PlatformUser), (status = 400, body = pryv_protocol::ErrorBody), (status = 403, body = pryv_protocol::ErrorBody),
        (status = 404, body = pryv_protocol::ErrorBody), (status = 502, description = "register unreachable or failing", body = pryv_protocol::ErrorBody)))]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> Result<Json<PlatformUser>, Error> {
    caller.require(Permission::PlatformUsersRead)?;
    validate_username(&username)?;
    let user = state.admin.platform_users.get(&username).await?;
    Ok(Json(PlatformUser { user }))
}

/// Delete a Pryv.io account on every core, then on the register (platformUsers:delete). Only when the platform
/// setting `API_SETTINGS.ACCOUNT_DELETION` includes `adminToken`.
#[utoipa::path(delete, path = "/platform-users/{username}", tag = "platform-users", params(("username" = String, Path)),
    responses((status = 200, body = DeletedPlatformUser), (status = 400, body = pryv_protocol::ErrorBody), (status = 403, body = pryv_protocol::ErrorBody),
        (status = 502, description = "a core or the register unreachable or failing", body = pryv_protocol::ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    Remote(remote): Remote,
    caller: Caller,
    Path(username): Path<String>,
) -> Result<Json<DeletedPlatformUser>, Error> {
    caller.require(Permission::PlatformUsersDelete)?;
    validate_username(&username)?;
    let allowed = state
        .admin
        .settings
        .value_of(ACCOUNT_DELETION)
        .and_then(|v| v.as_array().cloned())
        .is_some_and(|list| list.iter().any(|v| v == "adminToken"));
    if !allowed {
        return Err(Error::Forbidden(format!(
            "platform user deletion is disabled: add \"adminToken\" to the platform setting {ACCOUNT_DELETION}"
        )));
    }
    state.admin.platform_users.delete(&username).await?;
    state
        .admin
        .audit(&caller.name(), "platform-user-delete", &username, &remote)
        .await;
    Ok(Json(DeletedPlatformUser { username }))
}

/// Remove a Pryv.io account's multi-factor authentication on its core (platformUsers:modify).
#[utoipa::path(delete, path = "/platform-users/{username}/mfa", tag = "platform-users", params(("username" = String, Path)),
    responses((status = 204, description = "done"), (status = 400, body = pryv_protocol::ErrorBody), (status = 403, body = pryv_protocol::ErrorBody),
        (status = 404, body = pryv_protocol::ErrorBody), (status = 502, description = "register or core unreachable or failing", body = pryv_protocol::ErrorBody)))]
pub async fn remove_mfa(
    State(state): State<AppState>,
    Remote(remote): Remote,
    caller: Caller,
    Path(username): Path<String>,
) -> Result<StatusCode, Error> {
    caller.require(Permission::PlatformUsersModify)?;
    validate_username(&username)?;
    state.admin.platform_users.delete_mfa(&username).await?;
    state
        .admin
        .audit(
            &caller.name(),
            "platform-user-mfa-delete",
            &username,
            &remote,
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}
