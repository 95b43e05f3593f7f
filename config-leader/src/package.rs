//! `config-leader package`: one archive per machine (`<name>.tgz`) holding what that machine needs, with paths
//! relative to its `PRYV_CONF_ROOT`: its follower configuration, and for the leader's machine the leader's folder
//! (configuration, platform settings, templates; never the database or the credentials file). Certificates put
//! in `data/<role>/nginx/conf/secret/` reach the other machines through `/conf`, not through the archives.

use std::fs::File;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::config::Config;
use crate::error::Error;

/// Folders of the leader's directory that stay on the leader machine only.
const LEADER_PRIVATE: &[&str] = &["database", "credentials.txt"];

/// Writes the archives into `out`; returns their paths.
pub fn package(config: &Config, out: &Path) -> Result<Vec<PathBuf>, Error> {
    let root = conf_root(config)?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let leader_follower = root.join("config-follower/conf/config-follower.json");
    let mut written = Vec::new();
    for (index, follower) in config.followers.iter().enumerate() {
        let name = follower
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", follower.role, index + 1));
        let own = root
            .join("machines")
            .join(&name)
            .join("config-follower/conf/config-follower.json");
        let runs_leader = !own.exists()
            && follower_key_of(&leader_follower).as_deref() == Some(follower.key.expose());
        let follower_config = if runs_leader {
            leader_follower.clone()
        } else {
            own
        };
        if !follower_config.is_file() {
            return Err(Error::Config {
                path: config.path.clone(),
                problems: vec![format!(
                    "no follower configuration for machine '{name}' (role {}); expected {}. Run `config-leader init` or create it",
                    follower.role,
                    follower_config.display()
                )],
            });
        }
        let archive_path = out.join(format!("{name}.tgz"));
        let file = File::create(&archive_path).map_err(io(&archive_path))?;
        let mut archive = tar::Builder::new(GzEncoder::new(file, Compression::default()));
        archive.mode(tar::HeaderMode::Deterministic);
        archive
            .append_path_with_name(
                &follower_config,
                "config-follower/conf/config-follower.json",
            )
            .map_err(io(&follower_config))?;
        if runs_leader {
            append_leader(&mut archive, &root.join("config-leader"))?;
        }
        archive
            .into_inner()
            .and_then(GzEncoder::finish)
            .map_err(io(&archive_path))?;
        written.push(archive_path);
    }
    Ok(written)
}

/// `PRYV_CONF_ROOT` of the leader machine: the configuration file lives in `<root>/config-leader/conf/`.
fn conf_root(config: &Config) -> Result<PathBuf, Error> {
    let absolute = std::path::absolute(&config.path).map_err(|source| Error::Io {
        path: config.path.clone(),
        source,
    })?;
    absolute
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(Path::to_owned)
        .ok_or_else(|| Error::Config {
            path: config.path.clone(),
            problems: vec![
                "expected the layout <PRYV_CONF_ROOT>/config-leader/conf/config-leader.json".into(),
            ],
        })
}

fn follower_key_of(path: &Path) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["leader"]["auth"].as_str().map(str::to_owned)
}

fn append_leader(
    archive: &mut tar::Builder<GzEncoder<File>>,
    leader_dir: &Path,
) -> Result<(), Error> {
    let entries = std::fs::read_dir(leader_dir).map_err(|source| Error::Io {
        path: leader_dir.to_owned(),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if LEADER_PRIVATE.contains(&name.as_str()) {
            continue;
        }
        let path = entry.path();
        let inside = format!("config-leader/{name}");
        let appended = if path.is_dir() {
            archive.append_dir_all(&inside, &path)
        } else {
            archive.append_path_with_name(&path, &inside)
        };
        appended.map_err(|source| Error::Io { path, source })?;
    }
    Ok(())
}
