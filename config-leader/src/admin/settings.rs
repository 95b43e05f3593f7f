//! Platform settings changes: partial updates validated by rendering every role first, atomic rewrite of
//! `platform.yml`, history (with hand edits found on disk recorded as their own revisions), rollback and
//! migrations to a newer template platform file. Mutations are serialized.

use std::path::PathBuf;
use std::sync::Arc;

use indexmap::IndexMap;
use pryv_render::{Group, PlatformFile, Setting};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::admin::db::{Db, RevisionRow};
use crate::config::Internals;
use crate::error::Error;
use crate::etcd::history::SharedHistory;
use crate::store::TreeStore;
use pryv_daemon::now_unix_i64;

/// Partial update: `{"settings": {GROUP: {"settings": {NAME: {"value": ...}}}}, "message": "..."}`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct SettingsPatch {
    #[schema(value_type = Object)]
    pub settings: IndexMap<String, GroupPatch>,
    #[serde(default)]
    pub message: Option<String>,
}

impl SettingsPatch {
    /// Reads either body `PUT /admin/settings` accepts: ours, `{"settings": {GROUP: ...}, "message"?}`, or the
    /// legacy one that the admin web app and the certificate service send, the bare groups object
    /// `{GROUP: {name, settings: {NAME: {value, description}}}}`.
    pub fn from_body(body: Value) -> Result<Self, Error> {
        let Value::Object(object) = body else {
            return Err(Error::BadRequest(
                "the body must be a JSON object: {\"settings\": {GROUP: {\"settings\": {NAME: {\"value\": ...}}}}} \
                 or the groups object itself"
                    .into(),
            ));
        };
        let ours = object.get("settings").is_some_and(Value::is_object)
            && object.keys().all(|k| k == "settings" || k == "message");
        let shape_error = |err: serde_json::Error| {
            Error::BadRequest(format!(
                "settings must be GROUP: {{\"settings\": {{NAME: {{\"value\": ...}}}}}}: {err}"
            ))
        };
        if ours {
            serde_json::from_value(Value::Object(object)).map_err(shape_error)
        } else {
            Ok(Self {
                settings: serde_json::from_value(Value::Object(object)).map_err(shape_error)?,
                message: None,
            })
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct GroupPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub settings: IndexMap<String, SettingPatch>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SettingPatch {
    #[serde(default)]
    pub value: Option<Value>,
    #[serde(default)]
    pub description: Option<String>,
}

/// One setting that differs between two states.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SettingChange {
    /// The zone whose override changed; absent for the platform's own settings (`vars`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    pub group: String,
    pub name: String,
    /// `added`, `removed` or `changed`.
    pub change: String,
    /// Any YAML value (string, number, object...), or null when the setting did not exist.
    pub before: Option<Value>,
    /// Any YAML value, or null when the setting was removed.
    pub after: Option<Value>,
}

/// The migration of `platform.yml` to the template's version: the steps (what the admin web app reads) and
/// what they change.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationPlan {
    /// Steps from the platform's version to the template's; empty when both are the same.
    pub migrations: Vec<crate::admin::migrations::StepView>,
    pub platform_version: String,
    pub template_version: String,
    pub deployment_type: crate::admin::migrations::DeploymentType,
    /// Every setting the migration adds, removes or changes.
    pub changes: Vec<SettingChange>,
}

/// Mode of the platform.yml the leader writes (at most: a stricter one set by an operator is kept).
const PLATFORM_MODE: u32 = 0o600;

/// The settings service.
pub struct Settings {
    platform_path: PathBuf,
    template_path: Option<PathBuf>,
    templates: PathBuf,
    internals: Internals,
    /// Whose zones and variables every change is rendered for before it is saved.
    followers: Vec<crate::config::FollowerEntry>,
    db: Arc<Db>,
    store: TreeStore,
    mutation: tokio::sync::Mutex<()>,
    /// The settings as parsed at a store generation: what every CORS check and every follower report reads,
    /// so platform.yml is parsed once per change, not once per request.
    parsed: std::sync::Mutex<Option<(u64, Arc<PlatformFile>)>>,
    /// Woken at every new revision (the settings repository commits it).
    saved: Arc<tokio::sync::Notify>,
    /// etcd mode: the history shared by the replicas is the record, `platform_path` this replica's copy.
    shared: Option<Arc<SharedHistory>>,
}

/// Saves tried in a row when other replicas keep saving first (etcd mode, no `If-Match`).
const SAVE_ATTEMPTS: usize = 5;

/// A change ready to save: the exact text of `platform.yml` and the history message.
pub struct Prepared {
    pub text: String,
    pub message: String,
}

/// Runs `future` to its end from blocking code (settings work runs on blocking threads of the runtime).
fn wait_for<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Handle::current().block_on(future)
}

