//! Upgrading `platform.yml` from one Pryv.io template version to the next, as the legacy leader does, from
//! data (`migrations.yml`): the chain of steps from the platform's `TEMPLATE_VERSION` to the template's, then
//! one pass: set the version, add what the template has and the platform lacks (template values), align
//! metadata (group names, setting descriptions and `optional`), run the value operations of every step
//! crossed in version order, drop what the template no longer has. Operator values that survive are kept.
//!
//! Two places where the legacy engine is wrong and this one is right: the 1.7.0 split keeps every custom stream
//! listed after `account` (the legacy one dropped them), and new settings take the target release's template
//! values (the legacy one used its own older copies). Pure: no I/O.

use std::cmp::Ordering;
use std::sync::OnceLock;

use pryv_render::{PlatformFile, Setting};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Error;

const STEPS: &str = include_str!("migrations.yml");
const VERSION_SETTING: &str = "TEMPLATE_VERSION";
const VERSION_GROUP: &str = "MISCELLANEOUS_SETTINGS";
const SINGLE_NODE_MARKER: &str = "SINGLE_MACHINE_IP_ADDRESS";

#[derive(Debug, Deserialize)]
struct StepFile {
    steps: Vec<Step>,
}

/// One upgrade step: from any of `from` to `to`, with its value operations.
#[derive(Debug, Clone, Deserialize)]
pub struct Step {
    pub from: Vec<String>,
    pub to: String,
    #[serde(default)]
    pub operations: Vec<Operation>,
}

/// A value operation (see `migrations.yml` for their meaning).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Operation {
    Unwrap(String),
    Set {
        path: String,
        value: Value,
    },
    Copy {
        from: String,
        to: String,
    },
    WrapInList {
        from: String,
        to: String,
        key: String,
    },
    SplitSystemStreams {
        from: String,
        account: String,
        other: String,
    },
}

/// A step as the admin web app reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    pub versions_from: Vec<String>,
    pub version_to: String,
}

/// Single node (the platform has `SINGLE_MACHINE_IP_ADDRESS`, or its templates a `singlenode` role and no `core`) or cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentType {
    Singlenode,
    Cluster,
}

/// The steps a platform needs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub deployment: DeploymentType,
    pub from_version: String,
    pub to_version: String,
}

impl Plan {
    pub fn views(&self) -> Vec<StepView> {
        self.steps
            .iter()
            .map(|s| StepView {
                versions_from: s.from.clone(),
                version_to: s.to.clone(),
            })
            .collect()
    }
}

fn steps() -> Result<&'static [Step], Error> {
    static PARSED: OnceLock<Result<Vec<Step>, String>> = OnceLock::new();
    PARSED
        .get_or_init(|| {
            // Through a JSON value: operations are maps `{name: arguments}`, not YAML tags.
            serde_yaml_ng::from_str::<Value>(STEPS)
                .map_err(|err| err.to_string())
                .and_then(|value| {
                    serde_json::from_value::<StepFile>(value).map_err(|err| err.to_string())
                })
                .map(|f| f.steps)
        })
        .as_deref()
        .map_err(|err| Error::Internal(format!("migrations.yml: {err}")))
}

/// Compares dotted versions numerically (`1.6.10` > `1.6.9`); a non-numeric part compares as text.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |v: &str| -> Vec<String> {
        v.trim()
            .trim_start_matches('v')
            .split('.')
            .map(str::to_owned)
            .collect()
    };
    let (a, b) = (parts(a), parts(b));
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).map_or("0", String::as_str);
        let y = b.get(i).map_or("0", String::as_str);
        let order = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

