//! Places followers in waves: named ones, whole roles or zones, or a share of those not yet placed.

use crate::config::FollowerEntry;
use crate::error::Error;
use crate::follower_keys::FollowerId;

use super::model::{MemberState, Strategy, Wave, WaveMember, WaveSpec};

/// Places `targets` in waves (each follower once, empty waves dropped, the unplaced ones last).
pub(super) fn plan(
    strategy: &Strategy,
    targets: &[(FollowerId, FollowerEntry)],
) -> Result<Vec<Wave>, Error> {
    let mut placer = Placer {
        remaining: targets.iter().map(|(_, f)| f).collect(),
        groups: Vec::new(),
    };
    match &strategy.waves {
        Some(specs) => placer.place_specs(specs)?,
        None => placer.place_batches(strategy),
    }
    let rest = std::mem::take(&mut placer.remaining);
    placer.groups.push(rest);
    Ok(placer
        .groups
        .into_iter()
        .filter(|g| !g.is_empty())
        .map(wave_of)
        .collect())
}

/// Followers not placed yet, and the groups placed so far (in wave order).
struct Placer<'a> {
    remaining: Vec<&'a FollowerEntry>,
    groups: Vec<Vec<&'a FollowerEntry>>,
}

impl<'a> Placer<'a> {
    /// Moves the remaining followers `pick` chooses (by position among the remaining) into a new group.
    fn take(&mut self, pick: &dyn Fn(usize, &FollowerEntry) -> bool) {
        type Placed<'a> = Vec<(usize, &'a FollowerEntry)>;
        let (chosen, rest): (Placed<'a>, Placed<'a>) = self
            .remaining
            .iter()
            .copied()
            .enumerate()
            .partition(|(index, f)| pick(*index, f));
        self.remaining = rest.into_iter().map(|(_, f)| f).collect();
        self.groups
            .push(chosen.into_iter().map(|(_, f)| f).collect());
    }

    /// Explicit waves: named followers, whole roles, or a share of all the targets.
    fn place_specs(&mut self, specs: &[WaveSpec]) -> Result<(), Error> {
        let total = self.remaining.len();
        for spec in specs {
            match spec {
                WaveSpec::Followers { followers } => {
                    self.take(&|_, f| followers.iter().any(|p| matches(p, f)));
                }
                WaveSpec::Roles { roles } => self.take(&|_, f| roles.contains(&f.role)),
                WaveSpec::Zones { zones } => {
                    self.take(&|_, f| f.zone.as_ref().is_some_and(|z| zones.contains(z)));
                }
                WaveSpec::Percent { percent } => {
                    if *percent == 0 || *percent > 100 {
                        return Err(Error::BadRequest(format!(
                            "waves: percent {percent} must be between 1 and 100"
                        )));
                    }
                    let count = (total * usize::from(*percent)).div_ceil(100).max(1);
                    self.take(&|index, _| index < count);
                }
            }
        }
        Ok(())
    }

    /// A canary wave, then batches of `batchSize` (no batch size: the rest in one wave).
    fn place_batches(&mut self, strategy: &Strategy) {
        let canary = strategy.canary.unwrap_or(0);
        if canary > 0 {
            self.take(&|index, _| index < canary);
        }
        let batch = strategy.batch_size.unwrap_or(usize::MAX).max(1);
        while !self.remaining.is_empty() && batch != usize::MAX {
            self.take(&|index, _| index < batch);
        }
    }
}

fn wave_of(followers: Vec<&FollowerEntry>) -> Wave {
    Wave {
        followers: followers
            .into_iter()
            .map(|f| WaveMember {
                url: f.url.clone(),
                name: f.name.clone(),
                role: f.role.clone(),
                zone: f.zone.clone(),
                variant: (!f.variant.is_plain()).then(|| f.variant.key().to_owned()),
                state: MemberState::Pending,
                detail: None,
            })
            .collect(),
        started: None,
        finished: None,
    }
}

