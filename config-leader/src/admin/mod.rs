//! Everything the admin API shares: the database, the settings service, the fleet, token keys, the static
//! admin key and the login throttle; plus the start-up creation of the emergency `initial_user` and the audit
//! helper (database and log).

pub mod accounts;
pub mod db;
pub mod fleet;
pub mod git;
pub mod identity;
pub mod migrations;
pub mod notify;
pub mod platform_users;
pub mod preview;
pub mod rollouts;
pub mod settings;
pub mod user_records;
pub mod zones;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use self::db::{Db, UserRow};
use self::identity::{Caller, INITIAL_USER, INVALID_TOKEN, Permissions, Throttle, Tokens};
use crate::admin::fleet::Fleet;
use crate::admin::settings::Settings;
use crate::config::Config;
use crate::error::Error;
use crate::secret::{self, Secret};
use crate::store::TreeStore;
use pryv_daemon::now_unix_i64;

/// Shared admin state.
pub struct Admin {
    pub db: Arc<Db>,
    /// The admin users and revoked tokens (the database, or etcd with replicas).
    pub users: user_records::UserRecords,
    /// With replicas: the followers' reports shared through etcd.
    pub shared_reports: Option<Arc<crate::etcd::reports::SharedReports>>,
    /// With replicas: the audit log shared through etcd.
    pub shared_audit: Option<Arc<crate::etcd::audit::SharedAudit>>,
    pub settings: Arc<Settings>,
    pub fleet: Arc<Fleet>,
    pub tokens: Tokens,
    pub admin_key: Option<Secret>,
    pub throttle: Throttle,
    /// Browser origins allowed on the admin routes (`None` = `https://adm.<DOMAIN>`).
    pub cors_origins: Option<Vec<String>>,
    pub platform_users: crate::admin::platform_users::PlatformUsers,
    /// Bearer token required on `/metrics`, when set.
    pub metrics_token: Option<String>,
    pub rollouts: Arc<crate::admin::rollouts::Rollouts>,
    /// The emergency account's new password hash: `None` while argon2 runs (off the start path), then
    /// whether it was stored. A login as `initial_user` waits for it.
    pub initial_user: tokio::sync::watch::Receiver<Option<Result<(), String>>>,
    /// The settings history in git, when `gitRepoPath` or `settings.git` is set.
    pub repository: Option<Arc<git::SettingsRepository>>,
}

impl Admin {
    /// Opens the database, records the current `platform.yml` in history, recreates `initial_user`.
    pub fn new(
        config: &Config,
        store: &TreeStore,
        replica: Option<&crate::etcd::Replica>,
    ) -> Result<Self, Error> {
        let db = Arc::new(Db::open(
            &config.database_path,
            config.credentials_file.exists(),
        )?);
        let settings = Arc::new(Settings::new(
            config,
            db.clone(),
            store.clone(),
            replica.map(|replica| replica.history.clone()),
        ));
        let in_force = match replica {
            Some(replica) => replica.start_revision,
            None => {
                settings.settle_after_crash()?;
                settings.sync_history()?
            }
        };
        store.set_settings_revision(in_force);
        let repository = git::SettingsRepository::new(config, db.clone(), settings.clone());
        crate::metrics::describe();
        let initial_user = create_initial_user(&db, &config.credentials_file)?;
        let users = match replica {
            Some(replica) => user_records::UserRecords::Shared {
                db: db.clone(),
                users: replica.users.clone(),
            },
            None => user_records::UserRecords::Local(db.clone()),
        };
        let admin = Self {
            users,
            shared_reports: replica.map(|replica| replica.reports.clone()),
            shared_audit: replica.map(|replica| replica.audit.clone()),
            db: db.clone(),
            repository,
            settings,
            fleet: Arc::new(Fleet::new(
                config.notify_timeout,
                config.notify_concurrency,
                config.notify_ca_file.as_deref(),
            )?),
            tokens: Tokens::new(identity::token_secret(&config.internals).expose()),
            admin_key: config.admin_key.clone().filter(|k| !k.expose().is_empty()),
            throttle: Throttle::default(),
            cors_origins: config.cors_origins.clone(),
            platform_users: crate::admin::platform_users::PlatformUsers::new(config)?,
            metrics_token: config.metrics_token.clone(),
            rollouts: Arc::new(match replica {
                Some(replica) => {
                    let start = replica
                        .rollouts_at_start
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .take()
                        .ok_or_else(|| Error::Internal("the rollouts were taken twice".into()))?;
                    crate::admin::rollouts::Rollouts::shared(replica.rollouts.clone(), start)
                }
                None => crate::admin::rollouts::Rollouts::load(db.clone())?,
            }),
            initial_user,
        };
        // The trees the rollouts in force roll out, byte for byte as when they started.
        for tree in admin.rollouts.target_trees()? {
            store.adopt(&tree)?;
        }
        Ok(admin)
    }