impl Settings {
    /// The settings of `config` (in etcd mode, `shared` is the record and the file this replica's copy).
    pub fn new(
        config: &crate::config::Config,
        db: Arc<Db>,
        store: TreeStore,
        shared: Option<Arc<SharedHistory>>,
    ) -> Self {
        Self {
            shared,
            platform_path: config.platform_in_force(),
            template_path: config.platform_template.clone(),
            templates: config.templates_path.clone(),
            internals: config.internals.clone(),
            followers: config.followers.clone(),
            db,
            store,
            mutation: tokio::sync::Mutex::new(()),
            parsed: std::sync::Mutex::new(None),
            saved: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Woken at every new revision (a save, a rollback, a migration, a recorded hand edit).
    pub fn saved(&self) -> Arc<tokio::sync::Notify> {
        self.saved.clone()
    }

    /// Records a hand edit of platform.yml if there is one; the latest revision.
    #[allow(clippy::disallowed_methods)] // the statements run in off_runtime
    pub async fn record_hand_edit(self: &Arc<Self>) -> Result<i64, Error> {
        let _one = self.mutation.lock().await;
        self.off_runtime(|this| this.sync_history()).await
    }

    /// etcd mode: takes the newest revision of the store into this replica's copy (the watch calls it).
    pub async fn refresh(self: &Arc<Self>) -> Result<i64, Error> {
        self.record_hand_edit().await
    }

    /// A commit of the followed branch (`settings.git`): validated exactly as a PUT is (every role renders,
    /// every problem listed), then saved as a revision tied to `commit`, byte for byte, only while the
    /// settings are still at `expected` (a hand edit or a save in between makes it stale).
    #[allow(clippy::disallowed_methods)] // the statements run in off_runtime
    pub async fn import(
        self: &Arc<Self>,
        text: String,
        author: String,
        message: String,
        commit: String,
        expected: i64,
    ) -> Result<i64, Error> {
        let _one = self.mutation.lock().await;
        self.off_runtime(move |this| {
            let base = this.sync_history()?;
            this.ensure_current(Some(expected), base)?;
            let platform = this.parse(&text)?;
            this.validate(&platform)?;
            let revision = this.commit(&text, &author, &message, base)?;
            this.db.blocking().set_git_commit(revision, &commit)?;
            Ok(revision)
        })
        .await
    }

    // Runs inside `off_runtime` (spawn_blocking), as all settings work does.
    #[allow(clippy::disallowed_methods)]
    fn read_text(&self) -> Result<String, Error> {
        std::fs::read_to_string(&self.platform_path).map_err(|source| Error::Io {
            action: "read",
            path: self.platform_path.clone(),
            source,
        })
    }

    fn parse(&self, text: &str) -> Result<PlatformFile, Error> {
        crate::render_roles::parse(&self.platform_path, text)
    }

    /// At start: settles the revisions a crash left between record and write (see [`Db::settle_pending_revisions`]).
    #[allow(clippy::disallowed_methods)] // start-up (Admin::new)
    pub fn settle_after_crash(&self) -> Result<(), Error> {
        if self.shared.is_some() {
            return Ok(());
        }
        self.db
            .blocking()
            .settle_pending_revisions(&self.read_text()?)
    }

    /// Records the file on disk as a revision if history does not end with it (revision 1 at first start,
    /// author `disk` for hand edits); in etcd mode, the other way round: the store's newest revision becomes
    /// this replica's copy. The revision in force.
    #[allow(clippy::disallowed_methods)] // start-up, and inside off_runtime
    pub fn sync_history(&self) -> Result<i64, Error> {
        if let Some(shared) = &self.shared {
            return self.take_shared(shared);
        }
        if self.db.blocking().has_pending_revision()? {
            // A save is between its record and its write: the file on disk is not a hand edit.
            return self.latest_revision();
        }
        let text = self.read_text()?;
        // Bound first: a connection held by the match's scrutinee would deadlock the arms' statements.
        let latest = self.db.blocking().latest_revision()?;
        match latest {
            None => {
                self.db.blocking().add_revision(
                    "initial",
                    now_unix_i64(),
                    "platform.yml found at first start",
                    &text,
                )?;
                self.saved.notify_one();
            }
            Some(latest) if latest.content != text => {
                self.db
                    .blocking()
                    .add_revision("disk", now_unix_i64(), "edited on disk", &text)?;
                self.store.set_settings_revision(self.latest_revision()?);
                self.saved.notify_one();
                tracing::info!("recorded a hand edit of platform.yml as a new revision");
            }
            Some(_) => {}
        }
        self.latest_revision()
    }

    /// The store's newest revision written as this replica's copy when it differs; its number.
    fn take_shared(&self, shared: &SharedHistory) -> Result<i64, Error> {
        let latest = wait_for(shared.latest())?
            .ok_or_else(|| Error::Etcd("the store holds no settings revision".into()))?;
        let copy = self.read_text().ok();
        if copy.as_deref() != Some(latest.content.as_str()) {
            self.write(&latest.content, latest.revision)?;
            self.saved.notify_one();
            tracing::info!(
                revision = latest.revision,
                "took the settings another replica saved"
            );
        }
        Ok(latest.revision)
    }

    /// Every setting (the zones' overrides and the followers' own variables included) and internal value
    /// long enough to be a secret: masked out of what followers report (container log tails). Internals and
    /// the followers' variables alone when `platform.yml` cannot be read.
    pub fn scrubber(&self) -> pryv_protocol::Scrubber {
        let current = self.current_cached();
        let settings = current
            .iter()
            .flat_map(|platform| {
                platform.settings().map(|(_, _, value)| value).chain(
                    platform
                        .zones
                        .values()
                        .flat_map(|zone| zone.settings().map(|(_, _, value)| value)),
                )
            })
            .chain(self.followers.iter().flat_map(|f| f.variables.values()))
            .chain(self.internals.0.values());
        pryv_protocol::Scrubber::from_json_values(settings)
    }

    /// The current settings, parsed once per store generation (`None` while platform.yml does not parse).
    fn current_cached(&self) -> Option<Arc<PlatformFile>> {
        // The generation is read before the file: a change meanwhile bumps it and the next call reads again.
        let generation = self.store.generation();
        let mut cached = self
            .parsed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((seen, platform)) = cached.as_ref()
            && *seen == generation
        {
            return Some(platform.clone());
        }
        let platform = Arc::new(self.current().ok()?);
        *cached = Some((generation, platform.clone()));
        Some(platform)
    }

    /// The current settings.
    pub fn current(&self) -> Result<PlatformFile, Error> {
        self.parse(&self.read_text()?)
    }

    /// Runs `job` on a blocking thread: parsing, rendering every role, fsync and SQLite writes must not hold
    /// an async worker (the followers' `GET /conf` and the shutdown run there).
    async fn off_runtime<T: Send + 'static>(
        self: &Arc<Self>,
        job: impl FnOnce(&Self) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || job(&this)).await?
    }

