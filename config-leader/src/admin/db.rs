//! The leader's embedded SQLite database (`<databasePath>/config-leader.sqlite`), eight tables: admin users
//! (`users`, with token generations), `revoked_tokens`, `settings_history`, `audit`, `follower_reports` (the
//! last apply report of each follower), `flags` (the held change), `rollouts` and `rollout_trees` (the exact
//! tree each rollout in force rolls out, per variant). One connection behind a
//! mutex: every statement is short, and the slow work (password hashing, rendering) happens outside it.
// Blocking: SQLite. The statements are `Conn`'s, handed out by `Db::call` (the async door) and `Db::blocking`
// (a disallowed method outside blocking code: settings work, report ingest, start-up).
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::error::Error;

pub const FILE: &str = "config-leader.sqlite";

/// Handle to the database. Its statements are methods of [`Conn`], the locked connection, which only
/// [`Db::call`] (the async door) and [`Db::blocking`] (for blocking code; a disallowed method elsewhere)
/// hand out: no statement can run on an async worker by mistake.
pub struct Db(Mutex<Connection>);

/// The connection, locked: every statement. Held for one statement or one `call`'s work.
pub struct Conn<'a>(MutexGuard<'a, Connection>);

/// An admin user as stored.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub username: String,
    pub password_hash: String,
    pub permissions: String,
}

/// The user fields that change after creation.
#[derive(Debug, Clone, Copy)]
enum UserField {
    PasswordHash,
    Permissions,
}

/// One settings revision.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RevisionRow {
    pub revision: i64,
    pub author: String,
    /// Unix seconds.
    pub at: i64,
    pub message: String,
    #[serde(skip)]
    pub content: String,
    /// The commit of the settings repository holding this revision (`gitRepoPath`), once committed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// A rollout's target tree of one variant, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutTree {
    pub variant: String,
    pub role: String,
    pub revision: String,
    pub files: i64,
    pub body: Vec<u8>,
}

/// One audit entry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub detail: String,
    pub remote: String,
}

/// The folder (0700 when created) and the database file (created 0600); an empty file where a database was.
fn prepare_files(folder: &Path, path: &Path, ran_before: bool) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let write = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Write { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder)
        .map_err(write(folder))?;
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() == 0 && ran_before => Err(Error::Database {
            path: path.to_owned(),
            problem: "is empty (0 bytes) although this leader ran here before (its credentials file exists): \
                      the settings history, admin users and audit are gone. Restore the file from a backup, or \
                      delete it to start with an empty database"
                .into(),
        }),
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map(drop)
            .map_err(write(path)),
        Err(source) => Err(Error::Io {
            action: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

/// The database and its `-wal`/`-shm` readable by the leader's user only (tightened on an older install).
fn private_files(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(
                |source| Error::Write {
                    path: file.clone(),
                    source,
                },
            )?;
        }
    }
    Ok(())
}

