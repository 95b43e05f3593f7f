//! Admin accounts: logging in and out, and the users' life cycle (create, permissions, passwords, delete)
//! under the rule for acting on another admin. The HTTP layer (`routes/login.rs`, `routes/users.rs`) parses,
//! calls these and answers.

use super::Admin;
use super::db::UserRow;
use super::identity::{self, Caller, INITIAL_USER, Permissions};
use crate::error::Error;
use crate::secret;
use pryv_daemon::now_unix_i64;

const BAD_CREDENTIALS: &str = "invalid username or password";

/// An admin user as the API shows it (never its password hash).
#[derive(Debug, Clone)]
pub struct Account {
    pub username: String,
    pub permissions: Permissions,
}

impl From<UserRow> for Account {
    fn from(row: UserRow) -> Self {
        Self {
            permissions: Permissions::from_json(&row.permissions),
            username: row.username,
        }
    }
}

/// A change of one's own password.
pub struct PasswordChange {
    pub old: String,
    pub new: String,
    /// The repeated new password the web app sends; when present it must equal `new`.
    pub check: Option<String>,
}

fn not_found(username: &str) -> Error {
    Error::NotFound(format!("no admin user '{username}'"))
}

fn grantable(caller: &Caller, wanted: &Permissions) -> Result<(), Error> {
    wanted.validate()?;
    if caller.permissions().covers(wanted) {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "you cannot grant permissions you do not hold".into(),
        ))
    }
}

#[allow(clippy::disallowed_methods)] // in spawn_blocking
async fn hash(password: String) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || identity::hash_password(&password)).await?
}

#[allow(clippy::disallowed_methods)] // in spawn_blocking
async fn verify(password: String, hash: String) -> Result<bool, Error> {
    Ok(tokio::task::spawn_blocking(move || identity::verify_password(&password, &hash)).await?)
}

