//! Admin users: list, read, create, change permissions, reset or change password, delete. Each route checks the
//! caller's permission; nobody grants permissions they do not hold, nor resets, re-permissions or deletes a user
//! holding more than they do (and only `initial_user` acts on `initial_user`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{ApiJson, AppState, Remote};
use crate::admin::db::UserRow;
use crate::admin::identity::{self, Caller, INITIAL_USER, Permission, Permissions};
use crate::error::Error;
use crate::secret;
use pryv_daemon::now_unix_i64;

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

fn view(row: UserRow) -> UserView {
    UserView {
        permissions: Permissions::from_json(&row.permissions),
        username: row.username,
    }
}

fn not_found(username: &str) -> Error {
    Error::NotFound(format!("no admin user '{username}'"))
}

fn grantable(caller: &Caller, wanted: &Permissions) -> Result<(), Error> {
    wanted.validate()?;
    if caller.permissions().covers(wanted) {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "you cannot grant permissions you do not hold".into(),
        ))
    }
}

/// The rule for acting on another admin: the target's permissions must be a subset of the caller's, and the
/// emergency account is acted on by nobody but itself. A refusal is audited (`<action>-refused`).
async fn may_act_on(
    state: &AppState,
    caller: &Caller,
    action: &str,
    username: &str,
    remote: &str,
) -> Result<(), Error> {
    let name = username.to_owned();
    let target = state
        .admin
        .db
        .call(move |db| db.user(&name))
        .await?
        .ok_or_else(|| not_found(username))?;
    let is_self = matches!(caller, Caller::User { username: own, .. } if own == username);
    let refusal = if username == INITIAL_USER && !is_self {
        Some(format!(
            "{INITIAL_USER} is the emergency account; only {INITIAL_USER} itself may do this"
        ))
    } else if !caller
        .permissions()
        .covers(&Permissions::from_json(&target.permissions))
    {
        Some(format!(
            "'{username}' holds permissions you do not hold; only an admin holding all of them may do this"
        ))
    } else {
        None
    };
    match refusal {
        None => Ok(()),
        Some(message) => {
            state
                .admin
                .audit(
                    &caller.name(),
                    &format!("{action}-refused"),
                    username,
                    remote,
                )
                .await;
            Err(Error::Forbidden(message))
        }
    }
}

async fn hash(password: String) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || identity::hash_password(&password)).await?
}

/// List admin users (users:read).
#[utoipa::path(get, path = "/users", tag = "users", responses((status = 200, body = UserList), (status = 403, body = pryv_protocol::ErrorBody)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<UserList>, Error> {
    caller.require(Permission::UsersRead)?;
    let users = state
        .admin
        .db
        .call(|db| db.users())
        .await?
        .into_iter()
        .map(view)
        .collect();
    Ok(Json(UserList { users }))
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
    let name = username.clone();
    let user = state
        .admin
        .db
        .call(move |db| db.user(&name))
        .await?
        .ok_or_else(|| not_found(&username))?;
    Ok(Json(view(user).into()))
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
    identity::validate_username(&body.username)?;
    grantable(&caller, &body.permissions)?;
    let (password, generated) = match body.password {
        Some(password) => {
            identity::validate_password(&password)?;
            (password, None)
        }
        None => {
            let password = secret::generate();
            (password.clone(), Some(password))
        }
    };
    let row = UserRow {
        username: body.username.clone(),
        password_hash: hash(password).await?,
        permissions: body.permissions.to_json(),
    };
    let created = state
        .admin
        .db
        .call(move |db| db.insert_user(&row, now_unix_i64()))
        .await?;
    if !created {
        return Err(Error::Conflict(format!(
            "admin user '{}' already exists",
            body.username
        )));
    }
    state
        .admin
        .audit(&caller.name(), "user-create", &body.username, &remote)
        .await;
    let created = CreatedUser {
        username: body.username,
        permissions: body.permissions,
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
    grantable(&caller, &body.permissions)?;
    may_act_on(&state, &caller, "user-permissions", &username, &remote).await?;
    let (name, permissions) = (username.clone(), body.permissions.to_json());
    let changed = state
        .admin
        .db
        .call(move |db| db.set_permissions(&name, &permissions))
        .await?;
    if !changed {
        return Err(not_found(&username));
    }
    state
        .admin
        .audit(&caller.name(), "user-permissions", &username, &remote)
        .await;
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
    may_act_on(&state, &caller, "user-reset-password", &username, &remote).await?;
    let password = secret::generate();
    let (name, hashed) = (username.clone(), hash(password.clone()).await?);
    let changed = state
        .admin
        .db
        .call(move |db| db.set_password(&name, &hashed))
        .await?;
    if !changed {
        return Err(not_found(&username));
    }
    state
        .admin
        .audit(&caller.name(), "user-reset-password", &username, &remote)
        .await;
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
    let Caller::User {
        username: own,
        token_id,
        expires_at,
        ..
    } = &caller
    else {
        return Err(Error::Forbidden(
            "log in as the user to change their password".into(),
        ));
    };
    if own != &username {
        return Err(Error::Forbidden(
            "you can only change your own password".into(),
        ));
    }
    if body
        .new_password_check
        .as_ref()
        .is_some_and(|check| check != &body.new_password)
    {
        return Err(Error::BadRequest(
            "newPasswordCheck differs from newPassword; type the same new password twice".into(),
        ));
    }
    identity::validate_password(&body.new_password)?;
    let name = username.clone();
    let user = state
        .admin
        .db
        .call(move |db| db.user(&name))
        .await?
        .ok_or_else(|| not_found(&username))?;
    let old = body.old_password.clone();
    let hash_now = user.password_hash.clone();
    let valid =
        tokio::task::spawn_blocking(move || identity::verify_password(&old, &hash_now)).await?;
    if !valid {
        return Err(Error::Unauthenticated("the old password is wrong".into()));
    }
    let (name, hashed) = (username.clone(), hash(body.new_password).await?);
    let (token_id, expires_at) = (token_id.clone(), *expires_at);
    state
        .admin
        .db
        .call(move |db| {
            db.set_password(&name, &hashed)?;
            db.revoke(&token_id, expires_at, now_unix_i64())
        })
        .await?;
    state
        .admin
        .audit(&username, "user-change-password", &username, &remote)
        .await;
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
    if username == INITIAL_USER {
        return Err(Error::BadRequest(format!(
            "{INITIAL_USER} is the emergency account; it cannot be deleted"
        )));
    }
    may_act_on(&state, &caller, "user-delete", &username, &remote).await?;
    let name = username.clone();
    if !state.admin.db.call(move |db| db.delete_user(&name)).await? {
        return Err(not_found(&username));
    }
    state
        .admin
        .audit(&caller.name(), "user-delete", &username, &remote)
        .await;
    Ok(Json(DeletedUser { username }))
}