    /// The current settings and the revision they are (a hand edit is recorded first): what `If-Match` names.
    pub async fn current_with_revision(self: &Arc<Self>) -> Result<(PlatformFile, i64), Error> {
        let _one = self.mutation.lock().await;
        self.off_runtime(|this| {
            let revision = this.sync_history()?;
            Ok((this.current()?, revision))
        })
        .await
    }

    #[allow(clippy::disallowed_methods)] // inside off_runtime
    fn latest_revision(&self) -> Result<i64, Error> {
        let latest = match &self.shared {
            Some(shared) => wait_for(shared.latest())?,
            None => self.db.blocking().latest_revision()?,
        };
        Ok(latest.map_or(0, |row| row.revision))
    }

    /// Refuses a change made against revision `expected` when `current` is another one (a lost update).
    fn ensure_current(&self, expected: Option<i64>, current: i64) -> Result<(), Error> {
        match expected {
            Some(expected) if expected != current => {
                Err(Error::StaleRevision { expected, current })
            }
            _ => Ok(()),
        }
    }

    /// Applies `patch`; unknown groups or settings are refused unless `allow_new`. With `expected` (the
    /// request's `If-Match`) only if the settings are still at that revision. Returns the new revision.
    pub async fn update(
        self: &Arc<Self>,
        patch: &SettingsPatch,
        allow_new: bool,
        author: &str,
        expected: Option<i64>,
    ) -> Result<i64, Error> {
        let patch = patch.clone();
        self.change(author, expected, move |this| {
            let message = patch
                .message
                .clone()
                .unwrap_or_else(|| "settings updated".into());
            this.prepare(&this.patched(&patch, allow_new)?, message)
        })
        .await
    }