/// A follower named by `pattern`: its name, its URL, or a URL pattern where `*` matches anything.
pub(crate) fn matches(pattern: &str, follower: &FollowerEntry) -> bool {
    if follower.name.as_deref() == Some(pattern) || follower.url == pattern {
        return true;
    }
    pattern.contains('*') && glob(pattern, &follower.url)
}

fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = match parts.split_first() {
        Some(split) => split,
        None => return text.is_empty(),
    };
    let Some(mut tail) = text.strip_prefix(first) else {
        return false;
    };
    for (index, part) in rest.iter().enumerate() {
        let last = index == rest.len() - 1;
        if last {
            return tail.ends_with(part);
        }
        match tail.find(part) {
            Some(at) => tail = &tail[at + part.len()..],
            None => return false,
        }
    }
    tail.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower(name: &str, role: &str) -> (FollowerId, FollowerEntry) {
        let url = format!("http://{name}.example:6000");
        (
            FollowerId(0),
            FollowerEntry::plain("k", &url, role, Some(name)),
        )
    }

    fn in_zone(name: &str, zone: &str) -> (FollowerId, FollowerEntry) {
        let (id, mut f) = follower(name, "core");
        f.zone = Some(zone.to_owned());
        f.variant = crate::variant::Variant::new("core", Some(zone), Default::default());
        (id, f)
    }

    #[test]
    fn zone_waves_take_the_followers_of_those_zones_with_their_variant() {
        let fleet = [
            in_zone("a", "eu"),
            in_zone("b", "us"),
            in_zone("c", "eu"),
            follower("d", "core"),
        ];
        let strategy: Strategy = serde_json::from_value(serde_json::json!({
            "waves": [{"zones": ["eu"]}, {"zones": ["us"]}]
        }))
        .unwrap();
        let waves = plan(&strategy, &fleet).unwrap();
        assert_eq!(names(&waves), [vec!["a", "c"], vec!["b"], vec!["d"]]);
        assert_eq!(waves[0].followers[0].target_key(), "core@eu");
        assert_eq!(waves[1].followers[0].zone.as_deref(), Some("us"));
        assert_eq!(waves[2].followers[0].target_key(), "core");
        assert_eq!(waves[2].followers[0].variant, None);
    }

    fn names(waves: &[Wave]) -> Vec<Vec<String>> {
        waves
            .iter()
            .map(|w| {
                w.followers
                    .iter()
                    .map(|m| m.name.clone().unwrap_or_default())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn waves_place_each_follower_once_and_the_rest_last() {
        let fleet = [
            follower("a", "core"),
            follower("b", "core"),
            follower("c", "reg-master"),
            follower("d", "static"),
        ];
        let strategy: Strategy = serde_json::from_value(serde_json::json!({
            "waves": [{"followers": ["b"]}, {"roles": ["core", "reg-master"]}]
        }))
        .unwrap();
        assert_eq!(
            names(&plan(&strategy, &fleet).unwrap()),
            [vec!["b"], vec!["a", "c"], vec!["d"]]
        );
        let canary: Strategy =
            serde_json::from_value(serde_json::json!({"canary": 1, "batchSize": 2})).unwrap();
        assert_eq!(
            names(&plan(&canary, &fleet).unwrap()),
            [vec!["a"], vec!["b", "c"], vec!["d"]]
        );
        let percent: Strategy = serde_json::from_value(
            serde_json::json!({"waves": [{"percent": 25}, {"percent": 50}]}),
        )
        .unwrap();
        assert_eq!(
            names(&plan(&percent, &fleet).unwrap()),
            [vec!["a"], vec!["b", "c"], vec!["d"]]
        );
        let zero: Strategy =
            serde_json::from_value(serde_json::json!({"waves": [{"percent": 0}]})).unwrap();
        assert!(plan(&zero, &fleet).is_err());
    }

    #[test]
    fn url_patterns() {
        let (_, f) = follower("core-1", "core");
        assert!(matches("core-1", &f));
        assert!(matches("http://core-1.example:6000", &f));
        assert!(matches("http://core-*", &f));
        assert!(matches("*:6000", &f));
        assert!(matches("*core*example*", &f));
        assert!(!matches("http://reg-*", &f));
        assert!(!matches("core", &f));
    }
}
