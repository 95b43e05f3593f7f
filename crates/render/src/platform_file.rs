//! The `platform.yml` model: `vars: GROUP: { name, description, settings: { NAME: { value, ... } } }`.
//! Keys we do not use are kept (`extra`) so that writing the file back loses nothing.
//!
//! `zones: ZONE: { vars: GROUP: { settings: { NAME: { value } } } }` beside `vars` holds what a zone (a
//! compliance region: its SMTP server, its hosting names) overrides; clients that edit `vars` only (the
//! admin web app) never see it and never drop it.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// The whole `platform.yml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlatformFile {
    /// Groups of settings, in file order.
    #[serde(default)]
    pub vars: IndexMap<String, Group>,
    /// Per-zone overrides of settings of `vars`, in file order.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub zones: IndexMap<String, Zone>,
    /// Top-level keys other than `vars` and `zones`, kept as they are.
    #[serde(flatten)]
    pub extra: IndexMap<String, Value>,
}

/// A group of settings, shown together to operators.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub settings: IndexMap<String, Setting>,
    #[serde(flatten)]
    pub extra: IndexMap<String, Value>,
}

/// What one zone overrides: the same group/setting/value shape as `vars`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    #[serde(default)]
    pub vars: IndexMap<String, Group>,
    #[serde(flatten)]
    pub extra: IndexMap<String, Value>,
}

impl Zone {
    /// Every override as `(group, name, value)`, in file order.
    pub fn settings(&self) -> impl Iterator<Item = (&str, &str, &Value)> {
        self.vars.iter().flat_map(|(group, g)| {
            g.settings
                .iter()
                .map(move |(name, s)| (group.as_str(), name.as_str(), &s.value))
        })
    }
}

/// One platform variable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    /// Any YAML value; a missing value is `null`.
    #[serde(default)]
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    #[serde(flatten)]
    pub extra: IndexMap<String, Value>,
}

