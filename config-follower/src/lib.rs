//! config-follower: fetches this machine's role tree from the leader, writes it safely under the data folder,
//! restarts only the compose services whose files changed, and watches `*/conf/` for operators' edits.
//!
//! `main.rs` only parses the command line; [`run`] does the rest so tests drive it in-process.
//!
//! # The async rule
//! No file system call runs on an async worker: the apply, the revert's restore, the restart queue's saves,
//! reports and compose reads run in `spawn_blocking`; the bookkeeping records go through [`StateDir::call`]
//! (their async door); the `*/conf/` watcher runs on a thread of its own; start-up reads the disk in one
//! blocking step (`prepare`) before anything is served. `clippy.toml` makes `std::fs` calls and the
//! follower's own blocking functions errors; a function or module whose code only runs on blocking threads
//! says so with a reasoned allow.
//!
//! [`StateDir::call`]: crate::state_dir::StateDir::call

pub mod apply;
pub mod cli;
pub mod client;
pub mod compose;
pub mod conf_watch;
pub mod config;
pub mod error;
pub mod follower;
pub mod health;
pub mod metrics;
pub mod paths;
pub mod report;
pub mod restart;
pub mod routes;
pub mod state_dir;
pub mod status;

use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::config::{Config, Overrides};
pub use crate::error::Error;
pub use crate::follower::{Follower, Restart, Until};
pub use crate::routes::app;

/// Runs the follower on `listener` (bound by the caller) until `shutdown` is cancelled.
///
/// With a tree from an earlier run on disk, it serves at once and converges in the background (a machine
/// must boot while the leader is down); on a fresh machine it first waits for the leader's answer.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let data = config.data_folder.clone();
    let stop = shutdown.clone();
    let (follower, options, watching) =
        tokio::task::spawn_blocking(move || prepare(config, &stop)).await??;
    follower.resume_gate().await;
    if !first_convergence(&follower, &data).await {
        return Ok(());
    }

    follower.watch.set(watching, false, &shutdown).await?;
    if let Some(interval) = follower.config.poll_interval {
        spawn_poll(follower.clone(), interval, shutdown.clone());
    }
    if follower.config.long_poll {
        spawn_long_poll(follower.clone(), shutdown.clone());
    }

    let addr = listener.local_addr().map_err(Error::Listen)?;
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(%addr, scheme, leader = %follower.config.leader_url, "listening");
    pryv_daemon::notify_ready();
    let served = pryv_daemon::serve(listener, app(follower.clone()), options, shutdown).await;
    // A restart command in progress finishes (within the drain time); what is still queued stays persisted.
    follower.restarter.finish(pryv_daemon::DRAIN).await;
    served.map_err(Error::Listen)?;
    pryv_daemon::notify_stopping();
    tracing::info!("stopped");
    Ok(())
}

/// The start-up work that reads the disk, on a blocking thread before anything is served: the data folder,
/// what a killed run left, the TLS files, the follower's records, the operator's watcher choice (which wins
/// over the configuration file).
#[allow(clippy::disallowed_methods)]
fn prepare(
    config: Config,
    shutdown: &CancellationToken,
) -> Result<(Arc<Follower>, pryv_daemon::ServeOptions, bool), Error> {
    let data = config.data_folder.clone();
    std::fs::create_dir_all(&data).map_err(|source| Error::Io {
        action: "create",
        path: data.clone(),
        source,
    })?;
    remove_stale_temp_files(&data);
    let tls = config
        .tls
        .as_ref()
        .map(|(cert, key)| pryv_daemon::server_tls(cert, key))
        .transpose()
        .map_err(Error::Tls)?;
    let follower = Arc::new(Follower::new(config, shutdown)?);
    for (service, source) in crate::compose::machine_project(&data).single_file_mounts(&data) {
        tracing::warn!(
            service,
            source = %source.display(),
            "mounts a single file: the container keeps the old file after an update; mount its folder instead"
        );
    }
    let watching = follower.watch.persisted().unwrap_or(follower.config.watch);
    let options = pryv_daemon::ServeOptions {
        tls,
        ..pryv_daemon::ServeOptions::default()
    };
    Ok((follower, options, watching))
}

