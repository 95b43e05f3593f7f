//! config-leader: renders each role's template tree with the platform variables and serves it to the
//! authenticated follower of that role.
//!
//! `main.rs` only parses the command line and maps errors to exit codes; everything else is here so tests
//! drive it in-process: [`app`] builds the router, [`run`] serves on a listener until a shutdown token fires.
//!
//! # The async rule
//! No file system, SQLite or argon2 call runs on an async worker: renders run in `TreeStore`'s blocking
//! task, settings work (save, rollback, migrations, preview) in `Settings::off_runtime`, report ingest and
//! password checks in `spawn_blocking`, every other database statement through `Db::call` (the database's
//! async door). `clippy.toml` makes these calls errors; a module whose code only runs on blocking threads (or
//! at start-up, or in a CLI command) says so with a reasoned allow.

pub mod admin;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod etcd;
pub mod follower_keys;
pub mod metrics;
pub mod render_roles;
pub mod routes;
pub mod secret;
pub mod source_watch;
pub mod store;
pub mod tooling;
pub mod tree;
pub mod variant;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::config::{Config, Overrides};
pub use crate::error::Error;
pub use crate::routes::{AppState, app};

/// Everything a running leader needs, built from a validated configuration.
pub struct Leader {
    pub state: AppState,
    tls: Option<Arc<rustls::ServerConfig>>,
    max_connections: usize,
    _watch: source_watch::ChangeWatch,
}

impl Leader {
    /// [`Leader::new`], in etcd mode (`store.etcd`) once connected to the store: the shared secrets taken
    /// into the configuration, this replica's copy of the settings written, the store followed.
    pub async fn start(mut config: Config, shutdown: &CancellationToken) -> Result<Self, Error> {
        if config.etcd.is_none() {
            return Self::new(&config, shutdown);
        }
        let replica = etcd::Replica::start(&mut config).await?;
        let leader = Self::build(&config, Some(replica.clone()), shutdown)?;
        let taken = etcd::Taken {
            settings: leader.state.admin.settings.clone(),
            fleet: leader.state.admin.fleet.clone(),
            followers: leader.state.followers.clone(),
            rollouts: leader.state.admin.rollouts.clone(),
            store: leader.state.store.clone(),
        };
        replica.spawn(taken, shutdown.clone());
        admin::rollouts::drive_while_elected(leader.state.clone(), shutdown.clone());
        Ok(leader)
    }

    /// Loads the TLS material, starts the change watcher and warns about what an operator should know
    /// (SQLite mode; etcd mode starts with [`Leader::start`]).
    pub fn new(config: &Config, shutdown: &CancellationToken) -> Result<Self, Error> {
        if config.etcd.is_some() {
            return Err(Error::Internal(
                "store.etcd: start the leader with Leader::start".into(),
            ));
        }
        Self::build(config, None, shutdown)
    }

    fn build(
        config: &Config,
        replica: Option<Arc<etcd::Replica>>,
        shutdown: &CancellationToken,
    ) -> Result<Self, Error> {
        for key in &config.unknown_keys {
            tracing::warn!(key, file = %config.path.display(), "unknown configuration key ignored");
        }
        for warning in commands::warnings(config) {
            tracing::warn!("{warning}");
        }
        remove_stale_temp_files(config);
        let tls = config
            .tls
            .as_ref()
            .map(|files| pryv_daemon::server_tls(&files.cert_file, &files.key_file))
            .transpose()
            .map_err(Error::Tls)?;
        let roles = tree::roles(&config.templates_path)?;
        for follower in &config.followers {
            if !roles.contains(&follower.role) {
                tracing::warn!(url = %follower.url, role = %follower.role, "follower's role has no templates folder; it will get 404");
            }
        }
        let platform_in_force = config.platform_in_force();
        // A follower in a zone platform.yml lacks gets no tree (its render fails): say so at once.
        if let Ok(platform) = render_roles::load(&platform_in_force) {
            for problem in render_roles::zone_problems(&platform, &config.followers) {
                tracing::error!("{problem}");
            }
        }
        let store = store::TreeStore::new(
            config.templates_path.clone(),
            tree::LinkPolicy::new(&config.templates_path, &config.allow_links_to),
            platform_in_force.clone(),
            config.internals.clone(),
        );
        let watch =
            source_watch::start(&store, &config.templates_path, &platform_in_force, shutdown);
        let admin = Arc::new(admin::Admin::new(config, &store, replica.as_deref())?);
        if replica.is_none() {
            // One leader: the one that drives rollouts, never cut off from its store.
            ::metrics::gauge!(crate::metrics::ELECTED).set(1.0);
            ::metrics::gauge!(crate::metrics::STORE_ISOLATED).set(0.0);
        }
        if let Some(repository) = &admin.repository {
            repository.spawn(&store, shutdown.clone());
        }
        let state = AppState::new(routes::Shared {
            store,
            followers: Arc::new(follower_keys::FollowerIndex::new(&config.followers)),
            admin,
            shutdown: shutdown.clone(),
            replica,
        });
        restore_reports(&state);
        Ok(Self {
            state,
            tls,
            max_connections: config.max_connections,
            _watch: watch,
        })
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let addr = listener.local_addr().map_err(Error::Listen)?;
        tracing::info!(%addr, scheme, followers = self.state.followers.len(), "listening");
        pryv_daemon::notify_ready();
        // With replicas, the elected one resumes them (`drive_while_elected`).
        if !self.state.admin.rollouts.is_shared() {
            for id in self.state.admin.rollouts.running_ids() {
                tracing::info!(id, "resuming the rollout a previous run left running");
                tokio::spawn(self.state.drive().run(id, None));
            }
        }
        let options = pryv_daemon::ServeOptions {
            tls: self.tls.clone(),
            max_connections: self.max_connections,
            ..pryv_daemon::ServeOptions::default()
        };
        pryv_daemon::serve(listener, app(self.state.clone()), options, shutdown)
            .await
            .map_err(Error::Listen)?;
        pryv_daemon::notify_stopping();
        tracing::info!("stopped");
        Ok(())
    }
}

/// The followers' last apply reports, kept in the database across restarts.
#[allow(clippy::disallowed_methods)] // start-up, before anything is served
fn restore_reports(state: &AppState) {
    let read = state.admin.db.blocking().reports();
    let reports = match read {
        Ok(reports) => reports,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the followers' last reports");
            return;
        }
    };
    for (url, body) in reports {
        let Some((id, _)) = state.followers.with_ids().find(|(_, f)| f.url == url) else {
            continue;
        };
        if let Ok(report) = serde_json::from_str(&body) {
            state.admin.fleet.restore_report(id, report);
        }
    }
}

/// Removes the temporary files a killed write left beside the files the leader writes (`platform.yml` holds
/// the SMTP password; `config-leader.json` the keys).
fn remove_stale_temp_files(config: &Config) {
    let folders = [config.platform_config.parent(), config.path.parent()];
    for folder in folders.into_iter().flatten() {
        let folder = if folder.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            folder
        };
        match pryv_fs::remove_stale_temp_files(folder) {
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
}

/// Builds a leader from `config` and serves on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    Leader::start(config, &shutdown)
        .await?
        .serve(listener, shutdown)
        .await
}
