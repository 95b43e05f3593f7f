//! `POST /auth/login`, `POST /auth/logout` (the logic is `admin::accounts`).

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{ApiJson, AppState, Remote};
use crate::admin::identity::Caller;
use crate::error::Error;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/auth/me", axum::routing::get(me))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MeBody {
    pub username: String,
    pub permissions: crate::admin::identity::Permissions,
}

/// Who the token (or the admin key) is, and what it may do: what the console greys out by.
#[utoipa::path(get, path = "/auth/me", tag = "auth",
    responses((status = 200, body = MeBody), (status = 401, body = pryv_protocol::ErrorBody)))]
pub async fn me(caller: Caller) -> Json<MeBody> {
    Json(MeBody {
        username: caller.name(),
        permissions: caller.permissions(),
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct LoginBody {
    pub username: String,
    pub password: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenBody {
    pub token: String,
}

/// Log in; the token goes in `Authorization` afterwards (24 h).
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginBody,
    responses((status = 200, body = TokenBody),
        (status = 400, description = "the body is not {username, password}", body = pryv_protocol::ErrorBody),
        (status = 401, body = pryv_protocol::ErrorBody),
        (status = 429, description = "too many failed attempts; see Retry-After", body = pryv_protocol::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    Remote(remote): Remote,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Json<TokenBody>, Error> {
    let token = state
        .admin
        .login(&body.username, &body.password, &remote)
        .await?;
    Ok(Json(TokenBody { token }))
}

/// Revoke the token used for this request.
#[utoipa::path(post, path = "/auth/logout", tag = "auth",
    responses((status = 200, description = "`{}`"),
        (status = 400, description = "the admin key is not a session", body = pryv_protocol::ErrorBody),
        (status = 401, body = pryv_protocol::ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    Remote(remote): Remote,
    caller: Caller,
) -> Result<Json<serde_json::Value>, Error> {
    state.admin.logout(&caller, &remote).await?;
    Ok(Json(serde_json::json!({})))
}
