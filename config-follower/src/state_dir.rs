//! The follower's bookkeeping under `<dataFolder>/.config-follower/` (manifest, pending restarts, health gate,
//! reverted revision, unsent report, watcher switch): one door with typed `load`, `save` and `remove`.
//!
//! The rule of the trust work holds here once: a record that exists but cannot be read is an error (never
//! taken for "none"), and a save that fails is an error the caller must handle (`#[must_use]`).
//! `load`, `save` and `remove` block (they are disallowed methods outside blocking code, see `clippy.toml`);
//! async code goes through [`StateDir::call`], the folder's async door.
// The one module that touches the records' files; its callers are blocking code or `call`.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// The bookkeeping folder's name inside the data folder.
pub const STATE_DIR: &str = ".config-follower";

/// The bookkeeping folder of one data folder.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn of(data_folder: &Path) -> Self {
        Self {
            root: data_folder.join(STATE_DIR),
        }
    }

    /// Runs `work` (loads, saves, removes) on a blocking thread: how async code reaches the records.
    pub async fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&StateDir) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let state = self.clone();
        tokio::task::spawn_blocking(move || work(&state)).await?
    }

    /// Where record `name` lives.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Record `name`: `None` when there is none; an error when it exists but cannot be read or parsed.
    #[must_use = "an unreadable record must not be taken for a missing one"]
    pub fn load<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        let Some(bytes) = self.load_bytes(name)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| self.failed("parse", name, err.to_string()))
    }

    /// A plain-text record (trimmed), `None` when missing or empty.
    #[must_use = "an unreadable record must not be taken for a missing one"]
    pub fn load_text(&self, name: &str) -> Result<Option<String>, Error> {
        let Some(bytes) = self.load_bytes(name)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes).trim().to_owned();
        Ok((!text.is_empty()).then_some(text))
    }

    fn load_bytes(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        match std::fs::read(self.path(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(self.failed("read", name, err.to_string())),
        }
    }

    /// Saves record `name` as JSON (pretty when `pretty`), atomically, readable by the owner only.
    #[must_use = "a record that could not be saved breaks what the caller promised"]
    pub fn save<T: Serialize>(&self, name: &str, value: &T) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(value)
            .map_err(|err| self.failed("encode", name, err.to_string()))?;
        self.save_bytes(name, &bytes)
    }

    /// Saves a plain-text record.
    #[must_use = "a record that could not be saved breaks what the caller promised"]
    pub fn save_text(&self, name: &str, text: &str) -> Result<(), Error> {
        self.save_bytes(name, text.as_bytes())
    }

    fn save_bytes(&self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        std::fs::create_dir_all(&self.root)
            .and_then(|()| pryv_fs::write_atomic(&self.path(name), bytes, 0o600))
            .map_err(|err| self.failed("write", name, err.to_string()))
    }

    /// Removes record `name` (none is fine).
    #[must_use = "a record that could not be removed is still in force"]
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        match std::fs::remove_file(self.path(name)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(self.failed("remove", name, err.to_string()))
            }
            _ => Ok(()),
        }
    }

    fn failed(&self, action: &'static str, name: &str, reason: String) -> Error {
        Error::Record {
            action,
            path: self.path(name),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_is_none_corrupt_is_an_error_and_saves_round_trip() {
        let data = tempfile::tempdir().unwrap();
        let state = StateDir::of(data.path());
        assert_eq!(state.load::<Vec<u32>>("a.json").unwrap(), None);
        state.save("a.json", &vec![1u32, 2]).unwrap();
        assert_eq!(state.load::<Vec<u32>>("a.json").unwrap(), Some(vec![1, 2]));
        std::fs::write(state.path("a.json"), b"{not json").unwrap();
        let err = state.load::<Vec<u32>>("a.json").unwrap_err().to_string();
        assert!(
            err.contains("cannot parse") && err.contains("a.json"),
            "{err}"
        );
        state.remove("a.json").unwrap();
        state.remove("a.json").unwrap();
        assert_eq!(state.load_text("a.json").unwrap(), None);
    }

    #[test]
    fn a_save_that_cannot_be_written_says_so() {
        let data = tempfile::tempdir().unwrap();
        // A file where the folder should be: nothing can be saved under it.
        std::fs::write(data.path().join(STATE_DIR), b"in the way").unwrap();
        let err = StateDir::of(data.path())
            .save_text("reverted-revision", "r1")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot write"), "{err}");
    }
}
