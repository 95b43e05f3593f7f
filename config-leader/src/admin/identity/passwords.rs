//! Admin passwords: argon2id PHC hashes, and the rules for usernames and passwords.
// Blocking: argon2 hashing and file reads; called through spawn_blocking from the login and user routes, and at start-up.
#![allow(clippy::disallowed_methods)]

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::error::Error;
use crate::secret;

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
    fn usernames_and_passwords_are_checked() {
        assert!(validate_username("ada.l-1").is_ok());
        assert!(validate_username("a").is_err());
        assert!(validate_username("ada lovelace").is_err());
        assert!(validate_password("12345678").is_ok());
        assert!(validate_password("short").is_err());
    }
}
