//! Who is calling an admin route: the static admin key, or a logged-in admin user (JWT, HS256, 24 h, signed with
//! the internal variable `configLeaderTokenSecret`). Also: permissions, argon2id password hashes, the login
//! throttle and the emergency `initial_user`.
//!
//! Throttle rule: failed logins are counted per username and per client address; from the 5th consecutive
//! failure on either, further attempts are refused (429, `Retry-After`) until 2^(failures-5) seconds (at most
//! 15 minutes) have passed since the last failure. A success clears the username's count. A refused or failed
//! login always answers the same "invalid username or password", whether the user exists or not.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::secret::{self, Secret};

/// Name of the emergency account recreated at every start.
pub const INITIAL_USER: &str = "initial_user";
/// Internal variable holding the token signing secret.
pub const TOKEN_SECRET_VAR: &str = "configLeaderTokenSecret";
/// Lifetime of login tokens.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

const USER_PERMISSIONS: &[&str] = &[
    "read",
    "create",
    "delete",
    "resetPassword",
    "changePermissions",
];
const SETTINGS_PERMISSIONS: &[&str] = &["read", "update"];
const PLATFORM_USERS_PERMISSIONS: &[&str] = &["read", "delete", "modify"];
/// The one answer to a bad, expired or revoked token: the admin web app logs the operator out on exactly it.
pub const INVALID_TOKEN: &str = "Invalid token";
const FREE_FAILURES: u32 = 4;
const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
const MAX_TRACKED: usize = 100_000;

/// What an admin may do: `{"users": [...], "settings": [...], "platformUsers": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    #[serde(default)]
    pub users: BTreeSet<String>,
    #[serde(default)]
    pub settings: BTreeSet<String>,
    /// Pryv.io accounts administered through the register and the cores.
    #[serde(default, rename = "platformUsers")]
    pub platform_users: BTreeSet<String>,
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|p| (*p).to_owned()).collect()
}

impl Permissions {
    pub fn all() -> Self {
        Self {
            users: names(USER_PERMISSIONS),
            settings: names(SETTINGS_PERMISSIONS),
            platform_users: names(PLATFORM_USERS_PERMISSIONS),
        }
    }

    /// Every settings permission, none on users: what the static admin key grants.
    pub fn settings_only() -> Self {
        Self {
            settings: names(SETTINGS_PERMISSIONS),
            ..Self::default()
        }
    }

    /// Rejects unknown permission names, saying which are known.
    pub fn validate(&self) -> Result<(), Error> {
        let unknown: Vec<String> = self
            .users
            .iter()
            .filter(|p| !USER_PERMISSIONS.contains(&p.as_str()))
            .map(|p| format!("users:{p}"))
            .chain(
                self.settings
                    .iter()
                    .filter(|p| !SETTINGS_PERMISSIONS.contains(&p.as_str()))
                    .map(|p| format!("settings:{p}")),
            )
            .chain(
                self.platform_users
                    .iter()
                    .filter(|p| !PLATFORM_USERS_PERMISSIONS.contains(&p.as_str()))
                    .map(|p| format!("platformUsers:{p}")),
            )
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(Error::BadRequest(format!(
                "unknown permission(s) {}; known: users: {}; settings: {}; platformUsers: {}",
                unknown.join(", "),
                USER_PERMISSIONS.join(", "),
                SETTINGS_PERMISSIONS.join(", "),
                PLATFORM_USERS_PERMISSIONS.join(", ")
            )))
        }
    }

    /// Whether every permission of `other` is also held here.
    pub fn covers(&self, other: &Permissions) -> bool {
        other.users.is_subset(&self.users)
            && other.settings.is_subset(&self.settings)
            && other.platform_users.is_subset(&self.platform_users)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    pub fn from_json(text: &str) -> Self {
        serde_json::from_str(text).unwrap_or_default()
    }
}

/// One permission a route needs.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    Users(&'static str),
    Settings(&'static str),
    PlatformUsers(&'static str),
}

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

    /// Refuses with 403 unless the caller holds `need`.
    pub fn require(&self, need: Need) -> Result<(), Error> {
        let permissions = self.permissions();
        let (held, scope, name) = match need {
            Need::Users(name) => (permissions.users.contains(name), "users", name),
            Need::Settings(name) => (permissions.settings.contains(name), "settings", name),
            Need::PlatformUsers(name) => (
                permissions.platform_users.contains(name),
                "platformUsers",
                name,
            ),
        };
        if held {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "this needs the permission {scope}:{name}"
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

/// Claims of a login token. `username` and `permissions` are what the admin web app decodes to know who is
/// logged in and which pages to show; the leader itself checks the user's current permissions on each call.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub username: String,
    pub permissions: Permissions,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    /// The user's token generation when issued: a password, permission or account change moves it on.
    #[serde(rename = "gen")]
    pub generation: i64,
}

/// Signs and checks login tokens.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Tokens {
    pub fn new(secret: &str) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// A new token for `username`; returns (token, claims).
    pub fn issue(
        &self,
        username: &str,
        permissions: Permissions,
        generation: i64,
        now: i64,
    ) -> Result<(String, Claims), Error> {
        let claims = Claims {
            sub: username.to_owned(),
            username: username.to_owned(),
            permissions,
            generation,
            iat: now,
            exp: now + TOKEN_LIFETIME.as_secs() as i64,
            jti: secret::generate(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|err| Error::Internal(format!("cannot sign token: {err}")))?;
        Ok((token, claims))
    }

    /// The claims of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Result<Claims, Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|_| Error::Unauthenticated(INVALID_TOKEN.into()))
    }
}

/// argon2id PHC string of `password`.
pub fn hash_password(password: &str) -> Result<String, Error> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|err| Error::Internal(format!("cannot make a salt: {err}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| Error::Internal(format!("cannot hash password: {err}")))
}

/// Checks `password` against a PHC string; a malformed hash never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// A hash to verify against when the user does not exist, so both cases cost the same time.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&secret::generate()).unwrap_or_default())
}

/// Checks a username: 3 to 60 characters among letters, digits, `.`, `_`, `-`.
pub fn validate_username(username: &str) -> Result<(), Error> {
    let ok = (3..=60).contains(&username.len())
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(
            "username must be 3 to 60 characters among letters, digits, '.', '_' and '-'".into(),
        ))
    }
}

