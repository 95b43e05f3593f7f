//! Operator commands that do not serve: `check` (every problem, all at once) and `render` (a dry run to a
//! folder).
// Blocking: CLI commands (check, render, diff) and start-up warnings.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use base64::Engine;
use pryv_render::REPLACE_ME;

use crate::config::Config;
use crate::error::Error;
use crate::tree;

/// Every problem of the configuration, one sentence each; empty when the platform is ready.
pub fn check(config: &Config) -> Result<Vec<String>, Error> {
    let mut problems = Vec::new();
    let platform = match crate::render_roles::load(&config.platform_config) {
        Ok(platform) => platform,
        Err(err) => return Ok(vec![err.to_string()]),
    };
    for (group, name) in platform.settings_equal_to(REPLACE_ME) {
        problems.push(format!(
            "{}: {group}.{name} is still {REPLACE_ME}; set its value",
            config.platform_config.display()
        ));
    }
    let vars = pryv_render::Vars::new(&platform, &config.internals.0);
    // One renderer for every role: the settings are read and compiled once.
    let renderer = match pryv_render::Renderer::new(&vars) {
        Ok(renderer) => {
            problems.extend(
                renderer
                    .problems()
                    .into_iter()
                    .map(|err| format!("{}: {err}", config.platform_config.display())),
            );
            Some(renderer)
        }
        Err(err) => {
            problems.push(format!("{}: {err}", config.platform_config.display()));
            None
        }
    };

    problems.extend(follower_problems(config)?);
    problems.extend(crate::admin::git::check(config));
    if renderer.is_some() {
        problems.extend(crate::render_roles::render_variants(
            &config.platform_config,
            &platform,
            &config.internals,
            (&config.templates_path, &links(config)),
            &config.followers,
        )?);
    }
    // One cycle shows up in every file that uses it; say it once.
    let mut seen = BTreeSet::new();
    problems.retain(|p| seen.insert(p.clone()));
    Ok(problems)
}

/// Followers still carrying the placeholder address or naming a role without templates.
fn follower_problems(config: &Config) -> Result<Vec<String>, Error> {
    let folders: BTreeSet<String> = tree::roles(&config.templates_path)?.into_iter().collect();
    let mut problems = Vec::new();
    for follower in &config.followers {
        if follower.url.contains(REPLACE_ME) {
            problems.push(format!(
                "{}: follower {} ({}) has url {}; set the machine's address",
                config.path.display(),
                follower.name.as_deref().unwrap_or("-"),
                follower.role,
                follower.url
            ));
        }
        if !folders.contains(&follower.role) {
            problems.push(format!(
                "follower {} has role '{}' but {} has no '{}' folder; add the templates or fix the role",
                follower.url,
                follower.role,
                config.templates_path.display(),
                follower.role
            ));
        }
    }
    Ok(problems)
}

/// Where the templates' symlinks may lead.
fn links(config: &Config) -> tree::LinkPolicy {
    tree::LinkPolicy::new(&config.templates_path, &config.allow_links_to)
}

/// What an operator should know but that does not stop the leader: follower URLs over plain HTTP to
/// another machine, where each notification carries the follower's key in clear text.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut warnings: Vec<String> = config
        .followers
        .iter()
        .filter(|f| cleartext_to_another_machine(&f.url))
        .map(|f| {
            format!(
                "follower {} ({}) is notified over http://: its key crosses the network in clear text; serve \
                 the follower over HTTPS (its tls.certFile/keyFile) and use an https:// URL",
                f.url, f.role
            )
        })
        .collect();
    warnings.extend(exposed_secret_files(config));
    if let Some(etcd) = &config.etcd {
        warnings.push(format!(
            "store.etcd: the settings in force are kept in etcd ({} under {}); {} is read only at the \
             platform's first start, so change settings through the admin API of any replica or with \
             `config-leader settings import <file>` (hand edits of the file are not served), and templates with \
             `config-leader templates push` (each replica renders the store's copy, not its own folder)",
            etcd.endpoints.join(", "),
            etcd.prefix,
            config.platform_config.display()
        ));
    }
    if let Some(git) = &config.git
        && let Some(named) = &git.named_elsewhere
    {
        warnings.push(format!(
            "gitRepoPath is {} but platform.yml is in {}: the settings history is kept in {} (the folder holding \
             platform.yml); set gitRepoPath to that folder to silence this",
            named.display(),
            git.repo.display(),
            git.repo.display()
        ));
    }
    for role in tree::roles(&config.templates_path).unwrap_or_default() {
        let Ok(dir) = tree::role_dir(&config.templates_path, &role) else {
            continue;
        };
        let listed = tree::list_files(&dir, &links(config)).unwrap_or_default();
        for file in tree::superseded(&listed) {
            warnings.push(format!(
                "role '{role}': {file} is not served: a file of the same name in a newer format is beside it"
            ));
        }
    }
    warnings
}

