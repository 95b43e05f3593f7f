//! The admin users and revoked tokens in etcd, shared by the replicas: a token issued by one replica is
//! accepted by all, a password or permission change on one ends the sessions everywhere.
//!
//! One key per user (`users/<name>`, JSON); every change is a compare-and-swap on the value read, retried a
//! few times when another replica changed the user in between, and moves the token generation on. A
//! revocation is a key under `revoked/` that etcd deletes when the token would have expired anyway (a lease).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::client::{Compare, Etcd, Op};
use crate::admin::db::UserRow;
use crate::error::Error;

const USERS: &str = "users/";
const REVOKED: &str = "revoked/";
/// Tries of one change when other replicas keep changing the same user.
const ATTEMPTS: usize = 5;

#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct StoredUser {
    username: String,
    password_hash: String,
    permissions: String,
    token_generation: i64,
    created_at: i64,
}

impl StoredUser {
    fn row(&self) -> UserRow {
        UserRow {
            username: self.username.clone(),
            password_hash: self.password_hash.clone(),
            permissions: self.permissions.clone(),
        }
    }
}

/// Which field a change sets.
pub enum UserChange {
    Password(String),
    Permissions(String),
}

pub struct SharedUsers {
    etcd: Arc<Etcd>,
}

fn decode(value: &[u8]) -> Result<StoredUser, Error> {
    serde_json::from_slice(value)
        .map_err(|err| Error::Etcd(format!("an admin user record that is not ours: {err}")))
}

impl SharedUsers {
    pub fn new(etcd: Arc<Etcd>) -> Self {
        Self { etcd }
    }

    async fn stored(&self, username: &str) -> Result<Option<(StoredUser, Vec<u8>)>, Error> {
        match self.etcd.get(&format!("{USERS}{username}")).await? {
            Some(kv) => Ok(Some((decode(&kv.value)?, kv.value))),
            None => Ok(None),
        }
    }

    pub async fn user(&self, username: &str) -> Result<Option<UserRow>, Error> {
        Ok(self.stored(username).await?.map(|(user, _)| user.row()))
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<UserRow>, Error> {
        let (kvs, _) = self.etcd.list(USERS).await?;
        kvs.iter()
            .map(|kv| decode(&kv.value).map(|user| user.row()))
            .collect()
    }

    pub async fn token_generation(&self, username: &str) -> Result<Option<i64>, Error> {
        Ok(self
            .stored(username)
            .await?
            .map(|(user, _)| user.token_generation))
    }

    /// Creates `user`; false when the name is taken.
    pub async fn insert(&self, user: &UserRow, now: i64) -> Result<bool, Error> {
        let stored = StoredUser {
            username: user.username.clone(),
            password_hash: user.password_hash.clone(),
            permissions: user.permissions.clone(),
            token_generation: i64::from(rand::random::<u32>()),
            created_at: now,
        };
        let key = format!("{USERS}{}", user.username);
        self.etcd
            .txn(
                &[Compare::Absent(key.clone())],
                &[Op::Put {
                    key,
                    value: serde_json::to_vec(&stored)?,
                }],
            )
            .await
    }

    /// Sets one field and moves the token generation on; false when there is no such user.
    pub async fn change(&self, username: &str, change: &UserChange) -> Result<bool, Error> {
        let key = format!("{USERS}{username}");
        for _ in 0..ATTEMPTS {
            let Some((mut user, read)) = self.stored(username).await? else {
                return Ok(false);
            };
            match change {
                UserChange::Password(hash) => user.password_hash.clone_from(hash),
                UserChange::Permissions(json) => user.permissions.clone_from(json),
            }
            user.token_generation += 1;
            let swapped = self
                .etcd
                .txn(
                    &[Compare::ValueIs(key.clone(), read)],
                    &[Op::Put {
                        key: key.clone(),
                        value: serde_json::to_vec(&user)?,
                    }],
                )
                .await?;
            if swapped {
                return Ok(true);
            }
        }
        Err(Error::Conflict(format!(
            "admin user '{username}' keeps being changed through other replicas; retry"
        )))
    }

    /// Deletes the user; false when there is none.
    pub async fn delete(&self, username: &str) -> Result<bool, Error> {
        let key = format!("{USERS}{username}");
        let Some((_, read)) = self.stored(username).await? else {
            return Ok(false);
        };
        self.etcd
            .txn(
                &[Compare::ValueIs(key.clone(), read)],
                &[Op::Delete { key }],
            )
            .await
    }

    /// Revokes token `jti` until `expires_at` (Unix seconds): etcd forgets it then.
    pub async fn revoke(&self, jti: &str, expires_at: i64, now: i64) -> Result<(), Error> {
        let lease = self.etcd.grant((expires_at - now).max(1)).await?;
        self.etcd
            .txn(
                &[],
                &[Op::PutLeased {
                    key: format!("{REVOKED}{jti}"),
                    value: expires_at.to_string().into_bytes(),
                    lease,
                }],
            )
            .await?;
        Ok(())
    }

    pub async fn is_revoked(&self, jti: &str) -> Result<bool, Error> {
        Ok(self.etcd.get(&format!("{REVOKED}{jti}")).await?.is_some())
    }
}
