//! Atomic file replacement: a reader sees the old bytes or the new bytes, never a partial or empty file, and a
//! crash leaves one of the two. Used by the leader (config write-back, `platform.yml`) and the follower (every
//! file it receives). Knows nothing about which paths are allowed: callers decide that.
// Blocking by design: the file helpers both daemons call from blocking threads (spawn_blocking, start-up).
#![allow(clippy::disallowed_methods)]

use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Mode given to files that did not exist before (an existing file keeps its own).
pub const DEFAULT_FILE_MODE: u32 = 0o644;
/// Name prefix of the temporary files [`write_atomic`] creates (0600 until the rename) beside their target.
pub const TEMP_PREFIX: &str = ".pryv-tmp-";

/// Replaces `path` with `bytes` atomically: temporary file in the same folder, write, `fsync`, rename over the
/// target, `fsync` the folder. An existing target keeps its permission bits; a new one gets `new_mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], new_mode: u32) -> io::Result<()> {
    let mode = match fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(err) if err.kind() == io::ErrorKind::NotFound => new_mode,
        Err(err) => return Err(err),
    };
    write_atomic_with_mode(path, bytes, mode)
}

/// [`write_atomic`] giving the file exactly `mode`, whatever the replaced file had (for files holding
/// secrets, whose mode must not stay looser than wanted).
pub fn write_atomic_with_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent_of(path)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|err| err.error)?;
    sync_dir(dir)
}

/// Removes the temporary files a killed writer left directly in `dir` (ours only: [`TEMP_PREFIX`]), and returns
/// them. They may hold secrets (a copy of `platform.yml`) and sit in folders mounted into containers. Call it
/// at start, before anything of this process writes there. A missing folder has none.
pub fn remove_stale_temp_files(dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let ours = entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX);
        if ours && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

/// Flushes a folder's entries (a rename or an unlink) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_of(path: &Path) -> io::Result<&Path> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => Ok(parent),
        Some(_) => Ok(Path::new(".")),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no parent folder", path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_replaces_keeping_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"one", DEFAULT_FILE_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        write_atomic(&path, b"two", DEFAULT_FILE_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
    }

    #[test]
    fn missing_folder_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_atomic(&dir.path().join("no/such/x"), b"x", 0o644).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_concurrent_reader_never_sees_a_partial_or_empty_file() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.conf");
        let a = vec![b'a'; 256 * 1024];
        let b = vec![b'b'; 300 * 1024];
        write_atomic(&path, &a, DEFAULT_FILE_MODE).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (path, done, a, b) = (path.clone(), done.clone(), a.clone(), b.clone());
            std::thread::spawn(move || {
                let mut reads = 0u32;
                while !done.load(Ordering::Acquire) {
                    let seen = fs::read(&path).unwrap();
                    assert!(
                        seen == a || seen == b,
                        "partial read of {} bytes",
                        seen.len()
                    );
                    reads += 1;
                }
                reads
            })
        };
        for round in 0..200 {
            let bytes = if round % 2 == 0 { &b } else { &a };
            write_atomic(&path, bytes, DEFAULT_FILE_MODE).unwrap();
        }
        done.store(true, Ordering::Release);
        let reads = reader.join().unwrap();
        assert!(reads > 0, "the reader must have raced the writer");
    }

    #[test]
    fn stale_temp_files_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("{TEMP_PREFIX}abc")), "secret").unwrap();
        fs::write(dir.path().join("platform.yml"), "kept").unwrap();
        let removed = remove_stale_temp_files(dir.path()).unwrap();
        assert_eq!(removed.len(), 1);
        assert!(dir.path().join("platform.yml").exists());
        assert!(
            remove_stale_temp_files(&dir.path().join("missing"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn temp_files_are_private_while_written() {
        // The temporary copy is created 0600: a copy of a secret file is never readable by others.
        let dir = tempfile::tempdir().unwrap();
        let tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(dir.path())
            .unwrap();
        assert_eq!(
            fs::metadata(tmp.path()).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