    /// Applies a change of the zones' overrides (`PUT /admin/zones`), validated and saved as a settings
    /// change is, with `expected` as the request's `If-Match`. Returns the new revision.
    pub async fn update_zones(
        self: &Arc<Self>,
        patch: &crate::admin::zones::ZonesPatch,
        author: &str,
        expected: Option<i64>,
    ) -> Result<i64, Error> {
        let patch = patch.clone();
        self.change(author, expected, move |this| {
            let message = patch
                .message
                .clone()
                .unwrap_or_else(|| format!("zones updated: {}", patch.names().join(", ")));
            this.prepare(&patch.apply(&this.current()?)?, message)
        })
        .await
    }

    /// One change: a hand edit recorded first (etcd: the newest revision taken), the `If-Match` revision
    /// checked, then the change `make` prepares (validated) saved, all off the runtime and one change at a
    /// time in this process.
    async fn change(
        self: &Arc<Self>,
        author: &str,
        expected: Option<i64>,
        make: impl Fn(&Self) -> Result<Prepared, Error> + Send + 'static,
    ) -> Result<i64, Error> {
        let _one = self.mutation.lock().await;
        let author = author.to_owned();
        self.off_runtime(move |this| {
            this.saving(expected, &author, &|this| make(this).map(Some))
                .map(|revision| revision.unwrap_or(0))
        })
        .await
    }

