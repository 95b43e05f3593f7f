//! `GET /conf` (followers) and `GET /health`.

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::{AppState, ServedRole, credential};
use crate::error::Error;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/conf", get(get_conf))
        .route("/health", get(health))
}

/// The rendered tree of the calling follower's role.
#[utoipa::path(get, path = "/conf", tag = "followers",
    params(("auth" = Option<String>, Query, description = "follower key, if not in Authorization")),
    responses(
        (status = 200, description = "`{files: [{path, content, encoding?}], revision}`; ETag = revision"),
        (status = 304, description = "If-None-Match holds the current revision"),
        (status = 401, description = "missing or unknown key", body = pryv_protocol::ErrorBody),
        (status = 404, description = "no templates folder for the follower's role", body = pryv_protocol::ErrorBody),
        (status = 500, description = "a template does not render; names the file", body = pryv_protocol::ErrorBody)))]
pub async fn get_conf(State(state): State<AppState>, parts: Parts) -> Result<Response, Response> {
    let started = std::time::Instant::now();
    let answer = conf_answer(&state, &parts).await;
    metrics::histogram!(crate::metrics::CONF_DURATION).record(started.elapsed().as_secs_f64());
    answer
}

async fn conf_answer(state: &AppState, parts: &Parts) -> Result<Response, Response> {
    let key = credential(parts).ok_or_else(|| Error::InvalidKey.into_response())?;
    let (index, follower) = state
        .followers
        .find(&key)
        .ok_or_else(|| Error::InvalidKey.into_response())?;
    let role = ServedRole(follower.role.clone());
    let tree = match state.store.get(&follower.role).await {
        Ok(tree) => tree,
        Err(err) => {
            let mut response = err.to_response();
            response.extensions_mut().insert(role);
            return Err(response);
        }
    };
    state.admin.fleet.fetched(index, &tree.revision);
    let etag = HeaderValue::from_str(&format!("\"{}\"", tree.revision))
        .map_err(|_| Error::Internal("revision is not a header value".into()).into_response())?;
    let mut response = if etag_matches(&parts.headers, &tree.revision) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        metrics::counter!(crate::metrics::CONF_BYTES).increment(tree.body.len() as u64);
        let mut response = tree.body.clone().into_response();
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    };
    response.headers_mut().insert(ETAG, etag);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response.extensions_mut().insert(role);
    Ok(response)
}

/// `If-None-Match` holding the revision (quoted or not, weak or strong, in a list) or `*`.
fn etag_matches(headers: &HeaderMap, revision: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|tag| tag == revision || tag == "*")
}

/// Liveness.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "`{status: ok}`")))]
pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}
