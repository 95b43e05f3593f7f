//! config-follower: fetches this machine's role tree from the leader, writes it safely under the data folder,
//! restarts only the compose services whose files changed, and watches `*/conf/` for operators' edits.
//!
//! `main.rs` only parses the command line; [`run`] does the rest so tests drive it in-process.

pub mod apply;
pub mod cli;
pub mod client;
pub mod compose;
pub mod config;
pub mod error;
pub mod follower;
pub mod paths;
pub mod restart;
pub mod routes;
pub mod status;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::config::{Config, Overrides};
pub use crate::error::Error;
pub use crate::follower::Follower;
pub use crate::routes::app;

/// Longest wait for in-flight requests after shutdown is requested.
const DRAIN: Duration = Duration::from_secs(10);

/// Runs the follower until `shutdown` is cancelled.
///
/// With a tree from an earlier run on disk, it listens at once and converges in the background (a machine
/// must boot while the leader is down); on a fresh machine it first waits for a successful fetch.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let follower = Arc::new(Follower::new(config, &shutdown)?);
    let data = follower.config.data_folder.clone();
    std::fs::create_dir_all(&data).map_err(|source| Error::Io {
        path: data.clone(),
        source,
    })?;
    for (service, source) in follower.project().single_file_mounts(&data) {
        tracing::warn!(
            service,
            source = %source.display(),
            "mounts a single file: the container keeps the old file after an update; mount its folder instead"
        );
    }

    if apply::has_previous_tree(&data) {
        let background = follower.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if background.sync_until_success(true, &stop).await {
                tracing::info!("converged with the leader");
            }
        });
    } else {
        tracing::info!(leader = %follower.config.leader_url, "no configuration on disk yet; fetching it before listening");
        if !follower.sync_until_success(false, &shutdown).await {
            return Ok(());
        }
    }

    if follower.config.watch {
        watch::spawn(follower.clone(), shutdown.clone())?;
    }
    if let Some(interval) = follower.config.poll_interval {
        let poller = follower.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(err) = poller.sync(&pryv_protocol::NotifyRequest::default(), true).await {
                            tracing::warn!(error = %err, "periodic fetch failed");
                        }
                    }
                }
            }
        });
    }

    let listen = follower.config.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Io {
            path: format!("listen address {listen}").into(),
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|err| Error::Internal(err.to_string()))?;
    tracing::info!(%addr, leader = %follower.config.leader_url, "listening");
    pryv_daemon::notify_ready();
    let server = axum::serve(listener, app(follower))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let server = tokio::spawn(async move { server.await });
    shutdown.cancelled().await;
    match tokio::time::timeout(DRAIN, server).await {
        Ok(Ok(result)) => result.map_err(|err| Error::Internal(err.to_string()))?,
        Ok(Err(join)) => return Err(Error::Internal(join.to_string())),
        Err(_) => tracing::warn!("in-flight requests did not finish in time; stopping anyway"),
    }
    pryv_daemon::notify_stopping();
    tracing::info!("stopped");
    Ok(())
}
