//! Follower authentication: keys are looked up by their SHA-256 digest and confirmed with a constant-time
//! comparison, so neither the lookup nor the comparison leaks how much of a guessed key was right.

use std::collections::HashMap;

use axum::http::HeaderMap;
use pryv_protocol::{AUTH_HEADER, key_digest, key_from_authorization};

use crate::config::Follower;

/// Followers by key digest.
#[derive(Debug, Default)]
pub struct FollowerIndex {
    by_digest: HashMap<[u8; 32], Follower>,
}

impl FollowerIndex {
    pub fn new(followers: &[Follower]) -> Self {
        Self {
            by_digest: followers
                .iter()
                .map(|f| (key_digest(f.key.expose()), f.clone()))
                .collect(),
        }
    }

    /// The follower owning `key`, if any.
    pub fn find(&self, key: &str) -> Option<&Follower> {
        self.by_digest
            .get(&key_digest(key))
            .filter(|f| f.key.matches(key))
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// The key of a request: the `Authorization` header (raw or `Bearer`), else the `auth` query parameter.
pub fn request_key<'a>(headers: &'a HeaderMap, query_auth: Option<&'a str>) -> Option<&'a str> {
    headers
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(key_from_authorization)
        .filter(|k| !k.is_empty())
        .or(query_auth.filter(|k| !k.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn finds_only_exact_keys() {
        let index = FollowerIndex::new(&[Follower {
            key: Secret::new("key-1"),
            url: "http://a".into(),
            role: "core".into(),
        }]);
        assert_eq!(index.find("key-1").unwrap().role, "core");
        assert!(index.find("key-").is_none());
        assert!(index.find("key-12").is_none());
        assert!(index.find("").is_none());
    }
}