impl Db {
    /// The database's async door: runs `work` on a blocking thread (SQLite writes fsync), so no statement
    /// runs on an async worker.
    pub async fn call<T, F>(self: &Arc<Self>, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, Error> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || work(&db.blocking())).await?
    }

    /// The locked connection, for code already on a blocking thread (settings work, report ingest, start-up).
    /// Bind it for one statement (`db.blocking().user(..)`): two at once in one thread deadlock.
    pub fn blocking(&self) -> Conn<'_> {
        Conn(
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl Db {
    /// Opens (creating if needed) the database in `folder`: the folder 0700, the files 0600 (it holds password
    /// hashes and every platform.yml with its SMTP password). `ran_before` (this leader started here before):
    /// an empty database file then means lost history, refused. A file that is not a readable SQLite database
    /// is refused too ([`Error::Database`], exit 78), never replaced.
    pub fn open(folder: &Path, ran_before: bool) -> Result<Self, Error> {
        let path = folder.join(FILE);
        prepare_files(folder, &path, ran_before)?;
        let unreadable = |err: rusqlite::Error| Error::Database {
            path: path.clone(),
            problem: format!(
                "is not a readable SQLite database ({err}); restore it from a backup, or move it away to start \
                 with an empty one (settings history, admin users and audit are then lost)"
            ),
        };
        let connection = Connection::open(&path).map_err(unreadable)?;
        let verdict: String = connection
            .query_row("PRAGMA quick_check", [], |row| row.get(0))
            .map_err(unreadable)?;
        if verdict != "ok" {
            return Err(Error::Database {
                path: path.clone(),
                problem: format!(
                    "is damaged ({verdict}); restore it from a backup, or move it away to start with an empty one"
                ),
            });
        }
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 CREATE TABLE IF NOT EXISTS users (
                     username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, permissions TEXT NOT NULL,
                     created_at INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS revoked_tokens (jti TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS settings_history (
                     revision INTEGER PRIMARY KEY, author TEXT NOT NULL, at INTEGER NOT NULL,
                     message TEXT NOT NULL, content TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS audit (
                     id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL,
                     action TEXT NOT NULL, detail TEXT NOT NULL, remote TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS follower_reports (url TEXT PRIMARY KEY, report TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS flags (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS rollouts (
                     id INTEGER PRIMARY KEY AUTOINCREMENT, state TEXT NOT NULL, body TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS rollout_trees (
                     rollout INTEGER NOT NULL, variant TEXT NOT NULL, role TEXT NOT NULL,
                     revision TEXT NOT NULL, files INTEGER NOT NULL, body BLOB NOT NULL,
                     PRIMARY KEY (rollout, variant));",
            )
            .map_err(Error::Sql)?;
        // Columns added after the first release: a database from before gets them on open.
        for (table, column, definition) in [
            ("settings_history", "pending", "INTEGER NOT NULL DEFAULT 0"),
            ("users", "token_generation", "INTEGER NOT NULL DEFAULT 0"),
            // NULL: not yet in the settings repository; '': recorded before the repository existed.
            ("settings_history", "git_commit", "TEXT"),
        ] {
            add_column(&connection, table, column, definition)?;
        }
        private_files(&path)?;
        Ok(Self(Mutex::new(connection)))
    }
}

impl Conn<'_> {
    fn conn(&self) -> &Connection {
        &self.0
    }

    pub fn user(&self, username: &str) -> Result<Option<UserRow>, Error> {
        self.conn()
            .query_row(
                "SELECT username, password_hash, permissions FROM users WHERE username = ?1",
                params![username],
                user_row,
            )
            .optional()
            .map_err(Error::Sql)
    }

    pub fn users(&self) -> Result<Vec<UserRow>, Error> {
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT username, password_hash, permissions FROM users ORDER BY username")
            .map_err(Error::Sql)?;
        let rows = statement.query_map([], user_row).map_err(Error::Sql)?;
        rows.collect::<Result<_, _>>().map_err(Error::Sql)
    }

    /// Inserts a user; false if the name is taken.
    pub fn insert_user(&self, user: &UserRow, now: i64) -> Result<bool, Error> {
        let inserted = self
            .conn()
            .execute(
                "INSERT OR IGNORE INTO users (username, password_hash, permissions, created_at, token_generation)
                 VALUES (?1, ?2, ?3, ?4, abs(random() % 1000000000000))",
                params![user.username, user.password_hash, user.permissions, now],
            )
            .map_err(Error::Sql)?;
        Ok(inserted == 1)
    }

    /// Inserts or replaces a user (the emergency account at start). Every change of a user's password or
    /// permissions, and a new user of a deleted one's name, changes its token generation: the tokens issued
    /// before stop working.
    pub fn upsert_user(&self, user: &UserRow, now: i64) -> Result<(), Error> {
        self.conn()
            .execute(
                "INSERT INTO users (username, password_hash, permissions, created_at, token_generation)
                 VALUES (?1, ?2, ?3, ?4, abs(random() % 1000000000000))
                 ON CONFLICT(username) DO UPDATE SET password_hash = excluded.password_hash,
                 permissions = excluded.permissions, token_generation = token_generation + 1",
                params![user.username, user.password_hash, user.permissions, now],
            )
            .map_err(Error::Sql)?;
        Ok(())
    }

    pub fn set_password(&self, username: &str, hash: &str) -> Result<bool, Error> {
        self.change_user(username, UserField::PasswordHash, hash)
    }

    pub fn set_permissions(&self, username: &str, permissions: &str) -> Result<bool, Error> {
        self.change_user(username, UserField::Permissions, permissions)
    }

    /// Sets one field of a user and moves its token generation on (its sessions end); false if no such user.
    fn change_user(&self, username: &str, field: UserField, value: &str) -> Result<bool, Error> {
        let column = match field {
            UserField::PasswordHash => "password_hash",
            UserField::Permissions => "permissions",
        };
        let changed = self
            .conn()
            .execute(
                &format!(
                    "UPDATE users SET {column} = ?2, token_generation = token_generation + 1 WHERE username = ?1"
                ),
                params![username, value],
            )
            .map_err(Error::Sql)?;
        Ok(changed == 1)
    }

    pub fn delete_user(&self, username: &str) -> Result<bool, Error> {
        let deleted = self
            .conn()
            .execute("DELETE FROM users WHERE username = ?1", params![username])
            .map_err(Error::Sql)?;
        Ok(deleted == 1)
    }

    /// Revokes a token until it expires; also purges revocations of tokens that expired since.
    pub fn revoke(&self, jti: &str, expires_at: i64, now: i64) -> Result<(), Error> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM revoked_tokens WHERE expires_at < ?1",
            params![now],
        )
        .map_err(Error::Sql)?;
        conn.execute(
            "INSERT OR IGNORE INTO revoked_tokens (jti, expires_at) VALUES (?1, ?2)",
            params![jti, expires_at],
        )
        .map_err(Error::Sql)?;
        Ok(())
    }

    pub fn is_revoked(&self, jti: &str) -> Result<bool, Error> {
        self.conn()
            .query_row(
                "SELECT 1 FROM revoked_tokens WHERE jti = ?1",
                params![jti],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
            .map_err(Error::Sql)
    }

    pub fn latest_revision(&self) -> Result<Option<RevisionRow>, Error> {
        self.revision_where(
            "WHERE pending = 0 ORDER BY revision DESC LIMIT 1",
            params![],
        )
    }

    pub fn revision(&self, revision: i64) -> Result<Option<RevisionRow>, Error> {
        self.revision_where("WHERE pending = 0 AND revision = ?1", params![revision])
    }

    fn revision_where(
        &self,
        clause: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Option<RevisionRow>, Error> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT revision, author, at, message, content, git_commit FROM settings_history {clause}"
                ),
                args,
                revision_row,
            )
            .optional()
            .map_err(Error::Sql)
    }

    /// Every revision, newest first (without contents).
    pub fn revisions(&self) -> Result<Vec<RevisionRow>, Error> {
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT revision, author, at, message, '', git_commit FROM settings_history WHERE pending = 0 ORDER BY revision DESC")
            .map_err(Error::Sql)?;
        let rows = statement.query_map([], revision_row).map_err(Error::Sql)?;
        rows.collect::<Result<_, _>>().map_err(Error::Sql)
    }

    /// Appends a revision; returns its number.
    pub fn add_revision(
        &self,
        author: &str,
        at: i64,
        message: &str,
        content: &str,
    ) -> Result<i64, Error> {
        self.insert_revision(author, at, message, content, false)
    }

    /// Appends a revision not yet written to disk (invisible until [`Db::confirm_revision`]): recorded before
    /// the write so a crash between the two never credits the change to a hand edit.
    pub fn add_pending_revision(
        &self,
        author: &str,
        at: i64,
        message: &str,
        content: &str,
    ) -> Result<i64, Error> {
        self.insert_revision(author, at, message, content, true)
    }

    fn insert_revision(
        &self,
        author: &str,
        at: i64,
        message: &str,
        content: &str,
        pending: bool,
    ) -> Result<i64, Error> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO settings_history (revision, author, at, message, content, pending)
             VALUES ((SELECT COALESCE(MAX(revision), 0) + 1 FROM settings_history), ?1, ?2, ?3, ?4, ?5)",
            params![author, at, message, content, pending],
        )
        .map_err(Error::Sql)?;
        Ok(conn.last_insert_rowid())
    }

    /// The write of a pending revision succeeded.
    pub fn confirm_revision(&self, revision: i64) -> Result<(), Error> {
        self.conn()
            .execute(
                "UPDATE settings_history SET pending = 0 WHERE revision = ?1",
                params![revision],
            )
            .map(|_| ())
            .map_err(Error::Sql)
    }

    /// The write of a pending revision failed: forget it.
    pub fn drop_revision(&self, revision: i64) -> Result<(), Error> {
        self.conn()
            .execute(
                "DELETE FROM settings_history WHERE revision = ?1 AND pending = 1",
                params![revision],
            )
            .map(|_| ())
            .map_err(Error::Sql)
    }

    /// After a crash: pending revisions whose content is what is on disk were written (confirmed, with their
    /// author); the others never reached the disk (dropped).
    pub fn settle_pending_revisions(&self, on_disk: &str) -> Result<(), Error> {
        let conn = self.conn();
        conn.execute(
            "UPDATE settings_history SET pending = 0 WHERE pending = 1 AND content = ?1
             AND revision = (SELECT MAX(revision) FROM settings_history WHERE pending = 1)",
            params![on_disk],
        )
        .map_err(Error::Sql)?;
        conn.execute("DELETE FROM settings_history WHERE pending = 1", [])
            .map_err(Error::Sql)?;
        Ok(())
    }

    /// The revisions not yet committed to the settings repository, oldest first (with contents).
    pub fn uncommitted_revisions(&self) -> Result<Vec<RevisionRow>, Error> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT revision, author, at, message, content, git_commit FROM settings_history
                 WHERE pending = 0 AND git_commit IS NULL ORDER BY revision ASC",
            )
            .map_err(Error::Sql)?;
        let rows = statement.query_map([], revision_row).map_err(Error::Sql)?;
        rows.collect::<Result<_, _>>().map_err(Error::Sql)
    }

    /// How many revisions the settings repository lacks.
    pub fn uncommitted_count(&self) -> Result<i64, Error> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM settings_history WHERE pending = 0 AND git_commit IS NULL",
                [],
                |row| row.get(0),
            )
            .map_err(Error::Sql)
    }

    /// Whether a leader with a settings repository ran on this history (some revision has a commit mark).
    pub fn repository_started(&self) -> Result<bool, Error> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM settings_history WHERE git_commit IS NOT NULL",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(Error::Sql)
    }

    /// The revisions before `revision` not yet committed stay out of git (a followed branch's tip was adopted
    /// over them).
    pub fn skip_uncommitted_before(&self, revision: i64) -> Result<(), Error> {
        self.conn()
            .execute(
                "UPDATE settings_history SET git_commit = '' WHERE git_commit IS NULL AND pending = 0
                 AND revision < ?1",
                params![revision],
            )
            .map(|_| ())
            .map_err(Error::Sql)
    }

    /// Whether some revision is commit `commit` (a commit of ours, not one found in the repository).
    pub fn has_git_commit(&self, commit: &str) -> Result<bool, Error> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM settings_history WHERE git_commit = ?1",
                params![commit],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(Error::Sql)
    }

    /// Revision `revision` is commit `commit` of the settings repository.
    pub fn set_git_commit(&self, revision: i64, commit: &str) -> Result<(), Error> {
        self.conn()
            .execute(
                "UPDATE settings_history SET git_commit = ?2 WHERE revision = ?1",
                params![revision, commit],
            )
            .map(|_| ())
            .map_err(Error::Sql)
    }

    /// The first start with a settings repository: the history before it stays out of git (marked ''), the
    /// latest revision is committed as the repository's start.
    pub fn start_repository(&self) -> Result<(), Error> {
        if !self.repository_started()? {
            self.conn()
                .execute(
                    "UPDATE settings_history SET git_commit = '' WHERE pending = 0 AND revision <
                 (SELECT MAX(revision) FROM settings_history WHERE pending = 0)",
                    [],
                )
                .map_err(Error::Sql)?;
        }
        Ok(())
    }

    /// Whether a save is between its record and its write.
    pub fn has_pending_revision(&self) -> Result<bool, Error> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM settings_history WHERE pending = 1",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(Error::Sql)
    }

    /// The user's token generation: tokens carrying another one are no longer valid.
    pub fn token_generation(&self, username: &str) -> Result<Option<i64>, Error> {
        self.conn()
            .query_row(
                "SELECT token_generation FROM users WHERE username = ?1",
                params![username],
                |row| row.get(0),
            )
            .optional()
            .map_err(Error::Sql)
    }

    pub fn audit(
        &self,
        at: i64,
        actor: &str,
        action: &str,
        detail: &str,
        remote: &str,
    ) -> Result<(), Error> {
        self.conn()
            .execute(
                "INSERT INTO audit (at, actor, action, detail, remote) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![at, actor, action, detail, remote],
            )
            .map_err(Error::Sql)?;
        Ok(())
    }

    /// Keeps the last apply report of the follower at `url` (JSON).
    pub fn save_report(&self, url: &str, report: &str) -> Result<(), Error> {
        self.conn()
            .execute(
                "INSERT INTO follower_reports (url, report) VALUES (?1, ?2)
                 ON CONFLICT(url) DO UPDATE SET report = excluded.report",
                params![url, report],
            )
            .map_err(Error::Sql)?;
        Ok(())
    }

    /// Every follower's last report: `(url, JSON)`.
    pub fn reports(&self) -> Result<Vec<(String, String)>, Error> {
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT url, report FROM follower_reports")
            .map_err(Error::Sql)?;
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(Error::Sql)?;
        rows.collect::<Result<_, _>>().map_err(Error::Sql)
    }

    /// A switch kept across restarts (false when never set).
    pub fn flag(&self, name: &str) -> Result<bool, Error> {
        let value: Option<i64> = self
            .conn()
            .query_row(
                "SELECT value FROM flags WHERE name = ?1",
                params![name],
                |row| row.get(0),
            )
            .optional()
            .map_err(Error::Sql)?;
        Ok(value.unwrap_or(0) != 0)
    }

    pub fn set_flag(&self, name: &str, on: bool) -> Result<(), Error> {
        self.conn()
            .execute(
                "INSERT INTO flags (name, value) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                params![name, i64::from(on)],
            )
            .map_err(Error::Sql)?;
        Ok(())
    }

    /// A new rollout (its JSON); returns its id.
    pub fn insert_rollout(&self, state: &str, body: &str) -> Result<i64, Error> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO rollouts (state, body) VALUES (?1, ?2)",
            params![state, body],
        )
        .map_err(Error::Sql)?;
        Ok(conn.last_insert_rowid())
    }

    pub fn update_rollout(&self, id: i64, state: &str, body: &str) -> Result<(), Error> {
        self.conn()
            .execute(
                "UPDATE rollouts SET state = ?2, body = ?3 WHERE id = ?1",
                params![id, state, body],
            )
            .map_err(Error::Sql)?;
        Ok(())
    }

    /// The exact tree a rollout rolls out for one variant, kept with it so a restarted leader serves
    /// the same bytes to the followers of its started waves.
    pub fn insert_rollout_tree(&self, rollout: i64, tree: &RolloutTree) -> Result<(), Error> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO rollout_trees (rollout, variant, role, revision, files, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    rollout,
                    tree.variant,
                    tree.role,
                    tree.revision,
                    tree.files,
                    tree.body
                ],
            )
            .map_err(Error::Sql)?;
        Ok(())
    }

    /// The target trees of the rollouts `ids`; those of every other rollout are deleted (they ended).
    pub fn rollout_trees(&self, ids: &[i64]) -> Result<Vec<RolloutTree>, Error> {
        let conn = self.conn();
        let keep = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        conn.execute(
            &format!("DELETE FROM rollout_trees WHERE rollout NOT IN ({keep})"),
            [],
        )
        .map_err(Error::Sql)?;
        let mut statement = conn
            .prepare(
                "SELECT variant, role, revision, files, body FROM rollout_trees ORDER BY rollout",
            )
            .map_err(Error::Sql)?;
        let rows = statement
            .query_map([], |row| {
                Ok(RolloutTree {
                    variant: row.get(0)?,
                    role: row.get(1)?,
                    revision: row.get(2)?,
                    files: row.get(3)?,
                    body: row.get(4)?,
                })
            })
            .map_err(Error::Sql)?;
        rows.collect::<Result<_, _>>().map_err(Error::Sql)
    }

    /// The newest `limit` rollouts, newest first: `(id, JSON)`.
    pub fn rollouts(&self, limit: i64) -> Result<Vec<(i64, String)>, Error> {
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT id, body FROM rollouts ORDER BY id DESC LIMIT ?1")
            .map_err(Error::Sql)?;
        let rows = statement
            .query_map(params![limit], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(Error::Sql)?;
        rows.collect::<Result<_, _>>().map_err(Error::Sql)
    }

    /// Newest first.
    pub fn audit_entries(&self, limit: i64) -> Result<Vec<AuditRow>, Error> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT id, at, actor, action, detail, remote FROM audit ORDER BY id DESC LIMIT ?1",
            )
            .map_err(Error::Sql)?;
        let rows = statement
            .query_map(params![limit], |row| {
                Ok(AuditRow {
                    id: row.get(0)?,
                    at: row.get(1)?,
                    actor: row.get(2)?,
                    action: row.get(3)?,
                    detail: row.get(4)?,
                    remote: row.get(5)?,
                })
            })
            .map_err(Error::Sql)?;
        rows.collect::<Result<_, _>>().map_err(Error::Sql)
    }
}

