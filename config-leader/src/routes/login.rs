//! `POST /auth/login`, `POST /auth/logout`.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{ApiJson, AppState, Remote};
use crate::admin::identity::{self, Caller, Permissions};
use crate::error::Error;
use pryv_daemon::now_unix_i64;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
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

const BAD_CREDENTIALS: &str = "invalid username or password";

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
    let keys = [format!("user:{}", body.username), format!("addr:{remote}")];
    if let Err(throttled) = state.admin.throttle.check(&keys) {
        metrics::counter!(crate::metrics::LOGINS, "outcome" => "throttled").increment(1);
        return Err(throttled);
    }
    let name = body.username.clone();
    let user = state.admin.db.call(move |db| db.user(&name)).await?;
    let password = body.password.clone();
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    // Verified even for unknown users, so both answers take the same time; the dummy hash (made at the
    // first unknown user) is made on the blocking thread too.
    let valid = tokio::task::spawn_blocking(move || {
        let hash = hash.unwrap_or_else(|| identity::dummy_hash().to_owned());
        identity::verify_password(&password, &hash)
    })
    .await?;
    match user {
        Some(user) if valid => {
            metrics::counter!(crate::metrics::LOGINS, "outcome" => "success").increment(1);
            state.admin.throttle.succeeded(&keys[0]);
            let name = user.username.clone();
            let generation = state
                .admin
                .db
                .call(move |db| db.token_generation(&name))
                .await?
                .unwrap_or(0);
            let permissions = Permissions::from_json(&user.permissions);
            let (token, _) = state.admin.tokens.issue(
                &user.username,
                permissions,
                generation,
                now_unix_i64(),
            )?;
            state
                .admin
                .audit(&user.username, "login", "", &remote)
                .await;
            Ok(Json(TokenBody { token }))
        }
        _ => {
            metrics::counter!(crate::metrics::LOGINS, "outcome" => "failure").increment(1);
            state.admin.throttle.failed(&keys);
            state
                .admin
                .audit(&body.username, "login-failed", "", &remote)
                .await;
            Err(Error::Unauthenticated(BAD_CREDENTIALS.into()))
        }
    }
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
    match &caller {
        Caller::User {
            username,
            token_id,
            expires_at,
            ..
        } => {
            let (token_id, expires_at) = (token_id.clone(), *expires_at);
            state
                .admin
                .db
                .call(move |db| db.revoke(&token_id, expires_at, now_unix_i64()))
                .await?;
            state.admin.audit(username, "logout", "", &remote).await;
            Ok(Json(serde_json::json!({})))
        }
        Caller::AdminKey => Err(Error::BadRequest(
            "the admin key is not a session; nothing to log out".into(),
        )),
    }
}
