//! Where the admin users and revoked tokens are kept: the database (one leader), or etcd (replicas, so a
//! token issued by one is accepted by all). With etcd the emergency account stays each replica's own, in its
//! database: it is recreated at every start with a password written to that machine's credentials file, and
//! one replica's start must not end the others' emergency access.

use std::sync::Arc;

use super::db::{Db, UserRow};
use super::identity::INITIAL_USER;
use crate::error::Error;
use crate::etcd::users::{SharedUsers, UserChange};
use pryv_daemon::now_unix_i64;

pub enum UserRecords {
    Local(Arc<Db>),
    Shared {
        db: Arc<Db>,
        users: Arc<SharedUsers>,
    },
}

impl UserRecords {
    /// The shared record of `username`, unless it is kept in the database.
    fn shared(&self, username: &str) -> Option<&SharedUsers> {
        match self {
            Self::Shared { users, .. } if username != INITIAL_USER => Some(users),
            _ => None,
        }
    }

    fn db(&self) -> &Arc<Db> {
        match self {
            Self::Local(db) | Self::Shared { db, .. } => db,
        }
    }

    pub async fn user(&self, username: &str) -> Result<Option<UserRow>, Error> {
        if let Some(shared) = self.shared(username) {
            return shared.user(username).await;
        }
        let name = username.to_owned();
        self.db().call(move |db| db.user(&name)).await
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<UserRow>, Error> {
        let local = self.db().call(|db| db.users()).await?;
        let Self::Shared { users, .. } = self else {
            return Ok(local);
        };
        let mut all: Vec<UserRow> = local
            .into_iter()
            .filter(|u| u.username == INITIAL_USER)
            .collect();
        all.extend(users.users().await?);
        all.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(all)
    }

    /// Creates a user; false when the name is taken.
    pub async fn insert(&self, user: UserRow) -> Result<bool, Error> {
        if let Some(shared) = self.shared(&user.username) {
            return shared.insert(&user, now_unix_i64()).await;
        }
        self.db()
            .call(move |db| db.insert_user(&user, now_unix_i64()))
            .await
    }

    pub async fn set_password(&self, username: &str, hash: String) -> Result<bool, Error> {
        if let Some(shared) = self.shared(username) {
            return shared.change(username, &UserChange::Password(hash)).await;
        }
        let name = username.to_owned();
        self.db()
            .call(move |db| db.set_password(&name, &hash))
            .await
    }

    pub async fn set_permissions(&self, username: &str, json: String) -> Result<bool, Error> {
        if let Some(shared) = self.shared(username) {
            return shared
                .change(username, &UserChange::Permissions(json))
                .await;
        }
        let name = username.to_owned();
        self.db()
            .call(move |db| db.set_permissions(&name, &json))
            .await
    }

    pub async fn delete(&self, username: &str) -> Result<bool, Error> {
        if let Some(shared) = self.shared(username) {
            return shared.delete(username).await;
        }
        let name = username.to_owned();
        self.db().call(move |db| db.delete_user(&name)).await
    }

    pub async fn token_generation(&self, username: &str) -> Result<Option<i64>, Error> {
        if let Some(shared) = self.shared(username) {
            return shared.token_generation(username).await;
        }
        let name = username.to_owned();
        self.db().call(move |db| db.token_generation(&name)).await
    }

    /// Revokes token `jti` until it expires (shared by every replica in etcd mode).
    pub async fn revoke(&self, jti: &str, expires_at: i64) -> Result<(), Error> {
        if let Self::Shared { users, .. } = self {
            return users.revoke(jti, expires_at, now_unix_i64()).await;
        }
        let jti = jti.to_owned();
        self.db()
            .call(move |db| db.revoke(&jti, expires_at, now_unix_i64()))
            .await
    }

    pub async fn is_revoked(&self, jti: &str) -> Result<bool, Error> {
        if let Self::Shared { users, .. } = self {
            return users.is_revoked(jti).await;
        }
        let jti = jti.to_owned();
        self.db().call(move |db| db.is_revoked(&jti)).await
    }
}