    /// Waits until the emergency account's new password is stored (argon2 runs after the start).
    pub async fn initial_user_ready(&self) -> Result<(), Error> {
        let mut ready = self.initial_user.clone();
        let state = ready
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::Internal("the emergency account was not recreated".into()))?;
        match state.as_ref() {
            Some(Err(problem)) => Err(Error::Internal(format!(
                "the emergency account could not be recreated: {problem}"
            ))),
            _ => Ok(()),
        }
    }

    /// Writes an audit entry (database and log).
    pub async fn audit(&self, caller: &str, action: &str, detail: &str, remote: &str) {
        tracing::info!(actor = caller, action, detail, remote, "audit");
        if let Some(shared) = &self.shared_audit {
            if let Err(err) = shared
                .append(now_unix_i64(), [caller, action, detail, remote])
                .await
            {
                tracing::error!(error = %err, "cannot write the shared audit log");
            }
            return;
        }
        let entry = [caller, action, detail, remote].map(str::to_owned);
        let written = self
            .db
            .call(move |db| {
                let [caller, action, detail, remote] = &entry;
                db.audit(now_unix_i64(), caller, action, detail, remote)
            })
            .await;
        if let Err(err) = written {
            tracing::error!(error = %err, "cannot write the audit log");
        }
    }

    /// The audit log, newest first, at most `limit` entries.
    pub async fn audit_entries(&self, limit: i64) -> Result<Vec<db::AuditRow>, Error> {
        if let Some(shared) = &self.shared_audit {
            return shared
                .entries(usize::try_from(limit).unwrap_or(usize::MAX))
                .await;
        }
        self.db.call(move |db| db.audit_entries(limit)).await
    }

    /// A follower's apply report: masked (an old follower may send a log tail holding a setting or an
    /// internal), kept in the database, then handed to the fleet (which wakes the rollouts awaiting it).
    /// Reading the settings and writing SQLite block: done on a blocking thread.
    #[allow(clippy::disallowed_methods)] // save_report runs in spawn_blocking
    pub async fn take_report(
        &self,
        id: crate::follower_keys::FollowerId,
        url: String,
        mut report: pryv_protocol::ApplyReport,
    ) -> Result<(), Error> {
        let (settings, db) = (self.settings.clone(), self.db.clone());
        let shared_url = url.clone();
        let (report, body) = tokio::task::spawn_blocking(move || {
            settings.scrubber().scrub_report(&mut report);
            let body = serde_json::to_string(&report).ok();
            if let Some(body) = &body
                && let Err(err) = db.blocking().save_report(&url, body)
            {
                tracing::warn!(error = %err, "cannot keep the report in the database");
            }
            (report, body)
        })
        .await?;
        self.fleet.reported(id, report);
        // With replicas, every other one learns it through the store.
        if let (Some(reports), Some(body)) = (&self.shared_reports, body)
            && let Err(err) = reports.put(&shared_url, &body).await
        {
            tracing::warn!(error = %err, "cannot share the report through the etcd store");
        }
        Ok(())
    }

    /// Authenticates an admin request: the admin key, or a valid, unrevoked token of an existing user (whose
    /// current permissions apply).
    pub async fn authenticate(&self, credential: Option<&str>) -> Result<Caller, Error> {
        let credential = credential.ok_or_else(|| {
            Error::Unauthenticated(
                "missing credentials; send a login token or the admin key in Authorization".into(),
            )
        })?;
        if let Some(key) = &self.admin_key
            && key.matches(credential)
        {
            return Ok(Caller::AdminKey);
        }
        // Every refusal below says exactly INVALID_TOKEN: the web app logs out on that message only.
        let invalid = || Error::Unauthenticated(INVALID_TOKEN.into());
        let claims = self.tokens.verify(credential)?;
        let revoked = self.users.is_revoked(&claims.jti).await?;
        let generation = self.users.token_generation(&claims.sub).await?;
        let user = self.users.user(&claims.sub).await?;
        // Revoked, or the password or permissions changed, or the account was deleted, since it was issued.
        if revoked || generation != Some(claims.generation) {
            return Err(invalid());
        }
        let user = user.ok_or_else(invalid)?;
        Ok(Caller::User {
            username: user.username,
            permissions: Permissions::from_json(&user.permissions),
            token_id: claims.jti,
            expires_at: claims.exp,
        })
    }
}

/// (Re)creates the emergency account with every permission and a new password, written to the credentials file
/// (mode 0600) and printed once in the log. The account is stored at once with an unusable hash (a database
/// that cannot be written still stops the start); argon2 of the new password (tens of milliseconds) runs on a
/// thread of its own, off the start path, and a login as `initial_user` waits for it.
// Start-up only (Admin::new), before the runtime serves; the hash on its own thread.
#[allow(clippy::disallowed_methods)]
fn create_initial_user(
    db: &Arc<Db>,
    credentials: &Path,
) -> Result<tokio::sync::watch::Receiver<Option<Result<(), String>>>, Error> {
    let password = secret::generate();
    db.blocking().upsert_user(
        &UserRow {
            username: INITIAL_USER.to_owned(),
            password_hash: PENDING_HASH.to_owned(),
            permissions: Permissions::all().to_json(),
        },
        now_unix_i64(),
    )?;
    let io = |source| Error::Write {
        path: credentials.to_owned(),
        source,
    };
    if let Some(parent) = credentials.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    // The password alone, as the certificate service reads it (the whole file, trimmed).
    let text = format!("{password}\n");
    pryv_fs::write_atomic(credentials, text.as_bytes(), 0o600).map_err(io)?;
    std::fs::set_permissions(credentials, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    // The one deliberate disclosure: the operator needs this password to create the real admins.
    tracing::warn!(
        username = INITIAL_USER,
        password = %password,
        file = %credentials.display(),
        "emergency admin account recreated; its password is also in the credentials file"
    );
    let (done, ready) = tokio::sync::watch::channel(None);
    let db = db.clone();
    std::thread::Builder::new()
        .name("initial-user".into())
        .spawn(move || {
            let stored = identity::hash_password(&password)
                .and_then(|hash| db.blocking().set_password(INITIAL_USER, &hash))
                .map(drop)
                .map_err(|err| err.to_string());
            if let Err(problem) = &stored {
                tracing::error!(problem = %problem, "cannot store the emergency account's password; logging in as initial_user fails until a restart");
            }
            let _ = done.send(Some(stored));
        })
        .map_err(|err| Error::Internal(format!("cannot start a thread: {err}")))?;
    Ok(ready)
}

/// What the emergency account holds until its new hash is stored: no password verifies against it.
const PENDING_HASH: &str = "!pending";