/// `TEMPLATE_VERSION` of a platform file (in `MISCELLANEOUS_SETTINGS`, else any group).
pub fn template_version(platform: &PlatformFile) -> Option<String> {
    let in_group = platform
        .vars
        .get(VERSION_GROUP)
        .and_then(|g| g.settings.get(VERSION_SETTING));
    let anywhere = || {
        platform
            .vars
            .values()
            .find_map(|g| g.settings.get(VERSION_SETTING))
    };
    in_group.or_else(anywhere).and_then(|s| match &s.value {
        Value::String(v) => Some(v.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn deployment_of(platform: &PlatformFile) -> DeploymentType {
    if platform
        .settings()
        .any(|(_, name, _)| name == SINGLE_NODE_MARKER)
    {
        DeploymentType::Singlenode
    } else {
        DeploymentType::Cluster
    }
}

/// The steps from `platform`'s version to `template`'s.
pub fn plan(platform: &PlatformFile, template: &PlatformFile) -> Result<Plan, Error> {
    let missing = |file: &str| {
        Error::BadRequest(format!(
            "template version missing in {file}: set {VERSION_GROUP}.settings.{VERSION_SETTING}.value"
        ))
    };
    let from_version = template_version(platform).ok_or_else(|| missing("platform.yml"))?;
    let to_version =
        template_version(template).ok_or_else(|| missing("the template platform file"))?;
    let deployment = deployment_of(platform);
    let mut plan = Plan {
        steps: Vec::new(),
        deployment,
        from_version: from_version.clone(),
        to_version: to_version.clone(),
    };
    match compare_versions(&from_version, &to_version) {
        Ordering::Equal => return Ok(plan),
        Ordering::Greater => {
            return Err(Error::BadRequest(format!(
                "platform.yml is at {from_version}, newer than the template ({to_version}); downgrades are not \
                 supported: point platformSettings.platformTemplate at the release you run"
            )));
        }
        Ordering::Less => {}
    }
    let all = steps()?;
    let mut at = from_version.clone();
    for step in all {
        if compare_versions(&step.to, &to_version) == Ordering::Greater {
            break;
        }
        if step
            .from
            .iter()
            .any(|v| compare_versions(v, &at) == Ordering::Equal)
        {
            plan.steps.push(step.clone());
            at = step.to.clone();
        }
    }
    let newest_known = all.last().map_or("0", |s| s.to.as_str());
    if plan.steps.is_empty() && compare_versions(&from_version, newest_known) == Ordering::Less {
        return Err(Error::BadRequest(format!(
            "no migration available from {from_version} to {to_version}: {from_version} is not a Pryv.io \
             template version this leader knows; contact Pryv support"
        )));
    }
    if compare_versions(&at, &to_version) == Ordering::Less {
        // Releases after the last step with value operations: the template alone brings their settings.
        plan.steps.push(Step {
            from: vec![at],
            to: to_version,
            operations: Vec::new(),
        });
    }
    Ok(plan)
}

/// Applies `plan` to `platform` with the target `template` (see the module comment for the order). Zone
/// overrides are upgraded like any setting: each zone's settings are migrated as a platform of their own
/// (the platform with the zone's values), and the zone keeps, with their migrated values, the settings it
/// overrode that the template still has, plus those the migration made differ from the platform's (a value
/// the zone overrode, copied to a new setting).
pub fn migrate(platform: &PlatformFile, template: &PlatformFile, plan: &Plan) -> PlatformFile {
    if plan.steps.is_empty() {
        return platform.clone();
    }
    let mut base = platform.clone();
    base.zones.clear();
    let mut out = migrate_vars(&base, template, plan);
    for (zone_name, zone) in &platform.zones {
        let mut in_zone = base.clone();
        for (_, name, value) in zone.settings() {
            for group in in_zone.vars.values_mut() {
                if let Some(setting) = group.settings.get_mut(name) {
                    setting.value = value.clone();
                }
            }
        }
        let migrated = migrate_vars(&in_zone, template, plan);
        let mut overrides = pryv_render::Zone {
            vars: indexmap::IndexMap::new(),
            extra: zone.extra.clone(),
        };
        for (group, name, value) in migrated.settings() {
            let overridden = zone.settings().any(|(_, n, _)| n == name);
            let differs = out
                .vars
                .get(group)
                .and_then(|g| g.settings.get(name))
                .is_none_or(|s| &s.value != value);
            if overridden || differs {
                overrides
                    .vars
                    .entry(group.to_owned())
                    .or_default()
                    .settings
                    .insert(
                        name.to_owned(),
                        Setting {
                            value: value.clone(),
                            ..Setting::default()
                        },
                    );
            }
        }
        out.zones.insert(zone_name.clone(), overrides);
    }
    out
}

fn migrate_vars(platform: &PlatformFile, template: &PlatformFile, plan: &Plan) -> PlatformFile {
    let mut out = platform.clone();
    // Version, new groups and settings, metadata.
    for (group_name, template_group) in &template.vars {
        let group = out
            .vars
            .entry(group_name.clone())
            .or_insert_with(|| template_group.clone());
        group.name.clone_from(&template_group.name);
        for (name, template_setting) in &template_group.settings {
            let setting = group
                .settings
                .entry(name.clone())
                .or_insert_with(|| template_setting.clone());
            setting
                .description
                .clone_from(&template_setting.description);
            if template_setting.optional.is_some() {
                setting.optional = template_setting.optional;
            }
        }
    }
    set_version(&mut out, &plan.to_version);
    for step in &plan.steps {
        for operation in &step.operations {
            if let Err(skipped) = run(&mut out, operation) {
                tracing::info!(step = %step.to, reason = %skipped, "migration operation skipped");
            }
        }
    }
    // Removals last: the operations above may read settings the template no longer has.
    out.vars.retain(|name, _| template.vars.contains_key(name));
    for (name, group) in &mut out.vars {
        if let Some(template_group) = template.vars.get(name) {
            group
                .settings
                .retain(|setting, _| template_group.settings.contains_key(setting));
        }
    }
    out
}

fn set_version(platform: &mut PlatformFile, version: &str) {
    for group in platform.vars.values_mut() {
        if let Some(setting) = group.settings.get_mut(VERSION_SETTING) {
            setting.value = Value::String(version.to_owned());
        }
    }
}

/// `GROUP.SETTING.key...` split into the setting and the keys inside its value.
fn split(path: &str) -> Result<(&str, &str, Vec<&str>), String> {
    let mut parts = path.split('.');
    match (parts.next(), parts.next()) {
        (Some(group), Some(setting)) => Ok((group, setting, parts.collect())),
        _ => Err(format!("{path}: a path is GROUP.SETTING[.key...]")),
    }
}

fn setting_mut<'a>(
    platform: &'a mut PlatformFile,
    group: &str,
    name: &str,
) -> Option<&'a mut Setting> {
    platform.vars.get_mut(group)?.settings.get_mut(name)
}

fn get(platform: &PlatformFile, path: &str) -> Result<Value, String> {
    let (group, name, keys) = split(path)?;
    let mut value = &platform
        .vars
        .get(group)
        .and_then(|g| g.settings.get(name))
        .ok_or_else(|| format!("{group}.{name} is not in the platform"))?
        .value;
    for key in keys {
        value = value
            .get(key)
            .ok_or_else(|| format!("{path}: no '{key}'"))?;
    }
    Ok(value.clone())
}

fn put(platform: &mut PlatformFile, path: &str, new: Value) -> Result<(), String> {
    let (group, name, keys) = split(path)?;
    let setting = setting_mut(platform, group, name)
        .ok_or_else(|| format!("{group}.{name} is not in the platform nor in the template"))?;
    let mut value = &mut setting.value;
    for key in keys {
        if !value.is_object() {
            *value = Value::Object(Map::new());
        }
        let Value::Object(map) = value else {
            return Err(format!("{path}: not an object"));
        };
        value = map.entry(key.to_owned()).or_insert(Value::Null);
    }
    *value = new;
    Ok(())
}

fn run(platform: &mut PlatformFile, operation: &Operation) -> Result<(), String> {
    match operation {
        Operation::Unwrap(path) => {
            let value = get(platform, path)?;
            match value.get("value") {
                Some(inner) if value.is_object() => put(platform, path, inner.clone()),
                _ => Ok(()),
            }
        }
        Operation::Set { path, value } => put(platform, path, value.clone()),
        Operation::Copy { from, to } => {
            let value = get(platform, from)?;
            put(platform, to, value)
        }
        Operation::WrapInList { from, to, key } => {
            let value = get(platform, from)?;
            let mut item = Map::new();
            item.insert(key.clone(), value);
            put(platform, to, Value::Array(vec![Value::Object(item)]))
        }
        Operation::SplitSystemStreams {
            from,
            account,
            other,
        } => {
            let (account_streams, other_streams) = split_system_streams(&get(platform, from)?)?;
            put(platform, account, Value::String(account_streams))?;
            put(platform, other, Value::String(other_streams))
        }
    }
}

/// The 1.7.0 conversion: (children of `account`, every other stream), each as JSON text.
pub fn split_system_streams(old: &Value) -> Result<(String, String), String> {
    let old = match old {
        Value::String(text) => serde_json::from_str::<Value>(text)
            .map_err(|err| format!("CUSTOM_SYSTEM_STREAMS is not JSON: {err}"))?,
        other => other.clone(),
    };
    let mut streams: Vec<Value> = match old {
        Value::Object(by_id) => by_id
            .into_iter()
            .map(|(id, children)| {
                serde_json::json!({
                    "id": id, "name": id, "children": children, "type": "pryv/plain",
                    "isUnique": false, "isIndexed": false, "isEditable": false,
                    "isRequiredInValidation": false, "isShown": false
                })
            })
            .collect(),
        Value::Array(list) => list,
        Value::Null => Vec::new(),
        other => {
            return Err(format!(
                "CUSTOM_SYSTEM_STREAMS is neither an object nor a list: {other}"
            ));
        }
    };
    for stream in &mut streams {
        default_flags(stream);
    }
    let position = streams.iter().position(|s| s["id"] == "account");
    let account_children = position
        .map(|i| streams.remove(i))
        .and_then(|account| account.get("children").cloned())
        .filter(|children| !children.is_null())
        .unwrap_or_else(|| Value::Array(Vec::new()));
    let text = |v: &Value| serde_json::to_string(v).map_err(|err| err.to_string());
    Ok((text(&account_children)?, text(&Value::Array(streams))?))
}

/// `isShown` and `isEditable` default to false, on a stream and all its descendants.
fn default_flags(stream: &mut Value) {
    let Value::Object(map) = stream else {
        return;
    };
    for flag in ["isShown", "isEditable"] {
        if map.get(flag).is_none_or(Value::is_null) {
            map.insert(flag.to_owned(), Value::Bool(false));
        }
    }
    if let Some(Value::Array(children)) = map.get_mut("children") {
        for child in children {
            default_flags(child);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn platform(version: &str, extra: &str) -> PlatformFile {
        PlatformFile::parse(&format!(
            "vars:\n  MISCELLANEOUS_SETTINGS:\n    settings:\n      TEMPLATE_VERSION:\n        value: \"{version}\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn the_step_data_parses_and_is_in_version_order() {
        let all = steps().unwrap();
        assert!(all.len() > 20);
        for pair in all.windows(2) {
            assert_eq!(compare_versions(&pair[0].to, &pair[1].to), Ordering::Less);
        }
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("1.6.10", "1.6.9"), Ordering::Greater);
        assert_eq!(compare_versions("1.7", "1.7.0"), Ordering::Equal);
        assert_eq!(compare_versions("1.9.2", "1.10.0"), Ordering::Less);
    }

    #[test]
    fn chains_follow_the_legacy_steps_and_go_on_with_the_template_alone() {
        let views = |from: &str, to: &str| {
            plan(&platform(from, ""), &platform(to, ""))
                .unwrap()
                .views()
                .into_iter()
                .map(|v| format!("{}>{}", v.versions_from.join("|"), v.version_to))
                .collect::<Vec<_>>()
        };
        assert!(views("1.7.0", "1.7.0").is_empty());
        assert_eq!(
            views("1.6.20", "1.6.23"),
            [
                "1.6.15|1.6.16|1.6.17|1.6.18|1.6.19|1.6.20>1.6.21",
                "1.6.21>1.6.22",
                "1.6.22>1.6.23"
            ]
        );
        assert_eq!(views("1.9.0", "1.9.2"), ["1.9.0>1.9.2"]);
        let err = plan(&platform("1.5.0", ""), &platform("1.7.0", "")).unwrap_err();
        assert!(
            err.to_string()
                .contains("no migration available from 1.5.0"),
            "{err}"
        );
        let err = plan(&platform("1.8.0", ""), &platform("1.7.0", "")).unwrap_err();
        assert!(err.to_string().contains("downgrades"), "{err}");
        let err = plan(
            &PlatformFile::parse("vars:\n  G:\n    settings:\n      A:\n        value: 1\n")
                .unwrap(),
            &platform("1.7.0", ""),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("template version missing in platform.yml"),
            "{err}"
        );
    }

    #[test]
    fn zone_overrides_are_upgraded_like_settings() {
        let mut old = PlatformFile::parse(
            "vars:\n  G:\n    settings:\n      TEMPLATE_VERSION:\n        value: '1.0.0'\n      HOST:\n        value: {value: base}\n      KEPT:\n        value: k\n      GONE:\n        value: g\n",
        )
        .unwrap();
        old.zones = serde_yaml_ng::from_str(
            "eu:\n  vars:\n    G:\n      settings:\n        HOST: {value: {value: eu}}\n        GONE: {value: eu-g}\n",
        )
        .unwrap();
        let template = PlatformFile::parse(
            "vars:\n  G:\n    settings:\n      TEMPLATE_VERSION:\n        value: '2.0.0'\n      HOST:\n        value: t\n      KEPT:\n        value: k\n      COPY:\n        value: c\n",
        )
        .unwrap();
        let plan = Plan {
            steps: vec![Step {
                from: vec!["1.0.0".into()],
                to: "2.0.0".into(),
                operations: vec![
                    Operation::Unwrap("G.HOST".into()),
                    Operation::Copy {
                        from: "G.HOST".into(),
                        to: "G.COPY".into(),
                    },
                ],
            }],
            deployment: DeploymentType::Cluster,
            from_version: "1.0.0".into(),
            to_version: "2.0.0".into(),
        };
        let migrated = migrate(&old, &template, &plan);
        let value = |p: &PlatformFile, name: &str| {
            p.settings()
                .find(|(_, n, _)| *n == name)
                .map(|(_, _, v)| v.clone())
        };
        assert_eq!(value(&migrated, "HOST"), Some(json!("base")));
        assert_eq!(value(&migrated, "COPY"), Some(json!("base")));
        let eu: Vec<(String, Value)> = migrated.zones["eu"]
            .settings()
            .map(|(_, n, v)| (n.to_owned(), v.clone()))
            .collect();
        // Unwrapped like the platform's, copied where the platform's was, GONE dropped with the template.
        assert_eq!(
            eu,
            [
                ("HOST".to_owned(), json!("eu")),
                ("COPY".to_owned(), json!("eu"))
            ]
        );
        assert!(migrated.zone_problems().is_empty());
    }

    #[test]
    fn system_streams_split_keeps_every_stream_after_account() {
        let old = serde_json::json!({
            "profile": [{"id": "nickname", "isShown": true}],
            "account": [{"id": "phone"}, {"id": "email", "isEditable": true, "children": [{"id": "alt"}]}],
            "insurance": [{"id": "number"}]
        });
        let (account, other) = split_system_streams(&Value::String(old.to_string())).unwrap();
        let account: Value = serde_json::from_str(&account).unwrap();
        let other: Value = serde_json::from_str(&other).unwrap();
        assert_eq!(
            account[0],
            serde_json::json!({"id": "phone", "isShown": false, "isEditable": false})
        );
        assert_eq!(account[1]["isEditable"], true);
        assert_eq!(account[1]["children"][0]["isShown"], false);
        let ids: Vec<&str> = other
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            ["profile", "insurance"],
            "streams after account are kept"
        );
        assert_eq!(
            other[0]["children"][0]["isShown"], true,
            "explicit flags kept"
        );
        assert_eq!(other[0]["type"], "pryv/plain");
    }
}
