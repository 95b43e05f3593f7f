//! Login tokens: JWT (HS256, 24 h) signed with the internal variable `configLeaderTokenSecret`, carrying the
//! user's name, permissions and token generation.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::INVALID_TOKEN;
use super::permissions::Permissions;
use crate::error::Error;
use crate::secret::{self, Secret};

/// Internal variable holding the token signing secret.
pub const TOKEN_SECRET_VAR: &str = "configLeaderTokenSecret";
/// Lifetime of login tokens.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

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
}