impl PlatformFile {
    /// Parses the YAML text of a `platform.yml`. A file without a single setting (empty, truncated, or
    /// `vars:` alone) is an error: rendering with it would send every template with its raw variable names.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let parsed: Option<Self> = if text.trim().is_empty() {
            None
        } else {
            crate::check_yaml_shape(text).map_err(|err| Error::Platform(err.to_string()))?;
            serde_yaml_ng::from_str(text).map_err(|err| Error::Platform(err.to_string()))?
        };
        let platform = parsed.unwrap_or_default();
        platform.ensure_settings()?;
        Ok(platform)
    }

    /// An error when the platform has no setting at all.
    pub fn ensure_settings(&self) -> Result<(), Error> {
        if self.settings().next().is_none() {
            return Err(Error::Platform(
                "no settings at all (an empty or truncated file?); the previous configuration stays in \
                 service until the file has its settings again"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// Serializes back to YAML (comments are not kept; names, descriptions and unknown keys are).
    pub fn to_yaml(&self) -> Result<String, Error> {
        serde_yaml_ng::to_string(self).map_err(|err| Error::Platform(err.to_string()))
    }

    /// Every variable as `(group, name, value)`, in file order.
    pub fn settings(&self) -> impl Iterator<Item = (&str, &str, &Value)> {
        self.vars.iter().flat_map(|(group, g)| {
            g.settings
                .iter()
                .map(move |(name, s)| (group.as_str(), name.as_str(), &s.value))
        })
    }

    /// Whether `vars` has a setting called `name`.
    pub fn has_setting(&self, name: &str) -> bool {
        self.vars.values().any(|g| g.settings.contains_key(name))
    }

    /// What is wrong with the zones, one sentence each naming the zone and the setting: a zone name that is
    /// not a plain word, an override of a setting `vars` does not have (a typo would silently not apply).
    pub fn zone_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (zone, overrides) in &self.zones {
            if !is_zone_name(zone) {
                problems.push(format!(
                    "zones.{zone}: a zone name is letters, digits, '-' and '_' only"
                ));
            }
            for (group, name, _) in overrides.settings() {
                if !self.has_setting(name) {
                    problems.push(format!(
                        "zones.{zone}.vars.{group}.{name}: there is no setting {name} in vars; a zone only \
                         overrides settings of vars (add it there first, or fix the name)"
                    ));
                }
            }
        }
        problems
    }

    /// `(group, name)` of every variable whose value is exactly `placeholder` (e.g. `REPLACE_ME`).
    pub fn settings_equal_to(&self, placeholder: &str) -> Vec<(String, String)> {
        self.settings()
            .filter(|(_, _, value)| value.as_str() == Some(placeholder))
            .map(|(group, name, _)| (group.to_owned(), name.to_owned()))
            .collect()
    }
}

/// A zone's name: what `config-leader.json` and the admin API name it by.
pub fn is_zone_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
vars:
  MACHINES_AND_PLATFORM_SETTINGS:
    name: "Machines and platform settings"
    settings:
      DOMAIN:
        value: pryv.me
        description: "Domain of the platform"
      HOSTINGS_AND_CORES:
        description: "Cores per hosting"
        value: { hosting1: { co1: { ip: 10.0.0.1 } } }
  EMAIL:
    settings:
      MAIL_SMTP_PORT:
        value: 587
      MAIL_SMTP_HOST:
        value: REPLACE_ME
        optional: true
        custom: kept
"#;

    #[test]
    fn parses_groups_settings_and_any_values() {
        let platform = PlatformFile::parse(SAMPLE).unwrap();
        let names: Vec<_> = platform.settings().map(|(_, n, _)| n).collect();
        assert_eq!(
            names,
            [
                "DOMAIN",
                "HOSTINGS_AND_CORES",
                "MAIL_SMTP_PORT",
                "MAIL_SMTP_HOST"
            ]
        );
        let hostings =
            &platform.vars["MACHINES_AND_PLATFORM_SETTINGS"].settings["HOSTINGS_AND_CORES"];
        assert_eq!(
            serde_json::to_string(&hostings.value).unwrap(),
            r#"{"hosting1":{"co1":{"ip":"10.0.0.1"}}}"#
        );
        assert_eq!(
            platform.settings_equal_to("REPLACE_ME"),
            [("EMAIL".to_owned(), "MAIL_SMTP_HOST".to_owned())]
        );
    }

    #[test]
    fn round_trip_keeps_names_descriptions_and_unknown_keys() {
        let platform = PlatformFile::parse(SAMPLE).unwrap();
        let again = PlatformFile::parse(&platform.to_yaml().unwrap()).unwrap();
        assert_eq!(platform, again);
        assert_eq!(
            again.vars["EMAIL"].settings["MAIL_SMTP_HOST"].extra["custom"],
            "kept"
        );
    }

    #[test]
    fn zones_round_trip_and_name_their_problems() {
        let text = format!(
            "{SAMPLE}zones:\n  eu:\n    vars:\n      EMAIL:\n        settings:\n          MAIL_SMTP_HOST:\n            value: smtp.eu\n          MAIL_SMTP_HOTS:\n            value: typo\n  'bad zone':\n    vars: {{}}\n"
        );
        let platform = PlatformFile::parse(&text).unwrap();
        let eu: Vec<_> = platform.zones["eu"].settings().map(|(_, n, _)| n).collect();
        assert_eq!(eu, ["MAIL_SMTP_HOST", "MAIL_SMTP_HOTS"]);
        assert!(!platform.extra.contains_key("zones"));
        let again = PlatformFile::parse(&platform.to_yaml().unwrap()).unwrap();
        assert_eq!(platform, again);
        let problems = platform.zone_problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("zones.eu.vars.EMAIL.MAIL_SMTP_HOTS"));
        assert!(problems[1].starts_with("zones.bad zone"));
        // Without zones, the file written back has no zones key.
        let plain = PlatformFile::parse(SAMPLE).unwrap();
        assert!(!plain.to_yaml().unwrap().contains("zones"));
    }

    #[test]
    fn bad_shape_is_reported() {
        let err = PlatformFile::parse("vars: [1, 2]").unwrap_err();
        assert!(matches!(err, Error::Platform(_)), "{err}");
        for empty in [
            "",
            "  \n",
            "vars:\n",
            "vars:\n  G:\n    settings: {}\n",
            "other: 1\n",
        ] {
            let err = PlatformFile::parse(empty).unwrap_err();
            assert!(err.to_string().contains("no settings"), "{empty:?}: {err}");
        }
    }
}
