//! `config-leader init`: lays out a new platform from our embedded templates — the leader's folder
//! (`config-leader/conf/config-leader.json`, `platform.yml`, `data/<role>/...`) and one follower configuration
//! per machine, each with a fresh random key written both in the leader's `followers` and in that machine's
//! `config-follower.json`. Never overwrites an existing file unless forced.
// Blocking: a CLI command (init), never on the daemon's runtime.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};

use include_dir::{Dir, DirEntry, include_dir};
use serde_json::{Value, json};

use pryv_protocol::follower_file::{
    self as file, FOLLOWER_DEFAULT_PORT, FollowerFile, LEADER_DEFAULT_PORT,
};

use crate::error::Error;
use crate::secret;

/// Our templates, compiled in: `templates/<topology>/{platform.yml,data/<role>/...}`.
static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../templates");

/// Internal variables every topology uses; generated at the leader's first start.
const INTERNALS: &[&str] = &[
    "CORE_SYSTEM_KEY",
    "REGISTER_SYSTEM_KEY",
    "MAIL_SYSTEM_KEY",
    "REDIS_PASSWORD",
    "configLeaderTokenSecret",
];

/// Shape of the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Topology {
    /// One machine, role `singlenode`.
    SingleNode,
    /// `reg-master` (also runs the leader), `core-N`, `static`, optional `reg-slave`.
    Cluster,
}

impl Topology {
    fn folder(self) -> &'static str {
        match self {
            Topology::SingleNode => "single-node",
            Topology::Cluster => "cluster",
        }
    }
}

/// What to lay out.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub topology: Topology,
    pub cores: usize,
    pub reg_slave: bool,
    /// `PRYV_CONF_ROOT` of the leader's machine.
    pub out: PathBuf,
    /// URL followers use to reach the leader.
    pub leader_url: String,
    pub force: bool,
}

/// One machine of the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// `singlenode`, `reg-master`, `core-1`, ...
    pub name: String,
    pub role: String,
    /// The machine where the leader runs (its follower reaches the leader on loopback).
    pub runs_leader: bool,
}

/// The machines of a topology.
pub fn machines(topology: Topology, cores: usize, reg_slave: bool) -> Vec<Machine> {
    let machine = |name: String, role: &str, runs_leader: bool| Machine {
        name,
        role: role.to_owned(),
        runs_leader,
    };
    match topology {
        Topology::SingleNode => vec![machine("singlenode".into(), "singlenode", true)],
        Topology::Cluster => {
            let mut list = vec![machine("reg-master".into(), "reg-master", true)];
            list.extend((1..=cores.max(1)).map(|i| machine(format!("core-{i}"), "core", false)));
            list.push(machine("static".into(), "static", false));
            if reg_slave {
                list.push(machine("reg-slave".into(), "reg-slave", false));
            }
            list
        }
    }
}

/// Where a machine's follower configuration is written under the leader's `PRYV_CONF_ROOT`: the leader's
/// own machine at `config-follower/`, the others under `machines/<name>/`.
pub fn machine_root(out: &Path, machine: &Machine) -> PathBuf {
    if machine.runs_leader {
        out.to_owned()
    } else {
        out.join("machines").join(&machine.name)
    }
}

/// A Pryv.io release's templates, read from its tarball or unpacked folder: the template platform file and
/// the role trees, and what the release holds elsewhere (reported, not placed).
#[derive(Debug, Default)]
pub struct Release {
    pub platform: String,
    /// `(path under data/, bytes)`.
    pub data: Vec<(PathBuf, Vec<u8>)>,
    pub unplaced: Vec<String>,
}

const RELEASE_PLATFORM: &str = "config-leader/conf/template-platform.yml";
const RELEASE_DATA: &str = "config-leader/data/";

