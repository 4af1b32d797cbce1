//! The durable state: a snapshot file and a journal of changes beside it.
//!
//! A change (a flip, a phase, a reload) is one line appended to the journal
//! (`STATE.journal`) and fsynced before it is acknowledged: its cost does not depend on how
//! many services there are. Every [`COMPACT_AFTER`] changes the snapshot (`STATE`, versioned
//! JSON) is rewritten in the background and the journal started afresh; the snapshot notes
//! the last journal entry it includes, so whichever files a crash leaves behind, loading
//! gives the same state. Both are JSON a person can read; `flipdns state show` prints them
//! merged.
//!
//! The write protocol, and what a failure at each step leaves on disk:
//! - append + fsync to the journal; if either fails, the journal is truncated back to its
//!   previous length and fsynced, so the disk holds the state before the change and the
//!   change is refused ("not done"). If even that fails, the store says the disk state is
//!   uncertain, refuses every change, and retries the truncation before the next one.
//! - a snapshot is written to a temporary file, fsynced, renamed over the old one, and the
//!   directory fsynced; only then are old journal entries removed. A failure anywhere
//!   leaves the old snapshot or the new one, and the journal, which give the same state.
//!
//! An exclusive lock on `STATE.lock` keeps two servers from sharing one state.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::State;
use super::disk::{Disk, RealDisk};
use super::format::{self, Delta, Entry, VERSION, encode};

/// Journal entries after which the snapshot is rewritten and the journal started afresh.
pub const COMPACT_AFTER: usize = 1000;

/// What can go wrong with the state; each message names the file.
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
    #[error(
        "state file {path}: a write failed ({first}) and could not be undone ({second}): the disk may hold the change or not; it is retried every second, and changes are refused until then"
    )]
    Uncertain {
        path: PathBuf,
        first: io::Error,
        second: io::Error,
    },
    #[error("state file {path}: in use by another flipdns (cannot lock {lock}): {source}")]
    Locked {
        path: PathBuf,
        lock: PathBuf,
        source: io::Error,
    },
}

/// The state of one running server, locked for its lifetime.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    disk: Arc<dyn Disk>,
    journal: Mutex<Journal>,
    /// Held open for the `flock`; the lock goes when the process does, even on kill -9.
    _lock: File,
}

#[derive(Debug)]
struct Journal {
    /// The active segment, opened for appending.
    file: File,
    /// Its length after the last acknowledged entry.
    len: u64,
    /// Sequence number of the last entry written (in any segment or the snapshot).
    seq: u64,
    /// Entries in the active segment.
    entries: usize,
    /// A failed write that could not be undone: the length the segment must be truncated
    /// back to before anything else is written, and what went wrong.
    uncertain: Option<u64>,
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The directory of `path`, `.` for a bare file name.
fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

impl Store {
    /// Locks the state at `path` for this process, on the real disk. Creates the directory
    /// if missing.
    pub fn open(path: &Path) -> Result<Store, StateError> {
        Store::open_on(path, Arc::new(RealDisk))
    }

