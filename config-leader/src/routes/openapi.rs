//! `GET /openapi.json`: the OpenAPI document, generated from the handlers' annotations.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use super::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "config-leader",
        description = "Pryv.io configuration leader: followers' configuration and the admin API"
    ),
    paths(
        super::conf::get_conf,
        super::conf::health,
        super::conf::report,
        super::login::login,
        super::login::logout,
        super::users::list,
        super::users::read,
        super::users::create,
        super::users::set_permissions,
        super::users::reset_password,
        super::users::change_password,
        super::users::delete,
        super::settings::read,
        super::settings::update,
        super::settings::history,
        super::settings::revision,
        super::settings::rollback,
        super::settings::migrations,
        super::settings::apply_migrations,
        super::notify::notify,
        super::notify::status,
        super::notify::audit,
        super::settings::preview,
        super::settings::diff_between,
        super::settings::rollback_preview,
        super::zones::read,
        super::events::events,
        super::login::me,
        super::zones::update,
        super::zones::preview,
        super::rollouts::rollouts,
        super::rollouts::rollout,
        super::rollouts::resume,
        super::rollouts::abort,
        super::platform_users::read,
        super::platform_users::remove,
        super::platform_users::remove_mfa,
    ),
    components(schemas(pryv_protocol::ErrorBody, pryv_protocol::ErrorDetail))
)]
pub struct ApiDoc;

pub fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
}
