//! Admin users: list, read, create, change permissions, reset or change password, delete. Each route checks the
//! caller's permission and calls `admin::accounts`, which holds the rule: nobody grants permissions they do not
//! hold, nor resets, re-permissions or deletes a user holding more than they do (and only `initial_user` acts
//! on `initial_user`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{ApiJson, AppState, Remote};
use crate::admin::accounts::{Account, PasswordChange};
use crate::admin::identity::{Caller, Permission, Permissions};
use crate::error::Error;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/users", get(list).post(create))
        .route("/users/{username}", get(read).delete(delete))
        .route("/users/{username}/permissions", put(set_permissions))
        .route("/users/{username}/reset-password", post(reset_password))
        .route("/users/{username}/change-password", post(change_password))
}

#[derive(Serialize, Clone, utoipa::ToSchema)]
pub struct UserView {
    pub username: String,
    pub permissions: Permissions,
}

/// One user, with the same object again under `user` (what the admin web app reads).
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserAnswer {
    #[serde(flatten)]
    pub view: UserView,
    pub user: UserView,
}

impl From<UserView> for UserAnswer {
    fn from(view: UserView) -> Self {
        Self {
            user: view.clone(),
            view,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserList {
    pub users: Vec<UserView>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct NewUser {
    pub username: String,
    /// Omitted: a random one is generated and returned once.
    pub password: Option<String>,
    #[serde(default)]
    pub permissions: Permissions,
}

#[derive(Serialize, Clone, utoipa::ToSchema)]
pub struct CreatedUser {
    pub username: String,
    pub permissions: Permissions,
    /// Present when generated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// The created user, also under `user` (the legacy answer).
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedAnswer {
    #[serde(flatten)]
    pub created: CreatedUser,
    pub user: CreatedUser,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct PermissionsBody {
    pub permissions: Permissions,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PasswordBody {
    pub username: String,
    pub password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangePassword {
    pub old_password: String,
    pub new_password: String,
    /// The repeated new password the web app sends; when present it must equal `newPassword`.
    pub new_password_check: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeletedUser {
    pub username: String,
}

impl From<Account> for UserView {
    fn from(account: Account) -> Self {
        Self {
            username: account.username,
            permissions: account.permissions,
        }
    }
}

/// List admin users (users:read).
#[utoipa::path(get, path = "/users", tag = "users", responses((status = 200, body = UserList), (status = 403, body = pryv_protocol::ErrorBody)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<UserList>, Error> {
    caller.require(Permission::UsersRead)?;
    let users = state.admin.accounts().await?;
    Ok(Json(UserList {
        users: users.into_iter().map(UserView::from).collect(),
    }))
}

/// Read one admin user (users:read).
#[utoipa::path(get, path = "/users/{username}", tag = "users", params(("username" = String, Path)),
    responses((status = 200, body = UserAnswer), (status = 403, body = pryv_protocol::ErrorBody), (status = 404, body = pryv_protocol::ErrorBody)))]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> Result<Json<UserAnswer>, Error> {
    caller.require(Permission::UsersRead)?;
    let account = state.admin.account(&username).await?;
    Ok(Json(UserView::from(account).into()))
}

/// Create an admin user (users:create; only permissions the caller holds).
#[utoipa::path(post, path = "/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = CreatedAnswer), (status = 400, body = pryv_protocol::ErrorBody), (status = 403, body = pryv_protocol::ErrorBody), (status = 409, body = pryv_protocol::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Remote(remote): Remote,
    caller: Caller,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<CreatedAnswer>), Error> {
    caller.require(Permission::UsersCreate)?;
    let account = Account {
        username: body.username,
        permissions: body.permissions,
    };
    let generated = state
        .admin
        .create_account(&caller, &remote, account.clone(), body.password)
        .await?;
    let created = CreatedUser {
        username: account.username,
        permissions: account.permissions,
        password: generated,
    };
    Ok((
        StatusCode::CREATED,
        Json(CreatedAnswer {
            user: created.clone(),
            created,
        }),
    ))
}

/// Replace a user's permissions (users:changePermissions; only permissions the caller holds).
#[utoipa::path(put, path = "/users/{username}/permissions", tag = "users", params(("username" = String, Path)), request_body = PermissionsBody,
    responses((status = 200, body = UserAnswer), (status = 400, body = pryv_protocol::ErrorBody), (status = 403, body = pryv_protocol::ErrorBody), (status = 404, body = pryv_protocol::ErrorBody)))]
pub async fn set_permissions(
    State(state): State<AppState>,
    Remote(remote): Remote,
    caller: Caller,
    Path(username): Path<String>,
    ApiJson(body): ApiJson<PermissionsBody>,
) -> Result<Json<UserAnswer>, Error> {
    caller.require(Permission::UsersChangePermissions)?;
    state
        .admin
        .set_account_permissions(&caller, &remote, &username, &body.permissions)
        .await?;
    Ok(Json(
        UserView {
            username,
            permissions: body.permissions,
        }
        .into(),
    ))
}

/// Give a user a new random password, returned once (users:resetPassword).
#[utoipa::path(post, path = "/users/{username}/reset-password", tag = "users", params(("username" = String, Path)),
    responses((status = 200, body = PasswordBody), (status = 403, body = pryv_protocol::ErrorBody), (status = 404, body = pryv_protocol::ErrorBody)))]
pub async fn reset_password(
    State(state): State<AppState>,
    Remote(remote): Remote,
    caller: Caller,
    Path(username): Path<String>,
) -> Result<Json<PasswordBody>, Error> {
    caller.require(Permission::UsersResetPassword)?;
    let password = state
        .admin
        .reset_account_password(&caller, &remote, &username)
        .await?;
    Ok(Json(PasswordBody { username, password }))
}

/// Change one's own password (old password required); the current token is revoked.
#[utoipa::path(post, path = "/users/{username}/change-password", tag = "users", params(("username" = String, Path)), request_body = ChangePassword,
    responses((status = 200, description = "`{}`; log in again"), (status = 400, body = pryv_protocol::ErrorBody), (status = 401, body = pryv_protocol::ErrorBody), (status = 403, body = pryv_protocol::ErrorBody)))]
pub async fn change_password(
    State(state): State<AppState>,
    Remote(remote): Remote,
    caller: Caller,
    Path(username): Path<String>,
    ApiJson(body): ApiJson<ChangePassword>,
) -> Result<Json<serde_json::Value>, Error> {
    let change = PasswordChange {
        old: body.old_password,
        new: body.new_password,
        check: body.new_password_check,
    };
    state
        .admin
        .change_own_password(&caller, &remote, &username, change)
        .await?;
    Ok(Json(serde_json::json!({})))
}

/// Delete an admin user (users:delete). The emergency account cannot be deleted (it is recreated at start).
#[utoipa::path(delete, path = "/users/{username}", tag = "users", params(("username" = String, Path)),
    responses((status = 200, body = DeletedUser), (status = 400, body = pryv_protocol::ErrorBody), (status = 403, body = pryv_protocol::ErrorBody), (status = 404, body = pryv_protocol::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Remote(remote): Remote,
    caller: Caller,
    Path(username): Path<String>,
) -> Result<Json<DeletedUser>, Error> {
    caller.require(Permission::UsersDelete)?;
    state
        .admin
        .delete_account(&caller, &remote, &username)
        .await?;
    Ok(Json(DeletedUser { username }))
}
