//! The durable state file: the [`State`] that survives restarts, on disk.
//!
//! The file is versioned JSON (`{"version": 2, ...}`) and replaced atomically: written to a
//! temporary file beside it, fsynced, renamed over the old one, and the directory fsynced, so
//! after a crash it holds either the old or the new state, never a mix or a truncated file.
//! An exclusive lock on a `.lock` file beside it keeps two servers from sharing one state.
//! This module owns the format and the write protocol; deciding what to write is
//! [`crate::switch`]'s job.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{FlipCount, Phase, ServiceState, State, ZoneState};
use crate::color::Color;

/// The version this build writes. Older versions are read and upgraded: version 1 had no
/// cutover phases, so its services are steady.
pub const VERSION: u32 = 2;

/// A service as version 1 wrote it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceStateV1 {
    live: Color,
    generation: u64,
    #[serde(default)]
    flipped_at_ms: Option<u64>,
}

/// The on-disk form of version 2: the state with its version tag.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV2 {
    version: u32,
    #[serde(default)]
    services: BTreeMap<String, ServiceState>,
    #[serde(default)]
    zones: BTreeMap<String, ZoneState>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV1 {
    #[serde(rename = "version")]
    _version: u32,
    #[serde(default)]
    services: BTreeMap<String, ServiceStateV1>,
    #[serde(default)]
    zones: BTreeMap<String, ZoneState>,
}

/// What can go wrong with the state file; each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: cannot read: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "state file {path}: line {line}: {message}; fix or restore the file (flipdns will not guess the live colors)"
    )]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "state file {path}: unknown version {version} (this flipdns reads versions 1 to {VERSION})"
    )]
    UnknownVersion { path: PathBuf, version: u64 },
    #[error("state file {path}: cannot write: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("state file {path}: in use by another flipdns (cannot lock {lock}): {source}")]
    Locked {
        path: PathBuf,
        lock: PathBuf,
        source: io::Error,
    },
}

/// The state file of one running server, locked for its lifetime.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    /// Held open for the `flock`; the lock goes when the process does, even on kill -9.
    _lock: File,
}

impl StateFile {
    /// Locks the state file at `path` for this process. Creates the directory if missing.
    pub fn open(path: &Path) -> Result<StateFile, StateError> {
        let write_err = |source| StateError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(write_err)?;
        }
        let lock_path = sibling(path, ".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(write_err)?;
        // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(StateError::Locked {
                path: path.to_path_buf(),
                lock: lock_path,
                source: io::Error::last_os_error(),
            });
        }
        Ok(StateFile {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state; `Ok(None)` when the file does not exist yet (first start).
    pub fn load(&self) -> Result<Option<State>, StateError> {
        read(&self.path)
    }

    /// Replaces the state file atomically and durably. When this returns `Ok`, the new state
    /// survives a crash or power loss; when it fails, the old file is untouched.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let mut text = serde_json::to_vec_pretty(&FileV2 {
            version: VERSION,
            services: state.services.clone(),
            zones: state.zones.clone(),
        })
        .map_err(|e| err(io::Error::other(e)))?;
        text.push(b'\n');
        let tmp = sibling(&self.path, ".tmp");
        let written = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(&text)?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            let dir = self
                .path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            File::open(dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(err)
    }
}

/// Reads the state file at `path`, upgrading older versions.
pub fn read(path: &Path) -> Result<Option<State>, StateError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let corrupt = |e: serde_json::Error| StateError::Corrupt {
        path: path.to_path_buf(),
        line: e.line(),
        message: e.to_string(),
    };
    #[derive(Deserialize)]
    struct Version {
        version: Option<u64>,
    }
    let version: Version = serde_json::from_str(&text).map_err(corrupt)?;
    match version.version {
        Some(1) => {
            let file: FileV1 = serde_json::from_str(&text).map_err(corrupt)?;
            let services = file
                .services
                .into_iter()
                .map(|(name, s)| {
                    let state = ServiceState {
                        live: s.live,
                        flips: FlipCount(s.generation),
                        flipped_at_ms: s.flipped_at_ms,
                        phase: Phase::Steady,
                    };
                    (name, state)
                })
                .collect();
            Ok(Some(State {
                services,
                zones: file.zones,
            }))
        }
        Some(2) => {
            let file: FileV2 = serde_json::from_str(&text).map_err(corrupt)?;
            Ok(Some(State {
                services: file.services,
                zones: file.zones,
            }))
        }
        Some(version) => Err(StateError::UnknownVersion {
            path: path.to_path_buf(),
            version,
        }),
        None => Err(StateError::Corrupt {
            path: path.to_path_buf(),
            line: 1,
            message: "no \"version\" field".into(),
        }),
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let mut state = State::default();
        state.services.insert(
            "app".into(),
            ServiceState {
                live: Color::Green,
                flips: FlipCount(3),
                flipped_at_ms: Some(1_700_000_000_000),
                phase: Phase::Preparing {
                    since_ms: 1_700_000_001_000,
                    drained_at_ms: 1_700_000_301_000,
                    target: Some(Color::Blue),
                    force: false,
                },
            },
        );
        state
            .zones
            .insert("svc.example.com.".into(), ZoneState { serial: 2026112603 });
        state
    }

    #[test]
    fn round_trips_and_is_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::open(&dir.path().join("run/state.json")).unwrap();
        assert_eq!(file.load().unwrap(), None);
        file.save(&sample()).unwrap();
        assert_eq!(file.load().unwrap(), Some(sample()));
        let text = fs::read_to_string(file.path()).unwrap();
        assert!(text.contains("\"version\": 2"), "{text}");
        assert!(text.contains("\"name\": \"preparing\""), "{text}");
        assert!(!dir.path().join("run/state.json.tmp").exists());
    }

    #[test]
    fn version_1_files_are_read_as_steady() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, r#"{"version": 1, "services": {"app": {"live": "green", "generation": 2, "flipped_at_ms": 5}}, "zones": {"svc.example.com.": {"serial": 7}}}"#).unwrap();
        let state = read(&path).unwrap().unwrap();
        let app = &state.services["app"];
        assert_eq!(
            (app.live, app.flips, app.flipped_at_ms, app.phase),
            (Color::Green, FlipCount(2), Some(5), Phase::Steady)
        );
        assert_eq!(state.zones["svc.example.com."].serial, 7);
    }

    #[test]
    fn a_second_server_cannot_take_the_same_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let _first = StateFile::open(&dir.path().join("state.json")).unwrap();
        let err = StateFile::open(&dir.path().join("state.json")).unwrap_err();
        assert!(
            err.to_string().contains("in use by another flipdns"),
            "{err}"
        );
    }

    #[test]
    fn corrupt_and_unknown_files_are_errors_that_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(
            &path,
            "{\"version\": 1, \"services\": {\"app\": {\"live\": \"purple\"",
        )
        .unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("state file {}: line 1:", path.display())),
            "{err}"
        );
        fs::write(&path, "{\"version\": 7}").unwrap();
        assert!(
            read(&path)
                .unwrap_err()
                .to_string()
                .contains("unknown version 7")
        );
        fs::write(&path, "").unwrap();
        assert!(matches!(read(&path), Err(StateError::Corrupt { .. })));
    }
}