impl Release {
    /// Reads a `.tgz`/`.tar.gz`/`.tar` file or a folder in the release layout.
    // Long on purpose: reading a folder or an archive and sorting its entries is one pass over the release.
    pub fn read(source: &Path) -> Result<Self, Error> {
        let io = |source_err| Error::Io {
            action: "read",
            path: source.to_owned(),
            source: source_err,
        };
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        if source.is_dir() {
            walk_folder(source, source, &mut entries).map_err(io)?;
        } else {
            entries = read_archive(source).map_err(io)?;
        }
        let mut release = Self::default();
        for (path, bytes) in entries {
            // Releases are packed with or without a leading folder (`pryv.io-1.9.2/config-leader/...`).
            let path = path.trim_start_matches("./").to_owned();
            let at = path
                .find("config-leader/")
                .map_or(path.as_str(), |i| &path[i..]);
            if at == RELEASE_PLATFORM {
                release.platform = String::from_utf8(bytes).map_err(|_| Error::Config {
                    path: source.to_owned(),
                    problems: vec![format!("{RELEASE_PLATFORM} is not UTF-8 text")],
                })?;
            } else if let Some(relative) = at.strip_prefix(RELEASE_DATA)
                && !relative.split('/').any(|c| c == ".." || c.is_empty())
            {
                release.data.push((PathBuf::from(relative), bytes));
            } else {
                release.unplaced.push(path);
            }
        }
        if release.platform.is_empty() {
            return Err(Error::Config {
                path: source.to_owned(),
                problems: vec![format!(
                    "no {RELEASE_PLATFORM} in this release; give a Pryv.io release tarball or its unpacked folder"
                )],
            });
        }
        if release.data.is_empty() {
            return Err(Error::Config {
                path: source.to_owned(),
                problems: vec![format!(
                    "no role templates under {RELEASE_DATA} in this release"
                )],
            });
        }
        Ok(release)
    }

    /// Single node when the release has a `singlenode` role, else cluster.
    pub fn topology(&self) -> Topology {
        if self.data.iter().any(|(p, _)| p.starts_with("singlenode")) {
            Topology::SingleNode
        } else {
            Topology::Cluster
        }
    }
}

/// The files of a `.tar` or `.tar.gz` release (other entries skipped).
fn read_archive(source: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let file = std::fs::File::open(source)?;
    let reader: Box<dyn std::io::Read> = if source.to_string_lossy().ends_with(".tar") {
        Box::new(file)
    } else {
        Box::new(flate2::read::GzDecoder::new(file))
    };
    let mut entries = Vec::new();
    for entry in tar::Archive::new(reader).entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes)?;
        entries.push((path, bytes));
    }
    Ok(entries)
}

fn walk_folder(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            walk_folder(root, &path, out)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            out.push((
                relative.to_string_lossy().into_owned(),
                std::fs::read(&path)?,
            ));
        }
    }
    Ok(())
}

/// Lays everything out from our embedded templates; returns the files written.
pub fn init(options: &InitOptions) -> Result<Vec<PathBuf>, Error> {
    let topology = TEMPLATES
        .get_dir(options.topology.folder())
        .ok_or_else(|| {
            Error::Internal(format!(
                "no embedded templates for {}",
                options.topology.folder()
            ))
        })?;
    let mut data = Vec::new();
    collect(topology, Path::new(""), "data", &mut data);
    let platform = topology
        .get_file(format!("{}/platform.yml", options.topology.folder()))
        .ok_or_else(|| Error::Internal("embedded platform.yml missing".into()))?;
    let release = Release {
        platform: String::from_utf8_lossy(platform.contents()).into_owned(),
        data,
        unplaced: Vec::new(),
    };
    init_from(options, &release)
}

/// The files to write: (path, bytes).
type Plan = Vec<(PathBuf, Vec<u8>)>;

/// Lays everything out from a release's templates, exactly as from ours; returns the files written.
pub fn init_from(options: &InitOptions, release: &Release) -> Result<Vec<PathBuf>, Error> {
    let machines = machines(options.topology, options.cores, options.reg_slave);
    check_roles(options, release, &machines)?;
    let leader_dir = options.out.join("config-leader");
    let mut plan: Plan = release
        .data
        .iter()
        .map(|(relative, bytes)| (leader_dir.join("data").join(relative), bytes.clone()))
        .collect();
    let platform_text = with_cores(&release.platform, options.cores)?;
    plan.push((
        leader_dir.join("conf/platform.yml"),
        platform_text.clone().into_bytes(),
    ));
    plan.push((
        leader_dir.join("conf/template-platform.yml"),
        platform_text.into_bytes(),
    ));
    let followers = plan_followers(options, &machines, &mut plan)?;
    plan.push((
        leader_dir.join("conf/config-leader.json"),
        pretty(&leader_config(followers)),
    ));
    if !options.force {
        refuse_overwrites(options, &plan)?;
    }
    write_plan(&plan)?;
    Ok(plan.into_iter().map(|(path, _)| path).collect())
}

/// Every machine's role has a templates folder.
fn check_roles(
    options: &InitOptions,
    release: &Release,
    machines: &[Machine],
) -> Result<(), Error> {
    let roles: std::collections::BTreeSet<String> = release
        .data
        .iter()
        .filter_map(|(p, _)| p.iter().next().map(|r| r.to_string_lossy().into_owned()))
        .collect();
    let missing: Vec<&str> = machines
        .iter()
        .map(|m| m.role.as_str())
        .filter(|r| !roles.contains(*r))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Config {
        path: options.out.clone(),
        problems: vec![format!(
            "the templates have no folder for role(s) {}; they have: {}",
            missing.join(", "),
            roles.iter().cloned().collect::<Vec<_>>().join(", ")
        )],
    })
}

