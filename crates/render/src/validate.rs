//! Checks that a rendered file still parses in its format, so a value that breaks a JSON or YAML file is caught
//! on the leader, not by a service failing on a follower.

use serde::de::IgnoredAny;

use crate::Error;

/// Validates `text` according to the extension of `path`: `.json` as JSON, `.yml`/`.yaml` as YAML (every
/// document of a multi-document stream). Other files are not checked.
pub fn validate_rendered(path: &str, text: &str) -> Result<(), Error> {
    let extension = path
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase());
    match extension.as_deref() {
        Some("json") => serde_json::from_str::<IgnoredAny>(text)
            .map(drop)
            .map_err(|err| Error::InvalidJson(err.to_string())),
        Some("yml" | "yaml") => {
            crate::check_yaml_shape(text).map_err(|err| Error::InvalidYaml(err.to_string()))?;
            for document in serde_yaml_ng::Deserializer::from_str(text) {
                serde::Deserialize::deserialize(document)
                    .map(|_: IgnoredAny| ())
                    .map_err(|err| Error::InvalidYaml(err.to_string()))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_by_extension() {
        assert!(validate_rendered("/a.json", "{\"a\": 1}").is_ok());
        assert!(validate_rendered("/a.JSON", "{").is_err());
        assert!(validate_rendered("/a.yaml", "a: 1\n---\nb: 2\n").is_ok());
        assert!(validate_rendered("/a.yml", "a: [").is_err());
        assert!(validate_rendered("/nginx.conf", "{{{").is_ok());
        assert!(validate_rendered("/empty.yml", "").is_ok());
    }
}