/// With a tree on disk: converge in the background (true at once). On a fresh machine: wait for the leader's
/// first answer (false if shutdown came first), then retry in the background if the tree is incomplete.
async fn first_convergence(follower: &Arc<Follower>, data: &Path) -> bool {
    if apply::has_previous_tree(data) {
        let background = follower.clone();
        tokio::spawn(async move {
            if background
                .sync_until(Restart::Changed, Until::Applied)
                .await
            {
                tracing::info!("converged with the leader");
            }
        });
        return true;
    }
    tracing::info!(leader = %follower.config.leader_url, "no configuration on disk yet; fetching it before listening");
    if !follower.sync_until(Restart::Nothing, Until::Fetched).await {
        return false;
    }
    if follower.status.snapshot().last_apply_error.is_some() {
        follower.retry_in_background();
    }
    true
}

fn spawn_poll(follower: Arc<Follower>, interval: std::time::Duration, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    let request = pryv_protocol::NotifyRequest::default();
                    if let Err(err) = follower.sync(&request, Restart::Changed).await {
                        tracing::warn!(error = %err, "periodic fetch failed");
                    }
                }
            }
        }
    });
}

/// Waits on the leader (`GET /conf?wait=`) and syncs as soon as it has something new for this machine: how
/// a follower the leader cannot reach still converges within a second of a change.
fn spawn_long_poll(follower: Arc<Follower>, stop: CancellationToken) {
    const WAIT: std::time::Duration = std::time::Duration::from_secs(20);
    tokio::spawn(async move {
        let mut delay = std::time::Duration::from_millis(500);
        loop {
            let seen = follower.last_seen().unwrap_or_default();
            let waited = tokio::select! {
                _ = stop.cancelled() => break,
                waited = follower.client().wait_for_change(&seen, WAIT) => waited,
            };
            match waited {
                Ok(client::Fetched::NotModified) => {}
                Ok(client::Fetched::Tree(..)) => {
                    delay = std::time::Duration::from_millis(500);
                    let request = pryv_protocol::NotifyRequest::default();
                    if let Err(err) = follower.sync(&request, Restart::Changed).await {
                        tracing::warn!(error = %err, "sync after a long-poll answer failed");
                        follower.retry_in_background();
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "long-poll failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(std::time::Duration::from_secs(30));
                }
            }
        }
    });
}

/// Removes what a killed run left: our temporary files in the folders the follower writes (the root, the
/// bookkeeping folder, every `*/conf/**` and `*/templates/**`) and abandoned validation stages. Never walks
/// the services' data folders, which can be large.
// Start-up only, before anything is served.
#[allow(clippy::disallowed_methods)]
fn remove_stale_temp_files(data: &Path) {
    let mut folders = vec![data.to_owned(), data.join(apply::STATE_DIR)];
    if let Ok(services) = std::fs::read_dir(data) {
        for service in services.flatten() {
            for zone in ["conf", "templates"] {
                collect_folders(&service.path().join(zone), &mut folders, 0);
            }
        }
    }
    for folder in folders {
        match pryv_fs::remove_stale_temp_files(&folder) {
            Ok(removed) => {
                for path in removed {
                    tracing::info!(path = %path.display(), "removed a temporary file left by an interrupted write");
                }
            }
            Err(err) => {
                tracing::warn!(folder = %folder.display(), error = %err, "cannot clean temporary files")
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(data.join(apply::STATE_DIR)) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(apply::STAGE_PREFIX)
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// `dir` and its sub-folders (not through symlinks), to a bounded depth.
// Start-up only, before anything is served.
#[allow(clippy::disallowed_methods)]
fn collect_folders(dir: &Path, out: &mut Vec<std::path::PathBuf>, depth: usize) {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() || depth > 16 {
        return;
    }
    out.push(dir.to_owned());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            collect_folders(&entry.path(), out, depth + 1);
        }
    }
}