/// One `config-follower.json` per machine, each with a fresh key; returns the leader's `followers`.
fn plan_followers(
    options: &InitOptions,
    machines: &[Machine],
    plan: &mut Plan,
) -> Result<serde_json::Map<String, Value>, Error> {
    let mut followers = serde_json::Map::new();
    for machine in machines {
        let key = secret::generate();
        let leader_url = if machine.runs_leader {
            format!("http://127.0.0.1:{LEADER_DEFAULT_PORT}")
        } else {
            options.leader_url.clone()
        };
        followers.insert(
            key.clone(),
            json!({"url": format!("http://{}:{FOLLOWER_DEFAULT_PORT}", machine_host(machine)), "role": machine.role, "name": machine.name}),
        );
        let follower = FollowerFile {
            http: file::Http {
                ip: Some("0.0.0.0".into()),
                port: Some(FOLLOWER_DEFAULT_PORT.into()),
            },
            leader: file::Leader {
                url: Some(leader_url),
                auth: Some(key),
                ..file::Leader::default()
            },
            paths: file::Paths {
                data_folder: Some("../../pryv/".into()),
            },
            ..FollowerFile::default()
        };
        let follower = serde_json::to_value(&follower)?;
        let path =
            machine_root(&options.out, machine).join("config-follower/conf/config-follower.json");
        plan.push((path, pretty(&follower)));
    }
    Ok(followers)
}

/// `config-leader.json`: every internal secret and the admin key generated at the first start.
fn leader_config(followers: serde_json::Map<String, Value>) -> Value {
    let internals: serde_json::Map<String, Value> = INTERNALS
        .iter()
        .map(|name| ((*name).to_owned(), json!("SECRET")))
        .collect();
    json!({
        "http": {"ip": "0.0.0.0", "port": LEADER_DEFAULT_PORT},
        "templatesPath": "../data",
        "databasePath": "../database",
        "platformSettings": {"platformConfig": "platform.yml", "platformTemplate": "template-platform.yml"},
        "credentials": {"filePath": "../credentials.txt"},
        "adminKey": "SECRET",
        "internals": internals,
        "followers": followers
    })
}

fn refuse_overwrites(options: &InitOptions, plan: &Plan) -> Result<(), Error> {
    let existing: Vec<String> = plan
        .iter()
        .filter(|(path, _)| path.exists())
        .map(|(path, _)| path.display().to_string())
        .collect();
    if existing.is_empty() {
        return Ok(());
    }
    Err(Error::Config {
        path: options.out.clone(),
        problems: vec![format!(
            "{} file(s) already exist (e.g. {}); nothing was written. Use --force to overwrite them",
            existing.len(),
            existing[0]
        )],
    })
}

/// Writes the plan atomically, file by file; configuration files (keys, settings with passwords) 0600.
fn write_plan(plan: &Plan) -> Result<(), Error> {
    for (path, bytes) in plan {
        let io = |source| Error::Write {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mode = if path.ends_with("config-leader.json")
            || path.ends_with("config-follower.json")
            || path.ends_with("platform.yml")
        {
            0o600
        } else {
            pryv_fs::DEFAULT_FILE_MODE
        };
        pryv_fs::write_atomic(path, bytes, mode).map_err(io)?;
    }
    Ok(())
}

/// The cluster template lists core 1; add `CORE_N_IP_ADDRESS` and a `coN` entry of `HOSTINGS_AND_CORES` for
/// each further core (text insertion after the core-1 lines, so the template's comments stay).
fn with_cores(text: &str, cores: usize) -> Result<String, Error> {
    const SETTING: &str = "      CORE_1_IP_ADDRESS:\n        value: REPLACE_ME\n        description: \"Public IP address of core 1\"\n";
    const HOSTING: &str = "            co1:\n              ip: CORE_1_IP_ADDRESS\n";
    if cores <= 1 || !text.contains(SETTING) {
        return Ok(text.to_owned());
    }
    if !text.contains(HOSTING) {
        return Err(Error::Internal(
            "cluster template: HOSTINGS_AND_CORES entry of core 1 not found".into(),
        ));
    }
    let settings: String = (2..=cores)
        .map(|n| {
            SETTING
                .replace("CORE_1", &format!("CORE_{n}"))
                .replace("core 1", &format!("core {n}"))
        })
        .collect();
    let hostings: String = (2..=cores)
        .map(|n| {
            HOSTING
                .replace("co1", &format!("co{n}"))
                .replace("CORE_1", &format!("CORE_{n}"))
        })
        .collect();
    Ok(text
        .replace(SETTING, &format!("{SETTING}{settings}"))
        .replace(HOSTING, &format!("{HOSTING}{hostings}")))
}

/// Placeholder host for a follower URL: the operator replaces it with the machine's address.
fn machine_host(machine: &Machine) -> String {
    if machine.runs_leader {
        "127.0.0.1".to_owned()
    } else {
        format!("REPLACE_ME-{}", machine.name)
    }
}

fn pretty(value: &Value) -> Vec<u8> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text.into_bytes()
}