/// Adds `column` to `table` unless it is there already.
fn add_column(
    connection: &Connection,
    table: &str,
    column: &str,
    definition: &str,
) -> Result<(), Error> {
    let exists: bool = connection
        .query_row(
            &format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
            params![column],
            |row| row.get::<_, i64>(0),
        )
        .map_err(Error::Sql)?
        > 0;
    if !exists {
        connection
            .execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))
            .map_err(Error::Sql)?;
    }
    Ok(())
}

fn user_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        username: row.get(0)?,
        password_hash: row.get(1)?,
        permissions: row.get(2)?,
    })
}

fn revision_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RevisionRow> {
    Ok(RevisionRow {
        revision: row.get(0)?,
        author: row.get(1)?,
        at: row.get(2)?,
        message: row.get(3)?,
        content: row.get(4)?,
        commit: row
            .get::<_, Option<String>>(5)?
            .filter(|commit| !commit.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn users_revisions_audit_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path(), false).unwrap();
            let user = UserRow {
                username: "ada".into(),
                password_hash: "h".into(),
                permissions: "{}".into(),
            };
            assert!(db.blocking().insert_user(&user, 1).unwrap());
            assert!(
                !db.blocking().insert_user(&user, 1).unwrap(),
                "names are unique"
            );
            assert_eq!(
                db.blocking()
                    .add_revision("disk", 1, "first", "a: 1")
                    .unwrap(),
                1
            );
            assert_eq!(
                db.blocking()
                    .add_revision("ada", 2, "second", "a: 2")
                    .unwrap(),
                2
            );
            db.blocking()
                .audit(3, "ada", "login", "", "127.0.0.1")
                .unwrap();
            db.blocking().revoke("jti-1", 100, 50).unwrap();
        }
        let db = Db::open(dir.path(), false).unwrap();
        assert_eq!(
            db.blocking().user("ada").unwrap().unwrap().password_hash,
            "h"
        );
        assert_eq!(
            db.blocking().latest_revision().unwrap().unwrap().content,
            "a: 2"
        );
        assert_eq!(db.blocking().revisions().unwrap().len(), 2);
        assert_eq!(db.blocking().audit_entries(10).unwrap()[0].action, "login");
        assert!(db.blocking().is_revoked("jti-1").unwrap());
        db.blocking().revoke("jti-2", 200, 150).unwrap();
        assert!(
            !db.blocking().is_revoked("jti-1").unwrap(),
            "expired revocations are purged"
        );
    }

    #[test]
    fn pending_revisions_are_invisible_and_settled_by_the_disk_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), false).unwrap();
        db.blocking()
            .add_revision("initial", 1, "first", "a")
            .unwrap();
        let written = db
            .blocking()
            .add_pending_revision("alice", 2, "change", "b")
            .unwrap();
        assert!(db.blocking().has_pending_revision().unwrap());
        assert_eq!(
            db.blocking().latest_revision().unwrap().unwrap().content,
            "a"
        );
        assert_eq!(db.blocking().revisions().unwrap().len(), 1);
        // The crash came after the write: the disk holds "b", alice keeps the credit.
        db.blocking().settle_pending_revisions("b").unwrap();
        let latest = db.blocking().latest_revision().unwrap().unwrap();
        assert_eq!(
            (latest.revision, latest.author.as_str()),
            (written, "alice")
        );

        // The crash came before the write: the record is dropped.
        db.blocking()
            .add_pending_revision("bob", 3, "lost", "c")
            .unwrap();
        db.blocking().settle_pending_revisions("b").unwrap();
        assert_eq!(
            db.blocking().latest_revision().unwrap().unwrap().author,
            "alice"
        );
        assert!(!db.blocking().has_pending_revision().unwrap());
    }

    #[test]
    fn every_change_of_a_user_changes_its_token_generation() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), false).unwrap();
        let user = UserRow {
            username: "u".into(),
            password_hash: "h".into(),
            permissions: "{}".into(),
        };
        db.blocking().insert_user(&user, 1).unwrap();
        let mut seen = vec![db.blocking().token_generation("u").unwrap().unwrap()];
        db.blocking().set_password("u", "h2").unwrap();
        seen.push(db.blocking().token_generation("u").unwrap().unwrap());
        db.blocking().set_permissions("u", "{}").unwrap();
        seen.push(db.blocking().token_generation("u").unwrap().unwrap());
        db.blocking().upsert_user(&user, 2).unwrap();
        seen.push(db.blocking().token_generation("u").unwrap().unwrap());
        db.blocking().delete_user("u").unwrap();
        assert_eq!(db.blocking().token_generation("u").unwrap(), None);
        db.blocking().insert_user(&user, 3).unwrap();
        seen.push(db.blocking().token_generation("u").unwrap().unwrap());
        let distinct: BTreeSet<i64> = seen.iter().copied().collect();
        assert_eq!(distinct.len(), seen.len(), "{seen:?}");
    }
}
