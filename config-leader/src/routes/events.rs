//! `GET /admin/events`: server-sent events for the console's live views. An event `fleet` (the body of
//! `GET /admin/status`) and an event `rollouts` (the body of `GET /admin/rollouts`) at the start and after
//! every change of the trees, of a follower's report or of a rollout (changes within 200 ms are sent once);
//! a comment every 15 s keeps proxies from closing an idle stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;

use super::AppState;
use crate::admin::identity::{Caller, Permission};
use crate::error::Error;

/// Changes closer together than this are sent as one.
const COALESCE: Duration = Duration::from_millis(200);
/// Without a change, the state is sent again this often (a lost wake-up never leaves a view stale for long).
const REFRESH: Duration = Duration::from_secs(30);

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/events", get(events))
}

struct Watch {
    state: AppState,
    trees: tokio::sync::watch::Receiver<u64>,
    reports: tokio::sync::watch::Receiver<u64>,
    rollouts: tokio::sync::watch::Receiver<u64>,
    first: bool,
    queued: Vec<Event>,
}

/// Live fleet status and rollouts (settings:read), as `text/event-stream`.
#[utoipa::path(get, path = "/admin/events", tag = "fleet",
    responses((status = 200, description = "`text/event-stream`: events `fleet` (the body of GET /admin/status) and `rollouts` (of GET /admin/rollouts)"),
        (status = 401, body = pryv_protocol::ErrorBody), (status = 403, body = pryv_protocol::ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Error> {
    caller.require(Permission::SettingsRead)?;
    let watch = Watch {
        trees: state.store.changes(),
        reports: state.admin.fleet.next_report(),
        rollouts: state.admin.rollouts.changes(),
        state,
        first: true,
        queued: Vec::new(),
    };
    let stream = futures::stream::unfold(watch, |mut watch| async move {
        if let Some(event) = watch.queued.pop() {
            return Some((Ok(event), watch));
        }
        if !watch.first {
            tokio::select! {
                _ = watch.trees.changed() => {}
                _ = watch.reports.changed() => {}
                _ = watch.rollouts.changed() => {}
                () = tokio::time::sleep(REFRESH) => {}
                // The stream ends with the leader: a console reconnects to whichever leader answers next.
                () = watch.state.shutdown.cancelled() => return None,
            }
            tokio::time::sleep(COALESCE).await;
        }
        watch.first = false;
        watch.trees.borrow_and_update();
        watch.reports.borrow_and_update();
        watch.rollouts.borrow_and_update();
        let fleet = super::notify::fleet_view(&watch.state).await;
        let rollouts = watch
            .state
            .admin
            .rollouts
            .list(100)
            .await
            .unwrap_or_default();
        let rollouts = Event::default()
            .event("rollouts")
            .json_data(serde_json::json!({ "rollouts": rollouts }))
            .unwrap_or_default();
        watch.queued.push(rollouts);
        let fleet = Event::default()
            .event("fleet")
            .json_data(&fleet)
            .unwrap_or_default();
        Some((Ok(fleet), watch))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
