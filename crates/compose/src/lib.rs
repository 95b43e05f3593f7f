//! The machine's docker compose file (`<dataFolder>/pryv.yml`): its services and the host folders each one
//! bind-mounts, to know which services a changed file affects. Variables in mount sources are expanded from the
//! environment (`PRYV_CONF_ROOT` defaults to the parent of the data folder, its usual place), relative sources
//! resolve against the compose file's folder.
// Blocking: reading the compose file (small, local); callers on the async runtime go through spawn_blocking or accept one small read.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value;

/// File name of the compose file at the root of the data folder.
pub const COMPOSE_FILE: &str = "pryv.yml";

/// Services and their bind-mount sources.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Project {
    pub services: BTreeMap<String, Vec<PathBuf>>,
    /// Each service's definition as written, to tell which ones `up -d` will recreate.
    definitions: BTreeMap<String, Value>,
}

/// Why a compose file gives no project.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Parse {
        path: std::path::PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("{0}")]
    Yaml(#[from] serde_yaml_ng::Error),
}

#[derive(Deserialize)]
struct RawCompose {
    #[serde(default)]
    services: BTreeMap<String, Option<Value>>,
}

impl Project {
    /// Reads the compose file of `data_folder`; a missing file is a project without services.
    pub fn load(data_folder: &Path) -> Result<Self, Error> {
        let file = data_folder.join(COMPOSE_FILE);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(Error::Read { path: file, source }),
        };
        Self::parse(&text, data_folder, &|name| env_var(name, data_folder)).map_err(|err| match err
        {
            Error::Yaml(source) => Error::Parse { path: file, source },
            other => other,
        })
    }

    /// Parses compose YAML; `lookup` gives variable values.
    pub fn parse(
        text: &str,
        project_dir: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let raw: RawCompose = serde_yaml_ng::from_str(text)?;
        let mut services = BTreeMap::new();
        let mut definitions = BTreeMap::new();
        for (name, definition) in raw.services {
            let definition = definition.unwrap_or(Value::Null);
            let mounts = definition
                .get("volumes")
                .and_then(Value::as_sequence)
                .map(|volumes| {
                    volumes
                        .iter()
                        .filter_map(bind_source)
                        .map(|source| normalize(&project_dir.join(expand(&source, lookup))))
                        .collect()
                })
                .unwrap_or_default();
            services.insert(name.clone(), mounts);
            definitions.insert(name, definition);
        }
        Ok(Self {
            services,
            definitions,
        })
    }

    /// Services that `up -d` creates or recreates when going from `before` to `self` (new or changed
    /// definitions): they need no restart of their own.
    pub fn recreated_since(&self, before: &Project) -> BTreeSet<String> {
        self.definitions
            .iter()
            .filter(|(name, definition)| before.definitions.get(*name) != Some(definition))
            .map(|(name, _)| name.clone())
            .collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.services.keys().cloned().collect()
    }

    /// Services that mount a folder containing (or the file equal to) one of `changed`.
    pub fn affected(&self, changed: &[PathBuf]) -> BTreeSet<String> {
        let changed: Vec<PathBuf> = changed.iter().map(|p| normalize(p)).collect();
        self.services
            .iter()
            .filter(|(_, mounts)| {
                mounts
                    .iter()
                    .any(|m| changed.iter().any(|c| c.starts_with(m)))
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// `(service, source)` of mounts of a single existing file inside the data folder's writable zones: such
    /// a container keeps the old file after an atomic replace.
    pub fn single_file_mounts(&self, data_folder: &Path) -> Vec<(String, PathBuf)> {
        let data_folder = normalize(data_folder);
        self.services
            .iter()
            .flat_map(|(name, mounts)| mounts.iter().map(move |m| (name, m)))
            .filter(|(_, m)| m.starts_with(&data_folder) && m.is_file())
            .map(|(name, m)| (name.clone(), m.clone()))
            .collect()
    }
}

/// What a set of changed files restarts: `up -d` of the project when the compose file is among them, and
/// every service that mounts a changed file, except those `up -d` creates or recreates anyway. The
/// follower acts on it; the leader's preview shows it.
pub fn plan_restarts(
    before: &Project,
    after: &Project,
    compose_file: &Path,
    changed: &[PathBuf],
) -> (bool, BTreeSet<String>) {
    let compose_file = normalize(compose_file);
    let up = changed.iter().any(|c| normalize(c) == compose_file);
    let mut services = after.affected(changed);
    if up {
        let recreated = after.recreated_since(before);
        services.retain(|s| !recreated.contains(s));
    }
    (up, services)
}

/// The host path of a bind mount, in short (`src:dst[:mode]`) or long (`{type: bind, source}`) syntax.
fn bind_source(volume: &Value) -> Option<String> {
    match volume {
        Value::String(short) => {
            let source = short.split(':').next()?;
            let is_path = source.starts_with(['/', '.', '~', '$']);
            is_path.then(|| source.to_owned())
        }
        Value::Mapping(long) => {
            let kind = long.get("type").and_then(Value::as_str).unwrap_or("bind");
            (kind == "bind").then(|| {
                long.get("source")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })?
        }
        _ => None,
    }
}

fn env_var(name: &str, data_folder: &Path) -> Option<String> {
    std::env::var(name).ok().or_else(|| {
        (name == CONF_ROOT_VAR)
            .then(|| default_conf_root(data_folder))
            .flatten()
    })
}

/// Variable that compose files use for the machine's configuration root.
pub const CONF_ROOT_VAR: &str = "PRYV_CONF_ROOT";

/// `PRYV_CONF_ROOT` when the environment does not set it: the parent of the data folder (`<root>/pryv/`).
pub fn default_conf_root(data_folder: &Path) -> Option<String> {
    normalize(data_folder)
        .parent()
        .map(|p| p.display().to_string())
}

/// Expands `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}` and `$$` as compose does.
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(inner) = rest.strip_prefix('{') {
            let Some(end) = inner.find('}') else {
                out.push_str("${");
                rest = inner;
                continue;
            };
            let body = &inner[..end];
            rest = &inner[end + 1..];
            let (name, default, empty_counts) = match (body.find(":-"), body.find('-')) {
                (Some(i), _) => (&body[..i], Some(&body[i + 2..]), true),
                (None, Some(i)) => (&body[..i], Some(&body[i + 1..]), false),
                (None, None) => (body, None, false),
            };
            let value = lookup(name).filter(|v| !(empty_counts && v.is_empty()));
            out.push_str(&value.or(default.map(str::to_owned)).unwrap_or_default());
        } else {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            out.push_str(&lookup(&rest[..len]).unwrap_or_default());
            rest = &rest[len..];
        }
    }
    out.push_str(rest);
    out
}

