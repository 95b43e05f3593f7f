//! What a settings change would do, before it is saved: per role, the files added, changed and removed (a
//! unified diff of each text file, internal secrets shown as `***`) and the compose services the followers
//! would restart, computed from the role's `pryv.yml` with the follower's own rules (`pryv-compose`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pryv_compose::{COMPOSE_FILE, CONF_ROOT_VAR, Project, plan_restarts};
use pryv_protocol::ConfFile;
use pryv_render::PlatformFile;
use serde::Serialize;

use crate::config::{FollowerEntry, Internals};
use crate::error::Error;
use crate::tree;
use crate::variant::Variant;

/// Where the preview lays a role's tree to read its compose file: a follower's usual layout.
const CONF_ROOT: &str = "/var/pryv";

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    pub roles: Vec<RolePreview>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolePreview {
    pub role: String,
    /// The zone of this variant, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The variant (`core@eu`, `core@eu#1a2b3c4d`) when it is not the plain role: its followers have a zone
    /// or variables of their own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub files: Vec<FileChange>,
    /// `(project)` first when `pryv.yml` changes (`up -d`), then the services to restart.
    pub restarts: Vec<String>,
    /// The followers of the role and what each would restart.
    pub followers: Vec<FollowerRestarts>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileChange {
    pub path: String,
    /// `added`, `changed` or `removed`.
    pub change: String,
    /// Unified diff of a text file (absent for binary files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FollowerRestarts {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub restarts: Vec<String>,
}

/// Compares the trees `before` and `after` give for every role of `templates`, and for every distinct
/// variant (zone, own variables) the followers have: each is one entry. A variant that does not render
/// with `after` is an error naming it (as a save would be refused).
pub fn preview(
    (templates, links): (&Path, &tree::LinkPolicy),
    internals: &Internals,
    platform_path: &Path,
    before: &PlatformFile,
    after: &PlatformFile,
    followers: &[FollowerEntry],
) -> Result<Preview, Error> {
    let mut comparison = Comparison {
        templates,
        links,
        internals,
        platform_path,
        secrets: secrets(internals),
        renderers: Renderers::default(),
    };
    let mut roles = Vec::new();
    let mut problems = Vec::new();
    for variant in variants_of(templates, followers)? {
        match comparison.variant(&variant, before, after) {
            Ok((files, restarts)) => roles.push(RolePreview {
                followers: followers
                    .iter()
                    .filter(|f| f.variant == variant)
                    .map(|f| FollowerRestarts {
                        url: f.url.clone(),
                        name: f.name.clone(),
                        restarts: restarts.clone(),
                    })
                    .collect(),
                role: variant.role().to_owned(),
                zone: variant.zone().map(str::to_owned),
                variant: (!variant.is_plain()).then(|| variant.key().to_owned()),
                files,
                restarts,
            }),
            Err(errors) => problems.extend(errors),
        }
    }
    if problems.is_empty() {
        Ok(Preview { roles })
    } else {
        Err(Error::InvalidSettings(problems))
    }
}

/// Each role's plain variant, then the variants its followers' zones and variables make.
fn variants_of(templates: &Path, followers: &[FollowerEntry]) -> Result<Vec<Variant>, Error> {
    let mut variants: Vec<Variant> = Vec::new();
    for role in tree::roles(templates)? {
        variants.push(Variant::plain(&role));
        let mut own: Vec<Variant> = followers
            .iter()
            .filter(|f| f.role == role && !f.variant.is_plain())
            .map(|f| f.variant.clone())
            .collect();
        own.sort();
        own.dedup();
        variants.extend(own);
    }
    Ok(variants)
}

/// What a preview compares with: the templates, the secrets to mask and the renderers built so far.
struct Comparison<'a> {
    templates: &'a Path,
    links: &'a tree::LinkPolicy,
    internals: &'a Internals,
    platform_path: &'a Path,
    secrets: Vec<String>,
    renderers: Renderers,
}

