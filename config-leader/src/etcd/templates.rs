//! The templates in force, in etcd: every replica renders the same files. A tree is stored under its content
//! hash (`templates/trees/<hash>/files/<n>`: path and base64 content), then `templates/current` names the hash
//! (a compare-and-swap on the one it replaces). Each replica keeps a copy in `<databasePath>/replica/templates`
//! (swapped whole under the tree store's lock: a render sees the old files or the new ones, never a mix),
//! checked against its hash before it is used. `config-leader templates push` validates a folder as a save
//! validates settings (every role renders with the settings in force), then makes it current; the first
//! replica of a new platform pushes its own folder.
// File reads and writes here run on blocking threads or in the CLI command.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::client::{Compare, Etcd, Op};
use crate::error::Error;

pub const CURRENT: &str = "templates/current";
const TREES: &str = "templates/trees/";
/// Deepest folder nesting read from a templates folder (symlink loops end here).
const MAX_DEPTH: usize = 32;

/// A templates tree: (path relative to the folder, bytes), in path order.
pub type Files = Vec<(String, Vec<u8>)>;

#[derive(Serialize, Deserialize)]
struct StoredFile {
    path: String,
    content: String,
}

/// The tree's hash: every path and content, length-prefixed.
pub fn hash_of(files: &Files) -> String {
    let mut hasher = Sha256::new();
    for (path, content) in files {
        hasher.update((path.len() as u64).to_be_bytes());
        hasher.update(path.as_bytes());
        hasher.update((content.len() as u64).to_be_bytes());
        hasher.update(content);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every file under `folder` (symlinks followed: their content is what is pushed), in path order.
pub fn read_folder(folder: &Path) -> Result<Files, Error> {
    let mut files = Vec::new();
    walk(folder, folder, 0, &mut files)?;
    files.sort();
    Ok(files)
}

fn walk(root: &Path, dir: &Path, depth: usize, files: &mut Files) -> Result<(), Error> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    };
    if depth > MAX_DEPTH {
        return Err(Error::BadRequest(format!(
            "{}: nested more than {MAX_DEPTH} folders deep (a symlink loop?)",
            dir.display()
        )));
    }
    for entry in std::fs::read_dir(dir).map_err(io("read", dir))? {
        let path = entry.map_err(io("read", dir))?.path();
        let meta = std::fs::metadata(&path).map_err(io("read", &path))?;
        if meta.is_dir() {
            walk(root, &path, depth + 1, files)?;
        } else if meta.is_file() {
            let relative = path
                .strip_prefix(root)
                .map_err(|_| Error::Internal("a file outside the folder walked".into()))?
                .to_string_lossy()
                .into_owned();
            files.push((relative, std::fs::read(&path).map_err(io("read", &path))?));
        }
    }
    Ok(())
}

pub struct SharedTemplates {
    etcd: Arc<Etcd>,
}

impl SharedTemplates {
    pub fn new(etcd: Arc<Etcd>) -> Self {
        Self { etcd }
    }

    /// The hash in force, if any.
    pub async fn current(&self) -> Result<Option<String>, Error> {
        Ok(self
            .etcd
            .get(CURRENT)
            .await?
            .and_then(|kv| String::from_utf8(kv.value).ok()))
    }

    /// The tree stored under `hash`, checked against it.
    pub async fn tree(&self, hash: &str) -> Result<Files, Error> {
        let (kvs, _) = self.etcd.list(&format!("{TREES}{hash}/files/")).await?;
        let mut files = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let stored: StoredFile = serde_json::from_slice(&kv.value)
                .map_err(|err| Error::Etcd(format!("a template file that is not ours: {err}")))?;
            let content = B64
                .decode(stored.content)
                .map_err(|err| Error::Etcd(format!("a template file's content: {err}")))?;
            files.push((stored.path, content));
        }
        files.sort();
        let found = hash_of(&files);
        if found != hash {
            return Err(Error::Etcd(format!(
                "the templates stored under {hash} hash to {found}: incomplete or altered; push them again"
            )));
        }
        Ok(files)
    }

    /// Stores `files` and makes them current in place of `replacing` (`None`: only if no tree is current
    /// yet). False when the current tree is another one by then.
    pub async fn push(&self, files: &Files, replacing: Option<&str>) -> Result<bool, Error> {
        let hash = hash_of(files);
        for (index, (path, content)) in files.iter().enumerate() {
            let stored = StoredFile {
                path: path.clone(),
                content: B64.encode(content),
            };
            self.etcd
                .txn(
                    &[],
                    &[Op::Put {
                        key: format!("{TREES}{hash}/files/{index:06}"),
                        value: serde_json::to_vec(&stored)?,
                    }],
                )
                .await?;
        }
        let compare = match replacing {
            Some(old) => Compare::ValueIs(CURRENT.to_owned(), old.as_bytes().to_vec()),
            None => Compare::Absent(CURRENT.to_owned()),
        };
        self.etcd
            .txn(
                &[compare],
                &[Op::Put {
                    key: CURRENT.to_owned(),
                    value: hash.into_bytes(),
                }],
            )
            .await
    }
}

/// This replica's copy of the templates in force.
pub fn copy_folder(database: &Path) -> PathBuf {
    database.join("replica").join("templates")
}

/// Replaces the copy at `folder` with `files` (a new folder swapped in whole); the hash of the copy is kept
/// beside it so an unchanged tree is not written again.
pub fn write_copy(folder: &Path, files: &Files) -> Result<(), Error> {
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Write { path, source }
    };
    let staged = folder.with_extension("new");
    let _ = std::fs::remove_dir_all(&staged);
    for (path, content) in files {
        let target = staged.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(write_error(parent))?;
        }
        pryv_fs::write_atomic(&target, content, 0o600).map_err(write_error(&target))?;
    }
    std::fs::create_dir_all(&staged).map_err(write_error(&staged))?;
    let old = folder.with_extension("old");
    let _ = std::fs::remove_dir_all(&old);
    if folder.exists() {
        std::fs::rename(folder, &old).map_err(write_error(folder))?;
    }
    std::fs::rename(&staged, folder).map_err(write_error(folder))?;
    let _ = std::fs::remove_dir_all(&old);
    let stamp = folder.with_extension("hash");
    pryv_fs::write_atomic(&stamp, hash_of(files).as_bytes(), 0o600).map_err(write_error(&stamp))
}

/// The hash of the copy at `folder`, as written with it.
pub fn copy_hash(folder: &Path) -> Option<String> {
    std::fs::read_to_string(folder.with_extension("hash")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_read_in_path_order_and_its_copy_swapped_in_whole() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("data");
        std::fs::create_dir_all(source.join("core/conf")).unwrap();
        std::fs::write(source.join("core/conf/core.yml"), "domain: DOMAIN\n").unwrap();
        std::fs::write(source.join("core/pryv.yml"), "services: {}\n").unwrap();
        let files = read_folder(&source).unwrap();
        let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["core/conf/core.yml", "core/pryv.yml"]);

        let copy = dir.path().join("replica/templates");
        write_copy(&copy, &files).unwrap();
        assert_eq!(read_folder(&copy).unwrap(), files);
        assert_eq!(copy_hash(&copy), Some(hash_of(&files)));
        // A new tree replaces the old one whole: a file it lacks is gone.
        let fewer: Files = files[..1].to_vec();
        write_copy(&copy, &fewer).unwrap();
        assert_eq!(read_folder(&copy).unwrap(), fewer);
        assert_ne!(hash_of(&fewer), hash_of(&files));
    }
}
