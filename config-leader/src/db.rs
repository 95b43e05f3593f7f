//! The leader's embedded SQLite database (`<databasePath>/config-leader.sqlite`): admin users, revoked
//! tokens, settings history and the audit log. One connection behind a mutex: every statement is short, and
//! the slow work (password hashing, rendering) happens outside it.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::error::Error;

const FILE: &str = "config-leader.sqlite";

/// Handle to the database.
pub struct Db(Mutex<Connection>);

/// An admin user as stored.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub username: String,
    pub password_hash: String,
    pub permissions: String,
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

fn sql(err: rusqlite::Error) -> Error {
    Error::Internal(format!("database: {err}"))
}

impl Db {
    /// Opens (creating if needed) the database in `folder`.
    pub fn open(folder: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(folder).map_err(|source| Error::Io {
            path: folder.to_owned(),
            source,
        })?;
        let connection = Connection::open(folder.join(FILE)).map_err(sql)?;
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
                     action TEXT NOT NULL, detail TEXT NOT NULL, remote TEXT NOT NULL);",
            )
            .map_err(sql)?;
        Ok(Self(Mutex::new(connection)))
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn user(&self, username: &str) -> Result<Option<UserRow>, Error> {
        self.conn()
            .query_row(
                "SELECT username, password_hash, permissions FROM users WHERE username = ?1",
                params![username],
                |row| {
                    Ok(UserRow {
                        username: row.get(0)?,
                        password_hash: row.get(1)?,
                        permissions: row.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(sql)
    }

    pub fn users(&self) -> Result<Vec<UserRow>, Error> {
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT username, password_hash, permissions FROM users ORDER BY username")
            .map_err(sql)?;
        let rows = statement
            .query_map([], |row| {
                Ok(UserRow {
                    username: row.get(0)?,
                    password_hash: row.get(1)?,
                    permissions: row.get(2)?,
                })
            })
            .map_err(sql)?;
        rows.collect::<Result<_, _>>().map_err(sql)
    }

    /// Inserts a user; false if the name is taken.
    pub fn insert_user(&self, user: &UserRow, now: i64) -> Result<bool, Error> {
        let inserted = self
            .conn()
            .execute(
                "INSERT OR IGNORE INTO users (username, password_hash, permissions, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![user.username, user.password_hash, user.permissions, now],
            )
            .map_err(sql)?;
        Ok(inserted == 1)
    }

    /// Inserts or replaces a user (the emergency account at start).
    pub fn upsert_user(&self, user: &UserRow, now: i64) -> Result<(), Error> {
        self.conn()
            .execute(
                "INSERT INTO users (username, password_hash, permissions, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(username) DO UPDATE SET password_hash = excluded.password_hash,
                 permissions = excluded.permissions",
                params![user.username, user.password_hash, user.permissions, now],
            )
            .map_err(sql)?;
        Ok(())
    }

    pub fn set_password(&self, username: &str, hash: &str) -> Result<bool, Error> {
        let changed = self
            .conn()
            .execute(
                "UPDATE users SET password_hash = ?2 WHERE username = ?1",
                params![username, hash],
            )
            .map_err(sql)?;
        Ok(changed == 1)
    }

    pub fn set_permissions(&self, username: &str, permissions: &str) -> Result<bool, Error> {
        let changed = self
            .conn()
            .execute(
                "UPDATE users SET permissions = ?2 WHERE username = ?1",
                params![username, permissions],
            )
            .map_err(sql)?;
        Ok(changed == 1)
    }

    pub fn delete_user(&self, username: &str) -> Result<bool, Error> {
        let deleted = self
            .conn()
            .execute("DELETE FROM users WHERE username = ?1", params![username])
            .map_err(sql)?;
        Ok(deleted == 1)
    }

    /// Revokes a token until it expires; also purges revocations of tokens that expired since.
    pub fn revoke(&self, jti: &str, expires_at: i64, now: i64) -> Result<(), Error> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM revoked_tokens WHERE expires_at < ?1",
            params![now],
        )
        .map_err(sql)?;
        conn.execute(
            "INSERT OR IGNORE INTO revoked_tokens (jti, expires_at) VALUES (?1, ?2)",
            params![jti, expires_at],
        )
        .map_err(sql)?;
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
            .map_err(sql)
    }

    pub fn latest_revision(&self) -> Result<Option<RevisionRow>, Error> {
        self.revision_where("ORDER BY revision DESC LIMIT 1", params![])
    }

    pub fn revision(&self, revision: i64) -> Result<Option<RevisionRow>, Error> {
        self.revision_where("WHERE revision = ?1", params![revision])
    }

    fn revision_where(
        &self,
        clause: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Option<RevisionRow>, Error> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT revision, author, at, message, content FROM settings_history {clause}"
                ),
                args,
                revision_row,
            )
            .optional()
            .map_err(sql)
    }

    /// Every revision, newest first (without contents).
    pub fn revisions(&self) -> Result<Vec<RevisionRow>, Error> {
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT revision, author, at, message, '' FROM settings_history ORDER BY revision DESC")
            .map_err(sql)?;
        let rows = statement.query_map([], revision_row).map_err(sql)?;
        rows.collect::<Result<_, _>>().map_err(sql)
    }

    /// Appends a revision; returns its number.
    pub fn add_revision(
        &self,
        author: &str,
        at: i64,
        message: &str,
        content: &str,
    ) -> Result<i64, Error> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO settings_history (revision, author, at, message, content)
             VALUES ((SELECT COALESCE(MAX(revision), 0) + 1 FROM settings_history), ?1, ?2, ?3, ?4)",
            params![author, at, message, content],
        )
        .map_err(sql)?;
        Ok(conn.last_insert_rowid())
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
            .map_err(sql)?;
        Ok(())
    }

    /// Newest first.
    pub fn audit_entries(&self, limit: i64) -> Result<Vec<AuditRow>, Error> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT id, at, actor, action, detail, remote FROM audit ORDER BY id DESC LIMIT ?1",
            )
            .map_err(sql)?;
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
            .map_err(sql)?;
        rows.collect::<Result<_, _>>().map_err(sql)
    }
}

fn revision_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RevisionRow> {
    Ok(RevisionRow {
        revision: row.get(0)?,
        author: row.get(1)?,
        at: row.get(2)?,
        message: row.get(3)?,
        content: row.get(4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_revisions_audit_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path()).unwrap();
            let user = UserRow {
                username: "ada".into(),
                password_hash: "h".into(),
                permissions: "{}".into(),
            };
            assert!(db.insert_user(&user, 1).unwrap());
            assert!(!db.insert_user(&user, 1).unwrap(), "names are unique");
            assert_eq!(db.add_revision("disk", 1, "first", "a: 1").unwrap(), 1);
            assert_eq!(db.add_revision("ada", 2, "second", "a: 2").unwrap(), 2);
            db.audit(3, "ada", "login", "", "127.0.0.1").unwrap();
            db.revoke("jti-1", 100, 50).unwrap();
        }
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(db.user("ada").unwrap().unwrap().password_hash, "h");
        assert_eq!(db.latest_revision().unwrap().unwrap().content, "a: 2");
        assert_eq!(db.revisions().unwrap().len(), 2);
        assert_eq!(db.audit_entries(10).unwrap()[0].action, "login");
        assert!(db.is_revoked("jti-1").unwrap());
        db.revoke("jti-2", 200, 150).unwrap();
        assert!(
            !db.is_revoked("jti-1").unwrap(),
            "expired revocations are purged"
        );
    }
}