impl Comparison<'_> {
    /// The files `variant` changes and what its followers restart, or why it does not render with `after`.
    fn variant(
        &mut self,
        variant: &Variant,
        before: &PlatformFile,
        after: &PlatformFile,
    ) -> Result<(Vec<FileChange>, Vec<String>), Vec<String>> {
        let label = if variant.is_plain() {
            String::new()
        } else {
            format!("{variant}: ")
        };
        let (templates, links, role) = (self.templates, self.links, variant.role());
        // A zone or a variable the settings did not have yet: no "before", every file shows as added.
        let before_files = self
            .renderers
            .get(true, self.platform_path, before, self.internals, variant)
            .ok()
            .and_then(|r| tree::render_role(r, templates, links, role).ok())
            .map(|(files, _)| files)
            .unwrap_or_default();
        let new = self
            .renderers
            .get(false, self.platform_path, after, self.internals, variant)
            .map_err(|err| vec![format!("{label}{err}")])?;
        let after_files = match tree::render_role(new, templates, links, role) {
            Ok((files, errors)) if errors.is_empty() => files,
            Ok((_, errors)) => return Err(errors.iter().map(|e| format!("{label}{e}")).collect()),
            Err(err) => return Err(vec![format!("{label}{err}")]),
        };
        let files = compare(&before_files, &after_files, &self.secrets);
        let restarts = if files.is_empty() {
            Vec::new()
        } else {
            restarts_of(&before_files, &after_files, &files)
        };
        Ok((files, restarts))
    }
}

/// The renderers of the settings before and after, one per distinct set of variables.
#[derive(Default)]
struct Renderers {
    built: std::collections::HashMap<(bool, String), Result<pryv_render::Renderer, String>>,
}