    /// Prepares and saves a change based on the revision in force. In etcd mode another replica may save
    /// first: with `If-Match` that is a stale revision (412), without it the change is made again on the new
    /// revision, a few times. `None` when `prepare` finds nothing to save.
    fn saving(
        &self,
        expected: Option<i64>,
        author: &str,
        prepare: &dyn Fn(&Self) -> Result<Option<Prepared>, Error>,
    ) -> Result<Option<i64>, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let base = self.sync_history()?;
            self.ensure_current(expected, base)?;
            let Some(change) = prepare(self)? else {
                return Ok(None);
            };
            match self.commit(&change.text, author, &change.message, base) {
                Err(Error::SaveRace(taken)) => match expected {
                    Some(expected) => {
                        let current = self.latest_revision().unwrap_or(taken);
                        return Err(Error::StaleRevision { expected, current });
                    }
                    None if attempt < SAVE_ATTEMPTS => {
                        tracing::info!(
                            revision = taken,
                            "another replica saved first; making the change again on its revision"
                        );
                    }
                    None => return Err(Error::SaveRace(taken)),
                },
                saved => return saved.map(Some),
            }
        }
    }

    /// `platform` validated (every role renders) and written out as the text to save.
    pub fn prepare(&self, platform: &PlatformFile, message: String) -> Result<Prepared, Error> {
        self.validate(platform)?;
        let text = platform.to_yaml().map_err(|source| Error::Platform {
            path: self.platform_path.clone(),
            source,
        })?;
        Ok(Prepared { text, message })
    }

    /// The current settings with `patch` merged in (nothing saved): only the values present change.
    pub fn patched(&self, patch: &SettingsPatch, allow_new: bool) -> Result<PlatformFile, Error> {
        let mut platform = self.current()?;
        let mut unknown = Vec::new();
        for (group_name, group_patch) in &patch.settings {
            if !platform.vars.contains_key(group_name) && !allow_new {
                unknown.push(group_name.clone());
                continue;
            }
            let group = platform
                .vars
                .entry(group_name.clone())
                .or_insert_with(Group::default);
            if let Some(name) = &group_patch.name {
                group.name = Some(name.clone());
            }
            if let Some(description) = &group_patch.description {
                group.description = Some(description.clone());
            }
            for (name, setting_patch) in &group_patch.settings {
                if !group.settings.contains_key(name) && !allow_new {
                    unknown.push(format!("{group_name}.{name}"));
                    continue;
                }
                let setting = group
                    .settings
                    .entry(name.clone())
                    .or_insert_with(Setting::default);
                if let Some(value) = &setting_patch.value {
                    setting.value = value.clone();
                }
                if let Some(description) = &setting_patch.description {
                    setting.description = Some(description.clone());
                }
            }
        }
        if !unknown.is_empty() {
            return Err(Error::BadRequest(format!(
                "unknown group(s) or setting(s): {}; add ?allowNew=true to create them",
                unknown.join(", ")
            )));
        }
        Ok(platform)
    }

    /// What going from `before` to `after` changes in every role (nothing saved).
    pub fn preview(
        &self,
        before: &PlatformFile,
        after: &PlatformFile,
        followers: &[crate::config::FollowerEntry],
    ) -> Result<crate::admin::preview::Preview, Error> {
        crate::admin::preview::preview(
            (&self.templates, &self.store.links()),
            &self.internals,
            &self.platform_path,
            before,
            after,
            followers,
        )
    }

    /// Makes revision `revision` current again, as a new revision.
    #[allow(clippy::disallowed_methods)] // the statements run in off_runtime
    pub async fn rollback(
        self: &Arc<Self>,
        revision: i64,
        author: &str,
        expected: Option<i64>,
    ) -> Result<i64, Error> {
        let _one = self.mutation.lock().await;
        let author = author.to_owned();
        self.off_runtime(move |this| {
            let rollback = |this: &Self| {
                let old = this.recorded(revision)?;
                this.validate(&this.parse(&old.content)?)?;
                Ok(Some(Prepared {
                    text: old.content,
                    message: format!("rollback to revision {revision}"),
                }))
            };
            this.saving(expected, &author, &rollback)
                .map(|saved| saved.unwrap_or(0))
        })
        .await
    }

    /// The migration to the template's version, and the platform it gives.
    fn migration(&self) -> Result<(MigrationPlan, PlatformFile), Error> {
        let template = self.template()?;
        let current = self.current()?;
        let mut plan = crate::admin::migrations::plan(&current, &template)?;
        // Our single-node platforms (from `init`) name the machine REG_MASTER_IP_ADDRESS: the roles tell.
        if self.templates.join("singlenode").is_dir() && !self.templates.join("core").is_dir() {
            plan.deployment = crate::admin::migrations::DeploymentType::Singlenode;
        }
        let migrated = crate::admin::migrations::migrate(&current, &template, &plan);
        let summary = MigrationPlan {
            migrations: plan.views(),
            platform_version: plan.from_version.clone(),
            template_version: plan.to_version.clone(),
            deployment_type: plan.deployment,
            changes: diff(&current, &migrated),
        };
        Ok((summary, migrated))
    }

    /// What a migration to the template's version would do.
    pub fn migrations(&self) -> Result<MigrationPlan, Error> {
        self.migration().map(|(plan, _)| plan)
    }

    /// Migrates `platform.yml` to the template's version: one history entry (rollback undoes it).
    pub async fn apply_migrations(
        self: &Arc<Self>,
        author: &str,
        expected: Option<i64>,
    ) -> Result<(MigrationPlan, Option<i64>), Error> {
        let _one = self.mutation.lock().await;
        let author = author.to_owned();
        self.off_runtime(move |this| {
            let planned = std::cell::RefCell::new(None);
            let migrate = |this: &Self| {
                let (plan, migrated) = this.migration()?;
                let message = format!(
                    "migration from {} to {}",
                    plan.platform_version, plan.template_version
                );
                let empty = plan.migrations.is_empty();
                *planned.borrow_mut() = Some(plan);
                if empty {
                    return Ok(None);
                }
                this.prepare(&migrated, message).map(Some)
            };
            let revision = this.saving(expected, &author, &migrate)?;
            let plan = planned
                .into_inner()
                .ok_or_else(|| Error::Internal("no migration plan was made".into()))?;
            Ok((plan, revision))
        })
        .await
    }

    fn template(&self) -> Result<PlatformFile, Error> {
        let path = self.template_path.as_ref().ok_or_else(|| {
            Error::BadRequest(
                "no platformSettings.platformTemplate configured; set it to the newer template"
                    .into(),
            )
        })?;
        crate::render_roles::load(path)
    }

    /// The platform's `DOMAIN` setting, if it is a string.
    pub fn domain(&self) -> Option<String> {
        let platform = self.current_cached()?;
        platform
            .settings()
            .find(|(_, name, _)| *name == "DOMAIN")
            .and_then(|(_, _, value)| value.as_str().map(str::to_owned))
    }

    /// A setting's value, by name.
    pub fn value_of(&self, name: &str) -> Option<Value> {
        let platform = self.current_cached()?;
        platform
            .settings()
            .find(|(_, n, _)| *n == name)
            .map(|(_, _, value)| value.clone())
    }

    /// History, newest first (a hand edit is recorded first).
    #[allow(clippy::disallowed_methods)] // the statements run in off_runtime
    pub async fn history(self: &Arc<Self>) -> Result<Vec<RevisionRow>, Error> {
        self.off_runtime(|this| {
            if let Some(shared) = &this.shared {
                return wait_for(shared.revisions());
            }
            this.sync_history()?;
            this.db.blocking().revisions()
        })
        .await
    }

    /// One revision and its changes against the previous one.
    pub async fn revision(
        self: &Arc<Self>,
        revision: i64,
    ) -> Result<(RevisionRow, Vec<SettingChange>), Error> {
        self.off_runtime(move |this| this.revision_now(revision))
            .await
    }

    /// The settings changed from revision `from` to revision `to` (any two, either order).
    pub async fn changes_between(
        self: &Arc<Self>,
        from: i64,
        to: i64,
    ) -> Result<Vec<SettingChange>, Error> {
        self.off_runtime(move |this| {
            let platform = |revision: i64| -> Result<PlatformFile, Error> {
                this.parse(&this.recorded(revision)?.content)
            };
            Ok(diff(&platform(from)?, &platform(to)?))
        })
        .await
    }

    /// What rolling back to `revision` would change on every machine (nothing saved).
    pub async fn rollback_preview(
        self: &Arc<Self>,
        revision: i64,
    ) -> Result<crate::admin::preview::Preview, Error> {
        self.off_runtime(move |this| {
            let old = this.recorded(revision)?;
            let after = this.parse(&old.content)?;
            this.preview(&this.current()?, &after, &this.followers)
        })
        .await
    }

    /// Revision `revision` as recorded, or a 400 naming it.
    #[allow(clippy::disallowed_methods)] // inside off_runtime
    fn recorded(&self, revision: i64) -> Result<RevisionRow, Error> {
        self.find(revision)?
            .ok_or_else(|| Error::BadRequest(format!("no settings revision {revision}")))
    }

    #[allow(clippy::disallowed_methods)] // inside off_runtime
    fn find(&self, revision: i64) -> Result<Option<RevisionRow>, Error> {
        match &self.shared {
            Some(shared) => wait_for(shared.revision(revision)),
            None => self.db.blocking().revision(revision),
        }
    }

    #[allow(clippy::disallowed_methods)] // inside off_runtime
    fn revision_now(&self, revision: i64) -> Result<(RevisionRow, Vec<SettingChange>), Error> {
        let row = self.recorded(revision)?;
        let after = self.parse(&row.content)?;
        let previous = self.find(revision - 1)?;
        let before = match previous {
            Some(previous) => self.parse(&previous.content)?,
            None => PlatformFile::default(),
        };
        Ok((row, diff(&before, &after)))
    }

    /// Renders every role with `platform`, in every zone and for every follower's own variables; every
    /// problem is collected.
    fn validate(&self, platform: &PlatformFile) -> Result<(), Error> {
        platform
            .ensure_settings()
            .map_err(|err| Error::InvalidSettings(vec![err.to_string()]))?;
        let problems = crate::render_roles::render_variants(
            &self.platform_path,
            platform,
            &self.internals,
            (&self.templates, &self.store.links()),
            &self.followers,
        )?;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidSettings(problems))
        }
    }

    /// Writes `text` as `platform.yml` and records it: first as a pending revision, then the write, then the
    /// confirmation, so a crash in between never credits the change to a hand edit. In etcd mode the record
    /// is the store's transaction (revision `base + 1` if nobody took it), then this replica's copy.
    #[allow(clippy::disallowed_methods)] // inside off_runtime
    fn commit(&self, text: &str, author: &str, message: &str, base: i64) -> Result<i64, Error> {
        if let Some(shared) = &self.shared {
            let saved = wait_for(shared.append(base, author, now_unix_i64(), message, text))?;
            let revision = saved.ok_or(Error::SaveRace(base + 1))?;
            self.write(text, revision)?;
            self.saved.notify_one();
            return Ok(revision);
        }
        let revision =
            self.db
                .blocking()
                .add_pending_revision(author, now_unix_i64(), message, text)?;
        if let Err(err) = self.write(text, revision) {
            self.db.blocking().drop_revision(revision)?;
            return Err(err);
        }
        self.db.blocking().confirm_revision(revision)?;
        self.saved.notify_one();
        Ok(revision)
    }

    /// Writes platform.yml 0600 (it holds the SMTP password), or with the operator's mode when stricter.
    // Runs inside `off_runtime` (spawn_blocking), as all settings work does.
    #[allow(clippy::disallowed_methods)]
    fn write(&self, text: &str, revision: i64) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&self.platform_path).map_or(PLATFORM_MODE, |meta| {
            meta.permissions().mode() & PLATFORM_MODE
        });
        self.store.write_settings(revision, || {
            pryv_fs::write_atomic_with_mode(&self.platform_path, text.as_bytes(), mode).map_err(
                |source| Error::Write {
                    path: self.platform_path.clone(),
                    source,
                },
            )
        })?;
        // Followers fetching from now on must see the new values, before this request even returns.
        self.store.invalidate();
        Ok(())
    }
}