/// Lexical normalization (`.` and `..` resolved without touching the disk).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPOSE: &str = r#"
services:
  core:
    image: core
    volumes:
      - ${PRYV_CONF_ROOT}/pryv/core/conf/:/app/conf/:ro
      - ${PRYV_CONF_ROOT}/pryv/core/data/:/app/data/
  nginx:
    volumes:
      - ./nginx/conf/:/etc/nginx/:ro
      - type: bind
        source: ./core/conf/shared.yml
        target: /x
  redis:
    volumes:
      - redis-data:/data
  mail:
"#;

    fn project() -> Project {
        let lookup = |name: &str| (name == "PRYV_CONF_ROOT").then(|| "/var/pryv".to_owned());
        Project::parse(COMPOSE, Path::new("/var/pryv/pryv"), &lookup).unwrap()
    }

    #[test]
    fn mounts_are_expanded_and_resolved() {
        let p = project();
        assert_eq!(p.names(), ["core", "mail", "nginx", "redis"]);
        assert_eq!(
            p.services["core"],
            [
                PathBuf::from("/var/pryv/pryv/core/conf"),
                PathBuf::from("/var/pryv/pryv/core/data")
            ]
        );
        assert_eq!(
            p.services["nginx"],
            [
                PathBuf::from("/var/pryv/pryv/nginx/conf"),
                PathBuf::from("/var/pryv/pryv/core/conf/shared.yml")
            ]
        );
        assert!(p.services["redis"].is_empty());
    }

    #[test]
    fn changed_files_map_to_the_services_mounting_them() {
        let p = project();
        let affected = |paths: &[&str]| -> Vec<String> {
            p.affected(&paths.iter().map(PathBuf::from).collect::<Vec<_>>())
                .into_iter()
                .collect()
        };
        assert_eq!(affected(&["/var/pryv/pryv/core/conf/core.yml"]), ["core"]);
        assert_eq!(
            affected(&["/var/pryv/pryv/core/conf/shared.yml"]),
            ["core", "nginx"]
        );
        assert_eq!(
            affected(&["/var/pryv/pryv/nginx/conf/sub/site.conf"]),
            ["nginx"]
        );
        assert!(affected(&["/var/pryv/pryv/core/confx/a"]).is_empty());
        assert!(affected(&["/var/pryv/pryv/mail/conf/a"]).is_empty());
    }

    #[test]
    fn new_and_changed_definitions_are_recreated_by_up() {
        let before = project();
        let lookup = |name: &str| (name == "PRYV_CONF_ROOT").then(|| "/var/pryv".to_owned());
        let changed = COMPOSE.replace("image: core", "image: core:2") + "  extra:\n    image: x\n";
        let after = Project::parse(&changed, Path::new("/var/pryv/pryv"), &lookup).unwrap();
        assert_eq!(
            after
                .recreated_since(&before)
                .into_iter()
                .collect::<Vec<_>>(),
            ["core", "extra"]
        );
        assert!(before.recreated_since(&before).is_empty());
    }

    #[test]
    fn single_file_mounts_inside_the_data_folder_are_found() {
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(data.path().join("core/conf")).unwrap();
        std::fs::write(data.path().join("core/conf/one.yml"), "x").unwrap();
        let compose = "services:\n  core:\n    volumes:\n      - ./core/conf/one.yml:/one.yml\n      - ./core/conf/:/conf/\n";
        let project = Project::parse(compose, data.path(), &|_| None).unwrap();
        assert_eq!(
            project.single_file_mounts(data.path()),
            [("core".to_owned(), data.path().join("core/conf/one.yml"))]
        );
    }

    #[test]
    fn expansion_follows_compose_rules() {
        let lookup = |name: &str| match name {
            "SET" => Some("v".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(
            expand(
                "$SET/${SET}/$$/${UNSET:-d}/${EMPTY:-d}/${EMPTY-d}/$UNSET.",
                &lookup
            ),
            "v/v/$/d/d//."
        );
    }
}
