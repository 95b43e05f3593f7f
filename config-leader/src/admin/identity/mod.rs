//! Who is calling an admin route: the static admin key, or a logged-in admin user, and whether it may. The
//! pieces: [`permissions`] (typed), [`tokens`] (JWT), [`passwords`] (argon2id and the rules), [`throttle`]
//! (failed logins). A refused or failed login always answers the same "invalid username or password",
//! whether the user exists or not.

pub mod passwords;
pub mod permissions;
pub mod throttle;
pub mod tokens;

pub use passwords::{
    dummy_hash, hash_password, validate_password, validate_username, verify_password,
};
pub use permissions::{Permission, Permissions};
pub use throttle::Throttle;
pub use tokens::{Claims, TOKEN_LIFETIME, TOKEN_SECRET_VAR, Tokens, token_secret};

use crate::error::Error;

/// Name of the emergency account recreated at every start.
pub const INITIAL_USER: &str = "initial_user";
/// The one answer to a bad, expired or revoked token: the admin web app logs the operator out on exactly it.
pub const INVALID_TOKEN: &str = "Invalid token";

/// The authenticated caller of an admin route.
#[derive(Debug, Clone)]
pub enum Caller {
    AdminKey,
    User {
        username: String,
        permissions: Permissions,
        token_id: String,
        expires_at: i64,
    },
}

impl Caller {
    pub fn permissions(&self) -> Permissions {
        match self {
            Caller::AdminKey => Permissions::settings_only(),
            Caller::User { permissions, .. } => permissions.clone(),
        }
    }

    /// Refuses with 403 unless the caller holds `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), Error> {
        if self.permissions().holds(permission) {
            Ok(())
        } else {
            let (group, name) = permission.parts();
            Err(Error::Forbidden(format!(
                "this needs the permission {group}:{name}"
            )))
        }
    }

    /// Name for the audit log.
    pub fn name(&self) -> String {
        match self {
            Caller::AdminKey => "admin-key".to_owned(),
            Caller::User { username, .. } => username.clone(),
        }
    }
}
