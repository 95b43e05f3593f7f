//! HTTP surface: `POST /notify`, `GET /status` and `PUT /watch` (authenticated by this follower's key: the
//! status carries log tails of unhealthy containers), `GET /health` and `GET /watch` (open), `GET /metrics`
//! (open, or behind `metrics.token`).
//! The key may come as the `Authorization` header or the `auth` query parameter; neither is ever logged.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use pryv_protocol::{AUTH_HEADER, NotifyRequest, NotifyResponse, request_credential};
use serde::Deserialize;

use crate::error::Error;
use crate::follower::{Follower, Restart};
use crate::status::Status;

/// The follower's router.
pub fn app(follower: Arc<Follower>) -> Router {
    crate::metrics::describe();
    let scraped = follower.status.clone();
    let metrics = pryv_daemon::metrics::route(
        follower.config.metrics_token.clone(),
        Arc::new(move || crate::metrics::refresh(&scraped)),
    );
    Router::new()
        .merge(metrics)
        .route("/notify", post(notify))
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/status", get(status))
        .route("/watch", get(watch_state).put(set_watch))
        .fallback(|| async { Error::NotFound })
        .layer(axum::middleware::from_fn(pryv_daemon::json_errors))
        .with_state(follower)
}

#[derive(Deserialize)]
struct AuthQuery {
    auth: Option<String>,
}

async fn notify(
    State(follower): State<Arc<Follower>>,
    Query(query): Query<AuthQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<NotifyResponse>, Error> {
    authorize(&follower, &query, &headers)?;
    let body = body.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(_) => Error::PayloadTooLarge,
        other => Error::BadRequest(other.body_text()),
    })?;
    let request: NotifyRequest = if body.iter().all(u8::is_ascii_whitespace) {
        NotifyRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|err| {
            Error::BadRequest(format!(
                "body must be {{\"services\": [...], \"force\": bool}}: {err}"
            ))
        })?
    };
    tracing::info!(services = ?request.services, force = request.force, "notification received");
    follower.client().require(request.store_revision);
    follower.client().want(request.revision.as_deref());
    // The cycle runs in its own task: a caller that hangs up (a timeout, a cancelled admin notify) must not
    // stop it between the writes and the restarts.
    let worker = follower.clone();
    let cycle = tokio::spawn(async move {
        let outcome = worker.sync(&request, Restart::Changed).await;
        // The notification's revision held for its own sync only (a retry takes what a leader has).
        worker.client().want(None);
        if outcome.is_err() {
            worker.retry_in_background();
        }
        outcome
    });
    cycle.await?.map(Json)
}

#[derive(Deserialize, serde::Serialize)]
struct WatchBody {
    enabled: bool,
}

fn authorize(follower: &Follower, query: &AuthQuery, headers: &HeaderMap) -> Result<(), Error> {
    let authorization = headers.get(AUTH_HEADER).and_then(|v| v.to_str().ok());
    let key = request_credential(authorization, query.auth.as_deref()).unwrap_or_default();
    if follower.config.key.matches(key) {
        Ok(())
    } else {
        Err(Error::InvalidKey)
    }
}

/// Whether the `*/conf/` watcher runs.
async fn watch_state(State(follower): State<Arc<Follower>>) -> Json<WatchBody> {
    Json(WatchBody {
        enabled: follower.watch.is_on(),
    })
}

/// Turns the `*/conf/` watcher on or off (`watch-config --no-hup` / `--stop-watch`); kept across restarts.
async fn set_watch(
    State(follower): State<Arc<Follower>>,
    Query(query): Query<AuthQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WatchBody>, Error> {
    authorize(&follower, &query, &headers)?;
    let body = body.map_err(|_| Error::PayloadTooLarge)?;
    let wanted: WatchBody = serde_json::from_slice(&body).map_err(|err| {
        Error::BadRequest(format!("body must be {{\"enabled\": true|false}}: {err}"))
    })?;
    follower
        .watch
        .set(wanted.enabled, true, &follower.shutdown)
        .await?;
    tracing::info!(enabled = wanted.enabled, "watcher switched by the operator");
    Ok(Json(WatchBody {
        enabled: follower.watch.is_on(),
    }))
}

async fn status(
    State(follower): State<Arc<Follower>>,
    Query(query): Query<AuthQuery>,
    headers: HeaderMap,
) -> Result<Json<Status>, Error> {
    authorize(&follower, &query, &headers)?;
    let mut status = follower.status.snapshot();
    // With several leaders (`leader.urls`), the one this follower talks to now.
    follower
        .client()
        .current_leader()
        .clone_into(&mut status.leader_url);
    Ok(Json(status))
}
