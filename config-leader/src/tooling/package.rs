//! `config-leader package`: one archive per machine (`<name>.tgz`) holding what that machine needs, with paths
//! relative to its `PRYV_CONF_ROOT`: its follower configuration (0600) and the compose file that runs the
//! follower, an empty `pryv/` for the follower to write, the install guide's scripts (executable), the systemd
//! units; and for the leader's machine the leader's folder (configuration, platform settings, templates, empty
//! `database/` and `log/`; never the database's content or the credentials file) with its compose file and
//! scripts. Modes are kept; owners and times are not (reproducible archives). Certificates put in
//! `data/<role>/nginx/conf/secret/` reach the other machines through `/conf`, not through the archives.
// Blocking: a CLI command (package), never on the daemon's runtime.
#![allow(clippy::disallowed_methods)]

use std::fs::File;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::config::Config;
use crate::error::Error;
use crate::tooling::scripts::{InstallFile, machine_files};

/// Folders of the leader's directory that stay on the leader machine only.
const LEADER_PRIVATE: &[&str] = &["database", "credentials.txt"];

/// Writes the archives into `out`; returns their paths.
// Long on purpose: one archive per machine, its entries listed in the order the install guide uses them.
pub fn package(config: &Config, out: &Path) -> Result<Vec<PathBuf>, Error> {
    let root = conf_root(config)?;
    std::fs::create_dir_all(out).map_err(io("create", out))?;
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
        let machine = Machine {
            role: &follower.role,
            runs_leader,
            follower_config: &follower_config,
        };
        write_archive(config, &root, &machine, &archive_path)?;
        written.push(archive_path);
    }
    Ok(written)
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let path = path.to_owned();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

/// One machine's archive: what it needs to know.
struct Machine<'a> {
    role: &'a str,
    runs_leader: bool,
    follower_config: &'a Path,
}

/// Writes one machine's archive: its follower configuration, the install files, and the leader's folder on
/// the leader's machine.
fn write_archive(
    config: &Config,
    root: &Path,
    machine: &Machine,
    archive_path: &Path,
) -> Result<(), Error> {
    let file = File::create(archive_path).map_err(io("write", archive_path))?;
    let mut archive = tar::Builder::new(GzEncoder::new(file, Compression::default()));
    let follower_bytes =
        std::fs::read(machine.follower_config).map_err(io("read", machine.follower_config))?;
    append_file(
        &mut archive,
        "config-follower/conf/config-follower.json",
        &follower_bytes,
        0o600,
    )
    .map_err(io("write", archive_path))?;
    append_dir(&mut archive, "pryv/").map_err(io("write", archive_path))?;
    let owned = owned_folders(&config.templates_path, machine.role);
    for InstallFile { path, text, mode } in machine_files(machine.role, machine.runs_leader, &owned)
    {
        append_file(&mut archive, &path, text.as_bytes(), mode)
            .map_err(io("write", archive_path))?;
    }
    if machine.runs_leader {
        append_leader(&mut archive, &root.join("config-leader"))?;
        for folder in ["config-leader/database/", "config-leader/log/"] {
            append_dir(&mut archive, folder).map_err(io("write", archive_path))?;
        }
    }
    archive
        .into_inner()
        .and_then(GzEncoder::finish)
        .map(drop)
        .map_err(io("write", archive_path))
}

/// `PRYV_CONF_ROOT` of the leader machine: the configuration file lives in `<root>/config-leader/conf/`.
fn conf_root(config: &Config) -> Result<PathBuf, Error> {
    let absolute = std::path::absolute(&config.path).map_err(|source| Error::Io {
        action: "resolve",
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
    let text = std::fs::read_to_string(path).ok()?;
    pryv_protocol::follower_file::FollowerFile::from_json(&text)
        .ok()?
        .0
        .leader
        .auth
}

/// The folders the role's containers write: every `<service>/data` and `<service>/log` of its templates, as
/// paths under `PRYV_CONF_ROOT`.
fn owned_folders(templates: &Path, role: &str) -> Vec<String> {
    let mut owned = Vec::new();
    let Ok(services) = std::fs::read_dir(templates.join(role)) else {
        return owned;
    };
    let mut services: Vec<_> = services.flatten().filter(|e| e.path().is_dir()).collect();
    services.sort_by_key(std::fs::DirEntry::file_name);
    for service in services {
        for zone in ["data", "log"] {
            if service.path().join(zone).is_dir() {
                owned.push(format!(
                    "pryv/{}/{zone}",
                    service.file_name().to_string_lossy()
                ));
            }
        }
    }
    owned
}

type Archive = tar::Builder<GzEncoder<File>>;

/// A file with an explicit mode, owner root, time 0.
fn append_file(archive: &mut Archive, path: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    archive.append_data(&mut header, path, bytes)
}

fn append_dir(archive: &mut Archive, path: &str) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(0);
    header.set_mode(0o755);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Directory);
    archive.append_data(&mut header, path, std::io::empty())
}

/// The leader's folder, each file with its mode on disk (keys and credentials stay 0600).
fn append_leader(archive: &mut Archive, leader_dir: &Path) -> Result<(), Error> {
    let entries = std::fs::read_dir(leader_dir).map_err(|source| Error::Io {
        action: "list",
        path: leader_dir.to_owned(),
        source,
    })?;
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if LEADER_PRIVATE.contains(&name.as_str()) {
            continue;
        }
        append_tree(archive, &entry.path(), &format!("config-leader/{name}"))?;
    }
    Ok(())
}

fn append_tree(archive: &mut Archive, path: &Path, inside: &str) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let io = |action| {
        move |source| Error::Io {
            action,
            path: path.to_owned(),
            source,
        }
    };
    let meta = std::fs::metadata(path).map_err(io("read"))?;
    if meta.is_dir() {
        append_dir(archive, &format!("{inside}/")).map_err(io("add to the archive"))?;
        let mut children: Vec<_> = std::fs::read_dir(path)
            .map_err(io("list"))?
            .flatten()
            .collect();
        children.sort_by_key(std::fs::DirEntry::file_name);
        for child in children {
            let name = child.file_name().to_string_lossy().into_owned();
            append_tree(archive, &child.path(), &format!("{inside}/{name}"))?;
        }
        Ok(())
    } else {
        let bytes = std::fs::read(path).map_err(io("read"))?;
        append_file(archive, inside, &bytes, meta.permissions().mode() & 0o777)
            .map_err(io("add to the archive"))
    }
}
