//! The settings history in git (`gitRepoPath`, `settings.git`): one task commits every revision of the
//! SQLite history to the repository holding `platform.yml` (author, message and date of the revision), and,
//! with a followed branch, turns the branch's new commits into revisions and pushes the leader's own back.
//!
//! The database stays the record: a save never waits for git and never fails because of it. A revision not
//! yet committed (no `git`, a lock, a full disk, a remote away) is retried with backoff and shown as
//! `behind` in `/admin/status`, the metrics and `config-leader check`. Only `platform.yml` is committed:
//! a repository the leader creates ignores everything else, and secrets tracked by an existing one are
//! reported, never rewritten.

pub mod repo;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use self::repo::{CommitInfo, Identity, Repo};
use crate::admin::db::{Db, RevisionRow};
use crate::admin::settings::Settings;
use crate::config::{Config, GitFollow};
use crate::error::Error;
use crate::store::TreeStore;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Without a followed branch, rounds come from saves and changes; this only bounds the wait.
const IDLE: Duration = Duration::from_secs(3600);
/// The history message of a change saved without one.
const DEFAULT_MESSAGE: &str = "settings updated";

/// Where the settings repository stands (`settingsRepository` in `/admin/status`).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryStatus {
    pub path: String,
    /// Revisions of the history not yet committed (retried).
    pub behind: i64,
    pub head: Option<String>,
    /// Why the last attempt to commit failed.
    pub error: Option<String>,
    /// Files holding secrets that the repository tracks (stop tracking them: see the log).
    pub tracked_secrets: Vec<String>,
    pub branch: Option<BranchStatus>,
}

/// The followed branch (`settings.git`).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BranchStatus {
    pub remote: String,
    pub branch: String,
    /// `in-sync`, `refused` (its tip does not render), `diverged` (both sides have commits the other lacks),
    /// `unreachable` (fetch or push failed), or `pending` (not fetched yet).
    pub state: String,
    pub remote_commit: Option<String>,
    /// The tip that was not applied, and every problem with it.
    pub refused: Option<RefusedCommit>,
    pub error: Option<String>,
    /// Unix seconds of the last successful fetch.
    pub last_fetch: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RefusedCommit {
    pub commit: String,
    pub problems: Vec<String>,
}

/// The settings repository and its task.
pub struct SettingsRepository {
    repo: Repo,
    follow: Option<GitFollow>,
    db: Arc<Db>,
    settings: Arc<Settings>,
    /// Secret files that must not be tracked, relative to the repository.
    secrets: Vec<String>,
    status: Mutex<RepositoryStatus>,
}

impl SettingsRepository {
    /// `None` without `gitRepoPath` nor `settings.git`.
    pub fn new(config: &Config, db: Arc<Db>, settings: Arc<Settings>) -> Option<Arc<Self>> {
        let git = config.git.as_ref()?;
        let repo = Repo::new(&git.repo, &config.platform_config);
        let secrets = [
            &config.path,
            &config.credentials_file,
            &config.database_path,
        ]
        .into_iter()
        .filter_map(|path| relative(&git.repo, path))
        .collect();
        // At start-up, before anything is served: what the history holds now stays out of git but its
        // latest revision (the repository's first commit).
        #[allow(clippy::disallowed_methods)]
        if let Err(err) = db.blocking().start_repository() {
            tracing::warn!(error = %err, "cannot mark the history before the settings repository");
        }
        let status = RepositoryStatus {
            path: git.repo.display().to_string(),
            branch: git.follow.as_ref().map(|follow| BranchStatus {
                remote: follow.remote.clone(),
                branch: follow.branch.clone(),
                state: "pending".to_owned(),
                ..BranchStatus::default()
            }),
            ..RepositoryStatus::default()
        };
        Some(Arc::new(Self {
            repo,
            follow: git.follow.clone(),
            db,
            settings,
            secrets,
            status: Mutex::new(status),
        }))
    }

