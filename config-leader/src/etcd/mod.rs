//! etcd mode (`store.etcd` in config-leader.json): the leader runs as several replicas sharing one etcd
//! cluster. etcd holds the settings and their history (`history`) and the platform's secrets (`secrets`);
//! each replica keeps a copy of the settings in force in its database folder, renders and serves from it, and
//! keeps it current by following the history with an etcd watch (`follow`). A replica that loses its quorum
//! (`liveness`) refuses changes and serves only what followers already have.
//!
//! The admin users and revoked tokens are shared too (`users`), the emergency account excepted, and the
//! followers' reports (`reports`), and the rollouts with the held flag (`rollouts`), driven by the one
//! replica the `election` chose, the audit log (`audit`) and the templates in force (`templates`).

pub mod audit;
pub mod client;
pub mod election;
pub mod history;
pub mod import;
pub mod liveness;
pub mod migrate;
pub mod reports;
pub mod rollouts;
pub mod secrets;
pub mod templates;
pub mod users;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use self::client::{Etcd, WatchEvent};
use self::history::SharedHistory;
use self::liveness::Liveness;
use crate::admin::settings::Settings;
use crate::config::Config;
use crate::error::Error;

/// How long a starting replica waits for a quorum before it gives up (systemd or compose starts it again).
const START_WAIT: Duration = Duration::from_secs(15);
/// How often a watch is checked against the store's newest change.
const WATCH_CHECK: Duration = Duration::from_secs(5);
/// Pause before watching again after a watch broke.
const WATCH_RETRY: Duration = Duration::from_millis(500);

/// This replica's side of the shared store.
pub struct Replica {
    pub etcd: Arc<Etcd>,
    pub liveness: Arc<Liveness>,
    pub history: Arc<SharedHistory>,
    pub users: Arc<users::SharedUsers>,
    pub reports: Arc<reports::SharedReports>,
    pub rollouts: Arc<rollouts::SharedRollouts>,
    /// What the store held of the rollouts at start (taken once by the rollouts' constructor).
    pub rollouts_at_start: std::sync::Mutex<Option<crate::admin::rollouts::SharedStart>>,
    /// The election of the replica that drives rollouts.
    pub election: Arc<election::Election>,
    pub audit: Arc<audit::SharedAudit>,
    pub templates: Arc<templates::SharedTemplates>,
    /// This replica's copy of the templates in force (what it renders).
    pub templates_copy: std::path::PathBuf,
    /// The settings revision this replica's copy held at start.
    pub start_revision: i64,
    /// Whether its watch of the store is open now (what `/admin/status` says).
    pub watching: std::sync::atomic::AtomicBool,
}