/// The files holding secrets that other users of the machine may read (or enter, for the database folder).
fn exposed_secret_files(config: &Config) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let database = config.database_path.join(crate::admin::db::FILE);
    let with_suffix = |suffix: &str| PathBuf::from(format!("{}{suffix}", database.display()));
    let files = [
        (
            config.path.clone(),
            "follower keys, the admin key and the internals",
        ),
        (
            config.platform_config.clone(),
            "the settings, SMTP password included",
        ),
        (config.credentials_file.clone(), "the initial_user password"),
        (config.database_path.clone(), "the database"),
        (
            database.clone(),
            "password hashes and every settings revision",
        ),
        (with_suffix("-wal"), "recent database writes"),
        (with_suffix("-shm"), "database pages"),
    ];
    files
        .into_iter()
        .filter_map(|(path, holds)| {
            let mode = std::fs::metadata(&path).ok()?.permissions().mode();
            (mode & 0o077 != 0).then(|| {
                let fix = if path.is_dir() { "700" } else { "600" };
                format!(
                    "{} holds {holds} and other users of this machine can read it (mode {:o}); chmod {fix} {}",
                    path.display(),
                    mode & 0o777,
                    path.display()
                )
            })
        })
        .collect()
}

fn cleartext_to_another_machine(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    if parsed.scheme() != "http" {
        return false;
    }
    let host = parsed.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_loopback(),
        Err(_) => !host.is_empty() && host != "localhost",
    }
}

/// The preview of going from settings revision `from` (default: the last recorded) to `platform.yml` on
/// disk, as text.
pub fn diff(config: &Config, from: Option<i64>) -> Result<String, Error> {
    let db = crate::admin::db::Db::open(&config.database_path, config.credentials_file.exists())?;
    let row = match from {
        Some(revision) => db.blocking().revision(revision)?,
        None => db.blocking().latest_revision()?,
    }
    .ok_or_else(|| {
        Error::BadRequest(match from {
            Some(revision) => {
                format!("no settings revision {revision}; see GET /admin/settings/history")
            }
            None => "no settings revision recorded yet (the leader records one at its first start)"
                .to_owned(),
        })
    })?;
    let before = crate::render_roles::parse(&config.platform_config, &row.content)?;
    let after = crate::render_roles::load(&config.platform_config)?;
    let preview = crate::admin::preview::preview(
        (&config.templates_path, &links(config)),
        &config.internals,
        &config.platform_config,
        &before,
        &after,
        &config.followers,
    )?;
    Ok(format!(
        "from settings revision {} to {}:\n{}",
        row.revision,
        config.platform_config.display(),
        crate::admin::preview::to_text(&preview)
    ))
}

/// Which variant of a role `render` writes.
#[derive(Debug, Clone, Default)]
pub enum RenderFor {
    /// The platform's `vars` alone.
    #[default]
    Platform,
    /// With a zone's overrides.
    Zone(String),
    /// As a follower (by name or URL) gets it: its zone and its own variables.
    Follower(String),
}

/// Writes `role`'s rendered tree (for a zone or a follower) under `out`; returns the number of files written.
pub fn render(config: &Config, role: &str, out: &Path, target: &RenderFor) -> Result<usize, Error> {
    let platform = crate::render_roles::load(&config.platform_config)?;
    let variant = match target {
        RenderFor::Platform => crate::variant::Variant::plain(role),
        RenderFor::Zone(zone) => crate::variant::Variant::new(role, Some(zone), Default::default()),
        RenderFor::Follower(name) => {
            let follower = config
                .followers
                .iter()
                .find(|f| f.name.as_deref() == Some(name.as_str()) || f.url == *name)
                .ok_or_else(|| {
                    Error::BadRequest(format!(
                        "no follower named {name:?} in {} (name it by its name or its URL)",
                        config.path.display()
                    ))
                })?;
            if follower.role != role {
                return Err(Error::BadRequest(format!(
                    "follower {name} has role {}, not {role}",
                    follower.role
                )));
            }
            follower.variant.clone()
        }
    };
    let renderer = crate::render_roles::variant_renderer(
        &config.platform_config,
        &platform,
        &config.internals,
        &variant,
    )?;
    let (files, mut errors) =
        tree::render_role(&renderer, &config.templates_path, &links(config), role)?;
    if !errors.is_empty() {
        return Err(errors.swap_remove(0));
    }
    for file in &files {
        let target = out.join(file.path.trim_start_matches('/'));
        let io = |source| Error::Write {
            path: target.clone(),
            source,
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let bytes = match file.encoding.as_deref() {
            Some(_) => base64::engine::general_purpose::STANDARD
                .decode(&file.content)
                .map_err(|err| Error::Internal(err.to_string()))?,
            None => file.content.clone().into_bytes(),
        };
        pryv_fs::write_atomic(&target, &bytes, pryv_fs::DEFAULT_FILE_MODE).map_err(io)?;
    }
    Ok(files.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cleartext_urls_to_other_machines_are_flagged() {
        for (url, flagged) in [
            ("http://10.0.0.5:6000", true),
            ("http://co1.pryv.me:6000/", true),
            ("https://co1.pryv.me:6000", false),
            ("http://127.0.0.1:6000", false),
            ("http://localhost:6000", false),
            ("http://[::1]:6000", false),
        ] {
            assert_eq!(cleartext_to_another_machine(url), flagged, "{url}");
        }
    }
}
