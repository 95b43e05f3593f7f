//! What `PUT /admin/zones` changes: the per-zone overrides of `platform.yml` (`zones:` beside `vars:`), in
//! the body shapes of `PUT /admin/settings`. A zone change is a settings revision like any other (history,
//! rollback, preview, git); it is validated the same way, every role rendered in every zone first.

use indexmap::IndexMap;
use pryv_render::PlatformFile;
use serde::Deserialize;
use serde_json::Value;

use crate::error::Error;

/// `{"zones": {ZONE: {GROUP: {"settings": {NAME: {"value": ...}}}}}, "message"?}` or the bare
/// `{ZONE: {GROUP: ...}}`. A setting `{"remove": true}` drops that override (the zone then has the
/// platform's value); a zone `null` removes the zone. Zones not named are left as they are.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct ZonesPatch {
    #[schema(value_type = Object)]
    pub zones: IndexMap<String, Option<IndexMap<String, ZoneGroupPatch>>>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ZoneGroupPatch {
    #[serde(default)]
    pub settings: IndexMap<String, ZoneSettingPatch>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ZoneSettingPatch {
    #[serde(default)]
    pub value: Option<Value>,
    #[serde(default)]
    pub remove: bool,
}

impl ZonesPatch {
    /// Reads either body shape.
    pub fn from_body(body: Value) -> Result<Self, Error> {
        let Value::Object(object) = body else {
            return Err(Error::BadRequest(
                "the body must be a JSON object: {\"zones\": {ZONE: {GROUP: {\"settings\": {NAME: {\"value\": ...}}}}}}"
                    .into(),
            ));
        };
        let ours = object.get("zones").is_some_and(Value::is_object)
            && object.keys().all(|k| k == "zones" || k == "message");
        let shape_error = |err: serde_json::Error| {
            Error::BadRequest(format!(
                "zones must be ZONE: {{GROUP: {{\"settings\": {{NAME: {{\"value\": ...}} or {{\"remove\": true}}}}}}}}: {err}"
            ))
        };
        if ours {
            serde_json::from_value(Value::Object(object)).map_err(shape_error)
        } else {
            Ok(Self {
                zones: serde_json::from_value(Value::Object(object)).map_err(shape_error)?,
                message: None,
            })
        }
    }

    /// Every `ZONE.NAME` the patch touches, for the audit line.
    pub fn names(&self) -> Vec<String> {
        self.zones
            .iter()
            .flat_map(|(zone, groups)| match groups {
                None => vec![format!("{zone} (removed)")],
                Some(groups) => groups
                    .values()
                    .flat_map(|g| g.settings.keys().map(|name| format!("{zone}.{name}")))
                    .collect(),
            })
            .collect()
    }

    /// `platform` with the patch merged in; every problem at once, naming zone and setting.
    pub fn apply(&self, platform: &PlatformFile) -> Result<PlatformFile, Error> {
        let mut out = platform.clone();
        let mut problems = Vec::new();
        for (zone_name, groups) in &self.zones {
            if !pryv_render::is_zone_name(zone_name) {
                problems.push(format!(
                    "zone {zone_name:?}: a zone name is letters, digits, '-' and '_' only"
                ));
                continue;
            }
            let Some(groups) = groups else {
                out.zones.shift_remove(zone_name);
                continue;
            };
            let zone = out.zones.entry(zone_name.clone()).or_default();
            for (group_name, group) in groups {
                for (name, patch) in &group.settings {
                    let at = format!("zones.{zone_name}.{group_name}.{name}");
                    if let Err(problem) = apply_one(platform, zone, (group_name, name), patch) {
                        problems.push(format!("{at}: {problem}"));
                    }
                }
            }
            zone.vars.retain(|_, g| !g.settings.is_empty());
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(Error::InvalidSettings(problems))
        }
    }
}

/// Sets or drops one override of `zone`, or why it cannot: the setting must exist in `vars`, in that group.
fn apply_one(
    platform: &PlatformFile,
    zone: &mut pryv_render::Zone,
    (group_name, name): (&String, &String),
    patch: &ZoneSettingPatch,
) -> Result<(), String> {
    let Some(home) = platform
        .vars
        .iter()
        .find(|(_, g)| g.settings.contains_key(name))
        .map(|(g, _)| g.as_str())
    else {
        return Err(format!(
            "there is no setting {name} in the platform's settings; a zone only overrides existing settings \
             (add it with PUT /admin/settings?allowNew=true first)"
        ));
    };
    if home != group_name {
        return Err(format!("{name} is in group {home}, not {group_name}"));
    }
    match (patch.remove, &patch.value) {
        (true, _) => {
            if let Some(g) = zone.vars.get_mut(group_name) {
                g.settings.shift_remove(name);
            }
            Ok(())
        }
        (false, Some(value)) => {
            zone.vars
                .entry(group_name.clone())
                .or_default()
                .settings
                .entry(name.clone())
                .or_default()
                .value = value.clone();
            Ok(())
        }
        (false, None) => Err("give a \"value\", or \"remove\": true to drop the override".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn platform() -> PlatformFile {
        PlatformFile::parse(
            "vars:\n  EMAIL:\n    settings:\n      MAIL_SMTP_HOST:\n        value: smtp.example\n      MAIL_SMTP_PORT:\n        value: 587\n",
        )
        .unwrap()
    }

    #[test]
    fn sets_removes_and_refuses_naming_zone_and_setting() {
        let patch = ZonesPatch::from_body(json!({
            "zones": {"eu": {"EMAIL": {"settings": {"MAIL_SMTP_HOST": {"value": "smtp.eu"}, "MAIL_SMTP_PORT": {"value": 25}}}}},
            "message": "eu mail"
        }))
        .unwrap();
        assert_eq!(patch.message.as_deref(), Some("eu mail"));
        let with_eu = patch.apply(&platform()).unwrap();
        let eu: Vec<_> = with_eu.zones["eu"]
            .settings()
            .map(|(_, n, v)| (n, v.clone()))
            .collect();
        assert_eq!(
            eu,
            [
                ("MAIL_SMTP_HOST", json!("smtp.eu")),
                ("MAIL_SMTP_PORT", json!(25))
            ]
        );
        // The bare shape; one override dropped.
        let drop = ZonesPatch::from_body(
            json!({"eu": {"EMAIL": {"settings": {"MAIL_SMTP_PORT": {"remove": true}}}}}),
        )
        .unwrap();
        let dropped = drop.apply(&with_eu).unwrap();
        assert_eq!(dropped.zones["eu"].settings().count(), 1);
        let removed = ZonesPatch::from_body(json!({"zones": {"eu": null}})).unwrap();
        assert!(removed.apply(&with_eu).unwrap().zones.is_empty());
        let bad = ZonesPatch::from_body(json!({"zones": {
            "us": {"EMAIL": {"settings": {"MAIL_SMTP_HOTS": {"value": "x"}, "MAIL_SMTP_HOST": {}}},
                   "OTHER": {"settings": {"MAIL_SMTP_PORT": {"value": 1}}}},
            "a/b": {}
        }}))
        .unwrap();
        let Err(Error::InvalidSettings(problems)) = bad.apply(&platform()) else {
            panic!("refused")
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("zones.us.EMAIL.MAIL_SMTP_HOTS: there is no setting"));
        assert!(problems[1].contains("give a \"value\""));
        assert!(problems[2].contains("MAIL_SMTP_PORT is in group EMAIL, not OTHER"));
        assert!(problems[3].starts_with("zone \"a/b\""));
    }
}