impl Replica {
    /// Connects to the store, takes the shared secrets into `config`, records `platform.yml` as revision 1 at
    /// the platform's very first start, and writes this replica's copy of the settings in force.
    pub async fn start(config: &mut Config) -> Result<Arc<Self>, Error> {
        let Some(store) = config.etcd.clone() else {
            return Err(Error::Internal("etcd mode without store.etcd".into()));
        };
        let etcd = Arc::new(connect(&store)?);
        wait_for_quorum(&etcd).await?;
        secrets::resolve(&etcd, config).await?;
        let history = Arc::new(SharedHistory::new(etcd.clone()));
        let latest = match history.latest().await? {
            Some(latest) => latest,
            None => seed(&history, &config.platform_config).await?,
        };
        write_copy(&config.platform_in_force(), latest.content.clone()).await?;
        let shared_templates = Arc::new(templates::SharedTemplates::new(etcd.clone()));
        let templates_copy = templates::copy_folder(&config.database_path);
        take_templates(
            &shared_templates,
            &config.templates_path,
            &templates_copy,
            None,
        )
        .await?;
        // Every render of this replica reads the copy: the store's templates, not the local folder.
        config.templates_path = templates_copy.clone();
        tracing::info!(
            endpoints = ?store.endpoints,
            prefix = %store.prefix,
            revision = latest.revision,
            "etcd store: serving the shared settings"
        );
        let users = Arc::new(users::SharedUsers::new(etcd.clone()));
        let reports = Arc::new(reports::SharedReports::new(etcd.clone()));
        let rollouts = Arc::new(rollouts::SharedRollouts::new(etcd.clone()));
        let rollouts_at_start = rollouts_now(&rollouts).await?;
        let election = Arc::new(election::Election::new(etcd.clone(), store.lease));
        let audit = Arc::new(audit::SharedAudit::new(
            etcd.clone(),
            store.keep_audit_entries,
        ));
        let liveness = Arc::new(Liveness::new(store.isolated_after));
        liveness.confirm();
        Ok(Arc::new(Self {
            etcd,
            liveness,
            history,
            users,
            reports,
            rollouts,
            rollouts_at_start: std::sync::Mutex::new(Some(rollouts_at_start)),
            election,
            audit,
            templates: shared_templates,
            templates_copy,
            start_revision: latest.revision,
            watching: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// The checks, the watch and the election, until shutdown.
    pub fn spawn(self: &Arc<Self>, taken: Taken, shutdown: CancellationToken) {
        self.liveness.spawn(self.etcd.clone(), shutdown.clone());
        self.election.spawn(shutdown.clone());
        self.audit
            .spawn_pruning(self.election.clone(), shutdown.clone());
        tokio::spawn(follow(self.clone(), taken, shutdown));
    }

    /// `Err(Isolated)` while this replica cannot vouch for the store.
    pub fn ensure_reachable(&self) -> Result<(), Error> {
        match self.liveness.isolated_for() {
            Some(seconds) => Err(Error::Isolated(seconds)),
            None => Ok(()),
        }
    }
}

/// A client of the store's members (TLS as configured).
pub fn connect(store: &crate::config::EtcdStore) -> Result<Etcd, Error> {
    let identity = store
        .identity
        .as_ref()
        .map(|(cert, key)| (cert.as_path(), key.as_path()));
    let tls = pryv_daemon::client_tls_with_identity(store.ca_file.as_deref(), identity)
        .map_err(Error::Tls)?;
    Etcd::new(store.endpoints.clone(), store.prefix.clone(), tls)
}

/// Makes this replica's copy of the templates the store's tree in force (written only when it differs); at
/// the platform's first start, `local` (this replica's templates folder) becomes that tree. With `store`, the
/// swap waits for renders in progress and marks the trees stale.
async fn take_templates(
    shared: &templates::SharedTemplates,
    local: &Path,
    copy: &Path,
    store: Option<&crate::store::TreeStore>,
) -> Result<(), Error> {
    let hash = match shared.current().await? {
        Some(hash) => hash,
        None => {
            let folder = local.to_owned();
            let files =
                tokio::task::spawn_blocking(move || templates::read_folder(&folder)).await??;
            if shared.push(&files, None).await? {
                tracing::info!(folder = %local.display(), "etcd store had no templates: pushed this replica's");
            }
            shared.current().await?.ok_or_else(|| {
                Error::Etcd("the templates vanished after they were pushed".into())
            })?
        }
    };
    let copy = copy.to_owned();
    let unchanged = {
        let copy = copy.clone();
        tokio::task::spawn_blocking(move || templates::copy_hash(&copy)).await?
    };
    if unchanged.as_deref() == Some(hash.as_str()) {
        return Ok(());
    }
    let files = shared.tree(&hash).await?;
    let store = store.cloned();
    tokio::task::spawn_blocking(move || match store {
        Some(store) => store.replace_templates(|| templates::write_copy(&copy, &files)),
        None => templates::write_copy(&copy, &files),
    })
    .await??;
    tracing::info!(hash = %hash, "serving the templates in force");
    Ok(())
}

/// The rollouts, the trees of those still held, and the held flag, as the store has them now.
async fn rollouts_now(
    shared: &rollouts::SharedRollouts,
) -> Result<crate::admin::rollouts::SharedStart, Error> {
    let rows = shared.all().await?;
    let held: Vec<i64> = rows
        .iter()
        .filter(|(_, body)| {
            serde_json::from_str::<crate::admin::rollouts::Rollout>(body)
                .is_ok_and(|r| r.state.holds())
        })
        .map(|(id, _)| *id)
        .collect();
    Ok(crate::admin::rollouts::SharedStart {
        trees: shared.trees(&held).await?,
        hold: shared.hold().await?,
        rows,
    })
}

/// Runs `work` on a client of the store, on a runtime of its own: the CLI commands (`store migrate`,
/// `settings import`, `templates push`) run outside the daemon.
pub fn on_store<T, F>(
    store: &crate::config::EtcdStore,
    work: impl FnOnce(Arc<Etcd>) -> F,
) -> Result<T, Error>
where
    F: std::future::Future<Output = Result<T, Error>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Error::Internal(format!("cannot start the runtime: {err}")))?;
    let etcd = Arc::new(connect(store)?);
    runtime.block_on(work(etcd))
}

async fn wait_for_quorum(etcd: &Etcd) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + START_WAIT;
    loop {
        match etcd.revision().await {
            Ok(_) => return Ok(()),
            Err(err) if tokio::time::Instant::now() >= deadline => return Err(err),
            Err(err) => {
                tracing::warn!(error = %err, "waiting for the etcd store");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// The platform's first start on this store: this replica's `platform.yml` becomes revision 1, unless
/// another replica recorded its own first (then that one is in force).
async fn seed(
    history: &SharedHistory,
    platform: &Path,
) -> Result<crate::admin::db::RevisionRow, Error> {
    let text = tokio::fs::read_to_string(platform)
        .await
        .map_err(|source| Error::Io {
            action: "read",
            path: platform.to_owned(),
            source,
        })?;
    crate::render_roles::parse(platform, &text)?;
    let created = history
        .append(
            0,
            "initial",
            pryv_daemon::now_unix_i64(),
            "platform.yml found at first start",
            &text,
        )
        .await?;
    if created.is_some() {
        tracing::info!(path = %platform.display(), "etcd store was empty: recorded platform.yml as revision 1");
    }
    history
        .latest()
        .await?
        .ok_or_else(|| Error::Etcd("the first revision vanished after it was written".into()))
}

/// Writes this replica's copy of the settings (0600, in a 0700 folder of the database folder).
async fn write_copy(path: &Path, text: String) -> Result<(), Error> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::PermissionsExt;
        let write_error = |source| Error::Write {
            path: path.clone(),
            source,
        };
        if let Some(folder) = path.parent() {
            #[allow(clippy::disallowed_methods)] // on a blocking thread
            std::fs::create_dir_all(folder).map_err(write_error)?;
            #[allow(clippy::disallowed_methods)] // on a blocking thread
            std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o700))
                .map_err(write_error)?;
        }
        pryv_fs::write_atomic(&path, text.as_bytes(), 0o600).map_err(write_error)
    })
    .await?
}

