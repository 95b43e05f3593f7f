//! Follower authentication: keys are looked up by their SHA-256 digest and confirmed with a constant-time
//! comparison, so neither the lookup nor the comparison leaks how much of a guessed key was right.

use std::collections::HashMap;

use pryv_protocol::key_digest;

use crate::config::Follower;

/// Followers in configuration order, and their positions by key digest.
#[derive(Debug, Default)]
pub struct FollowerIndex {
    followers: Vec<Follower>,
    by_digest: HashMap<[u8; 32], usize>,
}

impl FollowerIndex {
    pub fn new(followers: &[Follower]) -> Self {
        Self {
            followers: followers.to_vec(),
            by_digest: followers
                .iter()
                .enumerate()
                .map(|(index, f)| (key_digest(f.key.expose()), index))
                .collect(),
        }
    }

    /// The follower owning `key`, with its position.
    pub fn find(&self, key: &str) -> Option<(usize, &Follower)> {
        let index = *self.by_digest.get(&key_digest(key))?;
        let follower = &self.followers[index];
        follower.key.matches(key).then_some((index, follower))
    }

    /// Every follower, in configuration order.
    pub fn all(&self) -> &[Follower] {
        &self.followers
    }

    pub fn len(&self) -> usize {
        self.followers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.followers.is_empty()
    }
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
            name: None,
        }]);
        assert_eq!(index.find("key-1").unwrap().1.role, "core");
        assert!(index.find("key-").is_none());
        assert!(index.find("key-12").is_none());
        assert!(index.find("").is_none());
    }
}
