//! Which entry paths of the leader's answer may be written, and where. This is the follower's security
//! boundary: a hostile or buggy leader must not be able to write outside the writable zones of the data folder.
//!
//! Writable zones: files at the root of the data folder (`/pryv.yml`), and `/<service>/conf/**` and
//! `/<service>/templates/**`. Everything else is skipped (as the legacy follower did), and anything that tries
//! to escape is rejected.
// Blocking: symlink checks of the apply, which runs on a blocking thread.
#![allow(clippy::disallowed_methods)]

use std::path::{Component, Path, PathBuf};

/// Verdict on one entry path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryPath {
    /// Inside a writable zone; `relative` has only normal components.
    Writable(SafePath),
    /// Well-formed but outside the writable zones (e.g. `/core/data/.gitkeep`): ignored.
    Skipped,
    /// Malformed or escaping: refused and reported.
    Rejected(String),
}

/// A checked relative path inside the data folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SafePath {
    /// Relative to the data folder, e.g. `core/conf/core.yml`.
    pub relative: String,
    /// The service folder (`core`), or `None` for root files.
    pub service: Option<String>,
}

impl SafePath {
    pub fn absolute(&self, data_folder: &Path) -> PathBuf {
        data_folder.join(&self.relative)
    }
}

/// Classifies an entry path from the leader (`/core/conf/core.yml`).
pub fn classify(path: &str) -> EntryPath {
    if path.contains('\0') {
        return EntryPath::Rejected("path contains a NUL byte".into());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return EntryPath::Rejected("path must start with '/'".into());
    };
    if rest.starts_with('/') {
        return EntryPath::Rejected("absolute path after the leading '/'".into());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    for part in &parts {
        match *part {
            "" => return EntryPath::Rejected("empty path component".into()),
            "." | ".." => return EntryPath::Rejected(format!("'{part}' component")),
            _ => {}
        }
    }
    let writable = match parts.as_slice() {
        [_file] => true,
        [_service, zone, _, ..] => matches!(*zone, "conf" | "templates"),
        _ => false,
    };
    if !writable {
        return EntryPath::Skipped;
    }
    EntryPath::Writable(SafePath {
        relative: rest.to_owned(),
        service: (parts.len() > 1).then(|| parts[0].to_owned()),
    })
}

/// Refuses a target whose existing parents inside the data folder include a symlink leading outside it
/// (or anything that is not a folder). Missing parents are fine: they will be created as real folders.
pub fn check_parents(data_folder: &Path, safe: &SafePath) -> Result<(), String> {
    let root = data_folder
        .canonicalize()
        .map_err(|err| format!("data folder {}: {err}", data_folder.display()))?;
    let mut current = data_folder.to_owned();
    let parents: Vec<_> = Path::new(&safe.relative).components().collect();
    for component in &parents[..parents.len().saturating_sub(1)] {
        let Component::Normal(name) = component else {
            return Err("unexpected path component".into());
        };
        current.push(name);
        match std::fs::symlink_metadata(&current) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(format!("{}: {err}", current.display())),
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = current
                    .canonicalize()
                    .map_err(|err| format!("{}: dangling symlink: {err}", current.display()))?;
                if !target.starts_with(&root) {
                    return Err(format!(
                        "{} is a symlink leading outside the data folder",
                        current.display()
                    ));
                }
            }
            Ok(meta) if !meta.is_dir() => {
                return Err(format!("{} is not a folder", current.display()));
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writable(relative: &str, service: Option<&str>) -> EntryPath {
        EntryPath::Writable(SafePath {
            relative: relative.into(),
            service: service.map(Into::into),
        })
    }

    #[test]
    fn zones() {
        assert_eq!(classify("/pryv.yml"), writable("pryv.yml", None));
        assert_eq!(
            classify("/core/conf/core.yml"),
            writable("core/conf/core.yml", Some("core"))
        );
        assert_eq!(
            classify("/nginx/conf/secret/x.pem"),
            writable("nginx/conf/secret/x.pem", Some("nginx"))
        );
        assert_eq!(
            classify("/mail/templates/a/b.pug"),
            writable("mail/templates/a/b.pug", Some("mail"))
        );
        assert_eq!(classify("/core/data/.gitkeep"), EntryPath::Skipped);
        assert_eq!(classify("/core/log/.gitkeep"), EntryPath::Skipped);
        assert_eq!(classify("/core/conf"), EntryPath::Skipped);
        assert_eq!(classify("/a/b/conf/x"), EntryPath::Skipped);
    }

    #[test]
    fn escapes_are_rejected() {
        for bad in [
            "//etc/passwd",
            "/../x",
            "/core/conf/../../etc/x",
            "/core/conf/./x",
            "core/conf/x",
            "/a\0b",
            "/core//conf/x",
            "/",
        ] {
            assert!(
                matches!(classify(bad), EntryPath::Rejected(_)),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn symlinked_parent_leading_outside_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), data.path().join("evil")).unwrap();
        std::fs::create_dir_all(data.path().join("real/conf")).unwrap();
        std::os::unix::fs::symlink(data.path().join("real"), data.path().join("alias")).unwrap();
        let EntryPath::Writable(evil) = classify("/evil/conf/x") else {
            panic!()
        };
        assert!(
            check_parents(data.path(), &evil)
                .unwrap_err()
                .contains("outside")
        );
        let EntryPath::Writable(inside) = classify("/alias/conf/x") else {
            panic!()
        };
        assert!(check_parents(data.path(), &inside).is_ok());
        let EntryPath::Writable(fresh) = classify("/new/conf/x") else {
            panic!()
        };
        assert!(check_parents(data.path(), &fresh).is_ok());
    }
}