/// Every file under `dir`'s sub-folder `prefix`, mapped under `target`.
fn collect(dir: &Dir<'static>, target: &Path, prefix: &str, plan: &mut Vec<(PathBuf, Vec<u8>)>) {
    let root = dir.path().join(prefix);
    let Some(data) = dir.get_dir(&root) else {
        return;
    };
    fn walk(dir: &Dir<'static>, root: &Path, target: &Path, plan: &mut Vec<(PathBuf, Vec<u8>)>) {
        for entry in dir.entries() {
            match entry {
                DirEntry::Dir(sub) => walk(sub, root, target, plan),
                DirEntry::File(file) => {
                    if let Ok(relative) = file.path().strip_prefix(root) {
                        plan.push((target.join(relative), file.contents().to_vec()));
                    }
                }
            }
        }
    }
    walk(data, &root, target, plan);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn further_cores_get_a_setting_and_a_hosting_entry() {
        let template = TEMPLATES
            .get_file("cluster/platform.yml")
            .unwrap()
            .contents_utf8()
            .unwrap();
        let text = with_cores(template, 3).unwrap();
        let platform = pryv_render::PlatformFile::parse(&text).unwrap();
        let names: Vec<_> = platform.settings().map(|(_, n, _)| n.to_owned()).collect();
        for expected in [
            "CORE_1_IP_ADDRESS",
            "CORE_2_IP_ADDRESS",
            "CORE_3_IP_ADDRESS",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing");
        }
        let hostings =
            &platform.vars["MACHINES_AND_PLATFORM_SETTINGS"].settings["HOSTINGS_AND_CORES"].value;
        assert_eq!(hostings["hosting1"]["co3"]["ip"], "CORE_3_IP_ADDRESS");
        assert_eq!(with_cores(template, 1).unwrap(), template);
    }

    #[test]
    fn cluster_machines() {
        let names: Vec<_> = machines(Topology::Cluster, 2, true)
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(
            names,
            ["reg-master", "core-1", "core-2", "static", "reg-slave"]
        );
        assert_eq!(machines(Topology::SingleNode, 5, true).len(), 1);
    }

    #[test]
    fn single_node_layout_with_matching_keys_and_no_overwrite() {
        let out = tempfile::tempdir().unwrap();
        let options = InitOptions {
            topology: Topology::SingleNode,
            cores: 1,
            reg_slave: false,
            out: out.path().to_owned(),
            leader_url: "http://REPLACE_ME:7000".into(),
            force: false,
        };
        init(&options).unwrap();
        let leader: Value = serde_json::from_slice(
            &std::fs::read(out.path().join("config-leader/conf/config-leader.json")).unwrap(),
        )
        .unwrap();
        let follower: Value = serde_json::from_slice(
            &std::fs::read(out.path().join("config-follower/conf/config-follower.json")).unwrap(),
        )
        .unwrap();
        let key = follower["leader"]["auth"].as_str().unwrap();
        assert_eq!(key.len(), 32);
        assert_eq!(leader["followers"][key]["role"], "singlenode");
        assert!(
            out.path()
                .join("config-leader/data/singlenode/pryv.yml")
                .is_file()
        );
        assert!(out.path().join("config-leader/conf/platform.yml").is_file());

        std::fs::write(out.path().join("config-leader/conf/platform.yml"), "mine").unwrap();
        let err = init(&options).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        assert_eq!(
            std::fs::read_to_string(out.path().join("config-leader/conf/platform.yml")).unwrap(),
            "mine"
        );
        init(&InitOptions {
            force: true,
            ..options
        })
        .unwrap();
        assert_ne!(
            std::fs::read_to_string(out.path().join("config-leader/conf/platform.yml")).unwrap(),
            "mine"
        );
    }
}