    /// Like [`Store::open`], making its writes through `disk`.
    pub fn open_on(path: &Path, disk: Arc<dyn Disk>) -> Result<Store, StateError> {
        let write_err = |source| StateError::Write {
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir_of(path)).map_err(write_err)?;
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
        let file = open_segment(&sibling(path, ".journal")).map_err(write_err)?;
        let len = file.metadata().map_err(write_err)?.len();
        Ok(Store {
            path: path.to_path_buf(),
            disk,
            journal: Mutex::new(Journal {
                file,
                len,
                seq: 0,
                entries: 0,
                uncertain: None,
            }),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the state (snapshot and journal); `Ok(None)` when there is none yet (first
    /// start).
    pub fn load(&self) -> Result<Option<State>, StateError> {
        let loaded = read(&self.path)?;
        let mut journal = self.journal();
        journal.seq = loaded.as_ref().map_or(0, |l| l.seq);
        journal.entries = loaded.as_ref().map_or(0, |l| l.entries);
        Ok(loaded.map(|l| l.state))
    }

    /// Appends `delta` to the journal, durably. On `Ok` the change survives a crash or power
    /// loss; on an error the disk holds the state before it (unless the error says the
    /// disk state is uncertain).
    pub fn record(&self, delta: &Delta) -> Result<(), StateError> {
        let mut journal = self.journal();
        let journal = &mut *journal;
        if let Some(good) = journal.uncertain {
            self.undo(journal, good)
                .map_err(|source| StateError::Write {
                    path: self.path.clone(),
                    source,
                })?;
            journal.uncertain = None;
        }
        let entry = Entry {
            version: VERSION,
            seq: journal.seq + 1,
            delta: delta.clone(),
        };
        let mut line = serde_json::to_vec(&entry).expect("state serializes");
        line.push(b'\n');
        let written = self
            .disk
            .append(&mut journal.file, &line)
            .and_then(|()| self.disk.sync_file(&journal.file));
        match written {
            Ok(()) => {
                journal.len += line.len() as u64;
                journal.seq += 1;
                journal.entries += 1;
                Ok(())
            }
            Err(first) => match self.undo(journal, journal.len) {
                Ok(()) => Err(StateError::Write {
                    path: self.path.clone(),
                    source: first,
                }),
                Err(second) => {
                    journal.uncertain = Some(journal.len);
                    Err(StateError::Uncertain {
                        path: self.path.clone(),
                        first,
                        second,
                    })
                }
            },
        }
    }

    /// Tries again to undo a failed write that could not be undone: `Ok(true)` when the
    /// disk holds the state before it now, `Ok(false)` when nothing was uncertain.
    pub fn repair(&self) -> io::Result<bool> {
        let mut journal = self.journal();
        let Some(good) = journal.uncertain else {
            return Ok(false);
        };
        self.undo(&journal, good)?;
        journal.uncertain = None;
        Ok(true)
    }

    /// Truncates the active segment back to `len`, durably.
    fn undo(&self, journal: &Journal, len: u64) -> io::Result<()> {
        self.disk.truncate(&journal.file, len)?;
        self.disk.sync_file(&journal.file)
    }

    /// Whether enough changes have accumulated to rewrite the snapshot.
    pub fn wants_compaction(&self) -> bool {
        self.journal().entries >= COMPACT_AFTER
    }

    /// Starts a compaction: the active segment becomes the old one (unless an old one is
    /// still there from a compaction that failed), and a new active segment begins. Returns
    /// the sequence number the snapshot of the current state must carry. Call it while no
    /// change can be recorded (under the switch's lock), with that state in hand.
    pub fn begin_compaction(&self) -> Result<u64, StateError> {
        let err = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let mut journal = self.journal();
        let (active, old) = (
            sibling(&self.path, ".journal"),
            sibling(&self.path, ".journal.old"),
        );
        if !old.exists() {
            self.disk.rename(&active, &old).map_err(err)?;
            journal.file = open_segment(&active).map_err(err)?;
            journal.len = 0;
        }
        journal.entries = 0;
        Ok(journal.seq)
    }

    /// Writes `state` (as of journal entry `seq`) as the snapshot, then removes the old
    /// segment. A failure leaves files that load to the same state; the next compaction
    /// tries again.
    pub fn finish_compaction(&self, state: &State, seq: u64) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        self.write_snapshot(state, seq).map_err(err)?;
        match self.disk.remove(&sibling(&self.path, ".journal.old")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(e)),
            _ => {}
        }
        self.disk.sync_dir(dir_of(&self.path)).map_err(err)
    }

    /// Writes `state` as the whole state, now, and starts the journal afresh: at start, so
    /// that an unwritable state directory shows before any flip.
    pub fn rewrite(&self, state: &State) -> Result<(), StateError> {
        let seq = self.begin_compaction()?;
        self.finish_compaction(state, seq)
    }

    fn write_snapshot(&self, state: &State, seq: u64) -> io::Result<()> {
        let text = encode(state, seq)?;
        let tmp = sibling(&self.path, ".tmp");
        let written = self
            .disk
            .write_file(&tmp, &text)
            .and_then(|()| self.disk.rename(&tmp, &self.path))
            .and_then(|()| self.disk.sync_dir(dir_of(&self.path)));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }
}

fn open_segment(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// What [`read`] found.
struct Loaded {
    state: State,
    /// The last journal entry applied.
    seq: u64,
    /// Entries in the active segment.
    entries: usize,
}

/// Reads the state at `path` (snapshot, then the journal segments), upgrading older
/// versions, without locking it: for `flipdns state show` and for the server at start.
/// `state` as a state file of its own (`flipdns state export`): what [`import`] and
/// [`read_state`] read back.
pub fn export(state: &State) -> Vec<u8> {
    encode(state, 0).expect("the state serializes")
}

/// Replaces the state at `path` with `imported` (`flipdns state import`), while no server
/// holds it. Zone serials only move forward: a zone whose imported serial is not after the
/// current one gets the current serial plus one, so that secondaries, which hold the
/// current serial, transfer what the restored state serves. Returns what was written.
pub fn import(path: &Path, mut imported: State) -> Result<State, StateError> {
    let store = Store::open(path)?;
    let current = store.load()?.unwrap_or_default();
    for (origin, zone) in &mut imported.zones {
        if let Some(now) = current.zones.get(origin)
            && !super::serial_after(zone.serial, now.serial)
        {
            zone.serial = now.serial.wrapping_add(1);
            zone.digest = 0;
        }
    }
    store.rewrite(&imported)?;
    Ok(imported)
}

pub fn read_state(path: &Path) -> Result<Option<State>, StateError> {
    Ok(read(path)?.map(|l| l.state))
}

fn read(path: &Path) -> Result<Option<Loaded>, StateError> {
    let snapshot = read_snapshot(path)?;
    let (mut state, journal_seq, found) = match snapshot {
        Some((state, seq)) => (state, seq, true),
        None => (State::default(), 0, false),
    };
    let mut seq = journal_seq;
    let mut entries = 0;
    let mut any = found;
    for (segment, active) in [(".journal.old", false), (".journal", true)] {
        let segment = sibling(path, segment);
        let (last, count) = replay(&segment, journal_seq, &mut state)?;
        any |= count > 0;
        seq = seq.max(last);
        if active {
            entries = count;
        }
    }
    Ok(any.then_some(Loaded {
        state,
        seq,
        entries,
    }))
}

/// Applies the entries of `segment` after `after` to `state`. Returns the last sequence
/// number and the number of entries (0 when the file does not exist). A last line without
/// its newline is a write a crash cut short, never acknowledged: it is ignored.
fn replay(segment: &Path, after: u64, state: &mut State) -> Result<(u64, usize), StateError> {
    let file = match File::open(segment) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((after, 0)),
        Err(source) => {
            return Err(StateError::Read {
                path: segment.to_path_buf(),
                source,
            });
        }
    };
    let mut last = after;
    let mut count = 0;
    let mut reader = io::BufReader::new(file);
    let mut line = String::new();
    for number in 1.. {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .map_err(|source| StateError::Read {
                path: segment.to_path_buf(),
                source,
            })?;
        if read == 0 || !line.ends_with('\n') {
            break;
        }
        let entry: Entry = serde_json::from_str(&line).map_err(|e| StateError::Corrupt {
            path: segment.to_path_buf(),
            line: number,
            message: e.to_string(),
        })?;
        if !format::reads_journal(entry.version) {
            return Err(StateError::UnknownVersion {
                path: segment.to_path_buf(),
                version: entry.version.into(),
            });
        }
        count += 1;
        if entry.seq > last {
            last = entry.seq;
            entry.delta.apply(state);
        }
    }
    Ok((last, count))
}

/// The snapshot and the journal entry it includes, upgrading versions 1 and 2.
fn read_snapshot(path: &Path) -> Result<Option<(State, u64)>, StateError> {
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
    format::decode_snapshot(&text, path).map(Some)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::color::Color;
    use crate::state::disk::{FaultyDisk, Op};
    use crate::state::{FlipCount, Phase, ServiceState, ZoneState};

    fn service(live: Color, flips: u64) -> ServiceState {
        ServiceState {
            flips: FlipCount(flips),
            ..ServiceState::new(live, 300)
        }
    }

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
                    confirmed: true,
                    held: None,
                },
                ttl: 300,
                expires_ms: [1_700_000_005_000, 0],
                change: None,
                addresses: None,
                awaiting: None,
                expires_held: [None; 2],
                fleet: Some(crate::state::FleetWait {
                    serial: 7,
                    prepare_ttl: Some(300),
                    flip_ttl: None,
                }),
            },
        );
        state.zones.insert(
            "svc.example.com.".into(),
            ZoneState {
                serial: 2026112603,
                digest: 0,
            },
        );
        state
    }

    fn flip_to(live: Color, flips: u64) -> Delta {
        Delta {
            services: BTreeMap::from([("app".to_string(), service(live, flips))]),
            zones: BTreeMap::from([(
                "svc.example.com.".to_string(),
                ZoneState {
                    serial: 2026112603 + flips as u32,
                    digest: 0,
                },
            )]),
        }
    }

    #[test]
    fn snapshot_and_journal_load_as_one_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/state.json");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.load().unwrap(), None);
        store.rewrite(&sample()).unwrap();
        store.record(&flip_to(Color::Blue, 4)).unwrap();
        store.record(&flip_to(Color::Green, 5)).unwrap();
        let mut expected = sample();
        flip_to(Color::Green, 5).apply(&mut expected);
        assert_eq!(read_state(&path).unwrap(), Some(expected.clone()));
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"version\": 4"), "{text}");
        assert!(text.contains("\"name\": \"preparing\""), "{text}");
        // What the previous version wrote (3: no change ids) reads as the same state.
        let journal = sibling(&path, ".journal");
        let lines = fs::read_to_string(&journal).unwrap();
        assert!(lines.contains("\"version\":4"), "{lines}");
        fs::write(&path, text.replace("\"version\": 4", "\"version\": 3")).unwrap();
        fs::write(&journal, lines.replace("\"version\":4", "\"version\":3")).unwrap();
        assert_eq!(
            read_state(&path).unwrap(),
            Some(expected.clone()),
            "version 3"
        );
        assert!(!dir.path().join("run/state.json.tmp").exists());
        // A compaction folds the journal into the snapshot; the state stays the same.
        let seq = store.begin_compaction().unwrap();
        store.record(&flip_to(Color::Blue, 6)).unwrap();
        flip_to(Color::Blue, 6).apply(&mut expected);
        assert_eq!(
            read_state(&path).unwrap(),
            Some(expected.clone()),
            "old + active segments"
        );
        let mut at_seq = sample();
        flip_to(Color::Green, 5).apply(&mut at_seq);
        store.finish_compaction(&at_seq, seq).unwrap();
        assert!(!sibling(&path, ".journal.old").exists());
        assert_eq!(read_state(&path).unwrap(), Some(expected));
    }

    #[test]
    fn a_write_cut_short_by_a_crash_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let store = Store::open(&path).unwrap();
        store.rewrite(&sample()).unwrap();
        store.record(&flip_to(Color::Blue, 4)).unwrap();
        drop(store);
        let journal = sibling(&path, ".journal");
        let mut text = fs::read(&journal).unwrap();
        text.extend_from_slice(b"{\"version\":3,\"seq\":2,\"servi");
        fs::write(&journal, text).unwrap();
        let mut expected = sample();
        flip_to(Color::Blue, 4).apply(&mut expected);
        assert_eq!(read_state(&path).unwrap(), Some(expected));
    }

    /// Every call of the write protocol fails once, in turn: the change is refused, and
    /// the disk then holds exactly the state before it; once the disk is well again,
    /// changes go through.
    #[test]
    fn a_failed_write_leaves_the_state_before_it_on_disk() {
        for op in [Op::Append, Op::SyncFile] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.json");
            let disk = Arc::new(FaultyDisk::default());
            let store = Store::open_on(&path, disk.clone()).unwrap();
            store.rewrite(&sample()).unwrap();
            store.record(&flip_to(Color::Blue, 4)).unwrap();
            let mut before = sample();
            flip_to(Color::Blue, 4).apply(&mut before);
            disk.fail(op, 0);
            let err = store.record(&flip_to(Color::Green, 5)).unwrap_err();
            assert!(matches!(err, StateError::Write { .. }), "{op:?}: {err}");
            assert_eq!(read_state(&path).unwrap(), Some(before.clone()), "{op:?}");
            store.record(&flip_to(Color::Green, 5)).unwrap();
            flip_to(Color::Green, 5).apply(&mut before);
            assert_eq!(read_state(&path).unwrap(), Some(before), "{op:?}");
        }
    }

    #[test]
    fn a_failed_undo_is_uncertain_and_blocks_changes_until_it_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let disk = Arc::new(FaultyDisk::default());
        let store = Store::open_on(&path, disk.clone()).unwrap();
        store.rewrite(&sample()).unwrap();
        disk.fail(Op::SyncFile, 0); // the append's fsync
        disk.fail(Op::Truncate, 0); // and the undo
        disk.fail(Op::Truncate, 1); // and the retry before the next change
        let err = store.record(&flip_to(Color::Blue, 4)).unwrap_err();
        assert!(matches!(err, StateError::Uncertain { .. }), "{err}");
        assert!(
            err.to_string().contains("may hold the change or not"),
            "{err}"
        );
        let err = store.record(&flip_to(Color::Blue, 4)).unwrap_err();
        assert!(
            matches!(err, StateError::Write { .. }),
            "still refused: {err}"
        );
        assert_eq!(
            read_state(&path).unwrap().unwrap().services["app"].flips,
            FlipCount(4),
            "the disk still holds the failed change"
        );
        store.record(&flip_to(Color::Green, 5)).unwrap();
        let mut expected = sample();
        flip_to(Color::Green, 5).apply(&mut expected);
        assert_eq!(
            read_state(&path).unwrap(),
            Some(expected),
            "the failed change is gone"
        );
    }

    #[test]
    fn a_failed_compaction_loses_nothing() {
        for op in [Op::WriteFile, Op::Rename, Op::SyncDir, Op::Remove] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.json");
            let disk = Arc::new(FaultyDisk::default());
            let store = Store::open_on(&path, disk.clone()).unwrap();
            store.rewrite(&sample()).unwrap();
            store.record(&flip_to(Color::Blue, 4)).unwrap();
            let mut expected = sample();
            flip_to(Color::Blue, 4).apply(&mut expected);
            let seq = store.begin_compaction().unwrap();
            disk.fail(op, 0);
            assert!(store.finish_compaction(&expected, seq).is_err(), "{op:?}");
            assert_eq!(read_state(&path).unwrap(), Some(expected.clone()), "{op:?}");
            store.record(&flip_to(Color::Green, 5)).unwrap();
            flip_to(Color::Green, 5).apply(&mut expected);
            let seq = store.begin_compaction().unwrap();
            store.finish_compaction(&expected, seq).unwrap();
            assert_eq!(read_state(&path).unwrap(), Some(expected), "{op:?}");
        }
    }

    #[test]
    fn versions_1_and_2_are_read_and_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, r#"{"version": 1, "services": {"app": {"live": "green", "generation": 2, "flipped_at_ms": 5}}, "zones": {"svc.example.com.": {"serial": 7}}}"#).unwrap();
        let state = read_state(&path).unwrap().unwrap();
        let app = &state.services["app"];
        assert_eq!(
            (app.live, app.flips, app.flipped_at_ms, app.phase),
            (Color::Green, FlipCount(2), Some(5), Phase::Steady)
        );
        assert_eq!(state.zones["svc.example.com."].serial, 7);
        fs::write(&path, r#"{"version": 2, "services": {"app": {"live": "blue", "generation": 1, "phase": {"name": "preparing", "since_ms": 1, "drained_at_ms": 9, "target": "green"}}}}"#).unwrap();
        let state = read_state(&path).unwrap().unwrap();
        assert!(
            matches!(
                state.services["app"].phase,
                Phase::Preparing {
                    confirmed: false,
                    drained_at_ms: 9,
                    ..
                }
            ),
            "a version 2 deadline is not known to cover every long answer"
        );
    }

    #[test]
    fn a_second_server_cannot_take_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(&dir.path().join("state.json")).unwrap();
        let err = Store::open(&dir.path().join("state.json")).unwrap_err();
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
        let err = read_state(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("state file {}: line 1:", path.display())),
            "{err}"
        );
        fs::write(&path, "{\"version\": 7}").unwrap();
        assert!(
            read_state(&path)
                .unwrap_err()
                .to_string()
                .contains("unknown version 7")
        );
        fs::write(&path, "").unwrap();
        assert!(matches!(read_state(&path), Err(StateError::Corrupt { .. })));
        fs::write(&path, "{\"version\": 3}").unwrap();
        fs::write(
            sibling(&path, ".journal"),
            "{\"version\":3,\"seq\":1,\"services\":{\"app\":7}}\n",
        )
        .unwrap();
        let err = read_state(&path).unwrap_err().to_string();
        assert!(err.contains("state.json.journal: line 1:"), "{err}");
    }
}
