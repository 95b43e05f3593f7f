//! Applying a leader's tree to the data folder: path checks, optional per-service validation on a staged
//! copy, atomic writes of changed files only, removal of files this follower wrote before and the leader no
//! longer sends (tracked in a manifest), and a record of its own writes so the watcher can ignore them.
// Blocking: writes the tree; called through spawn_blocking (the apply) and by the revert of the health gate.
#![allow(clippy::disallowed_methods)]

use crate::error::Error;
use crate::state_dir::StateDir;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use base64::Engine;
use pryv_protocol::{BASE64, ConfFile, NotifyResponse, RejectedFile, Scrubber};
use serde::{Deserialize, Serialize};

use crate::paths::{EntryPath, SafePath, check_parents, classify};

/// Folder (inside the data folder) holding the follower's own bookkeeping.
pub use crate::state_dir::STATE_DIR;
/// Name prefix of the staged copies validation commands run on (inside [`STATE_DIR`]).
pub const STAGE_PREFIX: &str = "stage-";
const MANIFEST: &str = "manifest.json";

/// Identity of a file's current state: a rename, a write or a `touch` all change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    ino: u64,
    mtime_ns: i128,
    size: u64,
}

impl Fingerprint {
    pub fn of(path: &Path) -> Option<Self> {
        std::fs::symlink_metadata(path).ok().map(|m| Self {
            ino: m.ino(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            size: m.size(),
        })
    }
}

/// What the follower itself last did to each path (`None` = removed), so the watcher can tell its own changes
/// from an operator's.
#[derive(Debug, Default)]
pub struct OwnWrites(Mutex<HashMap<PathBuf, Option<Fingerprint>>>);

impl OwnWrites {
    fn record(&self, path: PathBuf) {
        let fingerprint = Fingerprint::of(&path);
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(path, fingerprint);
    }

