//! The HTTP surface. `conf` serves followers; `auth`, `users`, `settings` and `fleet` are the admin API;
//! `openapi` documents all of it. This module holds what they share: the state, the extractors (JSON body,
//! caller, client address) and the request log (role and path only: never a key, never a query string).

mod conf;
mod console;
mod cors;
mod events;
mod login;
mod notify;
mod openapi;
mod platform_users;
mod rollouts;
mod scrape;
mod settings;
mod users;
mod zones;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::Response;
use pryv_protocol::{AUTH_HEADER, request_credential};
use serde::Deserialize;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::admin::Admin;
use crate::admin::identity::Caller;
use crate::error::Error;
use crate::follower_keys::FollowerIndex;
use crate::store::TreeStore;

pub use openapi::ApiDoc;

/// Longest time a request may take (rendering, hashing, database).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Requests handled at once (a fleet of thousands fetching together queues briefly, nothing is refused).
pub const MAX_CONCURRENT_REQUESTS: usize = 4096;

/// Largest request body accepted (settings documents are a few kilobytes).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Everything the handlers share: one `Arc`, since axum clones the state for every request (one atomic
/// increment, not one per field).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub store: TreeStore,
    pub followers: Arc<FollowerIndex>,
    pub admin: Arc<Admin>,
    /// Fires at shutdown: endless answers (the console's event streams) end then, not at the drain's limit.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// etcd mode: this replica's side of the shared store (`None` with SQLite).
    pub replica: Option<Arc<crate::etcd::Replica>>,
}

impl Shared {
    /// `Err(Isolated)` while this replica cannot reach its etcd store (never with SQLite).
    pub fn ensure_reachable(&self) -> Result<(), Error> {
        match &self.replica {
            Some(replica) => replica.ensure_reachable(),
            None => Ok(()),
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl AppState {
    /// What a rollout's driving task needs.
    pub fn drive(&self) -> crate::admin::rollouts::Drive {
        crate::admin::rollouts::Drive {
            rollouts: self.admin.rollouts.clone(),
            fleet: self.admin.fleet.clone(),
            store: self.store.clone(),
            followers: self.followers.clone(),
            term: self.replica.as_ref().and_then(|r| r.election.term()),
        }
    }
}

/// The leader's router.
pub fn app(state: AppState) -> Router {
    // Every route but the notification fan-out (bounded by its own per-follower timeout) has a deadline.
    let deadline = || TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT);
    let public = Router::new()
        .merge(conf::routes())
        .merge(console::routes())
        .merge(openapi::routes())
        .layer(deadline());
    // The admin API, called by the admin web app from another origin: CORS for the allowed origins only.
    let admin = Router::new()
        .merge(
            Router::new()
                .merge(login::routes())
                .merge(users::routes())
                .merge(settings::routes())
                .merge(zones::routes())
                .layer(deadline()),
        )
        .merge(notify::routes())
        .merge(events::routes())
        .merge(rollouts::routes())
        .merge(platform_users::routes())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_changes_when_isolated,
        ))
        .layer(cors::layer(&state));
    let refresh_state = state.clone();
    let metrics = pryv_daemon::metrics::route(
        state.admin.metrics_token.clone(),
        std::sync::Arc::new(move || scrape::refresh(&refresh_state)),
    );
    // Beyond this many requests in progress, new ones wait for a slot instead of exhausting memory. Not for
    // `GET /conf`: it answers from ready bytes, and followers long-polling it hold a request each for up to
    // 25 s (the connection cap bounds them).
    let limited = Router::new()
        .merge(admin)
        .merge(metrics)
        .layer(GlobalConcurrencyLimitLayer::new(MAX_CONCURRENT_REQUESTS));
    Router::new()
        .merge(public)
        .merge(limited)
        .fallback(|| async { Error::NotFound("no such resource".into()) })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(pryv_daemon::json_errors))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// An admin request that changes anything, on a replica cut off from its etcd store: 503 `leader-isolated`
/// (it could not record the change, nor vouch for what it would change). Reads still answer.
async fn refuse_changes_when_isolated(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let reads = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if !reads && let Err(err) = state.ensure_reachable() {
        return err.to_response();
    }
    next.run(request).await
}

/// Role served by a request, left in the response for the request log.
#[derive(Clone)]
struct ServedRole(String);

async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    // Cheap clones (shared bytes): the hot path allocates nothing here.
    let uri = request.uri().clone();
    // The route pattern, never the path itself: a label must stay bounded.
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", |m| m.as_str());
    count_request(route, response.status());
    let role = response
        .extensions()
        .get::<ServedRole>()
        .map_or("-", |r| r.0.as_str());
    let status = response.status().as_u16();
    let micros = started.elapsed().as_micros() as u64;
    let path = uri.path();
    match response.extensions().get::<crate::error::Failure>() {
        // A peer that failed (register, core): the peer's fault, not the leader's.
        Some(failure) if status == 502 => {
            tracing::warn!(%method, path, status, role, micros, error = %failure.0, "request failed")
        }
        Some(failure) => {
            tracing::error!(%method, path, status, role, micros, error = %failure.0, "request failed")
        }
        None => tracing::info!(%method, path, status, role, micros, "request"),
    }
    response
}

thread_local! {
    /// This worker's handles of the request counter, by status and route: a request looks its counter up
    /// here without allocating or touching the shared registry.
    static REQUEST_COUNTERS: std::cell::RefCell<HashMap<u16, HashMap<Box<str>, metrics::Counter>>> =
        std::cell::RefCell::new(HashMap::new());
}

fn count_request(route: &str, status: StatusCode) {
    REQUEST_COUNTERS.with(|counters| {
        let mut counters = counters.borrow_mut();
        let by_route = counters.entry(status.as_u16()).or_default();
        if let Some(counter) = by_route.get(route) {
            counter.increment(1);
            return;
        }
        let counter = metrics::counter!(
            crate::metrics::HTTP_REQUESTS,
            "route" => route.to_owned(),
            "status" => status.as_str().to_owned()
        );
        counter.increment(1);
        by_route.insert(route.into(), counter);
    });
}

#[derive(Deserialize)]
struct AuthQuery {
    auth: Option<String>,
}

/// The credential of a request: the `Authorization` header (raw or `Bearer`), else the `auth` query parameter.
fn credential(parts: &Parts) -> Option<String> {
    let authorization = parts.headers.get(AUTH_HEADER).and_then(|v| v.to_str().ok());
    let query = Query::<AuthQuery>::try_from_uri(&parts.uri)
        .ok()
        .and_then(|q| q.0.auth);
    request_credential(authorization, query.as_deref()).map(str::to_owned)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        state.admin.authenticate(credential(parts).as_deref()).await
    }
}

/// The client's address, for the audit log and the login throttle ("unknown" in in-process tests).
pub struct Remote(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Remote {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Remote(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or_else(|| "unknown".to_owned(), |info| info.0.ip().to_string()),
        ))
    }
}

/// A JSON body whose rejections (bad JSON, wrong shape, too large) are answered in our error format.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_error(&rejection)),
        }
    }
}

fn json_error(rejection: &JsonRejection) -> Error {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::PayloadTooLarge(BODY_LIMIT)
    } else {
        Error::BadRequest(rejection.body_text())
    }
}