impl Renderers {
    fn get(
        &mut self,
        before: bool,
        path: &Path,
        platform: &PlatformFile,
        internals: &Internals,
        variant: &Variant,
    ) -> Result<&pryv_render::Renderer, String> {
        self.built
            .entry((before, variant.vars_key().to_owned()))
            .or_insert_with(|| {
                crate::render_roles::variant_renderer(path, platform, internals, variant)
                    .map_err(|err| err.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Internal values long enough to be secrets (short ones would mask ordinary words), longest first.
fn secrets(internals: &Internals) -> Vec<String> {
    pryv_protocol::Scrubber::from_json_values(internals.0.values())
        .values()
        .to_vec()
}

fn mask(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_owned(), |text, secret| {
        text.replace(secret.as_str(), "***")
    })
}

fn compare(before: &[ConfFile], after: &[ConfFile], secrets: &[String]) -> Vec<FileChange> {
    let old: BTreeMap<&str, &ConfFile> = before.iter().map(|f| (f.path.as_str(), f)).collect();
    let new: BTreeMap<&str, &ConfFile> = after.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut changes = Vec::new();
    for (path, file) in &new {
        let (change, previous) = match old.get(path) {
            None => ("added", None),
            Some(previous) if *previous == *file => continue,
            Some(previous) => ("changed", Some(*previous)),
        };
        let text = |f: Option<&ConfFile>| match f {
            None => Some(String::new()),
            Some(f) if f.encoding.is_none() => Some(mask(&f.content, secrets)),
            Some(_) => None,
        };
        let diff = match (text(previous), text(Some(file))) {
            (Some(a), Some(b)) => Some(unified(path, &a, &b)),
            _ => None,
        };
        changes.push(FileChange {
            path: (*path).to_owned(),
            change: change.to_owned(),
            diff,
        });
    }
    for (path, file) in &old {
        if !new.contains_key(path) {
            let diff = file
                .encoding
                .is_none()
                .then(|| unified(path, &mask(&file.content, secrets), ""));
            changes.push(FileChange {
                path: (*path).to_owned(),
                change: "removed".to_owned(),
                diff,
            });
        }
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    changes
}

fn unified(path: &str, before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a{path}"), &format!("b{path}"))
        .to_string()
}

/// The restarts a follower of the role would run for `files`, from the role's compose file before and after.
fn restarts_of(before: &[ConfFile], after: &[ConfFile], files: &[FileChange]) -> Vec<String> {
    let data_folder = Path::new(CONF_ROOT).join("pryv");
    let project = |tree: &[ConfFile]| {
        tree.iter()
            .find(|f| f.path == format!("/{COMPOSE_FILE}"))
            .and_then(|f| {
                Project::parse(&f.content, &data_folder, &|name| {
                    (name == CONF_ROOT_VAR).then(|| CONF_ROOT.to_owned())
                })
                .ok()
            })
            .unwrap_or_default()
    };
    let changed: Vec<PathBuf> = files
        .iter()
        .map(|f| data_folder.join(f.path.trim_start_matches('/')))
        .collect();
    let (up, services) = plan_restarts(
        &project(before),
        &project(after),
        &data_folder.join(COMPOSE_FILE),
        &changed,
    );
    let mut restarts: Vec<String> = services.into_iter().collect();
    if up {
        restarts.insert(0, "(project)".to_owned());
    }
    restarts
}

/// The text a terminal shows (`config-leader diff`).
pub fn to_text(preview: &Preview) -> String {
    let mut out = String::new();
    for role in &preview.roles {
        let name = role.variant.as_deref().unwrap_or(&role.role);
        if role.files.is_empty() {
            out.push_str(&format!("role {name}: no change\n"));
            continue;
        }
        out.push_str(&format!(
            "role {name}: {} file(s); restarts: {}\n",
            role.files.len(),
            if role.restarts.is_empty() {
                "none".to_owned()
            } else {
                role.restarts.join(", ")
            }
        ));
        for follower in &role.followers {
            out.push_str(&format!(
                "  follower {}{}\n",
                follower.name.as_deref().unwrap_or(""),
                if follower.name.is_some() {
                    format!(" ({})", follower.url)
                } else {
                    follower.url.clone()
                }
            ));
        }
        for file in &role.files {
            out.push_str(&format!("  {} {}\n", file.change, file.path));
            if let Some(diff) = &file.diff {
                for line in diff.lines() {
                    out.push_str(&format!("    {line}\n"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str) -> ConfFile {
        ConfFile {
            path: path.into(),
            content: content.into(),
            encoding: None,
        }
    }

    #[test]
    fn changes_diffs_and_masked_secrets() {
        let secret = "s3cr3t-value-xyz".to_owned();
        let before = [
            file("/a.yml", "x: 1\nkey: s3cr3t-value-xyz\n"),
            file("/gone", "g\n"),
        ];
        let after = [
            file("/a.yml", "x: 2\nkey: s3cr3t-value-xyz\n"),
            file("/new", "n\n"),
        ];
        let changes = compare(&before, &after, &[secret]);
        let kinds: Vec<(&str, &str)> = changes
            .iter()
            .map(|c| (c.path.as_str(), c.change.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("/a.yml", "changed"),
                ("/gone", "removed"),
                ("/new", "added")
            ]
        );
        let diff = changes[0].diff.as_deref().unwrap();
        assert!(diff.contains("-x: 1\n+x: 2\n"), "{diff}");
        assert!(
            diff.contains("key: ***") && !diff.contains("s3cr3t"),
            "{diff}"
        );
    }

    #[test]
    fn restarts_follow_the_compose_rules_of_the_follower() {
        let compose = "services:\n  core:\n    volumes:\n      - ${PRYV_CONF_ROOT}/pryv/core/conf/:/c\n  nginx:\n    volumes:\n      - ./nginx/conf/:/n\n";
        let tree = [
            file("/pryv.yml", compose),
            file("/core/conf/a", "1"),
            file("/nginx/conf/b", "1"),
        ];
        let changed = [FileChange {
            path: "/core/conf/a".into(),
            change: "changed".into(),
            diff: None,
        }];
        assert_eq!(restarts_of(&tree, &tree, &changed), ["core"]);
        let bigger = compose.replace("nginx:\n", "nginx:\n    image: new\n");
        let after = [
            file("/pryv.yml", &bigger),
            file("/core/conf/a", "2"),
            file("/nginx/conf/b", "1"),
        ];
        let changed = [
            FileChange {
                path: "/core/conf/a".into(),
                change: "changed".into(),
                diff: None,
            },
            FileChange {
                path: "/pryv.yml".into(),
                change: "changed".into(),
                diff: None,
            },
        ];
        // `up -d` recreates nginx; core still restarts for its file.
        assert_eq!(restarts_of(&tree, &after, &changed), ["(project)", "core"]);
    }
}
