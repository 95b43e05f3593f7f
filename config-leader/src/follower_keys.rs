//! Follower authentication: keys are looked up by their SHA-256 digest and confirmed with a constant-time
//! comparison, so neither the lookup nor the comparison leaks how much of a guessed key was right.

use std::collections::HashMap;

use pryv_protocol::key_digest;

use crate::config::FollowerEntry;

/// A follower's position in the configuration: how the leader's fleet records refer to it (never by key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FollowerId(pub usize);

/// Followers in configuration order, and their positions by key digest and by (url, name).
#[derive(Debug, Default)]
pub struct FollowerIndex {
    followers: Vec<FollowerEntry>,
    by_digest: HashMap<[u8; 32], FollowerId>,
    by_address: HashMap<(String, Option<String>), FollowerId>,
}

impl FollowerIndex {
    pub fn new(followers: &[FollowerEntry]) -> Self {
        Self {
            followers: followers.to_vec(),
            by_digest: followers
                .iter()
                .enumerate()
                .map(|(index, f)| (key_digest(f.key.expose()), FollowerId(index)))
                .collect(),
            by_address: followers
                .iter()
                .enumerate()
                .map(|(index, f)| ((f.url.clone(), f.name.clone()), FollowerId(index)))
                .collect(),
        }
    }

    /// The follower at `url` named `name` (how rollouts and stored reports name a follower), without a scan.
    pub fn id_of(&self, url: &str, name: Option<&str>) -> Option<FollowerId> {
        self.by_address
            .get(&(url.to_owned(), name.map(str::to_owned)))
            .copied()
    }

    /// The follower owning `key`, with its position.
    pub fn find(&self, key: &str) -> Option<(FollowerId, &FollowerEntry)> {
        let id = *self.by_digest.get(&key_digest(key))?;
        let follower = self.followers.get(id.0)?;
        follower.key.matches(key).then_some((id, follower))
    }

    /// Every follower, in configuration order.
    pub fn all(&self) -> &[FollowerEntry] {
        &self.followers
    }

    /// Every follower with its id, in configuration order.
    pub fn with_ids(&self) -> impl Iterator<Item = (FollowerId, &FollowerEntry)> {
        self.followers
            .iter()
            .enumerate()
            .map(|(index, f)| (FollowerId(index), f))
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

    #[test]
    fn finds_only_exact_keys() {
        let index = FollowerIndex::new(&[FollowerEntry::plain("key-1", "http://a", "core", None)]);
        assert_eq!(index.find("key-1").unwrap().1.role, "core");
        assert!(index.find("key-").is_none());
        assert!(index.find("key-12").is_none());
        assert!(index.find("").is_none());
    }

    #[test]
    fn finds_a_follower_by_url_and_name() {
        let entry =
            |key: &str, name: Option<&str>| FollowerEntry::plain(key, "http://a", "core", name);
        let index = FollowerIndex::new(&[entry("key-1", None), entry("key-2", Some("b"))]);
        assert_eq!(index.id_of("http://a", None), Some(FollowerId(0)));
        assert_eq!(index.id_of("http://a", Some("b")), Some(FollowerId(1)));
        assert_eq!(index.id_of("http://a", Some("c")), None);
        assert_eq!(index.id_of("http://other", None), None);
    }
}