/// Checks a password: 8 to 256 characters.
pub fn validate_password(password: &str) -> Result<(), Error> {
    if (8..=256).contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(Error::BadRequest(
            "password must be 8 to 256 characters".into(),
        ))
    }
}

/// Counts failed logins per key (username or address).
#[derive(Debug, Default)]
pub struct Throttle(Mutex<HashMap<String, (u32, Instant)>>);

impl Throttle {
    /// Refuses while any of `keys` is locked.
    pub fn check(&self, keys: &[String]) -> Result<(), Error> {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in keys {
            if let Some((failures, last)) = map.get(key)
                && let Some(lock) = lock_for(*failures)
            {
                let elapsed = last.elapsed();
                if elapsed < lock {
                    return Err(Error::TooManyAttempts((lock - elapsed).as_secs().max(1)));
                }
            }
        }
        Ok(())
    }

    pub fn failed(&self, keys: &[String]) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Random usernames must not grow the map without bound: forget failures older than the longest lock.
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (_, last)| last.elapsed() < MAX_LOCK);
        }
        for key in keys {
            let entry = map.entry(key.clone()).or_insert((0, Instant::now()));
            entry.0 += 1;
            entry.1 = Instant::now();
        }
    }

    pub fn succeeded(&self, key: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}

fn lock_for(failures: u32) -> Option<Duration> {
    (failures > FREE_FAILURES).then(|| {
        let exponent = (failures - FREE_FAILURES - 1).min(10);
        Duration::from_secs(1u64 << exponent).min(MAX_LOCK)
    })
}

/// The token-signing secret: the internal variable, or (when absent) a per-process one, with a warning that
/// tokens will not survive a restart.
pub fn token_secret(internals: &crate::config::Internals) -> Secret {
    match internals.0.get(TOKEN_SECRET_VAR).and_then(|v| v.as_str()) {
        Some(value) if !value.is_empty() => Secret::new(value),
        _ => {
            tracing::warn!(
                variable = TOKEN_SECRET_VAR,
                "no token secret in internals; login tokens will not survive a restart (set it to \"SECRET\")"
            );
            Secret::new(secret::generate())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn tokens_round_trip_and_tampering_fails() {
        let tokens = Tokens::new("s3cret");
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let (token, claims) = tokens.issue("ada", Permissions::all(), 1, now).unwrap();
        assert_eq!(tokens.verify(&token).unwrap().jti, claims.jti);
        assert!(Tokens::new("other").verify(&token).is_err());
        let (expired, _) = tokens
            .issue(
                "ada",
                Permissions::all(),
                1,
                now - 2 * TOKEN_LIFETIME.as_secs() as i64,
            )
            .unwrap();
        assert!(tokens.verify(&expired).is_err());
    }

    #[test]
    fn permissions_validate_and_cover() {
        let all = Permissions::all();
        assert!(all.validate().is_ok());
        let read: Permissions = serde_json::from_str(r#"{"settings": ["read"]}"#).unwrap();
        assert!(all.covers(&read));
        assert!(!read.covers(&all));
        let bad: Permissions = serde_json::from_str(r#"{"users": ["fly"]}"#).unwrap();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("users:fly")
        );
    }

    #[test]
    fn throttle_locks_after_repeated_failures() {
        let throttle = Throttle::default();
        let keys = vec!["user:ada".to_owned()];
        for _ in 0..FREE_FAILURES + 1 {
            assert!(throttle.check(&keys).is_ok());
            throttle.failed(&keys);
        }
        assert!(matches!(
            throttle.check(&keys),
            Err(Error::TooManyAttempts(_))
        ));
        throttle.succeeded("user:ada");
        assert!(throttle.check(&keys).is_ok());
        assert_eq!(lock_for(5), Some(Duration::from_secs(1)));
        assert_eq!(lock_for(7), Some(Duration::from_secs(4)));
        assert_eq!(lock_for(40), Some(MAX_LOCK));
        assert_eq!(lock_for(4), None);
    }

    #[test]
    fn usernames_and_passwords_are_checked() {
        assert!(validate_username("ada.l-1").is_ok());
        assert!(validate_username("a").is_err());
        assert!(validate_username("ada lovelace").is_err());
        assert!(validate_password("12345678").is_ok());
        assert!(validate_password("short").is_err());
    }
}
