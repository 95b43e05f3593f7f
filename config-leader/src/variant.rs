//! What a follower's tree depends on: its role, its zone and its own variables. Followers with equal
//! variants share one render, one revision and one ETag; a follower with neither zone nor variables is the
//! plain variant of its role, keyed by the role's name (so everything keyed by role before is unchanged).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// A (role, zone, own variables) the leader renders once.
#[derive(Debug, Clone)]
pub struct Variant {
    /// `core`, `core@eu`, `core@eu#1a2b3c4d` (a hash of the own variables): how caches, revisions,
    /// rollout targets and `/admin/status` name it.
    key: Arc<str>,
    role: Arc<str>,
    zone: Option<Arc<str>>,
    own: Arc<BTreeMap<String, Value>>,
}

impl PartialEq for Variant {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Variant {}
impl std::hash::Hash for Variant {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}
impl PartialOrd for Variant {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Variant {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

impl Variant {
    pub fn new(role: &str, zone: Option<&str>, own: BTreeMap<String, Value>) -> Self {
        let mut key = role.to_owned();
        if let Some(zone) = zone {
            key.push('@');
            key.push_str(zone);
        }
        if !own.is_empty() {
            // A BTreeMap serializes in name order: equal variables give equal keys.
            let canonical = serde_json::to_vec(&own).unwrap_or_default();
            let digest = Sha256::digest(&canonical);
            key.push('#');
            key.extend(digest[..4].iter().map(|b| format!("{b:02x}")));
        }
        Self {
            key: key.into(),
            role: role.into(),
            zone: zone.map(Into::into),
            own: Arc::new(own),
        }
    }

    /// The plain variant of `role`: no zone, no own variable.
    pub fn plain(role: &str) -> Self {
        Self::new(role, None, BTreeMap::new())
    }

    /// `core`, `core@eu`, `core@eu#1a2b3c4d`.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn role(&self) -> &str {
        &self.role
    }

    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    pub fn own(&self) -> &BTreeMap<String, Value> {
        &self.own
    }

    pub fn is_plain(&self) -> bool {
        self.zone.is_none() && self.own.is_empty()
    }

    /// What the variables depend on (not the role): followers of several roles in one zone share one
    /// renderer.
    pub fn vars_key(&self) -> &str {
        &self.key[self.role.len()..]
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn own(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn keys_name_role_zone_and_own_variables() {
        assert_eq!(Variant::plain("core").key(), "core");
        assert!(Variant::plain("core").is_plain());
        let eu = Variant::new("core", Some("eu"), BTreeMap::new());
        assert_eq!(eu.key(), "core@eu");
        assert_eq!(eu.vars_key(), "@eu");
        let a = Variant::new(
            "core",
            Some("eu"),
            own(&[("A", json!(1)), ("B", json!("x"))]),
        );
        let b = Variant::new(
            "core",
            Some("eu"),
            own(&[("B", json!("x")), ("A", json!(1))]),
        );
        assert_eq!(a, b, "the same variables in another order");
        assert!(a.key().starts_with("core@eu#") && a.key().len() == "core@eu#".len() + 8);
        let c = Variant::new("core", Some("eu"), own(&[("A", json!(2))]));
        assert_ne!(a, c);
        assert_eq!(
            Variant::new("static", Some("eu"), own(&[("A", json!(2))])).vars_key(),
            c.vars_key()
        );
    }
}