fn change(
    group: &str,
    name: &str,
    kind: &str,
    before: Option<&Value>,
    after: Option<&Value>,
) -> SettingChange {
    SettingChange {
        zone: None,
        group: group.to_owned(),
        name: name.to_owned(),
        change: kind.to_owned(),
        before: before.cloned(),
        after: after.cloned(),
    }
}

type Entries<'a> = Vec<(&'a str, &'a str, &'a Value)>;

/// Settings added, removed or changed from `before` to `after`: the platform's, then each zone's overrides.
pub fn diff(before: &PlatformFile, after: &PlatformFile) -> Vec<SettingChange> {
    let mut changes = diff_entries(&before.settings().collect(), &after.settings().collect());
    let zones: indexmap::IndexSet<&String> =
        before.zones.keys().chain(after.zones.keys()).collect();
    for zone in zones {
        let changed = diff_entries(&zone_entries(before, zone), &zone_entries(after, zone));
        changes.extend(changed.into_iter().map(|mut c| {
            c.zone = Some(zone.clone());
            c
        }));
    }
    changes
}

fn zone_entries<'a>(platform: &'a PlatformFile, zone: &str) -> Entries<'a> {
    platform
        .zones
        .get(zone)
        .map(|z| z.settings().collect())
        .unwrap_or_default()
}

fn diff_entries(before: &Entries, after: &Entries) -> Vec<SettingChange> {
    let find = |entries: &Entries, name: &str| {
        entries
            .iter()
            .find(|(_, n, _)| *n == name)
            .map(|(_, _, v)| (*v).clone())
    };
    let mut changes = Vec::new();
    for (group, name, value) in after {
        match find(before, name) {
            None => changes.push(change(group, name, "added", None, Some(value))),
            Some(old) if &&old != value => {
                changes.push(change(group, name, "changed", Some(&old), Some(value)))
            }
            Some(_) => {}
        }
    }
    for (group, name, value) in before {
        if find(after, name).is_none() {
            changes.push(change(group, name, "removed", Some(value), None));
        }
    }
    changes
}