impl Admin {
    /// Checks the credentials (throttled per user and per address, the same time for unknown users) and
    /// issues a token.
    #[allow(clippy::disallowed_methods)] // the verification runs in spawn_blocking
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        remote: &str,
    ) -> Result<String, Error> {
        let keys = [format!("user:{username}"), format!("addr:{remote}")];
        if let Err(throttled) = self.throttle.check(&keys) {
            metrics::counter!(crate::metrics::LOGINS, "outcome" => "throttled").increment(1);
            return Err(throttled);
        }
        if username == INITIAL_USER {
            // Recreated at start; its hash is made just after (off the start path).
            self.initial_user_ready().await?;
        }
        let user = self.users.user(username).await?;
        let password = password.to_owned();
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        // Verified even for unknown users, so both answers take the same time; the dummy hash (made at the
        // first unknown user) is made on the blocking thread too.
        let valid = tokio::task::spawn_blocking(move || {
            let hash = hash.unwrap_or_else(|| identity::dummy_hash().to_owned());
            identity::verify_password(&password, &hash)
        })
        .await?;
        let Some(user) = user.filter(|_| valid) else {
            metrics::counter!(crate::metrics::LOGINS, "outcome" => "failure").increment(1);
            self.throttle.failed(&keys);
            self.audit(username, "login-failed", "", remote).await;
            return Err(Error::Unauthenticated(BAD_CREDENTIALS.into()));
        };
        metrics::counter!(crate::metrics::LOGINS, "outcome" => "success").increment(1);
        self.throttle.succeeded(&keys[0]);
        let generation = self
            .users
            .token_generation(&user.username)
            .await?
            .unwrap_or(0);
        let permissions = Permissions::from_json(&user.permissions);
        let (token, _) =
            self.tokens
                .issue(&user.username, permissions, generation, now_unix_i64())?;
        self.audit(&user.username, "login", "", remote).await;
        Ok(token)
    }

    /// Revokes the caller's token (the admin key is not a session).
    pub async fn logout(&self, caller: &Caller, remote: &str) -> Result<(), Error> {
        let Caller::User {
            username,
            token_id,
            expires_at,
            ..
        } = caller
        else {
            return Err(Error::BadRequest(
                "the admin key is not a session; nothing to log out".into(),
            ));
        };
        self.users.revoke(token_id, *expires_at).await?;
        self.audit(username, "logout", "", remote).await;
        Ok(())
    }

    pub async fn accounts(&self) -> Result<Vec<Account>, Error> {
        let rows = self.users.users().await?;
        Ok(rows.into_iter().map(Account::from).collect())
    }

    pub async fn account(&self, username: &str) -> Result<Account, Error> {
        self.user_row(username).await.map(Account::from)
    }

    async fn user_row(&self, username: &str) -> Result<UserRow, Error> {
        self.users
            .user(username)
            .await?
            .ok_or_else(|| not_found(username))
    }

    /// Creates a user holding only permissions the caller holds; a password left out is generated and
    /// returned (once).
    pub async fn create_account(
        &self,
        caller: &Caller,
        remote: &str,
        account: Account,
        password: Option<String>,
    ) -> Result<Option<String>, Error> {
        identity::validate_username(&account.username)?;
        grantable(caller, &account.permissions)?;
        let (password, generated) = match password {
            Some(password) => {
                identity::validate_password(&password)?;
                (password, None)
            }
            None => {
                let password = secret::generate();
                (password.clone(), Some(password))
            }
        };
        let row = UserRow {
            username: account.username.clone(),
            password_hash: hash(password).await?,
            permissions: account.permissions.to_json(),
        };
        let created = self.users.insert(row).await?;
        if !created {
            return Err(Error::Conflict(format!(
                "admin user '{}' already exists",
                account.username
            )));
        }
        self.audit(&caller.name(), "user-create", &account.username, remote)
            .await;
        Ok(generated)
    }

    /// Replaces a user's permissions (only with permissions the caller holds, on a user holding no more).
    pub async fn set_account_permissions(
        &self,
        caller: &Caller,
        remote: &str,
        username: &str,
        permissions: &Permissions,
    ) -> Result<(), Error> {
        grantable(caller, permissions)?;
        self.may_act_on(caller, "user-permissions", username, remote)
            .await?;
        if !self
            .users
            .set_permissions(username, permissions.to_json())
            .await?
        {
            return Err(not_found(username));
        }
        self.audit(&caller.name(), "user-permissions", username, remote)
            .await;
        Ok(())
    }

    /// Gives a user a new random password, returned once.
    pub async fn reset_account_password(
        &self,
        caller: &Caller,
        remote: &str,
        username: &str,
    ) -> Result<String, Error> {
        self.may_act_on(caller, "user-reset-password", username, remote)
            .await?;
        let password = secret::generate();
        let hashed = hash(password.clone()).await?;
        if !self.users.set_password(username, hashed).await? {
            return Err(not_found(username));
        }
        self.audit(&caller.name(), "user-reset-password", username, remote)
            .await;
        Ok(password)
    }

    /// Changes the caller's own password (the old one required); the token in use is revoked.
    pub async fn change_own_password(
        &self,
        caller: &Caller,
        remote: &str,
        username: &str,
        change: PasswordChange,
    ) -> Result<(), Error> {
        let Caller::User {
            username: own,
            token_id,
            expires_at,
            ..
        } = caller
        else {
            return Err(Error::Forbidden(
                "log in as the user to change their password".into(),
            ));
        };
        if own != username {
            return Err(Error::Forbidden(
                "you can only change your own password".into(),
            ));
        }
        if change
            .check
            .as_ref()
            .is_some_and(|check| check != &change.new)
        {
            return Err(Error::BadRequest(
                "newPasswordCheck differs from newPassword; type the same new password twice"
                    .into(),
            ));
        }
        identity::validate_password(&change.new)?;
        let user = self.user_row(username).await?;
        if !verify(change.old, user.password_hash).await? {
            return Err(Error::Unauthenticated("the old password is wrong".into()));
        }
        let hashed = hash(change.new).await?;
        self.users.set_password(username, hashed).await?;
        self.users.revoke(token_id, *expires_at).await?;
        self.audit(username, "user-change-password", username, remote)
            .await;
        Ok(())
    }

    /// Deletes a user holding no more than the caller; never the emergency account (recreated at start).
    pub async fn delete_account(
        &self,
        caller: &Caller,
        remote: &str,
        username: &str,
    ) -> Result<(), Error> {
        if username == INITIAL_USER {
            return Err(Error::BadRequest(format!(
                "{INITIAL_USER} is the emergency account; it cannot be deleted"
            )));
        }
        self.may_act_on(caller, "user-delete", username, remote)
            .await?;
        if !self.users.delete(username).await? {
            return Err(not_found(username));
        }
        self.audit(&caller.name(), "user-delete", username, remote)
            .await;
        Ok(())
    }

    /// The rule for acting on another admin: the target's permissions must be a subset of the caller's, and
    /// the emergency account is acted on by nobody but itself. A refusal is audited (`<action>-refused`).
    async fn may_act_on(
        &self,
        caller: &Caller,
        action: &str,
        username: &str,
        remote: &str,
    ) -> Result<(), Error> {
        let target = self.account(username).await?;
        let is_self = matches!(caller, Caller::User { username: own, .. } if own == username);
        let refusal = if username == INITIAL_USER && !is_self {
            format!(
                "{INITIAL_USER} is the emergency account; only {INITIAL_USER} itself may do this"
            )
        } else if !caller.permissions().covers(&target.permissions) {
            format!(
                "'{username}' holds permissions you do not hold; only an admin holding all of them may do this"
            )
        } else {
            return Ok(());
        };
        self.audit(
            &caller.name(),
            &format!("{action}-refused"),
            username,
            remote,
        )
        .await;
        Err(Error::Forbidden(refusal))
    }
}
