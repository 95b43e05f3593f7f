//! The HTTP surface: `GET /conf` for followers, `GET /health`, and a JSON 404 for everything else. One log
//! line per request carries the role, never the key (the query string is not logged since it may hold one).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::auth::{FollowerIndex, request_key};
use crate::error::Error;
use crate::store::TreeStore;

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: TreeStore,
    pub followers: Arc<FollowerIndex>,
}

/// The leader's router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/conf", get(get_conf))
        .route("/health", get(health))
        .fallback(|| async { Error::NotFound })
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

#[derive(Deserialize)]
struct AuthQuery {
    auth: Option<String>,
}

/// Role served by a request, left in the response for the request log.
#[derive(Clone)]
struct ServedRole(String);

async fn get_conf(
    State(state): State<AppState>,
    Query(query): Query<AuthQuery>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let key = request_key(&headers, query.auth.as_deref())
        .ok_or_else(|| Error::InvalidKey.into_response())?;
    let follower = state
        .followers
        .find(key)
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
    let etag = HeaderValue::from_str(&format!("\"{}\"", tree.revision))
        .map_err(|_| Error::Internal("revision is not a header value".into()).into_response())?;
    let mut response = if etag_matches(&headers, &tree.revision) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
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

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let role = response
        .extensions()
        .get::<ServedRole>()
        .map_or("-", |r| r.0.as_str())
        .to_owned();
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        role,
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}
