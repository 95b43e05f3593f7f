//! `config-follower.json`: one typed definition, written by the leader's `init` and read by the follower. The
//! legacy keys (`http`, `leader`, `paths`) come first; ours are optional. Every field is optional here: the
//! follower validates and fills defaults, the leader writes what it knows.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Port a follower listens on by default (`POST /notify`).
pub const FOLLOWER_DEFAULT_PORT: u16 = 6000;
/// Port the leader listens on by default (`GET /conf`, the admin API).
pub const LEADER_DEFAULT_PORT: u16 = 7000;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FollowerFile {
    #[serde(default)]
    pub http: Http,
    #[serde(default)]
    pub leader: Leader,
    #[serde(default)]
    pub paths: Paths,
    #[serde(default, skip_serializing_if = "is_default")]
    pub restart: Restart,
    #[serde(default, skip_serializing_if = "is_default")]
    pub watch: Watch,
    #[serde(default, skip_serializing_if = "is_default")]
    pub poll: Poll,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub validate: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub apply: Apply,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub metrics: Metrics,
    #[serde(default, skip_serializing_if = "is_default")]
    pub health: Health,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Http {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// A number or a string holding one (legacy files have both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Leader {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// More leaders serving the same platform (replicas), tried in turn after `url` when one cannot be
    /// reached, times out or answers 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// This follower's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Wait on the leader for changes (`GET /conf?wait=`) instead of only being notified: for machines the
    /// leader cannot reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_poll: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Paths {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_folder: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Restart {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Watch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Poll {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Apply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_removal_percent: Option<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

/// Health-gated apply: after a restart, wait for the restarted services to be healthy; revert otherwise.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// How long restarted services have to become healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_seconds: Option<u64>,
    /// Without a Docker healthcheck: how long a container must stay running, not restarting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_seconds: Option<u64>,
    /// Per service, an extra probe that must pass.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub probes: BTreeMap<String, Probe>,
}

/// `{"http": "http://127.0.0.1:80/"}` (any 2xx/3xx answer) or `{"tcp": "127.0.0.1:3000"}` (a connection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Probe {
    Http(String),
    Tcp(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl FollowerFile {
    /// Reads the file's JSON section by section: a section of the wrong shape is one problem (named) and the
    /// others are still read, so one mistake never hides the rest.
    pub fn from_json(text: &str) -> Result<(Self, Vec<String>), String> {
        let value: Value =
            serde_json::from_str(text).map_err(|err| format!("not valid JSON: {err}"))?;
        let Value::Object(object) = value else {
            return Err("the file must hold a JSON object".to_owned());
        };
        let mut problems = Vec::new();
        let file = Self {
            http: part(&object, "http", &mut problems),
            leader: part(&object, "leader", &mut problems),
            paths: part(&object, "paths", &mut problems),
            restart: part(&object, "restart", &mut problems),
            watch: part(&object, "watch", &mut problems),
            poll: part(&object, "poll", &mut problems),
            validate: part(&object, "validate", &mut problems),
            apply: part(&object, "apply", &mut problems),
            tls: part(&object, "tls", &mut problems),
            metrics: part(&object, "metrics", &mut problems),
            health: part(&object, "health", &mut problems),
        };
        Ok((file, problems))
    }
}

fn part<T: DeserializeOwned + Default>(
    object: &serde_json::Map<String, Value>,
    key: &str,
    problems: &mut Vec<String>,
) -> T {
    match object.get(key) {
        None | Some(Value::Null) => T::default(),
        Some(value) => serde_json::from_value(value.clone()).unwrap_or_else(|err| {
            problems.push(format!("{key}: {err}"));
            T::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_what_is_set_and_reads_it_back() {
        let file = FollowerFile {
            http: Http {
                ip: Some("0.0.0.0".into()),
                port: Some(FOLLOWER_DEFAULT_PORT.into()),
            },
            leader: Leader {
                url: Some("http://leader:7000".into()),
                auth: Some("key".into()),
                ..Leader::default()
            },
            paths: Paths {
                data_folder: Some("../../pryv/".into()),
            },
            ..FollowerFile::default()
        };
        let text = serde_json::to_string(&file).unwrap();
        assert_eq!(
            text,
            r#"{"http":{"ip":"0.0.0.0","port":6000},"leader":{"url":"http://leader:7000","auth":"key"},"paths":{"dataFolder":"../../pryv/"}}"#
        );
        assert_eq!(FollowerFile::from_json(&text).unwrap(), (file, Vec::new()));
    }

    #[test]
    fn a_section_of_the_wrong_shape_does_not_hide_the_others() {
        let (file, problems) = FollowerFile::from_json(
            r#"{"leader": "oops", "watch": {"enabled": "yes"}, "paths": {"dataFolder": "/var/pryv/pryv"}}"#,
        )
        .unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("leader:") && problems[1].starts_with("watch:"));
        assert_eq!(file.paths.data_folder.as_deref(), Some("/var/pryv/pryv"));
    }
}