/// What the watch hands changes to: the settings (this replica's copy) and the fleet (followers' reports).
pub struct Taken {
    pub settings: Arc<Settings>,
    pub fleet: Arc<crate::admin::fleet::Fleet>,
    pub followers: Arc<crate::follower_keys::FollowerIndex>,
    pub rollouts: Arc<crate::admin::rollouts::Rollouts>,
    pub store: crate::store::TreeStore,
}

impl Taken {
    /// The rollouts and the held flag as the store has them: pins, target trees, the drivers woken.
    async fn rollouts(&self, shared: &rollouts::SharedRollouts) -> Result<(), Error> {
        let now = rollouts_now(shared).await?;
        for tree in &now.trees {
            self.store.adopt(tree)?;
        }
        self.rollouts.take(&now.rows, now.hold);
        // Long-polls of followers whose pin changed answer now.
        self.store.wake();
        Ok(())
    }

    /// A report another replica received (or this one: taking it again changes nothing).
    fn report(&self, url: &str, body: &[u8]) {
        let Some((id, _)) = self.followers.with_ids().find(|(_, f)| f.url == url) else {
            return;
        };
        match serde_json::from_slice(body) {
            Ok(report) => self.fleet.reported(id, report),
            Err(err) => tracing::warn!(url, error = %err, "unreadable report in the etcd store"),
        }
    }
}

/// Keeps this replica current: every new settings revision in the store is taken (`Settings::refresh`),
/// every follower report handed to the fleet. The watch (of the platform's whole prefix) resumes from the
/// last store revision it processed; when that revision was compacted away, or at the first turn,
/// everything is read again from scratch before watching. A watch that breaks is opened again.
async fn follow(replica: Arc<Replica>, taken: Taken, shutdown: CancellationToken) {
    let mut resume_from: Option<i64> = None;
    loop {
        let from = match resume_from {
            Some(from) => from,
            None => match reload(&replica, &taken).await {
                Ok(revision) => revision + 1,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the settings from the etcd store; retrying");
                    if pause(&shutdown).await {
                        return;
                    }
                    continue;
                }
            },
        };
        let mut stream = match replica.etcd.watch("", from).await {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch the etcd store; retrying");
                resume_from = Some(from);
                if pause(&shutdown).await {
                    return;
                }
                continue;
            }
        };
        replica
            .watching
            .store(true, std::sync::atomic::Ordering::Release);
        let next = watch_until_broken(&replica, &taken, &mut stream, from, &shutdown).await;
        replica
            .watching
            .store(false, std::sync::atomic::Ordering::Release);
        match next {
            Next::Resume(from) => resume_from = Some(from),
            Next::Reload => resume_from = None,
            Next::Stop => return,
        }
        if pause(&shutdown).await {
            return;
        }
    }
}

