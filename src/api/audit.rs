//! The API's share of the audit trail. A change is one entry, as over the socket (written
//! by the command itself). Reads and refusals are many and alike (a pipeline polling its
//! status, a scanner knocking), so each kind of them (principal, source address, route) is
//! recorded at once the first time, then counted for a minute and recorded as one entry
//! with the count: every request is in the trail, and no flood of them can push the
//! changes' entries out of the bounded file or the writer's queue.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::admin::audit::AuditLog;
use crate::protocol::AuditEntry;

/// How long alike entries are counted before their tally is recorded.
pub const WINDOW_MS: u64 = 60_000;

/// Kinds tallied at once; beyond it every tally is recorded and the table starts afresh,
/// so its memory is bounded whatever varies in a flood.
pub const MAX_KINDS: usize = 4096;

/// What makes two entries alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind {
    event: String,
    principal: String,
    source: Option<IpAddr>,
    route: &'static str,
}

#[derive(Debug)]
struct Tally {
    since_ms: u64,
    /// Alike entries after the first, and how many of them failed.
    more: u64,
    failed: u64,
    last: AuditEntry,
}

/// Reads and refusals of the API on their way to the trail.
pub struct Alike {
    audit: Arc<AuditLog>,
    tallies: Mutex<HashMap<Kind, Tally>>,
}

impl Alike {
    pub fn new(audit: Arc<AuditLog>) -> Alike {
        Alike {
            audit,
            tallies: Mutex::default(),
        }
    }

    /// Records `entry` (of a request to `route`) now if it is the first of its kind in the
    /// window, else counts it.
    pub fn record(&self, route: &'static str, entry: AuditEntry) {
        let kind = Kind {
            event: entry.event.clone(),
            principal: entry.principal.clone(),
            source: entry
                .source
                .as_deref()
                .and_then(|s| s.parse::<std::net::SocketAddr>().ok())
                .map(|s| s.ip()),
            route,
        };
        let now = entry.at_ms;
        let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tally) = tallies.get_mut(&kind) {
            if now < tally.since_ms + WINDOW_MS {
                tally.more += 1;
                tally.failed += u64::from(!entry.ok);
                tally.last = entry;
                return;
            }
            let ended = tallies.remove(&kind).expect("present");
            self.write(ended);
        }
        if tallies.len() >= MAX_KINDS {
            for (_, tally) in tallies.drain() {
                self.write(tally);
            }
        }
        self.audit.record(entry.clone());
        tallies.insert(
            kind,
            Tally {
                since_ms: now,
                more: 0,
                failed: 0,
                last: entry,
            },
        );
    }

    /// Records the tallies whose window ended by `now_ms`; all of them with `u64::MAX`.
    pub fn flush(&self, now_ms: u64) {
        let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        let ended: Vec<Kind> = tallies
            .iter()
            .filter(|(_, t)| now_ms >= t.since_ms.saturating_add(WINDOW_MS))
            .map(|(k, _)| k.clone())
            .collect();
        for kind in ended {
            let tally = tallies.remove(&kind).expect("present");
            self.write(tally);
        }
    }

    /// A tally's entry: the last request of the kind, and how many came.
    fn write(&self, tally: Tally) {
        if tally.more == 0 {
            return;
        }
        let failed = match tally.failed {
            0 => String::new(),
            n => format!(", {n} of them refused"),
        };
        let mut entry = tally.last;
        entry.outcome = format!(
            "{} more like it since {}{failed}; the last: {}",
            tally.more,
            crate::clock::format_utc(tally.since_ms),
            entry.outcome
        );
        self.audit.record(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at_ms: u64, principal: &str, ok: bool) -> AuditEntry {
        AuditEntry {
            at_ms,
            change: None,
            event: "read".into(),
            service: None,
            principal: principal.into(),
            source: Some("192.0.2.1:4000".into()),
            outcome: "ok".into(),
            ok,
            ..Default::default()
        }
    }

    #[test]
    fn alike_entries_are_one_line_a_minute_with_their_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Arc::new(AuditLog::start(path.clone(), 1 << 20));
        let alike = Alike::new(audit.clone());
        alike.record("/v1/services", entry(1_000, "token ci", true));
        for i in 0..500 {
            alike.record("/v1/services", entry(2_000 + i, "token ci", i % 100 != 0));
        }
        // Another principal, another route: their own first lines.
        alike.record("/v1/services", entry(3_000, "token ops", true));
        alike.record("/v1/history", entry(3_000, "token ci", true));
        alike.flush(30_000);
        alike.flush(61_000);
        alike.record("/v1/services", entry(70_000, "token ci", true));
        alike.flush(u64::MAX);
        // The writer is a thread of its own: wait for it.
        let written = || audit.read(None, 100, true);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while written().len() < 5 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(written().len(), 5, "{:#?}", written());
        let outcomes: Vec<String> = written().into_iter().map(|e| e.outcome).collect();
        assert_eq!(outcomes[..3], ["ok", "ok", "ok"]);
        assert!(
            outcomes[3].starts_with("500 more like it since ")
                && outcomes[3].contains("5 of them refused"),
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes[4], "ok",
            "a new window begins with its first entry"
        );
    }
}