    /// True when `path` is exactly as the follower left it (its own write or removal).
    pub fn is_own(&self, path: &Path) -> bool {
        let own = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        matches!(own.get(path), Some(recorded) if *recorded == Fingerprint::of(path))
    }
}

/// Result of applying a tree.
#[derive(Debug, Default)]
pub struct Applied {
    pub report: NotifyResponse,
    /// Absolute paths written or removed.
    pub changed: Vec<PathBuf>,
    /// What the disk held before, to put it back if the new files leave a service unhealthy.
    pub backup: Backup,
}

/// The bytes of every path an apply was about to change (`None`: the path did not exist) and the manifest
/// before it.
#[derive(Debug, Default, Clone)]
pub struct Backup {
    files: Vec<(PathBuf, Option<Vec<u8>>)>,
    manifest: Manifest,
}

/// [`Backup`] as saved on disk (contents in base64).
#[derive(Serialize, Deserialize)]
struct SavedBackup {
    files: Vec<(PathBuf, Option<String>)>,
    manifest: Manifest,
}

impl Serialize for Backup {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let engine = base64::engine::general_purpose::STANDARD;
        SavedBackup {
            files: self
                .files
                .iter()
                .map(|(path, bytes)| (path.clone(), bytes.as_ref().map(|b| engine.encode(b))))
                .collect(),
            manifest: self.manifest.clone(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Backup {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let saved = SavedBackup::deserialize(deserializer)?;
        let engine = base64::engine::general_purpose::STANDARD;
        let files = saved
            .files
            .into_iter()
            .map(|(path, text)| {
                let bytes = text.map(|t| engine.decode(t)).transpose();
                bytes.map(|b| (path, b)).map_err(serde::de::Error::custom)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            files,
            manifest: saved.manifest,
        })
    }
}

impl Backup {
    fn take(paths: &[PathBuf], manifest: &Manifest) -> Self {
        Self {
            files: paths
                .iter()
                .map(|path| (path.clone(), std::fs::read(path).ok()))
                .collect(),
            manifest: manifest.clone(),
        }
    }

    /// Puts every file back as it was (removing the ones that were new) and the manifest with them. Returns
    /// the paths changed, and a sentence per path that could not be restored.
    pub fn restore(&self, data_folder: &Path, own: &OwnWrites) -> (Vec<PathBuf>, Vec<String>) {
        let mut changed = Vec::new();
        let mut errors = Vec::new();
        for (path, bytes) in &self.files {
            let restored = match bytes {
                Some(bytes) => path
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| pryv_fs::write_atomic(path, bytes, pryv_fs::DEFAULT_FILE_MODE)),
                None => match std::fs::remove_file(path) {
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    other => other,
                },
            };
            match restored {
                Ok(()) => {
                    own.record(path.clone());
                    changed.push(path.clone());
                }
                Err(err) => errors.push(format!("{}: {err}", path.display())),
            }
        }
        if let Err(err) = write_manifest(data_folder, &self.manifest) {
            errors.push(format!("manifest: {err}"));
        }
        (changed, errors)
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Manifest {
    files: BTreeSet<String>,
    /// Files found in the writable zones when the manifest had to be rebuilt, that the leader's tree does not
    /// have: perhaps written by this follower for an older tree, perhaps made by hand. Reported by every apply
    /// until they are gone or an operator confirms their removal.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    unclaimed: BTreeSet<String>,
}

/// How much of its own tree an apply may remove.
#[derive(Debug, Clone, Copy)]
pub struct RemovalGuard {
    /// Largest share (percent) of the files written before that one tree may remove.
    pub max_percent: u8,
    /// The operator confirmed the removals: no limit.
    pub confirmed: bool,
}

impl RemovalGuard {
    pub const OFF: Self = Self {
        max_percent: 100,
        confirmed: true,
    };

    /// Why removing `stale` of `previous` files is refused, if it is.
    fn refuses(&self, stale: usize, previous: usize) -> Option<String> {
        if self.confirmed || stale == 0 {
            return None;
        }
        if stale == previous {
            return Some(format!(
                "the leader's tree would remove every one of the {previous} files this follower wrote \
                 (an empty or missing template folder?); nothing was changed. If that is intended, notify \
                 with {{\"confirmRemovals\": true}}"
            ));
        }
        let percent = stale * 100 / previous;
        (percent > usize::from(self.max_percent)).then(|| {
            format!(
                "the leader's tree would remove {stale} of the {previous} files this follower wrote \
                 ({percent} %, more than apply.maxRemovalPercent = {} %); nothing was changed. If that is \
                 intended, notify with {{\"confirmRemovals\": true}}",
                self.max_percent
            )
        })
    }
}

/// Records what an apply owes for the paths it is about to change; `Err` stops it before any write.
pub type BeforeChanges<'a> = dyn Fn(&[PathBuf], &Backup) -> Result<(), Error> + 'a;

/// Writes `files` under `data_folder`. One bad entry never stops the others; it is reported. A tree that
/// removes more than `guard` allows is refused whole (`Err`, nothing touched). `before_changes` is called
/// with every path about to be written or removed, before the first change, so the caller can persist what
/// it must do about them (a crash mid-apply then loses nothing), and with what the disk held before; when it
/// cannot (`Err`), nothing is touched. A manifest that cannot be parsed is rebuilt (files not accounted for
/// are reported in `problems`); one that cannot be saved is a problem too: either makes the apply incomplete.
pub fn apply(
    data_folder: &Path,
    files: &[ConfFile],
    validators: &BTreeMap<String, String>,
    own: &OwnWrites,
    guard: RemovalGuard,
    before_changes: &BeforeChanges,
) -> Result<Applied, Error> {
    let mut applied = Applied::default();
    let (mut wanted, pending) = sort_entries(data_folder, files, &mut applied);
    let previous = match read_manifest(data_folder) {
        Ok(previous) => previous,
        Err(unreadable) => rebuild_manifest(data_folder, &wanted, &unreadable.to_string()),
    };
    let mut stale: Vec<String> = previous.files.difference(&wanted).cloned().collect();
    if let Some(reason) = guard.refuses(stale.len(), previous.files.len()) {
        return Err(Error::Refused(reason));
    }
    let mut unclaimed = still_unclaimed(data_folder, &previous, &wanted);
    if guard.confirmed {
        stale.extend(std::mem::take(&mut unclaimed));
    }
    let refused = validate_staged(data_folder, &pending, validators);
    let about_to_change: Vec<PathBuf> = pending
        .iter()
        .filter(|(safe, _)| {
            !safe
                .service
                .as_ref()
                .is_some_and(|s| refused.contains_key(s))
        })
        .map(|(safe, _)| safe.absolute(data_folder))
        .chain(stale.iter().map(|stale| data_folder.join(stale)))
        .collect();
    if !about_to_change.is_empty() {
        applied.backup = Backup::take(&about_to_change, &previous);
        // What is owed for these paths could not be recorded: a crash after the writes would lose it.
        before_changes(&about_to_change, &applied.backup)?;
    }
    write_pending(data_folder, pending, &refused, own, &mut applied);
    for kept in remove_stale(data_folder, &stale, own, &mut applied) {
        wanted.insert(kept);
    }
    if !unclaimed.is_empty() {
        applied.report.problems.push(unclaimed_problem(&unclaimed));
    }
    let manifest = Manifest {
        files: wanted,
        unclaimed,
    };
    if let Err(err) = write_manifest(data_folder, &manifest) {
        applied.report.problems.push(format!(
            "cannot save the manifest of written files ({err}); without it the follower cannot remove the \
             files the leader drops later. Free space or make {} writable",
            data_folder.join(STATE_DIR).display()
        ));
    }
    Ok(applied)
}

/// Files an earlier run could not account for that are still on disk and not in the leader's tree.
fn still_unclaimed(
    data_folder: &Path,
    previous: &Manifest,
    wanted: &BTreeSet<String>,
) -> BTreeSet<String> {
    previous
        .unclaimed
        .difference(wanted)
        .filter(|path| data_folder.join(path).is_file())
        .cloned()
        .collect()
}

/// The manifest could not be parsed: its bytes are kept beside it for the operator, and a new one starts
/// from the leader's tree; every other file in the writable zones is unclaimed (reported, never silently kept).
fn rebuild_manifest(data_folder: &Path, wanted: &BTreeSet<String>, reason: &str) -> Manifest {
    let path = manifest_path(data_folder);
    let aside = path.with_extension("json.corrupt");
    tracing::error!(manifest = %path.display(), copy = %aside.display(), error = reason,
        "the manifest of written files is unreadable; rebuilding it from the disk and the leader's tree");
    if let Err(err) = std::fs::copy(&path, &aside) {
        tracing::warn!(copy = %aside.display(), error = %err, "cannot keep a copy of the unreadable manifest");
    }
    let unclaimed = files_in_writable_zones(data_folder)
        .into_iter()
        .filter(|path| !wanted.contains(path))
        .collect();
    Manifest {
        files: BTreeSet::new(),
        unclaimed,
    }
}

fn unclaimed_problem(unclaimed: &BTreeSet<String>) -> String {
    let listed: Vec<&str> = unclaimed.iter().take(10).map(String::as_str).collect();
    let more = unclaimed.len() - listed.len();
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!(
        "{} file(s) in the writable zones are not in the leader's tree and this follower cannot tell whether it \
         wrote them (its manifest was unreadable and has been rebuilt): {}{more}. Remove them by hand, or \
         notify with {{\"confirmRemovals\": true}} to have the follower remove them",
        unclaimed.len(),
        listed.join(", ")
    )
}

/// What the files of the writable zones say is secret (see [`pryv_protocol::Scrubber::from_conf_files`]):
/// masked out of the log tails the follower keeps and reports.
pub fn scrubber_of_disk(data_folder: &Path, extra: impl IntoIterator<Item = String>) -> Scrubber {
    let files: Vec<ConfFile> = files_in_writable_zones(data_folder)
        .into_iter()
        .filter_map(|relative| {
            let content = std::fs::read_to_string(data_folder.join(&relative)).ok()?;
            Some(ConfFile {
                path: format!("/{relative}"),
                content,
                encoding: None,
            })
        })
        .collect();
    let from_files = Scrubber::from_conf_files(&files);
    Scrubber::new(from_files.values().iter().cloned().chain(extra))
}

/// Every regular file of the writable zones, relative to the data folder (symlinks are not followed).
fn files_in_writable_zones(data_folder: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(data_folder) else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        if kind.is_file() {
            found.insert(name);
        } else if kind.is_dir() && name != STATE_DIR {
            for zone in ["conf", "templates"] {
                let prefix = format!("{name}/{zone}");
                collect_files(&data_folder.join(&prefix), &prefix, &mut found);
            }
        }
    }
    found
}

fn collect_files(folder: &Path, prefix: &str, found: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let relative = format!("{prefix}/{}", entry.file_name().to_string_lossy());
        if kind.is_file() {
            found.insert(relative);
        } else if kind.is_dir() {
            collect_files(&entry.path(), &relative, found);
        }
    }
}

/// Checks and decodes every entry: the relative paths the tree wants, and the entries whose bytes differ from
/// the disk. Unchanged and rejected entries are counted in `applied`.
fn sort_entries(
    data_folder: &Path,
    files: &[ConfFile],
    applied: &mut Applied,
) -> (BTreeSet<String>, Vec<(SafePath, Vec<u8>)>) {
    let mut wanted = BTreeSet::new();
    let mut pending = Vec::new();
    for file in files {
        let safe = match classify(&file.path) {
            EntryPath::Writable(safe) => safe,
            EntryPath::Skipped => continue,
            EntryPath::Rejected(reason) => {
                reject(applied, &file.path, reason);
                continue;
            }
        };
        if let Err(reason) = check_parents(data_folder, &safe) {
            reject(applied, &file.path, reason);
            continue;
        }
        let bytes = match decode(file) {
            Ok(bytes) => bytes,
            Err(reason) => {
                reject(applied, &file.path, reason);
                continue;
            }
        };
        wanted.insert(safe.relative.clone());
        if std::fs::read(safe.absolute(data_folder)).is_ok_and(|current| current == bytes) {
            applied.report.unchanged += 1;
        } else {
            pending.push((safe, bytes));
        }
    }
    (wanted, pending)
}

fn decode(file: &ConfFile) -> Result<Vec<u8>, String> {
    match file.encoding.as_deref() {
        None => Ok(file.content.clone().into_bytes()),
        Some(BASE64) => base64::engine::general_purpose::STANDARD
            .decode(&file.content)
            .map_err(|err| format!("invalid base64: {err}")),
        Some(other) => Err(format!("unknown encoding {other:?}")),
    }
}

/// Writes the changed entries atomically, except those of services whose validation refused them.
fn write_pending(
    data_folder: &Path,
    pending: Vec<(SafePath, Vec<u8>)>,
    refused: &BTreeMap<String, String>,
    own: &OwnWrites,
    applied: &mut Applied,
) {
    for (safe, bytes) in pending {
        let entry_path = format!("/{}", safe.relative);
        if let Some(reason) = safe.service.as_ref().and_then(|s| refused.get(s)) {
            reject(applied, &entry_path, reason.clone());
            continue;
        }
        let target = safe.absolute(data_folder);
        let written = target
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| pryv_fs::write_atomic(&target, &bytes, pryv_fs::DEFAULT_FILE_MODE));
        match written {
            Ok(()) => {
                own.record(target.clone());
                applied.changed.push(target);
                applied.report.files.push(entry_path);
            }
            Err(err) => reject(applied, &entry_path, format!("write failed: {err}")),
        }
    }
}

/// Removes what this follower wrote before and the tree no longer has (only inside the writable zones);
/// returns the ones it could not remove, which stay in the manifest.
fn remove_stale(
    data_folder: &Path,
    stale: &[String],
    own: &OwnWrites,
    applied: &mut Applied,
) -> Vec<String> {
    let mut kept = Vec::new();
    for stale in stale {
        let EntryPath::Writable(safe) = classify(&format!("/{stale}")) else {
            continue;
        };
        if check_parents(data_folder, &safe).is_err() {
            continue;
        }
        let target = safe.absolute(data_folder);
        match std::fs::remove_file(&target) {
            Ok(()) => {
                own.record(target.clone());
                applied.changed.push(target);
                applied.report.removed.push(format!("/{stale}"));
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(path = %target.display(), error = %err, "cannot remove a file the leader no longer sends");
                kept.push(stale.clone());
            }
        }
    }
    kept
}

fn reject(applied: &mut Applied, path: &str, reason: String) {
    tracing::warn!(path, reason = %reason, "refused a file from the leader");
    applied.report.rejected.push(RejectedFile {
        path: path.to_owned(),
        reason,
    });
}

/// Runs each affected service's check command on a staged copy (its current folder with the new files laid
/// over it). Returns the services whose check failed, with the reason.
fn validate_staged(
    data_folder: &Path,
    pending: &[(SafePath, Vec<u8>)],
    validators: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut refused = BTreeMap::new();
    let services: BTreeSet<&String> = pending
        .iter()
        .filter_map(|(s, _)| s.service.as_ref())
        .collect();
    for service in services {
        let Some(command) = validators.get(service) else {
            continue;
        };
        let outcome = stage_and_check(data_folder, service, pending, command);
        if let Err(reason) = outcome {
            tracing::error!(service, reason = %reason, "validation failed; keeping the service's current files");
            refused.insert(
                service.clone(),
                format!("validation of service '{service}' failed: {reason}"),
            );
        }
    }
    refused
}

fn stage_and_check(
    data_folder: &Path,
    service: &str,
    pending: &[(SafePath, Vec<u8>)],
    command: &str,
) -> Result<(), String> {
    let state = data_folder.join(STATE_DIR);
    std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;
    let stage = tempfile::Builder::new()
        .prefix(STAGE_PREFIX)
        .tempdir_in(&state)
        .map_err(|e| e.to_string())?;
    let staged_service = stage.path().join(service);
    for zone in ["conf", "templates"] {
        let current = data_folder.join(service).join(zone);
        if current.is_dir() {
            copy_tree(&current, &staged_service.join(zone)).map_err(|e| e.to_string())?;
        }
    }
    for (safe, bytes) in pending
        .iter()
        .filter(|(s, _)| s.service.as_deref() == Some(service))
    {
        let target = stage.path().join(&safe.relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&target, bytes).map_err(|e| e.to_string())?;
    }
    let output = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("PRYV_STAGED_DIR", &staged_service)
        .current_dir(&staged_service)
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!(
            "{command:?} exited with {}: {}",
            output.status,
            stderr.trim()
        ))
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn manifest_path(data_folder: &Path) -> PathBuf {
    StateDir::of(data_folder).path(MANIFEST)
}

/// Whether an earlier run left a tree here.
pub fn has_previous_tree(data_folder: &Path) -> bool {
    manifest_path(data_folder).is_file() || data_folder.join("pryv.yml").is_file()
}

/// The manifest (empty when there is none yet); `Err` when it exists but cannot be read or parsed.
fn read_manifest(data_folder: &Path) -> Result<Manifest, Error> {
    StateDir::of(data_folder)
        .load(MANIFEST)
        .map(Option::unwrap_or_default)
}

fn write_manifest(data_folder: &Path, manifest: &Manifest) -> Result<(), Error> {
    StateDir::of(data_folder).save(MANIFEST, manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, content: &str) -> ConfFile {
        ConfFile {
            path: path.into(),
            content: content.into(),
            encoding: None,
        }
    }

    #[test]
    fn writes_changed_files_only_and_removes_what_it_wrote_before() {
        let data = tempfile::tempdir().unwrap();
        let own = OwnWrites::default();
        let none = BTreeMap::new();
        let first = apply(
            data.path(),
            &[
                entry("/pryv.yml", "a"),
                entry("/core/conf/x.yml", "b"),
                entry("/core/data/.gitkeep", ""),
            ],
            &none,
            &own,
            RemovalGuard::OFF,
            &|_, _| Ok(()),
        )
        .unwrap();
        assert_eq!(first.report.files, ["/pryv.yml", "/core/conf/x.yml"]);
        assert!(
            !data.path().join("core/data").exists(),
            "skipped zone not written"
        );
        let written = data.path().join("core/conf/x.yml");
        assert!(own.is_own(&written));
        let mtime = std::fs::metadata(&written).unwrap().modified().unwrap();

        std::fs::write(data.path().join("core/conf/operator.yml"), "mine").unwrap();
        let second = apply(
            data.path(),
            &[entry("/core/conf/x.yml", "b")],
            &none,
            &own,
            RemovalGuard::OFF,
            &|_, _| Ok(()),
        )
        .unwrap();
        assert!(second.report.files.is_empty());
        assert_eq!(second.report.unchanged, 1);
        assert_eq!(second.report.removed, ["/pryv.yml"]);
        assert_eq!(
            std::fs::metadata(&written).unwrap().modified().unwrap(),
            mtime,
            "unchanged file not rewritten"
        );
        assert!(
            data.path().join("core/conf/operator.yml").exists(),
            "files it did not write are kept"
        );
    }

    #[test]
    fn bad_entries_are_reported_and_others_still_written() {
        let data = tempfile::tempdir().unwrap();
        let report = apply(
            data.path(),
            &[
                entry("/../escape", "x"),
                ConfFile {
                    path: "/core/conf/bin".into(),
                    content: "!!!".into(),
                    encoding: Some("base64".into()),
                },
                ConfFile {
                    path: "/core/conf/cert.der".into(),
                    content: "/wCA".into(),
                    encoding: Some("base64".into()),
                },
            ],
            &BTreeMap::new(),
            &OwnWrites::default(),
            RemovalGuard::OFF,
            &|_, _| Ok(()),
        )
        .unwrap()
        .report;
        assert_eq!(report.rejected.len(), 2);
        assert_eq!(
            std::fs::read(data.path().join("core/conf/cert.der")).unwrap(),
            [0xff, 0x00, 0x80]
        );
    }

    #[test]
    fn failed_validation_keeps_the_old_files() {
        let data = tempfile::tempdir().unwrap();
        let own = OwnWrites::default();
        let mut validators = BTreeMap::new();
        validators.insert(
            "nginx".to_owned(),
            "! grep -rq broken \"$PRYV_STAGED_DIR/conf\"".to_owned(),
        );
        let ok = apply(
            data.path(),
            &[entry("/nginx/conf/n.conf", "good")],
            &validators,
            &own,
            RemovalGuard::OFF,
            &|_, _| Ok(()),
        )
        .unwrap();
        assert_eq!(ok.report.files, ["/nginx/conf/n.conf"]);
        let bad = apply(
            data.path(),
            &[
                entry("/nginx/conf/n.conf", "broken"),
                entry("/core/conf/c", "fine"),
            ],
            &validators,
            &own,
            RemovalGuard::OFF,
            &|_, _| Ok(()),
        )
        .unwrap();
        assert_eq!(bad.report.files, ["/core/conf/c"]);
        assert!(
            bad.report.rejected[0]
                .reason
                .contains("validation of service 'nginx' failed")
        );
        assert_eq!(
            std::fs::read_to_string(data.path().join("nginx/conf/n.conf")).unwrap(),
            "good"
        );
    }

    #[test]
    fn a_tree_that_removes_too_much_is_refused_whole_unless_confirmed() {
        let data = tempfile::tempdir().unwrap();
        let own = OwnWrites::default();
        let none = BTreeMap::new();
        let guard = RemovalGuard {
            max_percent: 50,
            confirmed: false,
        };
        let tree: Vec<ConfFile> = (0..4)
            .map(|i| entry(&format!("/core/conf/{i}.yml"), "x"))
            .collect();
        apply(data.path(), &tree, &none, &own, guard, &|_, _| Ok(())).unwrap();

        let empty = apply(data.path(), &[], &none, &own, guard, &|_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(empty.contains("every one of the 4 files"), "{empty}");
        let most = apply(data.path(), &tree[..1], &none, &own, guard, &|_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(most.contains("3 of the 4 files"), "{most}");
        assert!(
            data.path().join("core/conf/3.yml").exists(),
            "nothing removed"
        );

        let half = apply(data.path(), &tree[..2], &none, &own, guard, &|_, _| Ok(())).unwrap();
        assert_eq!(half.report.removed.len(), 2, "50 % is allowed");
        let confirmed = RemovalGuard {
            confirmed: true,
            ..guard
        };
        let all = apply(data.path(), &[], &none, &own, confirmed, &|_, _| Ok(())).unwrap();
        assert_eq!(all.report.removed.len(), 2);
    }

    #[test]
    fn a_manifest_that_cannot_be_saved_or_read_is_a_problem_never_silent() {
        let data = tempfile::tempdir().unwrap();
        let own = OwnWrites::default();
        let none = BTreeMap::new();
        let tree = [entry("/core/conf/a.yml", "a")];
        apply(
            data.path(),
            &tree,
            &none,
            &own,
            RemovalGuard::OFF,
            &|_, _| Ok(()),
        )
        .unwrap();
        // Unparseable: rebuilt; a file in the zones the tree lacks is unclaimed, on disk, and reported.
        std::fs::write(data.path().join("core/conf/old.yml"), "old").unwrap();
        std::fs::write(manifest_path(data.path()), "not json").unwrap();
        let guard = RemovalGuard {
            max_percent: 50,
            confirmed: false,
        };
        let rebuilt = apply(data.path(), &tree, &none, &own, guard, &|_, _| Ok(())).unwrap();
        assert_eq!(rebuilt.report.problems.len(), 1, "{:?}", rebuilt.report);
        assert!(rebuilt.report.problems[0].contains("core/conf/old.yml"));
        assert!(data.path().join("core/conf/old.yml").exists());
        let saved = read_manifest(data.path()).unwrap();
        assert!(saved.files.contains("core/conf/a.yml"));
        assert!(saved.unclaimed.contains("core/conf/old.yml"));
        // Removed by hand: no longer a problem.
        std::fs::remove_file(data.path().join("core/conf/old.yml")).unwrap();
        let clean = apply(data.path(), &tree, &none, &own, guard, &|_, _| Ok(())).unwrap();
        assert!(clean.report.problems.is_empty(), "{:?}", clean.report);

        // Cannot be saved (a folder in its place): a problem naming the manifest.
        let manifest = manifest_path(data.path());
        std::fs::remove_file(&manifest).unwrap();
        std::fs::create_dir_all(manifest.join("in-the-way")).unwrap();
        let unsaved = apply(data.path(), &tree, &none, &own, guard, &|_, _| Ok(())).unwrap();
        assert!(
            unsaved
                .report
                .problems
                .iter()
                .any(|p| p.contains("cannot save the manifest")),
            "{:?}",
            unsaved.report
        );

        // A record that cannot be made before the writes: nothing is touched.
        std::fs::remove_dir_all(&manifest).unwrap();
        let refused = apply(
            data.path(),
            &[entry("/core/conf/a.yml", "changed")],
            &none,
            &own,
            guard,
            &|_, _| Err(Error::Refused("cannot save".into())),
        )
        .unwrap_err();
        assert_eq!(refused.to_string(), "cannot save");
        assert_eq!(
            std::fs::read_to_string(data.path().join("core/conf/a.yml")).unwrap(),
            "a"
        );
    }

    #[test]
    fn paths_are_announced_before_the_first_change() {
        let data = tempfile::tempdir().unwrap();
        let own = OwnWrites::default();
        let seen = std::cell::RefCell::new(Vec::new());
        let target = data.path().join("core/conf/a.yml");
        apply(
            data.path(),
            &[entry("/core/conf/a.yml", "new")],
            &BTreeMap::new(),
            &own,
            RemovalGuard::OFF,
            &|paths, _| {
                assert!(!target.exists(), "announced before writing");
                seen.borrow_mut().extend_from_slice(paths);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen.into_inner(), [target]);
    }
}