/// What follows a watch that ended.
enum Next {
    /// Watch again from this store revision.
    Resume(i64),
    /// Read everything again first.
    Reload,
    Stop,
}

/// Takes every message of `stream` (opened at store revision `from`) until it breaks. Every
/// [`WATCH_CHECK`] the newest change under the prefix is compared with what the watch delivered: a change
/// still not delivered at the next check means a stuck watch (a connection gone silent that no error
/// reports), so everything is read again and a new watch opened.
async fn watch_until_broken(
    replica: &Replica,
    taken: &Taken,
    stream: &mut client::WatchStream,
    from: i64,
    shutdown: &CancellationToken,
) -> Next {
    let mut next = from;
    let mut check = tokio::time::interval(WATCH_CHECK);
    check.tick().await;
    // A change the watch had not delivered at the last check.
    let mut overdue: Option<i64> = None;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return Next::Stop,
            _ = check.tick() => {
                if let Some(change) = overdue && next <= change {
                    tracing::warn!(change, delivered = next - 1, "the etcd watch did not deliver a change in time; reading everything again");
                    return Next::Reload;
                }
                overdue = replica.etcd.newest_change("").await.ok().filter(|newest| *newest >= next);
                continue;
            }
            event = stream.next() => event,
        };
        match event {
            Ok(WatchEvent::Changed { revision, keys }) => {
                replica.liveness.confirm();
                if let Err(err) = take(replica, taken, &keys).await {
                    // Not processed: the next watch starts again at this change.
                    tracing::warn!(error = %err, "cannot take the new settings from the etcd store; watching again from this change");
                    return Next::Resume(next);
                }
                next = revision + 1;
            }
            Ok(WatchEvent::Progress(_)) => replica.liveness.confirm(),
            Ok(WatchEvent::Compacted(revision)) => {
                tracing::info!(
                    revision,
                    "the etcd watch's revision was compacted; reading the settings again"
                );
                return Next::Reload;
            }
            Err(err) => {
                tracing::warn!(error = %err, "the etcd watch ended; watching again");
                return Next::Resume(next);
            }
        }
    }
}

/// The store revision, then the settings in force and the reports at or after it: a watch from the next
/// revision misses nothing.
async fn reload(replica: &Replica, taken: &Taken) -> Result<i64, Error> {
    let revision = replica.etcd.revision().await?;
    taken.rollouts(&replica.rollouts).await?;
    take_templates(
        &replica.templates,
        &replica.templates_copy,
        &replica.templates_copy,
        Some(&taken.store),
    )
    .await?;
    taken.settings.refresh().await?;
    for (url, body) in replica.reports.all().await? {
        taken.report(&url, &body);
    }
    Ok(revision)
}

/// Takes what changed under `keys`: a new settings revision, a follower's report.
async fn take(replica: &Replica, taken: &Taken, keys: &[String]) -> Result<(), Error> {
    // Rollouts and the held flag first: a change saved held is never served before its hold.
    let (rollouts, hold) = (
        replica.etcd.key(rollouts::ROLLOUTS),
        replica.etcd.key(rollouts::HOLD),
    );
    if keys
        .iter()
        .any(|key| key.starts_with(&rollouts) || *key == hold)
    {
        taken.rollouts(&replica.rollouts).await?;
    }
    if keys
        .iter()
        .any(|key| *key == replica.etcd.key(templates::CURRENT))
    {
        take_templates(
            &replica.templates,
            &replica.templates_copy,
            &replica.templates_copy,
            Some(&taken.store),
        )
        .await?;
    }
    let history = replica.etcd.key(SharedHistory::prefix());
    if keys.iter().any(|key| key.starts_with(&history)) {
        taken.settings.refresh().await?;
    }
    let reports = replica.etcd.key(reports::REPORTS);
    for key in keys.iter().filter(|key| key.starts_with(&reports)) {
        if let Some((url, body)) = replica.reports.at(key).await? {
            taken.report(&url, &body);
        }
    }
    Ok(())
}

/// Waits before the next try; true when shutting down.
async fn pause(shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(WATCH_RETRY) => false,
    }
}
