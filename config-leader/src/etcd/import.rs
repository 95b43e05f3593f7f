//! `config-leader settings import <file>`: in etcd mode, hand edits of `platform.yml` are not watched (each
//! replica renders from its copy of the store's settings); an edited file is imported instead, validated as
//! a `PUT /admin/settings` is (every role rendered in every zone and for every follower's own variables, every
//! problem listed) and saved as the next revision, which every replica takes through its watch.
// A CLI command: its file reads run before the runtime's work.
#![allow(clippy::disallowed_methods)]

use std::path::Path;

use super::history::SharedHistory;
use crate::config::Config;
use crate::error::Error;

/// Saves revisions tried when replicas keep saving at the same time.
const ATTEMPTS: usize = 5;

/// Imports `file` as the next settings revision; what to tell the operator.
pub fn import(config: &Config, file: &Path, message: Option<String>) -> Result<String, Error> {
    let Some(store) = config.etcd.clone() else {
        return Err(Error::BadRequest(format!(
            "settings import is for store.etcd; with one leader, edit {} (the leader records the edit)",
            config.platform_config.display()
        )));
    };
    let text = std::fs::read_to_string(file).map_err(|source| Error::Io {
        action: "read",
        path: file.to_owned(),
        source,
    })?;
    let platform = crate::render_roles::parse(file, &text)?;
    platform
        .ensure_settings()
        .map_err(|err| Error::InvalidSettings(vec![err.to_string()]))?;
    super::on_store(&store, |etcd| async move {
        let mut config = config.clone();
        super::secrets::resolve(&etcd, &mut config).await?;
        let links = crate::tree::LinkPolicy::new(&config.templates_path, &config.allow_links_to);
        let problems = crate::render_roles::render_variants(
            file,
            &platform,
            &config.internals,
            (&config.templates_path, &links),
            &config.followers,
        )?;
        if !problems.is_empty() {
            return Err(Error::InvalidSettings(problems));
        }
        let history = SharedHistory::new(etcd);
        let message = message.unwrap_or_else(|| format!("imported from {}", file.display()));
        for _ in 0..ATTEMPTS {
            let latest = history.latest().await?.map_or(0, |row| row.revision);
            let saved = history
                .append(
                    latest,
                    "import",
                    pryv_daemon::now_unix_i64(),
                    &message,
                    &text,
                )
                .await?;
            if let Some(revision) = saved {
                return Ok(format!(
                    "saved as settings revision {revision}; every replica serves it once its watch takes it\n"
                ));
            }
        }
        Err(Error::Conflict(
            "other replicas keep saving settings at the same time; run the import again".into(),
        ))
    })
}

/// `config-leader templates push [--folder F]`: validates the templates folder (every role renders in every
/// zone and for every follower's own variables, with the settings in force) and makes it the tree every
/// replica serves. What to tell the operator.
pub fn push_templates(config: &Config, folder: Option<&Path>) -> Result<String, Error> {
    let Some(store) = config.etcd.clone() else {
        return Err(Error::BadRequest(format!(
            "templates push is for store.etcd; with one leader, edit the templates in {} (the leader watches them)",
            config.templates_path.display()
        )));
    };
    let folder = folder.map_or_else(|| config.templates_path.clone(), Path::to_owned);
    let files = super::templates::read_folder(&folder)?;
    super::on_store(&store, |etcd| async move {
        let mut config = config.clone();
        super::secrets::resolve(&etcd, &mut config).await?;
        let latest = SharedHistory::new(etcd.clone())
            .latest()
            .await?
            .ok_or_else(|| {
                Error::Etcd("the store holds no settings yet; start a replica first".into())
            })?;
        let platform = crate::render_roles::parse(&config.platform_config, &latest.content)?;
        let links = crate::tree::LinkPolicy::new(&folder, &config.allow_links_to);
        let problems = crate::render_roles::render_variants(
            &config.platform_config,
            &platform,
            &config.internals,
            (&folder, &links),
            &config.followers,
        )?;
        if !problems.is_empty() {
            return Err(Error::InvalidSettings(problems));
        }
        let shared = super::templates::SharedTemplates::new(etcd);
        let replacing = shared.current().await?;
        let hash = super::templates::hash_of(&files);
        if replacing.as_deref() == Some(hash.as_str()) {
            return Ok(format!(
                "the templates in force are already these ({hash}); nothing pushed\n"
            ));
        }
        if !shared.push(&files, replacing.as_deref()).await? {
            return Err(Error::Conflict(
                "other templates were pushed meanwhile; check them and push again".into(),
            ));
        }
        Ok(format!(
            "pushed {} file(s) from {} as templates {hash}; every replica serves them once its watch takes them\n",
            files.len(),
            folder.display()
        ))
    })
}
