//! The audit trail: every change asked on the admin socket (prepare, flip, rollback, cancel,
//! reload, refused ones too), who asked it and what the reply said, and every later event
//! of a change's life (flipped at its deadline, refused, settled, the fleet's outcome),
//! linked by the change's id; appended to a JSON-lines file and fsynced, one entry a line.
//!
//! Entries are written by a thread of their own, after the reply has gone: a slow or failing
//! disk delays no acknowledgement and changes no outcome (a failed or dropped entry is
//! logged and counted). The file is bounded: past `audit_file_size` it is renamed to
//! `FILE.1` (replacing the previous one) and started afresh, so at most twice the bound is
//! kept. `ctl history` reads both.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;

use crate::protocol::AuditEntry;

/// Entries waiting for the writer; beyond this they are dropped and counted.
const QUEUE: usize = 1024;

/// The audit file of one server.
pub struct AuditLog {
    path: PathBuf,
    queue: mpsc::SyncSender<AuditEntry>,
    /// Entries not written: the queue was full, or the write failed.
    pub lost: std::sync::Arc<AtomicU64>,
}

impl AuditLog {
    /// Starts the writer of `path`, rotated past `max_bytes`.
    pub fn start(path: PathBuf, max_bytes: u64) -> AuditLog {
        let (queue, entries) = mpsc::sync_channel(QUEUE);
        let lost = std::sync::Arc::new(AtomicU64::new(0));
        let writer = Writer {
            path: path.clone(),
            max_bytes,
            file: None,
            lost: lost.clone(),
        };
        let started = std::thread::Builder::new()
            .name("flipdns-audit".into())
            .spawn(move || writer.run(entries));
        if let Err(e) = started {
            tracing::error!("cannot start the audit writer: {e}; changes are not audited");
        }
        AuditLog { path, queue, lost }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues `entry` for the file; never waits.
    pub fn record(&self, entry: AuditEntry) {
        if self.queue.try_send(entry).is_err() {
            self.lost.fetch_add(1, Relaxed);
            tracing::warn!("audit: an entry was dropped (the writer is behind or stopped)");
        }
    }

    /// The latest `limit` entries about `service` (all when `None`), oldest first, from the
    /// rotated file and the current one. Unreadable lines are skipped.
    pub fn read(&self, service: Option<&str>, limit: usize, reads: bool) -> Vec<AuditEntry> {
        let mut entries = Vec::new();
        for path in [rotated(&self.path), self.path.clone()] {
            let Ok(file) = File::open(&path) else {
                continue;
            };
            for line in BufReader::new(file).lines().map_while(Result::ok) {
                let Ok(entry) = serde_json::from_str::<AuditEntry>(&line) else {
                    continue;
                };
                let shown = reads || entry.event != READ;
                if shown && service.is_none_or(|s| entry.service() == Some(s)) {
                    entries.push(entry);
                }
            }
        }
        let skip = entries.len().saturating_sub(limit);
        entries.split_off(skip)
    }
}

/// The event of an API request that read and changed nothing: audited, and left out of
/// `history` unless asked for.
pub const READ: &str = "read";

/// Records the cutovers' lifecycle events (a flip at its deadline, a settle, the fleet
/// catching up) until shutdown, each under the id and principal of its change; those
/// queued by then are recorded too.
pub async fn record_events(
    mut events: tokio::sync::mpsc::Receiver<crate::cutover::Event>,
    audit: std::sync::Arc<AuditLog>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => audit.record(entry(event)),
                None => return Ok(()),
            },
            _ = shutdown.cancelled() => {
                while let Ok(event) = events.try_recv() {
                    audit.record(entry(event));
                }
                return Ok(());
            }
        }
    }
}

/// A lifecycle event as the trail keeps it.
fn entry(event: crate::cutover::Event) -> AuditEntry {
    {
        let (change, principal) = match event.change {
            Some(c) => (Some(c.id), c.by),
            None => (None, String::new()),
        };
        AuditEntry {
            at_ms: event.at_ms,
            change,
            event: event.kind.as_str().into(),
            service: Some(event.service),
            principal,
            outcome: event.detail,
            ok: event.kind != crate::cutover::EventKind::Refused,
            ..Default::default()
        }
    }
}

/// Where the file goes when it is rotated.
fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

struct Writer {
    path: PathBuf,
    max_bytes: u64,
    file: Option<File>,
    lost: std::sync::Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, entries: mpsc::Receiver<AuditEntry>) {
        for entry in entries {
            let mut line = serde_json::to_string(&entry).expect("entries serialize");
            line.push('\n');
            if let Err(e) = self.append(line.as_bytes()) {
                self.lost.fetch_add(1, Relaxed);
                self.file = None; // reopened for the next entry
                tracing::error!("audit: cannot write {}: {e}", self.path.display());
            }
        }
    }

    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if size > 0 && size + line.len() as u64 > self.max_bytes {
            self.file = None;
            std::fs::rename(&self.path, rotated(&self.path))?;
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            ),
        };
        file.write_all(line)?;
        file.sync_data()
    }
}
