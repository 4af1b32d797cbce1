//! The file-system calls of the state store's write protocol, behind a seam so tests can
//! make any one of them fail (EIO from an fsync, ENOSPC from a write) and check that what is
//! on disk afterwards is what the reply said.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

/// One call of the write protocol, for fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Appending to the journal.
    Append,
    /// Truncating the journal back after a failed append.
    Truncate,
    /// fsync of a file (journal or new snapshot).
    SyncFile,
    /// Writing a new snapshot's temporary file.
    WriteFile,
    /// Renaming the temporary snapshot over the old one.
    Rename,
    /// fsync of the directory, which makes a rename or a new file durable.
    SyncDir,
    /// Removing a file (an old journal segment after compaction).
    Remove,
}

impl Op {
    pub const ALL: [Op; 7] = [
        Op::Append,
        Op::Truncate,
        Op::SyncFile,
        Op::WriteFile,
        Op::Rename,
        Op::SyncDir,
        Op::Remove,
    ];
}

/// The calls the store makes. [`RealDisk`] makes them; tests wrap it.
pub trait Disk: Send + Sync + std::fmt::Debug {
    fn append(&self, file: &mut File, bytes: &[u8]) -> io::Result<()>;
    fn truncate(&self, file: &File, len: u64) -> io::Result<()>;
    fn sync_file(&self, file: &File) -> io::Result<()>;
    /// Creates (or replaces) `path` with `bytes`, and fsyncs it.
    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default)]
pub struct RealDisk;

impl Disk for RealDisk {
    fn append(&self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
        file.write_all(bytes)
    }

    fn truncate(&self, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    fn sync_file(&self, file: &File) -> io::Result<()> {
        file.sync_all()
    }

    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
}

/// The real file system, except that chosen calls fail: for tests.
#[derive(Debug, Default)]
pub struct FaultyDisk {
    /// `(op, n)`: the `n`th call of `op` from now on (0: the next) fails with EIO.
    plan: Mutex<Vec<(Op, usize)>>,
}

impl FaultyDisk {
    /// Makes the `nth` call of `op` from now on fail (0: the next one).
    pub fn fail(&self, op: Op, nth: usize) {
        self.plan
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((op, nth));
    }

    /// Fails no further calls.
    pub fn heal(&self) {
        self.plan.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn check(&self, op: Op) -> io::Result<()> {
        let mut plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        let mut fail = false;
        for (_, nth) in plan.iter_mut().filter(|(o, _)| *o == op) {
            if *nth == 0 {
                fail = true;
            }
            *nth = nth.wrapping_sub(1);
        }
        plan.retain(|(_, nth)| *nth != usize::MAX);
        if fail {
            Err(io::Error::from_raw_os_error(libc::EIO))
        } else {
            Ok(())
        }
    }
}

impl Disk for FaultyDisk {
    /// A failing append writes half its bytes first, as a write cut short by a full disk.
    fn append(&self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
        if let Err(e) = self.check(Op::Append) {
            let _ = RealDisk.append(file, &bytes[..bytes.len() / 2]);
            return Err(e);
        }
        RealDisk.append(file, bytes)
    }

    fn truncate(&self, file: &File, len: u64) -> io::Result<()> {
        self.check(Op::Truncate)?;
        RealDisk.truncate(file, len)
    }

    fn sync_file(&self, file: &File) -> io::Result<()> {
        self.check(Op::SyncFile)?;
        RealDisk.sync_file(file)
    }

    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.check(Op::WriteFile)?;
        RealDisk.write_file(path, bytes)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(Op::Rename)?;
        RealDisk.rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check(Op::SyncDir)?;
        RealDisk.sync_dir(dir)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.check(Op::Remove)?;
        RealDisk.remove(path)
    }
}
