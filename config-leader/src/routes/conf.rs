//! `GET /conf` and `POST /conf/report` (followers, by their key) and `GET /health`.

use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::{ApiJson, AppState, ServedRole, credential};
use crate::admin::rollouts::Pin;
use crate::error::Error;
use crate::store::ServedTree;

/// Longest `GET /conf?wait=` (below the request deadline).
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(25);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/conf", get(get_conf))
        .route("/conf/report", post(report))
        .route("/health", get(health))
}

#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<String>,
    timeout: Option<String>,
}

/// The rendered tree of the calling follower's role (in its zone, with its own variables).
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
    // A long-poll's time is the wait for a change, not the leader's speed.
    let long_poll = parts
        .uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p.starts_with("wait=")));
    if !long_poll {
        metrics::histogram!(crate::metrics::CONF_DURATION).record(started.elapsed().as_secs_f64());
    }
    answer
}

async fn conf_answer(state: &AppState, parts: &Parts) -> Result<Response, Response> {
    let key = credential(parts).ok_or_else(|| Error::InvalidKey.into_response())?;
    let (index, follower) = state
        .followers
        .find(&key)
        .ok_or_else(|| Error::InvalidKey.into_response())?;
    let role = ServedRole(follower.role.clone());
    let wait = Query::<WaitQuery>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or(WaitQuery {
            wait: None,
            timeout: None,
        });
    if let Err(isolated) = state.ensure_reachable() {
        return isolated_answer(state, follower, parts, &wait, isolated, role).await;
    }
    let (served, unchanged) = match wait_for_news(state, index, follower, parts, wait).await {
        Ok(news) => news,
        Err(err) => {
            let mut response = err.to_response();
            response.extensions_mut().insert(role);
            return Err(response);
        }
    };
    if let Served::Tree(tree) = &served {
        state.admin.fleet.fetched(index, &tree.revision);
    }
    let etag = match &served {
        Served::Tree(tree) => tree.etag.clone(),
        Served::Held(revision) => {
            HeaderValue::from_str(&format!("\"{revision}\"")).map_err(|_| {
                Error::Internal("revision is not a header value".into()).into_response()
            })?
        }
    };
    let store_revision = match &served {
        Served::Tree(tree) => store_revision_header(tree),
        Served::Held(_) => None,
    };
    let mut response = match served {
        Served::Tree(tree) if !unchanged && !etag_matches(&parts.headers, &tree.revision) => {
            metrics::counter!(crate::metrics::CONF_BYTES).increment(tree.body.len() as u64);
            let mut response = tree.body.clone().into_response();
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        _ => StatusCode::NOT_MODIFIED.into_response(),
    };
    response.headers_mut().insert(ETAG, etag);
    if let Some(value) = store_revision {
        response
            .headers_mut()
            .insert(pryv_protocol::STORE_REVISION_HEADER, value);
    }
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response.extensions_mut().insert(role);
    Ok(response)
}

/// A replica cut off from its etcd store cannot vouch for a tree: 304 when the follower already has the
/// tree this replica last knew, 503 `leader-isolated` otherwise. A long-poll is refused at once: holding it
/// would tell the follower "nothing new" for as long as it waits, where another replica may have news (the
/// follower moves on to it).
async fn isolated_answer(
    state: &AppState,
    follower: &crate::config::FollowerEntry,
    parts: &Parts,
    wait: &WaitQuery,
    isolated: Error,
    role: ServedRole,
) -> Result<Response, Response> {
    let refused = |role: ServedRole| {
        let mut response = isolated.to_response();
        response.extensions_mut().insert(role);
        response
    };
    if wait.wait.is_some() {
        return Err(refused(role));
    }
    match state.store.get(&follower.variant).await {
        Ok(tree) if etag_matches(&parts.headers, &tree.revision) => {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            response.headers_mut().insert(ETAG, tree.etag.clone());
            if let Some(value) = store_revision_header(&tree) {
                response
                    .headers_mut()
                    .insert(pryv_protocol::STORE_REVISION_HEADER, value);
            }
            response.extensions_mut().insert(role);
            Ok(response)
        }
        _ => Err(refused(role)),
    }
}

/// What this follower gets now, or, with `?wait=<revision>`, as soon as that is no longer `<revision>`
/// (at most until the timeout): every change of the trees or of the rollouts' pins wakes the wait. The flag
/// says the wait timed out with nothing new: the answer is then 304, whatever `If-None-Match` says.
async fn wait_for_news(
    state: &AppState,
    index: crate::follower_keys::FollowerId,
    follower: &crate::config::FollowerEntry,
    parts: &Parts,
    wait: WaitQuery,
) -> Result<(Served, bool), std::sync::Arc<Error>> {
    let deadline = wait_deadline(&wait);
    let mut changes = state.store.changes();
    loop {
        changes.borrow_and_update();
        let served = served_tree(state, index, follower, &parts.headers).await?;
        let (Some(seen), Some(deadline)) = (wait.wait.as_deref(), deadline) else {
            return Ok((served, false));
        };
        if served.revision() != seen.trim_matches('"') {
            return Ok((served, false));
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return Ok((served, true)),
            _ = changes.changed() => {}
        }
    }
}

/// The settings revision `tree` was rendered from, as a header value (none when unknown: a restored
/// rollout target).
fn store_revision_header(tree: &ServedTree) -> Option<HeaderValue> {
    (tree.store_revision > 0).then(|| HeaderValue::from(tree.store_revision))
}

/// When a `?wait=` request answers at the latest (its `timeout`, at most [`MAX_WAIT`]); `None` without wait.
fn wait_deadline(wait: &WaitQuery) -> Option<tokio::time::Instant> {
    wait.wait.as_ref().map(|_| {
        let seconds = wait
            .timeout
            .as_deref()
            .and_then(|t| t.parse::<u64>().ok())
            .map_or(MAX_WAIT, std::time::Duration::from_secs);
        tokio::time::Instant::now() + seconds.min(MAX_WAIT)
    })
}

/// What `GET /conf` gives one follower.
enum Served {
    Tree(std::sync::Arc<ServedTree>),
    /// Held by a rollout whose wave has not started: it keeps the revision it sent.
    Held(String),
}

impl Served {
    fn revision(&self) -> &str {
        match self {
            Self::Tree(tree) => &tree.revision,
            Self::Held(revision) => revision,
        }
    }
}

/// Its variant's current tree, unless a rollout pins this follower: then its wave's target, or what it has.
async fn served_tree(
    state: &AppState,
    index: crate::follower_keys::FollowerId,
    follower: &crate::config::FollowerEntry,
    headers: &HeaderMap,
) -> Result<Served, std::sync::Arc<Error>> {
    let current = state.store.get(&follower.variant).await?;
    let held = || match sent_revision(headers) {
        Some(has) => Some(Served::Held(has)),
        None => state
            .admin
            .fleet
            .known_revision(index)
            .and_then(|known| state.store.tree_at(follower.variant.key(), &known))
            .map(Served::Tree),
    };
    let pinned = match state.admin.rollouts.pin(follower) {
        None => None,
        Some(Pin::Target(revision)) if revision == current.revision => None,
        // The target's tree, or, should it be gone, what the follower has: never a newer tree than
        // the rollout's target.
        Some(Pin::Target(revision)) => state
            .store
            .tree_at(follower.variant.key(), &revision)
            .map(Served::Tree)
            .or_else(|| {
                tracing::warn!(url = %follower.url, revision, "the rollout's target tree is not at hand; the follower keeps what it has");
                held()
            }),
        Some(Pin::Hold) => held(),
    };
    Ok(pinned.unwrap_or(Served::Tree(current)))
}

/// The revision a follower says it has (`If-None-Match`), if one.
fn sent_revision(headers: &HeaderMap) -> Option<String> {
    headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|tag| {
            tag.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_owned()
        })
        .filter(|tag| !tag.is_empty() && tag != "*")
}

/// A follower's report of how an apply ended (its key, as for `GET /conf`).
#[utoipa::path(post, path = "/conf/report", tag = "followers", request_body = pryv_protocol::ApplyReport,
    responses((status = 204, description = "kept; shown in `GET /admin/status`, awaited by rollouts"),
        (status = 401, body = pryv_protocol::ErrorBody)))]
pub async fn report(
    State(state): State<AppState>,
    parts: Parts,
    ApiJson(report): ApiJson<pryv_protocol::ApplyReport>,
) -> Result<StatusCode, Error> {
    let key = credential(&parts).ok_or(Error::InvalidKey)?;
    let (id, follower) = state.followers.find(&key).ok_or(Error::InvalidKey)?;
    tracing::info!(url = %follower.url, outcome = ?report.outcome, revision = report.revision.as_deref().unwrap_or("-"), "apply report");
    state
        .admin
        .take_report(id, follower.url.clone(), report)
        .await?;
    Ok(StatusCode::NO_CONTENT)
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