    pub fn status(&self) -> RepositoryStatus {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RepositoryStatus> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the task: a round at start, after every new revision, after a change on disk, every
    /// `pollSeconds` with a followed branch, and with backoff while something fails.
    pub fn spawn(self: &Arc<Self>, store: &TreeStore, shutdown: CancellationToken) {
        let this = self.clone();
        let saved = self.settings.saved();
        let mut changes = store.changes();
        tokio::spawn(async move {
            this.start().await;
            let mut retry = FIRST_RETRY;
            loop {
                let wait = if this.round().await {
                    retry = FIRST_RETRY;
                    this.follow.as_ref().map_or(IDLE, |f| f.poll)
                } else {
                    let wait = retry;
                    retry = (retry * 2).min(MAX_RETRY);
                    wait
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = saved.notified() => {}
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        });
    }

    /// Once: the repository exists, the history before it stays out, tracked secrets are reported.
    async fn start(&self) {
        match self.repo.ensure().await {
            Ok(true) => {
                tracing::info!(path = %self.repo.dir().display(), "created the settings repository")
            }
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(error = %err, "cannot prepare the settings repository; retrying")
            }
        }
        match self.repo.tracked(&self.secrets).await {
            Ok(tracked) => {
                for file in &tracked {
                    tracing::warn!(
                        file,
                        repository = %self.repo.dir().display(),
                        "the settings repository tracks a file holding secrets; stop tracking it with: git -C {} rm --cached {file} && git -C {} commit -m 'Stop tracking secrets' (its past commits still hold it: rotate the secrets if the repository was shared)",
                        self.repo.dir().display(),
                        self.repo.dir().display()
                    );
                }
                self.lock().tracked_secrets = tracked;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot list what the settings repository tracks")
            }
        }
    }

    /// One round: record a hand edit, commit what the history has and git lacks, then follow the branch.
    /// False when something failed (retried sooner).
    async fn round(&self) -> bool {
        let latest = match self.settings.record_hand_edit().await {
            Ok(latest) => latest,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read platform.yml for the settings repository");
                return false;
            }
        };
        // A repository without a commit and a followed branch: the branch comes first (an existing tip is
        // adopted, the history before it stays out of git), then the leader's own commits.
        if let Some(follow) = &self.follow
            && matches!(self.repo.head().await, Ok(None))
            && !self.follow_branch(follow, None, latest).await
        {
            return false;
        }
        let committed = self.catch_up().await;
        let behind = self
            .db
            .call(|db| db.uncommitted_count())
            .await
            .unwrap_or(-1);
        let head = self.repo.head().await.ok().flatten();
        if head.is_some() {
            self.repo.sync_index().await;
        }
        {
            let mut status = self.lock();
            status.behind = behind;
            status.head.clone_from(&head);
            status.error = committed.as_ref().err().map(ToString::to_string);
        }
        match (committed, &self.follow) {
            (Err(err), _) => {
                tracing::error!(error = %err, behind, "cannot commit to the settings repository; the saves are kept and committed later");
                false
            }
            (Ok(()), None) => true,
            (Ok(()), Some(follow)) => self.follow_branch(follow, head, latest).await,
        }
    }

    /// Commits every revision the repository lacks, oldest first.
    async fn catch_up(&self) -> Result<(), Error> {
        let rows = self.db.call(|db| db.uncommitted_revisions()).await?;
        if rows.is_empty() {
            return Ok(());
        }
        self.repo.ensure().await.map_err(git)?;
        for row in rows {
            let parent = self.repo.head().await.map_err(git)?;
            let before = match &parent {
                Some(parent) => self.repo.settings_at(parent).await.map_err(git)?,
                None => None,
            };
            // Already there: a repository found with HEAD at the same content (a legacy one) is that revision.
            // On top of a commit of ours, every revision is a commit, even one that changed nothing.
            let found = match (&parent, &before) {
                (Some(parent), Some(before)) if before == row.content.as_bytes() => {
                    let id = parent.clone();
                    !self.db.call(move |db| db.has_git_commit(&id)).await?
                }
                _ => false,
            };
            let commit = match &parent {
                Some(parent) if found => parent.clone(),
                _ => {
                    let message = self.message(&row, before.as_deref());
                    let author = Identity {
                        name: row.author.clone(),
                        email: format!("{}@config-leader.invalid", row.author),
                        at: row.at,
                    };
                    self.repo
                        .commit(row.content.as_bytes(), &author, &message, parent.as_deref())
                        .await
                        .map_err(git)?
                }
            };
            let revision = row.revision;
            let id = commit.clone();
            self.db
                .call(move |db| db.set_git_commit(revision, &id))
                .await?;
            tracing::info!(revision, commit, "settings revision committed");
        }
        Ok(())
    }

    /// The commit message of a revision: its message, or the settings it changed when saved without one;
    /// a hand edit says so.
    fn message(&self, row: &RevisionRow, before: Option<&[u8]>) -> String {
        let subject = if row.author == "disk" {
            format!(
                "{} (a hand edit of platform.yml, recorded by the leader)",
                row.message
            )
        } else if row.message == DEFAULT_MESSAGE {
            let names = changed_settings(before, &row.content);
            if names.is_empty() {
                row.message.clone()
            } else {
                format!("{}: {}", row.message, names.join(", "))
            }
        } else {
            row.message.clone()
        };
        format!(
            "{subject}\n\nSettings revision {} of config-leader, saved by {}.\n",
            row.revision, row.author
        )
    }

    /// Fetches the branch and brings both sides together: the branch ahead → its tip becomes a revision
    /// (when it renders); the leader ahead → pushed; both → reported as diverged, never forced.
    async fn follow_branch(&self, follow: &GitFollow, head: Option<String>, latest: i64) -> bool {
        let step = self.follow_step(follow, head, latest).await;
        let ok = step.is_ok();
        let mut status = self.lock();
        if let Some(branch) = status.branch.as_mut() {
            match step {
                Ok(Step { state, remote }) => {
                    branch.state = state.to_owned();
                    branch.remote_commit = remote;
                    branch.error = None;
                    branch.last_fetch = Some(pryv_daemon::now_unix_i64());
                    if state != "refused" {
                        branch.refused = None;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, remote = %follow.remote, "cannot sync the settings branch");
                    branch.state = "unreachable".to_owned();
                    branch.error = Some(err.to_string());
                }
            }
        }
        ok
    }

    async fn follow_step(
        &self,
        follow: &GitFollow,
        head: Option<String>,
        latest: i64,
    ) -> Result<Step, repo::GitError> {
        self.repo.set_remote(&follow.remote).await?;
        let Some(remote) = self.repo.fetch(&follow.branch).await? else {
            // An empty remote: the leader's history starts the branch.
            if head.is_some() {
                self.repo.push(&follow.branch).await?;
            }
            return Ok(Step::new("in-sync", head));
        };
        let remote_tip = Some(remote.clone());
        match head {
            Some(head) if head == remote => Ok(Step::new("in-sync", remote_tip)),
            Some(head) if self.repo.is_ancestor(&remote, &head).await? => {
                self.repo.push(&follow.branch).await?;
                tracing::info!(branch = %follow.branch, commit = %head, "pushed the leader's settings to the branch");
                Ok(Step::new("in-sync", Some(head)))
            }
            Some(head) if !self.repo.is_ancestor(&head, &remote).await? => {
                tracing::error!(branch = %follow.branch, leader = %head, remote = %remote,
                    "the settings branch and the leader's history diverged; merge the branch with the leader's commit (or reset it to it); the leader never forces a push");
                Ok(Step::new("diverged", remote_tip))
            }
            head => self.take_tip(&remote, head, latest).await,
        }
    }

    /// The branch is ahead: its tip becomes a revision, or is refused with every problem.
    async fn take_tip(
        &self,
        remote: &str,
        head: Option<String>,
        latest: i64,
    ) -> Result<Step, repo::GitError> {
        let refused_before = self.lock().branch.as_ref().and_then(|b| b.refused.clone());
        if refused_before.as_ref().is_some_and(|r| r.commit == remote) {
            return Ok(Step::new("refused", Some(remote.to_owned())));
        }
        let info = self.repo.info(remote).await?;
        let content = self.repo.settings_at(remote).await?;
        if let Some(content) = &content
            && self.is_latest(latest, content).await
        {
            // The same settings (a commit that changed something else, or a first start on a branch that
            // already holds them): no new revision, the latest one is that commit.
            self.repo.move_head(remote, head.as_deref()).await?;
            self.adopt(latest, remote).await;
            return Ok(Step::new("in-sync", Some(remote.to_owned())));
        }
        let problems = match content.map(String::from_utf8) {
            None => vec!["the commit has no platform.yml".to_owned()],
            Some(Err(_)) => vec!["platform.yml is not UTF-8 text".to_owned()],
            Some(Ok(text)) => match self.import(text, &info, latest).await {
                Ok(revision) => {
                    self.repo.move_head(remote, head.as_deref()).await?;
                    self.adopt(revision, remote).await;
                    self.audit(&info, revision).await;
                    tracing::info!(revision, commit = %remote, author = %info.author.name, "took the settings branch's commit as a new revision");
                    return Ok(Step::new("in-sync", Some(remote.to_owned())));
                }
                Err(problems) => problems,
            },
        };
        tracing::error!(commit = %remote, problems = ?problems, "the settings branch's commit is refused; followers keep the current settings");
        if let Some(branch) = self.lock().branch.as_mut() {
            branch.refused = Some(RefusedCommit {
                commit: remote.to_owned(),
                problems,
            });
        }
        Ok(Step::new("refused", Some(remote.to_owned())))
    }

    /// A revision from the branch, in the audit log (as a PUT is) and the changes counter.
    async fn audit(&self, info: &CommitInfo, revision: i64) {
        metrics::counter!(crate::metrics::SETTINGS_CHANGES, "kind" => "git").increment(1);
        let (actor, detail) = (
            info.author.name.clone(),
            format!("revision {revision}: commit {} ({})", info.id, info.subject),
        );
        tracing::info!(actor = %actor, action = "settings-git-commit", detail = %detail, "audit");
        let written = self
            .db
            .call(move |db| {
                db.audit(
                    pryv_daemon::now_unix_i64(),
                    &actor,
                    "settings-git-commit",
                    &detail,
                    "git",
                )
            })
            .await;
        if let Err(err) = written {
            tracing::error!(error = %err, "cannot write the audit log");
        }
    }

    /// Whether revision `latest` holds exactly `content`.
    async fn is_latest(&self, latest: i64, content: &[u8]) -> bool {
        let row = self.db.call(move |db| db.revision(latest)).await;
        matches!(row, Ok(Some(row)) if row.content.as_bytes() == content)
    }

    /// Revision `revision` is the branch's commit `commit` (kept when it already has one); what the history
    /// had before and git lacks stays out of git.
    async fn adopt(&self, revision: i64, commit: &str) {
        let commit = commit.to_owned();
        let adopted = self
            .db
            .call(move |db| {
                if db
                    .revision(revision)?
                    .is_some_and(|row| row.commit.is_none())
                {
                    db.set_git_commit(revision, &commit)?;
                }
                db.skip_uncommitted_before(revision)
            })
            .await;
        if let Err(err) = adopted {
            tracing::warn!(error = %err, revision, "cannot record the branch's commit in the history");
        }
    }

    async fn import(
        &self,
        text: String,
        info: &CommitInfo,
        latest: i64,
    ) -> Result<i64, Vec<String>> {
        let (author, message) = (info.author.name.clone(), info.subject.clone());
        match self
            .settings
            .import(text, author, message, info.id.clone(), latest)
            .await
        {
            Ok(revision) => Ok(revision),
            Err(Error::InvalidSettings(problems)) => Err(problems),
            Err(err) => Err(vec![err.to_string()]),
        }
    }
}

/// `config-leader check`: git missing, secrets the repository tracks, revisions not yet committed (read from
/// the database when there is one). Blocking: a CLI command.
#[allow(clippy::disallowed_methods)]
pub fn check(config: &Config) -> Vec<String> {
    let Some(git) = &config.git else {
        return Vec::new();
    };
    let dir = git.repo.display();
    let mut problems = Vec::new();
    let secrets: Vec<String> = [
        &config.path,
        &config.credentials_file,
        &config.database_path,
    ]
    .into_iter()
    .filter_map(|path| relative(&git.repo, path))
    .collect();
    let listed = std::process::Command::new("git")
        .arg("-C")
        .arg(&git.repo)
        .args(["ls-files", "--"])
        .args(&secrets)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output();
    match listed {
        Err(err) => problems.push(format!(
            "gitRepoPath: cannot run git ({err}): the settings history cannot be committed; install git"
        )),
        Ok(out) => {
            for file in String::from_utf8_lossy(&out.stdout).lines() {
                problems.push(format!(
                    "{dir}: the settings repository tracks {file}, which holds secrets; stop tracking it with: \
                     git -C {dir} rm --cached {file} && git -C {dir} commit -m 'Stop tracking secrets' (its past \
                     commits still hold it: rotate the secrets if the repository was shared)"
                ));
            }
        }
    }
    if config.database_path.join(crate::admin::db::FILE).is_file()
        && let Ok(db) = Db::open(&config.database_path, true)
        && db.blocking().repository_started().unwrap_or(false)
        && let Ok(behind) = db.blocking().uncommitted_count()
        && behind > 0
    {
        problems.push(format!(
            "{dir}: {behind} settings revision(s) are not yet in the settings repository; the leader retries \
             (GET /admin/status, settingsRepository.error, says why)"
        ));
    }
    problems
}

/// What a round of the followed branch found.
struct Step {
    state: &'static str,
    remote: Option<String>,
}

impl Step {
    fn new(state: &'static str, remote: Option<String>) -> Self {
        Self { state, remote }
    }
}

fn git(err: repo::GitError) -> Error {
    Error::Git(err.0)
}

/// `path` relative to `dir`, with `/` separators, when inside it.
fn relative(dir: &Path, path: &Path) -> Option<String> {
    let path = crate::config::lexical(path);
    let inside = path.strip_prefix(crate::config::lexical(dir)).ok()?;
    Some(
        inside
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/"),
    )
}

/// `GROUP.NAME` of every setting that differs (at most ten named).
fn changed_settings(before: Option<&[u8]>, after: &str) -> Vec<String> {
    let parse = |text: &str| pryv_render::PlatformFile::parse(text).unwrap_or_default();
    let before = before
        .map(|bytes| parse(&String::from_utf8_lossy(bytes)))
        .unwrap_or_default();
    let changes = crate::admin::settings::diff(&before, &parse(after));
    let mut names: Vec<String> = changes
        .iter()
        .map(|c| format!("{}.{}", c.group, c.name))
        .collect();
    if names.len() > 10 {
        let more = names.len() - 10;
        names.truncate(10);
        names.push(format!("and {more} more"));
    }
    names
}
